/* cli_status.c -- `nsed status --store DIR [--json] [--telemetry-out FILE]` */
#include "pipeline/cli/cli.h"
#include "pipeline/gateway/gateway.h"
#include "pipeline/questions/questions.h"
#include "pipeline/runner/runner.h"
#include "pipeline/runner/runner_int.h"
#include "pipeline/broker/telemetry.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char status_usage[] =
    "usage: nsed status --store DIR [--json] [--telemetry-out FILE]\n"
    "\n"
    "Show where a run stands: the workflow it is bound to; questions done,\n"
    "in progress, incomplete (a model could not be reached: run again to\n"
    "resume) and degraded (finished without a seat); rounds used and why\n"
    "questions stopped; accuracy where references exist, next to the\n"
    "round-0 baselines (each model alone, and the majority vote of their\n"
    "round-0 answers); calls, tokens and cost; per-model latency and errors;\n"
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

#define MAX_NAMES 256

/* A small name -> counters table (models, stop reasons). */
typedef struct tally {
    char *name;
    size_t n;       /* occurrences (with a reference, for models) */
    size_t correct;
} tally;

typedef struct tally_set {
    tally items[MAX_NAMES];
    size_t n;
} tally_set;

static tally *tally_get(tally_set *t, const char *name)
{
    for (size_t i = 0; i < t->n; i++)
        if (!strcmp(t->items[i].name, name))
            return &t->items[i];
    if (t->n == MAX_NAMES)
        return NULL;
    t->items[t->n].name = strdup(name);
    if (!t->items[t->n].name)
        return NULL;
    return &t->items[t->n++];
}

static void tally_release(tally_set *t)
{
    for (size_t i = 0; i < t->n; i++)
        free(t->items[i].name);
    t->n = 0;
}

/* What the broker's recorded decisions add up to. */
typedef struct broker_report {
    size_t decisions, unstaffed, over_budget, with_expected;
    double expected_cost, expected_value, actual_cost;
    size_t actual_n;           /* results of staffed knapsack decisions */
    tally_set policies;
    tally_set chosen;          /* model -> decisions that chose it */
    tally_set excluded;        /* model -> decisions that excluded it */
} broker_report;

typedef struct report {
    size_t total, done, degraded, incomplete, in_progress, not_started;
    size_t rounds_sum;
    size_t with_ref, correct, majority_correct;
    double tokens, cost;
    tally_set models;  /* round-0 correctness per model (with reference) */
    tally_set stops;   /* stop reasons */
    cJSON *manifest;
    cJSON *telemetry;  /* model id -> stats object */
    broker_report broker;
    runner_round_counts rounds; /* per-round winner accuracy */
    double ver_n, ver_k;        /* pooled verification judgements */
    double gen_n, gen_k;        /* pooled round-0 answers judged */
    store_txn *txn;
    nsed_err *err;
    int rc;
} report;

static const char *jstr(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);

    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static double jnum(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);

    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

static int jtrue(const cJSON *obj, const char *key)
{
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(obj, key));
}

static int has_ref(const cJSON *obj)
{
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(obj, "correct");

    return cJSON_IsBool(c);
}

static void count_result(report *r, const cJSON *res)
{
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(res, "baselines");
    const cJSON *m, *maj = cJSON_GetObjectItemCaseSensitive(b, "majority");
    const cJSON *tok = cJSON_GetObjectItemCaseSensitive(res, "tokens");
    const char *stop = jstr(res, "stop_reason");
    tally *t;

    r->done++;
    if (jtrue(res, "degraded"))
        r->degraded++;
    r->rounds_sum += (size_t)jnum(res, "rounds");
    r->tokens += jnum(tok, "prompt") + jnum(tok, "completion");
    r->cost += jnum(res, "cost_usd");
    if (stop && (t = tally_get(&r->stops, stop)))
        t->n++;
    if (!has_ref(res))
        return;
    r->with_ref++;
    r->correct += (size_t)jtrue(res, "correct");
    r->majority_correct += (size_t)jtrue(maj, "correct");
    cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(b, "models")) {
        const char *id = jstr(m, "model");

        if (id && (t = tally_get(&r->models, id))) {
            t->n++;
            t->correct += (size_t)jtrue(m, "correct");
        }
    }
}

