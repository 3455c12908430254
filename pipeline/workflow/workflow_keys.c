/* workflow_keys.c -- the table of workflow keys (see workflow_int.h) and
 * the Markdown key reference made from it.
 *
 * To add a key: add its field to the struct in workflow.h and one line to
 * its section below, in the place the canonical form should have it (an
 * existing workflow's hash changes, as any change of the schema does);
 * then regenerate docs/workflow-keys.md with nsed-workflow-keys. Only a
 * key that needs a condition on other keys or a reference needs code in
 * workflow.c (a wf_special or wf_check step).
 */
#include "pipeline/workflow/workflow_int.h"
#include "pipeline/base/suggest.h"

#include <assert.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- enum names --------------------------------------------------------- */

const char *const wf_policy_names[2] = {
    [WORKFLOW_POLICY_FIXED] = "fixed",
    [WORKFLOW_POLICY_KNAPSACK] = "knapsack",
};
const char *const wf_objective_names[4] = {
    [WORKFLOW_OBJECTIVE_EVIDENCE] = "evidence",
    [WORKFLOW_OBJECTIVE_VERIFICATION] = "verification",
    [WORKFLOW_OBJECTIVE_GENERATION] = "generation",
    [WORKFLOW_OBJECTIVE_ACCURACY] = "accuracy",
};
const char *const wf_scheme_names[4] = {
    [WORKFLOW_SCHEME_QUADRATIC] = "quadratic",
    [WORKFLOW_SCHEME_QUADRATIC_CREDITS] = "quadratic_credits",
    [WORKFLOW_SCHEME_MEAN] = "mean",
    [WORKFLOW_SCHEME_BORDA] = "borda",
};
const char *const wf_tie_break_names[WORKFLOW_TIE_BREAK_COUNT] = {
    [WORKFLOW_TIE_MIN_PEER_SCORE] = "min_peer_score",
    [WORKFLOW_TIE_VARIANCE] = "variance",
    [WORKFLOW_TIE_SEEDED] = "seeded",
};
const char *const wf_order_names[2] = {
    [WORKFLOW_ORDER_SHARED] = "shared",
    [WORKFLOW_ORDER_PER_EVALUATOR] = "per_evaluator",
};
const char *const wf_extract_names[5] = {
    [WORKFLOW_EXTRACT_BOXED] = "boxed",
    [WORKFLOW_EXTRACT_REGEX] = "regex",
    [WORKFLOW_EXTRACT_LAST_NUMBER] = "last_number",
    [WORKFLOW_EXTRACT_JSON_FIELD] = "json_field",
    [WORKFLOW_EXTRACT_CODE_BLOCK] = "code_block",
};
const char *const wf_compare_names[4] = {
    [WORKFLOW_COMPARE_EXACT] = "exact",
    [WORKFLOW_COMPARE_NUMERIC] = "numeric",
    [WORKFLOW_COMPARE_NORMALIZED] = "normalized",
    [WORKFLOW_COMPARE_REGEX] = "regex",
};
const char *const wf_carry_names[4] = {
    "winner", "own_previous", "critiques", "scores",
};

/* The generic code stores enums through int pointers. */
_Static_assert(sizeof(enum workflow_policy) == sizeof(int) &&
                   sizeof(enum workflow_objective) == sizeof(int) &&
                   sizeof(enum workflow_scheme) == sizeof(int) &&
                   sizeof(enum workflow_tie_break) == sizeof(int) &&
                   sizeof(enum workflow_candidate_order) == sizeof(int) &&
                   sizeof(enum workflow_extract) == sizeof(int) &&
                   sizeof(enum workflow_compare) == sizeof(int),
               "enums are int-sized");

/* ---- entry shorthands --------------------------------------------------
 * K_x(key, struct, field, ...) for a value of type x in `struct`; the
 * trailing designators add flags, special steps and the doc line. */

#define OFF(T, f) .off = offsetof(T, f)
#define K_MAP(k, s, ...) {.key = k, .type = WF_T_MAP, .sub = &s, __VA_ARGS__}
#define K_LIST(k, T, f, n, s, IT, mn, mx, ...)                              \
    {.key = k, .type = WF_T_LIST, OFF(T, f), .aux_off = offsetof(T, n),     \
     .sub = &s, .item_size = sizeof(IT), .ilo = mn, .ihi = mx, __VA_ARGS__}
#define K_BOOL(k, T, f, ...)                                                 \
    {.key = k, .type = WF_T_BOOL, OFF(T, f), __VA_ARGS__}
#define K_INT(k, T, f, mn, mx, ...)                                          \
    {.key = k, .type = WF_T_INT, OFF(T, f), .ilo = mn, .ihi = mx, __VA_ARGS__}
#define K_LONG(k, T, f, mn, mx, ...)                                         \
    {.key = k, .type = WF_T_LONG, OFF(T, f), .ilo = mn, .ihi = mx, __VA_ARGS__}
#define K_I64(k, T, f, mn, mx, ...)                                          \
    {.key = k, .type = WF_T_I64, OFF(T, f), .ilo = mn, .ihi = mx, __VA_ARGS__}
#define K_SIZE(k, T, f, mn, mx, ...)                                         \
    {.key = k, .type = WF_T_SIZE, OFF(T, f), .ilo = mn, .ihi = mx, __VA_ARGS__}
#define K_U64(k, T, f, ...) {.key = k, .type = WF_T_U64, OFF(T, f), __VA_ARGS__}
/* A number in [mn, mx]; WF_F_LO_OPEN / WF_F_HI_OPEN open a bound. */
#define K_NUM(k, T, f, mn, mx, ...)                                          \
    {.key = k, .type = WF_T_NUM, OFF(T, f), .lo = mn, .hi = mx, __VA_ARGS__}
