"""Trigger SQL rendering (pygen/sync/triggers.py) and verify's pure parts (pygen/sync/verify.py): no server."""
import io
import re
from pathlib import Path

import pytest

from pygen.sync import compare, schema, triggers, verify
from pygen.sync.schema import Column, SchemaError, TableSchema

ROOT = Path(__file__).resolve().parents[2]

ID = Column("id", "int")
VOLUME = Column("volume", "decimal")
NAME = Column("name", "varchar", "utf8mb4")


def table(key=(ID,), columns=(ID, VOLUME, NAME), schema="shop", name="data"):
    return TableSchema(schema, name, tuple(key), tuple(columns), tuple(columns))


def body(sql, suffix):
    """The CREATE TRIGGER statement for one event, from the statement list."""
    for _drop, create in triggers.statements(sql) if isinstance(sql, TableSchema) else sql:
        if f"_{suffix}` AFTER" in create:
            return create
    raise AssertionError(f"no trigger _{suffix}")


# ---- quoting -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, quoted", [
    ("id", "`id`"), ("a`b", "`a``b`"), ("``", "``````"), ("sp ace", "`sp ace`"), ("é", "`é`"),
    ("x'); DROP TABLE t; --", "`x'); DROP TABLE t; --`"),
])
def test_quote_ident_doubles_backticks(name, quoted):
    assert schema.quote_ident(name) == quoted


@pytest.mark.parametrize("bad", ["", "a\0b"])
def test_quote_ident_refuses_what_no_server_allows(bad):
    with pytest.raises(SchemaError):
        schema.quote_ident(bad)


@pytest.mark.parametrize("text, literal", [
    ("syncToRedis", "'syncToRedis'"),
    ("it's", "'it''s'"),
    ("a\\b", "_utf8mb4 X'615C62'"),     # a backslash means different things per sql_mode: hex
    ("tab\there", "_utf8mb4 X'" + "tab\there".encode().hex().upper() + "'"),
    ("é", "_utf8mb4 X'C3A9'"),          # not ASCII: independent of the client charset
])
def test_sql_string(text, literal):
    assert triggers.sql_string(text) == literal


@pytest.mark.parametrize("name, ok", [
    ("id", True), ("a`b", True), ("json_x", True), ("Ünïcode", True), ("a b", True),
    ("a+b", False), ("f(x)", False), ("1st", False), ("a.b", False), ("null", False), ("TRUE", False),
    ("'q", False), ("@v", False), ("-x", False), ("a,b", False),
])
def test_aliasable_mirrors_json_udf_key(name, ok):
    assert triggers.aliasable(name) is ok


# ---- the payload expression --------------------------------------------------------------------

def test_example_renders_the_payload_contract():
    ai = body(table(), "ai")
    assert ai.startswith("CREATE TRIGGER `shop`.`gman_data_ai` AFTER INSERT ON `shop`.`data` FOR EACH ROW\nBEGIN\n")
    assert "'op', 'upsert', 'table', 'shop.data'" in ai
    assert "'key', udf_json_object(NEW.`id` AS `id`) AS json_key" in ai
    assert "'v', gman_stamp()" in ai
    assert "'row', udf_json_object(NEW.`id` AS `id`, NEW.`volume` AS `volume`, NEW.`name` AS `name`) AS json_row" in ai
    ad = body(table(), "ad")
    assert "'op', 'delete'" in ad and "OLD.`id` AS `id`" in ad and "'row'" not in ad and "NEW." not in ad


def call_args(sql, name):
    """The top-level arguments of every call of `name` in sql (quotes and backticks respected)."""
    calls = []
    for m in re.finditer(re.escape(name) + r"\(", sql):
        depth, args, buf, quote, i = 1, [], "", None, m.end()
        while depth:
            c = sql[i]
            if quote:
                quote = None if c == quote else quote
            elif c in "'`":
                quote = c
            elif c == "(":
                depth += 1
            elif c == ")":
                depth -= 1
            elif c == "," and depth == 1:
                args.append(buf.strip())
                buf = ""
                i += 1
                continue
            if depth:
                buf += c
            i += 1
        calls.append(args + [buf.strip()])
    return calls


