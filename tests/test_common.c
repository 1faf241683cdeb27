/* test_common.c: checked arithmetic, error buffers and whole-file reads (common/). */
#include "test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

SALA_SUITE(common);

static void t_overflow(void)
{
    size_t r;
    CU_ASSERT_FALSE(sala_mul_ovf(&r, 1u << 20, 1u << 20));
    CU_ASSERT_EQUAL(r, (size_t)1 << 40);
    CU_ASSERT_TRUE(sala_mul_ovf(&r, SIZE_MAX / 2 + 1, 2));
    CU_ASSERT_TRUE(sala_add_ovf(&r, SIZE_MAX, 1));
    int64_t q;
    CU_ASSERT_TRUE(sala_mul_ovf_i64(&q, INT64_MAX, 2));
    CU_ASSERT_FALSE(sala_add_ovf_i64(&q, -5, 3));
    CU_ASSERT_EQUAL(q, -2);
}

static void t_errf(void)
{
    sala_err e;
    CU_ASSERT_EQUAL(sala_errf(&e, SALA_EFORMAT, "%s: bad %d", "f.json", 7), SALA_EFORMAT);
    CU_ASSERT_STRING_EQUAL(e.msg, "f.json: bad 7");
    sala_err_prefix(&e, "model dir %s", "x");
    CU_ASSERT_STRING_EQUAL(e.msg, "model dir x: f.json: bad 7");
    CU_ASSERT_EQUAL(sala_errf(NULL, SALA_EIO, "ignored"), SALA_EIO);
}

static void t_file_read(void)
{
    const char *d = test_tmpdir();
    char p[4300];
    snprintf(p, sizeof(p), "%s/a.txt", d);
    CU_ASSERT_EQUAL(test_write_file(p, "hello", 5), 0);
    char *buf;
    size_t len;
    sala_err e;
    CU_ASSERT_EQUAL(sala_file_read(p, 100, &buf, &len, &e), SALA_OK);
    CU_ASSERT_EQUAL(len, 5);
    CU_ASSERT_STRING_EQUAL(buf, "hello");
    free(buf);
    CU_ASSERT_EQUAL(sala_file_read(p, 4, &buf, &len, &e), SALA_ERANGE);
    CU_ASSERT_PTR_NULL(buf);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "a.txt"));
    CU_ASSERT_EQUAL(sala_file_read(d, 100, &buf, &len, &e), SALA_EINVAL);
    snprintf(p, sizeof(p), "%s/missing", d);
    CU_ASSERT_EQUAL(sala_file_read(p, 100, &buf, &len, &e), SALA_EIO);
}

void suite_common(void)
{
    SALA_ADD("common", {"checked arithmetic", t_overflow}, {"error messages", t_errf},
             {"whole-file read", t_file_read});
}
