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
 *   gman_sum, gman_bulk_background: the aggregates, in udf_gman_agg.c
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
#include "gm_routes.h"
#include "udf_error.h"
#include "udf_gman.h"
#include "udf_host.h"

/* Arguments 1..n are turned into strings, the form a Gearman packet carries. */
int gman_init_args(UDF_ARGS *args, unsigned min, unsigned max, const char *fname, const char *usage,
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
const gm_config *gman_init_settings(const char *fname, char *message)
{
    gm_error e;
    const gm_config *cfg = gm_settings(&e);
    if (cfg == NULL) {
        udf_error_set("%s: %s", fname, e.text); /* whole, for gman_last_error(): the server cuts message */
        udf_init_fail(message, "%s: %s", fname, e.text);
    }
    return cfg;
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
    gm_error e;
    const gm_config *cfg;
    const char *fname = "gman_servers_set";
    /* Before the coercion below: a number would reach the parser as its 8 raw bytes here
     * ("NUL byte in server list") and as its digits at row time (a host "4730"). */
    if (args->arg_count >= 1 && args->arg_type[0] != STRING_RESULT)
        return (my_bool)udf_init_fail(message, "%s: the server list must be a string ('host:port,...')", fname);
    if (gman_init_args(args, 1, 2, fname, "(servers [, function])", message) ||
        (cfg = gman_init_settings(fname, message)) == NULL)
        return 1;
    if (cfg->locked)
        return (my_bool)udf_init_fail(message, "%s: the server list is locked by the configuration (%s: lock = 1)",
                                      fname, cfg->source);
    if (args->args[0] != NULL) { /* a constant list: refuse a bad one before running */
        gm_route probe;
        if (gm_servers_parse(args->args[0], args->lengths[0], &probe, &e) != GM_OK)
            return (my_bool)udf_init_fail(message, "%s: %s", fname, e.text);
        gm_route_clear(&probe);
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
    gm_error e;
    const gm_config *cfg;
    (void)result;
    (void)error;
    if ((cfg = gm_settings(&e)) == NULL)
        return gman_fail("gman_servers_set", e.text, is_null);
    if (args->args[0] == NULL)
        return gman_fail("gman_servers_set", "the server list is NULL", is_null);
    /* A NULL name is no name: taken for "the default list" it would redirect every job. */
    if (args->arg_count > 1 && args->args[1] == NULL)
        return gman_fail("gman_servers_set", "the function name is NULL", is_null);
    const char *fn = args->arg_count > 1 ? args->args[1] : NULL;
    size_t flen = fn ? args->lengths[1] : 0;
    if (gm_servers_set(cfg, args->args[0], args->lengths[0], fn, flen, initid->ptr, GMAN_LIST_TEXT_MAX, &e) != GM_OK)
        return gman_fail("gman_servers_set", e.text, is_null);
    *is_null = 0;
    *length = strlen(initid->ptr);
    return initid->ptr;
}

/* ---- gman_do* and gman_do*_background: one implementation, a row per priority ---- */

typedef struct gman_do_state {
    char *data; /* the last result, freed at the next row or deinit */
} gman_do_state;

_Static_assert(GM_HANDLE_MAX + 1 <= UDF_RESULT_SIZE, "a handle and its NUL fit the result buffer");

static my_bool gman_job_init(UDF_INIT *initid, UDF_ARGS *args, char *message, const char *fname, int background)
{
    if (gman_init_args(args, 2, 3, fname, "(function, workload [, unique])", message) ||
        gman_init_settings(fname, message) == NULL)
        return 1;
    if (args->args[0] != NULL && args->lengths[0] == 0)
        return (my_bool)udf_init_fail(message, "%s: the function name is empty", fname);
    if (args->arg_count > 2 && args->args[2] != NULL && args->lengths[2] > GM_UNIQUE_MAX)
        return (my_bool)udf_init_fail(message, "%s: the unique id is longer than %d bytes", fname, GM_UNIQUE_MAX);
    initid->maybe_null = 1;
    initid->const_item = 0;
    initid->max_length = background ? GM_HANDLE_MAX : GM_RESULT_LENGTH;
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

int gman_job_from_args(const gm_config *cfg, UDF_ARGS *args, unsigned type, gm_job *job, char unique[33],
                       gm_error *e)
{
    if (args->args[0] == NULL)
        return gm_error_set(e, "the function name is NULL");
    if (args->args[1] == NULL)
        return gm_error_set(e, "the workload is NULL (nothing sent)");
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
    return gm_client_check(cfg, job, e);
}

static char *gman_job_run(UDF_INIT *initid, UDF_ARGS *args, char *result, unsigned long *length, char *is_null,
                          char *error, const char *fname, unsigned type, int background)
{
    gm_error e;
    char unique[33];
    gm_job job;
    (void)error;
    const gm_config *cfg = gm_settings(&e); /* once per row, passed down */
    if (cfg == NULL || gman_job_from_args(cfg, args, type, &job, unique, &e) != GM_OK)
        return gman_fail(fname, e.text, is_null);
    if (background) {
        size_t hlen;
        gm_error note;
        if (gm_client_submit_bg(cfg, &job, result, &hlen, &note, &e) != GM_OK)
            return gman_fail(fname, e.text, is_null);
        if (note.text[0]) /* an earlier pipelined job was refused: this one went, but say it */
            udf_error_set("%s: %s", fname, note.text);
        *is_null = 0;
        *length = hlen;
        return result;
    }
    gman_do_state *st = (gman_do_state *)initid->ptr;
    enum gm_outcome outcome;
    size_t len;
    free(st->data);
    st->data = NULL;
    if (gm_client_do(cfg, &job, &outcome, &st->data, &len, &e) != GM_OK)
        return gman_fail(fname, e.text, is_null);
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
