"""The sandbox's process plumbing: free ports, state directories under one temp root, servers
that die with the process that started them, and Server, the base of each kind of server.
"""
from __future__ import annotations

import atexit
import ctypes
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

HOST = "127.0.0.1"
_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)
_lock = threading.Lock()
_root: Path | None = None
_live: set["Server"] = set()
_ports: set[int] = set()
_random = random.SystemRandom()  # a test calling random.seed() must not make ports collide


class ServerError(RuntimeError):
    """A server failed to start or to answer; the message carries the tail of its logs."""


def free_port(host: str = HOST) -> int:
    """A port nobody listens on, below the ephemeral range so that outgoing connections
    (a benchmark can open thousands) never take it between start and restart."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(100):
        if low > 11000:
            port = _random.randrange(10000, low)
        else:  # unusual range: let the kernel pick
            with socket.socket() as s:
                s.bind((host, 0))
                port = s.getsockname()[1]
        with _lock:
            if port in _ports:
                continue
        if not _port_taken(host, port):
            with _lock:
                _ports.add(port)
            return port
    raise ServerError("no free port found")


def _port_taken(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT does not count
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def _listener(port: int, pid: int) -> str | None:
    """Who listens on TCP `port`: "ours" (process `pid`), "other", or None. Read from /proc,
    because a connect() would also succeed against a stranger holding the port."""
    inodes = set()
    for table in Path("/proc/net/tcp"), Path("/proc/net/tcp6"):
        for line in table.read_text().splitlines()[1:] if table.exists() else ():
            f = line.split()
            if f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(f"socket:[{f[9]}]")
    if not inodes:
        return None
    for fd in Path(f"/proc/{pid}/fd").glob("*"):
        try:
            if os.readlink(fd) in inodes:
                return "ours"
        except OSError:  # closed meanwhile
            pass
    return "other"


def die_with_parent(parent: int):
    """A Popen preexec_fn: the child gets SIGKILL when the thread of `parent` that started it ends."""
    def preexec() -> None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)
    return preexec


def state_dir(prefix: str) -> Path:
    """A new directory for one server's state, under this process's temp root (removed at exit)."""
    global _root
    with _lock:
        if _root is None:
            _sweep_stale()
            _root = Path(tempfile.mkdtemp(prefix=f"gman-sandbox-{os.getpid()}-"))
            atexit.register(_cleanup)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=_root))


def _sweep_stale() -> None:
    """Delete the state left by sandbox processes that were killed (atexit never ran)."""
    for path in Path(tempfile.gettempdir()).glob("gman-sandbox-*-*"):
        pid = path.name.split("-")[2]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(path, ignore_errors=True)


def _cleanup() -> None:
    for server in list(_live):
        try:
            server.close()
        except Exception:  # exit must go on: the other servers still need stopping
            pass
    if _root is not None:
        shutil.rmtree(_root, ignore_errors=True)


def tail(path: Path, lines: int) -> str:
    """The last lines of a log file ("" when it cannot be read)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class Managed:
    """start() on entering a with block, close() on leaving it."""

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


class Server(Managed):
    """One server process: spawn, wait until ready, signal, stop, clean up."""

    name = "server"
    start_timeout = 30.0
    stop_timeout = 30.0

    def __init__(self, extra_args=(), env=None):
        self.host = HOST
        self.port = free_port()
        self.extra_args = [str(a) for a in extra_args]
        self.env = dict(env or {})
        self.dir = state_dir(self.name + "-")
        self.log_path = self.dir / f"{self.name}.log"
        self.out_path = self.dir / f"{self.name}.out"  # stdout+stderr: early errors land here
        self.proc: subprocess.Popen | None = None
        self._started_once = False

    # subclasses say how to run and how to tell that the server answers
    def _command(self) -> list[str]:
        raise NotImplementedError

    def _prepare(self) -> None:
        pass

    def _answers(self) -> bool:
        return True

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        parts = [f"--- {p}\n{tail(p, lines)}" for p in (self.log_path, self.out_path) if p.exists()]
        return "\n".join(parts) or "(no log written)"

    def start(self, timeout: float | None = None):
        """Start and wait until the server answers; raise ServerError (with log tail) if not."""
        if self.running:
            return self
        self._prepare()
        for attempt in (1, 2):
            self._spawn()
            try:
                self._wait_ready(timeout or self.start_timeout)
                break
            except ServerError:
                self._kill_hard()
                # someone took our port between free_port() and now: move, but only before
                # the first successful start (clients may already know the address after)
                if attempt == 1 and not self._started_once and _port_taken(self.host, self.port):
                    self.port = free_port()
                    continue
                raise
        self._started_once = True
        _live.add(self)
        return self

    def _spawn(self) -> None:
        with open(self.out_path, "ab") as out:
            self.proc = subprocess.Popen(
                self._command(), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                cwd=self.dir, env={**os.environ, **self.env},
                preexec_fn=die_with_parent(os.getpid()))

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        delay = 0.01
        while True:
            rc = self.proc.poll()
            if rc is not None:
                self._fail(f"exited with code {rc} while starting")
            listener = _listener(self.port, self.proc.pid)
            if listener == "other":
                self._fail(f"port {self.port} is taken by another process")
            if listener == "ours" and self._answers():
                return
            if time.monotonic() > deadline:
                self._fail(f"not ready after {timeout:.0f} s")
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def _fail(self, what: str):
        raise ServerError(f"{self.name} on {self.host}:{self.port} (pid {self.pid}) {what}\n"
                          f"command: {' '.join(self._command())}\n{self.log_tail()}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send `sig` (SIGSTOP, SIGCONT, SIGKILL...) to the process; SIGKILL also reaps it."""
        if not self.running:
            raise ServerError(f"{self.name} is not running")
        self.proc.send_signal(sig)
        if sig == signal.SIGKILL:
            self.proc.wait()

    def stop(self, timeout: float | None = None) -> None:
        """Graceful stop (SIGTERM), then SIGKILL after `timeout`. State files are kept."""
        if not self.running:
            return
        self.proc.terminate()
        self.proc.send_signal(signal.SIGCONT)  # a SIGSTOPped server would never see SIGTERM
        try:
            self.proc.wait(timeout or self.stop_timeout)
        except subprocess.TimeoutExpired:
            self._kill_hard()

    def _kill_hard(self) -> None:
        if self.running:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait()

    def restart(self, timeout: float | None = None):
        """Stop and start again on the same port with the same state directory."""
        self.stop()
        return self.start(timeout)

    def close(self) -> None:
        """Stop and delete the state directory."""
        self.stop()
        _live.discard(self)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.host}:{self.port} pid={self.pid} dir={self.dir}>"
