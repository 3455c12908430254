#include "store/keep.h"

int top_inner(void);
