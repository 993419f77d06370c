/*
 * gm_settings.h -- the process's settings, read once (gm_config) on first use, with the
 * server lists they name installed as the first routes (gm_routes.h).
 *
 * Each SQL call asks once and passes the pointer down: the settings never change after
 * they are read, and live until the library is unloaded.
 */
#ifndef GMAN_GM_SETTINGS_H
#define GMAN_GM_SETTINGS_H

#include "gm_config.h"
#include "gm_error.h"

/* The settings; NULL with e set when they could not be read (every call fails then, with
 * the same message). */
const gm_config *gm_settings(gm_error *e);
/* The settings if they were read successfully, else NULL; never reads them. */
const gm_config *gm_settings_loaded(void);

#endif
