/*
 * gm_pick.h -- a function's servers in list order, as every sender walks them: single
 * calls (gm_client.c), pipelined calls (gm_pipeline.c) and streams (gm_stream.c).
 *
 * A server in back-off is skipped (and said so); one that fails is noted and, for a
 * failure of the server rather than a refusal, sits out its back-off. The notes, one
 * "gearmand host:port: why" per server, make the error of a call no server took.
 */
#ifndef GMAN_GM_PICK_H
#define GMAN_GM_PICK_H

#include <stddef.h>
#include <stdint.h>

#include "gm_config.h"
#include "gm_error.h"
#include "gm_routes.h"

typedef struct gm_pick {
    const gm_config *cfg;
    gm_routes *routes;  /* the snapshot walked (a reference held until gm_pick_end) */
    const gm_route *rt;
    unsigned next;      /* index of the next server to consider */
    int64_t now;
    gm_error tried;     /* "gearmand h:p: why" for each server skipped or failed, "; "-separated */
} gm_pick;

void gm_pick_begin(gm_pick *pk, const gm_config *cfg, const char *fn, size_t fn_len);
/* The next server not in back-off (the skipped ones are noted), or NULL at the end. */
gm_server *gm_pick_next(gm_pick *pk);
/* s failed with why: noted, and with backoff s sits out its back-off. */
void gm_pick_failed(gm_pick *pk, gm_server *s, const gm_error *why, int backoff);
/* What every server tried said, into e ("no gearmand server configured" when none was).
 * Returns GM_ERR. */
int gm_pick_error(const gm_pick *pk, gm_error *e);
void gm_pick_end(gm_pick *pk); /* releases the snapshot; a zeroed pick is a no-op */

#endif
