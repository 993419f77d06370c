"""Tests of the JSON encoder and validator (udf/json_buf.c, udf/json_check.c) through cffi.

Expected text is built in Python (json, base64) independently of the C code. Every input
handed to C is malloc'ed at its exact size, so under GMAN_SANITIZE=1 a one-byte over-read
is an ASan error. Each append goes into a buffer that already holds PREFIX, so a function
that overwrote rather than appended, or that left a partial write behind, is caught.
"""
import base64
import json
import math
import mmap
import re
from decimal import Decimal

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.support import cbuild

# The declarations, straight from the header: the struct, the enum and every prototype.
HEADER = re.sub(r"/\*.*?\*/", "", (cbuild.UDF / "json_buf.h").read_text(), flags=re.S)
CDEF = "\n".join(re.findall(r"^typedef struct json_buf \{.*?\} json_buf;|^enum json_number_kind .*?;"
                            r"|^(?:int|void|size_t) json_\w+\(.*?\);", HEADER, re.M | re.S))
ffi, lib = cbuild.load("json_buf", CDEF + "\nvoid *malloc(size_t); void free(void *);")
_libc = ffi.dlopen(None)  # the global scope: ASan's malloc when it is preloaded
_exact_new = ffi.new_allocator(alloc=_libc.malloc, free=_libc.free, should_clear_after_alloc=False)

OK, ERR = 0, -1
NUM_OK, NUM_NOT_FINITE, NUM_INVALID = lib.JSON_NUMBER_OK, lib.JSON_NUMBER_NOT_FINITE, lib.JSON_NUMBER_INVALID
JSON_BUF_MAX = 1 << 30
JSON_MAX_DEPTH = int(re.search(r"#define JSON_MAX_DEPTH (\d+)", HEADER).group(1))
TOO_LARGE = "result larger than 1 GiB"
PREFIX = b"[0,"
settings.register_profile("json_buf", max_examples=300, deadline=None)
settings.load_profile("json_buf")


def cbytes(data):
    """data in a malloc'ed block of exactly len(data) bytes."""
    p = _exact_new("char[]", len(data))
    ffi.memmove(p, data, len(data))
    return p


def new_buf():
    return ffi.gc(ffi.new("json_buf *"), lib.json_buf_free)  # zeroed: as json_buf_init leaves it


def content(b):
    return ffi.unpack(b.p, b.len) if b.len else b""


def err(b):
    return ffi.string(b.err).decode() if b.err else None


def run(fn, *args):
    """fn(buf, *args) on a buffer holding PREFIX: (rc, what was appended, err)."""
    b = new_buf()
    assert lib.json_buf_append_raw(b, PREFIX, len(PREFIX)) == OK
    rc = fn(b, *args)
    assert content(b)[: len(PREFIX)] == PREFIX
    return rc, content(b)[len(PREFIX):], err(b)


def text_fn(fn):
    return lambda data: run(fn, cbytes(data), len(data))


utf8, as_bytes, number_text = map(text_fn, (lib.json_buf_append_utf8, lib.json_buf_append_bytes,
                                            lib.json_buf_append_number_text))


def valid(doc):
    return lib.json_is_valid(cbytes(doc), len(doc))


def decode_policy(text):
    """The reader's side of the bytes policy: the exact bytes a value stands for."""
    v = json.loads(text)
    if isinstance(v, dict):
        assert list(v) == ["$base64"]
        return base64.b64decode(v["$base64"], validate=True)
    return v.encode("utf-8")


# ---- strings -------------------------------------------------------------------------------

SHORT_ESCAPES = {0x08: "\\b", 0x09: "\\t", 0x0A: "\\n", 0x0C: "\\f", 0x0D: "\\r"}
STRING_CASES = [(bytes([c]), '"%s"' % SHORT_ESCAPES.get(c, "\\u%04x" % c)) for c in range(0x20)] + [
    (b"", '""'), (b'"', r'"\""'), (b"\\", r'"\\"'), (b"/", '"/"'), (b"\x7f", '"\x7f"'),
    (b'a\x00b"c\\d\x1fe', r'"a\u0000b\"c\\d\u001fe"'),
] + [(s.encode(), '"%s"' % s) for s in ("😀", "漢字かな", "\u2028\u2029", "\U0010ffff\ud7ff\ue000é")]


