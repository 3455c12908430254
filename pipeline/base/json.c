#include "pipeline/base/json.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* cJSON_GetObjectItemCaseSensitive already answers NULL for a NULL or
 * non-object o, which is what makes "o may be NULL" hold below. */
static const cJSON *member(const cJSON *o, const char *key)
{
    return cJSON_GetObjectItemCaseSensitive(o, key);
}

/* ---- lenient readers --------------------------------------------------- */

double json_num(const cJSON *o, const char *key, double dflt)
{
    const cJSON *v = member(o, key);

    return cJSON_IsNumber(v) ? v->valuedouble : dflt;
}

int64_t json_int(const cJSON *o, const char *key, int64_t dflt)
{
    int64_t v;

    /* 2^63 - 1024 is the largest double below 2^63, so every double the
     * range admits converts to int64 without overflow */
    if (json_int_value(member(o, key), INT64_MIN, INT64_MAX - 1023, &v))
        return v;
    return dflt;
}

const char *json_str(const cJSON *o, const char *key, const char *dflt)
{
    const cJSON *v = member(o, key);

    return cJSON_IsString(v) ? v->valuestring : dflt;
}

bool json_bool(const cJSON *o, const char *key, bool dflt)
{
    const cJSON *v = member(o, key);

    return cJSON_IsBool(v) ? cJSON_IsTrue(v) : dflt;
}

bool json_int_value(const cJSON *v, int64_t lo, int64_t hi, int64_t *out)
{
    double d;

    if (!cJSON_IsNumber(v))
        return false;
    d = v->valuedouble;
    if (!isfinite(d) || d != floor(d) || d < (double)lo || d > (double)hi)
        return false;
    *out = (int64_t)d;
    return true;
}

/* ---- checked getters --------------------------------------------------- */

int json_get_int(const cJSON *o, const char *key, int64_t lo, int64_t hi,
                 int64_t *v)
{
    const cJSON *n = member(o, key);

    if (!n)
        return 0;
    if (!cJSON_IsNumber(n) || !isfinite(n->valuedouble) ||
        n->valuedouble < (double)lo || n->valuedouble > (double)hi)
        return NSED_EINVAL;
    *v = (int64_t)n->valuedouble;
    return 0;
}

int json_get_num(const cJSON *o, const char *key, double *v)
{
    const cJSON *n = member(o, key);

    if (!n)
        return 0;
    if (!cJSON_IsNumber(n) || !isfinite(n->valuedouble))
        return NSED_EINVAL;
    *v = n->valuedouble;
    return 0;
}

int json_get_str(const cJSON *o, const char *key, char **v)
{
    const cJSON *n = member(o, key);
    char *s;

    if (!n || cJSON_IsNull(n))
        return 0;
    if (!cJSON_IsString(n))
        return NSED_EINVAL;
    s = strdup(n->valuestring);
    if (!s)
        return NSED_ENOMEM;
    *v = s;
    return 0;
}

/* ---- the strict reader -------------------------------------------------- */

void json_reader_init(json_reader *r, const char *what, nsed_err *err)
{
    r->err = err;
    r->what = what;
    r->rc = 0;
}

void json_rd_fail(json_reader *r, int code, const char *path,
                  const char *reason)
{
    if (r->rc)
        return;
    r->rc = nsed_error(r->err, code, "%s: %s: %s", r->what, path, reason);
}

const cJSON *json_rd_item(json_reader *r, const cJSON *o, const char *key,
                          const char *path)
{
    const cJSON *v;

    if (r->rc)
        return NULL;
    v = member(o, key);
    if (!v)
        json_rd_fail(r, NSED_EINVAL, path, "missing");
    return v;
}

const cJSON *json_rd_obj(json_reader *r, const cJSON *o, const char *key,
                         const char *path, bool nullable)
{
    const cJSON *v = json_rd_item(r, o, key, path);

    if (!v || (nullable && cJSON_IsNull(v)))
        return NULL;
    if (!cJSON_IsObject(v)) {
        json_rd_fail(r, NSED_EINVAL, path, "not an object");
        return NULL;
    }
    return v;
}

const cJSON *json_rd_arr(json_reader *r, const cJSON *o, const char *key,
                         const char *path, bool nullable, size_t n)
{
    const cJSON *v = json_rd_item(r, o, key, path);

    if (!v || (nullable && cJSON_IsNull(v)))
        return NULL;
    if (!cJSON_IsArray(v)) {
        json_rd_fail(r, NSED_EINVAL, path, "not an array");
        return NULL;
    }
    if (n != (size_t)-1 && (size_t)cJSON_GetArraySize(v) != n) {
        json_rd_fail(r, NSED_EINVAL, path, "wrong number of entries");
        return NULL;
    }
    return v;
}

char *json_rd_str(json_reader *r, const cJSON *o, const char *key,
                  const char *path, bool nullable)
{
    const cJSON *v = json_rd_item(r, o, key, path);
    char *s;

    if (!v || (nullable && cJSON_IsNull(v)))
        return NULL;
    if (!cJSON_IsString(v)) {
        json_rd_fail(r, NSED_EINVAL, path, "not a string");
        return NULL;
    }
    s = strdup(v->valuestring);
    if (!s)
        json_rd_fail(r, NSED_ENOMEM, path, "out of memory");
    return s;
}

