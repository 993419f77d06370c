"""Gearman client (codec in pygen/gearman/protocol.py).

    with Client("127.0.0.1:4730") as c:
        c.submit_background("syncToRedis", b'{"id":1}')          # -> job handle
        c.do("reverse", b"abc")                                  # -> ("complete", b"cba")

    w = Worker(["127.0.0.1:4730", "10.0.0.2:4730"], {"reverse": lambda job: job.workload[::-1]})
    w.run(stop_event)                     # or, batching: jobs = w.grab(500, 1.0); ...; w.complete_many(jobs)

Worker lives in pygen/gearman/worker.py, Job in pygen/gearman/job.py; Connection, the errors and parse_server in
pygen/gearman/connection.py.

Every socket operation has a deadline: connect_timeout for connecting, timeout for each
request/reply; nothing blocks forever. Neither class is thread-safe, except Worker.stop().
"""
from __future__ import annotations

import collections
import os
import time

from pygen.gearman.connection import Connection, JobServerError
from pygen.gearman.protocol import DEFAULT_MAX_DATA, REQ, SUBMIT_TYPES, ProtocolError, Type, encode, from_bytes


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


def _answer(conn: Connection, type: int) -> tuple[bytes, ...]:
    """The reply to the one request outstanding: `type`, or the ERROR that refuses it."""
    try:
        return conn.expect(type)
    except JobServerError as e:
        e.in_sync = True
        raise


def _handle(arg: bytes) -> bytes:
    # gearmand forwards a handle argument with its terminating NUL when it is the last one.
    return arg[:-1] if arg.endswith(b"\0") else arg


class Client:
    """Submits jobs over one persistent connection to the first server of `servers` that
    answers (tried in order at each reconnect). A call that fails closes the connection and
    raises; the next call reconnects. No call is retried: a job may or may not have been
    accepted when the connection broke. A request the server refuses (an ERROR as its answer,
    e.g. a packet type Perl Gearman::Server lacks: *_LOW, SUBMIT_JOB_HIGH_BG) raises
    JobServerError and keeps the connection; a refused OPTION_REQ "exceptions" just means
    that failed jobs come back as ("fail", None)."""

    def __init__(self, servers="127.0.0.1:4730", connect_timeout: float = 2.0, timeout: float = 5.0,
                 max_data: int = DEFAULT_MAX_DATA):
        self.servers = [servers] if isinstance(servers, (str, tuple)) else list(servers)
        if not self.servers:
            raise ValueError("no server given")
        self.connect_timeout, self.timeout, self.max_data = connect_timeout, timeout, max_data
        self.conn: Connection | None = None
        self._exceptions = False  # OPTION_REQ "exceptions" answered on this connection
        self.exceptions_option: bool | None = None  # did the server accept it (None: not asked yet)

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
        except JobServerError as e:
            if not e.in_sync:
                self.close()
            raise
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
            return from_bytes(_answer(conn, Type.JOB_CREATED)[0])
        return self._call(call)

    def submit_many_background(self, jobs, priority: str = "normal", batch: int = 512) -> list[str]:
        """Queue (function, workload, unique) jobs, pipelined: `batch` jobs per write, a second
        batch sent before the replies to the first are read. The window is bounded so that
        neither side's socket buffer fills while the other waits (a deadlock with send-all-
        then-read-all). Returns the handles in order. When the server refuses a job, nothing
        more is sent, the replies to what was sent are read, and the first refusal is raised:
        .handles the jobs accepted before it, .results one handle or JobServerError per job
        sent (the rest were not sent)."""
        packets = [self._submit(f, w, u, priority, True) for f, w, u in jobs]

        def call(conn):
            results, inflight, first = [], collections.deque(), None
            for start in range(0, len(packets), batch):
                if first is not None:
                    break
                chunk = packets[start:start + batch]
                conn.send(b"".join(chunk))
                inflight.append(len(chunk))
                while len(inflight) > 1 or (inflight and (start + batch >= len(packets) or first)):
                    for _ in range(inflight.popleft()):
                        try:
                            results.append(from_bytes(conn.expect(Type.JOB_CREATED)[0]))
                        except JobServerError as e:
                            results.append(e)
                            first = first or e
            if first is not None:
                first.handles = results[:results.index(first)]
                first.results, first.in_sync = results, True
                raise first
            return results
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
                try:
                    conn.expect(Type.OPTION_RES)
                    self.exceptions_option = True
                except JobServerError:  # a server without the option: WORK_FAIL it is
                    self.exceptions_option = False
                self._exceptions = True
            else:
                conn.send(packet)
            handle = _answer(conn, Type.JOB_CREATED)[0]
            while True:
                type, args = conn.read_packet(max(deadline - time.monotonic(), 0.0))
                if conn.trailing(type, args):
                    continue
                if type == Type.ERROR:
                    raise JobServerError(from_bytes(args[0]), from_bytes(args[1]))
                if _handle(args[0]) != handle:
                    raise ProtocolError(f"{Type(type).name} for job {args[0]!r}, waiting for {handle!r}")
                if type == Type.WORK_COMPLETE:
                    return "complete", args[1]
                if type == Type.WORK_FAIL:
                    return "fail", None
                if type == Type.WORK_EXCEPTION:
                    conn.ended.append(handle)
                    return "exception", args[1].decode("utf-8", "replace")
                if type not in (Type.WORK_DATA, Type.WORK_WARNING, Type.WORK_STATUS):
                    raise ProtocolError(f"unexpected {Type(type).name} while waiting for a result")
        return self._call(call)

    def echo(self, data: bytes = b"ping") -> bytes:
        def call(conn):
            conn.request(Type.ECHO_REQ, data)
            return conn.expect(Type.ECHO_RES)[0]
        return self._call(call)

