/* state_json.c -- state <-> JSON (see state.h for the contract).
 *
 * Writing prints compact JSON straight into a buffer (see "writing"
 * below): a double gets 15 significant digits when they read back and 17
 * otherwise, so every number round-trips. Reading parses with cJSON and
 * checks every field's type and every index against the sizes it refers
 * to, so a damaged checkpoint is refused instead of crashing a stage
 * later.
 */
#include "stages/state.h"

#include "pipeline/base/buf.h"
#include "pipeline/base/json.h"
#include "pipeline/base/jsonw.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- writing ---------------------------------------------------------- */

/* The writer prints straight into one growing buffer (pipeline/base/
 * jsonw.h, in its JSONW_CJSON format): checkpoints are written after every
 * stage of every question, and building a cJSON tree of copies first cost
 * more than everything else the runner does per call. The text is what
 * cJSON_PrintUnformatted printed for the same fields, keys in the same
 * order. */

static void key_label(jsonw *w, const char *key, size_t cand)
{
    char label[TEXT_LABEL_MAX];

    text_label(cand, label);
    jsonw_key_str(w, key, label);
}

static void usage_json(jsonw *w, const char *key, const state_usage *u)
{
    jsonw_key(w, key);
    jsonw_object_begin(w);
    jsonw_key_num(w, "prompt_tokens", (double)u->prompt_tokens);
    jsonw_key_num(w, "completion_tokens", (double)u->completion_tokens);
    jsonw_key_num(w, "cost_usd", u->cost_usd);
    jsonw_object_end(w);
}

static void proposal_json(jsonw *w, const state_proposal *p)
{
    jsonw_object_begin(w);
    jsonw_key_str(w, "status", state_proposal_status_name(p->status));
    jsonw_key_bool(w, "infra", p->infra);
    /* only when set, so states and rounds written before the field
     * existed read back and print identically */
    if (p->truncated)
        jsonw_key_bool(w, "truncated", true);
    jsonw_key_str(w, "text", p->text);
    jsonw_key_str(w, "answer", p->answer);
    jsonw_key_str(w, "error", p->error);
    usage_json(w, "usage", &p->usage);
    jsonw_object_end(w);
}

static void evaluation_json(jsonw *w, const state_evaluation *e)
{
    jsonw_object_begin(w);
    jsonw_key_str(w, "status", state_eval_status_name(e->status));
    jsonw_key_bool(w, "repaired", e->repaired);
    if (e->truncated)
        jsonw_key_bool(w, "truncated", true);
    jsonw_key_str(w, "reply", e->reply);
    jsonw_key_str(w, "first_reply", e->first_reply);
    jsonw_key_str(w, "error", e->error);
    jsonw_key(w, "weights");
    jsonw_array_begin(w);
    for (size_t i = 0; i < e->nweights; i++) {
        jsonw_object_begin(w);
        key_label(w, "label", e->weights[i].cand);
        jsonw_key_num(w, "weight", e->weights[i].weight);
        jsonw_key_str(w, "critique", e->weights[i].critique);
        jsonw_object_end(w);
    }
    jsonw_array_end(w);
    jsonw_key(w, "dropped");
    jsonw_object_begin(w);
    jsonw_key_num(w, "self", (double)e->dropped_self);
    jsonw_key_num(w, "unknown", (double)e->dropped_unknown);
    jsonw_key_num(w, "invalid", (double)e->dropped_invalid);
    jsonw_key_num(w, "duplicate", (double)e->dropped_duplicate);
    jsonw_object_end(w);
    usage_json(w, "usage", &e->usage);
    if (e->shown) {
        jsonw_key(w, "shown");
        jsonw_array_begin(w);
        for (size_t p = 0; p < e->nshown; p++) {
            char l[TEXT_LABEL_MAX];

            text_label(e->shown[p], l);
            jsonw_str(w, l);
        }
        jsonw_array_end(w);
    }
    jsonw_object_end(w);
}

static void aggregate_json(jsonw *w, const state_round *r)
{
    const state_aggregate *a = &r->agg;

    jsonw_object_begin(w);
    jsonw_key_str(w, "scheme", workflow_scheme_name(a->scheme));
    jsonw_key_bool(w, "self_votes", a->self_votes);
    jsonw_key_bool(w, "reliability", a->reliability);
    jsonw_key_num(w, "winner", (double)a->winner);
    jsonw_key_num(w, "conviction", a->conviction);
    jsonw_key_str(w, "decided_by", state_decider_name(a->decided_by));
    jsonw_key_num(w, "evaluators", (double)a->evaluators);
    jsonw_key_num(w, "abstained", (double)a->abstained);
    jsonw_key_num(w, "failed", (double)a->failed);
    jsonw_key(w, "scores");
    jsonw_array_begin(w);
    for (size_t j = 0; j < r->ncand; j++) {
        const state_score *sc = &a->scores[j];

        jsonw_object_begin(w);
        key_label(w, "label", j);
        jsonw_key_num(w, "score", sc->score);
        jsonw_key_num(w, "net_support", sc->net_support);
        jsonw_key_num(w, "evaluators", (double)sc->nevaluators);
        jsonw_key_num(w, "min_peer", sc->min_peer);
        jsonw_key_num(w, "variance", sc->variance);
        jsonw_object_end(w);
    }
    jsonw_array_end(w);
    jsonw_object_end(w);
}

static void decision_json(jsonw *w, const state_decision *d)
{
    jsonw_object_begin(w);
    jsonw_key_bool(w, "stop", d->stop);
    jsonw_key_str(w, "reason", state_stop_reason_name(d->reason));
    jsonw_key_num(w, "stable_streak", d->stable_streak);
    jsonw_key_num(w, "p_g", d->p_g);
    jsonw_key_num(w, "p_v", d->p_v);
    jsonw_key_num(w, "lambda", d->lambda);
    jsonw_key_num(w, "beta", d->beta);
    jsonw_key_num(w, "t_opt", d->t_opt);
    jsonw_key_num(w, "target", d->target);
    jsonw_object_end(w);
}

