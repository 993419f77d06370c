"""Committed mode's waiters: a bounded pool of threads, each with its own MySQL connection,
running one locking read at a time. A locking read of a row that an open transaction has
changed waits in MySQL for that transaction's row lock, and returns the moment it commits
or rolls back (or after --lock-wait seconds: innodb_lock_wait_timeout, set per session).
The worker's loop goes on meanwhile: it hands a read over with submit(), is told by
notify() (its wake-up) when one is over, and collects the outcomes with done().

Each read runs alone, in autocommit and READ COMMITTED (no gap locks): its shared lock is
released as the statement ends, and a statement that holds no other lock while it waits
cannot be part of a deadlock. Connections are opened when needed and closed after `idle`
seconds without work; at most `size` exist.
"""
from __future__ import annotations

import collections
import logging
import queue
import threading
from typing import Callable, List, Optional, Tuple

log = logging.getLogger("gman-udf.worker")  # the worker's log

TIMEOUT = "lock wait timeout"  # an outcome: the lock was still held after lock_wait seconds
_LOCK_WAIT_CODES = (1205, 1213)  # lock wait timeout; deadlock (not ours: this read holds nothing), try again


class Waiters:
    """submit(token, sql, params) -> bool; done() -> [(token, outcome)], where outcome is the
    read's rows (a tuple of tuples), TIMEOUT, or the exception it raised."""

    def __init__(self, connect: Callable[[], object], size: int, lock_wait: int,
                 notify: Callable[[], None], idle: float = 60.0):
        self.connect, self.size, self.lock_wait = connect, size, lock_wait
        self.notify, self.idle = notify, idle
        self._tasks: "queue.SimpleQueue[Optional[tuple]]" = queue.SimpleQueue()
        self._done: collections.deque = collections.deque()
        self._lock = threading.Lock()
        self._outstanding = 0   # submitted, outcome not yet in done
        self._threads = 0
        self._reading: dict = {}  # waiter thread -> its connection's id, while a read runs
        self._closed = False

    @property
    def busy(self) -> int:
        return self._outstanding

    def submit(self, token, sql: str, params) -> bool:
        """Queue a read; False when `size` reads are already running or queued (or closed)."""
        with self._lock:
            if self._closed or self._outstanding >= self.size:
                return False
            self._outstanding += 1
            start = self._threads < self._outstanding
            if start:
                self._threads += 1
        self._tasks.put((token, sql, params))
        if start:
            threading.Thread(target=self._run, name="gman-waiter", daemon=True).start()
        return True

    def done(self) -> List[Tuple[object, object]]:
        out = []
        while self._done:
            out.append(self._done.popleft())
        return out

    def close(self) -> None:
        """Stop every thread; reads still waiting are ended (KILL QUERY), not waited for."""
        with self._lock:
            self._closed = True
            threads, reading = self._threads, list(self._reading.values())
        for _ in range(threads):
            self._tasks.put(None)
        if not reading:
            return
        try:
            conn = self.connect()
            try:
                for thread_id in reading:
                    conn.cursor().execute(f"KILL QUERY {int(thread_id)}")
            finally:
                conn.close()
        except Exception as e:  # noqa: BLE001 - MySQL away: those reads end at their lock wait timeout
            log.debug("ending the waiting reads: %s", e)

    # ---- a waiter thread
    def _open(self):
        conn = self.connect()
        cur = conn.cursor()
        cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        cur.execute(f"SET SESSION innodb_lock_wait_timeout = {int(self.lock_wait)}")
        return conn

    def _read(self, conn, sql, params):
        import MySQLdb
        me = threading.get_ident()
        with self._lock:
            if self._closed:
                raise RuntimeError("closed")
            self._reading[me] = conn.thread_id()
        try:
            cur = conn.cursor()
            cur.execute(sql, params)
            return tuple(cur.fetchall())
        except MySQLdb.OperationalError as e:
            if e.args and e.args[0] in _LOCK_WAIT_CODES:
                return TIMEOUT
            raise
        finally:
            with self._lock:
                self._reading.pop(me, None)

    def _run(self) -> None:
        conn = None
        try:
            while True:
                try:
                    task = self._tasks.get(timeout=self.idle)
                except queue.Empty:
                    with self._lock:  # leave when the others are enough for every read in hand
                        if self._threads > self._outstanding:
                            self._threads -= 1
                            return
                    continue
                if task is None:  # close()
                    with self._lock:
                        self._threads -= 1
                    return
                token, sql, params = task
                try:
                    if conn is None:
                        conn = self._open()
                    outcome = self._read(conn, sql, params)
                except Exception as e:  # noqa: BLE001 - the loop decides (retried, or the old rule)
                    outcome = e
                    if conn is not None:
                        _close(conn)
                        conn = None
                self._done.append((token, outcome))
                with self._lock:
                    self._outstanding -= 1
                self.notify()
        finally:
            if conn is not None:
                _close(conn)


def _close(conn) -> None:
    try:
        conn.close()
    except Exception:  # noqa: BLE001 - already broken
        pass
