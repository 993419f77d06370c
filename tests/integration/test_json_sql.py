"""udf_json_* inside a real MariaDB: every common column type, compared value by value with what
mysqlclient reads from the same row, and with the server's native JSON_OBJECT.

Reading the UDF's JSON back (`decode`): numbers are parsed as int / Decimal (never float, so
BIGINT UNSIGNED and DECIMAL(65,30) stay exact), {"$base64": ...} becomes bytes (json_buf.h's
bytes policy). The per-type conversion of the mysqlclient value (`expected`) is in TYPES below.

Runs in its own database on the session's `installed` server, dropped at the end.
"""
import base64
import datetime
import json
from decimal import Decimal

import MySQLdb
import pytest

DB = "gman_json_sql"


# --- reading JSON back -----------------------------------------------------------------------------

def _reject_constant(name):
    raise ValueError(f"not JSON: {name}")


def _no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise ValueError(f"duplicate keys in {keys}")
    return dict(pairs)


def parse(raw):
    """Strict RFC 8259: UTF-8 bytes, no NaN/Infinity, no duplicate keys; floats as Decimal."""
    assert isinstance(raw, bytes), raw
    return json.loads(raw.decode("utf-8"), parse_float=Decimal, parse_constant=_reject_constant,
                      object_pairs_hook=_no_duplicates)


def decode(value):
    """The bytes policy undone: {"$base64": "..."} -> bytes; anything else as is."""
    if isinstance(value, dict) and set(value) == {"$base64"}:
        return base64.b64decode(value["$base64"], validate=True)
    return value


def as_bytes(value):
    """A string value is the UTF-8 encoding of the column's bytes; a {"$base64"} value is the bytes."""
    value = decode(value)
    return value.encode("utf-8") if isinstance(value, str) else value


# --- the table: every common column type --------------------------------------------------------------

def fmt_time(td):
    """TIME as MariaDB prints it: [-]HH:MM:SS, hours past 24 allowed."""
    total = td.days * 86400 + td.seconds
    sign = "-" if total < 0 else ""
    h, rest = divmod(abs(total), 3600)
    return f"{sign}{h:02d}:{rest // 60:02d}:{rest % 60:02d}"


def same(got, want):
    return got == want


def same_float(got, want):
    """FLOAT: the UDF writes the value as the server prints it ("1.1", "3.40282e38"), mysqlclient
    parses that same text into a float, whose repr gives it back (6 digits < 15: exact)."""
    return isinstance(got, (int, Decimal)) and Decimal(got) == Decimal(repr(want))


def same_double(got, want):
    return isinstance(got, (int, Decimal)) and float(got) == want


def same_decimal(got, want):
    return isinstance(got, (int, Decimal)) and Decimal(got) == want  # exact, all 65 digits


# column -> (SQL type, mysqlclient value -> expected JSON value, comparison)
TYPES = {
    "ti": ("TINYINT", None, same),
    "tiu": ("TINYINT UNSIGNED", None, same),
    "si": ("SMALLINT", None, same),
    "siu": ("SMALLINT UNSIGNED", None, same),
    "mi": ("MEDIUMINT", None, same),
    "miu": ("MEDIUMINT UNSIGNED", None, same),
    "i": ("INT", None, same),
    "iu": ("INT UNSIGNED", None, same),
    "bi": ("BIGINT", None, same),
    "biu": ("BIGINT UNSIGNED", None, same),
    "num": ("DECIMAL(65,30)", None, same_decimal),
    "f": ("FLOAT", None, same_float),
    "d": ("DOUBLE", None, same_double),
    "dt": ("DATE", str, same),  # date -> 'YYYY-MM-DD'
    "dtm": ("DATETIME(6)", lambda v: v.isoformat(" ", "microseconds"), same),  # always 6 digits, as MariaDB
    "ts": ("TIMESTAMP NULL", str, same),  # no fraction: 'YYYY-MM-DD HH:MM:SS'
    "tm": ("TIME", fmt_time, same),  # timedelta -> '-838:59:59'
    "yr": ("YEAR", None, same),
    "ch": ("CHAR(20) CHARACTER SET utf8mb4", None, same),
    "vc": ("VARCHAR(200) CHARACTER SET utf8mb4", None, same),
    "tx": ("TEXT CHARACTER SET utf8mb4", None, same),
    # The UDF gets the column's own bytes (latin1), written by the bytes policy: b'caf\xe9' is not
    # UTF-8 -> {"$base64"}; pure ASCII (or bytes that happen to be UTF-8) -> a string of those bytes.
    # Decoded as latin1 they give mysqlclient's (converted to utf8mb4) value.
    "l1": ("VARCHAR(50) CHARACTER SET latin1", None, lambda got, want: as_bytes(got).decode("latin1") == want),
    "bl": ("BLOB", None, lambda got, want: as_bytes(got) == want),
    "en": ("ENUM('a','b','é') CHARACTER SET utf8mb4", None, same),
    "st": ("SET('x','y','z') CHARACTER SET utf8mb4", None, same),
    "bt": ("BIT(8)", None, lambda got, want: got == int.from_bytes(want, "big")),  # BIT(<20): its number
    "js": ("JSON", None, same),  # a string (no json_ prefix on the name) equal to the text stored
}
COLUMNS = list(TYPES)

