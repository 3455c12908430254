/* questions_store.c -- questions in the run store: ingest, look-up, count
 * and scan in ingestion order. */
#include "pipeline/questions/questions.h"

#include "pipeline/base/hash.h"
#include "pipeline/base/json.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* STORE_META key of the files a shard store ingested (questions.h). */
#define INGESTED_KEY "ingested"

typedef struct ingest_ctx {
    const char *path;
    questions_stats st;
    questions_opts ropts; /* the mapping only: errors were seen before */
    uint32_t shard_index, shard_count; /* shard_count 0: not a shard */
    char digest[HASH_HEX_LEN + 1];     /* a shard: SHA-256 of the file */
    uint64_t from;     /* the first sequence number this ingest gives */
    uint64_t next;     /* outside a shard: the next one, as committed */
    uint64_t position; /* a shard: questions of the file read so far */
    bool known;        /* a shard: the file was ingested before */
    bool partial;      /* the record of an unfinished ingest is written */
} ingest_ctx;

int questions_shard_of(const char *id, uint32_t n, uint32_t *out)
{
    uint8_t d[HASH_LEN];
    uint64_t v = 0;

    if (!id || !out || n == 0)
        return NSED_EINVAL;
    if (hash_sha256(id, strlen(id), d))
        return NSED_ENOMEM;
    for (int i = 0; i < 8; i++)
        v = v << 8 | d[i];
    *out = (uint32_t)(v % n);
    return 0;
}

/* The hex SHA-256 of the bytes of the file at path. */
static int file_digest(const char *path, char hex[HASH_HEX_LEN + 1],
                       nsed_err *err)
{
    FILE *f = fopen(path, "rb");
    hash_ctx *h = NULL;
    uint8_t d[HASH_LEN];
    char buf[65536];
    size_t n;
    int rc = 0;

    if (!f)
        return nsed_error(err, NSED_EIO, "%s: cannot open: %s", path,
                          strerror(errno));
    h = hash_new();
    if (!h) {
        rc = nsed_error(err, NSED_ENOMEM, "out of memory");
        goto out;
    }
    while ((n = fread(buf, 1, sizeof buf, f)) > 0)
        hash_update(h, buf, n);
    if (ferror(f)) {
        rc = nsed_error(err, NSED_EIO, "%s: cannot read: %s", path,
                        strerror(errno));
        goto out;
    }
    hash_final(h, d);
    hash_hex(d, hex);
out:
    hash_free(h);
    fclose(f);
    return rc;
}

/* The "ingested" record of the store as a cJSON object with a "files"
 * array (a new empty one when there is none), into *out. */
static int ingested_read(store_txn *txn, cJSON **out, nsed_err *err)
{
    const void *val;
    size_t vlen;
    cJSON *o;
    int rc = store_get(txn, STORE_META, INGESTED_KEY, strlen(INGESTED_KEY),
                       &val, &vlen);

    if (rc == NSED_ENOTFOUND) {
        o = cJSON_CreateObject();
        if (!o || !cJSON_AddArrayToObject(o, "files")) {
            cJSON_Delete(o);
            return nsed_error(err, NSED_ENOMEM, "out of memory");
        }
        *out = o;
        return 0;
    }
    if (rc)
        return nsed_error(err, rc,
                          "cannot read the store's list of "
                          "ingested files");
    o = cJSON_ParseWithLength(val, vlen);
    if (!cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(o, "files"))) {
        cJSON_Delete(o);
        return store_corrupt(err, txn, STORE_META,
                             "the list of ingested files (\"ingested\")",
                             "not an object with a \"files\" array");
    }
    *out = o;
    return 0;
}

/* The base of the file with this digest in the "ingested" list: its own
 * when it was ingested before (*known), else the sum of every listed
 * file's count. */
