/*
 * gm_client.c -- single jobs with failover, and pipelined streams (see gm_client.h).
 */
#define _GNU_SOURCE
#include "gm_client.h"

#include "gm_pipeline.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define GM_UNIQUE_MAX 63     /* GEARMAN_MAX_UNIQUE_SIZE is 64 with the NUL: gearmand keeps 63 bytes */
/* Unanswered jobs of a stream: adapted between these, so that a burst takes a quarter of
 * io_timeout_ms at most (a durable queue takes ~1 ms per job, more on a busy disk). */
#define GM_STREAM_WINDOW_MIN 8
#define GM_STREAM_WINDOW_START 32
#define GM_STREAM_WINDOW_MAX 256

/* What an operation on one connection reports to the failover loop. */
enum gm_op_result {
    GM_OP_OK = 0,
    GM_OP_IO = 1,      /* the connection failed: try again / next server, back off this one */
    GM_OP_REFUSED = 2, /* the server answered ERROR: next server, no back-off */
    GM_OP_FINAL = 3    /* stop here (the job was accepted, then its connection failed) */
};

typedef int (*gm_op)(gm_conn *c, void *ctx, const gm_config *cfg, char *err);

static __thread uint64_t gm_rng[2];

static uint64_t gm_rng_next(void)
{
    /* xorshift128+, seeded per thread from the kernel: ids are unique, not secret. */
    if (gm_rng[0] == 0 && gm_rng[1] == 0) {
        /* The system call, not getrandom(3): that wrapper needs glibc 2.25. */
        if (syscall(SYS_getrandom, gm_rng, sizeof gm_rng, 0) != (long)sizeof gm_rng || (gm_rng[0] | gm_rng[1]) == 0) {
            gm_rng[0] = (uint64_t)gm_now_us() ^ 0x9E3779B97F4A7C15ull;
            gm_rng[1] = (uint64_t)(uintptr_t)&gm_rng ^ 0xD1B54A32D192ED03ull;
        }
    }
    uint64_t s1 = gm_rng[0];
    const uint64_t s0 = gm_rng[1];
    gm_rng[0] = s0;
    s1 ^= s1 << 23;
    gm_rng[1] = s1 ^ s0 ^ (s1 >> 17) ^ (s0 >> 26);
    return gm_rng[1] + s0;
}

void gm_client_unique(char out[33])
{
    static const char hex[] = "0123456789abcdef";
    uint64_t v[2] = {gm_rng_next(), gm_rng_next()};
    for (int i = 0; i < 32; i++)
        out[i] = hex[(v[i / 16] >> ((i % 16) * 4)) & 15];
    out[32] = '\0';
}

int gm_client_check(const gm_config *cfg, const gm_job *job, char *err)
{
    if (job->fn_len == 0 || job->fn_len > GM_FUNCTION_MAX || memchr(job->fn, '\0', job->fn_len)) {
        snprintf(err, GM_ERRLEN, "function name must be 1-%d bytes without NUL", GM_FUNCTION_MAX);
        return GM_ERR;
    }
    if (job->unique_len > GM_UNIQUE_MAX || (job->unique_len && memchr(job->unique, '\0', job->unique_len))) {
        snprintf(err, GM_ERRLEN, "unique id must be at most %d bytes without NUL", GM_UNIQUE_MAX);
        return GM_ERR;
    }
    if (job->workload_len > cfg->max_workload) {
        snprintf(err, GM_ERRLEN, "workload of %zu bytes is larger than max_workload (%zu)", job->workload_len,
                 cfg->max_workload);
        return GM_ERR;
    }
    return GM_OK;
}

static size_t gm_client_max_reply(const gm_config *cfg) { return cfg->max_workload + 4096; }