#define K_ENUM(k, T, f, tbl, ...)                                            \
    {.key = k, .type = WF_T_ENUM, OFF(T, f), .names = tbl,                   \
     .nnames = WF_COUNT(tbl), __VA_ARGS__}
#define K_SET(k, T, f, tbl, ...)                                             \
    {.key = k, .type = WF_T_ENUM_SET, OFF(T, f), .names = tbl,               \
     .nnames = WF_COUNT(tbl), __VA_ARGS__}
#define K_ORDER(k, T, f, tbl, ...)                                           \
    {.key = k, .type = WF_T_ENUM_ORDER, OFF(T, f), .names = tbl,             \
     .nnames = WF_COUNT(tbl), __VA_ARGS__}
#define K_NAME(k, T, f, ...)                                                 \
    {.key = k, .type = WF_T_NAME, OFF(T, f), __VA_ARGS__}
#define K_TEXT(k, T, f, mx, ...)                                             \
    {.key = k, .type = WF_T_TEXT, OFF(T, f), .ilo = 1, .ihi = mx, __VA_ARGS__}
#define K_STR(k, T, f, ...) {.key = k, .type = WF_T_STR, OFF(T, f), __VA_ARGS__}
#define K_NAMES(k, T, f, n, mn, mx, ...)                                     \
    {.key = k, .type = WF_T_NAME_LIST, OFF(T, f), .aux_off = offsetof(T, n), \
     .ilo = mn, .ihi = mx, __VA_ARGS__}
#define K_TEXTS(k, T, f, n, mn, mx, ...)                                     \
    {.key = k, .type = WF_T_TEXT_LIST, OFF(T, f), .aux_off = offsetof(T, n), \
     .ilo = mn, .ihi = mx, __VA_ARGS__}
#define SECTION(name, keys_, ...)                                            \
    const wf_section name = {.keys = keys_, .nkeys = WF_COUNT(keys_),        \
                             __VA_ARGS__}

#define REQ .flags = WF_F_REQUIRED
#define OPEN_LO .flags = WF_F_LO_OPEN

/* ---- models[] ---------------------------------------------------------- */

static const wf_key placement_keys[] = {
    K_TEXT("host", workflow_model, placement_host, 255,
           .doc = "where the model runs"),
    K_INT("gpu", workflow_model, placement_gpu, 0, 1023,
          .flags = WF_F_NULL_NEG, .dflt = -1,
          .doc = "GPU index, for the broker's VRAM constraint"),
    K_NUM("vram_gb", workflow_model, placement_vram_gb, 0, 10000,
          .flags = WF_F_NULL_NEG, .dflt = -1,
          .doc = "VRAM the model occupies on that GPU"),
};
static SECTION(placement_section, placement_keys);

static const wf_key price_keys[] = {
    K_NUM("input_per_mtok", workflow_model, price_input_per_mtok, 0, 1e6,
          .doc = "USD per million prompt tokens"),
    K_NUM("output_per_mtok", workflow_model, price_output_per_mtok, 0, 1e6,
          .doc = "USD per million completion tokens"),
};
static SECTION(price_section, price_keys);

static const wf_key timeout_keys[] = {
    K_NUM("connect_s", workflow_model, connect_timeout_s, 0, 3600, OPEN_LO,
          .dflt = 10, .doc = "TCP/TLS connect timeout, seconds"),
    K_NUM("request_s", workflow_model, request_timeout_s, 0, 86400, OPEN_LO,
          .dflt = 300, .doc = "whole-request timeout, seconds"),
    K_NUM("stall_factor", workflow_model, stall_factor, 0, 1000,
          .flags = WF_F_OMIT_DFLT, .dflt = 10,
          .doc = "an attempt still unanswered after this many times the "
                 "model's p99 latency over its last 256 replies (once it has "
                 "32), while the model answers other requests, is abandoned "
                 "as stalled and retried; `0` turns this off"),
    K_NUM("stall_min_s", workflow_model, stall_min_s, 0, 86400,
          .flags = WF_F_LO_OPEN | WF_F_OMIT_DFLT, .dflt = 1,
          .doc = "the stall limit is never below this, seconds"),
};
static SECTION(timeout_section, timeout_keys);

static const wf_key sampling_keys[] = {
    K_NUM("temperature", workflow_model, sampling.temperature, 0, 2,
          .dflt = 0.7, .doc = "sampling temperature"),
    K_NUM("top_p", workflow_model, sampling.top_p, 0, 1, OPEN_LO, .dflt = 1,
          .doc = "nucleus sampling mass"),
    K_LONG("max_tokens", workflow_model, sampling.max_tokens, 1, 1000000,
           .dflt = 1024, .doc = "completion token limit"),
    K_I64("seed", workflow_model, sampling.seed, 0, INT64_MAX,
          .flags = WF_F_GIVEN,
          .aux_off = offsetof(workflow_model, sampling.has_seed),
          .doc_default = "not sent",
          .doc = "sampling seed for servers that honour it"),
    K_TEXTS("stop", workflow_model, sampling.stop, sampling.nstop, 0,
            WORKFLOW_MAX_STOP, .doc_default = "`[]`",
            .doc = "stop sequences"),
};
static SECTION(sampling_section, sampling_keys);

static const wf_key prior_keys[] = {
    K_NUM("p_gen", workflow_model, prior_p_gen, 0, 1,
          .flags = WF_F_NULL_NEG, .dflt = -1,
          .doc_default = "`broker.priors.p_gen`",
          .doc = "expected generation accuracy before any measurement"),
    K_NUM("p_ver", workflow_model, prior_p_ver, 0, 1,
          .flags = WF_F_NULL_NEG, .dflt = -1,
          .doc_default = "`broker.priors.p_ver`",
          .doc = "expected verification accuracy"),
};
static SECTION(prior_section, prior_keys);

