/* test_pool.c -- the pool experiment of issue 12: does the default broker
 * objective seat a team as good as the best one?
 *
 * The pool (tests/data/broker/pool-sim.yaml, pool.yaml): one strong model
 * (p_g .75, p_v .85), three weak generators that verify well (.15, .80),
 * two twins of one family (.30, .90) and two poor verifiers (.50, .35);
 * teams of one to three seats, at most one model per family. The old
 * default objective (evidence, sum of p_v - p_g) seats the three weak
 * generators; the new one (accuracy) must come within 2 points of the best
 * team, and the best team is found here independently of the broker's
 * prediction: every candidate team is run on its own through nsed-sim and
 * its accuracy measured.
 *
 * Which teams: the models of one kind are interchangeable (same
 * parameters; in the simulator they differ only in their random streams),
 * so a team is a count of each kind, and the suite runs one team of every
 * such count of 1..3 seats: 23 teams, brute force up to that symmetry (all
 * 85 distinct teams would take four times as long and measure the same 23
 * up to noise).
 */
#include "testutil.h"

#include <check.h>
#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define POOL_DIR NSED_SOURCE_DIR "/tests/data/broker/"
#define POOL_SIM POOL_DIR "pool-sim.yaml"
#define POOL_WF POOL_DIR "pool.yaml"
#define POOL_Q POOL_DIR "pool-questions.jsonl"
#define NQ 160

/* The kinds of model, with their simulator parameters and the workflow
 * ids of each (the twins: one per team, max_per_family 1). */
enum kind { STRONG, WEAK, TWIN, POOR, NKIND };
static const char *const kind_ids[NKIND][3] = {{"strong"},
                                               {"weak-1", "weak-2", "weak-3"},
                                               {"twin-1"},
                                               {"poor-1", "poor-2"}};
static const int kind_max[NKIND] = {1, 3, 1, 2};

/* The workflow text up to its broker section, and that section replaced. */
static char *variant(const char *broker_and_teams)
{
    size_t len = 0;
    char *base = tu_read_file(POOL_WF, &len), *cut, *out;

    ck_assert_ptr_nonnull(base);
    cut = strstr(base, "\nbroker:");
    ck_assert_ptr_nonnull(cut);
    cut[1] = '\0';
    len = strlen(base) + strlen(broker_and_teams) + 1;
    out = malloc(len);
    ck_assert_ptr_nonnull(out);
    snprintf(out, len, "%s%s", base, broker_and_teams);
    free(base);
    return out;
}

/* Run wf_text on the pool's questions into store dir; its status. */
static cJSON *run_text(const tu_sim *sim, const char *name, const char *wf_text)
{
    char *wf = tu_path(tu_tmp, name), *dir, *out = NULL, *err = NULL;
    size_t n = strlen(name);
    char sname[128];
    cJSON *st;
    int rc;

    snprintf(sname, sizeof sname, "%.*s.store", (int)n, name);
    dir = tu_path(tu_tmp, sname);
    tu_write_file(wf, wf_text, strlen(wf_text));
    rc = TU_NSED(sim->url, &out, &err, "run", wf, "--questions", POOL_Q,
                 "--store", dir, "--quiet");
    ck_assert_msg(rc == 0, "run %s: exit %d: %s", name, rc, err);
    st = tu_nsed_status(dir);
    ck_assert_int_eq((int)tu_jnum(st, "questions", "done"), NQ);
    free(out);
    free(err);
    free(wf);
    free(dir);
    return st;
}

static double accuracy(const cJSON *st)
{
    return tu_jnum(st, "accuracy", "nsed_correct") / NQ;
}

/* How many decisions chose model id (0 when it was never chosen). */
static int chosen_count(const cJSON *st, const char *id)
{
    const cJSON *c = cJSON_GetObjectItem(
        cJSON_GetObjectItem(cJSON_GetObjectItem(st, "broker"), "chosen"), id);

    return cJSON_IsNumber(c) ? c->valueint : 0;
}

/* A team as counts of each kind: the workflow that seats exactly it (the
 * broker's rules otherwise: a poor verifier proposes only). */
