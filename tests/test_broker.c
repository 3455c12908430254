/* Tests for the broker: the knapsack is exact (against brute force on
 * thousands of random instances), role seats are matched, decisions give
 * their reasons, and whole brokered runs against nsed-sim stop admitting a
 * weak verifier, stay within the budget and match the accuracy of the
 * "use everyone" team for less. */
#include "pipeline/broker/broker.h"
#include "pipeline/broker/telemetry.h"
#include "stages/anonymize.h"
#include "stages/evaluate.h"
#include "testutil.h"
#include "testwf.h"

#include <check.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- brute force, written independently of broker.c ------------------- */

typedef struct rng {
    uint64_t s;
} rng;

static uint64_t rnext(rng *r)
{
    /* splitmix64 */
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double runif(rng *r)
{
    return (double)(rnext(r) >> 11) / 9007199254740992.0;
}

static int rint_(rng *r, int lo, int hi)
{
    return lo + (int)(rnext(r) % (uint64_t)(hi - lo + 1));
}

/* Try to seat items[k..] of the list into roles with capacity left. */
static bool assign(const broker_problem *p, const int *list, int n, int k,
                   int *left)
{
    if (k == n)
        return true;
    for (size_t r = 0; r < p->nroles; r++) {
        if (left[r] == 0 || !(p->items[list[k]].roles >> r & 1))
            continue;
        left[r]--;
        if (assign(p, list, n, k + 1, left))
            return true;
        left[r]++;
    }
    return false;
}

/* Every constraint, checked the plain way. */
static bool brute_feasible(const broker_problem *p, uint64_t set)
{
    int list[64], n = 0, fam[64] = {0}, left[64];
    double vram[64] = {0}, usd = 0, tok = 0;

    for (size_t i = 0; i < p->nitems; i++)
        if (set >> i & 1)
            list[n++] = (int)i;
    if (n < p->size_min || n > p->size_max)
        return false;
    for (int k = 0; k < n; k++) {
        const broker_item *it = &p->items[list[k]];

        usd += it->usd[n];
        tok += it->tokens[n];
        fam[it->family]++;
        if (p->max_per_family > 0 && fam[it->family] > p->max_per_family)
            return false;
        if (it->gpu >= 0)
            vram[it->gpu] += it->vram_gb;
    }
    for (int g = 0; g < 64; g++)
        if (p->vram_per_gpu_gb > 0 &&
            vram[g] > p->vram_per_gpu_gb * (1 + 1e-12))
            return false;
    if (p->budget_usd > 0 && usd > p->budget_usd * (1 + 1e-12))
        return false;
    if (p->budget_tokens > 0 && tok > p->budget_tokens * (1 + 1e-12))
        return false;
    for (size_t r = 0; r < p->nroles; r++)
        left[r] = p->role_seats[r];
    return assign(p, list, n, 0, left);
}

static double set_value(const broker_problem *p, uint64_t set)
{
    double v = 0;

    for (size_t i = 0; i < p->nitems; i++)
        if (set >> i & 1)
            v += p->items[i].value;
    return v;
}

/* Best value by enumeration; false when nothing is feasible. */
static bool brute_best(const broker_problem *p, double *best)
{
    bool any = false;

    for (uint64_t set = 0; set < (uint64_t)1 << p->nitems; set++) {
        double v;

        if (!brute_feasible(p, set))
            continue;
        v = set_value(p, set);
        if (!any || v > *best)
            *best = v;
        any = true;
    }
    return any;
}

typedef struct instance {
    broker_item items[BROKER_MAX_POOL];
    int role_seats[8];
    broker_problem p;
} instance;

/* A random instance whose constraints bind about half of the time. */
static void random_instance(rng *r, instance *in, int max_items)
{
    broker_problem *p = &in->p;
    int n = rint_(r, 0, max_items), nfam = rint_(r, 1, 5);
    int ngpu = rint_(r, 0, 3), seats = 0;
    double mean_usd = 0, mean_tok = 0;

    memset(in, 0, sizeof *in);
    p->nroles = (size_t)rint_(r, 1, 3);
    for (size_t k = 0; k < p->nroles; k++) {
        in->role_seats[k] = rint_(r, 1, 4);
        seats += in->role_seats[k];
    }
    p->size_min = rint_(r, 1, 3);
    if (p->size_min > seats)
        p->size_min = seats;
    p->size_max = rint_(r, p->size_min, seats);
    for (int i = 0; i < n; i++) {
        broker_item *it = &in->items[i];
        double base = runif(r) * 0.01, grow = runif(r) * 0.004;
        double tb = 1000 + runif(r) * 9000, tg = runif(r) * 3000;
        int grows = rint_(r, 0, 1);

        /* values: mostly positive, some negative, some exact ties */
        it->value = rint_(r, 0, 4) == 0 ? 0.25 : runif(r) * 1.4 - 0.3;
        for (int s = 1; s <= WORKFLOW_MAX_SEATS; s++) {
            it->usd[s] = base + grow * (s - 1) * grows;
            it->tokens[s] = tb + tg * (s - 1);
        }
        it->family = rint_(r, 0, nfam - 1);
        it->gpu = ngpu ? rint_(r, -1, ngpu - 1) : -1;
        it->vram_gb = runif(r) * 20;
        do
            it->roles = rnext(r) & (((uint64_t)1 << p->nroles) - 1);
        while (!it->roles);
        mean_usd += it->usd[2] / (n ? n : 1);
        mean_tok += it->tokens[2] / (n ? n : 1);
    }
    p->items = in->items;
    p->nitems = (size_t)n;
    p->role_seats = in->role_seats;
    p->budget_usd = rint_(r, 0, 2) ? mean_usd * (1 + runif(r) * 3) : 0;
    p->budget_tokens = rint_(r, 0, 2) ? mean_tok * (1 + runif(r) * 3) : 0;
    p->vram_per_gpu_gb = rint_(r, 0, 1) ? 10 + runif(r) * 30 : 0;
    p->max_per_family = rint_(r, 0, 2);
}

START_TEST(knapsack_matches_brute_force)
{
    rng r = {12345};
    int feasible = 0, infeasible = 0;
    uint64_t nodes = 0;

    for (int k = 0; k < 4000; k++) {
        instance in;
        broker_solution sol;
        double best = 0;
        bool any;
        int rc;

        random_instance(&r, &in, k < 3800 ? 12 : 18);
        any = brute_best(&in.p, &best);
        rc = broker_solve(&in.p, &sol);
        if (!any) {
            ck_assert_msg(rc == NSED_ENOTFOUND,
                          "instance %d: brute force finds nothing, solver "
                          "returned %d", k, rc);
            infeasible++;
            continue;
        }
        feasible++;
        ck_assert_msg(rc == 0, "instance %d: solver found no team", k);
        ck_assert_msg(fabs(sol.value - best) <= 1e-9,
                      "instance %d: solver value %.12f, brute force %.12f",
                      k, sol.value, best);
        ck_assert_msg(brute_feasible(&in.p, sol.chosen),
                      "instance %d: the solver's team breaks a constraint",
                      k);
        ck_assert_int_eq(sol.size, __builtin_popcountll(sol.chosen));
        ck_assert(fabs(sol.value - set_value(&in.p, sol.chosen)) < 1e-12);
        /* every chosen item sits in a role that admits it, within counts */
        {
            int used[8] = {0};

            for (size_t i = 0; i < in.p.nitems; i++) {
                if (!(sol.chosen >> i & 1))
                    continue;
                ck_assert_int_ge(sol.role_of[i], 0);
                ck_assert(in.items[i].roles >> sol.role_of[i] & 1);
                used[sol.role_of[i]]++;
            }
            for (size_t q = 0; q < in.p.nroles; q++)
                ck_assert_int_le(used[q], in.role_seats[q]);
        }
        nodes += sol.nodes;
    }
    /* the generator exercises both outcomes */
    ck_assert_int_gt(feasible, 1000);
    ck_assert_int_gt(infeasible, 200);
    ck_assert(nodes > 0);
}
END_TEST

/* 64 items with ties and a binding budget finish quickly. */
START_TEST(knapsack_large_pool_is_fast)
{
    instance in;
    broker_solution sol;
    rng r = {99};

    for (int round = 0; round < 20; round++) {
        random_instance(&r, &in, 4);
        in.p.nitems = BROKER_MAX_POOL;
        for (int i = 0; i < BROKER_MAX_POOL; i++) {
            broker_item *it = &in.items[i];

            it->value = 0.1 + 0.05 * (i % 7);
            for (int s = 1; s <= WORKFLOW_MAX_SEATS; s++) {
                it->usd[s] = 0.001 * (1 + i % 5);
                it->tokens[s] = 1000;
            }
            it->family = i % 16;
            it->gpu = -1;
            it->roles = 1;
        }
        in.p.nroles = 1;
        in.role_seats[0] = 8;
        in.p.size_min = 2;
        in.p.size_max = 8;
        in.p.max_per_family = 1;
        in.p.budget_usd = 0.01 + 0.0005 * round;
        in.p.budget_tokens = 0;
        in.p.vram_per_gpu_gb = 0;
        ck_assert_int_eq(broker_solve(&in.p, &sol), 0);
        ck_assert_msg(sol.nodes < 5000000, "%llu nodes",
                      (unsigned long long)sol.nodes);
        ck_assert(sol.usd <= in.p.budget_usd * (1 + 1e-12));
    }
}
END_TEST

START_TEST(knapsack_rejects_bad_problems)
{
    instance in;
    broker_solution sol;
    rng r = {7};

    random_instance(&r, &in, 4);
    in.p.size_min = 0;
    ck_assert_int_eq(broker_solve(&in.p, &sol), NSED_EINVAL);
    in.p.size_min = 3;
    in.p.size_max = 2;
    ck_assert_int_eq(broker_solve(&in.p, &sol), NSED_EINVAL);
    in.p.size_max = 3;
    in.p.nitems = BROKER_MAX_POOL + 1;
    ck_assert_int_eq(broker_solve(&in.p, &sol), NSED_EINVAL);
    in.p.nitems = 0;
    ck_assert_int_eq(broker_solve(&in.p, &sol), NSED_ENOTFOUND);
}
END_TEST

/* A model that two roles admit goes where it leaves room for the others. */
START_TEST(roles_are_matched_not_greedy)
{
    broker_item items[3] = {0};
    int seats[2] = {1, 1}, role_of[3];
    broker_problem p = {.items = items, .nitems = 3, .size_min = 1,
                        .size_max = 2, .role_seats = seats, .nroles = 2};

    items[0].roles = 3; /* either role */
    items[1].roles = 1; /* role 0 only */
    items[2].roles = 1;
    ck_assert(broker_roles_fit(&p, 0x3, role_of));
    ck_assert_int_eq(role_of[0], 1);
    ck_assert_int_eq(role_of[1], 0);
    ck_assert_int_eq(role_of[2], -1);
    /* two items that only role 0 (one seat) admits cannot both sit */
    ck_assert(!broker_roles_fit(&p, 0x6, NULL));
    ck_assert(broker_roles_fit(&p, 0x0, NULL));
}
END_TEST

/* ---- decisions on a loaded workflow ------------------------------------ */

#define DEMO_WF NSED_SOURCE_DIR "/workflows/broker-demo.yaml"
#define DEMO_SIM NSED_SOURCE_DIR "/tests/sim/configs/broker-sim.yaml"
#define DEMO_Q NSED_SOURCE_DIR "/workflows/demo-questions.jsonl"
#define EVERYONE_WF NSED_SOURCE_DIR "/tests/data/broker/everyone.yaml"

static workflow *load_wf(const char *path)
{
    workflow *wf = NULL;
    nsed_err err = {0};

    setenv("NSED_SIM_URL", "http://127.0.0.1:1/v1", 1);
    ck_assert_msg(workflow_load(path, &wf, &err) == 0, "%s", err.msg);
    return wf;
}

static const broker_candidate *cand(const workflow *wf,
                                    const broker_decision *d, const char *id)
{
    const workflow_model *m = workflow_model_find(wf, id);

    ck_assert_ptr_nonnull(m);
    return &d->cands[workflow_model_index(wf, m)];
}

static bool chosen(const workflow *wf, const broker_decision *d,
                   const char *id)
{
    return cand(wf, d, id)->chosen;
}

/* On priors alone: the expensive model is out on budget, the pair of one
 * family and the pair on one GPU never sit together, and the team is the
 * best within the budget. */
START_TEST(priors_decide_within_constraints)
{
    workflow *wf = load_wf(DEMO_WF);
    broker_decision *d = NULL;
    nsed_err err = {0};
    char *json = NULL;
    cJSON *j;

    ck_assert_int_eq(broker_decide(wf, NULL, NULL, 0, &d, &err), 0);
    ck_assert(d->staffed);
    ck_assert_str_eq(d->team->name, "pool");
    ck_assert(!cand(wf, d, "omega-big")->admitted);
    ck_assert(tu_contains(cand(wf, d, "omega-big")->why, "over the budget"));
    ck_assert(!(chosen(wf, d, "alpha-small") && chosen(wf, d, "alpha-mini")));
    ck_assert(!(chosen(wf, d, "alpha-mini") && chosen(wf, d, "beta")));
    /* the weak verifier's prior claims 0.75: it is admitted until measured */
    ck_assert(cand(wf, d, "delta-weak")->admitted);
    ck_assert(d->usd <= wf->broker.budget_usd_per_question);
    ck_assert_int_ge((int)d->seats.nseats, 2);
    ck_assert_uint_eq(d->seats.nseats, (size_t)d->team_size);
    for (size_t s = 0; s < d->seats.nseats; s++)
        ck_assert_str_eq(d->seats.seats[s].role, "solver");
    /* the record carries the inputs */
    ck_assert_int_eq(broker_decision_json(wf, d, &json), 0);
    j = cJSON_Parse(json);
    ck_assert_ptr_nonnull(j);
    ck_assert_str_eq(cJSON_GetObjectItem(j, "policy")->valuestring,
                     "knapsack");
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(j, "candidates")),
                     6);
    ck_assert(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "constraints"),
                                  "usd_per_question")->valuedouble == 0.006);
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(j, "seats")),
                     (int)d->seats.nseats);
    cJSON_Delete(j);
    {
        cJSON *sum = broker_record_summary(json, strlen(json));

        ck_assert_ptr_nonnull(sum);
        ck_assert(cJSON_IsNumber(cJSON_GetObjectItem(sum,
                                                     "expected_cost_usd")));
        ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(sum,
                                                                "models")),
                         (int)d->seats.nseats);
        cJSON_Delete(sum);
    }
    free(json);
    broker_decision_free(d);
    workflow_free(wf);
}
END_TEST

