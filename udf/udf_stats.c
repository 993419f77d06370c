/*
 * udf_stats.c -- gman_stats(): the plugin's pipeline counters.
 *
 *   gman_stats()  -> STRING  a JSON object of process-wide counters since the library was
 *                            loaded: {"jobs", "sent", "confirmed", "refused", "rescued", "lost",
 *                            "abandoned", "timeouts"} (see gm_stats.h and the README)
 */
#include <string.h>

#include "gm_stats.h"
#include "udf_host.h"

UDF_EXPORT my_bool gman_stats_init(UDF_INIT *initid, UDF_ARGS *args, char *message)
{
    if (args->arg_count != 0) {
        strcpy(message, "gman_stats: takes no arguments");
        return 1;
    }
    initid->maybe_null = 0;
    initid->const_item = 0; /* changes between calls */
    initid->max_length = UDF_RESULT_SIZE;
    return 0;
}

UDF_EXPORT void gman_stats_deinit(UDF_INIT *initid) { (void)initid; }

UDF_EXPORT char *gman_stats(UDF_INIT *initid, UDF_ARGS *args, char *result, unsigned long *length, char *is_null,
                            char *error)
{
    (void)initid;
    (void)args;
    (void)error;
    gm_stats_json(result, UDF_RESULT_SIZE);
    *is_null = 0;
    *length = strlen(result);
    return result;
}
