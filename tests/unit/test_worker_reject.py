"""Bad jobs never stop the worker (issue 7, sections 3 and 4): the parse and plan path refuses
them (WORK_FAIL, counted as refused) and the loop goes on; and the allow-list of tables and
the future-version limit. The loop (pygen/sync/worker.py Runner) runs against fakes of gearmand
and Redis here (tests/support/worker_fakes.py)."""
import base64
import json
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pygen import cli
from pygen.sync import plan, schema, triggers, worker, worker_cli
from pygen.sync.metrics import Stats
from pygen.sync.payload import MAX_VERSION, PayloadError, parse
from pygen.sync.plan import PlanError
from tests.support.worker_fakes import TABLE, FakeGearman, FakeReader, FakeRedis, config_for, count, run_jobs

NOW_US = time.time_ns() // 1000


def good(i=1, v=None, **over):
    doc = {"op": "upsert", "table": TABLE, "key": {"id": i}, "v": NOW_US + i if v is None else v,
           "row": {"id": i, "name": f"n{i}"}}
    doc.update(over)
    return json.dumps(doc).encode()


# The killers of issue 7 (each stopped or wedged the worker on the old code) and their kin.
KILLERS = {
    "bad base64 in a key": b'{"op":"upsert","table":"shop.data","key":{"id":{"$base64":"a"}},"v":1,"row":{"id":1}}',
    "negative version": good(v=-5),
    "deep nesting": b"[" * 200000 + b"]" * 200000,
    "deep object in a row": b'{"op":"upsert","table":"shop.data","key":{"id":1},"v":1,"row":{"x":'
                            + b'{"a":' * 990 + b"1" + b"}" * 990 + b"}}",
    "table is a number": good(table=5),
    "not UTF-8": b'{"op":"upsert","table":"shop.data","key":{"id":"\xff\xfe"},"v":1,"row":{"id":1}}',
    "lone surrogate in the table": good(table="shop.\ud800"),
    "lone surrogate in a key": good(key={"id": "\udfff"}),
    "lone surrogate in a hash field name": good(row={"\ud800": 1}),
    "NaN key": b'{"op":"delete","table":"shop.data","key":{"id":NaN},"v":1}',
    "Infinity in a row": b'{"op":"upsert","table":"shop.data","key":{"id":1},"v":1,"row":{"x":Infinity}}',
    "huge version": good(v=10**30),
    "version past a BIGINT": good(v=MAX_VERSION + 1),
    "version as text": good(v="123"),
    "version true": good(v=True),
    "version float": good(v=1.5),
    "number of 5000 digits": b'{"op":"delete","table":"shop.data","key":{"id":1' + b"0" * 5000 + b'},"v":1}',
    "key is an array": good(key=[1]),
    "key value is an object": good(key={"id": {"a": 1}}),
    "key value is an array": good(key={"id": [1]}),
    "key value is true": good(key={"id": True}),
    "empty key": good(key={}),
    "no key": b'{"op":"delete","table":"shop.data","v":1}',
    "row is a list": good(row=[1]),
    "no row": b'{"op":"upsert","table":"shop.data","key":{"id":1},"v":1}',
    "unknown op": good(op="truncate"),
    "op is an object": good(op={"x": 1}),
    "empty table": good(table=""),
    "bare row without id": b'{"name":"x"}',
    "bare row with an object id": b'{"id":{"a":1}}',
    "bad base64 in a bare id": b'{"id":{"$base64":"@@"}}',
    "not an object": b"[1,2]",
    "empty": b"",
    "a table not synced": good(table="shop.secret"),
    "the system table": good(table="mysql.global_priv"),
    "odd table name": good(table="shop.data`; DROP TABLE x; --"),
    "a version far in the future": good(v=9999999999999999),
    "a key that is another's version key": good(key={"id": "{x}#v"}),  # shop.data:{x} -> shop.data:{x}#v
}
HASH_ONLY = {"bad base64 in a hash value": good(row={"id": 1, "b": {"$base64": "!"}})}


@pytest.mark.parametrize("name", sorted(KILLERS))
def test_a_bad_job_is_refused_and_the_others_are_written(name):
    jobs, runner = run_jobs([good(1), KILLERS[name], good(2)])
    assert [j.outcome for j in jobs] == ["complete", "fail", "complete"]
    assert runner.redis.failures == 0
    assert sorted(w.key for w in runner.redis.written) == ["shop.data:1", "shop.data:2"]
    assert count(runner, "refused") == 1


