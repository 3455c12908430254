/* workflow.c -- node tree -> validated struct workflow.
 *
 * Each section has a key table (keyspec) in the schema's order; map_fields
 * checks a mapping against it (unknown keys with a suggestion, duplicates,
 * inline secrets, missing required keys) and hands back the value nodes,
 * which the section loader then converts with the typed getters below.
 * Every getter reports at the node's own location, so each message points
 * at the exact scalar, list or mapping the user has to change.
 *
 * Sections load in dependency order (models, teams, broker, ... answer,
 * prompts) rather than file order, so references are checked as soon as
 * the thing they name is known.
 */
#include "pipeline/workflow/workflow_int.h"
#include "pipeline/base/suggest.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <regex.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define WF_PATH 192          /* a section path such as teams.main.roles[3] */
#define WF_MAX_STRING 65536  /* any single interpolated value */
#define WF_MAX_KEYS 24       /* keys in the largest keyspec */

typedef struct keyspec {
    const char *key;
    bool required;
} keyspec;

typedef struct ld {
    const char *file;
    nsed_err *err;
    workflow *wf;
    const wf_node *model_ids[WORKFLOW_MAX_MODELS]; /* for duplicate reports */
} ld;

static int fail(ld *l, const wf_node *n, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(ld *l, const wf_node *n, int code, const char *fmt, ...)
{
    char msg[NSED_ERR_MSG_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return nsed_error_at(l->err, code, l->file, n ? n->line : 1,
                         n ? n->col : 1, "%s", msg);
}

static int oom(ld *l)
{
    return nsed_error(l->err, NSED_ENOMEM, "out of memory");
}

/* out = a b c, cut to fit: a long path in a message is still useful
 * truncated, and names are bounded anyway. */
static void path_join(char out[WF_PATH], const char *a, const char *b,
                      const char *c)
{
    const char *parts[3] = {a, b, c};
    size_t n = 0;

    for (size_t i = 0; i < 3; i++) {
        size_t len = strlen(parts[i]);

        if (len > WF_PATH - 1 - n)
            len = WF_PATH - 1 - n;
        memcpy(out + n, parts[i], len);
        n += len;
    }
    out[n] = '\0';
}

/* "base.key", or just "key" at the top level. */
static const char *kpath(char out[WF_PATH], const char *base, const char *key)
{
    path_join(out, base, base[0] ? "." : "", key);
    return out;
}

static const char *ipath(char out[WF_PATH], const char *base, size_t i)
{
    char idx[32];

    snprintf(idx, sizeof idx, "[%zu]", i);
    path_join(out, base, idx, "");
    return out;
}

/* ---- scalars ----------------------------------------------------------- */

static bool is_null(const wf_node *n)
{
    return n->kind == WF_NODE_SCALAR && n->plain &&
           (n->len == 0 || strcmp(n->str, "~") == 0 ||
            strcmp(n->str, "null") == 0 || strcmp(n->str, "Null") == 0 ||
            strcmp(n->str, "NULL") == 0);
}

static bool is_bool_text(const wf_node *n)
{
    static const char *const words[] = {"true", "false", "True", "False",
                                        "TRUE", "FALSE"};

    if (n->kind != WF_NODE_SCALAR || !n->plain)
        return false;
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
        if (strcmp(n->str, words[i]) == 0)
            return true;
    return false;
}

/* Decimal number syntax only: no hex, no inf/nan, no spaces or junk, so
 * strtod/strtoll never see anything they would read more loosely. */
static bool num_syntax(const char *s, bool *integral)
{
    size_t digits = 0;

    *integral = true;
    if (*s == '-' || *s == '+')
        s++;
    while (isdigit((unsigned char)*s)) {
        s++;
        digits++;
    }
    if (*s == '.') {
        *integral = false;
        s++;
        while (isdigit((unsigned char)*s)) {
            s++;
            digits++;
        }
    }
    if (!digits)
        return false;
    if (*s == 'e' || *s == 'E') {
        *integral = false;
        s++;
        if (*s == '-' || *s == '+')
            s++;
        if (!isdigit((unsigned char)*s))
            return false;
        while (isdigit((unsigned char)*s))
            s++;
    }
    return *s == '\0';
}

static const char *describe(const wf_node *n)
{
    bool integral;

    switch (n->kind) {
    case WF_NODE_MAP:
        return "a mapping";
    case WF_NODE_SEQ:
        return "a list";
    case WF_NODE_SCALAR:
        break;
    }
    if (!n->plain)
        return "a quoted string";
    if (is_null(n))
        return "an empty value";
    if (is_bool_text(n))
        return "a boolean";
    if (num_syntax(n->str, &integral))
        return "a number";
    return "a string";
}

/* A short, quotable view of text for messages. Values that look like
 * credentials are never echoed. */
static const char *shorten(const char *s, char out[64])
{
    if (strncmp(s, "sk-", 3) == 0 || strncmp(s, "Bearer ", 7) == 0)
        snprintf(out, 64, "<redacted>");
    else if (strlen(s) > 40)
        snprintf(out, 64, "%.40s...", s);
    else
        snprintf(out, 64, "%s", s);
    for (char *p = out; *p; p++)
        if ((unsigned char)*p < 0x20)
            *p = ' ';
    return out;
}

static const char *snippet(const wf_node *n, char out[64])
{
    return shorten(n->str, out);
}

/* "; did you mean \"x\"?" for the closest candidate when it is close
 * enough to be a likely typo, else "". */
static const char *suggest(char out[WF_PATH], const char *s,
                           const char *const *cands, size_t n)
{
    size_t best = SIZE_MAX;
    const char *c = suggest_closest(s, cands, n, &best);

    out[0] = '\0';
    if (c && best > 0) {
        size_t len = strlen(c);
        size_t limit = len <= 3 ? 1 : len <= 6 ? 2 : 3;

        if (best <= limit && best < strlen(s))
            snprintf(out, WF_PATH, "; did you mean \"%s\"?", c);
    }
    if (c && best == 0) /* differs only in case */
        snprintf(out, WF_PATH, "; did you mean \"%s\"?", c);
    return out;
}

static bool is_name(const char *s, size_t len)
{
    if (len == 0 || len > WORKFLOW_MAX_NAME)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];

        if (!isalnum(c) && c != '.' && c != '_' && c != '-')
            return false;
    }
    return true;
}

static bool is_env_name(const char *s, size_t len)
{
    if (len == 0 || len > 128 || isdigit((unsigned char)s[0]))
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];

        if (!(c >= 'A' && c <= 'Z') && !isdigit(c) && c != '_')
            return false;
    }
    return true;
}

static int secret_error(ld *l, const wf_node *n)
{
    return fail(l, n, NSED_EINVAL,
                "API keys may not be written in a workflow; name an "
                "environment variable with api_key_env");
}

/* ---- typed getters ----------------------------------------------------- */

static int expect_kind(ld *l, const wf_node *n, const char *path,
                       enum wf_node_kind kind)
{
    const char *want = kind == WF_NODE_MAP ? "a mapping"
                       : kind == WF_NODE_SEQ ? "a list" : "a value";

    if (n->kind == kind)
        return 0;
    return fail(l, n, NSED_EINVAL, "%s must be %s, not %s", path, want,
                describe(n));
}

static int get_str(ld *l, const wf_node *n, const char *path, char **out)
{
    char *s;

    if (n->kind != WF_NODE_SCALAR || is_null(n) || is_bool_text(n))
        return fail(l, n, NSED_EINVAL, "%s must be a string, not %s", path,
                    describe(n));
    if (memchr(n->str, '\0', n->len))
        return fail(l, n, NSED_EINVAL, "%s contains a NUL character", path);
    s = strdup(n->str);
    if (!s)
        return oom(l);
    *out = s;
    return 0;
}

/* A non-empty string of at most max bytes without control characters. */
static int get_text(ld *l, const wf_node *n, const char *path, size_t max,
                    char **out)
{
    int rc = get_str(l, n, path, out);

    if (rc)
        return rc;
    if (n->len == 0 || n->len > max) {
        free(*out);
        *out = NULL;
        return fail(l, n, NSED_EINVAL, "%s must be a non-empty string of at "
                    "most %zu bytes", path, max);
    }
    for (size_t i = 0; i < n->len; i++) {
        if ((unsigned char)n->str[i] < 0x20) {
            free(*out);
            *out = NULL;
            return fail(l, n, NSED_EINVAL, "%s must not contain control "
                        "characters", path);
        }
    }
    return 0;
}

static int get_name(ld *l, const wf_node *n, const char *path, char **out)
{
    char sn[64];

    if (n->kind == WF_NODE_SCALAR && !is_null(n) && !is_bool_text(n) &&
        !is_name(n->str, n->len))
        return fail(l, n, NSED_EINVAL, "%s \"%s\" is not a valid name: use "
                    "1..%d characters of A-Z a-z 0-9 . _ -", path,
                    snippet(n, sn), WORKFLOW_MAX_NAME);
    return get_str(l, n, path, out);
}

static int get_bool(ld *l, const wf_node *n, const char *path, bool *out)
{
    char sn[64];

    if (n->kind == WF_NODE_SCALAR && n->plain && strcmp(n->str, "true") == 0) {
        *out = true;
        return 0;
    }
    if (n->kind == WF_NODE_SCALAR && n->plain &&
        strcmp(n->str, "false") == 0) {
        *out = false;
        return 0;
    }
    if (n->kind == WF_NODE_SCALAR && !is_null(n))
        return fail(l, n, NSED_EINVAL, "%s must be true or false (got %s "
                    "\"%s\")", path, describe(n), snippet(n, sn));
    return fail(l, n, NSED_EINVAL, "%s must be true or false, not %s", path,
                describe(n));
}

/* Parse a plain decimal scalar; *integral tells whether it was written
 * without fraction or exponent. */
