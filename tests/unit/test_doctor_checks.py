"""pygen/ops/doctor_checks.py without servers: parsing, and the verdicts of the gearmand checks on
given admin replies (a deep queue with the default hash table warns)."""
import pytest

from pygen.ops import doctor, doctor_checks as dc


def test_parse_status_and_config():
    assert dc.parse_status("syncToRedis\t5\t1\t2\nodd name\twith tab\t0\t0\t0\n") == {
        "syncToRedis": (5, 1, 2), "odd name\twith tab": (0, 0, 0)}
    assert dc.parse_config("# c\n; c\n[client]\nservers = a:1, b\nLOCK=1\nnoequals\n") == {
        "servers": "a:1, b", "lock": "1"}


def test_table_columns_and_addresses():
    assert dc.split_table_columns("db.t") == ("db.t", None)
    assert dc.split_table_columns("db.t:a, b") == ("db.t", ["a", "b"])
    assert dc.split_table_columns("`d:b`.`t`") == ("`d:b`.`t`", None)
    assert dc.split_address("10.0.0.5") == ("10.0.0.5", 4730)
    assert dc.split_address("[::1]:4731") == ("::1", 4731)


def test_redis_password_is_not_printed():
    assert doctor._redacted("redis://:secret@h:6379/0") == "redis://:***@h:6379/0"
    assert doctor._redacted("redis://u:secret@h/0") == "redis://u:***@h/0"
    assert doctor._redacted("redis://h:6379/0") == "redis://h:6379/0"


@pytest.mark.parametrize("queued, buckets, status", [
    (150_000, dc.DEFAULT_BUCKETS, dc.WARN),   # the five-fold slowdown
    (150_000, None, dc.WARN),                 # cannot tell: say so
    (150_000, 100003, dc.OK),
    (1_000_000, 2003, dc.WARN),               # sized, but not for this depth
    (99_000, dc.DEFAULT_BUCKETS, dc.OK),
])
def test_hash_table_verdict(monkeypatch, queued, buckets, status):
    monkeypatch.setattr(dc, "admin", lambda address, command, timeout=3.0: f"syncToRedis\t{queued}\t0\t1")
    monkeypatch.setattr(dc, "hashtable_buckets", lambda address: buckets)
    gearmand, table, workers = dc.check_gearmand("g:4730", "syncToRedis")
    assert (gearmand.status, table.status, workers.status) == (dc.OK, status, dc.OK)
    if status == dc.WARN:
        assert "gman-udf systemd --gearmand" in table.fix


def test_unknown_function_means_no_worker(monkeypatch):
    monkeypatch.setattr(dc, "admin", lambda address, command, timeout=3.0: "other\t0\t0\t3")
    monkeypatch.setattr(dc, "hashtable_buckets", lambda address: None)
    checks = dc.check_gearmand("g:4730", "syncToRedis")
    assert [c.status for c in checks] == [dc.OK, dc.OK, dc.FAIL]


def test_config_lock_from_mysqld_environment(tmp_path):
    (tmp_path / "gman_udf.cnf").write_text("servers = a:1\nlock = 0\n")
    check, servers = dc.check_config(str(tmp_path), True, {"GMAN_UDF_LOCK": "1"})
    assert check.status == dc.OK and servers == ["a:1"]
    check, servers = dc.check_config(str(tmp_path / "none"), True, {"GMAN_UDF_SERVERS": "b:2", "GMAN_UDF_LOCK": "1"})
    assert check.status == dc.OK and servers == ["b:2"] and "environment" in check.detail
    check, _ = dc.check_config(str(tmp_path / "none"), True, {})
    assert check.status == dc.WARN and "no " in check.detail


def test_config_route_of_the_function(tmp_path):
    (tmp_path / "gman_udf.cnf").write_text("servers = a:1\nservers.syncToRedis = c:3, d:4\nlock = 1\n")
    assert dc.check_config(str(tmp_path), True, None, "syncToRedis")[1] == ["c:3", "d:4"]
    assert dc.check_config(str(tmp_path), True, None, "other")[1] == ["a:1"]
