"""`gman-udf verify` and `gman-udf load`: compare a table with Redis, repair it, or load it.

verify streams every row (a server-side cursor: the table never sits in memory), works out
what the worker would have written for it (pygen/apply.py: the key from the key template,
the value in json or hash mode, from the row rendered by the server with the triggers'
own expressions) and compares that with Redis in pipelined batches. It reports:
- missing: a row whose key is not in Redis;
- stale: a key whose value differs from the row (or has the wrong type, or is not JSON);
- extra: a key matching the template's pattern for this table (SCAN MATCH, never KEYS)
  with no row. Finding extras keeps the set of the table's keys in memory (not its rows);
  the worker's version keys ("{k}#v") are not data and never count.

--repair fixes what it found, batch by batch. The differing rows are read again with a
locking read (LOCK IN SHARE MODE: it waits for an uncommitted change of the row) and
gman_stamp() taken after it, so on a live table the repair carries each row's latest
committed image with a version newer than any change already made, and older than any
change to come. Then, either
- directly: the worker's own version-guarded write (pygen/redis_scripts.py APPLY), so a
  newer image a worker wrote meanwhile is kept; or
- --via-gearman: upsert jobs queued by `SELECT gman_bulk_background(fn, <payload>) FROM T
  WHERE <key> IN (...) LOCK IN SHARE MODE`, written by the worker like any trigger's job.
Extras are deleted directly, guarded by a stamp taken before the scan: a row inserted
during the scan (a newer version in Redis) is left alone.

`gman-udf load` is the initial load: every row, through Gearman in one statement
(--via-gearman), or straight into Redis with the guarded writes above.

Exit code: 0 when Redis matches the table (or every difference was repaired), 1 when
differences remain, 2 on a usage or connection error.
"""
import json
from decimal import Decimal
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

from . import apply as plan_mod
from . import connect as connmod
from . import triggers
from .payload import Change
from .payload import loads as payload_loads
from .redis_scripts import APPLY

DEFAULT_TEMPLATE = plan_mod.DEFAULT_TEMPLATE
BATCH = 1000
GLOB_SPECIAL = "\\*?[]"


# ---- keys and values, as the worker writes them (pure) ---------------------------------------

def expected_write(t: triggers.TableSchema, key: Dict[str, Any], row: Dict[str, Any],
                   options: plan_mod.Options, version: Optional[int] = None) -> plan_mod.Write:
    """What the worker writes for this row: its key and its value (apply.plan)."""
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

def select_rows_sql(t: triggers.TableSchema) -> str:
    """Each row's key object, row object and raw key values, as the triggers render them."""
    raw = ", ".join(triggers.quote_ident(c.name) for c in t.key)
    return (f"SELECT {triggers.object_expr(t.key)}, {triggers.object_expr(t.columns)}, {raw} "
            f"FROM {t.quoted}")


def key_condition(t: triggers.TableSchema, n: int) -> str:
    """WHERE text for n keys (mysqlclient %s placeholders, values flattened in key order)."""
    cols = ", ".join(triggers.quote_ident(c.name).replace("%", "%%") for c in t.key)
    one = "(" + ", ".join(["%s"] * len(t.key)) + ")"
    return f"({cols}) IN ({', '.join([one] * n)})"


def reread_sql(t: triggers.TableSchema, keys: int) -> str:
    """The rows of `keys` keys, read again under a shared lock, with a version taken after it."""
    sql = f"SELECT {triggers.object_expr(t.key)}, {triggers.object_expr(t.columns)}, gman_stamp() FROM {t.quoted}"
    return sql.replace("%", "%%") + f" WHERE {key_condition(t, keys)} LOCK IN SHARE MODE"


def bulk_sql(t: triggers.TableSchema, function: str, keys: int = 0) -> str:
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
    counts: Dict[str, int] = field(default_factory=lambda: {"missing": 0, "stale": 0, "extra": 0})
    repaired: Dict[str, int] = field(default_factory=lambda: {"written": 0, "newer": 0, "queued": 0, "deleted": 0})
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


