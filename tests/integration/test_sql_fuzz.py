"""Fuzz every function of the catalog through SQL: random argument types, counts and sizes, in
scalar calls, multi-row SELECTs, GROUP BY / ROLLUP / window forms and triggers. Every call must
return or fail with an SQL error (never a lost connection); mariadbd must answer after every
batch; and, with the plugin built under AddressSanitizer + UBSan (the default: GMAN_FUZZ_ASAN=0
uses the wheel's plain library), no sanitizer report may name our code.

Seeded: the seed is printed and put in every failure message; GMAN_FUZZ_SEED=<n> replays a run,
GMAN_FUZZ_CALLS=<n> changes its length (default 3000).
"""
import os
import random
import subprocess
import threading
import time

import MySQLdb
import pytest

from pygen.plugin import catalog
from pygen.sandbox import Gearmand
from tests.support.gearman import running_worker
from tests.support.servers import start_private_mariadb
from tests.support.sql import DB
from test_gman_asan import build_sanitized, ours, sanitizer_reports

CALLS = int(os.environ.get("GMAN_FUZZ_CALLS", "3000"))
BATCH = 50
LOST = {2006, 2013, 2055}  # server gone, lost connection: a crash or a wedge
WORKER_FUNCTIONS = ("fz_echo", "fz_num")

SCALARS = [
    "0", "1", "-1", "9223372036854775807", "-9223372036854775808", "18446744073709551615", "4730",
    "1.5", "-0.000001", "99999999999999999999999999999999999.999999999999999999999999999999", "0.0",
    "1e308", "-1e308", "1e-308", "2.2250738585072014e-308", "0.1e0", "-0e0",
    "NULL", "''", "'x'", "'fz_echo'", "'fz_num'", "'127.0.0.1:1'", "'{gearmand}'", "'{gearmand},127.0.0.1:1'",
    "'[::1]:4730'", "'localhost'", "'bad list,,'", "'h:0'", "'it''s \"q\" \\\\ \\t'", "'é😀'", "_latin1 x'e9ff'",
    "x'00'", "x'00ff00ff'", "UNHEX('00010203')", "CAST('a\\0b' AS BINARY)", "REPEAT('ab', 200)",
    "REPEAT(x'00', 300)", "DATE'2024-02-29'", "TIMESTAMP'2024-01-02 03:04:05.123456'", "TIME'-838:59:59'",
    "NOW(6)", "CURDATE()", "JSON_OBJECT('a', 1, 'b', JSON_ARRAY(1, 'x'))", "'{\"a\":[1,2,{\"b\":null}]}'",
    "'[' ", "CAST(1 AS DECIMAL(65,30))", "CAST(-2 AS UNSIGNED)", "b'101'", "TRUE", "@fz_var", "@fz_undefined",
    "(SELECT 1)", "(SELECT 'x')", "PI()", "RAND(7)", "CONCAT('f', 1)",
]
HUGE = ["REPEAT('x', 70000)", "REPEAT(x'ff', 300000)", "REPEAT('é', 1000000)", "REPEAT('y', 3000000)"]
ROWISH = ["ROW(1, 2)", "(1, 'a')", "(SELECT 1, 2)"]
COLUMNS = ["fz.i", "fz.u", "fz.d", "fz.f", "fz.fl", "fz.v", "fz.t", "fz.b", "fz.dt", "fz.ts", "fz.tm", "fz.j",
           "fz.bit5", "fz.e", "fz.st", "fz.id"]
TRIGGER_COLUMNS = [c.replace("fz.", "NEW.") for c in COLUMNS] + [c.replace("fz.", "OLD.") for c in COLUMNS]
WINDOWS = ["OVER ()", "OVER (ORDER BY fz.id)", "OVER (PARTITION BY fz.id % 2)", "OVER (PARTITION BY fz.id % 2 ORDER BY fz.id)",
           "OVER (ORDER BY fz.id ROWS BETWEEN 1 PRECEDING AND CURRENT ROW)",
           "OVER (ORDER BY fz.id ROWS BETWEEN CURRENT ROW AND UNBOUNDED FOLLOWING)",
           "OVER (ORDER BY fz.id ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)",
           "OVER (ORDER BY fz.id RANGE BETWEEN 1 PRECEDING AND 2 FOLLOWING)"]


