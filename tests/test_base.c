/* Tests for the base helpers: error formatting, capped buffers, SHA-256. */
#include "pipeline/base/buf.h"
#include "pipeline/base/err.h"
#include "pipeline/base/hash.h"
#include "pipeline/base/jsonw.h"
#include "pipeline/base/num.h"
#include "pipeline/base/suggest.h"
#include "testutil.h"

#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

START_TEST(error_location_prefix)
{
    nsed_err e = {0};

    ck_assert_int_eq(nsed_error_at(&e, NSED_EINVAL, "w.yaml", 3, 7,
                                   "unknown key \"%s\"", "modles"),
                     NSED_EINVAL);
    ck_assert_str_eq(e.msg, "w.yaml:3:7: unknown key \"modles\"");
    ck_assert_int_eq(e.code, NSED_EINVAL);
    nsed_error_at(&e, NSED_EINVAL, "q.jsonl", 12, 0, "bad");
    ck_assert_str_eq(e.msg, "q.jsonl:12: bad");
    ck_assert_int_eq(nsed_exit_code(NSED_EINVAL), 2);
    ck_assert_int_eq(nsed_exit_code(NSED_EIO), 1);
    ck_assert_int_eq(nsed_exit_code(NSED_EINTERNAL), 1);
    ck_assert_int_eq(nsed_exit_code(NSED_OK), 0);
    ck_assert_int_eq(nsed_error(NULL, NSED_EIO, "x"), NSED_EIO);
}
END_TEST

START_TEST(buf_cap_is_hard)
{
    buf b;

    buf_init(&b, 8);
    ck_assert_int_eq(buf_adds(&b, "12345678"), 0);
    ck_assert_int_eq(buf_addc(&b, '9'), NSED_ETOOBIG);
    ck_assert_uint_eq(b.len, 8);
    ck_assert_str_eq(b.ptr, "12345678");
    buf_reset(&b);
    ck_assert_int_eq(buf_printf(&b, "%d-%s", 42, "abc"), 0);
    ck_assert_str_eq(b.ptr, "42-abc");
    ck_assert_int_eq(buf_printf(&b, "%s", "toolong"), NSED_ETOOBIG);
    ck_assert_str_eq(b.ptr, "42-abc");
    buf_release(&b);
    ck_assert_ptr_null(b.ptr);
}
END_TEST

START_TEST(buf_detach_hands_over)
{
    buf b;
    size_t n = 99;
    char *s;

    buf_init(&b, 1 << 20);
    s = buf_detach(&b, &n);
    ck_assert_str_eq(s, "");
    ck_assert_uint_eq(n, 0);
    free(s);
    for (int i = 0; i < 1000; i++)
        ck_assert_int_eq(buf_adds(&b, "abcdefghij"), 0);
    s = buf_detach(&b, &n);
    ck_assert_uint_eq(n, 10000);
    ck_assert_uint_eq(strlen(s), 10000);
    ck_assert_ptr_null(b.ptr);
    free(s);
}
END_TEST

START_TEST(buf_read_file_respects_cap)
{
    char *dir = tu_mkdtemp(), *p = tu_path(dir, "f");
    buf b;

    tu_write_file(p, "hello world", (size_t)-1);
    buf_init(&b, 5);
    ck_assert_int_eq(buf_read_file(&b, p), NSED_ETOOBIG);
    buf_release(&b);
    buf_init(&b, 100);
    ck_assert_int_eq(buf_read_file(&b, p), 0);
    ck_assert_str_eq(b.ptr, "hello world");
    buf_release(&b);
    ck_assert_int_eq(buf_read_file(&b, "/nonexistent/x"), NSED_EIO);
    tu_rmrf(dir);
    free(p);
    free(dir);
}
END_TEST

START_TEST(sha256_known_vectors)
{
    uint8_t d[HASH_LEN];
    char hex[HASH_HEX_LEN + 1];

    ck_assert_int_eq(hash_sha256("abc", 3, d), 0);
    hash_hex(d, hex);
    ck_assert_str_eq(hex, "ba7816bf8f01cfea414140de5dae2223"
                          "b00361a396177a9cb410ff61f20015ad");
    ck_assert_int_eq(hash_sha256("", 0, d), 0);
    hash_hex(d, hex);
    ck_assert_str_eq(hex, "e3b0c44298fc1c149afbf4c8996fb924"
                          "27ae41e4649b934ca495991b7852b855");
}
END_TEST

START_TEST(sha256_fields_are_unambiguous)
{
    uint8_t a[HASH_LEN], b[HASH_LEN];
    hash_ctx *h = hash_new();

    hash_update_field(h, "ab", 2);
    hash_update_field(h, "c", 1);
    hash_final(h, a);
    hash_free(h);
    h = hash_new();
    hash_update_field(h, "a", 1);
    hash_update_field(h, "bc", 2);
    hash_final(h, b);
    hash_free(h);
    ck_assert_mem_ne(a, b, HASH_LEN);
}
END_TEST

