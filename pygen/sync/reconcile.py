"""`gman-udf reconcile`: a long-running process that brings Redis back to MySQL by itself
(the command line: pygen/sync/reconcile_cli.py).

    gman-udf reconcile --table shop.data --table shop.orders --redis redis://cache:6379/0 \\
        --mysql mysql://gman@db/shop [--rate 2000] [--interval 30] [--metrics-port 9101]

Over and over, it walks each table in primary-key order, one chunk at a time (keyset
pagination: `WHERE pk > last ORDER BY pk LIMIT n`, composite keys too, so each chunk is a
short range read of the primary key, never a table scan held open), and compares each chunk
with Redis exactly as `gman-udf verify --repair` does (pygen/sync/compare.py: compare_rows and
compare_extras are verify's own loop): missing and stale rows are read again under a shared
lock with a fresh gman_stamp() and written with the worker's version-guarded script, so a
newer image a worker wrote meanwhile is never overwritten; keys of rows gone from MySQL
(extras, found by SCAN at the end of a pass) are deleted, guarded by a stamp taken before
the pass; version keys ahead of gman_stamp() (forged) are reset.

Load: a token bucket holds the rows read from MySQL (the walk and the repairs' re-reads) to
--rate rows/s on average, with at most one chunk of burst. A pass of an in-sync table of R
rows takes R / rate seconds (plus one re-read per repaired row); passes start at most every
--interval seconds. A change lost before a pass starts (a killed in-memory gearmand, a
trigger whose gearmand was away) is repaired when that pass ends: the convergence bound is
the rest of the current pass plus one full pass.

Outages: a MySQL or Redis error is logged, counted, and retried with back-off (0.5 s doubling
to 30 s), resuming the pass where it stopped; nothing is fatal but bad options. A row locked
past innodb_lock_wait_timeout (set to LOCK_WAIT here) is left for the next pass. SIGTERM or
SIGINT stops between two chunks (exit 0).

Progress and repairs: one log line per pass, and Prometheus text (--metrics-port) with
per-table gman_reconcile_* counters and gauges (render_metrics()).
"""
from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

from pygen.sync import plan as plan_mod
from pygen.sync import schema, triggers
from pygen.sync.compare import Report, compare_extras, compare_rows, decode_rows, select_rows_sql
from pygen.sync.repair import Repairer

log = logging.getLogger("gman-udf.reconcile")

DEFAULT_RATE = 2000.0   # rows/s: see the README (consistency model) for why
DEFAULT_INTERVAL = 30.0
LOCK_WAIT = 5           # seconds a repair's locking read waits for a row lock
KINDS = ("missing", "stale", "extra", "frozen")
REPAIRS = ("written", "deleted", "reset", "newer")


# ---- pure parts ------------------------------------------------------------------------------

class TokenBucket:
    """`rate` tokens a second, at most `burst` banked. take(n) waits until min(n, burst) are
    there and then takes n (a debt when n > burst), so over any window of T seconds at most
    burst + rate * T tokens are taken. rate inf: never waits."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic):
        self.rate, self.burst, self.clock = rate, max(burst, 1.0), clock
        self.tokens, self.last = self.burst, clock()

    def delay(self, n: float) -> float:
        """Seconds until take(n) may proceed (0: now)."""
        if math.isinf(self.rate):
            return 0.0
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        return max(0.0, (min(n, self.burst) - self.tokens) / self.rate)

    def take(self, n: float, wait: Callable[[float], bool] = lambda s: bool(time.sleep(s))) -> bool:
        """Take n tokens, waiting with wait(seconds) (True: stop); False when stopped."""
        while True:
            d = self.delay(n)
            if d <= 0:
                if not math.isinf(self.rate):
                    self.tokens -= n
                return True
            if wait(d):
                return False


def after_condition(t: schema.TableSchema) -> str:
    """Keys after the last one read, (a, b) > (%s, %s) spelled as a > %s OR (a = %s AND b > %s),
    which both MariaDB and MySQL read as a range of the primary key."""
    cols = [schema.quote_ident_fmt(c.name) for c in t.key]
    parts = [" AND ".join([f"{c} = %s" for c in cols[:i]] + [f"{cols[i]} > %s"]) for i in range(len(cols))]
    return " OR ".join(f"({p})" for p in parts)


def after_params(last: tuple) -> list:
    return [v for i in range(len(last)) for v in last[:i + 1]]


def chunk_sql(t: schema.TableSchema, after: bool) -> str:
    """The next chunk in key order: select_rows_sql's columns; params: after_params(), limit."""
    order = ", ".join(schema.quote_ident_fmt(c.name) for c in t.key)
    where = f" WHERE {after_condition(t)}" if after else ""
    return f"{select_rows_sql(t).replace('%', '%%')}{where} ORDER BY {order} LIMIT %s"


