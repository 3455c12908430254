/* broker.c -- team selection: the fixed rule and the exact knapsack. */
#include "pipeline/broker/broker.h"

#include "pipeline/base/json.h"
#include "stages/seed.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Values closer than this are equal (they are sums of a few numbers in
 * [-1, 1], so anything below is rounding). */
#define VALUE_EPS 1e-12
/* Relative slack when a cost is compared with its limit. */
#define COST_REL_EPS 1e-12

static void fixed_seats(const workflow_team *t, broker_team *out)
{
    size_t n = 0;

    for (size_t r = 0; r < t->nroles; r++) {
        const workflow_role *role = &t->roles[r];

        for (int k = 0; k < role->count && n < WORKFLOW_MAX_SEATS; k++) {
            out->seats[n].model = role->allowed[(size_t)k % role->nallowed];
            out->seats[n].role = role->name;
            out->seats[n].persona = role->persona;
            n++;
        }
    }
    out->nseats = n;
}

int broker_choose(const workflow *wf, const char *const *tags, size_t ntags,
                  broker_team *out, nsed_err *err)
{
    const workflow_team *t = workflow_team_for_tags(wf, tags, ntags);

    switch (wf->broker.policy) {
    case WORKFLOW_POLICY_FIXED:
        out->team = t;
        fixed_seats(t, out);
        return 0;
    case WORKFLOW_POLICY_KNAPSACK:
        break;
    }
    return nsed_error(err, NSED_EINVAL,
                      "%s: broker policy \"knapsack\" needs telemetry: use "
                      "broker_decide", wf->source);
}

/* ---- the knapsack ------------------------------------------------------- */

static bool within(double cost, double limit)
{
    return limit <= 0 || cost <= limit * (1 + COST_REL_EPS);
}

bool broker_roles_fit(const broker_problem *p, uint64_t chosen, int *role_of)
{
    int slot_role[WORKFLOW_MAX_SEATS];
    int slot_item[WORKFLOW_MAX_SEATS];
    int item_slot[BROKER_MAX_POOL];
    size_t nslots = 0;

    for (size_t r = 0; r < p->nroles; r++)
        for (int k = 0; k < p->role_seats[r]; k++) {
            if (nslots == WORKFLOW_MAX_SEATS)
                break;
            slot_role[nslots++] = (int)r;
        }
    for (size_t s = 0; s < nslots; s++)
        slot_item[s] = -1;
    /* Kuhn's augmenting paths, items in index order; the path search is
     * iterative with an explicit stack (depth <= number of items). */
    for (size_t i = 0; i < p->nitems; i++) {
        int prev_slot[WORKFLOW_MAX_SEATS];
        bool seen[WORKFLOW_MAX_SEATS] = {false};
        int queue_item[BROKER_MAX_POOL + 1];
        int queue_from[BROKER_MAX_POOL + 1];
        size_t head = 0, tail = 0;
        int found = -1;

        if (!(chosen >> i & 1))
            continue;
        item_slot[i] = -1;
        /* breadth-first over alternating paths */
        queue_item[tail] = (int)i;
        queue_from[tail++] = -1;
        while (head < tail && found < 0) {
            int it = queue_item[head], from = queue_from[head];

            head++;
            for (size_t s = 0; s < nslots; s++) {
                if (seen[s] || !(p->items[it].roles >> slot_role[s] & 1))
                    continue;
                seen[s] = true;
                prev_slot[s] = from;
                if (slot_item[s] < 0) {
                    found = (int)s;
                    break;
                }
                queue_item[tail] = slot_item[s];
                queue_from[tail++] = (int)s;
            }
        }
        if (found < 0)
            return false;
        /* flip the path: each slot takes the item that reached it */
        for (int s = found; s >= 0;) {
            int from = prev_slot[s];
            int it = from < 0 ? (int)i : slot_item[from];

            slot_item[s] = it;
            item_slot[it] = s;
            s = from;
        }
    }
    if (role_of)
        for (size_t i = 0; i < p->nitems; i++)
            role_of[i] = chosen >> i & 1 ? slot_role[item_slot[i]] : -1;
    return true;
}

typedef struct search {
    const broker_problem *p;
    int order[BROKER_MAX_POOL]; /* items by value, cost, index */
    uint64_t set;
    int size;
    double value;
    int fam[BROKER_MAX_POOL];
    double vram[BROKER_MAX_POOL];
    bool have_best;
    uint64_t best_set;
    int best_size;
    double best_value;
    uint64_t nodes;
    size_t teams; /* teams evaluated (objective accuracy) */
} search;

/* Can item j join the current team? */
static bool can_add(const search *s, int j)
{
    const broker_problem *p = s->p;
    const broker_item *it = &p->items[j];
    int n = s->size + 1;
    double usd = it->usd[n], tok = it->tokens[n];

    if (n > p->size_max)
        return false;
    if (p->max_per_family > 0 && s->fam[it->family] >= p->max_per_family)
        return false;
    if (p->vram_per_gpu_gb > 0 && it->gpu >= 0 &&
        !within(s->vram[it->gpu] + it->vram_gb, p->vram_per_gpu_gb))
        return false;
    for (size_t i = 0; i < p->nitems; i++)
        if (s->set >> i & 1) {
            usd += p->items[i].usd[n];
            tok += p->items[i].tokens[n];
        }
    if (!within(usd, p->budget_usd) || !within(tok, p->budget_tokens))
        return false;
    return broker_roles_fit(p, s->set | (uint64_t)1 << j, NULL);
}

