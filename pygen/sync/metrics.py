"""The worker's metrics: one slot of doubles per process in a shared array (one writer per
slot), summed into Prometheus text (served over HTTP with --metrics-port) and a periodic log
line (--stats-interval). totals() and prometheus_text() are pure; pygen/sync/worker.py and
pygen/sync/committed_loop.py count.

A slot holds FIELDS, then the commit -> Redis lag histogram: one count per bucket of
LAG_BUCKETS (not cumulative: a job is counted in the first bucket whose bound it does not
exceed), one count past the last bound, and the sum of the lags in seconds.
"""
from __future__ import annotations

import bisect
import logging
import threading
import time
from typing import Dict, List

log = logging.getLogger("gman-udf.worker")  # the worker's log: the stats line is part of it

FIELDS = ("jobs", "writes", "stale", "errors", "refused", "retries", "waits", "parked", "waiting", "lag_us")
COUNTERS = FIELDS[:7]
GAUGES = ("parked", "waiting")  # lag_us (the last batch's largest lag, max over processes) is for the log line
# seconds: 0.5 ms (a payload-mode round trip) .. 60 s (a long transaction, an outage)
LAG_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_LAG = len(FIELDS)  # offset of the histogram in a slot
_LAG_SUM = _LAG + len(LAG_BUCKETS) + 1
SLOT = _LAG_SUM + 1  # doubles per process

HELP = {
    "jobs": "jobs taken from gearmand",
    "writes": "Redis writes acknowledged",
    "stale": "writes skipped: Redis held a newer version",
    "errors": "failed Redis or MySQL round trips (retried)",
    "refused": "jobs failed (WORK_FAIL, never retried): not a payload, a table or version this worker "
               "does not take, or (committed mode) not verifiable or forged",
    "retries": "committed mode: re-reads of a row not committed as sent (polling)",
    "waits": "committed mode: locking reads run to wait for the transaction holding a row's lock",
    "parked": "committed mode: jobs waiting for their commit",
    "waiting": "committed mode: jobs whose transaction a locking read is waiting for",
    "lag": "commit -> Redis lag of each job with a version: the time Redis acknowledged its write minus its "
           "v, the gman_stamp() its trigger took (at or before COMMIT); a v ahead of the worker's clock counts as 0",
}


def totals(array, slots: int) -> Dict[str, object]:
    """The processes' slots summed: each of FIELDS (lag_us: the largest), lag_buckets (the
    per-bucket counts, the last past the last bound), lag_count and lag_sum."""
    out: Dict[str, object] = {name: sum(array[s * SLOT + i] for s in range(slots)) for i, name in enumerate(FIELDS)}
    out["lag_us"] = max((array[s * SLOT + FIELDS.index("lag_us")] for s in range(slots)), default=0.0)
    buckets = [sum(array[s * SLOT + _LAG + i] for s in range(slots)) for i in range(len(LAG_BUCKETS) + 1)]
    out["lag_buckets"] = buckets
    out["lag_count"] = sum(buckets)
    out["lag_sum"] = sum(array[s * SLOT + _LAG_SUM] for s in range(slots))
    return out


def prometheus_text(t: Dict[str, object], mode: str) -> str:
    """Prometheus text (format 0.0.4) of totals(); every series has the label mode="payload"
    or mode="committed" (the worker's --consistency)."""
    label = f'mode="{mode}"'
    lines: List[str] = []

    def family(name, typ, help_):
        lines.extend([f"# HELP gman_worker_{name} {help_}", f"# TYPE gman_worker_{name} {typ}"])

    for name in COUNTERS:
        family(f"{name}_total", "counter", HELP[name])
        lines.append(f"gman_worker_{name}_total{{{label}}} {int(t[name])}")
    for name in GAUGES:
        family(name, "gauge", HELP[name])
        lines.append(f"gman_worker_{name}{{{label}}} {int(t[name])}")
    family("lag_seconds", "histogram", HELP["lag"])
    below = 0
    for bound, n in zip(LAG_BUCKETS + (float("inf"),), t["lag_buckets"]):
        below += n
        le = "+Inf" if bound == float("inf") else repr(bound)
        lines.append(f'gman_worker_lag_seconds_bucket{{{label},le="{le}"}} {int(below)}')
    lines.append(f"gman_worker_lag_seconds_sum{{{label}}} {t['lag_sum']:.6f}")
    lines.append(f"gman_worker_lag_seconds_count{{{label}}} {int(below)}")  # == the +Inf bucket, by construction
    return "\n".join(lines) + "\n"


class Stats:
    """One process's counters in a slot of a shared array of doubles (one writer per slot)."""

    def __init__(self, array=None, slot: int = 0):
        self.array = array if array is not None else [0.0] * SLOT
        self.base = slot * SLOT
        self.index = {name: self.base + i for i, name in enumerate(FIELDS)}

    def add(self, name: str, n: float = 1) -> None:
        self.array[self.index[name]] += n

    def set(self, name: str, value: float) -> None:
        self.array[self.index[name]] = value

    def observe_lags(self, seconds) -> None:
        """A batch's commit -> Redis lags into the histogram (negative, a clock ahead: 0);
        counted locally first: an element of a shared array costs more than a dict's."""
        counts: Dict[int, int] = {}
        total = 0.0
        for s in seconds:
            s = max(s, 0.0)
            i = bisect.bisect_left(LAG_BUCKETS, s)
            counts[i] = counts.get(i, 0) + 1
            total += s
        for i, n in counts.items():
            self.array[self.base + _LAG + i] += n
        self.array[self.base + _LAG_SUM] += total


def add_service_arguments(p, timeout: float, peers: str) -> None:
    """The options every long-running command has: its network timeout, metrics and log level."""
    p.add_argument("--timeout", type=float, default=timeout, metavar="SECONDS",
                   help=f"network timeout for {peers} (default %(default)s)")
    p.add_argument("--metrics-port", type=int, metavar="PORT", help="serve Prometheus text on http://HOST:PORT/metrics")
    p.add_argument("--metrics-host", default="127.0.0.1", help="(default %(default)s)")
    p.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))


def serve_metrics(host: str, port: int, render):
    """Serve render()'s Prometheus text on http://host:port/metrics."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = render().encode()
            self.send_response(200 if self.path in ("/", "/metrics") else 404)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server


def log_stats(array, slots: int, interval: float, stop: threading.Event) -> None:
    before, then = totals(array, slots), time.monotonic()
    while not stop.wait(interval):
        now_t, now = totals(array, slots), time.monotonic()
        dt = max(now - then, 1e-9)
        log.info("%.0f jobs/s, %.0f writes/s, %d stale, %d errors, %d refused, %d parked (%d waited on), lag %.1f ms",
                 (now_t["jobs"] - before["jobs"]) / dt, (now_t["writes"] - before["writes"]) / dt,
                 now_t["stale"] - before["stale"], now_t["errors"] - before["errors"],
                 now_t["refused"] - before["refused"], now_t["parked"], now_t["waiting"], now_t["lag_us"] / 1000)
        before, then = now_t, now
