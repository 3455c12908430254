#include "sim_model.h"

#include "pipeline/base/buf.h"
#include "pipeline/base/err.h"
#include "pipeline/base/hash.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Replies are short; this only guards against runaway formatting. */
#define REPLY_MAX (1u << 20)

double sim_model_fatigued(double p, double fatigue, size_t prompt_chars)
{
    double excess = prompt_chars > 2000 ? (double)(prompt_chars - 2000) : 0;

    p -= fatigue * excess / 1000.0;
    return p < 0 ? 0 : p > 1 ? 1 : p;
}

int sim_model_is_evaluation(const sim_prompt *p)
{
    return p->ncandidates > 0;
}

long sim_model_tokens(const sim_model_cfg *m, bool evaluation, sim_rng *rng)
{
    double jitter = 0.75 + 0.5 * sim_rng_uniform(rng);
    long mean = evaluation && m->evaluation_tokens ? m->evaluation_tokens
                                                   : m->completion_tokens;
    long n = lround((double)mean * jitter);

    return n < 1 ? 1 : n;
}

static void put_le64(uint8_t b[8], uint64_t v)
{
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(v >> (8 * i));
}

static int already(char out[][SIM_ANSWER_MAX], int n, const char *s,
                   const char *reference)
{
    sim_span a = {s, strlen(s)};

    if (reference) {
        sim_span r = {reference, strlen(reference)};

        if (sim_answer_equal(a, r))
            return 1;
    }
    for (int i = 0; i < n; i++) {
        sim_span b = {out[i], strlen(out[i])};

        if (sim_answer_equal(a, b))
            return 1;
    }
    return 0;
}

int sim_model_distractors(uint64_t seed, sim_span question,
                          const char *family, const char *reference,
                          char out[SIM_DISTRACTORS][SIM_ANSWER_MAX])
{
    static const char tag[] = "nsed-sim/distractor/v1";
    hash_ctx *h = hash_new();
    uint8_t digest[HASH_LEN], sb[8];
    sim_rng rng;
    double ref = 0;
    int numeric = 0, integral = 0;
    sim_span q = sim_span_trim(question);

    if (!h)
        return NSED_ENOMEM;
    put_le64(sb, seed);
    hash_update_field(h, tag, sizeof tag - 1);
    hash_update_field(h, sb, sizeof sb);
    hash_update_field(h, q.ptr, q.len);
    hash_update_field(h, family, strlen(family));
    hash_final(h, digest);
    hash_free(h);
    sim_rng_seed(&rng, digest);
    if (reference) {
        sim_span r = {reference, strlen(reference)};

        numeric = sim_answer_number(r, &ref);
        integral = numeric && fabs(ref) < 1e15 && ref == floor(ref);
    }
    for (int i = 0; i < SIM_DISTRACTORS; i++) {
        /* Each try is a fresh draw, and the spans below hold at least ten
         * values, so a handful of tries always finds a new one; the
         * counter fallback keeps the loop bounded regardless. */
        for (int attempt = 0;; attempt++) {
            if (attempt >= 1000) {
                snprintf(out[i], SIM_ANSWER_MAX, "%d%d", 1000 + attempt, i);
                if (!already(out, i, out[i], reference))
                    break;
                continue;
            }
            if (integral) {
                double span = fmin(fmax(10.0, fabs(ref)), 1e12);
                int64_t d = sim_rng_range(&rng, 1, (int64_t)span);
                double v = ref + (sim_rng_chance(&rng, 0.5) ? d : -d);

                if (ref >= 0 && v < 0)
                    v = ref + (double)d;
                snprintf(out[i], SIM_ANSWER_MAX, "%.0f", v);
            } else if (numeric) {
                double f = 0.1 + 0.9 * sim_rng_uniform(&rng);
                double v = ref * (1.0 + (sim_rng_chance(&rng, 0.5) ? f : -f));

                if (v == ref)
                    v = ref + f;
                snprintf(out[i], SIM_ANSWER_MAX, "%.6g", v);
            } else {
                snprintf(out[i], SIM_ANSWER_MAX, "%lld",
                         (long long)sim_rng_range(&rng, 0, 999));
            }
            if (!already(out, i, out[i], reference))
                break;
        }
    }
    return 0;
}

static int is_skip(sim_span s)
{
    return s.len == 4 && !memcmp(s.ptr, "SKIP", 4);
}

static sim_span span_of(const char *s)
{
    sim_span r = {s, strlen(s)};

    return r;
}

/* Round 0 answer: SKIP, the reference, a family distractor, or for an
 * unknown question a pseudo-random number. *answer points at the reference
 * or into scratch. */
