#include "stages/answer.h"

#include "pipeline/base/buf.h"
#include "pipeline/base/json.h"
#include "stages/text.h"

#include <cjson/cJSON.h>
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Longest number text answer_number reads (a longer one is no number). */
#define NUMBER_MAX 256
/* '{' positions json_field tries, from the last one back. */
#define JSON_TRIES 64

static int dup_trimmed(const char *s, size_t len, char **out)
{
    char *d;

    text_trim(&s, &len);
    d = strndup(s, len);
    if (!d)
        return NSED_ENOMEM;
    *out = d;
    return 0;
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* ---- extractors -------------------------------------------------------- */

static int extract_boxed(const char *text, char **out)
{
    static const char mark[] = "\\boxed{";
    const size_t mlen = sizeof mark - 1, len = strlen(text);

    if (len < mlen)
        return NSED_ENOTFOUND;
    for (size_t i = len - mlen + 1; i-- > 0;) {
        size_t depth = 1, j;

        if (memcmp(text + i, mark, mlen))
            continue;
        for (j = i + mlen; j < len; j++) {
            if (text[j] == '{')
                depth++;
            else if (text[j] == '}' && --depth == 0)
                break;
        }
        if (depth == 0)
            return dup_trimmed(text + i + mlen, j - i - mlen, out);
    }
    return NSED_ENOTFOUND;
}

/* Compile pattern with PCRE2 (UTF mode), or NULL when it does not compile
 * or memory runs out. */
static pcre2_code *regex_compile(const char *pattern)
{
    int ecode;
    PCRE2_SIZE off;

    return pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, PCRE2_UTF,
                         &ecode, &off, NULL);
}

static int extract_regex(const char *pattern, const char *text, char **out)
{
    pcre2_code *re = NULL;
    pcre2_match_data *md = NULL;
    uint32_t groups = 0;
    PCRE2_SIZE *ov;
    int rc;

    if (!pattern)
        return NSED_EINVAL;
    re = regex_compile(pattern);
    if (!re || pcre2_pattern_info(re, PCRE2_INFO_CAPTURECOUNT, &groups) ||
        groups < 1) {
        rc = NSED_EINVAL;
        goto out;
    }
    md = pcre2_match_data_create_from_pattern(re, NULL);
    if (!md) {
        rc = NSED_ENOMEM;
        goto out;
    }
    /* NO_UTF_CHECK is not passed: a reply that is not valid UTF-8 simply
     * does not match */
    rc = pcre2_match(re, (PCRE2_SPTR)text, PCRE2_ZERO_TERMINATED, 0, 0, md,
                     NULL);
    ov = pcre2_get_ovector_pointer(md);
    if (rc < 2 || ov[2] == PCRE2_UNSET) {
        rc = NSED_ENOTFOUND;
        goto out;
    }
    rc = dup_trimmed(text + ov[2], ov[3] - ov[2], out);
out:
    pcre2_match_data_free(md);
    pcre2_code_free(re);
    return rc;
}

/* Whether a sign sits right before the digits at text[i]: '-' / '+' or
 * U+2212, counted only when it does not follow a word character, a closing
 * bracket or a dot (then it is an operator or a hyphen: "x-3", "2024-05").
 * Returns true for a minus. */
static bool negative_before(const char *text, size_t i)
{
    size_t n = 0;
    bool neg;

    if (i >= 1 && (text[i - 1] == '-' || text[i - 1] == '+'))
        n = 1;
    else if (i >= 3 && !memcmp(text + i - 3, "\xe2\x88\x92", 3))
        n = 3;
    if (!n)
        return false;
    neg = text[i - 1] != '+';
    if (i > n) {
        char p = text[i - n - 1];

        if (text_is_word(p) || p == ')' || p == ']' || p == '.')
            return false;
    }
    return neg;
}

/* The number starting at text[i] (a digit, or '.' before a digit), written
 * normalized into b. Returns the index just past it. */
