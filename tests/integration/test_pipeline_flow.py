"""Flow control of pipelined sends (udf/gm_pipeline.c): a refused job is one job's failure,
waits measure progress (each reply restarts them), a slow server is not a dead one, and jobs
taken off a failed connection are sent elsewhere, never dropped while a server is up.

Every test runs its own mariadbd (the settings come from its environment) and gearmands.
"""
import json
import signal
import socket
import struct
import threading
import time

import MySQLdb
import pytest

from pygen.sandbox import Gearmand, PerlGearmand
from tests.support.gearman import fname, grab_all, queued, wait_until
from tests.support.sql import DB, Sql

WINDOW = 64
IO_TIMEOUT = 0.3       # io_timeout_ms default
CONNECT_TIMEOUT = 0.2  # connect_timeout_ms default


def stats(sql):
    return json.loads(sql.one("SELECT gman_stats()"))


def pipelined(private_mariadb, servers, **env):
    settings = {"GMAN_UDF_PIPELINE_WINDOW": str(WINDOW), "GMAN_UDF_SERVERS": ",".join(g.address for g in servers)}
    settings.update({f"GMAN_UDF_{k.upper()}": str(v) for k, v in env.items()})
    return private_mariadb(env=settings)


@pytest.fixture
def gearmands():
    """gearmands(n, **kw) -> started Gearmand servers, closed after the test."""
    started = []

    def make(n=1, **kw):
        servers = [Gearmand(**kw).start() for _ in range(n)]
        started.extend(servers)
        return servers if n > 1 else servers[0]

    yield make
    for g in started:
        g.close()


# --- an ERROR reply is one job's failure --------------------------------------------------------------

def test_queue_full_refuses_one_job_and_keeps_the_connection(private_mariadb, gearmands):
    """maxqueue 3: the 4th job is refused (ERROR). It is reported once, by the call that reads
    the ERROR, with its unique id; nothing is re-sent, nothing is lost, later calls work."""
    g = gearmands()
    db = pipelined(private_mariadb, [g])
    sql = Sql(db.connect(database=DB))
    fn = fname("full")
    errors = []

    def submit(workload):
        value, error = sql.rows("SELECT gman_do_background(%s, %s), gman_last_error()", (fn, workload))[0]
        assert value is not None, error
        errors.append(error.decode())
        return value.decode()

    uniques = [submit("w0")]
    wait_until(lambda: queued(g, fn) == 1, what="the function to exist")  # maxqueue needs it
    assert g.admin(f"maxqueue {fn} 3").strip() == "OK"
    uniques += [submit(f"w{i}") for i in range(1, 4)]
    wait_until(lambda: queued(g, fn) == 3, what="3 jobs queued")
    first = grab_all([g], fn, count=3)
    uniques += [submit(f"w{i}") for i in range(4, 7)]
    wait_until(lambda: queued(g, fn) == 3, what="3 more jobs queued")
    later = grab_all([g], fn, count=3)
    time.sleep(0.3)  # nothing else may come: the refused job is not sent again
    assert queued(g, fn) == 0
    ran = sorted(j.workload for j in first + later)
    assert ran == [b"w0", b"w1", b"w2", b"w4", b"w5", b"w6"], ran
    refusals = {e for e in errors if "refused" in e}
    assert len(refusals) == 1, errors
    (refusal,) = refusals
    assert f"job {uniques[3]} refused by gearmand {g.address}" in refusal, refusal
    assert refusal.startswith("gman_do_background: ")
    s = stats(sql)
    assert s["refused"] == 1 and s["lost"] == 0 and s["rescued"] == 0, s
    assert s["jobs"] == 7, s


