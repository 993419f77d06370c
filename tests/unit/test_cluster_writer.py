"""pygen/sync/cluster_writer.py without a server: slot grouping and the RESP it sends."""
import pytest
from redis.connection import Connection
from redis.crc import key_slot

from pygen.sync import plan
from pygen.sync.cluster_writer import _command, pack, slot_groups
from pygen.sync.payload import Change


def upsert(key, version=5, **row):
    return plan.plan(Change("upsert", "s.t", {"id": key}, version, {"id": key, **row}))


def test_writes_grouped_by_slot_in_batch_order():
    writes = [w for k in range(300) for w in upsert(k)] + upsert(7, 6, x="again")
    writes += [plan.Write("set", "user:{u1}:a", plan.version_key("user:{u1}:a"), 1, 0, (b"1",)),
               plan.Write("set", "user:{u1}:b", plan.version_key("user:{u1}:b"), 1, 0, (b"2",))]
    groups = slot_groups(writes)
    assert sorted(w for ws in groups.values() for w in ws) == sorted(writes)
    for slot, ws in groups.items():
        assert {key_slot(k.encode()) for w in ws for k in (w.key, w.version_key)} == {slot}
    assert [w.version for w in groups[key_slot(b"s.t:7")] if w.key == "s.t:7"] == [5, 6]  # order kept
    assert [w.key for w in groups[key_slot(b"u1")]] == ["user:{u1}:a", "user:{u1}:b"]  # one tag, one call


def test_a_stray_brace_key_shares_its_slot_and_a_foreign_version_key_is_refused():
    (w,) = upsert("a}b")
    assert list(slot_groups([w])) == [key_slot(w.key.encode())]
    with pytest.raises(plan.PlanError):
        slot_groups([w._replace(version_key=w.key + "#v")])


def test_pack_is_what_redis_py_packs():
    calls = [upsert(1, name="é\x00\r\n") + upsert(2), plan.plan(Change("delete", "s.t", {"id": 3}, 9, None)),
             [plan.Write("hash", "h", "{h}#v", None, 0, (b"f", b"", b"g", b"\xff"))]]
    conn = Connection()
    assert pack(calls) == b"".join(conn.pack_commands([_command(ws) for ws in calls]))
