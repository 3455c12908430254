/* bench_prefix.c -- how much of each prompt a serving engine's prefix
 * cache could reuse (figure 6 of the benchmark).
 *
 * The call ledger keeps replies, not prompts, so the prompts are produced
 * again here: questions are driven through the real stages and a real
 * gateway (no store) against nsed-sim, one question at a time, and every
 * request is recorded as the byte string role, 0x1e, content, 0x1f per
 * message -- what a chat template turns into the token sequence the engine
 * caches. The reuse of a prompt is the longest prefix it shares with any
 * earlier prompt to the same model: an engine with an unbounded prefix
 * cache (vLLM's automatic prefix caching, SGLang's radix cache) reuses
 * that much. Questions interleave in a real run, but prompts of different
 * questions share only the system prompt, so the order of questions does
 * not change the figure beyond the first prompt.
 */
#include "bench/bench.h"

#include "pipeline/broker/broker.h"
#include "pipeline/base/buf.h"
#include "pipeline/gateway/gateway.h"
#include "pipeline/questions/questions.h"
#include "stages/stage.h"
#include "stages/state.h"

#include <stdlib.h>
#include <string.h>

/* Bytes of one recorded prompt: the stages cap a message at
 * STAGE_PROMPT_MAX; a request has at most STAGE_MAX_MESSAGES. */
#define PROMPT_BYTES_MAX (STAGE_MAX_MESSAGES * (STAGE_PROMPT_MAX + 64))
/* Prompts recorded per run (a few per call; the benchmark sends some
 * thousands). */
#define PROMPTS_MAX ((size_t)1 << 20)

/* ---- the reuse computation ------------------------------------------------ */

typedef struct entry {
    const char *s;
    size_t len;
    size_t order; /* position in sending order */
} entry;

static int cmp_entry(const void *a, const void *b)
{
    const entry *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->s, y->s, n);

    if (c)
        return c;
    if (x->len != y->len)
        return x->len < y->len ? -1 : 1;
    return x->order < y->order ? -1 : x->order > y->order;
}

static size_t lcp(const entry *a, const entry *b)
{
    size_t n = a->len < b->len ? a->len : b->len, i = 0;

    while (i < n && a->s[i] == b->s[i])
        i++;
    return i;
}

/* In lexicographic order the common prefix of two strings is the minimum
 * over the adjacent pairs between them, so it only shrinks with distance:
 * the best earlier string for s is the nearest earlier-sent one on its
 * left or on its right. Those are the nearest smaller `order` on each
 * side, found with one monotonic stack per direction. best[i] gets the
 * reuse of s[i]. */
static int prefix_best(const char *const *s, const size_t *len, size_t n,
                       size_t *best)
{
    entry *e = NULL;
    size_t *stack = NULL, top;

    memset(best, 0, n * sizeof *best);
    if (n == 0)
        return 0;
    e = malloc(n * sizeof *e);
    stack = malloc(n * sizeof *stack);
    if (!e || !stack) {
        free(e);
        free(stack);
        return NSED_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        e[i].s = s[i];
        e[i].len = len[i];
        e[i].order = i;
    }
    qsort(e, n, sizeof *e, cmp_entry);
    for (int dir = 0; dir < 2; dir++) {
        top = 0;
        for (size_t k = 0; k < n; k++) {
            size_t p = dir == 0 ? k : n - 1 - k;

            while (top > 0 && e[stack[top - 1]].order > e[p].order)
                top--;
            if (top > 0) {
                size_t l = lcp(&e[p], &e[stack[top - 1]]);

                if (l > best[e[p].order])
                    best[e[p].order] = l;
            }
            stack[top++] = p;
        }
    }
    free(e);
    free(stack);
    return 0;
}

int bench_prefix_reused(const char *const *s, const size_t *len, size_t n,
                        uint64_t *reused)
{
    size_t *best = malloc((n ? n : 1) * sizeof *best);
    uint64_t sum = 0;
    int rc;

    if (!best)
        return NSED_ENOMEM;
    rc = prefix_best(s, len, n, best);
    for (size_t i = 0; !rc && i < n; i++)
        sum += best[i];
    free(best);
    if (!rc)
        *reused = sum;
    return rc;
}

/* ---- recording ------------------------------------------------------------ */

typedef struct recorded {
    char *bytes; /* the prompt, then its reply as an assistant message */
    size_t len;
    size_t plen; /* of the prompt */
    size_t model;
    enum bench_prefix_kind kind;
} recorded;

typedef struct driver {
    const workflow *wf;
    gateway *gw;
    recorded *rec;
    size_t nrec, arec;
    nsed_err *err;
} driver;

