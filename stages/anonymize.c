#include "stages/anonymize.h"

#include "pipeline/base/buf.h"
#include "stages/mask.h"
#include "stages/seed.h"
#include "stages/text.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#define REDACTED "[redacted]"
#define NAME_MIN 3          /* shorter names are not redacted */
#define SIGNATURE_MAX 80    /* bytes of a signature line */

static const char *const builtin_names[] = {
    "GPT", "ChatGPT", "OpenAI", "Claude", "Anthropic", "Gemini", "Google",
    "DeepMind", "Bard", "PaLM", "Llama", "Meta", "Mistral", "Mixtral",
    "Codestral", "Qwen", "QwQ", "Alibaba", "DeepSeek", "Phi", "Microsoft",
    "Copilot", "Gemma", "Grok", "xAI", "Cohere", "Falcon", "InternLM",
    "Baichuan", "Zhipu", "ChatGLM", "GLM", "Vicuna", "OLMo", "Nemotron",
    "NVIDIA", "Ernie", "Baidu", "Kimi", "Moonshot", "Yi-Lightning",
    "Hunyuan", "Tencent", "SmolLM", "HuggingFace", "Hugging Face",
};

const char *const *anonymize_builtin_names(size_t *n)
{
    *n = sizeof builtin_names / sizeof builtin_names[0];
    return builtin_names;
}

typedef struct name {
    char *s;
    size_t len;
    bool exact_case; /* a name that is also an everyday or math word */
} name;

/* Built-in names that are also ordinary words ("phi" in a proof, "meta"
 * in prose): redacted only when capitalized exactly as the product is,
 * so "Phi-3" goes and "the angle phi" stays. */
static const char *const word_names[] = {
    "Phi", "Meta", "Falcon", "Grok", "Bard", "Gemini", "Ernie", "Kimi",
    "Moonshot", "Copilot",
};

static bool is_word_name(const char *s)
{
    for (size_t i = 0; i < sizeof word_names / sizeof word_names[0]; i++)
        if (!strcmp(s, word_names[i]))
            return true;
    return false;
}

struct anonymize_names {
    name *v;  /* by lower-cased first byte, then longest first (so the
                 longest match wins) */
    size_t n;
    size_t first[257]; /* names starting with byte c: v[first[c]..first[c+1]) */
};

static int add_name(anonymize_names *ns, const char *s, size_t len,
                    bool exact_case, size_t *alloc)
{
    if (!s || len < NAME_MIN)
        return 0;
    for (size_t i = 0; i < ns->n; i++) {
        if (ns->v[i].len == len && text_eq_ci(ns->v[i].s, s, len))
            return 0;
    }
    if (ns->n == *alloc) {
        size_t na = *alloc ? *alloc * 2 : 64;
        name *v = realloc(ns->v, na * sizeof *v);

        if (!v)
            return NSED_ENOMEM;
        ns->v = v;
        *alloc = na;
    }
    ns->v[ns->n].s = strndup(s, len);
    if (!ns->v[ns->n].s)
        return NSED_ENOMEM;
    ns->v[ns->n].exact_case = exact_case;
    ns->v[ns->n++].len = len;
    return 0;
}

static int add_cstr(anonymize_names *ns, const char *s, size_t *alloc)
{
    return s ? add_name(ns, s, strlen(s), false, alloc) : 0;
}

static int by_first_then_length(const void *a, const void *b)
{
    const name *x = a, *y = b;
    int fx = tolower((unsigned char)x->s[0]), fy = tolower((unsigned char)y->s[0]);

    if (fx != fy)
        return fx < fy ? -1 : 1;
    if (x->len != y->len)
        return x->len > y->len ? -1 : 1;
    return strcmp(x->s, y->s);
}

void anonymize_names_free(anonymize_names *ns)
{
    if (!ns)
        return;
    for (size_t i = 0; i < ns->n; i++)
        free(ns->v[i].s);
    free(ns->v);
    free(ns);
}