static void gm_client_error_packet(const gm_packet *pkt, char *err)
{
    snprintf(err, GM_ERRLEN, "ERROR %.*s: %.*s", (int)(pkt->arg[0].len > 64 ? 64 : pkt->arg[0].len), pkt->arg[0].p,
             (int)(pkt->arg[1].len > 160 ? 160 : pkt->arg[1].len), pkt->arg[1].p);
}

static int gm_client_queue_job(gm_conn *c, const gm_job *job, char *err)
{
    gm_slice args[3] = {{job->fn, job->fn_len}, {job->unique, job->unique_len}, {job->workload, job->workload_len}};
    return gm_conn_queue(c, job->type, args, 3, err);
}

/* Send a job and wait for JOB_CREATED; the handle goes to handle[GM_HANDLE_MAX + 1]. */
static int gm_client_send_job(gm_conn *c, const gm_job *job, const gm_config *cfg, char *handle, size_t *hlen,
                              char *err)
{
    int64_t deadline = gm_deadline(cfg->io_timeout_ms);
    if (gm_client_queue_job(c, job, err) != GM_OK)
        return GM_OP_FINAL; /* cannot encode: no server would take it */
    if (gm_conn_flush(c, deadline, err) != GM_OK)
        return GM_OP_IO;
    for (;;) {
        gm_packet pkt;
        if (gm_conn_recv(c, &pkt, gm_client_max_reply(cfg), deadline, err) != GM_OK)
            return GM_OP_IO;
        if (pkt.type == GM_JOB_CREATED) {
            if (pkt.arg[0].len > GM_HANDLE_MAX) { /* a cut handle would never match its result */
                snprintf(err, GM_ERRLEN, "job handle longer than %d bytes", GM_HANDLE_MAX);
                return GM_OP_IO;
            }
            memcpy(handle, pkt.arg[0].p, pkt.arg[0].len);
            handle[pkt.arg[0].len] = '\0';
            *hlen = pkt.arg[0].len;
            return GM_OP_OK;
        }
        if (pkt.type == GM_ERROR) {
            gm_client_error_packet(&pkt, err);
            return GM_OP_REFUSED;
        }
        if (pkt.type != GM_NOOP) {
            snprintf(err, GM_ERRLEN, "unexpected %s before JOB_CREATED", gm_proto_type_name(pkt.type));
            return GM_OP_IO;
        }
    }
}

static void gm_client_note(char *acc, size_t *used, const gm_server *s, const char *what)
{
    if (*used >= GM_ERRLEN - 1)
        return;
    int n = snprintf(acc + *used, GM_ERRLEN - *used, "%sgearmand %s: %s", *used ? "; " : "", s->name, what);
    if (n > 0)
        *used += (size_t)n < GM_ERRLEN - *used ? (size_t)n : GM_ERRLEN - 1 - *used;
}

/* Run op on the function's servers in list order until one succeeds. */
static int gm_client_run(const char *fn, size_t fn_len, gm_op op, int clean, void *ctx, char *err)
{
    const gm_config *cfg = gm_settings(err);
    if (cfg == NULL)
        return GM_ERR;
    gm_routes *routes = gm_routes_acquire();
    const gm_route *rt = gm_routes_for(routes, fn, fn_len);
    char acc[GM_ERRLEN], e[GM_ERRLEN];
    size_t used = 0;
    int64_t now = gm_now_us();
    acc[0] = '\0';
    for (unsigned i = 0; i < rt->n; i++) {
        gm_server *s = rt->servers[i];
        if (!gm_server_usable(s, now)) {
            char down[GM_ERRLEN];
            pthread_mutex_lock(&s->lock);
            snprintf(down, sizeof down, "skipped for %d ms after: %.180s",
                     (int)((s->down_until - now) / 1000 > 0 ? (s->down_until - now) / 1000 : 0), s->last_err);
            pthread_mutex_unlock(&s->lock);
            gm_client_note(acc, &used, s, down);
            continue;
        }
        int rc = GM_OP_IO;
        for (int attempt = 0; attempt < 2; attempt++) {
            int reused = 0;
            gm_conn *c = gm_server_checkout(s, cfg->connect_timeout_ms, clean, &reused, e);
            if (c == NULL) {
                rc = GM_OP_IO;
                break;
            }
            rc = op(c, ctx, cfg, e);
            if (rc == GM_OP_OK) {
                gm_server_checkin(s, c);
                gm_server_mark_up(s);
                gm_routes_release(routes);
                return GM_OK;
            }
            int timed_out = c->timed_out;
            gm_conn_close(c);
            /* A pooled connection may have died while idle (closed, reset): one more try on a
             * fresh one. Not after a timeout: a silent server would cost a second timeout. */
            if (!(rc == GM_OP_IO && reused && !timed_out))
                break;
        }
        gm_client_note(acc, &used, s, e);
        if (rc == GM_OP_FINAL)
            break;
        if (rc == GM_OP_IO)
            gm_server_mark_down(s, e, cfg->backoff_ms);
    }
    gm_routes_release(routes);
    snprintf(err, GM_ERRLEN, "%s", used ? acc : "no gearmand server configured");
    return GM_ERR;
}

