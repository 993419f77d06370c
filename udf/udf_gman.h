/*
 * udf_gman.h -- what the Gearman SQL functions (udf_gman.c) and their aggregates
 * (udf_gman_agg.c) share: argument checks and a job built from a row's arguments.
 */
#ifndef GMAN_UDF_GMAN_H
#define GMAN_UDF_GMAN_H

#include "gm_client.h"
#include "gm_settings.h"
#include "udf_host.h"

/* _init helpers: 0, or 1 with message filled (the value _init returns). Arguments are
 * coerced to strings, the form a Gearman packet carries; rows are refused. */
int gman_init_args(UDF_ARGS *args, unsigned min, unsigned max, const char *fname, const char *usage,
                   char *message);
/* The settings, checked when the function is prepared: NULL with message filled (and
 * gman_last_error() set) when they cannot be read. */
const gm_config *gman_init_settings(const char *fname, char *message);

/* Fill job from the row's (function, workload [, unique]); GM_ERR + e when it cannot be
 * sent. unique[33] holds a generated id when the row gives none. */
int gman_job_from_args(const gm_config *cfg, UDF_ARGS *args, unsigned type, gm_job *job, char unique[33],
                       gm_error *e);

#endif
