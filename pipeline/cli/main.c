/* main.c -- `nsed` entry point: process-wide setup and command dispatch. */
#include "pipeline/cli/cli.h"

#include "pipeline/base/suggest.h"

#include <curl/curl.h>
#include <malloc.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "usage: nsed <command> [options]\n"
    "\n"
    "N-Way Self-Evaluating Deliberation: a batch runner that makes several\n"
    "LLMs answer, review each other anonymously, vote and refine.\n"
    "\n"
    "commands:\n"
    "  validate FILE...          check workflow (.yaml) and question (.jsonl)\n"
    "                            files; print each workflow's normalized form\n"
    "                            and hash\n"
    "  run WORKFLOW --questions FILE --store DIR [--limit N] [--seed S]\n"
    "                            run the deliberation over a question set;\n"
    "                            resumable: the same command continues\n"
    "  ingest WORKFLOW --questions FILE --store DIR\n"
    "                            bind a store to a workflow and add questions\n"
    "                            (idempotent)\n"
    "  status --store DIR [--json] [--telemetry-out FILE]\n"
    "                            progress, accuracy, baselines, cost,\n"
    "                            per-model latency and errors, the broker's\n"
    "                            choices; export the telemetry\n"
    "  export --store DIR [-o FILE]\n"
    "                            one JSON line per finished question\n"
    "  team WORKFLOW [--store DIR] [--tags T1,T2] [--json]\n"
    "                            the team the broker would choose now, and\n"
    "                            why\n"
    "  compare STORE_A STORE_B [...] [--json]\n"
    "                            runs on the same questions: paired accuracy\n"
    "                            difference, McNemar, cost, calls, per tag\n"
    "  report --store DIR [--compare STORE]... -o FILE\n"
    "                            one self-contained HTML file: plots and\n"
    "                            tables of status\n"
    "  merge OUT_STORE SHARD_STORE...\n"
    "                            combine the shard stores of one run\n"
    "                            (run --shard K/N) into one store\n"
    "  version                   print the version\n"
    "  help [COMMAND]            this text, or a command's options\n"
    "\n"
    "Exit status: 0 success, 1 runtime failure (for run: some questions\n"
    "incomplete, run again), 2 bad input or usage, 3 (run) some questions\n"
    "failed for good, 130 (run) interrupted.\n";

struct command {
    const char *name;
    int (*fn)(int argc, char **argv);
};

/* one command a line, so that adding one is one line */
/* clang-format off */
static const struct command commands[] = {
    {"validate", cli_validate},
    {"ingest", cli_ingest},
    {"status", cli_status},
    {"run", cli_run},
    {"export", cli_export},
    {"team", cli_team},
    {"compare", cli_compare},
    {"report", cli_report},
    {"merge", cli_merge},
};
/* clang-format on */

static const struct command *find_command(const char *name)
{
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

/* "; did you mean 'NAME'?" into hint (or "") for a misspelt command: the
 * closest command (or `help`, `version`) within a distance that grows
 * with its length, as the workflow loader suggests keys. */
static void command_hint(const char *name, char *hint, size_t size)
{
    const char *names[sizeof commands / sizeof commands[0] + 2];
    size_t n = 0, dist = SIZE_MAX, limit;
    const char *best;

    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        names[n++] = commands[i].name;
    names[n++] = "help";
    names[n++] = "version";
    hint[0] = '\0';
    best = suggest_closest(name, names, n, &dist);
    if (!best)
        return;
    limit = strlen(best) <= 3 ? 1 : strlen(best) <= 6 ? 2 : 3;
    if (dist > 0 && dist <= limit && dist < strlen(name))
        snprintf(hint, size, "; did you mean '%s'?", best);
}

/* A command that succeeded must also have got its output out: help and
 * version texts included. */
static int checked_exit(int status)
{
    nsed_err err = {0};
    int rc;

    if (status != 0)
        return status;
    rc = cli_stdout_flush(&err);
    return rc ? cli_fail(rc, &err) : 0;
}

int main(int argc, char **argv)
{
    const struct command *cmd;
    char hint[64];

    /* A peer closing a connection must be an error return, not a signal. */
    signal(SIGPIPE, SIG_IGN);
    /* Checkpoints allocate and free a few MiB per loop turn; without this
     * glibc hands the heap back after each and faults it in again. */
    mallopt(M_TRIM_THRESHOLD, 64 << 20);
    mallopt(M_TOP_PAD, 16 << 20);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fputs("nsed: cannot initialise libcurl\n", stderr);
        return 1;
    }
    atexit(curl_global_cleanup);

    if (argc < 2) {
        fputs(usage, stderr);
        return 2;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") ||
        !strcmp(argv[1], "help")) {
        if (argc > 2 && strcmp(argv[1], "help") == 0) {
            char *help_argv[] = {argv[2], "--help", NULL};

            cmd = find_command(argv[2]);
            if (!cmd) {
                command_hint(argv[2], hint, sizeof hint);
                return cli_usage_error("help", "unknown command '%s'%s",
                                       argv[2], hint);
            }
            return checked_exit(cmd->fn(2, help_argv));
        }
        fputs(usage, stdout);
        return checked_exit(0);
    }
    if (!strcmp(argv[1], "version") || !strcmp(argv[1], "--version")) {
        printf("nsed %s\n", NSED_VERSION);
        return checked_exit(0);
    }
    cmd = find_command(argv[1]);
    if (!cmd) {
        command_hint(argv[1], hint, sizeof hint);
        fprintf(stderr, "nsed: unknown command '%s'%s\n\n%s", argv[1], hint,
                usage);
        return 2;
    }
    return checked_exit(cmd->fn(argc - 1, argv + 1));
}
