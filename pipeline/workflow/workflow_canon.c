/* workflow_canon.c -- canonical JSON, workflow hash, resolved JSON and the
 * readable print of a loaded workflow.
 *
 * The JSON is written with jsonw rather than through cJSON so that the key
 * order is the schema's, 64-bit integers stay exact, and every number is
 * printed the same way on every machine: the workflow hash recorded in a
 * run's manifest must not depend on the build. Both the canonical text and
 * the readable print walk the key table (workflow_keys.c), so every key is
 * written in its table order and in the form its entry says.
 */
#include "pipeline/workflow/workflow_int.h"
#include "pipeline/base/jsonw.h"

#include <stdio.h>
#include <stdlib.h>

/* Canonical text grows only from a file of at most 1 MiB plus built-in
 * defaults; escaping can at worst multiply it by six. */
#define CANON_CAP ((size_t)16 << 20)

static const char *name_of(const char *const *names, size_t n, int v)
{
    return v >= 0 && (size_t)v < n ? names[v] : "?";
}

#define NAME_OF(table, v) name_of(table, sizeof table / sizeof *table, (int)(v))

const char *workflow_policy_name(enum workflow_policy p)
{
    return NAME_OF(wf_policy_names, p);
}

const char *workflow_objective_name(enum workflow_objective o)
{
    return NAME_OF(wf_objective_names, o);
}

const char *workflow_scheme_name(enum workflow_scheme s)
{
    return NAME_OF(wf_scheme_names, s);
}

const char *workflow_tie_break_name(enum workflow_tie_break t)
{
    return NAME_OF(wf_tie_break_names, t);
}

const char *workflow_extract_name(enum workflow_extract e)
{
    return NAME_OF(wf_extract_names, e);
}

const char *workflow_compare_name(enum workflow_compare c)
{
    return NAME_OF(wf_compare_names, c);
}

/* An integer or number with "not given" written as null (WF_F_NULL_*). */
static bool not_given(const wf_key *k, double v)
{
    return ((k->flags & WF_F_NULL_ZERO) && v <= 0) ||
           ((k->flags & WF_F_NULL_NEG) && v < 0);
}

static void write_strs(jsonw *w, char *const *v, size_t n)
{
    jsonw_array_begin(w);
    for (size_t i = 0; i < n; i++)
        jsonw_str(w, v[i]);
    jsonw_array_end(w);
}

static void write_section(jsonw *w, const wf_section *s, const void *base);

/* Keys whose value the table alone cannot write; false for the others. */
static bool write_special(jsonw *w, const wf_key *k, const void *base)
{
    switch (k->special) {
    case WF_SP_TEAMS: {
        const workflow *wf = base;

        jsonw_object_begin(w);
        for (size_t t = 0; t < wf->nteams; t++) {
            jsonw_key(w, wf->teams[t].name);
            write_section(w, k->sub, &wf->teams[t]);
        }
        jsonw_object_end(w);
        return true;
    }
    case WF_SP_DEFAULT_TEAM:
        jsonw_str(w, ((const workflow *)base)->broker.default_team->name);
        return true;
    case WF_SP_TIER_TEAM:
        jsonw_str(w, ((const workflow_tier *)base)->team->name);
        return true;
    case WF_SP_TOLERANCE: {
        const workflow_answer *a = &((const workflow *)base)->answer;

        if (a->compare == WORKFLOW_COMPARE_NUMERIC)
            jsonw_num(w, a->tolerance);
        else
            jsonw_null(w);
        return true;
    }
    case WF_SP_EXTRA_BODY: {
        const char *json = ((const workflow_model *)base)->extra_body;

        if (json)
            jsonw_raw(w, json);
        else
            jsonw_null(w);
        return true;
    }
    case WF_SP_OBJECTIVE: {
        const workflow_broker *b = &((const workflow *)base)->broker;
        enum workflow_objective o = b->objective;

        if (b->policy == WORKFLOW_POLICY_FIXED &&
            o == WORKFLOW_OBJECTIVE_ACCURACY)
            o = WORKFLOW_OBJECTIVE_EVIDENCE;
        jsonw_str(w, workflow_objective_name(o));
        return true;
    }
    case WF_SP_NONE:
    case WF_SP_MODELS:
    case WF_SP_ENDPOINT:
    case WF_SP_MODEL:
    case WF_SP_API_KEY_ENV:
    case WF_SP_FAMILY:
    case WF_SP_ROLES:
    case WF_SP_TIERS:
    case WF_SP_PATTERN:
    case WF_SP_FIELD:
    case WF_SP_COMPARE:
    case WF_SP_PROMPT:
        break; /* the value in the field is what is written */
    }
    return false;
}

