/* gateway.h -- the LLM gateway: every chat-completion call of a run goes
 * through here.
 *
 * One gateway owns one libcurl multi handle and is driven by one thread:
 * the caller submits requests (gateway_submit) and calls gateway_poll in
 * its event loop; completion callbacks run from inside gateway_poll, and
 * nothing needs a lock. libcurl must have been initialised by the program
 * (curl_global_init in main) before gateway_new.
 *
 * What it does for every request:
 *   - Ledger first. When a store is given, the request's ledger key
 *     (ledger.h) is looked up at submit; a recorded call completes from
 *     the ledger without any network traffic.
 *   - Then the call cache. With a store and opts.cache, a key the store's
 *     ledger lacks is looked up in the cache shared across stores
 *     (cache.h); a hit completes the same way, and a copy of the record,
 *     marked from_cache, is buffered for the store's ledger like a
 *     network reply (so a later run of the store without the cache pays
 *     nothing either; a copy holds no concurrency slot: losing it costs
 *     nothing). A network success is buffered for the store's ledger and,
 *     once that commit is made (gateway_records_committed), written to the
 *     cache in a transaction of its own; a cache that cannot be written is
 *     logged once and the run goes on.
 *   - Per-model concurrency. At most wf->models[i].max_concurrency
 *     requests of a model hold a slot; the rest wait in a FIFO queue per
 *     model. A request holds its slot from its start until its reply is
 *     durable: while in flight and, once answered over the network with a
 *     store given, until its ledger record is committed (the poll's own
 *     commit, gateway_flush, or gateway_records_committed). So a process
 *     killed at any moment has paid for at most max_concurrency calls per
 *     model that a rerun sends again. Requests waiting for a retry do not
 *     hold a slot.
 *   - HTTP. POST {endpoint}/chat/completions with a JSON body (model,
 *     messages, temperature, top_p, max_tokens, seed, stop,
 *     response_format), "Authorization: Bearer KEY" when the model names
 *     an API key variable. Connections are reused through the one multi
 *     handle; https uses HTTP/2 with multiplexing when the server offers
 *     it; redirects are not followed; only http and https are allowed; TLS
 *     verification stays on. The model's connect and request timeouts
 *     apply per attempt; a body over wf->gateway.max_response_bytes aborts
 *     the transfer (an error, not retried).
 *   - Retries. Transport errors (refused, reset, timeout, partial body),
 *     HTTP 408, 429, 500, 502, 503, 504 and unusable 2xx bodies are
 *     retried with exponential backoff and full jitter: the delay before
 *     retry k (k = 0 for the first retry) is uniform in
 *     [0, min(retry_max_delay_ms, retry_base_delay_ms * 2^k)], and never
 *     shorter than a Retry-After header (seconds or an HTTP date). A
 *     request gives up after retry_max_attempts attempts (an unusable
 *     2xx body is one like any other transient failure) or
 *     when retry_max_total_s have passed since its clock started. Other
 *     4xx (and other 5xx), and any error body saying the prompt passes
 *     the model's context or the model is unknown, are not retried: one
 *     attempt, and the result carries the server's error.message. Of
 *     those, gateway_result.permanent marks the ones that would fail the
 *     same way on every later run (gateway_status_permanent and such
 *     bodies), as opposed to configuration trouble a user may fix.
 *   - Circuit breaker per model. It judges the endpoint, not a request:
 *     after breaker_failures consecutive failures of distinct requests
 *     (the first failed attempt of each, retryable kinds only; a success
 *     resets the count) the model is paused for breaker_cooldown_s (or a
 *     longer Retry-After): its queued and retrying requests wait without
 *     spending attempts; then one probe is let through, the oldest ready
 *     request that has not failed on its own (else the oldest), with the
 *     full request timeout, and its attempt is not spent from its
 *     request's retry_max_attempts. Only the probe's outcome decides:
 *     success closes the breaker, failure pauses the model again; late
 *     answers of requests sent before the pause change nothing. A
 *     request that keeps failing on a healthy endpoint fails alone.
 *     result.attempts and stats.attempts count libcurl's silent resends
 *     on reused connections too (what the server saw). Pausing is reported through the log
 *     callback. Paused time counts toward retry_max_total_s, so requests
 *     to a dead endpoint eventually fail: a request's clock starts at its
 *     first attempt, or when it first finds its model paused, whichever is
 *     earlier.
 *   - Accounting. Each result carries its usage and cost; gateway_stats
 *     sums them per model and in total.
 *   - Ledger commits. Successful network calls are recorded in the ledger
 *     in one store_write per gateway_poll (before their callbacks run, so
 *     every call a caller has seen is durable), and on gateway_flush; or,
 *     with opts.caller_commits, in the caller's own transaction.
 *     Failed calls are not recorded, so a rerun tries them again.
 *   - Secrets. An API key is read from the environment at gateway_new and
 *     lives only in that model's header list (and in memory to redact it):
 *     it never reaches the store, the dry-run output, stats, logs or error
 *     messages; any occurrence of it in a server's message is replaced by
 *     "[REDACTED]", and so is any occurrence of any model's key in a
 *     reply's content or finish reason, before the reply is recorded in
 *     the ledger or handed to the caller (a ledger answer too, for records
 *     written before that rule).
 */
