/* Tests for the workflow loader: broken files (one per strictness rule),
 * the shipped examples, defaults, canonical form and hash, interpolation,
 * prompt templates, secrets and lookups. */
#include "pipeline/base/hash.h"
#include "pipeline/workflow/workflow.h"
#include "testutil.h"

#include <check.h>
#include <cjson/cJSON.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BAD_DIR NSED_SOURCE_DIR "/tests/data/workflows/bad"
#define GOOD_DIR NSED_SOURCE_DIR "/tests/data/workflows/good"
#define EXAMPLES NSED_SOURCE_DIR "/workflows"

/* The smallest valid workflow: two models, one team. */
static const char MINI[] =
    "name: mini\n"
    "version: 1\n"
    "models:\n"
    "  - id: a\n"
    "    endpoint: http://127.0.0.1:8089/v1\n"
    "    model: sim-alpha\n"
    "  - id: b\n"
    "    endpoint: http://127.0.0.1:8089/v1\n"
    "    model: sim-beta\n"
    "teams:\n"
    "  main:\n"
    "    roles:\n"
    "      - name: solver\n"
    "        count: 2\n"
    "        models: [a, b]\n";

static workflow *load_text(const char *text)
{
    workflow *wf = NULL;
    nsed_err e = {0};
    int rc = workflow_load_string("t.yaml", text, strlen(text), &wf, &e);

    ck_assert_msg(rc == 0, "load failed (%d): %s", rc, e.msg);
    ck_assert_ptr_nonnull(wf);
    return wf;
}

static workflow *load_path(const char *path)
{
    workflow *wf = NULL;
    nsed_err e = {0};
    int rc = workflow_load(path, &wf, &e);

    ck_assert_msg(rc == 0, "load of %s failed (%d): %s", path, rc, e.msg);
    return wf;
}

/* Load text that must fail; returns the code, message in e. */
static int load_bad(const char *text, nsed_err *e)
{
    workflow *wf = (workflow *)0x1;
    int rc = workflow_load_string("t.yaml", text, strlen(text), &wf, e);

    ck_assert_int_ne(rc, 0);
    ck_assert_ptr_eq(wf, (workflow *)0x1); /* out untouched on failure */
    return rc;
}

/* Copy of text with the first occurrence of from replaced by to. */
static char *subst(const char *text, const char *from, const char *to)
{
    const char *at = strstr(text, from);
    size_t n;
    char *s;

    ck_assert_msg(at != NULL, "\"%s\" not in text", from);
    n = strlen(text) - strlen(from) + strlen(to);
    s = malloc(n + 1);
    ck_assert_ptr_nonnull(s);
    memcpy(s, text, (size_t)(at - text));
    memcpy(s + (at - text), to, strlen(to));
    memcpy(s + (at - text) + strlen(to), at + strlen(from),
           strlen(at + strlen(from)) + 1);
    return s;
}

static char *hash_of_text(const char *text)
{
    workflow *wf = load_text(text);
    char *h = strdup(workflow_hash(wf));

    workflow_free(wf);
    return h;
}

/* ---- broken files ------------------------------------------------------ */

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Check one broken file against its "# expect: LINE:COL: text" line. */
static void check_bad_file(const char *path)
{
    char *text = tu_read_file(path, NULL), *nl, *colon, prefix[1200];
    const char *expect;
    long line, col;
    workflow *wf = NULL;
    nsed_err e = {0};
    int rc;

    ck_assert_ptr_nonnull(text);
    ck_assert_msg(strncmp(text, "# expect: ", 10) == 0, "%s: no expect line",
                  path);
    nl = strchr(text, '\n');
    ck_assert_ptr_nonnull(nl);
    *nl = '\0';
    line = strtol(text + 10, &colon, 10);
    ck_assert_int_eq(*colon, ':');
    col = strtol(colon + 1, &colon, 10);
    ck_assert_msg(strncmp(colon, ": ", 2) == 0, "%s: bad expect line", path);
    expect = colon + 2;

    rc = workflow_load(path, &wf, &e);
    ck_assert_msg(rc == NSED_EINVAL || rc == NSED_ETOOBIG,
                  "%s: rc %d (%s)", path, rc, e.msg);
    ck_assert_ptr_null(wf);
    ck_assert_int_eq(e.code, rc);
    snprintf(prefix, sizeof prefix, "%s:%ld:%ld: ", path, line, col);
    ck_assert_msg(strncmp(e.msg, prefix, strlen(prefix)) == 0,
                  "%s: message \"%s\" does not start with \"%s\"", path,
                  e.msg, prefix);
    ck_assert_msg(tu_contains(e.msg, expect),
                  "%s: message \"%s\" lacks \"%s\"", path, e.msg, expect);
    /* the fixtures' secrets all contain these markers */
    ck_assert_msg(!tu_contains(e.msg, "SECRETVALUE") &&
                  !tu_contains(e.msg, "hunter2"),
                  "%s: secret in message \"%s\"", path, e.msg);
    free(text);
}

START_TEST(bad_files_table)
{
    char *names[256];
    size_t n = 0;
    struct dirent *de;
    DIR *d;

    unsetenv("NSED_WF_TEST_UNSET");
    d = opendir(BAD_DIR);
    ck_assert_ptr_nonnull(d);
    while ((de = readdir(d)) != NULL) {
        size_t len = strlen(de->d_name);

        if (len > 5 && strcmp(de->d_name + len - 5, ".yaml") == 0) {
            ck_assert_uint_lt(n, 256);
            names[n++] = tu_path(BAD_DIR, de->d_name);
        }
    }
    closedir(d);
    qsort(names, n, sizeof names[0], cmp_names);
    ck_assert_uint_ge(n, 30);
    for (size_t i = 0; i < n; i++) {
        check_bad_file(names[i]);
        free(names[i]);
    }
}
END_TEST

START_TEST(bad_empty_file)
{
    char *dir = tu_mkdtemp(), *p = tu_path(dir, "empty.yaml"), want[600];
    workflow *wf = NULL;
    nsed_err e = {0};

    tu_write_file(p, "", 0);
    ck_assert_int_eq(workflow_load(p, &wf, &e), NSED_EINVAL);
    snprintf(want, sizeof want, "%s:1:1: empty workflow", p);
    ck_assert_msg(strncmp(e.msg, want, strlen(want)) == 0, "%s", e.msg);
    ck_assert_ptr_null(wf);
    tu_rmrf(dir);
    free(p);
    free(dir);
}
END_TEST

START_TEST(bad_oversize_file)
{
    char *dir = tu_mkdtemp(), *p = tu_path(dir, "big.yaml"), want[600];
    size_t n = WORKFLOW_MAX_FILE_BYTES;
    char *text = malloc(n + 2);
    workflow *wf = NULL;
    nsed_err e = {0};

    /* exactly at the cap: a valid workflow padded with a comment loads */
    ck_assert_ptr_nonnull(text);
    memcpy(text, MINI, strlen(MINI));
    text[strlen(MINI)] = '#';
    memset(text + strlen(MINI) + 1, 'x', n - strlen(MINI) - 2);
    text[n - 1] = '\n';
    tu_write_file(p, text, n);
    ck_assert_int_eq(workflow_load(p, &wf, &e), 0);
    workflow_free(wf);
    wf = NULL;

    /* one byte over: refused as too big, with the path and no location */
    text[n - 1] = 'x';
    text[n] = '\n';
    tu_write_file(p, text, n + 1);
    ck_assert_int_eq(workflow_load(p, &wf, &e), NSED_ETOOBIG);
    ck_assert_ptr_null(wf);
    snprintf(want, sizeof want, "%s: workflow file is %zu bytes; the limit "
             "is %zu", p, n + 1, n);
    ck_assert_msg(strncmp(e.msg, want, strlen(want)) == 0, "%s", e.msg);
    ck_assert_int_eq(workflow_load_string("s.yaml", text, n + 1, &wf, &e),
                     NSED_ETOOBIG);
    ck_assert(tu_contains(e.msg, "s.yaml: "));
    free(text);
    tu_rmrf(dir);
    free(p);
    free(dir);
}
END_TEST


