/* Tests for the telemetry: what a decided round counts for each model,
 * Beta smoothing toward the priors, usage estimates (guess, measured,
 * team-size scaling), commits that a replayed transaction applies once,
 * and the export/import file. */
#include "pipeline/broker/telemetry.h"
#include "store/store.h"
#include "testutil.h"
#include "testwf.h"

#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char wf_text[] =
    "name: t\n"
    "version: 1\n"
    "models:\n"
    "  - {id: a, endpoint: http://127.0.0.1:1/v1, model: a, "
    "price: {input_per_mtok: 1, output_per_mtok: 2}, "
    "prior: {p_gen: 0.7, p_ver: 0.9}, sampling: {max_tokens: 200}}\n"
    "  - {id: b, endpoint: http://127.0.0.1:1/v1, model: b}\n"
    "  - {id: c, endpoint: http://127.0.0.1:1/v1, model: c}\n"
    "teams:\n"
    "  t: {roles: [{name: s, count: 3, models: [a, b, c]}]}\n"
    "rounds: {min: 1, max: 3}\n"
    "broker: {priors: {p_gen: 0.5, p_ver: 0.6, strength: 4}}\n";

static char *xstrdup(const char *s)
{
    char *d = strdup(s);

    ck_assert_ptr_nonnull(d);
    return d;
}

static void set_weights(state_evaluation *e, size_t n, const size_t *cand,
                        const int *w)
{
    e->status = STATE_EVAL_OK;
    e->weights = calloc(n, sizeof *e->weights);
    ck_assert_ptr_nonnull(e->weights);
    e->nweights = n;
    for (size_t i = 0; i < n; i++) {
        e->weights[i].cand = cand[i];
        e->weights[i].weight = w[i];
    }
}

/* A round of three seats (models a, b, c) on a question whose reference
 * is 4: a answers 4, b answers 5, c skips. Candidates: A = a, B = b. */
static state *three_seat_round(const workflow *wf, int index)
{
    state_seat_spec seats[3] = {{0, "s", NULL}, {1, "s", NULL},
                                {2, "s", NULL}};
    state_question q = {.id = "q1", .text = "2+2?", .reference = "4"};
    state *st = NULL;
    nsed_err err = {0};
    state_round *r;

    ck_assert_int_eq(state_new(wf, &q, seats, 3, &st, &err), 0);
    r = st->cur;
    r->index = index;
    r->proposals[0].status = STATE_PROPOSAL_OK;
    r->proposals[0].answer = xstrdup("4");
    r->proposals[0].usage = (state_usage){100, 20, 0.0001};
    r->proposals[1].status = STATE_PROPOSAL_OK;
    r->proposals[1].answer = xstrdup("5");
    r->proposals[1].usage = (state_usage){100, 30, 0};
    r->proposals[2].status = STATE_PROPOSAL_SKIP;
    r->proposals[2].usage = (state_usage){100, 1, 0};
    r->cands = calloc(2, sizeof *r->cands);
    ck_assert_ptr_nonnull(r->cands);
    r->ncand = 2;
    r->cands[0].seat = 0;
    r->cands[1].seat = 1;
    r->evals = calloc(3, sizeof *r->evals);
    ck_assert_ptr_nonnull(r->evals);
    /* a sees only B (its own A is masked): judges it wrong, right */
    set_weights(&r->evals[0], 1, (size_t[]){1}, (int[]){-50});
    r->evals[0].usage = (state_usage){300, 40, 0.0002};
    /* b scores its own candidate too (dropped) and A positive: right */
    set_weights(&r->evals[1], 2, (size_t[]){0, 1}, (int[]){60, 90});
    r->evals[1].usage = (state_usage){300, 40, 0};
    /* c ranks the wrong B above the right A: wrong */
    set_weights(&r->evals[2], 2, (size_t[]){0, 1}, (int[]){40, 80});
    r->evals[2].usage = (state_usage){300, 40, 0};
    r->evals[2].repaired = true;
    return st;
}

