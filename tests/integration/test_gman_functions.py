"""The gman_* SQL functions in a real mariadbd against real gearmands: payloads, unique ids,
priorities, results, aggregates, argument errors, routing, pooling and configuration.

Most tests run on the session's server (`sql` fixture) and set their server list first; the
ones needing other settings use a private mariadbd (`tuned`, `private_mariadb`).
"""
import contextlib
import hashlib
import os
import re
import subprocess
import threading
import time

import pytest

from pygen.sandbox import Gearmand
from tests.support.gearman import fname, grab_all, queued, running_worker, wait_until
from tests.support.servers import start_private_mariadb
from tests.support.sql import DB, connect

HEX32 = re.compile(r"[0-9a-f]{32}\Z")
TUNED_DO_TIMEOUT_MS = 1000
TUNED_MAX_WORKLOAD = 1000


@pytest.fixture(scope="module")
def tuned_gearmand():
    with Gearmand() as g:
        yield g


@pytest.fixture(scope="module")
def tuned(built_library, tmp_path_factory, tuned_gearmand):
    """A private mariadbd configured by its environment: default servers = tuned_gearmand,
    a 1 s gman_do timeout and max_workload = 1000."""
    env = {"GMAN_UDF_SERVERS": tuned_gearmand.address, "GMAN_UDF_DO_TIMEOUT_MS": str(TUNED_DO_TIMEOUT_MS),
           "GMAN_UDF_MAX_WORKLOAD": str(TUNED_MAX_WORKLOAD)}
    db = start_private_mariadb(built_library, tmp_path_factory.mktemp("tuned") / "plugin", env=env)
    yield db
    db.close()


@pytest.fixture
def tsql(tuned, tuned_gearmand):
    s = connect(tuned, DB)
    s.servers_set(tuned_gearmand)
    yield s
    s.close()


# --- gman_do_background: payload, handle, unique ------------------------------------------------------

def test_background_payload_bytes_arrive_exactly(sql, gearmand, table_name):
    sql.servers_set(gearmand)
    fn = fname("payload")
    payloads = [b"\x00", b"\xff", b"a\x00b\xffc\r\n\t", os.urandom(1 << 20), b""]
    handles = [sql.one("SELECT gman_do_background(%s, %s)", (fn, p)) for p in payloads]
    # utf8mb4 text, as a literal and from a utf8mb4 column
    words = "héllo wörld 😀 世界 \u2028"
    handles.append(sql.one("SELECT gman_do_background(%s, %s)", (fn, words)))
    sql.run(f"CREATE TABLE {table_name} (id INT PRIMARY KEY, t TEXT CHARACTER SET utf8mb4, b BLOB)")
    sql.run(f"INSERT INTO {table_name} VALUES (1, %s, %s)", (words + "!", b"\x00\x01\xfe\xff"))
    handles.append(sql.one(f"SELECT gman_do_background(%s, t) FROM {table_name}", (fn,)))
    handles.append(sql.one(f"SELECT gman_do_background(%s, b) FROM {table_name}", (fn,)))
    expected = payloads + [words.encode(), (words + "!").encode(), b"\x00\x01\xfe\xff"]

    assert all(isinstance(h, bytes) and h.startswith(b"H:") for h in handles), handles
    assert len(set(handles)) == len(handles)
    jobs = grab_all([gearmand], fn, count=len(expected))
    assert [hashlib.sha256(j.workload).hexdigest() for j in jobs] == \
        [hashlib.sha256(p).hexdigest() for p in expected]
    assert [j.handle.encode() for j in jobs] == handles
    assert queued(gearmand, fn) == 0


def test_unique_is_sent_as_is_or_generated(sql, gearmand):
    sql.servers_set(gearmand)
    fn = fname("uniq")
    sql.one("SELECT gman_do_background(%s, 'given', 'my-unique:1')", (fn,))
    sql.one("SELECT gman_do_background(%s, 'long', %s)", (fn, "u" * 63))
    sql.one("SELECT gman_do_background(%s, 'none')", (fn,))
    sql.one("SELECT gman_do_background(%s, 'null', NULL)", (fn,))
    sql.one("SELECT gman_do_background(%s, 'empty', '')", (fn,))
    rows = sql.rows("SELECT gman_do_background(%s, CONCAT('row', seq)) FROM seq_1_to_5", (fn,))
    assert all(r[0].startswith(b"H:") for r in rows)
    jobs = {j.workload: j.unique for j in grab_all([gearmand], fn, count=10)}
    assert jobs[b"given"] == "my-unique:1"
    assert jobs[b"long"] == "u" * 63
    generated = [jobs[w] for w in (b"none", b"null", b"empty", b"row1", b"row2", b"row3", b"row4", b"row5")]
    assert all(HEX32.match(u) for u in generated), generated
    assert len(set(generated)) == len(generated)


