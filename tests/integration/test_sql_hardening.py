"""What an SQL user sends cannot crash mysqld or use up the plugin's process-wide state.

Tests that fill or exhaust process-wide state (route table, server registry) run on a private
mariadbd each, so that the session server and the other tests keep theirs.
"""
import threading

import MySQLdb
import pytest

from tests.support.gearman import fname, queued, wait_until
from tests.support.sql import DB, connect


def alive(db):
    s = connect(db, DB)
    try:
        assert s.one("SELECT 1") == 1
    finally:
        s.close()
    assert db.running


def test_the_65th_function_list_is_refused_without_a_crash(private_mariadb):
    """64 per-function lists fit; the 65th is refused (NULL, the reason in gman_last_error())
    and changes nothing. It used to free past the end of the route table (signal 11)."""
    db = private_mariadb()
    s = connect(db, DB)
    assert s.one("SELECT COUNT(gman_servers_set('127.0.0.1:4730', CONCAT('f', seq))) FROM seq_1_to_65") == 64
    assert s.last_error() == "gman_servers_set: too many per-function server lists (64 at most)"
    alive(db)
    for _ in range(3):  # refused again and again, as separate statements
        assert s.one("SELECT gman_servers_set('127.0.0.1:4731', 'f65')") is None
    assert s.one("SELECT gman_servers_set('127.0.0.1:4731', 'f64')") == b"127.0.0.1:4731"  # replacing: fine
    assert s.one("SELECT gman_servers_set('127.0.0.1:4732')") == b"127.0.0.1:4732"  # the default list too
    alive(db)
    s.close()


def test_refused_lists_take_no_slots_and_unused_servers_are_freed(private_mariadb):
    """The registry holds 64 servers in use. Refused lists (a bad last item, per row and
    constant) keep nothing; servers that no list names any more free their slots."""
    db = private_mariadb()
    s = connect(db, DB)
    for k in range(5):  # 75 new addresses, each list refused at its 16th item
        bad = ",".join(f"127.0.{k}.{i}:4730" for i in range(1, 16)) + ",127.0.0.1:0"
        assert s.one("SELECT gman_servers_set(IF(seq = 1, %s, NULL)) FROM seq_1_to_1", (bad,)) is None
        assert "bad port" in s.last_error()
        with pytest.raises(MySQLdb.OperationalError):
            s.one("SELECT gman_servers_set(%s)", (bad,))
    # the default list's 127.0.0.1:4730 holds one slot: 63 new addresses fit
    for k in range(4):
        n = 16 if k < 3 else 15
        text = ",".join(f"127.1.{k}.{i}:4730" for i in range(1, n + 1))
        assert s.one("SELECT gman_servers_set(%s, %s)", (text, f"fn{k}")) == text.encode(), s.last_error()
    code, message = s.error("SELECT gman_servers_set('127.2.0.1', 'fn9')")  # constant: refused at _init
    assert code == 1123 and message.endswith("gman_servers_set: more than 64 distinct servers in use"), message
    s.run("SET @l = '127.2.0.1'")
    assert s.one("SELECT gman_servers_set(IF(seq = 1, @l, NULL), 'fn9') FROM seq_1_to_1") is None  # per row: NULL
    assert s.last_error() == "gman_servers_set: more than 64 distinct servers in use"
    # fn0 and fn1 now share one server: 31 slots are free again, and used
    assert s.one("SELECT gman_servers_set('127.1.3.1', 'fn0')") == b"127.1.3.1:4730"
    assert s.one("SELECT gman_servers_set('127.1.3.1', 'fn1')") == b"127.1.3.1:4730"
    for k in range(2):
        text = ",".join(f"127.3.{k}.{i}:4730" for i in range(1, 16))
        assert s.one("SELECT gman_servers_set(%s, %s)", (text, f"fn{k + 5}")) == text.encode(), s.last_error()
    alive(db)
    s.close()


def test_json_members_names_of_any_type_are_their_sql_text(sql):
    """Names used to be the argument's raw bytes: an INT 1 gave "\\u0001", an INT column
    read 11 bytes out of an 8-byte value."""
    assert sql.one("SELECT udf_json_members(1, 'x')") == b'{"1":"x"}'
    assert sql.one("SELECT udf_json_members(-7, 1, 2.50, 2, 1e308, 3, 0.1e0, 4)") == \
        b'{"-7":1,"2.50":2,"1e308":3,"0.1":4}'
    sql.run("CREATE TABLE IF NOT EXISTS jm_names (i INT, b BIGINT UNSIGNED, d DECIMAL(10,3), f DOUBLE, "
            "t DATETIME, y BIT(3))")
    sql.run("DELETE FROM jm_names")
    sql.run("INSERT INTO jm_names VALUES (-2147483648, 18446744073709551615, 1.5, 2.25, '2024-01-02 03:04:05', 5)")
    got = sql.one("SELECT udf_json_members(i, 1, b, 2, d, 3, f, 4, t, 5) FROM jm_names")
    assert got == b'{"-2147483648":1,"18446744073709551615":2,"1.500":3,"2.25":4,"2024-01-02 03:04:05":5}'
    rows = sql.rows("SELECT udf_json_members(seq, seq) FROM seq_1_to_3")
    assert [r[0] for r in rows] == [b'{"1":1}', b'{"2":2}', b'{"3":3}']


@pytest.mark.parametrize("arg", ["4730", "4730.5", "47e2", "CAST(1 AS DECIMAL)"])
def test_servers_set_with_a_number_says_the_list_must_be_a_string(sql, arg):
    code, message = sql.error(f"SELECT gman_servers_set({arg})")
    assert code == 1123 and "the server list must be a string" in message, message
    code, message = sql.error(f"SELECT gman_servers_set({arg} + seq) FROM seq_1_to_2")  # not constant
    assert code == 1123 and "the server list must be a string" in message, message


