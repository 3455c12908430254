/* questions.c -- parsing and validating question files (no store access;
 * see questions_store.c for that half). */
#include "pipeline/questions/questions.h"

#include "pipeline/base/buf.h"
#include "pipeline/base/hash.h"
#include "pipeline/base/json.h"
#include "pipeline/base/suggest.h"
#include "pipeline/base/utf8.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ */
/* Question lifecycle and comparison                                   */

void question_release(question *q)
{
    if (!q)
        return;
    free(q->id);
    free(q->text);
    free(q->answer);
    for (size_t i = 0; i < q->ntags; i++)
        free(q->tags[i]);
    free(q->tags);
    free(q->meta_json);
    memset(q, 0, sizeof *q);
}

static int str_same(const char *a, const char *b)
{
    if (!a || !b)
        return a == b;
    return strcmp(a, b) == 0;
}

const char *question_diff(const question *a, const question *b)
{
    if (!str_same(a->id, b->id))
        return "id";
    if (!str_same(a->text, b->text))
        return "question";
    if (!str_same(a->answer, b->answer))
        return "answer";
    if (a->ntags != b->ntags)
        return "tags";
    for (size_t i = 0; i < a->ntags; i++)
        if (!str_same(a->tags[i], b->tags[i]))
            return "tags";
    if (!str_same(a->meta_json, b->meta_json))
        return "meta";
    return NULL;
}

/* ------------------------------------------------------------------ */
/* The line scanner                                                    */

/* cJSON builds the tree but forgets where things were, is lenient about
 * numbers ("01", "1.") and control bytes, and does not check UTF-8. One
 * pass over the raw bytes fills those gaps: it validates UTF-8, rejects raw
 * control bytes and \u0000 (which cJSON would silently cut a string at),
 * checks every number against the JSON grammar, and records where each
 * top-level key and its value sit, so errors can point at a column and
 * "meta" and numeric answers can be taken verbatim from the source text.
 * A valid question has at most 6 keys (5 + "seq" in a stored record) and
 * the 7th is always an error, so positions of the first SCAN_KEYS keys are
 * all that is ever needed. */
#define SCAN_KEYS 8

enum scan_top {
    TOP_NONE,       /* not inside the root object */
    TOP_KEY_EXPECT, /* after '{' or ',' at depth 1 */
    TOP_IN_KEY,     /* inside a key string */
    TOP_AFTER_KEY,  /* key read, ':' expected */
    TOP_VAL_EXPECT, /* after ':' */
    TOP_IN_VAL,     /* inside a value */
};

typedef struct line_scan {
    size_t nkeys; /* top-level keys seen (may exceed SCAN_KEYS) */
    size_t key_off[SCAN_KEYS];
    size_t val_off[SCAN_KEYS];
    size_t val_end[SCAN_KEYS]; /* one past the value's last byte */
    size_t err_off;            /* SIZE_MAX when the scan found no problem */
    int unterminated;          /* the line ended inside a string/container */
    char err_msg[160];
} line_scan;

static int is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/* 1 when s[0..n) is a number by the JSON grammar. */
static int json_number_ok(const unsigned char *s, size_t n)
{
    size_t i = 0;

    if (i < n && s[i] == '-')
        i++;
    if (i >= n)
        return 0;
    if (s[i] == '0')
        i++;
    else if (s[i] >= '1' && s[i] <= '9')
        while (i < n && is_digit(s[i]))
            i++;
    else
        return 0;
    if (i < n && s[i] == '.') {
        i++;
        if (i >= n || !is_digit(s[i]))
            return 0;
        while (i < n && is_digit(s[i]))
            i++;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-'))
            i++;
        if (i >= n || !is_digit(s[i]))
            return 0;
        while (i < n && is_digit(s[i]))
            i++;
    }
    return i == n;
}

