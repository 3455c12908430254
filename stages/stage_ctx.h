/* stage_ctx.h -- what the runner knows beyond the workflow, handed to the
 * stages that compute (aggregate, converge) through stage_reduce. */
#ifndef NSED_STAGES_STAGE_CTX_H
#define NSED_STAGES_STAGE_CTX_H

#include <stddef.h>

/* What the efficiency-fatigue rule may take from the runner's fit
 * (converge.h). */
enum stage_fit {
    STAGE_FIT_PRIOR, /* fit_p_g .. fit_beta where not negative, else the
                        priors (no context, or one an older nsed stored) */
    STAGE_FIT_POOR,  /* the workflow leaves parameters open and the fit is
                        not good enough (R^2 or questions below the
                        workflow's thresholds): the rule does not stop */
    STAGE_FIT_GOOD,  /* fit_p_g (U(0)), fit_k and fit_beta are the curve
                        fitted on the exploration slice */
};

/* Everything is optional. */
typedef struct stage_ctx {
    /* Per-model reliability weights (index = wf->models index) used by
     * aggregate when scoring.reliability_weighting is on; NULL or a
     * non-finite or negative entry means 1.0. */
    const double *reliability;
    size_t nreliability;
    /* Efficiency-fatigue parameters fitted from telemetry; a negative
     * value means "not fitted" (see converge.h for the order of sources). */
    double fit_p_g, fit_p_v, fit_lambda, fit_beta;
    enum stage_fit fit;
    double fit_k; /* the fitted rate k of U(t) (STAGE_FIT_GOOD) */
} stage_ctx;

/* A ctx with nothing known (every fit -1, STAGE_FIT_PRIOR, no
 * reliability). */
stage_ctx stage_ctx_none(void);

#endif