# --- priorities ---------------------------------------------------------------------------------------

def test_background_priorities_high_normal_low(sql, gearmand):
    sql.servers_set(gearmand)
    fn = fname("prio")
    for func, word in (("gman_do_low_background", "low"), ("gman_do_background", "normal"),
                       ("gman_do_high_background", "high"), ("gman_do_low_background", "low2"),
                       ("gman_do_background", "normal2"), ("gman_do_high_background", "high2")):
        assert sql.one(f"SELECT {func}(%s, %s)", (fn, word)).startswith(b"H:")
    assert queued(gearmand, fn) == 6
    order = [j.workload for j in grab_all([gearmand], fn, count=6)]
    assert order == [b"high", b"high2", b"normal", b"normal2", b"low", b"low2"]


def test_foreground_priorities_and_results(gman_server, gearmand):
    """gman_do_low, gman_do and gman_do_high waiting together: the worker takes high first."""
    fn = fname("fgprio")
    results, errors = {}, []

    def call(func, word):
        s = connect(gman_server, DB)
        try:
            s.servers_set(gearmand)
            results[word] = s.one(f"SELECT {func}(%s, %s)", (fn, word))
        except Exception as e:  # reported by the main thread
            errors.append(e)
        finally:
            s.close()

    threads = []
    for func, word in (("gman_do_low", "low"), ("gman_do", "normal"), ("gman_do_high", "high")):
        threads.append(threading.Thread(target=call, args=(func, word)))
        threads[-1].start()
        wait_until(lambda: queued(gearmand, fn) == len(threads), what=f"{word} job queued")
    order = []
    with running_worker([gearmand], {fn: lambda job: (order.append(job.workload), job.workload.upper())[1]}):
        for t in threads:
            t.join(10)
    assert not errors, errors
    assert order == [b"high", b"normal", b"low"]
    assert results == {"low": b"LOW", "normal": b"NORMAL", "high": b"HIGH"}


# --- gman_do: results and failures ---------------------------------------------------------------------

