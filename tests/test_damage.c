/* Damaged and full stores, end to end: every command on a store with one
 * corrupt record (of each kind), a truncated data file, a full disk, and
 * the atomic writer of `nsed export -o` under planted links and kill -9.
 *
 * One demo run is made per test case in an unchecked fixture;
 * each test copies that store, damages the copy through the store API and
 * runs the real binary on it. */
#include "testutil.h"

#include "store/store.h"

#include <check.h>
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define DEMO_WF NSED_SOURCE_DIR "/workflows/demo.yaml"
#define DEMO_Q NSED_SOURCE_DIR "/workflows/demo-questions.jsonl"
#define SIM_CFG NSED_SOURCE_DIR "/tests/sim/configs/demo-sim.yaml"

/* ---- the golden store (unchecked fixture: made in the parent) ---------- */

static tu_sim sim;
static char *golden;    /* directory: wf.yaml, store/, export.jsonl */
static char *golden_wf; /* the workflow of the golden run */
static char *ctx_wf;    /* the same with reliability weighting: every
                            question gets a context record */

static void golden_setup(void)
{
    char *text, *out = NULL, *err = NULL, *sdir, *exp;
    size_t len;
    FILE *f;

    golden = tu_mkdtemp();
    golden_wf = tu_path(golden, "wf.yaml");
    text = tu_read_file(DEMO_WF, &len);
    ck_assert(text);
    f = fopen(golden_wf, "w");
    ck_assert(f);
    fputs(text, f);
    /* a call to a server that is down fails at once, and the breaker
     * never makes the run wait */
    fputs("\ngateway:\n  retry:\n    max_attempts: 1\n"
          "  circuit_breaker:\n    failures: 1000\n",
          f);
    ck_assert(fclose(f) == 0);
    ctx_wf = tu_path(golden, "ctx.yaml");
    f = fopen(ctx_wf, "w");
    ck_assert(f);
    fputs(text, f);
    fputs("\nscoring:\n  reliability_weighting: true\n", f);
    ck_assert(fclose(f) == 0);
    free(text);
    exp = tu_path(golden, "mnt");
    ck_assert(mkdir(exp, 0755) == 0);
    free(exp);
    tu_sim_start(&sim, SIM_CFG, NULL, NULL);
    sdir = tu_path(golden, "store");
    ck_assert_msg(TU_NSED(sim.url, &out, &err, "run", golden_wf, "--questions",
                          DEMO_Q, "--store", sdir, "--quiet") == 0,
                  "%s", err);
    free(out);
    free(err);
    ck_assert_int_eq(TU_NSED(NULL, &out, &err, "export", "--store", sdir), 0);
    exp = tu_path(golden, "export.jsonl");
    tu_write_file(exp, out, (size_t)-1);
    free(out);
    free(err);
    free(exp);
    free(sdir);
}

static void golden_teardown(void)
{
    char *mnt = tu_path(golden, "mnt");

    umount2(mnt, MNT_DETACH); /* a failed full-disk test leaves it */
    free(mnt);
    tu_sim_stop(&sim);
    tu_rmrf(golden);
    free(golden);
    free(golden_wf);
    free(ctx_wf);
    golden = golden_wf = ctx_wf = NULL;
}

/* A copy of the golden store in this test's temp directory. */
static char *copy_golden(void)
{
    char *from = tu_path(golden, "store"), *to = tu_path(tu_tmp, "store");
    char *argv[] = {"/bin/cp", "-a", from, to, NULL};

    ck_assert_int_eq(tu_run(argv, NULL, NULL), 0);
    free(from);
    return to;
}

/* ---- damaging records through the store API --------------------------- */

typedef struct keyset {
    size_t n;
    size_t len[4096];
    unsigned char key[4096][STORE_KEY_MAX];
} keyset;

static int collect(const void *key, size_t klen, const void *val, size_t vlen,
                   void *arg)
{
    keyset *ks = arg;

    (void)val;
    (void)vlen;
    if (ks->n == sizeof ks->len / sizeof ks->len[0])
        return 1;
    memcpy(ks->key[ks->n], key, klen);
    ks->len[ks->n++] = klen;
    return 0;
}

typedef struct edit {
    enum store_db db;
    const void *prefix;
    size_t plen;
    int all;    /* every matching record, else the first */
    int remove; /* delete instead of overwriting with garbage */
    size_t done;
} edit;

