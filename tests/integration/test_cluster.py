"""The worker and `gman-udf verify` against a real 3-master Redis Cluster (pygen.sandbox.RedisCluster):
INSERT/UPDATE/DELETE through generated-style triggers and gearmand, two racing workers, a slot
moved (MOVED) and half-moved (ASK) under the writer, a reshard and a master restart during a
drain, verify/repair/load and reconcile across the masters (extras found by a SCAN of every
master, a newer version left alone, the scripts loaded again on a master that lost them)."""
import json

import pytest

from pygen.sandbox import RedisCluster, free_port
from pygen import cli
from pygen.sync import plan
from pygen.sync.payload import Change
from pygen.sync.redis_writer import RedisWriter

from test_reconcile import metrics, process
from test_worker import (DB, bulk_insert, committed_worker, drained, fn_status, gm, hammer, mysql,  # noqa: F401
                         mysql_rows, schema, wait_for, worker)


@pytest.fixture(scope="module")
def cluster():
    with RedisCluster() as c:  # a start failure is an error of every test here, never a skip
        yield c


@pytest.fixture
def crd(cluster):
    cluster.flushall()
    client = cluster.client()
    yield client
    client.close()


def cluster_rows(crd, prefix=f"{DB}.t:"):
    keys = [k for k in crd.scan_iter(match=prefix + "*", count=5000) if not k.endswith(b"#v")]
    values = crd.mget_nonatomic(keys) if keys else []
    return {k.decode()[len(prefix):]: json.loads(v) for k, v in zip(keys, values)}


def masters_holding(crd, keys):
    return {crd.get_node_from_key(k).port for k in keys}


def move_slot(cluster, slot, source, target, finish=True):
    """Move `slot` with its keys from master `source` to `target` as redis-cli --cluster reshard
    does (SETSLOT IMPORTING/MIGRATING, MIGRATE, SETSLOT NODE); finish=False stops after the
    keys moved, with the slot still MIGRATING/IMPORTING (the source answers ASK)."""
    src, dst = source.client(), target.client()
    src_id, dst_id = src.execute_command("CLUSTER MYID"), dst.execute_command("CLUSTER MYID")
    dst.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", src_id)
    src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", dst_id)
    while True:
        keys = src.execute_command("CLUSTER GETKEYSINSLOT", slot, 100)
        if not keys:
            break
        src.execute_command("MIGRATE", target.host, target.port, "", 0, 5000, "KEYS", *keys)
    if finish:
        for node in cluster.nodes:
            with node.client() as c:
                c.execute_command("CLUSTER SETSLOT", slot, "NODE", dst_id)
    src.close()
    dst.close()


def upsert(key, version, value):
    return plan.plan(Change("upsert", "s.t", {"id": key}, version, {"id": key, "v": value}))


# ---- the writer on its own -------------------------------------------------------------------

def test_writer_follows_moved_and_ask_and_keeps_the_guard(cluster, crd):
    writer = RedisWriter(cluster.url)
    try:
        writes = [w for i in range(200) for w in upsert(i, 100, "a")]
        assert writer.write(writes) == 0
        assert len(masters_holding(crd, [w.key for w in writes])) == 3
        for w in writes:  # the version key lives in its key's slot, so with it on one master
            assert plan.version_key(w.key) == w.version_key and crd.keyslot(w.key) == crd.keyslot(w.version_key)
        key = "s.t:7"
        slot = crd.keyslot(key)
        source = cluster.node_of(key)
        target = next(n for n in cluster.nodes if n is not source)
        move_slot(cluster, slot, source, target)  # the writer's slot map still names the source: MOVED
        assert writer.write(upsert(7, 101, "moved") + upsert(8, 101, "b")) == 0
        assert json.loads(crd.get(key))["v"] == "moved" and cluster.node_of(key) is target
        assert writer.write(upsert(7, 99, "older")) == 1  # the guard moved with the slot
        assert json.loads(crd.get(key))["v"] == "moved"

        key = "s.t:9"
        slot = crd.keyslot(key)
        source = cluster.node_of(key)
        target = next(n for n in cluster.nodes if n is not source)
        move_slot(cluster, slot, source, target, finish=False)  # keys moved, slot still MIGRATING: ASK
        assert writer.write(upsert(9, 102, "asked") + upsert(9, 98, "older")) == 1  # one call, both guarded
        with target.client() as c:
            c.execute_command("ASKING")
            assert json.loads(c.get(key))["v"] == "asked"
        assert writer.write(upsert(9, 97, "older")) == 1
        with source.client() as c:
            assert c.dbsize() > 0 and not c.execute_command("CLUSTER COUNTKEYSINSLOT", slot)
    finally:
        writer.close()
        for node in cluster.nodes:  # let the next test start from a stable map
            with node.client() as c:
                c.execute_command("CLUSTER SETSLOT", slot, "NODE", target.client().execute_command("CLUSTER MYID"))


