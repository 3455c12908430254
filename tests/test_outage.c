/* Outages that cost minutes, not hours (issue 11, items 1, 3 and 7):
 * `nsed run` against nsed-sim with a dead endpoint, a wrong port, an
 * unknown model, a bad key, an outage window and a seat lost for good;
 * what preflight, admission, the outage budget and `nsed status` say.
 * Every expected count is computed here from the simulator's configured
 * behaviour, never by the counting code. */
#include "testutil.h"

#include <check.h>
#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define DEMO_Q NSED_SOURCE_DIR "/workflows/demo-questions.jsonl"

#define NSED(url, out, err, ...) TU_NSED(url, out, err, __VA_ARGS__)

/* Two healthy models and one that answers every attempt with HTTP 500. */
static const char sim_yaml[] =
    "kind: nsed-sim\n"
    "seed: 7\n"
    "questions: " NSED_SOURCE_DIR "/workflows/demo-questions.jsonl\n"
    "models:\n"
    "  - {name: sim-alpha, family: alpha, p_gen: 0.6, p_ver: 0.8}\n"
    "  - {name: sim-beta, family: beta, p_gen: 0.5, p_ver: 0.8}\n"
    "  - {name: sim-dead, family: dead, faults: {rate_500: 1.0}}\n";

/* A workflow of one fixed team over models (a YAML flow list of ids), one
 * seat each, against endpoint (NULL: the simulator's URL); extra goes at
 * the end (more gateway keys). */
static char *workflow_yaml(const char *endpoint, const char *models, int seats,
                           int rounds_min, const char *extra)
{
    const char *ep = endpoint ? endpoint : "${NSED_SIM_URL}";
    char *w = NULL;
    int n = asprintf(
        &w,
        "name: outage\n"
        "version: 1\n"
        "seed: 42\n"
        "models:\n"
        "  - {id: alpha, endpoint: \"%s\", model: sim-alpha,"
        " family: alpha, max_concurrency: 8, structured_output: true}\n"
        "  - {id: beta, endpoint: \"%s\", model: sim-beta,"
        " family: beta, max_concurrency: 8, structured_output: true}\n"
        "  - {id: dead, endpoint: \"%s\", model: sim-dead,"
        " family: dead, max_concurrency: 8, structured_output: true}\n"
        "  - {id: nope, endpoint: \"%s\", model: sim-nope,"
        " family: nope, max_concurrency: 8, structured_output: true}\n"
        "broker: {policy: fixed}\n"
        "teams:\n"
        "  main:\n"
        "    roles:\n"
        "      - {name: solver, count: %d, models: %s}\n"
        "rounds:\n"
        "  min: %d\n"
        "  max: 3\n"
        "answer: {extract: boxed, compare: numeric}\n"
        "gateway:\n"
        "  retry: {max_attempts: 2, base_delay_ms: 1, max_delay_ms: 2,"
        " max_total_s: 10}\n"
        "%s",
        ep, ep, ep, ep, seats, models, rounds_min,
        extra ? extra : "  circuit_breaker: {failures: 1000, cooldown_s: 1}\n");

    ck_assert_int_gt(n, 0);
    return w;
}

static char *write_tmp(const char *name, const char *text)
{
    char *p = tu_path(tu_tmp, name);

    tu_write_file(p, text, (size_t)-1);
    return p;
}

/* ---- item 1a: preflight ---------------------------------------------- */

/* True when dir does not exist: no store was created, nothing
 * committed. */
static bool no_store(const char *dir)
{
    struct stat sb;

    return stat(dir, &sb) != 0;
}


/* A wrong port: nothing listens there. Before preflight each question
 * waited out its retry budget (392 s for 3 questions at the defaults);
 * now the run refuses in well under a couple of seconds with exit 2,
 * naming the model and the endpoint, and creates no store. */