static void round_json(jsonw *w, const state_round *r, size_t nseats)
{
    jsonw_object_begin(w);
    jsonw_key_num(w, "v", STATE_JSON_VERSION);
    jsonw_key_num(w, "round", r->index);
    jsonw_key(w, "proposals");
    jsonw_array_begin(w);
    for (size_t i = 0; i < nseats; i++)
        proposal_json(w, &r->proposals[i]);
    jsonw_array_end(w);
    jsonw_key(w, "anonymize");
    if (!r->anonymized) {
        jsonw_null(w);
    } else {
        jsonw_object_begin(w);
        jsonw_key_str(w, "fence", r->fence);
        if (r->per_evaluator)
            jsonw_key_str(w, "order", "per_evaluator");
        /* A candidate is its seat's proposal, anonymized: most often the
         * same text, which then is not stored twice. */
        if (!r->cand_text_full)
            jsonw_key_bool(w, "same_text", true);
        jsonw_key(w, "candidates");
        jsonw_array_begin(w);
        for (size_t j = 0; j < r->ncand; j++) {
            const state_candidate *c = &r->cands[j];
            const char *own = c->seat < nseats ? r->proposals[c->seat].text
                                               : NULL;

            jsonw_object_begin(w);
            key_label(w, "label", j);
            jsonw_key_num(w, "seat", (double)c->seat);
            if (r->cand_text_full || !c->text || !own ||
                strcmp(c->text, own) != 0)
                jsonw_key_str(w, "text", c->text);
            jsonw_key_num(w, "redactions", (double)c->redactions);
            jsonw_object_end(w);
        }
        jsonw_array_end(w);
        jsonw_object_end(w);
    }
    jsonw_key(w, "evaluations");
    if (!r->evals) {
        jsonw_null(w);
    } else {
        jsonw_array_begin(w);
        for (size_t i = 0; i < nseats; i++)
            evaluation_json(w, &r->evals[i]);
        jsonw_array_end(w);
    }
    jsonw_key(w, "aggregate");
    if (r->aggregated)
        aggregate_json(w, r);
    else
        jsonw_null(w);
    jsonw_key(w, "decision");
    if (r->decided)
        decision_json(w, &r->decision);
    else
        jsonw_null(w);
    jsonw_object_end(w);
}

int state_round_to_json(const state_round *r, size_t nseats, char **out)
{
    jsonw w;

    jsonw_init(&w, STATE_JSON_MAX, JSONW_CJSON);
    round_json(&w, r, nseats);
    return jsonw_finish(&w, out, NULL);
}

static void selfcons_json(jsonw *w, const state_selfcons *sc)
{
    jsonw_key(w, "self_consistency");
    jsonw_object_begin(w);
    jsonw_key_num(w, "model", (double)sc->model);
    jsonw_key_num(w, "seat", (double)sc->seat);
    jsonw_key_str(w, "why", sc->why);
    jsonw_key_num(w, "p_g", sc->p_g);
    jsonw_key_num(w, "team_calls", (double)sc->team_calls);
    jsonw_key_bool(w, "decided", sc->decided);
    jsonw_key(w, "samples");
    jsonw_array_begin(w);
    for (size_t i = 0; i < sc->nsamples; i++) {
        const state_sample *x = &sc->samples[i];

        jsonw_object_begin(w);
        jsonw_key_str(w, "status", state_proposal_status_name(x->status));
        jsonw_key_str(w, "answer", x->answer);
        jsonw_key_str(w, "error", x->error);
        jsonw_object_end(w);
    }
    jsonw_array_end(w);
    jsonw_key_str(w, "answer", sc->answer);
    jsonw_key_num(w, "votes", (double)sc->votes);
    jsonw_key_bool(w, "tie", sc->tie);
    jsonw_key_bool(w, "drawn", sc->drawn);
    jsonw_key_num(w, "failed", (double)sc->failed);
    usage_json(w, "usage", &sc->usage);
    jsonw_object_end(w);
}

static void block_list(jsonw *w, const char *key, char **v, size_t n)
{
    jsonw_key(w, key);
    if (!v) {
        jsonw_null(w);
        return;
    }
    jsonw_array_begin(w);
    for (size_t i = 0; i < n; i++)
        jsonw_str(w, v[i]);
    jsonw_array_end(w);
}

/* A decided round in a checkpoint: archived under its own key, so only
 * named here. */
static void round_ref_json(jsonw *w, const state_round *r)
{
    jsonw_object_begin(w);
    jsonw_key_num(w, "v", STATE_JSON_VERSION);
    jsonw_key_num(w, "round", r->index);
    jsonw_key_bool(w, "archived", true);
    jsonw_object_end(w);
}

static void checkpoint_round(jsonw *w, const state_round *r, size_t nseats,
                             bool checkpoint)
{
    if (checkpoint && r->decided)
        round_ref_json(w, r);
    else
        round_json(w, r, nseats);
}

