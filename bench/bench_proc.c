/* bench_proc.c -- the processes the benchmark drives: nsed-sim and the
 * workers (see bench.h). */
#include "bench/bench.h"

#include "pipeline/base/json.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* The stats JSON is a few hundred bytes per model; anything near this is
 * not nsed-sim talking. */
#define SIM_STATS_MAX ((size_t)1 << 20)

double bench_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- nsed-sim ------------------------------------------------------------- */

/* Read the "listening on 127.0.0.1:PORT" line within 60 s: the simulator
 * reads its whole question set first (1M questions for figure 3 --long, a
 * second on a quiet machine and over 10 s on a busy one). */
static int read_port(int fd, unsigned *port)
{
    static const char prefix[] = "listening on 127.0.0.1:";
    char line[128];
    size_t n = 0;
    double deadline = bench_now() + 60.0;

    while (n < sizeof line - 1) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        ssize_t r;
        int left = (int)((deadline - bench_now()) * 1000);

        if (left <= 0 || poll(&p, 1, left) <= 0)
            return NSED_EIO;
        r = read(fd, line + n, 1);
        if (r <= 0)
            return NSED_EIO;
        if (line[n] == '\n') {
            char *end;
            unsigned long v;

            line[n] = '\0';
            if (strncmp(line, prefix, sizeof prefix - 1) != 0)
                return NSED_EIO;
            errno = 0;
            v = strtoul(line + sizeof prefix - 1, &end, 10);
            if (errno || *end || v == 0 || v > 65535)
                return NSED_EIO;
            *port = (unsigned)v;
            return 0;
        }
        n++;
    }
    return NSED_EIO;
}

int bench_sim_start(bench_sim *s, const char *sim_bin, const char *config,
                    const char *questions, nsed_err *err)
{
    const char *argv[10];
    size_t n = 0;
    int fds[2], rc;
    pid_t pid;

    memset(s, 0, sizeof *s);
    s->out_fd = -1;
    argv[n++] = sim_bin;
    argv[n++] = "--config";
    argv[n++] = config;
    argv[n++] = "--port";
    argv[n++] = "0";
    if (questions) {
        argv[n++] = "--questions";
        argv[n++] = questions;
    }
    argv[n] = NULL;
    if (pipe(fds) < 0)
        return nsed_error(err, NSED_EIO, "pipe: %s", strerror(errno));
    pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return nsed_error(err, NSED_EIO, "fork: %s", strerror(errno));
    }
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);

        /* The simulator must not outlive a benchmark that dies. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(fds[1], 1);
        if (devnull >= 0)
            dup2(devnull, 2);
        close(fds[0]);
        close(fds[1]);
        execv(sim_bin, (char *const *)argv);
        _exit(127);
    }
    close(fds[1]);
    s->pid = pid;
    s->out_fd = fds[0];
    rc = read_port(s->out_fd, &s->port);
    if (rc) {
        bench_sim_stop(s);
        return nsed_error(err, rc, "%s --config %s did not start (no port "
                          "line)", sim_bin, config);
    }
    snprintf(s->url, sizeof s->url, "http://127.0.0.1:%u/v1", s->port);
    s->curl = curl_easy_init();
    if (!s->curl) {
        bench_sim_stop(s);
        return nsed_error(err, NSED_ENOMEM, "curl_easy_init failed");
    }
    return 0;
}

typedef struct body_sink {
    bench_sim *s;
    bool too_big;
} body_sink;

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
    body_sink *k = arg;
    bench_sim *s = k->s;
    size_t add = size * n;
    char *p;

    if (s->body_len + add > SIM_STATS_MAX) {
        k->too_big = true;
        return 0;
    }
    p = realloc(s->body, s->body_len + add + 1);
    if (!p)
        return 0;
    memcpy(p + s->body_len, data, add);
    s->body = p;
    s->body_len += add;
    s->body[s->body_len] = '\0';
    return add;
}

/* A count from the simulator's stats; a missing or negative one clears
 * *ok. */