class Fuzzer:
    def __init__(self, seed, gearmand):
        self.rng = random.Random(seed)
        self.gearmand = gearmand
        self.names = [f.name for f in catalog.FUNCTIONS]
        self.aggregates = [f.name for f in catalog.FUNCTIONS if f.aggregate]

    def scalar(self, columns, depth):
        r = self.rng.random()
        if columns and r < 0.3:
            return self.rng.choice(columns)
        if r < 0.04:
            return self.rng.choice(HUGE)
        if r < 0.07:
            return self.rng.choice(ROWISH)
        if r < 0.15 and depth < 2:  # a nested call of one of ours
            name = self.rng.choice([n for n in self.names if n not in self.aggregates])
            return self.call(name, columns, depth + 1)
        return self.rng.choice(SCALARS).replace("{gearmand}", self.gearmand.address)

    def call(self, name, columns, depth=0):
        f = catalog.by_name(name)
        if self.rng.random() < 0.7:  # mostly a count the function accepts, sometimes any
            hi = f.max_args if f.max_args is not None else 8
            n = self.rng.randint(f.min_args, hi)
        else:
            n = self.rng.randint(0, 12)
        args = []
        for i in range(n):
            a = self.scalar(columns, depth)
            if i == 0 and name.startswith("gman_") and name not in ("gman_servers_set",) and self.rng.random() < 0.5:
                a = self.rng.choice(["'fz_echo'", "'fz_num'", "'fz_none'", "CONCAT('fz_', fz.id)" if columns else "'fz_x'"])
            if name == "gman_servers_set" and self.rng.random() < 0.5:  # lists that parse, names that vary
                a = (self.rng.choice(["'{g}'", "'127.0.0.1:1,{g}'", "'localhost:1'"]).replace("{g}", self.gearmand.address)
                     if i == 0 else self.rng.choice(["CONCAT('fzf', seq)", "CONCAT('fzf', fz.id)", "fz.v", "'fz_echo'"]
                                                     if columns else ["'fz_echo'", "'fz_num'"]))
                if "seq" in a and "seq" not in columns or "fz." in a and "fz.id" not in columns:
                    a = "'fz_echo'"
            if "object" in name and self.rng.random() < 0.7:
                a += self.rng.choice([" AS k", " AS json_k", " AS `a b`", f" AS k{i}"])
            args.append(a)
        return f"{name}({', '.join(args)})"

    def statement(self):
        """(sql, kind): one statement calling one function of the catalog."""
        name = self.rng.choice(self.names)
        shape = self.rng.random()
        if name in self.aggregates or (shape < 0.05):
            c = self.call(name, COLUMNS)
            form = self.rng.choice(["plain", "group", "rollup", "rollup2", "window", "window", "having"])
            if form == "plain":
                return f"SELECT {c} FROM fz", "aggregate"
            if form == "group":
                return f"SELECT fz.id % 3, {c} FROM fz GROUP BY fz.id % 3", "aggregate"
            if form == "rollup":
                return f"SELECT fz.id % 2, {c} FROM fz GROUP BY fz.id % 2 WITH ROLLUP", "aggregate"
            if form == "rollup2":
                return f"SELECT fz.id % 2, fz.id % 3, {c} FROM fz GROUP BY fz.id % 2, fz.id % 3 WITH ROLLUP", "aggregate"
            if form == "having":
                return f"SELECT fz.id % 2, {c} AS n FROM fz GROUP BY fz.id % 2 HAVING n IS NULL OR n >= 0", "aggregate"
            return f"SELECT fz.id, {c} {self.rng.choice(WINDOWS)} FROM fz", "window"
        if shape < 0.45:
            return f"SELECT {self.call(name, [])}", "scalar"
        if shape < 0.8:
            return f"SELECT fz.id, {self.call(name, COLUMNS)} FROM fz", "rows"
        if shape < 0.9:  # gman_servers_set over more rows than there are route slots
            n = self.rng.randint(1, 100 if name == "gman_servers_set" else 40)
            return f"SELECT {self.call(name, ['seq'])} FROM seq_1_to_{n}", "rows"
        return self.call(name, TRIGGER_COLUMNS), "trigger"


