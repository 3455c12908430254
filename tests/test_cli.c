/* End-to-end tests of the nsed command line for the foundation: validate,
 * ingest, status. They run the real binary (NSED_BIN) on real files and a
 * real LMDB store in a temp directory. */
#include "testutil.h"

#include <check.h>
#include <cjson/cJSON.h>
#include <fcntl.h>
#include <glob.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define DEMO_WF NSED_SOURCE_DIR "/workflows/demo.yaml"
#define DEMO_Q NSED_SOURCE_DIR "/workflows/demo-questions.jsonl"

#define NSED(out, err, ...) TU_NSED(NULL, out, err, __VA_ARGS__)

START_TEST(help_and_unknown_command)
{
    char *out = NULL, *err = NULL;

    ck_assert_int_eq(NSED(&out, &err, "--help"), 0);
    ck_assert(tu_contains(out, "validate"));
    ck_assert(tu_contains(out, "ingest"));
    ck_assert(tu_contains(out, "status"));
    free(out);
    free(err);
    ck_assert_int_eq(NSED(&out, &err, "frobnicate"), 2);
    ck_assert(tu_contains(err, "unknown command 'frobnicate'"));
    free(out);
    free(err);
    ck_assert_int_eq(NSED(&out, &err, "help", "ingest"), 0);
    ck_assert(tu_contains(out, "--questions FILE"));
    free(out);
    free(err);
    ck_assert_int_eq(NSED(&out, &err, "ingest", DEMO_WF), 2);
    ck_assert(tu_contains(err, "--questions FILE is required"));
    free(out);
    free(err);
}
END_TEST

START_TEST(validate_examples_print_hash)
{
    static const char *const files[] = {"demo.yaml", "vllm-3gpu.yaml",
                                        "llamacpp.yaml", "hosted-api.yaml"};

    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char *path = tu_path(NSED_SOURCE_DIR "/workflows", files[i]);
        char *out = NULL, *err = NULL;

        ck_assert_msg(NSED(&out, &err, "validate", path) == 0, "%s: %s",
                      files[i], err);
        ck_assert(tu_contains(out, "ok, workflow hash "));
        /* the normalized config comes first, with defaults filled in */
        ck_assert(tu_contains(out, "\"max_concurrency\""));
        free(out);
        free(err);
        free(path);
    }
}
END_TEST

/* `nsed validate workflows/STAR.yaml` as a user types it: every file there
 * is a workflow and passes, with no file skipped. The simulator configs
 * live in tests/sim/configs/, where nsed-sim --check accepts them and
 * nsed validate refuses them like any file with an unknown key. */
START_TEST(validate_workflow_dir_glob)
{
    static const struct {
        const char *path, *check;
    } sims[] = {
        {NSED_SOURCE_DIR "/tests/sim/configs/demo-sim.yaml", "ok, 3 models"},
        {NSED_SOURCE_DIR "/tests/sim/configs/broker-sim.yaml", "ok, 6 models"},
    };
    glob_t g;
    char *argv[32] = {NSED_BIN, "validate", "-q"};
    size_t n = 3;
    char *out = NULL, *err = NULL;

    ck_assert_int_eq(glob(NSED_SOURCE_DIR "/workflows/*.yaml", 0, NULL, &g),
                     0);
    ck_assert_uint_ge(g.gl_pathc, 5);
    for (size_t i = 0; i < g.gl_pathc && n < 31; i++)
        argv[n++] = g.gl_pathv[i];
    argv[n] = NULL;
    ck_assert_msg(tu_run(argv, &out, &err) == 0, "%s", err);
    for (size_t i = 0; i < g.gl_pathc; i++) {
        char line[4096];

        snprintf(line, sizeof line, "%s: ok, workflow hash", g.gl_pathv[i]);
        ck_assert_msg(tu_contains(out, line), "no \"%s\" in:\n%s", line, out);
    }
    ck_assert(tu_contains(out, "demo.yaml: ok, workflow hash"));
    free(out);
    free(err);
    globfree(&g);

    for (size_t i = 0; i < sizeof sims / sizeof sims[0]; i++) {
        char *sargv[] = {NSED_SIM_BIN, "--check", "--config",
                         (char *)sims[i].path, NULL};
        char *vargv[] = {NSED_BIN, "validate", "-q", (char *)sims[i].path,
                         NULL};

        ck_assert_int_eq(tu_run(sargv, &out, &err), 0);
        ck_assert_msg(tu_contains(out, sims[i].check), "%s", out);
        free(out);
        free(err);
        ck_assert_int_eq(tu_run(vargv, &out, &err), 2);
        ck_assert_msg(tu_contains(err, "unknown key \"kind\" in the top level"),
                      "%s", err);
        free(out);
        free(err);
    }
}
END_TEST

