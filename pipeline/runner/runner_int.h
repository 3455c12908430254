/* runner_int.h -- pieces of the runner shared by its files (and its
 * white-box tests, tests/test_runner.c); never included outside
 * pipeline/runner/. */
#ifndef NSED_RUNNER_INT_H
#define NSED_RUNNER_INT_H

#include "pipeline/base/err.h"
#include "pipeline/gateway/gateway.h"
#include "pipeline/questions/questions.h"
#include "pipeline/runner/runner.h"
#include "pipeline/runner/runner_fit.h"
#include "pipeline/workflow/workflow.h"
#include "stages/stage.h"
#include "stages/state.h"
#include "store/store.h"

#include <cjson/cJSON.h>
#include <stdbool.h>

/* Deep copy of a question (tags and meta included) into *dst. Returns 0 or
 * NSED_ENOMEM (dst then released). */
NSED_MUST_CHECK
int runner_question_copy(const question *src, question *dst);

/* The incomplete marker of a question whose stage lost calls: JSON
 * {"stage","round","failed":[{"seat","kind","error"}],"reason"} in *json
 * and the reason in *why (both malloc'd): the first error text, after
 * "<prefix>: " when prefix is not NULL. Returns 0 or NSED_ENOMEM. */
NSED_MUST_CHECK
int runner_incomplete_marker(const state *st, const stage_response *resps,
                             size_t n, const char *prefix, char **json,
                             char **why);

/* The incomplete marker of a question the broker could not staff: JSON
 * {"stage":"broker","round":0,"failed":[],"error":reason,"reason"} in
 * *json and "broker: <reason>" (also its "reason") in *why (both
 * malloc'd). Returns 0 or NSED_ENOMEM. */
NSED_MUST_CHECK
int runner_unstaffed_marker(const char *reason, char **json, char **why);

typedef struct runner_qctx runner_qctx;

/* Decide the outcome of finished question st: without a final answer it
 * is failed (st->status, st->failure: "no extractable answer in any
 * round" when no proposal of any round had one, else why the final answer
 * is missing). Reads archived rounds from the store (read transaction; not
 * inside a store transaction). Returns 0, NSED_ENOMEM or the store's
 * error. */
NSED_MUST_CHECK
int runner_finish_outcome(const workflow *wf, store *st_store, state *st,
                          nsed_err *err);

/* The outcome in a stored result record (its "status"): done, degraded or
 * failed; a record of an older nsed saying "incomplete" (finished without
 * an answer) reads as failed. Returns 0, or NSED_ESTORE when the record
 * is not valid JSON or has no known status. */
NSED_MUST_CHECK
int runner_result_outcome(const void *rec, size_t len, enum state_status *out);

/* The same for a parsed record. */
NSED_MUST_CHECK
int runner_result_outcome_json(const cJSON *rec, enum state_status *out);

/* The result record of a finished question (one export line): see
 * docs/results.md for its fields. broker_record is the
 * broker's stored decision for the question (broker.h), summarized into
 * the "broker" field, or NULL (the field is then null). Reads the
 * archived round 0 from the store when it is no longer in memory
 * (st_store read transaction; must not be called inside a store
 * transaction). Returns 0 and sets *out (malloc'd) or an error. */
NSED_MUST_CHECK
int runner_result_json(const workflow *wf, store *st_store, const state *st,
                       const question *q, const char *broker_record,
                       const runner_qctx *qctx, char **out, nsed_err *err);

/* ---- per-round accuracy and the efficiency-fatigue fit (runner_fit.c) */

/* RUNNER_MAX_ROUNDS and RUNNER_FIT_MIN_N are in runner.h. */

/* Per round index: winners judged against a reference (n), right (k);
 * the same for the questions of the exploration slice alone (sn, sk),
 * and the slice questions finished (squestions). */
typedef struct runner_round_counts {
    double n[RUNNER_MAX_ROUNDS];
    double k[RUNNER_MAX_ROUNDS];
    double sn[RUNNER_MAX_ROUNDS];
    double sk[RUNNER_MAX_ROUNDS];
    double squestions;
} runner_round_counts;

/* Count decided round r of st into *c (nothing when it has no winner with
 * an answer, or the question no reference; into sn/sk as well when st is
 * in the exploration slice). */
void runner_rounds_observe(const workflow *wf, const state *st,
                           const state_round *r, runner_round_counts *c);

/* Count finished question st into c->squestions when it is in the slice
 * and did not fail. */
void runner_rounds_finished(const workflow *wf, const state *st,
                            runner_round_counts *c);

/* Read the stored counts (all zero when none; a record of an older nsed
 * without the slice's arrays reads with them zero); add delta to them
 * inside a store_write (replayable: read through txn); add d to t in
 * memory. */
NSED_MUST_CHECK
int runner_rounds_read(store_txn *txn, runner_round_counts *c);
NSED_MUST_CHECK
int runner_rounds_commit(store_txn *txn, const runner_round_counts *delta);
void runner_rounds_add(runner_round_counts *t, const runner_round_counts *d);

/* Fit the slice's counts (runner_fit.h), questions = c->squestions. */
NSED_MUST_CHECK
int runner_fit_slice(const runner_round_counts *c, runner_fit *out);

/* The runner's current fit, remade only when the slice has grown by
 * RUNNER_FIT_EVERY finished questions since the last one (not at every
 * question start). */