/* A budget nothing fits is a decision with a reason, not an error. */
START_TEST(infeasible_budget_gives_reason)
{
    static const char base[] =
        "name: t\n"
        "version: 1\n"
        "models:\n"
        "  - {id: a, endpoint: http://127.0.0.1:1/v1, model: a, "
        "price: {input_per_mtok: 1, output_per_mtok: 1}}\n"
        "  - {id: b, endpoint: http://127.0.0.1:1/v1, model: b, "
        "price: {input_per_mtok: 1, output_per_mtok: 1}}\n"
        "  - {id: c, endpoint: http://127.0.0.1:1/v1, model: c, "
        "prior: {p_ver: 0.4}}\n"
        "teams:\n"
        "  t: {roles: [{name: s, count: 3, models: [a, b, c]}]}\n";
    workflow *wf = tu_load_workflow(base,
                                    "broker: {policy: knapsack, budget: "
                                    "{usd_per_question: 0.0001}}\n");
    broker_decision *d = NULL;
    nsed_err err = {0};
    char *json = NULL;

    ck_assert_int_eq(broker_decide(wf, NULL, NULL, 0, &d, &err), 0);
    ck_assert(!d->staffed);
    ck_assert_msg(tu_contains(d->reason, "team_size.min is 2"), "%s",
                  d->reason);
    ck_assert(tu_contains(d->cands[0].why, "over the budget"));
    ck_assert(tu_contains(d->cands[2].why, "evaluator_min_pv"));
    ck_assert_int_eq(broker_decision_json(wf, d, &json), 0);
    ck_assert(tu_contains(json, "\"staffed\":false"));
    free(json);
    broker_decision_free(d);
    workflow_free(wf);

    /* c admitted, a and b within budget alone but not together */
    wf = tu_load_workflow(base,
                          "broker: {policy: knapsack, team_size: {min: 3, "
                          "max: 3}, evaluator_min_pv: 0.3, max_per_family: "
                          "1, budget: {usd_per_question: 0.02}}\n");
    ck_assert_int_eq(broker_decide(wf, NULL, NULL, 0, &d, &err), 0);
    ck_assert(!d->staffed);
    ck_assert_msg(tu_contains(d->reason, "cheapest"), "%s", d->reason);
    broker_decision_free(d);
    workflow_free(wf);
}
END_TEST

