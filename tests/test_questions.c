/* Tests for question sets: line parsing, file validation (a table of broken
 * files), stored records, and ingestion into / reading from the store. */
#include "pipeline/questions/questions.h"
#include "store/store.h"
#include "testutil.h"

#include <check.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DATA_DIR NSED_SOURCE_DIR "/tests/data/questions"

/* Parse one NUL-terminated line, expecting success. */
static void parse_ok(const char *line, question *q)
{
    nsed_err e = {0};
    int rc = questions_parse_line("t.jsonl", 1, line, strlen(line), q, &e);

    ck_assert_msg(rc == 0, "parse of %s failed: %d %s", line, rc, e.msg);
}

/* Parse one line, expecting failure code with message msg exactly. */
static void parse_fails(const char *line, int code, const char *msg)
{
    nsed_err e = {0};
    question q = {0};
    int rc = questions_parse_line("t.jsonl", 7, line, strlen(line), &q, &e);

    ck_assert_int_eq(rc, code);
    ck_assert_str_eq(e.msg, msg);
    ck_assert_ptr_null(q.id);
}

/* ------------------------------------------------------------------ */
/* parse_line */

START_TEST(parse_all_fields)
{
    question q = {0};

    parse_ok("{\"id\": \"q-001\", \"question\": \"What is 17 * 23?\", "
             "\"answer\": \"391\", \"tags\": [\"arith\", \"easy\"], "
             "\"meta\": {\"source\": \"x\"}}",
             &q);
    ck_assert_str_eq(q.id, "q-001");
    ck_assert_str_eq(q.text, "What is 17 * 23?");
    ck_assert_str_eq(q.answer, "391");
    ck_assert_uint_eq(q.ntags, 2);
    ck_assert_str_eq(q.tags[0], "arith");
    ck_assert_str_eq(q.tags[1], "easy");
    ck_assert_str_eq(q.meta_json, "{\"source\":\"x\"}");
    question_release(&q);
    ck_assert_ptr_null(q.id);
    ck_assert_uint_eq(q.ntags, 0);
    question_release(&q);
    question_release(NULL);
}
END_TEST

START_TEST(parse_optional_fields_absent)
{
    question q = {0};

    parse_ok("{\"question\": \"Why?\\nBecause.\", \"id\": \"x\"}", &q);
    ck_assert_str_eq(q.id, "x");
    ck_assert_str_eq(q.text, "Why?\nBecause.");
    ck_assert_ptr_null(q.answer);
    ck_assert_ptr_null(q.tags);
    ck_assert_uint_eq(q.ntags, 0);
    ck_assert_ptr_null(q.meta_json);
    question_release(&q);
    /* null stands for "absent" in the optional fields */
    parse_ok("{\"id\": \"x\", \"question\": \"y\", \"answer\": null, "
             "\"tags\": null, \"meta\": null}",
             &q);
    ck_assert_ptr_null(q.answer);
    ck_assert_uint_eq(q.ntags, 0);
    ck_assert_ptr_null(q.meta_json);
    question_release(&q);
    parse_ok("{\"id\": \"x\", \"question\": \"y\", \"tags\": []}", &q);
    ck_assert_uint_eq(q.ntags, 0);
    question_release(&q);
}
END_TEST

START_TEST(parse_numeric_answers_exact)
{
    static const struct {
        const char *num, *text;
    } cases[] = {
        {"391", "391"},       {"391.0", "391"},     {"0.5", "0.5"},
        {"0.50", "0.5"},      {"5e-1", "0.5"},      {"-3", "-3"},
        {"-0", "0"},          {"0.000", "0"},       {"1.5E3", "1500"},
        {"1e+2", "100"},      {"-2.50e-3", "-0.0025"},
        {"0.1", "0.1"},       {"100", "100"},       {"007e0", NULL},
        {"12345678901234567890123", "12345678901234567890123"},
        {"0e99999999999", "0"}, {"1.25e1", "12.5"},
    };
    char line[256];

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        question q = {0};
        nsed_err e = {0};
        int rc;

        snprintf(line, sizeof line,
                 "{\"id\": \"n\", \"question\": \"q\", \"answer\": %s}",
                 cases[i].num);
        rc = questions_parse_line("t.jsonl", 1, line, strlen(line), &q, &e);
        if (!cases[i].text) {
            ck_assert_int_eq(rc, NSED_EINVAL);
            ck_assert(tu_contains(e.msg, "invalid number"));
            continue;
        }
        ck_assert_msg(rc == 0, "%s: %s", cases[i].num, e.msg);
        ck_assert_msg(strcmp(q.answer, cases[i].text) == 0, "%s gave %s",
                      cases[i].num, q.answer);
        question_release(&q);
    }
    parse_fails("{\"id\": \"n\", \"question\": \"q\", \"answer\": 1e999}",
                NSED_EINVAL,
                "t.jsonl:7:30: \"answer\" number is too long as decimal "
                "text (over 400 characters); write it as a string");
}
END_TEST

START_TEST(parse_meta_verbatim)
{
    question q = {0};

    /* numbers, escapes and nesting as written; only white space goes */
    parse_ok("{\"id\": \"m\", \"question\": \"q\", \"meta\": { \"a\" : 1.10,"
             " \"b\": [1e5, 12345678901234567890, -0.0], \"c\": "
             "{\"s p\": \"x \\\" \\u00e9 \\\\\"}, \"d\": null } }",
             &q);
    ck_assert_str_eq(q.meta_json,
                     "{\"a\":1.10,\"b\":[1e5,12345678901234567890,-0.0],"
                     "\"c\":{\"s p\":\"x \\\" \\u00e9 \\\\\"},\"d\":null}");
    question_release(&q);
    parse_ok("{\"id\": \"m\", \"meta\": {}, \"question\": \"q\"}", &q);
    ck_assert_str_eq(q.meta_json, "{}");
    question_release(&q);
}
END_TEST

START_TEST(parse_blank_lines_not_errors)
{
    nsed_err e = {0};
    question q = {0};
    static const char *const blanks[] = {"", " ", "\t \t", "\r", "  \r"};

    for (size_t i = 0; i < sizeof blanks / sizeof blanks[0]; i++) {
        ck_assert_int_eq(questions_parse_line("t.jsonl", 3, blanks[i],
                                              strlen(blanks[i]), &q, &e),
                         NSED_ENOTFOUND);
        ck_assert_int_eq(e.code, 0);
        ck_assert_str_eq(e.msg, "");
    }
    ck_assert_int_eq(questions_parse_line("t.jsonl", 1, "\xEF\xBB\xBF", 3,
                                          &q, &e),
                     NSED_ENOTFOUND);
    ck_assert_int_eq(questions_parse_line("t.jsonl", 1, NULL, 0, &q, &e),
                     NSED_ENOTFOUND);
    ck_assert_ptr_null(q.id);
}
END_TEST