# ---- the worker ------------------------------------------------------------------------------

def test_insert_update_delete_reach_the_cluster(mysql, gm, crd, cluster):
    with worker(gm, cluster.url):
        mysql.execute("INSERT INTO t VALUES (1, 'one', 10, x'00ff'), (2, 'two', NULL, NULL), (3, NULL, -5, 'text')")
        bulk_insert(mysql, 300, start=100)
        mysql.execute("INSERT INTO c VALUES (1, 'x', 1.5), (1, 'y', NULL), (5, 'a}b', 2.5)")  # '}': no tag
        mysql.execute("UPDATE t SET val = 'uno', n = n + 1 WHERE id = 1")
        mysql.execute("UPDATE t SET id = 30 WHERE id = 3")  # a key change: delete 3, upsert 30
        mysql.execute("DELETE FROM t WHERE id = 2 OR id BETWEEN 150 AND 199")
        mysql.execute("UPDATE t SET n = n * 2 WHERE id >= 200")
        mysql.execute("DELETE FROM c WHERE b = 'y'")
        drained(gm)
        rows = cluster_rows(crd)
        assert rows == mysql_rows(mysql) and len(rows) == 252
        assert rows["1"] == {"id": 1, "val": "uno", "n": 11, "b": {"$base64": "AP8="}}
        assert len(masters_holding(crd, [f"{DB}.t:{k}" for k in rows])) == 3
        assert crd.get(f"{DB}.t:2") is None and 0 < crd.ttl(plan.version_key(f"{DB}.t:2")) <= 86400  # tombstone
        assert json.loads(crd.get(f"{DB}.c:1:x")) == {"a": 1, "b": "x", "x": 1.5} and crd.get(f"{DB}.c:1:y") is None
        assert json.loads(crd.get(f"{DB}.c:5:a}}b")) == {"a": 5, "b": "a}b", "x": 2.5}
        assert crd.get(plan.version_key(f"{DB}.c:5:a}}b"))


def test_two_workers_racing_on_the_cluster(mysql, gm, crd, cluster, schema):
    bulk_insert(mysql, 200)
    with worker(gm, cluster.url, "--batch", 4), worker(gm, cluster.url, "--batch", 7):
        for round_ in range(3):
            hammer(schema, round_, 300)
            mysql.execute("UPDATE t SET n = n + 1")
            drained(gm)
            assert cluster_rows(crd) == mysql_rows(mysql), f"round {round_}"
        assert mysql_rows(mysql)["1"]["n"] == 1 + 3 * 601


def test_committed_mode_on_the_cluster(mysql, gm, crd, cluster, schema):
    bulk_insert(mysql, 100)
    with committed_worker(gm, cluster.url, schema, "--batch", 7):
        hammer(schema, 0, 100)
        mysql.execute("BEGIN")
        mysql.execute("UPDATE t SET val = 'rolled back' WHERE id = 2")
        mysql.execute("ROLLBACK")
        mysql.execute("DELETE FROM t WHERE id > 90")
        drained(gm)
        assert cluster_rows(crd) == mysql_rows(mysql) and len(mysql_rows(mysql)) == 90


