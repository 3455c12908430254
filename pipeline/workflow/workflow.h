/* workflow.h -- the workflow loader: YAML file -> typed, validated config.
 *
 * A workflow file (docs/workflow.md is the user reference,
 * docs/workflow-keys.md lists every key) describes
 * the models, the team templates, the broker, the round structure, scoring,
 * answer extraction and prompts of an NSED run. It is reviewed in pull
 * requests, so the loader is strict: unknown keys, wrong types, values out
 * of range, duplicate keys, dangling references, API keys written inline,
 * YAML tags, several documents in one file and oversized input are all
 * errors. Every error message has the form "file:line:col: message"
 * (1-based, from libyaml's marks) and comes back through nsed_err.
 *
 * A loaded workflow is immutable. Its fields are public so that later
 * modules (gateway, broker, stages) can read them directly; treat every
 * field as read-only and never free or reassign one. A change a caller
 * needs (the seed of `nsed run --seed`) is an input of the load
 * (workflow_options), so the hash always describes the fields as they
 * are. Every default is already filled in after a successful load, so
 * readers never need to know a default themselves. Absent optional values
 * are marked as documented per field (NULL, 0 or -1), never left
 * undefined.
 *
 * The canonical form is compact JSON of the whole normalized config in a
 * fixed key order (the schema's order) with all defaults filled and the
 * interpolated fields (models[].endpoint, models[].model) kept as written;
 * the workflow hash is the hex SHA-256 of that text. Layout, comments, key
 * order and quoting in the file therefore never change the hash, and any
 * change of a value does.
 *
 * Limits: files over WORKFLOW_MAX_FILE_BYTES are refused with NSED_ETOOBIG
 * before they are read; at most WORKFLOW_MAX_ALIASES alias uses per document
 * and WORKFLOW_MAX_NODES nodes after alias expansion (an alias bomb fails
 * fast with NSED_ETOOBIG); nesting at most WORKFLOW_MAX_DEPTH levels.
 */
#ifndef NSED_WORKFLOW_H
#define NSED_WORKFLOW_H

#include "pipeline/base/buf.h"
#include "pipeline/base/err.h"
#include "pipeline/base/hash.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define WORKFLOW_MAX_FILE_BYTES ((size_t)1 << 20) /* 1 MiB */
#define WORKFLOW_MAX_ALIASES 16     /* alias uses per document */
#define WORKFLOW_MAX_NODES 100000   /* nodes, aliases expanded */
#define WORKFLOW_MAX_DEPTH 64       /* nesting of collections */
#define WORKFLOW_MAX_NAME 64        /* bytes in a name / id */
#define WORKFLOW_MAX_MODELS 256
#define WORKFLOW_MAX_TEAMS 64
#define WORKFLOW_MAX_ROLES 64       /* roles per team */
#define WORKFLOW_MAX_SEATS 64       /* seats per team (sum of counts) */
#define WORKFLOW_MAX_TIERS 64
#define WORKFLOW_MAX_TAGS 64        /* tags per tier */
#define WORKFLOW_MAX_STOP 4         /* sampling stop sequences */

/* broker.policy */
enum workflow_policy {
    WORKFLOW_POLICY_FIXED,    /* every seat of the template, models as listed */
    WORKFLOW_POLICY_KNAPSACK, /* 0/1 knapsack over the pool per question */
};

/* broker.objective: the value the knapsack maximizes. */
enum workflow_objective {
    WORKFLOW_OBJECTIVE_EVIDENCE,     /* sum of p_v - p_g */
    WORKFLOW_OBJECTIVE_VERIFICATION, /* sum of p_v */
    WORKFLOW_OBJECTIVE_GENERATION,   /* sum of p_g */
    WORKFLOW_OBJECTIVE_ACCURACY,     /* predicted team accuracy (default) */
};

/* scoring.scheme */
enum workflow_scheme {
    WORKFLOW_SCHEME_QUADRATIC,         /* signed QV, normalized weights */
    WORKFLOW_SCHEME_QUADRATIC_CREDITS, /* unsigned 100-credit QV */
    WORKFLOW_SCHEME_MEAN,
    WORKFLOW_SCHEME_BORDA,
};

