/*
 * udf_error.c -- thread-local last error and _init messages (see udf_error.h).
 */
#include "udf_error.h"

#include <stdarg.h>
#include <stdio.h>

#include "udf_host.h"

static __thread char udf_error_text[UDF_ERROR_SIZE];
static __thread size_t udf_error_len;

void udf_error_set(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(udf_error_text, sizeof udf_error_text, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    udf_error_len = (size_t)n < sizeof udf_error_text ? (size_t)n : sizeof udf_error_text - 1;
}

void udf_error_clear(void)
{
    udf_error_text[0] = '\0';
    udf_error_len = 0;
}

const char *udf_error_get(size_t *len)
{
    *len = udf_error_len;
    return udf_error_text;
}

int udf_init_fail(char *message, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, UDF_MESSAGE_SIZE, fmt, ap);
    va_end(ap);
    return 1;
}