def setup_tables(cur):
    cur.execute(f"USE {DB}")
    cur.execute("CREATE TABLE fz (id INT PRIMARY KEY, i INT, u BIGINT UNSIGNED, d DECIMAL(65,30), f DOUBLE, "
                "fl FLOAT, v VARCHAR(100), t MEDIUMTEXT, b MEDIUMBLOB, dt DATE, ts DATETIME(6), tm TIME, j JSON, "
                "bit5 BIT(5), e ENUM('a','b'), st SET('x','y'))")
    cur.execute("INSERT INTO fz VALUES "
                "(1, -2147483648, 18446744073709551615, -1.5, 1e308, 1.1, 'a\\tb', REPEAT('t', 5000), x'00ff00', "
                "'2024-02-29', '2024-01-02 03:04:05.5', '-838:59:59', '{\"a\":1}', b'10101', 'a', 'x,y'), "
                "(2, 0, 0, 0, -0e0, -1e-30, '', '', '', '1000-01-01', '9999-12-31 23:59:59', '00:00:00', '[]', "
                "b'0', 'b', ''), "
                "(3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL), "
                "(4, 2147483647, 1, 12345678901234567890.123456789, 2.2250738585072014e-308, 3.4e38, 'é😀', "
                "'{\"json\":true}', REPEAT(x'00', 1000), '2000-01-01', NOW(6), '12:00:00', 'null', b'11111', 'a', 'y')")
    cur.execute("CREATE TABLE tr LIKE fz")
    cur.execute("INSERT INTO tr SELECT * FROM fz")


def concurrent_list_changes(db, gearmand, seed, seconds=3.0):
    """Streams and single jobs while another session keeps replacing the default list with
    another name of the same gearmand: each replacement frees the server entry no list names
    any more, while a stream may still hold a connection of it. A stream that used a freed
    entry crashed mariadbd here (and ASan names the use after free)."""
    names = [gearmand.address, gearmand.address.replace("127.0.0.1", "127.1")]  # two entries, one server
    stop, failures, done = threading.Event(), [], []
    conn = db.connect()
    for fn in ("fz_num", "fz_echo"):  # what the fuzz set for them (fz_conc it never names: the default list)
        conn.cursor().execute("SELECT gman_servers_set(%s, %s)", (gearmand.address, fn))
    conn.close()

    def loop(statements):
        conn = db.connect(read_timeout=60, database=DB)
        cur = conn.cursor()
        try:
            i = ok = 0
            while not stop.is_set():
                sql, args = statements(i)
                try:
                    cur.execute(sql, args)
                    ok += cur.fetchall()[0][0] is not None
                except MySQLdb.MySQLError as e:
                    if e.args and e.args[0] in LOST:
                        raise
                i += 1
            done.append((sql, i, ok))
        except Exception as e:
            failures.append(e)
        finally:
            conn.close()

    threads = [
        threading.Thread(target=loop, args=(lambda i: ("SELECT gman_bulk_background('fz_conc', seq) FROM seq_1_to_3000",
                                                        None),)),
        threading.Thread(target=loop, args=(lambda i: ("SELECT gman_sum('fz_num', seq) FROM seq_1_to_200", None),)),
        threading.Thread(target=loop, args=(lambda i: ("SELECT gman_do_background('fz_conc', 'x')", None),)),
        threading.Thread(target=loop, args=(lambda i: ("SELECT gman_servers_set(%s)", (names[i % 2],)),)),
    ]
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(120)
    assert not failures, f"seed {seed}: {failures[:3]}"
    # every kind ran; all but gman_sum (60 ms without progress is a timeout) went through at least once
    assert len(done) == len(threads) and all(ok or "gman_sum" in sql for sql, _, ok in done), done
    print(f"concurrent phase: {[(sql.split('(')[0][7:], n, ok) for sql, n, ok in done]} (statements, non-NULL)")


