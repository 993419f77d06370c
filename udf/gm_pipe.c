/*
 * gm_pipe.c -- unanswered jobs per connection, their pairing and flow control (see gm_pipe.h).
 */
#include "gm_pipe.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gm_stats.h"

#define GM_DRAIN_MAX 4096 /* replies read in one go without waiting: a flood cannot pin us */

unsigned gm_pipe_count(const gm_conn *c) { return c->pending ? c->pending->count : 0; }

size_t gm_pipe_bytes(const gm_conn *c) { return c->pending ? c->pending->len - c->pending->pos : 0; }

void gm_pipe_free(gm_jobq *pending)
{
    if (pending == NULL)
        return;
    if (pending->count)
        gm_stats_add(GM_STAT_ABANDONED, pending->count);
    gm_jobq_free(pending);
    free(pending);
}

static int gm_pipe_remember(gm_conn *c, const char *p, size_t len, gm_error *e)
{
    if ((c->pending == NULL && (c->pending = calloc(1, sizeof *c->pending)) == NULL) ||
        gm_jobq_push(c->pending, p, len) != GM_OK)
        return gm_error_set(e, "out of memory");
    gm_stats_add(GM_STAT_SENT, 1);
    return GM_OK;
}

int gm_pipe_send(gm_conn *c, const char *p, size_t len, gm_error *e)
{
    if (gm_conn_queue_raw(c, p, len, e) != GM_OK)
        return GM_ERR;
    if (gm_pipe_remember(c, p, len, e) != GM_OK) {
        c->wlen -= len; /* the newest bytes of the send buffer: take them back */
        return GM_ERR;
    }
    return GM_OK;
}

int gm_pipe_send_job(gm_conn *c, unsigned type, const gm_slice *args, unsigned nargs, gm_error *e)
{
    size_t n = gm_proto_packet_size(args, nargs);
    if (gm_conn_queue(c, type, args, nargs, e) != GM_OK)
        return GM_ERR;
    /* the packet just encoded ends the send buffer */
    if (gm_pipe_remember(c, c->wbuf + c->wlen - n, n, e) != GM_OK) {
        c->wlen -= n;
        return GM_ERR;
    }
    gm_stats_add(GM_STAT_JOBS, 1);
    return GM_OK;
}

void gm_pipe_rescue(gm_conn *c, gm_jobq *out)
{
    gm_jobq *pend = c->pending;
    if (pend == NULL || pend->count == 0)
        return;
    unsigned n = pend->count;
    if (gm_jobq_append(pend, out) != GM_OK)
        return; /* out of memory: left on c, counted as abandoned when it closes */
    gm_jobq tmp = *out;
    *out = *pend;
    *pend = tmp;
    gm_stats_add(GM_STAT_RESCUED, n);
}

/* The unique id of an encoded SUBMIT_JOB* packet (function NUL unique NUL workload). */
static void gm_pipe_unique(const char *p, size_t len, char *out)
{
    const char *d = p + GM_HEADER_SIZE, *end = p + len;
    const char *a = memchr(d, '\0', (size_t)(end - d));
    const char *b = a ? memchr(a + 1, '\0', (size_t)(end - a - 1)) : NULL;
    size_t n = a && b ? (size_t)(b - a - 1) : 0;
    if (n > GM_UNIQUE_MAX)
        n = GM_UNIQUE_MAX;
    memcpy(out, a ? a + 1 : "", n);
    out[n] = '\0';
}

int gm_pipe_violation(gm_conn *c, gm_error *e, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->text, sizeof e->text, fmt, ap);
    va_end(ap);
    c->broke_protocol = 1;
    gm_stats_add(GM_STAT_PROTOCOL_ERRORS, 1);
    return GM_ERR;
}

