/* questions.h -- question sets: parse JSONL files, ingest them into the run
 * store, read them back in ingestion order.
 *
 * A question file is JSONL: one JSON object per line,
 *
 *   {"id": "q-001", "question": "What is 17 * 23?", "answer": "391",
 *    "tags": ["arith"], "meta": {"source": "x"}}
 *
 *   id        required; a non-empty string of at most QUESTIONS_ID_MAX bytes
 *             without control characters (C0, DEL, C1); unique in the file.
 *   question  required; a string that is not empty or only white space.
 *   answer    optional reference answer: a non-empty string, or a JSON number
 *             that is turned into its shortest exact decimal text, digit for
 *             digit from what was written (391.0 -> "391", 5e-1 -> "0.5",
 *             -3 -> "-3"; no binary floating point is involved). null means
 *             "no reference".
 *   tags      optional list of at most QUESTIONS_TAGS_MAX non-empty strings
 *             without control characters; null means none.
 *   meta      optional object, kept verbatim (white space outside strings
 *             removed, numbers and escapes exactly as written); null means
 *             none.
 *
 * Any other key is an error: the message suggests the closest known key and
 * says that extra data belongs in "meta". A key given twice is an error.
 * Blank lines (only spaces, tabs, CR) are skipped; CRLF line ends are
 * accepted; a UTF-8 byte order mark at the start of line 1 is skipped.
 * The line must be valid UTF-8, and a line longer than QUESTIONS_LINE_MAX
 * bytes is refused without ever being held in memory whole.
 *
 * Errors are reported through nsed_err as "FILE:LINE[:COL]: message";
 * COL is 1-based and counts bytes (after a skipped byte order mark). JSON
 * syntax errors carry the column where cJSON stopped; errors about one key
 * carry the column of that key. Bad input returns NSED_EINVAL, an overlong
 * line NSED_ETOOBIG.
 *
 * In the store (store/store.h) a question is
 *   STORE_QUESTIONS  id -> {"id","question","answer"?,"tags"?,"meta"?,"seq"}
 *   STORE_QORDER     store_u64_key(seq) -> id
 * where seq is the 0-based ingestion sequence number: questions are never
 * deleted, so the sequence numbers of a store are exactly 0..count-1.
 *
 * The parsing half (questions.c) does not touch the store, so a program
 * that only reads question files (the simulated endpoint server) links
 * without LMDB objects being pulled in; the store half is questions_store.c.
 */
#ifndef NSED_QUESTIONS_H
#define NSED_QUESTIONS_H

#include "pipeline/base/err.h"
#include "store/store.h"

#include <stddef.h>
#include <stdint.h>

/* Caps on input from question files. */
#define QUESTIONS_LINE_MAX ((size_t)1 << 20) /* bytes/line, CR LF excluded */
#define QUESTIONS_ID_MAX 256                 /* bytes per id */
#define QUESTIONS_TAGS_MAX 64                /* tags per question */
#define QUESTIONS_NUMBER_MAX 400 /* bytes of a numeric answer as decimal */
#define QUESTIONS_FILE_MAX 10000000 /* questions per file for check/ingest */

/* One question. Every string is malloc'd and owned by the struct; release
 * with question_release. A zero-initialised question is valid and empty. */
typedef struct question {
    char *id;        /* malloc'd */
    char *text;      /* the "question" string, malloc'd */
    char *answer;    /* reference answer text, NULL when absent */
    char **tags;     /* malloc'd array of malloc'd strings */
    size_t ntags;
    char *meta_json; /* compact JSON of "meta", NULL when absent */
} question;

/* Free every field of q and zero it, so it may be reused. NULL is ignored. */
void question_release(question *q);

/* Parse one line (len bytes, no newline; a trailing CR is ignored; it need
 * not be NUL-terminated). file and lineno only label error messages; on
 * line 1 a UTF-8 byte order mark is skipped.
 * Returns 0 with *out filled (the caller owns it; *out is overwritten, not
 * released first); NSED_ENOTFOUND for a blank line (not an error: err is
 * left untouched); NSED_EINVAL or NSED_ETOOBIG with err naming
 * file:lineno[:col]; NSED_ENOMEM. On any failure *out is not written. */
