"""Throwaway servers and the plugin built from this tree, for the integration tests' fixtures.

The session's mariadbd keeps process-wide plugin state (server lists, the connection pool,
per-server back-off): tests that need another configuration start a private server.
"""
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from pygen.plugin import sqlgen
from pygen.sandbox import Gearmand, MariaDB
from tests.support import ROOT
from tests.support.sql import DB


def build_wheel(out: Path) -> Path:
    """The wheel built from this tree by `pip wheel .` (the real build) into out."""
    cmd = [sys.executable, "-m", "pip", "wheel", str(ROOT), "-w", str(out), "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run(cmd, check=True, cwd=ROOT)
    (path,) = out.glob("gman_udf-*.whl")
    return path


def library_from_wheel(wheel: Path, target: Path) -> Path:
    """gman_udf.so taken out of the wheel, written to target."""
    with zipfile.ZipFile(wheel) as z:
        target.write_bytes(z.read("pygen/gman_udf.so"))
    target.chmod(0o755)
    return target


def start_private_mariadb(library, plugin_dir, env=None, cnf=None, extra_args=()):
    """A mariadbd whose plugin_dir holds `library` (and gman_udf.cnf with `cnf`), with every
    function registered. The caller closes it."""
    plugin_dir = Path(plugin_dir)
    plugin_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(library, plugin_dir / "gman_udf.so")
    (plugin_dir / "gman_udf.so").chmod(0o755)
    if cnf is not None:
        (plugin_dir / "gman_udf.cnf").write_text(cnf)
    db = MariaDB(plugin_dir=plugin_dir, env=env, extra_args=extra_args)
    try:
        db.start()
        with db.connect() as conn:
            cur = conn.cursor()
            for stmt in sqlgen.install_statements(sqlgen.Server.parse(db.version)):
                cur.execute(stmt)
            cur.execute(f"CREATE DATABASE IF NOT EXISTS {DB}")
    except BaseException:
        db.close()
        raise
    return db


def database_fixtures(db):
    """Fixtures (server, gearmand, cur) for a test module with its own database on the session
    server and its own gearmand (the session one stays free of the module's function names)."""
    @pytest.fixture(scope="module")
    def server(installed):
        with installed.connect() as conn:
            conn.cursor().execute(f"CREATE DATABASE IF NOT EXISTS {db} CHARACTER SET utf8mb4")
        yield installed
        with installed.connect() as conn:
            conn.cursor().execute(f"DROP DATABASE IF EXISTS {db}")

    @pytest.fixture(scope="module")
    def gearmand():
        with Gearmand() as g:
            yield g

    @pytest.fixture
    def cur(server):
        conn = server.connect(database=db)
        yield conn.cursor()
        conn.close()

    return server, gearmand, cur