static size_t scan_number(const char *text, size_t len, size_t i, buf *b,
                          int *rc)
{
    size_t j = i;

    buf_reset(b);
    if (negative_before(text, i))
        *rc = buf_addc(b, '-');
    if (text[j] == '.' && !*rc)
        *rc = buf_addc(b, '0');
    while (!*rc && j < len && is_digit(text[j]))
        *rc = buf_addc(b, text[j++]);
    /* ",ddd" not followed by a fourth digit is a thousands separator */
    while (!*rc && j > i && j + 3 < len && text[j] == ',' &&
           is_digit(text[j + 1]) && is_digit(text[j + 2]) &&
           is_digit(text[j + 3]) && (j + 4 >= len || !is_digit(text[j + 4]))) {
        *rc = buf_add(b, text + j + 1, 3);
        j += 4;
    }
    if (!*rc && j + 1 < len && text[j] == '.' && is_digit(text[j + 1])) {
        *rc = buf_addc(b, '.');
        j++;
        while (!*rc && j < len && is_digit(text[j]))
            *rc = buf_addc(b, text[j++]);
    }
    if (!*rc && j + 1 < len && text[j] == '/' && is_digit(text[j + 1])) {
        *rc = buf_addc(b, '/');
        j++;
        while (!*rc && j < len && is_digit(text[j]))
            *rc = buf_addc(b, text[j++]);
    }
    return j;
}

static int extract_last_number(const char *text, char **out)
{
    const size_t len = strlen(text);
    size_t last_start = 0;
    bool found = false;
    buf b;
    int rc = 0;

    /* Find where the last number starts, then normalize only that one. */
    buf_init(&b, len + 2);
    for (size_t i = 0; i < len && !rc;) {
        if (is_digit(text[i]) ||
            (text[i] == '.' && i + 1 < len && is_digit(text[i + 1]) &&
             (i == 0 || !is_digit(text[i - 1])))) {
            found = true;
            last_start = i;
            i = scan_number(text, len, i, &b, &rc);
        } else {
            i++;
        }
    }
    if (!rc && found)
        scan_number(text, len, last_start, &b, &rc);
    if (!rc && found) {
        *out = buf_detach(&b, NULL);
        if (!*out)
            rc = NSED_ENOMEM;
    }
    buf_release(&b);
    if (rc)
        return rc;
    return found ? 0 : NSED_ENOTFOUND;
}

static const cJSON *lookup_field(const cJSON *o, const char *field)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, field);
    const char *p = field;

    if (v || !strchr(field, '.'))
        return v;
    /* "a.b.c" as a path of nested objects */
    v = o;
    while (v && *p) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        char key[WORKFLOW_MAX_NAME + 1];

        if (n == 0 || n > WORKFLOW_MAX_NAME || !cJSON_IsObject(v))
            return NULL;
        memcpy(key, p, n);
        key[n] = '\0';
        v = cJSON_GetObjectItemCaseSensitive(v, key);
        p += n + (dot ? 1 : 0);
    }
    return v;
}

static int value_text(const cJSON *v, char **out)
{
    char *s;

    if (cJSON_IsString(v))
        return dup_trimmed(v->valuestring, strlen(v->valuestring), out);
    s = cJSON_PrintUnformatted(v);
    if (!s)
        return NSED_ENOMEM;
    *out = s;
    return 0;
}

/* json_find_object's test: the object holds the field (arg). */
static bool has_field(const cJSON *o, void *arg)
{
    return lookup_field(o, arg) != NULL;
}

static int extract_json_field(const char *field, const char *text,
                              char **out)
{
    cJSON *o;
    int rc;

    if (!field)
        return NSED_EINVAL;
    /* the last object that holds the field (answer.h) */
    o = json_find_object(text, strlen(text), JSON_TRIES, true, has_field,
                         (void *)field);
    if (!o)
        return NSED_ENOTFOUND;
    rc = value_text(lookup_field(o, field), out);
    cJSON_Delete(o);
    return rc;
}

/* A fence line: up to three spaces, then three or more ` or ~. Sets the
 * fence character and run length. */
static bool fence_line(const char *line, size_t n, char *ch, size_t *run)
{
    size_t i = 0, k;

    while (i < n && i < 3 && line[i] == ' ')
        i++;
    if (i >= n || (line[i] != '`' && line[i] != '~'))
        return false;
    for (k = i; k < n && line[k] == line[i]; k++)
        ;
    if (k - i < 3)
        return false;
    *ch = line[i];
    *run = k - i;
    /* the rest of the line (info string) must be on the opening fence
     * only; the caller checks closing fences for emptiness */
    return true;
}

static bool rest_blank(const char *line, size_t n, size_t from)
{
    for (size_t i = from; i < n; i++) {
        if (!isspace((unsigned char)line[i]))
            return false;
    }
    return true;
}

