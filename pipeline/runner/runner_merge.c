/* runner_merge.c -- shard stores of one run into one store (see
 * runner_merge.h for the steps and the contract).
 *
 * The per-question databases are copied record by record: the shards'
 * questions are disjoint (checked by their hash), so their records are
 * too, and any key two shards share must hold the same bytes (the
 * ledger, whose records are keyed by what decides the answer, is the one
 * database where a shared key is expected; differing bytes there are
 * counted and the first kept). Telemetry is combined through the owners
 * of its formats: call statistics by gateway_stats, the broker's counts
 * by telemetry_merge_own, the per-round counts by runner_rounds_*.
 *
 * The copy goes into OUT.merging without fsync (a killed merge starts
 * that directory over, so nothing in it needs to survive a crash); the
 * last transaction reopens it with fsync, which flushes the whole data
 * file, before it is moved into place.
 */
#include "pipeline/runner/runner_merge.h"

#include "pipeline/base/json.h"
#include "pipeline/broker/telemetry.h"
#include "pipeline/gateway/gateway.h"
#include "pipeline/questions/questions.h"
#include "pipeline/runner/runner_int.h"
#include "store/store.h"
#include "store/store_keys.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MERGE_SUFFIX ".merging"
/* unfinished shards named in one message; the rest are counted */
#define MERGE_UNFINISHED_SHOWN 8

/* The files nsed makes in a store directory: the only ones a merge ever
 * deletes (store.c's names). */
static const char *const store_files[] = {"data.mdb", "lock.mdb", "nsed.lock"};

typedef struct shard {
    const char *dir;
    store *st;
    cJSON *man;
    char *ingested; /* the "ingested" record, NULL when absent */
    size_t map_size;
    uint32_t index, count;
    uint64_t questions, unfinished;
} shard;

typedef struct rec {
    const void *k, *v;
    size_t kl, vl;
} rec;

/* One model's telemetry, summed over the shards. */
typedef struct model_tele {
    char *id;
    bool have_calls;
    gateway_stats calls;
    char *prior; /* the first shard's "prior/<id>" record */
    size_t prior_len;
    bool prior_differs;
} model_tele;

/* A shard's "model/<id>" record, added to the merged one at the end. */
typedef struct own_rec {
    char *id;
    char *val;
    size_t len;
    const char *dir;
} own_rec;

