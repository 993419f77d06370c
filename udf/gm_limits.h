/*
 * gm_limits.h -- the sizes the plugin's files agree on: what gearmand keeps, what the SQL
 * host's buffers hold, and how much state one process or one statement keeps.
 */
#ifndef GMAN_GM_LIMITS_H
#define GMAN_GM_LIMITS_H

/* ---- gearmand's ---- */
#define GM_UNIQUE_MAX 63    /* GEARMAN_MAX_UNIQUE_SIZE is 64 with the NUL: gearmand keeps 63 bytes */
#define GM_FUNCTION_MAX 512 /* GEARMAN_FUNCTION_MAX_SIZE */
/* The longest job handle we accept: a background call returns it, with its NUL, in the
 * server's 255-byte result buffer (UDF_RESULT_SIZE, udf_host.h). */
#define GM_HANDLE_MAX 254

/* ---- sizes of jobs and replies ---- */
#define GM_WORKLOAD_DEFAULT ((size_t)16 << 20) /* max_workload unless configured */
#define GM_WORKLOAD_LIMIT (1L << 30)          /* the largest max_workload accepted */
#define GM_REPLY_SLACK 4096                    /* a reply may be max_workload plus its handle and header */
/* max_length of a result of any size (a MEDIUMTEXT-or-larger column): gman_do, json_*. */
#define GM_RESULT_LENGTH 16777216
#define GM_PIPE_BYTES_MAX (4u << 20) /* unanswered bytes per connection (a job larger than this goes alone) */

/* ---- the process's servers ---- */
#define GM_LIST_MAX 16      /* servers in one list */
#define GM_REGISTRY_MAX 64  /* distinct servers in use at once */
#define GM_POOL_MAX 64      /* idle connections kept per server */
#define GM_ROUTES_MAX 64    /* per-function server lists */
#define GM_SERVER_NAME 280  /* "host:port" or "[v6addr]:port", with its NUL */

/* ---- one aggregate (gman_sum, gman_bulk_background) ---- */
#define GM_AGG_FUNCTIONS 8 /* distinct function names in one group: one stream each */
#define GM_AGG_LEVELS 16   /* ROLLUP levels followed */
/* Unanswered jobs of a stream: adapted between these, so that a burst takes a quarter of
 * io_timeout_ms at most (a durable queue takes ~1 ms per job, more on a busy disk). */
#define GM_STREAM_WINDOW_MIN 8
#define GM_STREAM_WINDOW_START 32
#define GM_STREAM_WINDOW_MAX 256

#endif
