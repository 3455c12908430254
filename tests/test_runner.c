/* Whole runs: `nsed run` against nsed-sim over real HTTP with a real LMDB
 * store. Exact resume after kill -9 at random points, incomplete and
 * degraded questions, dry run, the export, and the demo's claim: NSED beats
 * the best single model and the majority vote when verification is good,
 * and does not when it is poor. */
#include "testutil.h"

#include "pipeline/runner/runner_int.h"
#include "stages/converge.h"
#include "store/store_keys.h"

#include <check.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define DEMO_WF NSED_SOURCE_DIR "/workflows/demo.yaml"
#define DEMO_Q NSED_SOURCE_DIR "/workflows/demo-questions.jsonl"
#define DEMO_SIM NSED_SOURCE_DIR "/tests/sim/configs/demo-sim.yaml"
#define DATA NSED_SOURCE_DIR "/tests/data/runner/"

#define NSED(url, out, err, ...) TU_NSED(url, out, err, __VA_ARGS__)

static size_t count_lines(const char *s)
{
    size_t n = 0;

    for (; s && *s; s++)
        n += *s == '\n';
    return n;
}

/* ---- a whole run ---------------------------------------------------------- */

START_TEST(demo_run_end_to_end)
{
    tu_sim sim;
    char *sdir = tu_path(tu_tmp, "store"), *out = NULL, *err = NULL, *exp;
    cJSON *st, *line;
    double before;
    const char *nl;

    tu_sim_start(&sim, DEMO_SIM, NULL, NULL);
    ck_assert_msg(NSED(sim.url, &out, &err, "run", DEMO_WF, "--questions",
                       DEMO_Q, "--store", sdir, "--quiet") == 0,
                  "run: %s", err);
    free(out);
    free(err);

    st = tu_nsed_status(sdir);
    ck_assert_int_eq((int)tu_jnum(st, "questions", "total"), 120);
    ck_assert_int_eq((int)tu_jnum(st, "questions", "done"), 120);
    ck_assert_int_eq((int)tu_jnum(st, "questions", "incomplete"), 0);
    ck_assert_int_eq((int)tu_jnum(st, "accuracy", "with_reference"), 120);
    ck_assert(tu_jnum(st, "rounds_mean", NULL) >= 1.0);
    ck_assert(tu_jnum(st, "rounds_mean", NULL) <= 4.0);
    cJSON_Delete(st);

    exp = tu_nsed_export(sdir);
    ck_assert_uint_eq(count_lines(exp), 120);
    nl = strchr(exp, '\n');
    line = cJSON_ParseWithLength(exp, (size_t)(nl - exp));
    ck_assert_ptr_nonnull(line);
    ck_assert_str_eq(cJSON_GetObjectItem(line, "id")->valuestring,
                     "demo-001");
    /* the documented fields are there, the winner de-anonymized */
    static const char *const fields[] = {
        "final_answer", "winning_response", "correct", "rounds",
        "stop_reason", "winner", "scores", "tokens", "cost_usd", "degraded",
        "missing_seats", "baselines", "meta"};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        ck_assert_msg(cJSON_GetObjectItem(line, fields[i]) != NULL,
                      "export lacks %s", fields[i]);
    ck_assert(cJSON_IsString(cJSON_GetObjectItem(
        cJSON_GetObjectItem(line, "winner"), "model")));
    ck_assert_str_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(line, "meta"),
                                         "source")->valuestring,
                     "generated");
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(
                         cJSON_GetObjectItem(line, "baselines"), "models")),
                     3);
    cJSON_Delete(line);

    /* running again finds everything done and sends nothing */
    before = tu_sim_total_requests(&sim);
    ck_assert_int_eq(NSED(sim.url, &out, &err, "run", DEMO_WF, "--store",
                          sdir, "--quiet"),
                     0);
    ck_assert(tu_sim_total_requests(&sim) == before);
    free(out);
    free(err);
    free(exp);
    tu_sim_stop(&sim);
    free(sdir);
}
END_TEST

