/* gateway_preflight.c -- GET {endpoint}/models before a run (gateway.h).
 *
 * A dead endpoint found here costs seconds; found by the runner it costs
 * every question's retry budget. One blocking libcurl easy transfer per
 * distinct (endpoint, key variable): the run has not started, so there
 * is nothing to overlap with. */
#include "pipeline/gateway/gateway.h"

#include "pipeline/base/buf.h"
#include "pipeline/base/suggest.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What one GET found. */
typedef struct probe {
    CURLcode curl; /* CURLE_OK when an answer came */
    long status;   /* HTTP status of the answer */
    cJSON *list;   /* the "data" array of a 2xx list, else NULL */
    cJSON *root;   /* the parsed body owning list */
    char curl_msg[CURL_ERROR_SIZE];
} probe;

static size_t on_body(char *ptr, size_t size, size_t n, void *user)
{
    buf *b = user;

    /* a full buffer aborts the transfer: a list that large is no list */
    return buf_add(b, ptr, size * n) ? 0 : size * n;
}

static bool key_env_eq(const char *a, const char *b)
{
    return (!a && !b) || (a && b && !strcmp(a, b));
}

static int run_probe(const workflow_model *m, probe *p, nsed_err *err)
{
    CURL *h = curl_easy_init();
    struct curl_slist *hdr = NULL;
    char *url = NULL, *auth = NULL;
    const char *key = m->api_key_env ? getenv(m->api_key_env) : NULL;
    double connect_s = m->connect_timeout_s < GATEWAY_PREFLIGHT_CONNECT_S
                           ? m->connect_timeout_s
                           : GATEWAY_PREFLIGHT_CONNECT_S;
    buf body;
    int rc = 0;

    buf_init(&body, GATEWAY_PREFLIGHT_MAX_BYTES);
    memset(p, 0, sizeof *p);
    if (!h || asprintf(&url, "%s/models", m->endpoint) < 0) {
        url = NULL;
        rc = nsed_error(err, NSED_ENOMEM, "out of memory");
        goto out;
    }
    if (key && *key) {
        if (asprintf(&auth, "Authorization: Bearer %s", key) < 0) {
            auth = NULL;
            rc = nsed_error(err, NSED_ENOMEM, "out of memory");
            goto out;
        }
        hdr = curl_slist_append(NULL, auth);
        if (!hdr) {
            rc = nsed_error(err, NSED_ENOMEM, "out of memory");
            goto out;
        }
    }
    if (curl_easy_setopt(h, CURLOPT_URL, url) ||
        curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https") ||
        curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L) ||
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L) ||
        curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
                         (long)(connect_s * 1000.0)) ||
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS,
                         (long)(GATEWAY_PREFLIGHT_TOTAL_S * 1000.0)) ||
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr) ||
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body) ||
        curl_easy_setopt(h, CURLOPT_WRITEDATA, &body) ||
        curl_easy_setopt(h, CURLOPT_ERRORBUFFER, p->curl_msg)) {
        rc = nsed_error(err, NSED_ENOMEM, "cannot set up libcurl");
        goto out;
    }
    p->curl = curl_easy_perform(h);
    if (p->curl == CURLE_OK) {
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &p->status);
        if (p->status >= 200 && p->status < 300) {
            const cJSON *d;

            p->root = cJSON_ParseWithLength(body.ptr, body.len);
            d = cJSON_GetObjectItemCaseSensitive(p->root, "data");
            if (cJSON_IsArray(d))
                p->list = (cJSON *)d;
        }
    } else if (!p->curl_msg[0]) {
        snprintf(p->curl_msg, sizeof p->curl_msg, "%s",
                 curl_easy_strerror(p->curl));
    }
out:
    curl_slist_free_all(hdr);
    if (auth) {
        /* the key lived here: do not leave it in freed memory */
        memset(auth, 0, strlen(auth));
        free(auth);
    }
    free(url);
    buf_release(&body);
    curl_easy_cleanup(h);
    return rc;
}

