"""udf/gm_stream.c through cffi, against scripted gearmands on local sockets: a stream (the
aggregates' pipelined group of jobs) whose server dies or freezes before answering any job of
the burst moves the burst to the next server of the list, like a single call fails over; once
the server answered part of the burst, the failure is reported and nothing is sent again.

Each test loads its own copy of the library, whose settings (read once) come from a file
naming its two peers."""
import itertools
import json
import os
import socket
import struct
import threading

import pytest

from tests.support import cbuild

CDEF = """
typedef struct { char text[256]; } gm_error;
typedef struct gm_config gm_config;
typedef struct gm_stream gm_stream;
typedef struct gm_job {
    unsigned type;
    const char *fn; size_t fn_len;
    const char *unique; size_t unique_len;
    const char *workload; size_t workload_len;
} gm_job;
const gm_config *gm_settings(gm_error *e);
void gm_stream_init(gm_stream *st, const gm_config *cfg, int want_results);
int gm_stream_add(gm_stream *st, const gm_job *job, gm_error *e);
int gm_stream_finish(gm_stream *st, gm_error *e);
void gm_stream_close(gm_stream *st);
void gm_stats_json(char *out, size_t len);
"""
STREAM_BYTES = 1 << 16  # room for a gm_stream, whose layout the test does not spell out
SUBMIT_JOB_BG, JOB_CREATED, OPTION_REQ, OPTION_RES = 18, 8, 26, 27
IO_TIMEOUT_MS = 200
COPIES = itertools.count()  # one library copy per test: its own settings, registry and routes
JOBS = 40  # more than the first window (32): the first burst is drained before the last jobs go


class Peer(threading.Thread):
    """A gearmand on a local port: "frozen" reads and never answers, "dies" closes at once,
    "answers" confirms every job, "answers_N" confirms N jobs and then freezes, "nohandle_N"
    confirms every job but the Nth (from 1), whose JOB_CREATED has no handle."""

    def __init__(self, mode):
        super().__init__(daemon=True)
        self.mode, self.uniques, self.stop = mode, [], threading.Event()
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(4)
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.start()

    def run(self):
        while not self.stop.is_set():
            try:
                sock, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:  # closed by close()
                return
            if self.mode == "dies":
                sock.close()
                continue
            threading.Thread(target=self.serve, args=(sock,), daemon=True).start()

    def serve(self, sock):
        buf = b""
        sock.settimeout(0.2)
        with sock:
            while not self.stop.is_set():
                try:
                    data = sock.recv(65536)
                except socket.timeout:
                    continue
                if not data:
                    return
                buf += data
                while len(buf) >= 12 and len(buf) >= 12 + struct.unpack(">I", buf[8:12])[0]:
                    size = struct.unpack(">I", buf[8:12])[0]
                    kind, body, buf = struct.unpack(">I", buf[4:8])[0], buf[12:12 + size], buf[12 + size:]
                    if kind == OPTION_REQ:
                        sock.sendall(b"\0RES" + struct.pack(">II", OPTION_RES, len(body)) + body)
                    if kind != SUBMIT_JOB_BG:
                        continue
                    self.uniques.append(body.split(b"\0")[1])
                    limit = int(self.mode.split("_")[1]) if self.mode.startswith("answers_") else 0
                    answered = self.mode in ("answers", "nohandle") or len(self.uniques) <= limit
                    if self.mode.startswith("nohandle_"):
                        answered, empty = True, len(self.uniques) == int(self.mode.split("_")[1])
                    else:
                        empty = False
                    if answered:
                        handle = b"" if empty else b"H:%d" % len(self.uniques)
                        sock.sendall(b"\0RES" + struct.pack(">II", JOB_CREATED, len(handle)) + handle)

    def close(self):
        self.stop.set()
        self.listener.close()


@pytest.fixture
def stream_lib(tmp_path, monkeypatch, request):
    """(ffi, lib, peers) for a copy of the library whose server list is the given peers."""
    def make(*modes):
        peers = [Peer(m) for m in modes]
        request.addfinalizer(lambda: [p.close() for p in peers])
        conf = tmp_path / "gman_udf.cnf"
        conf.write_text(f"servers = {','.join(f'127.0.0.1:{p.port}' for p in peers)}\n"
                        f"io_timeout_ms = {IO_TIMEOUT_MS}\nconnect_timeout_ms = 1000\nbackoff_ms = 60000\n")
        for key in [k for k in os.environ if k.startswith("GMAN_UDF_")]:
            monkeypatch.delenv(key)
        monkeypatch.setenv("GMAN_UDF_CONFIG", str(conf))
        ffi, lib = cbuild.load(f"gm_stream_{next(COPIES)}", CDEF)
        return ffi, lib, peers
    return make