static void dfs(search *s, size_t pos)
{
    const broker_problem *p = s->p;
    size_t left = p->nitems - pos, k, m, npos = 0, take;
    double bound = s->value;

    s->nodes++;
    if (s->size >= p->size_min &&
        (!p->has_required || s->set >> p->required & 1) &&
        (!s->have_best || s->value > s->best_value + VALUE_EPS)) {
        s->have_best = true;
        s->best_set = s->set;
        s->best_size = s->size;
        s->best_value = s->value;
    }
    if (pos == p->nitems || s->size == p->size_max)
        return;
    /* Bound: the remaining items are sorted by value, so the best j of
     * them are the next j; a completion takes between m (to reach
     * size_min) and k (to stay within size_max) of them. */
    k = (size_t)(p->size_max - s->size);
    m = s->size < p->size_min ? (size_t)(p->size_min - s->size) : 0;
    if (m > left)
        return;
    while (npos < left && npos < k && p->items[s->order[pos + npos]].value > 0)
        npos++;
    take = m > npos ? m : npos;
    for (size_t t = 0; t < take; t++)
        bound += p->items[s->order[pos + t]].value;
    if (s->have_best && bound <= s->best_value + VALUE_EPS)
        return;

    {
        int j = s->order[pos];
        const broker_item *it = &p->items[j];

        if (can_add(s, j)) {
            s->set |= (uint64_t)1 << j;
            s->size++;
            s->value += it->value;
            s->fam[it->family]++;
            if (it->gpu >= 0)
                s->vram[it->gpu] += it->vram_gb;
            dfs(s, pos + 1);
            if (it->gpu >= 0)
                s->vram[it->gpu] -= it->vram_gb;
            s->fam[it->family]--;
            s->value -= it->value;
            s->size--;
            s->set &= ~((uint64_t)1 << j);
        }
        if (!(p->has_required && (size_t)j == p->required))
            dfs(s, pos + 1);
    }
}

/* The team in s->set, evaluated by its predicted accuracy (kept as the
 * best when it is); -1 when it lacks the required item. */
static double consider_team(search *s)
{
    const broker_problem *p = s->p;
    broker_seat_skill sk[WORKFLOW_MAX_SEATS];
    size_t n = 0;
    double acc;

    if (p->has_required && !(s->set >> p->required & 1))
        return -1;
    for (size_t t = 0; t < p->nitems && n < WORKFLOW_MAX_SEATS; t++) {
        int i = s->order[t];

        if (s->set >> i & 1)
            sk[n++] = p->items[i].skill;
    }
    s->teams++;
    acc = broker_predict_accuracy(sk, n, p->accuracy, BROKER_PREDICT_DRAWS);
    if (!s->have_best || acc > s->best_value + VALUE_EPS) {
        s->have_best = true;
        s->best_set = s->set;
        s->best_size = s->size;
        s->best_value = acc;
    }
    return acc;
}

static void put(search *s, int j)
{
    const broker_item *it = &s->p->items[j];

    s->set |= (uint64_t)1 << j;
    s->size++;
    s->fam[it->family]++;
    if (it->gpu >= 0)
        s->vram[it->gpu] += it->vram_gb;
}

static void take(search *s, int j)
{
    const broker_item *it = &s->p->items[j];

    if (it->gpu >= 0)
        s->vram[it->gpu] -= it->vram_gb;
    s->fam[it->family]--;
    s->size--;
    s->set &= ~((uint64_t)1 << j);
}

/* Teams of size_min..size_max out of n items, saturated at cap. */
static size_t count_teams(size_t n, int lo, int hi, size_t cap)
{
    size_t total = 0;

    for (int k = lo; k <= hi && (size_t)k <= n; k++) {
        double c = 1;

        for (int i = 0; i < k; i++)
            c = c * (double)(n - (size_t)i) / (double)(i + 1);
        if (c >= (double)cap || (total += (size_t)c) >= cap)
            return cap;
    }
    return total;
}

/* For pools with more possible teams than BROKER_PREDICT_MAX_TEAMS: grow
 * the team one model at a time up to size_max, taking the one that
 * predicts best at each step (the best team of any size along the way is
 * kept), then, from the best of those, add, drop or swap one model while
 * that helps. Not exact; every step is in the search order, so it is
 * deterministic. */
