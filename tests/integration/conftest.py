"""Fixtures for the gman_* SQL function tests (helpers in tests/support).

The session's `installed` mariadbd keeps process-wide plugin state (server lists, the
connection pool, per-server back-off): every test sets the server list it needs first, uses
its own function names (`fname`) and its own gearmand when it kills, freezes or restarts
one. Tests that need another configuration start a private server (`private_mariadb`).
"""
import uuid

import pytest

from tests.support.servers import start_private_mariadb
from tests.support.sql import DB, connect


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
