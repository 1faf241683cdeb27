/* common.c: error buffers, the log sink, and whole-file reads shared by all modules. */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int sala_errf(sala_err *e, int code, const char *fmt, ...)
{
    if (e) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
        va_end(ap);
        e->code = code;
    }
    return code;
}

int sala_err_prefix(sala_err *e, const char *fmt, ...)
{
    if (!e) return SALA_EINVAL;
    char old[SALA_ERR_MAX];
    memcpy(old, e->msg, sizeof(old));
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n + 2 < sizeof(e->msg)) {
        size_t k = (size_t)n;
        e->msg[k] = ':';
        e->msg[k + 1] = ' ';
        size_t room = sizeof(e->msg) - k - 2;
        size_t ol = strnlen(old, sizeof(old));
        if (ol >= room) ol = room - 1;
        memcpy(e->msg + k + 2, old, ol);
        e->msg[k + 2 + ol] = 0;
    }
    return e->code;
}

const char *sala_status_str(int code)
{
    switch (code) {
    case SALA_OK: return "ok";
    case SALA_EINVAL: return "invalid input";
    case SALA_ENOMEM: return "out of memory";
    case SALA_EIO: return "I/O error";
    case SALA_EFORMAT: return "malformed file";
    case SALA_ERANGE: return "size out of range";
    case SALA_ENOTFOUND: return "not found";
    case SALA_EUNSUP: return "not supported";
    case SALA_EINTERNAL: return "internal error";
    case SALA_ECANCEL: return "cancelled";
    }
    return "unknown status";
}

static void log_stderr(sala_log_level lvl, const char *msg, void *ud)
{
    (void)ud;
    if (lvl == SALA_LOG_DEBUG && !getenv("SALA_DEBUG")) return;
    const char *tag = lvl == SALA_LOG_WARN ? "warning: " : lvl == SALA_LOG_ERROR ? "error: " : "";
    fprintf(stderr, "sala: %s%s\n", tag, msg);
}

static sala_log_fn log_fn = log_stderr;
static void *log_ud;

void sala_log_set(sala_log_fn fn, void *ud)
{
    log_fn = fn ? fn : log_stderr;
    log_ud = ud;
}

void sala_log(sala_log_level lvl, const char *fmt, ...)
{
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    log_fn(lvl, buf, log_ud);
}

void sala_assert_fail(const char *expr, const char *file, int line)
{
    fprintf(stderr, "sala: internal error: assertion '%s' failed at %s:%d\n", expr, file, line);
    abort();
}

int sala_file_read(const char *path, size_t max_bytes, char **out, size_t *len, sala_err *e)
{
    *out = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return sala_errf(e, SALA_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int err = errno;
        close(fd);
        return sala_errf(e, SALA_EIO, "%s: cannot stat: %s", path, strerror(err));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return sala_errf(e, SALA_EINVAL, "%s: not a regular file", path);
    }
    if ((uint64_t)st.st_size > max_bytes) {
        close(fd);
        return sala_errf(e, SALA_ERANGE, "%s: %lld bytes exceeds the limit of %zu", path,
                         (long long)st.st_size, max_bytes);
    }
    size_t n = (size_t)st.st_size;
    char *buf = malloc(n + 1);
    if (!buf) {
        close(fd);
        return sala_errf(e, SALA_ENOMEM, "%s: out of memory reading %zu bytes", path, n);
    }
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            int err = errno;
            free(buf);
            close(fd);
            return sala_errf(e, SALA_EIO, "%s: read failed: %s", path,
                             r == 0 ? "file shrank while reading" : strerror(err));
        }
        got += (size_t)r;
    }
    close(fd);
    buf[n] = 0;
    *out = buf;
    *len = n;
    return SALA_OK;
}

double sala_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void sala_env_spec(const char *spec, bool set)
{
    char buf[256], *save = NULL;
    snprintf(buf, sizeof(buf), "%s", spec ? spec : "");
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        if (!eq) continue;
        *eq = 0;
        if (set) setenv(tok, eq + 1, 1);
        else unsetenv(tok);
    }
}
