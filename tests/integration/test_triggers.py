"""`gman-udf trigger` against the session MariaDB: the generated triggers queue the payloads of
pygen/sync/payload.py into a real gearmand.

Each test has its own Gearman function name, routed to its gearmand with
gman_servers_set(servers, function), so tests never see each other's jobs nor change the
server's default route. The jobs are taken back with pygen.gearman.worker.Worker.grab.
"""
import subprocess
import uuid

import MySQLdb
import pytest

from pygen.gearman.worker import Worker
from pygen import cli
from pygen.sandbox import free_port
from pygen.sync.payload import Number, parse

from tests.support.servers import database_fixtures

DB = "gman_trig"


server, gearmand, cur = database_fixtures(DB)  # the module's database and its own gearmand


def trigger_cli(server, *args):
    """`gman-udf trigger ...` in-process; returns (exit code, stdout, stderr)."""
    return cli.main(["trigger", *args, "-S", server.socket, "-u", "root", "-D", DB])


def route(cur, address, tag="trig"):
    """A fresh function name whose jobs go to `address`."""
    fn = f"{tag}_{uuid.uuid4().hex[:10]}"
    cur.execute("SELECT gman_servers_set(%s, %s)", (address, fn))
    return fn


def drain(address, fn, expect=None, timeout=5.0):
    """Every queued job of fn, in queue order, parsed (and completed)."""
    jobs = []
    with Worker([address], {fn: None}) as w:
        while True:
            got = w.grab(100, 0.3 if expect is None or len(jobs) >= expect else timeout)
            if not got:
                break
            jobs += got
        w.complete_many(jobs)
    return [parse(j.workload) for j in jobs]


def summary(changes):
    """(op, key, row) with exact numbers (DECIMAL text, pygen.sync.payload.Number) compared by value."""
    def value(v):
        return float(v) if isinstance(v, Number) else v
    return [(c.op, c.key, c.row and {k: value(v) for k, v in c.row.items()}) for c in changes]


def test_insert_update_delete_queue_one_job_per_changed_row(server, cur, gearmand, capsys):
    cur.execute("CREATE OR REPLACE TABLE items (id INT PRIMARY KEY, volume DECIMAL(20,4), name VARCHAR(100))")
    fn = route(cur, gearmand.address)
    assert trigger_cli(server, "--table", "items", "--function", fn, "--apply") == 0
    out = capsys.readouterr().out
    assert out.split() == ["created", "trigger", f"`{DB}`.`gman_items_ai`", "created", "trigger",
                           f"`{DB}`.`gman_items_au`", "created", "trigger", f"`{DB}`.`gman_items_ad`"]
    cur.execute("SELECT TRIGGER_NAME, ACTION_TIMING, EVENT_MANIPULATION FROM information_schema.TRIGGERS "
                "WHERE EVENT_OBJECT_SCHEMA = %s AND EVENT_OBJECT_TABLE = 'items' ORDER BY TRIGGER_NAME", (DB,))
    assert cur.fetchall() == (("gman_items_ad", "AFTER", "DELETE"), ("gman_items_ai", "AFTER", "INSERT"),
                              ("gman_items_au", "AFTER", "UPDATE"))

    cur.execute("INSERT INTO items VALUES (1, 1.5, 'abc'), (2, NULL, 'b'), (3, 3, NULL)")
    got = drain(gearmand.address, fn, 3)
    assert summary(got) == [("upsert", {"id": 1}, {"id": 1, "volume": 1.5, "name": "abc"}),
                            ("upsert", {"id": 2}, {"id": 2, "volume": None, "name": "b"}),
                            ("upsert", {"id": 3}, {"id": 3, "volume": 3, "name": None})]
    assert all(c.table == f"{DB}.items" for c in got)

    # UPDATEs that change nothing queue nothing: same values, NULL to NULL, 1.5 to 1.50
    cur.execute("UPDATE items SET volume = volume, name = name")
    cur.execute("UPDATE items SET volume = NULL WHERE id = 2")
    cur.execute("UPDATE items SET volume = 1.50 WHERE id = 1")
    assert cur.rowcount == 0
    cur.execute("UPDATE items SET name = CONCAT(name, '') WHERE id <= 3")
    assert gearmand.status().get(fn, (0,))[0] == 0
    assert drain(gearmand.address, fn) == []

    # a change only a byte comparison sees (the collation calls 'abc' = 'ABC'): queued
    cur.execute("UPDATE items SET name = 'ABC' WHERE id = 1")
    cur.execute("UPDATE items SET volume = volume + 1 WHERE id IN (2, 3)")  # NULL + 1 stays NULL: one row
    cur.execute("UPDATE items SET name = 'x' WHERE id = 3")
    assert gearmand.status()[fn][0] == 3
    assert summary(drain(gearmand.address, fn, 3)) == [
        ("upsert", {"id": 1}, {"id": 1, "volume": 1.5, "name": "ABC"}),
        ("upsert", {"id": 3}, {"id": 3, "volume": 4, "name": None}),
        ("upsert", {"id": 3}, {"id": 3, "volume": 4, "name": "x"})]

    # a key change: delete of the old key, then the upsert of the new one
    cur.execute("UPDATE items SET id = 30 WHERE id = 3")
    cur.execute("DELETE FROM items WHERE id = 2")
    got = drain(gearmand.address, fn, 3)
    assert summary(got) == [("delete", {"id": 3}, None),
                            ("upsert", {"id": 30}, {"id": 30, "volume": 4, "name": "x"}),
                            ("delete", {"id": 2}, None)]
    versions = [c.version for c in got]
    assert all(isinstance(v, int) and v > 10**15 for v in versions) and versions == sorted(set(versions))


