/* store.h -- the run store: one LMDB environment per run directory.
 *
 * A store is a directory holding an LMDB environment with these named
 * databases (enum store_db). Keys are designed for ordered scans:
 *
 *   STORE_META       "schema_version" -> decimal text; "manifest" -> JSON;
 *                    "call_cache" -> decimal text (a call cache only);
 *                    "ingested" -> JSON (a shard: the files it ingested,
 *                    written by questions_store.c)
 *   STORE_QUESTIONS  question id (bytes) -> question JSON (questions.h)
 *   STORE_QORDER     8-byte big-endian ingestion sequence -> question id
 *   STORE_STATE      question id [+ "\0" + sub-key] -> per-question state
 *   STORE_LEDGER     32-byte call hash -> recorded call (gateway)
 *   STORE_RESULTS    question id -> result JSON
 *   STORE_TELEMETRY  free-form keys -> telemetry records
 *
 * Concurrency: one process at a time opens a store for writing; that is
 * enforced with an flock(2) on DIR/nsed.lock, so a second writer gets
 * NSED_EBUSY with a message naming the directory and the holder's pid.
 * Any number of read-only opens (STORE_RDONLY) may run beside the writer.
 * Within a process the store is used from one thread only (the runner's
 * event loop); a store must not be carried across fork(). A process opens
 * a given store at most once (LMDB's locks are per process): a second
 * writer open gets NSED_EBUSY, and so does a read-only open in the process
 * that holds the store for writing.
 *
 * Durability: every store_write() is one LMDB write transaction, committed
 * with fsync unless STORE_NOSYNC was given. A process killed at any moment
 * leaves every committed transaction intact and none of an uncommitted one.
 * Between store_defer_meta_sync(s, true) and (s, false) a commit flushes
 * once instead of twice, and an operating-system crash may undo the last
 * committed transaction (see that function).
 *
 * Map growth: the map starts at opts->initial_map_size (default 64 MiB) and
 * doubles whenever LMDB reports MDB_MAP_FULL; the transaction is then
 * replayed by calling the caller's function again, so write functions must
 * only touch the store through the transaction they are given.
 */
#ifndef NSED_STORE_H
#define NSED_STORE_H

#include "pipeline/base/err.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Version 2 may hold compressed records (store_put); a store of version 1
 * has none and reads as it is, and a writer records 2 in it. An nsed that
 * knows only 1 then refuses the store as written by a newer nsed instead
 * of reading compressed records as damage. */
#define STORE_SCHEMA_VERSION 2
#define STORE_SCHEMA_OLDEST 1

/* The META key that marks a directory as a call cache (its value is the
 * cache's layout version, decimal text): store_bind_manifest refuses such
 * a directory, so that a cache never becomes a run store. */
#define STORE_KEY_CALL_CACHE "call_cache"

enum store_db {
    STORE_META,
    STORE_QUESTIONS,
    STORE_QORDER,
    STORE_STATE,
    STORE_LEDGER,
    STORE_RESULTS,
    STORE_TELEMETRY,
    STORE_DB_COUNT
};

enum store_flags {
    STORE_RDONLY = 1 << 0, /* open read-only: no lock, no creation */
    STORE_NOSYNC = 1 << 1, /* commit without fsync (benchmarks only) */
    STORE_SHARED = 1 << 2, /* open for writing without the writer's lock:
                              several processes may write at once (LMDB
                              serializes their write transactions); for
                              the call cache, whose records every writer
                              agrees on. Still refused in the process
                              that holds the directory as its store */
    STORE_FROZEN = 1 << 3, /* with STORE_RDONLY: a store no process
                              writes any more (a finished shard copied to
                              shared storage). On a network file system,
                              where any other open is refused, it is
                              opened without LMDB's lock file
                              (MDB_NOLOCK): safe there because no nsed
                              writes a store on such a file system (every
                              writer refuses it), so nothing changes under
                              the reader. On a local disk it opens as
                              STORE_RDONLY alone (a registered reader) */
};

