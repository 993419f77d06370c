"""pygen/sync/reconcile.py's pure parts: the token bucket (fake clock), the keyset SQL, the
merging of chunk reports, the Prometheus text and the pass log line."""
import math

from pygen.sync import reconcile, reconcile_cli
from pygen.sync.compare import Report
from pygen.sync.schema import Column, TableSchema


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now

    def sleep(self, s):
        self.now += s
        return False  # not stopped


def test_bucket_bounds_what_is_taken_over_any_window():
    clock = Clock()
    bucket = reconcile.TokenBucket(rate=100, burst=50, clock=clock)
    taken = 0
    for _ in range(40):
        assert bucket.take(25, clock.sleep)
        taken += 25
    elapsed = clock.now - 100.0
    assert taken <= 50 + 100 * elapsed  # burst + rate * time
    assert elapsed >= (taken - 50) / 100 - 1e-9


def test_bucket_takes_more_than_its_burst_as_a_debt():
    clock = Clock()
    bucket = reconcile.TokenBucket(rate=10, burst=5, clock=clock)
    assert bucket.delay(1000) == 0  # 5 banked: a big take goes at once...
    bucket.take(1000, clock.sleep)
    assert clock.now == 100.0
    assert bucket.delay(1) == (995 + 1) / 10  # ...and the next waits the debt off
    bucket.take(1, clock.sleep)
    assert clock.now >= 100.0 + 99.6 - 1e-9


def test_bucket_stops_when_told():
    bucket = reconcile.TokenBucket(rate=1, burst=1, clock=Clock())
    bucket.take(1, lambda s: True)
    assert bucket.take(1, lambda s: True) is False


def test_unlimited_bucket_never_waits():
    bucket = reconcile.TokenBucket(rate=math.inf, burst=1000, clock=Clock())
    for _ in range(100):
        assert bucket.delay(10**6) == 0
        assert bucket.take(10**6, lambda s: 1 / 0)


def _table(*key):
    cols = tuple(Column(n) for n in key) + (Column("v", "varchar", "utf8mb4"),)
    return TableSchema("db", "t", tuple(Column(n) for n in key), cols, cols)


def test_keyset_sql_single_and_composite_keys():
    one = _table("id")
    assert reconcile.after_condition(one) == "(`id` > %s)"
    sql = reconcile.chunk_sql(one, after=True)
    assert sql.endswith(" FROM `db`.`t` WHERE (`id` > %s) ORDER BY `id` LIMIT %s")
    assert reconcile.chunk_sql(one, after=False).endswith(" FROM `db`.`t` ORDER BY `id` LIMIT %s")
    three = _table("a", "b", "c")
    assert reconcile.after_condition(three) == "(`a` > %s) OR (`a` = %s AND `b` > %s) OR (`a` = %s AND `b` = %s AND `c` > %s)"
    assert reconcile.after_params((1, "x", b"\0")) == [1, 1, "x", 1, "x", b"\0"]
    assert reconcile.chunk_sql(three, after=True).count("%s") == len(reconcile.after_params((1, 2, 3))) + 1


def test_keyset_sql_escapes_percent_in_names():
    t = _table("p%c")
    assert "`p%%c` > %s" in reconcile.chunk_sql(t, after=True)
    assert "ORDER BY `p%%c`" in reconcile.chunk_sql(t, after=True)


def test_chunk_size_follows_the_rate():
    assert reconcile.chunk_size(2000) == 500
    assert reconcile.chunk_size(1) == 10
    assert reconcile.chunk_size(10**6) == reconcile.chunk_size(math.inf) == 1000


def test_merge_adds_counts_and_keeps_a_few_examples():
    total = Report(keep=3)
    for i in range(3):
        part = Report(keep=3)
        part.rows = 10
        part.add("missing", f"k{i}a")
        part.add("missing", f"k{i}b")
        part.repaired["written"] += 2
        reconcile.merge(total, part)
    assert total.rows == 30 and total.counts["missing"] == 6 and total.repaired["written"] == 6
    assert total.missing == ["k0a", "k0b", "k1a"]


def test_metrics_text():
    m = reconcile.Metrics()
    m.add("rows_checked_total", "db.t", 500)
    m.add("repaired_total", "db.t", 3, "written")
    m.set("pass_seconds", 'we"ird', 1.25)
    text = m.render()
    assert "# TYPE gman_reconcile_rows_checked_total counter" in text
    assert 'gman_reconcile_rows_checked_total{table="db.t"} 500\n' in text
    assert 'gman_reconcile_repaired_total{table="db.t",kind="written"} 3\n' in text
    assert 'gman_reconcile_pass_seconds{table="we\\"ird"} 1.250000\n' in text
    assert "passes_total" not in text  # nothing counted yet: not shown
    assert m.get("rows_checked_total", "db.t") == 500


def test_pass_line_has_the_figures():
    r = Report(keep=3)
    r.rows = 1000
    r.add("stale", "db.t:7")
    r.repaired["written"] = 1
    line = reconcile.pass_line("db.t", 4, 2.5, r, 1)
    assert line.startswith("db.t: pass 4 done in 2.5 s: 1000 rows checked; 0 missing, 1 stale, 0 extra, 0 frozen;")
    assert "repaired 1 written, 0 deleted" in line and "1 errors" in line and "[stale: db.t:7]" in line


def test_rate_option():
    assert reconcile_cli._rate("max") == math.inf and reconcile_cli._rate("150") == 150.0
