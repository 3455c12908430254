/* cli_status.c -- `nsed status --store DIR [--json] [--telemetry-out FILE]`
 *
 * Prints the report the runner computes (runner_report.h), as text or as
 * its JSON, and optionally writes the store's telemetry file. */
#include "pipeline/base/atomic.h"
#include "pipeline/base/json.h"
#include "pipeline/broker/telemetry.h"
#include "pipeline/cli/cli.h"
#include "pipeline/runner/runner_report.h"

#include <cjson/cJSON.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char status_usage[] =
    "usage: nsed status --store DIR [--json] [--telemetry-out FILE]\n"
    "\n"
    "Show where a run stands: the workflow it is bound to; questions done,\n"
    "degraded (finished without a seat), incomplete (a transient failure:\n"
    "run again to resume), failed (for good: no usable answer, a permanent\n"
    "error; nsed run --retry-failed runs them again), in progress and not\n"
    "started, with the reasons of the incomplete and failed ones; rounds\n"
    "used and why questions stopped; abstentions, rounds without a winner\n"
    "and proposals without an answer, per model; accuracy where\n"
    "references exist, next to the\n"
    "round-0 baselines (each model alone, and the strict majority vote of\n"
    "their round-0 answers: a shared top count is a tie, not a majority;\n"
    "ties broken by a seeded draw are shown apart) and, when the workflow\n"
    "has baselines.self_consistency, the best single model sampled as often\n"
    "as the team called; NSED's paired difference from each with a 95%\n"
    "interval (Newcombe) and an exact McNemar p, and all of it per tag;\n"
    "calls, tokens and cost; per-model latency and errors;\n"
    "the broker's choices (how often each model was chosen or excluded,\n"
    "mean expected cost, questions it could not staff or that went over\n"
    "the budget). Opens the store read-only, so it can run beside a\n"
    "running writer.\n"
    "\n"
    "  -s, --store DIR           run store directory\n"
    "  -j, --json                one JSON object instead of text\n"
    "  -t, --telemetry-out FILE  also write the store's per-model telemetry\n"
    "                            (accuracies, usage, calls) to FILE\n"
    "                            (replaced atomically), for another run's\n"
    "                            nsed run --telemetry FILE\n"
    "  -h, --help                this text\n";

static double pct(size_t a, size_t b)
{
    return b ? 100.0 * (double)a / (double)b : 0;
}

static void print_tally(const char *label, const runner_report_tallies *t)
{
    if (!t->n)
        return;
    printf("            %s:", label);
    for (size_t i = 0; i < t->n; i++)
        printf("%s %s %zu", i ? "," : "", t->items[i].name, t->items[i].n);
    printf("\n");
}

static void print_broker(const runner_report_broker *b)
{
    if (!b->decisions)
        return;
    printf("broker:     %zu decisions (", b->decisions);
    for (size_t i = 0; i < b->policies.n; i++)
        printf("%s%s %zu", i ? ", " : "", b->policies.items[i].name,
               b->policies.items[i].n);
    printf("), %zu could not be staffed", b->unstaffed);
    if (b->with_expected)
        printf("; expected cost $%.6f per question on average (value "
               "%.3f)", b->expected_cost_usd_mean, b->expected_value_mean);
    if (b->actual_n)
        printf(", actual $%.6f; %zu over budget", b->actual_cost_usd_mean,
               b->over_budget);
    printf("\n");
    print_tally("chosen", &b->chosen);
    print_tally("excluded", &b->excluded);
}

/* One fitted parameter: estimate and 95% interval, prec decimals. */
static void print_param(const char *name, const runner_fit_param *p, int prec)
{
    printf("%s %.*f", name, prec, p->est);
    if (isfinite(p->lo) && isfinite(p->hi))
        printf(" [%.*f, %.*f]", prec, p->lo, prec, p->hi);
}

