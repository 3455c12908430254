/* gateway_json.c -- request bodies, reply parsing, error messages and the
 * dry-run line of the gateway. */
#include "pipeline/gateway/gateway_int.h"

#include "pipeline/base/buf.h"
#include "pipeline/base/json.h"
#include "pipeline/base/jsonw.h"
#include "pipeline/base/utf8.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SCHEMA_NAME_MAX 64

static bool schema_name_ok(const char *s)
{
    size_t n = 0;

    for (; s[n]; n++) {
        char c = s[n];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return false;
    }
    return n >= 1 && n <= SCHEMA_NAME_MAX;
}

int gw_check_request(const workflow *wf, const gateway_request *req,
                     nsed_err *err)
{
    if (req->model >= wf->nmodels)
        return nsed_error(err, NSED_EINVAL,
                          "gateway: model index %zu out of range (%zu models)",
                          req->model, wf->nmodels);
    if (req->nmessages == 0 || !req->messages)
        return nsed_error(err, NSED_EINVAL,
                          "gateway: request for model %s has no messages",
                          wf->models[req->model].id);
    for (size_t i = 0; i < req->nmessages; i++) {
        const gateway_message *m = &req->messages[i];

        if (!m->role || !m->role[0] || !m->content)
            return nsed_error(err, NSED_EINVAL,
                              "gateway: message %zu for model %s lacks a "
                              "role or content", i,
                              wf->models[req->model].id);
    }
    if (req->schema) {
        cJSON *s;
        bool obj;

        if (!req->schema_name || !schema_name_ok(req->schema_name))
            return nsed_error(err, NSED_EINVAL,
                              "gateway: a schema needs a name of 1..%d "
                              "characters [A-Za-z0-9_-]", SCHEMA_NAME_MAX);
        s = cJSON_Parse(req->schema);
        obj = cJSON_IsObject(s);
        cJSON_Delete(s);
        if (!obj)
            return nsed_error(err, NSED_EINVAL,
                              "gateway: schema \"%s\" is not a JSON object",
                              req->schema_name);
    }
    return 0;
}

/* splitmix64's finalizer: a bijection that spreads every input bit. */
static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

int64_t gw_call_seed(const workflow_model *m, const gateway_request *req)
{
    if (!req->has_seed)
        return m->sampling.seed;
    if (!m->sampling.has_seed)
        return req->seed;
    /* Both: the call's own seed (per question, round, seat) mixed with the
     * model's, so each value of sampling.seed gives other seeds. */
    return (int64_t)(mix64(mix64((uint64_t)m->sampling.seed) ^
                           (uint64_t)req->seed) >>
                     1);
}

void gw_ledger_call(const workflow_model *m, const gateway_request *req,
                    ledger_call *c)
{
    memset(c, 0, sizeof *c);
    /* The key names the model, not where it is served: the endpoint is
     * kept only for the legacy key of stores written before. */
    c->model_id = m->id;
    c->endpoint = m->endpoint;
    c->model = m->model;
    c->messages = req->messages;
    c->nmessages = req->nmessages;
    c->temperature = m->sampling.temperature;
    c->top_p = m->sampling.top_p;
    c->max_tokens = req->max_tokens > 0 ? req->max_tokens
                                        : m->sampling.max_tokens;
    c->has_seed = req->has_seed || m->sampling.has_seed;
    c->seed = gw_call_seed(m, req);
    c->stop = (const char *const *)m->sampling.stop;
    c->nstop = m->sampling.nstop;
    if (req->schema && m->structured_output) {
        c->schema = req->schema;
        c->schema_name = req->schema_name;
    }
    c->extra_body = m->extra_body;
    c->scope = req->scope;
    c->seat = req->seat;
    c->round = req->round;
    c->sample = req->sample;
}

/* The members of a JSON object text ("{...}", checked at load), without
 * its braces and surrounding space: *p and *n, n 0 for "{}". */
static void object_members(const char *obj, const char **p, size_t *n)
{
    const char *a = strchr(obj, '{'), *b = strrchr(obj, '}');

    *p = "";
    *n = 0;
    if (!a || !b || b <= a)
        return;
    for (a++; a < b && strchr(" \t\r\n", *a); a++)
        ;
    while (b > a && strchr(" \t\r\n", b[-1]))
        b--;
    *p = a;
    *n = (size_t)(b - a);
}

/* Printed by jsonw in cJSON's string and number forms, so the bytes are
 * what cJSON_PrintUnformatted of the same object gave, without building
 * the object first: every call of the run passes here. */
