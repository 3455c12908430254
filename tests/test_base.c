/* Tests for the base helpers: error formatting, capped buffers, UTF-8,
 * JSON helpers, atomic files, SHA-256. */
#include "pipeline/base/atomic.h"
#include "pipeline/base/buf.h"
#include "pipeline/base/err.h"
#include "pipeline/base/hash.h"
#include "pipeline/base/json.h"
#include "pipeline/base/jsonw.h"
#include "pipeline/base/num.h"
#include "pipeline/base/suggest.h"
#include "pipeline/base/utf8.h"
#include "testutil.h"

#include <check.h>
#include <dirent.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

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
    ck_assert_str_eq(b.ptr, ""); /* released, still a valid string */
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
    ck_assert_ptr_ne(b.ptr, s); /* b no longer refers to what it gave away */
    ck_assert_str_eq(b.ptr, "");
    ck_assert_uint_eq(b.len, 0);
    free(s);
}
END_TEST

/* buf.ptr is a NUL-terminated string at every point of the lifecycle, and
 * the empty string a fresh buf points at is never written or freed. */
START_TEST(buf_ptr_never_null)
{
    buf a, b;
    char *s;
    size_t n = 9;

    buf_init(&a, 16);
    buf_init(&b, 16);
    ck_assert_ptr_nonnull(a.ptr);
    ck_assert_str_eq(a.ptr, "");
    ck_assert_uint_eq(strlen(b.ptr), 0);
    buf_reset(&a);
    ck_assert_str_eq(a.ptr, "");
    buf_release(&a); /* nothing to free: must not free the empty string */
    ck_assert_str_eq(a.ptr, "");
    ck_assert_int_eq(buf_adds(&a, "xy"), 0);
    ck_assert_str_eq(a.ptr, "xy");
    ck_assert_str_eq(b.ptr, ""); /* another empty buf is not touched */
    buf_reset(&a);
    ck_assert_str_eq(a.ptr, "");
    buf_release(&a);
    ck_assert_ptr_nonnull(a.ptr);
    ck_assert_str_eq(a.ptr, "");
    /* an empty append or printf leaves a valid empty string */
    ck_assert_int_eq(buf_add(&a, "", 0), 0);
    ck_assert_str_eq(a.ptr, "");
    ck_assert_int_eq(buf_printf(&a, "%s", ""), 0);
    ck_assert_str_eq(a.ptr, "");
    buf_release(&a);
    /* detach of an empty buf hands over a fresh "" the caller frees */
    s = buf_detach(&b, &n);
    ck_assert_ptr_nonnull(s);
    ck_assert_str_eq(s, "");
    ck_assert_uint_eq(n, 0);
    ck_assert_ptr_ne(s, b.ptr);
    free(s);
    ck_assert_str_eq(b.ptr, "");
    ck_assert_int_eq(buf_adds(&b, "abc"), 0);
    s = buf_detach(&b, NULL);
    ck_assert_str_eq(s, "abc");
    ck_assert_ptr_nonnull(b.ptr);
    ck_assert_str_eq(b.ptr, "");
    ck_assert_uint_eq(b.len, 0);
    free(s);
    /* a failed first append leaves the buf empty and valid */
    buf_init(&a, 2);
    ck_assert_int_eq(buf_adds(&a, "abc"), NSED_ETOOBIG);
    ck_assert_str_eq(a.ptr, "");
    buf_release(&a);
    buf_release(&b);
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

/* Names in dir other than . and .., counted. */
static int entries(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;

    ck_assert_ptr_nonnull(d);
    while ((e = readdir(d)))
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return n;
}

/* The new content replaces the old one whole, and nothing else is left in
 * the directory. */
START_TEST(atomic_write_replaces_whole_file)
{
    char *dir = tu_mkdtemp(), *p = tu_path(dir, "out.json"), *text;
    atomic_file *f = NULL;
    nsed_err e = {0};

    ck_assert_int_eq(atomic_write(p, "first\n", 6, &e), 0);
    text = tu_read_file(p, NULL);
    ck_assert_str_eq(text, "first\n");
    free(text);
    ck_assert_int_eq(atomic_file_open(p, &f, &e), 0);
    ck_assert_int_eq(fputs("second, longer\n", atomic_file_stream(f)) >= 0, 1);
    /* until the commit, readers see the old file */
    text = tu_read_file(p, NULL);
    ck_assert_str_eq(text, "first\n");
    free(text);
    ck_assert_int_eq(atomic_file_commit(f, &e), 0);
    text = tu_read_file(p, NULL);
    ck_assert_str_eq(text, "second, longer\n");
    free(text);
    ck_assert_int_eq(entries(dir), 1);
    /* an empty file is a file too */
    ck_assert_int_eq(atomic_write(p, "", 0, &e), 0);
    text = tu_read_file(p, NULL);
    ck_assert_str_eq(text, "");
    free(text);
    ck_assert_int_eq(entries(dir), 1);
    tu_rmrf(dir);
    free(p);
    free(dir);
}
END_TEST

/* On every failure the old file stays and no temporary file is left. */
START_TEST(atomic_write_failure_leaves_nothing)
{
    char *dir = tu_mkdtemp(), *p = tu_path(dir, "out.json");
    char *sub = tu_path(dir, "sub"), *in_sub = tu_path(sub, "x"), *text;
    atomic_file *f = NULL;
    nsed_err e = {0};

    /* aborted: the old content stays */
    ck_assert_int_eq(atomic_write(p, "old", 3, &e), 0);
    ck_assert_int_eq(atomic_file_open(p, &f, &e), 0);
    fputs("half", atomic_file_stream(f));
    atomic_file_abort(f);
    text = tu_read_file(p, NULL);
    ck_assert_str_eq(text, "old");
    free(text);
    ck_assert_int_eq(entries(dir), 1);
    /* the rename fails (the target is a directory): the temporary goes */
    ck_assert_int_eq(mkdir(sub, 0755), 0);
    ck_assert_int_eq(atomic_write(sub, "x", 1, &e), NSED_EIO);
    ck_assert_msg(tu_contains(e.msg, "cannot rename to"), "%s", e.msg);
    ck_assert_int_eq(entries(dir), 2);
    ck_assert_int_eq(entries(sub), 0);
    /* no such directory: nothing is created */
    ck_assert_int_eq(atomic_write("/nonexistent/dir/x", "x", 1, &e), NSED_EIO);
    ck_assert_msg(tu_contains(e.msg, "cannot create"), "%s", e.msg);
    f = NULL;
    ck_assert_int_eq(atomic_file_open(in_sub, &f, &e), 0);
    ck_assert_int_eq(entries(sub), 1);
    atomic_file_abort(f);
    ck_assert_int_eq(entries(sub), 0);
    atomic_file_abort(NULL);
    tu_rmrf(dir);
    free(in_sub);
    free(sub);
    free(p);
    free(dir);
}
END_TEST

/* One case per rule of RFC 3629, each byte string written out by hand. */
START_TEST(utf8_rejects_what_rfc3629_forbids)
{
    static const struct {
        const char *s;
        size_t n;
        size_t want;
    } cases[] = {
        {"A", 1, 1},
        {"", 1, 1},                    /* NUL is a character */
        {"\x7f", 1, 1},
        {"\xc2\x80", 2, 2},            /* U+0080 */
        {"\xdf\xbf", 2, 2},            /* U+07FF */
        {"\xe0\xa0\x80", 3, 3},        /* U+0800 */
        {"\xed\x9f\xbf", 3, 3},        /* U+D7FF */
        {"\xee\x80\x80", 3, 3},        /* U+E000 */
        {"\xef\xbf\xbd", 3, 3},        /* U+FFFD */
        {"\xf0\x90\x80\x80", 4, 4},    /* U+10000 */
        {"\xf4\x8f\xbf\xbf", 4, 4},    /* U+10FFFF */
        /* overlong forms */
        {"\xc0\x80", 2, 0},            /* NUL in two bytes */
        {"\xc1\xbf", 2, 0},
        {"\xe0\x9f\xbf", 3, 0},        /* U+07FF in three */
        {"\xf0\x8f\xbf\xbf", 4, 0},    /* U+FFFF in four */
        /* surrogates */
        {"\xed\xa0\x80", 3, 0},        /* U+D800 */
        {"\xed\xbf\xbf", 3, 0},        /* U+DFFF */
        /* above U+10FFFF */
        {"\xf4\x90\x80\x80", 4, 0},    /* U+110000 */
        {"\xf5\x80\x80\x80", 4, 0},
        {"\xff", 1, 0},
        /* stray continuation bytes and bad continuations */
        {"\x80", 1, 0},
        {"\xbf", 1, 0},
        {"\xc3\x28", 2, 0},
        {"\xe2\x82\x28", 3, 0},
        {"\xf0\x9f\x98\x28", 4, 0},
        /* truncated by the end of the input */
        {"\xc3", 1, 0},
        {"\xe2\x82", 2, 0},
        {"\xf0\x9f\x98", 3, 0},
        {"\xe2\x82\xac", 2, 0},        /* € with n one short */
        {"A", 0, 0},
    };

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        ck_assert_msg(utf8_seq_len(cases[i].s, cases[i].n) == cases[i].want,
                      "case %zu: got %zu, want %zu", i,
                      utf8_seq_len(cases[i].s, cases[i].n), cases[i].want);
}
END_TEST

START_TEST(utf8_floor_keeps_characters_whole)
{
    const char *s = "a\xe2\x82\xac" "b"; /* a € b: bytes 0, 1-3, 4 */

    ck_assert_uint_eq(utf8_floor(s, 0), 0);
    ck_assert_uint_eq(utf8_floor(s, 1), 1);
    ck_assert_uint_eq(utf8_floor(s, 2), 1);
    ck_assert_uint_eq(utf8_floor(s, 3), 1);
    ck_assert_uint_eq(utf8_floor(s, 4), 4);
    ck_assert_uint_eq(utf8_floor(s, 5), 5);
}
END_TEST

/* The cJSON helpers: each value below is written out by hand. */
START_TEST(json_helpers_read_and_build)
{
    cJSON *o = cJSON_Parse("{\"n\":2.5,\"i\":7,\"s\":\"x\",\"b\":true,"
                           "\"z\":null,\"f\":1.5,\"neg\":-3}");
    json_reader r;
    nsed_err e = {0};
    int64_t i = 99;
    double d = 9;
    char *str = NULL, *text;

    ck_assert_ptr_nonnull(o);
    /* lenient: wrong type or absent reads as the default */
    ck_assert(json_num(o, "n", 0) == 2.5);
    ck_assert(json_num(o, "s", -1) == -1);
    ck_assert_int_eq(json_int(o, "i", 0), 7);
    ck_assert_int_eq(json_int(o, "f", -1), -1);
    ck_assert_str_eq(json_str(o, "s", "d"), "x");
    ck_assert_str_eq(json_str(o, "n", "d"), "d");
    ck_assert(json_bool(o, "b", false));
    ck_assert(json_bool(NULL, "b", true));
    /* checked: absent keeps the value, wrong type is EINVAL */
    ck_assert_int_eq(json_get_int(o, "nope", 0, 10, &i), 0);
    ck_assert_int_eq(i, 99);
    ck_assert_int_eq(json_get_int(o, "i", 0, 10, &i), 0);
    ck_assert_int_eq(i, 7);
    ck_assert_int_eq(json_get_int(o, "i", 0, 6, &i), NSED_EINVAL);
    ck_assert_int_eq(json_get_int(o, "s", 0, 10, &i), NSED_EINVAL);
    ck_assert_int_eq(json_get_num(o, "n", &d), 0);
    ck_assert(d == 2.5);
    ck_assert_int_eq(json_get_num(o, "b", &d), NSED_EINVAL);
    ck_assert_int_eq(json_get_str(o, "z", &str), 0);
    ck_assert_ptr_null(str);
    ck_assert_int_eq(json_get_str(o, "i", &str), NSED_EINVAL);
    ck_assert_int_eq(json_get_str(o, "s", &str), 0);
    ck_assert_str_eq(str, "x");
    free(str);
    /* strict: the first failure is kept, with its path */
    json_reader_init(&r, "doc", &e);
    ck_assert_int_eq(json_rd_int(&r, o, "i", "i", 0, 10), 7);
    ck_assert_int_eq(json_rd_int(&r, o, "f", "f", 0, 10), 0);
    ck_assert_int_eq(r.rc, NSED_EINVAL);
    ck_assert_str_eq(e.msg, "doc: f: not an integer in range");
    ck_assert_ptr_null(json_rd_item(&r, o, "i", "i")); /* poisoned */
    ck_assert_str_eq(e.msg, "doc: f: not an integer in range");
    json_reader_init(&r, "doc", &e);
    ck_assert_ptr_null(json_rd_obj(&r, o, "missing", "a.b", true));
    ck_assert_str_eq(e.msg, "doc: a.b: missing");
    cJSON_Delete(o);
    /* builders: exact integers, %.17g doubles, NULL as null */
    o = cJSON_CreateObject();
    ck_assert_int_eq(json_add_int(o, "big", INT64_MAX), 0);
    ck_assert_int_eq(json_add_u64(o, "u", UINT64_MAX), 0);
    ck_assert_int_eq(json_add_exact(o, "x", 0.1), 0);
    ck_assert_int_eq(json_add_exact(o, "inf", 1.0 / 0.0), 0);
    ck_assert_int_eq(json_add_str(o, "s", NULL), 0);
    ck_assert_int_eq(json_add_num(o, "n", 3), 0);
    ck_assert_int_eq(json_set_str(o, "s", "y"), 0);
    ck_assert_int_eq(json_add_item(o, "none", NULL), NSED_ENOMEM);
    text = cJSON_PrintUnformatted(o);
    ck_assert_str_eq(text, "{\"big\":9223372036854775807,"
                           "\"u\":18446744073709551615,"
                           "\"x\":0.10000000000000001,\"inf\":0,"
                           "\"s\":\"y\",\"n\":3}");
    free(text);
    cJSON_Delete(o);
}
END_TEST

static bool has_k(const cJSON *o, void *arg)
{
    (void)arg;
    return cJSON_GetObjectItemCaseSensitive(o, "k") != NULL;
}

START_TEST(json_find_object_in_text)
{
    const char *t = "say {\"k\":1} then {bad {\"j\":2} and {\"k\":3} end";
    cJSON *o;

    o = json_find_object(t, strlen(t), 10, false, has_k, NULL);
    ck_assert_int_eq(json_int(o, "k", 0), 1);
    cJSON_Delete(o);
    o = json_find_object(t, strlen(t), 10, true, has_k, NULL);
    ck_assert_int_eq(json_int(o, "k", 0), 3);
    cJSON_Delete(o);
    /* from the end one try reaches {"k":3}; cut before it, the one try
     * reaches {"j":2}, which has no k */
    o = json_find_object(t, strlen(t), 1, true, has_k, NULL);
    ck_assert_int_eq(json_int(o, "k", 0), 3);
    cJSON_Delete(o);
    ck_assert_ptr_null(json_find_object(t, strlen(t) - 14, 1, true, has_k,
                                        NULL));
    /* the first 10 bytes end inside the first object: nothing parses */
    ck_assert_ptr_null(json_find_object(t, 10, 10, false, has_k, NULL));
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
    /* state format: -0 kept, ints as ints, the rest shortest-exact like
     * the canonical form (cJSON's 15-digit print wrote 0.1 + 0.2 as 0.3) */
    ck_assert_str_eq(t, "[-0,1e+300,0.1,0.30000000000000004,"
                        "9007199254740994,123456789012,"
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

/* Issue 10, item 5: the last object at top level; nested objects and
 * text that starts no object are passed over. */
START_TEST(json_find_last_object_top_level)
{
    const char *t = "a {\"k\":1} {x} {\"k\":2,\"in\":{\"k\":3}} \\frac{1}{2} "
                    "{\"j\":4} {\"k\":5";
    cJSON *o;

    /* {"k":5 is cut off, {"j":4} has no k; the nested {"k":3} is not top
     * level: {"k":2,...} is the last */
    o = json_find_last_object(t, strlen(t), 100, has_k, NULL);
    ck_assert_int_eq(json_int(o, "k", 0), 2);
    cJSON_Delete(o);
    /* an object whose member holds the only k: nothing at top level */
    t = "{\"wrap\":{\"k\":1}} {\"k\" 2}";
    ck_assert_ptr_null(json_find_last_object(t, strlen(t), 100, has_k, NULL));
    /* tries count parse attempts: two reach only {"k":1} and {x} */
    t = "{\"k\":1} {x} {\"k\":2}";
    o = json_find_last_object(t, strlen(t), 2, has_k, NULL);
    ck_assert_int_eq(json_int(o, "k", 0), 1);
    cJSON_Delete(o);
    o = json_find_last_object(t, strlen(t), 3, has_k, NULL);
    ck_assert_int_eq(json_int(o, "k", 0), 2);
    cJSON_Delete(o);
    ck_assert_ptr_null(json_find_last_object("", 0, 10, has_k, NULL));
}
END_TEST

/* The temporary file is never a name someone can plant in advance: a
 * symlink at the old predictable "<path>.tmp.<pid>" (or at any name) is
 * not written through, and the temporary file is ".<name>.nsed-tmp.<pid>.
 * <random>", created beside the target. */
START_TEST(atomic_write_ignores_planted_symlink)
{
    char *dir = tu_mkdtemp(), *p = tu_path(dir, "out.json");
    char *victim = tu_path(dir, "victim"), *text, *planted = NULL;
    atomic_file *f = NULL;
    nsed_err e = {0};
    DIR *d;
    struct dirent *de;
    int ours = 0;

    tu_write_file(victim, "precious\n", (size_t)-1);
    ck_assert(asprintf(&planted, "%s.tmp.%ld", p, (long)getpid()) > 0);
    ck_assert_int_eq(symlink(victim, planted), 0);
    ck_assert_int_eq(atomic_file_open(p, &f, &e), 0);
    d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    while ((de = readdir(d))) {
        char want[64];

        snprintf(want, sizeof want, ".out.json.nsed-tmp.%ld.", (long)getpid());
        if (strncmp(de->d_name, want, strlen(want)) == 0 &&
            strlen(de->d_name) == strlen(want) + 12)
            ours++;
    }
    closedir(d);
    ck_assert_int_eq(ours, 1);
    fputs("new\n", atomic_file_stream(f));
    ck_assert_int_eq(atomic_file_commit(f, &e), 0);
    text = tu_read_file(victim, NULL);
    ck_assert_str_eq(text, "precious\n");
    free(text);
    text = tu_read_file(p, NULL);
    ck_assert_str_eq(text, "new\n");
    free(text);
    /* out.json, victim and the planted link: nothing else */
    ck_assert_int_eq(entries(dir), 3);
    tu_rmrf(dir);
    free(planted);
    free(victim);
    free(p);
    free(dir);
}
END_TEST

/* Temporary files left by a killed writer of the same path are removed by
 * the next open; those of a live process, of another target, and
 * anything that is not a regular file are left alone. */
START_TEST(atomic_open_removes_stale_temporaries)
{
    char *dir = tu_mkdtemp(), *p = tu_path(dir, "out.json");
    char dead_tmp[256], live_tmp[256], other_tmp[256], link_tmp[256];
    atomic_file *f = NULL;
    nsed_err e = {0};
    struct stat st;
    pid_t dead = fork();

    ck_assert(dead >= 0);
    if (dead == 0)
        _exit(0);
    ck_assert(waitpid(dead, NULL, 0) == dead);
    snprintf(dead_tmp, sizeof dead_tmp,
             "%s/.out.json.nsed-tmp.%ld.abcdef123456", dir, (long)dead);
    snprintf(live_tmp, sizeof live_tmp,
             "%s/.out.json.nsed-tmp.%ld.abcdef123456", dir, (long)getppid());
    snprintf(other_tmp, sizeof other_tmp,
             "%s/.other.json.nsed-tmp.%ld.abcdef123456", dir, (long)dead);
    snprintf(link_tmp, sizeof link_tmp,
             "%s/.out.json.nsed-tmp.%ld.zzzzzz999999", dir, (long)dead);
    tu_write_file(dead_tmp, "half an export", (size_t)-1);
    tu_write_file(live_tmp, "being written", (size_t)-1);
    tu_write_file(other_tmp, "another file's", (size_t)-1);
    ck_assert_int_eq(symlink(p, link_tmp), 0);
    ck_assert_int_eq(atomic_file_open(p, &f, &e), 0);
    atomic_file_abort(f);
    ck_assert_int_eq(stat(dead_tmp, &st), -1);
    ck_assert_int_eq(stat(live_tmp, &st), 0);
    ck_assert_int_eq(stat(other_tmp, &st), 0);
    ck_assert_int_eq(lstat(link_tmp, &st), 0);
    ck_assert_int_eq(entries(dir), 3);
    tu_rmrf(dir);
    free(p);
    free(dir);
}
END_TEST

/* The bits of a double, to compare -0 with 0 and NaN-free values exactly. */
static uint64_t bits_of(double d)
{
    uint64_t u;

    memcpy(&u, &d, sizeof u);
    return u;
}

/* One number in the state format, as text (the test owns it). */
static char *jw_cjson_num(double d)
{
    jsonw w;
    char *out = NULL;

    jsonw_init(&w, 64, JSONW_CJSON);
    jsonw_num(&w, d);
    ck_assert_int_eq(jsonw_finish(&w, &out, NULL), 0);
    return out;
}

START_TEST(jsonw_state_numbers_read_back_exactly)
{
    volatile double tenth = 0.1, fifth = 0.2;
    static const struct {
        double d;
        const char *text;
    } want[] = {
        {0.30000000000000004, "0.30000000000000004"}, /* 0.1 + 0.2 */
        {1e-320, "1e-320"},                           /* subnormal */
        {5e-324, "5e-324"},                           /* the smallest double */
        {DBL_MAX, "1.7976931348623157e+308"},
        {-0.0, "-0"}, /* the sign survives */
        {0.1, "0.1"},
        {2147483648.0, "2147483648"},   /* past int: %g, 10 digits */
        {-2147483648.0, "-2147483648"}, /* INT_MIN: an int */
        {1e21, "1e+21"},
    };

    ck_assert_uint_eq(bits_of(tenth + fifth), bits_of(want[0].d));
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        char *t = jw_cjson_num(want[i].d);
        cJSON *j = cJSON_Parse(t);

        ck_assert_str_eq(t, want[i].text);
        /* read back the way the state reader reads (cJSON, strtod) */
        ck_assert_ptr_nonnull(j);
        ck_assert_msg(bits_of(j->valuedouble) == bits_of(want[i].d),
                      "%s reads back as %a", t, j->valuedouble);
        cJSON_Delete(j);
        free(t);
    }
}
END_TEST

/* Brute force: the shortest %.Ng (N = 1..17) that strtod reads back. */
static void brute_shortest(double d, char *t, size_t size)
{
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(t, size, "%.*g", prec, d);
        if (strtod(t, NULL) == d)
            return;
    }
}

/* Significant digits of a %g text: the mantissa without sign, point,
 * leading and trailing zeros. */
static int sig_digits(const char *t)
{
    char m[40];
    size_t n = 0;
    int count;

    for (; *t && *t != 'e'; t++)
        if (*t >= '0' && *t <= '9' && (n > 0 || *t != '0'))
            m[n++] = *t;
    while (n > 0 && m[n - 1] == '0')
        n--;
    count = (int)n;
    return count;
}

/* One number in the canonical format, as text (the test owns it). */
static char *jw_canon_num(double d)
{
    jsonw w;
    char *out = NULL;

    jsonw_init(&w, 64, 0);
    jsonw_num(&w, d);
    ck_assert_int_eq(jsonw_finish(&w, &out, NULL), 0);
    return out;
}

START_TEST(jsonw_state_numbers_are_shortest)
{
    uint64_t x = 0x9e3779b97f4a7c15ULL; /* xorshift64 over all bit patterns */
    int checked = 0;

    for (int i = 0; i < 40000; i++) {
        double d;
        char want[40], *t;

        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        /* every fourth one in [0, 10) and every eighth one subnormal, so
         * the common and the odd ranges are both exercised */
        if (i % 4 == 0)
            d = (double)(x >> 11) / (double)(1ULL << 53) * 10;
        else if (i % 8 == 1)
            memcpy(&d, &(uint64_t){x & 0x800fffffffffffffULL}, sizeof d);
        else
            memcpy(&d, &x, sizeof d);
        if (!isfinite(d) || (d == (int)d && fabs(d) <= INT_MAX))
            continue;
        brute_shortest(d, want, sizeof want);
        t = jw_cjson_num(d);
        /* an integral value may print in fixed notation where the brute
         * force's precision switches %g to an exponent: same digits */
        if (d != floor(d))
            ck_assert_msg(strcmp(t, want) == 0, "%a: %s, shortest %s", d, t,
                          want);
        ck_assert_msg(sig_digits(t) == sig_digits(want), "%a: %s, %s", d, t,
                      want);
        ck_assert(bits_of(strtod(t, NULL)) == bits_of(d));
        free(t);
        /* the canonical form (the workflow hash) prints the same */
        t = jw_canon_num(d);
        if (d != floor(d))
            ck_assert_msg(strcmp(t, want) == 0, "%a: %s, shortest %s", d, t,
                          want);
        free(t);
        checked++;
    }
    ck_assert_int_gt(checked, 30000);
}
END_TEST

START_TEST(json_reader_refuses_non_finite)
{
    cJSON *o = cJSON_Parse("{\"big\":1e999,\"neg\":-1e999,\"ok\":1e308}");
    nsed_err e = {0};
    json_reader r;

    ck_assert_ptr_nonnull(o);
    json_reader_init(&r, "test", &e);
    ck_assert(json_rd_num(&r, o, "ok", "ok") == 1e308);
    ck_assert_int_eq(r.rc, 0);
    ck_assert(json_rd_num(&r, o, "big", "big") == 0);
    ck_assert_int_eq(r.rc, NSED_EINVAL);
    ck_assert_msg(tu_contains(e.msg, "big: not a finite number"), "%s", e.msg);
    json_reader_init(&r, "test", &e);
    ck_assert(json_rd_num(&r, o, "neg", "neg") == 0);
    ck_assert_int_eq(r.rc, NSED_EINVAL);
    cJSON_Delete(o);
}
END_TEST

Suite *tu_suite(void)
{
    Suite *s = suite_create("base");
    TCase *tc = tcase_create("errors");

    tcase_add_test(tc, error_location_prefix);
    suite_add_tcase(s, tc);
    tc = tcase_create("buffers");
    tcase_add_test(tc, buf_cap_is_hard);
    tcase_add_test(tc, buf_detach_hands_over);
    tcase_add_test(tc, buf_read_file_respects_cap);
    tcase_add_test(tc, buf_ptr_never_null);
    suite_add_tcase(s, tc);
    tc = tcase_create("utf8");
    tcase_add_test(tc, utf8_rejects_what_rfc3629_forbids);
    tcase_add_test(tc, utf8_floor_keeps_characters_whole);
    suite_add_tcase(s, tc);
    tc = tcase_create("json");
    tcase_add_test(tc, json_helpers_read_and_build);
    tcase_add_test(tc, json_find_object_in_text);
    tcase_add_test(tc, json_find_last_object_top_level);
    suite_add_tcase(s, tc);
    tc = tcase_create("atomic files");
    tcase_add_test(tc, atomic_write_replaces_whole_file);
    tcase_add_test(tc, atomic_write_failure_leaves_nothing);
    tcase_add_test(tc, atomic_write_ignores_planted_symlink);
    tcase_add_test(tc, atomic_open_removes_stale_temporaries);
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
    tcase_add_test(tc, jsonw_state_numbers_read_back_exactly);
    tcase_add_test(tc, jsonw_state_numbers_are_shortest);
    tcase_add_test(tc, json_reader_refuses_non_finite);
    suite_add_tcase(s, tc);
    tc = tcase_create("hash");
    tcase_add_test(tc, sha256_known_vectors);
    tcase_add_test(tc, sha256_fields_are_unambiguous);
    suite_add_tcase(s, tc);
    return s;
}
