#include "stages/request.h"

#include <stdlib.h>
#include <string.h>

void stage_requests_release(stage_requests *list)
{
    if (!list)
        return;
    for (size_t i = 0; i < list->n; i++) {
        stage_request *r = &list->items[i];

        for (size_t k = 0; k < r->nmessages; k++)
            free(r->messages[k].content);
        free(r->json_schema);
    }
    free(list->items);
    list->items = NULL;
    list->n = 0;
}

stage_request *stage_requests_add(stage_requests *list)
{
    stage_request *v = realloc(list->items, (list->n + 1) * sizeof *v);

    if (!v)
        return NULL;
    list->items = v;
    memset(&v[list->n], 0, sizeof v[list->n]);
    return &v[list->n++];
}

int stage_request_add_message(stage_request *r, enum stage_role role,
                              const char *content)
{
    char *c;

    /* every stage adds a fixed number of messages, so a full request
     * means the stage itself is wrong, not its input */
    if (r->nmessages >= STAGE_MAX_MESSAGES)
        return NSED_EINTERNAL;
    c = strdup(content ? content : "");
    if (!c)
        return NSED_ENOMEM;
    r->messages[r->nmessages].role = role;
    r->messages[r->nmessages++].content = c;
    return 0;
}

const char *stage_kind_name(enum stage_kind k)
{
    switch (k) {
    case STAGE_KIND_PROPOSE: return "propose";
    case STAGE_KIND_EVALUATE: return "evaluate";
    case STAGE_KIND_REPAIR: return "repair";
    case STAGE_KIND_SELFCONS:
        return "self_consistency";
    }
    return "?";
}

const char *stage_role_name(enum stage_role r)
{
    switch (r) {
    case STAGE_ROLE_SYSTEM: return "system";
    case STAGE_ROLE_USER: return "user";
    case STAGE_ROLE_ASSISTANT: return "assistant";
    }
    return "?";
}

int stage_render_system(const workflow *wf, const state_seat *seat, buf *out)
{
    workflow_prompt_var vars[] = {
        {"persona", seat->persona},
        {"role", seat->role},
    };

    return workflow_prompt_render(wf->prompts.system, vars, 2, out);
}

int stage_request_add_chat(stage_request *r, const workflow *wf,
                           const state_seat *seat, const char *user)
{
    buf sys;
    int rc;

    buf_init(&sys, STAGE_PROMPT_MAX);
    rc = stage_render_system(wf, seat, &sys);
    if (!rc)
        rc = stage_request_add_message(r, STAGE_ROLE_SYSTEM, sys.ptr);
    if (!rc)
        rc = stage_request_add_message(r, STAGE_ROLE_USER, user);
    buf_release(&sys);
    return rc;
}
