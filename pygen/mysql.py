"""Connect to a server with the `mysql` client's option names and environment variables."""
import os
from dataclasses import dataclass
from typing import Optional


@dataclass
class ConnOptions:
    host: Optional[str] = None
    port: Optional[int] = None
    socket: Optional[str] = None
    user: Optional[str] = None
    password: Optional[str] = None
    database: Optional[str] = None

    def resolved(self) -> dict:
        """MySQLdb.connect() arguments; unset options fall back to MYSQL_HOST, MYSQL_TCP_PORT,
        MYSQL_UNIX_PORT, MYSQL_PWD and USER, as the mysql client does."""
        kw = {"charset": "utf8mb4", "autocommit": True, "connect_timeout": 10}
        host = self.host or os.environ.get("MYSQL_HOST") or "localhost"
        kw["host"] = host
        port = self.port or os.environ.get("MYSQL_TCP_PORT")
        if port:
            kw["port"] = int(port)
        sock = self.socket or os.environ.get("MYSQL_UNIX_PORT")
        if sock:
            kw["unix_socket"] = sock
        kw["user"] = self.user or os.environ.get("USER") or "root"
        pwd = self.password if self.password is not None else os.environ.get("MYSQL_PWD")
        if pwd is not None:
            kw["password"] = pwd
        if self.database:
            kw["database"] = self.database
        return kw

    def is_local(self) -> bool:
        """True when the server runs on this machine (socket or loopback address)."""
        kw = self.resolved()
        return kw["host"] in ("localhost", "127.0.0.1", "::1") or kw["host"].startswith("127.")


def add_arguments(ap) -> None:
    g = ap.add_argument_group("connection (as the mysql client; MYSQL_PWD etc. also work)")
    g.add_argument("-h", "--host")
    g.add_argument("-P", "--port", type=int)
    g.add_argument("-S", "--socket")
    g.add_argument("-u", "--user")
    g.add_argument("-p", "--password", nargs="?", const="", default=None,
                   help="password (prefer MYSQL_PWD in the environment)")
    g.add_argument("-D", "--database")


def from_args(args) -> ConnOptions:
    return ConnOptions(args.host, args.port, args.socket, args.user, args.password, getattr(args, "database", None))


def connect(opts: ConnOptions):
    import MySQLdb
    return MySQLdb.connect(**opts.resolved())


def text(v, errors: str = "strict"):
    """A value MySQLdb returned as bytes (or bytearray) decoded as UTF-8 (errors as for
    bytes.decode); anything else, str or None, unchanged."""
    return v.decode("utf-8", errors) if isinstance(v, (bytes, bytearray)) else v
