/* testwf.h -- workflow fixtures for the stage suites. */
#ifndef NSED_TESTWF_H
#define NSED_TESTWF_H

#include "pipeline/workflow/workflow.h"

/* Load the workflow text base followed by extra (NULL for none) under the
 * name "t.yaml"; a load error fails the current test with its message. */
workflow *tu_load_workflow(const char *base, const char *extra);

#endif
