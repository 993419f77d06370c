/*
 * gm_conn.h -- one TCP connection to a gearmand, with a deadline on every wait.
 *
 * Sockets are non-blocking; every connect, send and receive waits in poll() for at most
 * the time left until the caller's deadline, so no call can hang mysqld's thread. A
 * connection is used by one thread at a time (the pool in gm_servers.c hands it out).
 * Errors are set in the caller's gm_error as a short phrase ("connect: Connection refused",
 * "no reply (timed out)"); the caller adds which server it was.
 */
#ifndef GMAN_GM_CONN_H
#define GMAN_GM_CONN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "gm_error.h"
#include "gm_proto.h"

typedef struct gm_conn {
    int fd;
    char *rbuf;   /* received bytes; [rpos, rlen) not yet decoded */
    size_t rpos, rlen, rcap;
    char *wbuf;   /* bytes to send; [wpos, wlen) not yet written */
    size_t wpos, wlen, wcap;
    int options_sent; /* OPTION_REQ "exceptions" already acknowledged */
    int timed_out;    /* a wait ran out: the peer is slow or frozen, not merely gone */
    int broke_protocol; /* a reply broke the protocol (gm_stats.h): the connection is dropped */
    /* Jobs sent and not answered yet: owned by gm_pipe.c (NULL until the first). */
    struct gm_jobq *pending;
    /* When the server last answered a job on any of our connections to it (monotonic us,
     * __atomic access; set by the pool): a busy server is told from a frozen one. */
    int64_t *answered_us;
} gm_conn;

/* Monotonic clock in microseconds, and a deadline `ms` from now. */
int64_t gm_now_us(void);
static inline int64_t gm_deadline(int ms) { return gm_now_us() + (int64_t)ms * 1000; }

/* Connect within timeout_ms. Returns the connection, or NULL with e set. */
gm_conn *gm_conn_open(const struct sockaddr *addr, socklen_t addrlen, int timeout_ms, gm_error *e);
void gm_conn_close(gm_conn *c); /* NULL is a no-op */

/* Append one packet to the send buffer (nothing is written yet). */
int gm_conn_queue(gm_conn *c, unsigned type, const gm_slice *args, unsigned nargs, gm_error *e);
/* Append already-encoded packets to the send buffer. */
int gm_conn_queue_raw(gm_conn *c, const char *p, size_t len, gm_error *e);

/* Write everything queued, waiting until `deadline` at most. */
int gm_conn_flush(gm_conn *c, int64_t deadline, gm_error *e);
/* Write what the socket takes now without waiting (GM_OK even if some is left). */
int gm_conn_flush_some(gm_conn *c, gm_error *e);

/* Wait until c is readable (or writable, while bytes are unsent), until deadline.
 * GM_ERR + "no reply (timed out)" (c->timed_out set) or a poll error. */
int gm_conn_wait_io(gm_conn *c, int64_t deadline, gm_error *e);

/* Next response packet. With deadline < 0 it does not wait: GM_NEED_MORE when no whole
 * packet is there. The packet's slices stay valid until the next receive on c.
 * A packet larger than max_data is refused from its header (GM_ERR). */
int gm_conn_recv(gm_conn *c, gm_packet *pkt, size_t max_data, int64_t deadline, gm_error *e);

/* An ERROR reply, described into e: "ERROR <code>: <text>" (both cut short). Returns GM_ERR. */
int gm_conn_error_reply(const gm_packet *pkt, gm_error *e);

/* 1 when an idle pooled connection can no longer be used: the peer closed it, or it has
 * bytes nobody asked for. Costs one poll(). A connection with unanswered pipelined jobs
 * is never stale: its next user reads their replies (or rescues the jobs). */
int gm_conn_is_stale(gm_conn *c);

#endif
