/* statefile.h: the on-disk container for persisted engine state (cached contexts).
 *
 * Layout (all integers little-endian):
 *   header   "SALASTAT" u32 version u32 0 u64 meta_len u64 xxh3(meta)   (32 bytes)
 *   meta     JSON object of string fields (model fingerprint, tokenizer hash, token-stream
 *            hash, length, layer table, ...), meta_len bytes
 *   sections raw bytes, each cut into chunks of SF_CHUNK bytes with one xxh3-64 per chunk
 *   dir      JSON array [{"name","offset","size","sums":[hex, ...]}]
 *   footer   u64 dir_offset u64 dir_len u64 xxh3(dir) "SALAEND\0"             (32 bytes)
 *
 * Writing is atomic: data goes to "<path>.tmp-<pid>", which is fsync'ed, renamed over path,
 * and the directory fsync'ed; a crash at any point leaves the old file or the new one, and
 * sf_cleanup removes stale temp files. Reading checks the header, footer, directory and meta
 * before anything is used, and every chunk's checksum as it is read.
 *
 * Ownership: sf_create/sf_open return handles closed by sf_abort/sf_commit and sf_close
 * (NULL is a no-op for sf_abort/sf_close). */
#ifndef SALA_STATEFILE_H
#define SALA_STATEFILE_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

#define SF_VERSION 1
#define SF_CHUNK ((size_t)4 << 20)
#define SF_MAX_META (16u << 20)
#define SF_MAX_SECTIONS 4096

typedef struct sf_writer sf_writer;
typedef struct sf_reader sf_reader;

/* A key/value pair of the meta object (both NUL-terminated strings). */
typedef struct { const char *key, *value; } sf_field;

int sf_create(const char *path, const sf_field *meta, size_t nmeta, sf_writer **out, sala_err *e);
/* Append a section; sections may be written in pieces: repeated calls with the same name
 * directly after each other extend it. */
int sf_write(sf_writer *w, const char *name, const void *data, size_t n, sala_err *e);
/* Finish: directory, footer, fsync, rename over the final path, fsync the directory. The
 * writer is freed whatever the result; on failure the old file (if any) is untouched. */
int sf_commit(sf_writer *w, sala_err *e);
void sf_abort(sf_writer *w);

/* Open and check path. expect (may be NULL) lists meta fields that must match exactly; a
 * mismatch is refused with a message naming the field, the expected and the actual value. */
int sf_open(const char *path, const sf_field *expect, size_t nexpect, sf_reader **out, sala_err *e);
void sf_close(sf_reader *r);
/* Meta value for key, or NULL. Valid until sf_close. */
const char *sf_meta(const sf_reader *r, const char *key);
/* Size of a section; SALA_ENOTFOUND when absent. */
int sf_section_size(const sf_reader *r, const char *name, size_t *size, sala_err *e);
/* Read n bytes of a section from byte offset off into dst, verifying the checksum of every
 * chunk touched. A checksum failure names the file, the section and the chunk. May be called
 * from several threads at once on one reader (a backend's parallel upload does). */
int sf_read(sf_reader *r, const char *name, size_t off, void *dst, size_t n, sala_err *e);
/* Verify every chunk of every section (for `--verify` and tests). */
int sf_verify(sf_reader *r, sala_err *e);

/* Remove "<name>.tmp-<pid>" files in dir whose writer process no longer exists. Returns the
 * number removed (>= 0) or a negative status. */
int sf_cleanup(const char *dir, sala_err *e);

/* Test seam: when set, called with a step name at each point of the save protocol
 * ("data", "fsync", "rename", "dirsync") before that step runs. */
typedef void (*sf_step_fn)(const char *step);
void sf_set_step_hook(sf_step_fn fn);

#endif