START_TEST(dry_run_sends_nothing)
{
    tu_sim sim;
    char *sdir = tu_path(tu_tmp, "store"), *out = NULL, *err = NULL;
    const char *p;
    size_t lines = 0;
    cJSON *st;

    tu_sim_start(&sim, DEMO_SIM, NULL, NULL);
    ck_assert_msg(NSED(sim.url, &out, &err, "run", DEMO_WF, "--questions",
                       DEMO_Q, "--store", sdir, "--limit", "5",
                       "--dry-run") == 0,
                  "%s", err);
    /* round 0: three proposals for each of five questions */
    for (p = out; (p = strchr(p, '\n')); p++)
        lines++;
    ck_assert_uint_eq(lines, 15);
    ck_assert(tu_contains(out, "\"messages\""));
    ck_assert(tu_contains(out, "=====BEGIN QUESTION====="));
    ck_assert(tu_sim_total_requests(&sim) == 0);
    st = tu_nsed_status(sdir);
    ck_assert_int_eq((int)tu_jnum(st, "questions", "done"), 0);
    cJSON_Delete(st);
    free(out);
    free(err);
    tu_sim_stop(&sim);
    free(sdir);
}
END_TEST

/* ---- kill -9 at random points ----------------------------------------- */

/* Kill a run of the demo at random moments, KILLS times in all, rerunning
 * the same command after each kill; every run that completes must export
 * exactly what an uninterrupted run exported, and must have sent at most
 * the reference run's calls plus what can be in flight at each kill. */
START_TEST(kill_and_resume_is_exact)
{
    const char *longmode = getenv("NSED_LONG_TESTS");
    int kills_wanted = longmode && *longmode ? 100 : 20;
    /* requests in flight at once: 3 models x max_concurrency 8 */
    const double max_in_flight = 24;
    tu_sim sim;
    char *ref_store = tu_path(tu_tmp, "ref"), *out = NULL, *err = NULL;
    char *ref_export;
    double r0, before;
    int kills = 0, stores = 0, completed = 0;
    unsigned rng = 12345;

    tu_sim_start(&sim, DATA "slow-sim.yaml", NULL, NULL);
    before = tu_sim_total_requests(&sim);
    ck_assert_msg(NSED(sim.url, &out, &err, "run", DEMO_WF, "--questions",
                       DEMO_Q, "--store", ref_store, "--quiet") == 0,
                  "reference run: %s", err);
    free(out);
    free(err);
    r0 = tu_sim_total_requests(&sim) - before;
    ref_export = tu_nsed_export(ref_store);
    ck_assert_uint_eq(count_lines(ref_export), 120);

    while (kills < kills_wanted) {
        char name[32], *sdir;
        int store_kills = 0;

        snprintf(name, sizeof name, "s%d", stores++);
        sdir = tu_path(tu_tmp, name);
        before = tu_sim_total_requests(&sim);
        for (;;) {
            rng = rng * 1103515245u + 12345u;
            /* 20..199 ms */
            if (!tu_nsed_run_or_kill(sim.url, DEMO_WF, DEMO_Q, sdir,
                                     kills < kills_wanted
                                         ? (double)(20 + (rng >> 16) % 180)
                                         : -1.0))
                break;
            kills++;
            store_kills++;
        }
        {
            double sent = tu_sim_total_requests(&sim) - before;
            char *exp = tu_nsed_export(sdir);

            completed++;
            /* same results as the uninterrupted run */
            ck_assert_msg(strcmp(exp, ref_export) == 0,
                          "store %s (%d kills) exported other results", name,
                          store_kills);
            /* finished calls were never sent again */
            ck_assert_msg(sent >= r0 &&
                              sent <= r0 + store_kills * max_in_flight,
                          "%s: %.0f requests for %d kills; uninterrupted "
                          "run: %.0f",
                          name, sent, store_kills, r0);
            free(exp);
        }
        free(sdir);
    }
    ck_assert_int_ge(kills, kills_wanted);
    ck_assert_int_ge(completed, 1);
    free(ref_export);
    free(ref_store);
    tu_sim_stop(&sim);
}
END_TEST

/* Ctrl-C: the run stops after committing what is finished, exits 130, and
 * the same command finishes the rest. */