/* fixed keeps the template as written and says so. */
START_TEST(fixed_policy_uses_template)
{
    workflow *wf = load_wf(EVERYONE_WF);
    broker_decision *d = NULL;
    broker_team t;
    nsed_err err = {0};
    char *json = NULL;
    cJSON *sum;

    ck_assert_int_eq(broker_decide(wf, NULL, NULL, 0, &d, &err), 0);
    ck_assert(d->staffed);
    ck_assert_uint_eq(d->seats.nseats, 6);
    ck_assert_int_eq(broker_choose(wf, NULL, 0, &t, &err), 0);
    for (size_t s = 0; s < 6; s++)
        ck_assert_uint_eq(t.seats[s].model, d->seats.seats[s].model);
    ck_assert(chosen(wf, d, "omega-big"));
    ck_assert_int_eq(broker_decision_json(wf, d, &json), 0);
    sum = broker_record_summary(json, strlen(json));
    /* a fixed team's summary leaves out the estimates of the moment */
    ck_assert(cJSON_IsNull(cJSON_GetObjectItem(sum, "expected_cost_usd")));
    ck_assert_str_eq(cJSON_GetObjectItem(sum, "policy")->valuestring,
                     "fixed");
    cJSON_Delete(sum);
    free(json);
    broker_decision_free(d);
    workflow_free(wf);
}
END_TEST

/* ---- whole runs against nsed-sim ---------------------------------------- */

#define NSED(url, out, err, ...) TU_NSED(url, out, err, __VA_ARGS__)

static void run_ok(const char *url, const char *wf, const char *dir,
                   const char *extra1, const char *extra2)
{
    char *out = NULL, *err = NULL;
    int rc;

    if (extra1)
        rc = NSED(url, &out, &err, "run", wf, "--questions", DEMO_Q,
                  "--store", dir, "--quiet", extra1, extra2);
    else
        rc = NSED(url, &out, &err, "run", wf, "--questions", DEMO_Q,
                  "--store", dir, "--quiet");
    ck_assert_msg(rc == 0, "run %s: exit %d: %s", wf, rc, err);
    free(out);
    free(err);
}

/* The export as an array of results, in question order. */
static cJSON *results_of(const char *dir, size_t *n)
{
    char *out = NULL, *err = NULL, *line, *nl;
    cJSON *arr = cJSON_CreateArray();

    ck_assert_msg(NSED("-", &out, &err, "export", "--store", dir) == 0,
                  "export: %s", err);
    for (line = out; (nl = strchr(line, '\n')); line = nl + 1) {
        cJSON *r = cJSON_ParseWithLength(line, (size_t)(nl - line));

        ck_assert_ptr_nonnull(r);
        cJSON_AddItemToArray(arr, r);
    }
    *n = (size_t)cJSON_GetArraySize(arr);
    free(out);
    free(err);
    return arr;
}

static bool team_has(const cJSON *res, const char *id)
{
    const cJSON *m;

    cJSON_ArrayForEach(m, cJSON_GetObjectItem(cJSON_GetObjectItem(res,
                                                                  "broker"),
                                              "models"))
        if (!strcmp(m->valuestring, id))
            return true;
    return false;
}

/* The scenario: six models (two of one family, one verifying
 * below chance behind a flattering prior, one strong but expensive),
 * prices and VRAM that bind. */
