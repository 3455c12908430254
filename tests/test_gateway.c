/* Tests for the LLM gateway and the call ledger.
 *
 * Network tests run the real nsed-sim (NSED_SIM_BIN) on 127.0.0.1, port 0,
 * configured by tests/data/gateway/sim.yaml (one simulated model per
 * behaviour), and read its counters from /sim/stats. Tests that need full
 * control of the bytes on the wire (the Authorization header, an oversized
 * body, a redirect, a Retry-After date) use a tiny canned HTTP server
 * forked by the test itself. Every child gets PR_SET_PDEATHSIG so that a
 * failing test never leaves a server behind. */
#include "pipeline/gateway/gateway.h"
#include "pipeline/gateway/gateway_int.h"
#include "pipeline/gateway/ledger.h"
#include "store/store.h"
#include "testutil.h"

/* ledger_key of the call in no_extra_body_keeps_ledger_keys, computed by
 * the ledger of commit bbd6968 (before extra_body). Since key form 2 it is
 * that call's ledger_key_legacy (form 1, endpoint URL first). */
#define PINNED_KEY_NO_EXTRA \
    "b7dbe90b0bbb5fbab0c42d04494a45e9d954fce2b5f5c1bd27e47bae6dcf212c"

/* ledger_key (form 2) of the same call with model id "alpha", computed
 * outside nsed: SHA-256 over the fields of ledger.h, each as an 8-byte
 * little-endian length and its bytes, in order "nsed-ledger-key-2",
 * "alpha", "m", "messages=1", "user", "hi",
 * "temperature=0.69999999999999996", "top_p=1", "max_tokens=16",
 * "seed=none", "stop=0", "response_format=none", "", "seat=0",
 * "round=0", "sample=0" (Python hashlib; the same recipe with
 * "nsed-ledger-key-1" and the URL in place of the first two gives
 * PINNED_KEY_NO_EXTRA). */
#define PINNED_KEY_FORM2 \
    "e287b505d8df5d2570150ddc562bf2ad953d42a767ac8909e732ff5180bd976e"

#include <cjson/cJSON.h>

#include <arpa/inet.h>
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SIM_CONFIG NSED_SOURCE_DIR "/tests/data/gateway/sim.yaml"
#define TEST_KEY "sk-test-SECRET123"


/* ---- nsed-sim ------------------------------------------------------------- */

typedef tu_sim sim;

static void sim_start(sim *s)
{
    tu_sim_start(s, SIM_CONFIG, NULL, NULL);
}

static void sim_stop(sim *s)
{
    tu_sim_stop(s);
}

static cJSON *sim_stats(const sim *s)
{
    return tu_sim_stats(s);
}

static double stat_of(const sim *s, const char *model, const char *field)
{
    return tu_sim_stat(s, model, field);
}

/* ---- a canned HTTP server ---------------------------------------------- */

/* Answers connection i with responses[min(i, n-1)] (complete HTTP
 * responses, "Connection: close") and appends every request it reads to
 * DIR/requests. */
typedef struct canned {
    pid_t pid;
    char *dir;
    char *log;
    char url[64];
} canned;

static char *http_response(int status, const char *headers, const char *body)
{
    char *s;

    ck_assert(asprintf(&s, "HTTP/1.1 %d X\r\nContent-Type: application/json"
                       "\r\nContent-Length: %zu\r\nConnection: close\r\n%s"
                       "\r\n%s", status, strlen(body), headers ? headers : "",
                       body) > 0);
    return s;
}

static const char *find_ci(const char *hay, const char *needle)
{
    size_t n = strlen(needle);

    for (; *hay; hay++)
        if (!strncasecmp(hay, needle, n))
            return hay;
    return NULL;
}

static void canned_serve(int ls, const char *log, char *const *responses,
                         size_t n)
{
    for (size_t i = 0;; i++) {
        int c = accept(ls, NULL, NULL), lf;
        char req[65536];
        size_t len = 0, want = 0;
        const char *hend = NULL, *cl, *resp;

        if (c < 0)
            _exit(1);
        while (len + 1 < sizeof req) {
            ssize_t r = read(c, req + len, sizeof req - 1 - len);

            if (r <= 0)
                break;
            len += (size_t)r;
            req[len] = '\0';
            if (!hend && (hend = strstr(req, "\r\n\r\n")) != NULL) {
                cl = find_ci(req, "\r\nContent-Length:");
                want = (size_t)(hend - req) + 4 +
                       (cl ? strtoul(cl + 17, NULL, 10) : 0);
            }
            if (hend && len >= want)
                break;
        }
        lf = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (lf >= 0) {
            if (write(lf, req, len) < 0 || write(lf, "\n----\n", 6) < 0)
                _exit(1);
            close(lf);
        }
        resp = responses[i < n ? i : n - 1];
        for (size_t off = 0, rl = strlen(resp); off < rl;) {
            ssize_t w = write(c, resp + off, rl - off);

            if (w <= 0)
                break;
            off += (size_t)w;
        }
        shutdown(c, SHUT_WR);
        close(c);
    }
}

static void canned_start(canned *cs, char *const *responses, size_t n)
{
    struct sockaddr_in a = {0};
    socklen_t alen = sizeof a;
    int ls;

    memset(cs, 0, sizeof *cs);
    cs->dir = tu_mkdtemp();
    cs->log = tu_path(cs->dir, "requests");
    ls = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert(ls >= 0);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert(bind(ls, (struct sockaddr *)&a, sizeof a) == 0);
    ck_assert(listen(ls, 16) == 0);
    ck_assert(getsockname(ls, (struct sockaddr *)&a, &alen) == 0);
    cs->pid = fork();
    ck_assert(cs->pid >= 0);
    if (cs->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        canned_serve(ls, cs->log, responses, n);
        _exit(0);
    }
    close(ls);
    snprintf(cs->url, sizeof cs->url, "http://127.0.0.1:%u/v1",
             (unsigned)ntohs(a.sin_port));
}

/* Stop the server; return what it logged (caller frees; "" when none). */
static char *canned_stop(canned *cs)
{
    char *log;

    kill(cs->pid, SIGKILL);
    waitpid(cs->pid, NULL, 0);
    log = tu_read_file(cs->log, NULL);
    tu_rmrf(cs->dir);
    free(cs->dir);
    free(cs->log);
    return log ? log : strdup("");
}

static size_t count_of(const char *hay, const char *needle)
{
    size_t n = 0;

    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p++)
        n++;
    return n;
}

/* ---- workflows ------------------------------------------------------------ */

typedef struct mspec {
    const char *id;
    const char *served;   /* served model name */
    int cap;
    const char *extra;    /* more YAML lines for the model, indented 4 */
} mspec;

#define DEFAULT_GATEWAY \
    "gateway:\n" \
    "  retry: {max_attempts: 6, base_delay_ms: 10, max_delay_ms: 50, " \
    "max_total_s: 20}\n"

static workflow *wf_make(const char *url, const mspec *ms, size_t n,
                         const char *gateway_yaml)
{
    buf y;
    workflow *wf = NULL;
    nsed_err e = {0};
    int rc;

    buf_init(&y, 1 << 20);
    ck_assert_int_eq(buf_adds(&y, "name: gwtest\nversion: 1\nmodels:\n"), 0);
    for (size_t i = 0; i < n; i++)
        ck_assert_int_eq(buf_printf(&y, "  - id: %s\n    endpoint: %s\n"
                                        "    model: %s\n"
                                        "    max_concurrency: %d\n%s",
                                    ms[i].id, url, ms[i].served,
                                    ms[i].cap ? ms[i].cap : 4,
                                    ms[i].extra ? ms[i].extra : ""),
                         0);
    ck_assert_int_eq(buf_adds(&y, gateway_yaml ? gateway_yaml
                                               : DEFAULT_GATEWAY),
                     0);
    ck_assert_int_eq(buf_printf(&y, "teams:\n  main:\n    roles:\n"
                                    "      - name: solver\n        count: 2\n"
                                    "        models: [%s]\n", ms[0].id),
                     0);
    rc = workflow_load_string("gwtest.yaml", y.ptr, y.len, &wf, &e);
    ck_assert_msg(rc == 0, "workflow: %s\n%s", e.msg, y.ptr);
    buf_release(&y);
    return wf;
}

/* ---- collecting results --------------------------------------------------- */

typedef struct got {
    int tag;
    int code;
    enum gateway_error_kind kind;
    long status;
    char *content;
    char *finish;
    gateway_usage usage;
    double cost;
    double latency;
    int attempts;
    bool from_ledger;
    bool permanent;
    char *error;
    size_t model;
    uint8_t key[HASH_LEN];
} got;

typedef struct tctx tctx;

typedef struct ticket {
    tctx *c;
    int tag;
} ticket;

#define MAX_TICKETS 1024

struct tctx {
    gateway *gw;
    got *v;
    size_t n, cap;
    ticket t[MAX_TICKETS];
    size_t nt;
    buf log;
    int chain_left; /* on_done_chain: follow-ups still to submit */
};

static void tctx_init(tctx *c)
{
    memset(c, 0, sizeof *c);
    buf_init(&c->log, 1 << 20);
}

static void tctx_release(tctx *c)
{
    for (size_t i = 0; i < c->n; i++) {
        free(c->v[i].content);
        free(c->v[i].finish);
        free(c->v[i].error);
    }
    free(c->v);
    buf_release(&c->log);
}

static void on_log(const char *line, void *user)
{
    tctx *c = user;

    ck_assert_ptr_null(strchr(line, '\n'));
    ck_assert_int_eq(buf_printf(&c->log, "%s\n", line), 0);
}

static void on_done(const gateway_result *r, void *user)
{
    ticket *t = user;
    tctx *c = t->c;
    got *g;

    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 64;
        c->v = realloc(c->v, c->cap * sizeof *c->v);
        ck_assert_ptr_nonnull(c->v);
    }
    g = &c->v[c->n++];
    memset(g, 0, sizeof *g);
    g->tag = t->tag;
    g->code = r->code;
    g->kind = r->kind;
    g->status = r->http_status;
    ck_assert_ptr_nonnull(r->content);
    ck_assert_uint_eq(strlen(r->content), r->content_len);
    g->content = strdup(r->content);
    g->finish = r->finish_reason ? strdup(r->finish_reason) : NULL;
    g->usage = r->usage;
    g->cost = r->cost_usd;
    g->latency = r->latency_s;
    g->attempts = r->attempts;
    g->from_ledger = r->from_ledger;
    g->permanent = r->permanent;
    ck_assert_ptr_nonnull(r->error);
    g->error = strdup(r->error);
    g->model = r->model;
    memcpy(g->key, r->key, HASH_LEN);
}

static void *tk(tctx *c, int tag)
{
    ck_assert(c->nt < MAX_TICKETS);
    c->t[c->nt] = (ticket){c, tag};
    return &c->t[c->nt++];
}

static const got *got_tag(const tctx *c, int tag)
{
    for (size_t i = 0; i < c->n; i++)
        if (c->v[i].tag == tag)
            return &c->v[i];
    ck_abort_msg("no result for tag %d", tag);
    return NULL;
}

static gateway *gw_make(const workflow *wf, store *st, tctx *c, FILE *dry)
{
    gateway_opts o = {0};
    gateway *gw = NULL;
    nsed_err e = {0};

    o.dry_run = dry;
    o.log = on_log;
    o.log_user = c;
    o.jitter_seed = 7;
    ck_assert_msg(gateway_new(wf, st, &o, &gw, &e) == 0, "gateway_new: %s",
                  e.msg);
    c->gw = gw;
    return gw;
}

static void req_fill(gateway_request *q, gateway_message msg[2], size_t model,
                     const char *text, int seat, int round)
{
    memset(q, 0, sizeof *q);
    msg[0] = (gateway_message){"system", "You are terse."};
    msg[1] = (gateway_message){"user", text};
    q->model = model;
    q->messages = msg;
    q->nmessages = 2;
    q->seat = seat;
    q->round = round;
}

static void submit(tctx *c, size_t model, const char *text, int seat,
                   int round, int tag)
{
    gateway_message msg[2];
    gateway_request q;
    nsed_err e = {0};

    req_fill(&q, msg, model, text, seat, round);
    ck_assert_msg(gateway_submit(c->gw, &q, on_done, tk(c, tag), &e) == 0,
                  "submit: %s", e.msg);
}

/* Poll until nothing is left; fail after max_s seconds. */
static void run(tctx *c, double max_s)
{
    double t0 = tu_now_s();
    nsed_err e = {0};

    while (gateway_in_flight(c->gw) + gateway_pending(c->gw) > 0) {
        ck_assert_msg(gateway_poll(c->gw, 100, &e) == 0, "poll: %s", e.msg);
        ck_assert_msg(tu_now_s() - t0 < max_s, "gateway still busy after %g s",
                      max_s);
    }
}

