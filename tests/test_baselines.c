/* Tests for the baselines (issue 12): the strict round-0 majority (a
 * shared top count is a tie and no majority; a tie is broken only by a
 * seeded draw, recorded apart), the paired statistics of NSED against
 * each baseline (pipeline/base/stats.h: exact McNemar, Newcombe's hybrid
 * score interval), and an end-to-end run of the demo on nsed-sim whose
 * `status --json` figures are recomputed here from `nsed export` rows
 * alone: strict majority, no-majority share, ties drawn, McNemar p,
 * interval and per-tag counts.
 *
 * Expected values are computed another way than the code under test: the
 * McNemar p by summing binomial coefficients from Pascal's triangle, the
 * Wilson limits by bisection on the score test, the votes by grouping
 * numbers in the test. */
#include "pipeline/base/stats.h"
#include "pipeline/runner/runner_baselines.h"
#include "stages/answer.h"
#include "stages/stage.h"
#include "stages/state.h"
#include "testutil.h"
#include "testwf.h"

#include <check.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEMO_WF NSED_SOURCE_DIR "/workflows/demo.yaml"
#define DEMO_Q NSED_SOURCE_DIR "/workflows/demo-questions.jsonl"
#define DEMO_SIM NSED_SOURCE_DIR "/tests/sim/configs/demo-sim.yaml"

/* ---- the tie rule -------------------------------------------------------- */

static workflow_answer numeric(void)
{
    workflow_answer a = {0};

    a.extract = WORKFLOW_EXTRACT_BOXED;
    a.compare = WORKFLOW_COMPARE_NUMERIC;
    a.tolerance = 1e-6;
    return a;
}

START_TEST(tie_rule)
{
    workflow_answer a = numeric();
    const char *three[] = {"1", "2", "3"};
    const char *two_two[] = {"7", "8", "8.0", "7"};
    const char *two_one[] = {"5", "6", "6.0"};
    const char *two_seats[] = {"4", "9"};
    const char *lone[] = {NULL, "3", NULL};
    const char *none[] = {NULL, NULL};
    answer_tally t;

    /* three different answers: a three-way tie, no majority */
    ck_assert_int_eq(answer_tally_votes(&a, three, 3, &t), 0);
    ck_assert_uint_eq(t.votes, 1);
    ck_assert_uint_eq(t.ntied, 3);
    /* 2-2: a tie between 7 (seat 0) and 8 (seat 1) */
    ck_assert_int_eq(answer_tally_votes(&a, two_two, 4, &t), 0);
    ck_assert_uint_eq(t.votes, 2);
    ck_assert_uint_eq(t.ntied, 2);
    ck_assert_uint_eq(t.tied[0], 0);
    ck_assert_uint_eq(t.tied[1], 1);
    /* 2-1: 6 and 6.0 are one answer under numeric, the majority */
    ck_assert_int_eq(answer_tally_votes(&a, two_one, 3, &t), 0);
    ck_assert_uint_eq(t.votes, 2);
    ck_assert_uint_eq(t.ntied, 1);
    ck_assert_uint_eq(t.tied[0], 1);
    /* two seats that disagree: a tie (it used to go to seat 0) */
    ck_assert_int_eq(answer_tally_votes(&a, two_seats, 2, &t), 0);
    ck_assert_uint_eq(t.ntied, 2);
    /* one answer and no others is a majority of one */
    ck_assert_int_eq(answer_tally_votes(&a, lone, 3, &t), 0);
    ck_assert_uint_eq(t.votes, 1);
    ck_assert_uint_eq(t.ntied, 1);
    ck_assert_uint_eq(t.tied[0], 1);
    ck_assert_int_eq(answer_tally_votes(&a, none, 2, &t), 0);
    ck_assert_uint_eq(t.votes, 0);
    /* exact compare: 6 and 6.0 differ, so 5/6/6.0 is a three-way tie */
    a.compare = WORKFLOW_COMPARE_EXACT;
    ck_assert_int_eq(answer_tally_votes(&a, two_one, 3, &t), 0);
    ck_assert_uint_eq(t.ntied, 3);
}
END_TEST

