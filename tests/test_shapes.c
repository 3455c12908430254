/* test_shapes.c -- other datasets' shapes in (issue 13, item 2): field
 * mappings with reference extractors (GSM8K "#### N", MATH \boxed{}, an
 * MMLU choice index), integer ids, JSON-array files, every bad line
 * reported up to a cap, and runs on nsed-sim scored from what the test
 * itself expects. Every file is made by the test. */
#include "pipeline/questions/questions.h"
#include "store/store.h"
#include "testutil.h"

#include <check.h>
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEMO_WF NSED_SOURCE_DIR "/workflows/demo.yaml"
#define DEMO_SIM NSED_SOURCE_DIR "/tests/sim/configs/demo-sim.yaml"

typedef struct get_ctx {
    const char *id;
    question q;
} get_ctx;

static int get_txn(store_txn *txn, void *arg, nsed_err *err)
{
    get_ctx *g = arg;

    return questions_get(txn, g->id, &g->q, err);
}

/* The stored question id of store dir (the test releases it). */
static question stored(const char *dir, const char *id)
{
    store *s = NULL;
    store_opts o = {STORE_RDONLY, 0};
    nsed_err err = {0};
    get_ctx g = {id, {0}};

    ck_assert_msg(store_open(dir, &o, &s, &err) == 0, "%s", err.msg);
    ck_assert_msg(store_read(s, get_txn, &g, &err) == 0, "%s", err.msg);
    store_close(s);
    return g.q;
}

static size_t stored_count(const char *dir)
{
    store *s = NULL;
    store_opts o = {STORE_RDONLY, 0};
    nsed_err err = {0};
    size_t n = 0;

    if (store_open(dir, &o, &s, &err) != 0)
        return 0;
    ck_assert_int_eq(questions_total(s, &n, &err), 0);
    store_close(s);
    return n;
}

static void write_text(const char *path, const char *text)
{
    tu_write_file(path, text, strlen(text));
}

/* Append one JSON value to a file as a line. */
static void append_json(FILE *f, cJSON *o)
{
    char *t = cJSON_PrintUnformatted(o);

    ck_assert_ptr_nonnull(t);
    fprintf(f, "%s\n", t);
    free(t);
    cJSON_Delete(o);
}

/* ---- GSM8K ------------------------------------------------------------ */

#define NG 16

/* The i-th GSM8K-shaped question's reference, chosen by the test. */
static long gsm_ref(int i)
{
    return 17L * (i + 3) + (i % 3) * 1000;
}

/* A GSM8K-shaped file (rationale ending "#### N", thousands separators
 * on the bigger ones) at path, and the native file nsed-sim learns the
 * references from (question text -> reference) at simpath. */
static void make_gsm8k(const char *path, const char *simpath)
{
    FILE *f = fopen(path, "w"), *g = fopen(simpath, "w");

    ck_assert_ptr_nonnull(f);
    ck_assert_ptr_nonnull(g);
    for (int i = 0; i < NG; i++) {
        char q[128], a[256], ref[32], shown[32];
        long r = gsm_ref(i);
        cJSON *o = cJSON_CreateObject();

        snprintf(q, sizeof q,
                 "Sam has %d boxes of %d pens and %ld extra. "
                 "How many pens?",
                 i + 3, 17, r - 17L * (i + 3));
        snprintf(ref, sizeof ref, "%ld", r);
        if (r >= 1000)
            snprintf(shown, sizeof shown, "%ld,%03ld", r / 1000, r % 1000);
        else
            snprintf(shown, sizeof shown, "%ld", r);
        snprintf(a, sizeof a,
                 "He has %d*17 = <<%d*17=%d>>%d pens in boxes.\nSo %s in "
                 "all.\n#### %s",
                 i + 3, i + 3, 17 * (i + 3), 17 * (i + 3), shown, shown);
        cJSON_AddStringToObject(o, "question", q);
        cJSON_AddStringToObject(o, "answer", a);
        append_json(f, o);
        o = cJSON_CreateObject();
        snprintf(a, sizeof a, "g%d", i);
        cJSON_AddStringToObject(o, "id", a);
        cJSON_AddStringToObject(o, "question", q);
        cJSON_AddStringToObject(o, "answer", ref);
        append_json(g, o);
    }
    fclose(f);
    fclose(g);
}