static void write_value(jsonw *w, const wf_key *k, const void *base)
{
    double d;

    if (write_special(w, k, base))
        return;
    if ((k->flags & WF_F_GIVEN) && !*WF_CAUX(base, k, bool)) {
        jsonw_null(w);
        return;
    }
    switch (k->type) {
    case WF_T_MAP:
        write_section(w, k->sub, base);
        return;
    case WF_T_LIST: {
        const char *items = *WF_CFIELD(base, k, const char *);
        size_t n = *WF_CAUX(base, k, size_t);

        jsonw_array_begin(w);
        for (size_t i = 0; i < n; i++)
            write_section(w, k->sub, items + i * k->item_size);
        jsonw_array_end(w);
        return;
    }
    case WF_T_NAMED:
        break; /* always a special */
    case WF_T_BOOL:
        jsonw_bool(w, *WF_CFIELD(base, k, bool));
        return;
    case WF_T_INT:
        d = *WF_CFIELD(base, k, int);
        if (not_given(k, d))
            jsonw_null(w);
        else
            jsonw_int(w, *WF_CFIELD(base, k, int));
        return;
    case WF_T_LONG:
        d = (double)*WF_CFIELD(base, k, long);
        if (not_given(k, d))
            jsonw_null(w);
        else
            jsonw_int(w, *WF_CFIELD(base, k, long));
        return;
    case WF_T_I64:
        d = (double)*WF_CFIELD(base, k, int64_t);
        if (not_given(k, d))
            jsonw_null(w);
        else
            jsonw_int(w, *WF_CFIELD(base, k, int64_t));
        return;
    case WF_T_SIZE:
        jsonw_uint(w, *WF_CFIELD(base, k, size_t));
        return;
    case WF_T_U64:
        jsonw_uint(w, *WF_CFIELD(base, k, uint64_t));
        return;
    case WF_T_NUM:
        d = *WF_CFIELD(base, k, double);
        if (not_given(k, d))
            jsonw_null(w);
        else
            jsonw_num(w, d);
        return;
    case WF_T_ENUM: {
        int v = *WF_CFIELD(base, k, int);

        jsonw_str(w, v >= 0 && (size_t)v < k->nnames ? k->names[v] : "?");
        return;
    }
    case WF_T_ENUM_SET:
        jsonw_array_begin(w);
        for (size_t i = 0; i < k->nnames; i++)
            if (*WF_CFIELD(base, k, unsigned) & (1u << i))
                jsonw_str(w, k->names[i]);
        jsonw_array_end(w);
        return;
    case WF_T_ENUM_ORDER:
        jsonw_array_begin(w);
        for (size_t i = 0; i < k->nnames; i++) {
            int v = WF_CFIELD(base, k, int)[i];

            jsonw_str(w, v >= 0 && (size_t)v < k->nnames ? k->names[v]
                                                         : "?");
        }
        jsonw_array_end(w);
        return;
    case WF_T_NAME:
    case WF_T_TEXT:
    case WF_T_STR:
        jsonw_str(w, *WF_CFIELD(base, k, char *));
        return;
    case WF_T_NAME_LIST:
    case WF_T_TEXT_LIST:
        write_strs(w, *WF_CFIELD(base, k, char **),
                   *WF_CAUX(base, k, size_t));
        return;
    }
    jsonw_null(w);
}

/* True when key k of base is left out of the canonical form: it has
 * WF_F_OMIT_DFLT and its default (a map: every key of it is left out). */
