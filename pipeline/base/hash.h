/* hash.h -- SHA-256 through OpenSSL's libcrypto (a maintained library).
 *
 * Used for the workflow hash (of the canonical workflow text) and the call
 * ledger keys. hash_ctx is opaque; create with hash_new, feed with
 * hash_update, finish with hash_final, free with hash_free.
 */
#ifndef NSED_HASH_H
#define NSED_HASH_H

#include "pipeline/base/err.h"

#include <stddef.h>
#include <stdint.h>

#define HASH_LEN 32                 /* SHA-256 digest bytes */
#define HASH_HEX_LEN (HASH_LEN * 2) /* hex digits, NUL excluded */

typedef struct hash_ctx hash_ctx;

/* New SHA-256 context, or NULL when out of memory. */
NSED_MUST_CHECK hash_ctx *hash_new(void);
void hash_update(hash_ctx *h, const void *data, size_t n);
/* Feed a length-prefixed field (8-byte little-endian length, then bytes), so
 * that a sequence of fields hashes unambiguously. */
void hash_update_field(hash_ctx *h, const void *data, size_t n);
/* Write the digest; the context may not be used again except to free it. */
void hash_final(hash_ctx *h, uint8_t out[HASH_LEN]);
void hash_free(hash_ctx *h);

/* One-shot digest of data. Returns 0 or NSED_ENOMEM. */
NSED_MUST_CHECK int hash_sha256(const void *data, size_t n,
                                uint8_t out[HASH_LEN]);

/* Lower-case hex of a digest into out (HASH_HEX_LEN + 1 bytes). */
void hash_hex(const uint8_t digest[HASH_LEN], char out[HASH_HEX_LEN + 1]);

#endif
