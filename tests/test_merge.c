/* Tests for `nsed merge` (issue 14, item 2): a fixed-team workflow run on
 * nsed-sim once as one store and once as 4 shards (`nsed run --shard
 * K/4`), the shards merged. The merged store must read as the single
 * run's: `nsed export` (JSONL, CSV, traces) byte for byte, the outcome
 * counts of `status --json`, `compare` finding no difference, `report`
 * working; its call statistics must be the sum of the shards' and the
 * simulator's own request count; a later `nsed run` on it must work as on
 * any unsharded store. Every refusal exits with its code and names the
 * directory; a merge killed with SIGKILL at random moments and run again
 * ends as an uninterrupted one, with no OUT.merging left.
 *
 * The expected values come from the single run's files, the simulator's
 * counters, and the shard of each id computed here with libcrypto's
 * SHA-256 (the contract: the first 8 bytes big-endian, mod N). */
#include "testutil.h"

#include "pipeline/broker/telemetry.h"
#include "store/store.h"
#include "store/store_keys.h"

#include <check.h>
#include <cjson/cJSON.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define DEMO_Q NSED_SOURCE_DIR "/workflows/demo-questions.jsonl"
#define DEMO_SIM NSED_SOURCE_DIR "/tests/sim/configs/demo-sim.yaml"
#define NSHARDS 4

/* The demo's team, fixed (no learning broker: every question's team and
 * calls are the same whichever shard runs it). */
static const char wf_text[] =
    "name: merge\nversion: 1\nseed: 42\n"
    "models:\n"
    "  - {id: alpha, endpoint: '${NSED_SIM_URL}', model: sim-alpha,"
    " max_concurrency: 8, price: {input_per_mtok: 1, output_per_mtok: 2}}\n"
    "  - {id: beta, endpoint: '${NSED_SIM_URL}', model: sim-beta,"
    " max_concurrency: 8, price: {input_per_mtok: 1.5, output_per_mtok: 3}}\n"
    "  - {id: gamma, endpoint: '${NSED_SIM_URL}', model: sim-gamma,"
    " max_concurrency: 8, price: {input_per_mtok: 0.5, output_per_mtok: 1}}\n"
    "broker: {policy: fixed}\n"
    "teams:\n  main:\n    roles:\n"
    "      - {name: solver, count: 3, models: [alpha, beta, gamma]}\n"
    "rounds: {min: 1, max: 3, stop: {consensus_margin: 0.6,"
    " stable_answer: 2}}\n"
    "answer: {extract: boxed, compare: numeric}\n";

/* ---- fixtures ------------------------------------------------------------- */

static char *write_wf(void)
{
    char *path = tu_path(tu_tmp, "wf.yaml");

    tu_write_file(path, wf_text, (size_t)-1);
    return path;
}

/* The first n questions of the demo set (the simulator knows them all). */
static char *write_questions(const char *name, size_t n)
{
    char *text = tu_read_file(DEMO_Q, NULL), *p = text;
    char *path = tu_path(tu_tmp, name);

    ck_assert_ptr_nonnull(text);
    for (size_t i = 0; i < n; i++) {
        p = strchr(p, '\n');
        ck_assert_ptr_nonnull(p);
        p++;
    }
    tu_write_file(path, text, (size_t)(p - text));
    free(text);
    return path;
}

/* The shard of id among n, by the contract, through libcrypto. */
static uint32_t shard_of(const char *id, uint32_t n)
{
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int dl = 0;
    uint64_t v = 0;

    ck_assert(EVP_Digest(id, strlen(id), d, &dl, EVP_sha256(), NULL) == 1);
    for (int i = 0; i < 8; i++)
        v = v << 8 | d[i];
    return (uint32_t)(v % n);
}

/* How many of the first nq demo questions fall in shard k of n. */
static size_t questions_in_shard(size_t nq, uint32_t k, uint32_t n)
{
    char *text = tu_read_file(DEMO_Q, NULL), *p = text;
    size_t count = 0;

    for (size_t i = 0; i < nq; i++) {
        cJSON *q;
        char *nl = strchr(p, '\n');

        ck_assert_ptr_nonnull(nl);
        *nl = '\0';
        q = cJSON_Parse(p);
        ck_assert_ptr_nonnull(q);
        count += shard_of(cJSON_GetObjectItem(q, "id")->valuestring, n) == k;
        cJSON_Delete(q);
        p = nl + 1;
    }
    free(text);
    return count;
}

/* `nsed run` of wf over q into store, as shard (NULL: unsharded), with
 * one extra option pair (NULL: none); must exit want. Returns the
 * requests the simulator got meanwhile. */
static double run_store(tu_sim *sim, const char *wf, const char *q,
                        const char *dir, const char *shard, const char *opt,
                        const char *val, int want)
{
    double before = tu_sim_total_requests(sim);
    char *out = NULL, *err = NULL;
    int rc;

    if (shard)
        rc = TU_NSED(sim->url, &out, &err, "run", wf, "--questions", q,
                     "--store", dir, "--quiet", "--no-preflight", "--shard",
                     shard, opt, val);
    else
        rc = TU_NSED(sim->url, &out, &err, "run", wf, "--questions", q,
                     "--store", dir, "--quiet", "--no-preflight", opt, val);
    ck_assert_msg(rc == want, "run %s: exit %d, want %d: %s", dir, rc, want,
                  err);
    free(out);
    free(err);
    return tu_sim_total_requests(sim) - before;
}

