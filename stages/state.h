/* state.h -- the per-question deliberation state the stages work on.
 *
 * One question runs through rounds of five stages (docs/protocol.md):
 * propose, anonymize, evaluate, aggregate, converge.
 * A state holds the question, its team (the seats), where the question
 * stands (round and next stage), what each seat answered and scored in
 * the current round and the one before, the consensus state each seat gets
 * in the next round, and the outcome so far. The stages (stage.h) read a
 * state to plan model calls and update it from the replies; they never do
 * I/O, so a state plus the replies determines everything.
 *
 * Memory stays bounded: only the current round (cur) and the previous one
 * (prev) are held. When converge starts round r+1, round r-1 is freed. The
 * runner stores a finished round under its own key with state_round_to_json
 * before that happens (see state_round_get) and checkpoints the state
 * itself with state_to_json after every stage.
 *
 * All fields are public for reading (the runner, exports and tests read
 * them); only the stages and state_* functions change them. Every string is
 * malloc'd and owned by the state; stored model text is valid UTF-8 of at
 * most STATE_TEXT_MAX bytes (text.h).
 *
 * JSON form (state_to_json): a versioned object, "v": STATE_JSON_VERSION.
 * Numbers round-trip exactly (doubles are printed with up to 17 digits;
 * token counts are exact up to 2^53); the run seed is a hex string.
 * state_from_json(state_to_json(s)) prints back to the identical text.
 * The "truncated" flags of proposals and evaluations are written only when
 * set, so records written before they existed read back unchanged.
 * "failure" is written only for a failed state, so the states of
 * questions that never failed print as before it existed. An evaluation's
 * "shown" (the labels in the order it was shown them) is written when
 * known, and a round's "order": "per_evaluator" only for that order.
 */
#ifndef NSED_STAGES_STATE_H
#define NSED_STAGES_STATE_H

#include "pipeline/base/err.h"
#include "pipeline/workflow/workflow.h"
#include "stages/text.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define STATE_JSON_VERSION 1
/* Bytes kept of one model reply (a longer one is cut, see text.h). */
#define STATE_TEXT_MAX ((size_t)512 * 1024)
/* Bytes kept of one critique. */
#define STATE_CRITIQUE_MAX ((size_t)4096)
/* Bytes of a state's JSON that state_from_json accepts. */
#define STATE_JSON_MAX ((size_t)1 << 30)

/* The stage a question runs next. */
enum state_stage {
    STATE_STAGE_PROPOSE,
    STATE_STAGE_ANONYMIZE,
    STATE_STAGE_EVALUATE,
    STATE_STAGE_AGGREGATE,
    STATE_STAGE_CONVERGE,
    STATE_STAGE_SELFCONS, /* deliberation over: the self-consistency
                             baseline samples (stages/selfcons.h) */
    STATE_STAGE_FINISHED, /* stopped; nothing more to run */
};

/* Where a question stands. ACTIVE until converge stops it; then, in this
 * order of precedence: DEGRADED when any seat was lost to infrastructure
 * in any round (see state.missing), INCOMPLETE when no answer came out,
 * DONE otherwise. The runner (not a stage) decides FAILED: a question that
 * finished without a final answer, or that a permanent error or input it
 * cannot process stopped for good; state.failure then says why. */
enum state_status {
    STATE_STATUS_ACTIVE,
    STATE_STATUS_DONE,
    STATE_STATUS_INCOMPLETE,
    STATE_STATUS_DEGRADED,
    STATE_STATUS_FAILED,
};

enum state_proposal_status {
    STATE_PROPOSAL_PENDING, /* not answered yet */
    STATE_PROPOSAL_OK,      /* a candidate this round */
    STATE_PROPOSAL_SKIP,    /* replied SKIP: no candidate, still evaluates */
    STATE_PROPOSAL_FAILED,  /* no usable reply (see infra) */
};

