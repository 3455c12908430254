/* store.c -- the run store on LMDB (see store.h for the contract).
 *
 * One store = one LMDB environment in a directory, seven named databases,
 * an flock(2)-held DIR/nsed.lock for the single writer, and a META record
 * of the schema version. Writes go through store_write(), which owns the
 * map-growth loop: LMDB never grows its map by itself, so a MDB_MAP_FULL
 * aborts the transaction, the map is doubled and the caller's function is
 * replayed from scratch.
 */
#include "store/store.h"

#include "pipeline/base/json.h"
#include "store/store_keys.h"

#include <cjson/cJSON.h>
#include <lmdb.h>
#include <zstd.h>

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#ifndef NSED_VERSION
#define NSED_VERSION "unknown"
#endif

#define STORE_DEFAULT_MAP ((size_t)64 << 20)
/* Below a few pages LMDB cannot even hold its meta pages and the named
 * database records; tiny requests are raised to this floor. */
#define STORE_MIN_MAP_PAGES 16
/* The map is address space, not memory, but doubling must stop somewhere:
 * past this a run is surely broken rather than big. */
#if SIZE_MAX > 0xFFFFFFFFu
#define STORE_MAP_MAX ((size_t)1 << 40)
#else
#define STORE_MAP_MAX ((size_t)1 << 30)
#endif
/* A reader that keeps seeing MDB_MAP_RESIZED is racing a writer that grows
 * the map again and again; give up eventually instead of spinning. */
#define STORE_RESIZE_RETRIES 16
/* Manifest history entries kept; older ones are dropped so that a store
 * resumed every few minutes for months stays small. */
#define STORE_HISTORY_MAX 1000
#define STORE_LOCK_NAME "nsed.lock"
#define STORE_DATA_NAME "data.mdb"
#define STORE_KEY_SCHEMA "schema_version"
#define STORE_KEY_MANIFEST "manifest"

struct store {
    char *dir;
    MDB_env *env;
    MDB_dbi dbi[STORE_DB_COUNT];
    unsigned char have_dbi[STORE_DB_COUNT]; /* read-only: db may be absent */
    unsigned flags;
    int lock_fd; /* -1 for read-only stores */
    int in_txn;  /* a store_write/store_read is running (no nesting) */
    int broken;  /* a failed map resize left the mapping unusable */
    /* Compression contexts, made on first use and kept: setting one up
     * costs more than compressing a record of a few KB with it. pack_buf
     * holds the compressed bytes of the put in progress (LMDB copies
     * them into the map). */
    ZSTD_CCtx *zc;
    ZSTD_DCtx *zd;
    unsigned char *pack_buf;
    size_t pack_cap;
};

/* A decompressed value handed out by store_get or store_scan: it lives
 * until its transaction ends, as a value in the map does. */
typedef struct unpacked {
    struct unpacked *next;
    unsigned char bytes[];
} unpacked;

struct store_txn {
    store *s;
    MDB_txn *txn;
    int write;
    /* First LMDB failure seen in this transaction. LMDB itself refuses
     * further work on a transaction after a failed put, and store_write
     * needs to know that the failure was MDB_MAP_FULL even when the
     * caller's function turned it into a generic error. */
    int mdb_rc;
    unpacked *unpacked; /* newest first; freed when the transaction ends */
    size_t nunpacked;   /* how many: the marks of store_txn_mark */
    /* The first record that did not decompress: store_get can only return
     * NSED_ESTORE, so store_read/store_write put this message (which names
     * the record) into the caller's err when fn fails with NSED_ESTORE. */
    nsed_err corrupt;
};

static const char *db_name(enum store_db db)
{
    switch (db) {
    case STORE_META: return "meta";
    case STORE_QUESTIONS: return "questions";
    case STORE_QORDER: return "qorder";
    case STORE_STATE: return "state";
    case STORE_LEDGER: return "ledger";
    case STORE_RESULTS: return "results";
    case STORE_TELEMETRY: return "telemetry";
    case STORE_DB_COUNT: break;
    }
    return NULL;
}

const char *store_db_name(enum store_db db)
{
    const char *name = (unsigned)db < STORE_DB_COUNT ? db_name(db) : NULL;

    return name ? name : "?";
}

/* malloc'd "dir/name", or NULL when out of memory or longer than PATH_MAX. */
static char *join_path(const char *dir, const char *name)
{
    size_t dl = strlen(dir), nl = strlen(name);
    char *p;

    if (dl + 1 + nl + 1 > PATH_MAX)
        return NULL;
    p = malloc(dl + 1 + nl + 1);
    if (!p)
        return NULL;
    memcpy(p, dir, dl);
    p[dl] = '/';
    memcpy(p + dl + 1, name, nl + 1);
    return p;
}

/* mkdir -p: the run directory's parents often do not exist yet
 * (`--store runs/exp3/shard-07`). */
static int make_dirs(const char *dir, nsed_err *err)
{
    size_t n = strlen(dir);
    char *p = malloc(n + 1);
    struct stat st;
    int rc = 0;

    if (!p)
        return nsed_error(err, NSED_ENOMEM, "out of memory");
    memcpy(p, dir, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (p[i] != '/' && p[i] != '\0')
            continue;
        if (p[i - 1] == '/')
            continue; /* "a//b" */
        char saved = p[i];
        p[i] = '\0';
        if (mkdir(p, 0777) != 0 && errno != EEXIST) {
            rc = nsed_error(err, NSED_EIO, "cannot create directory %s: %s",
                            p, strerror(errno));
            goto out;
        }
        p[i] = saved;
    }
    if (stat(dir, &st) != 0) {
        rc = nsed_error(err, NSED_EIO, "cannot use store directory %s: %s",
                        dir, strerror(errno));
        goto out;
    }
    if (!S_ISDIR(st.st_mode))
        rc = nsed_error(err, NSED_EINVAL,
                        "store path %s exists and is not a directory", dir);
out:
    free(p);
    return rc;
}

/* LMDB relies on POSIX locks and a shared memory map being coherent
 * between processes; network file systems give neither. With
 * frozen_ok, a network file system is not refused: *network says so. */
static int check_local_fs(const char *dir, int frozen_ok, int *network,
                          nsed_err *err)
{
    struct statfs sf;
    uint32_t magic;
    const char *name = NULL;

    if (statfs(dir, &sf) != 0)
        return nsed_error(err, NSED_EIO, "cannot inspect store directory %s: %s",
                          dir, strerror(errno));
    magic = (uint32_t)sf.f_type;
    if (magic == 0x6969u)
        name = "NFS";
    else if (magic == 0xFF534D42u || magic == 0xFE534D42u || magic == 0x517Bu)
        name = "SMB/CIFS";
    *network = name != NULL;
    if (name && !frozen_ok)
        return nsed_error(err, NSED_EINVAL,
                          "store directory %s is on %s; LMDB needs a local "
                          "disk (its locks and shared memory map do not work "
                          "over a network file system): put the store on local "
                          "storage", dir, name);
    return 0;
}

/* The pid recorded in the lock file, or 0 when it cannot be read. */
static long read_lock_pid(int fd)
{
    char b[32];
    ssize_t n = pread(fd, b, sizeof b - 1, 0);
    char *end;
    long pid;

    if (n <= 0)
        return 0;
    b[n] = '\0';
    errno = 0;
    pid = strtol(b, &end, 10);
    if (errno || end == b || (*end != '\n' && *end != '\0') || pid <= 0)
        return 0;
    return pid;
}

static int busy_error(nsed_err *err, const char *dir, long pid)
{
    if (pid == (long)getpid())
        return nsed_error(err, NSED_EBUSY,
                          "store %s is already open for writing in this "
                          "process (pid %ld)", dir, pid);
    if (pid > 0)
        return nsed_error(err, NSED_EBUSY,
                          "store %s is already open for writing by another "
                          "process (pid %ld)", dir, pid);
    return nsed_error(err, NSED_EBUSY,
                      "store %s is already open for writing by another "
                      "process (pid unknown)", dir);
}

/* flock(fd, LOCK_EX | LOCK_NB), tried again for up to about 50 ms while
 * it would block: a reader's probe (store_writer_active,
 * check_not_own_writer) holds a shared lock for a moment only, and must
 * not turn a writer away; a writer holds it for its whole life. */
static int lock_exclusive(int fd)
{
    for (int i = 0;; i++) {
        if (flock(fd, LOCK_EX | LOCK_NB) == 0)
            return 0;
        if (errno != EWOULDBLOCK || i == 10)
            return -1;
        nanosleep(&(struct timespec){0, 5 * 1000 * 1000}, NULL);
    }
}

/* Whether another open file description holds an flock on fd: a shared
 * lock taken and dropped at once tells. 1 when one does (a writer), 0
 * when none does, -1 with errno set when flock fails otherwise. */
static int lock_held(int fd)
{
    if (flock(fd, LOCK_SH | LOCK_NB) == 0) {
        flock(fd, LOCK_UN);
        return 0;
    }
    return errno == EWOULDBLOCK ? 1 : -1;
}

/* Take the writer lock. The pid is written for the message a second
 * writer prints; the flock itself is what excludes, and the kernel drops
 * it when the holder dies, so a killed run never leaves a stale lock. */
