/* cli_team.c -- `nsed team WORKFLOW [--store DIR] [--tags T,..] [--json]` */
#include "pipeline/broker/broker.h"
#include "pipeline/cli/cli.h"
#include "pipeline/broker/telemetry.h"
#include "pipeline/workflow/workflow.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char team_usage[] =
    "usage: nsed team WORKFLOW [--store DIR] [--tags T1,T2] "
    "[--telemetry FILE] [--json]\n"
    "                 [--set KEY=VALUE]...\n"
    "\n"
    "Show the team the broker would choose now for a question with these\n"
    "tags, and why: the template the tags select, the constraints, and for\n"
    "every model its estimates (p_g, p_v with their observation counts,\n"
    "expected cost and tokens per question), whether it was admitted,\n"
    "excluded (and the reason) or chosen. The estimates come from the\n"
    "store's telemetry (opened read-only, so this can run beside a running\n"
    "writer), else from the workflow's priors. See docs/broker.md.\n"
    "\n"
    "  -s, --store DIR       use the telemetry this run store has measured\n"
    "                        (and the prior it was given)\n"
    "  -t, --tags T1,T2      the question's tags (comma-separated)\n"
    "  -T, --telemetry FILE  use this telemetry file as the prior (as nsed\n"
    "                        run --telemetry would), instead of the store's\n"
    "  -j, --json            the decision record (as stored per question)\n"
    "      --set KEY=VALUE   override a workflow key, as nsed run --set\n"
    "  -h, --help            this text\n"
    "\n"
    "Exit status: 0 (also when no team is feasible: the output says why),\n"
    "1 runtime failure, 2 bad input.\n";

#define MAX_TAGS 64

/* Split s (modified) at commas into tags; empty pieces are refused. */
static int split_tags(char *s, char **tags, size_t *n)
{
    *n = 0;
    for (;;) {
        char *comma = strchr(s, ',');

        if (comma)
            *comma = '\0';
        if (!*s || *n == MAX_TAGS)
            return -1;
        tags[(*n)++] = s;
        if (!comma)
            return 0;
        s = comma + 1;
    }
}

static void print_constraints(const workflow *wf, const broker_decision *d)
{
    const workflow_broker *b = &wf->broker;

    printf("constraints: ");
    if (b->budget_usd_per_question > 0)
        printf("$%.6g per question, ", b->budget_usd_per_question);
    if (b->budget_tokens_per_question > 0)
        printf("%lld tokens per question, ",
               (long long)b->budget_tokens_per_question);
    if (b->vram_per_gpu_gb > 0)
        printf("%.6g GB VRAM per GPU, ", b->vram_per_gpu_gb);
    printf("team of %d..%d", b->team_size_min, b->team_size_max);
    if (b->max_per_family > 0)
        printf(", at most %d per family", b->max_per_family);
    printf(", evaluators need p_v > %.3g; costs assume %d rounds\n",
           b->evaluator_min_pv, d->rounds);
}

static void print_text(const workflow *wf, const broker_decision *d,
                       const char *tags)
{
    printf("team for %s%s%s: template %s, policy %s, objective %s\n",
           tags ? "tags [" : "untagged questions", tags ? tags : "",
           tags ? "]" : "", d->team->name, workflow_policy_name(d->policy),
           workflow_objective_name(wf->broker.objective));
    print_constraints(wf, d);
    if (d->staffed) {
        printf("chosen:");
        for (size_t s = 0; s < d->seats.nseats; s++)
            printf("%s %s (%s)", s ? "," : "",
                   wf->models[d->seats.seats[s].model].id,
                   d->seats.seats[s].role);
        printf("\nexpected: value %.4f, $%.6f and %.0f tokens per question "
               "(team of %d)\n", d->value, d->usd, d->tokens, d->team_size);
    } else {
        printf("no team: %s\n", d->reason);
    }
    printf("\n%-16s %-12s %15s %15s %8s %12s %10s  %s\n", "model", "family",
           "p_g (n)", "p_v (n)", "value", "$/question", "tokens/q",
           "decision");
    for (size_t i = 0; i < d->ncands; i++) {
        const broker_candidate *c = &d->cands[i];
        const workflow_model *m = &wf->models[c->model];
        char pg[32], pv[32];

        snprintf(pg, sizeof pg, "%.3f (%.0f)", c->est.p_g, c->est.p_g_n);
        snprintf(pv, sizeof pv, "%.3f (%.0f)", c->est.p_v, c->est.p_v_n);
        printf("%-16s %-12s %15s %15s %8.3f %12.6f %10.0f  %s\n", m->id,
               m->family, pg, pv, c->value, c->usd, c->tokens, c->why);
    }
    printf("\ntokens per seat-round, round 0 / later rounds (measured "
           "seat-rounds):\n");
    for (size_t i = 0; i < d->ncands; i++) {
        const broker_candidate *c = &d->cands[i];

        if (!c->in_pool)
            continue;
        printf("  %-16s %8.0f (%.0f) / %8.0f (%.0f)%s\n",
               wf->models[c->model].id, c->est.first_tokens,
               c->est.seat_rounds, c->est.later_tokens,
               c->est.later_seat_rounds,
               c->est.seat_rounds > 0 ? "" : "  guessed: nothing measured");
    }
}

