/* fuzz_config.c: eng_config_parse (config.json) on arbitrary bytes, then the derived values. */
#include "engine/config.h"
#include "tests/fuzz/fuzz.h"

static int one(const uint8_t *data, size_t size)
{
    static eng_config c;
    sala_err e;
    if (eng_config_parse((const char *)data, size, "config.json", &c, &e) != SALA_OK) return 0;
    char buf[64];
    eng_config_layout(&c, buf, sizeof(buf));
    (void)eng_config_residual_scale(&c);
    (void)eng_config_logit_scale(&c);
    (void)eng_config_topk_blocks(&c);
    return 0;
}

FUZZ_TARGET(config, one)
