/* atomic.c -- replace a file atomically (see atomic.h). */
#include "pipeline/base/atomic.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct atomic_file {
    char *path;
    char *tmp;
    FILE *f;
};

void atomic_file_abort(atomic_file *f)
{
    if (!f)
        return;
    if (f->f)
        fclose(f->f);
    unlink(f->tmp);
    free(f->tmp);
    free(f->path);
    free(f);
}

int atomic_file_open(const char *path, atomic_file **out, nsed_err *err)
{
    atomic_file *f = calloc(1, sizeof *f);
    int fd = -1;

    if (!f || !(f->path = strdup(path)) ||
        asprintf(&f->tmp, "%s.tmp.%ld", path, (long)getpid()) < 0) {
        if (f)
            free(f->path);
        free(f);
        return nsed_error(err, NSED_ENOMEM, "out of memory");
    }
    /* O_EXCL: never write through a file (or link) left by someone else;
     * one left by an earlier process with this pid is stale. */
    fd = open(f->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0 && errno == EEXIST && unlink(f->tmp) == 0)
        fd = open(f->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0 || !(f->f = fdopen(fd, "w"))) {
        int e = errno;

        nsed_error(err, NSED_EIO, "%s: cannot create: %s", f->tmp,
                   strerror(e));
        if (fd >= 0) {
            close(fd);
            unlink(f->tmp);
        }
        free(f->tmp);
        free(f->path);
        free(f);
        return NSED_EIO;
    }
    *out = f;
    return 0;
}

FILE *atomic_file_stream(atomic_file *f)
{
    return f->f;
}

/* fsync the directory holding path, so that a rename into it is durable.
 * A file system that cannot sync directories (EINVAL) is not an error. */
static int sync_parent(const char *path, nsed_err *err)
{
    char *copy = strdup(path);
    int fd, rc = 0;

    if (!copy)
        return nsed_error(err, NSED_ENOMEM, "out of memory");
    fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || (fsync(fd) != 0 && errno != EINVAL))
        rc = nsed_error(err, NSED_EIO, "%s: cannot sync its directory: %s",
                        path, strerror(errno));
    if (fd >= 0)
        close(fd);
    free(copy);
    return rc;
}

int atomic_file_commit(atomic_file *f, nsed_err *err)
{
    FILE *stream = f->f;
    int rc = 0;

    f->f = NULL;
    if (fflush(stream) != 0 || ferror(stream) || fsync(fileno(stream)) != 0)
        rc = nsed_error(err, NSED_EIO, "%s: write failed: %s", f->tmp,
                        strerror(errno));
    if (fclose(stream) != 0 && !rc)
        rc = nsed_error(err, NSED_EIO, "%s: write failed: %s", f->tmp,
                        strerror(errno));
    if (!rc && rename(f->tmp, f->path) != 0)
        rc = nsed_error(err, NSED_EIO, "%s: cannot rename to %s: %s", f->tmp,
                        f->path, strerror(errno));
    if (rc) {
        atomic_file_abort(f);
        return rc;
    }
    rc = sync_parent(f->path, err);
    free(f->tmp);
    free(f->path);
    free(f);
    return rc;
}

int atomic_write(const char *path, const void *data, size_t len,
                 nsed_err *err)
{
    atomic_file *f = NULL;
    int rc = atomic_file_open(path, &f, err);

    if (rc)
        return rc;
    if (len > 0 && fwrite(data, 1, len, f->f) != len) {
        rc = nsed_error(err, NSED_EIO, "%s: write failed: %s", f->tmp,
                        strerror(errno));
        atomic_file_abort(f);
        return rc;
    }
    return atomic_file_commit(f, err);
}