/* Whether the list holds the served name; *closest the nearest listed id
 * (for the hint), NULL when none. */
static bool listed(const cJSON *list, const char *name, const char **closest)
{
    const char *ids[64];
    size_t n = 0;
    const cJSON *e;

    *closest = NULL;
    cJSON_ArrayForEach(e, list) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(e, "id");

        if (!cJSON_IsString(id))
            continue;
        if (!strcmp(id->valuestring, name))
            return true;
        if (n < sizeof ids / sizeof ids[0])
            ids[n++] = id->valuestring;
    }
    *closest = suggest_closest(name, ids, n, NULL);
    return false;
}

/* Judge what p found for model m. */
static int judge(const workflow_model *m, const probe *p, gateway_log_fn note,
                 void *user, nsed_err *err)
{
    char line[512];
    const char *near;

    if (p->curl != CURLE_OK)
        return nsed_error(err, NSED_EINVAL,
                          "model %s (%s at %s): preflight GET %s/models "
                          "failed: %s; is the server running and the "
                          "endpoint right? (--no-preflight skips this check)",
                          m->id, m->model, m->endpoint, m->endpoint,
                          p->curl_msg);
    if (p->status == 401 || p->status == 403)
        return nsed_error(err, NSED_EINVAL,
                          "model %s (%s at %s): the endpoint refused %s "
                          "(HTTP %ld on GET %s/models)",
                          m->id, m->model, m->endpoint,
                          m->api_key_env ? "the API key"
                                         : "a request "
                                           "without an API "
                                           "key",
                          p->status, m->endpoint);
    if (p->list) {
        if (listed(p->list, m->model, &near))
            return 0;
        return nsed_error(err, NSED_EINVAL,
                          "model %s: the endpoint %s does not serve a model "
                          "named \"%s\" (GET %s/models lists %d%s%s%s); "
                          "check models[].model",
                          m->id, m->endpoint, m->model, m->endpoint,
                          cJSON_GetArraySize(p->list),
                          near ? " models; did you mean \"" : " models",
                          near ? near : "", near ? "\"?" : "");
    }
    if (!note)
        return 0;
    if (p->status >= 200 && p->status < 300)
        snprintf(line, sizeof line,
                 "preflight: model %s: %s/models answered no list of "
                 "models; the model name is not checked",
                 m->id, m->endpoint);
    else
        snprintf(line, sizeof line,
                 "preflight: model %s: %s/models answered HTTP %ld; the "
                 "endpoint is reachable, the model name is not checked",
                 m->id, m->endpoint, p->status);
    note(line, user);
    return 0;
}

int gateway_preflight(const workflow *wf, const bool *use, gateway_log_fn note,
                      void *user, nsed_err *err)
{
    probe *ps = calloc(wf->nmodels ? wf->nmodels : 1, sizeof *ps);
    bool *done = calloc(wf->nmodels ? wf->nmodels : 1, sizeof *done);
    int rc = 0;

    if (!ps || !done) {
        rc = nsed_error(err, NSED_ENOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < wf->nmodels && !rc; i++) {
        const workflow_model *m = &wf->models[i];
        const probe *p = NULL;

        if (use && !use[i])
            continue;
        /* one GET per endpoint and key: the same list judges each model */
        for (size_t j = 0; j < i && !p; j++) {
            if (done[j] && !strcmp(wf->models[j].endpoint, m->endpoint) &&
                key_env_eq(wf->models[j].api_key_env, m->api_key_env))
                p = &ps[j];
        }
        if (!p) {
            rc = run_probe(m, &ps[i], err);
            if (rc)
                break;
            done[i] = true;
            p = &ps[i];
        }
        rc = judge(m, p, note, user, err);
    }
out:
    for (size_t i = 0; ps && i < wf->nmodels; i++)
        cJSON_Delete(ps[i].root);
    free(ps);
    free(done);
    return rc;
}