def test_no_unique_id_is_sent():
    """gman_do_background(function, payload): no third argument, the plugin picks a random unique id."""
    for strict in (False, True):
        calls = call_args(triggers.render(table(), strict=strict), "gman_do_background")
        assert len(calls) == 4  # ai, au (delete + upsert), ad
        for args in calls:
            assert len(args) == 2 and args[0] == "'syncToRedis'" and args[1].startswith("udf_json_members(")
            members = call_args(args[1], "udf_json_members")[0]
            assert members[0::2] in (["'op'", "'table'", "'key'", "'v'", "'row'"], ["'op'", "'table'", "'key'", "'v'"])


def test_composite_key():
    t = table(key=(Column("shop_id"), Column("sku", "varchar", "utf8mb4")),
              columns=(Column("shop_id"), Column("sku", "varchar", "utf8mb4"), Column("qty")))
    ai = body(t, "ai")
    assert "udf_json_object(NEW.`shop_id` AS `shop_id`, NEW.`sku` AS `sku`) AS json_key" in ai
    au = body(t, "au")
    key_guard = "NEW.`shop_id` <=> OLD.`shop_id` AND CAST(NEW.`sku` AS BINARY) <=> CAST(OLD.`sku` AS BINARY)"
    assert f"IF NOT ({key_guard}) THEN" in au
    assert "udf_json_object(OLD.`shop_id` AS `shop_id`, OLD.`sku` AS `sku`) AS json_key" in au


def test_weird_identifiers_are_quoted_everywhere():
    t = table(schema="my`db", name="t`x", key=(Column("a`b"),), columns=(Column("a`b"), Column("c d", "text", "utf8mb4")))
    sql = triggers.render(t)
    assert "CREATE TRIGGER `my``db`.`gman_t``x_ai` AFTER INSERT ON `my``db`.`t``x`" in sql
    assert "NEW.`a``b` AS `a``b`" in sql and "NEW.`c d` AS `c d`" in sql
    assert "'table', 'my`db.t`x'" in sql
    # every backtick is part of a balanced quoted identifier
    stripped = re.sub(r"`(?:[^`]|``)*`", "", sql.replace("-- generated by `gman-udf trigger`", ""))
    assert "`" not in stripped


def test_names_json_object_cannot_alias_use_json_members():
    t = table(key=(Column("1st"),), columns=(Column("1st"), Column("a+b"), Column("ok")))
    ai = body(t, "ai")
    assert "'key', udf_json_members('1st', NEW.`1st`) AS json_key" in ai
    assert "'row', udf_json_members('1st', NEW.`1st`, 'a+b', NEW.`a+b`, 'ok', NEW.`ok`) AS json_row" in ai


def test_one_row_renderer_for_triggers_and_committed_reads():
    """json_expr: the trigger's form (aliases, or literal names) and the committed reads' (%s names)
    render the same value of each column."""
    assert triggers.json_expr(["a", "b"], {"b"}, "NEW") == \
        "udf_json_object(NEW.`a` AS `a`, CONVERT(NEW.`b` USING utf8mb4) AS `b`)"
    assert triggers.json_expr(["1st", "b"], {"b"}) == "udf_json_members('1st', `1st`, 'b', CONVERT(`b` USING utf8mb4))"
    assert triggers.json_expr(["1st", "b"], {"b"}, function="json_members") == \
        "json_members(%s, `1st`, %s, CONVERT(`b` USING utf8mb4))"
    assert triggers.json_expr(["a"], alias="j") == "udf_json_object(`a` AS `a`) AS j"
    cols = (Column("a"), Column("b", "varchar", "latin1"))
    assert triggers.object_expr(cols, "OLD") == triggers.json_expr(["a", "b"], {"b"}, "OLD")