def test_a_slot_resharded_during_a_drain(mysql, gm, crd, cluster):
    bulk_insert(mysql, 6000)
    mysql.execute("UPDATE t SET n = -n WHERE id % 2 = 0")
    source, target = cluster.nodes[0], cluster.nodes[1]
    with worker(gm, cluster.url, "--batch", 100):  # the 300 slots move while the jobs drain
        assert fn_status(gm)[0] > 0, "drained before the reshard: test nothing"
        cluster.cli("reshard", f"{source.host}:{source.port}", "--cluster-from",
                    source.client().execute_command("CLUSTER MYID"), "--cluster-to",
                    target.client().execute_command("CLUSTER MYID"), "--cluster-slots", "300", "--cluster-yes")
        drained(gm)
        assert cluster_rows(crd) == mysql_rows(mysql)


def test_a_master_restarted_during_a_drain(mysql, gm, tmp_path):
    # a dropped connection, then a master whose script cache is empty (NOSCRIPT)
    log = tmp_path / "worker.log"
    with RedisCluster(extra_args=["--appendonly", "yes"]) as durable:
        client = durable.client()
        bulk_insert(mysql, 20000)
        with worker(gm, durable.url, "--batch", 100, log=log):
            wait_for(lambda: len(cluster_rows(client)) > 2000, what="the first writes")
            durable.restart_node(0)
            assert fn_status(gm)[0] > 0, "drained before the restart: test nothing"
            drained(gm)
            assert cluster_rows(client) == mysql_rows(mysql)
        client.close()
    assert "redis: " in log.read_text()  # the worker saw the master go


# ---- verify ----------------------------------------------------------------------------------

def spoil_on_every_master(crd, rows=range(1, 101)):
    """One row's key deleted (missing), one overwritten (stale) and one extra key added, on each
    of the three masters; returns (missing, stale, extra) key lists."""
    prefix = f"{DB}.t:"
    by_port = {}
    for i in rows:
        by_port.setdefault(crd.get_node_from_key(prefix + str(i)).port, []).append(prefix + str(i))
    extra_by_port = {}
    for i in range(100000, 100100):
        extra_by_port.setdefault(crd.get_node_from_key(prefix + str(i)).port, []).append(prefix + str(i))
    assert len(by_port) == len(extra_by_port) == 3
    missing = [keys[0] for keys in by_port.values()]
    stale = [keys[1] for keys in by_port.values()]
    extra = [keys[0] for keys in extra_by_port.values()]
    for k in missing:
        crd.delete(k)
    for k in stale:
        crd.set(k, '{"stale": true}')
    for k in extra:
        crd.set(k, "{}")
    return missing, stale, extra


def test_verify_and_repair_across_the_masters(mysql, gm, crd, cluster, capsys, schema):
    bulk_insert(mysql, 100)
    with worker(gm, cluster.url):
        drained(gm)
    args = ["--redis", cluster.url, "--table", "t", "-S", schema.socket, "-u", "root", "-D", DB]
    assert cli.main(["verify", *args]) == 0
    assert capsys.readouterr().out == f"{DB}.t: 100 rows; 0 missing, 0 stale, 0 extra\n"
    prefix = f"{DB}.t:"
    missing, stale, extra = spoil_on_every_master(crd)  # the extras: a SCAN of every master finds them
    assert cli.main(["verify", *args]) == 1
    out = capsys.readouterr().out
    assert "3 missing, 3 stale, 3 extra" in out
    assert all(k in out for k in missing + stale + extra), out
    assert cli.main(["verify", *args, "--repair"]) == 0
    assert "repaired: 6 written, 0 queued as jobs, 3 deleted" in capsys.readouterr().out
    assert cli.main(["verify", *args]) == 0 and cluster_rows(crd) == mysql_rows(mysql)
    future = str(10**17)  # a forged version ahead of gman_stamp(): the RESET script, then the guarded write
    crd.set(prefix + "8", '{"id": 8}')
    crd.set(plan.version_key(prefix + "8"), future)
    crd.set(plan.version_key(prefix + "9"), future)
    assert cli.main(["verify", *args, "--repair"]) == 0
    out = capsys.readouterr().out
    assert "1 stale" in out and "2 versions ahead of gman_stamp() reset" in out, out
    assert cli.main(["verify", *args]) == 0 and cluster_rows(crd) == mysql_rows(mysql)
    cluster.flushall()
    assert cli.main(["load", *args]) == 0  # `gman-udf load` goes through the same guarded writes
    assert cli.main(["verify", *args]) == 0 and cluster_rows(crd) == mysql_rows(mysql)


