/* cu_kprof.cu: exact kernel times for the benchmark profile (profile enable = 2): CUPTI's
 * activity records of every kernel the process runs (start and end on the device clock, written
 * by the driver; no event or synchronisation goes into the stream, so the step being measured
 * keeps its launch pattern), summed per op category by kernel name. libcupti is dlopen'ed when
 * asked for (it ships with the CUDA toolkit; the backend does not link it), so a machine without
 * it loses only this profile mode.
 *
 * The kernels' [start, end) intervals are kept too: at the stop, sorted and merged, their union is
 * the device's busy time, and the sum of the durations minus the union goes to OP_OVERLAP (kernels
 * resident at once: programmatic dependent launch, side streams).
 *
 * One measurement at a time per process (CUPTI's buffer callbacks are process-wide); the sums
 * are guarded by a mutex because CUPTI may deliver buffers on its own thread.
 *
 * With SALA_KPROF_NAMES=<file> set, each stop also appends one line per kernel name to that file
 * (seconds, launches, category, mangled name; `c++filt` reads the names): the per-kernel table
 * behind the category sums, for finding where "other" or one op's time goes. */
#include "engine/cuda/cu_int.h"

#include <cupti.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>

/* One kernel name's row of the SALA_KPROF_NAMES table. */
struct kp_name {
    char *name;
    double sec;
    int64_t n;
    int cat;
};

typedef CUptiResult (*reg_fn)(CUpti_BuffersCallbackRequestFunc, CUpti_BuffersCallbackCompleteFunc);
typedef CUptiResult (*kind_fn)(CUpti_ActivityKind);
typedef CUptiResult (*flush_fn)(uint32_t);
typedef CUptiResult (*next_fn)(uint8_t *, size_t, CUpti_Activity **);

static struct {
    void *lib;
    reg_fn reg;
    kind_fn enable, disable;
    flush_fn flush;
    next_fn next;
    pthread_mutex_t mu;
    double sec[OP_N];
    int64_t kernels;
    bool on;
    uint64_t (*iv)[2];   /* kernel intervals [start, end), ns on the device clock */
    size_t niv, civ;
    bool iv_lost;        /* an interval could not be kept: no overlap figure */
    kp_name *nm;         /* SALA_KPROF_NAMES rows */
    size_t nnm, cnm;
    bool names;          /* SALA_KPROF_NAMES was set at the start */
} kp = {NULL, NULL, NULL, NULL, NULL, NULL, PTHREAD_MUTEX_INITIALIZER, {0}, 0, false,
        NULL, 0, 0, false, NULL, 0, 0, false};

/* Adds one kernel's seconds to its name's row (kp.mu held; names are few: a linear search).
 * A name that cannot be kept is dropped from the table, not from the category sums. */
static void kp_name_add(const char *n, double sec, int cat)
{
    if (!n) return;
    for (size_t i = 0; i < kp.nnm; i++)
        if (!strcmp(kp.nm[i].name, n)) {
            kp.nm[i].sec += sec;
            kp.nm[i].n++;
            return;
        }
    if (kp.nnm == kp.cnm) {
        const size_t c = kp.cnm ? 2 * kp.cnm : 64;
        void *p = realloc(kp.nm, c * sizeof(kp.nm[0]));
        if (!p) return;
        kp.nm = (kp_name *)p;
        kp.cnm = c;
    }
    char *d = strdup(n);
    if (!d) return;
    kp.nm[kp.nnm++] = {d, sec, 1, cat};
}

