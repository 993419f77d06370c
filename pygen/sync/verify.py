"""`gman-udf verify` and `gman-udf load`: compare a table with Redis, repair it, or load it.

verify streams every row (a server-side cursor: the table never sits in memory), works out
what the worker would have written for it (pygen/sync/plan.py: the key from the key template,
the value in json or hash mode, from the row rendered by the server with the triggers'
own expressions) and compares that with Redis in pipelined batches. It reports:
- missing: a row whose key is not in Redis;
- stale: a key whose value differs from the row (or has the wrong type, or is not JSON);
- extra: a key matching the template's pattern for this table (SCAN MATCH, never KEYS)
  with no row. Finding extras keeps the set of the table's keys in memory (not its rows);
  the worker's version keys ("{k}#v") are not data and never count.

--repair fixes what it found, batch by batch. The differing rows are read again with a
locking read (LOCK IN SHARE MODE: it waits for an uncommitted change of the row) and
gman_stamp() taken after it, so on a live table the repair carries each row's latest
committed image with a version newer than any change already made, and older than any
change to come. Then, either
- directly: the worker's own version-guarded write (pygen/sync/redis_scripts.py APPLY), so a
  newer image a worker wrote meanwhile is kept; or
- --via-gearman: upsert jobs queued by `SELECT gman_bulk_background(fn, <payload>) FROM T
  WHERE <key> IN (...) LOCK IN SHARE MODE`, written by the worker like any trigger's job.
Extras are deleted directly, guarded by a stamp taken before the scan: a row inserted
during the scan (a newer version in Redis) is left alone.

`gman-udf load` is the initial load: every row, through Gearman in one statement
(--via-gearman), or straight into Redis with the guarded writes above.

A version key above gman_stamp() can only come from a forged job (a trigger's version is
a stamp this server already gave): it freezes its key, since every later write of the row is
older. verify reads each row's version key too and reports such keys ("frozen") even when
their value is right; --repair deletes those version keys (only if they still hold that
version) and then writes the row with a fresh stamp, or queues its job.

Exit code: 0 when Redis matches the table (or every difference was repaired), 1 when
differences remain (a key left alone because Redis holds a newer version counts), 2 on a
usage or connection error.

This module is the two commands; the engine is pygen/sync/compare.py (comparison) and
pygen/sync/repair.py (repairs, loads).
"""
import contextlib
import sys
import time

from pygen import mysql
from pygen.sync import plan as plan_mod
from pygen.sync import schema, triggers
from pygen.sync.compare import DEFAULT_TEMPLATE, compare, estimate_rows, expected_write, format_report
from pygen.sync.repair import Repairer, load_into_redis, load_via_gearman


class Progress:
    """A one-line progress bar on stderr, drawn only on a terminal, at most 10 times a second."""

    def __init__(self, label: str, total: int, stream=None):
        self.stream = stream or sys.stderr
        self.on = self.stream.isatty()
        self.label, self.total, self.done, self.last = label, max(total, 0), 0, 0.0

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.on and now - self.last >= 0.1:
            self.last = now
            self.draw()

    def draw(self) -> None:
        if self.total and self.done <= self.total:
            width = 30
            fill = int(width * self.done / self.total)
            bar = f"[{'#' * fill}{'.' * (width - fill)}] {self.done}/{self.total} rows"
        else:  # the estimate (TABLE_ROWS) was low, or unknown
            bar = f"{self.done} rows"
        self.stream.write(f"\r{self.label} {bar}\x1b[K")
        self.stream.flush()

    def close(self) -> None:
        if self.on:
            self.draw()
            self.stream.write("\n")
            self.stream.flush()


# ---- the commands ----------------------------------------------------------------------------

def redis_client(url: str):
    """redis_writer.redis_client with verify's timeouts (a long scan reply: 30 s)."""
    from pygen.sync.redis_writer import redis_client as client
    return client(url, timeout=30, connect_timeout=10)


def _options(args) -> plan_mod.Options:
    return plan_mod.Options(mode=args.mode, key_template=args.key_template)


def _add_redis_arguments(ap, required: bool) -> None:
    if required:
        ap.add_argument("--redis", required=True, metavar="URL", help="e.g. redis://127.0.0.1:6379/0")
    ap.add_argument("--key-template", default=DEFAULT_TEMPLATE, metavar="T",
                    help="the worker's key template (default: %(default)s; placeholders: {table}, {key}, "
                         "and each key column by name)")
    ap.add_argument("--mode", choices=["json", "hash"], default="json",
                    help="how the worker stores a row (default: %(default)s)")