START_TEST(gsm8k_references_extracted)
{
    char *q = tu_path(tu_tmp, "gsm8k.jsonl"), *sq = tu_path(tu_tmp, "s.jsonl");
    char *dir = tu_path(tu_tmp, "store"), *out = NULL, *err = NULL;

    make_gsm8k(q, sq);
    ck_assert_msg(TU_NSED(NULL, &out, &err, "ingest", DEMO_WF, "--questions", q,
                          "--store", dir, "--fields",
                          "id=@line,question=question,answer=answer") == 0,
                  "ingest: %s", err);
    ck_assert_uint_eq(stored_count(dir), NG);
    for (int i = 0; i < NG; i++) {
        char id[16], ref[32];
        question got;

        snprintf(id, sizeof id, "%d", i + 1); /* id=@line */
        snprintf(ref, sizeof ref, "%ld", gsm_ref(i));
        got = stored(dir, id);
        ck_assert_str_eq(got.answer, ref); /* "#### 1,020" -> "1020" */
        ck_assert(tu_contains(got.text, "How many pens?"));
        ck_assert_uint_eq(got.ntags, 0);
        question_release(&got);
    }
    free(out);
    free(err);
    free(q);
    free(sq);
    free(dir);
}
END_TEST

/* Count export rows: with a reference, correct, and correct by the test's
 * own reckoning (the final answer read as a number equals its table). */
typedef struct tally {
    size_t rows, with_ref, correct, correct_by_test;
} tally;

static tally count_export(const char *dir, int letters)
{
    char *rows = tu_nsed_export(dir), *line, *nl;
    tally t = {0};

    for (line = rows; *line; line = nl + 1) {
        cJSON *row, *c, *fa, *ref;

        nl = strchr(line, '\n');
        ck_assert_ptr_nonnull(nl);
        *nl = '\0';
        row = cJSON_Parse(line);
        ck_assert_ptr_nonnull(row);
        t.rows++;
        c = cJSON_GetObjectItem(row, "correct");
        fa = cJSON_GetObjectItem(row, "final_answer");
        ref = cJSON_GetObjectItem(row, "reference");
        if (cJSON_IsString(ref))
            t.with_ref++;
        if (cJSON_IsTrue(c))
            t.correct++;
        if (cJSON_IsString(fa) && cJSON_IsString(ref)) {
            if (letters) {
                if (strlen(fa->valuestring) == 1 &&
                    (fa->valuestring[0] | 0x20) == (ref->valuestring[0] | 0x20))
                    t.correct_by_test++;
            } else if (strtod(fa->valuestring, NULL) ==
                       strtod(ref->valuestring, NULL)) {
                t.correct_by_test++;
            }
        }
        cJSON_Delete(row);
    }
    free(rows);
    return t;
}

START_TEST(gsm8k_runs_and_scores)
{
    char *q = tu_path(tu_tmp, "gsm8k.jsonl"), *sq = tu_path(tu_tmp, "s.jsonl");
    char *dir = tu_path(tu_tmp, "store"), *out = NULL, *err = NULL;
    const char *extra[] = {"--questions", sq, NULL};
    tu_sim sim;
    tally t;
    cJSON *st;

    make_gsm8k(q, sq);
    tu_sim_start(&sim, DEMO_SIM, extra, NULL);
    ck_assert_msg(TU_NSED(sim.url, &out, &err, "run", DEMO_WF, "--questions", q,
                          "--store", dir, "--quiet", "--fields",
                          "id=@line,question=question,answer=answer,"
                          "reference=gsm8k") == 0,
                  "run: %s", err);
    tu_sim_stop(&sim);
    t = count_export(dir, 0);
    ck_assert_uint_eq(t.rows, NG);
    ck_assert_uint_eq(t.with_ref, NG);
    /* the issue: the rationale was the reference and this was 0% */
    ck_assert_uint_gt(t.correct, 0);
    ck_assert_uint_eq(t.correct, t.correct_by_test);
    st = tu_nsed_status(dir);
    ck_assert_double_eq(tu_jnum(st, "accuracy", "nsed_correct"),
                        (double)t.correct_by_test);
    ck_assert_double_eq(tu_jnum(st, "accuracy", "with_reference"), NG);
    cJSON_Delete(st);
    free(out);
    free(err);
    free(q);
    free(sq);
    free(dir);
}
END_TEST