static int ingested_base(store_txn *txn, const cJSON *rec, const char *digest,
                         uint64_t *base, bool *known, nsed_err *err)
{
    const cJSON *f;
    double next = 0;

    *known = false;
    cJSON_ArrayForEach(f, cJSON_GetObjectItemCaseSensitive(rec, "files")) {
        double b = json_num(f, "base", -1), c = json_num(f, "count", -1);

        if (b < 0 || c < 0 || b > 9e15 || c > 9e15)
            return store_corrupt(err, txn, STORE_META,
                                 "the list of ingested files "
                                 "(\"ingested\")",
                                 "a file without a base and a count");
        if (strcmp(json_str(f, "sha256", ""), digest) == 0) {
            *base = (uint64_t)b;
            *known = true;
            return 0;
        }
        if (b + c > next)
            next = b + c;
    }
    *base = (uint64_t)next;
    return 0;
}

/* Append the file (digest, base, count) to the "ingested" list and write
 * it back. */
static int ingested_add(store_txn *txn, cJSON *rec, const char *digest,
                        uint64_t base, uint64_t count, nsed_err *err)
{
    cJSON *f = cJSON_CreateObject();
    char *text = NULL;
    int rc = 0;

    if (!f || json_add_str(f, "sha256", digest) ||
        !cJSON_AddNumberToObject(f, "base", (double)base) ||
        !cJSON_AddNumberToObject(f, "count", (double)count) ||
        !cJSON_AddItemToArray(cJSON_GetObjectItemCaseSensitive(rec, "files"),
                              f)) {
        cJSON_Delete(f);
        return nsed_error(err, NSED_ENOMEM, "out of memory");
    }
    text = cJSON_PrintUnformatted(rec);
    if (!text)
        return nsed_error(err, NSED_ENOMEM, "out of memory");
    rc = store_put(txn, STORE_META, INGESTED_KEY, strlen(INGESTED_KEY), text,
                   strlen(text));
    free(text);
    if (rc)
        return nsed_error(err, rc,
                          "cannot write the store's list of "
                          "ingested files");
    return 0;
}

/* One past the last sequence number in the store (0 when empty). */
static int next_seq(store_txn *txn, uint64_t *next, nsed_err *err)
{
    const void *key;
    size_t klen;
    int rc = store_last(txn, STORE_QORDER, &key, &klen);

    if (rc == NSED_ENOTFOUND) {
        *next = 0;
        return 0;
    }
    if (rc)
        return nsed_error(err, rc, "cannot read the store's question order");
    if (klen != 8)
        return store_corrupt(err, txn, STORE_QORDER, "the last entry",
                             "its key is not an 8-byte sequence number");
    *next = store_key_u64(key) + 1;
    return 0;
}

struct seq_end {
    size_t left;  /* questions still to pass */
    uint64_t end; /* one past the last one passed */
};

static int seq_end_one(const void *key, size_t klen, const void *val,
                       size_t vlen, void *arg)
{
    struct seq_end *e = arg;

    (void)val;
    (void)vlen;
    if (klen != 8)
        return NSED_ESTORE;
    e->end = store_key_u64(key) + 1;
    return --e->left == 0;
}

int questions_seq_end(store_txn *txn, size_t n, uint64_t *end)
{
    struct seq_end e = {n, 0};
    nsed_err why = {0};
    size_t count;
    int rc;

    if (n == 0) {
        *end = 0;
        return 0;
    }
    /* all of them (a run without --limit): the last key, not a walk over
     * every key */
    rc = store_count(txn, STORE_QORDER, &count);
    if (!rc && n >= count)
        return next_seq(txn, end, &why);
    if (rc)
        return rc;
    rc = store_scan(txn, STORE_QORDER, NULL, 0, NULL, 0, seq_end_one, &e);
    if (rc < 0 || rc > 1)
        return rc;
    *end = e.end;
    return 0;
}

