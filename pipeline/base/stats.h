/* stats.h -- the statistics of paired comparisons: two classifiers (NSED
 * and a baseline) judged right or wrong on the same questions.
 *
 * The paired table of n questions:
 *   a  both right      b  the first right, the second wrong
 *   c  the first wrong, the second right      d  both wrong
 * Pure functions of the counts; nothing random.
 */
#ifndef NSED_BASE_STATS_H
#define NSED_BASE_STATS_H

#include <stddef.h>

/* z of a two-sided 95% interval: the 0.975 quantile of the normal. */
#define STATS_Z95 1.959963984540054

/* The exact McNemar test, two-sided: under the null each of the b + c
 * discordant pairs falls either way with chance 1/2, and p is
 * min(1, 2 * P(X <= min(b, c))) for X ~ Binomial(b + c, 1/2); 1 when
 * b + c == 0. */
double stats_mcnemar_exact_p(size_t b, size_t c);

/* The Wilson score interval of a proportion k/n (k <= n, n > 0) at normal
 * quantile z, in [*lo, *hi]; [0, 1] when n == 0. */
void stats_wilson(size_t k, size_t n, double z, double *lo, double *hi);

/* Newcombe's hybrid score interval for the difference of paired
 * proportions, (a + b)/n - (a + c)/n = (b - c)/n (Newcombe 1998, Stat Med
 * 17:2635, method 10): the Wilson limits l1, u1 of (a + b)/n and l2, u2 of
 * (a + c)/n combined with phi, the correlation of the 2x2 table (0 when
 * a margin is empty):
 *   lo = diff - sqrt((p1-l1)^2 - 2 phi (p1-l1)(u2-p2) + (u2-p2)^2)
 *   hi = diff + sqrt((u1-p1)^2 - 2 phi (u1-p1)(p2-l2) + (p2-l2)^2)
 * Sets *diff, *lo, *hi; with n == a+b+c+d == 0 all three are 0. */
void stats_newcombe_paired(size_t a, size_t b, size_t c, size_t d, double z,
                           double *diff, double *lo, double *hi);

#endif
