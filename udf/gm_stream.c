/*
 * gm_stream.c -- pipelined groups of jobs, moving to the next server before a burst is
 * answered (see gm_stream.h).
 */
#include "gm_stream.h"

#include "gm_pipe.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void gm_stream_init(gm_stream *st, const gm_config *cfg, int want_results)
{
    memset(st, 0, sizeof *st);
    st->cfg = cfg;
    st->want_results = want_results;
}

/* Connect to the next usable server of the list (the picker notes the ones that fail). */
static int gm_stream_connect(gm_stream *st, gm_error *e)
{
    gm_server *s;
    gm_error why;
    st->pick.now = gm_now_us(); /* a move comes later than the stream's start */
    while ((s = gm_pick_next(&st->pick)) != NULL) {
        int reused;
        gm_conn *c = gm_server_checkout(s, st->cfg->connect_timeout_ms, 1, &reused, &why);
        if (c && (!st->want_results || gm_client_enable_exceptions(c, st->cfg, &why) == GM_OK)) {
            gm_server_mark_up(s); /* it answered: a probe after back-off succeeded */
            st->conn = c;
            st->server = s;
            return GM_OK;
        }
        gm_conn_close(c);
        gm_pick_failed(&st->pick, s, &why, 1);
    }
    return gm_pick_error(&st->pick, e);
}

/* Account for one reply, after the pipe paired it with its job. */
static int gm_stream_on_reply(void *vst, const gm_packet *pkt, const gm_reply *r, gm_error *e)
{
    gm_stream *st = vst;
    if (r->kind == GM_REPLY_CONFIRMED) {
        if (st->want_results && gm_handles_add(&st->handles, pkt->arg[0].p, pkt->arg[0].len) != GM_OK) {
            st->fatal = 1;
            return gm_error_set(e, "out of memory (or a handle over %d bytes)", GM_HANDLE_MAX);
        }
        st->created++;
        return GM_OK;
    }
    if (r->kind == GM_REPLY_REFUSED || r->kind == GM_REPLY_NO_HANDLE) { /* this job only: the others go on */
        if (st->refused + st->unhandled == 0)
            gm_error_set(&st->refusal, "%.180s (job %s %s", r->why.text, r->unique,
                         r->kind == GM_REPLY_REFUSED ? "refused" : "may or may not be queued");
        if (r->kind == GM_REPLY_REFUSED)
            st->refused++;
        else
            st->unhandled++; /* never sent again: it may be queued */
        return GM_OK;
    }
    /* A result counts only for a job of this stream, and only once. */
    int ours = pkt->nargs > 0 && (pkt->type == GM_WORK_COMPLETE || pkt->type == GM_WORK_FAIL ||
                                  pkt->type == GM_WORK_EXCEPTION) &&
               gm_handles_finish(&st->handles, pkt->arg[0].p, pkt->arg[0].len);
    switch (pkt->type) {
    case GM_WORK_COMPLETE: {
        if (!ours)
            return GM_OK;
        char num[32];
        size_t n = pkt->arg[1].len < sizeof num - 1 ? pkt->arg[1].len : sizeof num - 1;
        memcpy(num, pkt->arg[1].p, n);
        num[n] = '\0';
        errno = 0;
        long long v = strtoll(num, NULL, 10); /* a non-number counts 0, as in gearman-mysql-udf */
        st->completed++;
        if (errno == ERANGE || __builtin_add_overflow(st->sum, (int64_t)v, &st->sum)) {
            st->fatal = 1;
            return gm_error_set(e, "the sum is out of the BIGINT range");
        }
        return GM_OK;
    }
    case GM_WORK_FAIL:
    case GM_WORK_EXCEPTION:
        st->failed += ours;
        return GM_OK;
    default:
        return GM_OK; /* NOOP, WORK_DATA, WORK_STATUS, WORK_WARNING */
    }
}

/* The server in use failed with e. Before any job of this burst was answered (and, for
 * foreground jobs, before any was confirmed at all), the burst's jobs go to the next
 * server, which carries the stream from now on. GM_OK when they went; else GM_ERR, e
 * naming every server tried, the stream broken. */
static int gm_stream_move(gm_stream *st, gm_error *e)
{
    int movable = !st->fatal && st->created + st->refused + st->unhandled <= st->burst_start &&
                  (!st->want_results || st->created == 0);
    if (!movable) {
        gm_error_prefix(e, "gearmand %s: ", st->server->name);
        st->broken = 1;
        return GM_ERR;
    }
    gm_conn *old = st->conn;
    gm_server *old_server = st->server;
    gm_error why = *e;
    gm_pick_failed(&st->pick, old_server, e, 1);
    st->conn = NULL;
    if (gm_stream_connect(st, e) != GM_OK) {
        st->conn = old; /* closed with its jobs (abandoned) by gm_stream_close */
        st->server = old_server;
        st->broken = 1;
        return GM_ERR;
    }
    if (old->broke_protocol)
        gm_error_set(&st->note, "gearmand %s broke the protocol: %.120s (its %u unanswered jobs went to gearmand %s)",
                     old_server->name, why.text, gm_pipe_count(old), st->server->name);
    gm_jobq burst;
    memset(&burst, 0, sizeof burst);
    gm_pipe_rescue(old, &burst);
    unsigned left = gm_pipe_count(old); /* out of memory: not taken off, lost with old */
    gm_conn_close(old);
    if (left) {
        gm_jobq_free(&burst);
        st->broken = 1;
        return gm_error_set(e, "out of memory moving %u unanswered jobs to gearmand %s", left, st->server->name);
    }
    const char *p;
    size_t n;
    int rc = GM_OK;
    while (rc == GM_OK && (n = gm_jobq_front(&burst, &p)) != 0) {
        rc = gm_pipe_send(st->conn, p, n, e);
        gm_jobq_pop(&burst);
    }
    gm_jobq_free(&burst);
    if (rc != GM_OK) {
        gm_error_prefix(e, "gearmand %s: ", st->server->name);
        st->broken = 1;
    }
    return rc;
}

