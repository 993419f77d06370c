/*
 * gm_servers.h -- the job servers: a registry of them by "host:port", a connection pool
 * per server, and a back-off per server so that a dead gearmand costs one timeout, not
 * one per row.
 *
 * The registry is reference-counted: every route that lists a server holds a reference
 * (gm_routes.h), and so does anyone using it outside a routes snapshot (a stream). When
 * the last reference goes, the slot is free for another address and the server's idle
 * connections are closed.
 *
 * Rule for users of a gm_server pointer: hold a routes snapshot that lists it
 * (gm_routes_acquire) or a reference of your own (gm_server_ref) for as long as you use
 * the pointer or a connection checked out of it.
 */
#ifndef GMAN_GM_SERVERS_H
#define GMAN_GM_SERVERS_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "gm_conn.h"
#include "gm_error.h"
#include "gm_limits.h"

typedef struct gm_server {
    unsigned refs;             /* guarded by the registry's lock (gm_servers.c) */
    char name[GM_SERVER_NAME]; /* "host:port", for messages */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    pthread_mutex_t lock; /* guards everything below but answered_us */
    gm_conn *idle[GM_POOL_MAX];
    unsigned n_idle;
    int failing;           /* last attempt failed (read without the lock by the fast paths) */
    int64_t down_until;    /* skip until then (monotonic us) */
    char last_err[GM_ERRLEN];
    int64_t answered_us;   /* last reply to a pipelined job on any connection (__atomic, no lock) */
} gm_server;

/* The registry entry for host:port (host in brackets when v6) with a reference taken,
 * resolving and adding it when new. NULL + e when it does not resolve or every slot is in
 * use. */
gm_server *gm_server_lookup(const char *host, const char *port, int v6, gm_error *e);

/* Take / drop a reference on a server (see the rule above). The last unref frees it. */
void gm_server_ref(gm_server *s);
void gm_server_unref(gm_server *s);

/* May this caller use s now? 0 while it is in back-off; when back-off has ended, one
 * caller gets to probe it (the others still skip it for backoff_ms, until that probe
 * reports). */
int gm_server_usable(gm_server *s, int64_t now, int backoff_ms);
void gm_server_mark_up(gm_server *s);
void gm_server_mark_down(gm_server *s, const char *why, int backoff_ms);
/* Why s is skipped now: "skipped for N ms after: <its last error>", into e. */
void gm_server_skipped(gm_server *s, int64_t now, gm_error *e);

/* A connection to s: an idle pooled one (checked for staleness) or a new one; with
 * `clean`, never one that carries unconfirmed pipelined jobs. *reused tells which.
 * NULL + e on failure. */
gm_conn *gm_server_checkout(gm_server *s, int connect_timeout_ms, int clean, int *reused, gm_error *e);
/* Hand a healthy, idle connection back (kept if the pool has room), or close a broken one. */
void gm_server_checkin(gm_server *s, gm_conn *c);
/* An idle connection of s that still has unanswered pipelined jobs, taken out of the pool
 * (the caller rescues its jobs and discards it), or NULL. */
gm_conn *gm_server_take_owing(gm_server *s);

/* Free every server still registered (the library is being unloaded). */
void gm_servers_unload(void);

#endif
