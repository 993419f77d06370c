"""Benchmark: how fast `gman-udf worker` drains queued syncToRedis jobs into Redis.

Queues N payload-shaped jobs (pygen/payload.py: op/table/key/v/row) in a throwaway gearmand,
then starts the worker (python -m pygen.worker) and times it until the queue is empty and
nothing runs; checks that Redis holds every key. Prints jobs/s, counted from the worker's
start (its start-up included) and from its first completed job. --target cluster drains into
a local 3-master Redis Cluster (pygen.sandbox.RedisCluster); --target both runs standalone
and then the cluster in the same run and prints the ratio.

    python bench/worker_drain.py [--jobs 100000] [--processes 1] [--batch 500] [--mode json]
                                 [--target standalone|cluster|both]
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

from pygen.gearman import Client  # noqa: E402
from pygen.sandbox import Gearmand, Redis, RedisCluster  # noqa: E402

FUNCTION = "syncToRedis"


def payloads(n, keys):
    base = time.time_ns() // 1000
    for i in range(n):
        k = i % keys
        row = {"id": k, "name": f"item {k}", "volume": 12.5 + i, "note": None, "qty": i}
        yield (FUNCTION, json.dumps({"op": "upsert", "table": "shop.data", "key": {"id": k},
                                     "v": base + i, "row": row}, separators=(",", ":")).encode(), None)


def queued(gm):
    return gm.status().get(FUNCTION, (0, 0, 0))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--keys", type=int, default=0, help="distinct rows (default: one per job)")
    ap.add_argument("--processes", type=int, default=1)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--mode", default="json", choices=("json", "hash"))
    ap.add_argument("--servers", type=int, default=1, help="gearmand instances, jobs spread over them")
    ap.add_argument("--target", default="standalone", choices=("standalone", "cluster", "both"))
    args = ap.parse_args()
    keys = args.keys or args.jobs
    targets = ["standalone", "cluster"] if args.target == "both" else [args.target]
    rates = {t: drain(args, keys, t) for t in targets}
    if len(rates) == 2:
        print(f"cluster / standalone (from the first job): {rates['cluster'] / rates['standalone']:.2f}x")


def dbsize(redis, target):
    if target == "standalone":
        return redis.client().dbsize()
    total = 0
    for node in redis.nodes:
        with node.client() as c:
            total += c.dbsize()
    return total


def drain(args, keys, target):
    """Drain args.jobs queued jobs into a fresh Redis (or cluster); jobs/s from the first job."""
    gms = [Gearmand().start() for _ in range(args.servers)]
    redis = (Redis() if target == "standalone" else RedisCluster()).start()
    try:
        jobs = list(payloads(args.jobs, keys))
        t0 = time.perf_counter()
        for i, gm in enumerate(gms):
            with Client(gm.address) as c:
                c.submit_many_background(jobs[i::len(gms)])
        print(f"[{target}] queued {args.jobs} jobs in {time.perf_counter() - t0:.2f} s")

        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        cmd = [sys.executable, "-m", "pygen.worker", "--gearman", ",".join(g.address for g in gms),
               "--redis", redis.url, "--tables", "shop.data", "--batch", str(args.batch), "--processes", str(args.processes),
               "--mode", args.mode, "--log-level", "WARNING"]
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
        n = dbsize(redis, target)
        expected = keys * 2  # data key + version key
        total, drained = end - start, end - (first or start)
        print(f"[{target}] worker: {args.processes} process(es), batch {args.batch}, mode {args.mode}, "
              f"{args.servers} gearmand")
        print(f"[{target}] drained {args.jobs} jobs in {total:.2f} s: {args.jobs / total:,.0f} jobs/s "
              f"(from the first job: {args.jobs / drained:,.0f} jobs/s)")
        print(f"[{target}] redis keys: {n} (expected {expected})" + ("" if n == expected else "  <-- MISMATCH"))
        return args.jobs / drained
    finally:
        redis.close()
        for gm in gms:
            gm.close()


if __name__ == "__main__":
    main()
