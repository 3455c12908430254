/* fuzz_gateway.c -- the gateway's reply parser (pipeline/gateway,
 * gateway_int.h): the input is the body of an HTTP reply, read as a
 * chat-completion reply (gw_parse_reply) and as an error body
 * (gw_server_message); gw_redact then runs on the text. The private
 * header is included as tests/test_gateway.c does (tools/check-layers
 * allows fuzz/fuzz_<room>.c the private header of its room).
 *
 * Checked: a parsed reply has content and token counts that are not
 * negative; an unusable one says why; the server message is valid UTF-8
 * without control characters and without white space at either end,
 * within its buffer; after gw_redact the secret does not occur. Seeds:
 * replies captured from nsed-sim (fuzz/corpus/gateway).
 */
#include "fuzz/fuzz.h"
#include "pipeline/gateway/gateway_int.h"

#define FUZZ_SECRET "sk-fuzz-0123"

static void check_message(const uint8_t *data, size_t size)
{
    char *body = fuzz_bytes(data, size);
    char msg[GATEWAY_SERVER_MSG_MAX + 1];
    size_t n, i;

    if (!body)
        return;
    gw_server_message(body, size, msg, sizeof msg);
    FUZZ_CHECK(memchr(msg, '\0', sizeof msg) != NULL);
    n = strlen(msg);
    FUZZ_CHECK(n <= GATEWAY_SERVER_MSG_MAX);
    FUZZ_CHECK(fuzz_utf8(msg, n));
    for (i = 0; i < n; i++)
        FUZZ_CHECK((unsigned char)msg[i] >= 0x20 && msg[i] != 0x7f);
    FUZZ_CHECK(n == 0 || (msg[0] != ' ' && msg[n - 1] != ' '));
    free(body);
}

static void check_redact(const uint8_t *data, size_t size)
{
    /* room for a few replacements, then the cut */
    size_t cap = size + 32;
    char *s = malloc(cap);

    if (!s)
        return;
    memcpy(s, data, size);
    s[size] = '\0';
    gw_redact(s, cap, FUZZ_SECRET);
    FUZZ_CHECK(memchr(s, '\0', cap) != NULL);
    FUZZ_CHECK(strstr(s, FUZZ_SECRET) == NULL);
    free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *body = fuzz_bytes(data, size);
    gw_reply r = {0};
    char why[128];
    int rc;

    if (!body)
        return 0;
    why[0] = '\0';
    rc = gw_parse_reply(body, size, &r, why, sizeof why);
    if (rc == 0) {
        FUZZ_CHECK(r.content != NULL);
        FUZZ_CHECK(r.usage.prompt_tokens >= 0);
        FUZZ_CHECK(r.usage.completion_tokens >= 0);
        FUZZ_CHECK(r.usage.cached_tokens >= 0);
        gw_reply_release(&r);
    } else {
        FUZZ_CHECK(rc == NSED_EINVAL || rc == NSED_ENOMEM);
        FUZZ_CHECK(rc == NSED_ENOMEM || fuzz_has_msg(why, sizeof why));
    }
    free(body);
    check_message(data, size);
    check_redact(data, size);
    return 0;
}
