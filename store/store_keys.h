/* store_keys.h -- the one place that spells the keys of the runner's
 * records in the store (STORE_STATE, STORE_RESULTS, STORE_TELEMETRY).
 *
 * Key map (bytes; "\0" is one NUL byte, <u32 BE> four big-endian bytes):
 *
 *   STORE_STATE      <qid> "\0s"            the question's state after its
 *                                            latest committed stage (its
 *                                            decided rounds named, not
 *                                            copied: they are the "\0r"s)
 *                    <qid> "\0r" <u32 BE>    round r, archived when decided
 *                    <qid> "\0i"            marker of an incomplete question
 *                    <qid> "\0b"            the broker's decision
 *                    <qid> "\0c"            the question's context (weights,
 *                                            fitted fatigue parameters)
 *   STORE_RESULTS    <qid>                  the result record (one export
 *                                            line)
 *   STORE_TELEMETRY  "gateway/" <model id>  cumulative call statistics
 *                    "model/" <model id>    accuracy and usage counts
 *                    "prior/" <model id>    an imported telemetry prior
 *                    "breaker/" <model id>  the model's circuit breaker as
 *                                            the runner last saw it (paused
 *                                            or not, since when)
 *                    "rounds"               winners judged right per round
 *
 * The question id comes first in every STORE_STATE key so that one
 * question's records sit together in key order; the NUL cannot occur in an
 * id (ids are JSON strings checked by the question loader). Which module
 * writes what: the runner writes all of STORE_STATE, STORE_RESULTS,
 * "gateway/", "breaker/" and "rounds"; the broker's telemetry writes "model/" and
 * "prior/". This file lives in store/ (below both) so that each of them, and
 * the status report, builds and parses the keys here and nowhere else. The
 * other databases keep their single owners: STORE_QUESTIONS/STORE_QORDER
 * in questions_store.c, STORE_LEDGER in gateway/ledger.c, STORE_META in
 * store.c.
 */
#ifndef NSED_STORE_KEYS_H
#define NSED_STORE_KEYS_H

#include "pipeline/base/err.h"
#include "store/store.h"

#include <stddef.h>
#include <stdint.h>

/* A key built here: bytes[0..len) is what store_get/put/del take. */
typedef struct store_key {
    size_t len;
    unsigned char bytes[STORE_KEY_MAX];
} store_key;

/* The per-question records of STORE_STATE. */
enum store_keys_qrec {
    STORE_KEYS_STATE,      /* <qid> "\0s" */
    STORE_KEYS_ROUND,      /* <qid> "\0r" <u32 BE round> */
    STORE_KEYS_INCOMPLETE, /* <qid> "\0i" */
    STORE_KEYS_BROKER,     /* <qid> "\0b" */
    STORE_KEYS_CONTEXT,    /* <qid> "\0c" */
};

/* The per-model records of STORE_TELEMETRY. */
enum store_keys_tele {
    STORE_KEYS_GATEWAY, /* "gateway/" <model id> */
    STORE_KEYS_MODEL,   /* "model/" <model id> */
    STORE_KEYS_PRIOR,   /* "prior/" <model id> */
    STORE_KEYS_BREAKER, /* "breaker/" <model id> */
};

/* STORE_STATE key of record rec of question qid into *out; round is used
 * by STORE_KEYS_ROUND only (ignored otherwise). Returns 0, or NSED_ETOOBIG
 * when the key would be longer than STORE_KEY_MAX (*out then untouched). */
NSED_MUST_CHECK int store_keys_question(const char *qid,
                                        enum store_keys_qrec rec,
                                        uint32_t round, store_key *out);

/* Parse a STORE_STATE key: the question id is key[0..*qid_len), the record
 * kind goes to *rec and, for a round, the round to *round. Returns 0, or
 * NSED_EINVAL for a key of no known shape (out-params then untouched). */
NSED_MUST_CHECK int store_keys_question_parse(const void *key, size_t klen,
                                              size_t *qid_len,
                                              enum store_keys_qrec *rec,
                                              uint32_t *round);

/* STORE_RESULTS key of question qid (the id itself). Returns 0 or
 * NSED_ETOOBIG. */
NSED_MUST_CHECK int store_keys_result(const char *qid, store_key *out);

/* STORE_TELEMETRY key of record kind of model id into *out. Returns 0 or
 * NSED_ETOOBIG. */
NSED_MUST_CHECK int store_keys_telemetry(enum store_keys_tele kind,
                                         const char *model, store_key *out);

/* The prefix of kind ("gateway/", ...), for a store_scan over every model's
 * record of that kind (static string, never NULL). */
const char *store_keys_telemetry_prefix(enum store_keys_tele kind);

/* Parse a STORE_TELEMETRY key: on 0, *kind is its record kind and the
 * model id is (const char *)key + *model_off, *model_len bytes (not
 * NUL-terminated, at least one byte). NSED_ENOTFOUND for a key that is
 * not a per-model record ("rounds", anything else). */
NSED_MUST_CHECK int store_keys_telemetry_parse(const void *key, size_t klen,
                                               enum store_keys_tele *kind,
                                               size_t *model_off,
                                               size_t *model_len);

/* The STORE_TELEMETRY key of the per-round accuracy counts. */
void store_keys_rounds(store_key *out);

#endif
