/* Exactness of a resumed run (issue 10, items 11-13), end to end: `nsed
 * run` against nsed-sim, killed with kill -9 and run again.
 *
 *   - With non-zero prices, a killed and resumed run exports byte for byte
 *     what an uninterrupted one exports, cost_usd included (checkpoints
 *     keep every double exactly).
 *   - Each kill makes the resumed run send again at most the sum over the
 *     models of max_concurrency calls (a reply is durable before the
 *     requests planned from it leave, and a call holds its slot until its
 *     reply is committed).
 */
#include "testutil.h"

#include <check.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define DEMO_WF NSED_SOURCE_DIR "/workflows/demo.yaml"
#define DEMO_Q NSED_SOURCE_DIR "/workflows/demo-questions.jsonl"
#define SLOW_SIM NSED_SOURCE_DIR "/tests/data/runner/slow-sim.yaml"

/* The demo's three models have max_concurrency 8 each. */
#define CAPS_SUM 24

#define NSED(url, out, err, ...) TU_NSED(url, out, err, __VA_ARGS__)



/* The demo workflow with prices that make every cost a double no short
 * decimal holds (0.1 + 0.2 style sums), written into tu_tmp. */
static char *priced_workflow(void)
{
    static const char *const from = "price: {input_per_mtok: 0, "
                                    "output_per_mtok: 0}";
    static const char *const to[] =
        {"price: {input_per_mtok: 0.1, output_per_mtok: 0.7}",
         "price: {input_per_mtok: 0.2, output_per_mtok: 1.3}",
         "price: {input_per_mtok: 0.3, output_per_mtok: 2.9}"};
    char *text = tu_read_file(DEMO_WF, NULL), *path = tu_path(tu_tmp, "p.yaml");
    size_t len = strlen(text), k = 0;
    char *out = malloc(len + 200), *o = out;
    const char *p = text, *hit;

    ck_assert_ptr_nonnull(out);
    while ((hit = strstr(p, from)) != NULL) {
        ck_assert_uint_lt(k, 3);
        memcpy(o, p, (size_t)(hit - p));
        o += hit - p;
        memcpy(o, to[k], strlen(to[k]));
        o += strlen(to[k]);
        k++;
        p = hit + strlen(from);
    }
    ck_assert_uint_eq(k, 3);
    memcpy(o, p, strlen(p) + 1);
    tu_write_file(path, out, (size_t)-1);
    free(out);
    free(text);
    return path;
}

/* Run to the end (no kill). */
static void run_to_end(const char *url, const char *wf, const char *sdir)
{
    char *out = NULL, *err = NULL;

    ck_assert_msg(NSED(url, &out, &err, "run", wf, "--questions", DEMO_Q,
                       "--store", sdir, "--quiet") == 0,
                  "run: %s", err);
    free(out);
    free(err);
}

/* An uninterrupted reference run: its export, request count and time. */
typedef struct reference {
    char *export;
    double requests;
    double ms;
} reference;

static void reference_run(const tu_sim *sim, const char *wf, reference *ref)
{
    char *sdir = tu_path(tu_tmp, "ref");
    double before = tu_sim_total_requests(sim), t0 = tu_now_ms();

    run_to_end(sim->url, wf, sdir);
    ref->ms = tu_now_ms() - t0;
    ref->requests = tu_sim_total_requests(sim) - before;
    ref->export = tu_nsed_export(sdir);
    free(sdir);
}

/* Prices that are not zero: the exported costs are non-zero and at least
 * one needs all 17 digits (so a rounding checkpoint would show). */
static void check_costs_are_exacting(const char *export)
{
    const char *p = export;
    int nonzero = 0, long_ones = 0;

    while ((p = strstr(p, "\"cost_usd\":")) != NULL) {
        const char *v = p + strlen("\"cost_usd\":");
        size_t n = strspn(v, "0123456789.e-+");

        nonzero += strtod(v, NULL) > 0;
        long_ones += n >= 18;
        p = v;
    }
    ck_assert_int_eq(nonzero, 120);
    ck_assert_int_gt(long_ones, 0);
}