/* The efficiency-fatigue fit on the exploration slice (runner_fit.h). */
static void print_fit(const runner_report *r)
{
    const runner_report_fit *f = &r->fit;
    int any = 0;

    if (!f->slice)
        return;
    printf("fatigue fit: exploration slice %.0f%% of questions, %.0f "
           "finished",
           100.0 * f->explore, f->questions);
    for (int t = 0; t < RUNNER_MAX_ROUNDS; t++) {
        if (f->sn[t] <= 0)
            continue;
        printf("%s r%d %.1f%% (%.0f)", any ? "," : "; winner right", t,
               100.0 * f->sk[t] / f->sn[t], f->sn[t]);
        any = 1;
    }
    printf("\n");
    if (f->have) {
        printf("             U(t) = 1 - (1 - u0) e^(-k t) - beta t^2 on %zu "
               "rounds (%.0f judged winners): R^2 %.3f\n             ",
               f->fit.points, f->fit.judged, f->fit.r2);
        print_param("u0", &f->fit.u0, 3);
        print_param(", k", &f->fit.k, 3);
        print_param(", beta", &f->fit.beta, 4);
        printf(" (95%%)\n");
        if (isfinite(f->fit.t_opt))
            printf("             T_opt %.2f rounds after round 0",
                   f->fit.t_opt);
        else
            printf("             T_opt: no peak (beta <= 0)");
    } else {
        printf("             no fit yet");
    }
    if (!f->needed)
        printf(": not needed (the workflow fixes every parameter)\n");
    else if (f->good)
        printf(": used for stopping (R^2 >= %.2g, >= %.0f slice questions)\n",
               f->min_r2, f->min_questions);
    else
        printf(": fit not used: %s\n", f->why);
}

static void print_rounds(const runner_report *r)
{
    int any = 0;

    for (int t = 0; t < RUNNER_MAX_ROUNDS; t++) {
        if (r->judged[t] <= 0)
            continue;
        printf("%s r%d %.1f%% (%.0f)", any ? "," : "by round:   winner right",
               t, 100.0 * r->winner_correct[t] / r->judged[t], r->judged[t]);
        any = 1;
    }
    if (!any)
        return;
    printf("\n");
    print_fit(r);
}

/* The best single model beside NSED's accuracy is taken among the
 * models that answered round 0 of every question NSED is judged on, so
 * that the two figures count the same questions: under a broker a model
 * that sat on three questions and got them right is no 100% baseline.
 * With none such, the line says so (the per-model lines below and the
 * paired comparisons, on shared questions, remain). */
static void print_accuracy(const runner_report *r)
{
    const runner_report_tally *best = NULL;

    for (size_t i = 0; i < r->round0.n; i++) {
        const runner_report_tally *t = &r->round0.items[i];

        if (t->n != r->with_ref)
            continue;
        if (!best || pct(t->correct, t->n) > pct(best->correct, best->n))
            best = t;
    }
    printf("accuracy:   NSED %.1f%% (%zu/%zu)   strict majority %.1f%%",
           pct(r->correct, r->with_ref), r->correct, r->with_ref,
           pct(r->majority_correct, r->with_ref));
    if (best)
        printf("   best single model %s %.1f%%", best->name,
               pct(best->correct, best->n));
    else if (r->round0.n)
        printf("   best single model - (none sat on all %zu)", r->with_ref);
    printf("\n");
    for (size_t i = 0; i < r->round0.n; i++)
        printf("            round 0, %s alone: %.1f%% (%zu/%zu)\n",
               r->round0.items[i].name,
               pct(r->round0.items[i].correct, r->round0.items[i].n),
               r->round0.items[i].correct, r->round0.items[i].n);
    print_rounds(r);
}

/* One comparison line: "NSED - name: +d.d points [95% lo, hi], McNemar
 * p P (NSED only b, baseline only c, of n)". */
static void print_cmp(const char *name, const runner_bl_pair *p)
{
    runner_bl_cmp c;

    runner_baselines_compare(p, &c);
    printf("            NSED - %s: %+.1f points [95%% %+.1f, %+.1f], "
           "McNemar p %.3g (NSED only %zu, baseline only %zu, of %zu)\n",
           name, 100 * c.diff, 100 * c.lo, 100 * c.hi, c.p, p->b, p->c, c.n);
}

