/* The self-consistency baseline at equal cost (issue 12): `nsed run`
 * against nsed-sim with baselines.self_consistency, and what the export
 * and `nsed status` say. Every expected figure is computed here another
 * way: the team's calls per question from the simulator's request
 * counters (one question at a time, the switch off), the majority from
 * the recorded sample answers, the accuracy from the references. */
#include "testutil.h"

#include "pipeline/workflow/workflow.h"
#include "stages/selfcons.h"

#include <check.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define DEMO_WF NSED_SOURCE_DIR "/workflows/demo.yaml"
#define DEMO_Q NSED_SOURCE_DIR "/workflows/demo-questions.jsonl"
#define NQ 6

#define NSED(url, out, err, ...) TU_NSED(url, out, err, __VA_ARGS__)

/* The demo's workflow hash, as the tree before the baselines section
 * printed it (`nsed validate workflows/demo.yaml` on main), and as the
 * tree before the prompts were reordered (c614f5b) printed it. */
#define DEMO_HASH \
    "872e03ad56091bacb16c2662b504a38665b046038fc1c3d93518aaf427a7dfea"


static const char sim_yaml[] =
    "kind: nsed-sim\n"
    "seed: 7\n"
    "questions: " DEMO_Q "\n"
    "models:\n"
    "  - {name: sim-alpha, family: alpha, p_gen: 0.6, p_ver: 0.8,"
    " tokens: {completion: 120}}\n"
    "  - {name: sim-beta, family: beta, p_gen: 0.5, p_ver: 0.8,"
    " tokens: {completion: 150}}\n"
    "  - {name: sim-gamma, family: gamma, p_gen: 0.45, p_ver: 0.7,"
    " tokens: {completion: 100}}\n"
    "  - {name: sim-slow, family: slow, p_gen: 0.7, p_ver: 0.7,"
    " latency: {ttft_ms: 60, per_token_ms: 0}}\n"
    "  - {name: sim-dead, family: dead, faults: {rate_500: 1.0}}\n";

/* A workflow of a fixed three-seat team (alpha, beta, gamma) with the
 * models slow and dead in the pool, priced so that costs are not zero;
 * baselines is the section (NULL: none). */
static char *workflow_file(const char *name, const char *baselines)
{
    char *w = NULL, *p = tu_path(tu_tmp, name);
    int n = asprintf(
        &w,
        "name: selfcons\n"
        "version: 1\n"
        "seed: 42\n"
        "models:\n"
        "  - {id: alpha, endpoint: \"${NSED_SIM_URL}\", model: sim-alpha,"
        " max_concurrency: 4, structured_output: true,"
        " price: {input_per_mtok: 0.1, output_per_mtok: 0.7}}\n"
        "  - {id: beta, endpoint: \"${NSED_SIM_URL}\", model: sim-beta,"
        " max_concurrency: 4, structured_output: true,"
        " price: {input_per_mtok: 0.2, output_per_mtok: 1.3}}\n"
        "  - {id: gamma, endpoint: \"${NSED_SIM_URL}\", model: sim-gamma,"
        " max_concurrency: 4, structured_output: true,"
        " price: {input_per_mtok: 0.3, output_per_mtok: 2.9}}\n"
        "  - {id: slow, endpoint: \"${NSED_SIM_URL}\", model: sim-slow,"
        " max_concurrency: 2, structured_output: true,"
        " price: {input_per_mtok: 0.5, output_per_mtok: 1.5}}\n"
        "  - {id: dead, endpoint: \"${NSED_SIM_URL}\", model: sim-dead,"
        " max_concurrency: 2, structured_output: true}\n"
        "broker: {policy: fixed}\n"
        "teams:\n"
        "  main:\n"
        "    roles:\n"
        "      - {name: solver, count: 3, models: [alpha, beta, gamma]}\n"
        "rounds: {min: 1, max: 3, stop: {stable_answer: 2}}\n"
        "answer: {extract: boxed, compare: numeric}\n"
        "gateway:\n"
        "  retry: {max_attempts: 2, base_delay_ms: 1, max_delay_ms: 2,"
        " max_total_s: 10}\n"
        "  circuit_breaker: {failures: 1000, cooldown_s: 1}\n"
        "%s%s",
        baselines ? baselines : "", baselines ? "\n" : "");

    ck_assert_int_gt(n, 0);
    tu_write_file(p, w, (size_t)-1);
    free(w);
    return p;
}

