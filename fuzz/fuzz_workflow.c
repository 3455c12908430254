/* fuzz_workflow.c -- the workflow loader (pipeline/workflow):
 * workflow_load_string on arbitrary bytes.
 *
 * Checked: a failed load fills no workflow and says why (every error is
 * bad input, too big, or out of memory, and carries a message); a loaded
 * workflow has a canonical form and a hash, loading the same text again
 * gives the same hash (the loader depends on nothing but the text and the
 * environment), and the normalized print succeeds. Seeds:
 * tests/data/workflows (good and bad) and workflows/.
 */
#include "fuzz/fuzz.h"
#include "pipeline/workflow/workflow.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_bytes(data, size);
    workflow *wf = NULL, *again = NULL;
    nsed_err err = {0};
    char *printed = NULL;
    size_t plen = 0;
    FILE *mem;
    int rc;

    if (!text)
        return 0;
    rc = workflow_load_string("fuzz.yaml", text, size, &wf, &err);
    if (rc != 0) {
        FUZZ_CHECK(wf == NULL);
        FUZZ_CHECK(rc == NSED_EINVAL || rc == NSED_ETOOBIG ||
                   rc == NSED_ENOMEM);
        FUZZ_CHECK(rc == NSED_ENOMEM || fuzz_has_msg(err.msg, sizeof err.msg));
        goto out;
    }
    FUZZ_CHECK(workflow_canonical(wf)[0] == '{');
    FUZZ_CHECK(strlen(workflow_hash(wf)) == HASH_HEX_LEN);
    rc = workflow_load_string("fuzz.yaml", text, size, &again, &err);
    FUZZ_CHECK_OK(rc, err.msg);
    if (rc == 0)
        FUZZ_CHECK(strcmp(workflow_hash(wf), workflow_hash(again)) == 0);
    /* in memory: the harness writes no file */
    mem = open_memstream(&printed, &plen);
    if (mem) {
        rc = workflow_print_normalized(wf, mem);
        FUZZ_CHECK(rc == 0 || rc == NSED_ENOMEM);
        fclose(mem);
    }
out:
    free(printed);
    workflow_free(again);
    workflow_free(wf);
    free(text);
    return 0;
}
