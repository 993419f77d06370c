"""Server lists: gm_servers_parse and gm_servers_set (udf/gm_routes.c, udf/gm_servers.c) called directly through
cffi (through SQL: tests/integration/test_server_list_sql.py).

They keep a process-wide registry of the host:port entries in use, 64 at most, each
reference-counted by the lists (routes) that name it: an entry no list uses any more is freed
and its slot reused. Each copy of the library (cbuild.load) has its own registry, in this test
process only. Refused lists keep nothing.
"""
import time

import pytest

from tests.support import cbuild
from tests.support.gearman import RESOLVER_BOUND_S

CDEF = """
typedef struct gm_error { char text[256]; } gm_error;
typedef struct gm_config gm_config;
typedef struct gm_server gm_server;
typedef struct gm_route {
    char *function;
    char *text;
    unsigned n;
    gm_server *servers[16];
} gm_route;
const gm_config *gm_settings(gm_error *e);
int gm_servers_parse(const char *list, size_t len, gm_route *route, gm_error *e);
void gm_route_clear(gm_route *route);
int gm_servers_set(const gm_config *cfg, const char *list, size_t len, const char *function, size_t flen, char *out,
                   size_t outlen, gm_error *e);
void free(void *);
"""
ffi, lib = cbuild.load("gm_servers", CDEF)
ERRLEN = 256  # GM_ERRLEN


def parse(text, library=None, keep=None):
    """(normalised text, None) or (None, error) for a list given as str or bytes; library is
    another (ffi, lib) pair from cbuild.load. The route (and its references on the
    registry's entries) is released, or appended to the list `keep`."""
    ffi, lib = library or (globals()["ffi"], globals()["lib"])
    data = text.encode() if isinstance(text, str) else text
    buf = ffi.new("char[]", data) if data else ffi.NULL  # exact bytes, NUL bytes and all
    route = ffi.new("gm_route *")
    err = ffi.new("gm_error *")
    rc = lib.gm_servers_parse(buf, len(data), route, err)
    out = ffi.string(route.text).decode() if route.text != ffi.NULL else None
    if rc == 0:
        assert out is not None and route.n == out.count(",") + 1
        for i in range(route.n):  # each entry's name (after its refcount) is the listed item
            assert ffi.string(ffi.cast("char *", route.servers[i]) + ffi.sizeof("unsigned")).decode() == \
                out.split(",")[i]
        if keep is not None:
            keep.append(route)
        else:
            lib.gm_route_clear(route)
        return out, None
    assert rc == -1
    assert route.n == 0 and route.text == ffi.NULL  # a refused list holds nothing
    message = ffi.string(err.text).decode()
    assert 0 < len(message) < ERRLEN
    return None, message


# --- gm_servers_parse -------------------------------------------------------------------------------------

@pytest.mark.parametrize("given, applied", [
    ("127.0.0.1", "127.0.0.1:4730"),
    ("127.0.0.1:4730", "127.0.0.1:4730"),
    ("  127.0.0.1:4731\t", "127.0.0.1:4731"),
    ("127.0.0.1:04731", "127.0.0.1:4731"),
    ("127.0.0.1:1", "127.0.0.1:1"),
    ("127.0.0.1:65535", "127.0.0.1:65535"),
    ("[::1]:4730", "[::1]:4730"),
    ("[::1]", "[::1]:4730"),
    ("::1", "[::1]:4730"),
    ("localhost:4730", "localhost:4730"),
    ("localhost", "localhost:4730"),
    ("127.0.0.1, localhost:4731 ,[::1]", "127.0.0.1:4730,localhost:4731,[::1]:4730"),
    (",".join(["127.0.0.1"] * 16), ",".join(["127.0.0.1:4730"] * 16)),
])
def test_good_lists_are_normalised(given, applied):
    assert parse(given) == (applied, None)


@pytest.mark.parametrize("given, error", [
    ("", "empty server name in list"),
    ("   ", "empty server name in list"),
    (",", "empty server name in list"),
    ("127.0.0.1,", "empty server name in list"),
    (",127.0.0.1", "empty server name in list"),
    ("127.0.0.1,,127.0.0.1", "empty server name in list"),
    ("127.0.0.1:0", "bad port in '127.0.0.1:0' (expected 1-65535)"),
    ("127.0.0.1:65536", "bad port in '127.0.0.1:65536' (expected 1-65535)"),
    ("127.0.0.1:abc", "bad port in '127.0.0.1:abc'"),
    ("127.0.0.1:", "bad port in '127.0.0.1:'"),
    ("127.0.0.1:-1", "bad port"),
    ("127.0.0.1:+4730", "bad port"),
    ("127.0.0.1:4730x", "bad port"),
    ("127.0.0.1:" + "9" * 40, "bad port"),
    (" 127.0.0.1 : 4731 ", "bad port in '127.0.0.1 : 4731'"),  # spaces inside an item are not trimmed
    (":4730", "missing host in ':4730'"),
    ("[]:4730", "missing host"),
    ("[::1", "bad address '[::1' (expected [v6addr]:port)"),
    ("[::1]x", "bad address '[::1]x'"),
    ("[::1]:", "bad port"),
    ("[::1]:0", "bad port"),
    ("no host!:1", "bad host name 'no host!'"),
    ("user@127.0.0.1", "bad host name 'user@127.0.0.1'"),
    ("127.0.0.1/24", "bad host name"),
    ("h" * 300, "server name too long"),
    ("127.0.0.1," + "h" * 400, "server name too long"),
    (",".join(["127.0.0.1"] * 17), "more than 16 servers in one list"),
    (",".join(["127.0.0.1"] * 100), "more than 16 servers in one list"),
    (b"127.0.0.1\0", "NUL byte in server list"),
    (b"127.0.0.1\0:4730", "NUL byte in server list"),
    (b"\0", "NUL byte in server list"),
    ("no-such-host.invalid", "cannot resolve 'no-such-host.invalid'"),
    ("127.0.0.1,no-such-host.invalid:4730", "cannot resolve 'no-such-host.invalid'"),
    ("a,b", "cannot resolve 'a'"),
    ("127.0.0.1:4730:1", "cannot resolve '127.0.0.1:4730:1'"),  # two colons: taken for a bare IPv6 address
], ids=lambda v: repr(v)[:40] if not isinstance(v, str) or len(v) > 40 else None)
def test_bad_lists_are_refused_with_the_reason(given, error):
    out, message = parse(given)
    assert out is None and message.startswith(error), message


