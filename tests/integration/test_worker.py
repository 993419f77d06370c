"""`gman-udf worker` (python -m pygen.cli worker) between a real MariaDB with triggers, gearmand
and Redis: changes arrive with the right key and value, racing workers never leave an older
row, a SIGKILLed worker or a restarted Redis loses nothing, and committed mode never shows
what MySQL has not committed."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pygen.gearman.client import Client
from pygen.sandbox import Redis, free_port
from pygen.sync.plan import version_key
from pygen.sync.redis_scripts import APPLY

ROOT = Path(__file__).resolve().parents[2]
FN = "gmanWkSync"
DB = "gman_wk"
REDIS_DB = 9


# ---- servers and helpers ---------------------------------------------------------------------

def trigger_sql(table, key, cols):
    """AFTER INSERT/UPDATE/DELETE triggers sending pygen/sync/payload.py's shape, as generated ones do."""
    def obj(prefix, names, alias):
        return "udf_json_object(" + ", ".join(f"{prefix}.`{c}` AS `{c}`" for c in names) + f") AS {alias}"

    def call(op, prefix):
        members = [f"'op', '{op}'", f"'table', '{DB}.{table}'", f"'key', {obj(prefix, key, 'json_key')}",
                   "'v', gman_stamp()"]
        if op == "upsert":
            members.append(f"'row', {obj(prefix, cols, 'json_row')}")
        return f"SET @gman_r = gman_do_background('{FN}', udf_json_members({', '.join(members)}))"

    same_key = " AND ".join(f"NEW.`{c}` <=> OLD.`{c}`" for c in key)
    # named as pygen/sync/triggers.py names them: a committed-mode worker syncs the tables it finds so
    return [
        f"CREATE TRIGGER gman_{table}_ai AFTER INSERT ON {table} FOR EACH ROW {call('upsert', 'NEW')}",
        f"CREATE TRIGGER gman_{table}_au AFTER UPDATE ON {table} FOR EACH ROW BEGIN "
        f"IF NOT ({same_key}) THEN {call('delete', 'OLD')}; END IF; {call('upsert', 'NEW')}; END",
        f"CREATE TRIGGER gman_{table}_ad AFTER DELETE ON {table} FOR EACH ROW {call('delete', 'OLD')}",
    ]


@pytest.fixture(scope="module")
def schema(installed):
    cur = installed.connect().cursor()
    cur.execute(f"DROP DATABASE IF EXISTS {DB}")
    cur.execute(f"CREATE DATABASE {DB}")
    cur.execute(f"USE {DB}")
    cur.execute("CREATE TABLE t (id INT PRIMARY KEY, val VARCHAR(64), n INT, b VARBINARY(16))")
    cur.execute("CREATE TABLE c (a INT, b VARCHAR(16), x DOUBLE, PRIMARY KEY (a, b))")
    for stmt in trigger_sql("t", ["id"], ["id", "val", "n", "b"]) + trigger_sql("c", ["a", "b"], ["a", "b", "x"]):
        cur.execute(stmt)
    yield installed
    cur.execute(f"DROP DATABASE {DB}")


@pytest.fixture
def gm(fresh_gearmand):
    return fresh_gearmand()


@pytest.fixture
def mysql(schema, gm):
    """A cursor on the test database whose triggers send FN's jobs to this test's gearmand."""
    conn = schema.connect()
    cur = conn.cursor()
    cur.execute(f"USE {DB}")
    cur.execute("SELECT gman_servers_set(%s, %s)", (gm.address, FN))
    cur.execute("TRUNCATE t")  # fires no trigger
    cur.execute("TRUNCATE c")
    yield cur
    conn.close()


@pytest.fixture
def rds(redis_server):
    client = redis_server.client(db=REDIS_DB)
    client.flushdb()
    yield client
    client.close()


def redis_url(server):
    return f"redis://{server.host}:{server.port}/{REDIS_DB}"


def wait_for(predicate, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def fn_status(gm):
    return gm.status().get(FN, (0, 0, 0))


def drained(gm, timeout=30.0):
    wait_for(lambda: fn_status(gm)[:2] == (0, 0), timeout, f"gearmand {gm.address} to drain")


@contextmanager
def worker(servers, redis, *args, expect_exit=0, log=None, env_extra=None):
    """A worker subprocess; on exit SIGTERM, which must end it with `expect_exit`. With env_extra
    holding GMAN_UDF_REDIS, --redis is left off its command line (as the systemd unit does)."""
    servers = servers if isinstance(servers, list) else [servers]
    url = redis if isinstance(redis, str) else redis_url(redis)
    if "--tables" not in args and "--mysql" not in args and "GMAN_UDF_MYSQL" not in (env_extra or {}):
        args = ("--tables", f"{DB}.t,{DB}.c", *args)  # payload mode: this module's two tables
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env_extra or {}))
    redis_arg = [] if "GMAN_UDF_REDIS" in (env_extra or {}) else ["--redis", url]
    cmd = [sys.executable, "-m", "pygen.cli", "worker", "--gearman", ",".join(g.address for g in servers),
           *redis_arg, "--function", FN, "--log-level", "INFO", *map(str, args)]
    out = open(log, "wb") if log else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: all(fn_status(g)[2] >= 1 for g in servers) or proc.poll() is not None,
                 what="the worker to register")
        assert proc.poll() is None, f"worker exited with {proc.returncode}"
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                rc = proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise AssertionError("worker did not stop within 20 s of SIGTERM")
            assert rc == expect_exit, f"worker exited with {rc} after SIGTERM"
        if log:
            out.close()


