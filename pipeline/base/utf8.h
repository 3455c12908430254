/* utf8.h -- the one UTF-8 validator (RFC 3629).
 *
 * Well-formed means: no overlong forms, no surrogates (U+D800..U+DFFF),
 * nothing above U+10FFFF, no stray continuation bytes and no sequence cut
 * short by the end of the input. NUL is a well-formed one-byte sequence
 * here; callers that store C strings reject it themselves.
 */
#ifndef NSED_UTF8_H
#define NSED_UTF8_H

#include <stddef.h>

/* Length (1 to 4) of the well-formed UTF-8 sequence that starts at
 * p[0..n), or 0 when there is none (malformed, truncated, or n == 0). */
size_t utf8_seq_len(const void *p, size_t n);

/* Largest k <= max such that s[0..k) ends on a character boundary of the
 * well-formed UTF-8 text s; s[max] must be readable (the NUL when max is
 * the length). */
size_t utf8_floor(const char *s, size_t max);

#endif