typedef struct merge {
    const runner_merge_opts *o;
    runner_merge_summary *sum;
    nsed_err *err;
    shard *sh; /* sorted by index */
    size_t n;
    uint32_t count;
    char *tmp; /* OUT.merging */
    store *out;
    double t0;
    /* the batch being collected */
    enum store_db db;
    size_t cur; /* position of the shard being copied */
    rec *batch;
    size_t nb, cap, bytes, batch_max;
    uint64_t batch_conflicts;
    uint64_t total;
    /* telemetry */
    model_tele *models;
    size_t nmodels;
    own_rec *own;
    size_t nown;
    bool have_rounds; /* the shard being scanned has "rounds" */
    bool any_rounds;
    runner_round_counts rounds;
    uint64_t dropped; /* telemetry records not carried over */
    store_txn *txn;   /* the shard's read transaction during a scan */
    size_t mark;      /* its values before the batch (store_txn_mark) */
} merge;

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void note(const merge *m, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void note(const merge *m, const char *fmt, ...)
{
    char line[1024];
    va_list ap;

    if (!m->o->on_note)
        return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    m->o->on_note(m->o->user, line);
}

static void progress(merge *m, bool final)
{
    runner_merge_progress p = {m->sum->records, m->total, m->cur, m->n,
                               now_s() - m->t0, final};

    if (m->o->on_progress)
        m->o->on_progress(m->o->user, &p);
}

/* ---- step 1: the shards and their checks -------------------------------- */

/* The manifest's "shard" as index and count; -1 when it has none. */
static int manifest_shard(const cJSON *man, uint32_t *index, uint32_t *count)
{
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(man, "shard");
    double k = json_num(sh, "index", -1), n = json_num(sh, "count", -1);

    if (!cJSON_IsObject(sh) || k < 0 || n < 1 || k >= n || n > UINT32_MAX ||
        k != (double)(uint32_t)k || n != (double)(uint32_t)n)
        return -1;
    *index = (uint32_t)k;
    *count = (uint32_t)n;
    return 0;
}

static int ingested_fn(store_txn *t, void *arg, nsed_err *err)
{
    shard *s = arg;
    int rc = questions_ingested_json(t, &s->ingested);

    if (rc == NSED_ENOTFOUND) {
        s->ingested = NULL;
        return 0;
    }
    if (rc)
        return nsed_error(err, rc,
                          "store %s: cannot read its \"ingested\" "
                          "record: %s",
                          s->dir, nsed_strerror(rc));
    return 0;
}

/* Open shard s read-only into s->st (a frozen open: see STORE_FROZEN).
 * Only one shard is open at a time (a run of 65536 shards would run out
 * of file descriptors otherwise): each step opens, reads and closes. */
static int shard_open(shard *s, nsed_err *err)
{
    store_opts so = {STORE_RDONLY | STORE_FROZEN, 0};
    bool unfinished = false;
    int rc = store_open(s->dir, &so, &s->st, err);

    if (rc == NSED_ENOTFOUND)
        return nsed_error(err, NSED_EINVAL,
                          "shard store %s: no nsed store there", s->dir);
    if (!rc)
        rc = questions_ingest_unfinished(s->st, &unfinished, err);
    if (!rc && unfinished)
        rc = nsed_error(err, NSED_EINVAL,
                        "shard store %s: an ingest into it did not finish "
                        "(it was stopped between its batches); run the "
                        "shard's nsed ingest or nsed run again first",
                        s->dir);
    if (rc) {
        store_close(s->st);
        s->st = NULL;
    }
    return rc;
}

static void shard_close(shard *s)
{
    store_close(s->st);
    s->st = NULL;
}

/* Run fn in one read transaction of shard s. */
static int shard_read(shard *s, store_txn_fn fn, void *arg, nsed_err *err)
{
    int rc = shard_open(s, err);

    if (!rc)
        rc = store_read(s->st, fn, arg, err);
    shard_close(s);
    return rc;
}

static int read_shard(shard *s, nsed_err *err)
{
    char *text = NULL;
    int rc;

    rc = shard_open(s, err);
    if (rc)
        return rc;
    s->map_size = store_map_size(s->st);
    rc = store_manifest_json(s->st, &text, err);
    if (rc == NSED_ENOTFOUND)
        rc = nsed_error(err, NSED_EINVAL,
                        "store %s is not a shard: it has no manifest", s->dir);
    if (rc)
        goto out;
    s->man = cJSON_Parse(text);
    free(text);
    if (!cJSON_IsObject(s->man)) {
        rc = nsed_error(err, NSED_ESTORE,
                        "store %s: the recorded manifest is damaged", s->dir);
        goto out;
    }
    if (manifest_shard(s->man, &s->index, &s->count) != 0) {
        rc = nsed_error(err, NSED_EINVAL,
                        "store %s is not a shard: its manifest has no "
                        "\"shard\" (it was not made by nsed run --shard K/N)",
                        s->dir);
        goto out;
    }
    rc = store_read(s->st, ingested_fn, s, err);
out:
    shard_close(s);
    return rc;
}

static int by_index(const void *a, const void *b)
{
    const shard *x = a, *y = b;

    return x->index < y->index ? -1 : x->index > y->index;
}

/* What must be equal between shards: the first differing field, or NULL. */
static const char *run_differs(const shard *a, const shard *b)
{
    /* the seed is part of the workflow hash: named first, as the cause */
    if (strcmp(json_str(a->man, "seed", ""), json_str(b->man, "seed", "")) != 0)
        return "seed";
    if (a->count != b->count)
        return "shard count";
    if (strcmp(json_str(a->man, "workflow_hash", ""),
               json_str(b->man, "workflow_hash", "")) != 0)
        return "workflow hash";
    return NULL;
}

static int check_run(merge *m, nsed_err *err)
{
    const shard *f = &m->sh[0];
    char list[NSED_ERR_MSG_MAX / 2] = "";
    size_t len = 0, missing = 0, differ = 0;

    for (size_t i = 1; i < m->n; i++) {
        const shard *s = &m->sh[i];
        const char *what = run_differs(f, s);

        if (what)
            return nsed_error(err, NSED_EMISMATCH,
                              "shards of different runs: %s (shard %" PRIu32
                              "/%" PRIu32 ") and %s (shard %" PRIu32 "/%" PRIu32
                              ") differ in their %s; merge only the shards of "
                              "one run",
                              f->dir, f->index, f->count, s->dir, s->index,
                              s->count, what);
    }
    /* sorted: a repeated index sits next to its twin */
    for (size_t i = 1; i < m->n; i++)
        if (m->sh[i].index == m->sh[i - 1].index)
            return nsed_error(err, NSED_EINVAL,
                              "shard %" PRIu32 "/%" PRIu32 " is given twice: "
                              "%s and %s",
                              m->sh[i].index, m->count, m->sh[i - 1].dir,
                              m->sh[i].dir);
    for (size_t i = 1; i < m->n; i++) {
        const shard *s = &m->sh[i];

        if ((f->ingested == NULL) != (s->ingested == NULL) ||
            (f->ingested && strcmp(f->ingested, s->ingested) != 0)) {
            int w = snprintf(list + len, sizeof list - len,
                             "%s%s (shard %" PRIu32 ")", differ ? ", " : "",
                             s->dir, s->index);

            differ++;
            if (w > 0 && (size_t)w < sizeof list - len)
                len += (size_t)w;
        }
    }
    if (differ)
        return nsed_error(err, NSED_EMISMATCH,
                          "shards that ingested different question files: %s "
                          "differ%s from %s (shard %" PRIu32 "); every shard "
                          "must run the same ingest and run commands",
                          list, differ == 1 ? "s" : "", f->dir, f->index);
    len = 0;
    for (uint32_t k = 0, i = 0; k < m->count; k++) {
        int w;

        while (i < m->n && m->sh[i].index < k)
            i++;
        if (i < m->n && m->sh[i].index == k)
            continue;
        w = snprintf(list + len, sizeof list - len, "%s%" PRIu32,
                     missing ? ", " : "", k);
        missing++;
        if (w > 0 && (size_t)w < sizeof list - len)
            len += (size_t)w;
    }
    if (missing)
        return nsed_error(err, NSED_ENOTFOUND, "missing shards: %s of %" PRIu32,
                          list, m->count);
    return 0;
}

typedef struct verify_ctx {
    merge *m;
    shard *s;
    store_txn *t;
    nsed_err *err;
} verify_ctx;

static int verify_question(const void *key, size_t klen, const void *val,
                           size_t vlen, void *arg)
{
    verify_ctx *c = arg;
    char id[STORE_KEY_MAX + 1];
    const void *r;
    size_t rl;
    uint32_t k;
    int rc;

    (void)val;
    (void)vlen;
    memcpy(id, key, klen);
    id[klen] = '\0';
    rc = questions_shard_of(id, c->m->count, &k);
    if (rc)
        return nsed_error(c->err, rc, "out of memory");
    if (k != c->s->index)
        return nsed_error(c->err, NSED_EMISMATCH,
                          "store %s (shard %" PRIu32 "/%" PRIu32 ") holds "
                          "question \"%s\", which belongs to shard %" PRIu32
                          "; it is not a shard made by nsed run --shard",
                          c->s->dir, c->s->index, c->m->count, id, k);
    c->s->questions++;
    rc = store_get(c->t, STORE_RESULTS, key, klen, &r, &rl);
    if (rc == NSED_ENOTFOUND)
        c->s->unfinished++;
    else if (rc)
        return nsed_error(c->err, rc,
                          "store %s: cannot read the result of "
                          "\"%s\"",
                          c->s->dir, id);
    return 0;
}

static const enum store_db copied_dbs[] = {STORE_QUESTIONS, STORE_QORDER,
                                           STORE_STATE, STORE_RESULTS,
                                           STORE_LEDGER};
#define NCOPIED (sizeof copied_dbs / sizeof copied_dbs[0])

static int verify_fn(store_txn *t, void *arg, nsed_err *err)
{
    verify_ctx *c = arg;
    int rc;

    c->t = t;
    c->err = err;
    rc = store_scan(t, STORE_QUESTIONS, NULL, 0, NULL, 0, verify_question, c);
    if (rc && (!err || !err->msg[0]))
        rc = nsed_error(err, rc, "store %s: cannot read its questions",
                        c->s->dir);
    for (size_t i = 0; !rc && i < NCOPIED; i++) {
        size_t n = 0;

        rc = store_count(t, copied_dbs[i], &n);
        if (rc)
            rc = nsed_error(err, rc, "store %s: cannot count database %s",
                            c->s->dir, store_db_name(copied_dbs[i]));
        c->m->total += n;
    }
    return rc;
}

static int check_finished(merge *m, nsed_err *err)
{
    char msg[NSED_ERR_MSG_MAX - 64] = "";
    size_t len = 0, shown = 0, more = 0;

    for (size_t i = 0; i < m->n; i++) {
        const shard *s = &m->sh[i];
        int w;

        m->sum->questions += s->questions;
        m->sum->unfinished += s->unfinished;
        if (!s->unfinished)
            continue;
        if (shown == MERGE_UNFINISHED_SHOWN) {
            more++;
            continue;
        }
        w = snprintf(msg + len, sizeof msg - len,
                     "%sshard %" PRIu32 "/%" PRIu32
                     " (%s) is unfinished: %" PRIu64 " of %" PRIu64
                     " questions have no result",
                     shown ? "; " : "", s->index, s->count, s->dir,
                     s->unfinished, s->questions);
        shown++;
        if (w > 0 && (size_t)w < sizeof msg - len)
            len += (size_t)w;
    }
    if (!shown || m->o->partial)
        return 0;
    if (more)
        return nsed_error(err, NSED_ENOTFOUND,
                          "%s; and %zu more unfinished shards; run each "
                          "one's nsed run command again",
                          msg, more);
    return nsed_error(err, NSED_ENOTFOUND, "%s; run %s nsed run command again",
                      msg, shown == 1 ? "its" : "each one's");
}

/* ---- step 2: what is at OUT --------------------------------------------- */

/* NSED_EBUSY when a process holds the writer's lock of the store in dir
 * (store.c's nsed.lock): a store being written is neither replaced nor
 * deleted. */
static int writer_busy(const char *dir, nsed_err *err)
{
    char path[PATH_MAX];
    int fd, rc = 0;

    snprintf(path, sizeof path, "%s/nsed.lock", dir);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    if (flock(fd, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK)
        rc = nsed_error(err, NSED_EBUSY,
                        "%s is open for writing by another process (an nsed "
                        "run or merge); wait for it to end and merge again",
                        dir);
    close(fd);
    return rc;
}

/* 1 when dir is an empty directory, 0 when it holds entries, -1 (errno)
 * when it cannot be read. */
static int dir_empty(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int empty = 1;

    if (!d)
        return -1;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            empty = 0;
            break;
        }
    closedir(d);
    return empty;
}

/* What OUT is: 0 absent (or an empty directory), 1 an earlier merge of
 * this run (to be replaced), or an error refusing it. */
static int check_out(merge *m, int *replace, nsed_err *err)
{
    const char *out = m->o->out;
    store_opts so = {STORE_RDONLY, 0};
    store *st = NULL;
    char *text = NULL;
    cJSON *man = NULL;
    const cJSON *mg;
    struct stat sb;
    int rc;

    *replace = 0;
    if (lstat(out, &sb) != 0) {
        if (errno == ENOENT)
            return 0;
        return nsed_error(err, NSED_EIO, "cannot inspect %s: %s", out,
                          strerror(errno));
    }
    if (S_ISDIR(sb.st_mode) && dir_empty(out) == 1)
        return 0;
    rc = S_ISDIR(sb.st_mode) ? store_open(out, &so, &st, err) : NSED_ENOTFOUND;
    if (!rc)
        rc = store_manifest_json(st, &text, err);
    store_close(st);
    if (rc == NSED_ENOTFOUND || rc == NSED_EINVAL || rc == NSED_ESCHEMA)
        return nsed_error(err, NSED_EEXIST,
                          "%s exists and is not a store made by nsed merge; "
                          "give the merge another OUT_STORE (nothing was "
                          "changed)",
                          out);
    if (rc)
        return rc;
    man = cJSON_Parse(text);
    free(text);
    mg = cJSON_GetObjectItemCaseSensitive(man, "merged");
    if (!cJSON_IsObject(man) || !cJSON_IsObject(mg)) {
        rc = nsed_error(err, NSED_EEXIST,
                        "%s is a store that no nsed merge made (%s); give the "
                        "merge another OUT_STORE (nothing was changed)",
                        out,
                        cJSON_GetObjectItemCaseSensitive(man, "shard")
                            ? "it is a shard"
                            : "it is the store of a run");
        goto out;
    }
    if (strcmp(json_str(man, "workflow_hash", ""),
               json_str(m->sh[0].man, "workflow_hash", "")) != 0 ||
        strcmp(json_str(man, "seed", ""), json_str(m->sh[0].man, "seed", "")) !=
            0 ||
        json_num(mg, "count", -1) != (double)m->count) {
        rc = nsed_error(err, NSED_EEXIST,
                        "%s is the merge of another run (its workflow hash, "
                        "seed or shard count differ from these shards'); give "
                        "the merge another OUT_STORE (nothing was changed)",
                        out);
        goto out;
    }
    rc = writer_busy(out, err);
    *replace = rc == 0;
out:
    cJSON_Delete(man);
    return rc;
}

/* Delete the store in dir and dir itself, if it holds only the files nsed
 * makes; anything else is refused and left. A live writer (another merge
 * building it) is refused too. */
static int remove_store_dir(const char *dir, nsed_err *err)
{
    char path[PATH_MAX];
    DIR *d = opendir(dir);
    struct dirent *e;
    int rc = 0;

    if (!d) {
        if (errno == ENOENT)
            return 0;
        return nsed_error(err, NSED_EIO, "cannot read %s: %s", dir,
                          strerror(errno));
    }
    while (!rc && (e = readdir(d))) {
        bool ours = false;

        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        for (size_t i = 0; i < sizeof store_files / sizeof *store_files; i++)
            ours = ours || !strcmp(e->d_name, store_files[i]);
        if (!ours)
            rc = nsed_error(err, NSED_EINVAL,
                            "%s holds %s, which nsed did not make; remove or "
                            "move it yourself and run the merge again",
                            dir, e->d_name);
    }
    closedir(d);
    if (rc)
        return rc;
    rc = writer_busy(dir, err);
    if (rc)
        return rc;
    for (size_t i = 0; i < sizeof store_files / sizeof *store_files; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, store_files[i]);
        if (unlink(path) != 0 && errno != ENOENT)
            return nsed_error(err, NSED_EIO, "cannot remove %s: %s", path,
                              strerror(errno));
    }
    if (rmdir(dir) != 0 && errno != ENOENT)
        return nsed_error(err, NSED_EIO, "cannot remove %s: %s", dir,
                          strerror(errno));
    return 0;
}

