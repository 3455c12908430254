/* jsonw.c -- JSON text writer (see jsonw.h for the contract). */
#include "pipeline/base/jsonw.h"

#include <assert.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void jsonw_init(jsonw *w, size_t cap, unsigned flags)
{
    *w = (jsonw){.flags = flags};
    buf_init(&w->b, cap);
}

static void put(jsonw *w, const char *s, size_t n)
{
    if (!w->rc)
        w->rc = buf_add(&w->b, s, n);
}

static void newline(jsonw *w)
{
    if (!(w->flags & JSONW_INDENT))
        return;
    put(w, "\n", 1);
    for (int i = 0; i < w->depth; i++)
        put(w, "  ", 2);
}

/* Before a key or a value: the comma and line break that separate it from
 * the previous item, unless it is the value of the key just written. */
static void sep(jsonw *w)
{
    if (w->after_key) {
        w->after_key = false;
        return;
    }
    if (w->depth > 0) {
        if (!w->first)
            put(w, ",", 1);
        newline(w);
    }
    w->first = false;
}

static void begin(jsonw *w, char c)
{
    sep(w);
    put(w, &c, 1);
    w->depth++;
    w->first = true;
}

static void end(jsonw *w, char c)
{
    assert(w->depth > 0 && !w->after_key);
    w->depth--;
    if (!w->first)
        newline(w);
    put(w, &c, 1);
    w->first = false;
}

void jsonw_object_begin(jsonw *w)
{
    begin(w, '{');
}

void jsonw_object_end(jsonw *w)
{
    end(w, '}');
}

void jsonw_array_begin(jsonw *w)
{
    begin(w, '[');
}

void jsonw_array_end(jsonw *w)
{
    end(w, ']');
}

/* Copy runs of plain bytes at once: strings are most of a checkpoint. */
static void quoted(jsonw *w, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    bool short_bf = w->flags & JSONW_CJSON;
    const char *run = s;

    put(w, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[6] = {'\\', 0, '0', '0', 0, 0};
        size_t n = 2;

        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        put(w, run, (size_t)(s - run));
        run = s + 1;
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        case '\b': esc[1] = short_bf ? 'b' : 0; break;
        case '\f': esc[1] = short_bf ? 'f' : 0; break;
        default: break;
        }
        if (!esc[1]) {
            esc[1] = 'u';
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            n = 6;
        }
        put(w, esc, n);
    }
    put(w, run, (size_t)(s - run));
    put(w, "\"", 1);
}

void jsonw_key(jsonw *w, const char *key)
{
    sep(w);
    quoted(w, key);
    if (w->flags & JSONW_INDENT)
        put(w, ": ", 2);
    else
        put(w, ":", 1);
    w->after_key = true;
}

void jsonw_str(jsonw *w, const char *s)
{
    sep(w);
    if (s)
        quoted(w, s);
    else
        put(w, "null", 4);
}

void jsonw_null(jsonw *w)
{
    sep(w);
    put(w, "null", 4);
}

void jsonw_bool(jsonw *w, bool v)
{
    sep(w);
    put(w, v ? "true" : "false", v ? 4 : 5);
}

/* Decimal digits by hand: most numbers written are counts, and snprintf
 * was the writer's hot spot. */
static void digits(jsonw *w, unsigned long long u, bool negative)
{
    char tmp[24], *p = tmp + sizeof tmp;

    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (negative)
        *--p = '-';
    put(w, p, (size_t)(tmp + sizeof tmp - p));
}

void jsonw_int(jsonw *w, long long v)
{
    sep(w);
    digits(w, v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v,
           v < 0);
}

void jsonw_uint(jsonw *w, unsigned long long v)
{
    sep(w);
    digits(w, v, false);
}

/* The fewest significant digits (%g) that read back to exactly v, into
 * t (at least 32 bytes); v is finite. For a normal double a form of 15 or
 * fewer digits exists only if %.15g is one (distinct 15-digit decimals
 * are distinct doubles, DBL_DIG), so three tries find it; a subnormal has
 * fewer bits, so it searches from one digit up (5e-324, not
 * 4.94065645841247e-324). */
static size_t shortest(double v, char *t, size_t size)
{
    int n = 0;

    if (v != 0 && fabs(v) < DBL_MIN) {
        for (int prec = 1; prec <= 17; prec++) {
            n = snprintf(t, size, "%.*g", prec, v);
            if (strtod(t, NULL) == v)
                break;
        }
        return (size_t)n;
    }
    for (int prec = 15; prec <= 17; prec++) {
        n = snprintf(t, size, "%.*g", prec, v);
        if (strtod(t, NULL) == v)
            break;
    }
    return (size_t)n;
}

/* Integers in int's range as cJSON prints them; anything else (-0
 * included, which stays "-0" so a checkpoint keeps its sign) in the
 * shortest form that reads back to the same double: cJSON's own 15-digit
 * "close enough" print rounded 0.1 + 0.2 to 0.3, and a resumed run then
 * differed from an uninterrupted one. */
static void num_cjson(jsonw *w, double d)
{
    char tmp[32];

    if (d >= (double)INT_MIN && d <= (double)INT_MAX && d == (int)d &&
        !(d == 0 && signbit(d))) {
        int v = (int)d;

        digits(w, v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v,
               v < 0);
        return;
    }
    put(w, tmp, shortest(d, tmp, sizeof tmp));
}

/* Integral values print as integers; others with the fewest digits that
 * read back to the same double, so 0.7 stays "0.7" on every machine. */
static void num_shortest(jsonw *w, double v)
{
    char t[40];

    if (v == 0)
        v = 0; /* -0 and 0 are one value */
    if (v == floor(v) && fabs(v) < 1e15) {
        snprintf(t, sizeof t, "%.0f", v);
        put(w, t, strlen(t));
        return;
    }
    put(w, t, shortest(v, t, sizeof t));
}

void jsonw_num(jsonw *w, double v)
{
    sep(w);
    if (isnan(v) || isinf(v))
        put(w, "null", 4);
    else if (w->flags & JSONW_CJSON)
        num_cjson(w, v);
    else
        num_shortest(w, v);
}

void jsonw_raw(jsonw *w, const char *json)
{
    sep(w);
    put(w, json, strlen(json));
}

int jsonw_error(const jsonw *w)
{
    return w->rc;
}

int jsonw_finish(jsonw *w, char **out, size_t *len)
{
    int rc = w->rc;
    char *s = NULL;
    size_t n = 0;

    if (!rc) {
        s = buf_detach(&w->b, &n);
        if (!s)
            rc = NSED_ENOMEM;
    }
    jsonw_release(w);
    if (rc)
        return rc;
    *out = s;
    if (len)
        *len = n;
    return 0;
}

void jsonw_release(jsonw *w)
{
    buf_release(&w->b);
    w->depth = 0;
    w->first = false;
    w->after_key = false;
    w->rc = 0;
}

void jsonw_key_str(jsonw *w, const char *key, const char *s)
{
    jsonw_key(w, key);
    jsonw_str(w, s);
}

void jsonw_key_bool(jsonw *w, const char *key, bool v)
{
    jsonw_key(w, key);
    jsonw_bool(w, v);
}

void jsonw_key_int(jsonw *w, const char *key, long long v)
{
    jsonw_key(w, key);
    jsonw_int(w, v);
}

void jsonw_key_uint(jsonw *w, const char *key, unsigned long long v)
{
    jsonw_key(w, key);
    jsonw_uint(w, v);
}

void jsonw_key_num(jsonw *w, const char *key, double v)
{
    jsonw_key(w, key);
    jsonw_num(w, v);
}
