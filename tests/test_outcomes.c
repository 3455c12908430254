/* Outcomes that tell the truth (issue 10, items 1-4): `nsed run` against
 * nsed-sim, and what the run summary, `nsed status` and `nsed export`
 * say afterwards. Questions end done, degraded, incomplete (transient: run
 * again) or failed (for good, with a stored reason); the exit status
 * follows. Every expected count is computed here from the simulator's
 * configured behaviour and the export lines, never by the counting code. */
#include "testutil.h"

#include "stages/seed.h"

#include <check.h>
#include <stdbool.h>
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEMO_Q NSED_SOURCE_DIR "/workflows/demo-questions.jsonl"

#define NSED(url, out, err, ...) TU_NSED(url, out, err, __VA_ARGS__)

/* ---- fixtures ------------------------------------------------------------ */

/* The simulated models: two healthy ones, one that answers every attempt
 * with HTTP 500, one whose replies never hold an extractable answer (400
 * completion tokens against a max_tokens of 16 cut every \boxed{} off)
 * and whose evaluations are prose (so every one abstains). */
static const char sim_yaml[] =
    "kind: nsed-sim\n"
    "seed: 7\n"
    "questions: " NSED_SOURCE_DIR "/workflows/demo-questions.jsonl\n"
    "models:\n"
    "  - {name: sim-alpha, family: alpha, p_gen: 0.6, p_ver: 0.8}\n"
    "  - {name: sim-beta, family: beta, p_gen: 0.5, p_ver: 0.8}\n"
    "  - {name: sim-dead, family: dead, faults: {rate_500: 1.0}}\n"
    "  - name: sim-mute\n"
    "    family: mute\n"
    "    tokens: {completion: 400}\n"
    "    faults: {rate_nonjson_eval: 1.0}\n";

/* A workflow over those models plus "nope", a model the server does not
 * serve (HTTP 404, model_not_found: a permanent error). teams_yaml
 * replaces the teams and tiers; extra goes under rounds. */
static char *workflow_yaml(const char *teams_yaml, const char *rounds_extra)
{
    char *w = NULL;
    int n = asprintf(
        &w,
        "name: outcomes\n"
        "version: 1\n"
        "seed: 42\n"
        "models:\n"
        "  - {id: alpha, endpoint: \"${NSED_SIM_URL}\", model: sim-alpha,"
        " family: alpha, max_concurrency: 8, structured_output: true}\n"
        "  - {id: beta, endpoint: \"${NSED_SIM_URL}\", model: sim-beta,"
        " family: beta, max_concurrency: 8, structured_output: true}\n"
        "  - {id: dead, endpoint: \"${NSED_SIM_URL}\", model: sim-dead,"
        " family: dead, max_concurrency: 8, structured_output: true}\n"
        "  - {id: mute, endpoint: \"${NSED_SIM_URL}\", model: sim-mute,"
        " family: mute, max_concurrency: 8, structured_output: true,"
        " sampling: {max_tokens: 16}}\n"
        "  - {id: nope, endpoint: \"${NSED_SIM_URL}\", model: sim-nope,"
        " family: nope, max_concurrency: 8, structured_output: true}\n"
        "  - {id: oracle, endpoint: \"${NSED_SIM_URL}\", model: sim-oracle,"
        " family: oracle, max_concurrency: 8, structured_output: true}\n"
        "%s"
        "rounds:\n"
        "  min: 1\n"
        "  max: 2\n"
        "%s"
        "answer: {extract: boxed, compare: numeric}\n"
        "gateway:\n"
        "  retry: {max_attempts: 2, base_delay_ms: 1, max_delay_ms: 2,"
        " max_total_s: 10}\n"
        "  circuit_breaker: {failures: 1000, cooldown_s: 1}\n",
        teams_yaml, rounds_extra ? rounds_extra : "");

    ck_assert_int_gt(n, 0);
    return w;
}

/* A team of the given models (a YAML flow list), one seat each. */
static char *one_team(const char *models, int seats)
{
    char *t = NULL;

    ck_assert_int_gt(asprintf(&t,
                              "broker: {policy: fixed}\n"
                              "teams:\n"
                              "  main:\n"
                              "    roles:\n"
                              "      - {name: solver, count: %d, models: %s}\n",
                              seats, models),
                     0);
    return t;
}