START_TEST(preflight_wrong_port_exits_2_fast)
{
    char *wf_text = workflow_yaml("http://127.0.0.1:9/v1", "[alpha, beta]", 2,
                                  1, NULL);
    char *wf = write_tmp("wf.yaml", wf_text);
    char *sdir = tu_path(tu_tmp, "s"), *out = NULL, *err = NULL;
    double t0 = tu_now_s(), took;
    int rc;

    rc = NSED(NULL, &out, &err, "run", wf, "--questions", DEMO_Q, "--store",
              sdir, "--limit", "3");
    took = tu_now_s() - t0;
    ck_assert_msg(rc == 2, "exit %d: %s", rc, err);
    /* seconds, not the minutes of retry budgets: slack for a loaded
     * machine (the sanitizer build runs beside other suites) */
    ck_assert_msg(took < 5.0, "took %.1f s", took);
    ck_assert_msg(tu_contains(err, "model alpha") &&
                      tu_contains(err, "http://127.0.0.1:9/v1/models"),
                  "%s", err);
    ck_assert(no_store(sdir));
    free(out);
    free(err);
    free(sdir);
    free(wf);
    free(wf_text);
}
END_TEST

/* A served name the server does not list (nsed-sim lists its models at
 * /v1/models): exit 2 before any question, with a hint; --no-preflight
 * skips the check (and the run then meets the 404 per question). */
START_TEST(preflight_unknown_model_exits_2)
{
    tu_sim sim;
    char *sim_cfg = write_tmp("sim.yaml", sim_yaml);
    char *wf_text = workflow_yaml(NULL, "[alpha, nope]", 2, 1, NULL);
    char *wf = write_tmp("wf.yaml", wf_text);
    char *sdir = tu_path(tu_tmp, "s"), *out = NULL, *err = NULL;
    int rc;

    tu_sim_start(&sim, sim_cfg, NULL, NULL);
    rc = NSED(sim.url, &out, &err, "run", wf, "--questions", DEMO_Q, "--store",
              sdir, "--limit", "2");
    ck_assert_msg(rc == 2, "exit %d: %s", rc, err);
    ck_assert_msg(tu_contains(err, "model nope") &&
                      tu_contains(err, "\"sim-nope\""),
                  "%s", err);
    ck_assert(no_store(sdir));
    ck_assert(tu_sim_stat(&sim, "sim-alpha", "requests") == 0);
    free(out);
    free(err);
    rc = NSED(sim.url, &out, &err, "run", wf, "--questions", DEMO_Q, "--store",
              sdir, "--limit", "2", "--no-preflight");
    ck_assert_msg(rc == 3, "exit %d: %s", rc, err);
    free(out);
    free(err);
    tu_sim_stop(&sim);
    free(sdir);
    free(wf);
    free(wf_text);
    free(sim_cfg);
}
END_TEST

/* A one-reply HTTP server: a child process that answers each of up to n
 * connections with reply (a whole HTTP response) and closes it. nsed-sim
 * does not check keys, so this stands in for a server that refuses the
 * key, or one that serves no /models. Its URL goes to url. */
static pid_t reply_server(const char *reply, int n, char *url, size_t size)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t alen = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    pid_t pid;

    ck_assert_int_ge(fd, 0);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(listen(fd, 8), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
    snprintf(url, size, "http://127.0.0.1:%u/v1", ntohs(a.sin_port));
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        for (int i = 0; i < n; i++) {
            char req[4096];
            int c = accept(fd, NULL, NULL);

            if (c < 0)
                _exit(1);
            /* the request head fits one read on loopback */
            if (read(c, req, sizeof req) > 0 &&
                write(c, reply, strlen(reply)) < 0)
                _exit(1);
            close(c);
        }
        _exit(0);
    }
    close(fd);
    return pid;
}

/* A key the server refuses (HTTP 401 on GET /models): exit 2 naming the
 * model and the key, nothing in the store, the key itself never shown. */