static int parse_number(ld *l, const wf_node *n, const char *path,
                        const char *what, double *v, bool *integral)
{
    char sn[64], *end;

    if (n->kind != WF_NODE_SCALAR || !n->plain || is_null(n) ||
        is_bool_text(n))
        return fail(l, n, NSED_EINVAL, "%s must be %s, not %s", path, what,
                    describe(n));
    if (!num_syntax(n->str, integral))
        return fail(l, n, NSED_EINVAL, "%s must be %s (got \"%s\")", path,
                    what, snippet(n, sn));
    errno = 0;
    *v = strtod(n->str, &end);
    if (errno == ERANGE || *end || !isfinite(*v))
        return fail(l, n, NSED_EINVAL, "%s: %s is out of range", path,
                    snippet(n, sn));
    return 0;
}

static int get_int(ld *l, const wf_node *n, const char *path, long long lo,
                   long long hi, long long *out)
{
    char sn[64], *end;
    long long v;
    bool integral;
    double d;
    int rc;

    rc = parse_number(l, n, path, "an integer", &d, &integral);
    if (rc)
        return rc;
    if (integral) {
        errno = 0;
        v = strtoll(n->str, &end, 10);
        if (errno == ERANGE || *end)
            return fail(l, n, NSED_EINVAL, "%s must be an integer in "
                        "%lld..%lld (got %s)", path, lo, hi, snippet(n, sn));
    } else {
        /* 1e3 is an integer written as a float; 2.5 is not. */
        if (d != floor(d) || fabs(d) > 9007199254740992.0)
            return fail(l, n, NSED_EINVAL, "%s must be an integer (got %s)",
                        path, snippet(n, sn));
        v = (long long)d;
    }
    if (v < lo || v > hi)
        return fail(l, n, NSED_EINVAL, "%s must be an integer in %lld..%lld "
                    "(got %s)", path, lo, hi, snippet(n, sn));
    *out = v;
    return 0;
}

static int get_u64(ld *l, const wf_node *n, const char *path, uint64_t *out)
{
    char sn[64], *end;
    unsigned long long v;
    bool integral;
    double d;
    int rc;

    rc = parse_number(l, n, path, "an integer", &d, &integral);
    if (rc)
        return rc;
    if (!integral || n->str[0] == '-' || n->str[0] == '+')
        return fail(l, n, NSED_EINVAL, "%s must be an integer in "
                    "0..18446744073709551615 (got %s)", path, snippet(n, sn));
    errno = 0;
    v = strtoull(n->str, &end, 10);
    if (errno == ERANGE || *end)
        return fail(l, n, NSED_EINVAL, "%s must be an integer in "
                    "0..18446744073709551615 (got %s)", path, snippet(n, sn));
    *out = v;
    return 0;
}

/* A number in the interval lo..hi; lo_open/hi_open exclude the bound. */
static int get_num(ld *l, const wf_node *n, const char *path, double lo,
                   bool lo_open, double hi, bool hi_open, double *out)
{
    char sn[64];
    bool integral;
    double v;
    int rc;

    rc = parse_number(l, n, path, "a number", &v, &integral);
    if (rc)
        return rc;
    if (v < lo || (lo_open && v == lo) || v > hi || (hi_open && v == hi))
        return fail(l, n, NSED_EINVAL, "%s must be a number in %c%g, %g%c "
                    "(got %s)", path, lo_open ? '(' : '[', lo, hi,
                    hi_open ? ')' : ']', snippet(n, sn));
    *out = v == 0 ? 0 : v;
    return 0;
}

static int get_enum(ld *l, const wf_node *n, const char *path,
                    const char *const *names, size_t count, int *out)
{
    char sn[64], hint[WF_PATH], list[WF_PATH] = "";

    if (n->kind == WF_NODE_SCALAR && !is_null(n)) {
        for (size_t i = 0; i < count; i++) {
            if (strcmp(n->str, names[i]) == 0) {
                *out = (int)i;
                return 0;
            }
        }
    }
    for (size_t i = 0; i < count; i++) {
        size_t used = strlen(list);

        snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "",
                 names[i]);
    }
    if (n->kind != WF_NODE_SCALAR || is_null(n))
        return fail(l, n, NSED_EINVAL, "%s must be one of %s, not %s", path,
                    list, describe(n));
    return fail(l, n, NSED_EINVAL, "%s \"%s\" is not one of %s%s", path,
                snippet(n, sn), list, suggest(hint, n->str, names, count));
}

/* get_enum over a whole name table. */
#define GET_ENUM(l, n, path, table, out) \
    get_enum(l, n, path, table, WF_COUNT(table), out)

static int get_int_as(ld *l, const wf_node *n, const char *path,
                      long long lo, long long hi, int *out)
{
    long long v;
    int rc = get_int(l, n, path, lo, hi, &v);

    if (!rc)
        *out = (int)v;
    return rc;
}

static int get_long(ld *l, const wf_node *n, const char *path, long long lo,
                    long long hi, long *out)
{
    long long v;
    int rc = get_int(l, n, path, lo, hi, &v);

    if (!rc)
        *out = (long)v;
    return rc;
}

/* ---- mappings and lists ------------------------------------------------ */

static bool is_secret_key(const char *k)
{
    static const char *const secrets[] = {
        "api_key", "apikey", "api-key", "key", "token", "authorization",
        "secret", "password", "bearer",
    };

    for (size_t i = 0; i < sizeof secrets / sizeof secrets[0]; i++)
        if (strcasecmp(k, secrets[i]) == 0)
            return true;
    return false;
}

/* A mapping key must be a string; in schema mappings (secrets set) a key
 * that names a credential is refused before anything else is said. */
static int check_key(ld *l, const wf_node *k, bool secrets)
{
    if (k->kind != WF_NODE_SCALAR || is_null(k))
        return fail(l, k, NSED_EINVAL, "mapping keys must be strings, not %s",
                    describe(k));
    if (secrets && is_secret_key(k->str))
        return secret_error(l, k);
    return 0;
}

/* Check mapping n against spec (nspec <= WF_MAX_KEYS) and store the value
 * node of each key in vals (NULL when absent). path "" is the top level. */
static int map_fields(ld *l, const wf_node *n, const char *path,
                      const keyspec *spec, size_t nspec, const wf_node **vals)
{
    const char *names[WF_MAX_KEYS];
    const wf_node *keys[WF_MAX_KEYS] = {0};
    const char *where = path[0] ? path : "the top level";
    char hint[WF_PATH];
    int rc;

    for (size_t i = 0; i < nspec; i++) {
        vals[i] = NULL;
        names[i] = spec[i].key;
    }
    if (n->kind != WF_NODE_MAP)
        return fail(l, n, NSED_EINVAL, "%s must be a mapping, not %s",
                    path[0] ? path : "a workflow", describe(n));
    for (size_t i = 0; i < n->n; i++) {
        const wf_node *k = n->items[2 * i];
        size_t j;

        rc = check_key(l, k, true);
        if (rc)
            return rc;
        for (j = 0; j < nspec; j++)
            if (strcmp(k->str, spec[j].key) == 0)
                break;
        if (j == nspec) {
            /* A repeated unknown key is reported as unknown: fixing the
             * name is what the user has to do first. */
            return fail(l, k, NSED_EINVAL, "unknown key \"%s\" in %s%s",
                        k->str, where, suggest(hint, k->str, names, nspec));
        }
        if (keys[j])
            return fail(l, k, NSED_EINVAL,
                        "duplicate key \"%s\" (first at %zu:%zu)", k->str,
                        keys[j]->line, keys[j]->col);
        keys[j] = k;
        vals[j] = n->items[2 * i + 1];
    }
    for (size_t j = 0; j < nspec; j++)
        if (spec[j].required && !vals[j])
            return fail(l, n, NSED_EINVAL,
                        "missing required key \"%s\" in %s", spec[j].key,
                        where);
    return 0;
}

/* A mapping whose keys are user-chosen names (teams): check every key and
 * reject duplicates. */
static int map_names(ld *l, const wf_node *n, const char *path, size_t max)
{
    char sn[64];
    int rc;

    rc = expect_kind(l, n, path, WF_NODE_MAP);
    if (rc)
        return rc;
    if (n->n == 0)
        return fail(l, n, NSED_EINVAL, "%s must not be empty", path);
    if (n->n > max)
        return fail(l, n, NSED_EINVAL, "%s has %zu entries; at most %zu are "
                    "allowed", path, n->n, max);
    for (size_t i = 0; i < n->n; i++) {
        const wf_node *k = n->items[2 * i];

        rc = check_key(l, k, false);
        if (rc)
            return rc;
        if (!is_name(k->str, k->len))
            return fail(l, k, NSED_EINVAL, "\"%s\" in %s is not a valid "
                        "name: use 1..%d characters of A-Z a-z 0-9 . _ -",
                        snippet(k, sn), path, WORKFLOW_MAX_NAME);
        for (size_t j = 0; j < i; j++) {
            const wf_node *prev = n->items[2 * j];

            if (strcmp(prev->str, k->str) == 0)
                return fail(l, k, NSED_EINVAL,
                            "duplicate key \"%s\" (first at %zu:%zu)",
                            k->str, prev->line, prev->col);
        }
    }
    return 0;
}

static int expect_list(ld *l, const wf_node *n, const char *path,
                       size_t min, size_t max)
{
    int rc = expect_kind(l, n, path, WF_NODE_SEQ);

    if (rc)
        return rc;
    if (n->n < min)
        return fail(l, n, NSED_EINVAL, "%s must not be empty", path);
    if (n->n > max)
        return fail(l, n, NSED_EINVAL, "%s has %zu entries; at most %zu are "
                    "allowed", path, n->n, max);
    return 0;
}

/* A list of distinct strings (names when names is set, else non-empty
 * text of at most 256 bytes). */
static int get_strs(ld *l, const wf_node *n, const char *path, size_t min,
                    size_t max, bool names, char ***out, size_t *nout)
{
    char p[WF_PATH];
    char **v;
    int rc;

    rc = expect_list(l, n, path, min, max);
    if (rc)
        return rc;
    v = calloc(n->n ? n->n : 1, sizeof *v);
    if (!v)
        return oom(l);
    for (size_t i = 0; i < n->n; i++) {
        const wf_node *it = n->items[i];

        ipath(p, path, i);
        rc = names ? get_name(l, it, p, &v[i]) : get_text(l, it, p, 256, &v[i]);
        for (size_t j = 0; !rc && j < i; j++)
            if (strcmp(v[j], v[i]) == 0)
                rc = fail(l, it, NSED_EINVAL, "%s repeats \"%s\"", path,
                          v[i]);
        if (rc) {
            for (size_t j = 0; j <= i; j++)
                free(v[j]);
            free(v);
            return rc;
        }
    }
    *out = v;
    *nout = n->n;
    return 0;
}

