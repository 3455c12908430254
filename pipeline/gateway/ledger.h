/* ledger.h -- the call ledger: every successful LLM call, keyed by what it
 * asked, so that a resumed or replayed run never pays for a call twice.
 *
 * A ledger key is the SHA-256 of everything that decides a model's answer
 * (ledger_call): the model (its workflow id and served name), every
 * message (role and content), the sampling (temperature, top_p, max_tokens,
 * seed, stop list), the response format (schema text and name, or none),
 * the model's extra_body fields (only when it has any), and the scope
 * (question id), seat, round and sample index of the call.
 * Each part goes through hash_update_field (length-prefixed) after a
 * version tag and the list counts, so no two different calls share a key
 * by concatenation. Settings that do not change the answer (timeouts,
 * concurrency, retries, the API key) are deliberately not part of it, so
 * tuning them never invalidates a run's ledger. Neither is the endpoint
 * URL: the same model served on another port, host or scheme answers the
 * same, so moving an endpoint keeps every key.
 *
 * Key forms. Form 2 (ledger_key, tag "nsed-ledger-key-2") is what is
 * written. Form 1 (ledger_key_legacy, tag "nsed-ledger-key-1") is what
 * stores written before form 2 hold: the endpoint URL in place of the
 * model id, every other part identical. Entries are never rewritten; a
 * lookup (ledger_find) tries form 2 and on a miss form 1, so an old store
 * still answers its calls as long as the endpoint URL is the one it was
 * written with.
 *
 * The value under STORE_LEDGER is compact JSON (ledger_record): content,
 * finish_reason, usage, cost, latency, attempts, HTTP status, the served
 * model name and the time it was recorded, and "from_cache": true for a
 * record copied from the shared call cache. It never holds a secret.
 *
 * The store functions take a transaction from store_read/store_write and
 * touch the store only through it, so they are safe inside a replayed
 * store_write.
 */
#ifndef NSED_LEDGER_H
#define NSED_LEDGER_H

#include "pipeline/base/err.h"
#include "pipeline/base/hash.h"
#include "store/store.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One chat message. Both strings are NUL-terminated and never NULL. */
typedef struct ledger_message {
    const char *role;
    const char *content;
} ledger_message;

/* The semantic parts of one call (borrowed pointers, not copied). */
typedef struct ledger_call {
    const char *endpoint;      /* resolved base URL (form 1 only) */
    const char *model;         /* served model name */
    const ledger_message *messages;
    size_t nmessages;
    double temperature;
    double top_p;
    long max_tokens;
    bool has_seed;             /* false: no seed is sent */
    int64_t seed;
    const char *const *stop;   /* nstop strings */
    size_t nstop;
    const char *schema;        /* JSON schema text as sent, or NULL when no
                                  response_format is sent */
    const char *schema_name;   /* with schema; ignored when schema is NULL */
    const char *extra_body;    /* the model's extra_body JSON text, or NULL
                                  (then the key is what it was before
                                  extra_body existed) */
    const char *scope;         /* what the call belongs to (the question
                                  id), NULL for none */
    int seat;
    int round;
    int sample;
    const char *model_id; /* the workflow's model id (form 2 only) */
} ledger_call;

/* Compute the current (form 2) key of call into out. model_id, model and
 * every message's role and content must be non-NULL (NSED_EINVAL
 * otherwise); endpoint is ignored. Returns 0, NSED_EINVAL or NSED_ENOMEM;
 * out is written only on success. */
NSED_MUST_CHECK int ledger_key(const ledger_call *call, uint8_t out[HASH_LEN]);

/* The same for the legacy form 1 key, which stores written before form 2
 * hold: endpoint and model must be non-NULL, model_id is ignored. Only for
 * looking old entries up; nothing is written under it. */
NSED_MUST_CHECK int ledger_key_legacy(const ledger_call *call,
                                      uint8_t out[HASH_LEN]);

/* A recorded call. Strings are owned by the record after ledger_get /
 * ledger_decode (free with ledger_record_release); ledger_put only reads
 * them. */
typedef struct ledger_record {
    char *content;        /* never NULL in a decoded record */
    char *finish_reason;  /* NULL when the server sent none */
    char *model;          /* served model name, NULL when not recorded */
    int64_t prompt_tokens;
    int64_t completion_tokens;
    int64_t cached_tokens;
    double cost_usd;
    double latency_s;     /* first attempt to completion, when recorded */
    int attempts;         /* attempts it took then */
    long http_status;
    int64_t time;         /* Unix seconds when recorded */
    bool from_cache;      /* copied from the shared call cache (cache.h),
                             not paid for by this store's run; encoded only
                             when true, so other records keep their bytes */
} ledger_record;

/* Free the strings of r and zero it. NULL is ignored. */
void ledger_record_release(ledger_record *r);

/* Encode r as compact JSON into *out (malloc'd, NUL-terminated, caller
 * frees) and its length into *len. r->content must not be NULL. Returns 0,
 * NSED_EINVAL or NSED_ENOMEM. */
NSED_MUST_CHECK int ledger_encode(const ledger_record *r, char **out,
                                  size_t *len);

/* Decode len bytes of JSON written by ledger_encode into *out (release with
 * ledger_record_release). Returns 0, NSED_EINVAL (err says what is wrong)
 * or NSED_ENOMEM; *out is untouched on failure. */
NSED_MUST_CHECK int ledger_decode(const void *data, size_t len,
                                  ledger_record *out, nsed_err *err);

/* Look key up. Returns 0 with *out filled (caller releases),
 * NSED_ENOTFOUND, NSED_ESTORE, NSED_EINVAL for a value that does not
 * decode (err names the key), NSED_ENOMEM. */
NSED_MUST_CHECK int ledger_get(store_txn *txn, const uint8_t key[HASH_LEN],
                               ledger_record *out, nsed_err *err);

/* Look key up, and on NSED_ENOTFOUND legacy (the form 1 key of the same
 * call; NULL for none). Returns what ledger_get returns for the last key
 * tried. */
NSED_MUST_CHECK int ledger_find(store_txn *txn, const uint8_t key[HASH_LEN],
                                const uint8_t legacy[HASH_LEN],
                                ledger_record *out, nsed_err *err);

/* Record r under key (overwriting). Only inside store_write. Returns 0,
 * NSED_EINVAL, NSED_ENOMEM or NSED_ESTORE (which store_write handles for
 * map growth by replaying its function). */
NSED_MUST_CHECK int ledger_put(store_txn *txn, const uint8_t key[HASH_LEN],
                               const ledger_record *r, nsed_err *err);

/* Number of recorded calls into *n. Returns 0 or NSED_ESTORE. */
NSED_MUST_CHECK int ledger_count(store_txn *txn, size_t *n);

#endif