int questions_ingested_json(store_txn *txn, char **out)
{
    const void *val;
    size_t vlen;
    int rc = store_get(txn, STORE_META, INGESTED_KEY, strlen(INGESTED_KEY),
                       &val, &vlen);

    if (rc)
        return rc;
    *out = malloc(vlen + 1);
    if (!*out)
        return NSED_ENOMEM;
    memcpy(*out, val, vlen);
    (*out)[vlen] = '\0';
    return 0;
}

int questions_ingested_put(store_txn *txn, const char *json)
{
    return store_put(txn, STORE_META, INGESTED_KEY, strlen(INGESTED_KEY), json,
                     strlen(json));
}


/* Add one parsed question (from line lineno) unless it is already stored;
 * *next is the sequence number a new question takes. */
static int ingest_one(store_txn *txn, const char *path, size_t lineno,
                      const question *q, uint64_t *next, questions_stats *st,
                      nsed_err *err)
{
    const void *val;
    size_t vlen, idlen = strlen(q->id), rlen;
    unsigned char key[8];
    question old = {0};
    char *rec = NULL;
    const char *diff;
    int rc;

    rc = store_get(txn, STORE_QUESTIONS, q->id, idlen, &val, &vlen);
    if (rc == 0) {
        nsed_err why = {0};

        rc = questions_parse_record(val, vlen, &old, NULL, &why);
        if (rc == NSED_ENOMEM) {
            rc = nsed_error(err, rc, "out of memory");
            goto out;
        }
        if (rc) {
            char what[STORE_KEY_MAX + 32];

            snprintf(what, sizeof what, "question \"%s\"", q->id);
            rc = store_corrupt(err, txn, STORE_QUESTIONS, what, why.msg);
            goto out;
        }
        diff = question_diff(&old, q);
        if (diff) {
            rc = nsed_error_at(err, NSED_EEXIST, path, lineno, 0,
                               "question \"%s\" is already in the store with "
                               "different content (the %s differs)",
                               q->id, diff);
            goto out;
        }
        st->unchanged++;
        goto out;
    }
    if (rc != NSED_ENOTFOUND) {
        rc = nsed_error_at(err, rc, path, lineno, 0,
                           "cannot read question \"%s\" from the store",
                           q->id);
        goto out;
    }
    store_u64_key(*next, key);
    rc = store_get(txn, STORE_QORDER, key, sizeof key, &val, &vlen);
    if (rc && rc != NSED_ENOTFOUND) {
        rc = nsed_error_at(err, rc, path, lineno, 0,
                           "cannot read the store's question order");
        goto out;
    }
    if (rc == 0) {
        /* sequence numbers are dense (questions are never deleted), so the
         * next one must be free; anything else means a damaged store */
        rc = nsed_error(err, NSED_ESTORE,
                        "%s: the store's question order is damaged "
                        "(sequence %" PRIu64 " is already taken)",
                        path, *next);
        goto out;
    }
    rc = questions_record_json(q, *next, &rec, &rlen);
    if (rc) {
        rc = nsed_error_at(err, rc, path, lineno, 0, "out of memory");
        goto out;
    }
    rc = store_put(txn, STORE_QUESTIONS, q->id, idlen, rec, rlen);
    if (!rc)
        rc = store_put(txn, STORE_QORDER, key, sizeof key, q->id, idlen);
    if (rc) {
        rc = nsed_error_at(err, rc, path, lineno, 0,
                           "cannot write question \"%s\" to the store",
                           q->id);
        goto out;
    }
    (*next)++;
    st->added++;
out:
    free(rec);
    question_release(&old);
    return rc;
}

/* ---- ingest in batches ----------------------------------------------- */

/* Questions per write transaction, and the bytes of question text a batch
 * holds at most: LMDB keeps every page a transaction dirties in memory
 * until it commits, so one transaction for the whole file grew the heap
 * with the file (277 MiB at 1M questions). */
#define INGEST_BATCH 4096
#define INGEST_BATCH_BYTES ((size_t)16 << 20)

