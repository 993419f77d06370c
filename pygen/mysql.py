"""Every MySQL connection: options from the `mysql` client's command line (-h, -u, -S... and its
environment variables) or from a mysql:// DSN (the worker and reconcile), one connect()."""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Mapping, Optional
from urllib.parse import parse_qs, unquote, urlsplit


@dataclass(frozen=True)
class ConnOptions:
    host: str = "localhost"
    port: Optional[int] = None
    socket: Optional[str] = None
    user: str = "root"
    password: Optional[str] = None
    database: Optional[str] = None
    connect_timeout: Optional[int] = None   # seconds; None: MySQLdb's default
    read_timeout: Optional[int] = None
    write_timeout: Optional[int] = None
    binary_prefix: bool = False             # bytes parameters sent as _binary'...'

    @classmethod
    def from_args(cls, args, environ: Mapping[str, str] = os.environ) -> "ConnOptions":
        """The options of add_arguments(); unset ones fall back to MYSQL_HOST, MYSQL_TCP_PORT,
        MYSQL_UNIX_PORT, MYSQL_PWD and USER, as the mysql client does."""
        port = args.port or environ.get("MYSQL_TCP_PORT")
        return cls(host=args.host or environ.get("MYSQL_HOST") or "localhost",
                   port=int(port) if port else None,
                   socket=args.socket or environ.get("MYSQL_UNIX_PORT") or None,
                   user=args.user or environ.get("USER") or "root",
                   password=args.password if args.password is not None else environ.get("MYSQL_PWD"),
                   database=getattr(args, "database", None) or None,
                   connect_timeout=10)

    @classmethod
    def from_dsn(cls, dsn: str, environ: Mapping[str, str] = os.environ) -> "ConnOptions":
        """mysql://user:pass@host:port/db[?socket=PATH&connect_timeout=S&read_timeout=S&write_timeout=S];
        no password in the DSN: MYSQL_PWD's, if set."""
        parts = urlsplit(dsn)
        if parts.scheme not in ("mysql", "mariadb"):
            raise ValueError(f"--mysql {dsn!r}: expected mysql://user:pass@host:port/db")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        port = parts.port or None
        password = unquote(parts.password) if parts.password is not None else environ.get("MYSQL_PWD")
        sock = query.pop("socket", None) or query.pop("unix_socket", None)
        timeouts = {name: int(query.pop(name)) for name in ("connect_timeout", "read_timeout", "write_timeout")
                    if name in query}
        if query:
            raise ValueError(f"--mysql: unknown parameters {', '.join(sorted(query))}")
        return cls(host=parts.hostname or "localhost", port=port, socket=sock or None,
                   user=unquote(parts.username or "") or "root", password=password,
                   database=unquote(parts.path.lstrip("/")) or None, binary_prefix=True, **timeouts)

    def defaults(self, **timeouts: int) -> "ConnOptions":
        """These timeouts where the options set none."""
        return replace(self, **{k: v for k, v in timeouts.items() if getattr(self, k) is None})

    def kwargs(self) -> dict:
        """MySQLdb.connect() arguments (utf8mb4, autocommit)."""
        kw = {"host": self.host, "user": self.user, "charset": "utf8mb4", "autocommit": True}
        if self.binary_prefix:
            kw["binary_prefix"] = True
        for name, arg in (("port", "port"), ("socket", "unix_socket"), ("password", "password"),
                          ("database", "database"), ("connect_timeout", "connect_timeout"),
                          ("read_timeout", "read_timeout"), ("write_timeout", "write_timeout")):
            value = getattr(self, name)
            if value is not None:
                kw[arg] = value
        return kw

    def connect(self, **overrides):
        """A new MySQLdb connection; overrides replace kwargs() entries (e.g. read_timeout=)."""
        import MySQLdb
        return MySQLdb.connect(**{**self.kwargs(), **overrides})

    def is_local(self) -> bool:
        """True when the server runs on this machine (socket or loopback address)."""
        return self.host in ("localhost", "127.0.0.1", "::1") or self.host.startswith("127.")


def add_arguments(ap) -> None:
    g = ap.add_argument_group("connection (as the mysql client; MYSQL_PWD etc. also work)")
    g.add_argument("-h", "--host")
    g.add_argument("-P", "--port", type=int)
    g.add_argument("-S", "--socket")
    g.add_argument("-u", "--user")
    g.add_argument("-p", "--password", nargs="?", const="", default=None,
                   help="password (prefer MYSQL_PWD in the environment)")
    g.add_argument("-D", "--database")


def scalar(conn, sql: str, params=None):
    """The first column of the first row of a query (None when no row)."""
    cur = conn.cursor()
    try:
        cur.execute(sql, params)
        row = cur.fetchone()
        return row[0] if row else None
    finally:
        cur.close()


def text(v, errors: str = "strict"):
    """A value MySQLdb returned as bytes (or bytearray) decoded as UTF-8 (errors as for
    bytes.decode); anything else, str or None, unchanged."""
    return v.decode("utf-8", errors) if isinstance(v, (bytes, bytearray)) else v
