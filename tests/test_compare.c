/* Tests for `nsed compare` (issue 13, item 3): two stores of the same
 * questions run on nsed-sim with different workflows (rounds.max 1 and
 * 3, priced), compared; every figure of `compare --json` is recomputed
 * here from the two `nsed export` outputs alone (the pairing by id, the
 * paired table, the difference, the McNemar p by direct binomial
 * summation, Newcombe's interval with Wilson limits found by bisection,
 * cost, tokens and rounds sums, per-tag counts) and the calls from the
 * simulator's own request counters; the text names the same figures; and
 * the error cases exit 2. */
#include "testutil.h"

#include <check.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEMO_Q NSED_SOURCE_DIR "/workflows/demo-questions.jsonl"
#define DEMO_SIM NSED_SOURCE_DIR "/tests/sim/configs/demo-sim.yaml"

/* The demo's team, priced, with rounds.max MAX. */
static const char wf_fmt[] =
    "name: cmp\nversion: 1\nseed: 42\n"
    "models:\n"
    "  - {id: alpha, endpoint: '${NSED_SIM_URL}', model: sim-alpha,"
    " max_concurrency: 8, price: {input_per_mtok: 1, output_per_mtok: 2}}\n"
    "  - {id: beta, endpoint: '${NSED_SIM_URL}', model: sim-beta,"
    " max_concurrency: 8, price: {input_per_mtok: 1.5, output_per_mtok: 3}}\n"
    "  - {id: gamma, endpoint: '${NSED_SIM_URL}', model: sim-gamma,"
    " max_concurrency: 8, price: {input_per_mtok: 0.5, output_per_mtok: 1}}\n"
    "broker: {policy: fixed}\n"
    "teams:\n  main:\n    roles:\n"
    "      - {name: solver, count: 3, models: [alpha, beta, gamma]}\n"
    "rounds: {min: 1, max: %d, stop: {consensus_margin: 0.6,"
    " stable_answer: 2}}\n"
    "answer: {extract: boxed, compare: numeric}\n";

/* ---- independent statistics (as tests/test_baselines.c) ------------------ */

/* 2 * sum_{k <= min(b,c)} C(b+c, k) / 2^(b+c), C from Pascal's triangle. */
static double mcnemar_by_hand(size_t b, size_t c)
{
    static double row[1001];
    size_t n = b + c, m = b < c ? b : c;
    double sum = 0;

    ck_assert_uint_le(n, 1000);
    memset(row, 0, sizeof row);
    row[0] = 1;
    for (size_t i = 1; i <= n; i++) { /* row i, scaled by 2^-i */
        for (size_t k = i; k > 0; k--)
            row[k] = (row[k] + row[k - 1]) / 2;
        row[0] /= 2;
    }
    for (size_t k = 0; k <= m; k++)
        sum += row[k];
    return fmin(1.0, 2 * sum);
}

/* The Wilson limits as the roots of |k/n - p| = z sqrt(p (1 - p) / n). */
static void wilson_by_bisection(size_t k, size_t n, double *lo, double *hi)
{
    double ph = (double)k / (double)n, z = 1.959963984540054;

    for (int side = 0; side < 2; side++) {
        double a = side ? ph : 0, b = side ? 1 : ph;

        for (int it = 0; it < 200; it++) {
            double mid = (a + b) / 2;
            bool inside = fabs(ph - mid) <=
                          z * sqrt(mid * (1 - mid) / (double)n);

            if (inside == (side == 0))
                b = mid;
            else
                a = mid;
        }
        *(side ? hi : lo) = (a + b) / 2;
    }
}

/* The interval of p1 - p2, p1 = (a + c)/n the other store's accuracy and
 * p2 = (a + b)/n the first's (b: the first store only right, c: the other
 * only). */