static bool omitted(const wf_key *k, const void *base)
{
    if (!(k->flags & WF_F_OMIT_DFLT))
        return false;
    switch (k->type) {
    case WF_T_NUM:
        return *WF_CFIELD(base, k, double) == k->dflt;
    case WF_T_BOOL:
        return *WF_CFIELD(base, k, bool) == (k->dflt != 0);
    case WF_T_NAME:
    case WF_T_STR:
        return *WF_CFIELD(base, k, char *) == NULL;
    case WF_T_ENUM:
        return *WF_CFIELD(base, k, int) == (int)k->dflt;
    case WF_T_MAP:
        for (size_t i = 0; i < k->sub->nkeys; i++)
            if (!omitted(&k->sub->keys[i], base))
                return false;
        return true;
    case WF_T_LIST:
    case WF_T_NAMED:
    case WF_T_INT:
    case WF_T_LONG:
    case WF_T_I64:
    case WF_T_SIZE:
    case WF_T_U64:
    case WF_T_ENUM_SET:
    case WF_T_ENUM_ORDER:
    case WF_T_TEXT:
    case WF_T_NAME_LIST:
    case WF_T_TEXT_LIST:
        break;
    }
    return false;
}

static void write_section(jsonw *w, const wf_section *s, const void *base)
{
    jsonw_object_begin(w);
    for (size_t i = 0; i < s->nkeys; i++) {
        const wf_key *k = &s->keys[i];

        /* absent, it is not written: adding the key changed no workflow
         * hash of a file without it */
        if (k->special == WF_SP_EXTRA_BODY &&
            !((const workflow_model *)base)->extra_body)
            continue;
        if (omitted(k, base))
            continue;
        jsonw_key(w, k->key);
        write_value(w, k, base);
    }
    jsonw_object_end(w);
}

static int write_resolved(const workflow *wf, char **out)
{
    jsonw w;

    jsonw_init(&w, CANON_CAP, 0);
    jsonw_object_begin(&w);
    jsonw_key(&w, "models");
    jsonw_object_begin(&w);
    for (size_t i = 0; i < wf->nmodels; i++) {
        jsonw_key(&w, wf->models[i].id);
        jsonw_object_begin(&w);
        jsonw_key(&w, "endpoint");
        jsonw_str(&w, wf->models[i].endpoint);
        jsonw_key(&w, "model");
        jsonw_str(&w, wf->models[i].model);
        jsonw_object_end(&w);
    }
    jsonw_object_end(&w);
    jsonw_object_end(&w);
    return jsonw_finish(&w, out, NULL);
}

/* The normalized config as JSON text (flags: JSONW_INDENT or 0). */
static int write_workflow(const workflow *wf, unsigned flags, char **out,
                          size_t *len)
{
    jsonw w;

    jsonw_init(&w, CANON_CAP, flags);
    write_section(&w, &wf_root_section, wf);
    return jsonw_finish(&w, out, len);
}

int wf_canon_build(workflow *wf)
{
    uint8_t digest[HASH_LEN];
    char *text = NULL;
    size_t len;
    int rc;

    rc = write_workflow(wf, 0, &text, &len);
    if (rc)
        goto out;
    rc = hash_sha256(text, len, digest);
    if (rc)
        goto out;
    rc = write_resolved(wf, &wf->resolved_json_);
    if (rc)
        goto out;
    hash_hex(digest, wf->hash_);
    wf->canonical_ = text;
    text = NULL;
out:
    free(text);
    return rc;
}

const char *workflow_canonical(const workflow *wf)
{
    return wf->canonical_;
}

const char *workflow_hash(const workflow *wf)
{
    return wf->hash_;
}

const char *workflow_resolved_json(const workflow *wf)
{
    return wf->resolved_json_;
}

int workflow_print_normalized(const workflow *wf, FILE *f)
{
    char *text = NULL;
    size_t len;
    int rc;

    rc = write_workflow(wf, JSONW_INDENT, &text, &len);
    if (!rc && (fwrite(text, 1, len, f) != len || fputc('\n', f) == EOF ||
                fflush(f) != 0))
        rc = NSED_EIO;
    free(text);
    return rc;
}