@pytest.mark.parametrize("name", sorted(KILLERS) + sorted(HASH_ONLY))
def test_hash_mode_refuses_them_too(name):
    jobs, runner = run_jobs([{**KILLERS, **HASH_ONLY}[name], good(2)], "--mode", "hash")
    assert [j.outcome for j in jobs] == ["fail", "complete"] and runner.redis.failures == 0


def test_a_refusal_is_one_log_line_with_reason_and_handle(caplog):
    caplog.set_level("WARNING", logger="gman-udf.worker")
    jobs, _ = run_jobs([KILLERS["bad base64 in a key"], KILLERS["deep nesting"]])
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert lines[0].startswith(f"job {jobs[0].handle} refused: bad base64 'a': b'")
    assert lines[1].startswith(f"job {jobs[1].handle} refused: not JSON: maximum recursion depth")
    assert all(len(line) < 700 for line in lines)


def test_any_table_with_star_and_bare_rows():
    jobs, runner = run_jobs([good(table="other.t"), b'{"id": 5, "x": 1}'], "--tables", "*")
    assert [j.outcome for j in jobs] == ["complete", "complete"]
    jobs, _ = run_jobs([b'{"id": 5, "x": 1}'])  # no table: not on any list
    assert jobs[0].outcome == "fail"


def test_future_skew_is_configurable():
    now = time.time_ns() // 1000  # not NOW_US: the suite may reach this test minutes after import
    ahead = good(v=now + 60 * 10**6)  # a minute ahead of this clock
    jobs, _ = run_jobs([ahead, good(v=now + 3600 * 10**6)])
    assert [j.outcome for j in jobs] == ["complete", "fail"]  # default: 300 s
    jobs, _ = run_jobs([ahead], "--max-future-skew", "10")
    assert jobs[0].outcome == "fail"
    jobs, _ = run_jobs([good(v=9999999999999999)], "--max-future-skew", "inf")
    assert jobs[0].outcome == "complete"
    jobs, _ = run_jobs([good(v=42)])  # a table's own counter: far in the past, fine
    assert jobs[0].outcome == "complete"


# ---- the property: refused or written, never an exception out of the loop --------------------

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
                      st.floats(allow_nan=True, allow_infinity=True),
                      st.text(st.characters(blacklist_categories=()), max_size=8))
json_value = st.recursive(json_leaf, lambda c: st.one_of(st.lists(c, max_size=4),
                                                       st.dictionaries(st.text(max_size=4), c, max_size=4)),
                          max_leaves=12)
b64 = st.one_of(st.binary(max_size=6).map(lambda b: base64.b64encode(b).decode()), st.text(max_size=6))
key_value = st.one_of(json_value, st.builds(lambda s: {"$base64": s}, b64))
row_value = st.one_of(st.none(), st.integers(), st.floats(allow_nan=False), st.text(max_size=8),
                      st.builds(lambda s: {"$base64": s}, b64))
VALID = {"op": st.sampled_from(["upsert", "delete"]), "table": st.just(TABLE),
         "key": st.fixed_dictionaries({"id": st.one_of(st.integers(0, 10**6), st.text(max_size=6))}),
         "v": st.integers(0, NOW_US), "row": st.dictionaries(st.sampled_from(["id", "name"]), row_value, max_size=2)}
ODD = {"op": json_value, "table": st.one_of(st.sampled_from(["shop.secret", "", "shop.data\ud800"]), json_value),
       "key": st.one_of(st.dictionaries(st.sampled_from(["id", "a", "\ud800"]), key_value, max_size=3), json_value),
       "v": st.one_of(st.integers(min_value=-5, max_value=2**64), st.just(NOW_US + 10**12), json_value),
       "row": st.one_of(st.dictionaries(st.text(st.characters(blacklist_categories=()), max_size=4),
                                        key_value, max_size=4), json_value)}


