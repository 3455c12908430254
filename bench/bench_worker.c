/* bench_worker.c -- `nsed-bench --worker ...`: one store, one job, one
 * result line (see bench.h). The run job is what `nsed run` does, minus
 * the command line: load the workflow, open and bind the store, call
 * runner_run. Linking the runner directly is what lets the benchmark
 * commit without fsync (STORE_NOSYNC), which the CLI does not offer. */
#include "bench/bench.h"

#include "pipeline/gateway/ledger.h"
#include "pipeline/questions/questions.h"
#include "pipeline/runner/runner.h"
#include "store/store.h"

#include <curl/curl.h>
#include <errno.h>
#include <lmdb.h>
#include <malloc.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>

static double tv_s(struct timeval tv)
{
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

/* Load wpath and open dir (created when absent) bound to it. */
static int open_bound(const char *wpath, const char *dir, unsigned flags,
                      workflow **wf_out, store **st_out, nsed_err *err)
{
    store_opts so = {.flags = flags};
    store_manifest m = {0};
    workflow *wf = NULL;
    store *st = NULL;
    int rc;

    rc = workflow_load(wpath, &wf, err);
    if (rc)
        goto out;
    rc = store_open(dir, &so, &st, err);
    if (rc)
        goto out;
    m.workflow_hash = workflow_hash(wf);
    m.workflow_canonical = workflow_canonical(wf);
    m.workflow_name = wf->name;
    m.resolved_json = workflow_resolved_json(wf);
    m.command_line = "nsed-bench --worker";
    m.seed = wf->seed;
    rc = store_bind_manifest(st, &m, 0, err);
out:
    if (rc) {
        store_close(st);
        workflow_free(wf);
        return rc;
    }
    *wf_out = wf;
    *st_out = st;
    return 0;
}

static int do_ingest(const char *wpath, const char *qpath, const char *dir,
                     nsed_err *err)
{
    workflow *wf = NULL;
    store *st = NULL;
    questions_stats qs = {0};
    double t0 = bench_now();
    int rc;

    rc = open_bound(wpath, dir, 0, &wf, &st, err);
    if (!rc)
        rc = questions_ingest(st, qpath, &qs, err);
    if (!rc)
        printf("added=%zu elapsed=%.6f\n", qs.added, bench_now() - t0);
    store_close(st);
    workflow_free(wf);
    return rc;
}

/* The runner's events, as nsed run prints them. */
static void print_event(void *ctx, const char *line)
{
    (void)ctx;
    fprintf(stderr, "\r\033[K%s\n", line);
    fflush(stderr);
}

static int do_run(const char *wpath, const char *dir, bool nosync,
                  nsed_err *err)
{
    workflow *wf = NULL;
    store *st = NULL;
    runner_opts ro = {.stop_fd = -1};
    runner_summary sum = {0};
    struct rusage r0, r1;
    int rc;

    rc = open_bound(wpath, dir, nosync ? STORE_NOSYNC : 0, &wf, &st, err);
    if (rc)
        goto out;
    ro.on_event = print_event;
    getrusage(RUSAGE_SELF, &r0);
    rc = runner_run(wf, st, &ro, &sum, err);
    getrusage(RUSAGE_SELF, &r1);
    if (rc)
        goto out;
    printf("calls=%llu hits=%llu finished=%zu incomplete=%zu "
           "questions=%zu elapsed=%.6f user=%.6f sys=%.6f\n",
           (unsigned long long)sum.calls,
           (unsigned long long)sum.ledger_hits, sum.finished, sum.incomplete,
           sum.questions, sum.elapsed_s,
           tv_s(r1.ru_utime) - tv_s(r0.ru_utime),
           tv_s(r1.ru_stime) - tv_s(r0.ru_stime));
out:
    store_close(st);
    workflow_free(wf);
    return rc;
}

static int ledger_fn(store_txn *txn, void *arg, nsed_err *err)
{
    int rc = ledger_count(txn, arg);

    if (rc)
        return nsed_error(err, rc, "cannot count the ledger");
    return 0;
}

static int do_ledger(const char *dir, nsed_err *err)
{
    store_opts so = {.flags = STORE_RDONLY};
    store *st = NULL;
    size_t n = 0;
    int rc;

    rc = store_open(dir, &so, &st, err);
    if (!rc)
        rc = store_read(st, ledger_fn, &n, err);
    if (!rc)
        printf("ledger=%zu\n", n);
    store_close(st);
    return rc;
}

/* ---- the transport floor ------------------------------------------------- */

/* A bare libcurl multi client: n POSTs of one fixed chat request to the
 * simulator at url, `slots` at a time over the three benchmark models,
 * bodies discarded. Its CPU per call is what HTTP over loopback costs a
 * client before any runner work -- the floor under figure 2.
 *
 * The durable floor (a directory given) adds the least a client must do
 * to keep nsed's resume promise (a kill re-pays at most the calls in
 * flight): every reply body is put into an LMDB environment there, the
 * replies finished in one turn in one write transaction committed with
 * LMDB's default fdatasync, and a finished transfer's slot takes its next
 * call only after that commit, as the runner's slots are held until
 * their reply is durable. No prompt, parse, state or index: raw bytes
 * under the call's number. */

#define FLOOR_SLOTS_MAX 256
#define FLOOR_REPLY_MAX ((size_t)1 << 20)

typedef struct floor_reply {
    char *data;
    size_t len, cap;
} floor_reply;

static size_t discard(char *data, size_t size, size_t n, void *arg)
{
    (void)data;
    (void)arg;
    return size * n;
}

static size_t keep(char *data, size_t size, size_t n, void *arg)
{
    floor_reply *r = arg;
    size_t add = size * n;

    if (r->len + add > FLOOR_REPLY_MAX)
        return 0; /* curl fails the transfer: the floor says so */
    if (r->len + add > r->cap) {
        size_t cap = r->cap ? r->cap : 2048;
        char *p;

        while (cap < r->len + add)
            cap *= 2;
        p = realloc(r->data, cap);
        if (!p)
            return 0;
        r->data = p;
        r->cap = cap;
    }
    memcpy(r->data + r->len, data, add);
    r->len += add;
    return add;
}

/* The durable floor's store: an LMDB environment in dir (created). */
static int floor_env_open(const char *dir, MDB_env **env, MDB_dbi *dbi,
                          nsed_err *err)
{
    MDB_txn *txn = NULL;
    int rc;

    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return nsed_error(err, NSED_EIO, "floor: %s: %s", dir, strerror(errno));
    rc = mdb_env_create(env);
    if (!rc)
        rc = mdb_env_set_mapsize(*env, (size_t)1 << 32);
    if (!rc)
        rc = mdb_env_open(*env, dir, 0, 0600);
    if (!rc)
        rc = mdb_txn_begin(*env, NULL, 0, &txn);
    if (!rc)
        rc = mdb_dbi_open(txn, NULL, 0, dbi);
    if (!rc)
        rc = mdb_txn_commit(txn);
    else if (txn)
        mdb_txn_abort(txn);
    if (rc)
        return nsed_error(err, NSED_EIO, "floor: %s: %s", dir,
                          mdb_strerror(rc));
    return 0;
}

/* Put the replies of done[0..ndone) (their call numbers in seq) in one
 * transaction and commit it durably. */
static int floor_commit(MDB_env *env, MDB_dbi dbi, floor_reply *const *done,
                        const uint64_t *seq, size_t ndone, nsed_err *err)
{
    MDB_txn *txn = NULL;
    int rc = mdb_txn_begin(env, NULL, 0, &txn);

    for (size_t i = 0; i < ndone && !rc; i++) {
        uint64_t k = seq[i];
        MDB_val key = {sizeof k, &k}, val = {done[i]->len, done[i]->data};

        rc = mdb_put(txn, dbi, &key, &val, 0);
    }
    if (!rc)
        rc = mdb_txn_commit(txn);
    else if (txn)
        mdb_txn_abort(txn);
    if (rc)
        return nsed_error(err, NSED_EIO, "floor: commit: %s", mdb_strerror(rc));
    return 0;
}

/* The floor drives libcurl as the gateway does (pipeline/gateway): its
 * sockets in an epoll set, curl_multi_socket_action on the ones ready
 * and on its timer, so the floor is not charged the per-transfer poll()
 * that curl_multi_perform makes on every call. */
typedef struct floor_io {
    CURLM *multi;
    int epfd;
    double due; /* bench_now() seconds; INFINITY when no timer */
} floor_io;

static int floor_socket(CURL *e, curl_socket_t fd, int what, void *user,
                        void *socketp)
{
    floor_io *io = user;
    struct epoll_event ev = {0};

    (void)e;
    if (what == CURL_POLL_REMOVE) {
        epoll_ctl(io->epfd, EPOLL_CTL_DEL, fd, NULL);
        return 0;
    }
    ev.events = ((what & CURL_POLL_IN) ? EPOLLIN : 0u) |
                ((what & CURL_POLL_OUT) ? EPOLLOUT : 0u);
    ev.data.fd = fd;
    if (!socketp || epoll_ctl(io->epfd, EPOLL_CTL_MOD, fd, &ev) != 0) {
        if (epoll_ctl(io->epfd, EPOLL_CTL_ADD, fd, &ev) != 0 && errno == EEXIST)
            epoll_ctl(io->epfd, EPOLL_CTL_MOD, fd, &ev);
        curl_multi_assign(io->multi, fd, io);
    }
    return 0;
}

static int floor_timer(CURLM *multi, long ms, void *user)
{
    floor_io *io = user;

    (void)multi;
    io->due = ms < 0 ? INFINITY : bench_now() + ms / 1000.0;
    return 0;
}

/* Wait up to 100 ms (less when curl's timer is due), act on what is
 * ready, then on the timer until curl waits again. */
static void floor_drive(floor_io *io)
{
    struct epoll_event ev[64];
    int running, n, wait = 100;
    double due = io->due - bench_now();

    if (due < 0.1)
        wait = due > 0 ? (int)ceil(due * 1000) : 0;
    n = epoll_wait(io->epfd, ev, 64, wait);
    for (int i = 0; i < n; i++)
        curl_multi_socket_action(
            io->multi, ev[i].data.fd,
            ((ev[i].events & EPOLLIN) ? CURL_CSELECT_IN : 0) |
                ((ev[i].events & EPOLLOUT) ? CURL_CSELECT_OUT : 0) |
                ((ev[i].events & (EPOLLERR | EPOLLHUP)) ? CURL_CSELECT_ERR : 0),
            &running);
    /* after acting, the timer as libcurl has it (its callback says only
     * changes, and a timer fired early stays set without one) */
    for (int i = 0; i < 16 && bench_now() >= io->due; i++) {
        long ms = -1;

        curl_multi_socket_action(io->multi, CURL_SOCKET_TIMEOUT, 0, &running);
        if (curl_multi_timeout(io->multi, &ms) != CURLM_OK)
            ms = 0;
        io->due = ms < 0 ? INFINITY : bench_now() + ms / 1000.0;
    }
}

static int do_floor(const char *base, size_t n, size_t slots, const char *dir,
                    nsed_err *err)
{
    static const char *const models[] = {"bench-alpha", "bench-beta",
                                         "bench-gamma"};
    CURLM *multi = curl_multi_init();
    floor_io io = {multi, epoll_create1(EPOLL_CLOEXEC), INFINITY};
    CURL *easy[FLOOR_SLOTS_MAX] = {0};
    floor_reply *reply = NULL;
    floor_reply *fin[FLOOR_SLOTS_MAX];
    CURL *fin_easy[FLOOR_SLOTS_MAX];
    uint64_t fin_seq[FLOOR_SLOTS_MAX];
    MDB_env *env = NULL;
    MDB_dbi dbi = 0;
    struct curl_slist *hdr = NULL;
    char *bodies[3] = {NULL, NULL, NULL};
    char url[256];
    size_t started = 0, done = 0, commits = 0;
    struct rusage r0, r1;
    double t0;
    int rc = 0;

    if (slots == 0 || slots > FLOOR_SLOTS_MAX || io.epfd < 0) {
        curl_multi_cleanup(multi);
        if (io.epfd >= 0)
            close(io.epfd);
        return nsed_error(err, NSED_EINVAL,
                          "floor: 1..%d slots, and an "
                          "epoll set",
                          FLOOR_SLOTS_MAX);
    }
    snprintf(url, sizeof url, "%s/chat/completions", base);
    hdr = curl_slist_append(NULL, "Content-Type: application/json");
    for (int m = 0; m < 3; m++) {
        /* About the size of a round-0 proposal request of the
         * benchmark's workflow. */
        if (asprintf(&bodies[m],
                     "{\"model\":\"%s\",\"messages\":[{\"role\":\"system\","
                     "\"content\":\"You are a careful mathematician. Answer "
                     "the question; end with the final answer in "
                     "\\\\boxed{}.\"},{\"role\":\"user\",\"content\":"
                     "\"=====BEGIN QUESTION=====\\nWhat is 1234 + 567?\\n"
                     "=====END QUESTION=====\\n\\nSolve the problem above. "
                     "Reason step by step, check your work, and give the "
                     "final answer as \\\\boxed{ANSWER}. If you cannot "
                     "solve it, reply with exactly SKIP.\"}],"
                     "\"temperature\":0.7,\"top_p\":1,\"max_tokens\":1024}",
                     models[m]) < 0)
            bodies[m] = NULL;
    }
    reply = calloc(FLOOR_SLOTS_MAX, sizeof *reply);
    if (!multi || !hdr || !reply || !bodies[0] || !bodies[1] || !bodies[2]) {
        rc = nsed_error(err, NSED_ENOMEM, "floor: out of memory");
        goto out;
    }
    if (dir && (rc = floor_env_open(dir, &env, &dbi, err)) != 0)
        goto out;
    curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, floor_socket);
    curl_multi_setopt(multi, CURLMOPT_SOCKETDATA, &io);
    curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, floor_timer);
    curl_multi_setopt(multi, CURLMOPT_TIMERDATA, &io);
    getrusage(RUSAGE_SELF, &r0);
    t0 = bench_now();
    for (size_t i = 0; i < slots && started < n; i++, started++) {
        easy[i] = curl_easy_init();
        if (!easy[i]) {
            rc = nsed_error(err, NSED_ENOMEM, "floor: out of memory");
            goto out;
        }
        curl_easy_setopt(easy[i], CURLOPT_URL, url);
        curl_easy_setopt(easy[i], CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(easy[i], CURLOPT_HTTPHEADER, hdr);
        curl_easy_setopt(easy[i], CURLOPT_POSTFIELDS, bodies[i % 3]);
        curl_easy_setopt(easy[i], CURLOPT_WRITEFUNCTION, env ? keep : discard);
        curl_easy_setopt(easy[i], CURLOPT_WRITEDATA, &reply[i]);
        curl_easy_setopt(easy[i], CURLOPT_PRIVATE, &reply[i]);
        curl_multi_add_handle(multi, easy[i]);
    }
    while (done < n) {
        CURLMsg *msg;
        size_t nfin = 0;
        int left;

        floor_drive(&io);
        while ((msg = curl_multi_info_read(multi, &left)) != NULL) {
            CURL *e = msg->easy_handle;
            long status = 0;

            if (msg->msg != CURLMSG_DONE)
                continue;
            curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
            if (msg->data.result != CURLE_OK || status != 200) {
                rc = nsed_error(err, NSED_ENET, "floor: call failed (%s, "
                                "HTTP %ld)",
                                curl_easy_strerror(msg->data.result), status);
                goto out;
            }
            curl_multi_remove_handle(multi, e);
            if (env) {
                char *priv = NULL;

                curl_easy_getinfo(e, CURLINFO_PRIVATE, &priv);
                fin[nfin] = (floor_reply *)(void *)priv;
                fin_easy[nfin] = e;
                fin_seq[nfin++] = done++;
                continue;
            }
            done++;
            if (started < n) {
                started++;
                curl_multi_add_handle(multi, e);
            }
        }
        /* durable: the turn's replies committed, then their slots reused */
        if (nfin && (rc = floor_commit(env, dbi, fin, fin_seq, nfin, err)))
            goto out;
        if (nfin)
            commits++;
        for (size_t i = 0; i < nfin; i++) {
            fin[i]->len = 0;
            if (started < n) {
                started++;
                curl_multi_add_handle(multi, fin_easy[i]);
            }
        }
    }
    getrusage(RUSAGE_SELF, &r1);
    printf("calls=%zu commits=%zu elapsed=%.6f user=%.6f sys=%.6f\n", done,
           commits, bench_now() - t0, tv_s(r1.ru_utime) - tv_s(r0.ru_utime),
           tv_s(r1.ru_stime) - tv_s(r0.ru_stime));
out:
    for (size_t i = 0; i < FLOOR_SLOTS_MAX; i++) {
        if (!easy[i])
            continue;
        curl_multi_remove_handle(multi, easy[i]);
        curl_easy_cleanup(easy[i]);
    }
    curl_multi_cleanup(multi);
    close(io.epfd);
    if (env)
        mdb_env_close(env);
    for (size_t i = 0; reply && i < FLOOR_SLOTS_MAX; i++)
        free(reply[i].data);
    free(reply);
    curl_slist_free_all(hdr);
    for (int m = 0; m < 3; m++)
        free(bodies[m]);
    return rc;
}

