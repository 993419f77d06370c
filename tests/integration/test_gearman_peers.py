"""Other Gearman peers, started by the tests: Perl Gearman::Server 1.130 (Debian gearman-server,
pygen.sandbox.PerlGearmand) with its own Perl Gearman::Worker, and the php-gearman
(libgearman) worker and client. Every gman_* SQL function runs against the Perl server with
a real worker; the packets it lacks (SUBMIT_JOB_LOW, *_LOW_BG, SUBMIT_JOB_HIGH_BG) are one
clear refusal each; `gman-udf worker` drains syncToRedis jobs from it into Redis, including
jobs a PHP client queued; a PHP worker serves gman_do and gman_sum.

libgearman's worker (PHP, the `gearman -w` CLI) cannot take jobs from Gearman::Server 1.130:
it grabs with GRAB_JOB_ALL, which that server answers with ERROR (the worker reports
GEARMAN_UNEXPECTED_PACKET); so the PHP worker runs against the C gearmand.

Pipelined mode with a refused packet type is in test_gearman_peers_pipelined.py.
"""
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from pygen.gearman.client import Client
from pygen.plugin import catalog
from pygen.sandbox.server import die_with_parent
from tests.support.gearman import fname, grab_all, queued, wait_until
from tests.support.sql import DB, Sql

ROOT = Path(__file__).resolve().parents[2]
PEERS = Path(__file__).resolve().parent / "peers"
REDIS_DB = 11


@contextmanager
def peer_worker(kind, server, prefix):
    """The Perl or PHP worker serving prefix_rev, prefix_double and prefix_fail on `server`,
    registered before this yields, killed after."""
    if kind == "perl":
        cmd = ["/usr/bin/perl", str(PEERS / "perl_worker.pl"), server.address, prefix]
    else:
        cmd = ["/usr/bin/php", str(PEERS / "php_worker.php"), server.host, str(server.port), prefix]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            preexec_fn=die_with_parent(os.getpid()))
    try:
        wait_until(lambda: proc.poll() is not None or server.status().get(f"{prefix}_rev", (0, 0, 0))[2] >= 1,
                   timeout=15, what=f"the {kind} worker to register")
        assert proc.poll() is None, f"{kind} worker exited: {proc.stdout.read()!r}"
        yield proc
        assert proc.poll() is None, f"{kind} worker died: {proc.stdout.read()!r}"
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def psql(sql, perl_gearmand):
    """The session server with the Perl server as its server list."""
    sql.servers_set(perl_gearmand)
    return sql


def refusal(sql, function, packet):
    err = sql.last_error()
    assert err.startswith(f"{function}:") and "server_error" in err and packet in err, err
    return err


# --- every gman_* function against Perl Gearman::Server -------------------------------------------------

def test_gman_do_with_a_perl_worker(psql, perl_gearmand):
    p = fname("pl")
    with peer_worker("perl", perl_gearmand, p):
        assert psql.one("SELECT gman_do(%s, 'hello')", (f"{p}_rev",)) == b"olleh"
        assert psql.one("SELECT gman_do_high(%s, 'abc')", (f"{p}_rev",)) == b"cba"
        big = "xy" * 100000
        assert psql.one("SELECT gman_do(%s, %s, 'u1')", (f"{p}_rev", big)) == big[::-1].encode()
        # Gearman::Worker sends a die() as WORK_EXCEPTION (its text Storable-frozen), then WORK_FAIL
        assert psql.one("SELECT gman_do(%s, 'x')", (f"{p}_fail",)) is None
        assert "exception" in psql.last_error() and "failed on purpose" in psql.last_error()
        assert psql.one("SELECT gman_do(%s, 'next')", (f"{p}_rev",)) == b"txen"  # the WORK_FAIL after it is skipped
        # SUBMIT_JOB_LOW: one clear refusal, and the next call works
        assert psql.one("SELECT gman_do_low(%s, 'abc')", (f"{p}_rev",)) is None
        refusal(psql, "gman_do_low", "CMD_submit_job_low")
        assert psql.one("SELECT gman_do(%s, 'again')", (f"{p}_rev",)) == b"niaga"
    assert all(queued(perl_gearmand, f"{p}_{f}") == 0 for f in ("rev", "fail"))


