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
log line); committed mode's loop is pygen/sync/committed_loop.py. The options, and the factory
that builds this loop with its collaborators, are pygen/sync/worker_cli.py; the processes of
--processes N, pygen/sync/supervisor.py.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from typing import List, Optional

from pygen.sync import plan
from pygen.sync.committed import Gone, Pending
from pygen.sync.committed_loop import CommittedLoop
from pygen.sync.metrics import Stats
from pygen.sync.payload import PayloadError, parse

log = logging.getLogger("gman-udf.worker")


TABLES_REREAD = 10.0  # seconds between reads of the triggers prompted by jobs of tables not on the list


class Runner(CommittedLoop):
    """One worker process: grab a batch, decide, write, complete; until stop(). Committed
    mode's step() is pygen/sync/committed_loop.py's.

    config: pygen/sync/worker_cli.py's WorkerConfig. gearman: grab(n, timeout), complete_many(jobs),
    stop(), wake(), close() (pygen/gearman/worker.py's Worker); its jobs have workload, handle,
    fail() and alive. redis: begin(writes) -> token, finish(token), write(writes) (each -> writes
    skipped as stale), held(writes), close() (pygen/sync/redis_writer.py's RedisWriter). reader:
    MySQL (pygen/sync/committed.py's CommittedReader; None without --mysql): committed mode reads
    rows through it, and without --tables the synced tables. stats: pygen/sync/metrics.py's Stats."""

    def __init__(self, config, gearman, redis, stats: Stats, reader=None):
        self.config, self.gearman, self.redis, self.stats, self.reader = config, gearman, redis, stats, reader
        self.options, self.batch, self.committed = config.options, config.batch, config.committed
        self.stopping = threading.Event()
        self.parked: List[Pending] = []
        self.inflight = None  # payload mode: (batch, token) sent to Redis, not yet acknowledged
        # the allow-list for plan.admit(): None = every table; else {table: its columns, None = any}
        self.tables = {} if config.tables_from_triggers else config.tables
        self.tables_read = -math.inf  # monotonic time of the last read of the triggers (default list)
        self.skew_us = None if self.committed else config.max_future_skew * 1e6
        if self.committed:
            self._start_committed()

    def stop(self, *_) -> None:
        self.stopping.set()
        self.gearman.stop()

    def run(self) -> int:
        try:
            if self.config.tables_from_triggers:
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
            found = self.reader.synced(self.config.function)
        except Exception as e:  # noqa: BLE001 - MySQL away: keep the list we have
            self.stats.add("errors")
            log.warning("mysql: %s; cannot read which tables have generated triggers", e)
            return False
        if found != self.tables:
            log.info("syncing %d tables (generated triggers sending %s): %s", len(found), self.config.function,
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
        if (self.config.tables_from_triggers and change.table not in self.tables and change.table is not None
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
