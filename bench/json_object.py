"""Benchmark: udf_json_object vs native JSON_OBJECT vs the CONCAT floor over 100,000 rows.

    python bench/json_object.py [--rows N] [--repeat R]
"""
import argparse

from common import mariadb, report, timed

COLS = ["id", "volume", "name", "created", "price", "qty"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    db = mariadb()
    try:
        cur = db.connect().cursor()
        cur.execute("CREATE DATABASE bench")
        cur.execute("USE bench")
        cur.execute("CREATE TABLE data (id INT PRIMARY KEY, volume DECIMAL(20,4), name VARCHAR(100),"
                    " created DATETIME, price DOUBLE, qty BIGINT)")
        cur.execute(f"INSERT INTO data SELECT seq, seq * 1.25, CONCAT('item \"', seq, '\" ✓'),"
                    f" '2024-01-01' + INTERVAL seq SECOND, seq / 7, seq * 1000 FROM seq_1_to_{args.rows}")
        cols = ", ".join(COLS)
        queries = {
            "CONCAT (floor)": f"SELECT SUM(LENGTH(CONCAT({cols}))) FROM data",
            "native JSON_OBJECT": "SELECT SUM(LENGTH(JSON_OBJECT(" + ", ".join(f"'{c}', {c}" for c in COLS) + "))) FROM data",
            "udf_json_object": f"SELECT SUM(LENGTH(udf_json_object({cols}))) FROM data",
        }
        rows = []
        for name, sql in queries.items():
            cur.execute(sql)  # warm the buffer pool
            best, med = timed(lambda: (cur.execute(sql), cur.fetchall()), args.repeat)
            rows.append((name, best, med))
        print(f"{args.rows} rows, best of {args.repeat} (MariaDB {db.version}):")
        report(rows, "CONCAT (floor)")
        t = dict((n, b) for n, b, _ in rows)
        print(f"  udf_json_object / native JSON_OBJECT = {t['udf_json_object'] / t['native JSON_OBJECT']:.2f}x"
              f" (target <= 0.8x); / CONCAT = {t['udf_json_object'] / t['CONCAT (floor)']:.2f}x (target <= 1.5x)")
    finally:
        db.close()


if __name__ == "__main__":
    main()