@pytest.mark.parametrize("data, expected", STRING_CASES)
def test_strings_are_escaped(data, expected):
    for fn in (utf8, as_bytes):
        rc, out, _ = fn(data)
        assert (rc, out.decode()) == (OK, expected)
        assert json.loads(out) == data.decode() and valid(out) == 1


INVALID_UTF8 = [
    b"\xff", b"\xfe\xff", b"\x80", b"\xbf", b"caf\xe9", b"ok\xff",
    b"\xc0\x80", b"\xc1\xbf", b"\xe0\x80\x80", b"\xe0\x9f\xbf", b"\xf0\x80\x80\x80", b"\xf0\x8f\xbf\xbf",  # overlong
    b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xed\xa0\xbd\xed\xb8\x80",  # surrogates, CESU-8
    b"\xc3", b"\xe2\x82", b"\xf0\x9f\x98", b"a\xf0\x9f\x98",  # truncated
    b"\xe2\x28\xa1", b"\xc3\x28", b"\xf0\x9f\x28\x80",  # bad continuation
    b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80", b"\xf7\xbf\xbf\xbf", b"\xf8\x88\x80\x80\x80", b"\xfc\x84\x80\x80\x80\x80",
    b"\x01\x01\xff",  # escapes already written when the bad byte is found
]


@pytest.mark.parametrize("data", INVALID_UTF8)
def test_invalid_utf8_becomes_base64(data):
    assert utf8(data) == (ERR, b"", "invalid UTF-8")
    rc, out, error = as_bytes(data)
    assert (rc, error) == (OK, None)
    assert out.decode() == '{"$base64":"%s"}' % base64.b64encode(data).decode()
    assert decode_policy(out) == data


# The case tables are module constants: tests/integration/test_cross_core.py runs them
# again on the aarch64 build under qemu.
SEQ_LEN_CASES = [
    (b"\x00", 1), (b"\x7f", 1), (b"\xc2\x80", 2), (b"\xdf\xbf", 2), (b"\xe0\xa0\x80", 3), (b"\xed\x9f\xbf", 3),
    (b"\xee\x80\x80", 3), (b"\xef\xbf\xbf", 3), (b"\xf0\x90\x80\x80", 4), (b"\xf4\x8f\xbf\xbf", 4),
    (b"\xc3\xa9tail", 2), (b"a\xff", 1),
] + [(bad, 0) for bad in INVALID_UTF8 if bad[0] >= 0x80]


@pytest.mark.parametrize("data, n", SEQ_LEN_CASES)
def test_utf8_seq_len(data, n):
    assert lib.json_utf8_seq_len(cbytes(data), len(data)) == n


def python_seq_len(data):
    for k in range(1, 5):
        try:
            return k if len(data[:k].decode("utf-8")) == 1 else 0
        except UnicodeDecodeError:
            continue
    return 0


@given(st.binary(min_size=1, max_size=6))
def test_utf8_seq_len_agrees_with_python(data):
    assert lib.json_utf8_seq_len(cbytes(data), len(data)) == python_seq_len(data)


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",))))
def test_append_utf8_round_trips(text):
    rc, out, _ = utf8(text.encode())
    assert rc == OK and json.loads(out) == text and not re.search(rb"[\x00-\x1f]", out)


@given(st.binary(max_size=64) | st.text().map(lambda s: s.encode("utf-8", "surrogatepass")))
def test_append_bytes_round_trips(data):
    rc, out, _ = as_bytes(data)
    assert rc == OK and decode_policy(out) == data and valid(out) == 1


# ---- numbers -------------------------------------------------------------------------------

