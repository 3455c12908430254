#include "pipeline/gateway/ledger.h"

#include "pipeline/base/jsonw.h"
#include "pipeline/base/json.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Bumped whenever the set or encoding of key parts changes, so that an old
 * ledger can never answer a differently-keyed call. Form 2 names the model
 * (workflow id and served name) where form 1 named the endpoint URL. */
#define LEDGER_KEY_TAG_1 "nsed-ledger-key-1"
#define LEDGER_KEY_TAG_2 "nsed-ledger-key-2"

static void field_str(hash_ctx *h, const char *s)
{
    hash_update_field(h, s, strlen(s));
}

static void field_fmt(hash_ctx *h, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void field_fmt(hash_ctx *h, const char *fmt, ...)
{
    char tmp[64];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    /* Every format used below fits in 64 bytes; a negative n cannot happen
     * for these formats. */
    if (n < 0)
        n = 0;
    hash_update_field(h, tmp, (size_t)n < sizeof tmp ? (size_t)n
                                                      : sizeof tmp - 1);
}

/* The key of c in form 1 (legacy: endpoint URL first) or form 2 (model id
 * first). Everything after the identity parts is the same in both forms,
 * so a form-1 entry answers exactly the calls it answered before. */
static int key_form(const ledger_call *c, int form, uint8_t out[HASH_LEN])
{
    hash_ctx *h;

    if (!c->model || (c->nmessages && !c->messages) || (c->nstop && !c->stop))
        return NSED_EINVAL;
    if (form == 1 ? !c->endpoint : !c->model_id)
        return NSED_EINVAL;
    for (size_t i = 0; i < c->nmessages; i++)
        if (!c->messages[i].role || !c->messages[i].content)
            return NSED_EINVAL;
    for (size_t i = 0; i < c->nstop; i++)
        if (!c->stop[i])
            return NSED_EINVAL;
    h = hash_new();
    if (!h)
        return NSED_ENOMEM;
    if (form == 1) {
        field_str(h, LEDGER_KEY_TAG_1);
        field_str(h, c->endpoint);
    } else {
        field_str(h, LEDGER_KEY_TAG_2);
        field_str(h, c->model_id);
    }
    field_str(h, c->model);
    field_fmt(h, "messages=%zu", c->nmessages);
    for (size_t i = 0; i < c->nmessages; i++) {
        field_str(h, c->messages[i].role);
        field_str(h, c->messages[i].content);
    }
    /* %.17g round-trips a double exactly, so equal settings hash equal and
     * any change of value changes the key. */
    field_fmt(h, "temperature=%.17g", c->temperature);
    field_fmt(h, "top_p=%.17g", c->top_p);
    field_fmt(h, "max_tokens=%ld", c->max_tokens);
    if (c->has_seed)
        field_fmt(h, "seed=%" PRId64, c->seed);
    else
        field_str(h, "seed=none");
    field_fmt(h, "stop=%zu", c->nstop);
    for (size_t i = 0; i < c->nstop; i++)
        field_str(h, c->stop[i]);
    if (c->schema) {
        field_str(h, "response_format=json_schema");
        field_str(h, c->schema_name ? c->schema_name : "");
        field_str(h, c->schema);
    } else {
        field_str(h, "response_format=none");
    }
    /* Only when given, so ledgers written before extra_body keep their
     * keys. */
    if (c->extra_body) {
        field_str(h, "extra_body");
        field_str(h, c->extra_body);
    }
    /* The scope (the question id) keeps two questions with the same text
     * from sharing calls: they are independent samples. */
    field_str(h, c->scope ? c->scope : "");
    field_fmt(h, "seat=%d", c->seat);
    field_fmt(h, "round=%d", c->round);
    field_fmt(h, "sample=%d", c->sample);
    hash_final(h, out);
    hash_free(h);
    return 0;
}

int ledger_key(const ledger_call *c, uint8_t out[HASH_LEN])
{
    return key_form(c, 2, out);
}

int ledger_key_legacy(const ledger_call *c, uint8_t out[HASH_LEN])
{
    return key_form(c, 1, out);
}

void ledger_record_release(ledger_record *r)
{
    if (!r)
        return;
    free(r->content);
    free(r->finish_reason);
    free(r->model);
    memset(r, 0, sizeof *r);
}

/* A double as %.17g (every value reads back exactly; json_add_exact's
 * form, which records written before kept). */
static void put_exact(jsonw *w, const char *key, double v)
{
    char tmp[40];

    snprintf(tmp, sizeof tmp, "%.17g", isfinite(v) ? v : 0.0);
    jsonw_key(w, key);
    jsonw_raw(w, tmp);
}

/* Printed by jsonw as cJSON_PrintUnformatted printed the object before,
 * byte for byte, without building it: one record per call. */
int ledger_encode(const ledger_record *r, char **out, size_t *len)
{
    jsonw w;

    if (!r->content)
        return NSED_EINVAL;
    jsonw_init(&w, (size_t)1 << 30, JSONW_CJSON);
    jsonw_object_begin(&w);
    jsonw_key_int(&w, "v", 1);
    jsonw_key_str(&w, "content", r->content);
    jsonw_key_str(&w, "finish_reason", r->finish_reason);
    if (r->model)
        jsonw_key_str(&w, "model", r->model);
    jsonw_key(&w, "usage");
    jsonw_object_begin(&w);
    jsonw_key_int(&w, "prompt_tokens", r->prompt_tokens);
    jsonw_key_int(&w, "completion_tokens", r->completion_tokens);
    jsonw_key_int(&w, "cached_tokens", r->cached_tokens);
    jsonw_object_end(&w);
    put_exact(&w, "cost_usd", r->cost_usd);
    put_exact(&w, "latency_s", r->latency_s);
    jsonw_key_int(&w, "attempts", r->attempts);
    jsonw_key_int(&w, "http_status", r->http_status);
    jsonw_key_int(&w, "time", r->time);
    if (r->from_cache)
        jsonw_key_bool(&w, "from_cache", true);
    jsonw_object_end(&w);
    return jsonw_finish(&w, out, len) ? NSED_ENOMEM : 0;
}

int ledger_decode(const void *data, size_t len, ledger_record *out,
                  nsed_err *err)
{
    ledger_record r = {0};
    cJSON *root = cJSON_ParseWithLength(data, len);
    const cJSON *usage;
    int64_t attempts = 0, status = 0;
    int rc = NSED_EINVAL;
    const char *what = "not a JSON object";

    if (!cJSON_IsObject(root))
        goto out;
    what = "content";
    if (!cJSON_IsString(cJSON_GetObjectItemCaseSensitive(root, "content")))
        goto out;
    if ((rc = json_get_str(root, "content", &r.content)))
        goto out;
    what = "finish_reason";
    if ((rc = json_get_str(root, "finish_reason", &r.finish_reason)))
        goto out;
    what = "model";
    if ((rc = json_get_str(root, "model", &r.model)))
        goto out;
    what = "usage";
    usage = cJSON_GetObjectItemCaseSensitive(root, "usage");
    rc = NSED_EINVAL;
    if (usage && !cJSON_IsObject(usage))
        goto out;
    if (usage &&
        (json_get_int(usage, "prompt_tokens", 0, INT64_MAX,
                      &r.prompt_tokens) ||
         json_get_int(usage, "completion_tokens", 0, INT64_MAX,
                      &r.completion_tokens) ||
         json_get_int(usage, "cached_tokens", 0, INT64_MAX,
                      &r.cached_tokens)))
        goto out;
    what = "numbers";
    if (json_get_num(root, "cost_usd", &r.cost_usd) ||
        json_get_num(root, "latency_s", &r.latency_s) ||
        json_get_int(root, "attempts", 0, 1000000, &attempts) ||
        json_get_int(root, "http_status", 0, 999, &status) ||
        json_get_int(root, "time", INT64_MIN, INT64_MAX, &r.time))
        goto out;
    what = "from_cache";
    {
        const cJSON *fc = cJSON_GetObjectItemCaseSensitive(root, "from_cache");

        if (fc && !cJSON_IsBool(fc))
            goto out;
        r.from_cache = cJSON_IsTrue(fc);
    }
    r.attempts = (int)attempts;
    r.http_status = (long)status;
    *out = r;
    memset(&r, 0, sizeof r);
    rc = 0;
out:
    if (rc == NSED_EINVAL)
        nsed_error(err, rc, "ledger record: bad %s", what);
    else if (rc == NSED_ENOMEM)
        nsed_error(err, rc, "ledger record: out of memory");
    ledger_record_release(&r);
    cJSON_Delete(root);
    return rc;
}

int ledger_get(store_txn *txn, const uint8_t key[HASH_LEN],
               ledger_record *out, nsed_err *err)
{
    nsed_err inner = {0};
    const void *val;
    size_t vlen;
    int rc = store_get(txn, STORE_LEDGER, key, HASH_LEN, &val, &vlen);

    if (rc == NSED_ENOTFOUND)
        return rc;
    if (rc)
        return nsed_error(err, rc, "ledger: lookup failed");
    rc = ledger_decode(val, vlen, out, &inner);
    if (rc) {
        char hex[HASH_HEX_LEN + 1];

        hash_hex(key, hex);
        return nsed_error(err, rc, "ledger entry %s: %s", hex, inner.msg);
    }
    return 0;
}

int ledger_find(store_txn *txn, const uint8_t key[HASH_LEN],
                const uint8_t legacy[HASH_LEN], ledger_record *out,
                nsed_err *err)
{
    int rc = ledger_get(txn, key, out, err);

    /* Only a miss falls back: a current-form entry that does not decode
     * is reported, so that its call is made again and the entry rewritten
     * under the current key. */
    if (rc == NSED_ENOTFOUND && legacy)
        rc = ledger_get(txn, legacy, out, err);
    return rc;
}

int ledger_put(store_txn *txn, const uint8_t key[HASH_LEN],
               const ledger_record *r, nsed_err *err)
{
    char *text = NULL;
    size_t len = 0;
    int rc = ledger_encode(r, &text, &len);

    if (rc)
        return nsed_error(err, rc, "ledger: cannot encode a record");
    rc = store_put(txn, STORE_LEDGER, key, HASH_LEN, text, len);
    free(text);
    if (rc)
        return nsed_error(err, rc, "ledger: write failed");
    return 0;
}

int ledger_count(store_txn *txn, size_t *n)
{
    return store_count(txn, STORE_LEDGER, n);
}