static int edit_fn(store_txn *t, void *arg, nsed_err *err)
{
    static const char garbage[] = "\x01not a record{";
    edit *e = arg;
    keyset *ks = calloc(1, sizeof *ks);
    int rc;

    (void)err;
    ck_assert(ks);
    rc = store_scan(t, e->db, e->prefix, e->plen, NULL, 0, collect, ks);
    ck_assert(rc == 0 || rc == 1);
    e->done = 0;
    for (size_t i = 0; i < ks->n && (e->all || i == 0); i++) {
        rc = e->remove ? store_del(t, e->db, ks->key[i], ks->len[i])
                       : store_put(t, e->db, ks->key[i], ks->len[i], garbage,
                                   sizeof garbage - 1);
        ck_assert_int_eq(rc, 0);
        e->done++;
    }
    free(ks);
    return 0;
}

/* Apply e to the store in dir; returns how many records it touched. */
static size_t store_edit(const char *dir, edit e)
{
    store *st = NULL;
    nsed_err err = {0};

    ck_assert_msg(store_open(dir, NULL, &st, &err) == 0, "%s", err.msg);
    ck_assert_msg(store_write(st, edit_fn, &e, &err) == 0, "%s", err.msg);
    store_close(st);
    return e.done;
}

static size_t corrupt(const char *dir, enum store_db db, const char *prefix,
                      size_t plen)
{
    return store_edit(dir, (edit){db, prefix, plen, 0, 0, 0});
}

static size_t drop(const char *dir, enum store_db db, const char *prefix,
                   size_t plen)
{
    return store_edit(dir, (edit){db, prefix, plen, 1, 1, 0});
}

static int count_fn(store_txn *t, void *arg, nsed_err *err)
{
    size_t *n = arg;

    (void)err;
    return store_count(t, STORE_LEDGER, n);
}

static size_t count_records(const char *dir, enum store_db db)
{
    store_opts o = {.flags = STORE_RDONLY};
    store *st = NULL;
    nsed_err err = {0};
    size_t n = 0;

    ck_assert(db == STORE_LEDGER);
    ck_assert_msg(store_open(dir, &o, &st, &err) == 0, "%s", err.msg);
    ck_assert_msg(store_read(st, count_fn, &n, &err) == 0, "%s", err.msg);
    store_close(st);
    return n;
}

/* ---- running every command -------------------------------------------- */

enum cmd { C_STATUS, C_EXPORT, C_EXPORT_O, C_RUN, C_INGEST, C_COUNT };

static const char *const cmd_name[] = {"status", "export", "export -o", "run",
                                       "ingest"};

typedef struct expect {
    int rc;          /* exit status; -1: not checked */
    const char *msg; /* in stderr (NULL: nothing checked) */
} expect;

/* Run command c on the store in dir and check its exit status and
 * message; export -o must leave an older file untouched when it fails.
 * Returns stdout (caller frees). */
static char *check_cmd_wf(const char *wf, const char *dir, enum cmd c, expect x)
{
    char *out = NULL, *err = NULL, *file = tu_path(tu_tmp, "old.jsonl");
    int rc = 0;

    switch (c) {
    case C_STATUS:
        rc = TU_NSED(NULL, &out, &err, "status", "--store", dir);
        break;
    case C_EXPORT:
        rc = TU_NSED(NULL, &out, &err, "export", "--store", dir);
        break;
    case C_EXPORT_O:
        tu_write_file(file, "old\n", (size_t)-1);
        rc = TU_NSED(NULL, &out, &err, "export", "--store", dir, "-o", file);
        break;
    case C_RUN:
        rc = TU_NSED(sim.url, &out, &err, "run", wf, "--store", dir, "--quiet");
        break;
    case C_INGEST:
        rc = TU_NSED(NULL, &out, &err, "ingest", wf, "--questions", DEMO_Q,
                     "--store", dir);
        break;
    case C_COUNT:
        ck_abort();
    }
    if (x.rc >= 0)
        ck_assert_msg(rc == x.rc, "%s: exit %d, want %d; stderr: %s",
                      cmd_name[c], rc, x.rc, err);
    ck_assert_msg(!tu_contains(err, "nsed: success"), "%s: %s", cmd_name[c],
                  err);
    if (x.msg)
        ck_assert_msg(tu_contains(err, x.msg), "%s: want \"%s\" in: %s",
                      cmd_name[c], x.msg, err);
    if (c == C_EXPORT_O && rc != 0) {
        char *now = tu_read_file(file, NULL);

        ck_assert_msg(now && strcmp(now, "old\n") == 0,
                      "a failed export -o replaced the file");
        free(now);
    }
    free(file);
    free(err);
    return out;
}