# Columns left out of the comparison with the native JSON_OBJECT, and why:
NOT_NATIVE = {
    "l1": "the UDF sees the latin1 bytes ({$base64}); JSON_OBJECT converts the text to utf8mb4",
    "bl": "JSON_OBJECT writes a BLOB's raw bytes into its result: not UTF-8, not JSON",
    "bt": "JSON_OBJECT writes BIT's raw byte into its result: not JSON",
    "js": "JSON_OBJECT embeds a JSON column as a value; the UDF writes a string unless the name starts json_",
}
NATIVE = [c for c in COLUMNS if c not in NOT_NATIVE]

ROWS = [
    # maximum values, multi-byte text, bytes that are not UTF-8
    dict(id=1, ti=127, tiu=255, si=32767, siu=65535, mi=8388607, miu=16777215, i=2147483647, iu=4294967295,
         bi=9223372036854775807, biu=18446744073709551615,
         num=Decimal("99999999999999999999999999999999999.999999999999999999999999999999"),
         f=3.40282e38, d=1.7976931348623157e308, dt="9999-12-31", dtm="9999-12-31 23:59:59.999999",
         ts="2038-01-19 03:14:07", tm="838:59:59", yr=2155, ch="ab😀漢", vc="漢字かな한글😀👍🏽 \"quoted\" \\ /",
         tx="tab\there\nnew line\r\x01\x1f\x7f\u2028\u2029 end", l1="café", bl=b"\x00\xff\x00\xfe",
         en="é", st="x,z", bt=b"\x81", js='{"a": [1, 2.5, null], "b": "é"}'),
    # minimum values, empty strings
    dict(id=2, ti=-128, tiu=0, si=-32768, siu=0, mi=-8388608, miu=0, i=-2147483648, iu=0,
         bi=-9223372036854775808, biu=0,
         num=Decimal("-99999999999999999999999999999999999.999999999999999999999999999999"),
         f=-3.40282e38, d=-1.7976931348623157e308, dt="1000-01-01", dtm="1000-01-01 00:00:00.000000",
         ts="2000-01-01 00:00:00", tm="-838:59:59", yr=1901, ch="", vc="", tx="", l1="plain ascii", bl=b"",
         en="a", st="", bt=b"\x00", js="[]"),
    # small and awkward values
    dict(id=3, ti=0, tiu=1, si=-1, siu=1, mi=0, miu=1, i=-1, iu=1, bi=-1, biu=9223372036854775808,
         num=Decimal("0.000000000000000000000000000001"), f=1.1, d=1e-7, dt="2024-02-29",
         dtm="2024-02-29 12:00:00.000000", ts="2024-02-29 12:34:56", tm="-00:00:01", yr=2000, ch="é",
         vc="a\x00b", tx="Ã©", l1="Ã©", bl="€".encode(), en="b", st="x,y,z", bt=b"A", js='"just a string"'),
    dict(id=4, ti=5, tiu=200, si=300, siu=40000, mi=-70000, miu=9000000, i=123456, iu=3000000000,
         bi=1234567890123, biu=12345678901234567890, num=Decimal("-0.5"), f=-0.0001, d=5e-324, dt="1999-12-31",
         dtm="1999-12-31 23:59:59.000001", ts="1999-12-31 23:59:59", tm="00:00:00", yr=1999, ch="abc",
         vc="\\u0041 is not A", tx="ʇxǝʇ", l1="ÿ¡¿", bl=b"\xc3\x28", en="a", st="y", bt=b"\x7f", js="null"),
    # NULL in every column
    dict(id=5, **{c: None for c in COLUMNS}),
]

