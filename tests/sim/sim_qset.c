#include "sim_qset.h"

#include "pipeline/questions/questions.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct qentry {
    struct qentry *next;
    uint64_t hash;
    char *text;   /* trimmed question text */
    size_t len;
    char *answer;
} qentry;

struct sim_qset {
    qentry **slots;
    size_t nslots;  /* power of two */
    size_t count;
};

static uint64_t fnv1a(const char *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL;

    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

static qentry *find(const sim_qset *qs, sim_span t, uint64_t h)
{
    qentry *e;

    for (e = qs->slots[h & (qs->nslots - 1)]; e; e = e->next) {
        if (e->hash == h && e->len == t.len && !memcmp(e->text, t.ptr, t.len))
            return e;
    }
    return NULL;
}

static int grow(sim_qset *qs)
{
    size_t n = qs->nslots * 2;
    qentry **slots = calloc(n, sizeof *slots);

    if (!slots)
        return NSED_ENOMEM;
    for (size_t i = 0; i < qs->nslots; i++) {
        qentry *e = qs->slots[i], *next;

        for (; e; e = next) {
            next = e->next;
            e->next = slots[e->hash & (n - 1)];
            slots[e->hash & (n - 1)] = e;
        }
    }
    free(qs->slots);
    qs->slots = slots;
    qs->nslots = n;
    return 0;
}

static int add_question(const question *q, size_t lineno, void *arg)
{
    sim_qset *qs = arg;
    sim_span t = {q->text ? q->text : "", q->text ? strlen(q->text) : 0};
    qentry *e;
    uint64_t h;

    (void)lineno;
    if (!q->answer)
        return 0; /* no reference: the simulator treats it as unknown */
    t = sim_span_trim(t);
    h = fnv1a(t.ptr, t.len);
    if (find(qs, t, h))
        return 0;
    if (qs->count + 1 > qs->nslots && grow(qs))
        return NSED_ENOMEM;
    e = calloc(1, sizeof *e);
    if (!e)
        return NSED_ENOMEM;
    e->text = malloc(t.len + 1);
    e->answer = strdup(q->answer);
    if (!e->text || !e->answer) {
        free(e->text);
        free(e->answer);
        free(e);
        return NSED_ENOMEM;
    }
    memcpy(e->text, t.ptr, t.len);
    e->text[t.len] = '\0';
    e->len = t.len;
    e->hash = h;
    e->next = qs->slots[h & (qs->nslots - 1)];
    qs->slots[h & (qs->nslots - 1)] = e;
    qs->count++;
    return 0;
}

int sim_qset_load(const char *path, sim_qset **out, nsed_err *err)
{
    sim_qset *qs = calloc(1, sizeof *qs);
    int rc = 0;

    if (!qs)
        return nsed_error(err, NSED_ENOMEM, "out of memory");
    qs->nslots = 64;
    qs->slots = calloc(qs->nslots, sizeof *qs->slots);
    if (!qs->slots) {
        rc = nsed_error(err, NSED_ENOMEM, "out of memory");
        goto out;
    }
    if (path) {
        rc = questions_read_file(path, add_question, qs, err);
        if (rc == NSED_ENOMEM && err && !err->msg[0])
            nsed_error(err, rc, "out of memory");
        if (rc)
            goto out;
    }
    *out = qs;
    qs = NULL;
out:
    sim_qset_free(qs);
    return rc;
}

const char *sim_qset_answer(const sim_qset *qs, sim_span text)
{
    sim_span t = sim_span_trim(text);
    qentry *e = find(qs, t, fnv1a(t.ptr, t.len));

    return e ? e->answer : NULL;
}

size_t sim_qset_count(const sim_qset *qs)
{
    return qs->count;
}

void sim_qset_free(sim_qset *qs)
{
    if (!qs)
        return;
    for (size_t i = 0; i < qs->nslots; i++) {
        qentry *e = qs->slots[i], *next;

        for (; e; e = next) {
            next = e->next;
            free(e->text);
            free(e->answer);
            free(e);
        }
    }
    free(qs->slots);
    free(qs);
}