static void local_accuracy(search *s)
{
    const broker_problem *p = s->p;
    double cur;
    bool moved = true;

    if (p->has_required) {
        if (!can_add(s, (int)p->required))
            return;
        put(s, (int)p->required);
        if (s->size >= p->size_min)
            (void)consider_team(s);
    }
    while (s->size < p->size_max) {
        int pick = -1;
        double pick_acc = -1;

        for (size_t t = 0; t < p->nitems; t++) {
            int j = s->order[t];
            double a;

            if (s->set >> j & 1 || !can_add(s, j))
                continue;
            put(s, j);
            /* below the minimum: the best generator first */
            a = s->size >= p->size_min ? consider_team(s)
                                       : p->items[j].skill.p_g;
            take(s, j);
            if (a > pick_acc + VALUE_EPS) {
                pick = j;
                pick_acc = a;
            }
        }
        if (pick < 0)
            break;
        put(s, pick);
    }
    if (!s->have_best)
        return;
    /* restart from the best team seen */
    for (size_t j = 0; j < p->nitems; j++)
        if (s->set >> j & 1)
            take(s, (int)j);
    for (size_t j = 0; j < p->nitems; j++)
        if (s->best_set >> j & 1)
            put(s, (int)j);
    cur = s->best_value;
    for (int pass = 0; moved && pass < 4 * WORKFLOW_MAX_SEATS; pass++) {
        moved = false;
        for (size_t b = 0; b < p->nitems && !moved; b++) {
            int j = s->order[b];

            if (s->set >> j & 1 || !can_add(s, j))
                continue;
            put(s, j);
            if (consider_team(s) > cur + VALUE_EPS) {
                cur = s->best_value;
                moved = true;
            } else {
                take(s, j);
            }
        }
        for (size_t a = 0; a < p->nitems && !moved; a++) {
            int i = s->order[a];

            if (!(s->set >> i & 1) ||
                (p->has_required && (size_t)i == p->required))
                continue;
            take(s, i);
            if (s->size >= p->size_min && s->size > 0 &&
                consider_team(s) > cur + VALUE_EPS) {
                cur = s->best_value;
                moved = true;
                break;
            }
            for (size_t b = 0; b < p->nitems && !moved; b++) {
                int j = s->order[b];

                if (j == i || s->set >> j & 1 || !can_add(s, j))
                    continue;
                put(s, j);
                if (s->size >= p->size_min &&
                    consider_team(s) > cur + VALUE_EPS) {
                    cur = s->best_value;
                    moved = true;
                } else {
                    take(s, j);
                }
            }
            if (!moved)
                put(s, i);
        }
    }
}

/* Every feasible team, in the search order (an item in before out), up to
 * BROKER_PREDICT_MAX_TEAMS of them: predicted accuracy is not a sum over
 * seats, so there is no bound to prune by. */
static void dfs_accuracy(search *s, size_t pos)
{
    const broker_problem *p = s->p;

    s->nodes++;
    if (s->teams >= BROKER_PREDICT_MAX_TEAMS)
        return;
    if (s->size >= p->size_min)
        (void)consider_team(s);
    if (pos == p->nitems || s->size == p->size_max)
        return;
    if (s->size < p->size_min &&
        (size_t)(p->size_min - s->size) > p->nitems - pos)
        return;
    {
        int j = s->order[pos];
        const broker_item *it = &p->items[j];

        if (can_add(s, j)) {
            s->set |= (uint64_t)1 << j;
            s->size++;
            s->fam[it->family]++;
            if (it->gpu >= 0)
                s->vram[it->gpu] += it->vram_gb;
            dfs_accuracy(s, pos + 1);
            if (it->gpu >= 0)
                s->vram[it->gpu] -= it->vram_gb;
            s->fam[it->family]--;
            s->size--;
            s->set &= ~((uint64_t)1 << j);
        }
        if (!(p->has_required && (size_t)j == p->required))
            dfs_accuracy(s, pos + 1);
    }
}

/* True when item i goes before item j in the search order: higher value,
 * then lower cost in the smallest team, then lower index. */
static bool before(const broker_problem *p, int i, int j)
{
    const broker_item *x = &p->items[i], *y = &p->items[j];

    if (x->value != y->value)
        return x->value > y->value;
    if (x->usd[p->size_min] != y->usd[p->size_min])
        return x->usd[p->size_min] < y->usd[p->size_min];
    return i < j;
}

int broker_solve(const broker_problem *p, broker_solution *out)
{
    search *s;
    size_t seats = 0;
    int rc = NSED_ENOTFOUND;

    if (p->nitems > BROKER_MAX_POOL || p->nroles < 1 || p->nroles > 64 ||
        p->size_min < 1 || p->size_max < p->size_min ||
        p->size_max > WORKFLOW_MAX_SEATS)
        return NSED_EINVAL;
    for (size_t r = 0; r < p->nroles; r++) {
        if (p->role_seats[r] < 1)
            return NSED_EINVAL;
        seats += (size_t)p->role_seats[r];
    }
    if (seats > WORKFLOW_MAX_SEATS)
        return NSED_EINVAL;
    for (size_t i = 0; i < p->nitems; i++)
        if (p->items[i].family < 0 || p->items[i].family >= BROKER_MAX_POOL ||
            p->items[i].gpu >= BROKER_MAX_POOL || !isfinite(p->items[i].value))
            return NSED_EINVAL;
    if (p->has_required && p->required >= p->nitems)
        return NSED_EINVAL;
    if (p->accuracy && (p->accuracy->rounds_max < 1 ||
                        p->accuracy->rounds_min > p->accuracy->rounds_max))
        return NSED_EINVAL;
    s = calloc(1, sizeof *s);
    if (!s)
        return NSED_ENOMEM;
    s->p = p;
    for (size_t i = 0; i < p->nitems; i++)
        s->order[i] = (int)i;
    /* insertion sort: at most BROKER_MAX_POOL items */
    for (size_t i = 1; i < p->nitems; i++) {
        int v = s->order[i];
        size_t k = i;

        for (; k > 0 && before(p, v, s->order[k - 1]); k--)
            s->order[k] = s->order[k - 1];
        s->order[k] = v;
    }
    if (p->accuracy &&
        count_teams(p->nitems, p->size_min, p->size_max,
                    BROKER_PREDICT_MAX_TEAMS + 1) <= BROKER_PREDICT_MAX_TEAMS)
        dfs_accuracy(s, 0);
    else if (p->accuracy)
        local_accuracy(s);
    else
        dfs(s, 0);
    if (s->have_best) {
        memset(out, 0, sizeof *out);
        out->chosen = s->best_set;
        out->size = s->best_size;
        out->value = s->best_value;
        for (size_t i = 0; i < p->nitems; i++)
            if (s->best_set >> i & 1) {
                out->usd += p->items[i].usd[s->best_size];
                out->tokens += p->items[i].tokens[s->best_size];
            }
        broker_roles_fit(p, s->best_set, out->role_of);
        out->nodes = s->nodes;
        rc = 0;
    }
    free(s);
    return rc;
}