def test_composite_key_weird_names_latin1_and_bytes(server, cur, gearmand):
    cur.execute("CREATE OR REPLACE TABLE `we``ird t` (`shop id` INT, `sku` VARCHAR(20) CHARACTER SET latin1, "
                "`a+b` INT, `1st` VARCHAR(10), `bin` VARBINARY(8), `doc` BLOB, `n` DOUBLE, "
                "PRIMARY KEY (`shop id`, `sku`))")
    fn = route(cur, gearmand.address)
    assert trigger_cli(server, "--table", f"{DB}.`we``ird t`", "--function", fn, "--apply") == 0
    cur.execute("INSERT INTO `we``ird t` VALUES (1, 'café', 2, 'un', X'FF00', 'ok', 0.1), "
                "(1, 'tea', NULL, NULL, NULL, NULL, NULL)")
    got = drain(gearmand.address, fn, 2)
    assert [c.table for c in got] == [f"{DB}.we`ird t"] * 2
    assert got[0].key == {"shop id": 1, "sku": "café"}  # latin1 arrives as text, not bytes
    assert got[0].row == {"shop id": 1, "sku": "café", "a+b": 2, "1st": "un", "bin": {"$base64": "/wA="},
                          "doc": "ok", "n": 0.1}
    assert got[1].row == {"shop id": 1, "sku": "tea", "a+b": None, "1st": None, "bin": None, "doc": None, "n": None}
    cur.execute("UPDATE `we``ird t` SET `bin` = X'FF00', `a+b` = 2")  # row 1 unchanged, row 2 changes
    cur.execute("UPDATE `we``ird t` SET sku = 'CAFÉ' WHERE sku = 'café'")  # a key change by case only
    assert summary(drain(gearmand.address, fn, 3)) == [
        ("upsert", {"shop id": 1, "sku": "tea"},
         {"shop id": 1, "sku": "tea", "a+b": 2, "1st": None, "bin": {"$base64": "/wA="}, "doc": None, "n": None}),
        ("delete", {"shop id": 1, "sku": "café"}, None),
        ("upsert", {"shop id": 1, "sku": "CAFÉ"}, {"shop id": 1, "sku": "CAFÉ", "a+b": 2, "1st": "un",
                                                   "bin": {"$base64": "/wA="}, "doc": "ok", "n": 0.1})]


def test_columns_and_key_options(server, cur, gearmand):
    cur.execute("CREATE OR REPLACE TABLE nopk (code VARCHAR(10) NOT NULL, qty INT, note TEXT)")
    fn = route(cur, gearmand.address)
    assert trigger_cli(server, "--table", "nopk", "--key", "CODE", "--columns", "qty", "--function", fn,
                       "--apply") == 0
    cur.execute("INSERT INTO nopk VALUES ('a', 1, 'n')")
    cur.execute("UPDATE nopk SET note = 'changed'")  # not a synced column: nothing
    cur.execute("UPDATE nopk SET qty = 2")
    assert summary(drain(gearmand.address, fn, 2)) == [("upsert", {"code": "a"}, {"qty": 1}),
                                                       ("upsert", {"code": "a"}, {"qty": 2})]


