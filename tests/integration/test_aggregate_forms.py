"""gman_bulk_background and gman_sum under WITH ROLLUP and window frames (OVER ...): each
row's job is sent once and the values are those of SUM()/COUNT() in the same place.

They used to send each row once per frame or ROLLUP level: OVER () queued 900 jobs for 30
rows, OVER (ORDER BY seq) 465, GROUP BY g WITH ROLLUP 59 with wrong counts.
"""
import time

import pytest

from tests.support.gearman import fname, queued, running_worker

FORMS = [  # (select list over table s(seq, g, h), the same with COUNT(*) in the aggregate's place)
    ("{agg} FROM s", "COUNT(*) FROM s"),
    ("g, {agg} FROM s GROUP BY g", "g, COUNT(*) FROM s GROUP BY g"),
    ("g, {agg} FROM s GROUP BY g WITH ROLLUP", "g, COUNT(*) FROM s GROUP BY g WITH ROLLUP"),
    ("g, h, {agg} FROM s GROUP BY g, h WITH ROLLUP", "g, h, COUNT(*) FROM s GROUP BY g, h WITH ROLLUP"),
    ("seq, {agg} OVER () FROM s", "seq, COUNT(*) OVER () FROM s"),
    ("seq, {agg} OVER (ORDER BY seq) FROM s", "seq, COUNT(*) OVER (ORDER BY seq) FROM s"),
    ("seq, {agg} OVER (PARTITION BY g ORDER BY seq) FROM s", "seq, COUNT(*) OVER (PARTITION BY g ORDER BY seq) FROM s"),
    ("seq, {agg} OVER (PARTITION BY g) FROM s", "seq, COUNT(*) OVER (PARTITION BY g) FROM s"),
    ("seq, {agg} OVER (ORDER BY seq ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) FROM s",
     "seq, COUNT(*) OVER (ORDER BY seq ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) FROM s"),
    ("seq, {agg} OVER (ORDER BY seq ROWS BETWEEN CURRENT ROW AND UNBOUNDED FOLLOWING) FROM s",
     "seq, COUNT(*) OVER (ORDER BY seq ROWS BETWEEN CURRENT ROW AND UNBOUNDED FOLLOWING) FROM s"),
    ("seq, {agg} OVER (ORDER BY seq RANGE BETWEEN 1 PRECEDING AND 1 FOLLOWING) FROM s",
     "seq, COUNT(*) OVER (ORDER BY seq RANGE BETWEEN 1 PRECEDING AND 1 FOLLOWING) FROM s"),
    ("g, {agg} AS n FROM s GROUP BY g HAVING n > 0", "g, COUNT(*) AS n FROM s GROUP BY g HAVING n > 0"),
]
ROWS = 30


@pytest.fixture
def table(sql, fresh_gearmand):
    g = fresh_gearmand()
    sql.run("DROP TABLE IF EXISTS s")
    sql.run("CREATE TABLE s (seq INT PRIMARY KEY, g INT, h INT)")
    sql.run(f"INSERT INTO s SELECT seq, seq % 3, seq % 2 FROM seq_1_to_{ROWS}")
    return g


def canon(rows):
    """Rows as comparable values (Decimal from SUM() as int), in a fixed order."""
    return sorted(repr(tuple(int(v) if v is not None and not isinstance(v, (int, bytes)) else v for v in r))
                  for r in rows)


@pytest.mark.parametrize("form, reference", FORMS, ids=[f[0].split(" FROM")[0][:60] for f in FORMS])
def test_bulk_background_sends_each_row_once_and_counts_like_count(sql, table, form, reference):
    fn = fname("forms")
    sql.servers_set(table, function=fn)
    got = sql.rows("SELECT " + form.format(agg=f"gman_bulk_background('{fn}', seq)"))
    want = sql.rows("SELECT " + reference)
    assert canon(got) == canon(want), sql.last_error()
    time.sleep(0.05)
    assert queued(table, fn) == ROWS


@pytest.mark.parametrize("form, reference", FORMS, ids=[f[0].split(" FROM")[0][:60] for f in FORMS])
def test_gman_sum_runs_each_row_once_and_sums_like_sum(sql, table, form, reference):
    fn = fname("sumforms")
    sql.servers_set(table, function=fn)
    runs = []

    def triple(job):
        runs.append(int(job.workload))
        return str(3 * int(job.workload)).encode()

    moving = "PRECEDING AND" in form or "CURRENT ROW AND" in form
    order = " ORDER BY 1" if " OVER " in form else ""
    with running_worker([table], {fn: triple}, batch=20):
        got = sql.rows("SELECT " + form.format(agg=f"gman_sum('{fn}', seq)") + order)
        error = sql.last_error()
    want = sql.rows("SELECT " + reference.replace("COUNT(*)", "SUM(3 * seq)") + order)
    if moving:  # a frame whose start moves: gman_sum cannot take one result back out
        removed_from = 3 if "2 PRECEDING" in form else 2 if "RANGE" in form else 1
        assert [r[-1] for r in got[:removed_from]] == [int(r[-1]) for r in want[:removed_from]], got
        assert all(r[-1] is None for r in got[removed_from:]), got
        assert "a window frame whose start moves" in error and "not supported" in error, error
        return
    assert canon(got) == canon(want), error
    assert sorted(runs) == list(range(1, ROWS + 1))  # each row's job ran once


def test_rollup_level_with_a_failed_group_is_null(sql, table):
    """A ROLLUP level over a group whose jobs failed is NULL too, not a partial count."""
    fn = fname("rollfail")
    sql.servers_set(table, function=fn)
    rows = sql.rows(f"SELECT g, gman_bulk_background(IF(g = 1 AND seq > 20, NULL, '{fn}'), seq) FROM s "
                    "GROUP BY g WITH ROLLUP")
    assert rows[0][1] == 10 and rows[1][1] is None and rows[2][1] == 10, rows
    assert rows[3][0] is None and rows[3][1] is None, rows


def test_a_row_no_frame_includes_sends_no_job(sql, table):
    """ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING never includes the last row: the
    values are COUNT(*)'s and that row's job is not sent (README: window functions)."""
    fn = fname("noframe")
    sql.servers_set(table, function=fn)
    frame = "OVER (ORDER BY seq ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)"
    got = sql.rows(f"SELECT seq, gman_bulk_background('{fn}', seq) {frame} FROM s ORDER BY seq")
    want = sql.rows(f"SELECT seq, COUNT(*) {frame} FROM s ORDER BY seq")
    assert canon(got) == canon(want), sql.last_error()
    time.sleep(0.05)
    assert queued(table, fn) == ROWS - 1
