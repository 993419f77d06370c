"""--consistency committed: reads rows as MySQL has committed them, rendered by the same UDF
as the trigger, for the decisions on a change MySQL does not hold as sent (the
rules are in pygen/sync/worker.py's docstring; the pure SQL in pygen/sync/committed_sql.py, the decisions in
pygen/sync/decision.py).
pygen/sync/committed_loop.py parks the jobs (Pending) and runs the loop; pygen/sync/waiters.py runs
the locking reads that wait for an open transaction (wait_statement, waited).
"""
from __future__ import annotations

import json
import re
import time
from functools import lru_cache
from dataclasses import dataclass
from typing import Dict, FrozenSet, List, Optional, Tuple

from pygen.sync import committed_sql, plan
from pygen.sync.payload import Change
from pygen.sync.payload import loads as payload_loads
from pygen import mysql
from pygen.sync.schema import Column
from pygen.sync.triggers import SYNCED_SQL, synced_tables


class Gone(Exception):
    """The change cannot be checked (unknown table or column, unrenderable row): refused."""


class CommittedReader:
    """Reads rows as MySQL has committed them (READ COMMITTED, autocommit: each SELECT sees
    every transaction committed before it started, nothing else)."""

    CHUNK = 500
    REREAD = 10.0  # seconds: a table's columns are read again at most this often (an ALTER TABLE)

    def __init__(self, dsn: str, json_function: str = "udf_json_members", timeout: float = 5.0):
        self.opts = mysql.ConnOptions.from_dsn(dsn).defaults(connect_timeout=max(1, round(timeout)))
        self.json_function = json_function
        self.conn = None
        self._inflight: Optional[Reading] = None  # sent by send(), not yet read back
        self._columns: Dict[str, Tuple[float, FrozenSet[str], FrozenSet[str]]] = {}

    def connect(self, read_timeout: Optional[float] = None):
        """A new connection to the DSN's server (autocommit), e.g. for a waiter."""
        if read_timeout is None:
            return self.opts.connect()
        return self.opts.connect(read_timeout=max(1, round(read_timeout)))

    def _cursor(self):
        if self._inflight is not None:
            self._drain()
        if self.conn is None:
            conn = self.connect()
            conn.cursor().execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
            self.conn = conn
        return self.conn.cursor()

    def close(self) -> None:
        self._inflight = None
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:
                pass
            self.conn = None

    def synced(self, function: str) -> Dict[str, FrozenSet[str]]:
        """The tables with generated triggers sending to `function`, and their columns."""
        cur = self._cursor()
        cur.execute(SYNCED_SQL)
        return synced_tables(cur.fetchall(), function)

    def stamp(self) -> int:
        cur = self._cursor()
        cur.execute("SELECT gman_stamp()")
        return int(cur.fetchone()[0])

    def locked(self, change: Change) -> Optional[bool]:
        """True when another transaction holds the row's lock (or MySQL cannot tell now);
        None on servers without NOWAIT (MySQL 5.7, MariaDB 10.2)."""
        import MySQLdb
        try:
            cur = self._cursor()
            sql = committed_sql.lock_statement(change.table, list(change.key), self.conn.get_server_info())
            if sql is None:
                return None
            cur.execute(sql, committed_sql.key_params(change.key, list(change.key)))
            cur.fetchall()
        except MySQLdb.OperationalError as e:
            if not (e.args and e.args[0] in (1205, 3572)):  # NOWAIT: MariaDB's lock wait timeout, MySQL's ER_LOCK_NOWAIT
                self.close()
            return True
        except (MySQLdb.MySQLError, plan.PlanError):
            return False
        return False

    def stamped(self, change: Change) -> Optional[Tuple[dict, int]]:
        """(the row as committed, a gman_stamp() taken under its shared lock): every committed
        change of the row is older than that stamp, every change to come newer. None when the
        row is gone, another transaction holds its lock, or the server has no NOWAIT."""
        import MySQLdb
        cols = list(change.row or ())
        if not cols:
            return None
        try:
            convert = self._table(change.table, (*change.key, *cols))
            cur = self._cursor()
            sql = committed_sql.lock_statement(change.table, list(change.key), self.conn.get_server_info(), cols,
                                       self.json_function, convert)
            if sql is None:
                return None
            cur.execute(sql, cols + committed_sql.key_params(change.key, list(change.key)))
            found = cur.fetchall()
        except MySQLdb.OperationalError as e:
            if not (e.args and e.args[0] in (1205, 3572)):
                self.close()
            return None
        except (MySQLdb.MySQLError, plan.PlanError):
            return None
        if len(found) != 1 or found[0][0] is None:
            return None
        return payload_loads(found[0][0]), int(found[0][1])

    def wait_statement(self, change: Change) -> Tuple[str, list]:
        """(sql, params) of the locking read a waiter runs for a change MySQL does not hold as
        sent: it returns once no other transaction holds the row's lock, so the change's own
        transaction (its trigger ran under that lock) is over, with the row as committed then,
        rendered as read() renders it. PlanError for an unknown table or column."""
        cols = list(change.row or change.key)  # a delete: the key, read back (row or no row)
        convert = self._table(change.table, (*change.key, *cols))
        self._cursor()
        sql = committed_sql.lock_statement(change.table, list(change.key), self.conn.get_server_info(), cols,
                                   self.json_function, convert, wait=True)
        return sql, cols + committed_sql.key_params(change.key, list(change.key))

    def waited(self, rows) -> Optional[dict]:
        """The row a wait_statement() read returned (None: no such row)."""
        if not rows:
            return None
        if rows[0][0] is None:
            raise plan.PlanError(f"{self.json_function} returned NULL (see gman_last_error())")
        return payload_loads(rows[0][0])

    def read(self, changes: List[Change]) -> list:
        """For each change: its row as committed (dict), None (no such row) or a Gone."""
        return self.receive(self.send(changes))

    def send(self, changes: List[Change]) -> "Reading":
        """read(), begun: its first query is sent and not waited for, so that the caller's
        other work overlaps MySQL's; receive() returns what read() would. Any other query
        of this reader meanwhile waits for that one first."""
        groups: Dict[tuple, List[int]] = {}
        for i, c in enumerate(changes):
            groups.setdefault((c.table, tuple(c.key), tuple(c.row or ())), []).append(i)
        reading = Reading(changes, [(*group, idx[start:start + self.CHUNK])
                                    for group, idx in groups.items() for start in range(0, len(idx), self.CHUNK)])
        if reading.chunks:
            try:
                query = self._query(*reading.chunks[0][:3], [changes[i] for i in reading.chunks[0][3]])
                self.conn.send_query(query)
                self._inflight = reading
            except Exception as e:  # noqa: BLE001 - receive() sorts it out, as read() would
                reading.error = e
        return reading

    def receive(self, reading: "Reading", expect: Optional[list] = None) -> list:
        """read()'s answer to a send(). expect[i], when given and not None: changes[i].row as
        payload.dumps writes it (bytes); a committed row of exactly that text is that row
        (loads(dumps(r)) == r), so it is not parsed again."""
        import MySQLdb
        changes = reading.changes
        out: list = [None] * len(changes)
        for n, (table, key_cols, row_cols, chunk) in enumerate(reading.chunks):
            try:
                if n == 0:
                    if self._inflight is reading:
                        self._drain()
                    if reading.error is not None:
                        raise reading.error
                    rows = reading.rows
                else:
                    self.conn.query(self._query(table, key_cols, row_cols, [changes[i] for i in chunk]))
                    rows = self._rows()
                found = self._found(rows, key_cols, row_cols)
                for i in chunk:
                    k = _key_id(changes[i].key, key_cols)
                    row = found.get(k)
                    if type(row) is bytes:  # its text, not parsed yet
                        if expect is not None and expect[i] is not None and row == expect[i]:
                            row = changes[i].row
                        else:
                            row = found[k] = payload_loads(row)
                    out[i] = row
            except (MySQLdb.ProgrammingError, MySQLdb.DataError, MySQLdb.IntegrityError,
                    MySQLdb.NotSupportedError, plan.PlanError) as e:
                for i in chunk:
                    out[i] = Gone(f"{table}: {e}")
                continue
            except MySQLdb.OperationalError as e:
                if e.args and e.args[0] in (1054, 1146, 1049, 1305, 1142, 1143):  # no such column/table/db/function, denied
                    for i in chunk:
                        out[i] = Gone(f"{table}: {e}")
                    continue
                self.close()
                raise
            except MySQLdb.Error:  # the connection: an outage, retried
                self.close()
                raise
            except Exception as e:  # noqa: BLE001 - a change no rule above foresaw: refused, not retried forever
                for i in chunk:
                    out[i] = Gone(f"{table}: {type(e).__name__}: {e}")
                continue
        return out

    def _table(self, table: str, names) -> FrozenSet[str]:
        """The table's text columns in a non-UTF-8 charset; PlanError when it has no column of
        one of `names` (or no columns: no such table, or not visible to this user). Read once
        per table, again after REREAD seconds when a name is unknown."""
        now = time.monotonic()
        cached = self._columns.get(table)
        if cached is None or (now - cached[0] > self.REREAD and not {n.lower() for n in names} <= cached[1]):
            schema, name = committed_sql.split_payload_table(table)
            cur = self._cursor()
            cur.execute("SELECT COLUMN_NAME, CHARACTER_SET_NAME FROM information_schema.COLUMNS "
                        "WHERE TABLE_SCHEMA = COALESCE(%s, DATABASE()) AND TABLE_NAME = %s", (schema or None, name))
            cols = [Column(mysql.text(n), "", mysql.text(cs)) for n, cs in cur.fetchall()]
            cached = (now, frozenset(c.name.lower() for c in cols), frozenset(c.name for c in cols if c.needs_convert))
            self._columns[table] = cached
        if not cached[1]:
            raise plan.PlanError("no such table (or no column this user may see)")
        unknown = [n for n in names if n.lower() not in cached[1]]  # column names are case-insensitive
        if unknown:
            raise plan.PlanError(f"no column {unknown[0]!r:.80}")
        return cached[2]

    def _query(self, table, key_cols, row_cols, changes) -> bytes:
        """The read of one chunk, its parameters bound (as a cursor binds them)."""
        convert = self._table(table, (*key_cols, *row_cols))  # the SQL stays as wide as the table
        sql, params = committed_sql.read_statement(table, key_cols, row_cols, len(changes), self.json_function, convert)
        for c in changes:
            params += committed_sql.key_params(c.key, key_cols)
        self._cursor()
        conn = self.conn
        return sql.encode(conn.encoding) % tuple(map(conn.literal, params))

    def _rows(self) -> tuple:
        result = self.conn.store_result()
        return result.fetch_row(0) if result is not None else ()

    def _drain(self) -> None:
        """Wait for the query send() sent; its rows (or error) wait in its Reading."""
        reading, self._inflight = self._inflight, None
        try:
            self.conn.read_query_result()
            reading.rows = self._rows()
        except Exception as e:  # noqa: BLE001 - raised by receive()
            reading.error = e

    def _found(self, rows, key_cols, row_cols) -> dict:
        """{key id: the row}, or the row's JSON text, unparsed, when the text shows the key:
        the common key (one int column) rendered first, as the SELECT lists it."""
        found = {}
        if committed_sql.key_in_row(key_cols, row_cols or key_cols):
            lead = len(key_cols) == 1 and row_cols and row_cols[0] == key_cols[0] and _lead(key_cols[0])
            for (row_json,) in rows:
                if row_json is None:
                    raise plan.PlanError(f"{self.json_function} returned NULL (see gman_last_error())")
                if lead and type(row_json) is bytes and row_json.startswith(lead):  # a UDF's result: bytes
                    m = _INT.match(row_json, len(lead))
                    if m:
                        found[(int(m.group()),)] = row_json
                        continue
                row = payload_loads(row_json)
                found[_key_id(row, key_cols)] = row
            return found
        for key_json, row_json in rows:
            if key_json is None or row_json is None:
                raise plan.PlanError(f"{self.json_function} returned NULL (see gman_last_error())")
            row = payload_loads(row_json)
            found[_key_id(payload_loads(key_json), key_cols)] = row
        return found


_INT = re.compile(rb"-?[0-9]+(?=[,}])")  # a JSON integer, then the next member or the end


@lru_cache(maxsize=256)
def _lead(name: str) -> bytes:
    """How a row's JSON text begins when its first member is `name`."""
    return ("{" + json.dumps(name, ensure_ascii=False) + ":").encode()


def _key_id(key: dict, key_cols) -> object:
    """committed_sql.key_id, at once for the common key (one int or str column)."""
    if len(key_cols) == 1:
        v = key.get(key_cols[0])
        if type(v) is int or type(v) is str:
            return (v,)
    return committed_sql.key_id(key, key_cols)


@dataclass
class Reading:
    """A read() begun by CommittedReader.send(): its chunks (table, key columns, row columns,
    indexes into changes) and the first one's rows or error once they are in."""
    changes: List[Change]
    chunks: list
    rows: tuple = ()
    error: Optional[Exception] = None


@dataclass
class Pending:
    """A committed-mode job parked until MySQL settles its change."""
    job: object
    change: Change
    first: float
    due: float
    attempt: int = 0
    waiting: bool = False   # a waiter's locking read runs for it (due: never, until it ends)
    outcome: object = None  # the rows that read returned, not yet looked at
