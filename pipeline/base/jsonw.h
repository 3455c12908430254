/* jsonw.h -- a JSON text writer into one capped, growing buffer.
 *
 * The writer prints values in the order they are called, so key order is
 * the caller's (the workflow hash depends on it) and nothing is built in
 * memory first (checkpoints are written after every stage). Two byte
 * formats exist because two stored formats depend on them:
 *
 *   default       the canonical form: strings escape ", \, \n, \r, \t and
 *                 write other bytes below 0x20 as \u00xx; an integral
 *                 number below 1e15 prints as an integer, any other with
 *                 the fewest significant digits that read back to the same
 *                 double; -0 prints as 0.
 *   JSONW_CJSON   the state records in the store, as cJSON_PrintUnformatted
 *                 prints strings: \b and \f escape short as well; numbers
 *                 that are ints print as integers, others with the fewest
 *                 significant digits that read back to the same double
 *                 (not cJSON's 15-digit "close enough" print, which
 *                 rounded 0.1 + 0.2 to 0.3); -0 prints as -0. Every text
 *                 cJSON's print gave reads back as it did.
 *
 * In both formats a NaN or an infinity prints as null (JSON has neither),
 * strings are copied byte for byte otherwise (the caller owns UTF-8
 * validity), and a NULL string prints as null. JSONW_INDENT adds a newline
 * and two spaces per level before every item and writes ": " after keys.
 *
 * Errors poison the writer, as a failed LMDB call poisons its transaction:
 * the write calls return nothing; the first failure (NSED_ETOOBIG when the
 * text would pass the cap, NSED_ENOMEM) is kept, every later call does
 * nothing, and jsonw_finish reports it. The caller pairs calls correctly
 * (every begin with its end, a key before each value inside an object);
 * the writer asserts nesting but does not check the grammar.
 *
 * Lifecycle: jsonw_init on caller storage, then writes, then exactly one of
 * jsonw_finish (hands the text over) or jsonw_release (drops it). Either
 * leaves the writer empty; it may be initialised again.
 */
#ifndef NSED_JSONW_H
#define NSED_JSONW_H

#include "pipeline/base/buf.h"
#include "pipeline/base/err.h"

#include <stdbool.h>
#include <stddef.h>

enum {
    JSONW_INDENT = 1 << 0, /* one item per line, two spaces per level */
    JSONW_CJSON = 1 << 1,  /* strings and numbers as cJSON prints them */
};

/* Fields are private: use the calls below. */
typedef struct jsonw {
    buf b;
    unsigned flags;
    int depth;      /* open containers */
    bool first;     /* no item written yet in the open container */
    bool after_key; /* the next value belongs to the key just written */
    int rc;         /* first error; later calls do nothing */
} jsonw;

/* Start an empty text of at most cap bytes with the JSONW_* flags. */
void jsonw_init(jsonw *w, size_t cap, unsigned flags);

/* Containers. */
void jsonw_object_begin(jsonw *w);
void jsonw_object_end(jsonw *w);
void jsonw_array_begin(jsonw *w);
void jsonw_array_end(jsonw *w);

/* An object key (escaped as a string); the next call writes its value. */
void jsonw_key(jsonw *w, const char *key);

/* Values. jsonw_str prints null for NULL. */
void jsonw_str(jsonw *w, const char *s);
void jsonw_null(jsonw *w);
void jsonw_bool(jsonw *w, bool v);
void jsonw_int(jsonw *w, long long v);
void jsonw_uint(jsonw *w, unsigned long long v);
void jsonw_num(jsonw *w, double v);

/* An object member: jsonw_key(key), then the value as above. */
void jsonw_key_str(jsonw *w, const char *key, const char *s);
void jsonw_key_bool(jsonw *w, const char *key, bool v);
void jsonw_key_int(jsonw *w, const char *key, long long v);
void jsonw_key_uint(jsonw *w, const char *key, unsigned long long v);
void jsonw_key_num(jsonw *w, const char *key, double v);

/* A value that is already JSON text (the caller vouches for it: it is
 * copied as it is, in every format and without indentation). */
void jsonw_raw(jsonw *w, const char *json);

/* The first error so far (0 while the writer is healthy). */
int jsonw_error(const jsonw *w);

/* Hand over the text: 0 with *out a malloc'd NUL-terminated string (free
 * it) and *len (when not NULL) its length; or the first error (or
 * NSED_ENOMEM) with *out untouched. The writer is empty afterwards either
 * way. */
NSED_MUST_CHECK int jsonw_finish(jsonw *w, char **out, size_t *len);

/* Drop the text and any error; the writer is empty afterwards. */
void jsonw_release(jsonw *w);

#endif
