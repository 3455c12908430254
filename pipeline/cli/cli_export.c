/* cli_export.c -- `nsed export --store DIR [--format F] [--summary] [-o FILE]`
 */
#include "pipeline/base/atomic.h"
#include "pipeline/cli/cli.h"
#include "pipeline/cli/cli_export.h"
#include "pipeline/questions/questions.h"
#include "pipeline/runner/runner_report.h"
#include "store/store_keys.h"

#include <cjson/cJSON.h>

#include <errno.h>
#include <math.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char export_usage[] =
    "usage: nsed export --store DIR [--format FORMAT] [--only-correct]\n"
    "                   [--min-conviction X] [--summary] [-o FILE]\n"
    "\n"
    "Write one JSON object per finished question, in question order (the\n"
    "fields are described in docs/results.md); its \"status\" is done,\n"
    "degraded or failed (with the reason in \"failure\"). Questions still\n"
    "running or incomplete are left out; `nsed status` counts them.\n"
    "Opens the store read-only, so it can run beside a running writer.\n"
    "\n"
    "  -s, --store DIR   run store directory\n"
    "  -f, --format FORMAT\n"
    "                    results (the default: the records above), traces\n"
    "                    (every round of every question: proposals, the\n"
    "                    evaluations given and received, the votes, the\n"
    "                    stop decision and the messages of every call),\n"
    "                    sft (chat rows of the final answer), dpo (chosen\n"
    "                    and rejected proposals, TRL's conversational\n"
    "                    format) or csv (one row per result, a header row)\n"
    "      --only-correct\n"
    "                    sft, dpo: only questions whose final answer matches\n"
    "                    the reference (without --min-conviction, questions\n"
    "                    without a reference are left out)\n"
    "      --min-conviction X\n"
    "                    sft, dpo: keep a question without a reference only\n"
    "                    when its conviction (the last round winner's share\n"
    "                    of the vote) is at least X, in [0, 1]\n"
    "      --summary     instead of the rows, one JSON object: the run's\n"
    "                    workflow hash, questions, and NSED against each\n"
    "                    baseline (paired intervals, McNemar, per tag)\n"
    "  -o, --output FILE write to FILE (replaced atomically) instead of\n"
    "                    standard output\n"
    "  -h, --help        this text\n";

typedef struct export_ctx {
    store_txn *txn;
    FILE *out;
    const char *path; /* -o FILE, or NULL for standard output */
    enum export_format format;
    const export_filter *filter;
    const export_run *run;
    size_t n;
    int rc;
    nsed_err *err;
} export_ctx;

/* A result record is exported only when it is what the runner wrote: one
 * line of JSON, an object whose "id" is the question's. Anything else is
 * damage, reported with the record's name rather than copied out (or
 * skipped) silently. */
static int check_result(export_ctx *x, const char *qid, const void *val,
                        size_t vlen)
{
    char what[STORE_KEY_MAX + 32];
    const char *why = NULL;
    cJSON *j = NULL;

    if (memchr(val, '\n', vlen))
        why = "it spans more than one line";
    else if (!(j = cJSON_ParseWithLength(val, vlen)) || !cJSON_IsObject(j))
        why = "not a JSON object";
    else if (!cJSON_IsString(cJSON_GetObjectItemCaseSensitive(j, "id")) ||
             strcmp(cJSON_GetObjectItemCaseSensitive(j, "id")->valuestring,
                    qid) != 0)
        why = "its id is not the question's";
    cJSON_Delete(j);
    if (!why)
        return 0;
    snprintf(what, sizeof what, "the result of %s", qid);
    return store_corrupt(x->err, x->txn, STORE_RESULTS, what, why);
}

static int write_out(export_ctx *x, const void *p, size_t len);