START_TEST(brokered_run_beats_everyone_for_less)
{
    tu_sim sim;
    char *all = tu_path(tu_tmp, "everyone"), *brk = tu_path(tu_tmp, "brokered");
    char *out = NULL, *err = NULL;
    cJSON *sa, *sb, *res, *r, *b;
    double acc_all, acc_brk, cost_all, cost_brk, budget = 0.006;
    size_t n, late_weak = 0, early_weak = 0, i = 0;

    tu_sim_start(&sim, DEMO_SIM, NULL, NULL);
    run_ok(sim.url, EVERYONE_WF, all, NULL, NULL);
    /* few questions in flight, so telemetry steers most decisions */
    run_ok(sim.url, DEMO_WF, brk, "--max-active", "8");

    sa = tu_nsed_status(all);
    sb = tu_nsed_status(brk);
    ck_assert_int_eq((int)tu_jnum(sb, "questions", "done"), 120);
    acc_all = tu_jnum(sa, "accuracy", "nsed_correct") / 120;
    acc_brk = tu_jnum(sb, "accuracy", "nsed_correct") / 120;
    cost_all = tu_jnum(sa, "cost_usd", NULL) / 120;
    cost_brk = tu_jnum(sb, "cost_usd", NULL) / 120;
    ck_assert_msg(acc_brk >= acc_all && cost_brk < cost_all,
                  "brokered: accuracy %.3f at $%.6f per question; everyone: "
                  "%.3f at $%.6f", acc_brk, cost_brk, acc_all, cost_all);
    /* status shows the broker's choices */
    b = cJSON_GetObjectItem(sb, "broker");
    ck_assert_int_eq((int)tu_jnum(b, "decisions", NULL), 120);
    ck_assert_int_eq((int)tu_jnum(b, "unstaffed", NULL), 0);
    ck_assert_int_eq((int)tu_jnum(b, "over_budget", NULL), 0);
    ck_assert(tu_jnum(b, "expected_cost_usd_mean", NULL) <= budget);
    ck_assert_int_eq((int)tu_jnum(b, "excluded", "omega-big"), 120);
    ck_assert_int_ge((int)tu_jnum(b, "excluded", "delta-weak"), 60);
    ck_assert_int_eq((int)tu_jnum(cJSON_GetObjectItem(sa, "broker"), "chosen",
                               "omega-big"), 120);

    /* per question: within budget, expected and actual; the weak
     * verifier only in the early decisions */
    res = results_of(brk, &n);
    ck_assert_uint_eq(n, 120);
    cJSON_ArrayForEach(r, res) {
        const cJSON *bk = cJSON_GetObjectItem(r, "broker");

        ck_assert_msg(tu_jnum(bk, "expected_cost_usd", NULL) <= budget,
                      "%s: expected $%.6f", cJSON_GetObjectItem(r, "id")
                                                ->valuestring,
                      tu_jnum(bk, "expected_cost_usd", NULL));
        ck_assert_msg(tu_jnum(r, "cost_usd", NULL) <= budget,
                      "%s: spent $%.6f", cJSON_GetObjectItem(r, "id")
                                             ->valuestring,
                      tu_jnum(r, "cost_usd", NULL));
        ck_assert(!team_has(r, "omega-big"));
        ck_assert(!(team_has(r, "alpha-small") && team_has(r, "alpha-mini")));
        if (team_has(r, "delta-weak")) {
            if (i < 30)
                early_weak++;
            else
                late_weak++;
        }
        i++;
    }
    ck_assert_int_gt(early_weak, 0);
    ck_assert_int_eq(late_weak, 0);
    cJSON_Delete(res);

    /* the text status and nsed team say the same */
    ck_assert_int_eq(NSED("-", &out, &err, "status", "--store", brk), 0);
    ck_assert_msg(tu_contains(out, "broker:") && tu_contains(out, "excluded:")
                      && tu_contains(out, "delta-weak"), "%s", out);
    {
        /* the best single model beside NSED is one that answered round 0
         * of every judged question, the best of those by the JSON's own
         * counts, or none: here the broker seats each model on some
         * questions only, and one that sat on a handful (alpha-mini, 5
         * of 9 right) once showed as the best single model at 55.6%
         * beside NSED's 120 */
        const cJSON *acc = cJSON_GetObjectItem(sb, "accuracy"), *m;
        double judged = tu_jnum(acc, "with_reference", NULL), best = -1;
        const char *name = NULL;
        char want[96];

        cJSON_ArrayForEach(m, cJSON_GetObjectItem(acc, "round0_by_model")) {
            double a = tu_jnum(m, "answers", NULL);

            if (a != judged)
                continue;
            if (tu_jnum(m, "correct", NULL) / a > best) {
                best = tu_jnum(m, "correct", NULL) / a;
                name = m->string;
            }
        }
        if (name)
            snprintf(want, sizeof want, "best single model %s %.1f%%", name,
                     100 * best);
        else
            snprintf(want, sizeof want,
                     "best single model - (none sat on all %.0f)", judged);
        ck_assert_msg(tu_contains(out, want), "want \"%s\" in %s", want, out);
        ck_assert(!tu_contains(out, "best single model delta-weak") &&
                  !tu_contains(out, "best single model alpha-mini"));
    }
    free(out);
    free(err);
    ck_assert_int_eq(NSED(sim.url, &out, &err, "team", DEMO_WF, "--store", brk),
                     0);
    ck_assert_msg(tu_contains(out, "is not above evaluator_min_pv"), "%s",
                  out);
    ck_assert(tu_contains(out, "chosen:"));
    free(out);
    free(err);
    cJSON_Delete(sa);
    cJSON_Delete(sb);
    tu_sim_stop(&sim);
    free(all);
    free(brk);
}
END_TEST

/* Telemetry exported from one store is the prior of another: its first
 * decisions already leave the weak verifier out. */
START_TEST(telemetry_file_steers_another_run)
{
    tu_sim sim;
    char *cal = tu_path(tu_tmp, "cal"), *big = tu_path(tu_tmp, "big");
    char *file = tu_path(tu_tmp, "tele.json"), *out = NULL, *err = NULL;
    cJSON *res, *r;
    size_t n;

    tu_sim_start(&sim, DEMO_SIM, NULL, NULL);
    run_ok(sim.url, DEMO_WF, cal, "--limit", "40");
    ck_assert_int_eq(NSED("-", &out, &err, "status", "--store", cal,
                          "--telemetry-out", file), 0);
    free(out);
    free(err);
    {
        char *text = tu_read_file(file, NULL);

        ck_assert_ptr_nonnull(text);
        ck_assert(tu_contains(text, "\"nsed_telemetry\":1"));
        ck_assert(tu_contains(text, "\"delta-weak\""));
        free(text);
    }
    ck_assert_int_eq(NSED(sim.url, &out, &err, "run", DEMO_WF, "--questions",
                          DEMO_Q, "--store", big, "--limit", "16",
                          "--telemetry", file), 0);
    ck_assert(tu_contains(err, "telemetry prior loaded"));
    free(out);
    free(err);
    res = results_of(big, &n);
    ck_assert_uint_eq(n, 16);
    cJSON_ArrayForEach(r, res)
        ck_assert_msg(!team_has(r, "delta-weak"), "%s seated delta-weak",
                      cJSON_GetObjectItem(r, "id")->valuestring);
    cJSON_Delete(res);
    /* the prior stays with the store: a later run without the flag
     * still knows */
    ck_assert_int_eq(NSED(sim.url, &out, &err, "team", DEMO_WF, "--store", big),
                     0);
    ck_assert(tu_contains(out, "is not above evaluator_min_pv"));
    free(out);
    free(err);
    /* a file that is not telemetry is refused with its name */
    tu_write_file(file, "{\"models\":{}}", (size_t)-1);
    ck_assert_int_eq(NSED(sim.url, &out, &err, "run", DEMO_WF, "--store",
                          big, "--telemetry", file), 2);
    ck_assert(tu_contains(err, "not a telemetry file"));
    free(out);
    free(err);
    tu_sim_stop(&sim);
    free(cal);
    free(big);
    free(file);
}
END_TEST

/* A brokered run killed at random moments and resumed: every question
 * runs with the seats its recorded decision names (a resumed question is
 * never decided again). */