static void free_strs(char **v, size_t n)
{
    if (!v)
        return;
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* ---- models ------------------------------------------------------------ */

/* Expand ${VAR} and ${VAR:-default} from the environment. An unset VAR
 * without a default is an error; a set but empty VAR takes the default,
 * as in the shell. */
static int interpolate(ld *l, const wf_node *n, const char *path, char **out)
{
    const char *s = n->str, *p;
    buf b;
    int rc = 0;

    buf_init(&b, WF_MAX_STRING);
    while ((p = strstr(s, "${")) != NULL) {
        const char *close = strchr(p + 2, '}'), *dflt = NULL, *val;
        char name[129];
        size_t nlen, vlen;

        rc = buf_add(&b, s, (size_t)(p - s));
        if (rc)
            goto out;
        if (!close) {
            rc = fail(l, n, NSED_EINVAL, "unterminated \"${\" in %s", path);
            goto out;
        }
        nlen = (size_t)(close - (p + 2));
        for (size_t i = 0; i + 1 < nlen; i++) {
            if (p[2 + i] == ':' && p[3 + i] == '-') {
                dflt = p + 4 + i;
                nlen = i;
                break;
            }
        }
        if (nlen == 0 || nlen >= sizeof name || isdigit((unsigned char)p[2])) {
            rc = fail(l, n, NSED_EINVAL, "bad variable reference in %s: "
                      "write ${NAME} or ${NAME:-default} with NAME of "
                      "letters, digits and _", path);
            goto out;
        }
        memcpy(name, p + 2, nlen);
        name[nlen] = '\0';
        for (size_t i = 0; i < nlen; i++) {
            if (!isalnum((unsigned char)name[i]) && name[i] != '_') {
                rc = fail(l, n, NSED_EINVAL, "bad variable name \"%s\" in "
                          "%s: use letters, digits and _", name, path);
                goto out;
            }
        }
        val = getenv(name);
        if (val && *val) {
            vlen = strlen(val);
        } else if (dflt) {
            val = dflt;
            vlen = (size_t)(close - dflt);
        } else if (val) {
            vlen = 0;
        } else {
            rc = fail(l, n, NSED_EINVAL, "environment variable %s is not set "
                      "(used in %s); set it or write ${%s:-default}", name,
                      path, name);
            goto out;
        }
        rc = buf_add(&b, val, vlen);
        if (rc)
            goto out;
        s = close + 1;
    }
    rc = buf_adds(&b, s);
    if (rc)
        goto out;
    *out = buf_detach(&b, NULL);
    if (!*out)
        rc = NSED_ENOMEM;
out:
    buf_release(&b);
    if (rc == NSED_ETOOBIG)
        return fail(l, n, NSED_ETOOBIG, "%s is longer than %d bytes after "
                    "expanding variables", path, WF_MAX_STRING);
    if (rc == NSED_ENOMEM)
        return oom(l);
    return rc;
}

/* Check an expanded endpoint and drop trailing slashes (the gateway
 * appends "/chat/completions"). */
static int check_endpoint(ld *l, const wf_node *n, const char *path, char *url)
{
    const char *host;
    char shown[64];
    size_t len = strlen(url), hostlen;

    shorten(url, shown);
    if (strncmp(url, "http://", 7) == 0)
        host = url + 7;
    else if (strncmp(url, "https://", 8) == 0)
        host = url + 8;
    else
        return fail(l, n, NSED_EINVAL, "%s must be an http:// or https:// "
                    "URL (got \"%s\"%s)", path, shown,
                    strcmp(url, n->str) ? " after expanding variables" : "");
    hostlen = strcspn(host, "/?#");
    if (memchr(host, '@', hostlen))
        return fail(l, n, NSED_EINVAL, "%s: credentials may not be written "
                    "in an endpoint URL; name an environment variable with "
                    "api_key_env", path);
    if (hostlen == 0 || len > 2048)
        return fail(l, n, NSED_EINVAL, "%s must be an http:// or https:// "
                    "URL with a host (got \"%s\")", path, shown);
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)url[i] <= 0x20 || url[i] == 0x7f)
            return fail(l, n, NSED_EINVAL, "%s must not contain spaces or "
                        "control characters", path);
    while (len > (size_t)(host - url) + hostlen && url[len - 1] == '/')
        url[--len] = '\0';
    return 0;
}

enum { PL_HOST, PL_GPU, PL_VRAM, PL_COUNT };
static const keyspec placement_keys[PL_COUNT] = {
    [PL_HOST] = {"host", false},
    [PL_GPU] = {"gpu", false},
    [PL_VRAM] = {"vram_gb", false},
};

enum { PR_IN, PR_OUT, PR_COUNT };
static const keyspec price_keys[PR_COUNT] = {
    [PR_IN] = {"input_per_mtok", false},
    [PR_OUT] = {"output_per_mtok", false},
};

enum { TO_CONNECT, TO_REQUEST, TO_COUNT };
static const keyspec timeout_keys[TO_COUNT] = {
    [TO_CONNECT] = {"connect_s", false},
    [TO_REQUEST] = {"request_s", false},
};

enum { SA_TEMP, SA_TOP_P, SA_MAX_TOKENS, SA_SEED, SA_STOP, SA_COUNT };
static const keyspec sampling_keys[SA_COUNT] = {
    [SA_TEMP] = {"temperature", false},
    [SA_TOP_P] = {"top_p", false},
    [SA_MAX_TOKENS] = {"max_tokens", false},
    [SA_SEED] = {"seed", false},
    [SA_STOP] = {"stop", false},
};

enum { PRI_GEN, PRI_VER, PRI_COUNT };
static const keyspec prior_keys[PRI_COUNT] = {
    [PRI_GEN] = {"p_gen", false},
    [PRI_VER] = {"p_ver", false},
};

enum {
    MO_ID, MO_ENDPOINT, MO_MODEL, MO_API_KEY_ENV, MO_FAMILY, MO_SIZE_B,
    MO_PLACEMENT, MO_MAX_CONC, MO_PRICE, MO_TIMEOUTS, MO_SAMPLING,
    MO_STRUCTURED, MO_PRIOR, MO_COUNT
};
static const keyspec model_keys[MO_COUNT] = {
    [MO_ID] = {"id", true},
    [MO_ENDPOINT] = {"endpoint", true},
    [MO_MODEL] = {"model", true},
    [MO_API_KEY_ENV] = {"api_key_env", false},
    [MO_FAMILY] = {"family", false},
    [MO_SIZE_B] = {"size_b", false},
    [MO_PLACEMENT] = {"placement", false},
    [MO_MAX_CONC] = {"max_concurrency", false},
    [MO_PRICE] = {"price", false},
    [MO_TIMEOUTS] = {"timeouts", false},
    [MO_SAMPLING] = {"sampling", false},
    [MO_STRUCTURED] = {"structured_output", false},
    [MO_PRIOR] = {"prior", false},
};

static int load_sampling(ld *l, const wf_node *n, const char *path,
                         workflow_sampling *s)
{
    const wf_node *v[SA_COUNT];
    char p[WF_PATH];
    long long seed;
    int rc;

    rc = map_fields(l, n, path, sampling_keys, SA_COUNT, v);
    if (!rc && v[SA_TEMP])
        rc = get_num(l, v[SA_TEMP], kpath(p, path, "temperature"), 0, false,
                     2, false, &s->temperature);
    if (!rc && v[SA_TOP_P])
        rc = get_num(l, v[SA_TOP_P], kpath(p, path, "top_p"), 0, true, 1,
                     false, &s->top_p);
    if (!rc && v[SA_MAX_TOKENS])
        rc = get_long(l, v[SA_MAX_TOKENS], kpath(p, path, "max_tokens"), 1,
                      1000000, &s->max_tokens);
    if (!rc && v[SA_SEED]) {
        rc = get_int(l, v[SA_SEED], kpath(p, path, "seed"), 0, INT64_MAX,
                     &seed);
        if (!rc) {
            s->has_seed = true;
            s->seed = seed;
        }
    }
    if (!rc && v[SA_STOP])
        rc = get_strs(l, v[SA_STOP], kpath(p, path, "stop"), 0,
                      WORKFLOW_MAX_STOP, false, &s->stop, &s->nstop);
    return rc;
}

