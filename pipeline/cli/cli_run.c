/* cli_run.c -- `nsed run WORKFLOW --questions FILE --store DIR` */
#include "pipeline/cli/cli.h"
#include "pipeline/base/num.h"
#include "pipeline/gateway/gateway.h"
#include "pipeline/questions/questions.h"
#include "pipeline/runner/runner.h"
#include "pipeline/broker/telemetry.h"
#include "pipeline/workflow/workflow.h"

#include <errno.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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
    "      --fields MAP         field mapping of FILE (see nsed ingest --help)\n"
    "  -s, --store DIR          run store directory (created when absent)\n"
    "  -n, --limit N            run only the first N questions of the store\n"
    "      --shard K/N          run shard K of N (K counts from 0): the\n"
    "                           questions whose id hashes to K (SHA-256 of\n"
    "                           the id, first 8 bytes big-endian, mod N);\n"
    "                           DIR then holds that shard only and refuses\n"
    "                           another. auto/N takes K from\n"
    "                           SLURM_ARRAY_TASK_ID (a Slurm array task) or\n"
    "                           JOB_COMPLETION_INDEX (a Kubernetes Indexed\n"
    "                           Job); N is always given. nsed merge joins\n"
    "                           the shards (docs/cluster.md)\n"
    "      --set KEY=VALUE      override a workflow key (repeatable; the\n"
    "                           last of the same key wins): checked like\n"
    "                           the file, part of the workflow hash and\n"
    "                           recorded in the manifest; e.g. --set\n"
    "                           rounds.max=6 (docs/workflow.md)\n"
    "      --seed S             run seed instead of the workflow's `seed`\n"
    "                           (recorded; a store keeps the seed it began\n"
    "                           with)\n"
    "      --max-active N       questions in flight at once (default: twice\n"
    "                           the sum of the models' max_concurrency)\n"
    "      --allow-degraded     when a model cannot be reached after every\n"
    "                           retry, go on without its seat and flag the\n"
    "                           question degraded while the workflow's\n"
    "                           rounds.min_live_seats remain (default:\n"
    "                           leave it incomplete for the next run)\n"
    "      --retry-failed       run the questions that failed for good\n"
    "                           again (by default a rerun skips them)\n"
    "      --dry-run            print the requests the next stage would send\n"
    "                           (one JSON line each, API keys left out) and\n"
    "                           send nothing (no preflight either)\n"
    "      --no-preflight       skip the check of every endpoint before the\n"
    "                           run (GET <endpoint>/models: reachable, the\n"
    "                           key accepted, the model listed)\n"
    "      --cache DIR          a call cache shared across stores on this\n"
    "                           machine (created when absent): a call this\n"
    "                           store's ledger lacks is answered from it when\n"
    "                           any run recorded it there, and every call made\n"
    "                           is added to it (docs/gateway.md)\n"
    "      --telemetry FILE     make the telemetry exported from another\n"
    "                           store (nsed status --telemetry-out FILE)\n"
    "                           the prior of this store's broker; it is\n"
    "                           kept in the store and replaces an earlier\n"
    "                           one (see docs/broker.md)\n"
    "      --allow-workflow-change\n"
    "                           accept a store created with another workflow\n"
    "                           hash; the change is recorded\n"
    "      --outage-budget SECONDS\n"
    "                           while no team can be served (every team\n"
    "                           needs a model paused by its circuit\n"
    "                           breaker) no new question starts; after\n"
    "                           SECONDS of that (default 600) the run\n"
    "                           commits what is finished, prints the\n"
    "                           command that resumes it and exits 1\n"
    "      --progress-interval SECONDS\n"
    "                           when stderr is not a terminal (a log file,\n"
    "                           Slurm, Kubernetes), print a plain progress\n"
    "                           line every SECONDS (default 30); on a\n"
    "                           terminal the line is redrawn in place\n"
    "  -q, --quiet              no progress line\n"
    "  -h, --help               this text\n"
    "\n"
    "Ctrl-C (or SIGTERM) stops after committing what is finished.\n"
    "\n"
    "Each question ends done (a final answer, every seat served), degraded\n"
    "(a final answer, seats lost: --allow-degraded), incomplete (a transient\n"
    "failure: the same command resumes it) or failed (no usable answer, a\n"
    "permanent error such as HTTP 400/401/403/404 or a prompt over the\n"
    "context, or input nsed cannot process; nsed status says why).\n"
    "\n"
    "Exit status: 0 every question done or degraded, 1 some incomplete\n"
    "(run the same command again) or a runtime failure, 2 bad input,\n"
    "3 none incomplete but some failed, 130 interrupted (run the same\n"
    "command again).\n";

