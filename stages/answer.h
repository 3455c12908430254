/* answer.h -- final answers: extraction from a reply, comparison, majority
 * vote.
 *
 * Extractors (workflow answer.extract); each returns the answer trimmed of
 * surrounding white space, except code_block, which keeps the code's
 * indentation and drops only its final line ends:
 *   boxed        the content of the last \boxed{...} whose braces balance
 *                (nested braces allowed: \boxed{\frac{1}{2}} -> \frac{1}{2});
 *                "last" means the one that starts last, so
 *                \boxed{\boxed{3}} gives 3.
 *   regex        the first capture group of the first match of
 *                answer.pattern (PCRE2, UTF mode: \d is a digit); no match, or a group that took
 *                no part in it, is no answer.
 *   last_number  the last number in the text: an optional sign (+, -, or
 *                U+2212 when not glued to a word), digits with optional
 *                thousands separators (a comma followed by exactly three
 *                digits), an optional decimal part (".5" reads "0.5"), optionally
 *                "/digits" making a fraction. The result is normalized:
 *                separators and a leading + removed, U+2212 written "-",
 *                so "1,234.5" -> "1234.5", "−3" -> "-3"; a fraction stays
 *                a fraction ("3/4") and compares numerically as 0.75.
 *                Exponents (1e5) are not read as one number.
 *   json_field   the value of answer.field in the last JSON object of the
 *                text that has it (the last 64 '{' positions are tried, so
 *                a reply with prose and several objects works); a dotted
 *                field "a.b" is looked up as a literal key first, then as a
 *                path. Strings are taken as they are, numbers, booleans
 *                and null in their JSON spelling, arrays and objects as
 *                compact JSON.
 *   code_block   the content of the last fenced block (``` or ~~~, at
 *                least three, closed by a fence of the same character at
 *                least as long); the info string after the opening fence
 *                is dropped; an unclosed last fence runs to the end.
 *
 * Comparators (workflow answer.compare) compare an answer with the
 * question's reference:
 *   exact        byte equality after trimming white space.
 *   numeric      both read as numbers (answer_number), then
 *                |a - ref| <= tolerance * max(1, |ref|): absolute below 1,
 *                relative above. When either side is not a number the
 *                answers are compared as `normalized` instead.
 *   normalized   answer_normalize of both is equal.
 *   regex        the reference is a PCRE2 pattern that must match the whole
 *                trimmed answer.
 * Two answers of two seats (stable-answer rule, majority vote) are
 * compared the same way, except that `numeric` scales the tolerance by
 * max(1, |a|, |b|) (symmetric) and `regex` compares them as `normalized`
 * (neither of them is a pattern).
 */
#ifndef NSED_STAGES_ANSWER_H
#define NSED_STAGES_ANSWER_H

#include "pipeline/base/err.h"
#include "pipeline/workflow/workflow.h"

#include <stdbool.h>
#include <stddef.h>

/* Extract the final answer of text by a->extract. Returns 0 and sets *out
 * (malloc'd, trimmed, possibly empty for e.g. \boxed{}); NSED_ENOTFOUND
 * when the text has none; NSED_EINVAL when a->pattern does not compile;
 * NSED_ENOMEM. */
NSED_MUST_CHECK int answer_extract(const workflow_answer *a, const char *text,
                                   char **out);

/* True when answer matches the reference under a->compare (NULL on either
 * side never matches). */
bool answer_matches(const workflow_answer *a, const char *answer,
                    const char *reference);

/* True when two answers are the same under a->compare (regex compares as
 * normalized). NULL never equals anything. */
bool answer_same(const workflow_answer *a, const char *x, const char *y);

/* Read s as a number: optional white space and $ around it; an optional
 * sign; digits with comma thousands separators; a decimal part; an
 * exponent; a fraction "a/b" or "\frac{a}{b}" (also \dfrac, \tfrac, with a
 * sign before it); a trailing "%" or "\%" is dropped, so "50%" reads 50
 * (percent answers are almost always written against a percent
 * reference). Returns 0 and sets *out, or NSED_EINVAL. */
NSED_MUST_CHECK int answer_number(const char *s, double *out);

/* The normalized form of s: \text{}, \textbf{}, \textit{}, \textrm{},
 * \mathrm{}, \mathbf{} and \mbox{} unwrapped to their content; ASCII
 * letters lower-cased; white space, LaTeX spacing (\, \; \! \: "\ " and ~)
 * removed; the punctuation . , ; : ! ? ' " ` ( ) [ ] { } $ removed, except
 * a '.' or ',' between two digits (so 3.5 stays apart from 35). Returns a
 * malloc'd string or NULL when out of memory. */
NSED_MUST_CHECK char *answer_normalize(const char *s);

/* Majority vote among answers[0..n) (NULL entries are not votes): answers
 * are grouped with answer_same; the biggest group wins, a tie goes to the
 * group whose first member comes first. This is the final answer of a
 * question that never had a winner (converge), which must be some answer;
 * the round-0 baseline counts strictly instead (answer_tally_votes).
 * Returns 0 and sets *winner to the index of that first member and *votes
 * to the group's size;
 * NSED_ENOTFOUND when there is no vote at all. */
NSED_MUST_CHECK int answer_majority(const workflow_answer *a,
                                    const char *const *answers, size_t n,
                                    size_t *winner, size_t *votes);

/* The votes of answers[0..n) counted strictly (n <= WORKFLOW_MAX_SEATS;
 * NULL entries are not votes): answers are grouped with answer_same, as
 * answer_majority does. */
typedef struct answer_tally {
    size_t votes; /* size of the biggest group; 0 when there is no vote */
    size_t ntied; /* groups of that size: 1 is a majority, more a tie */
    size_t tied[WORKFLOW_MAX_SEATS]; /* index of the first member of each
                                        group of that size, ascending */
} answer_tally;

/* Count the votes of answers[0..n) into *out. The strict majority is
 * answers[out->tied[0]] when out->votes > 0 and out->ntied == 1; with
 * ntied > 1 the top count is shared (a tie: no majority). Unlike
 * answer_majority, nothing is decided by position. Returns 0, or
 * NSED_EINVAL when n > WORKFLOW_MAX_SEATS. */
NSED_MUST_CHECK int answer_tally_votes(const workflow_answer *a,
                                       const char *const *answers, size_t n,
                                       answer_tally *out);

#endif
