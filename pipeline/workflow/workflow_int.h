/* workflow_int.h -- private interfaces between the workflow loader's files.
 *
 * Not for other modules: include pipeline/workflow/workflow.h instead.
 *   workflow_yaml.c    YAML text -> bounded node tree (libyaml events)
 *   workflow.c         node tree -> validated struct workflow
 *   workflow_prompt.c  default prompts, placeholder checks and rendering
 *   workflow_keys.c    the key table: every key, its type, range and default,
 *                      and the Markdown key reference made from it
 *   workflow_canon.c   canonical JSON, hash, resolved JSON, pretty print
 *   workflow_override.c  --set KEY=VALUE applied to the node tree
 */
#ifndef NSED_WORKFLOW_INT_H
#define NSED_WORKFLOW_INT_H

#include "pipeline/workflow/workflow.h"

enum wf_node_kind { WF_NODE_SCALAR, WF_NODE_SEQ, WF_NODE_MAP };

/* One YAML node. An alias is not a node of its own: the collection that
 * holds it points at the anchored node, so a node may have several parents
 * and is owned by the wf_doc's arena, never by a parent. */
typedef struct wf_node {
    enum wf_node_kind kind;
    size_t line, col;      /* 1-based start of the node */
    char *str;             /* scalar value, NUL-terminated (scalars only) */
    size_t len;            /* bytes in str */
    bool plain;            /* plain (unquoted, not block) scalar */
    struct wf_node **items; /* seq: n items; map: n pairs as key, value */
    size_t n;
    size_t alloc;          /* slots allocated in items */
    size_t expanded;       /* nodes in this subtree, aliases expanded */
    const char *origin;    /* "--set KEY" for a node an override made (owned
                              by the wf_doc), NULL for a node of the file */
} wf_node;

typedef struct wf_doc {
    wf_node *root;   /* never NULL after a successful parse */
    wf_node **all;   /* arena: every node, freed by wf_doc_release */
    size_t nall;
    size_t allocall;
} wf_doc;

/* Parse one YAML document from text into doc, enforcing the limits of
 * workflow.h (aliases, nodes, depth) and rejecting tags, several documents
 * and an empty stream. file names the input in messages. Returns 0 or
 * NSED_EINVAL / NSED_ETOOBIG / NSED_ENOMEM with err filled; doc is empty
 * on failure. */
NSED_MUST_CHECK int wf_yaml_parse(const char *file, const char *text,
                                  size_t len, wf_doc *doc, nsed_err *err);

/* Free every node of doc and reset it. */
void wf_doc_release(wf_doc *doc);

/* Apply the overrides ov[0..n) ("KEY=VALUE" as given to --set, in order:
 * a later one for the same key wins) to doc's tree (workflow_override.c).
 * Every node an override adds or changes is owned by doc and carries
 * origin "--set KEY"; collections on the way are copied first, so a
 * node the file shares through an alias keeps its value elsewhere.
 * Returns 0, or NSED_EINVAL (a malformed override, an unknown key with
 * a suggestion, a path through a list item that does not exist) /
 * NSED_ETOOBIG / NSED_ENOMEM with err filled as "--set KEY: message". */
NSED_MUST_CHECK int wf_overrides_apply(wf_doc *doc, const char *const *ov,
                                       size_t n, nsed_err *err);

/* "; did you mean \"x\"?" (at most size bytes into out) naming the
 * candidate closest to s when it is a likely typo, else "". Returns out. */
const char *wf_suggest(char *out, size_t size, const char *s,
                       const char *const *cands, size_t n);

/* The templates of workflow_prompts, in struct order. */
enum wf_prompt_kind {
    WF_PROMPT_SYSTEM,
    WF_PROMPT_PROPOSE,
    WF_PROMPT_REVISE,
    WF_PROMPT_EVALUATE,
    WF_PROMPT_REPAIR,
};
#define WF_PROMPT_COUNT 5

/* Space-separated list of the placeholders allowed in template k, each in
 * braces, e.g. "{question}" (static). */
const char *wf_prompt_allowed_text(enum wf_prompt_kind k);

/* Append the docs' description of template k's placeholders ("placeholders
 * {question}; must contain {question}") to out. Returns 0 or the buf_add
 * codes. */
NSED_MUST_CHECK int wf_prompt_doc(enum wf_prompt_kind k, buf *out);

/* Check a template: every {name} is allowed for kind k, every brace is
 * paired, and the placeholders k requires are present. key is the
 * template's key in the prompts section ("system", ...: the key table owns
 * the names), for the message. Returns 0, or NSED_EINVAL with a message (no
 * location) in msg. */