NSED_MUST_CHECK int questions_parse_line(const char *file, size_t lineno,
                                         const char *line, size_t len,
                                         question *out, nsed_err *err);

/* Stream a file: call fn for each parsed question, in file order, with its
 * 1-based line number. The question is only valid during the call (copy
 * what you keep). Memory use does not depend on the file size; duplicate
 * ids are NOT detected here (see questions_check_file).
 * Returns 0 when the whole file was read; the first parse error (err filled
 * as for questions_parse_line); NSED_EIO when the file cannot be opened or
 * read (err says why); or, when fn returns non-zero, that value at once
 * (err as fn left it). */
NSED_MUST_CHECK int questions_read_file(const char *path,
                                        int (*fn)(const question *q,
                                                  size_t lineno, void *arg),
                                        void *arg, nsed_err *err);

/* Pull-style reader, for callers that want questions one at a time (the
 * read/check/ingest functions are built on it). */
typedef struct questions_reader questions_reader;

enum questions_reader_flags {
    /* Refuse an id seen earlier in the file: "duplicate id "x" (first at
     * line N)". Costs memory per question (the ids and their lines), up to
     * QUESTIONS_FILE_MAX questions (NSED_ETOOBIG beyond). */
    QUESTIONS_UNIQUE = 1 << 0,
};

/* Open path for reading. flags: enum questions_reader_flags.
 * Returns 0 with *out owning the reader, NSED_EIO (cannot open; err names
 * the file and the OS reason) or NSED_ENOMEM. */
NSED_MUST_CHECK int questions_reader_open(const char *path, unsigned flags,
                                          questions_reader **out,
                                          nsed_err *err);

/* Read the next question into *q (caller releases it) and its line number
 * into *lineno (may be NULL). Blank lines are skipped.
 * Returns 0; NSED_ENOTFOUND at the end of the file (err untouched); or a
 * parse error / NSED_EIO / NSED_ETOOBIG / NSED_ENOMEM with err filled.
 * After an error the reader must only be freed. */
NSED_MUST_CHECK int questions_reader_next(questions_reader *r, question *q,
                                          size_t *lineno, nsed_err *err);

/* Lines read so far, blank ones included (after the end: lines in file). */
size_t questions_reader_lines(const questions_reader *r);

/* Close the file and free the reader. NULL is ignored. */
void questions_reader_free(questions_reader *r);

/* What a check or an ingest saw. */
typedef struct questions_stats {
    size_t lines;       /* lines in the file, blank ones included */
    size_t questions;   /* questions in the file */
    size_t with_answer; /* of those, how many carry a reference answer */
    size_t added;       /* ingest: new to the store; check: == questions */
    size_t unchanged;   /* ingest: already in the store, same content;
                           check: 0 */
    size_t undone;      /* ingest: questions an earlier, unfinished ingest
                           had added, removed first (questions_recover) */
    size_t other_shards; /* ingest into a shard: questions of the file that
                            belong to other shards (not ingested) */
} questions_stats;

/* Validate a whole file without a store: every line parses and no id
 * appears twice. Returns 0 with *stats filled (stats may be NULL), or the
 * first error as for questions_reader_next. */
NSED_MUST_CHECK int
questions_check_file(const char *path, questions_stats *stats, nsed_err *err);

