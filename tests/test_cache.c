/* The call cache shared across stores (issue 13, item 5), end to end:
 * `nsed run --cache DIR` against nsed-sim, counting what the server gets.
 *
 *   - A second store of the same workflow with the same cache makes zero
 *     network calls, exports what the first one exported, and its status
 *     counts as many cache hits as the server answered requests for the
 *     first; its own ledger then holds every call (marked from the cache),
 *     so a rerun of it from scratch without --cache sends nothing either.
 *   - A third store whose workflow differs (rounds.max raised) pays only
 *     for the calls whose keys differ: hits + network calls = what the
 *     same workflow costs without a cache, counted by a server of its own.
 *   - Two runs sharing one cache at the same time both finish with the
 *     right results, and the cache then holds each distinct call once.
 *   - A cache that cannot be opened, a run store given as the cache, and
 *     a cache given as the store are refused with exit 2.
 */
#include "pipeline/gateway/cache.h"
#include "pipeline/gateway/ledger.h"
#include "store/store.h"
#include "testutil.h"

#include <check.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#define DEMO_WF NSED_SOURCE_DIR "/workflows/demo.yaml"
#define DEMO_Q NSED_SOURCE_DIR "/workflows/demo-questions.jsonl"
#define DEMO_SIM NSED_SOURCE_DIR "/tests/sim/configs/demo-sim.yaml"
#define SLOW_SIM NSED_SOURCE_DIR "/tests/data/runner/slow-sim.yaml"

#define NQUESTIONS 40

/* The first NQUESTIONS lines of the demo's questions, in tu_tmp. */
static char *questions_file(void)
{
    char *all = tu_read_file(DEMO_Q, NULL), *p = all, *path;
    int lines = 0;

    ck_assert(all != NULL);
    while (*p && lines < NQUESTIONS)
        if (*p++ == '\n')
            lines++;
    ck_assert_int_eq(lines, NQUESTIONS);
    path = tu_path(tu_tmp, "q.jsonl");
    tu_write_file(path, all, (size_t)(p - all));
    free(all);
    return path;
}

/* The demo workflow with rounds.max set to max, in tu_tmp. */
static char *workflow_with_max(int max)
{
    char *text = tu_read_file(DEMO_WF, NULL), *at, *path, name[32];
    size_t n;
    char *out;

    ck_assert(text != NULL);
    at = strstr(text, "\n  max: 4");
    ck_assert_msg(at != NULL, "demo.yaml has no rounds.max of 4");
    n = strlen(text);
    out = malloc(n + 1);
    ck_assert(out != NULL);
    memcpy(out, text, n + 1);
    out[at - text + 8] = (char)('0' + max);
    snprintf(name, sizeof name, "demo-max%d.yaml", max);
    path = tu_path(tu_tmp, name);
    tu_write_file(path, out, n);
    free(out);
    free(text);
    return path;
}

/* `nsed run wf --questions q --store sdir [--cache cdir]`, which must
 * exit 0; its stderr (the summary) is returned (malloc'd). */
static char *run_ok(const char *url, const char *wf, const char *q,
                    const char *sdir, const char *cdir)
{
    char *out = NULL, *err = NULL;
    int rc;

    if (cdir)
        rc = TU_NSED(url, &out, &err, "run", wf, "--questions", q, "--store",
                     sdir, "--cache", cdir, "--progress-interval", "86400");
    else
        rc = TU_NSED(url, &out, &err, "run", wf, "--questions", q, "--store",
                     sdir, "--progress-interval", "86400");
    ck_assert_msg(rc == 0, "run %s: exit %d: %s", sdir, rc, err);
    free(out);
    return err;
}

/* The N before `what` in a run summary ("(N from the ledger, M from the
 * cache)"). */
