#include "pipeline/base/low.h"

int keep_value(void);
