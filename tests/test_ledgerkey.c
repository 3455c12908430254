/* The ledger key names the model, not the endpoint (issue 11, item 6), end
 * to end: `nsed run` against nsed-sim on one port, killed with kill -9 or
 * run to the end, then resumed with NSED_SIM_URL pointing at another
 * nsed-sim on another port with the same config.
 *
 *   - The resumed run sends exactly the calls the ledger does not hold
 *     (none after a finished run), counted by the second server; before
 *     key form 2 it sent every call again.
 *   - Its export equals an uninterrupted run's.
 *   - With NSED_OLD_BIN naming an nsed from before key form 2 (it writes
 *     form 1 keys, the endpoint URL in them), a store it wrote and was
 *     killed in is resumed by this nsed on the same port sending exactly
 *     the calls that store's ledger lacks: the form 1 entries answer.
 */
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
#include <time.h>
#include <unistd.h>

#define DEMO_WF NSED_SOURCE_DIR "/workflows/demo.yaml"
#define DEMO_Q NSED_SOURCE_DIR "/workflows/demo-questions.jsonl"
#define SLOW_SIM NSED_SOURCE_DIR "/tests/data/runner/slow-sim.yaml"

#define NSED(url, out, err, ...) TU_NSED(url, out, err, __VA_ARGS__)



static double total_requests(const tu_sim *s)
{
    cJSON *j = tu_sim_stats(s), *m;
    double n = 0;

    cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(j, "models"))
        n += cJSON_GetObjectItemCaseSensitive(m, "requests")->valuedouble;
    cJSON_Delete(j);
    return n;
}

static char *export_of(const char *sdir)
{
    char *out = NULL, *err = NULL;

    ck_assert_msg(NSED("-", &out, &err, "export", "--store", sdir) == 0,
                  "export: %s", err);
    free(err);
    return out;
}

/* Run to the end; flag is one more argument or NULL. */
static void run_to_end_with(const char *url, const char *sdir, const char *flag)
{
    char *out = NULL, *err = NULL;

    ck_assert_msg(NSED(url, &out, &err, "run", DEMO_WF, "--questions", DEMO_Q,
                       "--store", sdir, "--quiet", flag) == 0,
                  "run: %s", err);
    free(out);
    free(err);
}

static void run_to_end(const char *url, const char *sdir)
{
    run_to_end_with(url, sdir, NULL);
}

/* Start a run, kill -9 it after ms unless it finished; true when killed. */
static bool run_and_kill(const char *bin, const char *url, const char *sdir,
                         double ms)
{
    pid_t pid = fork();
    int status;

    ck_assert(pid >= 0);
    if (pid == 0) {
        char env[128];
        int null = open("/dev/null", O_WRONLY);

        prctl(PR_SET_PDEATHSIG, SIGKILL);
        snprintf(env, sizeof env, "NSED_SIM_URL=%s", url);
        putenv(env);
        dup2(null, 1);
        dup2(null, 2);
        execl(bin, bin, "run", DEMO_WF, "--questions", DEMO_Q, "--store", sdir,
              "--quiet", (char *)NULL);
        _exit(127);
    }
    tu_sleep_ms(ms);
    if (waitpid(pid, &status, WNOHANG) == 0) {
        kill(pid, SIGKILL);
        while (waitpid(pid, &status, 0) < 0)
            ck_assert(errno == EINTR);
        if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
            return true;
    }
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "a run failed (status %d)", status);
    return false;
}

static int count_fn(store_txn *t, void *arg, nsed_err *err)
{
    (void)err;
    return ledger_count(t, arg);
}

/* The number of calls the store's ledger holds (no nsed may hold it). */
static double ledger_entries(const char *sdir)
{
    store_opts so = {STORE_RDONLY, 0};
    store *st = NULL;
    nsed_err e = {0};
    size_t n = 0;

    ck_assert_msg(store_open(sdir, &so, &st, &e) == 0, "store: %s", e.msg);
    ck_assert_int_eq(store_read(st, count_fn, &n, NULL), 0);
    store_close(st);
    return (double)n;
}

/* An uninterrupted run on its own server: its export, calls and time. */
typedef struct reference {
    char *export;
    double requests;
    double ms;
} reference;

static void reference_run(reference *ref)
{
    char *sdir = tu_path(tu_tmp, "ref");
    tu_sim sim;
    double t0;

    tu_sim_start(&sim, SLOW_SIM, NULL, NULL);
    t0 = tu_now_ms();
    run_to_end(sim.url, sdir);
    ref->ms = tu_now_ms() - t0;
    ref->requests = total_requests(&sim);
    ref->export = export_of(sdir);
    tu_sim_stop(&sim);
    free(sdir);
}

/* A finished run resumed against the same server on another port: nothing
 * is sent, the export is unchanged. */