def test_quote_in_table_name_is_an_escaped_literal():
    ai = body(table(name="it's"), "ai")
    assert "'table', 'shop.it''s'" in ai
    ai = body(table(name="back\\slash"), "ai")
    assert "'table', _utf8mb4 X'" + "shop.back\\slash".encode().hex().upper() + "'" in ai


def test_strict_and_non_strict():
    loose = triggers.render(table())
    assert loose.count("SET @gman_r = gman_do_background(") == 4
    assert "SIGNAL" not in loose and "DECLARE" not in loose
    strict = triggers.render(table(), strict=True)
    assert "@gman_r" not in strict
    assert strict.count("IF gman_do_background(") == 4 and strict.count(") IS NULL THEN") == 4
    assert strict.count("SET gman_err = LEFT(gman_last_error(), 128);") == 4
    assert strict.count("SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = gman_err;") == 4
    assert strict.count("DECLARE gman_err VARCHAR(128) CHARACTER SET utf8mb4") == 3  # one per trigger body


def test_function_name_is_a_literal():
    sql = triggers.render(table(), function="sync'It")
    assert "gman_do_background('sync''It', " in sql
    with pytest.raises(SchemaError):
        triggers.render(table(), function="")


def test_column_selection_and_key_guard():
    t = table(columns=(NAME,))  # the key column is not synced: still in "key", still guarded
    ai = body(t, "ai")
    assert "'row', udf_json_object(NEW.`name` AS `name`) AS json_row" in ai
    assert "volume" not in triggers.render(t)
    au = body(t, "au")
    assert "IF NOT (CAST(NEW.`name` AS BINARY) <=> CAST(OLD.`name` AS BINARY) AND NEW.`id` <=> OLD.`id`) THEN" in au


def test_update_guard_is_null_safe_for_every_synced_column():
    au = body(table(), "au")
    guard = re.findall(r"IF NOT \((.*)\) THEN", au)
    assert guard[0] == "NEW.`id` <=> OLD.`id`"  # the key: delete the old key first
    parts = guard[1].split(" AND ")
    assert parts == ["NEW.`id` <=> OLD.`id`", "NEW.`volume` <=> OLD.`volume`",
                     "CAST(NEW.`name` AS BINARY) <=> CAST(OLD.`name` AS BINARY)"]
    assert " = OLD" not in au and "!=" not in au and "<>" not in au
    # delete of the old key before the upsert of the new one
    assert au.index("'op', 'delete'") < au.index("'op', 'upsert'")
    assert "OLD.`id` AS `id`) AS json_key" in au.split("'op', 'upsert'")[0]


def test_latin1_text_is_converted_binary_is_not():
    cols = (ID, Column("l1", "varchar", "latin1"), Column("e", "enum", "cp1251"), Column("u", "text", "utf8mb3"),
            Column("a", "char", "ascii"), Column("b", "blob", None), Column("vb", "varbinary", "binary"))
    t = table(key=(ID, cols[1]), columns=cols)
    ai = body(t, "ai")
    assert "CONVERT(NEW.`l1` USING utf8mb4) AS `l1`" in ai
    assert "CONVERT(NEW.`e` USING utf8mb4) AS `e`" in ai
    for plain in ("u", "a", "b", "vb"):
        assert f"NEW.`{plain}` AS `{plain}`" in ai and f"CONVERT(NEW.`{plain}`" not in ai
    assert "udf_json_object(NEW.`id` AS `id`, CONVERT(NEW.`l1` USING utf8mb4) AS `l1`) AS json_key" in ai
    au = body(t, "au")
    assert "CAST(NEW.`l1` AS BINARY) <=> CAST(OLD.`l1` AS BINARY)" in au
    assert "NEW.`b` <=> OLD.`b`" in au and "NEW.`vb` <=> OLD.`vb`" in au


def test_long_table_names_give_valid_trigger_names():
    long = "t" * 64
    names = {triggers.trigger_name(long, s) for s, _ in triggers.EVENTS}
    assert len(names) == 3 and all(len(n) <= 64 for n in names)
    assert triggers.trigger_name(long, "ai") != triggers.trigger_name("t" * 63 + "u", "ai")
    assert triggers.trigger_name("data", "au") == "gman_data_au"