def test_unknown_packet_is_one_refused_job(private_mariadb):
    """Perl Gearman::Server refuses SUBMIT_JOB_HIGH_BG (ERROR server_error): that job is
    reported refused; the other jobs on the connection are neither re-sent nor lost."""
    with PerlGearmand() as perl:
        db = pipelined(private_mariadb, [perl])
        sql = Sql(db.connect(database=DB))
        fn = fname("perl")
        queued_on_perl = lambda: perl.status().get(fn, (0, 0, 0))[0]  # noqa: E731
        high = sql.one("SELECT gman_do_high_background(%s, 'high')", (fn,)).decode()
        rows = [sql.rows("SELECT gman_do_background(%s, %s), gman_last_error()", (fn, f"n{i}"))[0] for i in range(5)]
        wait_until(lambda: queued_on_perl() == 5, what="5 jobs queued on the Perl server")
        rows.append(sql.rows("SELECT gman_do_background(%s, 'n5'), gman_last_error()", (fn,))[0])  # reads the ERROR
        assert all(v is not None for v, _ in rows), rows
        errors = [e.decode() for _, e in rows if e]
        assert errors and all(f"job {high} refused by gearmand {perl.address}: ERROR server_error" in e
                              for e in errors), errors
        wait_until(lambda: queued_on_perl() == 6, what="6 jobs queued on the Perl server")
        time.sleep(0.3)
        assert queued_on_perl() == 6  # each once: nothing re-sent
        s = stats(sql)
        assert s["refused"] == 1 and s["lost"] == 0 and s["rescued"] == 0, s


# --- waits measure progress ---------------------------------------------------------------------------

@pytest.mark.slow
def test_bulk_over_single_threaded_gearmand_with_a_deep_queue(private_mariadb, gearmands):
    """gearmand --threads=1 reads a whole burst before answering: a bulk of 100,000 rows
    with 200,000 jobs already queued is confirmed in full, each job once."""
    g = gearmands(extra_args=["--threads=1"])
    db = private_mariadb(env={"GMAN_UDF_SERVERS": g.address})
    sql = Sql(db.connect(database=DB))
    t = time.monotonic()
    assert sql.one("SELECT gman_bulk_background('deep', seq) FROM seq_1_to_200000") == 200000, sql.last_error()
    t_pre = time.monotonic() - t
    t = time.monotonic()
    got = sql.one("SELECT gman_bulk_background('bulk', seq) FROM seq_1_to_100000")
    t_bulk = time.monotonic() - t
    assert got == 100000, sql.one("SELECT gman_last_error()")
    assert queued(g, "deep") == 200000 and queued(g, "bulk") == 100000
    print(f"threads=1: 200k bulk {t_pre:.2f} s, then 100k bulk {t_bulk:.2f} s")


@pytest.mark.parametrize("threads", [None, 1], ids=["threads-default", "threads-1"])
def test_bulk_over_a_durable_queue_with_default_timeouts(private_mariadb, gearmands, threads):
    """-q libsqlite3 takes about 1 ms per job: 1,000 rows are more than one io_timeout_ms,
    but every reply restarts the wait. (With --threads=1 gearmand also reads the whole burst
    before it answers: a stream must not send more than a window ahead.)"""
    g = gearmands(queue="sqlite", extra_args=[f"--threads={threads}"] if threads else [])
    db = private_mariadb(env={"GMAN_UDF_SERVERS": g.address})
    sql = Sql(db.connect(database=DB))
    t = time.monotonic()
    got = sql.one("SELECT gman_bulk_background('durable', seq) FROM seq_1_to_1000")
    elapsed = time.monotonic() - t
    assert got == 1000, sql.one("SELECT gman_last_error()")
    assert queued(g, "durable") == 1000
    print(f"sqlite queue, threads={threads}: bulk of 1000 in {elapsed:.2f} s")


# --- concurrent writers, failover ---------------------------------------------------------------------

ROWS_PER_WRITER = 50
WRITERS = 4


def _writers(db, statements, progress, failures, committed):
    """WRITERS threads, each updating its own ROWS_PER_WRITER rows `statements` times."""
    def run(k):
        conn = db.connect(database=DB, autocommit=True)
        cur = conn.cursor()
        lo, hi = k * ROWS_PER_WRITER + 1, (k + 1) * ROWS_PER_WRITER
        for v in range(1, statements + 1):
            try:
                cur.execute("UPDATE w SET v = %s WHERE id BETWEEN %s AND %s", (v, lo, hi))
                committed.extend((i, v) for i in range(lo, hi + 1))
            except MySQLdb.MySQLError as e:
                failures.append((k, v, str(e)))
            progress[k] = v
        conn.close()
    threads = [threading.Thread(target=run, args=(k,), daemon=True) for k in range(WRITERS)]
    for t in threads:
        t.start()
    return threads


