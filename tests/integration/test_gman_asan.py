"""The plugin built with AddressSanitizer + UBSan, loaded into a stock mariadbd that runs with
libasan preloaded: a workload over every function, the error paths and the fault paths, a
clean shutdown, then no sanitizer report may have a frame in gman_udf.so or our sources.
(Reports with only mariadbd's own frames -- its leaks, if any -- are not ours to judge.)
"""
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import MySQLdb
import pytest

from pygen.plugin import catalog, sqlgen
from pygen.sandbox import Gearmand
from tests.support import ROOT
from tests.support.gearman import fname, queued, running_worker
from tests.support.servers import start_private_mariadb
from tests.support.sql import DB, connect

DO_TIMEOUT_MS = 2000  # bounds any gman_do left waiting in the fault paths (default 30 s)
FRAME = re.compile(r"^\s*#\d+ 0x[0-9a-f]+ (?:in (\S+) )?(.*)$")


def build_sanitized(build_dir: Path) -> Path:
    cmake = ["cmake", "-S", str(ROOT), "-B", str(build_dir), "-DGMAN_SANITIZE=ON", "-DCMAKE_BUILD_TYPE=Debug"]
    for cmd in (cmake, ["cmake", "--build", str(build_dir), "--parallel", "2"]):
        proc = subprocess.run(cmd, capture_output=True, text=True)
        assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
    lib = build_dir / catalog.LIBRARY
    assert lib.is_file()
    return lib


def sanitizer_reports(text: str):
    """Split a sanitizer log into reports: (title, frames) for each ERROR/leak/runtime error."""
    reports, current = [], None
    for line in text.splitlines():
        if ("ERROR: AddressSanitizer" in line or "ERROR: LeakSanitizer" in line or "runtime error:" in line
                or re.match(r"^(Direct|Indirect) leak of", line)):
            current = (line.strip(), [])
            reports.append(current)
        elif current is not None and FRAME.match(line):
            current[1].append(line.strip())
    return reports


def ours(frame: str) -> bool:
    """A frame in our library or our sources (by location: mariadbd has json_* functions too)."""
    return (catalog.LIBRARY in frame or f"{ROOT}/udf/" in frame or "/udf/gm_" in frame or "/udf/json_" in frame
            or "/udf/udf_" in frame or "<unknown module>" in frame)  # unknown: an unloaded library