static int load_model(ld *l, const wf_node *n, const char *path, size_t idx)
{
    workflow_model *m = &l->wf->models[idx];
    const wf_node *v[MO_COUNT], *w[PL_COUNT];
    char p[WF_PATH];
    int rc;

    m->placement_gpu = -1;
    m->placement_vram_gb = -1;
    m->max_concurrency = 4;
    m->connect_timeout_s = 10;
    m->request_timeout_s = 300;
    m->sampling.temperature = 0.7;
    m->sampling.top_p = 1;
    m->sampling.max_tokens = 1024;
    m->prior_p_gen = -1;
    m->prior_p_ver = -1;

    rc = map_fields(l, n, path, model_keys, MO_COUNT, v);
    if (rc)
        return rc;
    rc = get_name(l, v[MO_ID], kpath(p, path, "id"), &m->id);
    if (rc)
        return rc;
    for (size_t i = 0; i < idx; i++)
        if (strcmp(l->wf->models[i].id, m->id) == 0)
            return fail(l, v[MO_ID], NSED_EINVAL, "duplicate model id \"%s\" "
                        "(first at %zu:%zu)", m->id, l->model_ids[i]->line,
                        l->model_ids[i]->col);
    l->model_ids[idx] = v[MO_ID];

    kpath(p, path, "endpoint");
    rc = get_text(l, v[MO_ENDPOINT], p, 2048, &m->endpoint_raw);
    if (!rc)
        rc = interpolate(l, v[MO_ENDPOINT], p, &m->endpoint);
    if (!rc)
        rc = check_endpoint(l, v[MO_ENDPOINT], p, m->endpoint);
    if (rc)
        return rc;

    kpath(p, path, "model");
    rc = get_text(l, v[MO_MODEL], p, 256, &m->model_raw);
    if (!rc)
        rc = interpolate(l, v[MO_MODEL], p, &m->model);
    if (rc)
        return rc;
    if (!m->model[0] || strlen(m->model) > 256)
        return fail(l, v[MO_MODEL], NSED_EINVAL, "%s must be 1..256 bytes "
                    "after expanding variables", p);

    if (v[MO_API_KEY_ENV]) {
        const wf_node *k = v[MO_API_KEY_ENV];

        /* The value is never echoed: a key pasted here must not reach a
         * log through our error message. */
        if (k->kind != WF_NODE_SCALAR || !is_env_name(k->str, k->len))
            return secret_error(l, k);
        m->api_key_env = strdup(k->str);
        if (!m->api_key_env)
            return oom(l);
    }
    if (v[MO_FAMILY])
        rc = get_name(l, v[MO_FAMILY], kpath(p, path, "family"), &m->family);
    else if (!(m->family = strdup(m->id)))
        rc = oom(l);
    if (!rc && v[MO_SIZE_B])
        rc = get_num(l, v[MO_SIZE_B], kpath(p, path, "size_b"), 0, true,
                     100000, false, &m->size_b);
    if (!rc && v[MO_PLACEMENT]) {
        char q[WF_PATH];

        kpath(q, path, "placement");
        rc = map_fields(l, v[MO_PLACEMENT], q, placement_keys, PL_COUNT, w);
        if (!rc && w[PL_HOST])
            rc = get_text(l, w[PL_HOST], kpath(p, q, "host"), 255,
                          &m->placement_host);
        if (!rc && w[PL_GPU])
            rc = get_int_as(l, w[PL_GPU], kpath(p, q, "gpu"), 0, 1023,
                            &m->placement_gpu);
        if (!rc && w[PL_VRAM])
            rc = get_num(l, w[PL_VRAM], kpath(p, q, "vram_gb"), 0, false,
                         10000, false, &m->placement_vram_gb);
    }
    if (!rc && v[MO_MAX_CONC])
        rc = get_int_as(l, v[MO_MAX_CONC], kpath(p, path, "max_concurrency"),
                        1, 4096, &m->max_concurrency);
    if (!rc && v[MO_PRICE]) {
        char q[WF_PATH];

        kpath(q, path, "price");
        rc = map_fields(l, v[MO_PRICE], q, price_keys, PR_COUNT, w);
        if (!rc && w[PR_IN])
            rc = get_num(l, w[PR_IN], kpath(p, q, "input_per_mtok"), 0, false,
                         1e6, false, &m->price_input_per_mtok);
        if (!rc && w[PR_OUT])
            rc = get_num(l, w[PR_OUT], kpath(p, q, "output_per_mtok"), 0,
                         false, 1e6, false, &m->price_output_per_mtok);
    }
    if (!rc && v[MO_TIMEOUTS]) {
        char q[WF_PATH];

        kpath(q, path, "timeouts");
        rc = map_fields(l, v[MO_TIMEOUTS], q, timeout_keys, TO_COUNT, w);
        if (!rc && w[TO_CONNECT])
            rc = get_num(l, w[TO_CONNECT], kpath(p, q, "connect_s"), 0, true,
                         3600, false, &m->connect_timeout_s);
        if (!rc && w[TO_REQUEST])
            rc = get_num(l, w[TO_REQUEST], kpath(p, q, "request_s"), 0, true,
                         86400, false, &m->request_timeout_s);
    }
    if (!rc && v[MO_SAMPLING])
        rc = load_sampling(l, v[MO_SAMPLING], kpath(p, path, "sampling"),
                           &m->sampling);
    if (!rc && v[MO_STRUCTURED])
        rc = get_bool(l, v[MO_STRUCTURED],
                      kpath(p, path, "structured_output"),
                      &m->structured_output);
    if (!rc && v[MO_PRIOR]) {
        char q[WF_PATH];

        kpath(q, path, "prior");
        rc = map_fields(l, v[MO_PRIOR], q, prior_keys, PRI_COUNT, w);
        if (!rc && w[PRI_GEN])
            rc = get_num(l, w[PRI_GEN], kpath(p, q, "p_gen"), 0, false, 1,
                         false, &m->prior_p_gen);
        if (!rc && w[PRI_VER])
            rc = get_num(l, w[PRI_VER], kpath(p, q, "p_ver"), 0, false, 1,
                         false, &m->prior_p_ver);
    }
    return rc;
}

static int load_models(ld *l, const wf_node *n)
{
    char p[WF_PATH];
    int rc;

    rc = expect_list(l, n, "models", 1, WORKFLOW_MAX_MODELS);
    if (rc)
        return rc;
    l->wf->models = calloc(n->n, sizeof *l->wf->models);
    if (!l->wf->models)
        return oom(l);
    l->wf->nmodels = n->n;
    for (size_t i = 0; i < n->n; i++) {
        rc = load_model(l, n->items[i], ipath(p, "models", i), i);
        if (rc)
            return rc;
    }
    return 0;
}

/* ---- teams ------------------------------------------------------------- */

enum { RO_NAME, RO_COUNT_, RO_PERSONA, RO_MODELS, RO_FAMILIES, RO_KEYS };
static const keyspec role_keys[RO_KEYS] = {
    [RO_NAME] = {"name", true},
    [RO_COUNT_] = {"count", false},
    [RO_PERSONA] = {"persona", false},
    [RO_MODELS] = {"models", false},
    [RO_FAMILIES] = {"families", false},
};

enum { TE_ROLES, TE_COUNT };
static const keyspec team_keys[TE_COUNT] = {
    [TE_ROLES] = {"roles", true},
};

/* Every model id (or distinct family) of the workflow, for hints. */
static size_t model_names(const workflow *wf, bool families,
                          const char **out)
{
    size_t n = 0;

    for (size_t i = 0; i < wf->nmodels; i++) {
        const char *s = families ? wf->models[i].family : wf->models[i].id;
        size_t j;

        for (j = 0; j < n; j++)
            if (strcmp(out[j], s) == 0)
                break;
        if (j == n)
            out[n++] = s;
    }
    return n;
}

/* Check the role's model and family references and compute the indices
 * of the models it admits. */
static int resolve_role(ld *l, workflow_role *r, const wf_node *const *v,
                        const char *path)
{
    const workflow *wf = l->wf;
    const char *names[WORKFLOW_MAX_MODELS];
    char hint[WF_PATH], p[WF_PATH];
    bool *ok;
    size_t n;

    for (size_t i = 0; i < r->nmodels; i++) {
        if (!workflow_model_find(wf, r->models[i])) {
            n = model_names(wf, false, names);
            return fail(l, v[RO_MODELS]->items[i], NSED_EINVAL,
                        "model \"%s\" in %s is not defined%s", r->models[i],
                        kpath(p, path, "models"),
                        suggest(hint, r->models[i], names, n));
        }
    }
    for (size_t i = 0; i < r->nfamilies; i++) {
        size_t j;

        for (j = 0; j < wf->nmodels; j++)
            if (strcmp(wf->models[j].family, r->families[i]) == 0)
                break;
        if (j == wf->nmodels) {
            n = model_names(wf, true, names);
            return fail(l, v[RO_FAMILIES]->items[i], NSED_EINVAL,
                        "family \"%s\" in %s is not the family of any "
                        "model%s", r->families[i],
                        kpath(p, path, "families"),
                        suggest(hint, r->families[i], names, n));
        }
    }
    ok = calloc(wf->nmodels, sizeof *ok);
    r->allowed = calloc(wf->nmodels, sizeof *r->allowed);
    if (!ok || !r->allowed) {
        free(ok);
        return oom(l);
    }
    for (size_t j = 0; j < wf->nmodels; j++) {
        for (size_t i = 0; i < r->nmodels && !ok[j]; i++)
            ok[j] = strcmp(wf->models[j].id, r->models[i]) == 0;
        for (size_t i = 0; i < r->nfamilies && !ok[j]; i++)
            ok[j] = strcmp(wf->models[j].family, r->families[i]) == 0;
        if (ok[j])
            r->allowed[r->nallowed++] = j;
    }
    free(ok);
    return 0;
}

static int load_role(ld *l, const wf_node *n, const char *path,
                     workflow_team *t, size_t idx, const wf_node **names)
{
    workflow_role *r = &t->roles[idx];
    const wf_node *v[RO_KEYS];
    char p[WF_PATH];
    int rc;

    r->count = 1;
    rc = map_fields(l, n, path, role_keys, RO_KEYS, v);
    if (!rc)
        rc = get_name(l, v[RO_NAME], kpath(p, path, "name"), &r->name);
    if (rc)
        return rc;
    for (size_t i = 0; i < idx; i++)
        if (strcmp(t->roles[i].name, r->name) == 0)
            return fail(l, v[RO_NAME], NSED_EINVAL, "duplicate role \"%s\" in "
                        "team \"%s\" (first at %zu:%zu)", r->name, t->name,
                        names[i]->line, names[i]->col);
    names[idx] = v[RO_NAME];
    if (v[RO_COUNT_])
        rc = get_int_as(l, v[RO_COUNT_], kpath(p, path, "count"), 1,
                        WORKFLOW_MAX_SEATS, &r->count);
    if (!rc && v[RO_PERSONA])
        rc = get_str(l, v[RO_PERSONA], kpath(p, path, "persona"),
                     &r->persona);
    else if (!rc && !(r->persona = strdup("")))
        rc = oom(l);
    if (!rc && v[RO_MODELS])
        rc = get_strs(l, v[RO_MODELS], kpath(p, path, "models"), 1,
                      WORKFLOW_MAX_MODELS, true, &r->models, &r->nmodels);
    if (!rc && v[RO_FAMILIES])
        rc = get_strs(l, v[RO_FAMILIES], kpath(p, path, "families"), 1,
                      WORKFLOW_MAX_MODELS, true, &r->families, &r->nfamilies);
    if (rc)
        return rc;
    if (!v[RO_MODELS] && !v[RO_FAMILIES])
        return fail(l, n, NSED_EINVAL, "%s needs \"models\" or \"families\" "
                    "(or both) to say which models may take its seats", path);
    return resolve_role(l, r, v, path);
}

