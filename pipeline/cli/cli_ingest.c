/* cli_ingest.c -- `nsed ingest WORKFLOW --questions FILE --store DIR` */
#include "pipeline/cli/cli.h"
#include "pipeline/questions/questions.h"
#include "pipeline/workflow/workflow.h"

#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

static const char ingest_usage[] =
    "usage: nsed ingest WORKFLOW --questions FILE --store DIR\n"
    "                   [--set KEY=VALUE]... [--fields MAP] [--shard K/N]\n"
    "                   [--allow-workflow-change]\n"
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
    "      --fields MAP           read another dataset's shape, e.g.\n"
    "                             id=@line,question=problem,answer=solution\n"
    "                             (names: id question answer choices tags\n"
    "                             reference=auto|raw|gsm8k|boxed|choice_index;\n"
    "                             docs/questions.md)\n"
    "      --shard K/N            add only the questions of shard K of N\n"
    "                             (K counts from 0; auto/N takes K from\n"
    "                             SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX);\n"
    "                             the store then holds that shard only\n"
    "                             (see nsed run --help, docs/cluster.md)\n"
    "      --allow-workflow-change\n"
    "                             accept a store created with a different\n"
    "                             workflow hash; the change is recorded\n"
    "  -h, --help                 this text\n";

static void print_bad_line(const char *msg, void *arg)
{
    fprintf(stderr, "nsed %s: %s\n", (const char *)arg, msg);
}

/* The workflow's `questions:` mapping, or an unset map when it has none. */
static int map_from_workflow(const workflow *wf, questions_map *m,
                             nsed_err *err)
{
    const workflow_questions *w = &wf->questions;
    struct {
        const char *from;
        char **to;
    } f[] = {{w->question, &m->question},
             {w->answer, &m->answer},
             {w->choices, &m->choices},
             {w->tags, &m->tags},
             {w->id, &m->id}};

    memset(m, 0, sizeof *m);
    if (!w->id && !w->question && !w->answer && !w->choices && !w->tags &&
        w->reference == WORKFLOW_REF_AUTO)
        return 0;
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
        if (f[i].from && !(*f[i].to = strdup(f[i].from)))
            return nsed_error(err, NSED_ENOMEM, "out of memory");
    if (m->id && strcmp(m->id, "@line") == 0) {
        free(m->id);
        m->id = NULL;
        m->id_line = 1;
    }
    switch (w->reference) {
    case WORKFLOW_REF_AUTO:
        m->reference = QUESTIONS_REF_AUTO;
        break;
    case WORKFLOW_REF_RAW:
        m->reference = QUESTIONS_REF_RAW;
        break;
    case WORKFLOW_REF_GSM8K:
        m->reference = QUESTIONS_REF_GSM8K;
        break;
    case WORKFLOW_REF_BOXED:
        m->reference = QUESTIONS_REF_BOXED;
        break;
    case WORKFLOW_REF_CHOICE_INDEX:
        m->reference = QUESTIONS_REF_CHOICE_INDEX;
        break;
    }
    m->set = 1;
    return 0;
}

void cli_undo_note(const char *cmd, const store *st, size_t undone)
{
    if (undone)
        fprintf(stderr,
                "nsed %s: an earlier ingest into %s did not finish; the %zu "
                "questions it had added were removed first\n",
                cmd, store_dir(st), undone);
}

int cli_ingest_file(store *st, const workflow *wf, const char *cmd,
                    const char *qpath, const char *fields,
                    const cli_shard *shard, questions_stats *stats,
                    nsed_err *err)
{
    questions_map map = {0};
    questions_opts o = {.on_error = print_bad_line, .arg = (void *)cmd};
    int rc = 0;

    if (shard) {
        o.shard_index = shard->index;
        o.shard_count = shard->count;
    }

    if (!fields) {
        rc = map_from_workflow(wf, &map, err);
        if (rc)
            goto out;
        o.map = &map;
    } else {
        rc = questions_map_parse(fields, &map, err);
        if (rc)
            goto out;
        o.map = &map;
    }
    rc = questions_ingest_with(st, qpath, &o, stats, err);
    if (!rc)
        cli_undo_note(cmd, st, stats ? stats->undone : 0);
out:
    questions_map_release(&map);
    return rc;
}

int cli_ingest(int argc, char **argv)
{
    static const struct option opts[] = {
        {"questions", required_argument, NULL, 'Q'},
        {"store", required_argument, NULL, 's'},
        {"allow-workflow-change", no_argument, NULL, 'A'},
        {"set", required_argument, NULL, CLI_OPT_SET},
        {"fields", required_argument, NULL, 'F'},
        {"shard", required_argument, NULL, 'H'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    cli_opts_seen seen = {0};
    cli_sets sets = {0};
    cli_shard shard = {0};
    const char *qpath = NULL, *dir = NULL, *wpath, *fields = NULL;
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
        case 'F':
            fields = optarg;
            break;
        case 'H':
            status = cli_shard_parse("ingest", optarg, &shard);
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
    status = cli_open_bound_store(wpath, &sets, dir, allow_change, NULL, &shard,
                                  cmdline, &wf, &st, &err);
    if (status)
        goto out;
    status = cli_ingest_file(st, wf, "ingest", qpath, fields, &shard, &qs,
                             &err);
    if (status)
        goto out;
    status = questions_total(st, &total, &err);
    if (status)
        goto out;
    if (shard.count)
        printf("%s: %zu questions, %zu of them in shard %" PRIu32 "/%" PRIu32
               " (%zu new, %zu already in the store); store %s holds %zu\n",
               qpath, qs.questions, qs.added + qs.unchanged, shard.index,
               shard.count, qs.added, qs.unchanged, dir, total);
    else
        printf("%s: %zu questions (%zu new, %zu already in the store); "
               "store %s holds %zu\n",
               qpath, qs.added + qs.unchanged, qs.added, qs.unchanged, dir,
               total);
out:
    free(cmdline);
    store_close(st);
    workflow_free(wf);
    return status ? cli_fail(status, &err) : 0;
}