def chunk_size(rate: float) -> int:
    """A quarter of a second of rows (10..1000): smooth load, few round trips."""
    return 1000 if math.isinf(rate) else int(min(1000, max(10, rate / 4)))


class Metrics:
    """Per-table counters and gauges, rendered as Prometheus text; one lock, any thread."""

    HELP = {
        "rows_checked_total": ("counter", "rows compared with Redis"),
        "rows_read_total": ("counter", "rows read from MySQL (the walk and the repairs' re-reads)"),
        "differences_total": ("counter", "differences found, by kind"),
        "repaired_total": ("counter", "keys repaired, by kind (newer: left alone, Redis held a newer version)"),
        "errors_total": ("counter", "MySQL or Redis errors (retried with back-off)"),
        "passes_total": ("counter", "full passes completed"),
        "pass_rows": ("gauge", "rows checked so far in the current pass"),
        "pass_seconds": ("gauge", "duration of the last full pass"),
        "pass_completed_timestamp_seconds": ("gauge", "Unix time the last full pass ended"),
    }

    def __init__(self):
        self.lock = threading.Lock()
        self.values: Dict[tuple, float] = {}

    def add(self, name: str, table: str, n: float = 1, kind: Optional[str] = None) -> None:
        with self.lock:
            k = (name, table, kind)
            self.values[k] = self.values.get(k, 0.0) + n

    def set(self, name: str, table: str, value: float) -> None:
        with self.lock:
            self.values[(name, table, None)] = value

    def get(self, name: str, table: str, kind: Optional[str] = None) -> float:
        with self.lock:
            return self.values.get((name, table, kind), 0.0)

    def render(self) -> str:
        with self.lock:
            values = dict(self.values)
        lines = []
        for name, (typ, text) in self.HELP.items():
            rows = sorted((k, v) for k, v in values.items() if k[0] == name)
            if not rows:
                continue
            lines += [f"# HELP gman_reconcile_{name} {text}", f"# TYPE gman_reconcile_{name} {typ}"]
            for (_, table, kind), v in rows:
                label = f'table="{_label(table)}"' + (f',kind="{kind}"' if kind else "")
                lines.append(f"gman_reconcile_{name}{{{label}}} {int(v) if v == int(v) else f'{v:.6f}'}")
        return "\n".join(lines) + "\n"