class Progress:
    """A one-line progress bar on stderr, drawn only on a terminal, at most 10 times a second."""

    def __init__(self, label: str, total: int, stream=None):
        self.stream = stream or sys.stderr
        self.on = self.stream.isatty()
        self.label, self.total, self.done, self.last = label, max(total, 0), 0, 0.0

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.on and now - self.last >= 0.1:
            self.last = now
            self.draw()

    def draw(self) -> None:
        if self.total and self.done <= self.total:
            width = 30
            fill = int(width * self.done / self.total)
            bar = f"[{'#' * fill}{'.' * (width - fill)}] {self.done}/{self.total} rows"
        else:  # the estimate (TABLE_ROWS) was low, or unknown
            bar = f"{self.done} rows"
        self.stream.write(f"\r{self.label} {bar}\x1b[K")
        self.stream.flush()

    def close(self) -> None:
        if self.on:
            self.draw()
            self.stream.write("\n")
            self.stream.flush()


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


def _estimate_rows(conn, t: triggers.TableSchema) -> int:
    n = _scalar(conn, "SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
                (t.schema, t.name))
    return int(n or 0)


def stream_rows(conn, t: triggers.TableSchema, batch: int = BATCH):
    """Batches of (key dict, row dict, raw key values) through a server-side cursor."""
    import MySQLdb.cursors
    cur = conn.cursor(MySQLdb.cursors.SSCursor)
    try:
        cur.execute(select_rows_sql(t))
        n = len(t.key)
        while True:
            rows = cur.fetchmany(batch)
            if not rows:
                break
            if any(r[0] is None or r[1] is None for r in rows):
                raise RuntimeError(f"udf_json_object returned NULL for a row of {t.qualified}")
            yield [(payload_loads(r[0]), payload_loads(r[1]), tuple(r[2:2 + n])) for r in rows]
    finally:
        cur.close()


class Repairer:
    """Fixes differences as they are found: guarded writes into Redis, or Gearman jobs.
    conn must be free (not the one streaming the table)."""

    def __init__(self, t: triggers.TableSchema, redis, conn, options: plan_mod.Options,
                 function: Optional[str] = None):
        self.t, self.redis, self.conn, self.options, self.function = t, redis, conn, options, function
        self.script = redis.register_script(APPLY)
        self.since: Optional[int] = None  # the stamp before the scan: guards the deletes of extras

    def start(self) -> None:
        self.since = int(_scalar(self.conn, "SELECT gman_stamp()"))

    def _run(self, writes: Sequence[plan_mod.Write]) -> int:
        """The worker's guarded writes, one script call each (one Cluster slot each); returns
        how many were skipped because Redis holds a newer version."""
        pipe = self.redis.pipeline(transaction=False)
        for w in writes:
            keys, args = plan_mod.script_args([w])
            self.script(keys=keys, args=args, client=pipe)
        return sum(int(n) for n in pipe.execute())

    def rows(self, raw_keys: Sequence[tuple], report: Report) -> None:
        """Repair the rows of these keys (raw key values, in key column order)."""
        if not raw_keys:
            return
        params = [v for raw in raw_keys for v in raw]
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
        newer = self._run(writes)
        report.repaired["written"] += len(writes) - newer
        report.repaired["newer"] += newer

    def extras(self, keys: Sequence[bytes], report: Report) -> None:
        if not keys:
            return
        ttl_ms = round(self.options.tombstone_ttl * 1000)
        writes = [plan_mod.Write("del", _text(k), plan_mod.version_key(_text(k)), self.since, ttl_ms) for k in keys]
        newer = self._run(writes)
        report.repaired["deleted"] += len(writes) - newer
        report.repaired["newer"] += newer


