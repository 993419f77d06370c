"""pygen/gearman/client.py against a real gearmand (sandbox, in-memory queue).

Tests sharing the session gearmand each use their own function name, so queues never mix.
"""
import os
import signal
import socket
import threading
import time
import uuid

import pytest

from pygen.gearman.client import Client
from pygen.gearman.connection import Connection, JobServerError
from pygen.gearman.protocol import REQ, Type, encode
from pygen.gearman.worker import Worker
from tests.support.gearman import fname, running, wait_until


def recorder(result=b""):
    seen = []

    def fn(job):
        seen.append(job)
        return result
    return seen, fn


def test_echo_and_submit_background_queues(gearmand):
    fn = fname()
    with Client(gearmand.address) as c:
        assert c.echo(b"\0hi\xff") == b"\0hi\xff"
        handles = [c.submit_background(fn, b"x"), c.submit_background(fn, b"y", unique="u-1", priority="high"),
                   c.submit_background(fn, b"z", priority="low")]
    assert len(set(handles)) == 3 and all(h.startswith("H:") for h in handles)
    assert gearmand.status()[fn] == (3, 0, 0)


def test_worker_consumes_exact_payloads(gearmand):
    fn = fname()
    payloads = [b"", b"\x00", b"\xff", b"\x00\xff" * 100, bytes(range(256)), os.urandom(1 << 20)]
    uniques = [f"row-{i}-{uuid.uuid4().hex}" for i in range(len(payloads))]
    with Client(gearmand.address) as c:
        for payload, unique in zip(payloads, uniques):
            c.submit_background(fn, payload, unique)
    seen, work = recorder()
    with running(Worker([gearmand.address], {fn: work}), batch=4):
        wait_until(lambda: len(seen) == len(payloads), what="all payloads")
        time.sleep(0.1)  # nothing more may come
    assert [(j.unique, j.workload) for j in seen] == list(zip(uniques, payloads))
    assert {j.function for j in seen} == {fn} and {j.server for j in seen} == {gearmand.address}
    assert gearmand.status()[fn][:2] == (0, 0)


def test_client_generates_unique_ids(gearmand):
    fn = fname()
    with Client(gearmand.address) as c:
        for _ in range(3):
            c.submit_background(fn, b"same")  # same payload, no unique: three jobs, not coalesced
        c.submit_many_background([(fn, b"same", None), (fn, b"same", "")])
    assert gearmand.status()[fn][0] == 5
    with Worker([gearmand.address], [fn]) as w:
        jobs = w.grab(5, 2.0)
        assert len({j.unique for j in jobs}) == 5 and all(len(j.unique) == 32 for j in jobs)
        w.complete_many(jobs)


def test_do_returns_results(gearmand):
    fn = fname()
    work = {fn: lambda job: b"r" * int(job.workload), fn + "_s": lambda job: "\u00e9t\u00e9"}
    with running(Worker([gearmand.address], work)), Client(gearmand.address) as c:
        for size in (10, 300, 100 * 1024):
            assert c.do(fn, str(size).encode()) == ("complete", b"r" * size)
        assert c.do(fn + "_s", b"", priority="high") == ("complete", "\u00e9t\u00e9".encode())
        assert c.do(fn, b"0", priority="low") == ("complete", b"")


def test_do_fail_and_exception(gearmand):
    fn = fname()

    def boom(job):
        raise ValueError("bad row")

    def explicit(job):
        if job.workload == b"fail":
            job.fail()
        else:
            job.exception("custom text")

    with running(Worker([gearmand.address], {fn + "_boom": boom, fn + "_x": explicit,
                                             fn + "_int": lambda job: 5})), \
            running(Worker([gearmand.address], {fn + "_quiet": boom}, exceptions=False)), \
            Client(gearmand.address) as c:
        assert c.do(fn + "_boom", b"") == ("exception", "ValueError: bad row")
        assert c.do(fn + "_x", b"fail") == ("fail", None)
        assert c.do(fn + "_x", b"exc") == ("exception", "custom text")
        assert c.do(fn + "_quiet", b"") == ("fail", None)
        assert c.do(fn + "_int", b"") == ("exception", f"TypeError: {fn}_int returned int, not bytes, str or None")
        status = gearmand.status()
        assert all(status[f][:2] == (0, 0) for f in (fn + "_boom", fn + "_x", fn + "_quiet"))


