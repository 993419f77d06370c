/*
 * mysql_host.c -- a stand-in for mysqld (MySQL 8.0.19+, or older with -D flags) that loads
 * gman_udf.so and calls its functions the way MySQL's udf_handler does. Built by
 * tests/integration/test_mysql_host.py with `gcc -rdynamic`, so that the library's weak
 * references find the services below in the executable, as they find mysqld's.
 *
 * What it exports, like mysqld: mysql_plugin_registry_acquire/release (a registry that
 * knows one service, mysql_udf_metadata), thd_get_current_thd (C++ name
 * _Z19thd_get_current_thdv) and thd_get_thread_id. What it does not export: MariaDB's
 * _current_thd. Build flags: -DHOST_NO_REGISTRY (MySQL 5.7: no registry at all),
 * -DHOST_NO_THD (a host that does not say which connection runs), -DHOST_EXACT (argument
 * buffers of exactly their length, for AddressSanitizer).
 *
 * The calling sequence (MySQL 8.0 sql/item_func.cc, udf_handler::fix_fields / val_str):
 *   init: args[i] points at the value of a constant argument, NOT NUL-terminated, with
 *         lengths[i] its length; a non-constant argument has args[i] = NULL and lengths[i]
 *         the item's maximum length. initid: maybe_null from the arguments, decimals 31,
 *         max_length the item's, ptr NULL, const_item = every argument constant, extension
 *         -> the return-value record (charset NULL, result type). message: 512 bytes.
 *   row:  args[i]/lengths[i] the row's value (not NUL-terminated), result: 255 bytes,
 *         is_null and error cleared.
 *
 * Protocol: one command a line on stdin, one answer a line on stdout.
 *   conn ID                 the thread now serves connection ID ("none": no THD)
 *   registry on|off|nometa  the registry answers / is absent / lacks mysql_udf_metadata
 *   call NAME RET ROWS ARG...
 *       RET s (string) or i (integer); ROWS: how many times the row function runs;
 *       ARG = C|V : s|i|r|d : NAMEHEX|- : VALUEHEX|null|empty   (C constant, V per row)
 *   answer: "ok key=value ..." (bytes in hex) or "error text".
 */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef char my_bool;
enum Item_result { INVALID_RESULT = -1, STRING_RESULT = 0, REAL_RESULT, INT_RESULT, ROW_RESULT, DECIMAL_RESULT };
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

/* sql/sql_udf.h: what initid->extension and args->extension point at in MySQL 8. */
typedef struct charset_info { const char *csname; } charset_info;
typedef struct Udf_return_value_extension {
    const charset_info *charset_info;
    enum Item_result result_type;
} Udf_return_value_extension;
typedef struct Udf_args_extension {
    const charset_info **charset_info;
} Udf_args_extension;

static const charset_info cs_utf8mb4 = {"utf8mb4"}, cs_binary = {"binary"}, cs_latin1 = {"latin1"};

static const charset_info *host_charset(const char *name)
{
    const charset_info *all[] = {&cs_utf8mb4, &cs_binary, &cs_latin1};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (strcmp(all[i]->csname, name) == 0)
            return all[i];
    return NULL;
}

/* ---- what the host records, for the answers ---- */
static int registry_mode = 1; /* 1 on, 0 off, 2 without mysql_udf_metadata */
static int registries_out, services_out, acquires;
static char last_request[256]; /* "type=value" of the last result_set */
static int last_request_ok;
static UDF_INIT *last_request_initid;

/* ---- the registry (include/mysql/components/services/registry.h) ---- */
typedef struct service_imp *my_h_service;
struct s_mysql_registry {
    int (*acquire)(const char *service_name, my_h_service *out_service);
    int (*acquire_related)(const char *service_name, my_h_service service, my_h_service *out_service);
    int (*release)(my_h_service service);
};
struct s_mysql_mysql_udf_metadata {
    int (*argument_get)(UDF_ARGS *udf_args, const char *extension_type, unsigned int index, void **out_value);
    int (*result_get)(UDF_INIT *udf_init, const char *extension_type, void **out_value);
    int (*argument_set)(UDF_ARGS *udf_args, const char *extension_type, unsigned int index, void *in_value);
    int (*result_set)(UDF_INIT *udf_init, const char *extension_type, void *in_value);
};

static int meta_argument_get(UDF_ARGS *a, const char *t, unsigned int i, void **out)
{
    (void)a, (void)t, (void)i, (void)out;
    return 1;
}
static int meta_result_get(UDF_INIT *u, const char *t, void **out)
{
    (void)u, (void)t, (void)out;
    return 1;
}
static int meta_argument_set(UDF_ARGS *a, const char *t, unsigned int i, void *in)
{
    (void)a, (void)t, (void)i, (void)in;
    return 1;
}

