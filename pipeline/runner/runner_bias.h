/* runner_bias.h -- the position and length bias of a store's evaluations
 * (runner_report_bias in runner_report.h), for runner_report.c only.
 *
 * The report adds the archived rounds of each question with a result
 * (runner_bias_question) inside its read transaction, then derives the
 * figures once (runner_bias_finish).
 */
#ifndef NSED_RUNNER_BIAS_H
#define NSED_RUNNER_BIAS_H

#include "pipeline/base/err.h"
#include "pipeline/runner/runner_report.h"
#include "store/store.h"

#include <stddef.h>

struct cJSON;

/* What is gathered while reading: sums by position and the (score,
 * length) pairs for the rank correlation. Zero-initialized is empty. */
typedef struct runner_bias_acc {
    runner_report_bias *out;
    double pos_sum[RUNNER_BIAS_POSITIONS];
    double sx, sy, sxx, syy, sxy; /* over weights with a position */
    double *score, *len;          /* weights pairs */
    size_t n, cap;
} runner_bias_acc;

/* Add every archived round of question qid (STORE_STATE <qid> "\0r" <r>,
 * from round 0 up to the first absent one). A round that does not read as
 * a round is left out: bias figures never fail the report. Returns 0 or
 * NSED_ENOMEM. */
NSED_MUST_CHECK int runner_bias_question(runner_bias_acc *acc, store_txn *txn,
                                         const char *qid);

/* Derive the figures into acc->out and release what acc holds. */
void runner_bias_finish(runner_bias_acc *acc);

/* Release what acc holds (when the report fails before finishing). */
void runner_bias_release(runner_bias_acc *acc);

/* Add "bias" (runner_report.h) to the JSON object o. */
void runner_bias_json(const runner_report_bias *b, struct cJSON *o);

#endif
