/* cli_out.c -- checking what the commands print to stdout. */
#include "pipeline/cli/cli.h"

#include <errno.h>
#include <string.h>

int cli_stdout_flush(nsed_err *err)
{
    int e;

    if (fflush(stdout) == 0 && !ferror(stdout))
        return 0;
    /* the errno of the write that failed, when nothing failed since */
    e = errno;
    if (e == EPIPE)
        return 0;
    return nsed_error(err, NSED_EIO, "write failed: %s",
                      strerror(e ? e : EIO));
}
