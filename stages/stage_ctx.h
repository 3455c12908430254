/* stage_ctx.h -- what the runner knows beyond the workflow, handed to the
 * stages that compute (aggregate, converge) through stage_reduce. */
#ifndef NSED_STAGES_STAGE_CTX_H
#define NSED_STAGES_STAGE_CTX_H

#include <stddef.h>

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
} stage_ctx;

/* A ctx with nothing known (every fit -1, no reliability). */
stage_ctx stage_ctx_none(void);

#endif
