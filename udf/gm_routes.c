/*
 * gm_routes.c -- server lists: parsing, the routes snapshot and gman_servers_set()
 * (see gm_routes.h).
 */
#include "gm_routes.h"

#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static pthread_mutex_t gm_routes_lock = PTHREAD_MUTEX_INITIALIZER;
static gm_routes *gm_current;

static void gm_routes_free(gm_routes *r)
{
    if (r == NULL)
        return;
    for (unsigned i = 0; i < r->n; i++)
        gm_route_clear(&r->route[i]);
    free(r);
}

/* One "host[:port]" item, trimmed, into its registry entry. */
static gm_server *gm_servers_parse_one(const char *p, size_t len, gm_error *e)
{
    char item[300], host[260], port[8] = "4730";
    while (len && isspace((unsigned char)*p))
        p++, len--;
    while (len && isspace((unsigned char)p[len - 1]))
        len--;
    if (len == 0 || len >= sizeof item) {
        gm_error_set(e, len ? "server name too long" : "empty server name in list");
        return NULL;
    }
    memcpy(item, p, len);
    item[len] = '\0';
    if (memchr(item, '\0', len)) {
        gm_error_set(e, "NUL byte in server list");
        return NULL;
    }
    char *h = item, *colon = NULL;
    int v6 = 0;
    if (item[0] == '[') {
        char *close = strchr(item, ']');
        if (close == NULL || (close[1] != '\0' && close[1] != ':')) {
            gm_error_set(e, "bad address '%s' (expected [v6addr]:port)", item);
            return NULL;
        }
        *close = '\0';
        h = item + 1;
        colon = close[1] == ':' ? close + 1 : NULL;
        v6 = 1;
    } else {
        colon = strchr(item, ':');
        if (colon && strchr(colon + 1, ':')) { /* a bare IPv6 address, default port */
            colon = NULL;
            v6 = 1;
        }
        if (colon)
            *colon = '\0';
    }
    if (colon) {
        const char *q = colon + 1;
        size_t n = strlen(q);
        long v = 0;
        for (size_t i = 0; i < n; i++)
            v = isdigit((unsigned char)q[i]) && v < 100000 ? v * 10 + (q[i] - '0') : -1;
        if (n == 0 || v < 1 || v > 65535) {
            gm_error_set(e, "bad port in '%.*s' (expected 1-65535)", (int)len, p);
            return NULL;
        }
        snprintf(port, sizeof port, "%ld", v);
    }
    if (*h == '\0') {
        gm_error_set(e, "missing host in '%.*s'", (int)len, p);
        return NULL;
    }
    for (const char *c = h; *c; c++) {
        if (!(isalnum((unsigned char)*c) || *c == '.' || *c == '-' || *c == '_' || (v6 && (*c == ':' || *c == '%')))) {
            gm_error_set(e, "bad host name '%s'", h);
            return NULL;
        }
    }
    if (!v6 && strspn(h, "0123456789") == strlen(h)) { /* inet_aton would take "4730" for 0.0.18.122 */
        gm_error_set(e, "bad host name '%s' (a number; expected host[:port])", h);
        return NULL;
    }
    snprintf(host, sizeof host, "%s", h);
    return gm_server_lookup(host, port, v6, e);
}

void gm_route_clear(gm_route *route)
{
    for (unsigned i = 0; i < route->n; i++)
        gm_server_unref(route->servers[i]);
    free(route->text);
    free(route->function);
    memset(route, 0, sizeof *route);
}

int gm_servers_parse(const char *list, size_t len, gm_route *route, gm_error *e)
{
    size_t start = 0, textlen = 0, items = 1;
    memset(route, 0, sizeof *route);
    for (size_t i = 0; i < len; i++) /* too long a list costs no lookups */
        items += list[i] == ',';
    if (items > GM_LIST_MAX) {
        gm_error_set(e, "more than %d servers in one list", GM_LIST_MAX);
        return GM_ERR;
    }
    for (size_t i = 0; i <= len; i++) {
        if (i < len && list[i] != ',')
            continue;
        gm_server *s = gm_servers_parse_one(list + start, i - start, e);
        if (s == NULL) {
            gm_route_clear(route); /* a refused list keeps nothing */
            return GM_ERR;
        }
        route->servers[route->n++] = s;
        textlen += strlen(s->name) + 1;
        start = i + 1;
    }
    route->text = malloc(textlen);
    if (route->text == NULL) {
        gm_route_clear(route);
        gm_error_set(e, "out of memory");
        return GM_ERR;
    }
    route->text[0] = '\0';
    for (unsigned i = 0; i < route->n; i++) {
        if (i)
            strcat(route->text, ",");
        strcat(route->text, route->servers[i]->name);
    }
    return GM_OK;
}

