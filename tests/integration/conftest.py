"""Fixtures and helpers for the gman_* SQL function tests (test_gman_*.py).

The session's `installed` mariadbd keeps process-wide plugin state (server lists, the
connection pool, per-server back-off): every test sets the server list it needs first, uses
its own function names (`fname`) and its own gearmand when it kills, freezes or restarts
one. Tests that need another configuration start a private server (`private_mariadb`).
"""
import contextlib
import importlib.util
import shutil
import threading
import time
import uuid
from pathlib import Path

import MySQLdb
import pytest

from pygen.gearman.worker import Worker
from pygen.plugin import sqlgen
from pygen.sandbox import Gearmand, MariaDB

# pytest drops the module name "conftest" before importing each conftest that is not in a
# package, so this file replaces tests/conftest.py as `conftest` in sys.modules: keep
# `from conftest import run_cli` (test_install.py, test_catalog.py) working.
_spec = importlib.util.spec_from_file_location("_gman_tests_root_conftest",
                                               Path(__file__).resolve().parents[1] / "conftest.py")
_root = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_root)
run_cli = _root.run_cli
ROOT = _root.ROOT

DB = "gman_fn_tests"


def fname(tag="f"):
    """A function name no other test uses (queues and per-function lists never mix)."""
    return f"{tag}_{uuid.uuid4().hex[:10]}"


def wait_until(predicate, timeout=5.0, what="condition", interval=0.02):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def queued(gearmand, fn):
    """Jobs of fn waiting in gearmand's queue."""
    return gearmand.status().get(fn, (0, 0, 0))[0]


class Sql:
    """A MySQLdb connection with one-liners for tests."""

    def __init__(self, conn):
        self.conn = conn
        self.cur = conn.cursor()

    def run(self, sql, args=None):
        self.cur.execute(sql, args)
        return self.cur.rowcount

    def rows(self, sql, args=None):
        self.cur.execute(sql, args)
        return self.cur.fetchall()

    def one(self, sql, args=None):
        """The first column of the only row."""
        rows = self.rows(sql, args)
        assert len(rows) == 1, rows
        return rows[0][0]

    def error(self, sql, args=None):
        """Run sql, which must fail with an SQL error; returns (code, message)."""
        with pytest.raises(MySQLdb.MySQLError) as info:
            self.cur.execute(sql, args)
            self.cur.fetchall()
        return info.value.args[0], info.value.args[1]

    def last_error(self):
        v = self.one("SELECT gman_last_error()")
        return v.decode() if isinstance(v, bytes) else v

    def servers_set(self, *gearmands, function=None):
        """gman_servers_set('a:1,b:2' [, function]); returns the list applied."""
        text = ",".join(g.address for g in gearmands)
        if function is None:
            got = self.one("SELECT gman_servers_set(%s)", (text,))
        else:
            got = self.one("SELECT gman_servers_set(%s, %s)", (text, function))
        assert got == text.encode(), (got, text)
        return got

    def close(self):
        self.conn.close()


def connect(server, database=None):
    conn = server.connect()
    sql = Sql(conn)
    if database:
        sql.run(f"CREATE DATABASE IF NOT EXISTS {database}")
        sql.run(f"USE {database}")
    return sql


@pytest.fixture(scope="session")
def gman_server(installed):
    """The session's mariadbd with the functions registered and a database for these tests."""
    with installed.connect() as conn:
        conn.cursor().execute(f"CREATE DATABASE IF NOT EXISTS {DB}")
    return installed


@pytest.fixture
def sql(gman_server):
    """A connection to the session's server, in the tests' database."""
    s = connect(gman_server, DB)
    yield s
    s.close()


@pytest.fixture
def table_name():
    """A table name for one test (dropped by nobody: the database is throwaway)."""
    return f"t_{uuid.uuid4().hex[:10]}"


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


@pytest.fixture
def private_mariadb(built_library, tmp_path):
    """Factory: private_mariadb(env={...}, cnf="servers = ...") -> a started MariaDB."""
    servers = []

    def make(env=None, cnf=None, library=None, extra_args=()):
        plugin_dir = tmp_path / f"plugin{len(servers)}"
        db = start_private_mariadb(library or built_library, plugin_dir, env, cnf, extra_args)
        servers.append(db)
        return db

    yield make
    for db in servers:
        db.close()


@contextlib.contextmanager
def running_worker(servers, functions, batch=1):
    """A pygen Worker on `servers` (Gearmand objects) running in a thread."""
    worker = Worker([g.address for g in servers], functions, poll_interval=0.05)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop, batch), daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        stop.set()
        thread.join(5)
        assert not thread.is_alive(), "worker did not stop"


def grab_all(servers, fn, count=None, timeout=10.0):
    """Take and complete jobs of fn from servers until `count` were taken (or, when count is
    None, until every server's queue for fn is empty). Returns the jobs in arrival order."""
    worker = Worker([g.address for g in servers], [fn], poll_interval=0.05)
    jobs = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            if count is not None and len(jobs) >= count:
                break
            if count is None and not any(queued(g, fn) for g in servers) and jobs:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"took {len(jobs)} jobs of {fn} in {timeout} s, expected "
                                     f"{count if count is not None else 'all'}; "
                                     f"queued: {[queued(g, fn) for g in servers]}")
            got = worker.grab(500 if count is None else max(1, min(500, count - len(jobs))), 0.5)
            if got:
                worker.complete_many(got)
                jobs.extend(got)
            elif count is None and not any(queued(g, fn) for g in servers):
                break
    finally:
        worker.close()
    return jobs


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