OBJECT_ALL = "udf_json_object(" + ", ".join(COLUMNS) + ")"


@pytest.fixture(scope="module")
def conn(installed):
    with installed.connect() as c:
        cur = c.cursor()
        cur.execute(f"DROP DATABASE IF EXISTS {DB}")
        cur.execute(f"CREATE DATABASE {DB} CHARACTER SET utf8mb4")
        cur.execute(f"USE {DB}")
        cur.execute("SET time_zone = '+00:00'")
        cols = ", ".join(f"{c} {TYPES[c][0]}" for c in COLUMNS)
        cur.execute(f"CREATE TABLE types (id INT PRIMARY KEY, {cols})")
        names = ["id"] + COLUMNS
        cur.executemany(f"INSERT INTO types ({', '.join(names)}) VALUES ({', '.join(['%s'] * len(names))})",
                        [[row[n] for n in names] for row in ROWS])
        yield c
        c.cursor().execute(f"DROP DATABASE {DB}")


@pytest.fixture
def cur(conn):
    return conn.cursor()


def alive(server):
    """The server still answers on a new connection (the old library crashed mariadbd)."""
    assert server.running, server.log_tail()
    with server.connect() as c:
        cur = c.cursor()
        cur.execute("SELECT 1")
        return cur.fetchone() == (1,)


def rows_by_id(cur, select):
    cur.execute(f"SELECT id, {select} FROM types ORDER BY id")
    return {r[0]: r[1:] for r in cur.fetchall()}


def plain_rows(cur):
    """{id: {column: value}} as mysqlclient reads SELECT *."""
    cur.execute("SELECT * FROM types ORDER BY id")
    names = [d[0] for d in cur.description]
    assert names == ["id"] + COLUMNS
    return {r[0]: dict(zip(COLUMNS, r[1:])) for r in cur.fetchall()}


def check_value(column, got, want):
    """got: the value read from the UDF's JSON; want: what mysqlclient read from the row."""
    if want is None:
        return got is None
    _, convert, compare = TYPES[column]
    return compare(got, convert(want) if convert else want)


# --- the table is what the test thinks it is -----------------------------------------------------------

def test_rows_read_back_as_inserted(cur):
    """A check of the fixture, so that the comparisons below compare the intended values."""
    rows = plain_rows(cur)
    assert rows[1]["biu"] == 18446744073709551615 and rows[2]["bi"] == -9223372036854775808
    assert rows[1]["num"] == ROWS[0]["num"] and rows[3]["num"] == Decimal("1E-30")
    assert rows[1]["l1"] == "café" and rows[1]["bl"] == b"\x00\xff\x00\xfe" and rows[1]["bt"] == b"\x81"
    assert rows[1]["tm"] == datetime.timedelta(hours=838, minutes=59, seconds=59)
    assert rows[3]["vc"] == "a\x00b" and rows[1]["tx"] == ROWS[0]["tx"]
    assert all(v is None for v in rows[5].values())
    cur.execute("SELECT HEX(l1) FROM types WHERE id = 1")
    assert cur.fetchone() == ("636166E9",)  # latin1 bytes on disk


# --- udf_json_object: every value equals the row --------------------------------------------------------

def test_object_equals_row(cur):
    plain = plain_rows(cur)
    objects = rows_by_id(cur, OBJECT_ALL)
    assert set(objects) == {r["id"] for r in ROWS}
    bad = []
    for rid, (raw,) in objects.items():
        obj = parse(raw)
        assert list(obj) == COLUMNS, "keys: the bare column names, in argument order"
        for column in COLUMNS:
            if not check_value(column, obj[column], plain[rid][column]):
                bad.append((rid, column, obj[column], plain[rid][column]))
    assert bad == []


