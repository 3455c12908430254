/* Store bytes per question: the figures of `nsed status` (store_bytes)
 * against data.mdb read directly, what a demo run stores per question
 * (its records walked in data.mdb by hand and the compressed ones
 * decompressed with libzstd directly, not through store.c), exact resume
 * after kill -9 with checkpoints that name their archived rounds, and a
 * store whose records are in the format before (every round copied into
 * the state, candidates spelling out their text) read back by this
 * build. */
#include "testutil.h"

#include "stages/state.h"
#include "store/store.h"
#include "store/store_keys.h"

#include <check.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <lmdb.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

#define DEMO_WF NSED_SOURCE_DIR "/workflows/demo.yaml"
#define DEMO_Q NSED_SOURCE_DIR "/workflows/demo-questions.jsonl"
#define DEMO_SIM NSED_SOURCE_DIR "/tests/sim/configs/demo-sim.yaml"
#define SLOW_SIM NSED_SOURCE_DIR "/tests/data/runner/slow-sim.yaml"

#define NSED(url, out, err, ...) TU_NSED(url, out, err, __VA_ARGS__)

static void demo_run(const tu_sim *sim, const char *sdir)
{
    char *out = NULL, *err = NULL;

    ck_assert_msg(NSED(sim->url, &out, &err, "run", DEMO_WF, "--questions",
                       DEMO_Q, "--store", sdir, "--quiet") == 0,
                  "run: %s", err);
    free(out);
    free(err);
}

/* ---- data.mdb read by hand ---------------------------------------------- */

/* LMDB's on-disk layout (lmdb.h / mdb.c, version 0.9): a page starts with
 * a 16-byte header (pgno u64, pad u16, flags u16, lower u16, upper u16);
 * pages 0 and 1 are meta pages whose MDB_meta follows the header: magic
 * u32, version u32, address u64, mapsize u64, two MDB_db (free, main),
 * last_pg u64, txnid u64. An MDB_db is 48 bytes: pad u32 (the page size,
 * in the free DB's), flags u16, depth u16, branch/leaf/overflow pages,
 * entries, root (u64 each). The named databases are the main DB's records:
 * name -> MDB_db. */
#define PAGEHDR 16
#define DBSIZE 48

static uint64_t rd64(const unsigned char *p)
{
    uint64_t v;

    memcpy(&v, p, 8);
    return v;
}

static uint16_t rd16(const unsigned char *p)
{
    uint16_t v;

    memcpy(&v, p, 2);
    return v;
}

typedef struct mdb_file {
    unsigned char *data;
    size_t len, psize, last_pg;
    const unsigned char *main_db; /* the newest meta's main MDB_db */
} mdb_file;

static void mdb_file_read(const char *sdir, mdb_file *f)
{
    char *path = tu_path(sdir, "data.mdb");
    const unsigned char *m[2];
    size_t newest;

    f->data = (unsigned char *)tu_read_file(path, &f->len);
    ck_assert_ptr_nonnull(f->data);
    /* the first meta page tells the page size (its free DB's pad) */
    f->psize = (size_t)(uint32_t)rd16(f->data + PAGEHDR + 24) |
               (size_t)rd16(f->data + PAGEHDR + 26) << 16;
    ck_assert(f->psize >= 512 && f->psize <= 65536);
    m[0] = f->data + PAGEHDR;
    m[1] = f->data + f->psize + PAGEHDR;
    newest = rd64(m[1] + 24 + 2 * DBSIZE + 8) >
             rd64(m[0] + 24 + 2 * DBSIZE + 8);
    f->last_pg = (size_t)rd64(m[newest] + 24 + 2 * DBSIZE);
    f->main_db = m[newest] + 24 + DBSIZE;
    free(path);
}

/* The MDB_db of database name: looked up in the main DB's root page (a
 * run store's seven names fit one leaf). */
static const unsigned char *named_db(const mdb_file *f, const char *name)
{
    uint64_t root = rd64(f->main_db + 40);
    const unsigned char *pg = f->data + root * f->psize;
    size_t n = (rd16(pg + 12) - PAGEHDR) / 2;

    ck_assert_uint_eq(rd16(f->main_db + 6), 1); /* depth 1: one leaf */
    ck_assert(rd16(pg + 10) & 0x02);            /* P_LEAF */
    for (size_t i = 0; i < n; i++) {
        const unsigned char *node = pg + rd16(pg + PAGEHDR + 2 * i);
        size_t ksize = rd16(node + 6);

        if (ksize == strlen(name) && memcmp(node + 8, name, ksize) == 0)
            return node + 8 + ksize;
    }
    return NULL;
}

