"""`gman-udf worker`: carries the triggers' syncToRedis jobs from gearmand into Redis.

    gman-udf worker --gearman 10.0.0.1:4730,10.0.0.2:4730 --redis redis://cache:6379/0

Guarantees
- At least once: a job is completed (WORK_COMPLETE) only after Redis acknowledged its write;
  a worker that dies holding jobs loses nothing, because gearmand re-queues the jobs of a
  closed worker connection. Every write can run twice: they are idempotent.
- Order: a payload with a version `v` (gman_stamp() in the trigger) is written by a Lua
  compare-and-set (pygen/redis_scripts.py): Redis never goes back to an older row image, even
  with many workers, and a delete leaves a version tombstone for --tombstone-ttl so that a
  late, older upsert cannot bring the row back. Payloads without v (the seeds' bare rows)
  are written unguarded, as the seeds' worker did.
- --consistency payload (default): writes the payload's row image. An INSERT/UPDATE that
  is rolled back after its trigger ran still reaches Redis (until the row's next change),
  and any SQL user who can call gman_do_background() can write cache entries.
- --consistency committed --mysql DSN: before writing, re-reads the row by primary key
  (READ COMMITTED, autocommit) rendered by the same UDF as the trigger, and writes the
  payload when MySQL has committed exactly that image. When it has not, the trigger's
  transaction is either still open or over (rolled back, or superseded by a later change):
  the trigger ran under the row's lock, which that transaction holds until it ends, so the
  worker tries the lock (a NOWAIT locking read). Held: the job is parked (the others go on)
  and looked at again with back-off, for up to --max-wait. Free: the row is read again and
  what is committed is written (a delete when the row is gone; nothing for a delete whose
  row is still there), with the payload's version: any later change of the row carries a
  larger one. Servers without NOWAIT (MySQL 5.7, MariaDB 10.2) wait --commit-window instead.
  So a rolled-back change never appears in Redis, and a forged job writes only committed
  rows; a job with no table or no version, or a version ahead of the server's gman_stamp()
  (no trigger can have stamped it), is refused. Left open: a forged job copying the
  committed row, with a version just above that of a change not yet committed, hides that
  change until the row's next one: lock the plugin's configuration and grant
  gman_do_background() to the triggers' definer only. Rows are read as
  udf_json_members('col', `col`, ...) of the payload's row members, which must be the
  table's column names (as generated triggers send them); point --mysql at the primary.
- Hash mode: one field per row member, values as text (bytes as themselves, NULL: no field);
  the hash is replaced as a whole.

Batches: up to --batch jobs from all servers, written in one Lua call (standalone Redis) or
one pipeline of per-key calls (Redis Cluster), then completed together.

URLs: --redis takes redis.from_url's forms: redis://[user:pass@]host:port/db, rediss:// (TLS),
unix:///path?db=0. Redis Cluster: redis+cluster://host:port (or rediss+cluster://, or
--redis-cluster). --mysql: mysql://user:pass@host:3306/db, or over a unix socket
mysql://user:pass@localhost/db?socket=/run/mysqld/mysqld.sock (user and password
%-encoded; the password may come from MYSQL_PWD instead).

The pure part (what to write for a payload) is pygen/apply.py.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Dict, List, Optional

from pygen import apply
from pygen.apply import FIELDS, parse_dsn, prometheus_text, redis_target, totals
from pygen.gearman import Worker as GearmanWorker
from pygen.payload import Change, PayloadError, parse
from pygen.payload import loads as payload_loads
from pygen.redis_scripts import APPLY, APPLY_SHA
from pygen.triggers import Column, _text

log = logging.getLogger("gman-udf.worker")


# ---- counters shared by the worker processes -------------------------------------------------

class Stats:
    """One process's counters in a slot of a shared array of doubles (one writer per slot)."""

    def __init__(self, array=None, slot: int = 0):
        self.array = array if array is not None else [0.0] * len(FIELDS)
        self.base = slot * len(FIELDS)
        self.index = {name: self.base + i for i, name in enumerate(FIELDS)}

    def add(self, name: str, n: float = 1) -> None:
        self.array[self.index[name]] += n

    def set(self, name: str, value: float) -> None:
        self.array[self.index[name]] = value


