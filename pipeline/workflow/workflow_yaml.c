/* workflow_yaml.c -- YAML text -> bounded node tree.
 *
 * libyaml's event parser drives a small tree builder instead of its
 * document loader, because the loader neither reports duplicate keys nor
 * lets us stop an alias bomb early: here every alias use is counted and
 * every node's size with aliases expanded is known when it is closed, so
 * a hostile file fails after reading it once, in linear time.
 */
#include "pipeline/workflow/workflow_int.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

typedef struct wf_anchor {
    char *name;
    wf_node *node;
} wf_anchor;

typedef struct wf_builder {
    const char *file;
    const char *text;
    size_t len;
    wf_doc *doc;
    nsed_err *err;
    wf_node *stack[WORKFLOW_MAX_DEPTH];
    char *stack_anchor[WORKFLOW_MAX_DEPTH]; /* anchor of an open collection */
    size_t depth;
    wf_anchor *anchors;
    size_t nanchors, allocanchors;
    size_t naliases;
    size_t ndocs;
} wf_builder;

void wf_doc_release(wf_doc *doc)
{
    if (!doc)
        return;
    for (size_t i = 0; i < doc->nall; i++) {
        free(doc->all[i]->str);
        free(doc->all[i]->items);
        free(doc->all[i]);
    }
    free(doc->all);
    doc->all = NULL;
    doc->nall = doc->allocall = 0;
    doc->root = NULL;
}

static int fail_at(wf_builder *b, int code, yaml_mark_t mark, const char *fmt,
                   ...) __attribute__((format(printf, 4, 5)));

