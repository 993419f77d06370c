"""What an SQL user without any privilege can and cannot do with the plugin's functions
(the README's "Security model"): loadable functions have no privilege of their own on
MariaDB, so every user can call every one of them."""
import uuid

import MySQLdb
import pytest

from pygen.gearman.worker import Worker

from tests.support.gearman import fname, queued


@pytest.fixture
def nobody(installed):
    """A user with no privilege at all (USAGE only), connected."""
    name = f"nobody_{uuid.uuid4().hex[:8]}"
    with installed.connect() as root:
        root.cursor().execute(f"CREATE USER '{name}'@'localhost' IDENTIFIED BY 'pw'")
    conn = installed.connect(user=name, password="pw")
    yield conn.cursor()
    conn.close()
    with installed.connect() as root:
        root.cursor().execute(f"DROP USER '{name}'@'localhost'")


def test_a_user_without_privileges_calls_every_function(nobody, installed, fresh_gearmand):
    g = fresh_gearmand()
    fn = fname("nopriv")
    nobody.execute("SHOW GRANTS")
    assert [row[0].split(" TO ")[0] for row in nobody.fetchall()] == ["GRANT USAGE ON *.*"]
    nobody.execute("SELECT gman_servers_set(%s, %s)", (g.address, fn))  # unlocked: anyone redirects a function
    assert nobody.fetchone()[0] == g.address.encode()
    nobody.execute("SELECT gman_do_background(%s, %s)", (fn, '{"op":"upsert","table":"shop.data"}'))
    assert nobody.fetchone()[0].startswith(b"H:")
    assert queued(g, fn) == 1
    nobody.execute("SELECT gman_stamp(), udf_json_object(1 AS a), gman_last_error()")
    stamp, text, _ = nobody.fetchone()
    assert stamp > 10**15 and text == b'{"a":1}'
    with Worker([g.address], [fn]) as w:
        w.complete_many(w.grab(1, 5))


def test_grants_cannot_restrict_a_loadable_function(nobody, installed):
    with installed.connect() as root:
        cur = root.cursor()
        cur.execute("CREATE DATABASE IF NOT EXISTS gman_security")
        cur.execute("USE gman_security")
        with pytest.raises(MySQLdb.MySQLError) as info:  # EXECUTE is for stored routines only
            cur.execute("GRANT EXECUTE ON FUNCTION gman_do_background TO CURRENT_USER")
        cur.execute("SELECT gman_stamp()")  # and root still calls it: nothing changed
        assert info.value.args[0] == 1305, info.value.args  # FUNCTION ... does not exist
        with pytest.raises(MySQLdb.MySQLError) as info:
            cur.execute("REVOKE EXECUTE ON FUNCTION gman_do_background FROM CURRENT_USER")
        assert info.value.args[0] == 1403, info.value.args  # no such grant


def test_a_user_without_privileges_cannot_register_or_drop_functions(nobody):
    for sql in ("CREATE FUNCTION gman_evil RETURNS STRING SONAME 'gman_udf.so'",
                "DROP FUNCTION gman_do_background"):
        with pytest.raises(MySQLdb.MySQLError) as info:
            nobody.execute(sql)
        assert info.value.args[0] in (1044, 1142, 1227), info.value.args  # access denied


def test_the_worker_sees_the_triggers_of_tables_it_has_the_trigger_privilege_on(nobody, installed):
    """The default --tables: what information_schema.TRIGGERS shows the worker's user."""
    from pygen.sync import schema, triggers
    with installed.connect() as root:
        cur = root.cursor()
        cur.execute("CREATE DATABASE IF NOT EXISTS gman_security")
        cur.execute("USE gman_security")
        cur.execute("CREATE TABLE IF NOT EXISTS synced (id INT PRIMARY KEY, v INT)")
        t = schema.read_schema(root, "synced")
        triggers.apply(root, t)
        nobody.execute("SELECT CURRENT_USER()")
        user = nobody.fetchone()[0]
        name, host = (user.decode() if isinstance(user, bytes) else user).split("@")
        cur.execute(f"GRANT SELECT ON gman_security.synced TO '{name}'@'{host}'")
        nobody.execute(triggers.SYNCED_SQL)
        assert triggers.synced_tables(nobody.fetchall()) == {}  # SELECT alone: no trigger visible
        cur.execute(f"GRANT TRIGGER ON gman_security.synced TO '{name}'@'{host}'")
        nobody.execute(triggers.SYNCED_SQL)
        assert triggers.synced_tables(nobody.fetchall()) == {"gman_security.synced": frozenset({"id", "v"})}