/* Run the 4 shards of q into DIR/s0..s3; returns the requests they made,
 * and each shard's store path in dirs (caller frees). */
static double run_shards(tu_sim *sim, const char *wf, const char *q,
                         char *dirs[NSHARDS])
{
    double req = 0;

    for (int k = 0; k < NSHARDS; k++) {
        char name[16], shard[16];

        snprintf(name, sizeof name, "s%d", k);
        snprintf(shard, sizeof shard, "%d/%d", k, NSHARDS);
        dirs[k] = tu_path(tu_tmp, name);
        req += run_store(sim, wf, q, dirs[k], shard, NULL, NULL, 0);
    }
    return req;
}

/* `nsed merge out SHARD...` (n shard paths, up to 10) with one extra
 * argument (NULL: none); its exit status, its stderr in *err (caller
 * frees; err may be NULL). */
static int merge(const char *out, char *const *shards, size_t n,
                 const char *extra, char **err)
{
    char *argv[16] = {NSED_BIN, "merge", (char *)out};
    size_t a = 3;
    char *o = NULL;
    int rc;

    ck_assert_uint_le(n, 10);
    for (size_t i = 0; i < n; i++)
        argv[a++] = shards[i];
    if (extra)
        argv[a++] = (char *)extra;
    argv[a] = NULL;
    rc = tu_run(argv, &o, err);
    free(o);
    return rc;
}

/* `nsed export --format fmt` (traces render the prompts again: the
 * workflow's ${NSED_SIM_URL} must be set, to url). */
static char *export_fmt(const char *url, const char *dir, const char *fmt)
{
    char *out = NULL, *err = NULL;

    ck_assert_msg(TU_NSED(url, &out, &err, "export", "--store", dir, "--format",
                          fmt) == 0,
                  "export --format %s: %s", fmt, err);
    free(err);
    return out;
}

static bool exists(const char *path)
{
    struct stat st;

    return lstat(path, &st) == 0;
}

static char *merging_of(const char *out)
{
    size_t n = strlen(out) + sizeof ".merging";
    char *p = malloc(n);

    snprintf(p, n, "%s.merging", out);
    return p;
}

static double model_calls(const cJSON *status)
{
    const cJSON *models = cJSON_GetObjectItem(status, "models"), *m;
    double sum = 0;

    cJSON_ArrayForEach(m, models) {
        sum += tu_jnum(m, "calls", NULL);
    }
    return sum;
}

/* The run id of the rows of dir's traces export (malloc'd). */
static char *run_id_of(const char *url, const char *dir)
{
    char *t = export_fmt(url, dir, "traces"), *nl = strchr(t, '\n'), *id;
    cJSON *row;

    ck_assert_ptr_nonnull(nl);
    *nl = '\0';
    row = cJSON_Parse(t);
    ck_assert(cJSON_IsString(cJSON_GetObjectItem(row, "run_id")));
    id = strdup(cJSON_GetObjectItem(row, "run_id")->valuestring);
    cJSON_Delete(row);
    free(t);
    return id;
}

/* The run id the earliest-created shard's rows carry (malloc'd). */
static char *run_id_of_first_shard(const char *url, char *const *dirs)
{
    char *best = NULL, *best_at = NULL;

    for (int k = 0; k < NSHARDS; k++) {
        cJSON *st = tu_nsed_status(dirs[k]);
        const char *at = cJSON_GetObjectItem(cJSON_GetObjectItem(st,
                                                                 "manifest"),
                                             "created_at")
                             ->valuestring;

        if (!best_at || strcmp(at, best_at) < 0) {
            free(best_at);
            free(best);
            best_at = strdup(at);
            best = run_id_of(url, dirs[k]);
        }
        cJSON_Delete(st);
    }
    free(best_at);
    return best;
}

/* text with every from replaced by to (same length); takes text. */
static char *replace_all(char *text, const char *from, const char *to)
{
    size_t n = strlen(from);

    ck_assert_uint_eq(strlen(to), n);
    for (char *p = strstr(text, from); p; p = strstr(p + n, from))
        memcpy(p, to, n);
    return text;
}

/* status --json of the merged store against the single store's: every
 * member the same, but the store's path, the manifest (its own), and of
 * each model's call statistics those that depend on timing (latency) and
 * on the order the simulator saw the prompts in (its prefix cache's
 * cached_tokens, and cost as a sum of doubles in another order). */
static void same_status(const cJSON *single, const cJSON *merged)
{
    static const char *const counts[] = {"calls",         "ok",
                                         "failed",        "attempts",
                                         "retries",       "ledger_hits",
                                         "prompt_tokens", "completion_tokens"};
    cJSON *a = cJSON_Duplicate(single, 1), *b = cJSON_Duplicate(merged, 1);
    const cJSON *m;
    char *ta, *tb;

    cJSON_ArrayForEach(m, cJSON_GetObjectItem(single, "models")) {
        const cJSON *o = cJSON_GetObjectItem(cJSON_GetObjectItem(merged,
                                                                 "models"),
                                             m->string);

        ck_assert_ptr_nonnull(o);
        for (size_t i = 0; i < sizeof counts / sizeof *counts; i++)
            ck_assert_double_eq(tu_jnum(o, counts[i], NULL),
                                tu_jnum(m, counts[i], NULL));
        ck_assert_double_eq_tol(tu_jnum(o, "cost_usd", NULL),
                                tu_jnum(m, "cost_usd", NULL), 1e-9);
    }
    /* store_bytes: the space a store takes depends on how it was written
     * (one run or a merge), not on what it holds; prefix_cache, like the
     * models' token counts, depends on the order the calls reached the
     * simulator's prefix cache */
    for (int i = 0; i < 5; i++) {
        static const char *const skip[] = {"store", "manifest", "models",
                                           "store_bytes", "prefix_cache"};

        cJSON_DeleteItemFromObject(a, skip[i]);
        cJSON_DeleteItemFromObject(b, skip[i]);
    }
    ta = cJSON_PrintUnformatted(a);
    tb = cJSON_PrintUnformatted(b);
    ck_assert_str_eq(tb, ta);
    free(ta);
    free(tb);
    cJSON_Delete(a);
    cJSON_Delete(b);
}

