/* test_prefix.c -- the prefix-cache figures of `nsed status`.
 *
 * A run of demo questions against nsed-sim with NSED_SIM_REQUEST_LOG; the
 * test then computes, from the logged request bodies alone, what the
 * simulator's documented prefix cache (docs/nsed-sim.md: the longest
 * common prefix, in characters / 4, with one of the model's 64 most recent
 * conversations, each the prompt followed by its reply as an assistant
 * turn) must have reported, and the kind of each call from its messages.
 * The replies are fetched again by sending each logged body to a second,
 * fresh nsed-sim with the same config (a reply is a pure function of the
 * request). status's per-kind prompt and cached tokens must equal those
 * sums, and its text line the shares. */
#include "testutil.h"

#include <check.h>
#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEMO_WF NSED_SOURCE_DIR "/workflows/demo.yaml"
#define DEMO_Q NSED_SOURCE_DIR "/workflows/demo-questions.jsonl"
#define DEMO_SIM NSED_SOURCE_DIR "/tests/sim/configs/demo-sim.yaml"
#define NQ 12
#define RECENT 64
#define NKINDS 4

static const char *const kinds[NKINDS] = {"propose", "revise", "evaluate",
                                          "repair"};

/* The demo workflow with one call in flight per model, so the order the
 * log holds a model's requests in is the order its cache saw them. */
static char *write_workflow(void)
{
    char *text = tu_read_file(DEMO_WF, NULL), *p, *path;

    while ((p = strstr(text, "max_concurrency: 8")) != NULL)
        memcpy(p, "max_concurrency: 1", strlen("max_concurrency: 1"));
    path = tu_path(tu_tmp, "wf.yaml");
    tu_write_file(path, text, strlen(text));
    free(text);
    return path;
}

static char *write_questions(void)
{
    char *all = tu_read_file(DEMO_Q, NULL), *p = all, *path;

    for (int i = 0; i < NQ && p; i++) {
        p = strchr(p, '\n');
        if (p)
            p++;
    }
    ck_assert_ptr_nonnull(p);
    path = tu_path(tu_tmp, "q.jsonl");
    tu_write_file(path, all, (size_t)(p - all));
    free(all);
    return path;
}

typedef struct grow {
    char *p;
    size_t len;
} grow;

static void grow_add(grow *g, const char *d, size_t len)
{
    char *v = realloc(g->p, g->len + len + 1);

    ck_assert_ptr_nonnull(v);
    memcpy(v + g->len, d, len);
    g->len += len;
    v[g->len] = '\0';
    g->p = v;
}

static size_t sink(char *d, size_t size, size_t n, void *arg)
{
    grow_add(arg, d, size * n);
    return size * n;
}

/* The reply content the simulator at url gives to body. */
static char *reply_of(const char *url, const char *body)
{
    CURL *c = curl_easy_init();
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: "
                                                   "application/json");
    char full[128], *content;
    grow resp = {0};
    cJSON *j, *msg;

    snprintf(full, sizeof full, "%s/chat/completions", url);
    curl_easy_setopt(c, CURLOPT_URL, full);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &resp);
    ck_assert_int_eq(curl_easy_perform(c), CURLE_OK);
    curl_easy_cleanup(c);
    curl_slist_free_all(h);
    j = cJSON_Parse(resp.p);
    msg = cJSON_GetObjectItem(
        cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j,
                                                                   "choices"),
                                               0),
                            "message"),
        "content");
    ck_assert(cJSON_IsString(msg));
    content = strdup(msg->valuestring);
    cJSON_Delete(j);
    free(resp.p);
    return content;
}

/* The kind of a logged call, from its messages: an evaluation's last user
 * message holds the candidates, a repair follows such a message, a
 * revision holds a "Round N." line, anything else is a round-0 proposal. */
static int kind_of(const cJSON *msgs)
{
    int n = cJSON_GetArraySize(msgs);
    const char *last = cJSON_GetObjectItem(cJSON_GetArrayItem(msgs, n - 1),
                                           "content")
                           ->valuestring;

    if (strstr(last, "=====BEGIN CANDIDATE "))
        return 2;
    for (int i = 0; i < n - 1; i++)
        if (strstr(cJSON_GetObjectItem(cJSON_GetArrayItem(msgs, i), "content")
                       ->valuestring,
                   "=====BEGIN CANDIDATE "))
            return 3;
    if (strstr(last, "\n\nRound "))
        return 1;
    return 0;
}

typedef struct model_cache {
    char name[64];
    char *recent[RECENT];
    size_t next;
} model_cache;