int cli_team(int argc, char **argv)
{
    static const struct option opts[] = {
        {"store", required_argument, NULL, 's'},
        {"tags", required_argument, NULL, 't'},
        {"telemetry", required_argument, NULL, 'T'},
        {"json", no_argument, NULL, 'j'},
        {"set", required_argument, NULL, CLI_OPT_SET},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    cli_opts_seen seen = {0};
    cli_sets sets = {0};
    workflow_options wopt = {0};
    const char *dir = NULL, *tpath = NULL;
    char *tags_arg = NULL, *tags_copy = NULL, *tags[MAX_TAGS], *json_text = NULL;
    size_t ntags = 0;
    int json = 0, c, rc;
    workflow *wf = NULL;
    store *st = NULL;
    store_opts so = {.flags = STORE_RDONLY};
    telemetry *tel = NULL;
    broker_decision *d = NULL;
    nsed_err err = {0};

    optind = 1;
    while ((c = cli_getopt(&seen, argc, argv, "s:t:T:jh", opts)) != -1) {
        switch (c) {
        case 's':
            dir = optarg;
            break;
        case 't':
            tags_arg = optarg;
            break;
        case 'T':
            tpath = optarg;
            break;
        case 'j':
            json = 1;
            break;
        case CLI_OPT_SET:
            rc = cli_sets_add(&sets, "team", optarg);
            if (rc)
                return rc;
            break;
        case 'h':
            fputs(team_usage, stdout);
            return 0;
        default:
            return cli_usage_error("team", "bad option");
        }
    }
    if (optind != argc - 1)
        return cli_usage_error("team", "expected exactly one WORKFLOW file");
    if (tags_arg) {
        tags_copy = strdup(tags_arg);
        if (!tags_copy) {
            rc = nsed_error(&err, NSED_ENOMEM, "out of memory");
            goto out;
        }
        if (split_tags(tags_copy, tags, &ntags)) {
            free(tags_copy);
            return cli_usage_error("team", "--tags: \"%s\" is not a list of "
                                   "1..%d non-empty tags separated by commas",
                                   tags_arg, MAX_TAGS);
        }
    }
    wopt.overrides = sets.v;
    wopt.noverrides = sets.n;
    rc = workflow_load_with(argv[optind], &wopt, &wf, &err);
    if (rc)
        goto out;
    if (dir) {
        rc = cli_open_existing(dir, &so, &st, &err);
        if (!rc)
            rc = telemetry_read_store(st, wf, &tel, &err);
    } else if ((rc = telemetry_new(wf, &tel)) != 0) {
        nsed_error(&err, rc, "out of memory");
    }
    if (rc)
        goto out;
    if (tpath) {
        rc = telemetry_import_file(tel, tpath, NULL, &err);
        if (rc)
            goto out;
    }
    rc = broker_decide(wf, tel, (const char *const *)tags, ntags, &d, &err);
    if (rc)
        goto out;
    if (json) {
        rc = broker_decision_json(wf, d, &json_text);
        if (rc) {
            nsed_error(&err, rc, "out of memory");
            goto out;
        }
        puts(json_text);
    } else {
        print_text(wf, d, tags_arg);
    }
    rc = cli_stdout_flush(&err);
out:
    free(json_text);
    free(tags_copy);
    broker_decision_free(d);
    telemetry_free(tel);
    store_close(st);
    workflow_free(wf);
    return rc ? cli_fail(rc, &err) : 0;
}
