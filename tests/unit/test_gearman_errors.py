"""pygen's Gearman worker and client against a scripted fake job server (a socket in a thread,
no real server): every ERROR answers the request it follows, a server without GRAB_JOB_UNIQ
(Perl Gearman::Server) is served with GRAB_JOB, no reply of a peer makes the worker spin or
flood the log, and a refused request leaves the client's connection usable.

The fake reads the worker's packets and answers each one with script(type, args) -> bytes."""
import logging
import socket
import threading
import time

import pytest

from pygen.gearman.client import Client
from pygen.gearman.connection import JobServerError
from pygen.gearman.protocol import REQ, RES, Decoder, Type, encode
from pygen.gearman.worker import Worker

ERR_UNKNOWN = encode(RES, Type.ERROR, "server_error", "Can't locate object method \"CMD_\"\n")


class Fake:
    """A job server that answers each request with script(type, args); counts what it got."""

    def __init__(self, script):
        self.script = script
        self.got: list[tuple[int, tuple]] = []
        self.connections = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.address = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        decoder = Decoder(REQ)
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                decoder.feed(data)
                for type_, args in decoder:
                    with self.lock:
                        self.got.append((type_, args))
                        reply = self.script(type_, args)
                        if type_ == Type.ECHO_REQ and reply is None:  # every server answers it
                            reply = encode(RES, Type.ECHO_RES, args[0])
                    if reply:
                        try:
                            conn.sendall(reply)
                        except OSError:  # the client dropped the link (BrokenPipe, reset): as a real server
                            return

    def count(self, type_):
        with self.lock:
            return sum(1 for t, _ in self.got if t == type_)

    def close(self):
        self.sock.close()


@pytest.fixture
def fakes():
    made = []

    def make(script):
        made.append(Fake(script))
        return made[-1]
    yield make
    for f in made:
        f.close()