/* The strict majority's ties and the paired comparisons (runner_baselines.h),
 * then per tag: n, NSED's and each baseline's accuracy. */
static void print_baselines(const runner_baselines *bl)
{
    const runner_bl_col *drawn = NULL;

    for (size_t i = 0; i < bl->ncols; i++)
        if (!strcmp(bl->cols[i].name, "majority_drawn"))
            drawn = &bl->cols[i];
    printf("majority:   no strict majority on %.1f%% (%zu/%zu; %zu ties)",
           pct(bl->no_majority, bl->n), bl->no_majority, bl->n, bl->ties);
    if (drawn)
        printf("   ties drawn %.1f%% (%zu/%zu)",
               pct(drawn->all.a + drawn->all.c,
                   drawn->all.a + drawn->all.b + drawn->all.c + drawn->all.d),
               drawn->all.a + drawn->all.c,
               drawn->all.a + drawn->all.b + drawn->all.c + drawn->all.d);
    printf("\n");
    printf("paired:     NSED against each baseline on the same questions "
           "(Newcombe interval, exact McNemar)\n");
    for (size_t i = 0; i < bl->ncols; i++)
        print_cmp(bl->cols[i].name, &bl->cols[i].all);
    for (size_t t = 0; t < bl->ntags; t++) {
        printf("%s %s: n %zu, NSED %.1f%%",
               t ? "           " : "by tag:    ", bl->tags[t].name,
               bl->tags[t].n, pct(bl->tags[t].nsed_correct, bl->tags[t].n));
        for (size_t i = 0; i < bl->ncols; i++) {
            const runner_bl_pair *p = &bl->cols[i].tag[t];

            printf(", %s %.1f%%", bl->cols[i].name,
                   pct(p->a + p->c, p->a + p->b + p->c + p->d));
        }
        printf("\n");
    }
}

/* The self-consistency baseline's line (baselines.self_consistency):
 * its accuracy over the questions NSED's is judged on, and what it cost
 * apart from the deliberation. */
static void print_selfcons(const runner_report *r)
{
    const runner_report_selfcons *sc = &r->sc;

    if (!sc->results)
        return;
    printf("self-cons.: %.1f%% (%zu/%zu) with as many calls as the team "
           "(model",
           pct(sc->correct, sc->judged), sc->correct, sc->judged);
    for (size_t i = 0; i < sc->models.n; i++)
        printf("%s %s %zu", i ? "," : "", sc->models.items[i].name,
               sc->models.items[i].n);
    printf("); %zu without a strict majority (drawn), %zu incomplete\n"
           "            %zu samples (%zu failed), $%.4f apart from NSED's "
           "cost",
           sc->ties, sc->incomplete, sc->samples, sc->failed, sc->cost_usd);
    printf("\n");
}

/* A latency quantile as the histogram bucket it is, "lo-hi" in ms: one
 * decimal below 100 ms, whole ms above ("26.9-32.0", "152-181"); "-"
 * when no call succeeded. */
static void fmt_latency(char *out, size_t size, double lo, double hi)
{
    if (hi <= 0)
        snprintf(out, size, "-");
    else if (hi < 100)
        snprintf(out, size, "%.1f-%.1f", lo, hi);
    else
        snprintf(out, size, "%.0f-%.0f", lo, hi);
}

