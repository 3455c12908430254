/* runner_baselines.c -- NSED against each baseline (runner_baselines.h). */
#include "pipeline/runner/runner_baselines.h"

#include "pipeline/base/json.h"
#include "pipeline/base/stats.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The baselines the result record holds as one object with a boolean
 * correctness: the name reported, the object under "baselines", its field,
 * the field an older record has instead (NULL: none), and a boolean of the
 * object that must be true for it to count (NULL: none). One line adds
 * one. */
static const struct bl_kind {
    const char *name, *obj, *field, *old_field, *require;
} bl_kinds[] = {
    {"majority", "majority", "correct", NULL, NULL},
    {"majority_drawn", "majority", "drawn_correct", "correct", NULL},
    /* a self-consistency baseline with a failed sample is left out */
    {"self_consistency", "self_consistency", "correct", NULL, "complete"},
};

runner_baselines *runner_baselines_new(void)
{
    return calloc(1, sizeof(runner_baselines));
}

/* The column of name, added when new; NULL when the table is full or out
 * of memory (the baseline is then not counted). */
static runner_bl_col *col_get(runner_baselines *bl, const char *name)
{
    for (size_t i = 0; i < bl->ncols; i++)
        if (!strcmp(bl->cols[i].name, name))
            return &bl->cols[i];
    if (bl->ncols == RUNNER_BL_MAX)
        return NULL;
    bl->cols[bl->ncols].name = strdup(name);
    if (!bl->cols[bl->ncols].name)
        return NULL;
    return &bl->cols[bl->ncols++];
}

static void pair_add(runner_bl_pair *p, bool nsed, bool base)
{
    if (nsed && base)
        p->a++;
    else if (nsed)
        p->b++;
    else if (base)
        p->c++;
    else
        p->d++;
}

/* Tag indices of res in *idx (up to RUNNER_BL_TAGS, each tag once). */
static size_t tags_of(runner_baselines *bl, const cJSON *res, size_t *idx)
{
    const cJSON *t;
    size_t n = 0;

    cJSON_ArrayForEach(t, cJSON_GetObjectItemCaseSensitive(res, "tags")) {
        size_t i;
        bool dup = false;

        if (!cJSON_IsString(t))
            continue;
        for (i = 0; i < bl->ntags; i++)
            if (!strcmp(bl->tags[i].name, t->valuestring))
                break;
        if (i == bl->ntags) {
            if (bl->ntags == RUNNER_BL_TAGS ||
                !(bl->tags[i].name = strdup(t->valuestring)))
                continue;
            bl->ntags++;
        }
        for (size_t k = 0; k < n; k++)
            dup = dup || idx[k] == i;
        if (!dup)
            idx[n++] = i;
    }
    return n;
}

static void col_add(runner_baselines *bl, const char *name, bool nsed,
                    const cJSON *correct, const size_t *tags, size_t ntags)
{
    runner_bl_col *c;

    if (!cJSON_IsBool(correct) || !(c = col_get(bl, name)))
        return;
    pair_add(&c->all, nsed, cJSON_IsTrue(correct));
    for (size_t k = 0; k < ntags; k++)
        pair_add(&c->tag[tags[k]], nsed, cJSON_IsTrue(correct));
}

void runner_baselines_count(runner_baselines *bl, const cJSON *res)
{
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(res, "baselines");
    const cJSON *maj = cJSON_GetObjectItemCaseSensitive(b, "majority");
    const cJSON *m;
    bool nsed = json_bool(res, "correct", false);
    size_t tags[RUNNER_BL_TAGS], ntags = tags_of(bl, res, tags);

    bl->n++;
    bl->nsed_correct += nsed;
    for (size_t k = 0; k < ntags; k++) {
        bl->tags[tags[k]].n++;
        bl->tags[tags[k]].nsed_correct += nsed;
    }
    if (maj && !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(maj, "answer")))
        bl->no_majority++;
    bl->ties += json_bool(maj, "tie", false);
    for (size_t i = 0; i < sizeof bl_kinds / sizeof bl_kinds[0]; i++) {
        const struct bl_kind *k = &bl_kinds[i];
        const cJSON *o = cJSON_GetObjectItemCaseSensitive(b, k->obj);
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k->field);

        if (!v && k->old_field)
            v = cJSON_GetObjectItemCaseSensitive(o, k->old_field);
        if (k->require && !json_bool(o, k->require, false))
            continue;
        col_add(bl, k->name, nsed, v, tags, ntags);
    }
    cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(b, "models")) {
        const char *id = json_str(m, "model", NULL);
        char name[512];

        if (!id)
            continue;
        snprintf(name, sizeof name, "model:%s", id);
        col_add(bl, name, nsed, cJSON_GetObjectItemCaseSensitive(m, "correct"),
                tags, ntags);
    }
}

