"""Table-driven tests of the Gearman codec (udf/gm_proto.c) through cffi.

Expected bytes are built in Python with struct.pack, independently of the C code, and
the packet type numbers and argument counts are copied from gearman/gearmand PROTOCOL.
Every buffer handed to C is malloc'ed at its exact size, so under GMAN_SANITIZE=1 a read
or write one byte outside it is an ASan error. test_gm_proto_fuzz.py reuses the helpers.
"""
import re
import struct

import pytest

from tests.support import cbuild


def _cdef_from_header(text):
    """The declarations of gm_proto.h in a form cffi's cdef parser takes: comments and
    preprocessor lines dropped, integer #defines kept and substituted (array sizes)."""
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    defines, body = {}, []
    for line in text.splitlines():
        m = re.match(r"\s*#\s*define\s+(GM_\w+)\s+\(?\s*(-?\d+)\s*\)?\s*$", line)
        if m:
            defines[m.group(1)] = int(m.group(2))
        elif not line.lstrip().startswith("#"):
            body.append(line)
    body = "\n".join(body)
    for name, value in defines.items():
        body = re.sub(rf"\b{name}\b", str(value), body)
    consts = "".join(f"#define {name} {value}\n" for name, value in defines.items())
    return consts + body


# GM_OK and GM_ERR come from gm_error.h: its integer #defines only (its struct is not needed here).
_RETURN_CODES = "".join(line + "\n" for line in (cbuild.UDF / "gm_error.h").read_text().splitlines()
                        if re.match(r"#define GM_(OK|ERR) ", line))
CDEF = _cdef_from_header(_RETURN_CODES + (cbuild.UDF / "gm_proto.h").read_text())
ffi, lib = cbuild.load("gm_proto", CDEF)
ffi.cdef("void *malloc(size_t); void free(void *);")
_libc = ffi.dlopen(None)  # the global scope: ASan's malloc when it is preloaded
_exact_new = ffi.new_allocator(alloc=_libc.malloc, free=_libc.free, should_clear_after_alloc=False)

MAGIC = {lib.GM_MAGIC_REQ: b"\0REQ", lib.GM_MAGIC_RES: b"\0RES"}
REQ, RES = lib.GM_MAGIC_REQ, lib.GM_MAGIC_RES
SIZE_MAX = 2 ** (8 * ffi.sizeof("size_t")) - 1
U32_MAX = 2**32 - 1

# gearman/gearmand PROTOCOL: name -> (number, argument count). SUBMIT_JOB_SCHED (8
# arguments, "not currently used") is deliberately unsupported; see gm_proto.c.
PROTOCOL_TYPES = {
    "CAN_DO": (1, 1),
    "CANT_DO": (2, 1),
    "RESET_ABILITIES": (3, 0),
    "PRE_SLEEP": (4, 0),
    "NOOP": (6, 0),
    "SUBMIT_JOB": (7, 3),
    "JOB_CREATED": (8, 1),
    "GRAB_JOB": (9, 0),
    "NO_JOB": (10, 0),
    "JOB_ASSIGN": (11, 3),
    "WORK_STATUS": (12, 3),
    "WORK_COMPLETE": (13, 2),
    "WORK_FAIL": (14, 1),
    "GET_STATUS": (15, 1),
    "ECHO_REQ": (16, 1),
    "ECHO_RES": (17, 1),
    "SUBMIT_JOB_BG": (18, 3),
    "ERROR": (19, 2),
    "STATUS_RES": (20, 5),
    "SUBMIT_JOB_HIGH": (21, 3),
    "SET_CLIENT_ID": (22, 1),
    "CAN_DO_TIMEOUT": (23, 2),
    "ALL_YOURS": (24, 0),
    "WORK_EXCEPTION": (25, 2),
    "OPTION_REQ": (26, 1),
    "OPTION_RES": (27, 1),
    "WORK_DATA": (28, 2),
    "WORK_WARNING": (29, 2),
    "GRAB_JOB_UNIQ": (30, 0),
    "JOB_ASSIGN_UNIQ": (31, 4),
    "SUBMIT_JOB_HIGH_BG": (32, 3),
    "SUBMIT_JOB_LOW": (33, 3),
    "SUBMIT_JOB_LOW_BG": (34, 3),
    "SUBMIT_JOB_EPOCH": (36, 4),
}
UNKNOWN_TYPES = [0, 5, 35, 37, 38, 41, 42, 255, 0x100, 0x10000, 0x01000007, U32_MAX]
T = {name: num for name, (num, _) in PROTOCOL_TYPES.items()}


