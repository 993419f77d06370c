/*
 * gm_client.c -- single jobs with failover (see gm_client.h).
 */
#define _GNU_SOURCE
#include "gm_client.h"

#include "gm_pick.h"
#include "gm_pipeline.h"
#include "gm_stats.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* What an operation on one connection reports to the failover loop. */
enum gm_op_result {
    GM_OP_OK = 0,
    GM_OP_IO = 1,      /* the connection failed: try again / next server, back off this one */
    GM_OP_REFUSED = 2, /* the server answered ERROR: next server, no back-off */
    GM_OP_FINAL = 3,   /* stop here (the job was accepted, then its connection failed) */
    GM_OP_BROKEN = 4   /* stop here (it may hold the job) and back this server off: a broken reply */
};

typedef int (*gm_op)(gm_conn *c, void *ctx, const gm_config *cfg, gm_error *e);

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

int gm_client_check(const gm_config *cfg, const gm_job *job, gm_error *e)
{
    if (job->fn_len == 0 || job->fn_len > GM_FUNCTION_MAX || memchr(job->fn, '\0', job->fn_len))
        return gm_error_set(e, "function name must be 1-%d bytes without NUL", GM_FUNCTION_MAX);
    if (job->unique_len > GM_UNIQUE_MAX || (job->unique_len && memchr(job->unique, '\0', job->unique_len)))
        return gm_error_set(e, "unique id must be at most %d bytes without NUL", GM_UNIQUE_MAX);
    if (job->workload_len > cfg->max_workload)
        return gm_error_set(e, "workload of %zu bytes is larger than max_workload (%zu)", job->workload_len,
                            cfg->max_workload);
    return GM_OK;
}

/* Send a job and wait for JOB_CREATED; the handle goes to handle[GM_HANDLE_MAX + 1]. */
static int gm_client_send_job(gm_conn *c, const gm_job *job, const gm_config *cfg, char *handle, size_t *hlen,
                              gm_error *e)
{
    int64_t deadline = gm_deadline(cfg->io_timeout_ms);
    gm_slice args[3] = {{job->fn, job->fn_len}, {job->unique, job->unique_len}, {job->workload, job->workload_len}};
    if (gm_conn_queue(c, job->type, args, 3, e) != GM_OK)
        return GM_OP_FINAL; /* cannot encode: no server would take it */
    if (gm_conn_flush(c, deadline, e) != GM_OK)
        return GM_OP_IO;
    for (;;) {
        gm_packet pkt;
        if (gm_conn_recv(c, &pkt, gm_config_max_reply(cfg), deadline, e) != GM_OK)
            return GM_OP_IO;
        if (pkt.type == GM_JOB_CREATED) {
            if (pkt.arg[0].len == 0) { /* a broken server: the job may exist, so no other server gets it */
                gm_stats_add(GM_STAT_NO_HANDLE, 1);
                gm_error_set(e, "JOB_CREATED without a job handle (the job may or may not be queued there)");
                return GM_OP_BROKEN;
            }
            if (pkt.arg[0].len > GM_HANDLE_MAX) { /* a cut handle would never match its result */
                gm_error_set(e, "job handle longer than %d bytes", GM_HANDLE_MAX);
                return GM_OP_IO;
            }
            memcpy(handle, pkt.arg[0].p, pkt.arg[0].len);
            handle[pkt.arg[0].len] = '\0';
            *hlen = pkt.arg[0].len;
            return GM_OP_OK;
        }
        if (pkt.type == GM_ERROR) {
            gm_conn_error_reply(&pkt, e);
            return GM_OP_REFUSED;
        }
        if (pkt.type != GM_NOOP) {
            gm_stats_add(GM_STAT_PROTOCOL_ERRORS, 1);
            gm_error_set(e, "unexpected %s before JOB_CREATED", gm_proto_type_name(pkt.type));
            return GM_OP_IO;
        }
    }
}

/* Run op on s: a pooled connection, then one fresh one if that had died while idle. */
static int gm_client_try(gm_server *s, const gm_config *cfg, gm_op op, int clean, void *ctx, gm_error *e)
{
    int rc = GM_OP_IO;
    for (int attempt = 0; attempt < 2; attempt++) {
        int reused = 0;
        gm_conn *c = gm_server_checkout(s, cfg->connect_timeout_ms, clean, &reused, e);
        if (c == NULL)
            return GM_OP_IO;
        rc = op(c, ctx, cfg, e);
        if (rc == GM_OP_OK) {
            gm_server_checkin(s, c);
            gm_server_mark_up(s);
            return GM_OP_OK;
        }
        int timed_out = c->timed_out;
        gm_conn_close(c);
        /* A pooled connection may have died while idle (closed, reset): one more try on a
         * fresh one. Not after a timeout: a silent server would cost a second timeout. */
        if (!(rc == GM_OP_IO && reused && !timed_out))
            break;
    }
    return rc;
}

/* Run op on the function's servers in list order until one succeeds. */
static int gm_client_run(const gm_config *cfg, const char *fn, size_t fn_len, gm_op op, int clean, void *ctx,
                         gm_error *e)
{
    gm_pick pk;
    gm_server *s;
    gm_error why;
    gm_pick_begin(&pk, cfg, fn, fn_len);
    while ((s = gm_pick_next(&pk)) != NULL) {
        int rc = gm_client_try(s, cfg, op, clean, ctx, &why);
        if (rc == GM_OP_OK) {
            gm_pick_end(&pk);
            return GM_OK;
        }
        gm_pick_failed(&pk, s, &why, rc == GM_OP_IO || rc == GM_OP_BROKEN);
        if (rc == GM_OP_FINAL || rc == GM_OP_BROKEN)
            break;
    }
    gm_pick_error(&pk, e);
    gm_pick_end(&pk);
    return GM_ERR;
}

