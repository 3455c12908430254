/* cli_status.c -- `nsed status --store DIR [--json]` */
#include "pipeline/cli.h"
#include "pipeline/questions.h"

#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

static const char status_usage[] =
    "usage: nsed status --store DIR [--json]\n"
    "\n"
    "Show what a run store holds: the workflow it is bound to (name, hash,\n"
    "git commit), when it was created, and how many questions it holds.\n"
    "Opens the store read-only, so it can run beside a running writer.\n"
    "\n"
    "  -s, --store DIR   run store directory\n"
    "  -j, --json        one JSON object instead of text\n"
    "  -h, --help        this text\n";

struct counts {
    size_t questions, results;
};

static int count_fn(store_txn *t, void *arg, nsed_err *err)
{
    struct counts *c = arg;
    int rc;

    rc = store_count(t, STORE_QUESTIONS, &c->questions);
    if (!rc)
        rc = store_count(t, STORE_RESULTS, &c->results);
    if (rc)
        return nsed_error(err, rc, "cannot count store entries: %s",
                          nsed_strerror(rc));
    return 0;
}

static const char *jstr(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);

    return cJSON_IsString(v) ? v->valuestring : "-";
}

int cli_status(int argc, char **argv)
{
    static const struct option opts[] = {
        {"store", required_argument, NULL, 's'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *dir = NULL;
    int json = 0, c, rc;
    store_opts so = {.flags = STORE_RDONLY};
    store *st = NULL;
    nsed_err err = {0};
    struct counts counts = {0};
    char *manifest_text = NULL;
    cJSON *manifest = NULL, *out = NULL;

    optind = 1;
    while ((c = getopt_long(argc, argv, "s:jh", opts, NULL)) != -1) {
        switch (c) {
        case 's':
            dir = optarg;
            break;
        case 'j':
            json = 1;
            break;
        case 'h':
            fputs(status_usage, stdout);
            return 0;
        default:
            return cli_usage_error("status", "bad option");
        }
    }
    if (!dir)
        return cli_usage_error("status", "--store DIR is required");
    if (optind != argc)
        return cli_usage_error("status", "unexpected argument '%s'",
                               argv[optind]);

    rc = store_open(dir, &so, &st, &err);
    if (rc)
        goto out;
    rc = store_read(st, count_fn, &counts, &err);
    if (rc)
        goto out;
    rc = store_manifest_json(st, &manifest_text, &err);
    if (rc == NSED_ENOTFOUND) {
        rc = 0;
    } else if (rc) {
        goto out;
    } else {
        manifest = cJSON_Parse(manifest_text);
        if (!manifest) {
            rc = nsed_error(&err, NSED_ESTORE,
                            "%s: the run manifest is not valid JSON", dir);
            goto out;
        }
        /* The canonical text is long and already hashed; status shows the
         * hash. The full manifest stays in the store. */
        cJSON_DeleteItemFromObjectCaseSensitive(manifest,
                                                "workflow_canonical");
    }

    if (json) {
        char *text;

        out = cJSON_CreateObject();
        if (!out || !cJSON_AddStringToObject(out, "store", dir) ||
            !cJSON_AddNumberToObject(out, "questions",
                                     (double)counts.questions) ||
            !cJSON_AddNumberToObject(out, "results",
                                     (double)counts.results)) {
            rc = nsed_error(&err, NSED_ENOMEM, "out of memory");
            goto out;
        }
        if (manifest) {
            cJSON_AddItemToObject(out, "manifest", manifest);
            manifest = NULL;
        } else {
            cJSON_AddNullToObject(out, "manifest");
        }
        text = cJSON_PrintUnformatted(out);
        if (!text) {
            rc = nsed_error(&err, NSED_ENOMEM, "out of memory");
            goto out;
        }
        puts(text);
        free(text);
    } else {
        printf("store:      %s\n", dir);
        if (manifest) {
            printf("workflow:   %s (hash %.16s)\n",
                   jstr(manifest, "workflow_name"),
                   jstr(manifest, "workflow_hash"));
            printf("git commit: %s\n", jstr(manifest, "git_commit"));
            printf("created:    %s by nsed %s\n",
                   jstr(manifest, "created_at"),
                   jstr(manifest, "nsed_version"));
        } else {
            printf("workflow:   (not bound yet)\n");
        }
        printf("questions:  %zu ingested, %zu with results\n",
               counts.questions, counts.results);
    }
out:
    cJSON_Delete(out);
    cJSON_Delete(manifest);
    free(manifest_text);
    store_close(st);
    return rc ? cli_fail(&err) : 0;
}
