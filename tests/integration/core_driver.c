/*
 * core_driver.c -- the plugin's JSON and codec core on a table of cases read from stdin,
 * for architectures where the cffi unit tests cannot load the library (aarch64 under
 * qemu-aarch64). tests/integration/test_cross_core.py writes the cases and compares the
 * answers with the expectations of tests/unit/test_json_buf.py and test_gm_proto.py.
 *
 * One case a line, fields separated by spaces, byte strings in hex ("-" for empty):
 *   utf8 HEX | bytes HEX | numtext HEX    -> "rc HEX err"   (what was appended, err or -)
 *   int64 DEC | uint64 DEC | double BITS  -> "rc HEX err"   (BITS: the IEEE 754 bits in hex)
 *   valid HEX                             -> "0" or "1"
 *   seqlen HEX                            -> "n"
 *   encode MAGIC TYPE CAP HEX...          -> "n HEX" or "0 errmsg"
 *   decode MAX HEX                        -> "rc used magic type size nargs HEX..." or "rc used errmsg"
 *   argc TYPE                             -> "n name"   (name "-" when unknown)
 * Each append goes into a buffer already holding "[0,", so an overwrite shows.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gm_proto.h"
#include "json_buf.h"

#define PREFIX "[0,"

/* Not sscanf("%2x"): it measures the whole rest of the line each call (quadratic on MiB). */
static int nibble(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static unsigned char *unhex(const char *s, size_t *len)
{
    size_t n = strcmp(s, "-") == 0 ? 0 : strlen(s) / 2;
    unsigned char *p = malloc(n ? n : 1);
    if (!p)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        int hi = nibble(s[2 * i]), lo = nibble(s[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            free(p);
            return NULL;
        }
        p[i] = (unsigned char)(hi << 4 | lo);
    }
    *len = n;
    return p;
}

static void put_hex(const char *p, size_t n)
{
    if (n == 0)
        fputs("-", stdout);
    for (size_t i = 0; i < n; i++)
        printf("%02x", (unsigned char)p[i]);
}

static void put_buf(int rc, const json_buf *b)
{
    printf("%d ", rc);
    put_hex(b->p + strlen(PREFIX), b->len - strlen(PREFIX));
    printf(" %s\n", b->err ? b->err : "-");
}

static int json_case(const char *op, char **f, int nf)
{
    json_buf b;
    size_t n = 0;
    unsigned char *d = NULL;
    int rc;
    if (nf != 1)
        return -1;
    json_buf_init(&b);
    if (json_buf_append_raw(&b, PREFIX, strlen(PREFIX)) != GM_OK)
        return -1;
    if (strcmp(op, "int64") == 0) {
        rc = json_buf_append_int64(&b, strtoll(f[0], NULL, 10));
    } else if (strcmp(op, "uint64") == 0) {
        rc = json_buf_append_uint64(&b, strtoull(f[0], NULL, 10));
    } else if (strcmp(op, "double") == 0) {
        uint64_t bits = strtoull(f[0], NULL, 16);
        double v;
        memcpy(&v, &bits, sizeof v);
        rc = json_buf_append_double(&b, v);
    } else if ((d = unhex(f[0], &n)) == NULL) {
        json_buf_free(&b);
        return -1;
    } else if (strcmp(op, "utf8") == 0) {
        rc = json_buf_append_utf8(&b, (const char *)d, n);
    } else if (strcmp(op, "bytes") == 0) {
        rc = json_buf_append_bytes(&b, (const char *)d, n);
    } else {
        rc = json_buf_append_number_text(&b, (const char *)d, n);
    }
    put_buf(rc, &b);
    free(d);
    json_buf_free(&b);
    return 0;
}

static int encode_case(char **f, int nf)
{
    gm_slice args[GM_MAX_ARGS + 4];
    unsigned char *keep[GM_MAX_ARGS + 4];
    unsigned nargs = 0;
    int ok = nf >= 3 && nf - 3 <= GM_MAX_ARGS + 4;
    size_t cap = ok ? strtoull(f[2], NULL, 10) : 0;
    char *out = ok ? malloc(cap ? cap : 1) : NULL;
    const char *err = NULL;
    for (int i = 3; out && i < nf; i++, nargs++) {
        keep[nargs] = unhex(f[i], &args[nargs].len);
        args[nargs].p = (const char *)keep[nargs];
        if (!keep[nargs])
            ok = 0;
    }
    if (out && ok) {
        size_t n = gm_proto_encode(out, cap, (enum gm_magic)strtoul(f[0], NULL, 10),
                                   (unsigned)strtoul(f[1], NULL, 10), nargs ? args : NULL, nargs, &err);
        printf("%zu ", n);
        if (n)
            put_hex(out, n);
        else
            fputs(err ? err : "-", stdout);
        putchar('\n');
    }
    for (unsigned i = 0; i < nargs; i++)
        free(keep[i]);
    free(out);
    return out && ok ? 0 : -1;
}

static int decode_case(char **f, int nf)
{
    size_t len = 0, used = 0;
    unsigned char *d;
    gm_packet pkt;
    const char *err = NULL;
    int rc;
    if (nf != 2 || (d = unhex(f[1], &len)) == NULL)
        return -1;
    rc = gm_proto_decode((const char *)d, len, strtoull(f[0], NULL, 10), &pkt, &used, &err);
    printf("%d %zu", rc, used);
    if (rc == GM_OK) {
        printf(" %d %u %zu %u", pkt.magic, pkt.type, pkt.size, pkt.nargs);
        for (unsigned i = 0; i < pkt.nargs; i++) {
            putchar(' ');
            put_hex(pkt.arg[i].p, pkt.arg[i].len);
        }
    } else if (rc == GM_ERR) {
        printf(" %s", err ? err : "-");
    }
    putchar('\n');
    free(d);
    return 0;
}

static int one_case(char **f, int nf)
{
    const char *op = f[0];
    size_t n = 0;
    unsigned char *d;
    if (!strcmp(op, "utf8") || !strcmp(op, "bytes") || !strcmp(op, "numtext") || !strcmp(op, "int64") ||
        !strcmp(op, "uint64") || !strcmp(op, "double"))
        return json_case(op, f + 1, nf - 1);
    if (!strcmp(op, "encode"))
        return encode_case(f + 1, nf - 1);
    if (!strcmp(op, "decode"))
        return decode_case(f + 1, nf - 1);
    if (!strcmp(op, "argc") && nf == 2) {
        unsigned t = (unsigned)strtoul(f[1], NULL, 10);
        const char *name = gm_proto_type_name(t);
        printf("%u %s\n", gm_proto_arg_count(t), name ? name : "-");
        return 0;
    }
    if ((!strcmp(op, "valid") || !strcmp(op, "seqlen")) && nf == 2 && (d = unhex(f[1], &n)) != NULL) {
        if (!strcmp(op, "valid"))
            printf("%d\n", json_is_valid((const char *)d, n));
        else
            printf("%zu\n", json_utf8_seq_len(d, n));
        free(d);
        return 0;
    }
    return -1;
}

int main(void)
{
    /* A case line holds at most a few MiB of hex (the 1 MiB decode case). */
    size_t cap = 16u << 20;
    char *line = malloc(cap);
    int status = 0;
    if (!line)
        return 2;
    while (fgets(line, (int)cap, stdin)) {
        char *f[16];
        int nf = 0;
        for (char *tok = strtok(line, " \n"); tok && nf < 16; tok = strtok(NULL, " \n"))
            f[nf++] = tok;
        if (nf == 0 || one_case(f, nf) != 0) {
            printf("BAD CASE\n");
            status = 1;
        }
    }
    free(line);
    return status;
}