START_TEST(interrupt_commits_and_resumes)
{
    tu_sim sim;
    char *sdir = tu_path(tu_tmp, "s"), *out = NULL, *err = NULL;
    struct timespec d = {0, 600 * 1000000L};
    cJSON *st;
    pid_t pid;
    int status;

    tu_sim_start(&sim, DATA "slow-sim.yaml", NULL, NULL);
    pid = tu_nsed_spawn_run(sim.url, DEMO_WF, DEMO_Q, sdir);
    nanosleep(&d, NULL);
    ck_assert(kill(pid, SIGINT) == 0);
    while (waitpid(pid, &status, 0) < 0)
        ck_assert(errno == EINTR);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 130,
                  "status %d", status);
    st = tu_nsed_status(sdir);
    ck_assert_int_lt((int)tu_jnum(st, "questions", "done"), 120);
    ck_assert_int_gt((int)tu_jnum(st, "questions", "in_progress"), 0);
    cJSON_Delete(st);
    ck_assert_msg(NSED(sim.url, &out, &err, "run", DEMO_WF, "--store", sdir,
                       "--quiet") == 0,
                  "%s", err);
    st = tu_nsed_status(sdir);
    ck_assert_int_eq((int)tu_jnum(st, "questions", "done"), 120);
    cJSON_Delete(st);
    free(out);
    free(err);
    tu_sim_stop(&sim);
    free(sdir);
}
END_TEST

/* ---- infrastructure failures ------------------------------------------- */

START_TEST(lost_seat_leaves_incomplete_then_resumes)
{
    tu_sim sim;
    char *sdir = tu_path(tu_tmp, "store"), *out = NULL, *err = NULL, *exp;
    cJSON *st;
    int rc;

    tu_sim_start(&sim, DATA "flaky-sim.yaml", NULL, NULL);
    rc = NSED(sim.url, &out, &err, "run", DATA "flaky.yaml", "--questions",
              DEMO_Q, "--store", sdir, "--quiet");
    ck_assert_msg(rc == 1, "run exit %d: %s", rc, err);
    ck_assert(tu_contains(err, "incomplete"));
    ck_assert(tu_contains(err, "run the same command again"));
    free(out);
    free(err);
    st = tu_nsed_status(sdir);
    ck_assert_int_gt((int)tu_jnum(st, "questions", "incomplete"), 0);
    ck_assert_int_eq((int)(tu_jnum(st, "questions", "done") +
                           tu_jnum(st, "questions", "incomplete")),
                     120);
    /* nothing was scored with a seat missing */
    ck_assert_int_eq((int)tu_jnum(st, "questions", "degraded"), 0);
    cJSON_Delete(st);

    /* the fault budget is spent: the rerun finishes every question */
    ck_assert_msg(NSED(sim.url, &out, &err, "run", DATA "flaky.yaml",
                       "--store", sdir, "--quiet") == 0,
                  "rerun: %s", err);
    st = tu_nsed_status(sdir);
    ck_assert_int_eq((int)tu_jnum(st, "questions", "done"), 120);
    ck_assert_int_eq((int)tu_jnum(st, "questions", "incomplete"), 0);
    ck_assert_int_eq((int)tu_jnum(st, "questions", "degraded"), 0);
    cJSON_Delete(st);
    exp = tu_nsed_export(sdir);
    ck_assert(!tu_contains(exp, "\"degraded\":true"));
    free(exp);
    free(out);
    free(err);
    tu_sim_stop(&sim);
    free(sdir);
}
END_TEST

START_TEST(allow_degraded_flags_missing_seats)
{
    tu_sim sim;
    char *sdir = tu_path(tu_tmp, "store"), *out = NULL, *err = NULL, *exp;
    cJSON *st;

    tu_sim_start(&sim, DATA "flaky-sim.yaml", NULL, NULL);
    ck_assert_msg(NSED(sim.url, &out, &err, "run", DATA "flaky.yaml",
                       "--questions", DEMO_Q, "--store", sdir, "--quiet",
                       "--allow-degraded") == 0,
                  "%s", err);
    st = tu_nsed_status(sdir);
    /* done and degraded are apart: degraded is not a kind of done */
    ck_assert_int_eq((int)(tu_jnum(st, "questions", "done") +
                           tu_jnum(st, "questions", "degraded")),
                     120);
    ck_assert_int_gt((int)tu_jnum(st, "questions", "degraded"), 0);
    cJSON_Delete(st);
    exp = tu_nsed_export(sdir);
    ck_assert(tu_contains(exp, "\"degraded\":true"));
    ck_assert(tu_contains(exp, "\"missing_seats\":[{\"seat\":2,\"model\":"
                               "\"gamma\""));
    free(exp);
    free(out);
    free(err);
    tu_sim_stop(&sim);
    free(sdir);
}
END_TEST

/* ---- reliability weighting ---------------------------------------------- */

