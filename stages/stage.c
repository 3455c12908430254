#include "stages/stage.h"

#include "pipeline/base/hash.h"
#include "stages/aggregate.h"
#include "stages/anonymize.h"
#include "stages/converge.h"
#include "stages/evaluate.h"
#include "stages/propose.h"

#include <stdlib.h>
#include <string.h>

stage_ctx stage_ctx_none(void)
{
    stage_ctx c = {0};

    c.fit_p_g = c.fit_p_v = c.fit_lambda = c.fit_beta = -1;
    return c;
}

/* ---- requests ---------------------------------------------------------- */

void stage_requests_release(stage_requests *list)
{
    if (!list)
        return;
    for (size_t i = 0; i < list->n; i++) {
        stage_request *r = &list->items[i];

        for (size_t k = 0; k < r->nmessages; k++)
            free(r->messages[k].content);
        free(r->json_schema);
    }
    free(list->items);
    list->items = NULL;
    list->n = 0;
}

stage_request *stage_requests_add(stage_requests *list)
{
    stage_request *v = realloc(list->items, (list->n + 1) * sizeof *v);

    if (!v)
        return NULL;
    list->items = v;
    memset(&v[list->n], 0, sizeof v[list->n]);
    return &v[list->n++];
}

int stage_request_add_message(stage_request *r, enum stage_role role,
                              const char *content)
{
    char *c;

    if (r->nmessages >= STAGE_MAX_MESSAGES)
        return NSED_EINVAL;
    c = strdup(content ? content : "");
    if (!c)
        return NSED_ENOMEM;
    r->messages[r->nmessages].role = role;
    r->messages[r->nmessages++].content = c;
    return 0;
}

const char *stage_kind_name(enum stage_kind k)
{
    switch (k) {
    case STAGE_KIND_PROPOSE: return "propose";
    case STAGE_KIND_EVALUATE: return "evaluate";
    case STAGE_KIND_REPAIR: return "repair";
    }
    return "?";
}

const char *stage_role_name(enum stage_role r)
{
    switch (r) {
    case STAGE_ROLE_SYSTEM: return "system";
    case STAGE_ROLE_USER: return "user";
    case STAGE_ROLE_ASSISTANT: return "assistant";
    }
    return "?";
}

int stage_render_system(const workflow *wf, const state_seat *seat, buf *out)
{
    workflow_prompt_var vars[] = {
        {"persona", seat->persona},
        {"role", seat->role},
    };

    return workflow_prompt_render(wf->prompts.system, vars, 2, out);
}

/* ---- seeds ------------------------------------------------------------- */

