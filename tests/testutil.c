#include "testutil.h"

#include <check.h>
#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <poll.h>
#include <sys/prctl.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
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

/* ---- the simulated endpoint server ---------------------------------- */

unsigned tu_read_port(int fd, const char *prefix)
{
    char line[128];
    size_t len = 0, plen = strlen(prefix);
    unsigned long port;
    char *end;

    while (len + 1 < sizeof line) {
        struct pollfd pfd = {fd, POLLIN, 0};

        ck_assert_msg(poll(&pfd, 1, 10000) == 1, "server did not start");
        ck_assert_msg(read(fd, line + len, 1) == 1,
                      "server exited before listening");
        if (line[len] == '\n')
            break;
        len++;
    }
    line[len] = '\0';
    ck_assert_msg(!strncmp(line, prefix, plen), "first line: %s", line);
    port = strtoul(line + plen, &end, 10);
    ck_assert(*end == '\0' && port > 0 && port < 65536);
    return (unsigned)port;
}

void tu_sim_start(tu_sim *s, const char *config, const char *const *extra,
                  const char *err_path)
{
    const char *argv[24];
    size_t n = 0;
    int fds[2];

    memset(s, 0, sizeof *s);
    argv[n++] = NSED_SIM_BIN;
    argv[n++] = "--config";
    argv[n++] = config;
    argv[n++] = "--port";
    argv[n++] = "0";
    for (size_t i = 0; extra && extra[i] && n < 23; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    ck_assert(pipe(fds) == 0);
    s->pid = fork();
    ck_assert(s->pid >= 0);
    if (s->pid == 0) {
        int efd = err_path ? open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600)
                           : open("/dev/null", O_WRONLY);

        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(fds[1], 1);
        dup2(efd, 2);
        close(fds[0]);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(fds[1]);
    s->out_fd = fds[0];
    s->port = tu_read_port(s->out_fd, "listening on 127.0.0.1:");
    snprintf(s->url, sizeof s->url, "http://127.0.0.1:%u/v1", s->port);
}

static size_t tu_collect(char *data, size_t size, size_t n, void *arg)
{
    char **p = arg;
    size_t old = *p ? strlen(*p) : 0;
    char *q = realloc(*p, old + size * n + 1);

    ck_assert(q != NULL);
    memcpy(q + old, data, size * n);
    q[old + size * n] = '\0';
    *p = q;
    return size * n;
}

cJSON *tu_sim_stats(const tu_sim *s)
{
    char url[96], *body = NULL;
    CURL *c = curl_easy_init();
    cJSON *j;

    ck_assert_ptr_nonnull(c);
    snprintf(url, sizeof url, "http://127.0.0.1:%u/sim/stats", s->port);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, tu_collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &body);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 5000L);
    ck_assert_int_eq(curl_easy_perform(c), CURLE_OK);
    curl_easy_cleanup(c);
    j = cJSON_Parse(body);
    ck_assert_msg(j != NULL, "stats are not JSON: %s", body);
    free(body);
    return j;
}

double tu_sim_stat(const tu_sim *s, const char *model, const char *field)
{
    cJSON *j = tu_sim_stats(s);
    const cJSON *o = model ? cJSON_GetObjectItemCaseSensitive(
                                 cJSON_GetObjectItemCaseSensitive(j, "models"),
                                 model)
                           : j;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, field);
    double d;

    ck_assert_msg(cJSON_IsNumber(v), "stats lack %s.%s", model ? model : "-",
                  field);
    d = v->valuedouble;
    cJSON_Delete(j);
    return d;
}

double tu_now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

double tu_now_ms(void)
{
    return tu_now_s() * 1e3;
}

void tu_sleep_ms(double ms)
{
    long long ns = (long long)(ms * 1e6);
    struct timespec d = {.tv_sec = (time_t)(ns / 1000000000LL),
                         .tv_nsec = (long)(ns % 1000000000LL)};

    while (nanosleep(&d, &d) != 0)
        ck_assert(errno == EINTR);
}

