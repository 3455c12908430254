/* telemetry.h -- what nsed has measured about each model, for the broker.
 *
 * Per model of a workflow, three sources are kept apart and added up when
 * an estimate is asked for:
 *   own      the measurements of this store's runs (STORE_TELEMETRY
 *            "model/<id>"), counted when the runner commits a decided
 *            round, in the same transaction as the round itself, so a
 *            resumed run never counts a round twice;
 *   prior    measurements imported from a telemetry file (nsed run
 *            --telemetry FILE, kept in the store as "prior/<id>"), so a
 *            calibration run can steer another run;
 *   calls    the gateway's call statistics ("gateway/<id>", kept by the
 *            runner) plus the imported ones: latency, failures.
 *
 * What is counted (telemetry_observe_round), for a question with a
 * reference answer:
 *   generation    every round-0 proposal that got a reply is one
 *                 observation, a success when its extracted answer matches
 *                 the reference (SKIP and "no answer" are failures; seats
 *                 lost to infrastructure are not observed);
 *   verification  every usable evaluation (any round) that weighted at
 *                 least one candidate other than its own is one
 *                 observation, whose success is how right it was: when it
 *                 weighted both correct and incorrect candidates, the
 *                 fraction of (correct, incorrect) pairs it ordered right
 *                 (correct above incorrect); when it weighted only one kind
 *                 (a team of two shows each evaluator one candidate), the
 *                 fraction it judged right by sign (positive for correct,
 *                 negative for incorrect); ties and zero weights count 1/2;
 *   usage         every seat-round whose calls all got replies (with or
 *                 without a reference): its tokens, calls and cost, and the
 *                 team size it ran in.
 *
 * Estimates (telemetry_estimate_for): p_g and p_v are Beta posterior means,
 *   (strength * prior + successes) / (strength + observations),
 * with the model's prior (models[].prior) or else broker.priors, and
 * strength broker.priors.strength; each comes with its observation count.
 * Usage is estimated per seat for a whole question: round 0 plus
 * rounds.max - 1 later rounds (the most a question can run), each from
 * the seat-rounds measured at that position (later rounds read the
 * winner, the critiques and the scores, so they cost more than round 0)
 * as mean + 2 standard deviations, so that a question with long replies
 * still fits. The prompt grows with the team (more candidates to read):
 * the figure measured at an average team size n_obs is scaled by
 * max(1, n / n_obs) for a team of n, which never scales down and so errs
 * on the side of cost. Before a model has a measured seat-round at a
 * position its usage there is a guess from its sampling.max_tokens (every
 * reply half as long as allowed; see telemetry_estimate_for): calibrate
 * with a small run (or --telemetry) when the budget is tight.
 */
#ifndef NSED_TELEMETRY_H
#define NSED_TELEMETRY_H

#include "pipeline/base/err.h"
#include "pipeline/gateway/gateway.h"
#include "pipeline/workflow/workflow.h"
#include "stages/state.h"
#include "store/store.h"

#include <stdbool.h>
#include <stddef.h>

/* Telemetry files (export/import) larger than this are refused. */
#define TELEMETRY_FILE_MAX ((size_t)16 << 20)
/* The "nsed_telemetry" version written and understood. */
#define TELEMETRY_FORMAT 1

/* Raw counts of one model. Doubles: verification successes are fractions;
 * counts stay exact up to 2^53. */
typedef struct telemetry_counts {
    double gen_n;             /* round-0 answers judged */
    double gen_k;             /* ... correct */
    double ver_n;             /* evaluations judged */
    double ver_k;             /* ... sum of how right each was */
    double seat_rounds;       /* seat-rounds with measured usage */
    double team_sum;          /* sum of their team sizes */
    double calls;             /* calls in those seat-rounds */
    double prompt_tokens;     /* tokens in those seat-rounds */
    double completion_tokens;
    double prompt_sq;         /* sums of squares per seat-round */
    double completion_sq;
    double cost_usd;          /* as the gateway charged it */
    /* the part of the above from rounds after round 0 (revisions read
     * more, so they are estimated apart) */
    double later_seat_rounds;
    double later_team_sum;
    double later_prompt_tokens;
    double later_completion_tokens;
    double later_prompt_sq;
    double later_completion_sq;
} telemetry_counts;

/* Which counts telemetry_counts_get returns. */
enum telemetry_source {
    TELEMETRY_OWN,   /* this store's measurements (plus live additions) */
    TELEMETRY_PRIOR, /* imported from a telemetry file */
};

/* What the broker knows about one model. */
typedef struct telemetry_estimate {
    double p_g;              /* smoothed generation accuracy */
    double p_g_n;            /* its observations (own + prior) */
    double p_v;              /* smoothed verification accuracy */
    double p_v_n;
    double seat_rounds;      /* usage observations, round 0 / later */
    double later_seat_rounds;
    double first_tokens;     /* per seat in round 0 (prompt + completion) */
    double later_tokens;     /* per seat in each later round */
    double prompt_tokens;    /* per seat and question: round 0 plus
                                rounds.max - 1 later rounds */
    double completion_tokens;
    double cost_usd;         /* per seat and question: tokens x prices */
    double calls;            /* calls per seat-round (measured, else 2) */
    double gw_calls;         /* network calls made */
    double failure_rate;     /* failed / calls, 0 when none */
    double latency_mean_s;   /* of successful calls, 0 when none */
    double latency_p95_s;
} telemetry_estimate;

typedef struct telemetry telemetry;

/* Empty telemetry for wf's models (nothing measured: estimates are the
 * priors). Returns 0 and sets *out (free with telemetry_free) or
 * NSED_ENOMEM. wf must outlive it. */
