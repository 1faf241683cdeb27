/* mkseeds.c: write the generated seed inputs of the fuzz targets (`make fuzz-seeds`):
 * safetensors (a tiny model's weights), model (index.json + two shards, in fuzz_model.c's
 * "\n--shard--\n" framing, for its fixed config), statefile (small valid state files) and
 * config (the fixed config). Usage: mkseeds OUTDIR (OUTDIR/<target>/ must exist). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/model.h"
#include "engine/random_model.h"
#include "engine/safetensors.h"
#include "engine/statefile.h"

#include "tests/fuzz/fuzz_model_config.h"

static char *slurp(const char *p, size_t *n)
{
    char *b;
    sala_err e;
    if (sala_file_read(p, 1u << 30, &b, n, &e)) {
        fprintf(stderr, "%s\n", e.msg);
        exit(1);
    }
    return b;
}

static void put(const char *out, const char *t, const char *name, const void *d, size_t n)
{
    char p[4096];
    snprintf(p, sizeof(p), "%s/%s/%s", out, t, name);
    FILE *f = fopen(p, "wb");
    if (!f || fwrite(d, 1, n, f) != n || fclose(f)) {
        perror(p);
        exit(1);
    }
}

/* Write the tensors of src with index parity `part` (0 or 1) as a shard; returns its bytes. */
static char *shard(st_file *src, int part, const char *path, size_t *n)
{
    st_writer *w = st_writer_new();
    sala_err e;
    for (size_t i = 0; i < st_count(src); i++) {
        const st_tensor *t = st_at(src, i);
        if ((int)(i % 2) != part) continue;
        if (st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data, &e)) goto bad;
    }
    if (st_writer_write(w, path, &e)) goto bad;
    st_writer_free(w);
    return slurp(path, n);
bad:
    fprintf(stderr, "%s\n", e.msg);
    exit(1);
}

int main(int argc, char **argv)
{
    if (argc != 2) return 2;
    const char *out = argv[1];
    char tmp[] = "/tmp/mkseeds-XXXXXX";
    if (!mkdtemp(tmp)) return 1;
    char cp[4200], dir[4200], p[4300];
    snprintf(cp, sizeof(cp), "%s/config.json", tmp);
    snprintf(dir, sizeof(dir), "%s/m", tmp);
    put(tmp, ".", "config.json", fuzz_model_config, strlen(fuzz_model_config));
    put(out, "config", "fixed.json", fuzz_model_config, strlen(fuzz_model_config));
    sala_err e;
    if (eng_random_model_write(cp, dir, 1, NULL, &e)) {
        fprintf(stderr, "%s\n", e.msg);
        return 1;
    }
    size_t n;
    snprintf(p, sizeof(p), "%s/model.safetensors", dir);
    char *st = slurp(p, &n);
    put(out, "safetensors", "tiny.safetensors", st, n);
    st_file *f;
    if (st_parse(st, n, "tiny", &f, &e)) return 1;
    /* model: index + shard a + shard b */
    size_t na, nb;
    char pa[4300], pb[4300];
    snprintf(pa, sizeof(pa), "%s/a", tmp);
    snprintf(pb, sizeof(pb), "%s/b", tmp);
    char *a = shard(f, 0, pa, &na), *b = shard(f, 1, pb, &nb);
    size_t cap = 65536 + na + nb, k = 0;
    char *buf = malloc(cap);
    k += (size_t)snprintf(buf + k, cap - k, "{\"metadata\":{},\"weight_map\":{");
    for (size_t i = 0; i < st_count(f); i++)
        k += (size_t)snprintf(buf + k, cap - k, "%s\"%s\":\"s%zu.safetensors\"", i ? "," : "",
                              st_at(f, i)->name, i % 2);
    k += (size_t)snprintf(buf + k, cap - k, "}}\n--shard--\n");
    memcpy(buf + k, a, na);
    k += na;
    k += (size_t)snprintf(buf + k, cap - k, "\n--shard--\n");
    memcpy(buf + k, b, nb);
    k += nb;
    put(out, "model", "two-shards", buf, k);
    free(a);
    free(b);
    free(buf);
    st_close(f);
    free(st);
    /* statefile: one small, one with three sections, one with an empty section */
    snprintf(p, sizeof(p), "%s/s", tmp);
    for (int v = 0; v < 3; v++) {
        sf_field meta[] = {{"model", "m"}, {"tokens", "12"}, {"layers", "[1,2]"}};
        sf_writer *w;
        if (sf_create(p, meta, v == 0 ? 1 : 3, &w, &e)) return 1;
        unsigned char data[300];
        for (size_t i = 0; i < sizeof(data); i++) data[i] = (unsigned char)(i * 7);
        sf_write(w, "kv", data, v == 0 ? 16 : 300, &e);
        if (v >= 1) sf_write(w, "layers", data, 40, &e);
        if (v == 2) sf_write(w, "x", data, 0, &e);
        if (v == 2) sf_write(w, "tokens", data, 8, &e);
        if (sf_commit(w, &e)) return 1;
        char *s = slurp(p, &n), nm[32];
        snprintf(nm, sizeof(nm), "state%d.sala", v);
        put(out, "statefile", nm, s, n);
        free(s);
    }
    char cmd[4300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
    return system(cmd) ? 1 : 0;
}