@given(st.integers(-(2**63), 2**63 - 1), st.integers(0, 2**64 - 1))
@example(-(2**63), 2**64 - 1)
@example(2**63 - 1, 2**63)
@example(-1, 0)
@example(0, 1)
def test_integers(i, u):
    assert run(lib.json_buf_append_int64, i) == (OK, str(i).encode(), None)
    assert run(lib.json_buf_append_uint64, u) == (OK, str(u).encode(), None)


DOUBLE_CASES = [
    (0.1, "0.1"), (1e300, "1e+300"), (-0.0, "-0"), (0.0, "0"), (100.0, "100"), (1 / 3, "0.3333333333333333"),
    (1.7976931348623157e308, "1.7976931348623157e+308"), (-2.2250738585072014e-308, "-2.2250738585072014e-308"),
    (5e-324, None), (1e-7, "1e-07"), (1e21, "1e+21"), (math.nan, "null"), (math.inf, "null"), (-math.inf, "null"),
]


@pytest.mark.parametrize("v, text", DOUBLE_CASES)
def test_double(v, text):
    rc, out, _ = run(lib.json_buf_append_double, v)
    assert rc == OK and valid(out) == 1
    assert text is None or out.decode() == text
    if math.isfinite(v):
        assert float(out) == v and math.copysign(1, float(out)) == math.copysign(1, v)


def significant_digits(text):
    return len(re.match(r"-?([0-9.]+)", text).group(1).replace(".", "").strip("0")) or 1


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_double_round_trips(v):
    out = run(lib.json_buf_append_double, v)[1]
    assert valid(out) == 1 and float(json.loads(out)) == v
    # exact value always, in the fewest of 15, 16 or 17 significant digits that do it
    assert significant_digits(out.decode()) <= max(15, significant_digits(repr(v)) + 1)


NUMBER_TEXT_OK = [
    (b"0", b"0"), (b"-0", b"-0"), (b"000", b"0"), (b"00005", b"5"), (b"-007.50", b"-7.50"), (b"00.5", b"0.5"),
    (b"123.450", b"123.450"), (b"1e300", b"1e300"), (b"1E+5", b"1E+5"), (b"2.5e-07", b"2.5e-07"),
    (b"0.0000002", b"0.0000002"), (b"18446744073709551615", b"18446744073709551615"),
    (b"-9223372036854775808", b"-9223372036854775808"), (b"9" * 35 + b"." + b"0" * 30, b"9" * 35 + b"." + b"0" * 30),
]
NUMBER_TEXT_NOT_FINITE = [b"inf", b"-inf", b"+inf", b"INF", b"Infinity", b"-Infinity", b"nan", b"NaN", b"-nan"]
NUMBER_TEXT_INVALID = [
    b"", b"-", b"+", b"1.", b".5", b"-.5", b"1e", b"1e+", b"1e-", b"abc", b"\x05", b"\x00", b"12a", b"+5", b" 5",
    b"5 ", b"0x10", b"--5", b"1.2.3", b"1e5.0", b"in", b"infinit", b"nana", b"\xff", b"1,5",
]


@pytest.mark.parametrize("text, expected", NUMBER_TEXT_OK)
def test_number_text_ok(text, expected):
    assert number_text(text) == (NUM_OK, expected, None)
    assert Decimal(expected.decode()) == Decimal(text.decode())


@pytest.mark.parametrize("text", NUMBER_TEXT_NOT_FINITE)
def test_number_text_not_finite(text):
    assert number_text(text) == (NUM_NOT_FINITE, b"null", None)


@pytest.mark.parametrize("text", NUMBER_TEXT_INVALID)
def test_number_text_invalid_writes_nothing(text):
    assert number_text(text) == (NUM_INVALID, b"", None)


@given(st.decimals(allow_nan=False, allow_infinity=False), st.integers(0, 3))
def test_number_text_zerofill_round_trips(d, zeros):
    text = str(d).replace("E", "e")
    rc, out, _ = number_text(re.sub(r"^(-?)", r"\g<1>" + "0" * zeros, text).encode())
    assert rc == NUM_OK and valid(out) == 1
    assert json.loads(out, parse_float=str, parse_int=str).lstrip("-") == text.lstrip("-")