static int export_question(export_ctx *x, const question *q)
{
    const void *val;
    size_t vlen;
    store_key key;
    int rc;

    rc = store_keys_result(q->id, &key);
    if (!rc)
        rc = store_get(x->txn, STORE_RESULTS, key.bytes, key.len, &val,
                       &vlen);
    if (rc == NSED_ENOTFOUND)
        return 0;
    if (rc) {
        x->rc = nsed_error(x->err, rc, "store %s: cannot read the result of %s",
                           store_txn_dir(x->txn), q->id);
        return 1;
    }
    rc = check_result(x, q->id, val, vlen);
    if (rc) {
        x->rc = rc;
        return 1;
    }
    if (x->format != EXPORT_FMT_RESULTS) {
        bool any;
        buf rows;

        buf_init(&rows, (size_t)1 << 31);
        rc = export_rows(x->run, x->format, x->filter, x->txn, q->id, val, vlen,
                         &rows, x->err);
        any = rows.len > 0;
        if (!rc && any)
            rc = write_out(x, rows.ptr, rows.len);
        buf_release(&rows);
        if (rc) {
            x->rc = rc;
            return 1;
        }
        if (x->rc)
            return 1;
        x->n += any;
        return 0;
    }
    if (write_out(x, val, vlen) || write_out(x, "\n", 1))
        return 1;
    x->n++;
    return 0;
}

static int export_one(const question *q, uint64_t seq, void *arg)
{
    export_ctx *x = arg;
    size_t mark = store_txn_mark(x->txn);
    int rc = export_question(x, q);

    (void)seq;
    /* what this question read is written out: its decompressed copies
     * go, so that an export holds one question's, not the store's */
    store_txn_release(x->txn, mark);
    return rc;
}

/* Write len bytes of p; 0, or 1 with x->rc set (0 for a reader that went
 * away). */
static int write_out(export_ctx *x, const void *p, size_t len)
{
    if (fwrite(p, 1, len, x->out) != len) {
        /* A reader that stopped early (| head) is not an error. */
        if (errno == EPIPE)
            x->rc = 0;
        else if (errno == ENOSPC || errno == EDQUOT)
            x->rc = nsed_error(x->err, NSED_EIO, "disk full: %s",
                               x->path ? x->path : "standard output");
        else
            x->rc = nsed_error(x->err, NSED_EIO, "write failed: %s",
                               strerror(errno));
        return 1;
    }
    return 0;
}

static int export_fn(store_txn *txn, void *arg, nsed_err *err)
{
    export_ctx *x = arg;
    int rc;

    (void)err;
    x->txn = txn;
    rc = questions_scan(txn, 0, export_one, x, x->err);
    if (x->rc)
        return x->rc;
    return rc == 1 ? 0 : rc; /* 1: export_one stopped early on purpose */
}

/* The summary of --summary: {"workflow_hash", "questions", "baselines"}
 * (runner_baselines.h), one line, to out. */
static int export_summary(store *st, FILE *out, nsed_err *err)
{
    runner_report *r = NULL;
    cJSON *o = NULL;
    char *text = NULL;
    int rc = runner_report_build(st, &r, err);

    if (rc)
        goto out;
    rc = nsed_error(err, NSED_ENOMEM, "out of memory");
    if (!(o = cJSON_CreateObject()) ||
        !(r->workflow_hash
              ? cJSON_AddStringToObject(o, "workflow_hash", r->workflow_hash)
              : cJSON_AddNullToObject(o, "workflow_hash")) ||
        !cJSON_AddNumberToObject(o, "questions", (double)r->total) ||
        runner_baselines_json(r->baselines, o) ||
        !(text = cJSON_PrintUnformatted(o)))
        goto out;
    rc = 0;
    if (fprintf(out, "%s\n", text) < 0)
        rc = nsed_error(err, NSED_EIO, "write failed: %s", strerror(errno));
out:
    free(text);
    cJSON_Delete(o);
    runner_report_free(r);
    return rc;
}

