/*
 * udf_gman_agg.c -- the aggregate Gearman functions:
 *
 *   gman_sum(function, workload)        AGGREGATE -> INTEGER the sum of the jobs' results
 *   gman_bulk_background(function, workload [, unique])
 *                                       AGGREGATE -> INTEGER jobs queued, all confirmed
 *
 * Both send each row's job once under GROUP BY, WITH ROLLUP and OVER (...), and return what
 * SUM() / COUNT(*) would in the same place (how, below), but gman_sum refuses a window frame
 * whose start moves. NULL function or workload, and every failure, give NULL with the
 * reason in gman_last_error().
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gm_stream.h"
#include "udf_error.h"
#include "udf_gman.h"
#include "udf_host.h"

/*
 * One stream per function name in a group.
 *
 * How the servers drive a loadable aggregate (measured on MariaDB 10.11 with a logging UDF;
 * sql/item_sum.cc, sql/sql_udf.h, sql/sql_window.cc):
 *   - GROUP BY: clear, add per row, value; clear ... for the next group (several clears in
 *     a row for an empty group or a re-executed subquery, so clears alone prove nothing).
 *   - WITH ROLLUP: each super-aggregate level is a copy of the item (udf_handler's copy
 *     constructor) with its own UDF_INIT but the same initid->ptr, and every row is added
 *     to the original and to each level. Taken naively, each row's job is sent once per
 *     level and the levels' clear calls wipe the original's group.
 *   - OVER (...): without NAME_remove the server recomputes every frame from scratch
 *     (clear + add of the whole frame for each row: 900 jobs for 30 rows over OVER ()).
 *     With NAME_remove exported it moves the frame instead: clear at each partition, each
 *     row added once when it enters the frame, remove when it leaves, value per row.
 * So, exact semantics, each row's job sent once:
 *   - we export NAME_remove, and value() only settles (waits for what was sent), it does
 *     not end the group: the next clear does;
 *   - only the item _init was called for (st->owner) sends jobs. A call with another
 *     UDF_INIT is a ROLLUP level: it sends nothing, and its value is what the original's
 *     groups settled since the level's clear. A level checks that it saw exactly the rows
 *     the original settled in that span, so a server that drives copies some other way
 *     gets NULL and an error, never a wrong count (and never a duplicate job).
 *   - gman_bulk_background under a moving frame counts the jobs of the rows in the frame;
 *     gman_sum cannot subtract one job's result (results are only kept summed), so a
 *     remove makes it NULL with an error for the rest of the statement.
 */

/* What the original's groups settled, summed over the statement. */
typedef struct gman_agg_totals {
    uint64_t adds, created, failed, bad; /* bad: groups that did not go through */
    __int128 sum;                        /* each group's fits a BIGINT; a level's may not */
} gman_agg_totals;

typedef struct gman_agg_level {
    UDF_INIT *id;
    gman_agg_totals base; /* the totals at the level's clear */
    uint64_t adds;        /* rows added to the level since */
} gman_agg_level;

typedef struct gman_agg {
    UDF_INIT *owner;
    const gm_config *cfg;
    unsigned n;
    gm_stream stream[GM_AGG_FUNCTIONS]; /* each on its function's server list */
    char *fn[GM_AGG_FUNCTIONS];
    size_t fn_len[GM_AGG_FUNCTIONS];
    int want_results;
    int failed;         /* this group: a job could not be sent or confirmed */
    gm_error err;
    uint64_t adds;      /* this group's rows */
    uint64_t removed;   /* rows that left the window frame */
    gman_agg_totals settled; /* of this group, already in `totals` */
    gman_agg_totals totals;
    unsigned nlevels;
    gman_agg_level level[GM_AGG_LEVELS];
    gm_error refused; /* a form we cannot compute: every value is NULL with this */
} gman_agg;

