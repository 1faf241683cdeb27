/* fuzz_common.c: helpers of fuzz.h, linked into every fuzz target and into the replay test. */
#include "tests/fuzz/fuzz.h"

#include <fcntl.h>
#include <ftw.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char scratch_dir[256];

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(p);
}

void fuzz_scratch_remove(void)
{
    if (scratch_dir[0]) nftw(scratch_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    scratch_dir[0] = 0;
}

const char *fuzz_scratch(void)
{
    if (!scratch_dir[0]) {
        const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        snprintf(scratch_dir, sizeof(scratch_dir), "%s/sala-fuzz-%ld", base, (long)getpid());
        mkdir(scratch_dir, 0700);
        static bool registered;
        if (!registered) atexit(fuzz_scratch_remove);
        registered = true;
    }
    return scratch_dir;
}

int fuzz_write(const char *dir, const char *name, const void *data, size_t len)
{
    char p[512];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return -1;
    const char *c = data;
    while (len) {
        ssize_t k = write(fd, c, len);
        if (k <= 0) {
            close(fd);
            return -1;
        }
        c += k;
        len -= (size_t)k;
    }
    return close(fd);
}

size_t fuzz_split(const uint8_t *data, size_t size, const char *sep, size_t max, size_t *off,
                  size_t *len)
{
    size_t sl = strlen(sep), n = 0, start = 0;
    /* memmem, not memcmp at every offset: libFuzzer hooks each memcmp call */
    while (n + 1 < max && sl) {
        const uint8_t *hit = memmem(data + start, size - start, sep, sl);
        if (!hit) break;
        off[n] = start;
        len[n] = (size_t)(hit - data) - start;
        n++;
        start = (size_t)(hit - data) + sl;
    }
    off[n] = start;
    len[n] = size - start;
    return n + 1;
}