/* ---- MMLU and MATH ------------------------------------------------------ */

#define NM 12

static void make_mmlu(const char *path, const char *simpath)
{
    FILE *f = fopen(path, "w"), *g = fopen(simpath, "w");

    ck_assert_ptr_nonnull(f);
    ck_assert_ptr_nonnull(g);
    for (int i = 0; i < NM; i++) {
        char q[128], text[512], c[4][16], id[16];
        cJSON *o = cJSON_CreateObject(), *ch = cJSON_CreateArray();
        int right = i % 4;

        snprintf(q, sizeof q, "Which number is %d squared?", i + 2);
        for (int k = 0; k < 4; k++) {
            snprintf(c[k], sizeof c[k], "%d",
                     (i + 2) * (i + 2) + (k - right) * 3);
            cJSON_AddItemToArray(ch, cJSON_CreateString(c[k]));
        }
        cJSON_AddStringToObject(o, "question", q);
        cJSON_AddItemToObject(o, "choices", ch);
        cJSON_AddNumberToObject(o, "answer", right);
        cJSON_AddStringToObject(o, "subject", i % 2 ? "algebra" : "arith");
        append_json(f, o);
        /* the documented rendering: QUESTION, a blank line, "A. ..." */
        snprintf(text, sizeof text, "%s\n\nA. %s\nB. %s\nC. %s\nD. %s", q, c[0],
                 c[1], c[2], c[3]);
        o = cJSON_CreateObject();
        snprintf(id, sizeof id, "m%d", i);
        cJSON_AddStringToObject(o, "id", id);
        cJSON_AddStringToObject(o, "question", text);
        id[0] = (char)('A' + right);
        id[1] = '\0';
        cJSON_AddStringToObject(o, "answer", id);
        append_json(g, o);
    }
    fclose(f);
    fclose(g);
}

START_TEST(mmlu_choices_and_index)
{
    char *q = tu_path(tu_tmp, "mmlu.jsonl"), *sq = tu_path(tu_tmp, "s.jsonl");
    char *dir = tu_path(tu_tmp, "store"), *out = NULL, *err = NULL;
    char *simq;

    make_mmlu(q, sq);
    ck_assert_msg(TU_NSED(NULL, &out, &err, "ingest", DEMO_WF, "--questions", q,
                          "--store", dir, "--fields",
                          "id=@line,question=question,choices=choices,"
                          "answer=answer,tags=subject") == 0,
                  "ingest: %s", err);
    simq = tu_read_file(sq, NULL);
    for (int i = 0; i < NM; i++) {
        char id[16], letter[2] = {(char)('A' + i % 4), 0};
        question got;
        char *esc;
        cJSON *s;

        snprintf(id, sizeof id, "%d", i + 1);
        got = stored(dir, id);
        ck_assert_str_eq(got.answer, letter); /* index 2 -> "C" */
        ck_assert_uint_eq(got.ntags, 1);
        ck_assert_str_eq(got.tags[0], i % 2 ? "algebra" : "arith");
        /* the text is the test's own rendering, byte for byte */
        s = cJSON_CreateString(got.text);
        esc = cJSON_PrintUnformatted(s);
        ck_assert_msg(tu_contains(simq, esc), "rendered: %s", got.text);
        free(esc);
        cJSON_Delete(s);
        question_release(&got);
    }
    free(simq);
    free(out);
    free(err);
    free(q);
    free(sq);
    free(dir);
}
END_TEST