/* mysql_udf_metadata_imp::result_set: a STRING result only, "charset" or "collation". */
static int meta_result_set(UDF_INIT *udf_init, const char *extension_type, void *in_value)
{
    last_request_initid = udf_init;
    snprintf(last_request, sizeof last_request, "%s=%s", extension_type ? extension_type : "(null)",
             in_value ? (const char *)in_value : "(null)");
    last_request_ok = 0;
    if (udf_init == NULL || udf_init->extension == NULL || in_value == NULL)
        return 1;
    Udf_return_value_extension *x = udf_init->extension;
    if (x->result_type != STRING_RESULT || extension_type == NULL || strcmp(extension_type, "charset") != 0)
        return 1;
    const charset_info *cs = host_charset((const char *)in_value);
    if (cs == NULL)
        return 1;
    x->charset_info = cs;
    last_request_ok = 1;
    return 0;
}

static struct s_mysql_mysql_udf_metadata udf_metadata = {meta_argument_get, meta_result_get, meta_argument_set,
                                                          meta_result_set};

static int reg_acquire(const char *name, my_h_service *out)
{
    acquires++;
    if (registry_mode == 1 && name && strcmp(name, "mysql_udf_metadata") == 0) {
        *out = (my_h_service)&udf_metadata;
        services_out++;
        return 0;
    }
    return 1;
}
static int reg_acquire_related(const char *name, my_h_service service, my_h_service *out)
{
    (void)service;
    return reg_acquire(name, out);
}
static int reg_release(my_h_service service)
{
    if (service != (my_h_service)&udf_metadata)
        return 1;
    services_out--;
    return 0;
}
static __attribute__((unused)) struct s_mysql_registry registry = {reg_acquire, reg_acquire_related, reg_release};

#ifndef HOST_NO_REGISTRY
struct s_mysql_registry *mysql_plugin_registry_acquire(void)
{
    if (registry_mode == 0)
        return NULL;
    registries_out++;
    return &registry;
}
int mysql_plugin_registry_release(struct s_mysql_registry *r)
{
    if (r != &registry)
        return 1;
    registries_out--;
    return 0;
}
#endif

/* ---- connections ---- */
typedef struct fake_thd { unsigned long id; } fake_thd;
static fake_thd thds[16];
static fake_thd *current; /* one host thread: which connection it serves now */

#ifndef HOST_NO_THD
void *host_current_thd(void) __asm__("_Z19thd_get_current_thdv");
void *host_current_thd(void) { return current; }
unsigned long thd_get_thread_id(const void *thd) { return ((const fake_thd *)thd)->id; }
#endif

/* ---- calling the functions ---- */
typedef my_bool (*init_fn)(UDF_INIT *, UDF_ARGS *, char *);
typedef void (*deinit_fn)(UDF_INIT *);
typedef char *(*str_fn)(UDF_INIT *, UDF_ARGS *, char *, unsigned long *, char *, char *);
typedef long long (*int_fn)(UDF_INIT *, UDF_ARGS *, char *, char *);

#define MAX_ARGS 32
#define RESULT_SIZE 255
#define GUARD 16

typedef struct arg {
    int constant;
    enum Item_result type;
    char *name;
    size_t name_len;
    char *value; /* NULL: SQL NULL; numbers as their text */
    size_t len;
    unsigned long width; /* the item's max_length: a literal's text, or the column's */
} arg;

static int unhex(const char *h, char **out, size_t *len)
{
    size_t n = strlen(h);
    if (n % 2)
        return -1;
    char *p = malloc(n / 2 + 1);
    if (p == NULL)
        return -1;
    for (size_t i = 0; i < n / 2; i++) {
        unsigned v;
        if (sscanf(h + 2 * i, "%2x", &v) != 1) {
            free(p);
            return -1;
        }
        p[i] = (char)v;
    }
    *out = p;
    *len = n / 2;
    return 0;
}

static void put_hex(const char *key, const char *p, size_t len)
{
    printf(" %s=", key);
    if (p == NULL) {
        printf("null");
        return;
    }
    for (size_t i = 0; i < len; i++)
        printf("%02x", (unsigned char)p[i]);
    if (len == 0)
        printf("\"\"");
}

/* A copy of the bytes that is NOT NUL-terminated: eight '#' follow it (then a NUL, so
 * that a reader that wrongly runs to a NUL shows up as "########" in its output). Built
 * with -DHOST_EXACT (under AddressSanitizer), exactly the bytes: any read past them is
 * reported. */