START_TEST(preflight_refused_key_exits_2)
{
    static const char reply[] =
        "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\n"
        "Content-Length: 26\r\nConnection: close\r\n\r\n"
        "{\"error\":{\"message\":\"no\"}}";
    char url[64], *wf_text, *wf, *with_key, *p;
    char *sdir = tu_path(tu_tmp, "s"), *out = NULL, *err = NULL;
    char *argv[] = {NSED_BIN, "run",     NULL, "--questions",
                    DEMO_Q,   "--store", sdir, NULL};
    char *env[] = {"OUTAGE_TEST_KEY=sk-secret-1234", NULL};
    pid_t pid = reply_server(reply, 1, url, sizeof url);
    int rc, st = 0;

    wf_text = workflow_yaml(url, "[alpha, beta]", 2, 1, NULL);
    /* alpha names a key variable */
    p = strstr(wf_text, "model: sim-alpha,");
    ck_assert_ptr_nonnull(p);
    ck_assert_int_gt(asprintf(&with_key, "%.*sapi_key_env: OUTAGE_TEST_KEY, %s",
                              (int)(p - wf_text), wf_text, p),
                     0);
    wf = write_tmp("wf.yaml", with_key);
    argv[2] = wf;
    rc = tu_run_env(argv, env, &out, &err);
    ck_assert_msg(rc == 2, "exit %d: %s", rc, err);
    ck_assert_msg(tu_contains(err, "model alpha") &&
                      tu_contains(err, "refused the API key (HTTP 401"),
                  "%s", err);
    ck_assert(!tu_contains(err, "sk-secret"));
    ck_assert(no_store(sdir));
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    free(out);
    free(err);
    free(sdir);
    free(wf);
    free(with_key);
    free(wf_text);
}
END_TEST

/* An endpoint that serves no /models (404) passes preflight with a note;
 * the run goes on (and here meets the same 404 on every call: failed). */
START_TEST(preflight_without_model_list_passes_with_a_note)
{
    static const char reply[] =
        "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n"
        "Content-Length: 39\r\nConnection: close\r\n\r\n"
        "{\"error\":{\"message\":\"unknown path!!!\"}}";
    char url[64], *wf_text, *wf;
    char *sdir = tu_path(tu_tmp, "s"), *out = NULL, *err = NULL;
    pid_t pid = reply_server(reply, 64, url, sizeof url);
    int rc, st = 0;

    wf_text = workflow_yaml(url, "[alpha, beta]", 2, 1, NULL);
    wf = write_tmp("wf.yaml", wf_text);
    rc = NSED(NULL, &out, &err, "run", wf, "--questions", DEMO_Q, "--store",
              sdir, "--limit", "1");
    ck_assert_msg(rc == 3, "exit %d: %s", rc, err);
    ck_assert_msg(tu_contains(err, "preflight: model alpha: ") &&
                      tu_contains(err, "answered HTTP 404"),
                  "%s", err);
    kill(pid, SIGKILL);
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    free(out);
    free(err);
    free(sdir);
    free(wf);
    free(wf_text);
}
END_TEST

/* ---- item 1b/c: admission and the outage budget ------------------------ */

/* Two slow models (100 ms a call) whose server goes down after_s after the
 * first request, for for_s (for_s 0: never). */
static char *window_sim(double after_s, double for_s)
{
    char *y = NULL;
    char win[96] = "";

    if (for_s > 0)
        snprintf(win, sizeof win,
                 ", faults: {down_after_s: %g, down_for_s: %g}", after_s,
                 for_s);
    ck_assert_int_gt(
        asprintf(&y,
                 "kind: nsed-sim\n"
                 "seed: 7\n"
                 "questions: " NSED_SOURCE_DIR
                 "/workflows/demo-questions.jsonl\n"
                 "models:\n"
                 "  - {name: sim-alpha, family: alpha, p_gen: 0.6, p_ver: 0.8,"
                 " latency: {ttft_ms: 100}%s}\n"
                 "  - {name: sim-beta, family: beta, p_gen: 0.5, p_ver: 0.8,"
                 " latency: {ttft_ms: 100}%s}\n",
                 win, win),
        0);
    return y;
}

/* The export of a store as text. */
static char *export_text(const char *sdir)
{
    char *out = NULL, *err = NULL;

    ck_assert_msg(NSED(NULL, &out, &err, "export", "--store", sdir) == 0,
                  "export: %s", err);
    free(err);
    return out;
}