def serve_metrics(host: str, port: int, array, slots: int):
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = prometheus_text(totals(array, slots)).encode()
            self.send_response(200 if self.path in ("/", "/metrics") else 404)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server


def log_stats(array, slots: int, interval: float, stop: threading.Event) -> None:
    before, then = totals(array, slots), time.monotonic()
    while not stop.wait(interval):
        now_t, now = totals(array, slots), time.monotonic()
        dt = max(now - then, 1e-9)
        log.info("%.0f jobs/s, %.0f writes/s, %d stale, %d errors, %d refused, %d parked, lag %.1f ms",
                 (now_t["jobs"] - before["jobs"]) / dt, (now_t["writes"] - before["writes"]) / dt,
                 now_t["stale"] - before["stale"], now_t["errors"] - before["errors"],
                 now_t["refused"] - before["refused"], now_t["parked"], now_t["lag_us"] / 1000)
        before, then = now_t, now


# ---- Redis -----------------------------------------------------------------------------------

class RedisWriter:
    """Runs apply.Write lists through redis_scripts.APPLY; raises redis.RedisError/OSError."""

    def __init__(self, url: str, cluster: bool = False, timeout: float = 5.0):
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry
        self.cluster, url = redis_target(url, cluster)
        kw = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
        if self.cluster:
            from redis.cluster import RedisCluster
            self.client = RedisCluster.from_url(url, **kw)
        else:  # one quick retry covers a pooled connection that died; longer outages are ours
            self.client = redis.Redis.from_url(url, retry=Retry(NoBackoff(), 1), **kw)

    def write(self, writes: List[apply.Write]) -> int:
        """Apply the writes; returns how many were skipped as stale."""
        return self.finish(self.begin(writes))

    def begin(self, writes: List[apply.Write]):
        """Send the writes without waiting for the reply (the caller works meanwhile)."""
        if self.cluster or not writes:
            return None, writes
        keys, args = apply.script_args(writes)
        pool = self.client.connection_pool
        conn = pool.get_connection()
        try:
            conn.send_command("EVALSHA", APPLY_SHA, len(keys), *keys, *args)
        except BaseException:
            conn.disconnect()
            pool.release(conn)
            raise
        return conn, (keys, args)

    def finish(self, token) -> int:
        """Wait for begin()'s reply: the number of writes skipped as stale."""
        conn, what = token
        if conn is None:
            return self._write_cluster(what) if what else 0
        import redis
        pool = self.client.connection_pool
        try:
            return conn.read_response()
        except redis.exceptions.NoScriptError:  # a restarted or flushed Redis
            pass
        except BaseException:
            conn.disconnect()
            raise
        finally:
            pool.release(conn)
        keys, args = what
        self.client.script_load(APPLY)
        return self.client.evalsha(APPLY_SHA, len(keys), *keys, *args)

    def _write_cluster(self, writes) -> int:
        import redis
        for attempt in (1, 2):
            pipe = self.client.pipeline()  # keys of one script call share a slot: one call per key
            for w in writes:
                keys, args = apply.script_args([w])
                pipe.execute_command("EVALSHA", APPLY_SHA, 2, *keys, *args)  # ClusterPipeline.evalsha() is refused
            try:
                return sum(pipe.execute())
            except redis.exceptions.NoScriptError:
                if attempt == 2:
                    raise
                self.client.script_load(APPLY)  # on every primary
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.client.close()


# ---- MySQL (--consistency committed) ---------------------------------------------------------

class Gone(Exception):
    """The change cannot be checked (unknown table or column, unrenderable row): refused."""


