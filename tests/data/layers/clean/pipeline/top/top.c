#include "pipeline/top/top_int.h"

int top_inner(void)
{
    return keep_value() + low_value();
}