static void print_summary(const runner_summary *s, const char *dir, int quiet,
                          bool cached)
{
    char cache_note[64] = "";

    /* with --cache: the calls it answered (and so nobody paid again) */
    if (cached)
        snprintf(cache_note, sizeof cache_note, ", %llu from the cache",
                 (unsigned long long)s->cache_hits);
    if (!quiet)
        fprintf(stderr,
                "nsed run: %zu questions: %zu done, %zu degraded, %zu "
                "incomplete, %zu failed (%zu finished now, %zu before); %llu "
                "calls (%llu from the ledger%s), %lld tokens, $%.4f, %.1f "
                "s\n",
                s->questions, s->done, s->degraded, s->incomplete, s->failed,
                s->finished, s->already_done, (unsigned long long)s->calls,
                (unsigned long long)s->ledger_hits, cache_note,
                (long long)(s->prompt_tokens + s->completion_tokens),
                s->cost_usd, s->elapsed_s);
    if (s->incomplete)
        fprintf(stderr,
                "nsed run: %zu questions are incomplete; run the same "
                "command again to resume them (see nsed status --store %s)\n",
                s->incomplete, dir);
    if (s->failed)
        fprintf(stderr,
                "nsed run: %zu questions failed (nsed status --store %s says "
                "why); a rerun skips them unless --retry-failed\n",
                s->failed, dir);
}

/* How progress reaches stderr: redrawn in place on a terminal; on a pipe
 * or file (Slurm, Kubernetes, nohup logs) one plain line every
 * interval_s seconds, with no escape sequences. */
typedef struct run_progress {
    bool tty;
    double interval_s; /* not a terminal: seconds between lines */
    double next_s;     /* not a terminal: elapsed time of the next line */
} run_progress;

#define RUN_PROGRESS_INTERVAL_S 30 /* default of --progress-interval */

