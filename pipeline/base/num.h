/* num.h -- strict parsing of numbers given on a command line. */
#ifndef NSED_NUM_H
#define NSED_NUM_H

#include "pipeline/base/err.h"

#include <stdint.h>

/* Parse s as a decimal unsigned integer no larger than max: digits only
 * (no sign, no spaces, no trailing text). Returns 0 and sets *out, or
 * NSED_EINVAL (out untouched). */
NSED_MUST_CHECK int num_parse_u64(const char *s, uint64_t max, uint64_t *out);

#endif
