/* test_report.c -- `nsed report` in a real browser.
 *
 * A store made on nsed-sim (the demo workflow with an exploration slice, 30
 * of the demo questions), its report written by `nsed report` and loaded by
 * headless Chromium: the rendered DOM has each plot with one mark per data
 * point, the page logs nothing to the console, a PNG screenshot is saved,
 * and the numbers embedded in the page are those of `nsed status --json`,
 * field by field. The printed accuracy is recomputed from `nsed export`'s
 * rows and each model's interval from the Wilson formula, here. Needs
 * `chromium` on PATH (or $NSED_CHROMIUM); without it the suite prints one
 * line and exits 77 (skipped). */
#include "testutil.h"

#include <check.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define NQ 30

/* The chromium binary into buf: $NSED_CHROMIUM or the first `chromium` on
 * PATH; 0 when there is none. */
static int find_chromium(char *buf, size_t size)
{
    const char *env = getenv("NSED_CHROMIUM"), *path = getenv("PATH");

    if (env && *env) {
        snprintf(buf, size, "%s", env);
        return access(buf, X_OK) == 0;
    }
    while (path && *path) {
        size_t n = strcspn(path, ":");

        snprintf(buf, size, "%.*s/chromium", (int)n, path);
        if (n && access(buf, X_OK) == 0)
            return 1;
        path += n + (path[n] == ':');
    }
    return 0;
}

/* Replace the first `from` of s (which must have one) by `to`; malloc'd. */
static char *replace(const char *s, const char *from, const char *to)
{
    const char *p = strstr(s, from);
    size_t n = strlen(s) - strlen(from) + strlen(to) + 1;
    char *r = malloc(n);

    ck_assert_msg(p, "'%s' not found", from);
    ck_assert_ptr_nonnull(r);
    snprintf(r, n, "%.*s%s%s", (int)(p - s), s, to, p + strlen(from));
    return r;
}

typedef struct made {
    char *store, *html;
    cJSON *status;
    char *status_text;
} made;

/* The demo workflow with an exploration slice of half the questions and up
 * to 5 rounds, run over the first NQ demo questions into a store whose name
 * needs HTML escaping, then `nsed report` into html. */
static void make_store(made *m, const char *const *compare, size_t ncompare)
{
    char *demo = tu_read_file(NSED_SOURCE_DIR "/workflows/demo.yaml", NULL);
    char *qs = tu_read_file(NSED_SOURCE_DIR "/workflows/demo-questions.jsonl",
                            NULL);
    char *a, *wf, *wpath = tu_path(tu_tmp, "wf.yaml");
    char *qpath = tu_path(tu_tmp, "q.jsonl"), *p = qs, *out = NULL, *err = NULL;
    char *argv[16];
    int argc = 0, rc;
    tu_sim s;

    a = replace(demo, "  max: 4\n", "  max: 5\n");
    wf = replace(a, "    stable_answer: 2",
                 "    efficiency_fatigue: {explore: 0.5}\n"
                 "    stable_answer: 2");
    /* nsed-sim draws every outcome from a hash of the request, so the
     * fatigue fit this test draws needs the prompts it was written
     * against: the default prompts before the reorder for the prefix
     * cache, pinned */
    free(a);
    ck_assert_int_gt(asprintf(&a, "%s%s", wf, tu_previous_prompts), 0);
    tu_write_file(wpath, a, strlen(a));
    for (int i = 0; i < NQ; i++)
        p = strchr(p, '\n') + 1;
    tu_write_file(qpath, qs, (size_t)(p - qs));
    m->store = tu_path(tu_tmp, "store-<&'\">");
    m->html = tu_path(tu_tmp, "report.html");

    tu_sim_start(&s, NSED_SOURCE_DIR "/tests/sim/configs/demo-sim.yaml", NULL,
                 NULL);
    rc = TU_NSED(s.url, &out, &err, "run", wpath, "--questions", qpath,
                 "--store", m->store, "--quiet");
    ck_assert_msg(rc == 0, "nsed run exit %d: %s", rc, err);
    tu_sim_stop(&s);
    free(out);
    free(err);

    rc = TU_NSED(NULL, &m->status_text, &err, "status", "--store", m->store,
                 "--json");
    ck_assert_msg(rc == 0, "nsed status exit %d: %s", rc, err);
    free(err);
    m->status = cJSON_Parse(m->status_text);
    ck_assert_ptr_nonnull(m->status);

    argv[argc++] = NSED_BIN;
    argv[argc++] = "report";
    argv[argc++] = "--store";
    argv[argc++] = m->store;
    for (size_t i = 0; i < ncompare; i++) {
        argv[argc++] = "--compare";
        argv[argc++] = (char *)compare[i];
    }
    argv[argc++] = "-o";
    argv[argc++] = m->html;
    argv[argc] = NULL;
    rc = tu_run(argv, &out, &err);
    ck_assert_msg(rc == 0, "nsed report exit %d: %s", rc, err);
    free(out);
    free(err);
    free(a);
    free(wf);
    free(demo);
    free(qs);
    free(wpath);
    free(qpath);
}

