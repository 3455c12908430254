/* atomic.h -- replace a file atomically: readers see the old file or the
 * complete new one, never a part, and a crash leaves one of the two.
 *
 * The new content goes to a temporary file in the same directory,
 * ".<name>.nsed-tmp.<pid>.<12 random characters>", created with
 * O_CREAT|O_EXCL|O_NOFOLLOW (nothing planted under a guessed name is
 * written through); it is flushed and fsync'd, renamed over path, and then
 * the directory is fsync'd so that the rename itself is durable. On any
 * error the temporary file is removed and path is left as it was. A
 * process killed meanwhile leaves its temporary file; the next open for
 * the same path removes such files whose process is gone (regular files
 * of this user only), so at most one is ever left. A full disk (ENOSPC,
 * EDQUOT) is reported as "disk full: <file>".
 *
 *     atomic_file *f = NULL;
 *     rc = atomic_file_open(path, &f, err);
 *     ... write to atomic_file_stream(f) ...
 *     rc = rc ? (atomic_file_abort(f), rc) : atomic_file_commit(f, err);
 */
#ifndef NSED_ATOMIC_H
#define NSED_ATOMIC_H

#include "pipeline/base/err.h"

#include <stddef.h>
#include <stdio.h>

typedef struct atomic_file atomic_file;

/* Create the temporary file for replacing path. On success *out owns it
 * (end it with atomic_file_commit or atomic_file_abort). Returns 0,
 * NSED_EIO ("<tmp>: cannot create: ..."), NSED_ENOMEM. */
NSED_MUST_CHECK int atomic_file_open(const char *path, atomic_file **out,
                                     nsed_err *err);

/* The stream to write the new content to (owned by f). */
FILE *atomic_file_stream(atomic_file *f);

/* Flush, fsync and close the temporary file, rename it over the path and
 * fsync the directory. f is freed in every case. Returns 0 or NSED_EIO
 * (a write, sync or the rename failed; the temporary file is removed and
 * path untouched). A directory that cannot be fsync'd after the rename
 * is reported too (the new file is then in place but its durability is
 * not known). */
NSED_MUST_CHECK int atomic_file_commit(atomic_file *f, nsed_err *err);

/* Remove the temporary file and free f (NULL is ignored). path is left as
 * it was. */
void atomic_file_abort(atomic_file *f);

/* Replace path with the len bytes at data in one call. Returns 0,
 * NSED_EIO or NSED_ENOMEM, as above. */
NSED_MUST_CHECK int atomic_write(const char *path, const void *data,
                                 size_t len, nsed_err *err);

#endif