/* ---- step 3: the copy --------------------------------------------------- */

static int put_batch_fn(store_txn *t, void *arg, nsed_err *err)
{
    merge *m = arg;
    const shard *s = &m->sh[m->cur];

    m->batch_conflicts = 0;
    for (size_t i = 0; i < m->nb; i++) {
        const rec *r = &m->batch[i];
        const void *old;
        size_t ol;
        int rc = store_get(t, m->db, r->k, r->kl, &old, &ol);

        if (rc == 0) {
            if (ol == r->vl && memcmp(old, r->v, ol) == 0)
                continue;
            if (m->db == STORE_LEDGER) {
                m->batch_conflicts++;
                continue;
            }
            return nsed_error(err, NSED_EMISMATCH,
                              "store %s (shard %" PRIu32 "): a record of "
                              "database %s is also in an earlier shard, with "
                              "other content; these are not shards of one run",
                              s->dir, s->index, store_db_name(m->db));
        }
        if (rc != NSED_ENOTFOUND)
            return nsed_error(err, rc, "store %s: cannot read database %s",
                              m->tmp, store_db_name(m->db));
        rc = store_put(t, m->db, r->k, r->kl, r->v, r->vl);
        if (rc)
            return nsed_error(err, rc, "store %s: cannot write database %s",
                              m->tmp, store_db_name(m->db));
    }
    return 0;
}