int anonymize_names_new(const workflow *wf, const char *const *extra,
                        size_t nextra, anonymize_names **out)
{
    anonymize_names *ns = calloc(1, sizeof *ns);
    size_t alloc = 0, nb;
    const char *const *b = anonymize_builtin_names(&nb);
    int rc = 0;

    if (!ns)
        return NSED_ENOMEM;
    for (size_t i = 0; wf && i < wf->nmodels && !rc; i++) {
        const workflow_model *m = &wf->models[i];
        const char *slash = m->model ? strrchr(m->model, '/') : NULL;

        rc = add_cstr(ns, m->id, &alloc);
        if (!rc)
            rc = add_cstr(ns, m->model, &alloc);
        if (!rc && slash)
            rc = add_cstr(ns, slash + 1, &alloc);
        if (!rc)
            rc = add_cstr(ns, m->family, &alloc);
    }
    for (size_t i = 0; i < nb && !rc; i++)
        rc = add_name(ns, b[i], strlen(b[i]), is_word_name(b[i]), &alloc);
    for (size_t i = 0; extra && i < nextra && !rc; i++)
        rc = add_cstr(ns, extra[i], &alloc);
    if (rc) {
        anonymize_names_free(ns);
        return rc;
    }
    if (ns->n)
        qsort(ns->v, ns->n, sizeof *ns->v, by_first_then_length);
    for (size_t c = 0, k = 0; c <= 256; c++) {
        while (k < ns->n && (size_t)tolower((unsigned char)ns->v[k].s[0]) < c)
            k++;
        ns->first[c] = k;
    }
    *out = ns;
    return 0;
}

/* ---- matching ---------------------------------------------------------- */

static bool is_alpha(char c)
{
    return isalpha((unsigned char)c) != 0;
}

static bool left_boundary(const char *t, size_t i)
{
    char p;

    if (i == 0)
        return true;
    p = t[i - 1];
    if (text_is_word(p) || p == '\\')
        return false;
    /* "pseudo-Meta": part of a hyphenated word */
    return !(p == '-' && i >= 2 && isalnum((unsigned char)t[i - 2]));
}

static bool right_boundary(const char *t, size_t len, size_t e)
{
    if (e >= len)
        return true;
    if (text_is_word(t[e]))
        return false;
    /* "Meta-analysis", "Claude-like": a hyphenated word */
    return !(t[e] == '-' && e + 1 < len && is_alpha(t[e + 1]));
}

/* A version glued to a name: "-4o", "-4o-mini", " 3.1". */
static size_t version_suffix(const char *t, size_t len, size_t e)
{
    size_t j = e;

    if (j + 1 < len && (t[j] == '-' || t[j] == ' ') &&
        isdigit((unsigned char)t[j + 1])) {
        j++;
        for (;;) {
            while (j < len && (isalnum((unsigned char)t[j]) ||
                               (t[j] == '.' && j + 1 < len &&
                                isalnum((unsigned char)t[j + 1]))))
                j++;
            if (j + 1 < len && t[j] == '-' && isalnum((unsigned char)t[j + 1]))
                j++;
            else
                break;
        }
    }
    return j;
}

/* Length of the known name (with its version) at t[i], or 0. */
static size_t match_name(const anonymize_names *ns, const char *t,
                         size_t len, size_t i)
{
    size_t c = (size_t)tolower((unsigned char)t[i]);

    if (!left_boundary(t, i))
        return 0;
    for (size_t k = ns->first[c]; k < ns->first[c + 1]; k++) {
        const name *nm = &ns->v[k];

        if (nm->len > len - i ||
            !(nm->exact_case ? memcmp(nm->s, t + i, nm->len) == 0
                             : text_eq_ci(nm->s, t + i, nm->len)) ||
            !right_boundary(t, len, i + nm->len))
            continue;
        return version_suffix(t, len, i + nm->len) - i;
    }
    return 0;
}

/* Case-insensitive "phrase" at t[i] followed by a non-word character. */
static size_t phrase_at(const char *t, size_t len, size_t i, const char *ph)
{
    size_t n = strlen(ph);

    if (n > len - i || !text_eq_ci(t + i, ph, n))
        return 0;
    if (i + n < len && text_is_word(t[i + n]))
        return 0;
    return n;
}

static size_t skip_spaces(const char *t, size_t len, size_t i)
{
    while (i < len && (t[i] == ' ' || t[i] == '\t'))
        i++;
    return i;
}

