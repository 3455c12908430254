/* runner_telemetry.c -- call statistics per model, cumulative across the
 * runs of a store, kept in STORE_TELEMETRY as "gateway/<model id>". */
#include "pipeline/runner/runner_int.h"
#include "store/store_keys.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct runner_telemetry_base {
    size_t n;
    gateway_stats *stats; /* per wf->models index */
};

static int load_fn(store_txn *txn, void *arg, nsed_err *err)
{
    struct {
        const workflow *wf;
        runner_telemetry_base *b;
    } *a = arg;
    store_key key;

    for (size_t i = 0; i < a->wf->nmodels; i++) {
        const void *val;
        size_t vlen;
        cJSON *j;

        if (store_keys_telemetry(STORE_KEYS_GATEWAY, a->wf->models[i].id,
                                 &key) ||
            store_get(txn, STORE_TELEMETRY, key.bytes, key.len, &val, &vlen))
            continue;
        j = cJSON_ParseWithLength(val, vlen);
        if (!cJSON_IsObject(j)) {
            /* read as zero, the run would overwrite the cumulative
             * statistics with its own: report the damage instead */
            char what[STORE_KEY_MAX + 64];

            cJSON_Delete(j);
            snprintf(what, sizeof what, "the telemetry record \"%.*s\"",
                     (int)key.len, (const char *)key.bytes);
            return store_corrupt(err, txn, STORE_TELEMETRY, what,
                                 "not a JSON object");
        }
        gateway_stats_from_json(j, &a->b->stats[i]);
        cJSON_Delete(j);
    }
    return 0;
}

int runner_telemetry_load(store *st, const workflow *wf,
                          runner_telemetry_base **out, nsed_err *err)
{
    runner_telemetry_base *b = calloc(1, sizeof *b);
    struct {
        const workflow *wf;
        runner_telemetry_base *b;
    } a = {wf, b};
    int rc;

    if (!b || !(b->stats = calloc(wf->nmodels, sizeof *b->stats))) {
        free(b);
        return nsed_error(err, NSED_ENOMEM, "out of memory");
    }
    b->n = wf->nmodels;
    rc = store_read(st, load_fn, &a, err);
    if (rc) {
        runner_telemetry_free(b);
        return rc;
    }
    *out = b;
    return 0;
}

int runner_telemetry_put(store_txn *txn, const runner_telemetry_base *base,
                         const workflow *wf, const gateway *gw)
{
    store_key key;

    for (size_t i = 0; i < wf->nmodels && i < base->n; i++) {
        gateway_stats s = base->stats[i], now;
        char *text = NULL;
        size_t len = 0;
        int rc;

        if (store_keys_telemetry(STORE_KEYS_GATEWAY, wf->models[i].id,
                                 &key) ||
            gateway_stats_get(gw, i, &now))
            continue;
        gateway_stats_add(&s, &now);
        if (gateway_stats_write(&s, &text, &len))
            return NSED_ENOMEM;
        rc = store_put(txn, STORE_TELEMETRY, key.bytes, key.len, text, len);
        free(text);
        if (rc)
            return rc;
    }
    return 0;
}

void runner_telemetry_current(const runner_telemetry_base *base,
                              const gateway *gw, size_t m,
                              gateway_stats *out)
{
    gateway_stats now;

    memset(out, 0, sizeof *out);
    if (m >= base->n)
        return;
    *out = base->stats[m];
    if (gateway_stats_get(gw, m, &now) == 0)
        gateway_stats_add(out, &now);
}

enum gateway_call_kind runner_call_kind(const stage_request *rq)
{
    switch (rq->kind) {
    case STAGE_KIND_PROPOSE:
        return rq->round > 0 ? GATEWAY_CALL_REVISE : GATEWAY_CALL_PROPOSE;
    case STAGE_KIND_EVALUATE:
        return GATEWAY_CALL_EVALUATE;
    case STAGE_KIND_REPAIR:
        return GATEWAY_CALL_REPAIR;
    case STAGE_KIND_SELFCONS:
        return GATEWAY_CALL_SELFCONS;
    }
    return GATEWAY_CALL_OTHER;
}

