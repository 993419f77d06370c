"""Fixtures of the integration tests: throwaway servers from pygen.sandbox and the plugin built
from this tree (helpers in tests/support).

Session servers start lazily (only when a test asks) and are stopped at session end. A server
that cannot start makes its tests ERROR with the server's log tail: never skipped.

The session's `installed` mariadbd keeps process-wide plugin state (server lists, the
connection pool, per-server back-off): every test sets the server list it needs first, uses
its own function names (`fname`) and its own gearmand when it kills, freezes or restarts
one. Tests that need another configuration start a private server (`private_mariadb`).
"""
import uuid

import pytest

from pygen.sandbox import Gearmand, MariaDB, PerlGearmand, Redis
from tests.support.cli import run_cli
from tests.support.servers import build_wheel, library_from_wheel, start_private_mariadb
from tests.support.sql import DB, connect


@pytest.fixture(scope="session")
def wheel(tmp_path_factory):
    """The wheel built from this tree by `pip wheel .` (the real build, every session)."""
    return build_wheel(tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="session")
def built_library(wheel, tmp_path_factory):
    """gman_udf.so taken out of the wheel."""
    return library_from_wheel(wheel, tmp_path_factory.mktemp("lib") / "gman_udf.so")


@pytest.fixture(scope="session")
def plugin_dir(tmp_path_factory):
    """The sandbox server's --plugin-dir: empty at first; `gman-udf install` copies the library in."""
    return tmp_path_factory.mktemp("plugin")


@pytest.fixture(scope="session")
def mariadb(plugin_dir):
    with MariaDB(plugin_dir=plugin_dir) as server:
        yield server


@pytest.fixture(scope="session")
def installed(mariadb, built_library):
    """The session server with every function registered by `gman-udf install`."""
    run_cli("install", "-S", mariadb.socket, "-u", "root", "--library", str(built_library))
    return mariadb


@pytest.fixture(scope="session")
def gearmand():
    with Gearmand() as server:
        yield server


@pytest.fixture(scope="session")
def perl_gearmand():
    """Perl Gearman::Server (Debian gearman-server): the original protocol, as another peer."""
    with PerlGearmand() as server:
        yield server


@pytest.fixture(scope="session")
def redis_server():
    with Redis() as server:
        yield server


@pytest.fixture
def fresh_gearmand():
    """Factory for a private gearmand (e.g. to kill or restart it): fresh_gearmand(queue="sqlite")."""
    servers = []

    def make(**kwargs) -> Gearmand:
        server = Gearmand(**kwargs)
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.close()


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
