"""`gman-udf worker --processes N`: runs the worker loop (pygen/sync/worker.py's Runner) in this
process or in N forked ones, restarts a process that dies, forwards SIGTERM/SIGINT, and runs
what reports on all of them (the Prometheus endpoint, the stats log line, `--reconcile`'s thread)
over their shared counters (pygen/sync/metrics.py)."""
from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Callable, Dict

from pygen.sync.metrics import SLOT, Stats, log_stats, prometheus_text, serve_metrics, totals
from pygen.sync.reconcile_cli import start_in_worker

log = logging.getLogger("gman-udf.worker")


def run(config, make_runner: Callable) -> int:
    """Run make_runner(config, stats).run() in config.processes processes; the exit code."""
    if config.processes == 1:
        array, slots = [0.0] * SLOT, 1
    else:
        from multiprocessing.sharedctypes import RawArray
        array, slots = RawArray("d", config.processes * SLOT), config.processes
    stop = threading.Event()
    if config.processes == 1:
        runner = make_runner(config, Stats(array))
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, runner.stop)
        _start_reporting(config, array, slots, stop)
        try:
            return runner.run()
        finally:
            stop.set()
    return _supervise(config, make_runner, array, slots, stop)


def _start_reporting(config, array, slots, stop) -> None:
    reconciling = start_in_worker(config, stop)  # --reconcile: a thread, ends with stop
    if config.metrics_port is not None:
        def render():
            text = prometheus_text(totals(array, slots), config.consistency)
            return text if reconciling is None else text + reconciling.render()
        serve_metrics(config.metrics_host, config.metrics_port, render)
    if config.stats_interval > 0:
        threading.Thread(target=log_stats, args=(array, slots, config.stats_interval, stop),
                         name="stats", daemon=True).start()


STOPS = {signal.SIGTERM, signal.SIGINT}
# Python runs a handler in the main thread when it next runs bytecode: a SIGTERM the kernel gave
# another thread (the metrics server's, say) waits until then, so the main thread never blocks
# in os.wait() but looks every REAP_POLL seconds.
REAP_POLL = 0.05


def _reap(timeout: float):
    """(pid, status) of a child that has ended, or None after `timeout` seconds."""
    pid, status = os.waitpid(-1, os.WNOHANG)
    if pid:
        return pid, status
    time.sleep(timeout)
    return None


def _child(config, make_runner, array, slot, mask) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # one that came since the fork ends us now
    code = 1
    try:
        runner = make_runner(config, Stats(array, slot))
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, runner.stop)
        code = runner.run()
    except BaseException:
        log.exception("worker process %d failed", slot)
    finally:
        logging.shutdown()
        os._exit(code)


def _supervise(config, make_runner, array, slots, stop) -> int:
    """Run `slots` worker processes; restart one that dies; SIGTERM/SIGINT stop them all."""
    children: Dict[int, int] = {}  # pid -> slot

    def spawn(slot):
        # Blocked over the fork: the child would run the inherited forward() (and not stop),
        # and here the new pid would be missed by a forward() before it is recorded.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOPS)
        try:
            pid = os.fork()
            if pid == 0:
                _child(config, make_runner, array, slot, mask)
            children[pid] = slot
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        if stop.is_set():  # a signal taken by another thread (unblocked there) ran forward() meanwhile
            os.kill(pid, signal.SIGTERM)

    def forward(*_):
        stop.set()
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    for sig in STOPS:
        signal.signal(sig, forward)
    for slot in range(slots):
        spawn(slot)
    _start_reporting(config, array, slots, stop)
    code = 0
    while children:
        ended = _reap(REAP_POLL)
        if ended is None:
            continue
        pid, status = ended
        slot = children.pop(pid, None)
        if slot is None:
            continue
        rc = os.waitstatus_to_exitcode(status)
        if stop.is_set():
            code = code or (rc if rc > 0 else 0)
        else:
            log.warning("worker process %d (pid %d) exited with %d; restarting", slot, pid, rc)
            time.sleep(1.0)
            if not stop.is_set():
                spawn(slot)
    return code
