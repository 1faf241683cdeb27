/* common.h: small helpers every module uses: status codes, error messages, logging through a
 * callback, overflow-checked size arithmetic. Header-only where it is a one-liner.
 *
 * Conventions (STYLE.md): functions return int status (SALA_OK or a negative SALA_E* code) or a
 * pointer-or-NULL; the human-readable reason goes into a sala_err the caller owns. Library code
 * never prints: it logs through sala_log(), whose sink the application chooses. */
#ifndef SALA_COMMON_H
#define SALA_COMMON_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum {
    SALA_OK = 0,
    SALA_EINVAL = -1,   /* bad argument or bad input data (the message says which) */
    SALA_ENOMEM = -2,   /* allocation failed */
    SALA_EIO = -3,      /* read/write/mmap/fsync failed (the message carries errno text) */
    SALA_EFORMAT = -4,  /* a file is malformed */
    SALA_ERANGE = -5,   /* a size overflowed or is out of the allowed range */
    SALA_ENOTFOUND = -6,/* a named thing does not exist */
    SALA_EUNSUP = -7,   /* valid but not supported by this build */
    SALA_EINTERNAL = -8,/* a bug: an internal invariant failed */
    SALA_ECANCEL = -9,  /* the user cancelled */
};

#define SALA_ERR_MAX 1024
typedef struct sala_err {
    int code;
    char msg[SALA_ERR_MAX];
} sala_err;

/* Fill e (may be NULL) with code and a printf-style message; returns code, so that callers can
 * write `return sala_errf(e, SALA_EFORMAT, "%s: ...", path);`. */
int sala_errf(sala_err *e, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Prefix an existing message: "prefix: old message". Returns e->code. */
int sala_err_prefix(sala_err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
const char *sala_status_str(int code);

/* Logging. The default sink writes "sala: <msg>\n" to stderr for warnings and errors and drops
 * debug messages unless SALA_DEBUG is set. The TUI installs its own sink. */
typedef enum { SALA_LOG_DEBUG, SALA_LOG_INFO, SALA_LOG_WARN, SALA_LOG_ERROR } sala_log_level;
typedef void (*sala_log_fn)(sala_log_level lvl, const char *msg, void *ud);
void sala_log_set(sala_log_fn fn, void *ud);
void sala_log(sala_log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Checked arithmetic: return true on overflow (like C23 ckd_*), result stored in *r. */
static inline bool sala_mul_ovf(size_t *r, size_t a, size_t b) { return __builtin_mul_overflow(a, b, r); }
static inline bool sala_add_ovf(size_t *r, size_t a, size_t b) { return __builtin_add_overflow(a, b, r); }
static inline bool sala_mul_ovf_i64(int64_t *r, int64_t a, int64_t b) { return __builtin_mul_overflow(a, b, r); }
static inline bool sala_add_ovf_i64(int64_t *r, int64_t a, int64_t b) { return __builtin_add_overflow(a, b, r); }

/* Always-on invariant check for bugs only, never for input data (STYLE.md). */
void sala_assert_fail(const char *expr, const char *file, int line) __attribute__((noreturn));
#define SALA_ASSERT(x) ((x) ? (void)0 : sala_assert_fail(#x, __FILE__, __LINE__))

#define SALA_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define SALA_MIN(a, b) ((a) < (b) ? (a) : (b))
#define SALA_MAX(a, b) ((a) > (b) ? (a) : (b))

/* Whole-file read into a malloc'ed NUL-terminated buffer, refusing files above max_bytes.
 * On success *out owns the buffer (free() it) and *len is its length without the NUL. */
int sala_file_read(const char *path, size_t max_bytes, char **out, size_t *len, sala_err *e);

/* Monotonic seconds, for progress and benchmarks. */
double sala_now(void);

/* Sets (set) or unsets the environment variables of spec "NAME=VAL,NAME=VAL" (items without '='
 * skipped, the first 255 bytes read): how tests and benchmarks flip the engine's switches. */
void sala_env_spec(const char *spec, bool set);

#define SALA_VERSION "0.1.0"

#endif
