"""The Python Gearman codec (pygen/gearman/protocol.py), with no server.

Expected bytes are built with struct.pack, independently of the encoder; type numbers and
argument counts are copied from gearman/gearmand PROTOCOL.
"""
import struct
import uuid

import pytest
from hypothesis import given, settings, strategies as st

from pygen.gearman.client import _handle, uuid4_hex
from pygen.gearman.connection import parse_server
from pygen.gearman.protocol import (ARG_COUNT, HEADER_SIZE, REQ, RES, Decoder, ProtocolError, Type,
                                 encode, split_args)

PROTOCOL_TYPES = {
    "CAN_DO": (1, 1), "CANT_DO": (2, 1), "RESET_ABILITIES": (3, 0), "PRE_SLEEP": (4, 0),
    "NOOP": (6, 0), "SUBMIT_JOB": (7, 3), "JOB_CREATED": (8, 1), "GRAB_JOB": (9, 0),
    "NO_JOB": (10, 0), "JOB_ASSIGN": (11, 3), "WORK_STATUS": (12, 3), "WORK_COMPLETE": (13, 2),
    "WORK_FAIL": (14, 1), "GET_STATUS": (15, 1), "ECHO_REQ": (16, 1), "ECHO_RES": (17, 1),
    "SUBMIT_JOB_BG": (18, 3), "ERROR": (19, 2), "STATUS_RES": (20, 5), "SUBMIT_JOB_HIGH": (21, 3),
    "SET_CLIENT_ID": (22, 1), "CAN_DO_TIMEOUT": (23, 2), "ALL_YOURS": (24, 0),
    "WORK_EXCEPTION": (25, 2), "OPTION_REQ": (26, 1), "OPTION_RES": (27, 1), "WORK_DATA": (28, 2),
    "WORK_WARNING": (29, 2), "GRAB_JOB_UNIQ": (30, 0), "JOB_ASSIGN_UNIQ": (31, 4),
    "SUBMIT_JOB_HIGH_BG": (32, 3), "SUBMIT_JOB_LOW": (33, 3), "SUBMIT_JOB_LOW_BG": (34, 3),
    "SUBMIT_JOB_SCHED": (35, 8), "SUBMIT_JOB_EPOCH": (36, 4), "SUBMIT_REDUCE_JOB": (37, 4),
    "SUBMIT_REDUCE_JOB_BACKGROUND": (38, 4), "GRAB_JOB_ALL": (39, 0), "JOB_ASSIGN_ALL": (40, 5),
    "GET_STATUS_UNIQUE": (41, 1), "STATUS_RES_UNIQUE": (42, 6),
}


def packet(magic, type, data=b""):
    return struct.pack(">4sII", magic, type, len(data)) + data


def test_type_table_matches_protocol():
    assert {t.name: (int(t), ARG_COUNT[t]) for t in Type} == PROTOCOL_TYPES
    assert set(ARG_COUNT) == {int(t) for t in Type}


@pytest.mark.parametrize("magic,type,args,data", [
    (REQ, Type.CAN_DO, [b"reverse"], b"reverse"),
    (REQ, Type.GRAB_JOB, [], b""),
    (REQ, Type.PRE_SLEEP, [], b""),
    (REQ, Type.SUBMIT_JOB, [b"reverse", b"", b"test"], b"reverse\0\0test"),
    (REQ, Type.SUBMIT_JOB_BG, ["fn", "u1", b"\0\xff\0"], b"fn\0u1\0\0\xff\0"),
    (RES, Type.JOB_CREATED, [b"H:lap:1"], b"H:lap:1"),
    (REQ, Type.WORK_COMPLETE, ["H:lap:1", b"tset"], b"H:lap:1\0tset"),
    (REQ, Type.WORK_COMPLETE, ["H:lap:1", b""], b"H:lap:1\0"),
    (RES, Type.JOB_ASSIGN_UNIQ, [b"H:x:2", b"f", b"u", b"a\0b"], b"H:x:2\0f\0u\0a\0b"),
    (RES, Type.STATUS_RES, [b"H", b"1", b"0", b"3", b"10"], b"H\x001\x000\x003\x0010"),
    (REQ, Type.SET_CLIENT_ID, ["w\u00e9"], "w\u00e9".encode()),
])
def test_encode_byte_exact(magic, type, args, data):
    assert encode(magic, type, *args) == packet(magic, int(type), data)