static void print_models(const runner_report *r)
{
    if (r->nmodels == 0)
        return;
    printf("%-12s %8s %8s %8s %8s %8s %13s %13s %12s %10s\n", "model", "calls",
           "ok", "failed", "retries", "ledger", "p50 ms", "p95 ms", "tokens",
           "cost $");
    for (size_t i = 0; i < r->nmodels; i++) {
        const runner_report_model *m = &r->models[i];
        char p50[32], p95[32];

        fmt_latency(p50, sizeof p50, m->p50_lo_ms, m->p50_ms);
        fmt_latency(p95, sizeof p95, m->p95_lo_ms, m->p95_ms);
        printf("%-12s %8.0f %8.0f %8.0f %8.0f %8.0f %13s %13s %12.0f "
               "%10.4f\n",
               m->id, m->calls, m->ok, m->failed, m->retries, m->ledger_hits,
               p50, p95, m->tokens, m->cost_usd);
        for (size_t k = 0; k < m->nerrors; k++)
            printf("%s%s %.0f", k ? ", " : "             errors: ",
                   m->errors[k].kind, m->errors[k].n);
        if (m->nerrors)
            printf("\n");
    }
}

/* "cache: N calls answered from the call cache (model n, ...)", only when
 * some run of the store used one (nsed run --cache). */
static void print_cache(const runner_report *r)
{
    double n = 0;

    for (size_t i = 0; i < r->nmodels; i++)
        n += r->models[i].cache_hits;
    if (n <= 0)
        return;
    printf("cache:      %.0f calls answered from the call cache (", n);
    for (size_t i = 0, k = 0; i < r->nmodels; i++)
        if (r->models[i].cache_hits > 0)
            printf("%s%s %.0f", k++ ? ", " : "", r->models[i].id,
                   r->models[i].cache_hits);
    printf(")\n");
}

/* "prefix:     cached share of prompt tokens by kind of call: propose
 * 0.412, revise 0.873, ..." -- only when a server reported a cached token
 * (one that reports none may have no prefix cache or not say). */
static void print_prefix(const runner_report *r)
{
    double ct = 0;

    for (size_t k = 0; k < GATEWAY_CALL_KIND_COUNT; k++)
        ct += r->kind_cached_tokens[k];
    if (ct <= 0)
        return;
    printf("prefix:     cached share of prompt tokens by kind of call:");
    for (size_t k = 0, n = 0; k < GATEWAY_CALL_KIND_COUNT; k++)
        if (r->kind_prompt_tokens[k] > 0)
            printf("%s %s %.3f", n++ ? "," : "",
                   gateway_call_kind_name((enum gateway_call_kind)k),
                   r->kind_cached_tokens[k] / r->kind_prompt_tokens[k]);
    printf("\n");
}

/* One reason per line with its count, under label. */
static void print_reasons(const char *label, const runner_report_tallies *t)
{
    for (size_t i = 0; i < t->n; i++)
        printf("%-11s %zu %s\n", i ? "" : label, t->items[i].n,
               t->items[i].name);
}

/* "label: k of n noun (model k/n, ...)" over the per-model tallies. */
static void print_share(const char *label, const char *noun,
                        const runner_report_tallies *part,
                        const runner_report_tallies *whole)
{
    size_t k = 0, n = 0;

    for (size_t i = 0; i < whole->n; i++) {
        k += part->items[i].n;
        n += whole->items[i].n;
    }
    printf("%-11s %zu of %zu %s (", label, k, n, noun);
    for (size_t i = 0; i < whole->n; i++)
        printf("%s%s %zu/%zu", i ? ", " : "", whole->items[i].name,
               part->items[i].n, whole->items[i].n);
    printf(")\n");
}

/* "cut off: k replies at max_tokens (model k, ...)". */
static void print_cut(const runner_report_tallies *t)
{
    size_t k = 0;

    for (size_t i = 0; i < t->n; i++)
        k += t->items[i].n;
    printf("%-11s %zu replies at max_tokens (", "cut off:", k);
    for (size_t i = 0; i < t->n; i++)
        printf("%s%s %zu", i ? ", " : "", t->items[i].name, t->items[i].n);
    printf(")\n");
}

static void print_deliberation(const runner_report *r)
{
    if (!r->rounds && !r->proposals.n)
        return;
    printf("no winner:  %zu of %zu rounds\n", r->winnerless, r->rounds);
    print_share("abstained:", "evaluations", &r->abstained, &r->evaluations);
    print_share("no answer:", "proposals", &r->no_answer, &r->proposals);
    print_cut(&r->truncated);
}

