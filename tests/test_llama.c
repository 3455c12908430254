/* Integration tests of the gateway against a real llama.cpp server.
 *
 * Needs the llama-server binary and gen_tiny_gguf.py from
 * NSED_SOURCE_DIR/../shared/tools/llama (or $NSED_LLAMA_DIR) and python3
 * on PATH; without them it prints one line and exits 77 (skipped).
 *
 * Each test writes two tiny random-weight models (tiny-1, tiny-2) into a
 * temp dir, starts llama-server in router mode on a free 127.0.0.1 port,
 * waits for /health, loads a workflow pointing at it with
 * workflow_load_string and drives requests through the gateway. The server
 * is stopped by its pid (and gets PR_SET_PDEATHSIG, so a failing test never
 * leaves it behind). */
#include "pipeline/gateway/gateway.h"
#include "pipeline/gateway/ledger.h"
#include "store/store.h"
#include "testutil.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>

#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_LLAMA_DIR NSED_SOURCE_DIR "/../shared/tools/llama"


static const char *llama_dir(void)
{
    const char *d = getenv("NSED_LLAMA_DIR");

    return d && *d ? d : DEFAULT_LLAMA_DIR;
}

/* Full path of python3 from PATH (malloc'd), or NULL. */
static char *find_python(void)
{
    const char *path = getenv("PATH");
    const char *p = path ? path : "/usr/bin:/bin";

    while (*p) {
        const char *e = strchr(p, ':');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        char *cand;

        if (n > 0 &&
            asprintf(&cand, "%.*s/python3", (int)n, p) > 0) {
            if (access(cand, X_OK) == 0)
                return cand;
            free(cand);
        }
        p += n;
        if (*p == ':')
            p++;
    }
    return NULL;
}

/* ---- the server --------------------------------------------------------- */

typedef struct llama {
    pid_t pid;
    char *dir;      /* models and the server's log */
    unsigned port;
    char url[64];   /* http://127.0.0.1:PORT/v1 */
} llama;

static unsigned free_port(void)
{
    struct sockaddr_in a = {0};
    socklen_t alen = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    ck_assert(fd >= 0);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert(bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
    ck_assert(getsockname(fd, (struct sockaddr *)&a, &alen) == 0);
    close(fd);
    return (unsigned)ntohs(a.sin_port);
}

static size_t sink(char *data, size_t size, size_t n, void *arg)
{
    (void)data;
    (void)arg;
    return size * n;
}

static long http_get_status(const char *url)
{
    CURL *c = curl_easy_init();
    long status = 0;

    ck_assert_ptr_nonnull(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 1000L);
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    return status;
}

static void gen_model(const char *python, const char *dir, int seed)
{
    char *script = tu_path(llama_dir(), "gen_tiny_gguf.py"), out[512],
         seedtxt[16], *err = NULL;
    char *argv[8];
    int rc;

    snprintf(out, sizeof out, "%s/tiny-%d.gguf", dir, seed);
    snprintf(seedtxt, sizeof seedtxt, "%d", seed);
    argv[0] = (char *)python;
    argv[1] = script;
    argv[2] = out;
    argv[3] = "--seed";
    argv[4] = seedtxt;
    argv[5] = "--eos-bias";
    argv[6] = "0.6";
    argv[7] = NULL;
    rc = tu_run(argv, NULL, &err);
    ck_assert_msg(rc == 0, "gen_tiny_gguf.py failed (%d): %s", rc, err);
    free(err);
    free(script);
}

/* Start the server with the context ctx split across np slots. */
static void llama_start_with(llama *l, const char *ctx, const char *np)
{
    char *python = find_python(), *bin = tu_path(llama_dir(),
                                                 "llama-server");
    char port[16], health[96], *log;
    double t0;

    ck_assert_ptr_nonnull(python);
    memset(l, 0, sizeof *l);
    l->dir = tu_mkdtemp();
    gen_model(python, l->dir, 1);
    gen_model(python, l->dir, 2);
    l->port = free_port();
    snprintf(port, sizeof port, "%u", l->port);
    log = tu_path(l->dir, "server.log");
    l->pid = fork();
    ck_assert(l->pid >= 0);
    if (l->pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);

        /* SIGTERM, not SIGKILL: the router then stops its model children
         * too. */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execl(bin, bin, "--models-dir", l->dir, "--host", "127.0.0.1", "--port",
              port, "-c", ctx, "-np", np, "-t", "1", "--no-webui", "--no-jinja",
              (char *)NULL);
        _exit(127);
    }
    snprintf(l->url, sizeof l->url, "http://127.0.0.1:%u/v1", l->port);
    snprintf(health, sizeof health, "http://127.0.0.1:%u/health", l->port);
    t0 = tu_now_s();
    while (http_get_status(health) != 200) {
        int st;

        ck_assert_msg(waitpid(l->pid, &st, WNOHANG) == 0,
                      "llama-server exited; see %s", log);
        ck_assert_msg(tu_now_s() - t0 < 20, "llama-server not healthy in 20 s");
        usleep(50000);
    }
    free(log);
    free(bin);
    free(python);
}

