"""`gman-udf reconcile` (python -m pygen.cli reconcile) against real servers: after an in-memory
gearmand holding 10,000 queued jobs is SIGKILLed and restarted, Redis equals MySQL again
after one full pass that started after the loss, with no operator action, while the worker
stream goes on; its MySQL load follows --rate; MySQL and Redis outages are retried, never
fatal, and SIGTERM stops it."""
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest

from pygen.sandbox import Redis, RedisCluster, free_port
from pygen.sync import plan, schema, triggers
from pygen.sync.compare import compare

ROOT = Path(__file__).resolve().parents[2]
DB = "gman_rec"
FN = "gmanRecSync"
ENV = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))


@pytest.fixture(scope="module")
def server(installed):
    with installed.connect() as conn:
        conn.cursor().execute(f"CREATE DATABASE IF NOT EXISTS {DB}")
    yield installed
    with installed.connect() as conn:
        conn.cursor().execute(f"DROP DATABASE IF EXISTS {DB}")


def make_table(db, rows, with_triggers=False):
    """A table (composite primary key) of `rows` rows, and the generated triggers if asked."""
    name = f"t_{uuid.uuid4().hex[:8]}"
    conn = db.connect()
    cur = conn.cursor()
    cur.execute(f"CREATE DATABASE IF NOT EXISTS {DB}")
    cur.execute(f"USE {DB}")
    cur.execute(f"CREATE TABLE {DB}.{name} (g INT, id INT, val VARCHAR(40), n INT, PRIMARY KEY (g, id))")
    if rows:
        cur.execute(f"INSERT INTO {DB}.{name} SELECT seq % 7, seq, CONCAT('row ', seq), seq "
                    f"FROM seq_1_to_{rows}")
    if with_triggers:
        triggers.apply(conn, schema.read_schema(conn, f"{DB}.{name}"), FN)
    conn.close()
    return name


def dsn(db):
    return f"mysql://root@localhost/{DB}?socket={db.socket}"


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


