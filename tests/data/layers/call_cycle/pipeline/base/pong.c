#include "pipeline/base/ping.h"
#include "pipeline/base/pong.h"

int pong(int n)
{
    return n > 0 ? ping(n - 1) : 1;
}