/* "m:ss", or "h:mm:ss" from an hour on. */
static void fmt_duration(char *out, size_t size, double secs)
{
    long t = secs > 0 && secs < 1e9 ? (long)(secs + 0.5) : 0;

    if (t >= 3600)
        snprintf(out, size, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(out, size, "%ld:%02ld", t / 60, t % 60);
}

/* The figures of a progress report, as one line without newline. */
static void fmt_progress(char *out, size_t size, const runner_progress *p)
{
    char eta[32] = "-", paused[256] = "";
    size_t n = 0;

    if (p->has_eta)
        fmt_duration(eta, sizeof eta, p->eta_s);
    else if (p->npaused > 0)
        snprintf(eta, sizeof eta, "- (paused)");
    for (size_t i = 0;
         i < p->npaused && i < RUNNER_PROGRESS_PAUSED_MAX && n < sizeof paused;
         i++) {
        int w = snprintf(paused + n, sizeof paused - n, "%s%s",
                         i ? ", " : ", paused: ", p->paused[i]);

        if (w > 0)
            n += (size_t)w;
    }
    if (p->npaused > RUNNER_PROGRESS_PAUSED_MAX && n < sizeof paused)
        snprintf(paused + n, sizeof paused - n, " and %zu more",
                 p->npaused - RUNNER_PROGRESS_PAUSED_MAX);
    snprintf(out, size,
             "%zu/%zu done, %zu active, %zu calls in flight, %llu "
             "retries%s, %.1fk tokens, $%.4f, ETA %s",
             p->done, p->total, p->active, p->in_flight,
             (unsigned long long)p->retries, paused, (double)p->tokens / 1000.0,
             p->cost_usd, eta);
}

/* The runner's progress: one line redrawn on a terminal, a plain line
 * every interval on anything else (and the last one at the end). */
static void print_progress(void *ctx, const runner_progress *p)
{
    run_progress *rp = ctx;
    char line[1024], el[32];

    if (rp->tty) {
        fmt_progress(line, sizeof line, p);
        fprintf(stderr, "\r\033[K%s%s", line, p->final ? "\n" : "");
        fflush(stderr);
        return;
    }
    if (!p->final && p->elapsed_s < rp->next_s)
        return;
    while (rp->next_s <= p->elapsed_s)
        rp->next_s += rp->interval_s;
    fmt_progress(line, sizeof line, p);
    fmt_duration(el, sizeof el, p->elapsed_s);
    fprintf(stderr, "nsed run: progress: %s, elapsed %s\n", line, el);
    fflush(stderr);
}

/* The runner's events (endpoint down/up, a question left incomplete), each
 * on a line of its own (over the progress line on a terminal). */
static void print_event(void *ctx, const char *line)
{
    const run_progress *rp = ctx;

    fprintf(stderr, "%s%s\n", rp->tty ? "\r\033[K" : "", line);
    fflush(stderr);
}

/* A preflight note (an endpoint that lists no models). */
static void note_line(const char *line, void *user)
{
    (void)user;
    fprintf(stderr, "nsed run: %s\n", line);
}

/* Preflight the endpoints of the models some team can seat, before the
 * store exists: a wrong port or an unknown model fails in seconds with
 * exit 2 and leaves nothing behind. */
static int preflight(const char *wpath, const cli_sets *sets, int quiet,
                     nsed_err *err)
{
    workflow_options opt = {.overrides = sets->v, .noverrides = sets->n};
    workflow *wf = NULL;
    bool *use = NULL;
    int rc = workflow_load_with(wpath, &opt, &wf, err);

    if (rc)
        return rc;
    use = calloc(wf->nmodels ? wf->nmodels : 1, sizeof *use);
    if (!use) {
        rc = nsed_error(err, NSED_ENOMEM, "out of memory");
        goto out;
    }
    for (size_t t = 0; t < wf->nteams; t++) {
        for (size_t r = 0; r < wf->teams[t].nroles; r++) {
            const workflow_role *ro = &wf->teams[t].roles[r];

            for (size_t k = 0; k < ro->nallowed; k++)
                use[ro->allowed[k]] = true;
        }
    }
    rc = gateway_preflight(wf, use, quiet ? NULL : note_line, NULL, err);
out:
    free(use);
    workflow_free(wf);
    return rc;
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

/* Open the call cache of --cache before anything starts: one that cannot
 * be opened is bad input (exit 2) and nothing is created but, at most,
 * the cache's directory. The store's directory may not be the cache: LMDB
 * must not open one environment twice in a process. */
static int open_cache(const char *cdir, const char *sdir, cache **out,
                      nsed_err *err)
{
    struct stat cs, ss;
    nsed_err cerr = {0};
    int rc = cache_open(cdir, out, &cerr);

    if (rc)
        return nsed_error(err, NSED_EINVAL, "--cache %s: %s", cdir, cerr.msg);
    if (stat(cdir, &cs) == 0 && stat(sdir, &ss) == 0 &&
        cs.st_dev == ss.st_dev && cs.st_ino == ss.st_ino) {
        cache_close(*out);
        *out = NULL;
        return nsed_error(err, NSED_EINVAL,
                          "--cache %s is the store directory; give the "
                          "cache a directory of its own",
                          cdir);
    }
    return 0;
}

/* Said before the first progress line: references that read like
 * rationales score 0% without any other sign (docs/questions.md). */
static int warn_rationales(store *st, nsed_err *err)
{
    questions_refcheck c = {0};
    int rc = questions_check_references(st, &c, err);

    if (rc || !c.rationale)
        return rc;
    fprintf(stderr,
            "nsed run: warning: %zu of %zu references look like rationales, "
            "not answers (question \"%s\": %s); they will rarely match. "
            "Give a reference extractor: --fields ...,reference=gsm8k|boxed "
            "(docs/questions.md)\n",
            c.rationale, c.with_answer, c.example, c.why);
    return 0;
}

int cli_run(int argc, char **argv)
{
    static const struct option opts[] = {
        {"questions", required_argument, NULL, 'Q'},
        {"fields", required_argument, NULL, 0x146},
        {"store", required_argument, NULL, 's'},
        {"limit", required_argument, NULL, 'n'},
        {"seed", required_argument, NULL, 'S'},
        {"set", required_argument, NULL, CLI_OPT_SET},
        {"max-active", required_argument, NULL, 'M'},
        {"allow-degraded", no_argument, NULL, 'D'},
        {"retry-failed", no_argument, NULL, 'F'},
        {"dry-run", no_argument, NULL, 'R'},
        {"no-preflight", no_argument, NULL, 'N'},
        {"allow-workflow-change", no_argument, NULL, 'A'},
        {"telemetry", required_argument, NULL, 'T'},
        {"cache", required_argument, NULL, 'C'},
        {"progress-interval", required_argument, NULL, 'P'},
        {"outage-budget", required_argument, NULL, 'O'},
        {"shard", required_argument, NULL, 'H'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    cli_opts_seen seen = {0};
    cli_sets sets = {0};
    cli_shard shard = {0};
    const char *qpath = NULL, *dir = NULL, *tpath = NULL, *cdir = NULL;
    const char *fields = NULL;
    char *cmdline = cli_command_line(argc, argv);
    runner_opts ro = {.stop_fd = -1};
    sigset_t stop;
    runner_summary sum = {0};
    run_progress rp = {.tty = isatty(2) == 1,
                       .interval_s = RUN_PROGRESS_INTERVAL_S};
    int allow_change = 0, quiet = 0, has_seed = 0, no_preflight = 0, c, rc;
    uint64_t seed = 0;
    uint64_t v;
    workflow *wf = NULL;
    store *st = NULL;
    nsed_err err = {0};
    questions_stats qs = {0};

    optind = 1;
    while ((c = cli_getopt(&seen, argc, argv, "Q:s:n:qh", opts)) != -1) {
        switch (c) {
        case 'Q':
            qpath = optarg;
            break;
        case 0x146: /* --fields */
            fields = optarg;
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
        case CLI_OPT_SET:
            rc = cli_sets_add(&sets, "run", optarg);
            if (rc) {
                free(cmdline);
                return rc;
            }
            break;
        case 'P':
            if (num_parse_u64(optarg, 86400, &v) || v == 0) {
                free(cmdline);
                return cli_usage_error("run",
                                       "--progress-interval: \"%s\" "
                                       "is not a whole number of seconds in "
                                       "1..86400",
                                       optarg);
            }
            rp.interval_s = (double)v;
            break;
        case 'O':
            if (num_parse_u64(optarg, 86400 * 7, &v) || v == 0) {
                free(cmdline);
                return cli_usage_error("run",
                                       "--outage-budget: \"%s\" is not a "
                                       "whole number of seconds in "
                                       "1..604800",
                                       optarg);
            }
            ro.outage_budget_s = (double)v;
            break;
        case 'H':
            rc = cli_shard_parse("run", optarg, &shard);
            if (rc) {
                free(cmdline);
                return rc;
            }
            break;
        case 'D':
            ro.allow_degraded = true;
            break;
        case 'F':
            ro.retry_failed = true;
            break;
        case 'R':
            ro.dry_run = stdout;
            break;
        case 'N':
            no_preflight = 1;
            break;
        case 'A':
            allow_change = 1;
            break;
        case 'T':
            tpath = optarg;
            break;
        case 'C':
            cdir = optarg;
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
    /* before the store exists, so that a typo leaves no empty store */
    rc = cli_check_inputs(argv[optind], &sets, qpath, !ro.dry_run, &err);
    if (!rc && !ro.dry_run && !no_preflight)
        rc = preflight(argv[optind], &sets, quiet, &err);
    if (!rc && cdir)
        rc = open_cache(cdir, dir, &ro.cache, &err);
    if (rc)
        goto out;
    rc = cli_open_bound_store(argv[optind], &sets, dir, allow_change,
                              has_seed ? &seed : NULL, &shard, cmdline, &wf,
                              &st, &err);
    if (rc)
        goto out;
    if (tpath) {
        rc = import_telemetry(wf, st, tpath, quiet, &err);
        if (rc)
            goto out;
    }
    if (qpath) {
        rc = cli_ingest_file(st, wf, "run", qpath, fields, &shard, &qs, &err);
        if (rc)
            goto out;
        if (!quiet && qs.added && shard.count)
            fprintf(stderr,
                    "nsed run: %s: %zu new questions in shard %" PRIu32
                    "/%" PRIu32 " (%zu of the file's %zu are in other "
                    "shards)\n",
                    qpath, qs.added, shard.index, shard.count, qs.other_shards,
                    qs.questions);
        else if (!quiet && qs.added)
            fprintf(stderr, "nsed run: %s: %zu new questions\n", qpath,
                    qs.added);
    } else {
        /* the questions of an ingest that did not finish belong to no
         * question set: they are not run */
        size_t undone = 0;

        rc = questions_recover(st, &undone, &err);
        if (rc)
            goto out;
        cli_undo_note("run", st, undone);
    }
    rc = warn_rationales(st, &err);
    if (rc)
        goto out;
    rp.next_s = rp.interval_s;
    if (!quiet && !ro.dry_run)
        ro.on_progress = print_progress;
    ro.on_event = print_event;
    ro.cb_ctx = &rp;
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
    if (sum.gave_up)
        fprintf(stderr,
                "nsed run: giving up: no team could be served for %.0f s "
                "(--outage-budget %.0f); everything finished is saved, %zu "
                "questions in flight are incomplete and %zu not started. "
                "When the endpoints are back, resume with:\n  %s\n",
                sum.outage_s, runner_outage_budget(&ro), sum.incomplete,
                sum.not_started, cmdline);
    if (!ro.dry_run)
        print_summary(&sum, dir, quiet, ro.cache != NULL);
    if (!ro.dry_run && (sum.incomplete || sum.gave_up)) {
        rc = NSED_ENET;
        /* what is left in err was handled on the way (e.g. a new store
         * with no manifest yet); the summary already said what failed */
        err.msg[0] = '\0';
    }
out:
    free(cmdline);
    store_close(st);
    cache_close(ro.cache);
    workflow_free(wf);
    if (rc == NSED_ENET && !err.msg[0])
        return 1;
    if (rc)
        return cli_fail(rc, &err);
    if (sum.interrupted)
        return 130;
    /* none incomplete (that was 1 above) but some failed for good */
    return !ro.dry_run && sum.failed ? 3 : 0;
}
