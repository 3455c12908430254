/* cli_report.c -- `nsed report --store DIR [--compare STORE]... -o FILE`
 *
 * One self-contained HTML file (inline CSS and SVG, no script to run, no
 * external resource) with the plots and tables of a store. Everything in
 * it is read from the JSON `nsed status --json` prints (runner_report_json),
 * parsed back, so the report's numbers are those of status by
 * construction; that JSON is also embedded verbatim in
 * <script type="application/json" id="nsed-data"> for tools and tests. */
#include "pipeline/base/atomic.h"
#include "pipeline/base/stats.h"
#include "pipeline/cli/cli.h"
#include "pipeline/runner/runner_report.h"

#include <cjson/cJSON.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REPORT_COMPARE_MAX 16 /* --compare stores */
#define OPT_COMPARE 300       /* above CLI_OPTS_MAX: --compare may repeat */

static const char report_usage[] =
    "usage: nsed report --store DIR [--compare STORE]... -o FILE\n"
    "\n"
    "Write one self-contained HTML file (inline CSS and SVG; no script, no\n"
    "network) with plots of the store -- accuracy by round (all questions\n"
    "and the exploration slice), the U(t) fatigue fit over its data, each\n"
    "model's round-0 accuracy p_g with a 95% Wilson interval, cost against\n"
    "accuracy for NSED and every baseline (and each --compare store), stop\n"
    "reasons, position bias -- and the tables of nsed status. The figures\n"
    "are those of nsed status --json, whose JSON the file embeds in\n"
    "<script type=\"application/json\" id=\"nsed-data\">. Opens the stores\n"
    "read-only; the file is replaced atomically.\n"
    "\n"
    "  -s, --store DIR           run store directory\n"
    "      --compare STORE       another store to place on the cost plot\n"
    "                            and in the comparison table (repeatable)\n"
    "  -o, --output FILE         the HTML file to write\n"
    "  -h, --help                this text\n";

/* ---- reading the status JSON ------------------------------------------- */

static const cJSON *jget(const cJSON *o, const char *k)
{
    return cJSON_GetObjectItemCaseSensitive(o, k);
}

