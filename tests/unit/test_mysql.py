"""MySQL connection options (pygen/mysql.py): the mysql client's options and a mysql:// DSN, no server."""
from argparse import Namespace

import pytest

from pygen.mysql import ConnOptions


def args(**kw):
    base = dict(host=None, port=None, socket=None, user=None, password=None, database=None)
    return Namespace(**{**base, **kw})


def test_from_dsn():
    assert ConnOptions.from_dsn("mysql://app:p%40ss@db.example:3307/shop", environ={}).kwargs() == {
        "host": "db.example", "port": 3307, "user": "app", "password": "p@ss", "database": "shop",
        "charset": "utf8mb4", "autocommit": True, "binary_prefix": True}
    kw = ConnOptions.from_dsn("mysql://app@localhost/?socket=/run/mysqld/mysqld.sock&connect_timeout=3",
                              environ={"MYSQL_PWD": "env"}).kwargs()
    assert (kw["unix_socket"], kw["password"], kw["connect_timeout"]) == ("/run/mysqld/mysqld.sock", "env", 3)
    assert "database" not in kw
    with pytest.raises(ValueError):
        ConnOptions.from_dsn("postgres://x@y/z")
    with pytest.raises(ValueError):
        ConnOptions.from_dsn("mysql://x@y/z?sslmode=1")


def test_from_dsn_takes_no_client_environment():
    env = {"MYSQL_HOST": "elsewhere", "MYSQL_TCP_PORT": "3310", "MYSQL_UNIX_PORT": "/s", "USER": "me"}
    assert ConnOptions.from_dsn("mysql://db/shop", environ=env).kwargs() == {
        "host": "db", "user": "root", "database": "shop", "charset": "utf8mb4", "autocommit": True,
        "binary_prefix": True}


def test_from_args_falls_back_to_the_environment_as_the_mysql_client():
    env = {"MYSQL_HOST": "db", "MYSQL_TCP_PORT": "3310", "MYSQL_UNIX_PORT": "/run/s.sock", "USER": "me",
           "MYSQL_PWD": "pw"}
    assert ConnOptions.from_args(args(), environ=env).kwargs() == {
        "host": "db", "port": 3310, "unix_socket": "/run/s.sock", "user": "me", "password": "pw",
        "charset": "utf8mb4", "autocommit": True, "connect_timeout": 10}
    given = ConnOptions.from_args(args(host="h", port=3307, socket="/x", user="u", password="", database="d"),
                                  environ=env)
    assert given.kwargs() == {"host": "h", "port": 3307, "unix_socket": "/x", "user": "u", "password": "",
                              "database": "d", "charset": "utf8mb4", "autocommit": True, "connect_timeout": 10}
    assert ConnOptions.from_args(args(), environ={}).kwargs() == {
        "host": "localhost", "user": "root", "charset": "utf8mb4", "autocommit": True, "connect_timeout": 10}


def test_is_local():
    assert ConnOptions.from_args(args(), environ={}).is_local()
    assert ConnOptions.from_args(args(host="127.0.0.2"), environ={}).is_local()
    assert not ConnOptions.from_args(args(host="db.example"), environ={}).is_local()


def test_defaults_fill_only_unset_timeouts():
    opts = ConnOptions.from_dsn("mysql://db/?read_timeout=3", environ={}).defaults(connect_timeout=5, read_timeout=9)
    assert (opts.connect_timeout, opts.read_timeout, opts.write_timeout) == (5, 3, None)


class FakeConn:
    def __init__(self, rows):
        self.rows, self.ran, self.closed = rows, [], 0

    def cursor(self):
        return self

    def execute(self, sql, params=None):
        self.ran.append((sql, params))

    def fetchone(self):
        return self.rows[0] if self.rows else None

    def close(self):
        self.closed += 1


def test_scalar():
    from pygen.mysql import scalar
    conn = FakeConn([(7, "x")])
    assert scalar(conn, "SELECT %s", (7,)) == 7 and conn.ran == [("SELECT %s", (7,))] and conn.closed == 1
    assert scalar(FakeConn([]), "SELECT 1 FROM DUAL WHERE 0") is None