def pack(magic, type_, *args, size=None):
    """Reference encoding: header, then the arguments joined by NUL bytes."""
    data = b"\0".join(args)
    return struct.pack(">4sII", MAGIC.get(magic, magic), type_, len(data) if size is None else size) + data


def cbuf(data):
    """An exactly sized C copy of data."""
    buf = _exact_new("char[]", len(data))
    ffi.memmove(buf, data, len(data))
    return buf


def _slices(args):
    if not args:
        return ffi.NULL, []
    keep = [cbuf(a) for a in args]
    sl = ffi.new("gm_slice[]", len(args))
    for i, (a, b) in enumerate(zip(args, keep)):
        sl[i].p, sl[i].len = b, len(a)
    return sl, keep


def packet_size(args):
    sl, _keep = _slices(args)
    return lib.gm_proto_packet_size(sl, len(args))


def encode(magic, type_, args, cap=None, fill=b"\xa5"):
    """Returns (bytes or None, errmsg). The output buffer is exactly cap bytes, prefilled
    with fill, and is checked untouched when encoding fails."""
    sl, _keep = _slices(args)
    if cap is None:
        cap = lib.gm_proto_packet_size(sl, len(args))
    out = cbuf(fill * cap)
    err = ffi.new("const char **")
    n = lib.gm_proto_encode(out, cap, magic, type_, sl, len(args), err)
    if n == 0:
        assert err[0] != ffi.NULL
        assert ffi.buffer(out, cap)[:] == fill * cap, "failed encode wrote to the buffer"
        return None, ffi.string(err[0]).decode()
    assert n <= cap
    return ffi.buffer(out, n)[:], None


class Decoded:
    def __init__(self, rc, used, errmsg=None, magic=None, type_=None, size=None, args=None):
        self.rc, self.used, self.errmsg = rc, used, errmsg
        self.magic, self.type, self.size, self.args = magic, type_, size, args

    def __repr__(self):
        return f"Decoded({self.__dict__})"


def decode(data, max_data=1 << 30, buf=None):
    """Decode data (or a caller's C buffer holding it) and check what C reported against
    the contract: slices inside the packet, counts consistent, outputs set per result."""
    if buf is None:
        buf = cbuf(data) if data else ffi.NULL
    pkt = ffi.new("gm_packet *")
    used = ffi.new("size_t *", 12345)
    err = ffi.new("const char **")
    rc = lib.gm_proto_decode(buf, len(data), max_data, pkt, used, err)
    if rc == lib.GM_ERR:
        assert err[0] != ffi.NULL
        assert used[0] == 0
        return Decoded(rc, 0, ffi.string(err[0]).decode())
    if rc == lib.GM_NEED_MORE:
        assert used[0] > len(data)
        assert used[0] == 12 if len(data) < 12 else used[0] == 12 + struct.unpack(">I", data[8:12])[0]
        return Decoded(rc, used[0])
    assert rc == lib.GM_OK, rc
    u = used[0]
    assert 12 <= u <= len(data)
    assert pkt.size == u - 12
    assert MAGIC[pkt.magic] == data[:4]
    assert pkt.type == struct.unpack(">I", data[4:8])[0]
    assert pkt.nargs == lib.gm_proto_arg_count(pkt.type) <= lib.GM_MAX_ARGS
    assert lib.gm_proto_type_name(pkt.type) != ffi.NULL
    base = int(ffi.cast("uintptr_t", buf))
    args = []
    for i in range(lib.GM_MAX_ARGS):
        a = pkt.arg[i]
        if i >= pkt.nargs:
            assert a.p == ffi.NULL and a.len == 0
            continue
        off = int(ffi.cast("uintptr_t", a.p)) - base
        assert 12 <= off and off + a.len <= u, "slice outside the packet"
        args.append(ffi.buffer(a.p, a.len)[:] if a.len else b"")
    for a in args[:-1]:
        assert b"\0" not in a
    assert b"\0".join(args) == data[12:u]
    return Decoded(rc, u, None, pkt.magic, pkt.type, pkt.size, args)