#ifndef NSED_GATEWAY_H
#define NSED_GATEWAY_H

#include "pipeline/base/err.h"
#include "pipeline/base/hash.h"
#include "pipeline/gateway/cache.h"
#include "pipeline/gateway/ledger.h"
#include "pipeline/workflow/workflow.h"
#include "store/store.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* gateway_result.code of a request answered in dry-run mode (nothing was
 * sent). Positive, so it is neither success (0) nor an NSED_E* error. */
#define GATEWAY_DRY_RUN 1

/* Cap on the bytes of a server-provided error message kept in a result. */
#define GATEWAY_SERVER_MSG_MAX 300

/* Cap on one request body (messages and schema included). */
#define GATEWAY_MAX_REQUEST_BYTES ((size_t)64 << 20)

/* Latency histogram: bucket i counts latencies up to
 * GATEWAY_LATENCY_BASE_S * 2^(i/4) seconds (the last bucket takes the
 * rest), i.e. 1 ms to about 1.2 days in steps of 19%. */
#define GATEWAY_LATENCY_BUCKETS 96
#define GATEWAY_LATENCY_BASE_S 0.001

/* What went wrong with an attempt (or, in a result, the last attempt). */
enum gateway_error_kind {
    GATEWAY_ERR_NONE,       /* success, ledger hit or dry run */
    GATEWAY_ERR_CONNECT,    /* could not resolve or connect (retried) */
    GATEWAY_ERR_TRANSPORT,  /* reset, closed, partial body (retried) */
    GATEWAY_ERR_TIMEOUT,    /* connect or request timeout (retried) */
    GATEWAY_ERR_RATE_LIMIT, /* HTTP 429 (retried) */
    GATEWAY_ERR_SERVER,     /* HTTP 408, 500, 502, 503, 504 (retried) */
    GATEWAY_ERR_HTTP,       /* any other non-2xx status (permanent) */
    GATEWAY_ERR_MALFORMED,  /* 2xx with an unusable body (retried
                               like any transient error) */
    GATEWAY_ERR_TOO_BIG,    /* body over max_response_bytes (permanent) */
    GATEWAY_ERR_PAUSED,     /* budget ran out while the model was paused
                               by its circuit breaker, before any attempt */
    GATEWAY_ERR_INTERNAL,   /* out of memory or a libcurl setup failure */
};
#define GATEWAY_ERR_KIND_COUNT 11

/* Static lower-case name of a kind ("timeout", "rate_limit", ...). */
const char *gateway_error_kind_name(enum gateway_error_kind k);

/* True for the HTTP statuses that say the request itself is wrong and
 * will be refused again however often it is sent: 400 (bad request, e.g.
 * the prompt passes the context), 401 and 403 (the key), 404 (unknown
 * model or path), 413 (body too large), 422 (unprocessable). A caller
 * should not retry such a call on its own (gateway_result.permanent). */
