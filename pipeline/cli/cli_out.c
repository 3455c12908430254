/* cli_out.c -- checking what the commands print to stdout. */
#include "pipeline/cli/cli.h"

#include <errno.h>
#include <string.h>

int cli_stdout_flush(nsed_err *err)
{
    int failed;

    errno = 0;
    failed = fflush(stdout) != 0 || ferror(stdout);
    if (!failed || errno == EPIPE)
        return 0;
    return nsed_error(err, NSED_EIO, "write failed: %s",
                      strerror(errno ? errno : EIO));
}