static int fail_at(wf_builder *b, int code, yaml_mark_t mark, const char *fmt,
                   ...)
{
    char msg[NSED_ERR_MSG_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return nsed_error_at(b->err, code, b->file, mark.line + 1,
                         mark.column + 1, "%s", msg);
}

static wf_node *node_new(wf_builder *b, enum wf_node_kind kind,
                         yaml_mark_t mark)
{
    wf_doc *d = b->doc;
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
    n->line = mark.line + 1;
    n->col = mark.column + 1;
    n->expanded = 1;
    d->all[d->nall++] = n;
    return n;
}

/* Attach a finished node (or an alias target) to the open collection, or
 * make it the root. */
static int attach(wf_builder *b, wf_node *child, yaml_mark_t mark)
{
    wf_node *parent;

    if (b->depth == 0) {
        b->doc->root = child;
        return 0;
    }
    parent = b->stack[b->depth - 1];
    if (parent->n == parent->alloc) {
        size_t na = parent->alloc ? parent->alloc * 2 : 8;
        wf_node **p = realloc(parent->items, na * sizeof *p);

        if (!p)
            return nsed_error(b->err, NSED_ENOMEM, "out of memory");
        parent->items = p;
        parent->alloc = na;
    }
    parent->items[parent->n++] = child;
    parent->expanded += child->expanded;
    if (parent->expanded > WORKFLOW_MAX_NODES)
        return fail_at(b, NSED_ETOOBIG, mark,
                       "document too large: more than %d YAML nodes with "
                       "aliases expanded", WORKFLOW_MAX_NODES);
    return 0;
}

static int add_anchor(wf_builder *b, const char *name, wf_node *node)
{
    char *copy;

    if (b->nanchors == b->allocanchors) {
        size_t na = b->allocanchors ? b->allocanchors * 2 : 8;
        wf_anchor *p = realloc(b->anchors, na * sizeof *p);

        if (!p)
            return nsed_error(b->err, NSED_ENOMEM, "out of memory");
        b->anchors = p;
        b->allocanchors = na;
    }
    copy = strdup(name);
    if (!copy)
        return nsed_error(b->err, NSED_ENOMEM, "out of memory");
    b->anchors[b->nanchors].name = copy;
    b->anchors[b->nanchors].node = node;
    b->nanchors++;
    return 0;
}

/* The latest definition wins, as YAML specifies for a redefined anchor. */
static wf_node *find_anchor(const wf_builder *b, const char *name)
{
    for (size_t i = b->nanchors; i > 0; i--)
        if (strcmp(b->anchors[i - 1].name, name) == 0)
            return b->anchors[i - 1].node;
    return NULL;
}

static int reject_tag(wf_builder *b, const yaml_char_t *tag, yaml_mark_t mark)
{
    if (!tag)
        return 0;
    return fail_at(b, NSED_EINVAL, mark,
                   "YAML tags (\"%s\") are not allowed in a workflow; "
                   "quote a value to make it a string", (const char *)tag);
}

static int on_scalar(wf_builder *b, const yaml_event_t *ev)
{
    wf_node *n;
    int rc;

    rc = reject_tag(b, ev->data.scalar.tag, ev->start_mark);
    if (rc)
        return rc;
    n = node_new(b, WF_NODE_SCALAR, ev->start_mark);
    if (!n)
        return nsed_error(b->err, NSED_ENOMEM, "out of memory");
    n->str = malloc(ev->data.scalar.length + 1);
    if (!n->str)
        return nsed_error(b->err, NSED_ENOMEM, "out of memory");
    memcpy(n->str, ev->data.scalar.value, ev->data.scalar.length);
    n->str[ev->data.scalar.length] = '\0';
    n->len = ev->data.scalar.length;
    n->plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
    if (ev->data.scalar.anchor) {
        rc = add_anchor(b, (const char *)ev->data.scalar.anchor, n);
        if (rc)
            return rc;
    }
    return attach(b, n, ev->start_mark);
}

static int on_start(wf_builder *b, const yaml_event_t *ev,
                    enum wf_node_kind kind)
{
    const yaml_char_t *tag, *anchor;
    char *name = NULL;
    wf_node *n;
    int rc;

    if (kind == WF_NODE_SEQ) {
        tag = ev->data.sequence_start.tag;
        anchor = ev->data.sequence_start.anchor;
    } else {
        tag = ev->data.mapping_start.tag;
        anchor = ev->data.mapping_start.anchor;
    }
    rc = reject_tag(b, tag, ev->start_mark);
    if (rc)
        return rc;
    if (b->depth == WORKFLOW_MAX_DEPTH)
        return fail_at(b, NSED_EINVAL, ev->start_mark,
                       "nesting deeper than %d levels", WORKFLOW_MAX_DEPTH);
    n = node_new(b, kind, ev->start_mark);
    if (!n)
        return nsed_error(b->err, NSED_ENOMEM, "out of memory");
    if (anchor) {
        name = strdup((const char *)anchor);
        if (!name)
            return nsed_error(b->err, NSED_ENOMEM, "out of memory");
    }
    b->stack[b->depth] = n;
    b->stack_anchor[b->depth] = name;
    b->depth++;
    return 0;
}

/* A collection's anchor is registered only when it is complete, so an
 * alias inside the anchored collection itself is an unknown alias and the
 * tree can never contain a cycle. */
static int on_end(wf_builder *b, const yaml_event_t *ev)
{
    wf_node *n;
    char *name;
    int rc = 0;

    b->depth--;
    n = b->stack[b->depth];
    name = b->stack_anchor[b->depth];
    b->stack_anchor[b->depth] = NULL;
    if (n->kind == WF_NODE_MAP)
        n->n /= 2; /* items held keys and values; n now counts pairs */
    if (name)
        rc = add_anchor(b, name, n);
    free(name);
    if (rc)
        return rc;
    return attach(b, n, ev->start_mark);
}

static int on_alias(wf_builder *b, const yaml_event_t *ev)
{
    const char *name = (const char *)ev->data.alias.anchor;
    wf_node *target;

    if (++b->naliases > WORKFLOW_MAX_ALIASES)
        return fail_at(b, NSED_ETOOBIG, ev->start_mark,
                       "too many YAML aliases: at most %d per document",
                       WORKFLOW_MAX_ALIASES);
    target = find_anchor(b, name);
    if (!target)
        return fail_at(b, NSED_EINVAL, ev->start_mark,
                       "unknown YAML alias \"*%s\" (no complete anchor "
                       "\"&%s\" before it)", name, name);
    return attach(b, target, ev->start_mark);
}

/* libyaml reports reader errors (bad encoding) by byte offset only. */
static void offset_to_mark(const char *text, size_t len, size_t off,
                           yaml_mark_t *mark)
{
    size_t line = 0, col = 0;

    if (off > len)
        off = len;
    for (size_t i = 0; i < off; i++) {
        if (text[i] == '\n') {
            line++;
            col = 0;
        } else {
            col++;
        }
    }
    mark->index = off;
    mark->line = line;
    mark->column = col;
}

static int parser_error(wf_builder *b, const yaml_parser_t *p)
{
    yaml_mark_t mark = p->problem_mark;
    const char *problem = p->problem ? p->problem : "unknown problem";

    switch (p->error) {
    case YAML_MEMORY_ERROR:
        return nsed_error(b->err, NSED_ENOMEM, "out of memory");
    case YAML_READER_ERROR:
        offset_to_mark(b->text, b->len, p->problem_offset, &mark);
        return fail_at(b, NSED_EINVAL, mark, "invalid text: %s", problem);
    case YAML_NO_ERROR:
    case YAML_SCANNER_ERROR:
    case YAML_PARSER_ERROR:
    case YAML_COMPOSER_ERROR:
    case YAML_WRITER_ERROR:
    case YAML_EMITTER_ERROR:
        break;
    }
    if (p->context)
        return fail_at(b, NSED_EINVAL, mark, "YAML syntax error: %s %s",
                       p->context, problem);
    return fail_at(b, NSED_EINVAL, mark, "YAML syntax error: %s", problem);
}

static int on_event(wf_builder *b, const yaml_event_t *ev, int *done)
{
    switch (ev->type) {
    case YAML_NO_EVENT:
    case YAML_STREAM_START_EVENT:
    case YAML_DOCUMENT_END_EVENT:
        return 0;
    case YAML_STREAM_END_EVENT:
        *done = 1;
        if (b->ndocs == 0)
            return fail_at(b, NSED_EINVAL, ev->start_mark,
                           "empty workflow: the file holds no YAML document");
        return 0;
    case YAML_DOCUMENT_START_EVENT:
        if (++b->ndocs > 1)
            return fail_at(b, NSED_EINVAL, ev->start_mark,
                           "several YAML documents in one file; a workflow "
                           "file holds exactly one");
        return 0;
    case YAML_ALIAS_EVENT:
        return on_alias(b, ev);
    case YAML_SCALAR_EVENT:
        return on_scalar(b, ev);
    case YAML_SEQUENCE_START_EVENT:
        return on_start(b, ev, WF_NODE_SEQ);
    case YAML_MAPPING_START_EVENT:
        return on_start(b, ev, WF_NODE_MAP);
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT:
        return on_end(b, ev);
    }
    return 0;
}

int wf_yaml_parse(const char *file, const char *text, size_t len,
                  wf_doc *doc, nsed_err *err)
{
    wf_builder b = {0};
    yaml_parser_t parser;
    yaml_event_t ev;
    int done = 0, rc = 0;

    memset(doc, 0, sizeof *doc);
    b.file = file;
    b.text = text;
    b.len = len;
    b.doc = doc;
    b.err = err;
    if (!yaml_parser_initialize(&parser))
        return nsed_error(err, NSED_ENOMEM, "out of memory");
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    while (!done) {
        if (!yaml_parser_parse(&parser, &ev)) {
            rc = parser_error(&b, &parser);
            goto out;
        }
        rc = on_event(&b, &ev, &done);
        if (!rc && doc->nall > WORKFLOW_MAX_NODES)
            rc = fail_at(&b, NSED_ETOOBIG, ev.start_mark,
                         "document too large: more than %d YAML nodes",
                         WORKFLOW_MAX_NODES);
        yaml_event_delete(&ev);
        if (rc)
            goto out;
    }
out:
    yaml_parser_delete(&parser);
    for (size_t i = 0; i < b.depth; i++)
        free(b.stack_anchor[i]);
    for (size_t i = 0; i < b.nanchors; i++)
        free(b.anchors[i].name);
    free(b.anchors);
    if (rc)
        wf_doc_release(doc);
    return rc;
}
