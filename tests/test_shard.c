/* Shards of a run (issue 14, item 1): `nsed run|ingest --shard K/N`.
 *
 *   - The shard of an id is the first 8 bytes of its SHA-256, big-endian,
 *     modulo N: checked against a digest worked out with sha256sum and
 *     against Python's hashlib over every demo id and several N.
 *   - Four shard stores of the demo partition it: each holds exactly the
 *     questions Python puts in its shard, the union of their exports is
 *     the single run's export, line for line, and the server answered as
 *     many requests for the four as for the single run.
 *   - A shard numbers its questions base + position in the file, so a
 *     second, overlapping file continues after the first, re-ingesting a
 *     file adds nothing, and the "ingested" record lists each file once
 *     with the sha256 sha256sum gives.
 *   - A shard store refuses another shard, another count or no --shard;
 *     a store that is not a shard refuses --shard; auto/N takes K from
 *     SLURM_ARRAY_TASK_ID (ignoring SLURM_ARRAY_TASK_COUNT) or
 *     JOB_COMPLETION_INDEX; bad values are usage errors (exit 2).
 */
#include "pipeline/questions/questions.h"
#include "store/store.h"
#include "testutil.h"

#include <check.h>
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DEMO_WF NSED_SOURCE_DIR "/workflows/demo.yaml"
#define DEMO_Q NSED_SOURCE_DIR "/workflows/demo-questions.jsonl"
#define DEMO_SIM NSED_SOURCE_DIR "/tests/sim/configs/demo-sim.yaml"
#define PYTHON "/usr/bin/python3"

#define NQUESTIONS 40

/* Lines [from, to) of the demo's questions, as tu_tmp/name. */
static char *questions_file(const char *name, int from, int to)
{
    char *all = tu_read_file(DEMO_Q, NULL), *p = all, *start = NULL, *path;
    int line = 0;

    ck_assert(all != NULL);
    while (*p && line < to) {
        if (line == from && !start)
            start = p;
        if (*p++ == '\n')
            line++;
    }
    ck_assert_int_eq(line, to);
    ck_assert(start != NULL);
    path = tu_path(tu_tmp, name);
    tu_write_file(path, start, (size_t)(p - start));
    free(all);
    return path;
}

/* The ids of a questions file, in file order (NULL-terminated). */
static char **file_ids(const char *path, size_t *n)
{
    char *text = tu_read_file(path, NULL), *line, *save = NULL;
    char **ids = calloc(256, sizeof *ids);
    size_t k = 0;

    ck_assert(text != NULL && ids != NULL);
    for (line = strtok_r(text, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        cJSON *j = cJSON_Parse(line);
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(j, "id");

        ck_assert(cJSON_IsString(id) && k < 255);
        ids[k++] = strdup(id->valuestring);
        cJSON_Delete(j);
    }
    free(text);
    *n = k;
    return ids;
}

static void free_ids(char **ids)
{
    for (size_t i = 0; ids[i]; i++)
        free(ids[i]);
    free(ids);
}

/* Python's shard of every id of the file, for n shards, one per line in
 * file order: computed with hashlib, not with nsed. */
static int *python_shards(const char *path, unsigned n, size_t count)
{
    static const char script[] =
        "import hashlib, json, sys\n"
        "n = int(sys.argv[2])\n"
        "for line in open(sys.argv[1], encoding='utf-8'):\n"
        "    if line.strip():\n"
        "        d = hashlib.sha256(json.loads(line)['id'].encode()).digest()\n"
        "        print(int.from_bytes(d[:8], 'big') % n)\n";
    char nbuf[16], *out = NULL, *err = NULL, *p;
    char *argv[] = {PYTHON, "-c", (char *)script, (char *)path, nbuf, NULL};
    int *v = calloc(count, sizeof *v);
    int rc;

    snprintf(nbuf, sizeof nbuf, "%u", n);
    rc = tu_run(argv, &out, &err);
    ck_assert_msg(rc == 0, "python3: exit %d: %s", rc, err);
    p = out;
    for (size_t i = 0; i < count; i++) {
        char *end;

        v[i] = (int)strtol(p, &end, 10);
        ck_assert_msg(end != p, "python3 gave %zu of %zu shards", i, count);
        p = end;
    }
    free(out);
    free(err);
    return v;
}

START_TEST(shard_of_is_sha256_prefix_mod_n)
{
    /* printf q1 | sha256sum: c75de8c1b7c3ae52... = 14365894305091137106 */
    static const struct {
        const char *id;
        uint32_t n, want;
    } hand[] = {{"q1", 4, 2}, {"q1", 7, 4}, {"q1", 1000, 106}, {"q1", 1, 0}};
    static const unsigned ns[] = {2, 3, 4, 7, 16, 1000};
    char *path = questions_file("all.jsonl", 0, 120);
    size_t count;
    char **ids = file_ids(path, &count);

    for (size_t i = 0; i < sizeof hand / sizeof hand[0]; i++) {
        uint32_t got = 99;

        ck_assert_int_eq(questions_shard_of(hand[i].id, hand[i].n, &got), 0);
        ck_assert_uint_eq(got, hand[i].want);
    }
    ck_assert_int_eq(count, 120);
    for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++) {
        int *want = python_shards(path, ns[k], count);

        for (size_t i = 0; i < count; i++) {
            uint32_t got;

            ck_assert_int_eq(questions_shard_of(ids[i], ns[k], &got), 0);
            ck_assert_msg((int)got == want[i], "%s of %u: nsed %u, python %d",
                          ids[i], ns[k], got, want[i]);
        }
        free(want);
    }
    free_ids(ids);
    free(path);
}
END_TEST

