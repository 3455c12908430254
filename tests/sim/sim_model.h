/* sim_model.h -- what a simulated model answers.
 *
 * Pure functions: given a model's configuration, the parsed prompt, the
 * reference answer (when the question is known) and the request's random
 * stream, produce the reply text. No I/O, no shared state; the server
 * decides faults, latency and HTTP framing.
 *
 * Proposals end with \boxed{ANSWER}: round 0 is right with probability p_gen
 * (after fatigue), else one of three distractors that depend only on
 * (server seed, question, family) with weights 0.6/0.3/0.1, so that models
 * of one family make the same mistakes. Later rounds (a WINNING SOLUTION
 * block) adopt the winner's answer when the model's own verification
 * (right with probability p_ver) accepts it, else keep YOUR PREVIOUS ANSWER.
 * Evaluations (CANDIDATE blocks) judge each candidate and reply with
 * {"evaluations":[{"candidate","weight","critique"}]}.
 *
 * The knobs of the paper's findings (docs/nsed-sim.md): a per-question
 * difficulty shifts p_gen and p_ver on the logit scale; the fatigue factor
 * F (by round and prompt length) scales p_gen, pulls p_ver toward 0.5 and
 * makes a revision lose the thread with probability 1 - F; blind_spot
 * makes a draw the family's shared one. Each knob at 0 takes no extra
 * random draw, so configs without them get the replies they always got.
 */
#ifndef NSED_SIM_MODEL_H
#define NSED_SIM_MODEL_H

#include "sim_config.h"
#include "sim_prompt.h"
#include "sim_rng.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SIM_DISTRACTORS 3
#define SIM_ANSWER_MAX 64

typedef struct sim_ask {
    const sim_model_cfg *model;
    uint64_t seed;            /* server seed */
    double difficulty;        /* sd (logits) of the question's p_gen shift */
    double difficulty_ver;    /* ... and of its p_ver shift */
    const char *reference;    /* reference answer, NULL when unknown */
    const sim_prompt *prompt; /* parsed request prompt */
    size_t prompt_chars;      /* total characters of all messages */
} sim_ask;

/* Accuracy p lowered by fatigue per 1000 prompt chars beyond 2000, clamped
 * to [0, 1]. */
double sim_model_fatigued(double p, double fatigue, size_t prompt_chars);

/* The fatigue factor F = exp(-fatigue_round * round - fatigue_context *
 * max(0, prompt_chars - 2000) / 1000), in (0, 1]; exactly 1 when both
 * rates are 0. */
double sim_model_fatigue_factor(const sim_model_cfg *m, long round,
                                size_t prompt_chars);

/* The question's difficulty z: a logistic variate with mean 0 and sd 1
 * drawn from (seed, trimmed question text) only, so every model sees the
 * same z for a question. Returns 0 or NSED_ENOMEM. */
int sim_model_difficulty(uint64_t seed, sim_span question, double *z);

/* p shifted by difficulty: logit(p') = logit(p) - sd * z (p of 0 or 1 and
 * sd 0 are returned as they are). */
double sim_model_shift(double p, double sd, double z);

/* The round a prompt belongs to: its "Round N." line for a proposal, the
 * highest "Round N revision." that opens a candidate for an evaluation,
 * else 0. */
long sim_model_round(const sim_prompt *p);

/* 1 when the prompt asks for an evaluation (it shows candidates). */
int sim_model_is_evaluation(const sim_prompt *p);

/* Mean completion tokens (of evaluation replies when evaluation) with
 * deterministic +-25% jitter (at least 1). */
long sim_model_tokens(const sim_model_cfg *m, bool evaluation, sim_rng *rng);

/* The three wrong answers of a family for a question (NUL-terminated, each
 * different from reference and from each other), derived from (seed,
 * question text, family) only. Returns 0 or NSED_ENOMEM. */
int sim_model_distractors(uint64_t seed, sim_span question,
                          const char *family, const char *reference,
                          char out[SIM_DISTRACTORS][SIM_ANSWER_MAX]);

/* Write the reply text for ask into *content (malloc'd, caller frees).
 * prose: answer an evaluation in prose instead of JSON (the nonjson_eval
 * fault); it does not change any judgement. Returns 0 or NSED_ENOMEM;
 * *content is written only on success. */
int sim_model_reply(const sim_ask *ask, sim_rng *rng, int prose,
                    char **content);

#endif