START_TEST(validate_reports_location_and_exit_2)
{
    char *wf = tu_path(tu_tmp, "bad.yaml"), *q = tu_path(tu_tmp, "bad.jsonl");
    char *out = NULL, *err = NULL;

    tu_write_file(wf,
                  "name: x\nversion: 1\nmodles: []\n", (size_t)-1);
    ck_assert_int_eq(NSED(&out, &err, "validate", wf), 2);
    ck_assert(tu_contains(err, "bad.yaml:3:1: unknown key \"modles\""));
    ck_assert(tu_contains(err, "did you mean \"models\""));
    free(out);
    free(err);

    tu_write_file(q,
                  "{\"id\":\"a\",\"question\":\"1+1?\",\"answer\":\"2\"}\n"
                  "{\"id\":\"a\",\"question\":\"2+2?\"}\n",
                  (size_t)-1);
    ck_assert_int_eq(NSED(&out, &err, "validate", q), 2);
    ck_assert(tu_contains(err, "bad.jsonl:2"));
    ck_assert(tu_contains(err, "duplicate id \"a\""));
    free(out);
    free(err);

    /* one bad file among good ones still fails the whole command */
    ck_assert_int_eq(NSED(&out, &err, "validate", "-q", DEMO_WF, wf), 2);
    ck_assert(tu_contains(out, "demo.yaml: ok"));
    free(out);
    free(err);
    free(wf);
    free(q);
}
END_TEST

START_TEST(literal_api_key_refused_and_not_echoed)
{
    char *wf = tu_path(tu_tmp, "key.yaml");
    char *out = NULL, *err = NULL;

    tu_write_file(wf,
                  "name: k\nversion: 1\n"
                  "models:\n"
                  "  - id: m\n"
                  "    endpoint: https://api.example.invalid/v1\n"
                  "    model: gpt-x\n"
                  "    api_key: sk-live-DONOTPRINT123\n"
                  "teams:\n"
                  "  main:\n"
                  "    roles:\n"
                  "      - {name: solver, count: 1, models: [m]}\n",
                  (size_t)-1);
    ck_assert_int_eq(NSED(&out, &err, "validate", wf), 2);
    ck_assert(tu_contains(err, "key.yaml:7:"));
    ck_assert(tu_contains(err, "api_key_env"));
    ck_assert(!tu_contains(err, "DONOTPRINT"));
    ck_assert(!tu_contains(out, "DONOTPRINT"));
    free(out);
    free(err);
    free(wf);
}
END_TEST