START_TEST(suggest_finds_typos)
{
    static const char *const keys[] = {"models", "teams", "rounds", "seed"};
    size_t d = 99;

    ck_assert_uint_eq(suggest_distance("modles", "models"), 1);
    ck_assert_uint_eq(suggest_distance("MODELS", "models"), 0);
    ck_assert_uint_eq(suggest_distance("", "abc"), 3);
    ck_assert_uint_eq(suggest_distance("kitten", "sitting"), 3);
    ck_assert_str_eq(suggest_closest("teems", keys, 4, &d), "teams");
    ck_assert_uint_eq(d, 1);
    ck_assert_str_eq(suggest_closest("sed", keys, 4, &d), "seed");
    ck_assert_ptr_null(suggest_closest("x", keys, 0, &d));
}
END_TEST

START_TEST(num_parse_is_strict)
{
    uint64_t v = 7;

    ck_assert_int_eq(num_parse_u64("42", 100, &v), 0);
    ck_assert_uint_eq(v, 42);
    ck_assert_int_eq(num_parse_u64("18446744073709551615", UINT64_MAX, &v),
                     0);
    ck_assert_uint_eq(v, UINT64_MAX);
    v = 7;
    ck_assert_int_eq(num_parse_u64("101", 100, &v), NSED_EINVAL);
    ck_assert_int_eq(num_parse_u64("18446744073709551616", UINT64_MAX, &v),
                     NSED_EINVAL);
    ck_assert_int_eq(num_parse_u64("-1", 100, &v), NSED_EINVAL);
    ck_assert_int_eq(num_parse_u64("+1", 100, &v), NSED_EINVAL);
    ck_assert_int_eq(num_parse_u64(" 1", 100, &v), NSED_EINVAL);
    ck_assert_int_eq(num_parse_u64("1x", 100, &v), NSED_EINVAL);
    ck_assert_int_eq(num_parse_u64("", 100, &v), NSED_EINVAL);
    ck_assert_uint_eq(v, 7);
}
END_TEST

/* ---- JSON writer ------------------------------------------------------- */

/* One value written alone with flags, as text (the test owns it). */
typedef void (*jw_fn)(jsonw *w);

static char *jw_text(unsigned flags, jw_fn fn)
{
    jsonw w;
    char *out = NULL;
    size_t len = 0;

    jsonw_init(&w, 1024, flags);
    fn(&w);
    ck_assert_int_eq(jsonw_finish(&w, &out, &len), 0);
    ck_assert_uint_eq(len, strlen(out));
    return out;
}

static void jw_escapes(jsonw *w)
{
    jsonw_str(w, "a\"b\\c\n\t\r\x01\b\f\x1f\x7f\xc3\xa9/");
}

START_TEST(jsonw_escapes_strings)
{
    char *t = jw_text(0, jw_escapes);

    /* canonical: only ", \, \n, \t, \r short; other controls as \u00xx;
     * DEL, UTF-8 and / as they are */
    ck_assert_str_eq(t, "\"a\\\"b\\\\c\\n\\t\\r\\u0001\\u0008\\u000c"
                        "\\u001f\x7f\xc3\xa9/\"");
    free(t);
    t = jw_text(JSONW_CJSON, jw_escapes);
    /* cJSON also writes \b and \f short */
    ck_assert_str_eq(t, "\"a\\\"b\\\\c\\n\\t\\r\\u0001\\b\\f"
                        "\\u001f\x7f\xc3\xa9/\"");
    free(t);
}
END_TEST

static void jw_numbers(jsonw *w)
{
    volatile double tenth = 0.1, fifth = 0.2; /* 0.1 + 0.2 at run time */

    jsonw_array_begin(w);
    jsonw_num(w, -0.0);
    jsonw_num(w, 1e300);
    jsonw_num(w, 0.1);
    jsonw_num(w, tenth + fifth);
    jsonw_num(w, 9007199254740994.0); /* 2^53 + 2 */
    jsonw_num(w, 123456789012.0);
    jsonw_num(w, -7);
    jsonw_num(w, 1.5);
    jsonw_num(w, NAN);
    jsonw_num(w, -INFINITY);
    jsonw_int(w, 9007199254740993LL); /* 2^53 + 1: no double holds it */
    jsonw_int(w, INT64_MIN);
    jsonw_uint(w, UINT64_MAX);
    jsonw_array_end(w);
}

START_TEST(jsonw_prints_numbers)
{
    char *t = jw_text(0, jw_numbers);

    /* shortest text that reads back (%g keeps 2^53 + 2 in fixed notation
     * at 16 digits); integers below 1e15 in full */
    ck_assert_str_eq(t, "[0,1e+300,0.1,0.30000000000000004,"
                        "9007199254740994,123456789012,-7,1.5,null,"
                        "null,9007199254740993,-9223372036854775808,"
                        "18446744073709551615]");
    free(t);
    t = jw_text(JSONW_CJSON, jw_numbers);
    /* cJSON: -0 kept, 15 digits when within an ulp (0.1 + 0.2 -> 0.3),
     * else 17 */
    ck_assert_str_eq(t, "[-0,1e+300,0.1,0.3,9007199254740994,123456789012,"
                        "-7,1.5,null,null,9007199254740993,"
                        "-9223372036854775808,18446744073709551615]");
    free(t);
}
END_TEST