def compare(conn, t: triggers.TableSchema, redis, options: plan_mod.Options = plan_mod.Options(),
            repairer: Optional[Repairer] = None, progress: Optional[Progress] = None,
            keep: int = 10, batch: int = BATCH) -> Report:
    """Compare every row of t with Redis (and repair when a repairer is given)."""
    report = Report(keep=keep)
    template = options.key_template or DEFAULT_TEMPLATE
    expected = set()
    if repairer is not None:
        repairer.start()
    for rows in stream_rows(conn, t, batch):
        writes = [expected_write(t, key, row, options) for key, row, _ in rows]
        pipe = redis.pipeline(transaction=False)
        for w in writes:
            pipe.hgetall(w.key) if w.op == "hash" else pipe.get(w.key)
        stored = pipe.execute(raise_on_error=False)
        todo = []
        for w, (_, _, raw), got in zip(writes, rows, stored):
            expected.add(w.key.encode("utf-8"))
            if is_missing(w, got):
                report.add("missing", w.key)
            elif not stored_matches(w, got):
                report.add("stale", w.key)
            else:
                continue
            todo.append(raw)
        report.rows += len(rows)
        if repairer is not None:
            repairer.rows(todo, report)
        if progress is not None:
            progress.update(len(rows))
    pattern = scan_pattern(template, t.qualified)
    if not pattern.strip("*"):  # '{key}' alone: every key of the database would be a candidate
        report.extras_checked = False
        return report
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
    return report


def format_report(t: triggers.TableSchema, report: Report, repaired: bool) -> str:
    c = report.counts
    extra = f"{c['extra']} extra" if report.extras_checked else "extra keys not checked (the key template has no fixed part)"
    lines = [f"{t.qualified}: {report.rows} rows; {c['missing']} missing, {c['stale']} stale, {extra}"]
    for kind in ("missing", "stale", "extra"):
        examples = getattr(report, kind)
        if examples:
            more = f" (and {c[kind] - len(examples)} more)" if c[kind] > len(examples) else ""
            lines.append(f"  {kind}: {', '.join(examples)}{more}")
    if repaired:
        r = report.repaired
        lines.append(f"repaired: {r['written']} written, {r['queued']} queued as jobs, {r['deleted']} deleted, "
                     f"{r['newer']} left alone (Redis already holds a newer version)")
    return "\n".join(lines) + "\n"


# ---- the commands ----------------------------------------------------------------------------

def redis_client(url: str):
    """redis.from_url's forms; redis+cluster:// (or rediss+cluster://) for Redis Cluster."""
    import redis
    scheme, sep, rest = url.partition("://")
    kw = {"socket_timeout": 30, "socket_connect_timeout": 10}
    if scheme.endswith("+cluster"):
        from redis.cluster import RedisCluster
        return RedisCluster.from_url(scheme[:-len("+cluster")] + sep + rest, **kw)
    return redis.Redis.from_url(url, **kw)


def _options(args) -> plan_mod.Options:
    return plan_mod.Options(mode=args.mode, key_template=args.key_template)


def _add_redis_arguments(ap, required: bool) -> None:
    if required:
        ap.add_argument("--redis", required=True, metavar="URL", help="e.g. redis://127.0.0.1:6379/0")
    ap.add_argument("--key-template", default=DEFAULT_TEMPLATE, metavar="T",
                    help="the worker's key template (default: %(default)s; placeholders: {table}, {key}, "
                         "and each key column by name)")
    ap.add_argument("--mode", choices=["json", "hash"], default="json",
                    help="how the worker stores a row (default: %(default)s)")


def add_arguments(ap) -> None:
    triggers.add_table_arguments(ap)
    _add_redis_arguments(ap, required=True)
    ap.add_argument("--repair", action="store_true", help="fix what differs")
    ap.add_argument("--via-gearman", action="store_true",
                    help="repair by queueing jobs for the worker (gman_bulk_background) instead of writing Redis")
    ap.add_argument("--function", default=triggers.DEFAULT_FUNCTION,
                    help="the Gearman function for --via-gearman (default: %(default)s)")
    ap.add_argument("--wait", type=float, default=0.0, metavar="S",
                    help="with --via-gearman: compare again until the worker has applied the jobs, at most S "
                         "seconds (exit 1 if differences remain); default: exit 0 once they are queued")
    ap.add_argument("--show", type=int, default=10, metavar="N", help="example keys shown per kind (default: 10)")
    connmod.add_arguments(ap)


def _check_template(t: triggers.TableSchema, options: plan_mod.Options) -> None:
    try:  # a template naming no key column fails now, not at the first row
        expected_write(t, {c.name: 0 for c in t.key}, {}, options)
    except plan_mod.PlanError as e:
        raise triggers.SchemaError(str(e)) from None