static my_bool gman_agg_init(UDF_INIT *initid, UDF_ARGS *args, char *message, const char *fname, unsigned max_args)
{
    const char *usage = max_args == 2 ? "(function, workload)" : "(function, workload [, unique])";
    const gm_config *cfg;
    if (gman_init_args(args, 2, max_args, fname, usage, message) ||
        (cfg = gman_init_settings(fname, message)) == NULL)
        return 1;
    gman_agg *st = calloc(1, sizeof *st);
    if (st == NULL)
        return (my_bool)udf_init_fail(message, "%s: out of memory", fname);
    st->owner = initid;
    st->cfg = cfg; /* read once: every row of the statement uses these */
    initid->ptr = (char *)st;
    initid->maybe_null = 1;
    initid->const_item = 0;
    return 0;
}

/* End the group: its streams closed (a stream with jobs not settled is discarded). */
static void gman_agg_reset(gman_agg *st)
{
    for (unsigned i = 0; i < st->n; i++) {
        gm_stream_close(&st->stream[i]);
        free(st->fn[i]);
    }
    st->n = 0;
    st->failed = 0;
    gm_error_clear(&st->err);
    st->adds = st->removed = 0;
    memset(&st->settled, 0, sizeof st->settled);
}

static void gman_agg_deinit(UDF_INIT *initid)
{
    gman_agg *st = (gman_agg *)initid->ptr;
    if (st)
        gman_agg_reset(st);
    free(st);
    initid->ptr = NULL;
}

/* The ROLLUP level calling with id (made at its first call); NULL when there are too many. */
static gman_agg_level *gman_agg_level_of(gman_agg *st, UDF_INIT *id)
{
    for (unsigned i = 0; i < st->nlevels; i++)
        if (st->level[i].id == id)
            return &st->level[i];
    if (st->nlevels == GM_AGG_LEVELS)
        return NULL;
    gman_agg_level *lv = &st->level[st->nlevels++];
    lv->id = id;
    lv->base = st->totals;
    lv->adds = 0;
    return lv;
}

