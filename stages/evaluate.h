/* evaluate.h -- stage 3: anonymous cross-evaluation.
 *
 * Who evaluates: every seat that was not lost to infrastructure in this
 * round's proposals -- seats with a candidate, seats that replied SKIP and
 * seats whose reply was empty or unusable alike. A seat is shown every
 * candidate except its own (the diagonal mask, mask.h); with
 * scoring.allow_self_votes it is shown its own too. A seat with nothing to
 * see (its own is the only candidate), and every seat when there is no
 * candidate, is STATE_EVAL_IDLE and makes no call.
 *
 * The call: system message, then wf->prompts.evaluate with {question}, the
 * candidate blocks ({candidates}, in the order anonymize recorded for the
 * seat, state_evaluation.shown, separated by a blank line) and {labels}.
 * In the shared order the blocks come in label order under the
 * candidates' own labels ("A, C, D"); in a per_evaluator round they are
 * labelled A, B, C, ... by shown position, and the reply's labels are read
 * against those positions and mapped back to candidates through shown (so
 * its own candidate has no label to score, and a label past the ones shown
 * is unknown). A state that recorded no order (an older nsed) is shown
 * the shared order. For a model with structured_output the
 * request carries a JSON schema (evaluate_schema) for response_format,
 * which asks for exactly one entry per candidate shown.
 *
 * Parsing a reply (evaluate_parse) is lenient about form and strict about
 * content: the reply's own object is used -- the last top-level JSON
 * object in it that has an "evaluations" array (json_find_last_object:
 * objects nested in another are not top level; a ```json fence or prose
 * around it is fine; at most 256 '{' positions are parsed) -- so an object
 * the evaluator quotes before its own, say a candidate's injected scores,
 * is not taken for its answer. Each entry needs a
 * "candidate" label -- trimmed, an optional leading word "candidate"
 * dropped, upper-cased ("b", "Candidate B" -> B) -- and a numeric "weight"
 * (a JSON number, or a string holding only a number), rounded to the
 * nearest integer and clamped to [-100, 100]; "critique" is optional.
 * Dropped and counted: entries for the evaluator's own candidate (unless
 * self votes are allowed), for labels that are no candidate, entries with
 * no usable label or weight, and later entries for a label already
 * scored. A reply that scores only some of the candidates shown is kept
 * entry by entry: what it scored counts, a label it left out simply has no
 * weight from this evaluator (the aggregate scores each candidate over the
 * evaluators that scored it), since a partial judgement is still one. A
 * reply with no usable entry at all -- an empty "evaluations" list
 * included -- is unusable: the seat gets one repair call (the original
 * messages, its reply as an assistant turn, then wf->prompts.repair with
 * {error} and {labels}); if that reply is unusable too the seat abstains
 * this round (STATE_EVAL_ABSTAINED).
 *
 * A reply cut at max_tokens (response truncated, finish_reason "length")
 * marks the evaluation truncated (state_evaluation.truncated, in the state
 * and the stored round). If it still parses it is used; if not, the repair's
 * {error} says the reply was cut off and asks for the JSON only with short
 * critiques, and the repair is sent with EVALUATE_REPAIR_BUDGET times the
 * model's max_tokens (stage_request.max_tokens).
 *
 * A first evaluation call that fails through infrastructure marks the seat
 * lost (STATE_EVAL_FAILED, state.missing); one that fails otherwise counts
 * as an unusable reply. A repair call is optional (stage_request.optional):
 * when it fails, whatever the error, the seat abstains this round and the
 * question goes on.
 */
#ifndef NSED_STAGES_EVALUATE_H
#define NSED_STAGES_EVALUATE_H

#include "pipeline/base/err.h"
#include "pipeline/workflow/workflow.h"
#include "stages/request.h"
#include "stages/state.h"

#include <stdbool.h>
#include <stddef.h>

/* '{' positions evaluate_parse tries. */
#define EVALUATE_JSON_TRIES 256
/* maxLength of a critique in the schema (characters): enough to name a
 * candidate's main error, and it bounds a schema-constrained reply to a few
 * hundred tokens per candidate, so a reply fits a usual max_tokens. (What is
 * kept of a critique that does come longer is STATE_CRITIQUE_MAX.) */
#define EVALUATE_SCHEMA_CRITIQUE_MAX 600
/* A repair after a reply cut at max_tokens is sent with this many times the
 * model's max_tokens: the same budget again would likely cut it again. */
#define EVALUATE_REPAIR_BUDGET 2

/* Parse an evaluation reply. ncand: candidates in the round; own: the
 * evaluator's candidate or -1; self_votes: keep a score of own. On success
 * returns 0 and fills out->weights / nweights / dropped_* (other fields
 * untouched; out must hold no weights yet). Returns NSED_EINVAL with why
 * filled (a short reason, safe to show the model: it never quotes the
 * reply) when the reply is unusable; NSED_ENOMEM. */
NSED_MUST_CHECK int evaluate_parse(const char *reply, size_t ncand, long own,
                                   bool self_votes, state_evaluation *out,
                                   char *why, size_t whysize);

/* The JSON schema of an evaluation reply whose candidate labels are
 * labels[0..n) (the labels shown to one evaluator): an object with only an
 * "evaluations" array of exactly n items (minItems = maxItems = n), each an
 * object with only the required "candidate" (one of the labels), "weight"
 * (integer -100..100) and "critique" (string of at most
 * EVALUATE_SCHEMA_CRITIQUE_MAX characters). Compact JSON, malloc'd into
 * *out. Returns 0 or NSED_ENOMEM. */
NSED_MUST_CHECK int evaluate_schema(const char *const *labels, size_t n,
                                    char **out);

/* The evaluation user message for seat in the current round, appended to
 * out, and the labels it shows (", "-separated) into labels_out (may be
 * NULL). Same returns as workflow_prompt_render. */
NSED_MUST_CHECK int evaluate_render(const state *st, const workflow *wf,
                                    size_t seat, buf *out, buf *labels_out);

/* Requests for every PENDING seat (evaluate) and REPAIR seat (repair).
 * Same returns as stage_plan. */
NSED_MUST_CHECK int evaluate_plan(const state *st, const workflow *wf,
                                  stage_requests *out);

/* Record responses; advance to aggregate when no seat is PENDING or
 * REPAIR. Same returns as stage_reduce; st unchanged on failure. */
NSED_MUST_CHECK int evaluate_reduce(state *st, const workflow *wf,
                                    const stage_response *resps, size_t n,
                                    nsed_err *err);

#endif