class CommittedReader:
    """Reads rows as MySQL has committed them (READ COMMITTED, autocommit: each SELECT sees
    every transaction committed before it started, nothing else)."""

    CHUNK = 500

    def __init__(self, dsn: str, json_function: str = "udf_json_members", timeout: float = 5.0):
        self.kw = parse_dsn(dsn)
        self.kw.setdefault("connect_timeout", max(1, round(timeout)))
        self.json_function = json_function
        self.conn = None
        self._convert: Dict[str, frozenset] = {}

    def _cursor(self):
        if self.conn is None:
            import MySQLdb
            conn = MySQLdb.connect(**self.kw)
            conn.cursor().execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
            self.conn = conn
        return self.conn.cursor()

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:
                pass
            self.conn = None

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
            sql = apply.lock_statement(change.table, list(change.key), self.conn.get_server_info())
            if sql is None:
                return None
            cur.execute(sql, apply.key_params(change.key, list(change.key)))
            cur.fetchall()
        except MySQLdb.OperationalError as e:
            if not (e.args and e.args[0] in (1205, 3572)):  # NOWAIT: MariaDB's lock wait timeout, MySQL's ER_LOCK_NOWAIT
                self.close()
            return True
        except (MySQLdb.MySQLError, apply.PlanError):
            return False
        return False

    def read(self, changes: List[Change]) -> list:
        """For each change: its row as committed (dict), None (no such row) or a Gone."""
        import MySQLdb
        out: list = [None] * len(changes)
        groups: Dict[tuple, List[int]] = {}
        for i, c in enumerate(changes):
            groups.setdefault((c.table, tuple(c.key), tuple(c.row or ())), []).append(i)
        for (table, key_cols, row_cols), idx in groups.items():
            for start in range(0, len(idx), self.CHUNK):
                chunk = idx[start:start + self.CHUNK]
                try:
                    found = self._read_group(table, key_cols, row_cols, [changes[i] for i in chunk])
                except (MySQLdb.ProgrammingError, MySQLdb.DataError, MySQLdb.IntegrityError, apply.PlanError) as e:
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
                for i in chunk:
                    out[i] = found.get(apply.key_id(changes[i].key, key_cols))
        return out

    def _converted(self, table) -> frozenset:
        """The table's text columns in a non-UTF-8 charset (read once per table)."""
        if table not in self._convert:
            schema, name = apply.split_table(table)
            cur = self._cursor()
            cur.execute("SELECT COLUMN_NAME, CHARACTER_SET_NAME FROM information_schema.COLUMNS "
                        "WHERE TABLE_SCHEMA = COALESCE(%s, DATABASE()) AND TABLE_NAME = %s", (schema or None, name))
            cols = [Column(_text(n), "", _text(cs)) for n, cs in cur.fetchall()]
            self._convert[table] = frozenset(c.name for c in cols if c.needs_convert)
        return self._convert[table]

    def _read_group(self, table, key_cols, row_cols, changes) -> dict:
        sql, params = apply.read_statement(table, key_cols, row_cols, len(changes), self.json_function,
                                           self._converted(table))
        for c in changes:
            params += apply.key_params(c.key, key_cols)
        cur = self._cursor()
        cur.execute(sql, params)
        found = {}
        for key_json, row_json in cur.fetchall():
            if key_json is None or row_json is None:
                raise apply.PlanError(f"{self.json_function} returned NULL (see gman_last_error())")
            row = payload_loads(row_json)
            found[apply.key_id(payload_loads(key_json), key_cols)] = row
        return found


# ---- the loop --------------------------------------------------------------------------------

@dataclass
class Pending:
    job: object
    change: Change
    first: float
    due: float
    attempt: int = 0