enum state_eval_status {
    STATE_EVAL_PENDING,   /* evaluation call not answered yet */
    STATE_EVAL_REPAIR,    /* first reply unusable; repair call pending */
    STATE_EVAL_OK,        /* weights parsed */
    STATE_EVAL_ABSTAINED, /* unusable even after the repair */
    STATE_EVAL_FAILED,    /* the call failed through infrastructure */
    STATE_EVAL_IDLE,      /* not asked: seat lost this round, or nothing
                             to evaluate (no candidate other than its own) */
};

/* How the winner was singled out among candidates with the best score. */
enum state_decider {
    STATE_DECIDER_NONE,      /* no winner */
    STATE_DECIDER_SCORE,     /* highest score alone */
    STATE_DECIDER_MIN_PEER,  /* tie broken by higher minimum peer score */
    STATE_DECIDER_VARIANCE,  /* tie broken by lower variance */
    STATE_DECIDER_SEEDED,    /* tie broken by the seeded candidate order */
};

enum state_stop_reason {
    STATE_STOP_NONE, /* continue */
    STATE_STOP_MAX_ROUNDS,
    STATE_STOP_CONSENSUS_MARGIN,
    STATE_STOP_STABLE_ANSWER,
    STATE_STOP_EFFICIENCY_FATIGUE,
    STATE_STOP_ALL_FAILED, /* no candidate at all this round */
};

/* Where the question's final answer comes from. */
enum state_final_source {
    STATE_FINAL_NONE,     /* no answer (yet) */
    STATE_FINAL_WINNER,   /* the winner of round final_round */
    STATE_FINAL_MAJORITY, /* no round ever had a winner: majority vote of
                             the last round's answers (docs/protocol.md) */
};

typedef struct state_usage {
    int64_t prompt_tokens;
    int64_t completion_tokens;
    double cost_usd;
} state_usage;

/* One seat of the team: a model bound to a role with a persona. */
typedef struct state_seat {
    size_t model;  /* index into wf->models */
    char *role;    /* role name */
    char *persona; /* "" when none */
    bool propose_only; /* proposes and is evaluated, never evaluates (its
                          p_v is not above broker.evaluator_min_pv); a
                          state without the field reads as false */
} state_seat;

typedef struct state_proposal {
    enum state_proposal_status status;
    bool infra;    /* FAILED because of infrastructure (seat lost) */
    bool truncated; /* the reply was cut at max_tokens (finish_reason
                       "length") */
    char *text;    /* the reply (cleaned, capped) or NULL */
    char *answer;  /* OK: extracted final answer, NULL when none found */
    char *error;   /* FAILED: why, else NULL */
    state_usage usage;
} state_proposal;

/* A candidate: an anonymized proposal under a label (its index). */
typedef struct state_candidate {
    size_t seat;       /* the author -- never shown in a prompt */
    char *text;        /* sanitized and neutralized text that is shown */
    size_t redactions; /* identity strings removed or replaced */
} state_candidate;

/* One weight an evaluator gave. */
typedef struct state_weight {
    size_t cand;     /* candidate index (label) */
    int weight;      /* -100..100 */
    char *critique;  /* "" when none */
} state_weight;

typedef struct state_evaluation {
    enum state_eval_status status;
    bool repaired;       /* a repair call was made */
    bool truncated;      /* a reply was cut at max_tokens (finish_reason
                            "length"): the first one, the repair, or both;
                            while REPAIR, the first one was */
    char *reply;         /* the last reply (cleaned, capped) or NULL */
    char *first_reply;   /* the reply that needed the repair, or NULL */
    char *error;         /* why the (first) reply was unusable / failed */
    state_weight *weights; /* OK: sorted by cand, one per candidate */
    size_t nweights;
    size_t dropped_self;      /* scores of its own candidate dropped */
    size_t dropped_unknown;   /* labels that are no candidate */
    size_t dropped_invalid;   /* entries without a usable weight/label */
    size_t dropped_duplicate; /* later entries for a label already scored */
    state_usage usage;        /* both calls together */
    /* The candidates as this evaluator was shown them: shown[p] is the
     * candidate index at shown position p (0 = first block of its
     * prompt), nshown of them. Set by anonymize for every seat that
     * evaluates; NULL (nshown 0) for a seat that is not asked, and in the
     * states of an older nsed, which did not record it (unknown). */
    size_t *shown;
    size_t nshown;
} state_evaluation;

