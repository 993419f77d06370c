"""Benchmark: `gman-udf reconcile` pass times and convergence after a killed gearmand.

On throwaway servers: a table of --rows rows with generated triggers, Redis loaded.
1. one pass over the in-sync table at the default rate and at max rate (in-process Reconciler);
2. the kill scenario: a worker running, the reconciler running at --rate; 10,000 changes are
   queued while the worker is away, the in-memory gearmand is SIGKILLed (the jobs are lost)
   and restarted, the worker comes back and a stream of updates goes on; reports the time
   from the kill to the end of the first full pass started after it, and the differences
   (verify's comparison) once the worker has drained.

    python bench/reconcile.py [--rows 100000] [--rate 2000]
"""
import argparse
import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request

from common import ROOT, Gearmand, mariadb  # noqa: E402

from pygen import mysql  # noqa: E402
from pygen.sandbox import Redis, free_port  # noqa: E402
from pygen.sync import reconcile, schema, triggers  # noqa: E402
from pygen.sync.compare import compare  # noqa: E402

DB, FN = "bench_rec", "syncToRedis"
ENV = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def passes(port):
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("gman_reconcile_passes_total{"):
            return float(line.split()[-1])
    return 0


def lost_repaired(redis, rows):
    """Which of the lost changes Redis shows: the 9,000 updates, 500 inserts, 500 deletes."""
    def values(ids):
        return redis.mget([f"{DB}.t:{i}" for i in ids])
    return {"updates": all(v is not None and b'"changed"' in v for v in values(range(1, 9001))),
            "inserts": all(v is not None for v in values(range(rows + 1, rows + 501))),
            "deletes": all(v is None for v in values(range(rows - 499, rows + 1)))}


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def one_pass(db, redis, rate):
    """(pass seconds, rows, mariadbd CPU seconds, this process's CPU seconds) of one pass."""
    opts = mysql.ConnOptions.from_dsn(f"mysql://root@localhost/{DB}?socket={db.socket}")
    rec = reconcile.Reconciler([f"{DB}.t"], opts.connect, lambda: redis, rate=rate, interval=0)
    mysql_cpu, own_cpu = cpu_seconds(db.pid), time.process_time()
    rec.run(1)
    return (rec.metrics.get("pass_seconds", f"{DB}.t"), rec.metrics.get("rows_checked_total", f"{DB}.t"),
            cpu_seconds(db.pid) - mysql_cpu, time.process_time() - own_cpu)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--rate", type=float, default=reconcile.DEFAULT_RATE)
    args = ap.parse_args()
    db, gm, rs = mariadb(), Gearmand().start(), Redis().start()
    redis = rs.client()
    try:
        conn = db.connect()
        cur = conn.cursor()
        cur.execute(f"CREATE DATABASE {DB}")
        cur.execute(f"USE {DB}")
        cur.execute("CREATE TABLE t (id INT PRIMARY KEY, name VARCHAR(40), volume DECIMAL(12,2), n INT)")
        cur.execute(f"INSERT INTO t SELECT seq, CONCAT('item ', seq), seq / 4, seq FROM seq_1_to_{args.rows}")
        triggers.apply(conn, schema.read_schema(conn, f"{DB}.t"), FN)
        cur.execute("SELECT gman_servers_set(%s, %s)", (gm.address, FN))
        t, n, _, _ = one_pass(db, redis, math.inf)
        print(f"initial load (every row missing) at max rate: {t:.2f} s for {n:.0f} rows")
        for label, rate in (("max rate", math.inf), (f"default rate ({reconcile.DEFAULT_RATE:.0f} rows/s)",
                                                     reconcile.DEFAULT_RATE)):
            t, n, mysql_cpu, own_cpu = one_pass(db, redis, rate)
            print(f"pass over {n:.0f} in-sync rows at {label}: {t:.2f} s ({n / t:.0f} rows/s); CPU: mariadbd "
                  f"{mysql_cpu:.2f} s ({100 * mysql_cpu / t:.0f}% of a core), reconciler {own_cpu:.2f} s "
                  f"({100 * own_cpu / t:.0f}%)")

        port = free_port()
        dsn = f"mysql://root@localhost/{DB}?socket={db.socket}"
        rec = subprocess.Popen([sys.executable, "-m", "pygen.cli", "reconcile", "--table", f"{DB}.t", "--redis", rs.url,
                                "--mysql", dsn, "--rate", str(args.rate), "--interval", "0",
                                "--metrics-port", str(port), "--log-level", "WARNING"], env=ENV)
        worker_cmd = [sys.executable, "-m", "pygen.cli", "worker", "--gearman", gm.address, "--redis", rs.url,
                      "--tables", f"{DB}.t", "--log-level", "WARNING"]
        try:
            time.sleep(5)  # the reconciler is mid-pass when the jobs are lost
            cur.execute("UPDATE t SET n = n + 1, name = 'changed' WHERE id <= 9000")
            cur.execute(f"DELETE FROM t WHERE id > {args.rows - 500}")
            cur.execute(f"INSERT INTO t SELECT seq, 'new', 0, 0 FROM seq_{args.rows + 1}_to_{args.rows + 500}")
            queued = gm.status().get(FN, (0, 0, 0))[0]
            gm.kill(signal.SIGKILL)
            killed, lost_at = time.monotonic(), passes(port)
            gm.start()
            print(f"gearmand SIGKILLed with {queued} jobs queued, restarted empty")
            worker = subprocess.Popen(worker_cmd, env=ENV)
            stop = threading.Event()

            def stream():
                c = db.connect(database=DB).cursor()
                while not stop.wait(0.005):
                    c.execute("UPDATE t SET n = n + 1 WHERE id = %s", (random.randint(1, args.rows),))
            threading.Thread(target=stream, daemon=True).start()
            seen = {}
            while passes(port) < lost_at + 2:
                for what, done in lost_repaired(redis, args.rows).items():
                    if done and what not in seen:
                        seen[what] = time.monotonic() - killed
                time.sleep(0.25)
            converged = time.monotonic() - killed
            for what in ("updates", "inserts", "deletes"):
                print(f"  the lost {what} were all in Redis {seen.get(what, math.nan):.1f} s after the kill")
            stop.set()
            time.sleep(1)
            while gm.status().get(FN, (0, 0, 0))[:2] != (0, 0):
                time.sleep(0.1)
            report = compare(db.connect(database=DB), schema.read_schema(conn, f"{DB}.t"), redis)
            print(f"kill -> end of the first full pass started after it: {converged:.1f} s at {args.rate:.0f} rows/s "
                  f"(bound: rest of the pass under way + one pass = at most 2 x {(args.rows + 10000) / args.rate:.0f} s); "
                  f"differences then (worker drained): {report.differences}")
            worker.send_signal(signal.SIGTERM)
            worker.wait(20)
        finally:
            rec.send_signal(signal.SIGTERM)
            print(f"reconciler exit code after SIGTERM: {rec.wait(30)}")
    finally:
        redis.close()
        for s in (rs, gm, db):
            s.close()


if __name__ == "__main__":
    main()
