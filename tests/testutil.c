#include "testutil.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

char *tu_mkdtemp(void)
{
    const char *tmp = getenv("TMPDIR");
    char *p;

    if (!tmp || !*tmp)
        tmp = "/tmp";
    ck_assert(asprintf(&p, "%s/nsed-test-XXXXXX", tmp) > 0);
    ck_assert_msg(mkdtemp(p) != NULL, "mkdtemp: %s", strerror(errno));
    return p;
}

static int rm_one(const char *path, const struct stat *sb, int flag,
                  struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

void tu_rmrf(const char *path)
{
    if (path)
        nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

void tu_write_file(const char *path, const char *data, size_t len)
{
    FILE *f = fopen(path, "wb");

    ck_assert_msg(f != NULL, "open %s: %s", path, strerror(errno));
    if (len == (size_t)-1)
        len = strlen(data);
    ck_assert(fwrite(data, 1, len, f) == len);
    ck_assert(fclose(f) == 0);
}

char *tu_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *p = NULL;
    size_t n = 0, cap = 0, r;

    if (!f)
        return NULL;
    for (;;) {
        if (cap - n < 4096) {
            cap = cap ? cap * 2 : 8192;
            p = realloc(p, cap);
            ck_assert(p != NULL);
        }
        r = fread(p + n, 1, cap - n - 1, f);
        if (r == 0)
            break;
        n += r;
    }
    fclose(f);
    if (!p)
        p = calloc(1, 1);
    p[n] = '\0';
    if (len)
        *len = n;
    return p;
}

char *tu_path(const char *dir, const char *name)
{
    char *p;

    ck_assert(asprintf(&p, "%s/%s", dir, name) > 0);
    return p;
}

static char *slurp_fd(int fd)
{
    char *p = NULL;
    size_t n = 0, cap = 0;
    ssize_t r;

    for (;;) {
        if (cap - n < 4096) {
            cap = cap ? cap * 2 : 8192;
            p = realloc(p, cap);
            ck_assert(p != NULL);
        }
        r = read(fd, p + n, cap - n - 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    p[n] = '\0';
    return p;
}

int tu_run_env(char *const argv[], char *const extra_env[], char **out,
               char **err)
{
    char outtmp[] = "/tmp/nsed-out-XXXXXX", errtmp[] = "/tmp/nsed-err-XXXXXX";
    int ofd = mkstemp(outtmp), efd = mkstemp(errtmp), status;
    pid_t pid;

    ck_assert(ofd >= 0 && efd >= 0);
    unlink(outtmp);
    unlink(errtmp);
    pid = fork();
    ck_assert(pid >= 0);
    if (pid == 0) {
        int devnull = open("/dev/null", O_RDONLY);

        dup2(devnull, 0);
        dup2(ofd, 1);
        dup2(efd, 2);
        for (size_t i = 0; extra_env && extra_env[i]; i++)
            putenv(extra_env[i]);
        execv(argv[0], argv);
        fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    while (waitpid(pid, &status, 0) < 0)
        ck_assert(errno == EINTR);
    if (out) {
        lseek(ofd, 0, SEEK_SET);
        *out = slurp_fd(ofd);
    }
    if (err) {
        lseek(efd, 0, SEEK_SET);
        *err = slurp_fd(efd);
    }
    close(ofd);
    close(efd);
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    return 128 + WTERMSIG(status);
}

int tu_run(char *const argv[], char **out, char **err)
{
    return tu_run_env(argv, NULL, out, err);
}

int tu_contains(const char *haystack, const char *needle)
{
    return haystack && needle && strstr(haystack, needle) != NULL;
}
