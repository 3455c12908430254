/* fuzz_answer.c -- answer extraction (stages/answer.h): the input is a
 * model's reply, and every extractor reads it (boxed, regex with a fixed
 * pattern, last_number, json_field with a plain and a dotted field,
 * code_block); each answer found is then compared with a fixed reference
 * and with itself, read as a number and normalized, and the answers vote
 * (answer_majority). The reply itself goes through answer_number and
 * answer_normalize too, as a reference would.
 *
 * Checked: an extracted answer is trimmed (no white space at either end;
 * a code block only of its final line ends, as answer.c keeps the code's
 * indentation),
 * an exact or normalized answer is the same as itself, the majority
 * winner is one of the votes and its count within their number. Seeds:
 * proposals captured from nsed-sim and a few replies for each extractor
 * (fuzz/corpus/answer).
 */
#include "fuzz/fuzz.h"
#include "stages/answer.h"

#include <ctype.h>

#define NEXTRACT 6

static workflow_answer extractor(size_t i)
{
    static const char pattern[] = "[Aa]nswer[: ]+([-0-9./]+)";
    workflow_answer a = {.compare = WORKFLOW_COMPARE_EXACT};

    switch (i) {
    case 0:
        a.extract = WORKFLOW_EXTRACT_BOXED;
        a.compare = WORKFLOW_COMPARE_NORMALIZED;
        break;
    case 1:
        a.extract = WORKFLOW_EXTRACT_REGEX;
        a.pattern = (char *)pattern;
        a.compare = WORKFLOW_COMPARE_REGEX;
        break;
    case 2:
        a.extract = WORKFLOW_EXTRACT_LAST_NUMBER;
        a.compare = WORKFLOW_COMPARE_NUMERIC;
        a.tolerance = 1e-6;
        break;
    case 3:
        a.extract = WORKFLOW_EXTRACT_JSON_FIELD;
        a.field = (char *)"answer";
        break;
    case 4:
        a.extract = WORKFLOW_EXTRACT_JSON_FIELD;
        a.field = (char *)"result.value";
        a.compare = WORKFLOW_COMPARE_NUMERIC;
        break;
    default:
        a.extract = WORKFLOW_EXTRACT_CODE_BLOCK;
        break;
    }
    return a;
}

static void check_answer(const workflow_answer *a, const char *ans)
{
    size_t len = strlen(ans);
    double x;
    char *norm;

    /* A code block keeps the code's own indentation (answer.c): only its
     * final line ends go; every other answer is trimmed. */
    if (a->extract == WORKFLOW_EXTRACT_CODE_BLOCK)
        FUZZ_CHECK(len == 0 || (ans[len - 1] != '\n' && ans[len - 1] != '\r'));
    else
        FUZZ_CHECK(len == 0 || (!isspace((unsigned char)ans[0]) &&
                                !isspace((unsigned char)ans[len - 1])));
    (void)answer_matches(a, ans, "42");
    (void)answer_matches(a, ans, "^-?[0-9]+$");
    if (a->compare == WORKFLOW_COMPARE_EXACT ||
        a->compare == WORKFLOW_COMPARE_NORMALIZED)
        FUZZ_CHECK(answer_same(a, ans, ans));
    (void)answer_number(ans, &x);
    norm = answer_normalize(ans);
    free(norm);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_cstr(data, size);
    char *answers[NEXTRACT] = {0};
    workflow_answer a;
    size_t i, winner, votes, n = 0;
    double x;
    int rc;

    if (!text)
        return 0;
    for (i = 0; i < NEXTRACT; i++) {
        a = extractor(i);
        rc = answer_extract(&a, text, &answers[i]);
        FUZZ_CHECK(rc == 0 || rc == NSED_ENOTFOUND || rc == NSED_ENOMEM);
        if (rc != 0) {
            answers[i] = NULL;
            continue;
        }
        check_answer(&a, answers[i]);
        n++;
    }
    a = extractor(2);
    rc = answer_majority(&a, (const char *const *)answers, NEXTRACT, &winner,
                         &votes);
    if (n == 0) {
        FUZZ_CHECK(rc == NSED_ENOTFOUND);
    } else if (rc == 0) {
        FUZZ_CHECK(winner < NEXTRACT && answers[winner] != NULL);
        FUZZ_CHECK(votes >= 1 && votes <= n);
    }
    (void)answer_number(text, &x);
    free(answer_normalize(text));
    for (i = 0; i < NEXTRACT; i++)
        free(answers[i]);
    free(text);
    return 0;
}
