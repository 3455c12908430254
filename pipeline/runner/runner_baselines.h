/* runner_baselines.h -- NSED against each baseline, paired, over the
 * questions `nsed status` judges (with a reference, stopped by a rule):
 * the strict majority's share of questions without a majority, per
 * baseline the paired 2x2 table with NSED, the paired accuracy difference
 * with Newcombe's 95% interval and the exact McNemar p (pipeline/base/
 * stats.h), and the same per tag of the questions.
 *
 * The baselines, in this order (the result record's "baselines",
 * runner_result.c):
 *   "majority"        the strict round-0 majority (a tie is not right)
 *   "majority_drawn"  the round-0 majority with a tie broken by its seeded
 *                     draw (a record of an older nsed: its "correct", the
 *                     lowest seat taking a tie)
 *   "model:<id>"      each model's own round-0 answer
 * and any baseline listed in the table of runner_baselines.c (one line
 * each). A baseline counts on a question only where its correctness is
 * judged (a boolean); NSED's counts on every judged question.
 *
 * runner_baselines_json gives it as the "baselines" object of `nsed status
 * --json` and of `nsed export --summary`:
 *   {"n", "nsed_correct", "no_majority", "majority_ties",
 *    "interval": "newcombe-hybrid-score-95", "test": "mcnemar-exact",
 *    "comparisons":[{"baseline", "n", "nsed_correct", "baseline_correct",
 *                    "nsed_only", "baseline_only", "diff", "ci95_lo",
 *                    "ci95_hi", "mcnemar_p"}],
 *    "tags":{tag:{"n", "nsed_correct", "baselines":{baseline:
 *                 {"n", "correct"}}}}}
 */
#ifndef NSED_RUNNER_BASELINES_H
#define NSED_RUNNER_BASELINES_H

#include "pipeline/base/err.h"

#include <stddef.h>

struct cJSON;

#define RUNNER_BL_MAX 64   /* baselines (models included); more not counted */
#define RUNNER_BL_TAGS 128 /* tags; more are not counted */

/* A paired table against NSED: a both right, b NSED only, c the baseline
 * only, d neither. */
typedef struct runner_bl_pair {
    size_t a, b, c, d;
} runner_bl_pair;

typedef struct runner_bl_col {
    char *name;                         /* "majority", "model:alpha", ... */
    runner_bl_pair all;                 /* over every judged question */
    runner_bl_pair tag[RUNNER_BL_TAGS]; /* per tag of runner_baselines */
} runner_bl_col;

typedef struct runner_bl_tag {
    char *name;
    size_t n, nsed_correct;
} runner_bl_tag;

typedef struct runner_baselines {
    size_t n, nsed_correct; /* judged questions, NSED right */
    size_t no_majority;     /* of those, without a strict majority (a tie
                               or no round-0 answer) */
    size_t ties;            /* of those, a tie */
    runner_bl_col cols[RUNNER_BL_MAX];
    size_t ncols;
    runner_bl_tag tags[RUNNER_BL_TAGS];
    size_t ntags;
} runner_baselines;

/* One comparison, derived from a pair. */
typedef struct runner_bl_cmp {
    size_t n;                  /* questions where both are judged */
    double nsed_acc, base_acc; /* 0 when n == 0 */
    double diff, lo, hi;       /* NSED - baseline, 95% interval */
    double p;                  /* exact McNemar, two-sided */
} runner_bl_cmp;

/* A new, empty table (NULL when out of memory). */
runner_baselines *runner_baselines_new(void);

/* Count the result record res (runner_result_json) of a judged question. */
void runner_baselines_count(runner_baselines *bl, const struct cJSON *res);

/* The comparison of pair p. */
void runner_baselines_compare(const runner_bl_pair *p, runner_bl_cmp *out);

/* bl as the object described above, added to o under "baselines". Returns
 * 0 or NSED_ENOMEM. */
NSED_MUST_CHECK int runner_baselines_json(const runner_baselines *bl,
                                          struct cJSON *o);

void runner_baselines_free(runner_baselines *bl);

#endif