static char *check_cmd(const char *dir, enum cmd c, expect x)
{
    return check_cmd_wf(golden_wf, dir, c, x);
}

static void check_all_wf(const char *wf, const char *dir,
                         const expect x[C_COUNT])
{
    for (int c = 0; c < C_COUNT; c++)
        free(check_cmd_wf(wf, dir, (enum cmd)c, x[c]));
}

static void check_all(const char *dir, const expect x[C_COUNT])
{
    check_all_wf(golden_wf, dir, x);
}

static size_t count_lines(const char *s)
{
    size_t n = 0;

    for (; s && *s; s++)
        n += *s == '\n';
    return n;
}

/* The golden export, byte for byte. */
static void check_export_golden(const char *dir)
{
    char *out = check_cmd(dir, C_EXPORT, (expect){0, NULL});
    char *p = tu_path(golden, "export.jsonl"), *want = tu_read_file(p, NULL);

    ck_assert_msg(want && strcmp(out, want) == 0,
                  "export differs from the uninterrupted run's");
    free(want);
    free(p);
    free(out);
}

/* The records of one question in STORE_STATE: "<qid>\0<kind>". */
static size_t qrec(char *buf, const char *qid, const char *kind, size_t klen)
{
    size_t n = strlen(qid);

    memcpy(buf, qid, n);
    buf[n] = '\0';
    memcpy(buf + n + 1, kind, klen);
    return n + 1 + klen;
}

/* Make demo-003 unfinished: its result goes, so run resumes it from its
 * state (and reads its decision and context again). */
static void unfinish(const char *dir)
{
    ck_assert_int_eq(drop(dir, STORE_RESULTS, "demo-003", 8), 1);
}

/* ---- item 7: one corrupt record of each kind --------------------------- */

#define CORRUPT "in database "
#define RESTORE "restore the store from a copy"

START_TEST(corrupt_question)
{
    char *dir = copy_golden();
    const expect x[C_COUNT] = {
        {1, "question \"demo-050\" in database questions is corrupt"},
        {1, "question \"demo-050\" in database questions is corrupt"},
        {1, RESTORE},
        {1, "question \"demo-050\" in database questions is corrupt"},
        {1, "question \"demo-050\" in database questions is corrupt"},
    };

    ck_assert_int_eq(corrupt(dir, STORE_QUESTIONS, "demo-050", 8), 1);
    check_all(dir, x);
    free(dir);
}
END_TEST

START_TEST(corrupt_question_order)
{
    char *dir = copy_golden();
    /* ingest reads only the records of the questions it adds: all are
     * present by id, so it has nothing to do and nothing to report */
    const expect x[C_COUNT] = {
        {1, "question order entry 0 " CORRUPT "qorder is corrupt"},
        {1, "question order entry 0 " CORRUPT "qorder is corrupt"},
        {1, NULL},
        {1, "question order entry 0 " CORRUPT "qorder is corrupt"},
        {0, NULL},
    };

    ck_assert_int_eq(corrupt(dir, STORE_QORDER, NULL, 0), 1);
    check_all(dir, x);
    free(dir);
}
END_TEST

START_TEST(corrupt_result)
{
    char *dir = copy_golden();
    const expect x[C_COUNT] = {
        {1, "the result of demo-050 " CORRUPT "results is corrupt"},
        {1, "the result of demo-050 " CORRUPT "results is corrupt"},
        {1, NULL},
        {1, "the result of demo-050 " CORRUPT "results is corrupt"},
        {0, NULL},
    };
    char *out;

    ck_assert_int_eq(corrupt(dir, STORE_RESULTS, "demo-050", 8), 1);
    check_all(dir, x);
    /* what export printed before it stopped: the 49 records before */
    out = check_cmd(dir, C_EXPORT, (expect){1, NULL});
    ck_assert_uint_eq(count_lines(out), 49);
    free(out);
    free(dir);
}
END_TEST