static void llama_start(llama *l)
{
    llama_start_with(l, "2048", "4");
}

static void llama_stop(llama *l)
{
    double t0 = tu_now_s();
    int st;

    if (l->pid <= 0)
        return;
    ck_assert(kill(l->pid, SIGTERM) == 0);
    while (waitpid(l->pid, &st, WNOHANG) == 0) {
        if (tu_now_s() - t0 > 10) {
            kill(l->pid, SIGKILL);
            waitpid(l->pid, &st, 0);
            break;
        }
        usleep(20000);
    }
    l->pid = 0;
}

static void llama_free(llama *l)
{
    llama_stop(l);
    tu_rmrf(l->dir);
    free(l->dir);
}

/* ---- workflow and gateway ------------------------------------------------ */

static workflow *wf_llama(const llama *l, int cap, long max_tokens)
{
    char *y;
    workflow *wf = NULL;
    nsed_err e = {0};
    int rc;

    ck_assert(asprintf(&y,
                       "name: llama-test\nversion: 1\nmodels:\n"
                       "  - id: t1\n    endpoint: %s\n    model: tiny-1\n"
                       "    max_concurrency: %d\n"
                       "    price: {input_per_mtok: 1, output_per_mtok: 2}\n"
                       "    timeouts: {connect_s: 2, request_s: 30}\n"
                       "    sampling: {temperature: 0.7, max_tokens: %ld, "
                       "seed: 3}\n"
                       "    structured_output: true\n"
                       "  - id: t2\n    endpoint: %s\n    model: tiny-2\n"
                       "    max_concurrency: %d\n"
                       "    sampling: {temperature: 0.7, max_tokens: %ld, "
                       "seed: 4}\n"
                       "    structured_output: true\n"
                       "  - id: ghost\n    endpoint: %s\n    model: no-such\n"
                       "gateway:\n  retry: {max_attempts: 3, base_delay_ms: 10,"
                       " max_delay_ms: 50, max_total_s: 30}\n"
                       "teams:\n  main:\n    roles:\n      - name: solver\n"
                       "        count: 2\n        models: [t1, t2]\n",
                       l->url, cap, max_tokens, l->url, cap, max_tokens,
                       l->url) > 0);
    rc = workflow_load_string("llama-test.yaml", y, strlen(y), &wf, &e);
    ck_assert_msg(rc == 0, "workflow: %s", e.msg);
    free(y);
    return wf;
}

typedef struct got {
    int code;
    enum gateway_error_kind kind;
    long status;
    char *content;
    char *finish;
    gateway_usage usage;
    double cost;
    int attempts;
    bool from_ledger;
    char *error;
} got;

typedef struct ctx {
    gateway *gw;
    got v[64];
    size_t n;
    size_t max_in_flight;
} ctx;

static void on_done(const gateway_result *r, void *user)
{
    ctx *c = user;
    got *g;

    ck_assert_uint_lt(c->n, 64);
    g = &c->v[c->n++];
    g->code = r->code;
    g->kind = r->kind;
    g->status = r->http_status;
    g->content = strdup(r->content);
    g->finish = r->finish_reason ? strdup(r->finish_reason) : NULL;
    g->usage = r->usage;
    g->cost = r->cost_usd;
    g->attempts = r->attempts;
    g->from_ledger = r->from_ledger;
    g->error = strdup(r->error);
}

static void ctx_release(ctx *c)
{
    for (size_t i = 0; i < c->n; i++) {
        free(c->v[i].content);
        free(c->v[i].finish);
        free(c->v[i].error);
    }
}