/* Every record of one database, walked from its root page. A page's
 * header holds its flags at offset 10 (P_BRANCH 0x01, P_LEAF 0x02) and
 * its lower bound at 12: (lower - 16) / 2 node offsets (u16) follow the
 * header. A node is lo u16, hi u16, flags u16, ksize u16, then the key: in
 * a branch lo | hi << 16 | flags << 32 is the child page; in a leaf lo |
 * hi << 16 is the value's size and the value follows the key, unless
 * flags has F_BIGDATA (0x01): then a u64 page number follows, and the
 * value sits after the 16-byte header of that first overflow page. */
#define P_BRANCH 0x01
#define P_LEAF 0x02
#define F_BIGDATA 0x01

typedef struct raw_rec {
    const unsigned char *k, *v; /* into the file's bytes */
    size_t klen, vlen;
    int big; /* in overflow pages of its own */
} raw_rec;

typedef struct raw_db {
    raw_rec *r;
    size_t n, cap;
} raw_db;

static void walk_page(const mdb_file *f, uint64_t pgno, raw_db *out)
{
    const unsigned char *pg;
    uint16_t flags;
    size_t n;

    ck_assert_uint_lt(pgno, f->last_pg + 1);
    pg = f->data + pgno * f->psize;
    flags = rd16(pg + 10);
    n = (rd16(pg + 12) - PAGEHDR) / 2;
    ck_assert(flags & (P_BRANCH | P_LEAF));
    for (size_t i = 0; i < n; i++) {
        const unsigned char *node = pg + rd16(pg + PAGEHDR + 2 * i);
        uint64_t lo = rd16(node), hi = rd16(node + 2), nf = rd16(node + 4);
        size_t ks = rd16(node + 6);
        raw_rec r;

        if (flags & P_BRANCH) {
            walk_page(f, lo | hi << 16 | nf << 32, out);
            continue;
        }
        r.k = node + 8;
        r.klen = ks;
        r.vlen = (size_t)(lo | hi << 16);
        r.big = (nf & F_BIGDATA) != 0;
        r.v = r.k + ks;
        if (r.big) {
            uint64_t ov = rd64(r.v);

            ck_assert_uint_le((ov + 1) * f->psize, f->len);
            r.v = f->data + ov * f->psize + PAGEHDR;
        }
        if (out->n == out->cap) {
            out->cap = out->cap ? 2 * out->cap : 256;
            out->r = realloc(out->r, out->cap * sizeof *out->r);
            ck_assert_ptr_nonnull(out->r);
        }
        out->r[out->n++] = r;
    }
}

static void walk_db(const mdb_file *f, const char *name, raw_db *out)
{
    const unsigned char *md = named_db(f, name);

    memset(out, 0, sizeof *out);
    ck_assert_msg(md != NULL, "no database %s in data.mdb", name);
    if (rd64(md + 32) == 0)
        return; /* no entries: no root page */
    walk_page(f, rd64(md + 40), out);
    ck_assert_uint_eq(out->n, rd64(md + 32));
}

/* The bytes a record of db stands for, as docs/store.md "Compression"
 * spells the format: in questions, state, ledger and results a value
 * that begins with 0xFE is a 6-byte header (0xFE, method, the original
 * length u32 big-endian) and then, for method 1, one zstd frame, for
 * method 0 the bytes as they are. malloc'd into *out; returns the method,
 * -1 for a value stored as it is. */
static int raw_decode(enum store_db db, const raw_rec *r, unsigned char **out,
                      size_t *len)
{
    int packed_db = db == STORE_QUESTIONS || db == STORE_STATE ||
                    db == STORE_LEDGER || db == STORE_RESULTS;
    size_t n, got;

    if (!packed_db || r->vlen == 0 || r->v[0] != 0xFE) {
        *out = malloc(r->vlen + 1);
        ck_assert_ptr_nonnull(*out);
        memcpy(*out, r->v, r->vlen);
        *len = r->vlen;
        return -1;
    }
    ck_assert_uint_ge(r->vlen, 6);
    n = (size_t)r->v[2] << 24 | (size_t)r->v[3] << 16 | (size_t)r->v[4] << 8 |
        r->v[5];
    *out = malloc(n + 1);
    ck_assert_ptr_nonnull(*out);
    *len = n;
    if (r->v[1] == 0) {
        ck_assert_uint_eq(n, r->vlen - 6);
        memcpy(*out, r->v + 6, n);
        return 0;
    }
    ck_assert_uint_eq(r->v[1], 1);
    got = ZSTD_decompress(*out, n, r->v + 6, r->vlen - 6);
    ck_assert_msg(!ZSTD_isError(got) && got == n, "a value of %s: %s",
                  store_db_name(db),
                  ZSTD_isError(got) ? ZSTD_getErrorName(got) : "short");
    /* stored compressed only when that is shorter, and only from the
     * threshold up */
    ck_assert_uint_lt(r->vlen, n);
    ck_assert_uint_ge(n, STORE_COMPRESS_MIN);
    return 1;
}