int cli_export(int argc, char **argv)
{
    static const struct option opts[] = {
        {"store", required_argument, NULL, 's'},
        {"output", required_argument, NULL, 'o'},
        {"summary", no_argument, NULL, 'S'},
        {"format", required_argument, NULL, 'f'},
        {"only-correct", no_argument, NULL, 'C'},
        {"min-conviction", required_argument, NULL, 'M'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    cli_opts_seen seen = {0};
    const char *dir = NULL, *path = NULL;
    atomic_file *file = NULL;
    store_opts so = {.flags = STORE_RDONLY};
    store *st = NULL;
    nsed_err err = {0};
    export_ctx x = {.err = &err};
    export_filter filter = {0};
    export_run run = {0};
    bool summary = false;
    int c, rc;
    char *end;

    optind = 1;
    while ((c = cli_getopt(&seen, argc, argv, "s:o:f:h", opts)) != -1) {
        switch (c) {
        case 's':
            dir = optarg;
            break;
        case 'o':
            path = optarg;
            break;
        case 'S':
            summary = true;
            break;
        case 'f':
            if (export_format_parse(optarg, &x.format))
                return cli_usage_error("export",
                                       "--format must be results, traces, "
                                       "sft, dpo or csv, not '%s'",
                                       optarg);
            break;
        case 'C':
            filter.only_correct = true;
            break;
        case 'M':
            filter.min_conviction = strtod(optarg, &end);
            if (end == optarg || *end || !isfinite(filter.min_conviction) ||
                filter.min_conviction < 0 || filter.min_conviction > 1)
                return cli_usage_error("export",
                                       "--min-conviction must be "
                                       "a number in [0, 1], not '%s'",
                                       optarg);
            filter.has_min_conviction = true;
            break;
        case 'h':
            fputs(export_usage, stdout);
            return 0;
        default:
            return cli_usage_error("export", "bad option");
        }
    }
    if (!dir)
        return cli_usage_error("export", "--store DIR is required");
    if (optind != argc)
        return cli_usage_error("export", "unexpected argument '%s'",
                               argv[optind]);
    if (summary && x.format != EXPORT_FMT_RESULTS)
        return cli_usage_error("export", "--summary takes no --format");
    if ((filter.only_correct || filter.has_min_conviction) &&
        x.format != EXPORT_FMT_SFT && x.format != EXPORT_FMT_DPO)
        return cli_usage_error("export",
                               "--only-correct and "
                               "--min-conviction need --format sft or dpo");
    rc = cli_open_existing(dir, &so, &st, &err);
    if (rc)
        goto out;
    if (x.format != EXPORT_FMT_RESULTS) {
        rc = export_run_load(st, x.format != EXPORT_FMT_CSV, &run, &err);
        if (rc)
            goto out;
    }
    x.run = &run;
    x.filter = &filter;
    x.out = stdout;
    if (path) {
        rc = atomic_file_open(path, &file, &err);
        if (rc)
            goto out;
        x.out = atomic_file_stream(file);
        x.path = path;
    }
    if (summary) {
        rc = export_summary(st, x.out, &err);
    } else if (x.format == EXPORT_FMT_CSV) {
        buf head;

        buf_init(&head, 4096);
        rc = export_csv_header(&head);
        if (rc || write_out(&x, head.ptr, head.len))
            rc = rc ? rc : x.rc;
        buf_release(&head);
        if (!rc)
            rc = store_read(st, export_fn, &x, &err);
    } else
        rc = store_read(st, export_fn, &x, &err);
    if (path) {
        if (!rc) {
            rc = atomic_file_commit(file, &err);
            if (!rc && summary)
                fprintf(stderr, "nsed export: summary written to %s\n", path);
            else if (!rc)
                fprintf(stderr, "nsed export: %zu %s written to %s\n", x.n,
                        x.format == EXPORT_FMT_RESULTS ? "results" : "rows",
                        path);
        } else {
            atomic_file_abort(file);
        }
        file = NULL;
    } else if (fflush(stdout) != 0 && !rc) {
        rc = nsed_error(&err, NSED_EIO, "write failed: %s", strerror(errno));
    }
out:
    atomic_file_abort(file);
    export_run_release(&run);
    store_close(st);
    return rc ? cli_fail(rc, &err) : 0;
}