START_TEST(ingest_is_idempotent_and_status_reports)
{
    char *store = tu_path(tu_tmp, "store");
    char *out = NULL, *err = NULL, *vout = NULL;
    cJSON *st, *man;
    const char *hash;

    ck_assert_int_eq(NSED(&out, &err, "ingest", DEMO_WF, "--questions", DEMO_Q,
                          "--store", store),
                     0);
    ck_assert_msg(tu_contains(out, "120 new, 0 already in the store"), "%s",
                  out);
    free(out);
    free(err);
    ck_assert_int_eq(NSED(&out, &err, "ingest", DEMO_WF, "--questions", DEMO_Q,
                          "--store", store),
                     0);
    ck_assert_msg(tu_contains(out, "0 new, 120 already in the store"), "%s",
                  out);
    ck_assert(tu_contains(out, "holds 120"));
    free(out);
    free(err);

    st = tu_nsed_status(store);
    ck_assert_int_eq(cJSON_GetObjectItemCaseSensitive(
                         cJSON_GetObjectItemCaseSensitive(st, "questions"),
                         "total")->valueint,
                     120);
    man = cJSON_GetObjectItemCaseSensitive(st, "manifest");
    ck_assert(cJSON_IsObject(man));
    hash = cJSON_GetObjectItemCaseSensitive(man, "workflow_hash")->valuestring;
    ck_assert_str_eq(
        cJSON_GetObjectItemCaseSensitive(man, "workflow_name")->valuestring,
        "demo");
    ck_assert_str_eq(
        cJSON_GetObjectItemCaseSensitive(man, "seed")->valuestring, "42");
    /* the command line is recorded as typed, before option parsing */
    ck_assert(tu_contains(
        cJSON_GetObjectItemCaseSensitive(man, "command_line")->valuestring,
        "nsed ingest " DEMO_WF " --questions"));
    ck_assert_int_eq(
        cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(man, "history")),
        2);
    /* the hash in the store is the one validate prints */
    ck_assert_int_eq(NSED(&vout, &err, "validate", "-q", DEMO_WF), 0);
    ck_assert(tu_contains(vout, hash));
    free(vout);
    free(err);
    cJSON_Delete(st);

    ck_assert_int_eq(NSED(&out, &err, "status", "--store", store), 0);
    ck_assert(tu_contains(out, "workflow:   demo"));
    ck_assert(tu_contains(out, "questions:  120: 0 done"));
    ck_assert(tu_contains(out, "120 not started"));
    free(out);
    free(err);
    free(store);
}
END_TEST

START_TEST(ingest_bad_file_adds_nothing)
{
    char *store = tu_path(tu_tmp, "store"), *q = tu_path(tu_tmp, "q.jsonl");
    char *out = NULL, *err = NULL;
    cJSON *st;

    tu_write_file(q,
                  "{\"id\":\"a\",\"question\":\"1+1?\",\"answer\":\"2\"}\n"
                  "{\"id\":\"b\",\"question\":\"2+2?\",\"answer\":\"4\"}\n"
                  "{\"id\":\"c\",\"question\":}\n",
                  (size_t)-1);
    ck_assert_int_eq(NSED(&out, &err, "ingest", DEMO_WF, "--questions", q,
                          "--store", store),
                     2);
    ck_assert_msg(tu_contains(err, "q.jsonl:3:"), "%s", err);
    free(out);
    free(err);
    st = tu_nsed_status(store);
    ck_assert_int_eq(cJSON_GetObjectItemCaseSensitive(
                         cJSON_GetObjectItemCaseSensitive(st, "questions"),
                         "total")->valueint,
                     0);
    cJSON_Delete(st);
    free(store);
    free(q);
}
END_TEST

START_TEST(workflow_change_refused_unless_flag)
{
    char *store = tu_path(tu_tmp, "store"), *wf = tu_path(tu_tmp, "demo2.yaml");
    char *text = tu_read_file(DEMO_WF, NULL), *seed, *out = NULL, *err = NULL;
    cJSON *st, *hist, *last;

    /* the same workflow with another seed: a different hash */
    ck_assert_ptr_nonnull(text);
    seed = strstr(text, "seed: 42");
    ck_assert_ptr_nonnull(seed);
    memcpy(seed, "seed: 43", 8);
    tu_write_file(wf, text, (size_t)-1);

    ck_assert_int_eq(NSED(&out, &err, "ingest", DEMO_WF, "--questions", DEMO_Q,
                          "--store", store),
                     0);
    free(out);
    free(err);
    ck_assert_int_eq(NSED(&out, &err, "ingest", wf, "--questions", DEMO_Q,
                          "--store", store),
                     2);
    ck_assert_msg(tu_contains(err, "--allow-workflow-change"), "%s", err);
    free(out);
    free(err);
    ck_assert_int_eq(NSED(&out, &err, "ingest", wf, "--questions", DEMO_Q,
                          "--store", store, "--allow-workflow-change"),
                     0);
    free(out);
    free(err);
    st = tu_nsed_status(store);
    hist = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(st, "manifest"), "history");
    last = cJSON_GetArrayItem(hist, cJSON_GetArraySize(hist) - 1);
    ck_assert_str_eq(
        cJSON_GetObjectItemCaseSensitive(last, "event")->valuestring,
        "workflow_change");
    cJSON_Delete(st);
    free(text);
    free(store);
    free(wf);
}
END_TEST

