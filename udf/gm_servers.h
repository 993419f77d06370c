/*
 * gm_servers.h -- the job servers: lists per function, a connection pool per server, and
 * a back-off per server so that a dead gearmand costs one timeout, not one per row.
 *
 * Process-wide state, every piece under a lock:
 *   - the settings (gm_config), read once, on first use (pthread_once);
 *   - a registry of servers by "host:port", reference-counted: every route that lists a
 *     server holds a reference, and so does anyone using it outside a routes snapshot
 *     (a stream). When the last reference goes, the slot is free for another address
 *     and the server's idle connections are closed;
 *   - the routes (default list + per-function lists): an immutable, reference-counted
 *     snapshot; gman_servers_set() builds a new one and swaps it in.
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
#include <sys/socket.h>

#include "gm_config.h"
#include "gm_conn.h"

#define GM_LIST_MAX 16     /* servers in one list */
#define GM_REGISTRY_MAX 64 /* distinct servers in use at once */
#define GM_POOL_MAX 64     /* idle connections kept per server */
#define GM_FUNCTION_MAX 512 /* gearmand's GEARMAN_FUNCTION_MAX_SIZE */

typedef struct gm_server {
    unsigned refs;  /* guarded by the registry's lock (gm_servers.c) */
    char name[280]; /* "host:port", for messages */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    pthread_mutex_t lock; /* guards everything below */
    gm_conn *idle[GM_POOL_MAX];
    unsigned n_idle;
    int failing;           /* last attempt failed */
    int64_t down_until;    /* skip until then (monotonic us) */
    char last_err[GM_ERRLEN];
    int64_t answered_us;   /* last reply to a pipelined job on any connection (__atomic, no lock) */
} gm_server;

typedef struct gm_route {
    char *function; /* NULL for the default list */
    char *text;     /* the normalised list, "h1:4730,h2:4730" */
    unsigned n;
    gm_server *servers[GM_LIST_MAX];
} gm_route;

typedef struct gm_routes {
    unsigned refs;
    unsigned n;
    gm_route route[GM_CONFIG_MAX_ROUTES + 1]; /* route[0] is the default list */
} gm_routes;

/* The settings; NULL with err filled when they could not be read (every call fails then). */
const gm_config *gm_settings(char *err);

/* Parse "host[:port][,host[:port]...]" ("[v6addr]:port" too) and resolve each name.
 * Fills route (servers from the registry, each with a reference the route holds; text
 * normalised): release it with gm_route_clear. GM_ERR + err on a bad list, and then
 * nothing is held and the registry is as before. */
int gm_servers_parse(const char *list, size_t len, gm_route *route, char *err);
/* Free a route's strings and drop its server references; the route is zeroed. */
void gm_route_clear(gm_route *route);

/* Take / drop a reference on a server (see the rule above). The last unref frees it. */
void gm_server_ref(gm_server *s);
void gm_server_unref(gm_server *s);

/* Current routes (reference held) and the list for a function. */
gm_routes *gm_routes_acquire(void);
void gm_routes_release(gm_routes *r);
const gm_route *gm_routes_for(const gm_routes *r, const char *function, size_t len);

/* Replace the list of `function` (NULL: the default). Returns GM_OK and the applied text
 * in out, or GM_ERR + err (bad list, locked configuration). */
int gm_servers_set(const char *list, size_t len, const char *function, size_t flen, char *out, size_t outlen,
                   char *err);

/* May this caller use s now? 0 while it is in back-off; when back-off has ended, one
 * caller gets to probe it (the others still skip it until that probe reports). */
int gm_server_usable(gm_server *s, int64_t now);
void gm_server_mark_up(gm_server *s);
void gm_server_mark_down(gm_server *s, const char *why, int backoff_ms);

/* A connection to s: an idle pooled one (checked for staleness) or a new one; with
 * `clean`, never one that carries unconfirmed pipelined jobs. *reused tells which.
 * NULL + err on failure. */
gm_conn *gm_server_checkout(gm_server *s, int connect_timeout_ms, int clean, int *reused, char *err);
/* Hand a healthy, idle connection back (kept if the pool has room), or close a broken one. */
void gm_server_checkin(gm_server *s, gm_conn *c);
/* An idle connection of s that still has unanswered pipelined jobs, taken out of the pool
 * (the caller rescues its jobs and discards it), or NULL. */
gm_conn *gm_server_take_owing(gm_server *s);

#endif