static uint64_t sim_count(const cJSON *o, const char *key, bool *ok)
{
    double v = json_num(o, key, -1);

    if (v < 0) {
        *ok = false;
        return 0;
    }
    return (uint64_t)v;
}

int bench_sim_counts_get(bench_sim *s, bench_sim_counts *out, nsed_err *err)
{
    char url[96];
    body_sink k = {s, false};
    CURLcode cc;
    cJSON *j, *t;
    bool ok = true;
    bench_sim_counts c;

    snprintf(url, sizeof url, "http://127.0.0.1:%u/sim/stats", s->port);
    s->body_len = 0;
    curl_easy_setopt(s->curl, CURLOPT_URL, url);
    curl_easy_setopt(s->curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(s->curl, CURLOPT_WRITEDATA, &k);
    curl_easy_setopt(s->curl, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(s->curl, CURLOPT_NOSIGNAL, 1L);
    cc = curl_easy_perform(s->curl);
    if (cc != CURLE_OK || !s->body)
        return nsed_error(err, NSED_ENET, "nsed-sim stats: %s",
                          k.too_big ? "reply too big"
                                    : curl_easy_strerror(cc));
    j = cJSON_ParseWithLength(s->body, s->body_len);
    t = cJSON_GetObjectItemCaseSensitive(j, "totals");
    c.requests = sim_count(t, "requests", &ok);
    c.ok = sim_count(t, "ok", &ok);
    c.in_flight = sim_count(t, "in_flight", &ok);
    c.peak_in_flight = sim_count(t, "peak_in_flight", &ok);
    cJSON_Delete(j);
    if (!ok)
        return nsed_error(err, NSED_EINVAL, "nsed-sim stats: unexpected "
                          "JSON");
    *out = c;
    return 0;
}

double bench_sim_cpu(const bench_sim *s)
{
    char path[64], text[1024], *p, *end;
    unsigned long long ut, st;
    ssize_t n;
    int fd;

    snprintf(path, sizeof path, "/proc/%ld/stat", (long)s->pid);
    fd = open(path, O_RDONLY);
    if (fd < 0)
        return 0;
    n = read(fd, text, sizeof text - 1);
    close(fd);
    if (n <= 0)
        return 0;
    text[n] = '\0';
    /* Fields after the command name, which is in parentheses and may hold
     * spaces: state is field 3, utime 14, stime 15. */
    p = strrchr(text, ')');
    if (!p)
        return 0;
    p++;
    for (int field = 3; field < 14; field++) {
        p = strchr(p + 1, ' ');
        if (!p)
            return 0;
    }
    errno = 0;
    ut = strtoull(p + 1, &end, 10);
    if (errno || end == p + 1 || *end != ' ')
        return 0;
    st = strtoull(end + 1, &end, 10);
    if (errno)
        return 0;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

void bench_sim_stop(bench_sim *s)
{
    int status;

    if (!s)
        return;
    if (s->pid > 0) {
        kill(s->pid, SIGTERM);
        while (waitpid(s->pid, &status, 0) < 0 && errno == EINTR)
            ;
    }
    if (s->out_fd >= 0)
        close(s->out_fd);
    if (s->curl)
        curl_easy_cleanup(s->curl);
    free(s->body);
    memset(s, 0, sizeof *s);
    s->out_fd = -1;
}

/* ---- workers -------------------------------------------------------------- */

int bench_child_spawn(bench_child *c, const char *self, const char *sim_url,
                      const char *const *argv, nsed_err *err)
{
    const char *args[32];
    size_t n = 0;

    args[n++] = self;
    args[n++] = "--worker";
    for (size_t i = 0; argv[i] && n < 31; i++)
        args[n++] = argv[i];
    args[n] = NULL;
    return bench_child_exec(c, self, sim_url, args, err);
}

int bench_child_exec(bench_child *c, const char *path, const char *sim_url,
                     const char *const *args, nsed_err *err)
{
    int fds[2];
    pid_t pid;

    memset(c, 0, sizeof *c);
    c->out_fd = -1;
    if (pipe(fds) < 0)
        return nsed_error(err, NSED_EIO, "pipe: %s", strerror(errno));
    c->started = bench_now();
    pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return nsed_error(err, NSED_EIO, "fork: %s", strerror(errno));
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (sim_url)
            setenv("NSED_SIM_URL", sim_url, 1);
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        execv(path, (char *const *)args);
        _exit(127);
    }
    close(fds[1]);
    c->pid = pid;
    c->out_fd = fds[0];
    return 0;
}

int bench_child_pump(bench_child *c, int timeout_ms)
{
    struct pollfd p;
    char tmp[1024];
    ssize_t r;

    if (c->out_fd < 0)
        return 1;
    p.fd = c->out_fd;
    p.events = POLLIN;
    if (poll(&p, 1, timeout_ms) <= 0)
        return 0;
    r = read(c->out_fd, tmp, sizeof tmp);
    if (r < 0 && errno == EINTR)
        return 0;
    if (r <= 0) {
        close(c->out_fd);
        c->out_fd = -1;
        return 1;
    }
    if ((size_t)r > sizeof c->out - 1 - c->out_len)
        r = (ssize_t)(sizeof c->out - 1 - c->out_len);
    memcpy(c->out + c->out_len, tmp, (size_t)r);
    c->out_len += (size_t)r;
    c->out[c->out_len] = '\0';
    return 0;
}

int bench_child_wait(bench_child *c, bool killed_ok, nsed_err *err)
{
    pid_t r;

    if (c->pid <= 0)
        return nsed_error(err, NSED_EIO, "worker not running");
    while (c->out_fd >= 0 && !bench_child_pump(c, 1000))
        ;
    do
        r = wait4(c->pid, &c->status, 0, &c->ru);
    while (r < 0 && errno == EINTR);
    c->pid = 0;
    if (r < 0)
        return nsed_error(err, NSED_EIO, "wait4: %s", strerror(errno));
    if (WIFEXITED(c->status) && WEXITSTATUS(c->status) == 0)
        return 0;
    if (killed_ok && WIFSIGNALED(c->status) &&
        WTERMSIG(c->status) == SIGKILL)
        return 0;
    if (WIFSIGNALED(c->status))
        return nsed_error(err, NSED_EIO, "worker killed by signal %d",
                          WTERMSIG(c->status));
    return nsed_error(err, NSED_EIO, "worker exited with status %d",
                      WEXITSTATUS(c->status));
}

bool bench_child_value(const bench_child *c, const char *key, double *out)
{
    size_t klen = strlen(key);
    const char *p = c->out;

    *out = 0;
    while ((p = strstr(p, key)) != NULL) {
        if ((p == c->out || p[-1] == ' ' || p[-1] == '\n') &&
            p[klen] == '=') {
            char *end;
            double v;

            errno = 0;
            v = strtod(p + klen + 1, &end);
            if (errno || end == p + klen + 1)
                return false;
            *out = v;
            return true;
        }
        p += klen;
    }
    return false;
}

/* "Key:   1234 kB" -> 1234 */
static long status_kb(const char *text, const char *key)
{
    const char *p = strstr(text, key);
    char *end;
    long v;

    if (!p)
        return 0;
    p += strlen(key);
    errno = 0;
    v = strtol(p, &end, 10);
    if (errno || end == p || v < 0)
        return 0;
    return v;
}

void bench_mem_read(pid_t pid, bench_mem *out)
{
    char path[64], text[4096];
    ssize_t n;
    int fd;

    memset(out, 0, sizeof *out);
    snprintf(path, sizeof path, "/proc/%ld/status", (long)pid);
    fd = open(path, O_RDONLY);
    if (fd < 0)
        return;
    n = read(fd, text, sizeof text - 1);
    close(fd);
    if (n <= 0)
        return;
    text[n] = '\0';
    out->rss_kb = status_kb(text, "\nVmRSS:");
    out->anon_kb = status_kb(text, "\nRssAnon:");
    out->file_kb = status_kb(text, "\nRssFile:");
    out->hwm_kb = status_kb(text, "\nVmHWM:");
}