def _ids(cases, label):
    """Short test ids: the case number and a label column (never a bulky bytes value)."""
    return [f"{i}-{c[label]}".replace(" ", "_") for i, c in enumerate(cases)]


# --- the type table ------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PROTOCOL_TYPES, key=lambda n: PROTOCOL_TYPES[n][0]))
def test_type_table_matches_protocol(name):
    num, nargs = PROTOCOL_TYPES[name]
    assert getattr(lib, "GM_" + name) == num
    assert lib.gm_proto_arg_count(num) == nargs
    assert ffi.string(lib.gm_proto_type_name(num)).decode() == name


@pytest.mark.parametrize("num", UNKNOWN_TYPES)
def test_unknown_types(num):
    assert lib.gm_proto_arg_count(num) == 0
    assert lib.gm_proto_type_name(num) == ffi.NULL


def test_every_type_fits_max_args():
    known = [t for t in range(lib.GM_TYPE_MAX + 1) if lib.gm_proto_type_name(t) != ffi.NULL]
    assert sorted(known) == sorted(num for num, _ in PROTOCOL_TYPES.values())
    assert max(lib.gm_proto_arg_count(t) for t in known) == lib.GM_MAX_ARGS


# --- encode ----------------------------------------------------------------------------

BINARY = bytes(range(256)) + b"\0\xff\0"
SUBMITS = ["SUBMIT_JOB", "SUBMIT_JOB_BG", "SUBMIT_JOB_HIGH", "SUBMIT_JOB_HIGH_BG", "SUBMIT_JOB_LOW", "SUBMIT_JOB_LOW_BG"]

ENCODE_CASES = [
    *[(REQ, name, [b"syncToRedis", b"users:42:7f3a", b'{"id":42,"name":"x"}']) for name in SUBMITS],
    *[(REQ, name, [b"fn", b"", b""]) for name in SUBMITS],
    (REQ, "SUBMIT_JOB_BG", [b"fn", b"u", BINARY]),
    (REQ, "SUBMIT_JOB_EPOCH", [b"fn", b"u", b"1700000000", b"work"]),
    (REQ, "CAN_DO", [b"syncToRedis"]),
    (REQ, "CANT_DO", [b"syncToRedis"]),
    (REQ, "CAN_DO_TIMEOUT", [b"syncToRedis", b"5000"]),
    (REQ, "RESET_ABILITIES", []),
    (REQ, "PRE_SLEEP", []),
    (REQ, "GRAB_JOB", []),
    (REQ, "GRAB_JOB_UNIQ", []),
    (REQ, "ALL_YOURS", []),
    (REQ, "WORK_COMPLETE", [b"H:host:1", BINARY]),
    (REQ, "WORK_COMPLETE", [b"H:host:1", b""]),
    (REQ, "WORK_FAIL", [b"H:host:1"]),
    (REQ, "WORK_EXCEPTION", [b"H:host:1", b"Traceback\0..."]),
    (REQ, "WORK_DATA", [b"H:host:1", b"\xff\0\xff"]),
    (REQ, "WORK_WARNING", [b"H:host:1", b"careful"]),
    (REQ, "WORK_STATUS", [b"H:host:1", b"3", b"10"]),
    (REQ, "ECHO_REQ", [b"ping\0pong"]),
    (REQ, "ECHO_REQ", [b""]),
    (REQ, "GET_STATUS", [b"H:host:1"]),
    (REQ, "SET_CLIENT_ID", [b"mysqld-1"]),
    (REQ, "OPTION_REQ", [b"exceptions"]),
    (RES, "JOB_CREATED", [b"H:host:1"]),
    (RES, "NOOP", []),
    (RES, "NO_JOB", []),
    (RES, "JOB_ASSIGN_UNIQ", [b"H:host:1", b"fn", b"uniq", b"work"]),
    (RES, "STATUS_RES", [b"H:host:1", b"1", b"0", b"0", b"0"]),
    (RES, "ERROR", [b"ERR_CODE", b"message"]),
]


@pytest.mark.parametrize("magic,name,args", ENCODE_CASES, ids=_ids(ENCODE_CASES, 1))
def test_encode_matches_reference(magic, name, args):
    expected = pack(magic, T[name], *args)
    assert packet_size(args) == len(expected)
    got, err = encode(magic, T[name], args)
    assert err is None
    assert got == expected
    d = decode(got)
    assert (d.rc, d.used, d.magic, d.type, d.args) == (lib.GM_OK, len(got), magic, T[name], args)


