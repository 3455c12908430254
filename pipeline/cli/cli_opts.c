/* cli_opts.c -- option parsing and input checks the subcommands share. */
#include "pipeline/cli/cli.h"

#include "pipeline/base/num.h"
#include "pipeline/gateway/gateway.h"
#include "pipeline/workflow/workflow.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The option getopt_long returns as val, or NULL. */
static const struct option *find_option(const struct option *longopts, int val)
{
    for (const struct option *o = longopts; o->name; o++)
        if (!o->flag && o->val == val)
            return o;
    return NULL;
}

int cli_getopt(cli_opts_seen *seen, int argc, char **argv,
               const char *shortopts, const struct option *longopts)
{
    int c = getopt_long(argc, argv, shortopts, longopts, NULL);
    const struct option *o;

    if (c < 0 || c >= CLI_OPTS_MAX)
        return c;
    o = find_option(longopts, c);
    /* a flag given twice says the same thing twice; a second value would
     * silently replace the first */
    if (!o || o->has_arg == no_argument || seen->n[c]++ == 0)
        return c;
    fprintf(stderr,
            "nsed %s: option --%s given more than once; it takes one "
            "value\n",
            argv[0], o->name);
    return '?';
}

int cli_shard_parse(const char *cmd, const char *arg, cli_shard *out)
{
    const char *slash = strchr(arg, '/');
    const char *slurm = getenv("SLURM_ARRAY_TASK_ID");
    const char *k8s = getenv("JOB_COMPLETION_INDEX");
    const char *ktext, *from = NULL;
    char kbuf[32];
    uint64_t k, n;

    if (!slash || (size_t)(slash - arg) >= sizeof kbuf)
        return cli_usage_error(cmd,
                               "--shard: \"%s\" is not K/N (the "
                               "shard K of N, counting from 0) or auto/N",
                               arg);
    memcpy(kbuf, arg, (size_t)(slash - arg));
    kbuf[slash - arg] = '\0';
    if (num_parse_u64(slash + 1, CLI_SHARDS_MAX, &n) || n == 0)
        return cli_usage_error(cmd,
                               "--shard %s: the count \"%s\" is not a "
                               "whole number in 1..%d",
                               arg, slash + 1, CLI_SHARDS_MAX);
    ktext = kbuf;
    if (strcmp(kbuf, "auto") == 0) {
        if (slurm && *slurm) {
            ktext = slurm;
            from = "SLURM_ARRAY_TASK_ID";
        } else if (k8s && *k8s) {
            ktext = k8s;
            from = "JOB_COMPLETION_INDEX";
        } else {
            return cli_usage_error(cmd,
                                   "--shard %s: neither "
                                   "SLURM_ARRAY_TASK_ID (a Slurm array task) "
                                   "nor JOB_COMPLETION_INDEX (a Kubernetes "
                                   "Indexed Job) is set; give the shard as "
                                   "K/%" PRIu64,
                                   arg, n);
        }
    }
    if (num_parse_u64(ktext, UINT32_MAX, &k)) {
        if (from)
            return cli_usage_error(cmd,
                                   "--shard %s: %s=\"%s\" is not a "
                                   "shard index",
                                   arg, from, ktext);
        return cli_usage_error(cmd,
                               "--shard %s: the index \"%s\" is not a "
                               "whole number (or auto)",
                               arg, ktext);
    }
    if (k >= n)
        return cli_usage_error(cmd,
                               "--shard %s: shard %" PRIu64 "%s%s%s "
                               "does not exist: of %" PRIu64 " shards the "
                               "indexes are 0..%" PRIu64,
                               arg, k, from ? " (from " : "", from ? from : "",
                               from ? ")" : "", n, n - 1);
    out->index = (uint32_t)k;
    out->count = (uint32_t)n;
    return 0;
}

/* The questions file must be there before a store is made for it. */
static int check_questions_file(const char *path, nsed_err *err)
{
    struct stat sb;
    int fd = open(path, O_RDONLY | O_CLOEXEC), rc = 0;

    if (fd < 0)
        return nsed_error(err, NSED_EINVAL,
                          "%s: cannot open the questions file: %s", path,
                          strerror(errno));
    if (fstat(fd, &sb) != 0)
        rc = nsed_error(err, NSED_EIO, "%s: cannot stat: %s", path,
                        strerror(errno));
    else if (S_ISDIR(sb.st_mode))
        rc = nsed_error(err, NSED_EINVAL,
                        "%s: is a directory, not a questions file", path);
    close(fd);
    return rc;
}

int cli_sets_add(cli_sets *s, const char *cmd, const char *arg)
{
    if (s->n == CLI_SETS_MAX)
        return cli_usage_error(cmd, "--set: at most %d overrides",
                               CLI_SETS_MAX);
    s->v[s->n++] = arg;
    return 0;
}

int cli_check_inputs(const char *wpath, const cli_sets *sets, const char *qpath,
                     bool keys, nsed_err *err)
{
    workflow_options opt = {.overrides = sets ? sets->v : NULL,
                            .noverrides = sets ? sets->n : 0};
    workflow *wf = NULL;
    int rc;

    if (cli_has_suffix(wpath, ".jsonl") || cli_has_suffix(wpath, ".json"))
        return nsed_error(err, NSED_EINVAL,
                          "%s: this is a question file, not a workflow; the "
                          "workflow (.yaml) comes first, the questions go "
                          "with --questions",
                          wpath);
    rc = workflow_load_with(wpath, &opt, &wf, err);
    if (!rc && keys)
        rc = gateway_check_keys(wf, err);
    if (!rc && qpath)
        rc = check_questions_file(qpath, err);
    workflow_free(wf);
    return rc;
}
