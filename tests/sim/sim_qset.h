/* sim_qset.h -- the simulator's question set: question text -> reference.
 *
 * Loaded once at start-up from a questions JSONL file (read with
 * questions_read_file() from pipeline/questions/questions.h) into a hash table keyed
 * by the trimmed question text, and read-only afterwards, so lookups from
 * many connection threads need no lock.
 */
#ifndef NSED_SIM_QSET_H
#define NSED_SIM_QSET_H

#include "pipeline/base/err.h"
#include "sim_prompt.h"

#include <stddef.h>

typedef struct sim_qset sim_qset;

/* Load the question set at path into a new table (*out; free with
 * sim_qset_free). path NULL gives an empty set. When the same trimmed text
 * appears twice the first entry wins. Returns 0, or the error of
 * questions_read_file (NSED_EIO, NSED_EINVAL with file:line in err,
 * NSED_ETOOBIG) or NSED_ENOMEM; *out is written only on success. */
int sim_qset_load(const char *path, sim_qset **out, nsed_err *err);

/* Reference answer for a question text (trimmed before lookup), or NULL
 * when the question is unknown. The string belongs to the set. */
const char *sim_qset_answer(const sim_qset *qs, sim_span text);

/* Number of distinct questions. */
size_t sim_qset_count(const sim_qset *qs);

/* Free the table. NULL is ignored. */
void sim_qset_free(sim_qset *qs);

#endif