/* Per candidate result of the aggregation. */
typedef struct state_score {
    double score;        /* S_j under the scheme */
    int net_support;     /* evaluators with weight > 0 minus those < 0 */
    size_t nevaluators;  /* evaluators that gave it a weight */
    int min_peer;        /* lowest weight received (0 when none) */
    double variance;     /* population variance of the weights received */
} state_score;

typedef struct state_aggregate {
    enum workflow_scheme scheme;
    bool self_votes;   /* allow_self_votes: diagonal not masked */
    bool reliability;  /* evaluators weighted by reliability */
    state_score *scores; /* ncand entries (round's candidates) */
    long winner;         /* candidate index, -1 when none */
    double conviction;   /* S_win / sum |S_j|, 0 when none */
    enum state_decider decided_by;
    size_t evaluators;   /* evaluations used (OK, not all weights 0) */
    size_t abstained;    /* unusable ones, and OK ones whose weights were
                            all 0 (aggregate.h) */
    size_t failed;       /* lost to infrastructure */
} state_aggregate;

typedef struct state_decision {
    bool stop;
    enum state_stop_reason reason;
    int stable_streak;   /* rounds in a row the same answer has won */
    /* efficiency-fatigue inputs and result (all 0 when the rule is off) */
    double p_g, p_v, lambda, beta;
    double t_opt;
    int target;          /* ceil(effort * t_opt); -1 when the rule is off */
} state_decision;

typedef struct state_round {
    int index;                  /* 0-based round number */
    state_proposal *proposals;  /* nseats */
    bool anonymized;
    char fence[TEXT_FENCE_HEX + 1]; /* candidate block nonce, "" before */
    state_candidate *cands;     /* ncand, in label order */
    size_t ncand;
    /* scoring.candidate_order per_evaluator: each evaluator sees its own
     * order (state_evaluation.shown) labelled A, B, ... by shown position,
     * and its reply's labels map back through shown. false: the shared
     * order, every label the candidate's own (its index). */
    bool per_evaluator;
    state_evaluation *evals;    /* nseats once anonymized, else NULL */
    bool aggregated;
    state_aggregate agg;
    bool decided;
    state_decision decision;
    /* read from a round written before candidates shared their seat's
     * proposal text ("same_text"): written back with every text spelled
     * out, so that such a round prints back as it was */
    bool cand_text_full;
} state_round;

/* The consensus state for the next round (the forget gate's output): the
 * blocks the revise prompt gets. A NULL block is not carried. */
typedef struct state_carry {
    int from_round;    /* round the blocks come from, -1 for none */
    char fence[TEXT_FENCE_HEX + 1];
    char *winner;      /* WINNING SOLUTION block (same for every seat) */
    char **own;        /* per seat: YOUR PREVIOUS ANSWER block */
    char **critiques;  /* per seat: CRITIQUES block */
    char **scores;     /* per seat: SCORES block */
} state_carry;

/* One sample of the self-consistency baseline. */
typedef struct state_sample {
    enum state_proposal_status status; /* PENDING, OK, SKIP or FAILED (no
                                          usable reply, any cause) */
    char *answer; /* OK: the extracted answer, NULL when none */
    char *error;  /* FAILED: why, else NULL */
} state_sample;

/* The self-consistency baseline of one question (stages/selfcons.h). The
 * stages count team_calls whether or not it is on; the rest is set only
 * when it is. */