static char *unterminated(const char *p, size_t len)
{
#ifdef HOST_EXACT
    char *c = malloc(len ? len : 1);
    if (c != NULL)
        memcpy(c, p, len);
    return c;
#else
    char *c = malloc(len + 9);
    if (c == NULL)
        return NULL;
    memcpy(c, p, len);
    memset(c + len, '#', 8);
    c[len + 8] = '\0';
    return c;
#endif
}

static int parse_arg(char *spec, arg *a)
{
    char *kind = strtok(spec, ":"), *type = strtok(NULL, ":"), *name = strtok(NULL, ":"), *value = strtok(NULL, ":");
    if (!kind || !type || !name || !value)
        return -1;
    a->constant = kind[0] == 'C';
    a->type = type[0] == 'i' ? INT_RESULT : type[0] == 'r' ? REAL_RESULT : type[0] == 'd' ? DECIMAL_RESULT : STRING_RESULT;
    if (strcmp(name, "-") == 0) {
        a->name = NULL;
        a->name_len = 0;
    } else if (unhex(name, &a->name, &a->name_len) != 0)
        return -1;
    if (strcmp(value, "null") == 0) {
        a->value = NULL;
        a->len = 0;
    } else if (strcmp(value, "empty") == 0) {
        if ((a->value = malloc(1)) == NULL)
            return -1;
        a->len = 0;
    } else if (unhex(value, &a->value, &a->len) != 0)
        return -1;
    if (a->constant)
        a->width = a->value ? a->len : 0;
    else /* a VARCHAR(255) utf8mb4 column, an INT, a DOUBLE */
        a->width = a->type == STRING_RESULT ? 1020 : a->type == INT_RESULT ? 11 : 23;
    return 0;
}

/* A value as the host hands it for the argument's (possibly coerced) type; ival/rval keep
 * the numbers. NULL for SQL NULL. Numbers keep lengths[i] = the item's max_length, as the
 * server leaves it; strings get their length. */
static char *host_value(const arg *a, enum Item_result as, long long *ival, double *rval, unsigned long *len)
{
    if (a->value == NULL) {
        *len = as == INT_RESULT || as == REAL_RESULT ? a->width : 0;
        return NULL;
    }
    char text[64];
    size_t n = a->len < sizeof text - 1 ? a->len : sizeof text - 1;
    memcpy(text, a->value, n);
    text[n] = '\0';
    switch (as) {
    case INT_RESULT:
        *ival = strtoll(text, NULL, 10);
        *len = a->width;
        return (char *)ival;
    case REAL_RESULT:
        *rval = strtod(text, NULL);
        *len = a->width;
        return (char *)rval;
    default:
        *len = a->len;
        return unterminated(a->value, a->len);
    }
}