static void put_u64(uint8_t out[8], uint64_t v)
{
    for (int i = 0; i < 8; i++)
        out[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_u64(const uint8_t in[8])
{
    uint64_t v = 0;

    for (int i = 0; i < 8; i++)
        v |= (uint64_t)in[i] << (8 * i);
    return v;
}

/* SHA-256 over length-prefixed fields: purpose, run seed, question id,
 * round, then the 64-bit extras. */
static int digest(const char *purpose, uint64_t run_seed, const char *qid,
                  int64_t round, const uint64_t *extra, size_t nextra,
                  uint8_t out[HASH_LEN])
{
    hash_ctx *h = hash_new();
    uint8_t b[8];

    if (!h)
        return NSED_ENOMEM;
    hash_update_field(h, purpose, strlen(purpose));
    put_u64(b, run_seed);
    hash_update_field(h, b, 8);
    hash_update_field(h, qid, strlen(qid));
    put_u64(b, (uint64_t)round);
    hash_update_field(h, b, 8);
    for (size_t i = 0; i < nextra; i++) {
        put_u64(b, extra[i]);
        hash_update_field(h, b, 8);
    }
    hash_final(h, out);
    hash_free(h);
    return 0;
}

int stage_seed(uint64_t run_seed, const char *qid, int round, size_t seat,
               enum stage_kind kind, int sample, uint64_t *out)
{
    uint64_t extra[3] = {seat, (uint64_t)kind, (uint64_t)sample};
    uint8_t d[HASH_LEN];
    int rc = digest("nsed-seed", run_seed, qid, round, extra, 3, d);

    if (rc)
        return rc;
    *out = get_u64(d) & (UINT64_MAX >> 1);
    return 0;
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

int stage_rng_init(stage_rng *r, const char *purpose, uint64_t run_seed,
                   const char *qid, int round, size_t seat)
{
    uint64_t extra[1] = {seat};
    uint8_t d[HASH_LEN];
    int rc = digest(purpose, run_seed, qid, round, extra, 1, d);

    if (rc)
        return rc;
    for (int i = 0; i < 4; i++)
        r->s[i] = get_u64(d + 8 * i);
    /* xoshiro must not start from all zeros (one chance in 2^256) */
    if (!(r->s[0] | r->s[1] | r->s[2] | r->s[3]))
        r->s[0] = 1;
    return 0;
}

uint64_t stage_rng_next(stage_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;

    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

uint64_t stage_rng_below(stage_rng *r, uint64_t n)
{
    /* reject the top partial bucket so every residue is equally likely */
    uint64_t limit = UINT64_MAX - UINT64_MAX % n, x;

    do {
        x = stage_rng_next(r);
    } while (x >= limit);
    return x % n;
}

int stage_fence(const char *purpose, uint64_t run_seed, const char *qid,
                int round, const char *const *texts, size_t ntexts,
                char out[TEXT_FENCE_HEX + 1])
{
    static const char hex[] = "0123456789abcdef";

    for (uint64_t attempt = 0; attempt < 256; attempt++) {
        uint8_t d[HASH_LEN];
        char f[TEXT_FENCE_HEX + 1];
        bool clash = false;
        int rc = digest(purpose, run_seed, qid, round, &attempt, 1, d);

        if (rc)
            return rc;
        for (int i = 0; i < TEXT_FENCE_HEX / 2; i++) {
            f[2 * i] = hex[d[i] >> 4];
            f[2 * i + 1] = hex[d[i] & 15];
        }
        f[TEXT_FENCE_HEX] = '\0';
        for (size_t k = 0; k < ntexts && !clash; k++)
            clash = texts[k] && strstr(texts[k], f);
        if (!clash) {
            memcpy(out, f, sizeof f);
            return 0;
        }
    }
    return NSED_EEXIST;
}

/* ---- dispatch ---------------------------------------------------------- */

int stage_plan(const state *st, const workflow *wf, stage_requests *out)
{
    stage_requests none = {0};

    switch (st->stage) {
    case STATE_STAGE_PROPOSE:
        return propose_plan(st, wf, out);
    case STATE_STAGE_EVALUATE:
        return evaluate_plan(st, wf, out);
    case STATE_STAGE_ANONYMIZE:
    case STATE_STAGE_AGGREGATE:
    case STATE_STAGE_CONVERGE:
    case STATE_STAGE_FINISHED:
        break;
    }
    *out = none;
    return 0;
}

int stage_reduce(state *st, const workflow *wf, const stage_ctx *ctx,
                 const stage_response *resps, size_t n, nsed_err *err)
{
    switch (st->stage) {
    case STATE_STAGE_PROPOSE:
        return propose_reduce(st, wf, resps, n, err);
    case STATE_STAGE_EVALUATE:
        return evaluate_reduce(st, wf, resps, n, err);
    case STATE_STAGE_ANONYMIZE:
    case STATE_STAGE_AGGREGATE:
    case STATE_STAGE_CONVERGE:
        if (n)
            return nsed_error(err, NSED_EINVAL, "question %s: stage %s makes "
                              "no calls but got %zu responses", st->qid,
                              state_stage_name(st->stage), n);
        break;
    case STATE_STAGE_FINISHED:
        return nsed_error(err, NSED_EINVAL, "question %s is finished",
                          st->qid);
    }
    switch (st->stage) {
    case STATE_STAGE_ANONYMIZE:
        return anonymize_run(st, wf, err);
    case STATE_STAGE_AGGREGATE:
        return aggregate_run(st, wf, ctx, err);
    case STATE_STAGE_CONVERGE:
        return converge_run(st, wf, ctx, err);
    case STATE_STAGE_PROPOSE:
    case STATE_STAGE_EVALUATE:
    case STATE_STAGE_FINISHED:
        break;
    }
    return 0;
}
