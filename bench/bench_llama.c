/* bench_llama.c -- figure 10 of the benchmark: the share of prompt tokens
 * a real llama.cpp llama-server serves from its prefix cache during a
 * demo-like deliberation, by kind of call.
 *
 * Figure 6 measures what an unbounded prefix cache *could* reuse; this one
 * asks a real engine what it *did* reuse. It writes three tiny
 * random-weight models with ../shared/tools/llama/gen_tiny_gguf.py, starts
 * that directory's llama-server in router mode on a free 127.0.0.1 port,
 * runs the nsed binary on a copy of workflows/demo.yaml pointed at it and
 * reads `nsed status --json`'s prefix_cache, which sums the
 * usage.prompt_tokens_details.cached_tokens the server reported
 * (tests/test_llama_prefix.sh checks those sums against a proxy's count).
 * The random models' replies are gibberish, so every question fails for
 * want of an answer; the prompts, their order and the server's cache are
 * the real thing.
 */
#include "bench/bench.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef NSED_BENCH_DIR
#define NSED_BENCH_DIR "bench"
#endif

/* The configuration measured (docs/performance.md, "Figure 10"): the
 * server's slots and context, the runner's calls in flight per model. A
 * slot gets LLAMA_CTX / LLAMA_SLOTS tokens: the repair prompt (the
 * evaluation, its reply and the repair message) of these tiny models'
 * byte-level tokenizer needs about 2.2k. */
#define LLAMA_SLOTS 4
#define LLAMA_CTX 16384
#define LLAMA_CONCURRENCY 4
#define LLAMA_MAX_TOKENS 48
#define LLAMA_ROUNDS 2
#define LLAMA_MODELS 3

/* Seconds to wait for the server's /health, and for the whole run. */
#define LLAMA_START_S 30.0
#define LLAMA_RUN_S 600.0
/* status --json of a finished run is a few tens of kB. */
#define STATUS_MAX ((size_t)1 << 24)

static const char *const kind_keys[BENCH_LLAMA_KINDS] =
    {"propose", "revise", "evaluate", "repair", "self_consistency", NULL};

static void skip(bench_llama_result *r, const char *why, const char *what)
{
    r->skipped = true;
    snprintf(r->why, sizeof r->why, "%s %s", why, what);
}

/* Start argv[0] with stdout and stderr to out_path (truncated); the child
 * gets SIGTERM when the bench dies, so no server outlives a crash. */
static int spawn(const char *const *argv, const char *out_path, pid_t *pid,
                 nsed_err *err)
{
    int fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    pid_t p;

    if (fd < 0)
        return nsed_error(err, NSED_EIO, "cannot create %s: %s", out_path,
                          strerror(errno));
    p = fork();
    if (p < 0) {
        close(fd);
        return nsed_error(err, NSED_EIO, "fork: %s", strerror(errno));
    }
    if (p == 0) {
        int null = open("/dev/null", O_RDONLY);

        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (null >= 0)
            dup2(null, STDIN_FILENO);
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(fd);
    *pid = p;
    return 0;
}

/* Wait for pid up to timeout_s (SIGKILL after); *status is its wait
 * status. */
static int wait_for(pid_t pid, double timeout_s, int *status, nsed_err *err)
{
    double deadline = bench_now() + timeout_s;

    for (;;) {
        pid_t w = waitpid(pid, status, WNOHANG);

        if (w == pid)
            return 0;
        if (w < 0 && errno != EINTR)
            return nsed_error(err, NSED_EIO, "waitpid: %s", strerror(errno));
        if (bench_now() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, status, 0);
            return nsed_error(err, NSED_EIO, "%s: no end after %.0f s",
                              "figure 10", timeout_s);
        }
        usleep(20 * 1000);
    }
}

/* Run argv to its end (output to out_path); 0 and *code its exit code,
 * or NSED_EIO when it was killed or could not run. */