static int lock_take(store *s, nsed_err *err)
{
    char *path = join_path(s->dir, STORE_LOCK_NAME);
    char pidtext[32];
    int fd = -1, rc = 0, n;

    if (!path)
        return nsed_error(err, NSED_EINVAL, "store directory path too long: %s",
                          s->dir);
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = nsed_error(err, NSED_EIO, "cannot open lock file %s: %s", path,
                        strerror(errno));
        goto out;
    }
    if (lock_exclusive(fd) != 0) {
        if (errno == EWOULDBLOCK)
            rc = busy_error(err, s->dir, read_lock_pid(fd));
        else
            rc = nsed_error(err, NSED_EIO, "cannot lock %s: %s", path,
                            strerror(errno));
        goto out;
    }
    n = snprintf(pidtext, sizeof pidtext, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pidtext, (size_t)n, 0) != n) {
        rc = nsed_error(err, NSED_EIO, "cannot write lock file %s: %s", path,
                        strerror(errno));
        goto out;
    }
    s->lock_fd = fd;
    fd = -1;
out:
    if (fd >= 0)
        close(fd);
    free(path);
    return rc;
}

/* LMDB's own locks are per process: a second environment on the same files
 * in one process corrupts them when either is closed. The writer case is
 * caught by the flock; this catches a read-only open beside our own writer.
 * The flock probe only runs when the recorded pid is ours, and tells a live
 * lock from a pid left behind by a killed process whose pid we reuse. */
static int check_not_own_writer(const char *dir, nsed_err *err)
{
    char *path = join_path(dir, STORE_LOCK_NAME);
    int fd, rc = 0;

    if (!path)
        return nsed_error(err, NSED_EINVAL, "store directory path too long: %s",
                          dir);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    free(path);
    if (fd < 0)
        return 0;
    if (read_lock_pid(fd) == (long)getpid() && lock_held(fd) == 1)
        rc = nsed_error(err, NSED_EBUSY,
                        "store %s is already open for writing in this "
                        "process (pid %ld); use that handle (LMDB must not "
                        "be opened twice in one process)",
                        dir, (long)getpid());
    close(fd);
    return rc;
}

static size_t page_size(void)
{
    long ps = sysconf(_SC_PAGESIZE);

    return ps > 0 ? (size_t)ps : 4096;
}

static size_t round_map(size_t want)
{
    size_t ps = page_size(), least = ps * STORE_MIN_MAP_PAGES;

    if (want < least)
        want = least;
    if (want > STORE_MAP_MAX)
        want = STORE_MAP_MAX;
    return (want + ps - 1) / ps * ps;
}

size_t store_map_size(const store *s)
{
    MDB_envinfo info;

    if (!s || !s->env || mdb_env_info(s->env, &info) != 0)
        return 0;
    return info.me_mapsize;
}

const char *store_dir(const store *s)
{
    return s ? s->dir : NULL;
}

int store_writer_active(const store *s, bool *active, nsed_err *err)
{
    char *path;
    int fd, held;

    if (s->lock_fd >= 0) {
        *active = true;
        return 0;
    }
    path = join_path(s->dir, STORE_LOCK_NAME);
    if (!path)
        return nsed_error(err, NSED_EINVAL, "store directory path too long: %s",
                          s->dir);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;

        free(path);
        if (e == ENOENT) { /* never written: no writer */
            *active = false;
            return 0;
        }
        return nsed_error(err, NSED_EIO, "cannot open the lock file of %s: %s",
                          s->dir, strerror(e));
    }
    free(path);
    held = lock_held(fd);
    if (held < 0) {
        int e = errno;

        close(fd);
        return nsed_error(err, NSED_EIO, "cannot probe the lock of %s: %s",
                          s->dir, strerror(e));
    }
    close(fd);
    *active = held == 1;
    return 0;
}

/* Begin a transaction, adopting a map another process grew meanwhile. */
static int txn_begin(store *s, unsigned flags, MDB_txn **out, nsed_err *err)
{
    MDB_txn *txn = NULL;
    int mrc;

    for (int tries = 0;; tries++) {
        mrc = mdb_txn_begin(s->env, NULL, flags, &txn);
        if (mrc != MDB_MAP_RESIZED || tries >= STORE_RESIZE_RETRIES)
            break;
        mrc = mdb_env_set_mapsize(s->env, 0);
        if (mrc != 0) {
            s->broken = 1;
            break;
        }
    }
    if (mrc != 0)
        return nsed_error(err, NSED_ESTORE,
                          "store %s: cannot begin a %s transaction: %s", s->dir,
                          (flags & MDB_RDONLY) ? "read" : "write",
                          mdb_strerror(mrc));
    *out = txn;
    return 0;
}

/* Double the map. Only called with no transaction open in this process. */
static int grow_map(store *s, nsed_err *err)
{
    size_t cur = store_map_size(s), next;
    int mrc;

    if (cur >= STORE_MAP_MAX)
        return nsed_error(err, NSED_ESTORE,
                          "store %s is full: its map cannot grow past %zu bytes",
                          s->dir, (size_t)STORE_MAP_MAX);
    next = round_map(cur > STORE_MAP_MAX / 2 ? STORE_MAP_MAX : cur * 2);
    mrc = mdb_env_set_mapsize(s->env, next);
    if (mrc != 0) {
        /* LMDB has unmapped the old map before failing to map the new one;
         * nothing but close is safe any more. */
        s->broken = 1;
        return nsed_error(err, NSED_ESTORE,
                          "store %s: cannot grow the map to %zu bytes: %s",
                          s->dir, next, mdb_strerror(mrc));
    }
    return 0;
}

static void err_clear(nsed_err *err)
{
    if (err) {
        err->code = 0;
        err->msg[0] = '\0';
    }
}

/* ---- compression --------------------------------------------------------
 *
 * Large values of the databases that hold text records are stored
 * compressed (docs/store.md, "Compression"): LMDB gives a value over about
 * 2 KB overflow pages of its own, rounded up to 4 KiB, and the records are
 * JSON text, which compresses 2.5-3.5x. A compressed value is
 *
 *   byte 0     STORE_PACK_MAGIC, 0xFE: never a byte of UTF-8 text, so no
 *              JSON text begins with it (and every uncompressed value of
 *              these databases is JSON: questions, states, rounds, ledger
 *              and result records)
 *   byte 1     the method: STORE_PACK_ZSTD, one zstd frame
 *   bytes 2-5  the length of the original value, u32 big-endian
 *   bytes 6-   the zstd frame, which records the same length and a
 *              checksum of the original, so damage is found, not returned
 *
 * A value of these databases that begins with 0xFE itself (no record
 * nsed writes does; a caller may still store any bytes) and is not
 * compressed gets the same header with method STORE_PACK_PLAIN and its
 * bytes after it, so that every value reads back as it was put.
 *
 * Values written uncompressed (by an older nsed, or under the threshold)
 * read as they are. Readers never see the difference: store_get and
 * store_scan hand out the original bytes, in a buffer the transaction
 * owns until it ends. */
#define STORE_PACK_MAGIC 0xFEu
#define STORE_PACK_PLAIN 0x00u
#define STORE_PACK_ZSTD 0x01u
#define STORE_PACK_HDR 6
/* zstd's fastest regular level: on the runner's records it compresses as
 * well as zlib's level 6 within 3%, at a third of zlib level 1's CPU
 * (docs/performance.md, "Store bytes per question"). */
#define STORE_PACK_LEVEL 1

/* The databases whose values may be stored compressed. The others keep
 * theirs as they are: META's are small and read before anything else,
 * QORDER's are question ids, TELEMETRY's are small and rewritten every
 * turn. */
static int packed_db(enum store_db db)
{
    return db == STORE_QUESTIONS || db == STORE_STATE || db == STORE_LEDGER ||
           db == STORE_RESULTS;
}

/* Whether store_put tries to compress this value. */
static int pack_wanted(enum store_db db, const void *key, size_t klen,
                       size_t vlen)
{
    size_t qlen;
    enum store_keys_qrec rec;
    uint32_t round;

    if (!packed_db(db) || vlen < STORE_COMPRESS_MIN || vlen > UINT32_MAX)
        return 0;
    /* A question's checkpoint ("\0s") is rewritten at every stage while
     * the question runs and names its rounds rather than holding them
     * (under 1 KB once finished): compressing it would cost CPU at every
     * turn for little. Rounds, broker decisions and contexts are written
     * once. */
    if (db == STORE_STATE &&
        store_keys_question_parse(key, klen, &qlen, &rec, &round) == 0 &&
        rec == STORE_KEYS_STATE)
        return 0;
    return 1;
}

/* Room for need bytes in s->pack_buf. Returns 0 or NSED_ENOMEM. */
static int pack_reserve(store *s, size_t need)
{
    unsigned char *p;

    if (s->pack_cap >= need)
        return 0;
    p = realloc(s->pack_buf, need);
    if (!p)
        return NSED_ENOMEM;
    s->pack_buf = p;
    s->pack_cap = need;
    return 0;
}

