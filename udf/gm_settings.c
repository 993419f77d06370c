/*
 * gm_settings.c -- the settings, read once (see gm_settings.h).
 */
#include "gm_settings.h"

#include "gm_routes.h"

#include <pthread.h>

/* A mutex and an atomic flag rather than pthread_once(), whose symbol version would
 * require glibc 2.34. Everything below is written once, under the lock, before the flag. */
static pthread_mutex_t gm_settings_lock = PTHREAD_MUTEX_INITIALIZER;
static int gm_settings_done;
static int gm_settings_ok;
static gm_config gm_settings_cfg;
static gm_error gm_settings_err;

static void gm_settings_read(void)
{
    gm_config *cfg = &gm_settings_cfg;
    gm_error why;
    if (gm_config_load(cfg, NULL, &why) != GM_OK) {
        gm_error_set(&gm_settings_err, "gman_udf configuration: %s", why.text);
        gm_config_free(cfg);
        return;
    }
    if (gm_routes_init(cfg, &why) != GM_OK) {
        gm_error_set(&gm_settings_err, "gman_udf configuration: %s (%s)", why.text, cfg->source);
        gm_config_free(cfg);
        return;
    }
    gm_settings_ok = 1;
}

const gm_config *gm_settings(gm_error *e)
{
    if (!__atomic_load_n(&gm_settings_done, __ATOMIC_ACQUIRE)) { /* the lock only until it is read */
        pthread_mutex_lock(&gm_settings_lock);
        if (!gm_settings_done) {
            gm_settings_read();
            __atomic_store_n(&gm_settings_done, 1, __ATOMIC_RELEASE);
        }
        pthread_mutex_unlock(&gm_settings_lock);
    }
    if (!gm_settings_ok) {
        *e = gm_settings_err;
        return NULL;
    }
    return &gm_settings_cfg;
}

const gm_config *gm_settings_loaded(void)
{
    return __atomic_load_n(&gm_settings_done, __ATOMIC_ACQUIRE) && gm_settings_ok ? &gm_settings_cfg : NULL;
}

/* mysqld unloads the library when its last function is dropped; the routes' own
 * destructor (gm_routes.c) closes the connections. */
__attribute__((destructor)) static void gm_settings_unload(void)
{
    if (gm_settings_ok)
        gm_config_free(&gm_settings_cfg);
}