def test_delimiter_avoids_text_in_the_sql():
    sql = triggers.render(table(name="a$$b"))
    assert "DELIMITER //\n" in sql and sql.endswith("DELIMITER ;\n")
    assert "DELIMITER $$" not in sql


def test_script_shape():
    sql = triggers.render(table())
    lines = sql.splitlines()
    assert lines[0].startswith("-- generated by") and lines[0].endswith("do not edit")
    assert lines[2] == "DELIMITER $$" and lines[-1] == "DELIMITER ;"
    assert [l for l in lines if l.startswith("DROP")] == [
        f"DROP TRIGGER IF EXISTS `shop`.`gman_data_{s}`$$" for s in ("ai", "au", "ad")]
    assert sum(l.endswith("END$$") for l in lines) == 3
    for drop, create in triggers.statements(table()):  # --apply form: no delimiter at all
        assert "$$" not in drop + create and not create.rstrip().endswith(";")


def test_example_file_is_current():
    text = (ROOT / "sql" / "example_trigger.sql").read_text()
    assert text == triggers.example_sql()
    assert text.splitlines()[0].startswith("-- generated by") and "do not edit" in text.splitlines()[0]


@pytest.mark.parametrize("text, want", [
    ("data", ("db0", "data")), ("shop.data", ("shop", "data")), ("`s.p`.`d.x`", ("s.p", "d.x")),
    ("`a``b`", ("db0", "a`b")), ("shop.`x.y`", ("shop", "x.y")),
])
def test_split_table(text, want):
    assert schema.parse_table_name(text, "db0") == want


def test_split_table_errors():
    with pytest.raises(SchemaError, match="-D"):
        schema.parse_table_name("data", None)
    with pytest.raises(SchemaError, match="backtick"):
        schema.parse_table_name("`data", "x")
    with pytest.raises(SchemaError):
        schema.split_names("a,,b")
    assert schema.split_names(" a , b") == ["a", "b"]


# ---- verify: keys, values and SQL -----------------------------------------------------------------

def test_expected_write_is_the_workers():
    t = table()
    w = compare.expected_write(t, {"id": 7}, {"id": 7, "name": "é"}, verify.plan_mod.Options())
    assert (w.op, w.key, w.values) == ("set", "shop.data:7", ('{"id":7,"name":"é"}'.encode(),))
    w = compare.expected_write(t, {"id": 7}, {"id": 7, "name": None}, verify.plan_mod.Options(mode="hash", key_template="d:{id}"))
    assert (w.op, w.key, w.values) == ("hash", "d:7", (b"id", b"7"))


@pytest.mark.parametrize("template, table, pattern", [
    ("{table}:{key}", "shop.data", "shop.data:*"),
    ("data:{id}", "shop.data", "data:*"),
    ("{table}:{a}:{b}", "s.t", "s.t:*:*"),
    ("x{a}{b}", "s.t", "x*"),
    ("u:{{{id}}}", "s.t", "u:{*}"),
    ("{table}:{key}", "we*ird[1]", "we\\*ird\\[1\\]:*"),
    ("{key}", "s.t", "*"),
])
def test_scan_pattern(template, table, pattern):
    assert compare.scan_pattern(template, table) == pattern


def test_stored_matches_compares_parsed_json_and_hashes():
    w = verify.plan_mod.Write("set", "k", "{k}#v", None, 0, (b'{"id":1,"v":2.5}',))
    assert compare.stored_matches(w, b'{"v": 2.5000, "id": 1}')
    assert not compare.stored_matches(w, b'{"id":2,"v":2.5}')
    assert not compare.stored_matches(w, None) and compare.is_missing(w, None)
    assert not compare.stored_matches(w, b"not json") and not compare.stored_matches(w, b"\xff")
    assert not compare.stored_matches(w, Exception("WRONGTYPE"))
    h = verify.plan_mod.Write("hash", "k", "{k}#v", None, 0, (b"id", b"1", b"n", b"x"))
    assert compare.stored_matches(h, {b"id": b"1", b"n": b"x"})
    assert not compare.stored_matches(h, {b"id": b"1"})
    assert compare.is_missing(h, {}) and not compare.is_missing(h, {b"id": b"1"})
    empty = verify.plan_mod.Write("hash", "k", "{k}#v", None, 0, ())
    assert compare.stored_matches(empty, {}) and not compare.is_missing(empty, {})


