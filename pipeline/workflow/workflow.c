/* workflow.c -- node tree -> validated struct workflow.
 *
 * Every section is loaded by walking its key table (workflow_keys.c) in
 * the schema's order: map_fields checks a mapping against the table
 * (unknown keys with a suggestion, duplicates, inline secrets, missing
 * required keys) and hands back the value nodes, which load_value converts
 * with the typed getters below as the table says. Keys that need more
 * (references, interpolation, conditions between keys) name a hand-written
 * step; checks across keys run after the key or section they follow.
 * Every getter reports at the node's own location, so each message points
 * at the exact scalar, list or mapping the user has to change.
 *
 * The top-level sections load in dependency order (models, teams, broker,
 * ... answer, prompts) rather than file order, so references are checked
 * as soon as the thing they name is known.
 */
#include "pipeline/workflow/workflow_int.h"
#include "pipeline/base/jsonw.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define WF_PATH 192          /* a section path such as teams.main.roles[3] */
#define WF_MAX_STRING 65536  /* any single interpolated value */
#define WF_MAX_KEYS 24       /* keys in the largest section */

typedef struct ld {
    const char *file;
    nsed_err *err;
    workflow *wf;
    const wf_node *root;
    size_t item;               /* index of the model or role being loaded */
    workflow_team *team;       /* the team being loaded */
    const wf_node *team_key;   /* its name in the file */
    const wf_node *model_ids[WORKFLOW_MAX_MODELS]; /* for duplicate reports */
    const wf_node *role_names[WORKFLOW_MAX_ROLES]; /* of the team loaded */
} ld;

static int load_section(ld *l, const wf_section *s, const wf_node *n,
                        void *base, const char *path);
static int load_value(ld *l, const wf_key *k, const wf_node *n, void *base,
                      const char *p);