START_TEST(resumed_questions_keep_their_decision)
{
    tu_sim sim;
    char *dir = tu_path(tu_tmp, "store");
    cJSON *res, *r, *st;
    size_t n;
    int kills = 0;

    tu_sim_start(&sim, DEMO_SIM, NULL, NULL);
    for (int attempt = 0; attempt < 4; attempt++) {
        pid_t pid = fork();
        int status;
        struct timespec d = {0, (long)(150 + 120 * attempt) * 1000000L};

        ck_assert(pid >= 0);
        if (pid == 0) {
            char env[128];
            int null = open("/dev/null", O_WRONLY);

            prctl(PR_SET_PDEATHSIG, SIGKILL);
            snprintf(env, sizeof env, "NSED_SIM_URL=%s", sim.url);
            putenv(env);
            dup2(null, 1);
            dup2(null, 2);
            execl(NSED_BIN, NSED_BIN, "run", DEMO_WF, "--questions", DEMO_Q,
                  "--store", dir, "--quiet", "--max-active", "8",
                  (char *)NULL);
            _exit(127);
        }
        nanosleep(&d, NULL);
        /* a run that already ended was reaped by WNOHANG: wait only for
         * one still running */
        if (waitpid(pid, &status, WNOHANG) == 0) {
            kill(pid, SIGKILL);
            kills++;
            while (waitpid(pid, &status, 0) < 0)
                ck_assert(errno == EINTR);
        }
    }
    run_ok(sim.url, DEMO_WF, dir, "--max-active", "8");
    ck_assert_int_gt(kills, 0);
    res = results_of(dir, &n);
    ck_assert_uint_eq(n, 120);
    cJSON_ArrayForEach(r, res) {
        const cJSON *models = cJSON_GetObjectItem(cJSON_GetObjectItem(r,
                                                                      "broker"),
                                                  "models");
        const cJSON *seats = cJSON_GetObjectItem(cJSON_GetObjectItem(r,
                                                                     "baselines"),
                                                 "models");

        ck_assert_int_eq(cJSON_GetArraySize(models),
                         cJSON_GetArraySize(seats));
        for (int k = 0; k < cJSON_GetArraySize(seats); k++)
            ck_assert_str_eq(cJSON_GetArrayItem(models, k)->valuestring,
                             cJSON_GetObjectItem(cJSON_GetArrayItem(seats, k),
                                                 "model")->valuestring);
        ck_assert(tu_jnum(r, "cost_usd", NULL) <= 0.006);
    }
    cJSON_Delete(res);
    st = tu_nsed_status(dir);
    ck_assert_int_eq((int)tu_jnum(cJSON_GetObjectItem(st, "broker"),
                               "decisions", NULL), 120);
    cJSON_Delete(st);
    tu_sim_stop(&sim);
    free(dir);
}
END_TEST

/* No team fits: the questions are left incomplete with the reason, and a
 * later run with a workable budget staffs and finishes them. */
START_TEST(unstaffed_questions_are_incomplete_with_reason)
{
    tu_sim sim;
    char *dir = tu_path(tu_tmp, "store"), *wf = tu_path(tu_tmp, "poor.yaml");
    char *text = tu_read_file(DEMO_WF, NULL), *p, *out = NULL, *err = NULL;
    cJSON *st;
    int rc;

    ck_assert_ptr_nonnull(text);
    p = strstr(text, "usd_per_question: 0.006 ");
    ck_assert_ptr_nonnull(p);
    memcpy(p, "usd_per_question: 0.0015", strlen("usd_per_question: 0.0015"));
    tu_write_file(wf, text, (size_t)-1);
    tu_sim_start(&sim, DEMO_SIM, NULL, NULL);
    rc = NSED(sim.url, &out, &err, "run", wf, "--questions", DEMO_Q,
              "--store", dir, "--limit", "3");
    ck_assert_msg(rc == 1, "exit %d: %s", rc, err);
    ck_assert_msg(tu_contains(err, "left incomplete: broker: the 2 cheapest"),
                  "%s", err);
    ck_assert(!tu_contains(err, "nsed: "));
    free(out);
    free(err);
    ck_assert(tu_sim_stat(&sim, NULL, "rejected") == 0);
    ck_assert(tu_sim_stat(&sim, "sim-beta", "requests") == 0);
    st = tu_nsed_status(dir);
    ck_assert_int_eq((int)tu_jnum(st, "questions", "incomplete"), 3);
    ck_assert_int_eq((int)tu_jnum(cJSON_GetObjectItem(st, "broker"),
                               "unstaffed", NULL), 3);
    cJSON_Delete(st);
    ck_assert_int_eq(NSED(sim.url, &out, &err, "team", wf), 0);
    ck_assert(tu_contains(out, "no team: the 2 cheapest"));
    free(out);
    free(err);
    /* with the real budget the same questions are staffed and finish */
    ck_assert_int_eq(NSED(sim.url, &out, &err, "run", DEMO_WF, "--store",
                          dir, "--limit", "3", "--quiet",
                          "--allow-workflow-change"), 0);
    free(out);
    free(err);
    st = tu_nsed_status(dir);
    ck_assert_int_eq((int)tu_jnum(st, "questions", "done"), 3);
    ck_assert_int_eq((int)tu_jnum(st, "questions", "incomplete"), 0);
    ck_assert_int_eq((int)tu_jnum(cJSON_GetObjectItem(st, "broker"),
                               "unstaffed", NULL), 0);
    cJSON_Delete(st);
    tu_sim_stop(&sim);
    free(text);
    free(wf);
    free(dir);
}
END_TEST


/* ---- objective accuracy: the prediction against exact enumeration ------ */

/* The prediction's protocol model, enumerated exactly here: seats
 * proposing right (right[i]), every evaluating seat judging every other
 * answer (right with p_v) with an entry +-1/sqrt(n - 1), the highest
 * score winning, ties shared equally. win[j] receives the probability
 * that seat j's candidate wins; the rest is "no winner". */
static void enum_vote(const broker_seat_skill *sk, size_t n, const bool *right,
                      double *win)
{
    size_t pairs[16][2], np = 0;

    for (size_t j = 0; j < n; j++)
        win[j] = 0;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++)
            if (i != j && sk[i].evaluates) {
                pairs[np][0] = i;
                pairs[np++][1] = j;
            }
    for (uint32_t bits = 0; bits < (1u << np); bits++) {
        double pr = 1, score[8] = {0}, best = -1e9;
        bool scored[8] = {false};
        size_t ntied = 0, tied[8];

        for (size_t k = 0; k < np; k++) {
            size_t i = pairs[k][0], j = pairs[k][1];
            bool judged_right_way = bits >> k & 1;
            bool says_right = judged_right_way == right[j];

            pr *= judged_right_way ? sk[i].p_v : 1 - sk[i].p_v;
            score[j] += (says_right ? 1 : -1) / sqrt((double)(n - 1));
            scored[j] = true;
        }
        for (size_t j = 0; j < n; j++)
            if (scored[j] && score[j] > best + 1e-9)
                best = score[j];
        for (size_t j = 0; j < n; j++)
            if (scored[j] && fabs(score[j] - best) <= 1e-9)
                tied[ntied++] = j;
        for (size_t t = 0; t < ntied; t++)
            win[tied[t]] += pr / (double)ntied;
    }
}

/* Exact accuracy of the model over `rounds` rounds without stop rules
 * (every seat evaluates, so every round has a winner). */