static int flush(merge *m)
{
    int rc;

    if (!m->nb)
        return 0;
    rc = store_write(m->out, put_batch_fn, m, m->err);
    if (rc)
        return rc;
    /* the batch is written: the shard's decompressed copies of its values
     * go, so that a merge holds one batch of them, not the whole shard */
    store_txn_release(m->txn, m->mark);
    m->sum->ledger_conflicts += m->batch_conflicts;
    m->sum->records += m->nb;
    m->nb = 0;
    m->bytes = 0;
    progress(m, false);
    return 0;
}

static int count_outcome(merge *m, const void *val, size_t vlen,
                         const void *key, size_t klen)
{
    enum state_status st;

    if (runner_result_outcome(val, vlen, &st) != 0) {
        char what[STORE_KEY_MAX + 32];

        snprintf(what, sizeof what, "the result of %.*s", (int)klen,
                 (const char *)key);
        return store_corrupt(m->err, m->txn, STORE_RESULTS, what, NULL);
    }
    switch (st) {
    case STATE_STATUS_DONE:
        m->sum->done++;
        break;
    case STATE_STATUS_DEGRADED:
        m->sum->degraded++;
        break;
    case STATE_STATUS_FAILED:
        m->sum->failed++;
        break;
    case STATE_STATUS_ACTIVE:
    case STATE_STATUS_INCOMPLETE:
        break; /* runner_result_outcome gives
                                            neither */
    }
    return 0;
}

