"""The SQL of --consistency committed (pure): read rows as MySQL has committed them, rendered
by the same UDF and row renderer as the trigger's payload (pygen/sync/triggers.py json_expr),
and lock a row to learn whether a transaction holds it. pygen/sync/committed.py runs them.
"""
from __future__ import annotations

import json
import re
from typing import Any, Collection, Dict, List, Optional, Sequence, Tuple

from pygen.sync import schema, triggers
from pygen.sync.payload import decode_value
from pygen.sync.plan import PlanError


def _quote(name: str) -> str:
    """schema.quote_ident_fmt, raising PlanError (what committed mode's callers catch)."""
    try:
        return schema.quote_ident_fmt(name)
    except schema.SchemaError:
        raise PlanError(f"bad identifier {name!r}") from None


def split_payload_table(table: str) -> Tuple[Optional[str], str]:
    """A payload's "table", 'schema.table' as the triggers write it (unquoted) -> (schema,
    table); a name without a dot is in the DSN's database."""
    db, dot, name = table.partition(".")
    return (db, name) if dot else (None, table)


def _target(table: str) -> str:
    db, name = split_payload_table(table)
    return (_quote(db) + "." if db else "") + _quote(name)


def _members(fn: str, cols: Sequence[str], convert: Collection[str] = ()) -> str:
    # the member names are %s parameters, so any column name works
    return triggers.json_expr(cols, convert, function=fn, quote=_quote)


def read_statement(table: str, key_cols: Sequence[str], row_cols: Sequence[str], count: int,
                   json_function: str = "udf_json_members",
                   convert: Collection[str] = ()) -> Tuple[str, List[str]]:
    """SELECT <key JSON>, <row JSON> for `count` keys, rendered by the same UDF (and so the
    same value policy) as the trigger's payload; `convert` names the text columns in a
    non-UTF-8 charset. Returns (sql, the leading parameters: the member names). The key
    values follow, flattened, in key_cols order. When the row holds every key column (a
    generated trigger's row, a delete's key read back) it selects the row JSON alone: the
    key is read from it."""
    if not key_cols or count < 1:
        raise PlanError("nothing to read")
    target = _target(table)
    row_cols = list(row_cols) or list(key_cols)  # a delete has no row: read the key back
    tuple_ = "(" + ", ".join(["%s"] * len(key_cols)) + ")"
    cols = "(" + ", ".join(_quote(c) for c in key_cols) + ")"
    where = f"FROM {target} WHERE {cols} IN ({', '.join([tuple_] * count)})"
    if key_in_row(key_cols, row_cols):
        return f"SELECT {_members(json_function, row_cols, convert)} {where}", row_cols
    sql = f"SELECT {_members(json_function, key_cols, convert)}, {_members(json_function, row_cols, convert)} {where}"
    return sql, list(key_cols) + list(row_cols)


def key_in_row(key_cols: Sequence[str], row_cols: Sequence[str]) -> bool:
    return set(key_cols) <= set(row_cols)


def lock_statement(table: str, key_cols: Sequence[str], server_version: str, row_cols: Sequence[str] = (),
                   json_function: str = "udf_json_members", convert: Collection[str] = (),
                   wait: bool = False) -> Optional[str]:
    """A locking read of one row (a shared lock: in autocommit it ends with the statement).
    wait=False: it fails at once when another transaction holds the row's lock (an open
    INSERT/UPDATE/DELETE): MariaDB 10.3+ and MySQL 8.0+ have NOWAIT; None before. wait=True:
    it waits for that lock, up to the session's innodb_lock_wait_timeout (every server).
    It selects 1, or with row_cols the row as read_statement renders it and a gman_stamp()
    taken under the lock (the member names are then the leading parameters)."""
    m = re.match(r"(\d+)\.(\d+)", server_version or "")
    version = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
    mariadb = "mariadb" in (server_version or "").lower()
    if wait:
        lock = "FOR SHARE" if not mariadb and version >= (8, 0) else "LOCK IN SHARE MODE"
    elif mariadb:
        if version < (10, 3):
            return None
        lock = "LOCK IN SHARE MODE NOWAIT"
    elif version >= (8, 0):
        lock = "FOR SHARE NOWAIT"
    else:
        return None
    target = _target(table)
    cols = ", ".join(_quote(c) for c in key_cols)
    values = ", ".join(["%s"] * len(key_cols))
    select = f"{_members(json_function, row_cols, convert)}, gman_stamp()" if row_cols else "1"
    return f"SELECT {select} FROM {target} WHERE ({cols}) = ({values}) {lock}"


def key_params(key: Dict[str, Any], key_cols: Sequence[str]) -> List[Any]:
    return [decode_value(key[c]) for c in key_cols]


def key_id(key: Dict[str, Any], key_cols: Sequence[str]):
    """A hashable identity of a key, equal for the payload's key and the key read back: the
    values themselves when they are all plain ints and strings (the common key), else their
    JSON (exact numbers, base64 bytes). The same values take the same form on both sides."""
    values = tuple(key.get(c) for c in key_cols)
    for v in values:
        if type(v) is not int and type(v) is not str:
            return json.dumps(list(values), sort_keys=True)
    return values