static int is_hex(unsigned char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static int is_number_char(unsigned char c)
{
    return is_digit(c) || c == '+' || c == '-' || c == '.' || c == 'e' ||
           c == 'E';
}

static void scan_fail(line_scan *sc, size_t off, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void scan_fail(line_scan *sc, size_t off, const char *fmt, ...)
{
    va_list ap;

    sc->err_off = off;
    va_start(ap, fmt);
    vsnprintf(sc->err_msg, sizeof sc->err_msg, fmt, ap);
    va_end(ap);
}

/* A value starts at off at depth 1 of the root object. */
static void scan_value_start(line_scan *sc, enum scan_top *top, size_t off)
{
    if (*top != TOP_VAL_EXPECT)
        return;
    if (sc->nkeys && sc->nkeys <= SCAN_KEYS)
        sc->val_off[sc->nkeys - 1] = off;
    *top = TOP_IN_VAL;
}

/* The current top-level value ended with the byte before off_after. */
static void scan_value_end(line_scan *sc, enum scan_top top, size_t off_after)
{
    if (top != TOP_IN_VAL)
        return;
    if (sc->nkeys && sc->nkeys <= SCAN_KEYS)
        sc->val_end[sc->nkeys - 1] = off_after;
}

static void scan_line(const unsigned char *p, size_t n, line_scan *sc)
{
    enum scan_top top = TOP_NONE;
    size_t depth = 0, last = 0;
    int in_str = 0, root_seen = 0;

    memset(sc, 0, sizeof *sc);
    sc->err_off = SIZE_MAX;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = p[i];
        /* depth 1 of a root object: where keys and their values live */
        int top_level = depth == 1 && top != TOP_NONE;

        if (c >= 0x80) {
            size_t k = utf8_seq_len(p + i, n - i);

            if (!k) {
                scan_fail(sc, i, "invalid UTF-8 (byte 0x%02x)", c);
                return;
            }
            if (!in_str && top_level)
                scan_value_start(sc, &top, i);
            i += k - 1;
            last = i;
            continue;
        }
        if (in_str) {
            if (c < 0x20) {
                scan_fail(sc, i,
                          "raw control character 0x%02x inside a string "
                          "(write it as an escape such as \\n)",
                          c);
                return;
            }
            if (c == '\\') {
                /* cJSON reads a malformed \uXXXX as U+0000 and cuts the
                 * string there, so escapes are checked here */
                if (i + 1 >= n)
                    continue; /* unterminated: cJSON reports it */
                if (p[i + 1] == 'u') {
                    if (i + 5 >= n || !is_hex(p[i + 2]) ||
                        !is_hex(p[i + 3]) || !is_hex(p[i + 4]) ||
                        !is_hex(p[i + 5])) {
                        scan_fail(sc, i, "invalid escape (\\u needs four "
                                         "hex digits)");
                        return;
                    }
                    if (memcmp(p + i + 2, "0000", 4) == 0) {
                        scan_fail(sc, i, "\\u0000 (NUL) is not allowed");
                        return;
                    }
                    i += 5;
                } else if (p[i + 1] && strchr("\"\\/bfnrt", p[i + 1])) {
                    i++;
                } else {
                    scan_fail(sc, i, "invalid escape \"\\%c\"",
                              p[i + 1] >= 0x20 && p[i + 1] < 0x7f
                                  ? p[i + 1]
                                  : '?');
                    return;
                }
            } else if (c == '"') {
                in_str = 0;
                if (top_level && top == TOP_IN_KEY)
                    top = TOP_AFTER_KEY;
            }
            last = i;
            continue;
        }
        if (c == ' ' || c == '\t' || c == '\r')
            continue;
        if (c < 0x20) {
            scan_fail(sc, i, "control character 0x%02x", c);
            return;
        }
        if (c == '"') {
            in_str = 1;
            if (top_level && top == TOP_KEY_EXPECT) {
                if (sc->nkeys < SCAN_KEYS)
                    sc->key_off[sc->nkeys] = i;
                sc->nkeys++;
                top = TOP_IN_KEY;
            } else if (top_level) {
                scan_value_start(sc, &top, i);
            }
        } else if (c == '-' || is_digit(c)) {
            size_t j = i;

            while (j < n && is_number_char(p[j]))
                j++;
            if (!json_number_ok(p + i, j - i)) {
                scan_fail(sc, i, "invalid number \"%.*s\"",
                          (int)(j - i > 24 ? 24 : j - i),
                          (const char *)p + i);
                return;
            }
            if (top_level)
                scan_value_start(sc, &top, i);
            i = j - 1;
        } else if (c == '{' || c == '[') {
            if (depth == 0 && !root_seen) {
                root_seen = 1;
                if (c == '{')
                    top = TOP_KEY_EXPECT;
            } else if (top_level) {
                scan_value_start(sc, &top, i);
            }
            depth++;
        } else if (c == '}' || c == ']') {
            if (top_level) {
                scan_value_end(sc, top, last + 1);
                top = TOP_NONE;
            }
            if (depth)
                depth--;
        } else if (c == ',') {
            if (top_level) {
                scan_value_end(sc, top, last + 1);
                top = TOP_KEY_EXPECT;
            }
        } else if (c == ':') {
            if (top_level && top == TOP_AFTER_KEY)
                top = TOP_VAL_EXPECT;
        } else if (top_level) {
            scan_value_start(sc, &top, i); /* true, false, null */
        }
        last = i;
    }
    sc->unterminated = in_str || depth > 0;
}

/* ------------------------------------------------------------------ */
/* Small helpers for field checks and messages                         */

static const char *type_phrase(const cJSON *v)
{
    if (cJSON_IsString(v))
        return "a string";
    if (cJSON_IsNumber(v))
        return "a number";
    if (cJSON_IsArray(v))
        return "a list";
    if (cJSON_IsObject(v))
        return "an object";
    if (cJSON_IsBool(v))
        return "a boolean";
    if (cJSON_IsNull(v))
        return "null";
    return "an unknown value";
}

/* Copy at most about 60 bytes of s into out for a message, ending on a
 * UTF-8 boundary, with control bytes shown as '?' and "..." when cut. */
static void msg_quote(const char *s, char *out, size_t outsz)
{
    const size_t limit = outsz - 4 < 60 ? outsz - 4 : 60;
    size_t n = strlen(s), i = 0, o = 0;

    while (i < n && o < limit) {
        size_t k = utf8_seq_len(s + i, n - i);

        if (!k || o + k > limit)
            break;
        for (size_t j = 0; j < k; j++) {
            unsigned char c = (unsigned char)s[i + j];
            out[o++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
        }
        i += k;
    }
    if (i < n) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
}

/* The first control character (C0, DEL, or C1 as U+0080..U+009F) in s,
 * or 0 when there is none. Returns the code point. */
static unsigned control_char_in(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;

    for (size_t i = 0; p[i]; i++) {
        if (p[i] < 0x20 || p[i] == 0x7f)
            return p[i];
        if (p[i] == 0xC2 && p[i + 1] >= 0x80 && p[i + 1] <= 0x9F)
            return p[i + 1];
    }
    return 0;
}

static int all_space(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!strchr(" \t\r\n\f\v", s[i]) || !s[i])
            return 0;
    return 1;
}

static int lower_ascii(int c)
{
    return c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c;
}

static int has_prefix_ci(const char *s, const char *prefix)
{
    for (; *prefix; s++, prefix++)
        if (lower_ascii((unsigned char)*s) !=
            lower_ascii((unsigned char)*prefix))
            return 0;
    return 1;
}

enum qkey { K_ID, K_QUESTION, K_ANSWER, K_TAGS, K_META, K_SEQ, K_COUNT };

static const char *const key_names[K_COUNT] = {
    "id", "question", "answer", "tags", "meta", "seq",
};

/* The known key most likely meant by an unknown one, or NULL. */
static const char *suggest_key(const char *key, int record)
{
    size_t bestd = SIZE_MAX, klen = strlen(key);
    int nkeys = record ? K_COUNT : K_SEQ;
    const char *best = suggest_closest(key, key_names, (size_t)nkeys, &bestd);

    if (best && bestd <= 2 && bestd < klen)
        return best;
    /* "metadata", "question_text", "ques": a known key as a prefix */
    for (int k = 0; k < nkeys; k++) {
        size_t nlen = strlen(key_names[k]);

        if ((klen > nlen && has_prefix_ci(key, key_names[k])) ||
            (klen >= 3 && klen < nlen && has_prefix_ci(key_names[k], key)))
            return key_names[k];
    }
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Numbers and verbatim JSON                                           */

/* The shortest exact decimal text of the JSON number s[0..n) (already
 * checked against the grammar), computed on the digits as written so that
 * no binary rounding is involved: 391.0 -> 391, 5e-1 -> 0.5, -0 -> 0,
 * 1.5e3 -> 1500. Returns 0 with *out malloc'd, NSED_ETOOBIG when the text
 * would exceed QUESTIONS_NUMBER_MAX bytes, NSED_ENOMEM. */
static int decimal_text(const char *s, size_t n, char **out)
{
    const long exp_limit = 10000000;
    size_t i = 0, ds, de, fs = 0, fe = 0, lead, tail, ndig;
    long exp = 0, point;
    int neg = 0, eneg = 0;
    buf digits, b;
    int rc;

    buf_init(&digits, n);
    buf_init(&b, QUESTIONS_NUMBER_MAX);
    if (s[i] == '-') {
        neg = 1;
        i++;
    }
    ds = i;
    while (i < n && is_digit((unsigned char)s[i]))
        i++;
    de = i;
    if (i < n && s[i] == '.') {
        fs = ++i;
        while (i < n && is_digit((unsigned char)s[i]))
            i++;
        fe = i;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (s[i] == '+' || s[i] == '-')
            eneg = s[i++] == '-';
        /* saturate: any exponent this large is refused below unless the
         * digits are all zero */
        while (i < n && is_digit((unsigned char)s[i])) {
            if (exp < exp_limit)
                exp = exp * 10 + (s[i] - '0');
            i++;
        }
        if (eneg)
            exp = -exp;
    }
    rc = buf_add(&digits, s + ds, de - ds);
    if (!rc)
        rc = buf_add(&digits, s + fs, fe - fs);
    if (rc)
        goto out;
    point = (long)(de - ds) + exp;
    ndig = digits.len;
    lead = 0;
    while (lead < ndig && digits.ptr[lead] == '0')
        lead++;
    if (lead == ndig) {
        rc = buf_adds(&b, "0");
        goto done;
    }
    tail = ndig;
    while (digits.ptr[tail - 1] == '0')
        tail--;
    point -= (long)lead;
    ndig = tail - lead;
    if (point > (long)QUESTIONS_NUMBER_MAX ||
        point < -(long)QUESTIONS_NUMBER_MAX || ndig > QUESTIONS_NUMBER_MAX) {
        rc = NSED_ETOOBIG;
        goto out;
    }
    if (neg)
        rc = buf_addc(&b, '-');
    if (!rc && point <= 0) {
        rc = buf_adds(&b, "0.");
        for (long z = 0; !rc && z < -point; z++)
            rc = buf_addc(&b, '0');
        if (!rc)
            rc = buf_add(&b, digits.ptr + lead, ndig);
    } else if (!rc && (size_t)point >= ndig) {
        rc = buf_add(&b, digits.ptr + lead, ndig);
        for (size_t z = ndig; !rc && z < (size_t)point; z++)
            rc = buf_addc(&b, '0');
    } else if (!rc) {
        rc = buf_add(&b, digits.ptr + lead, (size_t)point);
        if (!rc)
            rc = buf_addc(&b, '.');
        if (!rc)
            rc = buf_add(&b, digits.ptr + lead + point, ndig - (size_t)point);
    }
done:
    if (rc)
        goto out;
    *out = buf_detach(&b, NULL);
    if (!*out)
        rc = NSED_ENOMEM;
out:
    buf_release(&digits);
    buf_release(&b);
    return rc;
}

/* Copy the JSON text s[0..n) without the white space outside strings. */
static char *compact_json(const char *s, size_t n)
{
    char *out = malloc(n + 1);
    size_t o = 0;
    int in_str = 0;

    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];

        if (in_str) {
            out[o++] = c;
            if (c == '\\' && i + 1 < n)
                out[o++] = s[++i];
            else if (c == '"')
                in_str = 0;
            continue;
        }
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n')
            continue;
        if (c == '"')
            in_str = 1;
        out[o++] = c;
    }
    out[o] = '\0';
    return out;
}

/* ------------------------------------------------------------------ */
/* One object                                                          */

