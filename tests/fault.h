/* fault.h: fault injection for the test binary only (tests/fault.c; the Makefile links
 * build/sala-test with -Wl,--wrap for malloc, calloc, realloc, strdup, strndup, write, pwrite,
 * fsync, fdatasync and rename). Calls made by our own objects go through counters; calls made
 * inside libraries (SQLite, cJSON, libxml2, Poppler, libc itself) are not redirected, except
 * where a library lets us route them: cJSON's allocator (the project's own hooks of
 * common/json.c call malloc from our object, so they are counted once sala_json_init ran) and
 * SQLite's unix VFS write calls (fault_sqlite_io).
 *
 * Use: fault_arm(FAULT_ALLOC, n, 0) makes the n-th allocation (1-based, counted from the arm)
 * fail with ENOMEM and nothing else; fault_arm(FAULT_WRITE | FAULT_FSYNC, n, ENOSPC) fails the
 * n-th call among writes and fsyncs with ENOSPC; FAULT_SHORT makes the n-th write write only
 * part of its bytes and succeed. fault_fired() says whether the armed fault was reached, so a
 * sweep runs n = 1, 2, ... until an operation completes without reaching it. */
#ifndef SALA_TEST_FAULT_H
#define SALA_TEST_FAULT_H

#include <stdbool.h>

enum {
    FAULT_ALLOC = 1 << 0,    /* malloc, calloc, realloc, strdup, strndup */
    FAULT_WRITE = 1 << 1,    /* write, pwrite (and SQLite's writes under fault_sqlite_io) */
    FAULT_FSYNC = 1 << 2,    /* fsync, fdatasync */
    FAULT_RENAME = 1 << 3,   /* rename */
    FAULT_SHORT = 1 << 4,    /* with FAULT_WRITE: the n-th write is short instead of failing */
};

void fault_arm(unsigned kinds, long nth, int err);
void fault_disarm(void);
bool fault_fired(void);
/* Calls of the armed kinds seen since fault_arm. */
long fault_calls(void);

/* Route SQLite's unix VFS write/pwrite/pwrite64 through the counted write calls (on/off). */
int fault_sqlite_io(bool on);
/* Route SQLite's allocations through the counted allocator (on) or back to its own (off). Only
 * with no database connection open in the process (it shuts SQLite down and starts it again). */
int fault_sqlite_alloc(bool on);

#endif