def test_python_client_after_a_perl_workers_exception(perl_gearmand):
    """Gearman::Worker answers a die() with WORK_EXCEPTION then WORK_FAIL, and Gearman::Server
    relays both: the WORK_FAIL is not the reply to the next request on the connection."""
    p = fname("plpy")
    with peer_worker("perl", perl_gearmand, p), Client(perl_gearmand.address) as c:
        for _ in range(3):
            state, text = c.do(f"{p}_fail", b"x", timeout=5)
            assert state == "exception" and "failed on purpose" in text
            conn = c.conn
            assert c.do(f"{p}_rev", b"abc", timeout=5) == ("complete", b"cba")
            assert c.submit_background(f"{p}_none", b"q").startswith("H:") and c.conn is conn
        assert c.echo(b"e") == b"e" and not c.conn.ended  # each WORK_FAIL came and was skipped
    grab_all([perl_gearmand], f"{p}_none", count=3)


def test_background_functions(psql, perl_gearmand):
    fn = fname("plbg")
    handle = psql.one("SELECT gman_do_background(%s, 'n1')", (fn,))
    assert handle.startswith(b"H:")
    assert psql.one("SELECT gman_do_high_background(%s, 'h')", (fn,)) is None
    refusal(psql, "gman_do_high_background", "CMD_submit_job_high_bg")
    assert psql.one("SELECT gman_do_low_background(%s, 'l')", (fn,)) is None
    refusal(psql, "gman_do_low_background", "CMD_submit_job_low_bg")
    assert psql.one("SELECT gman_do_background(%s, 'n2', 'my-unique')", (fn,)).startswith(b"H:")
    assert queued(perl_gearmand, fn) == 2
    assert sorted(j.workload for j in grab_all([perl_gearmand], fn, count=2)) == [b"n1", b"n2"]
    assert queued(perl_gearmand, fn) == 0


def test_gman_sum_with_a_perl_worker(psql, perl_gearmand):
    p = fname("plsum")
    with peer_worker("perl", perl_gearmand, p):
        assert psql.one("SELECT gman_sum(%s, seq) FROM seq_1_to_300", (f"{p}_double",)) == 2 * sum(range(1, 301))
        rows = psql.rows("SELECT seq %% 3, gman_sum(%s, seq) FROM seq_1_to_30 GROUP BY seq %% 3", (f"{p}_double",))
        assert {int(g): int(s) for g, s in rows} == {g: 2 * sum(i for i in range(1, 31) if i % 3 == g) for g in range(3)}
        assert psql.one("SELECT gman_sum(%s, seq) FROM seq_1_to_5", (f"{p}_fail",)) is None
        assert "5 of 5 jobs failed" in psql.last_error()


def test_gman_bulk_background(psql, perl_gearmand):
    fn = fname("plbulk")
    assert psql.one("SELECT gman_bulk_background(%s, seq, CONCAT('u', seq)) FROM seq_1_to_2000", (fn,)) == 2000
    assert psql.one("SELECT gman_bulk_background(%s, seq) FROM seq_1_to_10 WHERE seq < 0", (fn,)) == 0
    assert queued(perl_gearmand, fn) == 2000
    jobs = grab_all([perl_gearmand], fn)
    assert sorted(int(j.workload) for j in jobs) == list(range(1, 2001))  # each once


