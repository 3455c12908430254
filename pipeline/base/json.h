/* json.h -- the one set of cJSON read and build helpers.
 *
 * Four groups, by how strict the caller must be:
 *
 *  - lenient readers (json_num, json_int, json_str, json_bool): a member
 *    that is absent or of the wrong type reads as the caller's default.
 *    For records nsed wrote itself and reads back for a report.
 *  - checked getters (json_get_*): absent keeps the out-param as it is,
 *    a member of the wrong type (or out of range) is NSED_EINVAL. For
 *    records with optional members that must be right when present.
 *  - the strict, path-aware reader (json_reader, json_rd_*): every member
 *    required, the first failure recorded with the path of the member and
 *    every later call a no-op, so field-by-field decoding needs no check
 *    per line.
 *  - builders (json_add_*, json_set_*): 0 or NSED_ENOMEM, and the new item
 *    is freed when it cannot be attached, so nothing leaks on failure.
 *
 * o may be NULL (or not an object) wherever a const cJSON *o is read: it
 * then has no members.
 */
#ifndef NSED_JSON_H
#define NSED_JSON_H

#include "pipeline/base/err.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- lenient readers --------------------------------------------------- */

/* The number member key of o, or dflt when absent or not a number. */
double json_num(const cJSON *o, const char *key, double dflt);

/* The integer member key of o (a number with no fraction, within int64),
 * or dflt when absent, not a number, fractional or out of range. */
int64_t json_int(const cJSON *o, const char *key, int64_t dflt);

/* The string member key of o (borrowed from o), or dflt when absent or not
 * a string. */
const char *json_str(const cJSON *o, const char *key, const char *dflt);

/* The boolean member key of o, or dflt when absent or not a boolean. */
bool json_bool(const cJSON *o, const char *key, bool dflt);

/* Whether v is a number holding an integer in [lo, hi] (finite, no
 * fraction); sets *out only then. */
bool json_int_value(const cJSON *v, int64_t lo, int64_t hi, int64_t *out);

/* ---- checked getters --------------------------------------------------- */

/* Member key of o as a number in [lo, hi] (the fraction, if any, is
 * dropped). Absent: returns 0 and leaves *v. Not a finite number or out of
 * range: NSED_EINVAL. */
NSED_MUST_CHECK int json_get_int(const cJSON *o, const char *key, int64_t lo,
                                 int64_t hi, int64_t *v);

/* Member key of o as a finite number. Absent: 0, *v left as it is; not a
 * finite number: NSED_EINVAL. */
NSED_MUST_CHECK int json_get_num(const cJSON *o, const char *key, double *v);

/* Member key of o as a malloc'd copy of a string (the caller frees *v).
 * Absent or null: 0, *v left as it is; not a string: NSED_EINVAL;
 * NSED_ENOMEM. */
NSED_MUST_CHECK int json_get_str(const cJSON *o, const char *key, char **v);

/* ---- the strict reader -------------------------------------------------- */

/* Set one up with json_reader_init; read members with json_rd_*; when done,
 * r.rc is 0 or the first failure, already reported through err as
 * "<what>: <path>: <reason>" (e.g. "state JSON: seats[2]: missing"). After
 * a failure every json_rd_* call does nothing and returns its zero value
 * (NULL, 0, false, or lo for the integers). */
typedef struct json_reader {
    nsed_err *err;    /* may be NULL */
    const char *what; /* names the document in messages */
    int rc;           /* 0, or the first failure's code */
} json_reader;

void json_reader_init(json_reader *r, const char *what, nsed_err *err);

/* Record a failure of the member at path (only the first one counts). */
void json_rd_fail(json_reader *r, int code, const char *path,
                  const char *reason);

/* Member key of o, required ("missing" otherwise). */
const cJSON *json_rd_item(json_reader *r, const cJSON *o, const char *key,
                          const char *path);

/* Required object member; with nullable, null is allowed and reads as
 * NULL. */
const cJSON *json_rd_obj(json_reader *r, const cJSON *o, const char *key,
                         const char *path, bool nullable);

/* Required array member of exactly n items, any number when n is
 * (size_t)-1; with nullable, null reads as NULL. */