static int state_json_write(const state *st, bool checkpoint, char **out)
{
    jsonw w;
    bool carry = !checkpoint || st->stage != STATE_STAGE_FINISHED;
    char seed[17];

    jsonw_init(&w, STATE_JSON_MAX, JSONW_CJSON);
    snprintf(seed, sizeof seed, "%016" PRIx64, st->seed);
    jsonw_object_begin(&w);
    jsonw_key_num(&w, "v", STATE_JSON_VERSION);
    jsonw_key_str(&w, "seed", seed);
    jsonw_key(&w, "question");
    jsonw_object_begin(&w);
    jsonw_key_str(&w, "id", st->qid);
    jsonw_key_str(&w, "text", st->question);
    jsonw_key_str(&w, "reference", st->reference);
    jsonw_key(&w, "tags");
    jsonw_array_begin(&w);
    for (size_t i = 0; i < st->ntags; i++)
        jsonw_str(&w, st->tags[i]);
    jsonw_array_end(&w);
    jsonw_object_end(&w);
    jsonw_key(&w, "seats");
    jsonw_array_begin(&w);
    for (size_t i = 0; i < st->nseats; i++) {
        jsonw_object_begin(&w);
        jsonw_key_num(&w, "model", (double)st->seats[i].model);
        jsonw_key_str(&w, "role", st->seats[i].role);
        jsonw_key_str(&w, "persona", st->seats[i].persona);
        if (st->seats[i].propose_only) /* only then: older states print
                                          back the same */
            jsonw_key_bool(&w, "propose_only", true);
        jsonw_object_end(&w);
    }
    jsonw_array_end(&w);
    jsonw_key_num(&w, "round", st->round);
    jsonw_key_str(&w, "stage", state_stage_name(st->stage));
    jsonw_key_str(&w, "status", state_status_name(st->status));
    if (st->failure) /* only then, so older states print back the same */
        jsonw_key_str(&w, "failure", st->failure);
    jsonw_key(&w, "missing");
    jsonw_array_begin(&w);
    for (size_t i = 0; i < st->nseats; i++)
        if (st->missing[i])
            jsonw_num(&w, (double)i);
    jsonw_array_end(&w);
    jsonw_key(&w, "final");
    jsonw_object_begin(&w);
    jsonw_key_str(&w, "answer", st->final_answer);
    jsonw_key_num(&w, "seat", (double)st->final_seat);
    jsonw_key_num(&w, "round", st->final_round);
    jsonw_key_str(&w, "source", state_final_source_name(st->final_source));
    jsonw_object_end(&w);
    jsonw_key(&w, "baseline");
    jsonw_object_begin(&w);
    jsonw_key_str(&w, "answer", st->baseline_answer);
    jsonw_key_num(&w, "votes", (double)st->baseline_votes);
    if (st->baseline_tie) { /* only then, so older states print back the same */
        jsonw_key(&w, "tie");
        jsonw_bool(&w, true);
        jsonw_key_str(&w, "drawn", st->baseline_drawn);
    }
    jsonw_object_end(&w);
    usage_json(&w, "usage", &st->usage);
    /* only when the workflow asks for the baseline, so the states of
     * workflows without it print as before it existed */
    if (st->sc.on)
        selfcons_json(&w, &st->sc);
    jsonw_key(&w, "carry");
    jsonw_object_begin(&w);
    jsonw_key_num(&w, "from_round", carry ? st->carry.from_round : -1);
    jsonw_key_str(&w, "fence", carry ? st->carry.fence : "");
    jsonw_key_str(&w, "winner", carry ? st->carry.winner : NULL);
    block_list(&w, "own", carry ? st->carry.own : NULL, st->nseats);
    block_list(&w, "critiques", carry ? st->carry.critiques : NULL, st->nseats);
    block_list(&w, "scores", carry ? st->carry.scores : NULL, st->nseats);
    jsonw_object_end(&w);
    jsonw_key(&w, "rounds");
    jsonw_array_begin(&w);
    if (st->prev)
        checkpoint_round(&w, st->prev, st->nseats, checkpoint);
    checkpoint_round(&w, st->cur, st->nseats, checkpoint);
    jsonw_array_end(&w);
    jsonw_object_end(&w);
    return jsonw_finish(&w, out, NULL);
}

int state_to_json(const state *st, char **out)
{
    return state_json_write(st, false, out);
}

int state_to_json_checkpoint(const state *st, char **out)
{
    return state_json_write(st, true, out);
}

/* ---- reading ---------------------------------------------------------- */

/* (included here, not at the top, so that the writer half stays apart) */
/* Adapters from the typed name functions to json_rd_enum's int form. */
static const char *n_stage(int i)
{
    return state_stage_name((enum state_stage)i);
}

static const char *n_status(int i)
{
    return state_status_name((enum state_status)i);
}

static const char *n_reason(int i)
{
    return state_stop_reason_name((enum state_stop_reason)i);
}

static const char *n_decider(int i)
{
    return state_decider_name((enum state_decider)i);
}

static const char *n_final(int i)
{
    return state_final_source_name((enum state_final_source)i);
}

static const char *n_prop(int i)
{
    return state_proposal_status_name((enum state_proposal_status)i);
}

static const char *n_eval(int i)
{
    return state_eval_status_name((enum state_eval_status)i);
}

static const char *n_scheme(int i)
{
    return workflow_scheme_name((enum workflow_scheme)i);
}


#define P(buf, ...) (snprintf(buf, sizeof buf, __VA_ARGS__), buf)
#define COUNT_MAX ((int64_t)1 << 53)
#define ROUND_MAX 1000000 /* far beyond rounds.max; a sanity bound */

static void rd_usage(json_reader *r, const cJSON *o, const char *path,
                     state_usage *u)
{
    char p[192];
    const cJSON *v = json_rd_obj(r, o, "usage", P(p, "%s.usage", path), false);

    if (!v)
        return;
    u->prompt_tokens = json_rd_int(r, v, "prompt_tokens", p, 0, COUNT_MAX);
    u->completion_tokens =
        json_rd_int(r, v, "completion_tokens", p, 0, COUNT_MAX);
    u->cost_usd = json_rd_num(r, v, "cost_usd", p);
}

/* A label string naming candidate index below ncand. */
static size_t rd_label(json_reader *r, const cJSON *o, const char *path,
                       size_t ncand)
{
    const cJSON *v = json_rd_item(r, o, "label", path);
    size_t idx = 0;

    if (!v)
        return 0;
    if (!cJSON_IsString(v) ||
        text_label_index(v->valuestring, strlen(v->valuestring), &idx) ||
        idx >= ncand) {
        json_rd_fail(r, NSED_EINVAL, path, "not a candidate label");
        return 0;
    }
    return idx;
}

/* A flag written only when true: absent reads as false, present must be
 * true (the writer never writes false). */
static bool rd_flag(json_reader *r, const cJSON *o, const char *key,
                    const char *path)
{
    if (!cJSON_GetObjectItemCaseSensitive(o, key))
        return false;
    if (!json_rd_bool(r, o, key, path))
        json_rd_fail(r, NSED_EINVAL, path,
                     "a flag written only when true "
                     "is false");
    return !r->rc;
}