/* The server dies mid-run: the run stops starting questions, says so once,
 * gives up after the outage budget (2 s here) with exit 1 and the resume
 * command, long before the questions' retry budget (60 s) would end them;
 * the same command after the server is back finishes with the export of
 * an uninterrupted run. Before, a run kept starting questions while every
 * model was paused and each waited out its whole retry budget. */
START_TEST(dead_server_gives_up_after_the_outage_budget)
{
    const double after = 0.8, down_for = 6.0;
    tu_sim sim, ref;
    char *sim_text = window_sim(after, down_for), *ref_text = window_sim(0, 0);
    char *sim_cfg = write_tmp("sim.yaml", sim_text);
    char *ref_cfg = write_tmp("ref.yaml", ref_text);
    char *wf_text =
        workflow_yaml(NULL, "[alpha, beta]", 2, 1,
                      "  circuit_breaker: {failures: 2, cooldown_s: 1}\n");
    char *wf, *sdir = tu_path(tu_tmp, "s"), *rdir = tu_path(tu_tmp, "r");
    char *out = NULL, *err = NULL, *got, *want;
    double t0, took;
    int rc;

    /* a longer retry budget than the outage budget */
    {
        char *p = strstr(wf_text, "max_total_s: 10");

        ck_assert_ptr_nonnull(p);
        memcpy(p, "max_total_s: 60", 15);
    }
    wf = write_tmp("wf.yaml", wf_text);
    tu_sim_start(&ref, ref_cfg, NULL, NULL);
    rc = NSED(ref.url, &out, &err, "run", wf, "--questions", DEMO_Q, "--store",
              rdir, "--limit", "16", "--max-active", "4");
    ck_assert_msg(rc == 0, "reference exit %d: %s", rc, err);
    free(out);
    free(err);
    tu_sim_stop(&ref);

    tu_sim_start(&sim, sim_cfg, NULL, NULL);
    t0 = tu_now_s();
    rc = NSED(sim.url, &out, &err, "run", wf, "--questions", DEMO_Q, "--store",
              sdir, "--limit", "16", "--max-active", "4", "--outage-budget",
              "2");
    took = tu_now_s() - t0;
    ck_assert_msg(rc == 1, "exit %d: %s", rc, err);
    /* the outage budget (2 s), far below the 60 s retry budget; slack
     * for a loaded machine */
    ck_assert_msg(took < after + 2 + 10, "took %.1f s: %s", took, err);
    ck_assert_msg(tu_contains(err, "no team can be served"), "%s", err);
    ck_assert_msg(tu_contains(err, "giving up: no team could be served") &&
                      tu_contains(err, "resume with:\n  nsed run "),
                  "%s", err);
    /* said once */
    ck_assert_ptr_null(strstr(strstr(err, "no team can be served") + 1,
                              "no team can be served"));
    free(out);
    free(err);
    /* the window's clock starts at the sim's first request, which comes
     * after t0 (preflight, start-up): wait well past its end */
    while (tu_now_s() - t0 < after + down_for + 3)
        nanosleep(&(struct timespec){0, 50000000}, NULL);
    rc = NSED(sim.url, &out, &err, "run", wf, "--questions", DEMO_Q, "--store",
              sdir, "--limit", "16", "--max-active", "4", "--outage-budget",
              "2");
    ck_assert_msg(rc == 0, "rerun exit %d: %s", rc, err);
    free(out);
    free(err);
    tu_sim_stop(&sim);
    got = export_text(sdir);
    want = export_text(rdir);
    ck_assert_str_eq(got, want);
    free(got);
    free(want);
    free(sdir);
    free(rdir);
    free(wf);
    free(wf_text);
    free(sim_cfg);
    free(ref_cfg);
    free(sim_text);
    free(ref_text);
}
END_TEST

/* ---- item 7: status says which models are paused ---------------------- */

/* Start `nsed run` in the background (NSED_SIM_URL=url, stderr to
 * err_path); returns its pid. */
