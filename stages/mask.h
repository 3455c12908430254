/* mask.h -- who scores whom in a round (the diagonal mask).
 *
 * A seat is shown every candidate of the round except its own; with
 * scoring.allow_self_votes it is shown its own too. A seat lost to
 * infrastructure in this round's proposals (which includes a seat lost in
 * an earlier round: propose closes its proposal as lost), and a seat with
 * nothing to see, makes no evaluation call. Evaluate plans by these rules, anonymize
 * starts each seat's evaluation status from them, aggregate counts only
 * the shown cells of the vote matrix, converge finds a seat's candidate.
 */
#ifndef NSED_STAGES_MASK_H
#define NSED_STAGES_MASK_H

#include "stages/state.h"

#include <stdbool.h>
#include <stddef.h>

/* The candidate index the seat wrote in round r, or -1 (none). */
long mask_own_candidate(const state_round *r, size_t seat);

/* Whether candidate cand is shown to seat in round r. */
bool mask_shows(const state_round *r, size_t seat, size_t cand,
                bool self_votes);

/* The evaluation status a seat starts the round's evaluate stage with
 * (PENDING or IDLE), by the rules above; a propose-only seat
 * (state_seat.propose_only) is IDLE: it is shown nothing and makes no
 * call, while its own candidate is evaluated by the others. */
enum state_eval_status mask_initial_status(const state_round *r, size_t seat,
                                           bool self_votes, bool propose_only);

#endif