START_TEST(corrupt_state)
{
    char *dir = copy_golden(), key[64];
    size_t klen = qrec(key, "demo-003", "s", 1);
    /* status reads whether a state exists, not the state itself */
    const expect x[C_COUNT] = {
        {0, NULL}, {0, NULL},
        {0, NULL}, {1, "the state of demo-003 " CORRUPT "state is corrupt"},
        {0, NULL},
    };

    unfinish(dir);
    ck_assert_int_eq(corrupt(dir, STORE_STATE, key, klen), 1);
    check_all(dir, x);
    free(dir);
}
END_TEST

START_TEST(corrupt_decision)
{
    char *dir = copy_golden(), key[64];
    size_t klen = qrec(key, "demo-003", "b", 1);
    const expect x[C_COUNT] = {
        {1, "the broker decision of demo-003 " CORRUPT "state is corrupt"},
        {0, NULL},
        {0, NULL},
        {1, "the broker decision of demo-003 " CORRUPT "state is corrupt"},
        {0, NULL},
    };

    unfinish(dir);
    ck_assert_int_eq(corrupt(dir, STORE_STATE, key, klen), 1);
    check_all(dir, x);
    free(dir);
}
END_TEST

START_TEST(corrupt_context)
{
    char *dir = tu_path(tu_tmp, "store"), *out = NULL, *err = NULL, key[64];
    size_t klen = qrec(key, "demo-003", "c", 1);
    const expect x[C_COUNT] = {
        {0, NULL}, {0, NULL},
        {0, NULL}, {1, "the context of demo-003 " CORRUPT "state is corrupt"},
        {0, NULL},
    };

    ck_assert_msg(TU_NSED(sim.url, &out, &err, "run", ctx_wf, "--questions",
                          DEMO_Q, "--store", dir, "--quiet") == 0,
                  "%s", err);
    free(out);
    free(err);
    unfinish(dir);
    ck_assert_int_eq(corrupt(dir, STORE_STATE, key, klen), 1);
    check_all_wf(ctx_wf, dir, x);
    free(dir);
}
END_TEST

/* A marker says a question is incomplete; its text is a reason for people
 * and is not read back, so damage to it changes nothing: the question is
 * still counted incomplete and a run finishes it (deleting the marker). */
START_TEST(corrupt_marker)
{
    char *dir = tu_path(tu_tmp, "store"), *out = NULL, *err = NULL, key[64];
    size_t klen = qrec(key, "demo-001", "i", 1);
    cJSON *j;

    /* nothing listens there: every question is left incomplete */
    ck_assert_int_eq(TU_NSED("http://127.0.0.1:9/v1", &out, &err, "run",
                             golden_wf, "--questions", DEMO_Q, "--store", dir,
                             "--quiet", "--no-preflight"),
                     1);
    free(out);
    free(err);
    ck_assert_int_eq(corrupt(dir, STORE_STATE, key, klen), 1);
    j = tu_nsed_status(dir);
    ck_assert_double_eq(tu_jnum(j, "questions", "incomplete"), 120);
    cJSON_Delete(j);
    free(check_cmd(dir, C_RUN, (expect){0, NULL}));
    check_export_golden(dir);
    free(dir);
}
END_TEST

START_TEST(corrupt_telemetry)
{
    static const char *const keys[] = {"gateway/alpha", "model/alpha",
                                       "rounds"};

    for (size_t i = 0; i < 3; i++) {
        char *dir = copy_golden(), want[128];
        /* a run stops at each: read as zero, it would overwrite the
         * cumulative counts (model/ records are the broker's, read
         * through telemetry_load; before, it read a damaged one as "no
         * measurements") */
        const expect x[C_COUNT] = {
            {1, want}, {0, NULL}, {0, NULL}, {1, NULL}, {0, NULL},
        };

        snprintf(want, sizeof want, "\"%s\" " CORRUPT "telemetry is corrupt",
                 keys[i]);
        ck_assert_int_eq(corrupt(dir, STORE_TELEMETRY, keys[i],
                                 strlen(keys[i])),
                         1);
        check_all(dir, x);
        free(check_cmd(dir, C_RUN, (expect){1, want}));
        tu_rmrf(dir);
        free(dir);
    }
}
END_TEST