START_TEST(mapping_in_the_workflow)
{
    char *q = tu_path(tu_tmp, "mmlu.jsonl"), *sq = tu_path(tu_tmp, "s.jsonl");
    char *wf = tu_path(tu_tmp, "mapped.yaml"), *demo;
    char *dir = tu_path(tu_tmp, "store"), *out = NULL, *err = NULL;
    question got;
    FILE *f;

    make_mmlu(q, sq);
    demo = tu_read_file(DEMO_WF, NULL);
    f = fopen(wf, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f,
            "%s\nquestions:\n  id: '@line'\n  choices: choices\n"
            "  tags: subject\n  reference: choice_index\n",
            demo);
    fclose(f);
    free(demo);
    ck_assert_msg(TU_NSED(NULL, &out, &err, "ingest", wf, "--questions", q,
                          "--store", dir) == 0,
                  "ingest: %s", err);
    got = stored(dir, "3");
    ck_assert_str_eq(got.answer, "C"); /* index 2 */
    ck_assert_str_eq(got.tags[0], "arith");
    ck_assert(tu_contains(got.text, "\n\nA. "));
    question_release(&got);
    free(out);
    free(err);
    out = err = NULL;
    /* a bad extractor name is a load error naming the key */
    f = fopen(wf, "a");
    ck_assert_ptr_nonnull(f);
    fclose(f);
    demo = tu_read_file(DEMO_WF, NULL);
    f = fopen(wf, "w");
    fprintf(f, "%s\nquestions:\n  reference: hashes\n", demo);
    fclose(f);
    free(demo);
    ck_assert_int_eq(TU_NSED(NULL, &out, &err, "validate", wf), 2);
    ck_assert_msg(tu_contains(err, "reference"), "%s", err);
    free(out);
    free(err);
    free(q);
    free(sq);
    free(wf);
    free(dir);
}
END_TEST

START_TEST(mmlu_runs_and_scores)
{
    char *q = tu_path(tu_tmp, "mmlu.jsonl"), *sq = tu_path(tu_tmp, "s.jsonl");
    char *dir = tu_path(tu_tmp, "store"), *out = NULL, *err = NULL;
    const char *extra[] = {"--questions", sq, NULL};
    tu_sim sim;
    tally t;
    cJSON *st;

    make_mmlu(q, sq);
    tu_sim_start(&sim, DEMO_SIM, extra, NULL);
    ck_assert_msg(TU_NSED(sim.url, &out, &err, "run", DEMO_WF, "--questions", q,
                          "--store", dir, "--quiet", "--fields",
                          "id=@line,choices=choices,reference=choice_index") ==
                      0,
                  "run: %s", err);
    tu_sim_stop(&sim);
    t = count_export(dir, 1);
    ck_assert_uint_eq(t.rows, NM);
    ck_assert_uint_eq(t.with_ref, NM);
    ck_assert_uint_gt(t.correct, 0);
    ck_assert_uint_eq(t.correct, t.correct_by_test);
    st = tu_nsed_status(dir);
    ck_assert_double_eq(tu_jnum(st, "accuracy", "nsed_correct"),
                        (double)t.correct_by_test);
    cJSON_Delete(st);
    free(out);
    free(err);
    free(q);
    free(sq);
    free(dir);
}
END_TEST

START_TEST(math_boxed_and_integer_ids)
{
    char *q = tu_path(tu_tmp, "math.jsonl");
    char *dir = tu_path(tu_tmp, "store"), *out = NULL, *err = NULL;
    question got;

    write_text(q, "{\"idx\": 7, \"problem\": \"Half of one?\", \"solution\": "
                  "\"We get $\\\\boxed{\\\\frac12}$.\", \"level\": 2}\n"
                  "{\"idx\": 8, \"problem\": \"Nested?\", \"solution\": "
                  "\"first \\\\boxed{1}, then \\\\boxed{\\\\sqrt{x^{2}}}\"}\n");
    ck_assert_msg(TU_NSED(NULL, &out, &err, "ingest", DEMO_WF, "--questions", q,
                          "--store", dir, "--fields",
                          "id=idx,question=problem,answer=solution,"
                          "reference=boxed") == 0,
                  "ingest: %s", err);
    got = stored(dir, "7"); /* an integer id is its decimal text */
    ck_assert_str_eq(got.text, "Half of one?");
    ck_assert_str_eq(got.answer, "\\frac12");
    question_release(&got);
    got = stored(dir, "8");
    ck_assert_str_eq(got.answer, "\\sqrt{x^{2}}"); /* the last, balanced */
    question_release(&got);
    free(out);
    free(err);
    free(q);
    free(dir);
}
END_TEST