static const wf_key model_keys[] = {
    K_NAME("id", workflow_model, id, REQ, .check = WF_CK_MODEL_ID,
           .doc = "unique among models; teams refer to it"),
    K_TEXT("endpoint", workflow_model, endpoint_raw, 2048, REQ,
           .special = WF_SP_ENDPOINT,
           .doc_range = "`http://` or `https://` URL with a host, "
                        "1..2048 bytes",
           .doc = "OpenAI-compatible base URL; `${VAR}` expanded, a "
                  "trailing `/` dropped"),
    K_TEXT("model", workflow_model, model_raw, 256, REQ, .special = WF_SP_MODEL,
           .doc = "served model name sent as the request's `model`; "
                  "`${VAR}` expanded"),
    K_TEXT("api_key_env", workflow_model, api_key_env, 128,
           .special = WF_SP_API_KEY_ENV, .doc_range = "`[A-Z_][A-Z0-9_]*`",
           .doc = "the *name* of the environment variable with the API "
                  "key"),
    K_NAME("family", workflow_model, family, .special = WF_SP_FAMILY,
           .doc_default = "the `id`",
           .doc = "models of a family share blind spots "
                  "(`broker.max_per_family`)"),
    K_NUM("size_b", workflow_model, size_b, 0, 100000,
          .flags = WF_F_LO_OPEN | WF_F_NULL_ZERO,
          .doc = "parameters in billions (informational)"),
    K_MAP("placement", placement_section, .doc = "where the model runs"),
    K_INT("max_concurrency", workflow_model, max_concurrency, 1, 4096,
          .dflt = 4, .doc = "requests in flight to this model at once"),
    K_MAP("price", price_section, .doc = "what a call costs"),
    K_MAP("timeouts", timeout_section, .doc = "network timeouts"),
    K_MAP("sampling", sampling_section,
          .doc = "sampling parameters sent "
                 "with every request"),
    K_BOOL("structured_output", workflow_model, structured_output,
           .doc = "the endpoint honours `response_format: json_schema`; "
                  "evaluations then request it"),
    K_STR("extra_body", workflow_model, extra_body, .special = WF_SP_EXTRA_BODY,
          .doc_default = "none",
          .doc_range = "a mapping of any values, at most 16384 bytes as "
                       "JSON; none of the fields nsed sets (`model`, "
                       "`messages`, `temperature`, `top_p`, `max_tokens`, "
                       "`seed`, `stop`, `response_format`, `stream`)",
          .doc = "endpoint-specific fields merged into every request body "
                 "(e.g. `cache_prompt: false` for llama.cpp); part of the "
                 "hash and of every call's ledger key"),
    K_MAP("prior", prior_section,
          .doc = "what the broker assumes before "
                 "measuring the model"),
};
SECTION(wf_model_section, model_keys);

/* ---- gateway ----------------------------------------------------------- */

static const wf_key retry_keys[] = {
    K_INT("max_attempts", workflow, gateway.retry_max_attempts, 1, 100,
          .dflt = 6, .doc = "attempts per call, the first included"),
    K_LONG("base_delay_ms", workflow, gateway.retry_base_delay_ms, 1,
           600000, .dflt = 500,
           .doc = "first backoff delay (exponential, with jitter; "
                  "`Retry-After` wins)"),
    K_LONG("max_delay_ms", workflow, gateway.retry_max_delay_ms, 1, 3600000,
           .dflt = 30000, .doc_range = "1..3600000, >= `base_delay_ms`",
           .doc = "cap on one delay"),
    K_NUM("max_total_s", workflow, gateway.retry_max_total_s, 0, 86400,
          OPEN_LO, .dflt = 600,
          .doc = "give up on a call after this long in total"),
};
static SECTION(retry_section, retry_keys, .check = WF_CK_RETRY);

static const wf_key breaker_keys[] = {
    K_INT("failures", workflow, gateway.breaker_failures, 1, 1000, .dflt = 5,
          .doc = "consecutive failures that open an endpoint's breaker"),
    K_NUM("cooldown_s", workflow, gateway.breaker_cooldown_s, 0, 3600,
          OPEN_LO, .dflt = 30, .doc = "how long the breaker stays open"),
};
static SECTION(breaker_section, breaker_keys);

static const wf_key gateway_keys[] = {
    K_MAP("retry", retry_section, .doc = "retries with backoff"),
    K_MAP("circuit_breaker", breaker_section,
          .doc = "per-endpoint circuit breaker"),
    K_SIZE("max_response_bytes", workflow, gateway.max_response_bytes, 1024,
           (long long)1 << 30, .dflt = (double)((size_t)8 << 20),
           .doc_default = "`8388608` (8 MiB)",
           .doc = "larger response bodies are refused"),
};
static SECTION(gateway_section, gateway_keys);

/* ---- broker ------------------------------------------------------------ */

static const wf_key budget_keys[] = {
    K_NUM("usd_per_question", workflow, broker.budget_usd_per_question, 0,
          1e6, .flags = WF_F_LO_OPEN | WF_F_NULL_ZERO,
          .doc_default = "no limit",
          .doc = "spend cap per question, all rounds"),
    K_I64("tokens_per_question", workflow, broker.budget_tokens_per_question,
          1, 1000000000000LL, .flags = WF_F_NULL_ZERO,
          .doc_default = "no limit",
          .doc = "token cap per question, all rounds"),
};
static SECTION(budget_section, budget_keys);

static const wf_key team_size_keys[] = {
    K_INT("min", workflow, broker.team_size_min, 1, WORKFLOW_MAX_SEATS,
          .dflt = 2, .doc = "fewest seats a team may have"),
    K_INT("max", workflow, broker.team_size_max, 1, WORKFLOW_MAX_SEATS,
          .dflt = 8, .doc_range = "1..64, >= `min`",
          .doc = "most seats a team may have"),
};
static SECTION(team_size_section, team_size_keys, .check = WF_CK_TEAM_SIZE);