static void newcombe_by_hand(size_t a, size_t b, size_t c, size_t d, double *lo,
                             double *hi)
{
    double n = (double)(a + b + c + d);
    double p1 = (a + c) / n, p2 = (a + b) / n, l1, u1, l2, u2, phi = 0;
    double den = (double)(a + b) * (c + d) * (a + c) * (b + d);

    wilson_by_bisection(a + c, a + b + c + d, &l1, &u1);
    wilson_by_bisection(a + b, a + b + c + d, &l2, &u2);
    if (den > 0)
        phi = ((double)a * d - (double)b * c) / sqrt(den);
    *lo = (p1 - p2) -
          sqrt(fmax(0, pow(p1 - l1, 2) - 2 * phi * (p1 - l1) * (u2 - p2) +
                           pow(u2 - p2, 2)));
    *hi = (p1 - p2) +
          sqrt(fmax(0, pow(u1 - p1, 2) - 2 * phi * (u1 - p1) * (p2 - l2) +
                           pow(p2 - l2, 2)));
}

/* ---- the export rows ------------------------------------------------------ */

/* The rows of `nsed export` as a JSON array (caller deletes). */
static cJSON *export_rows(const char *dir)
{
    char *text = tu_nsed_export(dir), *line, *nl;
    cJSON *arr = cJSON_CreateArray();

    for (line = text; *line; line = nl + 1) {
        cJSON *row;

        nl = strchr(line, '\n');
        ck_assert_ptr_nonnull(nl);
        *nl = '\0';
        row = cJSON_Parse(line);
        ck_assert_ptr_nonnull(row);
        cJSON_AddItemToArray(arr, row);
    }
    free(text);
    return arr;
}

static const cJSON *row_of(const cJSON *rows, const char *id)
{
    const cJSON *r;

    cJSON_ArrayForEach(r, rows) {
        if (!strcmp(cJSON_GetObjectItem(r, "id")->valuestring, id))
            return r;
    }
    return NULL;
}

static bool judged(const cJSON *r)
{
    const cJSON *s = cJSON_GetObjectItem(r, "stop_reason");

    return cJSON_IsBool(cJSON_GetObjectItem(r, "correct")) &&
           cJSON_IsString(s) && strcmp(s->valuestring, "none") != 0;
}

static double row_tokens(const cJSON *r)
{
    const cJSON *t = cJSON_GetObjectItem(r, "tokens");

    return cJSON_GetObjectItem(t, "prompt")->valuedouble +
           cJSON_GetObjectItem(t, "completion")->valuedouble;
}

/* Calls the rows account for: every proposal and evaluation answered. */
static double row_calls(const cJSON *rows)
{
    const cJSON *r, *m;
    double n = 0;

    cJSON_ArrayForEach(r, rows) {
        cJSON_ArrayForEach(m,
                           cJSON_GetObjectItem(cJSON_GetObjectItem(r, "counts"),
                                               "models")) {
            n += cJSON_GetObjectItem(m, "proposals")->valuedouble +
                 cJSON_GetObjectItem(m, "evaluations")->valuedouble;
        }
    }
    return n;
}

#define MAX_TAGS 16

typedef struct expect {
    size_t t[4], only_a, only_b, unjudged;
    double cost[2], tokens[2], rounds[2];
    const char *tag[MAX_TAGS];
    size_t ntags, tn[MAX_TAGS], tka[MAX_TAGS], tkb[MAX_TAGS];
} expect;

static void tally_tags(expect *x, const cJSON *ra, bool ka, bool kb)
{
    const cJSON *t;

    cJSON_ArrayForEach(t, cJSON_GetObjectItem(ra, "tags")) {
        size_t i;

        for (i = 0; i < x->ntags; i++)
            if (!strcmp(x->tag[i], t->valuestring))
                break;
        if (i == x->ntags) {
            ck_assert_uint_lt(x->ntags, MAX_TAGS);
            x->tag[x->ntags++] = t->valuestring;
        }
        x->tn[i]++;
        x->tka[i] += ka;
        x->tkb[i] += kb;
    }
}

