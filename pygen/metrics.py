"""The worker's counters: one slot of doubles per process in a shared array, summed into
Prometheus text (served over HTTP with --metrics-port) and a periodic log line
(--stats-interval). totals() and prometheus_text() are pure; pygen/worker.py counts.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Dict

log = logging.getLogger("gman-udf.worker")  # the worker's log: the stats line is part of it

FIELDS = ("jobs", "writes", "stale", "errors", "refused", "retries", "waits", "parked", "waiting", "lag_us")
_SUMMED = FIELDS[:7]


def totals(array, slots: int) -> Dict[str, float]:
    n = len(FIELDS)
    out = {name: sum(array[s * n + i] for s in range(slots)) for i, name in enumerate(FIELDS)}
    out["lag_us"] = max((array[s * n + FIELDS.index("lag_us")] for s in range(slots)), default=0.0)
    return out


def prometheus_text(t: Dict[str, float]) -> str:
    lines = []
    help_ = {"jobs": "jobs taken", "writes": "Redis writes acknowledged",
             "stale": "writes skipped: Redis held a newer version",
             "errors": "failed Redis or MySQL round trips (retried)",
             "refused": "jobs failed (WORK_FAIL, never retried): not a payload, a table or version this worker "
                        "does not take, or (committed mode) not verifiable or forged",
             "retries": "committed mode: re-reads of a row not committed as sent (polling)",
             "waits": "committed mode: locking reads run to wait for the transaction holding a row's lock"}
    for name in _SUMMED:
        lines += [f"# HELP gman_worker_{name}_total {help_[name]}", f"# TYPE gman_worker_{name}_total counter",
                  f"gman_worker_{name}_total {int(t[name])}"]
    lines += ["# HELP gman_worker_parked jobs waiting for their commit", "# TYPE gman_worker_parked gauge",
              f"gman_worker_parked {int(t['parked'])}",
              "# HELP gman_worker_waiting committed mode: jobs whose transaction a locking read is waiting for",
              "# TYPE gman_worker_waiting gauge", f"gman_worker_waiting {int(t['waiting'])}",
              "# HELP gman_worker_lag_seconds now - v of the last batch's oldest job", "# TYPE gman_worker_lag_seconds gauge",
              f"gman_worker_lag_seconds {t['lag_us'] / 1e6:.6f}"]
    return "\n".join(lines) + "\n"


class Stats:
    """One process's counters in a slot of a shared array of doubles (one writer per slot)."""

    def __init__(self, array=None, slot: int = 0):
        self.array = array if array is not None else [0.0] * len(FIELDS)
        self.base = slot * len(FIELDS)
        self.index = {name: self.base + i for i, name in enumerate(FIELDS)}

    def add(self, name: str, n: float = 1) -> None:
        self.array[self.index[name]] += n

    def set(self, name: str, value: float) -> None:
        self.array[self.index[name]] = value


def serve_metrics(host: str, port: int, array=None, slots: int = 1, render=None):
    """Serve Prometheus text: the worker's counters (array, slots), or render()'s text."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    if render is None:
        def render():
            return prometheus_text(totals(array, slots))

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