/* STORE_META record of an ingest that has added questions and not
 * finished: {"from": SEQ}, every question with a sequence number >= SEQ
 * being its own. Written with the first batch that adds one, removed with
 * the last; questions_recover undoes what such an ingest left. */
#define PARTIAL_KEY "ingest_partial"

typedef struct ingest_item {
    question q;
    size_t lineno;
    uint64_t seq; /* a shard: base + position; else assigned when written */
} ingest_item;

typedef struct ingest_batch {
    ingest_ctx *ctx;
    ingest_item *items;
    size_t n;
    uint64_t next; /* outside a shard: the next free sequence number */
    size_t added;  /* of this batch */
    size_t unchanged;
} ingest_batch;

/* Where the ingest starts: the first sequence number it can give (*from),
 * and for a shard its file's base and whether the file is known. */
typedef struct ingest_start {
    ingest_ctx *ctx;
    uint64_t from, base;
    bool known;
} ingest_start;

static int start_fn(store_txn *txn, void *arg, nsed_err *err)
{
    ingest_start *b = arg;
    cJSON *files = NULL;
    int rc;

    if (b->ctx->shard_count) {
        rc = ingested_read(txn, &files, err);
        if (!rc)
            rc = ingested_base(txn, files, b->ctx->digest, &b->base, &b->known,
                               err);
        cJSON_Delete(files);
        /* a shard's new questions number from the file's base on, and
         * nothing in the store lies above a new file's base */
        b->from = b->base;
        return rc;
    }
    return next_seq(txn, &b->from, err);
}

static int put_partial(store_txn *txn, uint64_t from, nsed_err *err)
{
    char text[64];
    int n = snprintf(text, sizeof text, "{\"from\":%" PRIu64 "}", from);
    int rc = store_put(txn, STORE_META, PARTIAL_KEY, strlen(PARTIAL_KEY), text,
                       (size_t)n);

    return rc ? nsed_error(err, rc, "cannot write the store's ingest record")
              : 0;
}

/* The record of an unfinished ingest: 0 with *present set (and, when it
 * is, *from: the first sequence number that ingest gave), or an error. */
static int get_partial(store_txn *txn, bool *present, uint64_t *from,
                       nsed_err *err)
{
    const void *val;
    size_t vlen;
    cJSON *j;
    double v;
    int rc = store_get(txn, STORE_META, PARTIAL_KEY, strlen(PARTIAL_KEY), &val,
                       &vlen);

    *present = rc == 0;
    if (rc == NSED_ENOTFOUND)
        return 0;
    if (rc)
        return nsed_error(err, rc, "cannot read the store's ingest record");
    j = cJSON_ParseWithLength(val, vlen);
    v = json_num(j, "from", -1);
    cJSON_Delete(j);
    if (!(v >= 0 && v <= 9e15))
        return store_corrupt(err, txn, STORE_META,
                             "the record of an unfinished ingest "
                             "(\"" PARTIAL_KEY "\")",
                             "no \"from\" sequence number");
    *from = (uint64_t)v;
    return 0;
}

/* One batch in one write transaction; store_write may run it again from
 * scratch after growing the map, so it keeps its counts in b and the
 * caller takes them only once it committed. */
static int batch_fn(store_txn *txn, void *arg, nsed_err *err)
{
    ingest_batch *b = arg;
    ingest_ctx *ctx = b->ctx;
    uint64_t next = ctx->next;
    int rc = 0;

    b->added = b->unchanged = 0;
    for (size_t i = 0; i < b->n && !rc; i++) {
        ingest_item *it = &b->items[i];
        questions_stats one = {0};
        uint64_t seq = ctx->shard_count ? it->seq : next;

        rc = ingest_one(txn, ctx->path, it->lineno, &it->q, &seq, &one, err);
        if (!ctx->shard_count)
            next = seq;
        b->added += one.added;
        b->unchanged += one.unchanged;
    }
    /* a file a shard listed before holds every question it can add (they
     * number from its own base, below later files'), so it adds none and
     * needs no record */
    if (!rc && b->added && !ctx->partial && !ctx->known)
        rc = put_partial(txn, ctx->from, err);
    b->next = next;
    return rc;
}

