"""The comparison behind `gman-udf verify` and reconcile (pygen/sync/verify.py, whose docstring
tells the method): what the worker would have written for each row (pure), the SQL that
streams, re-reads and queues rows (pure), and the comparison loop with its Report. The fixes
(the Repairer) and the loads are pygen/sync/repair.py.
"""
from __future__ import annotations

import json
from decimal import Decimal
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from pygen import mysql
from pygen.sync import plan as plan_mod
from pygen.sync import schema, triggers
from pygen.sync.payload import Change
from pygen.sync.payload import loads as payload_loads

if TYPE_CHECKING:
    from pygen.sync.repair import Repairer

DEFAULT_TEMPLATE = plan_mod.DEFAULT_TEMPLATE
BATCH = 1000
GLOB_SPECIAL = "\\*?[]"


# ---- keys and values, as the worker writes them (pure) ---------------------------------------

def expected_write(t: schema.TableSchema, key: Dict[str, Any], row: Dict[str, Any],
                   options: plan_mod.Options, version: Optional[int] = None) -> plan_mod.Write:
    """What the worker writes for this row: its key and its value (plan.plan)."""
    return plan_mod.plan(Change("upsert", t.qualified, key, version, row), options)[0]


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in GLOB_SPECIAL else c for c in text)


def scan_pattern(template: str, table: str) -> str:
    """The Redis MATCH pattern of every key the template can give for this table: {table}
    filled in, any other placeholder a '*'. '{table}:{key}' -> 'shop.data:*'."""
    out: List[str] = []
    for placeholder, text in plan_mod.compile_template(template):
        if not placeholder:
            out.append(_glob_escape(text))
        elif text == "table":
            out.append(_glob_escape(table))
        elif not (out and out[-1] == "*"):
            out.append("*")
    return "".join(out)


def is_version_key(key: bytes) -> bool:
    return key.endswith(b"#v")


def _by_value(text):
    """Parsed JSON where numbers compare by value (2.5 == 2.5000)."""
    return json.loads(text, parse_float=Decimal)


def stored_matches(write: plan_mod.Write, got: Any) -> bool:
    """True when what Redis holds (GET or HGETALL's reply) is what the write would leave:
    JSON compared parsed (key order, 2.5000 vs 2.5 do not matter), hashes field by field."""
    if isinstance(got, Exception):  # WRONGTYPE: a hash where a string belongs, or the reverse
        return False
    if write.op == "hash":
        return got == dict(zip(write.values[0::2], write.values[1::2]))
    if got is None:
        return False
    try:
        return _by_value(got) == _by_value(write.values[0])
    except (ValueError, UnicodeDecodeError):
        return False


def is_missing(write: plan_mod.Write, got: Any) -> bool:
    if write.op == "hash":
        return got == {} and len(write.values) > 0
    return got is None


# ---- SQL (pure) ------------------------------------------------------------------------------

def select_rows_sql(t: schema.TableSchema) -> str:
    """Each row's key object, row object and raw key values, as the triggers render them."""
    raw = ", ".join(schema.quote_ident(c.name) for c in t.key)
    return (f"SELECT {triggers.object_expr(t.key)}, {triggers.object_expr(t.columns)}, {raw} "
            f"FROM {t.quoted}")


def key_condition(t: schema.TableSchema, n: int) -> str:
    """WHERE text for n keys (mysqlclient %s placeholders, values flattened in key order)."""
    cols = ", ".join(schema.quote_ident_fmt(c.name) for c in t.key)
    one = "(" + ", ".join(["%s"] * len(t.key)) + ")"
    return f"({cols}) IN ({', '.join([one] * n)})"


def reread_sql(t: schema.TableSchema, keys: int) -> str:
    """The rows of `keys` keys, read again under a shared lock, with a version taken after it."""
    sql = f"SELECT {triggers.object_expr(t.key)}, {triggers.object_expr(t.columns)}, gman_stamp() FROM {t.quoted}"
    return sql.replace("%", "%%") + f" WHERE {key_condition(t, keys)} LOCK IN SHARE MODE"


