/* fuzz_state.c -- the checkpoint reader (stages/state.h): the input is a
 * question state as the store keeps it, read by state_from_json, and the
 * same bytes as one archived round of a team of three
 * (state_round_from_json), the two records the runner reads back on
 * resume.
 *
 * Checked: whatever the reader accepts, the writer writes, and the text
 * it writes reads back and prints to the identical text (the round trip
 * state.h promises); a refusal is one of the documented codes with a
 * message. Seeds: checkpoints and rounds of an interrupted and a finished
 * demo run (fuzz/corpus/state).
 */
#include "fuzz/fuzz.h"
#include "stages/state.h"

#define FUZZ_ROUND_SEATS 3

static void check_refusal(int rc, const nsed_err *err)
{
    FUZZ_CHECK(rc == NSED_EINVAL || rc == NSED_ESCHEMA || rc == NSED_ETOOBIG ||
               rc == NSED_ENOMEM);
    FUZZ_CHECK(rc == NSED_ENOMEM || fuzz_has_msg(err->msg, sizeof err->msg));
}

static void check_state(const char *json, size_t len)
{
    state *st = NULL, *back = NULL;
    char *text = NULL, *again = NULL;
    nsed_err err = {0};
    int rc;

    rc = state_from_json(json, len, NULL, &st, &err);
    if (rc != 0) {
        FUZZ_CHECK(st == NULL);
        check_refusal(rc, &err);
        return;
    }
    rc = state_to_json(st, &text);
    FUZZ_CHECK(rc == 0 || rc == NSED_ENOMEM);
    if (rc != 0)
        goto out;
    rc = state_from_json(text, strlen(text), NULL, &back, &err);
    FUZZ_CHECK_OK(rc, err.msg);
    if (rc != 0)
        goto out;
    rc = state_to_json(back, &again);
    FUZZ_CHECK(rc == 0 || rc == NSED_ENOMEM);
    if (rc == 0)
        FUZZ_CHECK(strcmp(text, again) == 0);
out:
    free(again);
    free(text);
    state_free(back);
    state_free(st);
}

static void check_round(const char *json, size_t len)
{
    state_round *r = NULL, *back = NULL;
    char *text = NULL, *again = NULL;
    nsed_err err = {0};
    int rc;

    rc = state_round_from_json(json, len, FUZZ_ROUND_SEATS, &r, &err);
    if (rc != 0) {
        FUZZ_CHECK(r == NULL);
        check_refusal(rc, &err);
        return;
    }
    rc = state_round_to_json(r, FUZZ_ROUND_SEATS, &text);
    FUZZ_CHECK(rc == 0 || rc == NSED_ENOMEM);
    if (rc != 0)
        goto out;
    rc = state_round_from_json(text, strlen(text), FUZZ_ROUND_SEATS, &back,
                               &err);
    FUZZ_CHECK_OK(rc, err.msg);
    if (rc != 0)
        goto out;
    rc = state_round_to_json(back, FUZZ_ROUND_SEATS, &again);
    FUZZ_CHECK(rc == 0 || rc == NSED_ENOMEM);
    if (rc == 0)
        FUZZ_CHECK(strcmp(text, again) == 0);
out:
    free(again);
    free(text);
    state_round_free(back, FUZZ_ROUND_SEATS);
    state_round_free(r, FUZZ_ROUND_SEATS);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *json = fuzz_bytes(data, size);

    if (!json)
        return 0;
    check_state(json, size);
    check_round(json, size);
    free(json);
    return 0;
}