# ---- validation ----------------------------------------------------------------------------

def nest(depth):
    return b'{"a":[' * (depth // 2) + b"[" * (depth % 2) + b"1" + b"]" * (depth % 2) + b"]}" * (depth // 2)


VALID = [
    b"null", b"true", b"false", b"0", b"-0", b"-0.0e-0", b"1.5e+10", b"-1E-2", b"123456789012345678901234567890",
    b'""', b'"\\ud800"', b'"\\uDFFF\\u00e9"', b'"\\/\\b\\f\\n\\r\\t\\"\\\\"', b'"\x7f"', '"😀\u2028"'.encode(),
    b"[]", b"{}", b" [1, 2 ,3] ", b'{"a":{"b":[null,true]}}', b'{"a":1,"a":2}', b"\t\n\r 1 \t\n\r", b"[[[]]]",
    b"[" * JSON_MAX_DEPTH + b"]" * JSON_MAX_DEPTH, nest(JSON_MAX_DEPTH),
]
INVALID = [
    b"", b" ", b"01", b"-01", b"00", b"1.", b".5", b"+1", b"1e", b"1e+", b"--1", b"-", b"nul", b"True", b"NULL",
    b"NaN", b"Infinity", b"-Infinity", b"[1,]", b"[,1]", b"[1 2]", b'{"a"}', b'{"a":}', b"{a:1}", b'{"a":1,}',
    b"{1:2}", b"'x'", b'"abc', b'"a\x00b"', b'"\x1f"', b'"\t"', b'"\n"', b'"\\x"', b'"\\u12"', b'"\\u12g4"',
    b'"\\', b'"\xff"', b'"\xed\xa0\x80"', b'"\xc0\x80"', b"[1] x", b"1 2", b"[]]", b"{}{}", b"\xef\xbb\xbf1",
    b"[", b"]", b'{"a":1', b"null\x00", b"\x0b1", b"\x0c1", b"1\x00", b"\xc2\xa01",
    b"[" * (JSON_MAX_DEPTH + 1) + b"]" * (JSON_MAX_DEPTH + 1), nest(JSON_MAX_DEPTH + 1),
    b"[" * 100000 + b"]" * 100000,  # rejected at the depth limit: no stack overflow
]


@pytest.mark.parametrize("doc", VALID, ids=lambda d: repr(d[:20]))
def test_json_is_valid_accepts(doc):
    assert valid(doc) == 1
    json.loads(doc)


@pytest.mark.parametrize("doc", INVALID, ids=lambda d: repr(d[:20]))
def test_json_is_valid_rejects(doc):
    assert valid(doc) == 0


def python_is_valid(doc):
    try:
        json.loads(doc.decode("utf-8"), parse_constant=lambda name: 1 / 0)  # no NaN/Infinity
        return True
    except (ValueError, ZeroDivisionError, RecursionError):
        return False


TOKENS = [b"[", b"]", b"{", b"}", b'"', b",", b":", b"0", b"1", b"-", b".", b"e", b"+", b" ", b"\\", b"u", b"n",
          b"null", b"true", b"\x01", b"\xff", b"\xc3\xa9", b"a", b'"a"', b"\\u00e9", b"\\n", b"\t"]
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=4), kids, max_size=4), max_leaves=20)


@given(st.lists(st.sampled_from(TOKENS), max_size=24).map(b"".join))
def test_json_is_valid_agrees_with_python(doc):
    assert valid(doc) == python_is_valid(doc)


