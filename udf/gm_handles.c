/*
 * gm_handles.c -- a small open-addressing set of job handles (see gm_handles.h).
 */
#include "gm_handles.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gm_error.h"
#include "gm_grow.h"

static size_t gm_handles_hash(const char *p, size_t len)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)p[i]) * 1099511628211ull;
    return (size_t)h;
}

/* The slot holding p, or the empty slot where it would go. */
static size_t *gm_handles_find(const gm_handles *h, const char *p, size_t len)
{
    size_t mask = h->nslots - 1, i = gm_handles_hash(p, len) & mask;
    for (;; i = (i + 1) & mask) {
        size_t *s = &h->slot[i];
        if (*s == 0)
            return s;
        const unsigned char *e = (const unsigned char *)h->arena + *s - 1;
        if (e[1] == len && memcmp(e + 2, p, len) == 0)
            return s;
    }
}

static int gm_handles_grow(gm_handles *h)
{
    size_t n = h->nslots ? h->nslots * 2 : 64;
    size_t *slot = calloc(n, sizeof *slot);
    if (slot == NULL)
        return GM_ERR;
    gm_handles old = *h;
    h->slot = slot;
    h->nslots = n;
    for (size_t i = 0; i < old.nslots; i++) {
        if (old.slot[i] == 0)
            continue;
        const unsigned char *e = (const unsigned char *)h->arena + old.slot[i] - 1;
        *gm_handles_find(h, (const char *)e + 2, e[1]) = old.slot[i];
    }
    free(old.slot);
    return GM_OK;
}

int gm_handles_add(gm_handles *h, const char *p, size_t len)
{
    if (len > 255)
        return GM_ERR;
    if ((h->count + 1) * 2 > h->nslots && gm_handles_grow(h) != GM_OK)
        return GM_ERR;
    size_t *s = gm_handles_find(h, p, len);
    if (*s)
        return GM_OK; /* already known */
    if (gm_grow(&h->arena, &h->acap, h->alen + len + 2, 4096, SIZE_MAX / 2) != GM_OK)
        return GM_ERR;
    unsigned char *e = (unsigned char *)h->arena + h->alen;
    e[0] = 0;
    e[1] = (unsigned char)len;
    memcpy(e + 2, p, len);
    *s = h->alen + 1;
    h->alen += len + 2;
    h->count++;
    return GM_OK;
}

int gm_handles_finish(gm_handles *h, const char *p, size_t len)
{
    if (h->nslots == 0 || len > 255)
        return 0;
    size_t *s = gm_handles_find(h, p, len);
    if (*s == 0)
        return 0;
    unsigned char *e = (unsigned char *)h->arena + *s - 1;
    if (e[0])
        return 0;
    e[0] = 1;
    return 1;
}

void gm_handles_free(gm_handles *h)
{
    if (h == NULL)
        return;
    free(h->arena);
    free(h->slot);
    memset(h, 0, sizeof *h);
}
