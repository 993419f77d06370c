"""Committed mode's waiters: a bounded pool of MySQL connections, each running one locking
read at a time, all driven by one thread. A locking read of a row that an open transaction
has changed waits in MySQL for that transaction's row lock, and returns the moment it
commits or rolls back (or after --lock-wait seconds: innodb_lock_wait_timeout, set per
session). The thread sends each read (send_query) and waits for all the connections at once
(a selector on their sockets), so a hundred waits cost one thread, not a hundred threads
taking turns at the GIL. The worker's loop goes on meanwhile: it hands a read over with
submit(), is told by notify() (its wake-up) when one is over, and collects the outcomes with
done().

Each read runs alone, in autocommit and READ COMMITTED (no gap locks): its shared lock is
released as the statement ends, and a statement that holds no other lock while it waits
cannot be part of a deadlock. Connections are opened when needed and closed after `idle`
seconds without work; at most `size` exist. A read with no answer MARGIN seconds after its
lock wait should have ended fails (its connection is closed): the network, not a lock.
"""
from __future__ import annotations

import collections
import logging
import selectors
import socket
import sys
import threading
import time
from typing import Callable, Dict, List, Tuple

log = logging.getLogger("gman-udf.worker")  # the worker's log

TIMEOUT = "lock wait timeout"  # an outcome: the lock was still held after lock_wait seconds
MARGIN = 5.0  # seconds past lock_wait
SEND_BATCH = 8  # reads sent per round of the thread, between looks at the answers
SWITCH_INTERVAL = 0.0005  # seconds: sys.setswitchinterval() once waits begin
# An idle connection is closed after this (a pool's usual 10 minutes): a burst of open transactions
# after a quiet minute finds its connections open, not a hundred connects in its way.
IDLE = 600.0
_LOCK_WAIT_CODES = (1205, 1213)  # lock wait timeout; deadlock (not ours: this read holds nothing), try again