/* The header: the magic byte, the method, the original length (u32 BE). */
static void pack_header(unsigned char *p, unsigned char method, size_t vlen)
{
    p[0] = STORE_PACK_MAGIC;
    p[1] = method;
    p[2] = (unsigned char)(vlen >> 24);
    p[3] = (unsigned char)(vlen >> 16);
    p[4] = (unsigned char)(vlen >> 8);
    p[5] = (unsigned char)vlen;
}

/* Compress val into s->pack_buf. On 0, *out and *outlen are the bytes to
 * store: the compressed form when it is shorter, else val itself.
 * NSED_ENOMEM when a context or the buffer cannot be had. */
static int pack(store *s, const void *val, size_t vlen, const void **out,
                size_t *outlen)
{
    size_t bound = STORE_PACK_HDR + ZSTD_compressBound(vlen), n;
    unsigned char *p;

    *out = val;
    *outlen = vlen;
    if (!s->zc) {
        s->zc = ZSTD_createCCtx();
        if (!s->zc ||
            ZSTD_isError(ZSTD_CCtx_setParameter(s->zc, ZSTD_c_compressionLevel,
                                                STORE_PACK_LEVEL)) ||
            ZSTD_isError(ZSTD_CCtx_setParameter(s->zc, ZSTD_c_checksumFlag,
                                                1)) ||
            ZSTD_isError(ZSTD_CCtx_setParameter(s->zc, ZSTD_c_contentSizeFlag,
                                                1))) {
            ZSTD_freeCCtx(s->zc);
            s->zc = NULL;
            return NSED_ENOMEM;
        }
    }
    if (pack_reserve(s, bound))
        return NSED_ENOMEM;
    p = s->pack_buf;
    n = ZSTD_compress2(s->zc, p + STORE_PACK_HDR, bound - STORE_PACK_HDR, val,
                       vlen);
    /* zstd fails only for want of memory here: the value is then stored
     * as it is, which every reader understands */
    if (ZSTD_isError(n) || STORE_PACK_HDR + n >= vlen)
        return 0;
    pack_header(p, STORE_PACK_ZSTD, vlen);
    *out = p;
    *outlen = STORE_PACK_HDR + n;
    return 0;
}

/* A value of a packed database that begins with the magic byte itself:
 * the header with STORE_PACK_PLAIN, then val, into s->pack_buf. */
static int pack_plain(store *s, const void *val, size_t vlen, const void **out,
                      size_t *outlen)
{
    size_t need = STORE_PACK_HDR + vlen;
    unsigned char *p;

    if (vlen > UINT32_MAX)
        return NSED_EINVAL;
    if (pack_reserve(s, need))
        return NSED_ENOMEM;
    p = s->pack_buf;
    pack_header(p, STORE_PACK_PLAIN, vlen);
    memcpy(p + STORE_PACK_HDR, val, vlen);
    *out = p;
    *outlen = need;
    return 0;
}

/* key as printable text into out (cap bytes, NUL-terminated): bytes
 * outside printable ASCII, the quote and the backslash as \xHH, cut
 * after 64 bytes of key. */