typedef struct parse_ctx {
    const char *file;
    size_t lineno;
    const char *p; /* the object's text */
    size_t n;
    const line_scan *sc;
    int spans_ok; /* the scanner's keys match cJSON's children */
    int record;   /* parsing a stored record: "seq" allowed and required */
} parse_ctx;

static size_t key_col(const parse_ctx *c, size_t k)
{
    return c->spans_ok && k < SCAN_KEYS ? c->sc->key_off[k] + 1 : 0;
}

/* A value string that must not be empty and must not hold control chars. */
static int check_label(const char *what, const char *s, char *why,
                       size_t whysz)
{
    unsigned cc;

    if (!*s) {
        snprintf(why, whysz, "%s is empty", what);
        return -1;
    }
    cc = control_char_in(s);
    if (cc) {
        snprintf(why, whysz, "%s contains a control character (U+%04X)",
                 what, cc);
        return -1;
    }
    return 0;
}

static int dup_string(const char *s, char **out)
{
    *out = strdup(s);
    return *out ? 0 : NSED_ENOMEM;
}

/* The id written as the JSON integer of key k: its digits as written
 * (an optional '-', no fraction, no exponent). NSED_EINVAL otherwise. */
static int id_from_number(const parse_ctx *c, size_t k, char **out)
{
    const char *s;
    size_t n, i = 0;

    if (!c->spans_ok || k >= SCAN_KEYS)
        return NSED_EINVAL;
    s = c->p + c->sc->val_off[k];
    n = c->sc->val_end[k] - c->sc->val_off[k];
    if (n && s[0] == '-')
        i = 1;
    if (i == n || n > 40)
        return NSED_EINVAL;
    for (size_t j = i; j < n; j++)
        if (!is_digit((unsigned char)s[j]))
            return NSED_EINVAL;
    *out = strndup(s, n);
    return *out ? 0 : NSED_ENOMEM;
}

/* Validate the fields of root into q. On failure err is filled and q
 * holds whatever was built (the caller releases it). */
static int parse_fields(const parse_ctx *c, const cJSON *root, question *q,
                        uint64_t *seq, nsed_err *err)
{
    char why[NSED_ERR_MSG_MAX / 2], shown[80];
    unsigned seen = 0;
    size_t k = 0;
    int rc;

    for (const cJSON *it = root->child; it; it = it->next, k++) {
        size_t col = key_col(c, k);
        int key = -1;

        for (int i = 0; i < (c->record ? K_COUNT : K_SEQ); i++)
            if (strcmp(it->string, key_names[i]) == 0)
                key = i;
        if (key < 0) {
            const char *hint = suggest_key(it->string, c->record);

            msg_quote(it->string, shown, sizeof shown);
            if (hint)
                return nsed_error_at(err, NSED_EINVAL, c->file, c->lineno,
                                     col,
                                     "unknown key \"%s\" (did you mean "
                                     "\"%s\"?); extra data belongs in "
                                     "\"meta\"",
                                     shown, hint);
            return nsed_error_at(err, NSED_EINVAL, c->file, c->lineno, col,
                                 "unknown key \"%s\"; the keys are id, "
                                 "question, answer, tags, meta; extra data "
                                 "belongs in \"meta\"",
                                 shown);
        }
        if (seen & (1u << key))
            return nsed_error_at(err, NSED_EINVAL, c->file, c->lineno, col,
                                 "duplicate key \"%s\"", key_names[key]);
        seen |= 1u << key;

        switch ((enum qkey)key) {
        case K_ID:
            if (cJSON_IsNumber(it) && !c->record) {
                /* an integer id is taken as its decimal text (42 -> "42") */
                rc = id_from_number(c, k, &q->id);
                if (rc == NSED_EINVAL)
                    return nsed_error_at(err, NSED_EINVAL, c->file, c->lineno,
                                         col,
                                         "\"id\" must be a string or an "
                                         "integer, got a number with a "
                                         "fraction or exponent");
                if (rc)
                    return rc;
                break;
            }
            if (!cJSON_IsString(it))
                return nsed_error_at(err, NSED_EINVAL, c->file, c->lineno, col,
                                     "\"id\" must be a string or an "
                                     "integer, got %s",
                                     type_phrase(it));
            if (check_label("\"id\"", it->valuestring, why, sizeof why))
                return nsed_error_at(err, NSED_EINVAL, c->file, c->lineno,
                                     col, "%s", why);
            if (strlen(it->valuestring) > QUESTIONS_ID_MAX)
                return nsed_error_at(err, NSED_EINVAL, c->file, c->lineno,
                                     col,
                                     "\"id\" is longer than %d bytes (%zu)",
                                     QUESTIONS_ID_MAX,
                                     strlen(it->valuestring));
            rc = dup_string(it->valuestring, &q->id);
            if (rc)
                return rc;
            break;
        case K_QUESTION:
            if (!cJSON_IsString(it))
                return nsed_error_at(err, NSED_EINVAL, c->file, c->lineno,
                                     col,
                                     "\"question\" must be a string, got %s",
                                     type_phrase(it));
            if (all_space(it->valuestring, strlen(it->valuestring)))
                return nsed_error_at(err, NSED_EINVAL, c->file, c->lineno,
                                     col, "\"question\" is empty");
            rc = dup_string(it->valuestring, &q->text);
            if (rc)
                return rc;
            break;
        case K_ANSWER:
            if (cJSON_IsNull(it))
                break;
            if (cJSON_IsString(it)) {
                if (!*it->valuestring)
                    return nsed_error_at(err, NSED_EINVAL, c->file,
                                         c->lineno, col,
                                         "\"answer\" is empty (leave it out "
                                         "or use null when there is no "
                                         "reference)");
                rc = dup_string(it->valuestring, &q->answer);
                if (rc)
                    return rc;
                break;
            }
            if (!cJSON_IsNumber(it))
                return nsed_error_at(err, NSED_EINVAL, c->file, c->lineno,
                                     col,
                                     "\"answer\" must be a string or a "
                                     "number, got %s",
                                     type_phrase(it));
            if (!c->spans_ok || k >= SCAN_KEYS)
                return nsed_error_at(err, NSED_EINVAL, c->file, c->lineno,
                                     col, "cannot locate the \"answer\" "
                                          "number in the line");
            rc = decimal_text(c->p + c->sc->val_off[k],
                              c->sc->val_end[k] - c->sc->val_off[k],
                              &q->answer);
            if (rc == NSED_ETOOBIG)
                return nsed_error_at(err, NSED_EINVAL, c->file, c->lineno,
                                     col,
                                     "\"answer\" number is too long as "
                                     "decimal text (over %d characters); "
                                     "write it as a string",
                                     QUESTIONS_NUMBER_MAX);
            if (rc)
                return rc;
            break;
        case K_TAGS: {
            size_t nt, ti = 0;

            if (cJSON_IsNull(it))
                break;
            if (!cJSON_IsArray(it))
                return nsed_error_at(err, NSED_EINVAL, c->file, c->lineno,
                                     col,
                                     "\"tags\" must be a list of strings, "
                                     "got %s",
                                     type_phrase(it));
            nt = (size_t)cJSON_GetArraySize(it);
            if (nt > QUESTIONS_TAGS_MAX)
                return nsed_error_at(err, NSED_EINVAL, c->file, c->lineno,
                                     col, "too many tags (%zu; at most %d)",
                                     nt, QUESTIONS_TAGS_MAX);
            if (!nt)
                break;
            q->tags = calloc(nt, sizeof *q->tags);
            if (!q->tags)
                return NSED_ENOMEM;
            for (const cJSON *t = it->child; t; t = t->next, ti++) {
                char what[32];

                if (!cJSON_IsString(t))
                    return nsed_error_at(err, NSED_EINVAL, c->file,
                                         c->lineno, col,
                                         "tag %zu must be a string, got %s",
                                         ti + 1, type_phrase(t));
                snprintf(what, sizeof what, "tag %zu", ti + 1);
                if (check_label(what, t->valuestring, why, sizeof why))
                    return nsed_error_at(err, NSED_EINVAL, c->file,
                                         c->lineno, col, "%s", why);
                rc = dup_string(t->valuestring, &q->tags[ti]);
                if (rc)
                    return rc;
                q->ntags = ti + 1;
            }
            break;
        }
        case K_META:
            if (cJSON_IsNull(it))
                break;
            if (!cJSON_IsObject(it))
                return nsed_error_at(err, NSED_EINVAL, c->file, c->lineno,
                                     col, "\"meta\" must be an object, got %s",
                                     type_phrase(it));
            if (!c->spans_ok || k >= SCAN_KEYS)
                return nsed_error_at(err, NSED_EINVAL, c->file, c->lineno,
                                     col, "cannot locate the \"meta\" "
                                          "object in the line");
            q->meta_json = compact_json(c->p + c->sc->val_off[k],
                                        c->sc->val_end[k] -
                                            c->sc->val_off[k]);
            if (!q->meta_json)
                return NSED_ENOMEM;
            break;
        case K_SEQ: {
            const char *s;
            size_t n;
            uint64_t v = 0;

            if (!cJSON_IsNumber(it) || !c->spans_ok || k >= SCAN_KEYS)
                return nsed_error_at(err, NSED_EINVAL, c->file, c->lineno,
                                     col, "\"seq\" must be a number");
            s = c->p + c->sc->val_off[k];
            n = c->sc->val_end[k] - c->sc->val_off[k];
            for (size_t i = 0; i < n; i++) {
                if (!is_digit((unsigned char)s[i]) ||
                    v > (UINT64_MAX - 9) / 10)
                    return nsed_error_at(err, NSED_EINVAL, c->file,
                                         c->lineno, col,
                                         "\"seq\" is not a sequence number");
                v = v * 10 + (uint64_t)(s[i] - '0');
            }
            if (seq)
                *seq = v;
            break;
        }
        case K_COUNT:
            break;
        }
    }
    if (!(seen & (1u << K_ID)))
        return nsed_error_at(err, NSED_EINVAL, c->file, c->lineno, 0,
                             "missing \"id\"");
    if (!(seen & (1u << K_QUESTION)))
        return nsed_error_at(err, NSED_EINVAL, c->file, c->lineno, 0,
                             "missing \"question\"");
    if (c->record && !(seen & (1u << K_SEQ)))
        return nsed_error_at(err, NSED_EINVAL, c->file, c->lineno, 0,
                             "missing \"seq\"");
    return 0;
}