static void expect_from_rows(expect *x, const cJSON *ra, const cJSON *rb)
{
    const cJSON *r;

    memset(x, 0, sizeof *x);
    cJSON_ArrayForEach(r, ra) {
        const cJSON *o = row_of(rb, cJSON_GetObjectItem(r, "id")->valuestring);
        bool ka, kb;

        if (!o) {
            x->only_a++;
            continue;
        }
        if (!judged(r) || !judged(o)) {
            x->unjudged++;
            continue;
        }
        ka = cJSON_IsTrue(cJSON_GetObjectItem(r, "correct"));
        kb = cJSON_IsTrue(cJSON_GetObjectItem(o, "correct"));
        x->t[ka ? (kb ? 0 : 1) : (kb ? 2 : 3)]++;
        x->cost[0] += cJSON_GetObjectItem(r, "cost_usd")->valuedouble;
        x->cost[1] += cJSON_GetObjectItem(o, "cost_usd")->valuedouble;
        x->tokens[0] += row_tokens(r);
        x->tokens[1] += row_tokens(o);
        x->rounds[0] += cJSON_GetObjectItem(r, "rounds")->valuedouble;
        x->rounds[1] += cJSON_GetObjectItem(o, "rounds")->valuedouble;
        tally_tags(x, r, ka, kb);
    }
    cJSON_ArrayForEach(r, rb) {
        if (!row_of(ra, cJSON_GetObjectItem(r, "id")->valuestring))
            x->only_b++;
    }
}

/* ---- the runs ------------------------------------------------------------- */

/* The first n demo questions into path; ids listed in strip lose their
 * reference. */
static void write_questions(const char *path, size_t n,
                            const char *const *strip)
{
    char *text = tu_read_file(DEMO_Q, NULL), *line = text, *nl;
    FILE *f = fopen(path, "w");

    ck_assert_ptr_nonnull(text);
    ck_assert_ptr_nonnull(f);
    for (size_t i = 0; i < n; i++, line = nl + 1) {
        cJSON *q;
        char *out;

        nl = strchr(line, '\n');
        ck_assert_ptr_nonnull(nl);
        *nl = '\0';
        q = cJSON_Parse(line);
        ck_assert_ptr_nonnull(q);
        for (const char *const *s = strip; s && *s; s++)
            if (!strcmp(cJSON_GetObjectItem(q, "id")->valuestring, *s))
                cJSON_DeleteItemFromObject(q, "answer");
        out = cJSON_PrintUnformatted(q);
        fprintf(f, "%s\n", out);
        free(out);
        cJSON_Delete(q);
    }
    fclose(f);
    free(text);
}

static char *write_wf(const char *name, int max)
{
    char *path = tu_path(tu_tmp, name), text[4096];

    snprintf(text, sizeof text, wf_fmt, max);
    tu_write_file(path, text, (size_t)-1);
    return path;
}

/* Run wf over questions into store; the requests the simulator got. */
static double run_store(tu_sim *sim, const char *wf, const char *questions,
                        const char *store)
{
    double before = tu_sim_total_requests(sim);
    char *out = NULL, *err = NULL;

    ck_assert_msg(TU_NSED(sim->url, &out, &err, "run", wf, "--questions",
                          questions, "--store", store, "--quiet",
                          "--no-preflight") == 0,
                  "run: %s", err);
    free(out);
    free(err);
    return tu_sim_total_requests(sim) - before;
}

static double jnum(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItem(o, k);

    ck_assert_msg(cJSON_IsNumber(v), "no number %s", k);
    return v->valuedouble;
}