/* Add the questions of path to the store s, atomically and idempotently:
 * on any error nothing at all is left written. The file goes in write
 * transactions of a few thousand questions each (so that memory does not
 * grow with the file: LMDB holds a transaction's pages until it
 * commits); while they go in, a record marks the ingest unfinished, and
 * a failure removes what the batches before it added. An ingest killed
 * between batches leaves them and the record, and the next ingest (or
 * questions_recover) removes them first. A question whose id is already in the store with the same
 * content (id, question, answer, tags, meta) counts as unchanged and keeps
 * its sequence number; with different content the ingest fails with
 * NSED_EEXIST ("FILE:LINE: question "x" is already in the store with
 * different content (the answer differs)"). Duplicate ids within the file
 * fail with NSED_EINVAL naming both lines. New questions take the next
 * sequence numbers in file order.
 * Returns 0 with *stats filled (stats may be NULL; written only on
 * success); a parse error; NSED_EEXIST; NSED_EIO; NSED_ESTORE;
 * NSED_EINVAL for a read-only store. Memory grows with the number of ids in
 * the file (duplicate detection), not with their content. */
NSED_MUST_CHECK int questions_ingest(store *s, const char *path,
                                     questions_stats *stats, nsed_err *err);

/* Look up a question by id inside a store transaction (read or write).
 * Returns 0 with *out filled (caller releases it), NSED_ENOTFOUND (err
 * names the id), NSED_ESTORE (LMDB error or a corrupt record), or
 * NSED_ENOMEM. On failure *out is not written. */
NSED_MUST_CHECK int questions_get(store_txn *txn, const char *id,
                                  question *out, nsed_err *err);

/* The shard (0..n-1, n >= 1) of the question with this id among n: the
 * first 8 bytes of the SHA-256 of the id's bytes, read as a big-endian
 * unsigned 64-bit integer, modulo n. The same on every machine, build and
 * language (docs/questions.md#shards). Returns 0 with *out set, or
 * NSED_ENOMEM. */
NSED_MUST_CHECK int questions_shard_of(const char *id, uint32_t n,
                                       uint32_t *out);

/* The STORE_META record "ingested" of a shard store (inside a
 * transaction): {"files":[{"sha256":HEX,"base":B,"count":C},...]} in
 * ingestion order, as *out (malloc'd, NUL-terminated). Returns 0,
 * NSED_ENOTFOUND (not a shard, or nothing ingested yet), NSED_ENOMEM or
 * NSED_ESTORE. */
NSED_MUST_CHECK int questions_ingested_json(store_txn *txn, char **out);

/* Write json, a record questions_ingested_json gave (of another store:
 * nsed merge copies its shards' record), as this store's "ingested"
 * record, inside a store_write. Returns 0 or NSED_ESTORE. */
NSED_MUST_CHECK int questions_ingested_put(store_txn *txn, const char *json);

/* One past the sequence number of the n-th question in ingestion order
 * (the last one when the store holds fewer), 0 for n == 0: the bound of a
 * scan over the first n questions, whose numbers need not be dense (a
 * shard, a merged store). Returns 0 with *end set, or NSED_ESTORE. */
NSED_MUST_CHECK int questions_seq_end(store_txn *txn, size_t n, uint64_t *end);

/* Number of questions in the store. Returns 0 with *n set, or
 * NSED_ESTORE. (In a store that is not a shard nor a merge of shards the
 * sequence numbers are dense, and this is also the next one.) */
NSED_MUST_CHECK int questions_count(store_txn *txn, size_t *n);

/* Same, opening its own read transaction on s. Returns 0, NSED_ESTORE. */
NSED_MUST_CHECK int questions_total(store *s, size_t *n, nsed_err *err);

/* Visit the questions of the store in ingestion order, starting at
 * sequence number start_seq (0: from the first), one at a time: only one
 * question is held in memory at once. q is valid only during the call.
 * fn returning non-zero stops the scan and that value is returned (err
 * is then as fn left it). Returns 0 when the scan completed, fn's value,
 * NSED_ESTORE (LMDB error, or the order table names an id whose record is
 * missing or corrupt: err names the store, the database and the record,
 * see store_corrupt) or NSED_ENOMEM. */
NSED_MUST_CHECK int questions_scan(store_txn *txn, uint64_t start_seq,
                                   int (*fn)(const question *q, uint64_t seq,
                                             void *arg),
                                   void *arg, nsed_err *err);