START_TEST(native_integer_ids)
{
    char *q = tu_path(tu_tmp, "n.jsonl"), *b = tu_path(tu_tmp, "b.jsonl");
    char *dir = tu_path(tu_tmp, "store"), *out = NULL, *err = NULL;
    question got;

    write_text(q, "{\"id\": 42, \"question\": \"x?\", \"answer\": 1}\n"
                  "{\"id\": -3, \"question\": \"y?\"}\n");
    ck_assert_msg(TU_NSED(NULL, &out, &err, "ingest", DEMO_WF, "--questions", q,
                          "--store", dir) == 0,
                  "ingest: %s", err);
    got = stored(dir, "42");
    ck_assert_str_eq(got.text, "x?");
    question_release(&got);
    got = stored(dir, "-3");
    question_release(&got);
    free(out);
    free(err);
    out = err = NULL;
    write_text(b, "{\"id\": 4.5, \"question\": \"x?\"}\n");
    ck_assert_int_eq(TU_NSED(NULL, &out, &err, "validate", b), 2);
    ck_assert_msg(tu_contains(err, "b.jsonl:1:2: \"id\" must be a string or "
                                   "an integer"),
                  "%s", err);
    free(out);
    free(err);
    free(q);
    free(b);
    free(dir);
}
END_TEST

START_TEST(json_array_file)
{
    char *q = tu_path(tu_tmp, "set.json"), *b = tu_path(tu_tmp, "bad.json");
    char *dir = tu_path(tu_tmp, "store"), *out = NULL, *err = NULL;
    question got;

    /* pretty-printed, as json.dump(indent=2) writes it */
    write_text(q, "[\n  {\n    \"id\": \"a\",\n    \"question\": \"one?\",\n"
                  "    \"answer\": 1\n  },\n  {\n    \"id\": 2,\n"
                  "    \"question\": \"two, [really]?\"\n  }\n]\n");
    ck_assert_msg(TU_NSED(NULL, &out, &err, "validate", q) == 0, "%s", err);
    ck_assert(tu_contains(out, "ok, 2 questions"));
    free(out);
    free(err);
    out = err = NULL;
    ck_assert_msg(TU_NSED(NULL, &out, &err, "ingest", DEMO_WF, "--questions", q,
                          "--store", dir) == 0,
                  "ingest: %s", err);
    got = stored(dir, "2");
    ck_assert_str_eq(got.text, "two, [really]?");
    question_release(&got);
    got = stored(dir, "a");
    ck_assert_str_eq(got.answer, "1");
    question_release(&got);
    free(out);
    free(err);
    out = err = NULL;
    /* an error names the line where the element starts */
    write_text(b, "[\n  {\"id\": \"a\", \"question\": \"one?\"},\n"
                  "  {\"id\": \"b\"}\n]\n");
    ck_assert_int_eq(TU_NSED(NULL, &out, &err, "validate", b), 2);
    ck_assert_msg(tu_contains(err, "bad.json:3: missing \"question\""), "%s",
                  err);
    free(out);
    free(err);
    out = err = NULL;
    /* the workflow/question file confusion gets a clear word */
    ck_assert_int_eq(TU_NSED(NULL, &out, &err, "ingest", q, "--questions",
                             DEMO_WF, "--store", dir),
                     2);
    ck_assert_msg(tu_contains(err, "is a question file, not a workflow"), "%s",
                  err);
    free(out);
    free(err);
    free(q);
    free(b);
    free(dir);
}
END_TEST