static void made_free(made *m)
{
    free(m->store);
    free(m->html);
    free(m->status_text);
    cJSON_Delete(m->status);
}

/* The element <svg id="id" ...>...</svg> of dom (malloc'd); fails when
 * absent. */
static char *svg_of(const char *dom, const char *id)
{
    char key[64];
    const char *b, *e;
    char *r;

    snprintf(key, sizeof key, "<svg id=\"%s\"", id);
    b = strstr(dom, key);
    ck_assert_msg(b, "the rendered page has no %s", key);
    e = strstr(b, "</svg>");
    ck_assert_ptr_nonnull(e);
    r = strndup(b, (size_t)(e - b));
    ck_assert_ptr_nonnull(r);
    return r;
}

static int count(const char *s, const char *needle)
{
    int n = 0;

    for (const char *p = s; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

/* The marks of plot id in dom: elements whose class starts with "mark". */
static int marks(const char *dom, const char *id, const char *tag)
{
    char needle[64], *svg = svg_of(dom, id);
    int n;

    snprintf(needle, sizeof needle, "<%s class=\"mark", tag);
    n = count(svg, needle);
    free(svg);
    return n;
}

/* The text content of the element with id in html (up to the next '<'). */
static char *text_of(const char *html, const char *id)
{
    char key[64];
    const char *b, *e;
    char *r;

    snprintf(key, sizeof key, "id=\"%s\">", id);
    b = strstr(html, key);
    ck_assert_msg(b, "no element with id %s", id);
    b += strlen(key);
    e = strchr(b, '<');
    r = strndup(b, (size_t)(e - b));
    ck_assert_ptr_nonnull(r);
    return r;
}

/* The JSON of <script type="application/json" id="id"> parsed, with the
 * "<\/" the writer puts for "</" read back by the JSON parser itself. */
static cJSON *embedded(const char *html, const char *id)
{
    char key[96], *text;
    const char *b, *e;
    cJSON *j;

    snprintf(key, sizeof key, "<script type=\"application/json\" id=\"%s\">",
             id);
    b = strstr(html, key);
    ck_assert_msg(b, "no %s", key);
    b += strlen(key);
    e = strstr(b, "</script>");
    ck_assert_ptr_nonnull(e);
    text = strndup(b, (size_t)(e - b));
    j = cJSON_Parse(text);
    ck_assert_msg(j, "the embedded %s is not JSON", id);
    free(text);
    return j;
}

/* Run chromium headless on file with the extra argument; returns its
 * stderr (malloc'd) and the DOM it dumped into *dom (when dom). */
static char *chromium(const char *file, const char *extra, char **dom)
{
    char bin[4096], url[4096], udd[4096], *out = NULL, *err = NULL;
    char *argv[] = {bin,
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--enable-logging=stderr",
                    "--v=0",
                    udd,
                    "--window-size=1200,3000",
                    (char *)extra,
                    url,
                    NULL};
    int rc;

    ck_assert(find_chromium(bin, sizeof bin));
    snprintf(url, sizeof url, "file://%s", file);
    snprintf(udd, sizeof udd, "--user-data-dir=%s/chromium-profile", tu_tmp);
    rc = tu_run(argv, &out, &err);
    ck_assert_msg(rc == 0, "chromium exit %d: %s", rc, err);
    if (dom)
        *dom = out;
    else
        free(out);
    return err;
}

/* No console message at all (the page runs no script) and no uncaught
 * exception. Chromium logs each console message, whatever its level, as a
 * ":CONSOLE(" or ":CONSOLE:" line with --enable-logging=stderr. */
static void no_console(const char *err)
{
    ck_assert_msg(!tu_contains(err, ":CONSOLE"), "console output: %s", err);
    ck_assert_msg(!tu_contains(err, "Uncaught"), "uncaught: %s", err);
}

/* The Wilson score interval at z 1.96, written out here. */
static void wilson(double k, double n, double *lo, double *hi)
{
    double z = 1.959963984540054, p = k / n, z2 = z * z;
    double c = (p + z2 / (2 * n)) / (1 + z2 / n);
    double h = z * sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n);

    *lo = c - h;
    *hi = c + h;
}

/* The value of attribute name in the first tag of s at or after p. */
static double attr(const char *p, const char *name)
{
    char key[64];
    const char *v;

    snprintf(key, sizeof key, " %s=\"", name);
    v = strstr(p, key);
    ck_assert_msg(v, "no %s", key);
    return strtod(v + strlen(key), NULL);
}

START_TEST(report_renders_and_equals_status)
{
    made m = {0};
    char *html, *dom = NULL, *err, *shot, *arg, *t, *export, *line;
    cJSON *data, *e;
    const cJSON *st, *fit, *r0;
    int n, judged = 0, right = 0;
    unsigned char magic[8];
    struct stat sb;
    FILE *f;

    make_store(&m, NULL, 0);
    st = m.status;
    html = tu_read_file(m.html, NULL);

    /* self-contained: nothing fetched, nothing run */
    ck_assert(!tu_contains(html, "src="));
    ck_assert(!tu_contains(html, "url("));
    ck_assert(!tu_contains(html, "@import"));
    ck_assert(!tu_contains(html, "<link"));
    ck_assert(!tu_contains(html, "<img"));
    ck_assert(!tu_contains(html, "<script>"));
    ck_assert(!tu_contains(html, "<script src"));

    /* the embedded JSON is status --json's, member by member */
    data = embedded(html, "nsed-data");
    ck_assert_int_eq(cJSON_GetArraySize(data), cJSON_GetArraySize(st));
    cJSON_ArrayForEach(e, st) {
        const cJSON *d = cJSON_GetObjectItemCaseSensitive(data, e->string);

        ck_assert_msg(d, "the report lacks %s", e->string);
        ck_assert_msg(cJSON_Compare(e, d, true), "%s differs", e->string);
    }
    cJSON_Delete(data);

    /* the store's name is escaped in the page's text */
    ck_assert(tu_contains(html, "store-&lt;&amp;&#39;&quot;&gt;"));

    /* NSED's accuracy as printed, recomputed from the export's rows */
    export = tu_nsed_export(m.store);
    for (line = export; line && *line; line = strchr(line, '\n') + 1) {
        cJSON *row = cJSON_Parse(line);
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(row, "correct");

        ck_assert_ptr_nonnull(row);
        if (cJSON_IsBool(c)) {
            judged++;
            right += cJSON_IsTrue(c);
        }
        cJSON_Delete(row);
        if (!strchr(line, '\n'))
            break;
    }
    ck_assert_int_eq(judged, NQ);
    t = text_of(html, "nsed-accuracy");
    {
        char want[32];

        snprintf(want, sizeof want, "%.1f%%", 100.0 * right / judged);
        ck_assert_str_eq(t, want);
    }
    free(t);
    free(export);

    /* in the browser: each plot, one mark per data point */
    err = chromium(m.html, "--dump-dom", &dom);
    no_console(err);
    free(err);
    fit = cJSON_GetObjectItemCaseSensitive(st, "fatigue_fit");
    ck_assert(cJSON_IsObject(fit));
    n = cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(fit,
                                                            "slice_rounds"));
    ck_assert_int_ge(n, 3);
    ck_assert_int_eq(
        marks(dom, "plot-accuracy", "circle"),
        cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(st, "rounds")) + n);
    ck_assert_int_eq(marks(dom, "plot-fit", "circle"), n);
    {
        char *svg = svg_of(dom, "plot-fit");

        ck_assert_int_eq(count(svg, "<path class=\"curve\""), 1);
        ck_assert_int_eq(count(svg, "<line class=\"topt\""), 1);
        ck_assert_double_eq_tol(attr(strstr(svg, "class=\"topt\""),
                                     "data-t-opt"),
                                tu_jnum(fit, "t_opt", NULL), 1e-12);
        ck_assert_double_eq_tol(attr(strstr(svg, "id=\"fit-r2\""), "data-r2"),
                                tu_jnum(fit, "r2", NULL), 1e-12);
        free(svg);
    }
    r0 = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(st, "accuracy"), "round0_by_model");
    ck_assert_int_eq(marks(dom, "plot-models", "circle"),
                     cJSON_GetArraySize(r0));
    ck_assert_int_eq(cJSON_GetArraySize(r0), 3);
    {
        char *svg = svg_of(dom, "plot-models");
        const char *p = svg;

        cJSON_ArrayForEach(e, r0) {
            double lo, hi, k = tu_jnum(e, "correct", NULL);
            double a = tu_jnum(e, "answers", NULL);

            p = strstr(p, "<circle class=\"mark");
            ck_assert_ptr_nonnull(p);
            wilson(k, a, &lo, &hi);
            ck_assert_double_eq_tol(attr(p, "data-p"), k / a, 1e-12);
            ck_assert_double_eq_tol(attr(p, "data-lo"), lo, 1e-9);
            ck_assert_double_eq_tol(attr(p, "data-hi"), hi, 1e-9);
            p++;
        }
        free(svg);
    }
    ck_assert_int_eq(marks(dom, "plot-cost", "circle"),
                     1 + cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(
                             cJSON_GetObjectItemCaseSensitive(st, "baselines"),
                             "comparisons")));
    ck_assert_int_eq(marks(dom, "plot-stops", "rect"),
                     cJSON_GetArraySize(
                         cJSON_GetObjectItemCaseSensitive(st, "stop_reasons")));
    ck_assert_int_ge(marks(dom, "plot-stops", "rect"), 2);
    ck_assert_int_eq(marks(dom, "plot-bias", "rect"),
                     cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(
                         cJSON_GetObjectItemCaseSensitive(
                             cJSON_GetObjectItemCaseSensitive(st, "bias"),
                             "position"),
                         "by_position")));
    ck_assert_int_ge(marks(dom, "plot-bias", "rect"), 2);
    /* the tables of status */
    ck_assert(tu_contains(dom, "id=\"table-questions\""));
    ck_assert(tu_contains(dom, "id=\"table-baselines\""));
    ck_assert(tu_contains(dom, "id=\"table-models\""));
    ck_assert(tu_contains(dom, "id=\"table-fit\""));
    free(dom);

    /* a screenshot: a PNG of some size */
    shot = tu_path(tu_tmp, "report.png");
    arg = malloc(strlen(shot) + 16);
    ck_assert_ptr_nonnull(arg);
    snprintf(arg, strlen(shot) + 16, "--screenshot=%s", shot);
    err = chromium(m.html, arg, NULL);
    no_console(err);
    free(err);
    ck_assert_msg(stat(shot, &sb) == 0, "no screenshot at %s", shot);
    ck_assert_int_gt(sb.st_size, 1000);
    f = fopen(shot, "rb");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fread(magic, 1, 8, f), 8);
    fclose(f);
    ck_assert(!memcmp(magic, "\x89PNG\r\n\x1a\n", 8));
    printf("test_report: screenshot %s, %lld bytes\n", shot,
           (long long)sb.st_size);

    free(shot);
    free(arg);
    free(html);
    made_free(&m);
}
END_TEST

