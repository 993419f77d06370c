/*
 * gm_servers.c -- settings, server registry, routes, pool and back-off (see gm_servers.h).
 */
#include "gm_servers.h"

#include "gm_pipeline.h"

#include <ctype.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Read once. A mutex and an atomic flag rather than pthread_once(), whose symbol version
 * would require glibc 2.34. */
static pthread_mutex_t gm_init_lock = PTHREAD_MUTEX_INITIALIZER;
static int gm_cfg_done;
static gm_config gm_cfg;
static int gm_cfg_ok;
static char gm_cfg_err[GM_ERRLEN];

static pthread_mutex_t gm_registry_lock = PTHREAD_MUTEX_INITIALIZER;
static gm_server *gm_registry[GM_REGISTRY_MAX];
static unsigned gm_registry_n;

static pthread_mutex_t gm_routes_lock = PTHREAD_MUTEX_INITIALIZER;
static gm_routes *gm_current;

static void gm_routes_free(gm_routes *r)
{
    if (r == NULL)
        return;
    for (unsigned i = 0; i < r->n; i++) {
        free(r->route[i].function);
        free(r->route[i].text);
    }
    free(r);
}

static void gm_servers_init(void)
{
    char err[GM_ERRLEN];
    gm_routes *r = calloc(1, sizeof *r);
    if (r == NULL) {
        snprintf(gm_cfg_err, sizeof gm_cfg_err, "gman_udf: out of memory");
        return;
    }
    if (gm_config_load(&gm_cfg, NULL, err, sizeof err) != GM_OK) {
        snprintf(gm_cfg_err, sizeof gm_cfg_err, "gman_udf configuration: %s", err);
        gm_config_free(&gm_cfg);
        free(r);
        return;
    }
    r->refs = 1;
    r->n = 1;
    const char *dflt = GM_DEFAULT_SERVERS;
    for (unsigned i = 0; i < gm_cfg.n_routes; i++)
        if (gm_cfg.routes[i].function == NULL)
            dflt = gm_cfg.routes[i].servers;
    int ok = gm_servers_parse(dflt, strlen(dflt), &r->route[0], err) == GM_OK;
    for (unsigned i = 0; ok && i < gm_cfg.n_routes; i++) {
        const gm_config_route *cr = &gm_cfg.routes[i];
        if (cr->function == NULL)
            continue;
        gm_route *rt = &r->route[r->n++];
        ok = gm_servers_parse(cr->servers, strlen(cr->servers), rt, err) == GM_OK &&
             (rt->function = strdup(cr->function)) != NULL;
    }
    if (!ok) {
        snprintf(gm_cfg_err, sizeof gm_cfg_err, "gman_udf configuration: %s (%s)", err, gm_cfg.source);
        gm_config_free(&gm_cfg);
        gm_routes_free(r);
        return;
    }
    gm_current = r;
    gm_cfg_ok = 1;
}

const gm_config *gm_settings(char *err)
{
    if (!__atomic_load_n(&gm_cfg_done, __ATOMIC_ACQUIRE)) { /* the lock only until it is read */
        pthread_mutex_lock(&gm_init_lock);
        if (!gm_cfg_done) {
            gm_servers_init();
            __atomic_store_n(&gm_cfg_done, 1, __ATOMIC_RELEASE);
        }
        pthread_mutex_unlock(&gm_init_lock);
    }
    if (!gm_cfg_ok) {
        snprintf(err, GM_ERRLEN, "%s", gm_cfg_err);
        return NULL;
    }
    return &gm_cfg;
}

