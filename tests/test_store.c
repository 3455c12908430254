/* Tests for the LMDB run store: records and scans, durability across a
 * killed writer, map growth, the writer lock, schema versions, the
 * compression of large records (their stored bytes read with LMDB and
 * libzstd directly) and the manifest. Every environment is opened inside the test function (Check
 * forks per test; LMDB must not cross a fork). Helper processes forked by a
 * test report through pipes and exit with _exit(); they never call Check. */
#include "store/store.h"
#include "testutil.h"

#include <cjson/cJSON.h>
#include <lmdb.h>

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

/* ---- helpers ----------------------------------------------------------- */

static store *open_or_fail(const char *dir, unsigned flags, size_t map)
{
    store_opts o = {flags, map};
    nsed_err e = {0};
    store *s = NULL;
    int rc = store_open(dir, &o, &s, &e);

    ck_assert_msg(rc == 0, "store_open(%s): %d %s", dir, rc, e.msg);
    ck_assert_ptr_nonnull(s);
    return s;
}

struct kv {
    enum store_db db;
    const void *key;
    size_t klen;
    const void *val;
    size_t vlen;
};

static int put_one_fn(store_txn *t, void *arg, nsed_err *err)
{
    const struct kv *kv = arg;

    (void)err;
    return store_put(t, kv->db, kv->key, kv->klen, kv->val, kv->vlen);
}

static int put_str(store *s, enum store_db db, const char *k, const char *v)
{
    struct kv kv = {db, k, strlen(k), v, strlen(v)};

    return store_write(s, put_one_fn, &kv, NULL);
}

struct getter {
    enum store_db db;
    const void *key;
    size_t klen;
    int rc;
    char *val; /* malloc'd copy */
    size_t vlen;
};

static int get_fn(store_txn *t, void *arg, nsed_err *err)
{
    struct getter *g = arg;
    const void *v;
    size_t n;

    (void)err;
    g->rc = store_get(t, g->db, g->key, g->klen, &v, &n);
    if (g->rc == 0) {
        g->val = malloc(n + 1);
        memcpy(g->val, v, n);
        g->val[n] = '\0';
        g->vlen = n;
    }
    return 0;
}

/* Returns store_get's code; *out gets a malloc'd copy on success. */
static int get_copy(store *s, enum store_db db, const void *k, size_t klen,
                    char **out, size_t *vlen)
{
    struct getter g = {db, k, klen, 0, NULL, 0};

    ck_assert_int_eq(store_read(s, get_fn, &g, NULL), 0);
    if (g.rc == 0) {
        *out = g.val;
        if (vlen)
            *vlen = g.vlen;
    }
    return g.rc;
}

static void assert_value(store *s, enum store_db db, const char *k,
                         const char *want)
{
    char *v = NULL;

    ck_assert_int_eq(get_copy(s, db, k, strlen(k), &v, NULL), 0);
    ck_assert_str_eq(v, want);
    free(v);
}

struct counter {
    enum store_db db;
    size_t n;
};

static int count_fn(store_txn *t, void *arg, nsed_err *err)
{
    struct counter *c = arg;

    (void)err;
    return store_count(t, c->db, &c->n);
}

static size_t count_of(store *s, enum store_db db)
{
    struct counter c = {db, 0};

    ck_assert_int_eq(store_read(s, count_fn, &c, NULL), 0);
    return c.n;
}

/* Deterministic record content for index i, so that a reader can check
 * every byte of what a (possibly killed) writer committed. */
static size_t rec_len(uint64_t i)
{
    return 64 + (size_t)((i * 37) % 1500);
}

static void rec_fill(uint64_t i, unsigned char *b, size_t n)
{
    for (size_t j = 0; j < n; j++)
        b[j] = (unsigned char)(i * 131 + j * 7 + 1);
}

/* n bytes that do not compress (xorshift64 from seed): a record of them
 * takes its full length in the map, whatever store_put compresses. */
static void noise_fill(uint64_t seed, unsigned char *b, size_t n)
{
    uint64_t x = seed * 0x9E3779B97F4A7C15u + 1;

    for (size_t j = 0; j < n; j++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b[j] = (unsigned char)(x >> 56);
    }
}

static int rec_ok(uint64_t i, const unsigned char *b, size_t n)
{
    if (n != rec_len(i))
        return 0;
    for (size_t j = 0; j < n; j++)
        if (b[j] != (unsigned char)(i * 131 + j * 7 + 1))
            return 0;
    return 1;
}

static void write_all(int fd, const void *p, size_t n)
{
    const char *c = p;

    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            _exit(90);
        c += w;
        n -= (size_t)w;
    }
}

