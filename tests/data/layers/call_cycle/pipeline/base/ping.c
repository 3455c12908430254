#include "pipeline/base/ping.h"
#include "pipeline/base/pong.h"

int ping(int n)
{
    return n > 0 ? pong(n - 1) : 0;
}