static char *write_tmp(const char *name, const char *text)
{
    char *p = tu_path(tu_tmp, name);

    tu_write_file(p, text, (size_t)-1);
    return p;
}

/* The four counts of the summary line "nsed run: N questions: D done, G
 * degraded, I incomplete, F failed (...)". */
typedef struct outcome {
    int done, degraded, incomplete, failed;
} outcome;

static outcome summary_of(const char *err)
{
    const char *p = strstr(err ? err : "", "nsed run: ");
    outcome o = {-1, -1, -1, -1};
    size_t q;

    while (p && sscanf(p,
                       "nsed run: %zu questions: %d done, %d degraded, "
                       "%d incomplete, %d failed",
                       &q, &o.done, &o.degraded, &o.incomplete, &o.failed) != 5)
        p = strstr(p + 1, "nsed run: ");
    ck_assert_msg(p, "no summary line in: %s", err);
    return o;
}

static outcome status_of(const cJSON *st)
{
    outcome o = {
        (int)tu_jnum(st, "questions", "done"),
        (int)tu_jnum(st, "questions", "degraded"),
        (int)tu_jnum(st, "questions", "incomplete"),
        (int)tu_jnum(st, "questions", "failed"),
    };
    return o;
}

/* The export lines, parsed (a JSON array the caller deletes). */
static cJSON *export_lines(const char *sdir)
{
    char *out = NULL, *err = NULL, *line, *save = NULL;
    cJSON *a = cJSON_CreateArray();

    ck_assert_msg(NSED(NULL, &out, &err, "export", "--store", sdir) == 0,
                  "export: %s", err);
    for (line = strtok_r(out, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        cJSON *j = cJSON_Parse(line);

        ck_assert_msg(j, "export line is not JSON: %s", line);
        cJSON_AddItemToArray(a, j);
    }
    free(out);
    free(err);
    return a;
}

/* Export lines by "status", counted here. */
static outcome export_of(const cJSON *lines)
{
    outcome o = {0, 0, 0, 0};
    const cJSON *l;

    cJSON_ArrayForEach(l, lines) {
        const char *s = cJSON_GetObjectItem(l, "status")->valuestring;

        if (!strcmp(s, "done"))
            o.done++;
        else if (!strcmp(s, "degraded"))
            o.degraded++;
        else if (!strcmp(s, "incomplete"))
            o.incomplete++;
        else if (!strcmp(s, "failed"))
            o.failed++;
        else
            ck_abort_msg("unknown status %s", s);
    }
    return o;
}

static void assert_outcome(outcome got, outcome want, const char *what)
{
    ck_assert_msg(got.done == want.done && got.degraded == want.degraded &&
                      got.incomplete == want.incomplete &&
                      got.failed == want.failed,
                  "%s: %d done, %d degraded, %d incomplete, %d failed; "
                  "expected %d, %d, %d, %d",
                  what, got.done, got.degraded, got.incomplete, got.failed,
                  want.done, want.degraded, want.incomplete, want.failed);
}

/* status --json's reasons.<kind>.<reason containing needle>, 0 if none. */
static int reason_count(const cJSON *st, const char *kind, const char *needle)
{
    const cJSON *r = cJSON_GetObjectItem(cJSON_GetObjectItem(st, "reasons"),
                                         kind);
    const cJSON *e;
    int n = 0;

    cJSON_ArrayForEach(e, r)
        if (strstr(e->string, needle))
            n += (int)e->valuedouble;
    return n;
}

static double model_count(const cJSON *st, const char *model, const char *field)
{
    const cJSON *m = cJSON_GetObjectItem(
        cJSON_GetObjectItem(cJSON_GetObjectItem(st, "deliberation"), "models"),
        model);

    ck_assert_msg(m, "no deliberation counts for %s", model);
    return tu_jnum(m, field, NULL);
}

/* Σ "rounds" over export lines whose tags hold tag (NULL: all). */
static int rounds_of(const cJSON *lines, const char *tag)
{
    const cJSON *l, *t;
    int n = 0;

    cJSON_ArrayForEach(l, lines) {
        bool has = tag == NULL;

        cJSON_ArrayForEach(t, cJSON_GetObjectItem(l, "tags"))
            has = has || !strcmp(t->valuestring, tag);
        if (has)
            n += (int)cJSON_GetObjectItem(l, "rounds")->valuedouble;
    }
    return n;
}

/* ---- no answer at all ------------------------------------------------------ */

/* A team whose every reply is cut before its answer: every question ends
 * failed "no extractable answer in any round", the run exits 3, and the
 * summary, status and export agree. Every proposal lacks an answer, every
 * evaluation abstains and no round has a winner. */
START_TEST(no_answer_anywhere_fails_every_question)
{
    tu_sim sim;
    char *sim_cfg = write_tmp("sim.yaml", sim_yaml);
    char *team = one_team("[mute]", 3);
    char *wf_text = workflow_yaml(team, NULL);
    char *wf = write_tmp("wf.yaml", wf_text);
    char *sdir = tu_path(tu_tmp, "store"), *out = NULL, *err = NULL;
    outcome want = {0, 0, 0, 8};
    cJSON *st, *lines;
    int rc, rounds;
    double before;

    tu_sim_start(&sim, sim_cfg, NULL, NULL);
    rc = NSED(sim.url, &out, &err, "run", wf, "--questions", DEMO_Q, "--store",
              sdir, "--limit", "8");
    ck_assert_msg(rc == 3, "run exit %d: %s", rc, err);
    assert_outcome(summary_of(err), want, "summary");
    ck_assert(tu_contains(err, "no extractable answer in any round"));
    free(out);
    free(err);

    st = tu_nsed_status(sdir);
    assert_outcome(status_of(st), want, "status");
    ck_assert_int_eq(reason_count(st, "failed",
                                  "no extractable answer in any round"),
                     8);
    lines = export_lines(sdir);
    assert_outcome(export_of(lines), want, "export");
    ck_assert_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(lines, 0),
                                         "failure")
                         ->valuestring,
                     "no extractable answer in any round");
    /* three seats of mute in every round: each proposes (no answer) and
     * evaluates the two others (abstains); no round has a winner */
    rounds = rounds_of(lines, NULL);
    ck_assert_int_eq(rounds, 8 * 2); /* rounds.max, nothing stops sooner */
    ck_assert_int_eq((int)model_count(st, "mute", "proposals"), 3 * rounds);
    ck_assert_int_eq((int)model_count(st, "mute", "no_answer"), 3 * rounds);
    ck_assert_int_eq((int)model_count(st, "mute", "evaluations"), 3 * rounds);
    ck_assert_int_eq((int)model_count(st, "mute", "abstained"), 3 * rounds);
    ck_assert_int_eq((int)tu_jnum(st, "deliberation", "winnerless_rounds"),
                     rounds);
    ck_assert_int_eq((int)tu_jnum(st, "deliberation", "abstained"), 3 * rounds);
    cJSON_Delete(st);
    cJSON_Delete(lines);

    /* the text form says the same */
    ck_assert_int_eq(NSED(NULL, &out, &err, "status", "--store", sdir), 0);
    ck_assert_msg(tu_contains(out, "0 done, 0 degraded, 0 incomplete, 8 "
                                   "failed"),
                  "%s", out);
    ck_assert(tu_contains(out, "failed:     8 no extractable answer in any "
                               "round"));
    ck_assert(tu_contains(out, "no winner:  16 of 16 rounds"));
    ck_assert(tu_contains(out, "abstained:  48 of 48 evaluations (mute "
                               "48/48)"));
    free(out);
    free(err);

    /* a rerun skips them: nothing sent, exit 3 again */
    before = tu_sim_stat(&sim, "sim-mute", "requests");
    rc = NSED(sim.url, &out, &err, "run", wf, "--store", sdir, "--limit", "8");
    ck_assert_msg(rc == 3, "rerun exit %d: %s", rc, err);
    assert_outcome(summary_of(err), want, "rerun summary");
    ck_assert(tu_sim_stat(&sim, "sim-mute", "requests") == before);
    free(out);
    free(err);

    tu_sim_stop(&sim);
    free(sdir);
    free(wf);
    free(wf_text);
    free(team);
    free(sim_cfg);
}
END_TEST

