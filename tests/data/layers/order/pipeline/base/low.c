#include "store/keep.h"
