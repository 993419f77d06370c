/*
 * gm_client.h -- Gearman client operations with failover across a function's servers.
 *
 * Single jobs (gman_do*, gman_do_*background) take a pooled connection to the first usable
 * server of the function's list, and fall over to the next one when a server cannot be
 * reached or does not answer within the I/O timeout; that server then sits out its
 * back-off. Pipelined calls (gm_pipeline.h) and streams (gm_stream.h) walk the list with
 * the same picker (gm_pick.h).
 *
 * Errors name the server: "gearmand 127.0.0.1:4730: connect: Connection refused", one
 * such item per server tried, separated by "; ".
 */
#ifndef GMAN_GM_CLIENT_H
#define GMAN_GM_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "gm_config.h"
#include "gm_conn.h"
#include "gm_error.h"
#include "gm_limits.h"

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

/* Check a job's sizes against the settings. GM_ERR + e when it cannot be sent. */
int gm_client_check(const gm_config *cfg, const gm_job *job, gm_error *e);

/* Queue a background job; its handle goes to handle[GM_HANDLE_MAX + 1] (in pipelined mode,
 * its unique id). note tells of earlier pipelined jobs refused meanwhile ("" if none): this
 * call succeeded, but gman_last_error() should say so. */
int gm_client_submit_bg(const gm_config *cfg, const gm_job *job, char *handle, size_t *handle_len, gm_error *note,
                        gm_error *e);

/* Run a job and wait for its end. On GM_OK *outcome tells how it ended; *data (malloc'd,
 * the caller frees) holds WORK_COMPLETE's result or WORK_EXCEPTION's text. */
int gm_client_do(const gm_config *cfg, const gm_job *job, enum gm_outcome *outcome, char **data, size_t *data_len,
                 gm_error *e);

/* Ask gearmand to forward WORK_EXCEPTION (it sends WORK_FAIL otherwise). GM_OK, or GM_ERR
 * + e when the connection failed. */
int gm_client_enable_exceptions(gm_conn *c, const gm_config *cfg, gm_error *e);

#endif