/* The first NQ demo questions, in a file of their own. */
static char *questions_file(void)
{
    char *all = tu_read_file(DEMO_Q, NULL), *p = all;
    char *path = tu_path(tu_tmp, "q.jsonl");

    for (int i = 0; i < NQ; i++) {
        p = strchr(p, '\n');
        ck_assert_ptr_nonnull(p);
        p++;
    }
    tu_write_file(path, all, (size_t)(p - all));
    free(all);
    return path;
}

static void run_ok(const char *url, const char *wf, const char *q,
                   const char *sdir, const char *limit)
{
    char *out = NULL, *err = NULL;
    int rc = limit ? NSED(url, &out, &err, "run", wf, "--questions", q,
                          "--store", sdir, "--quiet", "--limit", limit)
                   : NSED(url, &out, &err, "run", wf, "--questions", q,
                          "--store", sdir, "--quiet");

    ck_assert_msg(rc == 0, "run exit %d: %s", rc, err);
    free(out);
    free(err);
}

/* The export lines, parsed (a JSON array the caller deletes). */
static cJSON *export_lines(const char *sdir)
{
    char *text = tu_nsed_export(sdir), *line, *save = NULL;
    cJSON *a = cJSON_CreateArray();

    for (line = strtok_r(text, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        cJSON *j = cJSON_Parse(line);

        ck_assert_msg(j, "export line is not JSON: %s", line);
        cJSON_AddItemToArray(a, j);
    }
    free(text);
    return a;
}

static const cJSON *sc_of(const cJSON *line)
{
    return cJSON_GetObjectItem(cJSON_GetObjectItem(line, "baselines"),
                               "self_consistency");
}

/* The line without baselines.self_consistency, printed. */
static char *without_sc(const cJSON *line)
{
    cJSON *c = cJSON_Duplicate(line, true);
    char *s;

    cJSON_DeleteItemFromObject(cJSON_GetObjectItem(c, "baselines"),
                               "self_consistency");
    s = cJSON_PrintUnformatted(c);
    cJSON_Delete(c);
    return s;
}

/* Same number under the demo's numeric comparison (the sim's answers and
 * references are plain integers and decimals). */
static bool same_number(const char *a, const char *b)
{
    return a && b && strtod(a, NULL) == strtod(b, NULL);
}

/* ---- the strict majority, by hand ---------------------------------------- */

START_TEST(majority_is_strict_and_a_tie_is_drawn)
{
    workflow_answer num = {.extract = WORKFLOW_EXTRACT_BOXED,
                           .compare = WORKFLOW_COMPARE_NUMERIC,
                           .tolerance = 1e-6};
    const char *clear[] = {"4", NULL, "5", "4.0", "5", "4"};
    const char *split[] = {"7", "5", "5", "7", NULL};
    const char *none[] = {NULL, NULL};
    size_t win, votes, drawn_first = 0, drawn_second = 0;
    bool tie, drawn;

    /* 4 (as "4", "4.0", "4") has 3 votes, 5 has 2: a strict majority */
    ck_assert_int_eq(selfcons_majority(&num, clear, 6, 1, "q", &win, &votes,
                                       &tie, &drawn),
                     0);
    ck_assert_uint_eq(win, 0);
    ck_assert_uint_eq(votes, 3);
    ck_assert(!tie && !drawn);
    ck_assert_int_eq(selfcons_majority(&num, none, 2, 1, "q", &win, &votes,
                                       &tie, &drawn),
                     NSED_ENOTFOUND);
    /* 7 and 5 have two votes each: no majority; the draw is recorded and
     * over many questions picks either side, never always the first */
    for (int i = 0; i < 64; i++) {
        char qid[16];

        snprintf(qid, sizeof qid, "q%d", i);
        ck_assert_int_eq(selfcons_majority(&num, split, 5, 9, qid, &win, &votes,
                                           &tie, &drawn),
                         0);
        ck_assert(tie && drawn);
        ck_assert_uint_eq(votes, 2);
        ck_assert_msg(win == 0 || win == 1, "drawn %zu", win);
        drawn_first += win == 0;
        drawn_second += win == 1;
        {
            size_t again;

            ck_assert_int_eq(selfcons_majority(&num, split, 5, 9, qid, &again,
                                               &votes, &tie, &drawn),
                             0);
            ck_assert_uint_eq(again, win); /* seeded: the same draw */
        }
    }
    ck_assert_uint_gt(drawn_first, 10);
    ck_assert_uint_gt(drawn_second, 10);
}
END_TEST

/* ---- the switch off changes nothing -------------------------------------- */

START_TEST(switch_off_changes_nothing)
{
    char *demo = tu_read_file(DEMO_WF, NULL), *off_text = NULL;
    char *off = tu_path(tu_tmp, "demo-off.yaml"), *out = NULL, *err = NULL;
    char *pinned = tu_path(tu_tmp, "demo-pinned.yaml"), *pinned_text = NULL;
    char *sim_cfg = tu_path(tu_tmp, "sim.yaml"), *q = questions_file();
    char *wf_none = workflow_file("none.yaml", NULL);
    char *wf_off = workflow_file("off.yaml",
                                 "baselines: {self_consistency: false}");
    char *s1 = tu_path(tu_tmp, "s1"), *s2 = tu_path(tu_tmp, "s2");
    char *e1, *e2;
    double r0, r1, r2;
    tu_sim sim;

    /* the hash of the demo, with and without the section at its default,
     * is the one the tree printed before the section existed (with the
     * prompts of that tree pinned, as docs/workflow.md tells) */
    ck_assert_int_gt(asprintf(&pinned_text, "%s\n%s", demo,
                              tu_previous_prompts),
                     0);
    tu_write_file(pinned, pinned_text, (size_t)-1);
    ck_assert_int_gt(asprintf(&off_text,
                              "%s\nbaselines: {self_consistency: "
                              "false}\n",
                              pinned_text),
                     0);
    tu_write_file(off, off_text, (size_t)-1);
    ck_assert_int_eq(NSED(NULL, &out, &err, "validate", pinned), 0);
    ck_assert_msg(tu_contains(out, DEMO_HASH), "%s", out);
    free(out);
    free(err);
    /* the demo itself no longer: its default prompts changed */
    ck_assert_int_eq(NSED(NULL, &out, &err, "validate", DEMO_WF), 0);
    ck_assert_msg(tu_contains(out, "workflow hash ") &&
                      !tu_contains(out, DEMO_HASH),
                  "%s", out);
    free(out);
    free(err);
    ck_assert_int_eq(NSED(NULL, &out, &err, "validate", off), 0);
    ck_assert_msg(tu_contains(out, DEMO_HASH), "%s", out);
    free(out);
    free(err);

    /* the same run with and without the key: the same requests, the same
     * export byte for byte, no self_consistency anywhere */
    tu_write_file(sim_cfg, sim_yaml, (size_t)-1);
    tu_sim_start(&sim, sim_cfg, NULL, NULL);
    r0 = tu_sim_total_requests(&sim);
    run_ok(sim.url, wf_none, q, s1, NULL);
    r1 = tu_sim_total_requests(&sim);
    run_ok(sim.url, wf_off, q, s2, NULL);
    r2 = tu_sim_total_requests(&sim);
    tu_sim_stop(&sim);
    ck_assert_double_gt(r1 - r0, 0);
    ck_assert_double_eq(r2 - r1, r1 - r0);
    e1 = tu_nsed_export(s1);
    e2 = tu_nsed_export(s2);
    ck_assert_str_eq(e1, e2);
    ck_assert(!tu_contains(e1, "self_consistency"));
    free(e1);
    free(e2);
    free(s1);
    free(s2);
    free(wf_none);
    free(wf_off);
    free(q);
    free(sim_cfg);
    free(off_text);
    free(pinned_text);
    free(pinned);
    free(off);
    free(demo);
}
END_TEST

/* ---- equal cost ------------------------------------------------------------ */

/* The team's calls of each question, counted by the simulator: the
 * workflow without the baseline run one question more at a time. */
static void team_calls(const tu_sim *sim, const char *wf, const char *q,
                       double calls[NQ], double *total, double *alpha)
{
    char *sdir = tu_path(tu_tmp, "count");
    double a0 = tu_sim_stat(sim, "sim-alpha", "requests");

    *total = 0;
    for (int k = 1; k <= NQ; k++) {
        char limit[8];
        double before = tu_sim_total_requests(sim);

        snprintf(limit, sizeof limit, "%d", k);
        run_ok(sim->url, wf, q, sdir, limit);
        calls[k - 1] = tu_sim_total_requests(sim) - before;
        ck_assert_double_gt(calls[k - 1], 0);
        *total += calls[k - 1];
    }
    *alpha = tu_sim_stat(sim, "sim-alpha", "requests") - a0;
    free(sdir);
}

/* The baseline's answer checked against its recorded samples: grouped
 * here by number, the biggest group is the answer unless another is as
 * big (then it is a tie and the answer one of the biggest). */
static void check_majority(const cJSON *sc)
{
    const cJSON *answers = cJSON_GetObjectItem(sc, "answers"), *a, *b;
    const char *ans = cJSON_GetObjectItem(sc, "answer")->valuestring;
    int best = 0, nbest = 0, ans_votes = 0;

    cJSON_ArrayForEach(a, answers) {
        int n = 0;

        if (!cJSON_IsString(a))
            continue;
        cJSON_ArrayForEach(b, answers)
            n += cJSON_IsString(b) &&
                 same_number(a->valuestring, b->valuestring);
        if (same_number(a->valuestring, ans))
            ans_votes = n;
        if (n > best) {
            best = n;
            nbest = 0;
        }
        if (n == best)
            nbest++; /* counted once per member: nbest / best groups */
    }
    ck_assert_int_gt(best, 0);
    ck_assert_int_eq(ans_votes, best);
    ck_assert_int_eq((int)tu_jnum(sc, "votes", NULL), best);
    ck_assert_int_eq(cJSON_IsTrue(cJSON_GetObjectItem(sc, "tie")),
                     nbest / best > 1);
    ck_assert_int_eq(cJSON_IsTrue(cJSON_GetObjectItem(sc, "drawn")),
                     nbest / best > 1);
}

START_TEST(samples_equal_the_team_calls)
{
    char *sim_cfg = tu_path(tu_tmp, "sim.yaml"), *q = questions_file();
    char *wf_none = workflow_file("none.yaml", NULL);
    char *wf_on = workflow_file("on.yaml",
                                "baselines: {self_consistency: true}");
    char *s_off = tu_path(tu_tmp, "off"), *s_on = tu_path(tu_tmp, "on");
    double calls[NQ], total, before, alpha0, alpha_team, sampled_alpha = 0;
    double cost = 0;
    int correct = 0, i = 0;
    cJSON *off_lines, *on_lines, *st, *acc;
    const cJSON *l;
    tu_sim sim;

    tu_write_file(sim_cfg, sim_yaml, (size_t)-1);
    tu_sim_start(&sim, sim_cfg, NULL, NULL);
    team_calls(&sim, wf_none, q, calls, &total, &alpha_team);
    run_ok(sim.url, wf_none, q, s_off, NULL);
    before = tu_sim_total_requests(&sim);
    alpha0 = tu_sim_stat(&sim, "sim-alpha", "requests");
    run_ok(sim.url, wf_on, q, s_on, NULL);
    /* the team's calls again, plus as many samples */
    ck_assert_double_eq(tu_sim_total_requests(&sim) - before, 2 * total);

    off_lines = export_lines(s_off);
    on_lines = export_lines(s_on);
    ck_assert_int_eq(cJSON_GetArraySize(on_lines), NQ);
    cJSON_ArrayForEach(l, on_lines) {
        const cJSON *sc = sc_of(l);
        const char *model = cJSON_GetObjectItem(sc, "model")->valuestring;
        char *a = without_sc(l),
             *b = without_sc(cJSON_GetArrayItem(off_lines, i));

        ck_assert_msg(cJSON_IsObject(sc), "no baseline in line %d", i);
        /* the deliberation, its cost included, is the same as without */
        ck_assert_str_eq(a, b);
        free(a);
        free(b);
        ck_assert_double_eq(tu_jnum(sc, "samples", NULL), calls[i]);
        ck_assert_double_eq(tu_jnum(sc, "calls", NULL), calls[i]);
        ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(sc, "answers")),
                         (int)calls[i]);
        ck_assert(cJSON_IsTrue(cJSON_GetObjectItem(sc, "complete")));
        ck_assert_double_eq(tu_jnum(sc, "failed", NULL), 0);
        ck_assert_double_gt(tu_jnum(sc, "cost_usd", NULL), 0);
        /* nothing measured before the first question: the priors are
         * equal and the first model in file order is the best */
        if (i == 0)
            ck_assert_str_eq(model, "alpha");
        ck_assert(tu_contains(cJSON_GetObjectItem(sc, "chosen")->valuestring,
                              "highest p_g"));
        if (!strcmp(model, "alpha"))
            sampled_alpha += calls[i];
        check_majority(sc);
        correct +=
            same_number(cJSON_GetObjectItem(sc, "answer")->valuestring,
                        cJSON_GetObjectItem(l, "reference")->valuestring);
        cost += tu_jnum(sc, "cost_usd", NULL);
        i++;
    }
    /* the samples went to the chosen models: alpha got its seat's calls
     * (counted above) and the samples of the questions it was chosen for */
    ck_assert_double_eq(tu_sim_stat(&sim, "sim-alpha", "requests") - alpha0,
                        alpha_team + sampled_alpha);
    tu_sim_stop(&sim);

    st = tu_nsed_status(s_on);
    acc = cJSON_GetObjectItem(cJSON_GetObjectItem(st, "accuracy"),
                              "self_consistency");
    ck_assert_ptr_nonnull(acc);
    ck_assert_double_eq(tu_jnum(acc, "judged", NULL), NQ);
    ck_assert_double_eq(tu_jnum(acc, "correct", NULL), correct);
    ck_assert_double_eq(tu_jnum(acc, "samples", NULL), total);
    ck_assert_double_eq(tu_jnum(acc, "incomplete", NULL), 0);
    ck_assert_double_lt(tu_jnum(acc, "cost_usd", NULL) - cost, 1e-12);
    ck_assert_double_gt(tu_jnum(acc, "cost_usd", NULL) - cost, -1e-12);
    cJSON_Delete(st);
    cJSON_Delete(off_lines);
    cJSON_Delete(on_lines);
    free(s_off);
    free(s_on);
    free(wf_none);
    free(wf_on);
    free(q);
    free(sim_cfg);
}
END_TEST