/* ---- a permanent HTTP error ---------------------------------------------- */

/* A seat whose model the server does not know (HTTP 404): its questions
 * fail with that reason instead of waiting for a rerun that can never
 * help; a rerun asks nothing and exits 3; --retry-failed asks again (the
 * server sees the 404s again) while the healthy seats' calls replay from
 * the ledger. */
START_TEST(permanent_error_fails_and_is_retried_only_on_request)
{
    tu_sim sim;
    char *sim_cfg = write_tmp("sim.yaml", sim_yaml);
    char *team = one_team("[alpha, nope]", 2);
    char *wf_text = workflow_yaml(team, NULL);
    char *wf = write_tmp("wf.yaml", wf_text);
    char *sdir = tu_path(tu_tmp, "store"), *out = NULL, *err = NULL;
    outcome want = {0, 0, 0, 5};
    double rejected, alpha;
    cJSON *st, *lines;
    int rc;

    tu_sim_start(&sim, sim_cfg, NULL, NULL);
    rc = NSED(sim.url, &out, &err, "run", wf, "--questions", DEMO_Q, "--store",
              sdir, "--limit", "5", "--quiet", "--no-preflight");
    ck_assert_msg(rc == 3, "run exit %d: %s", rc, err);
    free(out);
    free(err);
    /* one attempt per question: a 404 is not retried */
    rejected = tu_sim_stat(&sim, NULL, "rejected");
    ck_assert_int_eq((int)rejected, 5);
    alpha = tu_sim_stat(&sim, "sim-alpha", "requests");
    ck_assert_int_eq((int)alpha, 5);

    st = tu_nsed_status(sdir);
    assert_outcome(status_of(st), want, "status");
    ck_assert_int_eq(reason_count(st, "failed", "model nope: HTTP 404"), 5);
    cJSON_Delete(st);
    lines = export_lines(sdir);
    assert_outcome(export_of(lines), want, "export");
    ck_assert(tu_contains(cJSON_GetObjectItem(cJSON_GetArrayItem(lines, 0),
                                              "failure")
                              ->valuestring,
                          "model nope: HTTP 404"));
    cJSON_Delete(lines);

    /* a rerun leaves them alone */
    rc = NSED(sim.url, &out, &err, "run", wf, "--store", sdir, "--limit", "5",
              "--no-preflight");
    ck_assert_msg(rc == 3, "rerun exit %d: %s", rc, err);
    assert_outcome(summary_of(err), want, "rerun summary");
    ck_assert(tu_sim_stat(&sim, NULL, "rejected") == rejected);
    ck_assert(tu_sim_stat(&sim, "sim-alpha", "requests") == alpha);
    free(out);
    free(err);

    /* --retry-failed asks nope again; alpha's answers come from the
     * ledger */
    rc = NSED(sim.url, &out, &err, "run", wf, "--store", sdir, "--limit", "5",
              "--retry-failed", "--no-preflight");
    ck_assert_msg(rc == 3, "retry exit %d: %s", rc, err);
    assert_outcome(summary_of(err), want, "retry summary");
    ck_assert(tu_contains(err, "0 before"));
    ck_assert_int_eq((int)tu_sim_stat(&sim, NULL, "rejected"),
                     (int)rejected + 5);
    ck_assert(tu_sim_stat(&sim, "sim-alpha", "requests") == alpha);
    free(out);
    free(err);

    tu_sim_stop(&sim);
    free(sdir);
    free(wf);
    free(wf_text);
    free(team);
    free(sim_cfg);
}
END_TEST