static const wf_key tier_keys[] = {
    K_TEXTS("tags", workflow_tier, tags, ntags, 1, WORKFLOW_MAX_TAGS, REQ,
            .doc = "a question with any of these tags gets the tier's "
                   "team"),
    K_STR("team", workflow_tier, team, REQ, .special = WF_SP_TIER_TEAM,
          .doc_range = "a team of `teams`", .doc = "the tier's team"),
};
SECTION(wf_tier_section, tier_keys);

static const wf_key priors_keys[] = {
    K_NUM("p_gen", workflow, broker.prior_p_gen, 0, 1, .dflt = 0.5,
          .doc = "Beta prior mean of p_gen for models without "
                 "measurements"),
    K_NUM("p_ver", workflow, broker.prior_p_ver, 0, 1, .dflt = 0.6,
          .doc = "Beta prior mean of p_ver"),
    K_NUM("strength", workflow, broker.prior_strength, 0, 1e6, OPEN_LO,
          .dflt = 4, .doc = "prior weight in pseudo-observations"),
};
static SECTION(priors_section, priors_keys);

static const wf_key broker_keys[] = {
    K_ENUM("policy", workflow, broker.policy, wf_policy_names,
           .doc = "`fixed`: every seat of the team template; `knapsack`: "
                  "a 0/1 knapsack over the pool per question"),
    K_ENUM("objective", workflow, broker.objective, wf_objective_names,
           .special = WF_SP_OBJECTIVE, .dflt = WORKFLOW_OBJECTIVE_ACCURACY,
           .doc = "what the knapsack maximizes: sum of p_v - p_g, of p_v "
                  "or of p_g, or the team's accuracy predicted from its "
                  "seats' p_g and p_v (docs/broker.md)"),
    K_MAP("budget", budget_section, .doc = "caps per question"),
    K_NUM("vram_per_gpu_gb", workflow, broker.vram_per_gpu_gb, 0, 10000,
          .flags = WF_F_LO_OPEN | WF_F_NULL_ZERO,
          .doc_default = "not constrained",
          .doc = "VRAM of each GPU, checked against `placement`"),
    K_MAP("team_size", team_size_section, .doc = "seats per team"),
    K_INT("max_per_family", workflow, broker.max_per_family, 1,
          WORKFLOW_MAX_SEATS, .flags = WF_F_NULL_ZERO, .dflt = -1,
          .check = WF_CK_FAMILY_CAP,
          .doc_default = "1 for knapsack, unlimited for fixed",
          .doc = "models of one family in a team at most"),
    K_NUM("evaluator_min_pv", workflow, broker.evaluator_min_pv, 0, 1,
          .dflt = 0.5,
          .doc = "a model evaluates only when its p_v is strictly greater"),
    K_STR("default_team", workflow, broker.default_team,
          .special = WF_SP_DEFAULT_TEAM, .doc_range = "a team of `teams`",
          .doc_default = "the only team; required with several",
          .doc = "team for questions no tier matches"),
    K_LIST("tiers", workflow, broker.tiers, broker.ntiers, wf_tier_section,
           workflow_tier, 0, WORKFLOW_MAX_TIERS, .special = WF_SP_TIERS,
           .doc_default = "`[]`",
           .doc = "the first tier sharing a tag with the question wins"),
    K_MAP("priors", priors_section,
          .doc = "Beta priors for models without measurements"),
    K_NUM("explore", workflow, broker.explore, 0, 1, .flags = WF_F_OMIT_DFLT,
          .dflt = 0.1,
          .doc = "knapsack: share of questions (by hash of seed and id) "
                 "whose team takes the least measured admitted models "
                 "first, so a model excluded on its prior gets measured"),
};
static SECTION(broker_section, broker_keys);

/* ---- teams ------------------------------------------------------------- */

static const wf_key role_keys[] = {
    K_NAME("name", workflow_role, name, REQ, .check = WF_CK_ROLE_NAME,
           .doc = "unique within the team; fills `{role}`"),
    K_INT("count", workflow_role, count, 1, WORKFLOW_MAX_SEATS, .dflt = 1,
          .doc = "seats of this role (a team has at most 64 seats)"),
    K_STR("persona", workflow_role, persona, .dflt_str = "",
          .doc = "fills `{persona}` in the system prompt"),
    K_NAMES("models", workflow_role, models, nmodels, 1, WORKFLOW_MAX_MODELS,
            .doc_default = "none",
            .doc = "model ids allowed in these seats"),
    K_NAMES("families", workflow_role, families, nfamilies, 1,
            WORKFLOW_MAX_MODELS, .doc_default = "none",
            .doc = "every model of these families is allowed (a role "
                   "needs `models`, `families` or both)"),
};
SECTION(wf_role_section, role_keys, .check = WF_CK_ROLE_MODELS);

static const wf_key team_keys[] = {
    K_LIST("roles", workflow_team, roles, nroles, wf_role_section,
           workflow_role, 1, WORKFLOW_MAX_ROLES, REQ, .special = WF_SP_ROLES,
           .doc = "the team's roles; seat order follows the list"),
};
SECTION(wf_team_section, team_keys);

/* ---- rounds ------------------------------------------------------------ */