/* A database's records by hand: keys as in the file, values decoded. */
typedef struct hand_db {
    raw_db raw;
    unsigned char **val;
    size_t *vlen;
    size_t packed;       /* records stored compressed */
    size_t packed_bytes; /* their stored bytes */
    size_t orig_bytes;   /* their bytes decompressed */
} hand_db;

static void hand_read(const mdb_file *f, enum store_db db, hand_db *h)
{
    memset(h, 0, sizeof *h);
    walk_db(f, store_db_name(db), &h->raw);
    h->val = calloc(h->raw.n + 1, sizeof *h->val);
    h->vlen = calloc(h->raw.n + 1, sizeof *h->vlen);
    ck_assert(h->val && h->vlen);
    for (size_t i = 0; i < h->raw.n; i++) {
        if (raw_decode(db, &h->raw.r[i], &h->val[i], &h->vlen[i]) == 1) {
            h->packed++;
            h->packed_bytes += h->raw.r[i].vlen;
            h->orig_bytes += h->vlen[i];
        }
    }
}

static void hand_release(hand_db *h)
{
    for (size_t i = 0; i < h->raw.n; i++)
        free(h->val[i]);
    free(h->val);
    free(h->vlen);
    free(h->raw.r);
}

/* What store_scan hands out equals the hand-decoded records, in order. */
typedef struct same_scan {
    const hand_db *h;
    size_t i;
} same_scan;

static int same_fn(const void *k, size_t klen, const void *v, size_t vlen,
                   void *arg)
{
    same_scan *c = arg;
    const hand_db *h = c->h;

    ck_assert_uint_lt(c->i, h->raw.n);
    ck_assert_uint_eq(klen, h->raw.r[c->i].klen);
    ck_assert(memcmp(k, h->raw.r[c->i].k, klen) == 0);
    ck_assert_uint_eq(vlen, h->vlen[c->i]);
    ck_assert(vlen == 0 || memcmp(v, h->val[c->i], vlen) == 0);
    c->i++;
    return 0;
}

static int same_txn(store_txn *t, void *arg, nsed_err *err)
{
    hand_db *h = arg;

    (void)err;
    for (int db = 0; db < STORE_DB_COUNT; db++) {
        same_scan c = {&h[db], 0};

        ck_assert_int_eq(store_scan(t, (enum store_db)db, NULL, 0, NULL, 0,
                                    same_fn, &c),
                         0);
        ck_assert_uint_eq(c.i, h[db].raw.n);
    }
    return 0;
}

/* Every database of sdir by hand (h[STORE_DB_COUNT]), checked against
 * what store_scan gives. */
static void hand_read_all(const mdb_file *f, const char *sdir, hand_db *h)
{
    store *s = NULL;
    store_opts o = {.flags = STORE_RDONLY};
    nsed_err e = {0};

    for (int db = 0; db < STORE_DB_COUNT; db++)
        hand_read(f, (enum store_db)db, &h[db]);
    ck_assert_msg(store_open(sdir, &o, &s, &e) == 0, "%s", e.msg);
    ck_assert_int_eq(store_read(s, same_txn, h, &e), 0);
    store_close(s);
}

/* The status figures are LMDB's page counts: the same as data.mdb's own
 * records of them, read from the file by hand; the records walked in the
 * file (and decoded by hand) are what store_scan gives; their stored
 * bytes fit in the leaf pages, the overflow pages are exactly those of
 * the values stored in pages of their own (LMDB's OVPAGES: (16 + size)
 * rounded up to pages); the per-question figure is the sum over the
 * questions. */