/* The end of a successful ingest: the shard's file listed, the partial
 * record gone. */
static int finish_fn(store_txn *txn, void *arg, nsed_err *err)
{
    ingest_start *b = arg;
    cJSON *files = NULL;
    int rc = 0;

    if (b->ctx->shard_count && !b->known) {
        rc = ingested_read(txn, &files, err);
        if (!rc)
            rc = ingested_add(txn, files, b->ctx->digest, b->base,
                              b->ctx->position, err);
        cJSON_Delete(files);
    }
    if (!rc && b->ctx->partial) {
        rc = store_del(txn, STORE_META, PARTIAL_KEY, strlen(PARTIAL_KEY));
        if (rc == NSED_ENOTFOUND)
            rc = 0;
        if (rc)
            rc = nsed_error(err, rc, "cannot write the store's ingest record");
    }
    return rc;
}

/* ---- undoing an unfinished ingest ---------------------------------------- */

typedef struct undo {
    uint64_t from;
    uint64_t seqs[INGEST_BATCH];
    size_t n;
    size_t removed; /* of this step */
    bool done;
} undo;

static int undo_collect(const void *key, size_t klen, const void *val,
                        size_t vlen, void *arg)
{
    undo *u = arg;

    (void)val;
    (void)vlen;
    if (klen != 8)
        return NSED_ESTORE;
    u->seqs[u->n++] = store_key_u64(key);
    return u->n == INGEST_BATCH;
}

/* One step: remove up to INGEST_BATCH of the unfinished ingest's
 * questions (from the top of the order down is not needed: every entry
 * at or above "from" is its own), and the record once none is left. */
static int undo_fn(store_txn *txn, void *arg, nsed_err *err)
{
    undo *u = arg;
    unsigned char key[8];
    bool present = false;
    int rc = get_partial(txn, &present, &u->from, err);

    u->n = u->removed = 0;
    u->done = !present;
    if (rc || !present)
        return rc;
    store_u64_key(u->from, key);
    rc = store_scan(txn, STORE_QORDER, NULL, 0, key, sizeof key, undo_collect,
                    u);
    if (rc < 0)
        return store_corrupt(err, txn, STORE_QORDER, "an order entry",
                             "its key is not an 8-byte sequence number");
    for (size_t i = 0; i < u->n; i++) {
        const void *id;
        size_t idlen;

        store_u64_key(u->seqs[i], key);
        rc = store_get(txn, STORE_QORDER, key, sizeof key, &id, &idlen);
        if (!rc)
            rc = store_del(txn, STORE_QUESTIONS, id, idlen);
        if (rc == NSED_ENOTFOUND)
            rc = 0;
        if (!rc)
            rc = store_del(txn, STORE_QORDER, key, sizeof key);
        if (rc)
            return nsed_error(err, rc, "cannot undo the unfinished ingest");
        u->removed++;
    }
    if (u->n < INGEST_BATCH) {
        rc = store_del(txn, STORE_META, PARTIAL_KEY, strlen(PARTIAL_KEY));
        if (rc)
            return nsed_error(err, rc, "cannot undo the unfinished ingest");
        u->done = true;
    }
    return 0;
}

static int peek_partial_fn(store_txn *txn, void *arg, nsed_err *err)
{
    uint64_t from;

    return get_partial(txn, arg, &from, err);
}

int questions_ingest_unfinished(store *s, bool *unfinished, nsed_err *err)
{
    *unfinished = false;
    return store_read(s, peek_partial_fn, unfinished, err);
}