static const wf_key fatigue_keys[] = {
    K_NUM("effort", workflow, rounds.fatigue_effort, 0, 4, OPEN_LO, .dflt = 1,
          .doc = "stop at round ceil(effort * T_opt)"),
    K_NUM("p_g", workflow, rounds.fatigue_p_g, 0, 1, .flags = WF_F_NULL_NEG,
          .dflt = -1, .doc_default = "fitted",
          .doc = "generation accuracy; fitted from telemetry when absent"),
    K_NUM("p_v", workflow, rounds.fatigue_p_v, 0, 1, .flags = WF_F_NULL_NEG,
          .dflt = -1, .doc_default = "fitted",
          .doc = "verification accuracy; fitted when absent"),
    K_NUM("lambda", workflow, rounds.fatigue_lambda, 0, 1e6,
          .flags = WF_F_LO_OPEN | WF_F_NULL_NEG, .dflt = -1,
          .doc_default = "fitted", .doc = "learning rate; fitted when absent"),
    K_NUM("beta", workflow, rounds.fatigue_beta, 0, 1e6,
          .flags = WF_F_LO_OPEN | WF_F_NULL_NEG, .dflt = -1,
          .doc_default = "fitted", .doc = "fatigue cost; fitted when absent"),
    K_NUM("explore", workflow, rounds.fatigue_explore, 0, 1,
          .flags = WF_F_OMIT_DFLT, .dflt = 0.15,
          .doc = "share of questions, chosen by a hash of the seed and the "
                 "question id, that run every round to `rounds.max` with no "
                 "early stop; the fit uses only them"),
    K_NUM("fit_min_r2", workflow, rounds.fatigue_min_r2, 0, 1,
          .flags = WF_F_OMIT_DFLT, .dflt = 0.8,
          .doc = "the fitted T_opt stops questions only when the fit's R^2 "
                 "reaches this"),
    K_NUM("fit_min_questions", workflow, rounds.fatigue_min_questions, 1, 1e9,
          .flags = WF_F_OMIT_DFLT, .dflt = 30,
          .doc = "... and it was made from at least this many finished "
                 "exploration questions"),
};
static SECTION(fatigue_section, fatigue_keys);

static const wf_key stop_keys[] = {
    K_NUM("consensus_margin", workflow, rounds.consensus_margin, 0, 1,
          .flags = WF_F_LO_OPEN | WF_F_NULL_ZERO, .doc_default = "off",
          .doc = "stop when the winner's conviction reaches it"),
    K_INT("stable_answer", workflow, rounds.stable_answer, 1, 64,
          .flags = WF_F_NULL_ZERO, .doc_default = "off",
          .doc = "stop when one answer wins this many rounds in a row"),
    K_MAP("efficiency_fatigue", fatigue_section, .flags = WF_F_GIVEN,
          .aux_off = offsetof(workflow, rounds.fatigue), .doc_default = "off",
          .doc = "stop at the optimum of the efficiency-fatigue model"),
};
static SECTION(stop_section, stop_keys);

static const wf_key forget_keys[] = {
    K_SET("carry", workflow, rounds.carry, wf_carry_names,
          .dflt = WORKFLOW_CARRY_ALL, .doc_default = "all four",
          .doc = "what the next round's prompt carries"),
    K_LONG("max_winner_chars", workflow, rounds.max_winner_chars, 100,
           1000000, .dflt = 6000, .doc = "truncation of the winning answer"),
    K_LONG("max_own_chars", workflow, rounds.max_own_chars, 100, 1000000,
           .dflt = 4000, .doc = "truncation of the seat's own previous "
                                "answer"),
    K_LONG("max_critique_chars", workflow, rounds.max_critique_chars, 100,
           1000000, .dflt = 2000,
           .doc = "truncation of the critiques it received"),
    K_LONG("max_table_chars", workflow, rounds.max_table_chars, 100,
           1000000, .dflt = 2000, .doc = "truncation of the score table"),
};
static SECTION(forget_section, forget_keys);

static const wf_key rounds_keys[] = {
    K_INT("min", workflow, rounds.min, 1, 64, .dflt = 1,
          .doc = "rounds that run before a stopping rule may fire"),
    K_INT("max", workflow, rounds.max, 1, 64, .dflt = 4, .check = WF_CK_ROUNDS,
          .doc_range = "1..64, >= `min`", .doc = "hard limit on rounds"),
    K_INT("min_live_seats", workflow, rounds.min_live_seats, 1, 64, .dflt = 2,
          .doc = "with `--allow-degraded`, seats a round must still have "
                 "served; with fewer the question is left incomplete"),
    K_MAP("stop", stop_section,
          .doc = "stopping rules; the first that fires stops"),
    K_MAP("forget_gate", forget_section,
          .doc = "what a round passes to the next"),
};
static SECTION(rounds_section, rounds_keys);

/* ---- scoring, answer, prompts ------------------------------------------ */

static const wf_key scoring_keys[] = {
    K_ENUM("scheme", workflow, scoring.scheme, wf_scheme_names,
           .doc = "signed quadratic voting, unsigned 100-credit QV, mean "
                  "weight or Borda count"),
    K_BOOL("allow_self_votes", workflow, scoring.allow_self_votes,
           .doc = "count a seat's vote on its own candidate"),
    K_BOOL("reliability_weighting", workflow, scoring.reliability_weighting,
           .doc = "weight each evaluator by its measured reliability"),
    K_ORDER("tie_break", workflow, scoring.tie_break, wf_tie_break_names,
            .doc_default = "`[min_peer_score, variance, seeded]`",
            .doc = "order of the tie breakers"),
    K_ENUM("candidate_order", workflow, scoring.candidate_order, wf_order_names,
           .flags = WF_F_OMIT_DFLT,
           .doc = "one seeded candidate order per round for every "
                  "evaluator, or one per evaluator (position bias is "
                  "then randomized between evaluators)"),
};
static SECTION(scoring_section, scoring_keys);