static double enum_rounds(const broker_seat_skill *sk, size_t n,
                          const bool *right, int rounds)
{
    double win[8], acc = 0;

    enum_vote(sk, n, right, win);
    for (size_t w = 0; w < n; w++) {
        if (win[w] == 0)
            continue;
        if (rounds == 1) {
            acc += win[w] * right[w];
            continue;
        }
        /* each seat adopts the winner's answer when it judges it right */
        for (uint32_t acc_bits = 0; acc_bits < (1u << n); acc_bits++) {
            bool next[8];
            double pr = 1;

            for (size_t i = 0; i < n; i++) {
                bool judged_right_way = acc_bits >> i & 1;
                bool adopts = judged_right_way == right[w];

                pr *= judged_right_way ? sk[i].p_v : 1 - sk[i].p_v;
                next[i] = adopts ? right[w] : right[i];
            }
            acc += win[w] * pr * enum_rounds(sk, n, next, rounds - 1);
        }
    }
    return acc;
}

static double enum_accuracy(const broker_seat_skill *sk, size_t n, int rounds)
{
    double acc = 0;

    for (uint32_t bits = 0; bits < (1u << n); bits++) {
        bool right[8];
        double pr = 1;

        for (size_t i = 0; i < n; i++) {
            right[i] = bits >> i & 1;
            pr *= right[i] ? sk[i].p_g : 1 - sk[i].p_g;
        }
        acc += pr * enum_rounds(sk, n, right, rounds);
    }
    return acc;
}

/* 200000 draws: a standard error below 0.0012 */
#define MANY_DRAWS 200000
#define DRAW_TOL 0.006

START_TEST(predicted_accuracy_two_seats_by_hand)
{
    static const double cases[][4] = {
        {0.75, 0.85, 0.30, 0.90},
        {0.15, 0.80, 0.15, 0.80},
        {0.60, 0.55, 0.40, 0.95},
    };
    broker_protocol one = {.rounds_min = 1, .rounds_max = 1};

    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        double a = cases[c][0], va = cases[c][1], b = cases[c][2],
               vb = cases[c][3];
        broker_seat_skill sk[2] = {{a, va, true}, {b, vb, true}};
        /* one right, one wrong: the right one wins when both judge right,
         * and half the time when exactly one does (a tie of +1 and +1 or
         * -1 and -1) */
        double w = va * vb + 0.5 * (va * (1 - vb) + (1 - va) * vb);
        double hand = a * b + (a * (1 - b) + (1 - a) * b) * w;
        double got = broker_predict_accuracy(sk, 2, &one, MANY_DRAWS);

        ck_assert_msg(fabs(got - hand) < DRAW_TOL, "case %zu: %.4f, hand %.4f",
                      c, got, hand);
        ck_assert(fabs(enum_accuracy(sk, 2, 1) - hand) < 1e-12);
    }
}
END_TEST

START_TEST(predicted_accuracy_propose_only_seats)
{
    broker_protocol one = {.rounds_min = 1, .rounds_max = 1};
    broker_seat_skill sk[2] = {{0.75, 0.85, true}, {0.5, 0.35, false}};
    broker_seat_skill none[2] = {{0.75, 0.85, false}, {0.5, 0.35, false}};
    double got;

    /* only the propose-only seat's candidate is scored: it always wins */
    got = broker_predict_accuracy(sk, 2, &one, MANY_DRAWS);
    ck_assert_msg(fabs(got - 0.5) < DRAW_TOL, "%.4f", got);
    /* nobody evaluates: the majority, a disagreement a coin flip */
    got = broker_predict_accuracy(none, 2, &one, MANY_DRAWS);
    ck_assert_msg(fabs(got - (0.75 * 0.5 + 0.5 * (0.75 * 0.5 + 0.25 * 0.5))) <
                      DRAW_TOL,
                  "%.4f", got);
    /* a lone seat is its own answer */
    got = broker_predict_accuracy(sk, 1, &one, MANY_DRAWS);
    ck_assert_msg(fabs(got - 0.75) < DRAW_TOL, "%.4f", got);
}
END_TEST

START_TEST(predicted_accuracy_matches_enumeration)
{
    static const broker_seat_skill teams[][3] = {
        {{0.75, 0.85, true}, {0.30, 0.90, true}, {0.15, 0.80, true}},
        {{0.15, 0.80, true}, {0.15, 0.80, true}, {0.15, 0.80, true}},
        {{0.75, 0.85, true}, {0.30, 0.90, true}, {0.50, 0.35, false}},
        {{0.50, 0.60, true}, {0.45, 0.70, true}, {0.55, 0.75, true}},
    };

    for (size_t t = 0; t < sizeof teams / sizeof teams[0]; t++)
        for (int rounds = 1; rounds <= 2; rounds++) {
            broker_protocol pr = {.rounds_min = 1, .rounds_max = rounds};
            double exact, got;

            if (!teams[t][2].evaluates && rounds == 2)
                continue; /* enum_rounds assumes a winner every round */
            exact = enum_accuracy(teams[t], 3, rounds);
            got = broker_predict_accuracy(teams[t], 3, &pr, MANY_DRAWS);
            ck_assert_msg(fabs(got - exact) < DRAW_TOL,
                          "team %zu, %d rounds: %.4f, exact %.4f", t, rounds,
                          got, exact);
        }
    /* and the two-seat teams over two rounds */
    {
        broker_seat_skill sk[2] = {{0.75, 0.85, true}, {0.30, 0.90, true}};
        broker_protocol pr = {.rounds_min = 1, .rounds_max = 2};
        double exact = enum_accuracy(sk, 2, 2);
        double got = broker_predict_accuracy(sk, 2, &pr, MANY_DRAWS);

        ck_assert_msg(fabs(got - exact) < DRAW_TOL, "%.4f, exact %.4f", got,
                      exact);
    }
}
END_TEST

/* The accuracy search returns the best feasible team (by the prediction)
 * of a brute force over every subset. */
START_TEST(accuracy_search_matches_brute_force)
{
    rng r = {77};
    broker_protocol pr = {.rounds_min = 1, .rounds_max = 2, .stable_answer = 2};

    for (int iter = 0; iter < 60; iter++) {
        instance in;
        broker_solution sol;
        double best = -1;
        bool any = false;
        int rc;

        random_instance(&r, &in, 7);
        in.p.accuracy = &pr;
        for (size_t i = 0; i < in.p.nitems; i++) {
            in.items[i].value = 1 - 0.01 * (double)i; /* order = index */
            in.items[i].skill.p_g = runif(&r);
            in.items[i].skill.p_v = runif(&r);
            in.items[i].skill.evaluates = runif(&r) < 0.8;
        }
        for (uint64_t set = 1; set < (uint64_t)1 << in.p.nitems; set++) {
            broker_seat_skill sk[WORKFLOW_MAX_SEATS];
            size_t n = 0;
            double acc;

            if (!brute_feasible(&in.p, set))
                continue;
            for (size_t i = 0; i < in.p.nitems; i++)
                if (set >> i & 1)
                    sk[n++] = in.items[i].skill;
            acc = broker_predict_accuracy(sk, n, &pr, BROKER_PREDICT_DRAWS);
            any = true;
            best = acc > best ? acc : best;
        }
        rc = broker_solve(&in.p, &sol);
        if (!any) {
            ck_assert_int_eq(rc, NSED_ENOTFOUND);
            continue;
        }
        ck_assert_int_eq(rc, 0);
        ck_assert(brute_feasible(&in.p, sol.chosen));
        ck_assert_msg(fabs(sol.value - best) < 1e-12, "iter %d: %.4f vs %.4f",
                      iter, sol.value, best);
    }
}
END_TEST