/* kill -9 at several points of a priced run, run the same command again
 * after each kill: every store exports what the uninterrupted run did,
 * byte for byte (cost_usd included). */
START_TEST(priced_resume_exports_identical_cost)
{
    tu_sim sim;
    char *wf;
    reference ref;
    unsigned rng = 4242;
    int kills = 0;

    tu_sim_start(&sim, SLOW_SIM, NULL, NULL);
    wf = priced_workflow();
    reference_run(&sim, wf, &ref);
    check_costs_are_exacting(ref.export);
    for (int store = 0; store < 8; store++) {
        char name[16], *sdir, *exp;

        snprintf(name, sizeof name, "s%d", store);
        sdir = tu_path(tu_tmp, name);
        /* two or three kills per store, anywhere in the run */
        for (int k = 0; k < 2 + store % 2; k++) {
            rng = rng * 1103515245u + 12345u;
            kills += tu_nsed_run_or_kill(sim.url, wf, DEMO_Q, sdir,
                                         20 + (double)((rng >> 16) % 1000) /
                                                  1000 * ref.ms * 0.5);
        }
        run_to_end(sim.url, wf, sdir);
        exp = tu_nsed_export(sdir);
        ck_assert_msg(strcmp(exp, ref.export) == 0,
                      "store %s exported other results than the "
                      "uninterrupted run",
                      name);
        free(exp);
        free(sdir);
    }
    ck_assert_int_ge(kills, 12);
    free(ref.export);
    free(wf);
    tu_sim_stop(&sim);
}
END_TEST

/* 20 stores, each killed once at a point spread over the whole run and
 * then resumed: the killed run and its resume together send at most the
 * uninterrupted run's calls plus the sum of max_concurrency. */
START_TEST(kill_resends_at_most_the_concurrency)
{
    const char *longmode = getenv("NSED_LONG_TESTS");
    int points = longmode && *longmode ? 60 : 20, kills = 0;
    double worst = 0;
    tu_sim sim;
    char *wf;
    reference ref;

    tu_sim_start(&sim, SLOW_SIM, NULL, NULL);
    wf = priced_workflow();
    reference_run(&sim, wf, &ref);
    for (int i = 0; i < points; i++) {
        char name[16], *sdir, *exp;
        double before = tu_sim_total_requests(&sim), resent;
        bool killed;

        snprintf(name, sizeof name, "k%d", i);
        sdir = tu_path(tu_tmp, name);
        killed = tu_nsed_run_or_kill(sim.url, wf, DEMO_Q, sdir,
                                     30 + (ref.ms - 30) * (i + 0.5) / points);
        kills += killed;
        run_to_end(sim.url, wf, sdir);
        resent = tu_sim_total_requests(&sim) - before - ref.requests;
        if (resent > worst)
            worst = resent;
        ck_assert_msg(resent >= 0 && resent <= CAPS_SUM,
                      "kill %d at %.0f of %.0f ms: %.0f calls sent again "
                      "(at most %d may be)",
                      i, 30 + (ref.ms - 30) * (i + 0.5) / points, ref.ms,
                      resent, CAPS_SUM);
        exp = tu_nsed_export(sdir);
        ck_assert_msg(strcmp(exp, ref.export) == 0,
                      "store %s exported other results", name);
        free(exp);
        free(sdir);
    }
    fprintf(stderr,
            "exact: %d of %d kill points hit a running run; worst "
            "re-sent calls per kill: %.0f (bound %d)\n",
            kills, points, worst, CAPS_SUM);
    ck_assert_int_ge(kills, points / 2);
    free(ref.export);
    free(wf);
    tu_sim_stop(&sim);
}
END_TEST

Suite *tu_suite(void)
{
    Suite *s = suite_create("exact");
    TCase *tc = tcase_create("kill -9 and resume");

    tcase_add_checked_fixture(tc, tu_tmp_setup, tu_tmp_teardown);
    tcase_set_timeout(tc, 280);
    tcase_add_test(tc, priced_resume_exports_identical_cost);
    tcase_add_test(tc, kill_resends_at_most_the_concurrency);
    suite_add_tcase(s, tc);
    return s;
}