/* ---- decisions ---------------------------------------------------------- */

void broker_decision_free(broker_decision *d)
{
    if (!d)
        return;
    free(d->cands);
    free(d);
}

static double value_of(enum workflow_objective o, const telemetry_estimate *e)
{
    switch (o) {
    case WORKFLOW_OBJECTIVE_EVIDENCE:
        return e->p_v - e->p_g;
    case WORKFLOW_OBJECTIVE_VERIFICATION:
        return e->p_v;
    case WORKFLOW_OBJECTIVE_GENERATION:
        return e->p_g;
    case WORKFLOW_OBJECTIVE_ACCURACY:
        return e->p_g; /* a lone seat's accuracy; the team's is predicted */
    }
    return 0;
}

/* Fill candidate c's estimates for a team of n seats. */
static void estimate_at(const workflow *wf, const telemetry *tel, int rounds,
                        int n, broker_candidate *c)
{
    telemetry_estimate *e = &c->est;

    telemetry_estimate_for(tel, wf, c->model, n, e);
    c->value = value_of(wf->broker.objective, e);
    (void)rounds; /* the estimate covers rounds.max rounds already */
    c->usd = e->cost_usd;
    c->tokens = e->prompt_tokens + e->completion_tokens;
}

static bool role_admits(const workflow_role *r, size_t model)
{
    for (size_t k = 0; k < r->nallowed; k++)
        if (r->allowed[k] == model)
            return true;
    return false;
}

static bool same_gpu(const workflow_model *a, const workflow_model *b)
{
    if (a->placement_gpu != b->placement_gpu)
        return false;
    if (!a->placement_host || !b->placement_host)
        return a->placement_host == b->placement_host;
    return strcmp(a->placement_host, b->placement_host) == 0;
}

static void decide_fixed(const workflow *wf, const telemetry *tel,
                         broker_decision *d)
{
    int n;

    fixed_seats(d->team, &d->seats);
    d->seats.team = d->team;
    n = (int)d->seats.nseats;
    d->team_size = n;
    d->staffed = true;
    for (size_t i = 0; i < d->ncands; i++) {
        broker_candidate *c = &d->cands[i];

        estimate_at(wf, tel, d->rounds, n, c);
        if (!c->in_pool)
            snprintf(c->why, sizeof c->why, "team %s does not admit it",
                     d->team->name);
        else
            snprintf(c->why, sizeof c->why,
                     "policy fixed: listed but no seat left for it");
    }
    for (size_t s = 0; s < d->seats.nseats; s++) {
        broker_candidate *c = &d->cands[d->seats.seats[s].model];

        if (!c->chosen)
            snprintf(c->why, sizeof c->why, "policy fixed: role %s",
                     d->seats.seats[s].role);
        c->chosen = c->admitted = true;
        d->value += c->value;
        d->usd += c->usd;
        d->tokens += c->tokens;
    }
}

/* Why no team is feasible, into d->reason. */
static void diagnose(const workflow *wf, const broker_problem *p,
                     size_t npool, broker_decision *d)
{
    const workflow_broker *b = &wf->broker;
    double usd[BROKER_MAX_POOL], tok[BROKER_MAX_POOL], su = 0, st = 0;
    bool fam[BROKER_MAX_POOL] = {false};
    size_t n = p->nitems, nfam = 0, m = (size_t)p->size_min;

    if (n < m) {
        snprintf(d->reason, sizeof d->reason,
                 "only %zu of the %zu models team %s admits pass admission "
                 "(see each model's reason); broker.team_size.min is %d",
                 n, npool, d->team->name, p->size_min);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        usd[i] = p->items[i].usd[m];
        tok[i] = p->items[i].tokens[m];
        if (!fam[p->items[i].family]) {
            fam[p->items[i].family] = true;
            nfam++;
        }
    }
    /* the m cheapest: partial selection sort */
    for (size_t i = 0; i < m; i++)
        for (size_t k = i + 1; k < n; k++) {
            double t;

            if (usd[k] < usd[i]) {
                t = usd[i], usd[i] = usd[k], usd[k] = t;
            }
            if (tok[k] < tok[i]) {
                t = tok[i], tok[i] = tok[k], tok[k] = t;
            }
        }
    for (size_t i = 0; i < m; i++) {
        su += usd[i];
        st += tok[i];
    }
    if (!within(su, p->budget_usd))
        snprintf(d->reason, sizeof d->reason,
                 "the %zu cheapest admitted models cost an expected $%.6g "
                 "per question together (%d rounds), over "
                 "broker.budget.usd_per_question $%.6g",
                 m, su, d->rounds, b->budget_usd_per_question);
    else if (!within(st, p->budget_tokens))
        snprintf(d->reason, sizeof d->reason,
                 "the %zu most frugal admitted models use an expected %.0f "
                 "tokens per question together (%d rounds), over "
                 "broker.budget.tokens_per_question %lld",
                 m, st, d->rounds, (long long)b->budget_tokens_per_question);
    else if (p->max_per_family > 0 &&
             nfam * (size_t)p->max_per_family < m)
        snprintf(d->reason, sizeof d->reason,
                 "the admitted models span %zu famil%s; with "
                 "broker.max_per_family %d no team of %zu fits",
                 nfam, nfam == 1 ? "y" : "ies", p->max_per_family, m);
    else
        snprintf(d->reason, sizeof d->reason,
                 "no team of %d..%d admitted models meets the budget, VRAM, "
                 "family and role constraints together",
                 p->size_min, p->size_max);
}