static gateway *gw_make(const workflow *wf, store *st, ctx *c)
{
    nsed_err e = {0};

    memset(c, 0, sizeof *c);
    ck_assert_msg(gateway_new(wf, st, NULL, &c->gw, &e) == 0, "%s", e.msg);
    return c->gw;
}

static void submit(ctx *c, size_t model, const char *text, const char *schema)
{
    gateway_message msg[2] = {{"system", "You answer briefly."},
                              {"user", text}};
    gateway_request q = {0};
    nsed_err e = {0};

    q.model = model;
    q.messages = msg;
    q.nmessages = 2;
    q.schema = schema;
    q.schema_name = schema ? "evaluation" : NULL;
    ck_assert_msg(gateway_submit(c->gw, &q, on_done, c, &e) == 0, "%s",
                  e.msg);
}

static void run(ctx *c, double max_s)
{
    double t0 = tu_now_s();
    nsed_err e = {0};

    while (gateway_in_flight(c->gw) + gateway_pending(c->gw) > 0) {
        ck_assert_msg(gateway_poll(c->gw, 50, &e) == 0, "%s", e.msg);
        if (gateway_in_flight(c->gw) > c->max_in_flight)
            c->max_in_flight = gateway_in_flight(c->gw);
        ck_assert_msg(tu_now_s() - t0 < max_s, "still busy after %g s", max_s);
    }
}

/* ---- tests ------------------------------------------------------------------ */

START_TEST(plain_completions_with_usage)
{
    llama l;
    workflow *wf;
    ctx c;
    gateway_stats st;

    llama_start(&l);
    wf = wf_llama(&l, 2, 12);
    gw_make(wf, NULL, &c);
    submit(&c, 0, "Say something.", NULL);
    submit(&c, 1, "Say something else.", NULL);
    run(&c, 30);
    ck_assert_uint_eq(c.n, 2);
    for (size_t i = 0; i < 2; i++) {
        const got *g = &c.v[i];

        ck_assert_msg(g->code == 0, "%s", g->error);
        ck_assert_int_eq(g->status, 200);
        ck_assert_int_eq(g->attempts, 1);
        ck_assert_int_gt(g->usage.prompt_tokens, 0);
        ck_assert_int_gt(g->usage.completion_tokens, 0);
        ck_assert_int_le(g->usage.completion_tokens, 12);
        ck_assert_ptr_nonnull(g->finish);
        ck_assert_msg(!strcmp(g->finish, "length") ||
                          !strcmp(g->finish, "stop"),
                      "finish_reason %s", g->finish);
        ck_assert(!g->from_ledger);
    }
    ck_assert_int_eq(gateway_stats_get(c.gw, 0, &st), 0);
    ck_assert_uint_eq(st.ok, 1);
    ck_assert_double_eq_tol(st.cost_usd,
                            (st.prompt_tokens * 1.0 +
                             st.completion_tokens * 2.0) / 1e6, 1e-12);
    gateway_free(c.gw);
    ctx_release(&c);
    workflow_free(wf);
    llama_free(&l);
}
END_TEST

START_TEST(structured_output_follows_the_schema)
{
    static const char schema[] =
        "{\"type\":\"object\",\"properties\":{"
        "\"label\":{\"type\":\"string\",\"enum\":[\"A\",\"B\",\"C\"]},"
        "\"weight\":{\"type\":\"integer\",\"minimum\":-100,\"maximum\":100}},"
        "\"required\":[\"label\",\"weight\"],\"additionalProperties\":false}";
    llama l;
    workflow *wf;
    ctx c;

    llama_start(&l);
    /* Room enough that the constrained reply closes its object. */
    wf = wf_llama(&l, 2, 256);
    gw_make(wf, NULL, &c);
    submit(&c, 0, "Score candidate A.", schema);
    submit(&c, 1, "Score candidate B.", schema);
    run(&c, 60);
    ck_assert_uint_eq(c.n, 2);
    for (size_t i = 0; i < 2; i++) {
        cJSON *j, *label, *weight;

        ck_assert_msg(c.v[i].code == 0, "%s", c.v[i].error);
        j = cJSON_Parse(c.v[i].content);
        ck_assert_msg(cJSON_IsObject(j), "not a JSON object: %s",
                      c.v[i].content);
        label = cJSON_GetObjectItemCaseSensitive(j, "label");
        weight = cJSON_GetObjectItemCaseSensitive(j, "weight");
        ck_assert(cJSON_IsString(label));
        ck_assert(!strcmp(label->valuestring, "A") ||
                  !strcmp(label->valuestring, "B") ||
                  !strcmp(label->valuestring, "C"));
        ck_assert(cJSON_IsNumber(weight));
        ck_assert(weight->valuedouble == (double)(long)weight->valuedouble);
        ck_assert(weight->valuedouble >= -100 && weight->valuedouble <= 100);
        ck_assert_int_eq(cJSON_GetArraySize(j), 2);
        cJSON_Delete(j);
    }
    gateway_free(c.gw);
    ctx_release(&c);
    workflow_free(wf);
    llama_free(&l);
}
END_TEST

