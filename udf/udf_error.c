/*
 * udf_error.c -- the last error of each connection, and _init messages (see udf_error.h).
 */
#include "udf_error.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "udf_host.h"

/* The text is formatted into a thread-local buffer, which gman_last_error() reads. */
static __thread char udf_error_text[UDF_ERROR_SIZE];
static __thread size_t udf_error_len;
static __thread unsigned long udf_error_owner;

/* mysqld hands a finished connection's thread to the next one, and a thread pool
 * (thread_handling = pool-of-threads) runs one connection's statements on any of its
 * threads, so a thread-local error alone shows one session another's failure, or loses it
 * at the next statement. Where the server says which connection this thread serves
 * (udf_host_session()), the error is kept per connection in a slot table: a slot names its
 * connection, so two connections sharing a slot can lose an error, never see another's. A
 * host that does not say falls back to the thread. */
#define UDF_ERROR_SLOTS 1024

typedef struct udf_error_slot {
    unsigned long owner; /* udf_host_session() of the text; 0: none */
    size_t len;
    char text[UDF_ERROR_SIZE];
} udf_error_slot;

static udf_error_slot udf_error_slots[UDF_ERROR_SLOTS];
static pthread_mutex_t udf_error_lock = PTHREAD_MUTEX_INITIALIZER;

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
    if (udf_error_owner == 0)
        return;
    udf_error_slot *slot = &udf_error_slots[udf_error_owner % UDF_ERROR_SLOTS];
    pthread_mutex_lock(&udf_error_lock);
    slot->owner = udf_error_owner;
    slot->len = udf_error_len;
    memcpy(slot->text, udf_error_text, udf_error_len);
    pthread_mutex_unlock(&udf_error_lock);
}

void udf_error_clear(void)
{
    udf_error_text[0] = '\0';
    udf_error_len = 0;
}

const char *udf_error_get(size_t *len)
{
    unsigned long session = udf_host_session();
    if (session != 0) { /* this connection's, wherever it was set */
        udf_error_slot *slot = &udf_error_slots[session % UDF_ERROR_SLOTS];
        pthread_mutex_lock(&udf_error_lock);
        udf_error_len = slot->owner == session ? slot->len : 0;
        memcpy(udf_error_text, slot->text, udf_error_len);
        pthread_mutex_unlock(&udf_error_lock);
        udf_error_owner = session;
    } else if (udf_error_owner != 0) { /* a connection's, and this thread cannot tell whose */
        udf_error_clear();
        udf_error_owner = 0;
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