START_TEST(bad_alias_bombs)
{
    buf b;
    nsed_err e = {0};
    double t0;

    /* The classic "billion laughs": nine aliases per level. */
    buf_init(&b, 1 << 20);
    ck_assert_int_eq(buf_adds(&b, "l0: &l0 [lol, lol, lol, lol]\n"), 0);
    for (int i = 1; i < 10; i++) {
        ck_assert_int_eq(buf_printf(&b, "l%d: &l%d [", i, i), 0);
        for (int j = 0; j < 9; j++)
            ck_assert_int_eq(buf_printf(&b, "%s*l%d", j ? ", " : "", i - 1),
                             0);
        ck_assert_int_eq(buf_adds(&b, "]\n"), 0);
    }
    t0 = tu_now_s();
    ck_assert_int_eq(load_bad(b.ptr, &e), NSED_ETOOBIG);
    ck_assert_msg(tu_contains(e.msg, "t.yaml:3:"), "%s", e.msg);
    ck_assert_msg(tu_contains(e.msg, "too many YAML aliases"), "%s", e.msg);

    /* Within the alias limit, a wide anchor still blows the node bound. */
    buf_reset(&b);
    ck_assert_int_eq(buf_adds(&b, "base: &w ["), 0);
    for (int i = 0; i < 7000; i++)
        ck_assert_int_eq(buf_adds(&b, i ? ",x" : "x"), 0);
    ck_assert_int_eq(buf_adds(&b, "]\nboom: ["), 0);
    for (int i = 0; i < 16; i++)
        ck_assert_int_eq(buf_adds(&b, i ? ", *w" : "*w"), 0);
    ck_assert_int_eq(buf_adds(&b, "]\n"), 0);
    ck_assert_int_eq(load_bad(b.ptr, &e), NSED_ETOOBIG);
    ck_assert_msg(tu_contains(e.msg, "t.yaml:2:"), "%s", e.msg);
    ck_assert_msg(tu_contains(e.msg, "more than 100000 YAML nodes"), "%s",
                  e.msg);
    ck_assert_msg(tu_now_s() - t0 < 2.0, "alias bombs took too long");
    buf_release(&b);
}
END_TEST

START_TEST(bad_missing_file)
{
    workflow *wf = NULL;
    nsed_err e = {0};

    ck_assert_int_eq(workflow_load("/nonexistent/w.yaml", &wf, &e), NSED_EIO);
    ck_assert(tu_contains(e.msg, "/nonexistent/w.yaml: cannot open"));
    ck_assert_int_eq(workflow_load(NSED_SOURCE_DIR, &wf, &e), NSED_EIO);
    ck_assert_ptr_null(wf);
}
END_TEST

START_TEST(bad_messages_inline)
{
    nsed_err e = {0};
    char *t;

    /* a mapping where a number goes, at the mapping's location */
    t = subst(MINI, "model: sim-alpha\n",
              "model: sim-alpha\n    max_concurrency: {n: 3}\n");
    load_bad(t, &e);
    ck_assert_str_eq(e.msg, "t.yaml:7:22: models[0].max_concurrency must be "
                            "an integer, not a mapping");
    free(t);
    /* integers must be integral, floats must be finite */
    t = subst(MINI, "count: 2", "count: 1e400");
    load_bad(t, &e);
    ck_assert_msg(tu_contains(e.msg, "out of range"), "%s", e.msg);
    free(t);
    t = subst(MINI, "model: sim-alpha\n",
              "model: sim-alpha\n    sampling: {temperature: inf}\n");
    load_bad(t, &e);
    ck_assert_msg(tu_contains(e.msg, "must be a number (got \"inf\")"), "%s",
                  e.msg);
    free(t);
    /* a quoted true is not a boolean; True is not accepted either */
    t = subst(MINI, "version: 1\n", "version: 1\nscoring: {allow_self_votes: "
                                    "\"true\"}\n");
    load_bad(t, &e);
    ck_assert_msg(tu_contains(e.msg, "t.yaml:3:29: scoring.allow_self_votes "
                              "must be true or false (got a quoted string"),
                  "%s", e.msg);
    free(t);
    /* an unknown key far from every valid one gets no hint */
    t = subst(MINI, "version: 1\n", "version: 1\nzzzzzzzz: 1\n");
    load_bad(t, &e);
    ck_assert_str_eq(e.msg, "t.yaml:3:1: unknown key \"zzzzzzzz\" in the top "
                            "level");
    free(t);
    /* a case slip is hinted */
    t = subst(MINI, "version: 1\n", "version: 1\nSeed: 1\n");
    load_bad(t, &e);
    ck_assert_msg(tu_contains(e.msg, "did you mean \"seed\"?"), "%s", e.msg);
    free(t);
    /* team size out of range and max < min */
    t = subst(MINI, "version: 1\n", "version: 1\nbroker: {team_size: {min: 3, "
                                    "max: 2}}\n");
    load_bad(t, &e);
    ck_assert_msg(tu_contains(e.msg, "broker.team_size.max (2) must be >= "
                              "min (3)"), "%s", e.msg);
    free(t);
    /* an empty roles list */
    t = subst(MINI, "    roles:\n      - name: solver\n        count: 2\n"
                    "        models: [a, b]\n", "    roles: []\n");
    load_bad(t, &e);
    ck_assert_str_eq(e.msg, "t.yaml:12:12: teams.main.roles must not be "
                            "empty");
    free(t);
    /* a duplicate team name is a duplicate key of teams */
    t = subst(MINI, "teams:\n", "teams:\n  main: {roles: [{name: x, models: "
                                "[a]}]}\n");
    load_bad(t, &e);
    ck_assert_msg(tu_contains(e.msg, "duplicate key \"main\" (first at "
                              "11:3)"), "%s", e.msg);
    free(t);
    /* a duplicate entry in a list of references */
    t = subst(MINI, "[a, b]", "[a, b, a]");
    load_bad(t, &e);
    ck_assert_msg(tu_contains(e.msg, "teams.main.roles[0].models repeats "
                              "\"a\""), "%s", e.msg);
    free(t);
}
END_TEST

/* ---- examples ---------------------------------------------------------- */

START_TEST(examples_load)
{
    static const char *const files[] = {"demo.yaml", "vllm-3gpu.yaml",
                                        "llamacpp.yaml", "hosted-api.yaml"};

    /* with the defaults of every ${VAR:-...} ... */
    unsetenv("NSED_SIM_URL");
    unsetenv("VLLM_URL_0");
    unsetenv("LLAMA_URL");
    unsetenv("OPENAI_BASE_URL");
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char *p = tu_path(EXAMPLES, files[i]);
        workflow *wf = load_path(p);

        ck_assert_uint_eq(strlen(workflow_hash(wf)), HASH_HEX_LEN);
        ck_assert_uint_ge(wf->nmodels, 2);
        ck_assert_ptr_nonnull(wf->broker.default_team);
        workflow_free(wf);
        free(p);
    }
    /* ... and with the variables set */
    setenv("NSED_SIM_URL", "http://127.0.0.1:1234/v1", 1);
    setenv("VLLM_URL_0", "http://gpu0:8000/v1", 1);
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char *p = tu_path(EXAMPLES, files[i]);
        workflow *wf = load_path(p);

        workflow_free(wf);
        free(p);
    }
}
END_TEST

START_TEST(example_demo_fields)
{
    static const char *const fam[] = {"alpha", "beta", "gamma"};
    workflow *wf;
    const workflow_team *t;

    unsetenv("NSED_SIM_URL");
    wf = load_path(EXAMPLES "/demo.yaml");
    ck_assert_str_eq(wf->name, "demo");
    ck_assert_uint_eq(wf->seed, 42);
    ck_assert_uint_eq(wf->nmodels, 3);
    for (size_t i = 0; i < 3; i++) {
        const workflow_model *m = &wf->models[i];
        char want[32];

        snprintf(want, sizeof want, "sim-%s", fam[i]);
        ck_assert_str_eq(m->model, want);
        ck_assert_str_eq(m->family, fam[i]);
        ck_assert_str_eq(m->endpoint, "http://127.0.0.1:8089/v1");
        ck_assert_str_eq(m->endpoint_raw,
                         "${NSED_SIM_URL:-http://127.0.0.1:8089/v1}");
        ck_assert_int_eq(m->max_concurrency, 8);
        ck_assert(m->price_input_per_mtok == 0 &&
                  m->price_output_per_mtok == 0);
        ck_assert(m->structured_output);
        ck_assert_ptr_null(m->api_key_env);
    }
    ck_assert_uint_eq(wf->nteams, 1);
    t = workflow_team_find(wf, "main");
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(t->seats, 3);
    ck_assert_uint_eq(t->nroles, 1);
    ck_assert_str_eq(t->roles[0].name, "solver");
    ck_assert_uint_eq(t->roles[0].nallowed, 3);
    ck_assert_int_eq(wf->broker.policy, WORKFLOW_POLICY_FIXED);
    ck_assert_ptr_eq(wf->broker.default_team, t);
    ck_assert_int_eq(wf->rounds.min, 1);
    ck_assert_int_eq(wf->rounds.max, 4);
    ck_assert(wf->rounds.consensus_margin == 0.6);
    ck_assert_int_eq(wf->rounds.stable_answer, 2);
    ck_assert_int_eq(wf->answer.extract, WORKFLOW_EXTRACT_BOXED);
    ck_assert_int_eq(wf->answer.compare, WORKFLOW_COMPARE_NUMERIC);
    workflow_free(wf);
}
END_TEST

