/* cli_export.h -- the row formats of `nsed export --format` (private to
 * pipeline/cli: cli_export.c prints, cli_export_rows.c builds the rows).
 *
 * Every format but results is built from a question's result record, its
 * latest state ("\0s") and its archived rounds ("\0r" <n>), read through
 * store_keys.h; the prompts of traces are rendered again from them with
 * the stages' own render functions (propose_render, evaluate_render,
 * stage_render_system, converge_build_carry), with the workflow loaded
 * from the manifest's canonical text. The schemas are in
 * docs/results.md.
 */
#ifndef NSED_CLI_EXPORT_H
#define NSED_CLI_EXPORT_H

#include "pipeline/base/buf.h"
#include "pipeline/base/err.h"
#include "pipeline/base/hash.h"
#include "pipeline/workflow/workflow.h"
#include "store/store.h"

#include <stdbool.h>

enum export_format {
    EXPORT_FMT_RESULTS, /* the result records as stored */
    EXPORT_FMT_TRACES,  /* every round of every question */
    EXPORT_FMT_SFT,     /* chat rows of the final answer */
    EXPORT_FMT_DPO,     /* preference pairs (TRL conversational) */
    EXPORT_FMT_CSV,     /* one row per result, flattened */
};

/* Which questions sft and dpo keep (see export_keep). */
typedef struct export_filter {
    bool only_correct;
    bool has_min_conviction;
    double min_conviction;
} export_filter;

/* What every row carries about the run, and the workflow to render with. */
typedef struct export_run {
    workflow *wf;                  /* NULL for results and csv */
    char *workflow_hash;           /* the manifest's (current) hash, or NULL */
    char run_id[HASH_HEX_LEN + 1]; /* see export_run_load; "" without a
                                      manifest */
} export_run;

/* Parse a --format value. Returns 0 or NSED_EINVAL. */
NSED_MUST_CHECK int export_format_parse(const char *s, enum export_format *out);

/* Read the manifest of st into *run: the workflow hash, the run id (the
 * first 16 hex digits of SHA-256 over the fields "nsed-run", the
 * manifest's created_at and its seed: fixed when the store is created,
 * different for every store created apart), and, when need_wf, the
 * workflow loaded from the manifest's canonical text. Returns 0;
 * NSED_ENOTFOUND when need_wf and the store has no manifest; the load's
 * errors; NSED_ENOMEM. */
NSED_MUST_CHECK int export_run_load(store *st, bool need_wf, export_run *run,
                                    nsed_err *err);
void export_run_release(export_run *run);

/* The CSV header line (with its CRLF) appended to out. */
NSED_MUST_CHECK int export_csv_header(buf *out);

/* The rows of format f (not EXPORT_FMT_RESULTS) for the question qid whose
 * result record is rec[0..len), appended to out (each ending with a
 * newline; CSV with CRLF): none when the filter or the format leaves the
 * question out. Returns 0; NSED_ESTORE for a record that does not read
 * back; NSED_ENOMEM; a render error. */
NSED_MUST_CHECK int export_rows(const export_run *run, enum export_format f,
                                const export_filter *flt, store_txn *txn,
                                const char *qid, const char *rec, size_t len,
                                buf *out, nsed_err *err);

#endif
