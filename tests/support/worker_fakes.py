"""Fakes of the worker loop's collaborators (pygen/sync/worker.py Runner): gearmand's worker
API, the Redis writer and the MySQL reader, with one event log, so that a test sees in which
order jobs were written and answered. The fake Redis takes its writes through
plan.script_args, as the real writer does, so a write the real one would choke on fails here too."""
import argparse
import time

from pygen.sync import plan, worker_cli
from pygen.sync.metrics import Stats
from pygen.sync.worker import Runner

TABLE = "shop.data"


def config_for(*argv, tables=TABLE):
    """A WorkerConfig from worker options, as `gman-udf worker` builds it."""
    p = argparse.ArgumentParser()
    worker_cli.add_arguments(p)
    given = ["--tables", tables] if tables else []
    return worker_cli.config_from_args(p.parse_args(["--gearman", "127.0.0.1:1", *given, *argv]))


class FakeJob:
    _n = 0

    def __init__(self, workload, events=None):
        FakeJob._n += 1
        self.handle, self.workload, self.outcome = f"H:test:{FakeJob._n}", workload, None
        self.alive, self.events = True, events if events is not None else []

    def fail(self):
        assert self.outcome is None, "answered twice"
        self.outcome = "fail"
        self.events.append(("fail", self.handle))
        return True


class FakeGearman:
    """Hands out `jobs` (at most n per grab); stops the runner once every job handed out is
    answered or dropped, or after `patience` empty grabs (each waits up to 10 ms meanwhile)."""

    def __init__(self, jobs, events, patience=500):
        self.jobs, self.events, self.patience = list(jobs), events, patience
        self.runner, self.handed, self.grabs, self.empty, self.closed = None, [], [], 0, False

    def grab(self, n, timeout):
        out, self.jobs = self.jobs[:n], self.jobs[n:]
        self.grabs.append(len(out))
        self.handed += out
        if out:
            self.events.append(("grab", [j.handle for j in out]))
            return out
        self.empty += 1
        if self.empty >= self.patience or (not self.jobs and all(j.outcome or not j.alive for j in self.handed)):
            self.runner.stop()
        else:
            time.sleep(min(timeout, 0.01))
        return out

    def complete_many(self, jobs):
        for job in jobs:
            assert job.outcome is None, "answered twice"
            assert job.alive, "answered on a dropped connection"
            job.outcome = "complete"
        self.events.append(("complete", [j.handle for j in jobs]))

    def stop(self):
        pass

    def wake(self):
        pass

    def close(self):
        self.closed = True


class FakeRedis:
    """Records each acknowledged write. `away`: that many calls fail first (an outage, as a
    redis.ConnectionError would), and after `stop_after` of them the runner is stopped; `skip`:
    writes reported skipped as stale per call. A write plan.script_args refuses is counted in
    `failures`; after 3 the runner is stopped, so a job that wedges it shows up."""

    def __init__(self, events=None, away=0, stop_after=None, skip=0):
        self.events, self.away, self.stop_after, self.skip = events, away, stop_after, skip
        self.runner, self.failures, self.outages, self.written, self.closed = None, 0, 0, [], False

    def begin(self, writes):
        return list(writes)

    def finish(self, token):
        return self.write(token)

    def write(self, writes):
        if self.away:
            self.away -= 1
            self.outages += 1
            if self.outages == self.stop_after:
                self.runner.stop()
            raise ConnectionError("redis away")
        try:
            keys, args = plan.script_args(writes)
            for k in keys:
                k.encode("utf-8")
        except Exception:
            self.failures += 1
            if self.failures >= 3:
                self.runner.stop()
            raise
        self.written += writes
        self.events.append(("write", [w.key for w in writes]))
        return self.skip

    def held(self, writes):
        return [(None, None) for _ in writes]

    def close(self):
        self.closed = True


class FakeReader:
    """MySQL: rows {(table, id): row dict, or a committed.Gone} as committed (a key {"id": id});
    `away`: that many reads fail first; `hook(changes)` runs at each read; tables: what
    synced() finds (None: MySQL away)."""

    def __init__(self, rows=None, stamp=None, away=0, tables=None, hook=None):
        self.rows, self.away, self.tables, self.hook = dict(rows or {}), away, tables, hook
        self.now = time.time_ns() // 1000 + 10**9 if stamp is None else stamp
        self.reads, self.synced_reads, self.closed = [], 0, False

    def synced(self, function):
        self.synced_reads += 1
        if self.tables is None:
            raise OSError("mysql away")
        return dict(self.tables)

    def stamp(self):
        return self.now

    def read(self, changes):
        self.reads.append([c.key["id"] for c in changes])
        if self.hook:
            self.hook(changes)
        if self.away:
            self.away -= 1
            raise OSError("mysql away")
        return [self.rows.get((c.table, c.key["id"])) for c in changes]

    def send(self, changes):  # CommittedReader.send/receive: read() begun, then finished
        return list(changes)

    def receive(self, reading, expect=None):
        return self.read(reading)

    def close(self):
        self.closed = True


def make_runner(workloads, *argv, redis=None, reader=None, tables=TABLE):
    """A Runner over fakes: (runner, jobs); runner.gearman / runner.redis are the fakes."""
    events = []
    jobs = [FakeJob(w, events) for w in workloads]
    gearman = FakeGearman(jobs, events)
    redis = redis or FakeRedis(events)
    redis.events = events
    runner = Runner(config_for(*argv, tables=tables), gearman, redis, Stats(), reader)
    gearman.runner = redis.runner = runner
    return runner, jobs


def run_jobs(workloads, *argv, **kw):
    """Run the loop over these workloads until every job is answered; returns (jobs, runner)."""
    runner, jobs = make_runner(workloads, *argv, **kw)
    assert runner.run() == 0
    return jobs, runner


def count(runner, name):
    return runner.stats.array[runner.stats.index[name]]
