/*
 * udf_error.c -- thread-local last error and _init messages (see udf_error.h).
 */
#include "udf_error.h"

#include <stdarg.h>
#include <stdio.h>

#include "udf_host.h"

static __thread char udf_error_text[UDF_ERROR_SIZE];
static __thread size_t udf_error_len;
static __thread unsigned long udf_error_owner;

/* mysqld hands a finished connection's thread to the next one, and a thread pool runs
 * many connections on one thread, so a thread-local error alone would show one session
 * another's failure. The error is tagged with the connection the server says this thread
 * serves (udf_host_session(): MariaDB and MySQL both tell); a host that does not say falls
 * back to the thread. */
void udf_error_set(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(udf_error_text, sizeof udf_error_text, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    udf_error_len = (size_t)n < sizeof udf_error_text ? (size_t)n : sizeof udf_error_text - 1;
    udf_error_owner = udf_host_session();
}

void udf_error_clear(void)
{
    udf_error_text[0] = '\0';
    udf_error_len = 0;
}

const char *udf_error_get(size_t *len)
{
    if (udf_error_owner != udf_host_session()) { /* another session's: not ours to see */
        udf_error_clear();
        udf_error_owner = udf_host_session();
    }
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