START_TEST(example_deployments_fields)
{
    workflow *wf;

    wf = load_path(EXAMPLES "/vllm-3gpu.yaml");
    ck_assert_int_eq(wf->broker.policy, WORKFLOW_POLICY_KNAPSACK);
    ck_assert(wf->broker.vram_per_gpu_gb == 24);
    ck_assert_int_gt(wf->broker.budget_tokens_per_question, 0);
    ck_assert(wf->models[0].size_b == 8 && wf->models[1].size_b == 12 &&
              wf->models[2].size_b == 20);
    for (size_t i = 0; i < 3; i++) {
        ck_assert_int_eq(wf->models[i].placement_gpu, (int)i);
        for (size_t j = 0; j < i; j++) {
            ck_assert_str_ne(wf->models[i].family, wf->models[j].family);
            ck_assert_str_ne(wf->models[i].endpoint, wf->models[j].endpoint);
        }
    }
    workflow_free(wf);

    wf = load_path(EXAMPLES "/llamacpp.yaml");
    for (size_t i = 0; i < wf->nmodels; i++) {
        ck_assert_str_eq(wf->models[i].endpoint, wf->models[0].endpoint);
        ck_assert(wf->models[i].structured_output);
    }
    ck_assert_str_ne(wf->models[0].model, wf->models[1].model);
    workflow_free(wf);

    wf = load_path(EXAMPLES "/hosted-api.yaml");
    ck_assert(wf->broker.budget_usd_per_question > 0);
    for (size_t i = 0; i < wf->nmodels; i++) {
        ck_assert_str_eq(wf->models[i].api_key_env, "OPENAI_API_KEY");
        ck_assert(wf->models[i].price_input_per_mtok > 0);
        ck_assert(wf->models[i].price_output_per_mtok > 0);
    }
    workflow_free(wf);
}
END_TEST

/* ---- canonical form and hash ------------------------------------------- */

START_TEST(hash_stable_across_layout)
{
    workflow *a, *b;

    unsetenv("NSED_SIM_URL");
    a = load_path(EXAMPLES "/demo.yaml");
    b = load_path(GOOD_DIR "/demo-reformatted.yaml");
    ck_assert_str_eq(workflow_canonical(a), workflow_canonical(b));
    ck_assert_str_eq(workflow_hash(a), workflow_hash(b));
    workflow_free(b);
    /* the environment does not enter the hash, only the resolved JSON */
    setenv("NSED_SIM_URL", "http://10.1.2.3:9999/v1", 1);
    b = load_path(EXAMPLES "/demo.yaml");
    ck_assert_str_eq(workflow_hash(a), workflow_hash(b));
    ck_assert_str_ne(workflow_resolved_json(a), workflow_resolved_json(b));
    ck_assert(tu_contains(workflow_resolved_json(b), "10.1.2.3:9999"));
    workflow_free(a);
    workflow_free(b);
}
END_TEST

START_TEST(hash_changes_with_any_value)
{
    static const char *const changes[][2] = {
        {"version: 1", "version: 2"},
        {"name: mini", "name: mini2"},
        {"version: 1\n", "version: 1\nseed: 1\n"},
        {"model: sim-alpha", "model: sim-alpha2"},
        {"http://127.0.0.1:8089/v1\n    model: sim-alpha",
         "http://127.0.0.1:8089/v2\n    model: sim-alpha"},
        {"count: 2", "count: 3"},
        {"[a, b]", "[b, a]"},
        {"version: 1\n", "version: 1\nscoring: {allow_self_votes: true}\n"},
        {"version: 1\n", "version: 1\nrounds: {max: 5}\n"},
        {"version: 1\n", "version: 1\nanswer: {compare: normalized}\n"},
        {"model: sim-beta\n", "model: sim-beta\n    sampling: {temperature: "
                              "0.71}\n"},
        {"model: sim-beta\n", "model: sim-beta\n    family: a\n"},
        {"version: 1\n", "version: 1\nprompts: {repair: \"redo {labels}\"}\n"},
    };
    char *base = hash_of_text(MINI);

    for (size_t i = 0; i < sizeof changes / sizeof changes[0]; i++) {
        char *t = subst(MINI, changes[i][0], changes[i][1]);
        char *h = hash_of_text(t);

        ck_assert_msg(strcmp(h, base) != 0, "change %zu kept the hash", i);
        free(h);
        free(t);
    }
    free(base);
}
END_TEST

START_TEST(hash_ignores_written_defaults)
{
    char *base = hash_of_text(MINI), *t, *h;

    t = subst(MINI, "version: 1\n",
              "version: 1  # a comment\nseed: 0\n"
              "rounds: {min: 1, max: 4}\n"
              "scoring: {scheme: quadratic, allow_self_votes: false, "
              "tie_break: [min_peer_score, variance, seeded]}\n"
              "answer: {extract: boxed, compare: exact}\n"
              "broker: {policy: fixed, team_size: {min: 2, max: 8}, "
              "default_team: main}\n"
              "gateway: {max_response_bytes: 8388608}\n");
    h = hash_of_text(t);
    ck_assert_str_eq(h, base);
    free(h);
    free(t);
    free(base);
}
END_TEST

START_TEST(canonical_is_compact_json_in_schema_order)
{
    static const char *const top[] = {"name", "version", "seed", "models",
                                      "gateway", "broker", "teams", "rounds",
                                      "scoring", "answer", "prompts"};
    workflow *wf = load_text(MINI);
    const char *c = workflow_canonical(wf);
    uint8_t d[HASH_LEN];
    char hex[HASH_HEX_LEN + 1];
    cJSON *j = cJSON_Parse(c), *it;
    size_t i = 0;

    ck_assert_ptr_nonnull(j);
    ck_assert_ptr_null(strchr(c, '\n'));
    ck_assert(strncmp(c, "{\"name\":\"mini\",\"version\":1,\"seed\":0,"
                         "\"models\":[{\"id\":\"a\",", 53) == 0);
    cJSON_ArrayForEach(it, j) {
        ck_assert_uint_lt(i, sizeof top / sizeof top[0]);
        ck_assert_str_eq(it->string, top[i]);
        i++;
    }
    ck_assert_uint_eq(i, sizeof top / sizeof top[0]);
    ck_assert_int_eq(hash_sha256(c, strlen(c), d), 0);
    hash_hex(d, hex);
    ck_assert_str_eq(hex, workflow_hash(wf));
    cJSON_Delete(j);
    workflow_free(wf);
}
END_TEST

START_TEST(print_normalized_matches_canonical)
{
    workflow *wf = load_path(GOOD_DIR "/demo-reformatted.yaml");
    char *dir = tu_mkdtemp(), *p = tu_path(dir, "out.json"), *text;
    cJSON *a, *b;
    FILE *f = fopen(p, "w");

    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(workflow_print_normalized(wf, f), 0);
    fclose(f);
    text = tu_read_file(p, NULL);
    ck_assert(tu_contains(text, "\n  \"models\": [\n"));
    a = cJSON_Parse(text);
    b = cJSON_Parse(workflow_canonical(wf));
    ck_assert_ptr_nonnull(a);
    ck_assert(cJSON_Compare(a, b, 1));
    cJSON_Delete(a);
    cJSON_Delete(b);
    free(text);
    workflow_free(wf);
    tu_rmrf(dir);
    free(p);
    free(dir);
}
END_TEST

/* ---- defaults and full parse ------------------------------------------- */