/* End of the sentence starting at i: just past its '.', '!' or '?' (when
 * followed by white space or the end) and the spaces after it, or at its
 * newline, or the end of the text. */
static size_t sentence_end(const char *t, size_t len, size_t i)
{
    for (size_t j = i; j < len; j++) {
        if (t[j] == '\n')
            return j;
        if ((t[j] == '.' || t[j] == '!' || t[j] == '?') &&
            (j + 1 >= len || isspace((unsigned char)t[j + 1])))
            return skip_spaces(t, len, j + 1);
    }
    return len;
}

static bool has_word(const char *t, size_t from, size_t to, const char *w)
{
    size_t n = strlen(w);

    for (size_t j = from; j + n <= to; j++) {
        if ((j == from || !text_is_word(t[j - 1])) &&
            text_eq_ci(t + j, w, n) && (j + n >= to || !text_is_word(t[j + n])))
            return true;
    }
    return false;
}

static bool has_name(const anonymize_names *ns, const char *t, size_t from,
                     size_t to)
{
    for (size_t j = from; j < to; j++) {
        if (match_name(ns, t, to, j))
            return true;
    }
    return false;
}

static const char *const ai_openers[] = {
    "as an ai", "as an artificial intelligence", "as a large language model",
    "as a language model", "as an llm",
};
static const char *const self_openers[] = {
    "i am", "i'm", "i\xe2\x80\x99m", "my name is",
};
static const char *const ai_nouns[] = {
    "an ai", "an artificial intelligence", "a large language model",
    "a language model", "an llm",
};
static const char *const fillers[] = {"a", "an", "the", "called"};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* Whether the sentence [i, end) identifies its author (rule 1). */
static bool identity_sentence(const anonymize_names *ns, const char *t,
                              size_t i, size_t end)
{
    for (size_t k = 0; k < COUNT(ai_openers); k++) {
        if (phrase_at(t, end, i, ai_openers[k]))
            return has_word(t, i, end, "by");
    }
    for (size_t k = 0; k < COUNT(self_openers); k++) {
        size_t n = phrase_at(t, end, i, self_openers[k]), j;

        if (!n)
            continue;
        j = skip_spaces(t, end, i + n);
        for (size_t a = 0; a < COUNT(ai_nouns); a++) {
            if (phrase_at(t, end, j, ai_nouns[a]))
                return has_word(t, j, end, "by") || has_name(ns, t, j, end);
        }
        for (size_t f = 0; f < COUNT(fillers); f++) {
            size_t m = phrase_at(t, end, j, fillers[f]);

            if (m) {
                j = skip_spaces(t, end, j + m);
                break;
            }
        }
        return match_name(ns, t, end, j) > 0;
    }
    return false;
}

/* Rule 1: drop identity sentences. */
static int drop_identity(const anonymize_names *ns, const char *t,
                         size_t len, buf *out, size_t *count)
{
    size_t i = 0;
    int rc = 0;

    while (i < len && !rc) {
        size_t start = i, end;

        /* white space between sentences is kept as it is */
        while (i < len && isspace((unsigned char)t[i]))
            i++;
        if (i > start)
            rc = buf_add(out, t + start, i - start);
        if (rc || i >= len)
            break;
        end = sentence_end(t, len, i);
        if (identity_sentence(ns, t, i, end))
            (*count)++;
        else
            rc = buf_add(out, t + i, end - i);
        i = end;
    }
    return rc;
}

static bool starts_ci(const char *s, size_t n, const char *p)
{
    size_t m = strlen(p);

    return n >= m && text_eq_ci(s, p, m);
}

/* The last non-blank line of t[0..len): its trimmed span and where the
 * line starts. */
static bool last_line(const char *t, size_t len, size_t *ls, const char **s,
                      size_t *n)
{
    while (len > 0) {
        size_t start = len;
        const char *p;
        size_t m;

        while (start > 0 && t[start - 1] != '\n')
            start--;
        p = t + start;
        m = len - start;
        text_trim(&p, &m);
        if (m) {
            *ls = start;
            *s = p;
            *n = m;
            return true;
        }
        len = start ? start - 1 : 0;
    }
    return false;
}

