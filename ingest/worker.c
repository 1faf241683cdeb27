/* worker.c: parsers in child processes (see worker.h).
 *
 * Protocol, child -> parent, on one pipe per child: frames of
 *     type (1 byte) | payload length (u32 little-endian) | payload
 * 'M' metadata  key NUL value          'P' page count  decimal text
 * 'S' segment   page, line_first, line_last (3 x i64 LE) | locator NUL | text
 * 'E' error     status (i32 LE) | message
 * 'Z' end       (empty: the child got to the end; without it the output is not trusted)
 * The parent buffers each child's bytes up to the shared output cap, then decodes; any
 * malformed frame rejects the file.
 *
 * Isolation we get in the child, and what we do not:
 *  - resources: RLIMIT_AS (memory bombs fail their malloc; GLib then aborts, which we report),
 *    RLIMIT_CPU (SIGXCPU, then SIGKILL at the hard limit), a wall timeout enforced by the parent
 *    with SIGKILL, and the output cap; RLIMIT_CORE=0 so that crashes leave no core files.
 *  - no network, no programs, no changes to files: a seccomp-BPF filter makes socket,
 *    socketpair, execve, execveat, ptrace, open/openat with any writing or creating flag,
 *    openat2, creat, unlink, rename, mkdir, rmdir, link, symlink, chmod, chown and truncate fail
 *    with EPERM (x86-64 and aarch64 little-endian; on other architectures the child refuses to
 *    run and the file is rejected with that reason). Every inherited descriptor is closed, so
 *    the child holds no socket and no database handle; RLIMIT_FSIZE=0 backs the filter up.
 *    Reading files stays possible (fontconfig needs it), so this is not a confinement against
 *    reading: the parsers are configured never to load anything (xml.c: no DTD, entities or
 *    XInclude; the PDF comes from memory), and the child's only channel out is the pipe.
 * Under AddressSanitizer RLIMIT_AS is not set: the sanitizer reserves terabytes of shadow. */
#include "worker.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define WK_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define WK_ASAN 1
#endif
#endif

#define WK_MAX_SHARDS 16

void wk_limits_default(wk_limits *l)
{
    l->mem_bytes = (size_t)2 << 30;
    l->cpu_s = 120;
    l->wall_s = 300;
    l->out_cap = (size_t)512 << 20;
}

/* ---- child side ---- */

#if defined(__x86_64__)
#define WK_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define WK_AUDIT_ARCH AUDIT_ARCH_AARCH64
#endif

/* Install the seccomp filter described at the top. Returns 0, or -1 when the kernel refused. */
static int child_seccomp(void)
{
#ifdef WK_AUDIT_ARCH
#define ARG_LO(i) (offsetof(struct seccomp_data, args) + 8 * (i)) /* little-endian low word */
#define WRITE_FLAGS (O_WRONLY | O_RDWR | O_CREAT | O_TRUNC | O_APPEND)
#define DENY(nr) BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 1), \
                 BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA))
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, WK_AUDIT_ARCH, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
#if defined(__x86_64__)
        /* x32 system calls have their own numbers: refuse them all. */
        BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000u, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
#endif
        /* openat(dir, path, flags): refuse any flag that writes or creates. */
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_openat, 0, 4),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG_LO(2)),
        BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, WRITE_FLAGS, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
#ifdef __NR_open
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_open, 0, 4),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG_LO(1)),
        BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, WRITE_FLAGS, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
#endif
        DENY(__NR_socket),
        DENY(__NR_socketpair),
        DENY(__NR_execve),
        DENY(__NR_execveat),
        DENY(__NR_ptrace),
        DENY(__NR_openat2),
        DENY(__NR_unlinkat),
        DENY(__NR_renameat),
        DENY(__NR_renameat2),
        DENY(__NR_mkdirat),
        DENY(__NR_linkat),
        DENY(__NR_symlinkat),
        DENY(__NR_fchmodat),
        DENY(__NR_fchownat),
        DENY(__NR_truncate),
