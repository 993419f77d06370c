"""The C core (JSON encoder and validator, Gearman codec) built for aarch64 with Debian's
gcc-aarch64-linux-gnu and run under qemu-aarch64, on the case tables of the x86-64 cffi
unit tests (tests/unit/test_json_buf.py, test_gm_proto.py) and their expectations.

cffi cannot load an aarch64 library here, so tests/integration/core_driver.c reads the cases
as text and prints what the C functions returned. The same driver built natively must give
the same answers: that checks the driver itself against what the cffi tests check.
"""
import base64
import struct
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "unit"))
import test_gm_proto as P  # noqa: E402  (the codec's case tables)
import test_json_buf as J  # noqa: E402  (the encoder's case tables)

UDF = ROOT / "udf"
SOURCES = [UDF / "json_buf.c", UDF / "json_check.c", UDF / "gm_proto.c", Path(__file__).with_name("core_driver.c")]
# The plugin's own warning and optimisation flags (CMakeLists.txt).
CFLAGS = ["-std=gnu11", "-O2", "-fno-strict-aliasing", "-Wall", "-Wextra", "-Werror", "-Wno-format-truncation",
          "-I", str(UDF)]
AARCH64_ROOT = "/usr/aarch64-linux-gnu"
NEXT = b"\0RES\0\0"  # the start of a next packet, which must change nothing


def h(data):
    return data.hex() if data else "-"


def cases():
    """(input line, expected output line or a predicate on it)."""
    out = []
    for data, expected in J.STRING_CASES:
        out += [(f"utf8 {h(data)}", f"0 {h(expected.encode())} -"), (f"bytes {h(data)}", f"0 {h(expected.encode())} -")]
    for data in J.INVALID_UTF8:
        b64 = '{"$base64":"%s"}' % base64.b64encode(data).decode()
        out += [(f"utf8 {h(data)}", "-1 - invalid UTF-8"), (f"bytes {h(data)}", f"0 {h(b64.encode())} -")]
    out += [(f"seqlen {h(data)}", str(n)) for data, n in J.SEQ_LEN_CASES]
    for i in (-(2**63), 2**63 - 1, -1, 0, 42):
        out.append((f"int64 {i}", f"0 {h(str(i).encode())} -"))
    for u in (2**64 - 1, 2**63, 0, 1):
        out.append((f"uint64 {u}", f"0 {h(str(u).encode())} -"))
    for v, text in J.DOUBLE_CASES:
        bits = struct.unpack("<Q", struct.pack("<d", v))[0]
        if text is None:
            out.append((f"double {bits:x}", lambda got, v=v: got.startswith("0 ")
                        and float(bytes.fromhex(got.split()[1])) == v))
        else:
            out.append((f"double {bits:x}", f"0 {h(text.encode())} -"))
    out += [(f"numtext {h(t)}", f"{J.NUM_OK} {h(e)} -") for t, e in J.NUMBER_TEXT_OK]
    out += [(f"numtext {h(t)}", f"{J.NUM_NOT_FINITE} {h(b'null')} -") for t in J.NUMBER_TEXT_NOT_FINITE]
    out += [(f"numtext {h(t)}", f"{J.NUM_INVALID} - -") for t in J.NUMBER_TEXT_INVALID]
    out += [(f"valid {h(doc)}", "1") for doc in J.VALID] + [(f"valid {h(doc)}", "0") for doc in J.INVALID]

    def encode(magic, type_, args, cap):
        return f"encode {magic} {type_} {cap} " + " ".join(h(a) for a in args)

    def decoded(magic, type_, data, args):
        wire_len = 12 + len(data)
        return f"0 {wire_len} {magic} {type_} {len(data)} {len(args)}" + "".join(f" {h(a)}" for a in args)

    for magic, name, args in P.ENCODE_CASES:
        wire = P.pack(magic, P.T[name], *args)
        out.append((encode(magic, P.T[name], args, len(wire)), f"{len(wire)} {h(wire)}"))
        out.append((f"decode {1 << 30} {h(wire)}", decoded(magic, P.T[name], wire[12:], args)))
    for magic, name, args in P.SHORT_CASES:
        wire = P.pack(magic, P.T[name], *args)
        out += [(encode(magic, P.T[name], args, cap), "0 buffer too small") for cap in range(len(wire))]
    for magic, name, args, hexbytes in P.PROTOCOL_EXAMPLE:
        out.append((encode(magic, P.T[name], args, 64), f"{len(hexbytes) // 2} {hexbytes}"))
    for magic, type_, args, msg in P.ENCODE_ERRORS:
        if msg is None:
            wire = P.pack(magic, type_, *args)
            out.append((encode(magic, type_, args, 64), f"{len(wire)} {h(wire)}"))
        else:
            out.append((encode(magic, type_, args, 64), f"0 {msg}"))
    for magic, name, data, args in P.DECODE_CASES:
        wire = P._raw(magic, name, data)
        out.append((f"decode {1 << 30} {h(wire + NEXT)}", decoded(magic, P.T[name], data, args)))
        out.append((f"decode {len(data)} {h(wire)}", decoded(magic, P.T[name], data, args)))
        if data:
            out.append((f"decode {len(data) - 1} {h(wire)}", "-1 0 packet larger than limit"))
    for wire, msg in P.DECODE_ERRORS:
        out.append((f"decode 1024 {h(wire)}", "1 12" if msg is None else f"-1 0 {msg}"))
    for wire in P.SPLIT_PACKETS:
        out += [(f"decode {1 << 30} {h(wire[:k])}", f"1 {12 if k < 12 else len(wire)}") for k in range(len(wire))]
    out += [(f"argc {num}", f"{count} {name}") for name, (num, count) in P.PROTOCOL_TYPES.items()]
    out += [(f"argc {num}", "0 -") for num in P.UNKNOWN_TYPES]
    return out


CASES = cases()


def build(compiler, out):
    subprocess.run([compiler, *CFLAGS, "-o", str(out), *map(str, SOURCES)], check=True)
    return out


def run_cases(argv):
    stdin = "".join(line + "\n" for line, _ in CASES)
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    got = proc.stdout.splitlines()
    assert len(got) == len(CASES)
    wrong = []
    for (line, expected), answer in zip(CASES, got):
        ok = expected(answer) if callable(expected) else answer == expected
        if not ok:
            wrong.append((line[:120], answer[:120], expected if isinstance(expected, str) else "<predicate>"))
    assert wrong == [], wrong[:10]


def test_driver_native_agrees_with_the_unit_expectations(tmp_path):
    run_cases([str(build("gcc", tmp_path / "core_driver"))])


@pytest.fixture(scope="module")
def aarch64_driver(tmp_path_factory):
    for tool in ("aarch64-linux-gnu-gcc", "qemu-aarch64"):
        assert shutil.which(tool), f"{tool} missing: apt-get install gcc-aarch64-linux-gnu qemu-user (.ci/run)"
    exe = build("aarch64-linux-gnu-gcc", tmp_path_factory.mktemp("aarch64") / "core_driver")
    header = subprocess.run(["readelf", "-h", str(exe)], capture_output=True, text=True, check=True).stdout
    assert "AArch64" in header, header
    return exe


def test_aarch64_core_under_qemu(aarch64_driver):
    run_cases(["qemu-aarch64", "-L", AARCH64_ROOT, str(aarch64_driver)])


def test_case_tables_are_not_empty():
    ops = {line.split()[0] for line, _ in CASES}
    assert ops == {"utf8", "bytes", "seqlen", "int64", "uint64", "double", "numtext", "valid", "encode", "decode",
                   "argc"}
    assert len(CASES) > 1000
