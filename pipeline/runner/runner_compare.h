/* runner_compare.h -- runs of two or more stores on the same questions,
 * compared: what `nsed compare STORE_A STORE_B [...]` prints.
 *
 * Questions are paired by id. A question is judged in a store when its
 * result has a reference (a boolean "correct") and a stopping rule stopped
 * it (stop_reason not "none"), as `nsed status` judges accuracy
 * (runner_report.h). Every store after the first is compared with the
 * first over the questions judged in both: the paired table
 *   a  both right      b  the first only      c  the other only
 *   d  neither
 * the accuracy of each, the difference other - first = (c - b)/n with
 * Newcombe's hybrid score 95% interval and the exact McNemar p
 * (pipeline/base/stats.h), what those questions cost each store, and the
 * same per tag (the tags of the first store's result).
 *
 * runner_compare_build gives it as the JSON of `nsed compare --json`:
 *   {"interval": "newcombe-hybrid-score-95", "test": "mcnemar-exact",
 *    "stores":[{"store", "workflow_name", "workflow_hash" (null when not
 *               bound), "workflow_changes" (workflow changes the manifest
 *               records), "questions", "results", "judged", "correct",
 *               "accuracy" (correct/judged, 0 when none), "tokens",
 *               "cost_usd" (over every result), "rounds_mean" (over the
 *               results a rule stopped), "calls":{"network", "ok",
 *               "failed", "retries", "ledger_hits"} (the store's call
 *               statistics, every model summed)}],
 *    "comparisons":[{"first", "other" (store directories),
 *                    "same_workflow", "workflow_keys_differ" (top-level
 *                    keys of the canonical workflows whose values differ,
 *                    or null when a canonical form is missing),
 *                    "paired", "only_first", "only_other" (results in one
 *                    store only), "unjudged" (results in both, not judged
 *                    in both), "a", "b", "c", "d", "first_correct",
 *                    "other_correct", "first_accuracy", "other_accuracy",
 *                    "diff", "ci95_lo", "ci95_hi" (null when nothing is
 *                    paired), "mcnemar_p",
 *                    "first_paired", "other_paired": {"cost_usd",
 *                    "tokens", "rounds_mean"} over the paired questions,
 *                    "tags":{tag:{"n", "first_correct", "other_correct",
 *                                 "first_accuracy", "other_accuracy",
 *                                 "diff"}}}]}
 */
#ifndef NSED_RUNNER_COMPARE_H
#define NSED_RUNNER_COMPARE_H

#include "pipeline/base/err.h"
#include "store/store.h"

#include <stddef.h>

struct cJSON;

#define RUNNER_CMP_TAGS 256 /* tags per comparison; more are not counted */

/* Compare the n stores st[0..n-1] (open, read-only is enough; n >= 2),
 * each read in one read transaction. Returns 0 and sets *out (the object
 * above; the caller deletes it), or NSED_EINVAL (a store has no results:
 * err names it), NSED_ESTORE (the store fails, or a record or the
 * manifest is not valid JSON), NSED_ENOMEM, with err saying why. */
NSED_MUST_CHECK int runner_compare_build(store *const *st, size_t n,
                                         struct cJSON **out, nsed_err *err);

#endif