# ---- reconcile -------------------------------------------------------------------------------

def test_reconcile_heals_every_master_and_keeps_a_newer_version(mysql, gm, crd, cluster, schema, monkeypatch):
    from pygen.sync import reconcile
    from pygen.sync.redis_writer import redis_client
    bulk_insert(mysql, 100)
    args = ["--redis", cluster.url, "--table", "t", "-S", schema.socket, "-u", "root", "-D", DB]
    assert cli.main(["load", *args]) == 0
    missing, stale, extra = spoil_on_every_master(crd)
    # a key a worker wrote during the pass (its version after the pass's start): not an extra to delete
    newer = f"{DB}.t:100200"
    original = reconcile.compare_extras

    def meanwhile(*a, **kw):
        stamp = schema.connect()
        crd.set(newer, '{"id": 100200}')
        crd.set(plan.version_key(newer), str(mysql_stamp(stamp)))
        stamp.close()
        return original(*a, **kw)

    monkeypatch.setattr(reconcile, "compare_extras", meanwhile)
    rec = reconcile.Reconciler([f"{DB}.t"], lambda: schema.connect(database=DB), lambda: redis_client(cluster.url),
                               rate=float("inf"), interval=0)
    assert rec.run(1) == 1  # the newer key is left alone
    report = rec.run_pass(f"{DB}.t")
    m = rec.metrics
    table = f"{DB}.t"
    assert {k: m.get("differences_total", table, k) for k in ("missing", "stale", "extra")} == \
        {"missing": 3, "stale": 3, "extra": 3 + 2}  # the newer key, an extra of both passes
    assert {k: m.get("repaired_total", table, k) for k in ("written", "deleted", "newer")} == \
        {"written": 6, "deleted": 3, "newer": 2}
    assert m.get("rows_checked_total", table) == 200 and m.get("passes_total", table) == 2
    assert m.get("errors_total", table) == 0
    text = m.render()
    assert f'gman_reconcile_repaired_total{{table="{table}",kind="deleted"}} 3' in text, text
    assert report.counts == {"missing": 0, "stale": 0, "extra": 1, "frozen": 0}
    assert crd.get(newer) == b'{"id": 100200}'
    for k in extra:
        assert crd.get(k) is None and crd.get(plan.version_key(k))  # a tombstone
    crd.delete(newer)
    assert cluster_rows(crd) == mysql_rows(mysql)
    rec.redis.close()


def mysql_stamp(conn):
    cur = conn.cursor()
    cur.execute("SELECT gman_stamp()")
    return cur.fetchone()[0]


def test_repairs_load_the_scripts_again_on_a_master_that_lost_them(mysql, gm, crd, cluster, schema):
    # a master restarted (or SCRIPT FLUSH) while a long load or repair runs: NOSCRIPT, then loaded again
    from pygen.sync import schema as schema_mod
    from pygen.sync.redis_writer import redis_client
    from pygen.sync.repair import load_into_redis
    bulk_insert(mysql, 100)

    class FlushAfterTheFirstBatch:
        def update(self, n):
            for node in cluster.nodes:
                with node.client() as c:
                    c.script_flush()

    conn, spare = schema.connect(database=DB), schema.connect(database=DB)
    redis = redis_client(cluster.url)
    t = schema_mod.read_schema(conn, f"{DB}.t")
    report = load_into_redis(conn, spare, t, redis, plan.Options(), FlushAfterTheFirstBatch(), batch=30)
    assert report.repaired["written"] == 100 and cluster_rows(crd) == mysql_rows(mysql)
    future = str(10**17)  # and the RESET script, on a master that lost it too
    crd.set(plan.version_key(f"{DB}.t:9"), future)
    FlushAfterTheFirstBatch().update(0)
    args = ["--redis", cluster.url, "--table", "t", "-S", schema.socket, "-u", "root", "-D", DB]
    assert cli.main(["verify", *args, "--repair"]) == 0
    assert crd.get(plan.version_key(f"{DB}.t:9")) != future.encode()
    redis.close()
    conn.close()
    spare.close()