/* A pool too large to search exhaustively (12 models, teams of 1..4: 793
 * teams) is searched locally: within 0.02 of the best of a brute force on
 * every instance here. */
START_TEST(accuracy_local_search_is_near_brute_force)
{
    rng r = {99};
    broker_protocol pr = {.rounds_min = 1, .rounds_max = 2, .stable_answer = 2};
    int exact = 0;

    for (int iter = 0; iter < 8; iter++) {
        broker_item items[12];
        int role_seats[1] = {4};
        broker_problem p = {.items = items,
                            .nitems = 12,
                            .size_min = 1,
                            .size_max = 4,
                            .role_seats = role_seats,
                            .nroles = 1,
                            .accuracy = &pr};
        broker_solution sol;
        double best = -1;

        memset(items, 0, sizeof items);
        for (int i = 0; i < 12; i++) {
            items[i].value = 1 - 0.01 * i;
            items[i].family = i;
            items[i].gpu = -1;
            items[i].roles = 1;
            items[i].skill.p_g = 0.1 + 0.7 * runif(&r);
            items[i].skill.p_v = 0.3 + 0.65 * runif(&r);
            items[i].skill.evaluates = items[i].skill.p_v > 0.5;
        }
        for (uint64_t set = 1; set < 1u << 12; set++) {
            broker_seat_skill sk[4];
            size_t n = 0;

            if (__builtin_popcountll(set) > 4)
                continue;
            for (int i = 0; i < 12; i++)
                if (set >> i & 1)
                    sk[n++] = items[i].skill;
            best = fmax(best, broker_predict_accuracy(sk, n, &pr,
                                                      BROKER_PREDICT_DRAWS));
        }
        ck_assert_int_eq(broker_solve(&p, &sol), 0);
        ck_assert_msg(sol.value >= best - 0.02, "iter %d: %.4f, best %.4f",
                      iter, sol.value, best);
        exact += fabs(sol.value - best) < 1e-12;
    }
    fprintf(stderr,
            "local search: %d of 8 instances at the brute-force "
            "best\n",
            exact);
}
END_TEST

/* ---- the default objective, propose-only seats, exploration ------------ */

static const char pool3[] =
    "name: t\n"
    "version: 1\n"
    "models:\n"
    "  - {id: a, endpoint: http://127.0.0.1:1/v1, model: a, "
    "prior: {p_gen: 0.75, p_ver: 0.85}}\n"
    "  - {id: b, endpoint: http://127.0.0.1:1/v1, model: b, "
    "prior: {p_gen: 0.3, p_ver: 0.9}}\n"
    "  - {id: c, endpoint: http://127.0.0.1:1/v1, model: c, "
    "prior: {p_gen: 0.5, p_ver: 0.35}}\n"
    "  - {id: d, endpoint: http://127.0.0.1:1/v1, model: d, "
    "prior: {p_gen: 0.15, p_ver: 0.8}}\n"
    "teams:\n"
    "  t: {roles: [{name: s, count: 3, models: [a, b, c, d]}]}\n";

/* A workflow that omits broker.objective keeps the hash it had when the
 * default was evidence as long as the objective does not act (policy
 * fixed); under knapsack, where the team now differs, the hash differs. */
START_TEST(default_objective_keeps_fixed_hashes)
{
    workflow *fixed = tu_load_workflow(pool3, NULL);
    workflow *fixed_ev = tu_load_workflow(pool3, "broker: {objective: "
                                                 "evidence}\n");
    workflow *fixed_gen = tu_load_workflow(pool3, "broker: {objective: "
                                                  "generation}\n");
    workflow *ks = tu_load_workflow(pool3, "broker: {policy: knapsack}\n");
    workflow *ks_ev = tu_load_workflow(pool3, "broker: {policy: knapsack, "
                                              "objective: evidence}\n");
    workflow *ks_x = tu_load_workflow(pool3, "broker: {policy: knapsack, "
                                             "explore: 0.25}\n");

    ck_assert_int_eq(fixed->broker.objective, WORKFLOW_OBJECTIVE_ACCURACY);
    ck_assert_str_eq(workflow_hash(fixed), workflow_hash(fixed_ev));
    ck_assert_str_ne(workflow_hash(fixed), workflow_hash(fixed_gen));
    ck_assert_str_ne(workflow_hash(ks), workflow_hash(ks_ev));
    ck_assert(tu_contains(workflow_canonical(fixed), "\"objective\":"
                                                     "\"evidence\""));
    ck_assert(tu_contains(workflow_canonical(ks), "\"objective\":"
                                                  "\"accuracy\""));
    /* explore at its default is not written; another value is */
    ck_assert(!tu_contains(workflow_canonical(ks), "explore"));
    ck_assert(tu_contains(workflow_canonical(ks_x), "\"explore\":0.25"));
    ck_assert(ks->broker.explore == 0.1);
    workflow_free(fixed);
    workflow_free(fixed_ev);
    workflow_free(fixed_gen);
    workflow_free(ks);
    workflow_free(ks_ev);
    workflow_free(ks_x);
}
END_TEST

/* A model that may not evaluate (p_v 0.35) sits as a propose-only seat
 * under the accuracy objective (it was dropped before, and still is under
 * evidence); its seat makes no evaluation call while its answer is
 * evaluated; the flag survives the state's JSON, and a state written
 * without it reads as a seat that evaluates. */
