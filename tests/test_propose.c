/* Tests for the propose stage (stages/propose.c): the messages it sends in
 * round 0 and later rounds, SKIP and failure detection, answer extraction,
 * the round-0 baseline, partial batches and response validation. */
#include "stages/answer.h"
#include "stages/propose.h"
#include "stages/seed.h"
#include "stages/stage.h"
#include "testutil.h"
#include "testwf.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char base_yaml[] =
    "name: t\nversion: 1\nseed: 5\n"
    "models:\n"
    "  - {id: m0, endpoint: 'http://127.0.0.1:9/v1', model: s0, family: f0}\n"
    "  - {id: m1, endpoint: 'http://127.0.0.1:9/v1', model: s1, family: f1}\n"
    "teams:\n  main:\n    roles:\n"
    "      - {name: solver, count: 1, models: [m0], persona: 'You check "
    "twice.'}\n"
    "      - {name: critic, count: 2, models: [m1]}\n"
    "answer: {extract: boxed, compare: numeric}\n";

static workflow *load_wf(const char *extra)
{
    return tu_load_workflow(base_yaml, extra);
}

static state *new_state(const workflow *wf)
{
    state_seat_spec seats[3] = {{0, "solver", "You check twice."},
                                {1, "critic", ""},
                                {1, "critic", ""}};
    const char *tags[] = {"arith"};
    state_question q = {"q-001", "What is 17 * 23?", "391", tags, 1};
    state *st = NULL;
    nsed_err e = {0};

    ck_assert_int_eq(state_new(wf, &q, seats, 3, &st, &e), 0);
    return st;
}

static stage_response ok(size_t seat, int round, const char *content)
{
    stage_response r;

    memset(&r, 0, sizeof r);
    r.kind = STAGE_KIND_PROPOSE;
    r.seat = seat;
    r.round = round;
    r.ok = true;
    r.content = content;
    r.prompt_tokens = 10;
    r.completion_tokens = 20;
    r.cost_usd = 0.25;
    return r;
}

START_TEST(round0_messages)
{
    workflow *wf = load_wf(NULL);
    state *st = new_state(wf);
    stage_requests l = {0};
    buf sys, user;
    uint64_t seed;
    workflow_prompt_var sv[] = {{"persona", "You check twice."},
                                {"role", "solver"}};
    workflow_prompt_var uv[] = {{"question", "What is 17 * 23?"}};

    ck_assert_int_eq(stage_plan(st, wf, &l), 0);
    ck_assert_uint_eq(l.n, 3);
    buf_init(&sys, 1 << 20);
    buf_init(&user, 1 << 20);
    ck_assert_int_eq(workflow_prompt_render(wf->prompts.system, sv, 2, &sys),
                     0);
    ck_assert_int_eq(workflow_prompt_render(wf->prompts.propose, uv, 1,
                                            &user), 0);
    ck_assert_int_eq(l.items[0].kind, STAGE_KIND_PROPOSE);
    ck_assert_uint_eq(l.items[0].model, 0);
    ck_assert_uint_eq(l.items[1].model, 1);
    ck_assert_uint_eq(l.items[0].nmessages, 2);
    ck_assert_str_eq(l.items[0].messages[0].content, sys.ptr);
    ck_assert_str_eq(l.items[0].messages[1].content, user.ptr);
    ck_assert(tu_contains(user.ptr, "=====BEGIN QUESTION=====\nWhat is 17 * "
                                    "23?\n=====END QUESTION====="));
    ck_assert(tu_contains(l.items[1].messages[0].content, "critic"));
    ck_assert_ptr_null(l.items[0].json_schema);
    ck_assert_int_eq(seed_call(5, "q-001", 0, 2, STAGE_KIND_PROPOSE, 0,
                                &seed), 0);
    ck_assert_uint_eq(l.items[2].seed, seed);
    ck_assert(l.items[1].seed != l.items[2].seed);
    buf_release(&sys);
    buf_release(&user);
    stage_requests_release(&l);
    state_free(st);
    workflow_free(wf);
}
END_TEST

START_TEST(custom_template)
{
    workflow *wf = load_wf("prompts: {propose: 'Q: {question} -- go'}\n");
    state *st = new_state(wf);
    stage_requests l = {0};

    ck_assert_int_eq(stage_plan(st, wf, &l), 0);
    ck_assert_str_eq(l.items[1].messages[1].content,
                     "Q: What is 17 * 23? -- go");
    stage_requests_release(&l);
    state_free(st);
    workflow_free(wf);
}
END_TEST