/* ---- degraded needs enough live seats ------------------------------------ */

/* Through a full outage --allow-degraded finishes nothing: with fewer
 * live seats than rounds.min_live_seats (default 2) a question is
 * incomplete, exit 1, never "degraded with every seat lost". With one of
 * three seats dead it is degraded; with rounds.min_live_seats: 3 the same
 * loss leaves it incomplete. */
START_TEST(degraded_needs_the_minimum_of_live_seats)
{
    tu_sim sim;
    char *sim_cfg = write_tmp("sim.yaml", sim_yaml);
    char *dead = one_team("[dead]", 3), *some = one_team("[alpha, beta, "
                                                         "dead]",
                                                         3);
    char *wf_dead = workflow_yaml(dead, NULL);
    char *wf_some = workflow_yaml(some, NULL);
    char *wf_strict = workflow_yaml(some, "  min_live_seats: 3\n");
    char *p_dead = write_tmp("dead.yaml", wf_dead);
    char *p_some = write_tmp("some.yaml", wf_some);
    char *p_strict = write_tmp("strict.yaml", wf_strict);
    char *s1 = tu_path(tu_tmp, "s1"), *s2 = tu_path(tu_tmp, "s2");
    char *s3 = tu_path(tu_tmp, "s3"), *out = NULL, *err = NULL;
    outcome all_incomplete = {0, 0, 4, 0}, all_degraded = {0, 4, 0, 0};
    cJSON *st, *lines;
    int rc;

    tu_sim_start(&sim, sim_cfg, NULL, NULL);
    rc = NSED(sim.url, &out, &err, "run", p_dead, "--questions", DEMO_Q,
              "--store", s1, "--limit", "4", "--allow-degraded");
    ck_assert_msg(rc == 1, "outage exit %d: %s", rc, err);
    assert_outcome(summary_of(err), all_incomplete, "outage summary");
    free(out);
    free(err);
    st = tu_nsed_status(s1);
    assert_outcome(status_of(st), all_incomplete, "outage status");
    ck_assert_int_eq(reason_count(st, "incomplete",
                                  "0 of 3 seats left, "
                                  "fewer than rounds.min_live_seats (2)"),
                     4);
    cJSON_Delete(st);
    lines = export_lines(s1);
    ck_assert_int_eq(cJSON_GetArraySize(lines), 0);
    cJSON_Delete(lines);

    rc = NSED(sim.url, &out, &err, "run", p_some, "--questions", DEMO_Q,
              "--store", s2, "--limit", "4", "--allow-degraded");
    ck_assert_msg(rc == 0, "degraded exit %d: %s", rc, err);
    assert_outcome(summary_of(err), all_degraded, "degraded summary");
    free(out);
    free(err);
    st = tu_nsed_status(s2);
    assert_outcome(status_of(st), all_degraded, "degraded status");
    cJSON_Delete(st);
    lines = export_lines(s2);
    assert_outcome(export_of(lines), all_degraded, "degraded export");
    cJSON_Delete(lines);

    rc = NSED(sim.url, &out, &err, "run", p_strict, "--questions", DEMO_Q,
              "--store", s3, "--limit", "4", "--allow-degraded");
    ck_assert_msg(rc == 1, "strict exit %d: %s", rc, err);
    assert_outcome(summary_of(err), all_incomplete, "strict summary");
    ck_assert(tu_contains(err, "2 of 3 seats left, fewer than "
                               "rounds.min_live_seats (3)"));
    free(out);
    free(err);

    tu_sim_stop(&sim);
    free(s1);
    free(s2);
    free(s3);
    free(p_dead);
    free(p_some);
    free(p_strict);
    free(wf_dead);
    free(wf_some);
    free(wf_strict);
    free(dead);
    free(some);
    free(sim_cfg);
}
END_TEST