/* scoring.candidate_order: who sees the candidates in which order */
enum workflow_candidate_order {
    WORKFLOW_ORDER_SHARED,        /* one seeded order per round, for all */
    WORKFLOW_ORDER_PER_EVALUATOR, /* a seeded order per evaluator, labelled
                                     A, B, ... in the order it is shown */
};

/* scoring.tie_break entries */
enum workflow_tie_break {
    WORKFLOW_TIE_MIN_PEER_SCORE, /* higher minimum peer score wins */
    WORKFLOW_TIE_VARIANCE,       /* lower score variance wins */
    WORKFLOW_TIE_SEEDED,         /* seeded order (always decides) */
};
#define WORKFLOW_TIE_BREAK_COUNT 3

/* answer.extract */
enum workflow_extract {
    WORKFLOW_EXTRACT_BOXED,       /* last \boxed{...} (balanced braces) */
    WORKFLOW_EXTRACT_REGEX,       /* first capture group of answer.pattern */
    WORKFLOW_EXTRACT_LAST_NUMBER, /* last number in the text */
    WORKFLOW_EXTRACT_JSON_FIELD,  /* answer.field of a JSON object */
    WORKFLOW_EXTRACT_CODE_BLOCK,  /* last fenced code block */
};

/* answer.compare */
enum workflow_compare {
    WORKFLOW_COMPARE_EXACT,      /* byte equality after trimming */
    WORKFLOW_COMPARE_NUMERIC,    /* |a - b| <= tolerance */
    WORKFLOW_COMPARE_NORMALIZED, /* case/space/punctuation-insensitive */
    WORKFLOW_COMPARE_REGEX,      /* the reference is a regex the answer matches */
};

/* rounds.forget_gate.carry bits: what the next round's prompt carries. */
enum workflow_carry {
    WORKFLOW_CARRY_WINNER = 1 << 0,
    WORKFLOW_CARRY_OWN_PREVIOUS = 1 << 1,
    WORKFLOW_CARRY_CRITIQUES = 1 << 2,
    WORKFLOW_CARRY_SCORES = 1 << 3,
};
#define WORKFLOW_CARRY_ALL 0xfu

typedef struct workflow_sampling {
    double temperature; /* 0..2, default 0.7 */
    double top_p;       /* (0, 1], default 1 */
    long max_tokens;    /* 1..1000000, default 1024 */
    bool has_seed;      /* false: no seed sent */
    int64_t seed;       /* 0..INT64_MAX when has_seed */
    char **stop;        /* nstop stop sequences (non-empty strings) */
    size_t nstop;       /* 0..WORKFLOW_MAX_STOP */
} workflow_sampling;

typedef struct workflow_model {
    char *id;           /* unique, [A-Za-z0-9._-]+ */
    char *endpoint;     /* resolved base URL (http:// or https://), no
                           trailing slash; the gateway appends paths */
    char *model;        /* resolved served model name */
    char *endpoint_raw; /* as written, ${VAR} forms unexpanded */
    char *model_raw;    /* as written */
    char *api_key_env;  /* NAME of the env var holding the key, or NULL */
    char *family;       /* never NULL; defaults to id */
    double size_b;      /* parameters in billions, 0 = not given */
    char *placement_host; /* placement.host or NULL */
    int placement_gpu;    /* placement.gpu, -1 = not given */
    double placement_vram_gb; /* placement.vram_gb, -1 = not given */
    int max_concurrency;  /* 1..4096, default 4 */
    double price_input_per_mtok;  /* USD per million tokens, default 0 */
    double price_output_per_mtok;
    double connect_timeout_s;     /* > 0, default 10 */
    double request_timeout_s;     /* > 0, default 300 */
    double stall_factor;          /* [0, 1000], default 10; 0: off. An
                                     attempt in flight longer than this
                                     many times the model's recent p99
                                     latency, while the model answers
                                     others, is abandoned as stalled */
    double stall_min_s;           /* > 0, default 1: the stall limit is
                                     never below this */
    workflow_sampling sampling;
    bool structured_output; /* endpoint honours response_format json_schema */
    char *extra_body;       /* extra_body as compact JSON object text (keys
                               in file order), merged into every request
                               body; NULL when not given */
    double prior_p_gen;     /* prior.p_gen in [0,1], -1 = not given */
    double prior_p_ver;     /* prior.p_ver in [0,1], -1 = not given */
} workflow_model;