@st.composite
def payloads(draw):
    """A generated trigger's payload, with some fields replaced by odd ones, maybe reshaped
    as a bare row, and maybe with bytes flipped, cut or inserted."""
    doc = {}
    for name in VALID:
        choice = draw(st.sampled_from(["valid"] * 5 + ["odd", "missing"]))
        if choice != "missing":
            doc[name] = draw(VALID[name] if choice == "valid" else ODD[name])
    if draw(st.integers(0, 7)) == 0:  # the seeds' bare shape
        doc.pop("op", None)
        doc["id"] = draw(key_value)
    text = json.dumps(doc, allow_nan=True, ensure_ascii=draw(st.booleans()))
    data = text.encode("utf-8", "surrogatepass")
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2, 3]))):  # mutate: flip, cut or insert bytes
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        kind = draw(st.sampled_from(["flip", "cut", "insert"]))
        if kind == "flip":
            data = data[:i] + bytes([data[i] ^ draw(st.integers(1, 255))]) + data[i + 1:]
        elif kind == "cut":
            data = data[:i] + data[i + draw(st.integers(1, 8)):]
        else:
            data = data[:i] + draw(st.sampled_from([b"[", b"{", b'"', b"\\u", b"\xff", b"NaN", b"-"])) + data[i:]
    return data


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(payloads(), st.binary(max_size=64)), min_size=1, max_size=5), st.sampled_from(["json", "hash"]))
def test_property_refused_or_written(workloads, mode):
    jobs, runner = run_jobs([*workloads, good(7)], "--mode", mode)
    assert all(j.outcome in ("fail", "complete") for j in jobs)  # every job answered, once
    assert jobs[-1].outcome == "complete" and runner.redis.failures == 0
    refused = sum(j.outcome == "fail" for j in jobs)
    assert count(runner, "refused") == refused
    for j in jobs:
        if j.outcome == "complete":
            change = parse(j.workload)  # what was written parses, is synced and in range
            assert change.table == TABLE and (change.version is None or 0 <= change.version <= time.time_ns() // 1000 + 400 * 10**6)


# ---- the pure pieces -------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(set(KILLERS) - {"a table not synced", "the system table", "odd table name",
                                                       "a version far in the future"}))
def test_parse_or_plan_refuses_with_a_payload_error(name):
    with pytest.raises(PayloadError):
        for mode in ("json", "hash"):
            plan.plan(parse(KILLERS[name]), plan.Options(mode=mode))


def test_admit():
    change = parse(good(1))
    plan.admit(change, None)
    plan.admit(change, {TABLE: None})
    plan.admit(change, {TABLE: frozenset({"id", "name"})}, NOW_US + 10)
    with pytest.raises(PlanError, match="not synced"):
        plan.admit(change, {"shop.other": None})
    with pytest.raises(PlanError, match="column 'name' is not synced"):
        plan.admit(change, {TABLE: frozenset({"id"})})
    with pytest.raises(PlanError, match="ahead of this worker's clock"):
        plan.admit(change, None, NOW_US)
    with pytest.raises(PlanError, match="a bare row"):
        plan.admit(parse(b'{"id": 1}'), {TABLE: None})


def test_admit_whole_rows_in_committed_mode():
    """Committed mode reads the columns a job names: a forged upsert naming fewer than the
    triggers send used to write a cut-down row ({"id": 1}) over the whole one."""
    synced = {TABLE: frozenset({"id", "name", "volume"})}
    whole = parse(json.dumps({"op": "upsert", "table": TABLE, "key": {"id": 1}, "v": 1,
                              "row": {"id": 1, "name": "a", "volume": 2}}).encode())
    plan.admit(whole, synced, whole=True)
    without_key = parse(json.dumps({"op": "upsert", "table": TABLE, "key": {"id": 1}, "v": 1,
                                    "row": {"name": "a", "volume": 2}}).encode())
    plan.admit(without_key, synced, whole=True)  # a trigger of --columns name,volume
    cut = parse(json.dumps({"op": "upsert", "table": TABLE, "key": {"id": 1}, "v": 1, "row": {"id": 1}}).encode())
    with pytest.raises(PlanError, match="the row misses synced column 'name'"):
        plan.admit(cut, synced, whole=True)
    plan.admit(cut, synced)  # payload mode: the job's image is the image anyway
    plan.admit(cut, {TABLE: None}, whole=True)  # --tables t: any of its columns
    delete = parse(json.dumps({"op": "delete", "table": TABLE, "key": {"id": 1}, "v": 1}).encode())
    plan.admit(delete, synced, whole=True)


def test_tables_from_args():
    assert worker_cli.tables_from_args("*") is None and worker_cli.tables_from_args(None) is None
    assert worker_cli.tables_from_args("a.b, c.d") == {"a.b": None, "c.d": None}
    for bad in ("*,a.b", ","):
        with pytest.raises(ValueError):
            worker_cli.tables_from_args(bad)


def test_payload_mode_needs_tables_or_mysql(capsys):
    assert cli.main(["worker", "--gearman", "127.0.0.1:1"]) == 2
    assert "--tables" in capsys.readouterr().err


def trigger_rows(t, function=triggers.DEFAULT_FUNCTION):
    """information_schema.TRIGGERS rows for the generated triggers of t."""
    rows = []
    for _, create in triggers.statements(t, function):
        name = create.split(" AFTER ")[0].rsplit(".", 1)[1].strip("`")
        rows.append((name, t.schema, t.name, create[create.index("BEGIN"):]))
    return rows


