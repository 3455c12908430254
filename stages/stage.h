/* stage.h -- the contract between the stages and the runner.
 *
 * A stage is a pair of pure functions over a state (state.h):
 *
 *     stage_plan(state)               -> requests (model calls to make)
 *     stage_reduce(state, responses)  -> the state, updated
 *
 * No I/O, no clock, no global state: everything random derives from
 * (run seed, question id, round, seat) through SHA-256 into a local
 * xoshiro256** generator, so a state and the replies to its requests
 * determine the next state exactly (replay from the call ledger is exact).
 *
 * The runner's loop for one question:
 *
 *     while (st->stage != STATE_STAGE_FINISHED) {
 *         stage_plan(st, wf, &reqs);           // may be empty
 *         send every request, collect one response per request;
 *         stage_reduce(st, wf, ctx, resps, n); // advances when complete
 *         checkpoint state_to_json(st);
 *     }
 *
 * Stages that make no calls (anonymize, aggregate, converge) plan no
 * requests and do their work in stage_reduce with n == 0. A stage that
 * makes calls advances only once every seat is resolved: responses may be
 * handed over in several batches, and stage_plan only asks again for what
 * is still unanswered (evaluate also plans the repair turns its reduce
 * asked for). When converge starts a new round it frees the round before
 * the previous one; store a finished round first (state_round_to_json of
 * state_round_get(st, r) right after the converge reduce).
 */
#ifndef NSED_STAGES_STAGE_H
#define NSED_STAGES_STAGE_H

#include "pipeline/base/err.h"
#include "pipeline/workflow/workflow.h"
#include "stages/state.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Bytes of one rendered prompt message; a bigger one fails the plan with
 * NSED_ETOOBIG. */
#define STAGE_PROMPT_MAX ((size_t)64 << 20)
/* Messages in one request: system, user, and for a repair the assistant's
 * reply and the repair user message. */
#define STAGE_MAX_MESSAGES 4
/* The name given with the evaluation JSON schema (response_format). */
#define STAGE_SCHEMA_NAME "nsed_evaluation"

enum stage_kind {
    STAGE_KIND_PROPOSE,
    STAGE_KIND_EVALUATE,
    STAGE_KIND_REPAIR, /* follow-up turn after an unusable evaluation */
};

enum stage_role {
    STAGE_ROLE_SYSTEM,
    STAGE_ROLE_USER,
    STAGE_ROLE_ASSISTANT,
};

typedef struct stage_message {
    enum stage_role role;
    char *content; /* owned by the request */
} stage_message;

/* One model call. Everything is owned by the request. */
typedef struct stage_request {
    enum stage_kind kind;
    size_t seat;     /* seat index in the state */
    size_t model;    /* index into wf->models */
    int round;
    int sample;      /* 0; reserved for repeated sampling of one seat */
    uint64_t seed;   /* stage_seed(run seed, question, round, seat, kind,
                        sample), below 2^63 so it fits a JSON int64; send it
                        as the request's "seed" when the model's sampling
                        has a seed configured */
    stage_message messages[STAGE_MAX_MESSAGES];
    size_t nmessages;
    char *json_schema; /* evaluate/repair for a model with
                          structured_output: compact JSON Schema to send as
                          response_format {type: json_schema, json_schema:
                          {name: STAGE_SCHEMA_NAME, schema: ..., strict:
                          true}}; else NULL */
} stage_request;

typedef struct stage_requests {
    stage_request *items;
    size_t n;
} stage_requests;

/* What came back for one request. Strings are borrowed: reduce copies what
 * it keeps. */
typedef struct stage_response {
    enum stage_kind kind; /* as in the request */
    size_t seat;          /* as in the request */
    int round;            /* as in the request */
    bool ok;              /* a reply arrived (content may still be empty) */
    bool infra;           /* !ok because of infrastructure (network, HTTP
                             errors, timeouts after every retry): the seat
                             counts as lost and the question as degraded */
    const char *content;  /* ok: the reply text (NULL counts as "") */
    const char *error;    /* !ok: why (may be NULL) */
    int64_t prompt_tokens;
    int64_t completion_tokens;
    double cost_usd;
} stage_response;

