"""A hostile "gearmand" for the plugin's tests: a fake job server in a thread that misbehaves
in scripted ways (tests/integration/test_hostile_gearmand.py, test_hostile_pipelined.py).

A fake is a listening socket on 127.0.0.1 and one thread per accepted connection running a
script: script(peer). `serve(respond)` makes the usual script: it answers OPTION_REQ with
OPTION_RES and calls respond(peer, job) for each submitted job. `Client` calls the plugin
through SQL and times each call.
"""
import json
import socket
import struct
import threading
import time
from dataclasses import dataclass

from tests.support.sql import DB

FAST = 1.0             # "within about a second" for everything bounded by io_timeout_ms
FLOOD_SECONDS = 3.0    # a flood stops on its own after this, so a client that never looks at its
                       # deadline while bytes keep coming shows up as a slow call, not a hung test

# packet types (gearmand PROTOCOL)
NOOP, SUBMIT_JOB, JOB_CREATED, WORK_STATUS, WORK_COMPLETE, WORK_FAIL = 6, 7, 8, 12, 13, 14
SUBMIT_JOB_BG, ERROR, WORK_EXCEPTION, OPTION_REQ, OPTION_RES, WORK_DATA, WORK_WARNING = 18, 19, 25, 26, 27, 28, 29
SUBMITS = {7: "SUBMIT_JOB", 18: "SUBMIT_JOB_BG", 21: "SUBMIT_JOB_HIGH", 32: "SUBMIT_JOB_HIGH_BG",
           33: "SUBMIT_JOB_LOW", 34: "SUBMIT_JOB_LOW_BG"}
REQUEST_ARGS = {OPTION_REQ: 1, 16: 1, **{t: 3 for t in SUBMITS}}


def res(type_, *args, magic=b"\0RES"):
    """One packet: magic, type, data size, the arguments joined by NUL."""
    data = b"\0".join(args)
    return magic + struct.pack(">II", type_, len(data)) + data


def header(type_, size, magic=b"\0RES"):
    return magic + struct.pack(">II", type_, size)


# --- the fake gearmand ------------------------------------------------------------------------------------

@dataclass
class Request:
    magic: bytes
    type: int
    args: list
    raw: bytes


@dataclass
class Job:
    type: int
    function: bytes
    unique: bytes
    workload: bytes
    handle: bytes
    index: int  # 0, 1, ... in the order the fake received them (over all its connections)


class Peer:
    """One accepted connection."""

    def __init__(self, sock, fake):
        self.sock, self.fake, self.buf, self.closed = sock, fake, b"", False
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _fill(self, n, timeout):
        deadline = time.monotonic() + timeout
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0 or self.closed or self.fake.stopping.is_set():
                return False
            try:
                self.sock.settimeout(min(left, 0.1))
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return False
            if not chunk:
                return False
            self.buf += chunk
        return True

    def read(self, timeout=10.0):
        """The next request packet, or None when the client closed (or the fake stops)."""
        if not self._fill(12, timeout):
            return None
        magic, type_, size = self.buf[:4], *struct.unpack(">II", self.buf[4:12])
        if not self._fill(12 + size, timeout):
            return None
        raw, self.buf = self.buf[:12 + size], self.buf[12 + size:]
        data = raw[12:]
        return Request(magic, type_, data.split(b"\0", REQUEST_ARGS.get(type_, 1) - 1) if data else [], raw)

    def send(self, data):
        if self.closed:
            return False
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False

    def drip(self, data, delay):
        """Send data one byte at a time, `delay` seconds apart."""
        for i in range(len(data)):
            if self.fake.stopping.is_set() or not self.send(data[i:i + 1]):
                return False
            time.sleep(delay)
        return True

    def flood(self, packet, seconds=FLOOD_SECONDS):
        """Send `packet` over and over, as fast as the client reads, for `seconds`."""
        chunk = packet * max(1, (1 << 20) // len(packet))
        end = time.monotonic() + seconds
        while time.monotonic() < end and not self.closed and not self.fake.stopping.is_set():
            try:
                self.sock.settimeout(0.2)
                self.sock.sendall(chunk)
            except socket.timeout:
                continue
            except OSError:
                return

    def hold(self):
        """Keep the connection open, reading whatever comes, until the client closes it."""
        while self.read() is not None:
            pass

    def close(self):
        if self.closed:
            return
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class FakeGearmand:
    """A listening socket on 127.0.0.1 whose connections each run script(peer) in a thread.
    accept_limit: accept that many connections, then stop accepting (the socket keeps
    listening with `backlog`, so later connects complete in the kernel and wait there)."""

    def __init__(self, script, accept_limit=None, backlog=16, port=0):
        self.script, self.accept_limit = script, accept_limit
        self.stopping = threading.Event()
        self.accepted = 0
        self.peers, self.threads, self.errors = [], [], []
        self._jobs = 0
        self._lock = threading.Lock()
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.listener.bind(("127.0.0.1", port))
        except OSError:  # taken meanwhile: any port (one more registry slot)
            self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(backlog)
        self.listener.settimeout(0.05)
        self.port = self.listener.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True)
        self._acceptor.start()

    def next_job(self, req):
        with self._lock:
            n = self._jobs
            self._jobs += 1
        fn, unique, workload = req.args
        return Job(req.type, fn, unique, workload, b"H:fake:%d" % n, n)

    def _accept_loop(self):
        while not self.stopping.is_set():
            if self.accept_limit is not None and self.accepted >= self.accept_limit:
                time.sleep(0.05)
                continue
            try:
                sock, _ = self.listener.accept()
            except (socket.timeout, OSError):
                continue
            self.accepted += 1
            peer = Peer(sock, self)
            self.peers.append(peer)
            t = threading.Thread(target=self._run, args=(peer,), daemon=True)
            self.threads.append(t)
            t.start()

    def _run(self, peer):
        try:
            self.script(peer)
        except Exception as e:  # noqa: BLE001 -- reported by close()
            if not self.stopping.is_set():
                self.errors.append(repr(e))

    def close(self):
        self.stopping.set()
        self._acceptor.join(2)
        self.listener.close()
        for p in self.peers:
            p.close()
        for t in self.threads:
            t.join(5)
        assert not any(t.is_alive() for t in self.threads), "a fake connection thread did not stop"
        assert not self.errors, self.errors


