/*
 * udf_error.h -- the plugin's last error, per connection, read by gman_last_error().
 *
 * A UDF that fails returns NULL; the server has no channel for the reason. We keep it per
 * connection (where the server tells which; else per thread), so that a
 * trigger can read it with gman_last_error() and SIGNAL it.
 */
#ifndef GMAN_UDF_ERROR_H
#define GMAN_UDF_ERROR_H

#include <stddef.h>

#define UDF_ERROR_SIZE 512

void udf_error_set(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void udf_error_clear(void);
/* The last error of this thread ("" when none), and its length. */
const char *udf_error_get(size_t *len);

/* The per-connection table behind them: owner's error (a nonzero connection id) is
 * replaced by text (cut to UDF_ERROR_SIZE - 1 bytes), or copied with its NUL into
 * out[UDF_ERROR_SIZE] ("" when it has none, or lost it to newer errors of other
 * connections); fetch returns its length. */
void udf_error_store(unsigned long owner, const char *text, size_t len);
size_t udf_error_fetch(unsigned long owner, char *out);

/* Write an _init failure message into the server's buffer (UDF_MESSAGE_SIZE bytes) and
 * return 1, the value _init returns on failure. */
int udf_init_fail(char *message, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