static int extract_code_block(const char *text, char **out)
{
    const size_t len = strlen(text);
    size_t pos = 0, open_run = 0, body = 0, best_s = 0, best_e = 0;
    char open_ch = 0;
    bool in = false, found = false;

    while (pos < len) {
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - text) : len;
        size_t next = nl ? end + 1 : len;
        char ch;
        size_t run, lead = 0;

        while (pos + lead < end && lead < 3 && text[pos + lead] == ' ')
            lead++;
        if (fence_line(text + pos, end - pos, &ch, &run)) {
            if (!in) {
                in = true;
                open_ch = ch;
                open_run = run;
                body = next;
            } else if (ch == open_ch && run >= open_run &&
                       rest_blank(text + pos, end - pos, lead + run)) {
                in = false;
                found = true;
                best_s = body;
                best_e = pos;
            }
        }
        pos = next;
    }
    if (in) {
        found = true;
        best_s = body < len ? body : len;
        best_e = len;
    }
    if (!found)
        return NSED_ENOTFOUND;
    /* keep the code's own indentation: only the final newline goes */
    {
        size_t e = best_e;
        char *d;

        while (e > best_s && (text[e - 1] == '\n' || text[e - 1] == '\r'))
            e--;
        d = strndup(text + best_s, e - best_s);
        if (!d)
            return NSED_ENOMEM;
        *out = d;
    }
    return 0;
}

int answer_extract(const workflow_answer *a, const char *text, char **out)
{
    if (!text)
        return NSED_ENOTFOUND;
    switch (a->extract) {
    case WORKFLOW_EXTRACT_BOXED:
        return extract_boxed(text, out);
    case WORKFLOW_EXTRACT_REGEX:
        return extract_regex(a->pattern, text, out);
    case WORKFLOW_EXTRACT_LAST_NUMBER:
        return extract_last_number(text, out);
    case WORKFLOW_EXTRACT_JSON_FIELD:
        return extract_json_field(a->field, text, out);
    case WORKFLOW_EXTRACT_CODE_BLOCK:
        return extract_code_block(text, out);
    }
    return NSED_EINVAL;
}

/* ---- numbers ----------------------------------------------------------- */

/* A plain decimal number filling s[0..n): digits (commas only as proper
 * thousands separators), optional decimal part and exponent, no sign. */
static int plain_number(const char *s, size_t n, double *out)
{
    char tmp[NUMBER_MAX + 1], *end;
    size_t k = 0, int_end = 0;
    bool comma = false;
    double d;

    if (n == 0 || n > NUMBER_MAX || !(is_digit(s[0]) || s[0] == '.'))
        return NSED_EINVAL;
    while (int_end < n && (is_digit(s[int_end]) || s[int_end] == ','))
        int_end++;
    for (size_t i = 0; i < int_end; i++) {
        if (s[i] == ',')
            comma = true;
    }
    if (comma) {
        /* d{1,3}(,ddd)+ exactly */
        size_t first = 0;

        while (first < int_end && is_digit(s[first]))
            first++;
        if (first < 1 || first > 3)
            return NSED_EINVAL;
        for (size_t i = first; i < int_end; i += 4) {
            if (i + 4 > int_end || s[i] != ',' || !is_digit(s[i + 1]) ||
                !is_digit(s[i + 2]) || !is_digit(s[i + 3]))
                return NSED_EINVAL;
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ',')
            continue;
        if (!is_digit(s[i]) && !strchr(".eE+-", s[i]))
            return NSED_EINVAL;
        tmp[k++] = s[i];
    }
    tmp[k] = '\0';
    errno = 0;
    d = strtod(tmp, &end);
    if (end != tmp + k || errno == ERANGE || !isfinite(d))
        return NSED_EINVAL;
    *out = d;
    return 0;
}

/* A possibly signed plain number. */
static int signed_number(const char *s, size_t n, double *out)
{
    double sign = 1;

    if (n && (s[0] == '-' || s[0] == '+')) {
        sign = s[0] == '-' ? -1 : 1;
        s++;
        n--;
    }
    if (plain_number(s, n, out))
        return NSED_EINVAL;
    *out *= sign;
    return 0;
}

/* "{...}" at s (no nesting): the inside and the length consumed, or 0. */
static size_t brace_group(const char *s, size_t n, const char **in,
                          size_t *inlen)
{
    const char *close;

    if (n == 0 || s[0] != '{')
        return 0;
    close = memchr(s, '}', n);
    if (!close)
        return 0;
    *in = s + 1;
    *inlen = (size_t)(close - s - 1);
    return (size_t)(close - s) + 1;
}

