/* Position and length bias in whole runs (`nsed run` against nsed-sim),
 * and the candidate order each evaluator is shown (issue 12).
 *
 * The test recomputes what `nsed status --json` reports under "bias" on
 * its own: nsed-sim answers an evaluation with one entry per candidate
 * block in the order the prompt showed them, and names each candidate's
 * final answer in its critique. So the stored reply of every evaluation
 * says, independently of the order nsed recorded, which position held
 * which label, what weight it got and whose answer it was. The test reads
 * the stored rounds with its own JSON code, checks the recorded order
 * ("shown") against those replies, and computes the position means, the
 * least-squares slope, Pearson's r and Spearman's rho with its own
 * arithmetic (ranks by counting, not sorting). */
#include "testutil.h"

#include "store/store.h"
#include "store/store_keys.h"

#include <check.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEMO_Q NSED_SOURCE_DIR "/workflows/demo-questions.jsonl"
#define NQUESTIONS 24
#define NSEATS 4
#define MAXW 4096
#define TOL 1e-9

/* Four seats of four families: each evaluator is shown three candidates,
 * so the shown position takes three values. */
static const char workflow_fmt[] =
    "name: bias\nversion: 1\nseed: 42\n"
    "models:\n"
    "  - {id: alpha, endpoint: '${NSED_SIM_URL}', model: sim-alpha, "
    "family: alpha, structured_output: true}\n"
    "  - {id: beta, endpoint: '${NSED_SIM_URL}', model: sim-beta, "
    "family: beta, structured_output: true}\n"
    "  - {id: gamma, endpoint: '${NSED_SIM_URL}', model: sim-gamma, "
    "family: gamma, structured_output: true}\n"
    "  - {id: delta, endpoint: '${NSED_SIM_URL}', model: sim-delta, "
    "family: delta, structured_output: true}\n"
    "broker: {policy: fixed}\n"
    "teams:\n  main:\n    roles:\n"
    "      - {name: solver, count: 4, models: [alpha, beta, gamma, delta]}\n"
    "rounds: {min: 1, max: 3}\n"
    "scoring: {candidate_order: %s}\n"
    "answer: {extract: boxed, compare: numeric}\n";

static void write_sim(const char *path)
{
    char text[2048];

    snprintf(text, sizeof text,
             "kind: nsed-sim\nseed: 7\nquestions: %s\nmodels:\n"
             "  - {name: sim-alpha, family: alpha, p_gen: 0.6, p_ver: 0.8}\n"
             "  - {name: sim-beta, family: beta, p_gen: 0.5, p_ver: 0.75}\n"
             "  - {name: sim-gamma, family: gamma, p_gen: 0.45, p_ver: 0.7}\n"
             "  - {name: sim-delta, family: delta, p_gen: 0.4, p_ver: 0.65}\n",
             DEMO_Q);
    tu_write_file(path, text, (size_t)-1);
}

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

/* What the test reads from the stored rounds. */
typedef struct seen {
    size_t rounds, evaluations, weights;
    size_t per_evaluator_rounds, disagreeing_rounds;
    size_t label_mismatch, answer_mismatch, shown_mismatch;
    double pos[MAXW], score[MAXW], len[MAXW];
} seen;

/* Code points of a UTF-8 text, by the lengths its lead bytes announce. */
static double chars_of(const char *s)
{
    double n = 0;

    while (*s) {
        unsigned char b = (unsigned char)*s;
        size_t step = b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;

        for (size_t k = 0; k < step && *s; k++)
            s++;
        n++;
    }
    return n;
}

static const cJSON *member(const cJSON *o, const char *k)
{
    return cJSON_GetObjectItemCaseSensitive(o, k);
}

/* The index of a label "A".."Z" (the test's teams have four seats). */
static size_t label_index(const char *l)
{
    ck_assert_msg(l[0] >= 'A' && l[0] <= 'Z' && l[1] == '\0', "label %s", l);
    return (size_t)(l[0] - 'A');
}

/* The candidate (by index) with this label in the round's candidate list. */
static const cJSON *candidate(const cJSON *cands, const char *label)
{
    return cJSON_GetArrayItem(cands, (int)label_index(label));
}

