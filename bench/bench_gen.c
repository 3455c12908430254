/* bench_gen.c -- generated question sets for the benchmark. */
#include "bench/bench.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

/* A fixed little generator (splitmix64): the same sets on every machine,
 * so figures from two machines are comparable. */
static uint64_t mix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

int bench_gen_questions(const char *path, size_t n, nsed_err *err)
{
    uint64_t s = 20240611;
    FILE *f = fopen(path, "w");

    if (!f)
        return nsed_error(err, NSED_EIO, "%s: %s", path, strerror(errno));
    for (size_t i = 0; i < n; i++) {
        long long a = (long long)(mix(&s) % 9000) + 100;
        long long b = (long long)(mix(&s) % 900) + 10;
        uint64_t op = mix(&s) % 3, form = mix(&s) % 3;
        char q[256], sym = op == 0 ? '+' : op == 1 ? '-' : '*';
        long long ans = op == 0 ? a + b : op == 1 ? a - b : a * b;

        /* A few phrasings, so prompts are not all the same length. */
        if (form == 0)
            snprintf(q, sizeof q, "What is %lld %c %lld?", a, sym, b);
        else if (form == 1)
            snprintf(q, sizeof q, "Compute %lld %c %lld and give the result "
                     "as an integer.", a, sym, b);
        else
            snprintf(q, sizeof q, "A store had %lld items and the count "
                     "changed by the operation '%c %lld'. Ignoring "
                     "everything else, how many items are there now?", a,
                     sym, b);
        fprintf(f, "{\"id\":\"b%07zu\",\"question\":\"%s\",\"answer\":%lld,"
                   "\"tags\":[\"bench\"]}\n", i + 1, q, ans);
    }
    if (ferror(f) | (fclose(f) != 0))
        return nsed_error(err, NSED_EIO, "%s: write failed", path);
    return 0;
}

int bench_gen_head(const char *src, const char *dst, size_t n, nsed_err *err)
{
    FILE *in = fopen(src, "r"), *out = NULL;
    char line[1024];
    size_t done = 0;
    int rc = 0;

    if (!in)
        return nsed_error(err, NSED_EIO, "%s: %s", src, strerror(errno));
    out = fopen(dst, "w");
    if (!out) {
        rc = nsed_error(err, NSED_EIO, "%s: %s", dst, strerror(errno));
        goto out;
    }
    /* Generated lines are far shorter than the buffer, so one fgets is
     * one line. */
    while (done < n && fgets(line, sizeof line, in)) {
        fputs(line, out);
        done += strchr(line, '\n') != NULL;
    }
    if (done < n)
        rc = nsed_error(err, NSED_EIO, "%s: only %zu lines", src, done);
out:
    fclose(in);
    if (out && (ferror(out) | (fclose(out) != 0)) && !rc)
        rc = nsed_error(err, NSED_EIO, "%s: write failed", dst);
    return rc;
}