/* What a command that was given a directory holding no store must do:
 * exit 2 (docs/cli.md, exit status), name the directory, print nothing. */
static void no_store_refused(int rc, char *out, char *err, const char *cmd,
                             const char *name)
{
    ck_assert_msg(rc == 2, "%s on %s: exit %d: %s", cmd, name, rc, err);
    ck_assert_msg(tu_contains(err, "no nsed store in") &&
                      tu_contains(err, name),
                  "%s on %s: %s", cmd, name, err);
    ck_assert_msg(!out || !*out, "%s printed %s", cmd, out);
    free(out);
    free(err);
}

/* Naming a directory that holds no store is a mistake in the command
 * line: every command that reads a store exits 2 and names it, whether
 * it is missing or empty, and none creates it. */
START_TEST(status_of_missing_store_is_clear)
{
    char *missing = tu_path(tu_tmp, "nothing-here");
    char *empty = tu_path(tu_tmp, "empty-dir");

    ck_assert_int_eq(mkdir(empty, 0700), 0);
    for (int d = 0; d < 2; d++) {
        const char *dir = d ? empty : missing;
        const char *name = d ? "empty-dir" : "nothing-here";
        char *out = NULL, *err = NULL;
        int rc;

        rc = NSED(&out, &err, "status", "--store", dir);
        no_store_refused(rc, out, err, "status", name);
        rc = NSED(&out, &err, "status", "--json", "--store", dir);
        no_store_refused(rc, out, err, "status --json", name);
        rc = NSED(&out, &err, "export", "--store", dir);
        no_store_refused(rc, out, err, "export", name);
        rc = NSED(&out, &err, "compare", dir, dir);
        no_store_refused(rc, out, err, "compare", name);
        rc = NSED(&out, &err, "team", DEMO_WF, "--store", dir);
        no_store_refused(rc, out, err, "team", name);
    }
    ck_assert(access(missing, F_OK) != 0);
    free(missing);
    free(empty);
}
END_TEST

/* Run nsed with argv (from the command name on, NULL-terminated) and its
 * stdout on /dev/full; *err gets what it said on stderr. Returns the exit
 * status. */
static int nsed_to_dev_full(char *const *args, char **err)
{
    char *argv[16] = {NSED_BIN};
    char *errpath = tu_path(tu_tmp, "stderr.txt");
    size_t n = 1;
    int status;
    pid_t pid;

    while (args[n - 1] && n < 15) {
        argv[n] = args[n - 1];
        n++;
    }
    argv[n] = NULL;
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        int out = open("/dev/full", O_WRONLY);
        int e = open(errpath, O_WRONLY | O_CREAT | O_TRUNC, 0644);

        if (out < 0 || e < 0 || dup2(out, 1) < 0 || dup2(e, 2) < 0)
            _exit(99);
        execv(NSED_BIN, argv);
        _exit(98);
    }
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status));
    *err = tu_read_file(errpath, NULL);
    free(errpath);
    return WEXITSTATUS(status);
}

/* A command whose output could not be written says so and fails: an exit
 * status of 0 claims the output is there. */
