#include "sim_prompt.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define BEGIN_MARK "=====BEGIN "
#define END_MARK "=====END "
#define TAIL_MARK "====="

sim_span sim_span_trim(sim_span s)
{
    while (s.len && isspace((unsigned char)s.ptr[0])) {
        s.ptr++;
        s.len--;
    }
    while (s.len && isspace((unsigned char)s.ptr[s.len - 1]))
        s.len--;
    return s;
}

static int span_eq(sim_span a, sim_span b)
{
    return a.len == b.len && (a.len == 0 || !memcmp(a.ptr, b.ptr, a.len));
}

static int span_starts(sim_span s, const char *prefix)
{
    size_t n = strlen(prefix);

    return s.len >= n && !memcmp(s.ptr, prefix, n);
}

/* Line iteration: *pos is the offset of the next line in text. */
static int next_line(sim_span text, size_t *pos, sim_span *line,
                     size_t *line_start, size_t *after)
{
    const char *nl;
    size_t start = *pos;

    if (start >= text.len)
        return 0;
    nl = memchr(text.ptr + start, '\n', text.len - start);
    *line_start = start;
    line->ptr = text.ptr + start;
    line->len = nl ? (size_t)(nl - line->ptr) : text.len - start;
    *after = nl ? (size_t)(nl - text.ptr) + 1 : text.len;
    *pos = *after;
    return 1;
}

/* If line is a marker line with the given prefix, store the part between
 * the prefix and the closing "=====" in *inner. */
static int marker_inner(sim_span line, const char *prefix, sim_span *inner)
{
    size_t plen = strlen(prefix), tlen = strlen(TAIL_MARK);

    line = sim_span_trim(line);
    if (!span_starts(line, prefix) || line.len < plen + tlen + 1)
        return 0;
    if (memcmp(line.ptr + line.len - tlen, TAIL_MARK, tlen))
        return 0;
    inner->ptr = line.ptr + plen;
    inner->len = line.len - plen - tlen;
    return 1;
}

static const struct {
    const char *name;
    sim_block_kind kind;
} kinds[] = {
    {"QUESTION", SIM_BLOCK_QUESTION},
    {"CANDIDATE", SIM_BLOCK_CANDIDATE},
    {"WINNING SOLUTION", SIM_BLOCK_WINNING},
    {"YOUR PREVIOUS ANSWER", SIM_BLOCK_PREVIOUS},
    {"CRITIQUES", SIM_BLOCK_CRITIQUES},
    {"SCORES", SIM_BLOCK_SCORES},
};

/* Split "KIND[ LABEL][ fence HEX]" into kind and label. */
static sim_block_kind classify(sim_span inner, sim_span *label)
{
    static const char fence[] = " fence ";
    size_t flen = sizeof fence - 1;

    /* A trailing " fence <hex>" is the nonce; it only has to match the END
     * line, which the caller checks on the whole inner text. */
    for (size_t i = inner.len; i-- > 0;) {
        if (inner.ptr[i] != ' ')
            continue;
        if (i + 1 < inner.len && i >= flen - 1 &&
            !memcmp(inner.ptr + i + 1 - flen, fence, flen)) {
            size_t j;

            for (j = i + 1; j < inner.len; j++) {
                if (!isxdigit((unsigned char)inner.ptr[j]))
                    break;
            }
            if (j == inner.len)
                inner.len = i + 1 - flen;
        }
        break;
    }
    label->ptr = inner.ptr + inner.len;
    label->len = 0;
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        size_t n = strlen(kinds[k].name);

        if (inner.len < n || memcmp(inner.ptr, kinds[k].name, n))
            continue;
        if (inner.len == n)
            return kinds[k].kind;
        if (inner.ptr[n] == ' ') {
            label->ptr = inner.ptr + n + 1;
            label->len = inner.len - n - 1;
            return kinds[k].kind;
        }
    }
    return SIM_BLOCK_OTHER;
}

typedef struct found {
    int question, winner, previous, candidates, round;
} found;

int sim_round_line(sim_span line, long *round)
{
    static const char word[] = "Round ";
    size_t n = sizeof word - 1, i;
    long v = 0;

    line = sim_span_trim(line);
    if (line.len && line.ptr[line.len - 1] == '.')
        line.len--;
    if (line.len <= n || line.len > n + 9 || memcmp(line.ptr, word, n))
        return 0;
    for (i = n; i < line.len; i++) {
        if (!isdigit((unsigned char)line.ptr[i]))
            return 0;
        v = v * 10 + (line.ptr[i] - '0');
    }
    *round = v;
    return 1;
}