int answer_number(const char *str, double *out)
{
    char s[NUMBER_MAX + 1];
    const char *p, *in1, *in2, *slash;
    size_t n = 0, len, g1, g2, l1, l2;
    double sign = 1, num, den;

    if (!str)
        return NSED_EINVAL;
    /* copy without white space and '$' */
    for (const char *c = str; *c; c++) {
        if (isspace((unsigned char)*c) || *c == '$')
            continue;
        if (n >= NUMBER_MAX)
            return NSED_EINVAL;
        s[n++] = *c;
    }
    s[n] = '\0';
    if (n >= 2 && !strcmp(s + n - 2, "\\%"))
        s[n -= 2] = '\0';
    else if (n >= 1 && s[n - 1] == '%')
        s[--n] = '\0';
    p = s;
    len = n;
    if (len >= 3 && !memcmp(p, "\xe2\x88\x92", 3)) {
        sign = -1;
        p += 3;
        len -= 3;
    } else if (len && (*p == '-' || *p == '+')) {
        sign = *p == '-' ? -1 : 1;
        p++;
        len--;
    }
    if (!plain_number(p, len, out)) {
        *out *= sign;
        return 0;
    }
    slash = memchr(p, '/', len);
    if (slash && !plain_number(p, (size_t)(slash - p), &num) &&
        !signed_number(slash + 1, len - (size_t)(slash - p) - 1, &den) &&
        den != 0) {
        *out = sign * num / den;
        return 0;
    }
    if (len > 5 && !memcmp(p, "\\frac", 5)) {
        p += 5;
        len -= 5;
    } else if (len > 6 && (!memcmp(p, "\\dfrac", 6) ||
                           !memcmp(p, "\\tfrac", 6))) {
        p += 6;
        len -= 6;
    } else {
        return NSED_EINVAL;
    }
    g1 = brace_group(p, len, &in1, &l1);
    if (!g1)
        return NSED_EINVAL;
    g2 = brace_group(p + g1, len - g1, &in2, &l2);
    if (!g2 || g1 + g2 != len || signed_number(in1, l1, &num) ||
        signed_number(in2, l2, &den) || den == 0)
        return NSED_EINVAL;
    *out = sign * num / den;
    return 0;
}

/* ---- comparison -------------------------------------------------------- */

static const char *const unwrap_cmds[] = {
    "\\textbf", "\\textit", "\\textrm", "\\text", "\\mathrm", "\\mathbf",
    "\\mbox",
};

char *answer_normalize(const char *s)
{
    const size_t len = strlen(s);
    char *tmp = malloc(len + 1), *res = malloc(len + 1);
    size_t n = 0, m = 0;

    if (!tmp || !res) {
        free(tmp);
        free(res);
        return NULL;
    }
    /* pass 1: unwrap text commands, drop spacing, lower-case */
    for (size_t i = 0; i < len;) {
        bool cmd = false;

        for (size_t k = 0; k < sizeof unwrap_cmds / sizeof *unwrap_cmds; k++) {
            size_t cl = strlen(unwrap_cmds[k]);

            if (i + cl < len && !memcmp(s + i, unwrap_cmds[k], cl) &&
                s[i + cl] == '{') {
                i += cl; /* the braces go with the punctuation below */
                cmd = true;
                break;
            }
        }
        if (cmd)
            continue;
        if (s[i] == '\\' && i + 1 < len && strchr(",;!: ", s[i + 1])) {
            i += 2;
            continue;
        }
        if (isspace((unsigned char)s[i]) || s[i] == '~') {
            i++;
            continue;
        }
        tmp[n++] = (char)tolower((unsigned char)s[i]);
        i++;
    }
    /* pass 2: punctuation, keeping '.' and ',' between digits */
    for (size_t i = 0; i < n; i++) {
        char c = tmp[i];

        if ((c == '.' || c == ',') && i > 0 && i + 1 < n &&
            is_digit(tmp[i - 1]) && is_digit(tmp[i + 1])) {
            res[m++] = c;
            continue;
        }
        if (strchr(".,;:!?'\"`()[]{}$", c))
            continue;
        res[m++] = c;
    }
    res[m] = '\0';
    free(tmp);
    return res;
}

static bool normalized_equal(const char *x, const char *y)
{
    char *a = answer_normalize(x), *b = answer_normalize(y);
    bool eq = a && b && !strcmp(a, b);

    free(a);
    free(b);
    return eq;
}

