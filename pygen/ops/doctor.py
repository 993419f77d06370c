"""`gman-udf doctor`: check a live setup step by step, one line per check with what to do when
it fails (the checks: pygen/ops/doctor_checks.py).

In order: the library in plugin_dir is this package's build; every catalog function is
registered from it; the plugin's configuration (gman_udf.cnf next to the library, or mysqld's
GMAN_UDF_* environment) is found and locked; each gearmand answers, with its queue depth for
the sync function, a hash table large enough for that depth and workers registered; Redis
answers; the generated triggers of each --table exist and match the table's schema; and a
canary goes through the whole path.

The canary never touches user data: it upserts one row of its own table, gman_doctor.canary
(created with its generated triggers when missing; the doctor's MySQL user needs CREATE and
TRIGGER there), in one committed statement, and waits until the worker has written that row's
fresh token to Redis under gman_doctor.canary:<id> (the worker's default key template),
reporting the commit -> Redis latency. A worker that reads its table list from the triggers
(--mysql, no --tables) syncs that table by itself; one given --tables needs
gman_doctor.canary added. It is skipped when an earlier check already shows the path broken.

Exit status: 0 when no check fails (warnings allowed: an unlocked configuration or a remote
server whose files cannot be compared still carries changes), 1 when one fails, 2 when the
doctor itself cannot start (e.g. MySQL refuses the login). --json prints one JSON document.
"""
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import List

from pygen import mysql
from pygen.ops import doctor_checks as dc
from pygen.ops.doctor_checks import FAIL, OK, SKIP, WARN, Check
from pygen.sync import schema, triggers

CANARY_TABLE = "gman_doctor.canary"
CANARY_SQL = ("CREATE TABLE IF NOT EXISTS gman_doctor.canary (id VARCHAR(64) PRIMARY KEY, token CHAR(32) NOT NULL)"
              " COMMENT 'gman-udf doctor: one row per host, changed by each run; safe to drop'")


def add_arguments(ap) -> None:
    from pygen.sync.worker_cli import REDIS_ENV
    ap.add_argument("--gearman", metavar="HOST:PORT[,HOST:PORT...]",
                    help="the job servers (default: the servers of the plugin's gman_udf.cnf)")
    ap.add_argument("--redis", default=os.environ.get(REDIS_ENV) or "redis://127.0.0.1:6379/0", metavar="URL",
                    help=f"the worker's Redis (default: ${REDIS_ENV}, else %(default)s)")
    ap.add_argument("--function", default=triggers.DEFAULT_FUNCTION, help="the sync function (default: %(default)s)")
    ap.add_argument("--table", action="append", default=[], metavar="DB.T[:COL,COL]",
                    help="check this table's generated triggers (repeatable); :COL,COL when they were "
                         "generated with --columns")
    ap.add_argument("--library", help="the gman_udf.so to compare with (default: the one in this package)")
    ap.add_argument("--canary-id", default=None, metavar="ID",
                    help="the canary row's id (default: this host's name)")
    ap.add_argument("--canary-timeout", type=float, default=15.0, metavar="SECONDS",
                    help="how long to wait for the canary in Redis (default: %(default)s)")
    ap.add_argument("--no-canary", action="store_true", help="skip the canary (nothing is written)")
    ap.add_argument("--json", action="store_true", help="print the checks as one JSON document")
    mysql.add_arguments(ap)


def _redacted(url: str) -> str:
    """The URL without its password, for the report."""
    scheme, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    cred, at, host = rest.rpartition("@")
    user = cred.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}" if ":" in cred else url


def canary(conn, redis_client, function: str, canary_id: str, timeout: float) -> Check:
    """One committed upsert of the canary row, then wait for its token in Redis."""
    fix_worker = ("check the worker's log; a worker given --tables must list gman_doctor.canary; "
                  "`gman-udf verify --table gman_doctor.canary` shows what Redis holds")
    cur = conn.cursor()
    try:
        cur.execute("CREATE DATABASE IF NOT EXISTS gman_doctor")
        cur.execute(CANARY_SQL)
        found = dc.check_triggers(conn, CANARY_TABLE, function)
        if found.status != OK:
            triggers.apply(conn, schema.read_schema(conn, CANARY_TABLE), function)
    except Exception as e:  # MySQLdb errors: privileges
        return Check("canary", FAIL, f"cannot set up {CANARY_TABLE}: {e}",
                     "grant the doctor's user CREATE and TRIGGER on gman_doctor.*, or use --no-canary")
    key = f"{CANARY_TABLE}:{canary_id}"
    deadline = time.monotonic() + timeout
    sends = 0
    while time.monotonic() < deadline:
        # Sent again every few seconds: a worker that has not read the canary's triggers yet
        # refuses the first job, and reads them again when another arrives 10 s later.
        token = uuid.uuid4().hex
        try:
            cur.execute("INSERT INTO gman_doctor.canary (id, token) VALUES (%s, %s) "
                        "ON DUPLICATE KEY UPDATE token = VALUES(token)", (canary_id, token))
        except Exception as e:  # MySQLdb errors: a strict trigger that could not queue, privileges
            return Check("canary", FAIL, f"writing the canary row: {e}",
                         "grant INSERT, UPDATE on gman_doctor.canary; SELECT gman_last_error() after a failed send")
        committed = time.monotonic()
        sends += 1
        resend = min(deadline, committed + 5.5)
        while time.monotonic() < resend:
            try:
                kind = redis_client.type(key)
                kind = kind.decode() if isinstance(kind, bytes) else kind
                raw = (b" ".join(redis_client.hgetall(key).values()) if kind == "hash"
                       else redis_client.get(key) if kind == "string" else b"")
            except Exception as e:
                return Check("canary", FAIL, f"reading {key} from Redis: {e}", "check Redis")
            if raw and token.encode() in raw:
                ms = (time.monotonic() - committed) * 1000
                return Check("canary", OK, f"commit -> Redis in {ms:.1f} ms ({key}"
                                           + (f", after {sends} sends)" if sends > 1 else ")"))
            time.sleep(0.005)
    return Check("canary", FAIL, f"{key} did not get the canary's token within {timeout:g} s ({sends} sends)",
                 fix_worker)