typedef struct marker {
    int begin;         /* BEGIN line (else END line) */
    sim_span inner;    /* text between the marker prefix and "=====" */
    size_t start;      /* offset of the line */
    size_t after;      /* offset just past the line and its newline */
} marker;

/* Scan one segment, filling the kinds not yet supplied by an earlier one.
 * One pass collects the marker lines (rare in real prompts), then each
 * BEGIN is paired with the next END of identical text, so the cost is
 * linear in the text plus quadratic only in the capped marker count. */
static void scan_segment(sim_span text, sim_prompt *p, const found *before,
                         found *now)
{
    marker m[SIM_PROMPT_MAX_MARKERS];
    /* the blocks taken, as [start, after) offsets, for the round line */
    size_t taken[SIM_PROMPT_MAX_MARKERS / 2][2], ntaken = 0;
    size_t n = 0, pos = 0, ls, after, resume = 0;
    sim_span line, inner;

    while (n < SIM_PROMPT_MAX_MARKERS &&
           next_line(text, &pos, &line, &ls, &after)) {
        int begin = marker_inner(line, BEGIN_MARK, &inner);

        if (begin || marker_inner(line, END_MARK, &inner)) {
            m[n].begin = begin;
            m[n].inner = inner;
            m[n].start = ls;
            m[n].after = after;
            n++;
        }
    }
    for (size_t k = 0; k < n; k++) {
        sim_span label, body;
        sim_block_kind kind;
        size_t j;

        /* Markers inside a block already taken are block content. */
        if (!m[k].begin || m[k].start < resume)
            continue;
        for (j = k + 1; j < n; j++) {
            if (!m[j].begin && span_eq(m[k].inner, m[j].inner))
                break;
        }
        if (j == n)
            continue;
        body.ptr = text.ptr + m[k].after;
        body.len = m[j].start - m[k].after;
        resume = m[j].after;
        if (ntaken < SIM_PROMPT_MAX_MARKERS / 2) {
            taken[ntaken][0] = m[k].start;
            taken[ntaken++][1] = m[j].after;
        }
        inner = m[k].inner;
        kind = classify(inner, &label);
        switch (kind) {
        case SIM_BLOCK_QUESTION:
            if (!before->question && !p->has_question) {
                p->has_question = 1;
                p->question = sim_span_trim(body);
                now->question = 1;
            }
            break;
        case SIM_BLOCK_WINNING:
            if (!before->winner && !p->has_winner) {
                p->has_winner = 1;
                p->winner = body;
                now->winner = 1;
            }
            break;
        case SIM_BLOCK_PREVIOUS:
            if (!before->previous && !p->has_previous) {
                p->has_previous = 1;
                p->previous = body;
                now->previous = 1;
            }
            break;
        case SIM_BLOCK_CANDIDATE: {
            int dup = 0;

            if (before->candidates || label.len == 0 ||
                label.len > SIM_LABEL_MAX ||
                p->ncandidates >= SIM_PROMPT_MAX_CANDIDATES)
                break;
            for (size_t i = 0; i < p->ncandidates; i++) {
                if (strlen(p->candidates[i].label) == label.len &&
                    !memcmp(p->candidates[i].label, label.ptr, label.len))
                    dup = 1;
            }
            if (dup)
                break;
            memcpy(p->candidates[p->ncandidates].label, label.ptr, label.len);
            p->candidates[p->ncandidates].label[label.len] = '\0';
            p->candidates[p->ncandidates].body = body;
            p->ncandidates++;
            now->candidates = 1;
            break;
        }
        case SIM_BLOCK_CRITIQUES:
        case SIM_BLOCK_SCORES:
        case SIM_BLOCK_OTHER:
            break;
        }
    }
    if (before->round || p->has_round)
        return;
    pos = 0;
    while (next_line(text, &pos, &line, &ls, &after)) {
        int inside = 0;
        long r;

        for (size_t t = 0; t < ntaken && !inside; t++)
            inside = ls >= taken[t][0] && ls < taken[t][1];
        if (!inside && sim_round_line(line, &r)) {
            p->has_round = 1;
            p->round = r;
            now->round = 1;
            return;
        }
    }
}

void sim_prompt_parse(const sim_span *segments, size_t nsegments,
                      sim_prompt *out)
{
    found have = {0};

    memset(out, 0, sizeof *out);
    for (size_t i = 0; i < nsegments; i++) {
        found now = {0};

        scan_segment(segments[i], out, &have, &now);
        have.question |= now.question;
        have.winner |= now.winner;
        have.previous |= now.previous;
        have.candidates |= now.candidates;
        have.round |= now.round;
    }
}

