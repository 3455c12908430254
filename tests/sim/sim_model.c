#include "sim_model.h"

#include "pipeline/base/buf.h"
#include "pipeline/base/err.h"
#include "pipeline/base/hash.h"

#include <cjson/cJSON.h>
#include <ctype.h>
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

double sim_model_fatigue_factor(const sim_model_cfg *m, long round,
                                size_t prompt_chars)
{
    double excess = prompt_chars > 2000 ? (double)(prompt_chars - 2000) : 0;
    double x = m->fatigue_round * (double)(round > 0 ? round : 0) +
               m->fatigue_context * excess / 1000.0;

    return x > 0 ? exp(-x) : 1.0;
}

static void put_le64(uint8_t b[8], uint64_t v);

/* A generator seeded from (tag, server seed, question, family, extra). */
static int seeded(const char *tag, uint64_t seed, sim_span question,
                  const char *family, sim_span extra, sim_rng *rng)
{
    hash_ctx *h = hash_new();
    uint8_t digest[HASH_LEN], sb[8];
    sim_span q = sim_span_trim(question);

    if (!h)
        return NSED_ENOMEM;
    put_le64(sb, seed);
    hash_update_field(h, tag, strlen(tag));
    hash_update_field(h, sb, sizeof sb);
    hash_update_field(h, q.ptr, q.len);
    hash_update_field(h, family, strlen(family));
    hash_update_field(h, extra.ptr, extra.len);
    hash_final(h, digest);
    hash_free(h);
    sim_rng_seed(rng, digest);
    return 0;
}

int sim_model_difficulty(uint64_t seed, sim_span question, double *z)
{
    static const double pi = 3.14159265358979323846;
    sim_span none = {"", 0};
    sim_rng rng;
    double u;
    int rc = seeded("nsed-sim/difficulty/v1", seed, question, "", none, &rng);

    if (rc)
        return rc;
    u = sim_rng_uniform(&rng);
    u = u < 1e-12 ? 1e-12 : u > 1 - 1e-12 ? 1 - 1e-12 : u;
    /* the logistic quantile, scaled to sd 1 (its sd is pi/sqrt 3) */
    *z = log(u / (1 - u)) * sqrt(3.0) / pi;
    return 0;
}

double sim_model_shift(double p, double sd, double z)
{
    double l;

    if (sd == 0 || p <= 0 || p >= 1)
        return p;
    l = log(p / (1 - p)) - sd * z;
    return 1 / (1 + exp(-l));
}

static const char round_mark[] = "Round ";
static const char round_tail[] = " revision.";

/* The round a candidate body opens with ("Round N revision."), or -1. */
static long body_round(sim_span body)
{
    size_t n = sizeof round_mark - 1, t = sizeof round_tail - 1, i;
    long v = 0;

    body = sim_span_trim(body);
    if (body.len < n + 1 + t || memcmp(body.ptr, round_mark, n))
        return -1;
    for (i = n;
         i < body.len && i < n + 9 && isdigit((unsigned char)body.ptr[i]); i++)
        v = v * 10 + (body.ptr[i] - '0');
    if (i == n || body.len - i < t || memcmp(body.ptr + i, round_tail, t))
        return -1;
    return v;
}

long sim_model_round(const sim_prompt *p)
{
    long r = 0;

    if (p->ncandidates == 0)
        return p->has_round ? p->round : 0;
    for (size_t i = 0; i < p->ncandidates; i++) {
        long b = body_round(p->candidates[i].body);

        if (b > r)
            r = b;
    }
    return r;
}

/* The accuracies of one request: p_gen and p_ver after the question's
 * difficulty, the per-character fatigue and the fatigue factor F. */
typedef struct accuracy {
    double gen, ver, factor;
} accuracy;

static int accuracy_of(const sim_ask *a, accuracy *out)
{
    const sim_model_cfg *m = a->model;
    double z = 0, f = sim_model_fatigue_factor(m, sim_model_round(a->prompt),
                                               a->prompt_chars);
    double g = m->p_gen, v = m->p_ver;
    int rc;

    if (a->reference && (a->difficulty > 0 || a->difficulty_ver > 0)) {
        rc = sim_model_difficulty(a->seed, a->prompt->question, &z);
        if (rc)
            return rc;
        g = sim_model_shift(g, a->difficulty, z);
        v = sim_model_shift(v, a->difficulty_ver, z);
    }
    g = sim_model_fatigued(g, m->fatigue, a->prompt_chars);
    v = sim_model_fatigued(v, m->fatigue, a->prompt_chars);
    /* a tired model solves less and judges closer to a coin flip */
    out->gen = f < 1 ? g * f : g;
    out->ver = f < 1 ? 0.5 + (v - 0.5) * f : v;
    out->factor = f;
    return 0;
}

/* The family's shared draws for a question (purpose "gen": whether a fresh
 * answer is right and which distractor; "ver" with the answer judged:
 * whether a judgement of it is right). */
