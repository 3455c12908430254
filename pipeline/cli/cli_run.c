/* cli_run.c -- `nsed run WORKFLOW --questions FILE --store DIR` */
#include "pipeline/cli/cli.h"
#include "pipeline/base/num.h"
#include "pipeline/questions/questions.h"
#include "pipeline/runner/runner.h"
#include "pipeline/broker/telemetry.h"
#include "pipeline/workflow/workflow.h"

#include <errno.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char run_usage[] =
    "usage: nsed run WORKFLOW --questions FILE --store DIR [options]\n"
    "\n"
    "Ingest the questions into the run store DIR (idempotent) and run every\n"
    "question that has no result yet through the deliberation. Every stage\n"
    "is committed to the store as it finishes and every model call is\n"
    "recorded in the call ledger, so the same command run again after an\n"
    "interruption (even kill -9) continues where it stopped, pays for no\n"
    "call twice, and ends with the same results.\n"
    "\n"
    "  -Q, --questions FILE     question set (JSONL); optional when the store\n"
    "                           already holds the questions\n"
    "  -s, --store DIR          run store directory (created when absent)\n"
    "  -n, --limit N            run only the first N questions of the store\n"
    "      --seed S             run seed instead of the workflow's `seed`\n"
    "                           (recorded; a store keeps the seed it began\n"
    "                           with)\n"
    "      --max-active N       questions in flight at once (default: twice\n"
    "                           the sum of the models' max_concurrency)\n"
    "      --allow-degraded     when a model cannot be reached after every\n"
    "                           retry, go on without its seat and flag the\n"
    "                           question degraded (default: leave it\n"
    "                           incomplete for the next run to resume)\n"
    "      --dry-run            print the requests the next stage would send\n"
    "                           (one JSON line each, API keys left out) and\n"
    "                           send nothing\n"
    "      --telemetry FILE     make the telemetry exported from another\n"
    "                           store (nsed status --telemetry-out FILE)\n"
    "                           the prior of this store's broker; it is\n"
    "                           kept in the store and replaces an earlier\n"
    "                           one (see docs/broker.md)\n"
    "      --allow-workflow-change\n"
    "                           accept a store created with another workflow\n"
    "                           hash; the change is recorded\n"
    "  -q, --quiet              no progress line\n"
    "  -h, --help               this text\n"
    "\n"
    "Ctrl-C (or SIGTERM) stops after committing what is finished.\n"
    "\n"
    "Exit status: 0 every question finished, 1 some were left incomplete\n"
    "(run the same command again) or a runtime failure, 2 bad input,\n"
    "130 interrupted (run the same command again).\n";

static void print_summary(const runner_summary *s, const char *dir,
                          int quiet)
{
    if (!quiet)
        fprintf(stderr,
            "nsed run: %zu questions: %zu finished now (%zu degraded), %zu "
            "finished before, %zu incomplete; %llu calls (%llu from the "
            "ledger), %lld tokens, $%.4f, %.1f s\n",
            s->questions, s->finished, s->degraded, s->already_done,
            s->incomplete, (unsigned long long)s->calls,
            (unsigned long long)s->ledger_hits,
            (long long)(s->prompt_tokens + s->completion_tokens), s->cost_usd,
            s->elapsed_s);
    if (s->incomplete)
        fprintf(stderr,
                "nsed run: %zu questions are incomplete; run the same "
                "command again to resume them (see nsed status --store %s)\n",
                s->incomplete, dir);
}

/* The runner's progress, as one line redrawn on stderr (a terminal). */
static void print_progress(void *ctx, const runner_progress *p)
{
    char eta[32] = "-";

    (void)ctx;
    if (p->has_eta)
        snprintf(eta, sizeof eta, "%d:%02d", (int)p->eta_s / 60,
                 (int)p->eta_s % 60);
    fprintf(stderr,
            "\r\033[K%zu/%zu done, %zu active, %zu calls in flight, "
            "%.1fk tokens, $%.4f, ETA %s",
            p->done, p->total, p->active, p->in_flight,
            (double)p->tokens / 1000.0, p->cost_usd, eta);
    if (p->final)
        fputc('\n', stderr);
    fflush(stderr);
}

/* The runner's events (endpoint down/up, a question left incomplete), each
 * on a line of its own over the progress line. */
static void print_event(void *ctx, const char *line)
{
    (void)ctx;
    fprintf(stderr, "\r\033[K%s\n", line);
    fflush(stderr);
}

static int put_prior_fn(store_txn *txn, void *arg, nsed_err *err)
{
    int rc = telemetry_put_prior(txn, arg);

    if (rc)
        return nsed_error(err, rc, "cannot store the telemetry prior: %s",
                          nsed_strerror(rc));
    return 0;
}

/* Make the telemetry file at path the store's broker prior. */
static int import_telemetry(const workflow *wf, store *st, const char *path,
                            int quiet, nsed_err *err)
{
    telemetry *t = NULL;
    size_t unknown = 0;
    int rc = telemetry_new(wf, &t);

    if (rc)
        return nsed_error(err, rc, "out of memory");
    rc = telemetry_import_file(t, path, &unknown, err);
    if (!rc)
        rc = store_write(st, put_prior_fn, t, err);
    if (!rc && !quiet)
        fprintf(stderr, "nsed run: %s: telemetry prior loaded%s\n", path,
                unknown ? " (models this workflow lacks were ignored)" : "");
    telemetry_free(t);
    return rc;
}