int questions_recover(store *s, size_t *removed, nsed_err *err)
{
    undo *u = NULL;
    size_t total = 0;
    bool present = false;
    /* a read first: a store without the record (nearly always) costs no
     * write transaction, and no sync */
    int rc = questions_ingest_unfinished(s, &present, err);

    if (!rc && present && !(u = calloc(1, sizeof *u)))
        rc = nsed_error(err, NSED_ENOMEM, "out of memory");
    while (!rc && present && !(rc = store_write(s, undo_fn, u, err))) {
        total += u->removed;
        present = !u->done;
    }
    free(u);
    if (!rc && removed)
        *removed = total;
    return rc;
}

int questions_ingest(store *s, const char *path, questions_stats *stats,
                     nsed_err *err)
{
    return questions_ingest_with(s, path, NULL, stats, err);
}

/* Read up to INGEST_BATCH questions (INGEST_BATCH_BYTES of text) of the
 * shard into b; *eof at the end of the file. */
static int fill_batch(questions_reader *r, ingest_ctx *ctx, ingest_batch *b,
                      bool *eof, nsed_err *err)
{
    size_t bytes = 0;

    b->n = 0;
    while (b->n < INGEST_BATCH && bytes < INGEST_BATCH_BYTES) {
        ingest_item *it = &b->items[b->n];
        uint32_t shard;
        int rc = questions_reader_next(r, &it->q, &it->lineno, err);

        if (rc == NSED_ENOTFOUND) {
            *eof = true;
            return 0;
        }
        if (rc)
            return rc;
        ctx->st.questions++;
        if (it->q.answer)
            ctx->st.with_answer++;
        if (ctx->shard_count) {
            rc = questions_shard_of(it->q.id, ctx->shard_count, &shard);
            if (rc) {
                question_release(&it->q);
                return nsed_error(err, rc, "out of memory");
            }
            it->seq = ctx->from + ctx->position++;
            if (shard != ctx->shard_index) {
                ctx->st.other_shards++;
                question_release(&it->q);
                continue;
            }
        }
        bytes += strlen(it->q.text) + strlen(it->q.id) +
                 (it->q.answer ? strlen(it->q.answer) : 0) +
                 (it->q.meta_json ? strlen(it->q.meta_json) : 0);
        b->n++;
    }
    return 0;
}

static void batch_release(ingest_batch *b)
{
    for (size_t i = 0; i < b->n; i++)
        question_release(&b->items[i].q);
    b->n = 0;
}

int questions_ingest_with(store *s, const char *path,
                          const questions_opts *opts, questions_stats *stats,
                          nsed_err *err)
{
    ingest_ctx ctx = {.path = path};
    ingest_start start = {.ctx = &ctx};
    ingest_batch b = {.ctx = &ctx};
    questions_reader *r = NULL;
    unsigned flags = QUESTIONS_UNIQUE;
    bool eof = false;
    int rc;

    if (opts) {
        ctx.ropts.map = opts->map;
        ctx.shard_index = opts->shard_index;
        ctx.shard_count = opts->shard_count;
        if (ctx.shard_count && ctx.shard_index >= ctx.shard_count)
            return nsed_error(err, NSED_EINVAL,
                              "shard %" PRIu32 " of %" PRIu32
                              " does not exist (shards count from 0)",
                              ctx.shard_index, ctx.shard_count);
        if (ctx.shard_count) {
            rc = file_digest(path, ctx.digest, err);
            if (rc)
                return rc;
        }
        /* every bad line first, then the write (which stops at the
         * first, of which there are none left to find) */
        if (opts->on_error) {
            rc = questions_check_file_with(path, opts, NULL, err);
            if (rc)
                return rc;
            flags = 0; /* the check found no id twice: one id set is enough */
        }
    }
    /* what an ingest killed before left is undone first: it never
     * happened (its questions were in no run) */
    rc = questions_recover(s, &ctx.st.undone, err);
    if (!rc)
        rc = store_read(s, start_fn, &start, err);
    if (rc)
        return rc;
    ctx.from = ctx.next = start.from;
    ctx.known = start.known;
    rc = questions_reader_open_with(path, flags, &ctx.ropts, &r, err);
    if (!rc && !(b.items = calloc(INGEST_BATCH, sizeof *b.items)))
        rc = nsed_error(err, NSED_ENOMEM, "out of memory");
    while (!rc && !eof) {
        rc = fill_batch(r, &ctx, &b, &eof, err);
        if (!rc && b.n)
            rc = store_write(s, batch_fn, &b, err);
        if (!rc) {
            ctx.next = b.next;
            ctx.st.added += b.added;
            ctx.st.unchanged += b.unchanged;
            ctx.partial = ctx.partial || (b.added > 0 && !ctx.known);
        }
        batch_release(&b);
    }
    if (!rc)
        rc = store_write(s, finish_fn, &start, err);
    if (rc && ctx.partial) {
        /* all or nothing: the batches already in go again */
        nsed_err why = {0};

        if (questions_recover(s, NULL, &why))
            nsed_error(err, rc,
                       "%s; undoing the questions already added "
                       "failed too (%s): the next ingest or run undoes them",
                       err->msg, why.msg);
    }
    if (!rc)
        ctx.st.lines = questions_reader_lines(r);
    free(b.items);
    questions_reader_free(r);
    if (rc)
        return rc;
    if (stats)
        *stats = ctx.st;
    return 0;
}