@pytest.mark.parametrize("length", [254, 259, 260, 280, 299])
def test_long_host_names_are_refused_without_overrun(length):
    """Host names up to 299 characters get as far as the resolver (which refuses them: more
    than 253); from 300 the item itself is too long. The message always fits its buffer."""
    name = ("a" * 62 + ".") * 5
    out, error = parse(name[:length])
    assert out is None
    assert error.startswith("cannot resolve 'aaaa") or error == "server name too long", error


def test_a_name_that_does_not_resolve_fails_fast():
    t = time.monotonic()
    assert parse("gman-udf-test-no-such-host.invalid:4730")[1].startswith("cannot resolve")
    assert time.monotonic() - t < RESOLVER_BOUND_S


def test_the_registry_holds_64_servers_in_use_then_refuses_and_frees_unused_ones():
    """A second copy of the library (its own registry): 64 distinct servers in use are
    taken, the 65th is refused with a clear message, the 64 known ones still parse; once
    the lists holding them are released, their slots serve other addresses."""
    lib2 = cbuild.load("gm_servers_registry", CDEF)
    held = []
    for port in range(1, 65):
        assert parse(f"127.0.0.1:{port}", lib2, keep=held) == (f"127.0.0.1:{port}", None)
    assert parse("127.0.0.1:65", lib2) == (None, "more than 64 distinct servers in use")
    assert parse("127.0.0.1:64,127.0.0.1:1", lib2) == ("127.0.0.1:64,127.0.0.1:1", None)
    for route in held[:16]:
        lib2[1].gm_route_clear(route)
    for port in range(101, 117):  # 16 new ones in the freed slots
        assert parse(f"127.0.0.1:{port}", lib2, keep=held) == (f"127.0.0.1:{port}", None)
    assert parse("127.0.0.1:200", lib2)[1] == "more than 64 distinct servers in use"
    for route in held[16:]:
        lib2[1].gm_route_clear(route)


def test_refused_lists_take_no_registry_slots():
    """Lists refused at their last item (a bad port, a name that does not resolve, one item
    too many) release what their first items took: 20 of them, 15 new addresses each, leave
    the 64 slots free for 64 new addresses."""
    lib3 = cbuild.load("gm_servers_refused", CDEF)
    for k in range(20):
        first = ",".join(f"127.0.{k}.{i}:4730" for i in range(1, 16))
        for last in ("127.0.0.1:0", "gman-udf-test-no-such-host.invalid", "127.0.0.1,127.0.0.1"):
            assert parse(f"{first},{last}", lib3)[0] is None
    held = []
    for port in range(1, 65):
        assert parse(f"127.0.0.1:{port}", lib3, keep=held) == (f"127.0.0.1:{port}", None)
    for route in held:
        lib3[1].gm_route_clear(route)


def servers_set(library, text, function):
    ffi, lib = library
    out, err = ffi.new("char[]", 4800), ffi.new("gm_error *")
    f = function.encode() if function is not None else ffi.NULL
    cfg = lib.gm_settings(err)
    assert cfg != ffi.NULL, ffi.string(err.text)
    rc = lib.gm_servers_set(cfg, text.encode(), len(text), f, len(function or ""), out, 4800, err)
    return (ffi.string(out).decode(), None) if rc == 0 else (None, ffi.string(err.text).decode())


def test_gm_servers_set_refuses_the_65th_function_list_and_changes_nothing(monkeypatch):
    """64 per-function lists fit; the 65th is refused, again and again, and the table stays
    usable (it used to count the refused list and then free one entry past the table: a
    crash, or an ASan report in the sanitized run of these tests)."""
    for key in ("GMAN_UDF_CONFIG", "GMAN_UDF_SERVERS", "GMAN_UDF_LOCK"):
        monkeypatch.delenv(key, raising=False)
    library = cbuild.load("gm_servers_set", CDEF)
    for k in range(64):
        assert servers_set(library, "127.0.0.1:4730", f"f{k}") == ("127.0.0.1:4730", None)
    for _ in range(3):
        assert servers_set(library, "127.0.0.1:4731", "f64") == \
            (None, "too many per-function server lists (64 at most)")
    assert servers_set(library, "127.0.0.1:4731", "f63") == ("127.0.0.1:4731", None)
    assert servers_set(library, "127.0.0.1:4732", None) == ("127.0.0.1:4732", None)
