/*
 * gm_grow.h -- the one growth rule of the plugin's buffers (json_buf, gm_jobq, gm_handles' arena).
 */
#ifndef GMAN_GM_GROW_H
#define GMAN_GM_GROW_H

#include <stdlib.h>

#include "gm_error.h"

/* Make *buf (of *cap bytes, NULL when 0) hold at least `want` bytes: the capacity doubles from
 * `first`, and never passes `max` (>= want). GM_OK, or GM_ERR when want > max or out of memory,
 * with *buf and *cap unchanged. */
static inline int gm_grow(char **buf, size_t *cap, size_t want, size_t first, size_t max)
{
    if (want <= *cap)
        return GM_OK;
    if (want > max)
        return GM_ERR;
    size_t ncap = *cap ? *cap : first;
    while (ncap < want)
        ncap = ncap > max / 2 ? max : ncap * 2;
    char *p = realloc(*buf, ncap);
    if (p == NULL)
        return GM_ERR;
    *buf = p;
    *cap = ncap;
    return GM_OK;
}

#endif
