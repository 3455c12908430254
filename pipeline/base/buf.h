/* buf.h -- growable byte buffer with a hard cap.
 *
 * buf.ptr is never NULL: a buf always holds a NUL-terminated string (the
 * NUL is not counted in len), so buf.ptr can be handed to string functions
 * at any time, also right after buf_init, buf_release, buf_detach and
 * buf_reset. An empty buf that owns no storage (alloc == 0) points at a
 * shared, read-only empty string, so change a buf's bytes only through the
 * functions below, or within ptr[0..len) of a non-empty buf. Every append
 * checks the cap given at init: input that grows a buffer from outside
 * (HTTP bodies, files, model output) can never grow it past that cap.
 *
 * Lifecycle: buf_init() on caller storage, buf_release() frees the bytes and
 * leaves an empty buffer that may be reused; buf_detach() hands the bytes to
 * the caller (free() them) and resets the buffer.
 */
#ifndef NSED_BUF_H
#define NSED_BUF_H

#include "pipeline/base/err.h"

#include <stdarg.h>
#include <stddef.h>

typedef struct buf {
    char *ptr;     /* never NULL, always NUL-terminated */
    size_t len;    /* bytes used, NUL excluded */
    size_t alloc;  /* bytes allocated; 0 while ptr is the shared "" */
    size_t cap;    /* maximum len allowed */
} buf;

/* Initialise b empty with a cap of cap bytes (content length). */
void buf_init(buf *b, size_t cap);

/* Free the content and reset to empty; the cap is kept. */
void buf_release(buf *b);

/* Return the content (never NULL: "" for an empty buffer; always malloc'd,
 * owned by the caller then) and reset b to empty. Returns NULL only when
 * out of memory. */
NSED_MUST_CHECK char *buf_detach(buf *b, size_t *len);

/* Append n bytes. Returns 0, NSED_ETOOBIG when the cap would be passed or
 * NSED_ENOMEM; on failure b is unchanged. */
NSED_MUST_CHECK int buf_add(buf *b, const void *data, size_t n);

/* Append a NUL-terminated string. Same returns as buf_add. */
NSED_MUST_CHECK int buf_adds(buf *b, const char *s);

/* Append one byte. Same returns as buf_add. */
NSED_MUST_CHECK int buf_addc(buf *b, char c);

/* Append printf-style formatted text. Same returns as buf_add. */
NSED_MUST_CHECK int buf_printf(buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
NSED_MUST_CHECK int buf_vprintf(buf *b, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

/* Drop the content but keep the allocation. */
void buf_reset(buf *b);

/* Read a whole file into b (appending). Returns 0, NSED_EIO (errno set) or
 * NSED_ETOOBIG when the file exceeds b's cap. */
NSED_MUST_CHECK int buf_read_file(buf *b, const char *path);

#endif