def run(args) -> int:
    import MySQLdb
    import redis as redislib
    try:
        options = _options(args)
        redis = redis_client(args.redis)
        conn = connmod.connect(connmod.from_args(args))
        spare = None
        try:
            t = triggers.schema_from_args(conn, args)
            _check_template(t, options)
            repairer = None
            if args.repair:
                spare = connmod.connect(connmod.from_args(args))  # the stream holds the first
                repairer = Repairer(t, redis, spare, options, args.function if args.via_gearman else None)
            progress = Progress(f"verify {t.qualified}", _estimate_rows(conn, t))
            try:
                report = compare(conn, t, redis, options, repairer, progress, args.show)
            finally:
                progress.close()
            sys.stdout.write(format_report(t, report, args.repair))
            if not report.differences:
                return 0
            if not args.repair:
                return 1
            if not (args.via_gearman and args.wait > 0):
                return 0  # written, or every job queued
            # the worker applies the jobs: compare again until it has, or the wait is over
            deadline = time.monotonic() + args.wait
            while True:
                time.sleep(0.2)
                again = compare(conn, t, redis, options, keep=args.show)
                if not again.differences or time.monotonic() > deadline:
                    break
            sys.stdout.write("after the worker: " + format_report(t, again, False))
            return 0 if not again.differences else 1
        finally:
            conn.close()
            if spare is not None:
                spare.close()
    except (triggers.SchemaError, ValueError, RuntimeError, MySQLdb.MySQLError, redislib.RedisError) as e:
        return triggers.fail("verify", e)


def add_load_arguments(ap) -> None:
    triggers.add_table_arguments(ap)
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--via-gearman", action="store_true",
                       help="queue an upsert job per row for the worker, in one statement (gman_bulk_background)")
    where.add_argument("--redis", metavar="URL", help="write the rows straight into Redis instead")
    _add_redis_arguments(ap, required=False)
    ap.add_argument("--function", default=triggers.DEFAULT_FUNCTION,
                    help="with --via-gearman: the Gearman function (default: %(default)s)")
    connmod.add_arguments(ap)


def load_via_gearman(conn, t: triggers.TableSchema, function: str) -> int:
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


def load_into_redis(conn, spare, t: triggers.TableSchema, redis, options: plan_mod.Options,
                    progress: Optional[Progress] = None, batch: int = BATCH) -> Report:
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


def run_load(args) -> int:
    import MySQLdb
    import redis as redislib
    try:
        conn = connmod.connect(connmod.from_args(args))
        spare = None
        try:
            t = triggers.schema_from_args(conn, args)
            if args.via_gearman:
                n = load_via_gearman(conn, t, args.function)
                print(f"{t.qualified}: {n} rows queued as {args.function} jobs")
                return 0
            options = _options(args)
            _check_template(t, options)
            redis = redis_client(args.redis)
            spare = connmod.connect(connmod.from_args(args))
            progress = Progress(f"load {t.qualified}", _estimate_rows(conn, t))
            try:
                report = load_into_redis(conn, spare, t, redis, options, progress)
            finally:
                progress.close()
            r = report.repaired
            print(f"{t.qualified}: {r['written']} rows written to Redis"
                  + (f", {r['newer']} left alone (Redis holds a newer version)" if r["newer"] else ""))
            return 0
        finally:
            conn.close()
            if spare is not None:
                spare.close()
    except (triggers.SchemaError, ValueError, RuntimeError, MySQLdb.MySQLError, redislib.RedisError) as e:
        return triggers.fail("load", e)


def main(argv=None) -> int:
    """`python -m pygen.verify [load] ...` until the lead wires both into pygen/cli.py."""
    import argparse
    argv = list(sys.argv[1:] if argv is None else argv)
    is_load = bool(argv) and argv[0] == "load"
    ap = argparse.ArgumentParser(prog="gman-udf " + ("load" if is_load else "verify"), add_help=False)
    ap.add_argument("--help", action="help", help="show this help and exit")
    (add_load_arguments if is_load else add_arguments)(ap)
    args = ap.parse_args(argv[1:] if is_load else argv)
    return (run_load if is_load else run)(args)


if __name__ == "__main__":
    sys.exit(main())
