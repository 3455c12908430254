/* gateway_int.h -- private to the gateway (gateway.c, gateway_json.c): the
 * JSON side of a call, kept apart from the event loop so each can be read
 * on its own. */
#ifndef NSED_GATEWAY_INT_H
#define NSED_GATEWAY_INT_H

#include "pipeline/gateway/gateway.h"

#include <stdbool.h>
#include <stddef.h>

/* Check req against wf (model index, messages, schema and its name).
 * Returns 0 or NSED_EINVAL with err saying what is wrong. */
NSED_MUST_CHECK int gw_check_request(const workflow *wf,
                                     const gateway_request *req,
                                     nsed_err *err);

/* The seed sent with req to model m (meaningful only when either has
 * one): the call's seed when only it has one, sampling.seed when only the
 * model has one, and when both do, a 63-bit mix of the two, so that the
 * value of sampling.seed matters while every call keeps its own seed. */
int64_t gw_call_seed(const workflow_model *m, const gateway_request *req);

/* Fill call with the semantic parts of req for model m (borrowed
 * pointers). The schema is included only when it is sent, i.e. when the
 * model has structured_output. */
void gw_ledger_call(const workflow_model *m, const gateway_request *req,
                    ledger_call *call);

/* Build the chat-completions body for req on model m into *out (malloc'd,
 * caller frees) and its length into *len. Returns 0, NSED_ETOOBIG (over
 * GATEWAY_MAX_REQUEST_BYTES), NSED_ENOMEM. */
NSED_MUST_CHECK int gw_build_body(const workflow_model *m,
                                  const gateway_request *req, char **out,
                                  size_t *len, nsed_err *err);

/* A parsed 2xx reply; strings are malloc'd (gw_reply_release). */
typedef struct gw_reply {
    char *content;
    char *finish_reason; /* NULL when absent */
    gateway_usage usage;
} gw_reply;

void gw_reply_release(gw_reply *r);

/* Parse a chat-completion reply body. Returns 0 with *out filled, or
 * NSED_EINVAL with why (a short phrase, NUL-terminated) describing what is
 * unusable: not JSON, no choices, null content, bad usage; or
 * NSED_ENOMEM. */
NSED_MUST_CHECK int gw_parse_reply(const char *body, size_t len, gw_reply *out,
                                   char *why, size_t whylen);

/* The server's explanation in an error body: error.message of the OpenAI
 * shape (or a string "error", or a top-level "message") when the body is a
 * JSON object, else the start of the body when it is text. Control
 * characters become spaces, bytes that are not UTF-8 U+FFFD, white space
 * is trimmed, and the text is capped at GATEWAY_SERVER_MSG_MAX bytes (on a
 * UTF-8 boundary). out gets "" when there is nothing readable. */
void gw_server_message(const char *body, size_t len, char *out,
                       size_t outlen);

/* True when an error body says the request can never succeed whatever
 * its status: the prompt passes the model's context (OpenAI's
 * "context_length_exceeded", vLLM's "maximum context length", llama.cpp's
 * "exceed_context_size_error" / "exceeds the available context size") or
 * the model is unknown ("model_not_found"). Reads at most the first 8 KiB,
 * case-insensitively. */
bool gw_body_permanent(const char *body, size_t len);

/* Replace every occurrence of secret (when non-NULL and non-empty) in the
 * NUL-terminated text s (of buffer size cap) with "[REDACTED]", truncating
 * if the result would not fit. */
void gw_redact(char *s, size_t cap, const char *secret);

/* Replace every occurrence of secret (when non-NULL and non-empty) in the
 * malloc'd text *s with "[REDACTED]", without a cap: *s is replaced by a
 * new malloc'd string and the old one wiped before it is freed. Nothing
 * changes when secret does not occur. Returns 0, or NSED_ENOMEM with *s
 * unchanged. */
NSED_MUST_CHECK int gw_redact_text(char **s, const char *secret);

/* Print the dry-run line for one request: {"model_id", "url",
 * "api_key_env", "ledger_key", "body"}. Returns 0, NSED_EIO or
 * NSED_ENOMEM. */
NSED_MUST_CHECK int gw_dry_run_line(FILE *f, const workflow_model *m,
                                    const char *url,
                                    const uint8_t key[HASH_LEN],
                                    const char *body);

#endif
