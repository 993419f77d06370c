"""The plugin inside a stand-in for mysqld (tests/integration/mysql_host.c), since no MySQL
server can be installed here: the host dlopens the built gman_udf.so with RTLD_NOW, offers
what mysqld 8.0.19+ exports (the component registry with mysql_udf_metadata,
thd_get_current_thd, thd_get_thread_id) and none of MariaDB's symbols, and calls the
functions in MySQL's sequence: constant arguments at init not NUL-terminated, lengths as
maxima, UDF_INIT as udf_handler::fix_fields sets it, a 255-byte result buffer with a guard
behind it.
"""
import os
import re
import subprocess
from pathlib import Path

import pytest

HOST_SOURCE = Path(__file__).with_name("mysql_host.c")
JSON_FUNCTIONS = [p + "json_" + s for s in ("object", "array", "members", "values") for p in ("", "udf_")]
MYSQLD_EXPORTS = {"mysql_plugin_registry_acquire", "mysql_plugin_registry_release", "_Z19thd_get_current_thdv",
                  "thd_get_thread_id"}


def build_host(tmp_path_factory, *defines):
    out = tmp_path_factory.mktemp("mysql_host") / "mysql_host"
    cmd = ["gcc", "-std=gnu11", "-O1", "-Wall", "-Wextra", "-Werror", "-rdynamic", *defines, "-o", str(out),
           str(HOST_SOURCE), "-ldl"]
    subprocess.run(cmd, check=True)
    return out


@pytest.fixture(scope="module")
def host_bin(tmp_path_factory):
    return build_host(tmp_path_factory)


def hexed(b):
    return (b.encode() if isinstance(b, str) else b).hex()


def spec(kind, type_, value, name):
    text = "null" if value is None else hexed(value) or "empty"
    return f"{kind}:{type_}:{hexed(name) if name else '-'}:{text}"


def C(type_, value, name=None):
    """A constant argument (its value is known at init)."""
    return spec("C", type_, value, name)


def V(type_, value, name=None):
    """A column: NULL at init, its value per row."""
    return spec("V", type_, value, name)


def parse(line):
    words = line.split()
    assert words[0] == "ok", line
    out = {}
    for w in words[1:]:
        k, v = w.split("=", 1)
        out[k] = v
    for k in ("value", "message"):
        if k in out:
            out[k] = None if out[k] == "null" else b"" if out[k] == '""' else bytes.fromhex(out[k])
    return out


class Host:
    """Run one host process over a script of commands; answers() gives one dict per call."""

    def __init__(self, binary, library):
        self.binary, self.library, self.lines = binary, library, []

    def conn(self, ident):
        self.lines.append(f"conn {ident}")
        return self

    def registry(self, mode):
        self.lines.append(f"registry {mode}")
        return self

    def call(self, name, *args, ret="s", rows=1):
        self.lines.append(" ".join(["call", name, ret, str(rows), *args]))
        return self

    def run(self, env=None):
        proc = subprocess.run([str(self.binary), str(self.library)], input="\n".join(self.lines) + "\n",
                              capture_output=True, text=True, timeout=60, env=dict(os.environ, **(env or {})))
        assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr)
        out = proc.stdout.splitlines()
        assert out[0] == "ok loaded", out[0]
        return [parse(line) for line, cmd in zip(out[1:], self.lines) if cmd.startswith("call ")]


def one(host_bin, library, name, *args, **kw):
    (answer,) = Host(host_bin, library).call(name, *args, **kw).run()
    return answer


def exported(binary):
    out = subprocess.run(["nm", "-D", "--defined-only", str(binary)], capture_output=True, text=True, check=True)
    return {line.split()[-1] for line in out.stdout.splitlines()}


def test_host_exports_what_mysqld_exports_and_nothing_of_mariadb(host_bin, built_library):
    names = exported(host_bin)
    assert MYSQLD_EXPORTS <= names
    assert "_current_thd" not in names
    # and the library asks for exactly those, weakly: it loads into any host
    out = subprocess.run(["nm", "-D", "--undefined-only", str(built_library)], capture_output=True, text=True,
                         check=True).stdout
    weak = {line.split()[-1] for line in out.splitlines() if line.split()[-2] == "w"}
    assert MYSQLD_EXPORTS | {"_current_thd"} <= weak, weak


CASES = {
    "object": ([C("i", "42", "a"), V("s", 'x"y', "t.b"), V("i", None, "c")], b'{"a":42,"b":"x\\"y","c":null}'),
    "array": ([C("s", "abc"), V("r", "1.5"), C("d", "-0.10")], b'["abc",1.5,-0.10]'),
    "members": ([C("s", "k"), V("s", "v"), C("s", "n"), C("i", "7")], b'{"k":"v","n":7}'),
    "values": ([V("i", "1"), C("s", "x")], b'1,"x"'),
}