@pytest.mark.slow
@pytest.mark.parametrize("kills", [0, 2])
def test_four_writers_two_servers(private_mariadb, gearmands, kills):
    """4 sessions write in pipelined mode through a strict trigger (a NULL result fails the
    statement). With both servers healthy: no statement fails and no job is sent twice. With
    the first server SIGKILLed twice (and restarted from its durable queue): no statement
    fails (the second server is up all along) and every committed row has a job."""
    a, b = gearmands(2, queue="sqlite")
    db = pipelined(private_mariadb, [a, b])
    sql = Sql(db.connect(database=DB))
    sql.run("CREATE TABLE w (id INT PRIMARY KEY, v INT)")
    sql.run(f"INSERT INTO w SELECT seq, 0 FROM seq_1_to_{WRITERS * ROWS_PER_WRITER}")
    sql.run("CREATE TRIGGER w_au AFTER UPDATE ON w FOR EACH ROW BEGIN DECLARE e VARCHAR(128); "
            "IF gman_do_background('wsync', CONCAT(NEW.id, ':', NEW.v)) IS NULL THEN "
            "SET e = LEFT(gman_last_error(), 128); SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = e; END IF; END")
    statements = 40
    progress, failures, committed = [0] * WRITERS, [], []
    t0 = time.monotonic()
    threads = _writers(db, statements, progress, failures, committed)
    for n in range(kills):
        wait_until(lambda: min(progress) >= statements * (n + 1) // (kills + 1), timeout=60, what="writers' progress")
        a.kill(signal.SIGKILL)
        time.sleep(0.5)
        a.start()  # its durable queue holds what it confirmed
    for t in threads:
        t.join(120)
    elapsed = time.monotonic() - t0
    assert not any(t.is_alive() for t in threads)
    assert failures == [], failures[:5]
    jobs = grab_all([a, b], "wsync", timeout=60)
    seen = [tuple(int(x) for x in j.workload.split(b":")) for j in jobs]
    missing = set(committed) - set(seen)
    duplicates = len(seen) - len(set(seen))
    s = stats(sql)
    print(f"kills={kills}: {len(committed)} rows committed in {elapsed:.1f} s, {len(seen)} jobs, "
          f"{len(missing)} missing, {duplicates} duplicated; {s}")
    assert len(committed) == WRITERS * ROWS_PER_WRITER * statements
    assert not missing, sorted(missing)[:10]
    assert s["lost"] == 0, s
    if kills == 0:
        assert duplicates == 0 and s["rescued"] == 0, s


# --- a silent server is parked, not re-sent ----------------------------------------------------------

def test_frozen_server_is_parked_then_answers(private_mariadb, gearmands):
    """The first server freezes (SIGSTOP): once its window is full the call waits one
    io_timeout_ms, then goes on to the second server. The jobs waiting on the frozen one are not
    re-sent (they reached it); thawed, it confirms them. No call fails, no job is queued twice."""
    a, b = gearmands(2)
    db = pipelined(private_mariadb, [a, b])
    sql = Sql(db.connect(database=DB))
    fn = fname("frozen")
    n = 0

    def submit(count):
        nonlocal n
        for _ in range(count):
            value = sql.one("SELECT gman_do_background(%s, %s)", (fn, f"j{n}"))
            assert value is not None, sql.last_error()
            n += 1

    submit(10)
    wait_until(lambda: queued(a, fn) == 10, what="10 jobs on the first server")
    a.kill(signal.SIGSTOP)
    try:
        t = time.monotonic()
        submit(WINDOW + 50)  # fills the frozen server's window, then goes to the second one
        elapsed = time.monotonic() - t
    finally:
        a.kill(signal.SIGCONT)
    assert elapsed < 0.3 + 1.0, elapsed  # one io_timeout_ms (300 ms), not one per call
    time.sleep(1.1)  # past the back-off: the next call reads the parked connection's replies
    submit(5)
    wait_until(lambda: queued(a, fn) + queued(b, fn) == n, what=f"{n} jobs queued")
    jobs = grab_all([a, b], fn)
    names = sorted(j.workload for j in jobs)
    assert len(names) == len(set(names)) == n, (len(names), len(set(names)), n)
    s = stats(sql)
    assert s["rescued"] == 0 and s["lost"] == 0 and s["timeouts"] == 1, s


def test_server_silent_past_do_timeout_has_its_jobs_rescued(private_mariadb, gearmands):
    """A server that stays silent longer than do_timeout_ms is taken for gone: the next call
    that finds its parked connection sends those jobs to the next server."""
    a, b = gearmands(2)
    db = pipelined(private_mariadb, [a, b], do_timeout_ms=1000)
    sql = Sql(db.connect(database=DB))
    fn = fname("gone")
    a.kill(signal.SIGSTOP)
    try:
        for i in range(WINDOW + 10):
            assert sql.one("SELECT gman_do_background(%s, %s)", (fn, f"j{i}")) is not None, sql.last_error()
        time.sleep(1.2)  # past do_timeout_ms and the back-off
        assert sql.one("SELECT gman_do_background(%s, 'last')", (fn,)) is not None, sql.last_error()
        wait_until(lambda: queued(b, fn) == WINDOW + 11, what="every job on the second server")
    finally:
        a.kill(signal.SIGKILL)  # never thawed: what it holds is gone with it
    s = stats(sql)
    assert s["rescued"] == WINDOW and s["lost"] == 0, s


def test_every_server_silent_fails_after_io_timeout_and_keeps_the_parked_jobs(private_mariadb, gearmands):
    """The only server freezes: the call that finds its window full waits io_timeout_ms and
    fails (no longer do_timeout_ms more). The jobs sent before stay parked: thawed, the server
    confirms them; none is re-sent."""
    g = gearmands()
    db = pipelined(private_mariadb, [g], do_timeout_ms=1000)
    sql = Sql(db.connect(database=DB))
    fn = fname("allfrozen")
    assert sql.one("SELECT gman_do_background(%s, 'warm')", (fn,)) is not None
    wait_until(lambda: queued(g, fn) == 1, what="the first job")
    g.kill(signal.SIGSTOP)
    try:
        for i in range(WINDOW):  # the window: sent, unanswered ('warm' was confirmed)
            assert sql.one("SELECT gman_do_background(%s, %s)", (fn, f"j{i}")) is not None, sql.last_error()
        t = time.monotonic()
        value = sql.one("SELECT gman_do_background(%s, 'one too many')", (fn,))
        elapsed = time.monotonic() - t
        error = sql.last_error()
        later = sql.one("SELECT gman_do_background(%s, 'in back-off')", (fn,))  # fails at once
    finally:
        g.kill(signal.SIGCONT)
    assert value is None and "timed out waiting for confirmations" in error, (value, error, elapsed)
    assert later is None
    assert IO_TIMEOUT * 0.9 <= elapsed < 3 * IO_TIMEOUT, elapsed
    wait_until(lambda: queued(g, fn) == 1 + WINDOW, what="the parked jobs")
    time.sleep(1.1)  # back-off over: the next call reads the parked connection's replies
    assert sql.one("SELECT gman_do_background(%s, 'after')", (fn,)) is not None, sql.last_error()
    wait_until(lambda: queued(g, fn) == WINDOW + 2, what="every job once")
    s = stats(sql)
    assert s["rescued"] == 0 and s["lost"] == 0 and s["abandoned"] == 0, s


def test_every_server_frozen_costs_each_call_one_io_timeout_per_server(private_mariadb, gearmands):
    """Both servers frozen (SIGSTOP), do_timeout_ms long: no call waits longer than
    io_timeout_ms (+ connect_timeout_ms) per server, neither the one that finds the last window
    full nor the first one after the back-off, which probes both parked connections. The calls
    that fail send nothing; the jobs of those that succeeded are each queued once after the thaw."""
    a, b = gearmands(2)
    db = pipelined(private_mariadb, [a, b], do_timeout_ms=10000)
    sql = Sql(db.connect(database=DB))
    fn = fname("bothfrozen")
    bound = 2 * (IO_TIMEOUT + CONNECT_TIMEOUT)
    a.kill(signal.SIGSTOP)
    b.kill(signal.SIGSTOP)
    calls, sent = [], []
    try:
        def call(workload):
            t = time.monotonic()
            value = sql.one("SELECT gman_do_background(%s, %s)", (fn, workload))
            calls.append((time.monotonic() - t, workload, value is not None, sql.last_error()))
            if value is not None:
                sent.append(workload)
            return value

        i = 0
        while call(f"j{i}") is not None:  # both windows fill, the second server's last
            i += 1
            assert i <= 2 * WINDOW + 1, calls[-3:]
        time.sleep(1.1)  # the back-off is over: the next call probes both servers
        assert call("after the back-off") is None
    finally:
        a.kill(signal.SIGCONT)
        b.kill(signal.SIGCONT)
    slowest = max(calls)
    print(f"both servers frozen: slowest call {slowest[0]:.3f} s ({slowest[1]}), "
          f"first after the back-off {calls[-1][0]:.3f} s; bound {bound:.1f} s")
    assert slowest[0] < bound, slowest
    assert len(sent) == 2 * WINDOW, (len(sent), calls[-3:])
    assert "timed out waiting for confirmations" in calls[-1][3], calls[-1]
    wait_until(lambda: queued(a, fn) + queued(b, fn) == len(sent), what="the parked jobs")
    names = sorted(j.workload.decode() for j in grab_all([a, b], fn))
    assert names == sorted(sent), (len(names), len(sent))
    s = stats(sql)
    assert s["rescued"] == 0 and s["lost"] == 0, s


# --- a confirmed job is never sent again ----------------------------------------------------------------

class OneShotGearmand:
    """A fake gearmand for one connection: JOB_CREATED for its first `confirm` jobs, then
    silence; after `close_after` jobs it closes the connection and stops listening (later
    connects are refused). Records the unique ids it received."""

    def __init__(self, confirm, close_after):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.address = "127.0.0.1:%d" % self.listener.getsockname()[1]
        self.received = []
        self.thread = threading.Thread(target=self._run, args=(confirm, close_after), daemon=True)
        self.thread.start()

    def _run(self, confirm, close_after):
        self.listener.settimeout(20)
        sock, _ = self.listener.accept()
        self.listener.close()
        sock.settimeout(20)
        buf = b""
        while len(self.received) < close_after:
            while len(buf) < 12 or len(buf) < 12 + struct.unpack(">I", buf[8:12])[0]:
                buf += sock.recv(65536)
            size = struct.unpack(">I", buf[8:12])[0]
            data, buf = buf[12:12 + size], buf[12 + size:]
            self.received.append(data.split(b"\0")[1])
            if len(self.received) <= confirm:
                handle = b"H:fake:%d" % len(self.received)
                sock.sendall(b"\0RES" + struct.pack(">II", 8, len(handle)) + handle)
        sock.close()


def test_only_unconfirmed_jobs_are_rescued(private_mariadb, gearmands):
    """The first server confirms 10 of 21 jobs, then closes: the next call reads those 10
    confirmations, and sends only the other 11 (with its own job) to the second server."""
    fake = OneShotGearmand(confirm=10, close_after=21)
    b = gearmands()

    class Fake:
        address = fake.address
    db = pipelined(private_mariadb, [Fake, b])
    sql = Sql(db.connect(database=DB))
    fn = fname("rescue")
    uniques = [sql.one("SELECT gman_do_background(%s, %s)", (fn, f"j{i}")) for i in range(21)]
    fake.thread.join(10)
    assert fake.received == uniques
    time.sleep(0.1)  # the close has arrived
    last = sql.one("SELECT gman_do_background(%s, 'after the close')", (fn,))
    assert last is not None, sql.last_error()
    jobs = grab_all([b], fn, count=12)
    assert sorted(j.unique.encode() for j in jobs) == sorted(uniques[10:] + [last])
    s = stats(sql)
    assert s["rescued"] == 11 and s["confirmed"] == 10 and s["lost"] == 0, s
