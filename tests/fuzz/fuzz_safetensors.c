/* fuzz_safetensors.c: st_parse on arbitrary bytes (the 8-byte length, the JSON header, dtypes,
 * shapes, offsets), then every accessor on what it accepted. */
#include <stdlib.h>

#include "engine/safetensors.h"
#include "tests/fuzz/fuzz.h"

static int one(const uint8_t *data, size_t size)
{
    st_file *f = NULL;
    sala_err e;
    if (st_parse(data, size, "fuzz.safetensors", &f, &e) != SALA_OK) return 0;
    float out[16];
    for (size_t i = 0; i < st_count(f); i++) {
        const st_tensor *t = st_at(f, i);
        if (st_find(f, t->name) != t) abort();   /* the parser's own index disagrees */
        size_t n = t->numel < 16 ? (size_t)t->numel : 16;
        st_to_f32(t, 0, n, out);
        if (t->numel > 0) st_to_f32(t, (size_t)t->numel - 1, 1, out);
    }
    st_metadata(f, "format");
    st_close(f);
    return 0;
}

FUZZ_TARGET(safetensors, one)