NSED_MUST_CHECK int wf_prompt_check(enum wf_prompt_kind k, const char *key,
                                    const char *tmpl, char *msg,
                                    size_t msgsize);

/* The built-in template k for the answer settings a (the propose and
 * revise defaults ask for the final answer in a's extract format).
 * Returns a malloc'd string or NULL when out of memory. */
NSED_MUST_CHECK char *wf_prompt_default(enum wf_prompt_kind k,
                                        const workflow_answer *a);

/* Names as written in the file, indexed by enum value (wf_carry_names by
 * the bit position of enum workflow_carry). */
extern const char *const wf_policy_names[2];
extern const char *const wf_objective_names[4];
extern const char *const wf_scheme_names[4];
extern const char *const wf_order_names[2];
extern const char *const wf_tie_break_names[WORKFLOW_TIE_BREAK_COUNT];
extern const char *const wf_extract_names[5];
extern const char *const wf_reference_names[5];
extern const char *const wf_compare_names[4];
extern const char *const wf_carry_names[4];
#define WF_COUNT(table) (sizeof table / sizeof *table)

/* ---- the key table (workflow_keys.c) -----------------------------------
 *
 * Every key of the format is one wf_key in the table of its section, in
 * the schema's order: the order of the canonical form, of the docs table
 * and of the "did you mean" candidates. A key says where its value lives
 * (an offset into the struct its section fills), how it is parsed (type,
 * range, names), its default and how the canonical form writes it; the
 * loader (workflow.c), the writer (workflow_canon.c) and the Markdown key
 * reference all walk these tables. Keys whose loading needs more than the
 * table says (references, interpolation, conditions between keys) name a
 * hand-written step in `special`; checks across keys name one in `check`.
 */

enum wf_type {
    WF_T_MAP,        /* a mapping of the keys of sub, same base struct */
    WF_T_LIST,       /* a list of mappings of sub: array at off, count at
                        aux_off, item_size bytes per item */
    WF_T_NAMED,      /* a mapping from names to mappings of sub */
    WF_T_BOOL,       /* bool */
    WF_T_INT,        /* int in ilo..ihi */
    WF_T_LONG,       /* long in ilo..ihi */
    WF_T_I64,        /* int64_t in ilo..ihi */
    WF_T_SIZE,       /* size_t in ilo..ihi */
    WF_T_U64,        /* uint64_t, any */
    WF_T_NUM,        /* double in lo..hi (WF_F_LO_OPEN / WF_F_HI_OPEN) */
    WF_T_ENUM,       /* an enum (int-sized), one of names */
    WF_T_ENUM_SET,   /* unsigned bit set: distinct names, bit i = names[i] */
    WF_T_ENUM_ORDER, /* an array of nnames enums: each name exactly once */
    WF_T_NAME,       /* char *, 1..WORKFLOW_MAX_NAME of [A-Za-z0-9._-] */
    WF_T_TEXT,       /* char *, 1..ihi bytes without control characters */
    WF_T_STR,        /* char *, any string; default dflt_str */
    WF_T_NAME_LIST,  /* char ** at off, count at aux_off: ilo..ihi
                        distinct names */
    WF_T_TEXT_LIST,  /* same, distinct texts of 1..256 bytes */
};

enum {
    WF_F_REQUIRED = 1 << 0,  /* missing is an error */
    WF_F_LO_OPEN = 1 << 1,   /* WF_T_NUM: lo itself is out of range */
    WF_F_HI_OPEN = 1 << 2,   /* WF_T_NUM: hi itself is out of range */
    WF_F_NULL_ZERO = 1 << 3, /* written as null when <= 0 (not given) */
    WF_F_NULL_NEG = 1 << 4,  /* written as null when < 0 (not given) */
    WF_F_GIVEN = 1 << 5,     /* the bool at aux_off says whether the key
                                was given; written as null when not. A
                                WF_T_MAP's defaults then apply only when
                                it is given */
    WF_F_OMIT_DFLT = 1 << 6, /* WF_T_NUM, WF_T_BOOL, WF_T_ENUM: left out
                                of the canonical form while it has its
                                default, WF_T_NAME while NULL, WF_T_MAP
                                while every key of it is left out; so a
                                key added later changes no hash of a file
                                without it */
};

/* Hand-written loading steps (workflow.c) and writing steps
 * (workflow_canon.c) of keys the table cannot describe alone. */
