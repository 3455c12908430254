/* cli.c -- helpers shared by the subcommands. */
#include "pipeline/cli/cli.h"

#include "pipeline/base/buf.h"
#include "pipeline/workflow/workflow.h"

#include <cjson/cJSON.h>

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

int cli_fail(int rc, const nsed_err *err)
{
    /* The returned code decides, not err->code: a function that failed
     * without filling err leaves err->code 0, and a failure must never
     * exit 0. A call with rc 0 is a caller's bug and is reported as one. */
    if (rc == 0)
        rc = NSED_EINTERNAL;
    fprintf(stderr, "nsed: %s\n",
            err && err->msg[0] ? err->msg : nsed_strerror(rc));
    return nsed_exit_code(rc);
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "nsed %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n(see 'nsed %s --help')\n", cmd);
    return 2;
}

int cli_has_suffix(const char *path, const char *suffix)
{
    size_t n = strlen(path), m = strlen(suffix);

    return n >= m && strcmp(path + n - m, suffix) == 0;
}

static int needs_quoting(const char *s)
{
    if (!*s)
        return 1;
    for (; *s; s++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                    "0123456789-_./=:,+@%", *s))
            return 1;
    return 0;
}

char *cli_command_line(int argc, char **argv)
{
    buf b;
    int rc = 0;

    buf_init(&b, 1 << 20);
    rc = buf_adds(&b, "nsed");
    for (int i = 0; i < argc && !rc; i++) {
        rc = buf_addc(&b, ' ');
        if (rc)
            break;
        if (!needs_quoting(argv[i])) {
            rc = buf_adds(&b, argv[i]);
            continue;
        }
        rc = buf_addc(&b, '\'');
        for (const char *p = argv[i]; *p && !rc; p++)
            rc = *p == '\'' ? buf_adds(&b, "'\\''") : buf_addc(&b, *p);
        if (!rc)
            rc = buf_addc(&b, '\'');
    }
    if (rc) {
        buf_release(&b);
        return NULL;
    }
    return buf_detach(&b, NULL);
}

/* Run git with args in dir; return its first output line (malloc'd) when it
 * exits 0, else NULL. Output beyond one line is read and discarded. */
static char *git_line(const char *dir, char *const args[], int *status_out)
{
    int fds[2], status;
    char line[256];
    size_t n = 0;
    ssize_t r;
    pid_t pid;
    char *argv[16];
    size_t argc = 0;

    argv[argc++] = "git";
    argv[argc++] = "-C";
    argv[argc++] = (char *)dir;
    for (size_t i = 0; args[i] && argc < 15; i++)
        argv[argc++] = args[i];
    argv[argc] = NULL;
    if (pipe(fds) < 0)
        return NULL;
    pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return NULL;
    }
    if (pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        freopen("/dev/null", "w", stderr);
        execvp("git", argv);
        _exit(127);
    }
    close(fds[1]);
    while ((r = read(fds[0], line + n, sizeof line - 1 - n)) > 0) {
        n += (size_t)r;
        if (n == sizeof line - 1) {
            char sink[256];

            while (read(fds[0], sink, sizeof sink) > 0)
                ;
            break;
        }
    }
    close(fds[0]);
    while (waitpid(pid, &status, 0) < 0)
        ;
    if (status_out)
        *status_out = status;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return NULL;
    line[n] = '\0';
    line[strcspn(line, "\n")] = '\0';
    return strdup(line);
}

char *cli_git_commit(const char *path)
{
    char *copy = strdup(path), *slash, *commit = NULL, *changes = NULL;
    const char *dir, *file;
    char *rev[] = {"rev-parse", "HEAD", NULL};

    if (!copy)
        return NULL;
    slash = strrchr(copy, '/');
    if (slash) {
        *slash = '\0';
        dir = *copy ? copy : "/";
        file = slash + 1;
    } else {
        dir = ".";
        file = copy;
    }
    commit = git_line(dir, rev, NULL);
    if (commit) {
        char *st[] = {"status", "--porcelain", "--", (char *)file, NULL};

        changes = git_line(dir, st, NULL);
        if (changes && *changes) {
            char *dirty = NULL;

            if (asprintf(&dirty, "%s-dirty", commit) > 0) {
                free(commit);
                commit = dirty;
            }
        }
    }
    free(changes);
    free(copy);
    return commit;
}

int cli_open_existing(const char *dir, const store_opts *so, store **st,
                      nsed_err *err)
{
    int rc = store_open(dir, so, st, err);

    if (rc == NSED_ENOTFOUND)
        rc = err->code = NSED_EINVAL;
    return rc;
}

/* Refuse (unless allow_change) a store whose manifest names another run
 * seed than seed. A store not bound yet passes. */
static int check_seed(store *st, uint64_t seed, int allow_change,
                      nsed_err *err)
{
    char *text = NULL;
    cJSON *m = NULL;
    const cJSON *v;
    char want[32];
    int rc;

    rc = store_manifest_json(st, &text, err);
    if (rc == NSED_ENOTFOUND)
        return 0;
    if (rc)
        return rc;
    m = cJSON_Parse(text);
    v = cJSON_GetObjectItemCaseSensitive(m, "seed");
    snprintf(want, sizeof want, "%llu", (unsigned long long)seed);
    if (cJSON_IsString(v) && strcmp(v->valuestring, want) != 0 &&
        !allow_change)
        rc = nsed_error(err, NSED_EMISMATCH,
                        "store %s was started with seed %s; this run asks "
                        "for seed %s. Use another store, or re-run with "
                        "--allow-workflow-change to continue anyway.",
                        store_dir(st), v->valuestring, want);
    cJSON_Delete(m);
    free(text);
    return rc;
}

int cli_open_bound_store(const char *wpath, const cli_sets *sets,
                         const char *dir, int allow_change,
                         const uint64_t *seed, const cli_shard *shard,
                         const char *cmdline, workflow **wf_out, store **st_out,
                         nsed_err *err)
{
    workflow_options opt = {.has_seed = seed != NULL,
                            .seed = seed ? *seed : 0,
                            .overrides = sets ? sets->v : NULL,
                            .noverrides = sets ? sets->n : 0};
    workflow *wf = NULL;
    store *st = NULL;
    char *commit = NULL;
    store_manifest m = {0};
    int rc;

    /* The override is an input of the load, so the hash and canonical
     * text recorded below are those of the seed that runs. */
    rc = workflow_load_with(wpath, &opt, &wf, err);
    if (rc)
        goto out;
    rc = store_open(dir, NULL, &st, err);
    if (rc)
        goto out;
    rc = check_seed(st, wf->seed, allow_change, err);
    if (rc)
        goto out;
    commit = cli_git_commit(wpath);
    m.workflow_hash = workflow_hash(wf);
    m.workflow_canonical = workflow_canonical(wf);
    m.workflow_name = wf->name;
    m.resolved_json = workflow_resolved_json(wf);
    m.git_commit = commit;
    m.command_line = cmdline;
    m.seed = wf->seed;
    m.overrides = opt.overrides;
    m.noverrides = opt.noverrides;
    if (shard) {
        m.shard_index = shard->index;
        m.shard_count = shard->count;
    }
    rc = store_bind_manifest(st, &m, allow_change, err);
out:
    free(commit);
    if (rc) {
        store_close(st);
        workflow_free(wf);
        return rc;
    }
    *wf_out = wf;
    *st_out = st;
    return 0;
}