/* Parse the object text p[0..n) (BOM, CR and blank lines already dealt
 * with). */
static int parse_object(const char *file, size_t lineno, const char *p,
                        size_t n, int record, question *out, uint64_t *seq,
                        nsed_err *err)
{
    line_scan sc;
    const char *end = NULL;
    cJSON *root = NULL;
    question q = {0};
    parse_ctx c = {file, lineno, p, n, &sc, 0, record};
    size_t json_off = SIZE_MAX, nchildren = 0;
    uint64_t sq = 0;
    int rc;

    scan_line((const unsigned char *)p, n, &sc);
    root = cJSON_ParseWithLengthOpts(p, n, &end, 0);
    if (!root)
        json_off = end && end >= p && end <= p + n ? (size_t)(end - p) : 0;
    if (root) {
        /* cJSON stops after the first value; the rest must be blank */
        size_t i = end && end >= p && end <= p + n ? (size_t)(end - p) : n;

        while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == '\r'))
            i++;
        if (i < n && i < sc.err_off) {
            rc = nsed_error_at(err, NSED_EINVAL, file, lineno, i + 1,
                               "unexpected text after the JSON object "
                               "(one object per line)");
            goto out;
        }
    }
    if (json_off < sc.err_off) {
        if (sc.unterminated && sc.err_off == SIZE_MAX)
            rc = nsed_error_at(err, NSED_EINVAL, file, lineno, n,
                               "invalid JSON: the line ends inside a value "
                               "(each question must be one line)");
        else
            rc = nsed_error_at(err, NSED_EINVAL, file, lineno, json_off + 1,
                               "invalid JSON");
        goto out;
    }
    if (sc.err_off != SIZE_MAX) {
        rc = nsed_error_at(err, NSED_EINVAL, file, lineno, sc.err_off + 1,
                           "%s", sc.err_msg);
        goto out;
    }
    if (!cJSON_IsObject(root)) {
        rc = nsed_error_at(err, NSED_EINVAL, file, lineno, 1,
                           "expected a JSON object, got %s",
                           type_phrase(root));
        goto out;
    }
    for (const cJSON *it = root->child; it; it = it->next)
        nchildren++;
    c.spans_ok = nchildren == sc.nkeys;
    rc = parse_fields(&c, root, &q, &sq, err);
    if (rc == NSED_ENOMEM)
        nsed_error(err, rc, "%s:%zu: out of memory", file, lineno);
    if (rc)
        goto out;
    *out = q;
    memset(&q, 0, sizeof q);
    if (seq)
        *seq = sq;
out:
    question_release(&q);
    cJSON_Delete(root);
    return rc;
}

int questions_parse_line(const char *file, size_t lineno, const char *line,
                         size_t len, question *out, nsed_err *err)
{
    if (!line) {
        if (len)
            return nsed_error_at(err, NSED_EINVAL, file, lineno, 0,
                                 "no line text");
        line = "";
    }
    if (len && line[len - 1] == '\r')
        len--;
    if (lineno == 1 && len >= 3 && memcmp(line, "\xEF\xBB\xBF", 3) == 0) {
        line += 3;
        len -= 3;
    }
    /* cJSON would skip one silently; outside line 1 it most likely comes
     * from files joined with cat, and deserves a clear word */
    if (len >= 3 && memcmp(line, "\xEF\xBB\xBF", 3) == 0)
        return nsed_error_at(err, NSED_EINVAL, file, lineno, 1,
                             "byte order mark (U+FEFF) after the start of "
                             "the file (were files joined?); remove it");
    if (len > QUESTIONS_LINE_MAX)
        return nsed_error_at(err, NSED_ETOOBIG, file, lineno, 0,
                             "line is longer than 1 MiB (%zu bytes)", len);
    if (all_space(line, len))
        return NSED_ENOTFOUND;
    return parse_object(file, lineno, line, len, 0, out, NULL, err);
}

/* ------------------------------------------------------------------ */
/* Stored records                                                      */

int questions_record_json(const question *q, uint64_t seq, char **out,
                          size_t *len)
{
    cJSON *o = NULL, *tags;
    char *text = NULL;
    int rc = NSED_ENOMEM;

    if (!q->id || !q->text)
        return NSED_EINVAL;
    o = cJSON_CreateObject();
    if (!o || !cJSON_AddStringToObject(o, "id", q->id) ||
        !cJSON_AddStringToObject(o, "question", q->text))
        goto out;
    if (q->answer && !cJSON_AddStringToObject(o, "answer", q->answer))
        goto out;
    if (q->ntags) {
        tags = cJSON_AddArrayToObject(o, "tags");
        if (!tags)
            goto out;
        for (size_t i = 0; i < q->ntags; i++) {
            cJSON *t = cJSON_CreateString(q->tags[i]);

            if (!t || !cJSON_AddItemToArray(tags, t)) {
                cJSON_Delete(t);
                goto out;
            }
        }
    }
    if (q->meta_json && !cJSON_AddRawToObject(o, "meta", q->meta_json))
        goto out;
    if (json_add_u64(o, "seq", seq))
        goto out;
    text = cJSON_PrintUnformatted(o);
    if (!text)
        goto out;
    if (len)
        *len = strlen(text);
    *out = text;
    rc = 0;
out:
    cJSON_Delete(o);
    return rc;
}

int questions_parse_record(const char *json, size_t len, question *out,
                           uint64_t *seq, nsed_err *err)
{
    if (!json || !len)
        return nsed_error(err, NSED_EINVAL, "question record: empty");
    return parse_object("question record", 0, json, len, 1, out, seq, err);
}

/* ------------------------------------------------------------------ */
/* Reading files                                                       */

/* Ids seen so far, with the line of their first appearance: an
 * open-addressing hash table, kept at most 3/4 full, that holds no id
 * text but 96 bits of each id's SHA-256 (a probe hash and a tag). Two
 * different ids share them with a chance of about n^2 / 2^97 (1e-15 for
 * 10M ids), and a slot is 16 bytes, where a copy of every id took several
 * times that and was most of an ingest's heap. */
