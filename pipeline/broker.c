#include "pipeline/broker.h"

static void fixed_seats(const workflow_team *t, broker_team *out)
{
    size_t n = 0;

    for (size_t r = 0; r < t->nroles; r++) {
        const workflow_role *role = &t->roles[r];

        for (int k = 0; k < role->count && n < WORKFLOW_MAX_SEATS; k++) {
            out->seats[n].model = role->allowed[(size_t)k % role->nallowed];
            out->seats[n].role = role->name;
            out->seats[n].persona = role->persona;
            n++;
        }
    }
    out->nseats = n;
}

int broker_choose(const workflow *wf, const char *const *tags, size_t ntags,
                  broker_team *out, nsed_err *err)
{
    const workflow_team *t = workflow_team_for_tags(wf, tags, ntags);

    switch (wf->broker.policy) {
    case WORKFLOW_POLICY_FIXED:
        out->team = t;
        fixed_seats(t, out);
        return 0;
    case WORKFLOW_POLICY_KNAPSACK:
        break;
    }
    return nsed_error(err, NSED_EINVAL,
                      "%s: broker policy \"knapsack\" is not available in "
                      "this version of nsed; use policy: fixed",
                      wf->source);
}