static int collect(const void *key, size_t klen, const void *val, size_t vlen,
                   void *arg)
{
    merge *m = arg;
    int rc;

    if (m->db == STORE_RESULTS && (rc = count_outcome(m, val, vlen, key, klen)))
        return rc;
    if (m->nb == m->cap) {
        size_t cap = m->cap ? 2 * m->cap : 1024;
        rec *b = realloc(m->batch, cap * sizeof *b);

        if (!b)
            return nsed_error(m->err, NSED_ENOMEM, "out of memory");
        m->batch = b;
        m->cap = cap;
    }
    /* the bytes point into the shard's map, valid while its read
     * transaction (the scan's) is open: the batch is written before the
     * scan goes on */
    m->batch[m->nb++] = (rec){key, val, klen, vlen};
    m->bytes += klen + vlen;
    if (m->nb >= m->batch_max || m->bytes >= RUNNER_MERGE_BATCH_BYTES)
        return flush(m);
    return 0;
}

static int copy_fn(store_txn *t, void *arg, nsed_err *err)
{
    merge *m = arg;
    int rc = 0;

    m->txn = t;
    m->mark = store_txn_mark(t);
    for (size_t i = 0; !rc && i < NCOPIED; i++) {
        m->db = copied_dbs[i];
        rc = store_scan(t, m->db, NULL, 0, NULL, 0, collect, m);
        if (!rc)
            rc = flush(m);
        if (rc && (!err || !err->msg[0]))
            rc = nsed_error(err, rc, "store %s: cannot read database %s",
                            m->sh[m->cur].dir, store_db_name(m->db));
    }
    m->txn = NULL;
    return rc;
}

/* ---- telemetry ---------------------------------------------------------- */

static model_tele *model_of(merge *m, const char *id, size_t len)
{
    model_tele *mt;

    for (size_t i = 0; i < m->nmodels; i++)
        if (strlen(m->models[i].id) == len && !memcmp(m->models[i].id, id, len))
            return &m->models[i];
    mt = realloc(m->models, (m->nmodels + 1) * sizeof *mt);
    if (!mt)
        return NULL;
    m->models = mt;
    mt = &m->models[m->nmodels];
    memset(mt, 0, sizeof *mt);
    mt->id = strndup(id, len);
    if (!mt->id)
        return NULL;
    m->nmodels++;
    return mt;
}

static char *dup_bytes(const void *p, size_t n)
{
    char *c = malloc(n + 1);

    if (c) {
        memcpy(c, p, n);
        c[n] = '\0';
    }
    return c;
}