NSED_MUST_CHECK int telemetry_new(const workflow *wf, telemetry **out);

/* Free t. NULL is ignored. */
void telemetry_free(telemetry *t);

/* Replace t's own counts, imported prior and call statistics with what the
 * store holds for wf's models (inside a store_read or store_write).
 * Returns 0, or NSED_ESTORE with err filled: the store failed, or a
 * model's own counts ("model/<id>") are damaged (no JSON object, or a
 * count that is not a number >= 0; store_corrupt's message), which a run
 * must not read as "no measurements" and then overwrite. A prior or call
 * statistics record that does not parse counts as absent (the call
 * statistics are checked where the runner reads them,
 * runner_telemetry_load). */
NSED_MUST_CHECK int telemetry_load(store_txn *txn, telemetry *t, nsed_err *err);

/* New telemetry loaded from the store (its own read transaction). Returns
 * 0 and sets *out, or an error with err filled. */
NSED_MUST_CHECK int telemetry_read_store(store *st, const workflow *wf,
                                         telemetry **out, nsed_err *err);

/* Read a telemetry file written by telemetry_export and make its counts
 * and call statistics t's prior (models matched by id; models the file
 * lacks get an empty prior; ids the workflow lacks are ignored and counted
 * in *unknown when not NULL). Returns 0; NSED_EIO when it cannot be read;
 * NSED_ETOOBIG over TELEMETRY_FILE_MAX; NSED_EINVAL (err says
 * "path: what") for anything that is not a telemetry file of
 * TELEMETRY_FORMAT or holds a negative or non-numeric count. t is
 * unchanged on failure. */
NSED_MUST_CHECK int telemetry_import_file(telemetry *t, const char *path,
                                          size_t *unknown, nsed_err *err);

/* Write t's prior to the store as "prior/<id>" for every model (deleting
 * the record of a model whose prior is empty), inside a store_write;
 * replayable. Returns 0, NSED_ENOMEM or NSED_ESTORE. */
NSED_MUST_CHECK int telemetry_put_prior(store_txn *txn, const telemetry *t);

/* Add what round r of st tells about its seats' models to delta (an array
 * of wf->nmodels counts, not cleared first). r must be a decided round of
 * st (cur, prev or read back from the archive). */
void telemetry_observe_round(const workflow *wf, const state *st,
                             const state_round *r, telemetry_counts *delta);

/* Add delta (wf->nmodels counts) to the stored "model/<id>" records inside
 * a store_write: each record is read through txn, so a replayed
 * transaction adds delta once. Models with an all-zero delta are not
 * touched. Returns 0, NSED_ENOMEM or NSED_ESTORE. */
NSED_MUST_CHECK int telemetry_commit(store_txn *txn, const workflow *wf,
                                     const telemetry_counts *delta);

/* Add the counts of a "model/<model_id>" record of another store (val,
 * vlen: its bytes, as that store holds them) to this store's record of
 * the model, inside a store_write (read through txn: replayable), as
 * `nsed merge` sums its shards' measurements. Returns 0, NSED_EINVAL when
 * val is not a counts record (a negative or non-numeric count),
 * NSED_ETOOBIG (an id too long for a key), NSED_ENOMEM or NSED_ESTORE. */
NSED_MUST_CHECK int telemetry_merge_own(store_txn *txn, const char *model_id,
                                        const void *val, size_t vlen);

/* Add delta (one entry per model) to t's own counts (after the commit
 * that stored it). */
void telemetry_add(telemetry *t, const telemetry_counts *delta);

/* Replace the store's call statistics of model index m (the runner passes
 * the stored ones plus the live gateway's). */
void telemetry_set_calls(telemetry *t, size_t m, const gateway_stats *s);

/* Copy the counts of model index m from source src into *out (all zero for
 * an index out of range). */
void telemetry_counts_get(const telemetry *t, size_t m,
                          enum telemetry_source src, telemetry_counts *out);

/* True when every count of c is zero. */
bool telemetry_counts_empty(const telemetry_counts *c);

/* The estimates for model index m in a team of team_size seats (>= 1).
 * With no measured usage at a round position, the guess per seat-round is
 * two calls whose completions are M = max_tokens / 2 tokens each, and a
 * prompt of
 *   G + (team_size + 1) * M
 * tokens, where G is a quarter of the characters of the system prompt
 * (twice), the revise and evaluate templates, plus 512 tokens for the
 * question (shown twice): the evaluation reads team_size - 1 candidates
 * and a revision the winner and its own answer, each of about M tokens.
 * t may be NULL (nothing measured). */
void telemetry_estimate_for(const telemetry *t, const workflow *wf, size_t m,
                        int team_size, telemetry_estimate *out);

/* The telemetry file of a store (inside a store_read): compact JSON
 *   {"nsed_telemetry":1,"workflow":NAME,"models":{ID:{
 *    "gen":{"n":..,"k":..},"ver":{"n":..,"k":..},"usage":{"seat_rounds":..,
 *    "team_sum":..,"calls":..,"prompt_tokens":..,"completion_tokens":..,
 *    "cost_usd":..},"calls":<gateway statistics>}}}
 * holding, per model id found in STORE_TELEMETRY, the store's own counts
 * plus its imported prior (everything it knows), and its call statistics
 * plus the imported ones, followed by a newline. workflow_name may be
 * NULL (written as null). Returns 0 and sets *out (malloc'd), NSED_ENOMEM,
 * NSED_ETOOBIG (over TELEMETRY_FILE_MAX) or NSED_ESTORE. */
NSED_MUST_CHECK int telemetry_export(store_txn *txn, const char *workflow_name,
                                     char **out);

#endif
