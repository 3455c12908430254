/* TEMPORARY: stands in for the --shard API of main until it lands. */
#include "pipeline/runner/runner_merge_shim.h"
#include "pipeline/base/hash.h"
#include <stdlib.h>
#include <string.h>
int questions_shard_of(const char *id, uint32_t n, uint32_t *out)
{
    uint8_t d[HASH_LEN];
    uint64_t v = 0;
    if (hash_sha256(id, strlen(id), d))
        return NSED_ENOMEM;
    for (int i = 0; i < 8; i++)
        v = v << 8 | d[i];
    *out = (uint32_t)(v % n);
    return 0;
}
int questions_ingested_json(store_txn *txn, char **out)
{
    const void *v;
    size_t l;
    int rc = store_get(txn, STORE_META, "ingested", 8, &v, &l);
    if (rc)
        return rc;
    *out = malloc(l + 1);
    memcpy(*out, v, l);
    (*out)[l] = 0;
    return 0;
}
int questions_ingested_put(store_txn *txn, const char *json)
{
    return store_put(txn, STORE_META, "ingested", 8, json, strlen(json));
}
