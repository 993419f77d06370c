"""Shared fixtures: throwaway servers from pygen.sandbox.

Session servers start lazily (only when a test asks) and are stopped at session end. A server
that cannot start makes its tests ERROR with the server's log tail: never skipped.
"""
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pygen.sandbox import Gearmand, MariaDB, Redis  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes seconds; deselect with -m 'not slow'")


@pytest.fixture(scope="session")
def plugin_dir(tmp_path_factory):
    """Directory given to mariadbd as --plugin-dir (placeholder: will hold the built gman_udf.so)."""
    return tmp_path_factory.mktemp("plugin")


@pytest.fixture(scope="session")
def mariadb(plugin_dir):
    with MariaDB(plugin_dir=plugin_dir) as server:
        yield server


@pytest.fixture(scope="session")
def gearmand():
    with Gearmand() as server:
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
