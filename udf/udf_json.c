/*
 * udf_json.c -- SQL functions that render their arguments as JSON (lib_mysqludf_json's
 * semantics, always-valid output). Each is also exported as udf_json_*, because
 * MariaDB 10.2+ and MySQL 5.7+ refuse CREATE FUNCTION json_object (a native name).
 *
 *   json_object(expr AS name, ...)      -> {"name":value,...}  key = alias, or the column
 *                                          name of a bare (possibly qualified) column
 *   json_array(expr, ...)               -> [value,...]
 *   json_members(name, value, ...)      -> {"name":value,...}  names computed per row
 *   json_values(expr, ...)              -> value,value,...     an array's body, e.g. for
 *                                          CONCAT('[', GROUP_CONCAT(json_values(x)), ']')
 *
 * Values: SQL NULL -> null; INT, DECIMAL and REAL -> numbers, exactly as the server prints
 * them (we coerce the wide ones to strings in _init: this is the only way to see BIGINT
 * UNSIGNED and DECIMAL(65,30) exactly, and FLOAT as "1.1" rather than 1.100000023841858;
 * integers under 20 characters wide, BIT(n) included, arrive as 64-bit integers);
 * NaN/Inf -> null; everything else -> the bytes policy of json_buf.h (a string when the
 * bytes are UTF-8, else {"$base64":...}). An argument whose name starts with "json_"
 * (case-insensitive) holding one valid JSON value is embedded as is; if it is not valid
 * JSON it is written as a string, so nothing is lost.
 *
 * Any error at row time returns NULL (is_null; not *error, after which the server would
 * skip every later row of the statement) with the reason in gman_last_error().
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "gm_limits.h"
#include "json_buf.h"
#include "udf_error.h"
#include "udf_host.h"

enum json_shape { JSON_SHAPE_OBJECT, JSON_SHAPE_ARRAY, JSON_SHAPE_MEMBERS, JSON_SHAPE_VALUES };
enum json_kind { JSON_KIND_BYTES, JSON_KIND_INT, JSON_KIND_NUMBER, JSON_KIND_JSON };

/* Per-statement state in initid->ptr; inside triggers the server builds it once per row. */
typedef struct json_udf {
    enum json_shape shape;
    const char *fname;
    unsigned nargs;
    unsigned char *kind;  /* nargs entries */
    size_t *key_end;      /* object: end offset of argument i's "key": in keys.p */
    json_buf keys;
    json_buf out;
} json_udf;

static int json_udf_is_ident_byte(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '$' ||
           c >= 0x80;
}

/* The key for json_object's argument, from its alias or column name. A qualified column
 * (NEW.id, t.c) gives its last part. A name that can only be an expression the user did
 * not alias (a call, an operator, a literal) is refused: NULL. */
static const char *json_udf_key(const char *name, size_t len, size_t *key_len)
{
    const unsigned char *s = (const unsigned char *)name;
    size_t last = 0;
    int chain = len > 0;
    *key_len = 0;
    if (name == NULL || len == 0)
        return NULL;
    /* Operators and parentheses only appear in an expression's text, never in the
     * identifiers people alias to; NULL/TRUE/FALSE are literals. */
    static const char expr_bytes[] = "()+*/%=<>!|&^~,";
    if ((len == 4 && (strncasecmp(name, "null", 4) == 0 || strncasecmp(name, "true", 4) == 0)) ||
        (len == 5 && strncasecmp(name, "false", 5) == 0))
        return NULL;
    for (size_t i = 0; i < len; i++) {
        if (s[i] && strchr(expr_bytes, s[i]))
            return NULL;
        if (s[i] == '.' && i > last && i + 1 < len)
            last = i + 1;
        else if (!json_udf_is_ident_byte(s[i]))
            chain = 0;
    }
    if (s[0] == '\'' || s[0] == '"' || s[0] == '@' || s[0] == '-' || s[0] == '+' || (s[0] >= '0' && s[0] <= '9'))
        return NULL;
    if (!chain)
        last = 0;
    *key_len = len - last;
    return name + last;
}