int cli_run(int argc, char **argv)
{
    static const struct option opts[] = {
        {"questions", required_argument, NULL, 'Q'},
        {"store", required_argument, NULL, 's'},
        {"limit", required_argument, NULL, 'n'},
        {"seed", required_argument, NULL, 'S'},
        {"max-active", required_argument, NULL, 'M'},
        {"allow-degraded", no_argument, NULL, 'D'},
        {"dry-run", no_argument, NULL, 'R'},
        {"allow-workflow-change", no_argument, NULL, 'A'},
        {"telemetry", required_argument, NULL, 'T'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *qpath = NULL, *dir = NULL, *tpath = NULL;
    char *cmdline = cli_command_line(argc, argv);
    runner_opts ro = {.stop_fd = -1};
    sigset_t stop;
    runner_summary sum = {0};
    int allow_change = 0, quiet = 0, has_seed = 0, c, rc;
    uint64_t seed = 0;
    uint64_t v;
    workflow *wf = NULL;
    store *st = NULL;
    nsed_err err = {0};
    questions_stats qs = {0};

    optind = 1;
    while ((c = getopt_long(argc, argv, "Q:s:n:qh", opts, NULL)) != -1) {
        switch (c) {
        case 'Q':
            qpath = optarg;
            break;
        case 's':
            dir = optarg;
            break;
        case 'n':
        case 'M':
            if (num_parse_u64(optarg, SIZE_MAX, &v) || v == 0) {
                free(cmdline);
                return cli_usage_error("run", "--%s: \"%s\" is not a "
                                       "positive count",
                                       c == 'n' ? "limit" : "max-active",
                                       optarg);
            }
            if (c == 'n')
                ro.limit = v;
            else
                ro.max_active = v;
            break;
        case 'S':
            if (num_parse_u64(optarg, SIZE_MAX, &v)) {
                free(cmdline);
                return cli_usage_error("run", "--seed: \"%s\" is not an "
                                       "unsigned integer", optarg);
            }
            seed = v;
            has_seed = 1;
            break;
        case 'D':
            ro.allow_degraded = true;
            break;
        case 'R':
            ro.dry_run = stdout;
            break;
        case 'A':
            allow_change = 1;
            break;
        case 'T':
            tpath = optarg;
            break;
        case 'q':
            quiet = 1;
            break;
        case 'h':
            free(cmdline);
            fputs(run_usage, stdout);
            return 0;
        default:
            free(cmdline);
            return cli_usage_error("run", "bad option");
        }
    }
    if (optind != argc - 1 || !dir) {
        free(cmdline);
        if (optind != argc - 1)
            return cli_usage_error("run", "expected exactly one WORKFLOW file");
        return cli_usage_error("run", "--store DIR is required");
    }
    if (!cmdline) {
        rc = nsed_error(&err, NSED_ENOMEM, "out of memory");
        goto out;
    }
    rc = cli_open_bound_store(argv[optind], dir, allow_change,
                              has_seed ? &seed : NULL, cmdline, &wf, &st,
                              &err);
    if (rc)
        goto out;
    if (tpath) {
        rc = import_telemetry(wf, st, tpath, quiet, &err);
        if (rc)
            goto out;
    }
    if (qpath) {
        rc = questions_ingest(st, qpath, &qs, &err);
        if (rc)
            goto out;
        if (!quiet && qs.added)
            fprintf(stderr, "nsed run: %s: %zu new questions\n", qpath,
                    qs.added);
    }
    if (!quiet && !ro.dry_run && isatty(2))
        ro.on_progress = print_progress;
    ro.on_event = print_event;
    /* Ctrl-C or SIGTERM: finish the loop turn, commit, say how to go on.
     * A signalfd keeps this free of handlers and global flags. */
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    if (sigprocmask(SIG_BLOCK, &stop, NULL) == 0)
        ro.stop_fd = signalfd(-1, &stop, SFD_NONBLOCK | SFD_CLOEXEC);
    rc = runner_run(wf, st, &ro, &sum, &err);
    if (ro.stop_fd >= 0)
        close(ro.stop_fd);
    if (rc)
        goto out;
    if (sum.interrupted) {
        fprintf(stderr,
                "nsed run: interrupted after %zu questions finished in this "
                "run; everything finished is saved: run the same command "
                "again to continue\n",
                sum.finished);
        goto out;
    }
    if (!ro.dry_run)
        print_summary(&sum, dir, quiet);
    if (!ro.dry_run && sum.incomplete) {
        rc = NSED_ENET;
        /* what is left in err was handled on the way (e.g. a new store
         * with no manifest yet); the summary already said what failed */
        err.msg[0] = '\0';
    }
out:
    free(cmdline);
    store_close(st);
    workflow_free(wf);
    if (rc == NSED_ENET && !err.msg[0])
        return 1;
    if (rc)
        return cli_fail(rc, &err);
    return sum.interrupted ? 130 : 0;
}
