/* test_fuzz_replay.c: every fuzz target (tests/fuzz/fuzz_<name>.c, built into this binary as
 * fuzz_<name>_one) is fed each file of its committed corpus tests/fuzz/corpus/<name>/ and of
 * tests/fuzz/regress/<name>/ (every crasher the fuzzers ever found). One child process per
 * target, so that a crash, a sanitizer report or a hang (alarm after 100 s) fails that target's
 * test and names it; the counts and times are printed. Paths are relative to the repository
 * root, where `make test` runs. */
#include "test.h"

#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/fuzz/fuzz.h"

typedef int (*fuzz_fn)(const uint8_t *data, size_t size);
#define TARGETS(X) X(config) X(gitignore) X(model) X(pdf) X(safetensors) X(statefile) \
    X(tokenizer) X(xml)
#define DECL(n) int fuzz_##n##_one(const uint8_t *data, size_t size);
TARGETS(DECL)

/* Feed every regular file of dir to fn; returns the number fed, -1 when dir is missing. */
static long replay_dir(const char *dir, fuzz_fn fn, const char *target)
{
    DIR *d = opendir(dir);
    if (!d) return -1;
    long n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        char p[4096];
        snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
        char *buf;
        size_t len;
        sala_err e;
        if (sala_file_read(p, (size_t)16 << 20, &buf, &len, &e) != SALA_OK) continue;
        /* Named on stderr first, so that a crash report says which input did it. */
        if (getenv("SALA_FUZZ_VERBOSE")) fprintf(stderr, "fuzz replay %s: %s\n", target, p);
        fn((const uint8_t *)buf, len);
        free(buf);
        n++;
    }
    closedir(d);
    return n;
}

static void replay(const char *name, fuzz_fn fn)
{
    int fds[2];
    CU_ASSERT_EQUAL_FATAL(pipe(fds), 0);
    double t0 = sala_now();
    pid_t pid = fork();
    CU_ASSERT_NOT_EQUAL_FATAL(pid, -1);
    if (pid == 0) {
        close(fds[0]);
        alarm(100);
        char dir[256];
        snprintf(dir, sizeof(dir), "tests/fuzz/corpus/%s", name);
        long c = replay_dir(dir, fn, name);
        snprintf(dir, sizeof(dir), "tests/fuzz/regress/%s", name);
        long r = replay_dir(dir, fn, name);
        fuzz_scratch_remove();
        long v[2] = {c, r};
        _exit(write(fds[1], v, sizeof(v)) == (ssize_t)sizeof(v) ? 0 : 1);
    }
    close(fds[1]);
    long v[2] = {-2, -2};
    ssize_t got = read(fds[0], v, sizeof(v));
    close(fds[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    bool ok = WIFEXITED(st) && WEXITSTATUS(st) == 0 && got == (ssize_t)sizeof(v);
    if (!ok)
        fprintf(stderr, "\n  fuzz replay %s: child %s %d (rerun with SALA_FUZZ_VERBOSE=1 to see "
                "the input)\n", name, WIFSIGNALED(st) ? "killed by signal" : "exit status",
                WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
    else
        fprintf(stderr, " [%s: %ld corpus + %ld regress inputs, %.2f s] ", name, v[0],
                v[1] < 0 ? 0 : v[1], sala_now() - t0);
    CU_ASSERT(ok);
    CU_ASSERT(v[0] > 0);   /* a target without a committed corpus is a mistake */
}

#define CASE(n) static void t_##n(void) { replay(#n, fuzz_##n##_one); }
TARGETS(CASE)

SALA_SUITE(fuzz_replay)
{
#define ADD(n) {#n, t_##n},
    SALA_ADD("fuzz_replay", TARGETS(ADD));
}
