"""The handle set of a gman_sum stream (udf/gm_handles.c): only our jobs' results, each once."""
from tests.support import cbuild
from hypothesis import given, settings
from hypothesis import strategies as st

CDEF = """
typedef struct gm_handles { char *arena; size_t alen, acap; size_t *slot; size_t nslots, count; } gm_handles;
int gm_handles_add(gm_handles *h, const char *p, size_t len);
int gm_handles_finish(gm_handles *h, const char *p, size_t len);
void gm_handles_free(gm_handles *h);
"""
ffi, lib = cbuild.load("gm_handles", CDEF)


def new():
    return ffi.new("gm_handles *")


def test_only_known_handles_finish_and_only_once():
    h = new()
    assert lib.gm_handles_finish(h, b"H:x:1", 5) == 0  # empty set
    assert lib.gm_handles_add(h, b"H:x:1", 5) == 0
    assert lib.gm_handles_finish(h, b"H:x:2", 5) == 0
    assert lib.gm_handles_finish(h, b"H:x:1", 5) == 1
    assert lib.gm_handles_finish(h, b"H:x:1", 5) == 0  # a second result for it does not count
    lib.gm_handles_free(h)
    lib.gm_handles_free(h)  # twice is harmless
    assert h.count == 0


def test_a_handle_over_255_bytes_is_refused():
    h = new()
    assert lib.gm_handles_add(h, b"x" * 256, 256) == -1
    assert lib.gm_handles_finish(h, b"x" * 256, 256) == 0
    lib.gm_handles_free(h)


def test_many_handles_grow_the_table():
    h = new()
    names = [b"H:gearmand:%d" % i for i in range(20000)]
    for n in names:
        assert lib.gm_handles_add(h, n, len(n)) == 0
    assert h.count == len(names)
    assert all(lib.gm_handles_finish(h, n, len(n)) == 1 for n in names)
    assert not any(lib.gm_handles_finish(h, n, len(n)) for n in names)
    lib.gm_handles_free(h)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=255), max_size=60), st.lists(st.binary(max_size=255), max_size=60))
def test_finish_answers_like_a_python_set(added, asked):
    h = new()
    known, done = set(added), set()
    for a in added:
        assert lib.gm_handles_add(h, a, len(a)) == 0
    for q in asked + added:
        want = q in known and q not in done
        done.add(q)
        assert lib.gm_handles_finish(h, q, len(q)) == int(want)
    lib.gm_handles_free(h)
