/* Evaluation replies in whole runs (`nsed run` against nsed-sim): an
 * evaluator whose replies are cut at max_tokens is diagnosed (the
 * evaluation is marked truncated in the stored rounds) and its repair turn,
 * sent with twice the budget, succeeds; a repair turn refused with HTTP 400
 * makes that evaluator abstain and the question still finishes; an
 * evaluator that answers {"evaluations":[]} abstains after its repair. */
#include "testutil.h"

#include "store/store.h"
#include "store/store_keys.h"

#include <check.h>
#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEMO_Q NSED_SOURCE_DIR "/workflows/demo-questions.jsonl"
#define NQUESTIONS 8

/* Three models; gamma's sampling.max_tokens is 200 (its proposals, about
 * 50 tokens, fit; its evaluations, 225..375 tokens in the simulator, do
 * not, and fit the repair's 400). */
static const char workflow_yaml[] =
    "name: evalreply\nversion: 1\nseed: 42\n"
    "models:\n"
    "  - {id: alpha, endpoint: '${NSED_SIM_URL}', model: sim-alpha, "
    "family: alpha, structured_output: true}\n"
    "  - {id: beta, endpoint: '${NSED_SIM_URL}', model: sim-beta, "
    "family: beta, structured_output: true}\n"
    "  - {id: gamma, endpoint: '${NSED_SIM_URL}', model: sim-gamma, "
    "family: gamma, structured_output: true, sampling: {max_tokens: 200}}\n"
    "broker: {policy: fixed}\n"
    "teams:\n  main:\n    roles:\n"
    "      - {name: solver, count: 3, models: [alpha, beta, gamma]}\n"
    "rounds: {min: 1, max: 2}\n"
    "answer: {extract: boxed, compare: numeric}\n"
    "gateway:\n"
    "  retry: {max_attempts: 2, base_delay_ms: 1, max_delay_ms: 2, "
    "max_total_s: 10}\n";

/* The simulator: alpha and beta healthy; gamma as gamma_line says. */
static void write_sim(const char *path, const char *gamma_line)
{
    char text[2048];

    snprintf(text, sizeof text,
             "kind: nsed-sim\nseed: 7\nquestions: %s\nmodels:\n"
             "  - {name: sim-alpha, family: alpha, p_gen: 0.6, p_ver: 0.8, "
             "tokens: {completion: 50}}\n"
             "  - {name: sim-beta, family: beta, p_gen: 0.5, p_ver: 0.8, "
             "tokens: {completion: 50}}\n"
             "  - {name: sim-gamma, family: gamma, p_gen: 0.5, p_ver: 0.7, "
             "%s}\n",
             DEMO_Q, gamma_line);
    tu_write_file(path, text, (size_t)-1);
}

/* The first NQUESTIONS questions of the demo set. */
static char *write_questions(void)
{
    char *all = tu_read_file(DEMO_Q, NULL), *p = all;
    char *path = tu_path(tu_tmp, "q.jsonl");

    ck_assert_ptr_nonnull(all);
    for (int i = 0; i < NQUESTIONS; i++) {
        p = strchr(p, '\n');
        ck_assert_ptr_nonnull(p);
        p++;
    }
    tu_write_file(path, all, (size_t)(p - all));
    free(all);
    return path;
}

/* What the stored rounds say about the evaluations. */
typedef struct evcount {
    size_t rounds, evals, ok, abstained, failed, truncated, repaired;
    size_t truncated_ok, truncated_abstained;
    size_t empty_reason, repair_failed_reason, cut_reason;
} evcount;