static const wf_key answer_keys[] = {
    K_ENUM("extract", workflow, answer.extract, wf_extract_names,
           .doc = "how the final answer is taken from a reply"),
    K_TEXT("pattern", workflow, answer.pattern, 4096, .special = WF_SP_PATTERN,
           .doc_default = "required with "
                          "`extract: regex`",
           .doc =
               "PCRE2 regex (\\d is a digit) with exactly one capture group"),
    K_NAME("field", workflow, answer.field, .special = WF_SP_FIELD,
           .doc_default = "required with `extract: json_field`",
           .doc = "the JSON field that holds the answer"),
    K_ENUM("compare", workflow, answer.compare, wf_compare_names,
           .special = WF_SP_COMPARE,
           .doc_default = "`numeric` for `last_number`, else `exact`",
           .doc = "how an answer is compared with the reference"),
    K_NUM("tolerance", workflow, answer.tolerance, 0, 1e12, .dflt = 1e-6,
          .special = WF_SP_TOLERANCE,
          .doc_default = "`1e-06`, only with `compare: numeric`",
          .doc = "largest difference that still counts as equal"),
};
static SECTION(answer_section, answer_keys);

/* In enum wf_prompt_kind order: the loader takes the kind from the index;
 * the docs take the placeholders from workflow_prompt.c. */
static const wf_key prompt_keys[WF_PROMPT_COUNT] = {
    K_STR("system", workflow, prompts.system, .special = WF_SP_PROMPT,
          .doc_default = "built-in", .doc = "system message"),
    K_STR("propose", workflow, prompts.propose, .special = WF_SP_PROMPT,
          .doc_default = "built-in", .doc = "round 0 user message"),
    K_STR("revise", workflow, prompts.revise, .special = WF_SP_PROMPT,
          .doc_default = "built-in", .doc = "user message of later rounds"),
    K_STR("evaluate", workflow, prompts.evaluate, .special = WF_SP_PROMPT,
          .doc_default = "built-in", .doc = "cross-evaluation request"),
    K_STR("repair", workflow, prompts.repair, .special = WF_SP_PROMPT,
          .doc_default = "built-in",
          .doc = "retry after an unparseable evaluation"),
};
static SECTION(prompts_section, prompt_keys);

/* ---- baselines ----------------------------------------------------------
 * Every key is left out of the canonical form at its default (and so is
 * the section then), so the workflows written before it keep their hash. */

static const wf_key baselines_keys[] = {
    K_BOOL("self_consistency", workflow, baselines.self_consistency,
           .flags = WF_F_OMIT_DFLT,
           .doc = "also sample one model as many times as the team made "
                  "calls and report the majority of its answers"),
    K_NAME("self_consistency_model", workflow, baselines.sc_model,
           .flags = WF_F_OMIT_DFLT, .check = WF_CK_SC_MODEL,
           .doc_range = "a model of `models`",
           .doc_default = "the highest p_g at the question's start",
           .doc = "the model the self-consistency baseline samples"),
};
static SECTION(baselines_section, baselines_keys);

/* ---- questions -----------------------------------------------------------
 * The field mapping of question files; left out of the canonical form at
 * its defaults (and so is the section), so older workflows keep their
 * hash. The names match enum questions_ref (pipeline/questions). */

const char *const wf_reference_names[5] = {
    [WORKFLOW_REF_AUTO] = "auto",
    [WORKFLOW_REF_RAW] = "raw",
    [WORKFLOW_REF_GSM8K] = "gsm8k",
    [WORKFLOW_REF_BOXED] = "boxed",
    [WORKFLOW_REF_CHOICE_INDEX] = "choice_index",
};

static const wf_key questions_keys[] = {
    K_STR("id", workflow, questions.id, .flags = WF_F_OMIT_DFLT,
          .doc_default = "`id`",
          .doc = "the field holding the id (a string or an integer), or "
                 "`@line` for the line number"),
    K_STR("question", workflow, questions.question, .flags = WF_F_OMIT_DFLT,
          .doc_default = "`question`", .doc = "the field holding the text"),
    K_STR("answer", workflow, questions.answer, .flags = WF_F_OMIT_DFLT,
          .doc_default = "`answer`", .doc = "the field holding the reference"),
    K_STR("choices", workflow, questions.choices, .flags = WF_F_OMIT_DFLT,
          .doc_default = "none",
          .doc = "a list field rendered into the text as `A. ...` lines"),
    K_STR("tags", workflow, questions.tags, .flags = WF_F_OMIT_DFLT,
          .doc_default = "none",
          .doc = "a string or list field taken as the tags"),
    K_ENUM("reference", workflow, questions.reference, wf_reference_names,
           .flags = WF_F_OMIT_DFLT,
           .doc = "reference extractor: `gsm8k` (after `####`), `boxed` "
                  "(last `\\boxed{}`), `choice_index` (0 -> `A`), `raw`, "
                  "or `auto` (docs/questions.md)"),
};
static SECTION(questions_section, questions_keys);

/* ---- the whole file ---------------------------------------------------- */

