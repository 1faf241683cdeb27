/* json.c: see json.h. */
#include "json.h"

#include <pthread.h>
#include <stdlib.h>

static _Thread_local bool json_oom;
static pthread_once_t json_once = PTHREAD_ONCE_INIT;

static void *json_malloc(size_t n)
{
    void *p = malloc(n);
    if (!p) json_oom = true;
    return p;
}

static void json_free(void *p) { free(p); }

static void json_hooks(void)
{
    cJSON_Hooks h = {json_malloc, json_free};
    cJSON_InitHooks(&h);
}

void sala_json_init(void) { pthread_once(&json_once, json_hooks); }

cJSON *sala_json_parse(const char *s, size_t len, const char **end, bool *oom)
{
    sala_json_init();
    json_oom = false;
    cJSON *root = end ? cJSON_ParseWithLengthOpts(s, len, end, 0) : cJSON_ParseWithLength(s, len);
    *oom = !root && json_oom;
    return root;
}
