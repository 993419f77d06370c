/*
 * json_check.c -- UTF-8 and JSON validation, for values the UDFs copy verbatim (an argument
 * named json_* is embedded as JSON, so it must be one valid JSON value first).
 */
#include "json_buf.h"

size_t json_utf8_seq_len(const unsigned char *p, size_t avail)
{
    unsigned char c = p[0];
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        return avail >= 2 && (p[1] & 0xC0) == 0x80 ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        if (avail < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80)
            return 0;
        if (c == 0xE0 && p[1] < 0xA0) /* overlong */
            return 0;
        if (c == 0xED && p[1] >= 0xA0) /* UTF-16 surrogate */
            return 0;
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (avail < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80)
            return 0;
        if (c == 0xF0 && p[1] < 0x90) /* overlong */
            return 0;
        if (c == 0xF4 && p[1] >= 0x90) /* above U+10FFFF */
            return 0;
        return 4;
    }
    return 0;
}

typedef struct json_cursor {
    const unsigned char *s;
    size_t len;
    size_t i;
} json_cursor;

static void json_check_ws(json_cursor *c)
{
    while (c->i < c->len && (c->s[c->i] == ' ' || c->s[c->i] == '\t' || c->s[c->i] == '\n' || c->s[c->i] == '\r'))
        c->i++;
}

static int json_check_literal(json_cursor *c, const char *word, size_t n)
{
    if (c->len - c->i < n)
        return 0;
    for (size_t k = 0; k < n; k++)
        if (c->s[c->i + k] != (unsigned char)word[k])
            return 0;
    c->i += n;
    return 1;
}

static int json_check_hex(unsigned char h)
{
    return (h >= '0' && h <= '9') || (h >= 'a' && h <= 'f') || (h >= 'A' && h <= 'F');
}

static int json_check_string(json_cursor *c)
{
    c->i++; /* opening quote */
    while (c->i < c->len) {
        unsigned char ch = c->s[c->i];
        if (ch == '"') {
            c->i++;
            return 1;
        }
        if (ch < 0x20)
            return 0;
        if (ch == '\\') {
            if (++c->i >= c->len)
                return 0;
            unsigned char e = c->s[c->i];
            if (e == 'u') {
                if (c->len - c->i < 5)
                    return 0;
                for (int k = 1; k <= 4; k++)
                    if (!json_check_hex(c->s[c->i + k]))
                        return 0;
                c->i += 5;
                continue;
            }
            if (e != '"' && e != '\\' && e != '/' && e != 'b' && e != 'f' && e != 'n' && e != 'r' && e != 't')
                return 0;
            c->i++;
            continue;
        }
        size_t k = json_utf8_seq_len(c->s + c->i, c->len - c->i);
        if (k == 0)
            return 0;
        c->i += k;
    }
    return 0;
}

static int json_check_digits(json_cursor *c)
{
    size_t from = c->i;
    while (c->i < c->len && c->s[c->i] >= '0' && c->s[c->i] <= '9')
        c->i++;
    return c->i > from;
}

static int json_check_number(json_cursor *c)
{
    if (c->s[c->i] == '-')
        c->i++;
    if (c->i < c->len && c->s[c->i] == '0')
        c->i++;
    else if (!json_check_digits(c))
        return 0;
    if (c->i < c->len && c->s[c->i] == '.') {
        c->i++;
        if (!json_check_digits(c))
            return 0;
    }
    if (c->i < c->len && (c->s[c->i] == 'e' || c->s[c->i] == 'E')) {
        c->i++;
        if (c->i < c->len && (c->s[c->i] == '+' || c->s[c->i] == '-'))
            c->i++;
        if (!json_check_digits(c))
            return 0;
    }
    return 1;
}

static int json_check_value(json_cursor *c, int depth)
{
    json_check_ws(c);
    if (c->i >= c->len)
        return 0;
    unsigned char ch = c->s[c->i];
    if (ch == '{' || ch == '[') {
        unsigned char close = ch == '{' ? '}' : ']';
        if (depth >= JSON_MAX_DEPTH)
            return 0;
        c->i++;
        json_check_ws(c);
        if (c->i < c->len && c->s[c->i] == close) {
            c->i++;
            return 1;
        }
        for (;;) {
            if (ch == '{') {
                json_check_ws(c);
                if (c->i >= c->len || c->s[c->i] != '"' || !json_check_string(c))
                    return 0;
                json_check_ws(c);
                if (c->i >= c->len || c->s[c->i] != ':')
                    return 0;
                c->i++;
            }
            if (!json_check_value(c, depth + 1))
                return 0;
            json_check_ws(c);
            if (c->i >= c->len)
                return 0;
            if (c->s[c->i] == close) {
                c->i++;
                return 1;
            }
            if (c->s[c->i] != ',')
                return 0;
            c->i++;
        }
    }
    if (ch == '"')
        return json_check_string(c);
    if (ch == 't')
        return json_check_literal(c, "true", 4);
    if (ch == 'f')
        return json_check_literal(c, "false", 5);
    if (ch == 'n')
        return json_check_literal(c, "null", 4);
    if (ch == '-' || (ch >= '0' && ch <= '9'))
        return json_check_number(c);
    return 0;
}

int json_is_valid(const char *p, size_t len)
{
    json_cursor c = {(const unsigned char *)p, len, 0};
    if (!json_check_value(&c, 0))
        return 0;
    json_check_ws(&c);
    return c.i == len;
}