static const wf_key root_keys[] = {
    K_NAME("name", workflow, name, REQ,
           .doc = "identifies the workflow in run manifests"),
    K_LONG("version", workflow, version, 1, INT32_MAX, REQ,
           .doc = "your own version number for the workflow"),
    K_U64("seed", workflow, seed,
          .doc = "every per-question, round and seat seed derives from it "
                 "(`nsed run --seed` replaces it)"),
    K_LIST("models", workflow, models, nmodels, wf_model_section,
           workflow_model, 1, WORKFLOW_MAX_MODELS, REQ, .special = WF_SP_MODELS,
           .doc = "the model pool"),
    K_MAP("gateway", gateway_section,
          .doc = "retries, circuit breaker, response cap"),
    K_MAP("broker", broker_section, .check = WF_CK_TEAM_SEATS,
          .doc = "who sits on each question's team"),
    {.key = "teams",
     .type = WF_T_NAMED,
     .flags = WF_F_REQUIRED,
     .sub = &wf_team_section,
     .ilo = 1,
     .ihi = WORKFLOW_MAX_TEAMS,
     .special = WF_SP_TEAMS,
     .doc = "team templates by name"},
    K_MAP("rounds", rounds_section,
          .doc = "round limits, stopping rules, forget gate"),
    K_MAP("scoring", scoring_section, .doc = "vote aggregation"),
    K_MAP("answer", answer_section, .doc = "answer extraction and comparison"),
    K_MAP("prompts", prompts_section, .doc = "prompt templates"),
    K_MAP("baselines", baselines_section, .flags = WF_F_OMIT_DFLT,
          .doc = "baselines computed next to the deliberation"),
    K_MAP("questions", questions_section, .flags = WF_F_OMIT_DFLT,
          .doc = "field mapping of question files (other datasets)"),
};
SECTION(wf_root_section, root_keys);

/* ---- walking the table ------------------------------------------------- */

size_t wf_key_index(const wf_section *s, const char *key)
{
    size_t i;

    for (i = 0; i < s->nkeys; i++)
        if (strcmp(s->keys[i].key, key) == 0)
            break;
    assert(i < s->nkeys);
    return i;
}

void wf_defaults(const wf_section *s, void *base)
{
    for (size_t i = 0; i < s->nkeys; i++) {
        const wf_key *k = &s->keys[i];

        switch (k->type) {
        case WF_T_MAP:
            wf_defaults(k->sub, base);
            break;
        case WF_T_BOOL:
            *WF_FIELD(base, k, bool) = k->dflt != 0;
            break;
        case WF_T_INT:
        case WF_T_ENUM:
            *WF_FIELD(base, k, int) = (int)k->dflt;
            break;
        case WF_T_LONG:
            *WF_FIELD(base, k, long) = (long)k->dflt;
            break;
        case WF_T_I64:
            *WF_FIELD(base, k, int64_t) = (int64_t)k->dflt;
            break;
        case WF_T_SIZE:
            *WF_FIELD(base, k, size_t) = (size_t)k->dflt;
            break;
        case WF_T_U64:
            *WF_FIELD(base, k, uint64_t) = (uint64_t)k->dflt;
            break;
        case WF_T_NUM:
            *WF_FIELD(base, k, double) = k->dflt;
            break;
        case WF_T_ENUM_SET:
            *WF_FIELD(base, k, unsigned) = (unsigned)k->dflt;
            break;
        case WF_T_ENUM_ORDER:
            for (size_t j = 0; j < k->nnames; j++)
                WF_FIELD(base, k, int)[j] = (int)j;
            break;
        case WF_T_LIST:
        case WF_T_NAMED:
        case WF_T_NAME:
        case WF_T_TEXT:
        case WF_T_STR:
        case WF_T_NAME_LIST:
        case WF_T_TEXT_LIST:
            break; /* filled while loading (they allocate) */
        }
    }
}

/* ---- the Markdown key reference ---------------------------------------- */

/* A number as the canonical form prints it: integers in full, others with
 * the fewest digits that read back. */
static void doc_number(double v, char out[40])
{
    if (v == (double)(long long)v && v > -1e15 && v < 1e15) {
        snprintf(out, 40, "%lld", (long long)v);
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(out, 40, "%.*g", prec, v);
        if (strtod(out, NULL) == v)
            return;
    }
}

/* Names as "`a`, `b`" with sep between them. */
static int doc_names(buf *b, const wf_key *k, const char *sep)
{
    int rc = 0;

    for (size_t i = 0; !rc && i < k->nnames; i++)
        rc = buf_printf(b, "%s`%s`", i ? sep : "", k->names[i]);
    return rc;
}

static const char *doc_type(const wf_key *k)
{
    if (k->special == WF_SP_EXTRA_BODY)
        return "mapping";
    switch (k->type) {
    case WF_T_MAP: return "mapping";
    case WF_T_LIST: return "list of mappings";
    case WF_T_NAMED: return "mapping of names to mappings";
    case WF_T_BOOL: return "boolean";
    case WF_T_INT:
    case WF_T_LONG:
    case WF_T_I64:
    case WF_T_SIZE:
    case WF_T_U64: return "integer";
    case WF_T_NUM: return "number";
    case WF_T_ENUM: return "one of";
    case WF_T_ENUM_SET:
    case WF_T_ENUM_ORDER: return "list";
    case WF_T_NAME: return "name";
    case WF_T_TEXT:
    case WF_T_STR: return "string";
    case WF_T_NAME_LIST: return "list of names";
    case WF_T_TEXT_LIST: return "list of strings";
    }
    return "?";
}

