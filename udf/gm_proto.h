/*
 * gm_proto.h -- the Gearman binary protocol (gearman/gearmand PROTOCOL), encode and decode.
 *
 * Pure functions over byte buffers: no sockets, no allocation, no globals. The connection
 * layer (gm_conn.c) sizes a packet, encodes it into its own buffer, writes it, reads bytes
 * and feeds them to gm_proto_decode until a whole packet is there.
 *
 * A packet is a 12-byte header -- magic "\0REQ" or "\0RES", type (uint32 big-endian),
 * data size (uint32 big-endian) -- then the data: the arguments separated by one NUL
 * byte. Every argument but the last is NUL-free; the last one (a workload, a result) may
 * hold any bytes.
 */
#ifndef GMAN_GM_PROTO_H
#define GMAN_GM_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "gm_error.h"

#define GM_NEED_MORE 1 /* beside GM_OK and GM_ERR (gm_error.h) */

#define GM_HEADER_SIZE 12
#define GM_MAX_ARGS 5 /* STATUS_RES has the most: handle, known, running, num, den
                        * (SUBMIT_JOB_SCHED's 8 are not supported: an unknown type) */

enum gm_magic { GM_MAGIC_REQ = 0, GM_MAGIC_RES = 1 };

enum gm_type {
    GM_CAN_DO = 1,
    GM_CANT_DO = 2,
    GM_RESET_ABILITIES = 3,
    GM_PRE_SLEEP = 4,
    GM_NOOP = 6,
    GM_SUBMIT_JOB = 7,
    GM_JOB_CREATED = 8,
    GM_GRAB_JOB = 9,
    GM_NO_JOB = 10,
    GM_JOB_ASSIGN = 11,
    GM_WORK_STATUS = 12,
    GM_WORK_COMPLETE = 13,
    GM_WORK_FAIL = 14,
    GM_GET_STATUS = 15,
    GM_ECHO_REQ = 16,
    GM_ECHO_RES = 17,
    GM_SUBMIT_JOB_BG = 18,
    GM_ERROR = 19,
    GM_STATUS_RES = 20,
    GM_SUBMIT_JOB_HIGH = 21,
    GM_SET_CLIENT_ID = 22,
    GM_CAN_DO_TIMEOUT = 23,
    GM_ALL_YOURS = 24,
    GM_WORK_EXCEPTION = 25,
    GM_OPTION_REQ = 26,
    GM_OPTION_RES = 27,
    GM_WORK_DATA = 28,
    GM_WORK_WARNING = 29,
    GM_GRAB_JOB_UNIQ = 30,
    GM_JOB_ASSIGN_UNIQ = 31,
    GM_SUBMIT_JOB_HIGH_BG = 32,
    GM_SUBMIT_JOB_LOW = 33,
    GM_SUBMIT_JOB_LOW_BG = 34,
    GM_SUBMIT_JOB_SCHED = 35,
    GM_SUBMIT_JOB_EPOCH = 36,
    GM_TYPE_MAX = 36
};

typedef struct gm_slice {
    const char *p;
    size_t len;
} gm_slice;

typedef struct gm_packet {
    int magic;               /* GM_MAGIC_REQ or GM_MAGIC_RES */
    unsigned type;           /* enum gm_type */
    size_t size;             /* data size from the header */
    unsigned nargs;          /* arguments found in the data */
    gm_slice arg[GM_MAX_ARGS]; /* point into the decoded buffer */
} gm_packet;

/* Bytes a packet with these arguments takes on the wire: 12 + sum(len) + (nargs - 1).
 * Returns 0 when it would not fit the 32-bit size field. */
size_t gm_proto_packet_size(const gm_slice *args, unsigned nargs);

/* Write one packet into out[0..cap). Returns the bytes written, or 0 (and *errmsg, a
 * static string; nothing written) when cap is too small, the magic or type is unknown,
 * nargs is not the type's argument count, an argument that is not the last one holds a
 * NUL byte, or the data would not fit the 32-bit size field. */
size_t gm_proto_encode(char *out, size_t cap, enum gm_magic magic, unsigned type,
                       const gm_slice *args, unsigned nargs, const char **errmsg);

/* Decode the packet at the start of buf[0..len).
 *   GM_OK        *pkt filled (slices point into buf), *used = bytes it took.
 *   GM_NEED_MORE not all of it is there yet; *used = the bytes needed in all when the header
 *                is complete, else GM_HEADER_SIZE.
 *   GM_ERR       *errmsg (static string), *used = 0: bad magic, unknown type, data
 *                larger than max_data, data on a type without arguments, or fewer NUL
 *                separators than the type has arguments. Each is reported as soon as
 *                the bytes that decide it are there (a bad magic byte before the rest of
 *                the header), and more bytes never turn an error into anything else.
 * Never reads past buf + len; a packet larger than max_data is refused from its header,
 * so a peer cannot make the caller allocate what it announces. */
int gm_proto_decode(const char *buf, size_t len, size_t max_data, gm_packet *pkt, size_t *used,
                    const char **errmsg);

/* Number of arguments a packet type carries (0 for an unknown type, as for NOOP: tell
 * them apart with the name), and its name ("JOB_CREATED"), or NULL when unknown. */
unsigned gm_proto_arg_count(unsigned type);
const char *gm_proto_type_name(unsigned type);

#endif