/* ---- a mixed run ---------------------------------------------------------- */

/* Questions routed by tag: "ok" to a healthy team (done), "dead" to a team
 * with a dead seat (incomplete), "mute" to a team that never answers
 * (failed, no answer), "nope" to a team with an unknown model (failed,
 * HTTP 404). Summary, status --json and export (counted here) agree, and
 * the run exits 1 (incomplete beats failed). */
static const char mixed_teams[] =
    "broker:\n"
    "  policy: fixed\n"
    "  default_team: main\n"
    "  tiers:\n"
    "    - {tags: [dead], team: deadteam}\n"
    "    - {tags: [mute], team: muteteam}\n"
    "    - {tags: [nope], team: nopeteam}\n"
    "teams:\n"
    "  main:\n"
    "    roles: [{name: s, count: 2, models: [alpha, beta]}]\n"
    "  deadteam:\n"
    "    roles: [{name: s, count: 2, models: [alpha, dead]}]\n"
    "  muteteam:\n"
    "    roles: [{name: s, count: 2, models: [mute]}]\n"
    "  nopeteam:\n"
    "    roles: [{name: s, count: 2, models: [alpha, nope]}]\n";

START_TEST(mixed_run_counts_agree)
{
    static const char *const tags[] = {"ok",   "dead", "mute", "ok", "nope",
                                       "mute", "ok",   "dead", "ok", "mute"};
    tu_sim sim;
    char *sim_cfg = write_tmp("sim.yaml", sim_yaml);
    char *wf_text = workflow_yaml(mixed_teams, NULL);
    char *wf = write_tmp("wf.yaml", wf_text);
    char *sdir = tu_path(tu_tmp, "store"), *out = NULL, *err = NULL;
    char *qpath = tu_path(tu_tmp, "q.jsonl"), *qs = NULL;
    size_t qlen = 0;
    FILE *f = open_memstream(&qs, &qlen);
    outcome want = {4, 0, 2, 4}, sum;
    cJSON *st, *lines;
    int rc, mute_rounds;

    for (size_t i = 0; i < sizeof tags / sizeof tags[0]; i++)
        fprintf(f,
                "{\"id\":\"q%zu\",\"question\":\"What is %zu + 1?\","
                "\"answer\":%zu,\"tags\":[\"%s\"]}\n",
                i, i, i + 1, tags[i]);
    fclose(f);
    tu_write_file(qpath, qs, qlen);

    tu_sim_start(&sim, sim_cfg, NULL, NULL);
    rc = NSED(sim.url, &out, &err, "run", wf, "--questions", qpath, "--store",
              sdir, "--no-preflight");
    ck_assert_msg(rc == 1, "run exit %d: %s", rc, err);
    sum = summary_of(err);
    assert_outcome(sum, want, "summary");
    free(out);
    free(err);

    st = tu_nsed_status(sdir);
    assert_outcome(status_of(st), want, "status");
    lines = export_lines(sdir);
    /* export holds every finished question: done, degraded and failed */
    want.incomplete = 0;
    assert_outcome(export_of(lines), want, "export");
    ck_assert_int_eq(reason_count(st, "failed", "no extractable answer"), 3);
    ck_assert_int_eq(reason_count(st, "failed", "model nope: HTTP 404"), 1);
    ck_assert_int_eq(reason_count(st, "incomplete", "model dead: HTTP 500"), 2);
    /* mute sits twice in its team and never answers; alpha and beta
     * always do and never abstain */
    mute_rounds = rounds_of(lines, "mute");
    ck_assert_int_eq(mute_rounds, 3 * 2);
    ck_assert_int_eq((int)model_count(st, "mute", "no_answer"),
                     2 * mute_rounds);
    ck_assert_int_eq((int)model_count(st, "mute", "abstained"),
                     2 * mute_rounds);
    ck_assert_int_eq((int)model_count(st, "alpha", "no_answer"), 0);
    ck_assert_int_eq((int)model_count(st, "alpha", "abstained"), 0);
    ck_assert_int_eq((int)model_count(st, "beta", "proposals"),
                     rounds_of(lines, "ok"));
    ck_assert_int_eq((int)model_count(st, "beta", "abstained"), 0);
    cJSON_Delete(st);
    cJSON_Delete(lines);

    tu_sim_stop(&sim);
    free(qs);
    free(qpath);
    free(sdir);
    free(wf);
    free(wf_text);
    free(sim_cfg);
}
END_TEST