START_TEST(parse_crlf_bom_and_length)
{
    const char *line = "\xEF\xBB\xBF{\"id\": \"b\", \"question\": \"q\"}\r"
                       "GARBAGE";
    size_t len = strlen(line) - strlen("GARBAGE");
    question q = {0};
    nsed_err e = {0};

    /* the text need not be NUL-terminated: only len bytes count */
    ck_assert_int_eq(questions_parse_line("t.jsonl", 1, line, len, &q, &e),
                     0);
    ck_assert_str_eq(q.id, "b");
    question_release(&q);
    /* a byte order mark is only skipped on line 1 */
    ck_assert_int_eq(questions_parse_line("t.jsonl", 2, line, len, &q, &e),
                     NSED_EINVAL);
    ck_assert(tu_contains(e.msg, "t.jsonl:2:1: byte order mark"));
}
END_TEST

START_TEST(parse_errors_name_columns)
{
    parse_fails("{\"id\" \"q-1\", \"question\": \"x\"}", NSED_EINVAL,
                "t.jsonl:7:7: invalid JSON");
    parse_fails("42", NSED_EINVAL,
                "t.jsonl:7:1: expected a JSON object, got a number");
    parse_fails("{\"ID\": \"a\", \"question\": \"x\"}", NSED_EINVAL,
                "t.jsonl:7:2: unknown key \"ID\" (did you mean \"id\"?); "
                "extra data belongs in \"meta\"");
    parse_fails("{\"id\": \"a\", \"question\": \"x\", \"metadata\": {}}",
                NSED_EINVAL,
                "t.jsonl:7:30: unknown key \"metadata\" (did you mean "
                "\"meta\"?); extra data belongs in \"meta\"");
    parse_fails("{\"id\": \"a\", \"question\": \"x\", \"tgas\": []}",
                NSED_EINVAL,
                "t.jsonl:7:30: unknown key \"tgas\" (did you mean "
                "\"tags\"?); extra data belongs in \"meta\"");
    /* a stored record's "seq" is not a key of the file format */
    parse_fails("{\"id\": \"a\", \"question\": \"x\", \"seq\": 1}", NSED_EINVAL,
                "t.jsonl:7:30: unknown key \"seq\"; the keys are id, "
                "question, answer, tags, meta; extra data belongs in "
                "\"meta\"");
    parse_fails("{\"id\": \"a\", \"question\": \"x\", \"answer\": true}",
                NSED_EINVAL,
                "t.jsonl:7:30: \"answer\" must be a string or a number, got "
                "a boolean");
    parse_fails("{\"id\": \"a\\u0085\", \"question\": \"x\"}", NSED_EINVAL,
                "t.jsonl:7:2: \"id\" contains a control character "
                "(U+0085)");
    parse_fails("{\"id\": \"a\", \"question\": \"x\", \"tags\": [\"a\\tb\"]}",
                NSED_EINVAL,
                "t.jsonl:7:30: tag 1 contains a control character "
                "(U+0009)");
    parse_fails("{\"id\": \"a\", \"question\": \"\\ud800\"}", NSED_EINVAL,
                "t.jsonl:7:26: invalid JSON");
    /* cJSON alone would read a bad \\u escape as U+0000 and cut the text */
    parse_fails("{\"id\": \"a\", \"question\": \"x\\u12}\"}", NSED_EINVAL,
                "t.jsonl:7:27: invalid escape (\\u needs four hex digits)");
    parse_fails("{\"id\": \"a\\q\", \"question\": \"x\"}", NSED_EINVAL,
                "t.jsonl:7:10: invalid escape \"\\q\"");
}
END_TEST

START_TEST(parse_overlong_line_refused)
{
    size_t len = QUESTIONS_LINE_MAX + 1;
    char *line = malloc(len);
    question q = {0};
    nsed_err e = {0};

    ck_assert_ptr_nonnull(line);
    memset(line, ' ', len);
    ck_assert_int_eq(questions_parse_line("t.jsonl", 4, line, len, &q, &e),
                     NSED_ETOOBIG);
    ck_assert_str_eq(e.msg, "t.jsonl:4: line is longer than 1 MiB "
                            "(1048577 bytes)");
    free(line);
}
END_TEST