static int doc_range(buf *b, const wf_key *k)
{
    char lo[40], hi[40];
    int rc;

    if (k->doc_range)
        return buf_adds(b, k->doc_range);
    if (k->special == WF_SP_PROMPT)
        return wf_prompt_doc((enum wf_prompt_kind)(k - prompt_keys), b);
    switch (k->type) {
    case WF_T_MAP:
    case WF_T_BOOL:
    case WF_T_STR:
        return 0;
    case WF_T_LIST:
    case WF_T_NAMED:
        return buf_printf(b, "%lld..%lld entries", k->ilo, k->ihi);
    case WF_T_INT:
    case WF_T_LONG:
    case WF_T_I64:
    case WF_T_SIZE:
        return buf_printf(b, "%lld..%lld", k->ilo, k->ihi);
    case WF_T_U64:
        return buf_adds(b, "0..18446744073709551615");
    case WF_T_NUM:
        snprintf(lo, sizeof lo, "%g", k->lo);
        snprintf(hi, sizeof hi, "%g", k->hi);
        return buf_printf(b, "%c%s, %s%c",
                          k->flags & WF_F_LO_OPEN ? '(' : '[', lo, hi,
                          k->flags & WF_F_HI_OPEN ? ')' : ']');
    case WF_T_ENUM:
        return doc_names(b, k, " \\| ");
    case WF_T_ENUM_SET:
        rc = buf_adds(b, "distinct, of ");
        return rc ? rc : doc_names(b, k, ", ");
    case WF_T_ENUM_ORDER:
        rc = buf_adds(b, "each of ");
        if (!rc)
            rc = doc_names(b, k, ", ");
        return rc ? rc : buf_adds(b, " once");
    case WF_T_NAME:
        return buf_printf(b, "1..%d of `A-Z a-z 0-9 . _ -`",
                          WORKFLOW_MAX_NAME);
    case WF_T_TEXT:
        return buf_printf(b, "1..%lld bytes, no control characters",
                          k->ihi);
    case WF_T_NAME_LIST:
        return buf_printf(b, "%lld..%lld distinct names", k->ilo, k->ihi);
    case WF_T_TEXT_LIST:
        return buf_printf(b, "%lld..%lld distinct strings of 1..256 bytes",
                          k->ilo, k->ihi);
    }
    return 0;
}

static int doc_default(buf *b, const wf_key *k)
{
    char num[40];
    double v = k->dflt;

    if (k->flags & WF_F_REQUIRED)
        return buf_adds(b, "**required**");
    if (k->doc_default)
        return buf_adds(b, k->doc_default);
    switch (k->type) {
    case WF_T_MAP:
    case WF_T_LIST:
    case WF_T_NAMED:
        return 0;
    case WF_T_BOOL:
        return buf_adds(b, v != 0 ? "`true`" : "`false`");
    case WF_T_INT:
    case WF_T_LONG:
    case WF_T_I64:
    case WF_T_SIZE:
    case WF_T_U64:
    case WF_T_NUM:
        if (((k->flags & WF_F_NULL_ZERO) && v <= 0) ||
            ((k->flags & WF_F_NULL_NEG) && v < 0))
            return buf_adds(b, "none");
        doc_number(v, num);
        return buf_printf(b, "`%s`", num);
    case WF_T_ENUM:
        return buf_printf(b, "`%s`", k->names[(size_t)v]);
    case WF_T_ENUM_SET:
    case WF_T_ENUM_ORDER:
        return 0;
    case WF_T_STR:
        if (k->dflt_str)
            return buf_printf(b, "`\"%s\"`", k->dflt_str);
        return buf_adds(b, "none");
    case WF_T_NAME:
    case WF_T_TEXT:
    case WF_T_NAME_LIST:
    case WF_T_TEXT_LIST:
        return buf_adds(b, "none");
    }
    return 0;
}

/* One row per key of s under the path prefix, then the rows of its
 * sub-sections. */
static int doc_rows(buf *b, const wf_section *s, const char *prefix)
{
    int rc = 0;

    for (size_t i = 0; !rc && i < s->nkeys; i++) {
        const wf_key *k = &s->keys[i];
        char path[192];

        snprintf(path, sizeof path, "%s%s", prefix, k->key);
        rc = buf_printf(b, "| `%s` | %s | ", path, doc_type(k));
        if (!rc)
            rc = doc_default(b, k);
        if (!rc)
            rc = buf_adds(b, " | ");
        if (!rc)
            rc = doc_range(b, k);
        if (!rc)
            rc = buf_printf(b, " | %s |\n", k->doc);
        if (rc || !k->sub)
            continue;
        snprintf(path, sizeof path, "%s%s%s", prefix, k->key,
                 k->type == WF_T_LIST    ? "[]."
                 : k->type == WF_T_NAMED ? ".<name>."
                                         : ".");
        rc = doc_rows(b, k->sub, path);
    }
    return rc;
}

int workflow_keys_markdown(buf *out)
{
    int rc = buf_adds(
        out,
        "<!-- Generated file, do not edit: run `./build/pipeline/workflow/"
        "nsed-workflow-keys > docs/workflow-keys.md` after changing "
        "pipeline/workflow/workflow_keys.c. -->\n"
        "# Workflow keys\n"
        "\n"
        "Every key of a workflow file, in the order of the canonical form "
        "(the order `nsed validate` prints). The loader, the canonical "
        "form and this table are all made from one table, "
        "`pipeline/workflow/workflow_keys.c`, so they cannot disagree. "
        "An absent key takes its default; \"none\" means the value is "
        "not set (the canonical form writes `null`). Ranges in `[ ]` "
        "include the bound, in `( )` exclude it. A name is 1..64 "
        "characters of `A-Z a-z 0-9 . _ -`.\n"
        "\n"
        "| key | type | default | allowed | meaning |\n"
        "|---|---|---|---|---|\n");

    if (!rc)
        rc = doc_rows(out, &wf_root_section, "");
    return rc;
}

/* ---- suggestions ------------------------------------------------------ */

/* "; did you mean \"x\"?" for the closest candidate when it is close
 * enough to be a likely typo, else "". */
const char *wf_suggest(char *out, size_t size, const char *s,
                       const char *const *cands, size_t n)
{
    size_t best = SIZE_MAX;
    const char *c = suggest_closest(s, cands, n, &best);

    out[0] = '\0';
    if (c && best > 0) {
        size_t len = strlen(c);
        size_t limit = len <= 3 ? 1 : len <= 6 ? 2 : 3;

        if (best <= limit && best < strlen(s))
            snprintf(out, size, "; did you mean \"%s\"?", c);
    }
    if (c && best == 0) /* differs only in case */
        snprintf(out, size, "; did you mean \"%s\"?", c);
    return out;
}
