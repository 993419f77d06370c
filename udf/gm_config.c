/*
 * gm_config.c -- defaults, gman_udf.cnf and GMAN_UDF_* environment (see gm_config.h).
 */
#include "gm_config.h"

#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>


/* Every key but the per-function lists: where it goes, its bounds and default. The file
 * and the environment (GMAN_UDF_<KEY>) both take each key listed here. */
enum gm_config_kind { GM_KEY_SERVERS, GM_KEY_INT, GM_KEY_SIZE };

static const struct gm_config_key {
    const char *key;
    enum gm_config_kind kind;
    size_t offset;
    long min, max, dflt;
} gm_config_keys[] = {
    {"servers", GM_KEY_SERVERS, 0, 0, 0, 0},
    {"lock", GM_KEY_INT, offsetof(gm_config, locked), 0, 1, 0},
    {"connect_timeout_ms", GM_KEY_INT, offsetof(gm_config, connect_timeout_ms), 1, 600000, 200},
    {"io_timeout_ms", GM_KEY_INT, offsetof(gm_config, io_timeout_ms), 1, 600000, 300},
    {"do_timeout_ms", GM_KEY_INT, offsetof(gm_config, do_timeout_ms), 1, 86400000, 30000},
    {"backoff_ms", GM_KEY_INT, offsetof(gm_config, backoff_ms), 0, 3600000, 1000},
    {"max_workload", GM_KEY_SIZE, offsetof(gm_config, max_workload), 1, GM_WORKLOAD_LIMIT, (long)GM_WORKLOAD_DEFAULT},
    {"pipeline_window", GM_KEY_INT, offsetof(gm_config, pipeline_window), 0, 65536, 0},
};
#define GM_CONFIG_NKEYS (sizeof gm_config_keys / sizeof gm_config_keys[0])

static void gm_config_store(gm_config *cfg, const struct gm_config_key *k, long v)
{
    if (k->kind == GM_KEY_SIZE)
        *(size_t *)((char *)cfg + k->offset) = (size_t)v;
    else
        *(int *)((char *)cfg + k->offset) = (int)v;
}

static void gm_config_defaults(gm_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < GM_CONFIG_NKEYS; i++)
        if (gm_config_keys[i].kind != GM_KEY_SERVERS)
            gm_config_store(cfg, &gm_config_keys[i], gm_config_keys[i].dflt);
    snprintf(cfg->source, sizeof cfg->source, "defaults");
}

void gm_config_free(gm_config *cfg)
{
    for (unsigned i = 0; i < cfg->n_routes; i++) {
        free(cfg->routes[i].function);
        free(cfg->routes[i].servers);
    }
    cfg->n_routes = 0;
}

static int gm_config_set_route(gm_config *cfg, const char *function, const char *servers, gm_error *e)
{
    unsigned i;
    for (i = 0; i < cfg->n_routes; i++) {
        const char *f = cfg->routes[i].function;
        if ((f == NULL && function == NULL) || (f && function && strcmp(f, function) == 0))
            break;
    }
    if (i == GM_ROUTES_MAX)
        return gm_error_set(e, "more than %d server lists", GM_ROUTES_MAX);
    char *s = strdup(servers), *f = function ? strdup(function) : NULL;
    if (s == NULL || (function && f == NULL)) {
        free(s);
        free(f);
        return gm_error_set(e, "out of memory");
    }
    if (i == cfg->n_routes)
        cfg->n_routes++;
    else {
        free(cfg->routes[i].function);
        free(cfg->routes[i].servers);
    }
    cfg->routes[i].function = f;
    cfg->routes[i].servers = s;
    return GM_OK;
}

/* Apply one key = value. */
static int gm_config_set(gm_config *cfg, const char *key, const char *value, gm_error *e)
{
    if (strncasecmp(key, "servers.", 8) == 0 && key[8])
        return gm_config_set_route(cfg, key + 8, value, e);
    for (size_t i = 0; i < GM_CONFIG_NKEYS; i++) {
        const struct gm_config_key *k = &gm_config_keys[i];
        if (strcasecmp(key, k->key) != 0)
            continue;
        if (k->kind == GM_KEY_SERVERS)
            return gm_config_set_route(cfg, NULL, value, e);
        char *end;
        errno = 0;
        long v = strtol(value, &end, 10);
        while (*end && isspace((unsigned char)*end))
            end++;
        if (errno || end == value || *end || v < k->min || v > k->max)
            return gm_error_set(e, "%s = '%s': expected a whole number from %ld to %ld", key, value, k->min, k->max);
        gm_config_store(cfg, k, v);
        return GM_OK;
    }
    return gm_error_set(e, "unknown setting '%s'", key);
}

