/* fuzz_questions.c -- the question parser (pipeline/questions): the input
 * is a question file, cut at '\n' into lines that questions_parse_line
 * reads one by one with their line numbers (line 1 may start with a byte
 * order mark), as questions_read_file does; the whole input is also read
 * as a stored question record (questions_parse_record), the other text
 * that parser takes from outside.
 *
 * Checked: a parsed question has an id and a text; it survives the store's
 * round trip (questions_record_json, then questions_parse_record gives the
 * same question and sequence number); a blank line leaves the error
 * untouched; an error names the file and line. Seeds: tests/data/questions
 * (good and bad), tests/data/sim/questions.jsonl and the demo's questions.
 */
#include "fuzz/fuzz.h"
#include "pipeline/questions/questions.h"

static void one_line(const char *line, size_t len, size_t lineno)
{
    question q = {0}, back = {0};
    nsed_err err = {0};
    char *json = NULL;
    char prefix[64];
    size_t jlen = 0;
    uint64_t seq = 0;
    int rc;

    rc = questions_parse_line("fuzz.jsonl", lineno, line, len, &q, &err);
    if (rc == NSED_ENOTFOUND) {
        FUZZ_CHECK(err.msg[0] == '\0');
        return;
    }
    if (rc != 0) {
        FUZZ_CHECK(rc == NSED_EINVAL || rc == NSED_ETOOBIG ||
                   rc == NSED_ENOMEM);
        if (rc != NSED_ENOMEM) {
            snprintf(prefix, sizeof prefix, "fuzz.jsonl:%zu", lineno);
            FUZZ_CHECK(fuzz_has_msg(err.msg, sizeof err.msg));
            FUZZ_CHECK(strncmp(err.msg, prefix, strlen(prefix)) == 0);
        }
        return;
    }
    FUZZ_CHECK(q.id && q.id[0] && q.text && q.text[0]);
    FUZZ_CHECK(strlen(q.id) <= QUESTIONS_ID_MAX);
    FUZZ_CHECK(q.ntags <= QUESTIONS_TAGS_MAX);
    rc = questions_record_json(&q, (uint64_t)lineno, &json, &jlen);
    FUZZ_CHECK(rc == 0 || rc == NSED_ENOMEM);
    if (rc == 0) {
        rc = questions_parse_record(json, jlen, &back, &seq, &err);
        FUZZ_CHECK_OK(rc, err.msg);
        if (rc == 0) {
            FUZZ_CHECK(seq == (uint64_t)lineno);
            FUZZ_CHECK(question_diff(&q, &back) == NULL);
        }
    }
    free(json);
    question_release(&back);
    question_release(&q);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_bytes(data, size);
    question q = {0};
    nsed_err err = {0};
    size_t start = 0, end, lineno = 0;
    char *line;
    int rc;

    if (!text)
        return 0;
    for (;;) {
        const char *nl = memchr(text + start, '\n', size - start);

        end = nl ? (size_t)(nl - text) : size;
        /* a line in a buffer of its own, so a read past it is caught */
        line = fuzz_bytes(data + start, end - start);
        if (!line)
            break;
        one_line(line, end - start, ++lineno);
        free(line);
        if (!nl)
            break;
        start = end + 1;
    }
    rc = questions_parse_record(text, size, &q, NULL, &err);
    if (rc != 0)
        FUZZ_CHECK(rc == NSED_ENOMEM || fuzz_has_msg(err.msg, sizeof err.msg));
    question_release(&q);
    free(text);
    return 0;
}
