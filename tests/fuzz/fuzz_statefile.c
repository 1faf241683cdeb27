/* fuzz_statefile.c: the persisted-state container (header, meta, section directory, chunk
 * checksums) read from arbitrary bytes: sf_open, the meta accessors, sf_verify and reads of
 * every section, with and without expected meta fields. sf_open takes a path: the input is
 * written to a file in the scratch directory first. */
#include <stdio.h>
#include <stdlib.h>

#include "engine/statefile.h"
#include "tests/fuzz/fuzz.h"

static int one(const uint8_t *data, size_t size)
{
    static char path[512];
    if (!path[0]) snprintf(path, sizeof(path), "%s/state.sala", fuzz_scratch());
    if (fuzz_write(fuzz_scratch(), "state.sala", data, size) != 0) return 0;
    sf_reader *r = NULL;
    sala_err e;
    const sf_field expect[] = {{"model", "m"}};
    size_t nexp = size && (data[size - 1] & 1) ? 1 : 0;
    if (sf_open(path, expect, nexp, &r, &e) != SALA_OK) return 0;
    (void)sf_meta(r, "model");
    static const char *const names[] = {"kv", "layers", "tokens", "x", ""};
    unsigned char buf[256];
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        size_t sz;
        if (sf_section_size(r, names[i], &sz, &e) != SALA_OK) continue;
        sf_read(r, names[i], 0, buf, sz < sizeof(buf) ? sz : sizeof(buf), &e);
        if (sz > 3) sf_read(r, names[i], sz / 2, buf, sz - sz / 2 < 64 ? sz - sz / 2 : 64, &e);
        sf_read(r, names[i], sz, buf, 1, &e);   /* past the end: refused */
    }
    sf_verify(r, &e);
    sf_close(r);
    return 0;
}

FUZZ_TARGET(statefile, one)