/* nsed's evaluation schema for an evaluator shown A, C and D (the exact
 * text tests/test_evaluate.c checks evaluate_schema against): under the
 * grammar llama-server builds from it, even a random-weight model returns
 * exactly three entries, labels from the three, integer weights in range,
 * critiques within the cap. (Labels may repeat: JSON Schema cannot say
 * "each once"; the evaluation reader drops a repeat.) A random model fills
 * each critique to the cap, about 200 tokens, so the slot gets 4096. */
START_TEST(evaluation_schema_forces_one_entry_per_candidate)
{
    static const char schema[] =
        "{\"type\":\"object\",\"properties\":{\"evaluations\":{"
        "\"type\":\"array\",\"minItems\":3,\"maxItems\":3,\"items\":{"
        "\"type\":\"object\",\"properties\":{\"candidate\":{\"type\":"
        "\"string\",\"enum\":[\"A\",\"C\",\"D\"]},\"weight\":{\"type\":"
        "\"integer\",\"minimum\":-100,\"maximum\":100},\"critique\":{"
        "\"type\":\"string\",\"maxLength\":600}},\"required\":["
        "\"candidate\",\"weight\",\"critique\"],"
        "\"additionalProperties\":false}}},\"required\":["
        "\"evaluations\"],\"additionalProperties\":false}";
    llama l;
    workflow *wf;
    ctx c;

    llama_start_with(&l, "8192", "2");
    wf = wf_llama(&l, 2, 3000);
    gw_make(wf, NULL, &c);
    submit(&c, 0, "Score candidates A, C and D.", schema);
    submit(&c, 1, "Score candidates A, C and D.", schema);
    run(&c, 90);
    ck_assert_uint_eq(c.n, 2);
    for (size_t i = 0; i < 2; i++) {
        cJSON *j, *ev, *e;

        ck_assert_msg(c.v[i].code == 0, "%s", c.v[i].error);
        ck_assert_str_eq(c.v[i].finish, "stop");
        j = cJSON_Parse(c.v[i].content);
        ck_assert_msg(cJSON_IsObject(j), "not a JSON object: %s",
                      c.v[i].content);
        ck_assert_int_eq(cJSON_GetArraySize(j), 1);
        ev = cJSON_GetObjectItemCaseSensitive(j, "evaluations");
        ck_assert(cJSON_IsArray(ev));
        ck_assert_int_eq(cJSON_GetArraySize(ev), 3);
        cJSON_ArrayForEach(e, ev) {
            const cJSON *lab = cJSON_GetObjectItemCaseSensitive(e, "candidate");
            const cJSON *w = cJSON_GetObjectItemCaseSensitive(e, "weight");
            const cJSON *cr = cJSON_GetObjectItemCaseSensitive(e, "critique");
            size_t chars = 0;

            ck_assert_int_eq(cJSON_GetArraySize(e), 3);
            ck_assert(cJSON_IsString(lab));
            ck_assert(!strcmp(lab->valuestring, "A") ||
                      !strcmp(lab->valuestring, "C") ||
                      !strcmp(lab->valuestring, "D"));
            ck_assert(cJSON_IsNumber(w));
            ck_assert(w->valuedouble == (double)(long)w->valuedouble);
            ck_assert(w->valuedouble >= -100 && w->valuedouble <= 100);
            ck_assert(cJSON_IsString(cr));
            for (const char *p = cr->valuestring; *p; p++)
                chars += ((unsigned char)*p & 0xC0) != 0x80;
            ck_assert_uint_le(chars, 600);
        }
        cJSON_Delete(j);
    }
    gateway_free(c.gw);
    ctx_release(&c);
    workflow_free(wf);
    llama_free(&l);
}
END_TEST