static pid_t run_in_background(const char *url, const char *err_path,
                               char *const *args)
{
    pid_t pid = fork();

    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        char *argv[32] = {NSED_BIN, "run"};
        size_t n = 2;
        int fd = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

        for (size_t i = 0; args[i] && n < 31; i++)
            argv[n++] = args[i];
        argv[n] = NULL;
        if (fd >= 0)
            dup2(fd, 2);
        setenv("NSED_SIM_URL", url, 1);
        execv(NSED_BIN, argv);
        _exit(127);
    }
    return pid;
}

/* status --json's "paused" list: the entry of model, or NULL. */
static const cJSON *paused_entry(const cJSON *st, const char *model)
{
    const cJSON *e;

    cJSON_ArrayForEach(e, cJSON_GetObjectItem(st, "paused")) {
        const cJSON *m = cJSON_GetObjectItem(e, "model");

        if (cJSON_IsString(m) && !strcmp(m->valuestring, model))
            return e;
    }
    return NULL;
}

/* While a run is paused on a dead server, `nsed status` (another process
 * reading the store) names the paused models and since when; after the
 * run gave up it says the same as the last known state. Before, status
 * never said a model was paused. The progress line meanwhile reads
 * "ETA - (paused)" instead of an ETA that climbs. Run 1 kills the run
 * with SIGKILL while it is paused: it never writes that it ended, and
 * status says the last known state all the same, because no process
 * holds the store (before, it said "circuit breaker open" for good). */
START_TEST(status_shows_paused_models)
{
    bool kill_it = _i == 1;
    tu_sim sim;
    char *sim_text = window_sim(0.3, 30);
    char *sim_cfg = write_tmp("sim.yaml", sim_text);
    char *wf_text =
        workflow_yaml(NULL, "[alpha, beta]", 2, 1,
                      "  circuit_breaker: {failures: 2, cooldown_s: 1}\n");
    char *wf, *sdir = tu_path(tu_tmp, "s"), *err_path = tu_path(tu_tmp, "e");
    char *out = NULL, *err = NULL, *log;
    char *args[] = {NULL,   "--questions",
                    DEMO_Q, "--store",
                    NULL,   "--limit",
                    "8",    "--max-active",
                    "4",    "--outage-budget",
                    "4",    "--progress-interval",
                    "1",    NULL};
    const cJSON *e;
    cJSON *st = NULL;
    bool seen = false;
    double t0;
    pid_t pid;
    int status = 0;

    {
        char *p = strstr(wf_text, "max_total_s: 10");

        ck_assert_ptr_nonnull(p);
        memcpy(p, "max_total_s: 60", 15);
    }
    wf = write_tmp("wf.yaml", wf_text);
    args[0] = wf;
    args[4] = sdir;
    tu_sim_start(&sim, sim_cfg, NULL, NULL);
    pid = run_in_background(sim.url, err_path, args);
    t0 = tu_now_s();
    while (!seen && tu_now_s() - t0 < 10) {
        nanosleep(&(struct timespec){0, 100000000}, NULL);
        if (!no_store(sdir) &&
            NSED(NULL, &out, &err, "status", "--store", sdir, "--json") == 0) {
            st = cJSON_Parse(out);
            e = st ? paused_entry(st, "alpha") : NULL;
            if (e && cJSON_IsFalse(cJSON_GetObjectItem(e, "run_ended"))) {
                seen = true;
                /* the run holds the store while it runs */
                ck_assert(cJSON_IsTrue(cJSON_GetObjectItem(st, "writing")));
            }
            cJSON_Delete(st);
        }
        free(out);
        free(err);
        out = err = NULL;
    }
    ck_assert_msg(seen, "status never said alpha was paused");
    ck_assert_int_eq(NSED(NULL, &out, &err, "status", "--store", sdir), 0);
    ck_assert_msg(tu_contains(out, "paused:     alpha since ") &&
                      tu_contains(out, "(circuit breaker open)"),
                  "%s", out);
    free(out);
    free(err);
    if (kill_it) {
        ck_assert_int_eq(kill(pid, SIGKILL), 0);
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    } else {
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 1,
                      "run status %d", status);
        log = tu_read_file(err_path, NULL);
        ck_assert_msg(log && tu_contains(log, "ETA - (paused)"), "%s", log);
        free(log);
    }
    /* the run gave up (or was killed) while paused: the last known state */
    ck_assert_int_eq(NSED(NULL, &out, &err, "status", "--store", sdir), 0);
    ck_assert_msg(tu_contains(out, "paused:     alpha since ") &&
                      tu_contains(out, "the last known state"),
                  "%s", out);
    free(out);
    free(err);
    st = tu_nsed_status(sdir);
    e = paused_entry(st, "alpha");
    ck_assert_ptr_nonnull(e);
    ck_assert(cJSON_IsTrue(cJSON_GetObjectItem(e, "run_ended")));
    ck_assert(cJSON_IsFalse(cJSON_GetObjectItem(st, "writing")));
    if (kill_it) {
        /* killed mid-question: its questions are left in progress, and
         * status says how to go on */
        double in_progress = tu_jnum(st, "questions", "in_progress");

        ck_assert(in_progress > 0);
        ck_assert_int_eq(NSED(NULL, &out, &err, "status", "--store", sdir), 0);
        ck_assert_msg(tu_contains(out, "no run holds the store (it was "
                                       "stopped or killed): run it again "
                                       "to resume the"),
                      "%s", out);
        free(out);
        free(err);
    }
    ck_assert(cJSON_IsString(cJSON_GetObjectItem(e, "since")));
    cJSON_Delete(st);
    tu_sim_stop(&sim);
    free(sdir);
    free(err_path);
    free(wf);
    free(wf_text);
    free(sim_cfg);
    free(sim_text);
}
END_TEST