int questions_get(store_txn *txn, const char *id, question *out,
                  nsed_err *err)
{
    const void *val;
    size_t vlen, idlen = strlen(id);
    question q = {0};
    nsed_err why = {0};
    char what[STORE_KEY_MAX + 32];
    int rc;

    if (!idlen || idlen > STORE_KEY_MAX)
        return nsed_error(err, NSED_ENOTFOUND,
                          "question \"%.300s\" is not in the store", id);
    rc = store_get(txn, STORE_QUESTIONS, id, idlen, &val, &vlen);
    if (rc == NSED_ENOTFOUND)
        return nsed_error(err, rc, "question \"%s\" is not in the store", id);
    if (rc)
        return nsed_error(err, rc, "cannot read question \"%s\" from the "
                                   "store",
                          id);
    rc = questions_parse_record(val, vlen, &q, NULL, &why);
    if (rc == NSED_ENOMEM)
        return nsed_error(err, rc, "out of memory");
    snprintf(what, sizeof what, "question \"%s\"", id);
    if (rc)
        return store_corrupt(err, txn, STORE_QUESTIONS, what, why.msg);
    if (strcmp(q.id, id) != 0) {
        question_release(&q);
        return store_corrupt(err, txn, STORE_QUESTIONS, what,
                             "it is filed under another id");
    }
    *out = q;
    return 0;
}

int questions_count(store_txn *txn, size_t *n)
{
    return store_count(txn, STORE_QORDER, n);
}

static int total_txn(store_txn *txn, void *arg, nsed_err *err)
{
    int rc = questions_count(txn, arg);

    if (rc)
        return nsed_error(err, rc, "cannot count the questions in the store");
    return 0;
}

int questions_total(store *s, size_t *n, nsed_err *err)
{
    size_t count = 0;
    int rc;

    rc = store_read(s, total_txn, &count, err);
    if (rc)
        return rc;
    *n = count;
    return 0;
}

typedef struct scan_ctx {
    store_txn *txn;
    int (*fn)(const question *q, uint64_t seq, void *arg);
    void *arg;
    nsed_err *err;
    int failed;     /* scan_one found damage (err is filled) */
    int fn_stopped; /* fn returned non-zero */
} scan_ctx;

/* The order entry key -> id names a question; report one that does not
 * lead to a readable record of that id and that sequence number. */
