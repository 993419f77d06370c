"""A hostile "gearmand": a fake job server in a thread that misbehaves in scripted ways, and
the plugin, called through SQL, which must each time give NULL (or the right value) with a
clear gman_last_error(), within about a second, and leave mariadbd alive.

Every test runs on one private mariadbd (module scope) configured by its environment:
do_timeout_ms = 1000 (gman_do and gman_sum wait that long for results, so their scenarios
stay short) and backoff_ms = 0 (a fake that just misbehaved is tried again at once, so a test
can call it several times). io_timeout_ms stays at its default, 300 ms, and max_workload at
16 MiB. A private server also keeps the fakes' ports (one registry slot each, for the life of
the process, 64 at most) out of the session server's registry; the fakes take a few ports in
turn, so each test starts with pooled connections to a fake that is gone.

The fakes and the SQL client are in tests/support/fake_gearmand.py.
"""
import itertools
import os
import socket
import time

import pytest

from tests.support.fake_gearmand import (ERROR, FAST, JOB_CREATED, NOOP, SUBMITS, WORK_COMPLETE, WORK_DATA,
                                         WORK_EXCEPTION, WORK_FAIL, WORK_STATUS, WORK_WARNING, Client,
                                         FakeGearmand, assert_fails, complete_with_workload, created, header, res,
                                         serve, then)
from tests.support.servers import start_private_mariadb

IO_TIMEOUT = 0.3       # io_timeout_ms default
DO_TIMEOUT = 1.0       # GMAN_UDF_DO_TIMEOUT_MS below
MAX_WORKLOAD = 16 << 20
MAX_REPLY = MAX_WORKLOAD + 4096   # gm_client_max_reply(): the packet data a reply may announce
# --- fixtures and SQL helpers -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def hostile_db(built_library, tmp_path_factory):
    env = {"GMAN_UDF_DO_TIMEOUT_MS": str(int(DO_TIMEOUT * 1000)), "GMAN_UDF_BACKOFF_MS": "0"}
    db = start_private_mariadb(built_library, tmp_path_factory.mktemp("hostile") / "plugin", env=env)
    yield db
    db.close()


@pytest.fixture
def client(hostile_db):
    c = Client(hostile_db)
    yield c
    c.conn.close()
    # whatever the fake did, mariadbd is alive and answers
    assert hostile_db.running, hostile_db.log_tail()
    with hostile_db.connect() as conn:
        cur = conn.cursor()
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)