static int tele_gateway(merge *m, model_tele *mt, const void *key, size_t klen,
                        const void *val, size_t vlen)
{
    cJSON *j = cJSON_ParseWithLength(val, vlen);
    gateway_stats s;

    if (!cJSON_IsObject(j)) {
        char what[STORE_KEY_MAX + 64];

        cJSON_Delete(j);
        snprintf(what, sizeof what, "the telemetry record \"%.*s\"", (int)klen,
                 (const char *)key);
        return store_corrupt(m->err, m->txn, STORE_TELEMETRY, what,
                             "not a JSON object");
    }
    gateway_stats_from_json(j, &s);
    cJSON_Delete(j);
    gateway_stats_add(&mt->calls, &s);
    mt->have_calls = true;
    return 0;
}

static int tele_entry(const void *key, size_t klen, const void *val,
                      size_t vlen, void *arg)
{
    merge *m = arg;
    enum store_keys_tele kind;
    size_t off, len;
    model_tele *mt;
    own_rec *o;

    if (store_keys_telemetry_parse(key, klen, &kind, &off, &len) != 0) {
        store_key rk;

        store_keys_rounds(&rk);
        if (rk.len == klen && !memcmp(rk.bytes, key, klen))
            m->have_rounds = true;
        else
            m->dropped++;
        return 0;
    }
    mt = model_of(m, (const char *)key + off, len);
    if (!mt)
        return nsed_error(m->err, NSED_ENOMEM, "out of memory");
    switch (kind) {
    case STORE_KEYS_GATEWAY:
        return tele_gateway(m, mt, key, klen, val, vlen);
    case STORE_KEYS_MODEL:
        o = realloc(m->own, (m->nown + 1) * sizeof *o);
        if (!o)
            return nsed_error(m->err, NSED_ENOMEM, "out of memory");
        m->own = o;
        o = &m->own[m->nown];
        o->id = strdup(mt->id);
        o->val = dup_bytes(val, vlen);
        o->len = vlen;
        o->dir = m->sh[m->cur].dir;
        m->nown++;
        if (!o->id || !o->val)
            return nsed_error(m->err, NSED_ENOMEM, "out of memory");
        return 0;
    case STORE_KEYS_PRIOR:
        if (!mt->prior) {
            mt->prior = dup_bytes(val, vlen);
            mt->prior_len = vlen;
            if (!mt->prior)
                return nsed_error(m->err, NSED_ENOMEM, "out of memory");
        } else if (mt->prior_len != vlen || memcmp(mt->prior, val, vlen)) {
            mt->prior_differs = true;
        }
        return 0;
    case STORE_KEYS_BREAKER:
        /* a breaker is a live run's; a merged store has none */
        return 0;
    }
    return 0;
}

static int tele_fn(store_txn *t, void *arg, nsed_err *err)
{
    merge *m = arg;
    runner_round_counts c;
    int rc;

    m->txn = t;
    m->have_rounds = false;
    rc = store_scan(t, STORE_TELEMETRY, NULL, 0, NULL, 0, tele_entry, m);
    if (rc && (!err || !err->msg[0]))
        rc = nsed_error(err, rc, "store %s: cannot read its telemetry",
                        m->sh[m->cur].dir);
    if (!rc && m->have_rounds) {
        rc = runner_rounds_read(t, &c);
        if (rc)
            rc = store_corrupt(err, t, STORE_TELEMETRY,
                               "the telemetry record \"rounds\"", NULL);
        else
            runner_rounds_add(&m->rounds, &c);
        m->any_rounds = true;
    }
    m->txn = NULL;
    return rc;
}

/* ---- the last transaction: telemetry, "ingested", the manifest ---------- */

typedef struct final_ctx {
    merge *m;
    const char *manifest;
} final_ctx;

static int final_fn(store_txn *t, void *arg, nsed_err *err)
{
    final_ctx *c = arg;
    merge *m = c->m;
    store_key key;
    int rc = 0;

    for (size_t i = 0; !rc && i < m->nmodels; i++) {
        const model_tele *mt = &m->models[i];
        cJSON *j;
        char *text;

        if (mt->have_calls) {
            if ((rc = store_keys_telemetry(STORE_KEYS_GATEWAY, mt->id, &key)))
                break;
            j = gateway_stats_to_json(&mt->calls);
            text = j ? cJSON_PrintUnformatted(j) : NULL;
            cJSON_Delete(j);
            rc = text ? store_put(t, STORE_TELEMETRY, key.bytes, key.len, text,
                                  strlen(text))
                      : NSED_ENOMEM;
            free(text);
        }
        if (!rc && mt->prior &&
            !(rc = store_keys_telemetry(STORE_KEYS_PRIOR, mt->id, &key)))
            rc = store_put(t, STORE_TELEMETRY, key.bytes, key.len, mt->prior,
                           mt->prior_len);
    }
    if (rc)
        return nsed_error(err, rc, "store %s: cannot write the telemetry",
                          m->tmp);
    for (size_t i = 0; i < m->nown; i++) {
        rc = telemetry_merge_own(t, m->own[i].id, m->own[i].val, m->own[i].len);
        if (rc == NSED_EINVAL)
            return nsed_error(err, NSED_ESTORE,
                              "store %s: the telemetry record \"model/%s\" in "
                              "database telemetry is corrupt; restore the "
                              "store from a copy",
                              m->own[i].dir, m->own[i].id);
        if (rc)
            return nsed_error(err, rc, "store %s: cannot write the telemetry",
                              m->tmp);
    }
    if (m->any_rounds && (rc = runner_rounds_commit(t, &m->rounds)))
        return nsed_error(err, rc, "store %s: cannot write the telemetry",
                          m->tmp);
    if (m->sh[0].ingested &&
        (rc = questions_ingested_put(t, m->sh[0].ingested)))
        return nsed_error(err, rc,
                          "store %s: cannot write the \"ingested\" "
                          "record",
                          m->tmp);
    return store_manifest_put(t, c->manifest, "merge", m->o->command_line, err);
}