class Runner:
    """One worker process: grab a batch, decide, write, complete; until stop()."""

    def __init__(self, args, stats: Stats):
        self.args, self.stats = args, stats
        self.options = options_from_args(args)
        self.batch = args.batch
        self.committed = args.consistency == "committed"
        self.stopping = threading.Event()
        self.gearman = GearmanWorker(args.gearman.split(","), [args.function],
                                     connect_timeout=min(args.timeout, 2.0), timeout=args.timeout)
        self.redis = RedisWriter(args.redis, args.redis_cluster, args.timeout)
        self.reader = CommittedReader(args.mysql, args.json_function, args.timeout) if self.committed else None
        self.parked: List[Pending] = []
        self.inflight = None  # payload mode: (batch, token) sent to Redis, not yet acknowledged

    def stop(self, *_) -> None:
        self.stopping.set()
        self.gearman.stop()

    def run(self) -> int:
        try:
            while not self.stopping.is_set():
                self.step() if self.committed else self.step_payload()
            if self.inflight is not None:  # finish what Redis already has
                self._settle(*self.inflight)
        finally:
            self.gearman.close()  # jobs not completed (parked, unwritten) go back to the queue
            self.redis.close()
            if self.reader:
                self.reader.close()
        return 0

    # payload mode: batch n+1 is grabbed and planned while Redis runs batch n's script
    def step_payload(self) -> None:
        inflight, self.inflight = self.inflight, None
        jobs = self.gearman.grab(self.batch, 0.5 if inflight is None else 0.002)
        batch = self._prepare(jobs) if jobs else None
        if inflight is not None:
            self._settle(*inflight)
        if batch is not None and not self.stopping.is_set():
            jobs, writes, versions = batch
            try:
                self.inflight = batch, self.redis.begin(writes)
            except Exception:  # noqa: BLE001 - the synchronous path retries and reports
                self._settle(batch, None)

    def _prepare(self, jobs):
        self.stats.add("jobs", len(jobs))
        good, writes, versions = [], [], []
        for job in jobs:
            try:
                change = parse(job.workload)
                writes += apply.plan(change, self.options)
            except PayloadError as e:
                self._refuse(job, e)
                continue
            good.append(job)
            versions.append(change.version)
        return good, apply.collapse(writes), versions

    def _settle(self, batch, token) -> None:
        """Complete a batch once Redis has acknowledged it (retrying its writes if need be)."""
        jobs, writes, versions = batch
        skipped = None
        if token is not None:
            try:
                skipped = self.redis.finish(token)
            except Exception as e:  # noqa: BLE001
                self.stats.add("errors")
                log.warning("redis: %s; retrying %d writes", e, len(writes))
        if skipped is None:
            skipped = self._write_retrying(writes)
            if skipped is None:
                return  # stopped while Redis was away: the jobs go back to gearmand
        self._count(writes, skipped, versions)
        self.gearman.complete_many(jobs)

    def _write_retrying(self, writes: List[apply.Write]) -> Optional[int]:
        """Write until Redis acknowledges: the number skipped as stale; None if stopped first."""
        delay = 0.05
        while True:
            try:
                return self.redis.write(writes)
            except Exception as e:  # noqa: BLE001 - redis.RedisError, OSError: away, loading, read-only...
                self.stats.add("errors")
                log.warning("redis: %s; retrying %d writes in %.2f s", e, len(writes), delay)
                if self.stopping.wait(delay):
                    return None
                delay = min(delay * 2, 2.0)

    def _count(self, writes, skipped: int, versions) -> None:
        self.stats.add("writes", len(writes) - skipped)
        self.stats.add("stale", skipped)
        now_us = time.time_ns() // 1000
        lags = [lag for lag in (apply.lag_us(v, now_us) for v in versions) if lag is not None]
        if lags:
            self.stats.set("lag_us", max(lags))

    # committed mode
    def step(self) -> None:
        now = time.monotonic()
        self.parked = [p for p in self.parked if _alive(p.job)]  # a dropped link: gearmand re-queued it
        timeout = 0.5
        if self.parked:
            timeout = max(0.0, min(min(p.due for p in self.parked) - now, timeout))
        jobs = self.gearman.grab(self.batch, timeout) if len(self.parked) < self.args.max_parked else []
        if not jobs and len(self.parked) >= self.args.max_parked:
            self.stopping.wait(timeout)
        now = time.monotonic()
        self.stats.add("jobs", len(jobs))
        for job in jobs:
            try:
                change = parse(job.workload)
                if change.table is None or change.version is None:
                    raise apply.PlanError("committed mode needs a payload with table and v (a generated trigger's)")
            except PayloadError as e:
                self._refuse(job, e)
                continue
            self.parked.append(Pending(job, change, now, now))
        due = [p for p in self.parked if p.due <= now]
        if due:
            self._resolve(due, now)
        self.stats.set("parked", len(self.parked))

    def _settled(self, p: Pending, waited: float):
        """The decision for a change MySQL does not hold as sent: RETRY while its transaction
        may still be open, else what is committed. Its trigger ran under the row's lock, held
        until COMMIT or ROLLBACK, so a free lock means that transaction is over, and a read
        after seeing it free shows its outcome."""
        locked = self.reader.locked(p.change)
        if locked is None:  # no NOWAIT on this server: wait out the commit window
            if waited < self.args.commit_window:
                return apply.RETRY
        elif locked and waited < self.args.max_wait:
            return apply.RETRY
        try:
            (row,) = self.reader.read([p.change])
        except Exception as e:  # noqa: BLE001 - MySQL away: look again later
            log.warning("mysql: %s", e)
            return apply.RETRY
        if isinstance(row, Gone):
            return apply.RETRY  # it was readable a moment ago
        return apply.decide(p.change, row, True)

    def _refuse(self, job, why) -> None:
        log.warning("job %s refused: %s: %.200r", job.handle, why, job.workload)
        self.stats.add("refused")
        job.fail()

    def _resolve(self, due: List[Pending], now: float) -> None:
        try:
            stamp = self.reader.stamp()
            rows = self.reader.read([p.change for p in due])
        except Exception as e:  # noqa: BLE001 - MySQL away: keep every job, look again later
            self.stats.add("errors")
            log.warning("mysql: %s; %d jobs wait", e, len(due))
            for p in due:
                p.attempt += 1
                p.due = now + apply.retry_delay(p.attempt, 0.2, 2.0)
            return
        done, writes, versions, gone = [], [], [], set()
        for p, row in zip(due, rows):
            if isinstance(row, Gone) or p.change.version > stamp:
                # no trigger of this server can have stamped a version it has not reached yet
                why = row if isinstance(row, Gone) else f"version {p.change.version} is ahead of gman_stamp() {stamp}"
                gone.add(id(p))
                self._refuse(p.job, why)
                continue
            waited = now - p.first
            action = apply.decide(p.change, row, False)
            if action is apply.RETRY:
                action = self._settled(p, waited)
            if action is apply.RETRY:
                p.attempt += 1
                p.due = now + apply.retry_delay(p.attempt)
                self.stats.add("retries")
                continue
            if action is not apply.DROP:
                if action is not p.change:
                    log.debug("%s %s: not committed as sent (rolled back or superseded); writing what is "
                              "committed", p.change.table, p.change.key)
                try:
                    writes += apply.plan(action, self.options)
                except PayloadError as e:
                    gone.add(id(p))
                    self._refuse(p.job, e)
                    continue
                versions.append(p.change.version)
            done.append(p)
        writes = apply.collapse(writes)
        skipped = self._write_retrying(writes) if writes else 0
        if skipped is not None:
            self._count(writes, skipped, versions)
            self.gearman.complete_many([p.job for p in done])
            gone.update(id(p) for p in done)
        if gone:
            self.parked = [p for p in self.parked if id(p) not in gone]


