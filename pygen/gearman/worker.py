"""The Gearman worker: takes jobs from every server of a list,
reconnecting each with back-off, and answers them; a batching API (grab/complete_many) and a
callable one (run). Built on pygen/gearman/connection.py's Connection; the jobs it hands
out are pygen/gearman/job.py's Job.

    w = Worker(["127.0.0.1:4730", "10.0.0.2:4730"], {"reverse": lambda job: job.workload[::-1]})
    w.run(stop_event)                     # or, batching: jobs = w.grab(500, 1.0); ...; w.complete_many(jobs)

Not thread-safe, except Worker.stop() and Worker.wake().
"""
from __future__ import annotations

import collections
import errno
import logging
import math
import os
import selectors
import socket
import time

from pygen.gearman.connection import Connection, GearmanError
from pygen.gearman.job import Job
from pygen.gearman.link import FENCE, GRAB, SILENT, Link
from pygen.gearman.protocol import (DEFAULT_MAX_DATA, OVERSIZE, REQ, ProtocolError, Type, encode, from_bytes,
                                  to_bytes)

log = logging.getLogger("pygen.gearman")  # the package's logger, one name for log filters


_PRE_SLEEP = encode(REQ, Type.PRE_SLEEP)
WARN_EVERY = 10.0  # seconds: a repeated warning of one server is logged at most this often


