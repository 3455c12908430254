/* broker.h -- picks the team (the seats) for each question.
 *
 * The workflow's tiers map a question's tags to a team template
 * (workflow_team_for_tags). Two policies (docs/broker.md is the user
 * guide):
 *
 * `fixed`: the template's roles are used as written: a role with count c
 * whose admitted models (models and families it lists, in workflow order)
 * are m_0..m_{n-1} fills its seats with m_0, m_1, ... m_{c-1}, wrapping
 * around when c > n (so `count: 3, models: [a]` is a homogeneous team of
 * three a's).
 *
 * `knapsack`: a 0/1 knapsack over the pool, the models the template's
 * roles admit (each model at most once). From the telemetry
 * (telemetry.h) every model gets p_g, p_v and its expected usage; then
 *   value(m)  = p_v - p_g (objective evidence), p_v (verification) or
 *               p_g (generation); objective accuracy (the default) has
 *               no per-model value: the team's predicted accuracy
 *               (broker_predict_accuracy) is maximized instead;
 *   cost(m,n) = (prompt(n) * price_in + completion * price_out) / 1e6
 *               USD, and prompt(n) + completion tokens, for a team of n
 *               seats, where prompt(n) and completion are the seat's
 *               estimated tokens for round 0 plus rounds.max - 1 later
 *               rounds (telemetry.h: a question may run every round, and
 *               the budget must hold then too);
 * and the broker maximizes the sum of the values of the team subject to
 *   - admission: p_v > broker.evaluator_min_pv (a seat evaluates); under
 *     objective accuracy a model at or below it is admitted as a
 *     propose-only seat (state_seat.propose_only) instead;
 *   - budget: the sum of cost(m, n) within usd_per_question and
 *     tokens_per_question (when set);
 *   - VRAM: models placed on the same GPU (same placement.host and
 *     placement.gpu) add up to at most vram_per_gpu_gb (when set);
 *   - size: team_size.min <= n <= min(team_size.max, the template's seats);
 *   - diversity: at most max_per_family models of one family;
 *   - roles: the chosen models can be given distinct seats of the
 *     template, a role taking at most `count` of the models it admits.
 * The solution is exact (branch and bound, broker_solve). Ties in value go
 * to the team found first in the order (value, then lower cost, then
 * workflow order), so the same inputs always give the same team. No
 * feasible team is a decision too: the question is not staffed and the
 * reason says which constraint failed.
 *
 * The runner calls broker_decide when a question starts and records the
 * decision (broker_decision_json) under STORE_STATE key id "\0b" in the
 * commit of the question's first state; a resumed question keeps the seats
 * its state holds and never decides again.
 */
#ifndef NSED_BROKER_H
#define NSED_BROKER_H

#include "pipeline/base/err.h"
#include "pipeline/broker/telemetry.h"
#include "pipeline/workflow/workflow.h"
#include "stages/state.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Models the knapsack takes into the search (after admission). */
#define BROKER_MAX_POOL 64

typedef struct broker_team {
    const workflow_team *team;               /* the template used */
    state_seat_spec seats[WORKFLOW_MAX_SEATS]; /* role/persona point into wf */
    size_t nseats;
} broker_team;

/* Choose the seats for a question with these tags by the fixed rule,
 * whatever the policy (the knapsack needs telemetry: broker_decide).
 * Returns 0 and fills *out; NSED_EINVAL (err says why) when the policy is
 * knapsack. */
NSED_MUST_CHECK int broker_choose(const workflow *wf, const char *const *tags,
                                  size_t ntags, broker_team *out,
                                  nsed_err *err);

/* ---- predicted team accuracy (objective accuracy) ----------------------- */

/* One seat as the prediction sees it. */
typedef struct broker_seat_skill {
    double p_g;     /* P(its round-0 answer is right) */
    double p_v;     /* P(a judgement of an answer it makes is right) */
    bool evaluates; /* false: a propose-only seat */
} broker_seat_skill;

/* The stopping rules the prediction follows (from wf->rounds). */
typedef struct broker_protocol {
    int rounds_min, rounds_max;
    double consensus_margin; /* 0: off */
    int stable_answer;       /* 0: off */
} broker_protocol;