static char *team_workflow(const int count[NKIND], char *label, size_t cap)
{
    char yaml[2048], models[512] = "";
    int k = 0;
    size_t used = 0;

    label[0] = '\0';
    for (int t = 0; t < NKIND; t++)
        for (int i = 0; i < count[t]; i++) {
            snprintf(models + strlen(models), sizeof models - strlen(models),
                     "%s%s", k ? ", " : "", kind_ids[t][i]);
            used += (size_t)snprintf(label + used, cap - used, "%s%s",
                                     used ? "+" : "", kind_ids[t][i]);
            k++;
        }
    snprintf(yaml, sizeof yaml,
             "broker:\n"
             "  policy: knapsack\n"
             "  explore: 0\n"
             "  team_size: {min: %d, max: %d}\n"
             "  max_per_family: 1\n"
             "  evaluator_min_pv: 0.5\n"
             "  priors: {p_gen: 0.5, p_ver: 0.6, strength: 50}\n"
             "teams:\n"
             "  pool:\n"
             "    roles:\n"
             "      - name: solver\n"
             "        count: %d\n"
             "        models: [%s]\n",
             k, k, k, models);
    return variant(yaml);
}

START_TEST(default_objective_seats_a_team_near_the_best)
{
    tu_sim sim;
    char *old_text = variant("broker:\n"
                             "  policy: knapsack\n"
                             "  objective: evidence\n"
                             "  explore: 0\n"
                             "  team_size: {min: 1, max: 3}\n"
                             "  max_per_family: 1\n"
                             "  evaluator_min_pv: 0.5\n"
                             "  priors: {p_gen: 0.5, p_ver: 0.6, "
                             "strength: 50}\n"
                             "teams:\n"
                             "  pool:\n"
                             "    roles:\n"
                             "      - name: solver\n"
                             "        count: 3\n"
                             "        models: [strong, weak-1, weak-2, "
                             "weak-3, twin-1, twin-2, poor-1, poor-2]\n");
    char *new_text = tu_read_file(POOL_WF, NULL);
    cJSON *old_st, *new_st;
    double acc_old, acc_new, best = -1;
    char best_label[128] = "", label[128];
    int count[NKIND], nteams = 0;

    tu_sim_start(&sim, POOL_SIM, NULL, NULL);
    old_st = run_text(&sim, "old-default.yaml", old_text);
    new_st = run_text(&sim, "new-default.yaml", new_text);
    acc_old = accuracy(old_st);
    acc_new = accuracy(new_st);
    /* the old objective seats the three weak generators every time */
    ck_assert_int_eq(chosen_count(old_st, "weak-1"), NQ);
    ck_assert_int_eq(chosen_count(old_st, "weak-2"), NQ);
    ck_assert_int_eq(chosen_count(old_st, "weak-3"), NQ);

    /* every team of 1..3 seats, up to interchangeable models */
    for (count[STRONG] = 0; count[STRONG] <= kind_max[STRONG]; count[STRONG]++)
        for (count[WEAK] = 0; count[WEAK] <= kind_max[WEAK]; count[WEAK]++)
            for (count[TWIN] = 0; count[TWIN] <= kind_max[TWIN]; count[TWIN]++)
                for (count[POOR] = 0; count[POOR] <= kind_max[POOR];
                     count[POOR]++) {
                    int n = count[STRONG] + count[WEAK] + count[TWIN] +
                            count[POOR];
                    char *text, name[160];
                    cJSON *st;
                    double acc;

                    if (n < 1 || n > 3)
                        continue;
                    text = team_workflow(count, label, sizeof label);
                    snprintf(name, sizeof name, "team-%s.yaml", label);
                    st = run_text(&sim, name, text);
                    acc = accuracy(st);
                    nteams++;
                    fprintf(stderr, "pool: team %-24s accuracy %.3f\n", label,
                            acc);
                    if (acc > best) {
                        best = acc;
                        snprintf(best_label, sizeof best_label, "%s", label);
                    }
                    cJSON_Delete(st);
                    free(text);
                }
    fprintf(stderr,
            "pool: old default (evidence) %.3f, new default (accuracy) %.3f, "
            "best team %s %.3f (%d teams)\n",
            acc_old, acc_new, best_label, best, nteams);
    ck_assert_int_eq(nteams, 23);
    ck_assert_msg(acc_new >= best - 0.02, "new default %.3f, best team %s %.3f",
                  acc_new, best_label, best);
    ck_assert_msg(acc_new > acc_old + 0.3, "new %.3f, old %.3f", acc_new,
                  acc_old);
    cJSON_Delete(old_st);
    cJSON_Delete(new_st);
    free(old_text);
    free(new_text);
    tu_sim_stop(&sim);
}
END_TEST

/* Run text with --max-active 4 (later questions see what earlier ones
 * measured); its status. */
