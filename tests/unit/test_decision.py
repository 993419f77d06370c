"""pygen/sync/decision.py: committed mode's decisions, as tables of facts -> the next step, and
the rules every decision keeps (a write carries only what MySQL has committed)."""
import itertools

import pytest

from pygen.sync.committed import Gone
from pygen.sync.decision import Decision, Facts, Lock, Rules, Step, Waiter, decide, retry_delay
from pygen.sync.payload import Change

V = 1_700_000_000_000_000
STAMP = V + 10
ROW = {"id": 1, "val": "new"}
OLD = {"id": 1, "val": "old"}  # what the row holds when the job's change was rolled back (or superseded)
RULES = Rules(commit_window=10.0, max_wait=3600.0, waiters=True)
UPSERT = Change("upsert", "s.t", {"id": 1}, V, ROW)
DELETE = Change("delete", "s.t", {"id": 1}, V, None)
GONE = Gone("s.t: no column 'val'")


def facts(**kw):
    kw.setdefault("stamp", STAMP)
    return Facts(**kw)


# (name, change, facts, rules, expected Decision: step and the fields that matter)
CASES = [
    # the row as committed is the job's: written as sent, however it was read
    ("committed as sent", UPSERT, facts(row=ROW), RULES, (Step.WRITE, UPSERT)),
    ("committed as sent, read final", UPSERT, facts(row=ROW, final=True), RULES, (Step.WRITE, UPSERT)),
    ("delete committed: no such row", DELETE, facts(row=None), RULES, (Step.WRITE, DELETE)),
    ("delete committed, read final", DELETE, facts(row=None, final=True), RULES, (Step.WRITE, DELETE)),
    # not committed as sent, its transaction may be open: a waiter waits for the row's lock
    ("row locked by an open transaction: wait", UPSERT, facts(row=OLD), RULES, (Step.WAIT,)),
    ("INSERT not committed yet: wait", UPSERT, facts(row=None), RULES, (Step.WAIT,)),
    ("DELETE not committed yet: wait", DELETE, facts(row=ROW), RULES, (Step.WAIT,)),
    ("no waiters: try the lock", UPSERT, facts(row=OLD), RULES._replace(waiters=False), (Step.TRY_LOCK,)),
    ("every waiter busy: try the lock", UPSERT, facts(row=OLD, waiter=Waiter.BUSY), RULES, (Step.TRY_LOCK,)),
    ("waited max-wait: no waiter, try the lock", UPSERT, facts(row=OLD, waited=3600.0), RULES, (Step.TRY_LOCK,)),
    # the lock tried (NOWAIT)
    ("locked: poll", UPSERT, facts(row=OLD, lock=Lock.HELD, waited=5.0, attempt=2), RULES,
     (Step.POLL, None, retry_delay(3))),
    ("locked past max-wait: give up waiting, read final", UPSERT, facts(row=OLD, lock=Lock.HELD, waited=3600.0),
     RULES, (Step.READ_FINAL,)),
    ("lock free: read final", UPSERT, facts(row=OLD, lock=Lock.FREE), RULES, (Step.READ_FINAL,)),
    ("lock free, delete: read final", DELETE, facts(row=ROW, lock=Lock.FREE), RULES, (Step.READ_FINAL,)),
    ("no NOWAIT, within the commit window: poll", UPSERT, facts(row=OLD, lock=Lock.UNKNOWN, waited=9.9), RULES,
     (Step.POLL, None, retry_delay(1))),
    ("no NOWAIT, commit window over: read final", UPSERT, facts(row=OLD, lock=Lock.UNKNOWN, waited=10.0), RULES,
     (Step.READ_FINAL,)),
    # read final (the transaction is over, or no longer waited for): what is committed wins
    ("rolled back: the committed image, never the job's", UPSERT, facts(row=OLD, final=True), RULES,
     (Step.WRITE, Change("upsert", "s.t", {"id": 1}, V, OLD))),
    ("INSERT rolled back: a delete", UPSERT, facts(row=None, final=True), RULES, (Step.WRITE, DELETE)),
    ("DELETE rolled back: nothing to write", DELETE, facts(row=ROW, final=True), RULES, (Step.SKIP,)),
    # the waiters' reads
    ("waiter timed out: read again now", UPSERT, facts(waiter=Waiter.TIMED_OUT, attempt=3), RULES, (Step.READ,)),
    ("waiter failed: poll with the error back-off", UPSERT, facts(waiter=Waiter.FAILED, attempt=1), RULES,
     (Step.POLL, None, retry_delay(2, 0.2, 2.0))),
    # MySQL away
    ("batch read failed: poll with the error back-off", UPSERT, facts(read_failed=True), RULES,
     (Step.POLL, None, retry_delay(1, 0.2, 2.0))),
    ("final read failed: poll", UPSERT, facts(read_failed=True, final=True, lock=Lock.FREE), RULES,
     (Step.POLL, None, retry_delay(1))),
    # refused: cannot be checked
    ("unknown column: refused", UPSERT, facts(row=GONE), RULES, (Step.REFUSE, None, 0.0, str(GONE))),
    ("unreadable after the lock was free: poll", UPSERT, facts(row=GONE, final=True), RULES,
     (Step.POLL, None, retry_delay(1))),
    ("version ahead of gman_stamp(): refused", UPSERT, facts(row=ROW, stamp=V - 1), RULES,
     (Step.REFUSE, None, 0.0, f"version {V} is ahead of gman_stamp() {V - 1}")),
]


