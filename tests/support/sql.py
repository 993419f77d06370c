"""MySQL connections with one-liners for tests, in the tests' database."""
import MySQLdb
import pytest

DB = "gman_fn_tests"


class Sql:
    """A MySQLdb connection with one-liners for tests."""

    def __init__(self, conn):
        self.conn = conn
        self.cur = conn.cursor()

    def run(self, sql, args=None):
        self.cur.execute(sql, args)
        return self.cur.rowcount

    def rows(self, sql, args=None):
        self.cur.execute(sql, args)
        return self.cur.fetchall()

    def one(self, sql, args=None):
        """The first column of the only row."""
        rows = self.rows(sql, args)
        assert len(rows) == 1, rows
        return rows[0][0]

    def error(self, sql, args=None):
        """Run sql, which must fail with an SQL error; returns (code, message)."""
        with pytest.raises(MySQLdb.MySQLError) as info:
            self.cur.execute(sql, args)
            self.cur.fetchall()
        return info.value.args[0], info.value.args[1]

    def last_error(self):
        v = self.one("SELECT gman_last_error()")
        return v.decode() if isinstance(v, bytes) else v

    def servers_set(self, *gearmands, function=None):
        """gman_servers_set('a:1,b:2' [, function]); returns the list applied."""
        text = ",".join(g.address for g in gearmands)
        if function is None:
            got = self.one("SELECT gman_servers_set(%s)", (text,))
        else:
            got = self.one("SELECT gman_servers_set(%s, %s)", (text, function))
        assert got == text.encode(), (got, text)
        return got

    def close(self):
        self.conn.close()


def connect(server, database=None):
    conn = server.connect()
    sql = Sql(conn)
    if database:
        sql.run(f"CREATE DATABASE IF NOT EXISTS {database}")
        sql.run(f"USE {database}")
    return sql