/* The call ledger is a cache of answers: a damaged entry is a miss, the
 * call is made again (and the run says so), and the results are those of
 * an undamaged run. The store keeps only its questions and ledger, so a
 * rerun asks for exactly the calls of the first run. */
START_TEST(corrupt_ledger)
{
    char *dir = copy_golden(), *out = NULL, *err = NULL, want[64];
    size_t n, calls = count_records(dir, STORE_LEDGER);

    snprintf(want, sizeof want, "; 1 calls (%zu from the ledger)", calls - 1);
    drop(dir, STORE_STATE, NULL, 0);
    drop(dir, STORE_RESULTS, NULL, 0);
    drop(dir, STORE_TELEMETRY, NULL, 0);
    n = corrupt(dir, STORE_LEDGER, NULL, 0);
    ck_assert_int_eq(n, 1);
    ck_assert_int_eq(TU_NSED(sim.url, &out, &err, "run", golden_wf, "--store",
                             dir),
                     0);
    ck_assert_msg(tu_contains(err, "calling the model again"), "%s", err);
    ck_assert_msg(tu_contains(err, want), "want \"%s\" in: %s", want, err);
    free(out);
    free(err);
    check_export_golden(dir);
    free(dir);
}
END_TEST

START_TEST(corrupt_manifest)
{
    char *dir = copy_golden();
    /* export needs no manifest: it reads results only */
    const expect x[C_COUNT] = {
        {1, "manifest"},
        {0, NULL},
        {0, NULL},
        {1, "manifest is damaged"},
        {1, "manifest is damaged"},
    };

    ck_assert_int_eq(corrupt(dir, STORE_META, "manifest", 8), 1);
    check_all(dir, x);
    free(dir);
}
END_TEST

/* ---- item 8: a truncated data file ----------------------------------- */

static void truncate_data(const char *dir, long size)
{
    char *p = tu_path(dir, "data.mdb");
    struct stat st;

    ck_assert(stat(p, &st) == 0);
    if (size < 0)
        size = (long)st.st_size / 2;
    ck_assert_msg(truncate(p, size) == 0, "truncate: %s", strerror(errno));
    free(p);
}

/* Every command refuses the store with exit 1 and says why; none dies of
 * a signal (SIGBUS was 135). */
static void check_truncated(long size, const char *msg)
{
    char *dir = copy_golden();
    const expect x[C_COUNT] = {{1, msg},
                               {1, msg},
                               {1, msg},
                               {1, msg},
                               {1, msg}};

    truncate_data(dir, size);
    check_all(dir, x);
    free(dir);
}

START_TEST(truncated_to_zero)
{
    check_truncated(0, "data.mdb is truncated: 0 bytes, but the store was "
                       "opened before");
}
END_TEST

START_TEST(truncated_to_half)
{
    check_truncated(-1, "data.mdb is truncated: ");
    check_truncated(-1, "; restore it from a copy");
}
END_TEST

START_TEST(truncated_to_one_page)
{
    check_truncated(4096, "data.mdb is truncated: 4096 bytes, the store needs "
                          "at least 8192; restore it from a copy");
}
END_TEST

/* An empty data file in a directory where no store was ever opened (no
 * lock.mdb) is a new store, as an absent one is. */
START_TEST(empty_data_file_in_new_dir)
{
    char *dir = tu_path(tu_tmp, "store"), *p = tu_path(dir, "data.mdb");
    char *out = NULL, *err = NULL;

    ck_assert(mkdir(dir, 0755) == 0);
    tu_write_file(p, "", 0);
    ck_assert_msg(TU_NSED(NULL, &out, &err, "ingest", golden_wf, "--questions",
                          DEMO_Q, "--store", dir) == 0,
                  "%s", err);
    free(out);
    free(err);
    free(p);
    free(dir);
}
END_TEST

/* ---- item 10: export -o under kill -9, and its fsync order ------------ */

/* Entries of dir other than "." and ".." and keep (the export's target). */
static int others(const char *dir, const char *keep)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;

    ck_assert_ptr_nonnull(d);
    while ((e = readdir(d)))
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0 &&
             strcmp(e->d_name, keep) != 0;
    closedir(d);
    return n;
}

typedef struct big_ctx {
    size_t n, pad;
} big_ctx;

/* Results for every question of the store (a big export: n records of
 * pad bytes each), written straight into the store. */
