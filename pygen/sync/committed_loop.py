"""The worker's --consistency committed loop (the rules are in pygen/sync/worker.py's docstring).

Each job is parked (committed.Pending) until MySQL settles its change. A batch's rows are
read in one query (committed.CommittedReader.send/receive: sent before the previous batch's
Redis reply is handled, its writes planned while MySQL reads); a change committed as sent is
written. What to do next is pygen/sync/decision.py's decide(); this loop runs its steps.
One not committed as sent goes to a waiter (pygen/sync/waiters.py): a locking read that waits
for the transaction holding the row's lock and returns as that transaction ends, with the
row as committed then, which is written. So a change reaches Redis within a round trip of
its COMMIT however long its transaction was open, and jobs of other rows keep flowing.
When every waiter is busy, the read cannot be built, the transaction outlives --max-wait,
or a read failed, the job falls back to polling the lock (NOWAIT) with back-off; a read
that timed out (--lock-wait) makes the job be read again, and waited on again if need be.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from typing import List, Optional

from pygen.sync import plan
from pygen.sync.committed import Pending
from pygen.sync.compare import stored_matches, version_ahead
from pygen.sync.decision import Decision, Facts, Lock, Rules, Step, Waiter, decide
from pygen.sync.payload import Change, parse
from pygen.sync.waiters import TIMEOUT, Waiters

log = logging.getLogger("gman-udf.worker")


class CommittedLoop:
    """The committed-mode half of pygen/sync/worker.py's Runner (a mixin): it uses the Runner's
    config, options, batch, gearman, redis, reader, stats, parked, and its _admit, _refuse,
    _write_retrying, _acknowledged and _count."""

    def _start_committed(self) -> None:
        self.wakeup = threading.Event()  # a waiter is done (with gearman.wake(), which ends a grab)
        self.stamp = -1  # the largest gman_stamp() read: the server has stamped every version up to it
        self.writing = None  # (writes, pairs, versions, jobs, token): sent to Redis, not yet acknowledged
        self.waiters = None
        self.rules = Rules(self.config.commit_window, self.config.max_wait, self.config.waiters > 0)
        if self.config.waiters > 0:
            read_timeout = self.config.lock_wait + max(self.config.timeout, 5.0)  # the wait must not look like an outage
            self.waiters = Waiters(lambda: self.reader.connect(read_timeout), self.config.waiters, self.config.lock_wait,
                                   self._notify)

    def _notify(self) -> None:
        self.wakeup.set()
        self.gearman.wake()

    def _stop_committed(self) -> None:
        try:
            self._settle_writes()  # finish what Redis already has
        finally:
            if self.waiters is not None:
                self.waiters.close()

    def step(self) -> None:
        self.wakeup.clear()
        now = time.monotonic()
        self._collect(now)
        self.parked = [p for p in self.parked if p.job.alive]  # a dropped link: gearmand re-queued it
        timeout = 0.5 if self.writing is None else 0.002
        if self.parked:
            timeout = max(0.0, min(min(p.due for p in self.parked) - now, timeout))
        jobs = self.gearman.grab(self.batch, timeout) if len(self.parked) < self.config.max_parked else []
        if not jobs and len(self.parked) >= self.config.max_parked:
            self.wakeup.wait(timeout)
        now = time.monotonic()
        self.stats.add("jobs", len(jobs))
        for job in jobs:
            try:
                change = parse(job.workload)
                if change.table is None or change.version is None:
                    raise plan.PlanError("committed mode needs a payload with table and v (a generated trigger's)")
                self._admit(change, 0)
            except Exception as e:  # noqa: BLE001 - PayloadError, or one nobody foresaw: never fatal
                self._refuse(job, e)
                continue
            self.parked.append(Pending(job, change, now, now))
        self._collect(now)
        due = [p for p in self.parked if p.due <= now]
        if due:
            self._resolve(due, now)
        else:
            self._settle_writes()
        self.stats.set("parked", len(self.parked))
        self.stats.set("waiting", self.waiters.busy if self.waiters else 0)

    def _collect(self, now: float) -> None:
        """The waiters' finished reads: their jobs are due now (a job dropped meanwhile is no
        longer parked, so its outcome is never looked at)."""
        if self.waiters is None:
            return
        for p, outcome in self.waiters.done():
            p.waiting, p.due = False, now
            if isinstance(outcome, Exception):
                self.stats.add("errors")
                log.warning("mysql (waiting for %s %s): %s", p.change.table, p.change.key, outcome)
                facts = Facts(waiter=Waiter.FAILED, attempt=p.attempt)
            elif outcome is TIMEOUT:
                facts = Facts(waiter=Waiter.TIMED_OUT, attempt=p.attempt)
            else:
                p.outcome = outcome  # decided with the others due now
                continue
            self._poll(p, decide(p.change, facts, self.rules), now)

    def _poll(self, p: Pending, d: Decision, now: float) -> None:
        """Run a POLL (one more attempt, due after its delay) or a READ (due now)."""
        if d.step is Step.POLL:
            p.attempt += 1
            p.due = now + d.delay

    def _wait_for(self, p: Pending) -> bool:
        """Hand the job to a waiter; False when none can take it."""
        try:
            sql, params = self.reader.wait_statement(p.change)
        except Exception as e:  # noqa: BLE001 - PlanError, MySQL away: polled instead
            log.debug("%s %s: no locking read (%s): polled", p.change.table, p.change.key, e)
            return False
        if not self.waiters.submit(p, sql, params):
            return False
        p.waiting, p.due = True, math.inf
        self.stats.add("waits")
        return True

    def _decide(self, p: Pending, row, outcome, now: float) -> Decision:
        """decide() for a due job, running the steps that learn more (WAIT, TRY_LOCK,
        READ_FINAL) until one is the caller's: WRITE, SKIP, REFUSE, POLL, or a WAIT taken."""
        facts = Facts(row, False, False, Lock.UNTRIED, Waiter.NONE, now - p.first, self.stamp, p.attempt)
        if outcome is not None:  # read under the row's lock, free at last: the change's transaction is over
            facts = facts._replace(row=self.reader.waited(outcome), final=True)
        while True:
            d = decide(p.change, facts, self.rules)
            if d.step is Step.WAIT:
                if self._wait_for(p):
                    return d
                facts = facts._replace(waiter=Waiter.BUSY)
            elif d.step is Step.TRY_LOCK:
                facts = facts._replace(lock=_LOCK[self.reader.locked(p.change)])
            elif d.step is Step.READ_FINAL:
                try:
                    (row,) = self.reader.read([p.change])
                    facts = facts._replace(row=row, final=True)
                except Exception as e:  # noqa: BLE001 - MySQL away: look again later
                    log.warning("mysql: %s", e)
                    facts = facts._replace(read_failed=True, final=True)
            else:
                return d

    def _resolve(self, due: List[Pending], now: float) -> None:
        fresh = [p for p in due if p.outcome is None]
        try:
            if fresh and max(p.change.version for p in fresh) > self.stamp:
                self.stamp = max(self.stamp, self.reader.stamp())
            reading = self.reader.send([p.change for p in fresh]) if fresh else None
            failed = None
        except Exception as e:  # noqa: BLE001 - MySQL away
            failed = e
        self._settle_writes()  # the previous batch's Redis call ran meanwhile, and runs while MySQL reads
        early = self._plan_early(fresh) if failed is None else {}
        whole = self.options.mode == "json" and self.options.fields is None  # a SET of the whole row
        try:
            rows = self.reader.receive(reading, [_text(early.get(id(p))) if whole else None for p in fresh]) \
                if failed is None and fresh else []
        except Exception as e:  # noqa: BLE001 - MySQL away
            failed = e
        if failed is not None:  # keep every job, look again later
            self.stats.add("errors")
            log.warning("mysql: %s; %d jobs wait", failed, len(due))
            for p in due:
                self._poll(p, decide(p.change, Facts(read_failed=True, attempt=p.attempt), self.rules), now)
            return
        read = dict(zip(map(id, fresh), rows))
        done, writes, versions, gone, pairs = [], [], [], set(), []
        for p in due:
            outcome, p.outcome = p.outcome, None
            try:
                d = self._decide(p, read.get(id(p)), outcome, now)
                planned = [] if d.step is not Step.WRITE else \
                    early[id(p)] if d.change is p.change and id(p) in early else plan.plan(d.change, self.options)
            except Exception as e:  # noqa: BLE001 - PayloadError, or one nobody foresaw: never fatal
                d = Decision(Step.REFUSE, reason=e)
            if d.step is Step.WAIT:
                continue
            if d.step is Step.REFUSE:
                gone.add(id(p))
                self._refuse(p.job, d.reason)
                continue
            if d.step is Step.POLL:
                self._poll(p, d, now)
                self.stats.add("retries")
                continue
            if d.step is Step.WRITE:
                if d.change is not p.change:
                    log.debug("%s %s: not committed as sent (rolled back or superseded); writing what is "
                              "committed", p.change.table, p.change.key)
                writes += planned
                pairs += [(w, d.change) for w in planned]
                versions.append(p.change.version)
            done.append(p)
        gone.update(id(p) for p in done)  # no longer parked: completed once Redis has their writes
        self.parked = [p for p in self.parked if id(p) not in gone]
        writes = plan.collapse(writes)
        jobs = [p.job for p in done]
        if not writes:
            self.gearman.complete_many(jobs)
            return
        try:
            token = self.redis.begin(writes)
        except Exception:  # noqa: BLE001 - _settle_writes retries and reports
            token = None
        self.writing = writes, pairs, versions, jobs, token

    def _plan_early(self, fresh: List[Pending]) -> dict:
        """{id(p): p.change's writes} while MySQL reads (most are written as sent); a change
        that cannot be planned is planned again, and refused, once decided."""
        early = {}
        for p in fresh:
            try:
                early[id(p)] = plan.plan(p.change, self.options)
            except Exception:  # noqa: BLE001 - see above
                pass
        return early

    def _settle_writes(self) -> None:
        """Complete the jobs of the batch sent to Redis once it acknowledged (retrying the
        writes if need be); after skipped writes, re-check their keys (_recheck)."""
        if self.writing is None:
            return
        (writes, pairs, versions, jobs, token), self.writing = self.writing, None
        skipped = self._acknowledged(writes, token)
        if skipped is None:
            return  # stopped while Redis was away: the jobs go back to gearmand
        if skipped:
            self._recheck(pairs)
        self._count(writes, skipped, versions)
        self.gearman.complete_many(jobs)

    def _recheck(self, pairs) -> None:
        """After committed images were skipped as older: a key whose newer version holds an image
        other than the committed one took that version from a forged job (a copy of the committed
        row stamped while a change was still open, whose own write is then older). Such keys get
        the row read again under its lock, written with the gman_stamp() taken there."""
        pairs = [(w, c) for w, c in pairs if w.version is not None]
        try:
            fixes = []
            for (w, change), (version, value) in zip(pairs, self.redis.held([w for w, _ in pairs])):
                if isinstance(version, Exception) or not version_ahead(version, w.version):
                    continue
                if w.op == "del":
                    if value in (None, {}) or self.reader.read([change])[0] is not None:
                        continue  # gone in Redis too, or back in MySQL (its INSERT's job writes it)
                    # a re-INSERT stamped before this stamp gets its write skipped, then re-checked
                    fixes += plan.plan(Change("delete", change.table, change.key, self.reader.stamp()), self.options)
                    continue
                if stored_matches(w, value):
                    continue
                got = self.reader.stamped(change)
                if got is not None:
                    row, stamp = got
                    fixes += plan.plan(Change("upsert", change.table, change.key, stamp, row), self.options)
            if fixes:
                log.warning("%d keys held a newer version than their committed row (a forged job?): rewritten "
                            "with a fresh gman_stamp()", len(fixes))
                self._write_retrying(fixes)
        except Exception as e:  # noqa: BLE001 - Redis or MySQL away: the row's next change fixes it
            self.stats.add("errors")
            log.warning("re-checking skipped writes: %s", e)


def _text(writes) -> Optional[bytes]:
    """The JSON a change's writes SET (json mode, no --fields: the whole row), which
    CommittedReader.receive() takes as the text of that row."""
    if writes and len(writes) == 1 and writes[0].op == "set" and writes[0].values:
        return writes[0].values[0]
    return None


_LOCK = {True: Lock.HELD, False: Lock.FREE, None: Lock.UNKNOWN}  # CommittedReader.locked() -> Lock