static int record(driver *d, const stage_request *rq)
{
    buf b;
    recorded *r;
    int rc = 0;

    if (d->nrec == PROMPTS_MAX)
        return nsed_error(d->err, NSED_ETOOBIG, "more than %zu prompts",
                          PROMPTS_MAX);
    if (d->nrec == d->arec) {
        size_t na = d->arec ? 2 * d->arec : 1024;

        r = realloc(d->rec, na * sizeof *r);
        if (!r)
            return nsed_error(d->err, NSED_ENOMEM, "out of memory");
        d->rec = r;
        d->arec = na;
    }
    buf_init(&b, PROMPT_BYTES_MAX);
    for (size_t k = 0; k < rq->nmessages && !rc; k++) {
        rc = buf_adds(&b, stage_role_name(rq->messages[k].role));
        if (!rc)
            rc = buf_addc(&b, 0x1e);
        if (!rc)
            rc = buf_adds(&b, rq->messages[k].content);
        if (!rc)
            rc = buf_addc(&b, 0x1f);
    }
    if (rc) {
        buf_release(&b);
        return nsed_error(d->err, rc, "cannot record a prompt");
    }
    r = &d->rec[d->nrec];
    r->len = b.len;
    r->plen = b.len;
    r->bytes = buf_detach(&b, NULL);
    if (!r->bytes)
        return nsed_error(d->err, NSED_ENOMEM, "out of memory");
    r->model = rq->model;
    switch (rq->kind) {
    case STAGE_KIND_PROPOSE:
    case STAGE_KIND_SELFCONS: /* a round-0 proposal prompt */
        r->kind = rq->round == 0 ? BENCH_PREFIX_PROPOSE0 : BENCH_PREFIX_REVISE;
        break;
    case STAGE_KIND_EVALUATE:
        r->kind = BENCH_PREFIX_EVALUATE;
        break;
    case STAGE_KIND_REPAIR:
        r->kind = BENCH_PREFIX_REPAIR;
        break;
    }
    d->nrec++;
    return 0;
}

/* ---- driving one question ------------------------------------------------- */

typedef struct pending {
    stage_response *resps;
    char **contents;
    size_t outstanding;
} pending;

typedef struct call_ref {
    pending *p;
    size_t idx;
} call_ref;

static void on_result(const gateway_result *res, void *user)
{
    call_ref *c = user;
    stage_response *r = &c->p->resps[c->idx];

    if (res->code == 0) {
        c->p->contents[c->idx] = strdup(res->content);
        r->ok = c->p->contents[c->idx] != NULL;
        r->content = c->p->contents[c->idx];
        r->prompt_tokens = res->usage.prompt_tokens;
        r->completion_tokens = res->usage.completion_tokens;
        r->cost_usd = res->cost_usd;
    }
    if (!r->ok) {
        r->infra = true;
        r->error = "call failed";
    }
    c->p->outstanding--;
}

