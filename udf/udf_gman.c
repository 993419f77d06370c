/*
 * udf_gman.c -- the Gearman SQL functions (gearman-mysql-udf's family, and more).
 *
 *   gman_servers_set(servers [, function])        -> STRING  the list applied; refused when
 *                                                    the configuration is locked
 *   gman_do[_high|_low](function, workload [, unique])
 *                                                 -> STRING  the job's result; NULL when the
 *                                                    job failed (WORK_FAIL/WORK_EXCEPTION:
 *                                                    see gman_last_error())
 *   gman_do[_high|_low]_background(function, workload [, unique])
 *                                                 -> STRING  the job handle
 *   gman_sum(function, workload)        AGGREGATE -> INTEGER the sum of the jobs' results
 *   gman_bulk_background(function, workload [, unique])
 *                                       AGGREGATE -> INTEGER jobs queued, all confirmed
 *                                       (both exact under WITH ROLLUP and OVER (...): each
 *                                       row's job is sent once; see the aggregates below)
 *   gman_last_error()                             -> STRING  why the last call of this
 *                                                    thread failed ("" if none did)
 *   gman_stamp()                                  -> INTEGER microseconds since the epoch,
 *                                                    strictly increasing within the server
 *                                                    process: a row version that follows
 *                                                    commit order when taken under the row lock
 *
 * NULL function or workload, and every failure, give NULL with the reason in
 * gman_last_error() (is_null, not *error: after *error the server skips the function for
 * every later row of the statement). A NULL or empty unique id means "none": a fresh random one is
 * sent, since gearmand merges jobs with equal ids (and its sqlite queue collapses empty
 * ones).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gm_client.h"
#include "udf_error.h"
#include "udf_host.h"

/* Arguments 1..n are turned into strings, the form a Gearman packet carries. */
static int gman_init_args(UDF_ARGS *args, unsigned min, unsigned max, const char *fname, const char *usage,
                          char *message)
{
    if (args->arg_count < min || args->arg_count > max)
        return udf_init_fail(message, "%s: expected %s", fname, usage);
    for (unsigned i = 0; i < args->arg_count; i++) {
        if (args->arg_type[i] == ROW_RESULT)
            return udf_init_fail(message, "%s: argument %u is a row, expected a scalar", fname, i + 1);
        args->arg_type[i] = STRING_RESULT;
    }
    return 0;
}

/* Settings problems are reported when the function is prepared, not row after row. */
static int gman_init_settings(const char *fname, char *message)
{
    char err[GM_ERRLEN];
    if (gm_settings(err) == NULL) {
        udf_error_set("%s: %s", fname, err); /* whole, for gman_last_error(): the server cuts message */
        return udf_init_fail(message, "%s: %s", fname, err);
    }
    return 0;
}

/* A row that fails is NULL with the reason in gman_last_error(). Not *error: with it set,
 * MariaDB and MySQL return NULL for every later row of the statement without calling us,
 * so one timeout would silently skip the rest of a multi-row SELECT. */
static char *gman_fail(const char *fname, const char *why, char *is_null)
{
    udf_error_set("%s: %s", fname, why);
    *is_null = 1;
    return NULL;
}

/* ---- gman_servers_set ---- */

#define GMAN_LIST_TEXT_MAX (GM_LIST_MAX * 300)

UDF_EXPORT my_bool gman_servers_set_init(UDF_INIT *initid, UDF_ARGS *args, char *message)
{
    char err[GM_ERRLEN];
    const char *fname = "gman_servers_set";
    /* Before the coercion below: a number would reach the parser as its 8 raw bytes here
     * ("NUL byte in server list") and as its digits at row time (a host "4730"). */
    if (args->arg_count >= 1 && args->arg_type[0] != STRING_RESULT)
        return (my_bool)udf_init_fail(message, "%s: the server list must be a string ('host:port,...')", fname);
    if (gman_init_args(args, 1, 2, fname, "(servers [, function])", message) ||
        gman_init_settings(fname, message))
        return 1;
    const gm_config *cfg = gm_settings(err);
    if (cfg->locked)
        return (my_bool)udf_init_fail(message, "%s: the server list is locked by the configuration (%s: lock = 1)",
                                      fname, cfg->source);
    if (args->args[0] != NULL) { /* a constant list: refuse a bad one before running */
        gm_route probe;
        int ok = gm_servers_parse(args->args[0], args->lengths[0], &probe, err) == GM_OK;
        if (ok)
            gm_route_clear(&probe);
        if (!ok)
            return (my_bool)udf_init_fail(message, "%s: %s", fname, err);
    }
    initid->ptr = malloc(GMAN_LIST_TEXT_MAX);
    if (initid->ptr == NULL)
        return (my_bool)udf_init_fail(message, "%s: out of memory", fname);
    initid->maybe_null = 1;
    initid->max_length = GMAN_LIST_TEXT_MAX;
    initid->const_item = 0;
    return 0;
}