static double summary_count(const char *summary, const char *what)
{
    const char *p = strstr(summary, what);

    ck_assert_msg(p != NULL, "no \"%s\" in: %s", what, summary);
    while (p > summary && p[-1] == ' ')
        p--;
    while (p > summary && p[-1] >= '0' && p[-1] <= '9')
        p--;
    return strtod(p, NULL);
}

/* A field of status --json summed over the models. */
static double status_sum(const char *sdir, const char *field)
{
    cJSON *j = tu_nsed_status(sdir), *m;
    double n = 0;

    cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(j, "models")) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(m, field);

        ck_assert_msg(cJSON_IsNumber(v), "status models.%s.%s missing",
                      m->string, field);
        n += v->valuedouble;
    }
    cJSON_Delete(j);
    return n;
}

/* The store's ledger: entries, and how many are marked from the cache. */
typedef struct ledger_tally {
    size_t n, from_cache;
} ledger_tally;

static int tally_visit(const void *key, size_t klen, const void *val,
                       size_t vlen, void *arg)
{
    ledger_tally *t = arg;
    ledger_record r = {0};
    nsed_err e = {0};

    (void)key;
    (void)klen;
    ck_assert_msg(ledger_decode(val, vlen, &r, &e) == 0, "%s", e.msg);
    t->n++;
    t->from_cache += r.from_cache;
    ledger_record_release(&r);
    return 0;
}

static int tally_fn(store_txn *txn, void *arg, nsed_err *err)
{
    (void)err;
    return store_scan(txn, STORE_LEDGER, NULL, 0, NULL, 0, tally_visit, arg);
}

static ledger_tally ledger_of(const char *sdir)
{
    store_opts so = {STORE_RDONLY, 0};
    store *st = NULL;
    nsed_err e = {0};
    ledger_tally t = {0, 0};

    ck_assert_msg(store_open(sdir, &so, &st, &e) == 0, "%s", e.msg);
    ck_assert_int_eq(store_read(st, tally_fn, &t, NULL), 0);
    store_close(st);
    return t;
}

/* Collect every key of a database, to delete them after the scan. */
typedef struct key_list {
    char **k;
    size_t *len;
    size_t n;
} key_list;

static int collect_visit(const void *key, size_t klen, const void *val,
                         size_t vlen, void *arg)
{
    key_list *l = arg;

    (void)val;
    (void)vlen;
    l->k = realloc(l->k, (l->n + 1) * sizeof *l->k);
    l->len = realloc(l->len, (l->n + 1) * sizeof *l->len);
    ck_assert(l->k && l->len);
    l->k[l->n] = malloc(klen);
    ck_assert(l->k[l->n] != NULL);
    memcpy(l->k[l->n], key, klen);
    l->len[l->n++] = klen;
    return 0;
}

static int forget_fn(store_txn *txn, void *arg, nsed_err *err)
{
    static const enum store_db dbs[] = {STORE_RESULTS, STORE_STATE};

    (void)arg;
    (void)err;
    for (size_t d = 0; d < 2; d++) {
        key_list l = {NULL, NULL, 0};
        int rc = store_scan(txn, dbs[d], NULL, 0, NULL, 0, collect_visit, &l);

        for (size_t i = 0; i < l.n; i++) {
            if (!rc)
                rc = store_del(txn, dbs[d], l.k[i], l.len[i]);
            free(l.k[i]);
        }
        free(l.k);
        free(l.len);
        if (rc)
            return rc;
    }
    return 0;
}

/* Delete every result and question state of the store: a rerun then runs
 * every question from its first stage, and finds its calls only in the
 * ledger. */
static void forget_results(const char *sdir)
{
    store *st = NULL;
    nsed_err e = {0};

    ck_assert_msg(store_open(sdir, NULL, &st, &e) == 0, "%s", e.msg);
    ck_assert_msg(store_write(st, forget_fn, NULL, &e) == 0, "%s", e.msg);
    store_close(st);
}