/* ---- unit: replies, messages, keys, records ------------------------------- */

START_TEST(reply_parsing)
{
    gw_reply r = {0};
    char why[128];
    const char *ok = "{\"choices\":[{\"index\":0,\"message\":{\"role\":"
                     "\"assistant\",\"content\":\"4\"},\"finish_reason\":"
                     "\"stop\"}],\"usage\":{\"prompt_tokens\":12,"
                     "\"completion_tokens\":3,\"prompt_tokens_details\":"
                     "{\"cached_tokens\":8}}}";

    ck_assert_int_eq(gw_parse_reply(ok, strlen(ok), &r, why, sizeof why), 0);
    ck_assert_str_eq(r.content, "4");
    ck_assert_str_eq(r.finish_reason, "stop");
    ck_assert_int_eq(r.usage.prompt_tokens, 12);
    ck_assert_int_eq(r.usage.completion_tokens, 3);
    ck_assert_int_eq(r.usage.cached_tokens, 8);
    gw_reply_release(&r);

    /* No usage at all is fine (zeros); finish_reason may be absent. */
    ok = "{\"choices\":[{\"message\":{\"content\":\"\"}}]}";
    ck_assert_int_eq(gw_parse_reply(ok, strlen(ok), &r, why, sizeof why), 0);
    ck_assert_str_eq(r.content, "");
    ck_assert_ptr_null(r.finish_reason);
    ck_assert_int_eq(r.usage.prompt_tokens, 0);
    gw_reply_release(&r);

    static const struct {
        const char *body;
        const char *why;
    } bad[] = {
        {"", "empty body"},
        {"{\"choices\": [{\"message\": {\"content\": \"unterminated",
         "not JSON"},
        {"[1,2]", "not a JSON object"},
        {"{\"choices\":[]}", "empty choices"},
        {"{\"object\":\"chat.completion\"}", "no choices"},
        {"{\"choices\":[{\"text\":\"x\"}]}", "no message"},
        {"{\"choices\":[{\"message\":{\"content\":null}}]}", "null content"},
        {"{\"choices\":[{\"message\":{\"content\":7}}]}", "not a string"},
        {"{\"choices\":[{\"message\":{\"content\":\"x\"}}],\"usage\":"
         "{\"prompt_tokens\":-4}}", "bad usage"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_int_eq(gw_parse_reply(bad[i].body, strlen(bad[i].body), &r,
                                        why, sizeof why),
                         NSED_EINVAL);
        ck_assert_msg(strstr(why, bad[i].why), "%zu: %s", i, why);
        ck_assert_ptr_null(r.content);
    }
}
END_TEST

START_TEST(server_messages_and_redaction)
{
    char out[GATEWAY_SERVER_MSG_MAX + 1], big[2000], msg[64];
    const char *e = "{\"error\":{\"message\":\"  The model `x` does\\nnot "
                    "exist \",\"type\":\"invalid_request_error\"}}";

    gw_server_message(e, strlen(e), out, sizeof out);
    ck_assert_str_eq(out, "The model `x` does not exist");
    e = "{\"error\":\"quota exceeded\"}";
    gw_server_message(e, strlen(e), out, sizeof out);
    ck_assert_str_eq(out, "quota exceeded");
    e = "<html>502 Bad Gateway</html>";
    gw_server_message(e, strlen(e), out, sizeof out);
    ck_assert_str_eq(out, "<html>502 Bad Gateway</html>");
    gw_server_message("{}", 2, out, sizeof out);
    ck_assert_str_eq(out, "");
    gw_server_message(NULL, 0, out, sizeof out);
    ck_assert_str_eq(out, "");

    /* A long message is capped, never in the middle of a UTF-8 character. */
    memcpy(big, "{\"error\":{\"message\":\"", 21);
    for (size_t i = 0; i < 400; i++)
        memcpy(big + 21 + 2 * i, "\xc3\xa9", 2); /* é */
    memcpy(big + 821, "\"}}", 4);
    gw_server_message(big, strlen(big), out, sizeof out);
    ck_assert_uint_le(strlen(out), GATEWAY_SERVER_MSG_MAX);
    ck_assert_uint_eq(strlen(out) % 2, 0);
    ck_assert_uint_ge(strlen(out), GATEWAY_SERVER_MSG_MAX - 1);

    snprintf(msg, sizeof msg, "bad key %s, again %s.", TEST_KEY, TEST_KEY);
    gw_redact(msg, sizeof msg, TEST_KEY);
    ck_assert_str_eq(msg, "bad key [REDACTED], again [REDACTED].");
    /* In a tight buffer the text after the mask is cut, never overrun. */
    snprintf(msg, sizeof msg, "k=sk-test-SEC and more text");
    gw_redact(msg, 20, "sk-test-SEC");
    ck_assert_str_eq(msg, "k=[REDACTED] and mo");
    gw_redact(msg, sizeof msg, NULL);
    ck_assert_str_eq(msg, "k=[REDACTED] and mo");
}
END_TEST

START_TEST(ledger_keys_are_unambiguous)
{
    ledger_message m1[] = {{"user", "ab"}, {"user", "c"}};
    ledger_message m2[] = {{"user", "a"}, {"user", "bc"}};
    const char *stop[] = {"</s>"};
    ledger_call c = {"http://h/v1", "m", m1, 2, 0.7, 1, 64, false, 0,
                     NULL, 0, NULL, NULL, 0, 0, 0};
    uint8_t k1[HASH_LEN], k2[HASH_LEN], k3[HASH_LEN];

    c.model_id = "alpha";
    ck_assert_int_eq(ledger_key(&c, k1), 0);
    ck_assert_int_eq(ledger_key(&c, k3), 0);
    ck_assert_mem_eq(k1, k3, HASH_LEN);
    c.messages = m2;
    ck_assert_int_eq(ledger_key(&c, k2), 0);
    ck_assert_mem_ne(k1, k2, HASH_LEN);
    c.messages = m1;
    c.has_seed = true; /* seed 0 differs from no seed */
    ck_assert_int_eq(ledger_key(&c, k2), 0);
    ck_assert_mem_ne(k1, k2, HASH_LEN);
    c.has_seed = false;
    c.stop = stop;
    c.nstop = 1;
    ck_assert_int_eq(ledger_key(&c, k2), 0);
    ck_assert_mem_ne(k1, k2, HASH_LEN);
    c.nstop = 0;
    c.temperature = 0.70000000000000007;
    ck_assert_int_eq(ledger_key(&c, k2), 0);
    ck_assert_mem_ne(k1, k2, HASH_LEN);
    c.temperature = 0.7;
    c.schema = "{}";
    c.schema_name = "s";
    ck_assert_int_eq(ledger_key(&c, k2), 0);
    ck_assert_mem_ne(k1, k2, HASH_LEN);
    c.schema = NULL;
    c.sample = 1;
    ck_assert_int_eq(ledger_key(&c, k2), 0);
    ck_assert_mem_ne(k1, k2, HASH_LEN);
    c.sample = 0;
    /* form 2 names the model, not the endpoint; form 1 needs the URL */
    c.endpoint = NULL;
    ck_assert_int_eq(ledger_key(&c, k2), 0);
    ck_assert_mem_eq(k1, k2, HASH_LEN);
    ck_assert_int_eq(ledger_key_legacy(&c, k2), NSED_EINVAL);
    c.endpoint = "http://h/v1";
    c.model_id = NULL;
    ck_assert_int_eq(ledger_key(&c, k2), NSED_EINVAL);
}
END_TEST

START_TEST(ledger_records_round_trip)
{
    ledger_record r = {0}, d = {0};
    char *text = NULL;
    size_t len = 0;
    nsed_err e = {0};

    r.content = "line\n\"quoted\" \xc3\xa9";
    r.finish_reason = "length";
    r.model = "sim-a";
    r.prompt_tokens = 9007199254740993LL; /* 2^53 + 1: not a double */
    r.completion_tokens = 5;
    r.cached_tokens = 2;
    r.cost_usd = 0.000123;
    r.latency_s = 1.5;
    r.attempts = 3;
    r.http_status = 200;
    r.time = 1700000000;
    ck_assert_int_eq(ledger_encode(&r, &text, &len), 0);
    ck_assert_uint_eq(strlen(text), len);
    ck_assert_ptr_null(strchr(text, '\n'));
    ck_assert_int_eq(ledger_decode(text, len, &d, &e), 0);
    ck_assert_str_eq(d.content, r.content);
    ck_assert_str_eq(d.finish_reason, "length");
    ck_assert_str_eq(d.model, "sim-a");
    ck_assert_int_eq(d.completion_tokens, 5);
    ck_assert_int_eq(d.cached_tokens, 2);
    ck_assert(d.cost_usd == r.cost_usd);
    ck_assert(d.latency_s == 1.5);
    ck_assert_int_eq(d.attempts, 3);
    ck_assert_int_eq(d.http_status, 200);
    ck_assert_int_eq(d.time, 1700000000);
    ledger_record_release(&d);
    free(text);

    ck_assert_int_eq(ledger_decode("{\"v\":1}", 7, &d, &e), NSED_EINVAL);
    ck_assert(strstr(e.msg, "content"));
    ck_assert_int_eq(ledger_decode("{\"content\":\"x\",\"usage\":{"
                                   "\"prompt_tokens\":\"many\"}}", 48, &d, &e),
                     NSED_EINVAL);
    ck_assert_int_eq(ledger_decode("nope", 4, &d, &e), NSED_EINVAL);
    ck_assert_ptr_null(d.content);
}
END_TEST

START_TEST(requests_are_checked)
{
    mspec ms[] = {{"a", "ok-a", 1, "    structured_output: true\n"}};
    workflow *wf = wf_make("http://127.0.0.1:9/v1", ms, 1, NULL);
    gateway_message msg[2];
    gateway_request q;
    uint8_t key[HASH_LEN];
    nsed_err e = {0};
    tctx c;
    gateway *gw;

    tctx_init(&c);
    gw = gw_make(wf, NULL, &c, NULL);
    req_fill(&q, msg, 1, "hi", 0, 0);
    ck_assert_int_eq(gateway_submit(gw, &q, on_done, tk(&c, 0), &e),
                     NSED_EINVAL);
    ck_assert(strstr(e.msg, "out of range"));
    req_fill(&q, msg, 0, "hi", 0, 0);
    q.nmessages = 0;
    ck_assert_int_eq(gateway_submit(gw, &q, on_done, tk(&c, 0), &e),
                     NSED_EINVAL);
    ck_assert(strstr(e.msg, "no messages"));
    req_fill(&q, msg, 0, "hi", 0, 0);
    msg[1].content = NULL;
    ck_assert_int_eq(gateway_submit(gw, &q, on_done, tk(&c, 0), &e),
                     NSED_EINVAL);
    req_fill(&q, msg, 0, "hi", 0, 0);
    q.schema = "[1]";
    q.schema_name = "s";
    ck_assert_int_eq(gateway_submit(gw, &q, on_done, tk(&c, 0), &e),
                     NSED_EINVAL);
    ck_assert(strstr(e.msg, "not a JSON object"));
    q.schema = "{\"type\":\"object\"}";
    q.schema_name = "bad name";
    ck_assert_int_eq(gateway_submit(gw, &q, on_done, tk(&c, 0), &e),
                     NSED_EINVAL);
    ck_assert_int_eq(gateway_request_key(wf, &q, key, &e), NSED_EINVAL);
    ck_assert_uint_eq(gateway_pending(gw), 0);
    ck_assert_uint_eq(gateway_in_flight(gw), 0);
    gateway_free(gw);
    ck_assert_uint_eq(c.n, 0);
    tctx_release(&c);
    workflow_free(wf);
}
END_TEST

START_TEST(latency_quantiles)
{
    gateway_stats s;

    memset(&s, 0, sizeof s);
    ck_assert(gateway_stats_latency_quantile(&s, 0.5) == 0);
    /* 90 calls near 10 ms, 10 near 1 s. */
    s.latency_hist[14] = 90; /* 1 ms * 2^(14/4) = 11.3 ms */
    s.latency_hist[40] = 10; /* 1.024 s */
    s.latency_max_s = 1.0;
    ck_assert_double_eq_tol(gateway_stats_latency_quantile(&s, 0.5), 0.0113,
                            0.0001);
    ck_assert_double_eq_tol(gateway_stats_latency_quantile(&s, 0.9), 0.0113,
                            0.0001);
    ck_assert(gateway_stats_latency_quantile(&s, 0.95) == 1.0);
    ck_assert(gateway_stats_latency_quantile(&s, 2) == 1.0);
}
END_TEST

/* ---- concurrency and accounting -------------------------------------------- */

START_TEST(concurrency_caps_hold)
{
    mspec ms[] = {{"c2", "cap-2", 2, NULL},
                  {"c4", "cap-4", 4, NULL},
                  {"c8", "cap-8", 8, NULL}};
    sim s;
    workflow *wf;
    gateway *gw;
    gateway_stats st;
    tctx c;
    char text[64];
    cJSON *j;
    const char *names[] = {"cap-2", "cap-4", "cap-8"};

    sim_start(&s);
    wf = wf_make(s.url, ms, 3, NULL);
    tctx_init(&c);
    gw = gw_make(wf, NULL, &c, NULL);
    for (int i = 0; i < 100; i++)
        for (size_t m = 0; m < 3; m++) {
            snprintf(text, sizeof text, "question %d for model %zu", i, m);
            submit(&c, m, text, 0, 0, (int)(m * 1000) + i);
        }
    ck_assert_uint_eq(gateway_pending(gw), 300);
    ck_assert_int_eq(gateway_poll(gw, 0, NULL), 0);
    ck_assert_uint_eq(gateway_in_flight(gw), 14);
    run(&c, 20);
    ck_assert_uint_eq(c.n, 300);
    for (size_t i = 0; i < c.n; i++) {
        ck_assert_msg(c.v[i].code == 0, "%s", c.v[i].error);
        ck_assert_int_eq(c.v[i].attempts, 1);
        ck_assert(!c.v[i].from_ledger);
    }
    j = sim_stats(&s);
    for (size_t m = 0; m < 3; m++) {
        const cJSON *o = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(j, "models"), names[m]);

        ck_assert_int_eq(
            cJSON_GetObjectItemCaseSensitive(o, "peak_in_flight")->valueint,
            ms[m].cap);
        ck_assert_int_eq(
            cJSON_GetObjectItemCaseSensitive(o, "requests")->valueint, 100);
        ck_assert_int_eq(gateway_stats_get(gw, m, &st), 0);
        ck_assert_uint_eq(st.calls, 100);
        ck_assert_uint_eq(st.ok, 100);
        ck_assert_uint_eq(st.attempts, 100);
        ck_assert_uint_eq(st.retries, 0);
    }
    cJSON_Delete(j);
    ck_assert_int_eq(gateway_stats_get(gw, GATEWAY_ALL_MODELS, &st), 0);
    ck_assert_uint_eq(st.calls, 300);
    ck_assert(st.latency_max_s >= 0.05);
    ck_assert(gateway_stats_latency_quantile(&st, 0.5) >= 0.04);
    ck_assert_int_eq(gateway_stats_get(gw, 3, &st), NSED_EINVAL);
    gateway_free(gw);
    sim_stop(&s);
    tctx_release(&c);
    workflow_free(wf);
}
END_TEST