START_TEST(all_errors_up_to_a_cap)
{
    char *q = tu_path(tu_tmp, "bad.jsonl");
    char *dir = tu_path(tu_tmp, "store"), *out = NULL, *err = NULL;
    FILE *f = fopen(q, "w");
    size_t nlines = 0;

    ck_assert_ptr_nonnull(f);
    /* 30 bad lines among good ones: good on odd lines, bad on even */
    for (int i = 0; i < 60; i++)
        if (i % 2)
            fprintf(f, "{\"problem\": \"p%d\"}\n", i); /* no "question" */
        else
            fprintf(f, "{\"question\": \"q%d\"}\n", i);
    fclose(f);
    ck_assert_int_eq(TU_NSED(NULL, &out, &err, "ingest", DEMO_WF, "--questions",
                             q, "--store", dir, "--fields", "id=@line"),
                     2);
    /* the first 20 bad lines, with their numbers: 2, 4, ..., 40 */
    for (int k = 1; k <= 30; k++) {
        char want[64];

        snprintf(want, sizeof want,
                 "bad.jsonl:%d: field \"question\": "
                 "missing",
                 2 * k);
        if (k <= 20)
            ck_assert_msg(tu_contains(err, want), "no %s in %s", want, err);
        else
            ck_assert_msg(!tu_contains(err, want), "%s shown", want);
    }
    for (const char *p = err; (p = strstr(p, "nsed ingest: ")); p++)
        nlines++;
    ck_assert_uint_eq(nlines, 20);
    ck_assert_msg(tu_contains(err, "30 bad lines: the first 20 are shown "
                                   "above, and 10 more"),
                  "%s", err);
    /* atomic: nothing went in */
    ck_assert_uint_eq(stored_count(dir), 0);
    free(out);
    free(err);
    free(q);
    free(dir);
}
END_TEST

/* ---- warnings at run start ------------------------------------------- */

#define NW 24

/* NW native questions whose references are GSM8K rationales (the shape
 * that used to score 0% in silence), and the sim's file. */
static void make_rationales(const char *path, const char *simpath)
{
    FILE *f = fopen(path, "w"), *g = fopen(simpath, "w");

    ck_assert_ptr_nonnull(f);
    ck_assert_ptr_nonnull(g);
    for (int i = 0; i < NW; i++) {
        char id[16], q[96], a[128];
        cJSON *o = cJSON_CreateObject();

        snprintf(id, sizeof id, "r%d", i);
        snprintf(q, sizeof q, "What is %d plus %d?", i, 2 * i + 1);
        snprintf(a, sizeof a, "%d + %d = <<%d+%d=%d>>%d.\n#### %d", i,
                 2 * i + 1, i, 2 * i + 1, 3 * i + 1, 3 * i + 1, 3 * i + 1);
        cJSON_AddStringToObject(o, "id", id);
        cJSON_AddStringToObject(o, "question", q);
        cJSON_AddStringToObject(o, "answer", a);
        append_json(f, o);
        o = cJSON_CreateObject();
        snprintf(a, sizeof a, "%d", 3 * i + 1);
        cJSON_AddStringToObject(o, "id", id);
        cJSON_AddStringToObject(o, "question", q);
        cJSON_AddStringToObject(o, "answer", a);
        append_json(g, o);
    }
    fclose(f);
    fclose(g);
}