static size_t cache_records(const char *cdir)
{
    cache *c = NULL;
    nsed_err e = {0};
    size_t n = 0;

    ck_assert_msg(cache_open(cdir, &c, &e) == 0, "%s", e.msg);
    ck_assert_int_eq(cache_count(c, &n, &e), 0);
    cache_close(c);
    return n;
}

START_TEST(second_store_makes_no_calls)
{
    char *q = questions_file(), *wf = workflow_with_max(2);
    char *a = tu_path(tu_tmp, "A"), *b = tu_path(tu_tmp, "B");
    char *c = tu_path(tu_tmp, "cache"), *ea, *eb, *sum;
    double req_a, req_b;
    ledger_tally la, lb;
    tu_sim s;

    tu_sim_start(&s, DEMO_SIM, NULL, NULL);
    free(run_ok(s.url, wf, q, a, c));
    req_a = tu_sim_total_requests(&s);
    ck_assert_double_gt(req_a, NQUESTIONS);
    /* the first store paid for every call it made */
    ck_assert_double_eq(status_sum(a, "calls"), req_a);
    ck_assert_double_eq(status_sum(a, "cache_hits"), 0);
    ck_assert_uint_eq(cache_records(c), (size_t)req_a);

    sum = run_ok(s.url, wf, q, b, c);
    req_b = tu_sim_total_requests(&s) - req_a;
    ck_assert_msg(req_b == 0, "the second store sent %g requests", req_b);
    ck_assert_double_eq(summary_count(sum, "from the cache)"), req_a);
    ck_assert_double_eq(summary_count(sum, "calls ("), 0);
    free(sum);
    ck_assert_double_eq(status_sum(b, "cache_hits"), req_a);
    ck_assert_double_eq(status_sum(b, "calls"), 0);
    ck_assert_double_eq(status_sum(b, "ledger_hits"), 0);
    ea = tu_nsed_export(a);
    eb = tu_nsed_export(b);
    ck_assert_str_eq(eb, ea);
    free(eb);
    /* B's own ledger holds every call it used, each marked as copied from
     * the cache; A's are its own */
    la = ledger_of(a);
    lb = ledger_of(b);
    ck_assert_uint_eq(la.n, (size_t)req_a);
    ck_assert_uint_eq(la.from_cache, 0);
    ck_assert_uint_eq(lb.n, (size_t)req_a);
    ck_assert_uint_eq(lb.from_cache, (size_t)req_a);

    /* B from scratch without --cache: every call from its own ledger */
    forget_results(b);
    sum = run_ok(s.url, wf, q, b, NULL);
    ck_assert_double_eq(tu_sim_total_requests(&s), req_a);
    ck_assert_double_eq(summary_count(sum, "from the ledger)"), req_a);
    free(sum);
    eb = tu_nsed_export(b);
    ck_assert_str_eq(eb, ea);
    free(eb);
    free(ea);
    tu_sim_stop(&s);
    free(q);
    free(wf);
    free(a);
    free(b);
    free(c);
}
END_TEST