static int family_draws(const sim_ask *a, const char *purpose, sim_span answer,
                        double u[2])
{
    char tag[64];
    sim_rng rng;
    int rc;

    snprintf(tag, sizeof tag, "nsed-sim/blind-spot/%s/v1", purpose);
    rc = seeded(tag, a->seed, a->prompt->question, a->model->family,
                sim_span_trim(answer), &rng);
    if (rc)
        return rc;
    u[0] = sim_rng_uniform(&rng);
    u[1] = sim_rng_uniform(&rng);
    return 0;
}

/* Whether a judgement of answer is right, with probability pv: the call's
 * own draw own_u, or with probability blind_spot (an extra draw, taken
 * only when blind_spot > 0, so configs without it keep their stream) the
 * family's draw for that answer. */
static int judge_right(const sim_ask *a, sim_rng *rng, double pv, double own_u,
                       sim_span answer, int *right)
{
    double u = own_u, fam[2];
    int rc;

    if (a->model->blind_spot > 0 && sim_rng_chance(rng, a->model->blind_spot)) {
        rc = family_draws(a, "ver", answer, fam);
        if (rc)
            return rc;
        u = fam[0];
    }
    *right = pv >= 1 || u < pv;
    return 0;
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
static int fresh_answer(const sim_ask *a, const accuracy *acc, sim_rng *rng,
                        char scratch[SIM_ANSWER_MAX], sim_span *answer)
{
    const sim_model_cfg *m = a->model;
    double p = acc->gen;
    char d[SIM_DISTRACTORS][SIM_ANSWER_MAX];
    int skip, correct, rc, shared = 0;
    double u, cu;

    /* Every draw is taken whatever the outcome, so one decision never
     * shifts the random stream of the next. */
    skip = sim_rng_chance(rng, m->rate_skip);
    cu = sim_rng_uniform(rng);
    u = sim_rng_uniform(rng);
    if (m->blind_spot > 0)
        shared = sim_rng_chance(rng, m->blind_spot);
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
    if (shared) {
        /* the family's blind spot: its members are wrong on the same
         * questions, with the same wrong answer */
        double fam[2];
        sim_span none = {"", 0};

        rc = family_draws(a, "gen", none, fam);
        if (rc)
            return rc;
        cu = fam[0];
        u = fam[1];
    }
    correct = p > 0 && (p >= 1 || cu < p);
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
    int have_w = 0, have_prev = 0, accept = 0, lost = 0, rc;
    accuracy acc;

    rc = accuracy_of(a, &acc);
    if (rc)
        return rc;
    if (p->has_winner) {
        double ru = sim_rng_uniform(rng);
        int coin = sim_rng_chance(rng, 0.5), right = 0;

        have_w = sim_final_answer(p->winner, &w) && !is_skip(w);
        have_prev = p->has_previous && sim_final_answer(p->previous, &prev) &&
                    !is_skip(prev);
        if (have_w && a->reference) {
            int truth = sim_answer_equal(w, span_of(a->reference));

            rc = judge_right(a, rng, acc.ver, ru, w, &right);
            if (rc)
                return rc;
            accept = right ? truth : !truth;
        } else if (have_w) {
            accept = coin;
        }
        /* A tired model loses the thread with probability 1 - F: it
         * neither verifies nor keeps its answer but solves afresh, at its
         * fatigued p_gen (the draw is taken only when F < 1). */
        if (acc.factor < 1)
            lost = !sim_rng_chance(rng, acc.factor);
    }
    if (lost) {
        accept = 0;
        have_prev = 0;
    }
    if (accept) {
        answer = w;
    } else if (have_prev) {
        answer = prev;
    } else {
        rc = fresh_answer(a, &acc, rng, scratch, &answer);
        if (rc)
            return rc;
    }
    if (is_skip(answer))
        return buf_adds(out, "SKIP");
    /* Models with round fatigue say which round they revise in, so that
     * an evaluation, whose prompt has no round, can tell (docs/nsed-sim.md
     * #fatigue). */
    rc = m->fatigue_round > 0 && p->has_round
             ? buf_printf(out, "%s%ld%s ", round_mark, p->round, round_tail)
             : 0;
    if (rc)
        return rc;
    if (lost)
        rc = buf_printf(out,
                        "I lost track of the discussion so far and "
                        "solved the question again from the start. %s ",
                        PICK(rng, middles));
    else if (have_w && accept)
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
    judged j[SIM_PROMPT_MAX_CANDIDATES];
    accuracy acc;
    size_t n = p->ncandidates, best = 0, best_count = 0;
    int tie = 0, rc = 0;
    cJSON *root = NULL, *arr;
    char *text = NULL;

    rc = accuracy_of(a, &acc);
    if (rc)
        return rc;
    memset(j, 0, sizeof j);
    for (size_t i = 0; i < n; i++) {
        double ru = sim_rng_uniform(rng);
        int coin = sim_rng_chance(rng, 0.5), right, truth = 0;

        j[i].has_answer = sim_final_answer(p->candidates[i].body, &j[i].answer);
        rc = judge_right(a, rng, acc.ver, ru,
                         j[i].has_answer ? j[i].answer : span_of(""), &right);
        if (rc)
            return rc;
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
