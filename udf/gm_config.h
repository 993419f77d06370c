/*
 * gm_config.h -- the plugin's settings: defaults, file and environment (gm_settings.c reads
 * them once, when the first gman_* function runs).
 *
 * Sources, later ones winning:
 *   1. defaults (the key table in gm_config.c);
 *   2. the file $GMAN_UDF_CONFIG, or else gman_udf.cnf in the directory of gman_udf.so
 *      (the server's plugin_dir): `key = value` lines, '#' comments, [sections] ignored;
 *   3. environment variables of mysqld: GMAN_UDF_<KEY in upper case>, e.g.
 *      GMAN_UDF_SERVERS=10.0.0.5:4730,10.0.0.6 GMAN_UDF_LOCK=1.
 * Keys: servers, servers.<function> (file only), lock, connect_timeout_ms, io_timeout_ms,
 * do_timeout_ms, backoff_ms, max_workload, pipeline_window.
 * Nothing is written back: gman_servers_set() changes the running server only.
 */
#ifndef GMAN_GM_CONFIG_H
#define GMAN_GM_CONFIG_H

#include <stddef.h>

#include "gm_error.h"
#include "gm_limits.h"

#define GM_DEFAULT_SERVERS "127.0.0.1:4730"

typedef struct gm_config_route {
    char *function; /* NULL: the default list */
    char *servers;
} gm_config_route;

typedef struct gm_config {
    int connect_timeout_ms; /* default 200 */
    int io_timeout_ms;      /* default 300: one send or one reply */
    int do_timeout_ms;      /* default 30000: gman_do waiting for a job's result */
    int backoff_ms;         /* default 1000: a failed server is skipped this long */
    size_t max_workload;    /* default 16 MiB: larger workloads and replies are refused */
    int pipeline_window;    /* default 0 (confirmed): unconfirmed background jobs per connection */
    int locked;             /* default 0: 1 refuses gman_servers_set() */
    char source[1024];      /* the file read, or "defaults" */
    unsigned n_routes;
    gm_config_route routes[GM_ROUTES_MAX];
} gm_config;

/* Read the settings. Returns GM_OK, or GM_ERR with e set (a bad value, an unreadable
 * file): the caller reports it on every call rather than running with a guessed setup. */
int gm_config_load(gm_config *cfg, const char *file_path, gm_error *e);
void gm_config_free(gm_config *cfg);

/* The largest reply a connection accepts: a result of max_workload with its handle. */
static inline size_t gm_config_max_reply(const gm_config *cfg) { return cfg->max_workload + GM_REPLY_SLACK; }

/* The directory of the loaded library (for gman_udf.cnf), into out; "" if unknown. */
void gm_config_library_dir(char *out, size_t outlen);

#endif