START_TEST(reply_classification)
{
    workflow *wf = load_wf(NULL);
    state *st = new_state(wf);
    stage_response r[3];
    nsed_err e = {0};

    r[0] = ok(0, 0, "17 * 23 = 391, so \\boxed{391}.");
    r[1] = ok(1, 0, "  skip \n");
    r[2] = ok(2, 0, " \n\t ");
    ck_assert_int_eq(stage_reduce(st, wf, NULL, r, 3, &e), 0);
    ck_assert_int_eq(st->cur->proposals[0].status, STATE_PROPOSAL_OK);
    ck_assert_str_eq(st->cur->proposals[0].answer, "391");
    ck_assert_int_eq(st->cur->proposals[1].status, STATE_PROPOSAL_SKIP);
    ck_assert_ptr_null(st->cur->proposals[1].answer);
    ck_assert_int_eq(st->cur->proposals[2].status, STATE_PROPOSAL_FAILED);
    ck_assert(!st->cur->proposals[2].infra);
    ck_assert_str_eq(st->cur->proposals[2].error, "empty reply");
    ck_assert(!st->missing[2]); /* a model failure, not a lost seat */
    ck_assert_int_eq(st->stage, STATE_STAGE_ANONYMIZE);
    ck_assert_int_eq(st->usage.prompt_tokens, 30);
    ck_assert_int_eq(st->usage.completion_tokens, 60);
    ck_assert_double_eq_tol(st->usage.cost_usd, 0.75, 1e-12);
    /* the lone answer is the baseline */
    ck_assert_str_eq(st->baseline_answer, "391");
    ck_assert_uint_eq(st->baseline_votes, 1);
    ck_assert(propose_is_skip("SKIP", 4));
    ck_assert(propose_is_skip("\tSkip\r\n", 7));
    ck_assert(!propose_is_skip("SKIP it", 7));
    ck_assert(!propose_is_skip("SKIPPED", 7));
    state_free(st);
    workflow_free(wf);
}
END_TEST

START_TEST(no_answer_is_still_a_candidate)
{
    workflow *wf = load_wf(NULL);
    state *st = new_state(wf);
    stage_response r[3];
    nsed_err e = {0};

    r[0] = ok(0, 0, "I believe it is 391 but I won't box it.");
    r[1] = ok(1, 0, "\\boxed{391.0}");
    r[2] = ok(2, 0, "\\boxed{390}");
    ck_assert_int_eq(stage_reduce(st, wf, NULL, r, 3, &e), 0);
    ck_assert_int_eq(st->cur->proposals[0].status, STATE_PROPOSAL_OK);
    ck_assert_ptr_null(st->cur->proposals[0].answer);
    /* baseline: 391.0 and 390 one vote each. The strict rule (issue 12)
     * makes this a tie with no majority (it used to go to the first
     * group, 391.0); the seeded draw picks one of the two tied answers */
    ck_assert_ptr_null(st->baseline_answer);
    ck_assert_uint_eq(st->baseline_votes, 1);
    ck_assert(st->baseline_tie);
    ck_assert_ptr_nonnull(st->baseline_drawn);
    ck_assert(!strcmp(st->baseline_drawn, "391.0") ||
              !strcmp(st->baseline_drawn, "390"));
    ck_assert_int_eq(stage_reduce(st, wf, NULL, NULL, 0, &e), 0);
    ck_assert_uint_eq(st->cur->ncand, 3);
    state_free(st);
    workflow_free(wf);
}
END_TEST

