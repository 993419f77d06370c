"""Gearman client and worker over the binary protocol (codec in pygen/gearman_proto.py).

    with Client("127.0.0.1:4730") as c:
        c.submit_background("syncToRedis", b'{"id":1}')          # -> job handle
        c.do("reverse", b"abc")                                  # -> ("complete", b"cba")

    w = Worker(["127.0.0.1:4730", "10.0.0.2:4730"], {"reverse": lambda job: job.workload[::-1]})
    w.run(stop_event)                     # or, batching: jobs = w.grab(500, 1.0); ...; w.complete_many(jobs)

Every socket operation has a deadline: connect_timeout for connecting, timeout for each
request/reply; nothing blocks forever. Neither class is thread-safe, except Worker.stop().
"""
from __future__ import annotations

import collections
import errno
import logging
import math
import os
import selectors
import socket
import time

from pygen.gearman_proto import (DEFAULT_MAX_DATA, REQ, RES, SUBMIT_TYPES, Decoder, ProtocolError,
                                 Type, encode, from_bytes, to_bytes)

__all__ = ["Client", "Worker", "Job", "Connection", "GearmanError", "JobServerError", "ProtocolError",
           "parse_server"]

DEFAULT_PORT = 4730
RECV_SIZE = 256 * 1024
log = logging.getLogger(__name__)


class GearmanError(Exception):
    """A Gearman-level failure (the socket-level ones are OSError: ConnectionError, TimeoutError)."""


class JobServerError(GearmanError):
    """gearmand answered with an ERROR packet."""

    def __init__(self, code: str, text: str, handles=()):
        super().__init__(f"gearmand error {code}: {text}")
        self.code, self.text = code, text
        self.handles = list(handles)  # submit_many_background: the jobs accepted before the error


