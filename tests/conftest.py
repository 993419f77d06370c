"""Shared fixtures: throwaway servers from pygen.sandbox.

Session servers start lazily (only when a test asks) and are stopped at session end. A server
that cannot start makes its tests ERROR with the server's log tail: never skipped.
"""
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pygen.sandbox import Gearmand, MariaDB, PerlGearmand, Redis  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes seconds; deselect with -m 'not slow'")


@pytest.fixture(scope="session")
def wheel(tmp_path_factory):
    """The wheel built from this tree by `pip wheel .` (the real build, every session)."""
    out = tmp_path_factory.mktemp("dist")
    cmd = [sys.executable, "-m", "pip", "wheel", str(ROOT), "-w", str(out), "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run(cmd, check=True, cwd=ROOT)
    (path,) = out.glob("gman_udf-*.whl")
    return path


@pytest.fixture(scope="session")
def built_library(wheel, tmp_path_factory):
    """gman_udf.so taken out of the wheel."""
    target = tmp_path_factory.mktemp("lib") / "gman_udf.so"
    with zipfile.ZipFile(wheel) as z:
        target.write_bytes(z.read("pygen/gman_udf.so"))
    target.chmod(0o755)
    return target


@pytest.fixture(scope="session")
def plugin_dir(tmp_path_factory):
    """The sandbox server's --plugin-dir: empty at first; `gman-udf install` copies the library in."""
    return tmp_path_factory.mktemp("plugin")


@pytest.fixture(scope="session")
def installed(mariadb, built_library):
    """The session server with every function registered by `gman-udf install`."""
    run_cli("install", "-S", mariadb.socket, "-u", "root", "--library", str(built_library))
    return mariadb


def run_cli(*args, env=None, check=True):
    """Run the `gman-udf` command of this tree; returns the CompletedProcess."""
    full_env = dict(os.environ, **(env or {}))
    full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-m", "pygen.cli", *args], capture_output=True, text=True, env=full_env)
    if check and proc.returncode != 0:
        raise AssertionError(f"gman-udf {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def mariadb(plugin_dir):
    with MariaDB(plugin_dir=plugin_dir) as server:
        yield server


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