/* Read exactly n bytes; 0 on EOF before anything, 1 when complete. */
static int read_all(int fd, void *p, size_t n)
{
    char *c = p;
    size_t got = 0;

    while (got < n) {
        ssize_t r = read(fd, c + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return 0;
        got += (size_t)r;
    }
    return 1;
}

static int wait_exit(pid_t pid)
{
    int st;

    while (waitpid(pid, &st, 0) < 0)
        ck_assert_int_eq(errno, EINTR);
    if (WIFSIGNALED(st))
        return 128 + WTERMSIG(st);
    return WEXITSTATUS(st);
}

/* ---- records ----------------------------------------------------------- */

static int del_fn(store_txn *t, void *arg, nsed_err *err)
{
    const char *k = arg;

    (void)err;
    return store_del(t, STORE_RESULTS, k, strlen(k));
}

START_TEST(put_get_del_count)
{
    char *dir = tu_mkdtemp();
    store *s = open_or_fail(dir, 0, 0);
    char *v = NULL;

    ck_assert_str_eq(store_dir(s), dir);
    ck_assert_uint_eq(count_of(s, STORE_RESULTS), 0);
    ck_assert_int_eq(put_str(s, STORE_RESULTS, "q1", "first"), 0);
    ck_assert_int_eq(put_str(s, STORE_RESULTS, "q2", "second"), 0);
    ck_assert_int_eq(put_str(s, STORE_QUESTIONS, "q1", "question"), 0);
    ck_assert_uint_eq(count_of(s, STORE_RESULTS), 2);
    ck_assert_uint_eq(count_of(s, STORE_QUESTIONS), 1);
    assert_value(s, STORE_RESULTS, "q1", "first");
    assert_value(s, STORE_QUESTIONS, "q1", "question");

    /* overwrite replaces, count unchanged */
    ck_assert_int_eq(put_str(s, STORE_RESULTS, "q1", "again"), 0);
    assert_value(s, STORE_RESULTS, "q1", "again");
    ck_assert_uint_eq(count_of(s, STORE_RESULTS), 2);

    ck_assert_int_eq(store_write(s, del_fn, "q1", NULL), 0);
    ck_assert_int_eq(get_copy(s, STORE_RESULTS, "q1", 2, &v, NULL),
                     NSED_ENOTFOUND);
    ck_assert_ptr_null(v);
    ck_assert_int_eq(store_write(s, del_fn, "q1", NULL), NSED_ENOTFOUND);
    ck_assert_uint_eq(count_of(s, STORE_RESULTS), 1);
    /* databases are separate namespaces */
    assert_value(s, STORE_QUESTIONS, "q1", "question");

    store_close(s);
    s = open_or_fail(dir, 0, 0);
    assert_value(s, STORE_RESULTS, "q2", "second");
    ck_assert_uint_eq(count_of(s, STORE_RESULTS), 1);
    store_close(s);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

struct limits {
    int put0, put512, put511, get0, del0, empty_val, null_val, bad_db;
};

static int limits_fn(store_txn *t, void *arg, nsed_err *err)
{
    struct limits *l = arg;
    char k[STORE_KEY_MAX + 1];
    const void *v;
    size_t n;

    (void)err;
    memset(k, 'k', sizeof k);
    l->put0 = store_put(t, STORE_STATE, k, 0, "v", 1);
    l->put512 = store_put(t, STORE_STATE, k, STORE_KEY_MAX + 1, "v", 1);
    l->put511 = store_put(t, STORE_STATE, k, STORE_KEY_MAX, "v", 1);
    l->get0 = store_get(t, STORE_STATE, k, 0, &v, &n);
    l->del0 = store_del(t, STORE_STATE, k, 0);
    l->empty_val = store_put(t, STORE_STATE, "e", 1, NULL, 0);
    l->null_val = store_put(t, STORE_STATE, "n", 1, NULL, 5);
    l->bad_db = store_put(t, STORE_DB_COUNT, "x", 1, "v", 1);
    return 0;
}

static int put_in_read_fn(store_txn *t, void *arg, nsed_err *err)
{
    int *rc = arg;

    (void)err;
    rc[0] = store_put(t, STORE_STATE, "x", 1, "v", 1);
    rc[1] = store_del(t, STORE_STATE, "e", 1);
    return 0;
}

static int nested_fn(store_txn *t, void *arg, nsed_err *err)
{
    store *s = arg;
    nsed_err e = {0};
    int rc;

    (void)t;
    (void)err;
    rc = store_write(s, put_one_fn, NULL, &e);
    if (rc != NSED_EINVAL || !tu_contains(e.msg, "nested"))
        return 1;
    rc = store_read(s, put_one_fn, NULL, &e);
    return rc == NSED_EINVAL ? 0 : 2;
}

START_TEST(key_and_context_limits)
{
    char *dir = tu_mkdtemp();
    store *s = open_or_fail(dir, 0, 0);
    struct limits l;
    char k[STORE_KEY_MAX];
    char *v = NULL;
    size_t vlen = 99;
    int rr[2];
    nsed_err e = {0};

    ck_assert_int_eq(store_write(s, limits_fn, &l, NULL), 0);
    ck_assert_int_eq(l.put0, NSED_EINVAL);
    ck_assert_int_eq(l.put512, NSED_EINVAL);
    ck_assert_int_eq(l.put511, 0);
    ck_assert_int_eq(l.get0, NSED_EINVAL);
    ck_assert_int_eq(l.del0, NSED_EINVAL);
    ck_assert_int_eq(l.empty_val, 0);
    ck_assert_int_eq(l.null_val, NSED_EINVAL);
    ck_assert_int_eq(l.bad_db, NSED_EINVAL);
    memset(k, 'k', sizeof k);
    ck_assert_int_eq(get_copy(s, STORE_STATE, k, sizeof k, &v, NULL), 0);
    ck_assert_str_eq(v, "v");
    free(v);
    v = NULL;
    ck_assert_int_eq(get_copy(s, STORE_STATE, "e", 1, &v, &vlen), 0);
    ck_assert_uint_eq(vlen, 0);
    free(v);
    ck_assert_uint_eq(count_of(s, STORE_STATE), 2);

    /* writes are refused in a read transaction */
    ck_assert_int_eq(store_read(s, put_in_read_fn, rr, NULL), 0);
    ck_assert_int_eq(rr[0], NSED_EINVAL);
    ck_assert_int_eq(rr[1], NSED_EINVAL);
    ck_assert_uint_eq(count_of(s, STORE_STATE), 2);

    /* transactions do not nest */
    ck_assert_int_eq(store_write(s, nested_fn, s, NULL), 0);
    ck_assert_int_eq(store_read(s, nested_fn, s, NULL), 0);
    store_close(s);

    /* a read-only store refuses store_write with a message */
    s = open_or_fail(dir, STORE_RDONLY, 0);
    ck_assert_int_eq(store_write(s, limits_fn, &l, &e), NSED_EINVAL);
    ck_assert(tu_contains(e.msg, "read-only"));
    ck_assert_uint_eq(count_of(s, STORE_STATE), 2);
    store_close(s);
    store_close(NULL);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

struct seen {
    char keys[16][16];
    size_t n;
    size_t stop_after; /* 0 = never */
};

static int collect_fn(const void *key, size_t klen, const void *val,
                      size_t vlen, void *arg)
{
    struct seen *s = arg;

    (void)val;
    (void)vlen;
    ck_assert_uint_lt(s->n, 16);
    ck_assert_uint_lt(klen, 16);
    /* keys hold a NUL separator: show it as '|' for readable asserts */
    for (size_t i = 0; i < klen; i++) {
        char c = ((const char *)key)[i];
        s->keys[s->n][i] = c ? c : '|';
    }
    s->keys[s->n][klen] = '\0';
    s->n++;
    if (s->stop_after && s->n == s->stop_after)
        return 7;
    return 0;
}

struct scan_args {
    const void *prefix;
    size_t plen;
    const void *start;
    size_t slen;
    struct seen *seen;
    int rc;
};

static int scan_fn(store_txn *t, void *arg, nsed_err *err)
{
    struct scan_args *a = arg;

    (void)err;
    a->rc = store_scan(t, STORE_STATE, a->prefix, a->plen, a->start, a->slen,
                       collect_fn, a->seen);
    return 0;
}

static struct seen scan(store *s, const void *prefix, size_t plen,
                        const void *start, size_t slen, size_t stop_after,
                        int *rc)
{
    struct seen seen;
    struct scan_args a = {prefix, plen, start, slen, &seen, 0};

    memset(&seen, 0, sizeof seen);
    seen.stop_after = stop_after;
    ck_assert_int_eq(store_read(s, scan_fn, &a, NULL), 0);
    *rc = a.rc;
    return seen;
}

START_TEST(scan_prefix_and_start)
{
    char *dir = tu_mkdtemp();
    store *s = open_or_fail(dir, 0, 0);
    static const char *keys[] = {"q2\0a", "q1\0c", "q10\0a", "q1\0a", "q1\0b",
                                 "p9", "q1"};
    static const size_t klens[] = {4, 4, 5, 4, 4, 2, 2};
    struct seen r;
    int rc;

    for (size_t i = 0; i < 7; i++) {
        struct kv kv = {STORE_STATE, keys[i], klens[i], "v", 1};
        ck_assert_int_eq(store_write(s, put_one_fn, &kv, NULL), 0);
    }
    /* everything, in key order (shorter key first on a common prefix) */
    r = scan(s, NULL, 0, NULL, 0, 0, &rc);
    ck_assert_int_eq(rc, 0);
    ck_assert_uint_eq(r.n, 7);
    ck_assert_str_eq(r.keys[0], "p9");
    ck_assert_str_eq(r.keys[1], "q1");
    ck_assert_str_eq(r.keys[2], "q1|a");
    ck_assert_str_eq(r.keys[3], "q1|b");
    ck_assert_str_eq(r.keys[4], "q1|c");
    ck_assert_str_eq(r.keys[5], "q10|a");
    ck_assert_str_eq(r.keys[6], "q2|a");

    /* one question's sub-keys: "q1\0" must not match "q10\0a" */
    r = scan(s, "q1\0", 3, NULL, 0, 0, &rc);
    ck_assert_int_eq(rc, 0);
    ck_assert_uint_eq(r.n, 3);
    ck_assert_str_eq(r.keys[0], "q1|a");
    ck_assert_str_eq(r.keys[2], "q1|c");

    /* start inside the prefix range */
    r = scan(s, "q1\0", 3, "q1\0b", 4, 0, &rc);
    ck_assert_uint_eq(r.n, 2);
    ck_assert_str_eq(r.keys[0], "q1|b");
    ck_assert_str_eq(r.keys[1], "q1|c");
    /* start before the prefix: the prefix decides */
    r = scan(s, "q1\0", 3, "a", 1, 0, &rc);
    ck_assert_uint_eq(r.n, 3);
    ck_assert_str_eq(r.keys[0], "q1|a");
    /* start past the prefix range: nothing */
    r = scan(s, "q1\0", 3, "q1\0d", 4, 0, &rc);
    ck_assert_int_eq(rc, 0);
    ck_assert_uint_eq(r.n, 0);
    /* start without prefix: resume point */
    r = scan(s, NULL, 0, "q10", 3, 0, &rc);
    ck_assert_uint_eq(r.n, 2);
    ck_assert_str_eq(r.keys[0], "q10|a");
    ck_assert_str_eq(r.keys[1], "q2|a");
    /* an empty start is no start */
    r = scan(s, "q1\0", 3, "", 0, 0, &rc);
    ck_assert_int_eq(rc, 0);
    ck_assert_uint_eq(r.n, 3);
    /* a prefix nothing has */
    r = scan(s, "zz", 2, NULL, 0, 0, &rc);
    ck_assert_int_eq(rc, 0);
    ck_assert_uint_eq(r.n, 0);
    /* the visitor stops the scan and its value comes back */
    r = scan(s, NULL, 0, NULL, 0, 2, &rc);
    ck_assert_int_eq(rc, 7);
    ck_assert_uint_eq(r.n, 2);
    store_close(s);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

struct u64_seen {
    uint64_t v[16];
    size_t n;
};

static int u64_collect(const void *key, size_t klen, const void *val,
                       size_t vlen, void *arg)
{
    struct u64_seen *s = arg;

    ck_assert_uint_eq(klen, 8);
    ck_assert_uint_eq(vlen, 8);
    ck_assert_mem_eq(key, val, 8);
    ck_assert_uint_lt(s->n, 16);
    s->v[s->n++] = store_key_u64(key);
    return 0;
}

static int u64_scan_fn(store_txn *t, void *arg, nsed_err *err)
{
    (void)err;
    return store_scan(t, STORE_QORDER, NULL, 0, NULL, 0, u64_collect, arg);
}

static int u64_put_fn(store_txn *t, void *arg, nsed_err *err)
{
    const uint64_t *v = arg;
    unsigned char k[8];

    (void)err;
    store_u64_key(*v, k);
    return store_put(t, STORE_QORDER, k, 8, k, 8);
}

START_TEST(u64_keys_sort_numerically)
{
    static const uint64_t vals[] = {
        256, UINT64_MAX, 0, 65535, (uint64_t)1 << 63, 1, (uint64_t)1 << 32,
        255, 4294967295u};
    static const uint64_t sorted[] = {
        0, 1, 255, 256, 65535, 4294967295u, (uint64_t)1 << 32,
        (uint64_t)1 << 63, UINT64_MAX};
    unsigned char k[8];
    char *dir = tu_mkdtemp();
    store *s = open_or_fail(dir, 0, 0);
    struct u64_seen seen = {{0}, 0};

    store_u64_key(0x0102030405060708u, k);
    ck_assert_mem_eq(k, "\x01\x02\x03\x04\x05\x06\x07\x08", 8);
    ck_assert_uint_eq(store_key_u64(k), 0x0102030405060708u);
    store_u64_key(UINT64_MAX, k);
    ck_assert_uint_eq(store_key_u64(k), UINT64_MAX);

    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++)
        ck_assert_int_eq(store_write(s, u64_put_fn, (void *)&vals[i], NULL), 0);
    ck_assert_int_eq(store_read(s, u64_scan_fn, &seen, NULL), 0);
    ck_assert_uint_eq(seen.n, 9);
    for (size_t i = 0; i < 9; i++)
        ck_assert_uint_eq(seen.v[i], sorted[i]);
    store_close(s);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* ---- durability -------------------------------------------------------- */

static int fail_after_puts_fn(store_txn *t, void *arg, nsed_err *err)
{
    int *calls = arg;

    (*calls)++;
    ck_assert_int_eq(store_put(t, STORE_RESULTS, "a", 1, "1", 1), 0);
    ck_assert_int_eq(store_put(t, STORE_RESULTS, "b", 1, "2", 1), 0);
    ck_assert_int_eq(store_del(t, STORE_RESULTS, "keep", 4), 0);
    return nsed_error(err, NSED_EINVAL, "q.jsonl:3:1: bad question");
}

START_TEST(fn_error_aborts_everything)
{
    char *dir = tu_mkdtemp();
    store *s = open_or_fail(dir, 0, 0);
    nsed_err e = {0};
    int calls = 0;

    ck_assert_int_eq(put_str(s, STORE_RESULTS, "keep", "kept"), 0);
    ck_assert_int_eq(store_write(s, fail_after_puts_fn, &calls, &e),
                     NSED_EINVAL);
    ck_assert_int_eq(calls, 1);
    ck_assert_int_eq(e.code, NSED_EINVAL);
    ck_assert_str_eq(e.msg, "q.jsonl:3:1: bad question");
    ck_assert_uint_eq(count_of(s, STORE_RESULTS), 1);
    assert_value(s, STORE_RESULTS, "keep", "kept");
    store_close(s);
    /* and nothing of it reached the disk either */
    s = open_or_fail(dir, 0, 0);
    ck_assert_uint_eq(count_of(s, STORE_RESULTS), 1);
    assert_value(s, STORE_RESULTS, "keep", "kept");
    store_close(s);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* The holder keeps a raw read-only LMDB environment open on the store for
 * the whole test, as a `nsed status` would: with another process attached,
 * LMDB does not reset its lock table on the next open, so a killed
 * process's reader slot stays behind until mdb_reader_check clears it. */
struct holder_cmd {
    char op; /* 'c' count slots of pid, 'q' quit */
    int pid;
};

struct slot_count {
    int pid;
    int n;
};

static int count_slot_line(const char *msg, void *ctx)
{
    struct slot_count *c = ctx;
    char *end;
    long pid;

    errno = 0;
    pid = strtol(msg, &end, 10);
    if (!errno && end != msg && pid == c->pid)
        c->n++;
    return 0;
}

static void holder_main(const char *dir, int cmd_fd, int rep_fd)
{
    MDB_env *env;
    struct holder_cmd cmd;
    char ready = 'r';

    if (mdb_env_create(&env) || mdb_env_set_maxdbs(env, STORE_DB_COUNT) ||
        mdb_env_open(env, dir, MDB_RDONLY, 0644))
        _exit(10);
    write_all(rep_fd, &ready, 1);
    while (read_all(cmd_fd, &cmd, sizeof cmd)) {
        struct slot_count c = {cmd.pid, 0};
        if (cmd.op == 'q')
            break;
        if (mdb_reader_list(env, count_slot_line, &c) < 0)
            _exit(11);
        write_all(rep_fd, &c.n, sizeof c.n);
    }
    mdb_env_close(env);
    _exit(0);
}

static int holder_count(int cmd_fd, int rep_fd, pid_t pid)
{
    struct holder_cmd cmd = {'c', (int)pid};
    int n = -1;

    write_all(cmd_fd, &cmd, sizeof cmd);
    ck_assert(read_all(rep_fd, &n, sizeof n));
    return n;
}

struct rec_put {
    uint64_t i;
};

static int rec_put_fn(store_txn *t, void *arg, nsed_err *err)
{
    const struct rec_put *r = arg;
    unsigned char k[8], v[2048];
    size_t n = rec_len(r->i);

    (void)err;
    store_u64_key(r->i, k);
    rec_fill(r->i, v, n);
    return store_put(t, STORE_LEDGER, k, 8, v, n);
}

/* Commit records one transaction at a time, reporting each committed index
 * to the parent, until killed. Reads between writes give this process a
 * reader slot, which its death leaves behind. */
static void writer_main(const char *dir, int prog_fd)
{
    nsed_err e = {0};
    store *s = NULL;

    if (store_open(dir, NULL, &s, &e) != 0)
        _exit(20);
    for (uint64_t i = 0;; i++) {
        struct rec_put r = {i};
        struct counter c = {STORE_LEDGER, 0};
        if (store_write(s, rec_put_fn, &r, &e) != 0)
            _exit(21);
        write_all(prog_fd, &i, sizeof i);
        if (store_read(s, count_fn, &c, &e) != 0 || c.n != i + 1)
            _exit(22);
    }
}

struct verify {
    uint64_t upto; /* every index < upto must be present */
    uint64_t present;
    int bad;
};

static int verify_collect(const void *key, size_t klen, const void *val,
                          size_t vlen, void *arg)
{
    struct verify *v = arg;

    if (klen != 8 || store_key_u64(key) != v->present ||
        !rec_ok(v->present, val, vlen))
        v->bad++;
    v->present++;
    return 0;
}

static int verify_fn(store_txn *t, void *arg, nsed_err *err)
{
    (void)err;
    return store_scan(t, STORE_LEDGER, NULL, 0, NULL, 0, verify_collect, arg);
}

START_TEST(killed_writer_keeps_committed)
{
    char *dir = tu_mkdtemp();
    store *s = open_or_fail(dir, 0, 0);
    int hcmd[2], hrep[2], prog[2];
    pid_t holder, writer;
    uint64_t i, last = 0, reports = 0;
    struct verify v = {0, 0, 0};
    char ready;
    int st;

    store_close(s);
    ck_assert_int_eq(pipe(hcmd), 0);
    ck_assert_int_eq(pipe(hrep), 0);
    holder = fork();
    ck_assert_int_ge(holder, 0);
    if (holder == 0) {
        close(hcmd[1]);
        close(hrep[0]);
        holder_main(dir, hcmd[0], hrep[1]);
    }
    close(hcmd[0]);
    close(hrep[1]);
    ck_assert(read_all(hrep[0], &ready, 1));

    ck_assert_int_eq(pipe(prog), 0);
    writer = fork();
    ck_assert_int_ge(writer, 0);
    if (writer == 0) {
        close(prog[0]);
        writer_main(dir, prog[1]);
    }
    close(prog[1]);
    /* let it commit a while, then kill it without warning */
    while (reports < 60 && read_all(prog[0], &i, sizeof i)) {
        ck_assert_uint_eq(i, reports);
        reports++;
    }
    ck_assert_uint_eq(reports, 60);
    ck_assert_int_eq(kill(writer, SIGKILL), 0);
    st = wait_exit(writer);
    ck_assert_int_eq(st, 128 + SIGKILL);
    /* reports it sent before dying are commits too */
    while (read_all(prog[0], &i, sizeof i)) {
        ck_assert_uint_eq(i, reports);
        reports++;
    }
    close(prog[0]);
    last = reports - 1;

    /* its reader slot outlived it ... */
    ck_assert_int_ge(holder_count(hcmd[1], hrep[0], writer), 1);
    /* ... the lock did not, and opening clears the slot */
    s = open_or_fail(dir, 0, 0);
    ck_assert_int_eq(holder_count(hcmd[1], hrep[0], writer), 0);

    ck_assert_int_eq(store_read(s, verify_fn, &v, NULL), 0);
    ck_assert_int_eq(v.bad, 0);
    /* every reported commit is there; at most the one in flight beyond */
    ck_assert_uint_ge(v.present, last + 1);
    ck_assert_uint_le(v.present, last + 2);

    /* and the store goes on accepting writes */
    {
        struct rec_put r = {v.present};
        ck_assert_int_eq(store_write(s, rec_put_fn, &r, NULL), 0);
    }
    store_close(s);
    s = open_or_fail(dir, STORE_RDONLY, 0);
    memset(&v, 0, sizeof v);
    ck_assert_int_eq(store_read(s, verify_fn, &v, NULL), 0);
    ck_assert_int_eq(v.bad, 0);
    ck_assert_uint_ge(v.present, last + 2);
    store_close(s);

    {
        struct holder_cmd q = {'q', 0};
        write_all(hcmd[1], &q, sizeof q);
    }
    ck_assert_int_eq(wait_exit(holder), 0);
    close(hcmd[1]);
    close(hrep[0]);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* ---- map growth -------------------------------------------------------- */

#define BIG_RECS 512
#define BIG_LEN 8192

struct big_txn {
    int calls;
};

/* Append BIG_RECS records after the sequence number kept in the store. A
 * replay after MDB_MAP_FULL must start again from the committed number,
 * so duplicates or holes would show up in the final keys. */
static int big_fn(store_txn *t, void *arg, nsed_err *err)
{
    struct big_txn *b = arg;
    static const char seqkey[] = "seq";
    unsigned char k[8], *val;
    const void *cur;
    size_t n;
    uint64_t seq = 0;
    int rc;

    (void)err;
    b->calls++;
    rc = store_get(t, STORE_TELEMETRY, seqkey, 3, &cur, &n);
    if (rc == 0) {
        ck_assert_uint_eq(n, 8);
        seq = store_key_u64(cur);
    } else if (rc != NSED_ENOTFOUND) {
        return rc;
    }
    val = malloc(BIG_LEN);
    for (uint64_t i = seq; i < seq + BIG_RECS; i++) {
        store_u64_key(i, k);
        noise_fill(i, val, BIG_LEN);
        memcpy(val, k, 8);
        val[BIG_LEN - 1] = (unsigned char)(i & 0xFF);
        rc = store_put(t, STORE_RESULTS, k, 8, val, BIG_LEN);
        if (rc)
            break;
    }
    free(val);
    if (rc)
        return rc;
    store_u64_key(seq + BIG_RECS, k);
    return store_put(t, STORE_TELEMETRY, seqkey, 3, k, 8);
}

struct big_check {
    uint64_t next;
    int bad;
};

static int big_collect(const void *key, size_t klen, const void *val,
                       size_t vlen, void *arg)
{
    struct big_check *c = arg;
    const unsigned char *b = val;

    if (klen != 8 || store_key_u64(key) != c->next || vlen != BIG_LEN ||
        memcmp(b, key, 8) != 0 || b[BIG_LEN - 1] != (c->next & 0xFF))
        c->bad++;
    c->next++;
    return 0;
}

static int big_check_fn(store_txn *t, void *arg, nsed_err *err)
{
    (void)err;
    return store_scan(t, STORE_RESULTS, NULL, 0, NULL, 0, big_collect, arg);
}

static void check_big(store *s, uint64_t want)
{
    struct big_check c = {0, 0};
    char *seq = NULL;
    size_t n = 0;

    ck_assert_int_eq(store_read(s, big_check_fn, &c, NULL), 0);
    ck_assert_int_eq(c.bad, 0);
    ck_assert_uint_eq(c.next, want);
    ck_assert_int_eq(get_copy(s, STORE_TELEMETRY, "seq", 3, &seq, &n), 0);
    ck_assert_uint_eq(n, 8);
    ck_assert_uint_eq(store_key_u64((unsigned char *)seq), want);
    free(seq);
}

struct small_txn {
    int calls;
    uint64_t i;
};

static int small_fn(store_txn *t, void *arg, nsed_err *err)
{
    struct small_txn *sm = arg;
    struct rec_put r = {sm->i};

    sm->calls++;
    return rec_put_fn(t, &r, err);
}

START_TEST(map_grows_from_tiny)
{
    char *dir = tu_mkdtemp();
    store *s = open_or_fail(dir, STORE_NOSYNC, 64 << 10);
    struct big_txn b = {0};
    struct small_txn sm = {0, 0};
    struct verify v = {0, 0, 0};
    size_t grown;
    /* enough that the small records alone outgrow what the big one left */
    const int ntx = 8000;

    /* the map starts at the request (raised to 16 pages where pages are
     * bigger than 4 KiB) */
    ck_assert_uint_eq(store_map_size(s),
                      sysconf(_SC_PAGESIZE) > 4096
                          ? (size_t)sysconf(_SC_PAGESIZE) * 16 : 64 << 10);
    /* one transaction of 4 MiB in a 64 KiB map: replayed until it fits */
    ck_assert_int_eq(store_write(s, big_fn, &b, NULL), 0);
    ck_assert_int_gt(b.calls, 1);
    ck_assert_uint_ge(store_map_size(s), (size_t)BIG_RECS * BIG_LEN);
    check_big(s, BIG_RECS);

    /* many small transactions, each replayed when it hits the map's end */
    for (sm.i = 0; sm.i < (uint64_t)ntx; sm.i++)
        ck_assert_int_eq(store_write(s, small_fn, &sm, NULL), 0);
    ck_assert_int_gt(sm.calls, ntx);
    /* and a second big one on top */
    b.calls = 0;
    ck_assert_int_eq(store_write(s, big_fn, &b, NULL), 0);
    check_big(s, 2 * BIG_RECS);
    grown = store_map_size(s);
    ck_assert_uint_gt(grown, (size_t)2 * BIG_RECS * BIG_LEN);
    store_close(s);

    /* reopened with the same tiny request: the larger recorded map wins */
    s = open_or_fail(dir, 0, 64 << 10);
    ck_assert_uint_ge(store_map_size(s), grown);
    check_big(s, 2 * BIG_RECS);
    ck_assert_int_eq(store_read(s, verify_fn, &v, NULL), 0);
    ck_assert_int_eq(v.bad, 0);
    ck_assert_uint_eq(v.present, (uint64_t)ntx);
    store_close(s);
    /* a reader maps whatever the writer grew to */
    s = open_or_fail(dir, STORE_RDONLY, 0);
    check_big(s, 2 * BIG_RECS);
    store_close(s);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

struct poison {
    int calls;
    int first_fail; /* index of the first failed put on the first call */
    int later_put, later_get, later_count;
};

/* Ignores put failures and returns success anyway: the map-full must still
 * be seen by store_write (kept in the transaction), and everything after
 * the failure must fail too. */
static int careless_fn(store_txn *t, void *arg, nsed_err *err)
{
    struct poison *p = arg;
    unsigned char k[8], val[4000];
    const void *v;
    size_t n;
    int failed = 0;

    (void)err;
    p->calls++;
    noise_fill(7, val, sizeof val);
    for (int i = 0; i < 200; i++) {
        store_u64_key((uint64_t)i, k);
        if (store_put(t, STORE_STATE, k, 8, val, sizeof val) != 0 && !failed) {
            failed = 1;
            if (p->calls == 1) {
                p->first_fail = i;
                p->later_put = store_put(t, STORE_STATE, "z", 1, "z", 1);
                p->later_get = store_get(t, STORE_STATE, k, 8, &v, &n);
                p->later_count = store_count(t, STORE_STATE, &n);
            }
        }
    }
    return 0;
}

START_TEST(failed_put_poisons_txn_and_is_replayed)
{
    char *dir = tu_mkdtemp();
    store *s = open_or_fail(dir, STORE_NOSYNC, 64 << 10);
    struct poison p = {0, -1, 0, 0, 0};

    ck_assert_int_eq(store_write(s, careless_fn, &p, NULL), 0);
    ck_assert_int_gt(p.calls, 1);
    ck_assert_int_ge(p.first_fail, 0);
    ck_assert_int_eq(p.later_put, NSED_ESTORE);
    ck_assert_int_eq(p.later_get, NSED_ESTORE);
    ck_assert_int_eq(p.later_count, NSED_ESTORE);
    ck_assert_uint_eq(count_of(s, STORE_STATE), 200);
    store_close(s);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* A reader opened on a small map must follow when the writer grows it
 * (MDB_MAP_RESIZED). The reader is forked before anything is opened. */
START_TEST(reader_follows_grown_map)
{
    char *dir = tu_mkdtemp();
    int go[2], rep[2];
    pid_t child;
    store *s;
    struct big_txn b = {0};
    size_t counts[2] = {0, 0};
    char c = 'g';

    ck_assert_int_eq(pipe(go), 0);
    ck_assert_int_eq(pipe(rep), 0);
    child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) {
        store *r = NULL;
        nsed_err e = {0};
        char x;
        close(go[1]);
        close(rep[0]);
        if (!read_all(go[0], &x, 1) || store_open(dir, &(store_opts){
                STORE_RDONLY, 0}, &r, &e) != 0)
            _exit(30);
        for (int round = 0; round < 2; round++) {
            struct counter cnt = {STORE_RESULTS, 0};
            if (round == 1 && !read_all(go[0], &x, 1))
                _exit(31);
            if (store_read(r, count_fn, &cnt, &e) != 0)
                _exit(32);
            write_all(rep[1], &cnt.n, sizeof cnt.n);
        }
        store_close(r);
        _exit(0);
    }
    close(go[0]);
    close(rep[1]);
    s = open_or_fail(dir, STORE_NOSYNC, 64 << 10);
    ck_assert_int_eq(put_str(s, STORE_RESULTS, "x", "y"), 0);
    write_all(go[1], &c, 1);
    ck_assert(read_all(rep[0], &counts[0], sizeof counts[0]));
    ck_assert_uint_eq(counts[0], 1);
    ck_assert_int_eq(store_write(s, big_fn, &b, NULL), 0);
    ck_assert_int_gt(b.calls, 1);
    write_all(go[1], &c, 1);
    ck_assert(read_all(rep[0], &counts[1], sizeof counts[1]));
    ck_assert_uint_eq(counts[1], 1 + BIG_RECS);
    ck_assert_int_eq(wait_exit(child), 0);
    store_close(s);
    close(go[1]);
    close(rep[0]);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* ---- the writer lock --------------------------------------------------- */

/* store_writer_active says whether any process holds the writer lock:
 * this handle when it writes; another process that holds it; nobody once
 * that process is gone (the kernel drops a killed writer's flock). And a
 * probe's shared lock, held for a moment, does not turn a writer away. */
START_TEST(writer_lock_probe)
{
    char *dir = tu_mkdtemp(), *lock = tu_path(dir, "nsed.lock");
    int go[2], ready[2], fd;
    bool active = false;
    nsed_err e = {0};
    store *s = open_or_fail(dir, 0, 0);
    pid_t child;
    char c = 'g';

    ck_assert_int_eq(store_writer_active(s, &active, &e), 0);
    ck_assert(active);
    store_close(s);
    s = open_or_fail(dir, STORE_RDONLY, 0);
    active = true;
    ck_assert_int_eq(store_writer_active(s, &active, &e), 0);
    ck_assert(!active);

    /* another process holds the lock as a writer does, then exits */
    ck_assert_int_eq(pipe(go), 0);
    ck_assert_int_eq(pipe(ready), 0);
    child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) {
        char x;
        int lfd = open(lock, O_RDWR);

        if (lfd < 0 || flock(lfd, LOCK_EX | LOCK_NB) != 0)
            _exit(40);
        write_all(ready[1], &c, 1);
        _exit(read_all(go[0], &x, 1) ? 0 : 41);
    }
    ck_assert(read_all(ready[0], &c, 1));
    ck_assert_int_eq(store_writer_active(s, &active, &e), 0);
    ck_assert(active);
    write_all(go[1], &c, 1);
    ck_assert_int_eq(wait_exit(child), 0);
    ck_assert_int_eq(store_writer_active(s, &active, &e), 0);
    ck_assert(!active);
    store_close(s);

    /* a writer that starts while a probe holds the lock for 20 ms */
    fd = open(lock, O_RDONLY);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(flock(fd, LOCK_SH | LOCK_NB), 0);
    child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) {
        store *w = NULL;
        nsed_err ce = {0};
        int rc = store_open(dir, NULL, &w, &ce);

        store_close(w);
        _exit(rc == 0 ? 0 : 42);
    }
    nanosleep(&(struct timespec){0, 20 * 1000 * 1000}, NULL);
    flock(fd, LOCK_UN);
    close(fd);
    ck_assert_int_eq(wait_exit(child), 0);
    free(lock);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

START_TEST(concurrent_writer_refused)
{
    char *dir = tu_mkdtemp();
    int go[2], rep[2];
    pid_t child;
    store *s, *s2 = NULL;
    nsed_err e = {0};
    char c = 'g', pidtext[32], msg[NSED_ERR_MSG_MAX], val[16];
    int crc = 0;

    ck_assert_int_eq(pipe(go), 0);
    ck_assert_int_eq(pipe(rep), 0);
    child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) {
        /* second writer in another process, then a reader beside it */
        store *w = NULL, *r = NULL;
        nsed_err ce = {0};
        struct getter g = {STORE_RESULTS, "q1", 2, 0, NULL, 0};
        char x, out[16] = {0};
        int rc;
        close(go[1]);
        close(rep[0]);
        if (!read_all(go[0], &x, 1))
            _exit(40);
        rc = store_open(dir, NULL, &w, &ce);
        write_all(rep[1], &rc, sizeof rc);
        write_all(rep[1], ce.msg, sizeof ce.msg);
        if (w)
            _exit(41);
        if (store_open(dir, &(store_opts){STORE_RDONLY, 0}, &r, &ce) != 0 ||
            store_read(r, get_fn, &g, &ce) != 0 || g.rc != 0 ||
            g.vlen >= sizeof out)
            _exit(42);
        memcpy(out, g.val, g.vlen);
        write_all(rep[1], out, sizeof out);
        free(g.val);
        store_close(r);
        _exit(0);
    }
    close(go[0]);
    close(rep[1]);
    s = open_or_fail(dir, 0, 0);
    ck_assert_int_eq(put_str(s, STORE_RESULTS, "q1", "committed"), 0);
    write_all(go[1], &c, 1);
    ck_assert(read_all(rep[0], &crc, sizeof crc));
    ck_assert(read_all(rep[0], msg, sizeof msg));
    ck_assert_int_eq(crc, NSED_EBUSY);
    snprintf(pidtext, sizeof pidtext, "(pid %ld)", (long)getpid());
    ck_assert_msg(tu_contains(msg, dir), "%s", msg);
    ck_assert_msg(tu_contains(msg, "is already open for writing by another "
                                   "process"), "%s", msg);
    ck_assert_msg(tu_contains(msg, pidtext), "%s", msg);
    ck_assert(read_all(rep[0], val, sizeof val));
    ck_assert_str_eq(val, "committed");
    ck_assert_int_eq(wait_exit(child), 0);

    /* a second writer in this very process is refused the same way */
    ck_assert_int_eq(store_open(dir, NULL, &s2, &e), NSED_EBUSY);
    ck_assert_ptr_null(s2);
    ck_assert_int_eq(e.code, NSED_EBUSY);
    ck_assert_msg(tu_contains(e.msg, pidtext), "%s", e.msg);
    ck_assert_msg(tu_contains(e.msg, "already open for writing"), "%s", e.msg);
    /* and so is a read-only open beside our own writer (LMDB's locks are
     * per process) */
    memset(&e, 0, sizeof e);
    ck_assert_int_eq(store_open(dir, &(store_opts){STORE_RDONLY, 0}, &s2, &e),
                     NSED_EBUSY);
    ck_assert_ptr_null(s2);
    /* the refused opens did not disturb the writer */
    ck_assert_int_eq(put_str(s, STORE_RESULTS, "q2", "more"), 0);
    store_close(s);

    /* the lock goes with the store */
    s = open_or_fail(dir, 0, 0);
    assert_value(s, STORE_RESULTS, "q2", "more");
    store_close(s);
    close(go[1]);
    close(rep[0]);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* ---- opening: schema, missing stores, directories ----------------------- */

START_TEST(unknown_schema_refused)
{
    char *dir = tu_mkdtemp();
    store *s = open_or_fail(dir, 0, 0), *s2 = NULL;
    nsed_err e = {0};

    assert_value(s, STORE_META, "schema_version", "2");
    ck_assert_int_eq(put_str(s, STORE_META, "schema_version", "999"), 0);
    store_close(s);

    ck_assert_int_eq(store_open(dir, NULL, &s2, &e), NSED_ESCHEMA);
    ck_assert_ptr_null(s2);
    ck_assert_msg(tu_contains(e.msg, "schema version 999"), "%s", e.msg);
    ck_assert_msg(tu_contains(e.msg, "versions 1 to 2"), "%s", e.msg);
    ck_assert_msg(tu_contains(e.msg, "written by a newer nsed"), "%s", e.msg);
    ck_assert_msg(tu_contains(e.msg, dir), "%s", e.msg);
    memset(&e, 0, sizeof e);
    ck_assert_int_eq(store_open(dir, &(store_opts){STORE_RDONLY, 0}, &s2, &e),
                     NSED_ESCHEMA);
    ck_assert_ptr_null(s2);
    ck_assert_msg(tu_contains(e.msg, "999"), "%s", e.msg);

    /* the refused writer released its lock: refused again for the schema,
     * not as busy */
    memset(&e, 0, sizeof e);
    ck_assert_int_eq(store_open(dir, NULL, &s2, &e), NSED_ESCHEMA);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* A store of schema version 1 (no compressed records) reads as it is;
 * a writer records version 2, which an nsed knowing only 1 refuses. */
START_TEST(schema_1_is_read_and_upgraded)
{
    char *dir = tu_mkdtemp();
    store *s = open_or_fail(dir, 0, 0), *s2 = NULL;
    nsed_err e = {0};

    ck_assert_int_eq(put_str(s, STORE_META, "schema_version", "1"), 0);
    store_close(s);
    ck_assert_int_eq(store_open(dir, &(store_opts){STORE_RDONLY, 0}, &s2, &e),
                     0);
    assert_value(s2, STORE_META, "schema_version", "1");
    store_close(s2);
    s2 = NULL;
    ck_assert_int_eq(store_open(dir, NULL, &s2, &e), 0);
    assert_value(s2, STORE_META, "schema_version", "2");
    store_close(s2);
    /* below the oldest version known: refused, and not as newer */
    s = open_or_fail(dir, 0, 0);
    ck_assert_int_eq(put_str(s, STORE_META, "schema_version", "0"), 0);
    store_close(s);
    s2 = NULL;
    ck_assert_int_eq(store_open(dir, NULL, &s2, &e), NSED_ESCHEMA);
    ck_assert_msg(tu_contains(e.msg, "schema version 0"), "%s", e.msg);
    ck_assert_msg(!tu_contains(e.msg, "newer"), "%s", e.msg);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

START_TEST(garbage_schema_refused)
{
    char *dir = tu_mkdtemp();
    store *s = open_or_fail(dir, 0, 0), *s2 = NULL;
    nsed_err e = {0};

    ck_assert_int_eq(put_str(s, STORE_META, "schema_version", "1x"), 0);
    store_close(s);
    ck_assert_int_eq(store_open(dir, NULL, &s2, &e), NSED_ESCHEMA);
    ck_assert_ptr_null(s2);
    ck_assert_msg(tu_contains(e.msg, "unreadable"), "%s", e.msg);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

START_TEST(rdonly_needs_a_store)
{
    char *dir = tu_mkdtemp(), *missing = tu_path(dir, "nope");
    store *s = NULL;
    nsed_err e = {0};
    struct stat st;

    ck_assert_int_eq(store_open(dir, &(store_opts){STORE_RDONLY, 0}, &s, &e),
                     NSED_ENOTFOUND);
    ck_assert_ptr_null(s);
    ck_assert_msg(tu_contains(e.msg, dir), "%s", e.msg);
    ck_assert_int_eq(store_open(missing, &(store_opts){STORE_RDONLY, 0}, &s,
                                &e), NSED_ENOTFOUND);
    ck_assert_ptr_null(s);
    /* a read-only open creates nothing */
    ck_assert_int_ne(stat(missing, &st), 0);
    {
        char *data = tu_path(dir, "data.mdb");
        ck_assert_int_ne(stat(data, &st), 0);
        free(data);
    }
    ck_assert_int_eq(store_open(NULL, NULL, &s, &e), NSED_EINVAL);
    ck_assert_int_eq(store_open("", NULL, &s, &e), NSED_EINVAL);
    ck_assert_ptr_null(s);
    free(missing);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

START_TEST(writer_creates_directories)
{
    char *dir = tu_mkdtemp(), *deep = tu_path(dir, "runs/exp1/shard-0/");
    char *file = tu_path(dir, "plain"), *lock;
    store *s = NULL;
    nsed_err e = {0};
    struct stat st;

    s = open_or_fail(deep, 0, 0);
    ck_assert_int_eq(put_str(s, STORE_RESULTS, "a", "b"), 0);
    /* the lock file names the holder */
    lock = tu_path(deep, "nsed.lock");
    {
        char *text = tu_read_file(lock, NULL);
        char want[32];
        snprintf(want, sizeof want, "%ld\n", (long)getpid());
        ck_assert_str_eq(text, want);
        free(text);
    }
    store_close(s);
    ck_assert_int_eq(stat(deep, &st), 0);
    ck_assert(S_ISDIR(st.st_mode));

    /* a file where the directory should be */
    tu_write_file(file, "x", (size_t)-1);
    s = NULL;
    ck_assert_int_eq(store_open(file, NULL, &s, &e), NSED_EINVAL);
    ck_assert_ptr_null(s);
    ck_assert_msg(tu_contains(e.msg, "not a directory"), "%s", e.msg);
    free(lock);
    free(file);
    free(deep);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* Every descriptor the store holds must be close-on-exec: the runner
 * executes other programs (git), which must not keep the store open. */
START_TEST(descriptors_close_on_exec)
{
    char *dir = tu_mkdtemp();
    store *s = open_or_fail(dir, 0, 0);
    DIR *d = opendir("/proc/self/fd");
    struct dirent *de;
    int seen = 0;

    ck_assert_ptr_nonnull(d);
    while ((de = readdir(d)) != NULL) {
        char link[300], target[PATH_MAX], info[300], *text, *fl;
        ssize_t n;

        if (de->d_name[0] == '.')
            continue;
        snprintf(link, sizeof link, "/proc/self/fd/%s", de->d_name);
        n = readlink(link, target, sizeof target - 1);
        if (n <= 0)
            continue;
        target[n] = '\0';
        if (strncmp(target, dir, strlen(dir)) != 0)
            continue;
        snprintf(info, sizeof info, "/proc/self/fdinfo/%s", de->d_name);
        text = tu_read_file(info, NULL);
        ck_assert_ptr_nonnull(text);
        fl = strstr(text, "flags:");
        ck_assert_ptr_nonnull(fl);
        ck_assert_msg(strtoul(fl + 6, NULL, 8) & O_CLOEXEC,
                      "%s is inheritable", target);
        free(text);
        seen++;
    }
    closedir(d);
    /* data.mdb, lock.mdb and nsed.lock at least */
    ck_assert_int_ge(seen, 3);
    store_close(s);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* ---- manifest ---------------------------------------------------------- */

#define HASH_A "aaaa1111bbbb2222cccc3333dddd4444eeee5555ffff6666aaaa7777bbbb8888"
#define HASH_B "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static cJSON *manifest_of(store *s)
{
    char *text = NULL;
    nsed_err e = {0};
    cJSON *j;

    ck_assert_int_eq(store_manifest_json(s, &text, &e), 0);
    j = cJSON_Parse(text);
    ck_assert_msg(j != NULL, "manifest is not JSON: %s", text);
    free(text);
    return j;
}

static const char *jstr(const cJSON *o, const char *name)
{
    const cJSON *i = cJSON_GetObjectItemCaseSensitive(o, name);

    ck_assert_msg(cJSON_IsString(i), "field %s is not a string", name);
    return i->valuestring;
}

static const cJSON *last_event(const cJSON *man, int *n)
{
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(man, "history");

    ck_assert(cJSON_IsArray(h));
    *n = cJSON_GetArraySize(h);
    return cJSON_GetArrayItem(h, *n - 1);
}

START_TEST(manifest_binds_and_records_history)
{
    char *dir = tu_mkdtemp();
    store *s = open_or_fail(dir, 0, 0);
    store_manifest m = {HASH_A, "name: demo\n", "demo",
                        "{\"MODEL\":\"llama\",\"N\":3}", "abc123",
                        "nsed run demo.yaml", UINT64_MAX - 1};
    nsed_err e = {0};
    char *text = NULL;
    const cJSON *ev, *res;
    cJSON *man;
    int n;

    ck_assert_int_eq(store_manifest_json(s, &text, &e), NSED_ENOTFOUND);
    ck_assert_ptr_null(text);
    ck_assert_msg(tu_contains(e.msg, "never bound"), "%s", e.msg);

    ck_assert_int_eq(store_bind_manifest(s, &m, 0, &e), 0);
    man = manifest_of(s);
    ck_assert_str_eq(jstr(man, "workflow_hash"), HASH_A);
    ck_assert_str_eq(jstr(man, "workflow_name"), "demo");
    ck_assert_str_eq(jstr(man, "workflow_canonical"), "name: demo\n");
    ck_assert_str_eq(jstr(man, "git_commit"), "abc123");
    ck_assert_str_eq(jstr(man, "command_line"), "nsed run demo.yaml");
    /* a uint64 seed survives exactly (it would not as a double) */
    ck_assert_str_eq(jstr(man, "seed"), "18446744073709551614");
    ck_assert_str_eq(jstr(man, "nsed_version"), NSED_VERSION);
    ck_assert_int_eq(
        cJSON_GetObjectItemCaseSensitive(man, "schema_version")->valueint,
        STORE_SCHEMA_VERSION);
    ck_assert_uint_eq(strlen(jstr(man, "created_at")), 20);
    ck_assert_int_eq(jstr(man, "created_at")[10], 'T');
    ck_assert_int_eq(jstr(man, "created_at")[19], 'Z');
    res = cJSON_GetObjectItemCaseSensitive(man, "resolved");
    ck_assert(cJSON_IsObject(res));
    ck_assert_str_eq(jstr(res, "MODEL"), "llama");
    ev = last_event(man, &n);
    ck_assert_int_eq(n, 1);
    ck_assert_str_eq(jstr(ev, "event"), "open");
    ck_assert_str_eq(jstr(ev, "command_line"), "nsed run demo.yaml");
    ck_assert_ptr_null(cJSON_GetObjectItemCaseSensitive(ev, "old_hash"));
    cJSON_Delete(man);

    /* the same workflow again: one more history entry */
    m.command_line = "nsed run demo.yaml --resume";
    ck_assert_int_eq(store_bind_manifest(s, &m, 0, &e), 0);
    man = manifest_of(s);
    ev = last_event(man, &n);
    ck_assert_int_eq(n, 2);
    ck_assert_str_eq(jstr(ev, "command_line"), "nsed run demo.yaml --resume");
    ck_assert_str_eq(jstr(man, "command_line"), "nsed run demo.yaml");
    cJSON_Delete(man);

    /* a different workflow is refused, nothing recorded */
    m.workflow_hash = HASH_B;
    m.resolved_json = NULL;
    ck_assert_int_eq(store_bind_manifest(s, &m, 0, &e), NSED_EMISMATCH);
    ck_assert_int_eq(e.code, NSED_EMISMATCH);
    ck_assert_msg(tu_contains(e.msg, "--allow-workflow-change"), "%s", e.msg);
    ck_assert_msg(tu_contains(e.msg, "was created with workflow "
                                     "aaaa1111bbbb\xE2\x80\xA6"), "%s", e.msg);
    ck_assert_msg(tu_contains(e.msg, "hashes to 0123456789ab\xE2\x80\xA6"),
                  "%s", e.msg);
    ck_assert_msg(tu_contains(e.msg, dir), "%s", e.msg);
    man = manifest_of(s);
    last_event(man, &n);
    ck_assert_int_eq(n, 2);
    ck_assert_str_eq(jstr(man, "workflow_hash"), HASH_A);
    cJSON_Delete(man);

    /* ... unless allowed: the change is recorded and becomes current */
    m.command_line = "nsed run demo2.yaml --allow-workflow-change";
    m.workflow_name = "demo2";
    ck_assert_int_eq(store_bind_manifest(s, &m, 1, &e), 0);
    man = manifest_of(s);
    ck_assert_str_eq(jstr(man, "workflow_hash"), HASH_B);
    ck_assert_str_eq(jstr(man, "workflow_name"), "demo2");
    ck_assert(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(man, "resolved")));
    ev = last_event(man, &n);
    ck_assert_int_eq(n, 3);
    ck_assert_str_eq(jstr(ev, "event"), "workflow_change");
    ck_assert_str_eq(jstr(ev, "old_hash"), HASH_A);
    ck_assert_str_eq(jstr(ev, "new_hash"), HASH_B);
    ck_assert_str_eq(jstr(ev, "command_line"),
                     "nsed run demo2.yaml --allow-workflow-change");
    /* the creation facts stay */
    ck_assert_str_eq(jstr(man, "seed"), "18446744073709551614");
    cJSON_Delete(man);

    /* going back is a change too; the message no longer says "created" */
    m.workflow_hash = HASH_A;
    ck_assert_int_eq(store_bind_manifest(s, &m, 0, &e), NSED_EMISMATCH);
    ck_assert_msg(tu_contains(e.msg, "is bound to workflow 0123456789ab"),
                  "%s", e.msg);
    store_close(s);

    /* durable, and readable by a read-only open */
    s = open_or_fail(dir, STORE_RDONLY, 0);
    man = manifest_of(s);
    ck_assert_str_eq(jstr(man, "workflow_hash"), HASH_B);
    cJSON_Delete(man);
    ck_assert_int_eq(store_bind_manifest(s, &m, 1, &e), NSED_EINVAL);
    store_close(s);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

START_TEST(manifest_rejects_bad_input)
{
    char *dir = tu_mkdtemp();
    store *s = open_or_fail(dir, 0, 0);
    store_manifest m = {HASH_A, NULL, NULL, "{not json", NULL, NULL, 0};
    nsed_err e = {0};
    char *text = NULL;
    cJSON *man;

    ck_assert_int_eq(store_bind_manifest(s, &m, 0, &e), NSED_EINVAL);
    ck_assert_msg(tu_contains(e.msg, "not valid JSON"), "%s", e.msg);
    ck_assert_int_eq(store_manifest_json(s, &text, NULL), NSED_ENOTFOUND);
    m.workflow_hash = NULL;
    ck_assert_int_eq(store_bind_manifest(s, &m, 0, &e), NSED_EINVAL);
    m.workflow_hash = "";
    ck_assert_int_eq(store_bind_manifest(s, &m, 0, &e), NSED_EINVAL);

    /* unknown strings are recorded as null */
    m.workflow_hash = HASH_A;
    m.resolved_json = NULL;
    ck_assert_int_eq(store_bind_manifest(s, &m, 0, &e), 0);
    man = manifest_of(s);
    ck_assert(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(man, "git_commit")));
    ck_assert(cJSON_IsNull(
        cJSON_GetObjectItemCaseSensitive(man, "workflow_canonical")));
    ck_assert_str_eq(jstr(man, "seed"), "0");
    cJSON_Delete(man);
    store_close(s);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

START_TEST(manifest_history_is_bounded)
{
    char *dir = tu_mkdtemp();
    store *s = open_or_fail(dir, STORE_NOSYNC, 0);
    store_manifest m = {HASH_A, "x", "x", NULL, NULL, "run 0", 7};
    char cmd[32], *text;
    const cJSON *h;
    cJSON *man, *hist;
    nsed_err e = {0};

    /* a store resumed a thousand times: seed the history directly rather
     * than binding a thousand times */
    ck_assert_int_eq(store_bind_manifest(s, &m, 0, &e), 0);
    man = manifest_of(s);
    hist = cJSON_GetObjectItemCaseSensitive(man, "history");
    for (int i = 1; i < 1000; i++) {
        cJSON *ev = cJSON_CreateObject();
        snprintf(cmd, sizeof cmd, "run %d", i);
        cJSON_AddStringToObject(ev, "at", "2025-01-01T00:00:00Z");
        cJSON_AddStringToObject(ev, "event", "open");
        cJSON_AddStringToObject(ev, "command_line", cmd);
        cJSON_AddItemToArray(hist, ev);
    }
    text = cJSON_PrintUnformatted(man);
    cJSON_Delete(man);
    ck_assert_int_eq(put_str(s, STORE_META, "manifest", text), 0);
    free(text);

    for (int i = 1000; i < 1010; i++) {
        snprintf(cmd, sizeof cmd, "run %d", i);
        m.command_line = cmd;
        ck_assert_int_eq(store_bind_manifest(s, &m, 0, &e), 0);
    }
    man = manifest_of(s);
    h = cJSON_GetObjectItemCaseSensitive(man, "history");
    ck_assert_int_eq(cJSON_GetArraySize(h), 1000);
    /* the oldest entries went first */
    ck_assert_str_eq(jstr(cJSON_GetArrayItem(h, 0), "command_line"),
                     "run 10");
    ck_assert_str_eq(jstr(cJSON_GetArrayItem(h, 999), "command_line"),
                     "run 1009");
    /* the creation record is kept */
    ck_assert_str_eq(jstr(man, "command_line"), "run 0");
    cJSON_Delete(man);
    store_close(s);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* ---- compression --------------------------------------------------------- */

/* A JSON-like text of n bytes, as the runner's records are: repetitive
 * enough to compress, not one byte repeated. */
static char *json_text(size_t n, unsigned seed)
{
    char *t = malloc(n + 1);
    size_t o = 0;

    ck_assert_ptr_nonnull(t);
    while (o < n) {
        char piece[96];
        int k = snprintf(piece, sizeof piece,
                         "{\"seat\":%u,\"text\":\"answer %u is %u\"},",
                         (unsigned)(o % 7), seed,
                         (unsigned)(o * 2654435761u % 1000));

        for (int i = 0; i < k && o < n; i++)
            t[o++] = piece[i];
    }
    t[0] = '{';
    t[n] = '\0';
    return t;
}

/* The value of key in database name as LMDB holds it (no store open in
 * this process): malloc'd into *out, its length in *len. */
static int raw_get(const char *dir, const char *name, const void *key,
                   size_t klen, unsigned char **out, size_t *len)
{
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    MDB_dbi dbi;
    MDB_val k = {klen, (void *)key}, v;
    int rc;

    ck_assert_int_eq(mdb_env_create(&env), 0);
    ck_assert_int_eq(mdb_env_set_maxdbs(env, STORE_DB_COUNT), 0);
    ck_assert_int_eq(mdb_env_open(env, dir, MDB_RDONLY, 0644), 0);
    ck_assert_int_eq(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
    ck_assert_int_eq(mdb_dbi_open(txn, name, 0, &dbi), 0);
    rc = mdb_get(txn, dbi, &k, &v);
    if (rc == 0) {
        *out = malloc(v.mv_size + 1);
        memcpy(*out, v.mv_data, v.mv_size);
        *len = v.mv_size;
    }
    mdb_txn_abort(txn);
    mdb_env_close(env);
    return rc;
}

/* Put key -> val into database name with LMDB directly, as an older nsed
 * (or damage) left it. */
static void raw_put(const char *dir, const char *name, const void *key,
                    size_t klen, const void *val, size_t vlen)
{
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    MDB_dbi dbi;
    MDB_val k = {klen, (void *)key}, v = {vlen, (void *)val};

    ck_assert_int_eq(mdb_env_create(&env), 0);
    ck_assert_int_eq(mdb_env_set_maxdbs(env, STORE_DB_COUNT), 0);
    ck_assert_int_eq(mdb_env_open(env, dir, 0, 0644), 0);
    ck_assert_int_eq(mdb_txn_begin(env, NULL, 0, &txn), 0);
    ck_assert_int_eq(mdb_dbi_open(txn, name, 0, &dbi), 0);
    ck_assert_int_eq(mdb_put(txn, dbi, &k, &v, 0), 0);
    ck_assert_int_eq(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
}

static size_t be32(const unsigned char *p)
{
    return (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
}

/* The stored form of a value that was put as want (n bytes): compressed
 * (the 0xFE header, method 1, the length, a zstd frame that libzstd
 * itself decompresses to want) or not (want as it is). */
static void assert_stored(const char *dir, const char *name, const char *key,
                          size_t klen, const void *want, size_t n,
                          int compressed)
{
    unsigned char *raw = NULL, *back;
    size_t len = 0, got;

    ck_assert_int_eq(raw_get(dir, name, key, klen, &raw, &len), 0);
    if (!compressed) {
        ck_assert_uint_eq(len, n);
        ck_assert(memcmp(raw, want, n) == 0);
        free(raw);
        return;
    }
    ck_assert_uint_lt(len, n);
    ck_assert_uint_eq(raw[0], 0xFE);
    ck_assert_uint_eq(raw[1], 1);
    ck_assert_uint_eq(be32(raw + 2), n);
    back = malloc(n);
    got = ZSTD_decompress(back, n, raw + 6, len - 6);
    ck_assert(!ZSTD_isError(got));
    ck_assert_uint_eq(got, n);
    ck_assert(memcmp(back, want, n) == 0);
    free(back);
    free(raw);
}

static void put_or_fail(store *s, enum store_db db, const void *k, size_t klen,
                        const void *v, size_t vlen)
{
    struct kv kv = {db, k, klen, v, vlen};
    nsed_err e = {0};

    ck_assert_msg(store_write(s, put_one_fn, &kv, &e) == 0, "%s", e.msg);
}

static void assert_reads(store *s, enum store_db db, const void *k, size_t klen,
                         const void *want, size_t n)
{
    char *v = NULL;
    size_t vlen = 0;

    ck_assert_int_eq(get_copy(s, db, k, klen, &v, &vlen), 0);
    ck_assert_uint_eq(vlen, n);
    ck_assert(memcmp(v, want, n) == 0);
    free(v);
}

/* Large text records are stored compressed from STORE_COMPRESS_MIN (512)
 * bytes up, in the databases of text records, and read back as put; the
 * checkpoint of a question, META's values, incompressible bytes and
 * values under the threshold are stored as they are. */
START_TEST(compressed_values_round_trip)
{
    char *dir = tu_mkdtemp();
    store *s = open_or_fail(dir, STORE_NOSYNC, 0);
    char *big = json_text(4000, 1), *at = json_text(512, 2),
         *under = json_text(511, 3);
    unsigned char noise[4000];
    /* a round and a checkpoint of question q1 (store_keys.h's keys) */
    static const char round_key[] = "q1\0r\0\0\0\2", cp_key[] = "q1\0s";

    ck_assert_int_eq(STORE_COMPRESS_MIN, 512);
    noise_fill(3, noise, sizeof noise);
    put_or_fail(s, STORE_RESULTS, "big", 3, big, 4000);
    put_or_fail(s, STORE_RESULTS, "at", 2, at, 512);
    put_or_fail(s, STORE_RESULTS, "under", 5, under, 511);
    put_or_fail(s, STORE_RESULTS, "noise", 5, noise, sizeof noise);
    put_or_fail(s, STORE_STATE, round_key, sizeof round_key - 1, big, 4000);
    put_or_fail(s, STORE_STATE, cp_key, sizeof cp_key - 1, big, 4000);
    put_or_fail(s, STORE_LEDGER, "l", 1, big, 4000);
    put_or_fail(s, STORE_QUESTIONS, "q1", 2, big, 4000);
    put_or_fail(s, STORE_META, "m", 1, big, 4000);
    put_or_fail(s, STORE_TELEMETRY, "t", 1, big, 4000);
    assert_reads(s, STORE_RESULTS, "big", 3, big, 4000);
    assert_reads(s, STORE_RESULTS, "at", 2, at, 512);
    assert_reads(s, STORE_RESULTS, "under", 5, under, 511);
    assert_reads(s, STORE_RESULTS, "noise", 5, noise, sizeof noise);
    assert_reads(s, STORE_STATE, round_key, sizeof round_key - 1, big, 4000);
    assert_reads(s, STORE_STATE, cp_key, sizeof cp_key - 1, big, 4000);
    assert_reads(s, STORE_LEDGER, "l", 1, big, 4000);
    assert_reads(s, STORE_QUESTIONS, "q1", 2, big, 4000);
    assert_reads(s, STORE_META, "m", 1, big, 4000);
    store_close(s);

    assert_stored(dir, "results", "big", 3, big, 4000, 1);
    assert_stored(dir, "results", "at", 2, at, 512, 1);
    assert_stored(dir, "results", "under", 5, under, 511, 0);
    assert_stored(dir, "results", "noise", 5, noise, sizeof noise, 0);
    assert_stored(dir, "state", round_key, sizeof round_key - 1, big, 4000, 1);
    assert_stored(dir, "state", cp_key, sizeof cp_key - 1, big, 4000, 0);
    assert_stored(dir, "ledger", "l", 1, big, 4000, 1);
    assert_stored(dir, "questions", "q1", 2, big, 4000, 1);
    assert_stored(dir, "meta", "m", 1, big, 4000, 0);
    assert_stored(dir, "telemetry", "t", 1, big, 4000, 0);
    free(big);
    free(at);
    free(under);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

struct many_gets {
    const void *v[64];
    size_t n[64];
};

/* Many compressed values read in one transaction: each stays valid (and
 * unchanged) until the transaction ends, as values in the map do; one of
 * them put again under another key from its decompressed copy. */
static int many_gets_fn(store_txn *t, void *arg, nsed_err *err)
{
    struct many_gets *m = arg;
    char key[16];

    (void)err;
    for (int i = 0; i < 64; i++) {
        snprintf(key, sizeof key, "r%02d", i);
        ck_assert_int_eq(store_get(t, STORE_RESULTS, key, strlen(key), &m->v[i],
                                   &m->n[i]),
                         0);
    }
    for (int i = 0; i < 64; i++) {
        char *want = json_text(600 + (size_t)i * 50, (unsigned)i);

        ck_assert_uint_eq(m->n[i], 600 + (size_t)i * 50);
        ck_assert(memcmp(m->v[i], want, m->n[i]) == 0);
        free(want);
    }
    return store_put(t, STORE_RESULTS, "copy", 4, m->v[7], m->n[7]);
}

struct kept {
    const void *v[64];
    size_t n;
};

static int scan_keep_fn(const void *k, size_t klen, const void *v, size_t vlen,
                        void *arg)
{
    struct kept *m = arg;

    (void)k;
    (void)klen;
    (void)vlen;
    ck_assert_uint_lt(m->n, 64);
    m->v[m->n++] = v;
    return 0;
}

static int scan_keep_txn(store_txn *t, void *arg, nsed_err *err)
{
    struct kept *m = arg;

    (void)err;
    ck_assert_int_eq(store_scan(t, STORE_RESULTS, "r", 1, NULL, 0, scan_keep_fn,
                                m),
                     0);
    ck_assert_uint_eq(m->n, 64);
    /* after the scan, every value it handed out is still there */
    for (int i = 0; i < 64; i++) {
        char *want = json_text(600 + (size_t)i * 50, (unsigned)i);

        ck_assert(memcmp(m->v[i], want, 600 + (size_t)i * 50) == 0);
        free(want);
    }
    return 0;
}

/* A mark taken after 32 values, 32 more read, released to the mark: the
 * first 32 are still valid (ASan would see a freed one), and the others
 * read again as they were. */
static int mark_release_fn(store_txn *t, void *arg, nsed_err *err)
{
    struct many_gets *m = arg;
    char key[16];
    size_t mark = 0;

    (void)err;
    ck_assert_uint_eq(store_txn_mark(t), 0);
    for (int i = 0; i < 64; i++) {
        if (i == 32)
            mark = store_txn_mark(t);
        snprintf(key, sizeof key, "r%02d", i);
        ck_assert_int_eq(store_get(t, STORE_RESULTS, key, strlen(key), &m->v[i],
                                   &m->n[i]),
                         0);
    }
    ck_assert_uint_eq(mark, 32);
    ck_assert_uint_eq(store_txn_mark(t), 64);
    store_txn_release(t, mark);
    ck_assert_uint_eq(store_txn_mark(t), 32);
    for (int i = 0; i < 64; i++) {
        char *want = json_text(600 + (size_t)i * 50, (unsigned)i);

        if (i >= 32) {
            snprintf(key, sizeof key, "r%02d", i);
            ck_assert_int_eq(store_get(t, STORE_RESULTS, key, strlen(key),
                                       &m->v[i], &m->n[i]),
                             0);
        }
        ck_assert_uint_eq(m->n[i], 600 + (size_t)i * 50);
        ck_assert(memcmp(m->v[i], want, m->n[i]) == 0);
        free(want);
    }
    store_txn_release(NULL, 0);
    ck_assert_uint_eq(store_txn_mark(NULL), 0);
    return 0;
}

START_TEST(decompressed_values_live_until_the_txn_ends)
{
    char *dir = tu_mkdtemp();
    store *s = open_or_fail(dir, STORE_NOSYNC, 0);
    struct many_gets m;
    struct kept kept = {{NULL}, 0};
    nsed_err e = {0};
    char *want = json_text(950, 7);

    for (int i = 0; i < 64; i++) {
        char key[16], *v = json_text(600 + (size_t)i * 50, (unsigned)i);

        snprintf(key, sizeof key, "r%02d", i);
        put_or_fail(s, STORE_RESULTS, key, strlen(key), v, strlen(v));
        free(v);
    }
    memset(&m, 0, sizeof m);
    ck_assert_msg(store_write(s, many_gets_fn, &m, &e) == 0, "%s", e.msg);
    assert_reads(s, STORE_RESULTS, "copy", 4, want, 950);
    ck_assert_int_eq(store_read(s, scan_keep_txn, &kept, &e), 0);
    memset(&m, 0, sizeof m);
    ck_assert_int_eq(store_read(s, mark_release_fn, &m, &e), 0);
    store_close(s);
    assert_stored(dir, "results", "copy", 4, want, 950, 1);
    free(want);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* Values that begin with the header's byte 0xFE themselves (no record of
 * nsed's does) read back as put: in a database of compressed records such
 * a value under the threshold is wrapped in a plain header (method 0);
 * elsewhere (META, QORDER) it is stored as it is. */
START_TEST(values_that_look_compressed_round_trip)
{
    char *dir = tu_mkdtemp();
    store *s = open_or_fail(dir, STORE_NOSYNC, 0);
    static const unsigned char fe[] = {0xFE, 0x01, 0x00, 0x00, 0x00,
                                       0x03, 'a',  'b',  'c'};
    unsigned char *raw = NULL;
    size_t len = 0;

    put_or_fail(s, STORE_RESULTS, "fe", 2, fe, sizeof fe);
    put_or_fail(s, STORE_RESULTS, "one", 3, fe, 1);
    put_or_fail(s, STORE_META, "fe", 2, fe, sizeof fe);
    put_or_fail(s, STORE_QORDER, "fe", 2, fe, sizeof fe);
    assert_reads(s, STORE_RESULTS, "fe", 2, fe, sizeof fe);
    assert_reads(s, STORE_RESULTS, "one", 3, fe, 1);
    assert_reads(s, STORE_META, "fe", 2, fe, sizeof fe);
    assert_reads(s, STORE_QORDER, "fe", 2, fe, sizeof fe);
    store_close(s);
    ck_assert_int_eq(raw_get(dir, "results", "fe", 2, &raw, &len), 0);
    ck_assert_uint_eq(len, 6 + sizeof fe);
    ck_assert(raw[0] == 0xFE && raw[1] == 0 && be32(raw + 2) == sizeof fe);
    ck_assert(memcmp(raw + 6, fe, sizeof fe) == 0);
    free(raw);
    assert_stored(dir, "meta", "fe", 2, fe, sizeof fe, 0);
    assert_stored(dir, "qorder", "fe", 2, fe, sizeof fe, 0);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* A store an older nsed wrote holds its large records uncompressed: they
 * read as they are, by key and by scan, and a rewrite compresses them. */
START_TEST(old_uncompressed_store_reads)
{
    char *dir = tu_mkdtemp();
    store *s = open_or_fail(dir, STORE_NOSYNC, 0);
    char *big = json_text(5000, 9);
    struct counter c = {STORE_RESULTS, 0};

    store_close(s);
    raw_put(dir, "results", "old", 3, big, 5000);
    raw_put(dir, "state", "q9\0r\0\0\0\1", 8, big, 5000);
    assert_stored(dir, "results", "old", 3, big, 5000, 0);
    s = open_or_fail(dir, STORE_RDONLY, 0);
    assert_reads(s, STORE_RESULTS, "old", 3, big, 5000);
    assert_reads(s, STORE_STATE, "q9\0r\0\0\0\1", 8, big, 5000);
    ck_assert_int_eq(store_read(s, count_fn, &c, NULL), 0);
    ck_assert_uint_eq(c.n, 1);
    store_close(s);
    s = open_or_fail(dir, STORE_NOSYNC, 0);
    put_or_fail(s, STORE_RESULTS, "old", 3, big, 5000);
    store_close(s);
    assert_stored(dir, "results", "old", 3, big, 5000, 1);
    free(big);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

struct damaged {
    enum store_db db;
    const char *key;
    size_t klen;
    int get_rc, scan_rc;
};

static int scan_count_fn(const void *k, size_t klen, const void *v, size_t vlen,
                         void *arg)
{
    (void)k;
    (void)klen;
    (void)v;
    (void)vlen;
    ++*(int *)arg;
    return 0;
}

/* Reads the damaged record as a caller does: store_get, then a scan,
 * returning the first failure with the caller's own message. */
static int damaged_fn(store_txn *t, void *arg, nsed_err *err)
{
    struct damaged *d = arg;
    const void *v = NULL;
    size_t n = 0;
    int seen = 0;

    d->get_rc = store_get(t, d->db, d->key, d->klen, &v, &n);
    d->scan_rc = store_scan(t, d->db, NULL, 0, NULL, 0, scan_count_fn, &seen);
    if (d->get_rc)
        return nsed_error(err, d->get_rc, "cannot read my record");
    return 0;
}

/* Write the record compressed, then damage its stored bytes with how;
 * reading it gives NSED_ESTORE and a message naming the record. */
static void check_damage(const char *how, enum store_db db, const char *dbname,
                         const char *key, size_t klen, const char *names)
{
    char *dir = tu_mkdtemp();
    store *s = open_or_fail(dir, STORE_NOSYNC, 0);
    char *big = json_text(3000, 5);
    unsigned char *raw = NULL;
    size_t len = 0;
    struct damaged d = {db, key, klen, 0, 0};
    nsed_err e = {0};
    int rc;

    put_or_fail(s, db, key, klen, big, 3000);
    store_close(s);
    ck_assert_int_eq(raw_get(dir, dbname, key, klen, &raw, &len), 0);
    ck_assert_uint_eq(raw[0], 0xFE);
    if (strcmp(how, "flip") == 0)
        raw[len / 2] ^= 0x10; /* inside the frame: the checksum fails */
    else if (strcmp(how, "truncate") == 0)
        len -= 9;
    else if (strcmp(how, "length") == 0)
        raw[5] ^= 0x01;
    else if (strcmp(how, "method") == 0)
        raw[1] = 7;
    else if (strcmp(how, "header") == 0)
        len = 4;
    raw_put(dir, dbname, key, klen, raw, len);
    s = open_or_fail(dir, STORE_RDONLY, 0);
    rc = store_read(s, damaged_fn, &d, &e);
    ck_assert_int_eq(rc, NSED_ESTORE);
    ck_assert_int_eq(d.get_rc, NSED_ESTORE);
    ck_assert_int_eq(d.scan_rc, NSED_ESTORE);
    ck_assert_msg(tu_contains(e.msg, "cannot read my record: store ") &&
                      tu_contains(e.msg, names) &&
                      tu_contains(e.msg, " is corrupt (") &&
                      tu_contains(e.msg, "restore the store from a copy"),
                  "%s: %s", how, e.msg);
    store_close(s);
    /* and through a write transaction, which is then not committed */
    s = open_or_fail(dir, STORE_NOSYNC, 0);
    memset(&e, 0, sizeof e);
    ck_assert_int_eq(store_write(s, damaged_fn, &d, &e), NSED_ESTORE);
    ck_assert_msg(tu_contains(e.msg, names), "%s: %s", how, e.msg);
    store_close(s);
    free(raw);
    free(big);
    tu_rmrf(dir);
    free(dir);
}

START_TEST(corrupt_compressed_value_is_a_store_error)
{
    static const char *hows[] = {"flip", "truncate", "length", "method",
                                 "header"};

    for (size_t i = 0; i < sizeof hows / sizeof *hows; i++) {
        check_damage(hows[i], STORE_RESULTS, "results", "q1", 2,
                     "the result of q1 in database results");
        check_damage(hows[i], STORE_STATE, "state", "q1\0r\0\0\0\3", 8,
                     "round 3 of question q1 in database state");
    }
    check_damage("flip", STORE_LEDGER, "ledger",
                 "0123456789abcdef0123456789abcdef", 32,
                 "ledger entry 3031323334353637383961626364656630313233343536"
                 "373839616263646566 in database ledger");
    check_damage("flip", STORE_QUESTIONS, "questions", "q\x01", 2,
                 "question q\\x01 in database questions");
}
END_TEST

Suite *tu_suite(void)
{
    Suite *su = suite_create("store");
    TCase *tc;

    tc = tcase_create("records");
    tcase_add_test(tc, put_get_del_count);
    tcase_add_test(tc, key_and_context_limits);
    tcase_add_test(tc, scan_prefix_and_start);
    tcase_add_test(tc, u64_keys_sort_numerically);
    suite_add_tcase(su, tc);

    tc = tcase_create("durability");
    tcase_add_test(tc, fn_error_aborts_everything);
    tcase_add_test(tc, killed_writer_keeps_committed);
    suite_add_tcase(su, tc);

    tc = tcase_create("map_growth");
    tcase_add_test(tc, map_grows_from_tiny);
    tcase_add_test(tc, failed_put_poisons_txn_and_is_replayed);
    tcase_add_test(tc, reader_follows_grown_map);
    suite_add_tcase(su, tc);

    tc = tcase_create("locking");
    tcase_add_test(tc, concurrent_writer_refused);
    tcase_add_test(tc, writer_lock_probe);
    suite_add_tcase(su, tc);

    tc = tcase_create("opening");
    tcase_add_test(tc, unknown_schema_refused);
    tcase_add_test(tc, schema_1_is_read_and_upgraded);
    tcase_add_test(tc, garbage_schema_refused);
    tcase_add_test(tc, rdonly_needs_a_store);
    tcase_add_test(tc, writer_creates_directories);
    tcase_add_test(tc, descriptors_close_on_exec);
    suite_add_tcase(su, tc);

    tc = tcase_create("compression");
    tcase_add_test(tc, compressed_values_round_trip);
    tcase_add_test(tc, decompressed_values_live_until_the_txn_ends);
    tcase_add_test(tc, values_that_look_compressed_round_trip);
    tcase_add_test(tc, old_uncompressed_store_reads);
    tcase_add_test(tc, corrupt_compressed_value_is_a_store_error);
    suite_add_tcase(su, tc);

    tc = tcase_create("manifest");
    tcase_add_test(tc, manifest_binds_and_records_history);
    tcase_add_test(tc, manifest_rejects_bad_input);
    tcase_add_test(tc, manifest_history_is_bounded);
    suite_add_tcase(su, tc);

    return su;
}