def add_arguments(ap) -> None:
    schema.add_table_arguments(ap)
    _add_redis_arguments(ap, required=True)
    ap.add_argument("--repair", action="store_true", help="fix what differs")
    ap.add_argument("--via-gearman", action="store_true",
                    help="repair by queueing jobs for the worker (gman_bulk_background) instead of writing Redis")
    ap.add_argument("--function", default=triggers.DEFAULT_FUNCTION,
                    help="the Gearman function for --via-gearman (default: %(default)s)")
    ap.add_argument("--wait", type=float, default=0.0, metavar="S",
                    help="with --via-gearman: compare again until the worker has applied the jobs, at most S "
                         "seconds (exit 1 if differences remain); default: exit 0 once they are queued")
    ap.add_argument("--show", type=int, default=10, metavar="N", help="example keys shown per kind (default: 10)")
    mysql.add_arguments(ap)


def _check_template(t: schema.TableSchema, options: plan_mod.Options) -> None:
    try:  # a template naming no key column fails now, not at the first row
        expected_write(t, {c.name: 0 for c in t.key}, {}, options)
    except plan_mod.PlanError as e:
        raise schema.SchemaError(str(e)) from None


def _with_mysql(command: str, args, body) -> int:
    """body(conn, spare) with the command's MySQL connections (spare() opens a second one, for
    the writes while conn streams rows), all closed after; errors end the command with code 2."""
    import MySQLdb
    import redis as redislib
    try:
        opts = mysql.ConnOptions.from_args(args)
        with contextlib.ExitStack() as stack:
            conn = stack.enter_context(contextlib.closing(opts.connect()))
            return body(conn, lambda: stack.enter_context(contextlib.closing(opts.connect())))
    except (schema.SchemaError, ValueError, RuntimeError, MySQLdb.MySQLError, redislib.RedisError,
            redislib.exceptions.RedisClusterException) as e:  # the latter: no cluster node reachable
        return triggers.fail(command, e)


def run(args) -> int:
    options = _options(args)

    def body(conn, spare):
        redis = redis_client(args.redis)
        t = schema.schema_from_args(conn, args)
        _check_template(t, options)
        spare = spare()  # the stream holds the first
        repairer = Repairer(t, redis, spare, options, args.function if args.via_gearman else None)
        progress = Progress(f"verify {t.qualified}", estimate_rows(conn, t))
        try:
            report = compare(conn, t, redis, options, repairer if args.repair else None, progress, args.show,
                             stamp=repairer.stamp)
        finally:
            progress.close()
        sys.stdout.write(format_report(t, report, args.repair))
        if not report.differences:
            return 0
        if not args.repair:
            return 1
        if report.repaired["newer"]:
            print(f"{report.repaired['newer']} keys not repaired: Redis holds a newer version (a change made "
                  "meanwhile?); run verify again")
            return 1
        if not (args.via_gearman and args.wait > 0):
            return 0  # written, or every job queued
        # the worker applies the jobs: compare again until it has, or the wait is over
        deadline = time.monotonic() + args.wait
        while True:
            time.sleep(0.2)
            again = compare(conn, t, redis, options, keep=args.show, stamp=repairer.stamp)
            if not again.differences or time.monotonic() > deadline:
                break
        sys.stdout.write("after the worker: " + format_report(t, again, False))
        return 0 if not again.differences else 1

    return _with_mysql("verify", args, body)


def add_load_arguments(ap) -> None:
    schema.add_table_arguments(ap)
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--via-gearman", action="store_true",
                       help="queue an upsert job per row for the worker, in one statement (gman_bulk_background)")
    where.add_argument("--redis", metavar="URL", help="write the rows straight into Redis instead")
    _add_redis_arguments(ap, required=False)
    ap.add_argument("--function", default=triggers.DEFAULT_FUNCTION,
                    help="with --via-gearman: the Gearman function (default: %(default)s)")
    mysql.add_arguments(ap)


def run_load(args) -> int:
    def body(conn, spare):
        t = schema.schema_from_args(conn, args)
        if args.via_gearman:
            n = load_via_gearman(conn, t, args.function)
            print(f"{t.qualified}: {n} rows queued as {args.function} jobs")
            return 0
        options = _options(args)
        _check_template(t, options)
        redis = redis_client(args.redis)
        progress = Progress(f"load {t.qualified}", estimate_rows(conn, t))
        try:
            report = load_into_redis(conn, spare(), t, redis, options, progress)
        finally:
            progress.close()
        r = report.repaired
        print(f"{t.qualified}: {r['written']} rows written to Redis"
              + (f", {r['newer']} left alone (Redis holds a newer version)" if r["newer"] else ""))
        return 0

    return _with_mysql("load", args, body)
