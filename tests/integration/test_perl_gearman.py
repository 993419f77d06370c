"""pygen's Gearman client and worker against Perl Gearman::Server 1.130 (Debian gearman-server,
pygen.sandbox.PerlGearmand), the original protocol: no GRAB_JOB_UNIQ, no *_LOW, no
SUBMIT_JOB_HIGH_BG, no WORK_DATA, and WORK_EXCEPTION does not end a job. Each test uses its own
function names on the session's Perl server."""
import threading
import time
import uuid

import pytest

from pygen.gearman.client import Client
from pygen.gearman.connection import JobServerError
from pygen.gearman.worker import Worker


def fname(tag="f"):
    return f"{tag}_{uuid.uuid4().hex[:10]}"


def wait_until(predicate, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


class running:
    """A pygen Worker serving `functions` on the Perl server, in a thread."""

    def __init__(self, server, functions, batch=1):
        self.worker = Worker([server.address], functions, poll_interval=0.05)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.worker.run, args=(self.stop, batch), daemon=True)

    def __enter__(self):
        self.thread.start()
        return self.worker

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(5)
        assert not self.thread.is_alive(), "worker did not stop"


def test_worker_takes_jobs_with_grab_job(perl_gearmand, caplog):
    fn = fname()
    n = 2000
    with Client(perl_gearmand.address) as c:
        handles = c.submit_many_background((fn, b"%d" % i, f"u{i}") for i in range(n))
    assert len(set(handles)) == n and perl_gearmand.status()[fn] == (n, 0, 0)
    w = Worker([perl_gearmand.address], [fn], poll_interval=0.05)
    seen = []
    try:
        deadline = time.monotonic() + 30
        while len(seen) < n and time.monotonic() < deadline:
            jobs = w.grab(500, 1.0)
            w.complete_many(jobs)
            seen += jobs
        assert w.grab(1, 0.3) == []
    finally:
        w.close()
    assert sorted(int(j.workload) for j in seen) == list(range(n))  # each job once
    assert {j.unique for j in seen} == {""}  # JOB_ASSIGN carries no unique id
    wait_until(lambda: perl_gearmand.status().get(fn, (0, 0, 0))[:2] == (0, 0), what="drained")
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and r.name == "pygen.gearman"]
    assert len(warnings) == 1 and "refuses GRAB_JOB_UNIQ" in warnings[0], warnings


@pytest.mark.parametrize("priority,background", [("low", False), ("low", True), ("high", True)])
def test_packets_it_lacks_are_refused_and_the_connection_stays(perl_gearmand, priority, background):
    fn = fname()
    with Client(perl_gearmand.address) as c:
        conn = c._connection()
        with pytest.raises(JobServerError, match="server_error") as err:
            if background:
                c.submit_background(fn, b"x", priority=priority)
            else:
                c.do(fn, b"x", priority=priority, timeout=2)
        assert err.value.in_sync and c.conn is conn  # the ERROR was the whole answer
        assert c.echo(b"still here") == b"still here"
        assert c.submit_background(fn, b"y").startswith("H:") and c.conn is conn
    assert perl_gearmand.status()[fn] == (1, 0, 0)


def test_refused_batch_reads_every_reply(perl_gearmand):
    fn = fname()
    with Client(perl_gearmand.address) as c:
        with pytest.raises(JobServerError) as err:
            c.submit_many_background([(fn, b"%d" % i, None) for i in range(1200)], priority="high", batch=512)
        e = err.value
        assert e.handles == [] and len(e.results) == 1024  # two batches in flight, every reply read
        assert all(isinstance(r, JobServerError) for r in e.results)
        assert c.submit_many_background([(fn, b"ok", None)]) and c.echo() == b"ping"
    assert perl_gearmand.status()[fn] == (1, 0, 0)


def test_client_and_worker_round_trips(perl_gearmand):
    fn = fname()

    def boom(job):
        raise ValueError("bad row")
    functions = {fn: lambda job: job.workload[::-1], fn + "_boom": boom, fn + "_fail": lambda job: job.fail()}
    with running(perl_gearmand, functions), Client(perl_gearmand.address) as c:
        assert c.do(fn, b"abc") == ("complete", b"cba")
        assert c.do(fn, b"\0\xff" * 1000, priority="high") == ("complete", b"\xff\0" * 1000)
        assert c.exceptions_option is True
        # an exception goes out as WORK_FAIL: Gearman::Server would keep the job after WORK_EXCEPTION
        assert c.do(fn + "_boom", b"", timeout=5) == ("fail", None)
        assert c.do(fn + "_fail", b"", timeout=5) == ("fail", None)
        wait_until(lambda: all(perl_gearmand.status().get(f, (0, 0, 0))[:2] == (0, 0) for f in functions),
                   what="every job ended")


def test_maxqueue_drops_queued_jobs_instead_of_refusing(perl_gearmand):
    """What the README warns about: Gearman::Server's maxqueue accepts every job (JOB_CREATED)
    and makes room by discarding the newest queued one, where gearmand refuses the new job."""
    fn = fname()
    with Client(perl_gearmand.address) as c:
        c.submit_background(fn, b"0")
        assert perl_gearmand.admin(f"maxqueue {fn} 3") == "OK"
        assert all(c.submit_background(fn, b"%d" % i).startswith("H:") for i in range(1, 6))
    assert perl_gearmand.status()[fn] == (3, 0, 0)
    w = Worker([perl_gearmand.address], [fn], poll_interval=0.05)
    try:
        jobs = w.grab(10, 1.0)
        w.complete_many(jobs)
    finally:
        w.close()
    assert sorted(j.workload for j in jobs) == [b"0", b"1", b"5"]


def test_one_worker_on_a_c_and_a_perl_server(perl_gearmand, gearmand):
    """GRAB_JOB is per server: the C gearmand keeps getting GRAB_JOB_UNIQ (unique ids kept)."""
    fn = fname()
    with Client(gearmand.address) as c:
        c.submit_many_background((fn, b"c%d" % i, f"cu{i}") for i in range(50))
    with Client(perl_gearmand.address) as c:
        c.submit_many_background((fn, b"p%d" % i, f"pu{i}") for i in range(50))
    w = Worker([gearmand.address, perl_gearmand.address], [fn], poll_interval=0.05)
    seen = []
    try:
        deadline = time.monotonic() + 20
        while len(seen) < 100 and time.monotonic() < deadline:
            jobs = w.grab(20, 0.5)
            w.complete_many(jobs)
            seen += jobs
        assert [l.uniq for l in w.links] == [True, False]
    finally:
        w.close()
    by_server = {(j.server, j.workload[:1], j.unique[:2]) for j in seen}
    assert by_server == {(gearmand.address, b"c", "cu"), (perl_gearmand.address, b"p", "")}
    assert len(seen) == 100 and len({j.workload for j in seen}) == 100