@contextmanager
def process(command, *args, log=None):
    """A `gman-udf <command>` subprocess, stopped by SIGTERM at the end (which must exit 0)."""
    out = open(log, "wb") if log else subprocess.DEVNULL
    proc = subprocess.Popen([sys.executable, "-m", "pygen.cli", command, *map(str, args)], env=ENV,
                            stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                rc = proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise AssertionError(f"{command} did not stop within 20 s of SIGTERM")
            assert rc == 0, f"{command} exited with {rc} after SIGTERM"
        if log:
            out.close()


@contextmanager
def reconciler(db, redis_url, table, *args, log=None):
    port = free_port()
    with process("reconcile", "--table", f"{DB}.{table}", "--redis", redis_url, "--mysql", dsn(db),
                 "--function", FN, "--metrics-port", port, *args, log=log) as proc:
        yield proc, port


def metrics(port):
    """{(name, kind or None): value} of the gman_reconcile_* lines."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return {}
    out = {}
    for m in re.finditer(r'^gman_reconcile_(\w+)\{table="[^"]*"(?:,kind="(\w+)")?\} (\S+)$', text, re.M):
        out[(m.group(1), m.group(2))] = float(m.group(3))
    return out


def passes(port):
    return metrics(port).get(("passes_total", None), 0)


def differences(db, redis, table):
    """verify's comparison (pygen/sync/compare.py), nothing repaired: the number of differences."""
    conn = db.connect()
    try:
        t = schema.read_schema(conn, f"{DB}.{table}")
        return compare(conn, t, redis, plan.Options()).differences
    finally:
        conn.close()


def queued(gm):
    return gm.status().get(FN, (0, 0, 0))[0]


def test_converges_after_a_killed_gearmand_loses_10000_jobs(server, redis_server, fresh_gearmand, tmp_path):
    redis = redis_server.client(db=3)
    redis.flushdb()
    url = f"redis://{redis_server.host}:{redis_server.port}/3"
    gm = fresh_gearmand()
    table = make_table(server, 20000, with_triggers=True)
    conn = server.connect(database=DB)
    cur = conn.cursor()
    cur.execute("SELECT gman_servers_set(%s, %s)", (gm.address, FN))
    worker_args = ("--gearman", gm.address, "--redis", url, "--function", FN, "--tables", f"{DB}.{table}")
    with reconciler(server, url, table, "--rate", 10000, "--interval", 0, log=tmp_path / "rec.log") as (proc, port):
        wait_for(lambda: passes(port) >= 1, 30, "the first pass (the initial load)")
        assert differences(server, redis, table) == 0
        before = metrics(port)
        # 10,000 changes queued while no worker runs, then lost with the in-memory queue
        cur.execute(f"UPDATE {table} SET n = n + 1, val = 'changed' WHERE id <= 9000")
        cur.execute(f"DELETE FROM {table} WHERE id > 19500")
        cur.execute(f"INSERT INTO {table} SELECT seq % 7, seq, 'new', 0 FROM seq_20001_to_20500")
        assert queued(gm) == 10000
        gm.kill(signal.SIGKILL)
        lost_at = passes(port)
        gm.start()
        assert queued(gm) == 0
        with process("worker", *worker_args, log=tmp_path / "worker.log"):
            stop, streamed = threading.Event(), []

            def stream():  # the normal stream goes on meanwhile, through the restarted gearmand
                c = server.connect(database=DB).cursor()
                while not stop.wait(0.01):
                    i = random.randint(1, 20500)
                    streamed.append(c.execute(f"UPDATE {table} SET n = n + 1 WHERE g = %s AND id = %s", (i % 7, i)))
                c.connection.close()

            thread = threading.Thread(target=stream, daemon=True)
            thread.start()
            # the pass under way when the jobs were lost, then one full pass started after it
            wait_for(lambda: passes(port) >= lost_at + 2, 45, "a full pass after the loss")
            stop.set()
            thread.join(10)
            wait_for(lambda: gm.status().get(FN, (0, 0, 0))[:2] == (0, 0), 20, "the worker to drain")
            assert differences(server, redis, table) == 0
        m = metrics(port)
        assert proc.poll() is None
    def repaired(kind):
        return m[("repaired_total", kind)] - before.get(("repaired_total", kind), 0)
    # the lost updates and inserts, but those the stream changed again; the keys of the deleted rows
    assert repaired("written") >= 9500 - sum(streamed), (repaired("written"), sum(streamed))
    assert repaired("deleted") == 500
    assert m[("rows_checked_total", None)] >= 3 * 20000
    assert m[("pass_completed_timestamp_seconds", None)] > time.time() - 60
    log = (tmp_path / "rec.log").read_text()
    assert re.search(rf"{DB}\.{table}: pass 1 done in [\d.]+ s: 20000 rows checked; 20000 missing", log), log
    redis.close()
    conn.close()


def test_mysql_load_follows_rate(server, redis_server):
    rate, rows = 1000, 3000
    table = make_table(server, rows)
    conn = server.connect()
    cur = conn.cursor()

    def rows_read():  # every row the server read, for anyone (MariaDB's Rows_read)
        cur.execute("SHOW GLOBAL STATUS LIKE 'Rows_read'")
        return int(cur.fetchone()[1])

    url = f"redis://{redis_server.host}:{redis_server.port}/4"
    redis_server.client(db=4).flushdb()
    before, t0 = rows_read(), time.monotonic()
    with reconciler(server, url, table, "--rate", rate, "--interval", 0) as (proc, port):
        wait_for(lambda: passes(port) >= 1, 60, "the first pass")
        read, elapsed = rows_read() - before, time.monotonic() - t0
        m = metrics(port)
    print(f"rows read by the server: {read} in {elapsed:.1f} s ({read / elapsed:.0f}/s at --rate {rate}); "
          f"the first pass: {m[('pass_seconds', None)]:.1f} s for {2 * rows} reads")
    # generous: the walk and the re-reads at `rate`, one chunk of burst, and slack for the rest
    assert 0 < read <= 1.5 * rate * elapsed + 2 * 250, (read, elapsed)
    assert m[("rows_read_total", None)] <= rate * (elapsed + 5) + 250
    # the first pass loads everything (a read and a re-read per row): it cannot beat the rate
    assert m[("pass_seconds", None)] >= 0.8 * (2 * rows - 250) / rate
    conn.close()


def test_outages_are_retried_and_sigterm_stops(private_mariadb, tmp_path):
    db = private_mariadb()
    table = make_table(db, 2000)
    with Redis() as rs:
        redis = rs.client()
        with reconciler(db, rs.url, table, "--rate", "max", "--interval", 0.2, "--timeout", 2,
                        log=tmp_path / "rec.log") as (proc, port):
            wait_for(lambda: passes(port) >= 1, 30, "the first pass")
            assert len([k for k in redis.scan_iter(count=5000) if not k.endswith(b"#v")]) == 2000
            db.kill(signal.SIGKILL)  # MySQL away: errors, back-off, no exit
            wait_for(lambda: metrics(port).get(("errors_total", None), 0) >= 2, 30, "MySQL errors")
            assert proc.poll() is None
            db.start()
            rs.stop()  # Redis away, then back empty (no persistence)
            wait_for(lambda: metrics(port).get(("errors_total", None), 0) >= 4, 30, "Redis errors")
            assert proc.poll() is None
            rs.start()
            redis = rs.client()
            wait_for(lambda: len([k for k in redis.scan_iter(count=5000) if not k.endswith(b"#v")]) == 2000,
                     60, "Redis filled again")
            assert json.loads(redis.get(f"{DB}.{table}:3:10")) == {"g": 3, "id": 10, "val": "row 10", "n": 10}
            assert proc.poll() is None
        assert proc.returncode == 0  # SIGTERM: a clean stop
        redis.close()
    assert "retrying in" in (tmp_path / "rec.log").read_text()


def test_worker_reconcile_runs_inside_the_worker(server, redis_server, fresh_gearmand):
    """`gman-udf worker --reconcile`: the same passes in a thread of the worker, its metrics
    on the worker's endpoint."""
    gm = fresh_gearmand()
    table = make_table(server, 1500)
    redis = redis_server.client(db=5)
    redis.flushdb()
    port = free_port()
    with process("worker", "--gearman", gm.address, "--redis", f"redis://{redis_server.host}:{redis_server.port}/5",
                 "--function", FN, "--tables", f"{DB}.{table}", "--mysql", dsn(server), "--reconcile",
                 f"{DB}.{table}", "--reconcile-rate", "max", "--reconcile-interval", 0.2, "--metrics-port", port) as proc:
        wait_for(lambda: passes(port) >= 1, 30, "a pass of the worker's reconciler")
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert 'gman_worker_jobs_total{mode="payload"} 0' in text and f'gman_reconcile_rows_checked_total{{table="{DB}.{table}"}}' in text
        assert differences(server, redis, table) == 0
        assert proc.poll() is None
    redis.close()


def test_text_binary_and_datetime_keys_are_walked_in_order(server, redis_server):
    """Keyset pagination over keys that are text (case-insensitive collation, non-ASCII), bytes
    and DATETIME(6): every row is compared exactly once, in small chunks (--rate 40: chunks of 10)."""
    name = f"k_{uuid.uuid4().hex[:8]}"
    conn = server.connect(database=DB)
    cur = conn.cursor()
    cur.execute(f"CREATE TABLE {name} (s VARCHAR(20) COLLATE utf8mb4_general_ci, b VARBINARY(4), "
                f"d DATETIME(6), v INT, PRIMARY KEY (s, b, d))")
    rows = [(s, b, f"2026-01-0{1 + i % 3} 10:00:00.{i:06d}", i)
            for i, (s, b) in enumerate((s, b) for s in ("a", "B", "c", "É", "é z", "%s", "'") for b in
                                       (b"\x00", b"\xff\x00", b"a", b"%s"))]
    cur.executemany(f"INSERT INTO {name} VALUES (%s, %s, %s, %s)", rows)
    url = f"redis://{redis_server.host}:{redis_server.port}/6"
    redis = redis_server.client(db=6)
    redis.flushdb()
    proc = subprocess.run([sys.executable, "-m", "pygen.cli", "reconcile", "--table", f"{DB}.{name}", "--redis", url,
                           "--mysql", dsn(server), "--rate", "40", "--once"], env=ENV, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"pass 1 done in" in proc.stderr and f"{len(rows)} rows checked; {len(rows)} missing" in proc.stderr
    assert differences(server, redis, name) == 0
    redis.close()
    conn.close()


def test_a_chunk_reads_only_its_rows(server):
    """The keyset condition is a range of the primary key: a chunk in the middle of a table with a
    composite key reads about `limit` rows (the row constructor (g, id) > (3, 10000) would read
    every row before it: an index scan from the start on MariaDB 10.11)."""
    from pygen.sync import reconcile
    table = make_table(server, 20000)
    conn = server.connect(database=DB)
    cur = conn.cursor()
    t = schema.read_schema(conn, f"{DB}.{table}")

    def handler_reads():
        cur.execute("SHOW SESSION STATUS LIKE 'Handler_read%'")
        return sum(int(v) for _, v in cur.fetchall())

    before = handler_reads()
    cur.execute(reconcile.chunk_sql(t, True), [*reconcile.after_params((3, 10000)), 500])
    got = cur.fetchall()
    read = handler_reads() - before
    assert len(got) == 500 and got[0][2:4] == (3, 10006)
    assert read <= 600, read
    conn.close()


def test_a_cluster_away_at_the_start_is_an_outage(server, tmp_path):
    # the cluster client reaches a node when made: made at the first step, retried like any outage
    table = make_table(server, 10)
    with reconciler(server, f"redis+cluster://127.0.0.1:{free_port()}", table, "--interval", 0.2, "--timeout", 1,
                    log=tmp_path / "rec.log") as (proc, port):
        wait_for(lambda: metrics(port).get(("errors_total", None), 0) >= 2, 30, "Redis errors")
        assert proc.poll() is None
    assert "RedisClusterException: Redis Cluster cannot be connected" in (tmp_path / "rec.log").read_text()


def test_worker_reconcile_on_a_cluster(server, fresh_gearmand):
    gm = fresh_gearmand()
    table = make_table(server, 500)
    port = free_port()
    with RedisCluster() as cluster:
        client = cluster.client()
        with process("worker", "--gearman", gm.address, "--redis", cluster.url, "--function", FN, "--tables",
                     f"{DB}.{table}", "--mysql", dsn(server), "--reconcile", f"{DB}.{table}", "--reconcile-rate",
                     "max", "--reconcile-interval", 0.2, "--metrics-port", port) as proc:
            wait_for(lambda: passes(port) >= 1, 30, "a pass of the worker's reconciler")
            assert differences(server, client, table) == 0
            assert len({client.get_node_from_key(k).port for k in client.scan_iter(match=f"{DB}.{table}:*")}) == 3
            assert proc.poll() is None
        client.close()