static int load_team(ld *l, const wf_node *key, const wf_node *n,
                     workflow_team *t)
{
    const wf_node *v[TE_COUNT], *names[WORKFLOW_MAX_ROLES];
    char path[WF_PATH], p[WF_PATH];
    const wf_node *roles;
    int rc;

    t->name = strdup(key->str);
    if (!t->name)
        return oom(l);
    kpath(path, "teams", t->name);
    rc = map_fields(l, n, path, team_keys, TE_COUNT, v);
    if (rc)
        return rc;
    roles = v[TE_ROLES];
    rc = expect_list(l, roles, kpath(p, path, "roles"), 1,
                     WORKFLOW_MAX_ROLES);
    if (rc)
        return rc;
    t->roles = calloc(roles->n, sizeof *t->roles);
    if (!t->roles)
        return oom(l);
    t->nroles = roles->n;
    for (size_t i = 0; i < roles->n; i++) {
        char q[WF_PATH];

        ipath(q, p, i);
        rc = load_role(l, roles->items[i], q, t, i, names);
        if (rc)
            return rc;
        t->seats += t->roles[i].count;
    }
    if (t->seats > WORKFLOW_MAX_SEATS)
        return fail(l, key, NSED_EINVAL, "team \"%s\" has %d seats; at most "
                    "%d are allowed", t->name, t->seats, WORKFLOW_MAX_SEATS);
    return 0;
}

static int team_cmp(const void *a, const void *b)
{
    return strcmp(((const workflow_team *)a)->name,
                  ((const workflow_team *)b)->name);
}

static int load_teams(ld *l, const wf_node *n)
{
    workflow *wf = l->wf;
    int rc;

    rc = map_names(l, n, "teams", WORKFLOW_MAX_TEAMS);
    if (rc)
        return rc;
    wf->teams = calloc(n->n, sizeof *wf->teams);
    if (!wf->teams)
        return oom(l);
    wf->nteams = n->n;
    for (size_t i = 0; i < n->n; i++) {
        rc = load_team(l, n->items[2 * i], n->items[2 * i + 1],
                       &wf->teams[i]);
        if (rc)
            return rc;
    }
    /* Teams are a mapping: their order in the file means nothing, so it
     * must not reach the canonical form. */
    qsort(wf->teams, wf->nteams, sizeof *wf->teams, team_cmp);
    return 0;
}

static const wf_node *map_key_node(const wf_node *map, const char *key)
{
    for (size_t i = 0; i < map->n; i++)
        if (strcmp(map->items[2 * i]->str, key) == 0)
            return map->items[2 * i];
    return map;
}

/* ---- gateway ----------------------------------------------------------- */

enum { RE_ATTEMPTS, RE_BASE, RE_MAX, RE_TOTAL, RE_COUNT };
static const keyspec retry_keys[RE_COUNT] = {
    [RE_ATTEMPTS] = {"max_attempts", false},
    [RE_BASE] = {"base_delay_ms", false},
    [RE_MAX] = {"max_delay_ms", false},
    [RE_TOTAL] = {"max_total_s", false},
};

enum { CB_FAILURES, CB_COOLDOWN, CB_COUNT };
static const keyspec breaker_keys[CB_COUNT] = {
    [CB_FAILURES] = {"failures", false},
    [CB_COOLDOWN] = {"cooldown_s", false},
};

enum { GW_RETRY, GW_BREAKER, GW_MAX_RESPONSE, GW_COUNT };
static const keyspec gateway_keys[GW_COUNT] = {
    [GW_RETRY] = {"retry", false},
    [GW_BREAKER] = {"circuit_breaker", false},
    [GW_MAX_RESPONSE] = {"max_response_bytes", false},
};

static int load_gateway(ld *l, const wf_node *n)
{
    workflow_gateway *g = &l->wf->gateway;
    const wf_node *v[GW_COUNT], *w[RE_COUNT];
    char p[WF_PATH];
    long long bytes;
    int rc;

    g->retry_max_attempts = 6;
    g->retry_base_delay_ms = 500;
    g->retry_max_delay_ms = 30000;
    g->retry_max_total_s = 600;
    g->breaker_failures = 5;
    g->breaker_cooldown_s = 30;
    g->max_response_bytes = (size_t)8 << 20;
    if (!n)
        return 0;
    rc = map_fields(l, n, "gateway", gateway_keys, GW_COUNT, v);
    if (!rc && v[GW_RETRY]) {
        const char *q = "gateway.retry";

        rc = map_fields(l, v[GW_RETRY], q, retry_keys, RE_COUNT, w);
        if (!rc && w[RE_ATTEMPTS])
            rc = get_int_as(l, w[RE_ATTEMPTS], kpath(p, q, "max_attempts"), 1,
                            100, &g->retry_max_attempts);
        if (!rc && w[RE_BASE])
            rc = get_long(l, w[RE_BASE], kpath(p, q, "base_delay_ms"), 1,
                          600000, &g->retry_base_delay_ms);
        if (!rc && w[RE_MAX])
            rc = get_long(l, w[RE_MAX], kpath(p, q, "max_delay_ms"), 1,
                          3600000, &g->retry_max_delay_ms);
        if (!rc && w[RE_TOTAL])
            rc = get_num(l, w[RE_TOTAL], kpath(p, q, "max_total_s"), 0, true,
                         86400, false, &g->retry_max_total_s);
        if (!rc && g->retry_max_delay_ms < g->retry_base_delay_ms)
            rc = fail(l, w[RE_MAX] ? w[RE_MAX] : w[RE_BASE], NSED_EINVAL,
                      "gateway.retry.max_delay_ms (%ld) must be >= "
                      "base_delay_ms (%ld)", g->retry_max_delay_ms,
                      g->retry_base_delay_ms);
    }
    if (!rc && v[GW_BREAKER]) {
        const char *q = "gateway.circuit_breaker";

        rc = map_fields(l, v[GW_BREAKER], q, breaker_keys, CB_COUNT, w);
        if (!rc && w[CB_FAILURES])
            rc = get_int_as(l, w[CB_FAILURES], kpath(p, q, "failures"), 1,
                            1000, &g->breaker_failures);
        if (!rc && w[CB_COOLDOWN])
            rc = get_num(l, w[CB_COOLDOWN], kpath(p, q, "cooldown_s"), 0,
                         true, 3600, false, &g->breaker_cooldown_s);
    }
    if (!rc && v[GW_MAX_RESPONSE]) {
        rc = get_int(l, v[GW_MAX_RESPONSE], "gateway.max_response_bytes",
                     1024, (long long)1 << 30, &bytes);
        if (!rc)
            g->max_response_bytes = (size_t)bytes;
    }
    return rc;
}

/* ---- broker ------------------------------------------------------------ */

enum { BU_USD, BU_TOKENS, BU_COUNT };
static const keyspec budget_keys[BU_COUNT] = {
    [BU_USD] = {"usd_per_question", false},
    [BU_TOKENS] = {"tokens_per_question", false},
};

enum { TS_MIN, TS_MAX, TS_COUNT };
static const keyspec team_size_keys[TS_COUNT] = {
    [TS_MIN] = {"min", false},
    [TS_MAX] = {"max", false},
};

enum { TI_TAGS, TI_TEAM, TI_COUNT };
static const keyspec tier_keys[TI_COUNT] = {
    [TI_TAGS] = {"tags", true},
    [TI_TEAM] = {"team", true},
};

enum { BP_GEN, BP_VER, BP_STRENGTH, BP_COUNT };
static const keyspec priors_keys[BP_COUNT] = {
    [BP_GEN] = {"p_gen", false},
    [BP_VER] = {"p_ver", false},
    [BP_STRENGTH] = {"strength", false},
};

enum {
    BR_POLICY, BR_OBJECTIVE, BR_BUDGET, BR_VRAM, BR_TEAM_SIZE,
    BR_MAX_PER_FAMILY, BR_EVAL_MIN_PV, BR_DEFAULT_TEAM, BR_TIERS, BR_PRIORS,
    BR_COUNT
};
static const keyspec broker_keys[BR_COUNT] = {
    [BR_POLICY] = {"policy", false},
    [BR_OBJECTIVE] = {"objective", false},
    [BR_BUDGET] = {"budget", false},
    [BR_VRAM] = {"vram_per_gpu_gb", false},
    [BR_TEAM_SIZE] = {"team_size", false},
    [BR_MAX_PER_FAMILY] = {"max_per_family", false},
    [BR_EVAL_MIN_PV] = {"evaluator_min_pv", false},
    [BR_DEFAULT_TEAM] = {"default_team", false},
    [BR_TIERS] = {"tiers", false},
    [BR_PRIORS] = {"priors", false},
};


/* Resolve a team name written at node n (path names the field). */
static int team_ref(ld *l, const wf_node *n, const char *path,
                    const workflow_team **out)
{
    const char *names[WORKFLOW_MAX_TEAMS];
    char hint[WF_PATH];
    const workflow_team *t;
    char *name = NULL;
    int rc;

    rc = get_str(l, n, path, &name);
    if (rc)
        return rc;
    t = workflow_team_find(l->wf, name);
    if (!t) {
        for (size_t i = 0; i < l->wf->nteams; i++)
            names[i] = l->wf->teams[i].name;
        rc = fail(l, n, NSED_EINVAL, "team \"%s\" in %s is not defined%s",
                  name, path, suggest(hint, name, names, l->wf->nteams));
    }
    free(name);
    if (!rc)
        *out = t;
    return rc;
}