typedef struct gm_submit_ctx {
    const gm_job *job;
    char *handle;
    size_t *handle_len;
} gm_submit_ctx;

static int gm_op_submit_bg(gm_conn *c, void *vctx, const gm_config *cfg, char *err)
{
    gm_submit_ctx *ctx = vctx;
    return gm_client_send_job(c, ctx->job, cfg, ctx->handle, ctx->handle_len, err);
}

int gm_client_submit_bg(const gm_job *job, char *handle, size_t *handle_len, char *note, char *err)
{
    const gm_config *cfg = gm_settings(err);
    note[0] = '\0';
    if (cfg == NULL)
        return GM_ERR;
    if (cfg->pipeline_window == 0) {
        gm_submit_ctx ctx = {job, handle, handle_len};
        return gm_client_run(job->fn, job->fn_len, gm_op_submit_bg, 1, &ctx, err);
    }
    /* Pipelined: no handle yet, so the value is the job's unique id. */
    if (gm_pipeline_submit(job->type, job->fn, job->fn_len, job->unique, job->unique_len, job->workload,
                           job->workload_len, note, err) != GM_OK)
        return GM_ERR;
    size_t n = job->unique_len > GM_HANDLE_MAX ? GM_HANDLE_MAX : job->unique_len;
    memcpy(handle, job->unique, n);
    handle[n] = '\0';
    *handle_len = n;
    return GM_OK;
}

typedef struct gm_do_ctx {
    const gm_job *job;
    enum gm_outcome outcome;
    char *data;
    size_t data_len, data_cap;
} gm_do_ctx;

/* Ask gearmand to forward WORK_EXCEPTION (it sends WORK_FAIL otherwise). */
static int gm_client_enable_exceptions(gm_conn *c, const gm_config *cfg, char *err)
{
    if (c->options_sent)
        return GM_OP_OK;
    int64_t deadline = gm_deadline(cfg->io_timeout_ms);
    gm_slice opt = {"exceptions", 10};
    if (gm_conn_queue(c, GM_OPTION_REQ, &opt, 1, err) != GM_OK || gm_conn_flush(c, deadline, err) != GM_OK)
        return GM_OP_IO;
    gm_packet pkt;
    do {
        if (gm_conn_recv(c, &pkt, gm_client_max_reply(cfg), deadline, err) != GM_OK)
            return GM_OP_IO;
    } while (pkt.type == GM_NOOP);
    c->options_sent = 1; /* OPTION_RES, or ERROR from a server without the option: fine */
    return GM_OP_OK;
}

