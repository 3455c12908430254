#include "pipeline/top/top_int.h"
