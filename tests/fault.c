/* fault.c: the --wrap seams of fault.h. Disarmed, every wrapper is a straight call to the real
 * function. Armed, calls of the armed kinds are counted (atomically: the engine has threads)
 * and the n-th one fails once. */
#include "fault.h"

#include <errno.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

void *__real_malloc(size_t n);
void *__real_calloc(size_t a, size_t b);
void *__real_realloc(void *p, size_t n);
char *__real_strdup(const char *s);
char *__real_strndup(const char *s, size_t n);
ssize_t __real_write(int fd, const void *b, size_t n);
ssize_t __real_pwrite(int fd, const void *b, size_t n, off_t off);
int __real_fsync(int fd);
int __real_fdatasync(int fd);
int __real_rename(const char *a, const char *b);

void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t a, size_t b);
void *__wrap_realloc(void *p, size_t n);
char *__wrap_strdup(const char *s);
char *__wrap_strndup(const char *s, size_t n);
ssize_t __wrap_write(int fd, const void *b, size_t n);
ssize_t __wrap_pwrite(int fd, const void *b, size_t n, off_t off);
int __wrap_fsync(int fd);
int __wrap_fdatasync(int fd);
int __wrap_rename(const char *a, const char *b);

static atomic_uint armed;        /* kinds, 0 when disarmed */
static atomic_long calls, target;
static atomic_bool fired;
static int fault_errno;

void fault_arm(unsigned kinds, long nth, int err)
{
    atomic_store(&armed, 0);
    atomic_store(&calls, 0);
    atomic_store(&fired, false);
    atomic_store(&target, nth);
    fault_errno = err;
    atomic_store(&armed, kinds);
}

void fault_disarm(void) { atomic_store(&armed, 0); }
bool fault_fired(void) { return atomic_load(&fired); }
long fault_calls(void) { return atomic_load(&calls); }

/* Does this call of kind k fail? */
static bool hit(unsigned k)
{
    unsigned a = atomic_load_explicit(&armed, memory_order_relaxed);
    if (!(a & k)) return false;
    long c = atomic_fetch_add(&calls, 1) + 1;
    if (c != atomic_load(&target)) return false;
    atomic_store(&fired, true);
    return true;
}

void *__wrap_malloc(size_t n)
{
    if (hit(FAULT_ALLOC)) {
        errno = ENOMEM;
        return NULL;
    }
    return __real_malloc(n);
}

void *__wrap_calloc(size_t a, size_t b)
{
    if (hit(FAULT_ALLOC)) {
        errno = ENOMEM;
        return NULL;
    }
    return __real_calloc(a, b);
}

void *__wrap_realloc(void *p, size_t n)
{
    if (hit(FAULT_ALLOC)) {
        errno = ENOMEM;
        return NULL;
    }
    return __real_realloc(p, n);
}

char *__wrap_strdup(const char *s)
{
    if (hit(FAULT_ALLOC)) {
        errno = ENOMEM;
        return NULL;
    }
    return __real_strdup(s);
}

char *__wrap_strndup(const char *s, size_t n)
{
    if (hit(FAULT_ALLOC)) {
        errno = ENOMEM;
        return NULL;
    }
    return __real_strndup(s, n);
}

/* A failing write returns -1 with the armed errno; a short one writes about half (at least one
 * byte) and returns that count. */
static bool write_fault(size_t n, size_t *part)
{
    *part = n;
    if (!hit(FAULT_WRITE)) return false;
    if ((atomic_load(&armed) & FAULT_SHORT) && n > 1) {
        *part = n / 2;
        return false;
    }
    errno = fault_errno ? fault_errno : EIO;
    return true;
}

ssize_t __wrap_write(int fd, const void *b, size_t n)
{
    size_t part;
    if (write_fault(n, &part)) return -1;
    return __real_write(fd, b, part);
}

ssize_t __wrap_pwrite(int fd, const void *b, size_t n, off_t off)
{
    size_t part;
    if (write_fault(n, &part)) return -1;
    return __real_pwrite(fd, b, part, off);
}

int __wrap_fsync(int fd)
{
    if (hit(FAULT_FSYNC)) {
        errno = fault_errno ? fault_errno : EIO;
        return -1;
    }
    return __real_fsync(fd);
}