typedef struct workflow_gateway {
    int retry_max_attempts;     /* 1..100, default 6 (first try included) */
    long retry_base_delay_ms;   /* 1..600000, default 500 */
    long retry_max_delay_ms;    /* base..3600000, default 30000 */
    double retry_max_total_s;   /* (0, 86400], default 600 */
    int breaker_failures;       /* 1..1000, default 5 consecutive failures */
    double breaker_cooldown_s;  /* (0, 3600], default 30 */
    size_t max_response_bytes;  /* 1024..1 GiB, default 8 MiB */
} workflow_gateway;

typedef struct workflow_role {
    char *name;        /* unique within its team */
    int count;         /* seats, 1..64 */
    char *persona;     /* never NULL; "" when not given */
    char **models;     /* model ids as written (each defined), may be empty */
    size_t nmodels;
    char **families;   /* families as written (each exists), may be empty */
    size_t nfamilies;
    size_t *allowed;   /* indices into workflow.models of every model the
                          role admits (listed ids and members of listed
                          families), ascending, never empty */
    size_t nallowed;
} workflow_role;

typedef struct workflow_team {
    char *name;
    workflow_role *roles; /* nroles >= 1, in file order (seat order) */
    size_t nroles;
    int seats;            /* sum of the roles' counts */
} workflow_team;

typedef struct workflow_tier {
    char **tags;  /* a question matches when it has any of these */
    size_t ntags;
    const workflow_team *team; /* points into workflow.teams */
} workflow_tier;

typedef struct workflow_broker {
    enum workflow_policy policy;       /* default fixed */
    enum workflow_objective objective; /* default accuracy */
    double budget_usd_per_question;    /* > 0, 0 = no USD budget */
    int64_t budget_tokens_per_question; /* > 0, 0 = no token budget */
    double vram_per_gpu_gb;            /* > 0, 0 = not constrained */
    int team_size_min;                 /* 1..64, default 2 */
    int team_size_max;                 /* min..64, default 8 */
    int max_per_family;    /* >= 1; 0 = unlimited (the fixed default);
                              the knapsack default is 1 */
    double evaluator_min_pv; /* [0,1], default 0.5; admission needs p_v > it */
    const workflow_team *default_team; /* never NULL after load */
    workflow_tier *tiers;  /* first match wins */
    size_t ntiers;
    double prior_p_gen;    /* Beta prior mean for unseen models, default 0.5 */
    double prior_p_ver;    /* default 0.6 */
    double prior_strength; /* pseudo-observations, > 0, default 4 */
    double explore;        /* [0,1], default 0.1: share of questions whose
                              team seats the least measured models */
} workflow_broker;

typedef struct workflow_rounds {
    int min;                 /* 1..64, default 1 */
    int max;                 /* min..64, default 4 */
    int min_live_seats;      /* 1..64, default 2: with --allow-degraded, a
                                round with fewer seats served leaves the
                                question incomplete */
    double consensus_margin; /* (0,1]; 0 = rule off */
    int stable_answer;       /* 1..64; 0 = rule off */
    bool fatigue;            /* efficiency_fatigue rule on */
    double fatigue_effort;   /* (0,4], default 1 */
    double fatigue_p_g;      /* [0,1]; -1 = fit from telemetry */
    double fatigue_p_v;      /* [0,1]; -1 = fit */
    double fatigue_lambda;   /* > 0; -1 = fit */
    double fatigue_beta;     /* > 0; -1 = fit */
    double fatigue_explore;  /* [0,1], default 0.15: share of questions in
                                the exploration slice (converge.h) */
    double fatigue_min_r2;   /* [0,1], default 0.8: the fit stops questions
                                only from this R^2 ... */
    double fatigue_min_questions; /* ... and this many finished slice
                                     questions (default 30) */
    unsigned carry;          /* WORKFLOW_CARRY_* bits, default all */
    long max_winner_chars;   /* 100..1000000, default 6000 */
    long max_own_chars;      /* default 4000 */
    long max_critique_chars; /* default 2000 */
    long max_table_chars;    /* default 2000 */
} workflow_rounds;

