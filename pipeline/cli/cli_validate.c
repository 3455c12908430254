/* cli_validate.c -- `nsed validate FILE...` */
#include "pipeline/cli/cli.h"
#include "pipeline/questions/questions.h"
#include "pipeline/workflow/workflow.h"

#include <errno.h>
#include <getopt.h>
#include <string.h>

static const char validate_usage[] =
    "usage: nsed validate [--quiet] [--set KEY=VALUE]... FILE...\n"
    "\n"
    "Check workflow files (.yaml, .yml) and question files (.jsonl) without\n"
    "running anything. For each workflow, print its normalized configuration\n"
    "(all defaults filled in) and its workflow hash: the SHA-256 of a canonical\n"
    "form, unchanged by re-indenting, reordering keys or comments.\n"
    "Errors are printed as FILE:LINE:COL: message.\n"
    "\n"
    "  -q, --quiet   print only one line per file\n"
    "      --set KEY=VALUE\n"
    "                override a key of every workflow given, as nsed run\n"
    "                --set does; the hash printed is the effective one\n"
    "  -h, --help    this text\n"
    "\n"
    "Exit status: 0 when every file is valid, 2 when any is not.\n";

static int validate_workflow(const char *path, const cli_sets *sets, int quiet)
{
    workflow_options opt = {.overrides = sets->v, .noverrides = sets->n};
    workflow *wf = NULL;
    nsed_err err = {0};
    int rc;

    rc = workflow_load_with(path, &opt, &wf, &err);
    if (rc)
        return cli_fail(rc, &err);
    if (!quiet)
        rc = workflow_print_normalized(wf, stdout);
    if (rc == NSED_EIO) {
        /* stdout failed: say how, unless the reader just went away (as
         * for nsed export); cleared, so that it is said once */
        int e = errno;

        rc = e == EPIPE ? 0
                        : nsed_error(&err, NSED_EIO, "write failed: %s",
                                     strerror(e ? e : EIO));
        clearerr(stdout);
    } else if (rc) {
        nsed_error(&err, rc, "%s: cannot print the normalized workflow: %s",
                   path, nsed_strerror(rc));
    } else {
        printf("%s: ok, workflow hash %s\n", path, workflow_hash(wf));
    }
    workflow_free(wf);
    return rc ? cli_fail(rc, &err) : 0;
}

static void print_bad_line(const char *msg, void *arg)
{
    (void)arg;
    fprintf(stderr, "nsed validate: %s\n", msg);
}

static int validate_questions(const char *path)
{
    questions_stats st = {0};
    nsed_err err = {0};
    questions_opts o = {NULL, print_bad_line, NULL};
    int rc;

    /* every bad line, up to QUESTIONS_ERRORS_SHOWN */
    rc = questions_check_file_with(path, &o, &st, &err);
    if (rc)
        return cli_fail(rc, &err);
    printf("%s: ok, %zu questions\n", path, st.questions);
    return 0;
}

int cli_validate(int argc, char **argv)
{
    static const struct option opts[] = {
        {"quiet", no_argument, NULL, 'q'},
        {"set", required_argument, NULL, CLI_OPT_SET},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    cli_opts_seen seen = {0};
    cli_sets sets = {0};
    int quiet = 0, c, status = 0, frc;
    nsed_err err = {0};

    optind = 1;
    while ((c = cli_getopt(&seen, argc, argv, "qh", opts)) != -1) {
        switch (c) {
        case 'q':
            quiet = 1;
            break;
        case CLI_OPT_SET:
            status = cli_sets_add(&sets, "validate", optarg);
            if (status)
                return status;
            break;
        case 'h':
            fputs(validate_usage, stdout);
            return 0;
        default:
            return cli_usage_error("validate", "bad option");
        }
    }
    if (optind >= argc)
        return cli_usage_error("validate", "no files given");
    for (int i = optind; i < argc; i++) {
        /* .json: a JSON array of questions (docs/questions.md) */
        int rc = cli_has_suffix(argv[i], ".jsonl") ||
                         cli_has_suffix(argv[i], ".json")
                     ? validate_questions(argv[i])
                     : validate_workflow(argv[i], &sets, quiet);

        if (rc > status)
            status = rc;
    }
    /* what was printed must have got out: an exit status of 0 says so */
    frc = cli_stdout_flush(&err);
    if (frc) {
        int rc = cli_fail(frc, &err);

        if (rc > status)
            status = rc;
    }
    return status;
}