START_TEST(infrastructure_failure_and_partial_batches)
{
    workflow *wf = load_wf(NULL);
    state *st = new_state(wf);
    stage_requests l = {0};
    stage_response r[2];
    nsed_err e = {0};

    r[0] = ok(1, 0, NULL);
    r[0].ok = false;
    r[0].infra = true;
    r[0].error = "connection refused";
    ck_assert_int_eq(stage_reduce(st, wf, NULL, r, 1, &e), 0);
    ck_assert_int_eq(st->stage, STATE_STAGE_PROPOSE); /* seats 0, 2 open */
    ck_assert(st->missing[1]);
    ck_assert(st->cur->proposals[1].infra);
    ck_assert_str_eq(st->cur->proposals[1].error, "connection refused");
    /* only the open seats are planned again */
    ck_assert_int_eq(stage_plan(st, wf, &l), 0);
    ck_assert_uint_eq(l.n, 2);
    ck_assert_uint_eq(l.items[0].seat, 0);
    ck_assert_uint_eq(l.items[1].seat, 2);
    stage_requests_release(&l);
    /* a second answer for seat 1 is refused and changes nothing */
    r[0] = ok(1, 0, "\\boxed{1}");
    ck_assert_int_eq(stage_reduce(st, wf, NULL, r, 1, &e), NSED_EINVAL);
    ck_assert(tu_contains(e.msg, "answers no pending proposal"));
    ck_assert_int_eq(st->cur->proposals[1].status, STATE_PROPOSAL_FAILED);
    /* so is a batch naming one seat twice, atomically */
    r[0] = ok(0, 0, "\\boxed{391}");
    r[1] = ok(0, 0, "\\boxed{391}");
    ck_assert_int_eq(stage_reduce(st, wf, NULL, r, 2, &e), NSED_EINVAL);
    ck_assert_int_eq(st->cur->proposals[0].status, STATE_PROPOSAL_PENDING);
    r[1] = ok(2, 0, "\\boxed{391}");
    ck_assert_int_eq(stage_reduce(st, wf, NULL, r, 2, &e), 0);
    ck_assert_int_eq(st->stage, STATE_STAGE_ANONYMIZE);
    ck_assert_str_eq(st->baseline_answer, "391");
    ck_assert_uint_eq(st->baseline_votes, 2);
    /* a computing stage takes no responses; a finished one nothing */
    ck_assert_int_eq(stage_reduce(st, wf, NULL, r, 1, &e), NSED_EINTERNAL);
    state_free(st);
    workflow_free(wf);
}
END_TEST

START_TEST(replies_cleaned_and_capped)
{
    workflow *wf = load_wf(NULL);
    state *st = new_state(wf);
    stage_response r[3];
    nsed_err e = {0};
    char *big = malloc(STATE_TEXT_MAX + 1000);

    memset(big, 'x', STATE_TEXT_MAX + 999);
    big[STATE_TEXT_MAX + 999] = '\0';
    r[0] = ok(0, 0, "bad \xff\xfe bytes \\boxed{7}");
    r[1] = ok(1, 0, big);
    r[2] = ok(2, 0, "\\boxed{7}");
    ck_assert_int_eq(stage_reduce(st, wf, NULL, r, 3, &e), 0);
    ck_assert_str_eq(st->cur->proposals[0].text,
                     "bad \xef\xbf\xbd\xef\xbf\xbd bytes \\boxed{7}");
    ck_assert_uint_eq(strlen(st->cur->proposals[1].text), STATE_TEXT_MAX);
    ck_assert(tu_contains(st->cur->proposals[1].text, TEXT_TRUNCATED));
    free(big);
    state_free(st);
    workflow_free(wf);
}
END_TEST

/* Play round 0 to the end with everyone answering 391. */
static void play_round0(state *st, const workflow *wf)
{
    stage_response r[3];
    nsed_err e = {0};
    stage_requests l = {0};

    for (size_t s = 0; s < 3; s++)
        r[s] = ok(s, 0, "Therefore \\boxed{391}.");
    ck_assert_int_eq(stage_reduce(st, wf, NULL, r, 3, &e), 0);
    ck_assert_int_eq(stage_reduce(st, wf, NULL, NULL, 0, &e), 0);
    ck_assert_int_eq(stage_plan(st, wf, &l), 0);
    for (size_t i = 0; i < l.n; i++) {
        memset(&r[i], 0, sizeof r[i]);
        r[i].kind = l.items[i].kind;
        r[i].seat = l.items[i].seat;
        r[i].ok = true;
        r[i].content = "{\"evaluations\":[{\"candidate\":\"A\",\"weight\":50,"
                       "\"critique\":\"good\"},{\"candidate\":\"B\","
                       "\"weight\":40},{\"candidate\":\"C\",\"weight\":30}]}";
    }
    ck_assert_int_eq(stage_reduce(st, wf, NULL, r, l.n, &e), 0);
    stage_requests_release(&l);
    ck_assert_int_eq(stage_reduce(st, wf, NULL, NULL, 0, &e), 0);
    ck_assert_int_eq(stage_reduce(st, wf, NULL, NULL, 0, &e), 0);
}

