/* Tests for workflow overrides, `--set KEY=VALUE` (issue 13, item 4):
 * an override gives the hash of the file edited to say the same (the
 * edited file is written here, not made by the code under test); a bad
 * value or an unknown key is refused with exit 2 and a message naming the
 * option, the range or the key meant; checks across keys see the
 * override; the manifest records the overrides as given; and a run on
 * nsed-sim uses the value (rounds.max=1: one round per question). */
#include "pipeline/workflow/workflow.h"
#include "testutil.h"

#include <check.h>
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define DEMO_WF NSED_SOURCE_DIR "/workflows/demo.yaml"
#define DEMO_Q NSED_SOURCE_DIR "/workflows/demo-questions.jsonl"
#define DEMO_SIM NSED_SOURCE_DIR "/tests/sim/configs/demo-sim.yaml"

/* A node the file shares through an alias keeps its value for the other
 * parent: only the path the override names changes. */
START_TEST(alias_is_copied_not_changed)
{
    static const char text[] =
        "name: t\nversion: 1\nmodels:\n"
        "  - id: a\n    endpoint: http://127.0.0.1:9/v1\n    model: a\n"
        "    sampling: &s {temperature: 0.5}\n"
        "  - id: b\n    endpoint: http://127.0.0.1:9/v1\n    model: b\n"
        "    sampling: *s\n"
        "teams:\n  main:\n    roles:\n      - name: solver\n"
        "        count: 2\n        models: [a, b]\n";
    const char *ov[] = {"models.b.sampling.temperature=0.25"};
    workflow_options opt = {.overrides = ov, .noverrides = 1};
    workflow *wf = NULL;
    nsed_err e = {0};

    ck_assert_msg(workflow_load_string_with("t.yaml", text, strlen(text), &opt,
                                            &wf, &e) == 0,
                  "%s", e.msg);
    ck_assert_double_eq(wf->models[0].sampling.temperature, 0.5);
    ck_assert_double_eq(wf->models[1].sampling.temperature, 0.25);
    workflow_free(wf);
}
END_TEST

/* `nsed run` with a bad --set exits 2 before the store exists. */
START_TEST(run_refuses_before_the_store)
{
    char *dir = tu_path(tu_tmp, "never"), *out = NULL, *err = NULL;
    struct stat sb;

    ck_assert_int_eq(TU_NSED(NULL, &out, &err, "run", DEMO_WF, "--questions",
                             DEMO_Q, "--store", dir, "--set", "rounds.max=65"),
                     2);
    ck_assert(tu_contains(err, "--set rounds.max: "));
    ck_assert(tu_contains(err, "1..64"));
    ck_assert_int_ne(stat(dir, &sb), 0);
    free(out);
    free(err);
    free(dir);
}
END_TEST

/* The hash from `nsed validate -q ...` output "PATH: ok, workflow hash H"
 * (malloc'd), or NULL. */
static char *hash_of(const char *out)
{
    const char *p = out ? strstr(out, "workflow hash ") : NULL;
    char *h;

    if (!p)
        return NULL;
    p += strlen("workflow hash ");
    h = strndup(p, 64);
    ck_assert_ptr_nonnull(h);
    ck_assert_uint_eq(strlen(h), 64);
    return h;
}

/* The demo workflow with its one occurrence of from replaced by to,
 * written to tu_tmp/name (the path returned, malloc'd). */
static char *demo_edited(const char *name, const char *from, const char *to)
{
    size_t len;
    char *text = tu_read_file(DEMO_WF, &len), *at, *path;
    char *out;
    size_t head, nfrom = strlen(from), nto = strlen(to);

    ck_assert_ptr_nonnull(text);
    at = strstr(text, from);
    ck_assert_msg(at != NULL, "demo.yaml lacks \"%s\"", from);
    ck_assert_ptr_null(strstr(at + 1, from)); /* exactly one */
    head = (size_t)(at - text);
    out = malloc(len - nfrom + nto + 1);
    ck_assert_ptr_nonnull(out);
    memcpy(out, text, head);
    memcpy(out + head, to, nto);
    memcpy(out + head + nto, at + nfrom, len - head - nfrom);
    path = tu_path(tu_tmp, name);
    tu_write_file(path, out, len - nfrom + nto);
    free(out);
    free(text);
    return path;
}