def test_servers_set_refuses_a_bare_number_as_host(sql):
    code, message = sql.error("SELECT gman_servers_set('4730', 'hardening_fn')")
    assert code == 1123 and "bad host name '4730'" in message, message


def test_a_server_no_list_names_any_more_closes_its_pooled_connections(sql, fresh_gearmand):
    """Its registry entry is freed with its idle connections (they used to stay open, and the
    entry taken, until mysqld restarted)."""
    old, new = fresh_gearmand(), fresh_gearmand()
    fn = fname("moved")
    sql.servers_set(old, function=fn)
    assert sql.one("SELECT gman_do_background(%s, 'x')", (fn,)) is not None
    assert sql.one("SELECT gman_bulk_background(%s, seq) FROM seq_1_to_100", (fn,)) == 100
    wait_until(lambda: old.client_count() >= 1, what="a pooled connection to the first server")
    sql.servers_set(new, function=fn)
    wait_until(lambda: old.client_count() == 0, what="the first server's connections closed")
    assert sql.one("SELECT gman_do_background(%s, 'x')", (fn,)) is not None
    assert queued(new, fn) == 1 and queued(old, fn) == 101


def test_pipelined_jobs_pooled_for_a_dropped_server_are_kept(private_mariadb, fresh_gearmand):
    """pipeline_window > 0: the pooled connection of a server that leaves every list still has
    unconfirmed jobs; their confirmations are read before it is closed, nothing is lost."""
    db = private_mariadb(env={"GMAN_UDF_PIPELINE_WINDOW": "64"})
    old, new = fresh_gearmand(), fresh_gearmand()
    s = connect(db, DB)
    fn = fname("pipedrop")
    s.servers_set(old, function=fn)
    for _ in range(3):
        assert s.rows("SELECT gman_do_background(%s, seq) FROM seq_1_to_40", (fn,))[0][0] is not None
    s.servers_set(new, function=fn)
    wait_until(lambda: old.client_count() == 0, what="the dropped server's connection closed")
    assert queued(old, fn) == 120
    assert s.one("SELECT gman_do_background(%s, 'x')", (fn,)) is not None
    alive(db)
    s.close()


def test_servers_set_with_a_null_function_name_changes_no_list(sql, fresh_gearmand):
    """gman_servers_set(list, NULL) -- a name computed per row that came out NULL -- used to
    replace the default list (every trigger's jobs went to `list`); now it is refused like
    every other function's NULL name. So is a name no job could use (over 512 bytes)."""
    default, other = fresh_gearmand(), fresh_gearmand()
    sql.servers_set(default)
    fn = fname("nullfn")
    rows = sql.rows("SELECT gman_servers_set(%s, IF(seq = 1, NULL, %s)) FROM seq_1_to_2", (other.address, fn))
    assert [r[0] for r in rows] == [None, other.address.encode()], rows
    assert sql.rows("SELECT gman_servers_set(%s, NULL), gman_last_error()", (other.address,))[0] == \
        (None, b"gman_servers_set: the function name is NULL")
    assert sql.one("SELECT gman_servers_set(%s, REPEAT('f', 513))", (other.address,)) is None
    assert sql.last_error() == "gman_servers_set: bad function name"
    unlisted = fname("unlisted")
    assert sql.one("SELECT gman_do_background(%s, 'x')", (unlisted,)) is not None
    wait_until(lambda: queued(default, unlisted) == 1, what="the job on the default list's server")
    assert queued(other, unlisted) == 0


def test_last_error_is_per_connection_under_a_thread_pool(private_mariadb):
    """thread_handling = pool-of-threads runs a connection's statements on any thread of the
    pool: the error of one statement, read by the next, used to be gone 4 times in 5
    (it was kept per thread)."""
    db = private_mariadb(extra_args=["--thread-handling=pool-of-threads", "--thread-pool-size=4"])
    setup = connect(db, DB)
    assert setup.one("SELECT @@thread_handling") == "pool-of-threads"
    setup.run("SELECT gman_servers_set('127.0.0.1:1')")  # nothing listens: every call fails
    got = {}

    def session(i):
        s = connect(db, DB)
        try:
            for k in range(40):
                fn = f"pool_{i}_{k}"
                assert s.one("SELECT gman_do_background(%s, 'x')", (fn,)) is None
                s.one("SELECT SLEEP(0.001)")  # let the pool move this connection to another thread
                got[fn] = s.last_error()
        finally:
            s.close()

    threads = [threading.Thread(target=session, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(got) == 320
    wrong = {fn: e for fn, e in got.items() if not e.startswith("gman_do_background: gearmand 127.0.0.1:1: ")}
    assert not wrong, f"{len(wrong)} of 320: {list(wrong.items())[:3]}"
    setup.close()


def test_json_nested_past_128_is_embedded_as_a_string(sql):
    """The README's limit: a json_* argument nested 128 deep is embedded, deeper is a string."""
    deep = "CONCAT(REPEAT('[', {0}), REPEAT(']', {0}))"
    assert sql.one(f"SELECT udf_json_object({deep.format(128)} AS json_a)") == b'{"json_a":' + b"[" * 128 + b"]" * 128 + b"}"
    assert sql.one(f"SELECT udf_json_object({deep.format(129)} AS json_a)") == b'{"json_a":"' + b"[" * 129 + b"]" * 129 + b'"}'
