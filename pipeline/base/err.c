#include "pipeline/base/err.h"

#include <stdarg.h>
#include <stdio.h>

const char *nsed_strerror(int code)
{
    switch (code) {
    case NSED_OK: return "success";
    case NSED_EINVAL: return "invalid input";
    case NSED_ENOMEM: return "out of memory";
    case NSED_EIO: return "I/O error";
    case NSED_ETOOBIG: return "input too large";
    case NSED_ESTORE: return "store error";
    case NSED_EBUSY: return "store is busy";
    case NSED_ESCHEMA: return "unsupported store schema";
    case NSED_EMISMATCH: return "workflow hash mismatch";
    case NSED_ENOTFOUND: return "not found";
    case NSED_EEXIST: return "already exists";
    case NSED_ENET: return "network error";
    case NSED_EINTERNAL: return "internal error (a bug in nsed)";
    }
    return "unknown error";
}

static void fill(nsed_err *err, int code, const char *prefix, const char *fmt,
                 va_list ap) __attribute__((format(printf, 4, 0)));

static void fill(nsed_err *err, int code, const char *prefix,
                 const char *fmt, va_list ap)
{
    int n;

    err->code = code;
    n = snprintf(err->msg, sizeof err->msg, "%s", prefix);
    if (n < 0 || (size_t)n >= sizeof err->msg)
        return;
    vsnprintf(err->msg + n, sizeof err->msg - (size_t)n, fmt, ap);
}

int nsed_error(nsed_err *err, int code, const char *fmt, ...)
{
    va_list ap;

    if (!err)
        return code;
    va_start(ap, fmt);
    fill(err, code, "", fmt, ap);
    va_end(ap);
    return code;
}

int nsed_error_at(nsed_err *err, int code, const char *file, size_t line,
                  size_t col, const char *fmt, ...)
{
    char prefix[512];
    va_list ap;

    if (!err)
        return code;
    if (line && col)
        snprintf(prefix, sizeof prefix, "%s:%zu:%zu: ", file, line, col);
    else if (line)
        snprintf(prefix, sizeof prefix, "%s:%zu: ", file, line);
    else
        snprintf(prefix, sizeof prefix, "%s: ", file);
    va_start(ap, fmt);
    fill(err, code, prefix, fmt, ap);
    va_end(ap);
    return code;
}

int nsed_exit_code(int code)
{
    switch (code) {
    case NSED_OK:
        return 0;
    case NSED_EINVAL:
    case NSED_ETOOBIG:
    case NSED_EMISMATCH:
    case NSED_ESCHEMA:
    case NSED_EEXIST:
        return 2;
    default:
        return 1;
    }
}
