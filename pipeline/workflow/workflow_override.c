/* workflow_override.c -- `--set KEY=VALUE` applied to the parsed tree.
 *
 * An override edits the node tree of the file before the loader sees it,
 * so the loader validates an overridden value exactly as if the file held
 * it (same types, ranges, checks across keys, same messages) and the
 * canonical form, hence the hash, is that of the edited file. The key path
 * is checked against the key table as it is walked, so a typo gets the
 * same "did you mean" as in the file. Nodes an override makes carry the
 * origin "--set KEY", which the loader's messages name instead of a
 * file:line.
 *
 * Paths: names separated by dots; a list item by [index] (models[0]) or by
 * its id / name (models.alpha, teams.main.roles.solver); teams by name,
 * where a new name adds a team. extra_body takes any keys below it.
 */
#include "pipeline/workflow/workflow_int.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OV_MAX_KEY 256 /* bytes in KEY */
#define OV_MAX_SEGS 32 /* segments in KEY */
#define OV_HINT 192

/* What the path names at a step. */
enum ov_at {
    OV_SECTION, /* a mapping of the keys of a section */
    OV_LIST,    /* a list of mappings of a section */
    OV_NAMED,   /* a mapping from names to mappings of a section */
    OV_FREE,    /* any mapping (extra_body) */
    OV_LEAF,    /* a value: nothing may follow */
};

typedef struct ov_seg {
    char name[OV_MAX_KEY]; /* "" for an index */
    bool is_index;
    size_t index;
} ov_seg;

typedef struct ov {
    wf_doc *doc;
    nsed_err *err;
    const char *origin; /* "--set KEY", owned by doc */
    char key[OV_MAX_KEY];
} ov;