static int count_fn(store_txn *t, void *arg, nsed_err *err)
{
    static const enum store_db dbs[] = {STORE_QUESTIONS, STORE_QORDER,
                                        STORE_STATE, STORE_RESULTS,
                                        STORE_LEDGER};
    size_t *total = arg;

    (void)err;
    for (size_t i = 0; i < sizeof dbs / sizeof *dbs; i++) {
        size_t n = 0;

        ck_assert_int_eq(store_count(t, dbs[i], &n), 0);
        *total += n;
    }
    return 0;
}

/* Records of the databases a merge copies, over the shards. */
static size_t records_of(char *const *dirs)
{
    size_t total = 0;

    for (int k = 0; k < NSHARDS; k++) {
        store_opts ro = {STORE_RDONLY, 0};
        nsed_err err = {0};
        store *st = NULL;

        ck_assert_int_eq(store_open(dirs[k], &ro, &st, &err), 0);
        ck_assert_int_eq(store_read(st, count_fn, &total, &err), 0);
        store_close(st);
    }
    return total;
}

/* ---- the merged store reads as the single run's -------------------------- */

START_TEST(merged_reads_as_single)
{
    static const char *const outcomes[] = {"total",      "done",
                                           "degraded",   "incomplete",
                                           "failed",     "in_progress",
                                           "not_started"};
    char *wf = write_wf(), *q = write_questions("q.jsonl", 48);
    char *single = tu_path(tu_tmp, "single"), *out = tu_path(tu_tmp, "merged");
    char *dirs[NSHARDS], *err = NULL, *sx, *mx, *tx, *o = NULL, *e = NULL;
    char *report = tu_path(tu_tmp, "report.html"), *mpath = merging_of(out);
    char *run_single, *run_merged, line[512];
    double req_single, req_shards, shard_calls = 0, t0;
    cJSON *ss, *ms, *cmp, *c, *man, *mg, *sh;
    tu_sim sim;

    tu_sim_start(&sim, DEMO_SIM, NULL, NULL);
    req_single = run_store(&sim, wf, q, single, NULL, NULL, NULL, 0);
    req_shards = run_shards(&sim, wf, q, dirs);

    t0 = tu_now_s();
    ck_assert_msg(merge(out, dirs, NSHARDS, NULL, &err) == 0, "merge: %s", err);
    fprintf(stderr,
            "test_merge: merging 4 shards of 48 questions took %.3f "
            "s\n",
            tu_now_s() - t0);
    ck_assert(!exists(mpath));
    /* its last progress line: every record of the shards' copied
     * databases, counted here through the store API; the summary: the
     * single run's outcomes and the simulator's count of calls */
    ss = tu_nsed_status(single);
    snprintf(line, sizeof line,
             "nsed merge: progress: %zu/%zu records (100%%), shard 4 of 4",
             records_of(dirs), records_of(dirs));
    ck_assert_msg(tu_contains(err, line), "no \"%s\" in: %s", line, err);
    snprintf(line, sizeof line,
             "nsed merge: %s: 48 questions: %.0f done, %.0f degraded, %.0f "
             "failed, 0 unfinished; %.0f calls (0 from the ledger)",
             out, tu_jnum(ss, "questions", "done"),
             tu_jnum(ss, "questions", "degraded"),
             tu_jnum(ss, "questions", "failed"), req_shards);
    ck_assert_msg(tu_contains(err, line), "no \"%s\" in: %s", line, err);
    cJSON_Delete(ss);
    free(err);

    /* the same export, in every format */
    sx = tu_nsed_export(single);
    mx = tu_nsed_export(out);
    ck_assert_uint_gt(strlen(sx), 0);
    ck_assert_str_eq(mx, sx);
    free(sx);
    free(mx);
    /* the rows of CSV and traces name their run (created_at and seed):
     * the single store's run id stands for the merged one's, which is
     * that of the earliest shard */
    run_single = run_id_of(sim.url, single);
    run_merged = run_id_of(sim.url, out);
    sx = run_id_of_first_shard(sim.url, dirs);
    ck_assert_str_eq(run_merged, sx);
    free(sx);
    for (int f = 0; f < 4; f++) {
        static const char *const fmts[] = {"csv", "traces", "sft", "dpo"};
        const char *fmt = fmts[f];

        sx = replace_all(export_fmt(sim.url, single, fmt), run_single,
                         run_merged);
        mx = export_fmt(sim.url, out, fmt);
        ck_assert_msg(strcmp(sx, mx) == 0, "export --format %s differs", fmt);
        free(sx);
        free(mx);
    }

    ck_assert_int_eq(TU_NSED(NULL, &sx, &e, "export", "--store", single,
                             "--summary"),
                     0);
    free(e);
    ck_assert_int_eq(TU_NSED(NULL, &mx, &e, "export", "--store", out,
                             "--summary"),
                     0);
    free(e);
    ck_assert_str_eq(mx, sx);
    free(sx);
    free(mx);

    /* the outcome counts; calls: the shards' sum, the simulator's count */
    ss = tu_nsed_status(single);
    ms = tu_nsed_status(out);
    for (size_t i = 0; i < sizeof outcomes / sizeof *outcomes; i++)
        ck_assert_double_eq(tu_jnum(ms, "questions", outcomes[i]),
                            tu_jnum(ss, "questions", outcomes[i]));
    ck_assert_double_eq(tu_jnum(ms, "questions", "total"), 48);
    same_status(ss, ms);
    for (int k = 0; k < NSHARDS; k++) {
        cJSON *st = tu_nsed_status(dirs[k]);

        shard_calls += model_calls(st);
        cJSON_Delete(st);
    }
    ck_assert_double_gt(req_shards, 0);
    ck_assert_double_eq(model_calls(ms), shard_calls);
    ck_assert_double_eq(model_calls(ms), req_shards);
    /* a fixed team asks the same calls whichever process runs a question */
    ck_assert_double_eq(req_shards, req_single);
    ck_assert_double_eq(model_calls(ss), req_single);

    /* the manifest: no shard, every shard's manifest under "merged" */
    man = cJSON_GetObjectItem(ms, "manifest");
    ck_assert_ptr_null(cJSON_GetObjectItem(man, "shard"));
    mg = cJSON_GetObjectItem(man, "merged");
    ck_assert_double_eq(tu_jnum(mg, "count", NULL), NSHARDS);
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(mg, "shards")),
                     NSHARDS);
    for (int k = 0; k < NSHARDS; k++) {
        sh = cJSON_GetArrayItem(cJSON_GetObjectItem(mg, "shards"), k);
        ck_assert_double_eq(tu_jnum(sh, "index", NULL), k);
        ck_assert_double_eq(tu_jnum(cJSON_GetObjectItem(sh, "manifest"),
                                    "shard", "index"),
                            k);
        ck_assert_int_ge(cJSON_GetArraySize(cJSON_GetObjectItem(
                             cJSON_GetObjectItem(sh, "manifest"), "history")),
                         1);
    }
    ck_assert_str_eq(cJSON_GetObjectItem(man, "workflow_hash")->valuestring,
                     cJSON_GetObjectItem(cJSON_GetObjectItem(ss, "manifest"),
                                         "workflow_hash")
                         ->valuestring);
    cJSON_Delete(ss);
    cJSON_Delete(ms);
    ck_assert_int_eq(TU_NSED(NULL, &o, &e, "status", "--store", out), 0);
    ck_assert_msg(tu_contains(o, "merged:     from 4 shards"), "%s", o);
    free(o);
    free(e);

    /* report and compare work; compare finds no difference */
    ck_assert_int_eq(TU_NSED(NULL, &o, &e, "report", "--store", out, "-o",
                             report),
                     0);
    free(o);
    free(e);
    ck_assert_int_eq(TU_NSED(NULL, &o, &e, "compare", single, out, "--json"),
                     0);
    cmp = cJSON_Parse(o);
    ck_assert_ptr_nonnull(cmp);
    c = cJSON_GetArrayItem(cJSON_GetObjectItem(cmp, "comparisons"), 0);
    ck_assert_ptr_nonnull(c);
    ck_assert(cJSON_IsTrue(cJSON_GetObjectItem(c, "same_workflow")));
    ck_assert_double_eq(tu_jnum(c, "b", NULL), 0);
    ck_assert_double_eq(tu_jnum(c, "c", NULL), 0);
    ck_assert_double_eq(tu_jnum(c, "only_first", NULL), 0);
    ck_assert_double_eq(tu_jnum(c, "only_other", NULL), 0);
    ck_assert_double_eq(tu_jnum(c, "diff", NULL), 0);
    cJSON_Delete(cmp);
    free(o);
    free(e);

    /* merging again replaces the earlier merge with the same store */
    sx = tu_nsed_export(out);
    tx = export_fmt(sim.url, out, "traces");
    ck_assert_msg(merge(out, dirs, NSHARDS, NULL, &err) == 0, "merge: %s", err);
    ck_assert_msg(tu_contains(err, "replaced"), "%s", err);
    free(err);
    mx = tu_nsed_export(out);
    ck_assert_str_eq(mx, sx);
    ck_assert(!exists(mpath));
    free(mx);
    mx = export_fmt(sim.url, out, "traces");
    ck_assert_str_eq(mx, tx);
    free(mx);
    free(tx);

    /* a normal unsharded store: the same run on it sends nothing */
    ck_assert_double_eq(run_store(&sim, wf, q, out, NULL, NULL, NULL, 0), 0);
    mx = tu_nsed_export(out);
    ck_assert_str_eq(mx, sx);
    free(mx);
    free(sx);
    tu_sim_stop(&sim);
    for (int k = 0; k < NSHARDS; k++)
        free(dirs[k]);
    free(wf);
    free(q);
    free(single);
    free(out);
    free(report);
    free(mpath);
    free(run_single);
    free(run_merged);
}
END_TEST

