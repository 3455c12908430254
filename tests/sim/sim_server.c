#include "sim_server.h"

#include "pipeline/base/buf.h"
#include "pipeline/base/hash.h"
#include "pipeline/base/json.h"
#include "sim_model.h"
#include "sim_prompt.h"
#include "sim_rng.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

/* Attempt counters: a set-associative table, so memory stays fixed however
 * many distinct requests arrive; the least recently used way of a set is
 * recycled. An evicted request simply counts from 1 again. */
#define ATTEMPT_SETS 4096
#define ATTEMPT_WAYS 4
/* OpenAI accepts at most four stop sequences. */
#define MAX_STOP 4
/* Fixed "created" time, so identical requests get identical bodies. */
#define SIM_CREATED 1700000000
#define CONNECTION_LIMIT 4096

typedef struct counters {
    uint64_t requests, ok, faults[SIM_FAULT_COUNT], faults_total;
    uint64_t in_flight, peak_in_flight, prompt_tokens, completion_tokens;
} counters;

/* Conversations a model's simulated prefix cache remembers. */
#define SIM_PREFIX_RECENT 64

typedef struct model_state {
    const sim_model_cfg *cfg;
    pthread_mutex_t lock; /* guards everything below */
    counters c;
    /* the simulated prefix cache: the last SIM_PREFIX_RECENT conversations
     * (prompt, then the reply as an assistant turn) in a ring */
    char *recent[SIM_PREFIX_RECENT];
    size_t recent_len[SIM_PREFIX_RECENT];
    size_t recent_next;
    /* CLOCK_MONOTONIC of the first request (the outage window's origin),
     * 0 = none yet; and the requests dropped in the window */
    double first_s;
    uint64_t down;
} model_state;

typedef struct attempt_slot {
    uint8_t key[HASH_LEN];
    uint64_t count;
    uint64_t used;  /* clock value of the last use; 0 = empty */
} attempt_slot;

struct sim_server {
    const sim_config *cfg;
    const sim_qset *qs;
    struct MHD_Daemon *daemon;
    unsigned port;
    model_state *models;

    pthread_mutex_t stats_lock; /* guards the three fields below */
    uint64_t in_flight, peak_in_flight, rejected;

    pthread_mutex_t attempts_lock; /* guards attempts and attempt_clock */
    attempt_slot (*attempts)[ATTEMPT_WAYS];
    uint64_t attempt_clock;

    pthread_mutex_t stop_lock; /* guards stopping; stop_cond signals it */
    pthread_cond_t stop_cond;
    int stopping;
    int locks_ready;

    /* NSED_SIM_REQUEST_LOG=FILE: each chat request's body appended to FILE
     * as one line (docs/nsed-sim.md), for tests that compare what went
     * over the wire; NULL when not asked. reqlog_lock guards it. */
    FILE *reqlog;
    pthread_mutex_t reqlog_lock;
};

/* Per-request state kept by MHD between handler calls. */
typedef struct req_ctx {
    buf body;
    int too_big;
    struct timespec arrived; /* when its headers were read */
} req_ctx;

/* ---- small helpers ---------------------------------------------------- */

static void put_le64(uint8_t b[8], uint64_t v)
{
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(v >> (8 * i));
}

/* Sleep until ms after *from (now when NULL), waking early when the
 * server stops. Returns 1 when the server is stopping. */
static int wait_ms_from(sim_server *s, const struct timespec *from, double ms)
{
    struct timespec deadline;
    long long ns;
    int stopping;

    if (from)
        deadline = *from;
    else
        clock_gettime(CLOCK_MONOTONIC, &deadline);
    if (ms < 0)
        ms = 0;
    ns = (long long)(ms * 1e6);
    deadline.tv_sec += (time_t)(ns / 1000000000LL);
    deadline.tv_nsec += (long)(ns % 1000000000LL);
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&s->stop_lock);
    while (!s->stopping) {
        if (pthread_cond_timedwait(&s->stop_cond, &s->stop_lock, &deadline) ==
            ETIMEDOUT)
            break;
    }
    stopping = s->stopping;
    pthread_mutex_unlock(&s->stop_lock);
    return stopping;
}

static int wait_ms(sim_server *s, double ms)
{
    return wait_ms_from(s, NULL, ms);
}

/* Print a cJSON tree into a malloc'd string (MHD frees it with free()). */
static char *print_json(const cJSON *j)
{
    char *t = j ? cJSON_PrintUnformatted(j) : NULL, *copy;

    if (!t)
        return NULL;
    copy = strdup(t);
    cJSON_free(t);
    return copy;
}

static char *error_body(const char *message, const char *type,
                        const char *code)
{
    cJSON *root = cJSON_CreateObject(), *e;
    char *text = NULL;

    e = root ? cJSON_AddObjectToObject(root, "error") : NULL;
    if (e && cJSON_AddStringToObject(e, "message", message) &&
        cJSON_AddStringToObject(e, "type", type) &&
        (code ? cJSON_AddStringToObject(e, "code", code) != NULL
              : cJSON_AddNullToObject(e, "code") != NULL))
        text = print_json(root);
    cJSON_Delete(root);
    return text;
}

/* Queue body (malloc'd, taken over) with a JSON content type and an
 * optional extra header. */
