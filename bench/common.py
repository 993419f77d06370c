"""Shared set-up for the benchmarks: throwaway servers with the plugin installed."""
import glob
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pygen.plugin import sqlgen  # noqa: E402
from pygen.sandbox import Gearmand, MariaDB  # noqa: E402,F401  (Gearmand: for the scripts)


def library() -> Path:
    """$GMAN_UDF_LIBRARY, the installed package's library, or the newest local build."""
    if os.environ.get("GMAN_UDF_LIBRARY"):
        return Path(os.environ["GMAN_UDF_LIBRARY"])
    try:
        from pygen.plugin.library import library_path
        return library_path()
    except FileNotFoundError:
        pass
    builds = sorted(glob.glob(str(ROOT / "build" / "*" / "gman_udf.so")), key=os.path.getmtime)
    if not builds:
        sys.exit("no gman_udf.so: run `pip wheel . -w dist/` (or `pip install .`) first")
    return Path(builds[-1])


def mariadb(env=None, buffer_pool="512M", extra_args=()) -> MariaDB:
    """A started sandbox MariaDB with every function registered."""
    plugin_dir = Path(tempfile.mkdtemp(prefix="gman-bench-plugin-"))
    shutil.copy(library(), plugin_dir / "gman_udf.so")
    db = MariaDB(plugin_dir=plugin_dir, env=env or {},
                 extra_args=[f"--innodb-buffer-pool-size={buffer_pool}", "--innodb-log-file-size=256M", *extra_args]).start()
    cur = db.connect().cursor()
    for stmt in sqlgen.install_statements(sqlgen.Server.parse(db.version)):
        cur.execute(stmt)
    return db


def timed(fn, repeat=3):
    """Best and median wall time of fn() over `repeat` runs."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times), statistics.median(times)


def report(rows, base_name):
    """Print name, best seconds, and the ratio to the baseline row."""
    base = dict((n, t) for n, t, _ in rows)[base_name]
    width = max(len(n) for n, _, _ in rows)
    for name, best, med in rows:
        print(f"  {name:<{width}}  {best:8.3f} s  (median {med:.3f})  {best / base:6.2f}x {base_name}")