START_TEST(status_cached_share_by_kind_matches_the_log)
{
    char *wf = write_workflow(), *q = write_questions();
    char *store = tu_path(tu_tmp, "store"), *log = tu_path(tu_tmp, "req.log");
    char *out = NULL, *err = NULL, *text, *line, *save = NULL;
    double prompt[NKINDS] = {0}, cached[NKINDS] = {0};
    model_cache mc[8];
    size_t nmc = 0, calls = 0;
    tu_sim sim, replay;
    cJSON *st, *by;
    int rc;

    memset(mc, 0, sizeof mc);
    setenv("NSED_SIM_REQUEST_LOG", log, 1);
    tu_sim_start(&sim, DEMO_SIM, NULL, NULL);
    unsetenv("NSED_SIM_REQUEST_LOG");
    rc = TU_NSED(sim.url, &out, &err, "run", wf, "--questions", q, "--store",
                 store, "--quiet");
    tu_sim_stop(&sim);
    ck_assert_msg(rc == 0, "run exit %d: %s", rc, err);
    free(out);
    free(err);

    tu_sim_start(&replay, DEMO_SIM, NULL, NULL);
    text = tu_read_file(log, NULL);
    for (line = text; line && *line; line = save) {
        cJSON *body, *msgs, *m;
        const char *model;
        model_cache *c = NULL;
        size_t len, chars = 0, best = 0, pt;
        grow pt_text = {0};
        char *prompt_text, *reply, *entry;
        int k;

        save = strchr(line, '\n');
        if (save)
            *save++ = '\0';
        body = cJSON_Parse(line);
        ck_assert_ptr_nonnull(body);
        model = cJSON_GetObjectItem(body, "model")->valuestring;
        msgs = cJSON_GetObjectItem(body, "messages");
        for (size_t i = 0; i < nmc; i++)
            if (!strcmp(mc[i].name, model))
                c = &mc[i];
        if (!c) {
            ck_assert_uint_lt(nmc, 8);
            c = &mc[nmc++];
            snprintf(c->name, sizeof c->name, "%s", model);
        }
        cJSON_ArrayForEach(m, msgs) {
            const char *role = cJSON_GetObjectItem(m, "role")->valuestring;
            const char *content =
                cJSON_GetObjectItem(m, "content")->valuestring;

            grow_add(&pt_text, role, strlen(role));
            grow_add(&pt_text, "\n", 1);
            grow_add(&pt_text, content, strlen(content));
            grow_add(&pt_text, "\n", 1);
            chars += strlen(content);
        }
        prompt_text = pt_text.p;
        len = pt_text.len;
        for (size_t e = 0; e < RECENT; e++) {
            size_t lcp = 0;

            while (c->recent[e] && prompt_text[lcp] &&
                   prompt_text[lcp] == c->recent[e][lcp])
                lcp++;
            if (lcp > best)
                best = lcp;
        }
        pt = chars / 4 ? chars / 4 : 1;
        k = kind_of(msgs);
        prompt[k] += (double)pt;
        cached[k] += (double)(best / 4 < pt ? best / 4 : pt);
        reply = reply_of(replay.url, line);
        entry = malloc(len + strlen("assistant\n\n") + strlen(reply) + 1);
        ck_assert_ptr_nonnull(entry);
        snprintf(entry, len + strlen("assistant\n\n") + strlen(reply) + 1,
                 "%sassistant\n%s\n", prompt_text, reply);
        free(c->recent[c->next]);
        c->recent[c->next] = entry;
        c->next = (c->next + 1) % RECENT;
        free(reply);
        free(prompt_text);
        cJSON_Delete(body);
        calls++;
    }
    tu_sim_stop(&replay);
    ck_assert_uint_gt(calls, 3 * NQ);
    /* the run had revisions and evaluations, and the cache served some */
    ck_assert(prompt[1] > 0 && prompt[2] > 0);
    ck_assert(cached[1] > 0 && cached[2] > 0);

    st = tu_nsed_status(store);
    by = cJSON_GetObjectItem(cJSON_GetObjectItem(st, "prefix_cache"),
                             "by_kind");
    ck_assert_ptr_nonnull(by);
    for (int k = 0; k < NKINDS; k++) {
        const cJSON *e = cJSON_GetObjectItem(by, kinds[k]);

        if (prompt[k] == 0) {
            ck_assert_ptr_null(e);
            continue;
        }
        ck_assert_msg(e, "no %s in prefix_cache.by_kind", kinds[k]);
        ck_assert_double_eq(tu_jnum(e, "prompt_tokens", NULL), prompt[k]);
        ck_assert_double_eq(tu_jnum(e, "cached_tokens", NULL), cached[k]);
        ck_assert_double_eq_tol(tu_jnum(e, "share", NULL),
                                cached[k] / prompt[k], 1e-12);
    }
    cJSON_Delete(st);

    /* the text line: the same shares, three decimals */
    rc = TU_NSED(NULL, &out, &err, "status", "--store", store);
    ck_assert_int_eq(rc, 0);
    for (int k = 0; k < NKINDS; k++) {
        char want[64];

        if (prompt[k] == 0)
            continue;
        snprintf(want, sizeof want, " %s %.3f", kinds[k],
                 cached[k] / prompt[k]);
        ck_assert_msg(tu_contains(out, "prefix:     cached share of prompt "
                                       "tokens by kind of call:"),
                      "%s", out);
        ck_assert_msg(tu_contains(out, want), "no \"%s\" in %s", want, out);
    }
    free(out);
    free(err);
    for (size_t i = 0; i < nmc; i++)
        for (size_t e = 0; e < RECENT; e++)
            free(mc[i].recent[e]);
    free(text);
    free(wf);
    free(q);
    free(store);
    free(log);
}
END_TEST

Suite *tu_suite(void)
{
    Suite *s = suite_create("prefix");
    TCase *t = tcase_create("status");

    tcase_add_checked_fixture(t, tu_tmp_setup, tu_tmp_teardown);
    tcase_set_timeout(t, 240);
    tcase_add_test(t, status_cached_share_by_kind_matches_the_log);
    suite_add_tcase(s, t);
    return s;
}