START_TEST(defaults_are_filled)
{
    workflow *wf = load_text(MINI);
    const workflow_model *m = &wf->models[1];
    const workflow_gateway *g = &wf->gateway;
    const workflow_broker *b = &wf->broker;
    const workflow_rounds *r = &wf->rounds;

    ck_assert_uint_eq(wf->seed, 0);
    ck_assert_str_eq(m->family, "b");
    ck_assert(m->size_b == 0);
    ck_assert_ptr_null(m->placement_host);
    ck_assert_int_eq(m->placement_gpu, -1);
    ck_assert(m->placement_vram_gb == -1);
    ck_assert_int_eq(m->max_concurrency, 4);
    ck_assert(m->connect_timeout_s == 10 && m->request_timeout_s == 300);
    ck_assert(m->sampling.temperature == 0.7 && m->sampling.top_p == 1);
    ck_assert_int_eq(m->sampling.max_tokens, 1024);
    ck_assert(!m->sampling.has_seed);
    ck_assert_uint_eq(m->sampling.nstop, 0);
    ck_assert(!m->structured_output);
    ck_assert(m->prior_p_gen == -1 && m->prior_p_ver == -1);
    ck_assert_int_eq(g->retry_max_attempts, 6);
    ck_assert_int_eq(g->retry_base_delay_ms, 500);
    ck_assert_int_eq(g->retry_max_delay_ms, 30000);
    ck_assert(g->retry_max_total_s == 600);
    ck_assert_int_eq(g->breaker_failures, 5);
    ck_assert(g->breaker_cooldown_s == 30);
    ck_assert_uint_eq(g->max_response_bytes, 8388608);
    ck_assert_int_eq(b->policy, WORKFLOW_POLICY_FIXED);
    ck_assert_int_eq(b->objective, WORKFLOW_OBJECTIVE_ACCURACY);
    ck_assert(b->explore == 0.1);
    ck_assert(b->budget_usd_per_question == 0);
    ck_assert_int_eq(b->budget_tokens_per_question, 0);
    ck_assert_int_eq(b->team_size_min, 2);
    ck_assert_int_eq(b->team_size_max, 8);
    ck_assert_int_eq(b->max_per_family, 0);
    ck_assert(b->evaluator_min_pv == 0.5);
    ck_assert_str_eq(b->default_team->name, "main");
    ck_assert_uint_eq(b->ntiers, 0);
    ck_assert(b->prior_p_gen == 0.5 && b->prior_p_ver == 0.6 &&
              b->prior_strength == 4);
    ck_assert_int_eq(r->min, 1);
    ck_assert_int_eq(r->max, 4);
    ck_assert(r->consensus_margin == 0 && r->stable_answer == 0);
    ck_assert(!r->fatigue);
    ck_assert_uint_eq(r->carry, WORKFLOW_CARRY_ALL);
    ck_assert_int_eq(r->max_winner_chars, 6000);
    ck_assert_int_eq(r->max_own_chars, 4000);
    ck_assert_int_eq(r->max_critique_chars, 2000);
    ck_assert_int_eq(r->max_table_chars, 2000);
    ck_assert_int_eq(wf->scoring.scheme, WORKFLOW_SCHEME_QUADRATIC);
    ck_assert(!wf->scoring.allow_self_votes);
    ck_assert(!wf->scoring.reliability_weighting);
    ck_assert_int_eq(wf->scoring.tie_break[0], WORKFLOW_TIE_MIN_PEER_SCORE);
    ck_assert_int_eq(wf->scoring.tie_break[1], WORKFLOW_TIE_VARIANCE);
    ck_assert_int_eq(wf->scoring.tie_break[2], WORKFLOW_TIE_SEEDED);
    ck_assert_int_eq(wf->answer.extract, WORKFLOW_EXTRACT_BOXED);
    ck_assert_int_eq(wf->answer.compare, WORKFLOW_COMPARE_EXACT);
    ck_assert_ptr_null(wf->answer.pattern);
    ck_assert_str_eq(wf->teams[0].roles[0].persona, "");
    ck_assert(tu_contains(workflow_canonical(wf),
                          "\"api_key_env\":null,\"family\":\"b\""));
    workflow_free(wf);
}
END_TEST

START_TEST(knapsack_defaults_and_compare_default)
{
    char *t = subst(MINI, "version: 1\n",
                    "version: 1\nbroker: {policy: knapsack}\n"
                    "answer: {extract: last_number}\n");
    workflow *wf;

    /* two families (a, b) for a two-seat minimum at one per family */
    wf = load_text(t);
    ck_assert_int_eq(wf->broker.max_per_family, 1);
    ck_assert_int_eq(wf->answer.compare, WORKFLOW_COMPARE_NUMERIC);
    ck_assert(wf->answer.tolerance == 1e-6);
    ck_assert(tu_contains(wf->prompts.propose, "last number"));
    ck_assert(!tu_contains(wf->prompts.propose, "boxed"));
    workflow_free(wf);
    free(t);
}
END_TEST

START_TEST(full_file_every_key)
{
    workflow *wf;
    const workflow_model *m;
    const workflow_team *big, *small;

    setenv("NSED_WF_TEST_MODEL", "served-8b", 1);
    unsetenv("NSED_WF_TEST_URL");
    wf = load_path(GOOD_DIR "/full.yaml");
    ck_assert_str_eq(wf->name, "full-1.0");
    ck_assert_int_eq(wf->version, 3);
    ck_assert(wf->seed == UINT64_MAX);
    m = &wf->models[0];
    ck_assert_str_eq(m->endpoint, "http://127.0.0.1:9000/v1");
    ck_assert_str_eq(m->model, "served-8b");
    ck_assert_str_eq(m->api_key_env, "NSED_WF_TEST_KEY");
    ck_assert_str_eq(m->family, "fam-a");
    ck_assert(m->size_b == 8);
    ck_assert_str_eq(m->placement_host, "node1");
    ck_assert_int_eq(m->placement_gpu, 0);
    ck_assert(m->placement_vram_gb == 18.5);
    ck_assert_int_eq(m->max_concurrency, 16);
    ck_assert(m->price_input_per_mtok == 0.15);
    ck_assert(m->price_output_per_mtok == 0.6);
    ck_assert(m->connect_timeout_s == 2.5 && m->request_timeout_s == 120);
    ck_assert(m->sampling.temperature == 0 && m->sampling.top_p == 0.9);
    ck_assert_int_eq(m->sampling.max_tokens, 2048);
    ck_assert(m->sampling.has_seed && m->sampling.seed == 7);
    ck_assert_uint_eq(m->sampling.nstop, 2);
    ck_assert_str_eq(m->sampling.stop[0], "</s>");
    ck_assert(m->structured_output);
    ck_assert(m->prior_p_gen == 0.4 && m->prior_p_ver == 0.7);
    ck_assert_str_eq(wf->models[2].endpoint, "http://10.0.0.3:8002");

    ck_assert_int_eq(wf->gateway.retry_max_attempts, 3);
    ck_assert_int_eq(wf->gateway.retry_base_delay_ms, 100);
    ck_assert_int_eq(wf->gateway.retry_max_delay_ms, 2000);
    ck_assert(wf->gateway.retry_max_total_s == 60);
    ck_assert_int_eq(wf->gateway.breaker_failures, 2);
    ck_assert(wf->gateway.breaker_cooldown_s == 5);
    ck_assert_uint_eq(wf->gateway.max_response_bytes, 65536);

    ck_assert_int_eq(wf->broker.policy, WORKFLOW_POLICY_KNAPSACK);
    ck_assert_int_eq(wf->broker.objective, WORKFLOW_OBJECTIVE_VERIFICATION);
    ck_assert(wf->broker.budget_usd_per_question == 0.25);
    ck_assert_int_eq(wf->broker.budget_tokens_per_question, 50000);
    ck_assert(wf->broker.vram_per_gpu_gb == 24);
    ck_assert_int_eq(wf->broker.team_size_min, 2);
    ck_assert_int_eq(wf->broker.team_size_max, 3);
    ck_assert_int_eq(wf->broker.max_per_family, 2);
    ck_assert(wf->broker.evaluator_min_pv == 0.55);
    ck_assert(wf->broker.prior_strength == 8);

    /* teams are sorted by name; roles keep file order */
    ck_assert_uint_eq(wf->nteams, 2);
    big = &wf->teams[0];
    small = &wf->teams[1];
    ck_assert_str_eq(big->name, "big");
    ck_assert_str_eq(small->name, "small");
    ck_assert_ptr_eq(wf->broker.default_team, small);
    ck_assert_uint_eq(wf->broker.ntiers, 2);
    ck_assert_ptr_eq(wf->broker.tiers[0].team, big);
    ck_assert_int_eq(big->seats, 3);
    ck_assert_str_eq(big->roles[1].name, "critic");
    ck_assert_str_eq(big->roles[1].persona, "You find flaws.");
    /* critic admits m20 by id and m8 by family fam-a */
    ck_assert_uint_eq(big->roles[1].nallowed, 2);
    ck_assert_uint_eq(big->roles[1].allowed[0], 0);
    ck_assert_uint_eq(big->roles[1].allowed[1], 2);
    ck_assert_uint_eq(big->roles[0].nallowed, 2);

    ck_assert_int_eq(wf->rounds.min, 2);
    ck_assert_int_eq(wf->rounds.max, 6);
    ck_assert(wf->rounds.consensus_margin == 0.75);
    ck_assert_int_eq(wf->rounds.stable_answer, 3);
    ck_assert(wf->rounds.fatigue && wf->rounds.fatigue_effort == 1.5);
    ck_assert(wf->rounds.fatigue_p_g == 0.5 && wf->rounds.fatigue_p_v == -1);
    ck_assert(wf->rounds.fatigue_lambda == 1.2 &&
              wf->rounds.fatigue_beta == -1);
    ck_assert_uint_eq(wf->rounds.carry,
                      WORKFLOW_CARRY_SCORES | WORKFLOW_CARRY_WINNER);
    ck_assert_int_eq(wf->rounds.max_table_chars, 500);

    ck_assert_int_eq(wf->scoring.scheme, WORKFLOW_SCHEME_BORDA);
    ck_assert(wf->scoring.allow_self_votes && wf->scoring.reliability_weighting);
    ck_assert_int_eq(wf->scoring.tie_break[0], WORKFLOW_TIE_SEEDED);
    ck_assert_int_eq(wf->scoring.tie_break[2], WORKFLOW_TIE_MIN_PEER_SCORE);
    ck_assert_int_eq(wf->answer.extract, WORKFLOW_EXTRACT_REGEX);
    ck_assert_str_eq(wf->answer.pattern, "ANSWER: *([0-9]+)");
    ck_assert(wf->answer.tolerance == 0.5);
    ck_assert_str_eq(wf->prompts.system, "You are {role}. {persona}");
    ck_assert(tu_contains(wf->prompts.propose, "{{braces}}"));
    ck_assert(tu_contains(workflow_canonical(wf),
                          "\"carry\":[\"winner\",\"scores\"]"));
    ck_assert(tu_contains(workflow_canonical(wf),
                          "\"seed\":18446744073709551615"));
    workflow_free(wf);
}
END_TEST

