/* Operability of `nsed run` and `nsed status`: progress lines in logs
 * (stderr not a terminal), retries and paused models in them, an ETA
 * checked against a simulated run whose duration is known, and latency
 * quantiles printed as the histogram buckets they are. The real binaries
 * run on real files; nsed-sim serves the models with a fixed latency. */
#include "testutil.h"

#include "pipeline/gateway/gateway.h"
#include "store/store.h"
#include "store/store_keys.h"

#include <check.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEMO_Q NSED_SOURCE_DIR "/workflows/demo-questions.jsonl"
#define DEMO_WF NSED_SOURCE_DIR "/workflows/demo.yaml"

/* Three models answering every call after exactly ttft_ms (no per-token
 * time, so no jitter); model beta fails its first `faults` attempts with
 * HTTP 500. */
static char *write_sim(int ttft_ms, int faults)
{
    char *path = tu_path(tu_tmp, "sim.yaml"), text[2048];
    char beta_faults[128] = "";

    if (faults)
        snprintf(beta_faults, sizeof beta_faults,
                 "    faults: {rate_500: 1.0, limit: %d}\n", faults);
    snprintf(text, sizeof text,
             "kind: nsed-sim\nseed: 7\nquestions: %s\nmodels:\n"
             "  - name: sim-alpha\n    family: alpha\n"
             "    latency: {ttft_ms: %d, per_token_ms: 0}\n"
             "  - name: sim-beta\n    family: beta\n"
             "    latency: {ttft_ms: %d, per_token_ms: 0}\n%s"
             "  - name: sim-gamma\n    family: gamma\n"
             "    latency: {ttft_ms: %d, per_token_ms: 0}\n",
             DEMO_Q, ttft_ms, ttft_ms, beta_faults, ttft_ms);
    tu_write_file(path, text, (size_t)-1);
    return path;
}

/* Three seats, two calls in flight per model, exactly `rounds` rounds (no
 * stopping rule), so a run's length is known: every question makes
 * 2 x 3 x rounds calls. extra: more YAML at the top level (or ""). */
static char *write_workflow(int rounds, const char *extra)
{
    static const char *const ids[] = {"alpha", "beta", "gamma"};
    char *path = tu_path(tu_tmp, "wf.yaml"), text[4096];
    size_t n = 0;

    n += (size_t)snprintf(text + n, sizeof text - n,
                          "name: progress\nversion: 1\nseed: 42\nmodels:\n");
    for (size_t i = 0; i < 3; i++)
        n += (size_t)snprintf(text + n, sizeof text - n,
                              "  - id: %s\n    endpoint: ${NSED_SIM_URL}\n"
                              "    model: sim-%s\n    family: %s\n"
                              "    max_concurrency: 2\n"
                              "    structured_output: true\n",
                              ids[i], ids[i], ids[i]);
    snprintf(text + n, sizeof text - n,
             "broker:\n  policy: fixed\nteams:\n  main:\n    roles:\n"
             "      - name: solver\n        count: 3\n"
             "        models: [alpha, beta, gamma]\n"
             "rounds:\n  min: %d\n  max: %d\n"
             "answer:\n  extract: boxed\n  compare: numeric\n%s",
             rounds, rounds, extra);
    tu_write_file(path, text, (size_t)-1);
    return path;
}

/* One "nsed run: progress:" line, parsed. */
typedef struct pline {
    double elapsed; /* s, as printed (whole seconds) */
    double eta;     /* s, < 0 when printed as "-" */
    double retries;
    char paused[64];
} pline;

static double parse_mss(const char *s)
{
    int h = 0, m = 0, sec = 0;

    if (sscanf(s, "%d:%d:%d", &h, &m, &sec) == 3)
        return h * 3600.0 + m * 60.0 + sec;
    if (sscanf(s, "%d:%d", &m, &sec) == 2)
        return m * 60.0 + sec;
    return -1;
}

/* The progress lines of err into lines[] (at most max); returns their
 * number. */
static size_t parse_lines(const char *err, pline *lines, size_t max)
{
    size_t n = 0;

    for (const char *p = err; p && *p && n < max;) {
        const char *nl = strchr(p, '\n'), *q;
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        char line[1024];

        snprintf(line, sizeof line, "%.*s", (int)len, p);
        p = nl ? nl + 1 : p + len;
        if (strncmp(line, "nsed run: progress: ", 20) != 0)
            continue;
        memset(&lines[n], 0, sizeof lines[n]);
        q = strstr(line, ", elapsed ");
        ck_assert_msg(q, "no elapsed in: %s", line);
        lines[n].elapsed = parse_mss(q + 10);
        q = strstr(line, "ETA ");
        ck_assert_msg(q, "no ETA in: %s", line);
        lines[n].eta = q[4] == '-' ? -1 : parse_mss(q + 4);
        q = strstr(line, " calls in flight, ");
        ck_assert_msg(q, "no retries in: %s", line);
        lines[n].retries = strtod(q + 18, NULL);
        q = strstr(line, ", paused: ");
        if (q)
            sscanf(q + 10, "%63[^,]", lines[n].paused);
        n++;
    }
    return n;
}

