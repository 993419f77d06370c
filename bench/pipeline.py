"""Benchmark: the whole pipeline, MySQL -> trigger -> gearmand -> worker -> Redis.

1. drain: the worker emptying 100,000 queued jobs into Redis (bench/worker_drain.py), with 1 and
   2 worker processes;
2. latency: single-row UPDATEs at a steady rate (default 1,000/s, each its own transaction) with
   generated triggers; the time from COMMIT returning to the new value being in Redis, seen
   through Redis keyspace notifications, p50/p99, in payload and committed consistency modes;
3. early: UPDATEs held open for 20 ms before COMMIT: how often Redis showed the value before
   the commit (the seeds' design: 80-90% of single-row updates).

    python bench/pipeline.py [--rate 1000] [--seconds 10] [--jobs 100000]
"""
import argparse
import json
import random
import subprocess
import sys
import threading
import time

from common import ROOT, Gearmand, mariadb

from pygen.sandbox import Redis
from pygen.sync import schema, triggers

TABLE = "bench.data"


def drain(jobs, processes):
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "worker_drain.py"), "--jobs", str(jobs),
                          "--processes", str(processes)], capture_output=True, text=True, timeout=600)
    lines = (out.stdout + out.stderr).strip().splitlines()
    return " / ".join(line for line in lines if line.startswith(("drained", "redis keys"))) or lines[-1]


class Watcher(threading.Thread):
    """Times keys becoming the awaited value: a keyspace notification, then a GET."""

    def __init__(self, redis):
        super().__init__(daemon=True)
        self.redis, self.pending, self.lags, self.lock = redis, {}, [], threading.Lock()
        self.stop = threading.Event()
        redis.config_set("notify-keyspace-events", "K$")

    def expect(self, key, name, committed):
        with self.lock:
            self.pending[key] = (name, committed)

    def run(self):
        sub = self.redis.pubsub()
        sub.psubscribe("__keyspace@0__:bench.data:*")
        getter = self.redis
        while not self.stop.is_set():
            msg = sub.get_message(timeout=0.1)
            if not msg or msg["type"] != "pmessage":
                continue
            key = msg["channel"].decode().split(":", 1)[1]
            with self.lock:
                want = self.pending.get(key)
            if want is None:
                continue
            raw = getter.get(key)
            if raw and json.loads(raw).get("name") == want[0]:
                with self.lock:
                    if self.pending.get(key) == want:
                        del self.pending[key]
                        self.lags.append((time.monotonic() - want[1]) * 1000)


def start_worker(gm, rd, db, consistency):
    args = [sys.executable, "-m", "pygen.cli", "worker", "--gearman", gm.address, "--redis", rd.url,
            "--consistency", consistency, "--log-level", "WARNING",
            "--mysql", f"mysql://root@localhost/bench?socket={db.socket}"]  # both: the tables with triggers
    return subprocess.Popen(args, cwd=ROOT)


def drive(db, watcher, tag, rate, seconds, rows, seed, counter):
    """Single-row UPDATEs at `rate`/s on random rows, each its own transaction."""
    cur = db.connect().cursor()
    rng = random.Random(seed)
    tick, end, n = 1.0 / rate, time.monotonic() + seconds, 0
    while time.monotonic() < end:
        t0 = time.monotonic()
        n += 1
        rid = rng.randint(1, rows)
        name = f"{tag}-{seed}-{n}"  # never a value the row already has: that would queue no job
        cur.execute(f"UPDATE {TABLE} SET name = %s WHERE id = %s", (name, rid))
        watcher.expect(f"{TABLE}:{rid}", name, time.monotonic())
        time.sleep(max(0.0, tick - (time.monotonic() - t0)))
    counter.append(n)


def latency(db, gm, consistency, rate, seconds, rows=10_000, threads=2):
    rd = Redis().start()
    worker = start_worker(gm, rd, db, consistency)
    watcher = Watcher(rd.client())
    watcher.start()
    time.sleep(1.0)
    counter = []
    try:
        drivers = [threading.Thread(target=drive, args=(db, watcher, consistency, rate / threads, seconds, rows,
                                                        seed, counter)) for seed in range(threads)]
        for t in drivers:
            t.start()
        for t in drivers:
            t.join()
        n = sum(counter)
        achieved = n / seconds
        time.sleep(2.0)
        early = early_visibility(db, rd, consistency)
    finally:
        watcher.stop.set()
        worker.terminate()
        worker.wait(10)
        rd.close()
    lags = sorted(watcher.lags)
    p = lambda q: lags[min(len(lags) - 1, int(len(lags) * q))] if lags else float("nan")  # noqa: E731
    return achieved, len(lags), n, p(0.5), p(0.99), early


def early_visibility(db, rd, tag, count=100):
    """UPDATE, hold the transaction 20 ms, look at Redis, COMMIT: how often was it there early?"""
    conn = db.connect()
    cur, r = conn.cursor(), rd.client()
    early = 0
    for i in range(count):
        name = f"early-{tag}-{i}"
        cur.execute("START TRANSACTION")
        cur.execute(f"UPDATE {TABLE} SET name = %s WHERE id = %s", (name, 20_000 + i))
        time.sleep(0.02)
        raw = r.get(f"{TABLE}:{20_000 + i}")
        early += bool(raw and json.loads(raw).get("name") == name)
        cur.execute("COMMIT")
    conn.close()
    return early, count


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--jobs", type=int, default=100_000)
    args = ap.parse_args()

    print("drain (bench/worker_drain.py):")
    for processes in (1, 2):
        print(f"  {processes} worker process(es): {drain(args.jobs, processes)}")

    gm = Gearmand().start()
    db = mariadb()
    try:
        cur = db.connect().cursor()
        cur.execute("CREATE DATABASE bench")
        cur.execute("USE bench")
        cur.execute("CREATE TABLE data (id INT PRIMARY KEY, volume DECIMAL(20,4), name VARCHAR(100))")
        cur.execute("INSERT INTO data SELECT seq, seq, CONCAT('item ', seq) FROM seq_1_to_20100")
        cur.execute("SELECT gman_servers_set(%s)", (gm.address,))
        triggers.apply(cur.connection, schema.read_schema(cur.connection, TABLE))
        print(f"latency, single-row UPDATEs at {args.rate}/s for {args.seconds:g} s (commit returned -> in Redis):")
        for consistency in ("payload", "committed"):
            achieved, seen, sent, p50, p99, (early, count) = latency(db, gm, consistency, args.rate, args.seconds)
            print(f"  {consistency:9s}: {achieved:6.0f} updates/s, {seen}/{sent} timed, p50 {p50:6.2f} ms, "
                  f"p99 {p99:6.2f} ms; visible before COMMIT: {early}/{count}")
    finally:
        db.close()
        gm.close()


if __name__ == "__main__":
    main()