START_TEST(numbers_parse_strictly)
{
    char *t;
    workflow *wf;

    /* 1e3 is an integer written as a float; -0 is 0; +2 is 2 */
    t = subst(MINI, "model: sim-alpha\n",
              "model: sim-alpha\n    sampling: {max_tokens: 1e3}\n"
              "    price: {input_per_mtok: -0, output_per_mtok: 1.5e-1}\n");
    wf = load_text(t);
    ck_assert_int_eq(wf->models[0].sampling.max_tokens, 1000);
    ck_assert(wf->models[0].price_output_per_mtok == 0.15);
    ck_assert(tu_contains(workflow_canonical(wf), "\"input_per_mtok\":0,"
                          "\"output_per_mtok\":0.15}"));
    workflow_free(wf);
    free(t);
}
END_TEST

START_TEST(team_names_are_free_text)
{
    /* only schema keys are checked for credentials, not names users pick */
    char *t = subst(MINI, "  main:\n", "  token:\n");
    workflow *wf = load_text(t);

    ck_assert_str_eq(wf->teams[0].name, "token");
    ck_assert_ptr_eq(wf->broker.default_team, &wf->teams[0]);
    workflow_free(wf);
    free(t);
}
END_TEST

/* ---- interpolation ----------------------------------------------------- */

START_TEST(interpolation_set_unset_default)
{
    char *t = subst(MINI, "http://127.0.0.1:8089/v1\n    model: sim-alpha",
                    "${NSED_WF_T_URL:-http://127.0.0.1:7000/v1/}\n"
                    "    model: ${NSED_WF_T_MODEL}-x\n"
                    "    family: ${NSED_WF_T_URL}");
    workflow *wf;
    nsed_err e = {0};

    /* family is not interpolated: "${" there is not a valid name */
    setenv("NSED_WF_T_MODEL", "served", 1);
    load_bad(t, &e);
    ck_assert_msg(tu_contains(e.msg, "models[0].family \"${NSED_WF_T_URL}\" "
                              "is not a valid name"), "%s", e.msg);
    free(t);
    t = subst(MINI, "http://127.0.0.1:8089/v1\n    model: sim-alpha",
              "${NSED_WF_T_URL:-http://127.0.0.1:7000/v1/}\n"
              "    model: ${NSED_WF_T_MODEL}-x");

    /* unset with a default: the default (trailing slash dropped) */
    unsetenv("NSED_WF_T_URL");
    wf = load_text(t);
    ck_assert_str_eq(wf->models[0].endpoint, "http://127.0.0.1:7000/v1");
    ck_assert_str_eq(wf->models[0].model, "served-x");
    ck_assert_str_eq(wf->models[0].model_raw, "${NSED_WF_T_MODEL}-x");
    ck_assert_str_eq(workflow_resolved_json(wf),
                     "{\"models\":{\"a\":{\"endpoint\":\"http://127.0.0.1:"
                     "7000/v1\",\"model\":\"served-x\"},\"b\":{\"endpoint\":"
                     "\"http://127.0.0.1:8089/v1\",\"model\":\"sim-beta\"}}}");
    ck_assert(tu_contains(workflow_canonical(wf), "\"endpoint\":\"${NSED_WF_"
                          "T_URL:-http://127.0.0.1:7000/v1/}\""));
    workflow_free(wf);

    /* set: the variable's value; empty: the default, as in the shell */
    setenv("NSED_WF_T_URL", "https://h.example/v9", 1);
    wf = load_text(t);
    ck_assert_str_eq(wf->models[0].endpoint, "https://h.example/v9");
    workflow_free(wf);
    setenv("NSED_WF_T_URL", "", 1);
    wf = load_text(t);
    ck_assert_str_eq(wf->models[0].endpoint, "http://127.0.0.1:7000/v1");
    workflow_free(wf);

    /* unset without a default: error naming it, suggesting :-default */
    unsetenv("NSED_WF_T_MODEL");
    load_bad(t, &e);
    ck_assert_str_eq(e.msg, "t.yaml:6:12: environment variable "
                            "NSED_WF_T_MODEL is not set (used in "
                            "models[0].model); set it or write "
                            "${NSED_WF_T_MODEL:-default}");
    free(t);

    /* a variable that expands to something that is not a URL */
    setenv("NSED_WF_T_URL", "localhost:8000", 1);
    t = subst(MINI, "http://127.0.0.1:8089/v1\n    model: sim-alpha",
              "${NSED_WF_T_URL}\n    model: sim-alpha");
    load_bad(t, &e);
    ck_assert_msg(tu_contains(e.msg, "(got \"localhost:8000\" after "
                              "expanding variables)"), "%s", e.msg);
    free(t);
    /* a bad variable name */
    t = subst(MINI, "model: sim-alpha", "model: ${1X}");
    load_bad(t, &e);
    ck_assert_msg(tu_contains(e.msg, "bad variable reference in "
                              "models[0].model"), "%s", e.msg);
    free(t);
}
END_TEST

START_TEST(interpolation_only_in_endpoint_and_model)
{
    char *t = subst(MINI, "count: 2\n",
                    "count: 2\n        persona: \"costs ${HOME} dollars\"\n");
    workflow *wf = load_text(t);

    ck_assert_str_eq(wf->teams[0].roles[0].persona, "costs ${HOME} dollars");
    workflow_free(wf);
    free(t);
}
END_TEST

/* ---- prompts ----------------------------------------------------------- */

static int starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

START_TEST(default_prompts_follow_the_protocol)
{
    static const char block[] =
        "=====BEGIN QUESTION=====\n{question}\n=====END QUESTION=====";
    workflow *wf = load_text(MINI);
    const workflow_prompts *p = &wf->prompts;
    const char *q, *w, *o, *c, *s, *r, *shape, *cand, *lab;

    /* propose: the fixed instructions, then the question, last */
    ck_assert(starts_with(p->propose, "Solve the question below. Reason "
                                      "step by step, then "));
    ck_assert(tu_contains(p->propose, "\\boxed{{"));
    q = strstr(p->propose, block);
    ck_assert_ptr_nonnull(q);
    ck_assert_str_eq(q, block);
    /* revise: every fixed sentence before the question, the round's
     * material after it */
    ck_assert(starts_with(p->revise, "Solve the question below. You "
                                     "answered it before, "));
    q = strstr(p->revise, block);
    ck_assert_ptr_nonnull(q);
    ck_assert(strstr(p->revise, "Critiques can be wrong too.") < q);
    ck_assert(strstr(p->revise, "reply with the single word SKIP.") < q);
    r = strstr(p->revise, "Round {round}.");
    w = strstr(p->revise, "{winner}");
    o = strstr(p->revise, "{own_previous}");
    c = strstr(p->revise, "{critiques}");
    s = strstr(p->revise, "{scores}");
    ck_assert(r && w && o && c && s);
    ck_assert(q < r && r < w && w < o && o < c && c < s);
    ck_assert_str_eq(q + strlen(block), "\n\nRound {round}.\n\n{winner}\n\n"
                                        "{own_previous}\n\n{critiques}\n\n"
                                        "{scores}");
    /* evaluate: the review instructions and the JSON shape, then the
     * question, the candidates and the line naming their labels */
    ck_assert(starts_with(p->evaluate, "Review the candidate answers to "
                                       "the question below. "));
    shape = strstr(p->evaluate, "{{\"evaluations\":[{{\"candidate\":\"A\","
                                "\"weight\":<integer -100..100>,\"critique\":"
                                "\"...\"}}]}}");
    q = strstr(p->evaluate, block);
    cand = strstr(p->evaluate, "{candidates}");
    lab = strstr(p->evaluate, "{labels}");
    ck_assert(shape && q && cand && lab);
    ck_assert(shape < q && q < cand && cand < lab);
    ck_assert_str_eq(q + strlen(block), "\n\n{candidates}\n\n"
                                        "Evaluate every candidate shown: "
                                        "{labels}.");
    ck_assert(tu_contains(p->repair, "{error}"));
    ck_assert(tu_contains(p->system, "{role}") &&
              tu_contains(p->system, "{persona}"));
    workflow_free(wf);
}
END_TEST

