#include "store/keep.h"

int keep_value(void)
{
    return low_value() + 1;
}
