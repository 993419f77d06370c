/*
 * gm_stream.h -- a group of jobs on one connection (gman_sum, gman_bulk_background),
 * pipelined: a bounded number in flight (gm_pipe.h), the window adapted to the
 * server's pace.
 *
 * The server is picked like a single call's (gm_pick.h). When it fails or stays silent
 * before answering any job of the current burst, the burst's jobs go to the next server
 * of the list, which then carries the stream; a job gearmand confirmed (JOB_CREATED) is
 * never sent again. A foreground stream (gman_sum) moves only before its first job was
 * confirmed: the results of confirmed jobs come from their server alone.
 */
#ifndef GMAN_GM_STREAM_H
#define GMAN_GM_STREAM_H

#include <stdint.h>

#include "gm_client.h"
#include "gm_handles.h"
#include "gm_pick.h"

typedef struct gm_stream {
    const gm_config *cfg;
    gm_pick pick;           /* the function's servers; holds the routes snapshot while open */
    gm_server *server;      /* the one in use, while conn is open */
    gm_conn *conn;
    int want_results;       /* foreground jobs: wait for their results too */
    gm_handles handles;     /* with want_results: our jobs, so that only their results count */
    unsigned window;        /* unanswered jobs allowed now (adapted to the server's pace) */
    uint64_t sent, created, refused, unhandled, completed, failed; /* unhandled: JOB_CREATED without a handle */
    uint64_t burst_start;   /* jobs sent before the current burst (replies pair in sending order) */
    int64_t sum;
    int broken;             /* the connection failed: the group fails, the connection is closed */
    int fatal;              /* a reply could not be taken (the sum overflowed, out of memory): no move */
    gm_error refusal;       /* the first ERROR reply (or JOB_CREATED without a handle), described: the
                             * group fails, the connection stays */
    gm_error note;          /* a protocol violation the burst moved away from: told though the group
                             * goes through ("" when none) */
} gm_stream;

void gm_stream_init(gm_stream *st, const gm_config *cfg, int want_results);
/* Queue one job (the first one picks the server); sends when enough has gathered. */
int gm_stream_add(gm_stream *st, const gm_job *job, gm_error *e);
/* Send everything and wait until every job is answered (and, for foreground jobs, ended);
 * each reply restarts the wait. GM_ERR + e also when a job was refused. */
int gm_stream_finish(gm_stream *st, gm_error *e);
/* Give the connection back (or close it if anything is left in flight). */
void gm_stream_close(gm_stream *st);

#endif
