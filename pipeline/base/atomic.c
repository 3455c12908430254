/* atomic.c -- replace a file atomically (see atomic.h). */
#include "pipeline/base/atomic.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#define TMP_TAG ".nsed-tmp."
#define TMP_TRIES 100

struct atomic_file {
    char *path;
    char *dir;  /* the folder of path ("." when it has no slash) */
    char *base; /* the last component of path */
    char *tmp;
    FILE *f;
};

static void file_free(atomic_file *f)
{
    if (!f)
        return;
    free(f->tmp);
    free(f->base);
    free(f->dir);
    free(f->path);
    free(f);
}

void atomic_file_abort(atomic_file *f)
{
    if (!f)
        return;
    if (f->f)
        fclose(f->f);
    if (f->tmp)
        unlink(f->tmp);
    file_free(f);
}

/* Split path into its folder and last component. */
static int split_path(atomic_file *f)
{
    const char *slash = strrchr(f->path, '/');

    if (!slash) {
        f->dir = strdup(".");
        f->base = strdup(f->path);
    } else {
        f->dir = slash == f->path ? strdup("/")
                                  : strndup(f->path, (size_t)(slash - f->path));
        f->base = strdup(slash + 1);
    }
    return f->dir && f->base ? 0 : NSED_ENOMEM;
}

/* The pid in a temporary name of ours for base, ".<base>.nsed-tmp.<pid>.
 * <suffix>", or 0 when name is not one. */
static long tmp_owner(const char *name, const char *base)
{
    size_t bl = strlen(base), tl = strlen(TMP_TAG);
    const char *p;
    char *end;
    long pid;

    if (name[0] != '.' || strncmp(name + 1, base, bl) != 0 ||
        strncmp(name + 1 + bl, TMP_TAG, tl) != 0)
        return 0;
    p = name + 1 + bl + tl;
    errno = 0;
    pid = strtol(p, &end, 10);
    if (errno || end == p || *end != '.' || pid <= 0 || strlen(end + 1) != 12)
        return 0;
    return pid;
}

/* Remove the temporary files an earlier writer of this path left when it
 * was killed: ours by name, regular files owned by this user, whose
 * process is gone. A live writer's file (another export running now) is
 * left alone; a pid reused since only keeps a stale file, never removes a
 * live one. Failures only leave files behind, so they are not errors. */
static void remove_stale(const atomic_file *f)
{
    DIR *d = opendir(f->dir);
    struct dirent *e;

    if (!d)
        return;
    while ((e = readdir(d)) != NULL) {
        long pid = tmp_owner(e->d_name, f->base);
        struct stat st;

        if (pid == 0 || pid == (long)getpid())
            continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH)
            continue;
        if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
            !S_ISREG(st.st_mode) || st.st_uid != geteuid())
            continue;
        unlinkat(dirfd(d), e->d_name, 0);
    }
    closedir(d);
}

/* Create a fresh temporary file beside the target, mkstemp-like: a random
 * suffix, O_CREAT|O_EXCL|O_NOFOLLOW, so that nothing planted in the folder
 * (a file or a symlink under a guessed name) is ever written through. */
static int create_tmp(atomic_file *f, nsed_err *err)
{
    static const char digits[] = "abcdefghijklmnopqrstuvwxyz0123456789";
    int e = 0;

    for (int i = 0; i < TMP_TRIES; i++) {
        unsigned char rnd[12];
        char suffix[13];
        int fd;

        if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd)
            return nsed_error(err, NSED_EIO,
                              "%s: cannot create a temporary file: no "
                              "randomness: %s",
                              f->path, strerror(errno));
        for (size_t k = 0; k < sizeof rnd; k++)
            suffix[k] = digits[rnd[k] % (sizeof digits - 1)];
        suffix[sizeof rnd] = '\0';
        free(f->tmp);
        f->tmp = NULL;
        if (asprintf(&f->tmp, "%s/.%s%s%ld.%s", f->dir, f->base, TMP_TAG,
                     (long)getpid(), suffix) < 0) {
            f->tmp = NULL;
            return nsed_error(err, NSED_ENOMEM, "out of memory");
        }
        fd = open(f->tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                  0666);
        if (fd >= 0) {
            f->f = fdopen(fd, "w");
            if (f->f)
                return 0;
            e = errno;
            close(fd);
            unlink(f->tmp);
            break;
        }
        e = errno;
        if (e != EEXIST)
            break;
    }
    nsed_error(err, NSED_EIO, "%s: cannot create: %s", f->tmp, strerror(e));
    free(f->tmp);
    f->tmp = NULL;
    return NSED_EIO;
}

int atomic_file_open(const char *path, atomic_file **out, nsed_err *err)
{
    atomic_file *f = calloc(1, sizeof *f);
    int rc;

    if (!f || !(f->path = strdup(path)) || split_path(f)) {
        file_free(f);
        return nsed_error(err, NSED_ENOMEM, "out of memory");
    }
    remove_stale(f);
    rc = create_tmp(f, err);
    if (rc) {
        file_free(f);
        return rc;
    }
    *out = f;
    return 0;
}

FILE *atomic_file_stream(atomic_file *f)
{
    return f->f;
}

/* fsync the folder of f, so that the rename into it is durable. A file
 * system that cannot sync directories (EINVAL) is not an error. */
static int sync_parent(const atomic_file *f, nsed_err *err)
{
    int fd = open(f->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc = 0;

    if (fd < 0 || (fsync(fd) != 0 && errno != EINVAL))
        rc = nsed_error(err, NSED_EIO, "%s: cannot sync its directory: %s",
                        f->path, strerror(errno));
    if (fd >= 0)
        close(fd);
    return rc;
}

/* The message of a failed write: a full disk says so, with the path the
 * user asked for (the temporary file is gone by the time they read it). */
static int write_error(nsed_err *err, const atomic_file *f, int e)
{
    if (e == ENOSPC || e == EDQUOT)
        return nsed_error(err, NSED_EIO, "disk full: %s", f->path);
    return nsed_error(err, NSED_EIO, "%s: write failed: %s", f->tmp,
                      strerror(e));
}

int atomic_file_commit(atomic_file *f, nsed_err *err)
{
    FILE *stream = f->f;
    int rc = 0;

    /* Order: the data is on disk (fsync) before the name points at it
     * (rename), and the rename is on disk (fsync of the folder) before we
     * report success. */
    f->f = NULL;
    if (fflush(stream) != 0 || ferror(stream) || fsync(fileno(stream)) != 0)
        rc = write_error(err, f, errno);
    if (fclose(stream) != 0 && !rc)
        rc = write_error(err, f, errno);
    if (!rc && rename(f->tmp, f->path) != 0)
        rc = nsed_error(err, NSED_EIO, "%s: cannot rename to %s: %s", f->tmp,
                        f->path, strerror(errno));
    if (rc) {
        atomic_file_abort(f);
        return rc;
    }
    rc = sync_parent(f, err);
    file_free(f);
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
        rc = write_error(err, f, errno);
        atomic_file_abort(f);
        return rc;
    }
    return atomic_file_commit(f, err);
}