static void read_evaluation(seen *c, const cJSON *round, const cJSON *ev,
                            bool per_evaluator, size_t author[NSEATS],
                            size_t *nauthor)
{
    const cJSON *cands = member(member(round, "anonymize"), "candidates");
    const cJSON *props = member(round, "proposals");
    const cJSON *shown = member(ev, "shown");
    const cJSON *weights = member(ev, "weights"), *w, *e;
    cJSON *reply = cJSON_Parse(member(ev, "reply")->valuestring);
    bool any = false;
    size_t i = 0;

    *nauthor = 0;
    cJSON_ArrayForEach(w, weights) {
        any |= member(w, "weight")->valueint != 0;
    }
    ck_assert_ptr_nonnull(reply);
    ck_assert_ptr_nonnull(shown);
    if (!any) { /* all zero: an abstention, counted nowhere */
        cJSON_Delete(reply);
        return;
    }
    c->evaluations++;
    cJSON_ArrayForEach(e, member(reply, "evaluations")) {
        const char *label = member(e, "candidate")->valuestring;
        const char *crit = member(e, "critique")->valuestring;
        const char *lab = cJSON_GetArrayItem(shown, (int)i)->valuestring;
        const cJSON *cand = candidate(cands, lab);
        const size_t seat = (size_t)member(cand, "seat")->valueint;
        const cJSON *ans = member(cJSON_GetArrayItem(props, (int)seat),
                                  "answer");
        char want[256];

        /* the reply's i-th entry is the i-th block shown: its label is
         * position i's under per_evaluator, the candidate's own otherwise */
        if (per_evaluator ? label_index(label) != i : strcmp(label, lab) != 0)
            c->label_mismatch++;
        /* ... and it is about the candidate the recorded order puts there */
        if (cJSON_IsString(ans))
            snprintf(want, sizeof want, "Final answer %s:", ans->valuestring);
        else
            snprintf(want, sizeof want, "No final answer");
        if (strncmp(crit, want, strlen(want)) != 0)
            c->answer_mismatch++;
        ck_assert_uint_lt(c->weights, MAXW);
        c->pos[c->weights] = (double)(i + 1);
        c->score[c->weights] = member(e, "weight")->valuedouble / 100.0;
        /* a candidate without "text" shares its seat's proposal text
         * (the round says "same_text") */
        c->len[c->weights] =
            chars_of((cJSON_GetObjectItemCaseSensitive(cand, "text")
                          ? member(cand, "text")
                          : member(cJSON_GetArrayItem(props, (int)seat),
                                   "text"))
                         ->valuestring);
        c->weights++;
        author[(*nauthor)++] = seat;
        i++;
    }
    if ((size_t)cJSON_GetArraySize(shown) != i ||
        (size_t)cJSON_GetArraySize(weights) != i)
        c->shown_mismatch++;
    cJSON_Delete(reply);
}

/* Two evaluators of the round were shown two authors in opposite orders. */
static bool disagree(size_t a[NSEATS][NSEATS], const size_t *n)
{
    for (size_t s = 0; s < NSEATS; s++)
        for (size_t t = 0; t < NSEATS; t++)
            for (size_t i = 0; i < n[s]; i++)
                for (size_t j = i + 1; j < n[s]; j++)
                    for (size_t k = 0; k < n[t]; k++)
                        for (size_t l = k + 1; l < n[t]; l++)
                            if (a[s][i] == a[t][l] && a[s][j] == a[t][k])
                                return true;
    return false;
}

static int visit_round(const void *key, size_t klen, const void *val,
                       size_t vlen, void *arg)
{
    seen *c = arg;
    enum store_keys_qrec rec;
    size_t idlen, author[NSEATS][NSEATS], nauthor[NSEATS] = {0}, s = 0;
    uint32_t round;
    cJSON *j;
    const cJSON *e, *order;
    bool per;

    if (store_keys_question_parse(key, klen, &idlen, &rec, &round) ||
        rec != STORE_KEYS_ROUND)
        return 0;
    j = cJSON_ParseWithLength(val, vlen);
    ck_assert_ptr_nonnull(j);
    c->rounds++;
    order = member(member(j, "anonymize"), "order");
    per = cJSON_IsString(order) &&
          strcmp(order->valuestring, "per_evaluator") == 0;
    c->per_evaluator_rounds += per;
    cJSON_ArrayForEach(e, member(j, "evaluations")) {
        if (!strcmp(member(e, "status")->valuestring, "ok"))
            read_evaluation(c, j, e, per, author[s], &nauthor[s]);
        s++;
    }
    c->disagreeing_rounds += disagree(author, nauthor);
    cJSON_Delete(j);
    return 0;
}

