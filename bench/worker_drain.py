"""Benchmark: how fast `gman-udf worker` drains queued syncToRedis jobs into Redis.

Queues N payload-shaped jobs (pygen/sync/payload.py: op/table/key/v/row) in a throwaway gearmand,
then starts the worker (python -m pygen.cli worker) and times it until the queue is empty and
nothing runs; checks that Redis holds every key. Prints jobs/s, counted from the worker's
start (its start-up included) and from its first completed job. --target cluster drains into
a local 3-master Redis Cluster (pygen.sandbox.RedisCluster); --target both runs standalone
and then the cluster in the same run and prints the ratio.

--consistency committed (or both: payload, then committed, in the same run, and their ratio)
starts a MariaDB too, with a table of --jobs rows; the jobs are then queued from SQL
(gman_bulk_background of the generated triggers' payload, so each one is its committed row
as a trigger would have sent it), for both modes alike.

    python bench/worker_drain.py [--jobs 100000] [--processes 1] [--batch 500] [--mode json]
                                 [--consistency payload|committed|both] [--target standalone|cluster|both]
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pygen.gearman.client import Client  # noqa: E402
from pygen.sandbox import Gearmand, Redis, RedisCluster  # noqa: E402

FUNCTION = "syncToRedis"
TABLE = "shop.data"


def payloads(n, keys):
    base = time.time_ns() // 1000
    for i in range(n):
        k = i % keys
        row = {"id": k, "name": f"item {k}", "volume": 12.5 + i, "note": None, "qty": i}
        yield (FUNCTION, json.dumps({"op": "upsert", "table": "shop.data", "key": {"id": k},
                                     "v": base + i, "row": row}, separators=(",", ":")).encode(), None)


def queued(gm):
    return gm.status().get(FUNCTION, (0, 0, 0))


def sql_setup(rows, gm):
    """A MariaDB with shop.data of `rows` rows; returns (server, a function queueing one job per row)."""
    from common import mariadb
    from pygen.sync import schema, triggers
    db = mariadb()
    cur = db.connect().cursor()
    cur.execute("CREATE DATABASE shop")
    cur.execute("USE shop")
    cur.execute("CREATE TABLE shop.data (id INT PRIMARY KEY, name VARCHAR(64), volume DECIMAL(20,4), "
                "note VARCHAR(64), qty INT)")
    cur.execute(f"INSERT INTO shop.data SELECT seq, CONCAT('item ', seq), 12.5 + seq, NULL, seq "
                f"FROM seq_1_to_{rows}")
    cur.execute("SELECT gman_servers_set(%s)", (gm.address,))
    t = schema.read_schema(cur.connection, TABLE)
    sql = (f"SELECT gman_bulk_background('{FUNCTION}', {triggers.payload_expr(t, 'upsert')}) "
           f"FROM {t.quoted}")

    def queue():
        cur.execute(sql)
        (n,) = cur.fetchone()
        assert n == rows, (n, rows)
    return db, queue


def dbsize(redis):
    if not isinstance(redis, RedisCluster):
        return redis.client().dbsize()
    total = 0
    for node in redis.nodes:
        with node.client() as c:
            total += c.dbsize()
    return total


def flush(redis):
    if isinstance(redis, RedisCluster):
        redis.flushall()
    else:
        redis.client().flushall()


def drain(args, gms, redis, consistency, db):
    """Start a worker, time it until the queue is empty; returns jobs/s from its first job."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "pygen.cli", "worker", "--gearman", ",".join(g.address for g in gms),
           "--redis", redis.url, "--tables", TABLE, "--batch", str(args.batch), "--processes", str(args.processes),
           "--mode", args.mode, "--log-level", "WARNING", "--consistency", consistency]
    if db is not None:
        cmd += ["--mysql", f"mysql://root@localhost/shop?socket={db.socket}"]
    start = time.perf_counter()
    worker = subprocess.Popen(cmd, env=env)
    first = None
    try:
        while True:
            states = [queued(gm) for gm in gms]
            left = sum(q for q, _, _ in states)
            if first is None and left < args.jobs:
                first = time.perf_counter()
            if left == 0 and all(r == 0 for _, r, _ in states):
                break
            if worker.poll() is not None:
                sys.exit(f"worker exited with {worker.returncode}")
            time.sleep(0.01)
        end = time.perf_counter()
    finally:
        worker.terminate()
        worker.wait(30)
    n = dbsize(redis)
    expected = args.keys * 2  # data key + version key
    total, from_first = end - start, end - (first or start)
    target = "cluster" if isinstance(redis, RedisCluster) else "standalone"
    print(f"[{target}] {consistency} mode: drained {args.jobs} jobs in {total:.2f} s: {args.jobs / total:,.0f} jobs/s "
          f"(from the first job: {args.jobs / from_first:,.0f} jobs/s); redis keys: {n} (expected {expected})"
          + ("" if n == expected else "  <-- MISMATCH"), flush=True)
    return args.jobs / from_first


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--keys", type=int, default=0, help="distinct rows (default: one per job; payload mode only)")
    ap.add_argument("--processes", type=int, default=1)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--mode", default="json", choices=("json", "hash"))
    ap.add_argument("--servers", type=int, default=1, help="gearmand instances, jobs spread over them")
    ap.add_argument("--consistency", default="payload", choices=("payload", "committed", "both"))
    ap.add_argument("--target", default="standalone", choices=("standalone", "cluster", "both"))
    args = ap.parse_args()
    targets = ["standalone", "cluster"] if args.target == "both" else [args.target]
    modes = ["payload", "committed"] if args.consistency == "both" else [args.consistency]
    sql = args.consistency != "payload"
    if sql and (args.keys or args.servers != 1):
        sys.exit("--consistency committed/both: one row per job (no --keys) and one gearmand")
    args.keys = args.keys or args.jobs

    gms = [Gearmand().start() for _ in range(args.servers)]
    db = None
    try:
        if sql:
            db, queue_sql = sql_setup(args.jobs, gms[0])
        print(f"worker: {args.processes} process(es), batch {args.batch}, mode {args.mode}, "
              f"{args.servers} gearmand")
        rates = {}
        for target in targets:
            redis = (Redis() if target == "standalone" else RedisCluster()).start()
            try:
                for consistency in modes:
                    flush(redis)
                    t0 = time.perf_counter()
                    if sql:
                        queue_sql()
                    else:
                        jobs = list(payloads(args.jobs, args.keys))
                        for i, gm in enumerate(gms):
                            with Client(gm.address) as c:
                                c.submit_many_background(jobs[i::len(gms)])
                    print(f"queued {args.jobs} jobs in {time.perf_counter() - t0:.2f} s", flush=True)
                    rates[target, consistency] = drain(args, gms, redis, consistency,
                                                       db if consistency == "committed" else None)
            finally:
                redis.close()
        for target in targets:
            if len(modes) == 2:
                c, p = rates[target, "committed"], rates[target, "payload"]
                print(f"[{target}] committed / payload: {c / p:.2f}x (payload {p / c:.2f}x faster)")
        if len(targets) == 2:
            for consistency in modes:
                print(f"[{consistency}] cluster / standalone (from the first job): "
                      f"{rates['cluster', consistency] / rates['standalone', consistency]:.2f}x")
    finally:
        if db is not None:
            db.close()
        for gm in gms:
            gm.close()


if __name__ == "__main__":
    main()
