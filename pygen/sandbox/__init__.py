"""Throwaway MariaDB, gearmand (the C one, or Perl Gearman::Server as PerlGearmand) and Redis
servers for tests, benchmarks and the demo.

Each server runs the real binary on 127.0.0.1 with a free port and all of its state in a temp
directory, and never reads a system configuration file. Usage::

    with MariaDB(plugin_dir="build") as db, Gearmand() as gm:
        db.connect().cursor().execute("SELECT 1")

Servers cannot outlive this process: they are stopped at exit (atexit) and, should the
interpreter be killed, the kernel kills them (PR_SET_PDEATHSIG). That signal follows the
*thread* that started the server, so start servers from a thread that lives long enough.

One module a kind of server (mariadb, gearmand, redis_server) on the plumbing of server.
"""
from pygen.sandbox.gearmand import Gearmand, PerlGearmand
from pygen.sandbox.mariadb import MariaDB
from pygen.sandbox.redis_server import Redis, RedisCluster
from pygen.sandbox.server import HOST, Server, ServerError, free_port

__all__ = ["Gearmand", "PerlGearmand", "MariaDB", "Redis", "RedisCluster", "HOST", "Server", "ServerError",
           "free_port"]