START_TEST(two_workflows_from_export_rows)
{
    static const char *const strip[] = {"demo-004", "demo-011", NULL};
    char *wa = write_wf("a.yaml", 1), *wb = write_wf("b.yaml", 3);
    char *qa = tu_path(tu_tmp, "qa.jsonl"), *qb = tu_path(tu_tmp, "qb.jsonl");
    char *sa = tu_path(tu_tmp, "sa"), *sb = tu_path(tu_tmp, "sb");
    char *out = NULL, *err = NULL, line[512];
    cJSON *ra, *rb, *j, *c, *s, *tags;
    double req_a, req_b, lo, hi, diff, n, p;
    tu_sim sim;
    expect x;

    /* A: 40 questions; B: the first 30, two of them without a reference */
    write_questions(qa, 40, NULL);
    write_questions(qb, 30, strip);
    tu_sim_start(&sim, DEMO_SIM, NULL, NULL);
    req_a = run_store(&sim, wa, qa, sa);
    req_b = run_store(&sim, wb, qb, sb);
    tu_sim_stop(&sim);

    ra = export_rows(sa);
    rb = export_rows(sb);
    expect_from_rows(&x, ra, rb);
    n = (double)(x.t[0] + x.t[1] + x.t[2] + x.t[3]);
    ck_assert_uint_eq(x.only_a, 10);
    ck_assert_uint_eq(x.only_b, 0);
    ck_assert_uint_eq(x.unjudged, 2);
    ck_assert_double_eq(n, 28);
    /* more rounds change some answers: the test has discordant pairs */
    ck_assert_uint_gt(x.t[1] + x.t[2], 0);

    ck_assert_int_eq(TU_NSED(NULL, &out, &err, "compare", sa, sb, "--json"), 0);
    j = cJSON_Parse(out);
    ck_assert_ptr_nonnull(j);
    free(out);
    free(err);
    ck_assert_str_eq(cJSON_GetObjectItem(j, "interval")->valuestring,
                     "newcombe-hybrid-score-95");
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(j, "comparisons")),
                     1);
    c = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "comparisons"), 0);
    ck_assert_str_eq(cJSON_GetObjectItem(c, "first")->valuestring, sa);
    ck_assert_str_eq(cJSON_GetObjectItem(c, "other")->valuestring, sb);
    ck_assert_double_eq(jnum(c, "paired"), n);
    ck_assert_double_eq(jnum(c, "only_first"), (double)x.only_a);
    ck_assert_double_eq(jnum(c, "only_other"), (double)x.only_b);
    ck_assert_double_eq(jnum(c, "unjudged"), (double)x.unjudged);
    ck_assert_double_eq(jnum(c, "a"), (double)x.t[0]);
    ck_assert_double_eq(jnum(c, "b"), (double)x.t[1]);
    ck_assert_double_eq(jnum(c, "c"), (double)x.t[2]);
    ck_assert_double_eq(jnum(c, "d"), (double)x.t[3]);
    ck_assert_double_eq(jnum(c, "first_correct"), (double)(x.t[0] + x.t[1]));
    ck_assert_double_eq(jnum(c, "other_correct"), (double)(x.t[0] + x.t[2]));
    ck_assert_double_eq_tol(jnum(c, "first_accuracy"), (x.t[0] + x.t[1]) / n,
                            1e-12);
    diff = ((double)x.t[2] - (double)x.t[1]) / n;
    ck_assert_double_eq_tol(jnum(c, "diff"), diff, 1e-12);
    newcombe_by_hand(x.t[0], x.t[1], x.t[2], x.t[3], &lo, &hi);
    ck_assert_double_eq_tol(jnum(c, "ci95_lo"), lo, 1e-9);
    ck_assert_double_eq_tol(jnum(c, "ci95_hi"), hi, 1e-9);
    p = mcnemar_by_hand(x.t[1], x.t[2]);
    ck_assert_double_eq_tol(jnum(c, "mcnemar_p"), p, 1e-12 + 1e-9 * p);
    /* what the paired questions cost each, and their rounds */
    s = cJSON_GetObjectItem(c, "first_paired");
    ck_assert_double_eq_tol(jnum(s, "cost_usd"), x.cost[0], 1e-12);
    ck_assert_double_eq(jnum(s, "tokens"), x.tokens[0]);
    ck_assert_double_eq_tol(jnum(s, "rounds_mean"), x.rounds[0] / n, 1e-12);
    s = cJSON_GetObjectItem(c, "other_paired");
    ck_assert_double_eq_tol(jnum(s, "cost_usd"), x.cost[1], 1e-12);
    ck_assert_double_eq(jnum(s, "tokens"), x.tokens[1]);
    ck_assert_double_eq_tol(jnum(s, "rounds_mean"), x.rounds[1] / n, 1e-12);
    /* priced models, and a third round costs more */
    ck_assert(x.cost[0] > 0 && x.cost[1] > x.cost[0]);
    /* per tag */
    tags = cJSON_GetObjectItem(c, "tags");
    ck_assert_int_eq(cJSON_GetArraySize(tags), (int)x.ntags);
    for (size_t i = 0; i < x.ntags; i++) {
        const cJSON *t = cJSON_GetObjectItem(tags, x.tag[i]);

        ck_assert_ptr_nonnull(t);
        ck_assert_double_eq(jnum(t, "n"), (double)x.tn[i]);
        ck_assert_double_eq(jnum(t, "first_correct"), (double)x.tka[i]);
        ck_assert_double_eq(jnum(t, "other_correct"), (double)x.tkb[i]);
        ck_assert_double_eq_tol(jnum(t, "other_accuracy"),
                                (double)x.tkb[i] / (double)x.tn[i], 1e-12);
        ck_assert_double_eq_tol(jnum(t, "diff"),
                                ((double)x.tkb[i] - (double)x.tka[i]) /
                                    (double)x.tn[i],
                                1e-12);
    }
    /* the workflows differ in rounds only */
    ck_assert(cJSON_IsFalse(cJSON_GetObjectItem(c, "same_workflow")));
    ck_assert_int_eq(
        cJSON_GetArraySize(cJSON_GetObjectItem(c, "workflow_keys_differ")), 1);
    ck_assert_str_eq(
        cJSON_GetArrayItem(cJSON_GetObjectItem(c, "workflow_keys_differ"), 0)
            ->valuestring,
        "rounds");
    /* per store: calls as the simulator counted them and as the rows
     * account for them; cost and tokens over every row */
    for (int k = 0; k < 2; k++) {
        const cJSON *rows = k ? rb : ra, *r;
        double cost = 0, tokens = 0;

        s = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "stores"), k);
        cJSON_ArrayForEach(r, rows) {
            cost += cJSON_GetObjectItem(r, "cost_usd")->valuedouble;
            tokens += row_tokens(r);
        }
        ck_assert_double_eq(jnum(s, "results"),
                            (double)cJSON_GetArraySize(rows));
        ck_assert_double_eq(jnum(s, "questions"), k ? 30 : 40);
        ck_assert_double_eq_tol(jnum(s, "cost_usd"), cost, 1e-12);
        ck_assert_double_eq(jnum(s, "tokens"), tokens);
        ck_assert_double_eq(jnum(cJSON_GetObjectItem(s, "calls"), "network"),
                            k ? req_b : req_a);
        ck_assert_double_eq(jnum(cJSON_GetObjectItem(s, "calls"), "network"),
                            row_calls(rows));
        ck_assert_double_eq(jnum(cJSON_GetObjectItem(s, "calls"),
                                 "ledger_hits"),
                            0);
        ck_assert_str_eq(cJSON_GetObjectItem(s, "workflow_name")->valuestring,
                         "cmp");
    }
    cJSON_Delete(j);

    /* the text names the same figures */
    out = err = NULL;
    ck_assert_int_eq(TU_NSED(NULL, &out, &err, "compare", sa, sb), 0);
    snprintf(line, sizeof line,
             "B - A: %+.1f points [95%% %+.1f, %+.1f], McNemar p %.3g (both "
             "%zu, A only %zu, B only %zu, neither %zu)",
             100 * diff, 100 * lo, 100 * hi, p, x.t[0], x.t[1], x.t[2], x.t[3]);
    ck_assert_msg(tu_contains(out, line), "no '%s' in:\n%s", line, out);
    snprintf(line, sizeof line,
             "paired %.0f questions (only in A %zu, only in B %zu, not judged "
             "in both %zu)",
             n, x.only_a, x.only_b, x.unjudged);
    ck_assert_msg(tu_contains(out, line), "no '%s' in:\n%s", line, out);
    snprintf(line, sizeof line, "on these questions: A $%.4f, %.0f tokens",
             x.cost[0], x.tokens[0]);
    ck_assert_msg(tu_contains(out, line), "no '%s' in:\n%s", line, out);
    snprintf(line, sizeof line, "%.0f network calls", req_b);
    ck_assert_msg(tu_contains(out, line), "no '%s' in:\n%s", line, out);
    snprintf(line, sizeof line, "%s: n %zu, A %.1f%%, B %.1f%%", x.tag[0],
             x.tn[0], 100.0 * x.tka[0] / x.tn[0], 100.0 * x.tkb[0] / x.tn[0]);
    ck_assert_msg(tu_contains(out, line), "no '%s' in:\n%s", line, out);
    ck_assert(tu_contains(out, "workflows differ in rounds"));
    free(out);
    free(err);

    /* a store against itself: the same workflow, nothing discordant */
    out = err = NULL;
    ck_assert_int_eq(TU_NSED(NULL, &out, &err, "compare", "--json", sa, sa), 0);
    j = cJSON_Parse(out);
    c = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "comparisons"), 0);
    ck_assert(cJSON_IsTrue(cJSON_GetObjectItem(c, "same_workflow")));
    ck_assert_int_eq(
        cJSON_GetArraySize(cJSON_GetObjectItem(c, "workflow_keys_differ")), 0);
    ck_assert_double_eq(jnum(c, "b") + jnum(c, "c"), 0);
    ck_assert_double_eq(jnum(c, "mcnemar_p"), 1);
    ck_assert_double_eq(jnum(c, "paired"), 40);
    cJSON_Delete(j);
    free(out);
    free(err);

    /* three stores: B and C each against A */
    out = err = NULL;
    ck_assert_int_eq(TU_NSED(NULL, &out, &err, "compare", "--json", sa, sb, sa),
                     0);
    j = cJSON_Parse(out);
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(j, "stores")), 3);
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(j, "comparisons")),
                     2);
    c = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "comparisons"), 0);
    ck_assert_double_eq(jnum(c, "c"), (double)x.t[2]);
    c = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "comparisons"), 1);
    ck_assert(cJSON_IsTrue(cJSON_GetObjectItem(c, "same_workflow")));
    ck_assert_double_eq(jnum(c, "paired"), 40);
    cJSON_Delete(j);
    free(out);
    free(err);

    /* B rebound to A's workflow: the hashes are equal now, and the
     * recorded change says the results may be older than that */
    out = err = NULL;
    ck_assert_int_eq(TU_NSED("http://127.0.0.1:9/v1", &out, &err, "ingest", wa,
                             "--questions", qb, "--store", sb,
                             "--allow-workflow-change"),
                     0);
    free(out);
    free(err);
    out = err = NULL;
    ck_assert_int_eq(TU_NSED(NULL, &out, &err, "compare", "--json", sa, sb), 0);
    j = cJSON_Parse(out);
    s = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "stores"), 1);
    ck_assert_double_eq(jnum(s, "workflow_changes"), 1);
    s = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "stores"), 0);
    ck_assert_double_eq(jnum(s, "workflow_changes"), 0);
    c = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "comparisons"), 0);
    ck_assert(cJSON_IsTrue(cJSON_GetObjectItem(c, "same_workflow")));
    cJSON_Delete(j);
    free(out);
    free(err);
    out = err = NULL;
    ck_assert_int_eq(TU_NSED(NULL, &out, &err, "compare", sa, sb), 0);
    ck_assert(tu_contains(out, "1 workflow change(s) recorded"));
    ck_assert(tu_contains(out, "same workflow"));
    free(out);
    free(err);

    cJSON_Delete(ra);
    cJSON_Delete(rb);
    free(wa);
    free(wb);
    free(qa);
    free(qb);
    free(sa);
    free(sb);
}
END_TEST