static int load_tiers(ld *l, const wf_node *n)
{
    workflow_broker *b = &l->wf->broker;
    const wf_node *v[TI_COUNT];
    char path[WF_PATH], p[WF_PATH];
    int rc;

    rc = expect_list(l, n, "broker.tiers", 0, WORKFLOW_MAX_TIERS);
    if (rc)
        return rc;
    b->tiers = calloc(n->n ? n->n : 1, sizeof *b->tiers);
    if (!b->tiers)
        return oom(l);
    b->ntiers = n->n;
    for (size_t i = 0; i < n->n && !rc; i++) {
        workflow_tier *t = &b->tiers[i];

        ipath(path, "broker.tiers", i);
        rc = map_fields(l, n->items[i], path, tier_keys, TI_COUNT, v);
        if (!rc)
            rc = get_strs(l, v[TI_TAGS], kpath(p, path, "tags"), 1,
                          WORKFLOW_MAX_TAGS, false, &t->tags, &t->ntags);
        if (!rc)
            rc = team_ref(l, v[TI_TEAM], path, &t->team);
    }
    return rc;
}

static int load_broker(ld *l, const wf_node *n, const wf_node *root)
{
    workflow_broker *b = &l->wf->broker;
    const wf_node *v[BR_COUNT] = {0}, *w[BP_COUNT];
    char p[WF_PATH];
    int policy = 0, objective = 0, rc = 0;
    long long tokens;

    b->team_size_min = 2;
    b->team_size_max = 8;
    b->max_per_family = -1;
    b->evaluator_min_pv = 0.5;
    b->prior_p_gen = 0.5;
    b->prior_p_ver = 0.6;
    b->prior_strength = 4;
    if (n)
        rc = map_fields(l, n, "broker", broker_keys, BR_COUNT, v);
    if (!rc && v[BR_POLICY]) {
        rc = GET_ENUM(l, v[BR_POLICY], "broker.policy", wf_policy_names,
                      &policy);
        b->policy = (enum workflow_policy)policy;
    }
    if (!rc && v[BR_OBJECTIVE]) {
        rc = GET_ENUM(l, v[BR_OBJECTIVE], "broker.objective",
                      wf_objective_names, &objective);
        b->objective = (enum workflow_objective)objective;
    }
    if (!rc && v[BR_BUDGET]) {
        const char *q = "broker.budget";

        rc = map_fields(l, v[BR_BUDGET], q, budget_keys, BU_COUNT, w);
        if (!rc && w[BU_USD])
            rc = get_num(l, w[BU_USD], kpath(p, q, "usd_per_question"), 0,
                         true, 1e6, false, &b->budget_usd_per_question);
        if (!rc && w[BU_TOKENS]) {
            rc = get_int(l, w[BU_TOKENS], kpath(p, q, "tokens_per_question"),
                         1, 1000000000000LL, &tokens);
            b->budget_tokens_per_question = rc ? 0 : tokens;
        }
    }
    if (!rc && v[BR_VRAM])
        rc = get_num(l, v[BR_VRAM], "broker.vram_per_gpu_gb", 0, true, 10000,
                     false, &b->vram_per_gpu_gb);
    if (!rc && v[BR_TEAM_SIZE]) {
        const char *q = "broker.team_size";

        rc = map_fields(l, v[BR_TEAM_SIZE], q, team_size_keys, TS_COUNT, w);
        if (!rc && w[TS_MIN])
            rc = get_int_as(l, w[TS_MIN], kpath(p, q, "min"), 1,
                            WORKFLOW_MAX_SEATS, &b->team_size_min);
        if (!rc && w[TS_MAX])
            rc = get_int_as(l, w[TS_MAX], kpath(p, q, "max"), 1,
                            WORKFLOW_MAX_SEATS, &b->team_size_max);
        if (!rc && b->team_size_max < b->team_size_min)
            rc = fail(l, w[TS_MAX] ? w[TS_MAX] : v[BR_TEAM_SIZE],
                      NSED_EINVAL, "broker.team_size.max (%d) must be >= "
                      "min (%d)", b->team_size_max, b->team_size_min);
    }
    if (!rc && v[BR_MAX_PER_FAMILY])
        rc = get_int_as(l, v[BR_MAX_PER_FAMILY], "broker.max_per_family", 1,
                        WORKFLOW_MAX_SEATS, &b->max_per_family);
    if (b->max_per_family < 0)
        b->max_per_family = b->policy == WORKFLOW_POLICY_KNAPSACK ? 1 : 0;
    if (!rc && v[BR_EVAL_MIN_PV])
        rc = get_num(l, v[BR_EVAL_MIN_PV], "broker.evaluator_min_pv", 0, false,
                     1, false, &b->evaluator_min_pv);
    if (!rc && v[BR_DEFAULT_TEAM])
        rc = team_ref(l, v[BR_DEFAULT_TEAM], "broker.default_team",
                      &b->default_team);
    if (!rc && !b->default_team) {
        if (l->wf->nteams == 1)
            b->default_team = &l->wf->teams[0];
        else
            rc = fail(l, n ? n : root, NSED_EINVAL, "broker.default_team is "
                      "required when the workflow defines several teams "
                      "(it serves questions no tier matches)");
    }
    if (!rc && v[BR_TIERS])
        rc = load_tiers(l, v[BR_TIERS]);
    if (!rc && v[BR_PRIORS]) {
        const char *q = "broker.priors";

        rc = map_fields(l, v[BR_PRIORS], q, priors_keys, BP_COUNT, w);
        if (!rc && w[BP_GEN])
            rc = get_num(l, w[BP_GEN], kpath(p, q, "p_gen"), 0, false, 1,
                         false, &b->prior_p_gen);
        if (!rc && w[BP_VER])
            rc = get_num(l, w[BP_VER], kpath(p, q, "p_ver"), 0, false, 1,
                         false, &b->prior_p_ver);
        if (!rc && w[BP_STRENGTH])
            rc = get_num(l, w[BP_STRENGTH], kpath(p, q, "strength"), 0, true,
                         1e6, false, &b->prior_strength);
    }
    return rc;
}

/* Teams must be fillable under the broker's rules: the fixed policy fills
 * every seat, the knapsack at least team_size.min seats; with a family cap
 * that needs enough distinct families among the models the roles admit. */
static int check_team_sizes(ld *l, const wf_node *teams_node)
{
    const workflow *wf = l->wf;
    const workflow_broker *b = &wf->broker;

    for (size_t t = 0; t < wf->nteams; t++) {
        const workflow_team *team = &wf->teams[t];
        const wf_node *at = map_key_node(teams_node, team->name);
        const char *fams[WORKFLOW_MAX_MODELS];
        size_t nfam = 0;
        int need;

        if (b->policy == WORKFLOW_POLICY_FIXED &&
            (team->seats < b->team_size_min ||
             team->seats > b->team_size_max))
            return fail(l, at, NSED_EINVAL, "team \"%s\" has %d seat%s but "
                        "broker.team_size allows %d..%d", team->name,
                        team->seats, team->seats == 1 ? "" : "s",
                        b->team_size_min, b->team_size_max);
        if (team->seats < b->team_size_min)
            return fail(l, at, NSED_EINVAL, "team \"%s\" has %d seat%s, fewer "
                        "than broker.team_size.min (%d)", team->name,
                        team->seats, team->seats == 1 ? "" : "s",
                        b->team_size_min);
        if (b->max_per_family <= 0)
            continue;
        for (size_t r = 0; r < team->nroles; r++) {
            for (size_t k = 0; k < team->roles[r].nallowed; k++) {
                const char *f = wf->models[team->roles[r].allowed[k]].family;
                size_t j;

                for (j = 0; j < nfam; j++)
                    if (strcmp(fams[j], f) == 0)
                        break;
                if (j == nfam)
                    fams[nfam++] = f;
            }
        }
        need = b->policy == WORKFLOW_POLICY_FIXED ? team->seats
                                                  : b->team_size_min;
        if ((size_t)need > nfam * (size_t)b->max_per_family)
            return fail(l, at, NSED_EINVAL, "team \"%s\" needs %d seats but "
                        "its models come from %zu famil%s and "
                        "broker.max_per_family is %d", team->name, need, nfam,
                        nfam == 1 ? "y" : "ies", b->max_per_family);
    }
    return 0;
}

/* ---- rounds ------------------------------------------------------------ */

enum { EF_EFFORT, EF_PG, EF_PV, EF_LAMBDA, EF_BETA, EF_COUNT };
static const keyspec fatigue_keys[EF_COUNT] = {
    [EF_EFFORT] = {"effort", false},
    [EF_PG] = {"p_g", false},
    [EF_PV] = {"p_v", false},
    [EF_LAMBDA] = {"lambda", false},
    [EF_BETA] = {"beta", false},
};

enum { ST_MARGIN, ST_STABLE, ST_FATIGUE, ST_COUNT };
static const keyspec stop_keys[ST_COUNT] = {
    [ST_MARGIN] = {"consensus_margin", false},
    [ST_STABLE] = {"stable_answer", false},
    [ST_FATIGUE] = {"efficiency_fatigue", false},
};

enum { FG_CARRY, FG_WINNER, FG_OWN, FG_CRITIQUE, FG_TABLE, FG_COUNT };
static const keyspec forget_keys[FG_COUNT] = {
    [FG_CARRY] = {"carry", false},
    [FG_WINNER] = {"max_winner_chars", false},
    [FG_OWN] = {"max_own_chars", false},
    [FG_CRITIQUE] = {"max_critique_chars", false},
    [FG_TABLE] = {"max_table_chars", false},
};

enum { RD_MIN, RD_MAX, RD_STOP, RD_FORGET, RD_COUNT };
static const keyspec rounds_keys[RD_COUNT] = {
    [RD_MIN] = {"min", false},
    [RD_MAX] = {"max", false},
    [RD_STOP] = {"stop", false},
    [RD_FORGET] = {"forget_gate", false},
};