def test_numbers_are_json_numbers(cur):
    """Integers and decimals as JSON numbers, exact: no quotes, no float rounding, no exponent loss."""
    cur.execute("SELECT id, udf_json_object(biu, bi, num, d, f) FROM types WHERE id IN (1, 2, 3)")
    got = {rid: raw for rid, raw in cur.fetchall()}
    assert got[1].startswith(b'{"biu":18446744073709551615,"bi":9223372036854775807,'
                             b'"num":99999999999999999999999999999999999.999999999999999999999999999999,')
    assert b'"bi":-9223372036854775808' in got[2]
    obj = parse(got[3])
    assert obj["d"] == Decimal("1e-7") and obj["f"] == Decimal("1.1")  # not 1.100000023841858, not 0.000000
    assert isinstance(obj["biu"], int) and isinstance(obj["num"], Decimal)


def test_null_row_is_all_null(cur):
    cur.execute(f"SELECT {OBJECT_ALL}, udf_json_array({', '.join(COLUMNS)}) FROM types WHERE id = 5")
    obj, arr = cur.fetchone()
    assert parse(obj) == {c: None for c in COLUMNS}
    assert parse(arr) == [None] * len(COLUMNS)
    cur.execute("SELECT udf_json_object(NULL AS n), udf_json_array(NULL), udf_json_values(NULL), "
                "udf_json_members('k', NULL)")
    assert [parse(v) for v in cur.fetchone()] == [{"n": None}, [None], None, {"k": None}]


def test_array_equals_row(cur):
    plain = plain_rows(cur)
    for rid, (raw,) in rows_by_id(cur, "udf_json_array(" + ", ".join(COLUMNS) + ")").items():
        arr = parse(raw)
        assert len(arr) == len(COLUMNS)
        bad = [(c, g, plain[rid][c]) for c, g in zip(COLUMNS, arr) if not check_value(c, g, plain[rid][c])]
        assert bad == [], rid


def test_members_equals_row(cur):
    plain = plain_rows(cur)
    args = ", ".join(f"CONCAT('k_', '{c}'), {c}" for c in COLUMNS)  # names computed per row
    for fn in ("udf_json_members", "json_members"):
        for rid, (raw,) in rows_by_id(cur, f"{fn}({args})").items():
            obj = parse(raw)
            assert list(obj) == [f"k_{c}" for c in COLUMNS]
            bad = [(c, obj[f"k_{c}"]) for c in COLUMNS if not check_value(c, obj[f"k_{c}"], plain[rid][c])]
            assert bad == [], (fn, rid)


def test_values_one_argument_is_one_json_value(cur):
    plain = plain_rows(cur)
    for fn in ("udf_json_values", "json_values"):
        select = ", ".join(f"{fn}({c})" for c in COLUMNS)
        for rid, raws in rows_by_id(cur, select).items():
            for column, raw in zip(COLUMNS, raws):
                assert check_value(column, parse(raw), plain[rid][column]), (fn, rid, column, raw)


def test_values_many_arguments_is_an_array_body(cur):
    for rid, (raw,) in rows_by_id(cur, "udf_json_values(" + ", ".join(COLUMNS) + ")").items():
        assert len(parse(b"[" + raw + b"]")) == len(COLUMNS)
    # the documented use: an array of every row, built by GROUP_CONCAT
    cur.execute("SET SESSION group_concat_max_len = 1000000")
    cur.execute("SELECT CONCAT('[', GROUP_CONCAT(udf_json_values(i, vc) ORDER BY id), ']') FROM types")
    raw = cur.fetchone()[0]
    body = parse(raw if isinstance(raw, bytes) else raw.encode())
    assert [pair[0] for pair in zip(*[iter(body)] * 2)] == [2147483647, -2147483648, -1, 123456, None]


def test_qualified_names_give_the_column_name(cur):
    cur.execute(f"SELECT udf_json_object(types.id, {DB}.types.ti, t2.ti AS other) "
                "FROM types JOIN types AS t2 USING (id) WHERE id = 1")
    assert parse(cur.fetchone()[0]) == {"id": 1, "ti": 127, "other": 127}