START_TEST(nothing_paired)
{
    static const char *const strip[] = {"demo-001", "demo-002", "demo-003",
                                        NULL};
    char *wf = write_wf("a.yaml", 1), *q = tu_path(tu_tmp, "q.jsonl");
    char *st = tu_path(tu_tmp, "s"), *out = NULL, *err = NULL;
    cJSON *j, *c;
    tu_sim sim;

    /* three questions, none with a reference: results, nothing judged */
    write_questions(q, 3, strip);
    tu_sim_start(&sim, DEMO_SIM, NULL, NULL);
    run_store(&sim, wf, q, st);
    tu_sim_stop(&sim);
    ck_assert_int_eq(TU_NSED(NULL, &out, &err, "compare", "--json", st, st), 0);
    j = cJSON_Parse(out);
    c = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "comparisons"), 0);
    ck_assert_double_eq(jnum(c, "paired"), 0);
    ck_assert_double_eq(jnum(c, "unjudged"), 3);
    ck_assert(cJSON_IsNull(cJSON_GetObjectItem(c, "diff")));
    ck_assert(cJSON_IsNull(cJSON_GetObjectItem(c, "ci95_lo")));
    ck_assert(cJSON_IsNull(cJSON_GetObjectItem(c, "ci95_hi")));
    ck_assert_double_eq(jnum(c, "mcnemar_p"), 1);
    cJSON_Delete(j);
    free(out);
    free(err);
    out = err = NULL;
    ck_assert_int_eq(TU_NSED(NULL, &out, &err, "compare", st, st), 0);
    ck_assert(tu_contains(out, "no question is judged in both stores"));
    ck_assert(!tu_contains(out, "points"));
    free(out);
    free(err);
    free(wf);
    free(q);
    free(st);
}
END_TEST