/* The stored record of q with sequence number seq, as compact JSON:
 * {"id","question","answer"?,"tags"?,"meta"?,"seq"} (meta inserted
 * verbatim). Returns 0 with *out malloc'd (caller frees) and *len (may be
 * NULL) its length, NSED_EINVAL when q lacks id or text, NSED_ENOMEM. */
NSED_MUST_CHECK int questions_record_json(const question *q, uint64_t seq,
                                          char **out, size_t *len);

/* Parse a stored record (json of len bytes) back into *out and *seq (may
 * be NULL). Returns 0, NSED_EINVAL (err says what is wrong; messages are
 * prefixed "question record: ") or NSED_ENOMEM. */
NSED_MUST_CHECK int questions_parse_record(const char *json, size_t len,
                                           question *out, uint64_t *seq,
                                           nsed_err *err);

/* Which part of two questions differs: NULL when they have the same
 * content, otherwise a static name ("id", "question", "answer", "tags",
 * "meta"). */
const char *question_diff(const question *a, const question *b);

/* ---- Other datasets' shapes (issue 13) -------------------------------
 *
 * A field mapping names which fields of a line hold what (docs/questions.md,
 * "Other datasets"): `nsed ingest --fields id=idx,question=problem,
 * answer=solution,choices=choices,tags=subject,reference=boxed`. Under a
 * mapping unmapped fields are ignored, ids may be integers or the 1-based
 * line number (id=@line), choices are rendered into the question text as
 *
 *   QUESTION\n\nA. first\nB. second ...
 *
 * and the reference goes through an extractor:
 *   raw           as written (a number as its JSON text)
 *   gsm8k         the text after the last "####", trimmed, thousands
 *                 separators dropped ("#### 1,234" -> "1234")
 *   boxed         the content of the last balanced \boxed{...}
 *   choice_index  an integer i in 0..nchoices-1 -> the letter 'A' + i (a
 *                 letter A..Z is kept as it is)
 *   auto          (the default) choice_index when the answer is a number and
 *                 choices are mapped; gsm8k when the text holds "####"; boxed
 *                 when it holds "\boxed{"; raw otherwise.
 */
enum questions_ref {
    QUESTIONS_REF_AUTO,
    QUESTIONS_REF_RAW,
    QUESTIONS_REF_GSM8K,
    QUESTIONS_REF_BOXED,
    QUESTIONS_REF_CHOICE_INDEX,
};

/* A mapping; every name is malloc'd (NULL: the field's own name, "id",
 * "question", "answer"; none for choices and tags). Release with
 * questions_map_release. A zeroed map (set == 0) means "no mapping". */
typedef struct questions_map {
    int set;     /* a mapping was given */
    int id_line; /* id=@line: ids are the 1-based line (element) numbers */
    char *id, *question, *answer, *choices, *tags;
    enum questions_ref reference;
} questions_map;

/* Parse "name=field,..." (names: id, question, answer, choices, tags,
 * reference). Returns 0 with *out filled (caller releases), NSED_EINVAL
 * with err naming the bad item, NSED_ENOMEM. */
NSED_MUST_CHECK int questions_map_parse(const char *spec, questions_map *out,
                                        nsed_err *err);
void questions_map_release(questions_map *m);

/* The extractor's name ("auto", "gsm8k", ...), and back (0 or
 * NSED_EINVAL). */
const char *questions_ref_name(enum questions_ref r);
NSED_MUST_CHECK int questions_ref_parse(const char *s, enum questions_ref *out);

/* Parse one line or object text under mapping m (as questions_parse_line;
 * errors are "FILE:LINE: field "F": why"). */
NSED_MUST_CHECK int questions_parse_mapped(const char *file, size_t lineno,
                                           const char *text, size_t len,
                                           const questions_map *m,
                                           question *out, nsed_err *err);