/* Append a piece of the job's result to ctx->data (NUL-terminated), within max_workload. */
static int gm_do_append(gm_do_ctx *ctx, const gm_slice *piece, const gm_config *cfg, const char *handle, char *err)
{
    if (piece->len > cfg->max_workload - ctx->data_len) {
        snprintf(err, GM_ERRLEN, "job %s: result larger than max_workload (%zu bytes)", handle, cfg->max_workload);
        return GM_ERR;
    }
    size_t want = ctx->data_len + piece->len + 1;
    if (want > ctx->data_cap) {
        size_t cap = ctx->data_cap ? ctx->data_cap : 256;
        while (cap < want)
            cap *= 2;
        char *p = realloc(ctx->data, cap);
        if (p == NULL) {
            snprintf(err, GM_ERRLEN, "out of memory for a %zu-byte result", want);
            return GM_ERR;
        }
        ctx->data = p;
        ctx->data_cap = cap;
    }
    memcpy(ctx->data + ctx->data_len, piece->p, piece->len);
    ctx->data_len += piece->len;
    ctx->data[ctx->data_len] = '\0';
    return GM_OK;
}

static int gm_op_do(gm_conn *c, void *vctx, const gm_config *cfg, char *err)
{
    gm_do_ctx *ctx = vctx;
    ctx->data_len = 0; /* a second attempt starts over */
    char handle[GM_HANDLE_MAX + 1];
    size_t hlen;
    int rc = gm_client_enable_exceptions(c, cfg, err);
    if (rc == GM_OP_OK)
        rc = gm_client_send_job(c, ctx->job, cfg, handle, &hlen, err);
    if (rc != GM_OP_OK)
        return rc;
    /* The job exists now: from here a failure is reported, never retried elsewhere. */
    int64_t deadline = gm_deadline(cfg->do_timeout_ms);
    for (;;) {
        gm_packet pkt;
        if (gm_conn_recv(c, &pkt, gm_client_max_reply(cfg), deadline, err) != GM_OK) {
            char why[GM_ERRLEN];
            snprintf(why, sizeof why, "job %s accepted, then: %.180s", handle, err);
            snprintf(err, GM_ERRLEN, "%s", why);
            return GM_OP_FINAL;
        }
        if (pkt.type == GM_ERROR) { /* the server gave up on us: no result will come */
            char why[GM_ERRLEN];
            gm_client_error_packet(&pkt, why);
            snprintf(err, GM_ERRLEN, "job %s accepted, then: %.180s", handle, why);
            return GM_OP_FINAL;
        }
        if (pkt.type == GM_NOOP || pkt.type == GM_WORK_WARNING || pkt.type == GM_WORK_STATUS)
            continue;
        if (pkt.nargs == 0 || pkt.arg[0].len != hlen || memcmp(pkt.arg[0].p, handle, hlen) != 0)
            continue; /* not about our job */
        if (pkt.type == GM_WORK_FAIL) {
            ctx->outcome = GM_JOB_FAIL;
            return GM_OP_OK;
        }
        if (pkt.type == GM_WORK_EXCEPTION)
            ctx->data_len = 0; /* the result is the exception's text alone */
        if (pkt.type == GM_WORK_DATA || pkt.type == GM_WORK_COMPLETE || pkt.type == GM_WORK_EXCEPTION) {
            /* A streamed result is its WORK_DATA chunks, then WORK_COMPLETE's data, as
             * libgearman's clients see it; bounded like one reply. */
            if (gm_do_append(ctx, &pkt.arg[1], cfg, handle, err) != GM_OK)
                return GM_OP_FINAL;
        }
        if (pkt.type == GM_WORK_COMPLETE || pkt.type == GM_WORK_EXCEPTION) {
            ctx->outcome = pkt.type == GM_WORK_COMPLETE ? GM_JOB_COMPLETE : GM_JOB_EXCEPTION;
            return GM_OP_OK;
        }
    }
}

