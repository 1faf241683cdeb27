/* fuzz_model.c: the model directory loader with a hostile model.safetensors.index.json and
 * hostile shards. The input is cut at "\n--shard--\n": the first part is the index, the next
 * (up to 3) are written as s0.safetensors, s1.safetensors, s2.safetensors beside a fixed tiny
 * config.json; then eng_model_open runs on the directory. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/model.h"
#include "tests/fuzz/fuzz.h"

#include "tests/fuzz/fuzz_model_config.h"

static int one(const uint8_t *data, size_t size)
{
    static char dir[512];
    if (!dir[0]) {
        snprintf(dir, sizeof(dir), "%s/model", fuzz_scratch());
        if (mkdir(dir, 0700) != 0 && access(dir, F_OK) != 0) return 0;
        fuzz_write(dir, "config.json", fuzz_model_config, strlen(fuzz_model_config));
    }
    size_t off[4], len[4];
    size_t n = fuzz_split(data, size, "\n--shard--\n", 4, off, len);
    fuzz_write(dir, "model.safetensors.index.json", data + off[0], len[0]);
    for (size_t i = 0; i < 3; i++) {
        char nm[32];
        snprintf(nm, sizeof(nm), "s%zu.safetensors", i);
        if (i + 1 < n) {
            fuzz_write(dir, nm, data + off[i + 1], len[i + 1]);
        } else {
            char p[600];
            snprintf(p, sizeof(p), "%s/%s", dir, nm);
            unlink(p);
        }
    }
    eng_model *m = NULL;
    sala_err e;
    if (eng_model_open(dir, &m, &e) == SALA_OK) eng_model_close(m);
    return 0;
}

FUZZ_TARGET(model, one)
