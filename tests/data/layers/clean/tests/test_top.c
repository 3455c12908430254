#include "pipeline/top/top_int.h"

int main(void)
{
    return top_inner() == 3 ? 0 : 1;
}
