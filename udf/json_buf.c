/*
 * json_buf.c -- growable buffer, RFC 8259 string escaping, number formatting.
 * See json_buf.h for the contract and the bytes policy.
 */
#include "json_buf.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gm_grow.h"

static int json_buf_fail(json_buf *b, const char *why)
{
    b->err = why;
    return GM_ERR;
}

void json_buf_init(json_buf *b)
{
    b->p = NULL;
    b->len = 0;
    b->cap = 0;
    b->err = NULL;
}

void json_buf_free(json_buf *b)
{
    if (b == NULL)
        return;
    free(b->p);
    json_buf_init(b);
}

int json_buf_reserve(json_buf *b, size_t extra)
{
    if (extra <= b->cap - b->len)
        return GM_OK;
    if (extra > JSON_BUF_MAX - b->len)
        return json_buf_fail(b, "result larger than 1 GiB");
    if (gm_grow(&b->p, &b->cap, b->len + extra, 256, JSON_BUF_MAX) != GM_OK)
        return json_buf_fail(b, "out of memory");
    return GM_OK;
}

int json_buf_append_raw(json_buf *b, const char *p, size_t len)
{
    if (json_buf_reserve(b, len) != GM_OK)
        return GM_ERR;
    if (len)
        memcpy(b->p + b->len, p, len);
    b->len += len;
    return GM_OK;
}

int json_buf_append_char(json_buf *b, char c)
{
    if (b->len == b->cap && json_buf_reserve(b, 1) != GM_OK)
        return GM_ERR;
    b->p[b->len++] = c;
    return GM_OK;
}

/* The escape for one byte that JSON forbids raw in a string (controls, '"', '\\'). */
static int json_buf_append_escape(json_buf *b, unsigned char c)
{
    static const char hex[] = "0123456789abcdef";
    char e[6] = {'\\', 0, 0, 0, 0, 0};
    size_t n = 2;
    switch (c) {
    case '"': e[1] = '"'; break;
    case '\\': e[1] = '\\'; break;
    case '\b': e[1] = 'b'; break;
    case '\f': e[1] = 'f'; break;
    case '\n': e[1] = 'n'; break;
    case '\r': e[1] = 'r'; break;
    case '\t': e[1] = 't'; break;
    default:
        e[1] = 'u';
        e[2] = '0';
        e[3] = '0';
        e[4] = hex[c >> 4];
        e[5] = hex[c & 15];
        n = 6;
    }
    return json_buf_append_raw(b, e, n);
}

int json_buf_append_utf8(json_buf *b, const char *p, size_t len)
{
    const unsigned char *s = (const unsigned char *)p;
    size_t start = b->len, run = 0, i = 0;
    /* One reservation covers the common case (nothing to escape) in a single pass. */
    if (json_buf_reserve(b, len + 2) != GM_OK)
        return GM_ERR;
    b->p[b->len++] = '"';
    while (i < len) {
        unsigned char c = s[i];
        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
            i++;
            continue;
        }
        if (c >= 0x80) {
            size_t k = json_utf8_seq_len(s + i, len - i);
            if (k == 0) {
                b->len = start;
                return json_buf_fail(b, "invalid UTF-8");
            }
            i += k;
            continue;
        }
        if (json_buf_append_raw(b, p + run, i - run) != GM_OK || json_buf_append_escape(b, c) != GM_OK) {
            b->len = start;
            return GM_ERR;
        }
        run = ++i;
    }
    if (json_buf_append_raw(b, p + run, len - run) != GM_OK || json_buf_append_char(b, '"') != GM_OK) {
        b->len = start;
        return GM_ERR;
    }
    return GM_OK;
}

static int json_buf_append_base64(json_buf *b, const unsigned char *s, size_t len)
{
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    if (len > (JSON_BUF_MAX / 4) * 3)
        return json_buf_fail(b, "result larger than 1 GiB");
    size_t out = (len + 2) / 3 * 4;
    if (json_buf_reserve(b, out) != GM_OK)
        return GM_ERR;
    char *d = b->p + b->len;
    size_t i = 0;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
        *d++ = alphabet[v >> 18];
        *d++ = alphabet[(v >> 12) & 63];
        *d++ = alphabet[(v >> 6) & 63];
        *d++ = alphabet[v & 63];
    }
    if (i < len) {
        uint32_t v = (uint32_t)s[i] << 16 | (i + 1 < len ? (uint32_t)s[i + 1] << 8 : 0);
        *d++ = alphabet[v >> 18];
        *d++ = alphabet[(v >> 12) & 63];
        *d++ = i + 1 < len ? alphabet[(v >> 6) & 63] : '=';
        *d++ = '=';
    }
    b->len += out;
    return GM_OK;
}