bool gateway_status_permanent(long http_status);

/* A chat message (role and content, both non-NULL). */
typedef ledger_message gateway_message;

/* What a call is for, as the caller labels it: the gateway only counts
 * prompt and cached tokens by it (gateway_stats.by_kind), so that the share
 * of the prompt a server's prefix cache served can be told per kind. */
enum gateway_call_kind {
    GATEWAY_CALL_OTHER,   /* unlabelled (health checks, tools) */
    GATEWAY_CALL_PROPOSE, /* a round-0 proposal */
    GATEWAY_CALL_REVISE,  /* a proposal of a later round */
    GATEWAY_CALL_EVALUATE,
    GATEWAY_CALL_REPAIR,
    GATEWAY_CALL_SELFCONS, /* a self-consistency sample */
};
#define GATEWAY_CALL_KIND_COUNT 6

/* Static name of a call kind ("propose", "revise", ...). */
const char *gateway_call_kind_name(enum gateway_call_kind k);

/* One call. Everything is borrowed for the duration of gateway_submit
 * only: the gateway copies what it needs. */
typedef struct gateway_request {
    size_t model;                    /* index into wf->models */
    const gateway_message *messages; /* nmessages >= 1 */
    size_t nmessages;
    const char *schema;      /* JSON schema text (a JSON object) or NULL;
                                sent as response_format only when the
                                model has structured_output */
    const char *schema_name; /* required with schema: 1..64 bytes of
                                [A-Za-z0-9_-] */
    bool has_seed;           /* true: seed overrides the model's seed */
    int64_t seed;
    long max_tokens;         /* > 0: sent (and keyed) instead of the
                                model's sampling.max_tokens; 0: the
                                model's */
    const char *scope;       /* ledger key parts: the question id (NULL
                                for none), so equal prompts of two
                                questions stay independent calls; */
    int seat;                /* seat in the team, */
    int round;               /* round number, */
    int sample;              /* and sample index of this call */
    enum gateway_call_kind call_kind; /* for the per-kind token counts
                                         only; not part of the key */
} gateway_request;

typedef struct gateway_usage {
    int64_t prompt_tokens;
    int64_t completion_tokens;
    int64_t cached_tokens; /* usage.prompt_tokens_details.cached_tokens,
                              0 when absent */
} gateway_usage;

/* What a completion callback receives. Every pointer is owned by the
 * gateway and valid only during the callback: copy what you keep. */
typedef struct gateway_result {
    int code;              /* 0 ok; GATEWAY_DRY_RUN; or NSED_ENET (the call
                              failed), NSED_ETOOBIG (reply over the cap),
                              NSED_ENOMEM */
    enum gateway_error_kind kind; /* why it failed (GATEWAY_ERR_NONE on
                                     success) */
    long http_status;      /* last HTTP status, 0 when none was received */
    const char *content;   /* the reply text (NUL-terminated; "" unless
                              code is 0) */
    size_t content_len;
    const char *finish_reason; /* NULL when absent or not ok */
    gateway_usage usage;
    double cost_usd;       /* from the model's prices */
    double latency_s;      /* first attempt to completion, backoff and
                              pauses included; recorded value for a
                              ledger hit */
    int attempts;          /* HTTP attempts made (recorded value for a
                              ledger hit, 0 for a dry run) */
    bool from_ledger;      /* answered from the ledger, nothing sent */
    bool from_cache;       /* ... and that answer came from the call cache
                              (from_ledger is true too) */
    const char *error;     /* "" on success; otherwise a one-line message
                              naming the model, never holding the key */
    bool permanent;        /* the failure is a property of the request,
                              so sending it again gets the same answer
                              (gateway_status_permanent, or a body saying
                              the prompt passes the model's context or the
                              model is unknown); false on success and for
                              every transient or configuration failure */
    size_t model;          /* the request's model index */
    uint8_t key[HASH_LEN]; /* the request's ledger key */
} gateway_result;