typedef struct id_slot {
    uint64_t hash;
    uint32_t tag;
    uint32_t line; /* 0: an empty slot; ID_LINE_FAR: past UINT32_MAX - 1 */
} id_slot;

#define ID_LINE_FAR UINT32_MAX

typedef struct id_set {
    id_slot *slots;
    size_t cap; /* power of two, or 0 */
    size_t n;
} id_set;

static void idset_release(id_set *s)
{
    free(s->slots);
    memset(s, 0, sizeof *s);
}

static int idset_grow(id_set *s)
{
    size_t ncap = s->cap ? s->cap * 2 : 1024;
    id_slot *ns = calloc(ncap, sizeof *ns);

    if (!ns)
        return NSED_ENOMEM;
    for (size_t i = 0; i < s->cap; i++) {
        size_t j;

        if (!s->slots[i].line)
            continue;
        j = (size_t)s->slots[i].hash & (ncap - 1);
        while (ns[j].line)
            j = (j + 1) & (ncap - 1);
        ns[j] = s->slots[i];
    }
    free(s->slots);
    s->slots = ns;
    s->cap = ncap;
    return 0;
}

/* Add id first seen on line (>= 1). Returns 0, NSED_EEXIST with *first set
 * to the line of the earlier occurrence (0 when it is past UINT32_MAX - 1),
 * or NSED_ENOMEM. */
static int idset_add(id_set *s, const char *id, size_t line, size_t *first)
{
    uint8_t d[HASH_LEN];
    uint64_t h = 0;
    uint32_t tag = 0;
    size_t j;
    int rc;

    if (hash_sha256(id, strlen(id), d))
        return NSED_ENOMEM;
    for (int i = 0; i < 8; i++)
        h = h << 8 | d[i];
    for (int i = 8; i < 12; i++)
        tag = tag << 8 | d[i];
    if ((s->n + 1) * 4 > s->cap * 3) {
        rc = idset_grow(s);
        if (rc)
            return rc;
    }
    j = (size_t)h & (s->cap - 1);
    while (s->slots[j].line) {
        if (s->slots[j].hash == h && s->slots[j].tag == tag) {
            *first = s->slots[j].line == ID_LINE_FAR ? 0 : s->slots[j].line;
            return NSED_EEXIST;
        }
        j = (j + 1) & (s->cap - 1);
    }
    s->slots[j].hash = h;
    s->slots[j].tag = tag;
    s->slots[j].line = line < ID_LINE_FAR ? (uint32_t)line : ID_LINE_FAR;
    s->n++;
    return 0;
}

struct questions_reader {
    FILE *f;
    char *path;
    unsigned flags;
    size_t lineno;     /* lines consumed so far */
    size_t nquestions; /* questions returned so far */
    int eof;
    int failed;
    buf line;
    id_set ids;
    size_t cpos, clen;
    const questions_map *map; /* NULL: the native format */
    int keep_going;           /* a bad line does not end the reading */
    char *whole;              /* a JSON array file, read whole */
    size_t wlen, wpos, wline; /* its length, read position, line there */
    int welems;               /* elements returned so far */
    int wbroken;              /* the array itself is malformed */
    char chunk[65536];
};

/* Whether path names a JSON array file: ".json" and '[' first. */
static int is_array_file(const char *path, FILE *f)
{
    size_t n = strlen(path);
    int c;

    if (n < 5 || strcmp(path + n - 5, ".json") != 0)
        return 0;
    do
        c = getc(f);
    while (c == ' ' || c == '\t' || c == '\n' || c == '\r');
    rewind(f);
    return c == '[';
}

static int slurp_array(questions_reader *r, nsed_err *err)
{
    buf all;
    size_t got;
    int rc = 0;

    buf_init(&all, QUESTIONS_ARRAY_MAX);
    while ((got = fread(r->chunk, 1, sizeof r->chunk, r->f)) > 0) {
        rc = buf_add(&all, r->chunk, got);
        if (rc) {
            buf_release(&all);
            return rc == NSED_ETOOBIG
                       ? nsed_error(err, rc,
                                    "%s: a JSON array file may hold "
                                    "at most 256 MiB; use JSONL",
                                    r->path)
                       : nsed_error(err, rc, "%s: out of memory", r->path);
        }
    }
    if (ferror(r->f)) {
        buf_release(&all);
        return nsed_error(err, NSED_EIO, "%s: read error", r->path);
    }
    r->wlen = all.len;
    r->whole = strndup(all.ptr, all.len);
    buf_release(&all);
    if (!r->whole)
        return nsed_error(err, NSED_ENOMEM, "%s: out of memory", r->path);
    r->wline = 1;
    while (r->wpos < r->wlen && r->whole[r->wpos] != '[')
        if (r->whole[r->wpos++] == '\n')
            r->wline++;
    r->wpos++; /* the '[' */
    return 0;
}

/* The next element of a JSON array file into r->line, on one line (line
 * ends outside strings become spaces), r->lineno the line it starts on.
 * Returns 0, NSED_ENOTFOUND after the last, NSED_EINVAL. */
static int next_element(questions_reader *r, nsed_err *err)
{
    const char *w = r->whole;
    size_t i = r->wpos, start;
    int depth = 0, in_str = 0, rc;

    buf_reset(&r->line);
    for (;; i++) {
        if (i >= r->wlen) {
            r->wbroken = 1;
            return nsed_error_at(err, NSED_EINVAL, r->path, r->wline, 0,
                                 "the JSON array is not closed");
        }
        if (w[i] == '\n')
            r->wline++;
        else if (w[i] == ']') {
            r->lineno = r->wline;
            for (size_t j = i + 1; j < r->wlen; j++) {
                if (w[j] == '\n')
                    r->lineno++;
                else if (w[j] != ' ' && w[j] != '\t' && w[j] != '\r') {
                    r->wbroken = 1;
                    return nsed_error_at(err, NSED_EINVAL, r->path, r->lineno,
                                         0, "text after the JSON array");
                }
            }
            r->wpos = r->wlen;
            return NSED_ENOTFOUND;
        } else if (w[i] == ',' && r->welems) {
            continue;
        } else if (w[i] != ' ' && w[i] != '\t' && w[i] != '\r') {
            break;
        }
    }
    start = i;
    r->lineno = r->wline;
    for (; i < r->wlen; i++) {
        char ch = w[i];

        if (in_str) {
            if (ch == '\\')
                i++;
            else if (ch == '"')
                in_str = 0;
            continue;
        }
        if (ch == '"')
            in_str = 1;
        else if (ch == '{' || ch == '[')
            depth++;
        else if (ch == '}' || ch == ']') {
            if (!depth)
                break;
            depth--;
        } else if (ch == ',' && !depth)
            break;
    }
    for (size_t j = start; j < i && j < r->wlen; j++) {
        char ch = w[j] == '\n' || w[j] == '\r' ? ' ' : w[j];

        if (w[j] == '\n')
            r->wline++;
        rc = buf_add(&r->line, &ch, 1);
        if (rc)
            return nsed_error_at(err, rc, r->path, r->lineno, 0,
                                 rc == NSED_ETOOBIG ? "element longer than "
                                                      "1 MiB"
                                                    : "out of memory");
    }
    r->wpos = i;
    r->welems++;
    return 0;
}

int questions_reader_open(const char *path, unsigned flags,
                          questions_reader **out, nsed_err *err)
{
    return questions_reader_open_with(path, flags, NULL, out, err);
}

int questions_reader_open_with(const char *path, unsigned flags,
                               const questions_opts *opts,
                               questions_reader **out, nsed_err *err)
{
    questions_reader *r;
    int rc;

    r = calloc(1, sizeof *r);
    if (!r)
        return nsed_error(err, NSED_ENOMEM, "%s: out of memory", path);
    r->path = strdup(path);
    if (!r->path) {
        free(r);
        return nsed_error(err, NSED_ENOMEM, "%s: out of memory", path);
    }
    r->f = fopen(path, "rb");
    if (!r->f) {
        int e = errno;

        free(r->path);
        free(r);
        return nsed_error(err, NSED_EIO, "%s: cannot open: %s", path,
                          strerror(e));
    }
    r->flags = flags;
    /* +1: a CR before the LF is not part of the capped length */
    buf_init(&r->line, QUESTIONS_LINE_MAX + 1);
    if (opts && opts->map && opts->map->set)
        r->map = opts->map;
    r->keep_going = opts && opts->on_error;
    if (is_array_file(path, r->f)) {
        rc = slurp_array(r, err);
        if (rc) {
            questions_reader_free(r);
            return rc;
        }
    }
    *out = r;
    return 0;
}