START_TEST(round_zero_counts_generation_and_verification)
{
    workflow *wf = tu_load_workflow(wf_text, NULL);
    state *st = three_seat_round(wf, 0);
    telemetry_counts d[3] = {{0}};

    telemetry_observe_round(wf, st, st->cur, d);
    /* generation: a right, b wrong, c's SKIP wrong */
    ck_assert(d[0].gen_n == 1 && d[0].gen_k == 1);
    ck_assert(d[1].gen_n == 1 && d[1].gen_k == 0);
    ck_assert(d[2].gen_n == 1 && d[2].gen_k == 0);
    /* verification: a by sign (one candidate), b by sign on A, c by the
     * pair (A correct, B incorrect) ordered wrong */
    ck_assert(d[0].ver_n == 1 && d[0].ver_k == 1);
    ck_assert(d[1].ver_n == 1 && d[1].ver_k == 1);
    ck_assert(d[2].ver_n == 1 && d[2].ver_k == 0);
    /* usage: proposal + evaluation per seat-round */
    ck_assert(d[0].seat_rounds == 1 && d[0].team_sum == 3);
    ck_assert(d[0].prompt_tokens == 400 && d[0].completion_tokens == 60);
    ck_assert(d[0].prompt_sq == 160000);
    ck_assert(fabs(d[0].cost_usd - 0.0003) < 1e-12);
    ck_assert(d[0].calls == 2 && d[2].calls == 3);
    ck_assert(d[0].later_seat_rounds == 0);
    state_free(st);
    workflow_free(wf);
}
END_TEST

START_TEST(later_rounds_count_usage_apart_and_no_generation)
{
    workflow *wf = tu_load_workflow(wf_text, NULL);
    state *st = three_seat_round(wf, 2);
    telemetry_counts d[3] = {{0}};

    telemetry_observe_round(wf, st, st->cur, d);
    ck_assert(d[0].gen_n == 0);
    ck_assert(d[0].ver_n == 1);
    ck_assert(d[0].later_seat_rounds == 1 && d[0].later_team_sum == 3);
    ck_assert(d[0].later_prompt_tokens == 400);
    ck_assert(d[0].later_completion_sq == 3600);
    state_free(st);
    workflow_free(wf);
}
END_TEST

START_TEST(no_reference_and_lost_seats_are_not_judged)
{
    workflow *wf = tu_load_workflow(wf_text, NULL);
    state *st = three_seat_round(wf, 0);
    telemetry_counts d[3] = {{0}};

    free(st->reference);
    st->reference = NULL;
    st->cur->proposals[1].status = STATE_PROPOSAL_FAILED;
    st->cur->proposals[1].infra = true;
    telemetry_observe_round(wf, st, st->cur, d);
    ck_assert(d[0].gen_n == 0 && d[0].ver_n == 0);
    ck_assert(d[0].seat_rounds == 1);
    /* a seat lost to infrastructure measures nothing */
    ck_assert(telemetry_counts_empty(&d[1]));
    state_free(st);
    workflow_free(wf);
}
END_TEST

/* ---- estimates ----------------------------------------------------------- */