/* Completion callback: runs once per submitted request, from inside
 * gateway_poll. It may call gateway_submit (a new request is at the
 * earliest delivered by the next gateway_poll), but not gateway_poll,
 * gateway_flush or gateway_free. */
typedef void (*gateway_done_fn)(const gateway_result *res, void *user);

/* User-visible events (an endpoint going down or coming back): one line of
 * text without a trailing newline, valid during the call. */
typedef void (*gateway_log_fn)(const char *line, void *user);

/* Monotonic clock in seconds (tests override it). */
typedef double (*gateway_clock_fn)(void *user);

typedef struct gateway_opts {
    FILE *dry_run;          /* non-NULL: print each request that misses the
                               ledger as one JSON line here and complete it
                               with GATEWAY_DRY_RUN; nothing is sent and no
                               API key is read */
    gateway_log_fn log;     /* may be NULL */
    void *log_user;
    gateway_clock_fn clock; /* NULL: CLOCK_MONOTONIC */
    void *clock_user;
    uint64_t jitter_seed;   /* seeds the backoff jitter PRNG */
    cache *cache;           /* the call cache shared across stores, or
                               NULL; used only with a store, must outlive
                               the gateway */
    bool caller_commits;    /* gateway_poll does not commit the ledger:
                               the caller writes the buffered records in
                               its own transaction (gateway_put_records,
                               then gateway_records_committed), so one
                               fsync covers both */
} gateway_opts;

typedef struct gateway gateway;

/* Create a gateway for the models of wf (which must outlive it) with the
 * ledger in st (may be NULL: no ledger; st must outlive the gateway, and
 * the caller must not write STORE_LEDGER keys the gateway also writes
 * while it holds them uncommitted). opts may be NULL for defaults. Reads
 * each model's API key from the environment variable it names: an unset
 * or empty variable, or a key holding control characters, gives
 * NSED_EINVAL with a message naming the model and the variable (never a
 * value). Returns 0 and sets *out (free with gateway_free), NSED_EINVAL,
 * NSED_ENOMEM or NSED_ENET (libcurl could not be set up). */
NSED_MUST_CHECK int gateway_new(const workflow *wf, store *st,
                                const gateway_opts *opts, gateway **out,
                                nsed_err *err);

/* Check what gateway_new checks of the environment without creating
 * anything: every model's api_key_env variable is set, non-empty and free
 * of control characters. Returns 0 or NSED_EINVAL with gateway_new's
 * message (naming the model and the variable, never a value). Lets a
 * command refuse a missing key before it creates a store. */
NSED_MUST_CHECK int gateway_check_keys(const workflow *wf, nsed_err *err);

/* Commit buffered ledger records, cancel transfers in flight and free the
 * gateway; callbacks of unfinished requests are not called. Errors of the
 * last commit are lost: call gateway_flush first to see them. NULL is
 * ignored. */
void gateway_free(gateway *gw);

/* Submit a request; fn(result, user) is called exactly once from a later
 * gateway_poll. Not from inside a store transaction of st (the ledger
 * lookup opens a read transaction). Checks the request (model index, messages, schema),
 * builds the body, computes the ledger key and looks it up. Returns 0, or
 * NSED_EINVAL (bad request, err says why), NSED_ETOOBIG (body over
 * GATEWAY_MAX_REQUEST_BYTES), NSED_ENOMEM, NSED_ESTORE (ledger lookup
 * failed), NSED_EIO (dry-run output failed); on error fn is never
 * called. */
NSED_MUST_CHECK int gateway_submit(gateway *gw, const gateway_request *req,
                                   gateway_done_fn fn, void *user,
                                   nsed_err *err);

/* The ledger key gateway_submit would use for req (the same validation).
 * Returns 0, NSED_EINVAL or NSED_ENOMEM. */
NSED_MUST_CHECK int gateway_request_key(const workflow *wf,
                                        const gateway_request *req,
                                        uint8_t out[HASH_LEN], nsed_err *err);