START_TEST(unknown_model_is_permanent)
{
    llama l;
    workflow *wf;
    ctx c;
    gateway_stats st;

    llama_start(&l);
    wf = wf_llama(&l, 2, 8);
    gw_make(wf, NULL, &c);
    submit(&c, 2, "Hello?", NULL);
    run(&c, 30);
    ck_assert_uint_eq(c.n, 1);
    ck_assert_int_eq(c.v[0].code, NSED_ENET);
    ck_assert_int_eq(c.v[0].kind, GATEWAY_ERR_HTTP);
    ck_assert_int_eq(c.v[0].status, 400);
    ck_assert_int_eq(c.v[0].attempts, 1);
    ck_assert_msg(strstr(c.v[0].error, "model ghost: HTTP 400: ") &&
                      strstr(c.v[0].error, "no-such"),
                  "%s", c.v[0].error);
    ck_assert_int_eq(gateway_stats_get(c.gw, 2, &st), 0);
    ck_assert_uint_eq(st.attempts, 1);
    gateway_free(c.gw);
    ctx_release(&c);
    workflow_free(wf);
    llama_free(&l);
}
END_TEST

START_TEST(concurrency_cap_is_respected)
{
    llama l;
    workflow *wf;
    ctx c;
    char text[64];

    llama_start(&l);
    wf = wf_llama(&l, 2, 24);
    gw_make(wf, NULL, &c);
    for (int i = 0; i < 10; i++) {
        snprintf(text, sizeof text, "Request number %d.", i);
        submit(&c, 0, text, NULL);
    }
    ck_assert_int_eq(gateway_poll(c.gw, 0, NULL), 0);
    ck_assert_uint_eq(gateway_in_flight(c.gw), 2);
    run(&c, 60);
    ck_assert_uint_eq(c.n, 10);
    for (size_t i = 0; i < c.n; i++)
        ck_assert_msg(c.v[i].code == 0, "%s", c.v[i].error);
    ck_assert_uint_eq(c.max_in_flight, 2);
    gateway_free(c.gw);
    ctx_release(&c);
    workflow_free(wf);
    llama_free(&l);
}
END_TEST

static int count_fn(store_txn *t, void *arg, nsed_err *err)
{
    (void)err;
    return ledger_count(t, arg);
}

