"""`gman-udf systemd`: a hardened systemd unit for the worker, and a drop-in for gearmand.

    gman-udf systemd --worker --gearman g1:4730,g2:4730 --processes 4 > /etc/systemd/system/gman-udf-worker.service
    gman-udf systemd --gearmand > /etc/systemd/system/gearman-job-server.service.d/gman-udf.conf

Secrets (the MySQL DSN, the Redis URL with its password) never go on the command line, where
every local user reads them (/proc/PID/cmdline, ps): the worker takes them from GMAN_UDF_MYSQL
and GMAN_UDF_REDIS, which the unit reads from its EnvironmentFile (mode 0600, root's: systemd
reads it before it drops privileges).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from typing import List

from pygen.sync import worker_cli

ENV_FILE = "/etc/gman-udf/worker.env"
# gearmand's default hash table has 991 buckets: its submits slow down five-fold once ~100,000
# jobs are queued (README, Performance). A prime well above the deepest queue expected.
HASHTABLE_BUCKETS = 100003
# Debian's gearman-job-server.service, whose ExecStart the drop-in repeats with the option added.
GEARMAND = "/usr/sbin/gearmand"
GEARMAND_PIDFILE = "/run/gearman/gearmand.pid"
SECRET_OPTIONS = ("--mysql", "--redis")

HARDENING = """\
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=read-only
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
CapabilityBoundingSet=
AmbientCapabilities=
UMask=0077"""


def quote(arg: str) -> str:
    """One ExecStart word: systemd expands % specifiers and $VARIABLES and splits on spaces."""
    text = arg.replace("%", "%%").replace("$", "$$")
    if text and not any(c in text for c in ' \t"\'\\;'):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def default_command() -> List[str]:
    """An absolute path: the installed console script, else this interpreter and the module."""
    exe = shutil.which("gman-udf")
    if exe:
        return [os.path.abspath(exe)]
    return [os.path.abspath(sys.executable), "-m", "pygen.cli"]


def check_worker_args(worker_args: List[str]) -> argparse.Namespace:
    """The worker options as the worker itself parses them (a typo fails now, not at boot)."""
    for a in worker_args:
        if a.split("=", 1)[0] in SECRET_OPTIONS:
            raise ValueError(f"{a.split('=', 1)[0]} carries a password: put it in the environment file as "
                             f"{worker_cli.MYSQL_ENV if a.startswith('--mysql') else worker_cli.REDIS_ENV}=..., "
                             "not on the command line")
    # No abbreviations: "--mys DSN" would be --mysql on a command line after all.
    p = argparse.ArgumentParser(prog="gman-udf worker", add_help=False, allow_abbrev=False)
    worker_cli.add_arguments(p)

    def refuse(message):
        raise ValueError(f"worker options: {message}")

    p.error = refuse  # type: ignore[method-assign]
    return p.parse_args(worker_args)


def render_worker(worker_args: List[str], *, command: List[str], env_file: str = ENV_FILE,
                  user: str | None = None) -> str:
    check_worker_args(worker_args)
    exec_start = " ".join(quote(a) for a in [*command, "worker", *worker_args])
    account = f"User={user}\nGroup={user}" if user else "DynamicUser=yes"
    return f"""\
# gman-udf worker: rendered by `gman-udf systemd --worker`. Install:
#   install -m 0600 -o root /dev/null {env_file}   # then write into it:
#     {worker_cli.MYSQL_ENV}=mysql://USER:PASSWORD@HOST:3306/DB   (or ?socket=/run/mysqld/mysqld.sock)
#     {worker_cli.REDIS_ENV}=redis://:PASSWORD@HOST:6379/0
#   systemctl daemon-reload && systemctl enable --now gman-udf-worker
[Unit]
Description=gman-udf worker: row changes from gearmand into Redis
Documentation=https://pypi.org/project/gman-udf/
Wants=network-online.target
After=network-online.target gearman-job-server.service redis-server.service mariadb.service mysql.service
# Restart for as long as it takes the servers to come back.
StartLimitIntervalSec=0

[Service]
Type=exec
ExecStart={exec_start}
EnvironmentFile={env_file}
{account}
# A crash or a lost server restarts it; a stop (SIGTERM) lets it finish its batch.
Restart=on-failure
RestartSec=2s
KillSignal=SIGTERM
KillMode=mixed
TimeoutStopSec=30s
{HARDENING}

[Install]
WantedBy=multi-user.target
"""


def render_gearmand(buckets: int = HASHTABLE_BUCKETS) -> str:
    return f"""\
# gearmand for gman-udf: rendered by `gman-udf systemd --gearmand`. Install as
#   /etc/systemd/system/gearman-job-server.service.d/gman-udf.conf
# then `systemctl daemon-reload && systemctl restart gearman-job-server`. Keep --hashtable-buckets
# out of PARAMS in /etc/default/gearman-job-server (gearmand refuses an option given twice).
[Service]
ExecStart=
ExecStart={GEARMAND} --pid-file={GEARMAND_PIDFILE} $PARAMS --hashtable-buckets={buckets}
# One connection per mysqld connection that fires a trigger, and per worker process.
LimitNOFILE=65536
Restart=on-failure
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--gearmand", action="store_true",
                      help="print a drop-in for Debian's gearman-job-server.service")
    what.add_argument("--worker", nargs=argparse.REMAINDER, metavar="WORKER_OPTION",
                      help="print a unit for `gman-udf worker WORKER_OPTION...` (the rest of the line; "
                           f"--mysql and --redis go in the environment file as {worker_cli.MYSQL_ENV} and "
                           f"{worker_cli.REDIS_ENV})")
    p.add_argument("--env-file", default=ENV_FILE, help="the worker's environment file (default %(default)s)")
    p.add_argument("--user", help="run the worker as this existing user (default: DynamicUser=yes)")
    p.add_argument("--exec", dest="exec_path", metavar="PATH",
                   help="the gman-udf executable (default: the one on PATH, absolute)")
    p.add_argument("--hashtable-buckets", type=int, default=HASHTABLE_BUCKETS, metavar="N",
                   help="gearmand's job hash table size (default %(default)s)")


def run(args) -> int:
    if args.gearmand:
        if args.hashtable_buckets < 1:
            raise ValueError("--hashtable-buckets must be positive")
        sys.stdout.write(render_gearmand(args.hashtable_buckets))
        return 0
    command = [os.path.abspath(args.exec_path)] if args.exec_path else default_command()
    sys.stdout.write(render_worker(args.worker, command=command, env_file=args.env_file, user=args.user))
    return 0