#ifdef __NR_creat
        DENY(__NR_creat),
        DENY(__NR_unlink),
        DENY(__NR_rename),
        DENY(__NR_rmdir),
        DENY(__NR_mkdir),
        DENY(__NR_link),
        DENY(__NR_symlink),
        DENY(__NR_chmod),
        DENY(__NR_chown),
#endif
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
#undef DENY
#undef ARG_LO
#undef WRITE_FLAGS
    struct sock_fprog prog = {(unsigned short)SALA_ARRAY_LEN(f), f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return -1;
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) != 0) return -1;
    return 0;
#else
    return -1;
#endif
}

static void child_limits(const wk_limits *lim)
{
    struct rlimit r;
#ifndef WK_ASAN
    if (lim->mem_bytes) {
        r.rlim_cur = r.rlim_max = lim->mem_bytes;
        setrlimit(RLIMIT_AS, &r);
    }
#endif
    if (lim->cpu_s > 0) {
        r.rlim_cur = (rlim_t)lim->cpu_s;
        r.rlim_max = (rlim_t)lim->cpu_s + 1;
        setrlimit(RLIMIT_CPU, &r);
    }
    r.rlim_cur = r.rlim_max = 0;
    setrlimit(RLIMIT_CORE, &r);
    setrlimit(RLIMIT_FSIZE, &r);
}

static int write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

static void put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static void put_i64(unsigned char *p, int64_t v)
{
    uint64_t u = (uint64_t)v;
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(u >> (8 * i));
}

/* Write one frame whose payload is the concatenation of up to three pieces. */
static int frame_write(int fd, char type, const void *a, size_t na, const void *b, size_t nb,
                       const void *c, size_t nc)
{
    size_t n = na + nb + nc;
    if (n > UINT32_MAX) return -1;
    unsigned char h[5];
    h[0] = (unsigned char)type;
    put_u32(h + 1, (uint32_t)n);
    if (write_all(fd, h, 5)) return -1;
    if (na && write_all(fd, a, na)) return -1;
    if (nb && write_all(fd, b, nb)) return -1;
    if (nc && write_all(fd, c, nc)) return -1;
    return 0;
}

static int child_send_doc(int fd, const ing_doc *d)
{
    const char *keys[2] = {"title", "author"};
    const char *vals[2] = {d->title, d->author};
    for (int i = 0; i < 2; i++)
        if (vals[i] && frame_write(fd, 'M', keys[i], strlen(keys[i]) + 1, vals[i],
                                   strlen(vals[i]), NULL, 0))
            return -1;
    if (d->pages >= 0) {
        char num[32];
        int k = snprintf(num, sizeof(num), "%lld", (long long)d->pages);
        if (frame_write(fd, 'P', num, (size_t)k, NULL, 0, NULL, 0)) return -1;
    }
    for (size_t i = 0; i < d->n; i++) {
        const ing_seg *s = &d->segs[i];
        unsigned char nums[24];
        put_i64(nums, s->page);
        put_i64(nums + 8, s->line_first);
        put_i64(nums + 16, s->line_last);
        if (frame_write(fd, 'S', nums, sizeof(nums), s->locator, strlen(s->locator) + 1,
                        s->text, s->len))
            return -1;
    }
    return 0;
}