/* ---- item 3: a lost seat stays lost ----------------------------------- */

/* With --allow-degraded a seat lost in round 0 is not asked again in the
 * later rounds of the question: the dead model sees exactly one proposal
 * per question, max_attempts (2) times, where before every round asked it
 * again (rounds.min 3: 3 proposals and their attempts per question). */
START_TEST(lost_seat_is_not_asked_again)
{
    tu_sim sim;
    char *sim_cfg = write_tmp("sim.yaml", sim_yaml);
    char *wf_text = workflow_yaml(NULL, "[alpha, beta, dead]", 3, 3, NULL);
    char *wf = write_tmp("wf.yaml", wf_text);
    char *sdir = tu_path(tu_tmp, "s"), *out = NULL, *err = NULL;
    cJSON *st;
    int rc;

    tu_sim_start(&sim, sim_cfg, NULL, NULL);
    rc = NSED(sim.url, &out, &err, "run", wf, "--questions", DEMO_Q, "--store",
              sdir, "--limit", "4", "--allow-degraded");
    ck_assert_msg(rc == 0, "exit %d: %s", rc, err);
    ck_assert_msg(tu_sim_stat(&sim, "sim-dead", "requests") == 4 * 2,
                  "the dead model was asked %g times (expected %d)",
                  tu_sim_stat(&sim, "sim-dead", "requests"), 4 * 2);
    /* the live seats did deliberate for three rounds */
    ck_assert_msg(tu_sim_stat(&sim, "sim-alpha", "requests") >= 4 * 3,
                  "alpha asked %g times",
                  tu_sim_stat(&sim, "sim-alpha", "requests"));
    st = tu_nsed_status(sdir);
    ck_assert_int_eq((int)tu_jnum(st, "questions", "degraded"), 4);
    cJSON_Delete(st);
    free(out);
    free(err);
    tu_sim_stop(&sim);
    free(sdir);
    free(wf);
    free(wf_text);
    free(sim_cfg);
}
END_TEST

/* Replay stays exact: a degraded run stopped mid-way (SIGTERM) and run
 * again ends with the export of an uninterrupted run, and the dead model
 * is still asked once per question (its failed calls are not in the
 * ledger, so the resumed run asks them again only for questions whose
 * round 0 had not been committed). */