def _alive(job) -> bool:
    link = job._link
    return link.gen == job._gen and link.state in ("awake", "sleeping")


# ---- command line ----------------------------------------------------------------------------

def options_from_args(args) -> apply.Options:
    fields = tuple(f.strip() for f in args.fields.split(",") if f.strip()) if args.fields else None
    return apply.Options(mode=args.mode, fields=fields, key_template=args.key_template, ttl=args.ttl,
                         tombstone_ttl=args.tombstone_ttl)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gearman", required=True, metavar="HOST:PORT[,HOST:PORT...]",
                   help="job servers; jobs are taken from all of them")
    p.add_argument("--redis", default="redis://127.0.0.1:6379/0", metavar="URL",
                   help="redis://[user:pass@]host:port/db, rediss:// (TLS), unix://; "
                        "redis+cluster:// or rediss+cluster:// for Redis Cluster (default %(default)s)")
    p.add_argument("--redis-cluster", action="store_true", help="the --redis URL is a cluster node")
    p.add_argument("--function", default="syncToRedis", help="Gearman function (default %(default)s)")
    p.add_argument("--mode", choices=("json", "hash"), default="json",
                   help="json: SET key <row JSON>; hash: HSET key column value... (NULL: no field)")
    p.add_argument("--fields", metavar="A,B", help="write only these row members")
    p.add_argument("--key-template", metavar="T",
                   help="Redis key: {table}, {key} (key values joined by ':') and key column names; "
                        "'{{'/'}}' are literal braces (default '{table}:{key}', '{id}' for bare rows)")
    p.add_argument("--ttl", type=float, metavar="SECONDS", help="keys expire after this")
    p.add_argument("--tombstone-ttl", type=float, default=86400.0, metavar="SECONDS",
                   help="how long a delete's version refuses older upserts (default %(default)s)")
    p.add_argument("--consistency", choices=("payload", "committed"), default="payload",
                   help="payload: write the job's row; committed: write only what MySQL has committed")
    p.add_argument("--mysql", metavar="DSN",
                   help="committed mode: mysql://user:pass@host:port/db or mysql://user@localhost/db?socket=PATH")
    p.add_argument("--commit-window", type=float, default=10.0, metavar="SECONDS",
                   help="committed mode, servers without NOWAIT: how long a change not committed as sent "
                        "is waited for (default %(default)s)")
    p.add_argument("--json-function", default="udf_json_members",
                   help="committed mode: the name/value JSON UDF that renders rows as the trigger did "
                        "(udf_json_members or json_members; default %(default)s)")
    p.add_argument("--max-wait", type=float, default=3600.0, metavar="SECONDS",
                   help="committed mode: how long a change whose row an open transaction locks is "
                        "waited for (default %(default)s)")
    p.add_argument("--max-parked", type=int, default=100000, help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=500, metavar="N", help="jobs per Redis round trip (default %(default)s)")
    p.add_argument("--processes", type=int, default=1, metavar="N", help="worker processes (default %(default)s)")
    p.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS",
                   help="network timeout for gearmand, Redis and MySQL (default %(default)s)")
    p.add_argument("--stats-interval", type=float, default=0.0, metavar="SECONDS",
                   help="log jobs/s, errors and lag this often (default: never)")
    p.add_argument("--metrics-port", type=int, metavar="PORT", help="serve Prometheus text on http://HOST:PORT/metrics")
    p.add_argument("--metrics-host", default="127.0.0.1", help="(default %(default)s)")
    p.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))