START_TEST(usage_and_cost_are_accounted)
{
    mspec ms[] = {{"a", "ok-a", 1,
                   "    price: {input_per_mtok: 2.5, output_per_mtok: 10}\n"}};
    sim s;
    workflow *wf;
    gateway *gw;
    gateway_stats st;
    tctx c;
    double cost = 0;
    int64_t pin = 0, pout = 0;

    sim_start(&s);
    wf = wf_make(s.url, ms, 1, NULL);
    tctx_init(&c);
    gw = gw_make(wf, NULL, &c, NULL);
    /* The second prompt shares the first one's prefix: the sim's prefix
     * cache reports cached tokens for it. */
    submit(&c, 0, "A long shared preamble about arithmetic. What is 2+2?", 0,
           0, 1);
    run(&c, 10);
    submit(&c, 0, "A long shared preamble about arithmetic. What is 3+3?", 0,
           0, 2);
    run(&c, 10);
    ck_assert_uint_eq(c.n, 2);
    for (size_t i = 0; i < 2; i++) {
        const got *g = &c.v[i];

        ck_assert_msg(g->code == 0, "%s", g->error);
        ck_assert_int_gt(g->usage.prompt_tokens, 0);
        ck_assert_int_gt(g->usage.completion_tokens, 0);
        ck_assert_str_eq(g->finish, "stop");
        ck_assert_int_eq(g->status, 200);
        ck_assert_double_eq_tol(g->cost,
                                (g->usage.prompt_tokens * 2.5 +
                                 g->usage.completion_tokens * 10.0) / 1e6,
                                1e-12);
        cost += g->cost;
        pin += g->usage.prompt_tokens;
        pout += g->usage.completion_tokens;
        ck_assert(g->latency > 0 && g->latency < 5);
    }
    ck_assert_int_eq(got_tag(&c, 1)->usage.cached_tokens, 0);
    ck_assert_int_gt(got_tag(&c, 2)->usage.cached_tokens, 0);
    ck_assert_int_eq(gateway_stats_get(gw, 0, &st), 0);
    ck_assert_int_eq(st.prompt_tokens, pin);
    ck_assert_int_eq(st.completion_tokens, pout);
    ck_assert_int_eq(st.cached_tokens, got_tag(&c, 2)->usage.cached_tokens);
    ck_assert_double_eq_tol(st.cost_usd, cost, 1e-12);
    ck_assert_int_eq(stat_of(&s, NULL, "rejected"), 0);
    ck_assert_int_eq((int64_t)stat_of(&s, "ok-a", "prompt_tokens"), pin);
    gateway_free(gw);
    sim_stop(&s);
    tctx_release(&c);
    workflow_free(wf);
}
END_TEST

static void on_done_chain(const gateway_result *r, void *user)
{
    ticket *t = user;
    tctx *c = t->c;
    char text[64];

    on_done(r, user);
    if (c->chain_left > 0) {
        c->chain_left--;
        /* Submitting from a callback: the next step of a conversation. */
        gateway_message msg[2];
        gateway_request q;
        nsed_err e = {0};

        snprintf(text, sizeof text, "step %d", t->tag + 1);
        req_fill(&q, msg, 0, text, 0, t->tag + 1);
        ck_assert_int_eq(gateway_submit(c->gw, &q, on_done_chain,
                                        tk(c, t->tag + 1), &e), 0);
        /* Nothing is delivered from inside this callback. */
        ck_assert_uint_ge(gateway_pending(c->gw), 1);
    }
}

START_TEST(callbacks_may_submit)
{
    mspec ms[] = {{"a", "ok-a", 2, NULL}};
    sim s;
    workflow *wf;
    tctx c;
    gateway_message msg[2];
    gateway_request q;
    nsed_err e = {0};

    sim_start(&s);
    wf = wf_make(s.url, ms, 1, NULL);
    tctx_init(&c);
    gw_make(wf, NULL, &c, NULL);
    c.chain_left = 4;
    req_fill(&q, msg, 0, "step 0", 0, 0);
    ck_assert_int_eq(gateway_submit(c.gw, &q, on_done_chain, tk(&c, 0), &e),
                     0);
    run(&c, 10);
    ck_assert_uint_eq(c.n, 5);
    for (int i = 0; i < 5; i++) {
        ck_assert_int_eq(c.v[i].tag, i);
        ck_assert_int_eq(c.v[i].code, 0);
    }
    gateway_free(c.gw);
    sim_stop(&s);
    tctx_release(&c);
    workflow_free(wf);
}
END_TEST

/* ---- retries ----------------------------------------------------------------- */

START_TEST(retry_after_is_honoured)
{
    mspec ms[] = {{"r", "once-429", 1, NULL}};
    sim s;
    workflow *wf;
    gateway_stats st;
    tctx c;
    double t0;

    sim_start(&s);
    wf = wf_make(s.url, ms, 1, NULL);
    tctx_init(&c);
    gw_make(wf, NULL, &c, NULL);
    t0 = tu_now_s();
    submit(&c, 0, "rate limited once", 0, 0, 1);
    run(&c, 10);
    ck_assert_uint_eq(c.n, 1);
    ck_assert_msg(c.v[0].code == 0, "%s", c.v[0].error);
    ck_assert_int_eq(c.v[0].attempts, 2);
    /* base_delay is 10 ms: only Retry-After: 2 explains the wait. */
    ck_assert_msg(c.v[0].latency >= 2.0, "latency %g", c.v[0].latency);
    ck_assert(tu_now_s() - t0 >= 2.0);
    ck_assert(tu_now_s() - t0 < 4.0);
    ck_assert_int_eq(stat_of(&s, "once-429", "requests"), 2);
    ck_assert_int_eq(gateway_stats_get(c.gw, 0, &st), 0);
    ck_assert_uint_eq(st.attempt_errors[GATEWAY_ERR_RATE_LIMIT], 1);
    ck_assert_uint_eq(st.retries, 1);
    gateway_free(c.gw);
    sim_stop(&s);
    tctx_release(&c);
    workflow_free(wf);
}
END_TEST

START_TEST(retry_after_date_is_honoured)
{
    char date[64], hdr[96];
    time_t t = time(NULL) + 2;
    struct tm tm;
    char *resp[2], *log;
    canned cs;
    mspec ms[] = {{"r", "any", 1, NULL}};
    workflow *wf;
    tctx c;

    gmtime_r(&t, &tm);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    snprintf(hdr, sizeof hdr, "Retry-After: %s\r\n", date);
    resp[0] = http_response(503, hdr, "{\"error\":{\"message\":\"busy\"}}");
    resp[1] = http_response(200, NULL, "{\"choices\":[{\"message\":"
                                       "{\"content\":\"fine\"},"
                                       "\"finish_reason\":\"stop\"}]}");
    canned_start(&cs, resp, 2);
    wf = wf_make(cs.url, ms, 1, NULL);
    tctx_init(&c);
    gw_make(wf, NULL, &c, NULL);
    submit(&c, 0, "busy once", 0, 0, 1);
    run(&c, 10);
    ck_assert_msg(c.v[0].code == 0, "%s", c.v[0].error);
    ck_assert_str_eq(c.v[0].content, "fine");
    ck_assert_int_eq(c.v[0].attempts, 2);
    /* The date has one-second resolution: at least a second is left. */
    ck_assert_msg(c.v[0].latency >= 0.9, "latency %g", c.v[0].latency);
    gateway_free(c.gw);
    log = canned_stop(&cs);
    ck_assert_uint_eq(count_of(log, "POST /v1/chat/completions"), 2);
    free(log);
    free(resp[0]);
    free(resp[1]);
    tctx_release(&c);
    workflow_free(wf);
}
END_TEST

START_TEST(transient_errors_are_retried)
{
    mspec ms[] = {{"e500", "twice-500", 1, NULL},
                  {"e503", "twice-503", 1, NULL},
                  {"drop", "twice-drop", 1, NULL}};
    sim s;
    workflow *wf;
    gateway_stats st;
    tctx c;

    sim_start(&s);
    wf = wf_make(s.url, ms, 3, NULL);
    tctx_init(&c);
    gw_make(wf, NULL, &c, NULL);
    for (size_t m = 0; m < 3; m++)
        submit(&c, m, "flaky", 0, 0, (int)m);
    run(&c, 10);
    ck_assert_uint_eq(c.n, 3);
    for (int m = 0; m < 3; m++) {
        const got *g = got_tag(&c, m);

        ck_assert_msg(g->code == 0, "%d: %s", m, g->error);
        ck_assert_str_eq(g->error, "");
        ck_assert(g->content[0] != '\0');
        /* libcurl may resend a dropped request once on its own. */
        ck_assert_int_ge(g->attempts, 2);
        ck_assert_int_le(g->attempts, 3);
    }
    ck_assert_int_eq(got_tag(&c, 0)->attempts, 3);
    ck_assert_int_eq(got_tag(&c, 1)->attempts, 3);
    ck_assert_int_eq(stat_of(&s, "twice-500", "requests"), 3);
    ck_assert_int_eq(stat_of(&s, "twice-503", "requests"), 3);
    ck_assert_int_eq(gateway_stats_get(c.gw, 0, &st), 0);
    ck_assert_uint_eq(st.attempt_errors[GATEWAY_ERR_SERVER], 2);
    ck_assert_uint_eq(st.retries, 2);
    ck_assert_uint_eq(st.ok, 1);
    ck_assert_int_eq(gateway_stats_get(c.gw, 2, &st), 0);
    ck_assert_uint_ge(st.attempt_errors[GATEWAY_ERR_TRANSPORT], 1);
    ck_assert_uint_eq(st.breaker_opens, 0);
    ck_assert_uint_eq(c.log.len, 0);
    gateway_free(c.gw);
    sim_stop(&s);
    tctx_release(&c);
    workflow_free(wf);
}
END_TEST

