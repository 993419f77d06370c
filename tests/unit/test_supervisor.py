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
