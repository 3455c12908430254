#include "pipeline/base/two.h"
