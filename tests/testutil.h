/* testutil.h -- helpers shared by the Check suites.
 *
 * Every helper aborts the current test (ck_abort_msg) when the OS fails it,
 * so tests can call them without checking returns.
 */
#ifndef NSED_TESTUTIL_H
#define NSED_TESTUTIL_H

#include <stddef.h>
#include <sys/types.h>

struct Suite;
struct cJSON;

/* ---- the suite ------------------------------------------------------- */

/* Every tests/test_<name>.c defines this; the one main() (testmain.c) does
 * the process-wide setup (curl_global_init, SIGPIPE ignored) once, calls it
 * and runs the suite, exiting 0 when every test passed and 1 otherwise.
 * Check is not running yet when it is called, so it must not use the
 * helpers below. A suite that finds something it needs missing (e.g. the
 * llama-server binary) prints one line saying so and returns NULL: the
 * process exits 77, which ctest counts as skipped. */
struct Suite *tu_suite(void);

/* ---- files and processes --------------------------------------------- */

/* Create a fresh directory under $TMPDIR (or /tmp); returns a malloc'd path. */
char *tu_mkdtemp(void);

/* Remove a directory tree (rm -rf). NULL is ignored. */
void tu_rmrf(const char *path);

/* Write len bytes (or strlen(data) when len is (size_t)-1) to path. */
void tu_write_file(const char *path, const char *data, size_t len);

/* Read a whole file; returns a malloc'd NUL-terminated string or NULL when
 * the file does not exist. */
char *tu_read_file(const char *path, size_t *len);

/* malloc'd "dir/name". */
char *tu_path(const char *dir, const char *name);

/* Run argv (argv[0] is a path) with stdout and stderr captured; returns the
 * exit status (or 128+signal). *out and *err (each optional) receive
 * malloc'd NUL-terminated text. envp NULL keeps the current environment. */
int tu_run(char *const argv[], char **out, char **err);

/* Same, with extra environment assignments ("NAME=value", NULL-terminated)
 * added to the current environment for the child only. */
int tu_run_env(char *const argv[], char *const extra_env[], char **out,
               char **err);

/* 1 when haystack contains needle. */
int tu_contains(const char *haystack, const char *needle);

/* ---- the simulated endpoint server ---------------------------------- */

/* CLOCK_MONOTONIC in seconds and in milliseconds; sleep ms milliseconds
 * (through EINTR). */
double tu_now_s(void);
double tu_now_ms(void);
void tu_sleep_ms(double ms);

typedef struct tu_sim {
    pid_t pid;
    int out_fd;       /* its stdout (after the first line) */
    unsigned port;
    char url[64];     /* "http://127.0.0.1:PORT/v1" */
} tu_sim;

/* Read the first line of fd, which must start with prefix and end with a
 * port number (10 s timeout); returns the port. */
unsigned tu_read_port(int fd, const char *prefix);

/* Start nsed-sim (NSED_SIM_BIN) with --config config, --port 0 and the
 * extra arguments (NULL-terminated, may be NULL); its stderr goes to
 * err_path (NULL: /dev/null). Dies with its parent. */
void tu_sim_start(tu_sim *s, const char *config, const char *const *extra,
                  const char *err_path);

/* GET /sim/stats as JSON (caller deletes). */
struct cJSON *tu_sim_stats(const tu_sim *s);

/* A number from the stats: a top-level field when model is NULL (e.g.
 * "rejected"), else that model's field (e.g. "requests"). */
double tu_sim_stat(const tu_sim *s, const char *model, const char *field);

/* SIGTERM the server and require exit status 0 within 10 s (after that it
 * is killed and the test fails). */
void tu_sim_stop(tu_sim *s);

/* Run the nsed binary (NSED_BIN) with a NULL-terminated argument list and
 * return its exit status, capturing stdout/stderr like tu_run. When url is
 * not NULL the child gets NSED_SIM_URL=url. TU_NSED adds the NULL. */
int tu_nsed(const char *url, char **out, char **err, ...);
#define TU_NSED(url, out, err, ...) \
    tu_nsed(url, out, err, __VA_ARGS__, (char *)NULL)

/* Start `nsed run wf --questions questions --store store --quiet` in the
 * background with NSED_SIM_URL=url, its output to /dev/null, killed when
 * the test process dies; returns its pid (the test waits for it). */
pid_t tu_nsed_spawn_run(const char *url, const char *wf, const char *questions,
                        const char *store);

/* tu_nsed_spawn_run, then kill -9 the run after ms milliseconds unless it
 * has ended (ms < 0: never, wait for its end): 1 when it was killed; a
 * run that ended must have exited 0 (the test fails otherwise). */
int tu_nsed_run_or_kill(const char *url, const char *wf, const char *questions,
                        const char *store, double ms);

/* Requests the server received, summed over its models (/sim/stats). */
double tu_sim_total_requests(const tu_sim *s);

/* `nsed export --store dir`, which must succeed: its stdout (malloc'd). */
char *tu_nsed_export(const char *dir);

/* `nsed status --store dir --json`, which must succeed, parsed (caller
 * deletes). */
struct cJSON *tu_nsed_status(const char *dir);

/* The number at j.a (b NULL) or j.a.b; fails the test when absent. */
double tu_jnum(const struct cJSON *j, const char *a, const char *b);

/* A fresh temp directory in tu_tmp for each test (checked fixture). */
extern char *tu_tmp;
void tu_tmp_setup(void);
void tu_tmp_teardown(void);

/* The default prompts before they were reordered for the prefix cache
 * (issue 15, commit c614f5b) for `answer.extract: boxed`, as a `prompts:`
 * section, the text docs/workflow.md gives to pin them: set in a
 * workflow, they give it the hash the older nsed gave it without them. */
extern const char tu_previous_prompts[];

#endif