def test_server_list_stamp_and_last_error(psql, perl_gearmand, gearmand):
    fn = fname("pllist")
    psql.servers_set(gearmand)
    # only fn goes to the Perl server
    assert psql.one("SELECT gman_servers_set(%s, %s)", (perl_gearmand.address, fn)) == perl_gearmand.address.encode()
    assert psql.one("SELECT gman_do_background(%s, 'x')", (fn,)).startswith(b"H:")
    assert queued(perl_gearmand, fn) == 1 and queued(gearmand, fn) == 0
    a, b = psql.rows("SELECT gman_stamp(), gman_stamp()")[0]
    assert 0 < a < b
    assert psql.one("SELECT gman_do_low_background(%s, 'x')", (fn,)) is None
    assert perl_gearmand.address in refusal(psql, "gman_do_low_background", "CMD_submit_job_low_bg")
    grab_all([perl_gearmand], fn, count=1)


def test_every_gman_function_runs_against_the_perl_server_here():
    text = Path(__file__).read_text() + Path(__file__).with_name("test_gearman_peers_pipelined.py").read_text()
    missing = [f.name for f in catalog.FUNCTIONS if f.name.startswith("gman_") and f"SELECT {f.name}(" not in text
               and f", {f.name}(" not in text]
    assert not missing, f"not tested against Perl Gearman::Server: {missing}"


def test_pipelined_mode_without_refusals(private_mariadb, perl_gearmand):
    """pipeline_window = 64 against the Perl server: every job queued exactly once."""
    db = private_mariadb(cnf=f"servers = {perl_gearmand.address}\npipeline_window = 64\n")
    s = Sql(db.connect(database=DB))
    try:
        fn = fname("plpipe")
        uniques = [s.one("SELECT gman_do_background(%s, %s)", (fn, f"j{i}")) for i in range(300)]
        assert len(set(uniques)) == 300 and all(len(u) == 32 for u in uniques)
        assert s.one("SELECT gman_bulk_background(%s, CONCAT('b', seq)) FROM seq_1_to_1000", (fn,)) == 1000
        wait_until(lambda: queued(perl_gearmand, fn) == 1300, what="1300 jobs queued")
        jobs = grab_all([perl_gearmand], fn)
        assert sorted(j.workload for j in jobs) == sorted([b"j%d" % i for i in range(300)] +
                                                          [b"b%d" % i for i in range(1, 1001)])
    finally:
        s.close()


# --- a PHP worker, against the C gearmand ---------------------------------------------------------------

def test_php_worker_serves_gman_do_and_gman_sum(sql, gearmand):
    sql.servers_set(gearmand)
    p = fname("php")
    with peer_worker("php", gearmand, p):
        assert sql.one("SELECT gman_do(%s, 'hello')", (f"{p}_rev",)) == b"olleh"
        assert sql.one("SELECT gman_do_high(%s, 'abc')", (f"{p}_rev",)) == b"cba"
        assert sql.one("SELECT gman_do_low(%s, 'xyz')", (f"{p}_rev",)) == b"zyx"
        assert sql.one("SELECT gman_do(%s, %s)", (f"{p}_rev", "\u00e9t\u00e9 " * 5000)) == \
            ("\u00e9t\u00e9 " * 5000).encode()[::-1]
        assert sql.one("SELECT gman_sum(%s, seq) FROM seq_1_to_200", (f"{p}_double",)) == 2 * sum(range(1, 201))
        assert sql.one("SELECT gman_do(%s, 'x')", (f"{p}_fail",)) is None
        assert "WORK_FAIL" in sql.last_error()


# --- gman-udf worker draining the Perl server into Redis -----------------------------------------------

@pytest.fixture
def rds(redis_server):
    client = redis_server.client(db=REDIS_DB)
    client.flushdb()
    yield client
    client.close()