/* What the caller knows beyond the workflow (all optional). */
typedef struct stage_ctx {
    /* Per-model reliability weights (index = wf->models index) used by
     * aggregate when scoring.reliability_weighting is on; NULL or a
     * non-finite or negative entry means 1.0. */
    const double *reliability;
    size_t nreliability;
    /* Efficiency-fatigue parameters fitted from telemetry; a negative
     * value means "not fitted" (see converge.h for the order of sources). */
    double fit_p_g, fit_p_v, fit_lambda, fit_beta;
} stage_ctx;

/* A ctx with nothing known (every fit -1, no reliability). */
stage_ctx stage_ctx_none(void);

/* The requests the question's current stage needs now (possibly none).
 * Returns 0 and fills *out (release with stage_requests_release; *out is
 * overwritten, not released first); NSED_ETOOBIG when a prompt would pass
 * STAGE_PROMPT_MAX; NSED_EINVAL when a prompt template holds an unknown
 * placeholder (a workflow built by hand; loaded ones never do);
 * NSED_ENOMEM. A finished question plans nothing. */
int stage_plan(const state *st, const workflow *wf, stage_requests *out);

/* Feed n responses to the current stage (n == 0 for anonymize, aggregate
 * and converge) and advance the stage when it is complete. Returns 0;
 * NSED_EINVAL (err says why) when a response does not answer a request the
 * current plan would make (wrong kind, round or seat, a seat given twice),
 * when a computing stage gets responses, or when the question is finished;
 * NSED_ENOMEM. On any failure st is unchanged. */
int stage_reduce(state *st, const workflow *wf, const stage_ctx *ctx,
                 const stage_response *resps, size_t n, nsed_err *err);

/* Free every request of the list and reset it. NULL is ignored. */
void stage_requests_release(stage_requests *list);

/* Append a new zeroed request to the list; returns it or NULL when out of
 * memory (the list is unchanged then). */
stage_request *stage_requests_add(stage_requests *list);

/* Add a message to a request (content copied). Returns 0 or NSED_ENOMEM. */
int stage_request_add_message(stage_request *r, enum stage_role role,
                              const char *content);

/* Name of a kind / role as used in logs and chat APIs ("propose", ...;
 * "system", "user", "assistant"). */
const char *stage_kind_name(enum stage_kind k);
const char *stage_role_name(enum stage_role r);

/* The derived per-call seed: the first 8 bytes of SHA-256 over
 * ("nsed-seed", run seed, question id, round, seat, kind, sample), top bit
 * cleared. Returns 0 and sets *out or NSED_ENOMEM. */
int stage_seed(uint64_t run_seed, const char *qid, int round, size_t seat,
               enum stage_kind kind, int sample, uint64_t *out);

/* Local PRNG (xoshiro256**). */
typedef struct stage_rng {
    uint64_t s[4];
} stage_rng;

/* Seed r from SHA-256 over (purpose, run seed, question id, round, seat).
 * Returns 0 or NSED_ENOMEM. */
int stage_rng_init(stage_rng *r, const char *purpose, uint64_t run_seed,
                   const char *qid, int round, size_t seat);
uint64_t stage_rng_next(stage_rng *r);
/* Uniform in [0, n) without modulo bias; n > 0. */
uint64_t stage_rng_below(stage_rng *r, uint64_t n);

/* A fence nonce for blocks of (question, round, purpose): TEXT_FENCE_HEX
 * lower-case hex digits from SHA-256 over (purpose, run seed, question id,
 * round, attempt), taking the first attempt whose digits occur in none of
 * texts[0..ntexts) (NULL entries are skipped), so no text can already
 * contain the fence. Returns 0 and fills out; NSED_EEXIST when 256
 * attempts all occur in the texts (which no real text can arrange);
 * NSED_ENOMEM. */
int stage_fence(const char *purpose, uint64_t run_seed, const char *qid,
                int round, const char *const *texts, size_t ntexts,
                char out[TEXT_FENCE_HEX + 1]);

/* The system message of a seat: wf->prompts.system rendered with the
 * seat's persona and role, appended to out. Same returns as
 * workflow_prompt_render. */
int stage_render_system(const workflow *wf, const state_seat *seat,
                        buf *out);

#endif
