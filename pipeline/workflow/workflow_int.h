/* workflow_int.h -- private interfaces between the workflow loader's files.
 *
 * Not for other modules: include pipeline/workflow.h instead.
 *   workflow_yaml.c    YAML text -> bounded node tree (libyaml events)
 *   workflow.c         node tree -> validated struct workflow
 *   workflow_prompt.c  default prompts, placeholder checks and rendering
 *   workflow_canon.c   canonical JSON, hash, resolved JSON, pretty print
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
int wf_yaml_parse(const char *file, const char *text, size_t len,
                  wf_doc *doc, nsed_err *err);

/* Free every node of doc and reset it. */
void wf_doc_release(wf_doc *doc);

/* The templates of workflow_prompts, in struct order. */
enum wf_prompt_kind {
    WF_PROMPT_SYSTEM,
    WF_PROMPT_PROPOSE,
    WF_PROMPT_REVISE,
    WF_PROMPT_EVALUATE,
    WF_PROMPT_REPAIR,
};
#define WF_PROMPT_COUNT 5

/* Key of the template in the prompts section ("system", ...). */
const char *wf_prompt_key(enum wf_prompt_kind k);

/* Space-separated list of the placeholders allowed in template k, each in
 * braces, e.g. "{question}" (static). */
const char *wf_prompt_allowed_text(enum wf_prompt_kind k);

/* Check a template: every {name} is allowed for kind k, every brace is
 * paired, and the placeholders k requires are present. Returns 0, or
 * NSED_EINVAL with a message (no location) in msg. */
int wf_prompt_check(enum wf_prompt_kind k, const char *tmpl, char *msg,
                    size_t msgsize);

/* The built-in template k for the answer settings a (the propose and
 * revise defaults ask for the final answer in a's extract format).
 * Returns a malloc'd string or NULL when out of memory. */
char *wf_prompt_default(enum wf_prompt_kind k, const workflow_answer *a);

/* Names as written in the file, indexed by enum value (wf_carry_names by
 * the bit position of enum workflow_carry). */
extern const char *const wf_policy_names[2];
extern const char *const wf_objective_names[3];
extern const char *const wf_scheme_names[4];
extern const char *const wf_tie_break_names[WORKFLOW_TIE_BREAK_COUNT];
extern const char *const wf_extract_names[5];
extern const char *const wf_compare_names[4];
extern const char *const wf_carry_names[4];
#define WF_COUNT(table) (sizeof table / sizeof *table)

/* Fill wf->canonical_, hash_ and resolved_json_ from the loaded fields.
 * Returns 0 or NSED_ENOMEM. */
int wf_canon_build(workflow *wf);

#endif
