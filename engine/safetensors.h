/* safetensors.h: read (mmap, validated) and write safetensors files.
 *
 * Reading follows the format's reference rules: 8-byte little-endian header length N with
 * N <= 100,000,000 and 8+N <= file size; the header is valid UTF-8 JSON, an object whose keys
 * are tensor names (plus an optional "__metadata__" object of strings); every tensor has a known
 * dtype, a shape of at most 8 non-negative dims and data_offsets [begin, end] with
 * prod(shape) * dtype_size == end - begin (checked arithmetic); sorted by begin, the ranges are
 * contiguous from 0 with no overlap and no hole, and the last one ends exactly at the end of the
 * file (no trailing bytes). Duplicate names are refused.
 *
 * Ownership: st_open/st_parse return an st_file the caller closes with st_close (NULL ok).
 * Tensor structs and their `data` views live until st_close. `data` points into a read-only
 * mapping and may be unaligned: read it with memcpy (or the st_get_* helpers). */
#ifndef SALA_SAFETENSORS_H
#define SALA_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

#define ST_MAX_DIMS 8
#define ST_MAX_HEADER 100000000u

typedef enum {
    ST_BOOL, ST_U8, ST_I8, ST_U16, ST_I16, ST_F16, ST_BF16, ST_U32, ST_I32, ST_F32, ST_U64,
    ST_I64, ST_F64, ST_NDTYPE
} st_dtype;

typedef struct {
    const char *name;
    st_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    int64_t numel;
    size_t offset;      /* from the start of the data section */
    size_t nbytes;
    const void *data;   /* view into the mapping (or the caller's buffer for st_parse) */
} st_tensor;

typedef struct st_file st_file;

/* Open and validate path. Errors name the file and, where it applies, the tensor and field. */
int st_open(const char *path, st_file **out, sala_err *e);
/* Validate a safetensors image already in memory (buf must outlive the result); `label` is the
 * name used in messages. Used by st_open and by the fuzz targets. */
int st_parse(const void *buf, size_t size, const char *label, st_file **out, sala_err *e);
void st_close(st_file *f);

size_t st_count(const st_file *f);
const st_tensor *st_at(const st_file *f, size_t i);          /* in offset order */
const st_tensor *st_find(const st_file *f, const char *name); /* NULL when absent */
const char *st_path(const st_file *f);
size_t st_file_size(const st_file *f);
/* __metadata__ value for key, or NULL. */
const char *st_metadata(const st_file *f, const char *key);

size_t st_dtype_size(st_dtype t);
const char *st_dtype_name(st_dtype t);
int st_dtype_parse(const char *s, st_dtype *t);   /* SALA_OK or SALA_EINVAL */

/* Convert n elements of a BF16/F16/F32/F64 tensor starting at element `first` to float32.
 * Returns SALA_EINVAL for other dtypes or a range past the tensor. */
int st_to_f32(const st_tensor *t, size_t first, size_t n, float *dst);

float st_bf16_to_f32(uint16_t h);
uint16_t st_f32_to_bf16(float f);   /* round to nearest even; NaN stays NaN */
float st_f16_to_f32(uint16_t h);

/* Writer: collect tensors (the data is copied), then write atomically (temp file, fsync,
 * rename). st_writer_free(NULL) is a no-op. */
typedef struct st_writer st_writer;
st_writer *st_writer_new(void);
int st_writer_add(st_writer *w, const char *name, st_dtype dtype, int ndim, const int64_t *shape,
                  const void *data, sala_err *e);
/* Add a tensor whose bytes the writer allocates (zeroed); *data receives the buffer to fill. */
int st_writer_alloc(st_writer *w, const char *name, st_dtype dtype, int ndim,
                    const int64_t *shape, void **data, sala_err *e);
int st_writer_meta(st_writer *w, const char *key, const char *value, sala_err *e);
int st_writer_write(st_writer *w, const char *path, sala_err *e);
void st_writer_free(st_writer *w);

#endif