int gw_build_body(const workflow_model *m, const gateway_request *req,
                  char **out, size_t *len, nsed_err *err)
{
    ledger_call c;
    jsonw w;
    char *text = NULL;
    size_t n = 0;
    int rc;

    gw_ledger_call(m, req, &c);
    jsonw_init(&w, GATEWAY_MAX_REQUEST_BYTES + 1, JSONW_CJSON);
    jsonw_object_begin(&w);
    jsonw_key_str(&w, "model", m->model);
    jsonw_key(&w, "messages");
    jsonw_array_begin(&w);
    for (size_t i = 0; i < req->nmessages; i++) {
        jsonw_object_begin(&w);
        jsonw_key_str(&w, "role", req->messages[i].role);
        jsonw_key_str(&w, "content", req->messages[i].content);
        jsonw_object_end(&w);
    }
    jsonw_array_end(&w);
    jsonw_key_num(&w, "temperature", c.temperature);
    jsonw_key_num(&w, "top_p", c.top_p);
    /* integers as exact text: a 64-bit seed as a double would print in
     * exponent form */
    jsonw_key_int(&w, "max_tokens", c.max_tokens);
    if (c.has_seed)
        jsonw_key_int(&w, "seed", c.seed);
    if (c.nstop) {
        jsonw_key(&w, "stop");
        jsonw_array_begin(&w);
        for (size_t i = 0; i < c.nstop; i++)
            jsonw_str(&w, c.stop[i]);
        jsonw_array_end(&w);
    }
    if (c.schema) {
        /* The schema text goes in verbatim (it was checked to be a JSON
         * object), so the bytes sent are the bytes the ledger key hashed. */
        jsonw_key(&w, "response_format");
        jsonw_object_begin(&w);
        jsonw_key_str(&w, "type", "json_schema");
        jsonw_key(&w, "json_schema");
        jsonw_object_begin(&w);
        jsonw_key_str(&w, "name", c.schema_name);
        jsonw_key(&w, "schema");
        jsonw_raw(&w, c.schema);
        jsonw_key_bool(&w, "strict", true);
        jsonw_object_end(&w);
        jsonw_object_end(&w);
    }
    jsonw_object_end(&w);
    rc = jsonw_finish(&w, &text, &n);
    if (!rc && m->extra_body) {
        /* Checked at load: an object with none of the fields set above;
         * its members go last, as they are. */
        const char *p;
        size_t k;
        char *t;

        object_members(m->extra_body, &p, &k);
        t = k ? realloc(text, n + k + 2) : text;
        if (!t) {
            rc = NSED_ENOMEM;
        } else if (k) {
            text = t;
            text[n - 1] = ',';
            memcpy(text + n, p, k);
            n += k;
            text[n++] = '}';
            text[n] = '\0';
        }
    }
    if (!rc && n > GATEWAY_MAX_REQUEST_BYTES)
        rc = NSED_ETOOBIG;
    if (rc == NSED_ETOOBIG) {
        free(text);
        return nsed_error(err, rc,
                          "gateway: request for model %s is over the cap "
                          "of %zu bytes",
                          m->id, GATEWAY_MAX_REQUEST_BYTES);
    }
    if (rc) {
        free(text);
        return nsed_error(err, rc,
                          "gateway: out of memory building a "
                          "request");
    }
    *out = text;
    *len = n;
    return 0;
}

void gw_reply_release(gw_reply *r)
{
    if (!r)
        return;
    free(r->content);
    free(r->finish_reason);
    memset(r, 0, sizeof *r);
}

/* A token count: absent or null is 0; anything but a non-negative finite
 * number is refused. */
static int token_count(const cJSON *o, const char *name, int64_t *v)
{
    *v = 0;
    if (cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(o, name)))
        return 0;
    return json_get_int(o, name, 0, (int64_t)9e15, v);
}