static cJSON *run_learning(const tu_sim *sim, const char *name,
                           const char *wf_text)
{
    char *wf = tu_path(tu_tmp, name), *dir, *out = NULL, *err = NULL;
    char sname[128];
    cJSON *st;
    int rc;

    snprintf(sname, sizeof sname, "%s.store", name);
    dir = tu_path(tu_tmp, sname);
    tu_write_file(wf, wf_text, strlen(wf_text));
    rc = TU_NSED(sim->url, &out, &err, "run", wf, "--questions", POOL_Q,
                 "--store", dir, "--quiet", "--max-active", "4");
    ck_assert_msg(rc == 0, "run %s: exit %d: %s", name, rc, err);
    st = tu_nsed_status(dir);
    free(out);
    free(err);
    free(wf);
    free(dir);
    return st;
}

/* The text with the strong model's prior made pessimistic (p_gen 0.1 and
 * p_ver 0.3: a propose-only seat no better than the poor verifiers),
 * priors held weakly (strength 1), and exploration at share x. As a
 * propose-only seat it evaluates nothing, so only its p_g is measured. */
static char *pessimistic(const char *x)
{
    char broker[1024], *text, *at;
    const char *from = "prior: {p_gen: 0.75, p_ver: 0.85}";
    const char *to = "prior: {p_gen: 0.10, p_ver: 0.30}";

    snprintf(broker, sizeof broker,
             "broker:\n"
             "  policy: knapsack\n"
             "  explore: %s\n"
             "  team_size: {min: 1, max: 3}\n"
             "  max_per_family: 1\n"
             "  evaluator_min_pv: 0.5\n"
             "  priors: {p_gen: 0.5, p_ver: 0.6, strength: 1}\n"
             "teams:\n"
             "  pool:\n"
             "    roles:\n"
             "      - name: solver\n"
             "        count: 3\n"
             "        models: [strong, weak-1, weak-2, weak-3, twin-1, "
             "twin-2, poor-1, poor-2]\n",
             x);
    text = variant(broker);
    at = strstr(text, from);
    ck_assert_ptr_nonnull(at);
    memcpy(at, to, strlen(to)); /* same length */
    return text;
}

/* A model excluded on its prior is never measured, so without exploration
 * it never comes back; with it, its measurements bring it back. */
START_TEST(exploration_brings_back_a_model_its_prior_excluded)
{
    tu_sim sim;
    char *off = pessimistic("0"), *on = pessimistic("0.2");
    cJSON *st_off, *st_on;
    int strong_off, strong_on;

    tu_sim_start(&sim, POOL_SIM, NULL, NULL);
    st_off = run_learning(&sim, "explore-off.yaml", off);
    st_on = run_learning(&sim, "explore-on.yaml", on);
    strong_off = chosen_count(st_off, "strong");
    strong_on = chosen_count(st_on, "strong");
    fprintf(stderr,
            "pool: strong model with a pessimistic prior seated on %d of %d "
            "questions without exploration (accuracy %.3f), %d with "
            "explore 0.2 (accuracy %.3f)\n",
            strong_off, NQ, accuracy(st_off), strong_on, accuracy(st_on));
    ck_assert_int_eq(strong_off, 0);
    /* Exploration measures it: the explored share is 0.2 of the
     * questions by hash, and the excluded models take turns as the least
     * measured, so it gets about its turn of that share: at least a
     * quarter of it (a loaded clean-clone CI run measured 10 seats in
     * all, the turn order following which questions commit first; 152 when
     * its measurements also seat it in the best team). Whether its
     * measurements then put it
     * into the best team depends on live telemetry, i.e. on which
     * questions end first: measured 100..111 seats (+0.06..+0.12
     * accuracy) in the normal build, 26 seats under ASan on a loaded
     * machine; so only the measuring is asserted. */
    ck_assert_int_ge(strong_on, NQ / 20);
    cJSON_Delete(st_off);
    cJSON_Delete(st_on);
    free(off);
    free(on);
    tu_sim_stop(&sim);
}
END_TEST

Suite *tu_suite(void)
{
    Suite *su = suite_create("pool");
    TCase *tc = tcase_create("pool");

    tcase_add_checked_fixture(tc, tu_tmp_setup, tu_tmp_teardown);
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, default_objective_seats_a_team_near_the_best);
    tcase_add_test(tc, exploration_brings_back_a_model_its_prior_excluded);
    suite_add_tcase(su, tc);
    return su;
}