/* The store's question order: ids by sequence number. */
typedef struct order {
    size_t n;
    uint64_t seq[256];
    char *id[256];
} order;

static int order_visit(const void *key, size_t klen, const void *val,
                       size_t vlen, void *arg)
{
    order *o = arg;

    ck_assert_uint_eq(klen, 8);
    ck_assert(o->n < 256);
    o->seq[o->n] = store_key_u64(key);
    o->id[o->n] = strndup(val, vlen);
    o->n++;
    return 0;
}

static int order_fn(store_txn *txn, void *arg, nsed_err *err)
{
    (void)err;
    return store_scan(txn, STORE_QORDER, NULL, 0, NULL, 0, order_visit, arg);
}

static int ingested_fn(store_txn *txn, void *arg, nsed_err *err)
{
    (void)err;
    return questions_ingested_json(txn, arg);
}

/* The order of the store in dir, and its "ingested" record (or NULL). */
static void read_order(const char *dir, order *o, char **ingested)
{
    store_opts so = {.flags = STORE_RDONLY};
    store *st = NULL;
    nsed_err err = {0};

    memset(o, 0, sizeof *o);
    ck_assert_msg(store_open(dir, &so, &st, &err) == 0, "%s", err.msg);
    ck_assert_msg(store_read(st, order_fn, o, &err) == 0, "%s", err.msg);
    if (ingested) {
        *ingested = NULL;
        if (store_read(st, ingested_fn, ingested, &err) != 0)
            *ingested = NULL;
    }
    store_close(st);
}

static void free_order(order *o)
{
    for (size_t i = 0; i < o->n; i++)
        free(o->id[i]);
}

/* Position of id in ids, or -1. */
static long index_of(char **ids, size_t n, const char *id)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(ids[i], id) == 0)
            return (long)i;
    return -1;
}

/* The lines of text, sorted, as one string (for comparing exports as
 * sets of lines). */