static int run_to_end(const char *const *argv, const char *out_path,
                      double timeout_s, int *code, nsed_err *err)
{
    pid_t pid;
    int st, rc = spawn(argv, out_path, &pid, err);

    if (!rc)
        rc = wait_for(pid, timeout_s, &st, err);
    if (rc)
        return rc;
    if (!WIFEXITED(st) || WEXITSTATUS(st) == 127)
        return nsed_error(err, NSED_EIO, "%s did not run to its end (see %s)",
                          argv[0], out_path);
    *code = WEXITSTATUS(st);
    return 0;
}

static unsigned free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    unsigned port = 0;

    if (fd < 0)
        return 0;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static size_t discard(char *data, size_t size, size_t n, void *arg)
{
    (void)data;
    (void)arg;
    return size * n;
}

/* GET /health answers 200 once the router is listening. */
static bool healthy(unsigned port)
{
    char url[64];
    CURL *c = curl_easy_init();
    long code = 0;

    if (!c)
        return false;
    snprintf(url, sizeof url, "http://127.0.0.1:%u/health", port);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 1000L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(c);
    return code == 200;
}

/* The demo workflow (workflows/demo.yaml: three models of three families,
 * one seat each, the default prompts) against the server's tiny models,
 * with short replies and two rounds so that the run takes well under two
 * minutes. */
static int write_workflow(const char *path, unsigned port, nsed_err *err)
{
    static const char *const ids[LLAMA_MODELS] = {"alpha", "beta", "gamma"};
    /* the demo's priors (they only seed the broker's estimates) */
    static const char *const priors[LLAMA_MODELS] =
        {"{p_gen: 0.55, p_ver: 0.75}", "{p_gen: 0.5, p_ver: 0.8}",
         "{p_gen: 0.45, p_ver: 0.7}"};
    FILE *f = fopen(path, "w");
    int bad;

    if (!f)
        return nsed_error(err, NSED_EIO, "cannot create %s: %s", path,
                          strerror(errno));
    fprintf(f, "name: bench-llama\nversion: 1\nseed: 42\nmodels:\n");
    for (int m = 0; m < LLAMA_MODELS; m++)
        fprintf(f,
                "  - id: %s\n"
                "    endpoint: http://127.0.0.1:%u/v1\n"
                "    model: tiny-%d\n"
                "    family: %s\n"
                "    max_concurrency: %d\n"
                "    price: {input_per_mtok: 0, output_per_mtok: 0}\n"
                "    structured_output: true\n"
                "    sampling: {max_tokens: %d}\n"
                "    prior: %s\n",
                ids[m], port, m + 1, ids[m], LLAMA_CONCURRENCY,
                LLAMA_MAX_TOKENS, priors[m]);
    fprintf(f,
            "broker:\n  policy: fixed\n"
            "teams:\n  main:\n    roles:\n"
            "      - name: solver\n        count: 3\n"
            "        persona: \"You are a careful mathematician.\"\n"
            "        models: [alpha, beta, gamma]\n"
            "rounds:\n  min: 1\n  max: %d\n"
            "  stop: {consensus_margin: 0.6, stable_answer: 2}\n"
            "answer:\n  extract: boxed\n  compare: numeric\n",
            LLAMA_ROUNDS);
    bad = ferror(f);
    if (fclose(f) != 0 || bad)
        return nsed_error(err, NSED_EIO, "cannot write %s", path);
    return 0;
}

static int read_file(const char *path, char **out, nsed_err *err)
{
    FILE *f = fopen(path, "r");
    char *b = NULL;
    size_t n = 0, cap = 0;

    if (!f)
        return nsed_error(err, NSED_EIO, "cannot open %s: %s", path,
                          strerror(errno));
    for (;;) {
        size_t r;

        if (n + 4096 + 1 > cap) {
            char *nb;

            cap = cap ? 2 * cap : 65536;
            nb = cap <= STATUS_MAX ? realloc(b, cap) : NULL;
            if (!nb) {
                free(b);
                fclose(f);
                return nsed_error(err, NSED_ETOOBIG, "%s: too big", path);
            }
            b = nb;
        }
        r = fread(b + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0)
            break;
    }
    fclose(f);
    b[n] = '\0';
    *out = b;
    return 0;
}