def test_aliases_are_keys_escaped(cur):
    cur.execute('SELECT udf_json_object(1 AS `a"b`, 2 AS `back\\slash`, 3 AS `漢字`, 4 AS `tab\tkey`)')
    assert parse(cur.fetchone()[0]) == {'a"b': 1, "back\\slash": 2, "漢字": 3, "tab\tkey": 4}


# --- native JSON_OBJECT agrees where both apply --------------------------------------------------------

def test_object_equals_native_json_object(cur):
    native_args = ", ".join(f"'{c}', {c}" for c in NATIVE)
    cur.execute(f"SELECT id, udf_json_object({', '.join(NATIVE)}), JSON_OBJECT({native_args}) FROM types ORDER BY id")
    bad = []
    for rid, ours, native in cur.fetchall():
        native = native.encode() if isinstance(native, str) else native
        mine, theirs = parse(ours), parse(native)
        assert list(mine) == NATIVE
        for c in NATIVE:
            a, b = mine[c], theirs[c]
            if isinstance(a, (int, Decimal)) and isinstance(b, (int, Decimal)):
                ok = Decimal(a) == Decimal(b)  # 1.10 vs 1.1, 1e300 vs 1E+300: the same number
            else:
                ok = a == b
            if not ok:
                bad.append((rid, c, a, b))
    assert bad == []


# --- json_ names embed JSON -------------------------------------------------------------------------------

def test_json_prefixed_alias_embeds_valid_json(cur):
    cur.execute("SELECT id, js, udf_json_object(id, js AS json_js, js AS plain) FROM types ORDER BY id")
    for rid, js, raw in cur.fetchall():
        obj = parse(raw)
        assert obj["json_js"] == (None if js is None else json.loads(js, parse_float=Decimal)), rid
        assert obj["plain"] == js
    cur.execute("SELECT udf_json_object(udf_json_array(1, 'a') AS json_arr, '[1,2' AS json_broken, "
                "'{\"x\":1}' AS JSON_upper, 'NaN' AS json_nan, udf_json_object(2 AS b) AS nested)")
    assert parse(cur.fetchone()[0]) == {"json_arr": [1, "a"], "json_broken": "[1,2", "JSON_upper": {"x": 1},
                                         "json_nan": "NaN", "nested": '{"b":2}'}


# --- every output is valid JSON ----------------------------------------------------------------------------

def test_every_output_is_valid_json(cur):
    selects = [OBJECT_ALL,
               "udf_json_array(" + ", ".join(COLUMNS) + ")",
               "udf_json_members(" + ", ".join(f"'{c}', {c}" for c in COLUMNS) + ")",
               "json_members(vc, 1, CONCAT(ch, '#'), ch, CONCAT(tx, '##'), tx)",  # names from the data
               "udf_json_object(" + ", ".join(f"{c} AS json_{c}" for c in COLUMNS) + ")",  # any data as JSON
               ]
    selects += [f"udf_json_values({c})" for c in COLUMNS] + [f"json_values({c})" for c in COLUMNS]
    cur.execute("SELECT " + ", ".join(selects) + " FROM types")
    count = 0
    for row in cur.fetchall():
        for select, raw in zip(selects, row):
            if select.startswith("json_members(") and raw is None:
                continue  # a NULL name: NULL with an error, checked elsewhere
            assert raw is not None, select
            parse(raw)
            count += 1
    assert count >= len(ROWS) * len(selects) - len(ROWS)


def test_null_member_name_is_an_error_value(cur):
    cur.execute("SELECT udf_json_members(vc, 1) FROM types WHERE id = 5")
    assert cur.fetchone() == (None,)
    cur.execute("SELECT gman_last_error()")
    assert b"NULL" in cur.fetchone()[0]


# --- big values (the old library crashed mariadbd on these) -------------------------------------------