static void key_text(const unsigned char *key, size_t klen, char *out,
                     size_t cap)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;

    for (size_t i = 0; i < klen && i < 64 && o + 5 < cap; i++) {
        unsigned char c = key[i];

        if (c >= 0x20 && c < 0x7F && c != '"' && c != '\\') {
            out[o++] = (char)c;
        } else {
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    if (klen > 64 && o + 4 < cap) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
}

/* What a record is, for a message: "round 2 of question q1", "the result
 * of q1", "ledger entry 3fa2...", else "the record with key "..."". */
static void record_name(enum store_db db, const void *key, size_t klen,
                        char *out, size_t cap)
{
    char kt[64 * 4 + 8];
    size_t qlen;
    enum store_keys_qrec rec;
    uint32_t round;

    if (db == STORE_STATE &&
        store_keys_question_parse(key, klen, &qlen, &rec, &round) == 0) {
        key_text(key, qlen, kt, sizeof kt);
        switch (rec) {
        case STORE_KEYS_STATE:
            snprintf(out, cap, "the state of question %s", kt);
            return;
        case STORE_KEYS_ROUND:
            snprintf(out, cap, "round %" PRIu32 " of question %s", round, kt);
            return;
        case STORE_KEYS_INCOMPLETE:
            snprintf(out, cap, "the incomplete marker of question %s", kt);
            return;
        case STORE_KEYS_BROKER:
            snprintf(out, cap, "the broker decision of question %s", kt);
            return;
        case STORE_KEYS_CONTEXT:
            snprintf(out, cap, "the context of question %s", kt);
            return;
        }
    }
    if (db == STORE_LEDGER && klen == 32) {
        static const char hex[] = "0123456789abcdef";
        const unsigned char *k = key;

        for (size_t i = 0; i < 32; i++) {
            kt[2 * i] = hex[k[i] >> 4];
            kt[2 * i + 1] = hex[k[i] & 15];
        }
        kt[64] = '\0';
        snprintf(out, cap, "ledger entry %s", kt);
        return;
    }
    key_text(key, klen, kt, sizeof kt);
    if (db == STORE_RESULTS)
        snprintf(out, cap, "the result of %s", kt);
    else if (db == STORE_QUESTIONS)
        snprintf(out, cap, "question %s", kt);
    else
        snprintf(out, cap, "the record with key \"%s\"", kt);
}

/* A compressed value that does not decompress: remembered in the
 * transaction with the record's name, NSED_ESTORE returned. */
static int unpack_fail(store_txn *t, enum store_db db, const void *key,
                       size_t klen, const char *why)
{
    char name[384];

    if (t->corrupt.code)
        return NSED_ESTORE; /* the first one is reported */
    record_name(db, key, klen, name, sizeof name);
    return store_corrupt(&t->corrupt, t, db, name, why);
}

/* When *v (the value of key in db) is compressed, replace it with its
 * original bytes, in a buffer t owns until it ends. Returns 0,
 * NSED_ESTORE (the value does not decompress: see unpack_fail) or
 * NSED_ENOMEM. */
static int unpack(store_txn *t, enum store_db db, const void *key, size_t klen,
                  MDB_val *v)
{
    const unsigned char *p = v->mv_data;
    unsigned long long framelen;
    size_t n, got;
    unpacked *u;
    char why[160];

    if (!packed_db(db) || v->mv_size == 0 || p[0] != STORE_PACK_MAGIC)
        return 0;
    if (v->mv_size < STORE_PACK_HDR)
        return unpack_fail(t, db, key, klen,
                           "a compressed value shorter than its header");
    n = (size_t)p[2] << 24 | (size_t)p[3] << 16 | (size_t)p[4] << 8 |
        (size_t)p[5];
    if (p[1] == STORE_PACK_PLAIN) {
        if (n != v->mv_size - STORE_PACK_HDR) {
            snprintf(why, sizeof why,
                     "its header gives %zu bytes, %zu follow it", n,
                     v->mv_size - STORE_PACK_HDR);
            return unpack_fail(t, db, key, klen, why);
        }
        v->mv_data = (void *)(p + STORE_PACK_HDR);
        v->mv_size = n;
        return 0;
    }
    if (p[1] != STORE_PACK_ZSTD) {
        snprintf(why, sizeof why, "compressed by unknown method %u",
                 (unsigned)p[1]);
        return unpack_fail(t, db, key, klen, why);
    }
    /* the frame says the length too: a damaged header (or frame) is
     * caught before a buffer of the length it claims is allocated */
    framelen = ZSTD_getFrameContentSize(p + STORE_PACK_HDR,
                                        v->mv_size - STORE_PACK_HDR);
    if (framelen != (unsigned long long)n) {
        snprintf(why, sizeof why,
                 "its header gives %zu bytes, its compressed frame %s", n,
                 framelen == ZSTD_CONTENTSIZE_ERROR     ? "is not zstd's"
                 : framelen == ZSTD_CONTENTSIZE_UNKNOWN ? "no length"
                                                        : "another length");
        return unpack_fail(t, db, key, klen, why);
    }
    if (!t->s->zd) {
        t->s->zd = ZSTD_createDCtx();
        if (!t->s->zd)
            return NSED_ENOMEM;
    }
    u = malloc(sizeof *u + (n ? n : 1));
    if (!u)
        return NSED_ENOMEM;
    got = ZSTD_decompressDCtx(t->s->zd, u->bytes, n, p + STORE_PACK_HDR,
                              v->mv_size - STORE_PACK_HDR);
    if (ZSTD_isError(got) || got != n) {
        free(u);
        snprintf(why, sizeof why, "its compressed bytes do not decompress: %s",
                 ZSTD_isError(got) ? ZSTD_getErrorName(got) : "short");
        return unpack_fail(t, db, key, klen, why);
    }
    u->next = t->unpacked;
    t->unpacked = u;
    t->nunpacked++;
    v->mv_data = u->bytes;
    v->mv_size = n;
    return 0;
}

/* Free the decompressed values handed out after mark (newest first). */
static void unpacked_free_to(store_txn *t, size_t mark)
{
    while (t->unpacked && t->nunpacked > mark) {
        unpacked *u = t->unpacked;

        t->unpacked = u->next;
        t->nunpacked--;
        free(u);
    }
}

/* The transaction has ended: its decompressed values go. */
static void txn_release(store_txn *t)
{
    unpacked_free_to(t, 0);
}

size_t store_txn_mark(const store_txn *t)
{
    return t ? t->nunpacked : 0;
}

void store_txn_release(store_txn *t, size_t mark)
{
    if (t)
        unpacked_free_to(t, mark);
}

/* fn failed with NSED_ESTORE after a record of t did not decompress: the
 * caller's message gets the one naming the record. */
static void report_corrupt(const store_txn *t, int rc, nsed_err *err)
{
    char prefix[400];
    size_t n;

    if (rc != NSED_ESTORE || !t->corrupt.code || !err ||
        strstr(err->msg, t->corrupt.msg))
        return;
    if (!err->msg[0]) {
        nsed_error(err, rc, "%s", t->corrupt.msg);
        return;
    }
    /* the caller's words first, cut short enough to leave the record's */
    n = strnlen(err->msg, sizeof prefix - 1);
    memcpy(prefix, err->msg, n);
    prefix[n] = '\0';
    nsed_error(err, rc, "%s: %s", prefix, t->corrupt.msg);
}

/* Below this much free space an I/O error from a commit is taken for a
 * full disk: LMDB turns a short write (what a full file system gives) into
 * EIO, so the errno alone does not tell. */
#define STORE_FULL_BELOW ((uint64_t)16 << 20)

/* A failed commit. A full disk (ENOSPC, EDQUOT, or EIO with almost no
 * space left) says so with the path: it is the user's to fix, and the
 * store keeps every earlier commit, so the same command resumes. The map
 * being full (MDB_MAP_FULL) is not this: store_write grows the map. */
static int commit_error(const store *s, int mrc, nsed_err *err)
{
    struct statvfs vfs;
    uint64_t avail = UINT64_MAX;

    if (statvfs(s->dir, &vfs) == 0)
        avail = (uint64_t)vfs.f_bavail * (uint64_t)vfs.f_frsize;
    if (mrc == ENOSPC || mrc == EDQUOT ||
        (mrc == EIO && avail < STORE_FULL_BELOW))
        return nsed_error(err, NSED_EIO,
                          "disk full: %s/%s (%" PRIu64 " bytes free); free "
                          "some space and run the same command again: "
                          "everything committed before is kept",
                          s->dir, STORE_DATA_NAME,
                          avail == UINT64_MAX ? 0 : avail);
    return nsed_error(err, NSED_ESTORE, "store %s: commit failed: %s", s->dir,
                      mdb_strerror(mrc));
}

/* The replay loop behind store_write (also used by store_open before the
 * store is handed out). */
static int write_loop(store *s, store_txn_fn fn, void *arg, nsed_err *err)
{
    for (;;) {
        store_txn t = {s, NULL, 1, 0};
        int rc, mrc;

        rc = txn_begin(s, 0, &t.txn, err);
        if (rc)
            return rc;
        s->in_txn = 1;
        rc = fn(&t, arg, err);
        s->in_txn = 0;
        if (t.mdb_rc == MDB_MAP_FULL) {
            mdb_txn_abort(t.txn);
            txn_release(&t);
            err_clear(err);
            rc = grow_map(s, err);
            if (rc)
                return rc;
            continue;
        }
        if (rc) {
            mdb_txn_abort(t.txn);
            report_corrupt(&t, rc, err);
            txn_release(&t);
            if (t.mdb_rc && (!err || err->msg[0] == '\0'))
                nsed_error(err, rc, "store %s: %s", s->dir,
                           mdb_strerror(t.mdb_rc));
            return rc;
        }
        if (t.mdb_rc) {
            /* fn ignored a failed put; committing would lose it silently. */
            mdb_txn_abort(t.txn);
            txn_release(&t);
            return nsed_error(err, NSED_ESTORE,
                              "store %s: a write failed inside the "
                              "transaction: %s", s->dir, mdb_strerror(t.mdb_rc));
        }
        mrc = mdb_txn_commit(t.txn); /* frees the txn, success or not */
        txn_release(&t);
        if (mrc == MDB_MAP_FULL) {
            rc = grow_map(s, err);
            if (rc)
                return rc;
            continue;
        }
        if (mrc != 0)
            return commit_error(s, mrc, err);
        return 0;
    }
}

static int usable(store *s, nsed_err *err)
{
    if (!s)
        return nsed_error(err, NSED_EINVAL, "no store");
    if (s->broken)
        return nsed_error(err, NSED_ESTORE,
                          "store %s is unusable after a failed map resize; "
                          "close it", s->dir);
    if (s->in_txn)
        return nsed_error(err, NSED_EINVAL,
                          "store %s: transactions cannot be nested", s->dir);
    return 0;
}

int store_write(store *s, store_txn_fn fn, void *arg, nsed_err *err)
{
    int rc = usable(s, err);

    if (rc)
        return rc;
    if (s->flags & STORE_RDONLY)
        return nsed_error(err, NSED_EINVAL,
                          "store %s was opened read-only", s->dir);
    return write_loop(s, fn, arg, err);
}

int store_defer_meta_sync(store *s, bool on, nsed_err *err)
{
    int rc = usable(s, err), mrc;

    if (rc)
        return rc;
    if (s->flags & (STORE_RDONLY | STORE_NOSYNC))
        return 0;
    mrc = mdb_env_set_flags(s->env, MDB_NOMETASYNC, on ? 1 : 0);
    /* back to full syncs: the last deferred meta page goes to disk now */
    if (mrc == 0 && !on)
        mrc = mdb_env_sync(s->env, 1);
    if (mrc != 0)
        return nsed_error(err, NSED_ESTORE, "store %s: cannot sync: %s", s->dir,
                          mdb_strerror(mrc));
    return 0;
}

int store_read(store *s, store_txn_fn fn, void *arg, nsed_err *err)
{
    store_txn t = {s, NULL, 0, 0};
    int rc = usable(s, err);

    if (rc)
        return rc;
    rc = txn_begin(s, MDB_RDONLY, &t.txn, err);
    if (rc)
        return rc;
    s->in_txn = 1;
    rc = fn(&t, arg, err);
    s->in_txn = 0;
    mdb_txn_abort(t.txn);
    if (rc)
        report_corrupt(&t, rc, err);
    txn_release(&t);
    return rc;
}

const char *store_txn_dir(const store_txn *t)
{
    return t && t->s ? t->s->dir : "?";
}

int store_corrupt(nsed_err *err, const store_txn *t, enum store_db db,
                  const char *record, const char *why)
{
    return nsed_error(err, NSED_ESTORE,
                      "store %s: %s in database %s is corrupt%s%s%s; restore "
                      "the store from a copy",
                      store_txn_dir(t), record ? record : "a record",
                      store_db_name(db), why ? " (" : "", why ? why : "",
                      why ? ")" : "");
}

/* Common argument checks for the per-key calls; 0 when the call may go on. */
static int txn_check(store_txn *t, enum store_db db)
{
    if (!t || !t->txn || (unsigned)db >= STORE_DB_COUNT)
        return NSED_EINVAL;
    if (t->mdb_rc)
        return NSED_ESTORE;
    return 0;
}

static int key_ok(const void *key, size_t klen)
{
    return key && klen >= 1 && klen <= STORE_KEY_MAX;
}

static int txn_fail(store_txn *t, int mrc)
{
    if (!t->mdb_rc)
        t->mdb_rc = mrc;
    return NSED_ESTORE;
}

int store_put(store_txn *t, enum store_db db, const void *key, size_t klen,
              const void *val, size_t vlen)
{
    int rc = txn_check(t, db);
    MDB_val k, v;
    int mrc;

    if (rc)
        return rc;
    if (!t->write || !key_ok(key, klen) || (!val && vlen))
        return NSED_EINVAL;
    k.mv_data = (void *)key;
    k.mv_size = klen;
    /* LMDB copies from mv_data even for zero bytes; never hand it NULL. */
    v.mv_data = val ? (void *)val : (void *)"";
    v.mv_size = vlen;
    if (pack_wanted(db, key, klen, vlen)) {
        const void *out;

        rc = pack(t->s, val, vlen, &out, &v.mv_size);
        if (rc)
            return rc;
        v.mv_data = (void *)out;
    }
    if (packed_db(db) && v.mv_data == val && vlen &&
        *(const unsigned char *)val == STORE_PACK_MAGIC) {
        const void *out;

        rc = pack_plain(t->s, val, vlen, &out, &v.mv_size);
        if (rc)
            return rc;
        v.mv_data = (void *)out;
    }
    mrc = mdb_put(t->txn, t->s->dbi[db], &k, &v, 0);
    if (mrc != 0)
        return txn_fail(t, mrc);
    return 0;
}

int store_get(store_txn *t, enum store_db db, const void *key, size_t klen,
              const void **val, size_t *vlen)
{
    int rc = txn_check(t, db);
    MDB_val k, v;
    int mrc;

    if (rc)
        return rc;
    if (!key_ok(key, klen) || !val || !vlen)
        return NSED_EINVAL;
    if (!t->s->have_dbi[db])
        return NSED_ENOTFOUND;
    k.mv_data = (void *)key;
    k.mv_size = klen;
    mrc = mdb_get(t->txn, t->s->dbi[db], &k, &v);
    if (mrc == MDB_NOTFOUND)
        return NSED_ENOTFOUND;
    if (mrc != 0)
        return txn_fail(t, mrc);
    rc = unpack(t, db, key, klen, &v);
    if (rc)
        return rc;
    *val = v.mv_data;
    *vlen = v.mv_size;
    return 0;
}

int store_del(store_txn *t, enum store_db db, const void *key, size_t klen)
{
    int rc = txn_check(t, db);
    MDB_val k;
    int mrc;

    if (rc)
        return rc;
    if (!t->write || !key_ok(key, klen))
        return NSED_EINVAL;
    k.mv_data = (void *)key;
    k.mv_size = klen;
    mrc = mdb_del(t->txn, t->s->dbi[db], &k, NULL);
    if (mrc == MDB_NOTFOUND)
        return NSED_ENOTFOUND;
    if (mrc != 0)
        return txn_fail(t, mrc);
    return 0;
}

int store_count(store_txn *t, enum store_db db, size_t *n)
{
    int rc = txn_check(t, db);
    MDB_stat st;
    int mrc;

    if (rc)
        return rc;
    if (!n)
        return NSED_EINVAL;
    if (!t->s->have_dbi[db]) {
        *n = 0;
        return 0;
    }
    mrc = mdb_stat(t->txn, t->s->dbi[db], &st);
    if (mrc != 0)
        return txn_fail(t, mrc);
    *n = st.ms_entries;
    return 0;
}

/* LMDB's default key order: bytewise, then the shorter key first. */
static int key_cmp(const void *a, size_t al, const void *b, size_t bl)
{
    int c = memcmp(a, b, al < bl ? al : bl);

    if (c)
        return c;
    return al < bl ? -1 : al > bl;
}

int store_scan(store_txn *t, enum store_db db, const void *prefix,
               size_t plen, const void *start, size_t slen, store_scan_fn fn,
               void *arg)
{
    int rc = txn_check(t, db);
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    MDB_cursor_op op;
    int mrc;

    if (rc)
        return rc;
    if (!slen)
        start = NULL; /* the empty key sorts first: same as no start */
    if (!fn || (plen && !prefix) || plen > STORE_KEY_MAX ||
        slen > STORE_KEY_MAX)
        return NSED_EINVAL;
    if (!t->s->have_dbi[db])
        return 0;
    mrc = mdb_cursor_open(t->txn, t->s->dbi[db], &cur);
    if (mrc != 0)
        return txn_fail(t, mrc);
    /* Keys sharing a prefix are contiguous, so seek to the later of prefix
     * and start and walk until the prefix no longer matches. */
    if (start && (!plen || key_cmp(start, slen, prefix, plen) > 0)) {
        k.mv_data = (void *)start;
        k.mv_size = slen;
        op = MDB_SET_RANGE;
    } else if (plen) {
        k.mv_data = (void *)prefix;
        k.mv_size = plen;
        op = MDB_SET_RANGE;
    } else {
        op = MDB_FIRST;
    }
    rc = 0;
    for (;;) {
        mrc = mdb_cursor_get(cur, &k, &v, op);
        if (mrc == MDB_NOTFOUND)
            break;
        if (mrc != 0) {
            rc = txn_fail(t, mrc);
            break;
        }
        if (plen && (k.mv_size < plen || memcmp(k.mv_data, prefix, plen) != 0))
            break;
        rc = unpack(t, db, k.mv_data, k.mv_size, &v);
        if (rc)
            break;
        rc = fn(k.mv_data, k.mv_size, v.mv_data, v.mv_size, arg);
        if (rc)
            break;
        op = MDB_NEXT;
    }
    mdb_cursor_close(cur);
    return rc;
}

int store_last(store_txn *t, enum store_db db, const void **key, size_t *klen)
{
    int rc = txn_check(t, db);
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    int mrc;

    if (rc)
        return rc;
    if (!key || !klen)
        return NSED_EINVAL;
    if (!t->s->have_dbi[db])
        return NSED_ENOTFOUND;
    mrc = mdb_cursor_open(t->txn, t->s->dbi[db], &cur);
    if (mrc != 0)
        return txn_fail(t, mrc);
    mrc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
    mdb_cursor_close(cur);
    if (mrc == MDB_NOTFOUND)
        return NSED_ENOTFOUND;
    if (mrc != 0)
        return txn_fail(t, mrc);
    *key = k.mv_data;
    *klen = k.mv_size;
    return 0;
}

/* Parse the recorded schema version ("1"); -1 when it is not a number. */
static long parse_version(const void *val, size_t vlen)
{
    char b[24];
    char *end;
    long v;

    if (vlen == 0 || vlen >= sizeof b)
        return -1;
    memcpy(b, val, vlen);
    b[vlen] = '\0';
    if (b[0] < '0' || b[0] > '9')
        return -1;
    errno = 0;
    v = strtol(b, &end, 10);
    if (errno || *end != '\0')
        return -1;
    return v;
}

static int check_version(store_txn *t, nsed_err *err)
{
    const void *val;
    size_t vlen;
    long v;
    int rc;

    rc = store_get(t, STORE_META, STORE_KEY_SCHEMA, strlen(STORE_KEY_SCHEMA),
                   &val, &vlen);
    if (rc == NSED_ENOTFOUND) {
        if (!t->write)
            return nsed_error(err, NSED_ENOTFOUND,
                              "no nsed store in %s (it has no schema version)",
                              t->s->dir);
        char text[24];
        int n = snprintf(text, sizeof text, "%d", STORE_SCHEMA_VERSION);
        rc = store_put(t, STORE_META, STORE_KEY_SCHEMA, strlen(STORE_KEY_SCHEMA),
                       text, (size_t)n);
        if (rc)
            return nsed_error(err, rc, "store %s: cannot record the schema "
                              "version", t->s->dir);
        return 0;
    }
    if (rc)
        return nsed_error(err, rc, "store %s: cannot read the schema version",
                          t->s->dir);
    v = parse_version(val, vlen);
    if (v < 0)
        return nsed_error(err, NSED_ESCHEMA,
                          "store %s has an unreadable schema version; this "
                          "nsed (%s) understands versions %d to %d",
                          t->s->dir, NSED_VERSION, STORE_SCHEMA_OLDEST,
                          STORE_SCHEMA_VERSION);
    if (v < STORE_SCHEMA_OLDEST || v > STORE_SCHEMA_VERSION)
        return nsed_error(err, NSED_ESCHEMA,
                          "store %s has schema version %ld; this nsed (%s) "
                          "understands versions %d to %d%s",
                          t->s->dir, v, NSED_VERSION, STORE_SCHEMA_OLDEST,
                          STORE_SCHEMA_VERSION,
                          v > STORE_SCHEMA_VERSION
                              ? " (it was written by a newer nsed)"
                              : "");
    if (v < STORE_SCHEMA_VERSION && t->write) {
        /* this writer may put compressed records: an older nsed must
         * refuse the store from now on (store.h) */
        char text[24];
        int n = snprintf(text, sizeof text, "%d", STORE_SCHEMA_VERSION);

        rc = store_put(t, STORE_META, STORE_KEY_SCHEMA,
                       strlen(STORE_KEY_SCHEMA), text, (size_t)n);
        if (rc)
            return nsed_error(err, rc,
                              "store %s: cannot record the schema "
                              "version",
                              t->s->dir);
    }
    return 0;
}

/* First transaction of a writer: create the databases, check or record the
 * schema version. Replayed like any write if the map is too small. */
static int init_writer(store_txn *t, void *arg, nsed_err *err)
{
    store *s = t->s;
    int mrc;

    (void)arg;
    memset(s->have_dbi, 0, sizeof s->have_dbi);
    for (int i = 0; i < STORE_DB_COUNT; i++) {
        mrc = mdb_dbi_open(t->txn, db_name((enum store_db)i), MDB_CREATE,
                           &s->dbi[i]);
        if (mrc != 0) {
            txn_fail(t, mrc);
            return nsed_error(err, NSED_ESTORE,
                              "store %s: cannot open database %s: %s", s->dir,
                              db_name((enum store_db)i), mdb_strerror(mrc));
        }
        s->have_dbi[i] = 1;
    }
    return check_version(t, err);
}

/* Read-only open: attach the databases that exist and check the version.
 * The transaction is committed, not aborted, so that the database handles
 * opened in it stay valid for the environment. */
static int init_reader(store *s, nsed_err *err)
{
    store_txn t = {s, NULL, 0, 0};
    int rc, mrc;

    rc = txn_begin(s, MDB_RDONLY, &t.txn, err);
    if (rc)
        return rc;
    for (int i = 0; i < STORE_DB_COUNT; i++) {
        mrc = mdb_dbi_open(t.txn, db_name((enum store_db)i), 0, &s->dbi[i]);
        if (mrc == MDB_NOTFOUND)
            continue;
        if (mrc != 0) {
            rc = nsed_error(err, NSED_ESTORE,
                            "store %s: cannot open database %s: %s", s->dir,
                            db_name((enum store_db)i), mdb_strerror(mrc));
            goto out;
        }
        s->have_dbi[i] = 1;
    }
    if (!s->have_dbi[STORE_META]) {
        rc = nsed_error(err, NSED_ENOTFOUND, "no nsed store in %s", s->dir);
        goto out;
    }
    rc = check_version(&t, err);
    if (rc)
        goto out;
    mrc = mdb_txn_commit(t.txn);
    t.txn = NULL;
    if (mrc != 0)
        rc = nsed_error(err, NSED_ESTORE, "store %s: %s", s->dir,
                        mdb_strerror(mrc));
out:
    if (t.txn)
        mdb_txn_abort(t.txn);
    txn_release(&t);
    return rc;
}

/* LMDB maps its data file and trusts it: pages past the end of a
 * truncated file are a SIGBUS on first touch, not an error code. So the
 * file is checked against what its own meta pages say before it is
 * mapped. The layout read here is LMDB's on-disk format (version 1, as
 * written by the liblmdb this is built with): pages 0 and 1 are meta
 * pages, each a page header followed by MDB_meta. Offsets are those of
 * a 64-bit build, in host byte order, as LMDB writes them. */
#define META_PAGEHDR 16        /* MDB_page header before the meta */
#define META_MAGIC 0xBEEFC0DEu /* MDB_MAGIC */
#define META_OFF_MAGIC (META_PAGEHDR + 0)
#define META_OFF_PSIZE (META_PAGEHDR + 24)    /* mm_dbs[FREE_DBI].md_pad */
#define META_OFF_LAST_PG (META_PAGEHDR + 120) /* mm_last_pg */
#define META_OFF_TXNID (META_PAGEHDR + 128)   /* mm_txnid */
#define META_SIZE (META_PAGEHDR + 136)

typedef struct meta_view {
    int valid; /* magic matched and the page size is plausible */
    uint32_t psize;
    uint64_t last_pg, txnid;
} meta_view;

static meta_view meta_read(const unsigned char *p)
{
    meta_view m = {0};
    uint32_t magic;

    memcpy(&magic, p + META_OFF_MAGIC, sizeof magic);
    memcpy(&m.psize, p + META_OFF_PSIZE, sizeof m.psize);
    memcpy(&m.last_pg, p + META_OFF_LAST_PG, sizeof m.last_pg);
    memcpy(&m.txnid, p + META_OFF_TXNID, sizeof m.txnid);
    m.valid = magic == META_MAGIC && m.psize >= 512 && m.psize <= 65536 &&
              (m.psize & (m.psize - 1)) == 0;
    return m;
}

static int truncated_error(nsed_err *err, const char *path, uint64_t have,
                           uint64_t need)
{
    return nsed_error(err, NSED_ESTORE,
                      "store %s is truncated: %" PRIu64 " bytes, the store "
                      "needs at least %" PRIu64 "; restore it from a copy",
                      path, have, need);
}

/* 1 in *exists when dir holds an LMDB data file that can be mapped, 0
 * when it holds none (a new store). A data file shorter than its meta
 * pages say, or an empty one beside LMDB's lock file (a store was opened
 * here before, so it had content), is damage: NSED_ESTORE. A file whose
 * first page is not an LMDB meta page is left to LMDB to refuse. */
static int data_file_check(const char *dir, int *exists, nsed_err *err)
{
    char *path = join_path(dir, STORE_DATA_NAME), *lock = NULL;
    unsigned char page[META_SIZE];
    meta_view m0, m1 = {0};
    struct stat st, lst;
    uint64_t size, need;
    int fd = -1, rc = 0;

    *exists = 0;
    if (!path)
        return nsed_error(err, NSED_EINVAL, "store directory path too long: %s",
                          dir);
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
        goto out;
    size = (uint64_t)st.st_size;
    if (size == 0) {
        lock = join_path(dir, "lock.mdb");
        if (lock && stat(lock, &lst) == 0)
            rc = nsed_error(err, NSED_ESTORE,
                            "store %s is truncated: 0 bytes, but the store "
                            "was opened before (%s exists); restore it from a "
                            "copy",
                            path, lock);
        goto out;
    }
    *exists = 1;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = nsed_error(err, NSED_EIO, "cannot read %s: %s", path,
                        strerror(errno));
        goto out;
    }
    if (size < META_SIZE) {
        rc = truncated_error(err, path, size, 2 * 4096);
        goto out;
    }
    if (pread(fd, page, sizeof page, 0) != (ssize_t)sizeof page) {
        rc = nsed_error(err, NSED_EIO, "cannot read %s: %s", path,
                        strerror(errno));
        goto out;
    }
    m0 = meta_read(page);
    if (!m0.valid)
        goto out; /* not LMDB's: mdb_env_open says so (MDB_INVALID) */
    if (size < 2 * (uint64_t)m0.psize) {
        rc = truncated_error(err, path, size, 2 * (uint64_t)m0.psize);
        goto out;
    }
    if (pread(fd, page, sizeof page, (off_t)m0.psize) == (ssize_t)sizeof page)
        m1 = meta_read(page);
    /* LMDB uses the meta page with the newer transaction */
    if (m1.valid && m1.psize == m0.psize && m1.txnid > m0.txnid)
        m0 = m1;
    need = (m0.last_pg + 1) * (uint64_t)m0.psize;
    if (size < need)
        rc = truncated_error(err, path, size, need);
out:
    if (fd >= 0)
        close(fd);
    free(lock);
    free(path);
    return rc;
}

