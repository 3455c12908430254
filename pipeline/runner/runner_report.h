/* runner_report.h -- where a run store stands: the report `nsed status`
 * prints, computed here from what the runner stored (results, broker
 * decisions, incomplete markers, telemetry, the manifest) so that the CLI
 * only formats it.
 *
 * runner_report_json gives the report as the JSON of `nsed status --json`:
 *   {"store", "writing" (a process holds the store's writer lock now:
 *    a run, ingest or merge is going on), "ingest_unfinished" (an ingest
 *    is adding questions, or was stopped between its batches: the counts
 *    include what it added so far), "questions":{total,done,
 *    degraded,incomplete,failed,in_progress,not_started},
 *    "reasons":{"incomplete":{reason:n},"failed":{reason:n}},
 *    "deliberation":{rounds,winnerless_rounds,proposals,no_answer,
 *                    evaluations,abstained,truncated,
 *                    models:{model:{proposals,no_answer,evaluations,
 *                                   abstained,truncated}}},
 *    "rounds_mean", "stop_reasons":{reason:n},
 *    "accuracy":{with_reference,nsed_correct,majority_correct (the strict
 *                majority: a tie is not correct),
 *                round0_by_model:{model:{answers,correct}},
 *                self_consistency (only when some result has one):
 *                  {results,incomplete,judged,correct,ties,samples,
 *                   failed_samples,cost_usd,models:{model:questions}}},
 *    "tokens", "cost_usd", "rounds":[{round,judged,winner_correct}],
 *    "fatigue_fit": the fit on the exploration slice, or null when the
 *              workflow has no slice: {explore, min_r2, min_questions,
 *              needed, slice_questions, slice_rounds:[{round,judged,
 *              winner_correct}], fitted (false: too few rounds; the
 *              members below are then null), points, judged, r2,
 *              u0/k/beta:{est,se,ci95:[lo,hi]} (se and ci95 null without
 *              a degree of freedom), t_opt (null: no peak), peak, used,
 *              not_used (why, or null)},
 *    "models":{model: the stored call statistics without latency_hist,
 *              plus latency_p50_ms, latency_p95_ms (the upper bounds of
 *              the histogram buckets holding them) and latency_p50_lo_ms,
 *              latency_p95_lo_ms (their lower bounds)},
 *    "broker":{decisions,unstaffed,policies,chosen,excluded,
 *              expected_cost_usd_mean,expected_value_mean,
 *              actual_cost_usd_mean (null when unknown),over_budget},
 *    "paused":[{model,since,run_ended}] (the models whose circuit breaker
 *              the runner last recorded as paused, with the UTC time the
 *              pause began; run_ended: the run has ended since, so this
 *              is the last known state: it said so when it stopped, or
 *              no process holds the store's writer lock any more, as
 *              after a kill -9),
 *    "baselines": NSED against each baseline (runner_baselines.h),
 *    "manifest": the run manifest without workflow_canonical, or null,
 *    "bias":{evaluations,weights,
 *            order:{shared,per_evaluator,unknown},
 *            position:{weights,by_position:[{position,n,mean}],
 *                      slope,pearson_r (null when position never varies)},
 *            length:{weights,mean_chars,spearman_rho (null when weight
 *                    or length never varies)}}}
 * and the struct below holds the same figures for a text form.
 */
#ifndef NSED_RUNNER_REPORT_H
#define NSED_RUNNER_REPORT_H

#include "pipeline/base/err.h"
#include "pipeline/gateway/gateway.h"
#include "pipeline/runner/runner.h"
#include "pipeline/runner/runner_baselines.h"
#include "pipeline/runner/runner_fit.h"
#include "store/store.h"

#include <stdbool.h>
#include <stddef.h>

#define RUNNER_REPORT_NAMES_MAX 256 /* names per table; more are not counted */

/* One name of a table (a model, a stop reason, a policy) and its counts. */
typedef struct runner_report_tally {
    char *name;
    size_t n;       /* occurrences (round-0 answers judged, for models) */
    size_t correct; /* of those, right (round0 table only) */
} runner_report_tally;

/* Names in the order they were first seen. */
typedef struct runner_report_tallies {
    runner_report_tally items[RUNNER_REPORT_NAMES_MAX];
    size_t n;
} runner_report_tallies;

/* What the results' self-consistency baselines add up to
 * (baselines.self_consistency, stages/selfcons.h). */
