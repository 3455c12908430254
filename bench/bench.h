/* bench.h -- the pieces of nsed-bench, the benchmark (its user guide is
 * docs/performance.md).
 *
 * nsed-bench is one program in two roles. As the driver (no --worker) it
 * generates question sets into a temporary directory, starts nsed-sim,
 * runs the runner in child processes (itself again, with --worker), watches
 * them from outside (the simulator's counters, /proc/PID/status) and prints
 * the table. As a worker it does one thing to one store -- ingest a file,
 * run the runner, count the ledger -- and prints one result line, so that
 * each measured runner is a process of its own: its CPU time, peak RSS and
 * kill -9 are those of the runner alone.
 *
 * Module prefixes: bench_sim (the simulator process), bench_child (worker
 * processes), bench_worker (the worker side), bench_gen (question sets),
 * bench_prefix (prompt prefix reuse), bench_llama (a real llama-server's
 * prefix cache).
 */
#ifndef NSED_BENCH_H
#define NSED_BENCH_H

#include "pipeline/base/err.h"
#include "pipeline/workflow/workflow.h"

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/types.h>

/* Monotonic clock in seconds. */
double bench_now(void);

/* ---- nsed-sim ----------------------------------------------------------- */

typedef struct bench_sim {
    pid_t pid;         /* 0 when not running */
    int out_fd;        /* its stdout (the port line) */
    unsigned port;
    char url[64];      /* http://127.0.0.1:PORT/v1 */
    void *curl;        /* easy handle for /sim/stats (kept: keep-alive) */
    char *body;        /* last stats body (capped) */
    size_t body_len;
} bench_sim;

/* The simulator's counters summed over its models. */
typedef struct bench_sim_counts {
    uint64_t requests;  /* chat requests received */
    uint64_t ok;        /* answered healthily */
    uint64_t in_flight; /* received, not answered yet */
    uint64_t peak_in_flight;
} bench_sim_counts;

/* Start sim_bin --config config [--questions questions] on a free port of
 * 127.0.0.1 and wait for its port line. Returns 0 and fills *s (stop with
 * bench_sim_stop), NSED_EIO when it cannot be started or prints no port
 * line within 60 s, NSED_ENOMEM. */
int bench_sim_start(bench_sim *s, const char *sim_bin, const char *config,
                    const char *questions, nsed_err *err);

/* GET /sim/stats and sum its totals into *out. Returns 0, NSED_ENET (no
 * answer) or NSED_EINVAL (not the documented JSON). */
int bench_sim_counts_get(bench_sim *s, bench_sim_counts *out, nsed_err *err);

/* CPU time (user + system, seconds) the simulator has used so far; 0 when
 * /proc cannot tell. */
double bench_sim_cpu(const bench_sim *s);

/* SIGTERM the simulator, wait for it and free what s holds. A stopped or
 * zeroed s is ignored. */
void bench_sim_stop(bench_sim *s);

/* ---- worker processes ----------------------------------------------------- */

typedef struct bench_child {
    pid_t pid;          /* 0 once reaped */
    int out_fd;         /* its stdout, -1 once at EOF */
    char out[4096];     /* what it printed (the result line), truncated */
    size_t out_len;
    int status;         /* wait status once reaped */
    struct rusage ru;   /* its rusage once reaped */
    double started;     /* bench_now() at spawn */
} bench_child;

/* Run this program again as `nsed-bench --worker ARGS...` (argv is
 * NULL-terminated and starts after --worker) with NSED_SIM_URL=sim_url in
 * its environment (when sim_url is not NULL), stdout to a pipe read by
 * bench_child_wait and stderr inherited. Returns 0 and fills *c, or
 * NSED_EIO. */
int bench_child_spawn(bench_child *c, const char *self, const char *sim_url,
                      const char *const *argv, nsed_err *err);

/* The same for any program: execv(path, args) (args NULL-terminated,
 * args[0] the program's name), stdout to the pipe, stderr inherited. A
 * program that cannot be executed exits with status 127. */
int bench_child_exec(bench_child *c, const char *path, const char *sim_url,
                     const char *const *args, nsed_err *err);

/* Read what the child printed for up to timeout_ms milliseconds (0: just
 * what is there). Returns 1 when its output reached EOF, 0 when it is still
 * running. */
int bench_child_pump(bench_child *c, int timeout_ms);

/* Wait for the child (after its EOF, or after a kill) and record its
 * status and rusage. Returns 0 when it exited with status 0; NSED_EIO
 * otherwise (err says how it ended) -- except that a child killed by
 * SIGKILL when killed_ok is set counts as success. */
int bench_child_wait(bench_child *c, bool killed_ok, nsed_err *err);

/* Value of key=VALUE in the child's result line as a double (0 and false
 * when absent). */
bool bench_child_value(const bench_child *c, const char *key, double *out);

/* VmRSS / RssAnon / RssFile / VmHWM of a live process, in KiB (fields it
 * cannot read stay 0). */