@pytest.mark.parametrize("name", JSON_FUNCTIONS)
def test_json_functions_declare_their_result_utf8mb4(host_bin, built_library, name):
    """MySQL would type the result binary (ERROR 3144 in JSON functions/columns): _init asks
    mysql_udf_metadata.result_set(initid, "charset", "utf8mb4"), through the registry, and
    gives every reference back."""
    args, expected = CASES[name.split("_")[-1]]
    got = one(host_bin, built_library, name, *args, rows=3)
    assert got["init"] == "0", got
    assert (got["value"], got["is_null"], got["error"]) == (expected, "0", "0"), got
    assert got["request"] == "charset=utf8mb4" and got["request_ok"] == "1", got
    assert got["request_initid"] == "1", got  # on the UDF_INIT the host passed to this _init
    assert got["result_charset"] == "utf8mb4", got
    assert got["guard"] == "1", got
    assert (got["registries_out"], got["services_out"]) == ("0", "0"), got  # nothing held after _init


@pytest.mark.parametrize("call", [("gman_last_error",), ("gman_do_background", C("s", "f"), C("s", None)),
                                  ("gman_servers_set", C("s", "127.0.0.1:1"))], ids=lambda c: c[0])
def test_other_functions_ask_nothing(host_bin, built_library, call):
    got = one(host_bin, built_library, *call)
    assert got["init"] == "0" and got["request"] == "-" and got["result_charset"] == "-", got
    assert got["guard"] == "1", got


def test_constant_arguments_are_not_read_past_their_length(host_bin, built_library):
    """At init a constant's bytes are followed by '########', not a NUL: a reader that runs
    to a NUL would show them."""
    answers = (Host(host_bin, built_library)
               .call("gman_servers_set", C("s", "127.0.0.1:1,127.0.0.1:2"))
               .call("udf_json_object", C("s", "abc", "k"), C("s", "", "json_e"))
               .call("gman_do_background", C("s", "f"), C("s", "w"), C("s", "u" * 64))
               .run())
    assert answers[0]["value"] == b"127.0.0.1:1,127.0.0.1:2", answers[0]
    assert answers[1]["value"] == b'{"k":"abc","json_e":""}', answers[1]
    assert answers[2]["init"] == "1" and b"longer than 63 bytes" in answers[2]["message"], answers[2]
    for a in answers:
        assert b"#" not in (a.get("value") or b"") + (a.get("message") or b""), a


def test_last_error_is_per_connection_on_one_thread(host_bin, built_library):
    """Two connections served by one server thread (a pool, or a thread handed on): each sees
    only its own failure. MySQL has no _current_thd: the connection comes from
    thd_get_current_thd() + thd_get_thread_id()."""
    fail = ("gman_do_background", C("s", "f"), C("s", None))
    fail2 = ("gman_do_background", C("s", None), C("s", "w"))
    answers = (Host(host_bin, built_library)
               .conn(1).call(*fail).call("gman_last_error")
               .conn(2).call("gman_last_error")
               .call(*fail2).call("gman_last_error")
               .conn(1).call("gman_last_error")
               .run())
    failed, own, other, _, own2, after = answers
    assert failed["value"] is None and failed["is_null"] == "1", failed
    assert own["value"] == b"gman_do_background: the workload is NULL (nothing sent)", own
    assert other["value"] == b"", other  # connection 2 on the same thread: not 1's error
    assert own2["value"] == b"gman_do_background: the function name is NULL", own2
    assert after["value"] == own["value"], after  # 1 keeps its own error, not 2's


def test_without_the_metadata_service_json_stays_binary_and_works(host_bin, built_library, tmp_path_factory):
    """MySQL 8.0.0-8.0.18 (a registry without mysql_udf_metadata), a registry that gives
    nothing, and 5.7 (no registry symbols at all): the functions work, nothing is asked of a
    service that is not there, nothing is left acquired."""
    args, expected = CASES["object"]
    answers = (Host(host_bin, built_library)
               .registry("nometa").call("udf_json_object", *args)
               .registry("off").call("udf_json_object", *args)
               .run())
    no_registry = build_host(tmp_path_factory, "-DHOST_NO_REGISTRY")
    assert not exported(no_registry) & {"mysql_plugin_registry_acquire", "mysql_plugin_registry_release"}
    answers.append(one(no_registry, built_library, "udf_json_object", *args))
    for got in answers:
        assert got["init"] == "0" and got["value"] == expected, got
        assert got["request"] == "-" and got["result_charset"] == "-", got
        assert (got["registries_out"], got["services_out"]) == ("0", "0"), got


