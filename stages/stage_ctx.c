#include "stages/stage_ctx.h"

stage_ctx stage_ctx_none(void)
{
    stage_ctx c = {0};

    c.fit_p_g = c.fit_p_v = c.fit_lambda = c.fit_beta = c.fit_k = -1;
    c.fit = STAGE_FIT_PRIOR;
    return c;
}