/* LMDB fsyncs its files but not the directory holding them; without this
 * a power cut soon after creating a store could lose the files' names and
 * with them every commit made so far. */
static int sync_dir(const char *dir, nsed_err *err)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = 0;

    if (fd < 0 || fsync(fd) != 0)
        rc = nsed_error(err, NSED_EIO, "cannot sync store directory %s: %s",
                        dir, strerror(errno));
    if (fd >= 0)
        close(fd);
    return rc;
}

int store_open(const char *dir, const store_opts *opts, store **out,
               nsed_err *err)
{
    unsigned flags = opts ? opts->flags : 0;
    size_t initial = opts && opts->initial_map_size ? opts->initial_map_size
                                                    : STORE_DEFAULT_MAP;
    int rdonly = (flags & STORE_RDONLY) != 0;
    unsigned envflags;
    store *s = NULL;
    struct stat st;
    int exists = 0, rc, mrc, dead = 0, network = 0;
    mdb_filehandle_t fd;

    if (!dir || !*dir || !out)
        return nsed_error(err, NSED_EINVAL, "store_open: no directory given");
    if (rdonly) {
        if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
            return nsed_error(err, NSED_ENOTFOUND,
                              "no nsed store in %s (no such directory)", dir);
    } else {
        rc = make_dirs(dir, err);
        if (rc)
            return rc;
    }
    if ((flags & STORE_FROZEN) && !rdonly)
        return nsed_error(err, NSED_EINVAL,
                          "store_open: STORE_FROZEN needs STORE_RDONLY");
    rc = check_local_fs(dir, (flags & STORE_FROZEN) != 0, &network, err);
    if (rc)
        return rc;
    rc = data_file_check(dir, &exists, err);
    if (rc)
        return rc;
    if (rdonly && !exists)
        return nsed_error(err, NSED_ENOTFOUND, "no nsed store in %s", dir);
    if (rdonly || (flags & STORE_SHARED)) {
        rc = check_not_own_writer(dir, err);
        if (rc)
            return rc;
    }

    s = calloc(1, sizeof *s);
    if (!s)
        return nsed_error(err, NSED_ENOMEM, "out of memory");
    s->lock_fd = -1;
    s->flags = flags;
    s->dir = strdup(dir);
    if (!s->dir) {
        rc = nsed_error(err, NSED_ENOMEM, "out of memory");
        goto out;
    }
    if (!rdonly && !(flags & STORE_SHARED)) {
        rc = lock_take(s, err);
        if (rc)
            goto out;
    }

    mrc = mdb_env_create(&s->env);
    if (mrc != 0) {
        s->env = NULL;
        rc = nsed_error(err, NSED_ESTORE, "store %s: %s", dir,
                        mdb_strerror(mrc));
        goto out;
    }
    mrc = mdb_env_set_maxdbs(s->env, STORE_DB_COUNT);
    /* A new store starts at the requested size; an existing one keeps the
     * size LMDB recorded (a previous run may have grown it), raised below
     * to the requested size if that is larger. Readers adopt the writer's. */
    if (mrc == 0 && !rdonly && !exists)
        mrc = mdb_env_set_mapsize(s->env, round_map(initial));
    if (mrc != 0) {
        rc = nsed_error(err, NSED_ESTORE, "store %s: %s", dir,
                        mdb_strerror(mrc));
        goto out;
    }
    envflags = rdonly ? MDB_RDONLY : 0;
    /* a frozen store on a network file system: no writer can exist there
     * (see STORE_FROZEN), and LMDB's lock file would not work */
    if (network)
        envflags |= MDB_NOLOCK;
    if (flags & STORE_NOSYNC)
        envflags |= MDB_NOSYNC;
    mrc = mdb_env_open(s->env, dir, envflags, 0644);
    if (mrc != 0) {
        rc = nsed_error(err, NSED_ESTORE, "cannot open store %s: %s", dir,
                        mdb_strerror(mrc));
        goto out;
    }
    if (!rdonly && exists && store_map_size(s) < round_map(initial)) {
        mrc = mdb_env_set_mapsize(s->env, round_map(initial));
        if (mrc != 0) {
            rc = nsed_error(err, NSED_ESTORE, "store %s: cannot set the map "
                            "size: %s", dir, mdb_strerror(mrc));
            goto out;
        }
    }
    /* A process killed inside a read transaction leaves its reader slot
     * taken while other processes keep the lock file alive; such slots pin
     * old pages (the file grows) and eventually exhaust the table. */
    mrc = mdb_reader_check(s->env, &dead);
    if (mrc != 0) {
        rc = nsed_error(err, NSED_ESTORE, "store %s: reader check failed: %s",
                        dir, mdb_strerror(mrc));
        goto out;
    }
    /* LMDB leaves its data file descriptor inheritable; a program the
     * runner executes has no business holding the store open. */
    if (mdb_env_get_fd(s->env, &fd) == 0 && fd >= 0) {
        int fdflags = fcntl(fd, F_GETFD);

        if (fdflags >= 0)
            fcntl(fd, F_SETFD, fdflags | FD_CLOEXEC);
    }
    rc = rdonly ? init_reader(s, err) : write_loop(s, init_writer, NULL, err);
    if (rc)
        goto out;
    if (!rdonly && !exists && !(flags & STORE_NOSYNC)) {
        rc = sync_dir(dir, err);
        if (rc)
            goto out;
    }
    *out = s;
    s = NULL;
out:
    store_close(s);
    return rc;
}

