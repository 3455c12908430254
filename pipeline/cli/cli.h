/* cli.h -- the `nsed` subcommands and the helpers they share.
 *
 * Each cli_<command>() takes the argument vector after the command name
 * (argv[0] is the command name itself, as getopt expects) and returns the
 * process exit status: 0 success, 1 runtime failure (I/O, store, network),
 * 2 bad input or usage. Messages go to stderr; results to stdout.
 */
#ifndef NSED_CLI_H
#define NSED_CLI_H

#include "pipeline/base/err.h"
#include "store/store.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

NSED_MUST_CHECK int cli_validate(int argc, char **argv);
NSED_MUST_CHECK int cli_ingest(int argc, char **argv);
NSED_MUST_CHECK int cli_status(int argc, char **argv);
NSED_MUST_CHECK int cli_run(int argc, char **argv);
NSED_MUST_CHECK int cli_export(int argc, char **argv);
NSED_MUST_CHECK int cli_team(int argc, char **argv);
NSED_MUST_CHECK int cli_compare(int argc, char **argv);
NSED_MUST_CHECK int cli_report(int argc, char **argv);
NSED_MUST_CHECK int cli_merge(int argc, char **argv);

/* Print "nsed: <message>" for a failure to stderr and return its exit
 * status. rc is the code the failing call returned and decides the status
 * (nsed_exit_code); err's message is printed, or nsed_strerror(rc) when
 * the failing call left it empty. rc 0 (a caller's bug) is treated as
 * NSED_EINTERNAL, so a failure never exits 0. err may be NULL. */
int cli_fail(int rc, const nsed_err *err);

/* Print "nsed <cmd>: <fmt...>" plus a hint to see --help; return 2. */
int cli_usage_error(const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* "nsed " followed by the command's arguments (argv from the command name
 * on), shell-quoted where needed, as one malloc'd string (NULL when out of
 * memory). Used for the run manifest; call it before getopt, which
 * reorders argv. */
NSED_MUST_CHECK char *cli_command_line(int argc, char **argv);

/* The git commit holding path (a file), as malloc'd "abcdef…" with
 * "-dirty" appended when the file differs from that commit; NULL when path
 * is not inside a git work tree or git is not installed. */
char *cli_git_commit(const char *path);

typedef struct workflow workflow;

/* The --set KEY=VALUE overrides of one command line, as given and in
 * order (pointers into argv). The option's getopt val is CLI_OPT_SET, not
 * tracked by cli_getopt, because --set repeats. */
#define CLI_SETS_MAX 64
#define CLI_OPT_SET (CLI_OPTS_MAX + 1)
typedef struct cli_sets {
    const char *v[CLI_SETS_MAX];
    size_t n;
} cli_sets;

/* Add arg (an optarg of --set) to s. Returns 0, or prints a usage error
 * for cmd and returns its exit status (2) past CLI_SETS_MAX. */
int cli_sets_add(cli_sets *s, const char *cmd, const char *arg);

struct questions_stats;

/* The shard of nsed run/ingest --shard (count 0: the whole run). */
typedef struct cli_shard {
    uint32_t index;
    uint32_t count;
} cli_shard;

#define CLI_SHARDS_MAX 65536 /* most shards --shard accepts */

/* Parse the value of --shard for cmd: "K/N" (0 <= K < N <= CLI_SHARDS_MAX)
 * or "auto/N", whose K is SLURM_ARRAY_TASK_ID (a Slurm array task) or
 * else JOB_COMPLETION_INDEX (a Kubernetes Indexed Job). N never comes
 * from the environment: a resubmitted part of an array sees
 * SLURM_ARRAY_TASK_COUNT=1. Returns 0, or prints a usage error and
 * returns its exit status (2). */
int cli_shard_parse(const char *cmd, const char *arg, cli_shard *out);