/* ---- refusals ------------------------------------------------------------- */

/* merge must exit want with a message holding every one of the texts
 * (NULL-terminated). */
static void refused(const char *out, char *const *shards, size_t n,
                    const char *extra, int want, ...)
{
    char *err = NULL, *mpath;
    int rc = merge(out, shards, n, extra, &err);
    va_list ap;
    const char *s;

    ck_assert_msg(rc == want, "merge: exit %d, want %d: %s", rc, want, err);
    va_start(ap, want);
    while ((s = va_arg(ap, const char *)) != NULL)
        ck_assert_msg(tu_contains(err, s), "no \"%s\" in: %s", s, err);
    va_end(ap);
    mpath = merging_of(out);
    ck_assert_msg(!exists(mpath), "a refused merge left %s", mpath);
    free(mpath);
    free(err);
}

/* cp -a src dst */
static void copy_dir(const char *src, const char *dst)
{
    char *argv[] = {"/bin/cp", "-a", (char *)src, (char *)dst, NULL};

    ck_assert_int_eq(tu_run(argv, NULL, NULL), 0);
}

typedef struct plant {
    const char *id;        /* a question to add, or NULL */
    unsigned char key[32]; /* a ledger key to take or to overwrite */
    bool have_key;
    char *val; /* the ledger record read (malloc'd) */
} plant;