START_TEST(permanent_errors_are_not_retried)
{
    mspec ms[] = {{"ghost", "no-such-model", 1, NULL}};
    sim s;
    workflow *wf;
    gateway_stats st;
    tctx c;

    sim_start(&s);
    wf = wf_make(s.url, ms, 1, NULL);
    tctx_init(&c);
    gw_make(wf, NULL, &c, NULL);
    submit(&c, 0, "hello?", 0, 0, 1);
    run(&c, 10);
    ck_assert_uint_eq(c.n, 1);
    ck_assert_int_eq(c.v[0].code, NSED_ENET);
    ck_assert_int_eq(c.v[0].kind, GATEWAY_ERR_HTTP);
    ck_assert_int_eq(c.v[0].status, 404);
    ck_assert_int_eq(c.v[0].attempts, 1);
    ck_assert_str_eq(c.v[0].content, "");
    ck_assert_msg(strstr(c.v[0].error, "model ghost: HTTP 404: The model "
                                       "`no-such-model` does not exist"),
                  "%s", c.v[0].error);
    ck_assert(strstr(c.v[0].error, "not retried"));
    ck_assert_int_eq(stat_of(&s, NULL, "rejected"), 1);
    ck_assert_int_eq(gateway_stats_get(c.gw, 0, &st), 0);
    ck_assert_uint_eq(st.failed, 1);
    ck_assert_uint_eq(st.attempt_errors[GATEWAY_ERR_HTTP], 1);
    gateway_free(c.gw);
    sim_stop(&s);
    tctx_release(&c);
    workflow_free(wf);
}
END_TEST

START_TEST(hanging_responses_time_out)
{
    mspec ms[] = {{"h1", "once-hang", 1, "    timeouts: {request_s: 0.4}\n"},
                  {"hall", "always-hang", 1,
                   "    timeouts: {request_s: 0.4}\n"}};
    sim s;
    workflow *wf;
    tctx c;
    const got *g;
    double t0;

    sim_start(&s);
    wf = wf_make(s.url, ms, 2,
                 "gateway:\n  retry: {max_attempts: 2, base_delay_ms: 10, "
                 "max_delay_ms: 20, max_total_s: 10}\n");
    tctx_init(&c);
    gw_make(wf, NULL, &c, NULL);
    t0 = tu_now_s();
    submit(&c, 0, "slow once", 0, 0, 0);
    submit(&c, 1, "slow always", 0, 0, 1);
    run(&c, 10);
    g = got_tag(&c, 0);
    ck_assert_msg(g->code == 0, "%s", g->error);
    ck_assert_int_eq(g->attempts, 2);
    ck_assert(g->latency >= 0.4);
    g = got_tag(&c, 1);
    ck_assert_int_eq(g->code, NSED_ENET);
    ck_assert_int_eq(g->kind, GATEWAY_ERR_TIMEOUT);
    ck_assert_int_eq(g->attempts, 2);
    ck_assert_msg(strstr(g->error, "timed out"), "%s", g->error);
    ck_assert(strstr(g->error, "gave up after 2 attempts"));
    ck_assert(tu_now_s() - t0 >= 0.8 && tu_now_s() - t0 < 3);
    gateway_free(c.gw);
    sim_stop(&s);
    tctx_release(&c);
    workflow_free(wf);
}
END_TEST

START_TEST(request_budget_bounds_time_outs)
{
    mspec ms[] = {{"hall", "always-hang", 1,
                   "    timeouts: {request_s: 0.5}\n"}};
    sim s;
    workflow *wf;
    tctx c;
    double t0;

    sim_start(&s);
    /* Many attempts allowed, but only 0.8 s in total: the second attempt
     * gets what is left of the budget as its timeout. */
    wf = wf_make(s.url, ms, 1,
                 "gateway:\n  retry: {max_attempts: 50, base_delay_ms: 1, "
                 "max_delay_ms: 1, max_total_s: 0.8}\n");
    tctx_init(&c);
    gw_make(wf, NULL, &c, NULL);
    t0 = tu_now_s();
    submit(&c, 0, "slow", 0, 0, 0);
    run(&c, 10);
    ck_assert_int_eq(c.v[0].code, NSED_ENET);
    ck_assert_int_eq(c.v[0].kind, GATEWAY_ERR_TIMEOUT);
    ck_assert_int_eq(c.v[0].attempts, 2);
    ck_assert_msg(strstr(c.v[0].error, "budget of 0.8 s"), "%s",
                  c.v[0].error);
    ck_assert(tu_now_s() - t0 >= 0.75 && tu_now_s() - t0 < 2);
    gateway_free(c.gw);
    sim_stop(&s);
    tctx_release(&c);
    workflow_free(wf);
}
END_TEST

START_TEST(bad_bodies_are_errors_not_crashes)
{
    mspec ms[] = {{"mal1", "once-malformed", 1, NULL},
                  {"trunc1", "once-truncated", 1, NULL},
                  {"empty1", "once-empty", 1, NULL},
                  {"malall", "always-malformed", 1, NULL}};
    sim s;
    workflow *wf;
    gateway_stats st;
    tctx c;
    const got *g;

    sim_start(&s);
    wf = wf_make(s.url, ms, 4, NULL);
    tctx_init(&c);
    gw_make(wf, NULL, &c, NULL);
    for (size_t m = 0; m < 4; m++)
        submit(&c, m, "body trouble", 0, 0, (int)m);
    run(&c, 10);
    for (int m = 0; m < 3; m++) {
        g = got_tag(&c, m);
        ck_assert_msg(g->code == 0, "%d: %s", m, g->error);
        ck_assert_int_eq(g->attempts, 2);
    }
    ck_assert_int_eq(gateway_stats_get(c.gw, 0, &st), 0);
    ck_assert_uint_eq(st.attempt_errors[GATEWAY_ERR_MALFORMED], 1);
    ck_assert_int_eq(gateway_stats_get(c.gw, 1, &st), 0);
    ck_assert_uint_eq(st.attempt_errors[GATEWAY_ERR_TRANSPORT], 1);
    ck_assert_int_eq(gateway_stats_get(c.gw, 2, &st), 0);
    ck_assert_uint_eq(st.attempt_errors[GATEWAY_ERR_MALFORMED], 1);
    g = got_tag(&c, 3);
    ck_assert_int_eq(g->code, NSED_ENET);
    ck_assert_int_eq(g->kind, GATEWAY_ERR_MALFORMED);
    ck_assert_int_eq(g->status, 200);
    /* an unusable body is retried like any transient failure, up to
     * max_attempts (6), and one request failing alone never pauses the
     * model */
    ck_assert_int_eq(g->attempts, 6);
    ck_assert_msg(strstr(g->error, "unusable body: body is not JSON"), "%s",
                  g->error);
    ck_assert_int_eq(stat_of(&s, "always-malformed", "requests"), 6);
    ck_assert_int_eq(gateway_stats_get(c.gw, 3, &st), 0);
    ck_assert_uint_eq(st.breaker_opens, 0);
    gateway_free(c.gw);
    sim_stop(&s);
    tctx_release(&c);
    workflow_free(wf);
}
END_TEST

START_TEST(oversized_and_redirected_replies_fail)
{
    char *big = malloc(5001), *resp[2], *log;
    canned cs;
    mspec ms[] = {{"r", "any", 1, NULL}};
    workflow *wf;
    tctx c;

    ck_assert_ptr_nonnull(big);
    memset(big, 'x', 5000);
    big[5000] = '\0';
    resp[0] = http_response(302, "Location: http://127.0.0.1:9/v1\r\n", "{}");
    resp[1] = http_response(200, NULL, big);
    canned_start(&cs, resp, 2);
    wf = wf_make(cs.url, ms, 1,
                 "gateway:\n  max_response_bytes: 1024\n"
                 "  retry: {base_delay_ms: 10, max_delay_ms: 20}\n");
    tctx_init(&c);
    gw_make(wf, NULL, &c, NULL);
    submit(&c, 0, "redirect me", 0, 0, 0);
    run(&c, 10);
    submit(&c, 0, "flood me", 0, 0, 1);
    run(&c, 10);
    ck_assert_int_eq(got_tag(&c, 0)->code, NSED_ENET);
    ck_assert_int_eq(got_tag(&c, 0)->kind, GATEWAY_ERR_HTTP);
    ck_assert_int_eq(got_tag(&c, 0)->status, 302);
    ck_assert_int_eq(got_tag(&c, 0)->attempts, 1);
    ck_assert(strstr(got_tag(&c, 0)->error, "redirects are not followed"));
    ck_assert_int_eq(got_tag(&c, 1)->code, NSED_ETOOBIG);
    ck_assert_int_eq(got_tag(&c, 1)->kind, GATEWAY_ERR_TOO_BIG);
    ck_assert_int_eq(got_tag(&c, 1)->attempts, 1);
    ck_assert(strstr(got_tag(&c, 1)->error, "max_response_bytes"));
    gateway_free(c.gw);
    log = canned_stop(&cs);
    ck_assert_uint_eq(count_of(log, "POST /v1/chat/completions"), 2);
    free(log);
    free(resp[0]);
    free(resp[1]);
    free(big);
    tctx_release(&c);
    workflow_free(wf);
}
END_TEST