def test_big_text(cur, installed):
    cur.execute("CREATE TABLE big (id INT PRIMARY KEY, t MEDIUMTEXT CHARACTER SET utf8mb4, "
                "l LONGBLOB)")
    try:
        text = ("漢字 \"quote\" \\ tab\t nl\n ctl\x01 😀 " * 8000)[:200_000]
        controls = "\x01" * 1_000_000  # 6 output bytes per input byte
        cur.execute("INSERT INTO big VALUES (1, %s, %s), (2, %s, NULL), (3, NULL, %s)",
                    (text, b"\xff" * 300_000, controls, b"\xfe\x00" * 100_000))
        cur.execute("SELECT id, udf_json_object(id, t, l), udf_json_array(t), udf_json_values(t) FROM big ORDER BY id")
        rows = cur.fetchall()
        assert alive(installed)
        obj = parse(rows[0][1])
        assert obj["t"] == text and len(text.encode()) > 200_000 and decode(obj["l"]) == b"\xff" * 300_000
        assert parse(rows[0][2]) == [text] and parse(rows[0][3]) == text
        assert parse(rows[1][1])["t"] == controls and len(rows[1][1]) > 6_000_000
        assert decode(parse(rows[2][1])["l"]) == b"\xfe\x00" * 100_000
        cur.execute("SELECT udf_json_object(REPEAT('x', 200000) AS x, REPEAT('é', 100000) AS e)")
        assert parse(cur.fetchone()[0]) == {"x": "x" * 200_000, "e": "é" * 100_000}
    finally:
        cur.execute("DROP TABLE big")
    assert alive(installed)


def test_extreme_doubles(cur, installed):
    cur.execute("CREATE TABLE dbl (id INT PRIMARY KEY, d DOUBLE)")
    try:
        values = [1e300, -1.7976931348623157e308, 1.7976931348623157e308, 5e-324, -2.2250738585072014e-308,
                  1e-7, 0.1, 123456789.123456789, 0.0]
        cur.executemany("INSERT INTO dbl VALUES (%s, %s)", list(enumerate(values)))
        cur.execute("SELECT id, d, udf_json_object(d), udf_json_array(d, d * 1), udf_json_values(d) "
                    "FROM dbl ORDER BY id")
        for rid, d, obj, arr, val in cur.fetchall():
            assert float(parse(obj)["d"]) == d == values[rid]
            assert [float(x) for x in parse(arr)] == [d, d]
            assert float(parse(val)) == d
        cur.execute("SELECT udf_json_object(1e300 AS a, -1.7976931348623157e308 AS b)")
        got = parse(cur.fetchone()[0])
        assert float(got["a"]) == 1e300 and float(got["b"]) == -1.7976931348623157e308
    except MySQLdb.OperationalError as e:
        raise AssertionError(f"{e}; server alive: {installed.running}\n{installed.log_tail()}") from e
    finally:
        if installed.running:
            cur.execute("DROP TABLE dbl")
    assert alive(installed)


# --- wrong use: clear errors from _init, never a crash -------------------------------------------------

@pytest.mark.parametrize("sql, message", [
    ("SELECT udf_json_object(1 + 1)", "has no name; write expr AS name"),
    ("SELECT udf_json_object(id, CONCAT(vc, 'x')) FROM types", "argument 2 has no name; write expr AS name"),
    ("SELECT udf_json_object('literal')", "has no name; write expr AS name"),
    ("SELECT udf_json_object(@v)", "has no name; write expr AS name"),
    ("SELECT udf_json_members('a', 1, 'b')", "name, value pairs"),
    ("SELECT json_members('a')", "name, value pairs"),
    ("SELECT udf_json_values()", "at least one value"),
])
def test_init_errors(cur, installed, sql, message):
    with pytest.raises(MySQLdb.OperationalError) as e:
        cur.execute(sql)
    code, text = e.value.args
    assert code == 1123, text  # ER_CANT_INITIALIZE_UDF
    assert message in text
    assert alive(installed)


@pytest.mark.parametrize("sql", [
    "SELECT udf_json_object((1, 2) AS r)",
    "SELECT udf_json_object(ROW(1, 2) AS r)",
    "SELECT udf_json_array((1, 2))",
    "SELECT udf_json_values((SELECT 1, 2))",
    "SELECT udf_json_members('r', (id, ti)) FROM types",
])
def test_row_argument_is_an_error_not_a_crash(cur, installed, sql):
    with pytest.raises(MySQLdb.OperationalError) as e:
        cur.execute(sql)
    assert e.value.args[0] in (1241, 1123), e.value.args  # "Operand should contain 1 column(s)" or _init
    assert alive(installed)


