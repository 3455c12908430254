/* cli_compare.c -- `nsed compare STORE_A STORE_B [...] [--json]`
 *
 * Prints the comparison the runner computes (runner_compare.h), as its
 * JSON or as text read from that JSON, so both forms show the same
 * figures. */
#include "pipeline/base/json.h"
#include "pipeline/cli/cli.h"
#include "pipeline/runner/runner_compare.h"

#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define COMPARE_MAX 26 /* stores: one letter each, A..Z */

static const char compare_usage[] =
    "usage: nsed compare STORE_A STORE_B [STORE...] [--json]\n"
    "\n"
    "Compare runs on the same questions: every store after the first\n"
    "against the first. Questions are paired by id, over those judged in\n"
    "both (a reference, stopped by a rule; how many were in one store only\n"
    "or not judged is shown). Per comparison: the accuracy of each, the\n"
    "paired difference (B - A) with a 95% interval (Newcombe's hybrid\n"
    "score) and an exact McNemar p, what the paired questions cost each\n"
    "(USD, tokens, mean rounds), the same per tag, and whether the\n"
    "workflows differ (and in which top-level keys). Per store: the\n"
    "workflow name and hash, results, accuracy, cost, tokens, network\n"
    "calls and ledger hits. Opens the stores read-only, so it can run\n"
    "beside running writers.\n"
    "\n"
    "  -j, --json   one JSON object instead of text (docs/cli.md)\n"
    "  -h, --help   this text\n"
    "\n"
    "Exit status: 0 success, 1 runtime failure, 2 usage, a store missing\n"
    "or without results.\n";

static double jn(const cJSON *o, const char *key)
{
    return json_num(o, key, 0);
}

static void print_store(const cJSON *s, char letter)
{
    const cJSON *calls = cJSON_GetObjectItemCaseSensitive(s, "calls");

    printf("store %c:    %s: workflow %s (hash %.16s), %.0f questions, %.0f "
           "results, %.0f judged\n",
           letter, json_str(s, "store", "?"),
           json_str(s, "workflow_name", "(unnamed)"),
           json_str(s, "workflow_hash", "-"), jn(s, "questions"),
           jn(s, "results"), jn(s, "judged"));
    printf("            accuracy %.1f%% (%.0f/%.0f), $%.4f, %.0f tokens, "
           "%.0f network calls (%.0f failed, %.0f retries), %.0f ledger "
           "hits, %.2f rounds on average",
           100 * jn(s, "accuracy"), jn(s, "correct"), jn(s, "judged"),
           jn(s, "cost_usd"), jn(s, "tokens"), jn(calls, "network"),
           jn(calls, "failed"), jn(calls, "retries"), jn(calls, "ledger_hits"),
           jn(s, "rounds_mean"));
    if (jn(s, "workflow_changes") > 0)
        printf("\n            %.0f workflow change(s) recorded "
               "(--allow-workflow-change): some results may come from an "
               "earlier workflow than this hash",
               jn(s, "workflow_changes"));
    printf("\n");
}

static void print_workflow(const cJSON *c)
{
    const cJSON *keys =
        cJSON_GetObjectItemCaseSensitive(c, "workflow_keys_differ");
    const cJSON *k;
    int any = 0;

    if (json_bool(c, "same_workflow", false)) {
        printf("            same workflow\n");
        return;
    }
    printf("            workflows differ");
    cJSON_ArrayForEach(k, keys) {
        printf("%s %s", any ? "," : " in", k->valuestring);
        any = 1;
    }
    printf("\n");
}