static int parse_size(const char *s, size_t *out)
{
    char *end;
    unsigned long long v;

    if (*s < '0' || *s > '9')
        return -1;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || *end || v > SIZE_MAX)
        return -1;
    *out = (size_t)v;
    return 0;
}

int bench_worker_main(int argc, char **argv)
{
    nsed_err err = {0};
    size_t n = 0, slots = 0;
    int rc;

    signal(SIGPIPE, SIG_IGN);
    /* as nsed's main() does (pipeline/cli/main.c): the worker measures
     * what `nsed run` costs, heap settings included */
    mallopt(M_TRIM_THRESHOLD, 64 << 20);
    mallopt(M_TOP_PAD, 16 << 20);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "nsed-bench worker: curl_global_init failed\n");
        return 1;
    }
    if (argc == 4 && !strcmp(argv[0], "ingest"))
        rc = do_ingest(argv[1], argv[2], argv[3], &err);
    else if ((argc == 3 || (argc == 4 && !strcmp(argv[3], "--nosync"))) &&
             !strcmp(argv[0], "run"))
        rc = do_run(argv[1], argv[2], argc == 4, &err);
    else if (argc == 2 && !strcmp(argv[0], "ledger"))
        rc = do_ledger(argv[1], &err);
    else if ((argc == 4 || argc == 5) && !strcmp(argv[0], "floor") &&
             !parse_size(argv[2], &n) && !parse_size(argv[3], &slots))
        rc = do_floor(argv[1], n, slots, argc == 5 ? argv[4] : NULL, &err);
    else
        rc = nsed_error(&err, NSED_EINVAL, "bad worker arguments");
    fflush(stdout);
    curl_global_cleanup();
    if (rc) {
        fprintf(stderr, "nsed-bench worker: %s\n",
                err.msg[0] ? err.msg : nsed_strerror(rc));
        return nsed_exit_code(rc);
    }
    return 0;
}