static char *gm_config_trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

static int gm_config_read_file(gm_config *cfg, const char *path, int must_exist, gm_error *e)
{
    FILE *f = fopen(path, "re");
    if (f == NULL) {
        if (errno == ENOENT && !must_exist)
            return GM_OK;
        return gm_error_set(e, "%s: %s", path, strerror(errno));
    }
    char line[4096];
    int lineno = 0, rc = GM_OK;
    while (rc == GM_OK && fgets(line, sizeof line, f)) {
        lineno++;
        char *s = gm_config_trim(line);
        if (*s == '\0' || *s == '#' || *s == ';' || *s == '[')
            continue;
        char *eq = strchr(s, '=');
        if (eq == NULL) {
            rc = gm_error_set(e, "expected key = value (%s line %d)", path, lineno);
            break;
        }
        *eq = '\0';
        gm_error why;
        if (gm_config_set(cfg, gm_config_trim(s), gm_config_trim(eq + 1), &why) != GM_OK)
            rc = gm_error_set(e, "%s (%s line %d)", why.text, path, lineno);
    }
    fclose(f);
    if (rc == GM_OK)
        snprintf(cfg->source, sizeof cfg->source, "%s", path);
    return rc;
}

/* The file mapping this function's code: found in /proc/self/maps rather than with dladdr(),
 * which would tie the library to glibc 2.34+ (where libdl moved into libc). */
void gm_config_library_dir(char *out, size_t outlen)
{
    uintptr_t self = (uintptr_t)&gm_config_library_dir;
    char line[4352];
    out[0] = '\0';
    FILE *maps = fopen("/proc/self/maps", "re");
    if (maps == NULL)
        return;
    while (fgets(line, sizeof line, maps)) {
        unsigned long lo, hi;
        int path_at = 0;
        if (sscanf(line, "%lx-%lx %*s %*s %*s %*s %n", &lo, &hi, &path_at) < 2 || path_at == 0)
            continue;
        if (self < lo || self >= hi || line[path_at] != '/')
            continue;
        char *path = line + path_at, *nl = strchr(path, '\n'), *slash;
        if (nl)
            *nl = '\0';
        if ((slash = strrchr(path, '/')) != NULL && (size_t)(slash - path) + 1 <= outlen) {
            memcpy(out, path, (size_t)(slash - path));
            out[slash - path] = '\0';
        }
        break;
    }
    fclose(maps);
}

int gm_config_load(gm_config *cfg, const char *file_path, gm_error *e)
{
    char path[4096];
    gm_config_defaults(cfg);
    const char *explicit_path = file_path ? file_path : getenv("GMAN_UDF_CONFIG");
    if (explicit_path && *explicit_path) {
        snprintf(path, sizeof path, "%s", explicit_path);
        if (gm_config_read_file(cfg, path, 1, e) != GM_OK)
            return GM_ERR;
    } else {
        char dir[4000];
        gm_config_library_dir(dir, sizeof dir);
        if (dir[0]) {
            snprintf(path, sizeof path, "%s/gman_udf.cnf", dir);
            if (gm_config_read_file(cfg, path, 0, e) != GM_OK)
                return GM_ERR;
        }
    }
    /* The environment wins over the file: GMAN_UDF_<KEY>. */
    for (size_t i = 0; i < GM_CONFIG_NKEYS; i++) {
        char name[64] = "GMAN_UDF_";
        size_t n = strlen(name);
        for (const char *k = gm_config_keys[i].key; *k && n + 1 < sizeof name; k++)
            name[n++] = (char)toupper((unsigned char)*k);
        name[n] = '\0';
        const char *v = getenv(name);
        if (v != NULL && gm_config_set(cfg, gm_config_keys[i].key, v, e) != GM_OK)
            return gm_error_prefix(e, "environment %s: ", name);
    }
    return GM_OK;
}
