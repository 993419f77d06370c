"""`gman-udf verify` / `load` against the session MariaDB, Redis and gearmand.

Each test has its own table (so its own Redis key prefix) and Gearman function. Where a
worker is needed, `work` plays it with the worker's pure part (pygen/sync/plan.py plan + the
redis_scripts APPLY script), so verify is checked against what the worker writes.
"""
import json
import threading
import uuid

import pytest

from pygen import cli
from pygen.gearman.worker import Worker
from pygen.sync import compare, plan, repair, schema
from pygen.sync.payload import parse
from pygen.sync.redis_scripts import APPLY

from tests.support.servers import database_fixtures

DB = "gman_verify"


server, gearmand, cur = database_fixtures(DB)  # the module's database and its own gearmand


@pytest.fixture
def redis(redis_server):
    client = redis_server.client()
    yield client
    client.close()


@pytest.fixture
def items(cur):
    """A fresh table of 50 rows, with text, NULLs, a latin1 column and bytes."""
    name = f"items_{uuid.uuid4().hex[:8]}"
    cur.execute(f"CREATE TABLE {name} (id INT PRIMARY KEY, volume DECIMAL(20,4), name VARCHAR(100), "
                "l VARCHAR(10) CHARACTER SET latin1, b VARBINARY(4))")
    cur.executemany(f"INSERT INTO {name} VALUES (%s, %s, %s, %s, %s)",
                    [(i, None if i % 7 == 0 else i * 1.25, f"name {i}", "café", b"\xff\x00" if i % 2 else None)
                     for i in range(1, 51)])
    return name


def conn_args(server):
    return ["-S", server.socket, "-u", "root", "-D", DB]


def verify_cli(server, redis_server, *args):
    return cli.main(["verify", "--redis", redis_server.url, *args, *conn_args(server)])


def load_cli(server, *args):
    return cli.main(["load", *args, *conn_args(server)])


def route(cur, address):
    fn = f"verify_{uuid.uuid4().hex[:10]}"
    cur.execute("SELECT gman_servers_set(%s, %s)", (address, fn))
    return fn


def work(redis, address, fn, expect, timeout=5.0, template=None):
    """Be the worker for `expect` jobs of fn: the worker's plan, the worker's Lua."""
    script = redis.register_script(APPLY)
    done = []
    with Worker([address], {fn: None}) as w:
        while len(done) < expect:
            jobs = w.grab(100, timeout)
            if not jobs:
                break
            for job in jobs:
                keys, args = plan.script_args(plan.plan(parse(job.workload), plan.Options(key_template=template)))
                script(keys=keys, args=args)
            w.complete_many(jobs)
            done += jobs
    return [parse(j.workload) for j in done]


def test_load_then_verify_in_sync(server, redis_server, redis, items, capsys):
    assert verify_cli(server, redis_server, "--table", items) == 1
    assert "50 rows; 50 missing, 0 stale, 0 extra" in capsys.readouterr().out
    assert load_cli(server, "--table", items, "--redis", redis_server.url) == 0
    assert capsys.readouterr().out == f"{DB}.{items}: 50 rows written to Redis\n"
    assert verify_cli(server, redis_server, "--table", items) == 0
    assert capsys.readouterr().out == f"{DB}.{items}: 50 rows; 0 missing, 0 stale, 0 extra\n"
    assert json.loads(redis.get(f"{DB}.{items}:7")) == {"id": 7, "volume": None, "name": "name 7", "l": "café",
                                                        "b": {"$base64": "/wA="}}
    assert int(redis.get(f"{{{DB}.{items}:7}}#v")) > 10**15  # written with the worker's version guard


def test_finds_and_repairs_missing_stale_and_extra_keys(server, redis_server, redis, items, capsys):
    assert load_cli(server, "--table", items, "--redis", redis_server.url) == 0
    prefix = f"{DB}.{items}:"
    redis.delete(prefix + "5")                                   # missing
    redis.set(prefix + "7", json.dumps({"id": 7, "volume": 1}))  # stale
    redis.delete(prefix + "8")
    redis.hset(prefix + "8", "id", "8")                          # stale: the wrong type
    redis.set(prefix + "999", "{}")                              # extra: no such row
    redis.set("other:" + prefix + "1", "x")                      # not this table's: left alone
    capsys.readouterr()

    assert verify_cli(server, redis_server, "--table", items) == 1
    out = capsys.readouterr().out
    assert out.splitlines() == [f"{DB}.{items}: 50 rows; 1 missing, 2 stale, 1 extra",
                                f"  missing: {prefix}5", f"  stale: {prefix}7, {prefix}8", f"  extra: {prefix}999"]

    assert verify_cli(server, redis_server, "--table", items, "--repair") == 0
    assert "repaired: 3 written, 0 queued as jobs, 1 deleted" in capsys.readouterr().out
    assert verify_cli(server, redis_server, "--table", items) == 0
    assert redis.get(prefix + "999") is None and redis.get("other:" + prefix + "1") == b"x"
    assert json.loads(redis.get(prefix + "8"))["name"] == "name 8"


