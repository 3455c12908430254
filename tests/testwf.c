#include "testwf.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

workflow *tu_load_workflow(const char *base, const char *extra)
{
    size_t nb = strlen(base), ne = extra ? strlen(extra) : 0;
    char *text = malloc(nb + ne + 1);
    workflow *wf = NULL;
    nsed_err e = {0};

    ck_assert_ptr_nonnull(text);
    memcpy(text, base, nb);
    if (ne)
        memcpy(text + nb, extra, ne);
    text[nb + ne] = '\0';
    ck_assert_msg(workflow_load_string("t.yaml", text, nb + ne, &wf, &e) == 0,
                  "%s", e.msg);
    free(text);
    return wf;
}
