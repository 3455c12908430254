/* broker.h -- picks the team (the seats) for each question.
 *
 * The workflow's tiers map a question's tags to a team template
 * (workflow_team_for_tags). With `policy: fixed` the template's roles are
 * used as written: a role with count c whose admitted models (models and
 * families it lists, in workflow order) are m_0..m_{n-1} fills its seats
 * with m_0, m_1, ... m_{c-1}, wrapping around when c > n (so `count: 3,
 * models: [a]` is a homogeneous team of three a's).
 */
#ifndef NSED_BROKER_H
#define NSED_BROKER_H

#include "pipeline/err.h"
#include "pipeline/workflow.h"
#include "stages/state.h"

#include <stddef.h>

typedef struct broker_team {
    const workflow_team *team;               /* the template used */
    state_seat_spec seats[WORKFLOW_MAX_SEATS]; /* role/persona point into wf */
    size_t nseats;
} broker_team;

/* Choose the seats for a question with these tags. Returns 0 and fills
 * *out; NSED_EINVAL (err says why) for a policy this build cannot apply
 * (knapsack). */
int broker_choose(const workflow *wf, const char *const *tags, size_t ntags,
                  broker_team *out, nsed_err *err);

#endif