/* ---- kill and resume ------------------------------------------------------- */

/* The baseline samples the slow model (60 ms a call, two at a time): a
 * kill lands while questions are sampling; the resumed run sends again at
 * most the calls in flight (Σ max_concurrency = 14), the team's calls not
 * one more time, and exports what an uninterrupted run exports. */
START_TEST(kill_and_resume_repays_nothing)
{
    char *sim_cfg = tu_path(tu_tmp, "sim.yaml"), *q = questions_file();
    char *wf = workflow_file("slow.yaml", "baselines: {self_consistency: true,"
                                          " self_consistency_model: slow}");
    char *ref = tu_path(tu_tmp, "ref"), *sdir = tu_path(tu_tmp, "killed");
    char *e_ref, *e;
    double slow_ref, team_ref, b_slow, b_all, slow_mid;
    pid_t pid;
    int status;
    tu_sim sim;

    tu_write_file(sim_cfg, sim_yaml, (size_t)-1);
    tu_sim_start(&sim, sim_cfg, NULL, NULL);
    b_slow = tu_sim_stat(&sim, "sim-slow", "requests");
    b_all = tu_sim_total_requests(&sim);
    run_ok(sim.url, wf, q, ref, NULL);
    slow_ref = tu_sim_stat(&sim, "sim-slow", "requests") - b_slow;
    team_ref = tu_sim_total_requests(&sim) - b_all - slow_ref;
    ck_assert_double_gt(slow_ref, 20);

    b_slow = tu_sim_stat(&sim, "sim-slow", "requests");
    b_all = tu_sim_total_requests(&sim);
    pid = tu_nsed_spawn_run(sim.url, wf, q, sdir);
    /* kill once some samples have been answered */
    for (int i = 0; i < 400; i++) {
        if (tu_sim_stat(&sim, "sim-slow", "requests") - b_slow >= 6)
            break;
        tu_sleep_ms(10);
    }
    kill(pid, SIGKILL);
    while (waitpid(pid, &status, 0) < 0)
        ck_assert(errno == EINTR);
    ck_assert_msg(WIFSIGNALED(status), "the run ended before the kill");
    slow_mid = tu_sim_stat(&sim, "sim-slow", "requests") - b_slow;
    ck_assert_double_lt(slow_mid, slow_ref);
    run_ok(sim.url, wf, q, sdir, NULL);
    /* the team's calls were all in the ledger or sent once */
    ck_assert_double_le(tu_sim_total_requests(&sim) - b_all -
                            (tu_sim_stat(&sim, "sim-slow", "requests") -
                             b_slow),
                        team_ref + 12);
    /* the samples: at most the two in flight at the kill again */
    ck_assert_double_le(tu_sim_stat(&sim, "sim-slow", "requests") - b_slow,
                        slow_ref + 2);
    tu_sim_stop(&sim);
    e_ref = tu_nsed_export(ref);
    e = tu_nsed_export(sdir);
    ck_assert_str_eq(e, e_ref);
    ck_assert(tu_contains(e, "\"model\":\"slow\""));
    free(e);
    free(e_ref);
    free(ref);
    free(sdir);
    free(wf);
    free(q);
    free(sim_cfg);
}
END_TEST