static enum MHD_Result respond(struct MHD_Connection *conn, unsigned status,
                               char *body, const char *hname,
                               const char *hvalue)
{
    struct MHD_Response *r;
    enum MHD_Result ret;

    if (!body)
        return MHD_NO;
    r = MHD_create_response_from_buffer(strlen(body), body,
                                        MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                            "application/json");
    if (hname)
        MHD_add_response_header(r, hname, hvalue);
    ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result reject(sim_server *s, struct MHD_Connection *conn,
                              unsigned status, const char *message,
                              const char *type, const char *code)
{
    pthread_mutex_lock(&s->stats_lock);
    s->rejected++;
    pthread_mutex_unlock(&s->stats_lock);
    return respond(conn, status, error_body(message, type, code), NULL, NULL);
}

/* ---- attempts --------------------------------------------------------- */

/* Count one more attempt of the request with this digest; return the
 * attempt number (1 for the first). */
static uint64_t attempt_next(sim_server *s, const uint8_t key[HASH_LEN])
{
    size_t set = ((size_t)key[0] | (size_t)key[1] << 8) % ATTEMPT_SETS;
    attempt_slot *ways = s->attempts[set], *slot = NULL;
    uint64_t n;

    pthread_mutex_lock(&s->attempts_lock);
    s->attempt_clock++;
    for (int i = 0; i < ATTEMPT_WAYS && !slot; i++) {
        if (ways[i].used && !memcmp(ways[i].key, key, HASH_LEN))
            slot = &ways[i];
    }
    if (!slot) {
        /* Recycle the least recently used way (empty ways have used 0). */
        slot = &ways[0];
        for (int i = 1; i < ATTEMPT_WAYS; i++) {
            if (ways[i].used < slot->used)
                slot = &ways[i];
        }
        memcpy(slot->key, key, HASH_LEN);
        slot->count = 0;
    }
    slot->used = s->attempt_clock;
    n = ++slot->count;
    pthread_mutex_unlock(&s->attempts_lock);
    return n;
}

/* ---- in-flight accounting --------------------------------------------- */

static void flight_begin(sim_server *s, model_state *m)
{
    pthread_mutex_lock(&m->lock);
    m->c.requests++;
    if (++m->c.in_flight > m->c.peak_in_flight)
        m->c.peak_in_flight = m->c.in_flight;
    pthread_mutex_unlock(&m->lock);
    pthread_mutex_lock(&s->stats_lock);
    if (++s->in_flight > s->peak_in_flight)
        s->peak_in_flight = s->in_flight;
    pthread_mutex_unlock(&s->stats_lock);
}

static void flight_end(sim_server *s, model_state *m)
{
    pthread_mutex_lock(&m->lock);
    m->c.in_flight--;
    pthread_mutex_unlock(&m->lock);
    pthread_mutex_lock(&s->stats_lock);
    s->in_flight--;
    pthread_mutex_unlock(&s->stats_lock);
}

/* ---- request parsing -------------------------------------------------- */

typedef struct chat_req {
    cJSON *json;
    const char *model;
    size_t nmsg;
    const char **roles;  /* point into json */
    char **texts;        /* malloc'd message texts */
    size_t *lens;
    int has_seed;
    long long seed;
    long long max_tokens; /* 0: no limit given */
    const char *stops[MAX_STOP];
    size_t nstop;
} chat_req;

static void chat_req_release(chat_req *r)
{
    for (size_t i = 0; r->texts && i < r->nmsg; i++)
        free(r->texts[i]);
    free(r->texts);
    free(r->roles);
    free(r->lens);
    cJSON_Delete(r->json);
    memset(r, 0, sizeof *r);
}

/* The text of a message's content: a string, null, or an array of parts
 * whose "text" parts are joined with newlines. */
static int message_text(const cJSON *content, char **out, size_t *len)
{
    buf b;
    const cJSON *part;
    int rc = 0;

    buf_init(&b, SIM_MAX_BODY);
    if (!content || cJSON_IsNull(content)) {
        /* no text: b stays "" */
    } else if (cJSON_IsString(content)) {
        rc = buf_adds(&b, content->valuestring);
    } else if (cJSON_IsArray(content)) {
        cJSON_ArrayForEach(part, content)
        {
            const cJSON *type = cJSON_GetObjectItemCaseSensitive(part, "type");
            const cJSON *text = cJSON_GetObjectItemCaseSensitive(part, "text");

            if (!cJSON_IsObject(part) || !cJSON_IsString(type)) {
                rc = NSED_EINVAL;
                break;
            }
            if (strcmp(type->valuestring, "text"))
                continue;
            if (!cJSON_IsString(text)) {
                rc = NSED_EINVAL;
                break;
            }
            if (b.len)
                rc = buf_addc(&b, '\n');
            if (!rc)
                rc = buf_adds(&b, text->valuestring);
            if (rc)
                break;
        }
    } else {
        rc = NSED_EINVAL;
    }
    if (rc) {
        buf_release(&b);
        return rc;
    }
    *out = buf_detach(&b, len);
    return *out ? 0 : NSED_ENOMEM;
}

/* ---- a 64-bit seed, exactly --------------------------------------------- */

/* Skip white space in [*i, len). */
static void skip_ws(const char *t, size_t len, size_t *i)
{
    while (*i < len &&
           (t[*i] == ' ' || t[*i] == '\t' || t[*i] == '\n' || t[*i] == '\r'))
        (*i)++;
}

/* Skip the string starting at t[*i] == '"'. */
static void skip_string(const char *t, size_t len, size_t *i)
{
    for ((*i)++; *i < len && t[*i] != '"'; (*i)++) {
        if (t[*i] == '\\')
            (*i)++;
    }
    if (*i < len)
        (*i)++;
}

/* Skip one value (the text is valid JSON: cJSON has read it). */
static void skip_value(const char *t, size_t len, size_t *i)
{
    size_t depth = 0;

    while (*i < len) {
        char c = t[*i];

        if (c == '"') {
            skip_string(t, len, i);
        } else if (c == '{' || c == '[') {
            depth++;
            (*i)++;
        } else if (c == '}' || c == ']') {
            if (depth == 0)
                return;
            depth--;
            (*i)++;
        } else if (c == ',' && depth == 0) {
            return;
        } else {
            (*i)++;
        }
        if (depth == 0 && *i < len && (t[*i] == ',' || t[*i] == '}'))
            return;
    }
}

/* Whether the key token t[a, b) (quotes included) names key, escapes
 * decoded as cJSON decodes them. */
static int key_is(const char *t, size_t a, size_t b, const char *key)
{
    size_t klen = strlen(key);
    cJSON *k;
    int eq;

    if (!memchr(t + a, '\\', b - a))
        return b - a == klen + 2 && !memcmp(t + a + 1, key, klen);
    k = cJSON_ParseWithLength(t + a, b - a);
    eq = cJSON_IsString(k) && !strcmp(k->valuestring, key);
    cJSON_Delete(k);
    return eq;
}

/* The text of the number that is the first top-level member key of the
 * JSON object text t (already validated by cJSON, which reads numbers as
 * doubles and so loses the digits of a seed above 2^53). Returns 1 with
 * the token in [*tok, *tok + *toklen), or 0 when the member is absent or
 * not a number. */
static int raw_number_member(const char *t, size_t len, const char *key,
                             const char **tok, size_t *toklen)
{
    size_t i = 0;

    skip_ws(t, len, &i);
    if (i >= len || t[i] != '{')
        return 0;
    i++;
    for (;;) {
        size_t a, b;

        skip_ws(t, len, &i);
        if (i >= len || t[i] != '"')
            return 0;
        a = i;
        skip_string(t, len, &i);
        b = i;
        skip_ws(t, len, &i);
        if (i >= len || t[i] != ':')
            return 0;
        i++;
        skip_ws(t, len, &i);
        if (key_is(t, a, b, key)) {
            size_t e = i;

            while (e < len && strchr("+-.0123456789eE", t[e]) && t[e])
                e++;
            if (e == i)
                return 0;
            *tok = t + i;
            *toklen = e - i;
            return 1;
        }
        skip_value(t, len, &i);
        skip_ws(t, len, &i);
        if (i >= len || t[i] != ',')
            return 0;
        i++;
    }
}

/* The request's seed: an integer in [-2^63, 2^63 - 1], read from its
 * digits exactly; an integral number written with a fraction or exponent
 * ("5.0", "1e3") is read through the double, so only up to 2^53. Returns 1
 * and *out, or 0 for anything else. */
static int seed_value(const char *body, size_t len, const cJSON *j,
                      long long *out)
{
    const char *tok;
    size_t n, k = 0;
    char digits[32];
    char *end;
    long long v;
    int64_t d;

    if (!cJSON_IsNumber(j))
        return 0;
    if (raw_number_member(body, len, "seed", &tok, &n) && n < sizeof digits) {
        if (tok[0] == '-')
            k = 1;
        while (k < n && tok[k] >= '0' && tok[k] <= '9')
            k++;
        if (k == n && n > (tok[0] == '-' ? 1u : 0u)) {
            memcpy(digits, tok, n);
            digits[n] = '\0';
            errno = 0;
            v = strtoll(digits, &end, 10);
            if (errno == ERANGE || *end)
                return 0;
            *out = v;
            return 1;
        }
    }
    if (!json_int_value(j, -9007199254740992LL, 9007199254740992LL, &d))
        return 0;
    *out = d;
    return 1;
}

/* Parse and validate a chat completion request. Returns 0, NSED_EINVAL
 * with a message in why (answer 400), or NSED_ENOMEM. */
static int parse_chat(const char *body, size_t len, chat_req *r, char *why,
                      size_t whylen)
{
    const cJSON *j, *msgs, *m;
    int64_t v;
    size_t i = 0;
    int rc;

    memset(r, 0, sizeof *r);
    r->json = cJSON_ParseWithLength(body, len);
    if (!r->json) {
        snprintf(why, whylen, "invalid JSON body");
        return NSED_EINVAL;
    }
    if (!cJSON_IsObject(r->json)) {
        snprintf(why, whylen, "request body must be a JSON object");
        return NSED_EINVAL;
    }
    j = cJSON_GetObjectItemCaseSensitive(r->json, "model");
    if (!cJSON_IsString(j)) {
        snprintf(why, whylen, "you must provide a model parameter");
        return NSED_EINVAL;
    }
    r->model = j->valuestring;
    msgs = cJSON_GetObjectItemCaseSensitive(r->json, "messages");
    if (!cJSON_IsArray(msgs) || cJSON_GetArraySize(msgs) == 0) {
        snprintf(why, whylen, "'messages' must be a non-empty array");
        return NSED_EINVAL;
    }
    r->nmsg = (size_t)cJSON_GetArraySize(msgs);
    r->roles = calloc(r->nmsg, sizeof *r->roles);
    r->texts = calloc(r->nmsg, sizeof *r->texts);
    r->lens = calloc(r->nmsg, sizeof *r->lens);
    if (!r->roles || !r->texts || !r->lens)
        return NSED_ENOMEM;
    cJSON_ArrayForEach(m, msgs)
    {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");

        if (!cJSON_IsObject(m) || !cJSON_IsString(role)) {
            snprintf(why, whylen, "messages[%zu] must be an object with a "
                     "string 'role'", i);
            return NSED_EINVAL;
        }
        r->roles[i] = role->valuestring;
        rc = message_text(cJSON_GetObjectItemCaseSensitive(m, "content"),
                          &r->texts[i], &r->lens[i]);
        if (rc == NSED_EINVAL)
            snprintf(why, whylen, "messages[%zu].content must be a string, "
                     "null or an array of text parts", i);
        if (rc)
            return rc;
        i++;
    }
    j = cJSON_GetObjectItemCaseSensitive(r->json, "max_tokens");
    if (!j)
        j = cJSON_GetObjectItemCaseSensitive(r->json, "max_completion_tokens");
    if (j && !cJSON_IsNull(j)) {
        if (!json_int_value(j, 1, 100000000, &v)) {
            snprintf(why, whylen, "max_tokens must be a positive integer");
            return NSED_EINVAL;
        }
        r->max_tokens = v;
    }
    j = cJSON_GetObjectItemCaseSensitive(r->json, "seed");
    if (j && !cJSON_IsNull(j)) {
        if (!seed_value(body, len, j, &r->seed)) {
            snprintf(why, whylen,
                     "seed must be an integer in [-2^63, "
                     "2^63 - 1]");
            return NSED_EINVAL;
        }
        r->has_seed = 1;
    }
    for (const char *const *k = (const char *const[]){"temperature", "top_p",
                                                       NULL};
         *k; k++) {
        j = cJSON_GetObjectItemCaseSensitive(r->json, *k);
        if (j && !cJSON_IsNull(j) && !cJSON_IsNumber(j)) {
            snprintf(why, whylen, "%s must be a number", *k);
            return NSED_EINVAL;
        }
    }
    if (json_bool(r->json, "stream", false)) {
        snprintf(why, whylen, "streaming is not supported by nsed-sim");
        return NSED_EINVAL;
    }
    j = cJSON_GetObjectItemCaseSensitive(r->json, "n");
    if (j && !cJSON_IsNull(j) && !json_int_value(j, 1, 1, &v)) {
        snprintf(why, whylen, "nsed-sim supports only n = 1");
        return NSED_EINVAL;
    }
    j = cJSON_GetObjectItemCaseSensitive(r->json, "response_format");
    if (j && !cJSON_IsNull(j) && !cJSON_IsObject(j)) {
        snprintf(why, whylen, "response_format must be an object");
        return NSED_EINVAL;
    }
    j = cJSON_GetObjectItemCaseSensitive(r->json, "stop");
    if (cJSON_IsString(j)) {
        r->stops[r->nstop++] = j->valuestring;
    } else if (cJSON_IsArray(j)) {
        const cJSON *st;

        if (cJSON_GetArraySize(j) > MAX_STOP) {
            snprintf(why, whylen, "at most %d stop sequences", MAX_STOP);
            return NSED_EINVAL;
        }
        cJSON_ArrayForEach(st, j)
        {
            if (!cJSON_IsString(st)) {
                snprintf(why, whylen, "stop must be a string or an array of "
                         "strings");
                return NSED_EINVAL;
            }
            r->stops[r->nstop++] = st->valuestring;
        }
    } else if (j && !cJSON_IsNull(j)) {
        snprintf(why, whylen, "stop must be a string or an array of strings");
        return NSED_EINVAL;
    }
    return 0;
}

/* Digest of everything a reply may depend on. */
static int request_digest(const sim_server *s, const chat_req *r,
                          uint8_t out[HASH_LEN])
{
    static const char tag[] = "nsed-sim/request/v1";
    hash_ctx *h = hash_new();
    uint8_t b[8];

    if (!h)
        return NSED_ENOMEM;
    hash_update_field(h, tag, sizeof tag - 1);
    put_le64(b, s->cfg->seed);
    hash_update_field(h, b, 8);
    hash_update_field(h, r->model, strlen(r->model));
    put_le64(b, r->nmsg);
    hash_update_field(h, b, 8);
    for (size_t i = 0; i < r->nmsg; i++) {
        hash_update_field(h, r->roles[i], strlen(r->roles[i]));
        hash_update_field(h, r->texts[i], r->lens[i]);
    }
    put_le64(b, (uint64_t)r->has_seed);
    hash_update_field(h, b, 8);
    put_le64(b, (uint64_t)r->seed);
    hash_update_field(h, b, 8);
    hash_final(h, out);
    hash_free(h);
    return 0;
}

static int fault_digest(const uint8_t req[HASH_LEN], uint64_t attempt,
                        uint8_t out[HASH_LEN])
{
    static const char tag[] = "nsed-sim/fault/v1";
    hash_ctx *h = hash_new();
    uint8_t b[8];

    if (!h)
        return NSED_ENOMEM;
    hash_update_field(h, tag, sizeof tag - 1);
    hash_update_field(h, req, HASH_LEN);
    put_le64(b, attempt);
    hash_update_field(h, b, 8);
    hash_final(h, out);
    hash_free(h);
    return 0;
}

/* Pick this attempt's fault, honouring the model's limit, and count it. */
/* Whether the model is inside its outage window (faults.down_after_s,
 * down_for_s) now; counts the request as dropped when it is. The window's
 * clock starts at the model's first request, so a test's timing does not
 * depend on how long the server took to start. */
static int in_outage(model_state *m)
{
    const sim_faults_cfg *f = &m->cfg->faults;
    struct timespec ts;
    double now, t;
    int down;

    if (f->down_for_s <= 0)
        return 0;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    now = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
    pthread_mutex_lock(&m->lock);
    if (m->first_s == 0)
        m->first_s = now;
    t = now - m->first_s;
    down = t >= f->down_after_s && t < f->down_after_s + f->down_for_s;
    if (down)
        m->down++;
    pthread_mutex_unlock(&m->lock);
    return down;
}

static sim_fault choose_fault(model_state *m, const uint8_t req[HASH_LEN],
                              uint64_t attempt, int is_eval, int repair)
{
    const sim_faults_cfg *f = &m->cfg->faults;
    uint8_t d[HASH_LEN];
    sim_fault kind = SIM_FAULT_NONE;
    sim_rng rng;
    double u, acc = 0;

    /* A request that always times out is one whose digest (the attempt
     * left out) draws under the rate: every attempt of it hangs, whatever
     * the limit, as a prompt a server always chokes on. */
    if (f->rate_always_timeout > 0) {
        if (fault_digest(req, UINT64_MAX, d))
            return SIM_FAULT_NONE;
        sim_rng_seed(&rng, d);
        if (sim_rng_uniform(&rng) < f->rate_always_timeout) {
            pthread_mutex_lock(&m->lock);
            m->c.faults[SIM_FAULT_HANG]++;
            m->c.faults_total++;
            pthread_mutex_unlock(&m->lock);
            return SIM_FAULT_HANG;
        }
    }
    if (fault_digest(req, attempt, d))
        return SIM_FAULT_NONE;
    sim_rng_seed(&rng, d);
    u = sim_rng_uniform(&rng);
    for (int k = SIM_FAULT_429; k < SIM_FAULT_COUNT; k++) {
        acc += f->rate[k];
        if (f->rate[k] > 0 && u < acc) {
            kind = (sim_fault)k;
            break;
        }
    }
    /* Only an evaluation can be answered in the wrong format, and only a
     * repair turn refused. */
    if ((kind == SIM_FAULT_NONJSON_EVAL || kind == SIM_FAULT_EMPTY_EVAL) &&
        !is_eval)
        kind = SIM_FAULT_NONE;
    if (kind == SIM_FAULT_400_REPAIR && !repair)
        kind = SIM_FAULT_NONE;
    pthread_mutex_lock(&m->lock);
    if (kind != SIM_FAULT_NONE && f->limit > 0 &&
        m->c.faults_total >= (uint64_t)f->limit)
        kind = SIM_FAULT_NONE;
    if (kind != SIM_FAULT_NONE) {
        m->c.faults[kind]++;
        m->c.faults_total++;
    }
    pthread_mutex_unlock(&m->lock);
    return kind;
}

/* Tokens of the prompt this model saw last that this one shares as a
 * prefix; remembers this prompt for the next request. */
/* The simulated prefix cache: the longest common prefix, in characters / 4,
 * of prompt[0..len) with any of the model's recent conversations; then
 * prompt followed by the reply (as prompt_text would write it as an
 * assistant message) becomes the newest of them, as an engine that keeps
 * the generated tokens of a sequence in its cache would hold it. */
static long long prefix_cache(model_state *m, const char *prompt, size_t len,
                              const char *reply)
{
    static const char role[] = "assistant\n";
    size_t best = 0, rlen = reply ? strlen(reply) : 0;
    size_t clen = len + sizeof role - 1 + rlen + 1;
    char *copy = malloc(clen + 1);

    pthread_mutex_lock(&m->lock);
    for (size_t e = 0; e < SIM_PREFIX_RECENT; e++) {
        const char *t = m->recent[e];
        size_t n = len < m->recent_len[e] ? len : m->recent_len[e], lcp = 0;

        while (t && lcp < n && t[lcp] == prompt[lcp])
            lcp++;
        if (lcp > best)
            best = lcp;
    }
    if (copy) {
        memcpy(copy, prompt, len);
        memcpy(copy + len, role, sizeof role - 1);
        if (rlen)
            memcpy(copy + len + sizeof role - 1, reply, rlen);
        copy[clen - 1] = '\n';
        copy[clen] = '\0';
        free(m->recent[m->recent_next]);
        m->recent[m->recent_next] = copy;
        m->recent_len[m->recent_next] = clen;
        m->recent_next = (m->recent_next + 1) % SIM_PREFIX_RECENT;
    }
    pthread_mutex_unlock(&m->lock);
    return (long long)(best / 4);
}

/* ---- the chat completion ---------------------------------------------- */

typedef struct trunc_body {
    char *data;
    size_t send; /* bytes sent before the transfer is broken off */
} trunc_body;

static ssize_t trunc_read(void *cls, uint64_t pos, char *out, size_t max)
{
    trunc_body *t = cls;
    size_t n;

    if (pos >= t->send)
        return MHD_CONTENT_READER_END_WITH_ERROR;
    n = t->send - (size_t)pos;
    if (n > max)
        n = max;
    memcpy(out, t->data + pos, n);
    return (ssize_t)n;
}

static void trunc_free(void *cls)
{
    trunc_body *t = cls;

    if (t) {
        free(t->data);
        free(t);
    }
}

static enum MHD_Result send_truncated(struct MHD_Connection *conn,
                                      char *body)
{
    trunc_body *t = calloc(1, sizeof *t);
    struct MHD_Response *r;
    enum MHD_Result ret;
    size_t len;

    if (!t || !body) {
        free(t);
        free(body);
        return MHD_NO;
    }
    len = strlen(body);
    t->data = body;
    t->send = len / 2;
    r = MHD_create_response_from_callback(len, 4096, trunc_read, t,
                                          trunc_free);
    if (!r) {
        trunc_free(t);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                            "application/json");
    ret = MHD_queue_response(conn, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ret;
}

/* Build the OpenAI chat.completion body. content NULL gives "choices": []. */
static char *completion_body(const uint8_t digest[HASH_LEN], const char *model,
                             const char *content, const char *finish,
                             long long prompt_tokens, long long completion,
                             long long cached)
{
    char hex[HASH_HEX_LEN + 1], id[64];
    cJSON *root = cJSON_CreateObject(), *choices, *usage, *details;
    char *text = NULL;

    hash_hex(digest, hex);
    snprintf(id, sizeof id, "chatcmpl-sim-%.24s", hex);
    if (!root || !cJSON_AddStringToObject(root, "id", id) ||
        !cJSON_AddStringToObject(root, "object", "chat.completion") ||
        !cJSON_AddNumberToObject(root, "created", SIM_CREATED) ||
        !cJSON_AddStringToObject(root, "model", model) ||
        !cJSON_AddStringToObject(root, "system_fingerprint",
                                 "nsed-sim-" NSED_VERSION))
        goto out;
    choices = cJSON_AddArrayToObject(root, "choices");
    if (!choices)
        goto out;
    if (content) {
        cJSON *c = cJSON_CreateObject(), *msg;

        if (!c || !cJSON_AddItemToArray(choices, c)) {
            cJSON_Delete(c);
            goto out;
        }
        msg = cJSON_AddObjectToObject(c, "message");
        if (!cJSON_AddNumberToObject(c, "index", 0) || !msg ||
            !cJSON_AddStringToObject(msg, "role", "assistant") ||
            !cJSON_AddStringToObject(msg, "content", content) ||
            !cJSON_AddStringToObject(c, "finish_reason", finish))
            goto out;
    }
    usage = cJSON_AddObjectToObject(root, "usage");
    if (!usage ||
        !cJSON_AddNumberToObject(usage, "prompt_tokens",
                                 (double)prompt_tokens) ||
        !cJSON_AddNumberToObject(usage, "completion_tokens",
                                 (double)completion) ||
        !cJSON_AddNumberToObject(usage, "total_tokens",
                                 (double)(prompt_tokens + completion)))
        goto out;
    details = cJSON_AddObjectToObject(usage, "prompt_tokens_details");
    if (!details ||
        !cJSON_AddNumberToObject(details, "cached_tokens", (double)cached))
        goto out;
    text = print_json(root);
out:
    cJSON_Delete(root);
    return text;
}

static model_state *find_model(sim_server *s, const char *name)
{
    for (size_t i = 0; i < s->cfg->nmodels; i++) {
        if (!strcmp(s->models[i].cfg->name, name))
            return &s->models[i];
    }
    return NULL;
}

/* The prompt text the prefix cache compares: roles and contents in order. */
static int prompt_text(const chat_req *r, buf *out)
{
    int rc = 0;

    for (size_t i = 0; i < r->nmsg && !rc; i++) {
        rc = buf_adds(out, r->roles[i]);
        if (!rc)
            rc = buf_addc(out, '\n');
        if (!rc)
            rc = buf_add(out, r->texts[i], r->lens[i]);
        if (!rc)
            rc = buf_addc(out, '\n');
    }
    return rc;
}

/* Everything after the model is known: answer, fault, latency. */
/* What a model's config puts before every reply: with echo_authorization
 * the request's Authorization header (as a server echoing its input would
 * leak a key), then its reply_prefix. */
static int decorate_reply(struct MHD_Connection *conn, const sim_model_cfg *mc,
                          char **content)
{
    const char *auth =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                    MHD_HTTP_HEADER_AUTHORIZATION);
    buf b;
    int rc = 0;

    if (!mc->echo_authorization && !mc->reply_prefix)
        return 0;
    buf_init(&b, SIM_MAX_BODY);
    if (mc->echo_authorization)
        rc = buf_printf(&b, "Your request said \"Authorization: %s\".\n",
                        auth ? auth : "");
    if (!rc && mc->reply_prefix)
        rc = buf_adds(&b, mc->reply_prefix);
    if (!rc)
        rc = buf_adds(&b, *content);
    if (rc) {
        buf_release(&b);
        return NSED_ENOMEM;
    }
    free(*content);
    *content = buf_detach(&b, NULL);
    return *content ? 0 : NSED_ENOMEM;
}

static enum MHD_Result chat_model(sim_server *s, struct MHD_Connection *conn,
                                  model_state *m, const chat_req *r,
                                  const struct timespec *arrived)
{
    const sim_model_cfg *mc = m->cfg;
    uint8_t digest[HASH_LEN];
    sim_span *segs = NULL;
    sim_prompt *prompt = NULL;
    char *content = NULL, *body = NULL, retry[32];
    const char *finish = "stop";
    size_t nseg = 0, last_user = r->nmsg, prompt_chars = 0;
    long long tokens, ptokens, cached;
    enum MHD_Result ret = MHD_NO;
    sim_fault fault;
    sim_ask ask;
    sim_rng rng;
    buf ptext;
    int is_eval, repair = 0;

    buf_init(&ptext, 2 * SIM_MAX_BODY);
    segs = calloc(r->nmsg, sizeof *segs);
    prompt = malloc(sizeof *prompt);
    if (!segs || !prompt || request_digest(s, r, digest))
        goto out;
    /* The runner's contract: read the last user message first, then the
     * rest from the most recent backwards. */
    for (size_t i = r->nmsg; i-- > 0;) {
        prompt_chars += r->lens[i];
        if (last_user == r->nmsg && !strcmp(r->roles[i], "user"))
            last_user = i;
    }
    if (last_user < r->nmsg) {
        segs[nseg].ptr = r->texts[last_user];
        segs[nseg++].len = r->lens[last_user];
    }
    for (size_t i = r->nmsg; i-- > 0;) {
        if (i == last_user)
            continue;
        segs[nseg].ptr = r->texts[i];
        segs[nseg++].len = r->lens[i];
    }
    sim_prompt_parse(segs, nseg, prompt);
    is_eval = sim_model_is_evaluation(prompt);
    /* a repair turn: an evaluation that carries the model's earlier reply */
    for (size_t i = 0; i < r->nmsg && is_eval && !repair; i++)
        repair = !strcmp(r->roles[i], "assistant");
    if (in_outage(m))
        goto out; /* MHD_NO: a dead server's closed connection */
    fault = choose_fault(m, digest, attempt_next(s, digest), is_eval, repair);
    snprintf(retry, sizeof retry, "%ld", mc->faults.retry_after_s);
    switch (fault) {
    case SIM_FAULT_429:
        ret = respond(conn, MHD_HTTP_TOO_MANY_REQUESTS,
                      error_body("Rate limit reached for requests "
                                 "(simulated by nsed-sim)", "requests",
                                 "rate_limit_exceeded"),
                      MHD_HTTP_HEADER_RETRY_AFTER, retry);
        goto out;
    case SIM_FAULT_500:
        ret = respond(conn, MHD_HTTP_INTERNAL_SERVER_ERROR,
                      error_body("The server had an error while processing "
                                 "your request (simulated by nsed-sim)",
                                 "server_error", NULL),
                      NULL, NULL);
        goto out;
    case SIM_FAULT_503:
        ret = respond(conn, MHD_HTTP_SERVICE_UNAVAILABLE,
                      error_body("The engine is currently overloaded "
                                 "(simulated by nsed-sim)", "server_error",
                                 NULL),
                      MHD_HTTP_HEADER_RETRY_AFTER, retry);
        goto out;
    case SIM_FAULT_HANG:
        wait_ms(s, (double)mc->faults.hang_ms);
        goto out; /* MHD_NO: close without a response */
    case SIM_FAULT_DROP:
        goto out;
    case SIM_FAULT_400_REPAIR:
        ret = respond(conn, MHD_HTTP_BAD_REQUEST,
                      error_body("the request exceeds the available context "
                                 "size (simulated by nsed-sim)",
                                 "invalid_request_error",
                                 "context_length_exceeded"),
                      NULL, NULL);
        goto out;
    case SIM_FAULT_EMPTY_EVAL:
    case SIM_FAULT_NONE:
    case SIM_FAULT_MALFORMED:
    case SIM_FAULT_TRUNCATED:
    case SIM_FAULT_EMPTY_CHOICES:
    case SIM_FAULT_NONJSON_EVAL:
        break;
    }

    sim_rng_seed(&rng, digest);
    tokens = sim_model_tokens(mc, is_eval, &rng);
    ask.model = mc;
    ask.seed = s->cfg->seed;
    ask.difficulty = s->cfg->difficulty;
    ask.difficulty_ver = s->cfg->difficulty_ver;
    ask.reference = prompt->has_question
                        ? sim_qset_answer(s->qs, prompt->question)
                        : NULL;
    ask.prompt = prompt;
    ask.prompt_chars = prompt_chars;
    if (sim_model_reply(&ask, &rng, fault == SIM_FAULT_NONJSON_EVAL,
                        &content))
        goto out;
    if (fault == SIM_FAULT_EMPTY_EVAL) {
        free(content);
        content = strdup("{\"evaluations\":[]}");
        if (!content)
            goto out;
    }
    for (size_t i = 0; i < r->nstop; i++) {
        char *hit = *r->stops[i] ? strstr(content, r->stops[i]) : NULL;

        if (hit)
            *hit = '\0';
    }
    if (r->max_tokens && tokens > r->max_tokens) {
        /* Cut off where the token budget ran out: the answer is lost. */
        size_t keep = (size_t)((double)strlen(content) *
                               (double)r->max_tokens / (double)tokens);

        content[keep] = '\0';
        tokens = r->max_tokens;
        finish = "length";
    }
    if (decorate_reply(conn, mc, &content))
        goto out;
    if (prompt_text(r, &ptext))
        goto out;
    ptokens = prompt_chars / 4 ? (long long)(prompt_chars / 4) : 1;
    cached = prefix_cache(m, ptext.ptr, ptext.len, content);
    if (cached > ptokens)
        cached = ptokens;
    /* from the request's arrival: the time spent reading, parsing and
     * answering it is part of the configured latency, not added to it */
    if (wait_ms_from(s, arrived,
                     mc->ttft_ms + mc->per_token_ms * (double)tokens))
        goto out; /* shutting down */
    switch (fault) {
    case SIM_FAULT_MALFORMED:
        body = strdup("{\"choices\": [{\"message\": {\"content\": "
                      "\"unterminated");
        ret = respond(conn, MHD_HTTP_OK, body, NULL, NULL);
        goto out;
    case SIM_FAULT_EMPTY_CHOICES:
        ret = respond(conn, MHD_HTTP_OK,
                      completion_body(digest, mc->name, NULL, finish, ptokens,
                                      0, cached),
                      NULL, NULL);
        goto out;
    case SIM_FAULT_TRUNCATED:
        ret = send_truncated(conn, completion_body(digest, mc->name, content,
                                                   finish, ptokens, tokens,
                                                   cached));
        goto out;
    case SIM_FAULT_NONE:
    case SIM_FAULT_NONJSON_EVAL:
    case SIM_FAULT_EMPTY_EVAL:
    case SIM_FAULT_400_REPAIR:
    case SIM_FAULT_429:
    case SIM_FAULT_500:
    case SIM_FAULT_503:
    case SIM_FAULT_HANG:
    case SIM_FAULT_DROP:
        break;
    }
    body = completion_body(digest, mc->name, content, finish, ptokens, tokens,
                           cached);
    if (!body)
        goto out;
    pthread_mutex_lock(&m->lock);
    if (fault == SIM_FAULT_NONE)
        m->c.ok++;
    m->c.prompt_tokens += (uint64_t)ptokens;
    m->c.completion_tokens += (uint64_t)tokens;
    pthread_mutex_unlock(&m->lock);
    ret = respond(conn, MHD_HTTP_OK, body, NULL, NULL);
out:
    buf_release(&ptext);
    free(content);
    free(prompt);
    free(segs);
    return ret;
}

static enum MHD_Result chat(sim_server *s, struct MHD_Connection *conn,
                            req_ctx *ctx)
{
    char why[256], msg[SIM_NAME_MAX + 64];
    enum MHD_Result ret;
    model_state *m;
    chat_req r;
    int rc;

    rc = parse_chat(ctx->body.ptr, ctx->body.len, &r,
                    why, sizeof why);
    if (rc == 0 && s->reqlog) {
        /* the body as received, minus newlines JSON never needs */
        pthread_mutex_lock(&s->reqlog_lock);
        for (size_t i = 0; i < ctx->body.len; i++)
            if (ctx->body.ptr[i] != '\n' && ctx->body.ptr[i] != '\r')
                fputc(ctx->body.ptr[i], s->reqlog);
        fputc('\n', s->reqlog);
        fflush(s->reqlog);
        pthread_mutex_unlock(&s->reqlog_lock);
    }
    if (rc == NSED_EINVAL) {
        ret = reject(s, conn, MHD_HTTP_BAD_REQUEST, why,
                     "invalid_request_error", NULL);
        goto out;
    }
    if (rc) {
        ret = respond(conn, MHD_HTTP_INTERNAL_SERVER_ERROR,
                      error_body("out of memory", "server_error", NULL), NULL,
                      NULL);
        goto out;
    }
    m = find_model(s, r.model);
    if (!m) {
        snprintf(msg, sizeof msg, "The model `%.*s` does not exist",
                 SIM_NAME_MAX, r.model);
        ret = reject(s, conn, MHD_HTTP_NOT_FOUND, msg,
                     "invalid_request_error", "model_not_found");
        goto out;
    }
    flight_begin(s, m);
    ret = chat_model(s, conn, m, &r, &ctx->arrived);
    flight_end(s, m);
out:
    chat_req_release(&r);
    return ret;
}

static enum MHD_Result list_models(sim_server *s, struct MHD_Connection *conn)
{
    cJSON *root = cJSON_CreateObject(), *data;
    char *text = NULL;

    data = root ? cJSON_AddArrayToObject(root, "data") : NULL;
    if (!data || !cJSON_AddStringToObject(root, "object", "list"))
        goto out;
    for (size_t i = 0; i < s->cfg->nmodels; i++) {
        cJSON *e = cJSON_CreateObject();

        if (!e || !cJSON_AddItemToArray(data, e)) {
            cJSON_Delete(e);
            goto out;
        }
        if (!cJSON_AddStringToObject(e, "id", s->cfg->models[i].name) ||
            !cJSON_AddStringToObject(e, "object", "model") ||
            !cJSON_AddNumberToObject(e, "created", SIM_CREATED) ||
            !cJSON_AddStringToObject(e, "owned_by", "nsed-sim"))
            goto out;
    }
    text = print_json(root);
out:
    cJSON_Delete(root);
    return respond(conn, MHD_HTTP_OK, text, NULL, NULL);
}

/* ---- MHD callbacks ---------------------------------------------------- */

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn,
                                  const char *url, const char *method,
                                  const char *version,
                                  const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    sim_server *s = cls;
    req_ctx *ctx = *con_cls;
    int is_post = !strcmp(method, MHD_HTTP_METHOD_POST);
    int is_get = !strcmp(method, MHD_HTTP_METHOD_GET);

    (void)version;
    if (!ctx) {
        const char *cl;

        ctx = calloc(1, sizeof *ctx);
        if (!ctx)
            return MHD_NO;
        buf_init(&ctx->body, SIM_MAX_BODY);
        clock_gettime(CLOCK_MONOTONIC, &ctx->arrived);
        *con_cls = ctx;
        cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                         MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl) {
            char *end;
            unsigned long long n;

            errno = 0;
            n = strtoull(cl, &end, 10);
            /* Refuse before reading a byte; MHD then closes the link. */
            if (end != cl && !*end && (errno == ERANGE || n > SIM_MAX_BODY))
                return reject(s, conn, MHD_HTTP_CONTENT_TOO_LARGE,
                              "request body larger than 16 MiB",
                              "invalid_request_error", NULL);
        }
        return MHD_YES;
    }
    if (*upload_data_size) {
        if (!ctx->too_big &&
            buf_add(&ctx->body, upload_data, *upload_data_size)) {
            ctx->too_big = 1;
            buf_release(&ctx->body);
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (ctx->too_big)
        return reject(s, conn, MHD_HTTP_CONTENT_TOO_LARGE,
                      "request body larger than 16 MiB",
                      "invalid_request_error", NULL);
    if (!strcmp(url, "/v1/chat/completions")) {
        if (is_post)
            return chat(s, conn, ctx);
    } else if (!strcmp(url, "/v1/models")) {
        if (is_get)
            return list_models(s, conn);
    } else if (!strcmp(url, "/sim/stats")) {
        if (is_get)
            return respond(conn, MHD_HTTP_OK, sim_server_stats_json(s), NULL,
                           NULL);
    } else {
        return reject(s, conn, MHD_HTTP_NOT_FOUND, "unknown path",
                      "invalid_request_error", NULL);
    }
    return reject(s, conn, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed",
                  "invalid_request_error", NULL);
}

static void on_completed(void *cls, struct MHD_Connection *conn,
                         void **con_cls, enum MHD_RequestTerminationCode toe)
{
    req_ctx *ctx = *con_cls;

    (void)cls;
    (void)conn;
    (void)toe;
    if (ctx) {
        buf_release(&ctx->body);
        free(ctx);
        *con_cls = NULL;
    }
}

/* ---- lifecycle -------------------------------------------------------- */

int sim_server_start(const sim_config *cfg, const sim_qset *qs,
                     unsigned port, sim_server **out, nsed_err *err)
{
    sim_server *s = calloc(1, sizeof *s);
    struct sockaddr_in addr;
    const union MHD_DaemonInfo *info;
    pthread_condattr_t ca;
    int rc = 0;

    if (!s)
        return nsed_error(err, NSED_ENOMEM, "out of memory");
    s->cfg = cfg;
    s->qs = qs;
    s->models = calloc(cfg->nmodels, sizeof *s->models);
    s->attempts = calloc(ATTEMPT_SETS, sizeof *s->attempts);
    if (!s->models || !s->attempts) {
        free(s->models);
        free(s->attempts);
        free(s);
        return nsed_error(err, NSED_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < cfg->nmodels; i++) {
        s->models[i].cfg = &cfg->models[i];
        pthread_mutex_init(&s->models[i].lock, NULL);
    }
    pthread_mutex_init(&s->stats_lock, NULL);
    pthread_mutex_init(&s->attempts_lock, NULL);
    pthread_mutex_init(&s->stop_lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->stop_cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&s->reqlog_lock, NULL);
    s->locks_ready = 1;
    if (getenv("NSED_SIM_REQUEST_LOG") && *getenv("NSED_SIM_REQUEST_LOG")) {
        s->reqlog = fopen(getenv("NSED_SIM_REQUEST_LOG"), "a");
        if (!s->reqlog) {
            rc = nsed_error(err, NSED_EIO, "cannot open %s: %s",
                            getenv("NSED_SIM_REQUEST_LOG"), strerror(errno));
            goto out;
        }
    }

    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    errno = 0;
    s->daemon = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
            MHD_USE_POLL,
        0, NULL, NULL, on_request, s,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned int)CONNECTION_LIMIT,
        MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned int)1024,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
        MHD_OPTION_END);
    if (!s->daemon) {
        rc = nsed_error(err, NSED_EIO, "cannot serve on 127.0.0.1:%u: %s",
                        port, errno ? strerror(errno) : "daemon start failed");
        goto out;
    }
    info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    if (!info || !info->port) {
        rc = nsed_error(err, NSED_EIO, "cannot learn the bound port");
        goto out;
    }
    s->port = info->port;
    *out = s;
    s = NULL;