START_TEST(connection_refused_is_retried_then_fails)
{
    struct sockaddr_in a = {0};
    socklen_t alen = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    char url[64];
    mspec ms[] = {{"gone", "any", 1, NULL}};
    workflow *wf;
    tctx c;

    /* A port that was just free: nothing listens there. */
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert(bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
    ck_assert(getsockname(fd, (struct sockaddr *)&a, &alen) == 0);
    close(fd);
    snprintf(url, sizeof url, "http://127.0.0.1:%u/v1",
             (unsigned)ntohs(a.sin_port));
    wf = wf_make(url, ms, 1,
                 "gateway:\n  retry: {max_attempts: 3, base_delay_ms: 5, "
                 "max_delay_ms: 10}\n");
    tctx_init(&c);
    gw_make(wf, NULL, &c, NULL);
    submit(&c, 0, "anyone?", 0, 0, 0);
    run(&c, 10);
    ck_assert_int_eq(c.v[0].code, NSED_ENET);
    ck_assert_int_eq(c.v[0].kind, GATEWAY_ERR_CONNECT);
    ck_assert_int_eq(c.v[0].attempts, 3);
    ck_assert_int_eq(c.v[0].status, 0);
    ck_assert_msg(strstr(c.v[0].error, "model gone: cannot connect"), "%s",
                  c.v[0].error);
    gateway_free(c.gw);
    tctx_release(&c);
    workflow_free(wf);
}
END_TEST

/* ---- circuit breaker --------------------------------------------------------- */

#define BREAKER_GATEWAY \
    "gateway:\n" \
    "  retry: {max_attempts: 100, base_delay_ms: 10, max_delay_ms: 20, " \
    "max_total_s: 1.5}\n" \
    "  circuit_breaker: {failures: 3, cooldown_s: 0.3}\n"

START_TEST(breaker_pauses_a_dead_model)
{
    mspec ms[] = {{"dead", "always-500", 1, NULL}};
    sim s;
    workflow *wf;
    gateway_stats st;
    tctx c;
    double t0, requests;

    sim_start(&s);
    wf = wf_make(s.url, ms, 1, BREAKER_GATEWAY);
    tctx_init(&c);
    gw_make(wf, NULL, &c, NULL);
    t0 = tu_now_s();
    for (int i = 0; i < 3; i++)
        submit(&c, 0, i == 0 ? "a" : i == 1 ? "b" : "c", 0, 0, i);
    run(&c, 10);
    ck_assert_uint_eq(c.n, 3);
    for (int i = 0; i < 3; i++) {
        const got *g = got_tag(&c, i);

        ck_assert_int_eq(g->code, NSED_ENET);
        /* A request that never got its turn before the pause fails as
         * paused, with the error that brought the model down. */
        ck_assert(g->kind == GATEWAY_ERR_SERVER ||
                  g->kind == GATEWAY_ERR_PAUSED);
        ck_assert_msg(strstr(g->error, "HTTP 500: The server had an error"),
                      "%s", g->error);
        ck_assert_msg(strstr(g->error, "budget of 1.5 s"), "%s", g->error);
    }
    /* The requests waited out the budget instead of hammering the server:
     * 3 failures open the breaker, then one probe per cool-down. */
    ck_assert(tu_now_s() - t0 >= 1.4 && tu_now_s() - t0 < 3.5);
    requests = stat_of(&s, "always-500", "requests");
    ck_assert_msg(requests >= 4 && requests <= 10, "%g requests", requests);
    ck_assert_msg(tu_contains(c.log.ptr, "model dead (endpoint http://127.0.0.1:"),
                  "%s", c.log.ptr);
    ck_assert(tu_contains(c.log.ptr, "is down after 3 consecutive failures: "
                                     "HTTP 500"));
    ck_assert(tu_contains(c.log.ptr, "retrying in 0.3 s"));
    ck_assert(!tu_contains(c.log.ptr, "is back"));
    ck_assert_int_eq(gateway_stats_get(c.gw, 0, &st), 0);
    ck_assert_uint_ge(st.breaker_opens, 2);
    ck_assert_uint_eq(st.failed, 3);
    gateway_free(c.gw);
    sim_stop(&s);
    tctx_release(&c);
    workflow_free(wf);
}
END_TEST

START_TEST(breaker_closes_when_the_model_is_back)
{
    mspec ms[] = {{"flaky", "thrice-500", 1, NULL}};
    sim s;
    workflow *wf;
    tctx c;

    sim_start(&s);
    wf = wf_make(s.url, ms, 1, BREAKER_GATEWAY);
    tctx_init(&c);
    gw_make(wf, NULL, &c, NULL);
    for (int i = 0; i < 4; i++) {
        char text[16];

        snprintf(text, sizeof text, "q%d", i);
        submit(&c, 0, text, 0, 0, i);
    }
    run(&c, 10);
    ck_assert_uint_eq(c.n, 4);
    for (size_t i = 0; i < 4; i++)
        ck_assert_msg(c.v[i].code == 0, "%s", c.v[i].error);
    ck_assert_msg(tu_contains(c.log.ptr, "model flaky (endpoint "), "%s",
                  c.log.ptr);
    ck_assert(tu_contains(c.log.ptr, "is down after 3 consecutive failures"));
    ck_assert(tu_contains(c.log.ptr, "model flaky is back\n"));
    ck_assert_int_eq(stat_of(&s, "thrice-500", "requests"), 7);
    gateway_free(c.gw);
    sim_stop(&s);
    tctx_release(&c);
    workflow_free(wf);
}
END_TEST

static double fake_clock(void *user)
{
    return *(double *)user;
}

START_TEST(paused_requests_wait_for_the_cooldown)
{
    mspec ms[] = {{"dead", "always-500", 1, NULL}};
    sim s;
    workflow *wf;
    tctx c;
    gateway_opts o = {0};
    double fake = 1000;
    nsed_err e = {0};

    sim_start(&s);
    wf = wf_make(s.url, ms, 1,
                 "gateway:\n"
                 "  retry: {max_attempts: 100, base_delay_ms: 1, "
                 "max_delay_ms: 1, max_total_s: 500}\n"
                 "  circuit_breaker: {failures: 1, cooldown_s: 100}\n");
    tctx_init(&c);
    o.log = on_log;
    o.log_user = &c;
    o.clock = fake_clock;
    o.clock_user = &fake;
    ck_assert_int_eq(gateway_new(wf, NULL, &o, &c.gw, &e), 0);
    submit(&c, 0, "x", 0, 0, 0);
    submit(&c, 0, "y", 0, 0, 1);
    while (!tu_contains(c.log.ptr, "is down"))
        ck_assert_int_eq(gateway_poll(c.gw, 20, &e), 0);
    /* Paused: no request goes out while the (fake) clock stands still. */
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(gateway_poll(c.gw, 10, &e), 0);
    ck_assert_int_eq(stat_of(&s, "always-500", "requests"), 1);
    ck_assert_uint_eq(gateway_pending(c.gw), 2);
    ck_assert_uint_eq(gateway_in_flight(c.gw), 0);
    /* After the cool-down exactly one probe goes; it fails and pauses the
     * model again. */
    fake += 101;
    for (int i = 0; i < 200 && stat_of(&s, "always-500", "requests") < 2; i++)
        ck_assert_int_eq(gateway_poll(c.gw, 10, &e), 0);
    while (gateway_in_flight(c.gw))
        ck_assert_int_eq(gateway_poll(c.gw, 10, &e), 0);
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(gateway_poll(c.gw, 10, &e), 0);
    ck_assert_int_eq(stat_of(&s, "always-500", "requests"), 2);
    ck_assert_uint_eq(c.n, 0);
    /* Past the budget both fail, without another request. */
    fake += 500;
    ck_assert_int_eq(gateway_poll(c.gw, 10, &e), 0);
    ck_assert_uint_eq(c.n, 2);
    for (size_t i = 0; i < 2; i++) {
        ck_assert_int_eq(c.v[i].code, NSED_ENET);
        ck_assert_msg(strstr(c.v[i].error, "paused by its circuit breaker"),
                      "%s", c.v[i].error);
    }
    ck_assert_int_eq(stat_of(&s, "always-500", "requests"), 2);
    ck_assert_uint_eq(gateway_pending(c.gw), 0);
    gateway_free(c.gw);
    sim_stop(&s);
    tctx_release(&c);
    workflow_free(wf);
}
END_TEST

/* ---- ledger ------------------------------------------------------------------ */

static store *store_at(const char *dir)
{
    store_opts so = {STORE_NOSYNC, 0};
    store *st = NULL;
    nsed_err e = {0};

    ck_assert_msg(store_open(dir, &so, &st, &e) == 0, "store: %s", e.msg);
    return st;
}

static int count_fn(store_txn *t, void *arg, nsed_err *err)
{
    (void)err;
    return ledger_count(t, arg);
}

static size_t ledger_size(store *st)
{
    size_t n = 0;

    ck_assert_int_eq(store_read(st, count_fn, &n, NULL), 0);
    return n;
}

START_TEST(ledger_answers_repeated_calls)
{
    mspec ms[] = {{"a", "ok-a", 2, NULL}};
    char *dir = tu_mkdtemp();
    sim s;
    workflow *wf;
    store *st;
    gateway_stats gs;
    tctx c;
    char *first;

    sim_start(&s);
    wf = wf_make(s.url, ms, 1, NULL);
    tctx_init(&c);
    st = store_at(dir);
    gw_make(wf, st, &c, NULL);
    submit(&c, 0, "What is 6*7?", 1, 0, 1);
    run(&c, 10);
    ck_assert_msg(c.v[0].code == 0, "%s", c.v[0].error);
    ck_assert(!c.v[0].from_ledger);
    first = strdup(c.v[0].content);
    ck_assert_uint_eq(ledger_size(st), 1);
    ck_assert_int_eq(stat_of(&s, "ok-a", "requests"), 1);

    /* Same call again: answered from the ledger, nothing sent, and the
     * callback still comes from gateway_poll. */
    submit(&c, 0, "What is 6*7?", 1, 0, 2);
    ck_assert_uint_eq(c.n, 1);
    ck_assert_uint_eq(gateway_pending(c.gw), 1);
    run(&c, 10);
    ck_assert(got_tag(&c, 2)->from_ledger);
    ck_assert_int_eq(got_tag(&c, 2)->code, 0);
    ck_assert_str_eq(got_tag(&c, 2)->content, first);
    ck_assert_str_eq(got_tag(&c, 2)->finish, got_tag(&c, 1)->finish);
    ck_assert_int_eq(got_tag(&c, 2)->usage.prompt_tokens,
                     got_tag(&c, 1)->usage.prompt_tokens);
    ck_assert_mem_eq(got_tag(&c, 2)->key, got_tag(&c, 1)->key, HASH_LEN);
    ck_assert_int_eq(stat_of(&s, "ok-a", "requests"), 1);
    ck_assert_int_eq(gateway_stats_get(c.gw, 0, &gs), 0);
    ck_assert_uint_eq(gs.ledger_hits, 1);
    ck_assert_uint_eq(gs.calls, 1);

    /* After closing and reopening the store too. */
    gateway_free(c.gw);
    store_close(st);
    st = store_at(dir);
    gw_make(wf, st, &c, NULL);
    submit(&c, 0, "What is 6*7?", 1, 0, 3);
    run(&c, 10);
    ck_assert(got_tag(&c, 3)->from_ledger);
    ck_assert_str_eq(got_tag(&c, 3)->content, first);
    ck_assert_int_eq(stat_of(&s, "ok-a", "requests"), 1);

    /* Another seat or round is another call. */
    submit(&c, 0, "What is 6*7?", 2, 0, 4);
    submit(&c, 0, "What is 6*7?", 1, 1, 5);
    run(&c, 10);
    ck_assert(!got_tag(&c, 4)->from_ledger);
    ck_assert(!got_tag(&c, 5)->from_ledger);
    ck_assert_mem_ne(got_tag(&c, 4)->key, got_tag(&c, 3)->key, HASH_LEN);
    ck_assert_mem_ne(got_tag(&c, 5)->key, got_tag(&c, 3)->key, HASH_LEN);
    ck_assert_int_eq(stat_of(&s, "ok-a", "requests"), 3);
    ck_assert_uint_eq(ledger_size(st), 3);
    gateway_free(c.gw);
    store_close(st);
    sim_stop(&s);
    free(first);
    tctx_release(&c);
    workflow_free(wf);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* With the caller committing (the runner), a reply holds its model's slot
 * until gateway_records_committed: gateway_records_block says so exactly
 * while a request waits behind such a slot, and the committed slot lets
 * the queued request start at the next kick. */
START_TEST(uncommitted_replies_hold_their_slots)
{
    mspec ms[] = {{"a", "ok-a", 1, NULL}, {"b", "ok-b", 2, NULL}};
    char *dir = tu_mkdtemp();
    gateway_opts o = {0};
    nsed_err e = {0};
    double t0;
    sim s;
    workflow *wf;
    store *st;
    tctx c;

    sim_start(&s);
    wf = wf_make(s.url, ms, 2, NULL);
    tctx_init(&c);
    st = store_at(dir);
    o.log = on_log;
    o.log_user = &c;
    o.caller_commits = true;
    ck_assert_int_eq(gateway_new(wf, st, &o, &c.gw, &e), 0);
    /* model a: two requests on one slot; model b: one on two slots */
    submit(&c, 0, "first for a", 0, 0, 1);
    submit(&c, 0, "second for a", 1, 0, 2);
    submit(&c, 1, "only for b", 0, 0, 3);
    ck_assert(!gateway_records_block(c.gw));
    t0 = tu_now_s();
    while (c.n < 2) {
        ck_assert_int_eq(gateway_poll(c.gw, 100, &e), 0);
        ck_assert_msg(tu_now_s() - t0 < 10, "no replies after 10 s");
    }
    /* both first calls answered, neither durable: a's second request waits
     * behind a's slot, b has nothing queued */
    ck_assert_uint_eq(gateway_records_pending(c.gw), 2);
    ck_assert_uint_eq(gateway_in_flight(c.gw), 0);
    ck_assert_uint_eq(gateway_pending(c.gw), 1);
    ck_assert(gateway_records_block(c.gw));
    ck_assert_int_eq(gateway_poll(c.gw, 50, &e), 0);
    ck_assert_uint_eq(gateway_in_flight(c.gw), 0);
    ck_assert_int_eq(stat_of(&s, "ok-a", "requests"), 1);
    ck_assert_int_eq(gateway_flush(c.gw, &e), 0);
    ck_assert_uint_eq(gateway_records_pending(c.gw), 0);
    ck_assert(!gateway_records_block(c.gw));
    ck_assert_uint_eq(ledger_size(st), 2);
    gateway_kick(c.gw);
    ck_assert_uint_eq(gateway_in_flight(c.gw), 1);
    run(&c, 10);
    ck_assert_uint_eq(c.n, 3);
    ck_assert_int_eq(got_tag(&c, 2)->code, 0);
    ck_assert_int_eq(stat_of(&s, "ok-a", "requests"), 2);
    ck_assert_int_eq(stat_of(&s, "ok-b", "requests"), 1);
    /* the last reply is still only buffered */
    ck_assert_uint_eq(gateway_records_pending(c.gw), 1);
    ck_assert(!gateway_records_block(c.gw));
    gateway_free(c.gw);
    store_close(st);
    sim_stop(&s);
    tctx_release(&c);
    workflow_free(wf);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

START_TEST(failed_calls_are_not_recorded)
{
    mspec ms[] = {{"ghost", "no-such-model", 1, NULL}, {"a", "ok-a", 1, NULL}};
    char *dir = tu_mkdtemp();
    sim s;
    workflow *wf;
    store *st;
    tctx c;

    sim_start(&s);
    wf = wf_make(s.url, ms, 2, NULL);
    tctx_init(&c);
    st = store_at(dir);
    gw_make(wf, st, &c, NULL);
    submit(&c, 0, "q", 0, 0, 0);
    submit(&c, 1, "q", 0, 0, 1);
    run(&c, 10);
    ck_assert_int_eq(got_tag(&c, 0)->code, NSED_ENET);
    ck_assert_int_eq(got_tag(&c, 1)->code, 0);
    ck_assert_uint_eq(ledger_size(st), 1);
    /* The failed one is tried again, the good one is not. */
    submit(&c, 0, "q", 0, 0, 2);
    submit(&c, 1, "q", 0, 0, 3);
    run(&c, 10);
    ck_assert(!got_tag(&c, 2)->from_ledger);
    ck_assert(got_tag(&c, 3)->from_ledger);
    ck_assert_int_eq(stat_of(&s, NULL, "rejected"), 2);
    gateway_free(c.gw);
    store_close(st);
    sim_stop(&s);
    tctx_release(&c);
    workflow_free(wf);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

START_TEST(ledger_keys_ignore_non_semantic_settings)
{
    mspec a[] = {{"m", "ok-a", 2, "    structured_output: true\n"},
                 {"plain", "ok-a", 2, NULL}};
    mspec b[] = {{"m", "ok-a", 64,
                  "    structured_output: true\n"
                  "    timeouts: {connect_s: 1, request_s: 7}\n"
                  "    price: {input_per_mtok: 3, output_per_mtok: 4}\n"},
                 {"plain", "ok-a", 9, NULL}};
    mspec t[] = {{"m", "ok-a", 2,
                  "    structured_output: true\n"
                  "    sampling: {temperature: 0.2}\n"},
                 {"plain", "ok-a", 2, NULL}};
    workflow *wa = wf_make("http://127.0.0.1:9/v1", a, 2, NULL);
    workflow *wb = wf_make("http://127.0.0.1:9/v1", b, 2,
                           "gateway:\n  retry: {max_attempts: 2}\n"
                           "  circuit_breaker: {failures: 9}\n");
    workflow *wt = wf_make("http://127.0.0.1:9/v1", t, 2, NULL);
    workflow *wu = wf_make("http://127.0.0.2:9/v1", a, 2, NULL);
    gateway_message msg[2];
    gateway_request q;
    uint8_t ka[HASH_LEN], kb[HASH_LEN], kx[HASH_LEN];

    req_fill(&q, msg, 0, "same question", 3, 2);
    ck_assert_int_eq(gateway_request_key(wa, &q, ka, NULL), 0);
    ck_assert_int_eq(gateway_request_key(wb, &q, kb, NULL), 0);
    ck_assert_mem_eq(ka, kb, HASH_LEN);
    ck_assert_int_eq(gateway_request_key(wt, &q, kx, NULL), 0);
    ck_assert_mem_ne(ka, kx, HASH_LEN);
    /* Another host: the same model, the same key (issue 11 item 6; before
     * key form 2 the URL was part of the key and this differed). */
    ck_assert_int_eq(gateway_request_key(wu, &q, kx, NULL), 0);
    ck_assert_mem_eq(ka, kx, HASH_LEN);
    /* Another model id with the same served name: another key. */
    q.model = 1;
    ck_assert_int_eq(gateway_request_key(wa, &q, kx, NULL), 0);
    ck_assert_mem_ne(ka, kx, HASH_LEN);
    q.model = 0;
    q.seat = 4;
    ck_assert_int_eq(gateway_request_key(wa, &q, kx, NULL), 0);
    ck_assert_mem_ne(ka, kx, HASH_LEN);
    q.seat = 3;
    q.round = 3;
    ck_assert_int_eq(gateway_request_key(wa, &q, kx, NULL), 0);
    ck_assert_mem_ne(ka, kx, HASH_LEN);
    q.round = 2;
    q.has_seed = true;
    q.seed = 5;
    ck_assert_int_eq(gateway_request_key(wa, &q, kx, NULL), 0);
    ck_assert_mem_ne(ka, kx, HASH_LEN);
    q.has_seed = false;
    /* A schema is part of the call only where it is sent. */
    q.schema = "{\"type\":\"object\"}";
    q.schema_name = "answer";
    ck_assert_int_eq(gateway_request_key(wa, &q, kx, NULL), 0);
    ck_assert_mem_ne(ka, kx, HASH_LEN);
    q.model = 1;
    ck_assert_int_eq(gateway_request_key(wa, &q, kx, NULL), 0);
    q.schema = NULL;
    ck_assert_int_eq(gateway_request_key(wa, &q, kb, NULL), 0);
    ck_assert_mem_eq(kx, kb, HASH_LEN);
    workflow_free(wa);
    workflow_free(wb);
    workflow_free(wt);
    workflow_free(wu);
}
END_TEST

/* ---- secrets and dry run ---------------------------------------------------- */

/* 1 when any file under dir holds needle's bytes. */
static int dir_holds(const char *dir, const char *needle)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    int found = 0;

    ck_assert_ptr_nonnull(d);
    while (!found && (de = readdir(d)) != NULL) {
        char *p;
        struct stat sb;

        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        p = tu_path(dir, de->d_name);
        ck_assert(lstat(p, &sb) == 0);
        if (S_ISDIR(sb.st_mode)) {
            found = dir_holds(p, needle);
        } else if (S_ISREG(sb.st_mode)) {
            size_t len = 0;
            char *data = tu_read_file(p, &len);

            ck_assert_ptr_nonnull(data);
            found = memmem(data, len, needle, strlen(needle)) != NULL;
            free(data);
        }
        free(p);
    }
    closedir(d);
    return found;
}

START_TEST(api_key_is_sent_and_never_kept)
{
    char *resp[2], *log, *dir = tu_mkdtemp();
    canned cs;
    mspec ms[] = {{"keyed", "any", 1, "    api_key_env: NSED_TEST_KEY\n"}};
    workflow *wf;
    store *st;
    tctx c;

    ck_assert_int_eq(setenv("NSED_TEST_KEY", TEST_KEY, 1), 0);
    resp[0] = http_response(200, NULL, "{\"choices\":[{\"message\":"
                                       "{\"content\":\"ok\"},"
                                       "\"finish_reason\":\"stop\"}],"
                                       "\"usage\":{\"prompt_tokens\":3,"
                                       "\"completion_tokens\":1}}");
    resp[1] = http_response(401, NULL, "{\"error\":{\"message\":\"Incorrect "
                                       "API key provided: " TEST_KEY
                                       ". You can find your API key at "
                                       "example.com.\",\"type\":"
                                       "\"invalid_request_error\"}}");
    canned_start(&cs, resp, 2);
    wf = wf_make(cs.url, ms, 1, NULL);
    tctx_init(&c);
    st = store_at(dir);
    gw_make(wf, st, &c, NULL);
    submit(&c, 0, "hello", 0, 0, 0);
    run(&c, 10);
    submit(&c, 0, "hello again", 0, 0, 1);
    run(&c, 10);
    ck_assert_msg(got_tag(&c, 0)->code == 0, "%s", got_tag(&c, 0)->error);
    ck_assert_int_eq(got_tag(&c, 1)->code, NSED_ENET);
    ck_assert_int_eq(got_tag(&c, 1)->status, 401);
    ck_assert_int_eq(got_tag(&c, 1)->attempts, 1);
    ck_assert_msg(strstr(got_tag(&c, 1)->error,
                         "HTTP 401: Incorrect API key provided: [REDACTED]. "),
                  "%s", got_tag(&c, 1)->error);
    ck_assert(!strstr(got_tag(&c, 1)->error, "SECRET123"));
    gateway_free(c.gw);
    store_close(st);
    log = canned_stop(&cs);
    ck_assert_uint_eq(count_of(log, "Authorization: Bearer " TEST_KEY "\r\n"),
                      2);
    ck_assert(tu_contains(log, "Content-Type: application/json\r\n"));
    ck_assert(!dir_holds(dir, "SECRET123"));
    ck_assert(dir_holds(dir, "\"content\":\"ok\"")); /* the ledger is there */
    ck_assert(!tu_contains(c.log.ptr, "SECRET123"));
    free(log);
    free(resp[0]);
    free(resp[1]);
    tctx_release(&c);
    workflow_free(wf);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

START_TEST(missing_api_key_is_named)
{
    mspec ms[] = {{"a", "ok-a", 1, NULL},
                  {"keyed", "ok-a", 1, "    api_key_env: NSED_TEST_NO_KEY\n"}};
    workflow *wf = wf_make("http://127.0.0.1:9/v1", ms, 2, NULL);
    gateway *gw = NULL;
    nsed_err e = {0};

    unsetenv("NSED_TEST_NO_KEY");
    ck_assert_int_eq(gateway_new(wf, NULL, NULL, &gw, &e), NSED_EINVAL);
    ck_assert_ptr_null(gw);
    ck_assert_str_eq(e.msg, "model keyed: environment variable "
                            "NSED_TEST_NO_KEY (its api_key_env) is not set");
    ck_assert_int_eq(setenv("NSED_TEST_NO_KEY", "", 1), 0);
    ck_assert_int_eq(gateway_new(wf, NULL, NULL, &gw, &e), NSED_EINVAL);
    ck_assert(strstr(e.msg, "is empty"));
    ck_assert_int_eq(setenv("NSED_TEST_NO_KEY", "sk-bad\r\nX-Evil: 1", 1), 0);
    ck_assert_int_eq(gateway_new(wf, NULL, NULL, &gw, &e), NSED_EINVAL);
    ck_assert(strstr(e.msg, "control character"));
    ck_assert(!strstr(e.msg, "sk-bad"));
    workflow_free(wf);
}
END_TEST

/* The seed docs/gateway.md says is sent when both the model and the call
 * have one, computed here by its own hand: splitmix64's finalizer of
 * (finalizer(model seed) XOR call seed), top bit cleared. */
static uint64_t sm_final(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static int64_t expected_mixed_seed(int64_t model_seed, int64_t call_seed)
{
    return (int64_t)(sm_final(sm_final((uint64_t)model_seed) ^
                              (uint64_t)call_seed) >>
                     1);
}

START_TEST(dry_run_prints_and_sends_nothing)
{
    mspec ms[] = {{"a", "ok-a", 1,
                   "    api_key_env: NSED_TEST_KEY\n"
                   "    structured_output: true\n"
                   "    sampling: {temperature: 0.5, max_tokens: 77, "
                   "seed: 9, stop: [\"END\"]}\n"}};
    sim s;
    workflow *wf;
    tctx c;
    char *out = NULL, *line, *nl, url[96];
    size_t outlen = 0, nlines = 0;
    FILE *f;
    gateway_message msg[2];
    gateway_request q;
    nsed_err e = {0};
    gateway_stats st;

    ck_assert_int_eq(setenv("NSED_TEST_KEY", TEST_KEY, 1), 0);
    sim_start(&s);
    wf = wf_make(s.url, ms, 1, NULL);
    f = open_memstream(&out, &outlen);
    ck_assert_ptr_nonnull(f);
    tctx_init(&c);
    gw_make(wf, NULL, &c, f);
    submit(&c, 0, "first", 0, 0, 0);
    req_fill(&q, msg, 0, "second", 1, 0);
    q.schema = "{\"type\":\"object\",\"properties\":{\"n\":{\"type\":"
               "\"integer\"}}}";
    q.schema_name = "answer";
    q.has_seed = true;
    q.seed = INT64_MAX;
    ck_assert_int_eq(gateway_submit(c.gw, &q, on_done, tk(&c, 1), &e), 0);
    run(&c, 5);
    ck_assert_uint_eq(c.n, 2);
    for (size_t i = 0; i < 2; i++) {
        ck_assert_int_eq(c.v[i].code, GATEWAY_DRY_RUN);
        ck_assert_int_eq(c.v[i].attempts, 0);
    }
    ck_assert_int_eq(gateway_stats_get(c.gw, 0, &st), 0);
    ck_assert_uint_eq(st.dry_run, 2);
    ck_assert_uint_eq(st.attempts, 0);
    gateway_free(c.gw);
    fclose(f);
    ck_assert(!tu_contains(out, "SECRET123"));
    ck_assert(!tu_contains(out, "Authorization"));
    snprintf(url, sizeof url, "%s/chat/completions", s.url);
    for (line = out; (nl = strchr(line, '\n')) != NULL; line = nl + 1) {
        cJSON *j, *body;

        *nl = '\0';
        j = cJSON_Parse(line);

        ck_assert_ptr_nonnull(j);
        body = cJSON_GetObjectItemCaseSensitive(j, "body");
        ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(j, "url")
                             ->valuestring,
                         url);
        ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(j, "api_key_env")
                             ->valuestring,
                         "NSED_TEST_KEY");
        ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(body, "model")
                             ->valuestring,
                         "ok-a");
        ck_assert_int_eq(cJSON_GetObjectItemCaseSensitive(body, "max_tokens")
                             ->valueint,
                         77);
        ck_assert(cJSON_GetObjectItemCaseSensitive(body, "temperature")
                      ->valuedouble == 0.5);
        ck_assert_str_eq(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(
                                                body, "stop"), 0)
                             ->valuestring,
                         "END");
        if (nlines == 0) {
            ck_assert_ptr_null(
                cJSON_GetObjectItemCaseSensitive(body, "response_format"));
            ck_assert(tu_contains(line, "\"seed\":9"));
        } else {
            cJSON *rf = cJSON_GetObjectItemCaseSensitive(body,
                                                         "response_format");
            cJSON *js = cJSON_GetObjectItemCaseSensitive(rf, "json_schema");

            ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(rf, "type")
                                 ->valuestring,
                             "json_schema");
            ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(js, "name")
                                 ->valuestring,
                             "answer");
            ck_assert(cJSON_IsTrue(
                cJSON_GetObjectItemCaseSensitive(js, "strict")));
            /* the call's seed and the model's sampling.seed (9), mixed
             * (docs/gateway.md): not the call's seed alone any more */
            char want[48];

            snprintf(want, sizeof want, "\"seed\":%lld",
                     (long long)expected_mixed_seed(9, INT64_MAX));
            ck_assert_msg(tu_contains(line, want), "%s lacks %s", line, want);
        }
        cJSON_Delete(j);
        nlines++;
    }
    ck_assert_uint_eq(nlines, 2);
    ck_assert_int_eq(stat_of(&s, NULL, "rejected"), 0);
    ck_assert_int_eq(stat_of(&s, "ok-a", "requests"), 0);
    sim_stop(&s);
    free(out);
    tctx_release(&c);
    workflow_free(wf);
}
END_TEST

