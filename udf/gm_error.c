/*
 * gm_error.c -- the error setters (see gm_error.h).
 */
#include "gm_error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int gm_error_set(gm_error *e, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->text, sizeof e->text, fmt, ap);
    va_end(ap);
    return GM_ERR;
}

int gm_error_prefix(gm_error *e, const char *fmt, ...)
{
    char head[GM_ERRLEN];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(head, sizeof head, fmt, ap);
    va_end(ap);
    size_t hlen = n < 0 ? 0 : (size_t)n < sizeof head ? (size_t)n : sizeof head - 1;
    size_t tlen = strlen(e->text);
    if (tlen > sizeof e->text - 1 - hlen)
        tlen = sizeof e->text - 1 - hlen;
    memmove(e->text + hlen, e->text, tlen);
    memcpy(e->text, head, hlen);
    e->text[hlen + tlen] = '\0';
    return GM_ERR;
}

void gm_error_add(gm_error *e, const char *fmt, ...)
{
    size_t used = strlen(e->text);
    if (used >= sizeof e->text - 1)
        return;
    if (used)
        used += (size_t)snprintf(e->text + used, sizeof e->text - used, "; ");
    if (used >= sizeof e->text - 1)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->text + used, sizeof e->text - used, fmt, ap);
    va_end(ap);
}
