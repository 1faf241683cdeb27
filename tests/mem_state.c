/* mem_state.c: see mem_state.h. */
#include "mem_state.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

mem_sec *mem_find(mem_store *m, const char *name, bool add)
{
    for (int i = 0; i < m->ns; i++)
        if (!strcmp(m->s[i].name, name)) return &m->s[i];
    if (!add || m->ns == 16) return NULL;
    mem_sec *s = &m->s[m->ns++];
    snprintf(s->name, sizeof(s->name), "%s", name);
    s->d = NULL;
    s->n = 0;
    return s;
}

int mem_write(void *ud, const char *name, const void *data, size_t n, sala_err *e)
{
    mem_sec *s = mem_find(ud, name, true);
    if (!s) return sala_errf(e, SALA_EINTERNAL, "too many sections");
    if (!n) return SALA_OK;
    unsigned char *d = realloc(s->d, s->n + n);
    if (!d) return sala_errf(e, SALA_ENOMEM, "out of memory");
    memcpy(d + s->n, data, n);
    s->d = d;
    s->n += n;
    return SALA_OK;
}

int mem_size(void *ud, const char *name, size_t *n, sala_err *e)
{
    mem_sec *s = mem_find(ud, name, false);
    if (!s) return sala_errf(e, SALA_ENOTFOUND, "no section %s", name);
    *n = s->n;
    return SALA_OK;
}

int mem_read(void *ud, const char *name, size_t off, void *dst, size_t n, sala_err *e)
{
    mem_store *m = ud;
    mem_sec *s = mem_find(m, name, false);
    if (!s || off > s->n || n > s->n - off)
        return sala_errf(e, SALA_EINVAL, "bad read of %s", name);
    if (strcmp(name, "eng.header")) m->body_reads++;
    memcpy(dst, s->d + off, n);
    return SALA_OK;
}

void mem_free(mem_store *m)
{
    for (int i = 0; i < m->ns; i++) free(m->s[i].d);
    m->ns = 0;
}