START_TEST(status_bytes_match_the_file)
{
    tu_sim sim;
    char *sdir = tu_path(tu_tmp, "store");
    cJSON *st;
    const cJSON *sb, *dbs;
    mdb_file f;
    hand_db h[STORE_DB_COUNT];
    double sum = 0;

    tu_sim_start(&sim, DEMO_SIM, NULL, NULL);
    demo_run(&sim, sdir);
    tu_sim_stop(&sim);
    st = tu_nsed_status(sdir);
    sb = cJSON_GetObjectItem(st, "store_bytes");
    dbs = cJSON_GetObjectItem(sb, "databases");
    ck_assert_ptr_nonnull(dbs);
    mdb_file_read(sdir, &f);
    hand_read_all(&f, sdir, h);
    ck_assert_double_eq(tu_jnum(sb, "page_size", NULL), (double)f.psize);
    ck_assert_double_eq(tu_jnum(sb, "used", NULL),
                        (double)((f.last_pg + 1) * f.psize));
    ck_assert(tu_jnum(sb, "used", NULL) <= (double)f.len);
    for (int db = 0; db < STORE_DB_COUNT; db++) {
        const char *name = store_db_name((enum store_db)db);
        const cJSON *d = cJSON_GetObjectItem(dbs, name);
        const unsigned char *md = named_db(&f, name);
        double pages;
        size_t in_leaves = 0, ovpages = 0;

        ck_assert_msg(md != NULL, "no database %s in data.mdb", name);
        ck_assert_ptr_nonnull(d);
        pages = (double)(rd64(md + 8) + rd64(md + 16) + rd64(md + 24));
        ck_assert_double_eq(tu_jnum(d, "pages", NULL), pages);
        ck_assert_double_eq(tu_jnum(d, "bytes", NULL), pages * (double)f.psize);
        ck_assert_double_eq(tu_jnum(d, "entries", NULL), (double)rd64(md + 32));
        ck_assert_double_eq(tu_jnum(d, "entries", NULL), (double)h[db].raw.n);
        for (size_t i = 0; i < h[db].raw.n; i++) {
            const raw_rec *r = &h[db].raw.r[i];

            in_leaves += r->klen + (r->big ? 8 : r->vlen);
            if (r->big)
                ovpages += (PAGEHDR + r->vlen + f.psize - 1) / f.psize;
        }
        ck_assert_uint_eq(rd64(md + 24), ovpages);
        /* a leaf page holds at most psize bytes of records */
        ck_assert((double)(rd64(md + 8) + rd64(md + 16)) * (double)f.psize >=
                  (double)in_leaves);
        sum += pages * (double)f.psize;
    }
    ck_assert_double_eq(tu_jnum(sb, "data", NULL), sum);
    ck_assert_double_eq(tu_jnum(sb, "per_question", NULL), sum / 120.0);
    /* the text line says the same */
    {
        char *out = NULL, *err = NULL, want[96];

        ck_assert_int_eq(NSED(NULL, &out, &err, "status", "--store", sdir), 0);
        snprintf(want, sizeof want,
                 "store use:  %.0f bytes in databases (%.0f "
                 "per question)",
                 sum, sum / 120.0);
        ck_assert_msg(tu_contains(out, want), "%s lacks %s", out, want);
        free(out);
        free(err);
    }
    for (int db = 0; db < STORE_DB_COUNT; db++)
        hand_release(&h[db]);
    free(f.data);
    cJSON_Delete(st);
    free(sdir);
}
END_TEST

/* ---- what a demo question stores ------------------------------------------ */

typedef struct texts {
    char *t[4096];
    size_t n;
    size_t in_state; /* bytes of STORE_STATE values holding a text */
    size_t big_states;
} texts;

static int rounds_fn(const void *k, size_t klen, const void *v, size_t vlen,
                     void *arg)
{
    texts *x = arg;
    size_t ql;
    enum store_keys_qrec rec;
    uint32_t round;
    cJSON *j;
    const cJSON *p;

    if (store_keys_question_parse(k, klen, &ql, &rec, &round))
        return 0;
    if (rec == STORE_KEYS_STATE) {
        j = cJSON_ParseWithLength(v, vlen);
        ck_assert_ptr_nonnull(j);
        /* a finished question's state names its rounds and keeps no
         * carry: it fits a leaf page, no overflow page of its own */
        if (strcmp(cJSON_GetObjectItem(j, "stage")->valuestring, "finished") ==
            0) {
            const cJSON *r;

            cJSON_ArrayForEach(r, cJSON_GetObjectItem(j, "rounds"))
                ck_assert(cJSON_IsTrue(cJSON_GetObjectItem(r, "archived")));
            ck_assert(cJSON_IsNull(cJSON_GetObjectItem(
                cJSON_GetObjectItem(j, "carry"), "winner")));
            x->big_states += vlen > 2000;
        }
        cJSON_Delete(j);
        return 0;
    }
    if (rec != STORE_KEYS_ROUND)
        return 0;
    j = cJSON_ParseWithLength(v, vlen);
    ck_assert_ptr_nonnull(j);
    cJSON_ArrayForEach(p, cJSON_GetObjectItem(j, "proposals")) {
        const cJSON *t = cJSON_GetObjectItem(p, "text");

        if (cJSON_IsString(t) && strlen(t->valuestring) >= 40) {
            ck_assert_uint_lt(x->n, 4096);
            x->t[x->n++] = strdup(t->valuestring);
        }
    }
    cJSON_Delete(j);
    return 0;
}

/* How many times needle occurs in the n bytes at hay (JSON-escaped texts
 * are compared escaped: the demo's texts hold no character JSON escapes
 * but "\\" and the newline, checked by escaping them the same way). */
static size_t occurrences(const char *hay, size_t n, const char *needle)
{
    size_t k = 0, nl = strlen(needle);

    for (const char *p = hay; p + nl <= hay + n; p++) {
        p = memmem(p, (size_t)(hay + n - p), needle, nl);
        if (!p)
            break;
        k++;
    }
    return k;
}

typedef struct dup_scan {
    texts *x;
    char **escaped;
    size_t *count;
} dup_scan;