/* ---- issue 10, item 6: keys echoed in reply content --------------------- */

START_TEST(redact_text_replaces_every_key)
{
    static const char *const keys[] = {"sk-test-SECRET123", NULL, "", "ab"};
    char *s = strdup("k=sk-test-SECRET123, sk-test-SECRET123sk-test-"
                     "SECRET123; ab.");

    ck_assert_ptr_nonnull(s);
    for (size_t i = 0; i < 4; i++)
        ck_assert_int_eq(gw_redact_text(&s, keys[i]), 0);
    ck_assert_str_eq(s, "k=[REDACTED], [REDACTED][REDACTED]; [REDACTED].");
    /* nothing to replace leaves the text as it is */
    ck_assert_int_eq(gw_redact_text(&s, "absent-key"), 0);
    ck_assert_str_eq(s, "k=[REDACTED], [REDACTED][REDACTED]; [REDACTED].");
    free(s);
}
END_TEST

typedef struct plant_ctx {
    const uint8_t *key;
    const char *content;
} plant_ctx;

/* Overwrite the ledger record under key with content (a store written
 * before content was redacted). */
static int plant_fn(store_txn *t, void *arg, nsed_err *err)
{
    const plant_ctx *p = arg;
    ledger_record r = {0};

    r.content = (char *)p->content;
    r.finish_reason = "stop";
    r.model = "any";
    r.attempts = 1;
    r.http_status = 200;
    return ledger_put(t, p->key, &r, err);
}