@given(JSON_VALUES, st.booleans())
def test_json_is_valid_accepts_json_dumps(value, ascii_only):
    assert valid(json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")) == 1


# ---- the buffer: growth, large values, failures, free --------------------------------------

def test_many_small_appends_grow_the_buffer():
    b, expected = new_buf(), []
    for i in range(10000):
        assert lib.json_buf_append_char(b, b"," if i else b"[") == OK
        s, raw = ("s%d\n\"é" % i).encode(), bytes([255, i & 255])
        if i % 4 == 0:
            rc, v = lib.json_buf_append_int64(b, -i * 1000003), -i * 1000003
        elif i % 4 == 1:
            rc, v = lib.json_buf_append_utf8(b, s, len(s)), s.decode()
        elif i % 4 == 2:
            rc, v = lib.json_buf_append_double(b, i / 7), i / 7
        else:
            rc, v = lib.json_buf_append_bytes(b, raw, 2), {"$base64": base64.b64encode(raw).decode()}
        assert rc == OK and b.len <= b.cap
        expected.append(v)
    assert lib.json_buf_append_char(b, b"]") == OK
    assert json.loads(content(b)) == expected
    assert b.cap & (b.cap - 1) == 0  # doubled from 256


@pytest.mark.parametrize("piece", [b"abc\xc3\xa9\n\"", b"\xff\x00\x01"])
def test_large_value(piece):
    data = piece * (5 * 1024 * 1024 // len(piece))
    rc, out, _ = as_bytes(data)
    assert rc == OK and decode_policy(out) == data


@pytest.fixture(scope="module")
def nearly_full():
    """make(room): a buffer of capacity JSON_BUF_MAX with `room` bytes left, over a lazily
    mapped 1 GiB area, so that an append that does not fit fails without any realloc."""
    area = mmap.mmap(-1, JSON_BUF_MAX)
    base = ffi.from_buffer(area)
    yield lambda room: ffi.new("json_buf *", {"p": base, "len": JSON_BUF_MAX - room, "cap": JSON_BUF_MAX})


@pytest.mark.parametrize("fn, args, room", [
    (lib.json_buf_reserve, (11,), 10),
    (lib.json_buf_append_int64, (-(2**63),), 5),  # '-' fits, the digits do not
    (lib.json_buf_append_uint64, (2**64 - 1,), 19),
    (lib.json_buf_append_double, (1 / 3,), 10),
    (lib.json_buf_append_raw, (b"abcd", 4), 3),
    (lib.json_buf_append_utf8, (b"\x01\x01\x01", 3), 10),  # fits the first reservation, the escapes do not
    (lib.json_buf_append_utf8, (b"abcdefgh", 8), 9),
    (lib.json_buf_append_bytes, (b"\x01\x01\x01", 3), 10),
    (lib.json_buf_append_bytes, (b"\xff" * 9, 9), 20),  # not UTF-8; the base64 object does not fit
    (lib.json_buf_append_number_text, (b"-0007.25", 8), 4),
])
def test_append_past_the_limit_leaves_the_buffer_unchanged(nearly_full, fn, args, room):
    b = nearly_full(room)
    assert fn(b, *args) == ERR
    assert (b.len, err(b)) == (JSON_BUF_MAX - room, TOO_LARGE)
    assert fn(nearly_full(room + 64), *args) == OK  # while with room it fits


def test_free_is_safe_and_the_buffer_reusable():
    b = ffi.new("json_buf *")
    lib.json_buf_init(b)
    lib.json_buf_free(b)  # fresh
    lib.json_buf_free(b)  # twice
    lib.json_buf_free(ffi.NULL)
    assert lib.json_buf_reserve(b, 0) == OK and lib.json_buf_append_raw(b, b"", 0) == OK
    assert lib.json_buf_reserve(b, JSON_BUF_MAX + 1) == ERR and err(b) == TOO_LARGE and b.cap == 0
    assert lib.json_buf_append_utf8(b, b"x", 1) == OK and content(b) == b'"x"'
    lib.json_buf_free(b)
    lib.json_buf_free(b)
    assert (b.p, b.len, b.cap, b.err) == (ffi.NULL, 0, 0, ffi.NULL)
    assert lib.json_buf_append_int64(b, 7) == OK and content(b) == b"7"  # usable again
    lib.json_buf_free(b)
