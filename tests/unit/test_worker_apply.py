"""What the worker writes for a payload (pygen/sync/plan.py) and its pure helpers (the committed reads' SQL:
pygen/sync/committed_sql.py), with no server."""
import json

import pytest
from redis.crc import key_slot

from pygen.sync import committed_sql
from pygen.sync import plan as plan_mod
from pygen.sync.payload import Change, parse
from pygen.sync.plan import Options, PlanError, Write, plan
from pygen.sync.redis_writer import redis_target

V = 1732345678123456


def upsert(row, key=None, table="shop.data", v=V):
    return Change("upsert", table, key or {"id": row["id"]}, v, row)


def one(change, **opts):
    (w,) = plan(change, Options(**opts))
    return w


# ---- json mode -------------------------------------------------------------------------------

def test_upsert_json_default_key_and_version():
    w = one(upsert({"id": 7, "volume": 12.5, "name": "été", "note": None}))
    assert w == Write("set", "shop.data:7", "{shop.data:7}#v", V, 0,
                      ('{"id":7,"volume":12.5,"name":"été","note":null}'.encode(),))


def test_delete_is_del_with_tombstone_ttl():
    w = one(Change("delete", "shop.data", {"id": 7}, V), tombstone_ttl=60)
    assert (w.op, w.key, w.version, w.ttl_ms, w.values) == ("del", "shop.data:7", V, 60000, ())


def test_ttl_in_milliseconds():
    assert one(upsert({"id": 1}), ttl=2.5).ttl_ms == 2500
    assert one(upsert({"id": 1})).ttl_ms == 0


def test_json_keeps_binary_as_base64_object_and_nested_json():
    row = {"id": 1, "b": {"$base64": "/wA="}, "doc": {"a": [1, 2]}}
    (text,) = one(upsert(row)).values
    assert json.loads(text) == row


def test_fields_select_and_order():
    row = {"id": 1, "a": "x", "b": None, "c": 3}
    (text,) = one(upsert(row), fields=("c", "b", "missing")).values
    assert text == b'{"c":3,"b":null}'


def test_the_seeds_bare_row():
    change = parse(b'{"id": 42, "volume": 1.5}')
    w = one(change)
    assert (w.op, w.key, w.version) == ("set", "42", None)  # the seeds' SET <id> <json>, unguarded
    assert json.loads(w.values[0]) == {"id": 42, "volume": 1.5}
    assert one(change, key_template="data:{id}").key == "data:42"
    with pytest.raises(PlanError, match="table"):
        one(change, key_template="{table}:{key}")


def test_parsed_payload_round_trip():
    change = parse(b'{"op":"upsert","table":"s.t","key":{"a":1,"b":"x"},"v":5,"row":{"a":1,"b":"x","n":null}}')
    w = one(change)
    assert (w.key, w.version_key, w.version) == ("s.t:1:x", "{s.t:1:x}#v", 5)


# ---- hash mode -------------------------------------------------------------------------------

def test_hash_values_are_strings_nulls_absent_bytes_decoded():
    row = {"id": 3, "name": "ü", "price": 9.5, "big": 18446744073709551615, "none": None,
           "bin": {"$base64": "/wA="}, "doc": {"k": [1, "x"]}, "flag": True}
    w = one(upsert(row), mode="hash")
    assert w.op == "hash"
    fields = dict(zip(w.values[::2], w.values[1::2]))
    assert fields == {b"id": b"3", b"name": "ü".encode(), b"price": b"9.5", b"big": b"18446744073709551615",
                      b"bin": b"\xff\x00", b"doc": b'{"k":[1,"x"]}', b"flag": b"true"}


def test_hash_fields_and_all_null_row():
    w = one(upsert({"id": 3, "a": "x", "b": "y"}), mode="hash", fields=("b",))
    assert w.values == (b"b", b"y")
    assert one(upsert({"id": 3, "a": None}), mode="hash", fields=("a",)).values == ()


def test_hash_delete():
    w = one(Change("delete", "shop.data", {"id": 3}, V), mode="hash")
    assert (w.op, w.values) == ("del", ())


# ---- key templates ---------------------------------------------------------------------------

@pytest.mark.parametrize("template, key, expected", [
    ("data:{id}", {"id": 7}, "data:7"),
    ("{table}:{key}", {"shop": 1, "item": "x"}, "shop.data:1:x"),
    ("{table}/{item}/{shop}", {"shop": 1, "item": "x"}, "shop.data/x/1"),
    ("{key}", {"a": 1, "b": 2}, "1:2"),
    ("user:{{{id}}}", {"id": 7}, "user:{7}"),  # a literal hash tag
    ("k:{id}", {"id": {"$base64": "/wA="}}, "k:ff00"),  # bytes keys as hex
    ("k:{id}", {"id": 1.5}, "k:1.5"),
    ("k:{weird col}", {"weird col": "v"}, "k:v"),
])
def test_templates(template, key, expected):
    change = Change("delete", "shop.data", key, V)
    assert one(change, key_template=template).key == expected


