/* test_statefile.c: the persisted-state container: round trip, refusal of mismatched meta,
 * every flipped bit and every truncation, crashes at each step of the save protocol, and
 * write failures leaving the old file intact, concurrent reads from several threads. */
#include "test.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "engine/statefile.h"

SALA_SUITE(statefile);

#define BIG (9u << 20)   /* three chunks, the last partial */

static unsigned char *pattern(size_t n, unsigned seed)
{
    unsigned char *p = malloc(n);
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        p[i] = (unsigned char)x;
    }
    return p;
}

/* Write a state file with version tag v ("1", "2") in its meta and data from seed v. */
static int write_state(const char *path, unsigned v, sala_err *e)
{
    char ver[16];
    snprintf(ver, sizeof(ver), "%u", v);
    sf_field meta[] = {{"model", "abc123"}, {"length", "4096"}, {"version_tag", ver}};
    sf_writer *w;
    int rc = sf_create(path, meta, 3, &w, e);
    if (rc) return rc;
    unsigned char *big = pattern(BIG, v), *small = pattern(1000, v + 100);
    rc = sf_write(w, "kv", big, BIG / 2, e);
    if (!rc) rc = sf_write(w, "kv", big + BIG / 2, BIG - BIG / 2, e);   /* in two pieces */
    if (!rc) rc = sf_write(w, "lin", small, 1000, e);
    free(big);
    free(small);
    if (rc) {
        sf_abort(w);
        return rc;
    }
    return sf_commit(w, e);
}

/* 0 when path opens, verifies and holds version v's data. */
static int check_state(const char *path, unsigned v)
{
    sala_err e;
    sf_reader *r;
    if (sf_open(path, NULL, 0, &r, &e)) return -1;
    char ver[16];
    snprintf(ver, sizeof(ver), "%u", v);
    int bad = !sf_meta(r, "version_tag") || strcmp(sf_meta(r, "version_tag"), ver) != 0;
    unsigned char *want = pattern(BIG, v), *got = malloc(BIG);
    bad |= sf_verify(r, &e) != 0;
    bad |= sf_read(r, "kv", 0, got, BIG, &e) != 0 || memcmp(got, want, BIG) != 0;
    sf_close(r);
    free(want);
    free(got);
    return bad ? -1 : 0;
}

static void t_roundtrip(void)
{
    char p[4300];
    snprintf(p, sizeof(p), "%s/s.state", test_tmpdir());
    sala_err e;
    CU_ASSERT_EQUAL_FATAL(write_state(p, 1, &e), SALA_OK);
    CU_ASSERT_EQUAL(check_state(p, 1), 0);
    sf_reader *r;
    sf_field ok[] = {{"model", "abc123"}, {"length", "4096"}};
    CU_ASSERT_EQUAL_FATAL(sf_open(p, ok, 2, &r, &e), SALA_OK);
    size_t sz;
    CU_ASSERT_EQUAL(sf_section_size(r, "lin", &sz, &e), SALA_OK);
    CU_ASSERT_EQUAL(sz, 1000);
    CU_ASSERT_EQUAL(sf_section_size(r, "nope", &sz, &e), SALA_ENOTFOUND);
    /* unaligned reads across chunk boundaries */
    unsigned char *want = pattern(BIG, 1), buf[300];
    size_t offs[] = {0, 1, SF_CHUNK - 150, 2 * SF_CHUNK - 1, BIG - 300};
    for (size_t i = 0; i < SALA_ARRAY_LEN(offs); i++) {
        CU_ASSERT_EQUAL(sf_read(r, "kv", offs[i], buf, 300, &e), SALA_OK);
        CU_ASSERT_EQUAL(memcmp(buf, want + offs[i], 300), 0);
    }
    CU_ASSERT_EQUAL(sf_read(r, "kv", BIG - 10, buf, 11, &e), SALA_EINVAL);
    free(want);
    sf_close(r);
}

static void t_mismatch(void)
{
    char p[4300];
    snprintf(p, sizeof(p), "%s/s.state", test_tmpdir());
    sala_err e;
    CU_ASSERT_EQUAL_FATAL(write_state(p, 1, &e), SALA_OK);
    sf_reader *r;
    sf_field want[] = {{"model", "abc123"}, {"length", "8192"}};
    CU_ASSERT_EQUAL(sf_open(p, want, 2, &r, &e), SALA_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "'length'"));
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "expected 8192"));
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "has 4096"));
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "sala prefill"));
    sf_field missing[] = {{"tokenizer", "x"}};
    CU_ASSERT_EQUAL(sf_open(p, missing, 1, &r, &e), SALA_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "(missing)"));
}