static int scan(store_txn *t, void *arg, nsed_err *err)
{
    (void)err;
    return store_scan(t, STORE_STATE, NULL, 0, NULL, 0, visit_round, arg);
}

/* Mid-ranks by counting: 1 + the values below + half the other equal
 * ones. */
static void rank_of(const double *v, size_t n, double *r)
{
    for (size_t i = 0; i < n; i++) {
        double below = 0, equal = 0;

        for (size_t k = 0; k < n; k++) {
            below += v[k] < v[i];
            equal += v[k] == v[i];
        }
        r[i] = 1 + below + (equal - 1) / 2;
    }
}

static double corr(const double *x, const double *y, size_t n)
{
    double mx = 0, my = 0, cxy = 0, cxx = 0, cyy = 0;

    for (size_t i = 0; i < n; i++) {
        mx += x[i] / (double)n;
        my += y[i] / (double)n;
    }
    for (size_t i = 0; i < n; i++) {
        cxy += (x[i] - mx) * (y[i] - my);
        cxx += (x[i] - mx) * (x[i] - mx);
        cyy += (y[i] - my) * (y[i] - my);
    }
    return cxy / sqrt(cxx * cyy);
}

static double slope(const double *x, const double *y, size_t n)
{
    double mx = 0, my = 0, cxy = 0, cxx = 0;

    for (size_t i = 0; i < n; i++) {
        mx += x[i] / (double)n;
        my += y[i] / (double)n;
    }
    for (size_t i = 0; i < n; i++) {
        cxy += (x[i] - mx) * (y[i] - my);
        cxx += (x[i] - mx) * (x[i] - mx);
    }
    return cxy / cxx;
}

/* ---- a store of an older nsed: rounds without "shown" ------------------ */

#define MAXROUNDS 512

typedef struct strip {
    size_t n;
    unsigned char key[MAXROUNDS][STORE_KEY_MAX];
    size_t klen[MAXROUNDS];
    char *val[MAXROUNDS];
} strip;

static int strip_round(const void *key, size_t klen, const void *val,
                       size_t vlen, void *arg)
{
    strip *x = arg;
    enum store_keys_qrec rec;
    size_t idlen;
    uint32_t round;
    cJSON *j, *e;

    if (store_keys_question_parse(key, klen, &idlen, &rec, &round) ||
        rec != STORE_KEYS_ROUND)
        return 0;
    ck_assert_uint_lt(x->n, MAXROUNDS);
    j = cJSON_ParseWithLength(val, vlen);
    ck_assert_ptr_nonnull(j);
    cJSON_ArrayForEach(e, member(j, "evaluations")) {
        cJSON_DeleteItemFromObjectCaseSensitive(e, "shown");
    }
    memcpy(x->key[x->n], key, klen);
    x->klen[x->n] = klen;
    x->val[x->n] = cJSON_PrintUnformatted(j);
    x->n++;
    cJSON_Delete(j);
    return 0;
}

static int strip_scan(store_txn *t, void *arg, nsed_err *err)
{
    (void)err;
    return store_scan(t, STORE_STATE, NULL, 0, NULL, 0, strip_round, arg);
}

static int strip_put(store_txn *t, void *arg, nsed_err *err)
{
    strip *x = arg;

    (void)err;
    for (size_t i = 0; i < x->n; i++) {
        int rc = store_put(t, STORE_STATE, x->key[i], x->klen[i], x->val[i],
                           strlen(x->val[i]));

        if (rc)
            return rc;
    }
    return 0;
}

