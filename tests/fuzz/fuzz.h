/* fuzz.h: what the fuzz targets in tests/fuzz/fuzz_<name>.c share.
 *
 * Each target defines `static int one(const uint8_t *data, size_t size)` and ends with
 * FUZZ_TARGET(name, one). Built by `make fuzz` with clang -fsanitize=fuzzer it becomes
 * LLVMFuzzerTestOneInput; built into build/sala-test (FUZZ_REPLAY defined) it becomes
 * `int fuzz_<name>_one(...)`, which tests/test_fuzz_replay.c feeds every file of
 * tests/fuzz/corpus/<name>/ and tests/fuzz/regress/<name>/. A target never aborts on bad input:
 * any crash, sanitizer report, leak or abort() is a bug in the code under test. */
#ifndef SALA_FUZZ_H
#define SALA_FUZZ_H

#include <stddef.h>
#include <stdint.h>

#ifdef FUZZ_REPLAY
#define FUZZ_TARGET(name, fn) \
    int fuzz_##name##_one(const uint8_t *data, size_t size); \
    int fuzz_##name##_one(const uint8_t *data, size_t size) { return fn(data, size); }
#else
#define FUZZ_TARGET(name, fn) \
    int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size); \
    int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return fn(data, size); }
#endif

/* A private scratch directory for targets that need files (under /dev/shm when it exists),
 * created on first use and removed at exit; the same for the whole process. */
const char *fuzz_scratch(void);
/* Remove the scratch directory (also done at exit). */
void fuzz_scratch_remove(void);
/* Write data to dir/name (replacing it); returns 0 on success. */
int fuzz_write(const char *dir, const char *name, const void *data, size_t len);
/* Split data at each occurrence of sep (a NUL-free string) into at most max parts: part i is
 * [off[i], off[i] + len[i]). Returns the number of parts (>= 1). */
size_t fuzz_split(const uint8_t *data, size_t size, const char *sep, size_t max, size_t *off,
                  size_t *len);

#endif
