/* seed.h -- everything random in a stage, derived from the run seed.
 *
 * A stage has no clock and no global generator: each random choice derives
 * from (purpose, run seed, question id, round, seat, ...) through SHA-256,
 * so a state and the replies to its requests determine the next state
 * exactly and a replay from the call ledger is exact.
 */
#ifndef NSED_STAGES_SEED_H
#define NSED_STAGES_SEED_H

#include "pipeline/base/err.h"
#include "stages/request.h"
#include "stages/text.h"

#include <stddef.h>
#include <stdint.h>

/* The derived per-call seed: the first 8 bytes of SHA-256 over
 * ("nsed-seed", run seed, question id, round, seat, kind, sample), top bit
 * cleared. Returns 0 and sets *out or NSED_ENOMEM. */
NSED_MUST_CHECK int seed_call(uint64_t run_seed, const char *qid, int round,
                              size_t seat, enum stage_kind kind, int sample,
                              uint64_t *out);

/* Local PRNG (xoshiro256**). */
typedef struct seed_rng {
    uint64_t s[4];
} seed_rng;

/* Seed r from SHA-256 over (purpose, run seed, question id, round, seat).
 * Returns 0 or NSED_ENOMEM. */
NSED_MUST_CHECK int seed_rng_init(seed_rng *r, const char *purpose,
                                  uint64_t run_seed, const char *qid,
                                  int round, size_t seat);
uint64_t seed_rng_next(seed_rng *r);
/* Uniform in [0, n) without modulo bias; n > 0. */
uint64_t seed_rng_below(seed_rng *r, uint64_t n);

/* Fence nonces tried before seed_fence gives up looking for a free one. */
#define SEED_FENCE_ATTEMPTS 256

/* A fence nonce for blocks of (question, round, purpose) around
 * texts[0..ntexts) (NULL entries hold no text but count as a position):
 * TEXT_FENCE_HEX lower-case hex digits of SHA-256 over (purpose, run seed,
 * question id, round, SHA-256 of the texts, attempt), taking the first
 * attempt whose digits occur in none of the texts. The nonce depends on
 * the very texts it fences, so a text cannot carry it: to contain its own
 * fence a text would have to contain a digest of itself, and a flood of
 * guessed nonces only moves the nonce elsewhere. The same arguments give
 * the same nonce (replay and resume render identical prompts). When all
 * SEED_FENCE_ATTEMPTS attempts occur in the texts (which takes texts
 * holding that many digests of themselves) the first one is used: the
 * bodies are neutralized (text.h), so no body line can close a block
 * anyway. Returns 0 and fills out, or NSED_ENOMEM. */
NSED_MUST_CHECK int seed_fence(const char *purpose, uint64_t run_seed,
                               const char *qid, int round,
                               const char *const *texts, size_t ntexts,
                               char out[TEXT_FENCE_HEX + 1]);

#endif
