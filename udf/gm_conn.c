/*
 * gm_conn.c -- a gearmand connection with bounded waits (see gm_conn.h).
 */
#include "gm_conn.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gm_limits.h"
#include "gm_pipe.h"
#include "gm_stats.h"

int64_t gm_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int gm_conn_fail(gm_error *e, const char *what, int errnum)
{
    if (errnum)
        return gm_error_set(e, "%s: %s", what, strerror(errnum));
    return gm_error_set(e, "%s", what);
}

/* Wait for `events` on fd until deadline. GM_OK when ready, GM_ERR on timeout/error. */
static int gm_conn_wait(int fd, short events, int64_t deadline, gm_error *e)
{
    for (;;) {
        int64_t left = deadline - gm_now_us();
        if (left <= 0)
            return gm_conn_fail(e, "timed out", 0);
        struct pollfd p = {fd, events, 0};
        int ms = (int)((left + 999) / 1000);
        int r = poll(&p, 1, ms);
        if (r > 0)
            return GM_OK;
        if (r < 0 && errno != EINTR)
            return gm_conn_fail(e, "poll", errno);
    }
}

gm_conn *gm_conn_open(const struct sockaddr *addr, socklen_t addrlen, int timeout_ms, gm_error *e)
{
    int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        gm_conn_fail(e, "socket", errno);
        return NULL;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    if (connect(fd, addr, addrlen) != 0) {
        if (errno != EINPROGRESS) {
            gm_conn_fail(e, "connect", errno);
            close(fd);
            return NULL;
        }
        int soerr = 0;
        socklen_t len = sizeof soerr;
        if (gm_conn_wait(fd, POLLOUT, gm_deadline(timeout_ms), e) != GM_OK) {
            gm_error_set(e, "connect timed out after %d ms", timeout_ms);
            close(fd);
            return NULL;
        }
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0 || soerr != 0) {
            gm_conn_fail(e, "connect", soerr ? soerr : errno);
            close(fd);
            return NULL;
        }
    }
    gm_conn *c = calloc(1, sizeof *c);
    if (c == NULL) {
        gm_conn_fail(e, "out of memory", 0);
        close(fd);
        return NULL;
    }
    c->fd = fd;
    return c;
}

void gm_conn_close(gm_conn *c)
{
    if (c == NULL)
        return;
    if (c->fd >= 0)
        close(c->fd);
    free(c->rbuf);
    free(c->wbuf);
    gm_pipe_free(c->pending);
    free(c);
}

/* Make room for `extra` more bytes in a buffer whose live part is [*pos, *len). */
static int gm_conn_room(char **buf, size_t *pos, size_t *len, size_t *cap, size_t extra)
{
    if (*pos > 0 && (*pos == *len || *cap - *len < extra)) {
        memmove(*buf, *buf + *pos, *len - *pos);
        *len -= *pos;
        *pos = 0;
    }
    if (*cap - *len >= extra)
        return GM_OK;
    if (extra > SIZE_MAX / 2 - *len)
        return GM_ERR;
    size_t want = *len + extra, ncap = *cap ? *cap : 4096;
    while (ncap < want)
        ncap *= 2;
    char *p = realloc(*buf, ncap);
    if (p == NULL)
        return GM_ERR;
    *buf = p;
    *cap = ncap;
    return GM_OK;
}

int gm_conn_queue(gm_conn *c, unsigned type, const gm_slice *args, unsigned nargs, gm_error *e)
{
    const char *why = NULL;
    size_t need = gm_proto_packet_size(args, nargs);
    if (need == 0)
        return gm_conn_fail(e, "packet too large", 0);
    if (gm_conn_room(&c->wbuf, &c->wpos, &c->wlen, &c->wcap, need) != GM_OK)
        return gm_conn_fail(e, "out of memory", 0);
    size_t n = gm_proto_encode(c->wbuf + c->wlen, c->wcap - c->wlen, GM_MAGIC_REQ, type, args, nargs, &why);
    if (n == 0)
        return gm_conn_fail(e, why ? why : "cannot encode packet", 0);
    c->wlen += n;
    return GM_OK;
}

int gm_conn_queue_raw(gm_conn *c, const char *p, size_t len, gm_error *e)
{
    if (gm_conn_room(&c->wbuf, &c->wpos, &c->wlen, &c->wcap, len) != GM_OK)
        return gm_conn_fail(e, "out of memory", 0);
    memcpy(c->wbuf + c->wlen, p, len);
    c->wlen += len;
    return GM_OK;
}