static void rd_proposal(json_reader *r, const cJSON *o, const char *path,
                        state_proposal *p)
{
    p->status = (enum state_proposal_status)json_rd_enum(
        r, o, "status", path, n_prop, STATE_PROPOSAL_FAILED + 1);
    p->infra = json_rd_bool(r, o, "infra", path);
    p->truncated = rd_flag(r, o, "truncated", path);
    p->text = json_rd_str(r, o, "text", path, true);
    p->answer = json_rd_str(r, o, "answer", path, true);
    p->error = json_rd_str(r, o, "error", path, true);
    rd_usage(r, o, path, &p->usage);
}

/* An evaluation's "shown": distinct candidate labels in the order shown;
 * absent (an older nsed) reads as unknown (NULL). */
static void rd_shown(json_reader *r, const cJSON *o, const char *path,
                     size_t ncand, state_evaluation *e)
{
    const cJSON *a, *x;
    char p[160];

    if (!cJSON_GetObjectItemCaseSensitive(o, "shown"))
        return;
    a = json_rd_arr(r, o, "shown", P(p, "%s.shown", path), false, (size_t)-1);
    if (!a || r->rc)
        return;
    if ((size_t)cJSON_GetArraySize(a) > ncand) {
        json_rd_fail(r, NSED_EINVAL, p, "more labels shown than candidates");
        return;
    }
    e->shown = calloc(ncand ? ncand : 1, sizeof *e->shown);
    if (!e->shown) {
        json_rd_fail(r, NSED_ENOMEM, p, "out of memory");
        return;
    }
    cJSON_ArrayForEach(x, a) {
        size_t idx = 0;

        if (!cJSON_IsString(x) ||
            text_label_index(x->valuestring, strlen(x->valuestring), &idx) ||
            idx >= ncand) {
            json_rd_fail(r, NSED_EINVAL, p, "not a candidate label");
            return;
        }
        for (size_t q = 0; q < e->nshown; q++) {
            if (e->shown[q] == idx) {
                json_rd_fail(r, NSED_EINVAL, p, "a label shown twice");
                return;
            }
        }
        e->shown[e->nshown++] = idx;
    }
}

static void rd_evaluation(json_reader *r, const cJSON *o, const char *path,
                          size_t ncand, state_evaluation *e)
{
    char p[160];
    const cJSON *w, *d, *x;
    size_t n;

    e->status = (enum state_eval_status)json_rd_enum(
        r, o, "status", path, n_eval, STATE_EVAL_IDLE + 1);
    e->repaired = json_rd_bool(r, o, "repaired", path);
    e->truncated = rd_flag(r, o, "truncated", path);
    e->reply = json_rd_str(r, o, "reply", path, true);
    e->first_reply = json_rd_str(r, o, "first_reply", path, true);
    e->error = json_rd_str(r, o, "error", path, true);
    w = json_rd_arr(r, o, "weights", P(p, "%s.weights", path), false,
                    (size_t)-1);
    n = w ? (size_t)cJSON_GetArraySize(w) : 0;
    if (n > ncand)
        json_rd_fail(r, NSED_EINVAL, p, "more weights than candidates");
    if (!r->rc && n) {
        e->weights = calloc(n, sizeof *e->weights);
        if (!e->weights)
            json_rd_fail(r, NSED_ENOMEM, p, "out of memory");
    }
    cJSON_ArrayForEach(x, w) {
        state_weight *sw;

        if (r->rc)
            break;
        sw = &e->weights[e->nweights++];
        P(p, "%s.weights[%zu]", path, e->nweights - 1);
        sw->cand = rd_label(r, x, p, ncand);
        sw->weight = (int)json_rd_int(r, x, "weight", p, -100, 100);
        sw->critique = json_rd_str(r, x, "critique", p, false);
        if (e->nweights > 1 && sw->cand <= e->weights[e->nweights - 2].cand)
            json_rd_fail(r, NSED_EINVAL, p, "labels out of order");
    }
    d = json_rd_obj(r, o, "dropped", P(p, "%s.dropped", path), false);
    if (d) {
        e->dropped_self = (size_t)json_rd_int(r, d, "self", p, 0, COUNT_MAX);
        e->dropped_unknown =
            (size_t)json_rd_int(r, d, "unknown", p, 0, COUNT_MAX);
        e->dropped_invalid =
            (size_t)json_rd_int(r, d, "invalid", p, 0, COUNT_MAX);
        e->dropped_duplicate =
            (size_t)json_rd_int(r, d, "duplicate", p, 0, COUNT_MAX);
    }
    rd_usage(r, o, path, &e->usage);
    rd_shown(r, o, path, ncand, e);
}

static void rd_aggregate(json_reader *r, const cJSON *o, const char *path,
                         state_round *rn)
{
    state_aggregate *a = &rn->agg;
    char p[160];
    const cJSON *s, *x;
    size_t j = 0;

    a->scheme = (enum workflow_scheme)json_rd_enum(
        r, o, "scheme", path, n_scheme, WORKFLOW_SCHEME_BORDA + 1);
    a->self_votes = json_rd_bool(r, o, "self_votes", path);
    a->reliability = json_rd_bool(r, o, "reliability", path);
    a->winner =
        (long)json_rd_int(r, o, "winner", path, -1, (int64_t)rn->ncand - 1);
    a->conviction = json_rd_num(r, o, "conviction", path);
    a->decided_by = (enum state_decider)json_rd_enum(
        r, o, "decided_by", path, n_decider, STATE_DECIDER_SEEDED + 1);
    a->evaluators =
        (size_t)json_rd_int(r, o, "evaluators", path, 0, COUNT_MAX);
    a->abstained = (size_t)json_rd_int(r, o, "abstained", path, 0, COUNT_MAX);
    a->failed = (size_t)json_rd_int(r, o, "failed", path, 0, COUNT_MAX);
    s = json_rd_arr(r, o, "scores", P(p, "%s.scores", path), false, rn->ncand);
    if (!r->rc && rn->ncand) {
        a->scores = calloc(rn->ncand, sizeof *a->scores);
        if (!a->scores)
            json_rd_fail(r, NSED_ENOMEM, p, "out of memory");
    }
    cJSON_ArrayForEach(x, s) {
        state_score *sc;

        if (r->rc)
            break;
        sc = &a->scores[j];
        P(p, "%s.scores[%zu]", path, j);
        if (rd_label(r, x, p, rn->ncand) != j)
            json_rd_fail(r, NSED_EINVAL, p, "labels out of order");
        sc->score = json_rd_num(r, x, "score", p);
        sc->net_support = (int)json_rd_int(r, x, "net_support", p, -64, 64);
        sc->nevaluators = (size_t)json_rd_int(r, x, "evaluators", p, 0, 64);
        sc->min_peer = (int)json_rd_int(r, x, "min_peer", p, -100, 100);
        sc->variance = json_rd_num(r, x, "variance", p);
        j++;
    }
}

