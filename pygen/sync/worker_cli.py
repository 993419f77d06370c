"""The command line of pygen/sync/worker.py: `gman-udf worker`'s options, the WorkerConfig
built from them, the factory that builds a Runner with its collaborators, and run(args), which
hands both to pygen/sync/supervisor.py."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from pygen import mysql
from pygen.gearman.worker import Worker as GearmanWorker
from pygen.sync import plan, supervisor
from pygen.sync.committed import CommittedReader
from pygen.sync.metrics import Stats, add_service_arguments
from pygen.sync.reconcile_cli import add_worker_arguments
from pygen.sync.redis_writer import RedisWriter, redis_target
from pygen.sync.worker import Runner

MYSQL_ENV, REDIS_ENV = "GMAN_UDF_MYSQL", "GMAN_UDF_REDIS"


@dataclass(frozen=True)
class WorkerConfig:
    """What the worker runs with, checked (config_from_args); the options' meaning is in
    add_arguments' help and pygen/sync/worker.py's docstring."""
    gearman: Tuple[str, ...]
    function: str
    redis: str
    redis_cluster: bool
    options: plan.Options
    consistency: str
    mysql: Optional[str]
    # True without --tables: the tables with generated triggers, read through --mysql
    tables_from_triggers: bool
    tables: Optional[Dict[str, None]]  # --tables: None for '*' (every table)
    max_future_skew: float
    commit_window: float
    json_function: str
    max_wait: float
    waiters: int
    lock_wait: int
    max_parked: int
    batch: int
    processes: int
    timeout: float
    stats_interval: float
    metrics_port: Optional[int]
    metrics_host: str
    reconcile: Optional[str]
    reconcile_rate: float
    reconcile_interval: float

    @property
    def committed(self) -> bool:
        return self.consistency == "committed"


def tables_from_args(text: Optional[str]):
    """--tables: None for '*' (every table), else {schema.table: None} (any of its columns)."""
    if not text:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == ["*"]:
        return None
    if not names or "*" in names:
        raise ValueError(f"--tables {text!r}: schema.table names, comma-separated, or '*' alone")
    return dict.fromkeys(names)


def options_from_args(args) -> plan.Options:
    fields = tuple(f.strip() for f in args.fields.split(",") if f.strip()) if args.fields else None
    return plan.Options(mode=args.mode, fields=fields, key_template=args.key_template, ttl=args.ttl,
                         tombstone_ttl=args.tombstone_ttl)


def config_from_args(args: argparse.Namespace) -> WorkerConfig:
    """The worker's configuration from its parsed options; ValueError for a bad one."""
    if args.consistency == "committed" and not args.mysql:
        raise ValueError("--consistency committed needs --mysql DSN")
    if not args.tables and not args.mysql:
        raise ValueError("give --tables DB.T,... (or '*' for every table), or --mysql DSN to sync the tables "
                         "with generated triggers")
    tables = tables_from_args(args.tables)
    if not args.max_future_skew >= 0:
        raise ValueError("--max-future-skew must be >= 0")
    if args.mysql:
        mysql.ConnOptions.from_dsn(args.mysql)
    if args.reconcile and not args.mysql:
        raise ValueError("--reconcile needs --mysql DSN")
    redis_target(args.redis, args.redis_cluster)
    if args.batch < 1 or args.processes < 1:
        raise ValueError("--batch and --processes must be at least 1")
    if args.waiters < 0 or args.lock_wait < 1:
        raise ValueError("--waiters must be >= 0 and --lock-wait at least 1")
    return WorkerConfig(
        gearman=tuple(args.gearman.split(",")), function=args.function, redis=args.redis,
        redis_cluster=args.redis_cluster, options=options_from_args(args), consistency=args.consistency,
        mysql=args.mysql, tables_from_triggers=not args.tables, tables=tables,
        max_future_skew=args.max_future_skew, commit_window=args.commit_window, json_function=args.json_function,
        max_wait=args.max_wait, waiters=args.waiters, lock_wait=args.lock_wait, max_parked=args.max_parked,
        batch=args.batch, processes=args.processes, timeout=args.timeout, stats_interval=args.stats_interval,
        metrics_port=args.metrics_port, metrics_host=args.metrics_host, reconcile=args.reconcile,
        reconcile_rate=args.reconcile_rate, reconcile_interval=args.reconcile_interval)


def build_runner(config: WorkerConfig, stats: Stats) -> Runner:
    """A worker process's loop with the real gearmand, Redis and MySQL clients."""
    gearman = GearmanWorker(list(config.gearman), [config.function], connect_timeout=min(config.timeout, 2.0),
                            timeout=config.timeout)
    redis = RedisWriter(config.redis, config.redis_cluster, config.timeout)
    reader = CommittedReader(config.mysql, config.json_function, config.timeout) if config.mysql else None
    return Runner(config, gearman, redis, stats, reader)