static void gman_agg_refuse(gman_agg *st, const char *fname, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void gman_agg_refuse(gman_agg *st, const char *fname, const char *fmt, ...)
{
    if (st->refused.text[0])
        return; /* the first reason stays */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(st->refused.text, sizeof st->refused.text, fmt, ap);
    va_end(ap);
    gm_error_prefix(&st->refused, "%s: ", fname);
}

static void gman_agg_clear(UDF_INIT *initid, int want_results, const char *fname)
{
    gman_agg *st = (gman_agg *)initid->ptr;
    if (initid != st->owner) {
        gman_agg_level *lv = gman_agg_level_of(st, initid);
        if (lv == NULL)
            gman_agg_refuse(st, fname, "more than %d ROLLUP levels", GM_AGG_LEVELS);
        else {
            lv->base = st->totals;
            lv->adds = 0;
        }
        return;
    }
    if (st->adds > st->settled.adds) { /* a group whose value nobody asked for */
        st->totals.adds += st->adds - st->settled.adds;
        st->totals.bad++;
    }
    gman_agg_reset(st);
    st->want_results = want_results;
}

/* The group's stream for this job's function (its own server list), made on first use. */
static gm_stream *gman_agg_stream(gman_agg *st, const gm_job *job)
{
    for (unsigned i = 0; i < st->n; i++)
        if (st->fn_len[i] == job->fn_len && memcmp(st->fn[i], job->fn, job->fn_len) == 0)
            return &st->stream[i];
    if (st->n == GM_AGG_FUNCTIONS) {
        gm_error_set(&st->err, "more than %d function names in one group", GM_AGG_FUNCTIONS);
        return NULL;
    }
    if ((st->fn[st->n] = malloc(job->fn_len)) == NULL) {
        gm_error_set(&st->err, "out of memory");
        return NULL;
    }
    memcpy(st->fn[st->n], job->fn, job->fn_len);
    st->fn_len[st->n] = job->fn_len;
    gm_stream_init(&st->stream[st->n], st->cfg, st->want_results);
    return &st->stream[st->n++];
}

static void gman_agg_add(UDF_INIT *initid, UDF_ARGS *args, unsigned type)
{
    gman_agg *st = (gman_agg *)initid->ptr;
    char unique[33];
    gm_job job;
    gm_stream *stream;
    if (initid != st->owner) { /* a ROLLUP level: the original sends this row's job */
        gman_agg_level *lv = gman_agg_level_of(st, initid);
        if (lv)
            lv->adds++;
        return;
    }
    st->adds++;
    if (st->failed || st->refused.text[0])
        return;
    if (gman_job_from_args(st->cfg, args, type, &job, unique, &st->err) != GM_OK ||
        (stream = gman_agg_stream(st, &job)) == NULL || gm_stream_add(stream, &job, &st->err) != GM_OK)
        st->failed = 1;
}

static void gman_agg_remove(UDF_INIT *initid, const char *fname, int countable)
{
    gman_agg *st = (gman_agg *)initid->ptr;
    if (initid != st->owner)
        gman_agg_refuse(st, fname, "a ROLLUP level in a window frame");
    else if (!countable)
        gman_agg_refuse(st, fname, "a window frame whose start moves (only frames from UNBOUNDED PRECEDING)");
    else
        st->removed++;
}

/* Settle the owner's group: every stream sent, confirmed (and ended, for gman_sum), the
 * group's figures into *g and what is new of them into the statement's totals. GM_ERR with
 * gman_last_error() set when not all went through. The group stays open. */
static int gman_agg_settle(gman_agg *st, const char *fname, gman_agg_totals *g)
{
    uint64_t sent = 0;
    memset(g, 0, sizeof *g);
    g->adds = st->adds;
    for (unsigned i = 0; i < st->n; i++) {
        gm_stream *s = &st->stream[i];
        if (!st->failed && gm_stream_finish(s, &st->err) != GM_OK)
            st->failed = 1;
        g->sum += s->sum;
        if (!st->failed && (g->sum > INT64_MAX || g->sum < INT64_MIN)) {
            gm_error_set(&st->err, "the sum is out of the BIGINT range");
            st->failed = 1;
        }
        sent += s->sent;
        g->created += s->created;
        g->failed += s->failed;
    }
    g->bad = st->failed != 0;
    st->totals.adds += g->adds - st->settled.adds;
    st->totals.created += g->created - st->settled.created;
    st->totals.failed += g->failed - st->settled.failed;
    st->totals.bad += g->bad - st->settled.bad;
    st->totals.sum += g->sum - st->settled.sum;
    st->settled = *g;
    if (st->failed)
        udf_error_set("%s: %s (%llu of %llu jobs confirmed)", fname, st->err.text, (unsigned long long)g->created,
                      (unsigned long long)sent);
    else if (g->failed)
        udf_error_set("%s: %llu of %llu jobs failed", fname, (unsigned long long)g->failed, (unsigned long long)sent);
    else
        for (unsigned i = 0; i < st->n; i++)
            if (st->stream[i].note.text[0]) /* the group went through, but a server is broken: say it */
                udf_error_set("%s: %s", fname, st->stream[i].note.text);
    return st->failed ? GM_ERR : GM_OK;
}

/* The figures a value() reports: the owner's group (its frame, in a window), or a ROLLUP
 * level's span of the owner's groups. GM_ERR (value NULL, gman_last_error() set) when they
 * are not exact. */
static int gman_agg_value(UDF_INIT *initid, const char *fname, gman_agg_totals *out)
{
    gman_agg *st = (gman_agg *)initid->ptr;
    gman_agg_totals g;
    int rc = GM_OK;
    if (st->refused.text[0]) {
        udf_error_set("%s is not supported", st->refused.text);
        return GM_ERR;
    }
    if (gman_agg_settle(st, fname, &g) != GM_OK)
        rc = GM_ERR;
    if (initid == st->owner) {
        *out = g;
        if (st->removed > g.created) {
            udf_error_set("%s: the window frame dropped rows it never added", fname);
            return GM_ERR;
        }
        out->created = g.created - st->removed;
        return rc;
    }
    gman_agg_level *lv = gman_agg_level_of(st, initid);
    if (lv == NULL) {
        udf_error_set("%s: more than %d ROLLUP levels", fname, GM_AGG_LEVELS);
        return GM_ERR;
    }
    const gman_agg_totals *t = &st->totals, *b = &lv->base;
    if (lv->adds != t->adds - b->adds) {
        udf_error_set("%s: this server feeds ROLLUP levels in an order it cannot follow (%llu rows here, %llu "
                      "settled)", fname, (unsigned long long)lv->adds, (unsigned long long)(t->adds - b->adds));
        return GM_ERR;
    }
    if (t->bad != b->bad) {
        udf_error_set("%s: a group of this ROLLUP level failed", fname);
        return GM_ERR;
    }
    out->adds = lv->adds;
    out->created = t->created - b->created;
    out->failed = t->failed - b->failed;
    out->bad = 0;
    out->sum = t->sum - b->sum;
    if (out->sum > INT64_MAX || out->sum < INT64_MIN) {
        udf_error_set("%s: the sum is out of the BIGINT range", fname);
        return GM_ERR;
    }
    if (out->failed)
        udf_error_set("%s: %llu of the level's jobs failed", fname, (unsigned long long)out->failed);
    return GM_OK;
}

/* init, deinit, clear, add and remove of an aggregate: the same for both but for these. */
#define GMAN_AGG_DEFINE(sqlname, max_args, want_results, type, countable)                             \
    UDF_EXPORT my_bool sqlname##_init(UDF_INIT *initid, UDF_ARGS *args, char *message)                 \
    {                                                                                                   \
        return gman_agg_init(initid, args, message, #sqlname, max_args);                               \
    }                                                                                                   \
    UDF_EXPORT void sqlname##_deinit(UDF_INIT *initid) { gman_agg_deinit(initid); }                     \
    UDF_EXPORT void sqlname##_clear(UDF_INIT *initid, char *is_null, char *error)                       \
    {                                                                                                   \
        (void)is_null;                                                                                  \
        (void)error;                                                                                    \
        gman_agg_clear(initid, want_results, #sqlname);                                                \
    }                                                                                                   \
    UDF_EXPORT void sqlname##_add(UDF_INIT *initid, UDF_ARGS *args, char *is_null, char *error)         \
    {                                                                                                   \
        (void)is_null;                                                                                  \
        (void)error;                                                                                    \
        gman_agg_add(initid, args, type);                                                              \
    }                                                                                                   \
    UDF_EXPORT void sqlname##_remove(UDF_INIT *initid, UDF_ARGS *args, char *is_null, char *error)      \
    {                                                                                                   \
        (void)args;                                                                                     \
        (void)is_null;                                                                                  \
        (void)error;                                                                                    \
        gman_agg_remove(initid, #sqlname, countable);                                                  \
    }

GMAN_AGG_DEFINE(gman_sum, 2, 1, GM_SUBMIT_JOB, 0)
GMAN_AGG_DEFINE(gman_bulk_background, 3, 0, GM_SUBMIT_JOB_BG, 1)

UDF_EXPORT long long gman_sum(UDF_INIT *initid, UDF_ARGS *args, char *is_null, char *error)
{
    gman_agg_totals v;
    (void)args;
    (void)error;
    if (gman_agg_value(initid, "gman_sum", &v) != GM_OK || v.failed) {
        *is_null = 1;
        return 0;
    }
    return (long long)v.sum;
}

UDF_EXPORT long long gman_bulk_background(UDF_INIT *initid, UDF_ARGS *args, char *is_null, char *error)
{
    gman_agg_totals v;
    (void)args;
    (void)error;
    if (gman_agg_value(initid, "gman_bulk_background", &v) != GM_OK) {
        *is_null = 1;
        return 0;
    }
    return (long long)v.created;
}