out:
    sim_server_free(s);
    return rc;
}

unsigned sim_server_port(const sim_server *s)
{
    return s->port;
}

void sim_server_stop(sim_server *s)
{
    if (!s || !s->daemon)
        return;
    pthread_mutex_lock(&s->stop_lock);
    s->stopping = 1;
    pthread_cond_broadcast(&s->stop_cond);
    pthread_mutex_unlock(&s->stop_lock);
    MHD_stop_daemon(s->daemon);
    s->daemon = NULL;
}

static int add_counters(cJSON *o, const counters *c)
{
    cJSON *f = cJSON_AddObjectToObject(o, "faults");

    if (!f)
        return 0;
    for (int k = SIM_FAULT_429; k < SIM_FAULT_COUNT; k++) {
        if (json_add_num(f, sim_fault_name((sim_fault)k),
                         (double)c->faults[k]))
            return 0;
    }
    return !json_add_num(o, "requests", (double)c->requests) &&
           !json_add_num(o, "ok", (double)c->ok) &&
           !json_add_num(o, "faults_total", (double)c->faults_total) &&
           !json_add_num(o, "in_flight", (double)c->in_flight) &&
           !json_add_num(o, "peak_in_flight", (double)c->peak_in_flight) &&
           !json_add_num(o, "prompt_tokens", (double)c->prompt_tokens) &&
           !json_add_num(o, "completion_tokens",
                         (double)c->completion_tokens);
}