/* Two questions' rendered prompts are byte-identical up to the question
 * block: what a prefix cache serves across questions. */
START_TEST(default_prompts_share_the_fixed_text)
{
    workflow *wf = load_text(MINI);
    const char *tmpl[] = {wf->prompts.propose, wf->prompts.revise,
                          wf->prompts.evaluate};
    workflow_prompt_var v1[] = {
        {"question", "What is 17 * 23?"},
        {"round", "1"},
        {"winner", "W1"},
        {"own_previous", "O1"},
        {"critiques", "C1"},
        {"scores", "S1"},
        {"candidates", "K1"},
        {"labels", "A, B"},
    };
    workflow_prompt_var v2[] = {
        {"question", "Name a prime."}, {"round", "2"},      {"winner", "W2"},
        {"own_previous", "O2"},        {"critiques", "C2"}, {"scores", "S2"},
        {"candidates", "K2"},          {"labels", "C"},
    };
    /* the last fixed sentence of each, which must come before the
     * question */
    const char *last[] = {"reply with the single word SKIP.\n\n",
                          "reply with the single word SKIP.\n\n",
                          "one entry per candidate:\n{\"evaluations\":"};
    static const char mark[] = "=====BEGIN QUESTION=====\n";
    buf b1, b2;

    buf_init(&b1, 1 << 16);
    buf_init(&b2, 1 << 16);
    for (size_t i = 0; i < 3; i++) {
        const char *q1, *q2;
        size_t common = 0;

        buf_reset(&b1);
        buf_reset(&b2);
        ck_assert_int_eq(workflow_prompt_render(tmpl[i], v1, 8, &b1), 0);
        ck_assert_int_eq(workflow_prompt_render(tmpl[i], v2, 8, &b2), 0);
        q1 = strstr(b1.ptr, mark);
        q2 = strstr(b2.ptr, mark);
        ck_assert(q1 && q2 && q1 - b1.ptr == q2 - b2.ptr);
        while (b1.ptr[common] && b1.ptr[common] == b2.ptr[common])
            common++;
        /* the prompts part at the question's first byte, "W" against "N" */
        ck_assert_uint_eq(common, (size_t)(q1 - b1.ptr) + strlen(mark));
        ck_assert_ptr_nonnull(memmem(b1.ptr, (size_t)(q1 - b1.ptr), last[i],
                                     strlen(last[i])));
    }
    buf_release(&b1);
    buf_release(&b2);
    workflow_free(wf);
}
END_TEST

START_TEST(render_expands_and_unescapes)
{
    workflow *wf = load_text(MINI);
    workflow_prompt_var vars[] = {
        {"question", "What is 17 * 23?"},
        {"candidates", "=====BEGIN CANDIDATE A=====\nx\n=====END CANDIDATE "
                       "A====="},
        {"labels", "A"},
    };
    buf b;

    buf_init(&b, 1 << 16);
    ck_assert_int_eq(workflow_prompt_render(wf->prompts.evaluate, vars, 3, &b),
                     0);
    ck_assert(starts_with(b.ptr, "Review the candidate answers to the "
                                 "question below. "));
    ck_assert(tu_contains(b.ptr, "=====BEGIN QUESTION=====\nWhat is 17 * 23?\n"
                                 "=====END QUESTION=====\n\n=====BEGIN "
                                 "CANDIDATE A=====\nx\n"));
    ck_assert(tu_contains(b.ptr, "\n\nEvaluate every candidate shown: A."));
    ck_assert(tu_contains(b.ptr, "{\"evaluations\":[{\"candidate\":\"A\","
                                 "\"weight\":<integer -100..100>,"
                                 "\"critique\":\"...\"}]}"));
    ck_assert(!tu_contains(b.ptr, "{{"));
    buf_reset(&b);
    ck_assert_int_eq(workflow_prompt_render(wf->prompts.propose, vars, 1, &b),
                     0);
    ck_assert(tu_contains(b.ptr, "\\boxed{ANSWER}"));
    buf_reset(&b);
    /* a placeholder without a value, an unpaired brace, the cap */
    ck_assert_int_eq(workflow_prompt_render("x {labels}", vars, 1, &b),
                     NSED_EINVAL);
    ck_assert_int_eq(workflow_prompt_render("x } y", vars, 1, &b),
                     NSED_EINVAL);
    buf_release(&b);
    buf_init(&b, 8);
    ck_assert_int_eq(workflow_prompt_render("{question}", vars, 1, &b),
                     NSED_ETOOBIG);
    buf_release(&b);
    workflow_free(wf);
}
END_TEST

START_TEST(placeholders_validated)
{
    static const struct {
        const char *prompts;
        const char *expect;
    } bad[] = {
        {"{system: \"{question}\"}",
         "misplaced placeholder {question} in prompts.system; allowed there: "
         "{persona} {role}"},
        {"{repair: \"{candidates}\"}", "misplaced placeholder {candidates}"},
        {"{evaluate: \"{question} {labels}\"}",
         "prompts.evaluate must contain {candidates}"},
        {"{revise: \"{question} {round} {answer}\"}",
         "unknown placeholder {answer} in prompts.revise"},
        {"{system: \"a } b\"}", "unpaired \"}\" in prompts.system"},
        {"{system: \"{ role }\"}", "unpaired \"{\" in prompts.system"},
        {"{system: 42}", NULL},
        {"{system: [a]}", "prompts.system must be a string, not a list"},
    };
    nsed_err e = {0};

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char line[256], *t;
        workflow *wf;

        snprintf(line, sizeof line, "version: 1\nprompts: %s\n",
                 bad[i].prompts);
        t = subst(MINI, "version: 1\n", line);
        if (!bad[i].expect) {
            /* a plain number is text where a string goes */
            wf = load_text(t);
            ck_assert_str_eq(wf->prompts.system, "42");
            workflow_free(wf);
        } else {
            load_bad(t, &e);
            ck_assert_msg(strncmp(e.msg, "t.yaml:3:", 9) == 0, "%s", e.msg);
            ck_assert_msg(tu_contains(e.msg, bad[i].expect), "%zu: %s", i,
                          e.msg);
        }
        free(t);
    }
}
END_TEST

/* ---- secrets ----------------------------------------------------------- */

START_TEST(secrets_never_echoed)
{
    static const char *const lines[] = {
        "    api_key: sk-abcdefSECRET\n",
        "    Authorization: \"Bearer abcdefSECRET\"\n",
        "    token: abcdefSECRET\n",
        "    apikey: abcdefSECRET\n",
        "    api_key_env: sk-abcdefSECRET\n",
        "    api_key_env: my_key_abcdefSECRET\n",
        "    api_key_env: [abcdefSECRET]\n",
        "    timeouts: {key: abcdefSECRET}\n",
    };
    nsed_err e = {0};

    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
        char repl[256], *t;

        snprintf(repl, sizeof repl, "model: sim-alpha\n%s", lines[i]);
        t = subst(MINI, "model: sim-alpha\n", repl);
        ck_assert_int_eq(load_bad(t, &e), NSED_EINVAL);
        ck_assert_msg(tu_contains(e.msg, "API keys may not be written in a "
                                  "workflow; name an environment variable "
                                  "with api_key_env"), "%zu: %s", i, e.msg);
        ck_assert_msg(strncmp(e.msg, "t.yaml:7:", 9) == 0, "%s", e.msg);
        ck_assert_msg(!tu_contains(e.msg, "SECRET"), "%zu: %s", i, e.msg);
        free(t);
    }
    /* a key pasted where a URL goes is not echoed either */
    {
        char *t = subst(MINI, "http://127.0.0.1:8089/v1\n    model: sim-beta",
                        "sk-abcdefSECRET\n    model: sim-beta");

        load_bad(t, &e);
        ck_assert_msg(!tu_contains(e.msg, "SECRET"), "%s", e.msg);
        free(t);
    }
}
END_TEST