static int dup_fn(const void *k, size_t klen, const void *v, size_t vlen,
                  void *arg)
{
    dup_scan *d = arg;

    (void)k;
    (void)klen;
    for (size_t i = 0; i < d->x->n; i++)
        d->count[i] += occurrences(v, vlen, d->escaped[i]);
    return 0;
}

/* The texts of the state's rounds, each counted over every state value
 * (the hand-decoded ones of h). */
static void texts_check(const hand_db *h, texts *x)
{
    dup_scan d = {x, NULL, NULL};

    for (size_t i = 0; i < h->raw.n; i++)
        rounds_fn(h->raw.r[i].k, h->raw.r[i].klen, h->val[i], h->vlen[i], x);
    d.escaped = calloc(x->n + 1, sizeof *d.escaped);
    d.count = calloc(x->n + 1, sizeof *d.count);
    ck_assert(d.escaped && d.count);
    for (size_t i = 0; i < x->n; i++) {
        cJSON *s = cJSON_CreateString(x->t[i]);
        char *e = cJSON_PrintUnformatted(s);

        /* without the quotes: the text as it sits inside a record */
        e[strlen(e) - 1] = '\0';
        d.escaped[i] = strdup(e + 1);
        free(e);
        cJSON_Delete(s);
    }
    for (size_t i = 0; i < h->raw.n; i++)
        dup_fn(h->raw.r[i].k, h->raw.r[i].klen, h->val[i], h->vlen[i], &d);
    for (size_t i = 0; i < x->n; i++) {
        size_t same = 0;

        /* once in the round that proposed it (the simulator's templates
         * may give two proposals the same text: once for each) */
        for (size_t j = 0; j < x->n; j++)
            same += strcmp(x->t[i], x->t[j]) == 0;
        ck_assert_msg(d.count[i] == same,
                      "text stored %zu times in state, proposed %zu times: %s",
                      d.count[i], same, x->t[i]);
        free(d.escaped[i]);
    }
    free(d.escaped);
    free(d.count);
}

/* The bytes of each database (pages x page size, from mdb_stat) of the
 * same records stored uncompressed, as the build before wrote them: put
 * with LMDB directly into a new environment in dir, in key order. */