static double weight_of(const char *line, const char *model)
{
    cJSON *j = cJSON_Parse(line);
    const cJSON *w = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(j, "reliability"), model);
    double v;

    ck_assert_msg(cJSON_IsNumber(w), "no reliability weight for %s", model);
    v = w->valuedouble;
    cJSON_Delete(j);
    return v;
}

/* With scoring.reliability_weighting, each question is scored with the
 * evaluator weights measured when it started: equal at first (only the
 * prior is known), and once telemetry shows that sim-gamma judges badly
 * (p_ver 0.2) its evaluations count for nothing. */
START_TEST(reliability_weights_follow_telemetry)
{
    tu_sim sim;
    char *sdir = tu_path(tu_tmp, "store"), *out = NULL, *err = NULL, *exp;
    char *first, *last;

    tu_sim_start(&sim, DATA "unreliable-sim.yaml", NULL, NULL);
    ck_assert_msg(NSED(sim.url, &out, &err, "run", DATA "weighted.yaml",
                       "--questions", DEMO_Q, "--store", sdir, "--quiet",
                       "--max-active", "8") == 0,
                  "%s", err);
    exp = tu_nsed_export(sdir);
    ck_assert_uint_eq(count_lines(exp), 120);
    first = exp;
    *strchr(first, '\n') = '\0';
    last = first + strlen(first) + 1;
    while (strchr(last, '\n') && strchr(last, '\n')[1])
        last = strchr(last, '\n') + 1;
    *strchr(last, '\n') = '\0';
    /* the first questions start on priors alone: the demo's priors */
    ck_assert(weight_of(first, "alpha") > 0);
    ck_assert(weight_of(first, "gamma") > 0);
    /* by the end gamma is measured below a coin flip: weight 0 */
    ck_assert_msg(weight_of(last, "gamma") == 0, "gamma weight %g",
                  weight_of(last, "gamma"));
    ck_assert(weight_of(last, "alpha") > 0.3);
    ck_assert(weight_of(last, "beta") > 0.3);
    free(exp);
    free(out);
    free(err);
    tu_sim_stop(&sim);
    free(sdir);
}
END_TEST

/* ---- the efficiency-fatigue fit ----------------------------------------- */

/* The fit itself is tested in tests/test_fit.c. */

/* A run whose fatigue rule leaves every parameter open: its exploration
 * slice (15% of 120 questions) is below fit_min_questions (30), so no
 * question stops on the fit, and status says so. */
START_TEST(fatigue_rule_fitted_from_telemetry)
{
    tu_sim sim;
    char *sdir = tu_path(tu_tmp, "store"), *out = NULL, *err = NULL;
    cJSON *st, *fit;

    tu_sim_start(&sim, DEMO_SIM, NULL, NULL);
    ck_assert_msg(NSED(sim.url, &out, &err, "run", DATA "fatigue.yaml",
                       "--questions", DEMO_Q, "--store", sdir, "--quiet",
                       "--max-active", "8") == 0,
                  "%s", err);
    st = tu_nsed_status(sdir);
    ck_assert_int_eq((int)tu_jnum(st, "questions", "done"), 120);
    ck_assert(!cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(st, "stop_reasons"),
        "efficiency_fatigue"));
    fit = cJSON_GetObjectItemCaseSensitive(st, "fatigue_fit");
    ck_assert_msg(cJSON_IsObject(fit), "no fit in status");
    ck_assert(tu_jnum(fit, "slice_questions", NULL) > 0 &&
              tu_jnum(fit, "slice_questions", NULL) < 30);
    ck_assert(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(fit, "used")));
    ck_assert(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(fit,
                                                              "not_used")));
    cJSON_Delete(st);
    free(out);
    free(err);
    tu_sim_stop(&sim);
    free(sdir);
}
END_TEST

/* ---- does deliberation help? ------------------------------------------- */

typedef struct accuracy {
    double nsed, majority, best_single;
} accuracy;