# The worked example at the end of PROTOCOL, byte for byte.
PROTOCOL_EXAMPLE = [
    (REQ, "CAN_DO", [b"reverse"], "00524551" "00000001" "00000007" "72657665727365"),
    (REQ, "GRAB_JOB", [], "005245510000000900000000"),
    (RES, "NO_JOB", [], "00524553" "0000000a" "00000000"),
    (REQ, "PRE_SLEEP", [], "005245510000000400000000"),
    (REQ, "SUBMIT_JOB", [b"reverse", b"", b"test"], "00524551000000070000000d" "7265766572736500" "00" "74657374"),
    (RES, "JOB_CREATED", [b"H:lap:1"], "0052455300000008" "00000007" "483a6c61703a31"),
    (RES, "NOOP", [], "005245530000000600000000"),
    (RES, "JOB_ASSIGN", [b"H:lap:1", b"reverse", b"test"],
     "00524553" "0000000b" "00000014" "483a6c61703a3100" "7265766572736500" "74657374"),
    (REQ, "WORK_COMPLETE", [b"H:lap:1", b"tset"], "00524551" "0000000d" "0000000c" "483a6c61703a3100" "74736574"),
    (RES, "WORK_COMPLETE", [b"H:lap:1", b"tset"], "00524553" "0000000d" "0000000c" "483a6c61703a3100" "74736574"),
]


@pytest.mark.parametrize("magic,name,args,hexbytes", PROTOCOL_EXAMPLE, ids=_ids(PROTOCOL_EXAMPLE, 1))
def test_protocol_example(magic, name, args, hexbytes):
    wire = bytes.fromhex(hexbytes)
    assert encode(magic, T[name], args) == (wire, None)
    d = decode(wire)
    assert (d.rc, d.used, d.magic, d.type, d.args) == (lib.GM_OK, len(wire), magic, T[name], args)


ENCODE_ERRORS = [
    (REQ, T["SUBMIT_JOB_BG"], [b"fn", b"u"], "wrong argument count"),
    (REQ, T["SUBMIT_JOB_BG"], [b"fn", b"u", b"w", b"x"], "wrong argument count"),
    (REQ, T["SUBMIT_JOB"], [], "wrong argument count"),
    (REQ, T["GRAB_JOB"], [b""], "wrong argument count"),
    (RES, T["NOOP"], [b"x"], "wrong argument count"),
    (REQ, T["CAN_DO"], [], "wrong argument count"),
    (REQ, T["CAN_DO"], [b"a", b"b"], "wrong argument count"),
    (RES, T["STATUS_RES"], [b"H", b"1", b"0", b"0"], "wrong argument count"),
    (REQ, T["SUBMIT_JOB_BG"], [b"f\0n", b"u", b"w"], "NUL byte in argument"),
    (REQ, T["SUBMIT_JOB_BG"], [b"fn", b"\0", b"w"], "NUL byte in argument"),
    (REQ, T["SUBMIT_JOB_BG"], [b"fn", b"u\0", b"w"], "NUL byte in argument"),
    (REQ, T["WORK_COMPLETE"], [b"\0H:1", b"w"], "NUL byte in argument"),
    (RES, T["JOB_ASSIGN_UNIQ"], [b"H", b"f", b"u\0", b"w"], "NUL byte in argument"),
    (RES, T["STATUS_RES"], [b"H", b"1", b"0", b"0\0", b"0"], "NUL byte in argument"),
    (REQ, 2, [b"a\0b"], None),  # CANT_DO: its only argument is the last one
    *[(REQ, t, [], "unknown packet type") for t in UNKNOWN_TYPES],
    (REQ, 35, [b"fn", b"u", b"0", b"0", b"1", b"1", b"0", b"w"], "unknown packet type"),  # SUBMIT_JOB_SCHED
    (2, T["NOOP"], [], "bad magic"),
    (U32_MAX, T["NOOP"], [], "bad magic"),
]


