/* cache.c -- the shared call cache: a run store opened shared, holding
 * only ledger records (see cache.h). */
#include "pipeline/gateway/cache.h"

#include "store/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct cache {
    store *st;
};

/* Mark a new cache; an old one keeps its mark. */
static int mark_fn(store_txn *txn, void *arg, nsed_err *err)
{
    const void *val;
    size_t vlen;
    char text[16];
    int n, rc;

    (void)arg;
    rc = store_get(txn, STORE_META, STORE_KEY_CALL_CACHE,
                   strlen(STORE_KEY_CALL_CACHE), &val, &vlen);
    if (rc == 0)
        return 0;
    if (rc != NSED_ENOTFOUND)
        return nsed_error(err, rc, "call cache %s: cannot read its marker",
                          store_txn_dir(txn));
    n = snprintf(text, sizeof text, "%d", CACHE_VERSION);
    rc = store_put(txn, STORE_META, STORE_KEY_CALL_CACHE,
                   strlen(STORE_KEY_CALL_CACHE), text, (size_t)n);
    if (rc)
        return nsed_error(err, rc, "call cache %s: cannot write its marker",
                          store_txn_dir(txn));
    return 0;
}

int cache_open(const char *dir, cache **out, nsed_err *err)
{
    store_opts so = {STORE_SHARED, 0};
    cache *c = calloc(1, sizeof *c);
    int rc;

    if (!c)
        return nsed_error(err, NSED_ENOMEM, "out of memory");
    rc = store_open(dir, &so, &c->st, err);
    if (!rc) {
        /* a run store (bound to a workflow) is one run's record: other
         * runs must not write its ledger */
        char *man = NULL;
        nsed_err merr = {0};
        int mrc = store_manifest_json(c->st, &man, &merr);

        free(man);
        if (mrc == 0)
            rc = nsed_error(err, NSED_EINVAL,
                            "%s is a run store (it has a run manifest), not "
                            "a call cache: give --cache another directory",
                            dir);
        else if (mrc != NSED_ENOTFOUND)
            rc = nsed_error(err, mrc, "call cache %s: %s", dir, merr.msg);
    }
    if (!rc)
        rc = store_write(c->st, mark_fn, NULL, err);
    if (rc) {
        cache_close(c);
        return rc;
    }
    *out = c;
    return 0;
}

void cache_close(cache *c)
{
    if (!c)
        return;
    store_close(c->st);
    free(c);
}

const char *cache_dir(const cache *c)
{
    return store_dir(c->st);
}

typedef struct get_ctx {
    const uint8_t *key;
    ledger_record *out;
} get_ctx;

static int get_fn(store_txn *txn, void *arg, nsed_err *err)
{
    get_ctx *g = arg;

    return ledger_get(txn, g->key, g->out, err);
}

int cache_get(cache *c, const uint8_t key[HASH_LEN], ledger_record *out,
              nsed_err *err)
{
    get_ctx g = {key, out};

    return store_read(c->st, get_fn, &g, err);
}

typedef struct put_ctx {
    const cache_entry *e;
    size_t n;
} put_ctx;

/* Replayable: reads only the entries, writes only through txn. */
static int put_fn(store_txn *txn, void *arg, nsed_err *err)
{
    const put_ctx *p = arg;

    for (size_t i = 0; i < p->n; i++) {
        int rc = ledger_put(txn, p->e[i].key, p->e[i].rec, err);

        if (rc)
            return rc;
    }
    return 0;
}

int cache_put(cache *c, const cache_entry *e, size_t n, nsed_err *err)
{
    put_ctx p = {e, n};

    if (n == 0)
        return 0;
    return store_write(c->st, put_fn, &p, err);
}

static int count_fn(store_txn *txn, void *arg, nsed_err *err)
{
    int rc = ledger_count(txn, arg);

    if (rc)
        return nsed_error(err, rc, "call cache %s: cannot count its records",
                          store_txn_dir(txn));
    return 0;
}

int cache_count(cache *c, size_t *n, nsed_err *err)
{
    return store_read(c->st, count_fn, n, err);
}
