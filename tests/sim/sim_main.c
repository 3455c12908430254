/* nsed-sim: a simulated OpenAI-compatible endpoint server for testing nsed
 * without GPUs. See docs/nsed-sim.md. */
#include "pipeline/base/err.h"
#include "pipeline/base/num.h"
#include "sim_config.h"
#include "sim_qset.h"
#include "sim_server.h"

#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(f,
            "usage: nsed-sim --config FILE [--port PORT] [--seed S] "
            "[--questions FILE]\n"
            "\n"
            "Serve simulated models over an OpenAI-compatible HTTP API on "
            "127.0.0.1.\n"
            "\n"
            "  --config FILE     models, accuracies, latencies and faults "
            "(YAML)\n"
            "  --port PORT       port to listen on; 0 or omitted picks a free "
            "one\n"
            "  --seed S          override the config's seed\n"
            "  --questions FILE  question set (JSONL) overriding the config's\n"
            "  --check           load the config and question set, report, "
            "exit\n"
            "  --help            show this text\n"
            "\n"
            "Prints \"listening on 127.0.0.1:PORT\" first; stops on SIGTERM or "
            "SIGINT and prints its stats as JSON on stderr.\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"port", required_argument, NULL, 'p'},
        {"seed", required_argument, NULL, 's'},
        {"questions", required_argument, NULL, 'q'},
        {"check", no_argument, NULL, 'k'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config = NULL, *questions = NULL;
    int check_only = 0;
    uint64_t port = 0, seed = 0;
    int have_seed = 0, opt, status = 0, sig, rc;
    sim_config cfg = {0};
    sim_qset *qs = NULL;
    sim_server *srv = NULL;
    nsed_err err = {0};
    sigset_t stop;
    char *stats;

    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            config = optarg;
            break;
        case 'p':
            if (num_parse_u64(optarg, 65535, &port)) {
                fprintf(stderr, "nsed-sim: --port: \"%s\" is not a port "
                        "number (0-65535)\n", optarg);
                return 2;
            }
            break;
        case 's':
            if (num_parse_u64(optarg, UINT64_MAX, &seed)) {
                fprintf(stderr, "nsed-sim: --seed: \"%s\" is not an unsigned "
                        "64-bit integer\n", optarg);
                return 2;
            }
            have_seed = 1;
            break;
        case 'q':
            questions = optarg;
            break;
        case 'k':
            check_only = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "nsed-sim: unexpected argument \"%s\"\n",
                argv[optind]);
        usage(stderr);
        return 2;
    }
    if (!config) {
        fprintf(stderr, "nsed-sim: --config FILE is required\n");
        usage(stderr);
        return 2;
    }

    /* Block the stop signals before any thread exists, so every server
     * thread inherits the mask and only sigwait() below receives them; no
     * handler and no global flag are needed. */
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN);

    rc = sim_config_load(config, &cfg, &err);
    if (rc) {
        fprintf(stderr, "%s\n", err.msg);
        status = 2;
        goto out;
    }
    if (have_seed)
        cfg.seed = seed;
    if (questions) {
        char *q = strdup(questions);

        if (!q) {
            fprintf(stderr, "nsed-sim: out of memory\n");
            status = 1;
            goto out;
        }
        free(cfg.questions);
        cfg.questions = q;
    }
    rc = sim_qset_load(cfg.questions, &qs, &err);
    if (rc) {
        fprintf(stderr, "%s\n", err.msg[0] ? err.msg : nsed_strerror(rc));
        status = rc == NSED_ENOMEM ? 1 : 2;
        goto out;
    }
    if (check_only) {
        printf("%s: ok, %zu models, question set %s\n", config, cfg.nmodels,
               cfg.questions);
        goto out;
    }
    rc = sim_server_start(&cfg, qs, (unsigned)port, &srv, &err);
    if (rc) {
        fprintf(stderr, "nsed-sim: %s\n", err.msg);
        status = 1;
        goto out;
    }
    printf("listening on 127.0.0.1:%u\n", sim_server_port(srv));
    fflush(stdout);
    for (;;) {
        if (sigwait(&stop, &sig) == 0)
            break;
    }
    sim_server_stop(srv);
    stats = sim_server_stats_json(srv);
    if (stats)
        fprintf(stderr, "%s\n", stats);
    free(stats);
out:
    sim_server_free(srv);
    sim_qset_free(qs);
    sim_config_release(&cfg);
    return status;
}