/* Count the broker's decision for a question (res: its result or NULL). */
static void count_decision(broker_report *b, const cJSON *rec,
                           const cJSON *res)
{
    const cJSON *c, *cands = cJSON_GetObjectItemCaseSensitive(rec,
                                                              "candidates");
    const cJSON *cons = cJSON_GetObjectItemCaseSensitive(rec, "constraints");
    const cJSON *budget = cJSON_GetObjectItemCaseSensitive(cons,
                                                           "usd_per_question");
    const char *policy = jstr(rec, "policy");
    const cJSON *cost = cJSON_GetObjectItemCaseSensitive(rec,
                                                         "expected_cost_usd");
    tally *t;

    b->decisions++;
    if (policy && (t = tally_get(&b->policies, policy)))
        t->n++;
    if (!jtrue(rec, "staffed")) {
        b->unstaffed++;
        return;
    }
    cJSON_ArrayForEach(c, cands) {
        const char *id = jstr(c, "model");

        if (!id)
            continue;
        if (jtrue(c, "chosen") && (t = tally_get(&b->chosen, id)))
            t->n++;
        if (jtrue(c, "in_pool") && !jtrue(c, "admitted") &&
            (t = tally_get(&b->excluded, id)))
            t->n++;
    }
    if (policy && strcmp(policy, "knapsack") == 0 && cJSON_IsNumber(cost)) {
        b->with_expected++;
        b->expected_cost += cost->valuedouble;
        b->expected_value += jnum(rec, "expected_value");
        if (res) {
            double actual = jnum(res, "cost_usd");

            b->actual_n++;
            b->actual_cost += actual;
            if (cJSON_IsNumber(budget) &&
                actual > budget->valuedouble * (1 + 1e-9))
                b->over_budget++;
        }
    }
}

static void visit_decision(report *r, const char *qid, const cJSON *res)
{
    unsigned char key[STORE_KEY_MAX + 8];
    size_t klen = runner_state_key(qid, 'b', 0, key), vlen;
    const void *val;
    cJSON *rec;

    if (store_get(r->txn, STORE_STATE, key, klen, &val, &vlen) != 0)
        return;
    rec = cJSON_ParseWithLength(val, vlen);
    if (rec)
        count_decision(&r->broker, rec, res);
    cJSON_Delete(rec);
}

static int visit_question(const question *q, uint64_t seq, void *arg)
{
    report *r = arg;
    unsigned char key[STORE_KEY_MAX + 8];
    const void *val;
    size_t vlen, klen;
    int rc;

    (void)seq;
    r->total++;
    rc = store_get(r->txn, STORE_RESULTS, q->id, strlen(q->id), &val, &vlen);
    if (rc == 0) {
        cJSON *res = cJSON_ParseWithLength(val, vlen);

        if (!res) {
            r->rc = nsed_error(r->err, NSED_ESTORE,
                               "the result of %s is not valid JSON", q->id);
            return 1;
        }
        count_result(r, res);
        visit_decision(r, q->id, res);
        cJSON_Delete(res);
        return 0;
    }
    visit_decision(r, q->id, NULL);
    klen = runner_state_key(q->id, 'i', 0, key);
    if (store_get(r->txn, STORE_STATE, key, klen, &val, &vlen) == 0) {
        r->incomplete++;
        return 0;
    }
    klen = runner_state_key(q->id, 's', 0, key);
    if (store_get(r->txn, STORE_STATE, key, klen, &val, &vlen) == 0)
        r->in_progress++;
    else
        r->not_started++;
    return 0;
}

static int visit_telemetry(const void *key, size_t klen, const void *val,
                           size_t vlen, void *arg)
{
    report *r = arg;
    cJSON *j = cJSON_ParseWithLength(val, vlen);
    char id[STORE_KEY_MAX + 1];
    size_t pl = strlen("gateway/");

    if (!j)
        return 0;
    memcpy(id, (const char *)key + pl, klen - pl);
    id[klen - pl] = '\0';
    cJSON_AddItemToObject(r->telemetry, id, j);
    return 0;
}

