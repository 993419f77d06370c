"""The hostile "gearmand" (tests/support/fake_gearmand.py) against pipelined calls
(pipeline_window > 0): a call returns before its JOB_CREATED, and the replies are read by later
calls on the same pooled connection. What a broken server sends there must still be seen: a
JOB_CREATED without a handle, a reply to no job, a packet nobody asked for are each counted in
gman_stats() and told by the call that read them (gman_last_error()), and the job of a
JOB_CREATED without a handle is never sent again (it may be queued).

One private mariadbd (module scope) with pipeline_window = 8 and backoff_ms = 0; every fake on
a port of its own, so no test finds another's jobs parked in the pool.
"""
import time

import pytest

from tests.support.fake_gearmand import JOB_CREATED, WORK_COMPLETE, Client, FakeGearmand, res, serve
from tests.support.servers import start_private_mariadb

SETTLE = 0.2  # for the fake's replies to arrive before the next call reads them


@pytest.fixture(scope="module")
def pipelined_db(built_library, tmp_path_factory):
    env = {"GMAN_UDF_PIPELINE_WINDOW": "8", "GMAN_UDF_BACKOFF_MS": "0", "GMAN_UDF_DO_TIMEOUT_MS": "1000"}
    db = start_private_mariadb(built_library, tmp_path_factory.mktemp("hostile-pipelined") / "plugin", env=env)
    yield db
    db.close()


@pytest.fixture
def client(pipelined_db):
    c = Client(pipelined_db)
    yield c
    c.conn.close()
    assert pipelined_db.running, pipelined_db.log_tail()


@pytest.fixture
def fake(client):
    """fake(script) -> a running FakeGearmand on a fresh port, the client's only server."""
    fakes = []

    def make(script):
        f = FakeGearmand(script)
        fakes.append(f)
        client.servers_set(f.address)
        return f

    yield make
    for f in fakes:
        f.close()


def submit(client, workload):
    value, error, _ = client.bg(workload=workload)
    assert value is not None, error
    time.sleep(SETTLE)
    return value.decode(), error


def test_job_created_without_a_handle_is_told_and_not_sent_again(client, fake):
    jobs = []

    def respond(peer, job):
        jobs.append(job)
        peer.send(res(JOB_CREATED, b"" if job.index == 0 else job.handle))
    f = fake(serve(respond))
    before = client.stats()
    first, error = submit(client, "w0")
    assert error == ""
    _, error = submit(client, "w1")  # reads the reply to w0
    assert error == (f"gman_do_background: job {first} not confirmed by gearmand {f.address}: JOB_CREATED without "
                     "a job handle (it may or may not be queued there)"), error
    submit(client, "w2")  # the connection goes on: reads w1's confirmation
    after = client.stats()
    assert after["no_handle"] - before["no_handle"] == 1 and after["confirmed"] - before["confirmed"] == 1
    assert after["rescued"] == before["rescued"]
    assert [j.workload for j in jobs] == [b"w0", b"w1", b"w2"]  # each once


def test_a_server_that_sent_no_handle_is_backed_off(built_library, tmp_path):
    """The call that reads the JOB_CREATED without a handle puts its server in back-off, so the
    next jobs go to the next server of the list. (Every job kept going to the broken server.)"""
    env = {"GMAN_UDF_PIPELINE_WINDOW": "8", "GMAN_UDF_BACKOFF_MS": "60000"}
    db = start_private_mariadb(built_library, tmp_path / "plugin", env=env)
    broken = FakeGearmand(serve(lambda peer, job: peer.send(res(JOB_CREATED, b""))))
    good = FakeGearmand(serve(lambda peer, job: peer.send(res(JOB_CREATED, job.handle))))
    try:
        c = Client(db)
        c.servers_set(f"{broken.address},{good.address}")
        submit(c, "w0")
        _, error = submit(c, "w1")  # reads w0's reply: the server is broken
        assert "JOB_CREATED without a job handle" in error, error
        assert good.accepted == 0
        for i in range(2, 5):
            submit(c, f"w{i}")
        # w2-w4 went to the good server; w1's reply waits unread on the broken server's parked
        # connection until its back-off ends
        assert good.accepted == 1 and c.stats()["no_handle"] == 1
        c.conn.close()
    finally:
        broken.close()
        good.close()
        db.close()


@pytest.mark.parametrize("extra, what", [(res(JOB_CREATED, b"H:stray"), "JOB_CREATED for a job it was not sent"),
                                         (None, "unexpected WORK_COMPLETE")],
                         ids=["reply-to-no-job", "unexpected-type"])
def test_a_protocol_violation_is_counted_and_told(client, fake, extra, what):
    """The connection is dropped (its unanswered jobs go again on a fresh one) and the call that
    read the violation, which itself goes through, says so."""
    def respond(peer, job):
        peer.send(res(JOB_CREATED, job.handle) + (extra or res(WORK_COMPLETE, job.handle, b"done")))
    f = fake(serve(respond))
    before = client.stats()["protocol_errors"]
    _, error = submit(client, "w0")
    assert error == ""
    _, error = submit(client, "w1")  # reads w0's JOB_CREATED, then what follows it
    assert error == (f"gman_do_background: gearmand {f.address} broke the protocol: {what} (connection dropped, "
                     "0 unanswered jobs sent again)"), error
    assert client.stats()["protocol_errors"] - before == 1
    assert f.accepted == 2  # a fresh connection took w1
