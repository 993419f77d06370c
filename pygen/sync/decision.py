"""Committed mode's decisions (pure: no sockets, no clock, no I/O).

    decide(change, facts, rules) -> Decision

`facts` is what the loop (pygen/sync/committed_loop.py) has learnt of a parked change: the row
as MySQL has committed it, whether that read is final (its transaction is over, or no longer
waited for), what trying the row's lock showed, how a waiter's read ended, how long the job
has waited. The Decision names the next step; the loop runs it and, for the steps that learn
something (WAIT refused, TRY_LOCK, READ_FINAL), decides again with what it learnt.

Why a free lock settles it: the change's trigger ran under the row's lock, which its
transaction holds until COMMIT or ROLLBACK, so once no transaction holds the lock, a read
shows that transaction's outcome: what is committed then is written, with the payload's
version (any later change of the row carries a larger one), never the payload's own image
unless MySQL holds exactly it.
"""
from __future__ import annotations

import enum
from dataclasses import replace
from typing import Any, NamedTuple, Optional

from pygen.sync.committed import Gone
from pygen.sync.payload import Change


class Step(enum.Enum):
    WRITE = "write"            # write Decision.change: the job's, the committed row, or a delete
    SKIP = "skip"              # nothing to write (a delete whose row is still there): complete the job
    REFUSE = "refuse"          # the change cannot be checked: fail the job (Decision.reason)
    WAIT = "wait"              # hand it to a waiter: a locking read that returns as the transaction ends
    TRY_LOCK = "try lock"      # try the row's lock (NOWAIT), then decide again
    READ_FINAL = "read final"  # read the row again, now final, then decide again
    POLL = "poll"              # read afresh after Decision.delay seconds (one more attempt)
    READ = "read"              # read afresh at the loop's next step (attempts unchanged)


class Lock(enum.Enum):
    UNTRIED = "untried"
    HELD = "held"              # another transaction holds it (or MySQL cannot tell now)
    FREE = "free"
    UNKNOWN = "unknown"        # no NOWAIT on this server (MySQL 5.7, MariaDB 10.2)


class Waiter(enum.Enum):
    NONE = "none"              # no waiter's read in these facts
    BUSY = "busy"              # none could take it (all busy, closed, or its read could not be built)
    TIMED_OUT = "timed out"    # still locked after --lock-wait seconds
    FAILED = "failed"          # the read raised (MySQL away)


class Facts(NamedTuple):
    row: Any = None            # as committed: a dict, None (no such row), or a committed.Gone
    read_failed: bool = False  # the read did not happen (MySQL away): row means nothing
    final: bool = False        # row was read once its lock was seen free, or once waiting was over
    lock: Lock = Lock.UNTRIED
    waiter: Waiter = Waiter.NONE
    waited: float = 0.0        # seconds since the job was parked
    stamp: int = -1            # the largest gman_stamp() read: every version a trigger stamped is <= it
    attempt: int = 0           # polls so far


class Rules(NamedTuple):
    commit_window: float       # servers without NOWAIT: how long a change not committed as sent is waited for
    max_wait: float            # how long a change whose row is locked is waited for
    waiters: bool              # waiters exist (--waiters > 0)


class Decision(NamedTuple):
    step: Step
    change: Optional[Change] = None  # WRITE
    delay: float = 0.0               # POLL
    reason: object = ""              # REFUSE: a str or the exception; why, for the others


def retry_delay(attempt: int, base: float = 0.02, cap: float = 1.0) -> float:
    return min(base * (2 ** attempt), cap)


def decide(change: Change, facts: Facts, rules: Rules) -> Decision:
    if facts.waiter is Waiter.TIMED_OUT:
        return Decision(Step.READ, reason="lock wait timeout: read, and waited on again if still open")
    if facts.waiter is Waiter.FAILED:
        return Decision(Step.POLL, delay=retry_delay(facts.attempt + 1, 0.2, 2.0), reason="the waiter's read failed")
    if facts.read_failed:
        delay = retry_delay(facts.attempt + 1) if facts.final else retry_delay(facts.attempt + 1, 0.2, 2.0)
        return Decision(Step.POLL, delay=delay, reason="MySQL away")
    if isinstance(facts.row, Gone):
        if facts.final:  # it was readable a moment ago
            return Decision(Step.POLL, delay=retry_delay(facts.attempt + 1), reason=str(facts.row))
        return Decision(Step.REFUSE, reason=str(facts.row))
    if change.version > facts.stamp:
        # no trigger of this server can have stamped a version it has not reached yet
        return Decision(Step.REFUSE, reason=f"version {change.version} is ahead of gman_stamp() {facts.stamp}")
    row = facts.row
    if (row is None) if change.op == "delete" else (row is not None and row == change.row):
        return Decision(Step.WRITE, change, reason="committed as sent")
    if facts.final:
        if change.op == "delete":  # rolled back: Redis never lost the row; re-inserted: that INSERT sends its job
            return Decision(Step.SKIP, reason="the row is still there")
        if row is None:
            return Decision(Step.WRITE, Change("delete", change.table, change.key, change.version, None),
                            reason="the row is gone")
        return Decision(Step.WRITE, replace(change, row=row), reason="not committed as sent: the committed row")
    # not committed as sent: its transaction may still be open
    if facts.lock is Lock.UNTRIED:
        if rules.waiters and facts.waiter is not Waiter.BUSY and facts.waited < rules.max_wait:
            return Decision(Step.WAIT)
        return Decision(Step.TRY_LOCK)
    if facts.lock is Lock.UNKNOWN and facts.waited < rules.commit_window:
        return Decision(Step.POLL, delay=retry_delay(facts.attempt + 1), reason="within the commit window")
    if facts.lock is Lock.HELD and facts.waited < rules.max_wait:
        return Decision(Step.POLL, delay=retry_delay(facts.attempt + 1), reason="locked")
    return Decision(Step.READ_FINAL)

