/*
 * gm_servers.c -- server registry, connection pools and back-off (see gm_servers.h).
 */
#include "gm_servers.h"

#include "gm_pipe.h"
#include "gm_settings.h"

#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Slots of servers in use (NULL: free). A server leaves its slot when its last
 * reference goes, under this lock, so a lookup never finds a server being freed. */
static pthread_mutex_t gm_registry_lock = PTHREAD_MUTEX_INITIALIZER;
static gm_server *gm_registry[GM_REGISTRY_MAX];

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
static void gm_server_drain(gm_conn *c, size_t max_reply, int64_t deadline)
{
    gm_error e;
    while (gm_pipe_count(c)) { /* each reply is paired (confirmed or refused) by the pipe */
        unsigned nread;
        if (gm_pipe_read(c, max_reply, deadline, NULL, NULL, &nread, &e) != GM_OK)
            return;
    }
}

/* The last reference is gone: s left the registry, nobody can reach it, and every
 * connection of it is idle in the pool (a user of a connection holds a reference). */
static void gm_server_free(gm_server *s)
{
    const gm_config *cfg = gm_settings_loaded(); /* pipelined jobs exist only once it is */
    int64_t deadline = gm_deadline(cfg ? cfg->io_timeout_ms : 0); /* one wait for the whole server */
    for (unsigned i = 0; i < s->n_idle; i++) {
        if (cfg)
            gm_server_drain(s->idle[i], gm_config_max_reply(cfg), deadline);
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

gm_server *gm_server_lookup(const char *host, const char *port, int v6, gm_error *e)
{
    char name[GM_SERVER_NAME];
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
        gm_error_set(e, "cannot resolve '%s': %s", host, rc ? gai_strerror(rc) : "no address");
        return NULL;
    }
    s = calloc(1, sizeof *s);
    if (s == NULL || res->ai_addrlen > sizeof s->addr) {
        freeaddrinfo(res);
        free(s);
        gm_error_set(e, "out of memory");
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
        gm_error_set(e, "more than %d distinct servers in use", GM_REGISTRY_MAX);
    return found;
}

int gm_server_usable(gm_server *s, int64_t now, int backoff_ms)
{
    if (!__atomic_load_n(&s->failing, __ATOMIC_ACQUIRE))
        return 1; /* the common case costs no lock */
    int ok = 0;
    pthread_mutex_lock(&s->lock);
    if (!s->failing)
        ok = 1;
    else if (now >= s->down_until) {
        /* Back-off is over: this caller probes; the others keep skipping meanwhile. */
        s->down_until = now + (int64_t)backoff_ms * 1000;
        ok = 1;
    }
    pthread_mutex_unlock(&s->lock);
    return ok;
}

void gm_server_mark_up(gm_server *s)
{
    if (!__atomic_load_n(&s->failing, __ATOMIC_ACQUIRE))
        return;
    pthread_mutex_lock(&s->lock);
    __atomic_store_n(&s->failing, 0, __ATOMIC_RELEASE);
    s->down_until = 0;
    pthread_mutex_unlock(&s->lock);
}

void gm_server_mark_down(gm_server *s, const char *why, int backoff_ms)
{
    pthread_mutex_lock(&s->lock);
    __atomic_store_n(&s->failing, 1, __ATOMIC_RELEASE);
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

void gm_server_skipped(gm_server *s, int64_t now, gm_error *e)
{
    pthread_mutex_lock(&s->lock);
    int64_t left = (s->down_until - now) / 1000;
    gm_error_set(e, "skipped for %d ms after: %.180s", (int)(left > 0 ? left : 0), s->last_err);
    pthread_mutex_unlock(&s->lock);
}

gm_conn *gm_server_checkout(gm_server *s, int connect_timeout_ms, int clean, int *reused, gm_error *e)
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
    gm_conn *c = gm_conn_open((const struct sockaddr *)&s->addr, s->addrlen, connect_timeout_ms, e);
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

void gm_servers_unload(void)
{
    for (unsigned i = 0; i < GM_REGISTRY_MAX; i++) {
        if (gm_registry[i])
            gm_server_free(gm_registry[i]);
        gm_registry[i] = NULL;
    }
}
