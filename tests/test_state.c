/* Tests for the per-question state (stages/state.c, state_json.c): exact
 * JSON round trips at every stage of a multi-round question, a run that is
 * checkpointed and reloaded after every stage ending exactly like one that
 * is not, per-round JSON, and refusal of damaged or foreign JSON. */
#include "stages/selfcons.h"
#include "stages/stage.h"
#include "stages/state.h"
#include "testutil.h"
#include "testwf.h"

#include <cjson/cJSON.h>
#include <check.h>
#include <float.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char base_yaml[] =
    "name: t\nversion: 1\nseed: 99\n"
    "models:\n"
    "  - {id: m0, endpoint: 'http://127.0.0.1:9/v1', model: s0, family: f0}\n"
    "  - {id: m1, endpoint: 'http://127.0.0.1:9/v1', model: s1, family: f1, "
    "structured_output: true}\n"
    "  - {id: m2, endpoint: 'http://127.0.0.1:9/v1', model: s2, family: f2}\n"
    "teams:\n  main:\n    roles:\n"
    "      - {name: solver, count: 3, models: [m0, m1, m2], persona: \"Say "
    "\\\"why\\\".\"}\n"
    "rounds: {min: 2, max: 4, stop: {stable_answer: 2}}\n"
    "answer: {extract: boxed, compare: numeric}\n";

static workflow *load_wf(void)
{
    return tu_load_workflow(base_yaml, NULL);
}

static state *new_state(const workflow *wf)
{
    state_seat_spec seats[3] = {{0, "solver", "Say \"why\"."},
                                {1, "solver", "Say \"why\"."},
                                {2, "solver", NULL}};
    const char *tags[] = {"arith", "easy"};
    state_question q = {"q-\xc3\xa9", "What is 2^10?\nShow work.", "1024",
                        tags, 2};
    state *st = NULL;
    nsed_err e = {0};

    ck_assert_int_eq(state_new(wf, &q, seats, 3, &st, &e), 0);
    return st;
}

/* A deterministic fake panel: seat 2 skips round 0; seat 1 answers 1000
 * in round 0 and 1024 after; seat 0's first evaluation is prose (so it
 * is repaired); weights depend on seat and round; usage has fractions. */
static char *fake_reply(const state *st, const stage_request *q)
{
    const state_round *r = st->cur;
    buf b;

    buf_init(&b, 1 << 20);
    switch (q->kind) {
    case STAGE_KIND_PROPOSE:
        if (q->seat == 2 && q->round == 0)
            ck_assert_int_eq(buf_adds(&b, "SKIP"), 0);
        else
            ck_assert_int_eq(
                buf_printf(&b, "Seat %zu, round %d: 2^10 = %s. \\boxed{%s}",
                           q->seat, q->round,
                           q->seat == 1 && q->round == 0 ? "1000" : "1024",
                           q->seat == 1 && q->round == 0 ? "1000" : "1024"),
                0);
        break;
    case STAGE_KIND_SELFCONS:
        ck_assert_int_eq(buf_printf(&b, "\\boxed{%d}",
                                    q->sample % 3 ? 1024 : 7),
                         0);
        break;
    case STAGE_KIND_EVALUATE:
        if (q->seat == 0 && q->round == 0) {
            ck_assert_int_eq(buf_adds(&b, "I like the first one."), 0);
            break;
        }
        /* fall through */
    case STAGE_KIND_REPAIR:
        ck_assert_int_eq(buf_adds(&b, "```json\n{\"evaluations\":["), 0);
        for (size_t j = 0; j < r->ncand; j++) {
            char l[TEXT_LABEL_MAX];
            const char *ans = r->proposals[r->cands[j].seat].answer;
            int w = ans && !strcmp(ans, "1024") ? 40 + 7 * (int)q->seat
                                                : -35 - (int)q->round;

            text_label(j, l);
            ck_assert_int_eq(
                buf_printf(&b,
                           "%s{\"candidate\":\"%s\",\"weight\":%d,"
                           "\"critique\":\"seat %zu says \\\"%s\\\"\\n\"}",
                           j ? "," : "", l, w, q->seat, ans ? ans : "none"),
                0);
        }
        ck_assert_int_eq(buf_adds(&b, "]}\n```"), 0);
        break;
    }
    return buf_detach(&b, NULL);
}

static char *to_json(const state *st)
{
    char *j = NULL;

    ck_assert_int_eq(state_to_json(st, &j), 0);
    return j;
}