@pytest.mark.parametrize("magic,type_,args,msg", ENCODE_ERRORS, ids=_ids(ENCODE_ERRORS, 3))
def test_encode_errors(magic, type_, args, msg):
    sl, _keep = _slices(args)
    cap = 64
    out = cbuf(b"\xa5" * cap)
    err = ffi.new("const char **")
    n = lib.gm_proto_encode(out, cap, magic, type_, sl, len(args), err)
    if msg is None:
        assert n == len(pack(magic, type_, *args))
        return
    assert n == 0
    assert ffi.string(err[0]).decode() == msg
    assert ffi.buffer(out, cap)[:] == b"\xa5" * cap


SHORT_CASES = [c for c in ENCODE_CASES if sum(map(len, c[2])) < 64]


@pytest.mark.parametrize("magic,name,args", SHORT_CASES, ids=_ids(SHORT_CASES, 1))
def test_encode_every_short_cap_fails(magic, name, args):
    full = pack(magic, T[name], *args)
    for cap in range(len(full)):
        assert encode(magic, T[name], args, cap=cap) == (None, "buffer too small")
    assert encode(magic, T[name], args, cap=len(full) + 7)[0] == full


def test_encode_null_output():
    err = ffi.new("const char **")
    assert lib.gm_proto_encode(ffi.NULL, 0, REQ, T["GRAB_JOB"], ffi.NULL, 0, err) == 0
    assert ffi.string(err[0]) == b"buffer too small"
    # errmsg may be NULL
    assert lib.gm_proto_encode(ffi.NULL, 0, REQ, T["GRAB_JOB"], ffi.NULL, 0, ffi.NULL) == 0


def test_encode_args_array_missing():
    err = ffi.new("const char **")
    out = cbuf(b"\0" * 64)
    assert lib.gm_proto_encode(out, 64, REQ, T["CAN_DO"], ffi.NULL, 1, err) == 0
    assert ffi.string(err[0]) == b"wrong argument count"


def test_encode_null_pointer_with_length():
    sl = ffi.new("gm_slice[]", 1)
    sl[0].p, sl[0].len = ffi.NULL, 3
    err = ffi.new("const char **")
    out = cbuf(b"\0" * 64)
    assert lib.gm_proto_encode(out, 64, REQ, T["CAN_DO"], sl, 1, err) == 0
    assert ffi.string(err[0]) == b"NULL argument"
    sl[0].len = 0  # NULL with length 0 is an empty argument
    assert ffi.buffer(out, lib.gm_proto_encode(out, 64, REQ, T["CAN_DO"], sl, 1, err))[:] == pack(REQ, 1)


def _fake_slices(lens):
    """Slices with the given lengths over a 1-byte buffer: only for calls that must refuse
    them from the lengths alone, never reading the bytes."""
    one = cbuf(b"x")
    sl = ffi.new("gm_slice[]", len(lens))
    for i, n in enumerate(lens):
        sl[i].p, sl[i].len = one, n
    return sl, one


@pytest.mark.parametrize("lens,expected", [
    ([], 12),
    ([0], 12),
    ([0, 0], 13),
    ([0, 0, 0, 0, 0], 16),
    ([7], 19),
    ([7, 0, 4], 25),
    ([U32_MAX], 12 + U32_MAX),
    ([U32_MAX - 2, 1], 12 + U32_MAX),
    ([U32_MAX - 1, 1], 0),
    ([U32_MAX, 0], 0),
    ([U32_MAX + 1], 0),
    ([2**31, 2**31], 0),
    ([SIZE_MAX], 0),
    ([SIZE_MAX, SIZE_MAX, 2], 0),
    ([2**31 - 2, 2**31 - 2, 1], 12 + U32_MAX),
    ([2**31 - 2, 2**31 - 2, 2], 0),
])
def test_packet_size(lens, expected):
    if expected > SIZE_MAX:  # a 32-bit build cannot express it
        expected = 0
    sl, _keep = _fake_slices(lens)
    assert lib.gm_proto_packet_size(sl if lens else ffi.NULL, len(lens)) == expected


def test_packet_size_null_args():
    assert lib.gm_proto_packet_size(ffi.NULL, 0) == 12
    assert lib.gm_proto_packet_size(ffi.NULL, 2) == 0