/* The models the runner last recorded as paused by their breaker. */
static void print_paused(const runner_report *r)
{
    bool ended = false;

    if (!r->npaused)
        return;
    printf("paused:     ");
    for (size_t i = 0; i < r->npaused; i++) {
        printf("%s%s since %s", i ? ", " : "", r->paused[i].id,
               r->paused[i].since);
        ended = ended || r->paused[i].run_ended;
    }
    printf("%s\n", ended ? " (the last known state: the run has ended)"
                         : " (circuit breaker open)");
}

/* Position and length bias (runner_report_bias), when any evaluation
 * counted. */
static void print_bias(const runner_report_bias *b)
{
    if (!b->evaluations)
        return;
    printf("bias:       mean weight/100 by shown position:");
    for (size_t p = 0; p < b->npos; p++)
        printf("%s %zu %+.3f (%zu)", p ? "," : "", p + 1, b->pos_mean[p],
               b->pos_n[p]);
    if (!b->npos)
        printf(" unknown");
    printf("\n");
    if (b->has_pos_fit)
        printf("            position: slope %+.4f per position, Pearson r "
               "%+.3f, over %zu weights",
               b->pos_slope, b->pos_r, b->pos_weights);
    else
        printf("            position: no fit (position never varies), over "
               "%zu weights",
               b->pos_weights);
    printf(" (orders: %zu shared, %zu per evaluator, %zu not recorded)\n",
           b->shared, b->per_evaluator, b->unknown);
    if (b->has_len)
        printf("            length: Spearman rho %+.3f of weight and answer "
               "length (mean %.0f characters), over %zu weights\n",
               b->len_rho, b->len_mean_chars, b->weights);
    else
        printf("            length: no correlation (weight or length never "
               "varies), over %zu weights\n",
               b->weights);
}

/* A store made by nsed merge: from how many shards, and when. */
static void print_merged(const runner_report *r)
{
    const cJSON *mg = cJSON_GetObjectItemCaseSensitive(r->manifest, "merged");
    const cJSON *hist = cJSON_GetObjectItemCaseSensitive(r->manifest,
                                                         "history");
    const cJSON *e, *at = NULL;

    if (!cJSON_IsObject(mg))
        return;
    cJSON_ArrayForEach(e, hist) {
        if (strcmp(json_str(e, "event", ""), "merge") == 0)
            at = e;
    }
    printf("merged:     from %.0f shards by nsed merge at %s\n",
           json_num(mg, "count", 0), json_str(at, "at", "?"));
}

/* A shard store says which shard it holds (manifest "shard"). */
static void print_shard(const runner_report *r)
{
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(r->manifest, "shard");

    if (cJSON_IsObject(sh))
        printf("shard:      %.0f/%.0f (only the questions whose id hashes to "
               "shard %.0f; nsed merge joins the shards)\n",
               json_num(sh, "index", 0), json_num(sh, "count", 0),
               json_num(sh, "index", 0));
}

/* What the store takes: the databases' pages, per question, the three
 * largest databases. */
static void print_space(const runner_report_space *sp)
{
    printf("store use:  %zu bytes in databases (%.0f per question), %zu "
           "in the file;",
           sp->data_bytes, sp->per_question, sp->used_bytes);
    for (int db = 0; db < STORE_DB_COUNT; db++)
        printf("%s %s %zu", db ? "," : "", store_db_name((enum store_db)db),
               sp->dbs[db].bytes);
    printf("\n");
}

