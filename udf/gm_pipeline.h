/*
 * gm_pipeline.h -- pipelined gman_do*_background (pipeline_window > 0): each job is sent on
 * a pooled connection of the first usable server without waiting for its reply
 * (gm_pipe.h pairs the replies later), with failover, parking of silent servers' connections
 * and rescue of the jobs of connections that are surely gone.
 *
 * Rescue re-sends jobs the server may have stored, so it is kept for connections that are
 * surely gone: closed, reset, unwritable, or without any answer for do_timeout_ms. A
 * connection that is merely silent for io_timeout_ms is parked in the pool with its jobs
 * (their replies are read by its next user) and the server sits out its back-off.
 */
#ifndef GMAN_GM_PIPELINE_H
#define GMAN_GM_PIPELINE_H

#include <stddef.h>

#include "gm_config.h"
#include "gm_error.h"

/* Pipelined gman_do*_background (pipeline_window > 0): send the job on the first usable
 * server of its function without waiting for its reply. Replies found meanwhile are paired;
 * refusals of earlier jobs, JOB_CREATEDs without a handle and replies that broke the
 * protocol (their connection dropped) are described in note ("" when none). When a connection
 * fails, its unanswered jobs go with this one to the next server (servers in back-off too).
 * GM_OK, or GM_ERR + e when no server took this job (and the earlier jobs carried along,
 * counted as lost). */
int gm_pipeline_submit(const gm_config *cfg, unsigned type, const char *fn, size_t fn_len, const char *unique,
                       size_t unique_len, const char *workload, size_t workload_len, gm_error *note, gm_error *e);

#endif