@pytest.mark.parametrize("name, change, seen, rules, expected", CASES, ids=[c[0] for c in CASES])
def test_decide(name, change, seen, rules, expected):
    got = decide(change, seen, rules)
    assert got[:len(expected)] == expected, name
    if got.step is Step.WRITE and got.change == change:
        assert got.change is change  # the job's own image and version, untouched


def test_every_step_is_reached():
    assert {decide(c, f, r).step for _, c, f, r, _ in CASES} == set(Step)


ROWS = {"job's": ROW, "older": OLD, "none": None, "gone": GONE}


@pytest.mark.parametrize("change", [UPSERT, DELETE], ids=["upsert", "delete"])
def test_a_write_carries_only_what_is_committed(change):
    """Over every combination of facts: a WRITE's image is the committed row (a delete: no row),
    with the job's version; it writes something other than the job's image only from a final read."""
    for (_, row), final, failed, lock, waiter, waited, stamp, waiters in itertools.product(
            ROWS.items(), (False, True), (False, True), Lock, Waiter, (0.0, 9.9, 10.0, 3600.0),
            (V - 1, STAMP), (False, True)):
        f = Facts(row, failed, final, lock, waiter, waited, stamp, 0)
        d = decide(change, f, RULES._replace(waiters=waiters))
        assert isinstance(d, Decision)
        if d.step is not Step.WRITE:
            continue
        assert not failed and waiter in (Waiter.NONE, Waiter.BUSY) and stamp >= V, f
        assert d.change.version == V and d.change.key == change.key
        if d.change.op == "upsert":
            assert d.change.row == row, f
        else:
            assert row is None, f
        if d.change != change:
            assert final, f


def run(change, world, rules=RULES, waited=0.0):
    """Drive decide() as pygen/sync/committed_loop.py does, on a scripted world:
    {'read': [rows for each read], 'lock': Lock, 'waiter': bool (takes it), 'outcome': row or Waiter}.
    Returns the steps taken."""
    reads = iter(world["read"])
    f = Facts(next(reads), waited=waited, stamp=STAMP)
    steps = []
    while True:
        d = decide(change, f, rules)
        steps.append(d.step)
        if d.step is Step.WAIT:
            if not world["waiter"]:
                f = f._replace(waiter=Waiter.BUSY)
                continue
            outcome = world["outcome"]
            if isinstance(outcome, Waiter):
                steps.append(decide(change, Facts(waiter=outcome), rules).step)
                return steps, None
            f = Facts(outcome, final=True, waited=waited, stamp=STAMP)
        elif d.step is Step.TRY_LOCK:
            f = f._replace(lock=world["lock"])
        elif d.step is Step.READ_FINAL:
            f = f._replace(row=next(reads), final=True)
        else:
            return steps, d


def test_waited_then_committed():
    steps, d = run(UPSERT, {"read": [OLD], "waiter": True, "outcome": ROW})
    assert steps == [Step.WAIT, Step.WRITE] and d.change is UPSERT


def test_waited_then_rolled_back_writes_the_committed_image():
    steps, d = run(UPSERT, {"read": [OLD], "waiter": True, "outcome": OLD})
    assert steps == [Step.WAIT, Step.WRITE] and d.change.row == OLD


def test_waiter_timed_out_reads_again():
    assert run(UPSERT, {"read": [OLD], "waiter": True, "outcome": Waiter.TIMED_OUT})[0] == [Step.WAIT, Step.READ]


def test_waiters_busy_fall_back_to_polling_the_lock():
    steps, d = run(UPSERT, {"read": [OLD], "waiter": False, "lock": Lock.HELD})
    assert steps == [Step.WAIT, Step.TRY_LOCK, Step.POLL]
    steps, d = run(UPSERT, {"read": [OLD, OLD], "waiter": False, "lock": Lock.FREE})
    assert steps == [Step.WAIT, Step.TRY_LOCK, Step.READ_FINAL, Step.WRITE] and d.change.row == OLD


def test_max_wait_exceeded_writes_what_is_committed():
    steps, d = run(UPSERT, {"read": [OLD, OLD], "waiter": True, "lock": Lock.HELD}, waited=3600.0)
    assert steps == [Step.TRY_LOCK, Step.READ_FINAL, Step.WRITE] and d.change.row == OLD


def test_committed_between_the_reads():
    steps, d = run(DELETE, {"read": [ROW, None], "waiter": False, "lock": Lock.FREE})
    assert steps[-1] is Step.WRITE and d.change is DELETE


def test_retry_delay_grows_and_caps():
    assert retry_delay(0) < retry_delay(1) < retry_delay(3)
    assert retry_delay(50) == 1.0
    assert retry_delay(50, 0.2, 2.0) == 2.0