void tu_sim_stop(tu_sim *s)
{
    double t0 = tu_now_s();
    int status = 0;
    pid_t r;

    ck_assert(kill(s->pid, SIGTERM) == 0);
    for (;;) {
        r = waitpid(s->pid, &status, WNOHANG);
        if (r == s->pid)
            break;
        ck_assert(r == 0 || errno == EINTR);
        if (tu_now_s() - t0 > 10) {
            kill(s->pid, SIGKILL);
            ck_abort_msg("nsed-sim did not stop within 10 s of SIGTERM");
        }
        usleep(5000);
    }
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "nsed-sim status %d", status);
    close(s->out_fd);
}

int tu_nsed(const char *url, char **out, char **err, ...)
{
    char *argv[32] = {NSED_BIN};
    char env[160];
    char *envp[] = {env, NULL};
    size_t n = 1;
    va_list ap;

    va_start(ap, err);
    while (n < 31 && (argv[n] = va_arg(ap, char *)) != NULL)
        n++;
    va_end(ap);
    argv[n] = NULL;
    if (!url)
        return tu_run(argv, out, err);
    snprintf(env, sizeof env, "NSED_SIM_URL=%s", url);
    return tu_run_env(argv, envp, out, err);
}

pid_t tu_nsed_spawn_run(const char *url, const char *wf, const char *questions,
                        const char *store)
{
    pid_t pid = fork();

    ck_assert(pid >= 0);
    if (pid == 0) {
        char env[128];
        int null = open("/dev/null", O_WRONLY);

        prctl(PR_SET_PDEATHSIG, SIGKILL);
        snprintf(env, sizeof env, "NSED_SIM_URL=%s", url);
        putenv(env);
        dup2(null, 1);
        dup2(null, 2);
        execl(NSED_BIN, NSED_BIN, "run", wf, "--questions", questions,
              "--store", store, "--quiet", (char *)NULL);
        _exit(127);
    }
    return pid;
}

int tu_nsed_run_or_kill(const char *url, const char *wf, const char *questions,
                        const char *store, double ms)
{
    pid_t pid = tu_nsed_spawn_run(url, wf, questions, store);
    int status;

    if (ms >= 0) {
        tu_sleep_ms(ms);
        if (waitpid(pid, &status, WNOHANG) == 0) {
            kill(pid, SIGKILL);
            while (waitpid(pid, &status, 0) < 0)
                ck_assert(errno == EINTR);
            if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
                return 1;
        }
    } else {
        while (waitpid(pid, &status, 0) < 0)
            ck_assert(errno == EINTR);
    }
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "a run of %s failed (status %d)", store, status);
    return 0;
}

double tu_sim_total_requests(const tu_sim *s)
{
    cJSON *j = tu_sim_stats(s), *m;
    double n = 0;

    cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(j, "models"))
        n += cJSON_GetObjectItemCaseSensitive(m, "requests")->valuedouble;
    cJSON_Delete(j);
    return n;
}

char *tu_nsed_export(const char *dir)
{
    char *out = NULL, *err = NULL;

    ck_assert_msg(TU_NSED(NULL, &out, &err, "export", "--store", dir) == 0,
                  "export: %s", err);
    free(err);
    return out;
}

cJSON *tu_nsed_status(const char *dir)
{
    char *out = NULL, *err = NULL;
    cJSON *j;

    ck_assert_msg(TU_NSED(NULL, &out, &err, "status", "--store", dir,
                          "--json") == 0,
                  "status: %s", err);
    j = cJSON_Parse(out);
    ck_assert_msg(j != NULL, "status --json is not JSON: %s", out);
    free(out);
    free(err);
    return j;
}

double tu_jnum(const cJSON *j, const char *a, const char *b)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, a);

    if (b)
        v = cJSON_GetObjectItemCaseSensitive(v, b);
    ck_assert_msg(cJSON_IsNumber(v), "no number at %s.%s", a, b ? b : "");
    return v->valuedouble;
}

/* Set by the checked fixture of the test running now (each test runs in a
 * forked child, so the variable never crosses tests). */
char *tu_tmp;

void tu_tmp_setup(void)
{
    tu_tmp = tu_mkdtemp();
}

void tu_tmp_teardown(void)
{
    tu_rmrf(tu_tmp);
    free(tu_tmp);
    tu_tmp = NULL;
}
