"""MariaDB for the sandbox: mariadbd on a copy of a data directory installed once per process."""
from __future__ import annotations

import os
import shutil
import subprocess
import threading
from pathlib import Path

from pygen.mysql import ConnOptions
from pygen.sandbox.server import Server, ServerError, die_with_parent, state_dir, tail

# mariadb-install-db runs once per process; each instance copies the result.
# These InnoDB settings must be the same for the install and for the servers.
_INNODB_ARGS = ["--innodb-log-file-size=32M", "--innodb-data-file-path=ibdata1:12M:autoextend"]
_template: Path | None = None
_template_lock = threading.Lock()


def _mariadb_template() -> Path:
    global _template
    with _template_lock:
        if _template is not None:
            return _template
    target = state_dir("mariadb-template-") / "data"
    log = target.parent / "install.log"
    with open(log, "wb") as out:  # --no-defaults must come first, or /etc/mysql is read
        rc = subprocess.run(
            ["mariadb-install-db", "--no-defaults", "--auth-root-authentication-method=normal",
             f"--datadir={target}", "--user=root", "--skip-test-db", *_INNODB_ARGS],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, timeout=300,
            preexec_fn=die_with_parent(os.getpid())).returncode
    if rc != 0:
        raise ServerError(f"mariadb-install-db failed (code {rc})\n{tail(log, 40)}")
    with _template_lock:
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
        """A MySQLdb connection over the unix socket (TCP if host= is given), autocommit on;
        kw: more MySQLdb.connect() arguments."""
        where = {"host": self.host, "port": self.port} if "host" in kw else {"socket": self.socket}
        return ConnOptions(user=self.user, password=self.password, connect_timeout=10, **where).connect(**kw)

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
