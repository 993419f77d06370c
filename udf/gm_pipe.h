/*
 * gm_pipe.h -- jobs sent ahead of their replies on one connection: pairing and flow control.
 *
 * gearmand answers the SUBMIT_JOB* packets of one connection in the order they were sent:
 * JOB_CREATED, or ERROR for a job it refuses (queue full) or a packet type it does not know.
 * Each connection therefore carries the queue of its unanswered jobs (their encoded packets,
 * oldest first), and every reply is paired with the oldest one: JOB_CREATED confirms it,
 * ERROR refuses it. Both are final: such a job is never sent again. Only when a connection
 * fails are its unanswered jobs taken off (rescued) to be sent elsewhere.
 *
 * Flow control: at most `window` jobs (and GM_PIPE_BYTES_MAX bytes) wait unanswered per
 * connection, so a server that reads a whole burst before answering never gets a flood, and
 * a wait for replies times out only after io_timeout_ms in which the server answered none
 * of our connections: the deadline restarts on every reply, so a slow server that answers
 * is never taken for a dead one.
 *
 * Used by pipelined gman_do*_background (gm_pipeline.c, with failover and rescue) and by
 * the streams of gman_sum / gman_bulk_background (gm_stream.c).
 */
#ifndef GMAN_GM_PIPE_H
#define GMAN_GM_PIPE_H

#include <stddef.h>
#include <stdint.h>

#include "gm_config.h"
#include "gm_conn.h"
#include "gm_error.h"
#include "gm_jobq.h"
#include "gm_limits.h"
#include "gm_proto.h"

/* Unanswered jobs on c, and their bytes. */
unsigned gm_pipe_count(const gm_conn *c);
size_t gm_pipe_bytes(const gm_conn *c);
/* Called by gm_conn_close: jobs still unanswered then are counted as abandoned. */
void gm_pipe_free(gm_jobq *pending);

/* What a reply meant for the pipe. */
typedef struct gm_reply {
    /* NO_HANDLE: a JOB_CREATED without a handle, from a broken or hostile server: the job
     * may or may not be queued there, so it is neither confirmed nor ever sent again. */
    enum { GM_REPLY_OTHER, GM_REPLY_CONFIRMED, GM_REPLY_REFUSED, GM_REPLY_NO_HANDLE } kind;
    char unique[GM_UNIQUE_MAX + 1]; /* but for OTHER: the job's unique id */
    gm_error why;                   /* REFUSED: "ERROR code: text"; NO_HANDLE: what came */
} gm_reply;

/* A reply on c broke the protocol (out of step, of a type nobody asked for): counted, c
 * marked (c->broke_protocol) to be dropped, e set. Returns GM_ERR. */
int gm_pipe_violation(gm_conn *c, gm_error *e, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Queue a job on c (written by the next flush or wait) and remember it as unanswered:
 * an encoded packet (a re-sent one), or a new job from its arguments. */
int gm_pipe_send(gm_conn *c, const char *p, size_t len, gm_error *e);
int gm_pipe_send_job(gm_conn *c, unsigned type, const gm_slice *args, unsigned nargs, gm_error *e);

/* c failed: its unanswered jobs are taken off, in front of out's (counted as rescued; left
 * on c, to be counted as abandoned, when out cannot grow). */
void gm_pipe_rescue(gm_conn *c, gm_jobq *out);

/* Called for every reply read on c, after it was paired (r->kind). GM_ERR + e stops. */
typedef int (*gm_pipe_handler)(void *ctx, const gm_packet *pkt, const gm_reply *r, gm_error *e);

/* Read the replies that are there (at most a few thousand), pairing each; with deadline >= 0
 * and none there, wait for one until deadline (sending what is unsent meanwhile). *nread:
 * packets read. GM_ERR + e when the connection failed or timed out (c->timed_out). */
int gm_pipe_read(gm_conn *c, size_t max_reply, int64_t deadline, gm_pipe_handler h, void *ctx, unsigned *nread,
                 gm_error *e);

/* Wait until at most `keep` jobs are unanswered and `room` more bytes fit under
 * GM_PIPE_BYTES_MAX, sending what is unsent meanwhile (nothing is flushed when there is
 * room already). Every reply restarts the wait; it ends after io_timeout_ms in which the
 * server answered none of our connections ("timed out waiting for confirmations",
 * c->timed_out), and after do_timeout_ms in all however busy the server. */
int gm_pipe_drain(gm_conn *c, unsigned keep, size_t room, const gm_config *cfg, gm_pipe_handler h, void *ctx,
                  gm_error *e);

#endif