static int fresh_answer(const sim_ask *a, sim_rng *rng,
                        char scratch[SIM_ANSWER_MAX], sim_span *answer)
{
    const sim_model_cfg *m = a->model;
    double p = sim_model_fatigued(m->p_gen, m->fatigue, a->prompt_chars);
    char d[SIM_DISTRACTORS][SIM_ANSWER_MAX];
    int skip, correct, rc;
    double u;

    /* Every draw is taken whatever the outcome, so one decision never
     * shifts the random stream of the next. */
    skip = sim_rng_chance(rng, m->rate_skip);
    correct = sim_rng_chance(rng, p);
    u = sim_rng_uniform(rng);
    if (skip) {
        *answer = span_of("SKIP");
        return 0;
    }
    if (!a->reference) {
        snprintf(scratch, SIM_ANSWER_MAX, "%lld",
                 (long long)sim_rng_range(rng, 0, 999));
        *answer = span_of(scratch);
        return 0;
    }
    if (correct) {
        *answer = span_of(a->reference);
        return 0;
    }
    rc = sim_model_distractors(a->seed, a->prompt->question, m->family,
                               a->reference, d);
    if (rc)
        return rc;
    /* Each distractor is NUL-terminated within SIM_ANSWER_MAX bytes. */
    memcpy(scratch, d[u < 0.6 ? 0 : u < 0.9 ? 1 : 2], SIM_ANSWER_MAX);
    *answer = span_of(scratch);
    return 0;
}

static const char *pick(sim_rng *rng, const char *const *list, size_t n)
{
    return list[sim_rng_range(rng, 0, (int64_t)n - 1)];
}

#define PICK(rng, list) pick((rng), (list), sizeof(list) / sizeof((list)[0]))

static const char *const openers[] = {
    "Let me work through this step by step.",
    "I will set up the problem carefully before computing.",
    "First, I restate what is being asked.",
    "Let me identify the key quantities first.",
};
static const char *const middles[] = {
    "Breaking the problem into cases keeps the counting manageable.",
    "Simplifying the expression reduces it to a single computation.",
    "Checking small cases confirms the pattern before generalising.",
    "Substituting the given values and simplifying gives a direct result.",
    "A quick sanity check on the magnitude agrees with the computation.",
};

/* Answers quoted inside prose are shortened to this many bytes. */
#define QUOTE_MAX 200

static int quote_len(sim_span s)
{
    return (int)(s.len < QUOTE_MAX ? s.len : QUOTE_MAX);
}

static int proposal(const sim_ask *a, sim_rng *rng, buf *out)
{
    const sim_prompt *p = a->prompt;
    const sim_model_cfg *m = a->model;
    char scratch[SIM_ANSWER_MAX];
    sim_span answer = {"", 0}, w = {"", 0}, prev = {"", 0};
    int have_w = 0, have_prev = 0, accept = 0, rc;

    if (p->has_winner) {
        double pv = sim_model_fatigued(m->p_ver, m->fatigue, a->prompt_chars);
        int right = sim_rng_chance(rng, pv), coin = sim_rng_chance(rng, 0.5);

        have_w = sim_final_answer(p->winner, &w) && !is_skip(w);
        have_prev = p->has_previous && sim_final_answer(p->previous, &prev) &&
                    !is_skip(prev);
        if (have_w && a->reference) {
            int truth = sim_answer_equal(w, span_of(a->reference));

            accept = right ? truth : !truth;
        } else if (have_w) {
            accept = coin;
        }
    }
    if (accept) {
        answer = w;
    } else if (have_prev) {
        answer = prev;
    } else {
        rc = fresh_answer(a, rng, scratch, &answer);
        if (rc)
            return rc;
    }
    if (is_skip(answer))
        return buf_adds(out, "SKIP");
    if (have_w && accept)
        rc = buf_printf(out, "I checked the winning solution and its final "
                        "answer %.*s holds up under verification. %s ",
                        quote_len(w), w.ptr, PICK(rng, middles));
    else if (have_w)
        rc = buf_printf(out, "I checked the winning solution, but I cannot "
                        "confirm its final answer %.*s, so I keep my own "
                        "reasoning. %s ", quote_len(w), w.ptr,
                        PICK(rng, middles));
    else
        rc = buf_printf(out, "%s %s %s ", PICK(rng, openers),
                        PICK(rng, middles), PICK(rng, middles));
    if (!rc)
        rc = buf_adds(out, "Therefore the final answer is \\boxed{");
    if (!rc)
        rc = buf_add(out, answer.ptr, answer.len);
    if (!rc)
        rc = buf_adds(out, "}.");
    return rc;
}

typedef struct judged {
    int has_answer;
    sim_span answer;
    int verdict;  /* judged correct */
    int weight;
    int popular;
} judged;

