#include "stages/text.h"

#include "pipeline/base/err.h"
#include "pipeline/base/utf8.h"

#include <assert.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#define REPLACEMENT "\xef\xbf\xbd" /* U+FFFD */

int text_add_capped(buf *out, const char *s, size_t len, size_t cap)
{
    static const char tail[] = "\n" TEXT_TRUNCATED;
    size_t keep;
    int rc;

    assert(cap >= 64);
    if (len <= cap)
        return buf_add(out, s, len);
    keep = utf8_floor(s, cap - (sizeof tail - 1));
    rc = buf_add(out, s, keep);
    if (!rc)
        rc = buf_adds(out, tail);
    return rc;
}

int text_clean(const char *s, size_t len, size_t cap, char **out)
{
    buf clean, capped;
    int rc = 0;

    /* Cleaning at most grows a byte to three; the cap below bounds the
     * result, the first buffer only needs room for what is kept. */
    buf_init(&clean, (size_t)-1 / 4);
    buf_init(&capped, cap);
    for (size_t i = 0; i < len && !rc && clean.len <= cap;) {
        /* NUL counts as malformed: stored text must survive C string
         * handling */
        size_t n = s[i] ? utf8_seq_len(s + i, len - i) : 0;

        if (n) {
            rc = buf_add(&clean, s + i, n);
            i += n;
        } else {
            rc = buf_adds(&clean, REPLACEMENT);
            i++;
        }
    }
    if (!rc && clean.len)
        rc = text_add_capped(&capped, clean.ptr, clean.len, cap);
    if (!rc) {
        *out = buf_detach(&capped, NULL);
        if (!*out)
            rc = NSED_ENOMEM;
    }
    buf_release(&clean);
    buf_release(&capped);
    return rc;
}

int text_add_neutralized(buf *out, const char *s, size_t len)
{
    size_t i = 0;
    int rc = 0;

    while (i < len && !rc) {
        const char *nl = memchr(s + i, '\n', len - i);
        size_t end = nl ? (size_t)(nl - s) + 1 : len, j = i;

        while (j < end && (s[j] == ' ' || s[j] == '\t' || s[j] == '\r' ||
                           s[j] == '\f' || s[j] == '\v'))
            j++;
        if (end - j >= 5 && !memcmp(s + j, "=====", 5))
            rc = buf_adds(out, TEXT_NEUTRAL_PREFIX);
        if (!rc)
            rc = buf_add(out, s + i, end - i);
        i = end;
    }
    return rc;
}

static int add_marker(buf *out, const char *which, const char *kind,
                      const char *label, const char *fence)
{
    return buf_printf(out, "=====%s %s%s%s fence %s=====", which, kind,
                      label ? " " : "", label ? label : "", fence);
}

int text_add_block(buf *out, const char *kind, const char *label,
                   const char *fence, const char *body, size_t len)
{
    int rc = add_marker(out, "BEGIN", kind, label, fence);

    if (!rc)
        rc = buf_addc(out, '\n');
    if (!rc)
        rc = text_add_neutralized(out, body, len);
    if (!rc && (len == 0 || body[len - 1] != '\n'))
        rc = buf_addc(out, '\n');
    if (!rc)
        rc = add_marker(out, "END", kind, label, fence);
    return rc;
}

void text_label(size_t i, char out[TEXT_LABEL_MAX])
{
    char tmp[TEXT_LABEL_MAX];
    size_t n = 0;

    /* Bijective base 26: A..Z, then AA..ZZ, then AAA... */
    i++;
    while (i > 0 && n < TEXT_LABEL_MAX - 1) {
        i--;
        tmp[n++] = (char)('A' + i % 26);
        i /= 26;
    }
    for (size_t k = 0; k < n; k++)
        out[k] = tmp[n - 1 - k];
    out[n] = '\0';
}

int text_label_index(const char *s, size_t len, size_t *index)
{
    size_t v = 0;

    if (len == 0 || len >= TEXT_LABEL_MAX)
        return NSED_EINVAL;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < 'A' || s[i] > 'Z')
            return NSED_EINVAL;
        v = v * 26 + (size_t)(s[i] - 'A' + 1);
    }
    *index = v - 1;
    return 0;
}

void text_trim(const char **s, size_t *len)
{
    while (*len && isspace((unsigned char)(*s)[0])) {
        (*s)++;
        (*len)--;
    }
    while (*len && isspace((unsigned char)(*s)[*len - 1]))
        (*len)--;
}

bool text_is_word(char c)
{
    return isalnum((unsigned char)c) || c == '_';
}

bool text_eq_ci(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (tolower((unsigned char)a[i]) != tolower((unsigned char)b[i]))
            return false;
    }
    return true;
}