/* Load the workflow at wpath (with the overrides sets, NULL: none), open
 * (creating) the store in dir for writing and bind it to the workflow: the
 * manifest records the workflow hash and canonical text, the resolved
 * endpoints, the git commit of the workflow file, the overrides as given
 * and this command line. A store bound to another workflow hash is
 * refused unless allow_change. seed, when not NULL, replaces the
 * workflow's seed; a store that began with another seed is refused too
 * (unless allow_change). On success *wf and *st are the caller's; on
 * error both stay NULL and err says why. */
NSED_MUST_CHECK
int cli_open_bound_store(const char *wpath, const cli_sets *sets,
                         const char *dir, int allow_change,
                         const uint64_t *seed, const cli_shard *shard,
                         const char *cmdline, workflow **wf, store **st,
                         nsed_err *err);

/* Open the existing store in dir with so (store_open): 0 with *st the
 * caller's, or store_open's error, except that a directory that holds no
 * store (or none at all) is a mistake in the command line, NSED_EINVAL
 * (exit status 2) with store_open's message, as for every command that
 * reads a store. */
NSED_MUST_CHECK
int cli_open_existing(const char *dir, const store_opts *so, store **st,
                      nsed_err *err);

/* Flush stdout and report whether everything printed to it got out: 0, or
 * NSED_EIO ("write failed: ...") when a write failed (a full disk,
 * /dev/full). A reader that went away (EPIPE, `| head`) is not an error,
 * as for nsed export. */
NSED_MUST_CHECK
int cli_stdout_flush(nsed_err *err);

/* ---- options and input checks (cli_opts.c) ---------------------------- */

struct option;

#define CLI_OPTS_MAX 256 /* option values (getopt's val) cli_getopt tracks */

/* The options of one command line seen so far; zero-initialise it. */
typedef struct cli_opts_seen {
    unsigned char n[CLI_OPTS_MAX];
} cli_opts_seen;

/* getopt_long(argc, argv, shortopts, longopts, NULL), and one rule on top:
 * an option that takes a value (every such option of nsed is single-
 * valued) may be given once, by its long or its short name. A second one
 * prints "nsed <argv[0]>: option --NAME given more than once ..." and
 * returns '?', as getopt_long does for an unknown option, so the
 * command's `default:` branch turns it into a usage error (exit 2). Flags
 * may repeat. Options whose val is not below CLI_OPTS_MAX are not
 * tracked. */
int cli_getopt(cli_opts_seen *seen, int argc, char **argv,
               const char *shortopts, const struct option *longopts);

/* What a command can check before it creates a store, so that a mistake
 * leaves no empty store behind: the workflow at wpath loads (with the
 * overrides sets, NULL: none), with keys
 * every model's API key variable is set (gateway_check_keys), and qpath
 * (unless NULL) opens as a file. Returns 0, or NSED_EINVAL (exit 2) /
 * another code with err set. */
NSED_MUST_CHECK int cli_check_inputs(const char *wpath, const cli_sets *sets,
                                     const char *qpath, bool keys,
                                     nsed_err *err);

/* Say on stderr that an unfinished earlier ingest was undone (its undone
 * questions removed, questions_recover) before cmd went on; nothing when
 * undone is 0. */
void cli_undo_note(const char *cmd, const store *st, size_t undone);

/* Ingest qpath into st (questions_ingest_with): fields is the --fields
 * mapping text, or NULL for the workflow's `questions:` mapping (none:
 * the native format); every bad line is printed to stderr as
 * "nsed CMD: FILE:LINE: ..." (up to QUESTIONS_ERRORS_SHOWN) before the
 * call fails with the count. *added and *unchanged (may be NULL) are set
 * on success. Returns 0 or an NSED_E* code with err set. */
struct workflow;
NSED_MUST_CHECK int cli_ingest_file(store *st, const struct workflow *wf,
                                    const char *cmd, const char *qpath,
                                    const char *fields, const cli_shard *shard,
                                    struct questions_stats *stats,
                                    nsed_err *err);

/* 1 when path ends with suffix. */
int cli_has_suffix(const char *path, const char *suffix);

#endif
