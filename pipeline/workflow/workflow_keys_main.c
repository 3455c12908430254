/* workflow_keys_main.c -- nsed-workflow-keys: print the workflow key
 * reference (docs/workflow-keys.md) made from the loader's key table.
 *
 *   ./build/pipeline/workflow/nsed-workflow-keys > docs/workflow-keys.md
 */
#include "pipeline/workflow/workflow.h"

#include <stdio.h>

int main(void)
{
    buf b;
    int rc;

    buf_init(&b, (size_t)1 << 20);
    rc = workflow_keys_markdown(&b);
    if (!rc && (fwrite(b.ptr, 1, b.len, stdout) != b.len || fflush(stdout)))
        rc = NSED_EIO;
    if (rc)
        fprintf(stderr, "nsed-workflow-keys: %s\n", nsed_strerror(rc));
    buf_release(&b);
    return rc ? 1 : 0;
}