typedef struct runner_fitted {
    bool have;
    runner_fit fit;
    bool tried; /* a fit was attempted */
    double at;  /* c->squestions when last attempted */
    size_t refits;
} runner_fitted;

/* Refit from c when due (always the first time). Returns 0 or
 * NSED_ENOMEM. */
NSED_MUST_CHECK
int runner_fitted_update(runner_fitted *f, const runner_round_counts *c);

/* What a question is scored and stopped with beyond the workflow, fixed
 * when it starts and stored with it (STORE_STATE id "\0c") so that a
 * resumed question behaves exactly as it would have:
 *  - reliability weights (scoring.reliability_weighting): model m's
 *    evaluations count 2*p_v - 1 clamped to [0, 1], p_v smoothed toward its
 *    prior, so a verifier no better than a coin counts for nothing;
 *  - the efficiency-fatigue fit (a fatigue rule with parameters the
 *    workflow leaves open), -1 where nothing could be fitted yet. */
struct runner_qctx {
    double *reliability; /* per model, NULL when weighting is off */
    double fit_p_g, fit_p_v, fit_lambda, fit_beta;
    enum stage_fit fit; /* STAGE_FIT_PRIOR for a context of an older nsed */
    double fit_k;
};

struct telemetry;

/* True when the workflow needs a per-question context at all. */
bool runner_qctx_wanted(const workflow *wf);

/* Build the context of question st (its seats chosen) from the
 * telemetry now; *json is what to store. Returns 0 or NSED_ENOMEM. */
NSED_MUST_CHECK
int runner_qctx_new(const workflow *wf, const struct telemetry *t,
                    const runner_fitted *fit, const state *st, runner_qctx *q,
                    char **json);

/* Parse a stored context. Returns 0, NSED_ESTORE or NSED_ENOMEM. */
NSED_MUST_CHECK
int runner_qctx_parse(const workflow *wf, const char *json, size_t len,
                      runner_qctx *q, nsed_err *err);

/* Point ctx at q's weights and fit. */
void runner_qctx_apply(const runner_qctx *q, size_t nmodels, stage_ctx *ctx);

void runner_qctx_release(runner_qctx *q);

/* Cumulative call statistics per model across runs, kept in
 * STORE_TELEMETRY under "gateway/<model id>" (store_keys.h). */
typedef struct runner_telemetry_base runner_telemetry_base;

/* Load the statistics earlier runs recorded for wf's models. */
NSED_MUST_CHECK
int runner_telemetry_load(store *st, const workflow *wf,
                          runner_telemetry_base **out, nsed_err *err);

/* Put base + this gateway's statistics for every model (inside a
 * store_write; replayable). */
NSED_MUST_CHECK
int runner_telemetry_put(store_txn *txn, const runner_telemetry_base *base,
                         const workflow *wf, const gateway *gw);

void runner_telemetry_free(runner_telemetry_base *base);

/* The gateway's accounting label of a stage request: propose in round 0
 * and revise after it are told apart, as their prompts differ. */
enum gateway_call_kind runner_call_kind(const stage_request *rq);

/* base + the gateway's live statistics of model index m, into *out (all
 * zero for an index out of range). */
void runner_telemetry_current(const runner_telemetry_base *base,
                              const gateway *gw, size_t m,
                              gateway_stats *out);

/* ---- circuit breakers as the runner saw them (runner_telemetry.c) ------
 *
 * STORE_TELEMETRY "breaker/<model id>" holds one model's breaker as the
 * runner last committed it, so that `nsed status` (another process,
 * reading the store) can say which models are paused and since when:
 *   {"paused": bool, "since": "YYYY-MM-DDTHH:MM:SSZ" (UTC, when the state
 *    began), "run_ended": bool (the run that wrote it has ended: the
 *    state is the last one known)}
 * The runner notes every model's state each turn; a change (and, once
 * per run, every model's first state) is written with the next commit. */
typedef struct runner_breakers runner_breakers;

/* The breaker record as read back. */
typedef struct runner_breaker_rec {
    bool paused;
    char since[32];
    bool run_ended;
} runner_breaker_rec;

/* Tracking for n models (NULL when out of memory). */
runner_breakers *runner_breakers_new(size_t n);

void runner_breakers_free(runner_breakers *b);

/* Note that model m is (not) paused now. */
void runner_breakers_note(runner_breakers *b, size_t m, bool paused);

/* The run ends: every model noted in this run is written again (with
 * run_ended) by the next runner_breakers_put. */
void runner_breakers_end(runner_breakers *b);

/* True when some record waits for a commit. */
bool runner_breakers_dirty(const runner_breakers *b);

/* Put the records that changed since the last commit, with run_ended as
 * given, inside a store_write; replayable. Returns 0,
 * NSED_ENOMEM or the store_put error. */
NSED_MUST_CHECK
int runner_breakers_put(store_txn *txn, const runner_breakers *b,
                        const workflow *wf, bool run_ended);

/* The transaction of runner_breakers_put committed. */
void runner_breakers_committed(runner_breakers *b);

/* Parse a record. Returns 0 or NSED_EINVAL. */
NSED_MUST_CHECK
int runner_breaker_parse(const void *val, size_t len, runner_breaker_rec *out);

#endif