/* Expect `nsed ARGS` to exit status with msg in its stderr. */
static void expect_fail(int status, const char *msg, const char *a,
                        const char *b, const char *c)
{
    char *out = NULL, *err = NULL;

    ck_assert_int_eq(TU_NSED(NULL, &out, &err, a, b, c), status);
    ck_assert_msg(tu_contains(err, msg), "no '%s' in '%s'", msg, err);
    free(out);
    free(err);
}

START_TEST(errors_exit_2)
{
    char *wf = write_wf("a.yaml", 1), *q = tu_path(tu_tmp, "q.jsonl");
    char *st = tu_path(tu_tmp, "ingested"), *missing = tu_path(tu_tmp, "no");
    char *out = NULL, *err = NULL;

    write_questions(q, 5, NULL);
    /* a store with questions and no results */
    ck_assert_int_eq(TU_NSED("http://127.0.0.1:9/v1", &out, &err, "ingest", wf,
                             "--questions", q, "--store", st),
                     0);
    free(out);
    free(err);
    expect_fail(2, "has no results yet (5 questions)", "compare", st, st);
    expect_fail(2, "no nsed store in", "compare", st, missing);
    expect_fail(2, "no nsed store in", "compare", missing, st);
    expect_fail(2, "at least two stores (1 given)", "compare", st, NULL);
    expect_fail(2, "did you mean 'compare'", "compar", st, st);
    expect_fail(2, "bad option", "compare", "--bogus", st);
    out = err = NULL;
    ck_assert_int_eq(TU_NSED(NULL, &out, &err, "compare", "--help"), 0);
    ck_assert(tu_contains(out, "usage: nsed compare STORE_A STORE_B"));
    free(out);
    free(err);
    out = err = NULL;
    ck_assert_int_eq(TU_NSED(NULL, &out, &err, "help", "compare"), 0);
    ck_assert(tu_contains(out, "McNemar"));
    free(out);
    free(err);
    free(wf);
    free(q);
    free(st);
    free(missing);
}
END_TEST

Suite *tu_suite(void)
{
    Suite *s = suite_create("compare");
    TCase *t = tcase_create("compare");

    tcase_add_checked_fixture(t, tu_tmp_setup, tu_tmp_teardown);
    tcase_set_timeout(t, 300);
    tcase_add_test(t, two_workflows_from_export_rows);
    tcase_add_test(t, nothing_paired);
    tcase_add_test(t, errors_exit_2);
    suite_add_tcase(s, t);
    return s;
}