static void rd_decision(json_reader *r, const cJSON *o, const char *path,
                        state_decision *d)
{
    d->stop = json_rd_bool(r, o, "stop", path);
    d->reason = (enum state_stop_reason)json_rd_enum(
        r, o, "reason", path, n_reason, STATE_STOP_ALL_FAILED + 1);
    d->stable_streak =
        (int)json_rd_int(r, o, "stable_streak", path, 0, 1 << 20);
    d->p_g = json_rd_num(r, o, "p_g", path);
    d->p_v = json_rd_num(r, o, "p_v", path);
    d->lambda = json_rd_num(r, o, "lambda", path);
    d->beta = json_rd_num(r, o, "beta", path);
    d->t_opt = json_rd_num(r, o, "t_opt", path);
    d->target = (int)json_rd_int(r, o, "target", path, -1, INT32_MAX);
}

static state_round *rd_round(json_reader *r, const cJSON *o, const char *path,
                             size_t nseats)
{
    char p[96];
    const cJSON *a, *an, *x;
    state_round *rn;
    size_t i = 0;
    int64_t v, index;

    v = json_rd_int(r, o, "v", path, INT64_MIN / 2, INT64_MAX / 2);
    if (!r->rc && v != STATE_JSON_VERSION)
        json_rd_fail(r, NSED_ESCHEMA, path, "unsupported version");
    index = json_rd_int(r, o, "round", path, 0, ROUND_MAX);
    if (r->rc)
        return NULL;
    rn = state_round_new((int)index, nseats);
    if (!rn) {
        json_rd_fail(r, NSED_ENOMEM, path, "out of memory");
        return NULL;
    }
    a = json_rd_arr(r, o, "proposals", P(p, "%s.proposals", path), false,
                    nseats);
    cJSON_ArrayForEach(x, a) {
        if (r->rc)
            break;
        rd_proposal(r, x, P(p, "%s.proposals[%zu]", path, i),
                    &rn->proposals[i]);
        i++;
    }
    an = json_rd_obj(r, o, "anonymize", P(p, "%s.anonymize", path), true);
    if (an) {
        char *fence = json_rd_str(r, an, "fence", p, false);
        bool same = cJSON_GetObjectItemCaseSensitive(an, "same_text") &&
                    json_rd_bool(r, an, "same_text", p);

        if (fence && strlen(fence) == TEXT_FENCE_HEX &&
            strspn(fence, "0123456789abcdef") == TEXT_FENCE_HEX)
            memcpy(rn->fence, fence, TEXT_FENCE_HEX + 1);
        else
            json_rd_fail(r, NSED_EINVAL, p, "bad fence");
        free(fence);
        if (cJSON_GetObjectItemCaseSensitive(an, "order")) {
            char *order = json_rd_str(r, an, "order", p, false);

            if (order && strcmp(order, "per_evaluator") == 0)
                rn->per_evaluator = true;
            else if (!r->rc)
                json_rd_fail(r, NSED_EINVAL, p, "order is not per_evaluator");
            free(order);
        }
        a = json_rd_arr(r, an, "candidates",
                        P(p, "%s.anonymize.candidates", path), false,
                        (size_t)-1);
        if (a && (size_t)cJSON_GetArraySize(a) > nseats)
            json_rd_fail(r, NSED_EINVAL, p, "more candidates than seats");
        if (!r->rc && cJSON_GetArraySize(a)) {
            rn->cands = calloc((size_t)cJSON_GetArraySize(a),
                               sizeof *rn->cands);
            if (!rn->cands)
                json_rd_fail(r, NSED_ENOMEM, p, "out of memory");
        }
        rn->anonymized = true;
        rn->cand_text_full = !same;
        cJSON_ArrayForEach(x, a) {
            state_candidate *c;

            if (r->rc)
                break;
            c = &rn->cands[rn->ncand++];
            P(p, "%s.anonymize.candidates[%zu]", path, rn->ncand - 1);
            if (rd_label(r, x, p, nseats) != rn->ncand - 1)
                json_rd_fail(r, NSED_EINVAL, p, "labels out of order");
            c->seat =
                (size_t)json_rd_int(r, x, "seat", p, 0, (int64_t)nseats - 1);
            if (same && !cJSON_GetObjectItemCaseSensitive(x, "text")) {
                const char *own = !r->rc && c->seat < nseats
                                      ? rn->proposals[c->seat].text
                                      : NULL;

                if (own && !(c->text = strdup(own)))
                    json_rd_fail(r, NSED_ENOMEM, p, "out of memory");
                else if (!own && !r->rc)
                    json_rd_fail(r, NSED_EINVAL, p,
                                 "no text and its seat proposed none");
            } else {
                c->text = json_rd_str(r, x, "text", p, false);
            }
            c->redactions =
                (size_t)json_rd_int(r, x, "redactions", p, 0, COUNT_MAX);
        }
    }
    a = json_rd_arr(r, o, "evaluations", P(p, "%s.evaluations", path), true,
                    nseats);
    if (a && !r->rc) {
        rn->evals = calloc(nseats, sizeof *rn->evals);
        if (!rn->evals)
            json_rd_fail(r, NSED_ENOMEM, p, "out of memory");
        i = 0;
        cJSON_ArrayForEach(x, a) {
            if (r->rc)
                break;
            rd_evaluation(r, x, P(p, "%s.evaluations[%zu]", path, i),
                          rn->ncand, &rn->evals[i]);
            i++;
        }
    }
    x = json_rd_obj(r, o, "aggregate", P(p, "%s.aggregate", path), true);
    if (x) {
        rn->aggregated = true;
        rd_aggregate(r, x, p, rn);
    }
    x = json_rd_obj(r, o, "decision", P(p, "%s.decision", path), true);
    if (x) {
        rn->decided = true;
        rd_decision(r, x, p, &rn->decision);
    }
    return rn;
}

