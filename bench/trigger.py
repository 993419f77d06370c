"""Benchmark: UPDATE of 100,000 rows with the seeds' trigger, confirmed and pipelined, against
the bare UPDATE, gman_bulk_background and the raw ceiling of one persistent connection doing
SUBMIT_JOB_BG + wait (pygen.gearman.client.Client), all measured in this run.

    python bench/trigger.py [--rows N] [--window W]
"""
import argparse
import time

from common import Gearmand, mariadb

from pygen.gearman.client import Client

TRIGGER = ("CREATE TRIGGER datatoredis AFTER UPDATE ON data FOR EACH ROW "
           "SET @ret = gman_do_background('syncToRedis', udf_json_object(NEW.id AS id, NEW.volume AS volume))")


def prepare(db, rows, gearmand, trigger):
    cur = db.connect().cursor()
    cur.execute("DROP DATABASE IF EXISTS bench")
    cur.execute("CREATE DATABASE bench")
    cur.execute("USE bench")
    cur.execute("CREATE TABLE data (id INT PRIMARY KEY, volume DECIMAL(20,4))")
    cur.execute(f"INSERT INTO data SELECT seq, seq FROM seq_1_to_{rows}")
    cur.execute("SELECT gman_servers_set(%s)", (gearmand.address,))
    if trigger:
        cur.execute(TRIGGER)
    cur.execute("UPDATE data SET volume = volume + 0")  # warm up; changes nothing, fires nothing
    return cur


def time_update(cur):
    t = time.perf_counter()
    cur.execute("UPDATE data SET volume = volume + 1")
    return time.perf_counter() - t


def queued(gm):
    return gm.status().get("syncToRedis", (0,))[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--window", type=int, default=256, help="pipeline_window for the pipelined run")
    args = ap.parse_args()
    n = args.rows
    results = {}
    gm = Gearmand().start()
    confirmed_db = mariadb()
    pipelined_db = mariadb(env={"GMAN_UDF_PIPELINE_WINDOW": str(args.window)})
    try:
        cur = prepare(confirmed_db, n, gm, trigger=False)
        results["bare UPDATE"] = time_update(cur)

        cur = prepare(confirmed_db, n, gm, trigger=True)
        gm.restart()
        results["trigger, confirmed"] = time_update(cur)
        assert queued(gm) == n, (queued(gm), n)

        cur = prepare(pipelined_db, n, gm, trigger=True)
        gm.restart()
        results[f"trigger, pipelined (window {args.window})"] = time_update(cur)
        cur.execute("SELECT gman_do_background('syncToRedis', 'flush')")  # reads what is left
        time.sleep(0.2)
        assert queued(gm) >= n, (queued(gm), n)

        gm.restart()
        t = time.perf_counter()
        cur.execute("SELECT gman_bulk_background('syncToRedis', udf_json_object(id AS id, volume AS volume)),"
                    " gman_last_error() FROM data")
        results["gman_bulk_background"] = time.perf_counter() - t
        count, why = cur.fetchone()
        assert count == n and queued(gm) == n, (count, why, queued(gm), n)

        gm.restart()
        client = Client([gm.address])
        payloads = [b'{"id":%d,"volume":%d}' % (i, i) for i in range(n)]
        t = time.perf_counter()
        for p in payloads:
            client.submit_background("syncToRedis", p)
        results["raw ceiling (1 connection, submit + wait)"] = time.perf_counter() - t
        client.close()
    finally:
        confirmed_db.close()
        pipelined_db.close()
        gm.close()

    bare = results["bare UPDATE"]
    ceiling = results["raw ceiling (1 connection, submit + wait)"]
    width = max(map(len, results))
    print(f"{n} rows (MariaDB {confirmed_db.version}, gearmand in-memory queue, loopback):")
    for name, secs in results.items():
        print(f"  {name:<{width}}  {secs:7.3f} s  {secs / bare:7.2f}x bare  {n / secs:9.0f} rows/s")
    confirmed = results["trigger, confirmed"]
    pipelined = results[f"trigger, pipelined (window {args.window})"]
    print(f"  confirmed / raw ceiling = {confirmed / ceiling:.2f}x (target <= 1.3x)")
    print(f"  pipelined / bare = {pipelined / bare:.2f}x (target <= 10x)")
    print(f"  bulk / bare = {results['gman_bulk_background'] / bare:.2f}x (target <= 3x)")
    print("  anchor (gearman-mysql-udf 0.6, one TCP connect per row, measured earlier): 25.0 s, 89x bare")


if __name__ == "__main__":
    main()