void questions_reader_free(questions_reader *r)
{
    if (!r)
        return;
    if (r->f)
        fclose(r->f);
    buf_release(&r->line);
    idset_release(&r->ids);
    free(r->whole);
    free(r->path);
    free(r);
}

size_t questions_reader_lines(const questions_reader *r)
{
    return r->lineno;
}

/* Next raw line (without its LF) into r->line. Returns 0, NSED_ENOTFOUND
 * at the end, or an error. The line is never held past its cap: an
 * overlong line fails as soon as the cap is passed. */
static int next_line(questions_reader *r, nsed_err *err)
{
    buf_reset(&r->line);
    for (;;) {
        const char *start, *nl;
        size_t seg;
        int rc;

        if (r->cpos == r->clen) {
            size_t got;

            if (r->eof) {
                if (!r->line.len)
                    return NSED_ENOTFOUND;
                r->lineno++; /* a last line without LF */
                return 0;
            }
            got = fread(r->chunk, 1, sizeof r->chunk, r->f);
            if (!got) {
                if (ferror(r->f))
                    return nsed_error(err, NSED_EIO, "%s: read error: %s",
                                      r->path, strerror(errno ? errno : EIO));
                r->eof = 1;
                continue;
            }
            r->cpos = 0;
            r->clen = got;
        }
        start = r->chunk + r->cpos;
        nl = memchr(start, '\n', r->clen - r->cpos);
        seg = nl ? (size_t)(nl - start) : r->clen - r->cpos;
        rc = buf_add(&r->line, start, seg);
        if (rc == NSED_ETOOBIG)
            return nsed_error_at(err, NSED_ETOOBIG, r->path, r->lineno + 1,
                                 0, "line is longer than 1 MiB");
        if (rc)
            return nsed_error_at(err, rc, r->path, r->lineno + 1, 0,
                                 "out of memory");
        r->cpos += seg;
        if (nl) {
            r->cpos++;
            r->lineno++;
            return 0;
        }
    }
}

int questions_reader_next(questions_reader *r, question *q, size_t *lineno,
                          nsed_err *err)
{
    question tmp = {0};
    size_t first;
    int rc;

    if (r->failed)
        return nsed_error(err, NSED_EINVAL, "%s: reader used after an error",
                          r->path);
    for (;;) {
        rc = r->whole ? next_element(r, err) : next_line(r, err);
        if (rc == NSED_ENOTFOUND)
            return rc;
        if (rc)
            goto fail;
        if (r->map)
            rc = questions_parse_mapped(r->path, r->lineno, r->line.ptr,
                                        r->line.len, r->map, &tmp, err);
        else
            rc = questions_parse_line(r->path, r->lineno, r->line.ptr,
                                      r->line.len, &tmp, err);
        if (rc == NSED_ENOTFOUND)
            continue;
        if (rc)
            goto fail;
        break;
    }
    if (r->flags & QUESTIONS_UNIQUE) {
        if (r->nquestions >= QUESTIONS_FILE_MAX) {
            rc = nsed_error_at(err, NSED_ETOOBIG, r->path, r->lineno, 0,
                               "more than %d questions in one file; split "
                               "it",
                               QUESTIONS_FILE_MAX);
            goto fail;
        }
        rc = idset_add(&r->ids, tmp.id, r->lineno, &first);
        if (rc == NSED_EEXIST && first)
            rc = nsed_error_at(err, NSED_EINVAL, r->path, r->lineno, 0,
                               "duplicate id \"%s\" (first at line %zu)",
                               tmp.id, first);
        else if (rc == NSED_EEXIST)
            rc = nsed_error_at(err, NSED_EINVAL, r->path, r->lineno, 0,
                               "duplicate id \"%s\" (first earlier in the "
                               "file, past line %" PRIu32 ")",
                               tmp.id, UINT32_MAX - 1);
        else if (rc)
            rc = nsed_error_at(err, rc, r->path, r->lineno, 0,
                               "out of memory");
        if (rc)
            goto fail;
    }
    r->nquestions++;
    *q = tmp;
    if (lineno)
        *lineno = r->lineno;
    return 0;
fail:
    question_release(&tmp);
    /* a bad line or a duplicate id leaves the reader usable when every
     * error is wanted; a read error, a cap or memory never does */
    if (!(r->keep_going && rc == NSED_EINVAL && !r->wbroken))
        r->failed = rc;
    return rc;
}

int questions_read_file(const char *path,
                        int (*fn)(const question *q, size_t lineno, void *arg),
                        void *arg, nsed_err *err)
{
    questions_reader *r = NULL;
    question q = {0};
    size_t lineno;
    int rc;

    rc = questions_reader_open(path, 0, &r, err);
    if (rc)
        return rc;
    for (;;) {
        rc = questions_reader_next(r, &q, &lineno, err);
        if (rc == NSED_ENOTFOUND) {
            rc = 0;
            break;
        }
        if (rc)
            break;
        rc = fn(&q, lineno, arg);
        question_release(&q);
        if (rc)
            break;
    }
    questions_reader_free(r);
    return rc;
}

int questions_check_file(const char *path, questions_stats *stats,
                         nsed_err *err)
{
    return questions_check_file_with(path, NULL, stats, err);
}