/* ---- a failed baseline ----------------------------------------------------- */

/* Every sample of a model that answers HTTP 500 fails: the questions end
 * as they do without the baseline, the run exits 0, and the baseline is
 * incomplete, out of the accuracy. */
START_TEST(failed_sampling_keeps_the_outcome)
{
    char *sim_cfg = tu_path(tu_tmp, "sim.yaml"), *q = questions_file();
    char *wf_none = workflow_file("none.yaml", NULL);
    char *wf_dead = workflow_file("dead.yaml",
                                  "baselines: {self_consistency: true,"
                                  " self_consistency_model: dead}");
    char *s_off = tu_path(tu_tmp, "off"), *s_dead = tu_path(tu_tmp, "dead");
    cJSON *off_lines, *lines, *st, *acc;
    const cJSON *l;
    int i = 0;
    tu_sim sim;

    tu_write_file(sim_cfg, sim_yaml, (size_t)-1);
    tu_sim_start(&sim, sim_cfg, NULL, NULL);
    run_ok(sim.url, wf_none, q, s_off, NULL);
    run_ok(sim.url, wf_dead, q, s_dead, NULL); /* exit 0 */
    tu_sim_stop(&sim);
    off_lines = export_lines(s_off);
    lines = export_lines(s_dead);
    cJSON_ArrayForEach(l, lines) {
        const cJSON *sc = sc_of(l);
        char *a = without_sc(l),
             *b = without_sc(cJSON_GetArrayItem(off_lines, i++));

        ck_assert_str_eq(a, b);
        free(a);
        free(b);
        ck_assert(cJSON_IsFalse(cJSON_GetObjectItem(sc, "complete")));
        ck_assert_double_eq(tu_jnum(sc, "failed", NULL),
                            tu_jnum(sc, "samples", NULL));
        ck_assert(cJSON_IsNull(cJSON_GetObjectItem(sc, "answer")));
        ck_assert_str_eq(cJSON_GetObjectItem(sc, "chosen")->valuestring,
                         "named by baselines.self_consistency_model");
    }
    ck_assert_int_eq(i, NQ);
    st = tu_nsed_status(s_dead);
    acc = cJSON_GetObjectItem(cJSON_GetObjectItem(st, "accuracy"),
                              "self_consistency");
    ck_assert_double_eq(tu_jnum(acc, "incomplete", NULL), NQ);
    ck_assert_double_eq(tu_jnum(acc, "judged", NULL), 0);
    ck_assert_double_eq(tu_jnum(st, "questions", "done"), NQ);
    cJSON_Delete(st);
    cJSON_Delete(off_lines);
    cJSON_Delete(lines);
    free(s_off);
    free(s_dead);
    free(wf_none);
    free(wf_dead);
    free(q);
    free(sim_cfg);
}
END_TEST

Suite *tu_suite(void)
{
    Suite *s = suite_create("selfcons");
    TCase *tc = tcase_create("selfcons");

    tcase_add_checked_fixture(tc, tu_tmp_setup, tu_tmp_teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, majority_is_strict_and_a_tie_is_drawn);
    tcase_add_test(tc, switch_off_changes_nothing);
    tcase_add_test(tc, samples_equal_the_team_calls);
    tcase_add_test(tc, kill_and_resume_repays_nothing);
    tcase_add_test(tc, failed_sampling_keeps_the_outcome);
    suite_add_tcase(s, tc);
    return s;
}