static accuracy run_accuracy(const char *sim_config, const char *seed)
{
    const char *extra[] = {"--seed", seed, NULL};
    tu_sim sim;
    char name[64], *sdir, *out = NULL, *err = NULL;
    cJSON *st, *m;
    accuracy a = {0};
    double n;

    snprintf(name, sizeof name, "acc-%s-%s", seed,
             strstr(sim_config, "weak") ? "weak" : "good");
    sdir = tu_path(tu_tmp, name);
    tu_sim_start(&sim, sim_config, extra, NULL);
    ck_assert_msg(NSED(sim.url, &out, &err, "run", DEMO_WF, "--questions",
                       DEMO_Q, "--store", sdir, "--seed", seed,
                       "--quiet") == 0,
                  "%s", err);
    st = tu_nsed_status(sdir);
    n = tu_jnum(st, "accuracy", "with_reference");
    a.nsed = tu_jnum(st, "accuracy", "nsed_correct") / n;
    a.majority = tu_jnum(st, "accuracy", "majority_correct") / n;
    cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(
                              cJSON_GetObjectItemCaseSensitive(st, "accuracy"),
                              "round0_by_model")) {
        double acc = tu_jnum(m, "correct", NULL) / tu_jnum(m, "answers", NULL);

        if (acc > a.best_single)
            a.best_single = acc;
    }
    cJSON_Delete(st);
    free(out);
    free(err);
    tu_sim_stop(&sim);
    free(sdir);
    return a;
}

START_TEST(deliberation_helps_only_with_good_verifiers)
{
    static const char *const seeds[] = {"1", "2", "3"};
    accuracy good = {0}, weak = {0};

    for (size_t i = 0; i < 3; i++) {
        accuracy g = run_accuracy(DEMO_SIM, seeds[i]);
        accuracy w = run_accuracy(DATA "weak-sim.yaml", seeds[i]);

        /* with good verifiers every seed shows deliberation ahead */
        ck_assert_msg(g.nsed > g.majority && g.nsed > g.best_single,
                      "seed %s: nsed %.3f majority %.3f best %.3f", seeds[i],
                      g.nsed, g.majority, g.best_single);
        good.nsed += g.nsed / 3;
        good.majority += g.majority / 3;
        good.best_single += g.best_single / 3;
        weak.nsed += w.nsed / 3;
        weak.majority += w.majority / 3;
        weak.best_single += w.best_single / 3;
    }
    /* clearly ahead on average: at least 8 points over the better baseline */
    ck_assert_msg(good.nsed >= good.majority + 0.08 &&
                      good.nsed >= good.best_single + 0.08,
                  "good verifiers: nsed %.3f majority %.3f best %.3f",
                  good.nsed, good.majority, good.best_single);
    /* with p_ver < 0.5 the team is no better than its baselines */
    ck_assert_msg(weak.nsed <= weak.majority + 0.02 &&
                      weak.nsed <= weak.best_single + 0.02,
                  "weak verifiers: nsed %.3f majority %.3f best %.3f",
                  weak.nsed, weak.majority, weak.best_single);
}
END_TEST

/* ---- the store key map ------------------------------------------------- */

/* Keys are the bytes of the map in store_keys.h, written out by hand, and
 * parse back to what built them. */