def test_strict_trigger_fails_the_statement_when_gearmand_is_down(server, cur, fresh_gearmand):
    gm = fresh_gearmand()
    cur.execute("CREATE OR REPLACE TABLE strict_t (id INT PRIMARY KEY, v INT)")
    cur.execute("CREATE OR REPLACE TABLE loose_t (id INT PRIMARY KEY, v INT)")
    fn = route(cur, gm.address)
    assert trigger_cli(server, "--table", "strict_t", "--function", fn, "--strict", "--apply") == 0
    assert trigger_cli(server, "--table", "loose_t", "--function", fn, "--apply") == 0
    cur.execute("INSERT INTO strict_t VALUES (1, 1)")  # gearmand up: fine
    assert gm.status()[fn][0] == 1
    gm.stop()
    with pytest.raises(MySQLdb.OperationalError) as err:
        cur.execute("INSERT INTO strict_t VALUES (2, 2), (3, 3)")
    assert err.value.args[0] == 1644 and "gman_do_background" in err.value.args[1]
    with pytest.raises(MySQLdb.OperationalError):
        cur.execute("UPDATE strict_t SET v = 10 WHERE id = 1")
    # inside a transaction: the failing statement is undone, the earlier ones stay undecided
    cur.execute("BEGIN")
    cur.execute("INSERT INTO loose_t VALUES (1, 1)")  # non-strict: the change is lost, the row stays
    with pytest.raises(MySQLdb.OperationalError):
        cur.execute("DELETE FROM strict_t")
    cur.execute("COMMIT")
    cur.execute("SELECT id, v FROM strict_t")
    assert cur.fetchall() == ((1, 1),)
    cur.execute("SELECT gman_last_error()")
    assert "gman_do_background" in cur.fetchone()[0].decode()
    cur.execute("SELECT COUNT(*) FROM loose_t")
    assert cur.fetchone()[0] == 1


def test_strict_message_is_cut_to_128_characters(server, cur):
    cur.execute("CREATE OR REPLACE TABLE strict_long (id INT PRIMARY KEY)")
    fn = route(cur, f"127.0.0.1:{free_port()}," * 3 + f"127.0.0.1:{free_port()}", tag="x" * 40)
    assert trigger_cli(server, "--table", "strict_long", "--function", fn, "--strict", "--apply") == 0
    with pytest.raises(MySQLdb.OperationalError) as err:
        cur.execute("INSERT INTO strict_long VALUES (1)")
    assert err.value.args[0] == 1644 and len(err.value.args[1]) == 128  # the whole reason is longer


def test_printed_script_runs_in_the_mysql_client(server, cur, gearmand, capsys):
    cur.execute("CREATE OR REPLACE TABLE printed (id INT PRIMARY KEY, `$$` INT)")  # the default delimiter
    fn = route(cur, gearmand.address)
    for strict in ((), ("--strict",)):
        assert trigger_cli(server, "--table", "printed", "--function", fn, *strict) == 0
        script = capsys.readouterr().out
        assert "DELIMITER //" in script
        proc = subprocess.run(["mariadb", "-S", server.socket, "-u", "root", DB], input=script,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
    cur.execute("INSERT INTO printed VALUES (1, 2)")
    assert summary(drain(gearmand.address, fn, 1)) == [("upsert", {"id": 1}, {"id": 1, "$$": 2})]


def test_apply_twice_replaces(server, cur, gearmand):
    cur.execute("CREATE OR REPLACE TABLE twice (id INT PRIMARY KEY, v INT)")
    fn = route(cur, gearmand.address)
    assert trigger_cli(server, "--table", "twice", "--function", "first", "--apply") == 0
    assert trigger_cli(server, "--table", "twice", "--function", fn, "--apply") == 0
    cur.execute("INSERT INTO twice VALUES (1, 1)")
    assert len(drain(gearmand.address, fn, 1)) == 1


@pytest.mark.parametrize("args, message", [
    (("--table", "no_such_table"), f"table {DB}.no_such_table does not exist"),
    (("--table", "errs", "--key", "nope"), "has no column 'nope' (--key)"),
    (("--table", "errs", "--columns", "v,missing"), "has no column 'missing' (--columns)"),
    (("--table", "errs"), "has no primary key: name the key columns with --key"),
    (("--table", "errs_view", "--key", "v"), "is a view, not a table"),
])
def test_wrong_names_give_a_clear_error(server, cur, capsys, args, message):
    cur.execute("CREATE OR REPLACE TABLE errs (v INT)")
    cur.execute("CREATE OR REPLACE VIEW errs_view AS SELECT v FROM errs")
    assert trigger_cli(server, *args) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and message in captured.err and "Traceback" not in captured.err
    assert captured.err.startswith("gman-udf trigger: ")


def test_bad_login_gives_a_clear_error(server, capsys):
    assert cli.main(["trigger", "--table", "x", "-S", server.socket, "-u", "nobody_here", "-D", DB]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gman-udf trigger: ") and "denied" in err