double json_rd_num(json_reader *r, const cJSON *o, const char *key,
                   const char *path)
{
    const cJSON *v = json_rd_item(r, o, key, path);

    if (!v)
        return 0;
    if (!cJSON_IsNumber(v)) {
        json_rd_fail(r, NSED_EINVAL, path, "not a number");
        return 0;
    }
    if (!isfinite(v->valuedouble)) {
        /* 1e999 parses as an infinity; no writer of ours prints one */
        json_rd_fail(r, NSED_EINVAL, path, "not a finite number");
        return 0;
    }
    return v->valuedouble;
}

int64_t json_rd_int_item(json_reader *r, const cJSON *v, const char *path,
                         int64_t lo, int64_t hi)
{
    int64_t x;

    if (r->rc || !v)
        return lo;
    if (!cJSON_IsNumber(v)) {
        json_rd_fail(r, NSED_EINVAL, path, "not a number");
        return lo;
    }
    if (!json_int_value(v, lo, hi, &x)) {
        json_rd_fail(r, NSED_EINVAL, path, "not an integer in range");
        return lo;
    }
    return x;
}

int64_t json_rd_int(json_reader *r, const cJSON *o, const char *key,
                    const char *path, int64_t lo, int64_t hi)
{
    return json_rd_int_item(r, json_rd_item(r, o, key, path), path, lo, hi);
}

bool json_rd_bool(json_reader *r, const cJSON *o, const char *key,
                  const char *path)
{
    const cJSON *v = json_rd_item(r, o, key, path);

    if (!v)
        return false;
    if (!cJSON_IsBool(v)) {
        json_rd_fail(r, NSED_EINVAL, path, "not a boolean");
        return false;
    }
    return cJSON_IsTrue(v);
}

int json_rd_enum(json_reader *r, const cJSON *o, const char *key,
                 const char *path, const char *(*name)(int), int count)
{
    const cJSON *v = json_rd_item(r, o, key, path);

    if (!v)
        return 0;
    if (cJSON_IsString(v)) {
        for (int i = 0; i < count; i++) {
            if (!strcmp(v->valuestring, name(i)))
                return i;
        }
    }
    json_rd_fail(r, NSED_EINVAL, path, "unknown value");
    return 0;
}

/* ---- builders ----------------------------------------------------------- */

int json_add_item(cJSON *o, const char *key, cJSON *item)
{
    if (!item)
        return NSED_ENOMEM;
    if (!cJSON_AddItemToObject(o, key, item)) {
        cJSON_Delete(item);
        return NSED_ENOMEM;
    }
    return 0;
}

int json_set_item(cJSON *o, const char *key, cJSON *item)
{
    if (!item)
        return NSED_ENOMEM;
    if (!member(o, key))
        return json_add_item(o, key, item);
    if (!cJSON_ReplaceItemInObjectCaseSensitive(o, key, item)) {
        cJSON_Delete(item);
        return NSED_ENOMEM;
    }
    return 0;
}

int json_add_num(cJSON *o, const char *key, double v)
{
    return json_add_item(o, key, cJSON_CreateNumber(v));
}

int json_add_str(cJSON *o, const char *key, const char *v)
{
    return json_add_item(o, key,
                         v ? cJSON_CreateString(v) : cJSON_CreateNull());
}

int json_set_str(cJSON *o, const char *key, const char *v)
{
    return json_set_item(o, key,
                         v ? cJSON_CreateString(v) : cJSON_CreateNull());
}

int json_add_int(cJSON *o, const char *key, int64_t v)
{
    char tmp[32];

    snprintf(tmp, sizeof tmp, "%" PRId64, v);
    return cJSON_AddRawToObject(o, key, tmp) ? 0 : NSED_ENOMEM;
}

int json_add_u64(cJSON *o, const char *key, uint64_t v)
{
    char tmp[32];

    snprintf(tmp, sizeof tmp, "%" PRIu64, v);
    return cJSON_AddRawToObject(o, key, tmp) ? 0 : NSED_ENOMEM;
}

int json_add_exact(cJSON *o, const char *key, double v)
{
    char tmp[40];

    snprintf(tmp, sizeof tmp, "%.17g", isfinite(v) ? v : 0.0);
    return cJSON_AddRawToObject(o, key, tmp) ? 0 : NSED_ENOMEM;
}

/* ---- JSON inside free text ---------------------------------------------- */

cJSON *json_find_object(const char *text, size_t len, int tries,
                        bool from_end,
                        bool (*want)(const cJSON *obj, void *arg), void *arg)
{
    int tried = 0;

    for (size_t k = 0; k < len && tried < tries; k++) {
        size_t i = from_end ? len - 1 - k : k;
        const char *end = NULL;
        cJSON *o;

        if (text[i] != '{')
            continue;
        tried++;
        o = cJSON_ParseWithLengthOpts(text + i, len - i, &end, false);
        if (!o)
            continue;
        if (cJSON_IsObject(o) && want(o, arg))
            return o;
        cJSON_Delete(o);
    }
    return NULL;
}

cJSON *json_find_last_object(const char *text, size_t len, int tries,
                             bool (*want)(const cJSON *obj, void *arg),
                             void *arg)
{
    cJSON *found = NULL;
    int tried = 0;
    size_t i = 0;

    while (i < len && tried < tries) {
        const char *end = NULL;
        cJSON *o;

        if (text[i] != '{') {
            i++;
            continue;
        }
        tried++;
        o = cJSON_ParseWithLengthOpts(text + i, len - i, &end, false);
        if (!o) {
            i++;
            continue;
        }
        /* a parsed value starting with '{' is an object ending at end */
        i = end && end > text + i ? (size_t)(end - text) : i + 1;
        if (cJSON_IsObject(o) && want(o, arg)) {
            cJSON_Delete(found);
            found = o;
        } else {
            cJSON_Delete(o);
        }
    }
    return found;
}
