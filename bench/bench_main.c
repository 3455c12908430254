/* bench_main.c -- nsed-bench: the benchmark driver (see bench.h and
 * docs/performance.md). */
#include "bench/bench.h"

#include <curl/curl.h>
#include <errno.h>
#include <ftw.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef NSED_SIM_BIN
#define NSED_SIM_BIN ""
#endif
#ifndef NSED_BIN
#define NSED_BIN ""
#endif
#ifndef NSED_BENCH_DIR
#define NSED_BENCH_DIR "bench"
#endif

/* Samples kept per run (at 20 per second: more than an hour). */
#define SAMPLES_MAX ((size_t)1 << 17)

static const char usage[] =
    "usage: nsed-bench [--quick] [--only LIST] [--keep] [--tmp DIR]\n"
    "                  [--sim PATH] [--long] [--python PATH] [--no-peer]\n"
    "\n"
    "Measure the runner against nsed-sim and print one table: endpoint\n"
    "saturation, runner CPU per call (beside a bare libcurl client and one\n"
    "that also makes each reply durable), peak RSS against the question count,\n"
    "the cost of durable checkpoints, resume after kill -9, and prompt\n"
    "prefix reuse, each beside its target. Takes a few minutes on 2 cores.\n"
    "Figures 7 and 8 (wall time through a 60 s outage of one model, and\n"
    "through 20% always-failing requests, against the same run without\n"
    "faults) are opt-in: --only 7,8 (several minutes more). Figure 9 runs\n"
    "nsed and a Python asyncio peer of the same protocol side by side.\n"
    "Figure 10 (the prefix-cache share a real llama-server reports, by\n"
    "kind of call; ../shared/tools/llama, else skipped) is opt-in too:\n"
    "--only 10 (about 40 s).\n"
    "\n"
    "  --quick       smaller sets (about 40 s; figures are noisier)\n"
    "  --only LIST   figures to run, e.g. 1,3, 7,8 or 10 (default: 1-6, 9)\n"
    "  --keep        keep the temporary directory (stores, question sets)\n"
    "  --tmp DIR     where to create it (default: $TMPDIR or /tmp); must be\n"
    "                a local disk, as for any run store\n"
    "  --sim PATH    the nsed-sim binary (default: the one built with this)\n"
    "  --long        figure 3 up to 1M questions (1k, 10k, 100k, 1M; tens\n"
    "                of minutes, several GB of store; not in CI)\n"
    "  --python PATH the Python of figure 9's peer, bench/peer/nsed_peer.py\n"
    "                (default /usr/bin/python3, with python3-aiohttp and\n"
    "                python3-yaml); the bench stops at once when it cannot\n"
    "                run the peer; figure 10 runs its tiny-model\n"
    "                generator with it too\n"
    "  --no-peer     leave figure 9 (nsed against the peer) out\n"
    "  -h, --help    this text\n";

typedef struct sizes {
    size_t saturate;   /* figure 1 */
    size_t cpu;        /* figures 2 and 4 */
    size_t rss[3];     /* figure 3 */
    size_t resume;     /* figure 5 */
    size_t prefix;     /* figure 6 */
    size_t faults;     /* figures 7 and 8 */
    size_t llama;      /* figure 10 */
} sizes;

static const sizes full_sizes = {3000, 2000, {1000, 10000, 100000}, 1000, 200,
                                 600,  20};
static const sizes quick_sizes = {400, 300, {500, 2000, 5000}, 300, 50,
                                  150, 10};

/* Figures 1..NFIG; 7, 8 and 10 run only when named in --only. */
#define NFIG 10
#define NFIG_DEFAULT 6
#define FIG_PEER 9 /* in the default set too */
#define FIG_LLAMA 10

/* Figure 3 --long: the question counts, and its two verdicts' bounds. */
#define RSS_LONG_N 4
static const size_t rss_long_sizes[RSS_LONG_N] = {1000, 10000, 100000, 1000000};

/* Figure 9: nsed against bench/peer/nsed_peer.py. */
#define PEER_REPS 3
typedef struct peer_side {
    double calls, questions, correct, elapsed, cpu, anon_kb;
} peer_side;
typedef struct peer_fig {
    peer_side lat[2][2][PEER_REPS]; /* [50 ms, 0 ms][nsed, peer][run] */
    peer_side heap[2];              /* the larger heap size, at 0 ms */
    size_t n, heap_n;
    int reps;
} peer_fig;

/* A faulted run (figures 7, 8) is given up after this many times the
 * fault-free run's wall time (and at least FAULT_CAP_MIN_S), so a runner
 * that stalls reports a lower bound instead of running for hours. */
#define FAULT_CAP_RATIO 20.0
#define FAULT_CAP_MIN_S 600.0

/* One faulted run of figures 7 and 8. */
typedef struct fault_result {
    bool ran;       /* false: skipped (the simulator refused its knob) */
    bool capped;    /* killed at the cap: elapsed is a lower bound */
    double elapsed; /* wall seconds, spawn to exit */
    double finished, incomplete;
    uint64_t sent;
} fault_result;

typedef struct sample {
    double t;           /* since the worker started */
    uint64_t ok;        /* simulator's healthy replies since the start */
    uint64_t in_flight;
} sample;

/* What one measured run of a worker gave. */
typedef struct run_result {
    double calls, hits, finished, incomplete, elapsed, user, sys;
    long maxrss_kb;        /* wait4 */
    long peak_anon_kb;     /* sampled */
    long peak_file_kb;     /* sampled */
    uint64_t sent;         /* simulator requests during the run */
    uint64_t in_flight_at_kill;
    bool killed;
    double first_call_s;   /* worker start to its first request; -1 */
    double sim_cpu;        /* CPU seconds the simulator used meanwhile */
    sample *samples;
    size_t nsamples, asamples;
} run_result;

typedef struct run_spec {
    const char *workflow;
    const char *store;
    bool nosync;
    int sample_ms;
    uint64_t kill_at;      /* SIGKILL once the simulator saw this many
                              requests of the run (0: never) */
    bool first_call;       /* measure the time to the first request */
} run_spec;

typedef struct bench {
    const char *self;      /* this executable */
    const char *sim_bin;
    char *tmp;
    sizes sz;
    bool keep;
    bool only[NFIG + 1];
    bench_sim sim50, sim0;
    char *questions;       /* the largest generated set */
    nsed_err err;
    /* results */
    double sat_ratio, sat_rate, sat_limit, sat_whole, sat_util;
    double sat_whole_ratio; /* of the run whose steady window counted */
    double sat_all[2], sat_cpu, sat_sim_cpu;
    size_t sat_caps;
    int sat_reps;
    uint64_t sat_calls;
    double cpu_us, cpu_user_us, cpu_sys_us, cpu_rate, cpu_sim_us;
    uint64_t cpu_calls;
    run_result rss[3];
    double rss_store[3]; /* figure 3: data.mdb bytes */
    bool long_mode;      /* figure 3 --long */
    run_result rss_long[RSS_LONG_N];
    double long_store[RSS_LONG_N], long_ingest_s[RSS_LONG_N];
    long long_ingest_kb[RSS_LONG_N];
    const char *python; /* figure 9 */
    bool no_peer;
    peer_fig pf;
    double ck_durable, ck_nosync;
    uint64_t rs_base, rs_sent1, rs_recorded, rs_sent2, rs_kill_sim;
    double rs_first;
    bool rs_complete;
    bench_prefix_result px;
    char px_names[3][64];
    double floor_us, floor_user_us, floor_sys_us;
    /* figure 2 at 50 ms calls: the runner and the floor in the same run */
    double cpu50_us, cpu50_user_us, cpu50_sys_us, floor50_us;
    /* the durable floor (bench_worker.c): the floor that also commits
     * each turn's replies to LMDB with fdatasync before reusing a slot */
    double dfloor_us, dfloor50_us;
    double dfloor_fsync, dfloor50_fsync; /* its commits per call */
    double floor50_rate; /* the floor's calls/s at 50 ms, whole run */
    uint64_t cpu50_calls;
    fault_result ft_base, ft[2]; /* figures 7 (outage), 8 (always fail) */
    bench_llama_result llama;    /* figure 10 */
    bool done[NFIG + 1];
} bench;