/* Serialize, parse and serialize again: the text must not change. */
static state *round_trip(state *st, const workflow *wf)
{
    char *a = to_json(st), *b;
    state *back = NULL;
    nsed_err e = {0};

    ck_assert_msg(state_from_json(a, strlen(a), wf, &back, &e) == 0, "%s",
                  e.msg);
    b = to_json(back);
    ck_assert_str_eq(a, b);
    free(a);
    free(b);
    state_free(st);
    return back;
}

/* Play the question to the end; with reload, every stage's state goes
 * through JSON and back. Returns the final JSON; *rounds gets each
 * finished round's own JSON (state_round_to_json) concatenated. */
static char *play_counted(const workflow *wf, bool reload, char **rounds,
                          size_t *team_calls);

static char *play(const workflow *wf, bool reload, char **rounds)
{
    return play_counted(wf, reload, rounds, NULL);
}

/* play, counting into *team_calls (may be NULL) the propose, evaluate and
 * repair requests planned. */
static char *play_counted(const workflow *wf, bool reload, char **rounds,
                          size_t *team_calls)
{
    state *st = new_state(wf);
    buf archive;
    int steps = 0;
    char *res;

    buf_init(&archive, 1 << 24);
    while (st->stage != STATE_STAGE_FINISHED) {
        stage_requests l = {0};
        stage_response r[64];
        char *owned[64];
        nsed_err e = {0};
        int round = st->round;

        ck_assert_int_eq(stage_plan(st, wf, &l), 0);
        ck_assert_uint_le(l.n, 64);
        for (size_t i = 0; i < l.n; i++) {
            memset(&r[i], 0, sizeof r[i]);
            r[i].kind = l.items[i].kind;
            r[i].seat = l.items[i].seat;
            r[i].round = l.items[i].round;
            r[i].sample = l.items[i].sample;
            if (team_calls && l.items[i].kind != STAGE_KIND_SELFCONS)
                (*team_calls)++;
            r[i].ok = true;
            owned[i] = fake_reply(st, &l.items[i]);
            r[i].content = owned[i];
            r[i].prompt_tokens = 100 + (int64_t)i;
            r[i].completion_tokens = 7;
            r[i].cost_usd = 0.1 * (double)(i + 1) / 3.0;
        }
        ck_assert_msg(stage_reduce(st, wf, NULL, r, l.n, &e) == 0, "%s",
                      e.msg);
        for (size_t i = 0; i < l.n; i++)
            free(owned[i]);
        stage_requests_release(&l);
        if (st->round != round || st->stage == STATE_STAGE_FINISHED) {
            /* a round finished: store it under its own key */
            char *rj = NULL;
            state_round *back = NULL;
            nsed_err e2 = {0};
            char *again = NULL;

            ck_assert_int_eq(state_round_to_json(state_round_get(st, round),
                                                 st->nseats, &rj), 0);
            ck_assert_msg(state_round_from_json(rj, strlen(rj), st->nseats,
                                                &back, &e2) == 0, "%s",
                          e2.msg);
            ck_assert_int_eq(state_round_to_json(back, st->nseats, &again),
                             0);
            ck_assert_str_eq(rj, again);
            ck_assert_int_eq(buf_adds(&archive, rj), 0);
            ck_assert_int_eq(buf_addc(&archive, '\n'), 0);
            free(rj);
            free(again);
            state_round_free(back, st->nseats);
        }
        if (reload)
            st = round_trip(st, wf);
        ck_assert_int_lt(++steps, 200);
    }
    res = to_json(st);
    *rounds = buf_detach(&archive, NULL);
    state_free(st);
    return res;
}

START_TEST(resume_after_every_stage_is_exact)
{
    workflow *wf = load_wf();
    char *ra = NULL, *rb = NULL;
    char *a = play(wf, false, &ra), *b = play(wf, true, &rb);
    cJSON *o;

    ck_assert_str_eq(a, b);
    ck_assert_str_eq(ra, rb);
    /* it really went through the interesting paths */
    ck_assert(tu_contains(a, "\"stage\":\"finished\""));
    ck_assert(tu_contains(a, "\"reason\":\"stable_answer\""));
    ck_assert(tu_contains(ra, "\"status\":\"skip\""));
    ck_assert(tu_contains(ra, "\"repaired\":true"));
    o = cJSON_Parse(a);
    ck_assert_ptr_nonnull(o);
    ck_assert_str_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(o, "final"),
                                         "answer")->valuestring, "1024");
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(o, "rounds")), 2);
    ck_assert_int_eq(cJSON_GetObjectItem(o, "v")->valueint,
                     STATE_JSON_VERSION);
    cJSON_Delete(o);
    free(a);
    free(b);
    free(ra);
    free(rb);
    workflow_free(wf);
}
END_TEST