def test_encode_protocol_example():
    # the CAN_DO and SUBMIT_JOB bytes of PROTOCOL's "Binary Protocol Example"
    assert encode(REQ, Type.CAN_DO, b"reverse").hex(" ") == \
        "00 52 45 51 00 00 00 01 00 00 00 07 72 65 76 65 72 73 65"
    assert encode(REQ, Type.SUBMIT_JOB, b"reverse", b"", b"test").hex() == \
        "00524551" "00000007" "0000000d" "7265766572736500" "00" "74657374"


@pytest.mark.parametrize("magic,type,args", [
    (REQ, Type.SUBMIT_JOB_BG, [b"f\0n", b"u", b"w"]),   # NUL in the function
    (REQ, Type.SUBMIT_JOB_BG, [b"f", b"u\0", b"w"]),    # NUL in the unique id
    (REQ, Type.WORK_COMPLETE, ["H:\0", b""]),
    (REQ, Type.SUBMIT_JOB_BG, [b"f", b"w"]),            # too few
    (REQ, Type.GRAB_JOB, [b"x"]),                       # too many
    (REQ, 5, []),                                       # unused number
    (REQ, 43, [b"x"]),
    (b"\0REX", Type.NOOP, []),
])
def test_encode_refuses(magic, type, args):
    with pytest.raises(ValueError):
        encode(magic, type, *args)


def test_encode_refuses_non_bytes():
    with pytest.raises(TypeError):
        encode(REQ, Type.SUBMIT_JOB_BG, "f", "u", 5)  # bytes(5) would be five NULs


def test_decoder_merged_feed():
    d = Decoder(RES)
    d.feed(packet(RES, 8, b"H:a:1") + packet(RES, 10) + packet(RES, 31, b"H:a:2\0fn\0u\0\0data\0") +
           packet(RES, 6))
    assert list(d) == [(8, (b"H:a:1",)), (10, ()), (31, (b"H:a:2", b"fn", b"u", b"\0data\0")), (6, ())]
    assert d.buffered == 0 and list(d) == []


def test_decoder_byte_by_byte():
    wire = packet(RES, 13, b"H:a:1\0result") + packet(RES, 19, b"ERR\0text")
    d, out = Decoder(RES), []
    for i in range(len(wire)):
        d.feed(wire[i:i + 1])
        out += list(d)
        if i < len(wire) // 2 - 1:
            assert out == []
    assert out == [(13, (b"H:a:1", b"result")), (19, (b"ERR", b"text"))]


def test_decoder_split_header_and_data():
    wire = packet(RES, 17, b"x" * 1000)
    d = Decoder(RES)
    d.feed(wire[:5])
    assert d.next_packet() is None
    d.feed(wire[5:500])
    assert d.next_packet() is None
    d.feed(wire[500:] + wire[:3])
    assert d.next_packet() == (17, (b"x" * 1000,))
    assert d.next_packet() is None and d.buffered == 3


def test_decoder_refuses_oversize_from_header():
    d = Decoder(RES, max_data=1024)
    d.feed(packet(RES, 17, b"y" * 1024))
    assert d.next_packet() == (17, (b"y" * 1024,))
    with pytest.raises(ProtocolError, match="limit"):
        d.feed(struct.pack(">4sII", RES, 17, 1025))  # header alone: refused before any data
    with pytest.raises(ProtocolError, match="limit"):
        Decoder(RES).feed(struct.pack(">4sII", RES, 17, 2**32 - 1))


