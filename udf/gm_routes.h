/*
 * gm_routes.h -- which servers a function's jobs go to: the default list and the
 * per-function lists, as an immutable, reference-counted snapshot. gm_servers_set() builds
 * a new one and swaps it in; a call holds the snapshot it started with.
 */
#ifndef GMAN_GM_ROUTES_H
#define GMAN_GM_ROUTES_H

#include <stddef.h>

#include "gm_config.h"
#include "gm_error.h"
#include "gm_servers.h"

typedef struct gm_route {
    char *function; /* NULL for the default list */
    char *text;     /* the normalised list, "h1:4730,h2:4730" */
    unsigned n;
    gm_server *servers[GM_LIST_MAX];
} gm_route;

typedef struct gm_routes {
    unsigned refs;
    unsigned n;
    gm_route route[GM_ROUTES_MAX + 1]; /* route[0] is the default list */
} gm_routes;

/* The first snapshot, from the settings' lists (gm_settings.c calls it once). */
int gm_routes_init(const gm_config *cfg, gm_error *e);

/* Parse "host[:port][,host[:port]...]" ("[v6addr]:port" too) and resolve each name.
 * Fills route (servers from the registry, each with a reference the route holds; text
 * normalised): release it with gm_route_clear. GM_ERR + e on a bad list, and then
 * nothing is held and the registry is as before. */
int gm_servers_parse(const char *list, size_t len, gm_route *route, gm_error *e);
/* Free a route's strings and drop its server references; the route is zeroed. */
void gm_route_clear(gm_route *route);

/* Current routes (reference held) and the list for a function. */
gm_routes *gm_routes_acquire(void);
void gm_routes_release(gm_routes *r);
const gm_route *gm_routes_for(const gm_routes *r, const char *function, size_t len);

/* Replace the list of `function` (NULL: the default). Returns GM_OK and the applied text
 * in out, or GM_ERR + e (bad list, locked configuration). */
int gm_servers_set(const gm_config *cfg, const char *list, size_t len, const char *function, size_t flen, char *out,
                   size_t outlen, gm_error *e);

#endif