/* Pool the verification counts of a "model/<id>" telemetry record. */
static int visit_model(const void *key, size_t klen, const void *val,
                       size_t vlen, void *arg)
{
    report *r = arg;
    cJSON *j = cJSON_ParseWithLength(val, vlen);
    const cJSON *ver = cJSON_GetObjectItemCaseSensitive(j, "ver");

    (void)key;
    (void)klen;
    const cJSON *gen = cJSON_GetObjectItemCaseSensitive(j, "gen");

    r->ver_n += jnum(ver, "n");
    r->ver_k += jnum(ver, "k");
    r->gen_n += jnum(gen, "n");
    r->gen_k += jnum(gen, "k");
    cJSON_Delete(j);
    return 0;
}

static int read_fn(store_txn *txn, void *arg, nsed_err *err)
{
    report *r = arg;
    int rc;

    (void)err;
    r->txn = txn;
    rc = questions_scan(txn, 0, visit_question, r);
    if (r->rc)
        return r->rc;
    if (rc)
        return nsed_error(r->err, rc, "cannot read the questions");
    rc = runner_rounds_read(txn, &r->rounds);
    if (!rc)
        rc = store_scan(txn, STORE_TELEMETRY, "model/", 6, NULL, 0,
                        visit_model, r);
    if (rc)
        return nsed_error(r->err, rc, "cannot read the telemetry");
    return store_scan(txn, STORE_TELEMETRY, "gateway/", 8, NULL, 0,
                      visit_telemetry, r);
}

/* The efficiency-fatigue fit of the store's per-round accuracy, with p_g
 * and p_v pooled over every model's measured answers and evaluations. */
static int fit_of(const report *r, runner_fit *fit)
{
    if (r->ver_n <= 0 || r->gen_n <= 0)
        return NSED_ENOTFOUND;
    return runner_fit_fatigue(&r->rounds, r->gen_k / r->gen_n,
                              r->ver_k / r->ver_n, fit);
}

static double pct(size_t a, size_t b)
{
    return b ? 100.0 * (double)a / (double)b : 0;
}

/* Latency quantile of a telemetry record, in ms. */
static double quantile_ms(const cJSON *stats, double q)
{
    gateway_stats s;

    gateway_stats_from_json(stats, &s);
    return 1000.0 * gateway_stats_latency_quantile(&s, q);
}

static double mean_or(double sum, size_t n)
{
    return n ? sum / (double)n : 0;
}

static void tally_json(cJSON *o, const char *key, const tally_set *t)
{
    cJSON *m = cJSON_AddObjectToObject(o, key);

    for (size_t i = 0; m && i < t->n; i++)
        cJSON_AddNumberToObject(m, t->items[i].name, (double)t->items[i].n);
}

static void broker_json(const broker_report *b, cJSON *o)
{
    cJSON *j = cJSON_AddObjectToObject(o, "broker");

    if (!j)
        return;
    cJSON_AddNumberToObject(j, "decisions", (double)b->decisions);
    cJSON_AddNumberToObject(j, "unstaffed", (double)b->unstaffed);
    tally_json(j, "policies", &b->policies);
    tally_json(j, "chosen", &b->chosen);
    tally_json(j, "excluded", &b->excluded);
    if (b->with_expected) {
        cJSON_AddNumberToObject(j, "expected_cost_usd_mean",
                                mean_or(b->expected_cost, b->with_expected));
        cJSON_AddNumberToObject(j, "expected_value_mean",
                                mean_or(b->expected_value, b->with_expected));
    } else {
        cJSON_AddNullToObject(j, "expected_cost_usd_mean");
        cJSON_AddNullToObject(j, "expected_value_mean");
    }
    if (b->actual_n)
        cJSON_AddNumberToObject(j, "actual_cost_usd_mean",
                                mean_or(b->actual_cost, b->actual_n));
    else
        cJSON_AddNullToObject(j, "actual_cost_usd_mean");
    cJSON_AddNumberToObject(j, "over_budget", (double)b->over_budget);
}

static void print_tally(const char *label, const tally_set *t)
{
    if (!t->n)
        return;
    printf("            %s:", label);
    for (size_t i = 0; i < t->n; i++)
        printf("%s %s %zu", i ? "," : "", t->items[i].name, t->items[i].n);
    printf("\n");
}

static void print_broker(const broker_report *b)
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
               "%.3f)", mean_or(b->expected_cost, b->with_expected),
               mean_or(b->expected_value, b->with_expected));
    if (b->actual_n)
        printf(", actual $%.6f; %zu over budget",
               mean_or(b->actual_cost, b->actual_n), b->over_budget);
    printf("\n");
    print_tally("chosen", &b->chosen);
    print_tally("excluded", &b->excluded);
}

