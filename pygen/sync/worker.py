"""`gman-udf worker`: carries the triggers' syncToRedis jobs from gearmand into Redis.

    gman-udf worker --gearman 10.0.0.1:4730,10.0.0.2:4730 --redis redis://cache:6379/0

Guarantees
- At least once: a job is completed (WORK_COMPLETE) only after Redis acknowledged its write;
  a worker that dies holding jobs loses nothing, because gearmand re-queues the jobs of a
  closed worker connection. Every write can run twice: they are idempotent.
- Order: a payload with a version `v` (gman_stamp() in the trigger) is written by a Lua
  compare-and-set (pygen/sync/redis_scripts.py): Redis never goes back to an older row image, even
  with many workers, and a delete leaves a version tombstone for --tombstone-ttl so that a
  late, older upsert cannot bring the row back. Payloads without v (the seeds' bare rows)
  are written unguarded, as the seeds' worker did.
- Bad jobs: a job that cannot be parsed (pygen/sync/payload.py), admitted (plan.admit) or
  planned (plan.plan) is failed (WORK_FAIL: gearmand drops it) with one log line naming
  the reason and its handle, and counted as refused; the others of its batch go on. Only
  Redis, MySQL and gearmand being away is retried.
- Tables (--tables): only the listed tables' jobs are written; '*' takes every table and
  the seeds' bare rows. Default: the tables whose generated triggers (pygen/sync/triggers.py
  names them) send to --function, and only the columns those triggers send, read from
  information_schema.TRIGGERS through --mysql (its user needs the TRIGGER privilege to see
  them), again when a job names another table (at most every TABLES_REREAD seconds).
- --consistency payload (default): writes the payload's row image. An INSERT/UPDATE that
  is rolled back after its trigger ran still reaches Redis (until the row's next change),
  and any SQL user can write cache entries of the synced tables (loadable functions have
  no privilege). A version more than --max-future-skew ahead of this machine's clock is
  refused: it would freeze its key (every later real change is older).
- --consistency committed --mysql DSN: before writing, re-reads the row by primary key
  (READ COMMITTED, autocommit) rendered by the same UDF as the trigger, and writes the
  payload when MySQL has committed exactly that image. When it has not, the trigger's
  transaction is either still open or over (rolled back, or superseded by a later change):
  the trigger ran under the row's lock, which that transaction holds until it ends, so a
  waiter (one of --waiters MySQL connections, all driven by one thread) runs a locking read
  of the row, which waits for that lock and returns as the transaction commits or rolls back
  (the job is parked meanwhile; the others go on): what is committed then is written (a
  delete when the row is gone; nothing for a delete whose row is still there), with the
  payload's version: any later change of the row carries a larger one. A read still waiting
  after --lock-wait seconds ends and the job is read and waited on again, for up to
  --max-wait. With every waiter busy (or --waiters 0) the worker tries the lock instead (a
  NOWAIT locking read) and looks again with back-off; servers without NOWAIT (MySQL 5.7,
  MariaDB 10.2) then wait --commit-window. pygen/sync/committed_loop.py runs this.
  So a rolled-back change never appears in Redis, and a forged job writes only committed
  rows; a job with no table or no version, or a version ahead of the server's gman_stamp()
  (no trigger can have stamped it), is refused; so is a table or column not synced (see
  Tables). A forged job copying the committed row, with a version just above that of a
  change not yet committed, makes that change's write be skipped as older: a key whose
  skipped write finds another image than the committed one is rewritten from the row read
  under its lock, with the gman_stamp() taken there (CommittedLoop._recheck; servers without
  NOWAIT keep the forged copy until the row's next change). Rows are read as
  udf_json_members('col', `col`, ...) of the payload's row members, which must be the
  table's column names (as generated triggers send them); point --mysql at the primary.
- Hash mode: one field per row member, values as text (bytes as themselves, NULL: no field);
  the hash is replaced as a whole.

Batches: up to --batch jobs from all servers, written in one Lua call (standalone Redis) or
one call per hash slot, pipelined per master (Redis Cluster), then completed together.

URLs: --redis takes redis.from_url's forms: redis://[user:pass@]host:port/db, rediss:// (TLS),
unix:///path?db=0. Redis Cluster: redis+cluster://host:port (or rediss+cluster://, or
--redis-cluster). --mysql: mysql://user:pass@host:3306/db, or over a unix socket
mysql://user:pass@localhost/db?socket=/run/mysqld/mysqld.sock (user and password
%-encoded; the password may come from MYSQL_PWD instead).

The pure part (what to write for a payload) is pygen/sync/plan.py; the I/O around this loop is in
pygen/sync/redis_writer.py (Redis), pygen/sync/committed.py (MySQL, committed mode), pygen/sync/waiters.py
(committed mode's locking reads) and pygen/sync/metrics.py (counters, Prometheus text, the stats
log line); committed mode's loop is pygen/sync/committed_loop.py.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import sys
import threading
import time
from typing import Dict, List, Optional

from pygen.gearman.worker import Worker as GearmanWorker
from pygen.sync import plan
from pygen.sync.committed import CommittedReader, Gone, Pending
from pygen.sync.committed_loop import CommittedLoop
from pygen.sync.metrics import SLOT, Stats, log_stats, prometheus_text, serve_metrics, totals
from pygen.sync.payload import PayloadError, parse
from pygen.sync.plan import parse_dsn, redis_target
from pygen.sync.reconcile_cli import add_worker_arguments, start_in_worker
from pygen.sync.redis_writer import RedisWriter

log = logging.getLogger("gman-udf.worker")


# ---- the loop --------------------------------------------------------------------------------

class Runner(CommittedLoop):
    """One worker process: grab a batch, decide, write, complete; until stop(). Committed
    mode's step() is pygen/sync/committed_loop.py's."""

    def __init__(self, args, stats: Stats):
        self.args, self.stats = args, stats
        self.options = options_from_args(args)
        self.batch = args.batch
        self.committed = args.consistency == "committed"
        self.stopping = threading.Event()
        self.gearman = GearmanWorker(args.gearman.split(","), [args.function],
                                     connect_timeout=min(args.timeout, 2.0), timeout=args.timeout)
        self.redis = RedisWriter(args.redis, args.redis_cluster, args.timeout)
        self.reader = CommittedReader(args.mysql, args.json_function, args.timeout) if args.mysql else None
        self.parked: List[Pending] = []
        self.inflight = None  # payload mode: (batch, token) sent to Redis, not yet acknowledged
        # the allow-list for plan.admit(): None = every table; else {table: its columns, None = any}
        self.tables = tables_from_args(args.tables) if args.tables else {}
        self.tables_read = -math.inf  # monotonic time of the last read of the triggers (default list)
        self.skew_us = None if self.committed else args.max_future_skew * 1e6
        if self.committed:
            self._start_committed()

    def stop(self, *_) -> None:
        self.stopping.set()
        self.gearman.stop()

    def run(self) -> int:
        try:
            if not self.args.tables:
                self._wait_for_tables()
            while not self.stopping.is_set():
                self.step() if self.committed else self.step_payload()
            if self.inflight is not None:  # finish what Redis already has
                self._settle(*self.inflight)
        finally:
            if self.committed:
                self._stop_committed()
            self.gearman.close()  # jobs not completed (parked, unwritten) go back to the queue
            self.redis.close()
            if self.reader:
                self.reader.close()
        return 0

    # the tables this worker syncs
    def _read_tables(self) -> bool:
        """Read the tables with generated triggers (the default --tables); False if MySQL is away."""
        self.tables_read = time.monotonic()
        try:
            found = self.reader.synced(self.args.function)
        except Exception as e:  # noqa: BLE001 - MySQL away: keep the list we have
            self.stats.add("errors")
            log.warning("mysql: %s; cannot read which tables have generated triggers", e)
            return False
        if found != self.tables:
            log.info("syncing %d tables (generated triggers sending %s): %s", len(found), self.args.function,
                     ", ".join(sorted(found)) or "none visible: the worker's MySQL user needs the TRIGGER "
                     "privilege on them, or give --tables")
        self.tables = found
        return True

    def _wait_for_tables(self) -> None:
        delay = 0.2
        while not self._read_tables() and not self.stopping.wait(delay):
            delay = min(delay * 2, 5.0)

    def _admit(self, change, now_us: int) -> None:
        """plan.admit() against the allow-list; a table not on the default list makes it be
        read again (at most every TABLES_REREAD s), so a table given triggers meanwhile is synced."""
        if (not self.args.tables and change.table not in self.tables and change.table is not None
                and time.monotonic() - self.tables_read > TABLES_REREAD):
            self._read_tables()
        plan.admit(change, self.tables, None if self.skew_us is None else now_us + self.skew_us,
                    whole=self.committed)

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
        now_us = time.time_ns() // 1000
        for job in jobs:
            try:
                change = parse(job.workload)
                self._admit(change, now_us)
                planned = plan.plan(change, self.options)
            except Exception as e:  # noqa: BLE001 - PayloadError, or one nobody foresaw: never fatal
                self._refuse(job, e)
                continue
            writes += planned
            good.append(job)
            versions.append(change.version)
        return good, plan.collapse(writes), versions

    def _settle(self, batch, token) -> None:
        """Complete a batch once Redis has acknowledged it (retrying its writes if need be)."""
        jobs, writes, versions = batch
        skipped = self._acknowledged(writes, token)
        if skipped is None:
            return  # stopped while Redis was away: the jobs go back to gearmand
        self._count(writes, skipped, versions)
        self.gearman.complete_many(jobs)

    def _acknowledged(self, writes: List[plan.Write], token) -> Optional[int]:
        """The number of writes skipped as stale once Redis acknowledged the batch sent with
        `token` (None: not sent yet), writing it again until it does; None if stopped first."""
        if token is not None:
            try:
                return self.redis.finish(token)
            except Exception as e:  # noqa: BLE001 - as in _write_retrying
                self.stats.add("errors")
                log.warning("redis: %s; retrying %d writes", e, len(writes))
        return self._write_retrying(writes)

    def _write_retrying(self, writes: List[plan.Write]) -> Optional[int]:
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
        now_us = time.time_ns() // 1000  # Redis has acknowledged: the end of each job's commit -> Redis lag
        lags = [lag for lag in (plan.lag_us(v, now_us) for v in versions) if lag is not None]
        self.stats.observe_lags([lag / 1e6 for lag in lags])
        if lags:
            self.stats.set("lag_us", max(lags))

    def _refuse(self, job, why) -> None:
        """WORK_FAIL: gearmand drops a failed background job, so it is never retried."""
        if not isinstance(why, (str, PayloadError, Gone)):  # an error nobody foresaw: name its type
            why = f"{type(why).__name__}: {why}"
        log.warning("job %s refused: %.300s: %.200r", job.handle, why, job.workload)
        self.stats.add("refused")
        job.fail()


# ---- command line ----------------------------------------------------------------------------

TABLES_REREAD = 10.0  # seconds between reads of the triggers prompted by jobs of tables not on the list


def tables_from_args(text: Optional[str]):
    """--tables: None for '*' (every table), else {schema.table: None} (any of its columns)."""
    if not text:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == ["*"]:
        return None
    if not names or "*" in names:
        raise ValueError(f"--tables {text!r}: schema.table names, comma-separated, or '*' alone")
    return dict.fromkeys(names)


def options_from_args(args) -> plan.Options:
    fields = tuple(f.strip() for f in args.fields.split(",") if f.strip()) if args.fields else None
    return plan.Options(mode=args.mode, fields=fields, key_template=args.key_template, ttl=args.ttl,
                         tombstone_ttl=args.tombstone_ttl)


MYSQL_ENV, REDIS_ENV = "GMAN_UDF_MYSQL", "GMAN_UDF_REDIS"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gearman", required=True, metavar="HOST:PORT[,HOST:PORT...]",
                   help="job servers; jobs are taken from all of them")
    # The DSN and the Redis URL carry passwords: they may come from the environment (a systemd
    # EnvironmentFile, see pygen/ops/systemd.py) rather than a command line every user can read.
    p.add_argument("--redis", default=os.environ.get(REDIS_ENV) or "redis://127.0.0.1:6379/0", metavar="URL",
                   help="redis://[user:pass@]host:port/db, rediss:// (TLS), unix://; "
                        f"redis+cluster:// or rediss+cluster:// for Redis Cluster (default: ${REDIS_ENV}, "
                        "else redis://127.0.0.1:6379/0)")
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
    p.add_argument("--mysql", metavar="DSN", default=os.environ.get(MYSQL_ENV) or None,
                   help="mysql://user:pass@host:port/db or mysql://user@localhost/db?socket=PATH: committed "
                        "mode reads rows there; both modes read which tables have generated triggers "
                        f"(default: ${MYSQL_ENV})")
    p.add_argument("--tables", metavar="DB.T[,DB.T...]",
                   help="write only these tables' jobs, any of their columns ('*': every table, and the seeds' "
                        "bare rows); default: the tables whose generated triggers (gman-udf trigger) send to "
                        "--function, only the columns they send, read from --mysql's information_schema")
    p.add_argument("--max-future-skew", type=float, default=300.0, metavar="SECONDS",
                   help="payload mode: refuse a job whose version (gman_stamp(), microseconds) is more than "
                        "this ahead of this machine's clock (default %(default)s; inf: never)")
    p.add_argument("--commit-window", type=float, default=10.0, metavar="SECONDS",
                   help="committed mode, servers without NOWAIT: how long a change not committed as sent "
                        "is waited for (default %(default)s)")
    p.add_argument("--json-function", default="udf_json_members",
                   help="committed mode: the name/value JSON UDF that renders rows as the trigger did "
                        "(udf_json_members or json_members; default %(default)s)")
    p.add_argument("--max-wait", type=float, default=3600.0, metavar="SECONDS",
                   help="committed mode: how long a change whose row an open transaction locks is "
                        "waited for (default %(default)s)")
    p.add_argument("--waiters", type=int, default=100, metavar="N",
                   help="committed mode: open transactions waited on at once, each by a locking read on its own "
                        "MySQL connection (opened when needed, closed after 60 s idle); beyond, the lock is polled "
                        "(0: always; default %(default)s)")
    p.add_argument("--lock-wait", type=int, default=30, metavar="SECONDS",
                   help="committed mode: how long one locking read waits (innodb_lock_wait_timeout) before the job "
                        "is read again (default %(default)s)")
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
    add_worker_arguments(p)


def _check(args) -> None:
    if args.consistency == "committed" and not args.mysql:
        raise ValueError("--consistency committed needs --mysql DSN")
    if not args.tables and not args.mysql:
        raise ValueError("give --tables DB.T,... (or '*' for every table), or --mysql DSN to sync the tables "
                         "with generated triggers")
    tables_from_args(args.tables)
    if not args.max_future_skew >= 0:
        raise ValueError("--max-future-skew must be >= 0")
    if args.mysql:
        parse_dsn(args.mysql)
    if args.reconcile and not args.mysql:
        raise ValueError("--reconcile needs --mysql DSN")
    redis_target(args.redis, args.redis_cluster)
    if args.batch < 1 or args.processes < 1:
        raise ValueError("--batch and --processes must be at least 1")
    if args.waiters < 0 or args.lock_wait < 1:
        raise ValueError("--waiters must be >= 0 and --lock-wait at least 1")
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
        array, slots = [0.0] * SLOT, 1
    else:
        from multiprocessing.sharedctypes import RawArray
        array, slots = RawArray("d", args.processes * SLOT), args.processes
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
    reconciling = start_in_worker(args, options_from_args(args), stop)  # --reconcile: a thread, ends with stop
    if args.metrics_port is not None:
        def render():
            text = prometheus_text(totals(array, slots), args.consistency)
            return text if reconciling is None else text + reconciling.render()
        serve_metrics(args.metrics_host, args.metrics_port, render)
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

