/*
 * gm_config.c -- defaults, gman_udf.cnf and GMAN_UDF_* environment (see gm_config.h).
 */
#include "gm_config.h"

#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "gm_proto.h"

static void gm_config_defaults(gm_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->connect_timeout_ms = 200;
    cfg->io_timeout_ms = 300;
    cfg->do_timeout_ms = 30000;
    cfg->backoff_ms = 1000;
    cfg->max_workload = (size_t)16 << 20;
    cfg->pipeline_window = 0;
    cfg->locked = 0;
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

static int gm_config_set_route(gm_config *cfg, const char *function, const char *servers, char *err, size_t errlen)
{
    unsigned i;
    for (i = 0; i < cfg->n_routes; i++) {
        const char *f = cfg->routes[i].function;
        if ((f == NULL && function == NULL) || (f && function && strcmp(f, function) == 0))
            break;
    }
    if (i == GM_CONFIG_MAX_ROUTES) {
        snprintf(err, errlen, "more than %d server lists", GM_CONFIG_MAX_ROUTES);
        return GM_ERR;
    }
    char *s = strdup(servers), *f = function ? strdup(function) : NULL;
    if (s == NULL || (function && f == NULL)) {
        free(s);
        free(f);
        snprintf(err, errlen, "out of memory");
        return GM_ERR;
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

static int gm_config_int(const char *key, const char *value, long min, long max, long *out, char *err, size_t errlen)
{
    char *end;
    errno = 0;
    long v = strtol(value, &end, 10);
    while (*end && isspace((unsigned char)*end))
        end++;
    if (errno || end == value || *end || v < min || v > max) {
        snprintf(err, errlen, "%s = '%s': expected a whole number from %ld to %ld", key, value, min, max);
        return GM_ERR;
    }
    *out = v;
    return GM_OK;
}

/* Apply one key = value. */
static int gm_config_set(gm_config *cfg, const char *key, const char *value, char *err, size_t errlen)
{
    long v;
    if (strcasecmp(key, "servers") == 0)
        return gm_config_set_route(cfg, NULL, value, err, errlen);
    if (strncasecmp(key, "servers.", 8) == 0 && key[8])
        return gm_config_set_route(cfg, key + 8, value, err, errlen);
    static const struct {
        const char *key;
        long min, max;
    } ints[] = {
        {"connect_timeout_ms", 1, 600000}, {"io_timeout_ms", 1, 600000}, {"do_timeout_ms", 1, 86400000},
        {"backoff_ms", 0, 3600000},        {"max_workload", 1, 1L << 30}, {"pipeline_window", 0, 65536},
        {"lock", 0, 1},
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        if (strcasecmp(key, ints[i].key) != 0)
            continue;
        if (gm_config_int(key, value, ints[i].min, ints[i].max, &v, err, errlen) != GM_OK)
            return GM_ERR;
        switch (i) {
        case 0: cfg->connect_timeout_ms = (int)v; break;
        case 1: cfg->io_timeout_ms = (int)v; break;
        case 2: cfg->do_timeout_ms = (int)v; break;
        case 3: cfg->backoff_ms = (int)v; break;
        case 4: cfg->max_workload = (size_t)v; break;
        case 5: cfg->pipeline_window = (int)v; break;
        default: cfg->locked = (int)v; break;
        }
        return GM_OK;
    }
    snprintf(err, errlen, "unknown setting '%s'", key);
    return GM_ERR;
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

static int gm_config_read_file(gm_config *cfg, const char *path, int must_exist, char *err, size_t errlen)
{
    FILE *f = fopen(path, "re");
    if (f == NULL) {
        if (errno == ENOENT && !must_exist)
            return GM_OK;
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return GM_ERR;
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
            snprintf(err, errlen, "expected key = value (%s line %d)", path, lineno);
            rc = GM_ERR;
            break;
        }
        *eq = '\0';
        char sub[GM_ERRLEN_CFG];
        if (gm_config_set(cfg, gm_config_trim(s), gm_config_trim(eq + 1), sub, sizeof sub) != GM_OK) {
            snprintf(err, errlen, "%s (%s line %d)", sub, path, lineno);
            rc = GM_ERR;
        }
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

int gm_config_load(gm_config *cfg, const char *file_path, char *err, size_t errlen)
{
    char path[4096];
    gm_config_defaults(cfg);
    const char *explicit_path = file_path ? file_path : getenv("GMAN_UDF_CONFIG");
    if (explicit_path && *explicit_path) {
        snprintf(path, sizeof path, "%s", explicit_path);
        if (gm_config_read_file(cfg, path, 1, err, errlen) != GM_OK)
            return GM_ERR;
    } else {
        char dir[4000];
        gm_config_library_dir(dir, sizeof dir);
        if (dir[0]) {
            snprintf(path, sizeof path, "%s/gman_udf.cnf", dir);
            if (gm_config_read_file(cfg, path, 0, err, errlen) != GM_OK)
                return GM_ERR;
        }
    }
    /* The environment wins over the file: GMAN_UDF_<KEY>. */
    static const char *const keys[] = {"servers", "lock", "connect_timeout_ms", "io_timeout_ms", "do_timeout_ms",
                                       "backoff_ms", "max_workload", "pipeline_window"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        char name[64] = "GMAN_UDF_";
        size_t n = strlen(name);
        for (const char *k = keys[i]; *k && n + 1 < sizeof name; k++)
            name[n++] = (char)toupper((unsigned char)*k);
        name[n] = '\0';
        const char *v = getenv(name);
        if (v == NULL)
            continue;
        char sub[GM_ERRLEN_CFG];
        if (gm_config_set(cfg, keys[i], v, sub, sizeof sub) != GM_OK) {
            snprintf(err, errlen, "environment %s: %s", name, sub);
            return GM_ERR;
        }
    }
    return GM_OK;
}