def run_stream(ffi, lib, n=JOBS, want_results=0):
    """Add n background jobs (uniques u0..) to one stream and finish it: (rc, error, stats delta)."""
    err = ffi.new("gm_error *")
    cfg = lib.gm_settings(err)
    assert cfg != ffi.NULL, ffi.string(err.text)
    before = stats(ffi, lib)
    memory = ffi.new("char[]", STREAM_BYTES)
    st = ffi.cast("gm_stream *", memory)
    keep = [memory]
    lib.gm_stream_init(st, cfg, want_results)
    rc = 0
    try:
        for i in range(n):
            fn, unique, workload = b"fn", b"u%d" % i, b"w%d" % i
            keep += [ffi.new("char[]", fn), ffi.new("char[]", unique), ffi.new("char[]", workload)]
            job = ffi.new("gm_job *", (SUBMIT_JOB_BG, keep[-3], len(fn), keep[-2], len(unique), keep[-1],
                                       len(workload)))
            rc = lib.gm_stream_add(st, job, err)
            if rc != 0:
                break
        if rc == 0:
            rc = lib.gm_stream_finish(st, err)
    finally:
        lib.gm_stream_close(st)
    after = stats(ffi, lib)
    return rc, ffi.string(err.text).decode(), {k: after[k] - before[k] for k in after}


def stats(ffi, lib):
    out = ffi.new("char[]", 256)
    lib.gm_stats_json(out, 256)
    return json.loads(ffi.string(out))


@pytest.mark.parametrize("first", ["frozen", "dies"])
def test_a_burst_nobody_answered_moves_to_the_next_server(stream_lib, first):
    ffi, lib, (a, b) = stream_lib(first, "answers")
    rc, err, delta = run_stream(ffi, lib)
    assert rc == 0, err
    assert sorted(b.uniques) == sorted(b"u%d" % i for i in range(JOBS))  # each job once on b
    assert delta["confirmed"] == JOBS and delta["lost"] == 0
    if first == "frozen":
        assert len(a.uniques) == 32 and delta["rescued"] == 32  # the first burst, sent again on b


def test_a_burst_answered_in_part_fails_and_sends_nothing_again(stream_lib):
    ffi, lib, (a, b) = stream_lib("answers_5", "answers")
    rc, err, delta = run_stream(ffi, lib)
    assert rc == -1
    assert err == f"gearmand 127.0.0.1:{a.port}: timed out waiting for confirmations", err
    assert b.uniques == [] and delta["rescued"] == 0 and delta["confirmed"] == 5


def test_the_last_server_failing_names_every_server_tried(stream_lib):
    ffi, lib, (a, b) = stream_lib("frozen", "frozen")
    rc, err, _ = run_stream(ffi, lib)
    assert rc == -1
    assert err == (f"gearmand 127.0.0.1:{a.port}: timed out waiting for confirmations; "
                   f"gearmand 127.0.0.1:{b.port}: timed out waiting for confirmations"), err


@pytest.mark.parametrize("want_results", [0, 1])
def test_a_later_burst_moves_only_when_no_result_is_awaited(stream_lib, want_results):
    """The first burst (32 jobs) is confirmed, the last 8 are not. Background jobs go on on the
    next server; foreground ones (gman_sum) wait for results from where they were confirmed,
    so the stream fails there."""
    ffi, lib, (a, b) = stream_lib("answers_32", "answers")
    rc, err, delta = run_stream(ffi, lib, want_results=want_results)
    if want_results:
        assert rc == -1 and err == f"gearmand 127.0.0.1:{a.port}: timed out waiting for confirmations", err
        assert b.uniques == [] and delta["rescued"] == 0
    else:
        assert rc == 0, err
        assert b.uniques == [b"u%d" % i for i in range(32, JOBS)] and delta["rescued"] == JOBS - 32
        assert delta["confirmed"] == JOBS


@pytest.mark.parametrize("want_results", [0, 1])
def test_a_job_created_without_a_handle_fails_the_group_and_is_not_sent_again(stream_lib, want_results):
    """The job may or may not be queued on the server that answered so: the group fails with
    the reason, the job is counted (no_handle) and sent nowhere else, the others are confirmed."""
    ffi, lib, (a, b) = stream_lib("nohandle_3", "answers")
    rc, err, delta = run_stream(ffi, lib, want_results=want_results)
    assert rc == -1  # gman_sum does not wait for the results: its sum could not be right
    assert err == (f"gearmand 127.0.0.1:{a.port}: JOB_CREATED without a job handle (job u2 may or may not "
                   f"be queued; 1 of {JOBS} without a handle)"), err
    assert b.uniques == [] and delta["rescued"] == 0 and delta["no_handle"] == 1
    assert delta["confirmed"] == JOBS - 1