typedef struct workflow_scoring {
    enum workflow_scheme scheme; /* default quadratic */
    bool allow_self_votes;       /* default false */
    bool reliability_weighting;  /* default false */
    enum workflow_tie_break tie_break[WORKFLOW_TIE_BREAK_COUNT];
    enum workflow_candidate_order candidate_order; /* default shared */
} workflow_scoring;

typedef struct workflow_answer {
    enum workflow_extract extract; /* default boxed */
    char *pattern;   /* POSIX ERE with one capture group (regex), else NULL */
    char *field;     /* JSON field name (json_field), else NULL */
    enum workflow_compare compare; /* default numeric for last_number,
                                      exact otherwise */
    double tolerance; /* >= 0 for numeric (default 1e-6), else 0 */
} workflow_answer;

/* Templates with {name} placeholders; "{{" and "}}" are literal braces.
 * Never NULL after load (built-in defaults fill what the file omits). */
typedef struct workflow_prompts {
    char *system;   /* {persona} {role} */
    char *propose;  /* {question} */
    char *revise;   /* {question} {round} {winner} {own_previous}
                       {critiques} {scores} */
    char *evaluate; /* {question} {candidates} {labels} */
    char *repair;   /* {error} {labels} */
} workflow_prompts;

/* Baselines computed next to the deliberation (docs/results.md). */
typedef struct workflow_baselines {
    bool self_consistency; /* default false: sample one model as many
                              times as the team made calls, majority of
                              its answers (stages/selfcons.h) */
    char *sc_model;        /* self_consistency_model: a model id, NULL:
                              the highest p_g at the question's start */
    size_t sc_model_index; /* its index in models; SIZE_MAX when NULL */
} workflow_baselines;

/* How question files map onto questions (docs/questions.md, "Other
 * datasets"): field names, NULL for the default; `nsed ingest --fields`
 * replaces the whole mapping. */
enum workflow_reference {
    WORKFLOW_REF_AUTO,
    WORKFLOW_REF_RAW,
    WORKFLOW_REF_GSM8K,
    WORKFLOW_REF_BOXED,
    WORKFLOW_REF_CHOICE_INDEX,
};

typedef struct workflow_questions {
    char *id;       /* a field, or "@line"; NULL: "id" */
    char *question; /* NULL: "question" */
    char *answer;   /* NULL: "answer" */
    char *choices;  /* NULL: none */
    char *tags;     /* NULL: "tags" in the native format, none mapped */
    enum workflow_reference reference; /* default auto */
} workflow_questions;

typedef struct workflow {
    char *source;     /* the path (or name) the workflow was loaded from */
    char *name;       /* [A-Za-z0-9._-]+, <= 64 bytes */
    long version;     /* >= 1 */
    uint64_t seed;    /* default 0; workflow_options can replace it */
    workflow_model *models; /* nmodels >= 1, in file order */
    size_t nmodels;
    workflow_gateway gateway;
    workflow_broker broker;
    workflow_team *teams;   /* nteams >= 1, sorted by name */
    size_t nteams;
    workflow_rounds rounds;
    workflow_scoring scoring;
    workflow_answer answer;
    workflow_prompts prompts;
    workflow_baselines baselines;
    workflow_questions questions;
    /* Private: read through workflow_canonical/hash/resolved_json. */
    char *canonical_;
    char *resolved_json_;
    char hash_[HASH_HEX_LEN + 1];
} workflow;

/* Load and validate the workflow file at path. Files larger than
 * WORKFLOW_MAX_FILE_BYTES give NSED_ETOOBIG without being read; a file that
 * cannot be opened gives NSED_EIO ("path: cannot open: reason"). ${VAR}
 * forms in models[].endpoint/model are expanded from the environment now.
 * Returns 0 and sets *out (free with workflow_free), or NSED_EINVAL /
 * NSED_ETOOBIG with err filled as "path:line:col: message", NSED_ENOMEM or
 * NSED_EIO; *out is untouched on failure. */
NSED_MUST_CHECK int workflow_load(const char *path, workflow **out,
                                  nsed_err *err);

/* Same as workflow_load for len bytes of text (need not be NUL-terminated);
 * name stands in for the path in messages and in workflow.source. */
NSED_MUST_CHECK int workflow_load_string(const char *name, const char *text,
                                         size_t len, workflow **out,
                                         nsed_err *err);