/* ---- a question a stage cannot process ---------------------------------- */

/* A reply that carries every fence nonce the anonymizer could pick for
 * its question (computed here by asking seed_fence for the next free
 * nonce until none is left) used to abort the whole run with exit 2, on
 * every rerun. Now only that question is affected: the run goes on and
 * the other questions finish; the hostile one either fails with the
 * stage's reason (exit 3) or, once fences cannot be forged, finishes. */
START_TEST(one_hostile_reply_does_not_stop_the_run)
{
    tu_sim sim;
    char *qpath = tu_path(tu_tmp, "q.jsonl"), *sim_cfg = NULL, *sim_text = NULL;
    char *team = one_team("[oracle, alpha]", 2), *wf_text, *wf;
    char *sdir = tu_path(tu_tmp, "store"), *out = NULL, *err = NULL;
    char nonces[256 * TEXT_FENCE_HEX + 1] = "", fence[TEXT_FENCE_HEX + 1];
    const char *texts[1] = {nonces};
    const cJSON *l;
    cJSON *lines, *st;
    size_t n = 0;
    int rc, done = 0, hostile = -1;
    char *qs = NULL;

    /* Since fences are derived from the fenced texts (issue 10, item 4)
     * seed_fence always finds one; the reply still carries 256 nonces it
     * would have picked for texts that grow by one nonce each time. */
    for (n = 0; n < 256; n++) {
        ck_assert_int_eq(
            seed_fence("candidates", 42, "q-hostile", 0, texts, 1, fence), 0);
        memcpy(nonces + n * TEXT_FENCE_HEX, fence, TEXT_FENCE_HEX + 1);
    }
    ck_assert_int_gt(asprintf(&qs,
                              "{\"id\":\"q-1\",\"question\":\"What is 2 + "
                              "2?\",\"answer\":4}\n"
                              "{\"id\":\"q-hostile\",\"question\":\"Say "
                              "it.\",\"answer\":\"%s\"}\n"
                              "{\"id\":\"q-3\",\"question\":\"What is 3 + "
                              "3?\",\"answer\":6}\n",
                              nonces),
                     0);
    tu_write_file(qpath, qs, (size_t)-1);
    ck_assert_int_gt(asprintf(&sim_text,
                              "kind: nsed-sim\nseed: 7\nquestions: %s\n"
                              "models:\n"
                              "  - {name: sim-alpha, family: alpha}\n"
                              "  - {name: sim-oracle, family: oracle, p_gen: "
                              "1.0, p_ver: 1.0}\n",
                              qpath),
                     0);
    sim_cfg = write_tmp("sim.yaml", sim_text);
    wf_text = workflow_yaml(team, NULL);
    wf = write_tmp("wf.yaml", wf_text);

    tu_sim_start(&sim, sim_cfg, NULL, NULL);
    rc = NSED(sim.url, &out, &err, "run", wf, "--questions", qpath, "--store",
              sdir, "--quiet");
    ck_assert_msg(rc == 0 || rc == 3, "run exit %d: %s", rc, err);
    free(out);
    free(err);
    lines = export_lines(sdir);
    ck_assert_int_eq(cJSON_GetArraySize(lines), 3);
    cJSON_ArrayForEach(l, lines) {
        const char *id = cJSON_GetObjectItem(l, "id")->valuestring;
        const char *status = cJSON_GetObjectItem(l, "status")->valuestring;

        if (strcmp(id, "q-hostile") != 0) {
            done += !strcmp(status, "done");
            continue;
        }
        hostile = !strcmp(status, "failed");
        if (hostile)
            ck_assert_msg(
                tu_contains(
                    cJSON_GetObjectItem(l, "failure")->valuestring,
                    "anonymize: question q-hostile round 0: no fence nonce"),
                "%s", cJSON_GetObjectItem(l, "failure")->valuestring);
    }
    ck_assert_int_eq(done, 2);
    ck_assert_int_ge(hostile, 0);
    ck_assert_int_eq(rc, hostile ? 3 : 0);
    st = tu_nsed_status(sdir);
    ck_assert_int_eq((int)tu_jnum(st, "questions", "failed"), hostile);
    cJSON_Delete(st);
    cJSON_Delete(lines);

    tu_sim_stop(&sim);
    free(qs);
    free(qpath);
    free(sim_text);
    free(sim_cfg);
    free(team);
    free(wf_text);
    free(wf);
    free(sdir);
}
END_TEST

Suite *tu_suite(void)
{
    Suite *s = suite_create("outcomes");
    TCase *tc = tcase_create("outcomes");

    tcase_add_checked_fixture(tc, tu_tmp_setup, tu_tmp_teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, no_answer_anywhere_fails_every_question);
    tcase_add_test(tc, permanent_error_fails_and_is_retried_only_on_request);
    tcase_add_test(tc, degraded_needs_the_minimum_of_live_seats);
    tcase_add_test(tc, mixed_run_counts_agree);
    tcase_add_test(tc, one_hostile_reply_does_not_stop_the_run);
    suite_add_tcase(s, tc);
    return s;
}
