/* runner_bias.c -- position and length bias of the evaluations (see
 * runner_bias.h and runner_report.h).
 *
 * The raw data is what the state records: each usable evaluation's
 * weights and the order it was shown the candidates (state_evaluation
 * .shown), and the candidates' texts as shown. A weight w counts as the
 * score w / 100. By position: the mean score at each shown position, and
 * the least-squares line and Pearson correlation of score on position.
 * By length: Spearman's rank correlation of score and the length of the
 * text in Unicode code points (ranks, not values: lengths are skewed and
 * a score's scale is an evaluator's own).
 */
#include "pipeline/runner/runner_bias.h"

#include "stages/state.h"
#include "store/store_keys.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Rounds looked up per question at most (a question stops at rounds.max,
 * which is far below). */
#define BIAS_ROUNDS_MAX 4096

static size_t code_points(const char *s)
{
    size_t n = 0;

    for (; s && *s; s++)
        n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

static int push_pair(runner_bias_acc *acc, double score, double len)
{
    if (acc->n == acc->cap) {
        size_t cap = acc->cap ? 2 * acc->cap : 1024;
        double *s = realloc(acc->score, cap * sizeof *s);

        if (!s)
            return NSED_ENOMEM;
        acc->score = s;
        s = realloc(acc->len, cap * sizeof *s);
        if (!s)
            return NSED_ENOMEM;
        acc->len = s;
        acc->cap = cap;
    }
    acc->score[acc->n] = score;
    acc->len[acc->n] = len;
    acc->n++;
    return 0;
}

/* The evaluation's weights are all 0: an abstention (aggregate.h). */
static bool all_zero(const state_evaluation *ev)
{
    for (size_t k = 0; k < ev->nweights; k++)
        if (ev->weights[k].weight != 0)
            return false;
    return true;
}

static int add_evaluation(runner_bias_acc *acc, const state_round *r,
                          const state_evaluation *ev)
{
    runner_report_bias *b = acc->out;
    int rc;

    if (ev->status != STATE_EVAL_OK || ev->nweights == 0 || all_zero(ev))
        return 0;
    b->evaluations++;
    if (!ev->shown)
        b->unknown++;
    else if (r->per_evaluator)
        b->per_evaluator++;
    else
        b->shared++;
    for (size_t k = 0; k < ev->nweights; k++) {
        const size_t j = ev->weights[k].cand;
        const double y = ev->weights[k].weight / 100.0;

        if (j >= r->ncand)
            continue;
        b->weights++;
        rc = push_pair(acc, y, (double)code_points(r->cands[j].text));
        if (rc)
            return rc;
        for (size_t p = 0; ev->shown && p < ev->nshown; p++) {
            double x = (double)(p + 1);

            if (ev->shown[p] != j || p >= RUNNER_BIAS_POSITIONS)
                continue;
            b->pos_n[p]++;
            acc->pos_sum[p] += y;
            b->pos_weights++;
            if (p + 1 > b->npos)
                b->npos = p + 1;
            acc->sx += x;
            acc->sy += y;
            acc->sxx += x * x;
            acc->syy += y * y;
            acc->sxy += x * y;
            break;
        }
    }
    return 0;
}

/* The number of proposals of a stored round: its team size, which the
 * round parser needs. 0 when the record is not an object with them. */
static size_t round_seats(const void *val, size_t vlen)
{
    cJSON *j = cJSON_ParseWithLength(val, vlen);
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(j, "proposals");
    size_t n = cJSON_IsArray(p) ? (size_t)cJSON_GetArraySize(p) : 0;

    cJSON_Delete(j);
    return n;
}

int runner_bias_question(runner_bias_acc *acc, store_txn *txn, const char *qid)
{
    for (uint32_t t = 0; t < BIAS_ROUNDS_MAX; t++) {
        const void *val;
        size_t vlen, nseats;
        store_key key;
        state_round *r = NULL;
        nsed_err err = {0};
        int rc = 0;

        if (store_keys_question(qid, STORE_KEYS_ROUND, t, &key) ||
            store_get(txn, STORE_STATE, key.bytes, key.len, &val, &vlen))
            return 0;
        nseats = round_seats(val, vlen);
        if (nseats == 0 ||
            state_round_from_json(val, vlen, nseats, &r, &err) != 0)
            continue;
        for (size_t s = 0; r->evals && s < nseats && !rc; s++)
            rc = add_evaluation(acc, r, &r->evals[s]);
        state_round_free(r, nseats);
        if (rc)
            return rc;
    }
    return 0;
}

static int by_value(const void *a, const void *b)
{
    const double *x = *(const double *const *)a, *y = *(const double *const *)b;

    return *x < *y ? -1 : *x > *y;
}

/* Ranks 1..n of v[0..n) into rank, tied values sharing their mean rank.
 * Returns 0 or NSED_ENOMEM. */
static int ranks(const double *v, size_t n, double *rank)
{
    const double **ix = malloc((n ? n : 1) * sizeof *ix);
    size_t i = 0;

    if (!ix)
        return NSED_ENOMEM;
    for (size_t k = 0; k < n; k++)
        ix[k] = &v[k];
    qsort(ix, n, sizeof *ix, by_value);
    while (i < n) {
        size_t e = i + 1;
        double mean;

        while (e < n && *ix[e] == *ix[i])
            e++;
        mean = (double)(i + 1 + e) / 2.0; /* ranks i+1 .. e */
        for (size_t k = i; k < e; k++)
            rank[ix[k] - v] = mean;
        i = e;
    }
    free(ix);
    return 0;
}

/* Pearson correlation of x and y; false when either does not vary. */
static bool pearson(const double *x, const double *y, size_t n, double *r)
{
    double mx = 0, my = 0, sxx = 0, syy = 0, sxy = 0;

    if (n < 2)
        return false;
    for (size_t k = 0; k < n; k++) {
        mx += x[k];
        my += y[k];
    }
    mx /= (double)n;
    my /= (double)n;
    for (size_t k = 0; k < n; k++) {
        sxx += (x[k] - mx) * (x[k] - mx);
        syy += (y[k] - my) * (y[k] - my);
        sxy += (x[k] - mx) * (y[k] - my);
    }
    if (sxx <= 0 || syy <= 0)
        return false;
    *r = sxy / sqrt(sxx * syy);
    return true;
}

void runner_bias_finish(runner_bias_acc *acc)
{
    runner_report_bias *b = acc->out;
    const double n = (double)b->pos_weights;
    double *rs = NULL, *rl = NULL;

    for (size_t p = 0; p < b->npos; p++)
        b->pos_mean[p] = b->pos_n[p] ? acc->pos_sum[p] / (double)b->pos_n[p]
                                     : 0;
    if (b->pos_weights >= 2) {
        double vx = acc->sxx - acc->sx * acc->sx / n;
        double vy = acc->syy - acc->sy * acc->sy / n;
        double cxy = acc->sxy - acc->sx * acc->sy / n;

        if (vx > 1e-9 * n && vy > 1e-12 * n) {
            b->has_pos_fit = true;
            b->pos_slope = cxy / vx;
            b->pos_r = cxy / sqrt(vx * vy);
        }
    }
    if (acc->n) {
        double sum = 0;

        for (size_t k = 0; k < acc->n; k++)
            sum += acc->len[k];
        b->len_mean_chars = sum / (double)acc->n;
    }
    rs = malloc((acc->n ? acc->n : 1) * sizeof *rs);
    rl = malloc((acc->n ? acc->n : 1) * sizeof *rl);
    /* out of memory leaves the rank correlation out, not the report */
    if (rs && rl && ranks(acc->score, acc->n, rs) == 0 &&
        ranks(acc->len, acc->n, rl) == 0)
        b->has_len = pearson(rs, rl, acc->n, &b->len_rho);
    free(rs);
    free(rl);
    runner_bias_release(acc);
}

void runner_bias_release(runner_bias_acc *acc)
{
    free(acc->score);
    free(acc->len);
    acc->score = acc->len = NULL;
    acc->n = acc->cap = 0;
}

void runner_bias_json(const runner_report_bias *b, cJSON *o)
{
    cJSON *j = cJSON_AddObjectToObject(o, "bias"), *x, *pos, *len, *arr;

    if (!j)
        return;
    cJSON_AddNumberToObject(j, "evaluations", (double)b->evaluations);
    cJSON_AddNumberToObject(j, "weights", (double)b->weights);
    x = cJSON_AddObjectToObject(j, "order");
    cJSON_AddNumberToObject(x, "shared", (double)b->shared);
    cJSON_AddNumberToObject(x, "per_evaluator", (double)b->per_evaluator);
    cJSON_AddNumberToObject(x, "unknown", (double)b->unknown);
    pos = cJSON_AddObjectToObject(j, "position");
    cJSON_AddNumberToObject(pos, "weights", (double)b->pos_weights);
    arr = cJSON_AddArrayToObject(pos, "by_position");
    for (size_t p = 0; arr && p < b->npos; p++) {
        cJSON *e = cJSON_CreateObject();

        if (!e)
            break;
        cJSON_AddNumberToObject(e, "position", (double)(p + 1));
        cJSON_AddNumberToObject(e, "n", (double)b->pos_n[p]);
        cJSON_AddNumberToObject(e, "mean", b->pos_mean[p]);
        cJSON_AddItemToArray(arr, e);
    }
    if (b->has_pos_fit) {
        cJSON_AddNumberToObject(pos, "slope", b->pos_slope);
        cJSON_AddNumberToObject(pos, "pearson_r", b->pos_r);
    } else {
        cJSON_AddNullToObject(pos, "slope");
        cJSON_AddNullToObject(pos, "pearson_r");
    }
    len = cJSON_AddObjectToObject(j, "length");
    cJSON_AddNumberToObject(len, "weights", (double)b->weights);
    cJSON_AddNumberToObject(len, "mean_chars", b->len_mean_chars);
    if (b->has_len)
        cJSON_AddNumberToObject(len, "spearman_rho", b->len_rho);
    else
        cJSON_AddNullToObject(len, "spearman_rho");
}
