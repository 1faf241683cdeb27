/* worker.h: run a parser (Poppler, libxml2) in a child process, so that a crash, a hang or a
 * memory bomb in it rejects one file and nothing else.
 *
 * The parent has already read the file into memory; the child sees those bytes through fork's
 * copy-on-write, parses them into an ing_doc and sends it back over a pipe in frames. The parent
 * enforces a wall-clock timeout and a cap on the bytes it accepts, kills the child on either,
 * and turns every abnormal end (signal, CPU limit, malformed frames) into a reason string.
 *
 * Isolation in the child (see worker.c for the details): RLIMIT_AS, RLIMIT_CPU, RLIMIT_FSIZE=0,
 * RLIMIT_CORE=0, stdio on /dev/null, every other descriptor closed, PR_SET_NO_NEW_PRIVS and a
 * seccomp filter under which sockets, exec, ptrace and every call that creates, writes, renames
 * or removes files fail with EPERM: no network, no programs, no changes to the file system. */
#ifndef SALA_WORKER_H
#define SALA_WORKER_H

#include <stddef.h>

#include "common.h"
#include "doc.h"

typedef struct {
    size_t mem_bytes;   /* RLIMIT_AS of the child; 0: no limit (sanitizer builds force 0) */
    int cpu_s;          /* RLIMIT_CPU of the child, seconds; 0: none */
    double wall_s;      /* wall-clock timeout, seconds; 0: none */
    size_t out_cap;     /* most bytes accepted from all shards of one file together */
} wk_limits;

/* Defaults: 2 GiB address space, 120 s CPU, 300 s wall, 512 MiB output. */
void wk_limits_default(wk_limits *l);

/* A parser run in the child: extract shard `shard` of `nshards` (a parser that cannot shard
 * handles everything when shard == 0 and nothing otherwise) of buf[0..len) into doc. name is
 * for messages. Returns SALA_OK or a status with the reason in *e. */
typedef int (*wk_fn)(const char *name, const char *buf, size_t len, int shard, int nshards,
                     ing_doc *doc, sala_err *e);

/* Run fn over buf in nshards child processes at once (1..16) and gather their documents, in
 * shard order, into out (which must be empty). On failure out is left empty and *e says why:
 * the parser's own message, or what happened to the worker ("killed by signal 11
 * (Segmentation fault)", "timed out after 5 s", ...). */
int wk_run(const char *name, const char *buf, size_t len, wk_fn fn, int nshards,
           const wk_limits *lim, ing_doc *out, sala_err *e);

#endif
