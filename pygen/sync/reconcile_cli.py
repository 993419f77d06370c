"""The command line of pygen/sync/reconcile.py: `gman-udf reconcile` and `gman-udf worker --reconcile`."""
from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import sys
import threading
from typing import Optional

from pygen import mysql
from pygen.sync.metrics import add_service_arguments
from pygen.sync import plan as plan_mod
from pygen.sync import triggers
from pygen.sync.redis_writer import redis_client, redis_target
from pygen.sync.reconcile import DEFAULT_INTERVAL, DEFAULT_RATE, LOCK_WAIT, Metrics, Reconciler, log

def mysql_connector(dsn: str, timeout: float):
    return mysql.ConnOptions.from_dsn(dsn).defaults(connect_timeout=max(1, round(timeout)),
                                                    read_timeout=max(round(timeout), LOCK_WAIT + 5)).connect


def add_worker_arguments(p: argparse.ArgumentParser) -> None:
    """`gman-udf worker --reconcile DB.T,...`: a reconciler thread in the worker (its --mysql,
    --redis, layout options and metrics)."""
    p.add_argument("--reconcile", metavar="DB.T[,DB.T...]",
                   help="also reconcile these tables with MySQL (needs --mysql; see gman-udf reconcile)")
    p.add_argument("--reconcile-rate", type=_rate, default=DEFAULT_RATE, metavar="ROWS_PER_S",
                   help="with --reconcile: rows read from MySQL per second ('max': no limit; default %(default).0f)")
    p.add_argument("--reconcile-interval", type=float, default=DEFAULT_INTERVAL, metavar="S",
                   help="with --reconcile: start a round of passes at most every S seconds (default %(default).0f)")


def start_in_worker(config, stop: threading.Event) -> Optional[Metrics]:
    """Start the reconciler thread of `worker --reconcile` (None without it), with the worker's
    configuration (pygen/sync/worker_cli.py's WorkerConfig); it ends when stop is set."""
    if not config.reconcile:
        return None
    tables = [n.strip() for n in config.reconcile.split(",") if n.strip()]
    if not config.mysql or not tables:
        raise ValueError("--reconcile needs --mysql DSN and table names")
    rec = Reconciler(tables, mysql_connector(config.mysql, config.timeout),
                     lambda: redis_client(config.redis, config.redis_cluster, config.timeout), config.options,
                     config.reconcile_rate, config.reconcile_interval, config.function, stop=stop)
    threading.Thread(target=rec.run, name="reconcile", daemon=True).start()
    return rec.metrics


def _rate(text: str) -> float:
    if text in ("max", "inf", "0"):
        return math.inf
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("--rate must be positive (or 'max')")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--table", action="append", required=True, metavar="DB.T",
                   help="a table to reconcile (repeat for more); its primary key orders the walk")
    # As the worker's: from the environment when not given (no passwords on a command line).
    redis_env, mysql_env = os.environ.get("GMAN_UDF_REDIS"), os.environ.get("GMAN_UDF_MYSQL")
    p.add_argument("--redis", required=not redis_env, default=redis_env, metavar="URL",
                   help="redis://host:port/db, rediss://, unix://, redis+cluster://host:port (default: $GMAN_UDF_REDIS)")
    p.add_argument("--mysql", required=not mysql_env, default=mysql_env, metavar="DSN",
                   help="mysql://user:pass@host:port/db or mysql://user@localhost/db?socket=PATH "
                        "(default: $GMAN_UDF_MYSQL)")
    p.add_argument("--rate", type=_rate, default=DEFAULT_RATE, metavar="ROWS_PER_S",
                   help="rows read from MySQL per second, at most, on average ('max': no limit; "
                        "default %(default).0f)")
    p.add_argument("--interval", type=float, default=DEFAULT_INTERVAL, metavar="S",
                   help="start a round of passes at most every S seconds (default %(default).0f)")
    p.add_argument("--once", action="store_true",
                   help="one pass over each table, then exit (0: in sync or repaired; 1: keys left alone)")
    p.add_argument("--function", default=triggers.DEFAULT_FUNCTION,
                   help="the triggers' Gearman function: their columns are the ones compared (default %(default)s)")
    p.add_argument("--mode", choices=("json", "hash"), default="json", help="as the worker's (default %(default)s)")
    p.add_argument("--key-template", metavar="T", help="as the worker's (default '{table}:{key}')")
    p.add_argument("--fields", metavar="A,B", help="as the worker's: only these row members are written")
    p.add_argument("--tombstone-ttl", type=float, default=86400.0, metavar="SECONDS",
                   help="as the worker's: the lifetime of an extra key's delete tombstone (default %(default)s)")
    add_service_arguments(p, 10.0, "MySQL and Redis")


def run(args) -> int:
    from redis.connection import parse_url
    from pygen.sync.metrics import serve_metrics
    if not logging.getLogger().handlers:
        logging.basicConfig(level=getattr(logging, args.log_level),
                            format="%(asctime)s %(name)s[%(process)d] %(levelname)s %(message)s")
    try:
        mysql.ConnOptions.from_dsn(args.mysql)
        fields = tuple(f.strip() for f in args.fields.split(",") if f.strip()) if args.fields else None
        options = plan_mod.Options(mode=args.mode, fields=fields, key_template=args.key_template,
                                   tombstone_ttl=args.tombstone_ttl)
        if args.interval < 0 or args.timeout <= 0:
            raise ValueError("--interval must be >= 0 and --timeout > 0")
        parse_url(redis_target(args.redis)[1])  # a bad URL now; the client is made at the first step
    except ValueError as e:
        print(f"gman-udf reconcile: {e}", file=sys.stderr)
        return 2
    metrics = Metrics()
    rec = Reconciler(args.table, mysql_connector(args.mysql, args.timeout),
                     lambda: redis_client(args.redis, False, args.timeout), options, args.rate,
                     args.interval, args.function, metrics)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: rec.stop.set())
    if args.metrics_port is not None:
        serve_metrics(args.metrics_host, args.metrics_port, render=metrics.render)
    log.info("reconciling %s at %s rows/s, a round at most every %.0f s", ", ".join(args.table),
             "max" if math.isinf(args.rate) else f"{args.rate:.0f}", args.interval)
    left = rec.run(1 if args.once else None)
    if rec.redis is not None:
        rec.redis.close()
    return 1 if args.once and left else 0
