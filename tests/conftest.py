"""Session fixtures: throwaway servers from pygen.sandbox and the plugin built from this tree.

Session servers start lazily (only when a test asks) and are stopped at session end. A server
that cannot start makes its tests ERROR with the server's log tail: never skipped.
"""
import pytest

from pygen.sandbox import Gearmand, MariaDB, PerlGearmand, Redis
from tests.support.cli import run_cli
from tests.support.servers import build_wheel, library_from_wheel


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