/* Take "shown" out of every stored round, as an older nsed wrote them. */
static void make_old(const char *sdir)
{
    strip *x = calloc(1, sizeof *x);
    store_opts o = {0, 0};
    store *s = NULL;
    nsed_err e = {0};

    ck_assert_ptr_nonnull(x);
    ck_assert_msg(store_open(sdir, &o, &s, &e) == 0, "open: %s", e.msg);
    ck_assert_int_eq(store_read(s, strip_scan, x, &e), 0);
    ck_assert_uint_gt(x->n, 0);
    ck_assert_msg(store_write(s, strip_put, x, &e) == 0, "%s", e.msg);
    store_close(s);
    for (size_t i = 0; i < x->n; i++)
        free(x->val[i]);
    free(x);
}

/* Run the workflow with this candidate order, then compare status --json
 * with the test's own reading of the stored rounds. */
static void run_and_compare(const char *order, bool per_evaluator)
{
    char *wf = tu_path(tu_tmp, "wf.yaml"), *sim_cfg = tu_path(tu_tmp, "s.yaml");
    char *sdir = tu_path(tu_tmp, "store"), *q = write_questions();
    char text[4096], *out = NULL, *err = NULL;
    seen *c = calloc(1, sizeof *c);
    double *rs = calloc(MAXW, sizeof *rs), *rl = calloc(MAXW, sizeof *rl);
    store_opts o = {STORE_RDONLY, 0};
    const cJSON *bias, *bypos;
    cJSON *st;
    store *s = NULL;
    nsed_err e = {0};
    tu_sim sim;
    int rc;

    ck_assert_ptr_nonnull(c);
    snprintf(text, sizeof text, workflow_fmt, order);
    tu_write_file(wf, text, (size_t)-1);
    write_sim(sim_cfg);
    tu_sim_start(&sim, sim_cfg, NULL, NULL);
    rc = TU_NSED(sim.url, &out, &err, "run", wf, "--questions", q, "--store",
                 sdir, "--quiet");
    tu_sim_stop(&sim);
    ck_assert_msg(rc == 0, "run exit %d: %s", rc, err);
    st = tu_nsed_status(sdir);
    ck_assert_int_eq((int)tu_jnum(st, "questions", "done"), NQUESTIONS);
    ck_assert_msg(store_open(sdir, &o, &s, &e) == 0, "open: %s", e.msg);
    ck_assert_int_eq(store_read(s, scan, c, &e), 0);
    store_close(s);

    /* what was shown, as the replies tell it, is what nsed recorded */
    ck_assert_uint_gt(c->weights, 100);
    ck_assert_uint_eq(c->label_mismatch, 0);
    ck_assert_uint_eq(c->answer_mismatch, 0);
    ck_assert_uint_eq(c->shown_mismatch, 0);
    if (per_evaluator) {
        /* evaluators of one round see different orders */
        ck_assert_uint_eq(c->per_evaluator_rounds, c->rounds);
        ck_assert_msg(c->disagreeing_rounds * 2 > c->rounds,
                      "only %zu of %zu rounds with orders that disagree",
                      c->disagreeing_rounds, c->rounds);
    } else {
        ck_assert_uint_eq(c->per_evaluator_rounds, 0);
        ck_assert_uint_eq(c->disagreeing_rounds, 0);
    }

    bias = member(st, "bias");
    ck_assert_ptr_nonnull(bias);
    ck_assert_double_eq(tu_jnum(bias, "evaluations", NULL),
                        (double)c->evaluations);
    ck_assert_double_eq(tu_jnum(bias, "weights", NULL), (double)c->weights);
    ck_assert_double_eq(tu_jnum(bias, "order",
                                per_evaluator ? "per_evaluator" : "shared"),
                        (double)c->evaluations);
    ck_assert_double_eq(tu_jnum(bias, "order", "unknown"), 0);
    ck_assert_double_eq(tu_jnum(bias, "position", "weights"),
                        (double)c->weights);
    /* the mean score at each shown position */
    bypos = member(member(bias, "position"), "by_position");
    ck_assert_int_eq(cJSON_GetArraySize(bypos), NSEATS - 1);
    for (int p = 1; p <= NSEATS - 1; p++) {
        const cJSON *x = cJSON_GetArrayItem(bypos, p - 1);
        double sum = 0, n = 0;

        for (size_t i = 0; i < c->weights; i++) {
            if (c->pos[i] == p) {
                sum += c->score[i];
                n++;
            }
        }
        ck_assert_double_eq(tu_jnum(x, "position", NULL), p);
        ck_assert_double_eq(tu_jnum(x, "n", NULL), n);
        ck_assert_double_eq_tol(tu_jnum(x, "mean", NULL), sum / n, TOL);
    }
    ck_assert_double_eq_tol(tu_jnum(bias, "position", "slope"),
                            slope(c->pos, c->score, c->weights), TOL);
    ck_assert_double_eq_tol(tu_jnum(bias, "position", "pearson_r"),
                            corr(c->pos, c->score, c->weights), TOL);
    /* Spearman: Pearson of the mid-ranks */
    rank_of(c->score, c->weights, rs);
    rank_of(c->len, c->weights, rl);
    ck_assert_double_eq_tol(tu_jnum(bias, "length", "spearman_rho"),
                            corr(rs, rl, c->weights), TOL);
    {
        double m = 0;

        for (size_t i = 0; i < c->weights; i++)
            m += c->len[i] / (double)c->weights;
        ck_assert_double_eq_tol(tu_jnum(bias, "length", "mean_chars"), m, 1e-6);
    }
    /* the text form prints the same figures */
    free(out);
    free(err);
    out = err = NULL;
    ck_assert_int_eq(TU_NSED(NULL, &out, &err, "status", "--store", sdir), 0);
    ck_assert_msg(tu_contains(out, "bias:       mean weight/100 by shown "
                                   "position: 1 "),
                  "%s", out);
    snprintf(text, sizeof text, "Pearson r %+.3f",
             corr(c->pos, c->score, c->weights));
    ck_assert_msg(tu_contains(out, text), "no \"%s\" in %s", text, out);
    snprintf(text, sizeof text, "Spearman rho %+.3f", corr(rs, rl, c->weights));
    ck_assert_msg(tu_contains(out, text), "no \"%s\" in %s", text, out);
    if (!per_evaluator) {
        /* the same rounds as an older nsed stored them: the order is
         * unknown, so no position figure, and the length figure stands */
        double rho = corr(rs, rl, c->weights);
        const cJSON *pos;

        cJSON_Delete(st);
        make_old(sdir);
        st = tu_nsed_status(sdir);
        bias = member(st, "bias");
        ck_assert_double_eq(tu_jnum(bias, "order", "unknown"),
                            (double)c->evaluations);
        ck_assert_double_eq(tu_jnum(bias, "order", "shared"), 0);
        ck_assert_double_eq(tu_jnum(bias, "position", "weights"), 0);
        pos = member(bias, "position");
        ck_assert_int_eq(cJSON_GetArraySize(member(pos, "by_position")), 0);
        ck_assert(cJSON_IsNull(member(pos, "slope")));
        ck_assert(cJSON_IsNull(member(pos, "pearson_r")));
        ck_assert_double_eq_tol(tu_jnum(bias, "length", "spearman_rho"), rho,
                                TOL);
    }
    cJSON_Delete(st);
    free(rs);
    free(rl);
    free(c);
    free(out);
    free(err);
    free(wf);
    free(sim_cfg);
    free(sdir);
    free(q);
}

START_TEST(per_evaluator_order_bias_matches_the_replies)
{
    run_and_compare("per_evaluator", true);
}
END_TEST

START_TEST(shared_order_bias_matches_the_replies)
{
    run_and_compare("shared", false);
}
END_TEST

Suite *tu_suite(void)
{
    Suite *s = suite_create("bias");
    TCase *t = tcase_create("runs");

    tcase_add_checked_fixture(t, tu_tmp_setup, tu_tmp_teardown);
    tcase_set_timeout(t, 120);
    tcase_add_test(t, per_evaluator_order_bias_matches_the_replies);
    tcase_add_test(t, shared_order_bias_matches_the_replies);
    suite_add_tcase(s, t);
    return s;
}