def test_exception_without_option_reaches_client_as_fail(gearmand):
    # gearmand turns WORK_EXCEPTION into WORK_FAIL for a client that did not ask for exceptions
    fn = fname()
    with running(Worker([gearmand.address], {fn: lambda job: 1 / 0})):
        conn = Connection(gearmand.address).connect()
        try:
            conn.request(Type.SUBMIT_JOB, fn, "u1", b"")
            (handle,) = conn.expect(Type.JOB_CREATED)
            (fail_handle,) = conn.expect(Type.WORK_FAIL)
            assert fail_handle == handle + b"\0"  # sic: the handle keeps its NUL (Client.do strips it)
        finally:
            conn.close()


def test_priorities_high_normal_low(gearmand):
    fn = fname()
    with Client(gearmand.address) as c:
        for priority in ("low", "normal", "high", "low", "normal", "high"):
            c.submit_background(fn, priority.encode(), priority=priority)
    order = []
    with Worker([gearmand.address], [fn]) as w:
        while len(order) < 6:
            (job,) = w.grab(1, 2.0)
            order.append(job.workload)
            assert w.complete(job)
    assert order == [b"high", b"high", b"normal", b"normal", b"low", b"low"]


def test_submit_many_then_drain_in_batches(gearmand):
    fn = fname()
    n = 10_000
    with Client(gearmand.address) as c:
        t = time.perf_counter()
        handles = c.submit_many_background((fn, b"%d" % i, f"u{i}") for i in range(n))
        elapsed = time.perf_counter() - t
    assert len(handles) == len(set(handles)) == n
    assert gearmand.status()[fn] == (n, 0, 0)
    print(f"submit_many: {n / elapsed:,.0f} jobs/s")
    got = []
    with Worker([gearmand.address], [fn]) as w:
        while len(got) < n:
            jobs = w.grab(500, 2.0)
            assert jobs and len(jobs) <= 500
            got += [j.workload for j in jobs]
            assert w.complete_many(jobs) == len(jobs)
        wait_until(lambda: gearmand.status()[fn][:2] == (0, 0), what="all complete")
    assert got == [b"%d" % i for i in range(n)]


def test_gearmand_assigns_pipelined_grabs_on_one_connection(gearmand):
    """gearmand answers every GRAB_JOB_UNIQ of a burst: several jobs on one connection."""
    fn = fname()
    with Client(gearmand.address) as c:
        c.submit_many_background([(fn, b"%d" % i, None) for i in range(5)])
    conn = Connection(gearmand.address).connect()
    try:
        conn.send(encode(REQ, Type.CAN_DO, fn) + encode(REQ, Type.GRAB_JOB_UNIQ) * 7)
        replies = [conn.read_packet() for _ in range(7)]
        assert [t for t, _ in replies] == [Type.JOB_ASSIGN_UNIQ] * 5 + [Type.NO_JOB] * 2
        assert [a[3] for _, a in replies[:5]] == [b"0", b"1", b"2", b"3", b"4"]
        assert gearmand.status()[fn] == (5, 5, 1)
    finally:
        conn.close()
    # jobs of a worker that disconnects go back to the queue (head first: reversed order)
    wait_until(lambda: gearmand.status()[fn] == (5, 0, 0), what="re-queue")
    with Worker([gearmand.address], [fn]) as w:
        jobs = w.grab(5, 2.0)
        assert sorted(j.workload for j in jobs) == [b"0", b"1", b"2", b"3", b"4"]
        w.complete_many(jobs)