static int count_round(const void *key, size_t klen, const void *val,
                       size_t vlen, void *arg)
{
    evcount *c = arg;
    enum store_keys_qrec rec;
    size_t idlen;
    uint32_t round;
    cJSON *j, *e;

    if (store_keys_question_parse(key, klen, &idlen, &rec, &round) ||
        rec != STORE_KEYS_ROUND)
        return 0;
    j = cJSON_ParseWithLength(val, vlen);
    ck_assert_ptr_nonnull(j);
    c->rounds++;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(j, "evaluations")) {
        const char *status =
            cJSON_GetObjectItemCaseSensitive(e, "status")->valuestring;
        const cJSON *err = cJSON_GetObjectItemCaseSensitive(e, "error");
        const char *why = cJSON_IsString(err) ? err->valuestring : "";
        bool trunc =
            cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "truncated"));

        if (!strcmp(status, "idle"))
            continue;
        c->evals++;
        c->ok += !strcmp(status, "ok");
        c->abstained += !strcmp(status, "abstained");
        c->failed += !strcmp(status, "failed");
        c->truncated += trunc;
        c->truncated_ok += trunc && !strcmp(status, "ok");
        c->truncated_abstained += trunc && !strcmp(status, "abstained");
        c->repaired +=
            cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "repaired"));
        c->empty_reason += tu_contains(why, "list was empty") != 0;
        c->repair_failed_reason += tu_contains(why, "the repair call failed") !=
                                   0;
        c->cut_reason += tu_contains(why, "cut off at the length") != 0;
    }
    cJSON_Delete(j);
    return 0;
}

static int scan_rounds(store_txn *t, void *arg, nsed_err *err)
{
    (void)err;
    return store_scan(t, STORE_STATE, NULL, 0, NULL, 0, count_round, arg);
}

static evcount count_evaluations(const char *sdir)
{
    store_opts o = {STORE_RDONLY, 0};
    store *s = NULL;
    nsed_err e = {0};
    evcount c;

    memset(&c, 0, sizeof c);
    ck_assert_msg(store_open(sdir, &o, &s, &e) == 0, "open: %s", e.msg);
    ck_assert_int_eq(store_read(s, scan_rounds, &c, &e), 0);
    store_close(s);
    return c;
}

/* Run the workflow against a simulator whose gamma is gamma_line; returns
 * the exit status, the status JSON in *status, the counts in *c and the
 * simulator's stats of sim-gamma in *gamma (caller deletes both). */
static int run_with(const char *gamma_line, cJSON **status, evcount *c,
                    cJSON **gamma)
{
    char *wf = tu_path(tu_tmp, "wf.yaml"), *sim_cfg = tu_path(tu_tmp, "s.yaml");
    char *sdir = tu_path(tu_tmp, "store"), *q = write_questions();
    char *out = NULL, *err = NULL;
    cJSON *stats;
    tu_sim sim;
    int rc;

    tu_write_file(wf, workflow_yaml, (size_t)-1);
    write_sim(sim_cfg, gamma_line);
    tu_sim_start(&sim, sim_cfg, NULL, NULL);
    rc = TU_NSED(sim.url, &out, &err, "run", wf, "--questions", q, "--store",
                 sdir, "--quiet");
    stats = tu_sim_stats(&sim);
    *gamma = cJSON_DetachItemFromObjectCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(stats, "models"), "sim-gamma");
    cJSON_Delete(stats);
    tu_sim_stop(&sim);
    *status = tu_nsed_status(sdir);
    *c = count_evaluations(sdir);
    free(out);
    free(err);
    free(wf);
    free(sim_cfg);
    free(sdir);
    free(q);
    return rc;
}

/* The counts, for the message of a failed check. */
static const char *counts_msg(const evcount *c, char *b, size_t n)
{
    snprintf(b, n,
             "rounds %zu evals %zu ok %zu abstained %zu failed %zu "
             "truncated %zu (ok %zu, abstained %zu) repaired %zu",
             c->rounds, c->evals, c->ok, c->abstained, c->failed, c->truncated,
             c->truncated_ok, c->truncated_abstained, c->repaired);
    return b;
}

static double fault_of(const cJSON *model, const char *kind)
{
    return cJSON_GetObjectItemCaseSensitive(
               cJSON_GetObjectItemCaseSensitive(model, "faults"), kind)
        ->valuedouble;
}

/* Every gamma evaluation is cut at 200 tokens: each is marked truncated,
 * its repair (told it was cut off, with 400 tokens) succeeds. */