/* ---- the seeded draw, through the propose stage ------------------------- */

static const char two_seat_yaml[] =
    "name: t\nversion: 1\nseed: 5\n"
    "models:\n"
    "  - {id: m0, endpoint: 'http://127.0.0.1:9/v1', model: s0}\n"
    "  - {id: m1, endpoint: 'http://127.0.0.1:9/v1', model: s1}\n"
    "teams:\n  main:\n    roles:\n"
    "      - {name: solver, count: 1, models: [m0]}\n"
    "      - {name: critic, count: 1, models: [m1]}\n"
    "answer: {extract: boxed, compare: numeric}\n";

/* Round 0 of question qid answered "\boxed{a0}", "\boxed{a1}"; returns
 * the state after propose. */
static state *round0(const workflow *wf, const char *qid, const char *a0,
                     const char *a1)
{
    state_seat_spec seats[2] = {{0, "solver", ""}, {1, "critic", ""}};
    state_question q = {qid, "What is 2 + 2?", "4", NULL, 0};
    stage_response r[2];
    char c0[64], c1[64];
    state *st = NULL;
    nsed_err e = {0};

    ck_assert_int_eq(state_new(wf, &q, seats, 2, &st, &e), 0);
    snprintf(c0, sizeof c0, "\\boxed{%s}", a0);
    snprintf(c1, sizeof c1, "\\boxed{%s}", a1);
    memset(r, 0, sizeof r);
    for (size_t i = 0; i < 2; i++) {
        r[i].kind = STAGE_KIND_PROPOSE;
        r[i].seat = i;
        r[i].ok = true;
        r[i].content = i ? c1 : c0;
    }
    ck_assert_int_eq(stage_reduce(st, wf, NULL, r, 2, &e), 0);
    ck_assert_int_eq(st->stage, STATE_STAGE_ANONYMIZE);
    return st;
}

START_TEST(tie_draw_is_seeded_and_recorded)
{
    workflow *wf = tu_load_workflow(two_seat_yaml, NULL);
    size_t first = 0, second = 0;
    state *st, *back = NULL;
    char *json = NULL, *json2 = NULL;
    nsed_err e = {0};

    /* agreement: a majority, no tie, no draw */
    st = round0(wf, "q-agree", "4", "4.0");
    ck_assert_str_eq(st->baseline_answer, "4");
    ck_assert_uint_eq(st->baseline_votes, 2);
    ck_assert(!st->baseline_tie);
    ck_assert_ptr_null(st->baseline_drawn);
    ck_assert_int_eq(state_to_json(st, &json), 0);
    ck_assert(!tu_contains(json, "\"tie\"")); /* as an older nsed wrote it */
    free(json);
    state_free(st);
    /* disagreement: a tie; the draw is the same on every replay, is one
     * of the tied answers, and both answers get drawn over questions */
    for (int i = 0; i < 64; i++) {
        char qid[32];
        state *again;

        snprintf(qid, sizeof qid, "q-%03d", i);
        st = round0(wf, qid, "3", "5");
        again = round0(wf, qid, "3", "5");
        ck_assert_ptr_null(st->baseline_answer);
        ck_assert_uint_eq(st->baseline_votes, 1);
        ck_assert(st->baseline_tie);
        ck_assert_ptr_nonnull(st->baseline_drawn);
        ck_assert_str_eq(st->baseline_drawn, again->baseline_drawn);
        if (!strcmp(st->baseline_drawn, "3"))
            first++;
        else if (!strcmp(st->baseline_drawn, "5"))
            second++;
        else
            ck_abort_msg("drawn %s is not a tied answer", st->baseline_drawn);
        state_free(again);
        if (i < 63)
            state_free(st);
    }
    /* 64 fair draws: P(either side below 16) < 1e-4 */
    ck_assert_msg(first >= 16 && second >= 16, "draws %zu/%zu", first, second);
    /* the draw is recorded in the state and read back */
    ck_assert_int_eq(state_to_json(st, &json), 0);
    ck_assert(tu_contains(json, "\"tie\":true"));
    ck_assert_int_eq(state_from_json(json, strlen(json), wf, &back, &e), 0);
    ck_assert(back->baseline_tie);
    ck_assert_str_eq(back->baseline_drawn, st->baseline_drawn);
    ck_assert_int_eq(state_to_json(back, &json2), 0);
    ck_assert_str_eq(json, json2);
    state_free(back);
    free(json2);
    /* a tie without a draw, or with a majority too, is refused */
    {
        char *bad = strdup(json);
        char *p = strstr(bad, "\"drawn\":");

        ck_assert_ptr_nonnull(p);
        memcpy(p, "\"drawx\"", 7);
        ck_assert_int_eq(state_from_json(bad, strlen(bad), wf, &back, &e),
                         NSED_EINVAL);
        free(bad);
    }
    free(json);
    state_free(st);
    workflow_free(wf);
}
END_TEST