/* The registry entry for host:port, resolving and adding it when new. */
static gm_server *gm_server_lookup(const char *host, const char *port, int v6, char *err)
{
    char name[sizeof(((gm_server *)0)->name)];
    snprintf(name, sizeof name, v6 ? "[%s]:%s" : "%s:%s", host, port);
    pthread_mutex_lock(&gm_registry_lock);
    for (unsigned i = 0; i < gm_registry_n; i++) {
        if (strcmp(gm_registry[i]->name, name) == 0) {
            gm_server *s = gm_registry[i];
            pthread_mutex_unlock(&gm_registry_lock);
            return s;
        }
    }
    pthread_mutex_unlock(&gm_registry_lock);

    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0 || res == NULL) {
        snprintf(err, GM_ERRLEN, "cannot resolve '%s': %s", host, rc ? gai_strerror(rc) : "no address");
        return NULL;
    }
    gm_server *s = calloc(1, sizeof *s);
    if (s == NULL || res->ai_addrlen > sizeof s->addr) {
        freeaddrinfo(res);
        free(s);
        snprintf(err, GM_ERRLEN, "out of memory");
        return NULL;
    }
    snprintf(s->name, sizeof s->name, "%s", name);
    memcpy(&s->addr, res->ai_addr, res->ai_addrlen);
    s->addrlen = res->ai_addrlen;
    freeaddrinfo(res);
    pthread_mutex_init(&s->lock, NULL);

    pthread_mutex_lock(&gm_registry_lock);
    for (unsigned i = 0; i < gm_registry_n; i++) { /* another thread may have added it */
        if (strcmp(gm_registry[i]->name, name) == 0) {
            gm_server *found = gm_registry[i];
            pthread_mutex_unlock(&gm_registry_lock);
            pthread_mutex_destroy(&s->lock);
            free(s);
            return found;
        }
    }
    if (gm_registry_n == GM_REGISTRY_MAX) {
        pthread_mutex_unlock(&gm_registry_lock);
        pthread_mutex_destroy(&s->lock);
        free(s);
        snprintf(err, GM_ERRLEN, "more than %d distinct servers used", GM_REGISTRY_MAX);
        return NULL;
    }
    gm_registry[gm_registry_n++] = s;
    pthread_mutex_unlock(&gm_registry_lock);
    return s;
}

/* One "host[:port]" item, trimmed, into its registry entry. */
static gm_server *gm_servers_parse_one(const char *p, size_t len, char *err)
{
    char item[300], host[260], port[8] = "4730";
    while (len && isspace((unsigned char)*p))
        p++, len--;
    while (len && isspace((unsigned char)p[len - 1]))
        len--;
    if (len == 0 || len >= sizeof item) {
        snprintf(err, GM_ERRLEN, len ? "server name too long" : "empty server name in list");
        return NULL;
    }
    memcpy(item, p, len);
    item[len] = '\0';
    if (memchr(item, '\0', len)) {
        snprintf(err, GM_ERRLEN, "NUL byte in server list");
        return NULL;
    }
    char *h = item, *colon = NULL;
    int v6 = 0;
    if (item[0] == '[') {
        char *close = strchr(item, ']');
        if (close == NULL || (close[1] != '\0' && close[1] != ':')) {
            snprintf(err, GM_ERRLEN, "bad address '%s' (expected [v6addr]:port)", item);
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
            snprintf(err, GM_ERRLEN, "bad port in '%.*s' (expected 1-65535)", (int)len, p);
            return NULL;
        }
        snprintf(port, sizeof port, "%ld", v);
    }
    if (*h == '\0') {
        snprintf(err, GM_ERRLEN, "missing host in '%.*s'", (int)len, p);
        return NULL;
    }
    for (const char *c = h; *c; c++) {
        if (!(isalnum((unsigned char)*c) || *c == '.' || *c == '-' || *c == '_' || (v6 && (*c == ':' || *c == '%')))) {
            snprintf(err, GM_ERRLEN, "bad host name '%s'", h);
            return NULL;
        }
    }
    snprintf(host, sizeof host, "%s", h);
    return gm_server_lookup(host, port, v6, err);
}

