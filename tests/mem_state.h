/* mem_state.h: an in-memory store of engine state sections for tests: eng_seq_save writes
 * into it (mem_write), eng_seq_load reads from it ({mem_size, mem_read, store}). body_reads
 * counts reads of sections other than eng.header (to check refusals read nothing else). */
#ifndef SALA_TEST_MEM_STATE_H
#define SALA_TEST_MEM_STATE_H

#include <stdbool.h>
#include <stddef.h>

#include "common.h"

typedef struct {
    char name[32];
    unsigned char *d;
    size_t n;
} mem_sec;
typedef struct {
    mem_sec s[16];
    int ns;
    int body_reads;
} mem_store;

/* The section called name, or NULL; with add, a new empty one is made when missing. */
mem_sec *mem_find(mem_store *m, const char *name, bool add);
int mem_write(void *ud, const char *name, const void *data, size_t n, sala_err *e);
int mem_size(void *ud, const char *name, size_t *n, sala_err *e);
int mem_read(void *ud, const char *name, size_t off, void *dst, size_t n, sala_err *e);
void mem_free(mem_store *m);

#endif