/* How a file is read by questions_check_file_with / questions_ingest_with. */
typedef struct questions_opts {
    const questions_map *map; /* NULL or unset: the native format */
    /* NULL: stop at the first error. Otherwise every bad line is reported
     * through it (up to QUESTIONS_ERRORS_SHOWN), reading goes on, and the
     * call then fails with "FILE: N bad lines ... (and M more)". */
    void (*on_error)(const char *msg, void *arg);
    void *arg;
    /* ingest only: shard_count > 0 ingests only the questions of shard
     * shard_index (questions_shard_of), each with the sequence number
     * base + position described at questions_ingest_with */
    uint32_t shard_index;
    uint32_t shard_count;
} questions_opts;

#define QUESTIONS_ERRORS_SHOWN 20

/* Open a reader under opts (opts may be NULL): as questions_reader_open,
 * and a ".json" file whose first non-blank byte is '[' is read as a JSON
 * array of objects (at most QUESTIONS_ARRAY_MAX bytes), each element's
 * "line" being the line of the file where it starts. */
#define QUESTIONS_ARRAY_MAX ((size_t)256 << 20)
NSED_MUST_CHECK int questions_reader_open_with(const char *path, unsigned flags,
                                               const questions_opts *opts,
                                               questions_reader **out,
                                               nsed_err *err);

/* questions_check_file / questions_ingest under opts (may be NULL).
 *
 * Into a shard (opts->shard_count > 0) only the questions of that shard
 * are ingested, and a new one takes the sequence number base + position:
 * position is its index among all the file's questions (every shard's),
 * and base the sum of the question counts of the files this store
 * ingested before it, in the order they were first ingested, a file
 * being known by the SHA-256 of its bytes (re-ingesting a file reuses its
 * base). The files are listed in the STORE_META record "ingested"
 * (questions_ingested_json). Shards that ran the same commands therefore
 * number their questions alike, and the union of their orders sorts as a
 * single store's does. Outside a shard a new question takes one past the
 * last sequence number in the store. */
NSED_MUST_CHECK int questions_check_file_with(const char *path,
                                              const questions_opts *opts,
                                              questions_stats *stats,
                                              nsed_err *err);
NSED_MUST_CHECK int questions_ingest_with(store *s, const char *path,
                                          const questions_opts *opts,
                                          questions_stats *stats,
                                          nsed_err *err);

/* Whether an ingest added questions to s and did not finish (it was
 * killed, or the machine went down, between its batches): the record
 * questions_ingest_with keeps while it writes. Such questions are in the
 * store but belong to no finished ingest; questions_recover removes them.
 * Returns 0 with *unfinished set, or NSED_ESTORE. */
NSED_MUST_CHECK int questions_ingest_unfinished(store *s, bool *unfinished,
                                                nsed_err *err);

/* Undo an unfinished ingest: remove the questions it added (in batches,
 * so that it is itself safe to kill and to run again), then its record.
 * A store without one is left as it is. Every ingest does this first; a
 * run on a store opened for writing must too, before it reads the
 * questions. *removed (may be NULL) gets the number of questions removed.
 * Returns 0, NSED_ESTORE or NSED_ENOMEM. */
NSED_MUST_CHECK int questions_recover(store *s, size_t *removed, nsed_err *err);

/* References that look like rationales rather than answers, counted over
 * the questions of a store (for the warning `nsed run` gives at its
 * start). A reference counts when it holds "####" or "\boxed", or is
 * longer than QUESTIONS_RATIONALE_BYTES bytes with two or more sentence
 * ends (". ", "? ", "! " or one before a line end). */
#define QUESTIONS_RATIONALE_BYTES 100
typedef struct questions_refcheck {
    size_t with_answer; /* questions with a reference */
    size_t rationale;   /* of those, references that look like rationales */
    char example[QUESTIONS_ID_MAX + 1]; /* the first such question's id */
    const char *why; /* static: what the first one showed, or NULL */
} questions_refcheck;

/* Fill *out over every question of s. Returns 0, NSED_ESTORE, NSED_ENOMEM
 * (err set). */
NSED_MUST_CHECK int
questions_check_references(store *s, questions_refcheck *out, nsed_err *err);

/* Why reference looks like a rationale (a static phrase), or NULL. */
const char *questions_rationale_why(const char *reference);

#endif
