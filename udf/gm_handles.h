/*
 * gm_handles.h -- the job handles of one stream (gman_sum), so that only results for jobs
 * it submitted are counted, each once: a set of byte strings with a "finished" mark.
 */
#ifndef GMAN_GM_HANDLES_H
#define GMAN_GM_HANDLES_H

#include <stddef.h>

typedef struct gm_handles {
    char *arena;   /* entries: [finished: 1 byte][length: 1 byte][handle bytes] */
    size_t alen, acap;
    size_t *slot;  /* open addressing: arena offset + 1, 0 = empty */
    size_t nslots, count;
} gm_handles;

/* Remember a handle (at most 255 bytes). GM_OK, or GM_ERR when out of memory. */
int gm_handles_add(gm_handles *h, const char *p, size_t len);
/* 1 when the handle is one of ours and not finished yet (it is marked finished now), else 0. */
int gm_handles_finish(gm_handles *h, const char *p, size_t len);
void gm_handles_free(gm_handles *h); /* and ready for reuse */

#endif
