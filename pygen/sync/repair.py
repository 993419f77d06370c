"""The fixes of `gman-udf verify --repair` and `gman-udf load` (pygen/sync/verify.py tells the
method): the Repairer writes rows into Redis with the worker's guarded script, or queues
them as jobs; the loads. What differs is found by pygen/sync/compare.py.
"""
from typing import List, Optional, Sequence

from pygen import mysql
from pygen.sync import plan as plan_mod
from pygen.sync import schema
from pygen.sync.compare import BATCH, Report, bulk_sql, expected_write, reread_sql, stream_rows, version_ahead
from pygen.sync.payload import loads as payload_loads
from pygen.sync.redis_scripts import RESET
from pygen.sync.redis_writer import GuardedWrites


def _queued(cur) -> int:
    """gman_bulk_background's result just fetched by cur: how many jobs it queued."""
    queued = cur.fetchone()[0]
    if queued is None:
        cur.execute("SELECT gman_last_error()")
        raise RuntimeError(f"gman_bulk_background failed: {mysql.text(cur.fetchone()[0], 'replace')}")
    return int(queued)


class Repairer:
    """Fixes differences as they are found: guarded writes into Redis, or Gearman jobs.
    conn must be free (not the one streaming the table)."""

    def __init__(self, t: schema.TableSchema, redis, conn, options: plan_mod.Options,
                 function: Optional[str] = None):
        self.t, self.redis, self.conn, self.options, self.function = t, redis, conn, options, function
        self.writes = GuardedWrites(redis)
        self.reset_script = redis.register_script(RESET)
        self.since: Optional[int] = None  # the stamp before the scan: guards the deletes of extras

    def start(self) -> None:
        self.since = self.stamp()

    def stamp(self) -> int:
        return int(mysql.scalar(self.conn, "SELECT gman_stamp()"))

    def _run(self, writes: Sequence[plan_mod.Write]) -> List[bool]:
        """The worker's guarded writes, one script call each (one Cluster slot each); for each,
        whether it was skipped because Redis holds a newer version."""
        return self.writes.each(writes)

    def reset_ahead(self, version_keys: Sequence[str], report: Report) -> None:
        """Delete the version keys that hold a version ahead of gman_stamp(), read after them:
        a forged job's (no trigger of this server stamped it), which no guarded write passes."""
        if not version_keys:
            return
        pipe = self.redis.pipeline(transaction=False)
        for vkey in version_keys:
            pipe.get(vkey)
        held = pipe.execute()
        now = self.stamp()
        ahead = [(vkey, version) for vkey, version in zip(version_keys, held) if version_ahead(version, now)]
        if self.writes.on_cluster:  # one call each (forged versions are rare); Script loads it where lacking
            report.repaired["reset"] += sum(int(self.reset_script(keys=[k], args=[v])) for k, v in ahead)
            return
        pipe = self.redis.pipeline(transaction=False)
        for vkey, version in ahead:
            self.reset_script(keys=[vkey], args=[version], client=pipe)
        if ahead:
            report.repaired["reset"] += sum(int(x) for x in pipe.execute())

    def _write(self, writes: Sequence[plan_mod.Write], report: Report, kind: str) -> None:
        """Guarded writes; those skipped for a version ahead of gman_stamp() are written again
        once that version is reset."""
        skipped = self._run(writes)
        held = [w for w, s in zip(writes, skipped) if s]
        if held:
            before = report.repaired["reset"]
            self.reset_ahead([w.version_key for w in held], report)
            if report.repaired["reset"] > before:
                held = [w for w, s in zip(held, self._run(held)) if s]
        report.repaired[kind] += len(writes) - len(held)
        report.repaired["newer"] += len(held)

    def rows(self, raw_keys: Sequence[tuple], report: Report, version_keys: Sequence[str] = ()) -> None:
        """Repair the rows of these keys (raw key values, in key column order); version_keys:
        theirs in Redis, to reset those ahead of gman_stamp() before jobs are queued."""
        if not raw_keys:
            return
        params = [v for raw in raw_keys for v in raw]
        if self.function is not None:
            self.reset_ahead(version_keys, report)  # or the worker would skip the jobs
        cur = self.conn.cursor()
        try:
            if self.function is not None:
                cur.execute(bulk_sql(self.t, self.function, len(raw_keys)), params)
                report.repaired["queued"] += _queued(cur)
                return
            cur.execute(reread_sql(self.t, len(raw_keys)), params)
            fresh = cur.fetchall()
        finally:
            cur.close()
        writes = [expected_write(self.t, payload_loads(k), payload_loads(r), self.options, int(v)) for k, r, v in fresh]
        self._write(writes, report, "written")

    def extras(self, keys: Sequence[bytes], report: Report) -> None:
        if not keys:
            return
        ttl_ms = round(self.options.tombstone_ttl * 1000)
        names = [k.decode("utf-8", "replace") for k in keys]
        writes = [plan_mod.Write("del", k, plan_mod.version_key(k), self.since, ttl_ms) for k in names]
        self._write(writes, report, "deleted")


# ---- the initial load ------------------------------------------------------------------------

def load_via_gearman(conn, t: schema.TableSchema, function: str) -> int:
    """Queue an upsert job for every row, in one statement; returns how many were queued."""
    cur = conn.cursor()
    try:
        cur.execute(bulk_sql(t, function))
        return _queued(cur)
    finally:
        cur.close()


def load_into_redis(conn, spare, t: schema.TableSchema, redis, options: plan_mod.Options,
                    progress=None, batch: int = BATCH) -> Report:
    """Write every row into Redis: the keys are streamed from conn, each batch of rows read
    again under a lock on `spare` and written with the worker's guarded writes."""
    report = Report()
    repairer = Repairer(t, redis, spare, options)
    for rows in stream_rows(conn, t, batch):
        repairer.rows([raw for _, _, raw in rows], report)
        report.rows += len(rows)
        if progress is not None:
            progress.update(len(rows))
    return report