/* The self-consistency stage: as many samples as the team's calls
 * (counted here from the plans), a checkpoint after every stage changes
 * nothing, and the majority is the hand count of the fake samples (sample
 * i answers 7 when i is a multiple of 3, else 1024). */
START_TEST(selfcons_stage_resumes_exactly)
{
    workflow *wf = tu_load_workflow(base_yaml,
                                    "baselines: {self_consistency: true, "
                                    "self_consistency_model: m1}\n");
    size_t calls_a = 0, calls_b = 0, n, sevens;
    char *ra = NULL, *rb = NULL, *a, *b;
    const cJSON *sc, *x;
    cJSON *o;
    state *st;
    double p_g[3] = {0.2, 0.9, 0.4};

    /* the model is chosen by the runner (selfcons_choose) */
    st = new_state(wf);
    ck_assert(st->sc.on);
    ck_assert_int_eq(selfcons_choose(st, wf, p_g), 0);
    ck_assert_uint_eq(st->sc.model, 1);
    ck_assert_int_eq(st->sc.seat, 1);
    state_free(st);
    a = play_counted(wf, false, &ra, &calls_a);
    b = play_counted(wf, true, &rb, &calls_b);
    ck_assert_str_eq(a, b);
    ck_assert_uint_eq(calls_a, calls_b);
    o = cJSON_Parse(a);
    sc = cJSON_GetObjectItem(o, "self_consistency");
    ck_assert_ptr_nonnull(sc);
    n = (size_t)cJSON_GetArraySize(cJSON_GetObjectItem(sc, "samples"));
    ck_assert_uint_eq(n, calls_a);
    ck_assert_uint_gt(n, 6);
    ck_assert_double_eq(cJSON_GetObjectItem(sc, "team_calls")->valuedouble,
                        (double)calls_a);
    sevens = n / 3;
    ck_assert_str_eq(cJSON_GetObjectItem(sc, "answer")->valuestring, "1024");
    ck_assert_double_eq(cJSON_GetObjectItem(sc, "votes")->valuedouble,
                        (double)(n - sevens));
    ck_assert(cJSON_IsFalse(cJSON_GetObjectItem(sc, "tie")));
    ck_assert(cJSON_IsTrue(cJSON_GetObjectItem(sc, "decided")));
    cJSON_ArrayForEach(x, cJSON_GetObjectItem(sc, "samples"))
        ck_assert_str_eq(cJSON_GetObjectItem(x, "status")->valuestring, "ok");
    ck_assert_str_eq(cJSON_GetObjectItem(o, "stage")->valuestring, "finished");
    cJSON_Delete(o);
    free(a);
    free(b);
    free(ra);
    free(rb);
    workflow_free(wf);
}
END_TEST

START_TEST(fresh_state_round_trips)
{
    workflow *wf = load_wf();
    state *st = new_state(wf);
    char *j;

    st->seed = UINT64_MAX; /* a full 64-bit seed survives (as hex) */
    st = round_trip(st, wf);
    ck_assert_uint_eq(st->seed, UINT64_MAX);
    ck_assert_str_eq(st->qid, "q-\xc3\xa9");
    ck_assert_str_eq(st->question, "What is 2^10?\nShow work.");
    ck_assert_str_eq(st->seats[0].persona, "Say \"why\".");
    ck_assert_str_eq(st->seats[2].persona, "");
    ck_assert_uint_eq(st->ntags, 2);
    ck_assert_str_eq(st->tags[1], "easy");
    ck_assert_int_eq(st->stage, STATE_STAGE_PROPOSE);
    j = to_json(st);
    ck_assert(tu_contains(j, "\"seed\":\"ffffffffffffffff\""));
    free(j);
    state_free(st);
    workflow_free(wf);
}
END_TEST

/* Parse text that must fail with code, and with msg in the message. */
static void refuse(const workflow *wf, const char *text, int code,
                   const char *msg)
{
    state *st = NULL;
    nsed_err e = {0};
    int rc = state_from_json(text, strlen(text), wf, &st, &e);

    ck_assert_msg(rc == code, "rc %d (%s) for %s", rc, e.msg, msg);
    ck_assert_msg(tu_contains(e.msg, msg), "message [%s] lacks [%s]", e.msg,
                  msg);
    ck_assert_ptr_null(st);
}

