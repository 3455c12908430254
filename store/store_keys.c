/* store_keys.c -- building and parsing the runner's store keys (the map is
 * in store_keys.h). */
#include "store/store_keys.h"

#include <string.h>

static char qrec_tag(enum store_keys_qrec rec)
{
    switch (rec) {
    case STORE_KEYS_STATE:
        return 's';
    case STORE_KEYS_ROUND:
        return 'r';
    case STORE_KEYS_INCOMPLETE:
        return 'i';
    case STORE_KEYS_BROKER:
        return 'b';
    case STORE_KEYS_CONTEXT:
        return 'c';
    }
    return '?';
}

int store_keys_question(const char *qid, enum store_keys_qrec rec,
                        uint32_t round, store_key *out)
{
    size_t n = strlen(qid), len = n + 2 + (rec == STORE_KEYS_ROUND ? 4 : 0);

    if (len > STORE_KEY_MAX)
        return NSED_ETOOBIG;
    memcpy(out->bytes, qid, n);
    out->bytes[n++] = '\0';
    out->bytes[n++] = (unsigned char)qrec_tag(rec);
    if (rec == STORE_KEYS_ROUND) {
        out->bytes[n++] = (unsigned char)(round >> 24);
        out->bytes[n++] = (unsigned char)(round >> 16);
        out->bytes[n++] = (unsigned char)(round >> 8);
        out->bytes[n++] = (unsigned char)round;
    }
    out->len = n;
    return 0;
}

int store_keys_question_parse(const void *key, size_t klen, size_t *qid_len,
                              enum store_keys_qrec *rec, uint32_t *round)
{
    const unsigned char *k = key;
    const unsigned char *nul = klen ? memchr(k, '\0', klen) : NULL;
    size_t id = nul ? (size_t)(nul - k) : 0, rest = klen - id;
    enum store_keys_qrec r;

    if (!nul || id == 0 || rest < 2)
        return NSED_EINVAL;
    switch (k[id + 1]) {
    case 's':
        r = STORE_KEYS_STATE;
        break;
    case 'r':
        r = STORE_KEYS_ROUND;
        break;
    case 'i':
        r = STORE_KEYS_INCOMPLETE;
        break;
    case 'b':
        r = STORE_KEYS_BROKER;
        break;
    case 'c':
        r = STORE_KEYS_CONTEXT;
        break;
    default:
        return NSED_EINVAL;
    }
    if (rest != (r == STORE_KEYS_ROUND ? 6u : 2u))
        return NSED_EINVAL;
    if (r == STORE_KEYS_ROUND)
        *round = (uint32_t)k[id + 2] << 24 | (uint32_t)k[id + 3] << 16 |
                 (uint32_t)k[id + 4] << 8 | (uint32_t)k[id + 5];
    *qid_len = id;
    *rec = r;
    return 0;
}

int store_keys_result(const char *qid, store_key *out)
{
    size_t n = strlen(qid);

    if (n > STORE_KEY_MAX)
        return NSED_ETOOBIG;
    memcpy(out->bytes, qid, n);
    out->len = n;
    return 0;
}

const char *store_keys_telemetry_prefix(enum store_keys_tele kind)
{
    switch (kind) {
    case STORE_KEYS_GATEWAY:
        return "gateway/";
    case STORE_KEYS_MODEL:
        return "model/";
    case STORE_KEYS_PRIOR:
        return "prior/";
    case STORE_KEYS_BREAKER:
        return "breaker/";
    }
    return "";
}

int store_keys_telemetry(enum store_keys_tele kind, const char *model,
                         store_key *out)
{
    const char *p = store_keys_telemetry_prefix(kind);
    size_t pl = strlen(p), n = strlen(model);

    if (pl + n > STORE_KEY_MAX)
        return NSED_ETOOBIG;
    memcpy(out->bytes, p, pl);
    memcpy(out->bytes + pl, model, n);
    out->len = pl + n;
    return 0;
}

int store_keys_telemetry_parse(const void *key, size_t klen,
                               enum store_keys_tele *kind, size_t *model_off,
                               size_t *model_len)
{
    static const enum store_keys_tele kinds[] = {STORE_KEYS_GATEWAY,
                                                 STORE_KEYS_MODEL,
                                                 STORE_KEYS_PRIOR,
                                                 STORE_KEYS_BREAKER};

    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        const char *p = store_keys_telemetry_prefix(kinds[i]);
        size_t pl = strlen(p);

        if (klen <= pl || memcmp(key, p, pl) != 0)
            continue;
        *kind = kinds[i];
        *model_off = pl;
        *model_len = klen - pl;
        return 0;
    }
    return NSED_ENOTFOUND;
}

void store_keys_rounds(store_key *out)
{
    static const char rounds[] = "rounds";

    memcpy(out->bytes, rounds, sizeof rounds - 1);
    out->len = sizeof rounds - 1;
}
