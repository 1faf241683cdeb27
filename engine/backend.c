/* backend.c: the backend registry, the one place that knows which backends exist.
 * cpu:  linked in (engine/cpu/).
 * cuda: a shared object, $SALA_CUDA_LIB when set, else libsala_cuda.so in the directory of
 *       the running executable, exporting `const eng_backend *sala_cuda_backend(void)` and
 *       `int sala_cuda_probe(char *why, size_t cap)` (0 when a usable GPU is present). It is
 *       loaded on first use; when it is missing, cannot load (no CUDA runtime) or finds no GPU,
 *       the caller gets "CUDA backend not available: <reason>" and the CPU keeps working. */
#include "engine/backend.h"

#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const eng_backend *cuda_load(sala_err *e)
{
    char exe[PATH_MAX], so[PATH_MAX + 32];
    const char *env = getenv("SALA_CUDA_LIB");
    if (env && *env) {
        snprintf(so, sizeof(so), "%s", env);
    } else {
        ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
        if (n <= 0)
            return sala_errf(e, SALA_EUNSUP,
                             "CUDA backend not available: cannot locate the executable"), NULL;
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) *slash = 0;
        snprintf(so, sizeof(so), "%s/libsala_cuda.so", exe);
    }
    void *h = dlopen(so, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *why = dlerror();
        sala_errf(e, SALA_EUNSUP, "CUDA backend not available: %s", why ? why : so);
        return NULL;
    }
    int (*probe)(char *, size_t) = NULL;
    *(void **)&probe = dlsym(h, "sala_cuda_probe");
    char why[256] = "";
    if (!probe || probe(why, sizeof(why)) != 0) {
        sala_errf(e, SALA_EUNSUP, "CUDA backend not available: %s",
                  probe ? why : "libsala_cuda.so has no sala_cuda_probe");
        dlclose(h);
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