/* A log (stderr a pipe) gets plain lines at the interval, no escape
 * sequences, and the last one at the end. */
START_TEST(progress_plain_lines_at_interval)
{
    tu_sim sim;
    char *cfg = write_sim(50, 0), *wf = write_workflow(2, "");
    char *sdir = tu_path(tu_tmp, "store"), *out = NULL, *err = NULL;
    pline lines[64];
    size_t n;

    tu_sim_start(&sim, cfg, NULL, NULL);
    /* 24 questions x 12 calls at 6 calls per 50 ms: about 2.4 s */
    ck_assert_int_eq(TU_NSED(sim.url, &out, &err, "run", wf, "--questions",
                             DEMO_Q, "--store", sdir, "--limit", "24",
                             "--progress-interval", "1"),
                     0);
    ck_assert_msg(!strchr(err, '\r') && !strchr(err, '\033'),
                  "escape sequences in a log:\n%s", err);
    n = parse_lines(err, lines, 64);
    ck_assert_msg(n >= 3, "%zu progress lines in:\n%s", n, err);
    /* line k (from 1) at elapsed k s, give or take the 0.25 s report
     * period and a loop turn; the last is the final report */
    for (size_t k = 0; k + 1 < n; k++)
        ck_assert_msg(fabs(lines[k].elapsed - (double)(k + 1)) <= 1.0,
                      "line %zu at %.0f s:\n%s", k + 1, lines[k].elapsed, err);
    ck_assert(tu_contains(err, "nsed run: progress: 24/24 done"));
    free(out);
    free(err);

    /* an interval of 0 s is refused */
    ck_assert_int_eq(TU_NSED(sim.url, &out, &err, "run", wf, "--store", sdir,
                             "--progress-interval", "0"),
                     2);
    ck_assert(tu_contains(err, "--progress-interval"));
    free(out);
    free(err);
    tu_sim_stop(&sim);
    free(cfg);
    free(wf);
    free(sdir);
}
END_TEST

/* The ETA printed at 10-20% of a run whose pace is fixed (every call takes
 * 50 ms, two rounds per question, 6 calls in flight) is within 1.5x of the
 * time that was really left. */
START_TEST(eta_close_to_actual_early)
{
    tu_sim sim;
    char *cfg = write_sim(50, 0), *wf = write_workflow(2, "");
    char *sdir = tu_path(tu_tmp, "store"), *out = NULL, *err = NULL;
    pline lines[128];
    size_t n, checked = 0;
    double total;

    tu_sim_start(&sim, cfg, NULL, NULL);
    /* 90 questions x 12 calls at 120 calls/s: about 9 s */
    ck_assert_int_eq(TU_NSED(sim.url, &out, &err, "run", wf, "--questions",
                             DEMO_Q, "--store", sdir, "--limit", "90",
                             "--progress-interval", "1"),
                     0);
    n = parse_lines(err, lines, 128);
    ck_assert_uint_ge(n, 2);
    total = lines[n - 1].elapsed;
    ck_assert_msg(total >= 5, "run took %.0f s:\n%s", total, err);
    for (size_t k = 0; k + 1 < n; k++) {
        double left = total - lines[k].elapsed, ratio;

        if (lines[k].elapsed < 0.1 * total || lines[k].elapsed > 0.2 * total)
            continue;
        ck_assert_msg(lines[k].eta >= 0, "no ETA at %.0f s of %.0f:\n%s",
                      lines[k].elapsed, total, err);
        ratio = lines[k].eta / left;
        fprintf(stderr,
                "eta_close_to_actual_early: at %.0f s of %.0f s: ETA %.0f s, "
                "actually left %.0f s (%.2fx)\n",
                lines[k].elapsed, total, lines[k].eta, left, ratio);
        ck_assert_msg(ratio <= 1.5 && ratio >= 1 / 1.5,
                      "ETA %.0f s at %.0f s, %.0f s were left:\n%s",
                      lines[k].eta, lines[k].elapsed, left, err);
        checked++;
    }
    ck_assert_msg(checked >= 1, "no progress line at 10-20%% of the run:\n%s",
                  err);
    free(out);
    free(err);
    tu_sim_stop(&sim);
    free(cfg);
    free(wf);
    free(sdir);
}
END_TEST

/* Retries and a model paused by its circuit breaker show in the line:
 * beta fails its first 4 attempts, the breaker opens after 2 and stays
 * open 2 s, longer than the 1 s interval. */