typedef struct runner_report_selfcons {
    size_t results;    /* results that carry the member */
    size_t incomplete; /* of those, null (no sampling: the question failed
                          before) or not complete (a sample failed) */
    size_t judged;     /* counted into the accuracy: complete, and the
                          question among with_ref */
    size_t correct;    /* of those, the baseline right */
    size_t ties;       /* of those, no strict majority (answer drawn) */
    size_t samples;    /* samples (calls) of every non-null one */
    size_t failed;     /* of those, without a usable reply */
    double cost_usd;   /* their cost (not in the report's cost_usd) */
    runner_report_tallies models; /* the model sampled: questions */
} runner_report_selfcons;

/* What the broker's recorded decisions add up to. */
typedef struct runner_report_broker {
    size_t decisions, unstaffed;
    size_t with_expected;          /* knapsack decisions with an expected
                                      cost */
    double expected_cost_usd_mean; /* over those (0 when none) */
    double expected_value_mean;
    size_t actual_n;               /* of those, with a result */
    double actual_cost_usd_mean;   /* over those (0 when none) */
    size_t over_budget;            /* results over the question budget */
    runner_report_tallies policies;
    runner_report_tallies chosen;   /* model -> decisions that chose it */
    runner_report_tallies excluded; /* model -> decisions that excluded it */
} runner_report_broker;

/* An error kind with failed attempts. */
typedef struct runner_report_error {
    const char *kind;
    double n;
} runner_report_error;

/* One model's cumulative call statistics (STORE_TELEMETRY "gateway/"). */
typedef struct runner_report_model {
    const char *id;
    double calls, ok, failed, retries, ledger_hits;
    double cache_hits; /* answered from the call cache (nsed run --cache) */
    double tokens; /* prompt + completion */
    double cost_usd;
    double p50_ms, p95_ms;       /* latency quantiles: the upper bound of
                                    the histogram bucket holding them */
    double p50_lo_ms, p95_lo_ms; /* ... and its lower bound: the quantile
                                    is in (lo, p50_ms] */
    runner_report_error *errors; /* kinds with a non-zero count, in stored
                                    order */
    size_t nerrors;
} runner_report_model;

/* Positions a bias table counts (a team has at most WORKFLOW_MAX_SEATS
 * seats, so no evaluator is shown more candidates). */
#define RUNNER_BIAS_POSITIONS 64

/* Position and length bias of the evaluations (runner_bias.c), over every
 * usable evaluation (status ok, not all weights 0: those abstain) of the
 * archived rounds of the questions with a result. A weight's normalized
 * score is w / 100, in [-1, 1]. */
typedef struct runner_report_bias {
    size_t evaluations;   /* usable evaluations counted */
    size_t shared;        /* of those, shown the round's shared order */
    size_t per_evaluator; /* ... an order of their own */
    size_t unknown;       /* ... by an older nsed, order not recorded */
    size_t weights;       /* weights of those evaluations */
    /* by shown position p + 1 (1 = the first block of the prompt), over
     * the weights whose position is known */
    size_t npos;                            /* highest position seen */
    size_t pos_n[RUNNER_BIAS_POSITIONS];    /* weights at the position */
    double pos_mean[RUNNER_BIAS_POSITIONS]; /* their mean score */
    size_t pos_weights;                     /* weights with a position */
    bool has_pos_fit; /* position varies: the least-squares line and r */
    double pos_slope; /* score change per position further down */
    double pos_r;     /* Pearson correlation of score and position */
    /* score against the length of the candidate's text as shown (Unicode
     * code points), over every weight */
    bool has_len;   /* both vary */
    double len_rho; /* Spearman rank correlation (ties share ranks) */
    double len_mean_chars;
} runner_report_bias;

/* A model whose breaker the runner last recorded as paused. */
typedef struct runner_report_paused {
    char *id;
    char since[32]; /* UTC, "YYYY-MM-DDTHH:MM:SSZ" */
    bool run_ended; /* the run that recorded it has ended (it said so, or
                       no writer holds the store: store_writer_active) */
} runner_report_paused;

/* The efficiency-fatigue fit on the exploration slice (runner_fit.h), as
 * the runner would use it for the next question. */