/* Pair a reply with the oldest unanswered job. */
static int gm_pipe_pair(gm_conn *c, const gm_packet *pkt, gm_reply *r, gm_error *e)
{
    r->kind = GM_REPLY_OTHER;
    r->unique[0] = '\0';
    gm_error_clear(&r->why);
    if (pkt->type != GM_JOB_CREATED && pkt->type != GM_ERROR)
        return GM_OK;
    const char *p;
    size_t n = c->pending ? gm_jobq_front(c->pending, &p) : 0;
    if (n == 0) { /* a reply to nothing we sent: the connection is out of step */
        if (pkt->type == GM_ERROR) {
            gm_error why;
            gm_conn_error_reply(pkt, &why);
            return gm_pipe_violation(c, e, "%s for a job it was not sent", why.text);
        }
        return gm_pipe_violation(c, e, "JOB_CREATED for a job it was not sent");
    }
    gm_pipe_unique(p, n, r->unique);
    gm_jobq_pop(c->pending);
    c->pending->progress_us = gm_now_us();
    if (c->answered_us)
        __atomic_store_n(c->answered_us, c->pending->progress_us, __ATOMIC_RELAXED);
    if (pkt->type == GM_JOB_CREATED && pkt->arg[0].len == 0) {
        r->kind = GM_REPLY_NO_HANDLE;
        gm_error_set(&r->why, "JOB_CREATED without a job handle");
        gm_stats_add(GM_STAT_NO_HANDLE, 1);
    } else if (pkt->type == GM_JOB_CREATED) {
        r->kind = GM_REPLY_CONFIRMED;
        gm_stats_add(GM_STAT_CONFIRMED, 1);
    } else {
        r->kind = GM_REPLY_REFUSED;
        gm_conn_error_reply(pkt, &r->why);
        gm_stats_add(GM_STAT_REFUSED, 1);
    }
    return GM_OK;
}

int gm_pipe_read(gm_conn *c, size_t max_reply, int64_t deadline, gm_pipe_handler h, void *ctx, unsigned *nread,
                 gm_error *e)
{
    *nread = 0;
    for (;;) {
        if (gm_conn_flush_some(c, e) != GM_OK)
            return GM_ERR;
        for (int n = 0; n < GM_DRAIN_MAX; n++) {
            gm_packet pkt;
            gm_reply r;
            int rc = gm_conn_recv(c, &pkt, max_reply, -1, e);
            if (rc == GM_NEED_MORE)
                break;
            if (rc != GM_OK)
                return GM_ERR;
            (*nread)++;
            if (gm_pipe_pair(c, &pkt, &r, e) != GM_OK || (h && h(ctx, &pkt, &r, e) != GM_OK))
                return GM_ERR;
        }
        if (*nread || deadline < 0)
            return GM_OK;
        if (gm_conn_wait_io(c, deadline, e) != GM_OK)
            return GM_ERR;
    }
}

int gm_pipe_drain(gm_conn *c, unsigned keep, size_t room, const gm_config *cfg, gm_pipe_handler h, void *ctx,
                  gm_error *e)
{
    int64_t io = (int64_t)cfg->io_timeout_ms * 1000;
    int64_t start = gm_now_us(), deadline = start + io;
    int64_t limit = start + (int64_t)(cfg->do_timeout_ms > cfg->io_timeout_ms ? cfg->do_timeout_ms : cfg->io_timeout_ms) * 1000;
    for (;;) {
        unsigned before = gm_pipe_count(c);
        int full = before > keep || (before > 0 && gm_pipe_bytes(c) + room > GM_PIPE_BYTES_MAX);
        if (!full)
            return GM_OK; /* unsent bytes go with the next wait or the caller's flush */
        int64_t now = gm_now_us();
        if (now >= deadline) {
            /* Nothing for us within io_timeout_ms. If the server answered another of our
             * connections meanwhile it is busy, not frozen: wait on, up to do_timeout_ms. */
            int64_t heard = c->answered_us ? __atomic_load_n(c->answered_us, __ATOMIC_RELAXED) : 0;
            if (heard + io <= now || now >= limit) {
                c->timed_out = 1;
                gm_stats_add(GM_STAT_TIMEOUTS, 1);
                return gm_error_set(e, "timed out waiting for confirmations");
            }
            deadline = heard + io < limit ? heard + io : limit;
        }
        unsigned nread;
        if (gm_pipe_read(c, gm_config_max_reply(cfg), deadline, h, ctx, &nread, e) != GM_OK) {
            if (!c->timed_out)
                return GM_ERR;
            c->timed_out = 0; /* decided above, on the next turn */
            continue;
        }
        if (gm_pipe_count(c) != before)
            deadline = gm_now_us() + io; /* a reply: the wait starts over */
    }
}