START_TEST(estimates_are_smoothed_toward_priors)
{
    workflow *wf = tu_load_workflow(wf_text, NULL);
    telemetry *t = NULL;
    telemetry_counts d[3] = {{0}};
    telemetry_estimate e;

    ck_assert_int_eq(telemetry_new(wf, &t), 0);
    /* nothing measured: the priors (the model's own, else broker.priors) */
    telemetry_estimate_for(t, wf, 0, 3, &e);
    ck_assert(fabs(e.p_g - 0.7) < 1e-12 && fabs(e.p_v - 0.9) < 1e-12);
    ck_assert(e.p_g_n == 0 && e.p_v_n == 0);
    telemetry_estimate_for(NULL, wf, 1, 3, &e);
    ck_assert(fabs(e.p_g - 0.5) < 1e-12 && fabs(e.p_v - 0.6) < 1e-12);
    /* three observations move the estimate part of the way */
    d[1].gen_n = 3;
    d[1].gen_k = 0;
    d[1].ver_n = 3;
    d[1].ver_k = 0.3;
    telemetry_add(t, d);
    telemetry_estimate_for(t, wf, 1, 3, &e);
    ck_assert(fabs(e.p_g - (4 * 0.5) / 7) < 1e-12);
    ck_assert(fabs(e.p_v - (4 * 0.6 + 0.3) / 7) < 1e-12);
    ck_assert(e.p_g_n == 3 && e.p_v_n == 3);
    /* many observations dominate */
    d[1].gen_n = 1000;
    d[1].gen_k = 900;
    d[1].ver_n = 0;
    d[1].ver_k = 0;
    telemetry_add(t, d);
    telemetry_estimate_for(t, wf, 1, 3, &e);
    ck_assert(fabs(e.p_g - 0.9) < 0.01);
    telemetry_free(t);
    workflow_free(wf);
}
END_TEST

START_TEST(usage_is_guessed_then_measured_per_round_position)
{
    workflow *wf = tu_load_workflow(wf_text, NULL);
    telemetry *t = NULL;
    telemetry_counts d[3] = {{0}};
    telemetry_estimate e, e4;
    double g = (double)(2 * strlen(wf->prompts.system) +
                        strlen(wf->prompts.revise) +
                        strlen(wf->prompts.evaluate)) / 4.0 + 512;

    ck_assert_int_eq(telemetry_new(wf, &t), 0);
    /* the guess: replies half of max_tokens (200), three rounds */
    telemetry_estimate_for(t, wf, 0, 3, &e);
    ck_assert(e.seat_rounds == 0);
    ck_assert(fabs(e.first_tokens - (g + 4 * 100 + 200)) < 1e-9);
    ck_assert(fabs(e.prompt_tokens - 3 * (g + 400)) < 1e-9);
    ck_assert(fabs(e.completion_tokens - 3 * 200) < 1e-9);
    ck_assert(fabs(e.cost_usd - (e.prompt_tokens * 1 +
                                 e.completion_tokens * 2) / 1e6) < 1e-15);
    /* measured in teams of 2: round 0 at 1000 + 100 every time, later
     * rounds 2000 or 4000 prompt tokens */
    d[0].seat_rounds = 4;
    d[0].team_sum = 8;
    d[0].calls = 8;
    d[0].prompt_tokens = 2 * 1000 + 2000 + 4000;
    d[0].prompt_sq = 2 * 1e6 + 4e6 + 16e6;
    d[0].completion_tokens = 400;
    d[0].completion_sq = 4 * 10000;
    d[0].later_seat_rounds = 2;
    d[0].later_team_sum = 4;
    d[0].later_prompt_tokens = 6000;
    d[0].later_prompt_sq = 20e6;
    d[0].later_completion_tokens = 200;
    d[0].later_completion_sq = 20000;
    telemetry_add(t, d);
    telemetry_estimate_for(t, wf, 0, 2, &e);
    ck_assert(e.seat_rounds == 2 && e.later_seat_rounds == 2);
    ck_assert(fabs(e.first_tokens - 1100) < 1e-9);
    /* later: mean 3000 + 2 sd (1000) = 5000 prompt, 100 completion */
    ck_assert(fabs(e.later_tokens - 5100) < 1e-9);
    ck_assert(fabs(e.prompt_tokens - (1000 + 2 * 5000)) < 1e-9);
    ck_assert(fabs(e.completion_tokens - 300) < 1e-9);
    ck_assert(fabs(e.calls - 2) < 1e-12);
    /* a team twice as big reads twice as much; a smaller one not less */
    telemetry_estimate_for(t, wf, 0, 4, &e4);
    ck_assert(fabs(e4.prompt_tokens - 2 * e.prompt_tokens) < 1e-9);
    ck_assert(fabs(e4.completion_tokens - e.completion_tokens) < 1e-9);
    telemetry_estimate_for(t, wf, 0, 1, &e4);
    ck_assert(fabs(e4.prompt_tokens - e.prompt_tokens) < 1e-9);
    telemetry_free(t);
    workflow_free(wf);
}
END_TEST