static bool signature_text(const char *s, size_t n)
{
    if (n > SIGNATURE_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (strchr("\\{}=", s[i]))
            return false;
    }
    return true;
}

static bool dash_signature(const char *s, size_t n)
{
    size_t lead;

    if (n >= 2 && s[0] == '-' && s[1] == '-')
        lead = (n >= 3 && s[2] == '-') ? 0 : 2; /* "---" is a rule */
    else if (starts_ci(s, n, "\xe2\x80\x94") || starts_ci(s, n, "\xe2\x80\x93"))
        lead = 3;
    else if (n >= 1 && s[0] == '~' && !(n >= 2 && s[1] == '~'))
        lead = 1;
    else
        lead = 0;
    if (!lead || lead >= n)
        return false;
    return signature_text(s, n);
}

static const char *const closings[] = {
    "regards,", "best regards,", "kind regards,", "sincerely,", "best,",
    "cheers,",
};

/* Rule 2: a signature at the end; returns the new length of t. */
static size_t drop_signature(const char *t, size_t len, size_t *count)
{
    size_t ls, ls2;
    const char *s, *s2;
    size_t n, n2;

    if (!last_line(t, len, &ls, &s, &n))
        return len;
    if (dash_signature(s, n) ||
        (starts_ci(s, n, "signed") && signature_text(s, n))) {
        (*count)++;
        return ls;
    }
    if (signature_text(s, n) && ls > 0 && last_line(t, ls - 1, &ls2, &s2, &n2)) {
        for (size_t k = 0; k < COUNT(closings); k++) {
            if (n2 == strlen(closings[k]) && starts_ci(s2, n2, closings[k])) {
                (*count)++;
                return ls2;
            }
        }
    }
    return len;
}

/* Rule 3: replace known names. */
static int redact_names(const anonymize_names *ns, const char *t, size_t len,
                        buf *out, size_t *count)
{
    size_t i = 0, copied = 0;
    int rc = 0;

    while (i < len && !rc) {
        size_t m = match_name(ns, t, len, i);

        if (!m) {
            i++;
            continue;
        }
        rc = buf_add(out, t + copied, i - copied);
        if (!rc)
            rc = buf_adds(out, REDACTED);
        (*count)++;
        i += m;
        copied = i;
    }
    if (!rc)
        rc = buf_add(out, t + copied, len - copied);
    return rc;
}

int anonymize_sanitize(const anonymize_names *ns, const char *text,
                       char **out, size_t *redactions)
{
    const size_t len = strlen(text);
    /* redaction can grow a 3-byte name to 10 bytes */
    const size_t work_cap = len * 4 + 64;
    size_t count = 0, keep;
    buf a, b, c;
    int rc;

    buf_init(&a, work_cap);
    buf_init(&b, work_cap);
    buf_init(&c, STATE_TEXT_MAX);
    rc = drop_identity(ns, text, len, &a, &count);
    if (!rc) {
        const char *t = a.ptr;

        /* white space left at either end by removed text goes too */
        keep = drop_signature(a.ptr, a.len, &count);
        text_trim(&t, &keep);
        rc = redact_names(ns, t, keep, &b, &count);
    }
    if (!rc) {
        buf_reset(&a);
        rc = text_add_neutralized(&a, b.ptr, b.len);
    }
    if (!rc)
        rc = text_add_capped(&c, a.ptr, a.len, STATE_TEXT_MAX);
    if (!rc) {
        *out = buf_detach(&c, NULL);
        if (!*out)
            rc = NSED_ENOMEM;
        else
            *redactions = count;
    }
    buf_release(&a);
    buf_release(&b);
    buf_release(&c);
    return rc;
}

/* ---- the stage --------------------------------------------------------- */

/* The order seat is shown the candidates of r in (e->shown): the round's
 * order, its masked ones left out; under per_evaluator then shuffled by
 * Fisher-Yates seeded from (run seed, question, round, seat), so each
 * evaluator has its own order and position bias is spread across them. */