/* A propose-only model's reason says why it may not evaluate. */
static void note_propose_only(const workflow *wf, broker_decision *d)
{
    for (size_t i = 0; i < d->ncands; i++) {
        broker_candidate *c = &d->cands[i];
        size_t len = strlen(c->why);

        if (c->propose_only)
            snprintf(c->why + len, sizeof c->why - len,
                     "; propose-only: p_v %.3f (%.0f evaluations) is not "
                     "above evaluator_min_pv %.3g",
                     c->est.p_v, c->est.p_v_n, wf->broker.evaluator_min_pv);
    }
}

static int decide_knapsack(const workflow *wf, const telemetry *tel,
                           broker_decision *d, nsed_err *err)
{
    const workflow_broker *b = &wf->broker;
    const workflow_team *t = d->team;
    broker_problem p = {0};
    broker_solution sol;
    broker_item *items = NULL;
    size_t idx[BROKER_MAX_POOL], ngpu = 0, nfam = 0, npool = 0;
    size_t gpu_model[BROKER_MAX_POOL], fam_model[BROKER_MAX_POOL];
    int role_seats[WORKFLOW_MAX_ROLES];
    int size_max = b->team_size_max < t->seats ? b->team_size_max : t->seats;
    broker_protocol proto = {
        .rounds_min = wf->rounds.min,
        .rounds_max = wf->rounds.max,
        .consensus_margin = wf->rounds.consensus_margin,
        .stable_answer = wf->rounds.stable_answer,
    };
    int rc = NSED_EINTERNAL;

    p.size_min = b->team_size_min;
    p.size_max = size_max;
    p.budget_usd = b->budget_usd_per_question;
    p.budget_tokens = (double)b->budget_tokens_per_question;
    p.vram_per_gpu_gb = b->vram_per_gpu_gb;
    p.max_per_family = b->max_per_family;
    p.nroles = t->nroles;
    for (size_t r = 0; r < t->nroles; r++)
        role_seats[r] = t->roles[r].count;
    p.role_seats = role_seats;
    d->team_size = p.size_min;

    for (size_t i = 0; i < d->ncands; i++) {
        broker_candidate *c = &d->cands[i];
        const workflow_model *m = &wf->models[i];

        estimate_at(wf, tel, d->rounds, p.size_min, c);
        if (!c->in_pool) {
            snprintf(c->why, sizeof c->why, "team %s does not admit it",
                     t->name);
            continue;
        }
        npool++;
        /* Under accuracy a poor judge still proposes: the rule is only
         * that it may not evaluate. */
        c->propose_only = b->objective == WORKFLOW_OBJECTIVE_ACCURACY &&
                          !(c->est.p_v > b->evaluator_min_pv);
        if (!c->propose_only && !(c->est.p_v > b->evaluator_min_pv)) {
            snprintf(c->why, sizeof c->why,
                     "p_v %.3f (%.0f evaluations) is not above "
                     "evaluator_min_pv %.3g: every seat evaluates",
                     c->est.p_v, c->est.p_v_n, b->evaluator_min_pv);
        } else if (p.vram_per_gpu_gb > 0 && m->placement_gpu >= 0 &&
                   !within(m->placement_vram_gb, p.vram_per_gpu_gb)) {
            snprintf(c->why, sizeof c->why,
                     "needs %.6g GB of VRAM, more than vram_per_gpu_gb %.6g",
                     m->placement_vram_gb, p.vram_per_gpu_gb);
        } else if (!within(c->usd, p.budget_usd)) {
            snprintf(c->why, sizeof c->why,
                     "costs an expected $%.6g per question even in a team "
                     "of %d, over the budget $%.6g", c->usd, p.size_min,
                     p.budget_usd);
        } else if (!within(c->tokens, p.budget_tokens)) {
            snprintf(c->why, sizeof c->why,
                     "uses an expected %.0f tokens per question even in a "
                     "team of %d, over the budget %.0f", c->tokens,
                     p.size_min, p.budget_tokens);
        } else {
            if (p.nitems == BROKER_MAX_POOL)
                return nsed_error(err, NSED_EINVAL,
                                  "%s: team %s admits more than %d models; "
                                  "the knapsack broker takes at most %d",
                                  wf->source, t->name, BROKER_MAX_POOL,
                                  BROKER_MAX_POOL);
            c->admitted = true;
            idx[p.nitems++] = i;
        }
    }
    if (p.nitems) {
        items = calloc(p.nitems, sizeof *items);
        if (!items)
            return nsed_error(err, NSED_ENOMEM, "out of memory");
    }
    for (size_t k = 0; k < p.nitems; k++) {
        broker_item *it = &items[k];
        const workflow_model *m = &wf->models[idx[k]];
        broker_candidate c = d->cands[idx[k]];
        size_t g, f;

        it->value = d->cands[idx[k]].value;
        it->skill.p_g = c.est.p_g;
        it->skill.p_v = c.est.p_v;
        it->skill.evaluates = !c.propose_only;
        for (int n = 1; n <= size_max; n++) {
            estimate_at(wf, tel, d->rounds, n, &c);
            it->usd[n] = c.usd;
            it->tokens[n] = c.tokens;
        }
        for (f = 0; f < nfam; f++)
            if (!strcmp(wf->models[fam_model[f]].family, m->family))
                break;
        if (f == nfam)
            fam_model[nfam++] = idx[k];
        it->family = (int)f;
        it->gpu = -1;
        if (m->placement_gpu >= 0) {
            for (g = 0; g < ngpu; g++)
                if (same_gpu(&wf->models[gpu_model[g]], m))
                    break;
            if (g == ngpu)
                gpu_model[ngpu++] = idx[k];
            it->gpu = (int)g;
            it->vram_gb = m->placement_vram_gb > 0 ? m->placement_vram_gb : 0;
        }
        for (size_t r = 0; r < t->nroles; r++)
            if (role_admits(&t->roles[r], idx[k]))
                it->roles |= (uint64_t)1 << r;
    }
    p.items = items;
    if (b->objective == WORKFLOW_OBJECTIVE_ACCURACY)
        p.accuracy = &proto;
    rc = broker_solve(&p, &sol);
    if (rc == 0 && d->explore) {
        broker_solution alt;
        size_t tied[BROKER_MAX_POOL], ntied = 0;

        /* the least measured of the models the team leaves out, ties by
         * the question's draw */
        for (size_t k = 0; k < p.nitems; k++) {
            double n = d->cands[idx[k]].est.p_g_n;

            if (sol.chosen >> k & 1)
                continue;
            if (ntied && n > d->cands[idx[tied[0]]].est.p_g_n)
                continue;
            if (ntied && n < d->cands[idx[tied[0]]].est.p_g_n)
                ntied = 0;
            tied[ntied++] = k;
        }
        if (ntied) {
            p.has_required = true;
            p.required = tied[(size_t)(d->explore_pick * (double)ntied)];
            if (broker_solve(&p, &alt) == 0) {
                d->explored = (long)idx[p.required];
                sol = alt;
            }
            p.has_required = false;
        }
    }
    if (rc == NSED_ENOTFOUND) {
        d->staffed = false;
        diagnose(wf, &p, npool, d);
        for (size_t k = 0; k < p.nitems; k++)
            snprintf(d->cands[idx[k]].why, sizeof d->cands[idx[k]].why,
                     "admitted, but no feasible team");
        free(items);
        note_propose_only(wf, d);
        return 0;
    }
    if (rc) {
        free(items);
        return nsed_error(err, rc, "%s: the knapsack for team %s is out of "
                          "range", wf->source, t->name);
    }
    d->staffed = true;
    d->team_size = sol.size;
    d->value = sol.value;
    d->usd = sol.usd;
    d->tokens = sol.tokens;
    d->nodes = sol.nodes;
    d->seats.team = t;
    for (size_t r = 0; r < t->nroles; r++)
        for (size_t k = 0; k < p.nitems; k++) {
            state_seat_spec *s;

            if (!(sol.chosen >> k & 1) || sol.role_of[k] != (int)r)
                continue;
            s = &d->seats.seats[d->seats.nseats++];
            s->model = idx[k];
            s->role = t->roles[r].name;
            s->persona = t->roles[r].persona;
            s->propose_only = d->cands[idx[k]].propose_only;
        }
    for (size_t i = 0; i < d->ncands; i++) {
        broker_candidate *c = &d->cands[i];

        estimate_at(wf, tel, d->rounds, sol.size, c);
        if (c->admitted)
            snprintf(c->why, sizeof c->why,
                     "admitted, not chosen: the chosen team is worth more "
                     "within the constraints");
    }
    for (size_t s = 0; s < d->seats.nseats; s++) {
        broker_candidate *c = &d->cands[d->seats.seats[s].model];

        c->chosen = true;
        snprintf(c->why, sizeof c->why, "chosen: role %s%s",
                 d->seats.seats[s].role,
                 d->explored == (long)c->model ? ", explored" : "");
    }
    free(items);
    note_propose_only(wf, d);
    return 0;
}

