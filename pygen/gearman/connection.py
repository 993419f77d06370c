"""One connection speaking Gearman's binary protocol (codec in pygen/gearman/protocol.py): the
errors, server addresses and the Connection that pygen/gearman/client.py's Client and
pygen/gearman/worker.py's Worker are built on.

Every socket operation has a deadline: connect_timeout for connecting, timeout for each
request/reply; nothing blocks forever.
"""
from __future__ import annotations

import collections
import socket
import time

from pygen.gearman.protocol import DEFAULT_MAX_DATA, REQ, RES, Decoder, ProtocolError, Type, encode, from_bytes

DEFAULT_PORT = 4730
RECV_SIZE = 256 * 1024
_TRAILING = frozenset((Type.WORK_DATA, Type.WORK_WARNING, Type.WORK_STATUS, Type.WORK_COMPLETE,
                       Type.WORK_FAIL, Type.WORK_EXCEPTION))


class GearmanError(Exception):
    """A Gearman-level failure (the socket-level ones are OSError: ConnectionError, TimeoutError)."""


class JobServerError(GearmanError):
    """gearmand answered with an ERROR packet."""

    def __init__(self, code: str, text: str, handles=()):
        super().__init__(f"gearmand error {code}: {text}")
        self.code, self.text = code, text
        self.handles = list(handles)  # submit_many_background: the jobs accepted before the error
        self.results: list = []       # submit_many_background: per job sent, its handle or its error
        # True when the ERROR was the whole answer to a request: the connection stays usable
        self.in_sync = False


def parse_server(spec) -> tuple[str, int]:
    """Split "host:port", "host", "[::1]:4730" or (host, port) into (host, port)."""
    if isinstance(spec, tuple):
        return spec[0], int(spec[1])
    if spec.startswith("["):
        host, _, rest = spec[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else DEFAULT_PORT
    host, sep, port = spec.rpartition(":")
    return (host, int(port)) if sep else (spec, DEFAULT_PORT)


class Connection:
    """One TCP connection speaking the binary protocol. Methods raise OSError on I/O failure
    and ProtocolError on garbage; after either the caller must close() it."""

    def __init__(self, server, connect_timeout: float = 2.0, timeout: float = 5.0,
                 max_data: int = DEFAULT_MAX_DATA):
        self.host, self.port = parse_server(server)
        self.connect_timeout, self.timeout, self.max_data = connect_timeout, timeout, max_data
        self.sock: socket.socket | None = None
        self.decoder = Decoder(RES, max_data)
        self._rbuf = bytearray(RECV_SIZE)
        self._rview = memoryview(self._rbuf)
        # Handles of jobs that ended with WORK_EXCEPTION: Perl Gearman::Server still relays what
        # the worker sends after it (Gearman::Worker: WORK_FAIL), which must not be taken for
        # the reply to a later request. Bounded: the oldest is forgotten first.
        self.ended: collections.deque[bytes] = collections.deque(maxlen=64)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def connect(self) -> "Connection":
        self.attach(socket.create_connection((self.host, self.port), timeout=self.connect_timeout))
        return self

    def attach(self, sock: socket.socket) -> None:
        """Adopt a connected socket (the worker connects without blocking, then hands it here)."""
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(self.timeout)
        self.sock, self.decoder = sock, Decoder(RES, self.max_data)
        self.ended.clear()

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def send(self, data: bytes) -> None:
        if self.sock is None:
            raise ConnectionError(f"not connected to {self.address}")
        self.sock.sendall(data)  # the socket timeout bounds the whole call

    def request(self, type: int, *args) -> None:
        self.send(encode(REQ, type, *args))

    def fill(self) -> None:
        """One recv() into the decoder; for callers that know the socket is readable."""
        # recv_into a reused buffer: recv(256 KiB) would allocate (and page in) 256 KiB per call
        n = self.sock.recv_into(self._rbuf)
        if not n:
            raise ConnectionError(f"{self.address} closed the connection")
        self.decoder.feed(self._rview[:n])

    def read_packet(self, timeout: float | None = None) -> tuple[int, tuple[bytes, ...]]:
        """The next packet, waiting at most `timeout` in all (default: self.timeout per read,
        and 2 * self.timeout in all for a peer that trickles)."""
        packet = self.decoder.next_packet()
        if packet is not None:
            return packet
        if self.sock is None:
            raise ConnectionError(f"not connected to {self.address}")
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        try:
            while packet is None:
                if timeout is not None:  # the common case keeps the socket's timeout: no syscall
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError(f"no reply from {self.address} within {limit} s")
                    self.sock.settimeout(remaining)
                elif time.monotonic() > deadline:
                    raise TimeoutError(f"no whole packet from {self.address} within {limit} s")
                self.fill()
                packet = self.decoder.next_packet()
        finally:
            if timeout is not None and self.sock is not None:
                self.sock.settimeout(self.timeout)  # send() relies on it
        return packet

    def trailing(self, type: int, args: tuple[bytes, ...]) -> bool:
        """True for a packet about a job that already ended (see self.ended): to be skipped."""
        if type not in _TRAILING or not self.ended:
            return False
        handle = args[0][:-1] if args[0].endswith(b"\0") else args[0]
        if handle not in self.ended:
            return False
        if type in (Type.WORK_COMPLETE, Type.WORK_FAIL):  # nothing comes after these
            self.ended.remove(handle)
        return True

    def expect(self, type: int, timeout: float | None = None) -> tuple[bytes, ...]:
        """Read one packet that must be `type` (an ERROR packet raises JobServerError)."""
        got, args = self.read_packet(timeout)
        while self.trailing(got, args):
            got, args = self.read_packet(timeout)
        if got == type:
            return args
        if got == Type.ERROR:
            raise JobServerError(from_bytes(args[0]), from_bytes(args[1]))
        raise ProtocolError(f"expected {Type(type).name}, got {Type(got).name} from {self.address}")