def run(args: argparse.Namespace) -> int:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=getattr(logging, args.log_level),
                            format="%(asctime)s %(name)s[%(process)d] %(levelname)s %(message)s")
    try:
        config = config_from_args(args)
    except ValueError as e:
        print(f"gman-udf worker: {e}", file=sys.stderr)
        return 2
    return supervisor.run(config, build_runner)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gearman", required=True, metavar="HOST:PORT[,HOST:PORT...]",
                   help="job servers; jobs are taken from all of them")
    # The DSN and the Redis URL carry passwords: they may come from the environment (a systemd
    # EnvironmentFile, see pygen/ops/systemd.py) rather than a command line every user can read.
    p.add_argument("--redis", default=os.environ.get(REDIS_ENV) or "redis://127.0.0.1:6379/0", metavar="URL",
                   help="redis://[user:pass@]host:port/db, rediss:// (TLS), unix://; "
                        f"redis+cluster:// or rediss+cluster:// for Redis Cluster (default: ${REDIS_ENV}, "
                        "else redis://127.0.0.1:6379/0)")
    p.add_argument("--redis-cluster", action="store_true", help="the --redis URL is a cluster node")
    p.add_argument("--function", default="syncToRedis", help="Gearman function (default %(default)s)")
    p.add_argument("--mode", choices=("json", "hash"), default="json",
                   help="json: SET key <row JSON>; hash: HSET key column value... (NULL: no field)")
    p.add_argument("--fields", metavar="A,B", help="write only these row members")
    p.add_argument("--key-template", metavar="T",
                   help="Redis key: {table}, {key} (key values joined by ':') and key column names; "
                        "'{{'/'}}' are literal braces (default '{table}:{key}', '{id}' for bare rows)")
    p.add_argument("--ttl", type=float, metavar="SECONDS", help="keys expire after this")
    p.add_argument("--tombstone-ttl", type=float, default=86400.0, metavar="SECONDS",
                   help="how long a delete's version refuses older upserts (default %(default)s)")
    p.add_argument("--consistency", choices=("payload", "committed"), default="payload",
                   help="payload: write the job's row; committed: write only what MySQL has committed")
    p.add_argument("--mysql", metavar="DSN", default=os.environ.get(MYSQL_ENV) or None,
                   help="mysql://user:pass@host:port/db or mysql://user@localhost/db?socket=PATH: committed "
                        "mode reads rows there; both modes read which tables have generated triggers "
                        f"(default: ${MYSQL_ENV})")
    p.add_argument("--tables", metavar="DB.T[,DB.T...]",
                   help="write only these tables' jobs, any of their columns ('*': every table, and the seeds' "
                        "bare rows); default: the tables whose generated triggers (gman-udf trigger) send to "
                        "--function, only the columns they send, read from --mysql's information_schema")
    p.add_argument("--max-future-skew", type=float, default=300.0, metavar="SECONDS",
                   help="payload mode: refuse a job whose version (gman_stamp(), microseconds) is more than "
                        "this ahead of this machine's clock (default %(default)s; inf: never)")
    p.add_argument("--commit-window", type=float, default=10.0, metavar="SECONDS",
                   help="committed mode, servers without NOWAIT: how long a change not committed as sent "
                        "is waited for (default %(default)s)")
    p.add_argument("--json-function", default="udf_json_members",
                   help="committed mode: the name/value JSON UDF that renders rows as the trigger did "
                        "(udf_json_members or json_members; default %(default)s)")
    p.add_argument("--max-wait", type=float, default=3600.0, metavar="SECONDS",
                   help="committed mode: how long a change whose row an open transaction locks is "
                        "waited for (default %(default)s)")
    p.add_argument("--waiters", type=int, default=100, metavar="N",
                   help="committed mode: open transactions waited on at once, each by a locking read on its own "
                        "MySQL connection (opened when needed, closed after 10 minutes idle); beyond, the lock is polled "
                        "(0: always; default %(default)s)")
    p.add_argument("--lock-wait", type=int, default=30, metavar="SECONDS",
                   help="committed mode: how long one locking read waits (innodb_lock_wait_timeout) before the job "
                        "is read again (default %(default)s)")
    p.add_argument("--max-parked", type=int, default=100000, help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=500, metavar="N", help="jobs per Redis round trip (default %(default)s)")
    p.add_argument("--processes", type=int, default=1, metavar="N", help="worker processes (default %(default)s)")
    p.add_argument("--stats-interval", type=float, default=0.0, metavar="SECONDS",
                   help="log jobs/s, errors and lag this often (default: never)")
    add_service_arguments(p, 5.0, "gearmand, Redis and MySQL")
    add_worker_arguments(p)
