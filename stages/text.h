/* text.h -- text helpers shared by the stages: capped UTF-8 copies, fenced
 * prompt blocks, candidate labels.
 *
 * Everything that goes into a prompt from a model reply passes through
 * here, so the rules that keep prompts bounded and unambiguous live in one
 * place:
 *
 *  - stored model text is valid UTF-8 (each invalid byte becomes U+FFFD)
 *    and at most a given number of bytes; a cut falls on a character
 *    boundary and leaves the visible marker TEXT_TRUNCATED;
 *  - a block is the line "=====BEGIN <KIND>[ <LABEL>] fence <HEX>=====",
 *    the body, and the line "=====END <KIND>[ <LABEL>] fence <HEX>=====",
 *    the contract the simulated server (docs/nsed-sim.md) and the default
 *    prompts share. Inside a body every line whose first non-blank
 *    characters are "=====" is prefixed with "> ", so no body line can look
 *    like a marker line, whatever fence it guesses. A line ends at any
 *    break a reader may honour (LF, CR LF, a lone CR, VT, FF, U+001C..1E,
 *    U+0085, U+2028, U+2029), and "blank" takes in the Unicode spaces and
 *    invisible format characters (U+00A0, U+200B, U+FEFF, ...; see
 *    text.c), so a marker hidden behind any of them is neutralized too;
 *  - candidates are labelled A..Z, AA, AB, ... (bijective base 26).
 *
 * Nothing here keeps state; functions that append to a buf return the
 * buf_add codes (0, NSED_ETOOBIG past the buf's cap, NSED_ENOMEM).
 */
#ifndef NSED_STAGES_TEXT_H
#define NSED_STAGES_TEXT_H

#include "pipeline/base/buf.h"
#include "pipeline/base/err.h"

#include <stdbool.h>
#include <stddef.h>

/* What a cut text ends with (counted inside the cap). */
#define TEXT_TRUNCATED "[\xe2\x80\xa6 truncated]"
/* Hex digits of a fence nonce. */
#define TEXT_FENCE_HEX 8
/* Bytes of a label buffer: "A".."ZZZZZZZ" and the NUL. */
#define TEXT_LABEL_MAX 8
/* The prefix that neutralizes a body line starting with "=====". */
#define TEXT_NEUTRAL_PREFIX "> "

/* Copy s[0..len) into a new NUL-terminated string that is valid UTF-8
 * (every byte that does not start a well-formed sequence becomes U+FFFD;
 * NUL bytes too) and at most cap bytes long. A longer text is cut on a
 * character boundary and ends with "\n" TEXT_TRUNCATED, the whole within
 * cap (cap must be at least 64). Returns 0 and sets *out (malloc'd) or
 * NSED_ENOMEM. */
NSED_MUST_CHECK int text_clean(const char *s, size_t len, size_t cap,
                               char **out);

/* Append s[0..len) to out, cut as text_clean cuts when it is longer than
 * cap bytes (s must already be valid UTF-8; cap at least 64). */
NSED_MUST_CHECK int text_add_capped(buf *out, const char *s, size_t len,
                                    size_t cap);

/* Append s[0..len) with every line (ended by any break listed above)
 * whose first non-blank characters (blanks as listed above) are "====="
 * prefixed by TEXT_NEUTRAL_PREFIX at the line's start. Applying it twice
 * changes nothing more. */
NSED_MUST_CHECK int text_add_neutralized(buf *out, const char *s, size_t len);

/* Append a fenced block: the BEGIN line, body (neutralized; a newline is
 * added when it does not end with one) and the END line without a final
 * newline. label may be NULL (no label); fence is TEXT_FENCE_HEX lower-case
 * hex digits. */
NSED_MUST_CHECK int text_add_block(buf *out, const char *kind,
                                   const char *label, const char *fence,
                                   const char *body, size_t len);

/* Label of candidate index i: 0 -> "A", 25 -> "Z", 26 -> "AA", 27 -> "AB".
 * i must be below 26 + 26^2 + ... (any realistic count; the stages allow at
 * most WORKFLOW_MAX_SEATS candidates). */
void text_label(size_t i, char out[TEXT_LABEL_MAX]);

/* Inverse of text_label for s[0..len) (upper-case letters only). Returns
 * 0 and sets *index, or NSED_EINVAL when s is not a label. */
NSED_MUST_CHECK int text_label_index(const char *s, size_t len, size_t *index);

/* Shrink [*s, *s + *len) past leading and trailing white space. */
void text_trim(const char **s, size_t *len);

/* True when c is an ASCII letter, digit or underscore. */
bool text_is_word(char c);

/* Case-insensitive (ASCII) comparison of n bytes. */
bool text_eq_ci(const char *a, const char *b, size_t n);

#endif
