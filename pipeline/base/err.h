/* err.h -- error codes and the error detail struct shared by every module.
 *
 * Functions that can fail return int: 0 on success or one of the negative
 * NSED_E* codes below. When a caller passes a non-NULL nsed_err, the failing
 * function fills it with a human-readable message that already carries the
 * location (file:line:col) where the user can fix the problem. Out-params
 * are written only on success.
 */
#ifndef NSED_ERR_H
#define NSED_ERR_H

#include <stddef.h>

enum {
    NSED_OK = 0,
    NSED_EINVAL = -1,    /* bad input: workflow, questions, arguments (exit 2) */
    NSED_ENOMEM = -2,    /* allocation failed */
    NSED_EIO = -3,       /* file system or OS call failed */
    NSED_ETOOBIG = -4,   /* input over a documented size cap */
    NSED_ESTORE = -5,    /* LMDB reported an error */
    NSED_EBUSY = -6,     /* store already opened for writing by another process */
    NSED_ESCHEMA = -7,   /* store schema version not understood */
    NSED_EMISMATCH = -8, /* store bound to a different workflow hash */
    NSED_ENOTFOUND = -9, /* key or file not present */
    NSED_EEXIST = -10,   /* key already present with different content */
    NSED_ENET = -11,     /* network / HTTP failure */
    NSED_EINTERNAL = -12, /* a "cannot happen" path: a bug in nsed, not in
                             the input (exit 1) */
};

/* Mark a fallible function: ignoring its result is a compile error under
 * -Werror (as curl marks dynbuf). Every function that returns an NSED_E*
 * code carries it in its header. */
#define NSED_MUST_CHECK __attribute__((warn_unused_result))

#define NSED_ERR_MSG_MAX 1024

/* Caller-owned error detail. Zero-initialise it (nsed_err e = {0};). */
typedef struct nsed_err {
    int code;                   /* the NSED_E* code that was returned */
    char msg[NSED_ERR_MSG_MAX]; /* complete message, location included */
} nsed_err;

/* Return a static string describing code (never NULL). */
const char *nsed_strerror(int code);

/* Fill err (when not NULL) with code and a printf-style message, and return
 * code, so that `return nsed_error(err, NSED_EINVAL, "...")` reports and
 * returns at once. A message longer than the buffer is truncated. */
int nsed_error(nsed_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Like nsed_error, prefixed with "file:line:col: " (line/col 1-based; a col
 * of 0 prints "file:line: ", a line of 0 prints "file: "). */
int nsed_error_at(nsed_err *err, int code, const char *file, size_t line,
                  size_t col, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

/* Process exit status for an error code: 2 for bad input (EINVAL, ETOOBIG,
 * EMISMATCH, ESCHEMA, EEXIST), 1 for everything else, 0 for NSED_OK. */
int nsed_exit_code(int code);

#endif