START_TEST(cut_evaluations_are_diagnosed_and_repaired)
{
    cJSON *st, *gamma;
    char msg[256];
    evcount c;
    int rc;

    rc = run_with("tokens: {completion: 50, evaluation: 300}", &st, &c, &gamma);
    ck_assert_msg(rc == 0, "run exit %d", rc);
    ck_assert_int_eq((int)tu_jnum(st, "questions", "done"), NQUESTIONS);
    ck_assert_int_eq((int)tu_jnum(st, "questions", "incomplete"), 0);
    /* gamma evaluates once per round: one truncated evaluation per round,
     * and only gamma's */
    ck_assert_msg(c.rounds > 0 && c.truncated == c.rounds &&
                      c.truncated_ok == c.rounds,
                  "%s", counts_msg(&c, msg, sizeof msg));
    ck_assert_uint_eq(c.truncated, c.rounds);
    /* status counts them as the stored rounds do, all gamma's */
    ck_assert_double_eq(tu_jnum(st, "deliberation", "truncated"),
                        (double)c.truncated);
    ck_assert_double_eq(
        tu_jnum(cJSON_GetObjectItemCaseSensitive(
                    cJSON_GetObjectItemCaseSensitive(st, "deliberation"),
                    "models"),
                "gamma", "truncated"),
        (double)c.truncated);
    ck_assert_uint_eq(c.repaired, c.truncated);
    ck_assert_uint_eq(c.truncated_ok, c.truncated);
    ck_assert_uint_eq(c.abstained, 0);
    ck_assert_uint_eq(c.ok, c.evals);
    /* gamma's calls: a proposal, an evaluation and a repair per round */
    ck_assert_double_eq(tu_jnum(gamma, "requests", NULL),
                        3.0 * (double)c.rounds);
    cJSON_Delete(gamma);
    cJSON_Delete(st);
}
END_TEST

/* gamma's repair turns all get HTTP 400 (a repair over the context): gamma
 * abstains in every round and every question finishes. */
START_TEST(failed_repair_is_an_abstention)
{
    cJSON *st, *gamma;
    char msg[256];
    evcount c;
    int rc;

    rc = run_with("tokens: {completion: 50, evaluation: 300}, "
                  "faults: {rate_400_repair: 1}",
                  &st, &c, &gamma);
    ck_assert_msg(rc == 0, "run exit %d", rc);
    ck_assert_int_eq((int)tu_jnum(st, "questions", "done"), NQUESTIONS);
    ck_assert_int_eq((int)tu_jnum(st, "questions", "incomplete"), 0);
    ck_assert_int_eq((int)tu_jnum(st, "questions", "degraded"), 0);
    ck_assert_msg(c.rounds > 0 && c.truncated_abstained == c.rounds, "%s",
                  counts_msg(&c, msg, sizeof msg));
    ck_assert_uint_eq(c.abstained, c.rounds);
    ck_assert_uint_eq(c.repair_failed_reason, c.rounds);
    ck_assert_uint_eq(c.failed, 0);
    /* every refused repair was tried (the gateway may retry a 400 or not;
     * each attempt is a fault) */
    ck_assert_double_ge(fault_of(gamma, "400_repair"), (double)c.rounds);
    cJSON_Delete(gamma);
    cJSON_Delete(st);
}
END_TEST

/* gamma answers every evaluation {"evaluations":[]}: one repair, then it
 * abstains, with the reason stored. */
START_TEST(empty_evaluations_abstain_with_reason)
{
    cJSON *st, *gamma;
    char msg[256];
    evcount c;
    int rc;

    rc = run_with("tokens: {completion: 50}, faults: {rate_empty_eval: 1}", &st,
                  &c, &gamma);
    ck_assert_int_eq(rc, 0);
    ck_assert_int_eq((int)tu_jnum(st, "questions", "incomplete"), 0);
    ck_assert_msg(c.rounds > 0 && c.abstained == c.rounds &&
                      c.repaired == c.rounds,
                  "%s", counts_msg(&c, msg, sizeof msg));
    ck_assert_uint_eq(c.empty_reason, c.rounds);
    ck_assert_uint_eq(c.truncated, 0);
    /* the first reply and the repair, both empty */
    ck_assert_double_eq(fault_of(gamma, "empty_eval"), 2.0 * (double)c.rounds);
    cJSON_Delete(gamma);
    cJSON_Delete(st);
}
END_TEST

Suite *tu_suite(void)
{
    Suite *s = suite_create("evalreply");
    TCase *tc = tcase_create("runs");

    tcase_set_timeout(tc, 120);
    tcase_add_checked_fixture(tc, tu_tmp_setup, tu_tmp_teardown);
    tcase_add_test(tc, cut_evaluations_are_diagnosed_and_repaired);
    tcase_add_test(tc, failed_repair_is_an_abstention);
    tcase_add_test(tc, empty_evaluations_abstain_with_reason);
    suite_add_tcase(s, tc);
    return s;
}
