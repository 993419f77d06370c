/*
 * gm_proto.c -- the Gearman binary protocol codec; the contract is in gm_proto.h.
 *
 * One const table gives, per packet type, its name and how many arguments its data
 * splits into. Encode and decode both go through it, so a type is known to both or to
 * neither, and the data of a known type is always split the same way: the first n-1
 * arguments end at a NUL byte, the last one is the rest of the data.
 *
 * SUBMIT_JOB_SCHED (8 arguments, "not currently used and may be removed" per PROTOCOL)
 * is left out of the table: it does not fit GM_MAX_ARGS and nothing here sends it. The
 * types after SUBMIT_JOB_EPOCH (reduce jobs, *_UNIQUE status, GRAB_JOB_ALL) are not in
 * the enum and are therefore unknown too.
 *
 * Everything the decoder can judge from the header (magic, type, size against the limit,
 * data on a type that carries none) is judged as soon as those bytes are there, so a peer
 * speaking something else is refused before the caller waits for, or allocates, its data.
 */
#include "gm_proto.h"

#include <string.h>

struct gm_proto_type_info {
    unsigned type;
    const char *name;
    unsigned nargs;
};

/* Indexed by type; the name is spelled from the enum so the two cannot drift apart, and
 * -Woverride-init (in -Wextra) rejects a type listed twice. Gaps are unknown types. */
#define GM_PROTO_TYPE(t, n) [GM_##t] = {GM_##t, #t, n}
static const struct gm_proto_type_info gm_proto_types[GM_TYPE_MAX + 1] = {
    GM_PROTO_TYPE(CAN_DO, 1),             /* function */
    GM_PROTO_TYPE(CANT_DO, 1),            /* function */
    GM_PROTO_TYPE(RESET_ABILITIES, 0),
    GM_PROTO_TYPE(PRE_SLEEP, 0),
    GM_PROTO_TYPE(NOOP, 0),
    GM_PROTO_TYPE(SUBMIT_JOB, 3),         /* function, unique, workload */
    GM_PROTO_TYPE(JOB_CREATED, 1),        /* handle */
    GM_PROTO_TYPE(GRAB_JOB, 0),
    GM_PROTO_TYPE(NO_JOB, 0),
    GM_PROTO_TYPE(JOB_ASSIGN, 3),         /* handle, function, workload */
    GM_PROTO_TYPE(WORK_STATUS, 3),        /* handle, numerator, denominator */
    GM_PROTO_TYPE(WORK_COMPLETE, 2),      /* handle, result */
    GM_PROTO_TYPE(WORK_FAIL, 1),          /* handle */
    GM_PROTO_TYPE(GET_STATUS, 1),         /* handle */
    GM_PROTO_TYPE(ECHO_REQ, 1),           /* opaque data */
    GM_PROTO_TYPE(ECHO_RES, 1),           /* opaque data */
    GM_PROTO_TYPE(SUBMIT_JOB_BG, 3),      /* function, unique, workload */
    GM_PROTO_TYPE(ERROR, 2),              /* code, text */
    GM_PROTO_TYPE(STATUS_RES, 5),         /* handle, known, running, numerator, denominator */
    GM_PROTO_TYPE(SUBMIT_JOB_HIGH, 3),    /* function, unique, workload */
    GM_PROTO_TYPE(SET_CLIENT_ID, 1),      /* id */
    GM_PROTO_TYPE(CAN_DO_TIMEOUT, 2),     /* function, timeout */
    GM_PROTO_TYPE(ALL_YOURS, 0),
    GM_PROTO_TYPE(WORK_EXCEPTION, 2),     /* handle, exception */
    GM_PROTO_TYPE(OPTION_REQ, 1),         /* option name */
    GM_PROTO_TYPE(OPTION_RES, 1),         /* option name */
    GM_PROTO_TYPE(WORK_DATA, 2),          /* handle, data */
    GM_PROTO_TYPE(WORK_WARNING, 2),       /* handle, data */
    GM_PROTO_TYPE(GRAB_JOB_UNIQ, 0),
    GM_PROTO_TYPE(JOB_ASSIGN_UNIQ, 4),    /* handle, function, unique, workload */
    GM_PROTO_TYPE(SUBMIT_JOB_HIGH_BG, 3), /* function, unique, workload */
    GM_PROTO_TYPE(SUBMIT_JOB_LOW, 3),     /* function, unique, workload */
    GM_PROTO_TYPE(SUBMIT_JOB_LOW_BG, 3),  /* function, unique, workload */
    GM_PROTO_TYPE(SUBMIT_JOB_EPOCH, 4),   /* function, unique, epoch, workload */
};
#undef GM_PROTO_TYPE