static int json_udf_has_json_prefix(const char *name, size_t len)
{
    static const char prefix[] = "json_";
    if (name == NULL || len < sizeof prefix - 1)
        return 0;
    for (size_t i = 0; i < sizeof prefix - 1; i++) {
        char c = name[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (c != prefix[i])
            return 0;
    }
    return 1;
}

static void json_udf_free(json_udf *st)
{
    if (st == NULL)
        return;
    json_buf_free(&st->keys);
    json_buf_free(&st->out);
    free(st);
}

static my_bool json_udf_init(UDF_INIT *initid, UDF_ARGS *args, char *message, enum json_shape shape,
                             const char *fname)
{
    unsigned n = args->arg_count;
    if (shape == JSON_SHAPE_MEMBERS && (n == 0 || n % 2 != 0))
        return (my_bool)udf_init_fail(message, "%s: takes name, value pairs (got %u arguments)", fname, n);
    if (shape == JSON_SHAPE_VALUES && n == 0)
        return (my_bool)udf_init_fail(message, "%s: takes at least one value", fname);
    /* One allocation for the state and its per-argument arrays. */
    size_t head = sizeof(json_udf) + (sizeof(size_t) - 1);
    head -= head % sizeof(size_t);
    json_udf *st = calloc(1, head + (size_t)n * sizeof(size_t) + n);
    if (st == NULL)
        return (my_bool)udf_init_fail(message, "%s: out of memory", fname);
    st->shape = shape;
    st->fname = fname;
    st->nargs = n;
    st->key_end = (size_t *)((char *)st + head);
    st->kind = (unsigned char *)(st->key_end + n);
    json_buf_init(&st->keys);
    json_buf_init(&st->out);

    for (unsigned i = 0; i < n; i++) {
        const char *name = args->attributes ? args->attributes[i] : NULL;
        size_t name_len = args->attribute_lengths ? args->attribute_lengths[i] : 0;
        switch (args->arg_type[i]) {
        case STRING_RESULT: {
            /* NEW.json_doc counts as json_doc: the prefix is on the unqualified name. */
            size_t kl;
            const char *k = json_udf_key(name, name_len, &kl);
            st->kind[i] = json_udf_has_json_prefix(k ? k : name, k ? kl : name_len) ? JSON_KIND_JSON : JSON_KIND_BYTES;
            break;
        }
        case INT_RESULT:
            /* Up to 19 characters wide the value fits a signed 64-bit integer, and val_int()
             * gives BIT columns as numbers. Wider (BIGINT, maybe UNSIGNED) only the text is
             * exact, so those take the path below. */
            if (args->lengths[i] < 20) {
                st->kind[i] = JSON_KIND_INT;
                break;
            }
            /* fall through */
        case REAL_RESULT:
        case DECIMAL_RESULT:
            st->kind[i] = JSON_KIND_NUMBER;
            args->arg_type[i] = STRING_RESULT; /* the server renders it exactly */
            break;
        default:
            json_udf_free(st);
            return (my_bool)udf_init_fail(message, "%s: argument %u is not a scalar (a row or unknown type)", fname,
                                          i + 1);
        }
        if (shape == JSON_SHAPE_MEMBERS && i % 2 == 0) {
            st->kind[i] = JSON_KIND_BYTES; /* a name: its SQL text, as a string */
            args->arg_type[i] = STRING_RESULT; /* an INT would come as 8 raw bytes */
        }
        if (shape != JSON_SHAPE_OBJECT)
            continue;
        size_t key_len;
        const char *key = json_udf_key(name, name_len, &key_len);
        if (key == NULL) {
            json_udf_free(st);
            return (my_bool)udf_init_fail(message, "%s: argument %u has no name; write expr AS name", fname, i + 1);
        }
        if ((i && json_buf_append_char(&st->keys, ',') != GM_OK) ||
            json_buf_append_utf8(&st->keys, key, key_len) != GM_OK ||
            json_buf_append_char(&st->keys, ':') != GM_OK) {
            json_udf_free(st);
            return (my_bool)udf_init_fail(message, "%s: argument %u: name is not valid UTF-8 or too long", fname,
                                          i + 1);
        }
        st->key_end[i] = st->keys.len;
    }
    initid->ptr = (char *)st;
    initid->maybe_null = 1;
    initid->max_length = GM_RESULT_LENGTH; /* results of any size: a MEDIUMTEXT-or-larger column */
    initid->const_item = 0;
    udf_host_result_utf8mb4(initid); /* MySQL: JSON text, not a binary string */
    return 0;
}

static int json_udf_append_value(json_udf *st, unsigned i, const char *p, size_t len)
{
    json_buf *b = &st->out;
    if (p == NULL)
        return json_buf_append_raw(b, "null", 4);
    switch (st->kind[i]) {
    case JSON_KIND_INT: {
        long long v;
        memcpy(&v, p, sizeof v);
        return json_buf_append_int64(b, v);
    }
    case JSON_KIND_NUMBER: {
        int r = json_buf_append_number_text(b, p, len);
        if (r != JSON_NUMBER_INVALID)
            return r == GM_ERR ? GM_ERR : GM_OK;
        break; /* not a number (the raw bytes of a BIT value): keep the bytes */
    }
    case JSON_KIND_JSON:
        if (json_is_valid(p, len))
            return json_buf_append_raw(b, p, len);
        break;
    default:
        break;
    }
    return json_buf_append_bytes(b, p, len);
}

static char *json_udf_render(UDF_INIT *initid, UDF_ARGS *args, unsigned long *length, char *is_null)
{
    json_udf *st = (json_udf *)initid->ptr;
    json_buf *b = &st->out;
    int ok = GM_OK;
    json_buf_reset(b);
    if (st->shape == JSON_SHAPE_OBJECT || st->shape == JSON_SHAPE_MEMBERS)
        ok = json_buf_append_char(b, '{');
    else if (st->shape == JSON_SHAPE_ARRAY)
        ok = json_buf_append_char(b, '[');
    for (unsigned i = 0; i < st->nargs && ok == GM_OK; i++) {
        const char *p = args->args[i];
        size_t len = args->lengths[i];
        switch (st->shape) {
        case JSON_SHAPE_OBJECT: {
            size_t from = i ? st->key_end[i - 1] : 0;
            ok = json_buf_append_raw(b, st->keys.p + from, st->key_end[i] - from);
            break;
        }
        case JSON_SHAPE_MEMBERS:
            if (i % 2 == 0) {
                if (p == NULL) {
                    udf_error_set("%s: name argument %u is NULL", st->fname, i + 1);
                    *is_null = 1;
                    return NULL;
                }
                if ((i && json_buf_append_char(b, ',') != GM_OK) || json_buf_append_utf8(b, p, len) != GM_OK ||
                    json_buf_append_char(b, ':') != GM_OK) {
                    ok = GM_ERR;
                    break;
                }
                continue;
            }
            break;
        default:
            if (i)
                ok = json_buf_append_char(b, ',');
        }
        if (ok == GM_OK)
            ok = json_udf_append_value(st, i, p, len);
    }
    if (ok == GM_OK && (st->shape == JSON_SHAPE_OBJECT || st->shape == JSON_SHAPE_MEMBERS))
        ok = json_buf_append_char(b, '}');
    else if (ok == GM_OK && st->shape == JSON_SHAPE_ARRAY)
        ok = json_buf_append_char(b, ']');
    if (ok != GM_OK) {
        udf_error_set("%s: %s", st->fname, b->err ? b->err : "cannot render value");
        *is_null = 1; /* not *error: the server would skip the statement's later rows */
        return NULL;
    }
    *is_null = 0;
    *length = b->len;
    return b->p;
}

/* The SQL-visible symbols: every name in both spellings, one shared implementation. */
#define JSON_UDF_DEFINE(sqlname, shape)                                                                  \
    UDF_EXPORT my_bool sqlname##_init(UDF_INIT *initid, UDF_ARGS *args, char *message)                  \
    {                                                                                                    \
        return json_udf_init(initid, args, message, shape, #sqlname);                                   \
    }                                                                                                    \
    UDF_EXPORT void sqlname##_deinit(UDF_INIT *initid)                                                   \
    {                                                                                                    \
        json_udf_free((json_udf *)initid->ptr);                                                          \
        initid->ptr = NULL;                                                                              \
    }                                                                                                    \
    UDF_EXPORT char *sqlname(UDF_INIT *initid, UDF_ARGS *args, char *result, unsigned long *length,     \
                             char *is_null, char *error)                                                 \
    {                                                                                                    \
        (void)result;                                                                                    \
        (void)error;                                                                                     \
        return json_udf_render(initid, args, length, is_null);                                   \
    }

JSON_UDF_DEFINE(json_object, JSON_SHAPE_OBJECT)
JSON_UDF_DEFINE(udf_json_object, JSON_SHAPE_OBJECT)
JSON_UDF_DEFINE(json_array, JSON_SHAPE_ARRAY)
JSON_UDF_DEFINE(udf_json_array, JSON_SHAPE_ARRAY)
JSON_UDF_DEFINE(json_members, JSON_SHAPE_MEMBERS)
JSON_UDF_DEFINE(udf_json_members, JSON_SHAPE_MEMBERS)
JSON_UDF_DEFINE(json_values, JSON_SHAPE_VALUES)
JSON_UDF_DEFINE(udf_json_values, JSON_SHAPE_VALUES)
