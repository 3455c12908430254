/* The runner's commits (issue 15, item 1), end to end: `nsed run` against
 * nsed-sim.
 *
 *   - During the loop a commit makes one device flush, not two: the data
 *     pages are synced (fdatasync) and the meta page is left to the next
 *     commit's sync (store_defer_meta_sync); when the run ends, the data
 *     file is synced once more, so everything committed is durable. Seen
 *     from outside with strace: the writes through LMDB's O_DSYNC
 *     descriptor (one per commit before) stop once the loop starts, and
 *     the last thing done to the data file is an fdatasync.
 *   - A kill -9 at random moments (most of a turn is its commit, so most
 *     kills land in one) still resumes to the uninterrupted run's export
 *     byte for byte, and sends again at most the sum of max_concurrency
 *     calls, counted at the simulator.
 */
#include "testutil.h"

#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define DEMO_WF NSED_SOURCE_DIR "/workflows/demo.yaml"
#define DEMO_Q NSED_SOURCE_DIR "/workflows/demo-questions.jsonl"
#define SLOW_SIM NSED_SOURCE_DIR "/tests/data/runner/slow-sim.yaml"
#define STRACE "/usr/bin/strace"

/* The demo's three models have max_concurrency 8 each. */
#define CAPS_SUM 24

#define NSED(url, out, err, ...) TU_NSED(url, out, err, __VA_ARGS__)

/* What strace saw done to a store's data.mdb. */
typedef struct sync_trace {
    int data_fd, dsync_fd; /* the two descriptors LMDB opens on it */
    int dsync_writes;      /* pwrite64 through the O_DSYNC descriptor */
    int datasyncs;         /* fdatasync of the data descriptor */
    bool last_is_sync;     /* the last write or sync of the file */
} sync_trace;

/* Read strace -f output: "PID syscall(args) = result" lines, where a call
 * another thread interrupted (libcurl resolves names in threads) is split
 * into "PID call(args <unfinished ...>" and "PID <... call resumed>) =
 * result". */
static void read_trace(const char *path, sync_trace *t)
{
    char *text = tu_read_file(path, NULL), *line, *nl;
    int open_pid = -1; /* an unfinished openat of data.mdb */
    bool open_dsync = false;

    ck_assert_ptr_nonnull(text);
    memset(t, 0, sizeof *t);
    t->data_fd = t->dsync_fd = -1;
    for (line = text; *line; line = nl ? nl + 1 : line + strlen(line)) {
        const char *call = strchr(line, ' ');
        int fd = -1, pid = (int)strtol(line, NULL, 10);

        nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        if (!call)
            continue;
        call += strspn(call, " "); /* strace pads the pid to a width */
        if (!strncmp(call, "openat(", 7) && strstr(call, "/data.mdb\"")) {
            bool dsync = strstr(call, "O_DSYNC") != NULL;

            if (strstr(call, "<unfinished")) {
                open_pid = pid;
                open_dsync = dsync;
                continue;
            }
            fd = (int)strtol(strrchr(call, '=') + 1, NULL, 10);
            *(dsync ? &t->dsync_fd : &t->data_fd) = fd;
            continue;
        }
        if (!strncmp(call, "<... openat resumed>", 20) && pid == open_pid) {
            fd = (int)strtol(strrchr(call, '=') + 1, NULL, 10);
            *(open_dsync ? &t->dsync_fd : &t->data_fd) = fd;
            open_pid = -1;
            continue;
        }
        if (sscanf(call, "pwrite64(%d,", &fd) == 1) {
            if (fd == t->dsync_fd)
                t->dsync_writes++;
            if (fd == t->data_fd || fd == t->dsync_fd)
                t->last_is_sync = false;
        } else if (sscanf(call, "fdatasync(%d", &fd) == 1 && fd == t->data_fd) {
            t->datasyncs++;
            t->last_is_sync = true;
        }
    }
    free(text);
}

/* One commit, one flush: the O_DSYNC meta writes are those of the store's
 * set-up before the loop (schema, manifest, ingest), whatever the number
 * of commits; and the run ends with a sync of the data file. */
