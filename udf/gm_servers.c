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

/* Slots of servers in use (NULL: free). A server leaves its slot when its last
 * reference goes, under this lock, so a lookup never finds a server being freed. */
static pthread_mutex_t gm_registry_lock = PTHREAD_MUTEX_INITIALIZER;
static gm_server *gm_registry[GM_REGISTRY_MAX];

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

/* Under gm_registry_lock: the server named `name`, or NULL. */
static gm_server *gm_registry_find(const char *name)
{
    for (unsigned i = 0; i < GM_REGISTRY_MAX; i++)
        if (gm_registry[i] && strcmp(gm_registry[i]->name, name) == 0)
            return gm_registry[i];
    return NULL;
}

/* Confirmations still due on an idle pipelined connection of a server nobody lists any
 * more. Its jobs were sent whole (the pool keeps only connections with nothing unsent),
 * so gearmand has them unless it fails now; reading the confirmations before the close
 * lets the close end with a FIN rather than a reset, which could make gearmand drop bytes
 * it has not read yet. Jobs still unconfirmed at the deadline are not sent again: no list
 * names a server for them any more (the same bound as a mysqld crash: at most
 * pipeline_window per connection). */
static void gm_server_drain(gm_conn *c, int64_t deadline)
{
    char err[GM_ERRLEN];
    while (gm_pipe_count(c)) { /* each reply is paired (confirmed or refused) by the pipe */
        unsigned nread;
        if (gm_pipe_read(c, gm_cfg.max_workload + 4096, deadline, NULL, NULL, &nread, err) != GM_OK)
            return;
    }
}

/* The last reference is gone: s left the registry, nobody can reach it, and every
 * connection of it is idle in the pool (a user of a connection holds a reference). */
static void gm_server_free(gm_server *s)
{
    int64_t deadline = gm_deadline(gm_cfg.io_timeout_ms); /* one wait for the whole server */
    for (unsigned i = 0; i < s->n_idle; i++) {
        gm_server_drain(s->idle[i], deadline);
        gm_conn_close(s->idle[i]);
    }
    pthread_mutex_destroy(&s->lock);
    free(s);
}

void gm_server_ref(gm_server *s)
{
    pthread_mutex_lock(&gm_registry_lock);
    s->refs++;
    pthread_mutex_unlock(&gm_registry_lock);
}

void gm_server_unref(gm_server *s)
{
    if (s == NULL)
        return;
    pthread_mutex_lock(&gm_registry_lock);
    int last = --s->refs == 0;
    for (unsigned i = 0; last && i < GM_REGISTRY_MAX; i++)
        if (gm_registry[i] == s)
            gm_registry[i] = NULL;
    pthread_mutex_unlock(&gm_registry_lock);
    if (last)
        gm_server_free(s);
}

/* The registry entry for host:port with a reference taken, resolving and adding it when
 * new. NULL + err when it does not resolve or every slot is in use. */
static gm_server *gm_server_lookup(const char *host, const char *port, int v6, char *err)
{
    char name[sizeof(((gm_server *)0)->name)];
    snprintf(name, sizeof name, v6 ? "[%s]:%s" : "%s:%s", host, port);
    pthread_mutex_lock(&gm_registry_lock);
    gm_server *s = gm_registry_find(name);
    if (s)
        s->refs++;
    pthread_mutex_unlock(&gm_registry_lock);
    if (s)
        return s;

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
    s = calloc(1, sizeof *s);
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
    s->refs = 1;

    pthread_mutex_lock(&gm_registry_lock);
    gm_server *found = gm_registry_find(name); /* another thread may have added it */
    int placed = 0;
    if (found)
        found->refs++;
    for (unsigned i = 0; !found && !placed && i < GM_REGISTRY_MAX; i++)
        if (gm_registry[i] == NULL)
            gm_registry[i] = s, placed = 1;
    pthread_mutex_unlock(&gm_registry_lock);
    if (placed)
        return s;
    pthread_mutex_destroy(&s->lock);
    free(s);
    if (found == NULL)
        snprintf(err, GM_ERRLEN, "more than %d distinct servers in use", GM_REGISTRY_MAX);
    return found;
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
    if (!v6 && strspn(h, "0123456789") == strlen(h)) { /* inet_aton would take "4730" for 0.0.18.122 */
        snprintf(err, GM_ERRLEN, "bad host name '%s' (a number; expected host[:port])", h);
        return NULL;
    }
    snprintf(host, sizeof host, "%s", h);
    return gm_server_lookup(host, port, v6, err);
}

void gm_route_clear(gm_route *route)
{
    for (unsigned i = 0; i < route->n; i++)
        gm_server_unref(route->servers[i]);
    free(route->text);
    free(route->function);
    memset(route, 0, sizeof *route);
}

int gm_servers_parse(const char *list, size_t len, gm_route *route, char *err)
{
    size_t start = 0, textlen = 0, items = 1;
    memset(route, 0, sizeof *route);
    for (size_t i = 0; i < len; i++) /* too long a list costs no lookups */
        items += list[i] == ',';
    if (items > GM_LIST_MAX) {
        snprintf(err, GM_ERRLEN, "more than %d servers in one list", GM_LIST_MAX);
        return GM_ERR;
    }
    for (size_t i = 0; i <= len; i++) {
        if (i < len && list[i] != ',')
            continue;
        gm_server *s = gm_servers_parse_one(list + start, i - start, err);
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
    /* A list for a name no job can carry would only take a slot. */
    if (function && (flen == 0 || flen > GM_FUNCTION_MAX || memchr(function, '\0', flen))) {
        snprintf(err, GM_ERRLEN, "bad function name");
        return GM_ERR;
    }
    gm_route fresh;
    if (gm_servers_parse(list, len, &fresh, err) != GM_OK)
        return GM_ERR;
    if (function && (fresh.function = strndup(function, flen)) == NULL) {
        gm_route_clear(&fresh);
        snprintf(err, GM_ERRLEN, "out of memory");
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
    int full = slot == GM_CONFIG_MAX_ROUTES + 1, ok = !full;
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
            snprintf(err, GM_ERRLEN, "too many per-function server lists (%d at most)", GM_CONFIG_MAX_ROUTES);
        else
            snprintf(err, GM_ERRLEN, "out of memory");
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
        gm_conn_close(c);
    }
    *reused = 0;
    gm_conn *c = gm_conn_open((const struct sockaddr *)&s->addr, s->addrlen, connect_timeout_ms, err);
    if (c)
        c->answered_us = &s->answered_us;
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
    gm_conn_close(evicted);
    if (c)
        gm_conn_close(c);
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

/* mysqld unloads the library when its last function is dropped: close what we hold. No
 * thread runs our code any more then. */
__attribute__((destructor)) static void gm_servers_unload(void)
{
    gm_routes_free(gm_current); /* frees every server that only the lists held */
    gm_current = NULL;
    for (unsigned i = 0; i < GM_REGISTRY_MAX; i++) { /* and any a leaked reference kept */
        if (gm_registry[i])
            gm_server_free(gm_registry[i]);
        gm_registry[i] = NULL;
    }
    if (gm_cfg_ok)
        gm_config_free(&gm_cfg);
}