/* Draws and seed of the prediction the broker uses. */
#define BROKER_PREDICT_DRAWS 600
#define BROKER_PREDICT_SEED UINT64_C(0x6e7365642d747761)
/* Pools with at most this many possible teams are searched exhaustively
 * under objective accuracy; larger ones by a local search (docs/broker.md). */
#define BROKER_PREDICT_MAX_TEAMS 512

/* The probability that a team of these n seats (1..WORKFLOW_MAX_SEATS)
 * ends with the right answer, by `draws` seeded simulations of the
 * protocol: every seat proposes (right with p_g, else a wrong answer of
 * its own); every evaluating seat judges every other answer (right with
 * p_v), giving +-1 of equal size, counted by signed quadratic voting; the
 * highest score wins (ties by a draw); in later rounds each seat adopts
 * the winner's answer when it judges it right, else keeps its own; the
 * question stops by pr's rules; the final answer is the last winner's (the
 * majority when no round had one). Deterministic: the same inputs give
 * the same number. 0 for n or draws out of range. */
double broker_predict_accuracy(const broker_seat_skill *s, size_t n,
                               const broker_protocol *pr, int draws);

/* ---- the knapsack (pure; exposed so tests can check it) ------------------ */

/* One model of the pool. usd[n] and tokens[n] are its expected cost in a
 * team of n seats (n = 1..size_max; nondecreasing in n). */
typedef struct broker_item {
    double value;
    double usd[WORKFLOW_MAX_SEATS + 1];
    double tokens[WORKFLOW_MAX_SEATS + 1];
    int family;     /* family number, 0..BROKER_MAX_POOL-1 */
    int gpu;        /* GPU number 0..BROKER_MAX_POOL-1, -1 unconstrained */
    double vram_gb; /* on that GPU */
    uint64_t roles; /* bit r set: role r admits it */
    broker_seat_skill skill; /* for objective accuracy */
} broker_item;

typedef struct broker_problem {
    const broker_item *items;
    size_t nitems;          /* <= BROKER_MAX_POOL */
    double budget_usd;      /* <= 0: no limit */
    double budget_tokens;   /* <= 0: no limit */
    double vram_per_gpu_gb; /* <= 0: no limit */
    int size_min;           /* >= 1 */
    int size_max;           /* size_min..WORKFLOW_MAX_SEATS */
    int max_per_family;     /* <= 0: no limit */
    const int *role_seats;  /* seats of each role (>= 1) */
    size_t nroles;          /* 1..64 */
    /* Not NULL: maximize broker_predict_accuracy of the team's skills
     * (seats in the search order) under these rules instead of the sum of
     * values (which then only order the search): every feasible team is
     * evaluated when the pool allows at most BROKER_PREDICT_MAX_TEAMS
     * teams of size_min..size_max, else a greedy growth followed by
     * swaps and drops while they help (not exact). */
    const broker_protocol *accuracy;
    bool has_required; /* only teams with item `required` (exploration) */
    size_t required;
} broker_problem;

typedef struct broker_solution {
    uint64_t chosen;      /* bit i: items[i] is in the team */
    int size;
    double value;
    double usd;           /* sum of usd[size] of the chosen */
    double tokens;
    int role_of[BROKER_MAX_POOL]; /* chosen item i sits in role role_of[i] */
    uint64_t nodes;       /* search nodes visited */
} broker_solution;

/* Solve p exactly: the feasible team (every constraint of the knapsack
 * above) of the highest value. Costs are compared with a relative
 * tolerance of 1e-12, values as exact sums. Returns 0 and fills *out;
 * NSED_ENOTFOUND when no team is feasible; NSED_EINVAL for a problem out
 * of range (too many items, roles or seats, bad sizes). */
NSED_MUST_CHECK int broker_solve(const broker_problem *p,
                                 broker_solution *out);

/* True when the chosen items (bit mask) can be given distinct role seats
 * (bipartite matching); role_of, when not NULL, receives an assignment
 * (indexed by item). */
bool broker_roles_fit(const broker_problem *p, uint64_t chosen,
                      int *role_of);

/* ---- decisions ---------------------------------------------------------- */

