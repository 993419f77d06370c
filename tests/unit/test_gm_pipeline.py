"""udf/gm_pipe.c and udf/gm_jobq.c through cffi, against a scripted peer on a local socket: every reply is
paired with the oldest unanswered job, an ERROR refuses that one job only, a reply to nothing
is an error, and the job queue keeps packets whole and in order."""
import json
import socket
import struct

from tests.support import cbuild

CDEF = """
typedef struct gm_conn gm_conn;
typedef struct { const char *p; size_t len; } gm_slice;
typedef struct { int magic; unsigned type; size_t size; unsigned nargs; gm_slice arg[5]; } gm_packet;
typedef struct { char text[256]; } gm_error;
typedef struct { int kind; char unique[64]; gm_error why; } gm_reply;
typedef struct { char *buf; size_t pos, len, cap; unsigned count; int64_t progress_us; } gm_jobq;
typedef int (*gm_pipe_handler)(void *ctx, const gm_packet *pkt, const gm_reply *r, gm_error *e);

int64_t gm_now_us(void);
gm_conn *gm_conn_open(const void *addr, unsigned addrlen, int timeout_ms, gm_error *e);
void gm_conn_close(gm_conn *c);
int gm_conn_flush(gm_conn *c, int64_t deadline, gm_error *e);
int gm_pipe_send_job(gm_conn *c, unsigned type, const gm_slice *args, unsigned nargs, gm_error *e);
unsigned gm_pipe_count(const gm_conn *c);
size_t gm_pipe_bytes(const gm_conn *c);
int gm_pipe_read(gm_conn *c, size_t max_reply, int64_t deadline, gm_pipe_handler h, void *ctx, unsigned *nread,
                 gm_error *e);
void gm_stats_json(char *out, size_t len);

int gm_jobq_push(gm_jobq *q, const char *p, size_t len);
int gm_jobq_append(gm_jobq *dst, gm_jobq *src);
size_t gm_jobq_front(const gm_jobq *q, const char **p);
void gm_jobq_pop(gm_jobq *q);
void gm_jobq_free(gm_jobq *q);
"""
ffi, lib = cbuild.load("gm_pipeline", CDEF)

SUBMIT_JOB_BG, JOB_CREATED, ERROR, NOOP = 18, 8, 19, 6
CONFIRMED, REFUSED, NO_HANDLE = 1, 2, 3


def res(type_, *args):
    data = b"\0".join(args)
    return b"\0RES" + struct.pack(">II", type_, len(data)) + data


def stats():
    out = ffi.new("char[]", 256)
    lib.gm_stats_json(out, 256)
    return json.loads(ffi.string(out))


class Peer:
    """A listening socket; connect() gives (gm_conn, the accepted socket)."""

    def __init__(self):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)

    def connect(self):
        port = self.listener.getsockname()[1]
        addr = ffi.new("char[16]", b"\x02\x00" + struct.pack(">H", port) + bytes([127, 0, 0, 1]) + b"\0" * 8)
        err = ffi.new("gm_error *")
        c = lib.gm_conn_open(addr, 16, 2000, err)
        assert c != ffi.NULL, ffi.string(err.text)
        sock, _ = self.listener.accept()
        sock.settimeout(5)
        return c, sock


def send_jobs(c, uniques):
    err = ffi.new("gm_error *")
    keep = []
    for u in uniques:
        parts = [b"fn", u, b"workload of " + u]
        keep += [ffi.new("char[]", p) for p in parts]
        args = ffi.new("gm_slice[3]", [(keep[-3 + i], len(p)) for i, p in enumerate(parts)])
        assert lib.gm_pipe_send_job(c, SUBMIT_JOB_BG, args, 3, err) == 0, ffi.string(err.text)
    assert lib.gm_conn_flush(c, lib.gm_now_us() + 2_000_000, err) == 0, ffi.string(err.text)


def read_all(c, want):
    """Read replies until `want` were handed to the handler; returns them as (kind, unique, why)."""
    seen = []

    @ffi.callback("int(void *, const gm_packet *, const gm_reply *, gm_error *)")
    def handler(ctx, pkt, r, err):
        seen.append((r.kind, ffi.string(r.unique), ffi.string(r.why.text).decode()))
        return 0

    err = ffi.new("gm_error *")
    nread = ffi.new("unsigned *")
    while len(seen) < want:
        rc = lib.gm_pipe_read(c, 1 << 20, lib.gm_now_us() + 2_000_000, handler, ffi.NULL, nread, err)
        if rc != 0:
            return seen, ffi.string(err.text).decode()
    return seen, None