int sim_boxed_last(sim_span text, sim_span *out)
{
    static const char mark[] = "\\boxed{";
    size_t mlen = sizeof mark - 1;

    if (text.len < mlen)
        return 0;
    for (size_t i = text.len - mlen + 1; i-- > 0;) {
        size_t depth = 1, j;

        if (memcmp(text.ptr + i, mark, mlen))
            continue;
        for (j = i + mlen; j < text.len; j++) {
            if (text.ptr[j] == '{')
                depth++;
            else if (text.ptr[j] == '}' && --depth == 0)
                break;
        }
        if (depth == 0) {
            sim_span s = {text.ptr + i + mlen, j - i - mlen};

            *out = sim_span_trim(s);
            return 1;
        }
    }
    return 0;
}

int sim_final_answer(sim_span text, sim_span *out)
{
    sim_span t = sim_span_trim(text);

    if (t.len == 4 && !memcmp(t.ptr, "SKIP", 4)) {
        *out = t;
        return 1;
    }
    return sim_boxed_last(text, out);
}

#define NUM_MAX 128

/* Copy s without white space and '$' into dst (NUL-terminated); 0 when it
 * does not fit. */
static int squeeze(sim_span s, char dst[NUM_MAX])
{
    size_t n = 0;

    for (size_t i = 0; i < s.len; i++) {
        char c = s.ptr[i];

        if (isspace((unsigned char)c) || c == '$')
            continue;
        if (n + 1 >= NUM_MAX)
            return 0;
        dst[n++] = c;
    }
    dst[n] = '\0';
    return 1;
}

/* A plain decimal number occupying all of s[0..len). */
static int plain_number(const char *s, size_t len, double *out)
{
    char tmp[NUM_MAX], *end;
    double d;

    if (len == 0 || len >= NUM_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        if (!strchr("0123456789+-.eE", s[i]))
            return 0;
    }
    memcpy(tmp, s, len);
    tmp[len] = '\0';
    errno = 0;
    d = strtod(tmp, &end);
    if (end != tmp + len || errno == ERANGE || !isfinite(d))
        return 0;
    *out = d;
    return 1;
}

/* "{...}" at s: store the inside and return the length consumed, or 0. */
static size_t brace_group(const char *s, sim_span *inside)
{
    const char *close;

    if (*s != '{')
        return 0;
    close = strchr(s, '}');
    if (!close)
        return 0;
    inside->ptr = s + 1;
    inside->len = (size_t)(close - s - 1);
    return (size_t)(close - s) + 1;
}

int sim_answer_number(sim_span a, double *out)
{
    char s[NUM_MAX];
    const char *p = s, *slash;
    double sign = 1, num, den;
    size_t n;

    if (!squeeze(a, s))
        return 0;
    if (plain_number(s, strlen(s), out))
        return 1;
    slash = strchr(s, '/');
    if (slash && plain_number(s, (size_t)(slash - s), &num) &&
        plain_number(slash + 1, strlen(slash + 1), &den) && den != 0) {
        *out = num / den;
        return 1;
    }
    if (*p == '-') {
        sign = -1;
        p++;
    }
    if (!strncmp(p, "\\frac", 5))
        p += 5;
    else if (!strncmp(p, "\\dfrac", 6) || !strncmp(p, "\\tfrac", 6))
        p += 6;
    else
        return 0;
    {
        sim_span top, bottom;

        n = brace_group(p, &top);
        if (!n)
            return 0;
        p += n;
        n = brace_group(p, &bottom);
        if (!n || p[n] != '\0')
            return 0;
        if (!plain_number(top.ptr, top.len, &num) ||
            !plain_number(bottom.ptr, bottom.len, &den) || den == 0)
            return 0;
    }
    *out = sign * num / den;
    return 1;
}

int sim_answer_equal(sim_span a, sim_span b)
{
    char x[NUM_MAX], y[NUM_MAX];
    double da, db, scale;

    if (sim_answer_number(a, &da) && sim_answer_number(b, &db)) {
        scale = fmax(1.0, fmax(fabs(da), fabs(db)));
        return fabs(da - db) <= 1e-9 * scale;
    }
    if (!squeeze(a, x) || !squeeze(b, y)) {
        /* Too long for the scratch buffers: compare trimmed bytes. */
        return span_eq(sim_span_trim(a), sim_span_trim(b));
    }
    return strcasecmp(x, y) == 0;
}