static void flip_byte(const char *path, size_t off, unsigned char v)
{
    int fd = open(path, O_WRONLY);
    if (fd < 0 || pwrite(fd, &v, 1, (off_t)off) != 1) CU_FAIL("cannot patch the test file");
    if (fd >= 0) close(fd);
}

/* Every bit of the header, meta, directory and footer, and a sample of data bits: a flipped
 * file must be refused by sf_open or sf_verify. */
static void t_bitflips(void)
{
    const char *d = test_tmpdir();
    char p[4300], q[4300];
    snprintf(p, sizeof(p), "%s/s.state", d);
    snprintf(q, sizeof(q), "%s/flip.state", d);
    sala_err e;
    CU_ASSERT_EQUAL_FATAL(write_state(p, 1, &e), SALA_OK);
    char *img;
    size_t n;
    CU_ASSERT_EQUAL_FATAL(sala_file_read(p, 64u << 20, &img, &n, &e), SALA_OK);
    size_t data_begin = 0, data_end = n;
    /* The data area: from the first section to the directory (footer holds dir offset). */
    uint64_t doff = 0, ml = 0;
    for (int i = 7; i >= 0; i--) doff = (doff << 8) | (unsigned char)img[n - 32 + i];
    for (int i = 7; i >= 0; i--) ml = (ml << 8) | (unsigned char)img[16 + i];
    data_begin = 32 + ml;
    data_end = doff;
    size_t tried = 0, refused = 0;
    bool copied = false;
    unsigned seed = 7;
    for (size_t bit = 0; bit < 8 * n; bit++) {
        size_t byte = bit / 8;
        bool meta_area = byte < data_begin || byte >= data_end;
        if (!meta_area) {   /* data: about 64 random bits */
            seed = seed * 1103515245u + 12345u;
            if ((seed >> 8) % (8 * (data_end - data_begin) / 64) != 0) continue;
        }
        if (!copied) {
            test_write_file(q, img, n);
            copied = true;
        }
        unsigned char flipped = (unsigned char)img[byte] ^ (unsigned char)(1 << (bit % 8));
        flip_byte(q, byte, flipped);
        tried++;
        sf_reader *r;
        if (sf_open(q, NULL, 0, &r, &e) != SALA_OK) {
            refused++;
        } else {
            if (sf_verify(r, &e) != SALA_OK) refused++;
            sf_close(r);
        }
        flip_byte(q, byte, (unsigned char)img[byte]);
    }
    free(img);
    CU_ASSERT(tried > 1000);
    CU_ASSERT_EQUAL(refused, tried);
    if (refused != tried) fprintf(stderr, "bit flips: %zu of %zu refused\n", refused, tried);
}

static void t_truncation(void)
{
    const char *d = test_tmpdir();
    char p[4300], q[4300];
    snprintf(p, sizeof(p), "%s/s.state", d);
    snprintf(q, sizeof(q), "%s/cut.state", d);
    sala_err e;
    CU_ASSERT_EQUAL_FATAL(write_state(p, 1, &e), SALA_OK);
    char *img;
    size_t n;
    CU_ASSERT_EQUAL_FATAL(sala_file_read(p, 64u << 20, &img, &n, &e), SALA_OK);
    size_t cuts[] = {0, 1, 31, 32, 100, SF_CHUNK, n / 2, n - 33, n - 32, n - 1};
    for (size_t i = 0; i < SALA_ARRAY_LEN(cuts); i++) {
        test_write_file(q, img, cuts[i]);
        sf_reader *r;
        int rc = sf_open(q, NULL, 0, &r, &e);
        CU_ASSERT_NOT_EQUAL(rc, SALA_OK);
        if (rc == SALA_OK) sf_close(r);
    }
    free(img);
}

static void die_at(const char *s)
{
    const char *want = getenv("SF_TEST_DIE_AT");
    if (want && !strcmp(want, s)) raise(SIGKILL);
}

/* A writer killed at each step of the protocol leaves the old state (before the rename) or the
 * new one (after it), and the next sf_cleanup removes its temp file. */