static int scan_one(const void *key, size_t klen, const void *val,
                    size_t vlen, void *arg)
{
    scan_ctx *c = arg;
    const void *rec;
    size_t rlen;
    question q = {0};
    uint64_t seq, rseq = 0;
    nsed_err why = {0};
    char what[STORE_KEY_MAX + 64];
    int rc;

    c->failed = 1;
    if (klen != 8)
        return store_corrupt(c->err, c->txn, STORE_QORDER,
                             "a question order entry",
                             "its key is not 8 bytes");
    seq = store_key_u64(key);
    snprintf(what, sizeof what, "question order entry %" PRIu64, seq);
    if (vlen == 0 || vlen > STORE_KEY_MAX || memchr(val, '\0', vlen))
        return store_corrupt(c->err, c->txn, STORE_QORDER, what,
                             "it does not hold a question id");
    rc = store_get(c->txn, STORE_QUESTIONS, val, vlen, &rec, &rlen);
    if (rc == NSED_ENOTFOUND)
        return store_corrupt(c->err, c->txn, STORE_QORDER, what,
                             "it names a question that has no record");
    snprintf(what, sizeof what, "question \"%.*s\"", (int)vlen,
             (const char *)val);
    if (rc)
        return nsed_error(c->err, rc, "store %s: cannot read %s",
                          store_txn_dir(c->txn), what);
    rc = questions_parse_record(rec, rlen, &q, &rseq, &why);
    if (rc == NSED_ENOMEM)
        return nsed_error(c->err, rc, "out of memory");
    if (rc || rseq != seq || strlen(q.id) != vlen ||
        memcmp(q.id, val, vlen) != 0) {
        question_release(&q);
        return store_corrupt(c->err, c->txn, STORE_QUESTIONS, what,
                             rc ? why.msg
                                : "its id or sequence number disagrees with "
                                  "the question order");
    }
    c->failed = 0;
    rc = c->fn(&q, seq, c->arg);
    c->fn_stopped = rc != 0;
    question_release(&q);
    return rc;
}

int questions_scan(store_txn *txn, uint64_t start_seq,
                   int (*fn)(const question *q, uint64_t seq, void *arg),
                   void *arg, nsed_err *err)
{
    scan_ctx c = {txn, fn, arg, err, 0, 0};
    unsigned char start[8];
    int rc;

    store_u64_key(start_seq, start);
    rc = store_scan(txn, STORE_QORDER, NULL, 0, start, sizeof start, scan_one,
                    &c);
    if (rc && !c.failed && !c.fn_stopped)
        /* store_scan's own failure (LMDB) */
        rc = nsed_error(err, rc, "store %s: cannot read the question order",
                        store_txn_dir(txn));
    return rc;
}

const char *questions_rationale_why(const char *ref)
{
    size_t n = strlen(ref), ends = 0;

    if (strstr(ref, "####"))
        return "it holds \"####\" (a GSM8K rationale)";
    if (strstr(ref, "\\boxed"))
        return "it holds \"\\boxed\" (a MATH solution)";
    if (n <= QUESTIONS_RATIONALE_BYTES)
        return NULL;
    for (size_t i = 0; i + 1 < n; i++)
        if ((ref[i] == '.' || ref[i] == '?' || ref[i] == '!') &&
            (ref[i + 1] == ' ' || ref[i + 1] == '\n'))
            ends++;
    return ends >= 2 ? "it is long and has several sentences" : NULL;
}

static int refcheck_one(const question *q, uint64_t seq, void *arg)
{
    questions_refcheck *c = arg;
    const char *why;

    (void)seq;
    if (!q->answer)
        return 0;
    c->with_answer++;
    why = questions_rationale_why(q->answer);
    if (why && !c->rationale++) {
        snprintf(c->example, sizeof c->example, "%s", q->id);
        c->why = why;
    }
    return 0;
}

static int refcheck_txn(store_txn *txn, void *arg, nsed_err *err)
{
    return questions_scan(txn, 0, refcheck_one, arg, err);
}

int questions_check_references(store *s, questions_refcheck *out, nsed_err *err)
{
    questions_refcheck c = {0};
    int rc = store_read(s, refcheck_txn, &c, err);

    if (!rc)
        *out = c;
    return rc;
}