static int shown_order(const state *st, const state_round *r, size_t seat,
                       bool self_votes, bool per_evaluator, state_evaluation *e)
{
    seed_rng rng;
    size_t n = 0;
    int rc;

    e->shown = calloc(r->ncand ? r->ncand : 1, sizeof *e->shown);
    if (!e->shown)
        return NSED_ENOMEM;
    for (size_t j = 0; j < r->ncand; j++)
        if (mask_shows(r, seat, j, self_votes))
            e->shown[n++] = j;
    e->nshown = n;
    if (!per_evaluator)
        return 0;
    rc = seed_rng_init(&rng, "evaluator order", st->seed, st->qid, r->index,
                       seat);
    if (rc)
        return rc;
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)seed_rng_below(&rng, i);
        size_t tmp = e->shown[i - 1];

        e->shown[i - 1] = e->shown[j];
        e->shown[j] = tmp;
    }
    return 0;
}

int anonymize_run(state *st, const workflow *wf, nsed_err *err)
{
    state_round *r = st->cur;
    anonymize_names *ns = NULL;
    state_candidate *cands = NULL;
    state_evaluation *evals = NULL;
    const char **texts = NULL;
    char fence[TEXT_FENCE_HEX + 1];
    size_t ncand = 0;
    seed_rng rng;
    const bool per_evaluator = wf->scoring.candidate_order ==
                               WORKFLOW_ORDER_PER_EVALUATOR;
    int rc;

    if (st->stage != STATE_STAGE_ANONYMIZE || r->anonymized)
        return nsed_error(err, NSED_EINTERNAL,
                          "question %s: anonymize called in stage %s", st->qid,
                          state_stage_name(st->stage));
    rc = anonymize_names_new(wf, NULL, 0, &ns);
    if (rc)
        goto out;
    cands = calloc(st->nseats, sizeof *cands);
    evals = calloc(st->nseats, sizeof *evals);
    texts = calloc(st->nseats, sizeof *texts);
    if (!cands || !evals || !texts) {
        rc = NSED_ENOMEM;
        goto out;
    }
    for (size_t s = 0; s < st->nseats; s++) {
        const state_proposal *p = &r->proposals[s];

        if (p->status != STATE_PROPOSAL_OK)
            continue;
        rc = anonymize_sanitize(ns, p->text ? p->text : "", &cands[ncand].text,
                                &cands[ncand].redactions);
        if (rc)
            goto out;
        cands[ncand++].seat = s;
    }
    /* Fisher-Yates with the question's round permutation */
    rc = seed_rng_init(&rng, "permutation", st->seed, st->qid, r->index, 0);
    if (rc)
        goto out;
    for (size_t i = ncand; i > 1; i--) {
        size_t j = (size_t)seed_rng_below(&rng, i);
        state_candidate tmp = cands[i - 1];

        cands[i - 1] = cands[j];
        cands[j] = tmp;
    }
    for (size_t i = 0; i < ncand; i++)
        texts[i] = cands[i].text;
    /* the nonce depends on the texts it fences, so no reply can guess it
     * and none makes this stage fail (seed.h) */
    rc = seed_fence("candidates", st->seed, st->qid, r->index, texts, ncand,
                    fence);
    if (rc)
        goto out;
    /* the order each evaluator is shown (mask_shows needs the round's
     * candidates, so they go in first; undone below on failure) */
    r->cands = cands;
    r->ncand = ncand;
    for (size_t s = 0; s < st->nseats && !rc; s++) {
        evals[s].status = mask_initial_status(r, s,
                                              wf->scoring.allow_self_votes,
                                              st->seats[s].propose_only);
        if (evals[s].status == STATE_EVAL_PENDING)
            rc = shown_order(st, r, s, wf->scoring.allow_self_votes,
                             per_evaluator, &evals[s]);
    }
    if (rc) {
        r->cands = NULL;
        r->ncand = 0;
        for (size_t s = 0; s < st->nseats; s++)
            free(evals[s].shown);
        goto out;
    }
    /* commit: nothing below can fail */
    memcpy(r->fence, fence, sizeof fence);
    r->anonymized = true;
    r->per_evaluator = per_evaluator;
    r->evals = evals;
    cands = NULL;
    evals = NULL;
    st->stage = STATE_STAGE_EVALUATE;
out:
    if (cands) {
        for (size_t i = 0; i < ncand; i++)
            free(cands[i].text);
        free(cands);
    }
    free(evals);
    free(texts);
    anonymize_names_free(ns);
    return rc;
}
