/*
 * gm_jobq.h -- a queue of encoded Gearman packets, oldest first, in one growable buffer:
 * the jobs a connection sent and has not had answered, or the jobs still to send.
 */
#ifndef GMAN_GM_JOBQ_H
#define GMAN_GM_JOBQ_H

#include <stddef.h>
#include <stdint.h>

typedef struct gm_jobq {
    char *buf; /* [pos, len) live */
    size_t pos, len, cap;
    unsigned count;
    int64_t progress_us; /* pending queues: when the oldest job was sent or the last one answered */
} gm_jobq;

/* Add a packet at the end. GM_OK, or GM_ERR when out of memory. */
int gm_jobq_push(gm_jobq *q, const char *p, size_t len);
/* Append src's packets to dst (src emptied). GM_ERR (nothing moved) when out of memory. */
int gm_jobq_append(gm_jobq *dst, gm_jobq *src);
/* The oldest packet: its length (0 when empty) and *p. */
size_t gm_jobq_front(const gm_jobq *q, const char **p);
void gm_jobq_pop(gm_jobq *q);
void gm_jobq_free(gm_jobq *q); /* NULL is a no-op */

/* The size of the encoded packet at p (header + data, read from its header). */
size_t gm_jobq_packet_len(const char *p);

#endif