START_TEST(api_key_in_content_is_redacted)
{
    char *resp[1], *dir = tu_mkdtemp(), *log;
    mspec ms[] = {{"keyed", "any", 1, "    api_key_env: NSED_TEST_KEY\n"}};
    uint8_t key[HASH_LEN];
    canned cs;
    workflow *wf;
    store *st;
    tctx c;

    ck_assert_int_eq(setenv("NSED_TEST_KEY", TEST_KEY, 1), 0);
    /* a server that echoes the Authorization header into the reply */
    resp[0] = http_response(200, NULL,
                            "{\"choices\":[{\"message\":"
                            "{\"content\":\"You sent Bearer " TEST_KEY
                            ", i.e. " TEST_KEY ". "
                            "\\\\boxed{4}\"},"
                            "\"finish_reason\":\"stop\"}],"
                            "\"usage\":{\"prompt_tokens\":3,"
                            "\"completion_tokens\":1}}");
    canned_start(&cs, resp, 1);
    wf = wf_make(cs.url, ms, 1, NULL);
    tctx_init(&c);
    st = store_at(dir);
    gw_make(wf, st, &c, NULL);
    submit(&c, 0, "hello", 0, 0, 0);
    run(&c, 10);
    ck_assert_msg(got_tag(&c, 0)->code == 0, "%s", got_tag(&c, 0)->error);
    ck_assert_str_eq(got_tag(&c, 0)->content,
                     "You sent Bearer [REDACTED], i.e. [REDACTED]. "
                     "\\boxed{4}");
    memcpy(key, got_tag(&c, 0)->key, HASH_LEN);
    gateway_free(c.gw);
    tctx_release(&c);
    /* the ledger holds the redacted reply only */
    store_close(st);
    ck_assert(!dir_holds(dir, "SECRET123"));
    ck_assert(dir_holds(dir, "You sent Bearer [REDACTED]"));

    /* a record written before redaction existed is redacted on its way
     * out of the ledger */
    st = store_at(dir);
    {
        plant_ctx p = {key, "old copy of " TEST_KEY " here"};
        nsed_err e = {0};

        ck_assert_msg(store_write(st, plant_fn, &p, &e) == 0, "%s", e.msg);
    }
    tctx_init(&c);
    gw_make(wf, st, &c, NULL);
    submit(&c, 0, "hello", 0, 0, 1);
    run(&c, 10);
    ck_assert(got_tag(&c, 1)->from_ledger);
    ck_assert_str_eq(got_tag(&c, 1)->content, "old copy of [REDACTED] here");
    gateway_free(c.gw);
    store_close(st);
    log = canned_stop(&cs);
    free(log);
    free(resp[0]);
    tctx_release(&c);
    workflow_free(wf);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

/* Two models, one key inside the other: the longer goes first, so no
 * tail of it is left behind. */
START_TEST(longest_key_redacted_first)
{
    char *resp[1], *log;
    mspec ms[] = {{"short", "any", 1, "    api_key_env: NSED_TEST_KEY\n"},
                  {"long", "any", 1, "    api_key_env: NSED_TEST_KEY2\n"}};
    canned cs;
    workflow *wf;
    tctx c;

    ck_assert_int_eq(setenv("NSED_TEST_KEY", TEST_KEY, 1), 0);
    ck_assert_int_eq(setenv("NSED_TEST_KEY2", TEST_KEY "-tail77", 1), 0);
    resp[0] = http_response(200, NULL,
                            "{\"choices\":[{\"message\":{\"content\":"
                            "\"a " TEST_KEY "-tail77 b " TEST_KEY " c\"},"
                            "\"finish_reason\":\"stop\"}]}");
    canned_start(&cs, resp, 1);
    wf = wf_make(cs.url, ms, 2, NULL);
    tctx_init(&c);
    gw_make(wf, NULL, &c, NULL);
    submit(&c, 0, "hello", 0, 0, 0);
    run(&c, 10);
    ck_assert_msg(got_tag(&c, 0)->code == 0, "%s", got_tag(&c, 0)->error);
    ck_assert_str_eq(got_tag(&c, 0)->content, "a [REDACTED] b [REDACTED] c");
    gateway_free(c.gw);
    log = canned_stop(&cs);
    free(log);
    free(resp[0]);
    tctx_release(&c);
    workflow_free(wf);
}
END_TEST

/* ---- which failures are permanent (issue 10) ---------------------------- */

START_TEST(permanent_statuses_and_bodies)
{
    static const char ctx[] = "{\"error\":{\"message\":\"This model's "
                              "Maximum Context Length is 4096 tokens\"}}";

    for (long st = 100; st < 600; st++)
        ck_assert_msg(gateway_status_permanent(st) ==
                          (st == 400 || st == 401 || st == 403 || st == 404 ||
                           st == 413 || st == 422),
                      "status %ld", st);
    ck_assert(gw_body_permanent(ctx, strlen(ctx)));
    ck_assert(gw_body_permanent("{\"error\":{\"type\":"
                                "\"exceed_context_size_error\"}}",
                                44));
    ck_assert(gw_body_permanent("x\"code\":\"model_not_found\"", 26));
    ck_assert(!gw_body_permanent("{\"error\":{\"message\":\"busy\"}}", 29));
    /* the marker must lie within the first 8 KiB */
    {
        char *big = malloc(9000);

        memset(big, ' ', 9000);
        memcpy(big + 8500, "context_length_exceeded", 23);
        ck_assert(!gw_body_permanent(big, 9000));
        ck_assert(gw_body_permanent(big + 1000, 8000));
        free(big);
    }
}
END_TEST

/* What a caller is told: 400, 401 and a 500 saying the prompt passes the
 * context are permanent (one attempt each); a 405 is not retried either
 * but is not permanent; a 503 is retried and not permanent. */
START_TEST(permanent_failures_are_flagged)
{
    static const char *const bodies[] = {
        "{\"error\":{\"message\":\"prompt too long\"}}",
        "{\"error\":{\"message\":\"bad key\"}}",
        "{\"error\":{\"message\":\"context length exceeded\"}}",
        "{\"error\":{\"message\":\"no\"}}",
        "{\"error\":{\"message\":\"busy\"}}",
    };
    static const int status[] = {400, 401, 500, 405, 503};
    static const bool want[] = {true, true, true, false, false};
    static const int attempts[] = {1, 1, 1, 1, 2};
    char *resp[6];
    canned cs;
    mspec ms[] = {{"m", "any", 1, NULL}};
    workflow *wf;
    tctx c;

    for (size_t i = 0; i < 5; i++)
        resp[i] = http_response(status[i], NULL, bodies[i]);
    resp[5] = http_response(503, NULL, bodies[4]);
    canned_start(&cs, resp, 6);
    wf = wf_make(cs.url, ms, 1,
                 "gateway:\n  retry: {max_attempts: 2, base_delay_ms: 1, "
                 "max_delay_ms: 2}\n");
    tctx_init(&c);
    gw_make(wf, NULL, &c, NULL);
    for (int i = 0; i < 5; i++) {
        char text[32];

        snprintf(text, sizeof text, "question %d", i);
        submit(&c, 0, text, 0, 0, i);
        run(&c, 10);
        ck_assert_int_eq(got_tag(&c, i)->code, NSED_ENET);
        ck_assert_int_eq(got_tag(&c, i)->status, status[i]);
        ck_assert_msg(got_tag(&c, i)->permanent == want[i], "status %d",
                      status[i]);
        ck_assert_int_eq(got_tag(&c, i)->attempts, attempts[i]);
    }
    gateway_free(c.gw);
    free(canned_stop(&cs));
    for (size_t i = 0; i < 6; i++)
        free(resp[i]);
    tctx_release(&c);
    workflow_free(wf);
}
END_TEST

/* The body gw_build_body makes for q to model 0 of a workflow whose model
 * has the extra YAML lines (the test owns it). */
static char *body_for(const char *extra, const gateway_request *q,
                      uint8_t key[HASH_LEN])
{
    const mspec ms[1] = {{"a", "ok-a", 2, extra}};
    workflow *wf = wf_make("http://127.0.0.1:9/v1", ms, 1, NULL);
    char *body = NULL;
    size_t len = 0;
    nsed_err e = {0};

    ck_assert_msg(gw_build_body(&wf->models[0], q, &body, &len, &e) == 0, "%s",
                  e.msg);
    ck_assert_int_eq(gateway_request_key(wf, q, key, NULL), 0);
    workflow_free(wf);
    return body;
}

START_TEST(sampling_seed_value_matters)
{
    gateway_message msg[2];
    gateway_request q;
    uint8_t k7[HASH_LEN], k7b[HASH_LEN], k8[HASH_LEN];
    char *a, *b, *c, want[64];

    /* as the runner sends it: the call's own derived seed with it */
    req_fill(&q, msg, 0, "q", 1, 0);
    q.has_seed = true;
    q.seed = 123456789;
    a = body_for("    sampling: {seed: 7}\n", &q, k7);
    b = body_for("    sampling: {seed: 7}\n", &q, k7b);
    c = body_for("    sampling: {seed: 8}\n", &q, k8);
    ck_assert_str_eq(a, b); /* one value: the same body and key */
    ck_assert_mem_eq(k7, k7b, HASH_LEN);
    ck_assert_str_ne(a, c); /* two values: different bodies and keys */
    ck_assert_mem_ne(k7, k8, HASH_LEN);
    snprintf(want, sizeof want, "\"seed\":%lld",
             (long long)expected_mixed_seed(7, 123456789));
    ck_assert_msg(tu_contains(a, want), "%s lacks %s", a, want);
    snprintf(want, sizeof want, "\"seed\":%lld",
             (long long)expected_mixed_seed(8, 123456789));
    ck_assert_msg(tu_contains(c, want), "%s lacks %s", c, want);
    free(a);
    free(b);
    free(c);
    /* no seed of the model: the call's seed as it is; none at all: none */
    a = body_for("", &q, k7);
    ck_assert(tu_contains(a, "\"seed\":123456789}"));
    free(a);
    q.has_seed = false;
    a = body_for("", &q, k7);
    ck_assert(!tu_contains(a, "\"seed\""));
    free(a);
    a = body_for("    sampling: {seed: 8}\n", &q, k7);
    ck_assert(tu_contains(a, "\"seed\":8}"));
    free(a);
}
END_TEST

START_TEST(extra_body_is_sent_and_keyed)
{
    gateway_message msg[2];
    gateway_request q;
    uint8_t k0[HASH_LEN], k1[HASH_LEN], k2[HASH_LEN];
    char *plain, *extra, *other;
    cJSON *j;

    req_fill(&q, msg, 0, "q", 1, 0);
    plain = body_for("", &q, k0);
    extra = body_for("    extra_body: {cache_prompt: false, n_probs: 2, "
                     "tag: \"x\", nest: {list: [1, 2.5, null, yes]}}\n",
                     &q, k1);
    other = body_for("    extra_body: {cache_prompt: true}\n", &q, k2);
    /* merged after nsed's own fields, in file order, typed as YAML reads */
    ck_assert_msg(tu_contains(extra, "\"max_tokens\":1024,\"cache_prompt\":"
                                     "false,\"n_probs\":2,\"tag\":\"x\","
                                     "\"nest\":{\"list\":[1,2.5,null,"
                                     "\"yes\"]}}"),
                  "%s", extra);
    j = cJSON_Parse(extra);
    ck_assert_ptr_nonnull(j);
    ck_assert(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(j,
                                                             "cache_prompt")));
    ck_assert_str_eq(cJSON_GetObjectItemCaseSensitive(j, "model")->valuestring,
                     "ok-a");
    cJSON_Delete(j);
    ck_assert(!tu_contains(plain, "cache_prompt"));
    ck_assert(tu_contains(other, "\"cache_prompt\":true}"));
    /* part of the ledger key: three settings, three keys */
    ck_assert_mem_ne(k0, k1, HASH_LEN);
    ck_assert_mem_ne(k1, k2, HASH_LEN);
    ck_assert_mem_ne(k0, k2, HASH_LEN);
    free(plain);
    free(extra);
    free(other);
}
END_TEST

