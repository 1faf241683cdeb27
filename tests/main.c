/* main.c: the CUnit test runner of `make test`. Uses the basic runner (the console runner
 * needs a terminal), runs every registered suite or those named on the command line, prints
 * one closing line "N passed, N failed" and returns non-zero when anything failed. */
#include "test.h"

#include <CUnit/Basic.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define X(name) SALA_SUITE(name);
#include "suites.inc"
#undef X

typedef struct { const char *name; void (*reg)(void); } suite_reg;
static const suite_reg suites[] = {
#define X(name) {#name, suite_##name},
#include "suites.inc"
#undef X
    {NULL, NULL},
};

static int nfilter;
static char **filter;

void test_add_suite(const char *name, const test_case *cases, size_t n)
{
    if (nfilter) {
        bool want = false;
        for (int i = 0; i < nfilter; i++)
            if (strncmp(name, filter[i], strlen(filter[i])) == 0) want = true;
        if (!want) return;
    }
    CU_pSuite s = CU_add_suite(name, NULL, NULL);
    if (!s) return;
    for (size_t i = 0; i < n; i++) CU_add_test(s, cases[i].name, cases[i].fn);
}

const char *test_shared(const char *rel)
{
    static char buf[8][4096];
    static int slot;
    const char *root = getenv("SALA_SHARED");
    char *b = buf[slot++ % 8];
    snprintf(b, sizeof(buf[0]), "%s/%s", root && *root ? root : "../shared", rel);
    return b;
}

const char *test_bin(void)
{
    const char *b = getenv("SALA_BIN");
    return b && *b ? b : "build/sala";
}

static char tmproot[4096];

static void rm_tmproot(void)
{
    if (!tmproot[0] || getenv("SALA_KEEP_TMP")) return;
    char cmd[4200];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmproot);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", tmproot);
}

const char *test_tmpdir(void)
{
    static char bufs[256][4200];
    static int n;
    if (!tmproot[0]) {
        const char *t = getenv("TMPDIR");
        snprintf(tmproot, sizeof(tmproot), "%s/sala-test-XXXXXX", t && *t ? t : "/tmp");
        if (!mkdtemp(tmproot)) {
            perror("mkdtemp");
            return "/nonexistent";
        }
        atexit(rm_tmproot);
    }
    char *b = bufs[n % 256];
    snprintf(b, sizeof(bufs[0]), "%s/%d", tmproot, n);
    n++;
    if (mkdir(b, 0700) != 0 && errno != EEXIST) perror(b);
    return b;
}

int test_count_tmp(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        if (strstr(de->d_name, ".tmp-")) n++;
    closedir(d);
    return n;
}

int test_write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(data, 1, len, f);
    int rc = fclose(f);
    return (w == len && rc == 0) ? 0 : -1;
}

double test_row_rel(const float *ref, const float *got, int64_t rows, int64_t V)
{
    double worst = 0;
    for (int64_t r = 0; r < rows; r++) {
        double n = 0, d = 0;
        for (int64_t j = 0; j < V; j++) {
            const double x = (double)got[r * V + j] - ref[r * V + j];
            n += x * x;
            d += (double)ref[r * V + j] * ref[r * V + j];
        }
        const double rr = d > 0 ? sqrt(n / d) : n > 0 ? INFINITY : n;
        if (!(rr <= worst)) worst = rr;
    }
    return worst;
}

int test_run(const char *cmd, char *out, size_t cap)
{
    char full[8192];
    snprintf(full, sizeof(full), "(%s) 2>&1", cmd);
    FILE *p = popen(full, "r");
    if (!p) return -1;
    size_t got = 0;
    char tmp[4096];
    size_t r;
    while ((r = fread(tmp, 1, sizeof(tmp), p)) > 0) {
        if (out && got + 1 < cap) {
            size_t k = SALA_MIN(r, cap - 1 - got);
            memcpy(out + got, tmp, k);
            got += k;
        }
    }
    if (out && cap) out[got] = 0;
    int st = pclose(p);
    if (st == -1 || !WIFEXITED(st)) return -1;
    return WEXITSTATUS(st);
}

int main(int argc, char **argv)
{
    nfilter = argc - 1;
    filter = argv + 1;
    if (CU_initialize_registry() != CUE_SUCCESS) {
        fprintf(stderr, "CUnit: cannot initialise the registry\n");
        return 3;
    }
    for (size_t i = 0; suites[i].name; i++) suites[i].reg();
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned run = CU_get_number_of_tests_run();
    unsigned failed = CU_get_number_of_tests_failed();
    unsigned sfail = CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    printf("\n%u passed, %u failed\n", run - failed, failed + sfail);
    if (run == 0) {
        fprintf(stderr, "no test ran\n");
        return 1;
    }
    return (failed || sfail) ? 1 : 0;
}