def workload(db, gearmands, dead, frozen):
    g1, g2 = gearmands
    s = connect(db, DB)
    s.servers_set(g1, g2)
    fn_do, fn_bg, fn_sum = fname("asan_do"), fname("asan_bg"), fname("asan_sum")

    # JSON functions over many rows, with awkward values
    s.run("CREATE TABLE j (id INT PRIMARY KEY, t MEDIUMTEXT, b MEDIUMBLOB, d DOUBLE, n DECIMAL(65,30), u BIGINT UNSIGNED)")
    s.run("INSERT INTO j SELECT seq, CONCAT('r\\t\"', seq, CHAR(1), 'é😀'), UNHEX(HEX(seq * 7919)), seq * 1e295, "
          "seq / 7, 18446744073709551615 - seq FROM seq_1_to_5000")
    s.run("UPDATE j SET t = REPEAT('x', 200000), b = REPEAT(UNHEX('FF00'), 100000) WHERE id <= 3")
    assert s.one("SELECT COUNT(udf_json_object(id AS id, t AS t, b AS b, d AS d, n AS n, u AS u, NULL AS z)) "
                 "FROM j") == 5000
    assert s.one("SELECT COUNT(udf_json_array(id, t, b, d, n, u, NULL)) FROM j") == 5000
    assert s.one("SELECT COUNT(udf_json_members('k', id, CONCAT('k', id), t)) FROM j") == 5000
    assert s.one("SELECT COUNT(udf_json_values(id, t, b)) FROM j") == 5000
    s.one("SELECT udf_json_object(1e300 AS a, -0.0000001 AS b, '' AS c, x'00ff' AS d)")
    s.one("SELECT udf_json_object(udf_json_array(1, 2) AS json_x, 'not json{' AS json_y)")
    for bad in ("SELECT udf_json_members('k')", "SELECT udf_json_object(1 + 1)", "SELECT udf_json_values()"):
        try:
            s.rows(bad)
        except MySQLdb.MySQLError:
            pass

    # gman_do with a worker: results of every size, WORK_FAIL, an exception
    def work(job):
        if job.workload == b"fail":
            job.fail()
            return None
        if job.workload == b"raise":
            raise RuntimeError("x" * 1000)
        return b"r" * int(job.workload)

    with running_worker([g1, g2], {fn_do: work, fn_sum: lambda job: str(2 * int(job.workload)).encode()}, batch=20):
        for n in (0, 10, 255, 256, 300, 100 * 1024, 1 << 20):
            assert len(s.one("SELECT gman_do(%s, %s)", (fn_do, str(n)))) == n
        assert s.one("SELECT gman_do_high(%s, 'fail')", (fn_do,)) is None
        assert s.one("SELECT gman_do_low(%s, 'raise')", (fn_do,)) is None
        assert "xxxx" in s.last_error()
        assert s.one("SELECT gman_sum(%s, seq) FROM seq_1_to_500", (fn_sum,)) == 2 * sum(range(501))
        s.one("SELECT gman_sum(IF(seq %% 2, %s, %s), seq) FROM seq_1_to_100", (fn_sum, fn_do))
        rows = s.rows("SELECT seq %% 3, gman_sum(%s, seq) FROM seq_1_to_30 GROUP BY seq %% 3", (fn_sum,))
        assert sum(r[1] for r in rows) == 2 * sum(range(31))
        assert s.one("SELECT gman_sum(%s, seq) FROM seq_1_to_10 WHERE seq < 0", (fn_sum,)) == 0

    # background: payloads, uniques, priorities, bulk
    for func in ("gman_do_background", "gman_do_high_background", "gman_do_low_background"):
        assert s.one(f"SELECT {func}(%s, %s)", (fn_bg, os.urandom(300000))) is not None
        assert s.one(f"SELECT {func}(%s, 'x', %s)", (fn_bg, "u" * 63)) is not None
    s.rows("SELECT gman_do_background(%s, CONCAT('row', seq), IF(seq %% 2, NULL, '')) FROM seq_1_to_2000", (fn_bg,))
    assert s.one("SELECT gman_bulk_background(%s, udf_json_object(id AS id, t AS t)) FROM j", (fn_bg,)) == 5000
    assert s.one("SELECT gman_bulk_background(%s, seq, CONCAT('u', seq)) FROM seq_1_to_20000", (fn_bg,)) == 20000
    s.rows("SELECT seq %% 7, gman_bulk_background(%s, seq) FROM seq_1_to_70 GROUP BY seq %% 7", (fn_bg,))
    s.servers_set(g2, function=fn_bg + "_own")  # one group, several functions and server lists
    s.one("SELECT gman_bulk_background(CONCAT(%s, IF(seq %% 3, '', '_own')), seq) FROM seq_1_to_3000", (fn_bg,))
    s.one("SELECT gman_bulk_background(CONCAT(%s, seq %% 20), seq) FROM seq_1_to_100", (fn_bg,))

    # row-time errors and _init errors
    for q in ("SELECT gman_do_background(%s, NULL)", "SELECT gman_do(%s, NULL)",
              "SELECT gman_do_background(%s, 'x', REPEAT('u', seq + 64)) FROM seq_1_to_2",
              "SELECT gman_bulk_background(%s, IF(seq = 3, NULL, seq)) FROM seq_1_to_5",
              "SELECT gman_do_background(%s, REPEAT('x', 17000000))"):
        s.rows(q, (fn_bg,))
    for q in ("SELECT gman_do()", "SELECT gman_do('a')", "SELECT gman_sum('a', 'b', 'c')",
              "SELECT gman_servers_set('bad::list::')", "SELECT gman_servers_set('h:0')",
              "SELECT gman_do_background('', 'x')", "SELECT gman_do_background('a', 'x', REPEAT('u', 65))",
              "SELECT gman_last_error(1)", "SELECT gman_servers_set(CONCAT('127.0.0.1:', seq + 70000)) FROM seq_1_to_2",
              "SELECT gman_servers_set(NULL)", "SELECT gman_servers_set(%s, '')" % repr(g1.address)):
        try:
            s.rows(q)
        except MySQLdb.MySQLError:
            pass
    s.one("SELECT gman_last_error()")

    # triggers from 4 threads while another thread changes the lists (default and per-function)
    s.run("CREATE TABLE t (id INT PRIMARY KEY, v INT NOT NULL DEFAULT 0)")
    s.run("INSERT INTO t (id) SELECT seq FROM seq_1_to_400")
    s.run(f"CREATE TRIGGER t_au AFTER UPDATE ON t FOR EACH ROW "
          f"SET @h = gman_do_background(IF(NEW.id % 2, 'asan_odd', '{fn_bg}'), udf_json_object(NEW.id AS id, NEW.v AS v))")
    stop, errors = threading.Event(), []

    def client(k):
        c = connect(db, DB)
        try:
            while not stop.is_set():
                c.run(f"UPDATE t SET v = v + 1 WHERE id BETWEEN {k * 100 + 1} AND {k * 100 + 100}")
        except Exception as e:
            errors.append(e)
        finally:
            c.close()

    def switcher():
        c = connect(db, DB)
        lists = [f"{g1.address},{g2.address}", f"{g2.address},{g1.address}", f"{dead.address},{g1.address}"]
        i = 0
        try:
            while not stop.is_set():
                c.one("SELECT gman_servers_set(%s)", (lists[i % 3],))
                c.one("SELECT gman_servers_set(%s, 'asan_odd')", (lists[(i + 1) % 3],))
                i += 1
        except Exception as e:
            errors.append(e)
        finally:
            c.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)] + [threading.Thread(target=switcher)]
    for t in threads:
        t.start()
    time.sleep(2.0)
    stop.set()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]

    # faults: a dead server, every server down, a frozen one, a stream to a frozen one
    s.servers_set(dead, g1)
    assert s.one("SELECT gman_do_background(%s, 'x')", (fn_bg,)) is not None
    s.servers_set(dead)
    s.rows("SELECT gman_do_background(%s, seq) FROM seq_1_to_100", (fn_bg,))
    s.one("SELECT gman_bulk_background(%s, seq) FROM seq_1_to_100", (fn_bg,))
    s.one("SELECT gman_do(%s, 'x')", (fn_bg,))
    s.servers_set(frozen)
    s.one("SELECT gman_do_background(%s, 'x')", (fn_bg,))  # a pooled connection to it
    frozen.kill(signal.SIGSTOP)
    try:
        s.one("SELECT gman_do_background(%s, 'x')", (fn_bg,))
        time.sleep(1.1)  # past the back-off
        s.one("SELECT gman_bulk_background(%s, REPEAT('y', 1000)) FROM seq_1_to_5000", (fn_bg,))
    finally:
        frozen.kill(signal.SIGCONT)
        frozen.kill(signal.SIGKILL)  # thawed with megabytes to read, gearmand often ignores SIGTERM
    s.servers_set(g1)
    assert s.one("SELECT gman_do_background(%s, 'x')", (fn_bg,)) is not None
    assert queued(g1, fn_bg) > 0

    # unload the library (its destructor closes the pool) and load it again
    for stmt in sqlgen.uninstall_statements(sqlgen.Server.parse(db.version)):
        s.run(stmt)
    for stmt in sqlgen.install_statements(sqlgen.Server.parse(db.version)):
        s.run(stmt)
    s.servers_set(g1)
    assert s.one("SELECT gman_do_background(%s, udf_json_object(1 AS a))", (fn_bg,)) is not None
    s.close()


