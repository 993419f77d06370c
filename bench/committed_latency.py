"""Benchmark: committed mode's latency from COMMIT to Redis, by how long the transaction was open.

C connections each run BEGIN; UPDATE one row (its own, generated triggers); hold H seconds;
COMMIT (one after the other). The time from each COMMIT returning to its row's value in
Redis is timed through Redis keyspace notifications (a separate process, same monotonic
clock); the worker may write it between the server committing and the client seeing COMMIT
return (a negative time). A value in Redis before its COMMIT was sent is reported ("early").
A first round at the largest concurrency warms the worker up (its waiters open their
MySQL connections at the first burst of open transactions).

    python bench/committed_latency.py [--holds 0,0.05,0.3,1,3] [--concurrency 1,100] [--rounds 20]
        [-- worker args...]
"""
import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import time

from common import ROOT, Gearmand, mariadb

from pygen.sandbox import Redis, free_port
from pygen.sync import schema, triggers

TABLE = "bench.t"


def subscriber(host, port, conn):
    """Child process: every data key's 'set' event as (key, monotonic time), sent on request."""
    import redis
    client = redis.Redis(host=host, port=port)
    sub = client.pubsub()
    sub.psubscribe(f"__keyspace@0__:{TABLE}:*")
    events = []
    conn.send("ready")
    while True:
        msg = sub.get_message(timeout=0.05)
        if msg and msg["type"] == "pmessage":
            events.append((msg["channel"].decode().split(":", 1)[1], time.monotonic()))
        if conn.poll():
            if conn.recv() == "stop":
                return
            conn.send(events)
            events = []


def metrics(port):
    """The worker's counters: {name: value} from its Prometheus text (labels dropped: one mode)."""
    import urllib.request
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    lines = (line.split() for line in text.splitlines() if not line.startswith("#"))
    return {k.split("{")[0]: float(v) for k, v in lines}


def quantile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))] if values else float("nan")


def one_round(conns, hold, tag, rds, sub):
    """Open len(conns) transactions, hold them, COMMIT each: ([ms from COMMIT returning to the
    value in Redis], how many were in Redis before their COMMIT was sent)."""
    committed = {}
    for i, cur in enumerate(conns, 1):
        cur.execute("BEGIN")
        cur.execute(f"UPDATE {TABLE} SET val = %s WHERE id = %s", (f"{tag}-{i}", i))
    time.sleep(hold)
    for i, cur in enumerate(conns, 1):
        sent = time.monotonic()
        cur.execute("COMMIT")
        committed[i] = sent, time.monotonic()
    # every value in Redis (bounded: a slow worker shows as a timeout, not a hang)
    deadline = time.monotonic() + 30 + 2 * hold
    keys = [f"{TABLE}:{i}" for i in committed]
    while time.monotonic() < deadline:
        vals = rds.mget(keys)
        if all(v is not None and json.loads(v)["val"] == f"{tag}-{i}" for i, v in zip(committed, vals)):
            break
        time.sleep(0.01)
    else:
        raise SystemExit(f"round {tag}: not every value reached Redis within 30 s")
    time.sleep(0.05)  # the last notifications
    sub.send("get")
    events = sub.recv()
    first = {}
    for key, t in events:
        first.setdefault(int(key.rsplit(":", 1)[1]), t)
    lat, early = [], 0
    for i, (t_sent, t_returned) in committed.items():
        early += first[i] < t_sent  # in Redis before its COMMIT was sent: never committed-mode
        lat.append((first[i] - t_returned) * 1000)  # < 0: in Redis before the client saw COMMIT return
    return lat, early


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--holds", default="0,0.05,0.3,1,3", help="seconds each transaction is held open")
    ap.add_argument("--concurrency", default="1,100", help="transactions open at once")
    ap.add_argument("--rounds", type=int, default=20, help="rounds per (hold, concurrency) at concurrency 1")
    ap.add_argument("--samples", type=int, default=300, help="minimum samples per (hold, concurrency)")
    ap.add_argument("worker_args", nargs="*", help="extra worker arguments (after --)")
    args = ap.parse_args()
    holds = [float(h) for h in args.holds.split(",")]
    levels = [int(c) for c in args.concurrency.split(",")]

    gm = Gearmand().start()
    db = mariadb(extra_args=["--max-connections=1000"])
    rd = Redis().start()
    worker = None
    parent, child = multiprocessing.Pipe()
    sub = multiprocessing.Process(target=subscriber, args=(rd.host, rd.port, child), daemon=True)
    try:
        cur = db.connect().cursor()
        cur.execute("CREATE DATABASE bench")
        cur.execute("USE bench")
        cur.execute("CREATE TABLE t (id INT PRIMARY KEY, val VARCHAR(64), n INT)")
        cur.execute(f"INSERT INTO t SELECT seq, 'start', seq FROM seq_1_to_{max(levels)}")
        cur.execute("SELECT gman_servers_set(%s)", (gm.address,))
        triggers.apply(cur.connection, schema.read_schema(cur.connection, TABLE))
        rds = rd.client()
        rds.config_set("notify-keyspace-events", "K$")
        sub.start()
        assert parent.recv() == "ready"

        port = free_port()
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        cmd = [sys.executable, "-m", "pygen.cli", "worker", "--gearman", gm.address, "--redis", rd.url,
               "--consistency", "committed", "--mysql", f"mysql://root@localhost/bench?socket={db.socket}",
               "--log-level", "WARNING", "--metrics-port", str(port), *args.worker_args]
        worker = subprocess.Popen(cmd, env=env)
        while gm.status().get("syncToRedis", (0, 0, 0))[2] < 1:
            time.sleep(0.05)
        conns = [db.connect().cursor() for _ in range(max(levels))]
        for c in conns:
            c.execute("USE bench")
        # warm-up: the worker opens its waiters' connections at the first burst of open transactions
        one_round(conns, 0.2, "warm", rds, parent)

        print(f"commit -> Redis, committed mode ({' '.join(args.worker_args) or 'worker defaults'}), ms:")
        print(f"{'held':>6} {'open':>5} {'n':>5} {'p50':>8} {'p99':>8} {'max':>8}  early  waits polls")
        results = []
        for c in levels:
            for hold in holds:
                rounds = max(1, min(args.rounds, -(-args.samples // c))) if c > 1 else args.rounds
                lat, early = [], 0
                before = metrics(port)
                for r in range(rounds):
                    got, e = one_round(conns[:c], hold, f"h{hold}-c{c}-r{r}", rds, parent)
                    lat += got
                    early += e
                after = metrics(port)
                waits, polls = (after[k] - before[k] for k in ("gman_worker_waits_total", "gman_worker_retries_total"))
                row = (hold, c, len(lat), quantile(lat, 0.5), quantile(lat, 0.99), max(lat), early)
                results.append(row)
                print(f"{hold:6g} {c:5d} {len(lat):5d} {row[3]:8.2f} {row[4]:8.2f} {row[5]:8.2f}  {early:5d} "
                      f"{waits:5.0f} {polls:5.0f}", flush=True)
        worst = max(r[4] for r in results)
        print(f"worst p99: {worst:.2f} ms; values seen before COMMIT: {sum(r[6] for r in results)}")
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(30)
        if sub.is_alive():
            parent.send("stop")
            sub.join(5)
        rd.close()
        db.close()
        gm.close()


if __name__ == "__main__":
    main()
