/* runner.h -- runs a question set through the deliberation, checkpointed.
 *
 * One event loop (the caller's thread) streams questions from the store in
 * ingestion order, keeps up to max_active of them in flight, drives each
 * through the stages (stages/stage.h), sends the stages' requests through
 * the gateway (pipeline/gateway/gateway.h) and commits what changed to the
 * store. While one question waits for its evaluations, others propose, so
 * every endpoint's concurrency slots stay busy.
 *
 * Store layout: the keys of every record the runner keeps are built in
 * store/store_keys.h, which holds the key map.
 *
 * One turn of the loop (runner_run) is these phases, in this order:
 *   1. poll: wait up to 100 ms for network I/O (not at all while a
 *      question is ready or phase 2 has replies to record); the gateway
 *      hands each answered call to its question (a question whose calls
 *      are all answered becomes ready);
 *   2. record: when a model has requests queued behind slots that
 *      replies not yet durable hold, those replies and the call
 *      statistics are committed in a transaction of their own and the
 *      queued requests go out at once, instead of after the whole turn;
 *   3. stop: when stop_fd is readable, leave the loop (calls in flight are
 *      abandoned; a rerun sends them again);
 *   4. step: every ready question reduces its answers and plans its next
 *      stage until it waits for calls again, finishes or is left
 *      incomplete;
 *   5. commit: every question changed in this turn, the call ledger and
 *      the telemetry go into one store transaction; finished and
 *      incomplete questions leave the active list;
 *   6. send: the requests just planned go out, after the commit: a reply
 *      is durable before any request planned from it leaves, and the
 *      gateway holds a call's concurrency slot until its reply is
 *      committed, so at no moment are more than the sum of the models'
 *      max_concurrency paid calls lost to a kill -9;
 *   7. catch up: the replies that arrived during the step and the commit
 *      are taken in without waiting, and recorded as in phase 2, so that
 *      their slots do not wait for the fill;
 *   8. fill: new questions are loaded (and staffed by the broker) up to
 *      max_active, and stepped once (none while no team can be served:
 *      see Outages below);
 *   9. progress: on_progress, at most every 0.25 s;
 *  10. check: questions that can make no progress are an internal error;
 *  11. outage budget: when no team has been servable for
 *      opts->outage_budget_s, leave the loop (see Outages below).
 * The loop ends when no question is active; a last commit and flush
 * follow, then one final on_progress.
 *
 * Flushes: while the loop runs, a commit flushes the store once (its
 * pages), leaving its meta page to the next commit's flush
 * (store_defer_meta_sync); runner_run syncs the store before it returns,
 * on success and on error alike. A kill -9 loses nothing committed; an
 * operating-system crash may undo the last commit (docs/store.md).
 *
 * Commits: every stage that finished during one turn of the loop is
 * written in one transaction (group commit). A question whose result is
 * in the store is never run again; one with a state resumes at its stage:
 * its replanned requests are answered from the call ledger, so a resumed
 * run pays again only for calls whose replies were not yet committed when
 * it stopped — at most the sum over the models of max_concurrency per
 * stop — and ends with the same results as an uninterrupted run.
 *
 * Infrastructure failures: when a call fails after every retry, the
 * question is left incomplete (its state stays at the last committed
 * stage, plus the marker) and a later run resumes it; with allow_degraded
 * the stage goes on without the lost seat and the question is flagged
 * degraded, as long as rounds.min_live_seats seats of the round remain
 * (below that it is left incomplete). A call refused for good
 * (gateway_result.permanent: HTTP 400, 401, 403, 404, 413, 422, a prompt
 * over the context) fails the question instead.
 *
 * Outages: a team can be served while no model it needs is paused by its
 * circuit breaker (gateway_model_paused; a fixed team needs every model
 * that fills its seats, a knapsack role any one it admits). While no team
 * of the workflow can be served, no new question starts (but one when
 * none is active, whose calls let the breakers probe again), and on_event
 * says so once ("waiting: model beta is paused; no team can be served");
 * when that has lasted opts->outage_budget_s, the loop commits what is
 * finished and returns with sum->gave_up: the questions in flight keep
 * their last committed stage and the same command resumes them.
 *
 * Failed questions: a question that finished without a final answer, hit
 * a permanent error, or whose data a stage could not process (a stage or
 * the gateway returned an error other than out of memory, store, I/O or
 * internal for it) gets a result record with status "failed" and the
 * reason (state.failure); the run goes on. A rerun skips it like a
 * finished one unless retry_failed.
 */
#ifndef NSED_RUNNER_H
#define NSED_RUNNER_H

#include "pipeline/base/err.h"
#include "pipeline/gateway/cache.h"
#include "pipeline/workflow/workflow.h"
#include "store/store.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define RUNNER_MAX_ROUNDS 64 /* rounds.max is at most this */
#define RUNNER_FIT_MIN_N 10  /* judged winners a round needs to count in
                                the efficiency-fatigue fit */

#define RUNNER_PROGRESS_PAUSED_MAX 8 /* paused models named in a report */
#define RUNNER_OUTAGE_BUDGET_S \
    600.0 /* default of runner_opts.outage_budget_s */

#define RUNNER_NO_ANSWER_WARN 20

