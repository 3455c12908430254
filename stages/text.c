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

/* Bytes of the line break at s[0..n), or 0: LF, CR LF, a CR alone, VT,
 * FF, the separators U+001C..U+001E, NEL (U+0085), and U+2028 and U+2029;
 * the breaks Unicode (UAX #14, mandatory breaks) and most text readers
 * honour, so a reader cannot see a line start where we see none. */
static size_t break_len(const unsigned char *s, size_t n)
{
    if (s[0] == '\n' || s[0] == '\v' || s[0] == '\f' ||
        (s[0] >= 0x1c && s[0] <= 0x1e))
        return 1;
    if (s[0] == '\r')
        return n >= 2 && s[1] == '\n' ? 2 : 1;
    if (n >= 2 && s[0] == 0xc2 && s[1] == 0x85)
        return 2;
    if (n >= 3 && s[0] == 0xe2 && s[1] == 0x80 &&
        (s[2] == 0xa8 || s[2] == 0xa9))
        return 3;
    return 0;
}

/* Bytes of the blank at s[0..n), or 0: space, tab, and the code points a
 * reader does not see or sees as space before a marker -- the Unicode
 * space separators (U+00A0, U+1680, U+2000..U+200A, U+202F, U+205F,
 * U+3000) and the invisible format characters (U+00AD, U+034F, U+061C,
 * U+180E, U+200B..U+200F, U+202A..U+202E, U+2060..U+2064,
 * U+2066..U+206F, U+FE00..U+FE0F, U+FEFF). */
static size_t blank_len(const unsigned char *s, size_t n)
{
    if (s[0] == ' ' || s[0] == '\t')
        return 1;
    if (n >= 2 &&
        ((s[0] == 0xc2 && (s[1] == 0xa0 || s[1] == 0xad)) ||
         (s[0] == 0xcd && s[1] == 0x8f) || (s[0] == 0xd8 && s[1] == 0x9c)))
        return 2;
    if (n < 3)
        return 0;
    if ((s[0] == 0xe1 && s[1] == 0x9a && s[2] == 0x80) ||
        (s[0] == 0xe1 && s[1] == 0xa0 && s[2] == 0x8e) ||
        (s[0] == 0xe3 && s[1] == 0x80 && s[2] == 0x80) ||
        (s[0] == 0xef && s[1] == 0xbb && s[2] == 0xbf) ||
        (s[0] == 0xef && s[1] == 0xb8 && s[2] >= 0x80 && s[2] <= 0x8f))
        return 3;
    if (s[0] == 0xe2 && s[1] == 0x80 &&
        ((s[2] >= 0x80 && s[2] <= 0x8f) || (s[2] >= 0xaa && s[2] <= 0xaf)))
        return 3;
    if (s[0] == 0xe2 && s[1] == 0x81 &&
        (s[2] == 0x9f || (s[2] >= 0xa0 && s[2] <= 0xa4) ||
         (s[2] >= 0xa6 && s[2] <= 0xaf)))
        return 3;
    return 0;
}

int text_add_neutralized(buf *out, const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    int rc = 0;

    while (i < len && !rc) {
        size_t j = i, end = i, b = 0;

        while (j < len) {
            size_t k = blank_len(u + j, len - j);

            if (!k)
                break;
            j += k;
        }
        if (len - j >= 5 && !memcmp(s + j, "=====", 5))
            rc = buf_adds(out, TEXT_NEUTRAL_PREFIX);
        while (end < len && !(b = break_len(u + end, len - end)))
            end++;
        end += b;
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
