/* test_fault_kill.c: crash consistency of state saves under kill -9 at random points.
 * A forked writer replaces a state file (6 MiB in 96 pieces, two 4 MiB chunks) and is
 * SIGKILLed either after a random delay (parent side, up to 1.2x the time of a whole save) or at
 * a step of the save protocol (child side, through the statefile step hook: "fsync", "rename",
 * "dirsync" and after the commit once each, then random ones among the 97 "data" steps and
 * those). After each kill, the next start is simulated: sf_cleanup removes the dead writer's
 * temp file, no temp file is left, and the state file opens, verifies every chunk and holds
 * either the previous generation or the new one. tests/test_statefile.c covers each named step once; this test covers the points between
 * them. The SQLite-row steps of `sala prefill` (issue 7) are not part of this module. */
#include "test.h"

#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "engine/statefile.h"

#define KILL_POINTS 30
#define PIECES 96
#define PIECE ((size_t)64 << 10)
/* Steps of one save_gen: PIECES + 1 "data", then "fsync", "rename", "dirsync". */
#define STEPS (PIECES + 1 + 3)

static int kill_at;      /* child: SIGKILL itself at this step (1-based), 0: never */
static int steps;

static void on_step(const char *s)
{
    (void)s;
    if (++steps == kill_at) raise(SIGKILL);
}

static int save_gen(const char *path, int gen)
{
    char g[16];
    snprintf(g, sizeof(g), "%d", gen);
    sf_field meta[] = {{"gen", g}};
    sf_writer *w;
    sala_err e;
    if (sf_create(path, meta, 1, &w, &e)) return 1;
    unsigned char *buf = malloc(PIECE);
    if (!buf) return 1;
    for (int i = 0; i < PIECES; i++) {
        for (size_t k = 0; k < PIECE; k += 8) {
            uint64_t v = (uint64_t)gen * 1000003u + (uint64_t)i * PIECE + k;
            memcpy(buf + k, &v, 8);
        }
        if (sf_write(w, "kv", buf, PIECE, &e)) {
            free(buf);
            sf_abort(w);
            return 1;
        }
    }
    free(buf);
    if (sf_write(w, "tok", g, strlen(g), &e)) {
        sf_abort(w);
        return 1;
    }
    return sf_commit(w, &e) ? 1 : 0;
}

/* Open, verify, and return the generation; -1 when the file is not a good state file. */
static int read_gen(const char *path)
{
    sf_reader *r;
    sala_err e;
    if (sf_open(path, NULL, 0, &r, &e) != SALA_OK) {
        fprintf(stderr, "\n  %s\n", e.msg);
        return -1;
    }
    int g = -1;
    if (sf_verify(r, &e) == SALA_OK && sf_meta(r, "gen")) g = atoi(sf_meta(r, "gen"));
    else fprintf(stderr, "\n  %s\n", e.msg);
    sf_close(r);
    return g;
}

/* Fork a writer of generation gen; kill it after delay_s (parent) or at step k (child). */
static pid_t writer(const char *path, int gen, int k)
{
    pid_t pid = fork();
    if (pid == 0) {
        kill_at = k;
        steps = 0;
        sf_set_step_hook(on_step);
        int rc = save_gen(path, gen);
        if (k == STEPS + 1) raise(SIGKILL);   /* after the whole save */
        _exit(rc);
    }
    return pid;
}

static void t_random_kills(void)
{
    const char *dir = test_tmpdir();
    char path[4400];
    snprintf(path, sizeof(path), "%s/ctx.sala", dir);
    CU_ASSERT_EQUAL_FATAL(save_gen(path, 0), 0);
    /* How long a whole save takes here, for the delays. */
    double t0 = sala_now();
    pid_t p = writer(path, 1, 0);
    int st;
    waitpid(p, &st, 0);
    double whole = sala_now() - t0;
    CU_ASSERT_FATAL(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CU_ASSERT_EQUAL_FATAL(read_gen(path), 1);
    int cur = 1, olds = 0, news = 0, removed = 0;
    unsigned seed = 12345;   /* fixed: the same points on every run */
    for (int i = 0; i < KILL_POINTS; i++) {
        int gen = cur + 1;
        bool by_step = i % 2 == 0;
        if (by_step) {
            /* The protocol's tail once each (fsync, rename, dirsync, after the commit), then
             * random steps 1..STEPS+1. */
            int k = i / 2 < 4 ? STEPS - 2 + i / 2 : 1 + (int)(rand_r(&seed) % (STEPS + 1));
            p = writer(path, gen, k);
            waitpid(p, &st, 0);
        } else {
            double delay = whole * 1.2 * (rand_r(&seed) % 1000) / 1000.0;
            p = writer(path, gen, 0);
            struct timespec ts = {(time_t)delay, (long)((delay - (time_t)delay) * 1e9)};
            nanosleep(&ts, NULL);
            kill(p, SIGKILL);
            waitpid(p, &st, 0);
        }
        /* The next start. */
        sala_err e;
        int rm = sf_cleanup(dir, &e);
        CU_ASSERT(rm >= 0);
        removed += rm > 0 ? rm : 0;
        CU_ASSERT_EQUAL(test_count_tmp(dir), 0);
        int g = read_gen(path);
        CU_ASSERT(g == cur || g == gen);
        if (g == gen) {
            news++;
            cur = gen;
        } else {
            olds++;
        }
    }
    fprintf(stderr, " [%d kill points (whole save %.0f ms): %d left the old state, %d the new one, "
            "%d temp files removed at the next start] ", KILL_POINTS, whole * 1000, olds, news,
            removed);
    CU_ASSERT(olds > 0 && news > 0 && removed > 0);
}

SALA_SUITE(fault_kill)
{
    SALA_ADD("fault_kill", {"state save: kill -9 at 30 random points", t_random_kills});
}