static char **rd_block_list(json_reader *r, const cJSON *o, const char *key,
                            size_t nseats)
{
    char p[64];
    const cJSON *a =
        json_rd_arr(r, o, key, P(p, "carry.%s", key), true, nseats);
    const cJSON *x;
    char **v;
    size_t i = 0;

    if (!a || r->rc)
        return NULL;
    v = calloc(nseats, sizeof *v);
    if (!v) {
        json_rd_fail(r, NSED_ENOMEM, p, "out of memory");
        return NULL;
    }
    cJSON_ArrayForEach(x, a) {
        if (cJSON_IsString(x)) {
            v[i] = strdup(x->valuestring);
            if (!v[i])
                json_rd_fail(r, NSED_ENOMEM, p, "out of memory");
        } else if (!cJSON_IsNull(x)) {
            json_rd_fail(r, NSED_EINVAL, p, "not a string or null");
        }
        i++;
    }
    return v;
}

static int parse_root(const char *json, size_t len, cJSON **out,
                      nsed_err *err)
{
    const char *end = NULL;
    cJSON *root;

    if (len > STATE_JSON_MAX)
        return nsed_error(err, NSED_ETOOBIG, "state JSON: %zu bytes, over "
                          "the cap of %zu", len, STATE_JSON_MAX);
    root = cJSON_ParseWithLengthOpts(json, len, &end, false);
    if (!root)
        return nsed_error(err, NSED_EINVAL, "state JSON: not valid JSON "
                          "(at byte %zu)",
                          end ? (size_t)(end - json) : (size_t)0);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return nsed_error(err, NSED_EINVAL, "state JSON: not an object");
    }
    *out = root;
    return 0;
}

int state_round_from_json(const char *json, size_t len, size_t nseats,
                          state_round **out, nsed_err *err)
{
    json_reader r;
    cJSON *root = NULL;
    state_round *rn;
    int rc;

    if (nseats == 0 || nseats > WORKFLOW_MAX_SEATS)
        return nsed_error(err, NSED_EINVAL, "state JSON: bad team size %zu",
                          nseats);
    rc = parse_root(json, len, &root, err);
    if (rc)
        return rc;
    json_reader_init(&r, "state JSON", err);
    rn = rd_round(&r, root, "round", nseats);
    cJSON_Delete(root);
    if (r.rc) {
        state_round_free(rn, nseats);
        return r.rc;
    }
    *out = rn;
    return 0;
}

/* Whether the round has exactly the parts the stage expects, so that a
 * stage never finds (and overwrites or misreads) parts of the wrong age. */
static bool stage_matches_round(enum state_stage stage, const state_round *c)
{
    if (c->evals && !c->anonymized)
        return false;
    switch (stage) {
    case STATE_STAGE_PROPOSE:
    case STATE_STAGE_ANONYMIZE:
        return !c->anonymized && !c->aggregated && !c->decided;
    case STATE_STAGE_EVALUATE:
    case STATE_STAGE_AGGREGATE:
        return c->anonymized && c->evals && !c->aggregated && !c->decided;
    case STATE_STAGE_CONVERGE:
        return c->anonymized && c->evals && c->aggregated && !c->decided;
    case STATE_STAGE_SELFCONS:
    case STATE_STAGE_FINISHED:
        return c->decided;
    }
    return false;
}

/* Bound of the sample count read back: a team makes at most a few calls
 * per seat and round. */
#define SAMPLES_MAX ((int64_t)1 << 20)

static void rd_selfcons(json_reader *r, const cJSON *root, size_t nmodels,
                        size_t nseats, state_selfcons *sc)
{
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(root, "self_consistency");
    const cJSON *a, *it;
    size_t i = 0;

    if (!x)
        return;
    sc->on = true;
    x = json_rd_obj(r, root, "self_consistency", "self_consistency", false);
    sc->model = (size_t)json_rd_int(r, x, "model", "self_consistency.model", 0,
                                    (int64_t)nmodels - 1);
    sc->seat = (long)json_rd_int(r, x, "seat", "self_consistency.seat", -1,
                                 (int64_t)nseats - 1);
    sc->why = json_rd_str(r, x, "why", "self_consistency.why", true);
    sc->p_g = json_rd_num(r, x, "p_g", "self_consistency.p_g");
    if (!r->rc && !(sc->p_g == -1 || (sc->p_g >= 0 && sc->p_g <= 1)))
        json_rd_fail(r, NSED_EINVAL, "self_consistency.p_g",
                     "neither -1 nor in [0, 1]");
    sc->team_calls = (size_t)json_rd_int(r, x, "team_calls",
                                         "self_consistency.team_calls", 0,
                                         SAMPLES_MAX);
    sc->decided = json_rd_bool(r, x, "decided", "self_consistency.decided");
    a = json_rd_arr(r, x, "samples", "self_consistency.samples", false,
                    (size_t)-1);
    if (!r->rc && cJSON_GetArraySize(a) > SAMPLES_MAX)
        json_rd_fail(r, NSED_EINVAL, "self_consistency.samples",
                     "too many samples");
    if (r->rc)
        return;
    if (cJSON_GetArraySize(a) > 0) {
        sc->samples = calloc((size_t)cJSON_GetArraySize(a),
                             sizeof *sc->samples);
        if (!sc->samples) {
            json_rd_fail(r, NSED_ENOMEM, "self_consistency.samples",
                         "out of memory");
            return;
        }
    }
    cJSON_ArrayForEach(it, a) {
        char p[64];
        state_sample *s = &sc->samples[i];

        P(p, "self_consistency.samples[%zu]", i);
        s->status = (enum state_proposal_status)
            json_rd_enum(r, it, "status", p, n_prop, STATE_PROPOSAL_FAILED + 1);
        s->answer = json_rd_str(r, it, "answer", p, true);
        s->error = json_rd_str(r, it, "error", p, true);
        sc->nsamples = ++i;
    }
    sc->answer = json_rd_str(r, x, "answer", "self_consistency.answer", true);
    sc->votes = (size_t)json_rd_int(r, x, "votes", "self_consistency.votes", 0,
                                    (int64_t)sc->nsamples);
    sc->tie = json_rd_bool(r, x, "tie", "self_consistency.tie");
    sc->drawn = json_rd_bool(r, x, "drawn", "self_consistency.drawn");
    sc->failed = (size_t)json_rd_int(r, x, "failed", "self_consistency.failed",
                                     0, (int64_t)sc->nsamples);
    rd_usage(r, x, "self_consistency", &sc->usage);
}

