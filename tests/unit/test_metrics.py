"""pygen/sync/metrics.py: the worker's Prometheus text from the per-process slots (counters, gauges,
the commit -> Redis lag histogram), checked by hand and by prometheus_client's own parser,
together with gman-udf reconcile's text (appended to the worker's with --reconcile)."""
import math
import re

from prometheus_client.parser import text_string_to_metric_families

from pygen.sync import reconcile
from pygen.sync.metrics import COUNTERS, GAUGES, LAG_BUCKETS, SLOT, Stats, prometheus_text, totals

NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
SAMPLE = re.compile(r'^([a-z_:][a-z0-9_:]*)(\{[^}]*\})? (\S+)$')


def two_processes():
    """Slots of two processes with some jobs and lags in each."""
    array = [0.0] * (2 * SLOT)
    a, b = Stats(array, 0), Stats(array, 1)
    a.add("jobs", 10)
    b.add("jobs", 5)
    a.add("refused", 2)
    a.set("parked", 3)
    b.set("parked", 4)
    a.set("lag_us", 2500)
    a.observe_lags([0.0004, 0.0005, 0.003])
    a.observe_lags([0.003, 7.0])
    b.observe_lags([0.0009, 61.0, -0.2])  # past the last bound; a stamp ahead of the clock counts as 0
    b.observe_lags([])
    return array


def samples(text):
    """{name + labels: value} of the sample lines."""
    out = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, line
        out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def buckets(s, mode="payload"):
    pat = re.compile(r'^gman_worker_lag_seconds_bucket\{mode="%s",le="([^"]+)"\}$' % mode)
    return [(float(m.group(1)), v) for k, v in s.items() for m in [pat.match(k)] if m]


def test_counters_and_gauges_summed_across_processes():
    s = samples(prometheus_text(totals(two_processes(), 2), "payload"))
    assert s['gman_worker_jobs_total{mode="payload"}'] == 15
    assert s['gman_worker_refused_total{mode="payload"}'] == 2
    assert s['gman_worker_waits_total{mode="payload"}'] == 0
    assert s['gman_worker_parked{mode="payload"}'] == 7


def test_histogram_buckets_are_cumulative_summed_and_end_in_inf_equal_to_count():
    t = totals(two_processes(), 2)
    text = prometheus_text(t, "committed")
    s = samples(text)
    got = buckets(s, "committed")
    assert [le for le, _ in got] == list(LAG_BUCKETS) + [math.inf]
    counts = [n for _, n in got]
    assert counts == sorted(counts)  # monotonic
    assert counts[-1] == s['gman_worker_lag_seconds_count{mode="committed"}'] == 8 == t["lag_count"]
    by_le = dict(got)
    assert by_le[0.0005] == 3  # 0.0004, 0.0005 (le is <=) and the negative one, as 0
    assert by_le[0.001] == 4 and by_le[0.0025] == 4 and by_le[0.005] == 6
    assert by_le[5.0] == 6 and by_le[10.0] == 7 and by_le[60.0] == 7 and by_le[math.inf] == 8
    assert math.isclose(s['gman_worker_lag_seconds_sum{mode="committed"}'], 0.0004 + 0.0005 + 0.006 + 7 + 0.0009 + 61,
                        abs_tol=1e-6)


def test_one_process_and_nothing_observed():
    text = prometheus_text(totals([0.0] * SLOT, 1), "payload")
    s = samples(text)
    assert all(n == 0 for _, n in buckets(s)) and s['gman_worker_lag_seconds_count{mode="payload"}'] == 0
    assert 'gman_worker_lag_seconds_bucket{mode="payload",le="+Inf"} 0\n' in text
    assert 'gman_worker_lag_seconds_bucket{mode="payload",le="0.0005"} 0\n' in text


def test_names_types_and_help():
    text = prometheus_text(totals(two_processes(), 2), "payload")
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    helps = set(re.findall(r"^# HELP (\S+) \S", text, re.M))
    assert set(types) == helps and len(types) == len(COUNTERS) + len(GAUGES) + 1  # + the histogram
    assert types["gman_worker_lag_seconds"] == "histogram"
    for name, typ in types.items():
        assert NAME.fullmatch(name) and name.startswith("gman_worker_")
        assert name.endswith("_total") == (typ == "counter"), name
    for key in samples(text):
        name = key.split("{")[0]
        family = re.sub(r"_(bucket|sum|count)$", "", name) if name.startswith("gman_worker_lag_seconds") else name
        assert family in types, name  # every sample under a TYPE line


def test_reconcile_names_follow_the_same_conventions():
    m = reconcile.Metrics()
    for name, (typ, _) in m.HELP.items():
        assert NAME.fullmatch(f"gman_reconcile_{name}")
        assert name.endswith("_total") == (typ == "counter"), name
        assert typ in ("counter", "gauge")


def test_prometheus_client_parses_the_worker_and_reconcile_text():
    m = reconcile.Metrics()
    m.add("rows_checked_total", "db.t", 500)
    m.add("differences_total", "db.t", 2, "missing")
    m.add("passes_total", 'we"ird\\', 1)
    m.set("pass_seconds", "db.t", 1.25)
    m.set("pass_completed_timestamp_seconds", "db.t", 1.7e9)
    text = prometheus_text(totals(two_processes(), 2), "committed") + m.render()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    # the parser drops _total from a counter family's name, and files a histogram's series under its name
    assert families["gman_worker_jobs"].type == "counter"
    assert families["gman_worker_parked"].type == "gauge"
    lag = families["gman_worker_lag_seconds"]
    assert lag.type == "histogram"
    got = {(s.name, s.labels.get("le")): s.value for s in lag.samples}
    assert got[("gman_worker_lag_seconds_bucket", "+Inf")] == got[("gman_worker_lag_seconds_count", None)] == 8
    assert all(s.labels["mode"] == "committed" for s in lag.samples)
    assert families["gman_reconcile_rows_checked"].type == "counter"
    passes = families["gman_reconcile_passes"].samples[0]
    assert passes.labels == {"table": 'we"ird\\'} and passes.value == 1
    assert families["gman_reconcile_pass_completed_timestamp_seconds"].samples[0].value == 1.7e9