def test_hash_mode_and_key_template(server, redis_server, redis, items, capsys):
    template = f"h{items}:{{id}}"
    assert load_cli(server, "--table", items, "--redis", redis_server.url, "--mode", "hash",
                    "--key-template", template) == 0
    assert redis.hgetall(f"h{items}:7") == {b"id": b"7", b"name": b"name 7", b"l": "café".encode(), b"b": b"\xff\x00"}
    redis.hset(f"h{items}:9", "name", "wrong")
    redis.hset(f"h{items}:99", "name", "extra")
    assert verify_cli(server, redis_server, "--table", items, "--mode", "hash", "--key-template", template,
                      "--repair") == 0
    assert "0 missing, 1 stale, 1 extra" in capsys.readouterr().out
    assert verify_cli(server, redis_server, "--table", items, "--mode", "hash", "--key-template", template) == 0


def test_repair_via_gearman_queues_jobs_for_the_worker(server, redis_server, redis, items, cur, gearmand, capsys):
    fn = route(cur, gearmand.address)
    prefix = f"{DB}.{items}:"
    assert load_cli(server, "--table", items, "--redis", redis_server.url) == 0
    redis.delete(prefix + "3", prefix + "4")
    redis.set(prefix + "6", "[]")
    redis.set(prefix + "1000", "{}")
    capsys.readouterr()
    assert verify_cli(server, redis_server, "--table", items, "--repair", "--via-gearman", "--function", fn) == 0
    assert "repaired: 0 written, 3 queued as jobs, 1 deleted" in capsys.readouterr().out
    assert gearmand.status()[fn][0] == 3
    changes = work(redis, gearmand.address, fn, 3)
    assert sorted(c.key["id"] for c in changes) == [3, 4, 6]
    assert all(c.op == "upsert" and c.table == f"{DB}.{items}" and c.version > 10**15 for c in changes)
    assert verify_cli(server, redis_server, "--table", items) == 0


def test_verify_wait_sees_the_worker_catch_up(server, redis_server, redis, items, cur, gearmand, capsys):
    fn = route(cur, gearmand.address)
    thread = threading.Thread(target=work, args=(redis, gearmand.address, fn, 50, 5.0), daemon=True)
    thread.start()
    assert verify_cli(server, redis_server, "--table", items, "--repair", "--via-gearman", "--function", fn,
                      "--wait", "10") == 0
    thread.join(10)
    out = capsys.readouterr().out
    assert "50 queued as jobs" in out and out.splitlines()[-1].endswith("0 missing, 0 stale, 0 extra")


def test_load_via_gearman_is_one_statement(server, items, cur, gearmand, capsys):
    fn = route(cur, gearmand.address)
    assert load_cli(server, "--table", items, "--via-gearman", "--function", fn) == 0
    assert capsys.readouterr().out == f"{DB}.{items}: 50 rows queued as {fn} jobs\n"
    assert gearmand.status()[fn][0] == 50
    with Worker([gearmand.address], {fn: None}) as w:
        jobs = w.grab(100, 5)
        w.complete_many(jobs)
    assert len(jobs) == 50 and parse(jobs[0].workload).row["l"] == "café"


def test_triggers_worker_and_verify_agree(server, redis_server, redis, cur, gearmand, capsys):
    """The generated triggers' jobs, written by the worker's plan, are what verify expects:
    same keys, same values, composite key and all."""
    fn = route(cur, gearmand.address)
    name = f"pair_{uuid.uuid4().hex[:8]}"
    cur.execute(f"CREATE TABLE {name} (a INT, b VARCHAR(10) CHARACTER SET latin1, v DOUBLE, bin BLOB, "
                "PRIMARY KEY (a, b))")
    assert cli.main(["trigger", "--table", name, "--function", fn, "--apply", *conn_args(server)]) == 0
    cur.executemany(f"INSERT INTO {name} VALUES (%s, %s, %s, %s)",
                    [(i, f"k{i}é", i / 3, bytes([i, 255])) for i in range(1, 21)])
    cur.execute(f"UPDATE {name} SET v = -v WHERE a < 10")
    cur.execute(f"UPDATE {name} SET b = 'moved' WHERE a = 3")  # a key change: delete + upsert
    cur.execute(f"DELETE FROM {name} WHERE a >= 15")
    assert len(work(redis, gearmand.address, fn, 20 + 9 + 2 + 6)) == 37
    capsys.readouterr()
    assert verify_cli(server, redis_server, "--table", name) == 0, capsys.readouterr().out
    assert redis.get(f"{DB}.{name}:3:moved") is not None and redis.get(f"{DB}.{name}:3:k3é") is None


