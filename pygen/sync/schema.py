"""A table as the sync sees it: its key, the synced columns and their charsets (TableSchema),
read from a server's information_schema (read_schema) for a table named on the command line
(--table, --key, --columns), and the quoting of its names in SQL. The triggers' SQL is
pygen/sync/triggers.py.
"""
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

from pygen import mysql

UTF8_CHARSETS = {"utf8mb4", "utf8mb3", "utf8", "ascii", "binary"}  # bytes already fine as they are


class SchemaError(ValueError):
    """The table or a column named on the command line does not exist, or cannot be synced."""


@dataclass(frozen=True)
class Column:
    name: str
    data_type: str = "int"          # information_schema.COLUMNS.DATA_TYPE
    charset: Optional[str] = None   # CHARACTER_SET_NAME; None for non-text types

    @property
    def is_text(self) -> bool:
        return self.charset is not None and self.charset != "binary"

    @property
    def needs_convert(self) -> bool:
        return self.charset is not None and self.charset.lower() not in UTF8_CHARSETS


@dataclass(frozen=True)
class TableSchema:
    """What the triggers are generated from: a table, its key and the synced columns."""
    schema: str
    name: str
    key: Tuple[Column, ...]
    columns: Tuple[Column, ...]   # the synced columns: the payload's "row"
    all_columns: Tuple[Column, ...] = field(default=())

    @property
    def qualified(self) -> str:       # the payload's "table"
        return f"{self.schema}.{self.name}"

    @property
    def quoted(self) -> str:
        return f"{quote_ident(self.schema)}.{quote_ident(self.name)}"

    @property
    def guarded(self) -> Tuple[Column, ...]:
        """Columns whose change makes the UPDATE trigger send: the synced ones and the key."""
        names = {c.name for c in self.columns}
        return tuple(self.columns) + tuple(c for c in self.key if c.name not in names)


# ---- quoting ---------------------------------------------------------------------------------

def quote_ident(name: str) -> str:
    """`name` with embedded backticks doubled: safe for any identifier the server allows."""
    if not name or "\0" in name:
        raise SchemaError(f"not a valid identifier: {name!r}")
    return "`" + name.replace("`", "``") + "`"


def quote_ident_fmt(name: str) -> str:
    """quote_ident(name) for the text of a %s-format query: a % in the name is doubled too."""
    return quote_ident(name).replace("%", "%%")


# ---- the table from a server -----------------------------------------------------------------

def parse_table_name(text: str, default_schema: Optional[str]) -> Tuple[str, str]:
    """A table named on the command line: 'db.t', '`d.b`.`t`' (backticks quote, `` is one),
    't' (in default_schema) -> (schema, table)."""
    parts, buf, i, quoted = [], "", 0, False
    while i < len(text):
        c = text[i]
        if c == "`":
            if quoted and text[i + 1:i + 2] == "`":
                buf += "`"
                i += 1
            else:
                quoted = not quoted
        elif c == "." and not quoted and len(parts) == 0:
            parts.append(buf)
            buf = ""
        else:
            buf += c
        i += 1
    if quoted:
        raise SchemaError(f"unbalanced backtick in table name {text!r}")
    parts.append(buf)
    if len(parts) == 1:
        if not default_schema:
            raise SchemaError(f"table {text!r}: give it as db.table, or choose a database with -D")
        return default_schema, parts[0]
    return parts[0], parts[1]


def split_names(text: Optional[str]) -> Optional[List[str]]:
    """'a, b,c' -> ['a', 'b', 'c']; None stays None."""
    if text is None:
        return None
    names = [n.strip() for n in text.split(",")]
    if not all(names):
        raise SchemaError(f"empty column name in {text!r}")
    return names


def read_schema(conn, table: str, key: Optional[Sequence[str]] = None,
                columns: Optional[Sequence[str]] = None) -> TableSchema:
    """The table's columns from information_schema; key defaults to the primary key,
    columns to every column. Raises SchemaError for names that do not exist."""
    cur = conn.cursor()
    cur.execute("SELECT DATABASE()")
    schema, name = parse_table_name(table, mysql.text(cur.fetchone()[0]))
    cur.execute("SELECT TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
                (schema, name))
    found = cur.fetchone()
    if found is None:
        raise SchemaError(f"table {schema}.{name} does not exist (or you may not see it)")
    if mysql.text(found[0]) not in ("BASE TABLE", "SYSTEM VERSIONED"):
        raise SchemaError(f"{schema}.{name} is a {mysql.text(found[0]).lower()}, not a table: it cannot have triggers")
    cur.execute("SELECT COLUMN_NAME, DATA_TYPE, CHARACTER_SET_NAME FROM information_schema.COLUMNS "
                "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION", (schema, name))
    all_cols = tuple(Column(mysql.text(n), mysql.text(t).lower(), mysql.text(cs)) for n, t, cs in cur.fetchall())
    by_name = {c.name.lower(): c for c in all_cols}  # column names are case-insensitive

    def pick(names, what):
        missing = [n for n in names if n.lower() not in by_name]
        if missing:
            raise SchemaError(f"{schema}.{name} has no column {', '.join(map(repr, missing))} ({what}); "
                              f"its columns: {', '.join(c.name for c in all_cols)}")
        if len({n.lower() for n in names}) != len(names):
            raise SchemaError(f"a column is named twice in {what}: {', '.join(names)}")
        return tuple(by_name[n.lower()] for n in names)

    synced = pick(list(columns), "--columns") if columns else all_cols
    if key:
        key_cols = pick(list(key), "--key")
    else:
        cur.execute("SELECT COLUMN_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = %s "
                    "AND TABLE_NAME = %s AND INDEX_NAME = 'PRIMARY' ORDER BY SEQ_IN_INDEX", (schema, name))
        key_cols = pick([mysql.text(r[0]) for r in cur.fetchall()], "primary key")
        if not key_cols:
            raise SchemaError(f"{schema}.{name} has no primary key: name the key columns with --key")
    cur.close()
    return TableSchema(schema, name, key_cols, synced, all_cols)


# ---- the command line -----------------------------------------------------------------------

def add_table_arguments(ap) -> None:
    """--table, --key, --columns: of `gman-udf trigger`, `verify` and `load`."""
    ap.add_argument("--table", required=True, metavar="T", help="the table: db.table, or table with -D db")
    ap.add_argument("--key", metavar="COL[,COL]", help="the key columns (default: the primary key)")
    ap.add_argument("--columns", metavar="A,B,...", help="the synced columns (default: all)")



def schema_from_args(conn, args) -> TableSchema:
    return read_schema(conn, args.table, split_names(args.key), split_names(args.columns))