typedef struct store store;
typedef struct store_txn store_txn;

typedef struct store_opts {
    unsigned flags;          /* enum store_flags */
    size_t initial_map_size; /* bytes; 0 = default (64 MiB) */
} store_opts;

/* Open (creating when absent and not read-only) the store in directory dir.
 * opts may be NULL for defaults. On open the schema version is checked
 * (NSED_ESCHEMA for one this build does not understand), stale reader slots
 * left by killed processes are cleared, and for writers the lock is taken
 * (NSED_EBUSY when another process holds it). A directory on NFS is refused
 * with NSED_EINVAL (LMDB's locking does not work there), except for a
 * read-only open with STORE_FROZEN. A read-only open
 * of a directory that holds no store gives NSED_ENOTFOUND.
 * On success *out owns the store; on error nothing is left open. */
NSED_MUST_CHECK int store_open(const char *dir, const store_opts *opts,
                               store **out, nsed_err *err);

/* Close the store and release the lock. NULL is ignored. No transaction
 * may be open. */
void store_close(store *s);

/* The directory the store was opened on (owned by the store). */
const char *store_dir(const store *s);

/* Whether some process holds the store's writer lock now (this handle,
 * when it was opened for writing, included): true while a run, an ingest
 * or a merge writes it, false once none does -- also after a writer was
 * killed, whose lock the kernel dropped. A read-only caller (nsed status)
 * tells from it a run that is going on from one that ended without
 * saying so. It probes the lock with a shared flock held for a moment;
 * a writer that starts in that moment retries its own lock (lock_take),
 * so the probe never turns it away. Returns 0 with *active set, or
 * NSED_EIO (err says why). */
NSED_MUST_CHECK int store_writer_active(const store *s, bool *active,
                                        nsed_err *err);

/* Current LMDB map size in bytes (for tests and status). */
size_t store_map_size(const store *s);

typedef int (*store_txn_fn)(store_txn *txn, void *arg, nsed_err *err);

/* Run fn inside one write transaction and commit it. If fn returns non-zero
 * the transaction is aborted and that code returned (err as fn left it).
 * On MDB_MAP_FULL (from a put or from the commit) the transaction is
 * aborted, the map doubled, and fn called again from scratch. Returns 0,
 * fn's error, NSED_ESTORE, or NSED_EINVAL on a read-only store. */
NSED_MUST_CHECK int store_write(store *s, store_txn_fn fn, void *arg,
                                nsed_err *err);

/* Defer the second sync of each commit (on true) or go back to syncing
 * both (on false). A commit always writes the transaction's pages and
 * syncs them (fdatasync) before it writes the meta page that makes the
 * transaction current; by default that meta page is written synchronously
 * too (two device flushes per commit). Deferred, the meta page is left to
 * the next commit's sync (or to this call with false, or to the kernel's
 * writeback), which halves the flushes of a stream of commits. What it
 * costs, and nothing more: an operating-system crash (power loss, kernel
 * panic) may undo the last transaction committed before it; a process
 * that is killed loses nothing committed (the meta page is in the kernel
 * once the commit returns), and the store is never corrupt (LMDB keeps
 * the previous meta page, whose pages the synced commit did not touch).
 * Turning it off syncs the data file (mdb_env_sync), so after a false
 * call every committed transaction is durable again. No-op on a read-only
 * or STORE_NOSYNC store. Returns 0 or NSED_ESTORE (a failed sync). */
NSED_MUST_CHECK int store_defer_meta_sync(store *s, bool on, nsed_err *err);

/* Run fn inside one read-only transaction (a consistent snapshot). */
NSED_MUST_CHECK int store_read(store *s, store_txn_fn fn, void *arg,
                               nsed_err *err);

