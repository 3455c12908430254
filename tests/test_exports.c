/* The export formats (`nsed export --format traces|sft|dpo|csv`, issue 13)
 * on a run of the demo workflow against nsed-sim.
 *
 * Every check reads what it compares against another way than the code
 * under test: the result records (`nsed export`, the default format), the
 * archived rounds straight from the store with the test's own JSON
 * reading, and the request bodies nsed-sim logged as they arrived
 * (NSED_SIM_REQUEST_LOG). The CSV is parsed with the test's own RFC 4180
 * reader. */
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

#define DEMO_WF NSED_SOURCE_DIR "/workflows/demo.yaml"
#define DEMO_Q NSED_SOURCE_DIR "/workflows/demo-questions.jsonl"
#define DEMO_SIM NSED_SOURCE_DIR "/tests/sim/configs/demo-sim.yaml"
#define NQ 36
#define MAXROWS 64
#define MAXCALLS 4096

/* The first NQ demo questions; every third one (index % 3 == 2) without
 * its reference, so sft's --min-conviction has questions to judge. */
static char *write_questions(void)
{
    char *all = tu_read_file(DEMO_Q, NULL), *p = all, *path;
    size_t cap = strlen(all) * 2 + 1, tl = 0;
    char *text = calloc(1, cap);

    ck_assert_ptr_nonnull(text);
    for (int i = 0; i < NQ; i++) {
        char *nl = strchr(p, '\n');
        cJSON *j;
        char *line;

        ck_assert_ptr_nonnull(nl);
        j = cJSON_ParseWithLength(p, (size_t)(nl - p));
        ck_assert_ptr_nonnull(j);
        if (i % 3 == 2)
            cJSON_DeleteItemFromObjectCaseSensitive(j, "answer");
        line = cJSON_PrintUnformatted(j);
        tl += (size_t)snprintf(text + tl, cap - tl, "%s\n", line);
        free(line);
        cJSON_Delete(j);
        p = nl + 1;
    }
    path = tu_path(tu_tmp, "q.jsonl");
    tu_write_file(path, text, tl);
    free(text);
    free(all);
    return path;
}

typedef struct run {
    char *store;
    char *log;
} run;

/* Run the demo workflow on the questions against the simulator config
 * sim_cfg, the simulator logging every request body. */
static void run_with(run *r, const char *sim_cfg)
{
    char *q = write_questions(), *out = NULL, *err = NULL;
    tu_sim sim;
    int rc;

    r->store = tu_path(tu_tmp, "store");
    r->log = tu_path(tu_tmp, "requests.log");
    setenv("NSED_SIM_REQUEST_LOG", r->log, 1);
    tu_sim_start(&sim, sim_cfg, NULL, NULL);
    unsetenv("NSED_SIM_REQUEST_LOG");
    rc = TU_NSED(sim.url, &out, &err, "run", DEMO_WF, "--questions", q,
                 "--store", r->store, "--quiet");
    tu_sim_stop(&sim);
    ck_assert_msg(rc == 0, "run exit %d: %s", rc, err);
    free(out);
    free(err);
    free(q);
}

static void run_demo(run *r)
{
    run_with(r, DEMO_SIM);
}

static void run_free(run *r)
{
    free(r->store);
    free(r->log);
}

/* `nsed export --store S --format F [extra]` (must succeed), parsed as
 * JSON lines into rows; returns the count. */
static size_t export_lines(const run *r, const char *format, const char *x1,
                           const char *x2, cJSON **rows)
{
    char *out = NULL, *err = NULL, *p, *nl;
    size_t n = 0;
    int rc;

    if (x2)
        rc = TU_NSED(NULL, &out, &err, "export", "--store", r->store,
                     "--format", format, x1, x2);
    else if (x1)
        rc = TU_NSED(NULL, &out, &err, "export", "--store", r->store,
                     "--format", format, x1);
    else
        rc = TU_NSED(NULL, &out, &err, "export", "--store", r->store,
                     "--format", format);
    ck_assert_msg(rc == 0, "export --format %s: exit %d: %s", format, rc, err);
    for (p = out; *p; p = nl + 1) {
        nl = strchr(p, '\n');
        ck_assert_ptr_nonnull(nl);
        ck_assert_uint_lt(n, MAXROWS);
        rows[n] = cJSON_ParseWithLength(p, (size_t)(nl - p));
        ck_assert_msg(rows[n] != NULL, "%s row %zu is not JSON", format, n);
        n++;
    }
    free(out);
    free(err);
    return n;
}