static void t_crash_points(void)
{
    const char *steps[] = {"data", "fsync", "rename", "dirsync"};
    const unsigned after[] = {1, 1, 1, 2};
    for (size_t i = 0; i < SALA_ARRAY_LEN(steps); i++) {
        const char *d = test_tmpdir();
        char p[4300];
        snprintf(p, sizeof(p), "%s/s.state", d);
        sala_err e;
        CU_ASSERT_EQUAL_FATAL(write_state(p, 1, &e), SALA_OK);
        pid_t pid = fork();
        if (pid == 0) {
            setenv("SF_TEST_DIE_AT", steps[i], 1);
            sf_set_step_hook(die_at);
            write_state(p, 2, &e);
            _exit(0);
        }
        int st;
        waitpid(pid, &st, 0);
        CU_ASSERT(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
        CU_ASSERT_EQUAL(check_state(p, after[i]), 0);
        int temps = test_count_tmp(d);
        CU_ASSERT_EQUAL(temps, after[i] == 1 ? 1 : 0);
        CU_ASSERT_EQUAL(sf_cleanup(d, &e), temps);
        CU_ASSERT_EQUAL(test_count_tmp(d), 0);
        CU_ASSERT_EQUAL(check_state(p, after[i]), 0);
    }
}

/* Concurrent sf_read on one reader (the CUDA backend loads with several threads): every thread
 * reads unaligned ranges (so that the shared bounce buffer is contended) and checks the bytes;
 * a damaged chunk is still refused by a reader racing with others. */
typedef struct {
    sf_reader *r;
    const unsigned char *want;
    unsigned seed;
    int bad;
} rd_arg;

static void *rd_thread(void *ud)
{
    rd_arg *a = ud;
    unsigned char *buf = malloc(SF_CHUNK + 4096);
    uint32_t x = a->seed * 2654435761u + 7;
    sala_err e;
    for (int i = 0; i < 200 && buf; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        size_t off = x % (BIG - 1), n = 1 + (x >> 7) % (SF_CHUNK + 4096);
        if (n > BIG - off) n = BIG - off;
        if (sf_read(a->r, "kv", off, buf, n, &e) != SALA_OK || memcmp(buf, a->want + off, n)) a->bad++;
    }
    free(buf);
    return NULL;
}

static void t_concurrent_reads(void)
{
    char p[4300];
    snprintf(p, sizeof(p), "%s/s.state", test_tmpdir());
    sala_err e;
    CU_ASSERT_EQUAL_FATAL(write_state(p, 3, &e), SALA_OK);
    sf_reader *r;
    CU_ASSERT_EQUAL_FATAL(sf_open(p, NULL, 0, &r, &e), SALA_OK);
    unsigned char *want = pattern(BIG, 3);
    pthread_t th[6];
    rd_arg args[6];
    for (int i = 0; i < 6; i++) {
        args[i] = (rd_arg){r, want, (unsigned)i + 1, 0};
        CU_ASSERT_EQUAL_FATAL(pthread_create(&th[i], NULL, rd_thread, &args[i]), 0);
    }
    int bad = 0;
    for (int i = 0; i < 6; i++) {
        pthread_join(th[i], NULL);
        bad += args[i].bad;
    }
    CU_ASSERT_EQUAL(bad, 0);
    sf_close(r);
    free(want);
}

/* A write that fails part-way (file size limit, as a full disk would) leaves the old state. */
static void t_write_failure(void)
{
    const char *d = test_tmpdir();
    char p[4300];
    snprintf(p, sizeof(p), "%s/s.state", d);
    sala_err e;
    CU_ASSERT_EQUAL_FATAL(write_state(p, 1, &e), SALA_OK);
    pid_t pid = fork();
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl = {5u << 20, 5u << 20};
        setrlimit(RLIMIT_FSIZE, &rl);
        int rc = write_state(p, 2, &e);
        _exit(rc == SALA_EIO && strstr(e.msg, "write failed") ? 0 : 1);
    }
    int st;
    waitpid(pid, &st, 0);
    CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CU_ASSERT_EQUAL(check_state(p, 1), 0);
    CU_ASSERT_EQUAL(test_count_tmp(d), 0);
}

void suite_statefile(void)
{
    SALA_ADD("statefile", {"round trip", t_roundtrip}, {"meta mismatch names the field", t_mismatch},
             {"every flipped bit is refused", t_bitflips}, {"truncations are refused", t_truncation},
             {"kill -9 at each save step", t_crash_points}, {"write failure keeps old state", t_write_failure},
             {"concurrent reads on one reader", t_concurrent_reads});
}
