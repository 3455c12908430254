/* runner_int.h -- pieces of the runner shared by its files and by the
 * commands that read what it stored (status, export). */
#ifndef NSED_RUNNER_INT_H
#define NSED_RUNNER_INT_H

#include "pipeline/err.h"
#include "pipeline/gateway.h"
#include "pipeline/questions.h"
#include "pipeline/workflow.h"
#include "stages/stage.h"
#include "stages/state.h"
#include "store/store.h"

#include <cjson/cJSON.h>

/* Deep copy of a question (tags and meta included) into *dst. Returns 0 or
 * NSED_ENOMEM (dst then released). */
int runner_question_copy(const question *src, question *dst);

/* The incomplete marker of a question whose stage lost calls: JSON
 * {"stage","round","failed":[{"seat","model","kind","error"}]} in *json
 * and the first error text in *why (both malloc'd). Returns 0 or
 * NSED_ENOMEM. */
int runner_incomplete_marker(const state *st, const stage_response *resps,
                             size_t n, char **json, char **why);

/* The incomplete marker of a question the broker could not staff: JSON
 * {"stage":"broker","round":0,"failed":[],"error":reason} in *json and
 * "broker: <reason>" in *why (both malloc'd). Returns 0 or NSED_ENOMEM. */
int runner_unstaffed_marker(const char *reason, char **json, char **why);

/* The result record of a finished question (one export line): see the
 * README's "Results" section for its fields. broker_record is the
 * broker's stored decision for the question (broker.h), summarized into
 * the "broker" field, or NULL (the field is then null). Reads the
 * archived round 0 from the store when it is no longer in memory
 * (st_store read transaction; must not be called inside a store
 * transaction). Returns 0 and sets *out (malloc'd) or an error. */
int runner_result_json(const workflow *wf, store *st_store, const state *st,
                       const question *q, const char *broker_record,
                       const double *reliability, char **out, nsed_err *err);

/* Reliability weights for scoring.reliability_weighting, from what
 * telemetry t has measured now: model m's evaluations count with weight
 * 2*p_v - 1 clamped to [0, 1] (p_v smoothed toward its prior), so an
 * evaluator that is right no more often than a coin counts for nothing and
 * a perfect one fully. Fixed when a question starts and stored with it, so
 * a resumed question scores as it would have. *weights (wf->nmodels
 * entries) and *json ({"reliability":[...]}) are malloc'd. Returns 0 or
 * NSED_ENOMEM. */
struct telemetry;
int runner_reliability_new(const workflow *wf, const struct telemetry *t,
                           size_t team_size, double **weights, char **json);

/* Parse what runner_reliability_new wrote. Returns 0, NSED_ESTORE (err
 * says why) or NSED_ENOMEM. */
int runner_reliability_parse(const workflow *wf, const char *json,
                             size_t len, double **weights, nsed_err *err);

/* Cumulative call statistics per model across runs, kept in
 * STORE_TELEMETRY under "gateway/<model id>". */
typedef struct runner_telemetry_base runner_telemetry_base;

/* Load the statistics earlier runs recorded for wf's models. */
int runner_telemetry_load(store *st, const workflow *wf,
                          runner_telemetry_base **out, nsed_err *err);

/* Put base + this gateway's statistics for every model (inside a
 * store_write; replayable). */
int runner_telemetry_put(store_txn *txn, const runner_telemetry_base *base,
                         const workflow *wf, const gateway *gw);

void runner_telemetry_free(runner_telemetry_base *base);

/* base + the gateway's live statistics of model index m, into *out (all
 * zero for an index out of range). */
void runner_telemetry_current(const runner_telemetry_base *base,
                              const gateway *gw, size_t m,
                              gateway_stats *out);

/* Telemetry record <-> gateway_stats (JSON object). */
cJSON *runner_stats_to_json(const gateway_stats *s);
void runner_stats_from_json(const cJSON *j, gateway_stats *s);

#endif