START_TEST(poor_verifier_sits_propose_only)
{
    workflow *acc = tu_load_workflow(pool3, "broker: {policy: knapsack, "
                                            "explore: 0, team_size: "
                                            "{min: 3, max: 3}}\n");
    workflow *ev = tu_load_workflow(pool3, "broker: {policy: knapsack, "
                                           "objective: evidence, explore: 0, "
                                           "team_size: {min: 3, max: 3}}\n");
    broker_decision *d = NULL, *e = NULL;
    nsed_err err = {0};
    state_question q = {"q1", "What is 6 * 7?", "42", NULL, 0};
    state *st = NULL, *back = NULL;
    stage_requests reqs = {0};
    char *json = NULL, *json2 = NULL, *old;
    long c_seat = -1;

    ck_assert_int_eq(broker_decide(acc, NULL, NULL, 0, &d, &err), 0);
    ck_assert(d->staffed);
    ck_assert(cand(acc, d, "c")->admitted && cand(acc, d, "c")->propose_only);
    ck_assert(tu_contains(cand(acc, d, "c")->why, "propose-only"));
    /* exact enumeration: {a, b, c} with c proposing only beats {a, b, d},
     * the only other team of three */
    {
        broker_seat_skill abc[3] = {{0.75, 0.85, true},
                                    {0.3, 0.9, true},
                                    {0.5, 0.35, false}};
        broker_seat_skill abd[3] = {{0.75, 0.85, true},
                                    {0.3, 0.9, true},
                                    {0.15, 0.8, true}};

        ck_assert(enum_accuracy(abc, 3, 1) > enum_accuracy(abd, 3, 1) + 0.05);
    }
    ck_assert(chosen(acc, d, "a") && chosen(acc, d, "b") &&
              chosen(acc, d, "c"));
    ck_assert_int_eq(broker_decide(ev, NULL, NULL, 0, &e, &err), 0);
    ck_assert(!cand(ev, e, "c")->admitted);
    ck_assert(!cand(ev, e, "c")->propose_only);

    ck_assert_int_eq(state_new(acc, &q, d->seats.seats, d->seats.nseats, &st,
                               &err),
                     0);
    for (size_t s = 0; s < st->nseats; s++) {
        ck_assert(st->seats[s].propose_only == (st->seats[s].model == 2));
        if (st->seats[s].model == 2)
            c_seat = (long)s;
        st->cur->proposals[s].status = STATE_PROPOSAL_OK;
        st->cur->proposals[s].text = strdup("x \\boxed{42}");
    }
    ck_assert_int_ge(c_seat, 0);
    st->stage = STATE_STAGE_ANONYMIZE;
    ck_assert_int_eq(anonymize_run(st, acc, &err), 0);
    ck_assert_uint_eq(st->cur->ncand, 3); /* its answer is a candidate */
    ck_assert_int_eq(st->cur->evals[c_seat].status, STATE_EVAL_IDLE);
    ck_assert_int_eq(evaluate_plan(st, acc, &reqs), 0);
    ck_assert_uint_eq(reqs.n, 2);
    for (size_t k = 0; k < reqs.n; k++)
        ck_assert_uint_ne(reqs.items[k].seat, (size_t)c_seat);
    stage_requests_release(&reqs);

    ck_assert_int_eq(state_to_json(st, &json), 0);
    ck_assert(tu_contains(json, "\"propose_only\":true"));
    ck_assert_int_eq(state_from_json(json, strlen(json), acc, &back, &err), 0);
    ck_assert(back->seats[c_seat].propose_only);
    ck_assert_int_eq(state_to_json(back, &json2), 0);
    ck_assert_str_eq(json, json2);
    state_free(back);
    back = NULL;
    /* the same state as an older nsed wrote it */
    old = strdup(json);
    for (char *at; (at = strstr(old, ",\"propose_only\":true"));)
        memmove(at, at + strlen(",\"propose_only\":true"),
                strlen(at + strlen(",\"propose_only\":true")) + 1);
    ck_assert_int_eq(state_from_json(old, strlen(old), acc, &back, &err), 0);
    for (size_t s = 0; s < back->nseats; s++)
        ck_assert(!back->seats[s].propose_only);
    state_free(back);
    free(old);
    free(json);
    free(json2);
    state_free(st);
    broker_decision_free(d);
    broker_decision_free(e);
    workflow_free(acc);
    workflow_free(ev);
}
END_TEST

/* Exploration: a seeded share of the questions, chosen by hash of seed and
 * id, seats a model the best team leaves out; the rest get the best
 * team; the same question always gets the same decision. */
START_TEST(exploration_is_a_seeded_share)
{
    workflow *wf = tu_load_workflow(pool3, "broker: {policy: knapsack, "
                                           "explore: 0.25, team_size: "
                                           "{min: 2, max: 2}}\n");
    workflow *off = tu_load_workflow(pool3, "broker: {policy: knapsack, "
                                            "explore: 0, team_size: "
                                            "{min: 2, max: 2}}\n");
    broker_decision *best = NULL;
    nsed_err err = {0};
    int explored = 0, per_model[4] = {0};

    ck_assert_int_eq(broker_decide(off, NULL, NULL, 0, &best, &err), 0);
    for (int i = 0; i < 400; i++) {
        char qid[32], *j1 = NULL, *j2 = NULL;
        broker_decision *d = NULL, *again = NULL;

        snprintf(qid, sizeof qid, "q-%d", i);
        ck_assert_int_eq(broker_decide_question(wf, NULL, NULL, 0, qid, &d,
                                                &err),
                         0);
        ck_assert_int_eq(broker_decide_question(wf, NULL, NULL, 0, qid, &again,
                                                &err),
                         0);
        ck_assert_int_eq(broker_decision_json(wf, d, &j1), 0);
        ck_assert_int_eq(broker_decision_json(wf, again, &j2), 0);
        ck_assert_str_eq(j1, j2);
        ck_assert(d->staffed);
        if (d->explore) {
            explored++;
            ck_assert_int_ge(d->explored, 0);
            ck_assert(!best->cands[d->explored].chosen);
            ck_assert(d->cands[d->explored].chosen);
            per_model[d->explored]++;
            ck_assert(tu_contains(j1, "\"explore\":true"));
        } else {
            ck_assert_int_eq(d->explored, -1);
            for (size_t m = 0; m < d->ncands; m++)
                ck_assert(d->cands[m].chosen == best->cands[m].chosen);
            ck_assert(tu_contains(j1, "\"explored\":null"));
        }
        free(j1);
        free(j2);
        broker_decision_free(d);
        broker_decision_free(again);
    }
    /* Binomial(400, 0.25): mean 100, sd 8.7 */
    ck_assert_msg(explored >= 65 && explored <= 135, "%d explored", explored);
    /* the models left out share it (ties among the unmeasured by a draw) */
    for (size_t m = 0; m < 4; m++)
        if (!best->cands[m].chosen)
            ck_assert_msg(per_model[m] >= 15, "model %zu explored %d times", m,
                          per_model[m]);
    broker_decision_free(best);
    workflow_free(wf);
    workflow_free(off);
}
END_TEST

Suite *tu_suite(void)
{
    Suite *s = suite_create("broker");
    TCase *tc = tcase_create("knapsack");

    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, knapsack_matches_brute_force);
    tcase_add_test(tc, knapsack_large_pool_is_fast);
    tcase_add_test(tc, knapsack_rejects_bad_problems);
    tcase_add_test(tc, roles_are_matched_not_greedy);
    tcase_add_test(tc, predicted_accuracy_two_seats_by_hand);
    tcase_add_test(tc, predicted_accuracy_propose_only_seats);
    tcase_add_test(tc, predicted_accuracy_matches_enumeration);
    tcase_add_test(tc, accuracy_search_matches_brute_force);
    tcase_add_test(tc, accuracy_local_search_is_near_brute_force);
    suite_add_tcase(s, tc);
    tc = tcase_create("decisions");
    tcase_add_test(tc, priors_decide_within_constraints);
    tcase_add_test(tc, infeasible_budget_gives_reason);
    tcase_add_test(tc, fixed_policy_uses_template);
    tcase_add_test(tc, default_objective_keeps_fixed_hashes);
    tcase_add_test(tc, poor_verifier_sits_propose_only);
    tcase_add_test(tc, exploration_is_a_seeded_share);
    suite_add_tcase(s, tc);
    tc = tcase_create("runs");
    tcase_add_checked_fixture(tc, tu_tmp_setup, tu_tmp_teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, brokered_run_beats_everyone_for_less);
    tcase_add_test(tc, telemetry_file_steers_another_run);
    tcase_add_test(tc, resumed_questions_keep_their_decision);
    tcase_add_test(tc, unstaffed_questions_are_incomplete_with_reason);
    suite_add_tcase(s, tc);
    return s;
}