static int load_fatigue(ld *l, const wf_node *n, workflow_rounds *r)
{
    const char *q = "rounds.stop.efficiency_fatigue";
    const wf_node *v[EF_COUNT];
    char p[WF_PATH];
    int rc;

    r->fatigue = true;
    r->fatigue_effort = 1;
    r->fatigue_p_g = r->fatigue_p_v = -1;
    r->fatigue_lambda = r->fatigue_beta = -1;
    rc = map_fields(l, n, q, fatigue_keys, EF_COUNT, v);
    if (!rc && v[EF_EFFORT])
        rc = get_num(l, v[EF_EFFORT], kpath(p, q, "effort"), 0, true, 4,
                     false, &r->fatigue_effort);
    if (!rc && v[EF_PG])
        rc = get_num(l, v[EF_PG], kpath(p, q, "p_g"), 0, false, 1, false,
                     &r->fatigue_p_g);
    if (!rc && v[EF_PV])
        rc = get_num(l, v[EF_PV], kpath(p, q, "p_v"), 0, false, 1, false,
                     &r->fatigue_p_v);
    if (!rc && v[EF_LAMBDA])
        rc = get_num(l, v[EF_LAMBDA], kpath(p, q, "lambda"), 0, true, 1e6,
                     false, &r->fatigue_lambda);
    if (!rc && v[EF_BETA])
        rc = get_num(l, v[EF_BETA], kpath(p, q, "beta"), 0, true, 1e6, false,
                     &r->fatigue_beta);
    return rc;
}

static int load_forget_gate(ld *l, const wf_node *n, workflow_rounds *r)
{
    const char *q = "rounds.forget_gate";
    const wf_node *v[FG_COUNT];
    long *limits[FG_COUNT] = {
        NULL, &r->max_winner_chars, &r->max_own_chars,
        &r->max_critique_chars, &r->max_table_chars,
    };
    char p[WF_PATH];
    int rc;

    rc = map_fields(l, n, q, forget_keys, FG_COUNT, v);
    if (!rc && v[FG_CARRY]) {
        const wf_node *c = v[FG_CARRY];

        rc = expect_list(l, c, kpath(p, q, "carry"), 0, 4);
        r->carry = 0;
        for (size_t i = 0; !rc && i < c->n; i++) {
            char ip[WF_PATH];
            int which;

            rc = GET_ENUM(l, c->items[i], ipath(ip, p, i), wf_carry_names,
                          &which);
            if (!rc && (r->carry & (1u << which)))
                rc = fail(l, c->items[i], NSED_EINVAL, "%s repeats \"%s\"",
                          p, wf_carry_names[which]);
            if (!rc)
                r->carry |= 1u << which;
        }
    }
    for (size_t i = FG_WINNER; !rc && i < FG_COUNT; i++)
        if (v[i])
            rc = get_long(l, v[i], kpath(p, q, forget_keys[i].key), 100,
                          1000000, limits[i]);
    return rc;
}

static int load_rounds(ld *l, const wf_node *n)
{
    workflow_rounds *r = &l->wf->rounds;
    const wf_node *v[RD_COUNT], *w[ST_COUNT];
    char p[WF_PATH];
    int rc;

    r->min = 1;
    r->max = 4;
    r->carry = WORKFLOW_CARRY_ALL;
    r->max_winner_chars = 6000;
    r->max_own_chars = 4000;
    r->max_critique_chars = 2000;
    r->max_table_chars = 2000;
    r->fatigue_p_g = r->fatigue_p_v = -1;
    r->fatigue_lambda = r->fatigue_beta = -1;
    if (!n)
        return 0;
    rc = map_fields(l, n, "rounds", rounds_keys, RD_COUNT, v);
    if (!rc && v[RD_MIN])
        rc = get_int_as(l, v[RD_MIN], "rounds.min", 1, 64, &r->min);
    if (!rc && v[RD_MAX])
        rc = get_int_as(l, v[RD_MAX], "rounds.max", 1, 64, &r->max);
    if (!rc && r->max < r->min)
        rc = fail(l, v[RD_MAX] ? v[RD_MAX] : v[RD_MIN], NSED_EINVAL,
                  "rounds.max (%d) must be >= rounds.min (%d)", r->max,
                  r->min);
    if (!rc && v[RD_STOP]) {
        const char *q = "rounds.stop";

        rc = map_fields(l, v[RD_STOP], q, stop_keys, ST_COUNT, w);
        if (!rc && w[ST_MARGIN])
            rc = get_num(l, w[ST_MARGIN], kpath(p, q, "consensus_margin"), 0,
                         true, 1, false, &r->consensus_margin);
        if (!rc && w[ST_STABLE])
            rc = get_int_as(l, w[ST_STABLE], kpath(p, q, "stable_answer"), 1,
                            64, &r->stable_answer);
        if (!rc && w[ST_FATIGUE])
            rc = load_fatigue(l, w[ST_FATIGUE], r);
    }
    if (!rc && v[RD_FORGET])
        rc = load_forget_gate(l, v[RD_FORGET], r);
    return rc;
}

/* ---- scoring, answer, prompts ------------------------------------------ */

enum { SC_SCHEME, SC_SELF, SC_RELIABILITY, SC_TIE, SC_COUNT };
static const keyspec scoring_keys[SC_COUNT] = {
    [SC_SCHEME] = {"scheme", false},
    [SC_SELF] = {"allow_self_votes", false},
    [SC_RELIABILITY] = {"reliability_weighting", false},
    [SC_TIE] = {"tie_break", false},
};


static int load_scoring(ld *l, const wf_node *n)
{
    workflow_scoring *s = &l->wf->scoring;
    const wf_node *v[SC_COUNT];
    int scheme = 0, rc;

    for (int i = 0; i < WORKFLOW_TIE_BREAK_COUNT; i++)
        s->tie_break[i] = (enum workflow_tie_break)i;
    if (!n)
        return 0;
    rc = map_fields(l, n, "scoring", scoring_keys, SC_COUNT, v);
    if (!rc && v[SC_SCHEME]) {
        rc = GET_ENUM(l, v[SC_SCHEME], "scoring.scheme", wf_scheme_names,
                      &scheme);
        s->scheme = (enum workflow_scheme)scheme;
    }
    if (!rc && v[SC_SELF])
        rc = get_bool(l, v[SC_SELF], "scoring.allow_self_votes",
                      &s->allow_self_votes);
    if (!rc && v[SC_RELIABILITY])
        rc = get_bool(l, v[SC_RELIABILITY], "scoring.reliability_weighting",
                      &s->reliability_weighting);
    if (!rc && v[SC_TIE]) {
        const wf_node *t = v[SC_TIE];
        unsigned seen = 0;

        rc = expect_kind(l, t, "scoring.tie_break", WF_NODE_SEQ);
        if (!rc && t->n != WORKFLOW_TIE_BREAK_COUNT)
            rc = fail(l, t, NSED_EINVAL, "scoring.tie_break must list each "
                      "of min_peer_score, variance, seeded exactly once");
        for (size_t i = 0; !rc && i < t->n; i++) {
            char ip[WF_PATH];
            int which;

            rc = GET_ENUM(l, t->items[i], ipath(ip, "scoring.tie_break", i),
                          wf_tie_break_names, &which);
            if (!rc && (seen & (1u << which)))
                rc = fail(l, t->items[i], NSED_EINVAL, "scoring.tie_break "
                          "must list each of min_peer_score, variance, "
                          "seeded exactly once");
            seen |= 1u << which;
            s->tie_break[i] = (enum workflow_tie_break)which;
        }
    }
    return rc;
}

enum { AN_EXTRACT, AN_PATTERN, AN_FIELD, AN_COMPARE, AN_TOLERANCE, AN_COUNT };
static const keyspec answer_keys[AN_COUNT] = {
    [AN_EXTRACT] = {"extract", false},
    [AN_PATTERN] = {"pattern", false},
    [AN_FIELD] = {"field", false},
    [AN_COMPARE] = {"compare", false},
    [AN_TOLERANCE] = {"tolerance", false},
};


static int check_pattern(ld *l, const wf_node *n, const char *pattern)
{
    char why[256];
    regex_t re;
    size_t groups;
    int rc;

    rc = regcomp(&re, pattern, REG_EXTENDED);
    if (rc) {
        regerror(rc, &re, why, sizeof why);
        return fail(l, n, NSED_EINVAL, "answer.pattern is not a valid POSIX "
                    "extended regular expression: %s", why);
    }
    groups = re.re_nsub;
    regfree(&re);
    if (groups != 1)
        return fail(l, n, NSED_EINVAL, "answer.pattern must have exactly one "
                    "capture group (it has %zu)", groups);
    return 0;
}

static int load_answer(ld *l, const wf_node *n)
{
    workflow_answer *a = &l->wf->answer;
    const wf_node *v[AN_COUNT] = {0};
    int extract = 0, compare, rc = 0;

    if (n)
        rc = map_fields(l, n, "answer", answer_keys, AN_COUNT, v);
    if (!rc && v[AN_EXTRACT]) {
        rc = GET_ENUM(l, v[AN_EXTRACT], "answer.extract", wf_extract_names,
                      &extract);
        a->extract = (enum workflow_extract)extract;
    }
    if (rc)
        return rc;
    if (a->extract == WORKFLOW_EXTRACT_REGEX) {
        if (!v[AN_PATTERN])
            return fail(l, n, NSED_EINVAL, "answer.pattern is required with "
                        "extract: regex");
        rc = get_text(l, v[AN_PATTERN], "answer.pattern", 4096, &a->pattern);
        if (!rc)
            rc = check_pattern(l, v[AN_PATTERN], a->pattern);
    } else if (v[AN_PATTERN]) {
        rc = fail(l, v[AN_PATTERN], NSED_EINVAL, "answer.pattern is only "
                  "used with extract: regex");
    }
    if (rc)
        return rc;
    if (a->extract == WORKFLOW_EXTRACT_JSON_FIELD) {
        if (!v[AN_FIELD])
            return fail(l, n, NSED_EINVAL, "answer.field is required with "
                        "extract: json_field");
        rc = get_name(l, v[AN_FIELD], "answer.field", &a->field);
    } else if (v[AN_FIELD]) {
        rc = fail(l, v[AN_FIELD], NSED_EINVAL, "answer.field is only used "
                  "with extract: json_field");
    }
    if (rc)
        return rc;
    a->compare = a->extract == WORKFLOW_EXTRACT_LAST_NUMBER
                     ? WORKFLOW_COMPARE_NUMERIC : WORKFLOW_COMPARE_EXACT;
    if (v[AN_COMPARE]) {
        rc = GET_ENUM(l, v[AN_COMPARE], "answer.compare", wf_compare_names,
                      &compare);
        if (rc)
            return rc;
        a->compare = (enum workflow_compare)compare;
    }
    if (a->compare == WORKFLOW_COMPARE_NUMERIC) {
        a->tolerance = 1e-6;
        if (v[AN_TOLERANCE])
            rc = get_num(l, v[AN_TOLERANCE], "answer.tolerance", 0, false,
                         1e12, false, &a->tolerance);
    } else if (v[AN_TOLERANCE]) {
        rc = fail(l, v[AN_TOLERANCE], NSED_EINVAL, "answer.tolerance is only "
                  "used with compare: numeric");
    }
    return rc;
}

