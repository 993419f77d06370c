/*
 * gm_error.h -- return codes and the one error type of the Gearman side (hiredis's
 * err/errstr, as a struct).
 *
 * A function that fails returns GM_ERR and describes why in the caller's gm_error; each
 * layer up adds what it knows with gm_error_prefix ("gearmand 127.0.0.1:4730: " before
 * "connect: Connection refused"). The text is always NUL-terminated and cut to fit.
 */
#ifndef GMAN_GM_ERROR_H
#define GMAN_GM_ERROR_H

#define GM_OK 0
#define GM_ERR (-1)

#define GM_ERRLEN 256

typedef struct gm_error {
    char text[GM_ERRLEN]; /* "" when nothing was set */
} gm_error;

/* Replace the text. Both return GM_ERR, so that `return gm_error_set(e, ...)` fails. */
int gm_error_set(gm_error *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Put formatted text in front of the current one (cut at the end when too long). */
int gm_error_prefix(gm_error *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Add an item to a "; "-separated list of failures (one per server tried). */
void gm_error_add(gm_error *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static inline void gm_error_clear(gm_error *e) { e->text[0] = '\0'; }

#endif
