/*
 * gm_pick.c -- walking a function's servers (see gm_pick.h).
 */
#include "gm_pick.h"

#include <string.h>

void gm_pick_begin(gm_pick *pk, const gm_config *cfg, const char *fn, size_t fn_len)
{
    memset(pk, 0, sizeof *pk);
    pk->cfg = cfg;
    pk->routes = gm_routes_acquire();
    pk->rt = gm_routes_for(pk->routes, fn, fn_len);
    pk->now = gm_now_us();
}

gm_server *gm_pick_next(gm_pick *pk)
{
    while (pk->next < pk->rt->n) {
        gm_server *s = pk->rt->servers[pk->next++];
        if (gm_server_usable(s, pk->now, pk->cfg->backoff_ms))
            return s;
        gm_error down;
        gm_server_skipped(s, pk->now, &down);
        gm_error_add(&pk->tried, "gearmand %s: %s", s->name, down.text);
    }
    return NULL;
}

void gm_pick_failed(gm_pick *pk, gm_server *s, const gm_error *why, int backoff)
{
    gm_error_add(&pk->tried, "gearmand %s: %s", s->name, why->text);
    if (backoff)
        gm_server_mark_down(s, why->text, pk->cfg->backoff_ms);
}

int gm_pick_error(const gm_pick *pk, gm_error *e)
{
    return gm_error_set(e, "%s", pk->tried.text[0] ? pk->tried.text : "no gearmand server configured");
}

void gm_pick_end(gm_pick *pk)
{
    gm_routes_release(pk->routes);
    pk->routes = NULL;
    pk->rt = NULL;
}