UDF_EXPORT void gman_servers_set_deinit(UDF_INIT *initid)
{
    free(initid->ptr);
    initid->ptr = NULL;
}

UDF_EXPORT char *gman_servers_set(UDF_INIT *initid, UDF_ARGS *args, char *result, unsigned long *length,
                                  char *is_null, char *error)
{
    char err[GM_ERRLEN];
    (void)result;
    (void)error;
    if (args->args[0] == NULL)
        return gman_fail("gman_servers_set", "the server list is NULL", is_null);
    const char *fn = args->arg_count > 1 ? args->args[1] : NULL;
    size_t flen = fn ? args->lengths[1] : 0;
    if (gm_servers_set(args->args[0], args->lengths[0], fn, flen, initid->ptr, GMAN_LIST_TEXT_MAX, err) != GM_OK)
        return gman_fail("gman_servers_set", err, is_null);
    *is_null = 0;
    *length = strlen(initid->ptr);
    return initid->ptr;
}

/* ---- gman_do* and gman_do*_background: one implementation, a row per priority ---- */

typedef struct gman_do_state {
    char *data; /* the last result, freed at the next row or deinit */
} gman_do_state;

static my_bool gman_job_init(UDF_INIT *initid, UDF_ARGS *args, char *message, const char *fname, int background)
{
    if (gman_init_args(args, 2, 3, fname, "(function, workload [, unique])", message) ||
        gman_init_settings(fname, message))
        return 1;
    if (args->args[0] != NULL && args->lengths[0] == 0)
        return (my_bool)udf_init_fail(message, "%s: the function name is empty", fname);
    if (args->arg_count > 2 && args->args[2] != NULL && args->lengths[2] > 63)
        return (my_bool)udf_init_fail(message, "%s: the unique id is longer than 63 bytes", fname);
    initid->maybe_null = 1;
    initid->const_item = 0;
    initid->max_length = background ? GM_HANDLE_MAX : 16777216;
    if (!background && (initid->ptr = calloc(1, sizeof(gman_do_state))) == NULL)
        return (my_bool)udf_init_fail(message, "%s: out of memory", fname);
    return 0;
}

static void gman_job_deinit(UDF_INIT *initid)
{
    gman_do_state *st = (gman_do_state *)initid->ptr;
    if (st)
        free(st->data);
    free(st);
    initid->ptr = NULL;
}

/* Fill job from the row's arguments; GM_ERR + err when it cannot be sent. */
static int gman_job_from_args(UDF_ARGS *args, unsigned type, gm_job *job, char unique[33], char *err)
{
    const gm_config *cfg = gm_settings(err);
    if (cfg == NULL)
        return GM_ERR;
    if (args->args[0] == NULL) {
        snprintf(err, GM_ERRLEN, "the function name is NULL");
        return GM_ERR;
    }
    if (args->args[1] == NULL) {
        snprintf(err, GM_ERRLEN, "the workload is NULL (nothing sent)");
        return GM_ERR;
    }
    job->type = type;
    job->fn = args->args[0];
    job->fn_len = args->lengths[0];
    job->workload = args->args[1];
    job->workload_len = args->lengths[1];
    if (args->arg_count > 2 && args->args[2] != NULL && args->lengths[2] > 0) {
        job->unique = args->args[2];
        job->unique_len = args->lengths[2];
    } else {
        gm_client_unique(unique);
        job->unique = unique;
        job->unique_len = 32;
    }
    return gm_client_check(cfg, job, err);
}

