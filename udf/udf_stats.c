/*
 * udf_stats.c -- gman_stats(): the plugin's job counters.
 *
 *   gman_stats()  -> STRING  a JSON object of process-wide counters since the library was
 *                            loaded: {"jobs", "sent", "confirmed", "refused", "rescued", "lost",
 *                            "abandoned", "timeouts", "no_handle", "protocol_errors"} (see
 *                            gm_stats.h and the README)
 */
#include <stdlib.h>
#include <string.h>

#include "gm_stats.h"
#include "udf_host.h"

UDF_EXPORT my_bool gman_stats_init(UDF_INIT *initid, UDF_ARGS *args, char *message)
{
    if (args->arg_count != 0) {
        strcpy(message, "gman_stats: takes no arguments");
        return 1;
    }
    /* Every counter at its largest does not fit the server's 255-byte result buffer. */
    if ((initid->ptr = malloc(GM_STATS_JSON_MAX)) == NULL) {
        strcpy(message, "gman_stats: out of memory");
        return 1;
    }
    initid->maybe_null = 0;
    initid->const_item = 0; /* changes between calls */
    initid->max_length = GM_STATS_JSON_MAX;
    return 0;
}

UDF_EXPORT void gman_stats_deinit(UDF_INIT *initid)
{
    free(initid->ptr);
    initid->ptr = NULL;
}

UDF_EXPORT char *gman_stats(UDF_INIT *initid, UDF_ARGS *args, char *result, unsigned long *length, char *is_null,
                            char *error)
{
    (void)args;
    (void)result;
    (void)error;
    gm_stats_json(initid->ptr, GM_STATS_JSON_MAX);
    *is_null = 0;
    *length = strlen(initid->ptr);
    return initid->ptr;
}