/* What a caller changes in a workflow as it is loaded. The workflow stays
 * read-only after the load, so such a change must be an input of it: the
 * canonical form and the hash are then those of the workflow that runs,
 * exactly as if the file said so. */
typedef struct workflow_options {
    bool has_seed; /* replace the file's top-level seed with seed */
    uint64_t seed;
    /* Overrides "KEY=VALUE" (`nsed run --set`, docs/workflow.md
     * "Overrides (--set)"), applied in order to the parsed file before it
     * is validated: KEY is a dotted key path (list items by [index] or by
     * their id / name), VALUE a YAML scalar or flow collection; a later
     * override of the same key wins. An error names "--set KEY" instead
     * of file:line. */
    const char *const *overrides;
    size_t noverrides;
} workflow_options;

/* workflow_load and workflow_load_string with options (opt NULL: none). */
NSED_MUST_CHECK int workflow_load_with(const char *path,
                                       const workflow_options *opt,
                                       workflow **out, nsed_err *err);
NSED_MUST_CHECK int workflow_load_string_with(const char *name,
                                              const char *text, size_t len,
                                              const workflow_options *opt,
                                              workflow **out, nsed_err *err);

/* Free a workflow and everything it owns. NULL is ignored. */
void workflow_free(workflow *wf);

/* The canonical text (compact JSON, owned by wf, NUL-terminated). */
const char *workflow_canonical(const workflow *wf);

/* Lower-case hex SHA-256 of the canonical text (owned by wf). */
const char *workflow_hash(const workflow *wf);

/* JSON {"models":{"<id>":{"endpoint":"...","model":"..."},...}} with the
 * ${VAR}-expanded values, models in file order (owned by wf). It never
 * holds a secret: the workflow only names the env vars of API keys. */
const char *workflow_resolved_json(const workflow *wf);

/* Print the normalized config as indented JSON (same content and order as
 * the canonical form) followed by a newline. Returns 0 or NSED_EIO when
 * writing fails, NSED_ENOMEM. */
NSED_MUST_CHECK int workflow_print_normalized(const workflow *wf, FILE *f);

/* The model with this id, or NULL. */
const workflow_model *workflow_model_find(const workflow *wf, const char *id);

/* The team with this name, or NULL. */
const workflow_team *workflow_team_find(const workflow *wf, const char *name);

/* The team for a question with these tags: the first tier that lists any
 * of them, else broker.default_team. Never NULL for a loaded workflow. */
const workflow_team *workflow_team_for_tags(const workflow *wf,
                                            const char *const *tags,
                                            size_t ntags);

/* Index of m in wf->models (m must point into that array). */
size_t workflow_model_index(const workflow *wf, const workflow_model *m);

/* One placeholder value for workflow_prompt_render. */
typedef struct workflow_prompt_var {
    const char *name;  /* placeholder name without braces */
    const char *value; /* replacement text; NULL counts as "" */
} workflow_prompt_var;

/* Append tmpl to out with every {name} replaced by the value of the var of
 * that name and "{{" / "}}" turned into single braces. A loaded workflow's
 * templates only use the placeholders allowed for them, so the caller
 * passes those. Returns 0, NSED_EINVAL when tmpl holds a placeholder not in
 * vars or an unpaired brace (out then holds a partial text), or the
 * buf_add codes (NSED_ETOOBIG past out's cap, NSED_ENOMEM). */
NSED_MUST_CHECK int workflow_prompt_render(const char *tmpl,
                                           const workflow_prompt_var *vars,
                                           size_t nvars, buf *out);

/* Append the key reference (docs/workflow-keys.md: every key with its
 * type, default, range and meaning, as Markdown) to out. It is made from
 * the loader's own key table, so the docs cannot drift from the code.
 * Returns 0 or the buf_add codes. */
NSED_MUST_CHECK int workflow_keys_markdown(buf *out);

/* Names as written in the file (static strings, never NULL). */
const char *workflow_policy_name(enum workflow_policy p);
const char *workflow_objective_name(enum workflow_objective o);
const char *workflow_scheme_name(enum workflow_scheme s);
const char *workflow_tie_break_name(enum workflow_tie_break t);
const char *workflow_extract_name(enum workflow_extract e);
const char *workflow_compare_name(enum workflow_compare c);

#endif