def test_batch_grab_and_late_completion(gearmand):
    fn = fname()
    with Client(gearmand.address) as c:
        c.submit_many_background([(fn, b"%d" % i, None) for i in range(50)])
    with Worker([gearmand.address], [fn]) as w:
        jobs = w.grab(40, 2.0)
        assert [j.workload for j in jobs] == [b"%d" % i for i in range(40)]
        assert gearmand.status()[fn] == (50, 40, 1)
        rest = w.grab(100, 2.0)  # fewer than asked: returns once gearmand says NO_JOB
        assert len(rest) == 10
        assert w.complete_many(jobs[:20]) == 20
        for job in jobs[20:30]:
            assert w.fail(job)
        for job in jobs[30:] + rest:
            assert job.exception("no")
        with pytest.raises(Exception, match="already finished"):
            w.complete(jobs[0])
        wait_until(lambda: gearmand.status()[fn][:2] == (0, 0), what="all finished")


def test_grab_sleeps_until_noop_and_times_out(gearmand):
    fn = fname()
    with Worker([gearmand.address], [fn]) as w, Client(gearmand.address) as c:
        t = time.monotonic()
        assert w.grab(10, 0.3) == []
        assert 0.25 < time.monotonic() - t < 1.0
        timer = threading.Timer(0.3, c.submit_background, (fn, b"late"))
        timer.start()
        t = time.monotonic()
        (job,) = w.grab(10, 5.0)
        assert job.workload == b"late" and time.monotonic() - t < 1.0
        timer.join()
        assert w.complete(job, b"done")


def test_wake_ends_a_grab_from_another_thread(gearmand):
    """wake() (from another thread) makes a waiting grab() return with what it has, and a
    wake before the grab makes it return at once; grabbing goes on afterwards."""
    fn = fname()
    with Worker([gearmand.address], [fn], poll_interval=60.0) as w, Client(gearmand.address) as c:
        w.grab(1, 0.2)  # connected, asleep
        woke = threading.Event()
        timer = threading.Timer(0.2, lambda: (woke.set(), w.wake()))
        timer.start()
        t = time.monotonic()
        assert w.grab(10, 60.0) == [] and woke.is_set()
        assert time.monotonic() - t < 30  # a grab that ignored the wake would run its 60 s
        timer.join()
        w.wake()
        w.wake()  # several wakes before a grab: one early return, then grabbing as usual
        t = time.monotonic()
        assert w.grab(10, 60.0) == [] and time.monotonic() - t < 30
        c.submit_background(fn, b"after")
        (job,) = w.grab(10, 5.0)
        assert job.workload == b"after" and w.complete(job)


def test_stop_is_prompt_and_closes(fresh_gearmand):
    gm = fresh_gearmand()
    w = Worker([gm.address], [fname()], poll_interval=0.2)
    thread = threading.Thread(target=w.run, daemon=True)
    thread.start()
    wait_until(lambda: gm.client_count() == 1, what="worker connected")
    time.sleep(0.3)  # asleep, waiting for NOOP
    t = time.monotonic()
    w.stop()
    thread.join(2)
    assert not thread.is_alive() and time.monotonic() - t < 0.6  # poll_interval + slack
    wait_until(lambda: gm.client_count() == 0, what="connection closed")


def test_worker_two_servers_survives_kill_and_restart(fresh_gearmand, caplog):
    a, b = fresh_gearmand(), fresh_gearmand()
    fn = fname()
    seen, work = recorder()
    done = lambda n: lambda: len(seen) >= n  # noqa: E731
    caplog.set_level("INFO", logger="pygen.gearman")
    with running(Worker([a.address, b.address], {fn: work}, max_backoff=0.5)), \
            Client(a.address) as ca, Client(b.address) as cb:
        ca.submit_background(fn, b"a1")
        cb.submit_background(fn, b"b1")
        wait_until(done(2), what="first jobs")
        a.kill(signal.SIGKILL)
        for i in range(20):
            cb.submit_background(fn, b"b-during-%d" % i)
        wait_until(done(22), 3.0, "jobs on the live server while the other is dead")
        time.sleep(1.0)  # long enough for the back-off to reach its cap
        attempts = sum("reconnecting" in r.getMessage() for r in caplog.records)
        a.start()
        t = time.monotonic()
        ca.close()  # its connection died with the server
        ca.submit_background(fn, b"a-after")
        wait_until(done(23), 5.0, "job on the restarted server")
        reconnect = time.monotonic() - t
        wait_until(lambda: a.status().get(fn, (0, 0, 0))[2] == 1, what="worker registered again")
        cb.submit_background(fn, b"b-after")
        wait_until(done(24), 2.0, "job on the other server after the reconnect")
    assert sorted(j.workload for j in seen) == sorted(
        [b"a1", b"b1", b"a-after", b"b-after"] + [b"b-during-%d" % i for i in range(20)])
    assert {j.server for j in seen if j.workload.startswith(b"a")} == {a.address}
    assert 3 <= attempts <= 10  # back-off, not a busy loop: 0.05, 0.1, 0.2, 0.4, 0.5, 0.5 ...
    assert reconnect < 2.0