static int big_fn(store_txn *t, void *arg, nsed_err *err)
{
    big_ctx *b = arg;
    char *rec = malloc(b->pad + 64);

    (void)err;
    ck_assert(rec);
    for (size_t i = 0; i < b->n; i++) {
        char id[32];
        int len;

        snprintf(id, sizeof id, "big-%05zu", i);
        len = snprintf(rec, 64, "{\"id\":\"%s\",\"pad\":\"", id);
        memset(rec + len, 'x', b->pad);
        memcpy(rec + len + b->pad, "\"}", 2);
        ck_assert_int_eq(store_put(t, STORE_RESULTS, id, strlen(id), rec,
                                   (size_t)len + b->pad + 2),
                         0);
    }
    free(rec);
    return 0;
}

/* 1 when dir holds a temporary file of process pid. */
static int pid_file(const char *dir, pid_t pid)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char a[64], b[64];
    int found = 0;

    ck_assert_ptr_nonnull(d);
    snprintf(a, sizeof a, ".nsed-tmp.%ld.", (long)pid);
    snprintf(b, sizeof b, ".tmp.%ld", (long)pid);
    while ((e = readdir(d)))
        found |= strstr(e->d_name, a) != NULL ||
                 (strlen(e->d_name) > strlen(b) &&
                  strcmp(e->d_name + strlen(e->d_name) - strlen(b), b) == 0);
    closedir(d);
    return found;
}

/* A store of n questions with a result of pad bytes each. */
static char *big_store(size_t n, size_t pad)
{
    char *dir = tu_path(tu_tmp, "store"), *q = tu_path(tu_tmp, "big.jsonl");
    char *out = NULL, *err = NULL;
    FILE *f = fopen(q, "w");
    big_ctx b = {n, pad};
    store *st = NULL;
    nsed_err e = {0};

    ck_assert(f);
    for (size_t i = 0; i < n; i++)
        fprintf(f, "{\"id\":\"big-%05zu\",\"question\":\"%zu+1?\"}\n", i, i);
    ck_assert(fclose(f) == 0);
    ck_assert_msg(TU_NSED(NULL, &out, &err, "ingest", golden_wf, "--questions",
                          q, "--store", dir) == 0,
                  "%s", err);
    free(out);
    free(err);
    ck_assert_msg(store_open(dir, NULL, &st, &e) == 0, "%s", e.msg);
    ck_assert_msg(store_write(st, big_fn, &b, &e) == 0, "%s", e.msg);
    store_close(st);
    free(q);
    return dir;
}

/* kill -9 an export -o while it writes: the target keeps its old content,
 * at most one temporary file is left, and the next export removes it. */
START_TEST(killed_export_leaves_one_temporary)
{
    char *dir = big_store(2000, 20000);
    char *outdir = tu_path(tu_tmp, "out"),
         *target = tu_path(outdir, "big.jsonl");
    char *text, *out = NULL, *err = NULL;

    ck_assert(mkdir(outdir, 0755) == 0);
    tu_write_file(target, "old\n", (size_t)-1);
    for (int round = 0; round < 3; round++) {
        struct timespec nap = {0, 200000};
        pid_t pid = fork();
        int status, waited = 0;

        ck_assert(pid >= 0);
        if (pid == 0) {
            int null = open("/dev/null", O_WRONLY);

            dup2(null, 1);
            dup2(null, 2);
            execl(NSED_BIN, NSED_BIN, "export", "--store", dir, "-o", target,
                  (char *)NULL);
            _exit(127);
        }
        /* kill it once its own temporary file is there (by the previous
         * layout's name, "<target>.tmp.<pid>", too) */
        while (!pid_file(outdir, pid) && waited++ < 20000) {
            nanosleep(&nap, NULL);
            if (waitpid(pid, &status, WNOHANG) == pid)
                ck_abort_msg("export finished before it could be killed");
        }
        kill(pid, SIGKILL);
        ck_assert(waitpid(pid, &status, 0) == pid);
        ck_assert(WIFSIGNALED(status));
        ck_assert_int_eq(others(outdir, "big.jsonl"), 1);
        text = tu_read_file(target, NULL);
        ck_assert_str_eq(text, "old\n");
        free(text);
    }
    ck_assert_int_eq(TU_NSED(NULL, &out, &err, "export", "--store", dir, "-o",
                             target),
                     0);
    ck_assert_int_eq(others(outdir, "big.jsonl"), 0);
    text = tu_read_file(target, NULL);
    ck_assert_uint_eq(count_lines(text), 2000);
    free(text);
    free(out);
    free(err);
    free(target);
    free(outdir);
    free(dir);
}
END_TEST

