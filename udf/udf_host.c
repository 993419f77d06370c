/*
 * udf_host.c -- the server services we use when the host has them (see udf_host.h).
 *
 * MySQL's and MariaDB's own headers are not needed: the few declarations below are the
 * stable C ABI of those services (MySQL include/mysql/components/services/registry.h,
 * udf_metadata.h, service_plugin_registry.h, plugin.h; MariaDB sql_class.h).
 */
#include "udf_host.h"

#include <stddef.h>

/* ---- which connection is this? ---- */

/* MariaDB exports `THD *_current_thd(void)` (C linkage); MySQL exports the C++ function
 * `THD *thd_get_current_thd()`, mangled _Z19thd_get_current_thdv (no arguments, a pointer
 * back: the same call in C). Both export `unsigned long thd_get_thread_id(const THD *)`. */
extern void *_current_thd(void) __attribute__((weak));
extern void *udf_host_mysql_current_thd(void) __asm__("_Z19thd_get_current_thdv") __attribute__((weak));
extern unsigned long thd_get_thread_id(const void *thd) __attribute__((weak));

unsigned long udf_host_session(void)
{
    if (thd_get_thread_id == NULL)
        return 0;
    void *thd = NULL;
    if (_current_thd != NULL)
        thd = _current_thd();
    else if (udf_host_mysql_current_thd != NULL)
        thd = udf_host_mysql_current_thd();
    return thd ? thd_get_thread_id(thd) + 1 : 0; /* + 1: 0 stays "unknown" */
}

/* ---- MySQL's component registry ---- */

/* A service is a struct of function pointers; every method returns 0 on success
 * (mysql_service_status_t is int). Only the leading methods we call are spelled out: the
 * structs are the server's, we never allocate them. */
typedef struct udf_host_service *udf_host_handle; /* my_h_service */

typedef struct udf_host_registry { /* SERVICE_TYPE(registry) */
    int (*acquire)(const char *service_name, udf_host_handle *out);
    int (*acquire_related)(const char *service_name, udf_host_handle service, udf_host_handle *out);
    int (*release)(udf_host_handle service);
} udf_host_registry;

typedef struct udf_host_udf_metadata { /* SERVICE_TYPE(mysql_udf_metadata) */
    int (*argument_get)(UDF_ARGS *args, const char *extension_type, unsigned int index, void **out);
    int (*result_get)(UDF_INIT *initid, const char *extension_type, void **out);
    int (*argument_set)(UDF_ARGS *args, const char *extension_type, unsigned int index, void *in);
    int (*result_set)(UDF_INIT *initid, const char *extension_type, void *in);
} udf_host_udf_metadata;

/* mysqld (8.0+) exports these with C linkage; MariaDB and MySQL 5.7 do not. */
extern udf_host_registry *mysql_plugin_registry_acquire(void) __attribute__((weak));
extern int mysql_plugin_registry_release(udf_host_registry *registry) __attribute__((weak));

int udf_host_result_utf8mb4(UDF_INIT *initid)
{
    /* The service keeps the charset in initid->extension, which the server points at its
     * own record before _init (8.0.19+); without it there is nothing to set. */
    if (mysql_plugin_registry_acquire == NULL || mysql_plugin_registry_release == NULL ||
        initid->extension == NULL)
        return 0;
    udf_host_registry *registry = mysql_plugin_registry_acquire();
    if (registry == NULL)
        return 0;
    int done = 0;
    udf_host_handle h = NULL;
    /* 8.0.0-8.0.18 have the registry but not this service: acquire fails, nothing is set.
     * Acquired per _init, not cached: a reference held past our dlclose would keep a
     * service of a server that shuts down pinned, and the cost is two hash look-ups. */
    if (registry->acquire("mysql_udf_metadata", &h) == 0 && h != NULL) {
        const udf_host_udf_metadata *meta = (const udf_host_udf_metadata *)h;
        static const char charset[] = "utf8mb4";
        /* The method takes void *; the server only reads the name. A refusal (it cannot
         * happen for a STRING function and a compiled-in charset) is already reported by
         * the server in the statement's diagnostics: the result then stays binary. */
        done = meta->result_set(initid, "charset", (void *)charset) == 0;
        registry->release(h);
    }
    mysql_plugin_registry_release(registry);
    return done;
}