/* Whether question qid is in the exploration share. */
static int explores(const workflow *wf, const char *qid, bool *out,
                    double *pick)
{
    seed_rng r;

    *out = false;
    *pick = 0;
    if (!qid || wf->broker.policy != WORKFLOW_POLICY_KNAPSACK ||
        !(wf->broker.explore > 0))
        return 0;
    if (seed_rng_init(&r, "broker-explore", wf->seed, qid, 0, 0))
        return NSED_ENOMEM;
    *out = (double)(seed_rng_next(&r) >> 11) * 0x1p-53 < wf->broker.explore;
    *pick = (double)(seed_rng_next(&r) >> 11) * 0x1p-53;
    return 0;
}

int broker_decide(const workflow *wf, const telemetry *tel,
                  const char *const *tags, size_t ntags,
                  broker_decision **out, nsed_err *err)
{
    return broker_decide_question(wf, tel, tags, ntags, NULL, out, err);
}

int broker_decide_question(const workflow *wf, const telemetry *tel,
                           const char *const *tags, size_t ntags,
                           const char *qid, broker_decision **out,
                           nsed_err *err)
{
    broker_decision *d = calloc(1, sizeof *d);
    int rc = 0;

    if (!d || !(d->cands = calloc(wf->nmodels, sizeof *d->cands))) {
        free(d);
        return nsed_error(err, NSED_ENOMEM, "out of memory");
    }
    d->explored = -1;
    if (explores(wf, qid, &d->explore, &d->explore_pick)) {
        broker_decision_free(d);
        return nsed_error(err, NSED_ENOMEM, "out of memory");
    }
    d->policy = wf->broker.policy;
    d->team = workflow_team_for_tags(wf, tags, ntags);
    d->rounds = wf->rounds.max;
    d->ncands = wf->nmodels;
    for (size_t i = 0; i < wf->nmodels; i++) {
        d->cands[i].model = i;
        for (size_t r = 0; r < d->team->nroles; r++)
            d->cands[i].in_pool |= role_admits(&d->team->roles[r], i);
    }
    switch (d->policy) {
    case WORKFLOW_POLICY_FIXED:
        decide_fixed(wf, tel, d);
        break;
    case WORKFLOW_POLICY_KNAPSACK:
        rc = decide_knapsack(wf, tel, d, err);
        break;
    }
    if (rc) {
        broker_decision_free(d);
        return rc;
    }
    *out = d;
    return 0;
}