char *sim_server_stats_json(sim_server *s)
{
    cJSON *root = cJSON_CreateObject(), *models, *totals;
    counters t;
    uint64_t rejected;
    char *text = NULL;

    memset(&t, 0, sizeof t);
    models = root ? cJSON_AddObjectToObject(root, "models") : NULL;
    if (!models)
        goto out;
    for (size_t i = 0; i < s->cfg->nmodels; i++) {
        model_state *m = &s->models[i];
        cJSON *o = cJSON_AddObjectToObject(models, m->cfg->name);
        counters c;

        uint64_t down;

        pthread_mutex_lock(&m->lock);
        c = m->c;
        down = m->down;
        pthread_mutex_unlock(&m->lock);
        if (!o || !add_counters(o, &c) || json_add_num(o, "down", (double)down))
            goto out;
        t.requests += c.requests;
        t.ok += c.ok;
        for (int k = 0; k < SIM_FAULT_COUNT; k++)
            t.faults[k] += c.faults[k];
        t.faults_total += c.faults_total;
        t.prompt_tokens += c.prompt_tokens;
        t.completion_tokens += c.completion_tokens;
    }
    pthread_mutex_lock(&s->stats_lock);
    t.in_flight = s->in_flight;
    t.peak_in_flight = s->peak_in_flight;
    rejected = s->rejected;
    pthread_mutex_unlock(&s->stats_lock);
    totals = cJSON_AddObjectToObject(root, "totals");
    if (!totals || !add_counters(totals, &t) ||
        !cJSON_AddNumberToObject(root, "rejected", (double)rejected))
        goto out;
    text = print_json(root);
out:
    cJSON_Delete(root);
    return text;
}

void sim_server_free(sim_server *s)
{
    if (!s)
        return;
    sim_server_stop(s);
    if (s->locks_ready) {
        for (size_t i = 0; i < s->cfg->nmodels; i++) {
            pthread_mutex_destroy(&s->models[i].lock);
            for (size_t e = 0; e < SIM_PREFIX_RECENT; e++)
                free(s->models[i].recent[e]);
        }
        pthread_mutex_destroy(&s->stats_lock);
        pthread_mutex_destroy(&s->attempts_lock);
        pthread_mutex_destroy(&s->stop_lock);
        pthread_cond_destroy(&s->stop_cond);
        pthread_mutex_destroy(&s->reqlog_lock);
    }
    if (s->reqlog)
        fclose(s->reqlog);
    free(s->models);
    free(s->attempts);
    free(s);
}
