#include "pipeline/base/buf.h"

#include "pipeline/base/err.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What ptr points at while a buf owns no storage (alloc == 0): one NUL
 * byte shared by every empty buf. It is const so that a write through it
 * faults instead of corrupting every other empty buf; nothing here writes
 * or frees it, because alloc == 0 means "not ours". */
static const char buf_slop[1] = "";

static void set_empty(buf *b)
{
    b->ptr = (char *)buf_slop;
    b->len = 0;
    b->alloc = 0;
}

void buf_init(buf *b, size_t cap)
{
    set_empty(b);
    b->cap = cap;
}

void buf_release(buf *b)
{
    if (b->alloc)
        free(b->ptr);
    set_empty(b);
}

void buf_reset(buf *b)
{
    b->len = 0;
    if (b->alloc)
        b->ptr[0] = '\0';
}

char *buf_detach(buf *b, size_t *len)
{
    char *p = b->ptr;

    if (!b->alloc) {
        p = calloc(1, 1);
        if (!p)
            return NULL;
    }
    if (len)
        *len = b->len;
    set_empty(b);
    return p;
}

/* Make room for n more bytes plus the NUL. */
static int grow(buf *b, size_t n)
{
    size_t need, na;
    char *p;

    if (n > b->cap || b->len > b->cap - n)
        return NSED_ETOOBIG;
    need = b->len + n + 1;
    if (need <= b->alloc)
        return 0;
    na = b->alloc ? b->alloc : 64;
    while (na < need)
        na = na > SIZE_MAX / 2 ? need : na * 2;
    if (na > b->cap + 1 && need <= b->cap + 1)
        na = b->cap + 1;
    p = realloc(b->alloc ? b->ptr : NULL, na);
    if (!p)
        return NSED_ENOMEM;
    b->ptr = p;
    b->alloc = na;
    return 0;
}

int buf_add(buf *b, const void *data, size_t n)
{
    int rc = grow(b, n);

    if (rc)
        return rc;
    if (n)
        memcpy(b->ptr + b->len, data, n);
    b->len += n;
    b->ptr[b->len] = '\0';
    return 0;
}

int buf_adds(buf *b, const char *s)
{
    return buf_add(b, s, strlen(s));
}

int buf_addc(buf *b, char c)
{
    return buf_add(b, &c, 1);
}

int buf_vprintf(buf *b, const char *fmt, va_list ap)
{
    va_list cp;
    int n, rc;

    va_copy(cp, ap);
    n = vsnprintf(NULL, 0, fmt, cp);
    va_end(cp);
    if (n < 0)
        return NSED_EINVAL;
    rc = grow(b, (size_t)n);
    if (rc)
        return rc;
    vsnprintf(b->ptr + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return 0;
}

int buf_printf(buf *b, const char *fmt, ...)
{
    va_list ap;
    int rc;

    va_start(ap, fmt);
    rc = buf_vprintf(b, fmt, ap);
    va_end(ap);
    return rc;
}

int buf_read_file(buf *b, const char *path)
{
    char chunk[65536];
    FILE *f;
    size_t n;
    int rc = 0;

    f = fopen(path, "rb");
    if (!f)
        return NSED_EIO;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        rc = buf_add(b, chunk, n);
        if (rc)
            break;
    }
    if (!rc && ferror(f)) {
        rc = NSED_EIO;
    }
    fclose(f);
    if (rc == NSED_EIO)
        errno = errno ? errno : EIO;
    return rc;
}