typedef struct runner_report_fit {
    bool slice;  /* the workflow has one (the fatigue rule is on and
                    explore > 0; read from the manifest) */
    bool needed; /* the rule leaves some parameter open to the fit */
    double explore, min_r2, min_questions; /* the workflow's, or defaults */
    double sn[RUNNER_MAX_ROUNDS], sk[RUNNER_MAX_ROUNDS]; /* slice rounds:
                                                           judged, right */
    double questions; /* finished slice questions */
    bool have;        /* a fit (enough rounds with data) */
    runner_fit fit;
    bool good;    /* it may stop questions */
    char why[96]; /* when not: why ("R^2 0.41 < 0.8") */
} runner_report_fit;

/* The space the store takes, from LMDB's statistics (store_db_stat). */
typedef struct runner_report_space {
    store_db_stats dbs[STORE_DB_COUNT]; /* per database (enum store_db) */
    size_t data_bytes;   /* the databases' pages x page size, summed */
    size_t page_size;    /* LMDB's page size */
    size_t used_bytes;   /* pages the file needs (free pages included) */
    double per_question; /* data_bytes / questions (0 without questions) */
} runner_report_space;

typedef struct runner_report {
    char *store; /* the store directory */
    runner_report_space space;

    /* the manifest (all NULL when the store is not bound yet; any may be
     * NULL when the manifest lacks it) */
    bool bound;
    const char *workflow_name, *workflow_hash, *git_commit, *created_at,
        *nsed_version, *seed;

    /* The outcomes (runner.h): done, degraded and failed count result
     * records, incomplete the questions with an incomplete marker and no
     * result; in_progress those with only a state. */
    size_t total, done, degraded, incomplete, failed, in_progress, not_started;
    bool writing; /* a process holds the writer lock (store_writer_active) */
    bool ingest_unfinished;               /* questions_ingest_unfinished */
    runner_report_tallies incomplete_why; /* the markers' reasons */
    runner_report_tallies failed_why;     /* the results' failures */
    double rounds_mean;          /* rounds per question that converge stopped (0
                           when none) */
    runner_report_tallies stops; /* stop reasons of those questions */

    /* What the rounds of the results add up to (their "counts"): rounds
     * aggregated and of those without a winner; per model (in the order
     * first seen), proposals answered and of those without an extractable
     * answer, evaluations answered and of those abstained. */
    size_t rounds, winnerless;
    runner_report_tallies proposals, no_answer, evaluations, abstained;
    runner_report_tallies truncated; /* replies cut at max_tokens */

    size_t with_ref;         /* finished questions with a reference */
    size_t correct;          /* of those, NSED right */
    size_t majority_correct; /* of those, the round-0 majority right */
    runner_report_tallies round0; /* per model: round-0 answers judged, and
                                     right */
    double tokens, cost_usd;      /* of the results */

    /* per round index: winners judged against a reference, and right */
    double judged[RUNNER_MAX_ROUNDS], winner_correct[RUNNER_MAX_ROUNDS];
    runner_report_fit fit; /* the efficiency-fatigue fit */

    runner_report_model *models; /* in key order */
    size_t nmodels;
    /* Prompt tokens of successful network calls and the share of them the
     * servers reported as served from their prefix cache
     * (usage.prompt_tokens_details.cached_tokens), summed over the models,
     * by kind of call (enum gateway_call_kind). */
    double kind_calls[GATEWAY_CALL_KIND_COUNT];
    double kind_prompt_tokens[GATEWAY_CALL_KIND_COUNT];
    double kind_cached_tokens[GATEWAY_CALL_KIND_COUNT];
    runner_report_broker broker;
    runner_report_paused *paused; /* in key order */
    size_t npaused;

    runner_baselines *baselines; /* owned: NSED against each baseline,
                                    paired, and per tag (its JSON is
                                    "baselines") */
    runner_report_selfcons sc;   /* the self-consistency baseline */

    struct cJSON *manifest;  /* owned; for runner_report_json */
    struct cJSON *telemetry; /* owned: model id -> stored statistics */

    runner_report_bias bias; /* position and length bias */
} runner_report;

/* Read the report of st (open, read-only is enough) in one read
 * transaction. Returns 0 and sets *out (free with runner_report_free), or
 * NSED_ESTORE (the store fails, or a result or the manifest is not valid
 * JSON), NSED_ENOMEM, with err saying why. */
NSED_MUST_CHECK int runner_report_build(store *st, runner_report **out,
                                        nsed_err *err);

/* The report as the JSON text of `nsed status --json` (no newline,
 * malloc'd) in *out. Returns 0 or NSED_ENOMEM. */
NSED_MUST_CHECK int runner_report_json(const runner_report *r, char **out);

void runner_report_free(runner_report *r);

#endif
