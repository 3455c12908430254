#include "stages/seed.h"

#include "pipeline/base/hash.h"

#include <stdbool.h>
#include <string.h>

static void put_u64(uint8_t out[8], uint64_t v)
{
    for (int i = 0; i < 8; i++)
        out[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_u64(const uint8_t in[8])
{
    uint64_t v = 0;

    for (int i = 0; i < 8; i++)
        v |= (uint64_t)in[i] << (8 * i);
    return v;
}

/* SHA-256 over length-prefixed fields: purpose, run seed, question id,
 * round, then the 64-bit extras. */
static int digest(const char *purpose, uint64_t run_seed, const char *qid,
                  int64_t round, const uint64_t *extra, size_t nextra,
                  uint8_t out[HASH_LEN])
{
    hash_ctx *h = hash_new();
    uint8_t b[8];

    if (!h)
        return NSED_ENOMEM;
    hash_update_field(h, purpose, strlen(purpose));
    put_u64(b, run_seed);
    hash_update_field(h, b, 8);
    hash_update_field(h, qid, strlen(qid));
    put_u64(b, (uint64_t)round);
    hash_update_field(h, b, 8);
    for (size_t i = 0; i < nextra; i++) {
        put_u64(b, extra[i]);
        hash_update_field(h, b, 8);
    }
    hash_final(h, out);
    hash_free(h);
    return 0;
}

int seed_call(uint64_t run_seed, const char *qid, int round, size_t seat,
               enum stage_kind kind, int sample, uint64_t *out)
{
    uint64_t extra[3] = {seat, (uint64_t)kind, (uint64_t)sample};
    uint8_t d[HASH_LEN];
    int rc = digest("nsed-seed", run_seed, qid, round, extra, 3, d);

    if (rc)
        return rc;
    *out = get_u64(d) & (UINT64_MAX >> 1);
    return 0;
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

int seed_rng_init(seed_rng *r, const char *purpose, uint64_t run_seed,
                   const char *qid, int round, size_t seat)
{
    uint64_t extra[1] = {seat};
    uint8_t d[HASH_LEN];
    int rc = digest(purpose, run_seed, qid, round, extra, 1, d);

    if (rc)
        return rc;
    for (int i = 0; i < 4; i++)
        r->s[i] = get_u64(d + 8 * i);
    /* xoshiro must not start from all zeros (one chance in 2^256) */
    if (!(r->s[0] | r->s[1] | r->s[2] | r->s[3]))
        r->s[0] = 1;
    return 0;
}

uint64_t seed_rng_next(seed_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;

    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

uint64_t seed_rng_below(seed_rng *r, uint64_t n)
{
    /* reject the top partial bucket so every residue is equally likely */
    uint64_t limit = UINT64_MAX - UINT64_MAX % n, x;

    do {
        x = seed_rng_next(r);
    } while (x >= limit);
    return x % n;
}

/* SHA-256 over the texts a fence must stay out of, in order, each as a
 * presence flag and (when present) its bytes. */
static int texts_digest(const char *const *texts, size_t ntexts,
                        uint8_t out[HASH_LEN])
{
    hash_ctx *h = hash_new();
    uint8_t b[8];

    if (!h)
        return NSED_ENOMEM;
    put_u64(b, ntexts);
    hash_update_field(h, b, 8);
    for (size_t k = 0; k < ntexts; k++) {
        put_u64(b, texts[k] != NULL);
        hash_update_field(h, b, 8);
        if (texts[k])
            hash_update_field(h, texts[k], strlen(texts[k]));
    }
    hash_final(h, out);
    hash_free(h);
    return 0;
}

int seed_fence(const char *purpose, uint64_t run_seed, const char *qid,
                int round, const char *const *texts, size_t ntexts,
                char out[TEXT_FENCE_HEX + 1])
{
    static const char hex[] = "0123456789abcdef";
    uint8_t td[HASH_LEN];
    char first[TEXT_FENCE_HEX + 1] = "";
    int rc = texts_digest(texts, ntexts, td);

    if (rc)
        return rc;
    for (uint64_t attempt = 0; attempt < SEED_FENCE_ATTEMPTS; attempt++) {
        /* the texts' digest (four words of it) and the attempt number */
        uint64_t extra[5] = {get_u64(td), get_u64(td + 8), get_u64(td + 16),
                             get_u64(td + 24), attempt};
        uint8_t d[HASH_LEN];
        char f[TEXT_FENCE_HEX + 1];
        bool clash = false;

        rc = digest(purpose, run_seed, qid, round, extra, 5, d);
        if (rc)
            return rc;
        for (int i = 0; i < TEXT_FENCE_HEX / 2; i++) {
            f[2 * i] = hex[d[i] >> 4];
            f[2 * i + 1] = hex[d[i] & 15];
        }
        f[TEXT_FENCE_HEX] = '\0';
        if (attempt == 0)
            memcpy(first, f, sizeof f);
        for (size_t k = 0; k < ntexts && !clash; k++)
            clash = texts[k] && strstr(texts[k], f);
        if (!clash) {
            memcpy(out, f, sizeof f);
            return 0;
        }
    }
    /* Every attempt occurs in the texts, which would take texts holding
     * SEED_FENCE_ATTEMPTS digests of themselves. The bodies are
     * neutralized (text.h), so no body line can be a marker line whatever
     * fence it quotes: the first attempt is used and nothing fails. */
    memcpy(out, first, sizeof first);
    return 0;
}