/* ---- the statistics, against values computed another way --------------- */

/* 2 * sum_{k <= min(b,c)} C(b+c, k) / 2^(b+c), C from Pascal's triangle. */
static double mcnemar_by_hand(size_t b, size_t c)
{
    static double row[2001];
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

/* The Wilson limits as the roots of |k/n - p| = z sqrt(p (1 - p) / n),
 * found by bisection on each side of k/n. */
static void wilson_by_bisection(size_t k, size_t n, double *lo, double *hi)
{
    double ph = (double)k / (double)n, z = 1.959963984540054;
    double a, b;

    for (int side = 0; side < 2; side++) {
        a = side ? ph : 0;
        b = side ? 1 : ph;
        for (int it = 0; it < 200; it++) {
            double mid = (a + b) / 2;
            bool inside = fabs(ph - mid) <=
                          z * sqrt(mid * (1 - mid) / (double)n);

            /* the lower root: inside above it; the upper: inside below */
            if (inside == (side == 0))
                b = mid;
            else
                a = mid;
        }
        if (side)
            *hi = (a + b) / 2;
        else
            *lo = (a + b) / 2;
    }
}

static void newcombe_by_hand(size_t a, size_t b, size_t c, size_t d,
                             double *diff, double *lo, double *hi)
{
    double n = (double)(a + b + c + d);
    double p1 = (a + b) / n, p2 = (a + c) / n, l1, u1, l2, u2, phi = 0;
    double den = (double)(a + b) * (c + d) * (a + c) * (b + d);

    wilson_by_bisection(a + b, a + b + c + d, &l1, &u1);
    wilson_by_bisection(a + c, a + b + c + d, &l2, &u2);
    if (den > 0)
        phi = ((double)a * d - (double)b * c) / sqrt(den);
    *diff = p1 - p2;
    /* with phi = 1 and equal margins the radicands are (x - x)^2, which
     * rounding can leave a hair below 0 */
    *lo = *diff -
          sqrt(fmax(0, pow(p1 - l1, 2) - 2 * phi * (p1 - l1) * (u2 - p2) +
                           pow(u2 - p2, 2)));
    *hi = *diff +
          sqrt(fmax(0, pow(u1 - p1, 2) - 2 * phi * (u1 - p1) * (p2 - l2) +
                           pow(p2 - l2, 2)));
}

START_TEST(mcnemar_exact)
{
    /* b=3, c=10: 2 * (1 + 13 + 78 + 286) / 8192 = 756 / 8192 */
    ck_assert_double_eq_tol(stats_mcnemar_exact_p(3, 10), 756.0 / 8192, 1e-15);
    ck_assert_double_eq_tol(stats_mcnemar_exact_p(10, 3), 756.0 / 8192, 1e-15);
    ck_assert_double_eq_tol(stats_mcnemar_exact_p(3, 10),
                            mcnemar_by_hand(3, 10), 1e-15);
    /* b=0, c=5: 2 / 32 */
    ck_assert_double_eq_tol(stats_mcnemar_exact_p(0, 5), 2.0 / 32, 1e-15);
    ck_assert_double_eq(stats_mcnemar_exact_p(0, 0), 1);
    ck_assert_double_eq(stats_mcnemar_exact_p(6, 6), 1);
    /* 2 * 4096 / 8192: exactly 1, to rounding */
    ck_assert_double_eq_tol(stats_mcnemar_exact_p(6, 7), 1, 1e-12);
    for (size_t b = 0; b < 40; b += 3)
        for (size_t c = 0; c < 300; c += 17) {
            double want = mcnemar_by_hand(b, c);

            ck_assert_msg(fabs(stats_mcnemar_exact_p(b, c) - want) <=
                              1e-9 * want + 1e-300,
                          "b %zu c %zu: %g, by hand %g", b, c,
                          stats_mcnemar_exact_p(b, c), want);
        }
}
END_TEST

START_TEST(newcombe_interval)
{
    static const size_t tables[][4] = {
        {50, 20, 5, 45}, {10, 0, 0, 10}, {0, 7, 0, 3},    {3, 10, 4, 1},
        {97, 0, 0, 23},  {1, 1, 1, 1},   {68, 29, 3, 20}, {5, 0, 9, 0},
    };
    double diff, lo, hi, wd, wl, wh, l, h;

    for (size_t i = 0; i < sizeof tables / sizeof tables[0]; i++) {
        const size_t *t = tables[i];

        stats_newcombe_paired(t[0], t[1], t[2], t[3], STATS_Z95, &diff, &lo,
                              &hi);
        newcombe_by_hand(t[0], t[1], t[2], t[3], &wd, &wl, &wh);
        ck_assert_double_eq_tol(diff, wd, 1e-12);
        ck_assert_msg(fabs(lo - wl) < 1e-9 && fabs(hi - wh) < 1e-9,
                      "table %zu: [%.12f, %.12f], by hand [%.12f, %.12f]", i,
                      lo, hi, wl, wh);
        ck_assert(lo <= diff && diff <= hi);
    }
    /* Wilson of 0/10 and 10/10 end at the bounds */
    stats_wilson(0, 10, STATS_Z95, &l, &h);
    ck_assert_double_eq(l, 0);
    wilson_by_bisection(0, 10, &wl, &wh);
    ck_assert_double_eq_tol(h, wh, 1e-12);
    stats_wilson(7, 20, STATS_Z95, &l, &h);
    wilson_by_bisection(7, 20, &wl, &wh);
    ck_assert_double_eq_tol(l, wl, 1e-12);
    ck_assert_double_eq_tol(h, wh, 1e-12);
    stats_newcombe_paired(0, 0, 0, 0, STATS_Z95, &diff, &lo, &hi);
    ck_assert_double_eq(diff, 0);
}
END_TEST

/* ---- counting result records --------------------------------------------- */

START_TEST(counting_records)
{
    /* a new record with a tie, one with a majority, and one of an older
     * nsed (no "tie", no "drawn_correct": its "correct" went to the lowest
     * seat on a tie and counts as the drawn figure too) */
    static const char *const recs[] = {
        "{\"correct\":true,\"tags\":[\"a\",\"b\",\"a\"],\"baselines\":{"
        "\"models\":[{\"model\":\"x\",\"answer\":\"1\",\"correct\":true},"
        "{\"model\":\"y\",\"answer\":null,\"correct\":false}],"
        "\"majority\":{\"answer\":null,\"votes\":1,\"correct\":false,"
        "\"tie\":true,\"drawn\":\"1\",\"drawn_correct\":true}}}",
        "{\"correct\":false,\"tags\":[\"b\"],\"baselines\":{"
        "\"models\":[{\"model\":\"x\",\"answer\":\"2\",\"correct\":true},"
        "{\"model\":\"y\",\"answer\":\"2\",\"correct\":true}],"
        "\"majority\":{\"answer\":\"2\",\"votes\":2,\"correct\":true,"
        "\"tie\":false,\"drawn\":\"2\",\"drawn_correct\":true}}}",
        "{\"correct\":false,\"baselines\":{"
        "\"models\":[{\"model\":\"x\",\"answer\":\"3\",\"correct\":false},"
        "{\"model\":\"y\",\"answer\":\"4\",\"correct\":false}],"
        "\"majority\":{\"answer\":\"3\",\"votes\":1,\"correct\":false}}}",
    };
    runner_baselines *bl = runner_baselines_new();
    const runner_bl_col *c;

    ck_assert_ptr_nonnull(bl);
    for (size_t i = 0; i < 3; i++) {
        cJSON *r = cJSON_Parse(recs[i]);

        ck_assert_ptr_nonnull(r);
        runner_baselines_count(bl, r);
        cJSON_Delete(r);
    }
    ck_assert_uint_eq(bl->n, 3);
    ck_assert_uint_eq(bl->nsed_correct, 1);
    ck_assert_uint_eq(bl->no_majority, 1); /* the old record has "3" */
    ck_assert_uint_eq(bl->ties, 1);
    ck_assert_uint_eq(bl->ncols, 4);
    c = &bl->cols[0]; /* (NSED, majority): (T,F) (F,T) (F,F) */
    ck_assert_str_eq(c->name, "majority");
    ck_assert(c->all.a == 0 && c->all.b == 1 && c->all.c == 1 && c->all.d == 1);
    c = &bl->cols[1]; /* (T,T) (F,T) (F,F: the old "correct") */
    ck_assert_str_eq(c->name, "majority_drawn");
    ck_assert(c->all.a == 1 && c->all.b == 0 && c->all.c == 1 && c->all.d == 1);
    c = &bl->cols[3]; /* y without an answer is judged wrong */
    ck_assert_str_eq(c->name, "model:y");
    ck_assert(c->all.a == 0 && c->all.b == 1 && c->all.c == 1 && c->all.d == 1);
    /* tags: "a" once though listed twice; "b" on two records */
    ck_assert_uint_eq(bl->ntags, 2);
    ck_assert_str_eq(bl->tags[0].name, "a");
    ck_assert_uint_eq(bl->tags[0].n, 1);
    ck_assert_uint_eq(bl->tags[0].nsed_correct, 1);
    ck_assert_str_eq(bl->tags[1].name, "b");
    ck_assert_uint_eq(bl->tags[1].n, 2);
    ck_assert_uint_eq(bl->cols[2].tag[1].a + bl->cols[2].tag[1].c, 2);
    runner_baselines_free(bl);
}
END_TEST

/* ---- end to end: the demo on nsed-sim ------------------------------------ */

/* The answers of the test's own grouping: numbers equal within the demo's
 * numeric tolerance (1e-6 relative above 1); a non-number is its own. */
static bool same_number(const char *x, const char *y)
{
    char *ex, *ey;
    double a = strtod(x, &ex), b = strtod(y, &ey);

    if (*ex || *ey || ex == x || ey == y)
        return !strcmp(x, y);
    return fabs(a - b) <= 1e-6 * fmax(1, fmax(fabs(a), fabs(b)));
}

typedef struct pair4 {
    size_t a, b, c, d;
} pair4;

static void add4(pair4 *p, bool nsed, bool base)
{
    if (nsed && base)
        p->a++;
    else if (nsed)
        p->b++;
    else if (base)
        p->c++;
    else
        p->d++;
}

#define NCOL 5 /* majority, majority_drawn, model:alpha, model:beta, ... */
#define NTAG 16

typedef struct expect {
    size_t n, nsed, no_majority, ties;
    char *col[NCOL];
    pair4 all[NCOL];
    char *tag[NTAG];
    size_t ntags, tag_n[NTAG], tag_nsed[NTAG];
    pair4 tag_p[NTAG][NCOL];
} expect;

/* The column of name (a copy is kept when new). */
static size_t col_of(expect *x, const char *name)
{
    for (size_t i = 0; i < NCOL; i++) {
        if (!x->col[i])
            x->col[i] = strdup(name);
        if (!strcmp(x->col[i], name))
            return i;
    }
    ck_abort_msg("more than %d baselines", NCOL);
    return 0;
}

/* One export row into x: the strict majority computed here from the
 * round-0 answers of the models, against the reference. */
static void count_row(expect *x, cJSON *row)
{
    const cJSON *bl = cJSON_GetObjectItem(row, "baselines");
    const cJSON *models = cJSON_GetObjectItem(bl, "models");
    const cJSON *maj = cJSON_GetObjectItem(bl, "majority");
    const char *ref = cJSON_GetObjectItem(row, "reference")->valuestring;
    const char *ans[8];
    size_t n = 0, votes[8] = {0}, top = 0, ntop = 0, win = 0;
    bool nsed = cJSON_IsTrue(cJSON_GetObjectItem(row, "correct"));
    bool maj_ok, drawn_ok;
    size_t cols[2], tags[NTAG], ntags = 0;
    const cJSON *m, *t;
    const char *drawn;

    ck_assert_str_ne(cJSON_GetObjectItem(row, "stop_reason")->valuestring,
                     "none");
    x->n++;
    x->nsed += nsed;
    cJSON_ArrayForEach(t, cJSON_GetObjectItem(row, "tags")) {
        size_t i;

        for (i = 0; i < x->ntags; i++)
            if (!strcmp(x->tag[i], t->valuestring))
                break;
        if (i == x->ntags) {
            ck_assert_uint_lt(x->ntags, NTAG);
            x->tag[x->ntags++] = strdup(t->valuestring);
        }
        tags[ntags++] = i;
        x->tag_n[i]++;
        x->tag_nsed[i] += nsed;
    }
    cJSON_ArrayForEach(m, models) {
        const cJSON *a = cJSON_GetObjectItem(m, "answer");

        if (cJSON_IsString(a))
            ans[n++] = a->valuestring;
    }
    /* votes of each answer, counted at its first occurrence */
    for (size_t i = 0; i < n; i++) {
        bool seen = false;

        for (size_t k = 0; k < i; k++)
            seen = seen || same_number(ans[k], ans[i]);
        if (seen)
            continue;
        for (size_t k = i; k < n; k++)
            votes[i] += same_number(ans[i], ans[k]);
        if (votes[i] > top) {
            top = votes[i];
            ntop = 0;
            win = i;
        }
        if (votes[i] == top)
            ntop++;
    }
    maj_ok = top > 0 && ntop == 1 && same_number(ans[win], ref);
    if (top == 0 || ntop > 1)
        x->no_majority++;
    if (top > 0 && ntop > 1) {
        bool tied = false;

        x->ties++;
        /* the draw is recorded and is one of the tied answers */
        ck_assert(cJSON_IsTrue(cJSON_GetObjectItem(maj, "tie")));
        ck_assert(cJSON_IsNull(cJSON_GetObjectItem(maj, "answer")));
        drawn = cJSON_GetObjectItem(maj, "drawn")->valuestring;
        for (size_t i = 0; i < n; i++)
            tied = tied || (votes[i] == top && same_number(ans[i], drawn));
        ck_assert_msg(tied, "drawn %s is not tied", drawn);
        drawn_ok = same_number(drawn, ref);
    } else {
        ck_assert(cJSON_IsFalse(cJSON_GetObjectItem(maj, "tie")));
        drawn_ok = maj_ok;
    }
    add4(&x->all[cols[0] = col_of(x, "majority")], nsed, maj_ok);
    add4(&x->all[cols[1] = col_of(x, "majority_drawn")], nsed, drawn_ok);
    cJSON_ArrayForEach(m, models) {
        const cJSON *a = cJSON_GetObjectItem(m, "answer");
        char name[64];
        size_t c;
        bool ok;

        snprintf(name, sizeof name, "model:%s",
                 cJSON_GetObjectItem(m, "model")->valuestring);
        /* a model without an answer is judged wrong */
        ok = cJSON_IsString(a) && same_number(a->valuestring, ref);
        c = col_of(x, name);
        add4(&x->all[c], nsed, ok);
        for (size_t k = 0; k < ntags; k++)
            add4(&x->tag_p[tags[k]][c], nsed, ok);
    }
    for (size_t k = 0; k < ntags; k++) {
        add4(&x->tag_p[tags[k]][cols[0]], nsed, maj_ok);
        add4(&x->tag_p[tags[k]][cols[1]], nsed, drawn_ok);
    }
}

static const cJSON *find_cmp(const cJSON *cmps, const char *name)
{
    const cJSON *c;

    cJSON_ArrayForEach(c, cmps) {
        if (!strcmp(cJSON_GetObjectItem(c, "baseline")->valuestring, name))
            return c;
    }
    ck_abort_msg("no comparison for %s", name);
    return NULL;
}

static void check_against(const expect *x, const cJSON *bl)
{
    const cJSON *cmps = cJSON_GetObjectItem(bl, "comparisons");
    const cJSON *tags = cJSON_GetObjectItem(bl, "tags");

    ck_assert_double_eq(tu_jnum(bl, "n", NULL), (double)x->n);
    ck_assert_double_eq(tu_jnum(bl, "nsed_correct", NULL), (double)x->nsed);
    ck_assert_double_eq(tu_jnum(bl, "no_majority", NULL),
                        (double)x->no_majority);
    ck_assert_double_eq(tu_jnum(bl, "majority_ties", NULL), (double)x->ties);
    ck_assert_int_eq(cJSON_GetArraySize(cmps), NCOL);
    for (size_t i = 0; i < NCOL; i++) {
        const pair4 *p = &x->all[i];
        const cJSON *c = find_cmp(cmps, x->col[i]);
        double d, lo, hi;

        newcombe_by_hand(p->a, p->b, p->c, p->d, &d, &lo, &hi);
        ck_assert_double_eq(tu_jnum(c, "n", NULL),
                            (double)(p->a + p->b + p->c + p->d));
        ck_assert_double_eq(tu_jnum(c, "baseline_correct", NULL),
                            (double)(p->a + p->c));
        ck_assert_double_eq(tu_jnum(c, "nsed_only", NULL), (double)p->b);
        ck_assert_double_eq(tu_jnum(c, "baseline_only", NULL), (double)p->c);
        ck_assert_double_eq_tol(tu_jnum(c, "diff", NULL), d, 1e-12);
        ck_assert_double_eq_tol(tu_jnum(c, "ci95_lo", NULL), lo, 1e-9);
        ck_assert_double_eq_tol(tu_jnum(c, "ci95_hi", NULL), hi, 1e-9);
        ck_assert_double_eq_tol(tu_jnum(c, "mcnemar_p", NULL),
                                mcnemar_by_hand(p->b, p->c),
                                1e-9 * mcnemar_by_hand(p->b, p->c));
    }
    ck_assert_int_eq(cJSON_GetArraySize(tags), (int)x->ntags);
    for (size_t t = 0; t < x->ntags; t++) {
        const cJSON *e = cJSON_GetObjectItem(tags, x->tag[t]);
        const cJSON *bs = cJSON_GetObjectItem(e, "baselines");

        ck_assert_ptr_nonnull(e);
        ck_assert_double_eq(tu_jnum(e, "n", NULL), (double)x->tag_n[t]);
        ck_assert_double_eq(tu_jnum(e, "nsed_correct", NULL),
                            (double)x->tag_nsed[t]);
        for (size_t i = 0; i < NCOL; i++) {
            const pair4 *p = &x->tag_p[t][i];

            ck_assert_double_eq(tu_jnum(bs, x->col[i], "n"),
                                (double)(p->a + p->b + p->c + p->d));
            ck_assert_double_eq(tu_jnum(bs, x->col[i], "correct"),
                                (double)(p->a + p->c));
        }
    }
}

START_TEST(demo_figures_from_export_rows)
{
    tu_sim sim;
    char *dir = tu_path(tu_tmp, "store"), *out = NULL, *err = NULL;
    char *rows, *line, *nl;
    expect x;
    cJSON *st, *sum;

    memset(&x, 0, sizeof x);
    tu_sim_start(&sim, DEMO_SIM, NULL, NULL);
    ck_assert_msg(TU_NSED(sim.url, &out, &err, "run", DEMO_WF, "--questions",
                          DEMO_Q, "--store", dir, "--quiet") == 0,
                  "run: %s", err);
    free(out);
    free(err);
    tu_sim_stop(&sim);
    rows = tu_nsed_export(dir);
    for (line = rows; *line; line = nl + 1) {
        cJSON *row;

        nl = strchr(line, '\n');
        ck_assert_ptr_nonnull(nl);
        *nl = '\0';
        row = cJSON_Parse(line);
        ck_assert_ptr_nonnull(row);
        if (cJSON_IsBool(cJSON_GetObjectItem(row, "correct")))
            count_row(&x, row);
        cJSON_Delete(row);
    }
    ck_assert_uint_eq(x.n, 120);
    /* the demo's three seats disagree often enough to test ties */
    ck_assert_uint_gt(x.ties, 10);
    st = tu_nsed_status(dir);
    check_against(&x, cJSON_GetObjectItem(st, "baselines"));
    /* the strict majority is what "majority_correct" counts now */
    ck_assert_double_eq(tu_jnum(st, "accuracy", "majority_correct"),
                        (double)(x.all[0].a + x.all[0].c));
    cJSON_Delete(st);
    /* export --summary carries the same object */
    out = err = NULL;
    ck_assert_int_eq(TU_NSED(NULL, &out, &err, "export", "--store", dir,
                             "--summary"),
                     0);
    sum = cJSON_Parse(out);
    ck_assert_ptr_nonnull(sum);
    ck_assert_double_eq(tu_jnum(sum, "questions", NULL), 120);
    check_against(&x, cJSON_GetObjectItem(sum, "baselines"));
    cJSON_Delete(sum);
    free(out);
    free(err);
    /* the text names each figure */
    out = err = NULL;
    ck_assert_int_eq(TU_NSED(NULL, &out, &err, "status", "--store", dir), 0);
    ck_assert(tu_contains(out, "strict majority"));
    ck_assert(tu_contains(out, "no strict majority on"));
    ck_assert(tu_contains(out, "ties drawn"));
    ck_assert(tu_contains(out, "NSED - majority: "));
    ck_assert(tu_contains(out, "McNemar p"));
    ck_assert(tu_contains(out, "by tag:"));
    free(out);
    free(err);
    for (size_t i = 0; i < NCOL; i++)
        free(x.col[i]);
    for (size_t i = 0; i < x.ntags; i++)
        free(x.tag[i]);
    free(rows);
    free(dir);
}
END_TEST

Suite *tu_suite(void)
{
    Suite *s = suite_create("baselines");
    TCase *t = tcase_create("strict majority");

    tcase_add_test(t, tie_rule);
    tcase_add_test(t, tie_draw_is_seeded_and_recorded);
    suite_add_tcase(s, t);
    t = tcase_create("statistics");
    tcase_add_test(t, mcnemar_exact);
    tcase_add_test(t, newcombe_interval);
    tcase_add_test(t, counting_records);
    suite_add_tcase(s, t);
    t = tcase_create("demo");
    tcase_add_checked_fixture(t, tu_tmp_setup, tu_tmp_teardown);
    tcase_set_timeout(t, 300);
    tcase_add_test(t, demo_figures_from_export_rows);
    suite_add_tcase(s, t);
    return s;
}