static double num(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

/* prefix_cache.by_kind and the models' calls and failures, from status
 * --json. */
static int read_status(const char *path, bench_llama_result *r, nsed_err *err)
{
    char *text = NULL;
    cJSON *root;
    const cJSON *pc, *by, *models, *m;
    int rc = read_file(path, &text, err);

    if (rc)
        return rc;
    root = cJSON_Parse(text);
    free(text);
    pc = cJSON_GetObjectItemCaseSensitive(root, "prefix_cache");
    by = cJSON_GetObjectItemCaseSensitive(pc, "by_kind");
    models = cJSON_GetObjectItemCaseSensitive(root, "models");
    if (!cJSON_IsObject(by) || !cJSON_IsObject(models)) {
        cJSON_Delete(root);
        return nsed_error(err, NSED_EINVAL,
                          "%s: no prefix_cache.by_kind or "
                          "models",
                          path);
    }
    for (int k = 0; k < BENCH_LLAMA_ALL; k++) {
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(by, kind_keys[k]);

        r->kinds[k].calls = num(e, "calls");
        r->kinds[k].prompt_tokens = num(e, "prompt_tokens");
        r->kinds[k].cached_tokens = num(e, "cached_tokens");
        r->kinds[BENCH_LLAMA_ALL].calls += r->kinds[k].calls;
        r->kinds[BENCH_LLAMA_ALL].prompt_tokens += r->kinds[k].prompt_tokens;
        r->kinds[BENCH_LLAMA_ALL].cached_tokens += r->kinds[k].cached_tokens;
    }
    cJSON_ArrayForEach(m, models) {
        r->calls += num(m, "calls");
        r->failed += num(m, "failed");
    }
    cJSON_Delete(root);
    return 0;
}

/* out = dir/name, or NSED_ETOOBIG when it does not fit PATH_MAX. */
static int join(char *out, const char *dir, const char *name, nsed_err *err)
{
    int n = snprintf(out, PATH_MAX, "%s/%s", dir, name);

    if (n < 0 || n >= PATH_MAX)
        return nsed_error(err, NSED_ETOOBIG, "path too long: %s/%s", dir, name);
    return 0;
}

int bench_llama_measure(const char *tmp, const char *nsed_bin,
                        const char *python, const char *questions, size_t nq,
                        bench_llama_result *out, nsed_err *err)
{
    const char *env = getenv("NSED_LLAMA_DIR");
    char dir[PATH_MAX], server[PATH_MAX], gen[PATH_MAX], work[PATH_MAX];
    char models[PATH_MAX], path[PATH_MAX], wf[PATH_MAX], store[PATH_MAX];
    char qpath[PATH_MAX], log[PATH_MAX], ctx[16], slots[16], portarg[16];
    bench_llama_result r = {.questions = nq};
    pid_t pid = 0;
    unsigned port;
    double t0;
    int rc, code, st;

    /* NSED_BENCH_DIR is the source's bench/; ../shared sits beside the
     * source tree, as for tests/test_llama.c */
    snprintf(dir, sizeof dir, "%s",
             env && *env ? env : NSED_BENCH_DIR "/../../shared/tools/llama");
    if ((rc = join(server, dir, "llama-server", err)) ||
        (rc = join(gen, dir, "gen_tiny_gguf.py", err)))
        return rc;
    if (access(server, X_OK) != 0) {
        skip(&r, "no llama-server at", server);
        goto done;
    }
    if (access(gen, R_OK) != 0) {
        skip(&r, "no tiny-model generator at", gen);
        goto done;
    }
    if (access(python, X_OK) != 0) {
        skip(&r, "no python3 for the generator at", python);
        goto done;
    }
    if ((rc = join(work, tmp, "llama", err)) ||
        (rc = join(models, work, "models", err)) ||
        (rc = join(log, work, "gen.log", err)))
        return rc;
    if ((mkdir(work, 0755) != 0 && errno != EEXIST) ||
        (mkdir(models, 0755) != 0 && errno != EEXIST))
        return nsed_error(err, NSED_EIO, "cannot create %s: %s", models,
                          strerror(errno));
    for (int m = 1; m <= LLAMA_MODELS; m++) {
        char seed[8], name[32], mctx[16];
        /* the model's own context is a slot's: the server gives a slot
         * no more than the model was made for */
        const char *args[] = {python,       gen,   path,    "--seed", seed,
                              "--eos-bias", "0.6", "--ctx", mctx,     NULL};

        snprintf(name, sizeof name, "tiny-%d.gguf", m);
        snprintf(seed, sizeof seed, "%d", m);
        snprintf(mctx, sizeof mctx, "%d", LLAMA_CTX / LLAMA_SLOTS);
        rc = join(path, models, name, err);
        if (!rc)
            rc = run_to_end(args, log, 60, &code, err);
        if (rc)
            return rc;
        if (code != 0) {
            skip(&r, "the tiny-model generator failed: see", log);
            goto done;
        }
    }
    port = free_port();
    if (!port)
        return nsed_error(err, NSED_EIO, "no free port on 127.0.0.1");
    snprintf(ctx, sizeof ctx, "%d", LLAMA_CTX);
    snprintf(slots, sizeof slots, "%d", LLAMA_SLOTS);
    snprintf(portarg, sizeof portarg, "%u", port);
    if ((rc = join(log, work, "server.log", err)))
        return rc;
    {
        const char *args[] = {server,   "--models-dir", models,
                              "--host", "127.0.0.1",    "--port",
                              portarg,  "-c",           ctx,
                              "-np",    slots,          "-t",
                              "1",      "--no-webui",   "--no-jinja",
                              NULL};

        rc = spawn(args, log, &pid, err);
        if (rc)
            return rc;
    }
    t0 = bench_now();
    while (!healthy(port)) {
        if (waitpid(pid, &st, WNOHANG) == pid) {
            pid = 0;
            skip(&r, "llama-server did not start: see", log);
            goto done;
        }
        if (bench_now() - t0 > LLAMA_START_S) {
            rc = nsed_error(err, NSED_EIO,
                            "figure 10: llama-server gave no "
                            "/health in %.0f s (see %s)",
                            LLAMA_START_S, log);
            goto out;
        }
        usleep(50 * 1000);
    }
    if (!(rc = join(wf, work, "demo-llama.yaml", err)) &&
        !(rc = join(store, work, "store", err)) &&
        !(rc = join(qpath, work, "questions.jsonl", err)))
        rc = write_workflow(wf, port, err);
    if (!rc)
        rc = bench_gen_head(questions, qpath, nq, err);
    if (rc)
        goto out;
    if ((rc = join(log, work, "run.log", err)))
        goto out;
    {
        const char *args[] = {nsed_bin, "run",     wf,    "--questions",
                              qpath,    "--store", store, NULL};

        t0 = bench_now();
        rc = run_to_end(args, log, LLAMA_RUN_S, &code, err);
        r.elapsed = bench_now() - t0;
    }
    /* 1: some questions incomplete, 3: some failed for good -- what
     * random-weight models' answers give; anything else is a broken run */
    if (!rc && code != 0 && code != 1 && code != 3)
        rc = nsed_error(err, NSED_EIO,
                        "figure 10: nsed run exited %d (see "
                        "%s)",
                        code, log);
    if (rc)
        goto out;
    if ((rc = join(path, work, "status.json", err)))
        goto out;
    {
        const char *args[] = {nsed_bin, "status", "--store",
                              store,    "--json", NULL};

        rc = run_to_end(args, path, 60, &code, err);
        if (!rc && code != 0)
            rc = nsed_error(err, NSED_EIO,
                            "figure 10: nsed status exited "
                            "%d (see %s)",
                            code, path);
    }
    if (!rc)
        rc = read_status(path, &r, err);
out:
    if (pid > 0) {
        /* the router stops the model servers it started */
        kill(pid, SIGTERM);
        if (wait_for(pid, 10, &st, NULL) != 0)
            waitpid(pid, &st, 0);
    }
    if (rc)
        return rc;
done:
    snprintf(r.config, sizeof r.config,
             "router mode, %d models, -np %d, -c %d; max_concurrency %d, "
             "max_tokens %d, rounds.max %d",
             LLAMA_MODELS, LLAMA_SLOTS, LLAMA_CTX, LLAMA_CONCURRENCY,
             LLAMA_MAX_TOKENS, LLAMA_ROUNDS);
    *out = r;
    return 0;
}