START_TEST(finished_run_on_another_port_sends_nothing)
{
    char *sdir = tu_path(tu_tmp, "s"), *exp;
    tu_sim a, b;
    reference ref;

    reference_run(&ref);
    tu_sim_start(&a, SLOW_SIM, NULL, NULL);
    run_to_end(a.url, sdir);
    ck_assert_double_eq(total_requests(&a), ref.requests);
    tu_sim_stop(&a);
    tu_sim_start(&b, SLOW_SIM, NULL, NULL);
    ck_assert_uint_ne(a.port, b.port);
    run_to_end(b.url, sdir);
    ck_assert_double_eq(total_requests(&b), 0);
    exp = export_of(sdir);
    ck_assert_msg(strcmp(exp, ref.export) == 0,
                  "the resumed store exported other results");
    free(exp);
    tu_sim_stop(&b);
    free(ref.export);
    free(sdir);
}
END_TEST

/* kill -9 at points spread over the run on port A, resume on port B: B
 * sees exactly the calls the ledger did not hold, and the export equals
 * the uninterrupted run's. */
START_TEST(killed_run_resumes_on_another_port)
{
    reference ref;
    int kills = 0;

    reference_run(&ref);
    for (int i = 0; i < 4; i++) {
        char name[16], *sdir, *exp;
        double held, sent;
        tu_sim a, b;

        snprintf(name, sizeof name, "k%d", i);
        sdir = tu_path(tu_tmp, name);
        tu_sim_start(&a, SLOW_SIM, NULL, NULL);
        kills += run_and_kill(NSED_BIN, a.url, sdir, ref.ms * (0.15 + 0.2 * i));
        tu_sim_stop(&a);
        held = ledger_entries(sdir);
        tu_sim_start(&b, SLOW_SIM, NULL, NULL);
        ck_assert_uint_ne(a.port, b.port);
        run_to_end(b.url, sdir);
        sent = total_requests(&b);
        tu_sim_stop(&b);
        ck_assert_msg(sent == ref.requests - held,
                      "kill %d: port B got %g requests, the ledger held %g "
                      "of %g calls",
                      i, sent, held, ref.requests);
        exp = export_of(sdir);
        ck_assert_msg(strcmp(exp, ref.export) == 0,
                      "kill %d: the resumed store exported other results", i);
        free(exp);
        free(sdir);
    }
    ck_assert_int_ge(kills, 2);
    free(ref.export);
}
END_TEST

/* The N of "(N from the ledger)" in a run summary. */
static double ledger_hits_of(const char *summary)
{
    const char *p = strstr(summary, " from the ledger)");

    ck_assert_msg(p != NULL, "no run summary in: %s", summary);
    while (p > summary && p[-1] >= '0' && p[-1] <= '9')
        p--;
    return strtod(p, NULL);
}

/* A store written by an nsed from before key form 2, killed mid-run,
 * resumed by this one on the same server: its form 1 entries answer.
 * (Across versions the plans of unfinished questions need not match call
 * for call, so this counts ledger answers rather than requests: a store
 * holding only form 1 keys gives no ledger answer at all without the
 * fallback.) */
START_TEST(old_store_resumes_from_its_ledger)
{
    const char *old = getenv("NSED_OLD_BIN");
    reference ref;
    int kills = 0;

    if (!old || !*old) {
        printf("old_store_resumes_from_its_ledger: skipped, NSED_OLD_BIN "
               "is not set\n");
        return;
    }
    reference_run(&ref);
    for (int i = 0; i < 3; i++) {
        char name[16], *sdir, *out = NULL, *err = NULL;
        double held, before, sent, hits;
        tu_sim a;

        snprintf(name, sizeof name, "o%d", i);
        sdir = tu_path(tu_tmp, name);
        tu_sim_start(&a, SLOW_SIM, NULL, NULL);
        kills += run_and_kill(old, a.url, sdir, ref.ms * (0.2 + 0.25 * i));
        held = ledger_entries(sdir);
        before = total_requests(&a);
        /* the old nsed hashed the workflow before keys it did not know
         * existed; the calls themselves are the same */
        ck_assert_msg(NSED(a.url, &out, &err, "run", DEMO_WF, "--questions",
                           DEMO_Q, "--store", sdir,
                           "--allow-workflow-change") == 0,
                      "run: %s", err);
        sent = total_requests(&a) - before;
        tu_sim_stop(&a);
        hits = ledger_hits_of(err);
        ck_assert_msg(hits > 0 && hits <= held,
                      "old store %d: %g ledger answers, %g entries held, "
                      "%g requests sent",
                      i, hits, held, sent);
        free(out);
        free(err);
        free(sdir);
    }
    ck_assert_int_ge(kills, 2);
    free(ref.export);
}
END_TEST

Suite *tu_suite(void)
{
    Suite *s = suite_create("ledgerkey");
    TCase *tc = tcase_create("resume on another port");

    tcase_add_checked_fixture(tc, tu_tmp_setup, tu_tmp_teardown);
    tcase_set_timeout(tc, 280);
    tcase_add_test(tc, finished_run_on_another_port_sends_nothing);
    tcase_add_test(tc, killed_run_resumes_on_another_port);
    tcase_add_test(tc, old_store_resumes_from_its_ledger);
    suite_add_tcase(s, tc);
    return s;
}