/* One model of the workflow as the broker saw it. */
typedef struct broker_candidate {
    size_t model;            /* index into wf->models */
    bool in_pool;            /* the template admits it */
    bool admitted;           /* in the search */
    bool chosen;
    bool propose_only;       /* admitted to propose only: p_v is not above
                                evaluator_min_pv (objective accuracy) */
    telemetry_estimate est;  /* for the team size reported (below) */
    double value;
    double usd;              /* expected per question, in that team size */
    double tokens;
    char why[256];           /* excluded or not chosen: why; chosen: role */
} broker_candidate;

typedef struct broker_decision {
    enum workflow_policy policy;
    const workflow_team *team; /* the template */
    bool staffed;              /* false: no feasible team (knapsack) */
    char reason[512];          /* !staffed: why */
    broker_team seats;         /* staffed: the seats */
    int rounds;                /* R of the cost estimate */
    int team_size;             /* size the costs are given for */
    double value;              /* expected value of the team */
    double usd;                /* expected cost per question */
    double tokens;
    uint64_t nodes;            /* knapsack search nodes */
    bool explore;              /* the question is in the exploration share */
    long explored;             /* the model exploration seated, or -1 */
    double explore_pick;       /* the draw that picks it among ties */
    broker_candidate *cands;   /* one per workflow model, in order */
    size_t ncands;
} broker_decision;

/* Decide the team for a question with these tags under wf's policy, with
 * what tel knows (NULL: nothing measured, the priors decide). With `fixed`
 * the seats are the template's (broker_choose) and the estimates are
 * reported for them. An infeasible knapsack is not an error: it returns 0
 * with staffed false and the reason. Returns 0 and sets *out (free with
 * broker_decision_free); NSED_EINVAL (err says why) when the pool passes
 * BROKER_MAX_POOL admitted models; NSED_ENOMEM. */
NSED_MUST_CHECK int broker_decide(const workflow *wf, const telemetry *tel,
                                  const char *const *tags, size_t ntags,
                                  broker_decision **out, nsed_err *err);

/* broker_decide for the question with id qid: under `knapsack`, a share
 * broker.explore of the questions, chosen by SHA-256 of (wf->seed, qid),
 * is explored: the team must hold the admitted model with the fewest
 * observations (p_g_n) among those the best team leaves out (ties by a
 * second draw of the same hash), so a model the priors rank low is
 * measured and can come back (no feasible team with it: the best team).
 * The decision records it (explore, explored); a resumed question keeps
 * its recorded seats. qid NULL: no exploration (broker_decide). */
NSED_MUST_CHECK int
broker_decide_question(const workflow *wf, const telemetry *tel,
                       const char *const *tags, size_t ntags, const char *qid,
                       broker_decision **out, nsed_err *err);

void broker_decision_free(broker_decision *d);

/* The decision with its inputs, as the compact JSON stored per question:
 *   {"policy","objective","team","staffed","reason"(null when staffed),
 *    "constraints":{"usd_per_question","tokens_per_question",
 *      "vram_per_gpu_gb"(null when unset),"team_size":[min,max],
 *      "max_per_family"(0 = unlimited),"evaluator_min_pv"},
 *    "rounds","team_size","models":[chosen ids, seat order],
 *    "explore","explored"(model id or null),
 *    "seats":[{"model","role","propose_only"}],"expected_value","expected_cost_usd",
 *    "expected_tokens","nodes",
 *    "candidates":[{"model","family","in_pool","admitted","chosen",
 *      "propose_only","why",
 *      "value","cost_usd","tokens","p_g","p_g_n","p_v","p_v_n",
 *      "seat_rounds","later_seat_rounds","first_round_tokens",
 *      "later_round_tokens","prompt_tokens","completion_tokens","calls",
 *      "failure_rate","latency_mean_s","latency_p95_s","gpu","vram_gb"}]}
 * With `fixed` the expected_* fields are null (the team does not depend
 * on them). Returns 0 and sets *out (malloc'd) or NSED_ENOMEM. */
NSED_MUST_CHECK int broker_decision_json(const workflow *wf,
                                         const broker_decision *d, char **out);

/* The summary a result carries as its "broker" field, from a stored
 * decision record: {"policy","team","models","expected_value",
 * "expected_cost_usd","expected_tokens"}. NULL when the record does not
 * parse or memory runs out (the caller then writes null). */
NSED_MUST_CHECK struct cJSON *broker_record_summary(const char *record,
                                                    size_t len);

#endif