typedef struct bench_mem {
    long rss_kb, anon_kb, file_kb, hwm_kb;
} bench_mem;
void bench_mem_read(pid_t pid, bench_mem *out);

/* ---- the worker side ------------------------------------------------------ */

/* Entry point of `nsed-bench --worker MODE ...` (argv[0] is MODE):
 *   ingest WORKFLOW QUESTIONS STORE
 *   run WORKFLOW STORE [--nosync]
 *   ledger STORE                 (count the call ledger, read-only)
 *   floor URL N SLOTS            (N bare libcurl calls, SLOTS at a time)
 * Prints one `key=value ...` line on stdout; returns the exit status. */
int bench_worker_main(int argc, char **argv);

/* ---- question sets -------------------------------------------------------- */

/* Write n generated arithmetic questions with reference answers (ids
 * b0000001, ...) to path as JSONL. Returns 0 or NSED_EIO. */
int bench_gen_questions(const char *path, size_t n, nsed_err *err);

/* Write the first n lines of src to dst. Returns 0 or NSED_EIO. */
int bench_gen_head(const char *src, const char *dst, size_t n, nsed_err *err);

/* ---- prefix reuse --------------------------------------------------------- */

/* Reuse per model: prompt bytes sent, and of those the bytes that repeat a
 * prefix of an earlier prompt sent to the same model. */
typedef struct bench_prefix_model {
    uint64_t prompts;
    uint64_t bytes;
    uint64_t reused;
} bench_prefix_model;

/* By kind of call (index enum stage_kind) and for later rounds' proposals
 * (revise) apart from round 0's. */
enum bench_prefix_kind {
    BENCH_PREFIX_PROPOSE0,
    BENCH_PREFIX_REVISE,
    BENCH_PREFIX_EVALUATE,
    BENCH_PREFIX_REPAIR,
};
#define BENCH_PREFIX_KINDS 4

typedef struct bench_prefix_result {
    size_t nmodels;
    bench_prefix_model *models;            /* nmodels entries, malloc'd */
    bench_prefix_model kinds[BENCH_PREFIX_KINDS];
    size_t questions;
} bench_prefix_result;

/* Drive the first nq questions of the JSONL file questions through the
 * stages of wf (loaded with NSED_SIM_URL pointing at a running nsed-sim),
 * one question at a time, sending every request through a gateway without
 * a store, and measure the prefix reuse of the prompts each model got.
 * Returns 0 and fills *out (release with bench_prefix_release), or an
 * error. */
int bench_prefix_measure(const workflow *wf, const char *questions,
                         size_t nq, bench_prefix_result *out,
                         nsed_err *err);

void bench_prefix_release(bench_prefix_result *r);

/* The prefix computation itself: given n byte strings (s[i] of len[i]
 * bytes, NULs allowed) in the order they were sent, the sum over each
 * string of the longest common prefix it shares with any earlier string.
 * O(total length + n log n) comparisons. Returns 0 and sets *reused, or
 * NSED_ENOMEM. */
int bench_prefix_reused(const char *const *s, const size_t *len, size_t n,
                        uint64_t *reused);

/* ---- a real llama-server's prefix cache (figure 10) ----------------------- */

/* By kind of call, as status --json's prefix_cache.by_kind names them;
 * BENCH_LLAMA_ALL sums them. */
enum bench_llama_kind {
    BENCH_LLAMA_PROPOSE,
    BENCH_LLAMA_REVISE,
    BENCH_LLAMA_EVALUATE,
    BENCH_LLAMA_REPAIR,
    BENCH_LLAMA_SELFCONS,
    BENCH_LLAMA_ALL,
};
#define BENCH_LLAMA_KINDS 6

typedef struct bench_llama_tokens {
    double calls, prompt_tokens, cached_tokens;
} bench_llama_tokens;

typedef struct bench_llama_result {
    bool skipped;            /* llama-server, the generator or python missing */
    char why[PATH_MAX + 64]; /* why, when skipped */
    bench_llama_tokens kinds[BENCH_LLAMA_KINDS];
    double calls, failed; /* network calls of the run, and failed ones */
    size_t questions;
    double elapsed;   /* seconds of the nsed run */
    char config[160]; /* the server's and runner's settings measured */
} bench_llama_result;

/* Write three tiny models with the generator of the llama tools directory
 * ($NSED_LLAMA_DIR, else ../shared/tools/llama beside the source tree, run
 * by python), start its llama-server on a free port of 127.0.0.1 with
 * them, run nsed_bin on a demo-like workflow over the first nq questions
 * of the JSONL file questions, all in tmp/llama, stop the server and read
 * `nsed status --json`'s prefix_cache into *out. Returns 0 and fills *out
 * (out->skipped, with out->why, when a tool is missing: not an error), or
 * NSED_EIO when a step fails. */
int bench_llama_measure(const char *tmp, const char *nsed_bin,
                        const char *python, const char *questions, size_t nq,
                        bench_llama_result *out, nsed_err *err);

#endif
