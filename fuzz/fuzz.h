/* fuzz.h -- what the libFuzzer harnesses of fuzz/ share (docs/fuzzing.md).
 *
 * A harness is one fuzz_<target>.c defining LLVMFuzzerTestOneInput: it
 * feeds the input to one parser through its public API (fuzz_gateway.c
 * uses the gateway's private header, as tests/test_gateway.c does), checks
 * the parts of the parser's contract it can check from outside, and frees
 * everything. Harnesses are deterministic (no clock, no randomness of
 * their own), keep no state between inputs and write no files; libFuzzer
 * itself writes the corpus and the crash files where it is told to.
 *
 * A broken contract is reported like a crash: FUZZ_CHECK prints the
 * condition and aborts, and libFuzzer saves the input that did it.
 */
#ifndef NSED_FUZZ_H
#define NSED_FUZZ_H

#include "pipeline/base/err.h"
#include "pipeline/base/utf8.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Abort with file:line and the condition when cond is false. */
#define FUZZ_CHECK(cond) \
    ((cond) ? (void)0 : fuzz_fail(__FILE__, __LINE__, #cond))

static inline void fuzz_fail(const char *file, int line, const char *what)
{
    fprintf(stderr, "%s:%d: contract broken: %s\n", file, line, what);
    abort();
}

/* FUZZ_CHECK for a call that must succeed: its result rc is 0 (or
 * NSED_ENOMEM, which fuzzing may provoke); otherwise the call's error
 * message msg is printed first. */
#define FUZZ_CHECK_OK(rc, msg) \
    ((rc) == 0 || (rc) == NSED_ENOMEM \
         ? (void)0 \
         : fuzz_fail_rc(__FILE__, __LINE__, (rc), (msg)))

static inline void fuzz_fail_rc(const char *file, int line, int rc,
                                const char *msg)
{
    fprintf(stderr, "%s:%d: returned %d, not 0: %s\n", file, line, rc,
            msg && msg[0] ? msg : "(no message)");
    fuzz_fail(file, line, "the call must succeed");
}

/* data[0..size) in a buffer of its own of exactly size bytes, with no NUL
 * after it, so that AddressSanitizer catches a parser that reads past the
 * length it was given. NULL when out of memory (the harness then skips the
 * input). Free with free(). */
static inline char *fuzz_bytes(const uint8_t *data, size_t size)
{
    char *p = malloc(size ? size : 1);

    if (p && size)
        memcpy(p, data, size);
    return p;
}

/* The same with a NUL after the last byte, for parsers of C strings (a NUL
 * inside the input simply ends the string early). Free with free(). */
static inline char *fuzz_cstr(const uint8_t *data, size_t size)
{
    char *p = malloc(size + 1);

    if (!p)
        return NULL;
    if (size)
        memcpy(p, data, size);
    p[size] = '\0';
    return p;
}

/* True when s[0..len) is well-formed UTF-8 (pipeline/base/utf8.h). */
static inline bool fuzz_utf8(const char *s, size_t len)
{
    size_t i = 0, n;

    while (i < len) {
        n = utf8_seq_len(s + i, len - i);
        if (n == 0)
            return false;
        i += n;
    }
    return true;
}

/* True when an error message was filled in: non-empty and terminated
 * inside its buffer. */
static inline bool fuzz_has_msg(const char *msg, size_t cap)
{
    return msg[0] != '\0' && memchr(msg, '\0', cap) != NULL;
}

#endif