static void free_rows(cJSON **rows, size_t n)
{
    for (size_t i = 0; i < n; i++)
        cJSON_Delete(rows[i]);
}

static const cJSON *m(const cJSON *o, const char *k)
{
    return cJSON_GetObjectItemCaseSensitive(o, k);
}

static const char *s_of(const cJSON *o, const char *k)
{
    const cJSON *v = m(o, k);

    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static double n_of(const cJSON *o, const char *k)
{
    const cJSON *v = m(o, k);

    ck_assert_msg(cJSON_IsNumber(v), "%s is not a number", k);
    return v->valuedouble;
}

static const cJSON *by_id(cJSON **rows, size_t n, const char *id)
{
    for (size_t i = 0; i < n; i++)
        if (s_of(rows[i], "id") && strcmp(s_of(rows[i], "id"), id) == 0)
            return rows[i];
    return NULL;
}

/* The results export (the default format), one object per question. */
static size_t results(const run *r, cJSON **rows)
{
    char *a = tu_nsed_export(r->store), *out = NULL, *err = NULL;
    size_t n;

    /* --format results is the default, byte for byte */
    ck_assert_int_eq(TU_NSED(NULL, &out, &err, "export", "--store", r->store,
                             "--format", "results"),
                     0);
    ck_assert_str_eq(a, out);
    free(a);
    free(out);
    free(err);
    n = export_lines(r, "results", NULL, NULL, rows);
    ck_assert_uint_eq(n, NQ);
    return n;
}

/* Every row carries the manifest's workflow hash and one run id. */
static void check_run_fields(cJSON **rows, size_t n, const char *hash)
{
    const char *id0 = n ? s_of(rows[0], "run_id") : NULL;

    ck_assert_ptr_nonnull(id0);
    ck_assert_uint_eq(strlen(id0), 16);
    for (size_t i = 0; i < n; i++) {
        ck_assert_str_eq(s_of(rows[i], "workflow_hash"), hash);
        ck_assert_str_eq(s_of(rows[i], "run_id"), id0);
    }
}

static char *manifest_hash(const run *r)
{
    cJSON *st = tu_nsed_status(r->store);
    const char *h = s_of(m(st, "manifest"), "workflow_hash");
    char *c;

    ck_assert_ptr_nonnull(h);
    c = strdup(h);
    cJSON_Delete(st);
    return c;
}

/* ---- the archived rounds, read by the test ---------------------------- */

typedef struct archive {
    const char *qid;
    cJSON *rounds[16];
    int n;
} archive;

static int read_rounds(store_txn *t, void *arg, nsed_err *err)
{
    archive *a = arg;

    (void)err;
    for (a->n = 0; a->n < 16; a->n++) {
        store_key key;
        const void *val;
        size_t vlen;

        ck_assert_int_eq(store_keys_question(a->qid, STORE_KEYS_ROUND,
                                             (uint32_t)a->n, &key),
                         0);
        if (store_get(t, STORE_STATE, key.bytes, key.len, &val, &vlen))
            break;
        a->rounds[a->n] = cJSON_ParseWithLength(val, vlen);
        ck_assert_ptr_nonnull(a->rounds[a->n]);
    }
    return 0;
}

static void load_archive(const run *r, archive *a)
{
    store_opts o = {STORE_RDONLY, 0};
    store *s = NULL;
    nsed_err e = {0};

    ck_assert_msg(store_open(r->store, &o, &s, &e) == 0, "open: %s", e.msg);
    ck_assert_int_eq(store_read(s, read_rounds, a, &e), 0);
    store_close(s);
}

/* ---- the tests --------------------------------------------------------- */

/* A DPO row's chosen is the recorded winner, its rejected a proposal of
 * the same round with a lower score, both scores as the round's votes
 * say; and a row exists exactly for the questions whose winning round
 * has a candidate scored below the winner. */
START_TEST(dpo_chosen_is_the_recorded_winner)
{
    cJSON *res[MAXROWS], *dpo[MAXROWS], *tr[MAXROWS];
    run r;
    size_t nres, ndpo, ntr, expect = 0, wrong = 0;
    char *hash;

    run_demo(&r);
    hash = manifest_hash(&r);
    nres = results(&r, res);
    ndpo = export_lines(&r, "dpo", NULL, NULL, dpo);
    ntr = export_lines(&r, "traces", NULL, NULL, tr);
    ck_assert_uint_eq(ntr, NQ);
    check_run_fields(dpo, ndpo, hash);
    for (size_t i = 0; i < nres; i++) {
        const cJSON *w = m(res[i], "winner");
        const cJSON *t = by_id(tr, ntr, s_of(res[i], "id"));
        const cJSON *d = by_id(dpo, ndpo, s_of(res[i], "id"));
        const cJSON *votes, *v;
        double wscore = NAN;
        bool lower = false;

        ck_assert_ptr_nonnull(t);
        if (!cJSON_IsObject(w)) {
            ck_assert_ptr_null(d);
            continue;
        }
        votes = m(cJSON_GetArrayItem(m(t, "rounds"), (int)n_of(w, "round")),
                  "votes");
        cJSON_ArrayForEach(v, votes)
            if (n_of(v, "seat") == n_of(w, "seat"))
                wscore = n_of(v, "score");
        ck_assert(!isnan(wscore));
        cJSON_ArrayForEach(v, votes)
            lower = lower || n_of(v, "score") < wscore;
        expect += lower;
        if (!lower) {
            ck_assert_ptr_null(d);
            continue;
        }
        ck_assert_msg(d != NULL, "%s has no dpo row", s_of(res[i], "id"));
        /* chosen: the winner's text, seat and score */
        ck_assert_str_eq(s_of(cJSON_GetArrayItem(m(d, "chosen"), 0), "content"),
                         s_of(res[i], "winning_response"));
        ck_assert_str_eq(s_of(cJSON_GetArrayItem(m(d, "chosen"), 0), "role"),
                         "assistant");
        ck_assert_double_eq(n_of(d, "chosen_seat"), n_of(w, "seat"));
        ck_assert_str_eq(s_of(d, "chosen_model"), s_of(w, "model"));
        ck_assert_double_eq(n_of(d, "chosen_score"), wscore);
        ck_assert_double_eq(n_of(d, "round"), n_of(w, "round"));
        /* rejected: another seat of that round, scored lower, its text
         * that seat's proposal */
        ck_assert(n_of(d, "rejected_seat") != n_of(w, "seat"));
        ck_assert(n_of(d, "rejected_score") < n_of(d, "chosen_score"));
        cJSON_ArrayForEach(v, votes)
            if (n_of(v, "seat") == n_of(d, "rejected_seat"))
                ck_assert_double_eq(n_of(v, "score"),
                                    n_of(d, "rejected_score"));
        {
            const cJSON *p =
                cJSON_GetArrayItem(m(cJSON_GetArrayItem(m(t, "rounds"),
                                                        (int)n_of(w, "round")),
                                     "proposals"),
                                   (int)n_of(d, "rejected_seat"));

            ck_assert_str_eq(s_of(cJSON_GetArrayItem(m(d, "rejected"), 0),
                                  "content"),
                             s_of(p, "text"));
        }
        /* the prompt: system, then the round-0 prompt with the question */
        ck_assert_int_eq(cJSON_GetArraySize(m(d, "prompt")), 2);
        ck_assert_str_eq(s_of(cJSON_GetArrayItem(m(d, "prompt"), 0), "role"),
                         "system");
        ck_assert(tu_contains(s_of(cJSON_GetArrayItem(m(d, "prompt"), 1),
                                   "content"),
                              s_of(t, "question")));
        wrong += cJSON_IsTrue(m(d, "rejected_wrong"));
    }
    ck_assert_uint_eq(ndpo, expect);
    ck_assert_uint_gt(ndpo, NQ / 2);
    ck_assert_uint_gt(wrong, 0);
    free_rows(res, nres);
    free_rows(dpo, ndpo);
    free_rows(tr, ntr);
    free(hash);
    run_free(&r);
}
END_TEST

/* Traces hold every round, de-anonymized as the archived rounds say:
 * each proposal's text is its seat's, and its label is the label of the
 * candidate whose seat it is; the last round's votes are the result's
 * scores. */
START_TEST(traces_match_the_stored_rounds)
{
    cJSON *res[MAXROWS], *tr[MAXROWS];
    run r;
    size_t nres, ntr, rounds_seen = 0;
    char *hash;

    run_demo(&r);
    hash = manifest_hash(&r);
    nres = results(&r, res);
    ntr = export_lines(&r, "traces", NULL, NULL, tr);
    ck_assert_uint_eq(ntr, nres);
    check_run_fields(tr, ntr, hash);
    for (size_t i = 0; i < nres; i++) {
        const char *id = s_of(res[i], "id");
        const cJSON *t = by_id(tr, ntr, id), *rounds = m(t, "rounds");
        const cJSON *last, *a, *b;
        archive ar = {.qid = id};

        ck_assert_ptr_nonnull(t);
        load_archive(&r, &ar);
        ck_assert_int_eq(ar.n, (int)n_of(res[i], "rounds"));
        ck_assert_int_eq(cJSON_GetArraySize(rounds), ar.n);
        for (int k = 0; k < ar.n; k++) {
            const cJSON *tk = cJSON_GetArrayItem(rounds, k);
            const cJSON *sp = m(ar.rounds[k], "proposals");
            const cJSON *cands = m(m(ar.rounds[k], "anonymize"), "candidates");
            const cJSON *c;

            ck_assert_double_eq(n_of(tk, "round"), k);
            ck_assert_int_eq(cJSON_GetArraySize(m(tk, "proposals")),
                             cJSON_GetArraySize(sp));
            for (int s = 0; s < cJSON_GetArraySize(sp); s++) {
                const cJSON *tp = cJSON_GetArrayItem(m(tk, "proposals"), s);

                ck_assert_double_eq(n_of(tp, "seat"), s);
                if (s_of(cJSON_GetArrayItem(sp, s), "text"))
                    ck_assert_str_eq(s_of(tp, "text"),
                                     s_of(cJSON_GetArrayItem(sp, s), "text"));
            }
            cJSON_ArrayForEach(c, cands) {
                const cJSON *tp = cJSON_GetArrayItem(m(tk, "proposals"),
                                                     (int)n_of(c, "seat"));

                ck_assert_str_eq(s_of(tp, "label"), s_of(c, "label"));
            }
            rounds_seen++;
        }
        /* the last round's vote table is the result's scores */
        last = cJSON_GetArrayItem(rounds, ar.n - 1);
        ck_assert_int_eq(cJSON_GetArraySize(m(last, "votes")),
                         cJSON_GetArraySize(m(res[i], "scores")));
        for (a = m(last, "votes")->child, b = m(res[i], "scores")->child;
             a && b; a = a->next, b = b->next) {
            ck_assert_double_eq(n_of(a, "seat"), n_of(b, "seat"));
            ck_assert_str_eq(s_of(a, "label"), s_of(b, "label"));
            ck_assert_double_eq(n_of(a, "score"), n_of(b, "score"));
        }
        ck_assert_str_eq(s_of(m(last, "decision"), "reason"),
                         s_of(res[i], "stop_reason"));
        for (int k = 0; k < ar.n; k++)
            cJSON_Delete(ar.rounds[k]);
    }
    ck_assert_uint_gt(rounds_seen, NQ);
    free_rows(res, nres);
    free_rows(tr, ntr);
    free(hash);
    run_free(&r);
}
END_TEST

/* The messages of a call as one string: per message its role, the
 * content's length and the content, each after a line break (no NUL, so
 * strcmp compares all of it). */
static char *call_key(const cJSON *msgs)
{
    size_t len = 1, o = 0;
    const cJSON *x;
    char *k;

    cJSON_ArrayForEach(x, msgs)
        len += strlen(s_of(x, "role")) + strlen(s_of(x, "content")) + 32;
    k = malloc(len);
    ck_assert_ptr_nonnull(k);
    k[0] = '\0';
    cJSON_ArrayForEach(x, msgs) {
        o += (size_t)snprintf(k + o, len - o, "%s\n%zu\n%s\n", s_of(x, "role"),
                              strlen(s_of(x, "content")), s_of(x, "content"));
        ck_assert_uint_lt(o, len);
    }
    return k;
}

static int by_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The messages traces re-render for every call are the bytes the server
 * received: the same calls, each with the same role and content strings
 * (compared as multisets; the log is in arrival order). */
/* Compare the calls of the traces with the request log of run r; returns
 * the repair turns seen. */
static size_t compare_calls(const run *r)
{
    cJSON *tr[MAXROWS];
    char **sent = calloc(MAXCALLS, sizeof *sent);
    char **made = calloc(MAXCALLS, sizeof *made);
    char *log, *p, *nl;
    size_t ns = 0, nm = 0, ntr, lens[2] = {0}, repairs = 0;

    ck_assert(sent && made);
    log = tu_read_file(r->log, NULL);
    ck_assert_ptr_nonnull(log);
    for (p = log; *p; p = nl + 1) {
        cJSON *j;

        nl = strchr(p, '\n');
        ck_assert_ptr_nonnull(nl);
        j = cJSON_ParseWithLength(p, (size_t)(nl - p));
        ck_assert_ptr_nonnull(j);
        ck_assert_uint_lt(ns, MAXCALLS);
        sent[ns++] = call_key(m(j, "messages"));
        cJSON_Delete(j);
    }
    ntr = export_lines(r, "traces", NULL, NULL, tr);
    for (size_t i = 0; i < ntr; i++) {
        const cJSON *rd, *x;

        cJSON_ArrayForEach(rd, m(tr[i], "rounds")) {
            cJSON_ArrayForEach(x, m(rd, "proposals"))
                if (cJSON_IsArray(m(x, "messages")))
                    made[nm++] = call_key(m(x, "messages"));
            cJSON_ArrayForEach(x, m(rd, "evaluations")) {
                if (cJSON_IsArray(m(x, "messages")))
                    made[nm++] = call_key(m(x, "messages"));
                if (cJSON_IsArray(m(x, "repair_messages"))) {
                    made[nm++] = call_key(m(x, "repair_messages"));
                    ck_assert(cJSON_IsTrue(m(x, "repair_messages_exact")));
                    repairs++;
                }
            }
        }
    }
    /* 36 questions, 3 seats, 2 calls per seat and round */
    ck_assert_uint_ge(ns, NQ * 6);
    ck_assert_uint_eq(nm, ns);
    qsort(sent, ns, sizeof *sent, by_str);
    qsort(made, nm, sizeof *made, by_str);
    for (size_t i = 0; i < ns; i++) {
        ck_assert_msg(strcmp(sent[i], made[i]) == 0,
                      "call %zu differs from what was sent", i);
        lens[0] += strlen(sent[i]);
        lens[1] += strlen(made[i]);
        free(sent[i]);
        free(made[i]);
    }
    ck_assert_uint_eq(lens[0], lens[1]);
    free(sent);
    free(made);
    free(log);
    free_rows(tr, ntr);
    return repairs;
}

START_TEST(rerendered_prompts_equal_the_sent_bytes)
{
    run r;

    run_demo(&r);
    /* the demo's evaluators always answer in JSON: no repair turn */
    ck_assert_uint_eq(compare_calls(&r), 0);
    run_free(&r);
}
END_TEST

/* The same with unusable evaluations (prose, an empty list), so repair
 * turns are sent and some fail again, and with SKIP proposals (seats
 * without a candidate, shown nothing of their own). */
START_TEST(rerendered_repairs_equal_the_sent_bytes)
{
    char *cfg = tu_path(tu_tmp, "sim.yaml"), text[2048];
    run r;

    snprintf(text, sizeof text,
             "kind: nsed-sim\nseed: 7\nquestions: %s\nmodels:\n"
             "  - {name: sim-alpha, family: alpha, p_gen: 0.55, p_ver: 0.75,"
             " faults: {rate_nonjson_eval: 0.3}}\n"
             "  - {name: sim-beta, family: beta, p_gen: 0.5, p_ver: 0.7,"
             " rate_skip: 0.2, faults: {rate_empty_eval: 0.25}}\n"
             "  - {name: sim-gamma, family: gamma, p_gen: 0.45, p_ver: 0.7}\n",
             DEMO_Q);
    tu_write_file(cfg, text, (size_t)-1);
    run_with(&r, cfg);
    ck_assert_uint_gt(compare_calls(&r), 5);
    run_free(&r);
    free(cfg);
}
END_TEST

/* The ids of an sft export with the given filter options, in order. */
static size_t sft_ids(const run *r, const char *x1, const char *x2, cJSON **res,
                      size_t nres, char ids[][32])
{
    cJSON *rows[MAXROWS];
    size_t n = export_lines(r, "sft", x1, x2, rows);

    for (size_t i = 0; i < n; i++) {
        const cJSON *msgs = m(rows[i], "messages");
        const cJSON *rec = by_id(res, nres, s_of(rows[i], "id"));

        ck_assert_ptr_nonnull(rec);
        snprintf(ids[i], 32, "%s", s_of(rows[i], "id"));
        ck_assert_int_eq(cJSON_GetArraySize(msgs), 3);
        ck_assert_str_eq(s_of(cJSON_GetArrayItem(msgs, 0), "role"), "system");
        ck_assert_str_eq(s_of(cJSON_GetArrayItem(msgs, 1), "role"), "user");
        ck_assert_str_eq(s_of(cJSON_GetArrayItem(msgs, 2), "role"),
                         "assistant");
        ck_assert_str_eq(s_of(cJSON_GetArrayItem(msgs, 2), "content"),
                         s_of(rec, "winning_response"));
    }
    free_rows(rows, n);
    return n;
}

enum sft_case { ALL, ONLY_CORRECT, MIN_CONV, BOTH };

/* What the filters keep, decided from the results export. */
static bool sft_expect(const cJSON *rec, enum sft_case c, double x)
{
    const cJSON *ok = m(rec, "correct");
    bool ref = cJSON_IsBool(ok);

    if (!cJSON_IsObject(m(rec, "winner")))
        return false;
    switch (c) {
    case ALL:
        return true;
    case ONLY_CORRECT:
        return cJSON_IsTrue(ok);
    case MIN_CONV:
        return ref || n_of(rec, "conviction") >= x;
    case BOTH:
        return cJSON_IsTrue(ok) || (!ref && n_of(rec, "conviction") >= x);
    }
    return false;
}

/* sft keeps exactly the questions the results export says it should:
 * all with a winner; --only-correct those judged correct;
 * --min-conviction X also those without a reference whose conviction is
 * at least X. */
START_TEST(sft_filters_select_the_expected_rows)
{
    static const struct {
        enum sft_case c;
        const char *x1, *x2;
    } cases[] = {
        {ALL, NULL, NULL},
        {ONLY_CORRECT, "--only-correct", NULL},
        {MIN_CONV, "--min-conviction=0.5", NULL},
        {BOTH, "--only-correct", "--min-conviction=0.5"},
    };
    cJSON *res[MAXROWS];
    char ids[MAXROWS][32];
    size_t nres, counts[4];
    run r;

    run_demo(&r);
    nres = results(&r, res);
    for (size_t k = 0; k < 4; k++) {
        size_t n = sft_ids(&r, cases[k].x1, cases[k].x2, res, nres, ids), e = 0;

        for (size_t i = 0; i < nres; i++) {
            if (!sft_expect(res[i], cases[k].c, 0.5))
                continue;
            ck_assert_uint_lt(e, n);
            ck_assert_str_eq(ids[e], s_of(res[i], "id"));
            e++;
        }
        ck_assert_uint_eq(n, e);
        counts[k] = n;
    }
    /* the filters bite: the demo's questions are not all right, and some
     * without a reference fall below 0.5 */
    ck_assert_uint_lt(counts[ONLY_CORRECT], counts[ALL]);
    ck_assert_uint_lt(counts[BOTH], counts[MIN_CONV]);
    ck_assert_uint_gt(counts[BOTH], counts[ONLY_CORRECT]);
    ck_assert_uint_lt(counts[MIN_CONV], counts[ALL]);
    free_rows(res, nres);
    run_free(&r);
}
END_TEST

/* An RFC 4180 reader: fields of rows into cells (malloc'd), returns the
 * number of rows; ncols[i] is row i's field count. */
static size_t csv_parse(const char *s, char *cells[][32], size_t *ncols)
{
    size_t row = 0, col = 0;

    while (*s) {
        char *f = malloc(strlen(s) + 1);
        size_t n = 0;

        ck_assert_ptr_nonnull(f);
        if (*s == '"') {
            for (s++;; s++) {
                ck_assert_msg(*s, "unterminated quoted field");
                if (*s == '"' && s[1] == '"') {
                    f[n++] = '"';
                    s++;
                } else if (*s == '"') {
                    s++;
                    break;
                } else {
                    f[n++] = *s;
                }
            }
        } else {
            while (*s && *s != ',' && *s != '\r' && *s != '\n') {
                ck_assert_msg(*s != '"', "quote inside an unquoted field");
                f[n++] = *s++;
            }
        }
        f[n] = '\0';
        ck_assert_uint_lt(col, 32);
        cells[row][col++] = f;
        if (*s == ',') {
            s++;
            continue;
        }
        ck_assert_msg(s[0] == '\r' && s[1] == '\n',
                      "row %zu ends without "
                      "CRLF",
                      row);
        s += 2;
        ncols[row++] = col;
        col = 0;
        ck_assert_uint_lt(row, MAXROWS + 1);
    }
    return row;
}

START_TEST(csv_parses_with_one_row_per_result)
{
    static char *cells[MAXROWS + 1][32];
    size_t ncols[MAXROWS + 1], nrows, nres, ci = 99, cf = 99, cw = 99, cc = 99;
    cJSON *res[MAXROWS];
    char *out = NULL, *err = NULL, *hash;
    run r;

    run_demo(&r);
    hash = manifest_hash(&r);
    nres = results(&r, res);
    ck_assert_int_eq(TU_NSED(NULL, &out, &err, "export", "--store", r.store,
                             "--format", "csv"),
                     0);
    nrows = csv_parse(out, cells, ncols);
    ck_assert_uint_eq(nrows, nres + 1);
    for (size_t c = 0; c < ncols[0]; c++) {
        if (strcmp(cells[0][c], "id") == 0)
            ci = c;
        if (strcmp(cells[0][c], "final_answer") == 0)
            cf = c;
        if (strcmp(cells[0][c], "winning_response") == 0)
            cw = c;
        if (strcmp(cells[0][c], "correct") == 0)
            cc = c;
    }
    ck_assert(ci < 32 && cf < 32 && cw < 32 && cc < 32);
    ck_assert_str_eq(cells[0][ncols[0] - 2], "workflow_hash");
    ck_assert_str_eq(cells[0][ncols[0] - 1], "run_id");
    for (size_t i = 1; i < nrows; i++) {
        const cJSON *rec = res[i - 1];
        const cJSON *ok = m(rec, "correct");

        ck_assert_uint_eq(ncols[i], ncols[0]);
        ck_assert_str_eq(cells[i][ci], s_of(rec, "id"));
        ck_assert_str_eq(cells[i][cf], s_of(rec, "final_answer")
                                           ? s_of(rec, "final_answer")
                                           : "");
        ck_assert_str_eq(cells[i][cw], s_of(rec, "winning_response")
                                           ? s_of(rec, "winning_response")
                                           : "");
        ck_assert_str_eq(cells[i][cc], cJSON_IsTrue(ok)    ? "true"
                                       : cJSON_IsFalse(ok) ? "false"
                                                           : "");
        ck_assert_str_eq(cells[i][ncols[0] - 2], hash);
        ck_assert_uint_eq(strlen(cells[i][ncols[0] - 1]), 16);
    }
    for (size_t i = 0; i < nrows; i++)
        for (size_t c = 0; c < ncols[i]; c++)
            free(cells[i][c]);
    /* Python's csv module reads the same shape */
    {
        char *path = tu_path(tu_tmp, "x.csv"), *po = NULL, *pe = NULL;
        char want[32];
        char *argv[] =
            {"/bin/sh", "-c",
             "command -v python3 >/dev/null || { echo skip; exit 0; }; "
             "python3 -c 'import csv,sys; "
             "r=list(csv.reader(open(sys.argv[1],newline=\"\"))); "
             "assert len(set(map(len,r)))==1; print(len(r)-1)' \"$0\"",
             path, NULL};

        tu_write_file(path, out, (size_t)-1);
        ck_assert_int_eq(tu_run(argv, &po, &pe), 0);
        snprintf(want, sizeof want, "%zu\n", nres);
        if (strcmp(po, "skip\n") != 0)
            ck_assert_str_eq(po, want);
        free(po);
        free(pe);
        free(path);
    }
    free(out);
    free(err);
    free(hash);
    free_rows(res, nres);
    run_free(&r);
}
END_TEST

/* Each format loads with pandas (read_json lines=True; read_csv), with the
 * row counts of the exports; skipped without python3-pandas. */
START_TEST(formats_load_with_pandas)
{
    static const char *const fmts[] = {"results", "traces", "sft", "dpo",
                                       "csv"};
    /* Debian's python3 first: a python3 of pyenv or a venv earlier on PATH
     * may lack the python3-pandas package */
    char *probe[] = {"/bin/sh", "-c",
                     "PY=/usr/bin/python3; [ -x $PY ] || PY=python3; "
                     "$PY -c 'import pandas'",
                     NULL};
    run r;

    if (tu_run(probe, NULL, NULL) != 0) {
        fprintf(stderr, "test_exports: python3-pandas missing, pandas check "
                        "skipped\n");
        return;
    }
    run_demo(&r);
    for (size_t k = 0; k < 5; k++) {
        char *path = tu_path(tu_tmp, fmts[k]), *po = NULL, *pe = NULL;
        char *out = NULL, *err = NULL, script[512], want[32];
        size_t lines = 0;
        char *argv[] = {"/bin/sh", "-c", script, NULL};

        ck_assert_int_eq(TU_NSED(NULL, &out, &err, "export", "--store", r.store,
                                 "--format", fmts[k], "-o", path),
                         0);
        free(out);
        free(err);
        out = tu_read_file(path, NULL);
        for (char *p = out; *p; p++)
            lines += *p == '\n';
        free(out);
        snprintf(script, sizeof script,
                 "PY=/usr/bin/python3; [ -x $PY ] || PY=python3; "
                 "$PY -c 'import pandas,sys; "
                 "d=pandas.read_csv(sys.argv[1]) if sys.argv[2]==\"csv\" else "
                 "pandas.read_json(sys.argv[1], lines=True); "
                 "print(len(d))' '%s' '%s'",
                 path, fmts[k]);
        ck_assert_int_eq(tu_run(argv, &po, &pe), 0);
        /* csv: the header line is not a row (no field of the demo holds
         * a line break) */
        snprintf(want, sizeof want, "%zu\n",
                 strcmp(fmts[k], "csv") == 0 ? lines - 1 : lines);
        ck_assert_msg(strcmp(po, want) == 0, "%s: pandas read %s (%s)", fmts[k],
                      po, pe);
        free(po);
        free(pe);
        free(path);
    }
    run_free(&r);
}
END_TEST

/* Usage errors: an unknown format, filters without sft/dpo. */
START_TEST(bad_options_are_usage_errors)
{
    char *out = NULL, *err = NULL;

    ck_assert_int_eq(TU_NSED(NULL, &out, &err, "export", "--store", tu_tmp,
                             "--format", "parquet"),
                     2);
    ck_assert(tu_contains(err, "--format must be"));
    free(out);
    free(err);
    ck_assert_int_eq(TU_NSED(NULL, &out, &err, "export", "--store", tu_tmp,
                             "--only-correct"),
                     2);
    free(out);
    free(err);
    ck_assert_int_eq(TU_NSED(NULL, &out, &err, "export", "--store", tu_tmp,
                             "--format", "sft", "--min-conviction", "1.5"),
                     2);
    free(out);
    free(err);
}
END_TEST

Suite *tu_suite(void)
{
    Suite *s = suite_create("exports");
    TCase *t = tcase_create("demo");

    tcase_add_checked_fixture(t, tu_tmp_setup, tu_tmp_teardown);
    tcase_set_timeout(t, 180);
    tcase_add_test(t, dpo_chosen_is_the_recorded_winner);
    tcase_add_test(t, traces_match_the_stored_rounds);
    tcase_add_test(t, rerendered_prompts_equal_the_sent_bytes);
    tcase_add_test(t, rerendered_repairs_equal_the_sent_bytes);
    tcase_add_test(t, sft_filters_select_the_expected_rows);
    tcase_add_test(t, csv_parses_with_one_row_per_result);
    tcase_add_test(t, formats_load_with_pandas);
    tcase_add_test(t, bad_options_are_usage_errors);
    suite_add_tcase(s, t);
    return s;
}
