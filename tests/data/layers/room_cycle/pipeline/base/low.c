#include "pipeline/base/low.h"
#include "store/keep.h"
