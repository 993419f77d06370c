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

from pygen.plugin import catalog, sqlgen
from tests.support.cli import run_cli
from tests.support.servers import start_private_mariadb

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
    assert set(expected(server)) == {f.name for f in catalog.FUNCTIONS} - {"json_object", "json_array"}
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


def mapped(server):
    """{(inode, path)} of the gman_udf.so files mariadbd has mapped."""
    out = set()
    for line in Path(f"/proc/{server.pid}/maps").read_text().splitlines():
        parts = line.split(None, 5)
        if len(parts) == 6 and catalog.LIBRARY in parts[5]:
            out.add((int(parts[4]), parts[5]))
    return out


@pytest.fixture(scope="module")
def private_db(built_library, tmp_path_factory):
    """A server of its own: on the session server any earlier test may have pinned the library
    (see test_a_pinned_library_is_reported)."""
    db = start_private_mariadb(built_library, tmp_path_factory.mktemp("reload") / "plugin")
    yield db
    db.close()


def test_install_of_a_new_library_makes_the_server_load_it(private_db, built_library, tmp_path):
    """The server maps a library once per file name while any function of it is registered:
    after copying a new file, install drops every function, then creates them, so that the
    server unmaps the old file and loads the new one (CREATE OR REPLACE, one function at a
    time, kept the old code running: a "(deleted)" mapping)."""
    db = private_db
    assert works(db)
    assert {inode for inode, _ in mapped(db)} == {installed_file(db).stat().st_ino}
    newer = tmp_path / catalog.LIBRARY
    newer.write_bytes(built_library.read_bytes() + b"\0" * 64)  # another file, the same code
    proc = install(db, newer, *socket_args(db))
    assert f"copied {newer}" in proc.stdout
    assert ours(db) == expected(db)
    assert works(db)
    now = mapped(db)
    assert {inode for inode, _ in now} == {installed_file(db).stat().st_ino}, now
    assert not [path for _, path in now if "(deleted)" in path], now
    assert "dropped and created again" in proc.stdout and "warning" not in proc.stderr
    # the same file again: nothing is dropped (a trigger never sees a function missing)
    proc = install(db, newer, *socket_args(db))
    assert "is up to date" in proc.stdout and "dropped and created again" not in proc.stdout
    assert mapped(db) == now


def test_a_pinned_library_is_reported(private_db, built_library, tmp_path):
    """MariaDB 10.11 counts a function as in use for good after a statement passed it a ROW
    argument (ERROR 1241): DROP FUNCTION then keeps the file mapped and CREATE reuses it, until
    a restart. install cannot help that, but says so instead of claiming the new file runs."""
    db = private_db
    with db.connect() as conn, pytest.raises(MySQLdb.OperationalError) as e:
        conn.cursor().execute("SELECT gman_do_background('f', ROW(1, 2))")
    assert e.value.args[0] == 1241
    before = mapped(db)
    newest = tmp_path / catalog.LIBRARY
    newest.write_bytes(built_library.read_bytes() + b"\1" * 64)
    proc = install(db, newest, *socket_args(db))
    assert f"copied {newest}" in proc.stdout and proc.returncode == 0
    assert ours(db) == expected(db) and works(db)
    assert {inode for inode, _ in mapped(db)} == {inode for inode, _ in before} != {installed_file(db).stat().st_ino}
    assert "warning: the server still runs the replaced" in proc.stderr and "restart it" in proc.stderr


SF_DB = "gman_stored_fn_tests"


def stored_functions(server):
    with server.connect() as conn:
        cur = conn.cursor()
        cur.execute("SELECT routine_name FROM information_schema.routines WHERE routine_schema = %s", (SF_DB,))
        return {r[0] for r in cur.fetchall()}


def test_stored_functions_named_like_ours_survive_install_and_uninstall(server, built_library):
    """A stored function may share a name with one of ours. With a current database, MariaDB
    (like MySQL 5.7 and 8.0 <= 8.0.28) drops it on DROP FUNCTION [IF EXISTS] name when no
    loadable function has that name: install and uninstall drop only names mysql.func lists,
    and connect with no current database (-D is ignored)."""
    names = {"gman_stamp", "udf_json_array"}
    uninstall_all(server)  # MariaDB refuses a stored function named like a registered UDF (1125)
    with server.connect() as conn:
        cur = conn.cursor()
        cur.execute(f"CREATE DATABASE IF NOT EXISTS {SF_DB}")
        for name in names | {"gman_probe_fn"}:
            cur.execute(f"DROP FUNCTION IF EXISTS {SF_DB}.{name}")
            cur.execute(f"CREATE FUNCTION {SF_DB}.{name}() RETURNS INT DETERMINISTIC RETURN 7")
        # the server semantics this guards against: no current database, the stored one is safe ...
        cur.execute("DROP FUNCTION IF EXISTS gman_probe_fn")
        assert "gman_probe_fn" in stored_functions(server)
        # ... with one, it is dropped
        cur.execute(f"USE {SF_DB}")
        cur.execute("DROP FUNCTION IF EXISTS gman_probe_fn")
    assert stored_functions(server) == names
    db_args = [*socket_args(server), "-D", SF_DB]
    try:
        for command in ("install", "install", "uninstall", "uninstall", "install"):
            extra = ["--library", str(built_library)] if command == "install" else []
            run_cli(command, *db_args, *extra)
            assert stored_functions(server) == names, command
            assert set(ours(server)) == (set(expected(server)) if command == "install" else set())
        with server.connect(database=SF_DB) as conn:
            cur = conn.cursor()
            cur.execute(f"SELECT {SF_DB}.gman_stamp(), {SF_DB}.udf_json_array(), udf_json_array(1)")
            assert cur.fetchone() == (7, 7, b"[1]")
    finally:
        with server.connect() as conn:
            conn.cursor().execute(f"DROP DATABASE IF EXISTS {SF_DB}")


def test_module_leaves_everything_installed(server, built_library):
    install(server, built_library, *socket_args(server))
    assert ours(server) == expected(server)
    assert filecmp.cmp(installed_file(server), built_library, shallow=False)
    assert works(server)