def _check(args) -> None:
    if args.consistency == "committed" and not args.mysql:
        raise ValueError("--consistency committed needs --mysql DSN")
    if args.mysql:
        parse_dsn(args.mysql)
    redis_target(args.redis, args.redis_cluster)
    if args.batch < 1 or args.processes < 1:
        raise ValueError("--batch and --processes must be at least 1")
    options_from_args(args)


def run(args) -> int:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=getattr(logging, args.log_level),
                            format="%(asctime)s %(name)s[%(process)d] %(levelname)s %(message)s")
    try:
        _check(args)
    except ValueError as e:
        print(f"gman-udf worker: {e}", file=sys.stderr)
        return 2
    if args.processes == 1:
        array, slots = [0.0] * len(FIELDS), 1
    else:
        from multiprocessing.sharedctypes import RawArray
        array, slots = RawArray("d", args.processes * len(FIELDS)), args.processes
    stop = threading.Event()
    if args.processes == 1:
        runner = Runner(args, Stats(array))
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, runner.stop)
        _start_reporting(args, array, slots, stop)
        try:
            return runner.run()
        finally:
            stop.set()
    return _supervise(args, array, slots, stop)


def _start_reporting(args, array, slots, stop) -> None:
    if args.metrics_port is not None:
        serve_metrics(args.metrics_host, args.metrics_port, array, slots)
    if args.stats_interval > 0:
        threading.Thread(target=log_stats, args=(array, slots, args.stats_interval, stop),
                         name="stats", daemon=True).start()


def _child(args, array, slot) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    code = 1
    try:
        runner = Runner(args, Stats(array, slot))
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, runner.stop)
        code = runner.run()
    except BaseException:
        log.exception("worker process %d failed", slot)
    finally:
        logging.shutdown()
        os._exit(code)


def _supervise(args, array, slots, stop) -> int:
    """Run `slots` worker processes; restart one that dies; SIGTERM/SIGINT stop them all."""
    children: Dict[int, int] = {}  # pid -> slot

    def spawn(slot):
        pid = os.fork()
        if pid == 0:
            _child(args, array, slot)
        children[pid] = slot

    def forward(*_):
        stop.set()
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    for slot in range(slots):
        spawn(slot)
    _start_reporting(args, array, slots, stop)
    code = 0
    while children:
        pid, status = os.wait()
        slot = children.pop(pid, None)
        if slot is None:
            continue
        rc = os.waitstatus_to_exitcode(status)
        if stop.is_set():
            code = code or (rc if rc > 0 else 0)
        else:
            log.warning("worker process %d (pid %d) exited with %d; restarting", slot, pid, rc)
            time.sleep(1.0)
            if not stop.is_set():
                spawn(slot)
    return code


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="gman-udf worker", description=__doc__.split("\n")[0])
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