static void baseline_bytes(const char *dir, const hand_db *h,
                           double out[STORE_DB_COUNT])
{
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;

    ck_assert_int_eq(mkdir(dir, 0777), 0);
    ck_assert_int_eq(mdb_env_create(&env), 0);
    ck_assert_int_eq(mdb_env_set_maxdbs(env, STORE_DB_COUNT), 0);
    ck_assert_int_eq(mdb_env_set_mapsize(env, (size_t)1 << 30), 0);
    ck_assert_int_eq(mdb_env_open(env, dir, MDB_NOSYNC, 0644), 0);
    ck_assert_int_eq(mdb_txn_begin(env, NULL, 0, &txn), 0);
    for (int db = 0; db < STORE_DB_COUNT; db++) {
        MDB_dbi dbi;
        MDB_stat st;

        ck_assert_int_eq(mdb_dbi_open(txn, store_db_name((enum store_db)db),
                                      MDB_CREATE, &dbi),
                         0);
        for (size_t i = 0; i < h[db].raw.n; i++) {
            MDB_val k = {h[db].raw.r[i].klen, (void *)h[db].raw.r[i].k};
            MDB_val v = {h[db].vlen[i], h[db].val[i]};

            ck_assert_int_eq(mdb_put(txn, dbi, &k, &v, 0), 0);
        }
        ck_assert_int_eq(mdb_stat(txn, dbi, &st), 0);
        out[db] = (double)(st.ms_branch_pages + st.ms_leaf_pages +
                           st.ms_overflow_pages) *
                  (double)st.ms_psize;
    }
    ck_assert_int_eq(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
}

/* A finished demo store keeps each proposal text once in STORE_STATE (not
 * in the state, nor twice in its round as proposal and candidate: counted
 * in the records as data.mdb holds them, decompressed by hand), and its
 * bytes per question are what compression leaves of the same records
 * stored uncompressed (put with LMDB directly): per question the demo
 * archives 1.98 rounds of about 3.7 KB, a broker decision of about 2.2 KB
 * and a result of 1.8 KB (each stored in 0.9-1.4 KB compressed, in leaf
 * pages, where uncompressed the rounds and the decision took a 4 KiB
 * overflow page each), 12 ledger replies of 0.5 KB and a finished state
 * under 1 KB (both kept as they are: under the threshold, or rewritten
 * at every stage). Uncompressed, put in key order, that measured 24.5 KB
 * a question (the run itself, before compression: 27.2 KB); compressed
 * 15.0-15.5 KB, 0.61-0.63 of it (bound 0.7), the state database 0.37 of
 * its uncompressed bytes and the results 0.28 (bound 0.45 each). */
START_TEST(demo_stores_each_text_once)
{
    tu_sim sim;
    char *sdir = tu_path(tu_tmp, "store"), *bdir = tu_path(tu_tmp, "base");
    cJSON *st;
    const cJSON *dbs;
    texts *x = calloc(1, sizeof *x);
    mdb_file f;
    hand_db h[STORE_DB_COUNT];
    double base[STORE_DB_COUNT], base_sum = 0, per_q;

    tu_sim_start(&sim, DEMO_SIM, NULL, NULL);
    demo_run(&sim, sdir);
    tu_sim_stop(&sim);
    mdb_file_read(sdir, &f);
    hand_read_all(&f, sdir, h);
    texts_check(&h[STORE_STATE], x);
    ck_assert_uint_ge(x->n, 360); /* three proposals per question, or more */
    ck_assert_uint_eq(x->big_states, 0);
    /* the rounds and broker decisions, the results: compressed */
    ck_assert_uint_ge(h[STORE_STATE].packed, 2 * 120);
    ck_assert_uint_eq(h[STORE_RESULTS].packed, 120);
    ck_assert(h[STORE_STATE].packed_bytes * 2 < h[STORE_STATE].orig_bytes);
    baseline_bytes(bdir, h, base);
    for (int db = 0; db < STORE_DB_COUNT; db++)
        base_sum += base[db];
    st = tu_nsed_status(sdir);
    per_q = tu_jnum(cJSON_GetObjectItem(st, "store_bytes"), "per_question",
                    NULL);
    dbs = cJSON_GetObjectItem(cJSON_GetObjectItem(st, "store_bytes"),
                              "databases");
    /* the baseline is what the build before stored, less the B-tree
     * slack of the run's insertion order (key order packs the leaves
     * tighter: 24.5 KB against 27.2) */
    ck_assert_msg(base_sum / 120.0 > 22000 && base_sum / 120.0 < 29000,
                  "uncompressed %.0f bytes per question", base_sum / 120.0);
    ck_assert_msg(per_q <= 0.7 * base_sum / 120.0,
                  "%.0f bytes per question, uncompressed %.0f", per_q,
                  base_sum / 120.0);
    for (int i = 0; i < 2; i++) {
        enum store_db db = i ? STORE_RESULTS : STORE_STATE;
        const char *name = store_db_name(db);
        double now = tu_jnum(cJSON_GetObjectItem(dbs, name), "bytes", NULL);

        ck_assert_msg(now <= 0.45 * base[db],
                      "%s: %.0f bytes, uncompressed %.0f", name, now, base[db]);
    }
    cJSON_Delete(st);
    for (int db = 0; db < STORE_DB_COUNT; db++)
        hand_release(&h[db]);
    free(f.data);
    for (size_t i = 0; i < x->n; i++)
        free(x->t[i]);
    free(x);
    free(bdir);
    free(sdir);
}
END_TEST

/* ---- kill -9 and resume ----------------------------------------------------- */

/* Kill demo runs at random moments; every store, resumed to the end,
 * exports what the uninterrupted run exported. The checkpoints in between
 * name their archived rounds, so each resume rebuilds its states from
 * them. */
START_TEST(kill_and_resume_rebuilds_the_states)
{
    const int kills_wanted = 10;
    tu_sim sim;
    char *ref = tu_path(tu_tmp, "ref"), *ref_export;
    int kills = 0, stores = 0;
    unsigned rng = 4242;

    tu_sim_start(&sim, SLOW_SIM, NULL, NULL);
    demo_run(&sim, ref);
    ref_export = tu_nsed_export(ref);
    while (kills < kills_wanted) {
        char name[32], *sdir, *exp;

        snprintf(name, sizeof name, "s%d", stores++);
        sdir = tu_path(tu_tmp, name);
        for (;;) {
            rng = rng * 1103515245u + 12345u;
            if (!tu_nsed_run_or_kill(sim.url, DEMO_WF, DEMO_Q, sdir,
                                     kills < kills_wanted
                                         ? (double)(20 + (rng >> 16) % 250)
                                         : -1.0))
                break;
            kills++;
        }
        exp = tu_nsed_export(sdir);
        ck_assert_msg(strcmp(exp, ref_export) == 0,
                      "store %s exported other results", name);
        free(exp);
        free(sdir);
    }
    free(ref_export);
    free(ref);
    tu_sim_stop(&sim);
}
END_TEST

/* ---- the format before -------------------------------------------------------- */

typedef struct old_form {
    char *keys[1024];
    size_t klen[1024];
    size_t n;
} old_form;

static int collect_fn(const void *k, size_t klen, const void *v, size_t vlen,
                      void *arg)
{
    old_form *o = arg;
    size_t ql;
    enum store_keys_qrec rec;
    uint32_t round;

    (void)v;
    (void)vlen;
    if (store_keys_question_parse(k, klen, &ql, &rec, &round) ||
        (rec != STORE_KEYS_STATE && rec != STORE_KEYS_ROUND))
        return 0;
    ck_assert_uint_lt(o->n, 1024);
    o->keys[o->n] = malloc(klen);
    memcpy(o->keys[o->n], k, klen);
    o->klen[o->n++] = klen;
    return 0;
}

typedef struct fetch_arg {
    store_txn *t;
    const char *qid;
} fetch_arg;

static int fetch_fn(void *arg, int index, const void **json, size_t *len,
                    nsed_err *err)
{
    fetch_arg *f = arg;
    store_key key;

    (void)err;
    ck_assert_int_eq(store_keys_question(f->qid, STORE_KEYS_ROUND,
                                         (uint32_t)index, &key),
                     0);
    return store_get(f->t, STORE_STATE, key.bytes, key.len, json, len);
}

static void round_old_form(state_round *r)
{
    if (r)
        r->cand_text_full = true;
}

/* Rewrite every state and round in the form the build before wrote: the
 * state holds its rounds in full, a candidate spells out its text. */
static int rewrite_fn(store_txn *t, void *arg, nsed_err *err)
{
    old_form *o = arg;

    for (size_t i = 0; i < o->n; i++) {
        size_t ql;
        enum store_keys_qrec rec;
        uint32_t round;
        const void *v;
        size_t vlen;
        char qid[STORE_KEY_MAX + 1], *json = NULL;

        ck_assert_int_eq(store_keys_question_parse(o->keys[i], o->klen[i], &ql,
                                                   &rec, &round),
                         0);
        memcpy(qid, o->keys[i], ql);
        qid[ql] = '\0';
        ck_assert_int_eq(store_get(t, STORE_STATE, o->keys[i], o->klen[i], &v,
                                   &vlen),
                         0);
        if (rec == STORE_KEYS_STATE) {
            fetch_arg f = {t, qid};
            state *st = NULL;

            ck_assert_msg(state_from_json_archived(v, vlen, NULL, fetch_fn, &f,
                                                   &st, err) == 0,
                          "%s", err->msg);
            round_old_form(st->prev);
            round_old_form(st->cur);
            ck_assert_int_eq(state_to_json(st, &json), 0);
            state_free(st);
        } else {
            state_round *r = NULL;
            size_t nseats = 3; /* the demo's team */

            ck_assert_int_eq(state_round_from_json(v, vlen, nseats, &r, err),
                             0);
            round_old_form(r);
            ck_assert_int_eq(state_round_to_json(r, nseats, &json), 0);
            state_round_free(r, nseats);
        }
        ck_assert_ptr_null(strstr(json, "\"archived\""));
        ck_assert_ptr_null(strstr(json, "\"same_text\""));
        ck_assert_int_eq(store_put(t, STORE_STATE, o->keys[i], o->klen[i], json,
                                   strlen(json)),
                         0);
        free(json);
    }
    return 0;
}

static int collect_txn(store_txn *t, void *arg, nsed_err *err)
{
    (void)err;
    return store_scan(t, STORE_STATE, NULL, 0, NULL, 0, collect_fn, arg);
}

/* A run killed part-way, its records rewritten in the format before: the
 * export of its finished questions is the same, and resuming it ends
 * with the export of an uninterrupted run. */
START_TEST(store_of_the_format_before_reads)
{
    tu_sim sim;
    char *ref = tu_path(tu_tmp, "ref"), *sdir = tu_path(tu_tmp, "old");
    char *ref_export, *before = NULL, *after, *out = NULL, *err = NULL;
    old_form *o = calloc(1, sizeof *o);
    store *s = NULL;
    nsed_err e = {0};
    int status;
    pid_t pid;

    tu_sim_start(&sim, SLOW_SIM, NULL, NULL);
    demo_run(&sim, ref);
    ref_export = tu_nsed_export(ref);
    char *traces = NULL;

    pid = tu_nsed_spawn_run(sim.url, DEMO_WF, DEMO_Q, sdir);
    tu_sleep_ms(150);
    kill(pid, SIGKILL);
    while (waitpid(pid, &status, 0) < 0)
        ck_assert(errno == EINTR);
    ck_assert_int_eq(NSED(NULL, &traces, &err, "export", "--store", sdir,
                          "--format", "traces"),
                     0);
    free(err);
    err = NULL;
    ck_assert_msg(store_open(sdir, NULL, &s, &e) == 0, "%s", e.msg);
    ck_assert_int_eq(store_read(s, collect_txn, o, &e), 0);
    ck_assert_uint_ge(o->n, 1);
    ck_assert_msg(store_write(s, rewrite_fn, o, &e) == 0, "%s", e.msg);
    store_close(s);
    /* the finished questions export as they did */
    ck_assert_int_eq(NSED(NULL, &before, &err, "export", "--store", sdir,
                          "--format", "traces"),
                     0);
    ck_assert_str_eq(before, traces);
    free(traces);
    free(err);
    err = NULL;
    ck_assert_int_eq(NSED(sim.url, &out, &err, "run", DEMO_WF, "--store", sdir,
                          "--quiet"),
                     0);
    after = tu_nsed_export(sdir);
    ck_assert_str_eq(after, ref_export);
    for (size_t i = 0; i < o->n; i++)
        free(o->keys[i]);
    free(o);
    free(before);
    free(after);
    free(out);
    free(err);
    free(ref_export);
    free(ref);
    free(sdir);
    tu_sim_stop(&sim);
}
END_TEST

/* ---- a damaged compressed record -------------------------------------- */

/* Flip one bit in the middle of the stored (compressed) value of key in
 * database name, with LMDB directly: the damage a disk could do. */
static void damage_value(const char *sdir, const char *name, const void *key,
                         size_t klen)
{
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    MDB_dbi dbi;
    MDB_val k = {klen, (void *)key}, v;
    unsigned char *b;

    ck_assert_int_eq(mdb_env_create(&env), 0);
    ck_assert_int_eq(mdb_env_set_maxdbs(env, STORE_DB_COUNT), 0);
    ck_assert_int_eq(mdb_env_open(env, sdir, 0, 0644), 0);
    ck_assert_int_eq(mdb_txn_begin(env, NULL, 0, &txn), 0);
    ck_assert_int_eq(mdb_dbi_open(txn, name, 0, &dbi), 0);
    ck_assert_int_eq(mdb_get(txn, dbi, &k, &v), 0);
    b = malloc(v.mv_size);
    memcpy(b, v.mv_data, v.mv_size);
    ck_assert_uint_eq(b[0], 0xFE); /* compressed */
    b[v.mv_size / 2] ^= 0x20;
    v.mv_data = b;
    ck_assert_int_eq(mdb_put(txn, dbi, &k, &v, 0), 0);
    ck_assert_int_eq(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
    free(b);
}

/* A finished demo store whose result of demo-002 (compressed) is damaged
 * on disk: export and status stop with exit 1 and the message that names
 * the record; the same for the broker decision of demo-003, which status
 * reads. */
START_TEST(damaged_compressed_records_stop_the_readers)
{
    tu_sim sim;
    char *sdir = tu_path(tu_tmp, "store"), *out = NULL, *err = NULL, want[512];
    static const char bkey[] = "demo-003\0b";

    tu_sim_start(&sim, DEMO_SIM, NULL, NULL);
    demo_run(&sim, sdir);
    tu_sim_stop(&sim);
    damage_value(sdir, "results", "demo-002", 8);
    snprintf(want, sizeof want,
             "store %s: the result of demo-002 in database results is "
             "corrupt (its compressed bytes do not decompress: ",
             sdir);
    ck_assert_int_eq(NSED(NULL, &out, &err, "export", "--store", sdir), 1);
    ck_assert_msg(tu_contains(err, want), "%s", err);
    ck_assert_msg(tu_contains(err, "restore the store from a copy"), "%s", err);
    /* the records before it were printed: demo-001's */
    ck_assert(tu_contains(out, "\"id\":\"demo-001\""));
    ck_assert(!tu_contains(out, "\"id\":\"demo-002\""));
    free(out);
    free(err);
    ck_assert_int_eq(NSED(NULL, &out, &err, "status", "--store", sdir), 1);
    ck_assert_msg(tu_contains(err, want), "%s", err);
    free(out);
    free(err);
    damage_value(sdir, "state", bkey, sizeof bkey - 1);
    damage_value(sdir, "results", "demo-002", 8); /* mended: flipped back */
    snprintf(want, sizeof want,
             "store %s: the broker decision of question demo-003 in database "
             "state is corrupt (its compressed bytes do not decompress: ",
             sdir);
    ck_assert_int_eq(NSED(NULL, &out, &err, "status", "--store", sdir), 1);
    ck_assert_msg(tu_contains(err, want), "%s", err);
    free(out);
    free(err);
    free(sdir);
}
END_TEST

Suite *tu_suite(void)
{
    Suite *s = suite_create("bytes");
    TCase *tc = tcase_create("bytes");

    tcase_add_checked_fixture(tc, tu_tmp_setup, tu_tmp_teardown);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, status_bytes_match_the_file);
    tcase_add_test(tc, damaged_compressed_records_stop_the_readers);
    tcase_add_test(tc, demo_stores_each_text_once);
    tcase_add_test(tc, kill_and_resume_rebuilds_the_states);
    tcase_add_test(tc, store_of_the_format_before_reads);
    suite_add_tcase(s, tc);
    return s;
}