START_TEST(store_keys_match_the_map)
{
    static const unsigned char round7[] = {'q', '1', 0, 'r', 0, 0, 0, 7};
    static const unsigned char big[] = {'q', 0, 'r', 1, 2, 3, 4};
    static const struct {
        enum store_keys_qrec rec;
        char tag;
    } tags[] = {{STORE_KEYS_STATE, 's'},
                {STORE_KEYS_INCOMPLETE, 'i'},
                {STORE_KEYS_BROKER, 'b'},
                {STORE_KEYS_CONTEXT, 'c'}};
    char longid[STORE_KEY_MAX + 1];
    enum store_keys_qrec rec;
    enum store_keys_tele kind;
    size_t idlen, off, len;
    uint32_t round = 0;
    store_key k;

    for (size_t i = 0; i < sizeof tags / sizeof tags[0]; i++) {
        const unsigned char want[] = {'q', '1', 0, (unsigned char)tags[i].tag};

        ck_assert_int_eq(store_keys_question("q1", tags[i].rec, 9, &k), 0);
        ck_assert_uint_eq(k.len, sizeof want);
        ck_assert(memcmp(k.bytes, want, sizeof want) == 0);
        ck_assert_int_eq(store_keys_question_parse(k.bytes, k.len, &idlen,
                                                   &rec, &round), 0);
        ck_assert_uint_eq(idlen, 2);
        ck_assert_int_eq(rec, tags[i].rec);
    }
    ck_assert_int_eq(store_keys_question("q1", STORE_KEYS_ROUND, 7, &k), 0);
    ck_assert_uint_eq(k.len, sizeof round7);
    ck_assert(memcmp(k.bytes, round7, sizeof round7) == 0);
    ck_assert_int_eq(store_keys_question_parse(big, sizeof big, &idlen, &rec,
                                               &round), 0);
    ck_assert_int_eq(rec, STORE_KEYS_ROUND);
    ck_assert_uint_eq(round, 0x01020304u);
    ck_assert_uint_eq(idlen, 1);
    /* shapes that are not a record of the map */
    ck_assert_int_eq(store_keys_question_parse("q1", 2, &idlen, &rec, &round),
                     NSED_EINVAL);
    ck_assert_int_eq(store_keys_question_parse("q1\0x", 4, &idlen, &rec,
                                               &round), NSED_EINVAL);
    ck_assert_int_eq(store_keys_question_parse("q1\0r\0", 5, &idlen, &rec,
                                               &round), NSED_EINVAL);
    ck_assert_int_eq(store_keys_question_parse("\0s", 2, &idlen, &rec,
                                               &round), NSED_EINVAL);
    memset(longid, 'x', sizeof longid - 1);
    longid[sizeof longid - 1] = '\0';
    ck_assert_int_eq(store_keys_question(longid, STORE_KEYS_STATE, 0, &k),
                     NSED_ETOOBIG);
    ck_assert_int_eq(store_keys_result("q1", &k), 0);
    ck_assert_uint_eq(k.len, 2);
    ck_assert(memcmp(k.bytes, "q1", 2) == 0);

    ck_assert_int_eq(store_keys_telemetry(STORE_KEYS_GATEWAY, "alpha", &k), 0);
    ck_assert_uint_eq(k.len, strlen("gateway/alpha"));
    ck_assert(memcmp(k.bytes, "gateway/alpha", k.len) == 0);
    ck_assert_int_eq(store_keys_telemetry(STORE_KEYS_MODEL, "b", &k), 0);
    ck_assert(k.len == 7 && memcmp(k.bytes, "model/b", 7) == 0);
    ck_assert_int_eq(store_keys_telemetry(STORE_KEYS_PRIOR, "c", &k), 0);
    ck_assert(k.len == 7 && memcmp(k.bytes, "prior/c", 7) == 0);
    ck_assert_int_eq(store_keys_telemetry_parse(k.bytes, k.len, &kind, &off,
                                                &len), 0);
    ck_assert_int_eq(kind, STORE_KEYS_PRIOR);
    ck_assert_uint_eq(off, 6);
    ck_assert_uint_eq(len, 1);
    store_keys_rounds(&k);
    ck_assert(k.len == 6 && memcmp(k.bytes, "rounds", 6) == 0);
    ck_assert_int_eq(store_keys_telemetry_parse(k.bytes, k.len, &kind, &off,
                                                &len), NSED_ENOTFOUND);
    ck_assert_int_eq(store_keys_telemetry_parse("model/", 6, &kind, &off,
                                                &len), NSED_ENOTFOUND);
}
END_TEST

Suite *tu_suite(void)
{
    Suite *s = suite_create("runner");
    TCase *tc = tcase_create("runs");

    tcase_add_checked_fixture(tc, tu_tmp_setup, tu_tmp_teardown);
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, demo_run_end_to_end);
    tcase_add_test(tc, dry_run_sends_nothing);
    tcase_add_test(tc, reliability_weights_follow_telemetry);
    suite_add_tcase(s, tc);
    tc = tcase_create("resume");
    tcase_add_checked_fixture(tc, tu_tmp_setup, tu_tmp_teardown);
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, kill_and_resume_is_exact);
    tcase_add_test(tc, interrupt_commits_and_resumes);
    suite_add_tcase(s, tc);
    tc = tcase_create("failures");
    tcase_add_checked_fixture(tc, tu_tmp_setup, tu_tmp_teardown);
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, lost_seat_leaves_incomplete_then_resumes);
    tcase_add_test(tc, allow_degraded_flags_missing_seats);
    suite_add_tcase(s, tc);
    tc = tcase_create("fit");
    tcase_add_checked_fixture(tc, tu_tmp_setup, tu_tmp_teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, fatigue_rule_fitted_from_telemetry);
    suite_add_tcase(s, tc);
    tc = tcase_create("keys");
    tcase_add_test(tc, store_keys_match_the_map);
    suite_add_tcase(s, tc);
    tc = tcase_create("accuracy");
    tcase_add_checked_fixture(tc, tu_tmp_setup, tu_tmp_teardown);
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, deliberation_helps_only_with_good_verifiers);
    suite_add_tcase(s, tc);
    return s;
}