int gw_parse_reply(const char *body, size_t len, gw_reply *out, char *why,
                   size_t whylen)
{
    gw_reply r = {0};
    cJSON *root = cJSON_ParseWithLength(body, len);
    const cJSON *choices, *c0, *msg, *content, *fr, *usage, *details;
    const char *what = NULL;
    int rc = NSED_EINVAL;

    if (!root) {
        what = len ? "body is not JSON" : "empty body";
        goto out;
    }
    if (!cJSON_IsObject(root)) {
        what = "body is not a JSON object";
        goto out;
    }
    choices = cJSON_GetObjectItemCaseSensitive(root, "choices");
    if (!cJSON_IsArray(choices) || cJSON_GetArraySize(choices) < 1) {
        what = choices ? "empty choices" : "no choices";
        goto out;
    }
    c0 = cJSON_GetArrayItem(choices, 0);
    msg = cJSON_GetObjectItemCaseSensitive(c0, "message");
    if (!cJSON_IsObject(msg)) {
        what = "choices[0] has no message";
        goto out;
    }
    content = cJSON_GetObjectItemCaseSensitive(msg, "content");
    if (!cJSON_IsString(content)) {
        what = cJSON_IsNull(content) || !content ? "null content"
                                                 : "content is not a string";
        goto out;
    }
    fr = cJSON_GetObjectItemCaseSensitive(c0, "finish_reason");
    usage = cJSON_GetObjectItemCaseSensitive(root, "usage");
    if (usage && !cJSON_IsNull(usage)) {
        if (!cJSON_IsObject(usage) ||
            token_count(usage, "prompt_tokens", &r.usage.prompt_tokens) ||
            token_count(usage, "completion_tokens",
                        &r.usage.completion_tokens)) {
            what = "bad usage";
            goto out;
        }
        details = cJSON_GetObjectItemCaseSensitive(usage,
                                                   "prompt_tokens_details");
        if (cJSON_IsObject(details) &&
            token_count(details, "cached_tokens", &r.usage.cached_tokens)) {
            what = "bad usage";
            goto out;
        }
    }
    rc = NSED_ENOMEM;
    r.content = strdup(content->valuestring);
    if (!r.content)
        goto out;
    if (cJSON_IsString(fr)) {
        r.finish_reason = strdup(fr->valuestring);
        if (!r.finish_reason)
            goto out;
    }
    *out = r;
    memset(&r, 0, sizeof r);
    rc = 0;
out:
    if (rc && why && whylen)
        snprintf(why, whylen, "%s", what ? what : "out of memory");
    gw_reply_release(&r);
    cJSON_Delete(root);
    return rc;
}

/* Copy at most outlen-1 bytes of s (n bytes) into out as UTF-8: control
 * characters become spaces, every byte that starts no well-formed sequence
 * becomes U+FFFD (as in stored model text, stages/text.h), runs of white
 * space are trimmed at both ends, and a cut never splits a character. */
static void clean_copy(const char *s, size_t n, char *out, size_t outlen)
{
    static const char replacement[] = "\xef\xbf\xbd"; /* U+FFFD */
    size_t o = 0, limit = outlen ? outlen - 1 : 0;

    if (limit > GATEWAY_SERVER_MSG_MAX)
        limit = GATEWAY_SERVER_MSG_MAX;
    while (n && ((unsigned char)*s <= ' ' || *s == 0x7f)) {
        s++;
        n--;
    }
    for (size_t i = 0; i < n;) {
        size_t k = utf8_seq_len(s + i, n - i);
        unsigned char c = (unsigned char)s[i];
        const char *from = s + i;
        size_t len = k;

        if (k == 0) {
            from = replacement;
            len = sizeof replacement - 1;
            k = 1;
        } else if (c < 0x20 || c == 0x7f) {
            from = " ";
        }
        if (o + len > limit)
            break;
        memcpy(out + o, from, len);
        o += len;
        i += k;
    }
    while (o && out[o - 1] == ' ')
        o--;
    if (outlen)
        out[o] = '\0';
}

bool gateway_status_permanent(long http_status)
{
    switch (http_status) {
    case 400:
    case 401:
    case 403:
    case 404:
    case 413:
    case 422:
        return true;
    default:
        return false;
    }
}

/* True when needle (lower case) occurs in the n bytes at h, ignoring the
 * case of h. */
static bool has_ci(const char *h, size_t n, const char *needle)
{
    size_t m = strlen(needle);

    for (size_t i = 0; m <= n && i <= n - m; i++) {
        size_t k = 0;

        while (k < m && tolower((unsigned char)h[i + k]) == needle[k])
            k++;
        if (k == m)
            return true;
    }
    return false;
}

bool gw_body_permanent(const char *body, size_t len)
{
    static const char *const markers[] = {
        "context_length_exceeded", "maximum context length",
        "exceed_context_size",     "exceeds the available context",
        "context length exceeded", "model_not_found",
    };
    size_t n = len < 8192 ? len : 8192;

    for (size_t i = 0; i < sizeof markers / sizeof markers[0]; i++)
        if (has_ci(body, n, markers[i]))
            return true;
    return false;
}