static void jw_nested(jsonw *w)
{
    jsonw_object_begin(w);
    jsonw_key(w, "a");
    jsonw_array_begin(w);
    jsonw_int(w, 1);
    jsonw_object_begin(w);
    jsonw_key(w, "b");
    jsonw_null(w);
    jsonw_key(w, "t");
    jsonw_bool(w, true);
    jsonw_object_end(w);
    jsonw_array_end(w);
    jsonw_key(w, "c");
    jsonw_object_begin(w);
    jsonw_object_end(w);
    jsonw_key(w, "d");
    jsonw_array_begin(w);
    jsonw_array_end(w);
    jsonw_key(w, "e\n");
    jsonw_str(w, NULL);
    jsonw_object_end(w);
}

START_TEST(jsonw_nests_and_indents)
{
    char *t = jw_text(0, jw_nested);

    ck_assert_str_eq(t, "{\"a\":[1,{\"b\":null,\"t\":true}],\"c\":{},"
                        "\"d\":[],\"e\\n\":null}");
    free(t);
    t = jw_text(JSONW_INDENT, jw_nested);
    ck_assert_str_eq(t, "{\n"
                        "  \"a\": [\n"
                        "    1,\n"
                        "    {\n"
                        "      \"b\": null,\n"
                        "      \"t\": true\n"
                        "    }\n"
                        "  ],\n"
                        "  \"c\": {},\n"
                        "  \"d\": [],\n"
                        "  \"e\\n\": null\n"
                        "}");
    free(t);
}
END_TEST

START_TEST(jsonw_cap_poisons_until_finish)
{
    char *out = (char *)0x1;
    size_t len = 99;
    jsonw w;

    /* ["ab"] is 6 bytes: a cap of 6 holds it */
    jsonw_init(&w, 6, 0);
    jsonw_array_begin(&w);
    jsonw_str(&w, "ab");
    jsonw_array_end(&w);
    ck_assert_int_eq(jsonw_finish(&w, &out, &len), 0);
    ck_assert_str_eq(out, "[\"ab\"]");
    ck_assert_uint_eq(len, 6);
    free(out);

    /* a cap of 5 holds ["ab" and fails at the bracket; the error stays
     * through later calls and finish reports it */
    out = (char *)0x1;
    len = 99;
    jsonw_init(&w, 5, 0);
    jsonw_array_begin(&w);
    jsonw_str(&w, "ab");
    ck_assert_int_eq(jsonw_error(&w), 0);
    jsonw_array_end(&w);
    ck_assert_int_eq(jsonw_error(&w), NSED_ETOOBIG);
    jsonw_str(&w, "");
    ck_assert_int_eq(jsonw_error(&w), NSED_ETOOBIG);
    ck_assert_int_eq(jsonw_finish(&w, &out, &len), NSED_ETOOBIG);
    ck_assert_ptr_eq(out, (char *)0x1); /* untouched on failure */
    ck_assert_uint_eq(len, 99);
    ck_assert_int_eq(jsonw_error(&w), 0); /* empty again */

    /* released without finishing: no leak, reusable */
    jsonw_init(&w, 64, 0);
    jsonw_str(&w, "dropped");
    jsonw_release(&w);
    jsonw_init(&w, 64, 0);
    jsonw_bool(&w, false);
    ck_assert_int_eq(jsonw_finish(&w, &out, NULL), 0);
    ck_assert_str_eq(out, "false");
    free(out);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("base");
    TCase *tc = tcase_create("errors");
    SRunner *sr;
    int failed;

    tcase_add_test(tc, error_location_prefix);
    suite_add_tcase(s, tc);
    tc = tcase_create("buffers");
    tcase_add_test(tc, buf_cap_is_hard);
    tcase_add_test(tc, buf_detach_hands_over);
    tcase_add_test(tc, buf_read_file_respects_cap);
    suite_add_tcase(s, tc);
    tc = tcase_create("numbers");
    tcase_add_test(tc, num_parse_is_strict);
    suite_add_tcase(s, tc);
    tc = tcase_create("suggest");
    tcase_add_test(tc, suggest_finds_typos);
    suite_add_tcase(s, tc);
    tc = tcase_create("json writer");
    tcase_add_test(tc, jsonw_escapes_strings);
    tcase_add_test(tc, jsonw_prints_numbers);
    tcase_add_test(tc, jsonw_nests_and_indents);
    tcase_add_test(tc, jsonw_cap_poisons_until_finish);
    suite_add_tcase(s, tc);
    tc = tcase_create("hash");
    tcase_add_test(tc, sha256_known_vectors);
    tcase_add_test(tc, sha256_fields_are_unambiguous);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
