/* Store bytes per question: the figures of `nsed status` (store_bytes)
 * against data.mdb read directly, what a demo run stores per question,
 * exact resume after kill -9 with checkpoints that name their archived
 * rounds, and a store whose records are in the format before (every
 * round copied into the state, candidates spelling out their text) read
 * back by this build. */
#include "testutil.h"

#include "stages/state.h"
#include "store/store.h"
#include "store/store_keys.h"

#include <check.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

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

typedef struct kv_sum {
    size_t entries, bytes;
} kv_sum;

static int sum_fn(const void *k, size_t klen, const void *v, size_t vlen,
                  void *arg)
{
    kv_sum *s = arg;

    (void)k;
    (void)v;
    s->entries++;
    s->bytes += klen + vlen;
    return 0;
}

typedef struct scan_all {
    kv_sum db[STORE_DB_COUNT];
} scan_all;

static int scan_fn(store_txn *t, void *arg, nsed_err *err)
{
    scan_all *a = arg;

    (void)err;
    for (int db = 0; db < STORE_DB_COUNT; db++)
        ck_assert_int_eq(store_scan(t, (enum store_db)db, NULL, 0, NULL, 0,
                                    sum_fn, &a->db[db]),
                         0);
    return 0;
}

static void scan_store(const char *sdir, scan_all *a)
{
    store *s = NULL;
    store_opts o = {.flags = STORE_RDONLY};
    nsed_err e = {0};

    memset(a, 0, sizeof *a);
    ck_assert_msg(store_open(sdir, &o, &s, &e) == 0, "%s", e.msg);
    ck_assert_int_eq(store_read(s, scan_fn, a, &e), 0);
    store_close(s);
}

/* The status figures are LMDB's page counts: the same as data.mdb's own
 * records of them, read from the file by hand; every record's key and
 * value fit in them; the per-question figure is the sum over the
 * questions. */
START_TEST(status_bytes_match_the_file)
{
    tu_sim sim;
    char *sdir = tu_path(tu_tmp, "store");
    cJSON *st;
    const cJSON *sb, *dbs;
    mdb_file f;
    scan_all a;
    double sum = 0;

    tu_sim_start(&sim, DEMO_SIM, NULL, NULL);
    demo_run(&sim, sdir);
    tu_sim_stop(&sim);
    st = tu_nsed_status(sdir);
    sb = cJSON_GetObjectItem(st, "store_bytes");
    dbs = cJSON_GetObjectItem(sb, "databases");
    ck_assert_ptr_nonnull(dbs);
    mdb_file_read(sdir, &f);
    scan_store(sdir, &a);
    ck_assert_double_eq(tu_jnum(sb, "page_size", NULL), (double)f.psize);
    ck_assert_double_eq(tu_jnum(sb, "used", NULL),
                        (double)((f.last_pg + 1) * f.psize));
    ck_assert(tu_jnum(sb, "used", NULL) <= (double)f.len);
    for (int db = 0; db < STORE_DB_COUNT; db++) {
        const char *name = store_db_name((enum store_db)db);
        const cJSON *d = cJSON_GetObjectItem(dbs, name);
        const unsigned char *md = named_db(&f, name);
        double pages;

        ck_assert_msg(md != NULL, "no database %s in data.mdb", name);
        ck_assert_ptr_nonnull(d);
        pages = (double)(rd64(md + 8) + rd64(md + 16) + rd64(md + 24));
        ck_assert_double_eq(tu_jnum(d, "pages", NULL), pages);
        ck_assert_double_eq(tu_jnum(d, "bytes", NULL), pages * (double)f.psize);
        ck_assert_double_eq(tu_jnum(d, "entries", NULL), (double)rd64(md + 32));
        ck_assert_double_eq(tu_jnum(d, "entries", NULL),
                            (double)a.db[db].entries);
        /* a page holds at most psize bytes of records */
        ck_assert(tu_jnum(d, "bytes", NULL) >= (double)a.db[db].bytes);
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

static int texts_fn(store_txn *t, void *arg, nsed_err *err)
{
    texts *x = arg;
    dup_scan d = {x, NULL, NULL};
    int rc;

    (void)err;
    ck_assert_int_eq(store_scan(t, STORE_STATE, NULL, 0, NULL, 0, rounds_fn, x),
                     0);
    d.escaped = calloc(x->n, sizeof *d.escaped);
    d.count = calloc(x->n, sizeof *d.count);
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
    rc = store_scan(t, STORE_STATE, NULL, 0, NULL, 0, dup_fn, &d);
    ck_assert_int_eq(rc, 0);
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
    return 0;
}

/* A finished demo store keeps each proposal text once in STORE_STATE (not
 * in the state, nor twice in its round as proposal and candidate), and
 * its bytes per question stay under what the records need: per question
 * the demo archives 1.98 rounds of about 3.7 KB (one 4 KiB overflow page
 * each), a broker decision of about 2.2 KB (one more page), a result of
 * 1.8 KB and 12 ledger replies of 0.5 KB (in leaf pages with B-tree
 * slack), a finished state under 1 KB: about 27 KB. Before, with every
 * round copied into the state as well, it measured 46.6 KB; the bound is
 * 30000. */
START_TEST(demo_stores_each_text_once)
{
    tu_sim sim;
    char *sdir = tu_path(tu_tmp, "store");
    cJSON *st;
    texts *x = calloc(1, sizeof *x);
    store *s = NULL;
    store_opts o = {.flags = STORE_RDONLY};
    nsed_err e = {0};

    tu_sim_start(&sim, DEMO_SIM, NULL, NULL);
    demo_run(&sim, sdir);
    tu_sim_stop(&sim);
    ck_assert_msg(store_open(sdir, &o, &s, &e) == 0, "%s", e.msg);
    ck_assert_int_eq(store_read(s, texts_fn, x, &e), 0);
    store_close(s);
    ck_assert_uint_ge(x->n, 360); /* three proposals per question, or more */
    ck_assert_uint_eq(x->big_states, 0);
    st = tu_nsed_status(sdir);
    ck_assert_msg(tu_jnum(cJSON_GetObjectItem(st, "store_bytes"),
                          "per_question", NULL) < 30000,
                  "%.0f bytes per question",
                  tu_jnum(cJSON_GetObjectItem(st, "store_bytes"),
                          "per_question", NULL));
    cJSON_Delete(st);
    for (size_t i = 0; i < x->n; i++)
        free(x->t[i]);
    free(x);
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

Suite *tu_suite(void)
{
    Suite *s = suite_create("bytes");
    TCase *tc = tcase_create("bytes");

    tcase_add_checked_fixture(tc, tu_tmp_setup, tu_tmp_teardown);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, status_bytes_match_the_file);
    tcase_add_test(tc, demo_stores_each_text_once);
    tcase_add_test(tc, kill_and_resume_rebuilds_the_states);
    tcase_add_test(tc, store_of_the_format_before_reads);
    suite_add_tcase(s, tc);
    return s;
}