def _label(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def merge(into: Report, part: Report) -> None:
    """Add one chunk's Report to the pass's (counts, repairs, a few example keys)."""
    into.rows += part.rows
    for kind in KINDS:
        into.counts[kind] += part.counts[kind]
        room = into.keep - len(getattr(into, kind))
        getattr(into, kind).extend(getattr(part, kind)[:max(room, 0)])
    for kind, n in part.repaired.items():
        into.repaired[kind] += n
    into.extras_checked = into.extras_checked and part.extras_checked


def pass_line(table: str, n: int, seconds: float, r: Report, errors: int) -> str:
    c, rep = r.counts, r.repaired
    examples = "; ".join(f"{k}: {', '.join(getattr(r, k))}" for k in KINDS if getattr(r, k))
    return (f"{table}: pass {n} done in {seconds:.1f} s: {r.rows} rows checked; {c['missing']} missing, "
            f"{c['stale']} stale, {c['extra']} extra, {c['frozen']} frozen; repaired {rep['written']} written, "
            f"{rep['deleted']} deleted, {rep['reset']} versions reset, {rep['newer']} left alone (newer); "
            f"{errors} errors" + (f" [{examples}]" if examples else ""))


# ---- the loop --------------------------------------------------------------------------------

@dataclass
class Pass:
    """One pass over one table: where it is, what it found so far (survives reconnects)."""
    table: str
    started: float = field(default_factory=time.monotonic)
    last: Optional[tuple] = None     # the raw key values of the last row compared
    walked: bool = False             # every row compared: the extras are next
    since: Optional[int] = None      # gman_stamp() before the walk: guards the extras' deletes
    expected: set = field(default_factory=set)
    report: Report = field(default_factory=lambda: Report(keep=3))
    errors: int = 0
    schema: Optional[schema.TableSchema] = None  # read at the pass's start and after each outage


class Reconciler:
    """Passes over `tables` until stop is set. connect() returns a new MySQL connection;
    connect_redis() returns the redis-py client (redis_writer.redis_client), called at the
    first step until it gives one: a cluster client reaches a node when made, and a cluster
    away at the start is an outage like any other."""

    def __init__(self, tables: List[str], connect, connect_redis, options: plan_mod.Options = plan_mod.Options(),
                 rate: float = DEFAULT_RATE, interval: float = DEFAULT_INTERVAL, function: str = "syncToRedis",
                 metrics: Optional[Metrics] = None, stop: Optional[threading.Event] = None):
        self.tables, self.connect, self.connect_redis, self.options = tables, connect, connect_redis, options
        self.redis = None  # the client, once connect_redis() gave one
        self.interval, self.function = interval, function
        self.chunk = chunk_size(rate)
        self.bucket = TokenBucket(rate, self.chunk)
        self.metrics = metrics or Metrics()
        self.stop = stop or threading.Event()
        self.conn = None
        self.passes: Dict[str, int] = {}

    def run(self, rounds: Optional[int] = None) -> int:
        """Pass over every table, `rounds` times (None: until stopped). Returns how many keys
        the last round left alone (Redis held a newer version): 0 when all is repaired."""
        left, done = 0, 0
        while not self.stop.is_set() and (rounds is None or done < rounds):
            began, left = time.monotonic(), 0
            for table in self.tables:
                report = self.run_pass(table)
                if report is None:
                    break
                left += report.repaired["newer"]
            done += 1
            if rounds is None or done < rounds:
                self.stop.wait(max(0.0, self.interval - (time.monotonic() - began)))
        self._close()
        return left

    def run_pass(self, table: str) -> Optional[Report]:
        """One full pass over table, retrying through outages; None if stopped first."""
        import MySQLdb
        import redis as redislib
        p, delay = Pass(table), 0.5
        self.metrics.set("pass_rows", table, 0)
        while not self.stop.is_set():
            try:
                if self._step(p):
                    return self._finish(p)
                delay = 0.5
            except Exception as e:  # noqa: BLE001 - MySQL or Redis away, or one nobody foresaw: never fatal
                p.errors += 1
                self.metrics.add("errors_total", table)
                if not isinstance(e, (MySQLdb.Error, redislib.RedisError, OSError, schema.SchemaError)):
                    e = f"{type(e).__name__}: {e}"
                log.warning("%s: %s; retrying in %.1f s", table, e, delay)
                self._close()
                p.schema = None
                if self.stop.wait(delay):
                    break
                delay = min(delay * 2, 30.0)
        return None

    def _finish(self, p: Pass) -> Report:
        seconds = time.monotonic() - p.started
        n = self.passes[p.table] = self.passes.get(p.table, 0) + 1
        m = self.metrics
        m.add("passes_total", p.table)
        m.set("pass_seconds", p.table, seconds)
        m.set("pass_completed_timestamp_seconds", p.table, time.time())
        log.info("%s", pass_line(p.table, n, seconds, p.report, p.errors))
        return p.report

    def _mysql(self):
        if self.conn is None:
            conn = self.connect()
            cur = conn.cursor()
            cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
            cur.execute(f"SET SESSION innodb_lock_wait_timeout = {LOCK_WAIT}")
            self.conn = conn
        return self.conn

    def _close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:  # noqa: BLE001 - already broken
                pass
            self.conn = None

    def _schema(self, conn, table: str) -> schema.TableSchema:
        """The table, its primary key, and the columns its generated triggers send (all if none)."""
        cur = conn.cursor()
        cur.execute(triggers.SYNCED_SQL)
        sent = triggers.synced_tables(cur.fetchall(), self.function)
        cur.close()
        t = schema.read_schema(conn, table)
        cols = sent.get(t.qualified)
        if cols:
            t = schema.TableSchema(t.schema, t.name, t.key, tuple(c for c in t.all_columns if c.name in cols),
                                     t.all_columns)
        return t

    def _step(self, p: Pass) -> bool:
        """One chunk of the walk, or the extras at its end; True when the pass is complete."""
        import MySQLdb
        conn = self._mysql()
        if p.schema is None:
            p.schema = self._schema(conn, p.table)
        t = p.schema
        if self.redis is None:
            self.redis = self.connect_redis()
        repairer = Repairer(t, self.redis, conn, self.options)
        if p.since is None:
            p.since = repairer.stamp()
        repairer.since = p.since
        part = Report(keep=3)
        if p.walked:
            compare_extras(t, self.redis, self.options, p.expected, part, repairer)
            merge(p.report, part)
            self._count(p.table, part, 0)
            return True
        if not self.bucket.take(self.chunk, self.stop.wait):
            return False
        cur = conn.cursor()
        try:
            cur.execute(chunk_sql(t, p.last is not None), [*after_params(p.last or ()), self.chunk])
            fetched = cur.fetchall()
        finally:
            cur.close()
        rows = decode_rows(t, fetched) if fetched else []
        keys: set = set()
        reread = 0
        try:
            reread = len(compare_rows(t, rows, self.redis, self.options, part, keys, repairer, repairer.stamp))
        except MySQLdb.OperationalError as e:
            if e.args[0] != 1205:  # ER_LOCK_WAIT_TIMEOUT: a long transaction; the next pass sees it
                raise
            log.warning("%s: a row after %r is locked by a long transaction: left for the next pass", p.table, p.last)
        self.bucket.take(reread, self.stop.wait)  # the re-reads are MySQL load too
        p.expected |= keys
        merge(p.report, part)
        self._count(p.table, part, len(fetched) + reread)
        self.metrics.set("pass_rows", p.table, p.report.rows)
        if len(fetched) < self.chunk:
            p.walked = True
        elif rows[-1][2] == p.last:  # `> last` found last again: a key that does not round-trip (FLOAT)
            log.warning("%s: the walk does not advance past %r: pass ended early", p.table, p.last)
            p.walked = True
        else:
            p.last = rows[-1][2]
        return False

    def _count(self, table: str, part: Report, read: int) -> None:
        m = self.metrics
        m.add("rows_checked_total", table, part.rows)
        m.add("rows_read_total", table, read)
        for kind in KINDS:
            if part.counts[kind]:
                m.add("differences_total", table, part.counts[kind], kind)
        for kind in REPAIRS:
            if part.repaired[kind]:
                m.add("repaired_total", table, part.repaired[kind], kind)