# --- BIT: numbers up to 19 bits wide, raw bytes beyond (the server passes no width) -------------------

def test_bit_columns(cur):
    """BIT reaches the UDF as an integer argument. Up to 19 characters wide the plugin takes
    val_int(), so BIT(1..19) give their numbers even when their bytes look like digits; wider
    ones could be BIGINT UNSIGNED and are read as text, which for BIT is its raw bytes: they come
    out by the bytes policy (documented; write b+0 for a number)."""
    cur.execute("CREATE TABLE bits (id INT PRIMARY KEY, b8 BIT(8), b16 BIT(16), b64 BIT(64))")
    try:
        rows = [(1, b"\x35", b"01", b"\xff" * 8), (2, b"\x2d", b"-1", b"\x00" * 7 + b"\x05"),
                (3, b"\x30", b"1e", b"\x00" * 8)]
        cur.executemany("INSERT INTO bits VALUES (%s, %s, %s, %s)", rows)
        cur.execute("SELECT b8, b16, b64, udf_json_object(b8, b16, b64, b64+0 AS n64) FROM bits ORDER BY id")
        for b8, b16, b64, raw in cur.fetchall():
            obj = parse(raw)
            assert obj["b8"] == int.from_bytes(b8, "big")
            assert obj["b16"] == int.from_bytes(b16, "big")
            assert as_bytes(obj["b64"]) == b64
            assert obj["n64"] == int.from_bytes(b64, "big")
    finally:
        cur.execute("DROP TABLE bits")


# --- the seeds' trigger -------------------------------------------------------------------------------------

def test_trigger_writes_one_json_per_updated_row(cur):
    cur.execute("CREATE TABLE data (id INT PRIMARY KEY, volume DECIMAL(20,4), name VARCHAR(50))")
    cur.execute("CREATE TABLE audit (n INT AUTO_INCREMENT PRIMARY KEY, j TEXT CHARACTER SET utf8mb4)")
    try:
        cur.executemany("INSERT INTO data VALUES (%s, %s, %s)", [(i, Decimal(i) / 4, f"row {i}") for i in range(1, 21)])
        cur.execute("""
            CREATE TRIGGER data_au AFTER UPDATE ON data FOR EACH ROW
            BEGIN
              SET @j = udf_json_object(NEW.id AS id, NEW.volume AS volume);
              INSERT INTO audit(j) VALUES (@j);
            END""")
        cur.execute("UPDATE data SET volume = volume * 2 + 0.0001 WHERE id <= 10")
        assert cur.rowcount == 10
        cur.execute("UPDATE data SET volume = NULL WHERE id = 20")
        cur.execute("SELECT j FROM audit ORDER BY n")
        audit = [parse(j.encode()) for (j,) in cur.fetchall()]
        cur.execute("SELECT id, volume FROM data WHERE id <= 10 OR id = 20 ORDER BY id")
        now = cur.fetchall()
        assert len(audit) == 11
        assert sorted((a["id"], a["volume"]) for a in audit) == [(i, v) for i, v in now]
        assert audit[-1] == {"id": 20, "volume": None}
        assert all(list(a) == ["id", "volume"] for a in audit)

        # the trigger without aliases: NEW.col gives the key col
        cur.execute("DROP TRIGGER data_au")
        cur.execute("TRUNCATE audit")
        cur.execute("""
            CREATE TRIGGER data_au AFTER UPDATE ON data FOR EACH ROW
              INSERT INTO audit(j) VALUES (udf_json_object(NEW.id, NEW.volume, NEW.name, OLD.name AS old_name))""")
        cur.execute("UPDATE data SET name = CONCAT(name, ' ✓') WHERE id BETWEEN 11 AND 15")
        cur.execute("SELECT j FROM audit ORDER BY n")
        audit = [parse(j.encode()) for (j,) in cur.fetchall()]
        assert audit == [{"id": i, "volume": Decimal(i) / 4, "name": f"row {i} ✓", "old_name": f"row {i}"}
                         for i in range(11, 16)]
    finally:
        cur.execute("DROP TABLE data")
        cur.execute("DROP TABLE audit")


def test_server_still_alive_at_the_end(installed):
    assert alive(installed)