def test_reconcile_command_on_the_cluster_and_its_metrics(mysql, gm, crd, cluster, schema):
    bulk_insert(mysql, 100)  # no worker: every row missing, but three stale
    spoil_on_every_master(crd)
    port = free_port()
    with process("reconcile", "--table", f"{DB}.t", "--redis", cluster.url, "--mysql",
                 f"mysql://root@localhost/{DB}?socket={schema.socket}", "--rate", "max", "--interval", 60,
                 "--metrics-port", port) as proc:
        wait_for(lambda: metrics(port).get(("passes_total", None), 0) >= 1, what="the first pass")
        m = metrics(port)
        assert proc.poll() is None
    assert {k: m[("differences_total", k)] for k in ("missing", "stale", "extra")} == \
        {"missing": 97, "stale": 3, "extra": 3}
    assert {k: m[("repaired_total", k)] for k in ("written", "deleted")} == {"written": 100, "deleted": 3}
    assert m[("rows_checked_total", None)] == 100 and ("errors_total", None) not in m
    assert cluster_rows(crd) == mysql_rows(mysql)


def test_reconcile_refills_a_master_restarted_empty(mysql, gm, schema, tmp_path):
    # no persistence: the master comes back with no keys and no scripts, on its port
    with RedisCluster() as own:
        client = own.client()
        bulk_insert(mysql, 3000)
        port = free_port()
        with process("reconcile", "--table", f"{DB}.t", "--redis", own.url, "--mysql",
                     f"mysql://root@localhost/{DB}?socket={schema.socket}", "--rate", "max", "--interval", 0.2,
                     "--metrics-port", port, log=tmp_path / "rec.log") as proc:
            wait_for(lambda: metrics(port).get(("passes_total", None), 0) >= 1, what="the first pass")
            assert cluster_rows(client) == mysql_rows(mysql)
            own.restart_node(1)
            assert len(cluster_rows(client)) < 2500
            done = metrics(port)[("passes_total", None)]
            wait_for(lambda: metrics(port).get(("passes_total", None), 0) >= done + 2, what="two more passes")
            assert cluster_rows(client) == mysql_rows(mysql)
            assert proc.poll() is None
        client.close()


def test_reconcile_waits_out_a_slot_half_moved(mysql, gm, crd, cluster, capsys, schema):
    import threading
    from pygen.sync import reconcile
    from pygen.sync.redis_writer import redis_client
    bulk_insert(mysql, 100)
    args = ["--redis", cluster.url, "--table", "t", "-S", schema.socket, "-u", "root", "-D", DB]
    assert cli.main(["load", *args]) == 0
    key = f"{DB}.t:7"
    slot = crd.keyslot(key)
    source = cluster.node_of(key)
    target = next(n for n in cluster.nodes if n is not source)
    move_slot(cluster, slot, source, target, finish=False)  # the source answers ASK for its keys
    target_id = target.client().execute_command("CLUSTER MYID")
    try:
        crd.delete(key)  # its version key moved: the repair's call has keys on both sides (TRYAGAIN)
        crd.set(f"{DB}.t:8", "{}")
        assert cli.main(["verify", *args]) == 1  # the reads follow ASK
        assert "1 missing, 1 stale, 0 extra" in capsys.readouterr().out
        rec = reconcile.Reconciler([f"{DB}.t"], lambda: schema.connect(database=DB),
                                   lambda: redis_client(cluster.url), rate=float("inf"), interval=0)
        done = []
        thread = threading.Thread(target=lambda: done.append(rec.run_pass(f"{DB}.t")), daemon=True)
        thread.start()
        wait_for(lambda: rec.metrics.get("errors_total", f"{DB}.t") >= 1, what="the repair refused mid-move")
        assert thread.is_alive()
    finally:
        for node in cluster.nodes:  # the move ends: the next retry of the pass repairs the key
            with node.client() as c:
                c.execute_command("CLUSTER SETSLOT", slot, "NODE", target_id)
    thread.join(30)
    (report,) = done
    assert report.counts["missing"] == 1 and report.repaired["newer"] == 0
    assert cli.main(["verify", *args]) == 0
    rec.redis.close()