static int first_ledger(const void *key, size_t klen, const void *val,
                        size_t vlen, void *arg)
{
    plant *p = arg;

    ck_assert_uint_eq(klen, 32);
    memcpy(p->key, key, 32);
    p->have_key = true;
    p->val = strndup(val, vlen);
    return 1;
}

static int plant_read_fn(store_txn *t, void *arg, nsed_err *err)
{
    (void)err;
    return store_scan(t, STORE_LEDGER, NULL, 0, NULL, 0, first_ledger, arg) < 0;
}

static int plant_get_fn(store_txn *t, void *arg, nsed_err *err)
{
    plant *p = arg;
    const void *v;
    size_t vl;

    (void)err;
    ck_assert_int_eq(store_get(t, STORE_LEDGER, p->key, 32, &v, &vl), 0);
    p->val = strndup(v, vl);
    return 0;
}

static int plant_write_fn(store_txn *t, void *arg, nsed_err *err)
{
    plant *p = arg;
    char rec[256];

    (void)err;
    if (p->id) {
        snprintf(rec, sizeof rec,
                 "{\"id\":\"%s\",\"question\":\"planted\","
                 "\"seq\":100000}",
                 p->id);
        return store_put(t, STORE_QUESTIONS, p->id, strlen(p->id), rec,
                         strlen(rec));
    }
    return store_put(t, STORE_LEDGER, p->key, 32, "{\"other\":1}", 11);
}

/* The record an ingest killed between its write batches leaves in its
 * store (questions_store.c), as if it had started at the top. */
static int forge_unfinished_fn(store_txn *t, void *arg, nsed_err *err)
{
    (void)arg;
    (void)err;
    return store_put(t, STORE_META, "ingest_partial", 14, "{\"from\":100000}",
                     15);
}

/* Run fn on the store in dir (for writing when write). */
static void with_store(const char *dir, bool write, store_txn_fn fn, plant *p)
{
    store_opts ro = {STORE_RDONLY, 0};
    nsed_err err = {0};
    store *st = NULL;

    ck_assert_msg(store_open(dir, write ? NULL : &ro, &st, &err) == 0, "%s",
                  err.msg);
    ck_assert_msg((write ? store_write(st, fn, p, &err)
                         : store_read(st, fn, p, &err)) == 0,
                  "%s", err.msg);
    store_close(st);
}