static void print_text(const runner_report *r)
{
    printf("store:      %s\n", r->store);
    if (r->bound) {
        printf("workflow:   %s (hash %.16s)\n", r->workflow_name,
               r->workflow_hash);
        printf("git commit: %s\n", r->git_commit ? r->git_commit : "-");
        printf("created:    %s by nsed %s, seed %s\n", r->created_at,
               r->nsed_version, r->seed);
        print_shard(r);
        print_merged(r);
    } else {
        printf("workflow:   (not bound yet)\n");
    }
    printf("questions:  %zu: %zu done, %zu degraded, %zu incomplete, %zu "
           "failed, %zu in progress, %zu not started\n",
           r->total, r->done, r->degraded, r->incomplete, r->failed,
           r->in_progress, r->not_started);
    if (r->ingest_unfinished)
        printf("            %s\n",
               r->writing ? "an ingest is adding questions (the counts include "
                            "those it added so far)"
                          : "an ingest did not finish (stopped between its "
                            "batches): the next nsed ingest or nsed run "
                            "removes the questions it added");
    if (r->in_progress && !r->writing)
        printf("            no run holds the store (it was stopped or "
               "killed): run it again to resume the %zu in progress\n",
               r->in_progress);
    print_reasons("incomplete:", &r->incomplete_why);
    print_reasons("failed:", &r->failed_why);
    print_paused(r);
    print_deliberation(r);
    if (r->stops.n) {
        printf("rounds:     %.2f on average; stopped by", r->rounds_mean);
        for (size_t i = 0; i < r->stops.n; i++)
            printf("%s %s %zu", i ? "," : "", r->stops.items[i].name,
                   r->stops.items[i].n);
        printf("\n");
    }
    if (r->with_ref)
        print_accuracy(r);
    if (r->with_ref)
        print_baselines(r->baselines);
    print_selfcons(r);
    print_bias(&r->bias);
    printf("results:    %.0f tokens, $%.4f\n", r->tokens, r->cost_usd);
    print_broker(&r->broker);
    print_models(r);
    print_cache(r);
    print_space(&r->space);
    print_prefix(r);
}

typedef struct tele_export {
    const char *name;
    char *text;
} tele_export;

static int export_fn(store_txn *txn, void *arg, nsed_err *err)
{
    tele_export *x = arg;
    int rc = telemetry_export(txn, x->name, &x->text);

    if (rc)
        return nsed_error(err, rc, "cannot export the telemetry: %s",
                          nsed_strerror(rc));
    return 0;
}

/* Write the store's telemetry file to path (replaced atomically). */
static int write_telemetry(store *st, const char *name, const char *path,
                           nsed_err *err)
{
    tele_export x = {.name = name};
    int rc = store_read(st, export_fn, &x, err);

    if (!rc)
        rc = atomic_write(path, x.text, strlen(x.text), err);
    if (!rc)
        fprintf(stderr, "nsed status: telemetry written to %s\n", path);
    free(x.text);
    return rc;
}

int cli_status(int argc, char **argv)
{
    static const struct option opts[] = {
        {"store", required_argument, NULL, 's'},
        {"json", no_argument, NULL, 'j'},
        {"telemetry-out", required_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    cli_opts_seen seen = {0};
    const char *dir = NULL, *tele_path = NULL;
    int json = 0, c, rc;
    store_opts so = {.flags = STORE_RDONLY};
    store *st = NULL;
    nsed_err err = {0};
    runner_report *r = NULL;
    char *text = NULL;

    optind = 1;
    while ((c = cli_getopt(&seen, argc, argv, "s:jt:h", opts)) != -1) {
        switch (c) {
        case 's':
            dir = optarg;
            break;
        case 'j':
            json = 1;
            break;
        case 't':
            tele_path = optarg;
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

    rc = cli_open_existing(dir, &so, &st, &err);
    if (!rc)
        rc = runner_report_build(st, &r, &err);
    if (!rc && tele_path)
        rc = write_telemetry(st, r->workflow_name, tele_path, &err);
    if (rc)
        goto out;
    if (json) {
        rc = runner_report_json(r, &text);
        if (rc) {
            rc = nsed_error(&err, rc, "out of memory");
            goto out;
        }
        puts(text);
    } else {
        print_text(r);
    }
    rc = cli_stdout_flush(&err);
out:
    free(text);
    runner_report_free(r);
    store_close(st);
    return rc ? cli_fail(rc, &err) : 0;
}