static int fail(ld *l, const wf_node *n, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(ld *l, const wf_node *n, int code, const char *fmt, ...)
{
    char msg[NSED_ERR_MSG_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* a value from --set is named by its option, not by a place in the
     * file */
    if (n && n->origin)
        return nsed_error(l->err, code, "%s: %s", n->origin, msg);
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

static const char *suggest(char out[WF_PATH], const char *s,
                           const char *const *cands, size_t n)
{
    return wf_suggest(out, WF_PATH, s, cands, n);
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

/* Check mapping n against the keys of s and store the value node of each
 * key in vals (NULL when absent). path "" is the top level. */
static int map_fields(ld *l, const wf_node *n, const char *path,
                      const wf_section *s, const wf_node **vals)
{
    const char *names[WF_MAX_KEYS];
    const wf_node *keys[WF_MAX_KEYS] = {0};
    const char *where = path[0] ? path : "the top level";
    size_t nspec = s->nkeys;
    char hint[WF_PATH];
    int rc;

    assert(nspec <= WF_MAX_KEYS);
    for (size_t i = 0; i < nspec; i++) {
        vals[i] = NULL;
        names[i] = s->keys[i].key;
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
            if (strcmp(k->str, names[j]) == 0)
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
        if ((s->keys[j].flags & WF_F_REQUIRED) && !vals[j])
            return fail(l, n, NSED_EINVAL,
                        "missing required key \"%s\" in %s", names[j],
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

/* ---- hand-written steps: models ---------------------------------------- */

static int load_endpoint(ld *l, const wf_key *k, const wf_node *n,
                         workflow_model *m, const char *p)
{
    int rc = get_text(l, n, p, (size_t)k->ihi, &m->endpoint_raw);

    if (!rc)
        rc = interpolate(l, n, p, &m->endpoint);
    if (!rc)
        rc = check_endpoint(l, n, p, m->endpoint);
    return rc;
}

static int load_model_name(ld *l, const wf_key *k, const wf_node *n,
                           workflow_model *m, const char *p)
{
    int rc = get_text(l, n, p, (size_t)k->ihi, &m->model_raw);

    if (!rc)
        rc = interpolate(l, n, p, &m->model);
    if (rc)
        return rc;
    if (!m->model[0] || strlen(m->model) > (size_t)k->ihi)
        return fail(l, n, NSED_EINVAL, "%s must be 1..%lld bytes after "
                    "expanding variables", p, k->ihi);
    return 0;
}

static int load_api_key_env(ld *l, const wf_node *n, workflow_model *m)
{
    /* The value is never echoed: a key pasted here must not reach a log
     * through our error message. */
    if (n->kind != WF_NODE_SCALAR || !is_env_name(n->str, n->len))
        return secret_error(l, n);
    m->api_key_env = strdup(n->str);
    return m->api_key_env ? 0 : oom(l);
}

static int load_models(ld *l, const wf_key *k, const wf_node *n,
                       const char *p)
{
    char q[WF_PATH];
    int rc;

    rc = expect_list(l, n, p, (size_t)k->ilo, (size_t)k->ihi);
    if (rc)
        return rc;
    l->wf->models = calloc(n->n, sizeof *l->wf->models);
    if (!l->wf->models)
        return oom(l);
    l->wf->nmodels = n->n;
    for (size_t i = 0; i < n->n; i++) {
        workflow_model *m = &l->wf->models[i];

        wf_defaults(k->sub, m);
        l->item = i;
        rc = load_section(l, k->sub, n->items[i], m, ipath(q, p, i));
        if (rc)
            return rc;
    }
    return 0;
}

/* ---- hand-written steps: teams ----------------------------------------- */

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

/* Check the role's model and family references (written at the list
 * nodes vm and vf) and compute the indices of the models it admits. */
static int resolve_role(ld *l, workflow_role *r, const wf_node *vm,
                        const wf_node *vf, const char *path)
{
    const workflow *wf = l->wf;
    const char *names[WORKFLOW_MAX_MODELS];
    char hint[WF_PATH], p[WF_PATH];
    bool *ok;
    size_t n;

    for (size_t i = 0; i < r->nmodels; i++) {
        if (!workflow_model_find(wf, r->models[i])) {
            n = model_names(wf, false, names);
            return fail(l, vm->items[i], NSED_EINVAL,
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
            return fail(l, vf->items[i], NSED_EINVAL,
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

static int load_roles(ld *l, const wf_key *k, const wf_node *n,
                      workflow_team *t, const char *p)
{
    char q[WF_PATH];
    int rc;

    rc = expect_list(l, n, p, (size_t)k->ilo, (size_t)k->ihi);
    if (rc)
        return rc;
    t->roles = calloc(n->n, sizeof *t->roles);
    if (!t->roles)
        return oom(l);
    t->nroles = n->n;
    for (size_t i = 0; i < n->n; i++) {
        workflow_role *r = &t->roles[i];

        wf_defaults(k->sub, r);
        l->item = i;
        rc = load_section(l, k->sub, n->items[i], r, ipath(q, p, i));
        if (rc)
            return rc;
        t->seats += r->count;
    }
    if (t->seats > WORKFLOW_MAX_SEATS)
        return fail(l, l->team_key, NSED_EINVAL, "team \"%s\" has %d seats; "
                    "at most %d are allowed", t->name, t->seats,
                    WORKFLOW_MAX_SEATS);
    return 0;
}

static int team_cmp(const void *a, const void *b)
{
    return strcmp(((const workflow_team *)a)->name,
                  ((const workflow_team *)b)->name);
}

static int load_teams(ld *l, const wf_key *k, const wf_node *n,
                      const char *p)
{
    workflow *wf = l->wf;
    char q[WF_PATH];
    int rc;

    rc = map_names(l, n, p, (size_t)k->ihi);
    if (rc)
        return rc;
    wf->teams = calloc(n->n, sizeof *wf->teams);
    if (!wf->teams)
        return oom(l);
    wf->nteams = n->n;
    for (size_t i = 0; i < n->n; i++) {
        workflow_team *t = &wf->teams[i];
        const wf_node *key = n->items[2 * i];

        t->name = strdup(key->str);
        if (!t->name)
            return oom(l);
        l->team = t;
        l->team_key = key;
        rc = load_section(l, k->sub, n->items[2 * i + 1], t,
                          kpath(q, p, t->name));
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

/* ---- hand-written steps: broker ---------------------------------------- */

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

/* broker.default_team, or the only team; map is the broker section (NULL
 * when the file has none). */
static int load_default_team(ld *l, const wf_node *n, const wf_node *map,
                             const char *p)
{
    workflow_broker *b = &l->wf->broker;
    int rc = 0;

    if (n)
        rc = team_ref(l, n, p, &b->default_team);
    if (rc || b->default_team)
        return rc;
    if (l->wf->nteams == 1) {
        b->default_team = &l->wf->teams[0];
        return 0;
    }
    return fail(l, map ? map : l->root, NSED_EINVAL, "broker.default_team "
                "is required when the workflow defines several teams (it "
                "serves questions no tier matches)");
}

static int load_tiers(ld *l, const wf_key *k, const wf_node *n,
                      const char *p)
{
    workflow_broker *b = &l->wf->broker;
    char q[WF_PATH];
    int rc;

    rc = expect_list(l, n, p, (size_t)k->ilo, (size_t)k->ihi);
    if (rc)
        return rc;
    b->tiers = calloc(n->n ? n->n : 1, sizeof *b->tiers);
    if (!b->tiers)
        return oom(l);
    b->ntiers = n->n;
    for (size_t i = 0; i < n->n && !rc; i++)
        rc = load_section(l, k->sub, n->items[i], &b->tiers[i],
                          ipath(q, p, i));
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

/* ---- hand-written steps: answer and prompts ---------------------------- */

static int check_pattern(ld *l, const wf_node *n, const char *pattern)
{
    PCRE2_UCHAR why[256];
    pcre2_code *re;
    uint32_t groups = 0;
    PCRE2_SIZE off = 0;
    int ecode = 0;

    /* PCRE2, so that \d, \s, \w and lazy quantifiers mean what users
     * expect; a POSIX ERE took "\d" for a literal d and scored 0% */
    re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, PCRE2_UTF,
                       &ecode, &off, NULL);
    if (!re) {
        if (pcre2_get_error_message(ecode, why, sizeof why) < 0)
            snprintf((char *)why, sizeof why, "error %d", ecode);
        return fail(l, n, NSED_EINVAL,
                    "answer.pattern is not a valid regular expression "
                    "(PCRE2) at offset %zu: %s",
                    (size_t)off, (const char *)why);
    }
    if (pcre2_pattern_info(re, PCRE2_INFO_CAPTURECOUNT, &groups) != 0)
        groups = 0;
    pcre2_code_free(re);
    if (groups != 1)
        return fail(l, n, NSED_EINVAL,
                    "answer.pattern must have exactly one "
                    "capture group (it has %zu)",
                    (size_t)groups);
    return 0;
}

/* A key that only one value of another key allows (answer.pattern with
 * extract: regex, ...): required then, an error otherwise. map is the
 * answer section (NULL when absent). */
static int load_only_with(ld *l, const wf_key *k, const wf_node *n,
                          const wf_node *map, void *base, const char *p,
                          bool wanted, const char *with)
{
    int rc;

    if (!wanted)
        return n ? fail(l, n, NSED_EINVAL, "%s is only used with %s", p,
                        with)
                 : 0;
    if (!n)
        return fail(l, map, NSED_EINVAL, "%s is required with %s", p, with);
    rc = load_value(l, k, n, base, p);
    if (!rc && k->special == WF_SP_PATTERN)
        rc = check_pattern(l, n, *WF_FIELD(base, k, char *));
    return rc;
}

static int load_compare(ld *l, const wf_key *k, const wf_node *n,
                        workflow_answer *a, const char *p)
{
    int v, rc;

    a->compare = a->extract == WORKFLOW_EXTRACT_LAST_NUMBER
                     ? WORKFLOW_COMPARE_NUMERIC : WORKFLOW_COMPARE_EXACT;
    if (!n)
        return 0;
    rc = get_enum(l, n, p, k->names, k->nnames, &v);
    if (!rc)
        a->compare = (enum workflow_compare)v;
    return rc;
}

static int load_tolerance(ld *l, const wf_key *k, const wf_node *n,
                          workflow_answer *a, const char *p)
{
    if (a->compare != WORKFLOW_COMPARE_NUMERIC) {
        a->tolerance = 0;
        return n ? fail(l, n, NSED_EINVAL, "%s is only used with compare: "
                        "numeric", p)
                 : 0;
    }
    a->tolerance = k->dflt;
    return n ? load_value(l, k, n, l->wf, p) : 0;
}

static int load_prompt(ld *l, const wf_section *s, const wf_key *k,
                       const wf_node *n, const char *p)
{
    enum wf_prompt_kind kind = (enum wf_prompt_kind)(k - s->keys);
    char **slot = WF_FIELD(l->wf, k, char *);
    char msg[NSED_ERR_MSG_MAX];
    int rc;

    if (!n) {
        *slot = wf_prompt_default(kind, &l->wf->answer);
        return *slot ? 0 : oom(l);
    }
    rc = get_str(l, n, p, slot);
    if (!rc && wf_prompt_check(kind, k->key, *slot, msg, sizeof msg))
        rc = fail(l, n, NSED_EINVAL, "%s", msg);
    return rc;
}

/* extra_body's fields that nsed sets itself, with where to set them. */
static const char *const wf_body_owned[][2] = {
    {"model", "models[].model"},
    {"messages", "the prompts"},
    {"temperature", "sampling.temperature"},
    {"top_p", "sampling.top_p"},
    {"max_tokens", "sampling.max_tokens"},
    {"seed", "sampling.seed"},
    {"stop", "sampling.stop"},
    {"response_format", "structured_output"},
    {"stream", "nothing: nsed reads one JSON reply"},
};

#define WF_EXTRA_BODY_MAX 16384

/* One YAML value as JSON: a quoted scalar is a string; a plain one is
 * null, a boolean, a number (decimal syntax) or else a string, as YAML
 * reads them. */
static int extra_value(ld *l, jsonw *w, const wf_node *n, const char *p)
{
    bool integral;

    switch (n->kind) {
    case WF_NODE_MAP:
        jsonw_object_begin(w);
        for (size_t i = 0; i < n->n; i++) {
            const wf_node *key = n->items[2 * i];
            int rc;

            if (key->kind != WF_NODE_SCALAR || is_null(key))
                return fail(l, key, NSED_EINVAL,
                            "%s: a key must be a string, not %s", p,
                            describe(key));
            jsonw_key(w, key->str);
            rc = extra_value(l, w, n->items[2 * i + 1], p);
            if (rc)
                return rc;
        }
        jsonw_object_end(w);
        return 0;
    case WF_NODE_SEQ:
        jsonw_array_begin(w);
        for (size_t i = 0; i < n->n; i++) {
            int rc = extra_value(l, w, n->items[i], p);

            if (rc)
                return rc;
        }
        jsonw_array_end(w);
        return 0;
    case WF_NODE_SCALAR:
        break;
    }
    if (memchr(n->str, '\0', n->len))
        return fail(l, n, NSED_EINVAL, "%s contains a NUL character", p);
    if (!n->plain) {
        jsonw_str(w, n->str);
    } else if (is_null(n)) {
        jsonw_null(w);
    } else if (is_bool_text(n)) {
        jsonw_bool(w, n->str[0] == 't' || n->str[0] == 'T');
    } else if (num_syntax(n->str, &integral)) {
        double d;

        errno = 0;
        if (integral) {
            long long v = strtoll(n->str, NULL, 10);

            if (errno == 0) {
                jsonw_int(w, v);
                return 0;
            }
        }
        errno = 0;
        d = strtod(n->str, NULL);
        if (errno || !isfinite(d))
            return fail(l, n, NSED_EINVAL, "%s: %s is out of range", p, n->str);
        jsonw_num(w, d);
    } else {
        jsonw_str(w, n->str);
    }
    return 0;
}

/* models[].extra_body: a mapping, kept as compact JSON text; a field nsed
 * sets is refused at its key. */
static int load_extra_body(ld *l, const wf_node *n, workflow_model *m,
                           const char *p)
{
    jsonw w;
    int rc = expect_kind(l, n, p, WF_NODE_MAP);

    if (rc)
        return rc;
    for (size_t i = 0; i < n->n; i++)
        for (size_t k = 0; k < WF_COUNT(wf_body_owned); k++)
            if (n->items[2 * i]->kind == WF_NODE_SCALAR &&
                strcmp(n->items[2 * i]->str, wf_body_owned[k][0]) == 0)
                return fail(l, n->items[2 * i], NSED_EINVAL,
                            "%s.%s is set by nsed (use %s)", p,
                            wf_body_owned[k][0], wf_body_owned[k][1]);
    jsonw_init(&w, WF_EXTRA_BODY_MAX, 0);
    rc = extra_value(l, &w, n, p);
    if (rc) {
        jsonw_release(&w);
        return rc;
    }
    rc = jsonw_finish(&w, &m->extra_body, NULL);
    if (rc == NSED_ETOOBIG)
        return fail(l, n, NSED_EINVAL, "%s is over %d bytes as JSON", p,
                    WF_EXTRA_BODY_MAX);
    return rc ? oom(l) : 0;
}

/* A key whose loading needs more than the table: n is its value (NULL when
 * absent), map the section (NULL when absent), path the section's path and
 * p the key's. */
static int load_special(ld *l, const wf_section *s, const wf_key *k,
                        const wf_node *n, const wf_node *map, void *base,
                        const char *path, const char *p)
{
    switch (k->special) {
    case WF_SP_NONE:
        break;
    case WF_SP_MODELS:
        return load_models(l, k, n, p);
    case WF_SP_ENDPOINT:
        return load_endpoint(l, k, n, base, p);
    case WF_SP_MODEL:
        return load_model_name(l, k, n, base, p);
    case WF_SP_API_KEY_ENV:
        return n ? load_api_key_env(l, n, base) : 0;
    case WF_SP_FAMILY: {
        workflow_model *m = base;

        if (n)
            return load_value(l, k, n, base, p);
        m->family = strdup(m->id);
        return m->family ? 0 : oom(l);
    }
    case WF_SP_TEAMS:
        return load_teams(l, k, n, p);
    case WF_SP_ROLES:
        return load_roles(l, k, n, base, p);
    case WF_SP_DEFAULT_TEAM:
        return load_default_team(l, n, map, p);
    case WF_SP_TIERS:
        return n ? load_tiers(l, k, n, p) : 0;
    case WF_SP_TIER_TEAM: {
        workflow_tier *t = base;

        /* named by the tier's path, as the tier is what the user reads */
        return team_ref(l, n, path, &t->team);
    }
    case WF_SP_PATTERN:
        return load_only_with(l, k, n, map, base, p,
                              l->wf->answer.extract == WORKFLOW_EXTRACT_REGEX,
                              "extract: regex");
    case WF_SP_FIELD:
        return load_only_with(
            l, k, n, map, base, p,
            l->wf->answer.extract == WORKFLOW_EXTRACT_JSON_FIELD,
            "extract: json_field");
    case WF_SP_COMPARE:
        return load_compare(l, k, n, &l->wf->answer, p);
    case WF_SP_TOLERANCE:
        return load_tolerance(l, k, n, &l->wf->answer, p);
    case WF_SP_PROMPT:
        return load_prompt(l, s, k, n, p);
    case WF_SP_EXTRA_BODY:
        return n ? load_extra_body(l, n, base, p) : 0;
    case WF_SP_OBJECTIVE:
        return n ? load_value(l, k, n, base, p) : 0;
    }
    return nsed_error(l->err, NSED_EINTERNAL, "%s: no loader for %s", l->file,
                      p);
}

/* ---- checks across keys ------------------------------------------------ */

/* The value node of key in section s (NULL when absent). */
static const wf_node *value_of(const wf_section *s, const wf_node *const *v,
                               const char *key)
{
    return v[wf_key_index(s, key)];
}

static int run_check(ld *l, enum wf_check c, const wf_section *s,
                     const wf_node *const *v, const wf_node *map, void *base,
                     const char *path)
{
    workflow *wf = l->wf;
    const wf_node *at;

    switch (c) {
    case WF_CK_NONE:
        return 0;
    case WF_CK_MODEL_ID: {
        const workflow_model *m = base;

        at = value_of(s, v, "id");
        for (size_t i = 0; i < l->item; i++)
            if (strcmp(wf->models[i].id, m->id) == 0)
                return fail(l, at, NSED_EINVAL, "duplicate model id \"%s\" "
                            "(first at %zu:%zu)", m->id,
                            l->model_ids[i]->line, l->model_ids[i]->col);
        l->model_ids[l->item] = at;
        return 0;
    }
    case WF_CK_ROLE_NAME: {
        const workflow_role *r = base;
        const workflow_team *t = l->team;

        at = value_of(s, v, "name");
        for (size_t i = 0; i < l->item; i++)
            if (strcmp(t->roles[i].name, r->name) == 0)
                return fail(l, at, NSED_EINVAL, "duplicate role \"%s\" in "
                            "team \"%s\" (first at %zu:%zu)", r->name,
                            t->name, l->role_names[i]->line,
                            l->role_names[i]->col);
        l->role_names[l->item] = at;
        return 0;
    }
    case WF_CK_ROLE_MODELS: {
        const wf_node *vm = value_of(s, v, "models");
        const wf_node *vf = value_of(s, v, "families");

        if (!vm && !vf)
            return fail(l, map, NSED_EINVAL, "%s needs \"models\" or "
                        "\"families\" (or both) to say which models may "
                        "take its seats", path);
        return resolve_role(l, base, vm, vf, path);
    }
    case WF_CK_RETRY: {
        const workflow_gateway *g = &wf->gateway;

        at = value_of(s, v, "max_delay_ms");
        if (g->retry_max_delay_ms < g->retry_base_delay_ms)
            return fail(l, at ? at : value_of(s, v, "base_delay_ms"),
                        NSED_EINVAL, "gateway.retry.max_delay_ms (%ld) "
                        "must be >= base_delay_ms (%ld)",
                        g->retry_max_delay_ms, g->retry_base_delay_ms);
        return 0;
    }
    case WF_CK_TEAM_SIZE: {
        const workflow_broker *b = &wf->broker;

        at = value_of(s, v, "max");
        if (b->team_size_max < b->team_size_min)
            return fail(l, at ? at : map, NSED_EINVAL, "broker.team_size.max "
                        "(%d) must be >= min (%d)", b->team_size_max,
                        b->team_size_min);
        return 0;
    }
    case WF_CK_FAMILY_CAP: {
        workflow_broker *b = &wf->broker;

        if (b->max_per_family < 0)
            b->max_per_family = b->policy == WORKFLOW_POLICY_KNAPSACK ? 1 : 0;
        return 0;
    }
    case WF_CK_ROUNDS: {
        const workflow_rounds *r = &wf->rounds;

        at = value_of(s, v, "max");
        /* a --set of min is what made them cross: name it */
        if (value_of(s, v, "min") && value_of(s, v, "min")->origin &&
            !(at && at->origin))
            at = value_of(s, v, "min");
        if (r->max < r->min)
            return fail(l, at ? at : value_of(s, v, "min"), NSED_EINVAL,
                        "rounds.max (%d) must be >= rounds.min (%d)", r->max,
                        r->min);
        return 0;
    }
    case WF_CK_TEAM_SEATS:
        return check_team_sizes(l, value_of(s, v, "teams"));
    case WF_CK_SC_MODEL: {
        workflow_baselines *b = &wf->baselines;
        const workflow_model *m;

        b->sc_model_index = SIZE_MAX;
        if (!b->sc_model)
            return 0;
        m = workflow_model_find(wf, b->sc_model);
        if (!m)
            return fail(l, value_of(s, v, "self_consistency_model"),
                        NSED_EINVAL,
                        "baselines.self_consistency_model "
                        "\"%s\" is not a model id of models",
                        b->sc_model);
        b->sc_model_index = workflow_model_index(wf, m);
        return 0;
    }
    }
    return 0;
}

/* ---- the table walk ---------------------------------------------------- */

/* carry: distinct names, each setting its bit. */
static int load_enum_set(ld *l, const wf_key *k, const wf_node *n,
                         unsigned *out, const char *p)
{
    char ip[WF_PATH];
    int rc, which;

    rc = expect_list(l, n, p, 0, k->nnames);
    *out = 0;
    for (size_t i = 0; !rc && i < n->n; i++) {
        rc = get_enum(l, n->items[i], ipath(ip, p, i), k->names, k->nnames,
                      &which);
        if (!rc && (*out & (1u << which)))
            rc = fail(l, n->items[i], NSED_EINVAL, "%s repeats \"%s\"", p,
                      k->names[which]);
        if (!rc)
            *out |= 1u << which;
    }
    return rc;
}

/* tie_break: every name exactly once, in the order that counts. */
static int load_enum_order(ld *l, const wf_key *k, const wf_node *n,
                           int *out, const char *p)
{
    char ip[WF_PATH], list[WF_PATH] = "";
    unsigned seen = 0;
    int rc, which;

    for (size_t i = 0; i < k->nnames; i++) {
        size_t used = strlen(list);

        snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "",
                 k->names[i]);
    }
    rc = expect_kind(l, n, p, WF_NODE_SEQ);
    if (!rc && n->n != k->nnames)
        rc = fail(l, n, NSED_EINVAL, "%s must list each of %s exactly once",
                  p, list);
    for (size_t i = 0; !rc && i < n->n; i++) {
        rc = get_enum(l, n->items[i], ipath(ip, p, i), k->names, k->nnames,
                      &which);
        if (!rc && (seen & (1u << which)))
            rc = fail(l, n->items[i], NSED_EINVAL, "%s must list each of %s "
                      "exactly once", p, list);
        if (!rc) {
            seen |= 1u << which;
            out[i] = which;
        }
    }
    return rc;
}

/* A value the table describes completely, at node n, into base. */
static int load_value(ld *l, const wf_key *k, const wf_node *n, void *base,
                      const char *p)
{
    long long v;
    int e, rc;

    switch (k->type) {
    case WF_T_MAP:
        return load_section(l, k->sub, n, base, p);
    case WF_T_LIST:
    case WF_T_NAMED:
        break; /* always a special step */
    case WF_T_BOOL:
        return get_bool(l, n, p, WF_FIELD(base, k, bool));
    case WF_T_INT:
        return get_int_as(l, n, p, k->ilo, k->ihi, WF_FIELD(base, k, int));
    case WF_T_LONG:
        return get_long(l, n, p, k->ilo, k->ihi, WF_FIELD(base, k, long));
    case WF_T_I64:
        rc = get_int(l, n, p, k->ilo, k->ihi, &v);
        if (!rc)
            *WF_FIELD(base, k, int64_t) = v;
        return rc;
    case WF_T_SIZE:
        rc = get_int(l, n, p, k->ilo, k->ihi, &v);
        if (!rc)
            *WF_FIELD(base, k, size_t) = (size_t)v;
        return rc;
    case WF_T_U64:
        return get_u64(l, n, p, WF_FIELD(base, k, uint64_t));
    case WF_T_NUM:
        return get_num(l, n, p, k->lo, k->flags & WF_F_LO_OPEN, k->hi,
                       k->flags & WF_F_HI_OPEN, WF_FIELD(base, k, double));
    case WF_T_ENUM:
        rc = get_enum(l, n, p, k->names, k->nnames, &e);
        if (!rc)
            *WF_FIELD(base, k, int) = e;
        return rc;
    case WF_T_ENUM_SET:
        return load_enum_set(l, k, n, WF_FIELD(base, k, unsigned), p);
    case WF_T_ENUM_ORDER:
        return load_enum_order(l, k, n, WF_FIELD(base, k, int), p);
    case WF_T_NAME:
        return get_name(l, n, p, WF_FIELD(base, k, char *));
    case WF_T_TEXT:
        return get_text(l, n, p, (size_t)k->ihi, WF_FIELD(base, k, char *));
    case WF_T_STR:
        return get_str(l, n, p, WF_FIELD(base, k, char *));
    case WF_T_NAME_LIST:
    case WF_T_TEXT_LIST:
        return get_strs(l, n, p, (size_t)k->ilo, (size_t)k->ihi,
                        k->type == WF_T_NAME_LIST,
                        WF_FIELD(base, k, char **), WF_AUX(base, k, size_t));
    }
    return nsed_error(l->err, NSED_EINTERNAL, "%s: no loader for %s", l->file,
                      p);
}

/* Key i of section s: v holds the section's value nodes and map the
 * section (both from map_fields; map NULL when the section is absent). */
static int load_key(ld *l, const wf_section *s, size_t i,
                    const wf_node *const *v, const wf_node *map, void *base,
                    const char *path)
{
    const wf_key *k = &s->keys[i];
    char p[WF_PATH];
    int rc = 0;

    kpath(p, path, k->key);
    if (k->special != WF_SP_NONE) {
        rc = load_special(l, s, k, v[i], map, base, path, p);
    } else if (v[i]) {
        rc = load_value(l, k, v[i], base, p);
        if (!rc && (k->flags & WF_F_GIVEN))
            *WF_AUX(base, k, bool) = true;
    } else if (k->type == WF_T_MAP && !(k->flags & WF_F_GIVEN)) {
        /* an absent section still runs its own steps and checks */
        rc = load_section(l, k->sub, NULL, base, p);
    } else if (k->type == WF_T_STR && k->dflt_str) {
        char **slot = WF_FIELD(base, k, char *);

        *slot = strdup(k->dflt_str);
        if (!*slot)
            rc = oom(l);
    }
    if (!rc)
        rc = run_check(l, k->check, s, v, map, base, path);
    return rc;
}

/* Load mapping n (NULL: the section is absent) against s into base, key by
 * key in the table's order, so the first error reported is the first in
 * the schema. */
static int load_section(ld *l, const wf_section *s, const wf_node *n,
                        void *base, const char *path)
{
    const wf_node *v[WF_MAX_KEYS] = {0};
    int rc = 0;

    if (n)
        rc = map_fields(l, n, path, s, v);
    for (size_t i = 0; !rc && i < s->nkeys; i++)
        rc = load_key(l, s, i, v, n, base, path);
    if (!rc)
        rc = run_check(l, s->check, s, v, n, base, path);
    return rc;
}

/* ---- the whole file ---------------------------------------------------- */

static int load_root(ld *l, const wf_node *root)
{
    /* Dependency order rather than the schema's, so references are checked
     * as soon as the thing they name is known: roles name models, the
     * broker names teams, the default prompts follow the answer format. */
    static const char *const order[] = {
        "name",    "version",   "seed",      "models",  "teams",
        "gateway", "broker",    "rounds",    "scoring", "answer",
        "prompts", "baselines", "questions",
    };
    const wf_section *s = &wf_root_section;
    const wf_node *v[WF_MAX_KEYS] = {0};
    int rc;

    assert(WF_COUNT(order) == s->nkeys);
    wf_defaults(s, l->wf);
    l->root = root;
    rc = map_fields(l, root, "", s, v);
    for (size_t i = 0; !rc && i < WF_COUNT(order); i++)
        rc = load_key(l, s, wf_key_index(s, order[i]), v, root, l->wf, "");
    return rc;
}

int workflow_load_string_with(const char *name, const char *text, size_t len,
                              const workflow_options *opt, workflow **out,
                              nsed_err *err)
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
    /* Into the tree before anything is checked, so every check (types,
     * ranges, checks across keys) and the hash see the overridden file. */
    if (opt && opt->noverrides) {
        rc = wf_overrides_apply(&doc, opt->overrides, opt->noverrides, err);
        if (rc)
            goto out;
    }
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
    /* Before the canonical form: the hash is of the seed that runs. */
    if (opt && opt->has_seed)
        wf->seed = opt->seed;
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

int workflow_load_string(const char *name, const char *text, size_t len,
                         workflow **out, nsed_err *err)
{
    return workflow_load_string_with(name, text, len, NULL, out, err);
}

int workflow_load_with(const char *path, const workflow_options *opt,
                       workflow **out, nsed_err *err)
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
        rc = workflow_load_string_with(path, b.ptr ? b.ptr : "", b.len, opt,
                                       out, err);
    buf_release(&b);
    return rc;
}

int workflow_load(const char *path, workflow **out, nsed_err *err)
{
    return workflow_load_with(path, NULL, out, err);
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
        free(m->extra_body);
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
    free(wf->baselines.sc_model);
    free(wf->questions.id);
    free(wf->questions.question);
    free(wf->questions.answer);
    free(wf->questions.choices);
    free(wf->questions.tags);
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