int gm_client_do(const gm_job *job, enum gm_outcome *outcome, char **data, size_t *data_len, char *err)
{
    gm_do_ctx ctx = {job, GM_JOB_FAIL, NULL, 0, 0};
    int rc = gm_client_run(job->fn, job->fn_len, gm_op_do, 1, &ctx, err);
    if (rc == GM_OK && ctx.data == NULL && (ctx.data = malloc(1)) != NULL)
        ctx.data[0] = '\0'; /* an empty result */
    if (rc != GM_OK) {
        free(ctx.data);
        ctx.data = NULL;
        ctx.data_len = 0;
    }
    *outcome = ctx.outcome;
    *data = ctx.data;
    *data_len = ctx.data_len;
    return rc;
}

/* ---- streams: one connection, many jobs in flight ---- */

void gm_stream_init(gm_stream *st, int want_results)
{
    memset(st, 0, sizeof *st);
    st->want_results = want_results;
}

/* Pick the first usable server of the function's list and connect to it. */
static int gm_stream_connect(gm_stream *st, const gm_job *job, char *err)
{
    char e[GM_ERRLEN];
    st->cfg = gm_settings(err);
    if (st->cfg == NULL)
        return GM_ERR;
    gm_routes *routes = gm_routes_acquire();
    const gm_route *rt = gm_routes_for(routes, job->fn, job->fn_len);
    int64_t now = gm_now_us();
    snprintf(err, GM_ERRLEN, "no usable gearmand server for this function");
    for (unsigned i = 0; i < rt->n && st->conn == NULL; i++) {
        gm_server *s = rt->servers[i];
        int reused;
        if (!gm_server_usable(s, now))
            continue;
        st->conn = gm_server_checkout(s, st->cfg->connect_timeout_ms, 1, &reused, e);
        if (st->conn == NULL) {
            snprintf(err, GM_ERRLEN, "gearmand %s: %.200s", s->name, e);
            gm_server_mark_down(s, e, st->cfg->backoff_ms);
            continue;
        }
        st->server = s;
        gm_server_ref(s); /* the stream outlives the snapshot: the routes may change meanwhile */
        gm_server_mark_up(s); /* it answered: a probe after back-off succeeded */
        if (st->want_results && gm_client_enable_exceptions(st->conn, st->cfg, e) != GM_OP_OK) {
            snprintf(err, GM_ERRLEN, "gearmand %s: %.200s", s->name, e);
            gm_conn_close(st->conn);
            gm_server_mark_down(s, e, st->cfg->backoff_ms);
            gm_server_unref(s);
            st->conn = NULL;
            st->server = NULL;
        }
    }
    gm_routes_release(routes);
    return st->conn ? GM_OK : GM_ERR;
}

static int gm_stream_fail(gm_stream *st, char *err, const char *what)
{
    char tmp[GM_ERRLEN];
    snprintf(tmp, sizeof tmp, "gearmand %s: %.200s", st->server ? st->server->name : "?", what);
    snprintf(err, GM_ERRLEN, "%s", tmp);
    st->broken = 1;
    return GM_ERR;
}