START_TEST(set_hash_equals_edited_file)
{
    char *edited = demo_edited("max6.yaml", "  max: 4\n", "  max: 6\n");
    char *out = NULL, *err = NULL, *h_file, *h_set, *h_plain;

    ck_assert_int_eq(TU_NSED(NULL, &out, &err, "validate", "-q", edited), 0);
    h_file = hash_of(out);
    free(out);
    free(err);
    ck_assert_int_eq(TU_NSED(NULL, &out, &err, "validate", "-q", "--set",
                             "rounds.max=6", DEMO_WF),
                     0);
    h_set = hash_of(out);
    free(out);
    free(err);
    ck_assert_int_eq(TU_NSED(NULL, &out, &err, "validate", "-q", DEMO_WF), 0);
    h_plain = hash_of(out);
    free(out);
    free(err);
    ck_assert_ptr_nonnull(h_file);
    ck_assert_ptr_nonnull(h_set);
    ck_assert_str_eq(h_set, h_file);
    ck_assert_str_ne(h_set, h_plain);
    free(h_set);
    /* the last --set of a key wins; a flow mapping sets a whole section */
    ck_assert_int_eq(TU_NSED(NULL, &out, &err, "validate", "-q", "--set",
                             "rounds.max=2", "--set", "rounds.max=6", DEMO_WF),
                     0);
    h_set = hash_of(out);
    ck_assert_str_eq(h_set, h_file);
    free(h_set);
    free(out);
    free(err);
    free(h_file);
    free(edited);
    /* an item of a list by its id and by its index are the same key */
    edited = demo_edited("temp.yaml", "    family: alpha\n",
                         "    family: alpha\n"
                         "    sampling: {temperature: 0.2}\n");
    ck_assert_int_eq(TU_NSED(NULL, &out, &err, "validate", "-q", edited), 0);
    h_file = hash_of(out);
    free(out);
    free(err);
    ck_assert_int_eq(TU_NSED(NULL, &out, &err, "validate", "-q", "--set",
                             "models[0].sampling.temperature=0.2", DEMO_WF),
                     0);
    h_set = hash_of(out);
    ck_assert_str_eq(h_set, h_file);
    free(h_set);
    free(out);
    free(err);
    ck_assert_int_eq(TU_NSED(NULL, &out, &err, "validate", "-q", "--set",
                             "models.alpha.sampling.temperature=0.2", DEMO_WF),
                     0);
    h_set = hash_of(out);
    ck_assert_str_eq(h_set, h_file);
    free(h_set);
    free(out);
    free(err);
    free(h_file);
    free(h_plain);
    free(edited);
}
END_TEST

/* `nsed validate --set ov DEMO_WF` must exit 2 with a message holding
 * every one of want (NULL-terminated). */
static void refused(const char *ov, const char *const *want)
{
    char *out = NULL, *err = NULL;
    int rc = TU_NSED(NULL, &out, &err, "validate", "-q", "--set", ov, DEMO_WF);

    ck_assert_msg(rc == 2, "--set %s: exit %d, want 2 (%s)", ov, rc, err);
    for (size_t i = 0; want[i]; i++)
        ck_assert_msg(tu_contains(err, want[i]), "--set %s: \"%s\" not in %s",
                      ov, want[i], err);
    free(out);
    free(err);
}

START_TEST(bad_values_are_refused)
{
    static const char *const zero[] = {"--set rounds.max: ", "1..64", "(got 0)",
                                       NULL};
    static const char *const abc[] = {"--set rounds.max: ", "integer",
                                      "\"abc\"", NULL};
    static const char *const typo[] = {"--set rounds.maxx: ",
                                       "unknown key \"maxx\" in rounds",
                                       "did you mean \"max\"?", NULL};
    static const char *const top[] = {"--set round.max: ",
                                      "did you mean \"rounds\"?", NULL};
    static const char *const cross[] = {"--set rounds.min: ",
                                        "rounds.max (4) must be >= "
                                        "rounds.min (9)",
                                        NULL};
    static const char *const scheme[] = {"--set scoring.scheme: ",
                                         "quadratic_credits", NULL};
    static const char *const noeq[] = {"--set rounds.max: ", "KEY=VALUE", NULL};
    static const char *const item[] = {"--set models.nope.model: ",
                                       "no item with id or name \"nope\"",
                                       NULL};

    refused("rounds.max=0", zero);
    refused("rounds.max=abc", abc);
    refused("rounds.maxx=3", typo);
    refused("round.max=3", top);
    refused("rounds.min=9", cross);
    refused("scoring.scheme=credits", scheme);
    refused("rounds.max", noeq);
    refused("models.nope.model=x", item);
}
END_TEST

/* Every exported question's rounds into rounds[] (at most max); returns
 * how many. */
static size_t export_rounds(const char *dir, double *rounds, size_t max)
{
    char *rows = tu_nsed_export(dir), *line, *nl;
    size_t n = 0;

    for (line = rows; *line; line = nl + 1) {
        cJSON *row;

        nl = strchr(line, '\n');
        ck_assert_ptr_nonnull(nl);
        *nl = '\0';
        row = cJSON_Parse(line);
        ck_assert_ptr_nonnull(row);
        ck_assert_uint_lt(n, max);
        rounds[n++] = tu_jnum(row, "rounds", NULL);
        cJSON_Delete(row);
    }
    free(rows);
    return n;
}