START_TEST(repeat_is_served_from_the_ledger)
{
    llama l;
    workflow *wf;
    ctx c;
    store *st = NULL;
    store_opts so = {STORE_NOSYNC, 0};
    char *dir = tu_mkdtemp(), *first, health[96];
    nsed_err e = {0};
    size_t n = 0;

    llama_start(&l);
    wf = wf_llama(&l, 2, 12);
    ck_assert_msg(store_open(dir, &so, &st, &e) == 0, "%s", e.msg);
    gw_make(wf, st, &c);
    submit(&c, 1, "Remember this.", NULL);
    run(&c, 30);
    ck_assert_msg(c.v[0].code == 0, "%s", c.v[0].error);
    first = strdup(c.v[0].content);
    ck_assert_int_eq(store_read(st, count_fn, &n, NULL), 0);
    ck_assert_uint_eq(n, 1);
    /* With the server gone, only the ledger can answer. */
    llama_stop(&l);
    snprintf(health, sizeof health, "http://127.0.0.1:%u/health", l.port);
    ck_assert_int_eq(http_get_status(health), 0);
    submit(&c, 1, "Remember this.", NULL);
    run(&c, 10);
    ck_assert_uint_eq(c.n, 2);
    ck_assert_int_eq(c.v[1].code, 0);
    ck_assert(c.v[1].from_ledger);
    ck_assert_str_eq(c.v[1].content, first);
    ck_assert_int_eq(c.v[1].usage.completion_tokens,
                     c.v[0].usage.completion_tokens);
    gateway_free(c.gw);
    store_close(st);
    free(first);
    ctx_release(&c);
    workflow_free(wf);
    llama_free(&l);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* One reply per prompt index, for comparing two passes. */
typedef struct pass {
    char *content[12];
    size_t n;
} pass;

typedef struct pass_call {
    pass *p;
    size_t i;
} pass_call;

static void on_pass(const gateway_result *r, void *user)
{
    pass_call *pc = user;

    ck_assert_msg(r->code == 0, "call %zu failed: %s", pc->i, r->error);
    pc->p->content[pc->i] = strdup(r->content);
    pc->p->n++;
}

/* Twelve prompts with a long shared prefix (what the prompt cache would
 * reuse), each with its own per-call seed, through a fresh gateway. */
static void one_pass(const workflow *wf, pass *p)
{
    gateway *gw = NULL;
    pass_call calls[12];
    nsed_err e = {0};
    double t0 = tu_now_s();

    memset(p, 0, sizeof *p);
    ck_assert_msg(gateway_new(wf, NULL, NULL, &gw, &e) == 0, "%s", e.msg);
    for (size_t i = 0; i < 12; i++) {
        char text[256];
        gateway_message msg[2] = {{"system", "You answer briefly and you "
                                             "always show your work."},
                                  {"user", text}};
        gateway_request q = {0};

        snprintf(text, sizeof text,
                 "Here is a question about numbers. "
                 "Please think about it carefully. Question %zu: what is "
                 "%zu plus %zu?",
                 i, i, 2 * i);
        q.model = 0;
        q.messages = msg;
        q.nmessages = 2;
        q.has_seed = true;
        q.seed = (int64_t)(1000 + i);
        q.seat = (int)i;
        calls[i] = (pass_call){p, i};
        ck_assert_msg(gateway_submit(gw, &q, on_pass, &calls[i], &e) == 0, "%s",
                      e.msg);
    }
    while (gateway_in_flight(gw) + gateway_pending(gw) > 0) {
        ck_assert_msg(gateway_poll(gw, 50, &e) == 0, "%s", e.msg);
        ck_assert_msg(tu_now_s() - t0 < 60, "still busy after 60 s");
    }
    ck_assert_uint_eq(p->n, 12);
    gateway_free(gw);
}

/* With one seed and cache_prompt: false (through extra_body), two
 * uninterrupted passes over the same prompts on one server (the second
 * with a warm prompt cache) give the same reply to every prompt. */
START_TEST(extra_body_cache_prompt_false_is_reproducible)
{
    llama l;
    workflow *wf = NULL;
    nsed_err e = {0};
    char *y;
    pass a, b;
    size_t same = 0;

    llama_start(&l);
    ck_assert(asprintf(&y,
                       "name: llama-repro\nversion: 1\nmodels:\n"
                       "  - id: t1\n    endpoint: %s\n    model: tiny-1\n"
                       "    max_concurrency: 4\n"
                       "    timeouts: {connect_s: 2, request_s: 30}\n"
                       "    sampling: {temperature: 0.7, max_tokens: 24, "
                       "seed: 3}\n"
                       "    extra_body: {cache_prompt: false}\n"
                       "teams:\n  main:\n    roles:\n      - name: solver\n"
                       "        count: 2\n        models: [t1]\n",
                       l.url) > 0);
    ck_assert_msg(workflow_load_string("r.yaml", y, strlen(y), &wf, &e) == 0,
                  "%s", e.msg);
    one_pass(wf, &a);
    one_pass(wf, &b);
    for (size_t i = 0; i < 12; i++) {
        same += strcmp(a.content[i], b.content[i]) == 0;
        free(a.content[i]);
        free(b.content[i]);
    }
    ck_assert_msg(same == 12, "%zu of 12 replies agree", same);
    workflow_free(wf);
    free(y);
    llama_free(&l);
}
END_TEST

Suite *tu_suite(void)
{
    char bin[4096], gen[4096], *python = find_python();
    Suite *su;
    TCase *tc;

    /* No testutil helpers here: they report through Check, which is not
     * running yet. */
    snprintf(bin, sizeof bin, "%s/llama-server", llama_dir());
    snprintf(gen, sizeof gen, "%s/gen_tiny_gguf.py", llama_dir());
    if (access(bin, X_OK) != 0 || access(gen, R_OK) != 0 || !python) {
        printf("test_llama: skipped: %s not found\n",
               !python ? "python3" : access(bin, X_OK) ? bin : gen);
        free(python);
        return NULL;
    }
    free(python);
    su = suite_create("llama");
    tc = tcase_create("llama_server");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, plain_completions_with_usage);
    tcase_add_test(tc, structured_output_follows_the_schema);
    tcase_add_test(tc, unknown_model_is_permanent);
    tcase_add_test(tc, concurrency_cap_is_respected);
    tcase_add_test(tc, repeat_is_served_from_the_ledger);
    tcase_add_test(tc, evaluation_schema_forces_one_entry_per_candidate);
    tcase_add_test(tc, extra_body_cache_prompt_false_is_reproducible);
    suite_add_tcase(su, tc);
    return su;
}