def _gearmands(args, servers_from_config: List[str]) -> List[str]:
    if args.gearman:
        return [s.strip() for s in args.gearman.split(",") if s.strip()]
    return servers_from_config


def checks(conn, opts, args, rd):
    """The checks before the canary, in order, each yielded as soon as it is known."""
    from pygen.plugin import install
    from pygen.plugin.library import library_path

    cur = conn.cursor()
    _, version, plugin_dir = install.server_identity(cur)
    local = opts.is_local()
    try:
        shipped = Path(args.library) if args.library else library_path()
        if not shipped.is_file():
            raise FileNotFoundError(f"{shipped}: no such file")
    except FileNotFoundError as e:
        yield Check("library", FAIL, f"nothing to compare plugin_dir's library with: {e}",
                    "give --library PATH (the gman_udf.so of the wheel you installed)")
    else:
        yield dc.check_library(cur, plugin_dir, local, shipped)
    yield dc.check_functions(cur, version)
    environ = dc.process_environ(dc.server_pid(cur)) if local else None
    config, servers = dc.check_config(plugin_dir, local, environ, args.function)
    yield config
    addresses = _gearmands(args, servers)
    if not addresses:
        yield Check("gearmand", FAIL, "no job server: none in --gearman nor in the plugin's configuration",
                    "give --gearman HOST:PORT, or `servers = ...` in gman_udf.cnf")
    for address in addresses:
        yield from dc.check_gearmand(address, args.function)
    yield dc.check_redis(rd, _redacted(args.redis))
    for table in args.table:
        yield dc.check_triggers(conn, table, args.function)


def run(args) -> int:
    from pygen.sync.verify import redis_client

    results: List[Check] = []
    out = sys.stdout

    def report(c: Check) -> None:
        results.append(c)
        if not args.json:
            fix = f"  -> {c.fix}" if c.fix and c.status != OK else ""
            out.write(f"{c.status.upper():4}  {c.name}: {c.detail}{fix}\n")
            out.flush()

    import MySQLdb
    opts = mysql.ConnOptions.from_args(args)
    try:
        conn = opts.connect()  # a refused login is the caller's error (exit 2), not a check
    except MySQLdb.MySQLError as e:
        if not args.json:
            raise
        detail = e.args[1] if len(e.args) == 2 and isinstance(e.args[0], int) else str(e)
        json.dump({"ok": False, "error": f"mysql: {detail}", "checks": []}, out)
        out.write("\n")
        return 2
    rd = redis_client(args.redis)
    try:
        for c in checks(conn, opts, args, rd):
            report(c)
        # The canary needs the whole path: without it, it would only wait out its timeout.
        broken = [c.name for c in results if c.status == FAIL and not c.name.startswith(("library", "triggers"))]
        if args.no_canary:
            report(Check("canary", SKIP, "--no-canary"))
        elif broken:
            report(Check("canary", SKIP, f"the path is broken ({', '.join(broken)}): fix that first"))
        else:
            report(canary(conn, rd, args.function, args.canary_id or _hostname(), args.canary_timeout))
    finally:
        conn.close()
        rd.close()
    failed = [c for c in results if c.status == FAIL]
    warned = [c for c in results if c.status == WARN]
    if args.json:
        json.dump({"ok": not failed, "checks": [c.as_dict() for c in results]}, out, indent=1)
        out.write("\n")
    else:
        out.write(f"{'FAILED' if failed else 'ok'}: {len(results)} checks, {len(failed)} failed, "
                  f"{len(warned)} warnings\n")
    return 1 if failed else 0


def _hostname() -> str:
    import socket
    return socket.gethostname()[:64] or "doctor"