START_TEST(failed_print_exits_nonzero)
{
    char *store = tu_path(tu_tmp, "store"), *out = NULL, *err = NULL;
    char *validate[] = {"validate", DEMO_WF, NULL};
    char *validate_q[] = {"validate", "-q", DEMO_WF, DEMO_Q, NULL};
    char *status[] = {"status", "--store", store, NULL};
    char *status_json[] = {"status", "--store", store, "--json", NULL};
    char *const *cmds[] = {validate, validate_q, status, status_json};

    ck_assert_int_eq(NSED(&out, &err, "ingest", DEMO_WF, "--questions", DEMO_Q,
                          "--store", store),
                     0);
    free(out);
    free(err);
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        int rc = nsed_to_dev_full(cmds[i], &err);

        ck_assert_msg(rc == 1, "%s %s: exit %d", cmds[i][0], cmds[i][1], rc);
        ck_assert_msg(tu_contains(err, "nsed: write failed"), "%s", err);
        free(err);
    }
    free(store);
}
END_TEST

/* ---- issue 10, operability: usage mistakes caught early ------------ */

/* A misspelt command gets the closest one; a word like none gets none. */
START_TEST(unknown_command_did_you_mean)
{
    static const struct {
        const char *typed, *hint;
    } cases[] = {
        {"statsu", "did you mean 'status'?"},
        {"rnu", "did you mean 'run'?"},
        {"exprot", "did you mean 'export'?"},
        {"valdiate", "did you mean 'validate'?"},
        {"verison", "did you mean 'version'?"},
    };
    char *out = NULL, *err = NULL;

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ck_assert_int_eq(NSED(&out, &err, cases[i].typed), 2);
        ck_assert_msg(tu_contains(err, cases[i].hint), "%s: %s", cases[i].typed,
                      err);
        free(out);
        free(err);
    }
    ck_assert_int_eq(NSED(&out, &err, "help", "tema"), 2);
    ck_assert_msg(tu_contains(err, "unknown command 'tema'; did you mean "
                                   "'team'?"),
                  "%s", err);
    free(out);
    free(err);
    ck_assert_int_eq(NSED(&out, &err, "xyzzyq"), 2);
    ck_assert(tu_contains(err, "unknown command 'xyzzyq'\n"));
    ck_assert(!tu_contains(err, "did you mean"));
    free(out);
    free(err);
}
END_TEST

/* Every option that takes a value, given twice (by its long name, or by
 * its short and its long name), is a usage error naming it: the second
 * value would silently win otherwise. */
START_TEST(repeated_option_is_usage_error)
{
    static const struct {
        const char *cmd, *first, *second, *name;
        int wf; /* the command takes a WORKFLOW argument */
    } cases[] = {
        {"run", "--questions", "--questions", "questions", 1},
        {"run", "-Q", "--questions", "questions", 1},
        {"run", "--store", "--store", "store", 1},
        {"run", "-s", "--store", "store", 1},
        {"run", "--limit", "--limit", "limit", 1},
        {"run", "-n", "--limit", "limit", 1},
        {"run", "--seed", "--seed", "seed", 1},
        {"run", "--max-active", "--max-active", "max-active", 1},
        {"run", "--telemetry", "--telemetry", "telemetry", 1},
        {"run", "--progress-interval", "--progress-interval",
         "progress-interval", 1},
        {"ingest", "--questions", "--questions", "questions", 1},
        {"ingest", "-s", "--store", "store", 1},
        {"status", "--store", "--store", "store", 0},
        {"status", "-s", "--store", "store", 0},
        {"status", "--telemetry-out", "--telemetry-out", "telemetry-out", 0},
        {"export", "--store", "--store", "store", 0},
        {"export", "-o", "--output", "output", 0},
        {"team", "--store", "--store", "store", 1},
        {"team", "--tags", "-t", "tags", 1},
        {"team", "--telemetry", "--telemetry", "telemetry", 1},
    };
    char *a = tu_path(tu_tmp, "a"), *b = tu_path(tu_tmp, "b");

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char want[128], *out = NULL, *err = NULL;
        char *argv[10] = {NSED_BIN, (char *)cases[i].cmd};
        size_t n = 2;
        int rc;

        if (cases[i].wf)
            argv[n++] = DEMO_WF;
        argv[n++] = (char *)cases[i].first;
        argv[n++] = "1";
        argv[n++] = (char *)cases[i].second;
        argv[n++] = "2";
        argv[n] = NULL;
        rc = tu_run(argv, &out, &err);
        snprintf(want, sizeof want, "nsed %s: option --%s given more than once",
                 cases[i].cmd, cases[i].name);
        ck_assert_msg(rc == 2, "%s %s %s: exit %d", cases[i].cmd,
                      cases[i].first, cases[i].second, rc);
        ck_assert_msg(tu_contains(err, want), "%s %s %s: %s", cases[i].cmd,
                      cases[i].first, cases[i].second, err);
        free(out);
        free(err);
    }
    /* flags may repeat: they say the same thing twice */
    {
        char *out = NULL, *err = NULL;

        ck_assert_int_eq(NSED(&out, &err, "validate", "-q", "--quiet", DEMO_WF),
                         0);
        free(out);
        free(err);
    }
    free(a);
    free(b);
}
END_TEST