@pytest.mark.parametrize("head", [b"\0REQ", b"HTTP", b"\x01", b"\0RX", b"OK\r\n"])
def test_decoder_bad_magic(head):
    with pytest.raises(ProtocolError, match="magic"):
        Decoder(RES).feed(head)


def test_decoder_req_side():
    d = Decoder(REQ)
    d.feed(encode(REQ, Type.GRAB_JOB_UNIQ))
    assert d.next_packet() == (30, ())
    with pytest.raises(ProtocolError):
        d.feed(packet(RES, 6))


@pytest.mark.parametrize("wire,match", [
    (packet(RES, 5), "unknown"),
    (packet(RES, 0), "unknown"),
    (packet(RES, 99, b"x"), "unknown"),
    (packet(RES, 10, b"x"), "no data"),               # NO_JOB with data
    (packet(RES, 31, b"H:1\0f\0u"), "3 of 4"),        # JOB_ASSIGN_UNIQ missing the workload
    (packet(RES, 19, b"ERR"), "1 of 2"),
])
def test_decoder_refuses_malformed(wire, match):
    d = Decoder(RES)
    with pytest.raises(ProtocolError, match=match):
        d.feed(wire)
        d.next_packet()


def test_decoder_many_small_packets_linear():
    d = Decoder(RES)
    d.feed(packet(RES, 8, b"H:host:12345") * 20000)
    assert sum(1 for _ in d) == 20000


def test_split_args_last_keeps_nuls():
    assert split_args(Type.WORK_COMPLETE, b"H\0\0\0") == (b"H", b"\0\0")
    assert split_args(Type.JOB_CREATED, b"a\0b") == (b"a\0b",)


def test_handle_strips_forwarded_nul():
    assert _handle(b"H:a:1\0") == b"H:a:1" and _handle(b"H:a:1") == b"H:a:1"


def test_uuid4_hex_is_a_uuid4():
    values = {uuid4_hex() for _ in range(1000)}
    assert len(values) == 1000
    for v in values:
        u = uuid.UUID(hex=v)
        assert u.version == 4 and u.variant == uuid.RFC_4122 and u.hex == v


@pytest.mark.parametrize("spec,expected", [
    ("127.0.0.1:4731", ("127.0.0.1", 4731)), ("gm.local", ("gm.local", 4730)),
    ("[::1]:5000", ("::1", 5000)), ("[::1]", ("::1", 4730)), (("h", "7"), ("h", 7)),
])
def test_parse_server(spec, expected):
    assert parse_server(spec) == expected


_nul_free = st.binary(max_size=40).filter(lambda b: b"\0" not in b)


@st.composite
def packets(draw):
    magic = draw(st.sampled_from([REQ, RES]))
    type = draw(st.sampled_from(sorted(ARG_COUNT)))
    n = ARG_COUNT[type]
    args = [draw(_nul_free) for _ in range(n - 1)] + ([draw(st.binary(max_size=300))] if n else [])
    return magic, type, tuple(args)


@settings(max_examples=300, deadline=None)
@given(st.lists(packets(), min_size=1, max_size=8), st.data())
def test_roundtrip_any_split(pkts, data):
    magic = pkts[0][0]
    pkts = [(magic, t, a) for _, t, a in pkts]
    wire = b"".join(encode(m, t, *a) for m, t, a in pkts)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=6)))
    d, out, last = Decoder(magic), [], 0
    for cut in cuts + [len(wire)]:
        d.feed(wire[last:cut])
        out += list(d)
        last = cut
    assert out == [(t, a) for _, t, a in pkts]
    assert d.buffered == 0


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=HEADER_SIZE, max_size=200))
def test_decoder_never_crashes_on_garbage(blob):
    d = Decoder(RES, max_data=100)
    try:
        d.feed(blob)
        for type, args in d:
            assert len(args) == ARG_COUNT[type]
    except ProtocolError:
        pass