int json_buf_append_bytes(json_buf *b, const char *p, size_t len)
{
    size_t start = b->len;
    if (json_buf_append_utf8(b, p, len) == GM_OK)
        return GM_OK;
    if (b->err == NULL || strcmp(b->err, "invalid UTF-8") != 0)
        return GM_ERR;
    b->err = NULL;
    static const char head[] = "{\"$base64\":\"";
    if (json_buf_append_raw(b, head, sizeof head - 1) != GM_OK ||
        json_buf_append_base64(b, (const unsigned char *)p, len) != GM_OK ||
        json_buf_append_raw(b, "\"}", 2) != GM_OK) {
        b->len = start;
        return GM_ERR;
    }
    return GM_OK;
}

int json_buf_append_uint64(json_buf *b, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[sizeof tmp - ++n] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return json_buf_append_raw(b, tmp + sizeof tmp - n, n);
}

int json_buf_append_int64(json_buf *b, int64_t v)
{
    if (v >= 0)
        return json_buf_append_uint64(b, (uint64_t)v);
    size_t start = b->len;
    /* 0 - (uint64_t)v is the magnitude even for INT64_MIN, without signed overflow. */
    if (json_buf_append_char(b, '-') != GM_OK || json_buf_append_uint64(b, 0 - (uint64_t)v) != GM_OK) {
        b->len = start;
        return GM_ERR;
    }
    return GM_OK;
}

int json_buf_append_double(json_buf *b, double v)
{
    if (!isfinite(v))
        return json_buf_append_raw(b, "null", 4);
    char tmp[32];
    int n = 0;
    /* The shortest of 15, 16, 17 significant digits that reads back exactly. */
    for (int prec = 15; prec <= 17; prec++) {
        n = snprintf(tmp, sizeof tmp, "%.*g", prec, v);
        if (prec == 17 || strtod(tmp, NULL) == v)
            break;
    }
    if (n <= 0 || (size_t)n >= sizeof tmp)
        return json_buf_fail(b, "cannot format number");
    /* mysqld may run with a locale whose decimal point is ','. */
    for (int i = 0; i < n; i++)
        if (tmp[i] == ',')
            tmp[i] = '.';
    return json_buf_append_raw(b, tmp, (size_t)n);
}

static int json_is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

static int json_ascii_ieq(const char *p, size_t len, const char *word)
{
    size_t n = strlen(word);
    if (len != n)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (c != word[i])
            return 0;
    }
    return 1;
}

int json_buf_append_number_text(json_buf *b, const char *p, size_t len)
{
    const unsigned char *s = (const unsigned char *)p;
    size_t i = 0, digits_from, lead;
    size_t pos = len && (s[0] == '-' || s[0] == '+') ? 1 : 0;
    if (json_ascii_ieq(p + pos, len - pos, "inf") || json_ascii_ieq(p + pos, len - pos, "infinity") ||
        json_ascii_ieq(p + pos, len - pos, "nan"))
        return json_buf_append_raw(b, "null", 4) == GM_OK ? JSON_NUMBER_NOT_FINITE : GM_ERR;
    if (len && s[0] == '-')
        i = 1;
    digits_from = i;
    while (i < len && json_is_digit(s[i]))
        i++;
    if (i == digits_from)
        return JSON_NUMBER_INVALID;
    /* Drop leading zeros of the integer part (ZEROFILL columns render "00005"). */
    lead = digits_from;
    while (lead + 1 < i && s[lead] == '0')
        lead++;
    if (i < len && s[i] == '.') {
        size_t f = ++i;
        while (i < len && json_is_digit(s[i]))
            i++;
        if (i == f)
            return JSON_NUMBER_INVALID;
    }
    if (i < len && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < len && (s[i] == '+' || s[i] == '-'))
            i++;
        size_t e = i;
        while (i < len && json_is_digit(s[i]))
            i++;
        if (i == e)
            return JSON_NUMBER_INVALID;
    }
    if (i != len)
        return JSON_NUMBER_INVALID;
    size_t start = b->len;
    if ((digits_from && json_buf_append_char(b, '-') != GM_OK) ||
        json_buf_append_raw(b, p + lead, len - lead) != GM_OK) {
        b->len = start;
        return GM_ERR;
    }
    return JSON_NUMBER_OK;
}