/* Where a checkpoint's archived rounds are read from. */
typedef struct round_src {
    state_round_fetch_fn fetch; /* NULL: references are refused */
    void *arg;
} round_src;

/* A round of the state: in place, or a reference to its archived record. */
static state_round *rd_state_round(json_reader *r, const cJSON *o,
                                   const char *path, size_t nseats,
                                   const round_src *src)
{
    const void *json;
    size_t len;
    int64_t index;
    state_round *rn = NULL;
    int rc;

    if (!cJSON_IsObject(o) || !cJSON_GetObjectItemCaseSensitive(o, "archived"))
        return rd_round(r, o, path, nseats);
    if (!json_rd_bool(r, o, "archived", path) || r->rc) {
        if (!r->rc)
            json_rd_fail(r, NSED_EINVAL, path, "archived is not true");
        return NULL;
    }
    index = json_rd_int(r, o, "round", path, 0, ROUND_MAX);
    if (r->rc)
        return NULL;
    if (!src->fetch) {
        json_rd_fail(r, NSED_EINVAL, path, "archived round needs the store");
        return NULL;
    }
    rc = src->fetch(src->arg, (int)index, &json, &len, r->err);
    if (!rc)
        rc = state_round_from_json(json, len, nseats, &rn, r->err);
    if (!rc && rn->index != (int)index) {
        rc = nsed_error(r->err, NSED_EINVAL,
                        "state JSON: %s: archived round %d holds round %d",
                        path, (int)index, rn->index);
        state_round_free(rn, nseats);
        rn = NULL;
    }
    if (rc && !r->rc)
        r->rc = rc;
    return rn;
}