static int dir_exists(const char *path)
{
    return access(path, F_OK) == 0;
}

/* `nsed ingest` killed between its write batches: status says the ingest
 * did not finish, and the next ingest removes what it had added before
 * it adds the file again, ending with every question once. */
START_TEST(ingest_killed_between_batches_is_undone)
{
    char *store = tu_path(tu_tmp, "killed"),
         *qpath = tu_path(tu_tmp, "q.jsonl");
    char *out = NULL, *err = NULL;
    bool caught = false;
    size_t n = 200000, written = 0;
    cJSON *st;

    for (int attempt = 0; attempt < 4 && !caught; attempt++, n *= 2) {
        FILE *f = fopen(qpath, "w");
        pid_t pid;
        int status;
        double t0;

        ck_assert_ptr_nonnull(f);
        for (size_t i = 0; i < n; i++)
            fprintf(f, "{\"id\": \"k%zu\", \"question\": \"%zu+2?\"}\n", i, i);
        ck_assert_int_eq(fclose(f), 0);
        written = n;
        tu_rmrf(store);
        pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
            int nul = open("/dev/null", O_WRONLY);

            dup2(nul, 1);
            dup2(nul, 2);
            execl(NSED_BIN, NSED_BIN, "ingest", DEMO_WF, "--questions", qpath,
                  "--store", store, (char *)NULL);
            _exit(98);
        }
        t0 = tu_now_s();
        while (!caught && tu_now_s() - t0 < 60) {
            if (waitpid(pid, &status, WNOHANG) == pid)
                break; /* it finished first: a bigger file */
            if (access(store, F_OK) == 0 &&
                NSED(&out, &err, "status", "--json", "--store", store) == 0 &&
                tu_contains(out, "\"ingest_unfinished\":true")) {
                kill(pid, SIGKILL);
                ck_assert_int_eq(waitpid(pid, &status, 0), pid);
                caught = WIFSIGNALED(status);
            }
            free(out);
            free(err);
            out = err = NULL;
        }
    }
    ck_assert_msg(caught, "no ingest was caught between its batches");
    st = tu_nsed_status(store);
    ck_assert(cJSON_IsTrue(cJSON_GetObjectItem(st, "ingest_unfinished")));
    ck_assert(cJSON_IsFalse(cJSON_GetObjectItem(st, "writing")));
    cJSON_Delete(st);
    ck_assert_int_eq(NSED(&out, &err, "status", "--store", store), 0);
    ck_assert_msg(tu_contains(out, "an ingest did not finish (stopped between "
                                   "its batches)"),
                  "%s", out);
    free(out);
    free(err);
    ck_assert_int_eq(NSED(&out, &err, "ingest", DEMO_WF, "--questions", qpath,
                          "--store", store),
                     0);
    ck_assert_msg(tu_contains(err, "did not finish; the ") &&
                      tu_contains(err, "questions it had added were removed "
                                       "first"),
                  "%s", err);
    free(out);
    free(err);
    st = tu_nsed_status(store);
    ck_assert(cJSON_IsFalse(cJSON_GetObjectItem(st, "ingest_unfinished")));
    ck_assert_double_eq(tu_jnum(st, "questions", "total"), (double)written);
    cJSON_Delete(st);
    free(store);
    free(qpath);
}
END_TEST

