"""Gearman function names, queues and workers for tests.

The session's gearmand and mariadbd are shared: every test uses its own function names
(`fname`), so queues and per-function server lists never mix.
"""
import contextlib
import threading
import time
import uuid

from pygen.gearman.worker import Worker

# A server name that does not resolve takes what the machine's resolver takes (resolv.conf: 5 s
# per try, 2 tries, per address family, when the DNS server does not answer): a bound against a
# hang, not a speed test.
RESOLVER_BOUND_S = 30.0


def fname(tag="f"):
    """A function name no other test uses (queues and per-function lists never mix)."""
    return f"{tag}_{uuid.uuid4().hex[:10]}"


def wait_until(predicate, timeout=5.0, what="condition", interval=0.02):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def queued(gearmand, fn):
    """Jobs of fn waiting in gearmand's queue."""
    return gearmand.status().get(fn, (0, 0, 0))[0]


@contextlib.contextmanager
def running(worker, batch=1, join=2.0):
    """worker.run() in a thread; stopped (and checked to stop within `join` s) on exit."""
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop, batch), daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        stop.set()
        thread.join(join)
        assert not thread.is_alive(), "worker did not stop"


@contextlib.contextmanager
def running_worker(servers, functions, batch=1):
    """A pygen Worker on `servers` (Gearmand objects) running in a thread."""
    with running(Worker([g.address for g in servers], functions, poll_interval=0.05), batch, join=5.0) as worker:
        yield worker


def grab_all(servers, fn, count=None, timeout=10.0):
    """Take and complete jobs of fn from servers until `count` were taken (or, when count is
    None, until every server's queue for fn is empty). Returns the jobs in arrival order."""
    worker = Worker([g.address for g in servers], [fn], poll_interval=0.05)
    jobs = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            if count is not None and len(jobs) >= count:
                break
            if count is None and not any(queued(g, fn) for g in servers) and jobs:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"took {len(jobs)} jobs of {fn} in {timeout} s, expected "
                                     f"{count if count is not None else 'all'}; "
                                     f"queued: {[queued(g, fn) for g in servers]}")
            got = worker.grab(500 if count is None else max(1, min(500, count - len(jobs))), 0.5)
            if got:
                worker.complete_many(got)
                jobs.extend(got)
            elif count is None and not any(queued(g, fn) for g in servers):
                break
    finally:
        worker.close()
    return jobs