static const unsigned char gm_proto_magic_bytes[2][4] = {
    [GM_MAGIC_REQ] = {'\0', 'R', 'E', 'Q'},
    [GM_MAGIC_RES] = {'\0', 'R', 'E', 'S'},
};

static const struct gm_proto_type_info *gm_proto_type_lookup(unsigned type)
{
    if (type > GM_TYPE_MAX || gm_proto_types[type].name == NULL)
        return NULL;
    return &gm_proto_types[type];
}

static void gm_proto_set_err(const char **errmsg, const char *msg)
{
    if (errmsg)
        *errmsg = msg;
}

static uint32_t gm_proto_get_be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static void gm_proto_put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* Which magic the first `have` bytes (0..4 of them) can still become: GM_MAGIC_REQ,
 * GM_MAGIC_RES, 2 when both still can (fewer than 4 bytes), -1 when neither can. */
static int gm_proto_magic_match(const unsigned char *p, size_t have)
{
    int req = 1, res = 1;
    size_t i;

    if (have > 4)
        have = 4;
    for (i = 0; i < have; i++) {
        req = req && p[i] == gm_proto_magic_bytes[GM_MAGIC_REQ][i];
        res = res && p[i] == gm_proto_magic_bytes[GM_MAGIC_RES][i];
    }
    if (req && res)
        return 2;
    return req ? GM_MAGIC_REQ : res ? GM_MAGIC_RES : -1;
}

size_t gm_proto_packet_size(const gm_slice *args, unsigned nargs)
{
    uint64_t data = 0; /* kept <= UINT32_MAX, so it never wraps */
    unsigned i;

    if (nargs > 0 && args == NULL)
        return 0;
    for (i = 0; i < nargs; i++) {
        if (args[i].len > UINT32_MAX - data)
            return 0;
        data += args[i].len;
    }
    if (nargs > 1) {
        if (nargs - 1 > UINT32_MAX - data)
            return 0;
        data += nargs - 1;
    }
    if (data > SIZE_MAX - GM_HEADER_SIZE) /* only on a 32-bit size_t */
        return 0;
    return (size_t)data + GM_HEADER_SIZE;
}

size_t gm_proto_encode(char *out, size_t cap, enum gm_magic magic, unsigned type,
                       const gm_slice *args, unsigned nargs, const char **errmsg)
{
    const struct gm_proto_type_info *info = gm_proto_type_lookup(type);
    unsigned char *w = (unsigned char *)out;
    size_t size, pos;
    unsigned i;

    if (magic != GM_MAGIC_REQ && magic != GM_MAGIC_RES) {
        gm_proto_set_err(errmsg, "bad magic");
        return 0;
    }
    if (info == NULL) {
        gm_proto_set_err(errmsg, "unknown packet type");
        return 0;
    }
    if (nargs != info->nargs || (nargs > 0 && args == NULL)) {
        gm_proto_set_err(errmsg, "wrong argument count");
        return 0;
    }
    /* Sized before any argument is read, so a wrong length is refused, not scanned. */
    size = gm_proto_packet_size(args, nargs);
    if (size == 0) {
        gm_proto_set_err(errmsg, "packet too large");
        return 0;
    }
    for (i = 0; i < nargs; i++) {
        if (args[i].len > 0 && args[i].p == NULL) {
            gm_proto_set_err(errmsg, "NULL argument");
            return 0;
        }
        if (i + 1 < nargs && args[i].len > 0 && memchr(args[i].p, '\0', args[i].len) != NULL) {
            gm_proto_set_err(errmsg, "NUL byte in argument");
            return 0;
        }
    }
    if (out == NULL || cap < size) {
        gm_proto_set_err(errmsg, "buffer too small");
        return 0;
    }

    memcpy(w, gm_proto_magic_bytes[magic], 4);
    gm_proto_put_be32(w + 4, type);
    gm_proto_put_be32(w + 8, (uint32_t)(size - GM_HEADER_SIZE));
    pos = GM_HEADER_SIZE;
    for (i = 0; i < nargs; i++) {
        if (i > 0)
            w[pos++] = '\0';
        if (args[i].len > 0) {
            memcpy(w + pos, args[i].p, args[i].len);
            pos += args[i].len;
        }
    }
    return pos;
}