/* ---- the store and the file ---------------------------------------------- */

typedef struct commit_arg {
    const workflow *wf;
    const telemetry_counts *delta;
    int calls;
} commit_arg;

/* Commit the delta, failing the first attempt after writing, as a
 * transaction replayed after a full map would see it. */
static int commit_once_failing(store_txn *txn, void *arg, nsed_err *err)
{
    commit_arg *a = arg;
    int rc = telemetry_commit(txn, a->wf, a->delta);

    (void)err;
    if (rc)
        return rc;
    return a->calls++ == 0 ? NSED_EIO : 0;
}

static int put_prior(store_txn *txn, void *arg, nsed_err *err)
{
    (void)err;
    return telemetry_put_prior(txn, arg);
}

typedef struct export_arg {
    char *text;
} export_arg;

static int export_fn(store_txn *txn, void *arg, nsed_err *err)
{
    export_arg *x = arg;

    (void)err;
    return telemetry_export(txn, "t", &x->text);
}

START_TEST(commits_add_once_and_export_round_trips)
{
    workflow *wf = tu_load_workflow(wf_text, NULL);
    char *dir = tu_path(tu_tmp, "store"), *file = tu_path(tu_tmp, "t.json");
    telemetry_counts d[3] = {{0}}, got;
    commit_arg ca = {.wf = wf, .delta = d};
    export_arg x = {0};
    telemetry *t = NULL, *u = NULL;
    store *st = NULL;
    nsed_err err = {0};
    size_t unknown = 99;

    d[0].gen_n = 5;
    d[0].gen_k = 2;
    d[2].ver_n = 4;
    d[2].ver_k = 1.5;
    ck_assert_int_eq(store_open(dir, NULL, &st, &err), 0);
    /* an aborted transaction leaves nothing; the second adds once */
    ck_assert_int_eq(store_write(st, commit_once_failing, &ca, &err),
                     NSED_EIO);
    ck_assert_int_eq(store_write(st, commit_once_failing, &ca, &err), 0);
    ck_assert_int_eq(store_write(st, commit_once_failing, &ca, &err), 0);
    ck_assert_int_eq(telemetry_read_store(st, wf, &t, &err), 0);
    telemetry_counts_get(t, 0, TELEMETRY_OWN, &got);
    ck_assert(got.gen_n == 10 && got.gen_k == 4);
    telemetry_counts_get(t, 2, TELEMETRY_OWN, &got);
    ck_assert(got.ver_n == 8 && got.ver_k == 3);
    telemetry_counts_get(t, 1, TELEMETRY_OWN, &got);
    ck_assert(telemetry_counts_empty(&got));

    /* export: own counts (no prior yet) */
    ck_assert_int_eq(store_read(st, export_fn, &x, &err), 0);
    ck_assert(tu_contains(x.text, "\"nsed_telemetry\":1"));
    ck_assert(tu_contains(x.text, "\"workflow\":\"t\""));
    tu_write_file(file, x.text, (size_t)-1);
    free(x.text);
    x.text = NULL;

    /* import as the prior of another telemetry: estimates include it */
    ck_assert_int_eq(telemetry_new(wf, &u), 0);
    ck_assert_int_eq(telemetry_import_file(u, file, &unknown, &err), 0);
    ck_assert_uint_eq(unknown, 0);
    telemetry_counts_get(u, 0, TELEMETRY_PRIOR, &got);
    ck_assert(got.gen_n == 10 && got.gen_k == 4);
    {
        telemetry_estimate e;

        telemetry_estimate_for(u, wf, 0, 3, &e);
        ck_assert(e.p_g_n == 10);
        ck_assert(fabs(e.p_g - (4 * 0.7 + 4) / 14) < 1e-12);
    }
    /* kept in the store as the prior: the export then carries own +
     * prior */
    ck_assert_int_eq(store_write(st, put_prior, u, &err), 0);
    ck_assert_int_eq(store_read(st, export_fn, &x, &err), 0);
    tu_write_file(file, x.text, (size_t)-1);
    free(x.text);
    telemetry_free(u);
    ck_assert_int_eq(telemetry_new(wf, &u), 0);
    ck_assert_int_eq(telemetry_import_file(u, file, NULL, &err), 0);
    telemetry_counts_get(u, 0, TELEMETRY_PRIOR, &got);
    ck_assert(got.gen_n == 20);
    telemetry_free(u);
    telemetry_free(t);
    store_close(st);
    free(dir);
    free(file);
    workflow_free(wf);
}
END_TEST

