/* testwf.h -- workflow fixtures for the stage suites. */
#ifndef NSED_TESTWF_H
#define NSED_TESTWF_H

#include "pipeline/workflow/workflow.h"

/* Load the workflow text base followed by extra (NULL for none) under the
 * name "t.yaml"; a load error fails the current test with its message. */
workflow *tu_load_workflow(const char *base, const char *extra);

/* The default prompts before they were reordered for the prefix cache
 * (issue 15, commit c614f5b) for `answer.extract: boxed`, as a `prompts:`
 * section, the text docs/workflow.md gives to pin them: set in a
 * workflow, they give it the hash the older nsed gave it without them. */
extern const char tu_previous_prompts[];

#endif
