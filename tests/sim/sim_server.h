/* sim_server.h -- the simulated OpenAI-compatible HTTP server.
 *
 * Serves, on 127.0.0.1 only, through libmicrohttpd in thread-per-connection
 * mode (every connection waits out its simulated latency in its own thread,
 * so hundreds of requests are in flight at once):
 *   POST /v1/chat/completions   a simulated model's answer (sim_model.h),
 *                               or an injected fault;
 *   GET  /v1/models             the configured models;
 *   GET  /sim/stats             per-model counters (sim_server_stats_json).
 *
 * Determinism: a reply is a pure function of (server seed, model, message
 * roles and contents, the request's "seed" when given); fault decisions add
 * the attempt number of that identical request, counted in a bounded map,
 * so that a retry can succeed. The one stateful field is
 * usage.prompt_tokens_details.cached_tokens, which simulates a prefix cache
 * from the previous prompt sent to the same model.
 */
#ifndef NSED_SIM_SERVER_H
#define NSED_SIM_SERVER_H

#include "pipeline/base/err.h"
#include "sim_config.h"
#include "sim_qset.h"

/* Request bodies larger than this are refused with 413. */
#define SIM_MAX_BODY ((size_t)16 << 20)

typedef struct sim_server sim_server;

/* Start serving cfg's models on 127.0.0.1:port (0 picks a free port).
 * cfg and qs are borrowed and must outlive the server. Returns 0 and sets
 * *out, NSED_EIO when the socket cannot be bound or the daemon not started
 * (err says why), or NSED_ENOMEM. */
int sim_server_start(const sim_config *cfg, const sim_qset *qs,
                     unsigned port, sim_server **out, nsed_err *err);

/* The port actually bound. */
unsigned sim_server_port(const sim_server *s);

/* Stop: wake every request waiting out a latency or hang, close all
 * connections and join their threads. Counters stay readable. Calling it
 * twice is harmless. */
void sim_server_stop(sim_server *s);

/* The stats as a JSON text (malloc'd, caller frees), or NULL when out of
 * memory: {"models":{NAME:{requests, ok, faults:{KIND:n...}, faults_total,
 * in_flight, peak_in_flight, prompt_tokens, completion_tokens}},
 * "totals":{same fields, peak over all models at once},
 * "rejected": requests refused with 400/404/405/413}. Safe to call while
 * serving. */
char *sim_server_stats_json(sim_server *s);

/* Stop (if needed) and free. NULL is ignored. */
void sim_server_free(sim_server *s);

#endif