def bulk_sql(t: schema.TableSchema, function: str, keys: int = 0) -> str:
    """Queue an upsert job per row in one statement: the whole table (the initial load), or
    the rows of `keys` keys (then a statement for mysqlclient's %s parameters).

    LOCK IN SHARE MODE: the read waits for an uncommitted change of a row, so the version
    (gman_stamp(), taken after the read) is newer than that change's own job."""
    sql = (f"SELECT gman_bulk_background({triggers.sql_string(function)}, {triggers.payload_expr(t, 'upsert')}) "
           f"FROM {t.quoted}")
    if not keys:
        return sql + " LOCK IN SHARE MODE"
    return sql.replace("%", "%%") + f" WHERE {key_condition(t, keys)} LOCK IN SHARE MODE"


# ---- the comparison loop ---------------------------------------------------------------------

@dataclass
class Report:
    rows: int = 0
    missing: List[str] = field(default_factory=list)
    stale: List[str] = field(default_factory=list)
    extra: List[str] = field(default_factory=list)
    frozen: List[str] = field(default_factory=list)
    counts: Dict[str, int] = field(default_factory=lambda: {"missing": 0, "stale": 0, "extra": 0, "frozen": 0})
    repaired: Dict[str, int] = field(default_factory=lambda: {"written": 0, "newer": 0, "queued": 0, "deleted": 0,
                                                              "reset": 0})
    extras_checked: bool = True
    keep: int = 10  # examples kept per kind

    def add(self, kind: str, key: str) -> None:
        self.counts[kind] += 1
        examples = getattr(self, kind)
        if len(examples) < self.keep:
            examples.append(key)

    @property
    def differences(self) -> int:
        return sum(self.counts.values())


def estimate_rows(conn, t: schema.TableSchema) -> int:
    """The server's estimate of the table's row count (0 when unknown)."""
    n = mysql.scalar(conn, "SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s "
                     "AND TABLE_NAME = %s", (t.schema, t.name))
    return int(n or 0)


def stream_rows(conn, t: schema.TableSchema, batch: int = BATCH):
    """Batches of (key dict, row dict, raw key values) through a server-side cursor."""
    import MySQLdb.cursors
    cur = conn.cursor(MySQLdb.cursors.SSCursor)
    try:
        cur.execute(select_rows_sql(t))
        while True:
            rows = cur.fetchmany(batch)
            if not rows:
                break
            yield decode_rows(t, rows)
    finally:
        cur.close()


def decode_rows(t: schema.TableSchema, rows) -> list:
    """select_rows_sql's result rows as (key dict, row dict, raw key values)."""
    if any(r[0] is None or r[1] is None for r in rows):
        raise RuntimeError(f"udf_json_object returned NULL for a row of {t.qualified}")
    n = len(t.key)
    return [(payload_loads(r[0]), payload_loads(r[1]), tuple(r[2:2 + n])) for r in rows]


def version_ahead(version, now: int) -> bool:
    """True when a version key's value (bytes, None) is a version above `now`."""
    try:
        return version is not None and int(version) > now
    except ValueError:
        return False