static void rd_state(json_reader *r, const cJSON *root, const workflow *wf,
                     const round_src *src, state *st)
{
    char p[128];
    const cJSON *q, *a, *x;
    char *seed;
    size_t i = 0, nmodels = wf ? wf->nmodels : (size_t)1 << 20;
    int64_t v;

    v = json_rd_int(r, root, "v", "v", INT64_MIN / 2, INT64_MAX / 2);
    if (!r->rc && v != STATE_JSON_VERSION)
        json_rd_fail(r, NSED_ESCHEMA, "v", "unsupported version");
    seed = json_rd_str(r, root, "seed", "seed", false);
    if (seed) {
        char *end;

        if (strlen(seed) != 16 || strspn(seed, "0123456789abcdef") != 16)
            json_rd_fail(r, NSED_EINVAL, "seed", "not 16 hex digits");
        else
            st->seed = strtoull(seed, &end, 16);
        free(seed);
    }
    q = json_rd_obj(r, root, "question", "question", false);
    st->qid = json_rd_str(r, q, "id", "question.id", false);
    st->question = json_rd_str(r, q, "text", "question.text", false);
    st->reference = json_rd_str(r, q, "reference", "question.reference", true);
    a = json_rd_arr(r, q, "tags", "question.tags", false, (size_t)-1);
    if (a && !r->rc && cJSON_GetArraySize(a)) {
        st->tags = calloc((size_t)cJSON_GetArraySize(a), sizeof *st->tags);
        if (!st->tags)
            json_rd_fail(r, NSED_ENOMEM, "question.tags", "out of memory");
    }
    cJSON_ArrayForEach(x, a) {
        if (r->rc)
            break;
        if (!cJSON_IsString(x)) {
            json_rd_fail(r, NSED_EINVAL, "question.tags", "not a string");
            break;
        }
        st->tags[st->ntags] = strdup(x->valuestring);
        if (!st->tags[st->ntags++])
            json_rd_fail(r, NSED_ENOMEM, "question.tags", "out of memory");
    }
    a = json_rd_arr(r, root, "seats", "seats", false, (size_t)-1);
    if (a && (cJSON_GetArraySize(a) < 1 ||
              cJSON_GetArraySize(a) > WORKFLOW_MAX_SEATS))
        json_rd_fail(r, NSED_EINVAL, "seats", "team size out of range");
    if (r->rc)
        return;
    st->nseats = (size_t)cJSON_GetArraySize(a);
    st->seats = calloc(st->nseats, sizeof *st->seats);
    st->missing = calloc(st->nseats, sizeof *st->missing);
    if (!st->seats || !st->missing) {
        json_rd_fail(r, NSED_ENOMEM, "seats", "out of memory");
        return;
    }
    cJSON_ArrayForEach(x, a) {
        P(p, "seats[%zu]", i);
        st->seats[i].model =
            (size_t)json_rd_int(r, x, "model", p, 0, (int64_t)nmodels - 1);
        st->seats[i].role = json_rd_str(r, x, "role", p, false);
        st->seats[i].persona = json_rd_str(r, x, "persona", p, false);
        if (cJSON_GetObjectItemCaseSensitive(x, "propose_only"))
            st->seats[i].propose_only = json_rd_bool(r, x, "propose_only", p);
        i++;
    }
    st->round = (int)json_rd_int(r, root, "round", "round", 0, ROUND_MAX);
    st->stage = (enum state_stage)json_rd_enum(
        r, root, "stage", "stage", n_stage, STATE_STAGE_FINISHED + 1);
    st->status = (enum state_status)json_rd_enum(r, root, "status", "status",
                                                 n_status,
                                                 STATE_STATUS_FAILED + 1);
    if (cJSON_GetObjectItemCaseSensitive(root, "failure"))
        st->failure = json_rd_str(r, root, "failure", "failure", false);
    if (!r->rc && (st->status == STATE_STATUS_FAILED) != (st->failure != NULL))
        json_rd_fail(r, NSED_EINVAL, "failure",
                     "present exactly when the status is failed");
    a = json_rd_arr(r, root, "missing", "missing", false, (size_t)-1);
    cJSON_ArrayForEach(x, a) {
        int64_t s =
            json_rd_int_item(r, x, "missing", 0, (int64_t)st->nseats - 1);

        if (r->rc)
            break;
        st->missing[s] = true;
    }
    x = json_rd_obj(r, root, "final", "final", false);
    st->final_answer = json_rd_str(r, x, "answer", "final.answer", true);
    st->final_seat = (long)json_rd_int(r, x, "seat", "final.seat", -1,
                                       (int64_t)st->nseats - 1);
    st->final_round =
        (int)json_rd_int(r, x, "round", "final.round", -1, st->round);
    st->final_source = (enum state_final_source)json_rd_enum(
        r, x, "source", "final.source", n_final, STATE_FINAL_MAJORITY + 1);
    x = json_rd_obj(r, root, "baseline", "baseline", false);
    st->baseline_answer = json_rd_str(r, x, "answer", "baseline.answer", true);
    st->baseline_votes = (size_t)json_rd_int(r, x, "votes", "baseline.votes",
                                             0, (int64_t)st->nseats);
    if (cJSON_GetObjectItemCaseSensitive(x, "tie")) {
        st->baseline_tie = json_rd_bool(r, x, "tie", "baseline.tie");
        st->baseline_drawn = json_rd_str(r, x, "drawn", "baseline.drawn", true);
        if (!r->rc &&
            (!st->baseline_tie || st->baseline_answer || !st->baseline_drawn))
            json_rd_fail(r, NSED_EINVAL, "baseline.tie",
                         "a tie has a drawn answer and no majority");
    }
    rd_usage(r, root, "state", &st->usage);
    st->sc.seat = -1;
    st->sc.p_g = -1;
    rd_selfcons(r, root, nmodels, st->nseats, &st->sc);
    x = json_rd_obj(r, root, "carry", "carry", false);
    st->carry.from_round = (int)json_rd_int(r, x, "from_round",
                                            "carry.from_round", -1, st->round);
    {
        char *fence = json_rd_str(r, x, "fence", "carry.fence", false);
        size_t n = fence ? strlen(fence) : 0;

        if (fence && (n == 0 || n == TEXT_FENCE_HEX) &&
            strspn(fence, "0123456789abcdef") == n)
            memcpy(st->carry.fence, fence, n + 1);
        else if (fence)
            json_rd_fail(r, NSED_EINVAL, "carry.fence", "bad fence");
        free(fence);
    }
    st->carry.winner = json_rd_str(r, x, "winner", "carry.winner", true);
    st->carry.own = rd_block_list(r, x, "own", st->nseats);
    st->carry.critiques = rd_block_list(r, x, "critiques", st->nseats);
    st->carry.scores = rd_block_list(r, x, "scores", st->nseats);
    a = json_rd_arr(r, root, "rounds", "rounds", false, (size_t)-1);
    if (a && (cJSON_GetArraySize(a) < 1 || cJSON_GetArraySize(a) > 2))
        json_rd_fail(r, NSED_EINVAL, "rounds", "must hold one or two rounds");
    if (r->rc)
        return;
    if (cJSON_GetArraySize(a) == 2) {
        st->prev = rd_state_round(r, cJSON_GetArrayItem(a, 0), "rounds[0]",
                                  st->nseats, src);
        if (!r->rc)
            st->cur = rd_state_round(r, cJSON_GetArrayItem(a, 1), "rounds[1]",
                                     st->nseats, src);
    } else {
        st->cur = rd_state_round(r, cJSON_GetArrayItem(a, 0), "rounds[0]",
                                 st->nseats, src);
    }
    if (r->rc)
        return;
    if (!r->rc && st->cur->index != st->round)
        json_rd_fail(r, NSED_EINVAL, "rounds",
                     "last round is not the current "
                     "round");
    if (!r->rc && st->prev && st->prev->index != st->round - 1)
        json_rd_fail(r, NSED_EINVAL, "rounds",
                     "first round is not the previous "
                     "round");
    if (!r->rc && !stage_matches_round(st->stage, st->cur))
        json_rd_fail(r, NSED_EINVAL, "stage",
                     "does not match the current round's "
                     "progress");
    if (!r->rc && st->prev && !st->prev->decided)
        json_rd_fail(r, NSED_EINVAL, "rounds[0]",
                     "previous round not decided");
    if (!r->rc && st->final_seat >= 0 && !st->final_answer &&
        st->final_source == STATE_FINAL_NONE)
        json_rd_fail(r, NSED_EINVAL, "final", "seat without a source");
}

int state_from_json(const char *json, size_t len, const workflow *wf,
                    state **out, nsed_err *err)
{
    return state_from_json_archived(json, len, wf, NULL, NULL, out, err);
}

int state_from_json_archived(const char *json, size_t len, const workflow *wf,
                             state_round_fetch_fn fetch, void *arg, state **out,
                             nsed_err *err)
{
    round_src src = {fetch, arg};
    json_reader r;
    cJSON *root = NULL;
    state *st;
    int rc;

    rc = parse_root(json, len, &root, err);
    if (rc)
        return rc;
    st = calloc(1, sizeof *st);
    if (!st) {
        cJSON_Delete(root);
        return NSED_ENOMEM;
    }
    st->carry.from_round = -1;
    json_reader_init(&r, "state JSON", err);
    rd_state(&r, root, wf, &src, st);
    cJSON_Delete(root);
    if (r.rc) {
        state_free(st);
        return r.rc;
    }
    *out = st;
    return 0;
}