static int evaluation(const sim_ask *a, sim_rng *rng, int prose, buf *out)
{
    const sim_prompt *p = a->prompt;
    const sim_model_cfg *m = a->model;
    double pv = sim_model_fatigued(m->p_ver, m->fatigue, a->prompt_chars);
    judged j[SIM_PROMPT_MAX_CANDIDATES];
    size_t n = p->ncandidates, best = 0, best_count = 0;
    int tie = 0, rc = 0;
    cJSON *root = NULL, *arr;
    char *text = NULL;

    memset(j, 0, sizeof j);
    for (size_t i = 0; i < n; i++) {
        int right = sim_rng_chance(rng, pv), coin = sim_rng_chance(rng, 0.5);
        int truth = 0;

        j[i].has_answer = sim_final_answer(p->candidates[i].body, &j[i].answer);
        if (a->reference && j[i].has_answer)
            truth = sim_answer_equal(j[i].answer, span_of(a->reference));
        j[i].verdict = a->reference ? (right ? truth : !truth) : coin;
        j[i].weight = j[i].verdict ? (int)sim_rng_range(rng, 40, 100)
                                   : (int)sim_rng_range(rng, -100, -30);
    }
    /* The popular answer: strictly most frequent, shared by at least two
     * candidates. Without one, sycophancy has nothing to pull toward. */
    for (size_t i = 0; i < n; i++) {
        size_t count = 0;

        if (!j[i].has_answer)
            continue;
        for (size_t k = 0; k < n; k++) {
            if (j[k].has_answer && sim_answer_equal(j[i].answer, j[k].answer))
                count++;
        }
        if (count > best_count) {
            best_count = count;
            best = i;
            tie = 0;
        } else if (count == best_count &&
                   !sim_answer_equal(j[i].answer, j[best].answer)) {
            tie = 1;
        }
    }
    if (best_count >= 2 && !tie) {
        double s = m->sycophancy;

        for (size_t i = 0; i < n; i++) {
            double w;

            j[i].popular = j[i].has_answer &&
                           sim_answer_equal(j[i].answer, j[best].answer);
            w = (1 - s) * j[i].weight + s * (j[i].popular ? 100.0 : -50.0);
            j[i].weight = (int)lround(fmax(-100.0, fmin(100.0, w)));
        }
    }
    if (prose) {
        rc = buf_adds(out, "I read every candidate solution carefully.");
        for (size_t i = 0; i < n && !rc; i++) {
            sim_span ans = j[i].has_answer ? j[i].answer : span_of("none");

            rc = buf_printf(out, " Candidate %s (final answer %.*s) looks %s "
                            "to me.", p->candidates[i].label, quote_len(ans),
                            ans.ptr, j[i].weight > 0 ? "right" : "wrong");
        }
        return rc;
    }
    root = cJSON_CreateObject();
    arr = root ? cJSON_AddArrayToObject(root, "evaluations") : NULL;
    if (!arr) {
        rc = NSED_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        cJSON *e = cJSON_CreateObject();
        char crit[QUOTE_MAX + 128];

        if (!e || !cJSON_AddItemToArray(arr, e)) {
            cJSON_Delete(e);
            rc = NSED_ENOMEM;
            goto out;
        }
        if (j[i].has_answer) {
            snprintf(crit, sizeof crit, "Final answer %.*s: %s",
                     quote_len(j[i].answer), j[i].answer.ptr,
                     j[i].weight > 0 ? "the derivation checks out."
                                     : "the key step does not follow.");
        } else {
            snprintf(crit, sizeof crit, "No final answer is given.");
        }
        if (!cJSON_AddStringToObject(e, "candidate", p->candidates[i].label) ||
            !cJSON_AddNumberToObject(e, "weight", j[i].weight) ||
            !cJSON_AddStringToObject(e, "critique", crit)) {
            rc = NSED_ENOMEM;
            goto out;
        }
    }
    text = cJSON_PrintUnformatted(root);
    if (!text) {
        rc = NSED_ENOMEM;
        goto out;
    }
    rc = buf_adds(out, text);
out:
    cJSON_free(text);
    cJSON_Delete(root);
    return rc;
}

int sim_model_reply(const sim_ask *ask, sim_rng *rng, int prose,
                    char **content)
{
    buf out;
    int rc;
    char *s;

    buf_init(&out, REPLY_MAX);
    if (sim_model_is_evaluation(ask->prompt))
        rc = evaluation(ask, rng, prose, &out);
    else
        rc = proposal(ask, rng, &out);
    if (rc) {
        buf_release(&out);
        return rc == NSED_ETOOBIG ? NSED_ENOMEM : rc;
    }
    s = buf_detach(&out, NULL);
    if (!s)
        return NSED_ENOMEM;
    *content = s;
    return 0;
}