static void cmd_call(char *line)
{
    char *name = strtok(line, " "), *ret = strtok(NULL, " "), *rows_s = strtok(NULL, " ");
    if (!name || !ret || !rows_s) {
        printf("error usage\n");
        return;
    }
    char *specs[MAX_ARGS];
    unsigned n = 0;
    char *s;
    while ((s = strtok(NULL, " ")) != NULL && n < MAX_ARGS)
        specs[n++] = s;
    arg a[MAX_ARGS];
    memset(a, 0, sizeof a);
    for (unsigned i = 0; i < n; i++)
        if (parse_arg(specs[i], &a[i]) != 0) {
            printf("error bad argument %u\n", i + 1);
            return;
        }

    void *lib = dlopen(getenv("GMAN_UDF_SO"), RTLD_NOW); /* the same handle every time */
    char sym[160];
    snprintf(sym, sizeof sym, "%s_init", name);
    init_fn init = (init_fn)dlsym(lib, sym);
    snprintf(sym, sizeof sym, "%s_deinit", name);
    deinit_fn deinit = (deinit_fn)dlsym(lib, sym);
    void *main_fn = dlsym(lib, name);
    if (!init || !deinit || !main_fn) {
        printf("error no such function %s\n", name);
        dlclose(lib);
        return;
    }

    enum Item_result types[MAX_ARGS];
    char *argv_[MAX_ARGS];
    unsigned long lengths[MAX_ARGS], attr_len[MAX_ARGS];
    char maybe_null[MAX_ARGS], *attrs[MAX_ARGS];
    long long ivals[MAX_ARGS];
    double rvals[MAX_ARGS];
    const charset_info *arg_cs[MAX_ARGS];
    char *owned[MAX_ARGS] = {0};
    Udf_args_extension args_ext = {arg_cs};
    UDF_ARGS args = {n, types, argv_, lengths, maybe_null, attrs, attr_len, &args_ext};
    int all_const = 1, any_null = 0;
    for (unsigned i = 0; i < n; i++) {
        types[i] = a[i].type;
        maybe_null[i] = a[i].value == NULL || !a[i].constant;
        any_null |= maybe_null[i];
        attrs[i] = a[i].name ? unterminated(a[i].name, a[i].name_len) : NULL;
        attr_len[i] = a[i].name_len;
        arg_cs[i] = a[i].type == STRING_RESULT ? &cs_utf8mb4 : &cs_binary;
        all_const &= a[i].constant;
        if (a[i].constant) {
            argv_[i] = host_value(&a[i], types[i], &ivals[i], &rvals[i], &lengths[i]);
            if (types[i] != INT_RESULT && types[i] != REAL_RESULT)
                owned[i] = argv_[i];
        } else {
            argv_[i] = NULL; /* known only per row; lengths: the maximum */
            lengths[i] = a[i].width;
        }
    }
    Udf_return_value_extension ret_ext = {NULL, ret[0] == 'i' ? INT_RESULT : STRING_RESULT};
    UDF_INIT initid = {(my_bool)any_null, 31, ret[0] == 'i' ? 21 : 16777216, NULL, (my_bool)all_const, &ret_ext};
    char message[512];
    memset(message, 'M', sizeof message);
    message[sizeof message - 1] = '\0';
    last_request[0] = '\0';
    last_request_ok = 0;
    last_request_initid = NULL;

    my_bool rc = init(&initid, &args, message);
    printf("ok init=%d", (int)rc);
    if (rc)
        put_hex("message", message, strnlen(message, sizeof message));
    else {
        /* after init the server passes the coerced types and the row's values */
        int rows = atoi(rows_s);
        for (int r = 0; r < rows; r++) {
            for (unsigned i = 0; i < n; i++) {
                free(owned[i]);
                owned[i] = NULL;
                argv_[i] = host_value(&a[i], types[i], &ivals[i], &rvals[i], &lengths[i]);
                if (types[i] != INT_RESULT && types[i] != REAL_RESULT)
                    owned[i] = argv_[i];
            }
            char is_null = 0, error = 0;
            if (ret[0] == 'i') {
                long long v = ((int_fn)main_fn)(&initid, &args, &is_null, &error);
                if (r == rows - 1)
                    printf(" int=%lld", v);
            } else {
                char result[RESULT_SIZE + GUARD];
                memset(result, 0x5a, sizeof result);
                unsigned long len = 0;
                char *v = ((str_fn)main_fn)(&initid, &args, result, &len, &is_null, &error);
                int guard = 1;
                for (size_t g = RESULT_SIZE; g < sizeof result; g++)
                    guard &= result[g] == 0x5a;
                if (r == rows - 1) {
                    put_hex("value", is_null ? NULL : v, len);
                    printf(" in_result=%d guard=%d", v == result, guard);
                }
            }
            if (r == rows - 1)
                printf(" is_null=%d error=%d", is_null, error);
        }
        deinit(&initid);
    }
    printf(" request=%s request_ok=%d request_initid=%d", last_request[0] ? last_request : "-", last_request_ok,
           last_request_initid == &initid);
    printf(" result_charset=%s", ret_ext.charset_info ? ret_ext.charset_info->csname : "-");
    printf(" acquires=%d registries_out=%d services_out=%d\n", acquires, registries_out, services_out);
    for (unsigned i = 0; i < n; i++) {
        free(owned[i]);
        free(attrs[i]);
        free(a[i].name);
        free(a[i].value);
    }
    dlclose(lib);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s gman_udf.so < commands\n", argv[0]);
        return 2;
    }
    setenv("GMAN_UDF_SO", argv[1], 1);
    void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL); /* as mysqld's udf loader: RTLD_NOW */
    if (lib == NULL) {
        printf("error dlopen: %s\n", dlerror());
        return 1;
    }
    printf("ok loaded\n");
    fflush(stdout);
    for (size_t i = 0; i < sizeof thds / sizeof thds[0]; i++)
        thds[i].id = i;
    current = &thds[1];
    char line[65536];
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\n")] = '\0';
        if (strncmp(line, "conn ", 5) == 0) {
            if (strcmp(line + 5, "none") == 0)
                current = NULL;
            else
                current = &thds[(size_t)atoi(line + 5) % (sizeof thds / sizeof thds[0])];
            printf("ok\n");
        } else if (strncmp(line, "registry ", 9) == 0) {
            registry_mode = strcmp(line + 9, "on") == 0 ? 1 : strcmp(line + 9, "off") == 0 ? 0 : 2;
            printf("ok\n");
        } else if (strncmp(line, "call ", 5) == 0)
            cmd_call(line + 5);
        else
            printf("error unknown command\n");
        fflush(stdout);
    }
    dlclose(lib);
    return 0;
}