START_TEST(refusals_name_the_directory)
{
    char *wf = write_wf(), *q = write_questions("q.jsonl", 20);
    char *extra = tu_path(tu_tmp, "extra.jsonl");
    char *out = tu_path(tu_tmp, "out"), *full = tu_path(tu_tmp, "full");
    char *plain = tu_path(tu_tmp, "plain"), *dirs[NSHARDS], *set[8];
    char *bad = tu_path(tu_tmp, "bad"), *unf = tu_path(tu_tmp, "s2u");
    char *text, *before, *after, *o = NULL, *e = NULL, msg[1024];
    size_t in2 = questions_in_shard(20, 2, NSHARDS);
    cJSON *st;
    tu_sim sim;

    tu_sim_start(&sim, DEMO_SIM, NULL, NULL);
    run_shards(&sim, wf, q, dirs);
    run_store(&sim, wf, q, plain, NULL, NULL, NULL, 0);

    /* missing shards: exit 1 */
    set[0] = dirs[0];
    set[1] = dirs[2];
    refused(out, set, 2, NULL, 1, "missing shards: 1, 3 of 4", NULL);
    ck_assert(!exists(out));
    /* an index twice: exit 2, both directories named */
    set[0] = dirs[0], set[1] = dirs[1], set[2] = dirs[1], set[3] = dirs[2];
    set[4] = dirs[3];
    refused(out, set, 5, NULL, 2, "shard 1/4 is given twice", dirs[1], NULL);
    /* another seed, another workflow, another N */
    set[0] = dirs[0], set[2] = dirs[2], set[3] = dirs[3];
    set[1] = bad;
    run_store(&sim, wf, q, bad, "1/4", "--seed", "7", 0);
    refused(out, set, 4, NULL, 2, bad, "seed", NULL);
    tu_rmrf(bad);
    run_store(&sim, wf, q, bad, "1/4", "--set", "rounds.max=2", 0);
    refused(out, set, 4, NULL, 2, bad, "workflow hash", NULL);
    tu_rmrf(bad);
    run_store(&sim, wf, q, bad, "1/3", NULL, NULL, 0);
    refused(out, set, 4, NULL, 2, bad, "shard count", NULL);
    tu_rmrf(bad);
    /* not a shard; not a store */
    set[1] = plain;
    refused(out, set, 4, NULL, 2, plain, "is not a shard", NULL);
    set[1] = bad;
    refused(out, set, 4, NULL, 2, bad, "no nsed store", NULL);
    /* another question file ingested into one shard */
    text = tu_read_file(DEMO_Q, NULL);
    tu_write_file(extra, strstr(text, "\"demo-030\"") - 7, (size_t)-1);
    free(text);
    run_store(&sim, wf, q, bad, "1/4", NULL, NULL, 0);
    ck_assert_int_eq(TU_NSED(sim.url, &o, &e, "ingest", wf, "--questions",
                             extra, "--store", bad, "--shard", "1/4"),
                     0);
    free(o);
    free(e);
    refused(out, set, 4, NULL, 2, bad, "ingested different question files",
            NULL);
    tu_rmrf(bad);

    /* a question that hashes to another shard: exit 2 */
    copy_dir(dirs[0], bad);
    {
        char id[32];
        plant p = {id, {0}, false, NULL};
        int i = 0;

        do
            snprintf(id, sizeof id, "planted-%d", i++);
        while (shard_of(id, NSHARDS) != 1);
        with_store(bad, true, plant_write_fn, &p);
        set[0] = bad, set[1] = dirs[1], set[2] = dirs[2], set[3] = dirs[3];
        snprintf(msg, sizeof msg,
                 "holds question \"%s\", which belongs to "
                 "shard 1",
                 id);
        refused(out, set, 4, NULL, 2, bad, msg, NULL);
    }
    tu_rmrf(bad);

    /* a shard an ingest was killed in, between its batches: exit 2 */
    copy_dir(dirs[1], bad);
    with_store(bad, true, forge_unfinished_fn, NULL);
    set[0] = dirs[0], set[1] = bad, set[2] = dirs[2], set[3] = dirs[3];
    refused(out, set, 4, NULL, 2, bad, "an ingest into it did not finish",
            NULL);
    tu_rmrf(bad);

    /* a ledger key in two shards with other bytes: the first kept, said */
    copy_dir(dirs[1], bad);
    {
        plant p = {NULL, {0}, false, NULL}, back = {NULL, {0}, false, NULL};
        char *e2 = NULL;

        with_store(dirs[0], false, plant_read_fn, &p);
        ck_assert(p.have_key);
        with_store(bad, true, plant_write_fn, &p);
        set[0] = dirs[0], set[1] = bad, set[2] = dirs[2], set[3] = dirs[3];
        ck_assert_int_eq(merge(out, set, 4, NULL, &e2), 0);
        ck_assert_msg(tu_contains(e2, "1 ledger records differ between "
                                      "shards"),
                      "%s", e2);
        free(e2);
        memcpy(back.key, p.key, 32);
        with_store(out, false, plant_get_fn, &back);
        ck_assert_str_eq(back.val, p.val);
        free(p.val);
        free(back.val);
        tu_rmrf(out);
    }
    tu_rmrf(bad);

    /* OUT holding a run store or a shard: exit 2, left as it was */
    before = tu_nsed_export(plain);
    refused(plain, dirs, NSHARDS, NULL, 2, plain, "no nsed merge made", NULL);
    after = tu_nsed_export(plain);
    ck_assert_str_eq(after, before);
    free(before);
    free(after);
    refused(dirs[0], dirs, NSHARDS, NULL, 2, dirs[0], "it is a shard", NULL);

    /* an unfinished shard: exit 1, with the counts (computed here) */
    ck_assert_uint_ge(in2, 2);
    run_store(&sim, wf, q, unf, "2/4", "--limit", "1", 0);
    set[0] = dirs[0], set[1] = dirs[1], set[2] = unf, set[3] = dirs[3];
    snprintf(msg, sizeof msg,
             "shard 2/4 (%s) is unfinished: %zu of %zu questions have no "
             "result; run its nsed run command again",
             unf, in2 - 1, in2);
    refused(out, set, 4, NULL, 1, msg, NULL);

    /* --partial merges it; the unfinished questions are resumable there */
    ck_assert_int_eq(merge(out, set, 4, "--partial", NULL), 0);
    st = tu_nsed_status(out);
    ck_assert_double_eq(tu_jnum(st, "questions", "total"), 20);
    ck_assert_double_eq(tu_jnum(st, "questions", "not_started"),
                        (double)(in2 - 1));
    cJSON_Delete(st);
    run_store(&sim, wf, q, out, NULL, NULL, NULL, 0);
    ck_assert_int_eq(merge(full, dirs, NSHARDS, NULL, NULL), 0);
    before = tu_nsed_export(full);
    after = tu_nsed_export(out);
    ck_assert_str_eq(after, before);
    free(before);
    free(after);

    /* a merge never replaces a store a process is writing (its lock held
     * here), nor deletes a leftover OUT.merging holding foreign files */
    {
        char *lock = tu_path(full, "nsed.lock"), *mp = merging_of(full);
        char *foreign = tu_path(mp, "notes.txt");
        int fd = open(lock, O_RDONLY);

        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(flock(fd, LOCK_EX), 0);
        refused(full, dirs, NSHARDS, NULL, 1, full, "open for writing", NULL);
        close(fd);
        ck_assert_int_eq(mkdir(mp, 0755), 0);
        tu_write_file(foreign, "mine", (size_t)-1);
        ck_assert_int_eq(merge(full, dirs, NSHARDS, NULL, &o), 2);
        ck_assert_msg(tu_contains(o, "notes.txt, which nsed did not make"),
                      "%s", o);
        free(o);
        ck_assert(exists(foreign));
        free(lock);
        free(mp);
        free(foreign);
    }

    tu_sim_stop(&sim);
    for (int k = 0; k < NSHARDS; k++)
        free(dirs[k]);
    free(wf);
    free(q);
    free(extra);
    free(out);
    free(full);
    free(plain);
    free(bad);
    free(unf);
}
END_TEST

