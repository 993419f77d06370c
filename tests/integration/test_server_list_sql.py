"""Server lists through SQL: gman_servers_set() on the session's server (`installed`), with the
lists and refusals of udf/gm_servers.c (called directly through cffi in
tests/unit/test_server_list_parse.py).

These tests use a single per-function list (FN), so the default list and other tests' lists
are left alone.
"""
import time

import MySQLdb
import pytest

from tests.support.gearman import RESOLVER_BOUND_S

FN = "server_list_parse_test"  # the one per-function list these tests set on the session server


@pytest.fixture
def cur(installed):
    """A connection to the session's server."""
    conn = installed.connect()
    yield conn.cursor()
    conn.close()


def one(cur, sql, args=None):
    cur.execute(sql, args)
    (row,) = cur.fetchall()
    return row[0]


def last_error(cur):
    return one(cur, "SELECT gman_last_error()").decode()


def set_per_row(cur, text):
    """gman_servers_set(text, FN) with text computed per row: not constant, so _init cannot
    check it and the row call does."""
    cur.execute("SET @gman_list = %s", (text,))
    return one(cur, "SELECT gman_servers_set(IF(seq = 1, @gman_list, NULL), %s) FROM mysql.seq_1_to_1", (FN,))


@pytest.mark.parametrize("given, applied", [
    ("127.0.0.1", "127.0.0.1:4730"),
    (" 127.0.0.1:4731 ", "127.0.0.1:4731"),
    ("[::1]:4730", "[::1]:4730"),
    ("::1", "[::1]:4730"),
    ("localhost:4730", "localhost:4730"),
    ("127.0.0.1,localhost", "127.0.0.1:4730,localhost:4730"),
    (",".join(["127.0.0.1"] * 16), ",".join(["127.0.0.1:4730"] * 16)),
])
def test_sql_returns_the_normalised_list(cur, given, applied):
    assert one(cur, "SELECT gman_servers_set(%s, %s)", (given, FN)) == applied.encode()
    assert set_per_row(cur, given) == applied.encode()


SQL_BAD = [
    ("", "empty server name"),
    (",", "empty server name"),
    ("127.0.0.1:0", "bad port"),
    (":4730", "missing host"),
    ("127.0.0.1:65536", "bad port"),
    ("127.0.0.1:abc", "bad port"),
    (" 127.0.0.1 : 4731 ", "bad port"),
    ("[::1", "bad address"),
    ("h" * 300, "server name too long"),
    (",".join(["127.0.0.1"] * 17), "more than 16 servers"),
    ("127.0.0.1\0:4730", "NUL byte"),
    ("gman-udf-test-no-such-host.invalid", "cannot resolve 'gman-udf-test-no-such-host.invalid'"),
    ("a,b", "cannot resolve 'a'"),
    ("no host!:1", "bad host name"),
]


@pytest.mark.parametrize("given, why", SQL_BAD, ids=[repr(g)[:30] for g, _ in SQL_BAD])
def test_sql_constant_bad_list_is_an_init_error(cur, given, why):
    t = time.monotonic()
    with pytest.raises(MySQLdb.OperationalError) as info:
        one(cur, "SELECT gman_servers_set(%s, %s)", (given, FN))
    code, message = info.value.args
    assert code == 1123, (code, message)  # ER_CANT_INITIALIZE_UDF
    assert why in message and message.index(why) < 80, message  # the problem is named early
    assert "gman_servers_set: " in message
    assert time.monotonic() - t < RESOLVER_BOUND_S


@pytest.mark.parametrize("given, why", SQL_BAD, ids=[repr(g)[:30] for g, _ in SQL_BAD])
def test_sql_row_bad_list_is_null_with_the_reason(cur, given, why):
    """The same list computed per row (not constant: checked at row time) gives NULL and the
    reason in gman_last_error(), whole."""
    t = time.monotonic()
    assert set_per_row(cur, given) is None
    assert time.monotonic() - t < RESOLVER_BOUND_S
    error = last_error(cur)
    assert error.startswith("gman_servers_set: ") and why in error, error


def test_sql_refused_list_leaves_the_list_in_use(cur):
    """After refused lists (constant and per row), the function still uses the last good one."""
    assert one(cur, "SELECT gman_servers_set('127.0.0.1:1', %s)", (FN,)) == b"127.0.0.1:1"
    for bad in ("127.0.0.1:0", ",", "h" * 300):
        with pytest.raises(MySQLdb.OperationalError):
            one(cur, "SELECT gman_servers_set(%s, %s)", (bad, FN))
        assert set_per_row(cur, bad) is None
    assert one(cur, "SELECT gman_do_background(%s, 'x')", (FN,)) is None
    error = last_error(cur)  # refused now, or skipped (back-off) after an earlier refusal
    assert "gearmand 127.0.0.1:1: " in error and "Connection refused" in error, error


def test_sql_null_list_and_bad_function_names(cur):
    assert one(cur, "SELECT gman_servers_set(NULL, %s)", (FN,)) is None
    assert last_error(cur) == "gman_servers_set: the server list is NULL"
    assert one(cur, "SELECT gman_servers_set('127.0.0.1', '')") is None
    assert last_error(cur) == "gman_servers_set: bad function name"
    assert one(cur, "SELECT gman_servers_set('127.0.0.1', %s)", ("a\0b",)) is None
    assert last_error(cur) == "gman_servers_set: bad function name"
