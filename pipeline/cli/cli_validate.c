/* cli_validate.c -- `nsed validate FILE...` */
#include "pipeline/cli/cli.h"
#include "pipeline/questions/questions.h"
#include "pipeline/workflow/workflow.h"

#include <getopt.h>
#include <string.h>

static const char validate_usage[] =
    "usage: nsed validate [--quiet] FILE...\n"
    "\n"
    "Check workflow files (.yaml, .yml) and question files (.jsonl) without\n"
    "running anything. For each workflow, print its normalized configuration\n"
    "(all defaults filled in) and its workflow hash: the SHA-256 of a canonical\n"
    "form, unchanged by re-indenting, reordering keys or comments.\n"
    "Errors are printed as FILE:LINE:COL: message. YAML files marked\n"
    "`kind: nsed-sim` (simulated-server configs) are skipped.\n"
    "\n"
    "  -q, --quiet   print only one line per file\n"
    "  -h, --help    this text\n"
    "\n"
    "Exit status: 0 when every file is valid, 2 when any is not.\n";

/* 1 when the YAML file at path carries the top-level marker
 * `kind: nsed-sim` of a simulated-server config (not a workflow). Only the
 * first lines are looked at; a file that cannot be read is left for the
 * workflow loader to report. */
static int is_sim_config(const char *path)
{
    char line[256];
    int found = 0, lines = 0;
    FILE *f = fopen(path, "r");

    if (!f)
        return 0;
    while (!found && lines++ < 64 && fgets(line, sizeof line, f)) {
        const char *p = line + strlen("kind:");

        if (strncmp(line, "kind:", 5) != 0)
            continue;
        p += strspn(p, " \t");
        found = strncmp(p, "nsed-sim", 8) == 0 &&
                strchr(" \t#\r\n", p[8] ? p[8] : '\n') != NULL;
    }
    fclose(f);
    return found;
}

static int validate_workflow(const char *path, int quiet)
{
    workflow *wf = NULL;
    nsed_err err = {0};
    int rc;

    if (is_sim_config(path)) {
        printf("%s: skipped, a simulated-server config (check it with "
               "nsed-sim --check --config %s)\n", path, path);
        return 0;
    }
    rc = workflow_load(path, &wf, &err);
    if (rc)
        return cli_fail(&err);
    if (!quiet)
        rc = workflow_print_normalized(wf, stdout);
    if (rc) {
        nsed_error(&err, rc, "%s: cannot print the workflow: %s", path,
                   nsed_strerror(rc));
        workflow_free(wf);
        return cli_fail(&err);
    }
    printf("%s: ok, workflow hash %s\n", path, workflow_hash(wf));
    workflow_free(wf);
    return 0;
}

static int validate_questions(const char *path)
{
    questions_stats st = {0};
    nsed_err err = {0};
    int rc;

    rc = questions_check_file(path, &st, &err);
    if (rc)
        return cli_fail(&err);
    printf("%s: ok, %zu questions\n", path, st.questions);
    return 0;
}

int cli_validate(int argc, char **argv)
{
    static const struct option opts[] = {
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int quiet = 0, c, status = 0;

    optind = 1;
    while ((c = getopt_long(argc, argv, "qh", opts, NULL)) != -1) {
        switch (c) {
        case 'q':
            quiet = 1;
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
        int rc = cli_has_suffix(argv[i], ".jsonl")
                     ? validate_questions(argv[i])
                     : validate_workflow(argv[i], quiet);

        if (rc > status)
            status = rc;
    }
    return status;
}