/* ---- lookups ----------------------------------------------------------- */

START_TEST(lookups)
{
    static const char *const hard[] = {"x", "olympiad"};
    static const char *const easy[] = {"easy", "hard"};
    static const char *const none[] = {"geometry"};
    workflow *wf;
    const workflow_model *m;

    setenv("NSED_WF_TEST_MODEL", "served-8b", 1);
    wf = load_path(GOOD_DIR "/full.yaml");
    m = workflow_model_find(wf, "m12");
    ck_assert_ptr_nonnull(m);
    ck_assert_str_eq(m->model, "model-12b");
    ck_assert_uint_eq(workflow_model_index(wf, m), 1);
    ck_assert_ptr_null(workflow_model_find(wf, "m13"));
    ck_assert_ptr_null(workflow_team_find(wf, "medium"));
    /* the first tier that lists any of the tags wins */
    ck_assert_str_eq(workflow_team_for_tags(wf, hard, 2)->name, "big");
    ck_assert_str_eq(workflow_team_for_tags(wf, easy, 2)->name, "big");
    ck_assert_str_eq(workflow_team_for_tags(wf, easy, 1)->name, "small");
    ck_assert_str_eq(workflow_team_for_tags(wf, none, 1)->name, "small");
    ck_assert_str_eq(workflow_team_for_tags(wf, NULL, 0)->name, "small");
    ck_assert_str_eq(workflow_policy_name(wf->broker.policy), "knapsack");
    ck_assert_str_eq(workflow_extract_name(wf->answer.extract), "regex");
    ck_assert_str_eq(workflow_scheme_name(WORKFLOW_SCHEME_QUADRATIC_CREDITS),
                     "quadratic_credits");
    workflow_free(wf);
    workflow_free(NULL);
}
END_TEST

/* ---- the seed override ------------------------------------------------- */

/* A seed given to the load is part of the workflow: canonical text and
 * hash are those of the same file with that seed written in it. */
START_TEST(seed_option_is_hashed_like_a_written_seed)
{
    static const struct {
        uint64_t seed;
        const char *line;
    } cases[] = {{7, "seed: 7\n"},
                 {UINT64_MAX, "seed: 18446744073709551615\n"}};
    workflow_options opt = {.has_seed = true};
    char *with_line, *text, *plain = hash_of_text(MINI);

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        workflow *a = NULL, *b;
        nsed_err e = {0};
        size_t n;

        opt.seed = cases[i].seed;
        ck_assert_int_eq(workflow_load_string_with("t.yaml", MINI,
                                                   strlen(MINI), &opt, &a, &e),
                         0);
        with_line = subst(MINI, "version: 1\n", "");
        n = strlen(cases[i].line) + strlen(with_line) + 16;
        text = malloc(n);
        ck_assert_ptr_nonnull(text);
        snprintf(text, n, "version: 1\n%s%s", cases[i].line, with_line);
        b = load_text(text);
        free(text);
        ck_assert(a->seed == cases[i].seed);
        ck_assert_str_eq(workflow_canonical(a), workflow_canonical(b));
        ck_assert_str_eq(workflow_hash(a), workflow_hash(b));
        ck_assert_str_ne(workflow_hash(a), plain);
        workflow_free(a);
        workflow_free(b);
        free(with_line);
    }
    /* a file's own seed is replaced, not added to */
    text = subst(MINI, "version: 1\n", "version: 1\nseed: 99\n");
    {
        workflow *a = NULL;
        nsed_err e = {0};

        opt.seed = 0;
        ck_assert_int_eq(workflow_load_string_with("t.yaml", text,
                                                   strlen(text), &opt, &a, &e),
                         0);
        ck_assert_uint_eq(a->seed, 0);
        ck_assert_str_eq(workflow_hash(a), plain);
        workflow_free(a);
        free(text);
    }
    /* no option, or has_seed false: the file's seed */
    opt = (workflow_options){.has_seed = false, .seed = 5};
    {
        workflow *a = NULL;
        nsed_err e = {0};

        ck_assert_int_eq(workflow_load_string_with("t.yaml", MINI,
                                                   strlen(MINI), &opt, &a, &e),
                         0);
        ck_assert_uint_eq(a->seed, 0);
        ck_assert_str_eq(workflow_hash(a), plain);
        workflow_free(a);
    }
    free(plain);
}
END_TEST

#define DEMO_WF EXAMPLES "/demo.yaml"
#define DEMO_Q EXAMPLES "/demo-questions.jsonl"
#define DEMO_SIM NSED_SOURCE_DIR "/tests/sim/configs/demo-sim.yaml"

/* `nsed run --seed N` records the hash of what ran: the hash `nsed
 * validate` prints for a copy of the workflow with `seed: N` written in. */
START_TEST(run_seed_stores_the_hash_of_what_ran)
{
    char *sdir = tu_path(tu_tmp, "store"), *copy = tu_path(tu_tmp, "w.yaml");
    char *text = tu_read_file(DEMO_WF, NULL), *at, *out = NULL, *err = NULL;
    const char *hash;
    cJSON *st, *man;
    tu_sim sim;

    /* the copy: demo.yaml with seed 42 replaced by seed 7 */
    ck_assert_ptr_nonnull(text);
    at = strstr(text, "seed: 42 ");
    ck_assert_ptr_nonnull(at);
    memcpy(at, "seed: 7  ", 9);
    tu_write_file(copy, text, (size_t)-1);

    tu_sim_start(&sim, DEMO_SIM, NULL, NULL);
    ck_assert_msg(TU_NSED(sim.url, &out, &err, "run", DEMO_WF, "--questions",
                          DEMO_Q, "--store", sdir, "--seed", "7", "--limit",
                          "1", "--quiet") == 0,
                  "%s", err);
    free(out);
    free(err);
    tu_sim_stop(&sim);

    st = tu_nsed_status(sdir);
    man = cJSON_GetObjectItemCaseSensitive(st, "manifest");
    hash = cJSON_GetStringValue(
        cJSON_GetObjectItemCaseSensitive(man, "workflow_hash"));
    ck_assert_ptr_nonnull(hash);
    ck_assert_str_eq(cJSON_GetStringValue(
                         cJSON_GetObjectItemCaseSensitive(man, "seed")),
                     "7");
    ck_assert_int_eq(TU_NSED(NULL, &out, &err, "validate", "-q", copy), 0);
    ck_assert_msg(tu_contains(out, hash), "%s does not print %s", out, hash);
    free(out);
    free(err);
    /* and it is not the hash of the file as written (seed 42) */
    ck_assert_int_eq(TU_NSED(NULL, &out, &err, "validate", "-q", DEMO_WF), 0);
    ck_assert(!tu_contains(out, hash));
    free(out);
    free(err);
    cJSON_Delete(st);
    free(text);
    free(copy);
    free(sdir);
}
END_TEST

/* ---- the key reference ------------------------------------------------- */

/* docs/workflow-keys.md is what the key table prints, so the docs cannot
 * drift from the loader. */
START_TEST(key_reference_is_generated)
{
    char *committed = tu_read_file(NSED_SOURCE_DIR "/docs/workflow-keys.md",
                                   NULL);
    buf b;

    buf_init(&b, (size_t)1 << 20);
    ck_assert_int_eq(workflow_keys_markdown(&b), 0);
    ck_assert_msg(committed != NULL, "docs/workflow-keys.md is missing");
    ck_assert_msg(strcmp(committed, b.ptr) == 0,
                  "docs/workflow-keys.md is stale: regenerate it with "
                  "./build/pipeline/workflow/nsed-workflow-keys > "
                  "docs/workflow-keys.md");
    /* every key has its meaning written, and rows read as documented */
    ck_assert(!tu_contains(b.ptr, "(null)"));
    ck_assert(tu_contains(b.ptr, "\n| `models[].sampling.temperature` | "
                                 "number | `0.7` | [0, 2] |"));
    ck_assert(tu_contains(b.ptr, "\n| `teams.<name>.roles[].count` | "
                                 "integer | `1` | 1..64 |"));
    buf_release(&b);
    free(committed);
}
END_TEST