int gm_routes_init(const gm_config *cfg, gm_error *e)
{
    gm_routes *r = calloc(1, sizeof *r);
    if (r == NULL)
        return gm_error_set(e, "out of memory");
    r->refs = 1;
    r->n = 1;
    const char *dflt = GM_DEFAULT_SERVERS;
    for (unsigned i = 0; i < cfg->n_routes; i++)
        if (cfg->routes[i].function == NULL)
            dflt = cfg->routes[i].servers;
    int ok = gm_servers_parse(dflt, strlen(dflt), &r->route[0], e) == GM_OK;
    for (unsigned i = 0; ok && i < cfg->n_routes; i++) {
        const gm_config_route *cr = &cfg->routes[i];
        if (cr->function == NULL)
            continue;
        gm_route *rt = &r->route[r->n++];
        ok = gm_servers_parse(cr->servers, strlen(cr->servers), rt, e) == GM_OK;
        if (ok && (rt->function = strdup(cr->function)) == NULL)
            ok = gm_error_set(e, "out of memory") == GM_OK;
    }
    if (!ok) {
        gm_routes_free(r);
        return GM_ERR;
    }
    pthread_mutex_lock(&gm_routes_lock);
    gm_current = r;
    pthread_mutex_unlock(&gm_routes_lock);
    return GM_OK;
}

gm_routes *gm_routes_acquire(void)
{
    pthread_mutex_lock(&gm_routes_lock);
    gm_routes *r = gm_current;
    if (r)
        r->refs++;
    pthread_mutex_unlock(&gm_routes_lock);
    return r;
}

void gm_routes_release(gm_routes *r)
{
    if (r == NULL)
        return;
    pthread_mutex_lock(&gm_routes_lock);
    int last = --r->refs == 0;
    pthread_mutex_unlock(&gm_routes_lock);
    if (last)
        gm_routes_free(r);
}

const gm_route *gm_routes_for(const gm_routes *r, const char *function, size_t len)
{
    for (unsigned i = 1; i < r->n; i++) {
        const char *f = r->route[i].function;
        if (strlen(f) == len && memcmp(f, function, len) == 0)
            return &r->route[i];
    }
    return &r->route[0];
}

/* A copy of src for a new snapshot: its own strings and its own server references. */
static int gm_route_copy(gm_route *dst, const gm_route *src)
{
    *dst = *src;
    dst->text = strdup(src->text);
    dst->function = src->function ? strdup(src->function) : NULL;
    if (dst->text == NULL || (src->function && dst->function == NULL)) {
        free(dst->text);
        free(dst->function);
        memset(dst, 0, sizeof *dst);
        return GM_ERR;
    }
    for (unsigned i = 0; i < dst->n; i++)
        gm_server_ref(dst->servers[i]);
    return GM_OK;
}

int gm_servers_set(const gm_config *cfg, const char *list, size_t len, const char *function, size_t flen, char *out,
                   size_t outlen, gm_error *e)
{
    if (cfg->locked)
        return gm_error_set(e, "the server list is locked by the configuration (%s: lock = 1)", cfg->source);
    /* A list for a name no job can carry would only take a slot. */
    if (function && (flen == 0 || flen > GM_FUNCTION_MAX || memchr(function, '\0', flen)))
        return gm_error_set(e, "bad function name");
    gm_route fresh;
    if (gm_servers_parse(list, len, &fresh, e) != GM_OK)
        return GM_ERR;
    if (function && (fresh.function = strndup(function, flen)) == NULL) {
        gm_route_clear(&fresh);
        gm_error_set(e, "out of memory");
        return GM_ERR;
    }

    /* A new snapshot: the current one with this one list replaced or added. Every check
     * comes before anything is swapped in: a refused call changes nothing. */
    pthread_mutex_lock(&gm_routes_lock);
    gm_routes *old = gm_current;
    unsigned slot = function ? old->n : 0;
    for (unsigned i = 1; function && i < old->n; i++) {
        const char *f = old->route[i].function;
        if (strlen(f) == flen && memcmp(f, function, flen) == 0)
            slot = i;
    }
    int full = slot == GM_ROUTES_MAX + 1, ok = !full;
    gm_routes *r = ok ? calloc(1, sizeof *r) : NULL;
    ok = r != NULL;
    for (unsigned i = 0; ok && i < old->n; i++)
        ok = i == slot || gm_route_copy(&r->route[i], &old->route[i]) == GM_OK;
    if (!ok) {
        pthread_mutex_unlock(&gm_routes_lock);
        if (r)
            r->n = old->n; /* the routes not copied are zeroed: nothing to free there */
        gm_routes_free(r);
        gm_route_clear(&fresh);
        if (full)
            gm_error_set(e, "too many per-function server lists (%d at most)", GM_ROUTES_MAX);
        else
            gm_error_set(e, "out of memory");
        return GM_ERR;
    }
    snprintf(out, outlen, "%s", fresh.text);
    r->refs = 1;
    r->n = slot == old->n ? old->n + 1 : old->n;
    r->route[slot] = fresh;
    gm_current = r;
    pthread_mutex_unlock(&gm_routes_lock);
    gm_routes_release(old); /* servers only the old lists used are freed with it */
    return GM_OK;
}

/* mysqld unloads the library when its last function is dropped: close what we hold. No
 * thread runs our code any more then. */
__attribute__((destructor)) static void gm_routes_unload(void)
{
    gm_routes_free(gm_current); /* frees every server that only the lists held */
    gm_current = NULL;
    gm_servers_unload(); /* and any a leaked reference kept */
}
