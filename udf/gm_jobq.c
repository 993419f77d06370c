/*
 * gm_jobq.c -- a queue of encoded Gearman packets (see gm_jobq.h).
 */
#include "gm_jobq.h"

#include <stdlib.h>
#include <string.h>

#include "gm_conn.h" /* gm_now_us */
#include "gm_grow.h"

size_t gm_jobq_packet_len(const char *p)
{
    const unsigned char *h = (const unsigned char *)p + 8;
    return GM_HEADER_SIZE + ((size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3]);
}

static int gm_jobq_room(gm_jobq *q, size_t extra)
{
    if (q->pos > 0 && (q->pos == q->len || q->cap - q->len < extra)) {
        memmove(q->buf, q->buf + q->pos, q->len - q->pos);
        q->len -= q->pos;
        q->pos = 0;
    }
    if (q->cap - q->len >= extra)
        return GM_OK;
    if (extra > SIZE_MAX / 2 - q->len)
        return GM_ERR;
    return gm_grow(&q->buf, &q->cap, q->len + extra, 1024, SIZE_MAX / 2);
}

int gm_jobq_push(gm_jobq *q, const char *p, size_t len)
{
    if (gm_jobq_room(q, len) != GM_OK)
        return GM_ERR;
    memcpy(q->buf + q->len, p, len);
    q->len += len;
    if (q->count++ == 0)
        q->progress_us = gm_now_us();
    return GM_OK;
}

int gm_jobq_append(gm_jobq *dst, gm_jobq *src)
{
    if (src->count == 0)
        return GM_OK;
    if (dst->count == 0) { /* take the buffer as it is */
        gm_jobq tmp = *dst;
        *dst = *src;
        *src = tmp;
        src->pos = src->len = 0;
        src->count = 0;
        return GM_OK;
    }
    size_t n = src->len - src->pos;
    if (gm_jobq_room(dst, n) != GM_OK)
        return GM_ERR;
    memcpy(dst->buf + dst->len, src->buf + src->pos, n);
    dst->len += n;
    dst->count += src->count;
    src->pos = src->len = 0;
    src->count = 0;
    return GM_OK;
}

size_t gm_jobq_front(const gm_jobq *q, const char **p)
{
    if (q->count == 0 || q->len - q->pos < GM_HEADER_SIZE)
        return 0;
    *p = q->buf + q->pos;
    return gm_jobq_packet_len(*p);
}

void gm_jobq_pop(gm_jobq *q)
{
    const char *p;
    size_t n = gm_jobq_front(q, &p);
    if (n == 0)
        return;
    q->pos += n;
    if (--q->count == 0 || q->pos >= q->len)
        q->pos = q->len = 0, q->count = 0;
}

void gm_jobq_free(gm_jobq *q)
{
    if (q == NULL)
        return;
    free(q->buf);
    memset(q, 0, sizeof *q);
}