static char *gman_job_run(UDF_INIT *initid, UDF_ARGS *args, char *result, unsigned long *length, char *is_null,
                          char *error, const char *fname, unsigned type, int background)
{
    char err[GM_ERRLEN], unique[33];
    gm_job job;
    (void)error;
    if (gman_job_from_args(args, type, &job, unique, err) != GM_OK)
        return gman_fail(fname, err, is_null);
    if (background) {
        size_t hlen;
        if (gm_client_submit_bg(&job, result, &hlen, err) != GM_OK)
            return gman_fail(fname, err, is_null);
        *is_null = 0;
        *length = hlen;
        return result;
    }
    gman_do_state *st = (gman_do_state *)initid->ptr;
    enum gm_outcome outcome;
    size_t len;
    free(st->data);
    st->data = NULL;
    if (gm_client_do(&job, &outcome, &st->data, &len, err) != GM_OK)
        return gman_fail(fname, err, is_null);
    if (outcome == GM_JOB_FAIL) {
        udf_error_set("%s: the job failed (WORK_FAIL)", fname);
        *is_null = 1;
        return NULL;
    }
    if (outcome == GM_JOB_EXCEPTION) {
        udf_error_set("%s: the job raised an exception: %.*s", fname, (int)(len > 400 ? 400 : len), st->data);
        *is_null = 1;
        return NULL;
    }
    *is_null = 0;
    *length = len;
    return st->data;
}