enum wf_special {
    WF_SP_NONE,
    WF_SP_MODELS,       /* models: the list, model ids indexed */
    WF_SP_ENDPOINT,     /* models[].endpoint: interpolated URL */
    WF_SP_MODEL,        /* models[].model: interpolated name */
    WF_SP_API_KEY_ENV,  /* models[].api_key_env: never echoed */
    WF_SP_FAMILY,       /* models[].family: defaults to the id */
    WF_SP_TEAMS,        /* teams: the named mapping, sorted by name */
    WF_SP_ROLES,        /* teams.<name>.roles: the list, seats counted */
    WF_SP_DEFAULT_TEAM, /* broker.default_team: a team reference */
    WF_SP_TIERS,        /* broker.tiers: the list */
    WF_SP_TIER_TEAM,    /* broker.tiers[].team: a team reference */
    WF_SP_PATTERN,      /* answer.pattern: only with extract: regex */
    WF_SP_FIELD,        /* answer.field: only with extract: json_field */
    WF_SP_COMPARE,      /* answer.compare: default from extract */
    WF_SP_TOLERANCE,    /* answer.tolerance: only with compare: numeric */
    WF_SP_PROMPT,       /* prompts.*: default from answer, placeholders */
    WF_SP_EXTRA_BODY,   /* models[].extra_body: any mapping, kept as JSON
                           text; left out of the canonical form when
                           absent */
    WF_SP_OBJECTIVE,    /* broker.objective: under policy fixed, where it
                           does not act, its default is written as the
                           old default "evidence" (hashes kept) */
};

/* Checks across keys, run after a key (wf_key.check) or after a whole
 * section (wf_section.check) has loaded. */
enum wf_check {
    WF_CK_NONE,
    WF_CK_MODEL_ID,    /* model ids are unique */
    WF_CK_ROLE_NAME,   /* role names are unique within a team */
    WF_CK_ROLE_MODELS, /* a role names models or families; resolve them */
    WF_CK_RETRY,       /* retry.max_delay_ms >= base_delay_ms */
    WF_CK_TEAM_SIZE,   /* team_size.max >= min */
    WF_CK_FAMILY_CAP,  /* max_per_family's default follows the policy */
    WF_CK_ROUNDS,      /* rounds.max >= min */
    WF_CK_TEAM_SEATS,  /* every team can be filled under broker's rules */
    WF_CK_SC_MODEL,    /* baselines.self_consistency_model names a
                          model; resolve its index */
};

struct wf_section;

typedef struct wf_key {
    const char *key;
    enum wf_type type;
    unsigned flags;          /* WF_F_* */
    size_t off;              /* the value in the section's base struct */
    size_t aux_off;          /* list count, or the WF_F_GIVEN bool */
    long long ilo, ihi;      /* integer range, list lengths, text bytes */
    double lo, hi;           /* WF_T_NUM range */
    double dflt;             /* default of a number, bool, enum, set */
    const char *dflt_str;    /* default of a WF_T_STR (NULL: none) */
    const char *const *names; /* enum names */
    size_t nnames;
    const struct wf_section *sub; /* MAP, LIST, NAMED */
    size_t item_size;        /* LIST */
    enum wf_special special;
    enum wf_check check;
    const char *doc_default; /* docs: default when not derivable, or NULL */
    const char *doc_range;   /* docs: range when not derivable, or NULL */
    const char *doc;         /* docs: what the key means, one line */
} wf_key;

typedef struct wf_section {
    const wf_key *keys;
    size_t nkeys;
    enum wf_check check;     /* after all keys (WF_CK_NONE: none) */
} wf_section;

/* The whole file (base struct: workflow) and the list items (base
 * structs: workflow_model, workflow_team, workflow_role, workflow_tier). */
extern const wf_section wf_root_section;
extern const wf_section wf_model_section;
extern const wf_section wf_team_section;
extern const wf_section wf_role_section;
extern const wf_section wf_tier_section;

/* Index of key in s (s must hold it: a typo is an internal bug). */
size_t wf_key_index(const wf_section *s, const char *key);

/* Set every default of s that needs no allocation in base: numbers,
 * bools, enums, sets and orders, recursing into maps (not into lists, and
 * not into WF_F_GIVEN maps, whose defaults apply when they are given). */
void wf_defaults(const wf_section *s, void *base);

/* The field of key k in base. */
#define WF_FIELD(base, k, type) ((type *)(void *)((char *)(base) + (k)->off))
#define WF_AUX(base, k, type) ((type *)(void *)((char *)(base) + (k)->aux_off))
#define WF_CFIELD(base, k, type) \
    ((type const *)(const void *)((const char *)(base) + (k)->off))
#define WF_CAUX(base, k, type) \
    ((type const *)(const void *)((const char *)(base) + (k)->aux_off))

/* Fill wf->canonical_, hash_ and resolved_json_ from the loaded fields.
 * Returns 0 or NSED_ENOMEM. */
NSED_MUST_CHECK int wf_canon_build(workflow *wf);

#endif