/* The line of log at or after from that contains every one of the
 * NULL-terminated needles; returns where it starts, or NULL. */
static const char *find_line(const char *from, ...)
{
    for (const char *line = from; line && *line;) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        char *copy = strndup(line, len);
        int all = 1;
        va_list ap;

        va_start(ap, from);
        for (const char *n = va_arg(ap, const char *); n;
             n = va_arg(ap, const char *))
            all &= strstr(copy, n) != NULL;
        va_end(ap);
        free(copy);
        if (all)
            return line;
        line = end ? end + 1 : NULL;
    }
    return NULL;
}

/* The durability order of export -o, read from strace: the temporary file
 * is created with O_EXCL|O_NOFOLLOW, fsync'd before the rename, and the
 * folder is fsync'd after it. Skipped (one line) without a working
 * strace (absent, or ptrace not permitted). */
START_TEST(export_fsyncs_before_and_after_rename)
{
    char *dir = copy_golden(), *target = tu_path(tu_tmp, "out.jsonl");
    char *log = tu_path(tu_tmp, "strace.log"), *text;
    /* LeakSanitizer cannot run under ptrace (in the ASan build) */
    char *argv[] = {"/usr/bin/env",
                    "ASAN_OPTIONS=detect_leaks=0",
                    "strace",
                    "-f",
                    "-o",
                    log,
                    "-e",
                    "trace=openat,fsync,rename,renameat,renameat2",
                    NSED_BIN,
                    "export",
                    "--store",
                    dir,
                    "-o",
                    target,
                    NULL};
    char *probe[] = {"/bin/sh", "-c", "strace -o /dev/null true", NULL};
    const char *open_at, *sync_file, *ren, *open_dir, *sync_dir, *eq;
    char fd_call[32];
    long fd;

    if (tu_run(probe, NULL, NULL) != 0) {
        printf("test_damage: strace cannot run here; fsync order not "
               "checked (see pipeline/base/atomic.c)\n");
        goto out;
    }
    ck_assert_int_eq(tu_run(argv, NULL, NULL), 0);
    text = tu_read_file(log, NULL);
    ck_assert_ptr_nonnull(text);
    open_at = find_line(text, ".out.jsonl.nsed-tmp.", "O_EXCL", "O_NOFOLLOW",
                        (char *)NULL);
    ck_assert_msg(open_at, "no O_EXCL|O_NOFOLLOW open of the temporary file");
    eq = NULL;
    for (const char *p = open_at; *p && *p != '\n'; p++)
        if (*p == '=')
            eq = p;
    ck_assert_ptr_nonnull(eq);
    fd = strtol(eq + 1, NULL, 10);
    snprintf(fd_call, sizeof fd_call, "fsync(%ld)", fd);
    sync_file = find_line(open_at, fd_call, (char *)NULL);
    ren = find_line(open_at, "rename", ".out.jsonl.nsed-tmp.", (char *)NULL);
    ck_assert_msg(sync_file && ren && sync_file < ren,
                  "the file is not fsync'd before the rename");
    open_dir = find_line(ren, "O_DIRECTORY", (char *)NULL);
    sync_dir = open_dir ? find_line(open_dir, "fsync(", (char *)NULL) : NULL;
    ck_assert_msg(sync_dir, "the folder is not fsync'd after the rename");
    free(text);
out:
    free(log);
    free(target);
    free(dir);
}
END_TEST

/* ---- item 9: a full disk --------------------------------------------- */

/* A run on a file system that fills up stops with exit 1 and "disk full:
 * <path>"; once space is freed, the same command resumes it and the
 * export is that of an uninterrupted run, byte for byte. The file system
 * is a small tmpfs mounted by the test (tu_suite leaves the test out when
 * mounting is not permitted). */