#define GMAN_JOB_DEFINE(sqlname, type, background)                                                          \
    UDF_EXPORT my_bool sqlname##_init(UDF_INIT *initid, UDF_ARGS *args, char *message)                     \
    {                                                                                                       \
        return gman_job_init(initid, args, message, #sqlname, background);                                 \
    }                                                                                                       \
    UDF_EXPORT void sqlname##_deinit(UDF_INIT *initid) { gman_job_deinit(initid); }                         \
    UDF_EXPORT char *sqlname(UDF_INIT *initid, UDF_ARGS *args, char *result, unsigned long *length,        \
                             char *is_null, char *error)                                                    \
    {                                                                                                       \
        return gman_job_run(initid, args, result, length, is_null, error, #sqlname, type, background);    \
    }

GMAN_JOB_DEFINE(gman_do, GM_SUBMIT_JOB, 0)
GMAN_JOB_DEFINE(gman_do_high, GM_SUBMIT_JOB_HIGH, 0)
GMAN_JOB_DEFINE(gman_do_low, GM_SUBMIT_JOB_LOW, 0)
GMAN_JOB_DEFINE(gman_do_background, GM_SUBMIT_JOB_BG, 1)
GMAN_JOB_DEFINE(gman_do_high_background, GM_SUBMIT_JOB_HIGH_BG, 1)
GMAN_JOB_DEFINE(gman_do_low_background, GM_SUBMIT_JOB_LOW_BG, 1)

/* ---- aggregates: gman_sum and gman_bulk_background, one stream per function ----
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

#define GMAN_AGG_FUNCTIONS 8 /* distinct function names in one group: one connection each */
#define GMAN_AGG_LEVELS 16   /* ROLLUP levels followed */

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
    unsigned n;
    gm_stream stream[GMAN_AGG_FUNCTIONS]; /* each on its function's server list */
    char *fn[GMAN_AGG_FUNCTIONS];
    size_t fn_len[GMAN_AGG_FUNCTIONS];
    int want_results;
    int failed;         /* this group: a job could not be sent or confirmed */
    char err[GM_ERRLEN];
    uint64_t adds;      /* this group's rows */
    uint64_t removed;   /* rows that left the window frame */
    gman_agg_totals settled; /* of this group, already in `totals` */
    gman_agg_totals totals;
    unsigned nlevels;
    gman_agg_level level[GMAN_AGG_LEVELS];
    char refused[GM_ERRLEN]; /* a form we cannot compute: every value is NULL with this */
} gman_agg;

static my_bool gman_agg_init(UDF_INIT *initid, UDF_ARGS *args, char *message, const char *fname, unsigned max_args)
{
    const char *usage = max_args == 2 ? "(function, workload)" : "(function, workload [, unique])";
    if (gman_init_args(args, 2, max_args, fname, usage, message) || gman_init_settings(fname, message))
        return 1;
    gman_agg *st = calloc(1, sizeof *st);
    if (st == NULL)
        return (my_bool)udf_init_fail(message, "%s: out of memory", fname);
    st->owner = initid;
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
    st->err[0] = '\0';
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
    if (st->nlevels == GMAN_AGG_LEVELS)
        return NULL;
    gman_agg_level *lv = &st->level[st->nlevels++];
    lv->id = id;
    lv->base = st->totals;
    lv->adds = 0;
    return lv;
}

static void gman_agg_refuse(gman_agg *st, const char *fname, const char *why)
{
    if (st->refused[0] == '\0')
        snprintf(st->refused, sizeof st->refused, "%s: %s", fname, why);
}

static void gman_agg_clear(UDF_INIT *initid, int want_results, const char *fname)
{
    gman_agg *st = (gman_agg *)initid->ptr;
    if (initid != st->owner) {
        gman_agg_level *lv = gman_agg_level_of(st, initid);
        if (lv == NULL)
            gman_agg_refuse(st, fname, "more than 16 ROLLUP levels");
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
    if (st->n == GMAN_AGG_FUNCTIONS) {
        snprintf(st->err, sizeof st->err, "more than %d function names in one group", GMAN_AGG_FUNCTIONS);
        return NULL;
    }
    if ((st->fn[st->n] = malloc(job->fn_len)) == NULL) {
        snprintf(st->err, sizeof st->err, "out of memory");
        return NULL;
    }
    memcpy(st->fn[st->n], job->fn, job->fn_len);
    st->fn_len[st->n] = job->fn_len;
    gm_stream_init(&st->stream[st->n], st->want_results);
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
    if (st->failed || st->refused[0])
        return;
    if (gman_job_from_args(args, type, &job, unique, st->err) != GM_OK ||
        (stream = gman_agg_stream(st, &job)) == NULL || gm_stream_add(stream, &job, st->err) != GM_OK)
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
        if (!st->failed && gm_stream_finish(s, st->err) != GM_OK)
            st->failed = 1;
        g->sum += s->sum;
        if (!st->failed && (g->sum > INT64_MAX || g->sum < INT64_MIN)) {
            snprintf(st->err, sizeof st->err, "the sum is out of the BIGINT range");
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
        udf_error_set("%s: %s (%llu of %llu jobs confirmed)", fname, st->err, (unsigned long long)g->created,
                      (unsigned long long)sent);
    else if (g->failed)
        udf_error_set("%s: %llu of %llu jobs failed", fname, (unsigned long long)g->failed, (unsigned long long)sent);
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
    if (st->refused[0]) {
        udf_error_set("%s is not supported", st->refused);
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
        udf_error_set("%s: more than %d ROLLUP levels", fname, GMAN_AGG_LEVELS);
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

/* ---- gman_last_error ---- */

UDF_EXPORT my_bool gman_last_error_init(UDF_INIT *initid, UDF_ARGS *args, char *message)
{
    if (args->arg_count != 0)
        return (my_bool)udf_init_fail(message, "gman_last_error: takes no arguments");
    initid->maybe_null = 0;
    initid->const_item = 0; /* changes between calls: never fold it into a constant */
    initid->max_length = UDF_ERROR_SIZE;
    return 0;
}

UDF_EXPORT void gman_last_error_deinit(UDF_INIT *initid) { (void)initid; }

UDF_EXPORT char *gman_last_error(UDF_INIT *initid, UDF_ARGS *args, char *result, unsigned long *length,
                                 char *is_null, char *error)
{
    size_t len;
    const char *text = udf_error_get(&len);
    (void)initid;
    (void)args;
    (void)error;
    if (len > UDF_RESULT_SIZE)
        len = UDF_RESULT_SIZE; /* the server's buffer; SIGNAL takes at most 128 characters anyway */
    memcpy(result, text, len);
    *is_null = 0;
    *length = len;
    return result;
}

/* ---- gman_stamp ---- */

static int64_t gman_stamp_last; /* only touched through __atomic builtins */

UDF_EXPORT my_bool gman_stamp_init(UDF_INIT *initid, UDF_ARGS *args, char *message)
{
    if (args->arg_count != 0)
        return (my_bool)udf_init_fail(message, "gman_stamp: takes no arguments");
    initid->maybe_null = 0;
    initid->const_item = 0; /* a new value on every call */
    return 0;
}

UDF_EXPORT void gman_stamp_deinit(UDF_INIT *initid) { (void)initid; }

UDF_EXPORT long long gman_stamp(UDF_INIT *initid, UDF_ARGS *args, char *is_null, char *error)
{
    (void)initid;
    (void)args;
    (void)is_null;
    (void)error;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
    int64_t last = __atomic_load_n(&gman_stamp_last, __ATOMIC_RELAXED);
    int64_t next;
    do { /* wall-clock microseconds, never equal to or behind the previous stamp */
        next = now > last ? now : last + 1;
    } while (!__atomic_compare_exchange_n(&gman_stamp_last, &last, next, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
    return (long long)next;
}