def test_replies_are_paired_in_order_and_an_error_refuses_one_job():
    peer = Peer()
    c, sock = peer.connect()
    before = stats()
    try:
        send_jobs(c, [b"u1", b"u2", b"u3", b"u4"])
        assert lib.gm_pipe_count(c) == 4 and lib.gm_pipe_bytes(c) > 0
        got = b""
        while got.count(b"\0REQ") < 4:
            got += sock.recv(65536)
        assert got.count(b"workload of u") == 4
        sock.sendall(res(JOB_CREATED, b"H:1") + res(NOOP) + res(ERROR, b"QUEUE_ERROR", b"Job queue is full")
                     + res(JOB_CREATED, b"H:3"))
        seen, err = read_all(c, 4)
        assert err is None, err
        assert [(k, u) for k, u, _ in seen] == [(CONFIRMED, b"u1"), (0, b""), (REFUSED, b"u2"), (CONFIRMED, b"u3")]
        assert seen[2][2] == "ERROR QUEUE_ERROR: Job queue is full"
        assert lib.gm_pipe_count(c) == 1  # u4 still waits: the connection goes on
        sock.sendall(res(JOB_CREATED, b"H:4"))
        seen, err = read_all(c, 1)
        assert seen == [(CONFIRMED, b"u4", "")] and lib.gm_pipe_count(c) == 0 and lib.gm_pipe_bytes(c) == 0
        after = stats()
        assert after["sent"] - before["sent"] == 4 and after["jobs"] - before["jobs"] == 4
        assert after["confirmed"] - before["confirmed"] == 3 and after["refused"] - before["refused"] == 1
    finally:
        lib.gm_conn_close(c)
        sock.close()


def test_a_reply_to_nothing_is_an_error():
    """... and a protocol violation, counted (the caller drops the connection)."""
    peer = Peer()
    for reply, message in [(res(JOB_CREATED, b"H:9"), "JOB_CREATED for a job it was not sent"),
                           (res(ERROR, b"ERR", b"stray"), "ERROR ERR: stray for a job it was not sent")]:
        c, sock = peer.connect()
        before = stats()["protocol_errors"]
        try:
            send_jobs(c, [b"only"])
            sock.sendall(res(JOB_CREATED, b"H:1") + reply)
            seen, err = read_all(c, 2)
            assert seen == [(CONFIRMED, b"only", "")] and err == message, (seen, err)
            assert stats()["protocol_errors"] - before == 1
        finally:
            lib.gm_conn_close(c)
            sock.close()


def test_bytes_that_are_no_packet_are_a_counted_protocol_error():
    peer = Peer()
    c, sock = peer.connect()
    before = stats()["protocol_errors"]
    try:
        send_jobs(c, [b"only"])
        sock.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")
        seen, err = read_all(c, 1)
        assert (seen, err) == ([], "bad magic") and stats()["protocol_errors"] - before == 1
    finally:
        lib.gm_conn_close(c)
        sock.close()


def test_job_created_without_a_handle_is_neither_confirmed_nor_the_connection_dropped():
    """The job it answers may or may not be queued: paired (taken off, never to be sent again),
    counted as no_handle, not confirmed; the next reply pairs with the next job."""
    peer = Peer()
    c, sock = peer.connect()
    before = stats()
    try:
        send_jobs(c, [b"u1", b"u2"])
        sock.sendall(res(JOB_CREATED, b"") + res(JOB_CREATED, b"H:2"))
        seen, err = read_all(c, 2)
        assert err is None, err
        assert seen == [(NO_HANDLE, b"u1", "JOB_CREATED without a job handle"), (CONFIRMED, b"u2", "")], seen
        assert lib.gm_pipe_count(c) == 0
        after = stats()
        assert after["no_handle"] - before["no_handle"] == 1 and after["confirmed"] - before["confirmed"] == 1
    finally:
        lib.gm_conn_close(c)
        sock.close()


def test_unanswered_jobs_of_a_closed_connection_are_counted_abandoned():
    peer = Peer()
    c, sock = peer.connect()
    before = stats()["abandoned"]
    send_jobs(c, [b"a", b"b"])
    lib.gm_conn_close(c)
    sock.close()
    assert stats()["abandoned"] - before == 2


def test_job_queue_keeps_packets_whole_and_in_order():
    def packet(i, size):
        data = b"f\0u%d\0" % i + bytes([i % 256]) * size
        return b"\0REQ" + struct.pack(">II", SUBMIT_JOB_BG, len(data)) + data

    a, b = ffi.new("gm_jobq *"), ffi.new("gm_jobq *")
    packets = [packet(i, (i * 7919) % 5000) for i in range(300)]
    keep = [ffi.new("char[]", p) for p in packets]
    try:
        for i, (p, k) in enumerate(zip(packets, keep)):
            assert lib.gm_jobq_push(a if i < 200 else b, k, len(p)) == 0
        out = ffi.new("const char **")
        for i in range(50):  # take some off the front, so the live part does not start at 0
            n = lib.gm_jobq_front(a, out)
            assert ffi.buffer(out[0], n)[:] == packets[i]
            lib.gm_jobq_pop(a)
        assert lib.gm_jobq_append(a, b) == 0 and b.count == 0 and a.count == 250
        got = []
        while (n := lib.gm_jobq_front(a, out)) != 0:
            got.append(ffi.buffer(out[0], n)[:])
            lib.gm_jobq_pop(a)
        assert got == packets[50:] and a.count == 0
        assert lib.gm_jobq_append(b, a) == 0 and b.count == 0  # empty into empty
    finally:
        lib.gm_jobq_free(a)
        lib.gm_jobq_free(b)
        lib.gm_jobq_free(ffi.NULL)