START_TEST(full_disk_says_so_and_resumes)
{
    static const char block[4096];
    char *mnt = tu_path(golden, "mnt"), *dir = tu_path(mnt, "store");
    char *filler = tu_path(mnt, "filler"), *out = NULL, *err = NULL, want[512];
    struct statvfs vfs;
    FILE *f;
    uint64_t avail;

    ck_assert_msg(mount("tmpfs", mnt, "tmpfs", 0, "size=8m") == 0, "mount: %s",
                  strerror(errno));
    ck_assert(statvfs(mnt, &vfs) == 0);
    avail = (uint64_t)vfs.f_bavail * vfs.f_frsize;
    /* leave about 1 MB: the store of the whole demo needs about 2.2
     * (its large records compressed, docs/store.md) */
    f = fopen(filler, "w");
    ck_assert(f);
    for (uint64_t n = 0; n + (1u << 20) < avail; n += sizeof block)
        ck_assert(fwrite(block, 1, sizeof block, f) == sizeof block);
    ck_assert(fclose(f) == 0);
    ck_assert_int_eq(TU_NSED(sim.url, &out, &err, "run", golden_wf,
                             "--questions", DEMO_Q, "--store", dir, "--quiet"),
                     1);
    snprintf(want, sizeof want, "disk full: %s/data.mdb", dir);
    ck_assert_msg(tu_contains(err, want), "want \"%s\" in: %s", want, err);
    ck_assert_msg(!tu_contains(err, "Input/output error"), "%s", err);
    free(out);
    free(err);
    /* export -o onto the full disk: says so, leaves nothing behind */
    snprintf(want, sizeof want, "%s/x.jsonl", mnt);
    ck_assert_int_eq(TU_NSED(NULL, &out, &err, "export", "--store", dir, "-o",
                             want),
                     1);
    ck_assert_msg(tu_contains(err, "disk full: ") && tu_contains(err, want),
                  "%s", err);
    ck_assert_int_eq(others(mnt, "store"), 1); /* the filler only */
    free(out);
    free(err);
    snprintf(want, sizeof want, "disk full: %s/data.mdb", dir);
    /* free the space, run the same command again */
    ck_assert(unlink(filler) == 0);
    ck_assert_msg(TU_NSED(sim.url, &out, &err, "run", golden_wf, "--questions",
                          DEMO_Q, "--store", dir, "--quiet") == 0,
                  "%s", err);
    free(out);
    free(err);
    check_export_golden(dir);
    ck_assert(umount2(mnt, MNT_DETACH) == 0);
    free(filler);
    free(dir);
    free(mnt);
}
END_TEST

/* 1 when this process may mount a tmpfs (root, outside a locked-down
 * container). Called before Check runs: plain calls only. */
static int can_mount(void)
{
    char tmpl[] = "/tmp/nsed-mount-XXXXXX";
    int ok;

    if (!mkdtemp(tmpl))
        return 0;
    ok = mount("tmpfs", tmpl, "tmpfs", 0, "size=1m") == 0;
    if (ok)
        umount2(tmpl, MNT_DETACH);
    rmdir(tmpl);
    return ok;
}

Suite *tu_suite(void)
{
    Suite *s = suite_create("damage");
    TCase *tc = tcase_create("corrupt records");

    tcase_add_unchecked_fixture(tc, golden_setup, golden_teardown);
    tcase_add_checked_fixture(tc, tu_tmp_setup, tu_tmp_teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, corrupt_question);
    tcase_add_test(tc, corrupt_question_order);
    tcase_add_test(tc, corrupt_result);
    tcase_add_test(tc, corrupt_state);
    tcase_add_test(tc, corrupt_decision);
    tcase_add_test(tc, corrupt_context);
    tcase_add_test(tc, corrupt_marker);
    tcase_add_test(tc, corrupt_telemetry);
    tcase_add_test(tc, corrupt_ledger);
    tcase_add_test(tc, corrupt_manifest);
    tcase_add_test(tc, truncated_to_zero);
    tcase_add_test(tc, truncated_to_half);
    tcase_add_test(tc, truncated_to_one_page);
    tcase_add_test(tc, empty_data_file_in_new_dir);
    tcase_add_test(tc, killed_export_leaves_one_temporary);
    tcase_add_test(tc, export_fsyncs_before_and_after_rename);
    if (can_mount())
        tcase_add_test(tc, full_disk_says_so_and_resumes);
    else
        printf("test_damage: cannot mount a tmpfs here (not root?); the "
               "full-disk test is skipped\n");
    suite_add_tcase(s, tc);
    return s;
}