/* ---- JSON --------------------------------------------------------------- */

static cJSON *num_or_null(double v, bool present)
{
    return present ? cJSON_CreateNumber(v) : cJSON_CreateNull();
}

static int candidate_json(const workflow *wf, const broker_candidate *c,
                          cJSON *arr)
{
    const workflow_model *m = &wf->models[c->model];
    const telemetry_estimate *e = &c->est;
    cJSON *o = cJSON_CreateObject();

    if (!o)
        return NSED_ENOMEM;
    cJSON_AddItemToArray(arr, o);
    if (json_add_item(o, "model", cJSON_CreateString(m->id)) ||
        json_add_item(o, "family", cJSON_CreateString(m->family)) ||
        json_add_item(o, "in_pool", cJSON_CreateBool(c->in_pool)) ||
        json_add_item(o, "admitted", cJSON_CreateBool(c->admitted)) ||
        json_add_item(o, "chosen", cJSON_CreateBool(c->chosen)) ||
        json_add_item(o, "propose_only", cJSON_CreateBool(c->propose_only)) ||
        json_add_item(o, "why", cJSON_CreateString(c->why)) ||
        json_add_num(o, "value", c->value) ||
        json_add_num(o, "cost_usd", c->usd) ||
        json_add_num(o, "tokens", c->tokens) ||
        json_add_num(o, "p_g", e->p_g) || json_add_num(o, "p_g_n", e->p_g_n) ||
        json_add_num(o, "p_v", e->p_v) || json_add_num(o, "p_v_n", e->p_v_n) ||
        json_add_num(o, "seat_rounds", e->seat_rounds) ||
        json_add_num(o, "later_seat_rounds", e->later_seat_rounds) ||
        json_add_num(o, "first_round_tokens", e->first_tokens) ||
        json_add_num(o, "later_round_tokens", e->later_tokens) ||
        json_add_num(o, "prompt_tokens", e->prompt_tokens) ||
        json_add_num(o, "completion_tokens", e->completion_tokens) ||
        json_add_num(o, "calls", e->calls) ||
        json_add_num(o, "failure_rate", e->failure_rate) ||
        json_add_num(o, "latency_mean_s", e->latency_mean_s) ||
        json_add_num(o, "latency_p95_s", e->latency_p95_s) ||
        json_add_item(o, "gpu",
                      m->placement_gpu >= 0
                          ? cJSON_CreateNumber(m->placement_gpu)
                          : cJSON_CreateNull()) ||
        json_add_item(o, "vram_gb",
                      num_or_null(m->placement_vram_gb,
                                  m->placement_vram_gb >= 0)))
        return NSED_ENOMEM;
    return 0;
}

