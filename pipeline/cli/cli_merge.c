/* cli_merge.c -- `nsed merge OUT_STORE SHARD_STORE...`
 *
 * Options, help and printing only: the checks and the merge are
 * runner_merge's (runner_merge.h). */
#include "pipeline/base/num.h"
#include "pipeline/cli/cli.h"
#include "pipeline/runner/runner_merge.h"

#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static const char merge_usage[] =
    "usage: nsed merge OUT_STORE SHARD_STORE... [--partial] [--batch N]\n"
    "                  [--progress-interval SECONDS] [--quiet]\n"
    "\n"
    "Combine the shard stores of one run (nsed run --shard K/N) into one\n"
    "store OUT_STORE that nsed status, export, report and compare read as\n"
    "a single run's, and that a later nsed run (without --shard) can\n"
    "resume. The shards are opened read-only (a finished shard on NFS\n"
    "too) and checked first: the same workflow hash, seed and N; every\n"
    "index 0..N-1 once; the same question files ingested; every question\n"
    "in its own shard; every question finished. OUT_STORE must not exist,\n"
    "or be a store an earlier merge of the same run made (it is then\n"
    "replaced atomically). The merged store is built in\n"
    "OUT_STORE.merging and moved into place at the end, so a merge killed\n"
    "at any moment leaves OUT_STORE as it was, and the same command\n"
    "finishes it.\n"
    "\n"
    "      --partial             merge unfinished shards too: their\n"
    "                            unfinished questions stay resumable in\n"
    "                            OUT_STORE\n"
    "      --batch N             records per transaction (default 10000)\n"
    "      --progress-interval SECONDS\n"
    "                            when stderr is not a terminal, a plain\n"
    "                            progress line this often (default 30)\n"
    "  -q, --quiet               no progress and no summary line\n"
    "  -h, --help                this text\n"
    "\n"
    "Exit status: 0 merged; 1 shards missing or unfinished (the message\n"
    "names them), or a runtime failure; 2 usage, shards of different runs,\n"
    "a shard given twice, or OUT_STORE holding something else.\n";

typedef struct merge_print {
    bool tty, quiet;
    double interval_s, next_s;
} merge_print;

static void print_progress(void *user, const runner_merge_progress *p)
{
    merge_print *mp = user;
    double pct = p->total ? 100.0 * (double)p->records / (double)p->total
                          : 100.0;

    if (mp->quiet)
        return;
    if (mp->tty) {
        fprintf(stderr,
                "\r\033[Knsed merge: %" PRIu64 "/%" PRIu64
                " records (%.0f%%), shard %zu of %zu, %.1f s%s",
                p->records, p->total, pct, p->shard + 1, p->nshards,
                p->elapsed_s, p->final ? "\n" : "");
        fflush(stderr);
        return;
    }
    if (!p->final && p->elapsed_s < mp->next_s)
        return;
    while (mp->next_s <= p->elapsed_s)
        mp->next_s += mp->interval_s;
    fprintf(stderr,
            "nsed merge: progress: %" PRIu64 "/%" PRIu64
            " records (%.0f%%), shard %zu of %zu, elapsed %.0f s\n",
            p->records, p->total, pct, p->shard + 1, p->nshards, p->elapsed_s);
}

static void print_note(void *user, const char *line)
{
    const merge_print *mp = user;

    fprintf(stderr, "%snsed merge: %s\n",
            mp->tty && !mp->quiet ? "\r\033[K" : "", line);
}

int cli_merge(int argc, char **argv)
{
    static const struct option opts[] = {
        {"partial", no_argument, NULL, 'p'},
        {"batch", required_argument, NULL, 'b'},
        {"progress-interval", required_argument, NULL, 'P'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    cli_opts_seen seen = {0};
    merge_print mp = {.tty = isatty(2) == 1, .interval_s = 30};
    runner_merge_opts mo = {0};
    runner_merge_summary sum = {0};
    char *cmdline = cli_command_line(argc, argv);
    nsed_err err = {0};
    uint64_t v;
    int c, rc;

    optind = 1;
    while ((c = cli_getopt(&seen, argc, argv, "qh", opts)) != -1) {
        switch (c) {
        case 'p':
            mo.partial = true;
            break;
        case 'b':
            if (num_parse_u64(optarg, SIZE_MAX, &v) || v == 0) {
                free(cmdline);
                return cli_usage_error("merge",
                                       "--batch: \"%s\" is not a "
                                       "positive count",
                                       optarg);
            }
            mo.batch = (size_t)v;
            break;
        case 'P':
            if (num_parse_u64(optarg, 86400, &v) || v == 0) {
                free(cmdline);
                return cli_usage_error("merge",
                                       "--progress-interval: \"%s\" "
                                       "is not a whole number of seconds in "
                                       "1..86400",
                                       optarg);
            }
            mp.interval_s = (double)v;
            break;
        case 'q':
            mp.quiet = true;
            break;
        case 'h':
            free(cmdline);
            fputs(merge_usage, stdout);
            return 0;
        default:
            free(cmdline);
            return cli_usage_error("merge", "unknown option");
        }
    }
    if (argc - optind < 2) {
        free(cmdline);
        return cli_usage_error("merge", "give OUT_STORE and at least one "
                                        "SHARD_STORE");
    }
    if (!cmdline)
        return cli_fail(NSED_ENOMEM, NULL);
    mp.next_s = mp.interval_s;
    mo.out = argv[optind];
    mo.shards = (const char *const *)argv + optind + 1;
    mo.nshards = (size_t)(argc - optind - 1);
    mo.command_line = cmdline;
    mo.on_progress = print_progress;
    mo.on_note = print_note;
    mo.user = &mp;
    rc = runner_merge(&mo, &sum, &err);
    free(cmdline);
    if (rc)
        return cli_fail(rc, &err);
    if (!mp.quiet)
        fprintf(stderr,
                "nsed merge: %s: %" PRIu64 " questions: %" PRIu64
                " done, %" PRIu64 " degraded, %" PRIu64 " failed, %" PRIu64
                " unfinished; %" PRIu64 " calls (%" PRIu64 " from the "
                "ledger), $%.4f; %zu shards of %" PRIu32 "%s; %.2f s\n",
                mo.out, sum.questions, sum.done, sum.degraded, sum.failed,
                sum.unfinished, sum.calls, sum.ledger_hits, sum.cost_usd,
                mo.nshards, sum.count,
                sum.replaced ? " (the earlier merge replaced)" : "",
                sum.elapsed_s);
    return 0;
}