void store_close(store *s)
{
    if (!s)
        return;
    assert(!s->in_txn);
    if (s->env)
        mdb_env_close(s->env);
    ZSTD_freeCCtx(s->zc);
    ZSTD_freeDCtx(s->zd);
    free(s->pack_buf);
    if (s->lock_fd >= 0) {
        /* Clear the pid so that it cannot be mistaken for a holder later;
         * closing the descriptor is what releases the lock. */
        int trc = ftruncate(s->lock_fd, 0);

        (void)trc; /* a stale pid only affects a message; the lock goes */
        close(s->lock_fd);
    }
    free(s->dir);
    free(s);
}

void store_u64_key(uint64_t v, unsigned char out[8])
{
    for (int i = 7; i >= 0; i--) {
        out[i] = (unsigned char)(v & 0xFF);
        v >>= 8;
    }
}

uint64_t store_key_u64(const unsigned char in[8])
{
    uint64_t v = 0;

    for (int i = 0; i < 8; i++)
        v = (v << 8) | in[i];
    return v;
}

/* ---- manifest ---------------------------------------------------------- */

struct bind_ctx {
    const store_manifest *m;
    int allow_change;
    const char *now; /* one timestamp for every replay */
};

/* The workflow fields that describe the current binding. */
static int set_workflow_fields(cJSON *man, const store_manifest *m,
                               nsed_err *err)
{
    cJSON *resolved, *ovs = cJSON_CreateArray();
    int rc;

    /* the overrides the hash includes, as the user gave them */
    for (size_t i = 0; ovs && i < m->noverrides; i++)
        if (!cJSON_AddItemToArray(ovs, cJSON_CreateString(m->overrides[i]))) {
            cJSON_Delete(ovs);
            ovs = NULL;
        }
    if (!ovs || (rc = json_set_item(man, "overrides", ovs)))
        return nsed_error(err, NSED_ENOMEM, "out of memory");

    if (m->resolved_json) {
        resolved = cJSON_Parse(m->resolved_json);
        if (!resolved)
            return nsed_error(err, NSED_EINVAL,
                              "resolved workflow variables are not valid JSON");
    } else {
        resolved = cJSON_CreateNull();
    }
    if ((rc = json_set_str(man, "workflow_hash", m->workflow_hash)) ||
        (rc = json_set_str(man, "workflow_name", m->workflow_name)) ||
        (rc = json_set_str(man, "workflow_canonical",
                           m->workflow_canonical)) ||
        (rc = json_set_item(man, "resolved", resolved)))
        return nsed_error(err, rc, "out of memory");
    return 0;
}

