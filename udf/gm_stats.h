/*
 * gm_stats.h -- the process's job counters, read by gman_stats().
 *
 * Counted where the event is seen: the pipe (gm_pipe.c) counts what happens to pipelined
 * jobs, the pipelined submit (gm_pipeline.c) the jobs no server took; replies that break
 * the protocol are counted by whoever reads them (gm_conn.c, gm_pipe.c, gm_pipeline.c,
 * gm_client.c). Lock-free (__atomic, relaxed): the counters are read as a whole only for a
 * report.
 */
#ifndef GMAN_GM_STATS_H
#define GMAN_GM_STATS_H

#include <stddef.h>
#include <stdint.h>

typedef enum gm_stat {
    GM_STAT_JOBS,            /* pipelined jobs submitted */
    GM_STAT_SENT,            /* pipelined sends, re-sends included */
    GM_STAT_CONFIRMED,       /* JOB_CREATED paired with a job */
    GM_STAT_REFUSED,         /* ERROR paired with a job */
    GM_STAT_RESCUED,         /* taken off a failed connection to be sent again */
    GM_STAT_LOST,            /* taken off and no server took them */
    GM_STAT_ABANDONED,       /* unanswered on a connection closed without rescue */
    GM_STAT_TIMEOUTS,        /* waits for confirmations that found a server silent */
    GM_STAT_NO_HANDLE,       /* JOB_CREATED without a handle: the job may or may not exist */
    GM_STAT_PROTOCOL_ERRORS, /* replies that broke the protocol: bytes that are no packet, a
                              * reply to no job, a packet nobody asked for (each drops its
                              * connection) */
    GM_STAT_COUNT
} gm_stat;

void gm_stats_add(gm_stat which, uint64_t n);
uint64_t gm_stats_get(gm_stat which);
/* Every counter as one JSON object, {"jobs":..,...}, into out (GM_STATS_JSON_MAX bytes fit
 * any values). */
#define GM_STATS_JSON_MAX 512
void gm_stats_json(char *out, size_t len);

#endif
