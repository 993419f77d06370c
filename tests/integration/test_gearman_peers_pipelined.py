"""Pipelined mode (pipeline_window = 64) against Perl Gearman::Server, which lacks
SUBMIT_JOB_HIGH_BG and SUBMIT_JOB_LOW_BG (ERROR server_error): a call of one of them among
pipelined jobs is one clear refusal, reported once (gman_last_error() of the call that reads
the ERROR, gman_stats() "refused"); the jobs around it are neither lost nor sent twice.

Needs the pipelined ERROR handling of udf/gm_pipeline.c (branch `pipeline`)."""
import json
import time

from tests.support.gearman import fname, grab_all, queued, wait_until
from tests.support.sql import DB, Sql


def stats(sql):
    return json.loads(sql.one("SELECT gman_stats()"))


def test_refused_packet_types_among_pipelined_jobs(private_mariadb, perl_gearmand):
    db = private_mariadb(cnf=f"servers = {perl_gearmand.address}\npipeline_window = 64\n")
    s = Sql(db.connect(database=DB))
    try:
        fn = fname("plpipe")
        rows, refused = [], []
        for i in range(100):
            if i in (30, 70):
                func = "gman_do_high_background" if i == 30 else "gman_do_low_background"
                value, error = s.rows(f"SELECT {func}(%s, %s), gman_last_error()", (fn, f"x{i}"))[0]
                refused.append(value.decode() if value is not None else None)
            else:
                value, error = s.rows("SELECT gman_do_background(%s, %s), gman_last_error()", (fn, f"n{i}"))[0]
                assert value is not None
            rows.append(error.decode() if error else "")
        # the rest of the window's replies: one more call reads them
        wait_until(lambda: queued(perl_gearmand, fn) == 98, what="98 jobs queued")
        assert s.one("SELECT gman_do_background(%s, 'last')", (fn,)) is not None
        final = s.last_error() or ""
        reported = {e for e in rows + [final] if "refused" in e}
        for unique in refused:
            # each refused job is named once, by its unique id (the pipelined call's value) or by its call
            assert unique is None or any(unique in e for e in reported), (unique, reported)
        assert all("server_error" in e and perl_gearmand.address in e for e in reported), reported
        st = stats(s)
        assert st["refused"] == 2 and st["lost"] == 0 and st["rescued"] == 0, st
        wait_until(lambda: queued(perl_gearmand, fn) == 99, what="99 jobs queued")
        time.sleep(0.3)  # nothing re-sent
        jobs = grab_all([perl_gearmand], fn)
        assert sorted(j.workload for j in jobs) == sorted([b"n%d" % i for i in range(100) if i not in (30, 70)] +
                                                          [b"last"])
        # a trigger-like call after the refusals still works and the connection was kept
        assert s.one("SELECT gman_do_background(%s, 'after')", (fn,)) is not None
        assert stats(s)["refused"] == 2
    finally:
        s.close()