void runner_telemetry_free(runner_telemetry_base *b)
{
    if (!b)
        return;
    free(b->stats);
    free(b);
}

/* ---- circuit breakers --------------------------------------------------- */

typedef struct breaker_seen {
    bool known; /* noted at least once in this run */
    bool paused;
    char since[32];
    bool dirty; /* changed since the last commit */
} breaker_seen;

struct runner_breakers {
    size_t n;
    breaker_seen *m;
};

runner_breakers *runner_breakers_new(size_t n)
{
    runner_breakers *b = calloc(1, sizeof *b);

    if (!b)
        return NULL;
    b->n = n;
    b->m = calloc(n ? n : 1, sizeof *b->m);
    if (!b->m) {
        free(b);
        return NULL;
    }
    return b;
}

void runner_breakers_free(runner_breakers *b)
{
    if (!b)
        return;
    free(b->m);
    free(b);
}

static void utc_now(char *out, size_t size)
{
    time_t t = time(NULL);
    struct tm tm;

    if (!gmtime_r(&t, &tm) ||
        strftime(out, size, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(out, size, "?");
}

void runner_breakers_note(runner_breakers *b, size_t m, bool paused)
{
    breaker_seen *s;

    if (!b || m >= b->n)
        return;
    s = &b->m[m];
    if (s->known && s->paused == paused)
        return;
    s->known = true;
    s->paused = paused;
    s->dirty = true;
    utc_now(s->since, sizeof s->since);
}

void runner_breakers_end(runner_breakers *b)
{
    for (size_t i = 0; b && i < b->n; i++)
        if (b->m[i].known)
            b->m[i].dirty = true;
}

bool runner_breakers_dirty(const runner_breakers *b)
{
    for (size_t i = 0; b && i < b->n; i++)
        if (b->m[i].dirty)
            return true;
    return false;
}

int runner_breakers_put(store_txn *txn, const runner_breakers *b,
                        const workflow *wf, bool run_ended)
{
    for (size_t i = 0; b && i < b->n && i < wf->nmodels; i++) {
        const breaker_seen *s = &b->m[i];
        store_key key;
        cJSON *j;
        char *text;
        int rc;

        if (!s->known || !s->dirty)
            continue;
        if (store_keys_telemetry(STORE_KEYS_BREAKER, wf->models[i].id, &key))
            continue;
        j = cJSON_CreateObject();
        if (!j || !cJSON_AddBoolToObject(j, "paused", s->paused) ||
            !cJSON_AddStringToObject(j, "since", s->since) ||
            !cJSON_AddBoolToObject(j, "run_ended", run_ended)) {
            cJSON_Delete(j);
            return NSED_ENOMEM;
        }
        text = cJSON_PrintUnformatted(j);
        cJSON_Delete(j);
        if (!text)
            return NSED_ENOMEM;
        rc = store_put(txn, STORE_TELEMETRY, key.bytes, key.len, text,
                       strlen(text));
        free(text);
        if (rc)
            return rc;
    }
    return 0;
}

void runner_breakers_committed(runner_breakers *b)
{
    for (size_t i = 0; b && i < b->n; i++)
        b->m[i].dirty = false;
}

int runner_breaker_parse(const void *val, size_t len, runner_breaker_rec *out)
{
    cJSON *j = cJSON_ParseWithLength(val, len);
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(j, "paused");
    const cJSON *since = cJSON_GetObjectItemCaseSensitive(j, "since");
    const cJSON *end = cJSON_GetObjectItemCaseSensitive(j, "run_ended");
    int rc = NSED_EINVAL;

    if (cJSON_IsBool(p) && cJSON_IsString(since) && cJSON_IsBool(end) &&
        strlen(since->valuestring) < sizeof out->since) {
        memset(out, 0, sizeof *out);
        out->paused = cJSON_IsTrue(p);
        snprintf(out->since, sizeof out->since, "%s", since->valuestring);
        out->run_ended = cJSON_IsTrue(end);
        rc = 0;
    }
    cJSON_Delete(j);
    return rc;
}