static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    fputs("nsed-bench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static char *path_in(const char *dir, const char *name)
{
    char *p = NULL;

    if (asprintf(&p, "%s/%s", dir, name) < 0)
        return NULL;
    return p;
}

/* ---- running workers ------------------------------------------------------ */

static int worker(bench *B, const char *sim_url, const char *const *argv,
                  bench_child *c)
{
    int rc = bench_child_spawn(c, B->self, sim_url, argv, &B->err);

    if (!rc)
        rc = bench_child_wait(c, false, &B->err);
    return rc;
}

static int ingest(bench *B, const char *wf, const char *questions,
                  const char *store)
{
    const char *argv[] = {"ingest", wf, questions, store, NULL};
    bench_child c;

    return worker(B, "http://127.0.0.1:9/v1", argv, &c);
}

static int ledger_count(bench *B, const char *store, uint64_t *n)
{
    const char *argv[] = {"ledger", store, NULL};
    bench_child c;
    double v;
    int rc = worker(B, NULL, argv, &c);

    if (rc)
        return rc;
    if (!bench_child_value(&c, "ledger", &v))
        return nsed_error(&B->err, NSED_EIO, "ledger worker printed no "
                          "count");
    *n = (uint64_t)v;
    return 0;
}

static void run_result_release(run_result *r)
{
    free(r->samples);
    memset(r, 0, sizeof *r);
}

static int add_sample(run_result *r, const sample *s)
{
    if (r->nsamples == SAMPLES_MAX)
        return 0; /* enough: later samples only refine the tail */
    if (r->nsamples == r->asamples) {
        size_t na = r->asamples ? 2 * r->asamples : 256;
        sample *p = realloc(r->samples, na * sizeof *p);

        if (!p)
            return NSED_ENOMEM;
        r->samples = p;
        r->asamples = na;
    }
    r->samples[r->nsamples++] = *s;
    return 0;
}

/* Run the runner on spec->store against sim, watching it from outside. */
static int measured_run(bench *B, bench_sim *sim, const run_spec *spec,
                        run_result *out)
{
    const char *argv[] = {"run", spec->workflow, spec->store,
                          spec->nosync ? "--nosync" : NULL, NULL};
    bench_child c;
    bench_sim_counts base, now;
    run_result r = {.first_call_s = -1};
    double sim_cpu0 = bench_sim_cpu(sim);
    bool eof = false;
    int rc;

    rc = bench_sim_counts_get(sim, &base, &B->err);
    if (!rc)
        rc = bench_child_spawn(&c, B->self, sim->url, argv, &B->err);
    if (rc)
        return rc;
    if (spec->first_call) {
        /* Poll the simulator every millisecond until the first request
         * of the run reaches it (no faster: the driver must not take the
         * core the starting runner needs). */
        while (!eof) {
            eof = bench_child_pump(&c, 1);
            rc = bench_sim_counts_get(sim, &now, &B->err);
            if (rc)
                goto fail;
            if (now.requests > base.requests) {
                r.first_call_s = bench_now() - c.started;
                break;
            }
        }
    }
    while (!eof) {
        bench_mem m;
        sample s;

        eof = bench_child_pump(&c, spec->sample_ms);
        if (eof)
            break;
        rc = bench_sim_counts_get(sim, &now, &B->err);
        if (rc)
            goto fail;
        bench_mem_read(c.pid, &m);
        if (m.anon_kb > r.peak_anon_kb)
            r.peak_anon_kb = m.anon_kb;
        if (m.file_kb > r.peak_file_kb)
            r.peak_file_kb = m.file_kb;
        s.t = bench_now() - c.started;
        s.ok = now.ok - base.ok;
        s.in_flight = now.in_flight;
        rc = add_sample(&r, &s);
        if (rc) {
            nsed_error(&B->err, rc, "out of memory");
            goto fail;
        }
        if (spec->kill_at && now.requests - base.requests >= spec->kill_at) {
            r.in_flight_at_kill = now.in_flight;
            kill(c.pid, SIGKILL);
            r.killed = true;
            break;
        }
    }
    rc = bench_child_wait(&c, r.killed, &B->err);
    if (rc)
        goto fail;
    if (r.killed) {
        /* Requests already on the wire still reach the simulator; let
         * them land before counting what the killed run sent. */
        usleep(300 * 1000);
    }
    rc = bench_sim_counts_get(sim, &now, &B->err);
    if (rc)
        goto fail;
    r.sent = now.requests - base.requests;
    r.sim_cpu = bench_sim_cpu(sim) - sim_cpu0;
    r.maxrss_kb = c.ru.ru_maxrss;
    if (!r.killed) {
        bench_child_value(&c, "hits", &r.hits);
        bench_child_value(&c, "finished", &r.finished);
        bench_child_value(&c, "incomplete", &r.incomplete);
        bench_child_value(&c, "elapsed", &r.elapsed);
        bench_child_value(&c, "user", &r.user);
        bench_child_value(&c, "sys", &r.sys);
        if (!bench_child_value(&c, "calls", &r.calls)) {
            rc = nsed_error(&B->err, NSED_EIO, "run worker printed no "
                            "result");
            goto fail;
        }
    }
    *out = r;
    return 0;
fail:
    if (c.pid > 0) {
        kill(c.pid, SIGKILL);
        bench_child_wait(&c, true, NULL);
    }
    run_result_release(&r);
    return rc;
}

/* Ingest the first n questions into a fresh store and run them. */
static int fresh_run(bench *B, bench_sim *sim, const char *name,
                     const char *wfname, size_t n, run_spec *spec,
                     run_result *out)
{
    char qname[64], *qpath = NULL, *store = NULL, *wf = NULL;
    int rc = NSED_ENOMEM;

    snprintf(qname, sizeof qname, "q%zu.jsonl", n);
    qpath = path_in(B->tmp, qname);
    store = path_in(B->tmp, name);
    wf = path_in(NSED_BENCH_DIR, wfname);
    if (!qpath || !store || !wf) {
        nsed_error(&B->err, rc, "out of memory");
        goto out;
    }
    if (access(qpath, R_OK) != 0) {
        rc = bench_gen_head(B->questions, qpath, n, &B->err);
        if (rc)
            goto out;
    }
    rc = ingest(B, wf, qpath, store);
    if (rc)
        goto out;
    spec->workflow = wf;
    spec->store = store;
    rc = measured_run(B, sim, spec, out);
out:
    free(qpath);
    free(store);
    free(wf);
    return rc;
}

/* ---- the figures ---------------------------------------------------------- */

/* The fixed latency of every call in sim-50ms.yaml (ttft_ms 50,
 * per_token_ms 0). */
#define SIM50_LATENCY_S 0.050

/* Sum of max_concurrency over the models of bench/wfname, loaded with
 * NSED_SIM_URL=url (the workflow takes its endpoints from there). */
static int sum_caps(bench *B, const char *url, const char *wfname,
                    size_t *caps)
{
    char *path = path_in(NSED_BENCH_DIR, wfname);
    workflow *wf = NULL;
    size_t n = 0;
    int rc;

    if (!path)
        return nsed_error(&B->err, NSED_ENOMEM, "out of memory");
    setenv("NSED_SIM_URL", url, 1);
    rc = workflow_load(path, &wf, &B->err);
    for (size_t i = 0; !rc && i < wf->nmodels; i++)
        n += (size_t)wf->models[i].max_concurrency;
    workflow_free(wf);
    free(path);
    if (!rc)
        *caps = n;
    return rc;
}

/* 1. Achieved calls/s over the steady part of a large run (from 10% to
 * 90% of its calls: the ramp-up and the last questions draining are not
 * the runner's steady state) against sum(caps) / latency. The simulator
 * and the runner share the machine's cores, so a busy neighbour shows up
 * as lost throughput: the run is repeated (full sizes) and the better one
 * counts; both are in the details. */
static int fig_saturation(bench *B)
{
    int reps = B->sz.saturate == full_sizes.saturate ? 2 : 1;
    size_t caps = 0;
    int rc = sum_caps(B, B->sim50.url, "team3.yaml", &caps);

    if (rc)
        return rc;
    B->sat_caps = caps;
    B->sat_limit = (double)caps / SIM50_LATENCY_S;
    for (int rep = 0; rep < reps; rep++) {
        run_spec spec = {.sample_ms = 50};
        run_result r;
        const sample *a = NULL, *b = NULL;
        double busy = 0, rate, ratio;
        size_t nbusy = 0;
        char name[32];

        note("1/6 saturation%s: %zu questions, %zu slots, 50 ms per call",
             rep ? " (again)" : "", B->sz.saturate, caps);
        snprintf(name, sizeof name, "saturate-%d", rep);
        rc = fresh_run(B, &B->sim50, name, "team3.yaml", B->sz.saturate,
                       &spec, &r);
        if (rc)
            return rc;
        for (size_t i = 0; i < r.nsamples; i++) {
            const sample *s = &r.samples[i];

            if (!a && (double)s->ok >= 0.1 * r.calls)
                a = s;
            if (a && !b && (double)s->ok >= 0.9 * r.calls)
                b = s;
            if (a && !b) {
                busy += (double)s->in_flight;
                nbusy++;
            }
        }
        if (!a || !b || b->t <= a->t) {
            run_result_release(&r);
            return nsed_error(&B->err, NSED_EIO, "saturation: too few "
                              "samples (%zu) for a steady window",
                              r.nsamples);
        }
        rate = (double)(b->ok - a->ok) / (b->t - a->t);
        ratio = rate / B->sat_limit;
        B->sat_all[rep] = ratio;
        B->sat_reps = rep + 1;
        if (ratio > B->sat_ratio) {
            B->sat_rate = rate;
            B->sat_ratio = ratio;
            B->sat_whole = r.calls / r.elapsed;
            B->sat_whole_ratio = B->sat_whole / B->sat_limit;
            B->sat_util = nbusy ? busy / (double)nbusy / (double)caps : 0;
            B->sat_calls = (uint64_t)r.calls;
            B->sat_cpu = (r.user + r.sys) / r.elapsed;
            B->sat_sim_cpu = r.sim_cpu / r.elapsed;
        }
        run_result_release(&r);
    }
    return 0;
}

/* What one floor run measured: CPU per call, whole-run calls/s, and
 * (the durable floor) commits per call. */
typedef struct floor_result {
    double user_us, sys_us, rate, commits;
} floor_result;

/* The transport floor against sim: the same number of calls (n), as
 * many at a time as the workflow's slots, from a client that does
 * nothing else: the transport's share of the runner's CPU. With durable
 * (a store directory under the bench's, named so), the durable floor:
 * the same client committing every turn's replies (bench_worker.c). */
static int floor_cpu(bench *B, bench_sim *sim, uint64_t n, const char *durable,
                     floor_result *out)
{
    char ncalls[32], nslots[32], dir[PATH_MAX];
    const char *argv[] = {"floor", sim->url, ncalls, nslots, NULL, NULL};
    bench_child c;
    double calls = 0, user = 0, sys = 0, elapsed = 0, commits = 0;
    size_t caps = 0;
    int rc = sum_caps(B, sim->url, "team3.yaml", &caps);

    snprintf(ncalls, sizeof ncalls, "%llu", (unsigned long long)n);
    snprintf(nslots, sizeof nslots, "%zu", caps);
    if (durable) {
        snprintf(dir, sizeof dir, "%s/%s", B->tmp, durable);
        argv[4] = dir;
    }
    if (!rc)
        rc = worker(B, NULL, argv, &c);
    if (!rc && (!bench_child_value(&c, "calls", &calls) || calls <= 0))
        rc = nsed_error(&B->err, NSED_EIO, "floor worker printed no result");
    if (!rc) {
        bench_child_value(&c, "user", &user);
        bench_child_value(&c, "sys", &sys);
        bench_child_value(&c, "elapsed", &elapsed);
        bench_child_value(&c, "commits", &commits);
        out->user_us = user * 1e6 / calls;
        out->sys_us = sys * 1e6 / calls;
        out->rate = elapsed > 0 ? calls / elapsed : 0;
        out->commits = commits / calls;
    }
    return rc;
}

/* The bare floor (*f) and the durable floor (*d, its store the bench's
 * directory dname) against sim, n calls each. */
static int floors(bench *B, bench_sim *sim, uint64_t n, const char *dname,
                  floor_result *f, floor_result *d)
{
    int rc = floor_cpu(B, sim, n, NULL, f);

    return rc ? rc : floor_cpu(B, sim, n, dname, d);
}

/* 2 at real latency: half the questions of figure 2 against 50 ms calls
 * (a loop turn then finishes a few replies, not a wave of 96), durable,
 * and the floor against the same simulator with as many calls. */
static int cpu_at_latency(bench *B)
{
    size_t n = B->sz.cpu / 2 ? B->sz.cpu / 2 : 1;
    run_spec spec = {.sample_ms = 100};
    floor_result f = {0}, d = {0};
    run_result r;
    int rc;

    note("2/6 runner CPU at 50 ms: %zu questions, and the floor", n);
    rc = fresh_run(B, &B->sim50, "cpu50", "team3.yaml", n, &spec, &r);
    if (rc)
        return rc;
    B->cpu50_calls = (uint64_t)r.calls;
    B->cpu50_user_us = r.user * 1e6 / r.calls;
    B->cpu50_sys_us = r.sys * 1e6 / r.calls;
    B->cpu50_us = B->cpu50_user_us + B->cpu50_sys_us;
    run_result_release(&r);
    rc = floors(B, &B->sim50, B->cpu50_calls, "floor-durable-50", &f, &d);
    B->floor50_us = f.user_us + f.sys_us;
    B->floor50_rate = f.rate;
    B->dfloor50_us = d.user_us + d.sys_us;
    B->dfloor50_fsync = d.commits;
    return rc;
}

/* 2 and 4. The same near-zero-latency workload, durable then without
 * fsync; runner CPU per call from the durable run. Each mode runs twice
 * and the faster run counts, so one scheduling hiccup on a 2-core
 * machine does not decide the comparison. */
static int fig_cpu_checkpoint(bench *B, bool cpu, bool ck)
{
    int rc = 0;
    double best[2] = {0, 0};

    note("%s: %zu questions, 3 models of 32 slots, no latency",
         cpu && ck ? "2/6 + 4/6 runner CPU and checkpoint cost"
                   : cpu ? "2/6 runner CPU" : "4/6 checkpoint cost",
         B->sz.cpu);
    for (int rep = 0; rep < 2 && !rc; rep++) {
        for (int mode = 0; mode < (ck ? 2 : 1) && !rc; mode++) {
            run_spec spec = {.sample_ms = 100, .nosync = mode == 1};
            run_result r;
            char name[32];
            double rate;

            snprintf(name, sizeof name, "cpu-%s-%d",
                     mode ? "nosync" : "durable", rep);
            rc = fresh_run(B, &B->sim0, name, "team3.yaml", B->sz.cpu,
                           &spec, &r);
            if (rc)
                break;
            rate = r.calls / r.elapsed;
            if (rate > best[mode])
                best[mode] = rate;
            if (mode == 0 && (B->cpu_calls == 0 ||
                              (r.user + r.sys) * 1e6 / r.calls <
                                  B->cpu_us)) {
                B->cpu_calls = (uint64_t)r.calls;
                B->cpu_us = (r.user + r.sys) * 1e6 / r.calls;
                B->cpu_user_us = r.user * 1e6 / r.calls;
                B->cpu_sys_us = r.sys * 1e6 / r.calls;
                B->cpu_rate = rate;
                B->cpu_sim_us = r.sim_cpu * 1e6 / r.calls;
            }
            run_result_release(&r);
        }
    }
    B->ck_durable = best[0];
    B->ck_nosync = best[1];
    if (!rc && cpu) {
        floor_result f = {0}, d = {0};

        rc = floors(B, &B->sim0, B->cpu_calls, "floor-durable-0", &f, &d);
        B->floor_user_us = f.user_us;
        B->floor_sys_us = f.sys_us;
        B->dfloor_us = d.user_us + d.sys_us;
        B->dfloor_fsync = d.commits;
    }
    B->floor_us = B->floor_user_us + B->floor_sys_us;
    if (!rc && cpu)
        rc = cpu_at_latency(B);
    return rc;
}

/* Bytes of the store's data file (LMDB grows data.mdb to its last used
 * page, so its size is what the store takes); 0 when it cannot be read. */
static double store_bytes(const bench *B, const char *name)
{
    char path[PATH_MAX];
    struct stat st;

    snprintf(path, sizeof path, "%s/%s/data.mdb", B->tmp, name);
    return stat(path, &st) == 0 ? (double)st.st_size : 0;
}

/* 3. Peak RSS against the question count: one seat, one round (one call
 * per question), so 100k questions stream through in the time budget. */
static int fig_rss(bench *B)
{
    int rc = 0;

    for (int i = 0; i < 3 && !rc; i++) {
        run_spec spec = {.sample_ms = 50};
        char name[32];

        note("3/6 memory: %zu questions, one call each", B->sz.rss[i]);
        snprintf(name, sizeof name, "rss-%zu", B->sz.rss[i]);
        rc = fresh_run(B, &B->sim0, name, "team1.yaml", B->sz.rss[i], &spec,
                       &B->rss[i]);
        B->rss_store[i] = store_bytes(B, name);
    }
    return rc;
}

static int remove_one(const char *path, const struct stat *sb, int type,
                      struct FTW *ftw);

/* 3 --long: the same up to 1M questions. Each size is ingested by a
 * worker of its own (timed, its peak RSS read from wait4: ingest streams
 * the file, so it must not grow with it), run, measured, and its store
 * removed before the next (1M questions make a store of gigabytes). */
static int fig_rss_long(bench *B)
{
    int rc = 0;

    for (int i = 0; i < RSS_LONG_N && !rc; i++) {
        size_t n = rss_long_sizes[i];
        run_spec spec = {.sample_ms = 100};
        char name[32], qname[64], *qpath = NULL, *store = NULL, *wf = NULL;
        const char *argv[5];
        bench_child c;
        double t0;

        note("3/6 memory --long: %zu questions, one call each", n);
        snprintf(name, sizeof name, "long-%zu", n);
        snprintf(qname, sizeof qname, "q%zu.jsonl", n);
        qpath = path_in(B->tmp, qname);
        store = path_in(B->tmp, name);
        wf = path_in(NSED_BENCH_DIR, "team1.yaml");
        rc = qpath && store && wf ? 0 : NSED_ENOMEM;
        if (rc)
            nsed_error(&B->err, rc, "out of memory");
        if (!rc && access(qpath, R_OK) != 0)
            rc = bench_gen_head(B->questions, qpath, n, &B->err);
        argv[0] = "ingest";
        argv[1] = wf;
        argv[2] = qpath;
        argv[3] = store;
        argv[4] = NULL;
        t0 = bench_now();
        if (!rc)
            rc = bench_child_spawn(&c, B->self, "http://127.0.0.1:9/v1", argv,
                                   &B->err);
        while (!rc && !bench_child_pump(&c, 50)) {
            bench_mem m;

            bench_mem_read(c.pid, &m);
            if (m.anon_kb > B->long_ingest_kb[i])
                B->long_ingest_kb[i] = m.anon_kb;
        }
        if (!rc)
            rc = bench_child_wait(&c, false, &B->err);
        if (!rc) {
            B->long_ingest_s[i] = bench_now() - t0;
            spec.workflow = wf;
            spec.store = store;
            rc = measured_run(B, &B->sim0, &spec, &B->rss_long[i]);
        }
        B->long_store[i] = store_bytes(B, name);
        if (!B->keep && store)
            nftw(store, remove_one, 16, FTW_DEPTH | FTW_PHYS);
        if (!B->keep && qpath)
            remove(qpath);
        free(qpath);
        free(store);
        free(wf);
    }
    return rc;
}

/* 5. kill -9 at the midpoint, then the same run again: the calls the two
 * runs sent beyond an uninterrupted run's, against the calls that were
 * sent but not yet recorded in the ledger when the first was killed. */
static int fig_resume(bench *B)
{
    run_spec spec = {.sample_ms = 20};
    run_result base, r1, r2;
    int rc;

    note("5/6 resume: %zu questions at 50 ms per call, kill -9 at the "
         "midpoint", B->sz.resume);
    rc = fresh_run(B, &B->sim50, "resume-base", "team3.yaml", B->sz.resume,
                   &spec, &base);
    if (rc)
        return rc;
    B->rs_base = base.sent;
    run_result_release(&base);
    spec.kill_at = B->rs_base / 2;
    spec.sample_ms = 5;
    rc = fresh_run(B, &B->sim50, "resume", "team3.yaml", B->sz.resume, &spec,
                   &r1);
    if (rc)
        return rc;
    if (!r1.killed) {
        run_result_release(&r1);
        return nsed_error(&B->err, NSED_EIO, "resume: the run ended before "
                          "its midpoint");
    }
    B->rs_sent1 = r1.sent;
    B->rs_kill_sim = r1.in_flight_at_kill;
    run_result_release(&r1);
    {
        char *store = path_in(B->tmp, "resume");
        char *wf = path_in(NSED_BENCH_DIR, "team3.yaml");

        if (!store || !wf) {
            free(store);
            free(wf);
            return nsed_error(&B->err, NSED_ENOMEM, "out of memory");
        }
        rc = ledger_count(B, store, &B->rs_recorded);
        if (!rc) {
            run_spec again = {.workflow = wf, .store = store,
                              .sample_ms = 20, .first_call = true};

            rc = measured_run(B, &B->sim50, &again, &r2);
        }
        free(store);
        free(wf);
    }
    if (rc)
        return rc;
    B->rs_sent2 = r2.sent;
    B->rs_first = r2.first_call_s;
    B->rs_complete = r2.incomplete == 0;
    run_result_release(&r2);
    return 0;
}

/* 6. Prefix reuse per endpoint. */
static int fig_prefix(bench *B)
{
    char *wpath = path_in(NSED_BENCH_DIR, "team3.yaml");
    workflow *wf = NULL;
    int rc;

    note("6/6 prefix reuse: %zu questions", B->sz.prefix);
    if (!wpath)
        return nsed_error(&B->err, NSED_ENOMEM, "out of memory");
    setenv("NSED_SIM_URL", B->sim0.url, 1);
    rc = workflow_load(wpath, &wf, &B->err);
    for (size_t m = 0; !rc && m < wf->nmodels && m < 3; m++)
        snprintf(B->px_names[m], sizeof B->px_names[m], "%s",
                 wf->models[m].id);
    if (!rc)
        rc = bench_prefix_measure(wf, B->questions, B->sz.prefix, &B->px,
                                  &B->err);
    workflow_free(wf);
    free(wpath);
    return rc;
}

/* 10. The prefix-cache share a real llama-server reports (bench_llama.c):
 * the demo's questions, which are what the demo workflow is written for. */
static int fig_llama(bench *B)
{
    note("10 llama-server prefix cache: %zu questions", B->sz.llama);
    return bench_llama_measure(B->tmp, NSED_BIN, B->python,
                               NSED_BENCH_DIR
                               "/../workflows/demo-questions.jsonl",
                               B->sz.llama, &B->llama, &B->err);
}

/* ---- the table ------------------------------------------------------------ */

/* 7, 8. Wall time through faults, as a ratio to the same run without.
 *
 * The three simulators (bench/sim-faults*.yaml) are the same models with
 * the same 50 ms replies; the outage and always-failing configs add one
 * knob each. Those knobs are named here, for the benchmark, before
 * nsed-sim has them: a simulator that refuses its config (an unknown key
 * is an error, docs/nsed-sim.md) skips its figure with one line. */

/* Ingest n questions into a fresh store and run team3.yaml on it against
 * sim, killing the run after cap_s seconds. */
static int fault_run(bench *B, bench_sim *sim, const char *name, size_t n,
                     double cap_s, fault_result *out)
{
    char qname[64], *qpath = NULL, *store = NULL, *wf = NULL;
    const char *argv[] = {"run", NULL, NULL, "--nosync", NULL};
    bench_sim_counts base, now;
    bench_child c;
    bool eof = false;
    int rc = NSED_ENOMEM;

    snprintf(qname, sizeof qname, "q%zu.jsonl", n);
    qpath = path_in(B->tmp, qname);
    store = path_in(B->tmp, name);
    wf = path_in(NSED_BENCH_DIR, "team3.yaml");
    if (!qpath || !store || !wf) {
        nsed_error(&B->err, rc, "out of memory");
        goto out;
    }
    if (access(qpath, R_OK) != 0) {
        rc = bench_gen_head(B->questions, qpath, n, &B->err);
        if (rc)
            goto out;
    }
    rc = ingest(B, wf, qpath, store);
    if (!rc)
        rc = bench_sim_counts_get(sim, &base, &B->err);
    if (rc)
        goto out;
    argv[1] = wf;
    argv[2] = store;
    rc = bench_child_spawn(&c, B->self, sim->url, argv, &B->err);
    if (rc)
        goto out;
    memset(out, 0, sizeof *out);
    while (!eof) {
        eof = bench_child_pump(&c, 200);
        if (!eof && bench_now() - c.started > cap_s) {
            kill(c.pid, SIGKILL);
            out->capped = true;
            break;
        }
    }
    rc = bench_child_wait(&c, out->capped, &B->err);
    out->elapsed = bench_now() - c.started;
    if (rc)
        goto out;
    rc = bench_sim_counts_get(sim, &now, &B->err);
    if (rc)
        goto out;
    out->ran = true;
    out->sent = now.requests - base.requests;
    if (!out->capped) {
        bench_child_value(&c, "finished", &out->finished);
        bench_child_value(&c, "incomplete", &out->incomplete);
    }
out:
    free(qpath);
    free(store);
    free(wf);
    return rc;
}

/* Whether nsed-sim accepts bench/cfgname (started and stopped again). */
static bool sim_accepts(bench *B, const char *cfgname)
{
    char *cfg = path_in(NSED_BENCH_DIR, cfgname);
    bench_sim sim = {0};
    nsed_err serr = {0};
    int rc;

    if (!cfg)
        return false;
    rc = bench_sim_start(&sim, B->sim_bin, cfg, B->questions, &serr);
    free(cfg);
    bench_sim_stop(&sim);
    return rc == 0;
}

static int fig_faults(bench *B)
{
    static const char *const cfgs[] = {"sim-faults-outage.yaml",
                                       "sim-faults-failing.yaml"};
    static const char *const what[] =
        {"a 60 s outage of one model (faults.down_after_s, down_for_s)",
         "20% always-failing prompts (faults.rate_always_timeout)"};
    static const char *const names[] = {"faults-outage", "faults-failing"};
    bool use[2] = {false, false};
    bench_sim sim = {0};
    char *cfg;
    double cap;
    int rc;

    for (int i = 0; i < 2; i++) {
        if (!B->only[7 + i])
            continue;
        use[i] = sim_accepts(B, cfgs[i]);
        if (!use[i])
            note("figure %d skipped: nsed-sim refuses bench/%s, whose knob "
                 "is for %s",
                 7 + i, cfgs[i], what[i]);
    }
    if (!use[0] && !use[1])
        return 0;
    note("7-8/8 faults: %zu questions at 50 ms per call, without faults "
         "first",
         B->sz.faults);
    cfg = path_in(NSED_BENCH_DIR, "sim-faults.yaml");
    rc = cfg ? bench_sim_start(&sim, B->sim_bin, cfg, B->questions, &B->err)
             : NSED_ENOMEM;
    free(cfg);
    if (!rc)
        rc = fault_run(B, &sim, "faults-none", B->sz.faults, 1e9, &B->ft_base);
    bench_sim_stop(&sim);
    if (rc)
        return rc;
    note("without faults: %.1f s", B->ft_base.elapsed);
    cap = B->ft_base.elapsed * FAULT_CAP_RATIO;
    if (cap < FAULT_CAP_MIN_S)
        cap = FAULT_CAP_MIN_S;
    for (int i = 0; i < 2; i++) {
        if (!use[i])
            continue;
        cfg = path_in(NSED_BENCH_DIR, cfgs[i]);
        rc = cfg ? bench_sim_start(&sim, B->sim_bin, cfg, B->questions, &B->err)
                 : NSED_ENOMEM;
        free(cfg);
        if (rc)
            return rc;
        note("%d/8 through %s", 7 + i, what[i]);
        rc = fault_run(B, &sim, names[i], B->sz.faults, cap, &B->ft[i]);
        bench_sim_stop(&sim);
        if (rc)
            return rc;
        note("through the fault: %.1f s%s", B->ft[i].elapsed,
             B->ft[i].capped ? " (given up at the cap)" : "");
        B->done[7 + i] = true;
    }
    return 0;
}

/* 9. nsed against bench/peer/nsed_peer.py ---------------------------------- */

/* Can the peer run at all? Checked before any figure, so that a missing
 * python3-aiohttp stops the bench at once, with one line, instead of
 * after minutes of other figures (or, worse, a table without figure 9). */
static int peer_check(bench *B)
{
    const char *args[] = {B->python, "-c", "import aiohttp, yaml", NULL};
    char script[PATH_MAX];
    bench_child c;
    int rc;

    snprintf(script, sizeof script, "%s/peer/nsed_peer.py", NSED_BENCH_DIR);
    if (access(script, R_OK) != 0)
        return nsed_error(&B->err, NSED_EIO,
                          "figure 9: the peer %s is "
                          "missing (--no-peer leaves figure 9 out)",
                          script);
    rc = bench_child_exec(&c, B->python, NULL, args, &B->err);
    while (!rc && !bench_child_pump(&c, 1000))
        ;
    if (!rc)
        rc = bench_child_wait(&c, false, &B->err);
    if (rc)
        return nsed_error(&B->err, NSED_EIO,
                          "figure 9: the peer cannot run: "
                          "%s has no aiohttp or yaml (apt-get install "
                          "python3-aiohttp python3-yaml; --python PATH; or "
                          "--no-peer to leave figure 9 out)",
                          B->python);
    return 0;
}

/* One run of the peer on qpath against sim, its heap sampled from outside
 * every 50 ms as the runner's is; CPU from wait4 (the whole process,
 * interpreter start included). */
static int peer_run(bench *B, bench_sim *sim, const char *qpath, peer_side *out)
{
    char script[PATH_MAX], wf[PATH_MAX];
    const char *args[] = {B->python,     script, "--workflow", wf,
                          "--questions", qpath,  NULL};
    bench_child c;
    double failed = 0;
    long peak = 0;
    int rc;

    snprintf(script, sizeof script, "%s/peer/nsed_peer.py", NSED_BENCH_DIR);
    snprintf(wf, sizeof wf, "%s/team3.yaml", NSED_BENCH_DIR);
    rc = bench_child_exec(&c, B->python, sim->url, args, &B->err);
    if (rc)
        return rc;
    while (!bench_child_pump(&c, 50)) {
        bench_mem m;

        bench_mem_read(c.pid, &m);
        if (m.anon_kb > peak)
            peak = m.anon_kb;
    }
    rc = bench_child_wait(&c, false, &B->err);
    if (rc)
        return nsed_error(&B->err, rc, "figure 9: the peer failed: %s",
                          B->err.msg);
    memset(out, 0, sizeof *out);
    if (!bench_child_value(&c, "calls", &out->calls) ||
        !bench_child_value(&c, "questions", &out->questions) ||
        (bench_child_value(&c, "failed", &failed) && failed > 0))
        return nsed_error(&B->err, NSED_EIO,
                          "figure 9: the peer printed "
                          "no result, or questions failed: %.*s",
                          (int)c.out_len, c.out);
    bench_child_value(&c, "correct", &out->correct);
    bench_child_value(&c, "elapsed", &out->elapsed);
    out->cpu = (double)c.ru.ru_utime.tv_sec + c.ru.ru_utime.tv_usec / 1e6 +
               (double)c.ru.ru_stime.tv_sec + c.ru.ru_stime.tv_usec / 1e6;
    out->anon_kb = (double)peak;
    return 0;
}

/* One run of nsed (the runner worker) on the first n questions. */
static int peer_nsed_run(bench *B, bench_sim *sim, const char *name, size_t n,
                         peer_side *out)
{
    run_spec spec = {.sample_ms = 50};
    run_result r;
    int rc = fresh_run(B, sim, name, "team3.yaml", n, &spec, &r);

    if (rc)
        return rc;
    memset(out, 0, sizeof *out);
    out->calls = r.calls;
    out->questions = r.finished;
    out->elapsed = r.elapsed;
    out->cpu = r.user + r.sys;
    out->anon_kb = (double)r.peak_anon_kb;
    run_result_release(&r);
    return 0;
}

/* nsed, then the peer, on the same question file and simulator. */
static int peer_pair(bench *B, bench_sim *sim, const char *tag, size_t n,
                     peer_side side[2])
{
    char name[48], qname[64], *qpath;
    int rc;

    snprintf(name, sizeof name, "peer-%s", tag);
    rc = peer_nsed_run(B, sim, name, n, &side[0]);
    if (rc)
        return rc;
    snprintf(qname, sizeof qname, "q%zu.jsonl", n); /* fresh_run made it */
    qpath = path_in(B->tmp, qname);
    if (!qpath)
        return nsed_error(&B->err, NSED_ENOMEM, "out of memory");
    rc = peer_run(B, sim, qpath, &side[1]);
    free(qpath);
    return rc;
}

/* 9. The same workload (bench/team3.yaml) through nsed and through the
 * peer, alternately, at 50 ms and at 0 ms per call; then once more each at
 * the larger question count for the heap. */
static int fig_peer(bench *B)
{
    bool quick = B->sz.saturate != full_sizes.saturate;
    peer_fig *P = &B->pf;
    int rc = 0;

    P->n = quick ? 200 : 1000;
    P->heap_n = quick ? 1000 : 10000;
    P->reps = quick ? 1 : PEER_REPS;
    for (int lat = 0; lat < 2 && !rc; lat++) {
        bench_sim *sim = lat ? &B->sim0 : &B->sim50;

        for (int rep = 0; rep < P->reps && !rc; rep++) {
            peer_side side[2];
            char tag[32];

            note("9 nsed vs peer: %zu questions, %s per call, run %d of %d",
                 P->n, lat ? "0 ms" : "50 ms", rep + 1, P->reps);
            snprintf(tag, sizeof tag, "%d-%d", lat, rep);
            rc = peer_pair(B, sim, tag, P->n, side);
            P->lat[lat][0][rep] = side[0];
            P->lat[lat][1][rep] = side[1];
        }
    }
    if (!rc) {
        note("9 nsed vs peer: heap at %zu questions, 0 ms per call", P->heap_n);
        rc = peer_pair(B, &B->sim0, "heap", P->heap_n, P->heap);
    }
    return rc;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

/* Median over the runs of one side of one metric (the metric picked by
 * f), so one disturbed run does not decide a ratio. */
static double peer_median(const peer_fig *P, int lat, int who,
                          double (*f)(const peer_side *))
{
    double v[PEER_REPS];

    for (int i = 0; i < P->reps; i++)
        v[i] = f(&P->lat[lat][who][i]);
    qsort(v, (size_t)P->reps, sizeof v[0], cmp_double);
    return P->reps % 2 ? v[P->reps / 2]
                       : (v[P->reps / 2 - 1] + v[P->reps / 2]) / 2;
}

static double ps_calls_s(const peer_side *s)
{
    return s->elapsed > 0 ? s->calls / s->elapsed : 0;
}
static double ps_q_s(const peer_side *s)
{
    return s->elapsed > 0 ? s->questions / s->elapsed : 0;
}
static double ps_cpu_us(const peer_side *s)
{
    return s->calls > 0 ? s->cpu * 1e6 / s->calls : 0;
}
static double ps_anon(const peer_side *s)
{
    return s->anon_kb;
}

static void row(const char *num, const char *label, const char *measured,
                const char *target, const char *v);

static void print_peer(const bench *B)
{
    static const char *const lat_names[] = {"50 ms", "0 ms"};
    const peer_fig *P = &B->pf;
    char cell[256], label[96];

    row("9", "nsed / Python asyncio peer", "", "", "");
    for (int lat = 0; lat < 2; lat++) {
        double a, b;

        a = peer_median(P, lat, 0, ps_calls_s);
        b = peer_median(P, lat, 1, ps_calls_s);
        snprintf(label, sizeof label, "  %s: throughput calls/s",
                 lat_names[lat]);
        snprintf(cell, sizeof cell, "%.0f / %.0f = %.2f", a, b,
                 b > 0 ? a / b : 0);
        row("", label, cell, "(reported)", "");
        a = peer_median(P, lat, 0, ps_q_s);
        b = peer_median(P, lat, 1, ps_q_s);
        snprintf(label, sizeof label, "  %s: throughput questions/s",
                 lat_names[lat]);
        snprintf(cell, sizeof cell, "%.1f / %.1f = %.2f", a, b,
                 b > 0 ? a / b : 0);
        row("", label, cell, "(reported)", "");
        a = peer_median(P, lat, 0, ps_cpu_us);
        b = peer_median(P, lat, 1, ps_cpu_us);
        snprintf(label, sizeof label, "  %s: CPU per call", lat_names[lat]);
        snprintf(cell, sizeof cell, "%.0f us / %.0f us = %.2f", a, b,
                 b > 0 ? a / b : 0);
        row("", label, cell, "(reported)", "");
    }
    for (int h = 0; h < 2; h++) {
        double a = h ? P->heap[0].anon_kb : peer_median(P, 1, 0, ps_anon);
        double b = h ? P->heap[1].anon_kb : peer_median(P, 1, 1, ps_anon);

        snprintf(label, sizeof label, "  peak heap (RssAnon), %zu questions",
                 h ? P->heap_n : P->n);
        snprintf(cell, sizeof cell, "%.1f MiB / %.1f MiB = %.2f", a / 1024,
                 b / 1024, b > 0 ? a / b : 0);
        row("", label, cell, "(reported)", "");
    }
}

static void print_peer_details(const bench *B)
{
    const peer_fig *P = &B->pf;
    double qn = 0, qp = 0, cn = 0, cp = 0;

    for (int i = 0; i < P->reps; i++) {
        cn += P->lat[1][0][i].calls;
        cp += P->lat[1][1][i].calls;
        qn += P->lat[1][0][i].questions;
        qp += P->lat[1][1][i].questions;
    }
    printf("  9: team3.yaml, %zu questions, nsed (runner worker, durable) "
           "and bench/peer/nsed_peer.py run alternately on the same "
           "question file, %d time%s each at 50 ms and at 0 ms per call, "
           "medians; CPU: nsed's runner_run (getrusage), the peer's whole "
           "process (wait4); heap sampled every 50 ms; calls per question "
           "at 0 ms: nsed %.2f, peer %.2f; the peer's accuracy %.3f; heap "
           "at %zu questions from one run each\n",
           P->n, P->reps, P->reps > 1 ? "s" : "", qn > 0 ? cn / qn : 0,
           qp > 0 ? cp / qp : 0,
           P->lat[1][1][0].questions > 0
               ? P->lat[1][1][0].correct / P->lat[1][1][0].questions
               : 0,
           P->heap_n);
}

static const char *verdict(bool ok)
{
    return ok ? "ok" : "MISSED";
}

/* One line of the table; trailing blanks trimmed. */
static void row(const char *num, const char *label, const char *measured,
                const char *target, const char *v)
{
    char line[512];
    size_t n;

    snprintf(line, sizeof line, "%-2s %-38s %-38s %-20s %s", num, label,
             measured, target, v);
    n = strlen(line);
    while (n > 0 && line[n - 1] == ' ')
        line[--n] = '\0';
    puts(line);
}

/* Heap flat: the largest peak RssAnon at most RSS_LONG_FLAT times the
 * smallest. The 1k run's heap is the runner's fixed part (the workflow,
 * 96 slots' buffers, curl, LMDB's reader table); anything that grew per
 * question would show as a factor of ~1000 between 1k and 1M, allocator
 * noise and sampling as a few MiB, which 1.5x of a ~10 MiB heap covers.
 * Growth linear: store bytes per question at 1M within RSS_LONG_LINEAR
 * of 100k's (B-tree page fill varies by a few percent; a superlinear
 * structure such as a per-run list rewritten per question would not). */
#define RSS_LONG_FLAT 1.5
#define RSS_LONG_LINEAR 0.10

static void print_rss_long(const bench *B)
{
    double lo = 0, hi = 0, bpq[RSS_LONG_N];
    char cell[256], label[96];
    bool flat, linear;

    row("3", "--long: heap and store up to 1M questions", "", "", "");
    for (int i = 0; i < RSS_LONG_N; i++) {
        double a = (double)B->rss_long[i].peak_anon_kb;

        if (i == 0 || a < lo)
            lo = a;
        if (a > hi)
            hi = a;
        bpq[i] = B->long_store[i] / (double)rss_long_sizes[i];
        snprintf(label, sizeof label, "  %zu: heap, store, per question",
                 rss_long_sizes[i]);
        snprintf(cell, sizeof cell, "%.1f MiB, %.1f MB, %.0f B", a / 1024,
                 B->long_store[i] / 1e6, bpq[i]);
        row("", label, cell, "", "");
    }
    flat = lo > 0 && hi / lo <= RSS_LONG_FLAT;
    linear = bpq[2] > 0 && bpq[3] / bpq[2] <= 1 + RSS_LONG_LINEAR &&
             bpq[3] / bpq[2] >= 1 - RSS_LONG_LINEAR;
    snprintf(cell, sizeof cell, "max/min %.2f", lo > 0 ? hi / lo : 0);
    row("", "  heap flat", cell, "<= 1.5", verdict(flat));
    snprintf(cell, sizeof cell, "1M/100k per question %.3f",
             bpq[2] > 0 ? bpq[3] / bpq[2] : 0);
    row("", "  store growth linear", cell, "within 10%", verdict(linear));
}

/* The cached share of a kind's prompt tokens (0 without any). */
static double llama_share(const bench_llama_tokens *t)
{
    return t->prompt_tokens > 0 ? t->cached_tokens / t->prompt_tokens : 0;
}

static void print_llama(const bench *B)
{
    static const struct {
        enum bench_llama_kind k;
        const char *label;
        bool target;
    } lines[] = {{BENCH_LLAMA_REVISE, "  revise (rounds 1..)", true},
                 {BENCH_LLAMA_EVALUATE, "  evaluate", true},
                 {BENCH_LLAMA_ALL, "  all kinds", false}};
    const bench_llama_result *L = &B->llama;
    char cell[256];

    if (L->skipped) {
        printf("10 skipped: %s\n", L->why);
        return;
    }
    row("10", "llama-server cached share of prompt", "", "", "");
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
        const bench_llama_tokens *t = &L->kinds[lines[i].k];
        double sh = llama_share(t);

        snprintf(cell, sizeof cell, "%.3f of %.0fk tokens", sh,
                 t->prompt_tokens / 1e3);
        row("", lines[i].label, cell, lines[i].target ? ">= 0.8" : "(reported)",
            lines[i].target ? verdict(sh >= 0.8) : "");
    }
}

static void print_table(const bench *B)
{
    static const char *const kind_names[] = {"propose r0", "revise",
                                             "evaluate", "repair"};
    static const char *const llama_kinds[BENCH_LLAMA_ALL] =
        {"propose", "revise", "evaluate", "repair", "self_consistency"};
    char cell[256], label[96];

    printf("\n");
    row("#", "figure", "measured", "target", "");
    if (B->done[1]) {
        snprintf(cell, sizeof cell, "%.0f/s of %.0f/s = %.3f", B->sat_rate,
                 B->sat_limit, B->sat_ratio);
        row("1", "endpoint saturation (steady state)", cell, ">= 0.99",
            verdict(B->sat_ratio >= 0.99));
        snprintf(cell, sizeof cell, "%.0f/s of %.0f/s = %.3f", B->sat_whole,
                 B->sat_limit, B->sat_whole_ratio);
        row("", "  whole run, start and drain included", cell, ">= 0.97",
            verdict(B->sat_whole_ratio >= 0.97));
    }
    if (B->done[2]) {
        double r0 = B->floor_us > 0 ? B->cpu_us / B->floor_us : 0;
        double r50 = B->floor50_us > 0 ? B->cpu50_us / B->floor50_us : 0;

        snprintf(cell, sizeof cell, "%.1f us / %.1f us = %.2fx", B->cpu_us,
                 B->floor_us, r0);
        row("2", "runner CPU per call / floor, 0 ms", cell, "<= 1.5x",
            verdict(r0 <= 1.5));
        snprintf(cell, sizeof cell, "%.1f us / %.1f us = %.2fx", B->cpu50_us,
                 B->floor50_us, r50);
        row("", "  same at 50 ms calls", cell, "<= 2x", verdict(r50 <= 2));
        snprintf(cell, sizeof cell, "%.1f us / %.1f us = %.2fx", B->cpu_us,
                 B->dfloor_us, B->dfloor_us > 0 ? B->cpu_us / B->dfloor_us : 0);
        row("", "  / durable floor, 0 ms", cell, "(reported)", "");
        snprintf(cell, sizeof cell, "%.1f us / %.1f us = %.2fx", B->cpu50_us,
                 B->dfloor50_us,
                 B->dfloor50_us > 0 ? B->cpu50_us / B->dfloor50_us : 0);
        row("", "  / durable floor, 50 ms", cell, "(reported)", "");
    }
    if (B->done[3] && !B->long_mode) {
        bool flat = B->rss[2].peak_anon_kb <=
                    B->rss[0].peak_anon_kb + B->rss[0].peak_anon_kb / 2 + 4096;

        row("3", "peak RSS by questions in the store", "", "", "");
        for (int i = 0; i < 3; i++) {
            const run_result *r = &B->rss[i];

            snprintf(label, sizeof label, "  %zu: total (heap + store map)",
                     B->sz.rss[i]);
            snprintf(cell, sizeof cell, "%.1f MiB (%.1f + %.1f)",
                     (double)r->maxrss_kb / 1024,
                     (double)r->peak_anon_kb / 1024,
                     (double)r->peak_file_kb / 1024);
            row("", label, cell, i == 2 ? "heap flat, <= 64 MiB" : "",
                i == 2 ? verdict(flat && r->peak_anon_kb <= 64 * 1024)
                       : "");
            snprintf(label, sizeof label, "  %zu: store bytes per question",
                     B->sz.rss[i]);
            snprintf(cell, sizeof cell, "%.0f B (%.1f MB)",
                     B->rss_store[i] / (double)B->sz.rss[i],
                     B->rss_store[i] / 1e6);
            row("", label, cell, "(reported)", "");
        }
    }
    if (B->done[3] && B->long_mode)
        print_rss_long(B);
    if (B->done[4]) {
        double ratio = B->ck_nosync > 0 ? B->ck_durable / B->ck_nosync : 0;

        snprintf(cell, sizeof cell, "%.0f/s vs %.0f/s = %.3f", B->ck_durable,
                 B->ck_nosync, ratio);
        row("4", "durable vs no-fsync throughput", cell, ">= 0.97",
            verdict(ratio >= 0.97));
    }
    if (B->done[5]) {
        uint64_t extra = B->rs_sent1 + B->rs_sent2 - B->rs_base;
        uint64_t inflight = B->rs_sent1 - B->rs_recorded;

        snprintf(cell, sizeof cell, "%llu extra, %llu were in flight",
                 (unsigned long long)extra, (unsigned long long)inflight);
        row("5", "resume after kill -9 at the midpoint", cell,
            "extra <= in flight", verdict(extra <= inflight &&
                                          B->rs_complete));
        snprintf(cell, sizeof cell, "%.3f s", B->rs_first);
        row("", "  time to first new call", cell, "(reported)", "");
    }
    if (B->done[6]) {
        row("6", "prefix reuse per endpoint", "", "", "");
        for (size_t m = 0; m < B->px.nmodels && m < 3; m++) {
            const bench_prefix_model *pm = &B->px.models[m];

            snprintf(label, sizeof label, "  %s", B->px_names[m]);
            snprintf(cell, sizeof cell, "%.3f of %.2f MB",
                     pm->bytes ? (double)pm->reused / (double)pm->bytes : 0,
                     (double)pm->bytes / 1e6);
            row("", label, cell, "(reported)", "");
        }
    }
    if (B->done[FIG_PEER])
        print_peer(B);
    for (int i = 0; i < 2; i++) {
        static const char *const labels[] =
            {"wall time, 60 s outage of one model",
             "wall time, 20% always-failing requests"};
        const fault_result *f = &B->ft[i];
        char num[4];

        if (!B->done[7 + i])
            continue;
        snprintf(num, sizeof num, "%d", 7 + i);
        snprintf(cell, sizeof cell, "%s%.1f s / %.1f s = %s%.2f",
                 f->capped ? ">= " : "", f->elapsed, B->ft_base.elapsed,
                 f->capped ? ">= " : "", f->elapsed / B->ft_base.elapsed);
        row(num, labels[i], cell, "(reported)", "");
    }
    if (B->done[FIG_LLAMA])
        print_llama(B);
    printf("\nDetails\n");
    if (B->done[1]) {
        printf("  1: %llu calls; steady window 10%%-90%% of the calls; whole "
               "run incl. start and drain %.0f/s (%.3f); mean slots busy "
               "in the window %.3f; cores used: runner %.2f, nsed-sim %.2f",
               (unsigned long long)B->sat_calls, B->sat_whole,
               B->sat_whole_ratio, B->sat_util, B->sat_cpu, B->sat_sim_cpu);
        if (B->sat_reps > 1)
            printf("; best of runs at %.3f and %.3f", B->sat_all[0],
                   B->sat_all[1]);
        /* what the simulator gives a client that does nothing else: the
         * ceiling under the target, measured in this run (figure 2) */
        if (B->floor50_rate > 0)
            printf("; a bare libcurl client on the same slots and "
                   "simulator (figure 2's floor, start and drain included) "
                   "%.0f/s (%.3f), so the runner's whole run is %.3f of it",
                   B->floor50_rate, B->floor50_rate / B->sat_limit,
                   B->sat_whole / B->floor50_rate);
        printf("\n");
    }
    if (B->done[2])
        printf("  2: 0 ms: %llu calls at %.0f calls/s, runner user %.1f + "
               "sys %.1f us, floor (a bare libcurl multi client, the same "
               "calls, as many at a time as the slots) user %.1f + sys %.1f "
               "us; 50 ms: %llu calls, runner user %.1f + sys %.1f us; CPU "
               "of the runner process only (getrusage around runner_run), "
               "durable commits, at 0 ms the better of two runs; nsed-sim "
               "used %.1f us per call; the durable floor (the floor putting "
               "each turn's replies into LMDB in one fdatasync'd commit "
               "before reusing their slots) made %.3f commits per call at "
               "0 ms, %.3f at 50 ms\n",
               (unsigned long long)B->cpu_calls, B->cpu_rate, B->cpu_user_us,
               B->cpu_sys_us, B->floor_user_us, B->floor_sys_us,
               (unsigned long long)B->cpu50_calls, B->cpu50_user_us,
               B->cpu50_sys_us, B->cpu_sim_us, B->dfloor_fsync,
               B->dfloor50_fsync);
    if (B->done[3] && B->long_mode)
        for (int i = 0; i < RSS_LONG_N; i++)
            printf("  3 --long: %zu questions: ingest %.2f s (its peak heap "
                   "%.1f MiB), run %.0f calls in %.1f s\n",
                   rss_long_sizes[i], B->long_ingest_s[i],
                   (double)B->long_ingest_kb[i] / 1024, B->rss_long[i].calls,
                   B->rss_long[i].elapsed);
    if (B->done[FIG_PEER])
        print_peer_details(B);
    if (B->done[3] && !B->long_mode)
        for (int i = 0; i < 3; i++)
            printf("  3: %zu questions: %.0f calls in %.1f s; peak RSS "
                   "%.1f MiB = heap (RssAnon, sampled every 50 ms) %.1f + "
                   "mapped store pages (RssFile) up to %.1f\n",
                   B->sz.rss[i], B->rss[i].calls, B->rss[i].elapsed,
                   (double)B->rss[i].maxrss_kb / 1024,
                   (double)B->rss[i].peak_anon_kb / 1024,
                   (double)B->rss[i].peak_file_kb / 1024);
    if (B->done[4])
        printf("  4: best of two runs each, %zu questions, no latency\n",
               B->sz.cpu);
    if (B->done[5])
        printf("  5: uninterrupted run %llu calls; killed run sent %llu, "
               "%llu recorded in the ledger (%llu at the simulator when "
               "killed); the rerun sent %llu and %s\n",
               (unsigned long long)B->rs_base,
               (unsigned long long)B->rs_sent1,
               (unsigned long long)B->rs_recorded,
               (unsigned long long)B->rs_kill_sim,
               (unsigned long long)B->rs_sent2,
               B->rs_complete ? "finished every question"
                              : "left questions incomplete");
    if (B->done[6]) {
        printf("  6: %zu questions; by kind of call:", B->px.questions);
        for (int k = 0; k < BENCH_PREFIX_KINDS; k++) {
            const bench_prefix_model *pk = &B->px.kinds[k];

            if (pk->prompts)
                printf(" %s %.3f (%llu)", kind_names[k],
                       (double)pk->reused / (double)pk->bytes,
                       (unsigned long long)pk->prompts);
        }
        printf("\n");
    }
    if (B->done[FIG_LLAMA] && !B->llama.skipped) {
        const bench_llama_result *L = &B->llama;

        printf("  10: %zu demo questions in %.1f s, %s; %.0f calls, %.0f "
               "failed; by kind:",
               L->questions, L->elapsed, L->config, L->calls, L->failed);
        for (int k = 0; k < BENCH_LLAMA_ALL; k++)
            if (L->kinds[k].calls > 0)
                printf(" %s %.3f (%.0f calls)", llama_kinds[k],
                       llama_share(&L->kinds[k]), L->kinds[k].calls);
        printf("\n");
    }
    for (int i = 0; i < 2; i++)
        if (B->done[7 + i])
            printf("  %d: %zu questions, 50 ms per call; without faults "
                   "%llu calls, %.0f finished; with: %llu requests, %.0f "
                   "finished, %.0f incomplete%s\n",
                   7 + i, B->sz.faults, (unsigned long long)B->ft_base.sent,
                   B->ft_base.finished, (unsigned long long)B->ft[i].sent,
                   B->ft[i].finished, B->ft[i].incomplete,
                   B->ft[i].capped ? " (given up at the cap: the ratio is a "
                                     "lower bound)"
                                   : "");
}

/* ---- main ----------------------------------------------------------------- */

/* nftw callback: the temporary directory holds only what this run made. */
static int remove_one(const char *path, const struct stat *sb, int type,
                      struct FTW *ftw)
{
    (void)sb;
    (void)type;
    (void)ftw;
    return remove(path);
}

static int parse_only(const char *s, bool only[NFIG + 1])
{
    const char *p = s;

    memset(only, 0, (NFIG + 1) * sizeof *only);
    while (*p) {
        int f = 0;

        if (*p < '0' || *p > '9')
            return -1;
        while (*p >= '0' && *p <= '9' && f <= NFIG)
            f = 10 * f + (*p++ - '0');
        if (f < 1 || f > NFIG)
            return -1;
        only[f] = true;
        if (*p == ',')
            p++;
        else if (*p)
            return -1;
    }
    return p == s ? -1 : 0;
}

static int run_all(bench *B)
{
    int rc = 0;
    size_t most = B->long_mode && B->only[3] ? rss_long_sizes[RSS_LONG_N - 1]
                                             : B->sz.rss[2];

    if (B->sz.saturate > most)
        most = B->sz.saturate;
    if (B->only[FIG_PEER] && (rc = peer_check(B)))
        return rc;
    if (B->only[FIG_PEER] && B->sz.saturate == full_sizes.saturate &&
        most < 10000)
        most = 10000; /* figure 9's heap at 10k questions */
    B->questions = path_in(B->tmp, "questions.jsonl");
    if (!B->questions)
        return nsed_error(&B->err, NSED_ENOMEM, "out of memory");
    rc = bench_gen_questions(B->questions, most, &B->err);
    if (rc)
        return rc;
    if (B->only[1] || B->only[2] || B->only[5] || B->only[FIG_PEER]) {
        char *cfg = path_in(NSED_BENCH_DIR, "sim-50ms.yaml");

        rc = cfg ? bench_sim_start(&B->sim50, B->sim_bin, cfg, B->questions,
                                   &B->err)
                 : NSED_ENOMEM;
        free(cfg);
        if (rc)
            return rc;
    }
    if (B->only[2] || B->only[3] || B->only[4] || B->only[6] ||
        B->only[FIG_PEER]) {
        char *cfg = path_in(NSED_BENCH_DIR, "sim-0ms.yaml");

        rc = cfg ? bench_sim_start(&B->sim0, B->sim_bin, cfg, B->questions,
                                   &B->err)
                 : NSED_ENOMEM;
        free(cfg);
        if (rc)
            return rc;
    }
    if (B->only[1] && !(rc = fig_saturation(B)))
        B->done[1] = true;
    if (!rc && (B->only[2] || B->only[4])) {
        rc = fig_cpu_checkpoint(B, B->only[2], B->only[4]);
        B->done[2] = !rc && B->only[2];
        B->done[4] = !rc && B->only[4];
    }
    if (!rc && B->only[3] &&
        !(rc = B->long_mode ? fig_rss_long(B) : fig_rss(B)))
        B->done[3] = true;
    if (!rc && B->only[5] && !(rc = fig_resume(B)))
        B->done[5] = true;
    if (!rc && B->only[6] && !(rc = fig_prefix(B)))
        B->done[6] = true;
    if (!rc && (B->only[7] || B->only[8]))
        rc = fig_faults(B);
    if (!rc && B->only[FIG_PEER] && !(rc = fig_peer(B)))
        B->done[FIG_PEER] = true;
    if (!rc && B->only[FIG_LLAMA] && !(rc = fig_llama(B)))
        B->done[FIG_LLAMA] = true;
    return rc;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"quick", no_argument, NULL, 'q'},
        {"only", required_argument, NULL, 'o'},
        {"keep", no_argument, NULL, 'k'},
        {"tmp", required_argument, NULL, 't'},
        {"sim", required_argument, NULL, 's'},
        {"long", no_argument, NULL, 'l'},
        {"python", required_argument, NULL, 'p'},
        {"no-peer", no_argument, NULL, 'n'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    bench B = {0};
    char self[PATH_MAX], tmpl[PATH_MAX];
    const char *tmpdir = getenv("TMPDIR");
    ssize_t n;
    double t0 = bench_now();
    int c, rc;

    if (argc > 1 && !strcmp(argv[1], "--worker"))
        return bench_worker_main(argc - 2, argv + 2);
    B.sz = full_sizes;
    B.sim_bin = NSED_SIM_BIN;
    for (int i = 1; i <= NFIG_DEFAULT; i++)
        B.only[i] = true;
    B.only[FIG_PEER] = true;
    B.python = "/usr/bin/python3";
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'q':
            B.sz = quick_sizes;
            break;
        case 'o':
            if (parse_only(optarg, B.only)) {
                fprintf(stderr,
                        "nsed-bench: --only takes figure numbers "
                        "1-10 separated by commas, not \"%s\"\n",
                        optarg);
                return 2;
            }
            break;
        case 'k':
            B.keep = true;
            break;
        case 't':
            tmpdir = optarg;
            break;
        case 's':
            B.sim_bin = optarg;
            break;
        case 'l':
            B.long_mode = true;
            break;
        case 'p':
            B.python = optarg;
            break;
        case 'n':
            B.no_peer = true;
            break;
        case 'h':
            fputs(usage, stdout);
            return 0;
        default:
            fputs(usage, stderr);
            return 2;
        }
    }
    if (optind != argc) {
        fputs(usage, stderr);
        return 2;
    }
    if (B.no_peer)
        B.only[FIG_PEER] = false;
    n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) {
        fprintf(stderr, "nsed-bench: cannot find my own executable\n");
        return 1;
    }
    self[n] = '\0';
    B.self = self;
    if (!*B.sim_bin || access(B.sim_bin, X_OK) != 0) {
        fprintf(stderr, "nsed-bench: nsed-sim not found at \"%s\" (build it, "
                "or pass --sim PATH)\n", B.sim_bin);
        return 2;
    }
    snprintf(tmpl, sizeof tmpl, "%s/nsed-bench-XXXXXX",
             tmpdir && *tmpdir ? tmpdir : "/tmp");
    B.tmp = mkdtemp(tmpl);
    if (!B.tmp) {
        fprintf(stderr, "nsed-bench: cannot create %s: %s\n", tmpl,
                strerror(errno));
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    note("working in %s (%s sizes), %ld CPUs", B.tmp,
         B.sz.saturate == full_sizes.saturate ? "full" : "quick",
         sysconf(_SC_NPROCESSORS_ONLN));
    rc = run_all(&B);
    bench_sim_stop(&B.sim50);
    bench_sim_stop(&B.sim0);
    if (rc)
        fprintf(stderr, "nsed-bench: %s\n",
                B.err.msg[0] ? B.err.msg : nsed_strerror(rc));
    print_table(&B);
    printf("\nnsed-bench: %.0f s in all%s\n", bench_now() - t0,
           rc ? " (stopped at an error)" : "");
    if (B.keep)
        note("kept %s", B.tmp);
    else if (nftw(B.tmp, remove_one, 16, FTW_DEPTH | FTW_PHYS) != 0)
        note("could not remove %s", B.tmp);
    bench_prefix_release(&B.px);
    for (int i = 0; i < 3; i++)
        run_result_release(&B.rss[i]);
    for (int i = 0; i < RSS_LONG_N; i++)
        run_result_release(&B.rss_long[i]);
    free(B.questions);
    curl_global_cleanup();
    return rc ? 1 : 0;
}
