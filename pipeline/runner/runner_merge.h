/* runner_merge.h -- `nsed merge`: the shard stores of one run (made by
 * `nsed run --shard K/N`) combined into one store that reads as a single
 * run's (docs/store.md#merging-shard-stores).
 *
 * runner_merge does, in order:
 *  1. open every shard read-only (STORE_FROZEN: a finished shard copied to
 *     NFS opens too) and check it: a manifest with "shard"; one workflow
 *     hash, seed and shard count among them all; no index twice; every
 *     index 0..N-1 present; identical "ingested" records (the question
 *     files, numbered alike); every question of shard K hashing to K
 *     (questions_shard_of); every question with a result;
 *  2. check what is at OUT: nothing (or an empty directory), or a store an
 *     earlier merge of the same run made (same workflow hash, seed and N);
 *     anything else is refused before anything is written;
 *  3. build the merged store in OUT.merging (a leftover of a killed merge
 *     is removed first), copying the questions, their order, states,
 *     results and ledgers shard by shard in index order, committed every
 *     opts->batch records; then the combined telemetry, the "ingested"
 *     record and the merged manifest in one last, synced transaction;
 *  4. move it into place: rename(2) onto an absent OUT, or swap it with an
 *     earlier merge (renameat2 RENAME_EXCHANGE) and delete the old one.
 * A merge killed at any moment leaves OUT as it was (or already the new
 * merge), and the same command run again ends as an uninterrupted one.
 */
#ifndef NSED_RUNNER_MERGE_H
#define NSED_RUNNER_MERGE_H

#include "pipeline/base/err.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Records per transaction of the copy, unless opts->batch says otherwise;
 * a transaction also ends after RUNNER_MERGE_BATCH_BYTES of records. */
#define RUNNER_MERGE_BATCH 10000
#define RUNNER_MERGE_BATCH_BYTES ((size_t)64 << 20)

typedef struct runner_merge_progress {
    uint64_t records; /* copied so far */
    uint64_t total;   /* to copy: entries of the copied databases */
    size_t shard;     /* the shard being copied (its position, 0-based) */
    size_t nshards;
    double elapsed_s;
    bool final; /* the last call, after the move into place */
} runner_merge_progress;

typedef struct runner_merge_opts {
    const char *out;           /* OUT_STORE */
    const char *const *shards; /* the shard store directories */
    size_t nshards;
    const char *command_line; /* recorded in the merged manifest */
    size_t batch;             /* records per transaction; 0: default */
    bool partial;             /* merge unfinished shards too: their
                                   unfinished questions keep their state
                                   and stay resumable in OUT */
    /* called after every committed batch and once at the end (may be
     * NULL) */
    void (*on_progress)(void *user, const runner_merge_progress *p);
    /* a line worth telling the user (ledger records that differed, priors
     * that differed, records dropped); may be NULL */
    void (*on_note)(void *user, const char *line);
    void *user;
} runner_merge_opts;

typedef struct runner_merge_summary {
    uint32_t count; /* N, the shards of the run */
    uint64_t questions;
    uint64_t done, degraded, failed;
    uint64_t unfinished; /* questions without a result (partial) */
    uint64_t calls;      /* network calls, summed over the shards'
                                   call statistics */
    uint64_t ledger_hits;
    double cost_usd;           /* of those calls */
    uint64_t records;          /* records copied */
    uint64_t ledger_conflicts; /* ledger keys of two shards with
                                   different bytes (the first kept) */
    bool replaced;             /* an earlier merge at OUT was replaced */
    double elapsed_s;
} runner_merge_summary;

/* Merge opts->shards into opts->out as above. Returns 0 with *sum filled;
 * on failure err names the store directory and:
 *   NSED_EINVAL     a SHARD_STORE that is no store or no shard, an index
 *                   given twice (both directories named), OUT.merging
 *                   holding files nsed did not make (exit 2);
 *   NSED_EMISMATCH  shards of different runs (workflow hash, seed, N, the
 *                   ingested files: the differing shards named), a
 *                   question in the wrong shard, a record two shards hold
 *                   with different content (exit 2);
 *   NSED_EEXIST     OUT holds something other than an earlier merge of
 *                   this run (exit 2);
 *   NSED_ENOTFOUND  shards missing ("missing shards: 1, 3 of 4") or
 *                   unfinished without opts->partial (exit 1);
 *   NSED_EBUSY, NSED_EIO, NSED_ESTORE, NSED_ENOMEM as the store gives
 *   them (exit 1).
 * OUT is untouched on every failure. */
NSED_MUST_CHECK int runner_merge(const runner_merge_opts *opts,
                                 runner_merge_summary *sum, nsed_err *err);

#endif
