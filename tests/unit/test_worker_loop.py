"""The worker loop (pygen/sync/worker.py Runner, with committed mode's half in
pygen/sync/committed_loop.py) over fakes of gearmand, Redis and MySQL (tests/support/worker_fakes.py): batches,
refusals, a Redis or MySQL outage, and what a stop leaves to gearmand. What committed mode
decides for a row is tested apart (the decision's own tests); here only how the loop carries a
job through it: at least once, and never answered before Redis acknowledged its write."""
import json
import time

from pygen.gearman.worker import Worker
from pygen.sync.committed import CommittedReader, Gone
from pygen.sync.metrics import Stats
from pygen.sync.redis_writer import RedisWriter
from pygen.sync.worker_cli import build_runner
from tests.support.worker_fakes import TABLE, FakeReader, FakeRedis, config_for, count, make_runner, run_jobs

COMMITTED = ("--consistency", "committed", "--mysql", "mysql://u@h/db", "--waiters", "0")


def job(i, v=None, name=None, **over):
    doc = {"op": "upsert", "table": TABLE, "key": {"id": i}, "v": time.time_ns() // 1000 if v is None else v,
           "row": {"id": i, "name": name or f"n{i}"}}
    doc.update(over)
    return json.dumps(doc).encode()


def row(i, name=None):
    return {"id": i, "name": name or f"n{i}"}


def answers(runner):
    """(kind, handles) of the events, in order, without the grabs."""
    return [e for e in runner.gearman.events if e[0] != "grab"]


def assert_written_before_completed(runner, jobs):
    """Each completed job's key was in a write Redis acknowledged before its WORK_COMPLETE."""
    written, key_of = set(), {j.handle: f"{TABLE}:{json.loads(j.workload)['key']['id']}" for j in jobs
                               if j.workload.startswith(b"{\"op\"")}
    for kind, items in runner.gearman.events:
        if kind == "write":
            written.update(items)
        elif kind == "complete":
            assert all(key_of[h] in written for h in items if h in key_of), (items, written)


# ---- payload mode ----------------------------------------------------------------------------

def test_jobs_are_taken_in_batches_of_at_most_batch():
    jobs, runner = run_jobs([job(i) for i in range(5)], "--batch", "2")
    assert [j.outcome for j in jobs] == ["complete"] * 5
    assert [n for n in runner.gearman.grabs if n] == [2, 2, 1]
    assert sorted(w.key for w in runner.redis.written) == [f"{TABLE}:{i}" for i in range(5)]
    assert count(runner, "jobs") == 5 and count(runner, "writes") == 5 and count(runner, "errors") == 0
    assert runner.gearman.closed and runner.redis.closed


def test_the_next_batch_is_grabbed_while_redis_runs_the_previous():
    jobs, runner = run_jobs([job(i) for i in range(4)], "--batch", "2")
    events = [(kind, len(items)) for kind, items in runner.gearman.events]
    assert events[:4] == [("grab", 2), ("grab", 2), ("write", 2), ("complete", 2)]
    assert_written_before_completed(runner, jobs)


def test_writes_of_one_key_in_a_batch_collapse_to_the_newest():
    jobs, runner = run_jobs([job(1, v=10, name="old"), job(1, v=20, name="new"), job(2, v=5)])
    assert [j.outcome for j in jobs] == ["complete"] * 3
    (one, two) = sorted(runner.redis.written, key=lambda w: w.key)
    assert one.version == 20 and b'"new"' in one.values[0] and two.version == 5
    assert count(runner, "writes") == 2


def test_writes_skipped_as_stale_are_counted_and_their_jobs_completed():
    events = []
    jobs, runner = run_jobs([job(1), job(2)], redis=FakeRedis(events, skip=1))
    assert [j.outcome for j in jobs] == ["complete"] * 2
    assert count(runner, "stale") == 1 and count(runner, "writes") == 1


def test_a_refused_job_is_failed_at_once_and_counted_the_others_written():
    jobs, runner = run_jobs([job(1), b"not json", job(2, table="shop.other")], redis=FakeRedis(away=2))
    assert [j.outcome for j in jobs] == ["complete", "fail", "fail"]
    assert count(runner, "refused") == 2
    kinds = [kind for kind, _ in answers(runner)]
    assert kinds == ["fail", "fail", "write", "complete"]  # not held behind the Redis outage


def test_redis_away_is_retried_and_no_job_is_completed_before_its_write():
    jobs, runner = run_jobs([job(i) for i in range(6)], "--batch", "3", redis=FakeRedis(away=3))
    assert [j.outcome for j in jobs] == ["complete"] * 6
    assert count(runner, "errors") == 3 and runner.redis.outages == 3
    assert_written_before_completed(runner, jobs)


def test_stopped_while_redis_is_away_no_job_is_answered():
    """The jobs go back to gearmand when the worker's connections close: none is completed."""
    jobs, runner = run_jobs([job(1), job(2)], redis=FakeRedis(away=10**6, stop_after=3))
    assert [j.outcome for j in jobs] == [None, None]
    assert runner.redis.written == [] and runner.gearman.closed


