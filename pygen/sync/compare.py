"""The engine behind `gman-udf verify` and `gman-udf load` (pygen/sync/verify.py, whose docstring
tells the method): what the worker would have written for each row (pure), the SQL that
streams, re-reads and queues rows (pure), the comparison loop with its Report, the Repairer
that fixes differences, and the loads.
"""
import json
from decimal import Decimal
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

from pygen.sync import plan as plan_mod
from pygen.sync import schema, triggers
from pygen.sync.payload import Change
from pygen.sync.payload import loads as payload_loads
from pygen.sync.redis_scripts import APPLY, RESET

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


def _text(v) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, (bytes, bytearray)) else str(v)


def _scalar(conn, sql: str, params=None):
    cur = conn.cursor()
    try:
        cur.execute(sql, params)
        row = cur.fetchone()
        return row[0] if row else None
    finally:
        cur.close()


def estimate_rows(conn, t: schema.TableSchema) -> int:
    """The server's estimate of the table's row count (0 when unknown)."""
    n = _scalar(conn, "SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
                (t.schema, t.name))
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


class Repairer:
    """Fixes differences as they are found: guarded writes into Redis, or Gearman jobs.
    conn must be free (not the one streaming the table)."""

    def __init__(self, t: schema.TableSchema, redis, conn, options: plan_mod.Options,
                 function: Optional[str] = None):
        self.t, self.redis, self.conn, self.options, self.function = t, redis, conn, options, function
        self.script = redis.register_script(APPLY)
        self.reset_script = redis.register_script(RESET)
        self.since: Optional[int] = None  # the stamp before the scan: guards the deletes of extras
        # a ClusterPipeline refuses evalsha() (so Script objects): EVALSHA as a plain command,
        # the scripts loaded on every primary first
        self.cluster = type(redis).__name__ == "RedisCluster"
        self.loaded = False

    def _call(self, pipe, script, keys, args) -> None:
        if not self.cluster:
            script(keys=keys, args=args, client=pipe)
            return
        if not self.loaded:
            self.redis.script_load(APPLY)
            self.redis.script_load(RESET)
            self.loaded = True
        pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)

    def start(self) -> None:
        self.since = self.stamp()

    def stamp(self) -> int:
        return int(_scalar(self.conn, "SELECT gman_stamp()"))

    def _run(self, writes: Sequence[plan_mod.Write]) -> List[bool]:
        """The worker's guarded writes, one script call each (one Cluster slot each); for each,
        whether it was skipped because Redis holds a newer version."""
        pipe = self.redis.pipeline(transaction=False)
        for w in writes:
            keys, args = plan_mod.script_args([w])
            self._call(pipe, self.script, keys, args)
        return [bool(int(n)) for n in pipe.execute()]

    def reset_ahead(self, version_keys: Sequence[str], report: Report) -> None:
        """Delete the version keys that hold a version ahead of gman_stamp(), read after them:
        a forged job's (no trigger of this server stamped it), which no guarded write passes."""
        if not version_keys:
            return
        pipe = self.redis.pipeline(transaction=False)
        for vkey in version_keys:
            pipe.get(vkey)
        held = pipe.execute()
        now = self.stamp()
        pipe = self.redis.pipeline(transaction=False)
        n = 0
        for vkey, version in zip(version_keys, held):
            if version_ahead(version, now):
                self._call(pipe, self.reset_script, [vkey], [version])
                n += 1
        if n:
            report.repaired["reset"] += sum(int(x) for x in pipe.execute())

    def _write(self, writes: Sequence[plan_mod.Write], report: Report, kind: str) -> None:
        """Guarded writes; those skipped for a version ahead of gman_stamp() are written again
        once that version is reset."""
        skipped = self._run(writes)
        held = [w for w, s in zip(writes, skipped) if s]
        if held:
            before = report.repaired["reset"]
            self.reset_ahead([w.version_key for w in held], report)
            if report.repaired["reset"] > before:
                held = [w for w, s in zip(held, self._run(held)) if s]
        report.repaired[kind] += len(writes) - len(held)
        report.repaired["newer"] += len(held)

    def rows(self, raw_keys: Sequence[tuple], report: Report, version_keys: Sequence[str] = ()) -> None:
        """Repair the rows of these keys (raw key values, in key column order); version_keys:
        theirs in Redis, to reset those ahead of gman_stamp() before jobs are queued."""
        if not raw_keys:
            return
        params = [v for raw in raw_keys for v in raw]
        if self.function is not None:
            self.reset_ahead(version_keys, report)  # or the worker would skip the jobs
        cur = self.conn.cursor()
        try:
            if self.function is not None:
                cur.execute(bulk_sql(self.t, self.function, len(raw_keys)), params)
                queued = cur.fetchone()[0]
                if queued is None:
                    cur.execute("SELECT gman_last_error()")
                    raise RuntimeError(f"gman_bulk_background failed: {_text(cur.fetchone()[0])}")
                report.repaired["queued"] += int(queued)
                return
            cur.execute(reread_sql(self.t, len(raw_keys)), params)
            fresh = cur.fetchall()
        finally:
            cur.close()
        writes = [expected_write(self.t, payload_loads(k), payload_loads(r), self.options, int(v)) for k, r, v in fresh]
        self._write(writes, report, "written")

    def extras(self, keys: Sequence[bytes], report: Report) -> None:
        if not keys:
            return
        ttl_ms = round(self.options.tombstone_ttl * 1000)
        writes = [plan_mod.Write("del", _text(k), plan_mod.version_key(_text(k)), self.since, ttl_ms) for k in keys]
        self._write(writes, report, "deleted")


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
        report.add("extra", _text(key))
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


# ---- the initial load ------------------------------------------------------------------------

def load_via_gearman(conn, t: schema.TableSchema, function: str) -> int:
    """Queue an upsert job for every row, in one statement; returns how many were queued."""
    cur = conn.cursor()
    try:
        cur.execute(bulk_sql(t, function))
        queued = cur.fetchone()[0]
        if queued is None:
            cur.execute("SELECT gman_last_error()")
            raise RuntimeError(f"gman_bulk_background failed: {_text(cur.fetchone()[0])}")
        return int(queued)
    finally:
        cur.close()


def load_into_redis(conn, spare, t: schema.TableSchema, redis, options: plan_mod.Options,
                    progress=None, batch: int = BATCH) -> Report:
    """Write every row into Redis: the keys are streamed from conn, each batch of rows read
    again under a lock on `spare` and written with the worker's guarded writes."""
    report = Report()
    repairer = Repairer(t, redis, spare, options)
    for rows in stream_rows(conn, t, batch):
        repairer.rows([raw for _, _, raw in rows], report)
        report.rows += len(rows)
        if progress is not None:
            progress.update(len(rows))
    return report