START_TEST(rationale_warning_before_progress)
{
    char *q = tu_path(tu_tmp, "r.jsonl"), *sq = tu_path(tu_tmp, "s.jsonl");
    char *dir = tu_path(tu_tmp, "store"), *out = NULL, *err = NULL;
    const char *extra[] = {"--questions", sq, NULL};
    const char *w, *p, *sum;
    tu_sim sim;

    make_rationales(q, sq);
    tu_sim_start(&sim, DEMO_SIM, extra, NULL);
    ck_assert_msg(TU_NSED(sim.url, &out, &err, "run", DEMO_WF, "--questions", q,
                          "--store", dir, "--limit", "3") == 0,
                  "run: %s", err);
    tu_sim_stop(&sim);
    w = strstr(err, "nsed run: warning: 24 of 24 references look like "
                    "rationales");
    ck_assert_msg(w != NULL, "%s", err);
    ck_assert_msg(tu_contains(w, "question \"r0\": it holds \"####\""), "%s",
                  err);
    p = strstr(err, "progress:");
    sum = strstr(err, "nsed run: 3 questions:");
    ck_assert_ptr_nonnull(p);
    ck_assert_ptr_nonnull(sum);
    ck_assert_msg(w < p && w < sum, "warning after progress: %s", err);
    free(out);
    free(err);
    out = err = NULL;
    /* with the extractor, no warning (and the references are numbers) */
    tu_sim_start(&sim, DEMO_SIM, extra, NULL);
    free(dir);
    dir = tu_path(tu_tmp, "store2");
    ck_assert_msg(TU_NSED(sim.url, &out, &err, "run", DEMO_WF, "--questions", q,
                          "--store", dir, "--limit", "3", "--fields",
                          "reference=gsm8k") == 0,
                  "run: %s", err);
    tu_sim_stop(&sim);
    ck_assert_msg(!tu_contains(err, "warning"), "%s", err);
    free(out);
    free(err);
    free(q);
    free(sq);
    free(dir);
}
END_TEST

START_TEST(no_answer_warning_after_first_20)
{
    char *q = tu_path(tu_tmp, "r.jsonl"), *sq = tu_path(tu_tmp, "s.jsonl");
    char *wf = tu_path(tu_tmp, "never.yaml"), *demo, *at;
    char *dir = tu_path(tu_tmp, "store"), *out = NULL, *err = NULL;
    const char *extra[] = {"--questions", sq, NULL};
    static const char boxed[] = "  extract: boxed ";
    const char *w, *sum;
    FILE *f;
    tu_sim sim;

    make_rationales(q, sq);
    /* the demo's workflow with a pattern no reply matches */
    demo = tu_read_file(DEMO_WF, NULL);
    at = strstr(demo, boxed);
    ck_assert_ptr_nonnull(at);
    f = fopen(wf, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, "%.*s  extract: regex\n  pattern: 'NEVER:(\\d+)'\n#",
            (int)(at - demo), demo);
    fputs(at + sizeof boxed - 1, f);
    fclose(f);
    free(demo);
    tu_sim_start(&sim, DEMO_SIM, extra, NULL);
    /* exit status: every question fails without an answer */
    TU_NSED(sim.url, &out, &err, "run", wf, "--questions", q, "--store", dir,
            "--fields", "reference=gsm8k", "--max-active", "1");
    tu_sim_stop(&sim);
    w = strstr(err, "warning: none of the first 20 finished questions has "
                    "an extracted answer");
    ck_assert_msg(w != NULL, "%s", err);
    ck_assert(tu_contains(w, "NEVER:(\\d+)"));
    ck_assert_msg(strstr(w + 1, "warning: none of") == NULL, "twice: %s", err);
    sum = strstr(err, "nsed run: 24 questions:");
    ck_assert_msg(sum && w < sum, "%s", err);
    free(out);
    free(err);
    free(q);
    free(sq);
    free(wf);
    free(dir);
}
END_TEST

Suite *tu_suite(void)
{
    Suite *s = suite_create("shapes");
    TCase *t;

    t = tcase_create("ingest");
    tcase_add_checked_fixture(t, tu_tmp_setup, tu_tmp_teardown);
    tcase_add_test(t, gsm8k_references_extracted);
    tcase_add_test(t, mmlu_choices_and_index);
    tcase_add_test(t, math_boxed_and_integer_ids);
    tcase_add_test(t, mapping_in_the_workflow);
    tcase_add_test(t, native_integer_ids);
    tcase_add_test(t, json_array_file);
    tcase_add_test(t, all_errors_up_to_a_cap);
    suite_add_tcase(s, t);
    t = tcase_create("run");
    tcase_add_checked_fixture(t, tu_tmp_setup, tu_tmp_teardown);
    tcase_set_timeout(t, 120);
    tcase_add_test(t, gsm8k_runs_and_scores);
    tcase_add_test(t, mmlu_runs_and_scores);
    tcase_add_test(t, rationale_warning_before_progress);
    tcase_add_test(t, no_answer_warning_after_first_20);
    suite_add_tcase(s, t);
    return s;
}