def test_frozen_server_times_out_and_others_keep_working(fresh_gearmand, caplog):
    a, b = fresh_gearmand(), fresh_gearmand()
    fn = fname()
    seen, work = recorder()
    caplog.set_level("INFO", logger="pygen.gearman")
    # probe_interval: the sleeping worker re-grabs on a, which never answers
    with running(Worker([a.address, b.address], {fn: work}, timeout=0.3, probe_interval=0.2)), \
            Client(a.address, timeout=0.3) as ca, Client(b.address) as cb:
        wait_until(lambda: a.status().get(fn, (0, 0, 0))[2] == 1, what="worker on a")
        a.kill(signal.SIGSTOP)
        try:
            t = time.monotonic()
            with pytest.raises(TimeoutError):
                ca.submit_background(fn, b"never")
            assert time.monotonic() - t < 1.0
            for i in range(5):
                cb.submit_background(fn, b"b%d" % i)
                time.sleep(0.2)
            wait_until(lambda: len(seen) == 5, 1.0, "jobs on the live server")
            assert any("no reply within" in r.getMessage() for r in caplog.records)
        finally:
            a.kill(signal.SIGCONT)


def test_client_failover_and_refused(gearmand):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"  # bound, not listening: refused
        with Client([dead, gearmand.address]) as c:
            assert c.echo(b"x") == b"x" and c.conn.address == gearmand.address
        t = time.monotonic()
        with pytest.raises(ConnectionError, match="no gearmand reachable"), Client(dead) as c:
            c.submit_background("f", b"")
        assert time.monotonic() - t < 1.0


def test_bad_arguments(gearmand):
    with Client(gearmand.address) as c:
        with pytest.raises(ValueError, match="priority"):
            c.submit_background("f", b"", priority="urgent")
        with pytest.raises(ValueError, match="NUL"):
            c.submit_background("f\0x", b"")
        assert c.echo() == b"ping"  # the connection is still usable


def test_queue_full_and_long_unique_are_server_errors(gearmand):
    fn = fname()
    with Client(gearmand.address) as c:
        c.submit_background(fn, b"0")
        assert gearmand.admin(f"maxqueue {fn} 3").strip() == "OK"  # only takes hold once gearmand knows fn
        with pytest.raises(JobServerError, match="QUEUE_ERROR") as err:
            c.submit_many_background([(fn, b"%d" % i, None) for i in range(1, 6)])
        assert len(err.value.handles) == 2  # the ones accepted before the queue was full
        with pytest.raises(ValueError, match="63"):  # gearmand keeps 63 bytes of a unique id
            c.submit_background(fn + "_u", b"", unique="u" * 64)
        assert c.submit_background(fn + "_u", b"", unique="u" * 63).startswith("H:")
    assert gearmand.status()[fn][0] == 3


def test_server_error_packet_raises(gearmand):
    # an OPTION_REQ gearmand does not know is answered by ERROR
    conn = Connection(gearmand.address).connect()
    try:
        conn.request(Type.OPTION_REQ, "no-such-option")
        with pytest.raises(JobServerError):
            conn.expect(Type.OPTION_RES)
    finally:
        conn.close()
