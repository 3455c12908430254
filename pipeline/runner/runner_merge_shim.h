/* TEMPORARY: stands in for the --shard API of main until it lands. */
#ifndef NSED_RUNNER_MERGE_SHIM_H
#define NSED_RUNNER_MERGE_SHIM_H
#include "store/store.h"
#include <stdint.h>
int questions_shard_of(const char *id, uint32_t n, uint32_t *out);
int questions_ingested_json(store_txn *txn, char **out);
int questions_ingested_put(store_txn *txn, const char *json);
#endif