def serve(respond, option=lambda peer, req: peer.send(res(OPTION_RES, req.args[0]))):
    """The usual script: OPTION_REQ answered by `option`, each job handed to respond(peer, job)
    (which sends what it likes, or nothing); other requests ignored. Returns at EOF."""
    def script(peer):
        while (req := peer.read()) is not None:
            if req.type == OPTION_REQ:
                option(peer, req)
            elif req.type in SUBMITS:
                respond(peer, peer.fake.next_job(req))
    return script


def created(peer, job):
    peer.send(res(JOB_CREATED, job.handle))


def complete_with_workload(peer, job):
    peer.send(res(JOB_CREATED, job.handle) + res(WORK_COMPLETE, job.handle, job.workload))


def then(*steps):
    """respond: JOB_CREATED, then each step: bytes (sent as they are) or a callable(peer, job)."""
    def respond(peer, job):
        created(peer, job)
        for step in steps:
            if callable(step):
                step(peer, job)
            else:
                peer.send(step)
    return respond


# --- calling the plugin -----------------------------------------------------------------------------------

class Client:
    """A connection to the private server with one-liners that time each call."""

    def __init__(self, db):
        self.db = db
        self.conn = db.connect(database=DB, read_timeout=30)
        self.cur = self.conn.cursor()

    def query(self, sql, args=None):
        t = time.monotonic()
        self.cur.execute(sql, args)
        rows = self.cur.fetchall()
        return rows, time.monotonic() - t

    def servers_set(self, text):
        (row,), _ = self.query("SELECT gman_servers_set(%s)", (text,))
        assert row[0] == text.encode(), row
        return text

    def call(self, expr, args=()):
        """SELECT expr, gman_last_error(): (value, error text, seconds)."""
        (row,), elapsed = self.query(f"SELECT {expr}, gman_last_error()", args)
        return row[0], row[1].decode(), elapsed

    def bg(self, fn="f", workload="x"):
        return self.call("gman_do_background(%s, %s)", (fn, workload))

    def do(self, fn="f", workload="x"):
        return self.call("gman_do(%s, %s)", (fn, workload))

    def bulk(self, rows=5, fn="f"):
        return self.call(f"(SELECT gman_bulk_background(%s, seq) FROM seq_1_to_{rows})", (fn,))

    def sum(self, rows=5, fn="f"):
        return self.call(f"(SELECT gman_sum(%s, seq) FROM seq_1_to_{rows})", (fn,))

    def stats(self):
        """gman_stats() as a dict."""
        (row,), _ = self.query("SELECT gman_stats()")
        return json.loads(row[0])


def assert_fails(got, *needles, within=FAST, at_least=0.0):
    value, error, elapsed = got
    assert value is None, (value, error)
    for needle in needles:
        assert needle in error, (needle, error)
    assert at_least <= elapsed < within, (elapsed, error)
