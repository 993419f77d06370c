"""Throwaway MariaDB, gearmand (the C one, or Perl Gearman::Server as PerlGearmand) and Redis
servers for tests, benchmarks and the demo.

Each server runs the real binary on 127.0.0.1 with a free port and all of its state in a temp
directory, and never reads a system configuration file. Usage::

    with MariaDB(plugin_dir="build") as db, Gearmand() as gm:
        db.connect().cursor().execute("SELECT 1")

Servers cannot outlive this process: they are stopped at exit (atexit) and, should the
interpreter be killed, the kernel kills them (PR_SET_PDEATHSIG). That signal follows the
*thread* that started the server, so start servers from a thread that lives long enough.
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


def _die_with_parent(parent: int):
    def preexec() -> None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)
    return preexec


def _tempdir(prefix: str) -> Path:
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


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class Server:
    """One server process: spawn, wait until ready, signal, stop, clean up."""

    name = "server"
    start_timeout = 30.0
    stop_timeout = 30.0

    def __init__(self, extra_args=(), env=None):
        self.host = HOST
        self.port = free_port()
        self.extra_args = [str(a) for a in extra_args]
        self.env = dict(env or {})
        self.dir = _tempdir(self.name + "-")
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
        parts = [f"--- {p}\n{_tail(p, lines)}" for p in (self.log_path, self.out_path) if p.exists()]
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
                preexec_fn=_die_with_parent(os.getpid()))

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

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.host}:{self.port} pid={self.pid} dir={self.dir}>"


# mariadb-install-db runs once per process; each instance copies the result.
# These InnoDB settings must be the same for the install and for the servers.
_INNODB_ARGS = ["--innodb-log-file-size=32M", "--innodb-data-file-path=ibdata1:12M:autoextend"]
_template: Path | None = None


def _mariadb_template() -> Path:
    global _template
    with _lock:
        if _template is not None:
            return _template
    target = _tempdir("mariadb-template-") / "data"
    log = target.parent / "install.log"
    with open(log, "wb") as out:  # --no-defaults must come first, or /etc/mysql is read
        rc = subprocess.run(
            ["mariadb-install-db", "--no-defaults", "--auth-root-authentication-method=normal",
             f"--datadir={target}", "--user=root", "--skip-test-db", *_INNODB_ARGS],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, timeout=300,
            preexec_fn=_die_with_parent(os.getpid())).returncode
    if rc != 0:
        raise ServerError(f"mariadb-install-db failed (code {rc})\n{_tail(log, 40)}")
    with _lock:
        _template = target
    return target


class MariaDB(Server):
    """mariadbd with root / empty password over the unix socket and TCP."""

    name = "mariadb"
    start_timeout = 60.0
    stop_timeout = 60.0

    def __init__(self, plugin_dir=None, extra_args=(), env=None):
        super().__init__(extra_args, env)
        self.user, self.password = "root", ""
        self.datadir = self.dir / "data"
        self.socket = str(self.dir / "mysqld.sock")
        self.plugin_dir = Path(plugin_dir) if plugin_dir else self.dir / "plugin"
        if not plugin_dir:
            self.plugin_dir.mkdir()
        self.version: str | None = None

    @property
    def dsn(self) -> dict:
        return {"host": self.host, "port": self.port, "user": self.user, "password": self.password}

    def connect(self, **kw):
        """A MySQLdb connection over the unix socket (TCP if host= is given), autocommit on."""
        import MySQLdb
        args = {"user": self.user, "password": self.password, "charset": "utf8mb4",
                "autocommit": True, "connect_timeout": 10}
        args.update({"host": self.host, "port": self.port} if "host" in kw else {"unix_socket": self.socket})
        args.update(kw)
        return MySQLdb.connect(**args)

    def _prepare(self) -> None:
        if not self.datadir.exists():
            shutil.copytree(_mariadb_template(), self.datadir, symlinks=True)

    def _command(self) -> list[str]:
        return ["/usr/sbin/mariadbd", "--no-defaults", f"--datadir={self.datadir}",
                f"--socket={self.socket}", f"--port={self.port}", f"--bind-address={self.host}",
                "--user=root", f"--plugin-dir={self.plugin_dir}", f"--log-error={self.log_path}",
                f"--pid-file={self.dir / 'mysqld.pid'}", "--skip-name-resolve", "--skip-log-bin",
                "--character-set-server=utf8mb4", "--innodb-buffer-pool-size=64M",
                "--innodb-flush-log-at-trx-commit=2", *_INNODB_ARGS, *self.extra_args]

    def _answers(self) -> bool:
        try:
            conn = self.connect(connect_timeout=2)
        except Exception:  # MySQLdb.OperationalError while still starting
            return False
        try:
            cur = conn.cursor()
            cur.execute("SELECT VERSION()")
            self.version = cur.fetchone()[0]
        finally:
            conn.close()
        return True


GEARMAND = "/usr/sbin/gearmand"  # the C server (gearman-job-server); /usr/bin/gearmand is the Perl one
PERL_GEARMAND = "/usr/bin/gearmand"  # Gearman::Server (Debian gearman-server)


class Gearmand(Server):
    """The C gearmand (always /usr/sbin/gearmand, whatever PATH says) with the in-memory queue,
    or queue='sqlite' for the durable libsqlite3 queue."""

    name = "gearmand"
    _MULTILINE = {"status", "workers"}
    _has_sqlite: bool | None = None

    def __init__(self, queue=None, extra_args=(), env=None, verbose="WARNING"):
        super().__init__(extra_args, env)
        if queue not in (None, "sqlite"):
            raise ValueError(f"queue must be None or 'sqlite', not {queue!r}")
        if queue == "sqlite" and not self._sqlite_available():
            raise ServerError("this gearmand build has no libsqlite3 queue (-q libsqlite3)")
        self.queue = queue
        self.verbose = verbose  # NOTICE and INFO log every job: too slow for benchmarks
        self.queue_db = self.dir / "q.db" if queue == "sqlite" else None

    @classmethod
    def _sqlite_available(cls) -> bool:
        if cls._has_sqlite is None:
            out = subprocess.run([GEARMAND, "--help"], capture_output=True, text=True, timeout=30)
            cls._has_sqlite = "--libsqlite3-db" in out.stdout + out.stderr
        return cls._has_sqlite

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def _command(self) -> list[str]:
        queue = ["-q", "libsqlite3", f"--libsqlite3-db={self.queue_db}"] if self.queue_db else []
        return [GEARMAND, "--config-file=/dev/null", f"--listen={self.host}",
                f"--port={self.port}", f"--log-file={self.log_path}", f"--verbose={self.verbose}",
                f"--pid-file={self.dir / 'gearmand.pid'}",
                # gearmand's default of 991 buckets makes submits crawl once ~100k jobs are queued.
                "--hashtable-buckets=100003", *queue, *self.extra_args]

    def _answers(self) -> bool:
        try:
            self.admin("status", timeout=2)
        except OSError:
            return False
        return True

    def admin(self, command: str, timeout: float = 5.0) -> str:
        """Send one text admin command; return the reply without its terminating '.' line."""
        multiline = command.split()[0] in self._MULTILINE
        with socket.create_connection((self.host, self.port), timeout=timeout) as s:
            s.sendall(command.encode() + b"\n")
            buf, end = b"", b"\n.\n" if multiline else b"\n"
            while not buf or not (b"\n" + buf).endswith(end):
                chunk = s.recv(65536)
                if not chunk:
                    raise ConnectionError(f"gearmand closed the admin connection after {buf!r}")
                buf += chunk
        text = buf.decode()
        return text[:-2] if multiline else text.rstrip("\n")

    def status(self, timeout: float = 5.0) -> dict[str, tuple[int, int, int]]:
        """{function: (queued, running, available workers)}"""
        result = {}
        for line in self.admin("status", timeout).splitlines():
            name, queued, running, workers = line.rsplit("\t", 3)
            result[name] = (int(queued), int(running), int(workers))
        return result

    def client_count(self, timeout: float = 5.0) -> int:
        """Connections open to gearmand (clients and workers alike), not counting the admin
        connection used to ask: "workers" lists every connection, the asking one included."""
        return len(self.admin("workers", timeout).splitlines()) - 1


class PerlGearmand(Gearmand):
    """Perl Gearman::Server 1.130 (Debian gearman-server), the other job server users run. It
    speaks the original protocol only: no GRAB_JOB_UNIQ, *_LOW, *_HIGH_BG, WORK_DATA... (each
    answered by ERROR server_error), in-memory queue only, no log file (warnings go to
    out_path). Its admin commands status/workers/version/maxqueue read as gearmand's do, but
    "version" is the bare "v1.130.1". Gearman::Server->new() also opens a listener of its own
    on an ephemeral port of every interface; the served port is bound to 127.0.0.1 only."""

    name = "perl-gearmand"

    def __init__(self, extra_args=(), env=None):
        Server.__init__(self, extra_args, env)
        self.queue = self.queue_db = None

    def _command(self) -> list[str]:
        # the script through perl: a PATH or #! line cannot swap the interpreter or the server
        return ["/usr/bin/perl", PERL_GEARMAND, f"--port={self.port}", f"--listen={self.host}",
                f"--pidfile={self.dir / 'gearmand.pid'}", *self.extra_args]


class Redis(Server):
    """redis-server without persistence (pass extra_args=["--appendonly", "yes"] for AOF)."""

    name = "redis"

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def client(self, **kw):
        import redis
        return redis.Redis(host=self.host, port=self.port, **{"socket_timeout": 10, **kw})

    def _command(self) -> list[str]:
        return ["/usr/bin/redis-server", "--port", str(self.port), "--bind", self.host,
                "--save", "", "--appendonly", "no", "--dir", str(self.dir),
                "--logfile", str(self.log_path), "--daemonize", "no", *self.extra_args]

    def _answers(self) -> bool:
        try:
            with self.client(socket_timeout=2) as c:
                return bool(c.ping())
        except Exception:  # redis.ConnectionError, BusyLoadingError while loading the AOF
            return False


class _ClusterNode(Redis):
    """One master of a RedisCluster: its cluster bus on a port of its own (--cluster-port),
    so that port + 10000 (the default) need not be free."""

    name = "redis-node"

    def __init__(self, extra_args=(), env=None):
        super().__init__(extra_args, env)
        self.bus_port = free_port()

    def _command(self) -> list[str]:
        return [*super()._command(), "--cluster-enabled", "yes", "--cluster-port", str(self.bus_port),
                "--cluster-config-file", str(self.dir / "nodes.conf"), "--cluster-node-timeout", "2000"]


class RedisCluster:
    """`masters` cluster-enabled redis-servers joined by `redis-cli --cluster create` (no
    replicas), ready once every node says cluster_state:ok. url is a redis+cluster:// URL."""

    start_timeout = 30.0

    def __init__(self, masters: int = 3, extra_args=()):
        self.nodes = [_ClusterNode(extra_args) for _ in range(masters)]
        self.host = HOST

    @property
    def port(self) -> int:
        return self.nodes[0].port

    @property
    def url(self) -> str:
        return f"redis+cluster://{self.host}:{self.port}"

    def client(self, **kw):
        from redis.cluster import RedisCluster as Client
        return Client(host=self.host, port=self.port, **{"socket_timeout": 10, **kw})

    def cli(self, *args: str, timeout: float = 60.0) -> str:
        """redis-cli --cluster ARGS (create, reshard, check...); ServerError when it fails."""
        cmd = ["/usr/bin/redis-cli", "--cluster", *args]
        try:
            run = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise ServerError(f"{' '.join(cmd)}: no answer after {timeout:.0f} s\n{e.stdout or ''}") from None
        if run.returncode != 0:
            raise ServerError(f"{' '.join(cmd)} failed (code {run.returncode})\n{run.stdout}\n{run.stderr}")
        return run.stdout

    def start(self, timeout: float | None = None):
        try:
            for node in self.nodes:
                node.start()
            self.cli("create", *(f"{n.host}:{n.port}" for n in self.nodes), "--cluster-replicas", "0",
                     "--cluster-yes")
            self._wait_ok(timeout or self.start_timeout)
        except BaseException:
            self.close()
            raise
        return self

    def _wait_ok(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            states = []
            for node in self.nodes:
                try:
                    with node.client(socket_timeout=2) as c:
                        info = c.execute_command("CLUSTER INFO")  # parsed into a dict by redis-py
                        states.append(info.get("cluster_state") if isinstance(info, dict) else info)
                except Exception as e:  # noqa: BLE001 - a node still starting: look again
                    states.append(e)
            if all(s == "ok" for s in states):
                return
            if time.monotonic() > deadline:
                raise ServerError(f"redis cluster not ok after {timeout:.0f} s: {states!r:.500}\n"
                                  + "\n".join(n.log_tail(10) for n in self.nodes))
            time.sleep(0.05)

    def restart_node(self, index: int, timeout: float | None = None) -> None:
        """Restart one master on its port with its state (nodes.conf; its data only with AOF),
        and wait until the cluster is ok again."""
        self.nodes[index].restart(timeout)
        self._wait_ok(timeout or self.start_timeout)

    def node_of(self, key: str) -> "Redis":
        """The master serving `key` now."""
        with self.client() as c:
            node = c.get_node_from_key(key)
        return next(n for n in self.nodes if n.port == node.port)

    def flushall(self) -> None:
        for node in self.nodes:
            with node.client() as c:
                c.flushall()

    def close(self) -> None:
        for node in self.nodes:
            node.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<RedisCluster {', '.join(str(n.port) for n in self.nodes)}>"
