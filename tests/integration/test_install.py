"""`gman-udf install` / `uninstall` against the session's throwaway MariaDB.

The `installed` server is shared with other modules: whatever a test here drops, the module
fixture installs again, so the server leaves this module with every function registered.
The tests run in file order (install state carries from one to the next, and each checks it).
"""
import filecmp
import os
import re
from pathlib import Path

import MySQLdb
import pytest

from conftest import run_cli
from pygen import catalog, sqlgen

RET = {"STRING": 0, "REAL": 1, "INTEGER": 2}  # mysql.func.ret
USER, PASSWORD = "gman_installer", "s3cret pw'\""


@pytest.fixture(scope="module")
def server(installed, built_library):
    yield installed
    # whatever happened above: hand the server on with everything installed
    run_cli("install", "-S", installed.socket, "-u", "root", "--library", str(built_library))
    assert ours(installed) == expected(installed)


@pytest.fixture(scope="module")
def pw_user(server):
    with server.connect() as conn:
        cur = conn.cursor()
        for host in ("localhost", "127.0.0.1"):
            cur.execute(f"CREATE OR REPLACE USER '{USER}'@'{host}' IDENTIFIED BY %s", (PASSWORD,))
            cur.execute(f"GRANT ALL PRIVILEGES ON *.* TO '{USER}'@'{host}'")
            cur.execute(f"CREATE OR REPLACE USER 'gman_nopriv'@'{host}' IDENTIFIED BY 'x'")
    yield USER
    with server.connect() as conn:
        cur = conn.cursor()
        for host in ("localhost", "127.0.0.1"):
            cur.execute(f"DROP USER IF EXISTS '{USER}'@'{host}', 'gman_nopriv'@'{host}'")


def ours(server):
    """{name: (ret, type)} of the functions mysql.func lists from our library."""
    with server.connect() as conn:
        cur = conn.cursor()
        cur.execute("SELECT name, ret, type FROM mysql.func WHERE dl = %s", (catalog.LIBRARY,))
        return {name: (ret, kind) for name, ret, kind in cur.fetchall()}


def expected(server):
    with server.connect() as conn:
        cur = conn.cursor()
        cur.execute("SELECT VERSION()")
        version = sqlgen.Server.parse(cur.fetchone()[0])
    return {f.name: (RET[f.returns], "aggregate" if f.aggregate else "function")
            for f in sqlgen.functions_for(version)}


def works(server):
    with server.connect() as conn:
        cur = conn.cursor()
        cur.execute("SELECT udf_json_object(1 AS a), udf_json_array('x'), json_values(2)")
        return cur.fetchone() == (b'{"a":1}', b'["x"]', b"2")


def installed_file(server):
    return Path(server.plugin_dir) / catalog.LIBRARY


def socket_args(server, user="root"):
    return ["-S", server.socket, "-u", user]


def tcp_args(server, user="root"):
    return ["-h", "127.0.0.1", "-P", str(server.port), "-u", user]


def install(server, library, *conn_args, env=None, check=True):
    return run_cli("install", *conn_args, "--library", str(library), env=env, check=check)


def uninstall_all(server):
    proc = run_cli("uninstall", *socket_args(server))
    assert ours(server) == {}
    return proc


def test_installed_fixture_state(server, built_library):
    assert ours(server) == expected(server)
    assert set(expected(server)) == {f.name for f in catalog.available()} - {"json_object", "json_array"}
    assert filecmp.cmp(installed_file(server), built_library, shallow=False)
    assert works(server)


def test_install_again_is_harmless_and_says_up_to_date(server, built_library):
    before = installed_file(server).stat()
    proc = install(server, built_library, *socket_args(server))
    assert f"{installed_file(server)} is up to date" in proc.stdout
    assert f"registered {len(expected(server))} functions" in proc.stdout
    assert installed_file(server).stat().st_ino == before.st_ino  # not copied again
    assert ours(server) == expected(server)
    assert works(server)


def test_uninstall_drops_everything(server):
    proc = uninstall_all(server)
    assert f"dropped {len(expected(server))} functions" in proc.stdout
    with server.connect() as conn, pytest.raises(MySQLdb.OperationalError) as e:
        conn.cursor().execute("SELECT udf_json_object(1 AS a)")
    assert e.value.args[0] == 1305  # FUNCTION ... does not exist
    assert installed_file(server).exists()  # the file stays (a server process may still map it)
    proc = run_cli("uninstall", *socket_args(server))  # nothing left to drop: still fine
    assert "dropped 0 functions" in proc.stdout
    assert ours(server) == {}