def test_a_stop_finishes_the_batch_redis_already_has():
    class StopOnBegin(FakeRedis):
        def begin(self, writes):
            self.runner.stop()
            return super().begin(writes)

    jobs, runner = run_jobs([job(1), job(2), job(3)], "--batch", "2", redis=StopOnBegin())
    assert [j.outcome for j in jobs] == ["complete", "complete", None]  # the third: never grabbed
    assert_written_before_completed(runner, jobs)


def test_without_tables_the_loop_syncs_the_tables_with_generated_triggers():
    reader = FakeReader(tables={TABLE: frozenset({"id", "name"})})
    jobs, runner = run_jobs([job(1), job(2, table="shop.other")], "--mysql", "mysql://u@h/db",
                            reader=reader, tables=None)
    assert [j.outcome for j in jobs] == ["complete", "fail"]
    assert reader.synced_reads >= 1 and reader.closed


# ---- committed mode --------------------------------------------------------------------------

def test_committed_a_change_mysql_holds_as_sent_is_written_after_its_read():
    reader = FakeReader({(TABLE, 1): row(1), (TABLE, 2): row(2)})
    jobs, runner = run_jobs([job(1), job(2)], *COMMITTED, reader=reader)
    assert [j.outcome for j in jobs] == ["complete"] * 2
    assert sorted(w.key for w in runner.redis.written) == [f"{TABLE}:1", f"{TABLE}:2"]
    assert reader.reads[0] == [1, 2]  # one read for the batch
    assert_written_before_completed(runner, jobs)
    assert count(runner, "parked") == 0 and reader.closed


def test_committed_mysql_away_keeps_the_jobs_parked_then_writes_them():
    reader = FakeReader({(TABLE, 1): row(1)}, away=1)
    jobs, runner = run_jobs([job(1)], *COMMITTED, reader=reader)
    assert jobs[0].outcome == "complete" and len(reader.reads) == 2
    assert count(runner, "errors") == 1


def test_committed_redis_away_is_retried_before_any_job_is_completed():
    reader = FakeReader({(TABLE, i): row(i) for i in range(4)})
    jobs, runner = run_jobs([job(i) for i in range(4)], *COMMITTED, reader=reader, redis=FakeRedis(away=2))
    assert [j.outcome for j in jobs] == ["complete"] * 4
    assert count(runner, "errors") == 2
    assert_written_before_completed(runner, jobs)


def test_committed_refuses_what_cannot_be_checked():
    reader = FakeReader({(TABLE, 1): Gone("shop.data: no such column"), (TABLE, 2): row(2)})
    bare = b'{"id": 3, "name": "x"}'
    unversioned = json.dumps({"op": "upsert", "table": TABLE, "key": {"id": 4}, "row": row(4)}).encode()
    jobs, runner = run_jobs([job(1), job(2), bare, unversioned], *COMMITTED, reader=reader, tables="*")
    assert [j.outcome for j in jobs] == ["fail", "complete", "fail", "fail"]
    assert count(runner, "refused") == 3


def test_committed_refuses_a_version_ahead_of_the_servers_stamp():
    reader = FakeReader({(TABLE, 1): row(1), (TABLE, 2): row(2)}, stamp=1000)
    jobs, runner = run_jobs([job(1, v=999), job(2, v=1001)], *COMMITTED, reader=reader)
    assert [j.outcome for j in jobs] == ["complete", "fail"]


def test_committed_a_job_whose_connection_dropped_is_forgotten():
    """gearmand re-queued it when the connection dropped: it is neither read again nor answered."""
    def drop_the_first(changes):
        if len(reader.reads) == 1:
            jobs[0].alive = False

    reader = FakeReader({(TABLE, 1): row(1), (TABLE, 2): row(2)}, away=1, hook=drop_the_first)
    runner, jobs = make_runner([job(1), job(2)], *COMMITTED, reader=reader)
    assert runner.run() == 0
    assert [j.outcome for j in jobs] == [None, "complete"]
    assert reader.reads == [[1, 2], [2]]
    assert [w.key for w in runner.redis.written] == [f"{TABLE}:2"]


def test_committed_a_stop_leaves_parked_jobs_to_gearmand():
    def stop(changes):
        runner.stop()

    reader = FakeReader(away=10**6, hook=stop)
    runner, jobs = make_runner([job(1), job(2)], *COMMITTED, reader=reader)
    assert runner.run() == 0
    assert [j.outcome for j in jobs] == [None, None] and runner.gearman.closed and reader.closed


# ---- the factory -----------------------------------------------------------------------------

def test_build_runner_gives_the_loop_the_real_clients():
    """Nothing connects before run(): the clients are built from the config only."""
    runner = build_runner(config_for("--mysql", "mysql://u@h/db", "--timeout", "3"), Stats())
    try:
        assert isinstance(runner.gearman, Worker) and isinstance(runner.redis, RedisWriter)
        assert isinstance(runner.reader, CommittedReader)
        assert [l.conn.address for l in runner.gearman.links] == ["127.0.0.1:1"]
        assert runner.gearman.timeout == 3.0 and runner.gearman.connect_timeout == 2.0
        assert list(runner.gearman.functions) == ["syncToRedis"]
    finally:
        runner.gearman.close()
        runner.redis.close()
    two = build_runner(config_for("--gearman", "a:1,b:2"), Stats())
    assert [l.conn.address for l in two.gearman.links] == ["a:1", "b:2"] and two.reader is None
    two.gearman.close()