START_TEST(revise_keeps_the_prefix)
{
    workflow *wf = load_wf("rounds: {min: 2, max: 3}\n");
    state *st = new_state(wf);
    stage_requests l0 = {0}, l1 = {0};
    static const char mark[] = "=====BEGIN QUESTION=====\n";
    workflow_prompt_var other[] = {{"question", "Name a prime."},
                                   {"round", "7"},
                                   {"winner", "w"},
                                   {"own_previous", "o"},
                                   {"critiques", "c"},
                                   {"scores", "s"}};
    const char *a, *b, *c, *q;
    size_t common = 0, head;
    buf fixed;

    ck_assert_int_eq(stage_plan(st, wf, &l0), 0);
    play_round0(st, wf);
    ck_assert_int_eq(st->round, 1);
    ck_assert_int_eq(st->stage, STATE_STAGE_PROPOSE);
    ck_assert_int_eq(stage_plan(st, wf, &l1), 0);
    ck_assert_uint_eq(l1.n, 3);
    /* same system message; the user message shares the opening sentence
     * with the proposal */
    ck_assert_str_eq(l1.items[0].messages[0].content,
                     l0.items[0].messages[0].content);
    a = l0.items[0].messages[1].content;
    b = l1.items[0].messages[1].content;
    while (a[common] && a[common] == b[common])
        common++;
    ck_assert_uint_ge(common, strlen("Solve the question below. "));
    /* everything before the question is the same for any question and
     * round: the template rendered for another question agrees up to the
     * question's first byte */
    buf_init(&fixed, 1 << 16);
    ck_assert_int_eq(workflow_prompt_render(wf->prompts.revise, other, 6,
                                            &fixed),
                     0);
    q = strstr(b, mark);
    ck_assert_ptr_nonnull(q);
    head = (size_t)(q - b) + strlen(mark);
    ck_assert_uint_gt(fixed.len, head);
    ck_assert(memcmp(fixed.ptr, b, head) == 0);
    ck_assert(fixed.ptr[head] == 'N');
    ck_assert(tu_contains(b, "=====BEGIN QUESTION=====\nWhat is 17 * 23?\n"
                             "=====END QUESTION=====\n\nRound 1.\n\n"));
    /* the two critics are seats of one model: their revisions agree
     * through the round's shared material, the winner, and part only at
     * what is their own */
    c = l1.items[2].messages[1].content;
    ck_assert_uint_eq(l1.items[1].model, l1.items[2].model);
    a = l1.items[1].messages[1].content;
    common = 0;
    while (a[common] && a[common] == c[common])
        common++;
    q = strstr(c, "=====BEGIN YOUR PREVIOUS ANSWER fence ");
    ck_assert_ptr_nonnull(q);
    ck_assert_uint_ge(common, (size_t)(q - c));
    buf_release(&fixed);
    /* the changing material comes last */
    ck_assert(tu_contains(b, "Round 1."));
    ck_assert(strstr(b, "=====BEGIN WINNING SOLUTION fence ") >
              strstr(b, "Round 1."));
    ck_assert(tu_contains(b, "=====BEGIN YOUR PREVIOUS ANSWER fence "));
    ck_assert(tu_contains(b, "=====BEGIN CRITIQUES fence "));
    ck_assert(tu_contains(b, "=====BEGIN SCORES fence "));
    ck_assert(l1.items[0].seed != l0.items[0].seed);
    stage_requests_release(&l0);
    stage_requests_release(&l1);
    state_free(st);
    workflow_free(wf);
}
END_TEST

Suite *tu_suite(void)
{
    Suite *s = suite_create("propose");
    TCase *t;

    t = tcase_create("plan");
    tcase_add_test(t, round0_messages);
    tcase_add_test(t, custom_template);
    tcase_add_test(t, revise_keeps_the_prefix);
    suite_add_tcase(s, t);
    t = tcase_create("reduce");
    tcase_add_test(t, reply_classification);
    tcase_add_test(t, no_answer_is_still_a_candidate);
    tcase_add_test(t, infrastructure_failure_and_partial_batches);
    tcase_add_test(t, replies_cleaned_and_capped);
    suite_add_tcase(s, t);
    return s;
}