def test_version_keys_are_not_data():
    assert compare.is_version_key(b"{shop.data:7}#v")
    assert not compare.is_version_key(b"shop.data:7")


def test_reread_sql_locks_and_stamps():
    sql = compare.reread_sql(table(), 2)
    assert sql == ("SELECT udf_json_object(`id` AS `id`), udf_json_object(`id` AS `id`, `volume` AS `volume`, "
                   "`name` AS `name`), gman_stamp() FROM `shop`.`data` WHERE (`id`) IN ((%s), (%s)) LOCK IN SHARE MODE")


def test_bulk_sql():
    t = table()
    whole = compare.bulk_sql(t, "syncToRedis")
    assert whole.startswith("SELECT gman_bulk_background('syncToRedis', udf_json_members(")
    assert whole.endswith("FROM `shop`.`data` LOCK IN SHARE MODE")
    assert "'row', udf_json_object(`id` AS `id`, `volume` AS `volume`, `name` AS `name`) AS json_row" in whole
    some = compare.bulk_sql(t, "f", 2)
    assert some.endswith("WHERE (`id`) IN ((%s), (%s)) LOCK IN SHARE MODE")
    # with parameters every literal % is doubled, so mysqlclient's formatting leaves it alone
    pct = table(name="100%", key=(Column("p%"),), columns=(Column("p%"),))
    assert "'shop.100%%'" in compare.bulk_sql(pct, "f", 1) and "(`p%%`) IN ((%s))" in compare.bulk_sql(pct, "f", 1)
    assert "'shop.100%'" in compare.bulk_sql(pct, "f")


def test_select_rows_sql_matches_the_trigger_payload():
    t = table(key=(ID, Column("l", "varchar", "latin1")), columns=(ID, Column("l", "varchar", "latin1"), VOLUME))
    sql = compare.select_rows_sql(t)
    assert sql == ("SELECT udf_json_object(`id` AS `id`, CONVERT(`l` USING utf8mb4) AS `l`), "
                   "udf_json_object(`id` AS `id`, CONVERT(`l` USING utf8mb4) AS `l`, `volume` AS `volume`), "
                   "`id`, `l` FROM `shop`.`data`")
    ai = body(t, "ai")  # the same expressions with NEW.
    assert sql.split(", `id`, `l` FROM")[0].split("), udf_json_object(")[1].replace("`", "").replace(" ", "") \
        in ai.replace("NEW.", "").replace("`", "").replace(" ", "")


class Tty(io.StringIO):
    def __init__(self, tty):
        super().__init__()
        self.tty = tty

    def isatty(self):
        return self.tty


def test_progress_only_on_a_terminal():
    quiet = Tty(False)
    p = verify.Progress("verify s.t", 10, quiet)
    p.update(5)
    p.close()
    assert quiet.getvalue() == ""
    tty = Tty(True)
    p = verify.Progress("verify s.t", 10, tty)
    p.update(5)
    p.update(5)
    p.close()
    out = tty.getvalue()
    assert out.startswith("\rverify s.t [") and "10/10 rows" in out and out.endswith("\n")


def test_report_format():
    r = compare.Report(keep=2)
    r.rows = 5
    for k in ("a", "b", "c"):
        r.add("missing", k)
    r.add("extra", "z")
    text = compare.format_report(table(), r, repaired=False)
    assert text.splitlines()[0] == "shop.data: 5 rows; 3 missing, 0 stale, 1 extra"
    assert "  missing: a, b (and 1 more)" in text and "  extra: z" in text
    assert r.differences == 4