START_TEST(changed_workflow_pays_only_for_new_keys)
{
    char *q = questions_file(), *wf2 = workflow_with_max(2);
    char *wf4 = workflow_with_max(4);
    char *a = tu_path(tu_tmp, "A"), *d = tu_path(tu_tmp, "D");
    char *e = tu_path(tu_tmp, "E"), *c = tu_path(tu_tmp, "cache");
    char *sum, *ed, *ee;
    double req_a, paid, hits, calls, total;
    tu_sim s, s2;

    tu_sim_start(&s, DEMO_SIM, NULL, NULL);
    free(run_ok(s.url, wf2, q, a, c));
    req_a = tu_sim_total_requests(&s);
    sum = run_ok(s.url, wf4, q, d, c);
    paid = tu_sim_total_requests(&s) - req_a;
    tu_sim_stop(&s);
    hits = summary_count(sum, "from the cache)");
    calls = summary_count(sum, "calls (");
    free(sum);
    /* what rounds.max 4 costs without a cache, on a server of its own */
    tu_sim_start(&s2, DEMO_SIM, NULL, NULL);
    free(run_ok(s2.url, wf4, q, e, NULL));
    total = tu_sim_total_requests(&s2);
    tu_sim_stop(&s2);
    ck_assert_msg(paid > 0 && paid < total,
                  "rounds.max 4 after 2 paid %g of %g calls", paid, total);
    ck_assert_double_eq(calls, paid);
    ck_assert_msg(hits + paid == total, "%g hits + %g paid != %g calls", hits,
                  paid, total);
    ck_assert_double_eq(status_sum(d, "cache_hits"), hits);
    ck_assert_double_eq(status_sum(d, "calls"), paid);
    /* every rounds.max 2 call has its key in the rounds.max 4 run: the
     * questions the cap stopped go on, the others repeat */
    ck_assert_double_le(hits, req_a);
    ed = tu_nsed_export(d);
    ee = tu_nsed_export(e);
    ck_assert_str_eq(ed, ee);
    free(ed);
    free(ee);
    free(q);
    free(wf2);
    free(wf4);
    free(a);
    free(d);
    free(e);
    free(c);
}
END_TEST

/* `nsed run ... --cache cdir` in the background, output to /dev/null. */
static pid_t spawn_cached(const char *url, const char *wf, const char *q,
                          const char *sdir, const char *cdir)
{
    pid_t pid = fork();

    ck_assert(pid >= 0);
    if (pid == 0) {
        char env[128];
        int null = open("/dev/null", O_WRONLY);

        prctl(PR_SET_PDEATHSIG, SIGKILL);
        snprintf(env, sizeof env, "NSED_SIM_URL=%s", url);
        putenv(env);
        dup2(null, 1);
        dup2(null, 2);
        execl(NSED_BIN, NSED_BIN, "run", wf, "--questions", q, "--store", sdir,
              "--cache", cdir, "--quiet", (char *)NULL);
        _exit(127);
    }
    return pid;
}