START_TEST(one_flush_per_commit_and_durable_at_the_end)
{
    char *sdir = tu_path(tu_tmp, "s"), *trace = tu_path(tu_tmp, "trace");
    char *out = NULL, *err = NULL;
    char *const argv[] = {STRACE,
                          "-f",
                          "-qq",
                          "-o",
                          trace,
                          "-e",
                          "trace=openat,pwrite64,fdatasync",
                          NSED_BIN,
                          "run",
                          DEMO_WF,
                          "--questions",
                          DEMO_Q,
                          "--store",
                          sdir,
                          "--quiet",
                          NULL};
    sync_trace t;
    tu_sim sim;

    if (access(STRACE, X_OK) != 0) {
        fprintf(stderr, "commit: no %s, the flush count is not checked\n",
                STRACE);
        free(sdir);
        free(trace);
        return;
    }
    tu_sim_start(&sim, SLOW_SIM, NULL, NULL);
    setenv("NSED_SIM_URL", sim.url, 1);
    {
        /* LeakSanitizer cannot run under ptrace (in the ASan build) */
        const char *asan = getenv("ASAN_OPTIONS");
        char opts[512];

        snprintf(opts, sizeof opts, "%s%sdetect_leaks=0", asan ? asan : "",
                 asan && *asan ? ":" : "");
        setenv("ASAN_OPTIONS", opts, 1);
    }
    ck_assert_msg(tu_run(argv, &out, &err) == 0, "run: %s", err);
    read_trace(trace, &t);
    fprintf(stderr,
            "commit: %d fdatasyncs of the data file, %d O_DSYNC meta "
            "writes\n",
            t.datasyncs, t.dsync_writes);
    ck_assert_int_ge(t.data_fd, 0);
    ck_assert_int_ge(t.dsync_fd, 0);
    /* the demo's 40 questions take well over a hundred commits */
    ck_assert_int_ge(t.datasyncs, 100);
    /* before: one O_DSYNC write per commit, as many as the fdatasyncs */
    ck_assert_int_le(t.dsync_writes, 5);
    ck_assert(t.last_is_sync);
    free(out);
    free(err);
    free(sdir);
    free(trace);
    tu_sim_stop(&sim);
}
END_TEST

static void run_to_end(const char *url, const char *sdir)
{
    char *out = NULL, *err = NULL;

    ck_assert_msg(NSED(url, &out, &err, "run", DEMO_WF, "--questions", DEMO_Q,
                       "--store", sdir, "--quiet") == 0,
                  "run: %s", err);
    free(out);
    free(err);
}

/* Stores killed once each at a random moment of the run (a fixed seed, so
 * a failure repeats), then resumed: each exports what the uninterrupted
 * run did, and the killed run and its resume together send at most the
 * uninterrupted run's calls plus the sum of max_concurrency. */
START_TEST(random_kills_resume_exactly_within_the_bound)
{
    const char *longmode = getenv("NSED_LONG_TESTS");
    int points = longmode && *longmode ? 60 : 20, kills = 0;
    char *rdir = tu_path(tu_tmp, "ref"), *ref_export;
    double ref_requests, ref_ms, t0, worst = 0;
    unsigned rng = 1515;
    tu_sim sim;

    tu_sim_start(&sim, SLOW_SIM, NULL, NULL);
    t0 = tu_now_ms();
    ref_requests = tu_sim_total_requests(&sim);
    run_to_end(sim.url, rdir);
    ref_ms = tu_now_ms() - t0;
    ref_requests = tu_sim_total_requests(&sim) - ref_requests;
    ref_export = tu_nsed_export(rdir);
    for (int i = 0; i < points; i++) {
        char name[16], *sdir, *exp;
        double before = tu_sim_total_requests(&sim), resent, at;

        rng = rng * 1103515245u + 12345u;
        at = 5 + (double)((rng >> 8) % 10000) / 10000 * ref_ms;
        snprintf(name, sizeof name, "k%d", i);
        sdir = tu_path(tu_tmp, name);
        kills += tu_nsed_run_or_kill(sim.url, DEMO_WF, DEMO_Q, sdir, at);
        run_to_end(sim.url, sdir);
        resent = tu_sim_total_requests(&sim) - before - ref_requests;
        if (resent > worst)
            worst = resent;
        ck_assert_msg(resent >= 0 && resent <= CAPS_SUM,
                      "kill %d at %.0f of %.0f ms: %.0f calls sent again "
                      "(at most %d may be)",
                      i, at, ref_ms, resent, CAPS_SUM);
        exp = tu_nsed_export(sdir);
        ck_assert_msg(strcmp(exp, ref_export) == 0,
                      "store %s exported other results", name);
        free(exp);
        free(sdir);
    }
    fprintf(stderr,
            "commit: %d of %d random kills hit a running run; worst "
            "re-sent calls per kill: %.0f (bound %d)\n",
            kills, points, worst, CAPS_SUM);
    ck_assert_int_ge(kills, points / 2);
    free(ref_export);
    free(rdir);
    tu_sim_stop(&sim);
}
END_TEST

Suite *tu_suite(void)
{
    Suite *s = suite_create("commit");
    TCase *tc = tcase_create("commits");

    tcase_add_checked_fixture(tc, tu_tmp_setup, tu_tmp_teardown);
    tcase_set_timeout(tc, 280);
    tcase_add_test(tc, one_flush_per_commit_and_durable_at_the_end);
    tcase_add_test(tc, random_kills_resume_exactly_within_the_bound);
    suite_add_tcase(s, tc);
    return s;
}