class Waiters:
    """submit(token, sql, params) -> bool; done() -> [(token, outcome)], where outcome is the
    read's rows (a tuple of tuples), TIMEOUT, or the exception it raised."""

    def __init__(self, connect: Callable[[], object], size: int, lock_wait: int,
                 notify: Callable[[], None], idle: float = IDLE):
        self.connect, self.size, self.lock_wait = connect, size, lock_wait
        self.notify, self.idle = notify, idle
        self._tasks: collections.deque = collections.deque()  # (connection or None, token, sql, params) to send
        self._opening = 0  # connections being opened for a read
        self._done: collections.deque = collections.deque()
        self._lock = threading.Lock()
        self._outstanding = 0   # submitted, outcome not yet in done
        self._reading: Dict[object, int] = {}  # connection -> its id, while a read runs on it
        self._closed = False
        self._thread = None
        self._told = True  # notify() was called since the last outcome
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)

    @property
    def busy(self) -> int:
        return self._outstanding

    def submit(self, token, sql: str, params) -> bool:
        """Queue a read; False when `size` reads are already running or queued (or closed)."""
        with self._lock:
            if self._closed or self._outstanding >= self.size:
                return False
            self._outstanding += 1
            self._tasks.append((None, token, sql, params))
            if self._thread is None:
                # an answer waits for the GIL at most this long while the loop runs Python
                # (default 5 ms: the whole latency budget)
                sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))
                self._thread = threading.Thread(target=self._run, name="gman-waiters", daemon=True)
                self._thread.start()
        self._wake()
        return True

    def done(self) -> List[Tuple[object, object]]:
        out = []
        while self._done:
            out.append(self._done.popleft())
        return out

    def close(self) -> None:
        """Take no more reads; the reads still waiting are ended (KILL QUERY), not waited for:
        their outcomes still reach done() as they end."""
        with self._lock:
            self._closed = True
            reading = list(self._reading.values())
            running = self._thread is not None
        if running:
            self._wake()
        else:
            self._close_wake()
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

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except (BlockingIOError, OSError):  # full: the thread is awake anyway; closed: it is gone
            pass

    def _close_wake(self) -> None:
        self._wake_r.close()
        self._wake_w.close()

    # ---- the waiters' thread
    def _open(self):
        conn = self.connect()
        cur = conn.cursor()
        cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        cur.execute(f"SET SESSION innodb_lock_wait_timeout = {int(self.lock_wait)}")
        return conn

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._wake_r, selectors.EVENT_READ)
        idle: List[Tuple[object, float]] = []  # (connection, when it was last used)
        running: Dict[object, Tuple[object, float]] = {}  # connection -> (token, deadline), in the order sent
        try:
            while True:
                with self._lock:  # a few at a time: the answers of reads sent already are not held up
                    tasks = [self._tasks.popleft() for _ in range(min(SEND_BATCH, len(self._tasks)))]
                    more, closed, opening = bool(self._tasks), self._closed, self._opening
                for conn, token, sql, params in tasks:
                    if closed:
                        if conn is not None:
                            _close(conn)
                        self._finish(token, RuntimeError("closed"))
                    elif conn is None and not idle:  # a new connection, opened aside: the others' answers go on
                        with self._lock:
                            self._opening += 1
                        threading.Thread(target=self._opener, args=(token, sql, params), name="gman-waiter-open",
                                         daemon=True).start()
                    else:
                        self._send(sel, running, conn or idle.pop()[0], token, sql, params)
                if closed and not running and not opening and not more:
                    if not self._told:
                        self.notify()
                    return  # every read has ended (no connection opening can bring one)
                now = time.monotonic()
                first = next(iter(running.values()), None)
                wait = 0.0 if more else min(first[1] - now, self.idle) if first else self.idle
                for key, _ in sel.select(max(0.0, wait)):
                    if key.fileobj is self._wake_r:
                        try:
                            while self._wake_r.recv(4096):
                                pass
                        except BlockingIOError:
                            pass
                    else:
                        self._receive(sel, running, idle, key.fileobj)
                now = time.monotonic()
                while running:
                    conn, (token, deadline) = next(iter(running.items()))
                    if deadline > now:
                        break
                    self._end(sel, running, conn, TimeoutError(
                        f"no answer to a locking read {self.lock_wait + MARGIN:g} s after it was sent"), None)
                while idle and now - idle[0][1] > self.idle:
                    _close(idle.pop(0)[0])
                if not self._told:  # every read this round answered, one wake-up
                    self._told = True
                    self.notify()
        finally:
            for conn in running:
                _close(conn)
            for conn, _ in idle:
                _close(conn)
            sel.close()
            self._close_wake()

    def _opener(self, token, sql, params) -> None:
        try:
            conn = self._open()
        except Exception as e:  # noqa: BLE001 - the loop decides (retried, or the old rule)
            self._finish(token, e)
            self._told = True
            self.notify()
            conn = None
        with self._lock:
            self._opening -= 1
            if conn is not None:
                self._tasks.appendleft((conn, token, sql, params))
        self._wake()

    def _send(self, sel, running, conn, token, sql, params) -> None:
        try:
            with self._lock:
                self._reading[conn] = conn.thread_id()
            conn.send_query(sql.encode(conn.encoding) % tuple(map(conn.literal, params)))
            sel.register(conn, selectors.EVENT_READ)
            running[conn] = token, time.monotonic() + self.lock_wait + MARGIN
        except Exception as e:  # noqa: BLE001 - the loop decides (retried, or the old rule)
            with self._lock:
                self._reading.pop(conn, None)
            _close(conn)
            self._finish(token, e)

    def _receive(self, sel, running, idle, conn) -> None:
        import MySQLdb
        token = running[conn][0]
        try:
            conn.read_query_result()
            result = conn.store_result()
            outcome = tuple(result.fetch_row(0)) if result is not None else ()
        except MySQLdb.OperationalError as e:
            outcome = TIMEOUT if e.args and e.args[0] in _LOCK_WAIT_CODES else e
        except Exception as e:  # noqa: BLE001 - the loop decides (retried, or the old rule)
            outcome = e
        self._end(sel, running, conn, outcome, None if isinstance(outcome, Exception) else idle)

    def _end(self, sel, running, conn, outcome, idle) -> None:
        """A read is over: its connection goes back to `idle` (None: closed, broken)."""
        sel.unregister(conn)
        token = running.pop(conn)[0]
        with self._lock:
            self._reading.pop(conn, None)
        if idle is None:
            _close(conn)
        else:
            idle.append((conn, time.monotonic()))
        self._finish(token, outcome)

    def _finish(self, token, outcome) -> None:
        """An outcome for done(); the loop is told once per round of the thread (notify())."""
        self._done.append((token, outcome))
        with self._lock:
            self._outstanding -= 1
        self._told = False


def _close(conn) -> None:
    try:
        conn.close()
    except Exception:  # noqa: BLE001 - already broken
        pass
