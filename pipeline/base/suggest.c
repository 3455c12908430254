#include "pipeline/base/suggest.h"

#include <stdint.h>
#include <string.h>

static int lower_ascii(int c)
{
    return c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c;
}

size_t suggest_distance(const char *a, const char *b)
{
    size_t na = strlen(a), nb = strlen(b);
    size_t d[SUGGEST_MAX_LEN + 1][SUGGEST_MAX_LEN + 1];

    if (na > SUGGEST_MAX_LEN || nb > SUGGEST_MAX_LEN)
        return SIZE_MAX;
    for (size_t i = 0; i <= na; i++)
        d[i][0] = i;
    for (size_t j = 0; j <= nb; j++)
        d[0][j] = j;
    for (size_t i = 1; i <= na; i++) {
        for (size_t j = 1; j <= nb; j++) {
            int ca = lower_ascii((unsigned char)a[i - 1]);
            int cb = lower_ascii((unsigned char)b[j - 1]);
            size_t best = d[i - 1][j] + 1;

            if (d[i][j - 1] + 1 < best)
                best = d[i][j - 1] + 1;
            if (d[i - 1][j - 1] + (ca != cb) < best)
                best = d[i - 1][j - 1] + (ca != cb);
            if (i > 1 && j > 1 &&
                ca == lower_ascii((unsigned char)b[j - 2]) &&
                cb == lower_ascii((unsigned char)a[i - 2]) &&
                d[i - 2][j - 2] + 1 < best)
                best = d[i - 2][j - 2] + 1;
            d[i][j] = best;
        }
    }
    return d[na][nb];
}

const char *suggest_closest(const char *word, const char *const *cands,
                            size_t n, size_t *dist)
{
    const char *best = NULL;
    size_t bestd = SIZE_MAX;

    for (size_t i = 0; i < n; i++) {
        size_t d = suggest_distance(word, cands[i]);

        if (d < bestd) {
            bestd = d;
            best = cands[i];
        }
    }
    if (best && dist)
        *dist = bestd;
    return best;
}