int __wrap_fdatasync(int fd)
{
    if (hit(FAULT_FSYNC)) {
        errno = fault_errno ? fault_errno : EIO;
        return -1;
    }
    return __real_fdatasync(fd);
}

int __wrap_rename(const char *a, const char *b)
{
    if (hit(FAULT_RENAME)) {
        errno = fault_errno ? fault_errno : EIO;
        return -1;
    }
    return __real_rename(a, b);
}

/* SQLite's unix VFS: its write system calls, replaced through xSetSystemCall. */
static sqlite3_syscall_ptr real_sq_write, real_sq_pwrite, real_sq_pwrite64;

static ssize_t sq_write(int fd, const void *b, size_t n)
{
    size_t part;
    if (write_fault(n, &part)) return -1;
    return ((ssize_t(*)(int, const void *, size_t))real_sq_write)(fd, b, part);
}

static ssize_t sq_pwrite(int fd, const void *b, size_t n, off_t off)
{
    size_t part;
    if (write_fault(n, &part)) return -1;
    return ((ssize_t(*)(int, const void *, size_t, off_t))real_sq_pwrite)(fd, b, part, off);
}

static ssize_t sq_pwrite64(int fd, const void *b, size_t n, off_t off)
{
    size_t part;
    if (write_fault(n, &part)) return -1;
    return ((ssize_t(*)(int, const void *, size_t, off_t))real_sq_pwrite64)(fd, b, part, off);
}

int fault_sqlite_io(bool on)
{
    sqlite3_vfs *v = sqlite3_vfs_find("unix");
    if (!v || v->iVersion < 3 || !v->xSetSystemCall) return -1;
    if (!real_sq_write) {
        real_sq_write = v->xGetSystemCall(v, "write");
        real_sq_pwrite = v->xGetSystemCall(v, "pwrite");
        real_sq_pwrite64 = v->xGetSystemCall(v, "pwrite64");
    }
    int rc = 0;
    if (real_sq_write)
        rc |= v->xSetSystemCall(v, "write", on ? (sqlite3_syscall_ptr)sq_write : real_sq_write);
    if (real_sq_pwrite)
        rc |= v->xSetSystemCall(v, "pwrite", on ? (sqlite3_syscall_ptr)sq_pwrite : real_sq_pwrite);
    if (real_sq_pwrite64)
        rc |= v->xSetSystemCall(v, "pwrite64",
                                on ? (sqlite3_syscall_ptr)sq_pwrite64 : real_sq_pwrite64);
    return rc ? -1 : 0;
}

/* SQLite's allocator: the counted malloc/realloc/free of this file behind SQLite's
 * sqlite3_mem_methods (a 16-byte header holds the size xSize needs). */
static void *sq_malloc(int n)
{
    if (n <= 0) return NULL;
    size_t *p = malloc((size_t)n + 16);
    if (!p) return NULL;
    p[0] = (size_t)n;
    return (char *)p + 16;
}

static void sq_free(void *p)
{
    if (p) free((char *)p - 16);
}

static void *sq_realloc(void *p, int n)
{
    if (!p) return sq_malloc(n);
    if (n <= 0) return NULL;
    size_t *q = realloc((char *)p - 16, (size_t)n + 16);
    if (!q) return NULL;
    q[0] = (size_t)n;
    return (char *)q + 16;
}

static int sq_size(void *p) { return p ? (int)((size_t *)((char *)p - 16))[0] : 0; }
static int sq_roundup(int n) { return (n + 7) & ~7; }
static int sq_init(void *u) { (void)u; return SQLITE_OK; }
static void sq_shutdown(void *u) { (void)u; }

int fault_sqlite_alloc(bool on)
{
    static sqlite3_mem_methods def;
    static bool have_def;
    static const sqlite3_mem_methods counted = {sq_malloc, sq_free, sq_realloc, sq_size,
                                                sq_roundup, sq_init, sq_shutdown, NULL};
    if (sqlite3_shutdown() != SQLITE_OK) return -1;
    if (!have_def) {
        if (sqlite3_config(SQLITE_CONFIG_GETMALLOC, &def) != SQLITE_OK) return -1;
        have_def = true;
    }
    if (sqlite3_config(SQLITE_CONFIG_MALLOC, on ? &counted : &def) != SQLITE_OK) return -1;
    return sqlite3_initialize() == SQLITE_OK ? 0 : -1;
}