static int wait_exit(pid_t pid)
{
    int status;

    while (waitpid(pid, &status, 0) < 0)
        ck_assert(errno == EINTR);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

START_TEST(two_runs_share_one_cache_at_once)
{
    char *q = questions_file(), *wf = workflow_with_max(2);
    char *r = tu_path(tu_tmp, "R"), *x = tu_path(tu_tmp, "X");
    char *y = tu_path(tu_tmp, "Y"), *z = tu_path(tu_tmp, "Z");
    char *c = tu_path(tu_tmp, "cache"), *er, *ex;
    double ref, both, t0, ref_ms;
    pid_t px, py;
    tu_sim s, s2;

    /* the results and number of calls of one run without a cache */
    tu_sim_start(&s, SLOW_SIM, NULL, NULL);
    t0 = tu_now_s();
    free(run_ok(s.url, wf, q, r, NULL));
    ref_ms = (tu_now_s() - t0) * 1000;
    ref = tu_sim_total_requests(&s);
    tu_sim_stop(&s);
    er = tu_nsed_export(r);

    /* the second starts while the first is half-way: both write the cache
     * at once, and the second finds part of the first's calls there */
    tu_sim_start(&s2, SLOW_SIM, NULL, NULL);
    px = spawn_cached(s2.url, wf, q, x, c);
    tu_sleep_ms(ref_ms / 2);
    py = spawn_cached(s2.url, wf, q, y, c);
    ck_assert_int_eq(wait_exit(px), 0);
    ck_assert_int_eq(wait_exit(py), 0);
    both = tu_sim_total_requests(&s2);
    printf("two_runs_share_one_cache_at_once: one run %g calls in %.1f s; "
           "two at once sent %g\n",
           ref, ref_ms / 1000, both);
    /* every call is paid at least once and at most twice */
    ck_assert_double_ge(both, ref);
    ck_assert_double_le(both, 2 * ref);
    ex = tu_nsed_export(x);
    ck_assert_str_eq(ex, er);
    free(ex);
    ex = tu_nsed_export(y);
    ck_assert_str_eq(ex, er);
    free(ex);
    /* hits + calls of each run = the calls of a run */
    ck_assert_double_eq(status_sum(x, "calls") + status_sum(x, "cache_hits"),
                        ref);
    ck_assert_double_eq(status_sum(y, "calls") + status_sum(y, "cache_hits"),
                        ref);
    /* what the server answered = what the two runs paid for */
    ck_assert_double_eq(status_sum(x, "calls") + status_sum(y, "calls"), both);
    /* each distinct call once, and a third store pays nothing */
    ck_assert_uint_eq(cache_records(c), (size_t)ref);
    free(run_ok(s2.url, wf, q, z, c));
    ck_assert_double_eq(tu_sim_total_requests(&s2), both);
    ex = tu_nsed_export(z);
    ck_assert_str_eq(ex, er);
    free(ex);
    tu_sim_stop(&s2);
    free(er);
    free(q);
    free(wf);
    free(r);
    free(x);
    free(y);
    free(z);
    free(c);
}
END_TEST

START_TEST(bad_caches_are_refused)
{
    char *q = questions_file(), *a = tu_path(tu_tmp, "A");
    char *c = tu_path(tu_tmp, "cache"), *f = tu_path(tu_tmp, "file");
    char *n = tu_path(tu_tmp, "new"), *out = NULL, *err = NULL;
    char *bad = tu_path(f, "sub");
    tu_sim s;
    int rc;

    tu_sim_start(&s, DEMO_SIM, NULL, NULL);
    free(run_ok(s.url, DEMO_WF, q, a, c));
    /* a cache under a plain file cannot be created */
    tu_write_file(f, "x", 1);
    rc = TU_NSED(s.url, &out, &err, "run", DEMO_WF, "--questions", q, "--store",
                 n, "--cache", bad);
    ck_assert_msg(rc == 2, "exit %d: %s", rc, err);
    ck_assert_msg(tu_contains(err, "--cache"), "%s", err);
    ck_assert_msg(access(n, F_OK) != 0, "a store was created");
    free(out);
    free(err);
    /* a run store is not a cache */
    rc = TU_NSED(s.url, &out, &err, "run", DEMO_WF, "--questions", q, "--store",
                 n, "--cache", a);
    ck_assert_msg(rc == 2, "exit %d: %s", rc, err);
    ck_assert_msg(tu_contains(err, "is a run store"), "%s", err);
    ck_assert_msg(access(n, F_OK) != 0, "a store was created");
    free(out);
    free(err);
    /* a cache is not a run store */
    rc = TU_NSED(s.url, &out, &err, "run", DEMO_WF, "--questions", q, "--store",
                 c);
    ck_assert_msg(rc == 2, "exit %d: %s", rc, err);
    ck_assert_msg(tu_contains(err, "is a call cache"), "%s", err);
    free(out);
    free(err);
    /* the store itself is not its cache */
    rc = TU_NSED(s.url, &out, &err, "run", DEMO_WF, "--questions", q, "--store",
                 n, "--cache", n);
    ck_assert_msg(rc == 2, "exit %d: %s", rc, err);
    ck_assert_msg(tu_contains(err, "is the store directory"), "%s", err);
    free(out);
    free(err);
    /* what the cache holds was never sent a key: the records are the
     * replies, redacted (docs/gateway.md); the cache has no manifest */
    ck_assert_uint_gt(cache_records(c), 0);
    tu_sim_stop(&s);
    free(q);
    free(a);
    free(c);
    free(f);
    free(n);
    free(bad);
}
END_TEST

/* A record copied from the cache says so; every other record keeps the
 * bytes it had before the mark existed. */
START_TEST(from_cache_mark_round_trips)
{
    ledger_record r = {.content = "x",
                       .finish_reason = "stop",
                       .prompt_tokens = 3,
                       .attempts = 1,
                       .http_status = 200};
    ledger_record back = {0};
    nsed_err e = {0};
    char *text = NULL;
    size_t len = 0;

    ck_assert_int_eq(ledger_encode(&r, &text, &len), 0);
    ck_assert_str_eq(text, "{\"v\":1,\"content\":\"x\",\"finish_reason\":"
                           "\"stop\",\"usage\":{\"prompt_tokens\":3,"
                           "\"completion_tokens\":0,\"cached_tokens\":0},"
                           "\"cost_usd\":0,\"latency_s\":0,\"attempts\":1,"
                           "\"http_status\":200,\"time\":0}");
    ck_assert_int_eq(ledger_decode(text, len, &back, &e), 0);
    ck_assert(!back.from_cache);
    ledger_record_release(&back);
    free(text);
    r.from_cache = true;
    ck_assert_int_eq(ledger_encode(&r, &text, &len), 0);
    ck_assert(tu_contains(text, ",\"from_cache\":true}"));
    ck_assert_int_eq(ledger_decode(text, len, &back, &e), 0);
    ck_assert(back.from_cache);
    ledger_record_release(&back);
    free(text);
    /* a mark that is not a bool is damage, not "false" */
    ck_assert_int_eq(
        ledger_decode("{\"content\":\"x\",\"from_cache\":1}",
                      strlen("{\"content\":\"x\",\"from_cache\":1}"), &back,
                      &e),
        NSED_EINVAL);
}
END_TEST

/* A dry run with a cache prints only the calls neither the ledger nor the
 * cache can answer. */
START_TEST(dry_run_skips_cached_calls)
{
    char *q = questions_file(), *wf = workflow_with_max(2);
    char *a = tu_path(tu_tmp, "A"), *b = tu_path(tu_tmp, "B");
    char *b2 = tu_path(tu_tmp, "B2"), *c = tu_path(tu_tmp, "cache");
    char *out = NULL, *err = NULL;
    double before;
    tu_sim s;

    tu_sim_start(&s, DEMO_SIM, NULL, NULL);
    free(run_ok(s.url, wf, q, a, c));
    before = tu_sim_total_requests(&s);
    ck_assert_int_eq(TU_NSED(s.url, &out, &err, "run", wf, "--questions", q,
                             "--store", b, "--dry-run"),
                     0);
    /* one proposal per seat and question */
    ck_assert_msg(tu_contains(out, "\"ledger_key\""), "%s", out);
    free(out);
    free(err);
    ck_assert_int_eq(TU_NSED(s.url, &out, &err, "run", wf, "--questions", q,
                             "--store", b2, "--dry-run", "--cache", c),
                     0);
    ck_assert_msg(out[0] == '\0', "printed: %.300s", out);
    free(out);
    free(err);
    ck_assert_double_eq(tu_sim_total_requests(&s), before);
    tu_sim_stop(&s);
    free(q);
    free(wf);
    free(a);
    free(b);
    free(b2);
    free(c);
}
END_TEST

Suite *tu_suite(void)
{
    Suite *s = suite_create("cache");
    TCase *tc = tcase_create("shared call cache");
    TCase *unit = tcase_create("records");

    tcase_add_test(unit, from_cache_mark_round_trips);
    suite_add_tcase(s, unit);

    tcase_add_checked_fixture(tc, tu_tmp_setup, tu_tmp_teardown);
    tcase_set_timeout(tc, 280);
    tcase_add_test(tc, second_store_makes_no_calls);
    tcase_add_test(tc, changed_workflow_pays_only_for_new_keys);
    tcase_add_test(tc, two_runs_share_one_cache_at_once);
    tcase_add_test(tc, bad_caches_are_refused);
    tcase_add_test(tc, dry_run_skips_cached_calls);
    suite_add_tcase(s, tc);
    return s;
}