def compare_rows(t: schema.TableSchema, rows, redis, options: plan_mod.Options, report: Report,
                 expected: Optional[set] = None, repairer: Optional[Repairer] = None, stamp=None) -> List[tuple]:
    """Compare one batch of rows (stream_rows' (key, row, raw key) triples) with Redis, count
    what differs in report, repair it when a repairer is given. expected: a set collecting
    the batch's Redis keys (bytes), for compare_extras. stamp: as compare()'s. Returns the
    raw keys of the rows that differed."""
    writes = [expected_write(t, key, row, options) for key, row, _ in rows]
    pipe = redis.pipeline(transaction=False)
    for w in writes:
        pipe.hgetall(w.key) if w.op == "hash" else pipe.get(w.key)
        if stamp is not None:
            pipe.get(w.version_key)
    stored = pipe.execute(raise_on_error=False)
    if stamp is not None:  # taken after the reads: every genuine version read is below it
        now = stamp()
        stored, versions = stored[0::2], stored[1::2]
    else:
        versions = [None] * len(stored)
    todo, ahead = [], []
    for w, (_, _, raw), got, version in zip(writes, rows, stored, versions):
        if expected is not None:
            expected.add(w.key.encode("utf-8"))
        is_ahead = stamp is not None and not isinstance(version, Exception) and version_ahead(version, now)
        if is_missing(w, got):
            report.add("missing", w.key)
        elif not stored_matches(w, got):
            report.add("stale", w.key)
        elif is_ahead:
            report.add("frozen", w.key)
        else:
            continue
        todo.append(raw)
        if is_ahead:
            ahead.append(w.version_key)
    report.rows += len(rows)
    if repairer is not None:
        repairer.rows(todo, report, ahead)
    return todo


def compare_extras(t: schema.TableSchema, redis, options: plan_mod.Options, expected: set, report: Report,
                   repairer: Optional[Repairer] = None, batch: int = BATCH) -> None:
    """The table's keys in Redis (SCAN MATCH of the template's pattern) that are not in
    `expected`: counted as extra, and deleted (guarded by repairer.since) with a repairer."""
    pattern = scan_pattern(options.key_template or DEFAULT_TEMPLATE, t.qualified)
    if not pattern.strip("*"):  # '{key}' alone: every key of the database would be a candidate
        report.extras_checked = False
        return
    gone: List[bytes] = []
    for key in redis.scan_iter(match=pattern, count=batch):
        if key in expected or is_version_key(key):
            continue
        report.add("extra", key.decode("utf-8", "replace"))
        gone.append(key)
        if repairer is not None and len(gone) >= batch:
            repairer.extras(gone, report)
            gone = []
    if repairer is not None:
        repairer.extras(gone, report)


def compare(conn, t: schema.TableSchema, redis, options: plan_mod.Options = plan_mod.Options(),
            repairer: Optional[Repairer] = None, progress=None,
            keep: int = 10, batch: int = BATCH, stamp=None) -> Report:
    """Compare every row of t with Redis (and repair when a repairer is given). progress:
    anything with update(rows), e.g. verify.Progress. stamp: a callable returning gman_stamp()
    on a connection that is not `conn` (the repairer's when there is one); with it, version
    keys ahead of gman_stamp() (forged: they freeze their key) are found too ("frozen")."""
    report = Report(keep=keep)
    expected: set = set()
    if repairer is not None:
        repairer.start()
        stamp = stamp or repairer.stamp
    for rows in stream_rows(conn, t, batch):
        compare_rows(t, rows, redis, options, report, expected, repairer, stamp)
        if progress is not None:
            progress.update(len(rows))
    compare_extras(t, redis, options, expected, report, repairer, batch)
    return report


def format_report(t: schema.TableSchema, report: Report, repaired: bool) -> str:
    c = report.counts
    extra = f"{c['extra']} extra" if report.extras_checked else "extra keys not checked (the key template has no fixed part)"
    ahead = f", {c['frozen']} frozen (a version ahead of gman_stamp())" if c["frozen"] else ""
    lines = [f"{t.qualified}: {report.rows} rows; {c['missing']} missing, {c['stale']} stale, {extra}{ahead}"]
    for kind in ("missing", "stale", "extra", "frozen"):
        examples = getattr(report, kind)
        if examples:
            more = f" (and {c[kind] - len(examples)} more)" if c[kind] > len(examples) else ""
            lines.append(f"  {kind}: {', '.join(examples)}{more}")
    if repaired:
        r = report.repaired
        reset = f", {r['reset']} versions ahead of gman_stamp() reset" if r["reset"] else ""
        lines.append(f"repaired: {r['written']} written, {r['queued']} queued as jobs, {r['deleted']} deleted{reset}, "
                     f"{r['newer']} left alone (Redis already holds a newer version)")
    return "\n".join(lines) + "\n"
