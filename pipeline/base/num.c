#include "pipeline/base/num.h"

#include "pipeline/base/err.h"

#include <errno.h>
#include <stdlib.h>

int num_parse_u64(const char *s, uint64_t max, uint64_t *out)
{
    char *end;
    unsigned long long v;

    if (*s < '0' || *s > '9')
        return NSED_EINVAL;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (*end || errno == ERANGE || v > max)
        return NSED_EINVAL;
    *out = v;
    return 0;
}
