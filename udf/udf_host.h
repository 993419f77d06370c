/*
 * udf_host.h -- the loadable-function ABI of MariaDB 10.x/11.x and MySQL 5.7/8.x/9.x,
 * written out so that the plugin builds with no server headers installed.
 *
 * This file and udf_host.c are the only ones that know about the host. The layout it relies on:
 *
 *   enum Item_result    STRING_RESULT=0, REAL_RESULT=1, INT_RESULT=2, ROW_RESULT=3,
 *                       DECIMAL_RESULT=4 (INVALID_RESULT=-1): an int-sized enum in
 *                       every supported server.
 *   UDF_ARGS            arg_count, arg_type[], args[], lengths[], maybe_null[],
 *                       attributes[], attribute_lengths[], extension -- in this order.
 *   UDF_INIT            maybe_null, decimals, max_length, ptr, const_item, extension.
 *   my_bool             `char` in MariaDB and MySQL 5.7, C++ `bool` in MySQL 8+: both are
 *                       one byte on every platform the servers support, so `char` is ABI
 *                       compatible; a function returning my_bool returns 0/1 in AL either way.
 *
 * We never read `extension` ourselves (MySQL 8 keeps charset metadata there, MariaDB
 * nothing); only MySQL's own service reads it, through udf_host_result_utf8mb4(). Servers
 * that lack the field are still compatible: it is the last member and only the host
 * allocates these structs.
 *
 * Entry points (the host looks them up by name with dlsym):
 *   my_bool NAME_init(UDF_INIT *, UDF_ARGS *, char *message)   message: MYSQL_ERRMSG_SIZE
 *   void    NAME_deinit(UDF_INIT *)
 *   char   *NAME(UDF_INIT *, UDF_ARGS *, char *result, unsigned long *length,
 *                char *is_null, char *error)                   result: 255 bytes
 *   long long NAME(UDF_INIT *, UDF_ARGS *, char *is_null, char *error)
 *   void    NAME_clear(UDF_INIT *, char *is_null, char *error)  aggregates
 *   void    NAME_add(UDF_INIT *, UDF_ARGS *, char *is_null, char *error)
 */
#ifndef GMAN_UDF_HOST_H
#define GMAN_UDF_HOST_H

typedef char my_bool;

enum Item_result {
    INVALID_RESULT = -1,
    STRING_RESULT = 0,
    REAL_RESULT,
    INT_RESULT,
    ROW_RESULT,
    DECIMAL_RESULT
};

typedef struct UDF_ARGS {
    unsigned int arg_count;
    enum Item_result *arg_type;
    char **args;
    unsigned long *lengths;
    char *maybe_null;
    char **attributes;
    unsigned long *attribute_lengths;
    void *extension;
} UDF_ARGS;

typedef struct UDF_INIT {
    my_bool maybe_null;
    unsigned int decimals;
    unsigned long max_length;
    char *ptr;
    my_bool const_item;
    void *extension;
} UDF_INIT;

/* The init message buffer is MYSQL_ERRMSG_SIZE (512) in every supported server; the
 * documentation asks for messages under 80 characters, which is what we aim for. */
#define UDF_MESSAGE_SIZE 512
/* The `result` buffer handed to string functions: larger results live in initid->ptr. */
#define UDF_RESULT_SIZE 255

/* Only SQL-visible symbols leave the library: everything else is hidden by
 * -fvisibility=hidden and the linker's export list (udf/exports.map). */
#define UDF_EXPORT __attribute__((visibility("default")))

/* ---- what the host offers at run time (udf/udf_host.c) ----
 * Every server symbol we use is a weak reference, so the library loads (RTLD_NOW) into any
 * host, and each call below does nothing where the server lacks what it needs. */

/* The connection this thread serves now, as a nonzero id; 0 when the host does not tell
 * (MariaDB: _current_thd; MySQL: thd_get_current_thd; both: thd_get_thread_id). */
unsigned long udf_host_session(void);

/* From a STRING function's _init: declare its result utf8mb4 rather than binary. MySQL
 * 5.7+ types every loadable function's string result as binary, which its JSON functions
 * and columns refuse (ERROR 3144); 8.0.19+ lets _init say otherwise through the
 * mysql_udf_metadata service of the registry mysqld exports. MariaDB types them binary too,
 * but its JSON functions and columns take binary strings, and it has no registry.
 * Returns 1 when the server took the declaration, 0 when there was nothing to ask. */
int udf_host_result_utf8mb4(UDF_INIT *initid);

#endif