int questions_check_file_with(const char *path, const questions_opts *opts,
                              questions_stats *stats, nsed_err *err)
{
    questions_reader *r = NULL;
    questions_stats st = {0};
    question q = {0};
    size_t bad = 0;
    int rc;

    rc = questions_reader_open_with(path, QUESTIONS_UNIQUE, opts, &r, err);
    if (rc)
        return rc;
    for (;;) {
        nsed_err one = {0};

        rc = questions_reader_next(r, &q, NULL, &one);
        if (rc == NSED_ENOTFOUND) {
            rc = 0;
            break;
        }
        if (rc == NSED_EINVAL && opts && opts->on_error && !r->failed) {
            if (bad < QUESTIONS_ERRORS_SHOWN)
                opts->on_error(one.msg, opts->arg);
            bad++;
            continue;
        }
        if (rc) {
            *err = one;
            goto out;
        }
        st.questions++;
        if (q.answer)
            st.with_answer++;
        question_release(&q);
    }
    if (bad) {
        if (bad > QUESTIONS_ERRORS_SHOWN)
            rc = nsed_error(err, NSED_EINVAL,
                            "%s: %zu bad lines: the first %d are shown above, "
                            "and %zu more",
                            path, bad, QUESTIONS_ERRORS_SHOWN,
                            bad - QUESTIONS_ERRORS_SHOWN);
        else
            rc = nsed_error(err, NSED_EINVAL,
                            "%s: %zu bad line%s (shown "
                            "above)",
                            path, bad, bad == 1 ? "" : "s");
        goto out;
    }
    st.lines = questions_reader_lines(r);
    st.added = st.questions;
    if (stats)
        *stats = st;
out:
    questions_reader_free(r);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Field mappings (other datasets' shapes)                             */

void questions_map_release(questions_map *m)
{
    if (!m)
        return;
    free(m->id);
    free(m->question);
    free(m->answer);
    free(m->choices);
    free(m->tags);
    memset(m, 0, sizeof *m);
}

static const char *const ref_names[] = {
    [QUESTIONS_REF_AUTO] = "auto",
    [QUESTIONS_REF_RAW] = "raw",
    [QUESTIONS_REF_GSM8K] = "gsm8k",
    [QUESTIONS_REF_BOXED] = "boxed",
    [QUESTIONS_REF_CHOICE_INDEX] = "choice_index",
};

const char *questions_ref_name(enum questions_ref r)
{
    switch (r) {
    case QUESTIONS_REF_AUTO:
    case QUESTIONS_REF_RAW:
    case QUESTIONS_REF_GSM8K:
    case QUESTIONS_REF_BOXED:
    case QUESTIONS_REF_CHOICE_INDEX:
        return ref_names[r];
    }
    return "?";
}

int questions_ref_parse(const char *s, enum questions_ref *out)
{
    for (size_t i = 0; i < sizeof ref_names / sizeof ref_names[0]; i++)
        if (strcmp(s, ref_names[i]) == 0) {
            *out = (enum questions_ref)i;
            return 0;
        }
    return NSED_EINVAL;
}

int questions_map_parse(const char *spec, questions_map *out, nsed_err *err)
{
    questions_map m = {0};
    const char *p = spec;
    int rc = 0;

    while (*p) {
        const char *comma = strchr(p, ','), *eq;
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char *key = strndup(p, len), *val;
        char **slot = NULL;

        if (!key) {
            rc = nsed_error(err, NSED_ENOMEM, "out of memory");
            goto out;
        }
        eq = strchr(key, '=');
        if (!eq || eq == key || !eq[1]) {
            rc = nsed_error(err, NSED_EINVAL,
                            "--fields: \"%s\" is not NAME=FIELD", key);
            free(key);
            goto out;
        }
        key[eq - key] = '\0';
        val = key + (eq - key) + 1;
        if (strcmp(key, "id") == 0)
            slot = &m.id;
        else if (strcmp(key, "question") == 0)
            slot = &m.question;
        else if (strcmp(key, "answer") == 0)
            slot = &m.answer;
        else if (strcmp(key, "choices") == 0)
            slot = &m.choices;
        else if (strcmp(key, "tags") == 0)
            slot = &m.tags;
        if (strcmp(key, "reference") == 0) {
            if (questions_ref_parse(val, &m.reference))
                rc = nsed_error(err, NSED_EINVAL,
                                "--fields: reference=%s is not one of auto, "
                                "raw, gsm8k, boxed, choice_index",
                                val);
        } else if (!slot) {
            rc = nsed_error(err, NSED_EINVAL,
                            "--fields: unknown name \"%s\" (the names are "
                            "id, question, answer, choices, tags, "
                            "reference)",
                            key);
        } else if (*slot) {
            rc = nsed_error(err, NSED_EINVAL, "--fields: %s given twice", key);
        } else if (slot == &m.id && strcmp(val, "@line") == 0) {
            m.id_line = 1;
        } else if (!(*slot = strdup(val))) {
            rc = nsed_error(err, NSED_ENOMEM, "out of memory");
        }
        free(key);
        if (rc)
            goto out;
        p += len;
        if (*p == ',')
            p++;
    }
    m.set = 1;
    *out = m;
    memset(&m, 0, sizeof m);
out:
    questions_map_release(&m);
    return rc;
}

/* The content of the last \boxed{...} of s whose braces balance, or NULL
 * (the same rule as the boxed answer extractor, stages/answer.h). */
static char *last_boxed(const char *s)
{
    const char *best = NULL;
    size_t bestlen = 0;

    for (const char *b = strstr(s, "\\boxed{"); b;
         b = strstr(b + 1, "\\boxed{")) {
        const char *c = b + 7;
        int depth = 1;

        for (; *c && depth; c++) {
            if (*c == '{')
                depth++;
            else if (*c == '}')
                depth--;
        }
        if (!depth) {
            best = b + 7;
            bestlen = (size_t)(c - 1 - best);
        }
    }
    return best ? strndup(best, bestlen) : NULL;
}

/* Trimmed copy of s[0..n). */
static char *trimmed(const char *s, size_t n)
{
    while (n && (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')) {
        s++;
        n--;
    }
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n' ||
                 s[n - 1] == '\r'))
        n--;
    return strndup(s, n);
}

/* The text after the last "####" of s, trimmed, with thousands separators
 * (a comma between digits) dropped: "#### 1,234" -> "1234". */
static char *after_hashes(const char *s)
{
    const char *h = NULL, *t;
    char *r;
    size_t o = 0;

    for (t = strstr(s, "####"); t; t = strstr(t + 1, "####"))
        h = t;
    if (!h)
        return NULL;
    h += 4;
    while (*h == '#')
        h++;
    r = trimmed(h, strlen(h));
    if (!r)
        return NULL;
    for (size_t i = 0; r[i]; i++)
        if (!(r[i] == ',' && i && is_digit((unsigned char)r[i - 1]) &&
              is_digit((unsigned char)r[i + 1])))
            r[o++] = r[i];
    r[o] = '\0';
    return r;
}

typedef struct map_ctx {
    const char *file;
    size_t lineno;
    const questions_map *m;
    nsed_err *err;
} map_ctx;

static int map_fail(const map_ctx *c, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int map_fail(const map_ctx *c, const char *field, const char *fmt, ...)
{
    char why[NSED_ERR_MSG_MAX / 2];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    return nsed_error_at(c->err, NSED_EINVAL, c->file, c->lineno, 0,
                         "field \"%s\": %s", field, why);
}

/* The text of a JSON number that is an integer, or NULL. */
static char *integer_text(const cJSON *v)
{
    char tmp[32];
    double d = v->valuedouble;

    if (!cJSON_IsNumber(v) || d != (double)(long long)d || d > 9e15 ||
        d < -9e15)
        return NULL;
    snprintf(tmp, sizeof tmp, "%lld", (long long)d);
    return strdup(tmp);
}

static int map_text(const map_ctx *c, const cJSON *root, const char *field,
                    char **out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, field);

    if (!v)
        return map_fail(c, field, "missing");
    if (!cJSON_IsString(v))
        return map_fail(c, field, "must be a string, got %s", type_phrase(v));
    if (all_space(v->valuestring, strlen(v->valuestring)))
        return map_fail(c, field, "is empty");
    return dup_string(v->valuestring, out);
}

/* Apply the reference extractor to the mapped answer. */
static int map_answer(const map_ctx *c, const cJSON *v, size_t nchoices,
                      char **out)
{
    const char *f = c->m->answer;
    enum questions_ref r = c->m->reference;

    if (!v || cJSON_IsNull(v))
        return 0;
    if (r == QUESTIONS_REF_AUTO) {
        /* the stated rule (docs/questions.md): an integer with choices is
         * an index; a text with "####" is GSM8K; one with \boxed{} MATH */
        if (cJSON_IsNumber(v) && nchoices)
            r = QUESTIONS_REF_CHOICE_INDEX;
        else if (cJSON_IsString(v) && strstr(v->valuestring, "####"))
            r = QUESTIONS_REF_GSM8K;
        else if (cJSON_IsString(v) && strstr(v->valuestring, "\\boxed{"))
            r = QUESTIONS_REF_BOXED;
        else
            r = QUESTIONS_REF_RAW;
    }
    switch (r) {
    case QUESTIONS_REF_AUTO:
    case QUESTIONS_REF_RAW:
        if (cJSON_IsNumber(v)) {
            char *t = cJSON_PrintUnformatted(v);

            if (!t)
                return NSED_ENOMEM;
            *out = t;
            return 0;
        }
        if (!cJSON_IsString(v) || !*v->valuestring)
            return map_fail(c, f,
                            "must be a non-empty string or a number, "
                            "got %s",
                            cJSON_IsString(v) ? "\"\"" : type_phrase(v));
        return dup_string(v->valuestring, out);
    case QUESTIONS_REF_GSM8K:
        if (!cJSON_IsString(v))
            return map_fail(c, f, "must be a string, got %s", type_phrase(v));
        *out = after_hashes(v->valuestring);
        if (!*out)
            return map_fail(c, f,
                            "has no \"#### ANSWER\" (reference: "
                            "gsm8k)");
        if (!**out) {
            free(*out);
            *out = NULL;
            return map_fail(c, f, "nothing after \"####\"");
        }
        return 0;
    case QUESTIONS_REF_BOXED:
        if (!cJSON_IsString(v))
            return map_fail(c, f, "must be a string, got %s", type_phrase(v));
        *out = last_boxed(v->valuestring);
        if (!*out)
            return map_fail(c, f,
                            "has no balanced \\boxed{...} (reference: "
                            "boxed)");
        return 0;
    case QUESTIONS_REF_CHOICE_INDEX: {
        char letter[2] = {0};
        double d;

        if (cJSON_IsString(v) && strlen(v->valuestring) == 1 &&
            v->valuestring[0] >= 'A' && v->valuestring[0] < 'A' + 26)
            return dup_string(v->valuestring, out);
        if (!cJSON_IsNumber(v))
            return map_fail(c, f, "must be a choice index, got %s",
                            type_phrase(v));
        d = v->valuedouble;
        if (d != (double)(long)d || d < 0 || d >= (double)nchoices)
            return map_fail(c, f,
                            "choice index %g is not in 0..%zu (%zu choices)", d,
                            nchoices ? nchoices - 1 : 0, nchoices);
        letter[0] = (char)('A' + (int)d);
        return dup_string(letter, out);
    }
    }
    return NSED_EINTERNAL;
}

/* Parse the JSON object root by the mapping c->m into q. */
static int map_fields(const map_ctx *c, const cJSON *root, question *q)
{
    const questions_map *m = c->m;
    const char *fid = m->id ? m->id : "id";
    const char *fq = m->question ? m->question : "question";
    const cJSON *v, *ch = NULL;
    size_t nchoices = 0;
    buf text;
    char why[160];
    int rc;

    /* id */
    if (m->id_line) {
        char tmp[32];

        snprintf(tmp, sizeof tmp, "%zu", c->lineno);
        rc = dup_string(tmp, &q->id);
        if (rc)
            return rc;
    } else {
        v = cJSON_GetObjectItemCaseSensitive(root, fid);
        if (!v)
            return map_fail(c, fid,
                            "missing (id=@line numbers the lines "
                            "instead)");
        if (cJSON_IsNumber(v)) {
            q->id = integer_text(v);
            if (!q->id)
                return map_fail(c, fid, "must be a string or an integer");
        } else if (!cJSON_IsString(v)) {
            return map_fail(c, fid, "must be a string or an integer, got %s",
                            type_phrase(v));
        } else {
            if (check_label("the id", v->valuestring, why, sizeof why))
                return map_fail(c, fid, "%s", why);
            if (strlen(v->valuestring) > QUESTIONS_ID_MAX)
                return map_fail(c, fid, "longer than %d bytes",
                                QUESTIONS_ID_MAX);
            rc = dup_string(v->valuestring, &q->id);
            if (rc)
                return rc;
        }
    }
    /* choices, rendered into the question as "A. ...", one a line */
    if (m->choices) {
        ch = cJSON_GetObjectItemCaseSensitive(root, m->choices);
        if (!ch)
            return map_fail(c, m->choices, "missing");
        if (!cJSON_IsArray(ch))
            return map_fail(c, m->choices, "must be a list, got %s",
                            type_phrase(ch));
        nchoices = (size_t)cJSON_GetArraySize(ch);
        if (!nchoices || nchoices > 26)
            return map_fail(c, m->choices,
                            "must hold 1 to 26 choices "
                            "(has %zu)",
                            nchoices);
    }
    rc = map_text(c, root, fq, &q->text);
    if (rc)
        return rc;
    if (ch) {
        size_t i = 0;

        buf_init(&text, QUESTIONS_LINE_MAX);
        rc = buf_add(&text, q->text, strlen(q->text));
        if (!rc)
            rc = buf_add(&text, "\n", 1);
        for (const cJSON *e = ch->child; e && !rc; e = e->next, i++) {
            char head[8];
            char *num = NULL;
            const char *ct;

            if (cJSON_IsNumber(e)) {
                num = cJSON_PrintUnformatted(e);
                if (!num) {
                    rc = NSED_ENOMEM;
                    break;
                }
            } else if (!cJSON_IsString(e)) {
                buf_release(&text);
                return map_fail(c, m->choices,
                                "choice %zu must be a string, got %s", i + 1,
                                type_phrase(e));
            }
            ct = num ? num : e->valuestring;
            snprintf(head, sizeof head, "\n%c. ", (char)('A' + i));
            rc = buf_add(&text, head, strlen(head));
            if (!rc)
                rc = buf_add(&text, ct, strlen(ct));
            free(num);
        }
        if (rc) {
            buf_release(&text);
            return rc == NSED_ETOOBIG ? map_fail(c, fq,
                                                 "too long with its "
                                                 "choices")
                                      : rc;
        }
        free(q->text);
        q->text = strdup(text.ptr);
        buf_release(&text);
        if (!q->text)
            return NSED_ENOMEM;
    }
    if (m->answer) {
        rc = map_answer(c, cJSON_GetObjectItemCaseSensitive(root, m->answer),
                        nchoices, &q->answer);
        if (rc)
            return rc;
    } else {
        v = cJSON_GetObjectItemCaseSensitive(root, "answer");
        if (v) {
            questions_map m2 = *m;
            map_ctx c2 = *c;

            m2.answer = (char *)"answer";
            c2.m = &m2;
            rc = map_answer(&c2, v, nchoices, &q->answer);
            if (rc)
                return rc;
        }
    }
    if (m->tags) {
        v = cJSON_GetObjectItemCaseSensitive(root, m->tags);
        if (v && cJSON_IsString(v)) {
            if (check_label("the tag", v->valuestring, why, sizeof why))
                return map_fail(c, m->tags, "%s", why);
            q->tags = calloc(1, sizeof *q->tags);
            if (!q->tags)
                return NSED_ENOMEM;
            rc = dup_string(v->valuestring, &q->tags[0]);
            if (rc)
                return rc;
            q->ntags = 1;
        } else if (v && cJSON_IsArray(v)) {
            size_t nt = (size_t)cJSON_GetArraySize(v), ti = 0;

            if (nt > QUESTIONS_TAGS_MAX)
                return map_fail(c, m->tags, "too many tags (%zu)", nt);
            q->tags = nt ? calloc(nt, sizeof *q->tags) : NULL;
            if (nt && !q->tags)
                return NSED_ENOMEM;
            for (const cJSON *t = v->child; t; t = t->next, ti++) {
                if (!cJSON_IsString(t) ||
                    check_label("a tag", t->valuestring, why, sizeof why))
                    return map_fail(c, m->tags,
                                    "tag %zu must be a "
                                    "non-empty string",
                                    ti + 1);
                rc = dup_string(t->valuestring, &q->tags[ti]);
                if (rc)
                    return rc;
                q->ntags = ti + 1;
            }
        } else if (v && !cJSON_IsNull(v)) {
            return map_fail(c, m->tags,
                            "must be a string or a list of "
                            "strings, got %s",
                            type_phrase(v));
        }
    }
    return 0;
}

int questions_parse_mapped(const char *file, size_t lineno, const char *text,
                           size_t len, const questions_map *m, question *out,
                           nsed_err *err)
{
    map_ctx c = {file, lineno, m, err};
    cJSON *root;
    question q = {0};
    int rc;

    if (len && text[len - 1] == '\r')
        len--;
    if (lineno == 1 && len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0) {
        text += 3;
        len -= 3;
    }
    if (all_space(text, len))
        return NSED_ENOTFOUND;
    for (size_t i = 0; i < len;) {
        size_t k = utf8_seq_len(text + i, len - i);

        if (!k || (k == 1 && text[i] == '\0'))
            return nsed_error_at(err, NSED_EINVAL, file, lineno, i + 1,
                                 "invalid UTF-8 (byte 0x%02x)",
                                 (unsigned char)text[i]);
        i += k;
    }
    root = cJSON_ParseWithLength(text, len);
    if (!root)
        return nsed_error_at(err, NSED_EINVAL, file, lineno, 0, "invalid JSON");
    if (!cJSON_IsObject(root)) {
        rc = nsed_error_at(err, NSED_EINVAL, file, lineno, 0,
                           "expected a JSON object, got %s", type_phrase(root));
        goto out;
    }
    rc = map_fields(&c, root, &q);
    if (rc == NSED_ENOMEM)
        nsed_error(err, rc, "%s:%zu: out of memory", file, lineno);
    if (rc)
        goto out;
    *out = q;
    memset(&q, 0, sizeof q);
out:
    question_release(&q);
    cJSON_Delete(root);
    return rc;
}
