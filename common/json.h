/* json.h: cJSON parsing that tells a failed allocation from bad JSON. cJSON_Parse* return NULL
 * for both, so a loader under memory pressure would blame the file ("not valid JSON"). The
 * first call installs cJSON allocation hooks (process-wide; plain malloc and free underneath)
 * that note a failed allocation in a thread-local flag, which sala_json_parse reads back. */
#ifndef SALA_JSON_H
#define SALA_JSON_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

/* Install the hooks now (idempotent, thread-safe); sala_json_parse does it on first use. Call
 * it before creating cJSON values whose allocations should go through the hooks too. */
void sala_json_init(void);
/* Parse s[0..len). With end != NULL, trailing bytes are allowed and *end points past the value
 * (cJSON_ParseWithLengthOpts); otherwise the text must be one JSON value. Returns the root, or
 * NULL with *oom = true when an allocation failed and false when the text is not valid JSON. */
cJSON *sala_json_parse(const char *s, size_t len, const char **end, bool *oom);

#endif