static int ov_fail(ov *o, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int ov_fail(ov *o, int code, const char *fmt, ...)
{
    char msg[NSED_ERR_MSG_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return nsed_error(o->err, code, "--set %s: %s", o->key, msg);
}

/* A new node in doc's arena (freed by wf_doc_release). */
static wf_node *node_new(wf_doc *d, enum wf_node_kind kind, const char *origin)
{
    wf_node *n;

    if (d->nall == d->allocall) {
        size_t na = d->allocall ? d->allocall * 2 : 64;
        wf_node **p = realloc(d->all, na * sizeof *p);

        if (!p)
            return NULL;
        d->all = p;
        d->allocall = na;
    }
    n = calloc(1, sizeof *n);
    if (!n)
        return NULL;
    n->kind = kind;
    n->expanded = 1;
    n->origin = origin;
    d->all[d->nall++] = n;
    return n;
}

static wf_node *scalar_new(wf_doc *d, const char *s, bool plain,
                           const char *origin)
{
    wf_node *n = node_new(d, WF_NODE_SCALAR, origin);

    if (!n || !(n->str = strdup(s)))
        return NULL;
    n->len = strlen(s);
    n->plain = plain;
    return n;
}

/* A copy of collection n with its own items array, so changing it leaves
 * every other parent of n (an alias) as the file wrote it. */
static wf_node *copy_new(wf_doc *d, const wf_node *n)
{
    wf_node *c = node_new(d, n->kind, n->origin);
    size_t slots = n->kind == WF_NODE_MAP ? 2 * n->n : n->n;

    if (!c)
        return NULL;
    c->line = n->line;
    c->col = n->col;
    c->plain = n->plain;
    c->n = n->n;
    c->expanded = n->expanded;
    c->alloc = slots + 2;
    c->items = calloc(c->alloc, sizeof *c->items);
    if (!c->items)
        return NULL;
    if (slots)
        memcpy(c->items, n->items, slots * sizeof *c->items);
    return c;
}

/* Move every node of src into dst's arena; src ends empty. */
static int adopt(wf_doc *dst, wf_doc *src)
{
    if (dst->nall + src->nall > dst->allocall) {
        size_t na = dst->nall + src->nall + 64;
        wf_node **p = realloc(dst->all, na * sizeof *p);

        if (!p)
            return NSED_ENOMEM;
        dst->all = p;
        dst->allocall = na;
    }
    memcpy(dst->all + dst->nall, src->all, src->nall * sizeof *src->all);
    dst->nall += src->nall;
    free(src->all);
    src->all = NULL;
    src->nall = src->allocall = 0;
    src->root = NULL;
    return 0;
}

/* KEY into segments: name(.name | [index])*. */
static int split_key(ov *o, ov_seg *segs, size_t *nsegs)
{
    const char *p = o->key;
    size_t n = 0;

    if (!*p)
        return ov_fail(o, NSED_EINVAL, "empty key; expected KEY=VALUE");
    while (*p) {
        ov_seg *s;

        if (n == OV_MAX_SEGS)
            return ov_fail(o, NSED_EINVAL, "more than %d parts in the key",
                           OV_MAX_SEGS);
        s = &segs[n];
        memset(s, 0, sizeof *s);
        if (*p == '[') {
            char *end;

            if (!isdigit((unsigned char)p[1]))
                return ov_fail(o, NSED_EINVAL,
                               "expected a list index in "
                               "[...]");
            s->index = strtoul(p + 1, &end, 10);
            if (*end != ']')
                return ov_fail(o, NSED_EINVAL, "expected ] after the index");
            s->is_index = true;
            p = end + 1;
        } else {
            size_t len = strcspn(p, ".[");

            if (len == 0)
                return ov_fail(o, NSED_EINVAL, "empty key part");
            memcpy(s->name, p, len);
            s->name[len] = '\0';
            p += len;
        }
        n++;
        if (*p == '.') {
            p++;
            if (!*p)
                return ov_fail(o, NSED_EINVAL, "key ends with \".\"");
        } else if (*p && *p != '[') {
            return ov_fail(o, NSED_EINVAL,
                           "expected \".\" or \"[\" after "
                           "\"]\"");
        }
    }
    *nsegs = n;
    return 0;
}

/* The value of key name in map n as a slot (NULL when absent). */
static wf_node **map_slot(wf_node *n, const char *name)
{
    for (size_t i = 0; i < n->n; i++) {
        const wf_node *k = n->items[2 * i];

        if (k->kind == WF_NODE_SCALAR && strcmp(k->str, name) == 0)
            return &n->items[2 * i + 1];
    }
    return NULL;
}

/* Make *slot a mapping of its own (copied, or new when absent or null). */
static int own_map(ov *o, wf_node **slot, const char *where)
{
    wf_node *n = *slot;

    if (n && n->kind == WF_NODE_SCALAR && n->plain &&
        (n->len == 0 || strcmp(n->str, "~") == 0 ||
         strcmp(n->str, "null") == 0))
        n = NULL;
    if (n && n->kind != WF_NODE_MAP)
        return ov_fail(o, NSED_EINVAL, "%s is not a mapping in the file",
                       where);
    n = n ? copy_new(o->doc, n) : node_new(o->doc, WF_NODE_MAP, o->origin);
    if (!n)
        return ov_fail(o, NSED_ENOMEM, "out of memory");
    if (!n->items) {
        n->alloc = 2;
        n->items = calloc(n->alloc, sizeof *n->items);
        if (!n->items)
            return ov_fail(o, NSED_ENOMEM, "out of memory");
    }
    *slot = n;
    return 0;
}

/* The slot of key name in the mapping *slot, added (value NULL) when the
 * mapping lacks it. */
static int key_slot(ov *o, wf_node *map, const char *name, wf_node ***out)
{
    wf_node **v = map_slot(map, name);
    wf_node *k;

    if (v) {
        *out = v;
        return 0;
    }
    if (2 * map->n + 2 > map->alloc) {
        size_t na = 2 * map->n + 8;
        wf_node **p = realloc(map->items, na * sizeof *p);

        if (!p)
            return ov_fail(o, NSED_ENOMEM, "out of memory");
        map->items = p;
        map->alloc = na;
    }
    k = scalar_new(o->doc, name, true, o->origin);
    if (!k)
        return ov_fail(o, NSED_ENOMEM, "out of memory");
    map->items[2 * map->n] = k;
    map->items[2 * map->n + 1] = NULL;
    *out = &map->items[2 * map->n + 1];
    map->n++;
    return 0;
}

/* The item of list n whose id (or name) is name, or SIZE_MAX. */
static size_t item_by_id(const wf_node *n, const char *name)
{
    for (size_t i = 0; i < n->n; i++) {
        wf_node *it = n->items[i];
        wf_node **v;

        if (it->kind != WF_NODE_MAP)
            continue;
        v = map_slot(it, "id");
        if (!v)
            v = map_slot(it, "name");
        if (v && *v && (*v)->kind == WF_NODE_SCALAR &&
            strcmp((*v)->str, name) == 0)
            return i;
    }
    return SIZE_MAX;
}

/* What key k's value is for the path. */
static enum ov_at at_of(const wf_key *k)
{
    if (k->special == WF_SP_EXTRA_BODY)
        return OV_FREE;
    switch (k->type) {
    case WF_T_MAP:
        return OV_SECTION;
    case WF_T_LIST:
        return OV_LIST;
    case WF_T_NAMED:
        return OV_NAMED;
    case WF_T_BOOL:
    case WF_T_INT:
    case WF_T_LONG:
    case WF_T_I64:
    case WF_T_SIZE:
    case WF_T_U64:
    case WF_T_NUM:
    case WF_T_ENUM:
    case WF_T_ENUM_SET:
    case WF_T_ENUM_ORDER:
    case WF_T_NAME:
    case WF_T_TEXT:
    case WF_T_STR:
    case WF_T_NAME_LIST:
    case WF_T_TEXT_LIST:
        break;
    }
    return OV_LEAF;
}

/* The parsed VALUE (an empty VALUE is an empty value, as `key:` is). */
static int parse_value(ov *o, const char *value, wf_node **out)
{
    wf_doc vd = {0};
    int rc;

    if (!*value) {
        *out = scalar_new(o->doc, "", true, o->origin);
        return *out ? 0 : ov_fail(o, NSED_ENOMEM, "out of memory");
    }
    rc = wf_yaml_parse(o->origin, value, strlen(value), &vd, o->err);
    if (rc)
        return rc;
    for (size_t i = 0; i < vd.nall; i++) {
        vd.all[i]->origin = o->origin;
        vd.all[i]->line = vd.all[i]->col = 0;
    }
    *out = vd.root;
    rc = adopt(o->doc, &vd);
    wf_doc_release(&vd);
    if (rc)
        return ov_fail(o, rc, "out of memory");
    return 0;
}

/* Where walked so far, for messages: "models[0].sampling". */
static void where_add(char *w, size_t size, const ov_seg *s)
{
    size_t n = strlen(w), len;
    char idx[32];
    const char *add = s->name;

    if (s->is_index) {
        snprintf(idx, sizeof idx, "[%zu]", s->index);
        add = idx;
    } else if (n && n + 1 < size) {
        w[n++] = '.';
    }
    len = strlen(add);
    if (len > size - 1 - n)
        len = size - 1 - n;
    memcpy(w + n, add, len);
    w[n + len] = '\0';
}

static int apply_one(ov *o, const char *text)
{
    ov_seg segs[OV_MAX_SEGS];
    const wf_section *sec = &wf_root_section;
    const char *eq = strchr(text, '=');
    enum ov_at at = OV_SECTION;
    wf_node **slot = &o->doc->root;
    char where[OV_MAX_KEY + 32] = "", hint[OV_HINT];
    size_t nsegs = 0, klen;
    wf_node *value = NULL, *origin_node;
    char origin[OV_MAX_KEY + 8];
    int rc;

    klen = eq ? (size_t)(eq - text) : strlen(text);
    if (klen >= OV_MAX_KEY)
        klen = OV_MAX_KEY - 1;
    memcpy(o->key, text, klen);
    o->key[klen] = '\0';
    if (!eq)
        return ov_fail(o, NSED_EINVAL, "expected KEY=VALUE (no \"=\")");
    if ((size_t)(eq - text) >= OV_MAX_KEY)
        return ov_fail(o, NSED_EINVAL, "key longer than %d bytes",
                       OV_MAX_KEY - 1);
    /* The origin text lives in an unattached node, so the doc frees it. */
    snprintf(origin, sizeof origin, "--set %s", o->key);
    origin_node = scalar_new(o->doc, origin, false, NULL);
    if (!origin_node)
        return ov_fail(o, NSED_ENOMEM, "out of memory");
    o->origin = origin_node->str;
    rc = split_key(o, segs, &nsegs);
    if (rc)
        return rc;
    rc = parse_value(o, eq + 1, &value);
    if (rc)
        return rc;
    for (size_t i = 0; i < nsegs; i++) {
        const ov_seg *s = &segs[i];
        const char *here = where[0] ? where : "the top level";

        switch (at) {
        case OV_LEAF:
            return ov_fail(o, NSED_EINVAL,
                           "%s takes a value, it has no "
                           "keys below it",
                           where);
        case OV_SECTION:
        case OV_FREE:
        case OV_NAMED: {
            const wf_key *k = NULL;

            if (s->is_index)
                return ov_fail(o, NSED_EINVAL, "%s is a mapping, not a list",
                               here);
            if (at == OV_SECTION) {
                const char *names[64];
                size_t nn = sec->nkeys < 64 ? sec->nkeys : 64;

                for (size_t j = 0; j < sec->nkeys; j++)
                    if (strcmp(sec->keys[j].key, s->name) == 0)
                        k = &sec->keys[j];
                if (!k) {
                    for (size_t j = 0; j < nn; j++)
                        names[j] = sec->keys[j].key;
                    return ov_fail(o, NSED_EINVAL, "unknown key \"%s\" in %s%s",
                                   s->name, here,
                                   wf_suggest(hint, sizeof hint, s->name, names,
                                              nn));
                }
            }
            rc = own_map(o, slot, here);
            if (!rc)
                rc = key_slot(o, *slot, s->name, &slot);
            if (rc)
                return rc;
            if (at == OV_SECTION) {
                at = at_of(k);
                sec = k->sub;
            } else if (at == OV_NAMED) {
                at = OV_SECTION;
            }
            break;
        }
        case OV_LIST: {
            wf_node *list = *slot;
            size_t idx;

            if (!list || list->kind != WF_NODE_SEQ)
                return ov_fail(o, NSED_EINVAL,
                               "%s is not a list in the file; "
                               "set it whole (--set %s=[...])",
                               where, where);
            idx = s->is_index ? s->index : item_by_id(list, s->name);
            if (s->is_index && idx >= list->n)
                return ov_fail(o, NSED_EINVAL, "%s has %zu items (index %zu)",
                               where, list->n, idx);
            if (idx == SIZE_MAX)
                return ov_fail(o, NSED_EINVAL,
                               "%s has no item with id or "
                               "name \"%s\"",
                               where, s->name);
            list = copy_new(o->doc, list);
            if (!list)
                return ov_fail(o, NSED_ENOMEM, "out of memory");
            *slot = list;
            slot = &list->items[idx];
            at = OV_SECTION;
            break;
        }
        }
        where_add(where, sizeof where, s);
    }
    *slot = value;
    return 0;
}

int wf_overrides_apply(wf_doc *doc, const char *const *ovs, size_t n,
                       nsed_err *err)
{
    ov o = {.doc = doc, .err = err};
    int rc = 0;

    for (size_t i = 0; !rc && i < n; i++)
        rc = apply_one(&o, ovs[i]);
    return rc;
}
