/*
 * gm_stats.c -- the process's job counters (see gm_stats.h).
 */
#include "gm_stats.h"

#include <stdio.h>

static uint64_t gm_stats[GM_STAT_COUNT];

/* The JSON names, in the order of enum gm_stat. */
static const char *const gm_stat_names[GM_STAT_COUNT] = {
    "jobs", "sent", "confirmed", "refused", "rescued", "lost", "abandoned", "timeouts", "no_handle", "protocol_errors",
};

void gm_stats_add(gm_stat which, uint64_t n) { __atomic_add_fetch(&gm_stats[which], n, __ATOMIC_RELAXED); }

uint64_t gm_stats_get(gm_stat which) { return __atomic_load_n(&gm_stats[which], __ATOMIC_RELAXED); }

void gm_stats_json(char *out, size_t len)
{
    size_t used = 0;
    for (int i = 0; i < GM_STAT_COUNT && used < len; i++) {
        int n = snprintf(out + used, len - used, "%s\"%s\":%llu", i ? "," : "{", gm_stat_names[i],
                         (unsigned long long)gm_stats_get((gm_stat)i));
        used += n > 0 ? (size_t)n : 0;
    }
    if (used < len)
        snprintf(out + used, len - used, "}");
}