START_TEST(bad_files_are_refused_with_reasons)
{
    workflow *wf = tu_load_workflow(wf_text, NULL);
    char *file = tu_path(tu_tmp, "t.json");
    telemetry *t = NULL;
    nsed_err err = {0};
    size_t unknown = 0;
    telemetry_counts got;

    ck_assert_int_eq(telemetry_new(wf, &t), 0);
    ck_assert_int_eq(telemetry_import_file(t, file, NULL, &err), NSED_EIO);
    ck_assert(tu_contains(err.msg, "cannot read"));
    tu_write_file(file, "not json", (size_t)-1);
    ck_assert_int_eq(telemetry_import_file(t, file, NULL, &err),
                     NSED_EINVAL);
    ck_assert(tu_contains(err.msg, "not a telemetry file"));
    tu_write_file(file, "{\"nsed_telemetry\":2,\"models\":{}}", (size_t)-1);
    ck_assert_int_eq(telemetry_import_file(t, file, NULL, &err),
                     NSED_EINVAL);
    ck_assert(tu_contains(err.msg, "format 2"));
    tu_write_file(file, "{\"nsed_telemetry\":1,\"models\":{\"a\":{\"gen\":"
                        "{\"n\":-1}}}}", (size_t)-1);
    ck_assert_int_eq(telemetry_import_file(t, file, NULL, &err),
                     NSED_EINVAL);
    ck_assert_msg(tu_contains(err.msg, "models.a.gen.n"), "%s", err.msg);
    /* nothing was taken from the refused files */
    telemetry_counts_get(t, 0, TELEMETRY_PRIOR, &got);
    ck_assert(telemetry_counts_empty(&got));
    /* unknown models are counted and skipped */
    tu_write_file(file, "{\"nsed_telemetry\":1,\"models\":{\"zz\":{},\"b\":"
                        "{\"ver\":{\"n\":2,\"k\":1}}}}", (size_t)-1);
    ck_assert_int_eq(telemetry_import_file(t, file, &unknown, &err), 0);
    ck_assert_uint_eq(unknown, 1);
    telemetry_counts_get(t, 1, TELEMETRY_PRIOR, &got);
    ck_assert(got.ver_n == 2 && got.ver_k == 1);
    telemetry_free(t);
    free(file);
    workflow_free(wf);
}
END_TEST

Suite *tu_suite(void)
{
    Suite *s = suite_create("telemetry");
    TCase *tc = tcase_create("observe");

    tcase_add_test(tc, round_zero_counts_generation_and_verification);
    tcase_add_test(tc, later_rounds_count_usage_apart_and_no_generation);
    tcase_add_test(tc, no_reference_and_lost_seats_are_not_judged);
    suite_add_tcase(s, tc);
    tc = tcase_create("estimate");
    tcase_add_test(tc, estimates_are_smoothed_toward_priors);
    tcase_add_test(tc, usage_is_guessed_then_measured_per_round_position);
    suite_add_tcase(s, tc);
    tc = tcase_create("store");
    tcase_add_checked_fixture(tc, tu_tmp_setup, tu_tmp_teardown);
    tcase_add_test(tc, commits_add_once_and_export_round_trips);
    tcase_add_test(tc, bad_files_are_refused_with_reasons);
    suite_add_tcase(s, tc);
    return s;
}