START_TEST(run_uses_and_records_the_overrides)
{
    tu_sim sim;
    char *dir = tu_path(tu_tmp, "store"), *plain = tu_path(tu_tmp, "plain");
    char *out = NULL, *err = NULL;
    double rounds[64];
    size_t n, more = 0;
    const cJSON *man, *ov;
    cJSON *st;

    tu_sim_start(&sim, DEMO_SIM, NULL, NULL);
    /* without the override some question takes more than one round, so
     * the check below says something */
    ck_assert_msg(TU_NSED(sim.url, &out, &err, "run", DEMO_WF, "--questions",
                          DEMO_Q, "--store", plain, "--limit", "24",
                          "--quiet") == 0,
                  "run: %s", err);
    free(out);
    free(err);
    n = export_rounds(plain, rounds, 64);
    ck_assert_uint_eq(n, 24);
    for (size_t i = 0; i < n; i++)
        more += rounds[i] > 1;
    ck_assert_uint_gt(more, 0);
    out = err = NULL;
    ck_assert_msg(TU_NSED(sim.url, &out, &err, "run", DEMO_WF, "--questions",
                          DEMO_Q, "--store", dir, "--limit", "24", "--set",
                          "rounds.max=1", "--set",
                          "scoring.scheme=quadratic_credits", "--quiet") == 0,
                  "run: %s", err);
    free(out);
    free(err);
    n = export_rounds(dir, rounds, 64);
    ck_assert_uint_eq(n, 24);
    for (size_t i = 0; i < n; i++)
        ck_assert_double_eq(rounds[i], 1);
    /* the manifest: the overrides as given, and the effective hash */
    st = tu_nsed_status(dir);
    man = cJSON_GetObjectItem(st, "manifest");
    ov = cJSON_GetObjectItem(man, "overrides");
    ck_assert(cJSON_IsArray(ov));
    ck_assert_int_eq(cJSON_GetArraySize(ov), 2);
    ck_assert_str_eq(cJSON_GetArrayItem(ov, 0)->valuestring, "rounds.max=1");
    ck_assert_str_eq(cJSON_GetArrayItem(ov, 1)->valuestring,
                     "scoring.scheme=quadratic_credits");
    {
        char *h;

        out = err = NULL;
        ck_assert_int_eq(TU_NSED(NULL, &out, &err, "validate", "-q", "--set",
                                 "rounds.max=1", "--set",
                                 "scoring.scheme=quadratic_credits", DEMO_WF),
                         0);
        h = hash_of(out);
        ck_assert_str_eq(cJSON_GetObjectItem(man, "workflow_hash")->valuestring,
                         h);
        free(h);
        free(out);
        free(err);
    }
    cJSON_Delete(st);
    /* resuming needs the same effective workflow: without the overrides
     * the hash differs and the store refuses it */
    out = err = NULL;
    ck_assert_int_eq(TU_NSED(sim.url, &out, &err, "run", DEMO_WF, "--store",
                             dir, "--quiet"),
                     2);
    ck_assert(tu_contains(err, "--allow-workflow-change"));
    free(out);
    free(err);
    /* with them (spelled another way: the hash is what counts) it resumes */
    out = err = NULL;
    ck_assert_msg(TU_NSED(sim.url, &out, &err, "run", DEMO_WF, "--store", dir,
                          "--limit", "24", "--set",
                          "scoring={scheme: quadratic_credits}", "--set",
                          "rounds.max=1", "--quiet") == 0,
                  "resume: %s", err);
    free(out);
    free(err);
    tu_sim_stop(&sim);
    free(dir);
    free(plain);
}
END_TEST

Suite *tu_suite(void)
{
    Suite *s = suite_create("sweep");
    TCase *t = tcase_create("overrides");

    tcase_add_checked_fixture(t, tu_tmp_setup, tu_tmp_teardown);
    tcase_add_test(t, set_hash_equals_edited_file);
    tcase_add_test(t, bad_values_are_refused);
    tcase_add_test(t, alias_is_copied_not_changed);
    tcase_add_test(t, run_refuses_before_the_store);
    suite_add_tcase(s, t);
    t = tcase_create("run");
    tcase_add_checked_fixture(t, tu_tmp_setup, tu_tmp_teardown);
    tcase_set_timeout(t, 300);
    tcase_add_test(t, run_uses_and_records_the_overrides);
    suite_add_tcase(s, t);
    return s;
}