/* The fresh state's JSON with one substring replaced. */
static char *edited(const workflow *wf, const char *from, const char *to)
{
    state *st = new_state(wf);
    char *j = to_json(st), *p = strstr(j, from), *res;
    size_t n;

    ck_assert_msg(p != NULL, "no [%s] in %s", from, j);
    n = strlen(j) - strlen(from) + strlen(to) + 1;
    res = malloc(n);
    snprintf(res, n, "%.*s%s%s", (int)(p - j), j, to, p + strlen(from));
    free(j);
    state_free(st);
    return res;
}

START_TEST(damaged_json_refused)
{
    workflow *wf = load_wf();
    char *t;

    t = edited(wf, "\"v\":1", "\"v\":2");
    refuse(wf, t, NSED_ESCHEMA, "v: unsupported version");
    free(t);
    t = edited(wf, "\"v\":1,\"round\":0", "\"v\":9,\"round\":0");
    refuse(wf, t, NSED_ESCHEMA, "rounds[0]: unsupported version");
    free(t);
    t = edited(wf, "\"model\":2", "\"model\":3");
    refuse(wf, t, NSED_EINVAL, "seats[2]: not an integer in range");
    free(t);
    t = edited(wf, "\"id\":", "\"ident\":");
    refuse(wf, t, NSED_EINVAL, "question.id: missing");
    free(t);
    t = edited(wf, "\"stage\":\"propose\"", "\"stage\":\"dance\"");
    refuse(wf, t, NSED_EINVAL, "stage: unknown value");
    free(t);
    /* a stage the round is not ready for (converge before any vote) */
    t = edited(wf, "\"stage\":\"propose\"", "\"stage\":\"converge\"");
    refuse(wf, t, NSED_EINVAL, "stage: does not match");
    free(t);
    t = edited(wf, "\"round\":0,\"stage\"", "\"round\":1,\"stage\"");
    refuse(wf, t, NSED_EINVAL, "last round is not the current round");
    free(t);
    t = edited(wf, "\"missing\":[]", "\"missing\":[3]");
    refuse(wf, t, NSED_EINVAL, "missing");
    free(t);
    t = edited(wf, "\"seed\":\"", "\"seed\":\"x");
    refuse(wf, t, NSED_EINVAL, "seed: not 16 hex digits");
    free(t);
    refuse(wf, "{\"v\":1", NSED_EINVAL, "not valid JSON");
    refuse(wf, "[1,2]", NSED_EINVAL, "not an object");
    workflow_free(wf);
}
END_TEST

START_TEST(new_state_validates)
{
    workflow *wf = load_wf();
    state_seat_spec bad[1] = {{7, "solver", ""}};
    state_seat_spec ok[1] = {{0, "solver", ""}};
    state_question q = {"q", "text", NULL, NULL, 0};
    state_question noid = {"", "text", NULL, NULL, 0};
    state *st = NULL;
    nsed_err e = {0};

    ck_assert_int_eq(state_new(wf, &q, bad, 1, &st, &e), NSED_EINVAL);
    ck_assert(tu_contains(e.msg, "model index (7)"));
    ck_assert_int_eq(state_new(wf, &q, ok, 0, &st, &e), NSED_EINVAL);
    ck_assert_int_eq(state_new(wf, &noid, ok, 1, &st, &e), NSED_EINVAL);
    ck_assert_ptr_null(st);
    ck_assert_int_eq(state_new(wf, &q, ok, 1, &st, &e), 0);
    ck_assert_ptr_null(st->reference);
    ck_assert_int_eq(st->final_seat, -1);
    ck_assert_int_eq(st->carry.from_round, -1);
    state_free(st);
    state_free(NULL);
    state_round_free(NULL, 3);
    workflow_free(wf);
}
END_TEST

/* The failed status keeps its reason through a checkpoint, and a reason
 * without the status (or the status without one) is refused. */