class Worker:
    """Registers `functions` on EVERY server of `servers` (jobs may be queued on any of them)
    and takes jobs from all of them. A server that dies is reconnected with exponential
    back-off (max_backoff) while the others keep working; its unfinished jobs are re-queued
    by gearmand when the connection drops, so a job may run twice (at least once).

    functions: {name: callable(job) -> bytes | str | None} for run(); for grab() alone the
    callables may be None (a list of names is accepted too)."""

    def __init__(self, servers, functions, client_id: str | None = None, connect_timeout: float = 2.0,
                 timeout: float = 5.0, poll_interval: float = 0.2, max_backoff: float = 2.0,
                 probe_interval: float = 10.0, exceptions: bool = True, max_data: int = DEFAULT_MAX_DATA):
        servers = [servers] if isinstance(servers, (str, tuple)) else list(servers)
        if not servers:
            raise ValueError("no server given")
        self.functions = dict(functions) if isinstance(functions, dict) else dict.fromkeys(functions)
        if not self.functions:
            raise ValueError("no function given")
        self.client_id = client_id or f"pygen-{socket.gethostname()}-{os.getpid()}"
        self.connect_timeout, self.timeout, self.poll_interval = connect_timeout, timeout, poll_interval
        self.max_backoff, self.probe_interval, self.exceptions = max_backoff, probe_interval, exceptions
        self.links = [Link(Connection(s, connect_timeout, timeout, max_data)) for s in servers]
        self._hello = b"".join([encode(REQ, Type.SET_CLIENT_ID, self.client_id)] +
                               [encode(REQ, Type.CAN_DO, name) for name in self.functions])
        self._sel = selectors.DefaultSelector()
        self._ready: collections.deque[Job] = collections.deque()
        self._stopping = False
        # wake(): another thread makes grab() return now (a socket pair in the selector)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._woken = False

    # ---- connections
    def _down(self, link: Link, why) -> None:
        if link.state == "down":
            return
        # a server that stays down would otherwise log a warning every max_backoff seconds
        level = logging.INFO if link.state == "connecting" and link.backoff else logging.WARNING
        log.log(level, "gearmand %s: %s; reconnecting in %.2f s", link.conn.address, why, link.backoff)
        self._drop(link)
        link.retry_at = time.monotonic() + link.backoff
        link.backoff = min(max(link.backoff * 2, 0.05), self.max_backoff)

    def _drop(self, link: Link) -> None:
        if link.fd >= 0:
            try:
                self._sel.unregister(link.fd)
            except (KeyError, ValueError):
                pass
            link.fd = -1
        link.conn.close()
        link.state, link.grabs, link.empty = "down", 0, False
        link.order.clear()
        link.gen += 1  # jobs taken on the old connection can no longer be answered
        if any(job._link is link for job in self._ready):  # gearmand re-queues them: drop our copies
            self._ready = collections.deque(job for job in self._ready if job._link is not link)

    def _connect(self, link: Link) -> None:
        """Start a non-blocking connect: a server that does not answer must not stall the others."""
        try:
            family, type_, proto, _, addr = socket.getaddrinfo(
                link.conn.host, link.conn.port, type=socket.SOCK_STREAM)[0]
            sock = socket.socket(family, type_, proto)
        except OSError as e:
            link.state = "connecting"
            return self._down(link, e)
        sock.setblocking(False)
        err = sock.connect_ex(addr)
        link.conn.sock, link.fd, link.state = sock, sock.fileno(), "connecting"
        if err not in (0, errno.EINPROGRESS):
            return self._down(link, os.strerror(err))
        link.deadline = time.monotonic() + self.connect_timeout
        self._sel.register(link.fd, selectors.EVENT_WRITE, link)

    def _connected(self, link: Link) -> None:
        err = link.conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            return self._down(link, os.strerror(err))
        try:
            link.conn.attach(link.conn.sock)
            link.conn.send(self._hello)
        except OSError as e:
            return self._down(link, e)
        link.expect("H", 1 + len(self.functions))
        self._sel.modify(link.fd, selectors.EVENT_READ, link)
        link.state, link.empty, link.grabs = "awake", False, 0
        log.info("gearmand %s: connected", link.conn.address)

    def _send(self, link: Link, data: bytes) -> bool:
        try:
            link.conn.send(data)
            return True
        except OSError as e:
            self._down(link, e)
            return False

    def _warn(self, link: Link, kind: str, message: str) -> None:
        """A warning that a server may cause at any rate: logged at most every WARN_EVERY s."""
        now = time.monotonic()
        last = link.quiet.setdefault(kind, [-WARN_EVERY, 0])
        if now - last[0] < WARN_EVERY:
            last[1] += 1
            return
        more = f" ({last[1]} more like it not logged)" if last[1] else ""
        log.warning("gearmand %s: %s%s", link.conn.address, message, more)
        last[0], last[1] = now, 0

    # ---- reading
    def _read(self, link: Link) -> None:
        try:
            link.conn.fill()
            packets = list(link.conn.decoder)
        except (OSError, ProtocolError) as e:
            return self._down(link, e)
        link.deadline = time.monotonic() + self.timeout  # progress: a big payload may take several reads
        for type, args in packets:
            if type in (Type.JOB_ASSIGN_UNIQ, Type.JOB_ASSIGN, Type.NO_JOB, OVERSIZE):
                if link.answer("grab") is None:
                    name = "oversize job" if type == OVERSIZE else Type(type).name
                    return self._down(link, f"{name} without a grab")
                link.backoff = 0.0  # only a useful reply proves the server works: not an ERROR
                if type == Type.JOB_ASSIGN_UNIQ:
                    self._ready.append(Job(self, link, *args))
                elif type == Type.JOB_ASSIGN:  # the answer to GRAB_JOB: no unique id
                    self._ready.append(Job(self, link, args[0], args[1], b"", args[2]))
                elif type == OVERSIZE:  # failed, or gearmand would hand it out again on every reconnection
                    log.warning("gearmand %s: job %s of %d bytes is over the limit (%d); failed", link.conn.address,
                                from_bytes(args[0]), args[2], link.conn.max_data)
                    if not self._send(link, encode(REQ, Type.WORK_FAIL, args[0])):
                        return
                    link.expect("R", 1)
                else:
                    link.empty = True
            elif type == Type.ECHO_RES:
                if link.answer("echo") is None:
                    return self._down(link, "ECHO_RES without an ECHO_REQ")
            elif type == Type.NOOP:
                link.backoff = 0.0
                link.empty = False
                if link.state == "sleeping":
                    link.state = "awake"
            elif type == Type.ERROR:
                if not self._refused(link, from_bytes(args[0]), from_bytes(args[1])[:200].strip()):
                    return
            else:
                return self._down(link, f"unexpected {Type(type).name}")
        if link.state == "awake" and link.grabs == 0 and link.empty:
            if self._send(link, _PRE_SLEEP):
                link.state, link.slept_at = "sleeping", time.monotonic()
                link.expect("S", 1)

    def _refused(self, link: Link, code: str, text: str) -> bool:
        """An ERROR: the answer to the oldest request still waiting for one. False if the
        link went down for it."""
        kind = link.answer("error")
        if kind == "U":
            if link.uniq:  # a server of the original protocol; its other "U" grabs fail alike
                link.uniq = False
                log.warning("gearmand %s refuses GRAB_JOB_UNIQ (%s: %s); using GRAB_JOB (no unique ids)",
                            link.conn.address, code, text)
            return True
        if kind == "G":  # a server that refuses every grab gives no job: down, with back-off
            self._down(link, f"refuses GRAB_JOB ({code}: {text})")
            return False
        if kind == "E":  # a server that refuses even ECHO_REQ cannot be told apart: down
            self._down(link, f"refuses ECHO_REQ ({code}: {text})")
            return False
        if kind == "R":
            self._warn(link, "result", f"refused a job's result ({code}: {text})")
        elif kind == "H":
            self._warn(link, "hello", f"refused SET_CLIENT_ID or CAN_DO ({code}: {text})")
        elif kind == "S":  # no NOOP will come: probe_interval wakes the link up
            self._warn(link, "sleep", f"refused PRE_SLEEP ({code}: {text})")
        else:
            self._warn(link, "error", f"error {code} answering no request: {text}")
        return True

    def _maintain(self, now: float) -> None:
        for link in self.links:
            if link.state == "down" and now >= link.retry_at and not self._stopping:
                self._connect(link)
            elif link.state == "connecting" and now > link.deadline:
                self._down(link, f"connect timed out after {self.connect_timeout} s")
            elif link.grabs and now > link.deadline:
                self._down(link, f"no reply within {self.timeout} s")
            elif link.state == "sleeping" and now - link.slept_at > self.probe_interval:
                # a lost NOOP or a silently dead server would otherwise leave us asleep forever
                link.state, link.empty = "awake", False

    def _request_grabs(self, want: int, now: float) -> None:
        """Send up to `want` GRAB_JOB_UNIQ, spread over the servers that may have jobs. gearmand
        answers each one, so several in a row on one connection take several jobs."""
        want -= len(self._ready) + sum(link.grabs for link in self.links)
        candidates = [l for l in self.links if l.state == "awake" and not l.grabs and not l.empty]
        share = math.ceil(want / len(candidates)) if candidates else 0
        for link in candidates:
            n = min(share, want)
            if n <= 0:
                break
            fence = bool(link.order) and link.order[-1][0] in SILENT
            if self._send(link, (FENCE if fence else b"") + GRAB[link.uniq] * n):
                link.grabs, link.deadline = n, now + self.timeout
                if fence:
                    link.expect("E", 1)
                link.expect("U" if link.uniq else "G", n)
                want -= n

    def _poll(self, timeout: float) -> None:
        for key, _ in self._sel.select(max(timeout, 0.0)):
            link = key.data
            if link is None:
                self._drain_wake()
            elif link.state == "connecting":
                self._connected(link)
            elif link.state != "down":
                self._read(link)

    # ---- the batching API
    def grab(self, max_jobs: int = 1, timeout: float = 1.0) -> list[Job]:
        """Up to max_jobs assigned jobs, waiting at most `timeout` for the first. Returns as soon
        as max_jobs are in or every server has said NO_JOB; [] on timeout. After stop() it
        sends no new grab and returns only jobs already received."""
        deadline = time.monotonic() + timeout
        while True:
            now = time.monotonic()
            self._maintain(now)
            if not self._stopping:
                self._request_grabs(max_jobs, now)
            busy = any(l.grabs or (l.state == "awake" and not l.empty) for l in self.links)
            if len(self._ready) >= max_jobs or (self._ready and not busy) or self._stopping:
                break
            if now >= deadline or self._woken:
                break
            wake = min([deadline, now + self.poll_interval] +
                       [l.retry_at for l in self.links if l.state == "down"])
            self._poll(wake - now)
        self._woken = False
        return [self._ready.popleft() for _ in range(min(max_jobs, len(self._ready)))]

    def _finish(self, job: Job, packet: bytes) -> bool:
        """Send a job's result. False when its connection is gone (gearmand re-queues it)."""
        if job.done:
            raise GearmanError(f"job {job.handle} already finished")
        job.done = True
        if job.alive and self._send(job._link, packet):
            job._link.expect("R", 1)
            return True
        return False

    def complete(self, job: Job, data: bytes | str = b"") -> bool:
        return self._finish(job, encode(REQ, Type.WORK_COMPLETE, job.handle, data))

    def fail(self, job: Job) -> bool:
        return self._finish(job, encode(REQ, Type.WORK_FAIL, job.handle))

    def exception(self, job: Job, text: str) -> bool:
        if not job._link.uniq:  # Gearman::Server keeps a job after WORK_EXCEPTION: it would never end
            return self._finish(job, encode(REQ, Type.WORK_FAIL, job.handle))
        return self._finish(job, encode(REQ, Type.WORK_EXCEPTION, job.handle, to_bytes(text)))

    def complete_many(self, jobs, data: bytes | str = b"") -> int:
        """WORK_COMPLETE for each job, one write per server; returns how many were sent."""
        by_link: dict[int, tuple[Link, list]] = {}
        for job in jobs:
            if job.done:
                raise GearmanError(f"job {job.handle} already finished")
            job.done = True
            if job.alive:
                by_link.setdefault(id(job._link), (job._link, []))[1].append(
                    encode(REQ, Type.WORK_COMPLETE, job.handle, data))
        sent = 0
        for link, packets in by_link.values():
            if self._send(link, b"".join(packets)):
                link.expect("R", len(packets))
                sent += len(packets)
        return sent

    # ---- the callable API
    def work(self, job: Job) -> None:
        """Run the job's function and send its outcome."""
        try:
            result = self.functions[job.function](job)
        except Exception as e:
            log.warning("job %s (%s) raised %r", job.handle, job.function, e)
            if not job.done:
                self.exception(job, f"{type(e).__name__}: {e}") if self.exceptions else self.fail(job)
            return
        if job.done:
            return
        if result is not None and not isinstance(result, (bytes, bytearray, memoryview, str)):
            log.warning("job %s (%s) returned a %s", job.handle, job.function, type(result).__name__)
            text = f"TypeError: {job.function} returned {type(result).__name__}, not bytes, str or None"
            self.exception(job, text) if self.exceptions else self.fail(job)
            return
        self.complete(job, b"" if result is None else result)

    def run(self, stop_event=None, batch: int = 1) -> None:
        """Work until stop() or stop_event.set() (honoured within poll_interval, after the jobs
        in hand), then close. batch > 1 grabs several jobs per round trip (faster for short
        jobs; the others wait behind a slow one instead of going to another worker)."""
        try:
            while not self._stopping and not (stop_event is not None and stop_event.is_set()):
                for job in self.grab(batch, self.poll_interval):
                    self.work(job)
        finally:
            self.close()

    def stop(self) -> None:
        """Ask run()/grab() to take no new job; run() finishes the current one and closes.
        May be called from another thread, as wake()."""
        self._stopping = True
        self.wake()

    def wake(self) -> None:
        """Make a grab() waiting in another thread return now (with the jobs it has), or the
        next one return at once: for a caller with other work arriving meanwhile."""
        try:
            self._wake_w.send(b"w")
        except OSError:  # the buffer is full (a wake is pending already), or closed
            pass

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:  # BlockingIOError: drained
            pass
        self._woken = True

    def close(self) -> None:
        """Close every connection; jobs taken but not finished go back to gearmand's queue."""
        for link in self.links:
            self._drop(link)
            link.retry_at = link.backoff = 0.0
        self._ready.clear()
        self._sel.close()
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