@pytest.fixture(scope="module")
def fake_ports():
    """A few ports the fakes take in turn: mariadbd registers each host:port it ever used, 64
    at most, so one port per fake would run out. Reusing a port also makes every test start
    with pooled connections to a fake that is gone, which the plugin must notice."""
    socks = [socket.socket() for _ in range(4)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return itertools.cycle(ports)


@pytest.fixture
def fake(client, fake_ports):
    """fake(script, point=True, **kw) -> a running FakeGearmand (that `client` now points at)."""
    fakes = []

    def make(script, point=True, **kw):
        f = FakeGearmand(script, port=next(fake_ports), **kw)
        fakes.append(f)
        if point:
            client.servers_set(f.address)
        return f

    yield make
    for f in fakes:
        f.close()


def vm_kib(pid, field):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


# --- gman_do_background: one job, one reply -------------------------------------------------------------

def test_a_well_behaved_fake_works(client, fake):
    """The control: the fake speaks enough Gearman for every function used below."""
    f = fake(serve(complete_with_workload))
    value, _, elapsed = client.bg()
    assert value == b"H:fake:0" and elapsed < FAST
    value, _, _ = client.do(workload="hello")
    assert value == b"hello"
    assert client.bulk()[0] == 5
    assert client.sum()[0] == 15
    assert f.accepted >= 1


def test_accept_and_never_answer(client, fake):
    f = fake(lambda peer: peer.hold())
    assert_fails(client.bg(), f"gman_do_background: gearmand {f.address}: no reply (timed out)",
                 at_least=IO_TIMEOUT * 0.9)
    assert_fails(client.do(), f"gearmand {f.address}: no reply (timed out)", at_least=IO_TIMEOUT * 0.9)


def test_close_right_after_accept(client, fake):
    f = fake(lambda peer: peer.close())
    for _ in range(3):
        value, error, elapsed = client.bg()
        assert value is None and elapsed < FAST, (value, error, elapsed)
        assert f"gearmand {f.address}: " in error
        assert any(w in error for w in ("closed by gearmand", "Connection reset", "Broken pipe")), error


@pytest.mark.parametrize("garbage", [b"HTTP/1.0 400 Bad Request\r\n\r\n", b"\xff" * 64, b"\0RE", b"\0REX"],
                         ids=["http", "ff", "short-magic", "bad-4th-byte"])
def test_garbage_bytes(client, fake, garbage):
    def respond(peer, job):
        peer.send(garbage)
        peer.hold()
    f = fake(serve(respond))
    if garbage == b"\0RE":  # a prefix of a magic: the client must wait for more, then time out
        assert_fails(client.bg(), f"gearmand {f.address}: no reply (timed out)")
    else:
        assert_fails(client.bg(), f"gearmand {f.address}: bad magic")


@pytest.mark.parametrize("size", [0xFFFFFFFF, MAX_REPLY + 1], ids=["4GiB", "max_reply+1"])
@pytest.mark.parametrize("when", ["background", "do", "bulk"])
def test_huge_packet_is_refused_from_its_header(client, fake, hostile_db, size, when):
    """A header announcing a huge packet is refused as soon as the header is there: no waiting
    for the data, no allocation (mariadbd's virtual size and RSS do not jump)."""
    def respond(peer, job):
        if when == "do":
            created(peer, job)
        peer.send(header(WORK_COMPLETE if when == "do" else JOB_CREATED, size) + b"H:1\0")
        peer.hold()
    f = fake(serve(respond))
    pid = hostile_db.pid
    before = {k: vm_kib(pid, k) for k in ("VmRSS", "VmPeak")}
    got = {"background": client.bg, "do": client.do, "bulk": client.bulk}[when]()
    assert_fails(got, f"gearmand {f.address}", "packet larger than limit", "max_workload", within=0.5 if when != "bulk" else FAST)
    after = {k: vm_kib(pid, k) for k in ("VmRSS", "VmPeak")}
    assert after["VmRSS"] - before["VmRSS"] < 64 << 10, (before, after)
    assert after["VmPeak"] - before["VmPeak"] < 256 << 10, (before, after)


@pytest.mark.parametrize("type_", [0, 5, 35, 37, 1000, 0xFFFFFFFF])
def test_res_packet_of_an_unknown_type(client, fake, type_):
    f = fake(serve(lambda peer, job: peer.send(res(type_))))
    assert_fails(client.bg(), f"gearmand {f.address}: unknown packet type")


def test_unexpected_known_packet_before_job_created(client, fake):
    f = fake(serve(lambda peer, job: peer.send(res(WORK_COMPLETE, job.handle, b"r"))))
    assert_fails(client.bg(), f"gearmand {f.address}: unexpected WORK_COMPLETE before JOB_CREATED")


def test_data_on_a_packet_without_arguments(client, fake):
    f = fake(serve(lambda peer, job: peer.send(header(NOOP, 3) + b"abc")))
    assert_fails(client.bg(), f"gearmand {f.address}: data on a packet without arguments")


def test_job_created_in_one_byte_chunks(client, fake):
    """A reply split into 1-byte segments (5 ms apart, 110 ms in all) is put back together."""
    fake(serve(lambda peer, job: peer.drip(res(JOB_CREATED, job.handle), 0.005)))
    value, error, elapsed = client.bg()
    assert value == b"H:fake:0", error
    assert elapsed < FAST


def test_noops_before_job_created_are_skipped(client, fake):
    fake(serve(lambda peer, job: peer.send(res(NOOP) * 100 + res(JOB_CREATED, job.handle))))
    assert client.bg()[0] == b"H:fake:0"


def test_request_magic_echo(client, fake):
    """A peer that sends our own request back (\\0REQ magic): refused, not taken for a reply."""
    def script(peer):
        while (req := peer.read()) is not None:
            peer.send(req.raw)
    f = fake(script)
    assert_fails(client.bg(), f"gearmand {f.address}: unexpected SUBMIT_JOB_BG before JOB_CREATED")
    # gman_do's OPTION_REQ echoed is taken as the (ignored) option answer; its SUBMIT_JOB is not
    assert_fails(client.do(), f"gearmand {f.address}: unexpected SUBMIT_JOB before JOB_CREATED")


@pytest.mark.parametrize("text", [b"boom", b"x" * 100000], ids=["short", "100k"])
def test_error_packet(client, fake, text):
    f = fake(serve(lambda peer, job: peer.send(res(ERROR, b"ERR_NOPE", text))))
    value, error, elapsed = client.bg()
    assert value is None and elapsed < FAST
    assert error.startswith(f"gman_do_background: gearmand {f.address}: ERROR ERR_NOPE: ")
    assert text[:100].decode() in error and len(error) < 512
    # gman_do too; and the connection it refused on is not kept: a second call works the same way
    for _ in range(2):
        assert_fails(client.do(), f"gearmand {f.address}: ERROR ERR_NOPE: ")


def test_error_packet_without_its_separator(client, fake):
    f = fake(serve(lambda peer, job: peer.send(res(ERROR, b"no-nul-here"))))
    assert_fails(client.bg(), f"gearmand {f.address}: truncated arguments")


def test_error_on_one_server_falls_over_to_the_next(client, fake):
    bad = fake(serve(lambda peer, job: peer.send(res(ERROR, b"ERR", b"queue full"))), point=False)
    good = fake(serve(created), point=False)
    client.servers_set(f"{bad.address},{good.address}")
    value, error, _ = client.bg()
    assert value == b"H:fake:0", error


def test_slow_drip_noops_do_not_extend_the_timeout(client, fake):
    """A NOOP every 50 ms keeps bytes coming but never answers: one io timeout in all."""
    def respond(peer, job):
        while peer.send(res(NOOP)) and not peer.fake.stopping.is_set():
            time.sleep(0.05)
    f = fake(serve(respond))
    assert_fails(client.bg(), f"gearmand {f.address}: no reply (timed out)", at_least=IO_TIMEOUT * 0.9)


def test_slow_drip_job_created_past_the_timeout(client, fake):
    """JOB_CREATED one byte per 50 ms (about 1 s in all): the io timeout counts from the send."""
    f = fake(serve(lambda peer, job: peer.drip(res(JOB_CREATED, job.handle), 0.05)))
    assert_fails(client.bg(), f"gearmand {f.address}: no reply (timed out)", at_least=IO_TIMEOUT * 0.9)


@pytest.mark.parametrize("when", ["background", "do", "bulk"])
def test_flood_does_not_extend_the_timeout(client, fake, when):
    """NOOPs (WORK_STATUS for gman_do) sent as fast as the client reads them, for 3 s: the call
    still ends at its timeout (io timeout; do timeout once the job exists), not when the flood stops."""
    def respond(peer, job):
        if when == "do":
            created(peer, job)
            peer.flood(res(WORK_STATUS, job.handle, b"1", b"2"))
        elif when == "bulk":
            if job.index == 0:
                peer.flood(res(NOOP))
        else:
            peer.flood(res(NOOP))
    f = fake(serve(respond))
    got = {"background": client.bg, "do": client.do, "bulk": client.bulk}[when]()
    assert_fails(got, f"gearmand {f.address}", within=(DO_TIMEOUT if when == "do" else IO_TIMEOUT) + 0.7)


def test_one_connection_then_no_more_accepts(client, fake):
    """The fake accepts one connection, serves a job on it, closes it, and accepts no more (its
    listen backlog of 1 fills up): each later call fails within about one timeout."""
    def script(peer):
        req = peer.read()
        if req is not None and req.type in SUBMITS:
            created(peer, peer.fake.next_job(req))
        time.sleep(0.1)
        peer.close()
    f = fake(script, accept_limit=1, backlog=1)
    value, error, _ = client.bg()
    assert value == b"H:fake:0", error
    time.sleep(0.2)  # the pooled connection is closed by now
    for _ in range(4):
        value, error, elapsed = client.bg()
        assert value is None and elapsed < FAST, (value, error, elapsed)
        assert f"gearmand {f.address}: " in error
        assert "timed out" in error, error


def test_stray_bytes_on_a_pooled_connection_are_not_taken_for_the_next_reply(client, fake):
    """After a job, the fake sends a stray JOB_CREATED on the idle connection: the next call must
    not take it for its own reply (the pooled connection is stale), and must succeed."""
    def respond(peer, job):
        created(peer, job)
        if job.index == 0:
            time.sleep(0.05)
            peer.send(res(JOB_CREATED, b"H:stray"))
    fake(serve(respond))
    assert client.bg()[0] == b"H:fake:0"
    time.sleep(0.2)
    value, error, _ = client.bg()
    assert value == b"H:fake:1", error


def test_a_real_gearmand_works_at_once_after_the_fakes(client, fake, fresh_gearmand):
    """After a fake has timed out, closed, sent garbage and a huge header (each call leaving a
    connection behind or not), pointing the list at a real gearmand works on the next call."""
    mode = {"n": 0}

    def respond(peer, job):
        n = mode["n"]
        mode["n"] += 1
        if n == 0:
            created(peer, job)      # a healthy connection goes to the pool
        elif n == 1:
            peer.send(b"garbage!" * 4)
        elif n == 2:
            peer.send(header(JOB_CREATED, 0xFFFFFFFF))
        elif n == 3:
            peer.close()
        # n >= 4: silence
    fake(serve(respond))
    assert client.bg()[0] == b"H:fake:0"
    for _ in range(4):
        assert client.bg()[0] is None
    real = fresh_gearmand()
    client.servers_set(real.address)
    value, error, elapsed = client.bg(fn="hostile_after")
    assert value is not None and value.startswith(b"H:"), error
    assert elapsed < FAST
    assert real.status().get("hostile_after", (0, 0, 0))[0] == 1


# --- gman_do: the job exists, then the reply misbehaves ---------------------------------------------------

def test_do_result_for_another_handle_first(client, fake):
    fake(serve(then(lambda peer, job: peer.send(res(WORK_COMPLETE, b"H:someone:else", b"wrong")
                                                + res(WORK_COMPLETE, job.handle, b"right")))))
    value, error, _ = client.do()
    assert value == b"right", error


def test_do_skips_progress_noise(client, fake):
    """Status, warnings, NOOPs and other jobs' packets are skipped; our job's WORK_DATA is
    part of its result (chunks, then WORK_COMPLETE's data, as libgearman clients see it)."""
    def noise(peer, job):
        for h in (job.handle, b"H:other"):
            peer.send(res(WORK_DATA, h, b"partial\0data") + res(WORK_STATUS, h, b"1", b"10")
                      + res(WORK_WARNING, h, b"careful") + res(NOOP) + res(WORK_FAIL, b"H:other")
                      + res(WORK_EXCEPTION, b"H:other", b"not ours"))
        peer.send(res(WORK_COMPLETE, job.handle, b"done"))
    fake(serve(then(noise)))
    value, error, _ = client.do()
    assert value == b"partial\0datadone", error


def test_do_one_mib_result(client, fake):
    blob = os.urandom(1 << 20)
    fake(serve(then(lambda peer, job: peer.send(res(WORK_COMPLETE, job.handle, blob)))))
    value, error, elapsed = client.do()
    assert value == blob, error
    assert elapsed < 2 * FAST


def test_do_result_in_one_byte_chunks(client, fake):
    fake(serve(then(lambda peer, job: peer.drip(res(WORK_COMPLETE, job.handle, b"slow but sure"), 0.005))))
    value, error, _ = client.do()
    assert value == b"slow but sure", error


def test_do_result_larger_than_max_workload_is_refused(client, fake):
    """A WORK_COMPLETE whose data is larger than max_workload (+ the 4 KiB allowed for the
    handle) is refused from its header, though the fake then really sends it."""
    def respond(peer, job):
        size = MAX_REPLY + 1
        peer.send(header(WORK_COMPLETE, size) + job.handle + b"\0")
        peer.send(b"r" * (size - len(job.handle) - 1))
        peer.hold()
    f = fake(serve(then(respond)))
    assert_fails(client.do(), f"gman_do: gearmand {f.address}: job H:fake:0 accepted, then: packet larger than limit: "
                 f"{MAX_REPLY + 1} bytes, max_workload + 4096 is {MAX_REPLY}",
                 within=DO_TIMEOUT)


def test_do_work_exception(client, fake):
    fake(serve(then(lambda peer, job: peer.send(res(WORK_EXCEPTION, job.handle, b"ValueError: no such row 42")))))
    assert_fails(client.do(), "gman_do: the job raised an exception: ValueError: no such row 42")


def test_do_work_exception_text_is_cut_not_overrun(client, fake):
    fake(serve(then(lambda peer, job: peer.send(res(WORK_EXCEPTION, job.handle, b"E" * 100000)))))
    value, error, _ = client.do()
    assert value is None
    assert error.startswith("gman_do: the job raised an exception: EEEE") and len(error) < 512


def test_do_work_fail(client, fake):
    fake(serve(then(lambda peer, job: peer.send(res(WORK_FAIL, job.handle)))))
    assert_fails(client.do(), "gman_do: the job failed (WORK_FAIL)")


def test_do_option_refused_is_fine(client, fake):
    """A server without the "exceptions" option answers OPTION_REQ with ERROR: jobs still run."""
    fake(serve(then(lambda peer, job: peer.send(res(WORK_COMPLETE, job.handle, b"ok"))),
               option=lambda peer, req: peer.send(res(ERROR, b"ERR_UNKNOWN_OPTION", b"no"))))
    value, error, _ = client.do()
    assert value == b"ok", error


def test_do_job_created_then_silence(client, fake):
    f = fake(serve(created))
    assert_fails(client.do(), f"gman_do: gearmand {f.address}: job H:fake:0 accepted, then: no reply (timed out)",
                 at_least=DO_TIMEOUT * 0.9, within=DO_TIMEOUT + 0.7)


def test_do_job_created_then_close(client, fake):
    f = fake(serve(then(lambda peer, job: peer.close())))
    assert_fails(client.do(), f"gearmand {f.address}: job H:fake:0 accepted, then: connection closed by gearmand")


def test_do_truncated_result_then_close(client, fake):
    def respond(peer, job):
        peer.send(header(WORK_COMPLETE, 100) + job.handle + b"\0" + b"r" * 20)
        time.sleep(0.05)
        peer.close()
    f = fake(serve(then(respond)))
    assert_fails(client.do(), f"gearmand {f.address}: job H:fake:0 accepted, then: connection closed by gearmand")


def test_do_result_without_separator(client, fake):
    f = fake(serve(then(lambda peer, job: peer.send(res(WORK_COMPLETE, b"no-separator")))))
    assert_fails(client.do(), f"gearmand {f.address}: job H:fake:0 accepted, then: truncated arguments")


def test_do_status_drip_ends_at_the_do_timeout(client, fake):
    def respond(peer, job):
        while peer.send(res(WORK_STATUS, job.handle, b"1", b"2")) and not peer.fake.stopping.is_set():
            time.sleep(0.1)
    f = fake(serve(then(respond)))
    assert_fails(client.do(), f"gearmand {f.address}: job H:fake:0 accepted, then: no reply (timed out)",
                 at_least=DO_TIMEOUT * 0.9, within=DO_TIMEOUT + 0.7)


def test_do_error_after_job_created_ends_the_wait(client, fake):
    f = fake(serve(then(res(ERROR, b"ERR_SHUTDOWN", b"server going away"))))
    assert_fails(client.do(), f"gearmand {f.address}", "server going away", within=DO_TIMEOUT * 0.8)


def test_do_with_a_handle_longer_than_255_bytes(client, fake):
    """Either the job's result, or a quick, clear refusal of the handle: not a silent timeout."""
    long_handle = b"H:" + b"h" * 298

    def respond(peer, job):
        peer.send(res(JOB_CREATED, long_handle) + res(WORK_COMPLETE, long_handle, b"result"))
    fake(serve(respond))
    value, error, elapsed = client.do()
    assert value == b"result" or ("handle" in error and elapsed < DO_TIMEOUT * 0.8), (value, error, elapsed)


@pytest.mark.parametrize("length", [254, 255, 256])
def test_background_handle_fits_the_result_buffer(client, fake, length):
    """gman_do_background returns the handle in the server's 255-byte result buffer, NUL
    included: 254 bytes come back whole, a longer handle is refused (cut, it would name
    another job; whole, it would write past the buffer)."""
    handle = b"H:" + b"h" * (length - 2)
    f = fake(serve(lambda peer, job: peer.send(res(JOB_CREATED, handle))))
    value, error, elapsed = client.bg()
    if length <= 254:
        assert (value, error) == (handle, ""), (value, error)
    else:
        assert_fails((value, error, elapsed), f"gearmand {f.address}", "job handle longer than 254 bytes")


def test_job_created_without_a_handle_is_a_failure_and_goes_nowhere_else(client, fake):
    """A background call never succeeds without a handle. The job may be queued on that server,
    so it is not sent to the next one either; it is counted (no_handle)."""
    f = fake(serve(lambda peer, job: peer.send(res(JOB_CREATED, b""))), point=False)
    good = fake(serve(created), point=False)
    client.servers_set(f"{f.address},{good.address}")
    before = client.stats()["no_handle"]
    assert_fails(client.bg(), f"gman_do_background: gearmand {f.address}: JOB_CREATED without a job handle "
                 "(the job may or may not be queued there)")
    assert_fails(client.do(), f"gman_do: gearmand {f.address}: JOB_CREATED without a job handle")
    assert client.stats()["no_handle"] - before == 2
    assert good.accepted == 0


def test_a_server_that_sent_no_handle_is_backed_off(built_library, tmp_path):
    """The call it broke fails (its job may be queued there), and the server is put in back-off
    like one that failed, so the next calls go to the next server of the list. (They all went to
    the broken server, and each failed.)"""
    db = start_private_mariadb(built_library, tmp_path / "plugin", env={"GMAN_UDF_BACKOFF_MS": "60000"})
    broken = FakeGearmand(serve(lambda peer, job: peer.send(res(JOB_CREATED, b""))))
    good = FakeGearmand(serve(created))
    try:
        c = Client(db)
        c.servers_set(f"{broken.address},{good.address}")
        assert_fails(c.bg(), f"gearmand {broken.address}: JOB_CREATED without a job handle")
        assert good.accepted == 0
        for _ in range(3):
            value, error, _ = c.call("gman_do_background('f', 'x')")
            assert value is not None and value.startswith(b"H:"), (value, error)
        assert broken.accepted == 1 and good.accepted >= 1
        c.conn.close()
    finally:
        broken.close()
        good.close()
        db.close()


def test_last_error_does_not_leak_into_a_new_connection(client, fake, hostile_db):
    """Session A's gman_do fails with a worker's exception text; sessions opened after A closed
    have made no call yet, so their gman_last_error() is "" (as documented), not A's text."""
    fake(serve(then(lambda peer, job: peer.send(res(WORK_EXCEPTION, job.handle, b"secret of session A")))))
    a = Client(hostile_db)
    assert "secret of session A" in a.do()[1]
    a.conn.close()
    seen = []
    for _ in range(4):
        with hostile_db.connect() as conn:
            cur = conn.cursor()
            cur.execute("SELECT gman_last_error()")
            seen.append(cur.fetchone()[0])
    assert seen == [b""] * 4, seen


# --- aggregates: a stream of jobs on one connection ------------------------------------------------------

def test_bulk_never_confirmed(client, fake):
    f = fake(lambda peer: peer.hold())
    assert_fails(client.bulk(), f"gman_bulk_background: gearmand {f.address}: timed out waiting for confirmations "
                 "(0 of 5 jobs confirmed)", at_least=IO_TIMEOUT * 0.9)


def test_bulk_partly_confirmed(client, fake):
    f = fake(serve(lambda peer, job: created(peer, job) if job.index < 3 else None))
    assert_fails(client.bulk(), f"gearmand {f.address}: timed out waiting for confirmations (3 of 5 jobs confirmed)")


def test_bulk_garbage_mid_stream(client, fake):
    f = fake(serve(lambda peer, job: created(peer, job) if job.index < 2 else peer.send(b"\x01garbage")))
    assert_fails(client.bulk(), f"gearmand {f.address}: bad magic (2 of 5 jobs confirmed)")


def test_bulk_error_packet(client, fake):
    f = fake(serve(lambda peer, job: created(peer, job) if job.index != 1 else
                   peer.send(res(ERROR, b"ERR_QUEUE", b"queue is full"))))
    assert_fails(client.bulk(), f"gearmand {f.address}: ERROR ERR_QUEUE: queue is full")


def test_bulk_job_created_without_a_handle(client, fake):
    f = fake(serve(lambda peer, job: created(peer, job) if job.index != 1 else peer.send(res(JOB_CREATED, b""))))
    before = client.stats()["no_handle"]
    assert_fails(client.bulk(), f"gman_bulk_background: gearmand {f.address}: JOB_CREATED without a job handle "
                 "(job ", " may or may not be queued; 1 of 5 without a handle) (4 of 5 jobs confirmed)")
    assert client.stats()["no_handle"] - before == 1


def test_bulk_moved_past_a_protocol_violation_says_so(client, fake):
    """Garbage before any confirmation: the burst goes to the next server and the group goes
    through, but gman_last_error() names the broken server (and it is counted)."""
    bad = fake(serve(lambda peer, job: peer.send(b"\x01garbage")), point=False)
    good = fake(serve(created), point=False)
    client.servers_set(f"{bad.address},{good.address}")
    before = client.stats()["protocol_errors"]
    value, error, _ = client.bulk()
    assert value == 5, error
    assert error == (f"gman_bulk_background: gearmand {bad.address} broke the protocol: bad magic (its 5 unanswered "
                     f"jobs went to gearmand {good.address})"), error
    assert client.stats()["protocol_errors"] - before == 1


def test_bulk_close_mid_stream(client, fake):
    f = fake(serve(lambda peer, job: created(peer, job) if job.index < 2 else peer.close()))
    assert_fails(client.bulk(), f"gearmand {f.address}: ")


def test_bulk_noop_drip_does_not_extend_the_timeout(client, fake):
    def respond(peer, job):
        if job.index == 4:
            while peer.send(res(NOOP)) and not peer.fake.stopping.is_set():
                time.sleep(0.05)
        else:
            created(peer, job)
    f = fake(serve(respond))
    assert_fails(client.bulk(), f"gearmand {f.address}: timed out waiting for confirmations (4 of 5 jobs confirmed)")


def test_sum_with_noise_and_out_of_order_results(client, fake):
    jobs = []

    def respond(peer, job):
        created(peer, job)
        peer.send(res(WORK_STATUS, job.handle, b"0", b"1") + res(WORK_DATA, job.handle, b"...") + res(NOOP))
        jobs.append(job)
        if len(jobs) == 5:
            for j in reversed(jobs):
                peer.send(res(WORK_COMPLETE, j.handle, j.workload))
    fake(serve(respond))
    value, error, _ = client.sum()
    assert value == 15, error


def test_sum_with_one_exception(client, fake):
    def respond(peer, job):
        created(peer, job)
        if job.index == 2:
            peer.send(res(WORK_EXCEPTION, job.handle, b"bad row"))
        else:
            peer.send(res(WORK_COMPLETE, job.handle, job.workload))
    fake(serve(respond))
    assert_fails(client.sum(), "gman_sum: 1 of 5 jobs failed")


def test_sum_results_never_come(client, fake):
    f = fake(serve(created))
    assert_fails(client.sum(), f"gman_sum: gearmand {f.address}: timed out waiting for results (5 of 5 jobs confirmed)",
                 at_least=DO_TIMEOUT * 0.9, within=DO_TIMEOUT + 0.7)


def test_sum_ignores_results_for_other_handles(client, fake):
    jobs = []

    def respond(peer, job):
        created(peer, job)
        jobs.append(job)
        if len(jobs) == 3:
            peer.send(res(WORK_COMPLETE, b"H:someone:else", b"1000"))
            for j in jobs:
                peer.send(res(WORK_COMPLETE, j.handle, j.workload))
    fake(serve(respond))
    value, error, _ = client.sum(rows=3)
    assert value == 6, (value, error)