START_TEST(failed_status_keeps_its_reason)
{
    workflow *wf = load_wf();
    state *st = new_state(wf);
    char *j, *t;

    st->status = STATE_STATUS_FAILED;
    st->failure = strdup("model beta: HTTP 400: context length exceeded");
    st = round_trip(st, wf);
    ck_assert_int_eq(st->status, STATE_STATUS_FAILED);
    ck_assert_str_eq(st->failure,
                     "model beta: HTTP 400: context length exceeded");
    j = to_json(st);
    ck_assert(tu_contains(j, "\"status\":\"failed\",\"failure\":\"model "
                             "beta: HTTP 400"));
    free(j);
    state_free(st);
    /* an active state has no "failure" member at all */
    st = new_state(wf);
    j = to_json(st);
    ck_assert(!tu_contains(j, "failure"));
    free(j);
    state_free(st);
    t = edited(wf, "\"status\":\"active\"", "\"status\":\"failed\"");
    refuse(wf, t, NSED_EINVAL, "failure: present exactly when");
    free(t);
    t = edited(wf, "\"status\":\"active\"",
               "\"status\":\"active\",\"failure\":\"x\"");
    refuse(wf, t, NSED_EINVAL, "failure: present exactly when");
    free(t);
    workflow_free(wf);
}
END_TEST

/* The bits of a double, so -0 and 0 differ. */
static uint64_t dbits(double d)
{
    uint64_t u;

    memcpy(&u, &d, sizeof u);
    return u;
}

START_TEST(checkpoint_doubles_are_exact)
{
    static const double values[] =
        {0.30000000000000004, 1e-320, 5e-324, DBL_MAX, -0.0, 0.1, 1234.5678e-9};
    static const char *const texts[] = {"0.30000000000000004",
                                        "1e-320",
                                        "5e-324",
                                        "1.7976931348623157e+308",
                                        "-0",
                                        "0.1",
                                        "1.2345678e-06"};
    workflow *wf = load_wf();

    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        state *st = new_state(wf);
        char *j, want[64];

        st->usage.cost_usd = values[i];
        st = round_trip(st, wf); /* write, read, write: same text */
        ck_assert_msg(dbits(st->usage.cost_usd) == dbits(values[i]),
                      "%s read back as %a", texts[i], st->usage.cost_usd);
        j = to_json(st);
        snprintf(want, sizeof want, "\"cost_usd\":%s}", texts[i]);
        ck_assert_msg(tu_contains(j, want), "%s lacks %s", j, want);
        free(j);
        state_free(st);
    }
    workflow_free(wf);
}
END_TEST

START_TEST(checkpoint_from_old_writer_reads_as_before)
{
    /* the old writer printed 0.1 + 0.2 as 0.3 (15 digits): such a store
     * still loads, and the number is what strtod makes of its text */
    workflow *wf = load_wf();
    char *t = edited(wf, "\"cost_usd\":0}", "\"cost_usd\":0.3}");
    state *st = NULL;
    nsed_err e = {0};

    ck_assert_msg(state_from_json(t, strlen(t), wf, &st, &e) == 0, "%s", e.msg);
    ck_assert(dbits(st->usage.cost_usd) == dbits(strtod("0.3", NULL)));
    free(t);
    t = to_json(st);
    ck_assert(tu_contains(t, "\"cost_usd\":0.3}"));
    free(t);
    state_free(st);
    workflow_free(wf);
}
END_TEST

START_TEST(checkpoint_non_finite_refused)
{
    /* the writer cannot print an infinity, so one on read is damage */
    workflow *wf = load_wf();
    char *t = edited(wf, "\"cost_usd\":0}", "\"cost_usd\":1e999}");

    refuse(wf, t, NSED_EINVAL, "state.usage: not a finite number");
    free(t);
    t = edited(wf, "\"cost_usd\":0}", "\"cost_usd\":-1e400}");
    refuse(wf, t, NSED_EINVAL, "not a finite number");
    free(t);
    workflow_free(wf);
}
END_TEST

Suite *tu_suite(void)
{
    Suite *s = suite_create("state");
    TCase *t;

    t = tcase_create("json");
    tcase_add_test(t, fresh_state_round_trips);
    tcase_add_test(t, selfcons_stage_resumes_exactly);
    tcase_add_test(t, resume_after_every_stage_is_exact);
    tcase_add_test(t, damaged_json_refused);
    tcase_add_test(t, failed_status_keeps_its_reason);
    suite_add_tcase(s, t);
    t = tcase_create("lifecycle");
    tcase_add_test(t, new_state_validates);
    tcase_add_test(t, checkpoint_doubles_are_exact);
    tcase_add_test(t, checkpoint_from_old_writer_reads_as_before);
    tcase_add_test(t, checkpoint_non_finite_refused);
    suite_add_tcase(s, t);
    return s;
}