def parse_server(spec) -> tuple[str, int]:
    """Split "host:port", "host", "[::1]:4730" or (host, port) into (host, port)."""
    if isinstance(spec, tuple):
        return spec[0], int(spec[1])
    if spec.startswith("["):
        host, _, rest = spec[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else DEFAULT_PORT
    host, sep, port = spec.rpartition(":")
    return (host, int(port)) if sep else (spec, DEFAULT_PORT)


def uuid4_hex() -> str:
    """uuid.uuid4().hex at a third of the cost (the UUID object is the slow part)."""
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40  # version 4
    b[8] = (b[8] & 0x3F) | 0x80  # RFC 4122 variant
    return b.hex()


MAX_UNIQUE = 63  # gearmand 1.1 accepts 64 bytes but keeps 63: the 64th corrupts the workload


def _unique(unique) -> str | bytes:
    # An empty unique id would make gearmand's durable queues collapse jobs into one row.
    if not unique:
        return uuid4_hex()
    if len(unique.encode() if isinstance(unique, str) else unique) > MAX_UNIQUE:
        raise ValueError(f"unique id longer than {MAX_UNIQUE} bytes")
    return unique


def _handle(arg: bytes) -> bytes:
    # gearmand forwards a handle argument with its terminating NUL when it is the last one.
    return arg[:-1] if arg.endswith(b"\0") else arg


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

    def expect(self, type: int, timeout: float | None = None) -> tuple[bytes, ...]:
        """Read one packet that must be `type` (an ERROR packet raises JobServerError)."""
        got, args = self.read_packet(timeout)
        if got == type:
            return args
        if got == Type.ERROR:
            raise JobServerError(from_bytes(args[0]), from_bytes(args[1]))
        raise ProtocolError(f"expected {Type(type).name}, got {Type(got).name} from {self.address}")


class Client:
    """Submits jobs over one persistent connection to the first server of `servers` that
    answers (tried in order at each reconnect). A call that fails closes the connection and
    raises; the next call reconnects. No call is retried: a job may or may not have been
    accepted when the connection broke."""

    def __init__(self, servers="127.0.0.1:4730", connect_timeout: float = 2.0, timeout: float = 5.0,
                 max_data: int = DEFAULT_MAX_DATA):
        self.servers = [servers] if isinstance(servers, (str, tuple)) else list(servers)
        if not self.servers:
            raise ValueError("no server given")
        self.connect_timeout, self.timeout, self.max_data = connect_timeout, timeout, max_data
        self.conn: Connection | None = None
        self._exceptions = False  # OPTION_REQ "exceptions" sent on this connection

    def _connection(self) -> Connection:
        if self.conn is not None and self.conn.sock is not None:
            return self.conn
        errors = []
        for server in self.servers:
            conn = Connection(server, self.connect_timeout, self.timeout, self.max_data)
            try:
                self.conn, self._exceptions = conn.connect(), False
                return conn
            except OSError as e:
                errors.append(f"{conn.address}: {e}")
        raise ConnectionError("no gearmand reachable: " + "; ".join(errors))

    def _call(self, method, *args):
        conn = self._connection()
        try:
            return method(conn, *args)
        except BaseException:  # whatever broke, the stream state is unknown now
            self.close()
            raise

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @staticmethod
    def _submit(function, workload, unique, priority, background) -> bytes:
        try:
            type = SUBMIT_TYPES[priority, background]
        except KeyError:
            raise ValueError(f"priority must be 'normal', 'high' or 'low', not {priority!r}") from None
        return encode(REQ, type, function, _unique(unique), workload)

    def submit_background(self, function: str, workload: bytes, unique: str | None = None,
                          priority: str = "normal") -> str:
        """Queue a background job; returns its handle. unique=None: a random one (uuid4 hex)."""
        packet = self._submit(function, workload, unique, priority, True)

        def call(conn):
            conn.send(packet)
            return from_bytes(conn.expect(Type.JOB_CREATED)[0])
        return self._call(call)

    def submit_many_background(self, jobs, priority: str = "normal", batch: int = 512) -> list[str]:
        """Queue (function, workload, unique) jobs, pipelined: `batch` jobs per write, a second
        batch sent before the replies to the first are read. The window is bounded so that
        neither side's socket buffer fills while the other waits (a deadlock with send-all-
        then-read-all). Returns the handles in order."""
        packets = [self._submit(f, w, u, priority, True) for f, w, u in jobs]

        def call(conn):
            handles, inflight = [], collections.deque()
            for start in range(0, len(packets), batch):
                chunk = packets[start:start + batch]
                conn.send(b"".join(chunk))
                inflight.append(len(chunk))
                while len(inflight) > 1 or (inflight and start + batch >= len(packets)):
                    for _ in range(inflight.popleft()):
                        try:
                            handles.append(from_bytes(conn.expect(Type.JOB_CREATED)[0]))
                        except JobServerError as e:
                            e.handles = handles
                            raise
            return handles
        return self._call(call)

    def do(self, function: str, workload: bytes, unique: str | None = None, priority: str = "normal",
           timeout: float | None = None):
        """Run a job and wait (at most `timeout`, default self.timeout) for its outcome:
        ("complete", data) | ("fail", None) | ("exception", text). WORK_DATA, WORK_WARNING and
        WORK_STATUS are skipped."""
        packet = self._submit(function, workload, unique, priority, False)

        def call(conn):
            deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
            if not self._exceptions:
                packet_out = encode(REQ, Type.OPTION_REQ, "exceptions") + packet
                conn.send(packet_out)
                conn.expect(Type.OPTION_RES)
                self._exceptions = True
            else:
                conn.send(packet)
            handle = conn.expect(Type.JOB_CREATED)[0]
            while True:
                type, args = conn.read_packet(max(deadline - time.monotonic(), 0.0))
                if type == Type.ERROR:
                    raise JobServerError(from_bytes(args[0]), from_bytes(args[1]))
                if _handle(args[0]) != handle:
                    raise ProtocolError(f"{Type(type).name} for job {args[0]!r}, waiting for {handle!r}")
                if type == Type.WORK_COMPLETE:
                    return "complete", args[1]
                if type == Type.WORK_FAIL:
                    return "fail", None
                if type == Type.WORK_EXCEPTION:
                    return "exception", args[1].decode("utf-8", "replace")
                if type not in (Type.WORK_DATA, Type.WORK_WARNING, Type.WORK_STATUS):
                    raise ProtocolError(f"unexpected {Type(type).name} while waiting for a result")
        return self._call(call)

    def echo(self, data: bytes = b"ping") -> bytes:
        def call(conn):
            conn.request(Type.ECHO_REQ, data)
            return conn.expect(Type.ECHO_RES)[0]
        return self._call(call)


class Job:
    """A job assigned to this worker. handle/function/unique are str (unique decoded with
    surrogateescape, so any bytes survive), workload is bytes, server is "host:port"."""

    __slots__ = ("handle", "function", "unique", "workload", "server", "done", "_worker", "_link", "_gen")

    def __init__(self, worker, link, handle, function, unique, workload):
        self.handle, self.function, self.unique = from_bytes(handle), from_bytes(function), from_bytes(unique)
        self.workload, self.server, self.done = workload, link.conn.address, False
        self._worker, self._link, self._gen = worker, link, link.gen

    def complete(self, data: bytes | str = b"") -> bool:
        return self._worker.complete(self, data)

    def fail(self) -> bool:
        return self._worker.fail(self)

    def exception(self, text: str) -> bool:
        return self._worker.exception(self, text)

    def __repr__(self) -> str:
        return (f"<Job {self.handle} {self.function} unique={self.unique!r} "
                f"{len(self.workload)} B from {self.server}>")


class _Link:
    """The worker's connection to one server. state: down -> connecting -> awake (grab) <->
    sleeping (PRE_SLEEP sent, waiting for NOOP) -> down on any error."""

    def __init__(self, conn: Connection):
        self.conn, self.state, self.gen = conn, "down", 0
        self.fd = -1
        self.retry_at = self.backoff = 0.0
        self.deadline = 0.0      # connecting: give up then; grabs outstanding: no reply by then = dead
        self.grabs = 0           # GRAB_JOB_UNIQ sent, reply not yet read
        self.empty = False       # a NO_JOB came in this round
        self.slept_at = 0.0


_GRAB = encode(REQ, Type.GRAB_JOB_UNIQ)
_PRE_SLEEP = encode(REQ, Type.PRE_SLEEP)


class Worker:
    """Registers `functions` on EVERY server of `servers` (jobs may be queued on any of them)
    and takes jobs from all of them. A server that dies is reconnected with exponential
    back-off (max_backoff) while the others keep working; its unfinished jobs are re-queued
    by gearmand when the connection drops, so a job may run twice (at least once).

    functions: {name: callable(job) -> bytes | str | None} for run(); for grab() alone the
    callables may be None (a list of names is accepted too)."""

    def __init__(self, servers, functions, client_id: str | None = None, connect_timeout: float = 2.0,
                 timeout: float = 5.0, poll_interval: float = 0.2, max_backoff: float = 2.0,
                 probe_interval: float = 10.0, exceptions: bool = True, max_data: int = DEFAULT_MAX_DATA):
        servers = [servers] if isinstance(servers, (str, tuple)) else list(servers)
        if not servers:
            raise ValueError("no server given")
        self.functions = dict(functions) if isinstance(functions, dict) else dict.fromkeys(functions)
        if not self.functions:
            raise ValueError("no function given")
        self.client_id = client_id or f"pygen-{socket.gethostname()}-{os.getpid()}"
        self.connect_timeout, self.timeout, self.poll_interval = connect_timeout, timeout, poll_interval
        self.max_backoff, self.probe_interval, self.exceptions = max_backoff, probe_interval, exceptions
        self.links = [_Link(Connection(s, connect_timeout, timeout, max_data)) for s in servers]
        self._hello = b"".join([encode(REQ, Type.SET_CLIENT_ID, self.client_id)] +
                               [encode(REQ, Type.CAN_DO, name) for name in self.functions])
        self._sel = selectors.DefaultSelector()
        self._ready: collections.deque[Job] = collections.deque()
        self._stopping = False

    # ---- connections
    def _down(self, link: _Link, why) -> None:
        if link.state == "down":
            return
        # a server that stays down would otherwise log a warning every max_backoff seconds
        level = logging.INFO if link.state == "connecting" and link.backoff else logging.WARNING
        log.log(level, "gearmand %s: %s; reconnecting in %.2f s", link.conn.address, why, link.backoff)
        self._drop(link)
        link.retry_at = time.monotonic() + link.backoff
        link.backoff = min(max(link.backoff * 2, 0.05), self.max_backoff)

    def _drop(self, link: _Link) -> None:
        if link.fd >= 0:
            try:
                self._sel.unregister(link.fd)
            except (KeyError, ValueError):
                pass
            link.fd = -1
        link.conn.close()
        link.state, link.grabs, link.empty = "down", 0, False
        link.gen += 1  # jobs taken on the old connection can no longer be answered
        if any(job._link is link for job in self._ready):  # gearmand re-queues them: drop our copies
            self._ready = collections.deque(job for job in self._ready if job._link is not link)

    def _connect(self, link: _Link) -> None:
        """Start a non-blocking connect: a server that does not answer must not stall the others."""
        try:
            family, type_, proto, _, addr = socket.getaddrinfo(
                link.conn.host, link.conn.port, type=socket.SOCK_STREAM)[0]
            sock = socket.socket(family, type_, proto)
        except OSError as e:
            link.state = "connecting"
            return self._down(link, e)
        sock.setblocking(False)
        err = sock.connect_ex(addr)
        link.conn.sock, link.fd, link.state = sock, sock.fileno(), "connecting"
        if err not in (0, errno.EINPROGRESS):
            return self._down(link, os.strerror(err))
        link.deadline = time.monotonic() + self.connect_timeout
        self._sel.register(link.fd, selectors.EVENT_WRITE, link)

    def _connected(self, link: _Link) -> None:
        err = link.conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            return self._down(link, os.strerror(err))
        try:
            link.conn.attach(link.conn.sock)
            link.conn.send(self._hello)
        except OSError as e:
            return self._down(link, e)
        self._sel.modify(link.fd, selectors.EVENT_READ, link)
        link.state, link.empty, link.grabs = "awake", False, 0
        log.info("gearmand %s: connected", link.conn.address)

    def _send(self, link: _Link, data: bytes) -> bool:
        try:
            link.conn.send(data)
            return True
        except OSError as e:
            self._down(link, e)
            return False

    # ---- reading
    def _read(self, link: _Link) -> None:
        try:
            link.conn.fill()
            packets = list(link.conn.decoder)
        except (OSError, ProtocolError) as e:
            return self._down(link, e)
        link.deadline = time.monotonic() + self.timeout  # progress: a big payload may take several reads
        link.backoff = 0.0
        for type, args in packets:
            if type == Type.JOB_ASSIGN_UNIQ:
                link.grabs -= 1
                self._ready.append(Job(self, link, *args))
            elif type == Type.NO_JOB:
                link.grabs -= 1
                link.empty = True
            elif type == Type.NOOP:
                link.empty = False
                if link.state == "sleeping":
                    link.state = "awake"
            elif type == Type.ERROR:  # e.g. a result for a job gearmand no longer knows
                log.warning("gearmand %s: error %s: %s", link.conn.address, from_bytes(args[0]),
                            from_bytes(args[1]))
            else:
                return self._down(link, f"unexpected {Type(type).name}")
        if link.grabs < 0:
            return self._down(link, "more replies than grabs")
        if link.state == "awake" and link.grabs == 0 and link.empty:
            if self._send(link, _PRE_SLEEP):
                link.state, link.slept_at = "sleeping", time.monotonic()

    def _maintain(self, now: float) -> None:
        for link in self.links:
            if link.state == "down" and now >= link.retry_at and not self._stopping:
                self._connect(link)
            elif link.state == "connecting" and now > link.deadline:
                self._down(link, f"connect timed out after {self.connect_timeout} s")
            elif link.grabs and now > link.deadline:
                self._down(link, f"no reply within {self.timeout} s")
            elif link.state == "sleeping" and now - link.slept_at > self.probe_interval:
                # a lost NOOP or a silently dead server would otherwise leave us asleep forever
                link.state, link.empty = "awake", False

    def _request_grabs(self, want: int, now: float) -> None:
        """Send up to `want` GRAB_JOB_UNIQ, spread over the servers that may have jobs. gearmand
        answers each one, so several in a row on one connection take several jobs."""
        want -= len(self._ready) + sum(link.grabs for link in self.links)
        candidates = [l for l in self.links if l.state == "awake" and not l.grabs and not l.empty]
        share = math.ceil(want / len(candidates)) if candidates else 0
        for link in candidates:
            n = min(share, want)
            if n <= 0:
                break
            if self._send(link, _GRAB * n):
                link.grabs, link.deadline = n, now + self.timeout
                want -= n

    def _poll(self, timeout: float) -> None:
        for key, _ in self._sel.select(max(timeout, 0.0)):
            link = key.data
            if link.state == "connecting":
                self._connected(link)
            elif link.state != "down":
                self._read(link)

    # ---- the batching API
    def grab(self, max_jobs: int = 1, timeout: float = 1.0) -> list[Job]:
        """Up to max_jobs assigned jobs, waiting at most `timeout` for the first. Returns as soon
        as max_jobs are in or every server has said NO_JOB; [] on timeout. After stop() it
        sends no new grab and returns only jobs already received."""
        deadline = time.monotonic() + timeout
        while True:
            now = time.monotonic()
            self._maintain(now)
            if not self._stopping:
                self._request_grabs(max_jobs, now)
            busy = any(l.grabs or (l.state == "awake" and not l.empty) for l in self.links)
            if len(self._ready) >= max_jobs or (self._ready and not busy) or self._stopping:
                break
            if now >= deadline:
                break
            wake = min([deadline, now + self.poll_interval] +
                       [l.retry_at for l in self.links if l.state == "down"])
            self._poll(wake - now)
        return [self._ready.popleft() for _ in range(min(max_jobs, len(self._ready)))]

    def _finish(self, job: Job, packet: bytes) -> bool:
        """Send a job's result. False when its connection is gone (gearmand re-queues it)."""
        if job.done:
            raise GearmanError(f"job {job.handle} already finished")
        job.done = True
        link = job._link
        return link.gen == job._gen and link.state in ("awake", "sleeping") and self._send(link, packet)

    def complete(self, job: Job, data: bytes | str = b"") -> bool:
        return self._finish(job, encode(REQ, Type.WORK_COMPLETE, job.handle, data))

    def fail(self, job: Job) -> bool:
        return self._finish(job, encode(REQ, Type.WORK_FAIL, job.handle))

    def exception(self, job: Job, text: str) -> bool:
        return self._finish(job, encode(REQ, Type.WORK_EXCEPTION, job.handle, to_bytes(text)))

    def complete_many(self, jobs, data: bytes | str = b"") -> int:
        """WORK_COMPLETE for each job, one write per server; returns how many were sent."""
        by_link: dict[int, tuple[_Link, list]] = {}
        for job in jobs:
            if job.done:
                raise GearmanError(f"job {job.handle} already finished")
            job.done = True
            if job._link.gen == job._gen and job._link.state in ("awake", "sleeping"):
                by_link.setdefault(id(job._link), (job._link, []))[1].append(
                    encode(REQ, Type.WORK_COMPLETE, job.handle, data))
        return sum(len(packets) for link, packets in by_link.values() if self._send(link, b"".join(packets)))

    # ---- the callable API
    def work(self, job: Job) -> None:
        """Run the job's function and send its outcome."""
        try:
            result = self.functions[job.function](job)
        except Exception as e:
            log.warning("job %s (%s) raised %r", job.handle, job.function, e)
            if not job.done:
                self.exception(job, f"{type(e).__name__}: {e}") if self.exceptions else self.fail(job)
            return
        if job.done:
            return
        if result is not None and not isinstance(result, (bytes, bytearray, memoryview, str)):
            log.warning("job %s (%s) returned a %s", job.handle, job.function, type(result).__name__)
            text = f"TypeError: {job.function} returned {type(result).__name__}, not bytes, str or None"
            self.exception(job, text) if self.exceptions else self.fail(job)
            return
        self.complete(job, b"" if result is None else result)

    def run(self, stop_event=None, batch: int = 1) -> None:
        """Work until stop() or stop_event.set() (honoured within poll_interval, after the jobs
        in hand), then close. batch > 1 grabs several jobs per round trip (faster for short
        jobs; the others wait behind a slow one instead of going to another worker)."""
        try:
            while not self._stopping and not (stop_event is not None and stop_event.is_set()):
                for job in self.grab(batch, self.poll_interval):
                    self.work(job)
        finally:
            self.close()

    def stop(self) -> None:
        """Ask run()/grab() to take no new job; run() finishes the current one and closes.
        The only method that may be called from another thread."""
        self._stopping = True

    def close(self) -> None:
        """Close every connection; jobs taken but not finished go back to gearmand's queue."""
        for link in self.links:
            self._drop(link)
            link.retry_at = link.backoff = 0.0
        self._ready.clear()
        self._sel.close()
        self._sel = selectors.DefaultSelector()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