/* The merged manifest: the shards' common fields (the first shard's),
 * without "shard" and "history", plus "merged" with every shard's whole
 * manifest. NULL when out of memory. */
static char *merged_manifest(const merge *m)
{
    cJSON *man = cJSON_Duplicate(m->sh[0].man, 1), *mg = NULL, *arr;
    char *text = NULL;
    bool bad = !man;

    if (man) {
        const char *first = json_str(man, "created_at", NULL);

        /* the run began when its first shard was made; and the run id of
         * the exports (created_at and seed) stays the same in every
         * merge of these shards */
        for (size_t i = 1; i < m->n; i++) {
            const char *c = json_str(m->sh[i].man, "created_at", NULL);

            if (c && (!first || strcmp(c, first) < 0))
                first = c;
        }
        bad = first && json_set_str(man, "created_at", first);
        cJSON_DeleteItemFromObjectCaseSensitive(man, "shard");
        cJSON_DeleteItemFromObjectCaseSensitive(man, "history");
        mg = cJSON_AddObjectToObject(man, "merged");
    }
    arr = !bad && mg && cJSON_AddNumberToObject(mg, "count", m->count)
              ? cJSON_AddArrayToObject(mg, "shards")
              : NULL;
    bad = bad || !arr;
    for (size_t i = 0; !bad && i < m->n; i++) {
        const shard *s = &m->sh[i];
        cJSON *e = cJSON_CreateObject();
        char *abs = realpath(s->dir, NULL);

        /* e belongs to arr only once the last call succeeded */
        bad = !e || !cJSON_AddNumberToObject(e, "index", s->index) ||
              json_add_str(e, "store", abs ? abs : s->dir) ||
              json_add_item(e, "manifest", cJSON_Duplicate(s->man, 1)) ||
              !cJSON_AddItemToArray(arr, e);
        if (bad)
            cJSON_Delete(e);
        free(abs);
    }
    if (!bad)
        text = cJSON_PrintUnformatted(man);
    cJSON_Delete(man);
    return text;
}

/* ---- step 4: into place ------------------------------------------------- */

/* fsync the directory holding path, so that a rename in it survives a
 * power cut. */
static int sync_parent(const char *path, nsed_err *err)
{
    char *copy = strdup(path), *slash;
    const char *dir = ".";
    int fd, rc = 0;

    if (!copy)
        return nsed_error(err, NSED_ENOMEM, "out of memory");
    slash = strrchr(copy, '/');
    if (slash == copy)
        dir = "/";
    else if (slash) {
        *slash = '\0';
        dir = copy;
    }
    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) != 0)
        rc = nsed_error(err, NSED_EIO, "cannot sync directory %s: %s", dir,
                        strerror(errno));
    if (fd >= 0)
        close(fd);
    free(copy);
    return rc;
}

static int move_into_place(merge *m, int replace, nsed_err *err)
{
    const char *out = m->o->out;
    nsed_err why = {0};
    int rc;

    if (!replace) {
        /* rename(2) replaces an empty directory, and only an empty one */
        if (rename(m->tmp, out) != 0)
            return nsed_error(err, NSED_EIO, "cannot rename %s to %s: %s",
                              m->tmp, out, strerror(errno));
        return sync_parent(out, err);
    }
    if (renameat2(AT_FDCWD, m->tmp, AT_FDCWD, out, RENAME_EXCHANGE) != 0)
        return nsed_error(err, NSED_EIO,
                          "cannot swap %s with the earlier merge %s: %s",
                          m->tmp, out, strerror(errno));
    rc = sync_parent(out, err);
    if (rc)
        return rc;
    m->sum->replaced = true;
    /* the earlier merge, now under the temporary name; the new one is in
     * place whatever happens to it */
    if (remove_store_dir(m->tmp, &why) != 0)
        note(m, "the earlier merge is left in %s: %s", m->tmp, why.msg);
    return 0;
}

/* ---- the whole ---------------------------------------------------------- */

static void merge_release(merge *m)
{
    for (size_t i = 0; m->sh && i < m->n; i++) {
        shard_close(&m->sh[i]);
        cJSON_Delete(m->sh[i].man);
        free(m->sh[i].ingested);
    }
    free(m->sh);
    store_close(m->out);
    free(m->tmp);
    free(m->batch);
    for (size_t i = 0; i < m->nmodels; i++) {
        free(m->models[i].id);
        free(m->models[i].prior);
    }
    free(m->models);
    for (size_t i = 0; i < m->nown; i++) {
        free(m->own[i].id);
        free(m->own[i].val);
    }
    free(m->own);
}