/* Send every request of reqs, wait for all replies, and reduce. */
static int run_stage(driver *d, state *st, const stage_ctx *ctx,
                     const stage_requests *reqs)
{
    size_t n = reqs->n, base = d->nrec, nrecorded = 0;
    pending p = {0};
    call_ref *refs = NULL;
    int rc = 0;

    p.resps = calloc(n, sizeof *p.resps);
    p.contents = calloc(n, sizeof *p.contents);
    refs = calloc(n, sizeof *refs);
    if (!p.resps || !p.contents || !refs) {
        rc = nsed_error(d->err, NSED_ENOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n && !rc; i++) {
        const stage_request *rq = &reqs->items[i];
        gateway_message msgs[STAGE_MAX_MESSAGES];
        gateway_request gr = {0};

        rc = record(d, rq);
        if (rc)
            break;
        nrecorded++;
        for (size_t k = 0; k < rq->nmessages; k++) {
            msgs[k].role = stage_role_name(rq->messages[k].role);
            msgs[k].content = rq->messages[k].content;
        }
        p.resps[i].kind = rq->kind;
        p.resps[i].seat = rq->seat;
        p.resps[i].round = rq->round;
        refs[i].p = &p;
        refs[i].idx = i;
        gr.model = rq->model;
        gr.messages = msgs;
        gr.nmessages = rq->nmessages;
        gr.schema = rq->json_schema;
        gr.schema_name = rq->json_schema ? STAGE_SCHEMA_NAME : NULL;
        gr.has_seed = d->wf->models[rq->model].sampling.has_seed;
        gr.seed = (int64_t)rq->seed;
        gr.scope = st->qid;
        gr.seat = (int)rq->seat;
        gr.round = rq->round;
        gr.sample = rq->sample;
        rc = gateway_submit(d->gw, &gr, on_result, &refs[i], d->err);
        if (!rc)
            p.outstanding++;
    }
    /* Submitted calls report even after a failure: collect them before
     * the responses go away. */
    while (p.outstanding > 0) {
        int prc = gateway_poll(d->gw, 100, d->err);

        if (prc && !rc)
            rc = prc;
    }
    /* an engine keeps the generated tokens of a sequence too: a later
     * prompt that continues this conversation reuses the reply */
    for (size_t i = 0; i < nrecorded && !rc; i++) {
        recorded *r = &d->rec[base + i];
        buf b;

        if (!p.contents[i])
            continue;
        buf_init(&b, 2 * PROMPT_BYTES_MAX);
        rc = buf_add(&b, r->bytes, r->len);
        if (!rc)
            rc = buf_adds(&b, "assistant");
        if (!rc)
            rc = buf_addc(&b, 0x1e);
        if (!rc)
            rc = buf_adds(&b, p.contents[i]);
        if (!rc)
            rc = buf_addc(&b, 0x1f);
        if (rc) {
            buf_release(&b);
            rc = nsed_error(d->err, rc, "cannot record a reply");
            break;
        }
        free(r->bytes);
        r->len = b.len;
        r->bytes = buf_detach(&b, NULL);
        if (!r->bytes)
            rc = nsed_error(d->err, NSED_ENOMEM, "out of memory");
    }
    if (!rc)
        rc = stage_reduce(st, d->wf, ctx, p.resps, n, d->err);
out:
    for (size_t i = 0; p.contents && i < n; i++)
        free(p.contents[i]);
    free(p.contents);
    free(p.resps);
    free(refs);
    return rc;
}

static int run_question(driver *d, const question *q)
{
    state_question sq = {.id = q->id, .text = q->text,
                         .reference = q->answer,
                         .tags = (const char *const *)q->tags,
                         .ntags = q->ntags};
    stage_ctx ctx = stage_ctx_none();
    broker_team team;
    state *st = NULL;
    int rc;

    rc = broker_choose(d->wf, sq.tags, sq.ntags, &team, d->err);
    if (!rc)
        rc = state_new(d->wf, &sq, team.seats, team.nseats, &st, d->err);
    while (!rc && st->stage != STATE_STAGE_FINISHED) {
        stage_requests reqs = {0};

        rc = stage_plan(st, d->wf, &reqs);
        if (rc) {
            nsed_error(d->err, rc, "%s: cannot plan: %s", q->id,
                       nsed_strerror(rc));
            break;
        }
        if (reqs.n == 0)
            rc = stage_reduce(st, d->wf, &ctx, NULL, 0, d->err);
        else
            rc = run_stage(d, st, &ctx, &reqs);
        stage_requests_release(&reqs);
    }
    state_free(st);
    return rc;
}

/* ---- the measurement ------------------------------------------------------ */

/* Per model, the reuse of each of its prompts against the earlier ones
 * (of any kind); summed per model and per kind. */
static int tally(const driver *d, bench_prefix_result *res)
{
    size_t cap = d->nrec ? d->nrec : 1;
    const char **s = malloc(cap * sizeof *s);
    size_t *len = malloc(cap * sizeof *len), *best = malloc(cap * sizeof *best);
    size_t *idx = malloc(cap * sizeof *idx);
    int rc = NSED_ENOMEM;

    if (!s || !len || !best || !idx)
        goto out;
    for (size_t m = 0; m < res->nmodels; m++) {
        size_t n = 0;

        for (size_t i = 0; i < d->nrec; i++) {
            if (d->rec[i].model != m)
                continue;
            s[n] = d->rec[i].bytes;
            len[n] = d->rec[i].len;
            idx[n] = i;
            n++;
        }
        rc = prefix_best(s, len, n, best);
        if (rc)
            goto out;
        for (size_t k = 0; k < n; k++) {
            bench_prefix_model *pm = &res->models[m];
            bench_prefix_model *pk = &res->kinds[d->rec[idx[k]].kind];
            size_t plen = d->rec[idx[k]].plen;
            size_t used = best[k] < plen ? best[k] : plen;

            pm->prompts++;
            pm->bytes += plen;
            pm->reused += used;
            pk->prompts++;
            pk->bytes += plen;
            pk->reused += used;
        }
    }
    rc = 0;
out:
    free(s);
    free(len);
    free(best);
    free(idx);
    return rc;
}

void bench_prefix_release(bench_prefix_result *r)
{
    if (!r)
        return;
    free(r->models);
    memset(r, 0, sizeof *r);
}

int bench_prefix_measure(const workflow *wf, const char *questions,
                         size_t nq, bench_prefix_result *out, nsed_err *err)
{
    driver d = {.wf = wf, .err = err};
    bench_prefix_result res = {0};
    questions_reader *qr = NULL;
    gateway_opts go = {.jitter_seed = wf->seed};
    question q = {0};
    int rc;

    rc = gateway_new(wf, NULL, &go, &d.gw, err);
    if (!rc)
        rc = questions_reader_open(questions, 0, &qr, err);
    while (!rc && res.questions < nq) {
        rc = questions_reader_next(qr, &q, NULL, err);
        if (rc == NSED_ENOTFOUND) {
            rc = 0;
            break;
        }
        if (!rc)
            rc = run_question(&d, &q);
        question_release(&q);
        res.questions++;
    }
    if (rc)
        goto out;
    res.nmodels = wf->nmodels;
    res.models = calloc(wf->nmodels, sizeof *res.models);
    if (!res.models) {
        rc = nsed_error(err, NSED_ENOMEM, "out of memory");
        goto out;
    }
    rc = tally(&d, &res);
    if (rc) {
        nsed_error(err, rc, "out of memory");
        goto out;
    }
    *out = res;
    res.models = NULL;
out:
    free(res.models);
    questions_reader_free(qr);
    gateway_free(d.gw);
    for (size_t i = 0; i < d.nrec; i++)
        free(d.rec[i].bytes);
    free(d.rec);
    return rc;
}