def test_default_template_composite_and_binary_keys():
    assert one(Change("delete", "s.t", {"a": 1, "b": "x"}, V)).key == "s.t:1:x"
    assert one(Change("delete", "s.t", {"b": {"$base64": "/wA="}}, V)).key == "s.t:ff00"


def test_unknown_placeholder_is_a_plan_error():
    with pytest.raises(PlanError, match="not a key column"):
        one(upsert({"id": 1, "name": "x"}), key_template="x:{name}")


@pytest.mark.parametrize("template", ["x:{", "x:}", "x:{}", "{a{b}}"])
def test_bad_template_refused_at_start(template):
    with pytest.raises(ValueError):
        Options(key_template=template)


def test_options_validated():
    with pytest.raises(ValueError):
        Options(mode="list")
    with pytest.raises(ValueError):
        Options(ttl=0)
    with pytest.raises(ValueError):
        Options(tombstone_ttl=-1)


@pytest.mark.parametrize("key", ["shop.data:7", "{u7}:x", "a{b", "x{y}{z}", "plain", "a:{b}:c", "é"])
def test_version_key_shares_the_slot(key):
    vkey = plan_mod.version_key(key)
    assert vkey != key and vkey.endswith("#v")
    assert key_slot(vkey.encode()) == key_slot(key.encode())


@pytest.mark.parametrize("key", ["a}b", "x{}y", "{}", "x{}y{z}", "a}b{c", "}}{{", "é}"])
def test_version_key_stray_brace(key):
    # no hash tag, and a '}' that cannot go inside one: a tag of the key's slot goes in front
    # (it was key + '#v', in another slot: a cluster refused the script, the batch forever)
    vkey = plan_mod.version_key(key)
    assert vkey.startswith("{#v") and vkey.endswith("}" + key + "#v")
    assert key_slot(vkey.encode()) == key_slot(key.encode())


def test_version_key_slot_tags_cover_every_slot():
    tags = plan_mod._slot_tags()
    assert [key_slot(("{" + t + "}x").encode()) for t in tags] == list(range(16384))
    assert all("}" not in t for t in tags)


# ---- batches ---------------------------------------------------------------------------------

def w(key, version, tag=""):
    return Write("set", key, plan_mod.version_key(key), version, 0, (tag.encode(),))


def test_collapse_keeps_the_largest_version_per_key():
    batch = [w("a", 5, "a5"), w("b", 1), w("a", 9, "a9"), w("a", 7, "a7"), w("a", 9, "a9bis")]
    assert [x.values[0] for x in plan_mod.collapse(batch)] == [b"", b"a9bis"]


def test_collapse_unguarded_keeps_last_and_mixed_keeps_all():
    assert plan_mod.collapse([w("a", None, "1"), w("a", None, "2")]) == [w("a", None, "2")]
    mixed = [w("a", None, "1"), w("a", 3, "2"), w("a", None, "3")]
    assert plan_mod.collapse(mixed) == mixed


def test_script_args_layout():
    writes = [Write("set", "k1", "{k1}#v", 12, 500, (b"{}",)),
              Write("hash", "k2", "{k2}#v", None, 0, (b"f", b"v", b"g", b"w")),
              Write("del", "k3", "{k3}#v", 99999999999999999999, 86400000)]
    keys, args = plan_mod.script_args(writes)
    assert keys == ["k1", "{k1}#v", "k2", "{k2}#v", "k3", "{k3}#v"]
    assert args == [b"s", b"12", b"500", b"1", b"{}",
                    b"h", b"", b"0", b"4", b"f", b"v", b"g", b"w",
                    b"d", b"99999999999999999999", b"86400000", b"0"]
    with pytest.raises(PlanError):
        plan_mod.script_args([Write("del", "k", "{k}#v", -1, 0)])


def test_lag_only_for_microsecond_stamps():
    assert plan_mod.lag_us(V, V + 1500) == 1500
    assert plan_mod.lag_us(None, V) is None
    assert plan_mod.lag_us(42, V) is None  # a table's own version counter


# ---- committed mode --------------------------------------------------------------------------

