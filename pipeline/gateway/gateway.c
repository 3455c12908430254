/* gateway.c -- the LLM gateway's event loop: queues, libcurl multi
 * transfers, retries, circuit breakers, accounting and ledger commits.
 *
 * Life of a request (struct gw_req): gateway_submit checks and copies it
 * into a JSON body and looks its ledger key up. A hit (or a dry run) goes
 * straight to the done list. Otherwise it joins its model's ready queue;
 * start_ready moves it onto an easy handle when the model has a free slot
 * and its breaker allows; on_transfer_done classifies the outcome and
 * either finishes it (done list; successful ones also to the ledger
 * buffer) or parks it on the model's waiting list until its backoff
 * delay is over, when tick puts it at the head of the ready queue again.
 * gateway_poll commits the ledger buffer, then runs the callbacks of the
 * done list. */
#include "pipeline/gateway/gateway_int.h"

#include <curl/curl.h>

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

_Static_assert(GATEWAY_ERR_INTERNAL + 1 == GATEWAY_ERR_KIND_COUNT,
               "GATEWAY_ERR_KIND_COUNT must follow the last kind");

#define ATTEMPT_MSG_MAX 512
#define RESULT_MSG_MAX 1024
/* Stalled attempts: the replies whose latencies make a model's limit, how
 * many it needs first, and how often the limit is made again. */
#define GW_STALL_WINDOW 256
#define GW_STALL_MIN_SAMPLES 32
#define GW_STALL_REFIT 32

enum gw_breaker {
    GW_BREAKER_CLOSED,    /* requests flow */
    GW_BREAKER_OPEN,      /* paused until reopen_at */
    GW_BREAKER_HALF_OPEN, /* one probe may go */
};

typedef struct gw_req gw_req;

struct gw_req {
    gw_req *next;      /* in exactly one of: ready, waiting, done */
    gw_req *rprev;     /* running list (transfer in flight) */
    gw_req *rnext;
    size_t model;
    enum gateway_call_kind call_kind;
    char *body;
    size_t body_len;
    uint8_t key[HASH_LEN];
    uint8_t legacy_key[HASH_LEN]; /* form 1, for stores written before */
    gateway_done_fn fn;
    void *user;

    int attempts;
    int unspent;           /* attempts not spent from retry_max_attempts:
                              failed probes (they test the endpoint for
                              every request) and libcurl's resends */
    bool failed;           /* an attempt of it failed: never the probe
                              while a request that has not may be */
    bool counted;          /* its failure was weighed by the breaker */
    double t_attempt;      /* when the attempt in flight started */
    bool clock_started;    /* the retry budget is running */
    double t_clock;        /* when it started */
    bool attempted;
    double t_first_attempt;
    double t_due;          /* waiting: earliest restart */
    bool is_probe;
    bool stalled;   /* the attempt in flight was abandoned */
    bool is_health; /* a health check (stall_check), no caller */

    /* The attempt in flight. */
    CURL *easy;
    buf resp;
    bool too_big;
    int sends;             /* requests libcurl wrote for this attempt: one,
                              or more when it silently resent it on a new
                              connection after a reused one closed */
    double retry_after_s;  /* < 0: no Retry-After header */
    char curl_err[CURL_ERROR_SIZE];

    /* The outcome. */
    int code;
    enum gateway_error_kind kind;
    long http_status;
    bool permanent; /* the failure would repeat (gateway_result) */
    char *content;
    char *finish_reason;
    gateway_usage usage;
    double cost_usd;
    double latency_s;
    bool from_ledger;
    bool from_cache;       /* the ledger answer came from the call cache */
    int recorded_attempts; /* ledger hit: attempts it took then */
    char attempt_msg[ATTEMPT_MSG_MAX]; /* why the last attempt failed */
    char error[RESULT_MSG_MAX];
};

typedef struct gw_model {
    const workflow_model *m;
    char *url;                   /* endpoint + "/chat/completions" */
    struct curl_slist *headers;  /* the only place the key is sent from */
    char *key;                   /* kept to redact it; NULL when none */
    gw_req *ready_head, *ready_tail;
    gw_req *waiting;
    size_t nready, nwaiting;
    int in_flight;
    /* answered and recorded, not yet durable: each holds its slot */
    int uncommitted;
    enum gw_breaker breaker;
    int consecutive_failures;
    double reopen_at;
    bool probe_in_flight;
    bool answered;                    /* a reply has ever come back ... */
    double t_last_answer;             /* ... last at this time */
    char down_error[ATTEMPT_MSG_MAX]; /* the error that paused it */
    /* Attempt latencies of the last GW_STALL_WINDOW replies (a ring), and
     * the stall limit made from them: 0 until GW_STALL_MIN_SAMPLES. */
    double lat_ring[GW_STALL_WINDOW];
    size_t lat_n, lat_next, lat_fresh;
    double lat_p99, stall_s;
    bool health_in_flight;
    double health_next; /* no health check before this time */
    bool health_failed; /* the last one failed (logged once a run) */
    bool health_logged;
    gateway_stats stats;
} gw_model;

typedef struct gw_pending_record {
    uint8_t key[HASH_LEN];
    ledger_record rec;
    bool to_cache; /* a network reply: also goes to the call cache */
} gw_pending_record;

struct gateway {
    const workflow *wf;
    store *st;
    gateway_opts opts;
    CURLM *multi;
    gw_model *models;
    size_t nmodels;
    CURL **idle;          /* easy handles kept for reuse */
    size_t nidle, idle_cap;
    gw_req *running;      /* transfers in flight */
    size_t in_flight;
    gw_req *done_head, *done_tail;
    size_t ndone;
    gw_pending_record *records; /* successful calls not yet committed */
    size_t nrecords, records_cap;
    /* libcurl's sockets and timer, driven with curl_multi_socket_action:
     * only a socket that is ready is looked at (curl_multi_perform
     * polls every transfer's socket, one system call each, on every
     * call) */
    int epfd;
    double curl_due; /* monotonic seconds; INFINITY when no timer */
    /* No attempt in flight can stall before this (stall_check): at most
     * the earliest t_attempt + stall_s of them, lowered as attempts
     * start, made exact by each scan, -INFINITY when a stall limit
     * changed. Until it, stall_check need not walk the transfers. */
    double stall_due;
    uint64_t rng;
    bool cache_failed; /* a cache read or write failed (logged once) */
};

/* ---- small helpers ------------------------------------------------------ */