/* One write attempt: GM_OK (maybe partial), GM_NEED_MORE (would block), GM_ERR. */
static int gm_conn_write_once(gm_conn *c, gm_error *e)
{
    ssize_t n = send(c->fd, c->wbuf + c->wpos, c->wlen - c->wpos, MSG_NOSIGNAL);
    if (n > 0) {
        c->wpos += (size_t)n;
        if (c->wpos == c->wlen)
            c->wpos = c->wlen = 0;
        return GM_OK;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return GM_NEED_MORE;
    return gm_conn_fail(e, "send", n < 0 ? errno : EPIPE);
}

int gm_conn_flush(gm_conn *c, int64_t deadline, gm_error *e)
{
    while (c->wpos < c->wlen) {
        int r = gm_conn_write_once(c, e);
        if (r == GM_ERR)
            return GM_ERR;
        if (r == GM_NEED_MORE && gm_conn_wait(c->fd, POLLOUT, deadline, e) != GM_OK) {
            c->timed_out = 1;
            return gm_conn_fail(e, "send timed out", 0);
        }
    }
    return GM_OK;
}

int gm_conn_flush_some(gm_conn *c, gm_error *e)
{
    while (c->wpos < c->wlen) {
        int r = gm_conn_write_once(c, e);
        if (r == GM_ERR)
            return GM_ERR;
        if (r == GM_NEED_MORE)
            break;
    }
    return GM_OK;
}

int gm_conn_wait_io(gm_conn *c, int64_t deadline, gm_error *e)
{
    short events = POLLIN | (c->wpos < c->wlen ? POLLOUT : 0);
    if (gm_conn_wait(c->fd, events, deadline, e) != GM_OK) {
        c->timed_out = 1;
        return gm_conn_fail(e, "no reply (timed out)", 0);
    }
    return GM_OK;
}

int gm_conn_recv(gm_conn *c, gm_packet *pkt, size_t max_data, int64_t deadline, gm_error *e)
{
    for (;;) {
        const char *why = NULL;
        /* Checked on every turn, not only before waiting: a peer that never stops sending
         * (bytes or packets nobody asked for) must not hold the thread past the deadline. */
        if (deadline >= 0 && gm_now_us() >= deadline) {
            c->timed_out = 1;
            return gm_conn_fail(e, "no reply (timed out)", 0);
        }
        size_t used = 0;
        int r = gm_proto_decode(c->rbuf + c->rpos, c->rlen - c->rpos, max_data, pkt, &used, &why);
        if (r == GM_OK) {
            c->rpos += used;
            return GM_OK;
        }
        if (r == GM_ERR) {
            c->broke_protocol = 1;
            gm_stats_add(GM_STAT_PROTOCOL_ERRORS, 1);
            /* Every caller's limit is max_workload plus room for a handle: name the setting. */
            if (why && strcmp(why, "packet larger than limit") == 0 && c->rlen - c->rpos >= GM_HEADER_SIZE) {
                const unsigned char *h = (const unsigned char *)c->rbuf + c->rpos + 8;
                unsigned long size = (unsigned long)h[0] << 24 | (unsigned long)h[1] << 16 | (unsigned long)h[2] << 8 | h[3];
                return gm_error_set(e, "packet larger than limit: %lu bytes, max_workload + %d is %zu", size,
                                    GM_REPLY_SLACK, max_data);
            }
            return gm_conn_fail(e, why ? why : "bad packet", 0);
        }
        /* Read at least what the packet still lacks, and up to 64 KiB more. */
        size_t lack = used - (c->rlen - c->rpos);
        if (gm_conn_room(&c->rbuf, &c->rpos, &c->rlen, &c->rcap, lack > 65536 ? lack : 65536) != GM_OK)
            return gm_conn_fail(e, "out of memory", 0);
        ssize_t n = recv(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen, 0);
        if (n > 0) {
            c->rlen += (size_t)n;
            continue;
        }
        if (n == 0)
            return gm_conn_fail(e, "connection closed by gearmand", 0);
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            return gm_conn_fail(e, "recv", errno);
        if (deadline < 0)
            return GM_NEED_MORE;
        if (gm_conn_wait(c->fd, POLLIN, deadline, e) != GM_OK) {
            c->timed_out = 1;
            return gm_conn_fail(e, "no reply (timed out)", 0);
        }
    }
}

int gm_conn_error_reply(const gm_packet *pkt, gm_error *e)
{
    return gm_error_set(e, "ERROR %.*s: %.*s", (int)(pkt->arg[0].len > 64 ? 64 : pkt->arg[0].len), pkt->arg[0].p,
                        (int)(pkt->arg[1].len > 160 ? 160 : pkt->arg[1].len), pkt->arg[1].p);
}

int gm_conn_is_stale(gm_conn *c)
{
    if (gm_pipe_count(c))
        return 0;
    if (c->rpos < c->rlen || c->wpos < c->wlen)
        return 1;
    struct pollfd p = {c->fd, POLLIN, 0};
    /* Readable while idle means EOF, an error, or bytes nobody asked for. */
    return poll(&p, 1, 0) != 0;
}