/* ---- kill -9 and run again ------------------------------------------------ */

static pid_t spawn_merge(const char *out, char *const *dirs)
{
    pid_t pid = fork();

    ck_assert(pid >= 0);
    if (pid == 0) {
        char *argv[] = {NSED_BIN, "merge",   (char *)out, dirs[0],
                        dirs[1],  dirs[2],   dirs[3],     "--batch",
                        "1",      "--quiet", NULL};
        FILE *null = freopen("/dev/null", "w", stdout);

        (void)null;
        null = freopen("/dev/null", "w", stderr);
        (void)null;
        execv(NSED_BIN, argv);
        _exit(127);
    }
    return pid;
}

START_TEST(kill_and_rerun)
{
    char *wf = write_wf(), *q = write_questions("q.jsonl", 120);
    char *out = tu_path(tu_tmp, "out"), *mpath = merging_of(out);
    char *dirs[NSHARDS], *ref, *got, *err = NULL;
    unsigned seed = (unsigned)getpid() ^ (unsigned)tu_now_ms();
    int mid = 0, tries = 0, status;
    double t0, span_ms;
    tu_sim sim;

    tu_sim_start(&sim, DEMO_SIM, NULL, NULL);
    run_shards(&sim, wf, q, dirs);
    tu_sim_stop(&sim);
    t0 = tu_now_ms();
    ck_assert_msg(merge(out, dirs, NSHARDS, "--batch=1", &err) == 0, "%s", err);
    span_ms = tu_now_ms() - t0;
    free(err);
    fprintf(stderr,
            "test_merge: merging 4 shards of 120 questions one "
            "record per transaction took %.0f ms (kill seed %u)\n",
            span_ms, seed);
    ref = tu_nsed_export(out);
    srand(seed);
    /* until 5 kills landed while OUT.merging was being built */
    for (; mid < 5 && tries < 60; tries++) {
        pid_t pid;

        if (tries % 2 == 0)
            tu_rmrf(out); /* a first merge: rename; else the swap */
        pid = spawn_merge(out, dirs);
        tu_sleep_ms(span_ms * 1.2 * rand() / RAND_MAX);
        kill(pid, SIGKILL);
        ck_assert(waitpid(pid, &status, 0) == pid);
        mid += exists(mpath);
        ck_assert_msg(merge(out, dirs, NSHARDS, NULL, &err) == 0, "rerun: %s",
                      err);
        free(err);
        ck_assert(!exists(mpath));
        got = tu_nsed_export(out);
        ck_assert_str_eq(got, ref);
        free(got);
    }
    fprintf(stderr, "test_merge: %d kills, %d of them mid-merge\n", tries, mid);
    ck_assert_int_ge(mid, 1);
    free(ref);
    for (int k = 0; k < NSHARDS; k++)
        free(dirs[k]);
    free(wf);
    free(q);
    free(out);
    free(mpath);
}
END_TEST

/* ---- the pieces merge adds below it ---------------------------------------- */

typedef struct put_arg {
    const char *json;
    int rc;
    const char *vals[2];
} put_arg;

static int manifest_put_fn(store_txn *t, void *arg, nsed_err *err)
{
    put_arg *a = arg;

    a->rc = store_manifest_put(t, a->json, "merge", "nsed merge o a b", err);
    return a->rc == NSED_EINVAL ? 0 : a->rc;
}

