/* suggest.h -- "did you mean" hints for misspelt names and keys. */
#ifndef NSED_SUGGEST_H
#define NSED_SUGGEST_H

#include <stddef.h>

#define SUGGEST_MAX_LEN 64 /* longer words get no hint */

/* Case-insensitive optimal-string-alignment distance between a and b
 * (Levenshtein where swapping two adjacent letters costs 1), or SIZE_MAX
 * when either is longer than SUGGEST_MAX_LEN. */
size_t suggest_distance(const char *a, const char *b);

/* The candidate closest to word by suggest_distance, or NULL when cands is
 * empty or every candidate is too long. *dist (optional) receives the
 * distance of the returned candidate. Ties go to the earlier candidate. */
const char *suggest_closest(const char *word, const char *const *cands,
                            size_t n, size_t *dist);

#endif