static int kp_cmp_name(const void *a, const void *b)
{
    const double x = ((const kp_name *)a)->sec, y = ((const kp_name *)b)->sec;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* Appends the name table to the file SALA_KPROF_NAMES names, longest first, and empties it
 * (kp.mu held). A file that cannot be opened loses the table only. */
static void kp_names_flush(void)
{
    const char *path = getenv("SALA_KPROF_NAMES");
    FILE *f = path && *path && kp.nnm ? fopen(path, "a") : NULL;
    if (f) {
        static const char *cat[OP_N] = {"gemm", "lightning", "stage1", "attn", "dense_attn",
                                        "other", "topk", "idle", "overlap"};
        qsort(kp.nm, kp.nnm, sizeof(kp.nm[0]), kp_cmp_name);
        fprintf(f, "# kernel profile: seconds, launches, category, name\n");
        for (size_t i = 0; i < kp.nnm; i++)
            fprintf(f, "%.6f\t%lld\t%s\t%s\n", kp.nm[i].sec, (long long)kp.nm[i].n,
                    kp.nm[i].cat >= 0 && kp.nm[i].cat < OP_N ? cat[kp.nm[i].cat] : "?",
                    kp.nm[i].name);
        fclose(f);
    }
    for (size_t i = 0; i < kp.nnm; i++) free(kp.nm[i].name);
    kp.nnm = 0;
}

/* Appends [s, e) to kp.iv (kp.mu held). */
static void kp_keep(uint64_t s, uint64_t e)
{
    if (kp.niv == kp.civ) {
        const size_t c = kp.civ ? 2 * kp.civ : 65536;
        void *p = c > kp.civ ? realloc(kp.iv, c * sizeof(kp.iv[0])) : NULL;
        if (!p) {
            kp.iv_lost = true;
            return;
        }
        kp.iv = (uint64_t(*)[2])p;
        kp.civ = c;
    }
    kp.iv[kp.niv][0] = s;
    kp.iv[kp.niv][1] = e;
    kp.niv++;
}

static int kp_cmp_iv(const void *a, const void *b)
{
    const uint64_t x = ((const uint64_t *)a)[0], y = ((const uint64_t *)b)[0];
    return x < y ? -1 : x > y;
}

/* Device idle spans of at least this many ns count as OP_IDLE in the kernel profile: a wait for
 * the host (a step boundary), not a launch bubble between two queued kernels (~1 us). */
#define KP_IDLE_NS 10000

/* Seconds of the kept intervals' union (sorts them); *idle = seconds of the idle spans between
 * them of at least KP_IDLE_NS. */
static double kp_union(double *idle)
{
    qsort(kp.iv, kp.niv, sizeof(kp.iv[0]), kp_cmp_iv);
    uint64_t tot = 0, s = 0, e = 0, gap = 0;
    for (size_t i = 0; i < kp.niv; i++) {
        if (i == 0 || kp.iv[i][0] > e) {   /* a new busy span */
            tot += e - s;
            if (i && kp.iv[i][0] - e >= KP_IDLE_NS) gap += kp.iv[i][0] - e;
            s = kp.iv[i][0];
            e = kp.iv[i][1];
        } else if (kp.iv[i][1] > e) {
            e = kp.iv[i][1];
        }
    }
    tot += e - s;
    *idle = (double)gap * 1e-9;
    return (double)tot * 1e-9;
}

/* The op category of a kernel by its (mangled) name: the backend's own kernels by their names
 * (cu_kernels, cu_attn, cu_infllm, cu_lightning), cuBLAS's by the words its kernels carry.
 * Attention kernels count as sparse (dense attention runs only below dense_len). */
static int kp_cat(const char *n)
{
    if (!n) return OP_OTHER;
    if (strstr(n, "la_")) return OP_LIGHTNING;
    if (strstr(n, "topk")) return OP_TOPK;
    if (strstr(n, "score") || strstr(n, "compress")) return OP_SCORE;
    if (strstr(n, "attn") || strstr(n, "flash") || strstr(n, "ring")) return OP_SPARSE_ATTN;
    if (strstr(n, "norm") || strstr(n, "swiglu") || strstr(n, "gate") || strstr(n, "embed") ||
        strstr(n, "sparse_prep"))
        return OP_OTHER;
    if (strstr(n, "gemm") || strstr(n, "Gemm") || strstr(n, "xmma") || strstr(n, "nvjet") ||
        strstr(n, "cutlass") || strstr(n, "splitK") || strstr(n, "gemv") || strstr(n, "cublas"))
        return OP_GEMM;
    return OP_OTHER;
}

static void CUPTIAPI kp_request(uint8_t **buf, size_t *size, size_t *max_records)
{
    const size_t n = (size_t)8 << 20;
    *buf = (uint8_t *)aligned_alloc(8, n);
    *size = *buf ? n : 0;
    *max_records = 0;
}

static void CUPTIAPI kp_complete(CUcontext, uint32_t, uint8_t *buf, size_t, size_t valid)
{
    CUpti_Activity *r = NULL;
    double sec[OP_N] = {0};
    int64_t n = 0;
    pthread_mutex_lock(&kp.mu);
    while (buf && kp.next(buf, valid, &r) == CUPTI_SUCCESS) {
        if (r->kind != CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL &&
            r->kind != CUPTI_ACTIVITY_KIND_KERNEL)
            continue;
        const CUpti_ActivityKernel10 *k = (const CUpti_ActivityKernel10 *)r;
        if (k->end > k->start) {
            const int c = kp_cat(k->name);
            sec[c] += (double)(k->end - k->start) * 1e-9;
            kp_keep(k->start, k->end);
            if (kp.names) kp_name_add(k->name, (double)(k->end - k->start) * 1e-9, c);
        }
        n++;
    }
    for (int i = 0; i < OP_N; i++) kp.sec[i] += sec[i];
    kp.kernels += n;
    pthread_mutex_unlock(&kp.mu);
    free(buf);
}

int cu_kprof_start(sala_err *e)
{
    if (kp.on) return SALA_OK;
    if (!kp.lib) {
        void *h = dlopen("libcupti.so.13", RTLD_NOW | RTLD_LOCAL);
        if (!h) h = dlopen("libcupti.so", RTLD_NOW | RTLD_LOCAL);
        if (!h)
            return sala_errf(e, SALA_EUNSUP, "CUDA kernel profile: no libcupti (%s)", dlerror());
        kp.reg = (reg_fn)dlsym(h, "cuptiActivityRegisterCallbacks");
        kp.enable = (kind_fn)dlsym(h, "cuptiActivityEnable");
        kp.disable = (kind_fn)dlsym(h, "cuptiActivityDisable");
        kp.flush = (flush_fn)dlsym(h, "cuptiActivityFlushAll");
        kp.next = (next_fn)dlsym(h, "cuptiActivityGetNextRecord");
        if (!kp.reg || !kp.enable || !kp.disable || !kp.flush || !kp.next) {
            dlclose(h);
            return sala_errf(e, SALA_EUNSUP,
                             "CUDA kernel profile: libcupti lacks the activity API");
        }
        kp.lib = h;
        if (kp.reg(kp_request, kp_complete) != CUPTI_SUCCESS)
            return sala_errf(e, SALA_EUNSUP, "CUDA kernel profile: cuptiActivityRegisterCallbacks");
    }
    pthread_mutex_lock(&kp.mu);
    memset(kp.sec, 0, sizeof(kp.sec));
    kp.kernels = 0;
    kp.niv = 0;
    kp.iv_lost = false;
    const char *nf = getenv("SALA_KPROF_NAMES");
    kp.names = nf && *nf;
    pthread_mutex_unlock(&kp.mu);
    if (kp.enable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL) != CUPTI_SUCCESS)
        return sala_errf(e, SALA_EUNSUP, "CUDA kernel profile: cuptiActivityEnable failed");
    kp.on = true;
    return SALA_OK;
}

/* Stops the records (the caller has synchronised the device) and adds the kernel seconds per
 * category to sec, to sec[OP_OVERLAP] the seconds counted more than once and to sec[OP_IDLE]
 * the device's idle spans of >= 10 us between kernels (none when an interval could not be
 * kept); *kernels = kernels seen. No-op when not started. */
void cu_kprof_stop(double *sec, int64_t *kernels)
{
    if (!kp.on) return;
    kp.disable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL);
    kp.flush(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED);
    kp.on = false;
    pthread_mutex_lock(&kp.mu);
    double sum = 0;
    for (int i = 0; i < OP_N; i++) sum += kp.sec[i], sec[i] += kp.sec[i];
    double idle = 0;
    if (!kp.iv_lost && kp.niv) {
        sec[OP_OVERLAP] += sum - kp_union(&idle);
        sec[OP_IDLE] += idle;
    }
    if (kernels) *kernels = kp.kernels;
    kp.niv = 0;
    kp_names_flush();
    pthread_mutex_unlock(&kp.mu);
}