/* Put key -> value (overwriting). Key length 1..STORE_KEY_MAX. Only inside
 * store_write. A value of STORE_COMPRESS_MIN bytes or more in
 * STORE_QUESTIONS, STORE_LEDGER, STORE_RESULTS or STORE_STATE (there not
 * a question's "\0s" checkpoint, which is rewritten at every stage) is
 * stored compressed when that makes it shorter (docs/store.md,
 * "Compression"); every read returns the bytes given here. Returns 0,
 * NSED_EINVAL (bad key), NSED_ENOMEM, NSED_ESTORE. MDB_MAP_FULL is
 * reported as NSED_ESTORE and handled by store_write. */
#define STORE_KEY_MAX 511
#define STORE_COMPRESS_MIN 512
NSED_MUST_CHECK int store_put(store_txn *t, enum store_db db, const void *key,
                              size_t klen, const void *val, size_t vlen);

/* Look up key. On success *val and *vlen point into the map, or for a
 * value stored compressed into its decompressed copy, which the
 * transaction owns; either way they stay valid until the transaction ends
 * (do not free or modify them; the copies of a transaction add up until
 * it ends, or until store_txn_release). Returns 0, NSED_ENOTFOUND,
 * NSED_ENOMEM, NSED_ESTORE: also for a compressed value that does not
 * decompress, in which case the store_read/store_write whose fn returns
 * that NSED_ESTORE puts into err a message naming the record (as
 * store_corrupt words it). */
NSED_MUST_CHECK int store_get(store_txn *t, enum store_db db, const void *key,
                              size_t klen, const void **val, size_t *vlen);

/* The decompressed copies store_get and store_scan hand out add up until
 * the transaction ends. A long transaction that reads each record once
 * (an export, a merge) keeps its memory to that of one step: take a mark
 * before the step, and release to it after. store_txn_release(t, mark)
 * frees the copies handed out in t since store_txn_mark(t) returned
 * mark; values that point into the map, and copies handed out before the
 * mark, stay valid. The caller must use none of the freed values again.
 * Both accept NULL. */
size_t store_txn_mark(const store_txn *t);
void store_txn_release(store_txn *t, size_t mark);

/* Delete key. Returns 0, NSED_ENOTFOUND, NSED_ESTORE. */
NSED_MUST_CHECK int store_del(store_txn *t, enum store_db db, const void *key,
                              size_t klen);

/* Number of entries in db. */
NSED_MUST_CHECK int store_count(store_txn *t, enum store_db db, size_t *n);

typedef int (*store_scan_fn)(const void *key, size_t klen, const void *val,
                             size_t vlen, void *arg);

/* Visit, in key order, every entry of db whose key starts with prefix
 * (plen 0: all entries), starting at the first key >= start when start is
 * not NULL. fn returning non-zero stops the scan and that value is
 * returned. The key and value fn gets stay valid until the transaction
 * ends, as store_get's do (a compressed value is decompressed first; one
 * that does not decompress stops the scan with NSED_ESTORE, as in
 * store_get). Returns 0 when the scan completed. */
NSED_MUST_CHECK int store_scan(store_txn *t, enum store_db db,
                               const void *prefix, size_t plen,
                               const void *start, size_t slen,
                               store_scan_fn fn, void *arg);

/* The last key of db in key order: *key points into the map until the
 * transaction ends. Returns 0, NSED_ENOTFOUND (db is empty), NSED_ESTORE. */
NSED_MUST_CHECK int store_last(store_txn *t, enum store_db db, const void **key,
                               size_t *klen);

/* What a run records about itself. Strings may be NULL when unknown. */
typedef struct store_manifest {
    const char *workflow_hash;      /* hex SHA-256 of the canonical text */
    const char *workflow_canonical; /* canonical workflow text */
    const char *workflow_name;
    const char *resolved_json;      /* JSON of resolved ${VAR}s, no secrets */
    const char *git_commit;
    const char *command_line;
    uint64_t seed;
    const char *const *overrides; /* workflow overrides as given (--set
                                     KEY=VALUE), recorded as "overrides" */
    size_t noverrides;
    /* the shard of a run this store holds (nsed run --shard K/N), recorded
     * as "shard":{"index":K,"count":N}; shard_count 0: not a shard */
    uint32_t shard_index;
    uint32_t shard_count;
} store_manifest;