def mysql_rows(cur, table="t"):
    cols = {"t": "id, val, n, b", "c": "a, b, x"}[table]
    key = {"t": "id", "c": "a, '|', b"}[table]
    cur.execute(f"SELECT CONCAT({key}), udf_json_object({cols}) FROM {table}")
    return {k: json.loads(v) for k, v in cur.fetchall()}


def redis_rows(rds, prefix=f"{DB}.t:"):
    keys = [k for k in rds.scan_iter(match=prefix + "*", count=5000) if not k.endswith(b"#v")]
    out = {}
    for start in range(0, len(keys), 5000):
        chunk = keys[start:start + 5000]
        out.update((k.decode()[len(prefix):], json.loads(v)) for k, v in zip(chunk, rds.mget(chunk)))
    return out


# ---- the Lua guard on its own ----------------------------------------------------------------

def test_script_guard(rds):
    script = rds.register_script(APPLY)

    def run(op, key, version, ttl=0, *values):
        return script(keys=[key, version_key(key)], args=[op, version, ttl, len(values), *values])

    big = "98765432109876543210"  # past 2^64: compared as text, not as a double
    assert run("s", "k", "100", 0, "v100") == 0
    assert run("s", "k", "99", 0, "v99") == 1 and rds.get("k") == b"v100"  # older: skipped
    assert run("s", "k", "100", 0, "again") == 0 and rds.get("k") == b"again"  # equal: idempotent
    assert run("d", "k", "101", 5000) == 0 and not rds.exists("k")
    assert 0 < rds.pttl(version_key("k")) <= 5000  # the tombstone expires
    assert run("s", "k", "100", 0, "late") == 1 and not rds.exists("k")  # no resurrection
    assert run("s", "k", big, 0, "big") == 0 and rds.get(version_key("k")) == big.encode()
    assert rds.pttl(version_key("k")) == -1  # a live row's version does not expire
    assert run("s", "k", "9" * 19, 0, "x") == 1  # shorter = smaller
    assert run("h", "h", "5", 60000, "f", "1", "g", "2") == 0
    assert rds.hgetall("h") == {b"f": b"1", b"g": b"2"} and 0 < rds.pttl("h") <= 60000
    assert run("h", "h", "6", 0, "g", "3") == 0 and rds.hgetall("h") == {b"g": b"3"}  # replaced, not merged
    assert run("s", "u", "", 0, "a") == 0 and run("s", "u", "", 0, "b") == 0  # unguarded
    assert rds.get("u") == b"b" and not rds.exists(version_key("u"))


# ---- payload mode ----------------------------------------------------------------------------

def test_insert_update_delete_reach_redis(mysql, gm, rds, redis_server):
    with worker(gm, redis_server):
        mysql.execute("INSERT INTO t VALUES (1, 'one', 10, x'00ff'), (2, 'tab\\there \"q\" é 漢', NULL, NULL), "
                    "(3, NULL, -5, 'text')")
        mysql.execute("INSERT INTO c VALUES (1, 'x', 1.5), (1, 'y', NULL), (2, 'x', 1e300)")
        mysql.execute("UPDATE t SET val = 'uno', n = n + 1 WHERE id = 1")
        mysql.execute("UPDATE t SET id = 30 WHERE id = 3")  # a key change: delete 3, upsert 30
        mysql.execute("DELETE FROM t WHERE id = 2")
        mysql.execute("UPDATE c SET x = 2.25 WHERE a = 1 AND b = 'x'")
        mysql.execute("DELETE FROM c WHERE b = 'y'")
        drained(gm)
        assert json.loads(rds.get(f"{DB}.t:1")) == {"id": 1, "val": "uno", "n": 11, "b": {"$base64": "AP8="}}
        assert redis_rows(rds) == mysql_rows(mysql) == {
            "1": {"id": 1, "val": "uno", "n": 11, "b": {"$base64": "AP8="}},
            "30": {"id": 30, "val": None, "n": -5, "b": "text"}}
        assert not rds.exists(f"{DB}.t:2") and not rds.exists(f"{DB}.t:3")
        assert 0 < rds.ttl(version_key(f"{DB}.t:2")) <= 86400  # the delete's tombstone
        assert json.loads(rds.get(f"{DB}.c:1:x")) == {"a": 1, "b": "x", "x": 2.25}
        assert json.loads(rds.get(f"{DB}.c:2:x")) == {"a": 2, "b": "x", "x": 1e300}
        assert not rds.exists(f"{DB}.c:1:y")


def test_hash_mode_fields_template_ttl(mysql, gm, rds, redis_server):
    with worker(gm, redis_server, "--mode", "hash", "--fields", "val,b", "--key-template", "row:{id}",
                "--ttl", 300):
        mysql.execute("INSERT INTO t VALUES (1, 'one', 10, x'00ff'), (2, NULL, NULL, 'abc')")
        mysql.execute("INSERT INTO c VALUES (7, 'k', 0.5)")  # c has no {id}: refused, does not block
        mysql.execute("UPDATE t SET b = NULL WHERE id = 1")
        mysql.execute("INSERT INTO t VALUES (3, 'three', 3, NULL)")
        drained(gm)
        assert rds.hgetall("row:1") == {b"val": b"one"}
        assert rds.hgetall("row:2") == {b"b": b"abc"}
        assert rds.hgetall("row:3") == {b"val": b"three"}
        assert 0 < rds.ttl("row:3") <= 300 and 0 < rds.ttl(version_key("row:3")) <= 300
        assert not list(rds.scan_iter(match="*c*"))


