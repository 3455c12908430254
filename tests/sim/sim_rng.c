#include "sim_rng.h"

#include <assert.h>
#include <string.h>

static uint64_t load_le64(const uint8_t *p)
{
    uint64_t v = 0;

    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

void sim_rng_seed(sim_rng *r, const uint8_t digest[HASH_LEN])
{
    for (int i = 0; i < 4; i++)
        r->s[i] = load_le64(digest + 8 * i);
    if (!(r->s[0] | r->s[1] | r->s[2] | r->s[3])) {
        /* xoshiro's only fixed point; any other state is as good. */
        r->s[0] = 0x9e3779b97f4a7c15ULL;
        r->s[1] = 0xbf58476d1ce4e5b9ULL;
        r->s[2] = 0x94d049bb133111ebULL;
        r->s[3] = 1;
    }
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

uint64_t sim_rng_next(sim_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;

    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double sim_rng_uniform(sim_rng *r)
{
    /* 53 high bits give every representable double step in [0, 1). */
    return (double)(sim_rng_next(r) >> 11) * 0x1.0p-53;
}

int64_t sim_rng_range(sim_rng *r, int64_t lo, int64_t hi)
{
    uint64_t span, limit, v;

    assert(lo <= hi);
    span = (uint64_t)(hi - lo) + 1;
    /* Rejection sampling so that no value is favoured by the modulo. */
    limit = UINT64_MAX - UINT64_MAX % span;
    do {
        v = sim_rng_next(r);
    } while (v >= limit);
    return lo + (int64_t)(v % span);
}

int sim_rng_chance(sim_rng *r, double p)
{
    double u = sim_rng_uniform(r);

    if (p <= 0.0)
        return 0;
    if (p >= 1.0)
        return 1;
    return u < p;
}
