/* sim_prompt.h -- reading the runner's prompt contract.
 *
 * The runner marks the parts of a prompt with lines
 *     =====BEGIN <KIND>[ <LABEL>][ fence <HEX>]=====
 *     ...
 *     =====END <KIND>[ <LABEL>][ fence <HEX>]=====
 * where the END line repeats the BEGIN line's kind, label and fence (a nonce
 * chosen by the anonymizer so that candidate text cannot close a block).
 * This module finds those blocks, the last \boxed{...} answer in a text and
 * compares answers. Nothing here allocates: spans point into the caller's
 * text, which must outlive them.
 */
#ifndef NSED_SIM_PROMPT_H
#define NSED_SIM_PROMPT_H

#include <stddef.h>

/* At most this many marker (BEGIN/END) lines are read per message; later
 * ones are ignored, so a prompt full of marker lines cannot make pairing
 * them expensive. */
#define SIM_PROMPT_MAX_MARKERS 1024
/* At most this many candidates are read from one prompt. */
#define SIM_PROMPT_MAX_CANDIDATES 64
#define SIM_LABEL_MAX 16

typedef struct sim_span {
    const char *ptr;
    size_t len;
} sim_span;

typedef enum sim_block_kind {
    SIM_BLOCK_QUESTION,
    SIM_BLOCK_CANDIDATE,
    SIM_BLOCK_WINNING,  /* WINNING SOLUTION */
    SIM_BLOCK_PREVIOUS, /* YOUR PREVIOUS ANSWER */
    SIM_BLOCK_CRITIQUES,
    SIM_BLOCK_SCORES,
    SIM_BLOCK_OTHER,
} sim_block_kind;

typedef struct sim_candidate {
    char label[SIM_LABEL_MAX + 1]; /* "A", "B", ... NUL-terminated */
    sim_span body;
} sim_candidate;

/* What a request's prompt says. Spans point into the segments given to
 * sim_prompt_parse. */
typedef struct sim_prompt {
    int has_question;
    sim_span question;        /* trimmed */
    int has_winner;
    sim_span winner;          /* WINNING SOLUTION body */
    int has_previous;
    sim_span previous;        /* YOUR PREVIOUS ANSWER body */
    size_t ncandidates;
    sim_candidate candidates[SIM_PROMPT_MAX_CANDIDATES];
    int has_round;
    long round; /* from a line "Round N." outside the blocks
                                 (nsed's default revise prompt) */
} sim_prompt;

/* Parse the prompt from segments given in search order (the runner's last
 * user message first, then the other messages from last to first). For each
 * kind, the first segment holding a block of that kind supplies it: the
 * first such block for QUESTION, WINNING SOLUTION and YOUR PREVIOUS ANSWER,
 * every such block (up to the cap, first occurrence of a label wins) for
 * CANDIDATE. The round is read from the first segment holding a "Round N."
 * line outside its blocks. Cannot fail; *out is fully written. */
void sim_prompt_parse(const sim_span *segments, size_t nsegments,
                      sim_prompt *out);

/* 1 and *round when the trimmed line is "Round N." (N decimal digits, at
 * most 9; the period optional), else 0. */
int sim_round_line(sim_span line, long *round);

/* Find the last \boxed{...} in text whose braces balance; on success store
 * its trimmed content in *out and return 1, else return 0. */
int sim_boxed_last(sim_span text, sim_span *out);

/* The final answer a text gives: the last balanced \boxed{} content, or
 * "SKIP" when the whole trimmed text is SKIP. Returns 1 and sets *out when
 * there is one, else 0. */
int sim_final_answer(sim_span text, sim_span *out);

/* 1 when two answers are the same: numerically (integers, decimals, a/b and
 * \frac{a}{b} forms, relative tolerance 1e-9) when both read as numbers,
 * otherwise as text ignoring white space, '$' and letter case. */
int sim_answer_equal(sim_span a, sim_span b);

/* Parse an answer as a number (same forms as sim_answer_equal). Returns 1
 * and sets *out when it is one. */
int sim_answer_number(sim_span a, double *out);

/* Remove leading and trailing white space from a span. */
sim_span sim_span_trim(sim_span s);

#endif