void gw_server_message(const char *body, size_t len, char *out,
                       size_t outlen)
{
    cJSON *root = cJSON_ParseWithLength(body, len);
    const cJSON *e, *msg = NULL;

    if (outlen)
        out[0] = '\0';
    /* Only an object is an explanation in JSON: cJSON reads the start of
     * "404 page not found" as the number 404. */
    if (root && !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        root = NULL;
    }
    if (root) {
        e = cJSON_GetObjectItemCaseSensitive(root, "error");
        if (cJSON_IsObject(e))
            msg = cJSON_GetObjectItemCaseSensitive(e, "message");
        else if (cJSON_IsString(e))
            msg = e;
        if (!cJSON_IsString(msg))
            msg = cJSON_GetObjectItemCaseSensitive(root, "message");
        if (cJSON_IsString(msg))
            clean_copy(msg->valuestring, strlen(msg->valuestring), out,
                       outlen);
        cJSON_Delete(root);
        return;
    }
    /* Not JSON (a proxy's HTML page, plain text): its start is still the
     * best explanation there is, unless it is binary. */
    if (body && len && !memchr(body, '\0', len < 512 ? len : 512))
        clean_copy(body, len, out, outlen);
}

void gw_redact(char *s, size_t cap, const char *secret)
{
    static const char mask[] = "[REDACTED]";
    size_t slen, mlen = sizeof mask - 1, n;
    char *p;

    if (!secret || !secret[0] || !s)
        return;
    slen = strlen(secret);
    n = strlen(s);
    p = s;
    while ((p = strstr(p, secret)) != NULL) {
        size_t at = (size_t)(p - s), tail = n - at - slen, keep;

        /* New length at + mlen + tail, truncated to fit cap - 1. */
        keep = tail;
        if (at + mlen >= cap) {
            /* Not even the mask fits: cut the text before the secret. */
            s[at] = '\0';
            return;
        }
        if (at + mlen + keep > cap - 1)
            keep = cap - 1 - at - mlen;
        memmove(s + at + mlen, p + slen, keep);
        memcpy(s + at, mask, mlen);
        n = at + mlen + keep;
        s[n] = '\0';
        p = s + at + mlen;
    }
}

int gw_redact_text(char **s, const char *secret)
{
    static const char mask[] = "[REDACTED]";
    const char *from, *hit;
    size_t slen;
    buf b;
    char *out;

    if (!secret || !secret[0] || !*s || !strstr(*s, secret))
        return 0;
    slen = strlen(secret);
    /* the text came through a capped reply buffer; the copy needs no cap
     * of its own */
    buf_init(&b, (size_t)-1 / 2);
    for (from = *s; (hit = strstr(from, secret)) != NULL; from = hit + slen) {
        if (buf_add(&b, from, (size_t)(hit - from)) || buf_adds(&b, mask))
            goto nomem;
    }
    if (buf_adds(&b, from))
        goto nomem;
    out = buf_detach(&b, NULL);
    if (!out)
        goto nomem;
    explicit_bzero(*s, strlen(*s));
    free(*s);
    *s = out;
    return 0;
nomem:
    explicit_bzero(b.ptr, b.len);
    buf_release(&b);
    return NSED_ENOMEM;
}

int gw_dry_run_line(FILE *f, const workflow_model *m, const char *url,
                    const uint8_t key[HASH_LEN], const char *body)
{
    char hex[HASH_HEX_LEN + 1];
    cJSON *o = cJSON_CreateObject();
    char *text = NULL;
    int rc = NSED_ENOMEM;

    hash_hex(key, hex);
    if (!o || !cJSON_AddStringToObject(o, "model_id", m->id) ||
        !cJSON_AddStringToObject(o, "url", url) ||
        !(m->api_key_env ? cJSON_AddStringToObject(o, "api_key_env",
                                                   m->api_key_env)
                         : cJSON_AddNullToObject(o, "api_key_env")) ||
        !cJSON_AddStringToObject(o, "ledger_key", hex) ||
        !cJSON_AddRawToObject(o, "body", body))
        goto out;
    text = cJSON_PrintUnformatted(o);
    if (!text)
        goto out;
    rc = NSED_EIO;
    if (fputs(text, f) == EOF || fputc('\n', f) == EOF || fflush(f) == EOF)
        goto out;
    rc = 0;
out:
    free(text);
    cJSON_Delete(o);
    return rc;
}
