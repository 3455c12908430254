/* request.h -- the model calls a stage asks for and the replies it gets.
 *
 * stage_plan (stage.h) fills a stage_requests list; the runner sends each
 * request and hands one stage_response per request back to stage_reduce.
 * The stages that make calls (propose, evaluate) build their requests with
 * the helpers below.
 */
#ifndef NSED_STAGES_REQUEST_H
#define NSED_STAGES_REQUEST_H

#include "pipeline/base/buf.h"
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
    STAGE_KIND_REPAIR,   /* follow-up turn after an unusable evaluation */
    STAGE_KIND_SELFCONS, /* a sample of the self-consistency baseline */
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
    int sample;      /* 0; i + 1 for sample i of the self-consistency
                        baseline (selfcons.h) */
    uint64_t seed;   /* seed_call(run seed, question, round, seat, kind,
                        sample) (seed.h), below 2^63 so it fits a JSON
                        int64; send it as the request's "seed" when the
                        model's sampling has a seed configured */
    stage_message messages[STAGE_MAX_MESSAGES];
    size_t nmessages;
    char *json_schema; /* evaluate/repair for a model with
                          structured_output: compact JSON Schema to send as
                          response_format {type: json_schema, json_schema:
                          {name: STAGE_SCHEMA_NAME, schema: ..., strict:
                          true}}; else NULL */
    bool optional;     /* the question can do without this call (a repair
                          turn): when it fails for any reason, after the
                          gateway's retries, the runner hands the failure
                          to reduce with infra false -- the seat abstains
                          this round -- instead of leaving the question
                          incomplete */
    long max_tokens;   /* > 0: the completion budget to send instead of
                          the model's sampling.max_tokens (a repair after
                          a reply cut at max_tokens); 0: the model's */
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
    int sample;           /* as in the request */
    bool ok;              /* a reply arrived (content may still be empty) */
    bool infra;           /* !ok because of infrastructure (network, HTTP
                             errors, timeouts after every retry): the seat
                             counts as lost and the question as degraded;
                             always false for an optional request */
    const char *content;  /* ok: the reply text (NULL counts as "") */
    const char *error;    /* !ok: why (may be NULL) */
    bool truncated;       /* ok: the server's finish_reason was "length",
                             the reply was cut at max_tokens */
    int64_t prompt_tokens;
    int64_t completion_tokens;
    double cost_usd;
} stage_response;

/* Free every request of the list and reset it. NULL is ignored. */
void stage_requests_release(stage_requests *list);

/* Append a new zeroed request to the list; returns it or NULL when out of
 * memory (the list is unchanged then). */
NSED_MUST_CHECK stage_request *stage_requests_add(stage_requests *list);

/* Add a message to a request (content copied; NULL counts as ""). Returns
 * 0, NSED_ENOMEM, or NSED_EINTERNAL when the request already holds
 * STAGE_MAX_MESSAGES (a bug in the stage building it). */
NSED_MUST_CHECK int stage_request_add_message(stage_request *r,
                                              enum stage_role role,
                                              const char *content);

/* Name of a kind / role as used in logs and chat APIs ("propose", ...;
 * "system", "user", "assistant"). */
const char *stage_kind_name(enum stage_kind k);
const char *stage_role_name(enum stage_role r);

/* The system message of a seat: wf->prompts.system rendered with the
 * seat's persona and role, appended to out. Same returns as
 * workflow_prompt_render. */
NSED_MUST_CHECK int stage_render_system(const workflow *wf,
                                        const state_seat *seat, buf *out);

/* Add the two messages of a call made for seat: its system message
 * (stage_render_system) and user. Same returns as stage_render_system and
 * stage_request_add_message. */
NSED_MUST_CHECK int stage_request_add_chat(stage_request *r, const workflow *wf,
                                           const state_seat *seat,
                                           const char *user);

#endif