/* Drive the gateway once: start queued requests that have a free slot,
 * wait up to timeout_ms (less when a timer is due or a result is ready)
 * for network activity, handle finished transfers (retry, give up or
 * succeed), commit the ledger records of this iteration in one
 * store_write, then run the callbacks that became ready. Returns 0, or the
 * store_write error (NSED_ESTORE, NSED_ENOMEM) after the callbacks ran;
 * the uncommitted records are kept and retried by the next poll or
 * gateway_flush. */
NSED_MUST_CHECK int gateway_poll(gateway *gw, int timeout_ms, nsed_err *err);

/* Commit buffered ledger records now. Returns 0 or the store_write error
 * (records kept). */
NSED_MUST_CHECK int gateway_flush(gateway *gw, nsed_err *err);

/* Ledger records buffered and not yet committed. */
size_t gateway_records_pending(const gateway *gw);

/* True when committing the buffered records now would let a request
 * start: some model has a request queued and a slot held by a reply not
 * yet durable. */
bool gateway_records_block(const gateway *gw);

/* Put the buffered ledger records into txn (inside the caller's
 * store_write; replayable). They stay buffered until
 * gateway_records_committed says the transaction committed. Returns 0 or
 * the ledger_put error. */
NSED_MUST_CHECK int gateway_put_records(gateway *gw, store_txn *txn,
                                        nsed_err *err);

/* The transaction that held gateway_put_records committed: drop the
 * records and free the concurrency slots they held (gateway_kick or the
 * next poll starts queued requests in them). */
void gateway_records_committed(gateway *gw);

/* Start queued requests that have a free slot and push pending transfers
 * along, without waiting or running callbacks: the runner calls it right
 * after its commit, which freed the slots of the calls it made durable. */
void gateway_kick(gateway *gw);

/* Requests with a transfer in flight. */
size_t gateway_in_flight(const gateway *gw);

/* Requests submitted but neither in flight nor delivered: queued for a
 * slot, waiting for a retry or for a paused model, or finished with the
 * callback still to run. A caller's loop runs while in_flight + pending
 * is non-zero. */
size_t gateway_pending(const gateway *gw);

/* True when model index model (< wf->nmodels) is paused by its circuit
 * breaker now: open, or half-open with only a probe let through. */
bool gateway_model_paused(const gateway *gw, size_t model);

/* ---- preflight (gateway_preflight.c) ----------------------------------
 *
 * Before a run starts any question, one GET {endpoint}/models (the OpenAI
 * list of models) per distinct endpoint and key that a model in use is
 * served by, with short timeouts (GATEWAY_PREFLIGHT_CONNECT_S to
 * connect, GATEWAY_PREFLIGHT_TOTAL_S in all), no redirects, http and
 * https only, the model's key in "Authorization: Bearer" as a call would
 * send it. It fails when the endpoint cannot be reached (refused, DNS,
 * timeout, TLS), when it refuses the key (HTTP 401 or 403), and when it
 * lists its models and the model's served name is not among them. It
 * passes, with a note, when the endpoint does not serve the list (404,
 * 405, 501), answers something that is not a list, or answers another
 * status (a 5xx is an outage the runner's breaker and outage budget
 * handle, not a configuration error). */
#define GATEWAY_PREFLIGHT_CONNECT_S 3.0
#define GATEWAY_PREFLIGHT_TOTAL_S 10.0
#define GATEWAY_PREFLIGHT_MAX_BYTES ((size_t)4 << 20)

/* Preflight the models of wf whose use[i] is true (use NULL: every
 * model). Each note (an endpoint that passed without a model list) goes
 * to note(line, user) when note is not NULL. Reads the API keys from the
 * environment (gateway_check_keys should have passed). Returns 0, or
 * NSED_EINVAL with a message naming the model, the endpoint and what
 * failed (never a key), or NSED_ENOMEM. */
NSED_MUST_CHECK int gateway_preflight(const workflow *wf, const bool *use,
                                      gateway_log_fn note, void *user,
                                      nsed_err *err);

