"""`gman-udf doctor` against the sandbox, set up as the demo is (pygen/demo.py): a MariaDB whose
plugin_dir holds a locked gman_udf.cnf, the library from `gman-udf install`, a table with the
triggers of `gman-udf trigger --apply`, a committed-mode worker reading its tables from those triggers. It
passes there, and each broken state fails (or warns) naming the broken part.

The tests run in file order on one setup: each breaks one thing and mends it, except the last
two (no worker, gearmand down), which end it."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pygen.ops import doctor
from pygen.sandbox import Gearmand, MariaDB, Redis
from tests.support.cli import run_cli

ROOT = Path(__file__).resolve().parents[2]
TABLE = "doc.data"


class Setup:
    def __init__(self, tmp, library):
        self.plugin_dir = tmp / "plugin"
        self.plugin_dir.mkdir()
        self.library = library
        self.gm, self.rd = Gearmand(), Redis()
        self.gm.start()
        self.rd.start()
        self.cnf = self.plugin_dir / "gman_udf.cnf"
        self.locked = f"servers = {self.gm.address}\nlock = 1\n"
        self.cnf.write_text(self.locked)
        self.db = MariaDB(plugin_dir=self.plugin_dir)
        self.db.start()
        self.conn_args = ("-S", self.db.socket, "-u", "root")
        self.worker = None

    def doctor(self, *args, table=TABLE):
        proc = run_cli("doctor", *self.conn_args, "--redis", self.rd.url, "--table", table, "--json",
                       "--canary-timeout", "8", *args, env={"GMAN_UDF_LIBRARY": str(self.library)}, check=False)
        assert proc.returncode in (0, 1), proc.stdout + proc.stderr
        doc = json.loads(proc.stdout)
        return proc.returncode, {c["check"]: c for c in doc["checks"]}

    def start_worker(self):
        dsn = f"mysql://root@localhost/doc?socket={self.db.socket}"
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.worker = subprocess.Popen([sys.executable, "-m", "pygen.cli", "worker", "--gearman", self.gm.address,
                                        "--redis", self.rd.url, "--mysql", dsn, "--consistency", "committed",
                                        "--log-level", "WARNING"], env=env)
        for _ in range(200):
            if self.gm.status().get("syncToRedis", (0, 0, 0))[2] >= 1:
                return
            assert self.worker.poll() is None, f"worker exited with {self.worker.returncode}"
            time.sleep(0.05)
        raise AssertionError("the worker did not register")

    def stop_worker(self):
        if self.worker and self.worker.poll() is None:
            self.worker.send_signal(signal.SIGTERM)
            self.worker.wait(20)

    def close(self):
        self.stop_worker()
        for server in (self.db, self.rd, self.gm):
            server.close()


@pytest.fixture(scope="module")
def setup(tmp_path_factory, built_library):
    s = Setup(tmp_path_factory.mktemp("doctor"), built_library)
    try:
        run_cli("install", *s.conn_args, "--library", str(built_library))
        cur = s.db.connect().cursor()
        cur.execute("CREATE DATABASE doc")
        cur.execute(f"CREATE TABLE {TABLE} (id INT PRIMARY KEY, volume DECIMAL(20,4), name VARCHAR(100))")
        cur.execute(f"INSERT INTO {TABLE} VALUES (1, 1.5, 'one')")
        run_cli("trigger", *s.conn_args, "--table", TABLE, "--apply")
        # The canary's table exists before the worker starts, as after a first doctor run: a
        # worker reads its table list again only 10 s after the last read.
        cur.execute("CREATE DATABASE gman_doctor")
        cur.execute(doctor.CANARY_SQL)
        run_cli("trigger", *s.conn_args, "--table", doctor.CANARY_TABLE, "--apply")
        s.start_worker()
        yield s
    finally:
        s.close()


def _failed(checks):
    return sorted(name for name, c in checks.items() if c["status"] == "fail")


def test_passes_on_a_good_setup(setup):
    rc, checks = setup.doctor()
    assert rc == 0 and _failed(checks) == [], checks
    assert {c["status"] for c in checks.values()} == {"ok"}, checks
    assert "this package's build" in checks["library"]["detail"]
    assert "lock = 1" in checks["config"]["detail"]
    assert checks[f"gearmand {setup.gm.address}"]["detail"].startswith("reachable")
    assert "100003 buckets" in checks[f"hashtable {setup.gm.address}"]["detail"]
    assert checks["canary"]["detail"].startswith("commit -> Redis in ")
    # the text form: one line per check, and the exit status
    proc = run_cli("doctor", *setup.conn_args, "--redis", setup.rd.url, "--table", TABLE,
                   env={"GMAN_UDF_LIBRARY": str(setup.library)})
    lines = proc.stdout.splitlines()
    assert len(lines) == len(checks) + 1 and lines[-1].startswith("ok: "), proc.stdout


def test_a_refused_login_is_exit_2_with_json(setup):
    proc = run_cli("doctor", "-S", setup.db.socket, "-u", "nobody_here", "--json", check=False)
    assert proc.returncode == 2 and json.loads(proc.stdout)["error"].startswith("mysql: "), proc.stdout + proc.stderr


def test_another_build_of_the_library_fails(setup, tmp_path):
    other = tmp_path / "gman_udf.so"
    other.write_bytes(setup.library.read_bytes() + b"\0")
    rc, checks = setup.doctor("--library", str(other), "--no-canary")
    assert rc == 1 and _failed(checks) == ["library"], checks
    assert "gman-udf install" in checks["library"]["fix"]


def test_unlocked_config_is_a_warning(setup):
    setup.cnf.write_text(f"servers = {setup.gm.address}\n")
    try:
        rc, checks = setup.doctor("--no-canary")
    finally:
        setup.cnf.write_text(setup.locked)
    assert rc == 0 and checks["config"]["status"] == "warn", checks
    assert "lock = 1" in checks["config"]["fix"]


def test_stale_trigger_fails(setup):
    cur = setup.db.connect().cursor()
    cur.execute(f"ALTER TABLE {TABLE} ADD COLUMN note VARCHAR(20)")
    try:
        rc, checks = setup.doctor()
        assert rc == 1 and _failed(checks) == [f"triggers {TABLE}"], checks
        assert checks[f"triggers {TABLE}"]["detail"].startswith("stale: not sending note"), checks
        assert f"gman-udf trigger --table {TABLE}" in checks[f"triggers {TABLE}"]["fix"]
        assert checks["canary"]["status"] == "ok", checks  # the rest of the path still works
    finally:
        run_cli("trigger", *setup.conn_args, "--table", TABLE, "--apply")
    rc, checks = setup.doctor("--no-canary")
    assert rc == 0, checks


def test_trigger_of_a_dropped_column_fails(setup):
    cur = setup.db.connect().cursor()
    cur.execute(f"ALTER TABLE {TABLE} DROP COLUMN name")  # every write of the table now fails
    try:
        rc, checks = setup.doctor("--no-canary")
        assert rc == 1 and _failed(checks) == [f"triggers {TABLE}"], checks
        assert "the table changed" in checks[f"triggers {TABLE}"]["detail"], checks
    finally:
        cur.execute(f"ALTER TABLE {TABLE} ADD COLUMN name VARCHAR(100)")
        run_cli("trigger", *setup.conn_args, "--table", TABLE, "--apply")


def test_a_column_subset_is_named_with_the_table(setup):
    run_cli("trigger", *setup.conn_args, "--table", TABLE, "--columns", "id,name", "--apply")
    try:
        rc, checks = setup.doctor("--no-canary")
        assert rc == 1 and "not sending volume" in checks[f"triggers {TABLE}"]["detail"], checks
        rc, checks = setup.doctor("--no-canary", table=f"{TABLE}:id,name")
        assert rc == 0 and checks[f"triggers {TABLE}:id,name"]["status"] == "ok", checks
    finally:
        run_cli("trigger", *setup.conn_args, "--table", TABLE, "--apply")


def test_missing_trigger_fails(setup):
    cur = setup.db.connect().cursor()
    cur.execute("DROP TRIGGER doc.gman_data_ad")
    try:
        rc, checks = setup.doctor("--no-canary")
    finally:
        run_cli("trigger", *setup.conn_args, "--table", TABLE, "--apply")
    assert rc == 1 and _failed(checks) == [f"triggers {TABLE}"], checks
    assert "gman_data_ad" in checks[f"triggers {TABLE}"]["detail"]


def test_the_first_run_creates_the_canary_table(setup):
    """As on a fresh installation: no gman_doctor yet, a worker that read its tables before."""
    setup.db.connect().cursor().execute("DROP DATABASE gman_doctor")
    rc, checks = setup.doctor("--canary-timeout", "15")
    assert rc == 0 and checks["canary"]["status"] == "ok", checks
    cur = setup.db.connect().cursor()
    cur.execute("SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = 'gman_doctor'")
    assert cur.fetchone()[0] == 3
    cur.execute(f"SELECT COUNT(*) FROM {TABLE}")
    assert cur.fetchone()[0] == 1  # the user's table untouched


def test_no_worker_fails(setup):
    setup.stop_worker()
    rc, checks = setup.doctor()
    assert rc == 1 and _failed(checks) == [f"workers {setup.gm.address}"], checks
    assert "gman-udf worker" in checks[f"workers {setup.gm.address}"]["fix"]
    assert checks["canary"]["status"] == "skip"


def test_gearmand_down_fails(setup):
    setup.gm.close()
    rc, checks = setup.doctor()
    assert rc == 1 and _failed(checks) == [f"gearmand {setup.gm.address}"], checks
    assert "unreachable" in checks[f"gearmand {setup.gm.address}"]["detail"]
    assert checks["canary"]["status"] == "skip"