static cJSON *report_json(const report *r, const char *dir)
{
    cJSON *o = cJSON_CreateObject(), *q, *acc, *models, *stops, *tele;
    const cJSON *m;

    if (!o)
        return NULL;
    cJSON_AddStringToObject(o, "store", dir);
    q = cJSON_AddObjectToObject(o, "questions");
    cJSON_AddNumberToObject(q, "total", (double)r->total);
    cJSON_AddNumberToObject(q, "done", (double)r->done);
    cJSON_AddNumberToObject(q, "degraded", (double)r->degraded);
    cJSON_AddNumberToObject(q, "in_progress", (double)r->in_progress);
    cJSON_AddNumberToObject(q, "incomplete", (double)r->incomplete);
    cJSON_AddNumberToObject(q, "not_started", (double)r->not_started);
    cJSON_AddNumberToObject(o, "rounds_mean",
                            r->done ? (double)r->rounds_sum / (double)r->done
                                    : 0);
    stops = cJSON_AddObjectToObject(o, "stop_reasons");
    for (size_t i = 0; i < r->stops.n; i++)
        cJSON_AddNumberToObject(stops, r->stops.items[i].name,
                                (double)r->stops.items[i].n);
    acc = cJSON_AddObjectToObject(o, "accuracy");
    cJSON_AddNumberToObject(acc, "with_reference", (double)r->with_ref);
    cJSON_AddNumberToObject(acc, "nsed_correct", (double)r->correct);
    cJSON_AddNumberToObject(acc, "majority_correct",
                            (double)r->majority_correct);
    models = cJSON_AddObjectToObject(acc, "round0_by_model");
    for (size_t i = 0; i < r->models.n; i++) {
        cJSON *mm = cJSON_AddObjectToObject(models, r->models.items[i].name);

        cJSON_AddNumberToObject(mm, "answers", (double)r->models.items[i].n);
        cJSON_AddNumberToObject(mm, "correct",
                                (double)r->models.items[i].correct);
    }
    cJSON_AddNumberToObject(o, "tokens", r->tokens);
    cJSON_AddNumberToObject(o, "cost_usd", r->cost);
    {
        cJSON *rounds = cJSON_AddArrayToObject(o, "rounds"), *f;
        runner_fit fit;

        for (int t = 0; rounds && t < RUNNER_MAX_ROUNDS; t++) {
            cJSON *e;

            if (r->rounds.n[t] <= 0)
                continue;
            e = cJSON_CreateObject();
            cJSON_AddItemToArray(rounds, e);
            cJSON_AddNumberToObject(e, "round", t);
            cJSON_AddNumberToObject(e, "judged", r->rounds.n[t]);
            cJSON_AddNumberToObject(e, "winner_correct", r->rounds.k[t]);
        }
        if (fit_of(r, &fit) == 0 &&
            (f = cJSON_AddObjectToObject(o, "fatigue_fit"))) {
            cJSON_AddNumberToObject(f, "p_g", fit.p_g);
            cJSON_AddNumberToObject(f, "p_v", fit.p_v);
            cJSON_AddNumberToObject(f, "lambda", fit.lambda);
            cJSON_AddNumberToObject(f, "beta", fit.beta);
            cJSON_AddNumberToObject(f, "t_opt", fit.t_opt);
        } else {
            cJSON_AddNullToObject(o, "fatigue_fit");
        }
    }
    tele = cJSON_AddObjectToObject(o, "models");
    cJSON_ArrayForEach(m, r->telemetry) {
        cJSON *copy = cJSON_Duplicate(m, 1);

        if (!copy)
            break;
        cJSON_DeleteItemFromObjectCaseSensitive(copy, "latency_hist");
        cJSON_AddNumberToObject(copy, "latency_p50_ms", quantile_ms(m, 0.5));
        cJSON_AddNumberToObject(copy, "latency_p95_ms",
                                quantile_ms(m, 0.95));
        cJSON_AddItemToObject(tele, m->string, copy);
    }
    broker_json(&r->broker, o);
    if (r->manifest) {
        cJSON *man = cJSON_Duplicate(r->manifest, 1);

        cJSON_DeleteItemFromObjectCaseSensitive(man, "workflow_canonical");
        cJSON_AddItemToObject(o, "manifest", man);
    } else {
        cJSON_AddNullToObject(o, "manifest");
    }
    return o;
}