START_TEST(extra_body_loads_and_hashes)
{
    char *t = subst(MINI, "model: sim-beta\n",
                    "model: sim-beta\n"
                    "    extra_body:\n"
                    "      cache_prompt: false\n"
                    "      id_slot: 3\n"
                    "      samplers: [top_k, \"min_p\"]\n");
    char *t2 = subst(MINI, "model: sim-beta\n",
                     "model: sim-beta\n"
                     "    extra_body: {cache_prompt: true}\n");
    workflow *wf = load_text(t), *mini = load_text(MINI), *wf2 = load_text(t2);
    char *tp = NULL;
    workflow *pinned;

    ck_assert_int_gt(asprintf(&tp, "%s%s", MINI, tu_previous_prompts), 0);
    pinned = load_text(tp);

    ck_assert_ptr_null(mini->models[1].extra_body);
    ck_assert_str_eq(wf->models[1].extra_body,
                     "{\"cache_prompt\":false,\"id_slot\":3,"
                     "\"samplers\":[\"top_k\",\"min_p\"]}");
    ck_assert_ptr_null(wf->models[0].extra_body);
    /* in the canonical form where given, after structured_output */
    ck_assert(tu_contains(workflow_canonical(wf),
                          "\"structured_output\":false,\"extra_body\":{"
                          "\"cache_prompt\":false,"));
    ck_assert(!tu_contains(workflow_canonical(mini), "extra_body"));
    /* its value is hashed; a workflow without it keeps the hash it had
     * before the key existed (pinned from the tree just before extra_body
     * was merged, which already had rounds.min_live_seats), given the
     * default prompts of that tree */
    ck_assert_str_ne(workflow_hash(wf), workflow_hash(mini));
    ck_assert_str_ne(workflow_hash(wf), workflow_hash(wf2));
    ck_assert_str_eq(workflow_hash(pinned), "8bb633191950a79a6184f864e5935e40"
                                            "56765458af21721a0e90c0e6aade882a");
    ck_assert_str_ne(workflow_hash(mini), workflow_hash(pinned));
    workflow_free(wf);
    workflow_free(wf2);
    workflow_free(mini);
    workflow_free(pinned);
    free(tp);
    free(t);
    free(t2);
}
END_TEST

START_TEST(extra_body_refuses_what_nsed_sets)
{
    static const char *const cases[][2] = {
        {"    extra_body: {cache_prompt: false, max_tokens: 5}\n",
         "t.yaml:10:39: models[1].extra_body.max_tokens is set by nsed "
         "(use sampling.max_tokens)"},
        {"    extra_body:\n      seed: 1\n",
         "t.yaml:11:7: models[1].extra_body.seed is set by nsed (use "
         "sampling.seed)"},
        {"    extra_body: {messages: []}\n",
         "t.yaml:10:18: models[1].extra_body.messages is set by nsed"},
        {"    extra_body: {response_format: {type: text}}\n",
         "models[1].extra_body.response_format is set by nsed"},
        {"    extra_body: {stream: true}\n",
         "models[1].extra_body.stream is set by nsed"},
        {"    extra_body: {model: x}\n",
         "models[1].extra_body.model is set by nsed"},
        {"    extra_body: [cache_prompt]\n",
         "t.yaml:10:17: models[1].extra_body must be a mapping, not a list"},
        {"    extra_body: {big: 1e999}\n",
         "t.yaml:10:23: models[1].extra_body: 1e999 is out of range"},
    };

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *lines = malloc(strlen(cases[i][0]) + 32), *t;
        nsed_err e = {0};

        ck_assert_ptr_nonnull(lines);
        snprintf(lines, strlen(cases[i][0]) + 32, "model: sim-beta\n%s",
                 cases[i][0]);
        t = subst(MINI, "model: sim-beta\n", lines);
        ck_assert_int_eq(load_bad(t, &e), NSED_EINVAL);
        ck_assert_msg(tu_contains(e.msg, cases[i][1]), "case %zu: [%s]", i,
                      e.msg);
        free(t);
        free(lines);
    }
}
END_TEST

/* baselines: at its defaults (absent, or written out) the hash is the
 * one of the file without it; switched on, or naming a model, it is not;
 * the model resolves to its index. */
START_TEST(baselines_change_the_hash_only_when_set)
{
    char *base = hash_of_text(MINI), *t, *h;
    workflow *wf;

    t = subst(MINI, "version: 1\n",
              "version: 1\nbaselines: {self_consistency: false}\n");
    h = hash_of_text(t);
    ck_assert_str_eq(h, base);
    free(h);
    free(t);
    t = subst(MINI, "version: 1\n",
              "version: 1\nbaselines: {self_consistency: true}\n");
    h = hash_of_text(t);
    ck_assert_str_ne(h, base);
    free(h);
    wf = load_text(t);
    ck_assert(wf->baselines.self_consistency);
    ck_assert_ptr_null(wf->baselines.sc_model);
    ck_assert_uint_eq(wf->baselines.sc_model_index, SIZE_MAX);
    ck_assert(tu_contains(workflow_canonical(wf),
                          "\"baselines\":{\"self_consistency\":true}"));
    workflow_free(wf);
    free(t);
    t = subst(MINI, "version: 1\n",
              "version: 1\nbaselines: {self_consistency_model: b}\n");
    h = hash_of_text(t);
    ck_assert_str_ne(h, base);
    free(h);
    wf = load_text(t);
    ck_assert_uint_eq(wf->baselines.sc_model_index, 1);
    workflow_free(wf);
    free(t);
    free(base);
}
END_TEST

Suite *tu_suite(void)
{
    Suite *s = suite_create("workflow");
    TCase *tc;

    tc = tcase_create("broken files");
    tcase_add_test(tc, bad_files_table);
    tcase_add_test(tc, bad_empty_file);
    tcase_add_test(tc, bad_oversize_file);
    tcase_add_test(tc, bad_alias_bombs);
    tcase_add_test(tc, bad_missing_file);
    tcase_add_test(tc, bad_messages_inline);
    suite_add_tcase(s, tc);
    tc = tcase_create("examples");
    tcase_add_test(tc, examples_load);
    tcase_add_test(tc, example_demo_fields);
    tcase_add_test(tc, example_deployments_fields);
    suite_add_tcase(s, tc);
    tc = tcase_create("canonical form and hash");
    tcase_add_test(tc, hash_stable_across_layout);
    tcase_add_test(tc, hash_changes_with_any_value);
    tcase_add_test(tc, hash_ignores_written_defaults);
    tcase_add_test(tc, canonical_is_compact_json_in_schema_order);
    tcase_add_test(tc, print_normalized_matches_canonical);
    suite_add_tcase(s, tc);
    tc = tcase_create("defaults and values");
    tcase_add_test(tc, defaults_are_filled);
    tcase_add_test(tc, knapsack_defaults_and_compare_default);
    tcase_add_test(tc, full_file_every_key);
    tcase_add_test(tc, numbers_parse_strictly);
    tcase_add_test(tc, team_names_are_free_text);
    suite_add_tcase(s, tc);
    tc = tcase_create("interpolation");
    tcase_add_test(tc, interpolation_set_unset_default);
    tcase_add_test(tc, interpolation_only_in_endpoint_and_model);
    suite_add_tcase(s, tc);
    tc = tcase_create("prompts");
    tcase_add_test(tc, default_prompts_follow_the_protocol);
    tcase_add_test(tc, default_prompts_share_the_fixed_text);
    tcase_add_test(tc, render_expands_and_unescapes);
    tcase_add_test(tc, placeholders_validated);
    tcase_add_test(tc, baselines_change_the_hash_only_when_set);
    suite_add_tcase(s, tc);
    tc = tcase_create("secrets");
    tcase_add_test(tc, secrets_never_echoed);
    suite_add_tcase(s, tc);
    tc = tcase_create("seed override");
    tcase_add_checked_fixture(tc, tu_tmp_setup, tu_tmp_teardown);
    tcase_add_test(tc, seed_option_is_hashed_like_a_written_seed);
    tcase_add_test(tc, run_seed_stores_the_hash_of_what_ran);
    suite_add_tcase(s, tc);
    tc = tcase_create("key reference");
    tcase_add_test(tc, key_reference_is_generated);
    suite_add_tcase(s, tc);
    tc = tcase_create("lookups");
    tcase_add_test(tc, lookups);
    suite_add_tcase(s, tc);
    tc = tcase_create("extra_body");
    tcase_add_test(tc, extra_body_loads_and_hashes);
    tcase_add_test(tc, extra_body_refuses_what_nsed_sets);
    suite_add_tcase(s, tc);
    return s;
}