static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static char *sorted_lines(const char *text)
{
    char *copy = strdup(text), *save = NULL, *line, *out;
    char **v = calloc(1024, sizeof *v);
    size_t n = 0, len = 0;

    ck_assert(copy && v);
    for (line = strtok_r(copy, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        ck_assert(n < 1024);
        v[n++] = line;
        len += strlen(line) + 1;
    }
    qsort(v, n, sizeof *v, cmp_str);
    out = calloc(len + 1, 1);
    ck_assert(out != NULL);
    len = 0;
    for (size_t i = 0; i < n; i++) {
        size_t k = strlen(v[i]);

        memcpy(out + len, v[i], k);
        out[len + k] = '\n';
        len += k + 1;
    }
    free(v);
    free(copy);
    return out;
}

static void run_ok(const char *url, const char *q, const char *dir,
                   const char *shard)
{
    char *out = NULL, *err = NULL;
    int rc = shard ? TU_NSED(url, &out, &err, "run", DEMO_WF, "--questions", q,
                             "--store", dir, "--shard", shard, "--quiet")
                   : TU_NSED(url, &out, &err, "run", DEMO_WF, "--questions", q,
                             "--store", dir, "--quiet");

    ck_assert_msg(rc == 0, "run %s: exit %d: %s", dir, rc, err);
    free(out);
    free(err);
}

START_TEST(four_shards_partition_the_run)
{
    tu_sim sim;
    char *q = questions_file("q.jsonl", 0, NQUESTIONS);
    char *single = tu_path(tu_tmp, "single"), *whole, *joined, *a, *b;
    size_t count, total = 0, len = 0;
    char **ids = file_ids(q, &count);
    int *want = python_shards(q, 4, count);
    double req_single, req_shards;

    tu_sim_start(&sim, DEMO_SIM, NULL, NULL);
    run_ok(sim.url, q, single, NULL);
    req_single = tu_sim_total_requests(&sim);
    whole = tu_nsed_export(single);
    joined = calloc(strlen(whole) + 1, 1);
    ck_assert(joined != NULL);
    for (unsigned k = 0; k < 4; k++) {
        char name[16], spec[16], *dir, *ex;
        order o;
        long last = -1;
        size_t mine = 0;

        snprintf(name, sizeof name, "shard%u", k);
        snprintf(spec, sizeof spec, "%u/4", k);
        dir = tu_path(tu_tmp, name);
        run_ok(sim.url, q, dir, spec);
        read_order(dir, &o, NULL);
        /* exactly Python's shard k, each at its position in the file */
        for (size_t i = 0; i < o.n; i++) {
            long at = index_of(ids, count, o.id[i]);

            ck_assert_msg(at >= 0, "%s: unknown id %s", name, o.id[i]);
            ck_assert_int_eq(want[at], (int)k);
            ck_assert_uint_eq(o.seq[i], (uint64_t)at);
            ck_assert(at > last);
            last = at;
        }
        for (size_t i = 0; i < count; i++)
            mine += want[i] == (int)k;
        ck_assert_uint_eq(o.n, mine);
        total += mine;
        ex = tu_nsed_export(dir);
        ck_assert(len + strlen(ex) <= strlen(whole));
        memcpy(joined + len, ex, strlen(ex));
        len += strlen(ex);
        free(ex);
        free_order(&o);
        free(dir);
    }
    ck_assert_uint_eq(total, count);
    req_shards = tu_sim_total_requests(&sim) - req_single;
    ck_assert(req_single > 0);
    ck_assert_msg(req_shards == req_single, "shards sent %.0f, single %.0f",
                  req_shards, req_single);
    a = sorted_lines(whole);
    b = sorted_lines(joined);
    ck_assert_str_eq(a, b);
    tu_sim_stop(&sim);
    free(a);
    free(b);
    free(joined);
    free(whole);
    free(want);
    free_ids(ids);
    free(single);
    free(q);
}
END_TEST

/* `nsed ingest DEMO_WF --questions q --store dir [--shard spec]` with the
 * extra environment env (NULL-terminated, may be NULL); exit status and
 * stderr (malloc'd, caller frees). */
static int ingest(const char *q, const char *dir, const char *spec,
                  char *const *env, char **err)
{
    char *argv[] = {NSED_BIN,  "ingest",    DEMO_WF,   "--questions", (char *)q,
                    "--store", (char *)dir, "--shard", (char *)spec,  NULL};
    char *noenv[] = {NULL}, *out = NULL;
    int rc;

    if (!spec)
        argv[7] = NULL;
    rc = tu_run_env(argv, env ? env : noenv, &out, err);
    free(out);
    return rc;
}

/* The sha256sum of path, as hex. */
static char *sha256sum(const char *path)
{
    char *argv[] = {"/usr/bin/sha256sum", (char *)path, NULL};
    char *out = NULL;

    ck_assert_int_eq(tu_run(argv, &out, NULL), 0);
    ck_assert(strlen(out) > 64);
    out[64] = '\0';
    return out;
}

START_TEST(second_file_continues_the_order)
{
    char *a = questions_file("a.jsonl", 0, 20);
    char *b = questions_file("b.jsonl", 10, 40);
    char *shard = tu_path(tu_tmp, "s"), *single = tu_path(tu_tmp, "u");
    char *err = NULL, *rec = NULL, *rec2 = NULL, *ha = sha256sum(a),
         *hb = sha256sum(b), expect[512];
    size_t na, nb;
    char **ida = file_ids(a, &na), **idb = file_ids(b, &nb);
    int *wa = python_shards(a, 3, na), *wb = python_shards(b, 3, nb);
    order os, ou;
    size_t j = 0;

    ck_assert_int_eq(ingest(a, shard, "1/3", NULL, &err), 0);
    free(err);
    ck_assert_int_eq(ingest(b, shard, "1/3", NULL, &err), 0);
    free(err);
    ck_assert_int_eq(ingest(a, single, NULL, NULL, &err), 0);
    free(err);
    ck_assert_int_eq(ingest(b, single, NULL, NULL, &err), 0);
    free(err);
    read_order(shard, &os, &rec);
    /* base 0 for a (20 questions), 20 for b: position in the file plus
     * the base, for the questions of shard 1 that each file brought */
    for (size_t i = 0; i < na; i++)
        if (wa[i] == 1) {
            ck_assert(j < os.n);
            ck_assert_str_eq(os.id[j], ida[i]);
            ck_assert_uint_eq(os.seq[j], i);
            j++;
        }
    for (size_t i = 0; i < nb; i++)
        if (wb[i] == 1 && index_of(ida, na, idb[i]) < 0) {
            ck_assert(j < os.n);
            ck_assert_str_eq(os.id[j], idb[i]);
            ck_assert_uint_eq(os.seq[j], 20 + i);
            j++;
        }
    ck_assert_uint_eq(j, os.n);
    snprintf(expect, sizeof expect,
             "{\"files\":[{\"sha256\":\"%s\",\"base\":0,\"count\":20},"
             "{\"sha256\":\"%s\",\"base\":20,\"count\":30}]}",
             ha, hb);
    ck_assert_ptr_nonnull(rec);
    ck_assert_str_eq(rec, expect);
    /* the single store: the same relative order, dense numbers */
    read_order(single, &ou, NULL);
    ck_assert_uint_eq(ou.n, 40);
    j = 0;
    for (size_t i = 0; i < ou.n; i++) {
        ck_assert_uint_eq(ou.seq[i], i);
        if (j < os.n && strcmp(ou.id[i], os.id[j]) == 0)
            j++;
    }
    ck_assert_uint_eq(j, os.n);
    /* the same file again: nothing new, the record unchanged */
    ck_assert_int_eq(ingest(a, shard, "1/3", NULL, &err), 0);
    free(err);
    free_order(&os);
    read_order(shard, &os, &rec2);
    ck_assert_uint_eq(os.n, j);
    ck_assert_str_eq(rec2, expect);
    free_order(&os);
    free_order(&ou);
    free(rec);
    free(rec2);
    free(wa);
    free(wb);
    free_ids(ida);
    free_ids(idb);
    free(ha);
    free(hb);
    free(shard);
    free(single);
    free(a);
    free(b);
}
END_TEST

/* The shard recorded in the manifest of dir, as "K/N" (or "-"). */
static void manifest_shard(const char *dir, char *out, size_t size)
{
    cJSON *j = tu_nsed_status(dir);
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(j, "manifest");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(m, "shard");

    if (sh)
        snprintf(out, size, "%.0f/%.0f", tu_jnum(sh, "index", NULL),
                 tu_jnum(sh, "count", NULL));
    else
        snprintf(out, size, "-");
    cJSON_Delete(j);
}

START_TEST(shard_stores_refuse_other_shards)
{
    char *q = questions_file("q.jsonl", 0, 12);
    char *s = tu_path(tu_tmp, "s"), *u = tu_path(tu_tmp, "u");
    char *err = NULL, *out = NULL, got[32];
    char *argv[] = {NSED_BIN, "status", "--store", s, NULL};

    ck_assert_int_eq(ingest(q, s, "1/4", NULL, &err), 0);
    free(err);
    manifest_shard(s, got, sizeof got);
    ck_assert_str_eq(got, "1/4");
    ck_assert_int_eq(tu_run(argv, &out, NULL), 0);
    ck_assert_msg(tu_contains(out, "\nshard:      1/4 "), "%s", out);
    free(out);

    ck_assert_int_eq(ingest(q, s, "2/4", NULL, &err), 2);
    ck_assert_msg(tu_contains(err, "holds shard 1/4 of a run; this command "
                                   "asks for shard 2/4"),
                  "%s", err);
    free(err);
    ck_assert_int_eq(ingest(q, s, "1/8", NULL, &err), 2);
    ck_assert_msg(tu_contains(err, "asks for shard 1/8"), "%s", err);
    free(err);
    ck_assert_int_eq(ingest(q, s, NULL, NULL, &err), 2);
    ck_assert_msg(tu_contains(err, "give --shard 1/4 (or auto/4)"), "%s", err);
    free(err);
    ck_assert_int_eq(ingest(q, u, NULL, NULL, &err), 0);
    free(err);
    ck_assert_int_eq(ingest(q, u, "0/2", NULL, &err), 2);
    ck_assert_msg(tu_contains(err, "is not a shard"), "%s", err);
    free(err);
    manifest_shard(u, got, sizeof got);
    ck_assert_str_eq(got, "-");
    free(s);
    free(u);
    free(q);
}
END_TEST

START_TEST(auto_takes_the_index_from_the_environment)
{
    static const struct {
        const char *env1, *env2, *want;
    } cases[] = {
        {"SLURM_ARRAY_TASK_ID=3", "SLURM_ARRAY_TASK_COUNT=1", "3/4"},
        {"JOB_COMPLETION_INDEX=2", NULL, "2/4"},
        {"SLURM_ARRAY_TASK_ID=0", "JOB_COMPLETION_INDEX=3", "0/4"},
    };
    static const struct {
        const char *spec, *env, *msg;
    } bad[] = {
        {"auto/4", NULL, "neither SLURM_ARRAY_TASK_ID"},
        {"auto/4", "SLURM_ARRAY_TASK_ID=4",
         "shard 4 (from "
         "SLURM_ARRAY_TASK_ID) does not "
         "exist"},
        {"auto/4", "JOB_COMPLETION_INDEX=x",
         "JOB_COMPLETION_INDEX=\"x\" is "
         "not a shard index"},
        {"4/4", NULL, "indexes are 0..3"},
        {"1/0", NULL, "the count \"0\" is not"},
        {"1/70000", NULL, "1..65536"},
        {"2-4", NULL, "is not K/N"},
        {"x/4", NULL, "the index \"x\" is not"},
    };
    char *q = questions_file("q.jsonl", 0, 12), *err = NULL, got[32];

    /* in case the suite itself runs in a Slurm or Kubernetes job */
    unsetenv("SLURM_ARRAY_TASK_ID");
    unsetenv("JOB_COMPLETION_INDEX");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char name[16], *dir;
        char *env[] = {(char *)cases[i].env1, (char *)cases[i].env2, NULL};

        snprintf(name, sizeof name, "a%zu", i);
        dir = tu_path(tu_tmp, name);
        ck_assert_int_eq(ingest(q, dir, "auto/4", env, &err), 0);
        free(err);
        manifest_shard(dir, got, sizeof got);
        ck_assert_str_eq(got, cases[i].want);
        free(dir);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *dir = tu_path(tu_tmp, "bad");
        char *env[] = {(char *)bad[i].env, NULL};

        ck_assert_int_eq(ingest(q, dir, bad[i].spec, env, &err), 2);
        ck_assert_msg(tu_contains(err, bad[i].msg), "%s: %s", bad[i].spec, err);
        free(err);
        /* a usage error leaves no store behind */
        ck_assert(access(dir, F_OK) != 0);
        free(dir);
    }
    free(q);
}
END_TEST

Suite *tu_suite(void)
{
    Suite *s = suite_create("shard");
    TCase *tc = tcase_create("shard");

    tcase_add_checked_fixture(tc, tu_tmp_setup, tu_tmp_teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, shard_of_is_sha256_prefix_mod_n);
    tcase_add_test(tc, four_shards_partition_the_run);
    tcase_add_test(tc, second_file_continues_the_order);
    tcase_add_test(tc, shard_stores_refuse_other_shards);
    tcase_add_test(tc, auto_takes_the_index_from_the_environment);
    suite_add_tcase(s, tc);
    return s;
}