START_TEST(manifest_put_sets_its_own_fields)
{
    char *dir = tu_path(tu_tmp, "st"), *text = NULL;
    put_arg a = {"{\"workflow_hash\":\"abc\",\"seed\":\"7\",\"x\":1,"
                 "\"created_at\":\"old\",\"command_line\":\"nsed run\","
                 "\"history\":[{\"event\":\"open\"},{\"event\":\"open\"}]}",
                 0,
                 {NULL, NULL}};
    store_opts ro = {STORE_RDONLY | STORE_FROZEN, 0}, fz = {STORE_FROZEN, 0};
    nsed_err err = {0};
    store *st = NULL;
    cJSON *m, *h;

    ck_assert_int_eq(store_open(dir, NULL, &st, &err), 0);
    ck_assert_int_eq(store_write(st, manifest_put_fn, &a, &err), 0);
    ck_assert_int_eq(a.rc, 0);
    a.json = "[1]";
    ck_assert_int_eq(store_write(st, manifest_put_fn, &a, &err), 0);
    ck_assert_int_eq(a.rc, NSED_EINVAL);
    store_close(st);
    /* STORE_FROZEN is for read-only opens; on a local disk it is one */
    ck_assert_int_eq(store_open(dir, &fz, &st, &err), NSED_EINVAL);
    ck_assert_int_eq(store_open(dir, &ro, &st, &err), 0);
    ck_assert_int_eq(store_manifest_json(st, &text, &err), 0);
    store_close(st);
    m = cJSON_Parse(text);
    ck_assert_str_eq(cJSON_GetObjectItem(m, "workflow_hash")->valuestring,
                     "abc");
    ck_assert_double_eq(tu_jnum(m, "x", NULL), 1);
    ck_assert_double_eq(tu_jnum(m, "schema_version", NULL), 2);
    ck_assert_str_eq(cJSON_GetObjectItem(m, "created_at")->valuestring, "old");
    ck_assert_str_eq(cJSON_GetObjectItem(m, "command_line")->valuestring,
                     "nsed merge o a b");
    ck_assert(cJSON_IsString(cJSON_GetObjectItem(m, "nsed_version")));
    h = cJSON_GetObjectItem(m, "history");
    ck_assert_int_eq(cJSON_GetArraySize(h), 1);
    ck_assert_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(h, 0), "event")
                         ->valuestring,
                     "merge");
    ck_assert_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(h, 0),
                                         "command_line")
                         ->valuestring,
                     "nsed merge o a b");
    cJSON_Delete(m);
    free(text);
    free(dir);
}
END_TEST

static int merge_own_fn(store_txn *t, void *arg, nsed_err *err)
{
    put_arg *a = arg;

    (void)err;
    for (int i = 0; i < 2 && a->vals[i]; i++) {
        a->rc = telemetry_merge_own(t, "alpha", a->vals[i], strlen(a->vals[i]));
        if (a->rc)
            return 0;
    }
    return 0;
}

static int read_model_fn(store_txn *t, void *arg, nsed_err *err)
{
    char **out = arg;
    const void *v;
    size_t vl;
    store_key key;

    (void)err;
    ck_assert_int_eq(store_keys_telemetry(STORE_KEYS_MODEL, "alpha", &key), 0);
    ck_assert_int_eq(store_get(t, STORE_TELEMETRY, key.bytes, key.len, &v, &vl),
                     0);
    *out = strndup(v, vl);
    return 0;
}

START_TEST(model_counts_are_summed)
{
    char *dir = tu_path(tu_tmp, "st"), *text = NULL;
    put_arg a = {NULL,
                 0,
                 {"{\"gen\":{\"n\":3,\"k\":2},\"ver\":{\"n\":4,\"k\":2.5},"
                  "\"usage\":{\"seat_rounds\":6,\"calls\":12,"
                  "\"cost_usd\":0.25}}",
                  "{\"gen\":{\"n\":5,\"k\":1},\"usage\":{\"seat_rounds\":1,"
                  "\"calls\":2,\"cost_usd\":0.5}}"}};
    nsed_err err = {0};
    store *st = NULL;
    cJSON *m;

    ck_assert_int_eq(store_open(dir, NULL, &st, &err), 0);
    ck_assert_int_eq(store_write(st, merge_own_fn, &a, &err), 0);
    ck_assert_int_eq(a.rc, 0);
    /* a negative count is no counts record */
    a.vals[0] = "{\"gen\":{\"n\":-1}}";
    a.vals[1] = NULL;
    ck_assert_int_eq(store_write(st, merge_own_fn, &a, &err), 0);
    ck_assert_int_eq(a.rc, NSED_EINVAL);
    ck_assert_int_eq(store_read(st, read_model_fn, &text, &err), 0);
    store_close(st);
    m = cJSON_Parse(text);
    ck_assert_double_eq(tu_jnum(m, "gen", "n"), 8);
    ck_assert_double_eq(tu_jnum(m, "gen", "k"), 3);
    ck_assert_double_eq(tu_jnum(m, "ver", "n"), 4);
    ck_assert_double_eq(tu_jnum(m, "ver", "k"), 2.5);
    ck_assert_double_eq(tu_jnum(m, "usage", "seat_rounds"), 7);
    ck_assert_double_eq(tu_jnum(m, "usage", "calls"), 14);
    ck_assert_double_eq(tu_jnum(m, "usage", "cost_usd"), 0.75);
    cJSON_Delete(m);
    free(text);
    free(dir);
}
END_TEST

Suite *tu_suite(void)
{
    Suite *s = suite_create("merge");
    TCase *tc = tcase_create("merge"), *tp = tcase_create("pieces");

    tcase_add_checked_fixture(tc, tu_tmp_setup, tu_tmp_teardown);
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, merged_reads_as_single);
    tcase_add_test(tc, refusals_name_the_directory);
    tcase_add_test(tc, kill_and_rerun);
    tcase_add_checked_fixture(tp, tu_tmp_setup, tu_tmp_teardown);
    tcase_add_test(tp, manifest_put_sets_its_own_fields);
    tcase_add_test(tp, model_counts_are_summed);
    suite_add_tcase(s, tp);
    suite_add_tcase(s, tc);
    return s;
}