static void child_main(int fd, const char *name, const char *buf, size_t len, wk_fn fn,
                       int shard, int nshards, const wk_limits *lim)
{
    /* Descriptors: the pipe becomes 3, stdio goes to /dev/null, everything else is closed. */
    if (fd != 3) {
        if (dup2(fd, 3) < 0) _exit(120);
        fd = 3;
    }
    int null = open("/dev/null", O_RDWR);
    if (null >= 0) {
        dup2(null, 0);
        dup2(null, 1);
        dup2(null, 2);
    }
    close_range(4, ~0u, 0);
    /* A crash is reported as a crash: no handler (a sanitizer's, say) may turn it into exit 1. */
    static const int fatal[] = {SIGPIPE, SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};
    for (size_t i = 0; i < SALA_ARRAY_LEN(fatal); i++) signal(fatal[i], SIG_DFL);
    prctl(PR_SET_NAME, "sala-worker", 0, 0, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    child_limits(lim);
    if (child_seccomp() != 0) {
        const char *m = "cannot install the seccomp filter (no network isolation)";
        int32_t st = SALA_EUNSUP;
        unsigned char s4[4];
        put_u32(s4, (uint32_t)st);
        frame_write(fd, 'E', s4, 4, m, strlen(m), NULL, 0);
        _exit(1);
    }
    ing_doc doc;
    ing_doc_init(&doc);
    sala_err e = {0, ""};
    int rc = fn(name, buf, len, shard, nshards, &doc, &e);
    if (rc != SALA_OK) {
        unsigned char s4[4];
        put_u32(s4, (uint32_t)(int32_t)rc);
        frame_write(fd, 'E', s4, 4, e.msg, strlen(e.msg), NULL, 0);
        _exit(1);
    }
    if (child_send_doc(fd, &doc) || frame_write(fd, 'Z', NULL, 0, NULL, 0, NULL, 0)) _exit(121);
    _exit(0);
}

/* ---- parent side ---- */

typedef struct {
    pid_t pid;
    int fd;
    char *buf;
    size_t len, cap;
    int status;
    bool reaped;
} shard_st;

static uint32_t get_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int64_t get_i64(const unsigned char *p)
{
    uint64_t u = 0;
    for (int i = 0; i < 8; i++) u |= (uint64_t)p[i] << (8 * i);
    return (int64_t)u;
}

/* Decode one child's frames into doc. Returns SALA_OK, the child's own error, or EFORMAT. */
static int decode(const char *buf, size_t len, ing_doc *doc, bool *ended, sala_err *e)
{
    size_t at = 0;
    *ended = false;
    while (at < len) {
        if (len - at < 5) return sala_errf(e, SALA_EFORMAT, "worker: truncated frame header");
        const unsigned char *h = (const unsigned char *)buf + at;
        size_t n = get_u32(h + 1);
        char type = (char)h[0];
        if (n > len - at - 5) return sala_errf(e, SALA_EFORMAT, "worker: truncated frame");
        const char *p = buf + at + 5;
        at += 5 + n;
        if (*ended) return sala_errf(e, SALA_EFORMAT, "worker: data after the end frame");
        switch (type) {
        case 'M': {
            const char *z = memchr(p, 0, n);
            if (!z) return sala_errf(e, SALA_EFORMAT, "worker: bad metadata frame");
            char val[512];
            size_t vl = SALA_MIN(n - (size_t)(z - p) - 1, sizeof(val) - 1);
            memcpy(val, z + 1, vl);
            val[vl] = 0;
            int rc = ing_doc_meta_set(doc, p, val, e);
            if (rc) return rc;
            break;
        }
        case 'P': {
            char num[32];
            if (n == 0 || n >= sizeof(num)) return sala_errf(e, SALA_EFORMAT, "worker: bad page count");
            memcpy(num, p, n);
            num[n] = 0;
            char *end;
            long long v = strtoll(num, &end, 10);
            if (*end || v < 0) return sala_errf(e, SALA_EFORMAT, "worker: bad page count");
            doc->pages = v;
            break;
        }
        case 'S': {
            if (n < 25) return sala_errf(e, SALA_EFORMAT, "worker: short segment frame");
            const unsigned char *u = (const unsigned char *)p;
            const char *loc = p + 24;
            const char *z = memchr(loc, 0, n - 24);
            if (!z) return sala_errf(e, SALA_EFORMAT, "worker: segment without locator");
            const char *text = z + 1;
            size_t tl = n - (size_t)(text - p);
            int rc = ing_doc_seg_add(doc, loc, get_i64(u), get_i64(u + 8), get_i64(u + 16),
                                     text, tl, e);
            if (rc) return rc;
            break;
        }
        case 'E': {
            if (n < 4) return sala_errf(e, SALA_EFORMAT, "worker: bad error frame");
            int32_t st = (int32_t)get_u32((const unsigned char *)p);
            if (st >= 0 || st < SALA_ECANCEL) st = SALA_EFORMAT;
            return sala_errf(e, st, "%.*s", (int)SALA_MIN(n - 4, (size_t)900), p + 4);
        }
        case 'Z':
            if (n) return sala_errf(e, SALA_EFORMAT, "worker: bad end frame");
            *ended = true;
            break;
        default:
            return sala_errf(e, SALA_EFORMAT, "worker: unknown frame type 0x%02x", h[0]);
        }
    }
    return SALA_OK;
}

static void kill_all(shard_st *sh, int n)
{
    for (int i = 0; i < n; i++)
        if (sh[i].pid > 0 && !sh[i].reaped) kill(sh[i].pid, SIGKILL);
}

static void reap_all(shard_st *sh, int n)
{
    for (int i = 0; i < n; i++) {
        if (sh[i].pid <= 0 || sh[i].reaped) continue;
        while (waitpid(sh[i].pid, &sh[i].status, 0) < 0 && errno == EINTR) {}
        sh[i].reaped = true;
    }
}

/* Describe an abnormal exit status into e. Returns true when the status was abnormal. */
static bool describe_status(int st, const wk_limits *lim, sala_err *e)
{
    if (WIFSIGNALED(st)) {
        int sig = WTERMSIG(st);
        if (sig == SIGXCPU)
            sala_errf(e, SALA_ERANGE, "worker: CPU time limit of %d s exceeded", lim->cpu_s);
        else if (sig == SIGXFSZ)
            sala_errf(e, SALA_EFORMAT, "worker: tried to write a file (killed)");
        else if (sig == SIGABRT)
            sala_errf(e, SALA_EFORMAT, "worker: aborted (signal 6; out of memory under the "
                                       "%zu MiB limit, or a parser assertion)",
                      lim->mem_bytes >> 20);
        else if (sig == SIGSYS)
            sala_errf(e, SALA_EFORMAT, "worker: killed by the seccomp filter");
        else
            sala_errf(e, SALA_EFORMAT, "worker: killed by signal %d (%s)", sig, strsignal(sig));
        return true;
    }
    if (WIFEXITED(st) && WEXITSTATUS(st) != 0 && WEXITSTATUS(st) != 1) {
        sala_errf(e, SALA_EFORMAT, "worker: exited with status %d", WEXITSTATUS(st));
        return true;
    }
    return false;
}

int wk_run(const char *name, const char *buf, size_t len, wk_fn fn, int nshards,
           const wk_limits *lim, ing_doc *out, sala_err *e)
{
    shard_st sh[WK_MAX_SHARDS];
    int rc = SALA_OK, started = 0;
    size_t total = 0;
    bool timed_out = false, over_cap = false;
    ing_doc part;
    ing_doc_init(&part);
    memset(sh, 0, sizeof(sh));
    if (nshards < 1 || nshards > WK_MAX_SHARDS)
        return sala_errf(e, SALA_EINVAL, "worker: %d shards (1..%d)", nshards, WK_MAX_SHARDS);
    /* A child that dies before reading must not kill us with SIGPIPE (we never write to it,
     * but be safe for the pipes of other children). */
    signal(SIGPIPE, SIG_IGN);
    for (int i = 0; i < nshards; i++) {
        int p[2];
        if (pipe2(p, O_CLOEXEC) != 0) {
            rc = sala_errf(e, SALA_EIO, "worker: pipe: %s", strerror(errno));
            goto fail;
        }
        pid_t pid = fork();
        if (pid < 0) {
            close(p[0]);
            close(p[1]);
            rc = sala_errf(e, SALA_EIO, "worker: fork: %s", strerror(errno));
            goto fail;
        }
        if (pid == 0) {
            close(p[0]);
            child_main(p[1], name, buf, len, fn, i, nshards, lim);
        }
        close(p[1]);
        sh[i].pid = pid;
        sh[i].fd = p[0];
        started++;
    }
    double deadline = lim->wall_s > 0 ? sala_now() + lim->wall_s : 0;
    for (;;) {
        struct pollfd pf[WK_MAX_SHARDS];
        int map[WK_MAX_SHARDS], np = 0;
        for (int i = 0; i < started; i++)
            if (sh[i].fd >= 0) {
                pf[np] = (struct pollfd){sh[i].fd, POLLIN, 0};
                map[np++] = i;
            }
        if (np == 0) break;
        int wait_ms = -1;
        if (deadline > 0) {
            double left = deadline - sala_now();
            if (left <= 0) {
                timed_out = true;
                break;
            }
            wait_ms = (int)(left * 1000) + 1;
        }
        int r = poll(pf, (nfds_t)np, wait_ms);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            rc = sala_errf(e, SALA_EIO, "worker: poll: %s", strerror(errno));
            goto fail;
        }
        for (int k = 0; k < np; k++) {
            if (!pf[k].revents) continue;
            shard_st *s = &sh[map[k]];
            if (s->cap - s->len < 65536) {
                size_t nc = s->cap ? s->cap * 2 : 262144;
                char *nb = realloc(s->buf, nc);
                if (!nb) {
                    rc = sala_errf(e, SALA_ENOMEM, "worker: out of memory for its output");
                    goto fail;
                }
                s->buf = nb;
                s->cap = nc;
            }
            ssize_t got = read(s->fd, s->buf + s->len, s->cap - s->len);
            if (got < 0 && errno == EINTR) continue;
            if (got <= 0) {
                close(s->fd);
                s->fd = -1;
                continue;
            }
            s->len += (size_t)got;
            total += (size_t)got;
            if (total > lim->out_cap) {
                over_cap = true;
                break;
            }
        }
        if (over_cap) break;
    }
    if (timed_out || over_cap) kill_all(sh, started);
    reap_all(sh, started);
    if (timed_out) {
        rc = sala_errf(e, SALA_ERANGE, "worker: timed out after %g s (killed)", lim->wall_s);
        goto fail;
    }
    if (over_cap) {
        rc = sala_errf(e, SALA_ERANGE, "worker: output over the cap of %zu bytes (killed)",
                       lim->out_cap);
        goto fail;
    }
    for (int i = 0; i < started; i++) {
        bool ended = false;
        /* A worker that died abnormally is reported as such, whatever it sent before; one
         * that exited 1 sent its own message in an 'E' frame, which decode returns. */
        if (describe_status(sh[i].status, lim, e)) {
            rc = e ? e->code : SALA_EFORMAT;
            goto fail;
        }
        rc = decode(sh[i].buf, sh[i].len, &part, &ended, e);
        if (rc == SALA_OK && !ended) rc = sala_errf(e, SALA_EFORMAT, "worker: ended early");
        if (rc) goto fail;
        if (i == 0) {
            out->title = part.title;
            out->author = part.author;
            out->pages = part.pages;
            part.title = part.author = NULL;
        }
        rc = ing_doc_append(out, &part, e);
        if (rc) goto fail;
        ing_doc_clear(&part);
    }
fail:
    kill_all(sh, started);
    reap_all(sh, started);
    for (int i = 0; i < started; i++) {
        if (sh[i].fd >= 0) close(sh[i].fd);
        free(sh[i].buf);
    }
    ing_doc_clear(&part);
    if (rc) ing_doc_clear(out);
    return rc;
}