static int history_add(cJSON *man, const struct bind_ctx *c, const char *event,
                       const char *old_hash, nsed_err *err)
{
    cJSON *hist = cJSON_GetObjectItemCaseSensitive(man, "history");
    cJSON *e = NULL;
    int rc = 0;

    if (!cJSON_IsArray(hist)) {
        hist = cJSON_CreateArray();
        if ((rc = json_set_item(man, "history", hist)))
            goto out;
    }
    e = cJSON_CreateObject();
    if (!e || (rc = json_add_str(e, "at", c->now)) ||
        (rc = json_add_str(e, "event", event)) ||
        (rc = json_add_str(e, "command_line", c->m->command_line)) ||
        (rc = json_add_str(e, "git_commit", c->m->git_commit))) {
        rc = NSED_ENOMEM;
        goto out;
    }
    if (old_hash && ((rc = json_add_str(e, "old_hash", old_hash)) ||
                     (rc = json_add_str(e, "new_hash", c->m->workflow_hash))))
        goto out;
    if (!cJSON_AddItemToArray(hist, e)) {
        rc = NSED_ENOMEM;
        goto out;
    }
    e = NULL;
    while (cJSON_GetArraySize(hist) > STORE_HISTORY_MAX)
        cJSON_DeleteItemFromArray(hist, 0);
out:
    cJSON_Delete(e);
    if (rc)
        return nsed_error(err, rc, "out of memory");
    return 0;
}

static cJSON *new_manifest(const struct bind_ctx *c, nsed_err *err, int *rc)
{
    cJSON *man = cJSON_CreateObject();
    char seed[24];

    snprintf(seed, sizeof seed, "%" PRIu64, c->m->seed);
    if (!man || json_add_str(man, "git_commit", c->m->git_commit) ||
        json_add_str(man, "command_line", c->m->command_line) ||
        json_add_str(man, "seed", seed) ||
        json_add_str(man, "nsed_version", NSED_VERSION) ||
        !cJSON_AddNumberToObject(man, "schema_version", STORE_SCHEMA_VERSION) ||
        json_add_str(man, "created_at", c->now)) {
        *rc = nsed_error(err, NSED_ENOMEM, "out of memory");
        cJSON_Delete(man);
        return NULL;
    }
    *rc = set_workflow_fields(man, c->m, err);
    if (!*rc && c->m->shard_count) {
        cJSON *sh = cJSON_CreateObject();

        if (!sh || !cJSON_AddNumberToObject(sh, "index", c->m->shard_index) ||
            !cJSON_AddNumberToObject(sh, "count", c->m->shard_count) ||
            !cJSON_AddItemToObject(man, "shard", sh)) {
            cJSON_Delete(sh);
            *rc = nsed_error(err, NSED_ENOMEM, "out of memory");
        }
    }
    if (*rc) {
        cJSON_Delete(man);
        return NULL;
    }
    return man;
}

/* The recorded shard must be the one asked for: a shard store holds only
 * its shard's questions, so running it as another shard (or as the whole
 * run) would silently run the wrong questions. */
static int check_shard(const cJSON *man, const store_manifest *m,
                       const char *dir, nsed_err *err)
{
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(man, "shard");
    const cJSON *k = cJSON_GetObjectItemCaseSensitive(sh, "index");
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(sh, "count");

    if (!sh) {
        if (!m->shard_count)
            return 0;
        return nsed_error(err, NSED_EMISMATCH,
                          "store %s is not a shard (it was made without "
                          "--shard); --shard %" PRIu32 "/%" PRIu32
                          " needs a store directory of its own",
                          dir, m->shard_index, m->shard_count);
    }
    if (!cJSON_IsNumber(k) || !cJSON_IsNumber(n) || k->valuedouble < 0 ||
        n->valuedouble < 1 || k->valuedouble >= n->valuedouble)
        return nsed_error(err, NSED_ESTORE,
                          "store %s: the recorded manifest is damaged (its "
                          "\"shard\" is not an index and a count)",
                          dir);
    if (m->shard_count && (double)m->shard_index == k->valuedouble &&
        (double)m->shard_count == n->valuedouble)
        return 0;
    if (!m->shard_count)
        return nsed_error(err, NSED_EMISMATCH,
                          "store %s holds shard %.0f/%.0f of a run; give "
                          "--shard %.0f/%.0f (or auto/%.0f) to run or "
                          "ingest into it",
                          dir, k->valuedouble, n->valuedouble, k->valuedouble,
                          n->valuedouble, n->valuedouble);
    return nsed_error(err, NSED_EMISMATCH,
                      "store %s holds shard %.0f/%.0f of a run; this command "
                      "asks for shard %" PRIu32 "/%" PRIu32
                      "; each shard needs a store directory of its own",
                      dir, k->valuedouble, n->valuedouble, m->shard_index,
                      m->shard_count);
}