static void print_rounds(const report *r)
{
    runner_fit fit;
    int any = 0;

    for (int t = 0; t < RUNNER_MAX_ROUNDS; t++) {
        if (r->rounds.n[t] <= 0)
            continue;
        printf("%s r%d %.1f%% (%.0f)", any ? "," : "by round:   winner right",
               t, 100.0 * r->rounds.k[t] / r->rounds.n[t], r->rounds.n[t]);
        any = 1;
    }
    if (!any)
        return;
    printf("\n");
    if (fit_of(r, &fit) == 0)
        printf("fatigue fit: p_g %.3f, p_v %.3f, lambda %.3f, beta %.4f: "
               "T_opt %.2f rounds after round 0 (rounds reached by harder "
               "questions weigh it down)\n",
               fit.p_g, fit.p_v, fit.lambda, fit.beta, fit.t_opt);
    else
        printf("fatigue fit: not enough data yet (two revision rounds with "
               "%d judged winners each)\n", RUNNER_FIT_MIN_N);
}

static void print_text(const report *r, const char *dir)
{
    const cJSON *m;
    const tally *best = NULL;

    printf("store:      %s\n", dir);
    if (r->manifest) {
        printf("workflow:   %s (hash %.16s)\n", jstr(r->manifest, "workflow_name"),
               jstr(r->manifest, "workflow_hash"));
        printf("git commit: %s\n", jstr(r->manifest, "git_commit")
                                       ? jstr(r->manifest, "git_commit")
                                       : "-");
        printf("created:    %s by nsed %s, seed %s\n",
               jstr(r->manifest, "created_at"),
               jstr(r->manifest, "nsed_version"), jstr(r->manifest, "seed"));
    } else {
        printf("workflow:   (not bound yet)\n");
    }
    printf("questions:  %zu: %zu done (%zu degraded), %zu in progress, %zu "
           "incomplete, %zu not started\n",
           r->total, r->done, r->degraded, r->in_progress, r->incomplete,
           r->not_started);
    if (r->done) {
        printf("rounds:     %.2f on average; stopped by", (double)r->rounds_sum /
                                                          (double)r->done);
        for (size_t i = 0; i < r->stops.n; i++)
            printf("%s %s %zu", i ? "," : "", r->stops.items[i].name,
                   r->stops.items[i].n);
        printf("\n");
    }
    if (r->with_ref) {
        for (size_t i = 0; i < r->models.n; i++) {
            const tally *t = &r->models.items[i];

            if (!best || pct(t->correct, t->n) > pct(best->correct, best->n))
                best = t;
        }
        printf("accuracy:   NSED %.1f%% (%zu/%zu)   majority vote %.1f%%",
               pct(r->correct, r->with_ref), r->correct, r->with_ref,
               pct(r->majority_correct, r->with_ref));
        if (best)
            printf("   best single model %s %.1f%%", best->name,
                   pct(best->correct, best->n));
        printf("\n");
        for (size_t i = 0; i < r->models.n; i++)
            printf("            round 0, %s alone: %.1f%% (%zu/%zu)\n",
                   r->models.items[i].name,
                   pct(r->models.items[i].correct, r->models.items[i].n),
                   r->models.items[i].correct, r->models.items[i].n);
        print_rounds(r);
    }
    printf("results:    %.0f tokens, $%.4f\n", r->tokens, r->cost);
    print_broker(&r->broker);
    if (cJSON_GetArraySize(r->telemetry) > 0) {
        printf("%-12s %8s %8s %8s %8s %8s %9s %9s %12s %10s\n", "model",
               "calls", "ok", "failed", "retries", "ledger", "p50 ms",
               "p95 ms", "tokens", "cost $");
        cJSON_ArrayForEach(m, r->telemetry) {
            const cJSON *errs = cJSON_GetObjectItemCaseSensitive(m, "errors");
            const cJSON *e;
            int first = 1;

            printf("%-12s %8.0f %8.0f %8.0f %8.0f %8.0f %9.1f %9.1f %12.0f "
                   "%10.4f\n",
                   m->string, jnum(m, "calls"), jnum(m, "ok"),
                   jnum(m, "failed"), jnum(m, "retries"),
                   jnum(m, "ledger_hits"), quantile_ms(m, 0.5),
                   quantile_ms(m, 0.95),
                   jnum(m, "prompt_tokens") + jnum(m, "completion_tokens"),
                   jnum(m, "cost_usd"));
            cJSON_ArrayForEach(e, errs) {
                if (!cJSON_IsNumber(e) || e->valuedouble == 0)
                    continue;
                printf("%s%s %.0f", first ? "             errors: " : ", ",
                       e->string, e->valuedouble);
                first = 0;
            }
            if (!first)
                printf("\n");
        }
    }
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

/* Write the store's telemetry file to path (via a temporary file). */
static int write_telemetry(store *st, const char *name, const char *path,
                           nsed_err *err)
{
    tele_export x = {.name = name};
    char *tmp = NULL;
    FILE *f = NULL;
    int rc;

    rc = store_read(st, export_fn, &x, err);
    if (rc)
        return rc;
    if (asprintf(&tmp, "%s.tmp.%ld", path, (long)getpid()) < 0) {
        tmp = NULL;
        rc = nsed_error(err, NSED_ENOMEM, "out of memory");
        goto out;
    }
    f = fopen(tmp, "w");
    if (!f) {
        rc = nsed_error(err, NSED_EIO, "%s: cannot create: %s", tmp,
                        strerror(errno));
        goto out;
    }
    if (fputs(x.text, f) == EOF)
        rc = nsed_error(err, NSED_EIO, "%s: write failed: %s", tmp,
                        strerror(errno));
    if (fclose(f) != 0 && !rc)
        rc = nsed_error(err, NSED_EIO, "%s: write failed: %s", tmp,
                        strerror(errno));
    if (!rc && rename(tmp, path) != 0)
        rc = nsed_error(err, NSED_EIO, "%s: cannot rename to %s: %s", tmp,
                        path, strerror(errno));
    if (rc)
        unlink(tmp);
    else
        fprintf(stderr, "nsed status: telemetry written to %s\n", path);
out:
    free(tmp);
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
    const char *dir = NULL, *tele_path = NULL;
    int json = 0, c, rc;
    store_opts so = {.flags = STORE_RDONLY};
    store *st = NULL;
    nsed_err err = {0};
    report r = {.err = &err};
    char *manifest_text = NULL;
    cJSON *out = NULL;

    optind = 1;
    while ((c = getopt_long(argc, argv, "s:jt:h", opts, NULL)) != -1) {
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

    r.telemetry = cJSON_CreateObject();
    if (!r.telemetry) {
        rc = nsed_error(&err, NSED_ENOMEM, "out of memory");
        goto out;
    }
    rc = store_open(dir, &so, &st, &err);
    if (rc)
        goto out;
    rc = store_manifest_json(st, &manifest_text, &err);
    if (rc == NSED_ENOTFOUND) {
        rc = 0;
    } else if (rc) {
        goto out;
    } else if (!(r.manifest = cJSON_Parse(manifest_text))) {
        rc = nsed_error(&err, NSED_ESTORE,
                        "%s: the run manifest is not valid JSON", dir);
        goto out;
    }
    rc = store_read(st, read_fn, &r, &err);
    if (rc)
        goto out;
    if (tele_path) {
        rc = write_telemetry(st, r.manifest ? jstr(r.manifest,
                                                   "workflow_name")
                                            : NULL,
                             tele_path, &err);
        if (rc)
            goto out;
    }
    if (json) {
        char *text;

        out = report_json(&r, dir);
        text = out ? cJSON_PrintUnformatted(out) : NULL;
        if (!text) {
            rc = nsed_error(&err, NSED_ENOMEM, "out of memory");
            goto out;
        }
        puts(text);
        free(text);
    } else {
        print_text(&r, dir);
    }
out:
    cJSON_Delete(out);
    cJSON_Delete(r.manifest);
    cJSON_Delete(r.telemetry);
    tally_release(&r.models);
    tally_release(&r.stops);
    tally_release(&r.broker.policies);
    tally_release(&r.broker.chosen);
    tally_release(&r.broker.excluded);
    free(manifest_text);
    store_close(st);
    return rc ? cli_fail(&err) : 0;
}