def pipelined_workload(db, a, b):
    """pipeline_window > 0: unconfirmed jobs kept per connection and rescued to the next server."""
    s = connect(db, DB)
    fn = fname("asan_pipe")
    s.servers_set(a, b)
    s.run("CREATE TABLE p (id INT PRIMARY KEY, v INT NOT NULL DEFAULT 0)")
    s.run("INSERT INTO p (id) SELECT seq FROM seq_1_to_300")
    s.run(f"CREATE TRIGGER p_au AFTER UPDATE ON p FOR EACH ROW "
          f"SET @h = gman_do_background('{fn}', udf_json_object(NEW.id AS id, NEW.v AS v))")
    stop, errors = threading.Event(), []

    def client(k):
        c = connect(db, DB)
        try:
            while not stop.is_set():
                c.run(f"UPDATE p SET v = v + 1 WHERE id BETWEEN {k * 150 + 1} AND {k * 150 + 150}")
        except Exception as e:
            errors.append(e)
        finally:
            c.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    a.kill(signal.SIGKILL)  # its connections hold unconfirmed jobs: rescued to b
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    b.kill(signal.SIGSTOP)  # every server down or silent
    try:
        s.rows("SELECT gman_do_background(%s, seq) FROM seq_1_to_200", (fn,))
        s.run("UPDATE p SET v = v + 1 WHERE id <= 50")
    finally:
        b.kill(signal.SIGCONT)
    a.start()
    time.sleep(1.1)  # past the back-off
    s.run("UPDATE p SET v = v + 1")
    assert s.one("SELECT gman_bulk_background(%s, seq) FROM seq_1_to_1000", (fn,)) == 1000
    s.close()