const cJSON *json_rd_arr(json_reader *r, const cJSON *o, const char *key,
                         const char *path, bool nullable, size_t n);

/* Required string member, malloc'd (the caller frees it); with nullable,
 * null reads as NULL. */
NSED_MUST_CHECK char *json_rd_str(json_reader *r, const cJSON *o,
                                  const char *key, const char *path,
                                  bool nullable);

/* Required finite number member (JSON has no NaN or infinity, but cJSON
 * reads 1e999 as one; it fails as "not a finite number"). */
double json_rd_num(json_reader *r, const cJSON *o, const char *key,
                   const char *path);

/* v itself as an integer in [lo, hi]; v NULL (a member already reported
 * missing) reads as lo. */
int64_t json_rd_int_item(json_reader *r, const cJSON *v, const char *path,
                         int64_t lo, int64_t hi);

/* Required integer member in [lo, hi]. */
int64_t json_rd_int(json_reader *r, const cJSON *o, const char *key,
                    const char *path, int64_t lo, int64_t hi);

/* Required boolean member. */
bool json_rd_bool(json_reader *r, const cJSON *o, const char *key,
                  const char *path);

/* Required string member that is one of name(0) .. name(count - 1); returns
 * its index ("unknown value" otherwise). */
int json_rd_enum(json_reader *r, const cJSON *o, const char *key,
                 const char *path, const char *(*name)(int), int count);

/* ---- builders ----------------------------------------------------------- */

/* Attach item to o under key. item NULL (a failed cJSON_Create*) is
 * NSED_ENOMEM; so is a failed attach, and item is deleted then. */
NSED_MUST_CHECK int json_add_item(cJSON *o, const char *key, cJSON *item);

/* Attach item under key, replacing a member of that name in place (its
 * position kept) or adding one at the end. Same returns as json_add_item. */
NSED_MUST_CHECK int json_set_item(cJSON *o, const char *key, cJSON *item);

/* A number member. */
NSED_MUST_CHECK int json_add_num(cJSON *o, const char *key, double v);

/* A string member (copied); NULL adds null. */
NSED_MUST_CHECK int json_add_str(cJSON *o, const char *key, const char *v);

/* The same, replacing a member of that name as json_set_item does. */
NSED_MUST_CHECK int json_set_str(cJSON *o, const char *key, const char *v);

/* An integer member written as exact decimal text: cJSON keeps numbers as
 * doubles, which would round past 2^53 and print large values in exponent
 * form. */
NSED_MUST_CHECK int json_add_int(cJSON *o, const char *key, int64_t v);
NSED_MUST_CHECK int json_add_u64(cJSON *o, const char *key, uint64_t v);

/* A number member written as %.17g, which reads back as the same double;
 * a non-finite v (which JSON cannot hold) is written as 0. */
NSED_MUST_CHECK int json_add_exact(cJSON *o, const char *key, double v);

/* ---- JSON inside free text ---------------------------------------------- */

/* The first JSON object in text[0..len) that want accepts, trying the '{'
 * positions from the start (or, with from_end, from the last one back) and
 * at most tries of them; each value is parsed as far as it goes, so text
 * after it does not matter. Returns the parsed object (cJSON_Delete it) or
 * NULL when none is accepted (or memory ran out). */
NSED_MUST_CHECK cJSON *
json_find_object(const char *text, size_t len, int tries, bool from_end,
                 bool (*want)(const cJSON *obj, void *arg), void *arg);

/* The last top-level JSON object in text[0..len) that want accepts. The
 * text is read from the start: at each '{' a value is parsed as far as it
 * goes; one that parses is a top-level object, and reading goes on after
 * its closing '}', so objects nested in it (members, array items, text in
 * its strings) are never candidates; a '{' that starts no valid object
 * (prose, LaTeX, a cut-off object) is passed over and reading goes on at
 * the next byte. At most tries '{' positions are parsed. This is how to
 * take a reply's own object when the reply may quote others before it:
 * code fences and prose around objects do not matter. Returns the parsed
 * object (cJSON_Delete it) or NULL when none is accepted (or memory ran
 * out). */
NSED_MUST_CHECK cJSON *
json_find_last_object(const char *text, size_t len, int tries,
                      bool (*want)(const cJSON *obj, void *arg), void *arg);

#endif