int gm_servers_parse(const char *list, size_t len, gm_route *route, char *err)
{
    size_t start = 0, textlen = 0;
    memset(route, 0, sizeof *route);
    for (size_t i = 0; i <= len; i++) {
        if (i < len && list[i] != ',')
            continue;
        if (route->n == GM_LIST_MAX) {
            snprintf(err, GM_ERRLEN, "more than %d servers in one list", GM_LIST_MAX);
            return GM_ERR;
        }
        gm_server *s = gm_servers_parse_one(list + start, i - start, err);
        if (s == NULL)
            return GM_ERR;
        route->servers[route->n++] = s;
        textlen += strlen(s->name) + 1;
        start = i + 1;
    }
    route->text = malloc(textlen);
    if (route->text == NULL) {
        snprintf(err, GM_ERRLEN, "out of memory");
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

int gm_servers_set(const char *list, size_t len, const char *function, size_t flen, char *out, size_t outlen,
                   char *err)
{
    const gm_config *cfg = gm_settings(err);
    if (cfg == NULL)
        return GM_ERR;
    if (cfg->locked) {
        snprintf(err, GM_ERRLEN, "the server list is locked by the configuration (%s: lock = 1)", cfg->source);
        return GM_ERR;
    }
    if (function && (flen == 0 || memchr(function, '\0', flen))) {
        snprintf(err, GM_ERRLEN, "bad function name");
        return GM_ERR;
    }
    gm_route fresh;
    if (gm_servers_parse(list, len, &fresh, err) != GM_OK) {
        free(fresh.text);
        return GM_ERR;
    }
    if (function && (fresh.function = strndup(function, flen)) == NULL) {
        free(fresh.text);
        snprintf(err, GM_ERRLEN, "out of memory");
        return GM_ERR;
    }
    snprintf(out, outlen, "%s", fresh.text);

    /* Copy the current snapshot with this one list replaced, then swap it in. */
    pthread_mutex_lock(&gm_routes_lock);
    gm_routes *old = gm_current, *r = calloc(1, sizeof *r);
    int ok = r != NULL;
    unsigned slot = 0;
    if (ok) {
        r->refs = 1;
        r->n = old->n;
        for (unsigned i = 0; i < old->n; i++) {
            const char *f = old->route[i].function;
            if (function && i > 0 && strlen(f) == flen && memcmp(f, function, flen) == 0)
                slot = i;
        }
        if (function && slot == 0) {
            ok = old->n < GM_CONFIG_MAX_ROUTES + 1;
            slot = r->n++;
        }
        for (unsigned i = 0; ok && i < old->n; i++) {
            if (i == slot)
                continue;
            r->route[i] = old->route[i];
            r->route[i].text = strdup(old->route[i].text);
            r->route[i].function = old->route[i].function ? strdup(old->route[i].function) : NULL;
            ok = r->route[i].text && (old->route[i].function == NULL || r->route[i].function);
        }
    }
    if (!ok) {
        pthread_mutex_unlock(&gm_routes_lock);
        gm_routes_free(r);
        free(fresh.text);
        free(fresh.function);
        snprintf(err, GM_ERRLEN, r ? "too many per-function server lists" : "out of memory");
        return GM_ERR;
    }
    r->route[slot] = fresh;
    gm_current = r;
    pthread_mutex_unlock(&gm_routes_lock);
    gm_routes_release(old);
    return GM_OK;
}

int gm_server_usable(gm_server *s, int64_t now)
{
    int ok = 0;
    pthread_mutex_lock(&s->lock);
    if (!s->failing)
        ok = 1;
    else if (now >= s->down_until) {
        /* Back-off is over: this caller probes; the others keep skipping meanwhile. */
        s->down_until = now + (int64_t)gm_cfg.backoff_ms * 1000;
        ok = 1;
    }
    pthread_mutex_unlock(&s->lock);
    return ok;
}

void gm_server_mark_up(gm_server *s)
{
    pthread_mutex_lock(&s->lock);
    s->failing = 0;
    s->down_until = 0;
    pthread_mutex_unlock(&s->lock);
}

void gm_server_mark_down(gm_server *s, const char *why, int backoff_ms)
{
    pthread_mutex_lock(&s->lock);
    s->failing = 1;
    s->down_until = gm_now_us() + (int64_t)backoff_ms * 1000;
    snprintf(s->last_err, sizeof s->last_err, "%s", why);
    /* Idle connections to a server that just failed are suspect too; those holding
     * unconfirmed pipelined jobs stay, so that their next user rescues the jobs. */
    gm_conn *idle[GM_POOL_MAX];
    unsigned n = 0, keep = 0;
    for (unsigned i = 0; i < s->n_idle; i++) {
        if (gm_pipe_count(s->idle[i]))
            s->idle[keep++] = s->idle[i];
        else
            idle[n++] = s->idle[i];
    }
    s->n_idle = keep;
    s->open_conns -= n;
    pthread_mutex_unlock(&s->lock);
    for (unsigned i = 0; i < n; i++)
        gm_conn_close(idle[i]);
}

gm_conn *gm_server_checkout(gm_server *s, int connect_timeout_ms, int clean, int *reused, char *err)
{
    for (;;) {
        gm_conn *c = NULL;
        pthread_mutex_lock(&s->lock);
        /* The most recently used first; `clean` callers skip those with pipelined jobs. */
        for (unsigned i = s->n_idle; i-- > 0;) {
            if (clean && gm_pipe_count(s->idle[i]))
                continue;
            c = s->idle[i];
            s->idle[i] = s->idle[--s->n_idle];
            break;
        }
        pthread_mutex_unlock(&s->lock);
        if (c == NULL)
            break;
        if (!gm_conn_is_stale(c)) {
            *reused = 1;
            c->answered_us = &s->answered_us;
            return c;
        }
        gm_server_discard(s, c);
    }
    *reused = 0;
    gm_conn *c = gm_conn_open((const struct sockaddr *)&s->addr, s->addrlen, connect_timeout_ms, err);
    if (c) {
        c->answered_us = &s->answered_us;
        pthread_mutex_lock(&s->lock);
        s->open_conns++;
        pthread_mutex_unlock(&s->lock);
    }
    return c;
}

void gm_server_checkin(gm_server *s, gm_conn *c)
{
    if (c == NULL)
        return;
    gm_conn *evicted = NULL;
    pthread_mutex_lock(&s->lock);
    /* Nothing unsent; nothing unread unless replies to pipelined jobs are still coming. */
    if (c->wpos == c->wlen && (c->rpos == c->rlen || gm_pipe_count(c))) {
        if (s->n_idle == GM_POOL_MAX && gm_pipe_count(c)) {
            /* Full: make room by closing an idle connection that owes nothing, rather than
             * close one whose jobs would then go unanswered. */
            for (unsigned i = 0; i < s->n_idle && evicted == NULL; i++)
                if (gm_pipe_count(s->idle[i]) == 0) {
                    evicted = s->idle[i];
                    s->idle[i] = s->idle[--s->n_idle];
                }
        }
        if (s->n_idle < GM_POOL_MAX) {
            s->idle[s->n_idle++] = c;
            c = NULL;
        }
    }
    pthread_mutex_unlock(&s->lock);
    gm_server_discard(s, evicted);
    if (c)
        gm_server_discard(s, c);
}

gm_conn *gm_server_take_owing(gm_server *s)
{
    gm_conn *c = NULL;
    pthread_mutex_lock(&s->lock);
    for (unsigned i = 0; i < s->n_idle; i++) {
        if (gm_pipe_count(s->idle[i])) {
            c = s->idle[i];
            s->idle[i] = s->idle[--s->n_idle];
            break;
        }
    }
    pthread_mutex_unlock(&s->lock);
    return c;
}

void gm_server_discard(gm_server *s, gm_conn *c)
{
    if (c == NULL)
        return;
    pthread_mutex_lock(&s->lock);
    s->open_conns--;
    pthread_mutex_unlock(&s->lock);
    gm_conn_close(c);
}

/* mysqld unloads the library when its last function is dropped: close what we hold. */
__attribute__((destructor)) static void gm_servers_unload(void)
{
    for (unsigned i = 0; i < gm_registry_n; i++) {
        gm_server *s = gm_registry[i];
        for (unsigned k = 0; k < s->n_idle; k++)
            gm_conn_close(s->idle[k]);
        pthread_mutex_destroy(&s->lock);
        free(s);
    }
    gm_registry_n = 0;
    gm_routes_free(gm_current);
    gm_current = NULL;
    if (gm_cfg_ok)
        gm_config_free(&gm_cfg);
}