def sized_result(workload: bytes) -> bytes:
    """n bytes (n = the workload) that differ from one size to the next."""
    n = int(workload)
    return (hashlib.sha256(workload).digest() * (n // 32 + 1))[:n]


def sized(job):
    return sized_result(job.workload)


def test_do_returns_results_of_every_size(sql, gearmand):
    sql.servers_set(gearmand)
    fn = fname("sized")
    with running_worker([gearmand], {fn: sized}):
        for n in (0, 10, 255, 256, 300, 100 * 1024, 1 << 20):
            got = sql.one("SELECT gman_do(%s, %s)", (fn, str(n)))
            assert got == sized_result(str(n).encode()), n
        assert sql.rows("SELECT gman_do_high(%s, '300'), gman_do_low(%s, '10')", (fn, fn)) == \
            ((sized_result(b"300"), sized_result(b"10")),)


def test_do_work_fail_and_exception_give_null_and_the_reason(sql, gearmand):
    sql.servers_set(gearmand)
    fail_fn, exc_fn, ok_fn = fname("fails"), fname("raises"), fname("ok")

    def fail(job):
        job.fail()

    def raises(job):
        raise ValueError("disk full on shard 7")

    with running_worker([gearmand], {fail_fn: fail, exc_fn: raises, ok_fn: lambda job: b"fine"}):
        assert sql.one("SELECT gman_do(%s, 'x')", (fail_fn,)) is None
        assert "WORK_FAIL" in sql.last_error()
        assert sql.one("SELECT gman_do(%s, 'x')", (exc_fn,)) is None
        err = sql.last_error()
        assert err.startswith("gman_do:") and "disk full on shard 7" in err, err
        assert sql.one("SELECT gman_do_high(%s, 'x')", (exc_fn,)) is None
        assert "gman_do_high" in sql.last_error() and "disk full on shard 7" in sql.last_error()
        # the same pooled connection still works afterwards
        assert sql.one("SELECT gman_do(%s, 'x')", (ok_fn,)) == b"fine"


def test_do_without_worker_times_out(tsql, tuned_gearmand):
    fn = fname("noworker")
    t0 = time.monotonic()
    assert tsql.one("SELECT gman_do(%s, 'x')", (fn,)) is None
    elapsed = time.monotonic() - t0
    assert TUNED_DO_TIMEOUT_MS / 1000 * 0.9 < elapsed < TUNED_DO_TIMEOUT_MS / 1000 + 1.0, elapsed
    err = tsql.last_error()
    assert "accepted" in err and "timed out" in err and tuned_gearmand.address in err, err


# --- gman_sum --------------------------------------------------------------------------------------------

def double(job):
    return str(2 * int(job.workload)).encode()


@pytest.fixture
def numbers(tsql, table_name):
    tsql.run(f"CREATE TABLE {table_name} (id INT PRIMARY KEY, grp INT NOT NULL)")
    tsql.run(f"INSERT INTO {table_name} SELECT seq, seq % 3 FROM seq_1_to_1000")
    return table_name


def test_gman_sum_over_a_table(tsql, tuned_gearmand, numbers):
    fn = fname("double")
    with running_worker([tuned_gearmand], {fn: double}, batch=50):
        assert tsql.one(f"SELECT gman_sum(%s, id) FROM {numbers}", (fn,)) == 2 * sum(range(1, 1001))


def test_gman_sum_group_by(tsql, tuned_gearmand, numbers):
    fn = fname("double")
    with running_worker([tuned_gearmand], {fn: double}, batch=50):
        rows = tsql.rows(f"SELECT grp, gman_sum(%s, id), SUM(2 * id) FROM {numbers} GROUP BY grp", (fn,))
    assert len(rows) == 3
    assert all(got == want for _, got, want in rows), rows


def test_gman_sum_over_nothing_and_with_failed_jobs(tsql, tuned_gearmand, numbers):
    fn = fname("odd_fail")

    def even_only(job):
        n = int(job.workload)
        if n % 2:
            raise ValueError("odd")
        return str(n).encode()

    with running_worker([tuned_gearmand], {fn: even_only}, batch=10):
        assert tsql.one(f"SELECT gman_sum(%s, id) FROM {numbers} WHERE id < 0", (fn,)) == 0
        assert tsql.one(f"SELECT gman_sum(%s, id) FROM {numbers} WHERE id <= 10", (fn,)) is None
        assert tsql.last_error() == "gman_sum: 5 of 10 jobs failed"
        assert tsql.one(f"SELECT gman_sum(%s, id * 2) FROM {numbers} WHERE id <= 10", (fn,)) == 110


def test_gman_sum_overflow_is_an_error(tsql, tuned_gearmand):
    """A sum past the BIGINT range is NULL with the reason, like SUM() on BIGINT; it used to
    overflow (undefined behaviour: it wrapped to -2)."""
    fn = fname("huge")
    with running_worker([tuned_gearmand], {fn: lambda job: b"9223372036854775807"}):
        got = tsql.one("SELECT gman_sum(%s, seq) FROM seq_1_to_2", (fn,))
    err = tsql.last_error()
    assert got is None and ("range" in err or "overflow" in err), (got, err)


def test_gman_sum_returns_as_soon_as_the_last_result_is_in(tsql, tuned_gearmand, numbers):
    """A group ends when its last result is in. (gm_stream_pump used to poll once more after the
    last reply and wait a whole do_timeout_ms -- 30 s by default -- per group.)"""
    fn = fname("double")
    with running_worker([tuned_gearmand], {fn: double}, batch=50):
        t0 = time.monotonic()
        rows = tsql.rows(f"SELECT id %% 5, gman_sum(%s, id) FROM {numbers} WHERE id <= 50 GROUP BY id %% 5", (fn,))
        elapsed = time.monotonic() - t0
    assert len(rows) == 5 and sum(r[1] for r in rows) == 2 * sum(range(1, 51))
    # 5 groups of 10 jobs: a few ms of work; the bug costs 5 x do_timeout_ms (5 s here)
    assert elapsed < 2.0, f"5 groups took {elapsed:.2f} s (do_timeout_ms = {TUNED_DO_TIMEOUT_MS})"


# --- gman_bulk_background -----------------------------------------------------------------------------------

def test_bulk_background_queues_100000_jobs(sql, fresh_gearmand):
    g = fresh_gearmand()
    sql.servers_set(g)
    fn, fn_u = fname("bulk"), fname("bulku")
    assert sql.one("SELECT gman_bulk_background(%s, seq) FROM seq_1_to_100000", (fn,)) == 100000
    assert queued(g, fn) == 100000
    assert sql.one("SELECT gman_bulk_background(%s, seq, CONCAT('u-', seq)) FROM seq_1_to_100000",
                   (fn_u,)) == 100000
    assert queued(g, fn_u) == 100000
    assert sql.one("SELECT gman_bulk_background(%s, seq) FROM seq_1_to_10 WHERE seq < 0", (fn,)) == 0
    one_connection(g)


def test_bulk_background_sends_the_workload_and_unique(sql, gearmand):
    sql.servers_set(gearmand)
    fn = fname("bulkpay")
    got = sql.one("SELECT gman_bulk_background(%s, CONCAT('w', seq), IF(seq <= 2, CONCAT('u', seq), NULL)) "
                  "FROM seq_1_to_4", (fn,))
    assert got == 4
    jobs = {j.workload: j.unique for j in grab_all([gearmand], fn, count=4)}
    assert jobs[b"w1"] == "u1" and jobs[b"w2"] == "u2"
    assert HEX32.match(jobs[b"w3"]) and HEX32.match(jobs[b"w4"]) and jobs[b"w3"] != jobs[b"w4"]


def test_bulk_background_group_returns_when_confirmed(sql, gearmand):
    """A group ends when its last JOB_CREATED is in (it used to wait io_timeout_ms more, per group)."""
    sql.servers_set(gearmand)
    fn = fname("bulkgrp")
    t0 = time.monotonic()
    rows = sql.rows("SELECT seq %% 20, gman_bulk_background(%s, seq) FROM seq_1_to_100 GROUP BY seq %% 20", (fn,))
    elapsed = time.monotonic() - t0
    assert sorted(r[1] for r in rows) == [5] * 20
    assert queued(gearmand, fn) == 100
    assert elapsed < 2.5, f"20 groups of 5 jobs took {elapsed:.2f} s"


# --- argument errors ----------------------------------------------------------------------------------------

ARITY = {  # name: (min, max) arguments
    "gman_servers_set": (1, 2),
    "gman_do": (2, 3), "gman_do_high": (2, 3), "gman_do_low": (2, 3),
    "gman_do_background": (2, 3), "gman_do_high_background": (2, 3), "gman_do_low_background": (2, 3),
    "gman_sum": (2, 2), "gman_bulk_background": (2, 3),
    "gman_last_error": (0, 0),
}


@pytest.mark.parametrize("name", sorted(ARITY))
def test_wrong_argument_counts_are_init_errors(sql, name):
    low, high = ARITY[name]
    for n in {low - 1, high + 1} - {-1}:
        args = ", ".join(["'127.0.0.1'"] * n)
        code, msg = sql.error(f"SELECT {name}({args})")
        assert code == 1123, (code, msg)  # ER_CANT_INITIALIZE_UDF
        assert f"{name}:" in msg, msg
        assert ("expected" in msg) if high else ("no arguments" in msg), msg


def test_server_lists_are_normalised(sql):
    # a list of its own: no other test's function is affected. Few distinct addresses: the
    # plugin registers each host:port it ever parsed, at most 64 per server process.
    fn = fname("parse")
    for given, applied in ((" 127.0.0.1:4730 , localhost ", "127.0.0.1:4730,localhost:4730"),
                           ("[::1]:4730", "[::1]:4730"), ("::1", "[::1]:4730"), ("127.0.0.1:04730", "127.0.0.1:4730")):
        assert sql.one("SELECT gman_servers_set(%s, %s)", (given, fn)) == applied.encode()


def test_bad_server_lists_are_sql_errors(sql, gearmand):
    sql.servers_set(gearmand)
    for bad, why in (("bad::list::", "cannot resolve"), ("127.0.0.1:99999", "bad port"),
                     ("127.0.0.1:4730,", "empty server name"), ("no host!:1", "bad host name"),
                     (",".join(["127.0.0.1:4730"] * 17), "more than 16")):
        code, msg = sql.error("SELECT gman_servers_set(%s)", (bad,))
        assert code == 1123 and why in msg and "gman_servers_set" in msg, (bad, msg)
    # a list computed per row is checked per row: NULL + the reason
    assert sql.one("SELECT gman_servers_set(CONCAT('127.0.0.1:', seq + 99990)) FROM seq_1_to_1") is None
    assert "bad port" in sql.last_error()
    assert sql.one("SELECT gman_servers_set(IF(seq > 5, 'x', NULL)) FROM seq_1_to_1") is None
    assert "NULL" in sql.last_error()
    # none of that changed the list in use
    fn = fname("still")
    assert sql.one("SELECT gman_do_background(%s, 'x')", (fn,)).startswith(b"H:")
    assert queued(gearmand, fn) == 1


def test_row_and_null_arguments(sql, gearmand, table_name):
    sql.servers_set(gearmand)
    fn = fname("nulls")
    code, _ = sql.error("SELECT gman_do_background(%s, ROW(1, 2))", (fn,))
    assert code in (1123, 1241), code  # refused by the server (1241) or by _init (1123)
    code, _ = sql.error("SELECT gman_sum(%s, (1, 2))", (fn,))
    assert code in (1123, 1241), code
    assert sql.one("SELECT gman_do_background(%s, NULL)", (fn,)) is None
    assert sql.last_error() == "gman_do_background: the workload is NULL (nothing sent)"
    assert sql.one("SELECT gman_do(%s, NULL)", (fn,)) is None
    assert "workload is NULL" in sql.last_error()
    assert sql.one("SELECT gman_do_background(NULL, 'x')") is None
    assert "function name is NULL" in sql.last_error()
    code, msg = sql.error("SELECT gman_do_background('', 'x')")
    assert code == 1123 and "function name is empty" in msg
    assert queued(gearmand, fn) == 0


def test_a_failed_row_does_not_null_the_rest_of_the_statement(sql, gearmand, table_name):
    """A failed row is NULL (is_null), not *error: MariaDB and MySQL treat *error = 1 as "NULL for
    this row and every later row of the statement" and stop calling the function, so one NULL
    workload or one failed submit in `SELECT gman_do_background(...) FROM t` used to leave every
    later row NULL and unsent. (Triggers were spared: their functions are set up per row.)"""
    sql.servers_set(gearmand)
    fn = fname("rows")
    sql.run(f"CREATE TABLE {table_name} (id INT PRIMARY KEY, w TEXT)")
    sql.run(f"INSERT INTO {table_name} VALUES (1, 'a'), (2, NULL), (3, 'c'), (4, 'd')")
    got = sql.rows(f"SELECT id, gman_do_background(%s, w) IS NULL FROM {table_name} ORDER BY id", (fn,))
    assert [r[1] for r in got] == [0, 1, 0, 0]
    assert queued(gearmand, fn) == 3


def test_bulk_background_with_a_null_workload_fails_the_group(sql, gearmand):
    sql.servers_set(gearmand)
    got = sql.one("SELECT gman_bulk_background(%s, IF(seq = 2, NULL, seq)) FROM seq_1_to_3", (fname("bulknull"),))
    assert got is None
    assert "workload is NULL" in sql.last_error(), sql.last_error()


def test_unique_longer_than_63_bytes_is_refused(sql, gearmand):
    """gearmand 1.1.20 keeps at most 63 bytes of a unique id (its 64-byte buffer holds the NUL) yet
    accepts 64: it cuts the id and the job's workload arrives corrupted (the 64th byte or a NUL
    glued in front). So 64 bytes and more are refused (63 arrive intact: test_unique_... above)."""
    sql.servers_set(gearmand)
    fn = fname("longu")
    for n in (64, 65):
        code, msg = sql.error("SELECT gman_do_background(%s, 'x', %s)", (fn, "u" * n))
        assert code == 1123 and "unique id is longer than 63 bytes" in msg, msg
    # computed per row: NULL + the reason; the other rows still go
    rows = sql.rows("SELECT gman_do_background(%s, 'x', REPEAT('u', 62 + seq)) FROM seq_1_to_3", (fn,))
    assert [r[0] is None for r in rows] == [False, True, True]
    assert "unique id must be at most 63 bytes" in sql.last_error(), sql.last_error()
    (job,) = grab_all([gearmand], fn, count=1)
    assert (job.unique, job.workload) == ("u" * 63, b"x")


def test_workload_above_max_workload(tsql, tuned_gearmand):
    fn = fname("big")
    assert tsql.one("SELECT gman_do_background(%s, REPEAT('x', %s))", (fn, TUNED_MAX_WORKLOAD)).startswith(b"H:")
    assert tsql.one("SELECT gman_do_background(%s, REPEAT('x', %s))", (fn, TUNED_MAX_WORKLOAD + 1)) is None
    err = tsql.last_error()
    assert "larger than max_workload" in err and str(TUNED_MAX_WORKLOAD) in err, err
    assert tsql.one("SELECT gman_bulk_background(%s, REPEAT('x', 999 + seq)) FROM seq_1_to_2", (fn,)) is None
    assert "larger than max_workload" in tsql.last_error()
    assert queued(tuned_gearmand, fn) == 1


# --- routing -----------------------------------------------------------------------------------------------

def test_per_function_server_list(sql, fresh_gearmand):
    g1, g2 = fresh_gearmand(), fresh_gearmand()
    routed, other = fname("routed"), fname("other")
    sql.servers_set(g1)
    sql.servers_set(g2, function=routed)
    for func in ("gman_do_background", "gman_do_high_background", "gman_do_low_background"):
        sql.one(f"SELECT {func}(%s, 'r')", (routed,))
        sql.one(f"SELECT {func}(%s, 'o')", (other,))
    assert (queued(g1, routed), queued(g2, routed)) == (0, 3)
    assert (queued(g1, other), queued(g2, other)) == (3, 0)
    # the default list can change without touching the function's own list
    sql.servers_set(g2)
    sql.servers_set(g1)
    sql.one("SELECT gman_do_background(%s, 'r')", (routed,))
    assert queued(g2, routed) == 4
    # and gman_do follows the function's list too
    with running_worker([g2], {routed: lambda job: b"from g2"}):
        assert sql.one("SELECT gman_do(%s, 'x')", (routed,)) == b"from g2"


def test_a_full_queue_goes_to_the_next_server_without_back_off(sql, fresh_gearmand):
    a, b = fresh_gearmand(), fresh_gearmand()
    fn, other = fname("full"), fname("notfull")
    sql.servers_set(a, b)
    assert sql.one("SELECT gman_do_background(%s, '1')", (fn,)).startswith(b"H:")
    assert a.admin(f"maxqueue {fn} 1").strip() == "OK"
    assert sql.one("SELECT gman_do_background(%s, '2')", (fn,)).startswith(b"H:")  # refused by a: to b
    assert (queued(a, fn), queued(b, fn)) == (1, 1)
    assert sql.one("SELECT gman_do_background(%s, 'x')", (other,)).startswith(b"H:")  # a is not in back-off
    assert queued(a, other) == 1
    # a stream does not fail over: the group fails with gearmand's error
    assert sql.one("SELECT gman_bulk_background(%s, seq) FROM seq_1_to_3", (fn,)) is None
    assert "QUEUE_ERROR" in sql.last_error(), sql.last_error()
    sql.servers_set(a)
    assert sql.one("SELECT gman_do_background(%s, '3')", (fn,)) is None
    assert "QUEUE_ERROR" in sql.last_error(), sql.last_error()


def test_aggregates_route_each_row_by_its_function(sql, fresh_gearmand):
    """Each row of a gman_bulk_background/gman_sum group goes to its own function's list. (A group
    used to send every row to the server picked for its first row's function.)"""
    g1, g2 = fresh_gearmand(), fresh_gearmand()
    routed, other = fname("routed"), fname("other")
    sql.servers_set(g1)
    sql.servers_set(g2, function=routed)
    got = sql.one("SELECT gman_bulk_background(IF(seq %% 2, %s, %s), seq) FROM seq_1_to_10", (other, routed))
    assert got == 10, sql.last_error()
    assert queued(g1, routed) == 0, "jobs of a function with its own list were sent to the default list"
    assert (queued(g2, routed), queued(g1, other), queued(g2, other)) == (5, 5, 0)
    fn_sum = fname("routed_sum")
    sql.servers_set(g2, function=fn_sum)
    with running_worker([g1], {other: lambda job: b"1"}), running_worker([g2], {fn_sum: lambda job: b"100"}):
        got = sql.one("SELECT gman_sum(IF(seq %% 2, %s, %s), seq) FROM seq_1_to_10", (other, fn_sum))
    assert got == 5 * 1 + 5 * 100, sql.last_error()


def one_connection(g):
    """gearmand lists exactly one client connection (ours, pooled). Its count can briefly include
    an admin connection that the test just closed (gearmand notices closes asynchronously), so
    wait for it to settle: a second pooled connection would not go away."""
    counts = []
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        counts.append(g.client_count())
        if counts[-1] == 1:
            return
        time.sleep(0.05)
    raise AssertionError(f"gearmand client connections: {counts[-5:]}, expected 1")


def test_aggregate_with_too_many_functions_in_a_group(sql, gearmand):
    sql.servers_set(gearmand)
    prefix = fname("many")
    got = sql.one("SELECT gman_bulk_background(CONCAT(%s, seq %% 20), seq) FROM seq_1_to_40", (prefix,))
    if got is None:  # a group holds one stream per function, up to a limit
        assert "function names in one group" in sql.last_error(), sql.last_error()
    else:
        assert got == 40
        assert sum(queued(gearmand, f"{prefix}{k}") for k in range(20)) == 40


# --- pooling ------------------------------------------------------------------------------------------------

def test_trigger_update_uses_one_pooled_connection(sql, fresh_gearmand, table_name):
    g = fresh_gearmand()
    fn = fname("syncToRedis")
    sql.servers_set(g)
    assert g.client_count() == 0
    sql.run(f"CREATE TABLE {table_name} (id INT PRIMARY KEY, v INT NOT NULL)")
    sql.run(f"INSERT INTO {table_name} SELECT seq, 0 FROM seq_1_to_10000")
    sql.run(f"CREATE TRIGGER {table_name}_au AFTER UPDATE ON {table_name} FOR EACH ROW "
            f"SET @h = gman_do_background('{fn}', udf_json_object(NEW.id AS id, NEW.v AS v))")
    assert sql.run(f"UPDATE {table_name} SET v = v + 1") == 10000
    assert queued(g, fn) == 10000
    one_connection(g)
    assert sql.run(f"UPDATE {table_name} SET v = v + 1 WHERE id <= 100") == 100
    assert queued(g, fn) == 10100
    one_connection(g)
    jobs = grab_all([g], fn, count=3)
    assert jobs[0].workload == b'{"id":1,"v":1}'


# --- configuration -------------------------------------------------------------------------------------------

def test_config_file_survives_restart_and_lock(private_mariadb, fresh_gearmand):
    g, g_fn = fresh_gearmand(), fresh_gearmand()
    fn, own = fname("cnf"), fname("own")
    cnf = f"# gman_udf settings\n[gman_udf]\nservers = {g.address}\nservers.{own} = {g_fn.address}\nlock = 1\n"
    db = private_mariadb(cnf=cnf)
    db.restart()
    s = connect(db)
    try:
        assert s.one("SELECT gman_do_background(%s, 'after restart')", (fn,)).startswith(b"H:")
        assert s.one("SELECT gman_do_background(%s, 'own list')", (own,)).startswith(b"H:")
        assert queued(g, fn) == 1 and queued(g_fn, own) == 1 and queued(g, own) == 0
        code, msg = s.error("SELECT gman_servers_set(%s)", (g_fn.address,))
        assert code == 1123 and "locked" in msg, msg
        code, msg = s.error("SELECT gman_servers_set(%s, %s)", (g_fn.address, fn))
        assert code == 1123 and "lock" in msg, msg
    finally:
        s.close()

    # nothing configured: the default list is 127.0.0.1:4730
    (db.plugin_dir / "gman_udf.cnf").unlink()
    db.restart()
    s = connect(db)
    try:
        handle = s.one("SELECT gman_do_background(%s, 'x')", (fname("default"),))
        if handle is None:
            assert "gearmand 127.0.0.1:4730:" in s.last_error(), s.last_error()
        assert s.servers_set(g) == g.address.encode()  # not locked any more
    finally:
        s.close()


def test_bad_config_file_fails_every_call(private_mariadb):
    db = private_mariadb(cnf="servers = 127.0.0.1:4730\nio_timeout_ms = soon\n")
    s = connect(db, DB)
    try:
        for call in ("gman_do_background('f', 'x')", "gman_servers_set('127.0.0.1:4730')",
                     "gman_bulk_background('f', seq) FROM seq_1_to_2"):
            code, msg = s.error(f"SELECT {call}")
            assert code == 1123 and "gman_udf configuration" in msg, msg
    finally:
        s.close()


def test_bad_config_file_error_names_the_setting(private_mariadb):
    """The server cuts an _init message to 80 characters ("Can't initialize function '%s'; %-.80s"):
    the reason comes before the file's path (Debian's plugin_dir alone is 43 characters), and
    gman_last_error() has the whole text with the line number."""
    db = private_mariadb(cnf="servers = 127.0.0.1:4730\nio_timeout_ms = soon\n")
    s = connect(db)
    try:
        code, msg = s.error("SELECT gman_do_background('f', 'x')")
        assert code == 1123 and "io_timeout_ms" in msg, msg
        full = s.last_error()
        assert "io_timeout_ms" in full and "gman_udf.cnf" in full and "2" in full, full
    finally:
        s.close()


def test_environment_config_survives_restart(tuned, tuned_gearmand):
    tuned.restart()
    s = connect(tuned)
    fn = fname("env")
    try:
        assert s.one("SELECT gman_do_background(%s, 'after restart')", (fn,)).startswith(b"H:")
    finally:
        s.close()
    assert queued(tuned_gearmand, fn) == 1


# --- gman_do with a worker that streams its result (WORK_DATA) -------------------------------------------

@contextlib.contextmanager
def cli_worker(gearmand, fn, *command, chunks=True):
    """The `gearman` CLI (gearman-tools) as a worker for fn running `command` on each job;
    with chunks (-n) it sends each output line as WORK_DATA and ends with an empty
    WORK_COMPLETE."""
    host, port = gearmand.address.rsplit(":", 1)
    args = ["gearman", "-w", *(["-n"] if chunks else []), "-h", host, "-p", port, "-f", fn, "--", *command]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: gearmand.status().get(fn, (0, 0, 0))[2] >= 1, what="the gearman CLI worker")
        yield proc
    finally:
        proc.kill()
        proc.wait(10)


def libgearman_client(gearmand, fn, workload):
    """What a libgearman client (the `gearman` CLI in client mode) gets for one job."""
    host, port = gearmand.address.rsplit(":", 1)
    return subprocess.run(["gearman", "-h", host, "-p", port, "-f", fn, workload], capture_output=True,
                          timeout=30, check=True).stdout


def test_do_returns_a_streamed_result(sql, gearmand):
    """`gearman -w -n -- cat` sends its output as WORK_DATA packets (each one, by that tool's
    design, repeating the lines before it), then an empty WORK_COMPLETE: gman_do returns the
    chunks in order, what a libgearman client gets (it used to return '')."""
    sql.servers_set(gearmand)
    fn = fname("stream")
    text = "first line\nsecond\n\nlast, without newline"
    with cli_worker(gearmand, fn, "cat"):
        got = sql.one("SELECT gman_do(%s, %s)", (fn, text))
        assert got == b"first line\nfirst line\nsecond\nfirst line\nsecond\n\n" + text.encode(), got
        assert got == libgearman_client(gearmand, fn, text)
        many = "".join("%03d\n" % i for i in range(300))  # 300 chunks, 180 kB in all
        got = sql.one("SELECT gman_do(%s, %s)", (fn, many))
        assert got is not None and len(got) == sum(4 * i for i in range(1, 301)), sql.last_error()
        assert got == libgearman_client(gearmand, fn, many)
    with cli_worker(gearmand, fn, "cat", chunks=False):  # the same text in one WORK_COMPLETE
        assert sql.one("SELECT gman_do(%s, %s)", (fn, text)) == text.encode(), sql.last_error()


def test_do_streamed_result_is_bounded_by_max_workload(tsql, tuned_gearmand):
    """Chunks add up: past max_workload the call fails, naming the setting."""
    fn = fname("streambig")
    with cli_worker(tuned_gearmand, fn, "cat"):
        under = "123456789\n" * 13  # chunks of 10, 20, ... 130 bytes: 910 in all
        assert tsql.one("SELECT gman_do(%s, %s)", (fn, under)) == libgearman_client(tuned_gearmand, fn, under)
        assert tsql.one("SELECT gman_do(%s, %s)", (fn, "123456789\n" * 14)) is None  # 1,050 bytes
        err = tsql.last_error()
        assert "result larger than max_workload" in err and str(TUNED_MAX_WORKLOAD) in err, err