int gm_proto_decode(const char *buf, size_t len, size_t max_data, gm_packet *pkt, size_t *used,
                    const char **errmsg)
{
    const unsigned char *h = (const unsigned char *)buf;
    const struct gm_proto_type_info *info = NULL;
    gm_packet out;
    const char *p;
    size_t have, total, rest;
    uint32_t type = 0, size;
    int magic;
    unsigned i;

    if (used)
        *used = 0;
    if (pkt == NULL || used == NULL || (buf == NULL && len > 0)) {
        gm_proto_set_err(errmsg, "invalid argument");
        return GM_ERR;
    }

    have = len < GM_HEADER_SIZE ? len : GM_HEADER_SIZE;
    magic = gm_proto_magic_match(h, have);
    if (magic < 0) {
        gm_proto_set_err(errmsg, "bad magic");
        return GM_ERR;
    }
    if (have >= 8) {
        type = gm_proto_get_be32(h + 4);
        info = gm_proto_type_lookup(type);
        if (info == NULL) {
            gm_proto_set_err(errmsg, "unknown packet type");
            return GM_ERR;
        }
    }
    if (have < GM_HEADER_SIZE) {
        *used = GM_HEADER_SIZE;
        return GM_NEED_MORE;
    }

    size = gm_proto_get_be32(h + 8);
    if (size > max_data) {
        gm_proto_set_err(errmsg, "packet larger than limit");
        return GM_ERR;
    }
    if (info->nargs == 0 && size != 0) {
        gm_proto_set_err(errmsg, "data on a packet without arguments");
        return GM_ERR;
    }
    total = (size_t)size + GM_HEADER_SIZE;
    if (total < GM_HEADER_SIZE) { /* wrapped: only on a 32-bit size_t */
        gm_proto_set_err(errmsg, "packet larger than limit");
        return GM_ERR;
    }
    if (len < total) {
        *used = total;
        return GM_NEED_MORE;
    }

    memset(&out, 0, sizeof out);
    out.magic = magic;
    out.type = type;
    out.size = size;
    out.nargs = info->nargs;
    p = buf + GM_HEADER_SIZE;
    rest = size;
    for (i = 0; i + 1 < info->nargs; i++) {
        const char *nul = memchr(p, '\0', rest);
        if (nul == NULL) {
            gm_proto_set_err(errmsg, "truncated arguments");
            return GM_ERR;
        }
        out.arg[i].p = p;
        out.arg[i].len = (size_t)(nul - p);
        rest -= out.arg[i].len + 1;
        p = nul + 1;
    }
    if (info->nargs > 0) {
        out.arg[info->nargs - 1].p = p;
        out.arg[info->nargs - 1].len = rest;
    }
    *pkt = out;
    *used = total;
    return GM_OK;
}

unsigned gm_proto_arg_count(unsigned type)
{
    const struct gm_proto_type_info *info = gm_proto_type_lookup(type);
    return info ? info->nargs : 0;
}

const char *gm_proto_type_name(unsigned type)
{
    const struct gm_proto_type_info *info = gm_proto_type_lookup(type);
    return info ? info->name : NULL;
}
