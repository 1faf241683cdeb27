/* backend.c: the backend registry, the one place that knows which backends exist.
 * cpu:  linked in (engine/cpu/).
 * cuda: a shared object libsala_cuda.so next to the executable, exporting
 *       `const eng_backend *sala_cuda_backend(void)`. It is loaded on first use; when it is
 *       missing or refuses to start, the caller gets "CUDA backend not available: <reason>". */
#include "engine/backend.h"

#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static const eng_backend *cuda_load(sala_err *e)
{
    char exe[PATH_MAX], so[PATH_MAX + 32];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n <= 0)
        return sala_errf(e, SALA_EUNSUP, "CUDA backend not available: cannot locate the executable"),
               NULL;
    exe[n] = 0;
    char *slash = strrchr(exe, '/');
    if (slash) *slash = 0;
    snprintf(so, sizeof(so), "%s/libsala_cuda.so", exe);
    void *h = dlopen(so, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *why = dlerror();
        sala_errf(e, SALA_EUNSUP, "CUDA backend not available: %s", why ? why : so);
        return NULL;
    }
    const eng_backend *(*get)(void) = NULL;
    *(void **)&get = dlsym(h, "sala_cuda_backend");
    const eng_backend *b = get ? get() : NULL;
    if (!b) {
        sala_errf(e, SALA_EUNSUP, "CUDA backend not available: %s has no usable sala_cuda_backend",
                  so);
        dlclose(h);
        return NULL;
    }
    return b;   /* the handle stays open for the life of the process */
}

const eng_backend *eng_backend_get(const char *name, sala_err *e)
{
    if (!name || !strcmp(name, "cpu")) return &eng_cpu_backend;
    if (!strcmp(name, "cuda")) return cuda_load(e);
    sala_errf(e, SALA_EINVAL, "unknown backend '%s' (known: cpu, cuda)", name);
    return NULL;
}
