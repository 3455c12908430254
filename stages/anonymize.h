/* anonymize.h -- stage 2: strip what identifies an author, fence, shuffle,
 * label. Makes no model calls.
 *
 * For every seat whose proposal is OK (SKIPped and failed seats are not
 * candidates) the anonymizer builds the text evaluators will see:
 *
 *  1. identity sentences are removed whole (up to and including their
 *     '.', '!', '?' or line end): sentences that start with "As an AI" /
 *     "As an artificial intelligence" / "As a (large) language model" /
 *     "As an LLM" and contain the word "by" ("As an AI developed by
 *     OpenAI, ..."); sentences that start with "I am" / "I'm" / "My name
 *     is", optionally followed by a / an / the / called, and then a known
 *     name ("I am Claude."); and "I am an AI / a (large)
 *     language model ..." sentences that contain "by" or a known name;
 *  2. a signature at the end is removed: a last line that starts with
 *     "--", an em or en dash or "~" and is short (at most 80 bytes, no
 *     '\', '{', '}' or '=' in it, so a final "-- \boxed{5}" stays), or a
 *     last line starting with "Signed", or a short last line after a line
 *     "Regards," / "Best regards," / "Sincerely," / "Best," / "Cheers,";
 *  3. every known name is replaced by "[redacted]": the workflow's model
 *     ids, served model names (and the part after the last '/'), families,
 *     and the built-in vendor/model list (anonymize_builtin_names). Matches
 *     are case-insensitive and whole-word: not glued to a letter, digit or
 *     '_' on either side, not after '\' (so LaTeX \phi, \alpha survive),
 *     and not part of a hyphenated word ("meta-analysis" stays). A version
 *     glued on by '-' or one space and starting with a digit goes with the
 *     name ("GPT-4o-mini", "Llama 3.1"). Names shorter than 3 bytes are
 *     not used (they would hit ordinary words);
 *  4. lines that start with "=====" (after blanks, including invisible
 *     ones, and with every kind of line break) are neutralized (text.h).
 *
 * The candidates are then shuffled with a permutation seeded from (run
 * seed, question id, round) and labelled A, B, C, ... in that order; the
 * label -> seat map lives in the state only. Each seat that evaluates gets
 * the order it will be shown (state_evaluation.shown): under
 * scoring.candidate_order shared (the default) the round's order without
 * the candidates the mask hides from it; under per_evaluator that list
 * shuffled again, seeded from (run seed, question id, round, seat), and
 * the round marked per_evaluator (evaluate.h labels it by position). The fence nonce for their
 * blocks is derived from (run seed, question id, round) and a digest of the
 * candidates' texts in label order, and re-derived until it occurs in no
 * candidate's text (seed_fence): a reply cannot predict the fence it will
 * be shown in, and together with step 4 no candidate can close its block
 * or open another one. No candidate text makes the stage fail.
 */
#ifndef NSED_STAGES_ANONYMIZE_H
#define NSED_STAGES_ANONYMIZE_H

#include "pipeline/base/err.h"
#include "pipeline/workflow/workflow.h"
#include "stages/state.h"

#include <stddef.h>

/* Opaque list of names to redact. */
typedef struct anonymize_names anonymize_names;

/* The built-in vendor and model names (static, n set to their count). */
const char *const *anonymize_builtin_names(size_t *n);

/* Build the name list for wf (NULL: built-in names only) plus extra[0..n)
 * (may be NULL). Returns 0 and sets *out (free with anonymize_names_free)
 * or NSED_ENOMEM. */
NSED_MUST_CHECK int anonymize_names_new(const workflow *wf,
                                        const char *const *extra,
                                        size_t nextra, anonymize_names **out);

void anonymize_names_free(anonymize_names *names);

/* Steps 1-4 above on text (valid UTF-8). The result is at most
 * STATE_TEXT_MAX bytes (cut as text.h cuts). Returns 0 and sets *out
 * (malloc'd) and *redactions (sentences, signatures and names removed),
 * or NSED_ENOMEM. */
NSED_MUST_CHECK int anonymize_sanitize(const anonymize_names *names,
                                       const char *text, char **out,
                                       size_t *redactions);

/* Run the stage on st (stage must be STATE_STAGE_ANONYMIZE): fill
 * cur->cands / ncand / fence, set up cur->evals (see evaluate.h for who
 * evaluates) and move to STATE_STAGE_EVALUATE. Returns 0; NSED_EINTERNAL
 * when the stage is wrong (a bug in the caller); NSED_ENOMEM. On failure
 * st is unchanged. */
NSED_MUST_CHECK int anonymize_run(state *st, const workflow *wf,
                                  nsed_err *err);

#endif