START_TEST(progress_shows_retries_and_paused)
{
    tu_sim sim;
    char *cfg = write_sim(50, 4);
    char *wf = write_workflow(1, "gateway:\n  retry: {base_delay_ms: 10, "
                                 "max_delay_ms: 20}\n"
                                 "  circuit_breaker: {failures: 2, "
                                 "cooldown_s: 2}\n");
    char *sdir = tu_path(tu_tmp, "store"), *out = NULL, *err = NULL;
    pline lines[64];
    size_t n, paused = 0;

    tu_sim_start(&sim, cfg, NULL, NULL);
    ck_assert_int_eq(TU_NSED(sim.url, &out, &err, "run", wf, "--questions",
                             DEMO_Q, "--store", sdir, "--limit", "6",
                             "--progress-interval", "1"),
                     0);
    /* the breaker's own lines (down, back) are plain in a log too */
    ck_assert_msg(tu_contains(err, "model beta (endpoint ") &&
                      tu_contains(err, "model beta is back"),
                  "%s", err);
    ck_assert_msg(!strchr(err, '\r') && !strchr(err, '\033'),
                  "escape sequences in a log:\n%s", err);
    n = parse_lines(err, lines, 64);
    ck_assert_uint_ge(n, 2);
    for (size_t k = 0; k < n; k++)
        paused += strcmp(lines[k].paused, "beta") == 0;
    ck_assert_msg(paused >= 1, "beta never shown paused:\n%s", err);
    /* 4 failed attempts, each retried */
    ck_assert_msg(lines[n - 1].retries == 4, "%.0f retries:\n%s",
                  lines[n - 1].retries, err);
    ck_assert_msg(lines[n - 1].paused[0] == '\0', "still paused:\n%s", err);
    free(out);
    free(err);
    tu_sim_stop(&sim);
    free(cfg);
    free(wf);
    free(sdir);
}
END_TEST

/* ---- latency quantiles as bucket ranges ------------------------------ */

typedef struct put_ctx {
    const char *json;
} put_ctx;

static int put_stats_fn(store_txn *txn, void *arg, nsed_err *err)
{
    const put_ctx *c = arg;
    store_key k;

    (void)err;
    ck_assert_int_eq(store_keys_telemetry(STORE_KEYS_GATEWAY, "alpha", &k), 0);
    return store_put(txn, STORE_TELEMETRY, k.bytes, k.len, c->json,
                     strlen(c->json));
}

/* Bucket i of gateway.h holds latencies up to 1 ms * 2^(i/4): bucket 20
 * is (2^4.75, 2^5] ms = (26.91, 32.00], bucket 30 is (2^7.25, 2^7.5] ms =
 * (152.22, 181.02], bucket 0 is (0, 1]. 10 calls in bucket 20 and one in
 * bucket 30 put p50 in bucket 20 and p95 (the 11th of 11) in bucket 30. */
START_TEST(status_latency_as_bucket_ranges)
{
    char *sdir = tu_path(tu_tmp, "store"), *out = NULL, *err = NULL;
    gateway_stats gs;
    cJSON *j, *m;
    store *st = NULL;
    nsed_err e = {0};
    put_ctx c;
    char *text;

    ck_assert_int_eq(TU_NSED(NULL, &out, &err, "ingest", DEMO_WF, "--questions",
                             DEMO_Q, "--store", sdir),
                     0);
    free(out);
    free(err);
    memset(&gs, 0, sizeof gs);
    gs.calls = gs.ok = gs.attempts = 11;
    gs.latency_hist[20] = 10;
    gs.latency_hist[30] = 1;
    gs.latency_max_s = 0.2;
    gs.latency_sum_s = 10 * 0.03 + 0.17;
    j = gateway_stats_to_json(&gs);
    text = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    c.json = text;
    ck_assert_int_eq(store_open(sdir, NULL, &st, &e), 0);
    ck_assert_int_eq(store_write(st, put_stats_fn, &c, &e), 0);
    store_close(st);
    free(text);

    ck_assert_int_eq(TU_NSED(NULL, &out, &err, "status", "--store", sdir), 0);
    ck_assert_msg(tu_contains(out, "    26.9-32.0       152-181 "), "%s", out);
    /* the header's columns line up with the ranges */
    ck_assert_msg(tu_contains(out, "        p50 ms        p95 ms"), "%s", out);
    free(out);
    free(err);

    j = tu_nsed_status(sdir);
    m = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "models"), "alpha");
    ck_assert_ptr_nonnull(m);
    ck_assert_double_eq_tol(tu_jnum(m, "latency_p50_lo_ms", NULL), 26.9087,
                            1e-3);
    ck_assert_double_eq_tol(tu_jnum(m, "latency_p50_ms", NULL), 32.0, 1e-9);
    ck_assert_double_eq_tol(tu_jnum(m, "latency_p95_lo_ms", NULL), 152.2185,
                            1e-3);
    ck_assert_double_eq_tol(tu_jnum(m, "latency_p95_ms", NULL), 181.0193, 1e-3);
    cJSON_Delete(j);
    free(sdir);
}
END_TEST

Suite *tu_suite(void)
{
    Suite *s = suite_create("progress");
    TCase *tc = tcase_create("run");

    tcase_add_checked_fixture(tc, tu_tmp_setup, tu_tmp_teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, progress_plain_lines_at_interval);
    tcase_add_test(tc, eta_close_to_actual_early);
    tcase_add_test(tc, progress_shows_retries_and_paused);
    suite_add_tcase(s, tc);
    tc = tcase_create("status");
    tcase_add_checked_fixture(tc, tu_tmp_setup, tu_tmp_teardown);
    tcase_add_test(tc, status_latency_as_bucket_ranges);
    suite_add_tcase(s, tc);
    return s;
}