typedef struct state_selfcons {
    bool on;               /* the workflow asks for it: JSON and result
                              carry it */
    size_t model;          /* index into wf->models */
    long seat;             /* the seat of that model whose system prompt
                              the samples use; -1: the model has no seat
                              (seat 0's role, no persona) */
    char *why;             /* how the model was chosen (one line) */
    double p_g;            /* its p_g estimate at the question's start; -1
                              when the workflow names the model */
    size_t team_calls;     /* calls the team has made: propose, evaluate
                              and repair responses of every round */
    state_sample *samples; /* nsamples (== team_calls when the stage
                              began), NULL before */
    size_t nsamples;       /* samples taken (N) */
    bool decided;          /* every sample resolved, majority taken */
    char *answer;          /* the majority (or drawn) answer, NULL when
                              no sample has one */
    size_t votes;          /* samples holding it */
    bool tie;              /* several answers had the most votes */
    bool drawn;            /* answer picked among them by a seeded draw */
    size_t failed;         /* samples without a usable reply */
    state_usage usage;     /* the samples' calls (not in state.usage) */
} state_selfcons;

typedef struct state {
    uint64_t seed;      /* the run seed (wf->seed) */
    char *qid;
    char *question;
    char *reference;    /* NULL when the question has none */
    char **tags;
    size_t ntags;
    state_seat *seats;
    size_t nseats;      /* 1..WORKFLOW_MAX_SEATS */
    int round;          /* current round index (== cur->index) */
    enum state_stage stage;
    enum state_status status;
    bool *missing;      /* per seat: lost to infrastructure in some round */
    state_round *cur;   /* never NULL */
    state_round *prev;  /* NULL in round 0 */
    state_carry carry;  /* what round `round` (> 0) gets */
    char *final_answer; /* NULL when none */
    long final_seat;    /* -1 when none */
    int final_round;    /* -1 when none */
    enum state_final_source final_source;
    char *failure;         /* FAILED: why (one line), else NULL */
    /* The round-0 majority vote (answer_tally_votes): baseline_answer is
     * the strict majority, NULL on a tie or when no seat answered;
     * baseline_votes the top count; baseline_tie that the top count is
     * shared; baseline_drawn, on a tie only, the tied answer a seeded
     * draw (purpose "majority-tie") picked. A state of an older nsed has
     * no tie and no draw: its answer is the old vote, a tie going to the
     * lowest seat. */
    char *baseline_answer;
    size_t baseline_votes;
    bool baseline_tie;
    char *baseline_drawn;
    state_usage usage;  /* every call of every round so far */
    state_selfcons sc;  /* the self-consistency baseline */
} state;

/* What state_new needs to know about the question (copied). */
typedef struct state_question {
    const char *id;        /* non-empty */
    const char *text;      /* non-empty */
    const char *reference; /* NULL when none */
    const char *const *tags;
    size_t ntags;
} state_question;

/* A seat as the broker chose it (copied). */
typedef struct state_seat_spec {
    size_t model;          /* index into wf->models */
    const char *role;      /* non-NULL */
    const char *persona;   /* NULL counts as "" */
    bool propose_only;     /* see state_seat */
} state_seat_spec;

/* A fresh state in round 0, stage propose, status active, seeded with
 * wf->seed. Returns 0 and sets *out (free with state_free); NSED_EINVAL
 * (err says why) when the question lacks id or text, nseats is 0 or above
 * WORKFLOW_MAX_SEATS, or a seat names a model index outside wf->models;
 * NSED_ENOMEM. */
NSED_MUST_CHECK int state_new(const workflow *wf, const state_question *q,
                              const state_seat_spec *seats, size_t nseats,
                              state **out, nsed_err *err);

/* Free a state and everything it owns. NULL is ignored. */
void state_free(state *st);

/* The round with this index if it is still in memory (cur or prev), else
 * NULL. */
const state_round *state_round_get(const state *st, int index);

/* Compact JSON of the whole state (question, team, progress, carry, the
 * previous and current round). Returns 0 and sets *out (malloc'd,
 * NUL-terminated), NSED_ENOMEM, or NSED_ETOOBIG when the text would pass
 * STATE_JSON_MAX (which state_from_json refuses). */
