/* test.h: what the CUnit suites share. Each tests/test_<module>.c declares its suites with
 *     SALA_SUITE(name);   (at the start of a line)
 * and defines `void suite_<name>(void)` that calls CU_add_suite/CU_add_test. The Makefile
 * collects those lines; tests/main.c registers them in name order.
 * Tests that need a GPU or real weights do not live in `make test`: they are separate targets. */
#ifndef SALA_TEST_H
#define SALA_TEST_H

#include <CUnit/CUnit.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common.h"

#define SALA_SUITE(name) void suite_##name(void)

/* Register a suite with its tests: SALA_ADD(suite, "name", {"t1", fn1}, {"t2", fn2}). */
typedef struct { const char *name; CU_TestFunc fn; } test_case;
void test_add_suite(const char *name, const test_case *cases, size_t n);
#define SALA_ADD(suite, ...) do { \
        static const test_case cases_[] = {__VA_ARGS__}; \
        test_add_suite(suite, cases_, sizeof(cases_) / sizeof(cases_[0])); \
    } while (0)

/* ../shared (from $SALA_SHARED, else "../shared"), joined with rel. Static buffer per call slot. */
const char *test_shared(const char *rel);
/* The sala binary under test ($SALA_BIN, else build/sala). */
const char *test_bin(void);
/* A fresh empty directory under $TMPDIR, removed at exit. Returned string lives until exit. */
const char *test_tmpdir(void);
/* Number of save temp files ("*.tmp-<pid>", engine/statefile.h) in dir, -1 if unreadable. */
int test_count_tmp(const char *dir);
/* Write len bytes to path; returns 0 on success. */
int test_write_file(const char *path, const void *data, size_t len);
/* Run a shell command, capturing stdout+stderr (up to cap bytes) into out (NUL-terminated,
 * may be NULL). Returns the exit status (0..255), or -1 when it could not run or was signalled. */
int test_run(const char *cmd, char *out, size_t cap);
/* The worst over rows r < rows of the relative L2 difference of got's row r to ref's
 * (|got - ref| / |ref|, rows of V floats): 0 for equal rows, +inf where ref's row is zero and
 * got's is not, NaN as soon as a row holds one. */
double test_row_rel(const float *ref, const float *got, int64_t rows, int64_t V);

#endif