/* Wait until at most `keep` jobs are unanswered, moving to the next server as above. */
static int gm_stream_drain(gm_stream *st, unsigned keep, gm_error *e)
{
    for (;;) {
        if (gm_pipe_drain(st->conn, keep, 0, st->cfg, gm_stream_on_reply, st, e) == GM_OK) {
            st->burst_start = st->sent;
            return GM_OK;
        }
        if (gm_stream_move(st, e) != GM_OK)
            return GM_ERR;
    }
}

int gm_stream_add(gm_stream *st, const gm_job *job, gm_error *e)
{
    if (st->broken)
        return GM_ERR;
    if (st->conn == NULL) {
        if (st->pick.routes == NULL)
            gm_pick_begin(&st->pick, st->cfg, job->fn, job->fn_len);
        if (gm_stream_connect(st, e) != GM_OK)
            return GM_ERR;
    }
    if (gm_client_check(st->cfg, job, e) != GM_OK)
        return GM_ERR;
    gm_slice args[3] = {{job->fn, job->fn_len}, {job->unique, job->unique_len}, {job->workload, job->workload_len}};
    if (gm_pipe_send_job(st->conn, job->type, args, 3, e) != GM_OK) {
        gm_error_prefix(e, "gearmand %s: ", st->server->name);
        st->broken = 1;
        return GM_ERR;
    }
    st->sent++;
    /* A bounded number of jobs in flight: past the window, send them and wait until half
     * are answered, so a server reading a whole burst before answering never gets a flood.
     * The window follows the server: a burst should take it well under io_timeout_ms. */
    if (st->window == 0)
        st->window = GM_STREAM_WINDOW_START;
    if (gm_pipe_count(st->conn) < st->window && gm_pipe_bytes(st->conn) < GM_PIPE_BYTES_MAX)
        return GM_OK;
    int64_t t0 = gm_now_us(), io = (int64_t)st->cfg->io_timeout_ms * 1000;
    if (gm_stream_drain(st, st->window / 2, e) != GM_OK)
        return GM_ERR;
    int64_t took = gm_now_us() - t0;
    if (took > io / 4 && st->window > GM_STREAM_WINDOW_MIN)
        st->window /= 2;
    else if (took < io / 16 && st->window < GM_STREAM_WINDOW_MAX)
        st->window *= 2;
    return GM_OK;
}

static int gm_stream_fail(gm_stream *st, gm_error *e, const char *what)
{
    st->broken = 1;
    return gm_error_set(e, "gearmand %s: %s", st->server->name, what);
}

int gm_stream_finish(gm_stream *st, gm_error *e)
{
    if (st->broken)
        return GM_ERR;
    if (st->conn == NULL)
        return GM_OK; /* no rows */
    if (gm_stream_drain(st, 0, e) != GM_OK)
        return GM_ERR;
    /* Every job answered; foreground ones also end: each result restarts the wait (not
     * when a job has no handle: its result could not be told, so the sum would be wrong). */
    int64_t deadline = gm_deadline(st->cfg->do_timeout_ms);
    while (st->want_results && !st->unhandled && st->completed + st->failed < st->created) {
        uint64_t before = st->completed + st->failed;
        unsigned nread;
        if (gm_pipe_read(st->conn, gm_config_max_reply(st->cfg), deadline, gm_stream_on_reply, st, &nread, e) !=
            GM_OK)
        {
            if (st->conn->timed_out)
                return gm_stream_fail(st, e, "timed out waiting for results");
            st->broken = 1;
            return gm_error_prefix(e, "gearmand %s: ", st->server->name);
        }
        if (st->completed + st->failed != before)
            deadline = gm_deadline(st->cfg->do_timeout_ms);
        else if (gm_now_us() >= deadline)
            return gm_stream_fail(st, e, "timed out waiting for results");
    }
    if (st->refused || st->unhandled) { /* the connection stays good: every job was answered */
        char counts[96] = "";
        size_t n = 0;
        if (st->refused)
            n = (size_t)snprintf(counts, sizeof counts, "%llu of %llu refused", (unsigned long long)st->refused,
                                 (unsigned long long)st->sent);
        if (st->unhandled && n < sizeof counts)
            snprintf(counts + n, sizeof counts - n, "%s%llu of %llu without a handle", n ? ", " : "",
                     (unsigned long long)st->unhandled, (unsigned long long)st->sent);
        return gm_error_set(e, "gearmand %s: %.180s; %s)", st->server->name, st->refusal.text, counts);
    }
    return GM_OK;
}

void gm_stream_close(gm_stream *st)
{
    gm_handles_free(&st->handles);
    if (st->conn) {
        int clean = !st->broken && gm_pipe_count(st->conn) == 0 &&
                    (!st->want_results || st->completed + st->failed == st->created);
        if (clean)
            gm_server_checkin(st->server, st->conn);
        else
            gm_conn_close(st->conn);
    }
    gm_pick_end(&st->pick); /* the server goes with the snapshot's reference */
    st->conn = NULL;
    st->server = NULL;
}
