/* fuzz_evaluate.c -- the evaluation parser (stages/evaluate.h):
 * evaluate_parse on an evaluator's reply, for a few fixed rounds (number
 * of candidates, the evaluator's own candidate, self votes allowed or
 * not), so that every input meets the same parses.
 *
 * Checked, on a usable reply: at most one weight per candidate, sorted by
 * candidate, each a candidate of the round and in [-100, 100], none for
 * the evaluator's own candidate unless self votes are allowed, and every
 * critique valid UTF-8 within STATE_CRITIQUE_MAX bytes; on an unusable
 * one, a reason. Seeds: evaluation replies captured from nsed-sim
 * (fuzz/corpus/evaluate).
 */
#include "fuzz/fuzz.h"
#include "stages/evaluate.h"

typedef struct fuzz_round {
    size_t ncand;
    long own;
    bool self_votes;
} fuzz_round;

static const fuzz_round rounds[] = {
    {3, 1, false},  /* the demo's team of three */
    {1, 0, false},  /* only the evaluator's own candidate */
    {5, -1, true},  /* an evaluator without a candidate, self votes on */
    {28, 26, false} /* two-letter labels (AA is 26) */
};

static void check_parse(const char *reply, const fuzz_round *r)
{
    state_evaluation ev = {0};
    char why[256];
    size_t i, len;
    int rc;

    why[0] = '\0';
    rc = evaluate_parse(reply, r->ncand, r->own, r->self_votes, &ev, why,
                        sizeof why);
    if (rc != 0) {
        FUZZ_CHECK(rc == NSED_EINVAL || rc == NSED_ENOMEM);
        FUZZ_CHECK(rc == NSED_ENOMEM || fuzz_has_msg(why, sizeof why));
        FUZZ_CHECK(ev.weights == NULL && ev.nweights == 0);
        return;
    }
    FUZZ_CHECK(ev.nweights <= r->ncand);
    for (i = 0; i < ev.nweights; i++) {
        const state_weight *w = &ev.weights[i];

        FUZZ_CHECK(w->cand < r->ncand);
        FUZZ_CHECK(i == 0 || ev.weights[i - 1].cand < w->cand);
        FUZZ_CHECK(w->weight >= -100 && w->weight <= 100);
        FUZZ_CHECK(r->self_votes || (long)w->cand != r->own);
        FUZZ_CHECK(w->critique != NULL);
        len = strlen(w->critique);
        FUZZ_CHECK(len <= STATE_CRITIQUE_MAX);
        FUZZ_CHECK(fuzz_utf8(w->critique, len));
    }
    state_evaluation_release(&ev);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *reply = fuzz_cstr(data, size);
    size_t i;

    if (!reply)
        return 0;
    for (i = 0; i < sizeof rounds / sizeof rounds[0]; i++)
        check_parse(reply, &rounds[i]);
    free(reply);
    return 0;
}
