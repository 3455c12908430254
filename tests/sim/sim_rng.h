/* sim_rng.h -- small deterministic PRNG for the simulated endpoint server.
 *
 * xoshiro256** seeded from a SHA-256 digest (pipeline/base/hash.h), so that every
 * random decision the simulator makes is a pure function of the bytes that
 * were hashed into the seed. Not for cryptography. The state lives in caller
 * storage; nothing here allocates or fails.
 */
#ifndef NSED_SIM_RNG_H
#define NSED_SIM_RNG_H

#include "pipeline/base/hash.h"

#include <stdint.h>

typedef struct sim_rng {
    uint64_t s[4];
} sim_rng;

/* Seed r from a 32-byte digest. An all-zero digest (which would stall
 * xoshiro) is replaced by a fixed non-zero state. */
void sim_rng_seed(sim_rng *r, const uint8_t digest[HASH_LEN]);

/* Next 64 random bits. */
uint64_t sim_rng_next(sim_rng *r);

/* Uniform double in [0, 1). */
double sim_rng_uniform(sim_rng *r);

/* Uniform integer in [lo, hi] (lo <= hi; hi - lo < 2^63). */
int64_t sim_rng_range(sim_rng *r, int64_t lo, int64_t hi);

/* 1 with probability p (p <= 0 never, p >= 1 always), else 0. */
int sim_rng_chance(sim_rng *r, double p);

#endif