@pytest.mark.slow
def test_plugin_under_address_sanitizer(tmp_path):
    lib = build_sanitized(tmp_path / "build")
    logs = tmp_path / "sanitizer"
    logs.mkdir()
    libasan = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
    assert os.path.isabs(libasan) and os.path.exists(libasan), f"no libasan: {libasan!r}"
    env = {
        "LD_PRELOAD": libasan,
        # atexit=1: the exit statistics prove the exit handlers (where LeakSanitizer runs) ran
        "ASAN_OPTIONS": f"detect_leaks=1:halt_on_error=0:detect_stack_use_after_return=0:atexit=1:"
                        f"log_path={logs}/asan",
        "UBSAN_OPTIONS": f"print_stacktrace=1:halt_on_error=0:log_path={logs}/ubsan",
        "GMAN_UDF_DO_TIMEOUT_MS": str(DO_TIMEOUT_MS),
    }
    workload_error = None
    with Gearmand() as g1, Gearmand() as g2, Gearmand() as dead, Gearmand() as frozen:
        dead.kill(signal.SIGKILL)
        db = start_private_mariadb(lib, tmp_path / "plugin", env=env)
        try:
            maps = Path(f"/proc/{db.pid}/maps").read_text()
            assert "libasan" in maps, "mariadbd runs without libasan"
            try:
                workload(db, (g1, g2), dead, frozen)
            except Exception as e:  # an ASan report aborts mariadbd: show the report first
                workload_error = e
            db.stop()  # a clean shutdown: LeakSanitizer runs in mariadbd's exit handlers
            out = db.log_tail(2000)
        finally:
            db.close()
        if workload_error is None:  # the same plugin in pipelined mode, on a second server
            env_pipe = dict(env, GMAN_UDF_PIPELINE_WINDOW="64")
            db = start_private_mariadb(lib, tmp_path / "plugin_pipe", env=env_pipe)
            try:
                try:
                    pipelined_workload(db, g1, g2)
                except Exception as e:
                    workload_error = e
                db.stop()
                out += db.log_tail(2000)
            finally:
                db.close()

    # ASan's and UBSan's runtimes share one log_path setting: a report may be in either file
    texts = {p.name: p.read_text(errors="replace") for p in sorted(logs.iterdir())}
    reports = [r for t in [*texts.values(), out] for r in sanitizer_reports(t)]
    mine = [(title, frames) for title, frames in reports if any(ours(f) for f in frames) or
            ("runtime error:" in title and "/udf/" in title)]
    detail = "\n\n".join(title + "\n" + "\n".join(frames[:12]) for title, frames in mine[:5])
    assert not mine, f"{len(mine)} sanitizer reports in gman_udf.so:\n{detail}"
    if workload_error is not None:
        raise workload_error
    assert any("Stats:" in t for t in texts.values()), \
        f"no exit statistics from ASan (did mariadbd exit through its exit handlers?): {list(texts)}"
