"""udf/udf_error.c through cffi, inside a stand-in host that says which connection the thread
serves (MariaDB's _current_thd and thd_get_thread_id, in a small library loaded globally
first, as mysqld's symbols are there for the plugin's weak references): gman_last_error() is
kept per connection, exactly, whatever the connection ids."""
import hashlib
import os
import subprocess

import cffi
import pytest

from tests.support import cbuild

HOST_SOURCE = r"""
static unsigned long current; /* the connection id this thread serves; 0: no THD */
void host_serve(unsigned long id) { current = id; }
void *_current_thd(void) { return current ? (void *)&current : (void *)0; }
unsigned long thd_get_thread_id(const void *thd) { return *(const unsigned long *)thd; }
"""


def _host():
    cbuild.core_library()  # makes BUILD
    digest = hashlib.sha256(HOST_SOURCE.encode()).hexdigest()[:12]
    path = cbuild.BUILD / f"libfake_host-{digest}.so"
    if not path.exists():
        source = cbuild.BUILD / f"fake_host.{os.getpid()}.c"
        source.write_text(HOST_SOURCE)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-o", str(tmp), str(source)], check=True)
        source.unlink()
        os.replace(tmp, path)
    ffi = cffi.FFI()
    ffi.cdef("void host_serve(unsigned long id);")
    return ffi.dlopen(str(path), ffi.RTLD_NOW | ffi.RTLD_GLOBAL)


host = _host()  # before the core: its weak references bind to the host's symbols at load
ffi, lib = cbuild.load("udf_error", "void udf_error_set(const char *fmt, ...); const char *udf_error_get(size_t *len);")


@pytest.fixture(autouse=True)
def no_connection_after():
    """Other tests' copies of the core may bind to the host too: it says "no THD" again."""
    yield
    host.host_serve(0)


def set_error(conn, text):
    host.host_serve(conn)
    lib.udf_error_set(b"%s", ffi.new("char[]", text.encode()))


def get_error(conn):
    host.host_serve(conn)
    n = ffi.new("size_t *")
    p = lib.udf_error_get(n)
    return ffi.buffer(p, n[0])[:].decode()


def test_connections_whose_ids_are_a_table_apart_keep_their_own_errors():
    for a in (7, 100_000):
        b = a + 1024
        set_error(a, f"error of connection {a}")
        set_error(b, f"error of connection {b}")
        assert get_error(a) == f"error of connection {a}"
        assert get_error(b) == f"error of connection {b}"


def test_a_connection_sees_its_own_error_or_none_never_another_one():
    """Many more connections than slots: the oldest errors go, the latest stay, and no
    connection is shown another's."""
    first, count = 1_000_000, 5000
    for conn in range(first, first + count):
        set_error(conn, f"error of {conn}")
    seen = {conn: get_error(conn) for conn in range(first, first + count)}
    assert all(text in ("", f"error of {conn}") for conn, text in seen.items())
    assert all(seen[conn] == f"error of {conn}" for conn in range(first + count - 16, first + count))
    assert get_error(first + count) == ""  # a connection that set nothing


def test_without_a_connection_the_error_is_the_threads():
    set_error(0, "the thread's own")
    assert get_error(0) == "the thread's own"
    set_error(42, "connection 42's")
    assert get_error(0) == ""  # a connection's error, and this thread cannot tell whose