def test_batches_stream_through_the_table(server, redis_server, redis, items, cur):
    """compare() across batch boundaries (7 rows a batch) with a repairer on a second connection."""
    conn, spare = server.connect(database=DB), server.connect(database=DB)
    try:
        t = schema.read_schema(conn, items)
        options = plan.Options()
        report = compare.compare(conn, t, redis, options, repair.Repairer(t, redis, spare, options), batch=7)
        assert (report.rows, report.counts["missing"], report.repaired["written"]) == (50, 50, 50)
        report = compare.compare(conn, t, redis, options, batch=7)
        assert report.differences == 0
    finally:
        conn.close()
        spare.close()


def test_errors_are_one_line(server, redis_server, items, capsys):
    assert verify_cli(server, redis_server, "--table", "nope") == 2
    assert capsys.readouterr().err == f"gman-udf verify: table {DB}.nope does not exist (or you may not see it)\n"
    assert verify_cli(server, redis_server, "--table", items, "--key-template", "x:{nope}") == 2
    assert "{nope} is not a key column" in capsys.readouterr().err
    assert cli.main(["verify", "--table", items, "--redis", "redis://127.0.0.1:1/0", *conn_args(server)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gman-udf verify: ") and "Traceback" not in err
    for command in ("verify", "load"):  # a Redis Cluster no node of which answers
        assert cli.main([command, "--table", items, "--redis", "redis+cluster://127.0.0.1:1", *conn_args(server)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"gman-udf {command}: ") and "Redis Cluster cannot be connected" in err, err


FORGED = 9999999999999999  # a forged job's "v": above any gman_stamp() until the year 2286


def test_a_forged_future_version_is_found_and_repaired(server, redis_server, redis, items, capsys):
    """A forged job with a version from the future froze its key (every later real change is
    older): verify says so and exits 1, even where the value is right; --repair resets such
    version keys and writes the rows; a real change after it is written again."""
    assert load_cli(server, "--table", items, "--redis", redis_server.url) == 0
    prefix = f"{DB}.{items}:"
    script = redis.register_script(APPLY)
    good = redis.get(prefix + "4")

    def forge(key, op, *values):
        assert script(keys=[key, plan.version_key(key)], args=[op, FORGED, 0, len(values), *values]) == 0
    forge(prefix + "3", "s", '{"id": 3, "name": "forged"}')  # stale and frozen
    forge(prefix + "4", "s", good)                              # right value, frozen
    forge(prefix + "5", "d")                                    # a forged delete: missing, frozen tombstone
    forge(prefix + "998", "s", "{}")                            # extra, frozen
    capsys.readouterr()
    assert verify_cli(server, redis_server, "--table", items) == 1
    out = capsys.readouterr().out
    assert f"50 rows; 1 missing, 1 stale, 1 extra, 1 frozen (a version ahead of gman_stamp())" in out
    assert f"  frozen: {prefix}4" in out

    assert verify_cli(server, redis_server, "--table", items, "--repair") == 0
    out = capsys.readouterr().out
    assert "repaired: 3 written, 0 queued as jobs, 1 deleted, 4 versions ahead of gman_stamp() reset, 0 left alone" in out
    assert verify_cli(server, redis_server, "--table", items) == 0, capsys.readouterr().out
    assert json.loads(redis.get(prefix + "3"))["name"] == "name 3"
    version = int(redis.get(plan.version_key(prefix + "3")))
    assert 10**15 < version < FORGED
    change = parse(json.dumps({"op": "upsert", "table": f"{DB}.{items}", "key": {"id": 3}, "v": version + 1,
                               "row": {"id": 3, "name": "later"}}))
    keys, args = plan.script_args(plan.plan(change))
    assert script(keys=keys, args=args) == 0 and json.loads(redis.get(prefix + "3"))["name"] == "later"


def test_a_forged_future_version_is_repaired_via_gearman(server, redis_server, redis, items, cur, gearmand, capsys):
    fn = route(cur, gearmand.address)
    assert load_cli(server, "--table", items, "--redis", redis_server.url) == 0
    prefix = f"{DB}.{items}:"
    script = redis.register_script(APPLY)
    key = prefix + "6"
    assert script(keys=[key, plan.version_key(key)], args=["s", FORGED, 0, 1, '{"id": 6}']) == 0
    capsys.readouterr()
    assert verify_cli(server, redis_server, "--table", items, "--repair", "--via-gearman", "--function", fn) == 0
    assert "1 queued as jobs, 0 deleted, 1 versions ahead of gman_stamp() reset" in capsys.readouterr().out
    assert len(work(redis, gearmand.address, fn, 1)) == 1
    assert verify_cli(server, redis_server, "--table", items) == 0