int broker_decision_json(const workflow *wf, const broker_decision *d,
                         char **out)
{
    const workflow_broker *b = &wf->broker;
    cJSON *o = cJSON_CreateObject(), *c, *ts, *models, *seats, *cands;
    int rc = NSED_ENOMEM;

    if (!o ||
        json_add_item(o, "policy",
                      cJSON_CreateString(workflow_policy_name(d->policy))) ||
        json_add_item(
            o, "objective",
            cJSON_CreateString(workflow_objective_name(b->objective))) ||
        json_add_item(o, "team", cJSON_CreateString(d->team->name)) ||
        json_add_item(o, "staffed", cJSON_CreateBool(d->staffed)) ||
        json_add_item(o, "reason",
                      d->staffed ? cJSON_CreateNull()
                                 : cJSON_CreateString(d->reason)) ||
        !(c = cJSON_AddObjectToObject(o, "constraints")) ||
        json_add_item(c, "usd_per_question",
                      num_or_null(b->budget_usd_per_question,
                                  b->budget_usd_per_question > 0)) ||
        json_add_item(c, "tokens_per_question",
                      num_or_null((double)b->budget_tokens_per_question,
                                  b->budget_tokens_per_question > 0)) ||
        json_add_item(
            c, "vram_per_gpu_gb",
            num_or_null(b->vram_per_gpu_gb, b->vram_per_gpu_gb > 0)) ||
        !(ts = cJSON_AddArrayToObject(c, "team_size")))
        goto out;
    cJSON_AddItemToArray(ts, cJSON_CreateNumber(b->team_size_min));
    cJSON_AddItemToArray(ts, cJSON_CreateNumber(b->team_size_max));
    if (cJSON_GetArraySize(ts) != 2 ||
        json_add_num(c, "max_per_family", b->max_per_family) ||
        json_add_num(c, "evaluator_min_pv", b->evaluator_min_pv) ||
        json_add_num(o, "rounds", d->rounds) ||
        json_add_num(o, "team_size", d->team_size) ||
        !(models = cJSON_AddArrayToObject(o, "models")) ||
        !(seats = cJSON_AddArrayToObject(o, "seats")))
        goto out;
    for (size_t s = 0; d->staffed && s < d->seats.nseats; s++) {
        const char *id = wf->models[d->seats.seats[s].model].id;
        cJSON *so = cJSON_CreateObject(), *mid = cJSON_CreateString(id);

        if (so)
            cJSON_AddItemToArray(seats, so);
        if (mid)
            cJSON_AddItemToArray(models, mid);
        if (!so || !mid || json_add_item(so, "model", cJSON_CreateString(id)) ||
            json_add_item(so, "role",
                          cJSON_CreateString(d->seats.seats[s].role)) ||
            json_add_item(so, "propose_only",
                          cJSON_CreateBool(d->seats.seats[s].propose_only)))
            goto out;
    }
    if (json_add_item(o, "explore", cJSON_CreateBool(d->explore)) ||
        json_add_item(o, "explored",
                      d->explored >= 0
                          ? cJSON_CreateString(wf->models[d->explored].id)
                          : cJSON_CreateNull()))
        goto out;
    if (json_add_item(o, "expected_value",
                      num_or_null(d->value, d->staffed)) ||
        json_add_item(o, "expected_cost_usd",
                      num_or_null(d->usd, d->staffed)) ||
        json_add_item(o, "expected_tokens",
                      num_or_null(d->tokens, d->staffed)) ||
        json_add_num(o, "nodes", (double)d->nodes) ||
        !(cands = cJSON_AddArrayToObject(o, "candidates")))
        goto out;
    for (size_t i = 0; i < d->ncands; i++)
        if (candidate_json(wf, &d->cands[i], cands))
            goto out;
    *out = cJSON_PrintUnformatted(o);
    rc = *out ? 0 : NSED_ENOMEM;
out:
    cJSON_Delete(o);
    return rc;
}

cJSON *broker_record_summary(const char *record, size_t len)
{
    static const char *const keys[] = {"policy", "team", "models"};
    static const char *const expected[] = {
        "expected_value", "expected_cost_usd", "expected_tokens"};
    cJSON *rec = cJSON_ParseWithLength(record, len), *o = NULL;
    const cJSON *pol = cJSON_GetObjectItemCaseSensitive(rec, "policy");
    bool fixed;

    if (!cJSON_IsString(pol) || !(o = cJSON_CreateObject()))
        goto fail;
    /* A fixed team does not depend on the estimates, and they change with
     * the telemetry of the moment: leaving them out keeps a fixed run's
     * results the same however it was interrupted. */
    fixed = strcmp(pol->valuestring,
                   workflow_policy_name(WORKFLOW_POLICY_FIXED)) == 0;
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(rec, keys[i]);

        if (!v || json_add_item(o, keys[i], cJSON_Duplicate(v, 1)))
            goto fail;
    }
    for (size_t i = 0; i < sizeof expected / sizeof expected[0]; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(rec, expected[i]);

        if (json_add_item(o, expected[i],
                          !fixed && cJSON_IsNumber(v)
                              ? cJSON_CreateNumber(v->valuedouble)
                              : cJSON_CreateNull()))
            goto fail;
    }
    /* only on an explored question: other results keep their form */
    {
        const cJSON *x = cJSON_GetObjectItemCaseSensitive(rec, "explored");

        if (cJSON_IsString(x) &&
            json_add_item(o, "explored", cJSON_CreateString(x->valuestring)))
            goto fail;
    }
    cJSON_Delete(rec);
    return o;
fail:
    cJSON_Delete(o);
    cJSON_Delete(rec);
    return NULL;
}