NSED_MUST_CHECK int state_to_json(const state *st, char **out);

/* Parse what state_to_json wrote. wf, when not NULL, is the workflow the
 * run uses: seat model indices must fall inside it. Returns 0 and sets *out;
 * NSED_ESCHEMA when "v" is not STATE_JSON_VERSION; NSED_EINVAL (err names
 * the field) for anything malformed or inconsistent (indices out of range,
 * counts that disagree); NSED_ETOOBIG over STATE_JSON_MAX; NSED_ENOMEM. */
NSED_MUST_CHECK int state_from_json(const char *json, size_t len,
                                    const workflow *wf, state **out,
                                    nsed_err *err);

/* The JSON of a checkpoint: state_to_json, except that every decided
 * round (archived under its own key when converge decided it) is written
 * as a reference, {"v":1,"round":N,"archived":true}, and a finished
 * state's carry (the next round's blocks, of no use once the question is
 * done) is left empty. state_from_json_archived reads it back. Returns as
 * state_to_json. */
NSED_MUST_CHECK int state_to_json_checkpoint(const state *st, char **out);

/* Fetch the archived JSON of round index for state_from_json_archived:
 * 0 with *json and *len set (valid until the reading call returns), or a
 * negative code (NSED_ENOTFOUND: no such round archived) that the read
 * returns, err telling why. */
typedef int (*state_round_fetch_fn)(void *arg, int index, const void **json,
                                    size_t *len, nsed_err *err);

/* state_from_json that also reads what state_to_json_checkpoint wrote:
 * a round written as a reference is read through fetch(arg, index, ...)
 * and parsed as state_round_from_json does. With fetch NULL a reference
 * is refused (NSED_EINVAL, "archived round needs the store"). Returns as
 * state_from_json, or fetch's code. */
NSED_MUST_CHECK int state_from_json_archived(const char *json, size_t len,
                                             const workflow *wf,
                                             state_round_fetch_fn fetch,
                                             void *arg, state **out,
                                             nsed_err *err);

/* Compact JSON of one round (the shape it has inside state_to_json's
 * "rounds"), for storing round r under its own key. nseats is the team
 * size. Returns 0 and sets *out (malloc'd), NSED_ENOMEM or NSED_ETOOBIG
 * (as state_to_json). */
NSED_MUST_CHECK int state_round_to_json(const state_round *r, size_t nseats,
                                        char **out);

/* Parse one round written by state_round_to_json for a team of nseats.
 * Returns 0 and sets *out (free with state_round_free); NSED_ESCHEMA,
 * NSED_EINVAL, NSED_ETOOBIG, NSED_ENOMEM as state_from_json. */
NSED_MUST_CHECK int state_round_from_json(const char *json, size_t len,
                                          size_t nseats, state_round **out,
                                          nsed_err *err);

/* A new empty round (every proposal pending) for nseats seats, or NULL
 * when out of memory. */
NSED_MUST_CHECK state_round *state_round_new(int index, size_t nseats);

/* Free a round and everything it owns. NULL is ignored. */
void state_round_free(state_round *r, size_t nseats);

/* Release the strings of a proposal / evaluation / carry and zero them. */
void state_proposal_release(state_proposal *p);
void state_evaluation_release(state_evaluation *e);
void state_carry_release(state_carry *c, size_t nseats);
/* Free what a self-consistency baseline owns and reset it (off, seat -1,
 * p_g -1). */
void state_selfcons_release(state_selfcons *sc);

/* Add u to *total. */
void state_usage_add(state_usage *total, const state_usage *u);

/* Names used in JSON and reports (static strings, never NULL). */
const char *state_stage_name(enum state_stage s);
const char *state_status_name(enum state_status s);
const char *state_stop_reason_name(enum state_stop_reason r);
const char *state_decider_name(enum state_decider d);
const char *state_final_source_name(enum state_final_source s);
const char *state_proposal_status_name(enum state_proposal_status s);
const char *state_eval_status_name(enum state_eval_status s);

#endif
