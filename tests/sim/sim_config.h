/* sim_config.h -- the nsed-sim configuration file (YAML, strict).
 *
 * The file names the simulated models, their accuracies, latencies, token
 * counts and fault rates (see docs/nsed-sim.md for every key). Unknown keys,
 * duplicate keys, wrong types and out-of-range values are errors reported as
 * "file:line:col: message". The file is capped at SIM_CONFIG_MAX_BYTES.
 */
#ifndef NSED_SIM_CONFIG_H
#define NSED_SIM_CONFIG_H

#include "pipeline/base/err.h"

#include <stddef.h>
#include <stdint.h>

#define SIM_CONFIG_MAX_BYTES (1u << 20)
#define SIM_CONFIG_MAX_MODELS 256
#define SIM_NAME_MAX 256
#define SIM_PREFIX_MAX 65536 /* bytes of a reply_prefix */

/* What a request may be made to suffer instead of a healthy answer. */
typedef enum sim_fault {
    SIM_FAULT_NONE,
    SIM_FAULT_429,           /* 429 with Retry-After */
    SIM_FAULT_500,           /* 500 with an OpenAI error body */
    SIM_FAULT_503,           /* 503 with Retry-After */
    SIM_FAULT_HANG,          /* no answer for hang_ms, then close */
    SIM_FAULT_DROP,          /* close without any response */
    SIM_FAULT_MALFORMED,     /* 200 with a body that is not JSON */
    SIM_FAULT_TRUNCATED,     /* 200 whose body stops half way */
    SIM_FAULT_EMPTY_CHOICES, /* 200 with "choices": [] */
    SIM_FAULT_NONJSON_EVAL,  /* evaluation answered in prose */
    SIM_FAULT_EMPTY_EVAL,    /* evaluation answered {"evaluations":[]} */
    SIM_FAULT_400_REPAIR,    /* repair turn refused with 400 (context) */
} sim_fault;

#define SIM_FAULT_COUNT (SIM_FAULT_400_REPAIR + 1)

/* Short name of a fault kind ("429", "hang", "nonjson_eval"; "none"), as
 * used in the stats JSON. Never NULL. */
const char *sim_fault_name(sim_fault f);

typedef struct sim_faults_cfg {
    double rate[SIM_FAULT_COUNT]; /* by sim_fault; rate[SIM_FAULT_NONE] = 0 */
    long retry_after_s;           /* Retry-After value for 429 and 503 */
    long hang_ms;                 /* how long a hang lasts */
    long long limit;              /* > 0: at most this many faults in all,
                                     then only healthy answers */
    double rate_always_timeout;   /* share of requests (by the request's
                                     digest, so every attempt of one
                                     request alike) that always hang,
                                     outside the per-attempt draw and the
                                     limit */
    double down_after_s;          /* the outage window: from down_after_s */
    double down_for_s;            /* after the model's first request, for
                                     down_for_s seconds (> 0), every request
                                     is dropped unanswered; 0 = no window */
} sim_faults_cfg;

typedef struct sim_model_cfg {
    char *name;             /* served model name */
    char *family;           /* models of one family share wrong answers */
    double p_gen;           /* P(proposal correct) */
    double p_ver;           /* P(a judgement of correctness is right) */
    double sycophancy;      /* 0..1 pull toward the most popular candidate */
    double fatigue;         /* accuracy lost per 1000 prompt chars past 2000 */
    double fatigue_round;   /* the fatigue factor's rate per round (below) */
    double fatigue_context; /* its rate per 1000 prompt chars past 2000;
                               factor F = exp(-fatigue_round*t -
                               fatigue_context*excess/1000), see
                               docs/nsed-sim.md#fatigue */
    double blind_spot;      /* P(a draw is the family's shared one): the
                               family's correlated errors */
    double rate_skip;       /* P(answer SKIP) */
    double ttft_ms;         /* latency before the first token */
    double per_token_ms;    /* latency per completion token */
    long completion_tokens; /* mean completion tokens (jitter +-25%) */
    long evaluation_tokens; /* the same for evaluation replies; 0: as
                               completion_tokens */
    int echo_authorization; /* start every reply with the request's
                               Authorization header, as a careless or
                               hostile server might echo a key */
    char *reply_prefix;     /* NULL, or text every reply starts with (a
                               hostile model's injection) */
    sim_faults_cfg faults;
} sim_model_cfg;

typedef struct sim_config {
    uint64_t seed;
    double difficulty;      /* sd, in logits, of the per-question shift of
                               p_gen (0: every question alike) */
    double difficulty_ver;  /* the same for p_ver */
    char *questions;        /* question set path resolved against the config
                               file's directory, or NULL when none is named */
    sim_model_cfg *models;
    size_t nmodels;
} sim_config;

/* Load and validate the config at path into *out (caller storage).
 * Returns 0, NSED_EINVAL (bad YAML, unknown key, bad value; err carries
 * file:line:col), NSED_ETOOBIG (file over the cap), NSED_EIO (cannot read)
 * or NSED_ENOMEM. On failure *out is untouched. Release with
 * sim_config_release. */
int sim_config_load(const char *path, sim_config *out, nsed_err *err);

/* Free what sim_config_load allocated and zero *cfg. NULL is ignored. */
void sim_config_release(sim_config *cfg);

/* The model named name, or NULL. */
const sim_model_cfg *sim_config_find_model(const sim_config *cfg,
                                           const char *name);

#endif