static const keyspec prompt_keys[WF_PROMPT_COUNT] = {
    [WF_PROMPT_SYSTEM] = {"system", false},
    [WF_PROMPT_PROPOSE] = {"propose", false},
    [WF_PROMPT_REVISE] = {"revise", false},
    [WF_PROMPT_EVALUATE] = {"evaluate", false},
    [WF_PROMPT_REPAIR] = {"repair", false},
};

static int load_prompts(ld *l, const wf_node *n)
{
    workflow_prompts *pr = &l->wf->prompts;
    char **slot[WF_PROMPT_COUNT] = {
        &pr->system, &pr->propose, &pr->revise, &pr->evaluate, &pr->repair,
    };
    const wf_node *v[WF_PROMPT_COUNT] = {0};
    char p[WF_PATH], msg[NSED_ERR_MSG_MAX];
    int rc = 0;

    if (n)
        rc = map_fields(l, n, "prompts", prompt_keys, WF_PROMPT_COUNT, v);
    for (int k = 0; !rc && k < WF_PROMPT_COUNT; k++) {
        if (!v[k]) {
            *slot[k] = wf_prompt_default((enum wf_prompt_kind)k, &l->wf->answer);
            if (!*slot[k])
                rc = oom(l);
            continue;
        }
        rc = get_str(l, v[k], kpath(p, "prompts", prompt_keys[k].key),
                     slot[k]);
        if (!rc && wf_prompt_check((enum wf_prompt_kind)k, *slot[k], msg,
                                   sizeof msg))
            rc = fail(l, v[k], NSED_EINVAL, "%s", msg);
    }
    return rc;
}

/* ---- the whole file ---------------------------------------------------- */

enum {
    RT_NAME, RT_VERSION, RT_SEED, RT_MODELS, RT_GATEWAY, RT_BROKER, RT_TEAMS,
    RT_ROUNDS, RT_SCORING, RT_ANSWER, RT_PROMPTS, RT_COUNT
};
static const keyspec root_keys[RT_COUNT] = {
    [RT_NAME] = {"name", true},
    [RT_VERSION] = {"version", true},
    [RT_SEED] = {"seed", false},
    [RT_MODELS] = {"models", true},
    [RT_GATEWAY] = {"gateway", false},
    [RT_BROKER] = {"broker", false},
    [RT_TEAMS] = {"teams", true},
    [RT_ROUNDS] = {"rounds", false},
    [RT_SCORING] = {"scoring", false},
    [RT_ANSWER] = {"answer", false},
    [RT_PROMPTS] = {"prompts", false},
};

static int load_root(ld *l, const wf_node *root)
{
    workflow *wf = l->wf;
    const wf_node *v[RT_COUNT];
    int rc;

    rc = map_fields(l, root, "", root_keys, RT_COUNT, v);
    if (!rc)
        rc = get_name(l, v[RT_NAME], "name", &wf->name);
    if (!rc)
        rc = get_long(l, v[RT_VERSION], "version", 1, INT32_MAX,
                      &wf->version);
    if (!rc && v[RT_SEED])
        rc = get_u64(l, v[RT_SEED], "seed", &wf->seed);
    if (!rc)
        rc = load_models(l, v[RT_MODELS]);
    if (!rc)
        rc = load_teams(l, v[RT_TEAMS]);
    if (!rc)
        rc = load_gateway(l, v[RT_GATEWAY]);
    if (!rc)
        rc = load_broker(l, v[RT_BROKER], root);
    if (!rc)
        rc = check_team_sizes(l, v[RT_TEAMS]);
    if (!rc)
        rc = load_rounds(l, v[RT_ROUNDS]);
    if (!rc)
        rc = load_scoring(l, v[RT_SCORING]);
    if (!rc)
        rc = load_answer(l, v[RT_ANSWER]);
    if (!rc)
        rc = load_prompts(l, v[RT_PROMPTS]);
    return rc;
}

int workflow_load_string(const char *name, const char *text, size_t len,
                         workflow **out, nsed_err *err)
{
    wf_doc doc = {0};
    workflow *wf = NULL;
    ld l = {0};
    int rc;

    if (len > WORKFLOW_MAX_FILE_BYTES)
        return nsed_error_at(err, NSED_ETOOBIG, name, 0, 0, "workflow is %zu "
                             "bytes; the limit is %zu (1 MiB)", len,
                             WORKFLOW_MAX_FILE_BYTES);
    rc = wf_yaml_parse(name, text, len, &doc, err);
    if (rc)
        return rc;
    wf = calloc(1, sizeof *wf);
    if (!wf || !(wf->source = strdup(name))) {
        rc = nsed_error(err, NSED_ENOMEM, "out of memory");
        goto out;
    }
    l.file = name;
    l.err = err;
    l.wf = wf;
    rc = load_root(&l, doc.root);
    if (rc)
        goto out;
    rc = wf_canon_build(wf);
    if (rc) {
        rc = nsed_error(err, rc, "%s: %s", name, nsed_strerror(rc));
        goto out;
    }
    *out = wf;
    wf = NULL;
out:
    workflow_free(wf);
    wf_doc_release(&doc);
    return rc;
}

int workflow_load(const char *path, workflow **out, nsed_err *err)
{
    struct stat st;
    buf b;
    int rc;

    if (stat(path, &st) != 0)
        return nsed_error_at(err, NSED_EIO, path, 0, 0, "cannot open: %s",
                             strerror(errno));
    if (S_ISDIR(st.st_mode))
        return nsed_error_at(err, NSED_EIO, path, 0, 0, "cannot read: it is "
                             "a directory");
    /* Refuse an oversized regular file before reading any of it; the
     * buffer cap covers pipes and files that grow meanwhile. */
    if (S_ISREG(st.st_mode) && (uintmax_t)st.st_size > WORKFLOW_MAX_FILE_BYTES)
        return nsed_error_at(err, NSED_ETOOBIG, path, 0, 0, "workflow file "
                             "is %jd bytes; the limit is %zu (1 MiB)",
                             (intmax_t)st.st_size, WORKFLOW_MAX_FILE_BYTES);
    buf_init(&b, WORKFLOW_MAX_FILE_BYTES);
    rc = buf_read_file(&b, path);
    if (rc == NSED_ETOOBIG)
        rc = nsed_error_at(err, rc, path, 0, 0, "workflow file is larger "
                           "than the limit of %zu bytes (1 MiB)",
                           WORKFLOW_MAX_FILE_BYTES);
    else if (rc == NSED_EIO)
        rc = nsed_error_at(err, rc, path, 0, 0, "cannot read: %s",
                           strerror(errno));
    else if (rc)
        rc = nsed_error(err, rc, "%s: %s", path, nsed_strerror(rc));
    else
        rc = workflow_load_string(path, b.ptr ? b.ptr : "", b.len, out, err);
    buf_release(&b);
    return rc;
}

void workflow_free(workflow *wf)
{
    if (!wf)
        return;
    for (size_t i = 0; i < wf->nmodels; i++) {
        workflow_model *m = &wf->models[i];

        free(m->id);
        free(m->endpoint);
        free(m->model);
        free(m->endpoint_raw);
        free(m->model_raw);
        free(m->api_key_env);
        free(m->family);
        free(m->placement_host);
        free_strs(m->sampling.stop, m->sampling.nstop);
    }
    free(wf->models);
    for (size_t t = 0; t < wf->nteams; t++) {
        workflow_team *team = &wf->teams[t];

        for (size_t r = 0; r < team->nroles; r++) {
            workflow_role *role = &team->roles[r];

            free(role->name);
            free(role->persona);
            free_strs(role->models, role->nmodels);
            free_strs(role->families, role->nfamilies);
            free(role->allowed);
        }
        free(team->roles);
        free(team->name);
    }
    free(wf->teams);
    for (size_t i = 0; i < wf->broker.ntiers; i++)
        free_strs(wf->broker.tiers[i].tags, wf->broker.tiers[i].ntags);
    free(wf->broker.tiers);
    free(wf->answer.pattern);
    free(wf->answer.field);
    free(wf->prompts.system);
    free(wf->prompts.propose);
    free(wf->prompts.revise);
    free(wf->prompts.evaluate);
    free(wf->prompts.repair);
    free(wf->name);
    free(wf->source);
    free(wf->canonical_);
    free(wf->resolved_json_);
    free(wf);
}

const workflow_model *workflow_model_find(const workflow *wf, const char *id)
{
    for (size_t i = 0; i < wf->nmodels; i++)
        if (wf->models[i].id && strcmp(wf->models[i].id, id) == 0)
            return &wf->models[i];
    return NULL;
}

const workflow_team *workflow_team_find(const workflow *wf, const char *name)
{
    for (size_t i = 0; i < wf->nteams; i++)
        if (wf->teams[i].name && strcmp(wf->teams[i].name, name) == 0)
            return &wf->teams[i];
    return NULL;
}

const workflow_team *workflow_team_for_tags(const workflow *wf,
                                            const char *const *tags,
                                            size_t ntags)
{
    for (size_t t = 0; t < wf->broker.ntiers; t++) {
        const workflow_tier *tier = &wf->broker.tiers[t];

        for (size_t i = 0; i < tier->ntags; i++)
            for (size_t j = 0; j < ntags; j++)
                if (strcmp(tier->tags[i], tags[j]) == 0)
                    return tier->team;
    }
    return wf->broker.default_team;
}

size_t workflow_model_index(const workflow *wf, const workflow_model *m)
{
    return (size_t)(m - wf->models);
}