void runner_baselines_compare(const runner_bl_pair *p, runner_bl_cmp *out)
{
    size_t n = p->a + p->b + p->c + p->d;

    *out = (runner_bl_cmp){.n = n};
    if (n) {
        out->nsed_acc = (double)(p->a + p->b) / (double)n;
        out->base_acc = (double)(p->a + p->c) / (double)n;
    }
    stats_newcombe_paired(p->a, p->b, p->c, p->d, STATS_Z95, &out->diff,
                          &out->lo, &out->hi);
    out->p = stats_mcnemar_exact_p(p->b, p->c);
}

static bool add_num(cJSON *o, const char *key, double v)
{
    return cJSON_AddNumberToObject(o, key, v) != NULL;
}

static int comparisons_json(const runner_baselines *bl, cJSON *o)
{
    cJSON *arr = cJSON_AddArrayToObject(o, "comparisons");

    if (!arr)
        return NSED_ENOMEM;
    for (size_t i = 0; i < bl->ncols; i++) {
        const runner_bl_pair *p = &bl->cols[i].all;
        runner_bl_cmp c;
        cJSON *e = cJSON_CreateObject();

        if (!e)
            return NSED_ENOMEM;
        cJSON_AddItemToArray(arr, e);
        runner_baselines_compare(p, &c);
        if (!cJSON_AddStringToObject(e, "baseline", bl->cols[i].name) ||
            !add_num(e, "n", (double)c.n) ||
            !add_num(e, "nsed_correct", (double)(p->a + p->b)) ||
            !add_num(e, "baseline_correct", (double)(p->a + p->c)) ||
            !add_num(e, "nsed_only", (double)p->b) ||
            !add_num(e, "baseline_only", (double)p->c) ||
            !add_num(e, "diff", c.diff) || !add_num(e, "ci95_lo", c.lo) ||
            !add_num(e, "ci95_hi", c.hi) || !add_num(e, "mcnemar_p", c.p))
            return NSED_ENOMEM;
    }
    return 0;
}

static int tags_json(const runner_baselines *bl, cJSON *o)
{
    cJSON *tags = cJSON_AddObjectToObject(o, "tags");

    if (!tags)
        return NSED_ENOMEM;
    for (size_t t = 0; t < bl->ntags; t++) {
        cJSON *e = cJSON_AddObjectToObject(tags, bl->tags[t].name), *bs;

        if (!e || !add_num(e, "n", (double)bl->tags[t].n) ||
            !add_num(e, "nsed_correct", (double)bl->tags[t].nsed_correct) ||
            !(bs = cJSON_AddObjectToObject(e, "baselines")))
            return NSED_ENOMEM;
        for (size_t i = 0; i < bl->ncols; i++) {
            const runner_bl_pair *p = &bl->cols[i].tag[t];
            cJSON *c = cJSON_AddObjectToObject(bs, bl->cols[i].name);

            if (!c || !add_num(c, "n", (double)(p->a + p->b + p->c + p->d)) ||
                !add_num(c, "correct", (double)(p->a + p->c)))
                return NSED_ENOMEM;
        }
    }
    return 0;
}

int runner_baselines_json(const runner_baselines *bl, cJSON *o)
{
    cJSON *b = cJSON_AddObjectToObject(o, "baselines");

    if (!b || !add_num(b, "n", (double)bl->n) ||
        !add_num(b, "nsed_correct", (double)bl->nsed_correct) ||
        !add_num(b, "no_majority", (double)bl->no_majority) ||
        !add_num(b, "majority_ties", (double)bl->ties) ||
        !cJSON_AddStringToObject(b, "interval", "newcombe-hybrid-score-95") ||
        !cJSON_AddStringToObject(b, "test", "mcnemar-exact"))
        return NSED_ENOMEM;
    if (comparisons_json(bl, b) || tags_json(bl, b))
        return NSED_ENOMEM;
    return 0;
}

void runner_baselines_free(runner_baselines *bl)
{
    if (!bl)
        return;
    for (size_t i = 0; i < bl->ncols; i++)
        free(bl->cols[i].name);
    for (size_t i = 0; i < bl->ntags; i++)
        free(bl->tags[i].name);
    free(bl);
}
