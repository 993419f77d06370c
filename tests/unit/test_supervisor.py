"""pygen/sync/supervisor.py: one worker loop in this process, or N forked ones that are
restarted when they die and stopped together by SIGTERM; with fake loops (make_runner)."""
import os
import signal
import threading
import time

import pytest

from pygen.sync import supervisor
from pygen.sync.metrics import SLOT, Stats
from tests.support.worker_fakes import config_for


@pytest.fixture(autouse=True)
def keep_signal_handlers():
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


class FakeLoop:
    """Marks `dir/<slot>.<n>` as it starts; the first run of slot `dies` exits with 3;
    the others wait for stop() (the SIGTERM handler), which `terms` sends at once."""

    def __init__(self, stats, directory, dies=None, terms=False):
        self.stats, self.dir, self.dies, self.terms = stats, directory, dies, terms
        self.stopped = threading.Event()

    def stop(self, *_):
        self.stopped.set()

    def run(self):
        slot = self.stats.base // SLOT
        runs = len(list(self.dir.glob(f"{slot}.*")))
        (self.dir / f"{slot}.{runs}").touch()
        if slot == self.dies and runs == 0:
            return 3
        if self.terms:
            os.kill(os.getpid(), signal.SIGTERM)
        return 0 if self.stopped.wait(20) else 9


def test_one_process_runs_the_loop_here_with_signals_to_its_stop(tmp_path):
    made = []

    def make_runner(config, stats):
        made.append(FakeLoop(stats, tmp_path, terms=True))
        return made[-1]

    assert supervisor.run(config_for(), make_runner) == 0
    (loop,) = made
    assert isinstance(loop.stats, Stats) and loop.stats.base == 0 and loop.stopped.is_set()
    assert signal.getsignal(signal.SIGINT) == loop.stop


def wait_for(path, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"no {path.name}"
        time.sleep(0.01)


@pytest.mark.parametrize("dies", [None, 1])
def test_processes_are_forked_restarted_and_stopped_together(tmp_path, dies):
    def make_runner(config, stats):
        return FakeLoop(stats, tmp_path, dies)

    def stop_when_all_run():
        wait_for(tmp_path / "0.0")
        wait_for(tmp_path / ("1.1" if dies == 1 else "1.0"))  # slot 1 died once: restarted
        time.sleep(0.3)  # the supervisor has recorded the last child's pid
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=stop_when_all_run, daemon=True).start()
    assert supervisor.run(config_for("--processes", "2"), make_runner) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == (["0.0", "1.0", "1.1"] if dies == 1 else ["0.0", "1.0"])


def fork_hooked(monkeypatch, hook):
    """supervisor's os.fork, calling hook(n, pid) just after the n-th fork returns (in both processes)."""
    real, forks = os.fork, []

    def fork():
        forks.append(None)
        pid = real()
        hook(len(forks), pid)
        return pid

    monkeypatch.setattr(supervisor.os, "fork", fork)


def run_timed(tmp_path):
    started = time.monotonic()
    code = supervisor.run(config_for("--processes", "2"), lambda config, stats: FakeLoop(stats, tmp_path))
    return code, time.monotonic() - started  # a child never stopped: FakeLoop's 20 s, then 9


def test_a_sigterm_right_after_the_fork_reaches_the_new_child(tmp_path, monkeypatch):
    def hook(n, pid):
        if n == 2 and pid:  # here, before the supervisor has recorded the second child
            os.kill(os.getpid(), signal.SIGTERM)

    fork_hooked(monkeypatch, hook)
    code, seconds = run_timed(tmp_path)
    assert code == 0 and seconds < 10


def test_a_sigterm_another_thread_takes_right_after_the_fork_reaches_the_new_child(tmp_path, monkeypatch):
    idle = threading.Event()
    other = threading.Thread(target=idle.wait, daemon=True)  # started before: SIGTERM not blocked there
    other.start()

    def hook(n, pid):
        if n == 2 and pid:
            signal.pthread_kill(other.ident, signal.SIGTERM)
            time.sleep(0.3)  # its handler runs here, at the first bytecode after the sleep

    fork_hooked(monkeypatch, hook)
    code, seconds = run_timed(tmp_path)
    idle.set()
    assert code == 0 and seconds < 10


def test_a_sigterm_to_a_child_before_its_handlers_are_reset_ends_it(tmp_path, monkeypatch, caplog):
    def hook(n, pid):
        if n == 2 and not pid:  # in the second child, still with the supervisor's forward()
            os.kill(os.getpid(), signal.SIGTERM)

    def stop_when_all_run():
        wait_for(tmp_path / "0.0")
        wait_for(tmp_path / "1.0")
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGTERM)

    fork_hooked(monkeypatch, hook)
    threading.Thread(target=stop_when_all_run, daemon=True).start()
    code, seconds = run_timed(tmp_path)
    assert code == 0 and seconds < 10
    # it died of the signal and was restarted; its sibling was not stopped by it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0.0", "1.0"]
    assert "worker process 1 (pid" in caplog.text and f"exited with -{int(signal.SIGTERM)}; restarting" in caplog.text


def test_a_sigterm_another_thread_takes_while_the_supervisor_waits_stops_the_children(tmp_path):
    """The kernel gives a process-directed SIGTERM to any thread that does not block it (the
    metrics server's, say); Python runs the handler in the main thread when that next runs
    bytecode. The supervisor waited in os.wait(), so the children were stopped only once one of
    them ended by itself (here after FakeLoop's 20 s; under systemd, at its SIGKILL)."""
    idle = threading.Event()
    other = threading.Thread(target=idle.wait, daemon=True)  # started before: SIGTERM not blocked there
    other.start()

    def stop_when_all_run():
        wait_for(tmp_path / "0.0")
        wait_for(tmp_path / "1.0")
        time.sleep(0.3)  # the supervisor waits for its children now
        signal.pthread_kill(other.ident, signal.SIGTERM)

    threading.Thread(target=stop_when_all_run, daemon=True).start()
    code, seconds = run_timed(tmp_path)
    idle.set()
    assert code == 0 and seconds < 10