/* Account for one reply, after the pipe paired it with its job. */
static int gm_stream_on_reply(void *vst, const gm_packet *pkt, const gm_reply *r, char *err)
{
    gm_stream *st = vst;
    if (r->kind == GM_REPLY_CONFIRMED) {
        if (st->want_results && gm_handles_add(&st->handles, pkt->arg[0].p, pkt->arg[0].len) != GM_OK) {
            snprintf(err, GM_ERRLEN, "out of memory (or a handle over %d bytes)", GM_HANDLE_MAX);
            return GM_ERR;
        }
        st->created++;
        return GM_OK;
    }
    if (r->kind == GM_REPLY_REFUSED) { /* this job only: the others go on */
        if (st->refused++ == 0)
            snprintf(st->refusal, sizeof st->refusal, "%.180s (job %s refused", r->why, r->unique);
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
            snprintf(err, GM_ERRLEN, "the sum is out of the BIGINT range");
            return GM_ERR;
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

int gm_stream_add(gm_stream *st, const gm_job *job, char *err)
{
    char e[GM_ERRLEN];
    if (st->broken)
        return GM_ERR;
    if (st->conn == NULL && gm_stream_connect(st, job, err) != GM_OK)
        return GM_ERR;
    if (gm_client_check(st->cfg, job, err) != GM_OK)
        return GM_ERR;
    gm_slice args[3] = {{job->fn, job->fn_len}, {job->unique, job->unique_len}, {job->workload, job->workload_len}};
    if (gm_pipe_send_job(st->conn, job->type, args, 3, e) != GM_OK)
        return gm_stream_fail(st, err, e);
    st->sent++;
    /* A bounded number of jobs in flight: past the window, send them and wait until half
     * are answered, so a server reading a whole burst before answering never gets a flood.
     * The window follows the server: a burst should take it well under io_timeout_ms. */
    if (st->window == 0)
        st->window = GM_STREAM_WINDOW_START;
    if (gm_pipe_count(st->conn) < st->window && gm_pipe_bytes(st->conn) < GM_PIPE_BYTES_MAX)
        return GM_OK;
    int64_t t0 = gm_now_us(), io = (int64_t)st->cfg->io_timeout_ms * 1000;
    if (gm_pipe_drain(st->conn, st->window / 2, 0, st->cfg, st->cfg->io_timeout_ms, gm_stream_on_reply, st, e) !=
        GM_OK)
        return gm_stream_fail(st, err, e);
    int64_t took = gm_now_us() - t0;
    if (took > io / 4 && st->window > GM_STREAM_WINDOW_MIN)
        st->window /= 2;
    else if (took < io / 16 && st->window < GM_STREAM_WINDOW_MAX)
        st->window *= 2;
    return GM_OK;
}

int gm_stream_finish(gm_stream *st, char *err)
{
    char e[GM_ERRLEN];
    if (st->broken)
        return GM_ERR;
    if (st->conn == NULL)
        return GM_OK; /* no rows */
    size_t max_reply = gm_client_max_reply(st->cfg);
    if (gm_pipe_drain(st->conn, 0, 0, st->cfg, st->cfg->io_timeout_ms, gm_stream_on_reply, st, e) != GM_OK)
        return gm_stream_fail(st, err, e);
    /* Every job answered; foreground ones also end: each result restarts the wait. */
    int64_t deadline = gm_deadline(st->cfg->do_timeout_ms);
    while (st->want_results && st->completed + st->failed < st->created) {
        uint64_t before = st->completed + st->failed;
        unsigned nread;
        if (gm_pipe_read(st->conn, max_reply, deadline, gm_stream_on_reply, st, &nread, e) != GM_OK)
            return gm_stream_fail(st, err, st->conn->timed_out ? "timed out waiting for results" : e);
        if (st->completed + st->failed != before)
            deadline = gm_deadline(st->cfg->do_timeout_ms);
        else if (gm_now_us() >= deadline)
            return gm_stream_fail(st, err, "timed out waiting for results");
    }
    if (st->refused) {
        snprintf(err, GM_ERRLEN, "gearmand %s: %.200s; %llu of %llu refused)", st->server->name, st->refusal,
                 (unsigned long long)st->refused, (unsigned long long)st->sent);
        return GM_ERR; /* the connection stays good: every job was answered */
    }
    return GM_OK;
}

void gm_stream_close(gm_stream *st)
{
    gm_handles_free(&st->handles);
    if (st->conn == NULL)
        return;
    int clean = !st->broken && gm_pipe_count(st->conn) == 0 &&
                (!st->want_results || st->completed + st->failed == st->created);
    if (clean)
        gm_server_checkin(st->server, st->conn);
    else
        gm_conn_close(st->conn);
    gm_server_unref(st->server);
    st->conn = NULL;
    st->server = NULL;
}