@contextmanager
def gman_worker(server, redis_server, function, log, tables):
    cmd = [sys.executable, "-m", "pygen.cli", "worker", "--gearman", server.address,
           "--redis", f"redis://{redis_server.host}:{redis_server.port}/{REDIS_DB}",
           "--function", function, "--tables", ",".join(tables), "--log-level", "INFO"]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                preexec_fn=die_with_parent(os.getpid()))
        try:
            wait_until(lambda: proc.poll() is not None or server.status().get(function, (0, 0, 0))[2] >= 1,
                       timeout=20, what="gman-udf worker to register")
            assert proc.poll() is None, Path(log).read_text()
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                    raise AssertionError("worker did not stop within 20 s of SIGTERM")


def drained(server, fn, timeout=30.0):
    wait_until(lambda: server.status().get(fn, (0, 0, 0))[:2] == (0, 0), timeout, f"{fn} to drain")


def test_gman_udf_worker_drains_triggers_and_a_php_client(sql, perl_gearmand, redis_server, rds, table_name, tmp_path):
    fn = fname("plsync")
    table = f"{DB}.{table_name}"
    sql.run(f"CREATE TABLE {table_name} (id INT PRIMARY KEY, val VARCHAR(64))")
    row = "udf_json_object(NEW.id AS id, NEW.val AS val) AS json_row"  # json_*: embedded as JSON

    def call(op, prefix, with_row):
        members = [f"'op', '{op}'", f"'table', '{table}'", f"'key', udf_json_object({prefix}.id AS id) AS json_key",
                   "'v', gman_stamp()"] + ([f"'row', {row}"] if with_row else [])
        return f"SET @r = gman_do_background('{fn}', udf_json_members({', '.join(members)}))"
    sql.run(f"CREATE TRIGGER {table_name}_ai AFTER INSERT ON {table_name} FOR EACH ROW {call('upsert', 'NEW', True)}")
    sql.run(f"CREATE TRIGGER {table_name}_au AFTER UPDATE ON {table_name} FOR EACH ROW {call('upsert', 'NEW', True)}")
    sql.run(f"CREATE TRIGGER {table_name}_ad AFTER DELETE ON {table_name} FOR EACH ROW {call('delete', 'OLD', False)}")
    sql.servers_set(perl_gearmand, function=fn)
    log = tmp_path / "worker.log"
    with gman_worker(perl_gearmand, redis_server, fn, log, [table, f"{DB}.php"]):
        sql.run(f"INSERT INTO {table_name} SELECT seq, CONCAT('v', seq) FROM seq_1_to_500")
        sql.run(f"UPDATE {table_name} SET val = 'changed' WHERE id <= 100")
        sql.run(f"DELETE FROM {table_name} WHERE id > 450")
        drained(perl_gearmand, fn)
        keys = {k.decode() for k in rds.keys(f"{table}:*") if not k.endswith(b"#v")}
        assert keys == {f"{table}:{i}" for i in range(1, 451)}
        assert json.loads(rds.get(f"{table}:7")) == {"id": 7, "val": "changed"}
        assert json.loads(rds.get(f"{table}:200")) == {"id": 200, "val": "v200"}

        # a PHP client (libgearman doBackground) queues the same shape of job
        stamp = time.time_ns() // 1000
        lines = "".join(json.dumps({"op": "upsert", "table": f"{DB}.php", "key": {"id": i}, "v": stamp + i,
                                    "row": {"id": i, "from": "php"}}) + "\n" for i in range(1, 201))
        php = subprocess.run(["/usr/bin/php", str(PEERS / "php_client.php"), perl_gearmand.host,
                              str(perl_gearmand.port), fn], input=lines, capture_output=True, text=True, timeout=60)
        assert php.returncode == 0, php.stderr
        assert len(set(php.stdout.split())) == 200
        drained(perl_gearmand, fn)
        wait_until(lambda: len(rds.keys(f"{DB}.php:*")) >= 200, what="the PHP client's jobs in Redis")
        assert json.loads(rds.get(f"{DB}.php:17")) == {"id": 17, "from": "php"}
    text = log.read_text()
    assert "refuses GRAB_JOB_UNIQ" in text and text.count("WARNING") <= 3, text[-3000:]