START_TEST(resumed_degraded_run_is_exact)
{
    static const char slow_yaml[] =
        "kind: nsed-sim\n"
        "seed: 7\n"
        "questions: " NSED_SOURCE_DIR "/workflows/demo-questions.jsonl\n"
        "models:\n"
        "  - {name: sim-alpha, family: alpha, p_gen: 0.6, p_ver: 0.8,"
        " latency: {ttft_ms: 60}}\n"
        "  - {name: sim-beta, family: beta, p_gen: 0.5, p_ver: 0.8,"
        " latency: {ttft_ms: 60}}\n"
        "  - {name: sim-dead, family: dead, faults: {rate_500: 1.0}}\n";
    tu_sim sim;
    char *sim_cfg = write_tmp("sim.yaml", slow_yaml);
    char *wf_text = workflow_yaml(NULL, "[alpha, beta, dead]", 3, 3, NULL);
    char *wf = write_tmp("wf.yaml", wf_text);
    char *sdir = tu_path(tu_tmp, "s"), *rdir = tu_path(tu_tmp, "r");
    char *err_path = tu_path(tu_tmp, "e"), *out = NULL, *err = NULL;
    char *got, *want;
    char *args[] = {NULL, "--questions",      DEMO_Q, "--store",
                    NULL, "--limit",          "6",    "--max-active",
                    "2",  "--allow-degraded", NULL};
    pid_t pid;
    int rc, st = 0;

    tu_sim_start(&sim, sim_cfg, NULL, NULL);
    rc = NSED(sim.url, &out, &err, "run", wf, "--questions", DEMO_Q, "--store",
              rdir, "--limit", "6", "--max-active", "2", "--allow-degraded");
    ck_assert_msg(rc == 0, "reference exit %d: %s", rc, err);
    free(out);
    free(err);
    args[0] = wf;
    args[4] = sdir;
    pid = run_in_background(sim.url, err_path, args);
    /* stop it once the first question has finished: mid-way, whatever
     * the machine's speed (the six take several times as long) */
    out = err = NULL;
    for (double t0 = tu_now_s(); tu_now_s() - t0 < 30;) {
        cJSON *j = NULL;

        nanosleep(&(struct timespec){0, 20000000}, NULL);
        if (!no_store(sdir) &&
            NSED(NULL, &out, &err, "status", "--store", sdir, "--json") == 0)
            j = cJSON_Parse(out);
        free(out);
        free(err);
        out = err = NULL;
        rc = j ? (int)tu_jnum(j, "questions", "done") +
                     (int)tu_jnum(j, "questions", "degraded")
               : 0;
        cJSON_Delete(j);
        if (rc >= 1)
            break;
    }
    kill(pid, SIGTERM);
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 130, "status %d", st);
    rc = NSED(sim.url, &out, &err, "run", wf, "--questions", DEMO_Q, "--store",
              sdir, "--limit", "6", "--max-active", "2", "--allow-degraded");
    ck_assert_msg(rc == 0, "resume exit %d: %s", rc, err);
    free(out);
    free(err);
    tu_sim_stop(&sim);
    got = export_text(sdir);
    want = export_text(rdir);
    ck_assert_str_eq(got, want);
    free(got);
    free(want);
    free(sdir);
    free(rdir);
    free(err_path);
    free(wf);
    free(wf_text);
    free(sim_cfg);
}
END_TEST

Suite *tu_suite(void)
{
    Suite *s = suite_create("outage");
    TCase *tc = tcase_create("outage");

    tcase_add_checked_fixture(tc, tu_tmp_setup, tu_tmp_teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, preflight_wrong_port_exits_2_fast);
    tcase_add_test(tc, preflight_unknown_model_exits_2);
    tcase_add_test(tc, preflight_refused_key_exits_2);
    tcase_add_test(tc, preflight_without_model_list_passes_with_a_note);
    tcase_add_test(tc, dead_server_gives_up_after_the_outage_budget);
    tcase_add_loop_test(tc, status_shows_paused_models, 0, 2);
    tcase_add_test(tc, lost_seat_is_not_asked_again);
    tcase_add_test(tc, resumed_degraded_run_is_exact);
    suite_add_tcase(s, tc);
    return s;
}