START_TEST(parse_survives_mutations)
{
    /* deterministic mutation of a valid line: every result is a clean
     * success or a located error, and every success survives a trip
     * through the stored record unchanged */
    static const char seed[] =
        "{\"id\": \"q-1\", \"question\": \"caf\xC3\xA9 \\u00e9?\", "
        "\"answer\": -1.50e2, \"tags\": [\"a\", \"b\"], "
        "\"meta\": {\"k\": [1, {\"x\": \"y\"}], \"n\": null}}";
    static const char alphabet[] = "{}[]\":,\\u0 -.eE1a\xC3\xA9\xFF\t";
    char line[sizeof seed + 8];
    uint32_t state = 12345;
    size_t ok = 0;

    for (int iter = 0; iter < 20000; iter++) {
        size_t n = sizeof seed - 1;
        question q = {0}, back = {0};
        nsed_err e = {0};
        char *rec = NULL;
        size_t rlen = 0;
        int rc;

        memcpy(line, seed, n);
        for (int m = 0; m < 1 + iter % 3; m++) {
            size_t pos;

            if (n < 2)
                break;
            state = state * 1103515245u + 12345u;
            pos = (state >> 8) % n;
            state = state * 1103515245u + 12345u;
            switch ((state >> 16) % 3) {
            case 0: /* replace */
                line[pos] = alphabet[(state >> 4) % (sizeof alphabet - 1)];
                break;
            case 1: /* delete */
                memmove(line + pos, line + pos + 1, n - pos - 1);
                n--;
                break;
            default: /* truncate */
                n = pos + 1;
                break;
            }
        }
        rc = questions_parse_line("f.jsonl", 1, line, n, &q, &e);
        if (rc == NSED_ENOTFOUND)
            continue;
        if (rc) {
            ck_assert_int_eq(rc, NSED_EINVAL);
            ck_assert_msg(strncmp(e.msg, "f.jsonl:1", 9) == 0, "%s", e.msg);
            continue;
        }
        ok++;
        ck_assert_int_eq(questions_record_json(&q, 3, &rec, &rlen), 0);
        ck_assert_msg(questions_parse_record(rec, rlen, &back, NULL, &e) == 0,
                      "%s from %.*s", e.msg, (int)n, line);
        ck_assert_ptr_null(question_diff(&q, &back));
        free(rec);
        question_release(&q);
        question_release(&back);
    }
    ck_assert_uint_gt(ok, 100);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Broken files: one file per case, expectations kept here since JSONL
 * has no comments. */

static void gen_overlong(const char *path)
{
    size_t n = QUESTIONS_LINE_MAX + 100;
    char *p = malloc(n + 200);
    size_t o;

    ck_assert_ptr_nonnull(p);
    o = (size_t)snprintf(p, 200, "{\"id\": \"a\", \"question\": \"ok\"}\n"
                                 "{\"id\": \"b\", \"question\": \"");
    memset(p + o, 'x', n);
    o += n;
    memcpy(p + o, "\"}\n", 3);
    tu_write_file(path, p, o + 3);
    free(p);
}

/* Exactly QUESTIONS_LINE_MAX bytes of content plus CRLF is accepted; one
 * byte more is not (checked by the table). */
static void gen_overlong_by_one(const char *path)
{
    const char *head = "{\"id\": \"a\", \"question\": \"";
    size_t n = QUESTIONS_LINE_MAX + 1, hl = strlen(head);
    char *p = malloc(n + 2);

    ck_assert_ptr_nonnull(p);
    memcpy(p, head, hl);
    memset(p + hl, 'x', n - hl - 2);
    memcpy(p + n - 2, "\"}\r\n", 4);
    tu_write_file(path, p, n + 2);
    free(p);
}

static const struct bad_case {
    const char *file;  /* under tests/data/questions/bad/, or generated */
    void (*gen)(const char *path);
    int code;
    const char *where; /* expected "LINE[:COL]" */
    const char *msg;   /* expected message (substring) */
} bad_cases[] = {
    {"invalid_json.jsonl", NULL, NSED_EINVAL, "2:44", "invalid JSON"},
    {"split_object.jsonl", NULL, NSED_EINVAL, "2:43",
     "the line ends inside a value"},
    {"trailing_text.jsonl", NULL, NSED_EINVAL, "1:45",
     "unexpected text after the JSON object"},
    {"not_object.jsonl", NULL, NSED_EINVAL, "1:1",
     "expected a JSON object, got a list"},
    {"missing_id.jsonl", NULL, NSED_EINVAL, "2", "missing \"id\""},
    {"empty_id.jsonl", NULL, NSED_EINVAL, "1:2", "\"id\" is empty"},
    /* an integer id is accepted since issue 13 (test_shapes) */
    {"id_not_string.jsonl", NULL, NSED_EINVAL, "1:32",
     "\"id\" must be a string or an integer, got a boolean"},
    {"id_control_char.jsonl", NULL, NSED_EINVAL, "1:2",
     "\"id\" contains a control character (U+0007)"},
    {"id_too_long.jsonl", NULL, NSED_EINVAL, "1:2",
     "\"id\" is longer than 256 bytes (257)"},
    {"missing_question.jsonl", NULL, NSED_EINVAL, "3", "missing \"question\""},
    {"empty_question.jsonl", NULL, NSED_EINVAL, "1:15",
     "\"question\" is empty"},
    {"bad_answer_type.jsonl", NULL, NSED_EINVAL, "1:45",
     "\"answer\" must be a string or a number, got a list"},
    {"empty_answer.jsonl", NULL, NSED_EINVAL, "1:45", "\"answer\" is empty"},
    {"bad_answer_number.jsonl", NULL, NSED_EINVAL, "1:55",
     "invalid number \"04\""},
    {"tags_not_list.jsonl", NULL, NSED_EINVAL, "1:45",
     "\"tags\" must be a list of strings, got a string"},
    {"tag_not_string.jsonl", NULL, NSED_EINVAL, "1:45",
     "tag 2 must be a string, got a number"},
    {"empty_tag.jsonl", NULL, NSED_EINVAL, "1:45", "tag 2 is empty"},
    {"too_many_tags.jsonl", NULL, NSED_EINVAL, "1:45",
     "too many tags (65; at most 64)"},
    {"meta_not_object.jsonl", NULL, NSED_EINVAL, "1:45",
     "\"meta\" must be an object, got a string"},
    {"unknown_key_typo.jsonl", NULL, NSED_EINVAL, "2:15",
     "unknown key \"qustion\" (did you mean \"question\"?); extra data "
     "belongs in \"meta\""},
    {"unknown_key.jsonl", NULL, NSED_EINVAL, "1:45",
     "unknown key \"difficulty\"; the keys are id, question, answer, tags, "
     "meta; extra data belongs in \"meta\""},
    {"duplicate_key.jsonl", NULL, NSED_EINVAL, "1:45", "duplicate key \"id\""},
    {"duplicate_id.jsonl", NULL, NSED_EINVAL, "4",
     "duplicate id \"q-2\" (first at line 2)"},
    {"invalid_utf8.jsonl", NULL, NSED_EINVAL, "1:31",
     "invalid UTF-8 (byte 0xe9)"},
    {"invalid_utf8_surrogate.jsonl", NULL, NSED_EINVAL, "1:56",
     "invalid UTF-8 (byte 0xed)"},
    {"raw_tab_in_string.jsonl", NULL, NSED_EINVAL, "1:29",
     "raw control character 0x09 inside a string"},
    {"nul_escape.jsonl", NULL, NSED_EINVAL, "1:29",
     "\\u0000 (NUL) is not allowed"},
    {"overlong.jsonl", gen_overlong, NSED_ETOOBIG, "2",
     "line is longer than 1 MiB"},
    {"overlong_by_one.jsonl", gen_overlong_by_one, NSED_ETOOBIG, "1",
     "line is longer than 1 MiB"},
};

START_TEST(bad_file_reports_location)
{
    const struct bad_case *bc = &bad_cases[_i];
    char *dir = NULL, *path, prefix[512];
    questions_stats st = {99, 99, 99, 99, 99};
    nsed_err e = {0};
    int rc;

    if (bc->gen) {
        dir = tu_mkdtemp();
        path = tu_path(dir, bc->file);
        bc->gen(path);
    } else {
        path = tu_path(DATA_DIR "/bad", bc->file);
    }
    rc = questions_check_file(path, &st, &e);
    ck_assert_msg(rc == bc->code, "%s: rc %d (%s)", bc->file, rc, e.msg);
    ck_assert_int_eq(e.code, bc->code);
    snprintf(prefix, sizeof prefix, "%s:%s: ", path, bc->where);
    ck_assert_msg(strncmp(e.msg, prefix, strlen(prefix)) == 0,
                  "%s: expected location %s in \"%s\"", bc->file, bc->where,
                  e.msg);
    ck_assert_msg(tu_contains(e.msg + strlen(prefix), bc->msg),
                  "%s: expected \"%s\" in \"%s\"", bc->file, bc->msg, e.msg);
    /* stats are written only on success */
    ck_assert_uint_eq(st.lines, 99);
    ck_assert_uint_eq(st.added, 99);
    tu_rmrf(dir);
    free(dir);
    free(path);
}
END_TEST

START_TEST(bad_files_all_in_table)
{
    /* every file under bad/ has an expectation (a new file without one
     * would silently go untested) */
    DIR *d = opendir(DATA_DIR "/bad");
    size_t files = 0, n = sizeof bad_cases / sizeof bad_cases[0];
    struct dirent *ent;

    ck_assert_ptr_nonnull(d);
    while ((ent = readdir(d)) != NULL) {
        int found = 0;

        if (ent->d_name[0] == '.')
            continue;
        for (size_t i = 0; i < n; i++)
            if (!bad_cases[i].gen &&
                strcmp(bad_cases[i].file, ent->d_name) == 0)
                found = 1;
        ck_assert_msg(found, "bad/%s has no expectation", ent->d_name);
        files++;
    }
    closedir(d);
    ck_assert_uint_ge(files, 10);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Reading good files */

typedef struct collected {
    char ids[16][32];
    size_t lines[16];
    size_t n;
    int stop_after; /* return 5 after this many questions; 0: never */
} collected;

static int collect(const question *q, size_t lineno, void *arg)
{
    collected *c = arg;

    ck_assert_uint_lt(c->n, 16);
    snprintf(c->ids[c->n], sizeof c->ids[c->n], "%s", q->id);
    c->lines[c->n] = lineno;
    c->n++;
    return c->stop_after && c->n >= (size_t)c->stop_after ? 5 : 0;
}

START_TEST(good_file_streams_in_order)
{
    collected c = {0};
    nsed_err e = {0};
    questions_stats st = {0};

    ck_assert_int_eq(questions_read_file(DATA_DIR "/good.jsonl", collect, &c,
                                         &e),
                     0);
    ck_assert_uint_eq(c.n, 5);
    ck_assert_str_eq(c.ids[0], "arith-1");
    ck_assert_uint_eq(c.lines[0], 1);
    ck_assert_str_eq(c.ids[1], "arith-2");
    ck_assert_uint_eq(c.lines[1], 2);
    ck_assert_str_eq(c.ids[2], "word-1");
    ck_assert_uint_eq(c.lines[2], 4); /* line 3 is blank */
    ck_assert_str_eq(c.ids[4], "open-1");
    ck_assert_uint_eq(c.lines[4], 8);
    ck_assert_int_eq(questions_check_file(DATA_DIR "/good.jsonl", &st, &e),
                     0);
    ck_assert_uint_eq(st.lines, 9); /* trailing blank line counted */
    ck_assert_uint_eq(st.questions, 5);
    ck_assert_uint_eq(st.added, 5);
    ck_assert_uint_eq(st.with_answer, 4);
    ck_assert_uint_eq(st.unchanged, 0);
}
END_TEST

START_TEST(crlf_bom_file_reads_the_same)
{
    char *dir = tu_mkdtemp(), *path = tu_path(dir, "crlf.jsonl");
    char *good = tu_read_file(DATA_DIR "/good.jsonl", NULL), *conv;
    collected a = {0}, b = {0};
    nsed_err e = {0};
    size_t o = 3;

    ck_assert_ptr_nonnull(good);
    conv = malloc(strlen(good) * 2 + 4);
    memcpy(conv, "\xEF\xBB\xBF", 3);
    for (const char *p = good; *p; p++) {
        if (*p == '\n')
            conv[o++] = '\r';
        conv[o++] = *p;
    }
    tu_write_file(path, conv, o - 2); /* no CRLF after the last line */
    ck_assert_int_eq(questions_read_file(DATA_DIR "/good.jsonl", collect, &a,
                                         &e),
                     0);
    ck_assert_int_eq(questions_read_file(path, collect, &b, &e), 0);
    ck_assert_uint_eq(a.n, b.n);
    for (size_t i = 0; i < a.n; i++) {
        ck_assert_str_eq(a.ids[i], b.ids[i]);
        ck_assert_uint_eq(a.lines[i], b.lines[i]);
    }
    free(conv);
    free(good);
    tu_rmrf(dir);
    free(path);
    free(dir);
}
END_TEST

START_TEST(good_file_fields)
{
    questions_reader *r = NULL;
    question q = {0};
    nsed_err e = {0};
    size_t lineno = 0;

    ck_assert_int_eq(questions_reader_open(DATA_DIR "/good.jsonl", 0, &r, &e),
                     0);
    ck_assert_int_eq(questions_reader_next(r, &q, &lineno, &e), 0);
    ck_assert_str_eq(q.answer, "391");
    ck_assert_str_eq(q.meta_json, "{\"source\":\"hand\",\"difficulty\":1}");
    question_release(&q);
    ck_assert_int_eq(questions_reader_next(r, &q, &lineno, &e), 0);
    ck_assert_str_eq(q.answer, "0.5");
    question_release(&q);
    ck_assert_int_eq(questions_reader_next(r, &q, &lineno, &e), 0);
    ck_assert_str_eq(q.text, "Anna has 3 apples and buys 4 more. How many "
                             "does she have?");
    ck_assert_str_eq(q.answer, "7");
    ck_assert_uint_eq(q.ntags, 2);
    ck_assert_str_eq(q.tags[1], "easy");
    question_release(&q);
    ck_assert_int_eq(questions_reader_next(r, &q, &lineno, &e), 0);
    ck_assert_str_eq(q.id, "unicode-\xC3\xA9");
    ck_assert_str_eq(q.text, "Combien font 2 \xC3\x97 3\xE2\x80\xAF?");
    ck_assert_str_eq(q.answer, "-6");
    question_release(&q);
    ck_assert_int_eq(questions_reader_next(r, &q, &lineno, &e), 0);
    ck_assert_ptr_null(q.answer);
    question_release(&q);
    ck_assert_int_eq(questions_reader_next(r, &q, &lineno, &e),
                     NSED_ENOTFOUND);
    ck_assert_uint_eq(questions_reader_lines(r), 9);
    questions_reader_free(r);
    questions_reader_free(NULL);
}
END_TEST

START_TEST(read_file_stops_when_asked)
{
    collected c = {0};
    nsed_err e = {0};

    c.stop_after = 2;
    ck_assert_int_eq(questions_read_file(DATA_DIR "/good.jsonl", collect, &c,
                                         &e),
                     5);
    ck_assert_uint_eq(c.n, 2);
    /* questions before a bad line are delivered, then the error */
    memset(&c, 0, sizeof c);
    ck_assert_int_eq(questions_read_file(DATA_DIR "/bad/missing_question.jsonl",
                                         collect, &c, &e),
                     NSED_EINVAL);
    ck_assert_uint_eq(c.n, 1);
    /* read_file itself does not look for duplicates; check_file does */
    memset(&c, 0, sizeof c);
    ck_assert_int_eq(questions_read_file(DATA_DIR "/bad/duplicate_id.jsonl",
                                         collect, &c, &e),
                     0);
    ck_assert_uint_eq(c.n, 4);
}
END_TEST

START_TEST(missing_file_is_io_error)
{
    nsed_err e = {0};
    questions_stats st = {0};
    collected c = {0};

    ck_assert_int_eq(questions_check_file("/nonexistent/q.jsonl", &st, &e),
                     NSED_EIO);
    ck_assert_str_eq(e.msg, "/nonexistent/q.jsonl: cannot open: No such "
                            "file or directory");
    ck_assert_int_eq(questions_read_file("/nonexistent/q.jsonl", collect, &c,
                                         &e),
                     NSED_EIO);
    ck_assert_uint_eq(c.n, 0);
}
END_TEST

START_TEST(empty_file_has_no_questions)
{
    char *dir = tu_mkdtemp(), *path = tu_path(dir, "empty.jsonl");
    questions_stats st = {0};
    nsed_err e = {0};

    tu_write_file(path, "\n\n  \n", (size_t)-1);
    ck_assert_int_eq(questions_check_file(path, &st, &e), 0);
    ck_assert_uint_eq(st.lines, 3);
    ck_assert_uint_eq(st.questions, 0);
    tu_write_file(path, "", 0);
    ck_assert_int_eq(questions_check_file(path, &st, &e), 0);
    ck_assert_uint_eq(st.lines, 0);
    tu_rmrf(dir);
    free(path);
    free(dir);
}
END_TEST

START_TEST(line_at_cap_accepted)
{
    /* QUESTIONS_LINE_MAX bytes of content, then CRLF: just allowed (the
     * table checks that one byte more is refused) */
    const char *head = "{\"id\": \"a\", \"question\": \"";
    size_t n = QUESTIONS_LINE_MAX, hl = strlen(head);
    char *dir = tu_mkdtemp(), *path = tu_path(dir, "cap.jsonl");
    char *p = malloc(n + 2);
    questions_stats st = {0};
    nsed_err e = {0};

    ck_assert_ptr_nonnull(p);
    memcpy(p, head, hl);
    memset(p + hl, 'x', n - hl - 2);
    memcpy(p + n - 2, "\"}\r\n", 4);
    tu_write_file(path, p, n + 2);
    ck_assert_msg(questions_check_file(path, &st, &e) == 0, "%s", e.msg);
    ck_assert_uint_eq(st.questions, 1);
    free(p);
    tu_rmrf(dir);
    free(path);
    free(dir);
}
END_TEST

START_TEST(demo_set_is_valid)
{
    questions_stats st = {0};
    nsed_err e = {0};

    ck_assert_msg(questions_check_file(NSED_SOURCE_DIR
                                       "/workflows/demo-questions.jsonl",
                                       &st, &e) == 0,
                  "%s", e.msg);
    ck_assert_uint_eq(st.questions, 120);
    ck_assert_uint_eq(st.with_answer, 120);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Records */

START_TEST(record_round_trip)
{
    question q = {0}, back = {0};
    char *rec = NULL;
    size_t len = 0;
    uint64_t seq = 0;
    nsed_err e = {0};

    parse_ok("{\"id\": \"r\\\"1\", \"question\": \"a\\nb\", \"answer\": 2.50,"
             " \"tags\": [\"x\", \"y\"], \"meta\": {\"n\": 1.0}}",
             &q);
    ck_assert_int_eq(questions_record_json(&q, 9007199254740993u, &rec,
                                           &len),
                     0);
    ck_assert_str_eq(rec, "{\"id\":\"r\\\"1\",\"question\":\"a\\nb\","
                          "\"answer\":\"2.5\",\"tags\":[\"x\",\"y\"],"
                          "\"meta\":{\"n\":1.0},\"seq\":9007199254740993}");
    ck_assert_uint_eq(len, strlen(rec));
    ck_assert_int_eq(questions_parse_record(rec, len, &back, &seq, &e), 0);
    ck_assert_ptr_null(question_diff(&q, &back));
    ck_assert(seq == 9007199254740993u);
    question_release(&back);
    ck_assert_int_eq(questions_parse_record("{\"id\":\"a\",\"question\":\"b\"}",
                                            25, &back, &seq, &e),
                     NSED_EINVAL);
    ck_assert_str_eq(e.msg, "question record: missing \"seq\"");
    free(rec);
    question_release(&q);
}
END_TEST

START_TEST(diff_names_the_field)
{
    question a = {0}, b = {0};

    parse_ok("{\"id\": \"d\", \"question\": \"q\", \"answer\": \"1\", "
             "\"tags\": [\"t\"], \"meta\": {\"k\": 1}}",
             &a);
    parse_ok("{\"id\": \"d\", \"question\": \"q\", \"answer\": 1, "
             "\"tags\": [\"t\"], \"meta\": { \"k\" : 1 }}",
             &b);
    ck_assert_ptr_null(question_diff(&a, &b));
    question_release(&b);
    parse_ok("{\"id\": \"d\", \"question\": \"q\", \"answer\": \"2\", "
             "\"tags\": [\"t\"], \"meta\": {\"k\": 1}}",
             &b);
    ck_assert_str_eq(question_diff(&a, &b), "answer");
    question_release(&b);
    parse_ok("{\"id\": \"d\", \"question\": \"q\", \"answer\": \"1\", "
             "\"tags\": [\"u\"], \"meta\": {\"k\": 1}}",
             &b);
    ck_assert_str_eq(question_diff(&a, &b), "tags");
    question_release(&b);
    parse_ok("{\"id\": \"d\", \"question\": \"q\", \"answer\": \"1\", "
             "\"tags\": [\"t\"]}",
             &b);
    ck_assert_str_eq(question_diff(&a, &b), "meta");
    question_release(&b);
    question_release(&a);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Store: every test opens its own store (Check forks per test; an LMDB
 * environment must not cross a fork). */

typedef struct store_fx {
    char *dir;
    store *s;
} store_fx;

static void fx_open(store_fx *fx, size_t map_size)
{
    store_opts o = {STORE_NOSYNC, map_size};
    nsed_err e = {0};
    char *sd;

    fx->dir = tu_mkdtemp();
    sd = tu_path(fx->dir, "store");
    ck_assert_msg(store_open(sd, &o, &fx->s, &e) == 0, "%s", e.msg);
    free(sd);
}

static void fx_close(store_fx *fx)
{
    store_close(fx->s);
    tu_rmrf(fx->dir);
    free(fx->dir);
}

static char *fx_file(store_fx *fx, const char *name, const char *text)
{
    char *p = tu_path(fx->dir, name);

    tu_write_file(p, text, (size_t)-1);
    return p;
}

typedef struct seen {
    char ids[64][32];
    uint64_t seqs[64];
    char answers[64][16];
    size_t n;
    size_t stop_at; /* 0: never */
} seen;

static int see(const question *q, uint64_t seq, void *arg)
{
    seen *s = arg;

    ck_assert_uint_lt(s->n, 64);
    snprintf(s->ids[s->n], sizeof s->ids[s->n], "%s", q->id);
    snprintf(s->answers[s->n], sizeof s->answers[s->n], "%s",
             q->answer ? q->answer : "-");
    s->seqs[s->n] = seq;
    s->n++;
    return s->stop_at && s->n >= s->stop_at ? 77 : 0;
}

typedef struct scan_args {
    uint64_t start;
    seen *out;
} scan_args;

static int scan_txn(store_txn *t, void *arg, nsed_err *err)
{
    scan_args *a = arg;

    return questions_scan(t, a->start, see, a->out, err);
}

static void scan_store(store *s, uint64_t start, seen *out, int expect_rc)
{
    scan_args a = {start, out};
    nsed_err e = {0};

    ck_assert_int_eq(store_read(s, scan_txn, &a, &e), expect_rc);
}

START_TEST(ingest_is_idempotent)
{
    store_fx fx;
    questions_stats st = {0};
    nsed_err e = {0};
    size_t total = 0;
    seen sn = {0};

    fx_open(&fx, 0);
    ck_assert_int_eq(questions_ingest(fx.s, DATA_DIR "/good.jsonl", &st, &e),
                     0);
    ck_assert_uint_eq(st.lines, 9);
    ck_assert_uint_eq(st.questions, 5);
    ck_assert_uint_eq(st.added, 5);
    ck_assert_uint_eq(st.unchanged, 0);
    ck_assert_int_eq(questions_ingest(fx.s, DATA_DIR "/good.jsonl", &st, &e),
                     0);
    ck_assert_uint_eq(st.questions, 5);
    ck_assert_uint_eq(st.added, 0);
    ck_assert_uint_eq(st.unchanged, 5);
    ck_assert_int_eq(questions_total(fx.s, &total, &e), 0);
    ck_assert_uint_eq(total, 5);
    scan_store(fx.s, 0, &sn, 0);
    ck_assert_uint_eq(sn.n, 5);
    ck_assert_str_eq(sn.ids[0], "arith-1");
    ck_assert(sn.seqs[0] == 0);
    ck_assert_str_eq(sn.ids[4], "open-1");
    ck_assert(sn.seqs[4] == 4);
    fx_close(&fx);
}
END_TEST

START_TEST(ingest_bad_line_adds_nothing)
{
    store_fx fx;
    questions_stats st = {7, 7, 7, 7, 7};
    nsed_err e = {0};
    size_t total = 99;
    char *path;

    fx_open(&fx, 0);
    path = fx_file(&fx, "q.jsonl",
                   "{\"id\": \"a\", \"question\": \"1?\"}\n"
                   "{\"id\": \"b\", \"question\": \"2?\"}\n"
                   "{\"id\": \"c\", \"question\": \"3?\", \"answer\": {}}\n");
    ck_assert_int_eq(questions_ingest(fx.s, path, &st, &e), NSED_EINVAL);
    ck_assert(tu_contains(e.msg, "q.jsonl:3:31: \"answer\" must be"));
    ck_assert_uint_eq(st.added, 7);
    ck_assert_int_eq(questions_total(fx.s, &total, &e), 0);
    ck_assert_uint_eq(total, 0);
    /* a duplicate id late in the file also leaves the store untouched */
    free(path);
    path = fx_file(&fx, "dup.jsonl",
                   "{\"id\": \"a\", \"question\": \"1?\"}\n"
                   "{\"id\": \"b\", \"question\": \"2?\"}\n"
                   "\n"
                   "{\"id\": \"a\", \"question\": \"1?\"}\n");
    ck_assert_int_eq(questions_ingest(fx.s, path, &st, &e), NSED_EINVAL);
    ck_assert(tu_contains(e.msg, "dup.jsonl:4: duplicate id \"a\" (first at "
                                 "line 1)"));
    ck_assert_int_eq(questions_total(fx.s, &total, &e), 0);
    ck_assert_uint_eq(total, 0);
    ck_assert_int_eq(questions_ingest(fx.s, "/nonexistent.jsonl", &st, &e),
                     NSED_EIO);
    free(path);
    fx_close(&fx);
}
END_TEST

/* one.jsonl: questions "a" (1+1?, 2) and "b" (2+2?, 4). */
static char *two_questions(store_fx *fx)
{
    return fx_file(fx, "one.jsonl",
                   "{\"id\": \"a\", \"question\": \"1+1?\", \"answer\": 2}\n"
                   "{\"id\": \"b\", \"question\": \"2+2?\", \"answer\": 4}\n");
}

/* A file of n generated questions q0..q(n-1), then the line tail (NULL:
 * none): several of the ingest's write batches (4096 questions each). */
static char *big_file(store_fx *fx, const char *name, size_t n,
                      const char *tail)
{
    size_t cap = n * 64 + (tail ? strlen(tail) : 0) + 1, len = 0;
    char *text = malloc(cap), *p;

    ck_assert_ptr_nonnull(text);
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(text + len, cap - len,
                                "{\"id\": \"q%zu\", \"question\": \"%zu+1?\", "
                                "\"answer\": %zu}\n",
                                i, i, i + 1);
    if (tail)
        len += (size_t)snprintf(text + len, cap - len, "%s\n", tail);
    p = fx_file(fx, name, text);
    free(text);
    return p;
}

static bool unfinished(store *s)
{
    bool u = true;
    nsed_err e = {0};

    ck_assert_int_eq(questions_ingest_unfinished(s, &u, &e), 0);
    return u;
}

/* Forge what an ingest killed between its batches leaves: its record,
 * naming the first sequence number it gave. */
static int forge_partial_fn(store_txn *t, void *arg, nsed_err *err)
{
    char text[64];
    int n = snprintf(text, sizeof text, "{\"from\":%zu}", *(size_t *)arg);

    (void)err;
    return store_put(t, STORE_META, "ingest_partial", 14, text, (size_t)n);
}

/* The ingest writes a file in batches, and stays all or nothing: a bad
 * line, a duplicate id or a conflict after several batches went in
 * leaves the store as it was, and no record of an unfinished ingest. */
START_TEST(ingest_in_batches_is_all_or_nothing)
{
    static const char *const tails[] = {
        "{\"id\": \"b\", \"question\": \"2+2?\", \"answer\": 5}",
        "{\"id\": \"q1\", \"question\": \"1+1?\", \"answer\": 2}",
        "{\"id\": \"z\", \"question\": 7}",
    };
    static const char *const want[] = {
        "big.jsonl:10001: question \"b\" is already in the store with "
        "different content (the answer differs)",
        "big.jsonl:10001: duplicate id \"q1\" (first at line 2)",
        "big.jsonl:10001:",
    };
    store_fx fx;
    questions_stats st = {0};
    nsed_err e = {0};
    size_t total = 0;
    char *p1, *big;
    seen sn = {0};

    fx_open(&fx, 0);
    p1 = two_questions(&fx);
    ck_assert_int_eq(questions_ingest(fx.s, p1, &st, &e), 0);
    for (int i = 0; i < 3; i++) {
        big = big_file(&fx, "big.jsonl", 10000, tails[i]);
        ck_assert_int_ne(questions_ingest(fx.s, big, &st, &e), 0);
        ck_assert_msg(tu_contains(e.msg, want[i]), "%d: %s", i, e.msg);
        ck_assert_int_eq(questions_total(fx.s, &total, &e), 0);
        ck_assert_uint_eq(total, 2);
        ck_assert(!unfinished(fx.s));
        free(big);
    }
    /* without the bad tail: every question, numbered on from the store's */
    big = big_file(&fx, "big.jsonl", 10000, NULL);
    ck_assert_int_eq(questions_ingest(fx.s, big, &st, &e), 0);
    ck_assert_uint_eq(st.added, 10000);
    ck_assert_uint_eq(st.undone, 0);
    ck_assert_int_eq(questions_total(fx.s, &total, &e), 0);
    ck_assert_uint_eq(total, 10002);
    ck_assert(!unfinished(fx.s));
    scan_store(fx.s, 10001, &sn, 0);
    ck_assert_uint_eq(sn.n, 1);
    ck_assert_str_eq(sn.ids[0], "q9999");
    ck_assert(sn.seqs[0] == 10001);
    free(big);
    free(p1);
    fx_close(&fx);
}
END_TEST

/* What an ingest killed between its batches left (its questions, and
 * the record that it had not finished) is removed by the next ingest
 * before it starts, or by questions_recover, and only that. */
START_TEST(unfinished_ingest_is_undone)
{
    store_fx fx;
    questions_stats st = {0};
    nsed_err e = {0};
    size_t total = 0, from = 2, removed = 0;
    char *p1, *big;

    fx_open(&fx, 0);
    p1 = two_questions(&fx);
    big = big_file(&fx, "big.jsonl", 9000, NULL);
    ck_assert_int_eq(questions_ingest(fx.s, p1, &st, &e), 0);
    ck_assert_int_eq(questions_ingest(fx.s, big, &st, &e), 0);
    ck_assert(!unfinished(fx.s));
    /* as if the big file's ingest had been killed before its end */
    ck_assert_int_eq(store_write(fx.s, forge_partial_fn, &from, &e), 0);
    ck_assert(unfinished(fx.s));
    ck_assert_int_eq(questions_ingest(fx.s, big, &st, &e), 0);
    ck_assert_uint_eq(st.undone, 9000);
    ck_assert_uint_eq(st.added, 9000);
    ck_assert_uint_eq(st.unchanged, 0);
    ck_assert(!unfinished(fx.s));
    ck_assert_int_eq(questions_total(fx.s, &total, &e), 0);
    ck_assert_uint_eq(total, 9002);
    /* recover alone: the questions before "from" stay */
    ck_assert_int_eq(store_write(fx.s, forge_partial_fn, &from, &e), 0);
    ck_assert_int_eq(questions_recover(fx.s, &removed, &e), 0);
    ck_assert_uint_eq(removed, 9000);
    ck_assert(!unfinished(fx.s));
    ck_assert_int_eq(questions_total(fx.s, &total, &e), 0);
    ck_assert_uint_eq(total, 2);
    ck_assert_int_eq(questions_recover(fx.s, &removed, &e), 0);
    ck_assert_uint_eq(removed, 0);
    free(big);
    free(p1);
    fx_close(&fx);
}
END_TEST

START_TEST(ingest_conflict_refused)
{
    store_fx fx;
    questions_stats st = {0};
    nsed_err e = {0};
    char *p1, *p2;
    seen sn = {0};

    fx_open(&fx, 0);
    p1 = two_questions(&fx);
    p2 = fx_file(&fx, "two.jsonl",
                 "{\"id\": \"c\", \"question\": \"3+3?\", \"answer\": 6}\n"
                 "{\"id\": \"b\", \"question\": \"2+2?\", \"answer\": 5}\n");
    ck_assert_int_eq(questions_ingest(fx.s, p1, &st, &e), 0);
    ck_assert_int_eq(questions_ingest(fx.s, p2, &st, &e), NSED_EEXIST);
    ck_assert(tu_contains(e.msg, "two.jsonl:2: question \"b\" is already in "
                                 "the store with different content (the "
                                 "answer differs)"));
    /* nothing of two.jsonl went in, not even "c" before the conflict */
    scan_store(fx.s, 0, &sn, 0);
    ck_assert_uint_eq(sn.n, 2);
    ck_assert_str_eq(sn.answers[1], "4");
    free(p1);
    free(p2);
    fx_close(&fx);
}
END_TEST

START_TEST(ingest_appends_in_sequence)
{
    store_fx fx;
    questions_stats st = {0};
    nsed_err e = {0};
    char *p1, *p2;
    seen sn = {0};

    fx_open(&fx, 0);
    p1 = fx_file(&fx, "one.jsonl",
                 "{\"id\": \"z\", \"question\": \"first\"}\n"
                 "{\"id\": \"a\", \"question\": \"second\"}\n");
    /* same "a" (different formatting, same content), then two new ones */
    p2 = fx_file(&fx, "two.jsonl",
                 "{\"id\": \"m\", \"question\": \"third\"}\n"
                 "{\"question\":\"second\",\"id\":\"a\",\"tags\":null}\n"
                 "{\"id\": \"b\", \"question\": \"fourth\"}\n");
    ck_assert_int_eq(questions_ingest(fx.s, p1, &st, &e), 0);
    ck_assert_int_eq(questions_ingest(fx.s, p2, &st, &e), 0);
    ck_assert_uint_eq(st.added, 2);
    ck_assert_uint_eq(st.unchanged, 1);
    /* ingestion order, not key order */
    scan_store(fx.s, 0, &sn, 0);
    ck_assert_uint_eq(sn.n, 4);
    ck_assert_str_eq(sn.ids[0], "z");
    ck_assert_str_eq(sn.ids[1], "a");
    ck_assert_str_eq(sn.ids[2], "m");
    ck_assert_str_eq(sn.ids[3], "b");
    for (size_t i = 0; i < 4; i++)
        ck_assert(sn.seqs[i] == i);
    /* streaming from a start sequence */
    memset(&sn, 0, sizeof sn);
    scan_store(fx.s, 2, &sn, 0);
    ck_assert_uint_eq(sn.n, 2);
    ck_assert_str_eq(sn.ids[0], "m");
    ck_assert(sn.seqs[0] == 2);
    memset(&sn, 0, sizeof sn);
    scan_store(fx.s, 4, &sn, 0);
    ck_assert_uint_eq(sn.n, 0);
    /* fn's non-zero return stops the scan and comes back */
    memset(&sn, 0, sizeof sn);
    sn.stop_at = 3;
    scan_store(fx.s, 0, &sn, 77);
    ck_assert_uint_eq(sn.n, 3);
    free(p1);
    free(p2);
    fx_close(&fx);
}
END_TEST

typedef struct get_args {
    const char *id;
    question q;
    int rc;
    nsed_err e;
} get_args;

static int get_txn(store_txn *t, void *arg, nsed_err *err)
{
    get_args *g = arg;

    (void)err;
    g->rc = questions_get(t, g->id, &g->q, &g->e);
    return 0;
}

START_TEST(get_returns_stored_question)
{
    store_fx fx;
    questions_stats st = {0};
    nsed_err e = {0};
    get_args g = {"word-1", {0}, 0, {0}};

    fx_open(&fx, 0);
    ck_assert_int_eq(questions_ingest(fx.s, DATA_DIR "/good.jsonl", &st, &e),
                     0);
    ck_assert_int_eq(store_read(fx.s, get_txn, &g, &e), 0);
    ck_assert_int_eq(g.rc, 0);
    ck_assert_str_eq(g.q.id, "word-1");
    ck_assert_str_eq(g.q.answer, "7");
    ck_assert_uint_eq(g.q.ntags, 2);
    ck_assert_str_eq(g.q.tags[0], "word");
    ck_assert_str_eq(g.q.meta_json,
                     "{\"source\":\"hand\",\"note\":\"spaces  kept\","
                     "\"w\":[1.50,2e3]}");
    question_release(&g.q);
    g.id = "nope";
    ck_assert_int_eq(store_read(fx.s, get_txn, &g, &e), 0);
    ck_assert_int_eq(g.rc, NSED_ENOTFOUND);
    ck_assert_str_eq(g.e.msg, "question \"nope\" is not in the store");
    ck_assert_ptr_null(g.q.id);
    g.id = "";
    ck_assert_int_eq(store_read(fx.s, get_txn, &g, &e), 0);
    ck_assert_int_eq(g.rc, NSED_ENOTFOUND);
    fx_close(&fx);
}
END_TEST

START_TEST(ingest_survives_map_growth)
{
    store_fx fx;
    questions_stats st = {0};
    nsed_err e = {0};
    size_t total = 0, n = 3000;
    char *path, line[256];
    seen sn = {0};
    FILE *f;

    /* a tiny map forces MDB_MAP_FULL and replays of the ingest function:
     * the counts must come from the final attempt only */
    fx_open(&fx, 64 * 1024);
    path = tu_path(fx.dir, "many.jsonl");
    f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    for (size_t i = 0; i < n; i++) {
        snprintf(line, sizeof line,
                 "{\"id\": \"many-%05zu\", \"question\": \"What is %zu + "
                 "%zu?\", \"answer\": %zu, \"tags\": [\"easy\"]}\n",
                 i, i, i, 2 * i);
        fputs(line, f);
    }
    ck_assert_int_eq(fclose(f), 0);
    ck_assert_msg(questions_ingest(fx.s, path, &st, &e) == 0, "%s", e.msg);
    ck_assert_uint_eq(st.added, n);
    ck_assert_uint_eq(st.questions, n);
    ck_assert_uint_gt(store_map_size(fx.s), 64 * 1024);
    ck_assert_int_eq(questions_total(fx.s, &total, &e), 0);
    ck_assert_uint_eq(total, n);
    sn.stop_at = 2;
    scan_store(fx.s, n - 2, &sn, 77);
    ck_assert_str_eq(sn.ids[0], "many-02998");
    ck_assert_str_eq(sn.answers[1], "5998");
    ck_assert(sn.seqs[1] == n - 1);
    free(path);
    fx_close(&fx);
}
END_TEST

Suite *tu_suite(void)
{
    Suite *s = suite_create("questions");
    TCase *tc = tcase_create("parse_line");

    tcase_add_test(tc, parse_all_fields);
    tcase_add_test(tc, parse_optional_fields_absent);
    tcase_add_test(tc, parse_numeric_answers_exact);
    tcase_add_test(tc, parse_meta_verbatim);
    tcase_add_test(tc, parse_blank_lines_not_errors);
    tcase_add_test(tc, parse_crlf_bom_and_length);
    tcase_add_test(tc, parse_errors_name_columns);
    tcase_add_test(tc, parse_overlong_line_refused);
    tcase_add_test(tc, parse_survives_mutations);
    suite_add_tcase(s, tc);
    tc = tcase_create("bad_files");
    tcase_add_loop_test(tc, bad_file_reports_location, 0,
                        (int)(sizeof bad_cases / sizeof bad_cases[0]));
    tcase_add_test(tc, bad_files_all_in_table);
    suite_add_tcase(s, tc);
    tc = tcase_create("files");
    tcase_add_test(tc, good_file_streams_in_order);
    tcase_add_test(tc, crlf_bom_file_reads_the_same);
    tcase_add_test(tc, good_file_fields);
    tcase_add_test(tc, read_file_stops_when_asked);
    tcase_add_test(tc, missing_file_is_io_error);
    tcase_add_test(tc, empty_file_has_no_questions);
    tcase_add_test(tc, line_at_cap_accepted);
    tcase_add_test(tc, demo_set_is_valid);
    suite_add_tcase(s, tc);
    tc = tcase_create("records");
    tcase_add_test(tc, record_round_trip);
    tcase_add_test(tc, diff_names_the_field);
    suite_add_tcase(s, tc);
    tc = tcase_create("store");
    tcase_add_test(tc, ingest_is_idempotent);
    tcase_add_test(tc, ingest_bad_line_adds_nothing);
    tcase_add_test(tc, ingest_conflict_refused);
    tcase_add_test(tc, ingest_in_batches_is_all_or_nothing);
    tcase_add_test(tc, unfinished_ingest_is_undone);
    tcase_add_test(tc, ingest_appends_in_sequence);
    tcase_add_test(tc, get_returns_stored_question);
    tcase_add_test(tc, ingest_survives_map_growth);
    suite_add_tcase(s, tc);
    return s;
}