def test_encode_refuses_oversize_without_reading():
    err = ffi.new("const char **")
    out = cbuf(b"\0" * 64)
    for lens in ([U32_MAX + 1], [2, 2**32, 1], [U32_MAX - 20, 1, 20]):
        sl, _keep = _fake_slices(lens)
        type_ = {1: T["CAN_DO"], 3: T["SUBMIT_JOB_BG"]}[len(lens)]
        assert lib.gm_proto_encode(out, 64, REQ, type_, sl, len(lens), err) == 0
        assert ffi.string(err[0]) == b"packet too large"


# --- decode -------------------------------------------------------------------------------

MIB = bytes(range(256)) * 4096

DECODE_CASES = [
    (RES, "JOB_CREATED", b"H:lap:1", [b"H:lap:1"]),
    (RES, "JOB_CREATED", b"", [b""]),
    (RES, "WORK_COMPLETE", b"H:1\0result", [b"H:1", b"result"]),
    (RES, "WORK_COMPLETE", b"H:1\0\x00\xff\x00\xff", [b"H:1", b"\x00\xff\x00\xff"]),
    (RES, "WORK_COMPLETE", b"H:1\0", [b"H:1", b""]),
    (RES, "WORK_COMPLETE", b"\0\0", [b"", b"\0"]),
    (RES, "WORK_COMPLETE", b"H:1\0" + MIB, [b"H:1", MIB]),
    (RES, "WORK_FAIL", b"H:1", [b"H:1"]),
    (RES, "WORK_EXCEPTION", b"H:1\0ValueError\0\xff", [b"H:1", b"ValueError\0\xff"]),
    (RES, "WORK_DATA", b"H:1\0\xff\xfe", [b"H:1", b"\xff\xfe"]),
    (RES, "WORK_WARNING", b"H:1\0warn", [b"H:1", b"warn"]),
    (RES, "WORK_STATUS", b"H:1\0" b"3\0" b"10", [b"H:1", b"3", b"10"]),
    (RES, "ERROR", b"ERR_X\0something failed", [b"ERR_X", b"something failed"]),
    (RES, "ERROR", b"\0", [b"", b""]),
    (RES, "NOOP", b"", []),
    (RES, "NO_JOB", b"", []),
    (RES, "JOB_ASSIGN", b"H:1\0fn\0work\0load", [b"H:1", b"fn", b"work\0load"]),
    (RES, "JOB_ASSIGN_UNIQ", b"H:1\0fn\0uniq\0work", [b"H:1", b"fn", b"uniq", b"work"]),
    (RES, "JOB_ASSIGN_UNIQ", b"H:1\0fn\0\0", [b"H:1", b"fn", b"", b""]),
    (RES, "JOB_ASSIGN_UNIQ", b"H:1\0fn\0u\0\0\0", [b"H:1", b"fn", b"u", b"\0\0"]),
    (RES, "STATUS_RES", b"H:1\0" b"1\0" b"1\0" b"42\0" b"100", [b"H:1", b"1", b"1", b"42", b"100"]),
    (RES, "STATUS_RES", b"\0\0\0\0", [b"", b"", b"", b"", b""]),
    (RES, "ECHO_RES", b"ping\0\xff\0", [b"ping\0\xff\0"]),
    (RES, "ECHO_RES", b"", [b""]),
    (RES, "OPTION_RES", b"exceptions", [b"exceptions"]),
    (REQ, "SUBMIT_JOB_BG", b"fn\0uniq\0{}", [b"fn", b"uniq", b"{}"]),
    (REQ, "GRAB_JOB_UNIQ", b"", []),
    (REQ, "CAN_DO_TIMEOUT", b"fn\x005000", [b"fn", b"5000"]),
]


def _raw(magic, name, data):
    return struct.pack(">4sII", MAGIC[magic], T[name], len(data)) + data


@pytest.mark.parametrize("magic,name,data,args", DECODE_CASES, ids=_ids(DECODE_CASES, 1))
def test_decode(magic, name, data, args):
    wire = _raw(magic, name, data)
    d = decode(wire)
    assert (d.rc, d.used, d.magic, d.type, d.size, d.args) == (lib.GM_OK, len(wire), magic, T[name], len(data), args)
    # Bytes after the packet belong to the next one and change nothing.
    d2 = decode(wire + b"\0RES\0\0")
    assert (d2.rc, d2.used, d2.args) == (lib.GM_OK, len(wire), args)
    # A limit of exactly the data size is enough; one less refuses it.
    assert decode(wire, max_data=len(data)).rc == lib.GM_OK
    if data:
        assert decode(wire, max_data=len(data) - 1).errmsg == "packet larger than limit"