def test_read_statement_quotes_identifiers():
    sql, names = committed_sql.read_statement("my`db.t%1", ["id", "we`ird"], ["id", "val"], 2)
    assert sql == ("SELECT udf_json_members(%s, `id`, %s, `we``ird`), udf_json_members(%s, `id`, %s, `val`) "
                   "FROM `my``db`.`t%%1` WHERE (`id`, `we``ird`) IN ((%s, %s), (%s, %s))")
    assert names == ["id", "we`ird", "id", "val"]
    sql, names = committed_sql.read_statement("t", ["id"], [], 1, "udf_json_members")
    assert sql == "SELECT udf_json_members(%s, `id`) FROM `t` WHERE (`id`) IN ((%s))"  # a delete reads its key
    assert names == ["id"]
    sql, names = committed_sql.read_statement("t", ["id"], ["val", "id"], 1)  # the key is read from the row
    assert sql == "SELECT udf_json_members(%s, `val`, %s, `id`) FROM `t` WHERE (`id`) IN ((%s))"
    assert names == ["val", "id"]


def test_key_matching_and_params():
    key = {"id": 1, "b": {"$base64": "/wA="}}
    assert committed_sql.key_params(key, ["id", "b"]) == [1, b"\xff\x00"]
    assert committed_sql.key_id(key, ["id", "b"]) == committed_sql.key_id(json.loads(json.dumps(key)), ["id", "b"])
    assert committed_sql.key_id({"id": 1}, ["id"]) != committed_sql.key_id({"id": "1"}, ["id"])


def test_lock_statement_by_server():
    sql = committed_sql.lock_statement("s.t", ["a", "b"], "10.11.6-MariaDB-0+deb12u1")
    assert sql == "SELECT 1 FROM `s`.`t` WHERE (`a`, `b`) = (%s, %s) LOCK IN SHARE MODE NOWAIT"
    assert committed_sql.lock_statement("s.t", ["a"], "8.0.36").endswith("FOR SHARE NOWAIT")
    assert committed_sql.lock_statement("s.t", ["a"], "5.7.44") is None
    assert committed_sql.lock_statement("s.t", ["a"], "10.2.44-MariaDB") is None
    sql = committed_sql.lock_statement("s.t", ["a"], "10.11.6-MariaDB", ["a", "v"], convert={"v"})
    assert sql == ("SELECT udf_json_members(%s, `a`, %s, CONVERT(`v` USING utf8mb4)), gman_stamp() FROM `s`.`t` "
                   "WHERE (`a`) = (%s) LOCK IN SHARE MODE NOWAIT")


def test_waiting_lock_statement_by_server():
    """The waiters' read waits for the lock (innodb_lock_wait_timeout bounds it): every server."""
    for version in ("10.11.6-MariaDB-0+deb12u1", "10.2.44-MariaDB", "5.7.44"):
        assert committed_sql.lock_statement("s.t", ["a"], version, wait=True) == \
            "SELECT 1 FROM `s`.`t` WHERE (`a`) = (%s) LOCK IN SHARE MODE"
    assert committed_sql.lock_statement("s.t", ["a"], "8.0.36", ["a"], wait=True) == \
        "SELECT udf_json_members(%s, `a`), gman_stamp() FROM `s`.`t` WHERE (`a`) = (%s) FOR SHARE"


# ---- command-line helpers (pygen/sync/worker.py, pure) ---------------------------------------------

@pytest.mark.parametrize("url, flag, expected", [
    ("redis://h:6379/0", False, (False, "redis://h:6379/0")),
    ("rediss://u:p@h:6380/2", False, (False, "rediss://u:p@h:6380/2")),
    ("unix:///tmp/r.sock?db=1", False, (False, "unix:///tmp/r.sock?db=1")),
    ("redis+cluster://h:7000", False, (True, "redis://h:7000")),
    ("rediss+cluster://u:p@h:7000", False, (True, "rediss://u:p@h:7000")),
    ("redis://h:7000", True, (True, "redis://h:7000")),
])
def test_redis_target(url, flag, expected):
    assert redis_target(url, flag) == expected


@pytest.mark.parametrize("url, flag", [("h:6379", False), ("http://h", False), ("unix:///s", True)])
def test_redis_target_refused(url, flag):
    with pytest.raises(ValueError):
        redis_target(url, flag)


def test_redis_urls_parse_in_redis_py():
    import redis
    pool = redis.ConnectionPool.from_url("rediss://us%3Aer:p%40ss@cache.example:6380/3")
    kw = pool.connection_kwargs
    assert (kw["host"], kw["port"], kw["db"], kw["username"], kw["password"]) == ("cache.example", 6380, 3, "us:er", "p@ss")
    assert pool.connection_class is redis.SSLConnection