/* A missing questions file or API key variable is refused before the
 * store is created: no empty store is left behind to confuse the next
 * command. */
START_TEST(missing_input_leaves_no_store)
{
    char *store = tu_path(tu_tmp, "new"),
         *missing = tu_path(tu_tmp, "no.jsonl");
    char *wf = tu_path(tu_tmp, "key.yaml"), *out = NULL, *err = NULL;

    ck_assert_int_eq(NSED(&out, &err, "run", DEMO_WF, "--questions", missing,
                          "--store", store),
                     2);
    ck_assert_msg(tu_contains(err, "no.jsonl: cannot open the questions "
                                   "file"),
                  "%s", err);
    ck_assert(!dir_exists(store));
    free(out);
    free(err);
    ck_assert_int_eq(NSED(&out, &err, "ingest", DEMO_WF, "--questions", missing,
                          "--store", store),
                     2);
    ck_assert(!dir_exists(store));
    free(out);
    free(err);

    tu_write_file(wf,
                  "name: k\nversion: 1\n"
                  "models:\n"
                  "  - id: m\n"
                  "    endpoint: http://127.0.0.1:9/v1\n"
                  "    model: gpt-x\n"
                  "    api_key_env: NSED_TEST_SURELY_UNSET_KEY\n"
                  "teams:\n"
                  "  main:\n"
                  "    roles:\n"
                  "      - {name: solver, count: 2, models: [m]}\n",
                  (size_t)-1);
    unsetenv("NSED_TEST_SURELY_UNSET_KEY");
    ck_assert_int_eq(NSED(&out, &err, "run", wf, "--questions", DEMO_Q,
                          "--store", store),
                     2);
    ck_assert_msg(tu_contains(err, "NSED_TEST_SURELY_UNSET_KEY (its "
                                   "api_key_env) is not set"),
                  "%s", err);
    ck_assert(!dir_exists(store));
    free(out);
    free(err);
    /* a dry run sends nothing and needs no key */
    ck_assert_int_eq(NSED(&out, &err, "run", wf, "--questions", DEMO_Q,
                          "--store", store, "--dry-run", "--limit", "1"),
                     0);
    ck_assert(dir_exists(store));
    free(out);
    free(err);
    free(wf);
    free(missing);
    free(store);
}
END_TEST

Suite *tu_suite(void)
{
    Suite *s = suite_create("cli");
    TCase *tc = tcase_create("usage");

    tcase_add_test(tc, help_and_unknown_command);
    suite_add_tcase(s, tc);
    tc = tcase_create("validate");
    tcase_add_checked_fixture(tc, tu_tmp_setup, tu_tmp_teardown);
    tcase_add_test(tc, validate_examples_print_hash);
    tcase_add_test(tc, validate_workflow_dir_glob);
    tcase_add_test(tc, validate_reports_location_and_exit_2);
    tcase_add_test(tc, literal_api_key_refused_and_not_echoed);
    suite_add_tcase(s, tc);
    tc = tcase_create("store");
    tcase_add_checked_fixture(tc, tu_tmp_setup, tu_tmp_teardown);
    tcase_add_test(tc, ingest_is_idempotent_and_status_reports);
    tcase_add_test(tc, ingest_bad_file_adds_nothing);
    tcase_add_test(tc, workflow_change_refused_unless_flag);
    tcase_add_test(tc, status_of_missing_store_is_clear);
    tcase_add_test(tc, failed_print_exits_nonzero);
    suite_add_tcase(s, tc);
    tc = tcase_create("operability");
    tcase_add_checked_fixture(tc, tu_tmp_setup, tu_tmp_teardown);
    tcase_add_test(tc, unknown_command_did_you_mean);
    tcase_add_test(tc, repeated_option_is_usage_error);
    tcase_add_test(tc, missing_input_leaves_no_store);
    tcase_add_test(tc, ingest_killed_between_batches_is_undone);
    suite_add_tcase(s, tc);
    return s;
}
