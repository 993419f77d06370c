"""Bounded property tests of the Gearman codec (udf/gm_proto.c) with hypothesis.

The decoder faces whatever a peer sends, so it gets arbitrary bytes and header-shaped
junk; every call goes through test_gm_proto.decode, which checks the contract on each
result (slices inside the packet, counts consistent). Buffers are malloc'ed at their exact
size, so with GMAN_SANITIZE=1 any read past the end is an ASan error. Example counts are
fixed and the database is off: the file runs in a few seconds and writes nothing.
"""
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from test_gm_proto import MAGIC, PROTOCOL_TYPES, REQ, RES, decode, encode, lib, pack

def bounded(n):
    return settings(max_examples=n, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
KNOWN = sorted(num for num, _ in PROTOCOL_TYPES.values())
NARGS = {num: n for num, n in PROTOCOL_TYPES.values()}


def _check_prefixes(data, max_data):
    """Decode data and every prefix of it; results must agree with each other: a verdict
    is reached from the bytes present and more bytes never overturn it."""
    full = decode(data, max_data)
    for k in range(len(data)):
        d = decode(data[:k], max_data)
        if d.rc == lib.GM_ERR:
            # An error is decided by bytes that are there, so it stays an error.
            assert full.rc == lib.GM_ERR and full.errmsg == d.errmsg, (k, d, full)
        elif full.rc == lib.GM_OK:
            if k < full.used:
                assert d.rc == lib.GM_NEED_MORE and d.used == (12 if k < 12 else full.used), (k, d, full)
            else:
                assert (d.rc, d.used, d.type, d.args) == (full.rc, full.used, full.type, full.args)
        else:
            assert d.rc == lib.GM_NEED_MORE, (k, d, full)
    return full


header_magic = st.one_of(st.sampled_from([b"\0REQ", b"\0RES"]), st.binary(min_size=4, max_size=4))
header_type = st.one_of(st.sampled_from(KNOWN), st.integers(0, 40), st.integers(0, 2**32 - 1))


@st.composite
def header_shaped(draw):
    """A header that is mostly plausible, a size near the data actually present, data that
    is mostly NUL-separated pieces: these reach the argument splitter, random bytes don't."""
    magic = draw(header_magic)
    type_ = draw(header_type)
    pieces = draw(st.lists(st.binary(max_size=6), max_size=6))
    data = b"\0".join(pieces) if draw(st.booleans()) else draw(st.binary(max_size=24))
    size = draw(st.one_of(st.just(len(data)), st.integers(0, len(data) + 4), st.integers(0, 2**32 - 1)))
    tail = draw(st.binary(max_size=8))
    return struct.pack(">4sII", magic, type_, size) + data + tail


@bounded(600)
@given(data=st.binary(max_size=48), max_data=st.integers(0, 64))
def test_decode_arbitrary_bytes(data, max_data):
    _check_prefixes(data, max_data)


@bounded(400)
@given(data=header_shaped(), max_data=st.one_of(st.integers(0, 64), st.just(2**32 - 1)))
def test_decode_header_shaped(data, max_data):
    d = _check_prefixes(data, max_data)
    if d.rc == lib.GM_OK:
        assert d.type in NARGS and len(d.args) == NARGS[d.type]


nul_free = st.binary(max_size=16).map(lambda b: b.replace(b"\0", b""))


@st.composite
def packets(draw):
    """(magic, type, args) for any known type, non-last arguments without NUL."""
    type_ = draw(st.sampled_from(KNOWN))
    n = NARGS[type_]
    args = [draw(nul_free) for _ in range(max(n - 1, 0))]
    if n:
        args.append(draw(st.binary(max_size=32)))
    return draw(st.sampled_from([REQ, RES])), type_, args


@bounded(300)
@given(pkt=packets(), trailing=st.binary(max_size=16))
def test_encode_decode_round_trip(pkt, trailing):
    magic, type_, args = pkt
    wire, err = encode(magic, type_, args)
    assert err is None
    assert wire == pack(magic, type_, *args)
    d = decode(wire + trailing, max_data=len(wire) - 12)
    assert (d.rc, d.used, d.magic, d.type, d.args) == (lib.GM_OK, len(wire), magic, type_, args)


@bounded(300)
@given(pkt=packets(), bad=st.integers(0, 3))
def test_encode_rejects_nul_in_non_last_arg(pkt, bad):
    magic, type_, args = pkt
    if len(args) < 2:
        return
    i = bad % (len(args) - 1)
    args[i] = args[i][:1] + b"\0" + args[i][1:]
    assert encode(magic, type_, args) == (None, "NUL byte in argument")


@bounded(300)
@given(pkts=st.lists(packets(), min_size=1, max_size=6), cuts=st.lists(st.integers(0, 400), max_size=8))
def test_stream_cut_anywhere(pkts, cuts):
    """Packets written back to back and read back in arbitrary chunks, the way a
    connection buffer fills: the same packets come out, in order."""
    stream = b"".join(pack(m, t, *a) for m, t, a in pkts)
    bounds = sorted({c % (len(stream) + 1) for c in cuts} | {len(stream)})
    got, pending, start = [], b"", 0
    for end in bounds:
        pending += stream[start:end]
        start = end
        while True:
            d = decode(pending)
            if d.rc == lib.GM_NEED_MORE:
                assert d.used > len(pending)
                break
            assert d.rc == lib.GM_OK, d
            got.append((MAGIC[d.magic], d.type, d.args))
            pending = pending[d.used:]
    assert pending == b""
    assert got == [(MAGIC[m], t, a) for m, t, a in pkts]