typedef struct gm_submit_ctx {
    const gm_job *job;
    char *handle;
    size_t *handle_len;
} gm_submit_ctx;

static int gm_op_submit_bg(gm_conn *c, void *vctx, const gm_config *cfg, gm_error *e)
{
    gm_submit_ctx *ctx = vctx;
    return gm_client_send_job(c, ctx->job, cfg, ctx->handle, ctx->handle_len, e);
}

int gm_client_submit_bg(const gm_config *cfg, const gm_job *job, char *handle, size_t *handle_len, gm_error *note,
                        gm_error *e)
{
    gm_error_clear(note);
    if (cfg->pipeline_window == 0) {
        gm_submit_ctx ctx = {job, handle, handle_len};
        return gm_client_run(cfg, job->fn, job->fn_len, gm_op_submit_bg, 1, &ctx, e);
    }
    /* Pipelined: no handle yet, so the value is the job's unique id. */
    if (gm_pipeline_submit(cfg, job->type, job->fn, job->fn_len, job->unique, job->unique_len, job->workload,
                           job->workload_len, note, e) != GM_OK)
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

int gm_client_enable_exceptions(gm_conn *c, const gm_config *cfg, gm_error *e)
{
    if (c->options_sent)
        return GM_OK;
    int64_t deadline = gm_deadline(cfg->io_timeout_ms);
    gm_slice opt = {"exceptions", 10};
    if (gm_conn_queue(c, GM_OPTION_REQ, &opt, 1, e) != GM_OK || gm_conn_flush(c, deadline, e) != GM_OK)
        return GM_ERR;
    gm_packet pkt;
    do {
        if (gm_conn_recv(c, &pkt, gm_config_max_reply(cfg), deadline, e) != GM_OK)
            return GM_ERR;
    } while (pkt.type == GM_NOOP);
    c->options_sent = 1; /* OPTION_RES, or ERROR from a server without the option: fine */
    return GM_OK;
}

/* Append a piece of the job's result to ctx->data (NUL-terminated), within max_workload. */
static int gm_do_append(gm_do_ctx *ctx, const gm_slice *piece, const gm_config *cfg, const char *handle, gm_error *e)
{
    if (piece->len > cfg->max_workload - ctx->data_len)
        return gm_error_set(e, "job %s: result larger than max_workload (%zu bytes)", handle, cfg->max_workload);
    size_t want = ctx->data_len + piece->len + 1;
    if (want > ctx->data_cap) {
        size_t cap = ctx->data_cap ? ctx->data_cap : 256;
        while (cap < want)
            cap *= 2;
        char *p = realloc(ctx->data, cap);
        if (p == NULL)
            return gm_error_set(e, "out of memory for a %zu-byte result", want);
        ctx->data = p;
        ctx->data_cap = cap;
    }
    memcpy(ctx->data + ctx->data_len, piece->p, piece->len);
    ctx->data_len += piece->len;
    ctx->data[ctx->data_len] = '\0';
    return GM_OK;
}

static int gm_op_do(gm_conn *c, void *vctx, const gm_config *cfg, gm_error *e)
{
    gm_do_ctx *ctx = vctx;
    ctx->data_len = 0; /* a second attempt starts over */
    char handle[GM_HANDLE_MAX + 1];
    size_t hlen;
    if (gm_client_enable_exceptions(c, cfg, e) != GM_OK)
        return GM_OP_IO;
    int rc = gm_client_send_job(c, ctx->job, cfg, handle, &hlen, e);
    if (rc != GM_OP_OK)
        return rc;
    /* The job exists now: from here a failure is reported, never retried elsewhere. */
    int64_t deadline = gm_deadline(cfg->do_timeout_ms);
    for (;;) {
        gm_packet pkt;
        if (gm_conn_recv(c, &pkt, gm_config_max_reply(cfg), deadline, e) != GM_OK) {
            gm_error_prefix(e, "job %s accepted, then: ", handle);
            return GM_OP_FINAL;
        }
        if (pkt.type == GM_ERROR) { /* the server gave up on us: no result will come */
            gm_conn_error_reply(&pkt, e);
            gm_error_prefix(e, "job %s accepted, then: ", handle);
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
            if (gm_do_append(ctx, &pkt.arg[1], cfg, handle, e) != GM_OK)
                return GM_OP_FINAL;
        }
        if (pkt.type == GM_WORK_COMPLETE || pkt.type == GM_WORK_EXCEPTION) {
            ctx->outcome = pkt.type == GM_WORK_COMPLETE ? GM_JOB_COMPLETE : GM_JOB_EXCEPTION;
            return GM_OP_OK;
        }
    }
}

int gm_client_do(const gm_config *cfg, const gm_job *job, enum gm_outcome *outcome, char **data, size_t *data_len,
                 gm_error *e)
{
    gm_do_ctx ctx = {job, GM_JOB_FAIL, NULL, 0, 0};
    int rc = gm_client_run(cfg, job->fn, job->fn_len, gm_op_do, 1, &ctx, e);
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