@pytest.fixture
def warnings(caplog):
    caplog.set_level(logging.INFO, logger="pygen.gearman")
    return lambda: [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def perl_like(jobs):
    """Gearman::Server: ERROR for GRAB_JOB_UNIQ, JOB_ASSIGN/NO_JOB for GRAB_JOB, silent results."""
    def script(type_, args):
        if type_ == Type.GRAB_JOB_UNIQ:
            return ERR_UNKNOWN
        if type_ == Type.GRAB_JOB:
            return encode(RES, Type.JOB_ASSIGN, *jobs.pop(0)) if jobs else encode(RES, Type.NO_JOB)
        if type_ == Type.ECHO_REQ:
            return None
        return b""
    return script


def take(worker, n, seconds=5.0):
    got, deadline = [], time.monotonic() + seconds
    while len(got) < n and time.monotonic() < deadline:
        got += worker.grab(n - len(got), 0.2)
    return got


def test_refused_grab_job_uniq_falls_back_to_grab_job(fakes, warnings):
    jobs = [(f"H:x:{i}", "f", b"w%d" % i) for i in range(5)]
    fake = fakes(perl_like(jobs))
    with Worker([fake.address], ["f"], timeout=30.0, poll_interval=0.05) as w:
        got = take(w, 5)
        assert [(j.handle, j.function, j.unique, j.workload) for j in got] == \
            [(f"H:x:{i}", "f", "", b"w%d" % i) for i in range(5)]
        assert w.complete_many(got) == 5
        first_uniq = fake.count(Type.GRAB_JOB_UNIQ)
        assert 1 <= first_uniq <= 5  # one batch of them, each answered by ERROR
        # remembered for the server: a new connection asks with GRAB_JOB at once
        w._down(w.links[0], "test")
        w.links[0].retry_at = 0
        jobs.append(("H:x:9", "f", b"again"))
        (again,) = take(w, 1)
        assert again.workload == b"again" and again.unique == ""
    assert fake.connections == 2 and fake.count(Type.GRAB_JOB_UNIQ) == first_uniq
    refusals = [m for m in warnings() if "GRAB_JOB_UNIQ" in m]
    assert len(refusals) == 1 and "using GRAB_JOB" in refusals[0]
    assert [m for m in warnings() if "reconnecting" in m] == [f"gearmand {fake.address}: test; reconnecting in 0.00 s"]


def test_server_refusing_every_grab_is_down_with_growing_back_off(fakes, warnings):
    fake = fakes(lambda type_, args: ERR_UNKNOWN if type_ in (Type.GRAB_JOB_UNIQ, Type.GRAB_JOB) else None)
    waits = []

    class Recording(Worker):
        def _down(self, link, why):
            if link.state != "down":
                waits.append(link.backoff)  # how long it stays away this time
            super()._down(link, why)
    with Recording([fake.address], ["f"], timeout=30.0, poll_interval=0.05, max_backoff=0.4) as w:
        deadline = time.monotonic() + 20
        while len(waits) < 6 and time.monotonic() < deadline:
            assert w.grab(1, 0.2) == []
    # the ERRORs never count as a working server: the back-off grows to its cap, never reset
    assert waits == [0.0, 0.05, 0.1, 0.2, 0.4, 0.4]
    assert fake.connections >= 6
    assert len([m for m in warnings() if "refuses GRAB_JOB (" in m]) == 6


def test_error_for_a_result_is_not_taken_for_a_grab_reply(fakes, warnings):
    jobs = [(f"H:x:{i}", "f", b"%d" % i) for i in range(200)]

    def script(type_, args):
        if type_ in (Type.WORK_COMPLETE, Type.WORK_FAIL):
            return encode(RES, Type.ERROR, "not_worker", "")  # e.g. a job the server gave away
        return perl_like(jobs)(type_, args)
    fake = fakes(script)
    with Worker([fake.address], ["f"], timeout=30.0, poll_interval=0.05) as w:
        got = take(w, 10)
        w.complete_many(got)               # 10 refused results ...
        got += take(w, 190)                # ... then grabs: each ERROR is a result's, not a grab's
        assert len(got) == 200 and len({j.handle for j in got}) == 200
        w.complete_many(got[10:])
        assert take(w, 1, 0.5) == []       # the remaining ERRORs settle; the link stays up
        assert w.links[0].state in ("awake", "sleeping") and w.links[0].grabs == 0
    assert fake.connections == 1
    refused = [m for m in warnings() if "refused a job's result" in m]
    assert len(refused) == 1  # 200 refusals, one line (at most one every WARN_EVERY seconds)


def test_more_errors_than_requests_drop_the_link_once(fakes, warnings):
    """Every ERROR answers a request: 500 for one CAN_DO mean a broken stream. The link goes
    down (one line), and the next connection works."""
    flood = [encode(RES, Type.ERROR, "x", "y") * 500]
    jobs = [("H:x:1", "f", b"w")]

    def script(type_, args):
        if type_ == Type.CAN_DO and flood:
            return flood.pop()
        return perl_like(jobs)(type_, args)
    fake = fakes(script)
    with Worker([fake.address], ["f"], timeout=30.0, poll_interval=0.05) as w:
        (job,) = take(w, 1)
        assert job.workload == b"w" and w.links[0].state in ("awake", "sleeping")
    assert fake.connections == 2
    assert len(warnings()) <= 4, warnings()  # hello refused, ECHO refused (down), GRAB_JOB_UNIQ refused


def test_exception_on_a_server_without_grab_job_uniq_is_a_work_fail(fakes):
    fake = fakes(perl_like([("H:x:1", "f", b"boom")]))

    def boom(job):
        raise ValueError("bad row")
    with Worker([fake.address], {"f": boom}, timeout=30.0, poll_interval=0.05) as w:
        (job,) = take(w, 1)
        w.work(job)
        deadline = time.monotonic() + 5
        while not fake.count(Type.WORK_FAIL) and time.monotonic() < deadline:
            time.sleep(0.01)
    # Gearman::Server keeps a job after WORK_EXCEPTION (it only relays it): it would never end
    assert fake.count(Type.WORK_FAIL) == 1 and fake.count(Type.WORK_EXCEPTION) == 0


def test_refused_hello_is_not_taken_for_a_grab_reply(fakes, warnings):
    jobs = [(f"H:x:{i}", "f", f"u{i}", b"%d" % i) for i in range(3)]

    def script(type_, args):  # a server without SET_CLIENT_ID, otherwise modern
        if type_ == Type.SET_CLIENT_ID:
            return encode(RES, Type.ERROR, "unknown_command", "")
        if type_ == Type.GRAB_JOB_UNIQ:
            return encode(RES, Type.JOB_ASSIGN_UNIQ, *jobs.pop(0)) if jobs else encode(RES, Type.NO_JOB)
        return None
    fake = fakes(script)
    with Worker([fake.address], ["f"], timeout=30.0, poll_interval=0.05) as w:
        got = take(w, 3)
        assert [j.unique for j in got] == ["u0", "u1", "u2"]
        assert w.links[0].uniq and w.links[0].state in ("awake", "sleeping")
    assert fake.connections == 1 and fake.count(Type.GRAB_JOB) == 0
    assert [m for m in warnings() if "refused" in m or "refuses" in m] == \
        [f"gearmand {fake.address}: refused SET_CLIENT_ID or CAN_DO (unknown_command: )"]


@pytest.mark.parametrize("reply", [
    b"\0RES" + (99).to_bytes(4, "big") + (0).to_bytes(4, "big"),   # a packet type from the future
    encode(RES, Type.JOB_CREATED, "H:x:1"),                          # a client's reply, to a worker
    b"ERR unknown_command Unknown+server+command\r\n",              # a text-protocol answer
])
def test_a_server_answering_nonsense_is_down_with_growing_back_off(fakes, reply):
    fake = fakes(lambda type_, args: reply if type_ in (Type.GRAB_JOB_UNIQ, Type.GRAB_JOB) else None)
    waits = []

    class Recording(Worker):
        def _down(self, link, why):
            if link.state != "down":
                waits.append(link.backoff)
            super()._down(link, why)
    with Recording([fake.address], ["f"], timeout=30.0, poll_interval=0.05, max_backoff=0.2) as w:
        deadline = time.monotonic() + 20
        while len(waits) < 5 and time.monotonic() < deadline:
            assert w.grab(1, 0.2) == []
    assert waits == [0.0, 0.05, 0.1, 0.2, 0.2]


def test_client_without_the_exceptions_option(fakes):
    """A server that refuses OPTION_REQ "exceptions" still runs jobs; failures come as WORK_FAIL."""
    def script(type_, args):
        if type_ == Type.OPTION_REQ:
            return encode(RES, Type.ERROR, "unknown_option", "")
        if type_ == Type.SUBMIT_JOB:
            handle = b"H:x:" + args[2]
            done = encode(RES, Type.WORK_COMPLETE, handle, args[2][::-1]) if args[2] != b"bad" else \
                encode(RES, Type.WORK_FAIL, handle)
            return encode(RES, Type.JOB_CREATED, handle) + done
        return None
    fake = fakes(script)
    with Client(fake.address) as c:
        assert c.do("f", b"abc") == ("complete", b"cba")
        conn = c.conn
        assert c.exceptions_option is False
        assert c.do("f", b"bad") == ("fail", None)
        assert c.do("f", b"xyz") == ("complete", b"zyx") and c.conn is conn
    assert fake.count(Type.OPTION_REQ) == 1 and fake.connections == 1


def test_client_refused_submit_keeps_the_connection(fakes):
    def script(type_, args):
        if type_ == Type.SUBMIT_JOB_LOW_BG:
            return encode(RES, Type.ERROR, "server_error", "no CMD_submit_job_low_bg")
        if type_ == Type.SUBMIT_JOB_BG:
            return encode(RES, Type.JOB_CREATED, b"H:x:" + args[2])
        return None
    fake = fakes(script)
    with Client(fake.address) as c:
        for _ in range(3):
            with pytest.raises(JobServerError, match="server_error") as err:
                c.submit_background("f", b"1", priority="low")
            assert err.value.in_sync
            assert c.submit_background("f", b"2") == "H:x:2"
        with pytest.raises(JobServerError) as err:
            c.submit_many_background([("f", b"a", None), ("f", b"b", None)] * 3, priority="low", batch=2)
        assert len(err.value.results) == 4 and err.value.handles == []  # two batches in flight, all read
        assert c.echo(b"z") == b"z"
    assert fake.connections == 1