static int open_out(merge *m, unsigned flags, nsed_err *err)
{
    store_opts so = {flags, 0};

    for (size_t i = 0; i < m->n; i++)
        so.initial_map_size += m->sh[i].map_size;
    return store_open(m->tmp, &so, &m->out, err);
}

static int copy_all(merge *m, nsed_err *err)
{
    int rc = 0;

    for (m->cur = 0; !rc && m->cur < m->n; m->cur++)
        rc = shard_read(&m->sh[m->cur], copy_fn, m, err);
    for (m->cur = 0; !rc && m->cur < m->n; m->cur++)
        rc = shard_read(&m->sh[m->cur], tele_fn, m, err);
    m->cur = m->n ? m->n - 1 : 0;
    return rc;
}

static void summarize(merge *m)
{
    for (size_t i = 0; i < m->nmodels; i++) {
        m->sum->calls += m->models[i].calls.calls;
        m->sum->ledger_hits += m->models[i].calls.ledger_hits;
        m->sum->cost_usd += m->models[i].calls.cost_usd;
        if (m->models[i].prior_differs)
            note(m,
                 "the shards hold different telemetry priors of model %s; "
                 "the one of shard %" PRIu32 " is kept",
                 m->models[i].id, m->sh[0].index);
    }
    if (m->sum->ledger_conflicts)
        note(m,
             "%" PRIu64 " ledger records differ between shards (the same "
             "call answered twice); the first shard's are kept",
             m->sum->ledger_conflicts);
    if (m->dropped)
        note(m,
             "%" PRIu64 " telemetry records of unknown kinds were not "
             "carried over",
             m->dropped);
}

int runner_merge(const runner_merge_opts *o, runner_merge_summary *sum,
                 nsed_err *err)
{
    merge m = {0};
    runner_merge_summary s = {0};
    final_ctx fc = {&m, NULL};
    size_t outlen;
    int rc = 0, replace = 0;

    if (!o || !o->out || !*o->out || !o->shards || !o->nshards || !sum)
        return nsed_error(err, NSED_EINVAL, "runner_merge: bad call");
    m.o = o;
    m.sum = &s;
    m.err = err;
    m.t0 = now_s();
    m.batch_max = o->batch ? o->batch : RUNNER_MERGE_BATCH;
    m.sh = calloc(o->nshards, sizeof *m.sh);
    outlen = strlen(o->out);
    while (outlen > 1 && o->out[outlen - 1] == '/')
        outlen--;
    m.tmp = malloc(outlen + sizeof MERGE_SUFFIX);
    if (!m.sh || !m.tmp) {
        rc = nsed_error(err, NSED_ENOMEM, "out of memory");
        goto out;
    }
    memcpy(m.tmp, o->out, outlen);
    memcpy(m.tmp + outlen, MERGE_SUFFIX, sizeof MERGE_SUFFIX);
    m.n = o->nshards;

    /* 1. the shards */
    for (size_t i = 0; i < m.n; i++) {
        m.sh[i].dir = o->shards[i];
        rc = read_shard(&m.sh[i], err);
        if (rc)
            goto out;
    }
    qsort(m.sh, m.n, sizeof *m.sh, by_index);
    m.count = s.count = m.sh[0].count;
    rc = check_run(&m, err);
    for (size_t i = 0; !rc && i < m.n; i++) {
        verify_ctx vc = {&m, &m.sh[i], NULL, NULL};

        rc = shard_read(&m.sh[i], verify_fn, &vc, err);
    }
    if (!rc)
        rc = check_finished(&m, err);
    /* 2. OUT */
    if (!rc)
        rc = check_out(&m, &replace, err);
    if (rc)
        goto out;

    /* 3. the copy, in OUT.merging */
    rc = remove_store_dir(m.tmp, err);
    if (!rc)
        rc = open_out(&m, STORE_NOSYNC, err);
    if (!rc)
        rc = copy_all(&m, err);
    if (rc)
        goto out;
    store_close(m.out);
    m.out = NULL;
    fc.manifest = merged_manifest(&m);
    if (!fc.manifest) {
        rc = nsed_error(err, NSED_ENOMEM, "out of memory");
        goto out;
    }
    /* reopened with fsync: this commit flushes every page written before */
    rc = open_out(&m, 0, err);
    if (!rc)
        rc = store_write(m.out, final_fn, &fc, err);
    store_close(m.out);
    m.out = NULL;
    if (rc)
        goto out;

    /* 4. into place */
    rc = move_into_place(&m, replace, err);
    if (rc)
        goto out;
    summarize(&m);
    s.elapsed_s = now_s() - m.t0;
    progress(&m, true);
    *sum = s;
out:
    free((char *)fc.manifest);
    merge_release(&m);
    return rc;
}
