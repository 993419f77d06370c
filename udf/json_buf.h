/*
 * json_buf.h -- a growable byte buffer that writes RFC 8259 JSON.
 *
 * Every append either succeeds or leaves the buffer's content as it was and returns
 * GM_ERR with b->err set (out of memory, or the result would pass JSON_BUF_MAX).
 *
 * Bytes policy (json_buf_append_bytes): bytes that are valid UTF-8 become a JSON string;
 * anything else (a latin1 column, a BLOB with 0xff) becomes {"$base64":"<RFC 4648>"}.
 * Both are valid JSON everywhere, and the reader recovers the exact bytes: a string is
 * the UTF-8 encoding of the bytes, an object with the single key "$base64" is the bytes.
 */
#ifndef GMAN_JSON_BUF_H
#define GMAN_JSON_BUF_H

#include <stddef.h>
#include <stdint.h>

#include "gm_error.h" /* GM_OK, GM_ERR */


/* Largest result we build: well above any max_allowed_packet, far below size_t wrap. */
#define JSON_BUF_MAX ((size_t)1 << 30)

enum json_number_kind { JSON_NUMBER_OK = 0, JSON_NUMBER_NOT_FINITE = 1, JSON_NUMBER_INVALID = 2 };

typedef struct json_buf {
    char *p;
    size_t len;
    size_t cap;
    const char *err; /* static string describing the last failure, or NULL */
} json_buf;

void json_buf_init(json_buf *b);
void json_buf_free(json_buf *b); /* releases memory; the buffer may be used again */
static inline void json_buf_reset(json_buf *b) { b->len = 0; b->err = NULL; }

/* Make room for `extra` more bytes. */
int json_buf_reserve(json_buf *b, size_t extra);
int json_buf_append_raw(json_buf *b, const char *p, size_t len);
int json_buf_append_char(json_buf *b, char c);

/* A JSON string of UTF-8 text: quotes, backslash and every control character escaped.
 * GM_ERR with err "invalid UTF-8" (buffer unchanged) when p is not valid UTF-8. */
int json_buf_append_utf8(json_buf *b, const char *p, size_t len);
/* Any bytes, by the bytes policy above. */
int json_buf_append_bytes(json_buf *b, const char *p, size_t len);

int json_buf_append_int64(json_buf *b, int64_t v);
int json_buf_append_uint64(json_buf *b, uint64_t v);
/* At most 17 significant digits (the fewest of 15, 16, 17 that read back as the same
 * double); NaN and +-Inf become null. */
int json_buf_append_double(json_buf *b, double v);

/* Append a number the server rendered as text (an INT, REAL or DECIMAL value coerced to a
 * string), normalised to JSON's grammar: leading zeros dropped ("00005" -> 5), "inf"/"nan"
 * -> null. Returns JSON_NUMBER_OK or JSON_NUMBER_NOT_FINITE (null written) or
 * JSON_NUMBER_INVALID (nothing written: not a number, e.g. the raw bytes of a BIT value),
 * or GM_ERR when the buffer cannot grow. */
int json_buf_append_number_text(json_buf *b, const char *p, size_t len);

/* json_check.c: 1 when p[0..len) is exactly one JSON value (RFC 8259, valid UTF-8,
 * nesting depth <= JSON_MAX_DEPTH), else 0. */
#define JSON_MAX_DEPTH 128 /* recursion inside a mysqld thread stack: keep it small */
int json_is_valid(const char *p, size_t len);
/* Length of the valid UTF-8 sequence at p[0..avail), or 0 when it is not one (overlong,
 * surrogate, above U+10FFFF, truncated). */
size_t json_utf8_seq_len(const unsigned char *p, size_t avail);

#endif