SPLIT_PACKETS = [
    _raw(RES, "JOB_CREATED", b"H:lap:1"),
    _raw(RES, "NOOP", b""),
    _raw(RES, "WORK_COMPLETE", b"H:1\0\x00\xff"),
    _raw(RES, "STATUS_RES", b"H:1\0" b"1\0" b"0\0" b"1\0" b"2"),
    _raw(RES, "JOB_ASSIGN_UNIQ", b"H:1\0fn\0u\0w"),
]


@pytest.mark.parametrize("wire", SPLIT_PACKETS, ids=range(len(SPLIT_PACKETS)))
def test_split_reads(wire):
    for k in range(len(wire)):
        d = decode(wire[:k])
        assert d.rc == lib.GM_NEED_MORE, k
        assert d.used == (12 if k < 12 else len(wire)), k
    d = decode(wire)
    assert (d.rc, d.used) == (lib.GM_OK, len(wire))


def test_split_read_one_mib():
    wire = _raw(RES, "WORK_COMPLETE", b"H:1\0" + MIB)
    for k in (0, 1, 11, 12, 13, 16, len(wire) // 2, len(wire) - 1):
        assert (decode(wire[:k]).rc, decode(wire[:k]).used) == (lib.GM_NEED_MORE, 12 if k < 12 else len(wire))
    assert decode(wire).args == [b"H:1", MIB]


def test_decode_null_buffer_empty():
    d = decode(b"", buf=ffi.NULL)
    assert (d.rc, d.used) == (lib.GM_NEED_MORE, 12)


def _decode_stream(stream, max_data=1 << 30):
    """Decode packets one after another from one buffer, as a connection does after one
    read() returned several. Returns (packets, leftover result)."""
    buf = cbuf(stream)
    out, off = [], 0
    while True:
        view = ffi.cast("char *", buf) + off
        d = decode(stream[off:], max_data=max_data, buf=view if off < len(stream) else ffi.NULL)
        if d.rc != lib.GM_OK:
            return out, d
        out.append((d.type, d.args))
        off += d.used


def test_merged_reads():
    a = _raw(RES, "JOB_CREATED", b"H:1")
    b = _raw(RES, "WORK_COMPLETE", b"H:1\0\0done\xff")
    c = _raw(RES, "NOOP", b"")
    e = _raw(RES, "ERROR", b"E\0text")
    expect = [(T["JOB_CREATED"], [b"H:1"]), (T["WORK_COMPLETE"], [b"H:1", b"\0done\xff"]), (T["NOOP"], [])]
    pkts, tail = _decode_stream(a + b)
    assert pkts == expect[:2] and (tail.rc, tail.used) == (lib.GM_NEED_MORE, 12)
    pkts, tail = _decode_stream(a + b + c)
    assert pkts == expect and (tail.rc, tail.used) == (lib.GM_NEED_MORE, 12)
    for k in range(1, len(e)):
        pkts, tail = _decode_stream(a + b + c + e[:k])
        assert pkts == expect
        assert (tail.rc, tail.used) == (lib.GM_NEED_MORE, 12 if k < 12 else len(e))
    pkts, tail = _decode_stream(a + b + c + e + b"GET")
    assert pkts == expect + [(T["ERROR"], [b"E", b"text"])]
    assert tail.errmsg == "bad magic"


def _hdr(magic, type_, size):
    return struct.pack(">4sII", magic, type_, size)


DECODE_ERRORS = [
    # bad magic, judged on the bytes present
    (b"\0REX" + bytes(8), "bad magic"),
    (b"\0req" + bytes(8), "bad magic"),
    (b"REQ\0" + bytes(8), "bad magic"),
    (b"\0RE", None),
    (b"\0RES\0\0\0", None),  # type not complete yet: wait
    (b"G", "bad magic"),
    (b"GET /", "bad magic"),
    (b"status\n", "bad magic"),
    (b"\x01", "bad magic"),
    (b"\0\0", "bad magic"),
    (b"\0RQ", "bad magic"),
    # unknown type, judged once its 4 bytes are there, before the size
    *[(_hdr(b"\0RES", t, 0)[:8], "unknown packet type") for t in UNKNOWN_TYPES],
    *[(_hdr(b"\0REQ", t, 3) + b"abc", "unknown packet type") for t in UNKNOWN_TYPES],
    (_hdr(b"\0RES", 0, 0)[:7], None),
    # size over the limit, announced in a header with no data behind it
    (_hdr(b"\0RES", T["WORK_COMPLETE"], 1025), "packet larger than limit"),
    (_hdr(b"\0RES", T["WORK_COMPLETE"], U32_MAX), "packet larger than limit"),
    (_hdr(b"\0RES", T["ECHO_RES"], 2**31), "packet larger than limit"),
    # data on types that carry none
    *[(_hdr(b"\0RES", T[n], 1), "data on a packet without arguments") for n in ("NOOP", "NO_JOB", "GRAB_JOB", "PRE_SLEEP")],
    (_hdr(b"\0RES", T["NOOP"], 1024) + b"x" * 1024, "data on a packet without arguments"),
    (_hdr(b"\0RES", T["NOOP"], U32_MAX), "packet larger than limit"),
    # fewer NUL separators than the type has arguments
    (_raw(RES, "WORK_COMPLETE", b"H:1"), "truncated arguments"),
    (_raw(RES, "WORK_COMPLETE", b""), "truncated arguments"),
    (_raw(RES, "ERROR", b"ERR"), "truncated arguments"),
    (_raw(RES, "JOB_ASSIGN", b"H:1\0fn"), "truncated arguments"),
    (_raw(RES, "JOB_ASSIGN_UNIQ", b"H:1\0fn\0uniq"), "truncated arguments"),
    (_raw(RES, "STATUS_RES", b"H:1\0" b"1\0" b"0\0" b"100"), "truncated arguments"),
    (_raw(RES, "STATUS_RES", b"\0\0\0"), "truncated arguments"),
    (_raw(RES, "WORK_STATUS", b"H:1\0" b"3"), "truncated arguments"),
    (_raw(REQ, "SUBMIT_JOB_BG", b"fn\0uw"), "truncated arguments"),
    # the NUL must be inside the packet, not in the next one
    (_raw(RES, "WORK_COMPLETE", b"H:1") + b"\0RES", "truncated arguments"),
]


@pytest.mark.parametrize("wire,msg", DECODE_ERRORS, ids=_ids(DECODE_ERRORS, 1))
def test_decode_errors(wire, msg):
    d = decode(wire, max_data=1024)
    if msg is None:
        assert (d.rc, d.used) == (lib.GM_NEED_MORE, 12)
    else:
        assert (d.rc, d.errmsg) == (lib.GM_ERR, msg)


def test_size_at_limit_waits_for_data():
    wire = _hdr(b"\0RES", T["WORK_COMPLETE"], 1024)
    assert (decode(wire, max_data=1024).rc, decode(wire, max_data=1024).used) == (lib.GM_NEED_MORE, 12 + 1024)
    assert decode(wire, max_data=0).errmsg == "packet larger than limit"
    big = _hdr(b"\0RES", T["WORK_COMPLETE"], U32_MAX)
    d = decode(big, max_data=SIZE_MAX)
    if SIZE_MAX > U32_MAX:
        assert (d.rc, d.used) == (lib.GM_NEED_MORE, 12 + U32_MAX)
    else:
        assert d.errmsg == "packet larger than limit"


def test_decode_null_outputs():
    wire = _raw(RES, "NOOP", b"")
    buf = cbuf(wire)
    pkt = ffi.new("gm_packet *")
    used = ffi.new("size_t *", 99)
    err = ffi.new("const char **")
    assert lib.gm_proto_decode(buf, len(wire), 1024, ffi.NULL, used, err) == lib.GM_ERR
    assert used[0] == 0 and ffi.string(err[0]) == b"invalid argument"
    assert lib.gm_proto_decode(buf, len(wire), 1024, pkt, ffi.NULL, err) == lib.GM_ERR
    assert lib.gm_proto_decode(ffi.NULL, 5, 1024, pkt, used, err) == lib.GM_ERR
    # errmsg may be NULL
    assert lib.gm_proto_decode(cbuf(b"XX"), 2, 1024, pkt, used, ffi.NULL) == lib.GM_ERR
    assert lib.gm_proto_decode(buf, len(wire), 1024, pkt, used, ffi.NULL) == lib.GM_OK