def test_synced_tables_from_the_generated_triggers():
    t = triggers.example_schema()
    cols = (schema.Column("id"), schema.Column("we`ird", "varchar", "latin1"))
    odd = schema.TableSchema("s", "x" * 70, cols[:1], cols, cols)  # a shortened trigger name
    rows = trigger_rows(t) + trigger_rows(odd) + [
        ("my_own_trigger", "shop", "mine", "BEGIN SET @x = gman_do_background('syncToRedis', '{}'); END"),
        ("gman_other_ai", "shop", "other", "BEGIN SET @x = 1; END")]  # named like ours, sends nothing
    assert triggers.synced_tables(rows) == {"shop.data": frozenset({"id", "volume", "name"}),
                                            f"s.{'x' * 70}": frozenset({"id", "we`ird"})}
    assert triggers.synced_tables(trigger_rows(t), "anotherFunction") == {}
    assert triggers.synced_tables(trigger_rows(t, "anotherFunction"), "anotherFunction") == {
        "shop.data": frozenset({"id", "volume", "name"})}


def test_default_tables_are_read_again_for_a_table_not_on_the_list():
    runner = worker.Runner(config_for("--mysql", "mysql://u@h/db", tables=None), FakeGearman([], []), FakeRedis(),
                           Stats(), FakeReader(tables={TABLE: frozenset({"id", "name"})}))
    runner._wait_for_tables()
    new = parse(good(table="shop.new"))
    with pytest.raises(PlanError, match="not synced"):
        runner._admit(new, NOW_US)  # just read: not again
    assert runner.reader.synced_reads == 1
    runner.reader.tables["shop.new"] = frozenset({"id", "name"})  # its triggers were created
    runner.tables_read -= worker.TABLES_REREAD + 1
    runner._admit(new, NOW_US)
    assert runner.reader.synced_reads == 2
    runner.reader.tables = None  # MySQL away: the list stays
    runner.tables_read -= worker.TABLES_REREAD + 1
    with pytest.raises(PlanError, match="not synced"):
        runner._admit(parse(good(table="shop.other")), NOW_US)
    runner._admit(new, NOW_US)


# ---- a job too big to take -------------------------------------------------------------------

def test_decoder_skips_an_oversize_job_and_hands_out_its_handle():
    from pygen.gearman.protocol import OVERSIZE, RES, Decoder, Type, encode
    big = encode(RES, Type.JOB_ASSIGN_UNIQ, b"H:x:1", b"fn", b"u", b"z" * 5000)
    after = encode(RES, Type.JOB_ASSIGN_UNIQ, b"H:x:2", b"fn", b"u", b"ok") + encode(RES, Type.NO_JOB)
    for step in (1, 7, 4096, len(big) + len(after)):  # however the bytes arrive
        d, out, wire = Decoder(RES, max_data=1024), [], big + after
        for i in range(0, len(wire), step):
            d.feed(wire[i:i + step])
            out += list(d)
        assert out == [(OVERSIZE, (b"H:x:1", Type.JOB_ASSIGN_UNIQ, len(big) - 12)),
                       (Type.JOB_ASSIGN_UNIQ, (b"H:x:2", b"fn", b"u", b"ok")), (Type.NO_JOB, ())], step
        assert d.buffered == 0
    d = Decoder(RES, max_data=1024)
    with pytest.raises(Exception, match="limit"):  # other packets over the limit: out of sync
        d.feed(encode(RES, Type.WORK_COMPLETE, b"H:x:1", b"z" * 2000)[:12])


def test_the_lag_of_each_written_job_with_a_stamp_is_observed():
    """The commit -> Redis lag histogram counts each job Redis acknowledged whose v is a
    gman_stamp(); a refused job, a bare row and a table's own version counter are not observed."""
    from pygen.sync.metrics import LAG_BUCKETS, totals
    now = time.time_ns() // 1000
    jobs, runner = run_jobs([good(1, v=now - 3 * 10**6), good(2, v=now - 20 * 10**6), KILLERS["deep nesting"],
                             b'{"id": 5, "x": 1}', good(3, v=42)], "--tables", "*")
    assert [j.outcome for j in jobs] == ["complete", "complete", "fail", "complete", "complete"]
    t = totals(runner.stats.array, 1)
    assert t["lag_count"] == 2
    seen = dict(zip(LAG_BUCKETS + (float("inf"),), t["lag_buckets"]))
    assert seen[5.0] == 1 and seen[30.0] == 1  # 3 s is in (2.5, 5]; 20 s in (10, 30]
    assert 23 <= t["lag_sum"] < 23 + 60  # the fakes take well under a minute