START_TEST(no_extra_body_keeps_ledger_keys)
{
    /* a call without extra_body has the key it had before the field
     * existed: the ledger_call of the old layout, hashed by the same
     * fields (so old stores still answer from their ledger) */
    ledger_call c = {0};
    gateway_message msg[1] = {{"user", "hi"}};
    uint8_t k[HASH_LEN];
    char hex[HASH_HEX_LEN + 1];

    c.endpoint = "http://127.0.0.1:9/v1";
    c.model = "m";
    c.messages = msg;
    c.nmessages = 1;
    c.temperature = 0.7;
    c.top_p = 1;
    c.max_tokens = 16;
    ck_assert_int_eq(ledger_key_legacy(&c, k), 0);
    hash_hex(k, hex);
    /* pinned from the ledger before extra_body (commit bbd6968) */
    ck_assert_str_eq(hex, PINNED_KEY_NO_EXTRA);
}
END_TEST

/* Found by fuzz/fuzz_gateway.c: bytes that are not UTF-8 in a server's
 * explanation went into the error message as they were (and from there
 * into the store and the export), and a leading DEL became a leading
 * space. Each such byte becomes U+FFFD, as in stored model text
 * (stages/text.h), within the cap. */
START_TEST(server_messages_are_utf8)
{
    char out[GATEWAY_SERVER_MSG_MAX + 1], big[GATEWAY_SERVER_MSG_MAX + 8];
    const char *e = "{\xa2"
                    "choices\": [{\"message\": {\"content\": \"unter";

    gw_server_message(e, strlen(e), out, sizeof out);
    ck_assert_str_eq(out, "{\xef\xbf\xbd"
                          "choices\": [{\"message\": "
                          "{\"content\": \"unter");
    e = "Bad \xff\xfe Gateway \xe2\x82";
    gw_server_message(e, strlen(e), out, sizeof out);
    ck_assert_str_eq(out, "Bad \xef\xbf\xbd\xef\xbf\xbd Gateway "
                          "\xef\xbf\xbd\xef\xbf\xbd");
    e = "{\"error\":{\"message\":\"bad \xc3 byte, caf\xc3\xa9\"}}";
    gw_server_message(e, strlen(e), out, sizeof out);
    ck_assert_str_eq(out, "bad \xef\xbf\xbd byte, caf\xc3\xa9");
    /* Text that starts like a JSON value is still text (cJSON reads the
     * number 404 and ignores the rest): found while writing this test. */
    e = "404 page not found";
    gw_server_message(e, strlen(e), out, sizeof out);
    ck_assert_str_eq(out, "404 page not found");
    /* DEL is a control character at the start too */
    e = "\x7f\x7f plain text \x7f";
    gw_server_message(e, strlen(e), out, sizeof out);
    ck_assert_str_eq(out, "plain text");
    /* a replacement that does not fit whole is left out */
    memset(big, 'x', GATEWAY_SERVER_MSG_MAX - 1);
    big[GATEWAY_SERVER_MSG_MAX - 1] = '\xff';
    memcpy(big + GATEWAY_SERVER_MSG_MAX, "yy", 3);
    gw_server_message(big, strlen(big), out, sizeof out);
    ck_assert_uint_eq(strlen(out), GATEWAY_SERVER_MSG_MAX - 1);
    ck_assert_int_eq(out[GATEWAY_SERVER_MSG_MAX - 2], 'x');
}
END_TEST

/* ---- ledger key form 2: the model, not the URL (issue 11 item 6) -------- */

START_TEST(ledger_key_form2_is_pinned)
{
    ledger_call c = {0};
    gateway_message msg[1] = {{"user", "hi"}};
    uint8_t k[HASH_LEN], k2[HASH_LEN];
    char hex[HASH_HEX_LEN + 1];

    c.endpoint = "http://127.0.0.1:9/v1";
    c.model_id = "alpha";
    c.model = "m";
    c.messages = msg;
    c.nmessages = 1;
    c.temperature = 0.7;
    c.top_p = 1;
    c.max_tokens = 16;
    ck_assert_int_eq(ledger_key(&c, k), 0);
    hash_hex(k, hex);
    ck_assert_str_eq(hex, PINNED_KEY_FORM2);
    /* another port, host or scheme: the same key */
    c.endpoint = "https://gpu7.example:8443/v1";
    ck_assert_int_eq(ledger_key(&c, k2), 0);
    ck_assert_mem_eq(k, k2, HASH_LEN);
    /* the model id and the served name are part of it */
    c.model_id = "beta";
    ck_assert_int_eq(ledger_key(&c, k2), 0);
    ck_assert_mem_ne(k, k2, HASH_LEN);
    c.model_id = "alpha";
    c.model = "m2";
    ck_assert_int_eq(ledger_key(&c, k2), 0);
    ck_assert_mem_ne(k, k2, HASH_LEN);
}
END_TEST

START_TEST(moved_endpoint_keeps_the_ledger)
{
    mspec ms[] = {{"a", "ok-a", 2, NULL}};
    char *dir = tu_mkdtemp();
    sim sa, sb;
    workflow *wa, *wb;
    store *st;
    tctx c;

    sim_start(&sa);
    sim_start(&sb);
    ck_assert_str_ne(sa.url, sb.url);
    wa = wf_make(sa.url, ms, 1, NULL);
    wb = wf_make(sb.url, ms, 1, NULL);
    tctx_init(&c);
    st = store_at(dir);
    gw_make(wa, st, &c, NULL);
    submit(&c, 0, "What is 6*7?", 1, 0, 1);
    run(&c, 10);
    ck_assert_msg(c.v[0].code == 0, "%s", c.v[0].error);
    ck_assert(!c.v[0].from_ledger);
    gateway_free(c.gw);
    tctx_release(&c);
    store_close(st);
    ck_assert_int_eq(stat_of(&sa, "ok-a", "requests"), 1);

    /* the same model served on another port: answered from the ledger */
    tctx_init(&c);
    st = store_at(dir);
    gw_make(wb, st, &c, NULL);
    submit(&c, 0, "What is 6*7?", 1, 0, 2);
    run(&c, 10);
    ck_assert(got_tag(&c, 2)->from_ledger);
    ck_assert_int_eq(stat_of(&sb, "ok-a", "requests"), 0);
    gateway_free(c.gw);
    tctx_release(&c);
    store_close(st);
    sim_stop(&sa);
    sim_stop(&sb);
    workflow_free(wa);
    workflow_free(wb);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

START_TEST(legacy_ledger_entries_still_answer)
{
    mspec ms[] = {{"a", "ok-a", 2, NULL}};
    char *dir = tu_mkdtemp();
    gateway_message msg[2];
    gateway_request q;
    ledger_call lc;
    uint8_t legacy[HASH_LEN], cur[HASH_LEN];
    sim s;
    workflow *wf;
    store *st;
    tctx c;

    sim_start(&s);
    wf = wf_make(s.url, ms, 1, NULL);
    /* a store written before form 2: the call's record under its form 1
     * key only (the same call submit() makes below) */
    req_fill(&q, msg, 0, "What is 6*7?", 1, 0);
    gw_ledger_call(&wf->models[0], &q, &lc);
    ck_assert_int_eq(ledger_key_legacy(&lc, legacy), 0);
    ck_assert_int_eq(ledger_key(&lc, cur), 0);
    ck_assert_mem_ne(legacy, cur, HASH_LEN);
    st = store_at(dir);
    {
        plant_ctx p = {legacy, "legacy \\boxed{42}"};
        nsed_err e = {0};

        ck_assert_msg(store_write(st, plant_fn, &p, &e) == 0, "%s", e.msg);
    }
    tctx_init(&c);
    gw_make(wf, st, &c, NULL);
    submit(&c, 0, "What is 6*7?", 1, 0, 1);
    run(&c, 10);
    ck_assert(got_tag(&c, 1)->from_ledger);
    ck_assert_str_eq(got_tag(&c, 1)->content, "legacy \\boxed{42}");
    ck_assert_mem_eq(got_tag(&c, 1)->key, cur, HASH_LEN);
    ck_assert_int_eq(stat_of(&s, "ok-a", "requests"), 0);
    gateway_free(c.gw);
    tctx_release(&c);
    store_close(st);
    sim_stop(&s);
    workflow_free(wf);
    tu_rmrf(dir);
    free(dir);
}
END_TEST

Suite *tu_suite(void)
{
    Suite *su = suite_create("gateway");
    TCase *tc;

    tc = tcase_create("units");
    tcase_add_test(tc, reply_parsing);
    tcase_add_test(tc, server_messages_and_redaction);
    tcase_add_test(tc, ledger_keys_are_unambiguous);
    tcase_add_test(tc, ledger_records_round_trip);
    tcase_add_test(tc, requests_are_checked);
    tcase_add_test(tc, latency_quantiles);
    suite_add_tcase(su, tc);

    tc = tcase_create("concurrency");
    tcase_add_test(tc, concurrency_caps_hold);
    tcase_add_test(tc, usage_and_cost_are_accounted);
    tcase_add_test(tc, callbacks_may_submit);
    suite_add_tcase(su, tc);

    tc = tcase_create("retries");
    tcase_add_test(tc, retry_after_is_honoured);
    tcase_add_test(tc, retry_after_date_is_honoured);
    tcase_add_test(tc, transient_errors_are_retried);
    tcase_add_test(tc, permanent_errors_are_not_retried);
    tcase_add_test(tc, hanging_responses_time_out);
    tcase_add_test(tc, request_budget_bounds_time_outs);
    tcase_add_test(tc, bad_bodies_are_errors_not_crashes);
    tcase_add_test(tc, oversized_and_redirected_replies_fail);
    tcase_add_test(tc, connection_refused_is_retried_then_fails);
    tcase_add_test(tc, permanent_statuses_and_bodies);
    tcase_add_test(tc, permanent_failures_are_flagged);
    suite_add_tcase(su, tc);

    tc = tcase_create("circuit_breaker");
    tcase_add_test(tc, breaker_pauses_a_dead_model);
    tcase_add_test(tc, breaker_closes_when_the_model_is_back);
    tcase_add_test(tc, paused_requests_wait_for_the_cooldown);
    suite_add_tcase(su, tc);

    tc = tcase_create("ledger");
    tcase_add_test(tc, ledger_answers_repeated_calls);
    tcase_add_test(tc, uncommitted_replies_hold_their_slots);
    tcase_add_test(tc, failed_calls_are_not_recorded);
    tcase_add_test(tc, ledger_keys_ignore_non_semantic_settings);
    suite_add_tcase(su, tc);

    tc = tcase_create("secrets_and_dry_run");
    tcase_add_test(tc, api_key_is_sent_and_never_kept);
    tcase_add_test(tc, redact_text_replaces_every_key);
    tcase_add_test(tc, api_key_in_content_is_redacted);
    tcase_add_test(tc, longest_key_redacted_first);
    tcase_add_test(tc, missing_api_key_is_named);
    tcase_add_test(tc, dry_run_prints_and_sends_nothing);
    suite_add_tcase(su, tc);
    tc = tcase_create("request body");
    tcase_add_test(tc, sampling_seed_value_matters);
    tcase_add_test(tc, extra_body_is_sent_and_keyed);
    tcase_add_test(tc, no_extra_body_keeps_ledger_keys);
    tcase_add_test(tc, ledger_key_form2_is_pinned);
    tcase_add_test(tc, moved_endpoint_keeps_the_ledger);
    tcase_add_test(tc, legacy_ledger_entries_still_answer);
    suite_add_tcase(su, tc);

    tc = tcase_create("fuzz_findings");
    tcase_add_test(tc, server_messages_are_utf8);
    suite_add_tcase(su, tc);

    return su;
}
