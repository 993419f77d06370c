/*
 * udf_error.c -- the last error of each connection, and _init messages (see udf_error.h).
 */
#include "udf_error.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
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
 * (udf_host_session()), the error is kept per connection in a table of slots, each naming
 * its connection: a connection's slot is one of UDF_ERROR_PROBE slots from its hash, so
 * connections whose hashes collide keep their own errors. When all of those are taken, the
 * one written longest ago goes (a connection that ended keeps its slot until then). A host
 * that does not say falls back to the thread. */
#define UDF_ERROR_SLOTS 1024
#define UDF_ERROR_PROBE 16

typedef struct udf_error_slot {
    unsigned long owner; /* udf_host_session() of the text; 0: none */
    uint64_t written;    /* udf_error_clock when it was written: the oldest goes first */
    size_t len;
    char text[UDF_ERROR_SIZE];
} udf_error_slot;

static udf_error_slot udf_error_slots[UDF_ERROR_SLOTS];
static uint64_t udf_error_clock; /* guarded by udf_error_lock, as the slots */
static pthread_mutex_t udf_error_lock = PTHREAD_MUTEX_INITIALIZER;

/* Under udf_error_lock: owner's slot, or with `take` a slot for it (an empty one, else the
 * oldest of its probe run); NULL when it has none and `take` is 0. */
static udf_error_slot *udf_error_slot_of(unsigned long owner, int take)
{
    /* Connection ids are consecutive: a multiplicative hash spreads them over the table. */
    size_t home = (size_t)((owner * 0x9E3779B97F4A7C15ull) >> 32) % UDF_ERROR_SLOTS;
    udf_error_slot *free_slot = NULL, *oldest = NULL;
    for (size_t i = 0; i < UDF_ERROR_PROBE; i++) {
        udf_error_slot *slot = &udf_error_slots[(home + i) % UDF_ERROR_SLOTS];
        if (slot->owner == owner)
            return slot;
        if (slot->owner == 0 && free_slot == NULL)
            free_slot = slot;
        if (oldest == NULL || slot->written < oldest->written)
            oldest = slot;
    }
    return take ? (free_slot ? free_slot : oldest) : NULL;
}

void udf_error_store(unsigned long owner, const char *text, size_t len)
{
    if (len > UDF_ERROR_SIZE - 1)
        len = UDF_ERROR_SIZE - 1;
    pthread_mutex_lock(&udf_error_lock);
    udf_error_slot *slot = udf_error_slot_of(owner, 1);
    slot->owner = owner;
    slot->written = ++udf_error_clock;
    slot->len = len;
    memcpy(slot->text, text, len);
    pthread_mutex_unlock(&udf_error_lock);
}

size_t udf_error_fetch(unsigned long owner, char *out)
{
    pthread_mutex_lock(&udf_error_lock);
    udf_error_slot *slot = udf_error_slot_of(owner, 0);
    size_t len = slot ? slot->len : 0;
    memcpy(out, slot ? slot->text : "", len);
    out[len] = '\0';
    pthread_mutex_unlock(&udf_error_lock);
    return len;
}

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
    if (udf_error_owner != 0)
        udf_error_store(udf_error_owner, udf_error_text, udf_error_len);
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
        udf_error_len = udf_error_fetch(session, udf_error_text);
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
