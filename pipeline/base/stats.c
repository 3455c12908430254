/* stats.c -- the statistics of paired comparisons (see stats.h). */
#include "pipeline/base/stats.h"

#include <math.h>

double stats_mcnemar_exact_p(size_t b, size_t c)
{
    size_t n = b + c, k = b < c ? b : c;
    double sum = 0;

    if (n == 0)
        return 1;
    /* P(X = i) through lgamma, so n in the thousands neither overflows nor
     * underflows the intermediate binomial coefficients */
    for (size_t i = 0; i <= k; i++)
        sum += exp(lgamma((double)n + 1) - lgamma((double)i + 1) -
                   lgamma((double)(n - i) + 1) - (double)n * log(2.0));
    return fmin(1.0, 2 * sum);
}

void stats_wilson(size_t k, size_t n, double z, double *lo, double *hi)
{
    double p, z2, den, mid, half;

    if (n == 0) {
        *lo = 0;
        *hi = 1;
        return;
    }
    p = (double)k / (double)n;
    z2 = z * z;
    den = 1 + z2 / (double)n;
    mid = (p + z2 / (2 * (double)n)) / den;
    half = z *
           sqrt(p * (1 - p) / (double)n + z2 / (4.0 * (double)n * (double)n)) /
           den;
    *lo = fmax(0.0, mid - half);
    *hi = fmin(1.0, mid + half);
}

void stats_newcombe_paired(size_t a, size_t b, size_t c, size_t d, double z,
                           double *diff, double *lo, double *hi)
{
    size_t n = a + b + c + d;
    double p1, p2, l1, u1, l2, u2, phi = 0, den, dl, du;

    if (n == 0) {
        *diff = *lo = *hi = 0;
        return;
    }
    p1 = (double)(a + b) / (double)n;
    p2 = (double)(a + c) / (double)n;
    stats_wilson(a + b, n, z, &l1, &u1);
    stats_wilson(a + c, n, z, &l2, &u2);
    den = (double)(a + b) * (double)(c + d) * (double)(a + c) * (double)(b + d);
    if (den > 0)
        phi = ((double)a * (double)d - (double)b * (double)c) / sqrt(den);
    dl = (p1 - l1) * (p1 - l1) - 2 * phi * (p1 - l1) * (u2 - p2) +
         (u2 - p2) * (u2 - p2);
    du = (u1 - p1) * (u1 - p1) - 2 * phi * (u1 - p1) * (p2 - l2) +
         (p2 - l2) * (p2 - l2);
    *diff = p1 - p2;
    *lo = fmax(-1.0, *diff - sqrt(fmax(0.0, dl)));
    *hi = fmin(1.0, *diff + sqrt(fmax(0.0, du)));
}