@pytest.mark.slow
def test_sql_fuzz_every_function(tmp_path, request):
    seed = int(os.environ.get("GMAN_FUZZ_SEED", str(random.SystemRandom().randrange(1 << 32))))
    use_asan = os.environ.get("GMAN_FUZZ_ASAN", "1") != "0"
    print(f"\nSQL fuzz seed: {seed} (GMAN_FUZZ_SEED={seed} replays it), {CALLS} calls, asan={use_asan}")
    logs = tmp_path / "sanitizer"
    logs.mkdir()
    env = {"GMAN_UDF_DO_TIMEOUT_MS": "60", "GMAN_UDF_IO_TIMEOUT_MS": "300", "GMAN_UDF_CONNECT_TIMEOUT_MS": "100",
           "GMAN_UDF_BACKOFF_MS": "50"}
    if use_asan:
        lib = build_sanitized(tmp_path / "build")
        libasan = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
        env.update(LD_PRELOAD=libasan,
                   ASAN_OPTIONS=f"detect_leaks=0:halt_on_error=0:detect_stack_use_after_return=0:log_path={logs}/asan",
                   UBSAN_OPTIONS=f"print_stacktrace=1:halt_on_error=0:log_path={logs}/ubsan")
    else:
        lib = request.getfixturevalue("built_library")
    counts, codes, errors, t0 = {}, {}, 0, time.monotonic()
    with Gearmand() as gearmand:
        env["GMAN_UDF_SERVERS"] = gearmand.address
        db = start_private_mariadb(lib, tmp_path / "plugin", env=env, extra_args=["--max-allowed-packet=64M"])
        try:
            conn = db.connect(read_timeout=60, write_timeout=60)
            cur = conn.cursor()
            setup_tables(cur)
            fuzz = Fuzzer(seed, gearmand)
            workers = {"fz_echo": lambda job: job.workload[:1000], "fz_num": lambda job: b"7"}
            with running_worker([gearmand], workers, batch=20):
                for k in range(CALLS):
                    sql, kind = fuzz.statement()
                    counts[kind] = counts.get(kind, 0) + 1
                    try:
                        if kind == "trigger":
                            cur.execute("DROP TRIGGER IF EXISTS tr_au")
                            cur.execute(f"CREATE TRIGGER tr_au AFTER UPDATE ON tr FOR EACH ROW SET @fz_t = {sql}")
                            cur.execute("UPDATE tr SET i = IFNULL(i, 0) + 0, v = CONCAT(IFNULL(v, ''), '') "
                                        "WHERE id <= 4")
                        else:
                            cur.execute(sql)
                            cur.fetchall()
                    except MySQLdb.MySQLError as e:
                        code = e.args[0] if e.args else None
                        if code in LOST or not isinstance(code, int):
                            raise AssertionError(f"seed {seed}, call {k} ({kind}) lost the connection: {e}\n{sql[:2000]}"
                                                 f"\n{db.log_tail(60)}") from e
                        errors += 1
                        codes[code] = codes.get(code, 0) + 1
                    if k % BATCH == BATCH - 1 or k == CALLS - 1:
                        assert db.running and db.pid and os.path.exists(f"/proc/{db.pid}"), \
                            f"seed {seed}: mariadbd died by call {k}:\n{db.log_tail(60)}"
                        cur.execute("SELECT 1")
                        assert cur.fetchall() == ((1,),), f"seed {seed}"
                        cur.execute("SELECT gman_servers_set(%s)", (gearmand.address,))  # undo what the calls set
                        cur.fetchall()
                concurrent_list_changes(db, gearmand, seed)
            conn.close()
            elapsed = time.monotonic() - t0
            print(f"SQL fuzz: {CALLS} statements in {elapsed:.1f} s ({counts}), {errors} SQL errors "
                  f"(by code: {dict(sorted(codes.items(), key=lambda kv: -kv[1]))}), server alive")
            db.stop()
        finally:
            db.close()
    texts = [p.read_text(errors="replace") for p in sorted(logs.iterdir())]
    mine = [(title, frames) for t in texts for title, frames in sanitizer_reports(t)
            if any(ours(f) for f in frames) or ("runtime error:" in title and "/udf/" in title)]
    detail = "\n\n".join(title + "\n" + "\n".join(frames[:12]) for title, frames in mine[:5])
    assert not mine, f"seed {seed}: {len(mine)} sanitizer reports in gman_udf.so:\n{detail}"