/* --compare places each store on the cost plot and in a table; a missing
 * store and a missing -o are usage errors (exit 2) that write nothing. */
START_TEST(compare_and_errors)
{
    made m = {0};
    char *html, *dom = NULL, *err = NULL, *out = NULL, *nope, *x;
    const char *cmp[2];
    cJSON *c0;
    int rc;

    nope = tu_path(tu_tmp, "no-such-store");
    x = tu_path(tu_tmp, "x.html");
    cmp[0] = cmp[1] = NULL;
    make_store(&m, NULL, 0);
    cmp[0] = cmp[1] = m.store;
    rc = TU_NSED(NULL, &out, &err, "report", "--store", m.store, "--compare",
                 cmp[0], "--compare", cmp[1], "-o", m.html);
    ck_assert_msg(rc == 0, "exit %d: %s", rc, err);
    free(out);
    free(err);
    html = tu_read_file(m.html, NULL);
    c0 = embedded(html, "nsed-compare-1");
    ck_assert(cJSON_Compare(c0, m.status, true));
    cJSON_Delete(c0);
    err = chromium(m.html, "--dump-dom", &dom);
    no_console(err);
    free(err);
    ck_assert_int_eq(marks(dom, "plot-cost", "circle"),
                     1 + 2 +
                         cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(
                             cJSON_GetObjectItemCaseSensitive(m.status,
                                                              "baselines"),
                             "comparisons")));
    ck_assert(tu_contains(dom, "id=\"table-compare\""));
    free(dom);
    free(html);

    /* a store with questions but no result yet renders too: no NaN in a
     * coordinate (Chromium would log an attribute error), empty plots */
    {
        char *wpath = tu_path(tu_tmp, "wf.yaml"),
             *qpath = tu_path(tu_tmp, "q.jsonl");
        char *empty = tu_path(tu_tmp, "empty"),
             *ehtml = tu_path(tu_tmp, "e.html");

        rc = TU_NSED(NULL, &out, &err, "ingest", wpath, "--questions", qpath,
                     "--store", empty);
        ck_assert_msg(rc == 0, "ingest exit %d: %s", rc, err);
        free(out);
        free(err);
        rc = TU_NSED(NULL, &out, &err, "report", "--store", empty, "-o", ehtml);
        ck_assert_msg(rc == 0, "report exit %d: %s", rc, err);
        free(out);
        free(err);
        err = chromium(ehtml, "--dump-dom", &dom);
        no_console(err);
        ck_assert(!tu_contains(dom, "=\"nan") && !tu_contains(dom, ",nan") &&
                  !tu_contains(dom, "nan\"") && !tu_contains(dom, "inf\""));
        ck_assert_int_eq(marks(dom, "plot-accuracy", "circle"), 0);
        ck_assert_int_eq(marks(dom, "plot-stops", "rect"), 0);
        free(err);
        free(dom);
        free(wpath);
        free(qpath);
        free(empty);
        free(ehtml);
    }

    rc = TU_NSED(NULL, &out, &err, "report", "--store", nope, "-o", x);
    ck_assert_int_eq(rc, 2);
    ck_assert_msg(tu_contains(err, "no nsed store in"), "%s", err);
    ck_assert(access(x, F_OK) != 0);
    free(out);
    free(err);
    rc = TU_NSED(NULL, &out, &err, "report", "--store", m.store, "--compare",
                 nope, "-o", x);
    ck_assert_int_eq(rc, 2);
    ck_assert(access(x, F_OK) != 0);
    free(out);
    free(err);
    rc = TU_NSED(NULL, &out, &err, "report", "--store", m.store);
    ck_assert_int_eq(rc, 2);
    ck_assert_msg(tu_contains(err, "-o FILE is required"), "%s", err);
    free(out);
    free(err);
    rc = TU_NSED(NULL, &out, &err, "report", "--help");
    ck_assert_int_eq(rc, 0);
    ck_assert(tu_contains(out, "--compare STORE"));
    free(out);
    free(err);
    free(nope);
    free(x);
    made_free(&m);
}
END_TEST

Suite *tu_suite(void)
{
    char bin[4096];
    Suite *su;
    TCase *tc;

    if (!find_chromium(bin, sizeof bin)) {
        printf("test_report: skipped: chromium not found (set "
               "NSED_CHROMIUM or put it on PATH)\n");
        return NULL;
    }
    su = suite_create("report");
    tc = tcase_create("browser");
    tcase_set_timeout(tc, 240);
    tcase_add_checked_fixture(tc, tu_tmp_setup, tu_tmp_teardown);
    tcase_add_test(tc, report_renders_and_equals_status);
    tcase_add_test(tc, compare_and_errors);
    suite_add_tcase(su, tc);
    return su;
}