def test_host_that_names_no_connection_falls_back_to_the_thread(tmp_path_factory, built_library):
    """No thd_get_current_thd, no registry (nothing of MySQL or MariaDB): the library still
    loads with RTLD_NOW and the last error is the thread's."""
    bare = build_host(tmp_path_factory, "-DHOST_NO_THD", "-DHOST_NO_REGISTRY")
    assert not exported(bare) & (MYSQLD_EXPORTS | {"_current_thd"})
    answers = (Host(bare, built_library)
               .conn(1).call("gman_do_background", C("s", "f"), C("s", None))
               .conn(2).call("gman_last_error")
               .run())
    assert answers[1]["value"] == b"gman_do_background: the workload is NULL (nothing sent)", answers[1]


def test_a_long_last_error_fills_the_result_buffer_and_no_more(host_bin, built_library):
    """gman_last_error() returns at most the 255 bytes of the server's result buffer (the
    host checks the bytes behind it), here of a ~290-byte message."""
    bad = "h" * 240 + ":0"
    answers = (Host(host_bin, built_library)
               .call("gman_servers_set", V("s", bad))
               .call("gman_last_error")
               .run())
    assert answers[0]["value"] is None and answers[0]["is_null"] == "1", answers[0]
    got = answers[1]
    assert got["value"].startswith(b"gman_servers_set: bad port in 'hhh") and len(got["value"]) == 255, got
    assert got["in_result"] == "1" and got["guard"] == "1", got


def sanitized_library(tmp_path_factory):
    """gman_udf.so from the CMake source list, built with AddressSanitizer + UBSan."""
    root = HOST_SOURCE.parents[2]
    cmake = (root / "CMakeLists.txt").read_text()
    sources = re.search(r"set\(GMAN_UDF_SOURCES(.*?)\)", cmake, re.S).group(1).split()
    out = tmp_path_factory.mktemp("asan_lib") / "gman_udf.so"
    cmd = ["gcc", "-std=gnu11", "-O1", "-g", "-fPIC", "-shared", "-fvisibility=hidden", *SANITIZE,
           "-Wall", "-Wextra", "-Werror", "-Wno-format-truncation", "-I", str(root / "udf"),
           f"-Wl,--version-script={root / 'udf' / 'exports.map'}", "-o", str(out),
           *[str(root / s) for s in sources], "-lpthread"]
    subprocess.run(cmd, check=True)
    return out


SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]


def test_calling_sequence_under_asan(tmp_path_factory):
    """The same calls with the library and the host under AddressSanitizer, every argument in
    a buffer of exactly its length (no '#' guard): a read past a constant argument, an
    attribute or a row value, or a write past the 255-byte result, aborts the host."""
    lib = sanitized_library(tmp_path_factory)
    host = build_host(tmp_path_factory, "-DHOST_EXACT", *SANITIZE)
    h = Host(host, lib)
    for name in JSON_FUNCTIONS:
        h.call(name, *CASES[name.split("_")[-1]][0], rows=2)
    (h.call("udf_json_object", C("s", "abc", "k"), C("s", "", "json_e"), V("s", "[1,2]", "json_list"))
     .call("udf_json_members", V("s", "name"), V("d", "12.50"), C("s", "n"), C("r", "1e300"))
     .call("gman_servers_set", C("s", "127.0.0.1:1,127.0.0.1:2"))
     .call("gman_servers_set", V("s", "h" * 240 + ":0"))
     .call("gman_last_error")
     .call("gman_do_background", C("s", "f"), C("s", "w"), C("s", "u" * 64))
     .conn(3).call("gman_do_background", V("s", "f"), V("s", None)).call("gman_last_error")
     .conn(4).call("gman_last_error")
     .call("gman_stamp", ret="i", rows=3))
    answers = h.run(env={"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=1:halt_on_error=1",
                         "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"})
    assert len(answers) == len(JSON_FUNCTIONS) + 10
    for got in answers[:len(JSON_FUNCTIONS)]:
        assert got["request"] == "charset=utf8mb4" and got["guard"] == "1", got
    assert answers[len(JSON_FUNCTIONS)]["value"] == b'{"k":"abc","json_e":"","json_list":[1,2]}'
    assert answers[len(JSON_FUNCTIONS) + 1]["value"] == b'{"name":12.50,"n":1e300}'
    assert len(answers[len(JSON_FUNCTIONS) + 4]["value"]) == 255
