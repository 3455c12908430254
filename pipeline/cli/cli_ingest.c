/* cli_ingest.c -- `nsed ingest WORKFLOW --questions FILE --store DIR` */
#include "pipeline/cli/cli.h"
#include "pipeline/questions/questions.h"
#include "pipeline/workflow/workflow.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

static const char ingest_usage[] =
    "usage: nsed ingest WORKFLOW --questions FILE --store DIR\n"
    "                   [--set KEY=VALUE]... [--allow-workflow-change]\n"
    "\n"
    "Create the run store DIR (or open it), bind it to WORKFLOW, and add the\n"
    "questions of FILE (JSONL). Ingestion is atomic (a file with a bad line\n"
    "adds nothing) and idempotent (questions already in the store with the\n"
    "same content are skipped; the same id with other content is an error).\n"
    "\n"
    "  -Q, --questions FILE       question set, one JSON object per line\n"
    "  -s, --store DIR            run store directory (created when absent)\n"
    "      --set KEY=VALUE        override a workflow key, as for nsed run\n"
    "                             (it binds the store to that hash)\n"
    "      --allow-workflow-change\n"
    "                             accept a store created with a different\n"
    "                             workflow hash; the change is recorded\n"
    "  -h, --help                 this text\n";

int cli_ingest(int argc, char **argv)
{
    static const struct option opts[] = {
        {"questions", required_argument, NULL, 'Q'},
        {"store", required_argument, NULL, 's'},
        {"allow-workflow-change", no_argument, NULL, 'A'},
        {"set", required_argument, NULL, CLI_OPT_SET},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    cli_opts_seen seen = {0};
    cli_sets sets = {0};
    const char *qpath = NULL, *dir = NULL, *wpath;
    int allow_change = 0, c, status;
    char *cmdline = cli_command_line(argc, argv);

    optind = 1;
    while ((c = cli_getopt(&seen, argc, argv, "Q:s:h", opts)) != -1) {
        switch (c) {
        case 'Q':
            qpath = optarg;
            break;
        case 's':
            dir = optarg;
            break;
        case 'A':
            allow_change = 1;
            break;
        case CLI_OPT_SET:
            status = cli_sets_add(&sets, "ingest", optarg);
            if (status) {
                free(cmdline);
                return status;
            }
            break;
        case 'h':
            free(cmdline);
            fputs(ingest_usage, stdout);
            return 0;
        default:
            free(cmdline);
            return cli_usage_error("ingest", "bad option");
        }
    }
    if (optind != argc - 1 || !qpath || !dir) {
        free(cmdline);
        if (optind != argc - 1)
            return cli_usage_error("ingest",
                                   "expected exactly one WORKFLOW file");
        return cli_usage_error("ingest", "--%s is required",
                               !qpath ? "questions FILE" : "store DIR");
    }
    wpath = argv[optind];

    workflow *wf = NULL;
    store *st = NULL;
    nsed_err err = {0};
    questions_stats qs = {0};
    size_t total = 0;

    if (!cmdline) {
        status = nsed_error(&err, NSED_ENOMEM, "out of memory");
        goto out;
    }
    /* before the store exists, so that a typo leaves no empty store */
    status = cli_check_inputs(wpath, &sets, qpath, false, &err);
    if (status)
        goto out;
    status = cli_open_bound_store(wpath, &sets, dir, allow_change, NULL,
                                  cmdline, &wf, &st, &err);
    if (status)
        goto out;
    status = questions_ingest(st, qpath, &qs, &err);
    if (status)
        goto out;
    status = questions_total(st, &total, &err);
    if (status)
        goto out;
    printf("%s: %zu questions (%zu new, %zu already in the store); "
           "store %s holds %zu\n",
           qpath, qs.added + qs.unchanged, qs.added, qs.unchanged, dir, total);
out:
    free(cmdline);
    store_close(st);
    workflow_free(wf);
    return status ? cli_fail(status, &err) : 0;
}