static void print_comparison(const cJSON *c, char x)
{
    const cJSON *fa = cJSON_GetObjectItemCaseSensitive(c, "first_paired");
    const cJSON *fb = cJSON_GetObjectItemCaseSensitive(c, "other_paired");
    const cJSON *t;
    double n = jn(c, "paired");

    printf("%c vs A:\n", x);
    print_workflow(c);
    printf("            paired %.0f questions (only in A %.0f, only in %c "
           "%.0f, not judged in both %.0f)\n",
           n, jn(c, "only_first"), x, jn(c, "only_other"), jn(c, "unjudged"));
    if (n <= 0) {
        printf("            no question is judged in both stores\n");
        return;
    }
    printf("            accuracy A %.1f%% (%.0f/%.0f), %c %.1f%% (%.0f/%.0f)\n",
           100 * jn(c, "first_accuracy"), jn(c, "first_correct"), n, x,
           100 * jn(c, "other_accuracy"), jn(c, "other_correct"), n);
    printf("            %c - A: %+.1f points [95%% %+.1f, %+.1f], McNemar p "
           "%.3g (both %.0f, A only %.0f, %c only %.0f, neither %.0f)\n",
           x, 100 * jn(c, "diff"), 100 * jn(c, "ci95_lo"),
           100 * jn(c, "ci95_hi"), jn(c, "mcnemar_p"), jn(c, "a"), jn(c, "b"),
           x, jn(c, "c"), jn(c, "d"));
    printf("            on these questions: A $%.4f, %.0f tokens, %.2f rounds; "
           "%c $%.4f, %.0f tokens, %.2f rounds\n",
           jn(fa, "cost_usd"), jn(fa, "tokens"), jn(fa, "rounds_mean"), x,
           jn(fb, "cost_usd"), jn(fb, "tokens"), jn(fb, "rounds_mean"));
    cJSON_ArrayForEach(t, cJSON_GetObjectItemCaseSensitive(c, "tags")) {
        double tn = jn(t, "n");

        printf("%s %s: n %.0f, A %.1f%%, %c %.1f%%, %c - A %+.1f points\n",
               t == cJSON_GetObjectItemCaseSensitive(c, "tags")->child
                   ? "  by tag:  "
                   : "           ",
               t->string, tn, tn > 0 ? 100 * jn(t, "first_correct") / tn : 0, x,
               tn > 0 ? 100 * jn(t, "other_correct") / tn : 0, x,
               100 * jn(t, "diff"));
    }
}

static void print_text(const cJSON *o)
{
    const cJSON *e;
    char x = 'A';

    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(o, "stores"))
        print_store(e, x++);
    x = 'B';
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(o, "comparisons"))
        print_comparison(e, x++);
}

/* 1 when dirs a and b are the same directory. */
static int same_dir(const char *a, const char *b)
{
    struct stat sa, sb;

    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

/* 1 when st[i] is the handle of an earlier entry too. */
static int earlier_same(store *const *st, size_t i)
{
    for (size_t k = 0; k < i; k++)
        if (st[k] == st[i])
            return 1;
    return 0;
}

/* Open dirs[i] into st[i]: a directory given before shares its handle, as
 * LMDB must not open one environment twice in a process. */
static int open_store(const char *dir, char **dirs, int i, store **st,
                      const store_opts *so, nsed_err *err)
{
    for (int k = 0; k < i; k++)
        if (same_dir(dirs[k], dir)) {
            st[i] = st[k];
            return 0;
        }
    return cli_open_existing(dir, so, &st[i], err);
}

int cli_compare(int argc, char **argv)
{
    static const struct option opts[] = {
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    cli_opts_seen seen = {0};
    store_opts so = {.flags = STORE_RDONLY};
    store *st[COMPARE_MAX] = {0};
    size_t n = 0;
    nsed_err err = {0};
    cJSON *o = NULL;
    char *text = NULL;
    int json = 0, c, rc = 0;

    optind = 1;
    while ((c = cli_getopt(&seen, argc, argv, "jh", opts)) != -1) {
        switch (c) {
        case 'j':
            json = 1;
            break;
        case 'h':
            fputs(compare_usage, stdout);
            return 0;
        default:
            return cli_usage_error("compare", "bad option");
        }
    }
    if (argc - optind < 2)
        return cli_usage_error("compare", "give at least two stores (%d given)",
                               argc - optind);
    if (argc - optind > COMPARE_MAX)
        return cli_usage_error("compare", "at most %d stores (%d given)",
                               COMPARE_MAX, argc - optind);
    for (int i = optind; i < argc && !rc; i++) {
        rc = open_store(argv[i], argv + optind, i - optind, st, &so, &err);
        if (!rc)
            n++;
    }
    if (!rc)
        rc = runner_compare_build(st, n, &o, &err);
    if (rc)
        goto out;
    if (json) {
        if (!(text = cJSON_PrintUnformatted(o))) {
            rc = nsed_error(&err, NSED_ENOMEM, "out of memory");
            goto out;
        }
        puts(text);
    } else {
        print_text(o);
    }
    rc = cli_stdout_flush(&err);
out:
    free(text);
    cJSON_Delete(o);
    for (size_t i = 0; i < n; i++)
        if (!earlier_same(st, i))
            store_close(st[i]);
    return rc ? cli_fail(rc, &err) : 0;
}
