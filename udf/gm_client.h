/*
 * gm_client.h -- Gearman client operations with failover across a function's servers.
 *
 * Single jobs (gman_do*, gman_do_*background) take a pooled connection to the first usable
 * server of the function's list, and fall over to the next one when a server cannot be
 * reached or does not answer within the I/O timeout; that server then sits out its
 * back-off. A stream (gman_sum, gman_bulk_background) holds one connection for a whole
 * group of rows and pipelines its jobs (gm_pipeline.h: a bounded number in flight).
 *
 * Errors are written to `err` (GM_ERRLEN) naming the server: "gearmand 127.0.0.1:4730:
 * connect: Connection refused".
 */
#ifndef GMAN_GM_CLIENT_H
#define GMAN_GM_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "gm_conn.h"
#include "gm_handles.h"
#include "gm_servers.h"

#define GM_HANDLE_MAX 255

typedef struct gm_job {
    unsigned type; /* GM_SUBMIT_JOB, GM_SUBMIT_JOB_BG, ... */
    const char *fn;
    size_t fn_len;
    const char *unique;
    size_t unique_len;
    const char *workload;
    size_t workload_len;
} gm_job;

enum gm_outcome { GM_JOB_COMPLETE, GM_JOB_FAIL, GM_JOB_EXCEPTION };

/* Write a fresh random unique id (32 hex digits) into out[33]. */
void gm_client_unique(char out[33]);

/* Check a job's sizes against the settings. GM_ERR + err when it cannot be sent. */
int gm_client_check(const gm_config *cfg, const gm_job *job, char *err);

/* Queue a background job; its handle goes to handle[GM_HANDLE_MAX + 1] (in pipelined mode,
 * its unique id). note (GM_ERRLEN) tells of earlier pipelined jobs refused meanwhile ("" if
 * none): this call succeeded, but gman_last_error() should say so. */
int gm_client_submit_bg(const gm_job *job, char *handle, size_t *handle_len, char *note, char *err);

/* Run a job and wait for its end. On GM_OK *outcome tells how it ended; *data (malloc'd,
 * the caller frees) holds WORK_COMPLETE's result or WORK_EXCEPTION's text. */
int gm_client_do(const gm_job *job, enum gm_outcome *outcome, char **data, size_t *data_len, char *err);

/* A group of jobs on one connection. */
typedef struct gm_stream {
    gm_server *server;
    gm_conn *conn;
    const gm_config *cfg;
    int want_results;       /* foreground jobs: wait for their results too */
    gm_handles handles;     /* with want_results: our jobs, so that only their results count */
    unsigned window;        /* unanswered jobs allowed now (adapted to the server's pace) */
    uint64_t sent, created, refused, completed, failed;
    int64_t sum;
    int broken;             /* the connection failed: the group fails, the connection is closed */
    char refusal[GM_ERRLEN]; /* the first ERROR reply, described: the group fails, the connection stays */
} gm_stream;

void gm_stream_init(gm_stream *st, int want_results);
/* Queue one job (the first one picks the server); sends when enough has gathered. */
int gm_stream_add(gm_stream *st, const gm_job *job, char *err);
/* Send everything and wait until every job is answered (and, for foreground jobs, ended);
 * each reply restarts the wait. GM_ERR + err also when a job was refused. */
int gm_stream_finish(gm_stream *st, char *err);
/* Give the connection back (or close it if anything is left in flight). */
void gm_stream_close(gm_stream *st);

#endif
