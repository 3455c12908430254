/* runner.h -- runs a question set through the deliberation, checkpointed.
 *
 * One event loop (the caller's thread) streams questions from the store in
 * ingestion order, keeps up to max_active of them in flight, drives each
 * through the stages (stages/stage.h), sends the stages' requests through
 * the gateway (pipeline/gateway.h) and commits what changed to the store.
 * While one question waits for its evaluations, others propose, so every
 * endpoint's concurrency slots stay busy.
 *
 * Store layout (STORE_STATE keys start with the question id and a NUL):
 *   id "\0s"            the question's state (state_to_json) after its
 *                       latest committed stage
 *   id "\0r" <u32 BE>   round r, archived when converge decided it
 *   id "\0i"            marker of an incomplete question: a seat could not
 *                       be served, or no team fits the budget; JSON
 *   id "\0b"            the broker's decision (team, estimates, reasons),
 *                       written with the first state, reused on resume
 *   id "\0c"            the question's context (reliability weights,
 *                       fitted fatigue parameters), likewise fixed
 *   STORE_RESULTS id    the result (runner_result_json), once finished
 *   STORE_TELEMETRY "gateway/<model id>"  cumulative call statistics
 *                   "model/<model id>"    accuracy and usage counts
 *                   "prior/<model id>"    an imported telemetry prior
 *                   "rounds"              winners judged right per round
 *
 * Commits: every stage that finished during one turn of the loop is
 * written in one transaction (group commit). A question whose result is
 * in the store is never run again; one with a state resumes at its stage:
 * its replanned requests are answered from the call ledger, so a resumed
 * run pays only for calls that were in flight when it stopped, and ends
 * with the same results as an uninterrupted run.
 *
 * Infrastructure failures: when a call fails after every retry, the
 * question is left incomplete (its state stays at the last committed
 * stage, plus the marker) and a later run resumes it; with allow_degraded
 * the stage goes on without the lost seat and the question is flagged
 * degraded.
 */
#ifndef NSED_RUNNER_H
#define NSED_RUNNER_H

#include "pipeline/base/err.h"
#include "pipeline/workflow/workflow.h"
#include "store/store.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

typedef struct runner_opts {
    size_t limit;        /* only the first `limit` questions (0 = all) */
    size_t max_active;   /* questions in flight (0 = twice the sum of the
                            models' max_concurrency, at least 4) */
    bool allow_degraded; /* go on without seats lost to infrastructure */
    FILE *dry_run;       /* print the first requests, send nothing, commit
                            nothing */
    FILE *progress;      /* a progress line is redrawn here (a terminal),
                            NULL for none */
    FILE *log;           /* endpoint down/up events, NULL for none */
    int stop_fd;         /* a non-blocking fd (e.g. a signalfd) that turns
                            readable when the run should stop early: the
                            loop then commits what is finished and
                            returns; -1 for none */
} runner_opts;

typedef struct runner_summary {
    size_t questions;       /* questions considered (after limit) */
    size_t already_done;    /* had a result before this run */
    size_t finished;        /* finished in this run */
    size_t degraded;        /* of those finished, degraded */
    size_t incomplete;      /* left incomplete by this run */
    size_t dry_run;         /* questions whose requests were printed */
    bool interrupted;       /* stopped early through stop_fd */
    uint64_t calls;         /* network calls finished */
    uint64_t ledger_hits;   /* calls answered from the ledger */
    int64_t prompt_tokens;  /* of network calls */
    int64_t completion_tokens;
    double cost_usd;
    double elapsed_s;
} runner_summary;

/* Run every question of st (bound to wf) that has no result yet. Returns 0
 * when the loop ran to its end (some questions may be incomplete: see
 * sum->incomplete); NSED_EINVAL for a workflow the runner cannot apply;
 * NSED_ESTORE / NSED_EIO when the store fails (everything committed
 * before stays); NSED_ENOMEM. */
int runner_run(const workflow *wf, store *st, const runner_opts *opts,
               runner_summary *sum, nsed_err *err);

/* STORE_STATE key of question qid with suffix tag ('s', 'i') into key,
 * which must hold strlen(qid) + 2 bytes (+4 more for 'r' rounds). Returns
 * the key length. */
size_t runner_state_key(const char *qid, char tag, int round,
                        unsigned char *key);

#endif