/* "3f2a9c0d1b2e…": enough of a hash to tell two apart in a message. */
static void short_hash(const char *h, char out[32])
{
    snprintf(out, 32, "%.12s%s", h, strlen(h) > 12 ? "\xE2\x80\xA6" : "");
}

static int had_change(const cJSON *man)
{
    const cJSON *hist = cJSON_GetObjectItemCaseSensitive(man, "history");
    const cJSON *e;

    cJSON_ArrayForEach(e, hist) {
        if (strcmp(json_str(e, "event", ""), "workflow_change") == 0)
            return 1;
    }
    return 0;
}

/* The time now, UTC, as the manifest records times (32 bytes). */
static int utc_now(char now[32], nsed_err *err)
{
    struct tm tm;
    time_t tt = time(NULL);

    if (!gmtime_r(&tt, &tm) ||
        strftime(now, 32, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        return nsed_error(err, NSED_EIO, "cannot format the current time");
    return 0;
}

/* Put man as the manifest (inside a write transaction). */
static int manifest_write(store_txn *t, const cJSON *man, nsed_err *err)
{
    char *text = cJSON_PrintUnformatted(man);
    int rc;

    if (!text)
        return nsed_error(err, NSED_ENOMEM, "out of memory");
    rc = store_put(t, STORE_META, STORE_KEY_MANIFEST,
                   strlen(STORE_KEY_MANIFEST), text, strlen(text));
    free(text);
    if (rc)
        return nsed_error(err, rc, "store %s: cannot write the manifest",
                          t->s->dir);
    return 0;
}

static int bind_fn(store_txn *t, void *arg, nsed_err *err)
{
    const struct bind_ctx *c = arg;
    const char *dir = t->s->dir;
    const void *val;
    size_t vlen;
    cJSON *man = NULL;
    int rc;

    /* a call cache (nsed run --cache) is written by many runs at once: it
     * must never become one run's store */
    if (store_get(t, STORE_META, STORE_KEY_CALL_CACHE,
                  strlen(STORE_KEY_CALL_CACHE), &val, &vlen) == 0)
        return nsed_error(err, NSED_EINVAL,
                          "%s is a call cache (nsed run --cache DIR), not a "
                          "run store: give --store another directory",
                          dir);
    rc = store_get(t, STORE_META, STORE_KEY_MANIFEST,
                   strlen(STORE_KEY_MANIFEST), &val, &vlen);
    if (rc == NSED_ENOTFOUND) {
        man = new_manifest(c, err, &rc);
        if (!man)
            goto out;
        rc = history_add(man, c, "open", NULL, err);
        if (rc)
            goto out;
    } else if (rc) {
        rc = nsed_error(err, rc, "store %s: cannot read the manifest", dir);
        goto out;
    } else {
        const cJSON *h;
        char *old = NULL;

        man = cJSON_ParseWithLength(val, vlen);
        h = cJSON_GetObjectItemCaseSensitive(man, "workflow_hash");
        if (!cJSON_IsObject(man) || !cJSON_IsString(h)) {
            rc = nsed_error(err, NSED_ESTORE,
                            "store %s: the recorded manifest is damaged", dir);
            goto out;
        }
        rc = check_shard(man, c->m, dir, err);
        if (rc)
            goto out;
        /* as check_version recorded it (a version 1 store is upgraded) */
        if (json_set_item(man, "schema_version",
                          cJSON_CreateNumber(STORE_SCHEMA_VERSION))) {
            rc = nsed_error(err, NSED_ENOMEM, "out of memory");
            goto out;
        }
        if (strcmp(h->valuestring, c->m->workflow_hash) == 0) {
            rc = history_add(man, c, "open", NULL, err);
            if (rc)
                goto out;
        } else if (!c->allow_change) {
            char o[32], n[32];

            short_hash(h->valuestring, o);
            short_hash(c->m->workflow_hash, n);
            rc = nsed_error(err, NSED_EMISMATCH,
                            "store %s %s workflow %s; this workflow hashes to "
                            "%s. Re-run with --allow-workflow-change to "
                            "continue anyway (the change is recorded in the "
                            "manifest).", dir,
                            had_change(man) ? "is bound to" : "was created with",
                            o, n);
            goto out;
        } else {
            old = strdup(h->valuestring);
            if (!old) {
                rc = nsed_error(err, NSED_ENOMEM, "out of memory");
                goto out;
            }
            rc = history_add(man, c, "workflow_change", old, err);
            free(old);
            if (rc)
                goto out;
            rc = set_workflow_fields(man, c->m, err);
            if (rc)
                goto out;
        }
    }
    rc = manifest_write(t, man, err);
out:
    cJSON_Delete(man);
    return rc;
}

int store_bind_manifest(store *s, const store_manifest *m, int allow_change,
                        nsed_err *err)
{
    struct bind_ctx c = {m, allow_change, NULL};
    char now[32];

    if (!s || !m || !m->workflow_hash || !*m->workflow_hash)
        return nsed_error(err, NSED_EINVAL,
                          "store_bind_manifest: no workflow hash given");
    if (utc_now(now, err))
        return NSED_EIO;
    c.now = now;
    return store_write(s, bind_fn, &c, err);
}

struct manifest_out {
    char *text;
};

static int manifest_get_fn(store_txn *t, void *arg, nsed_err *err)
{
    struct manifest_out *o = arg;
    const void *val;
    size_t vlen;
    int rc;

    rc = store_get(t, STORE_META, STORE_KEY_MANIFEST,
                   strlen(STORE_KEY_MANIFEST), &val, &vlen);
    if (rc == NSED_ENOTFOUND)
        return nsed_error(err, rc, "store %s has no manifest (it was never "
                          "bound to a workflow)", t->s->dir);
    if (rc)
        return nsed_error(err, rc, "store %s: cannot read the manifest",
                          t->s->dir);
    o->text = malloc(vlen + 1);
    if (!o->text)
        return nsed_error(err, NSED_ENOMEM, "out of memory");
    memcpy(o->text, val, vlen);
    o->text[vlen] = '\0';
    return 0;
}

int store_manifest_json(store *s, char **out, nsed_err *err)
{
    struct manifest_out o = {NULL};
    int rc;

    if (!out)
        return nsed_error(err, NSED_EINVAL, "store_manifest_json: no output");
    rc = store_read(s, manifest_get_fn, &o, err);
    if (rc) {
        free(o.text);
        return rc;
    }
    *out = o.text;
    return 0;
}

int store_manifest_put(store_txn *t, const char *json, const char *event,
                       const char *command_line, nsed_err *err)
{
    store_manifest m = {0};
    struct bind_ctx c = {&m, 0, NULL};
    cJSON *man = NULL;
    char now[32];
    int rc;

    if (!t || !t->write || !json || !event)
        return nsed_error(err, NSED_EINVAL, "store_manifest_put: bad call");
    man = cJSON_Parse(json);
    if (!cJSON_IsObject(man) ||
        !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(man,
                                                         "workflow_hash"))) {
        rc = nsed_error(err, NSED_EINVAL,
                        "store %s: the manifest to write is not a JSON object "
                        "with a workflow hash",
                        t->s->dir);
        goto out;
    }
    rc = utc_now(now, err);
    if (rc)
        goto out;
    m.command_line = command_line;
    c.now = now;
    if ((!cJSON_IsString(cJSON_GetObjectItemCaseSensitive(man, "created_at")) &&
         (rc = json_set_str(man, "created_at", now))) ||
        (rc = json_set_str(man, "command_line", command_line)) ||
        (rc = json_set_str(man, "nsed_version", NSED_VERSION)) ||
        (rc = json_set_item(man, "schema_version",
                            cJSON_CreateNumber(STORE_SCHEMA_VERSION)))) {
        rc = nsed_error(err, rc, "out of memory");
        goto out;
    }
    cJSON_DeleteItemFromObjectCaseSensitive(man, "history");
    rc = history_add(man, &c, event, NULL, err);
    if (rc)
        goto out;
    rc = manifest_write(t, man, err);
out:
    cJSON_Delete(man);
    return rc;
}

int store_db_stat(store_txn *t, enum store_db db, store_db_stats *out)
{
    int rc = txn_check(t, db);
    MDB_stat st;
    int mrc;

    if (rc)
        return rc;
    if (!out)
        return NSED_EINVAL;
    if (!t->s->have_dbi[db]) {
        memset(out, 0, sizeof *out);
        return 0;
    }
    mrc = mdb_stat(t->txn, t->s->dbi[db], &st);
    if (mrc != 0)
        return txn_fail(t, mrc);
    out->entries = st.ms_entries;
    out->pages = st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages;
    out->bytes = out->pages * st.ms_psize;
    return 0;
}

int store_env_stat(store_txn *t, size_t *page_size, size_t *used_pages)
{
    MDB_envinfo info;
    MDB_stat st;

    if (!t || !t->txn || !page_size || !used_pages)
        return NSED_EINVAL;
    if (mdb_env_info(t->s->env, &info) != 0 ||
        mdb_env_stat(t->s->env, &st) != 0)
        return NSED_ESTORE;
    *page_size = st.ms_psize;
    *used_pages = info.me_last_pgno + 1;
    return 0;
}