static double default_clock(void *user)
{
    struct timespec ts;

    (void)user;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double now_s(const gateway *gw)
{
    return gw->opts.clock(gw->opts.clock_user);
}

/* ---- libcurl's sockets and timer ---------------------------------------- */

/* CURLMOPT_SOCKETFUNCTION: watch what libcurl waits for on socket fd. A
 * socket it has not seen carries no socketp yet. */
static int on_socket(CURL *e, curl_socket_t fd, int what, void *user,
                     void *socketp)
{
    gateway *gw = user;
    struct epoll_event ev = {0};

    (void)e;
    if (what == CURL_POLL_REMOVE) {
        epoll_ctl(gw->epfd, EPOLL_CTL_DEL, fd, NULL);
        return 0;
    }
    ev.events = ((what & CURL_POLL_IN) ? EPOLLIN : 0u) |
                ((what & CURL_POLL_OUT) ? EPOLLOUT : 0u);
    ev.data.fd = fd;
    if (!socketp || epoll_ctl(gw->epfd, EPOLL_CTL_MOD, fd, &ev) != 0) {
        /* a new socket, or one closed and reopened under the same number
         * without a REMOVE in between */
        if (epoll_ctl(gw->epfd, EPOLL_CTL_ADD, fd, &ev) != 0 &&
            errno == EEXIST)
            epoll_ctl(gw->epfd, EPOLL_CTL_MOD, fd, &ev);
        curl_multi_assign(gw->multi, fd, gw);
    }
    return 0;
}

/* CURLMOPT_TIMERFUNCTION: when libcurl wants to be called with
 * CURL_SOCKET_TIMEOUT (real time, whatever clock the gateway runs on). */
static int on_timer(CURLM *multi, long timeout_ms, void *user)
{
    gateway *gw = user;

    (void)multi;
    gw->curl_due = timeout_ms < 0 ? INFINITY
                                  : default_clock(NULL) + timeout_ms / 1000.0;
    return 0;
}

/* The timer as libcurl has it now. Its timer callback is called only
 * when the earliest expiry changes, so a timer fired a little early (its
 * milliseconds are rounded) stays set in libcurl without a new call, and
 * a copy reset on firing would be lost: after acting, ask. */
static void due_from_curl(gateway *gw)
{
    long ms = -1;

    if (curl_multi_timeout(gw->multi, &ms) != CURLM_OK)
        ms = 0;
    gw->curl_due = ms < 0 ? INFINITY : default_clock(NULL) + ms / 1000.0;
}

/* Wait up to wait_ms (less when libcurl's timer is due sooner) for
 * sockets, then let libcurl act on each one ready and on its timer. */
static void drive(gateway *gw, int wait_ms)
{
    struct epoll_event ev[64];
    int running, n;
    double due = gw->curl_due - default_clock(NULL);

    if (due < INFINITY && wait_ms > 0) {
        double ms = ceil(due * 1000);

        if (ms < wait_ms)
            wait_ms = ms > 0 ? (int)ms : 0;
    }
    do {
        n = epoll_wait(gw->epfd, ev, (int)(sizeof ev / sizeof ev[0]),
                       wait_ms);
        wait_ms = 0;
        for (int i = 0; i < n; i++) {
            int mask = ((ev[i].events & EPOLLIN) ? CURL_CSELECT_IN : 0) |
                       ((ev[i].events & EPOLLOUT) ? CURL_CSELECT_OUT : 0) |
                       ((ev[i].events & (EPOLLERR | EPOLLHUP))
                            ? CURL_CSELECT_ERR
                            : 0);

            curl_multi_socket_action(gw->multi, ev[i].data.fd, mask,
                                     &running);
        }
    } while (n == (int)(sizeof ev / sizeof ev[0]));
    due_from_curl(gw);
    /* A transfer just added asks for "now", and acting on it can ask for
     * "now" again (connect, then send): until libcurl waits for a socket
     * or a later time, so that a request leaves in this call. */
    for (int i = 0; i < 16 && default_clock(NULL) >= gw->curl_due; i++) {
        curl_multi_socket_action(gw->multi, CURL_SOCKET_TIMEOUT, 0, &running);
        due_from_curl(gw);
    }
}

/* splitmix64: tiny, good enough for jitter, and its state lives in the
 * gateway (no global). */
static uint64_t rng_next(gateway *gw)
{
    uint64_t z = (gw->rng += 0x9E3779B97F4A7C15ull);

    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double rng_unit(gateway *gw)
{
    return (double)(rng_next(gw) >> 11) * 0x1.0p-53;
}

static void logf_gw(gateway *gw, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void logf_gw(gateway *gw, const char *fmt, ...)
{
    char line[1024];
    va_list ap;

    if (!gw->opts.log)
        return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    gw->opts.log(line, gw->opts.log_user);
}

const char *gateway_error_kind_name(enum gateway_error_kind k)
{
    switch (k) {
    case GATEWAY_ERR_NONE:
        return "none";
    case GATEWAY_ERR_CONNECT:
        return "connect";
    case GATEWAY_ERR_TRANSPORT:
        return "transport";
    case GATEWAY_ERR_TIMEOUT:
        return "timeout";
    case GATEWAY_ERR_RATE_LIMIT:
        return "rate_limit";
    case GATEWAY_ERR_SERVER:
        return "server";
    case GATEWAY_ERR_HTTP:
        return "http";
    case GATEWAY_ERR_MALFORMED:
        return "malformed";
    case GATEWAY_ERR_TOO_BIG:
        return "too_big";
    case GATEWAY_ERR_PAUSED:
        return "paused";
    case GATEWAY_ERR_INTERNAL:
        return "internal";
    }
    return "unknown";
}

static bool kind_retryable(enum gateway_error_kind k)
{
    switch (k) {
    case GATEWAY_ERR_CONNECT:
    case GATEWAY_ERR_TRANSPORT:
    case GATEWAY_ERR_TIMEOUT:
    case GATEWAY_ERR_RATE_LIMIT:
    case GATEWAY_ERR_SERVER:
    case GATEWAY_ERR_MALFORMED:
        return true;
    case GATEWAY_ERR_NONE:
    case GATEWAY_ERR_HTTP:
    case GATEWAY_ERR_TOO_BIG:
    case GATEWAY_ERR_PAUSED:
    case GATEWAY_ERR_INTERNAL:
        return false;
    }
    return false;
}

static void req_free(gw_req *r)
{
    if (!r)
        return;
    free(r->body);
    buf_release(&r->resp);
    free(r->content);
    free(r->finish_reason);
    free(r);
}

static void free_list(gw_req *r)
{
    while (r) {
        gw_req *next = r->next;

        req_free(r);
        r = next;
    }
}

static void done_push(gateway *gw, gw_req *r)
{
    r->next = NULL;
    if (gw->done_tail)
        gw->done_tail->next = r;
    else
        gw->done_head = r;
    gw->done_tail = r;
    gw->ndone++;
}

static void ready_push_tail(gw_model *mm, gw_req *r)
{
    r->next = NULL;
    if (mm->ready_tail)
        mm->ready_tail->next = r;
    else
        mm->ready_head = r;
    mm->ready_tail = r;
    mm->nready++;
}

static void ready_push_head(gw_model *mm, gw_req *r)
{
    r->next = mm->ready_head;
    mm->ready_head = r;
    if (!mm->ready_tail)
        mm->ready_tail = r;
    mm->nready++;
}

static gw_req *ready_pop(gw_model *mm)
{
    gw_req *r = mm->ready_head;

    if (!r)
        return NULL;
    mm->ready_head = r->next;
    if (!mm->ready_head)
        mm->ready_tail = NULL;
    mm->nready--;
    r->next = NULL;
    return r;
}

static void start_clock(gw_req *r, double now)
{
    if (!r->clock_started) {
        r->clock_started = true;
        r->t_clock = now;
    }
}

static double deadline(const gateway *gw, const gw_req *r)
{
    return r->t_clock + gw->wf->gateway.retry_max_total_s;
}

/* ---- creation ------------------------------------------------------------ */

/* Build the model's header list; the Authorization line is assembled in a
 * buffer that is wiped before it is freed, so the only copy of the key
 * outside mm->key is the one libcurl's list holds. */
/* The API key of m from its api_key_env variable into *key (NULL when the
 * model names none): an unset or empty variable, or a key holding control
 * characters, is NSED_EINVAL. gateway_check_keys and model_headers share
 * this one rule. */
static int model_key(const workflow_model *m, const char **key, nsed_err *err)
{
    const char *k;

    *key = NULL;
    if (!m->api_key_env)
        return 0;
    k = getenv(m->api_key_env);
    if (!k || !k[0])
        return nsed_error(err, NSED_EINVAL,
                          "model %s: environment variable %s (its "
                          "api_key_env) is %s",
                          m->id, m->api_key_env, k ? "empty" : "not set");
    for (const char *p = k; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            return nsed_error(err, NSED_EINVAL,
                              "model %s: the API key in %s holds a "
                              "control character",
                              m->id, m->api_key_env);
    *key = k;
    return 0;
}

int gateway_check_keys(const workflow *wf, nsed_err *err)
{
    const char *key;

    for (size_t i = 0; i < wf->nmodels; i++) {
        int rc = model_key(&wf->models[i], &key, err);

        if (rc)
            return rc;
    }
    return 0;
}

static int model_headers(gw_model *mm, bool with_key, nsed_err *err)
{
    struct curl_slist *h = NULL, *t;
    const char *key = NULL;

    if (with_key) {
        int rc = model_key(mm->m, &key, err);

        if (rc)
            return rc;
    }
    t = curl_slist_append(h, "Content-Type: application/json");
    if (!t)
        goto nomem;
    h = t;
    /* libcurl would otherwise send "Expect: 100-continue" for large bodies
     * and wait for the server's go-ahead. */
    t = curl_slist_append(h, "Expect:");
    if (!t)
        goto nomem;
    h = t;
    if (key) {
        buf line;

        buf_init(&line, strlen(key) + 64);
        if (buf_printf(&line, "Authorization: Bearer %s", key)) {
            buf_release(&line);
            goto nomem;
        }
        t = curl_slist_append(h, line.ptr);
        explicit_bzero(line.ptr, line.len);
        buf_release(&line);
        if (!t)
            goto nomem;
        h = t;
        mm->key = strdup(key);
        if (!mm->key)
            goto nomem;
    }
    mm->headers = h;
    return 0;
nomem:
    for (t = h; t; t = t->next)
        explicit_bzero(t->data, strlen(t->data));
    curl_slist_free_all(h);
    return nsed_error(err, NSED_ENOMEM, "gateway: out of memory");
}

int gateway_new(const workflow *wf, store *st, const gateway_opts *opts,
                gateway **out, nsed_err *err)
{
    gateway *gw = calloc(1, sizeof *gw);
    int rc = NSED_ENOMEM;

    if (!gw)
        return nsed_error(err, rc, "gateway: out of memory");
    gw->epfd = -1;
    gw->wf = wf;
    gw->st = st;
    if (opts)
        gw->opts = *opts;
    if (!gw->opts.clock)
        gw->opts.clock = default_clock;
    gw->rng = gw->opts.jitter_seed ^ 0x6E7365642D677721ull;
    gw->models = calloc(wf->nmodels, sizeof *gw->models);
    if (!gw->models) {
        nsed_error(err, rc, "gateway: out of memory");
        goto fail;
    }
    gw->nmodels = wf->nmodels;
    for (size_t i = 0; i < wf->nmodels; i++) {
        gw_model *mm = &gw->models[i];
        buf url;

        mm->m = &wf->models[i];
        buf_init(&url, strlen(mm->m->endpoint) + 32);
        if (buf_printf(&url, "%s/chat/completions", mm->m->endpoint)) {
            buf_release(&url);
            nsed_error(err, rc, "gateway: out of memory");
            goto fail;
        }
        mm->url = buf_detach(&url, NULL);
        if (!mm->url) {
            nsed_error(err, rc, "gateway: out of memory");
            goto fail;
        }
        rc = model_headers(mm, gw->opts.dry_run == NULL, err);
        if (rc)
            goto fail;
        rc = NSED_ENOMEM;
    }
    gw->multi = curl_multi_init();
    if (!gw->multi) {
        rc = nsed_error(err, NSED_ENET, "gateway: cannot create a libcurl "
                                        "multi handle");
        goto fail;
    }
    /* HTTP/2 multiplexing: many requests of one model share a connection
     * when the server speaks HTTP/2 (https only; plain http stays 1.1). */
    curl_multi_setopt(gw->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
    gw->curl_due = INFINITY;
    gw->stall_due = -INFINITY;
    gw->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (gw->epfd < 0) {
        rc = nsed_error(err, NSED_ENET, "gateway: epoll_create1: %s",
                        strerror(errno));
        goto fail;
    }
    curl_multi_setopt(gw->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(gw->multi, CURLMOPT_SOCKETDATA, gw);
    curl_multi_setopt(gw->multi, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(gw->multi, CURLMOPT_TIMERDATA, gw);
    *out = gw;
    return 0;
fail:
    gateway_free(gw);
    return rc;
}

/* ---- freeing ------------------------------------------------------------- */

static int flush_fn(store_txn *txn, void *arg, nsed_err *err)
{
    gateway *gw = arg;

    /* Replayable: reads only gw->records, writes only through txn. */
    for (size_t i = 0; i < gw->nrecords; i++) {
        int rc = ledger_put(txn, gw->records[i].key, &gw->records[i].rec, err);

        if (rc)
            return rc;
    }
    return 0;
}

size_t gateway_records_pending(const gateway *gw)
{
    return gw->nrecords;
}

bool gateway_records_block(const gateway *gw)
{
    for (size_t i = 0; i < gw->nmodels; i++) {
        const gw_model *mm = &gw->models[i];

        if (mm->uncommitted > 0 && mm->nready > 0 &&
            mm->breaker != GW_BREAKER_OPEN)
            return true;
    }
    return false;
}

int gateway_put_records(gateway *gw, store_txn *txn, nsed_err *err)
{
    return flush_fn(txn, gw, err);
}

/* The network replies of the records just committed to the store go to
 * the call cache too, in one transaction. The cache only saves money: a
 * failure is logged once and the run goes on. */
static void cache_records(gateway *gw)
{
    cache_entry *e;
    size_t n = 0;
    nsed_err cerr = {0};
    int rc;

    if (!gw->opts.cache || !gw->st)
        return;
    for (size_t i = 0; i < gw->nrecords; i++)
        n += gw->records[i].to_cache;
    if (n == 0)
        return;
    e = calloc(n, sizeof *e);
    if (!e) {
        rc = nsed_error(&cerr, NSED_ENOMEM, "out of memory");
    } else {
        n = 0;
        for (size_t i = 0; i < gw->nrecords; i++) {
            if (!gw->records[i].to_cache)
                continue;
            e[n].key = gw->records[i].key;
            e[n].rec = &gw->records[i].rec;
            n++;
        }
        rc = cache_put(gw->opts.cache, e, n, &cerr);
        free(e);
    }
    if (rc && !gw->cache_failed) {
        gw->cache_failed = true;
        logf_gw(gw,
                "call cache %s: cannot record calls (%s); the run goes "
                "on, and its calls stay in its own store's ledger",
                cache_dir(gw->opts.cache), cerr.msg);
    }
}

void gateway_records_committed(gateway *gw)
{
    cache_records(gw);
    for (size_t i = 0; i < gw->nrecords; i++)
        ledger_record_release(&gw->records[i].rec);
    gw->nrecords = 0;
    /* durable now: the slots they held are free */
    for (size_t i = 0; i < gw->nmodels; i++)
        gw->models[i].uncommitted = 0;
}

int gateway_flush(gateway *gw, nsed_err *err)
{
    int rc;

    if (!gw->st || gw->nrecords == 0)
        return 0;
    rc = store_write(gw->st, flush_fn, gw, err);
    if (rc)
        return rc;
    gateway_records_committed(gw);
    return 0;
}

void gateway_free(gateway *gw)
{
    if (!gw)
        return;
    if (gw->st && gateway_flush(gw, NULL) != 0) {
        /* lost, as gateway.h says: a caller that must know calls
         * gateway_flush before gateway_free */
    }
    for (gw_req *r = gw->running; r;) {
        gw_req *next = r->rnext;

        curl_multi_remove_handle(gw->multi, r->easy);
        curl_easy_cleanup(r->easy);
        req_free(r);
        r = next;
    }
    for (size_t i = 0; i < gw->nidle; i++)
        curl_easy_cleanup(gw->idle[i]);
    free(gw->idle);
    if (gw->multi)
        curl_multi_cleanup(gw->multi);
    if (gw->epfd >= 0)
        close(gw->epfd);
    for (size_t i = 0; gw->models && i < gw->nmodels; i++) {
        gw_model *mm = &gw->models[i];

        free_list(mm->ready_head);
        free_list(mm->waiting);
        for (struct curl_slist *t = mm->headers; t; t = t->next)
            explicit_bzero(t->data, strlen(t->data));
        curl_slist_free_all(mm->headers);
        if (mm->key) {
            explicit_bzero(mm->key, strlen(mm->key));
            free(mm->key);
        }
        free(mm->url);
    }
    free(gw->models);
    free_list(gw->done_head);
    for (size_t i = 0; i < gw->nrecords; i++)
        ledger_record_release(&gw->records[i].rec);
    free(gw->records);
    free(gw);
}

/* ---- accounting ------------------------------------------------------------ */

static size_t latency_bucket(double s)
{
    double x;
    size_t b;

    if (!(s > GATEWAY_LATENCY_BASE_S))
        return 0;
    x = ceil(4.0 * log2(s / GATEWAY_LATENCY_BASE_S));
    if (!(x < (double)GATEWAY_LATENCY_BUCKETS - 1))
        return GATEWAY_LATENCY_BUCKETS - 1;
    b = (size_t)x;
    return b;
}

static double bucket_upper(size_t i)
{
    return GATEWAY_LATENCY_BASE_S * exp2((double)i / 4.0);
}

static double cost_of(const workflow_model *m, const gateway_usage *u)
{
    return ((double)u->prompt_tokens * m->price_input_per_mtok +
            (double)u->completion_tokens * m->price_output_per_mtok) /
           1e6;
}

int gateway_stats_get(const gateway *gw, size_t model, gateway_stats *out)
{
    if (model == GATEWAY_ALL_MODELS) {
        gateway_stats_total(gw, out);
        return 0;
    }
    if (model >= gw->nmodels)
        return NSED_EINVAL;
    *out = gw->models[model].stats;
    return 0;
}

void gateway_stats_add(gateway_stats *t, const gateway_stats *s)
{
    t->calls += s->calls;
    t->ok += s->ok;
    t->failed += s->failed;
    t->attempts += s->attempts;
    t->retries += s->retries;
    for (size_t k = 0; k < GATEWAY_ERR_KIND_COUNT; k++)
        t->attempt_errors[k] += s->attempt_errors[k];
    t->ledger_hits += s->ledger_hits;
    t->cache_hits += s->cache_hits;
    t->dry_run += s->dry_run;
    t->breaker_opens += s->breaker_opens;
    t->stalls += s->stalls;
    t->health_checks += s->health_checks;
    t->prompt_tokens += s->prompt_tokens;
    t->completion_tokens += s->completion_tokens;
    t->cached_tokens += s->cached_tokens;
    for (size_t k = 0; k < GATEWAY_CALL_KIND_COUNT; k++) {
        t->kind_calls[k] += s->kind_calls[k];
        t->kind_prompt_tokens[k] += s->kind_prompt_tokens[k];
        t->kind_cached_tokens[k] += s->kind_cached_tokens[k];
    }
    t->cost_usd += s->cost_usd;
    t->latency_sum_s += s->latency_sum_s;
    if (s->latency_max_s > t->latency_max_s)
        t->latency_max_s = s->latency_max_s;
    for (size_t b = 0; b < GATEWAY_LATENCY_BUCKETS; b++)
        t->latency_hist[b] += s->latency_hist[b];
}

void gateway_stats_total(const gateway *gw, gateway_stats *out)
{
    gateway_stats t;

    memset(&t, 0, sizeof t);
    for (size_t i = 0; i < gw->nmodels; i++)
        gateway_stats_add(&t, &gw->models[i].stats);
    *out = t;
}

/* The bucket holding quantile q of s's histogram, or -1 when it is
 * empty. */
static long quantile_bucket(const gateway_stats *s, double q)
{
    uint64_t n = 0, want, seen = 0;

    for (size_t b = 0; b < GATEWAY_LATENCY_BUCKETS; b++)
        n += s->latency_hist[b];
    if (n == 0)
        return -1;
    if (!(q > 0))
        q = 0;
    if (q > 1)
        q = 1;
    want = (uint64_t)ceil(q * (double)n);
    if (want < 1)
        want = 1;
    for (size_t b = 0; b < GATEWAY_LATENCY_BUCKETS; b++) {
        seen += s->latency_hist[b];
        if (seen >= want)
            return (long)b;
    }
    return GATEWAY_LATENCY_BUCKETS - 1;
}

double gateway_stats_latency_quantile(const gateway_stats *s, double q)
{
    double lo, hi;

    gateway_stats_latency_range(s, q, &lo, &hi);
    return hi;
}

void gateway_stats_latency_range(const gateway_stats *s, double q, double *lo,
                                 double *hi)
{
    long b = quantile_bucket(s, q);
    double up, down;

    *lo = *hi = 0;
    if (b < 0)
        return;
    up = bucket_upper((size_t)b);
    down = b > 0 ? bucket_upper((size_t)b - 1) : 0;
    /* no latency in the bucket is above the largest one seen */
    if (up > s->latency_max_s)
        up = s->latency_max_s;
    *hi = up;
    *lo = down < up ? down : up;
}

/* ---- finishing requests ------------------------------------------------- */

static double latency_of(const gw_req *r, double now)
{
    if (r->attempted)
        return now - r->t_first_attempt;
    if (r->clock_started)
        return now - r->t_clock;
    return 0;
}

/* Fail r with code and the final message "model ID: what (why)". */
static void finish_failed(gateway *gw, gw_req *r, int code,
                          enum gateway_error_kind kind, double now,
                          const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

static void finish_failed(gateway *gw, gw_req *r, int code,
                          enum gateway_error_kind kind, double now,
                          const char *fmt, ...)
{
    gw_model *mm = &gw->models[r->model];
    char why[256];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    r->code = code;
    r->kind = kind;
    r->latency_s = latency_of(r, now);
    if (r->attempt_msg[0])
        snprintf(r->error, sizeof r->error, "model %s: %s (%s)", mm->m->id,
                 r->attempt_msg, why);
    else
        snprintf(r->error, sizeof r->error, "model %s: not attempted, the "
                 "model is down: %s (%s)", mm->m->id, mm->down_error, why);
    gw_redact(r->error, sizeof r->error, mm->key);
    mm->stats.calls++;
    mm->stats.failed++;
    done_push(gw, r);
}

/* Make room for one more buffered record; NSED_ENOMEM when there is
 * none. */
static int records_reserve(gateway *gw)
{
    size_t ncap;
    gw_pending_record *np;

    if (gw->nrecords < gw->records_cap)
        return 0;
    ncap = gw->records_cap ? gw->records_cap * 2 : 16;
    np = realloc(gw->records, ncap * sizeof *np);
    if (!np)
        return NSED_ENOMEM;
    gw->records = np;
    gw->records_cap = ncap;
    return 0;
}

static int buffer_record(gateway *gw, const gw_req *r)
{
    gw_pending_record *p;
    ledger_record *rec;

    if (records_reserve(gw))
        return NSED_ENOMEM;
    p = &gw->records[gw->nrecords];
    memset(p, 0, sizeof *p);
    memcpy(p->key, r->key, HASH_LEN);
    rec = &p->rec;
    rec->content = strdup(r->content);
    rec->finish_reason = r->finish_reason ? strdup(r->finish_reason) : NULL;
    rec->model = strdup(gw->models[r->model].m->model);
    if (!rec->content || !rec->model ||
        (r->finish_reason && !rec->finish_reason)) {
        ledger_record_release(rec);
        return NSED_ENOMEM;
    }
    rec->prompt_tokens = r->usage.prompt_tokens;
    rec->completion_tokens = r->usage.completion_tokens;
    rec->cached_tokens = r->usage.cached_tokens;
    rec->cost_usd = r->cost_usd;
    rec->latency_s = r->latency_s;
    rec->attempts = r->attempts;
    rec->http_status = r->http_status;
    rec->time = (int64_t)time(NULL);
    p->to_cache = gw->opts.cache != NULL;
    gw->nrecords++;
    gw->models[r->model].uncommitted++;
    return 0;
}

/* Buffer a copy of rec, answered from the call cache under key, for the
 * store's ledger, marked from_cache. It holds no slot: a copy lost to a
 * kill is answered by the cache again. */
static int buffer_cache_copy(gateway *gw, const uint8_t key[HASH_LEN],
                             const ledger_record *rec)
{
    gw_pending_record *p;

    if (records_reserve(gw))
        return NSED_ENOMEM;
    p = &gw->records[gw->nrecords];
    memset(p, 0, sizeof *p);
    memcpy(p->key, key, HASH_LEN);
    p->rec = *rec;
    p->rec.content = strdup(rec->content);
    p->rec.finish_reason = rec->finish_reason ? strdup(rec->finish_reason)
                                              : NULL;
    p->rec.model = rec->model ? strdup(rec->model) : NULL;
    if (!p->rec.content || (rec->finish_reason && !p->rec.finish_reason) ||
        (rec->model && !p->rec.model)) {
        ledger_record_release(&p->rec);
        return NSED_ENOMEM;
    }
    p->rec.from_cache = true;
    gw->nrecords++;
    return 0;
}

/* Replace every configured API key (of any model: a server may echo what
 * it was sent, and a reply is never stored with a key in it) in a reply's
 * content and finish reason with "[REDACTED]", the longest keys first, so
 * that a key which contains a shorter one leaves no part of it behind.
 * Returns 0 or NSED_ENOMEM (nothing of the reply may then be used). */
static int redact_keys(const gateway *gw, char **content, char **finish)
{
    size_t above = SIZE_MAX;
    int rc = 0;

    while (!rc) {
        size_t len = 0;

        /* the longest key length still to do */
        for (size_t i = 0; i < gw->wf->nmodels; i++) {
            const char *k = gw->models[i].key;
            size_t n = k ? strlen(k) : 0;

            if (n < above && n > len)
                len = n;
        }
        if (!len)
            break;
        for (size_t i = 0; i < gw->wf->nmodels && !rc; i++) {
            const char *k = gw->models[i].key;

            if (!k || strlen(k) != len)
                continue;
            rc = gw_redact_text(content, k);
            if (!rc && *finish)
                rc = gw_redact_text(finish, k);
        }
        above = len;
    }
    return rc;
}

static void finish_ok(gateway *gw, gw_req *r, gw_reply *reply, double now)
{
    gw_model *mm = &gw->models[r->model];
    gateway_stats *s = &mm->stats;

    r->code = 0;
    r->kind = GATEWAY_ERR_NONE;
    r->content = reply->content;
    r->finish_reason = reply->finish_reason;
    reply->content = NULL;
    reply->finish_reason = NULL;
    r->usage = reply->usage;
    r->cost_usd = cost_of(mm->m, &r->usage);
    r->latency_s = latency_of(r, now);
    r->error[0] = '\0';
    s->calls++;
    s->ok++;
    s->prompt_tokens += r->usage.prompt_tokens;
    s->completion_tokens += r->usage.completion_tokens;
    s->cached_tokens += r->usage.cached_tokens;
    s->kind_calls[r->call_kind]++;
    s->kind_prompt_tokens[r->call_kind] += r->usage.prompt_tokens;
    s->kind_cached_tokens[r->call_kind] += r->usage.cached_tokens;
    s->cost_usd += r->cost_usd;
    s->latency_sum_s += r->latency_s;
    if (r->latency_s > s->latency_max_s)
        s->latency_max_s = r->latency_s;
    s->latency_hist[latency_bucket(r->latency_s)]++;
    /* A call that cannot be buffered for the ledger still answers its
     * caller; it is only paid for again on a rerun. */
    if (gw->st && buffer_record(gw, r))
        logf_gw(gw, "model %s: out of memory recording a call in the "
                    "ledger", mm->m->id);
    done_push(gw, r);
}

/* ---- circuit breaker ------------------------------------------------------ */

bool gateway_model_paused(const gateway *gw, size_t model)
{
    assert(model < gw->nmodels);
    return gw->models[model].breaker != GW_BREAKER_CLOSED;
}

/* Only a probe's outcome decides whether a paused model is back: a
 * request sent before the pause that answers late says nothing about the
 * endpoint now, and letting it close the breaker made it flap. */
static void breaker_success(gateway *gw, gw_model *mm, bool was_probe)
{
    switch (mm->breaker) {
    case GW_BREAKER_CLOSED:
        mm->consecutive_failures = 0;
        break;
    case GW_BREAKER_HALF_OPEN:
    case GW_BREAKER_OPEN:
        if (!was_probe)
            break;
        mm->consecutive_failures = 0;
        mm->breaker = GW_BREAKER_CLOSED;
        logf_gw(gw, "model %s is back", mm->m->id);
        break;
    }
}

/* Pause mm for the cool-down, or as long as the server's Retry-After
 * (retry_after_s, < 0 for none) asks when that is longer. */
static void breaker_open(gateway *gw, gw_model *mm, double now,
                         const char *last_error, double retry_after_s)
{
    const workflow_gateway *g = &gw->wf->gateway;
    double cool = g->breaker_cooldown_s;

    if (retry_after_s > cool)
        cool = retry_after_s;
    mm->breaker = GW_BREAKER_OPEN;
    mm->reopen_at = now + cool;
    mm->stats.breaker_opens++;
    /* From now on every request of this model spends its budget. */
    for (gw_req *r = mm->ready_head; r; r = r->next)
        start_clock(r, now);
    for (gw_req *r = mm->waiting; r; r = r->next)
        start_clock(r, now);
    snprintf(mm->down_error, sizeof mm->down_error, "%s", last_error);
    gw_redact(mm->down_error, sizeof mm->down_error, mm->key);
    logf_gw(gw,
            "model %s (endpoint %s) is down after %d consecutive "
            "failures: %s; retrying in %g s",
            mm->m->id, mm->m->endpoint, mm->consecutive_failures,
            mm->down_error, cool);
}

/* The breaker judges the endpoint, not one request. In the closed state
 * a failure counts only when it is the request's first and no reply came
 * back from the endpoint while its attempt was out: failures of distinct
 * requests with the endpoint silent say it is down, while one request
 * failing again (or timing out while others are answered) says only that
 * it is a bad request, which then fails alone on its own attempts and
 * budget. While paused, only the probe's failure counts; requests sent
 * before the pause that fail late change nothing. */
static void breaker_failure(gateway *gw, gw_model *mm, gw_req *r,
                            bool was_probe, double now)
{
    switch (mm->breaker) {
    case GW_BREAKER_CLOSED:
        if (r->counted)
            break;
        r->counted = true;
        if (mm->answered && mm->t_last_answer >= r->t_attempt)
            break;
        mm->consecutive_failures++;
        if (mm->consecutive_failures >= gw->wf->gateway.breaker_failures)
            breaker_open(gw, mm, now, r->attempt_msg, r->retry_after_s);
        break;
    case GW_BREAKER_HALF_OPEN:
    case GW_BREAKER_OPEN:
        if (was_probe) {
            mm->consecutive_failures++;
            breaker_open(gw, mm, now, r->attempt_msg, r->retry_after_s);
        }
        break;
    }
}

/* ---- transfers -------------------------------------------------------------- */

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
    gw_req *r = arg;

    if (buf_add(&r->resp, data, size * n)) {
        /* Returning less than given makes libcurl abort the transfer. */
        r->too_big = true;
        return 0;
    }
    return size * n;
}

static double parse_retry_after(const char *v, size_t n)
{
    char tmp[128];
    time_t t;

    if (n == 0 || n >= sizeof tmp)
        return -1;
    memcpy(tmp, v, n);
    tmp[n] = '\0';
    if (tmp[0] >= '0' && tmp[0] <= '9') {
        char *end;
        double s;

        errno = 0;
        s = strtod(tmp, &end);
        if (errno || *end || !isfinite(s) || s < 0)
            return -1;
        return s > 86400 ? 86400 : s;
    }
    /* An HTTP date is relative to the wall clock. */
    t = curl_getdate(tmp, NULL);
    if (t == (time_t)-1)
        return -1;
    {
        double d = difftime(t, time(NULL));

        return d < 0 ? 0 : d > 86400 ? 86400 : d;
    }
}

static size_t on_header(char *data, size_t size, size_t n, void *arg)
{
    gw_req *r = arg;
    size_t len = size * n;

    /* A new status line starts a new response (e.g. after 100 Continue):
     * forget what the previous one said. */
    if (len >= 5 && !strncmp(data, "HTTP/", 5))
        r->retry_after_s = -1;
    if (len > 12 && !strncasecmp(data, "Retry-After:", 12)) {
        size_t v = 12, e = len;

        while (v < e && (data[v] == ' ' || data[v] == '\t'))
            v++;
        while (e > v && (data[e - 1] == '\r' || data[e - 1] == '\n' ||
                         data[e - 1] == ' ' || data[e - 1] == '\t'))
            e--;
        r->retry_after_s = parse_retry_after(data + v, e - v);
    }
    return len;
}

/* Counts the requests the server may have seen: libcurl resends a
 * request by itself when a reused keep-alive connection turns out closed
 * (it has no option to stop that), and calls this before each send
 * (CURLOPT_PREREQFUNCTION; CURLOPT_VERBOSE's debug callback counted the
 * same, but made libcurl format every informational line of every
 * transfer). */
static int on_prereq(void *arg, char *conn_primary_ip, char *conn_local_ip,
                     int conn_primary_port, int conn_local_port)
{
    gw_req *r = arg;

    (void)conn_primary_ip;
    (void)conn_local_ip;
    (void)conn_primary_port;
    (void)conn_local_port;
    r->sends++;
    return CURL_PREREQFUNC_OK;
}

static CURL *easy_get(gateway *gw)
{
    if (gw->nidle)
        return gw->idle[--gw->nidle];
    return curl_easy_init();
}

static void easy_put(gateway *gw, CURL *e)
{
    /* Drop the pointers into the finished request (error buffer, body,
     * callbacks' data) before the handle sits idle. */
    curl_easy_reset(e);
    if (gw->nidle == gw->idle_cap) {
        size_t ncap = gw->idle_cap ? gw->idle_cap * 2 : 16;
        CURL **ni = realloc(gw->idle, ncap * sizeof *ni);

        if (!ni) {
            curl_easy_cleanup(e);
            return;
        }
        gw->idle = ni;
        gw->idle_cap = ncap;
    }
    gw->idle[gw->nidle++] = e;
}

static int setup_easy(gateway *gw, gw_req *r, CURL *e, double now)
{
    const workflow_model *m = gw->models[r->model].m;
    double budget = m->request_timeout_s;
    long timeout_ms, connect_ms;
    CURLcode c = CURLE_OK;

    /* A probe keeps the full request timeout: it tests the endpoint, and
     * cut to the last moments of its request's budget it would fail on a
     * healthy one. */
    if (!r->is_probe && r->clock_started && deadline(gw, r) - now < budget)
        budget = deadline(gw, r) - now;
    /* a health check slower than the stall limit shows no health */
    if (r->is_health)
        budget = gw->models[r->model].stall_s;
    timeout_ms = (long)ceil(budget * 1000);
    if (timeout_ms < 1)
        timeout_ms = 1;
    connect_ms = (long)ceil(m->connect_timeout_s * 1000);
    if (connect_ms < 1)
        connect_ms = 1;
    curl_easy_reset(e);
#define SET(opt, val) \
    do { \
        if (c == CURLE_OK) \
            c = curl_easy_setopt(e, opt, val); \
    } while (0)
    SET(CURLOPT_URL, gw->models[r->model].url);
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_FOLLOWLOCATION, 0L);
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_POST, 1L);
    SET(CURLOPT_POSTFIELDS, r->body);
    SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
    SET(CURLOPT_HTTPHEADER, gw->models[r->model].headers);
    SET(CURLOPT_WRITEFUNCTION, on_body);
    SET(CURLOPT_WRITEDATA, r);
    SET(CURLOPT_HEADERFUNCTION, on_header);
    SET(CURLOPT_HEADERDATA, r);
    SET(CURLOPT_ERRORBUFFER, r->curl_err);
    SET(CURLOPT_CONNECTTIMEOUT_MS, connect_ms);
    SET(CURLOPT_TIMEOUT_MS, timeout_ms);
    SET(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    SET(CURLOPT_PIPEWAIT, 1L);
    SET(CURLOPT_ACCEPT_ENCODING, "");
    SET(CURLOPT_USERAGENT, "nsed/" NSED_VERSION);
    SET(CURLOPT_PRIVATE, r);
    SET(CURLOPT_PREREQFUNCTION, on_prereq);
    SET(CURLOPT_PREREQDATA, r);
#undef SET
    return c == CURLE_OK ? 0 : NSED_ENET;
}

static void start_request(gateway *gw, gw_req *r, double now)
{
    gw_model *mm = &gw->models[r->model];
    CURL *e = easy_get(gw);

    r->curl_err[0] = '\0';
    r->too_big = false;
    r->stalled = false;
    r->sends = 0;
    r->retry_after_s = -1;
    r->http_status = 0;
    buf_release(&r->resp);
    buf_init(&r->resp, gw->wf->gateway.max_response_bytes);
    if (!e || setup_easy(gw, r, e, now) ||
        curl_multi_add_handle(gw->multi, e) != CURLM_OK) {
        if (e)
            curl_easy_cleanup(e);
        if (r->is_probe)
            mm->probe_in_flight = false;
        if (r->is_health) {
            mm->health_in_flight = false;
            req_free(r);
            return;
        }
        snprintf(r->attempt_msg, sizeof r->attempt_msg,
                 "libcurl could not start the transfer");
        finish_failed(gw, r, NSED_ENOMEM, GATEWAY_ERR_INTERNAL, now,
                      "not retried");
        return;
    }
    r->easy = e;
    r->t_attempt = now;
    if (mm->stall_s > 0 && !r->is_probe && !r->is_health &&
        now + mm->stall_s < gw->stall_due)
        gw->stall_due = now + mm->stall_s;
    if (!r->attempted) {
        r->attempted = true;
        r->t_first_attempt = now;
    }
    r->attempts++;
    gw->in_flight++;
    if (r->is_health) {
        mm->stats.health_checks++;
    } else {
        start_clock(r, now);
        mm->stats.attempts++;
        if (r->attempts > 1)
            mm->stats.retries++;
        mm->in_flight++;
    }
    r->rprev = NULL;
    r->rnext = gw->running;
    if (gw->running)
        gw->running->rprev = r;
    gw->running = r;
}

/* The probe of a half-open model: the oldest ready request that has not
 * failed on its own (a due retry sits at the head, and probing with a
 * request that always fails would keep a healthy model paused), or the
 * head when every ready request has failed. */
static gw_req *probe_pop(gw_model *mm)
{
    gw_req *prev = NULL, *r;

    for (r = mm->ready_head; r && r->failed; r = r->next)
        prev = r;
    if (!r || !prev)
        return ready_pop(mm);
    prev->next = r->next;
    if (mm->ready_tail == r)
        mm->ready_tail = prev;
    mm->nready--;
    r->next = NULL;
    return r;
}

/* Start what may start: per model, requests from the head of its ready
 * queue while it has a free slot and its breaker lets them through. A
 * slot is held from the start of a call until its reply is durable (in
 * flight, or answered and recorded but not yet committed): so a kill -9
 * at any moment loses at most max_concurrency paid calls per model. */
static void start_ready(gateway *gw, double now)
{
    for (size_t i = 0; i < gw->nmodels; i++) {
        gw_model *mm = &gw->models[i];

        while (mm->ready_head &&
               mm->in_flight + mm->uncommitted < mm->m->max_concurrency) {
            gw_req *r;

            if (mm->breaker == GW_BREAKER_OPEN)
                break;
            if (mm->breaker == GW_BREAKER_HALF_OPEN && mm->probe_in_flight)
                break;
            if (mm->breaker == GW_BREAKER_HALF_OPEN)
                r = probe_pop(mm);
            else
                r = ready_pop(mm);
            if (r->clock_started && now >= deadline(gw, r)) {
                finish_failed(gw, r, NSED_ENET,
                              r->attempted ? r->kind : GATEWAY_ERR_PAUSED,
                              now, "retry budget of %g s exhausted after %d "
                                   "attempt%s",
                              gw->wf->gateway.retry_max_total_s, r->attempts,
                              r->attempts == 1 ? "" : "s");
                continue;
            }
            r->is_probe = mm->breaker == GW_BREAKER_HALF_OPEN;
            if (r->is_probe)
                mm->probe_in_flight = true;
            start_request(gw, r, now);
        }
    }
}

/* What the attempt of r (finished with cc) amounts to; fills r->kind,
 * r->http_status, r->attempt_msg, and for success *reply. Returns true
 * when the attempt succeeded, and sets *permanent for errors that must
 * not be retried. */
static bool classify(gateway *gw, gw_req *r, CURLcode cc, gw_reply *reply,
                     bool *permanent)
{
    char why[128], smsg[GATEWAY_SERVER_MSG_MAX + 1];
    const char *detail = r->curl_err[0] ? r->curl_err : curl_easy_strerror(cc);
    long status = 0;

    *permanent = false;
    r->permanent = false;
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
    r->http_status = status;
    if (r->too_big) {
        r->kind = GATEWAY_ERR_TOO_BIG;
        *permanent = true;
        snprintf(r->attempt_msg, sizeof r->attempt_msg,
                 "response over max_response_bytes (%zu bytes)",
                 gw->wf->gateway.max_response_bytes);
        return false;
    }
    switch (cc) {
    case CURLE_OK:
        break;
    case CURLE_OPERATION_TIMEDOUT:
        r->kind = GATEWAY_ERR_TIMEOUT;
        if (r->stalled) {
            const gw_model *mm = &gw->models[r->model];

            snprintf(r->attempt_msg, sizeof r->attempt_msg,
                     "stalled: no reply in %.3g s while the model answered "
                     "others (limit %g x its p99 latency of %.3g s, at "
                     "least %g s: timeouts.stall_factor, stall_min_s)",
                     mm->stall_s, mm->m->stall_factor, mm->lat_p99,
                     mm->m->stall_min_s);
            return false;
        }
        snprintf(r->attempt_msg, sizeof r->attempt_msg, "timed out: %s",
                 detail);
        return false;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
        r->kind = GATEWAY_ERR_CONNECT;
        snprintf(r->attempt_msg, sizeof r->attempt_msg,
                 "cannot connect: %s", detail);
        return false;
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_TOO_MANY_REDIRECTS:
    case CURLE_LOGIN_DENIED:
        /* Configuration problems: the same request will fail again. */
        r->kind = GATEWAY_ERR_TRANSPORT;
        *permanent = true;
        snprintf(r->attempt_msg, sizeof r->attempt_msg, "%s", detail);
        return false;
    default:
        r->kind = GATEWAY_ERR_TRANSPORT;
        snprintf(r->attempt_msg, sizeof r->attempt_msg, "transfer failed: %s",
                 detail);
        return false;
    }
    if (status >= 200 && status < 300) {
        if (gw_parse_reply(r->resp.ptr, r->resp.len, reply,
                           why, sizeof why) == 0)
            return true;
        r->kind = GATEWAY_ERR_MALFORMED;
        snprintf(r->attempt_msg, sizeof r->attempt_msg,
                 "HTTP %ld with an unusable body: %s", status, why);
        return false;
    }
    gw_server_message(r->resp.ptr, r->resp.len, smsg, sizeof smsg);
    /* A request the server will refuse again fails the question for good
     * (gateway_result.permanent); a prompt over the context is that even
     * when a server reports it as a 5xx. */
    r->permanent = gateway_status_permanent(status) ||
                   gw_body_permanent(r->resp.ptr, r->resp.len);
    if (r->permanent)
        *permanent = true;
    switch (status) {
    case 408:
    case 500:
    case 502:
    case 503:
    case 504:
        r->kind = GATEWAY_ERR_SERVER;
        break;
    case 429:
        r->kind = GATEWAY_ERR_RATE_LIMIT;
        break;
    default:
        r->kind = GATEWAY_ERR_HTTP;
        *permanent = true;
        break;
    }
    if (status >= 300 && status < 400)
        snprintf(r->attempt_msg, sizeof r->attempt_msg,
                 "HTTP %ld: redirects are not followed", status);
    else if (smsg[0])
        snprintf(r->attempt_msg, sizeof r->attempt_msg, "HTTP %ld: %s",
                 status, smsg);
    else
        snprintf(r->attempt_msg, sizeof r->attempt_msg, "HTTP %ld", status);
    return false;
}

/* ---- stalled attempts ------------------------------------------------------ */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

/* Record a reply's attempt latency. Once the model has
 * GW_STALL_MIN_SAMPLES replies, and every GW_STALL_REFIT after, its stall
 * limit is made again: stall_factor x the p99 of the window, at least
 * stall_min_s; none (0) when that reaches request_s, which libcurl
 * enforces anyway. */
static void stall_observe(gateway *gw, gw_model *mm, double lat)
{
    const workflow_model *m = mm->m;
    double sorted[GW_STALL_WINDOW], lim;
    size_t k;

    mm->lat_ring[mm->lat_next] = lat;
    mm->lat_next = (mm->lat_next + 1) % GW_STALL_WINDOW;
    if (mm->lat_n < GW_STALL_WINDOW)
        mm->lat_n++;
    mm->lat_fresh++;
    if (!(m->stall_factor > 0) || mm->lat_n < GW_STALL_MIN_SAMPLES)
        return;
    if (mm->lat_p99 > 0 && mm->lat_fresh < GW_STALL_REFIT)
        return;
    mm->lat_fresh = 0;
    memcpy(sorted, mm->lat_ring, mm->lat_n * sizeof *sorted);
    qsort(sorted, mm->lat_n, sizeof *sorted, cmp_double);
    k = (size_t)ceil(0.99 * (double)mm->lat_n);
    mm->lat_p99 = sorted[k - 1] > 0 ? sorted[k - 1] : 1e-6;
    lim = m->stall_factor * mm->lat_p99;
    if (lim < m->stall_min_s)
        lim = m->stall_min_s;
    mm->stall_s = lim < m->request_timeout_s ? lim : 0;
    gw->stall_due = -INFINITY; /* a limit may have shrunk: scan again */
}

static void on_transfer_done(gateway *gw, gw_req *r, CURLcode cc, double now);

/* Send model a health check: a one-token request of its own text (a
 * counter in it, so that no one prompt the server chokes on is asked
 * again), outside the concurrency cap, the ledger and the caller's
 * attempts, with the stall limit as its timeout. Answered, it shows that
 * the model answers while the requests in flight past the limit do not;
 * none is sent again for one stall limit. */
static void start_health(gateway *gw, size_t model, double now)
{
    gw_model *mm = &gw->models[model];
    gateway_message msg;
    gateway_request q;
    char text[96];
    gw_req *r = calloc(1, sizeof *r);

    mm->health_next = now + mm->stall_s;
    if (!r)
        return;
    snprintf(text, sizeof text,
             "Reply with OK. (nsed health check %" PRIu64 ")",
             mm->stats.health_checks + 1);
    memset(&q, 0, sizeof q);
    msg = (gateway_message){"user", text};
    q.model = model;
    q.messages = &msg;
    q.nmessages = 1;
    q.max_tokens = 1;
    if (gw_build_body(mm->m, &q, &r->body, &r->body_len, NULL)) {
        free(r);
        return;
    }
    r->model = model;
    r->is_health = true;
    mm->health_in_flight = true;
    start_request(gw, r, now);
}

/* A health check came back (ok) or failed. */
static void health_done(gateway *gw, gw_req *r, bool ok, double now)
{
    gw_model *mm = &gw->models[r->model];

    mm->health_in_flight = false;
    if (ok) {
        mm->answered = true;
        mm->t_last_answer = now;
        mm->health_failed = false;
    } else if (!mm->health_failed) {
        mm->health_failed = true;
        if (!mm->health_logged) {
            mm->health_logged = true;
            gw_redact(r->attempt_msg, sizeof r->attempt_msg, mm->key);
            logf_gw(gw,
                    "model %s: a health check failed (%s): requests "
                    "past the stall limit wait for their timeout",
                    mm->m->id, r->attempt_msg);
        }
    }
    req_free(r);
}

/* Attempts that have stalled: in flight past their model's stall limit
 * while the model answered other requests since they left, so that the
 * endpoint is up and the request is the one in trouble (a prompt the
 * server chokes on). With abandon they are ended as timeouts and take
 * the retry path; the breaker does not weigh them, the model having
 * answered meanwhile. A probe keeps its full timeout. Returns the
 * earliest time another attempt may stall. */
static double stall_check(gateway *gw, double now, bool abandon)
{
    double next = INFINITY, due = INFINITY;
    gw_req *nx;

    /* nothing in flight is past its limit: the walk would find the
     * earliest limit, which stall_due does not pass */
    if (now < gw->stall_due)
        return gw->stall_due;
    gw->stall_due = INFINITY; /* what starts during the walk lowers it */
    for (gw_req *r = gw->running; r; r = nx) {
        gw_model *mm = &gw->models[r->model];
        double at;

        nx = r->rnext;
        if (!(mm->stall_s > 0) || r->is_probe || r->is_health)
            continue;
        at = r->t_attempt + mm->stall_s;
        if (at < due)
            due = at;
        if (now < at) {
            if (at < next)
                next = at;
            continue;
        }
        /* Nobody answered since: the endpoint may be slow or down, or
         * every request in flight is one it chokes on. A health check
         * tells which; failing, it leaves the request to its timeout and
         * the breaker. */
        if (!mm->answered || !(mm->t_last_answer > r->t_attempt)) {
            if (mm->health_in_flight || mm->breaker != GW_BREAKER_CLOSED)
                continue;
            if (now < mm->health_next) {
                if (mm->health_next < next)
                    next = mm->health_next;
                continue;
            }
            if (abandon)
                start_health(gw, r->model, now);
            else
                next = now;
            continue;
        }
        if (!abandon) {
            next = now;
            continue;
        }
        r->stalled = true;
        mm->stats.stalls++;
        if (mm->stats.stalls == 1)
            logf_gw(gw,
                    "model %s: a request stalled (no reply in %.3g s, "
                    "%g x the model's p99 latency of %.3g s, while it "
                    "answered others); stalled attempts are abandoned "
                    "and retried",
                    mm->m->id, now - r->t_attempt, mm->m->stall_factor,
                    mm->lat_p99);
        on_transfer_done(gw, r, CURLE_OPERATION_TIMEDOUT, now);
    }
    if (due < gw->stall_due)
        gw->stall_due = due;
    return next;
}

static void on_transfer_done(gateway *gw, gw_req *r, CURLcode cc, double now)
{
    const workflow_gateway *g = &gw->wf->gateway;
    gw_model *mm = &gw->models[r->model];
    gw_reply reply = {0};
    bool permanent, ok, was_probe = r->is_probe;
    double cap, delay;
    int spent;

    ok = classify(gw, r, cc, &reply, &permanent);
    /* libcurl's silent resends are attempts the server saw: count them
     * (in the stats and the result), though not against the request's
     * retry_max_attempts, which is about the failures nsed itself saw. */
    if (r->sends > 1 && !r->is_health) {
        int extra = r->sends - 1;

        r->attempts += extra;
        r->unspent += extra;
        mm->stats.attempts += (uint64_t)extra;
        mm->stats.retries += (uint64_t)extra;
    }
    curl_multi_remove_handle(gw->multi, r->easy);
    easy_put(gw, r->easy);
    r->easy = NULL;
    if (r->rprev)
        r->rprev->rnext = r->rnext;
    else
        gw->running = r->rnext;
    if (r->rnext)
        r->rnext->rprev = r->rprev;
    r->rprev = r->rnext = NULL;
    gw->in_flight--;
    if (r->is_health) {
        gw_reply_release(&reply);
        health_done(gw, r, ok, now);
        return;
    }
    mm->in_flight--;
    buf_release(&r->resp);
    r->is_probe = false;
    if (was_probe)
        mm->probe_in_flight = false;

    if (ok) {
        mm->answered = true;
        mm->t_last_answer = now;
        stall_observe(gw, mm, now - r->t_attempt);
        breaker_success(gw, mm, was_probe);
        /* before the reply reaches the ledger, the caller or anything
         * they store or export */
        if (redact_keys(gw, &reply.content, &reply.finish_reason))
            finish_failed(gw, r, NSED_ENOMEM, GATEWAY_ERR_INTERNAL, now,
                          "out of memory redacting the reply");
        else
            finish_ok(gw, r, &reply, now);
        gw_reply_release(&reply);
        return;
    }
    gw_redact(r->attempt_msg, sizeof r->attempt_msg, mm->key);
    mm->stats.attempt_errors[r->kind]++;
    r->failed = true;
    if (kind_retryable(r->kind) && !permanent)
        breaker_failure(gw, mm, r, was_probe, now);
    /* A probe's attempt tests the endpoint for every request: it is not
     * spent from its own request's attempts. */
    if (was_probe)
        r->unspent++;
    if (permanent) {
        finish_failed(gw, r, r->kind == GATEWAY_ERR_TOO_BIG ? NSED_ETOOBIG
                                                             : NSED_ENET,
                      r->kind, now, "not retried");
        return;
    }
    if (r->attempts - r->unspent >= g->retry_max_attempts) {
        finish_failed(gw, r, NSED_ENET, r->kind, now,
                      "gave up after %d attempt%s", r->attempts,
                      r->attempts == 1 ? "" : "s");
        return;
    }
    /* Full jitter: uniform in [0, min(max, base * 2^k)], k = retries so
     * far; never sooner than the server asked. */
    spent = r->attempts - r->unspent;
    cap = (double)g->retry_base_delay_ms *
          exp2((double)(spent > 1 ? spent - 1 : 0));
    if (cap > (double)g->retry_max_delay_ms)
        cap = (double)g->retry_max_delay_ms;
    /* A stalled attempt says nothing of the server's load (it answered
     * others meanwhile): no growing backoff. */
    if (r->stalled)
        cap = (double)g->retry_base_delay_ms;
    delay = rng_unit(gw) * cap / 1000.0;
    if (r->retry_after_s > delay)
        delay = r->retry_after_s;
    if (now + delay >= deadline(gw, r)) {
        finish_failed(gw, r, NSED_ENET, r->kind, now,
                      "retry budget of %g s exhausted after %d attempt%s",
                      g->retry_max_total_s, r->attempts,
                      r->attempts == 1 ? "" : "s");
        return;
    }
    r->t_due = now + delay;
    r->next = mm->waiting;
    mm->waiting = r;
    mm->nwaiting++;
}

/* Timers: breakers that cool down, retries that become due, and (for a
 * paused model) budgets that run out. Returns the earliest future time
 * something is due, or INFINITY. */
static double tick(gateway *gw, double now)
{
    double next = INFINITY;

    for (size_t i = 0; i < gw->nmodels; i++) {
        gw_model *mm = &gw->models[i];
        gw_req **pp, *due = NULL, *prev;
        bool paused;

        if (mm->breaker == GW_BREAKER_OPEN && now >= mm->reopen_at)
            mm->breaker = GW_BREAKER_HALF_OPEN;
        paused = mm->breaker != GW_BREAKER_CLOSED;
        for (pp = &mm->waiting; *pp;) {
            gw_req *r = *pp;

            if (r->t_due <= now) {
                *pp = r->next;
                mm->nwaiting--;
                r->next = due;
                due = r;
                continue;
            }
            if (r->t_due < next)
                next = r->t_due;
            if (paused) {
                start_clock(r, now);
                if (deadline(gw, r) < next)
                    next = deadline(gw, r);
            }
            pp = &r->next;
        }
        /* Retries that are due go first: they are the oldest work. */
        while (due) {
            gw_req *r = due;

            due = r->next;
            ready_push_head(mm, r);
        }
        if (mm->breaker == GW_BREAKER_OPEN && mm->reopen_at < next)
            next = mm->reopen_at;
        if (!paused)
            continue;
        prev = NULL;
        for (pp = &mm->ready_head; *pp;) {
            gw_req *r = *pp;

            start_clock(r, now);
            if (now >= deadline(gw, r)) {
                *pp = r->next;
                if (mm->ready_tail == r)
                    mm->ready_tail = prev;
                mm->nready--;
                finish_failed(gw, r, NSED_ENET,
                              r->attempted ? r->kind : GATEWAY_ERR_PAUSED,
                              now, "model paused by its circuit breaker; "
                                   "retry budget of %g s exhausted after %d "
                                   "attempt%s",
                              gw->wf->gateway.retry_max_total_s, r->attempts,
                              r->attempts == 1 ? "" : "s");
                continue;
            }
            if (deadline(gw, r) < next)
                next = deadline(gw, r);
            prev = r;
            pp = &r->next;
        }
    }
    return next;
}

static void read_completions(gateway *gw)
{
    CURLMsg *msg;
    int left;

    while ((msg = curl_multi_info_read(gw->multi, &left)) != NULL) {
        char *p = NULL;

        if (msg->msg != CURLMSG_DONE)
            continue;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &p);
        if (p)
            on_transfer_done(gw, (gw_req *)(void *)p, msg->data.result,
                             now_s(gw));
    }
}

static void deliver(gateway *gw)
{
    /* Detach first: callbacks may submit, and what they submit is
     * delivered by a later poll. */
    gw_req *r = gw->done_head;

    gw->done_head = gw->done_tail = NULL;
    while (r) {
        gw_req *next = r->next;
        gateway_result res;

        gw->ndone--;
        memset(&res, 0, sizeof res);
        res.code = r->code;
        res.kind = r->kind;
        res.http_status = r->http_status;
        res.content = r->content ? r->content : "";
        res.content_len = r->content ? strlen(r->content) : 0;
        res.finish_reason = r->finish_reason;
        res.usage = r->usage;
        res.cost_usd = r->cost_usd;
        res.latency_s = r->latency_s;
        res.attempts = r->from_ledger ? r->recorded_attempts : r->attempts;
        res.from_ledger = r->from_ledger;
        res.from_cache = r->from_cache;
        res.error = r->error;
        res.permanent = r->code != 0 && r->permanent;
        res.model = r->model;
        memcpy(res.key, r->key, HASH_LEN);
        r->fn(&res, r->user);
        req_free(r);
        r = next;
    }
}

int gateway_poll(gateway *gw, int timeout_ms, nsed_err *err)
{
    double now = now_s(gw), next;
    int wait_ms, rc;

    if (timeout_ms < 0)
        timeout_ms = 0;
    next = tick(gw, now);
    next = fmin(next, stall_check(gw, now, false));
    start_ready(gw, now);
    wait_ms = timeout_ms;
    if (gw->done_head)
        wait_ms = 0;
    else if (next < INFINITY) {
        double ms = ceil((next - now) * 1000);

        if (ms < wait_ms)
            wait_ms = ms > 0 ? (int)ms : 0;
    }
    drive(gw, wait_ms);
    read_completions(gw);
    now = now_s(gw);
    stall_check(gw, now, true);
    tick(gw, now);
    start_ready(gw, now);
    /* Kick off the transfers just added so they progress while the caller
     * runs its callbacks. */
    drive(gw, 0);
    read_completions(gw);
    rc = gw->opts.caller_commits ? 0 : gateway_flush(gw, err);
    deliver(gw);
    return rc;
}

void gateway_kick(gateway *gw)
{
    start_ready(gw, now_s(gw));
    drive(gw, 0);
}

size_t gateway_in_flight(const gateway *gw)
{
    return gw->in_flight;
}

size_t gateway_pending(const gateway *gw)
{
    size_t n = gw->ndone;

    for (size_t i = 0; i < gw->nmodels; i++)
        n += gw->models[i].nready + gw->models[i].nwaiting;
    return n;
}

/* ---- submission -------------------------------------------------------- */

int gateway_request_key(const workflow *wf, const gateway_request *req,
                        uint8_t out[HASH_LEN], nsed_err *err)
{
    ledger_call c;
    int rc = gw_check_request(wf, req, err);

    if (rc)
        return rc;
    gw_ledger_call(&wf->models[req->model], req, &c);
    rc = ledger_key(&c, out);
    if (rc)
        return nsed_error(err, rc, "gateway: cannot compute a ledger key");
    return 0;
}

typedef struct lookup_ctx {
    const uint8_t *key;
    const uint8_t *legacy_key;
    ledger_record rec;
    bool found;
} lookup_ctx;

static int lookup_fn(store_txn *txn, void *arg, nsed_err *err)
{
    lookup_ctx *c = arg;
    int rc = ledger_find(txn, c->key, c->legacy_key, &c->rec, err);

    if (rc == NSED_ENOTFOUND)
        return 0;
    if (rc)
        return rc;
    c->found = true;
    return 0;
}

/* Look r's key up in the call cache (when there is one). On a hit fill
 * *rec (caller releases), buffer its copy for the store's ledger (not in a
 * dry run, which commits nothing), mark r and return 1; 0 for a miss or a
 * record that does not decode (logged: the call is made, and its reply
 * overwrites it in the cache); < 0 on error. */
static int cache_lookup(gateway *gw, gw_req *r, ledger_record *rec,
                        nsed_err *err)
{
    nsed_err cerr = {0};
    int rc;

    if (!gw->opts.cache)
        return 0;
    rc = cache_get(gw->opts.cache, r->key, rec, &cerr);
    if (rc == NSED_ENOTFOUND)
        return 0;
    if (rc == NSED_EINVAL) {
        logf_gw(gw, "call cache %s: %s; calling the model again",
                cache_dir(gw->opts.cache), cerr.msg);
        return 0;
    }
    if (rc == NSED_ENOMEM) {
        if (err)
            *err = cerr;
        return rc;
    }
    if (rc) {
        /* the cache only saves calls: one that cannot be read is a miss */
        if (!gw->cache_failed) {
            gw->cache_failed = true;
            logf_gw(gw, "call cache %s: %s; the run goes on without it",
                    cache_dir(gw->opts.cache), cerr.msg);
        }
        return 0;
    }
    /* another run's keys were redacted; this run's are, before the copy
     * reaches this store */
    if (redact_keys(gw, &rec->content, &rec->finish_reason) ||
        (!gw->opts.dry_run && buffer_cache_copy(gw, r->key, rec))) {
        ledger_record_release(rec);
        return nsed_error(err, NSED_ENOMEM, "gateway: out of memory");
    }
    r->from_cache = true;
    return 1;
}

/* Look r's key up in the uncommitted buffer, then in the store, then in
 * the call cache. On a hit fill r as a ledger answer and return 1; 0 for
 * a miss. */
static int ledger_lookup(gateway *gw, gw_req *r, nsed_err *err)
{
    lookup_ctx c = {r->key, r->legacy_key, {0}, false};
    int rc;

    for (size_t i = 0; i < gw->nrecords; i++) {
        const ledger_record *p = &gw->records[i].rec;

        if (memcmp(gw->records[i].key, r->key, HASH_LEN))
            continue;
        c.rec.content = strdup(p->content);
        c.rec.finish_reason = p->finish_reason ? strdup(p->finish_reason)
                                               : NULL;
        if (!c.rec.content || (p->finish_reason && !c.rec.finish_reason)) {
            ledger_record_release(&c.rec);
            return nsed_error(err, NSED_ENOMEM, "gateway: out of memory");
        }
        c.rec.prompt_tokens = p->prompt_tokens;
        c.rec.completion_tokens = p->completion_tokens;
        c.rec.cached_tokens = p->cached_tokens;
        c.rec.cost_usd = p->cost_usd;
        c.rec.latency_s = p->latency_s;
        c.rec.attempts = p->attempts;
        c.rec.http_status = p->http_status;
        c.found = true;
        break;
    }
    if (!c.found) {
        nsed_err lerr = {0};

        rc = store_read(gw->st, lookup_fn, &c, &lerr);
        if (rc == NSED_EINVAL) {
            /* A record that does not decode is treated as absent: the call
             * is made again and its record overwritten. */
            logf_gw(gw, "%s; calling the model again", lerr.msg);
            return 0;
        }
        if (rc) {
            if (err)
                *err = lerr;
            return rc;
        }
        if (!c.found) {
            rc = cache_lookup(gw, r, &c.rec, err);
            if (rc != 1)
                return rc;
            c.found = true;
        }
    }
    /* a record written before replies were redacted may hold a key */
    if (redact_keys(gw, &c.rec.content, &c.rec.finish_reason)) {
        ledger_record_release(&c.rec);
        return nsed_error(err, NSED_ENOMEM, "gateway: out of memory");
    }
    r->from_ledger = true;
    r->code = 0;
    r->kind = GATEWAY_ERR_NONE;
    r->content = c.rec.content;
    r->finish_reason = c.rec.finish_reason;
    c.rec.content = c.rec.finish_reason = NULL;
    r->usage.prompt_tokens = c.rec.prompt_tokens;
    r->usage.completion_tokens = c.rec.completion_tokens;
    r->usage.cached_tokens = c.rec.cached_tokens;
    r->cost_usd = c.rec.cost_usd;
    r->latency_s = c.rec.latency_s;
    r->recorded_attempts = c.rec.attempts;
    r->http_status = c.rec.http_status;
    ledger_record_release(&c.rec);
    return 1;
}

int gateway_submit(gateway *gw, const gateway_request *req,
                   gateway_done_fn fn, void *user, nsed_err *err)
{
    gw_req *r = NULL;
    gw_model *mm;
    ledger_call c;
    int rc;

    rc = gw_check_request(gw->wf, req, err);
    if (rc)
        return rc;
    if (!fn)
        return nsed_error(err, NSED_EINVAL, "gateway: no completion callback");
    mm = &gw->models[req->model];
    r = calloc(1, sizeof *r);
    if (!r)
        return nsed_error(err, NSED_ENOMEM, "gateway: out of memory");
    r->model = req->model;
    r->call_kind = (unsigned)req->call_kind < GATEWAY_CALL_KIND_COUNT
                       ? req->call_kind
                       : GATEWAY_CALL_OTHER;
    r->fn = fn;
    r->user = user;
    r->retry_after_s = -1;
    buf_init(&r->resp, gw->wf->gateway.max_response_bytes);
    gw_ledger_call(mm->m, req, &c);
    rc = ledger_key(&c, r->key);
    if (!rc)
        rc = ledger_key_legacy(&c, r->legacy_key);
    if (rc) {
        nsed_error(err, rc, "gateway: cannot compute a ledger key");
        goto fail;
    }
    rc = gw_build_body(mm->m, req, &r->body, &r->body_len, err);
    if (rc)
        goto fail;
    if (gw->st) {
        rc = ledger_lookup(gw, r, err);
        if (rc < 0)
            goto fail;
        if (rc == 1) {
            if (r->from_cache)
                mm->stats.cache_hits++;
            else
                mm->stats.ledger_hits++;
            done_push(gw, r);
            return 0;
        }
    }
    if (gw->opts.dry_run) {
        rc = gw_dry_run_line(gw->opts.dry_run, mm->m, mm->url, r->key,
                             r->body);
        if (rc) {
            nsed_error(err, rc, "gateway: cannot write the dry-run line");
            goto fail;
        }
        r->code = GATEWAY_DRY_RUN;
        r->kind = GATEWAY_ERR_NONE;
        mm->stats.dry_run++;
        done_push(gw, r);
        return 0;
    }
    ready_push_tail(mm, r);
    /* A request arriving while its model is paused spends its budget from
     * now on, like the ones already waiting. */
    if (mm->breaker != GW_BREAKER_CLOSED)
        start_clock(r, now_s(gw));
    return 0;
fail:
    req_free(r);
    return rc;
}