def test_seeds_rows_from_two_gearmands_and_two_processes(fresh_gearmand, rds, redis_server, tmp_path):
    a, b = fresh_gearmand(), fresh_gearmand()
    for gm, ids in ((a, range(0, 300, 2)), (b, range(1, 300, 2))):
        with Client(gm.address) as c:
            jobs = [(FN, json.dumps({"id": i, "volume": i / 4}).encode(), None) for i in ids]
            c.submit_many_background(jobs + [(FN, b"not json", None), (FN, b'{"no": "id"}', None)])
    log = tmp_path / "worker.log"
    with worker([a, b], redis_server, "--processes", 2, "--stats-interval", 0.2, "--tables", "*", log=log):
        drained(a)
        drained(b)
        assert {k: json.loads(v) for k, v in zip(rds.keys("*"), rds.mget(rds.keys("*")))} == \
            {str(i).encode(): {"id": i, "volume": i / 4} for i in range(300)}  # the seeds' SET <id> <json>
        time.sleep(0.3)
    text = log.read_text()
    assert text.count(" refused: ") == 4 and "jobs/s" in text


def hammer(schema, round_, n, threads=2):
    """n UPDATEs of row 1 from each of `threads` connections at once."""
    def run():
        conn = schema.connect()
        cur = conn.cursor()
        cur.execute(f"USE {DB}")
        for i in range(n):
            cur.execute("UPDATE t SET n = n + 1, val = CONCAT('r', %s, ':', CONNECTION_ID(), ':', %s) "
                        "WHERE id = 1", (round_, i))
        conn.close()
    pool = [threading.Thread(target=run) for _ in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()


def test_two_workers_racing_on_one_row(mysql, gm, rds, redis_server, schema):
    mysql.execute("INSERT INTO t VALUES (1, 'start', 0, NULL)")
    port = free_port()
    with worker(gm, redis_server, "--batch", 4, "--metrics-port", port), worker(gm, redis_server, "--batch", 7):
        for round_ in range(5):
            hammer(schema, round_, 1000)
            drained(gm)
            assert redis_rows(rds) == mysql_rows(mysql), f"round {round_}"
            assert mysql_rows(mysql)["1"]["n"] == 2000 * (round_ + 1)
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        jobs = int(next(line.split()[1] for line in metrics.splitlines() if line.startswith("gman_worker_jobs_total")))
        assert 0 < jobs <= 10001


def bulk_insert(mysql, n, start=1):
    mysql.execute(f"INSERT INTO t SELECT seq, CONCAT('row ', seq), seq, NULL FROM seq_{start}_to_{start + n - 1}")


def test_sigkill_mid_stream_loses_nothing(mysql, gm, rds, redis_server):
    bulk_insert(mysql, 20000)
    mysql.execute("UPDATE t SET n = n * 2 WHERE id % 3 = 0")
    with worker(gm, redis_server, "--batch", 200, expect_exit=-signal.SIGKILL) as proc:
        wait_for(lambda: rds.dbsize() > 2000, what="the first writes")
        proc.kill()
        proc.wait()
    assert fn_status(gm)[0] > 0, "the worker drained everything before the kill: test nothing"
    with worker(gm, redis_server):
        drained(gm)
        assert redis_rows(rds) == mysql_rows(mysql)


def test_redis_restart_mid_stream(mysql, gm):
    with Redis(extra_args=["--appendonly", "yes"]) as private:
        client = private.client(db=REDIS_DB)
        bulk_insert(mysql, 20000)
        with worker(gm, private, "--batch", 100):
            wait_for(lambda: client.dbsize() > 2000, what="the first writes")
            private.restart()
            assert fn_status(gm)[0] > 0, "drained before the restart: test nothing"
            drained(gm)
            assert len(redis_rows(client)) == 20000
            assert redis_rows(client) == mysql_rows(mysql)
        client.close()


def test_gearmand_restart_with_durable_queue(fresh_gearmand, rds, redis_server):
    gm = fresh_gearmand(queue="sqlite")
    base = time.time_ns() // 1000

    def submit(ids):
        with Client(gm.address) as c:
            c.submit_many_background([(FN, json.dumps({"op": "upsert", "table": "s.t", "key": {"id": i}, "v": base + i,
                                                       "row": {"id": i}}).encode(), None) for i in ids])
    with worker(gm, redis_server, "--tables", "s.t"):
        submit(range(100))
        drained(gm)
        gm.restart()  # the worker reconnects (with back-off)
        submit(range(100, 200))
        drained(gm)
    submit(range(200, 300))
    gm.restart()
    assert fn_status(gm)[0] == 100  # kept by the sqlite queue
    with worker(gm, redis_server, "--tables", "s.t"):
        drained(gm)
    assert sorted(int(k.split(b":")[1]) for k in rds.keys("s.t:*") if not k.endswith(b"#v")) == list(range(300))


def test_redis_down_jobs_stay_queued(mysql, gm):
    private = Redis()
    url = redis_url(private)
    private.close()  # nobody listens there now
    bulk_insert(mysql, 50)
    with worker(gm, url, "--timeout", 1):  # SIGTERM: exits 0, returning the jobs it holds
        wait_for(lambda: fn_status(gm)[1] > 0, what="jobs taken")
        time.sleep(0.3)
    assert fn_status(gm)[:2] == (50, 0)
    with worker(gm, url, "--timeout", 1, expect_exit=-signal.SIGKILL) as proc:
        wait_for(lambda: fn_status(gm)[1] > 0, what="jobs taken")
        time.sleep(0.3)
        proc.kill()
        proc.wait()
    wait_for(lambda: fn_status(gm)[:2] == (50, 0), what="gearmand to re-queue the jobs")


# ---- committed mode --------------------------------------------------------------------------

@contextmanager
def watching(rds, key):
    """Every value `key` takes in Redis while the block runs (polled every ms or so)."""
    seen, stop = [], threading.Event()

    def poll():
        while True:
            done = stop.is_set()  # one more read after the block ends: it may have seen a value we did not
            value = rds.get(key)
            if not seen or seen[-1] != value:
                seen.append(value)
            if done:
                return
            time.sleep(0.001)
    th = threading.Thread(target=poll)
    th.start()
    try:
        yield seen
    finally:
        stop.set()
        th.join()


def committed_worker(gm, redis_server, schema, *args, log=None):
    dsn = f"mysql://root@localhost/{DB}?socket={schema.socket}"
    return worker(gm, redis_server, "--consistency", "committed", "--mysql", dsn, "--commit-window", 1, *args,
                  log=log)


def value_of(rds, key=f"{DB}.t:1"):
    raw = rds.get(key)
    return None if raw is None else json.loads(raw)["val"]


def test_committed_two_workers_racing_on_one_row(mysql, gm, rds, redis_server, schema):
    mysql.execute("INSERT INTO t VALUES (1, 'start', 0, NULL)")
    with committed_worker(gm, redis_server, schema, "--batch", 4), \
            committed_worker(gm, redis_server, schema, "--batch", 7):
        hammer(schema, 0, 1000)
        drained(gm)
        assert redis_rows(rds) == mysql_rows(mysql)


def test_secrets_from_the_environment_only(mysql, gm, rds, redis_server, schema):
    """The systemd unit's way: DSN and Redis URL in the environment (its EnvironmentFile), neither
    on the command line that /proc/PID/cmdline shows every local user."""
    dsn = f"mysql://root@localhost/{DB}?socket={schema.socket}"
    env = {"GMAN_UDF_MYSQL": dsn, "GMAN_UDF_REDIS": redis_url(redis_server)}
    with worker(gm, redis_server, "--consistency", "committed", "--commit-window", 1, env_extra=env) as proc:
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
        assert b"--mysql" not in cmdline and b"--redis" not in cmdline
        assert not any(b"mysql://" in a or b"redis://" in a for a in cmdline)
        mysql.execute("INSERT INTO t VALUES (1, 'from env', 1, NULL)")
        wait_for(lambda: value_of(rds) == "from env", what="the row through the env-configured worker")
        drained(gm)
        assert redis_rows(rds) == mysql_rows(mysql)


def test_committed_rollback_never_reaches_redis(mysql, gm, rds, redis_server, schema):
    mysql.execute("INSERT INTO t VALUES (1, 'kept', 1, NULL)")
    with committed_worker(gm, redis_server, schema):
        wait_for(lambda: value_of(rds) == "kept", what="the committed INSERT")
        with watching(rds, f"{DB}.t:1") as seen:
            mysql.execute("BEGIN")
            mysql.execute("UPDATE t SET val = 'rolled back' WHERE id = 1")
            mysql.execute("INSERT INTO t VALUES (2, 'never', 2, NULL)")
            time.sleep(0.5)
            mysql.execute("ROLLBACK")
            drained(gm)  # the jobs wait out the window, then write what is committed
        assert [json.loads(v)["val"] for v in seen] == ["kept"]
        assert not rds.exists(f"{DB}.t:2")
        assert redis_rows(rds) == mysql_rows(mysql)


def test_committed_long_transaction_appears_only_after_commit(mysql, gm, rds, redis_server, schema):
    mysql.execute("INSERT INTO t VALUES (1, 'before', 1, NULL)")
    with committed_worker(gm, redis_server, schema):
        wait_for(lambda: value_of(rds) == "before", what="the committed INSERT")
        with watching(rds, f"{DB}.t:1") as seen:
            mysql.execute("BEGIN")
            mysql.execute("UPDATE t SET val = 'after' WHERE id = 1")
            mysql.execute("INSERT INTO t VALUES (2, 'new', 2, NULL)")
            time.sleep(2.5)  # longer than the commit window: the row locks keep the jobs waiting
            assert value_of(rds) == "before" and not rds.exists(f"{DB}.t:2")
            committed_at = time.monotonic()
            mysql.execute("COMMIT")
            wait_for(lambda: value_of(rds) == "after", what="the committed UPDATE")
            visible_after = time.monotonic() - committed_at
        assert [json.loads(v)["val"] for v in seen] == ["before", "after"]
        assert visible_after < 2.0
        drained(gm)
        assert redis_rows(rds) == mysql_rows(mysql)


@contextmanager
def watching_all(rds, keys):
    """Every value each of `keys` takes in Redis while the block runs ({key: [values]})."""
    seen, stop = {k: [] for k in keys}, threading.Event()

    def poll():
        while True:
            done = stop.is_set()
            for k, v in zip(keys, rds.mget(keys)):
                if not seen[k] or seen[k][-1] != v:
                    seen[k].append(v)
            if done:
                return
            time.sleep(0.001)
    th = threading.Thread(target=poll)
    th.start()
    try:
        yield seen
    finally:
        stop.set()
        th.join()


def open_transactions(schema, n):
    conns = [schema.connect() for _ in range(n)]
    curs = [c.cursor() for c in conns]
    for cur in curs:
        cur.execute(f"USE {DB}")
    return conns, curs


def test_committed_open_transaction_is_waited_on_not_polled(mysql, gm, rds, redis_server, schema):
    """A transaction held open 2 s: its jobs (an UPDATE and an INSERT) are each handed to a
    waiter whose locking read returns at COMMIT; no re-read (poll) happens, nothing shows
    before the COMMIT."""
    mysql.execute("INSERT INTO t VALUES (1, 'before', 1, NULL)")
    port = free_port()
    with committed_worker(gm, redis_server, schema, "--metrics-port", port):
        wait_for(lambda: value_of(rds) == "before", what="the committed INSERT")
        with watching(rds, f"{DB}.t:1") as seen:
            mysql.execute("BEGIN")
            mysql.execute("UPDATE t SET val = 'after' WHERE id = 1")
            mysql.execute("INSERT INTO t VALUES (2, 'new', 2, NULL)")
            wait_for(lambda: metric(port, "gman_worker_waiting") == 2, what="both jobs waited on")
            time.sleep(2.0)
            assert value_of(rds) == "before" and not rds.exists(f"{DB}.t:2")
            assert metric(port, "gman_worker_waiting") == 2
            mysql.execute("COMMIT")
            wait_for(lambda: value_of(rds) == "after" and rds.exists(f"{DB}.t:2"), what="the committed changes")
        assert [json.loads(v)["val"] for v in seen] == ["before", "after"]
        drained(gm)
        assert redis_rows(rds) == mysql_rows(mysql)
        assert metric(port, "gman_worker_waits_total") == 2
        assert metric(port, "gman_worker_retries_total") == 0  # the old rule polled with back-off: 5+ here
        assert metric(port, "gman_worker_waiting") == 0
        buckets, count, total = lag_histogram(port)  # measured from the triggers' stamps: the 2 s open are in it
        assert count == 3 and count - buckets[1.0] >= 2 and total >= 4.0


def test_committed_fifty_open_transactions_land_after_commit_or_never(mysql, gm, rds, redis_server, schema):
    """50 transactions open at once, each on its own row, all waited on in parallel (other
    rows' jobs keep flowing meanwhile); then 25 commit and 25 roll back: the committed values
    land, the rolled-back ones never show, nothing shows before its COMMIT."""
    n = 50
    mysql.execute(f"INSERT INTO t SELECT seq, 'start', seq, NULL FROM seq_1_to_{n}")
    port = free_port()
    conns, curs = open_transactions(schema, n)
    keys = [f"{DB}.t:{i}" for i in range(1, n + 1)]
    try:
        with committed_worker(gm, redis_server, schema, "--metrics-port", port):
            wait_for(lambda: all(v is not None for v in rds.mget(keys)), what="the committed INSERTs")
            with watching_all(rds, keys) as seen:
                for i, cur in enumerate(curs, 1):
                    cur.execute("BEGIN")
                    cur.execute("UPDATE t SET val = %s WHERE id = %s", (f"open {i}", i))
                wait_for(lambda: metric(port, "gman_worker_waiting") == n, what=f"{n} jobs waited on")
                mysql.execute("INSERT INTO t VALUES (100, 'flowing', 0, NULL)")  # another row: not held up
                wait_for(lambda: value_of(rds, f"{DB}.t:100") == "flowing", what="a job of another row")
                assert all(json.loads(v)["val"] == "start" for v in rds.mget(keys))
                for i, cur in enumerate(curs, 1):
                    cur.execute("COMMIT" if i % 2 == 0 else "ROLLBACK")
                drained(gm)
                wait_for(lambda: metric(port, "gman_worker_waiting") == 0, what="the waiters to finish")
            for i, key in enumerate(keys, 1):
                assert [json.loads(v)["val"] for v in seen[key]] == (["start", f"open {i}"] if i % 2 == 0 else ["start"])
            assert redis_rows(rds) == mysql_rows(mysql)
            assert metric(port, "gman_worker_waits_total") == n
            assert metric(port, "gman_worker_retries_total") == 0
    finally:
        for c in conns:
            c.close()


def test_committed_waiters_full_or_timed_out_fall_back_to_polling(mysql, gm, rds, redis_server, schema):
    """--waiters 2 with 4 open transactions: two are waited on, the others are polled as before
    (NOWAIT, back-off); --lock-wait 1 with transactions held 2.5 s: a read that timed out is
    run again. Every change lands after its COMMIT, none before."""
    n = 4
    mysql.execute(f"INSERT INTO t SELECT seq, 'start', seq, NULL FROM seq_1_to_{n}")
    port = free_port()
    conns, curs = open_transactions(schema, n)
    keys = [f"{DB}.t:{i}" for i in range(1, n + 1)]
    try:
        with committed_worker(gm, redis_server, schema, "--metrics-port", port, "--waiters", 2, "--lock-wait", 1):
            wait_for(lambda: all(v is not None for v in rds.mget(keys)), what="the committed INSERTs")
            with watching_all(rds, keys) as seen:
                for i, cur in enumerate(curs, 1):
                    cur.execute("BEGIN")
                    cur.execute("UPDATE t SET val = %s WHERE id = %s", (f"open {i}", i))
                time.sleep(2.5)
                assert all(json.loads(v)["val"] == "start" for v in rds.mget(keys))
                for cur in curs:
                    cur.execute("COMMIT")
                drained(gm)
                wait_for(lambda: all(json.loads(v)["val"] != "start" for v in rds.mget(keys)), what="every COMMIT")
            assert all([json.loads(v)["val"] for v in seen[k]] == ["start", f"open {i}"] for i, k in enumerate(keys, 1))
            assert redis_rows(rds) == mysql_rows(mysql)
            assert metric(port, "gman_worker_waits_total") >= 4  # 2 waiters, each read timed out and run again
            assert metric(port, "gman_worker_retries_total") >= 2  # the 2 jobs no waiter could take: polled
    finally:
        for c in conns:
            c.close()


def test_committed_forged_jobs_do_not_change_redis(mysql, gm, rds, redis_server, schema, tmp_path):
    mysql.execute("INSERT INTO t VALUES (1, 'truth', 1, NULL)")
    log = tmp_path / "worker.log"
    with committed_worker(gm, redis_server, schema, "--log-level", "DEBUG", log=log):
        wait_for(lambda: value_of(rds) == "truth", what="the committed INSERT")
        mysql.execute("SELECT gman_stamp()")
        now = mysql.fetchone()[0]
        forged = [
            {"op": "upsert", "table": f"{DB}.t", "key": {"id": 1}, "v": now, "row": {"id": 1, "val": "evil", "n": 1, "b": None}},
            {"op": "upsert", "table": f"{DB}.t", "key": {"id": 1}, "v": now * 10, "row": {"id": 1, "val": "truth", "n": 1, "b": None}},
            {"op": "upsert", "table": f"{DB}.t", "key": {"id": 9}, "v": now, "row": {"id": 9, "val": "ghost", "n": 1, "b": None}},
            {"op": "delete", "table": f"{DB}.t", "key": {"id": 1}, "v": now},
            {"op": "upsert", "table": f"{DB}.nosuch", "key": {"id": 1}, "v": now, "row": {"id": 1}},
            {"id": 1, "val": "seeds shape"},
        ]
        with watching(rds, f"{DB}.t:1") as seen:
            for doc in forged:
                mysql.execute("SELECT gman_do_background(%s, %s)", (FN, json.dumps(doc)))
            drained(gm)
        assert [json.loads(v)["val"] for v in seen] == ["truth"]
        assert not rds.exists(f"{DB}.t:9")
        mysql.execute("UPDATE t SET val = 'next' WHERE id = 1")  # the guard is not poisoned
        wait_for(lambda: value_of(rds) == "next", what="a genuine update after the forgeries")
        drained(gm)
        assert redis_rows(rds) == mysql_rows(mysql)
    text = log.read_text()
    assert text.count(" refused: ") == 3  # a version from the future, an unknown table, a bare row
    assert "is ahead of gman_stamp()" in text and "nosuch' is not synced" in text and "needs a payload with table" in text
    assert text.count("not committed as sent") == 2  # 'evil' and the ghost row: the committed truth written


# ---- bad jobs and forged ones (issue 7, sections 3 and 4) ------------------------------------

def metric(port, name):
    """A worker's sample `name` (any labels: each worker series has only its mode's)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return int(next(line.split()[1] for line in text.splitlines() if line.split("{")[0].split(" ")[0] == name))


def lag_histogram(port):
    """The worker's gman_worker_lag_seconds as prometheus_client parses it: ({le: count}, count, sum)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    family = next(f for f in text_string_to_metric_families(text) if f.name == "gman_worker_lag_seconds")
    assert family.type == "histogram"
    get = {s.name.rsplit("_", 1)[1]: s.value for s in family.samples if s.name != family.name + "_bucket"}
    return ({float(s.labels["le"]): s.value for s in family.samples if s.name.endswith("_bucket")},
            get["count"], get["sum"])


def bad_jobs(table):
    """Jobs that stopped or wedged the worker before issue 7, and their kin."""
    def doc(**over):
        d = {"op": "upsert", "table": table, "key": {"id": 1}, "v": 1, "row": {"id": 1}}
        d.update(over)
        return json.dumps(d).encode()
    return [
        doc(key={"id": {"$base64": "a"}}),               # bad base64: the worker exited
        doc(v=-5),                                        # looped "negative version; retrying"
        b"[" * 200000 + b"]" * 200000,                    # RecursionError: the worker exited
        doc(table=5),                                     # committed mode: 'int' has no .partition
        b'{"op":"upsert","table":"' + table.encode() + b'","key":{"id":"\xff"},"v":1,"row":{}}',  # not UTF-8
        doc(key={"id": "\ud800"}),                        # a key no Redis command can carry
        doc(row={"id": 1, "x": float("nan")}),            # NaN
        doc(v=10**40), doc(v=True), doc(key={"id": [1]}), doc(key={"id": {"a": 1}}), doc(op="merge"),
        doc(row=[1]), doc(key={}), b"", b"\x00\x01", b"null", b'{"op":"delete"}',
        doc(table="gman_wk.secret"), doc(table="mysql.global_priv", key={"User": "root", "Host": "localhost"}),
        doc(table="gman_wk.t`; DROP TABLE t; --"),
    ]


def test_bad_jobs_between_good_ones_are_refused_and_the_good_land(gm, rds, redis_server, tmp_path):
    base = time.time_ns() // 1000
    bad = bad_jobs(f"{DB}.t")
    jobs = []
    for i in range(300):
        jobs.append((FN, json.dumps({"op": "upsert", "table": f"{DB}.t", "key": {"id": i}, "v": base + i,
                                     "row": {"id": i, "val": f"v{i}"}}).encode(), None))
        if i % 10 == 0:
            jobs.append((FN, bad[(i // 10) % len(bad)], None))
    n_bad = len(jobs) - 300
    with Client(gm.address) as c:
        c.submit_many_background(jobs)
    port = free_port()
    log = tmp_path / "worker.log"
    # two processes: the metrics are their slots of the shared array, summed
    with worker(gm, redis_server, "--metrics-port", port, "--batch", 16, "--processes", 2, log=log) as proc:
        drained(gm)
        assert redis_rows(rds) == {str(i): {"id": i, "val": f"v{i}"} for i in range(300)}
        assert metric(port, "gman_worker_refused_total") == n_bad
        assert metric(port, "gman_worker_writes_total") == 300
        buckets, count, total = lag_histogram(port)
        assert count == buckets[float("inf")] == 300 and total > 0  # each good job once; the refused never
        assert proc.poll() is None
    lines = log.read_text().splitlines()
    refusals = [line for line in lines if " refused: " in line]
    assert len(refusals) == n_bad and all(" job H:" in line for line in refusals)
    assert not [line for line in lines if "retrying" in line or "Traceback" in line]


def test_bad_jobs_in_committed_mode(mysql, gm, rds, redis_server, schema, tmp_path):
    """The same jobs through SQL (any user can call gman_do_background) to a committed-mode
    worker: refused at once, and the real changes around them are written (none stuck)."""
    log = tmp_path / "worker.log"
    with committed_worker(gm, redis_server, schema, log=log):
        mysql.execute("INSERT INTO t SELECT seq, CONCAT('a', seq), seq, NULL FROM seq_1_to_200")
        for job in bad_jobs(f"{DB}.t"):
            mysql.execute("SELECT gman_do_background(%s, %s)", (FN, job))
        mysql.execute("UPDATE t SET val = CONCAT('b', id)")
        drained(gm)
        assert redis_rows(rds) == mysql_rows(mysql) and len(mysql_rows(mysql)) == 200
    text = log.read_text()
    assert text.count(" refused: ") == len(bad_jobs(f"{DB}.t")) and "partition" not in text
    assert "jobs wait" not in text and "Traceback" not in text


def test_committed_a_forged_job_naming_fewer_columns_is_refused(mysql, gm, rds, redis_server, schema, tmp_path):
    """The worker reads the columns a job names: a forged upsert with "row": {"id": 1} used to
    put {"id": 1} in Redis over the whole row, with a current version (until its next change)."""
    mysql.execute("INSERT INTO t VALUES (1, 'whole', 1, NULL)")
    log = tmp_path / "worker.log"
    with committed_worker(gm, redis_server, schema, log=log):
        wait_for(lambda: value_of(rds) == "whole", what="the committed INSERT")
        mysql.execute("SELECT gman_stamp()")
        now = mysql.fetchone()[0]
        forged = {"op": "upsert", "table": f"{DB}.t", "key": {"id": 1}, "v": now, "row": {"id": 1}}
        mysql.execute("SELECT gman_do_background(%s, %s)", (FN, json.dumps(forged)))
        drained(gm)
        assert redis_rows(rds) == mysql_rows(mysql)
    assert "the row misses synced column" in log.read_text()


def test_committed_mode_reads_only_synced_tables(mysql, gm, rds, redis_server, schema, tmp_path):
    """A forged job naming a table without generated triggers (one the forger cannot read,
    or mysql.global_priv) is refused: the worker never reads it into Redis."""
    mysql.execute("CREATE TABLE IF NOT EXISTS secret (id INT PRIMARY KEY, pw VARCHAR(64))")
    mysql.execute("REPLACE INTO secret VALUES (1, 'hunter2')")
    mysql.execute("INSERT INTO t VALUES (1, 'one', 1, NULL)")
    log = tmp_path / "worker.log"
    with committed_worker(gm, redis_server, schema, log=log):
        wait_for(lambda: value_of(rds) == "one", what="the synced table")
        mysql.execute("SELECT gman_stamp()")
        now = mysql.fetchone()[0]
        forged = [{"op": "upsert", "table": f"{DB}.secret", "key": {"id": 1}, "v": now, "row": {"id": 1, "pw": "x"}},
                  {"op": "upsert", "table": "mysql.global_priv", "key": {"Host": "localhost", "User": "root"},
                   "v": now, "row": {"Host": "", "User": "", "Priv": ""}},
                  # a synced table, but a column its triggers do not send
                  {"op": "upsert", "table": f"{DB}.c", "key": {"a": 1, "b": "x"}, "v": now,
                   "row": {"a": 1, "b": "x", "x": 1, "secret": 1}}]
        for doc in forged:
            mysql.execute("SELECT gman_do_background(%s, %s)", (FN, json.dumps(doc)))
        drained(gm)
    assert sorted(k for k in rds.keys("*") if not k.endswith(b"#v")) == [f"{DB}.t:1".encode()]
    text = log.read_text()
    assert text.count(" refused: ") == 3 and f"'{DB}.secret' is not synced" in text
    assert "'mysql.global_priv' is not synced" in text and "column 'secret' is not synced" in text
    assert f"syncing 2 tables (generated triggers sending {FN}): {DB}.c, {DB}.t" in text


def test_payload_mode_refuses_a_version_from_the_future(mysql, gm, rds, redis_server):
    """A forged "v": 9999999999999999 would make the key ignore every real change after it."""
    with worker(gm, redis_server, "--max-future-skew", 60):
        mysql.execute("INSERT INTO t VALUES (1, 'one', 1, NULL)")
        wait_for(lambda: value_of(rds) == "one", what="the INSERT")
        forged = {"op": "upsert", "table": f"{DB}.t", "key": {"id": 1}, "v": 9999999999999999,
                  "row": {"id": 1, "val": "frozen", "n": 1, "b": None}}
        mysql.execute("SELECT gman_do_background(%s, %s)", (FN, json.dumps(forged)))
        drained(gm)
        assert value_of(rds) == "one"
        mysql.execute("UPDATE t SET val = 'two' WHERE id = 1")
        wait_for(lambda: value_of(rds) == "two", what="the real UPDATE after the forgery")
        # what payload mode cannot refuse: a forged image with a current version (committed mode can)
        mysql.execute("SELECT gman_do_background(%s, %s)",
                      (FN, json.dumps(dict(forged, v=time.time_ns() // 1000, row={"id": 1, "val": "forged"}))))
        wait_for(lambda: value_of(rds) == "forged", what="the forged image")
        mysql.execute("UPDATE t SET val = 'three' WHERE id = 1")
        wait_for(lambda: value_of(rds) == "three", what="the next real UPDATE")


def test_script_writes_a_hash_wider_than_luas_unpack_limit(rds):
    script = rds.register_script(APPLY)
    fields = [str(x) for i in range(5000) for x in (f"f{i}", i)]  # 10,000 values: unpack() takes ~8,000
    assert script(keys=["wide", version_key("wide")], args=["h", "1", 0, len(fields), *fields]) == 0
    assert rds.hlen("wide") == 5000 and rds.hget("wide", "f4999") == b"4999"


def test_a_key_that_is_another_keys_version_key_does_not_wedge_the_worker(gm, rds, redis_server, tmp_path):
    """Hash mode, text keys '{x}#v' then '{x}': the first one's hash sat where the second
    one's version key goes (WRONGTYPE), and the batch was retried forever."""
    base = time.time_ns() // 1000

    def job(i, key):
        return (FN, json.dumps({"op": "upsert", "table": f"{DB}.t", "key": {"id": key}, "v": base + i,
                                "row": {"id": key, "val": "x"}}).encode(), None)
    with Client(gm.address) as c:
        c.submit_many_background([job(0, "{x}#v")])
        c.submit_many_background([job(1, "{x}")] + [job(2 + i, str(i)) for i in range(20)])
    log = tmp_path / "worker.log"
    with worker(gm, redis_server, "--mode", "hash", "--batch", 1, log=log):
        drained(gm)
        assert rds.hgetall(f"{DB}.t:19") == {b"id": b"19", b"val": b"x"}
        assert rds.hgetall(f"{DB}.t:{{x}}") == {b"id": b"{x}", b"val": b"x"}
    assert log.read_text().count(" refused: ") == 1


def test_a_job_over_the_size_limit_is_failed_not_taken_forever(gm, rds, redis_server, tmp_path):
    """A job over the worker's 64 MiB limit dropped the connection; gearmand handed it out
    again on the next one, forever, and the jobs behind it waited."""
    from pygen.gearman.protocol import DEFAULT_MAX_DATA
    good = json.dumps({"op": "upsert", "table": f"{DB}.t", "key": {"id": 1}, "v": time.time_ns() // 1000,
                       "row": {"id": 1, "val": "after"}}).encode()
    with Client(gm.address) as c:
        c.submit_many_background([(FN, b"x" * (DEFAULT_MAX_DATA + 1), None), (FN, good, None)])
    log = tmp_path / "worker.log"
    with worker(gm, redis_server, log=log):
        drained(gm)
        assert value_of(rds) == "after"
    text = log.read_text()
    assert text.count(f"bytes is over the limit ({DEFAULT_MAX_DATA}); failed") == 1 and "reconnecting" not in text


def test_committed_mode_with_every_table_copies_what_its_user_can_read(mysql, gm, rds, redis_server, schema):
    """--tables '*' is the old behaviour, for the record: a forged job copies any table the
    worker's MySQL user (root here) can read."""
    mysql.execute("CREATE TABLE IF NOT EXISTS secret (id INT PRIMARY KEY, pw VARCHAR(64))")
    mysql.execute("REPLACE INTO secret VALUES (1, 'hunter2')")
    mysql.execute("SELECT gman_stamp()")
    now = mysql.fetchone()[0]
    with committed_worker(gm, redis_server, schema, "--tables", "*"):
        doc = {"op": "upsert", "table": f"{DB}.secret", "key": {"id": 1}, "v": now, "row": {"id": 1, "pw": "x"}}
        mysql.execute("SELECT gman_do_background(%s, %s)", (FN, json.dumps(doc)))
        wait_for(lambda: rds.get(f"{DB}.secret:1"), what="the copied row")
    assert json.loads(rds.get(f"{DB}.secret:1")) == {"id": 1, "pw": "hunter2"}


@pytest.mark.parametrize("change", ["UPDATE t SET val = 'new' WHERE id = 1", "DELETE FROM t WHERE id = 1"])
def test_committed_a_forged_copy_does_not_hide_an_open_change(mysql, gm, rds, redis_server, schema, change):
    """A forged copy of the committed row, stamped while a change is still open, has a newer
    version than that change: its write was skipped and Redis kept the old row until the
    row's next change. The worker sees the skipped write's key hold another image than the
    committed one and writes the row again with a stamp taken under its lock."""
    mysql.execute("INSERT INTO t VALUES (1, 'old', 1, NULL)")
    other = schema.connect()
    ocur = other.cursor()
    ocur.execute(f"USE {DB}")
    try:
        with committed_worker(gm, redis_server, schema):
            wait_for(lambda: value_of(rds) == "old", what="the INSERT")
            ocur.execute("BEGIN")
            ocur.execute(change)  # its job waits for the COMMIT
            mysql.execute("SELECT gman_stamp()")
            forged = {"op": "upsert", "table": f"{DB}.t", "key": {"id": 1}, "v": mysql.fetchone()[0],
                      "row": {"id": 1, "val": "old", "n": 1, "b": None}}
            mysql.execute("SELECT gman_do_background(%s, %s)", (FN, json.dumps(forged)))
            time.sleep(0.5)
            ocur.execute("COMMIT")
            drained(gm)
            want = "new" if change.startswith("UPDATE") else None
            wait_for(lambda: value_of(rds) == want, what="the committed change, after the forged copy")
            assert redis_rows(rds) == mysql_rows(mysql)
    finally:
        other.close()