def test_install_over_socket_copies_and_registers(server, built_library):
    uninstall_all(server)
    # a different file in plugin_dir (an older build): replaced by the new one, through a rename
    junk = installed_file(server).with_name(".junk")
    junk.write_bytes(b"\x7fELF not really")
    os.replace(junk, installed_file(server))
    proc = install(server, built_library, *socket_args(server))
    assert f"copied {built_library} to {installed_file(server)}" in proc.stdout
    assert filecmp.cmp(installed_file(server), built_library, shallow=False)
    assert ours(server) == expected(server)
    assert works(server)
    # and once more: harmless
    proc = install(server, built_library, *socket_args(server))
    assert "is up to date" in proc.stdout
    assert ours(server) == expected(server)


def test_install_into_empty_plugin_dir(server, built_library):
    uninstall_all(server)
    installed_file(server).unlink()
    proc = install(server, built_library, *socket_args(server))
    assert "copied" in proc.stdout
    assert filecmp.cmp(installed_file(server), built_library, shallow=False)
    assert ours(server) == expected(server)
    assert works(server)


def test_install_over_tcp(server, built_library):
    uninstall_all(server)
    proc = install(server, built_library, *tcp_args(server))
    assert f"server: {server.version}" in proc.stdout
    assert "is up to date" in proc.stdout  # 127.0.0.1 is this machine: the file is checked
    assert ours(server) == expected(server)
    assert works(server)
    proc = run_cli("uninstall", *tcp_args(server))
    assert ours(server) == {}
    install(server, built_library, *tcp_args(server))
    assert ours(server) == expected(server)


def test_install_with_library_from_environment(server, built_library):
    proc = run_cli("install", *socket_args(server), env={"GMAN_UDF_LIBRARY": str(built_library)})
    assert "is up to date" in proc.stdout
    assert ours(server) == expected(server)


def test_install_with_mysql_pwd(server, built_library, pw_user):
    env = {"MYSQL_PWD": PASSWORD}
    proc = run_cli("uninstall", *socket_args(server, pw_user), env=env)
    assert ours(server) == {}
    proc = install(server, built_library, *socket_args(server, pw_user), env=env)
    assert "registered" in proc.stdout
    assert ours(server) == expected(server)
    assert works(server)
    # over TCP too, and with every connection option from the environment, as the mysql client
    install(server, built_library, *tcp_args(server, pw_user), env=env)
    env_only = {"MYSQL_PWD": PASSWORD, "USER": pw_user, "MYSQL_UNIX_PORT": server.socket}
    proc = install(server, built_library, env=env_only)
    assert "is up to date" in proc.stdout
    assert ours(server) == expected(server)


def test_install_with_password_option(server, built_library, pw_user):
    proc = install(server, built_library, *socket_args(server, pw_user), f"-p{PASSWORD}")
    assert "is up to date" in proc.stdout
    proc = install(server, built_library, *socket_args(server, pw_user), "--password", PASSWORD)
    assert "is up to date" in proc.stdout


@pytest.mark.parametrize("command", ["install", "uninstall"])
def test_wrong_password_fails_clearly(server, built_library, pw_user, command):
    extra = ["--library", str(built_library)] if command == "install" else []
    proc = run_cli(command, *socket_args(server, pw_user), *extra, env={"MYSQL_PWD": "wrong"}, check=False)
    assert proc.returncode != 0
    assert "Access denied" in proc.stderr
    assert pw_user in proc.stderr
    assert ours(server) == expected(server)  # nothing changed


@pytest.mark.parametrize("command", ["install", "uninstall"])
def test_wrong_password_prints_no_traceback(server, built_library, pw_user, command):
    extra = ["--library", str(built_library)] if command == "install" else []
    proc = run_cli(command, *socket_args(server, pw_user), *extra, env={"MYSQL_PWD": "wrong"}, check=False)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 3, proc.stderr


@pytest.mark.parametrize("command", ["install", "uninstall"])
def test_user_without_privileges_fails_clearly(server, built_library, pw_user, command):
    extra = ["--library", str(built_library)] if command == "install" else []
    proc = run_cli(command, *socket_args(server, "gman_nopriv"), "-px", *extra, check=False)
    assert proc.returncode != 0
    assert re.search(r"denied", proc.stderr, re.I), proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert ours(server) == expected(server)


def test_missing_library_fails_clearly(server, tmp_path):
    proc = run_cli("install", *socket_args(server), "--library", str(tmp_path / "nope.so"), check=False)
    assert proc.returncode != 0
    assert "nope.so" in proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert ours(server) == expected(server)


def test_no_library_in_package_fails_clearly(server):
    env = {"GMAN_UDF_LIBRARY": ""}
    proc = run_cli("install", *socket_args(server), env=env, check=False)
    if proc.returncode == 0:  # a built pygen/gman_udf.so sits in the tree: nothing to check
        return
    assert "GMAN_UDF_LIBRARY" in proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr


def test_module_leaves_everything_installed(server, built_library):
    install(server, built_library, *socket_args(server))
    assert ours(server) == expected(server)
    assert filecmp.cmp(installed_file(server), built_library, shallow=False)
    assert works(server)