/* Bind the store to a workflow. The first call on a new store writes the
 * manifest (plus nsed version, schema version and creation time). Later
 * calls compare m->workflow_hash with the recorded one: equal, the
 * invocation (time, command line) is appended to the manifest's history;
 * different, NSED_EMISMATCH with a message naming both hashes and the flag
 * that overrides it, unless allow_change is set, in which case the change
 * (time, old hash, new hash, command line) is recorded and the new hash
 * becomes current. The shard is checked before the hash: a shard store
 * opened for another shard (or without one), and a store that is not a
 * shard opened for one, give NSED_EMISMATCH naming both; allow_change does
 * not lift that. */
NSED_MUST_CHECK int store_bind_manifest(store *s, const store_manifest *m,
                                        int allow_change, nsed_err *err);

/* The manifest as JSON text (malloc'd, caller frees) in *out.
 * NSED_ENOTFOUND when the store was never bound. */
NSED_MUST_CHECK int store_manifest_json(store *s, char **out, nsed_err *err);

/* Write json (a JSON object with a "workflow_hash" string: a manifest
 * made from other stores' manifests, as `nsed merge` does) as this
 * store's manifest, inside a store_write: "command_line", "nsed_version"
 * and "schema_version" are set by this call, "created_at" too unless json
 * has one (a merged store keeps its run's), and the history is replaced
 * by one entry: {"at": now, "event": event, "command_line": command_line,
 * "git_commit": null}. Replayable. Returns 0, NSED_EINVAL (json is not
 * such an object), NSED_ENOMEM or NSED_ESTORE. */
NSED_MUST_CHECK int store_manifest_put(store_txn *t, const char *json,
                                       const char *event,
                                       const char *command_line, nsed_err *err);

/* The directory of the store t belongs to (owned by the store). */
const char *store_txn_dir(const store_txn *t);

/* The name of db in the environment ("questions", "state", ...). */
const char *store_db_name(enum store_db db);

/* Report a record of db that cannot be read back, and return NSED_ESTORE:
 * err gets "store DIR: RECORD in database DB is corrupt (WHY); restore the
 * store from a copy", where record names the record (e.g. "the result of
 * q1") and why says what is wrong with it (either may be NULL). Every
 * reader of a store record reports damage through this, so that every
 * such message names the store, the database and the key. */
NSED_MUST_CHECK int store_corrupt(nsed_err *err, const store_txn *t,
                                  enum store_db db, const char *record,
                                  const char *why);

/* Encode/decode the 8-byte big-endian keys used by STORE_QORDER. */
void store_u64_key(uint64_t v, unsigned char out[8]);
uint64_t store_key_u64(const unsigned char in[8]);

/* Space one database takes, from LMDB's own statistics (mdb_stat). */
typedef struct store_db_stats {
    size_t entries; /* key/value pairs */
    size_t pages;   /* branch + leaf + overflow pages */
    size_t bytes;   /* pages x page size */
} store_db_stats;

/* Statistics of db in *out, as of transaction t (a database a read-only
 * store does not have is all zero). Returns 0, NSED_EINVAL, NSED_ESTORE. */
NSED_MUST_CHECK int store_db_stat(store_txn *t, enum store_db db,
                                  store_db_stats *out);

/* The environment as of t: LMDB's page size in *page_size and the pages
 * in use (the last page number + 1 of the newest transaction, free pages
 * included: what data.mdb needs) in *used_pages. Returns 0 or
 * NSED_ESTORE. */
NSED_MUST_CHECK int store_env_stat(store_txn *t, size_t *page_size,
                                   size_t *used_pages);

#endif