static bool exact_equal(const char *x, const char *y)
{
    size_t lx = strlen(x), ly = strlen(y);

    text_trim(&x, &lx);
    text_trim(&y, &ly);
    return lx == ly && !memcmp(x, y, lx);
}

static bool regex_full_match(const char *pattern, const char *answer)
{
    size_t alen = strlen(answer);
    pcre2_code *re = regex_compile(pattern);
    pcre2_match_data *md = NULL;
    bool ok = false;

    text_trim(&answer, &alen);
    if (!re)
        return false;
    md = pcre2_match_data_create(1, NULL);
    /* ANCHORED | ENDANCHORED: the whole trimmed answer must match, as
     * "^(...)$" did, without touching the pattern's own groups */
    if (md)
        ok = pcre2_match(re, (PCRE2_SPTR)answer, alen, 0,
                         PCRE2_ANCHORED | PCRE2_ENDANCHORED, md, NULL) >= 0;
    pcre2_match_data_free(md);
    pcre2_code_free(re);
    return ok;
}

/* |x - y| <= tol * max(1, scale) */
static bool numeric_close(double x, double y, double tol, double scale)
{
    return fabs(x - y) <= tol * fmax(1.0, scale);
}

bool answer_matches(const workflow_answer *a, const char *answer,
                    const char *reference)
{
    double x, y;

    if (!answer || !reference)
        return false;
    switch (a->compare) {
    case WORKFLOW_COMPARE_EXACT:
        return exact_equal(answer, reference);
    case WORKFLOW_COMPARE_NUMERIC:
        if (!answer_number(answer, &x) && !answer_number(reference, &y))
            return numeric_close(x, y, a->tolerance, fabs(y));
        return normalized_equal(answer, reference);
    case WORKFLOW_COMPARE_NORMALIZED:
        return normalized_equal(answer, reference);
    case WORKFLOW_COMPARE_REGEX:
        return regex_full_match(reference, answer);
    }
    return false;
}

bool answer_same(const workflow_answer *a, const char *x, const char *y)
{
    double dx, dy;

    if (!x || !y)
        return false;
    switch (a->compare) {
    case WORKFLOW_COMPARE_EXACT:
        return exact_equal(x, y);
    case WORKFLOW_COMPARE_NUMERIC:
        if (!answer_number(x, &dx) && !answer_number(y, &dy))
            return numeric_close(dx, dy, a->tolerance,
                                 fmax(fabs(dx), fabs(dy)));
        return normalized_equal(x, y);
    case WORKFLOW_COMPARE_NORMALIZED:
    case WORKFLOW_COMPARE_REGEX:
        return normalized_equal(x, y);
    }
    return false;
}

int answer_majority(const workflow_answer *a, const char *const *answers,
                    size_t n, size_t *winner, size_t *votes)
{
    size_t best = 0, best_votes = 0;

    for (size_t i = 0; i < n; i++) {
        size_t count = 0;
        bool seen = false;

        if (!answers[i])
            continue;
        /* only the first member of a group counts it */
        for (size_t k = 0; k < i && !seen; k++)
            seen = answers[k] && answer_same(a, answers[k], answers[i]);
        if (seen)
            continue;
        for (size_t k = i; k < n; k++) {
            if (answers[k] && answer_same(a, answers[i], answers[k]))
                count++;
        }
        if (count > best_votes) {
            best = i;
            best_votes = count;
        }
    }
    if (best_votes == 0)
        return NSED_ENOTFOUND;
    *winner = best;
    *votes = best_votes;
    return 0;
}

int answer_tally_votes(const workflow_answer *a, const char *const *answers,
                       size_t n, answer_tally *out)
{
    *out = (answer_tally){0};
    if (n > WORKFLOW_MAX_SEATS)
        return NSED_EINVAL;
    for (size_t i = 0; i < n; i++) {
        size_t count = 0;
        bool seen = false;

        if (!answers[i])
            continue;
        /* only the first member of a group counts it */
        for (size_t k = 0; k < i && !seen; k++)
            seen = answers[k] && answer_same(a, answers[k], answers[i]);
        if (seen)
            continue;
        for (size_t k = i; k < n; k++) {
            if (answers[k] && answer_same(a, answers[i], answers[k]))
                count++;
        }
        if (count > out->votes) {
            out->votes = count;
            out->ntied = 0;
        }
        if (count == out->votes)
            out->tied[out->ntied++] = i;
    }
    return 0;
}
