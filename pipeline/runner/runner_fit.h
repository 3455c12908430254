/* runner_fit.h -- the fit of the efficiency-fatigue curve (converge.h)
 *
 *     U(t) = 1 - (1 - u0) e^(-k t) - beta t^2
 *
 * to the per-round winner accuracy of the exploration slice: the questions
 * converge_in_slice picks, which run every round to rounds.max with no
 * early stop, so round t's accuracy is that of the same questions at
 * every t (no survivor bias). t is the round index (round 0 is t = 0, so
 * U(0) = u0 is the slice's round-0 winner accuracy, a free parameter).
 *
 * The fit is a weighted nonlinear least squares (GSL's
 * gsl_multifit_nlinear, trust region with Levenberg-Marquardt steps,
 * analytic Jacobian, weights n_t = the slice's judged winners of round t,
 * started from a few values of k, the least cost kept). With
 * y_t = k_t / n_t the slice's accuracy at round t:
 *   R^2    = 1 - sum n_t (y_t - U(t))^2 / sum n_t (y_t - ybar)^2,
 *            ybar = sum n_t y_t / sum n_t (1 when both sums are 0, 0 when
 *            only the second is);
 *   se     = sqrt(diag((J'WJ)^-1) * chi^2 / (m - 3)), chi^2 the weighted
 *            residual sum of squares, m the rounds fitted;
 *   95%    = est +- t_{0.975, m-3} se (Student's t);
 *   T_opt  = converge_t_opt_k(u0, k, beta): W((1-u0) k^2 / (2 beta)) / k,
 *            INFINITY when beta <= 0 < k (no peak), 0 when k <= 0.
 */
#ifndef NSED_RUNNER_FIT_H
#define NSED_RUNNER_FIT_H

#include "pipeline/base/err.h"

#include <stdbool.h>
#include <stddef.h>

/* Rounds with data a fit needs: 3 parameters and one degree of freedom. */
#define RUNNER_FIT_MIN_POINTS 4
/* The runner refits after this many newly finished slice questions. */
#define RUNNER_FIT_EVERY 10

/* One fitted parameter: its estimate, standard error and 95% interval
 * (se, lo and hi are NAN when the fit has no degree of freedom left or
 * the covariance is singular). */
typedef struct runner_fit_param {
    double est, se, lo, hi;
} runner_fit_param;

typedef struct runner_fit {
    runner_fit_param u0, k, beta;
    double r2;        /* weighted, as above */
    double t_opt;     /* INFINITY: no peak */
    size_t points;    /* rounds fitted */
    double judged;    /* sum n_t */
    double questions; /* finished slice questions (set by the caller) */
} runner_fit;

/* Fit U(t) to n[t] judged winners, k[t] of them right, t = 0..len-1
 * (rounds with n[t] <= 0 are left out). Returns 0 and fills *out;
 * NSED_ENOTFOUND when fewer than RUNNER_FIT_MIN_POINTS rounds have data or
 * no start converges to finite values; NSED_ENOMEM. */
NSED_MUST_CHECK
int runner_fit_curve(const double *n, const double *k, size_t len,
                     runner_fit *out);

/* Whether the fit may stop questions: R^2 >= min_r2 and questions >=
 * min_questions. When not, why[] says so ("R^2 0.41 < 0.8", "12 slice
 * questions < 30"); "" when it may. */
bool runner_fit_good(const runner_fit *f, double min_r2, double min_questions,
                     char *why, size_t whylen);

#endif