/* Where the run stands, for a progress line. Valid during the on_progress
 * call only (the model ids point into the workflow).
 *
 * The ETA counts work in model calls, not in questions, so that the
 * questions in flight (which at the start of a run have done most of the
 * work and finished none of it) weigh what they have done: remaining
 * calls / calls per second so far, where remaining calls = questions
 * left x calls per question - calls the active questions have had
 * answered. Calls per question is the mean of the questions this run
 * finished (or left incomplete); before the first, the workflow's guess:
 * two calls (propose or revise, evaluate) per seat per round, for the
 * middle of rounds.min..rounds.max. */
typedef struct runner_progress {
    size_t done;        /* questions with results (before and now) */
    size_t total;       /* questions considered (after limit) */
    size_t active;      /* questions in flight */
    size_t in_flight;   /* network calls in flight */
    int64_t tokens;     /* prompt + completion tokens of this run's calls */
    double cost_usd;    /* of this run's calls */
    uint64_t retries;   /* HTTP attempts after a call's first, this run */
    size_t npaused;     /* models paused by their circuit breaker now */
    /* the ids of the first min(npaused, RUNNER_PROGRESS_PAUSED_MAX) */
    const char *paused[RUNNER_PROGRESS_PAUSED_MAX];
    double elapsed_s;   /* since the run began */
    bool has_eta;       /* eta_s is known (some call was answered and no
                           model is paused: while one is, the rate so far
                           says nothing and the ETA is not given) */
    double eta_s;       /* estimated seconds to the end */
    bool final;         /* the last report of the run */
} runner_progress;

typedef struct runner_opts {
    size_t limit;        /* only the first `limit` questions (0 = all) */
    size_t max_active;   /* questions in flight (0 = twice the sum of the
                            models' max_concurrency, at least 4) */
    bool allow_degraded; /* go on without seats lost to infrastructure
                            while rounds.min_live_seats remain */
    bool retry_failed;   /* run failed questions again (their failed
                            result is deleted when they are taken up) */
    FILE *dry_run;       /* print the first requests (the dry run's
                            product), send nothing, commit nothing */
    /* Called at most every 0.25 s during the run and once at its end
     * (p->final); NULL for no progress reports. */
    void (*on_progress)(void *ctx, const runner_progress *p);
    /* Called with one line (no newline) per event worth a log line: an
     * endpoint going down or up, a question left incomplete; NULL for
     * none. */
    void (*on_event)(void *ctx, const char *line);
    /* (on_event also says once, when the first RUNNER_NO_ANSWER_WARN
     * questions finished in a run all lack an extracted answer, that the
     * answer pattern seems never to match.) */
    void *cb_ctx;        /* passed to on_progress and on_event */
    double outage_budget_s; /* give the run up when no team has been
                               servable for this long (0: the default,
                               RUNNER_OUTAGE_BUDGET_S) */
    cache *cache;           /* the call cache shared across stores (the
                            gateway's opts.cache), or NULL */
    int stop_fd;         /* a non-blocking fd (e.g. a signalfd) that turns
                            readable when the run should stop early: the
                            loop then commits what is finished and
                            returns; -1 for none */
} runner_opts;

/* The outcomes (docs/cli.md): done, degraded, incomplete and failed count
 * the questions considered, those finished before this run included; a
 * question considered is in none of them only when the run was
 * interrupted or dry. */
typedef struct runner_summary {
    size_t questions;       /* questions considered (after limit) */
    size_t already_done;    /* had a result before this run (skipped) */
    size_t finished;        /* finished in this run (done, degraded or
                               failed) */
    size_t done;            /* with a final answer, every seat served */
    size_t degraded;        /* with a final answer, seats lost */
    size_t incomplete;      /* left incomplete by this run (transient) */
    size_t failed;          /* failed for good (a rerun skips them unless
                               retry_failed) */
    size_t dry_run;         /* questions whose requests were printed */
    bool interrupted;       /* stopped early through stop_fd */
    bool gave_up;           /* stopped because no team was servable for
                               the outage budget; the questions in flight
                               count as incomplete */
    double outage_s;        /* ... for this long */
    size_t not_started;     /* ... and these were never taken up */
    uint64_t calls;         /* network calls finished */
    uint64_t ledger_hits;   /* calls answered from the ledger */
    uint64_t cache_hits;    /* calls answered from the call cache */
    int64_t prompt_tokens;  /* of network calls */
    int64_t completion_tokens;
    double cost_usd;
    double elapsed_s;
} runner_summary;

/* The outage budget in effect for opts (its outage_budget_s, or the
 * default). */
double runner_outage_budget(const runner_opts *opts);

/* Run every question of st (bound to wf) that has no result yet. The
 * runner prints nothing itself: what is worth saying goes through
 * opts->on_progress and opts->on_event (and, in a dry run, the requests to
 * opts->dry_run). Returns 0 when the loop ran to its end (some questions
 * may be incomplete or failed: see sum->incomplete and sum->failed;
 * sum->interrupted when stop_fd stopped it); NSED_EINVAL for a workflow the runner cannot apply;
 * NSED_ESTORE / NSED_EIO when the store fails (everything committed
 * before stays); NSED_ENET when the gateway cannot be set up; NSED_ENOMEM;
 * NSED_EINTERNAL for a bug (questions that can make no progress). *sum is
 * filled in every case. */
NSED_MUST_CHECK int runner_run(const workflow *wf, store *st,
                               const runner_opts *opts, runner_summary *sum,
                               nsed_err *err);

#endif