typedef struct gateway_stats {
    uint64_t calls;          /* requests finished through the network
                                path (not ledger hits or dry runs) */
    uint64_t ok;             /* ... successfully */
    uint64_t failed;         /* ... with an error (including requests that
                                ran out of budget while paused) */
    uint64_t attempts;       /* HTTP attempts started */
    uint64_t retries;        /* attempts after the first */
    uint64_t attempt_errors[GATEWAY_ERR_KIND_COUNT]; /* failed attempts
                                                        by kind */
    uint64_t ledger_hits;    /* requests answered from the ledger */
    uint64_t cache_hits;     /* requests answered from the call cache
                                (not in ledger_hits; like them neither
                                calls, tokens nor cost: an earlier run paid
                                for them) */
    uint64_t dry_run;        /* requests answered by the dry run */
    uint64_t breaker_opens;  /* times the circuit breaker paused */
    uint64_t stalls;         /* attempts abandoned as stalled (counted in
                                attempt_errors as timeouts too) */
    uint64_t health_checks;  /* one-token requests sent to tell a stalled
                                request from a stalled endpoint (not in
                                attempts) */
    int64_t prompt_tokens;   /* of successful network calls */
    int64_t completion_tokens;
    int64_t cached_tokens;
    /* of successful network calls, by gateway_request.call_kind: */
    uint64_t kind_calls[GATEWAY_CALL_KIND_COUNT];
    int64_t kind_prompt_tokens[GATEWAY_CALL_KIND_COUNT];
    int64_t kind_cached_tokens[GATEWAY_CALL_KIND_COUNT];
    double cost_usd;
    double latency_sum_s;    /* of successful network calls */
    double latency_max_s;
    uint64_t latency_hist[GATEWAY_LATENCY_BUCKETS];
} gateway_stats;

/* Add the statistics s into t. */
void gateway_stats_add(gateway_stats *t, const gateway_stats *s);

/* Copy the statistics of model index model into *out, or the totals over
 * all models when model is GATEWAY_ALL_MODELS. Returns 0 or NSED_EINVAL
 * for an index out of range. */
#define GATEWAY_ALL_MODELS ((size_t)-1)
NSED_MUST_CHECK int gateway_stats_get(const gateway *gw, size_t model,
                                      gateway_stats *out);

/* The totals over all models into *out (gateway_stats_get with
 * GATEWAY_ALL_MODELS, for callers that want no error path: this one cannot
 * fail). */
void gateway_stats_total(const gateway *gw, gateway_stats *out);

/* Latency at quantile q in [0, 1] from the histogram (the upper bound of
 * the bucket that holds it, capped at latency_max_s), 0 when no call
 * succeeded. */
double gateway_stats_latency_quantile(const gateway_stats *s, double q);

/* The bounds of the histogram bucket that holds quantile q: the latency
 * is in (*lo, *hi], where *hi is what gateway_stats_latency_quantile
 * returns and *lo the bucket's lower bound (0 for the first bucket; also
 * capped at latency_max_s). Both 0 when no call succeeded. */
void gateway_stats_latency_range(const gateway_stats *s, double q, double *lo,
                                 double *hi);

/* ---- the JSON form of gateway_stats (gateway_stats.c): the object
 * {"calls", "ok", ..., "errors": {kind: n}, "latency_hist": [...]} that
 * telemetry records keep. */
struct cJSON;

/* A new object for s (caller deletes), NULL when out of memory. */
NSED_MUST_CHECK struct cJSON *gateway_stats_to_json(const gateway_stats *s);

/* The same object as JSON text: 0 with *out malloc'd (and *len, when not
 * NULL, its length), or NSED_ENOMEM. */
NSED_MUST_CHECK int gateway_stats_write(const gateway_stats *s, char **out,
                                        size_t *len);

/* Fill *s from j; missing or non-numeric fields read as 0, so an older
 * record or NULL gives zeros. */
void gateway_stats_from_json(const struct cJSON *j, gateway_stats *s);

#endif
