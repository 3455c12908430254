/* cache.h -- the call cache shared across stores on one machine
 * (`nsed run --cache DIR`).
 *
 * A cache is a directory holding one LMDB environment laid out as a run
 * store (store.h) whose STORE_LEDGER database holds ledger records
 * (ledger.h) under their ledger keys, and whose STORE_META marks it as a
 * cache (STORE_KEY_CALL_CACHE); its other databases stay empty. A store's
 * ledger answers only its own run; the cache answers any run on the
 * machine whose call has the same key, so a sweep or an ablation pays once
 * for every call it shares with an earlier run.
 *
 * Concurrency: the cache is opened with STORE_SHARED, so any number of
 * runs may read and write it at once; LMDB's own locks serialize their
 * write transactions and give every read a consistent snapshot. Records
 * are never changed once written, except that a record that does not
 * decode is overwritten by the next run that makes its call.
 *
 * Nothing in a cache is needed: deleting the directory (when no run uses
 * it) loses only the answers it would have given. It never holds an API
 * key: ledger records are redacted before they are recorded.
 */
#ifndef NSED_CACHE_H
#define NSED_CACHE_H

#include "pipeline/base/err.h"
#include "pipeline/base/hash.h"
#include "pipeline/gateway/ledger.h"

#include <stddef.h>
#include <stdint.h>

/* The layout version written under STORE_KEY_CALL_CACHE. */
#define CACHE_VERSION 1

typedef struct cache cache;

/* Open the cache in dir, creating the directory and the environment when
 * absent. A directory that holds a run store (it has a run manifest) is
 * refused, and so is one this process holds as its store. Returns 0 and
 * sets *out (close with cache_close); otherwise the store_open error
 * (NSED_EINVAL, NSED_EIO, NSED_ESTORE, NSED_ESCHEMA, NSED_EBUSY,
 * NSED_ENOMEM) or NSED_EINVAL for a run store, err naming the directory;
 * nothing is left open. */
NSED_MUST_CHECK int cache_open(const char *dir, cache **out, nsed_err *err);

/* Close the cache. NULL is ignored. */
void cache_close(cache *c);

/* The directory the cache was opened on (owned by the cache). */
const char *cache_dir(const cache *c);

/* Look key up in a read transaction of its own. Returns 0 with *out filled
 * (caller releases), NSED_ENOTFOUND, NSED_EINVAL for a record that does
 * not decode (err names the key), NSED_ESTORE or NSED_ENOMEM. */
NSED_MUST_CHECK int cache_get(cache *c, const uint8_t key[HASH_LEN],
                              ledger_record *out, nsed_err *err);

/* One record to add: its key and the record (borrowed). */
typedef struct cache_entry {
    const uint8_t *key; /* HASH_LEN bytes */
    const ledger_record *rec;
} cache_entry;

/* Write the n entries in one write transaction of their own (overwriting
 * equal keys: a key decides the answer). Returns 0, or the ledger_put /
 * store_write error (nothing written). */
NSED_MUST_CHECK int cache_put(cache *c, const cache_entry *e, size_t n,
                              nsed_err *err);

/* Number of records the cache holds into *n. Returns 0 or NSED_ESTORE. */
NSED_MUST_CHECK int cache_count(cache *c, size_t *n, nsed_err *err);

#endif
