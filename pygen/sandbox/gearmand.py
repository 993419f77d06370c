"""gearmand for the sandbox: the C server, or Perl Gearman::Server (PerlGearmand)."""
from __future__ import annotations

import subprocess

from pygen.gearman.admin import admin
from pygen.sandbox.server import Server, ServerError

GEARMAND = "/usr/sbin/gearmand"  # the C server (gearman-job-server); /usr/bin/gearmand is the Perl one
PERL_GEARMAND = "/usr/bin/gearmand"  # Gearman::Server (Debian gearman-server)


class Gearmand(Server):
    """The C gearmand (always /usr/sbin/gearmand, whatever PATH says) with the in-memory queue,
    or queue='sqlite' for the durable libsqlite3 queue."""

    name = "gearmand"
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
        return admin(self.host, self.port, command, timeout)

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