/* o.k as a number, NAN when absent or not a number. */
static double jnum(const cJSON *o, const char *k)
{
    const cJSON *v = jget(o, k);

    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

static const char *js(const cJSON *o, const char *k)
{
    const cJSON *v = jget(o, k);

    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static double ratio(double a, double b)
{
    return b > 0 ? a / b : NAN;
}

/* ---- HTML output -------------------------------------------------------- */

/* s with & < > " ' escaped (NULL prints "-"). */
static void esc(FILE *f, const char *s)
{
    if (!s) {
        fputs("-", f);
        return;
    }
    for (; *s; s++) {
        switch (*s) {
        case '&':
            fputs("&amp;", f);
            break;
        case '<':
            fputs("&lt;", f);
            break;
        case '>':
            fputs("&gt;", f);
            break;
        case '"':
            fputs("&quot;", f);
            break;
        case '\'':
            fputs("&#39;", f);
            break;
        default:
            fputc(*s, f);
        }
    }
}

/* A percentage with one decimal, or "-" for NAN. */
static void pctf(FILE *f, double x)
{
    if (isfinite(x))
        fprintf(f, "%.1f%%", 100 * x);
    else
        fputs("-", f);
}

/* JSON text inside <script>: "</" would end the element, so it becomes
 * "<\/" (the same JSON: \/ is an escaped /). */
static void script_json(FILE *f, const char *id, const char *text)
{
    fprintf(f, "<script type=\"application/json\" id=\"%s\">", id);
    for (const char *p = text; *p; p++) {
        if (p[0] == '<' && p[1] == '/')
            fputs("<\\", f);
        else
            fputc(*p, f);
    }
    fputs("</script>\n", f);
}

/* ---- plots -------------------------------------------------------------- */

#define PW 640 /* plot width and height in SVG units */
#define PH 300
#define ML 60 /* margins: left, right, top, bottom */
#define MR 20
#define MT 20
#define MB 55

typedef struct frame {
    double xmin, xmax, ymin, ymax;
} frame;

static double fx(const frame *fr, double x)
{
    double d = fr->xmax - fr->xmin;

    return ML + (d > 0 ? (x - fr->xmin) / d : 0.5) * (PW - ML - MR);
}

static double fy(const frame *fr, double y)
{
    double d = fr->ymax - fr->ymin;

    return PH - MB - (d > 0 ? (y - fr->ymin) / d : 0.5) * (PH - MT - MB);
}

/* The <svg> opening, title, axes with 5 ticks each and their labels
 * (xdig, ydig significant digits; 0: no tick labels). */
static void svg_open(FILE *f, const char *id, const char *title,
                     const frame *fr, const char *xlabel, const char *ylabel,
                     int xdig, int ydig)
{
    fprintf(f,
            "<figure><figcaption>%s</figcaption>\n<svg id=\"%s\" "
            "class=\"plot\" xmlns=\"http://www.w3.org/2000/svg\" "
            "viewBox=\"0 0 %d %d\" width=\"%d\" height=\"%d\">\n",
            title, id, PW, PH, PW, PH);
    fprintf(f,
            "<line class=\"axis\" x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\"/>"
            "<line class=\"axis\" x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\"/>\n",
            ML, PH - MB, PW - MR, PH - MB, ML, MT, ML, PH - MB);
    for (int i = 0; i <= 4; i++) {
        double x = fr->xmin + (fr->xmax - fr->xmin) * i / 4;
        double y = fr->ymin + (fr->ymax - fr->ymin) * i / 4;

        fprintf(f,
                "<text class=\"tick\" x=\"%.1f\" y=\"%d\" "
                "text-anchor=\"middle\">",
                fx(fr, x), PH - MB + 16);
        if (xdig)
            fprintf(f, "%.*g", xdig, x);
        fprintf(f,
                "</text><text class=\"tick\" x=\"%d\" y=\"%.1f\" "
                "text-anchor=\"end\">",
                ML - 6, fy(fr, y) + 4);
        if (ydig)
            fprintf(f, "%.*g", ydig, y);
        fputs("</text>\n", f);
    }
    fprintf(f,
            "<text class=\"label\" x=\"%d\" y=\"%d\" "
            "text-anchor=\"middle\">%s</text>\n"
            "<text class=\"label\" x=\"14\" y=\"%d\" text-anchor=\"middle\" "
            "transform=\"rotate(-90 14 %d)\">%s</text>\n",
            (ML + PW - MR) / 2, PH - 6, xlabel, (MT + PH - MB) / 2,
            (MT + PH - MB) / 2, ylabel);
}

static void svg_close(FILE *f, const char *note)
{
    fputs("</svg>", f);
    if (note)
        fprintf(f, "<p class=\"note\">%s</p>", note);
    fputs("</figure>\n", f);
}

/* One series of {round, judged, winner_correct}: a polyline and a circle
 * per round with data. */
static void round_series(FILE *f, const frame *fr, const cJSON *rounds,
                         const char *cls)
{
    const cJSON *e;

    fprintf(f, "<polyline class=\"line %s\" points=\"", cls);
    cJSON_ArrayForEach(e, rounds) {
        double a = ratio(jnum(e, "winner_correct"), jnum(e, "judged"));

        if (isfinite(a))
            fprintf(f, "%.1f,%.1f ", fx(fr, jnum(e, "round")), fy(fr, a));
    }
    fputs("\"/>\n", f);
    cJSON_ArrayForEach(e, rounds) {
        double a = ratio(jnum(e, "winner_correct"), jnum(e, "judged"));

        if (!isfinite(a))
            continue;
        fprintf(f,
                "<circle class=\"mark %s\" cx=\"%.1f\" cy=\"%.1f\" r=\"4\" "
                "data-round=\"%.0f\" data-judged=\"%.0f\" "
                "data-correct=\"%.0f\"><title>round %.0f: %.1f%% of %.0f"
                "</title></circle>\n",
                cls, fx(fr, jnum(e, "round")), fy(fr, a), jnum(e, "round"),
                jnum(e, "judged"), jnum(e, "winner_correct"), jnum(e, "round"),
                100 * a, jnum(e, "judged"));
    }
}

static double max_round(const cJSON *rounds, double m)
{
    const cJSON *e;

    cJSON_ArrayForEach(e, rounds)
        if (jnum(e, "round") > m)
            m = jnum(e, "round");
    return m;
}

static void plot_accuracy(FILE *f, const cJSON *j)
{
    const cJSON *rounds = jget(j, "rounds");
    const cJSON *slice = jget(jget(j, "fatigue_fit"), "slice_rounds");
    frame fr = {0, 1, 0, 1};

    fr.xmax = max_round(slice, max_round(rounds, 1));
    svg_open(f, "plot-accuracy", "Accuracy of the winner by round", &fr,
             "round", "winner right", 3, 2);
    round_series(f, &fr, rounds, "all");
    if (cJSON_IsArray(slice))
        round_series(f, &fr, slice, "slice");
    svg_close(f, cJSON_IsArray(slice)
                     ? "Filled: all questions judged at that round; "
                       "hollow: the exploration slice (every round run)."
                     : "All questions judged at that round (no "
                       "exploration slice in this workflow).");
}

static double fit_u(double u0, double k, double beta, double t)
{
    return 1 - (1 - u0) * exp(-k * t) - beta * t * t;
}

static void plot_fit(FILE *f, const cJSON *j)
{
    const cJSON *fit = jget(j, "fatigue_fit");
    const cJSON *slice = jget(fit, "slice_rounds");
    double u0 = jnum(jget(fit, "u0"), "est"), k = jnum(jget(fit, "k"), "est");
    double beta = jnum(jget(fit, "beta"), "est"), topt = jnum(fit, "t_opt");
    frame fr = {0, 1, 0, 1};
    char note[160];

    if (!cJSON_IsObject(fit)) {
        fputs("<p id=\"plot-fit-none\">No fatigue fit: the workflow has no "
              "exploration slice (stop.efficiency_fatigue.explore).</p>\n",
              f);
        return;
    }
    fr.xmax = max_round(slice, 1);
    svg_open(f, "plot-fit", "U(t) fatigue fit on the exploration slice", &fr,
             "round t", "winner right", 3, 2);
    round_series(f, &fr, slice, "slice");
    if (cJSON_IsTrue(jget(fit, "fitted")) && isfinite(u0) && isfinite(k) &&
        isfinite(beta)) {
        fputs("<path class=\"curve\" d=\"", f);
        for (int i = 0; i <= 100; i++) {
            double t = fr.xmax * i / 100, u = fit_u(u0, k, beta, t);

            u = u < 0 ? 0 : u > 1 ? 1 : u;
            fprintf(f, "%c%.1f,%.1f", i ? 'L' : 'M', fx(&fr, t), fy(&fr, u));
        }
        fputs("\"/>\n", f);
        if (isfinite(topt) && topt >= 0 && topt <= fr.xmax)
            fprintf(f,
                    "<line class=\"topt\" x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" "
                    "y2=\"%d\" data-t-opt=\"%.17g\"/><text class=\"tick\" "
                    "x=\"%.1f\" y=\"%d\">T_opt %.2f</text>\n",
                    fx(&fr, topt), MT, fx(&fr, topt), PH - MB, topt,
                    fx(&fr, topt) + 4, MT + 12, topt);
        fprintf(f,
                "<text class=\"tick\" x=\"%d\" y=\"%d\" id=\"fit-r2\" "
                "data-r2=\"%.17g\">R^2 %.3f</text>\n",
                PW - MR - 90, PH - MB - 10, jnum(fit, "r2"), jnum(fit, "r2"));
        snprintf(note, sizeof note,
                 "Points: the slice's winners by round; curve: U(t) = 1 - "
                 "(1 - u0) e^(-k t) - beta t^2 fitted to them.");
    } else {
        snprintf(note, sizeof note,
                 "Points: the slice's winners by round; "
                 "no fit yet (too few rounds with data).");
    }
    svg_close(f, note);
}

/* Each model's round-0 accuracy with its Wilson interval. */
static void plot_models(FILE *f, const cJSON *j)
{
    const cJSON *r0 = jget(jget(j, "accuracy"), "round0_by_model"), *e;
    frame fr = {0, 1, 0, 1};
    int n = cJSON_GetArraySize(r0), i = 0;

    fr.xmin = -0.5;
    fr.xmax = n > 0 ? n - 0.5 : 0.5;
    svg_open(f, "plot-models", "Each model alone: p_g (round-0 accuracy)", &fr,
             "model", "round-0 answers right", 0, 2);
    cJSON_ArrayForEach(e, r0) {
        double k = jnum(e, "correct"), m = jnum(e, "answers"), lo, hi;
        double p = ratio(k, m), x = fx(&fr, i++);

        if (!isfinite(p))
            continue;
        stats_wilson((size_t)k, (size_t)m, STATS_Z95, &lo, &hi);
        fprintf(f,
                "<line class=\"ci\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" "
                "y2=\"%.1f\"/>\n<circle class=\"mark\" cx=\"%.1f\" "
                "cy=\"%.1f\" r=\"5\" data-model=\"",
                x, fy(&fr, lo), x, fy(&fr, hi), x, fy(&fr, p));
        esc(f, e->string);
        fprintf(f,
                "\" data-p=\"%.17g\" data-lo=\"%.17g\" data-hi=\"%.17g\">"
                "<title>",
                p, lo, hi);
        esc(f, e->string);
        fprintf(f,
                ": %.1f%% [%.1f, %.1f]</title></circle>\n<text "
                "class=\"tick\" x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">",
                100 * p, 100 * lo, 100 * hi, x, PH - MB + 16);
        esc(f, e->string);
        fputs("</text>\n", f);
    }
    svg_close(f, "Dot: correct / answers of the model's round-0 answers; bar: "
                 "95% Wilson interval. p_v (verification accuracy) is not "
                 "part of nsed status --json and is not plotted.");
}

typedef struct cost_pt {
    const char *name, *cls;
    double cost, acc;
} cost_pt;

/* The points of the cost plot for one status JSON: NSED, each paired
 * baseline (no extra cost: they reuse round-0 answers) and
 * self-consistency (its own samples' cost). */
static size_t cost_points(const cJSON *j, cost_pt *pts, size_t max)
{
    const cJSON *cmp = jget(jget(j, "baselines"), "comparisons"), *e;
    const cJSON *acc = jget(j, "accuracy"), *sc = jget(acc, "self_consistency");
    size_t n = 0;

    pts[n++] = (cost_pt){"NSED", "nsed", jnum(j, "cost_usd"),
                         ratio(jnum(acc, "nsed_correct"),
                               jnum(acc, "with_reference"))};
    cJSON_ArrayForEach(e, cmp) {
        if (n == max)
            break;
        pts[n++] = (cost_pt){js(e, "baseline"), "baseline", 0,
                             ratio(jnum(e, "baseline_correct"), jnum(e, "n"))};
    }
    if (cJSON_IsObject(sc) && n < max)
        pts[n++] = (cost_pt){"self_consistency", "selfcons",
                             jnum(sc, "cost_usd"),
                             ratio(jnum(sc, "correct"), jnum(sc, "judged"))};
    return n;
}

static void plot_cost(FILE *f, const cJSON *j, const cJSON *const *cmp,
                      const char *const *cmp_dir, size_t ncmp)
{
    cost_pt pts[64 + REPORT_COMPARE_MAX];
    size_t n = cost_points(j, pts, 64);
    frame fr = {0, 0, 0, 1};

    for (size_t i = 0; i < ncmp; i++) {
        const cJSON *acc = jget(cmp[i], "accuracy");

        pts[n++] = (cost_pt){cmp_dir[i], "compare", jnum(cmp[i], "cost_usd"),
                             ratio(jnum(acc, "nsed_correct"),
                                   jnum(acc, "with_reference"))};
    }
    for (size_t i = 0; i < n; i++)
        if (isfinite(pts[i].cost) && pts[i].cost > fr.xmax)
            fr.xmax = pts[i].cost;
    if (fr.xmax <= 0)
        fr.xmax = 1e-4; /* every point free (a simulation): one column */
    fr.xmax *= 1.1;
    svg_open(f, "plot-cost", "Cost against accuracy", &fr, "cost (USD)",
             "accuracy", 3, 2);
    for (size_t i = 0; i < n; i++) {
        double x, y;
        int shift;

        if (!isfinite(pts[i].acc) || !isfinite(pts[i].cost))
            continue;
        x = fx(&fr, pts[i].cost);
        y = fy(&fr, pts[i].acc);
        /* points on (nearly) the same spot: their labels side by side */
        shift = 0;
        for (size_t k = 0; k < i; k++)
            if (fabs(pts[k].acc - pts[i].acc) < 0.02 &&
                fabs(fx(&fr, pts[k].cost) - x) < 1)
                shift++;
        fprintf(f,
                "<circle class=\"mark %s\" cx=\"%.1f\" cy=\"%.1f\" r=\"5\" "
                "data-name=\"",
                pts[i].cls, x, y);
        esc(f, pts[i].name);
        fprintf(f, "\" data-cost=\"%.17g\" data-acc=\"%.17g\"><title>",
                pts[i].cost, pts[i].acc);
        esc(f, pts[i].name);
        fprintf(f,
                ": %.1f%%, $%.6f</title></circle><text class=\"tick\" "
                "x=\"%.1f\" y=\"%.1f\">",
                100 * pts[i].acc, pts[i].cost, x + 8 + 100.0 * shift, y + 4);
        esc(f, pts[i].name);
        fputs("</text>\n", f);
    }
    svg_close(f, "NSED's cost is that of its results; the round-0 baselines "
                 "reuse NSED's round-0 answers (no extra cost); "
                 "self-consistency costs its own samples; each --compare "
                 "store is one point (its NSED).");
}

/* Bars of (label, value) pairs from an object of numbers or an array of
 * {key_name, val_name}. */
static void bars(FILE *f, const char *id, const char *title, const char *xlabel,
                 const char *ylabel, const cJSON *items, const char *key_name,
                 const char *val_name, const char *note)
{
    const cJSON *e;
    int n = cJSON_GetArraySize(items), i = 0;
    frame fr = {-0.5, n > 0 ? n - 0.5 : 0.5, 0, 0};
    double bw = (PW - ML - MR) / (double)(n > 0 ? n : 1) * 0.6;

    cJSON_ArrayForEach(e, items) {
        double v = val_name ? jnum(e, val_name) : e->valuedouble;

        if (isfinite(v) && v > fr.ymax)
            fr.ymax = v;
        if (isfinite(v) && v < fr.ymin)
            fr.ymin = v;
    }
    if (fr.ymax <= fr.ymin)
        fr.ymax = fr.ymin + 1;
    svg_open(f, id, title, &fr, xlabel, ylabel, 0, 3);
    cJSON_ArrayForEach(e, items) {
        double v = val_name ? jnum(e, val_name) : e->valuedouble;
        double x = fx(&fr, i++), y0 = fy(&fr, 0), y = fy(&fr, v);
        char num[32];
        const char *label = e->string;

        if (!isfinite(v))
            continue;
        if (key_name) {
            snprintf(num, sizeof num, "%.0f", jnum(e, key_name));
            label = num;
        }
        fprintf(f,
                "<rect class=\"mark\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" "
                "height=\"%.1f\" data-label=\"",
                x - bw / 2, y < y0 ? y : y0, bw, fabs(y0 - y));
        esc(f, label);
        fprintf(f, "\" data-value=\"%.17g\"><title>", v);
        esc(f, label);
        fprintf(f,
                ": %.4g</title></rect><text class=\"tick\" x=\"%.1f\" "
                "y=\"%d\" text-anchor=\"middle\">",
                v, x, PH - MB + 16);
        esc(f, label);
        fputs("</text>\n", f);
    }
    svg_close(f, note);
}

/* ---- tables ------------------------------------------------------------- */

static void table_summary(FILE *f, const cJSON *j)
{
    const cJSON *q = jget(j, "questions"), *acc = jget(j, "accuracy");
    const cJSON *m = jget(j, "manifest");
    static const char *const outcomes[] = {"total",      "done",
                                           "degraded",   "incomplete",
                                           "failed",     "in_progress",
                                           "not_started"};

    fputs("<h2>Run</h2>\n<table id=\"table-run\"><tr><th>store</th><td>", f);
    esc(f, js(j, "store"));
    fputs("</td></tr><tr><th>workflow</th><td>", f);
    esc(f, js(m, "workflow_name"));
    fputs(" (hash ", f);
    esc(f, js(m, "workflow_hash"));
    fputs(")</td></tr><tr><th>created</th><td>", f);
    esc(f, js(m, "created_at"));
    fputs(" by nsed ", f);
    esc(f, js(m, "nsed_version"));
    fputs(", seed ", f);
    esc(f, js(m, "seed"));
    fputs("</td></tr></table>\n<h2>Questions</h2>\n<table "
          "id=\"table-questions\"><tr>",
          f);
    for (size_t i = 0; i < sizeof outcomes / sizeof outcomes[0]; i++)
        fprintf(f, "<th>%s</th>", outcomes[i]);
    fputs("</tr><tr>", f);
    for (size_t i = 0; i < sizeof outcomes / sizeof outcomes[0]; i++)
        fprintf(f, "<td data-field=\"%s\">%.0f</td>", outcomes[i],
                jnum(q, outcomes[i]));
    fputs("</tr></table>\n", f);
    fputs("<h2>Accuracy</h2>\n<p>NSED <span id=\"nsed-accuracy\">", f);
    pctf(f, ratio(jnum(acc, "nsed_correct"), jnum(acc, "with_reference")));
    fprintf(f,
            "</span> (<span id=\"nsed-correct\">%.0f</span>/<span "
            "id=\"nsed-with-reference\">%.0f</span>), strict majority "
            "<span id=\"majority-accuracy\">",
            jnum(acc, "nsed_correct"), jnum(acc, "with_reference"));
    pctf(f, ratio(jnum(acc, "majority_correct"), jnum(acc, "with_reference")));
    fprintf(f,
            "</span>; <span id=\"rounds-mean\">%.2f</span> rounds on "
            "average; <span id=\"tokens\">%.0f</span> tokens, $<span "
            "id=\"cost-usd\">%.4f</span>.</p>\n",
            jnum(j, "rounds_mean"), jnum(j, "tokens"), jnum(j, "cost_usd"));
}

static void table_baselines(FILE *f, const cJSON *j)
{
    const cJSON *cmp = jget(jget(j, "baselines"), "comparisons"), *e;
    const cJSON *sc = jget(jget(j, "accuracy"), "self_consistency");

    fputs("<h2>NSED against each baseline</h2>\n<table "
          "id=\"table-baselines\"><tr><th>baseline</th><th>n</th><th>"
          "baseline right</th><th>NSED - baseline</th><th>95% "
          "(Newcombe)</th><th>McNemar p</th><th>NSED only</th><th>baseline "
          "only</th></tr>\n",
          f);
    cJSON_ArrayForEach(e, cmp) {
        fputs("<tr><td>", f);
        esc(f, js(e, "baseline"));
        fprintf(f,
                "</td><td>%.0f</td><td>%.0f</td><td>%+.1f points</td>"
                "<td>[%+.1f, %+.1f]</td><td>%.3g</td><td>%.0f</td><td>%.0f"
                "</td></tr>\n",
                jnum(e, "n"), jnum(e, "baseline_correct"),
                100 * jnum(e, "diff"), 100 * jnum(e, "ci95_lo"),
                100 * jnum(e, "ci95_hi"), jnum(e, "mcnemar_p"),
                jnum(e, "nsed_only"), jnum(e, "baseline_only"));
    }
    fputs("</table>\n", f);
    if (!cJSON_IsObject(sc))
        return;
    fputs("<p id=\"selfcons-text\">Self-consistency (the best single model "
          "sampled as often as the team called): ",
          f);
    pctf(f, ratio(jnum(sc, "correct"), jnum(sc, "judged")));
    fprintf(f,
            " (%.0f/%.0f); %.0f without a strict majority (drawn), %.0f "
            "incomplete; %.0f samples (%.0f failed), $%.4f apart from "
            "NSED's cost.</p>\n",
            jnum(sc, "correct"), jnum(sc, "judged"), jnum(sc, "ties"),
            jnum(sc, "incomplete"), jnum(sc, "samples"),
            jnum(sc, "failed_samples"), jnum(sc, "cost_usd"));
}

static void table_fit(FILE *f, const cJSON *j)
{
    const cJSON *fit = jget(j, "fatigue_fit");
    static const char *const names[] = {"u0", "k", "beta"};

    if (!cJSON_IsObject(fit) || !cJSON_IsTrue(jget(fit, "fitted")))
        return;
    fprintf(f,
            "<h2>Fatigue fit</h2>\n<p>On %.0f slice questions, %.0f "
            "rounds (%.0f judged winners): R^2 <span id=\"fit-r2-text\">"
            "%.3f</span>; T_opt ",
            jnum(fit, "slice_questions"), jnum(fit, "points"),
            jnum(fit, "judged"), jnum(fit, "r2"));
    if (isfinite(jnum(fit, "t_opt")))
        fprintf(f, "<span id=\"fit-t-opt\">%.2f</span> rounds",
                jnum(fit, "t_opt"));
    else
        fputs("none (no peak)", f);
    fputs(cJSON_IsTrue(jget(fit, "used")) ? "; used for stopping.</p>\n"
                                          : "; not used: ",
          f);
    if (!cJSON_IsTrue(jget(fit, "used"))) {
        esc(f, js(fit, "not_used"));
        fputs(".</p>\n", f);
    }
    fputs("<table id=\"table-fit\"><tr><th>parameter</th><th>estimate</th>"
          "<th>95%</th></tr>\n",
          f);
    for (size_t i = 0; i < 3; i++) {
        const cJSON *p = jget(fit, names[i]);
        const cJSON *ci = jget(p, "ci95");

        fprintf(f, "<tr><td>%s</td><td>%.4f</td><td>", names[i],
                jnum(p, "est"));
        if (cJSON_GetArraySize(ci) == 2 &&
            cJSON_IsNumber(cJSON_GetArrayItem(ci, 0)))
            fprintf(f, "[%.4f, %.4f]", cJSON_GetArrayItem(ci, 0)->valuedouble,
                    cJSON_GetArrayItem(ci, 1)->valuedouble);
        else
            fputs("-", f);
        fputs("</td></tr>\n", f);
    }
    fputs("</table>\n", f);
}

static void table_models(FILE *f, const cJSON *j)
{
    const cJSON *e;

    fputs("<h2>Models</h2>\n<table id=\"table-models\"><tr><th>model</th>"
          "<th>calls</th><th>ok</th><th>failed</th><th>retries</th>"
          "<th>ledger</th><th>p50 ms</th><th>p95 ms</th><th>tokens</th>"
          "<th>cost $</th></tr>\n",
          f);
    cJSON_ArrayForEach(e, jget(j, "models")) {
        fputs("<tr><td>", f);
        esc(f, e->string);
        fprintf(f,
                "</td><td>%.0f</td><td>%.0f</td><td>%.0f</td><td>%.0f</td>"
                "<td>%.0f</td><td>%.1f-%.1f</td><td>%.1f-%.1f</td>"
                "<td>%.0f</td><td>%.4f</td></tr>\n",
                jnum(e, "calls"), jnum(e, "ok"), jnum(e, "failed"),
                jnum(e, "retries"), jnum(e, "ledger_hits"),
                jnum(e, "latency_p50_lo_ms"), jnum(e, "latency_p50_ms"),
                jnum(e, "latency_p95_lo_ms"), jnum(e, "latency_p95_ms"),
                jnum(e, "prompt_tokens") + jnum(e, "completion_tokens"),
                jnum(e, "cost_usd"));
    }
    fputs("</table>\n", f);
}

/* Winners right by round: all questions, and the slice when there is one. */
static void table_rounds(FILE *f, const cJSON *j)
{
    const cJSON *slice = jget(jget(j, "fatigue_fit"), "slice_rounds"), *e;

    fputs("<table id=\"table-rounds\"><tr><th>round</th><th>judged</th>"
          "<th>winner right</th><th>accuracy</th></tr>\n",
          f);
    cJSON_ArrayForEach(e, jget(j, "rounds")) {
        fprintf(f, "<tr><td>%.0f</td><td>%.0f</td><td>%.0f</td><td>",
                jnum(e, "round"), jnum(e, "judged"), jnum(e, "winner_correct"));
        pctf(f, ratio(jnum(e, "winner_correct"), jnum(e, "judged")));
        fputs("</td></tr>\n", f);
    }
    fputs("</table>\n", f);
    if (!cJSON_IsArray(slice))
        return;
    fprintf(f,
            "<p>Exploration slice (%.0f%% of questions, %.0f finished):</p>"
            "\n<table id=\"table-slice\"><tr><th>round</th><th>judged</th>"
            "<th>winner right</th><th>accuracy</th></tr>\n",
            100 * jnum(jget(j, "fatigue_fit"), "explore"),
            jnum(jget(j, "fatigue_fit"), "slice_questions"));
    cJSON_ArrayForEach(e, slice) {
        fprintf(f, "<tr><td>%.0f</td><td>%.0f</td><td>%.0f</td><td>",
                jnum(e, "round"), jnum(e, "judged"), jnum(e, "winner_correct"));
        pctf(f, ratio(jnum(e, "winner_correct"), jnum(e, "judged")));
        fputs("</td></tr>\n", f);
    }
    fputs("</table>\n", f);
}

/* Each model alone in round 0, with the interval the plot draws. */
static void table_round0(FILE *f, const cJSON *j)
{
    const cJSON *e;

    fputs("<table id=\"table-round0\"><tr><th>model</th><th>answers</th>"
          "<th>right</th><th>p_g</th><th>95% (Wilson)</th></tr>\n",
          f);
    cJSON_ArrayForEach(e, jget(jget(j, "accuracy"), "round0_by_model")) {
        double k = jnum(e, "correct"), m = jnum(e, "answers"), lo, hi;

        stats_wilson((size_t)k, (size_t)m, STATS_Z95, &lo, &hi);
        fputs("<tr><td>", f);
        esc(f, e->string);
        fprintf(f, "</td><td>%.0f</td><td>%.0f</td><td>", m, k);
        pctf(f, ratio(k, m));
        fprintf(f, "</td><td>[%.1f%%, %.1f%%]</td></tr>\n", 100 * lo, 100 * hi);
    }
    fputs("</table>\n", f);
}

/* name: count rows of an object of numbers. */
static void table_counts(FILE *f, const char *id, const char *head,
                         const cJSON *o)
{
    const cJSON *e;

    fprintf(f, "<table id=\"%s\"><tr><th>%s</th><th>questions</th></tr>\n", id,
            head);
    cJSON_ArrayForEach(e, o) {
        fputs("<tr><td>", f);
        esc(f, e->string);
        fprintf(f, "</td><td>%.0f</td></tr>\n", e->valuedouble);
    }
    fputs("</table>\n", f);
}

/* Per tag: n, NSED's and each baseline's accuracy. */
static void table_tags(FILE *f, const cJSON *j)
{
    const cJSON *cmp = jget(jget(j, "baselines"), "comparisons"), *t, *e;
    const cJSON *tags = jget(jget(j, "baselines"), "tags");

    if (!cJSON_GetArraySize(tags))
        return;
    fputs("<h2>By tag</h2>\n<table id=\"table-tags\"><tr><th>tag</th><th>n"
          "</th><th>NSED</th>",
          f);
    cJSON_ArrayForEach(e, cmp) {
        fputs("<th>", f);
        esc(f, js(e, "baseline"));
        fputs("</th>", f);
    }
    fputs("</tr>\n", f);
    cJSON_ArrayForEach(t, tags) {
        fputs("<tr><td>", f);
        esc(f, t->string);
        fprintf(f, "</td><td>%.0f</td><td>", jnum(t, "n"));
        pctf(f, ratio(jnum(t, "nsed_correct"), jnum(t, "n")));
        fputs("</td>", f);
        cJSON_ArrayForEach(e, cmp) {
            const cJSON *b = jget(jget(t, "baselines"), js(e, "baseline"));

            fputs("<td>", f);
            pctf(f, ratio(jnum(b, "correct"), jnum(b, "n")));
            fputs("</td>", f);
        }
        fputs("</tr>\n", f);
    }
    fputs("</table>\n", f);
}

/* The bias figures the plot does not show. */
static void text_bias(FILE *f, const cJSON *j)
{
    const cJSON *b = jget(j, "bias"), *pos = jget(b, "position");
    const cJSON *len = jget(b, "length");

    fprintf(f,
            "<p id=\"bias-text\">Over %.0f evaluations (%.0f weights): "
            "position slope ",
            jnum(b, "evaluations"), jnum(b, "weights"));
    if (isfinite(jnum(pos, "slope")))
        fprintf(f, "%+.4f per position, Pearson r %+.3f", jnum(pos, "slope"),
                jnum(pos, "pearson_r"));
    else
        fputs("none (position never varies)", f);
    fputs("; length: Spearman rho ", f);
    if (isfinite(jnum(len, "spearman_rho")))
        fprintf(f, "%+.3f (mean %.0f characters)", jnum(len, "spearman_rho"),
                jnum(len, "mean_chars"));
    else
        fputs("none (weight or length never varies)", f);
    fputs(".</p>\n", f);
}

static void table_compare(FILE *f, const cJSON *j, const cJSON *const *cmp,
                          const char *const *dir, size_t ncmp)
{
    if (!ncmp)
        return;
    fputs("<h2>Stores compared</h2>\n<table id=\"table-compare\"><tr>"
          "<th>store</th><th>workflow</th><th>accuracy</th><th>rounds"
          "</th><th>tokens</th><th>cost $</th></tr>\n",
          f);
    for (size_t i = 0; i <= ncmp; i++) {
        const cJSON *s = i ? cmp[i - 1] : j;
        const cJSON *acc = jget(s, "accuracy");

        fputs("<tr><td>", f);
        esc(f, i ? dir[i - 1] : js(s, "store"));
        fputs("</td><td>", f);
        esc(f, js(jget(s, "manifest"), "workflow_name"));
        fputs("</td><td>", f);
        pctf(f, ratio(jnum(acc, "nsed_correct"), jnum(acc, "with_reference")));
        fprintf(f, "</td><td>%.2f</td><td>%.0f</td><td>%.4f</td></tr>\n",
                jnum(s, "rounds_mean"), jnum(s, "tokens"), jnum(s, "cost_usd"));
    }
    fputs("</table>\n", f);
}

static const char css[] =
    "body{font-family:sans-serif;max-width:1100px;margin:1em auto;"
    "color:#222}table{border-collapse:collapse;margin:.5em 0}"
    "td,th{border:1px solid #bbb;padding:2px 8px;text-align:right}"
    "th{background:#eee}figure{margin:1em 0}figcaption{font-weight:bold}"
    ".plot{background:#fafafa;border:1px solid #ddd}"
    ".axis{stroke:#444}.tick{font-size:11px;fill:#444}"
    ".label{font-size:12px;fill:#222}.line{fill:none;stroke-width:1.5}"
    ".line.all{stroke:#1f77b4}.line.slice{stroke:#ff7f0e;"
    "stroke-dasharray:4 3}circle.mark.all{fill:#1f77b4}"
    "circle.mark.slice{fill:#fff;stroke:#ff7f0e;stroke-width:2}"
    ".curve{fill:none;stroke:#2ca02c;stroke-width:2}"
    ".topt{stroke:#d62728;stroke-dasharray:5 4}.ci{stroke:#555;"
    "stroke-width:2}circle.mark{fill:#9467bd}circle.mark.nsed{fill:#d62728}"
    "circle.mark.compare{fill:#2ca02c}rect.mark{fill:#1f77b4}"
    ".note{font-size:12px;color:#555}\n";

/* The whole page for the status JSON j (text: the same JSON as printed). */
static void write_html(FILE *f, const cJSON *j, const char *text,
                       const cJSON *const *cmp, const char *const *cmp_text,
                       const char *const *cmp_dir, size_t ncmp)
{
    const cJSON *bias = jget(j, "bias");

    fputs("<!DOCTYPE html>\n<html lang=\"en\"><head><meta "
          "charset=\"utf-8\"><title>nsed report: ",
          f);
    esc(f, js(jget(j, "manifest"), "workflow_name"));
    fprintf(f,
            "</title><style>%s</style></head><body>\n<h1>nsed report: ", css);
    esc(f, js(jget(j, "manifest"), "workflow_name"));
    fputs("</h1>\n", f);
    table_summary(f, j);
    plot_accuracy(f, j);
    table_rounds(f, j);
    plot_fit(f, j);
    table_fit(f, j);
    plot_models(f, j);
    table_round0(f, j);
    plot_cost(f, j, cmp, cmp_dir, ncmp);
    table_baselines(f, j);
    table_tags(f, j);
    table_compare(f, j, cmp, cmp_dir, ncmp);
    bars(f, "plot-stops", "Why questions stopped", "stop reason", "questions",
         jget(j, "stop_reasons"), NULL, NULL,
         "Questions per stop reason (the questions the rounds loop stopped).");
    table_counts(f, "table-stops", "stop reason", jget(j, "stop_reasons"));
    bars(f, "plot-bias", "Position bias: mean score by shown position",
         "position shown (1 = first)", "mean weight / 100",
         jget(jget(bias, "position"), "by_position"), "position", "mean",
         "Mean normalized score (weight/100) the evaluators gave the "
         "candidate shown at each position.");
    text_bias(f, j);
    table_models(f, j);
    script_json(f, "nsed-data", text);
    if (ncmp) {
        for (size_t i = 0; i < ncmp; i++) {
            char id[48];

            snprintf(id, sizeof id, "nsed-compare-%zu", i);
            script_json(f, id, cmp_text[i]);
        }
    }
    fputs("</body></html>\n", f);
}

/* ---- the command -------------------------------------------------------- */

/* The status JSON of the store in dir: its text (*text) and parsed (*j). */
static int status_json(const char *dir, char **text, cJSON **j, nsed_err *err)
{
    store_opts so = {.flags = STORE_RDONLY};
    store *st = NULL;
    runner_report *r = NULL;
    int rc = cli_open_existing(dir, &so, &st, err);

    if (!rc)
        rc = runner_report_build(st, &r, err);
    if (!rc && runner_report_json(r, text))
        rc = nsed_error(err, NSED_ENOMEM, "out of memory");
    if (!rc && !(*j = cJSON_Parse(*text)))
        rc = nsed_error(err, NSED_ENOMEM, "out of memory");
    runner_report_free(r);
    store_close(st);
    return rc;
}

int cli_report(int argc, char **argv)
{
    static const struct option opts[] = {
        {"store", required_argument, NULL, 's'},
        {"compare", required_argument, NULL, OPT_COMPARE},
        {"output", required_argument, NULL, 'o'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    cli_opts_seen seen = {0};
    const char *dir = NULL, *out = NULL, *cmp_dir[REPORT_COMPARE_MAX];
    char *text = NULL, *cmp_text[REPORT_COMPARE_MAX] = {0};
    cJSON *j = NULL, *cmp[REPORT_COMPARE_MAX] = {0};
    size_t ncmp = 0;
    int c, rc = 0;
    nsed_err err = {0};
    atomic_file *af = NULL;

    optind = 1;
    while ((c = cli_getopt(&seen, argc, argv, "s:o:h", opts)) != -1) {
        switch (c) {
        case 's':
            dir = optarg;
            break;
        case OPT_COMPARE:
            if (ncmp == REPORT_COMPARE_MAX)
                return cli_usage_error("report",
                                       "at most %d --compare "
                                       "stores",
                                       REPORT_COMPARE_MAX);
            cmp_dir[ncmp++] = optarg;
            break;
        case 'o':
            out = optarg;
            break;
        case 'h':
            fputs(report_usage, stdout);
            return 0;
        default:
            return cli_usage_error("report", "bad option");
        }
    }
    if (!dir)
        return cli_usage_error("report", "--store DIR is required");
    if (!out)
        return cli_usage_error("report", "-o FILE is required");
    if (optind != argc)
        return cli_usage_error("report", "unexpected argument '%s'",
                               argv[optind]);

    rc = status_json(dir, &text, &j, &err);
    for (size_t i = 0; !rc && i < ncmp; i++)
        rc = status_json(cmp_dir[i], &cmp_text[i], &cmp[i], &err);
    if (!rc)
        rc = atomic_file_open(out, &af, &err);
    if (rc)
        goto out;
    write_html(atomic_file_stream(af), j, text, (const cJSON *const *)cmp,
               (const char *const *)cmp_text, cmp_dir, ncmp);
    rc = atomic_file_commit(af, &err);
    if (!rc)
        fprintf(stderr, "nsed report: written to %s\n", out);
out:
    for (size_t i = 0; i < ncmp; i++) {
        free(cmp_text[i]);
        cJSON_Delete(cmp[i]);
    }
    free(text);
    cJSON_Delete(j);
    return rc ? cli_fail(rc, &err) : 0;
}
