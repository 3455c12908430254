/* test_fit.c -- the efficiency-fatigue fit on the exploration slice
 * (pipeline/runner/runner_fit.h, stages/converge.h).
 *
 * Every number is checked against one the test computes another way: the
 * curve's parameters are the ones the data were made from, R^2 by its own
 * formula, T_opt by a brute-force argmax of the known curve, the slice's
 * membership by the test's own SHA-256 of the documented text.
 */
#include "pipeline/runner/runner_fit.h"
#include "pipeline/workflow/workflow.h"
#include "stages/converge.h"
#include "store/store.h"
#include "store/store_keys.h"
#include "testutil.h"

#include <check.h>
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEMO_Q NSED_SOURCE_DIR "/workflows/demo-questions.jsonl"
#define DEMO_SIM NSED_SOURCE_DIR "/tests/sim/configs/demo-sim.yaml"

/* ---- an independent SHA-256 (FIPS 180-4) --------------------------------- */

static const uint32_t sha_k[64] =
    {0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1,
     0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3,
     0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
     0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
     0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147,
     0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
     0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
     0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
     0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
     0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
     0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

static uint32_t ror(uint32_t x, int n)
{
    return x >> n | x << (32 - n);
}

static void sha_block(uint32_t h[8], const uint8_t *p)
{
    uint32_t w[64], v[8];

    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ror(w[i - 15], 7) ^ ror(w[i - 15], 18) ^ w[i - 15] >> 3;
        uint32_t s1 = ror(w[i - 2], 17) ^ ror(w[i - 2], 19) ^ w[i - 2] >> 10;

        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    memcpy(v, h, sizeof v);
    for (int i = 0; i < 64; i++) {
        uint32_t s1 = ror(v[4], 6) ^ ror(v[4], 11) ^ ror(v[4], 25);
        uint32_t ch = (v[4] & v[5]) ^ (~v[4] & v[6]);
        uint32_t t1 = v[7] + s1 + ch + sha_k[i] + w[i];
        uint32_t s0 = ror(v[0], 2) ^ ror(v[0], 13) ^ ror(v[0], 22);
        uint32_t mj = (v[0] & v[1]) ^ (v[0] & v[2]) ^ (v[1] & v[2]);

        memmove(v + 1, v, 7 * sizeof *v);
        v[4] += t1;
        v[0] = t1 + s0 + mj;
    }
    for (int i = 0; i < 8; i++)
        h[i] += v[i];
}

static void sha256(const void *data, size_t n, uint8_t out[32])
{
    uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                     0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    const uint8_t *p = data;
    uint8_t last[128] = {0};
    size_t full = n / 64 * 64, rest = n - full, tail;

    for (size_t i = 0; i < full; i += 64)
        sha_block(h, p + i);
    memcpy(last, p + full, rest);
    last[rest] = 0x80;
    tail = rest + 9 <= 64 ? 64 : 128;
    for (int i = 0; i < 8; i++)
        last[tail - 1 - i] = (uint8_t)((uint64_t)n * 8 >> (8 * i));
    sha_block(h, last);
    if (tail == 128)
        sha_block(h, last + 64);
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < 4; j++)
            out[4 * i + j] = (uint8_t)(h[i] >> (24 - 8 * j));
}

/* The documented rule: x = the first 8 bytes of
 * SHA-256("nsed-explore\n<seed>\n<id>") big-endian; in iff
 * (x >> 11) / 2^53 < share. */
static bool my_in_slice(const char *id, uint64_t seed, double share)
{
    char text[512];
    uint8_t d[32];
    uint64_t x = 0;
    int n = snprintf(text, sizeof text, "nsed-explore\n%" PRIu64 "\n%s", seed,
                     id);

    ck_assert(n > 0 && (size_t)n < sizeof text);
    sha256(text, (size_t)n, d);
    for (int i = 0; i < 8; i++)
        x = x << 8 | d[i];
    return (double)(x >> 11) / 9007199254740992.0 < share;
}

START_TEST(own_sha256_is_sha256)
{
    uint8_t d[32];
    char hex[65], big[200];

    sha256("abc", 3, d);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", d[i]);
    ck_assert_str_eq(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9c"
                          "b410ff61f20015ad");
    /* two blocks of padding */
    memset(big, 'a', 56);
    sha256(big, 56, d);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", d[i]);
    ck_assert_str_eq(hex, "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090"
                          "ef7970686ec6738a");
}
END_TEST

/* converge_in_slice agrees with the documented rule on 2000 ids, and the
 * share is near 15%. */
START_TEST(slice_membership_is_the_documented_hash)
{
    size_t in = 0;

    for (int i = 0; i < 2000; i++) {
        char id[32];
        bool mine;

        snprintf(id, sizeof id, "q%04d", i);
        mine = my_in_slice(id, 42, 0.15);
        ck_assert_msg(converge_in_slice(id, 42, 0.15) == mine, "%s", id);
        in += mine;
        ck_assert(converge_in_slice(id, 7, 1.0));
        ck_assert(!converge_in_slice(id, 7, 0.0));
    }
    ck_assert_msg(in > 240 && in < 360, "%zu of 2000", in);
}
END_TEST

/* ---- the fit on synthetic data ------------------------------------------ */

static double U(double t, double u0, double k, double b)
{
    return 1 - (1 - u0) * exp(-k * t) - b * t * t;
}

/* R^2 as the test reads the definition. */
static double my_r2(const double *n, const double *kk, int len, double u0,
                    double k, double b)
{
    double sw = 0, sy = 0, ssr = 0, sst = 0, ybar;

    for (int t = 0; t < len; t++) {
        sw += n[t];
        sy += kk[t];
    }
    ybar = sy / sw;
    for (int t = 0; t < len; t++) {
        double y = kk[t] / n[t];

        ssr += n[t] * (y - U(t, u0, k, b)) * (y - U(t, u0, k, b));
        sst += n[t] * (y - ybar) * (y - ybar);
    }
    return 1 - ssr / sst;
}

/* The argmax of the known curve on [0, 64], step 1e-4. */
static double brute_argmax(double u0, double k, double b)
{
    double best = -INFINITY, at = 0;

    for (double t = 0; t <= 64; t += 1e-4)
        if (U(t, u0, k, b) > best) {
            best = U(t, u0, k, b);
            at = t;
        }
    return at;
}

START_TEST(fit_recovers_an_exact_peak)
{
    const double u0 = 0.5, k = 0.8, b = 0.01;
    double n[8], kk[8];
    runner_fit f;

    for (int t = 0; t < 8; t++) {
        n[t] = 1000;
        kk[t] = 1000 * U(t, u0, k, b);
    }
    ck_assert_int_eq(runner_fit_curve(n, kk, 8, &f), 0);
    ck_assert_uint_eq(f.points, 8);
    ck_assert_double_eq_tol(f.judged, 8000, 1e-9);
    ck_assert_double_eq_tol(f.u0.est, u0, 1e-6);
    ck_assert_double_eq_tol(f.k.est, k, 1e-6);
    ck_assert_double_eq_tol(f.beta.est, b, 1e-8);
    ck_assert_double_eq_tol(f.r2, 1.0, 1e-9);
    ck_assert_double_eq_tol(f.r2,
                            my_r2(n, kk, 8, f.u0.est, f.k.est, f.beta.est),
                            1e-9);
    ck_assert_double_eq_tol(f.t_opt, brute_argmax(u0, k, b), 1e-3);
    fprintf(stderr,
            "fit: exact peak: R^2 %.6f, T_opt %.3f (brute force "
            "%.3f)\n",
            f.r2, f.t_opt, brute_argmax(u0, k, b));
}
END_TEST

/* xorshift64*: the test's own seeded noise */
static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ULL;
}

START_TEST(fit_recovers_a_noisy_peak)
{
    const double u0 = 0.45, k = 0.9, b = 0.012;
    double n[8], kk[8], truth = brute_argmax(u0, k, b);
    uint64_t s = 0x9e3779b97f4a7c15ULL;
    runner_fit f;
    char why[96];

    for (int t = 0; t < 8; t++) {
        n[t] = 400;
        kk[t] = 0;
        for (int i = 0; i < 400; i++)
            kk[t] += (double)(rng_next(&s) >> 11) / 9007199254740992.0 <
                     U(t, u0, k, b);
    }
    ck_assert_int_eq(runner_fit_curve(n, kk, 8, &f), 0);
    ck_assert_double_eq_tol(f.u0.est, u0, 0.05);
    ck_assert_double_eq_tol(f.k.est, k, 0.4);
    ck_assert_double_eq_tol(f.beta.est, b, 0.004);
    /* the intervals are intervals around the estimates, and hold the truth */
    ck_assert(f.u0.lo < u0 && u0 < f.u0.hi);
    ck_assert(f.beta.lo < b && b < f.beta.hi);
    ck_assert(f.u0.se > 0 && f.k.se > 0 && f.beta.se > 0);
    ck_assert_double_eq_tol(f.r2,
                            my_r2(n, kk, 8, f.u0.est, f.k.est, f.beta.est),
                            1e-9);
    ck_assert(f.r2 >= 0.95);
    ck_assert_double_eq_tol(f.t_opt, truth, 1.0);
    fprintf(stderr,
            "fit: noisy peak (n 400/round): R^2 %.4f, T_opt %.3f "
            "(true peak %.3f)\n",
            f.r2, f.t_opt, truth);
    f.questions = 50;
    ck_assert(runner_fit_good(&f, 0.8, 30, why, sizeof why));
    ck_assert_str_eq(why, "");
    f.questions = 12;
    ck_assert(!runner_fit_good(&f, 0.8, 30, why, sizeof why));
    ck_assert_str_eq(why, "12 slice questions < 30");
    f.r2 = 0.41;
    ck_assert(!runner_fit_good(&f, 0.8, 30, why, sizeof why));
    ck_assert_str_eq(why, "R^2 0.41 < 0.8");
}
END_TEST

/* Flat data: no peak in the curve's sense gives a finite answer or
 * INFINITY, never a crash; too few rounds is no fit. */
START_TEST(fit_edge_cases)
{
    double n[8] = {100, 100, 100, 0, 0, 0, 0, 0};
    double kk[8] = {50, 70, 80, 0, 0, 0, 0, 0};
    runner_fit f;

    ck_assert_int_eq(runner_fit_curve(n, kk, 8, &f), NSED_ENOTFOUND);
    /* a rising curve without fatigue: beta ~ 0 */
    for (int t = 0; t < 8; t++) {
        n[t] = 1000;
        kk[t] = 1000 * U(t, 0.5, 0.7, 0);
    }
    ck_assert_int_eq(runner_fit_curve(n, kk, 8, &f), 0);
    ck_assert_double_eq_tol(f.beta.est, 0, 1e-8);
    ck_assert(f.t_opt > 20);
    /* falling from the start: T_opt 0 */
    for (int t = 0; t < 8; t++)
        kk[t] = 1000 * (0.8 - 0.02 * t);
    ck_assert_int_eq(runner_fit_curve(n, kk, 8, &f), 0);
    ck_assert(f.t_opt < 1.0);
}
END_TEST

/* ---- end to end: the slice in a run ------------------------------------- */

static const char slice_wf[] =
    "name: fit-slice\nversion: 1\nseed: 42\nmodels:\n"
    "  - {id: alpha, endpoint: \"${NSED_SIM_URL}\", model: sim-alpha, "
    "family: alpha, max_concurrency: 8, structured_output: true}\n"
    "  - {id: beta, endpoint: \"${NSED_SIM_URL}\", model: sim-beta, "
    "family: beta, max_concurrency: 8, structured_output: true}\n"
    "  - {id: gamma, endpoint: \"${NSED_SIM_URL}\", model: sim-gamma, "
    "family: gamma, max_concurrency: 8, structured_output: true}\n"
    "broker: {policy: fixed}\n"
    "teams:\n  main:\n    roles:\n"
    "      - {name: solver, count: 3, models: [alpha, beta, gamma]}\n"
    "rounds:\n  min: 1\n  max: 5\n"
    "  stop: {stable_answer: 1, efficiency_fatigue: {explore: 0.3}}\n"
    "answer: {extract: boxed, compare: numeric}\n";

/* Replace the store's "rounds" record with one an older nsed wrote. */
static int put_old_rounds(store_txn *txn, void *arg, nsed_err *err)
{
    static const char old[] = "{\"n\":[120,100,90],\"k\":[90,80,70]}";
    store_key key;

    (void)arg;
    (void)err;
    store_keys_rounds(&key);
    return store_put(txn, STORE_TELEMETRY, key.bytes, key.len, old,
                     strlen(old));
}

/* Slice questions run all 5 rounds though stable_answer: 1 stops every
 * other question at once; the slice is the hash rule's; the export marks
 * it; status counts it. */
START_TEST(slice_runs_every_round)
{
    tu_sim sim;
    char *wf = tu_path(tu_tmp, "wf.yaml"), *sdir = tu_path(tu_tmp, "store");
    char *out = NULL, *err = NULL, *exp, *line, *save = NULL;
    size_t rows = 0, in = 0;
    cJSON *st, *fit;

    tu_write_file(wf, slice_wf, strlen(slice_wf));
    tu_sim_start(&sim, DEMO_SIM, NULL, NULL);
    ck_assert_msg(TU_NSED(sim.url, &out, &err, "run", wf, "--questions", DEMO_Q,
                          "--store", sdir, "--quiet") == 0,
                  "%s", err);
    exp = tu_nsed_export(sdir);
    for (line = strtok_r(exp, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        cJSON *r = cJSON_Parse(line);
        const char *id = cJSON_GetObjectItemCaseSensitive(r, "id")->valuestring;
        bool mine = my_in_slice(id, 42, 0.3);
        bool marked =
            cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "exploration"));
        double rounds = tu_jnum(r, "rounds", NULL);
        const char *why =
            cJSON_GetObjectItemCaseSensitive(r, "stop_reason")->valuestring;

        ck_assert_msg(mine == marked, "%s: slice %d, marked %d", id, mine,
                      marked);
        if (mine) {
            ck_assert_msg(rounds == 5 && !strcmp(why, "max_rounds"),
                          "%s: %.0f rounds, %s", id, rounds, why);
            in++;
        } else {
            ck_assert_msg(rounds < 5, "%s: %.0f rounds", id, rounds);
        }
        rows++;
        cJSON_Delete(r);
    }
    ck_assert_uint_eq(rows, 120);
    ck_assert(in > 20 && in < 60);
    st = tu_nsed_status(sdir);
    fit = cJSON_GetObjectItemCaseSensitive(st, "fatigue_fit");
    ck_assert(cJSON_IsObject(fit));
    ck_assert_double_eq(tu_jnum(fit, "slice_questions", NULL), (double)in);
    ck_assert_double_eq(tu_jnum(fit, "explore", NULL), 0.3);
    cJSON_Delete(st);

    /* a "rounds" record of an older nsed (no slice arrays) still reads:
     * the all-question rounds as stored, an empty slice, no fit */
    {
        store *sto = NULL;
        nsed_err e = {0};
        cJSON *rounds;

        ck_assert_int_eq(store_open(sdir, NULL, &sto, &e), 0);
        ck_assert_int_eq(store_write(sto, put_old_rounds, NULL, &e), 0);
        store_close(sto);
        st = tu_nsed_status(sdir);
        fit = cJSON_GetObjectItemCaseSensitive(st, "fatigue_fit");
        ck_assert_double_eq(tu_jnum(fit, "slice_questions", NULL), 0);
        ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(
                             fit, "slice_rounds")),
                         0);
        ck_assert(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(fit,
                                                                 "fitted")));
        rounds = cJSON_GetObjectItemCaseSensitive(st, "rounds");
        ck_assert_int_eq(cJSON_GetArraySize(rounds), 3);
        ck_assert_double_eq(tu_jnum(cJSON_GetArrayItem(rounds, 2),
                                    "winner_correct", NULL),
                            70);
        cJSON_Delete(st);
    }
    free(exp);
    free(out);
    free(err);
    tu_sim_stop(&sim);
    free(wf);
    free(sdir);
}
END_TEST

/* ---- the workflow keys -------------------------------------------------- */

static workflow *load(const char *text)
{
    workflow *wf = NULL;
    nsed_err e = {0};
    int rc = workflow_load_string("t.yaml", text, strlen(text), &wf, &e);

    ck_assert_msg(rc == 0, "%s", e.msg);
    return wf;
}

/* The fatigue rule's new keys at their defaults change no hash: the
 * fatigue test workflow hashes as it did before they existed (the hash
 * printed by the nsed before this change, whose default prompts are
 * pinned for it), and giving the defaults explicitly is the same
 * workflow. */
START_TEST(new_keys_keep_the_hash)
{
    char *file = tu_read_file(NSED_SOURCE_DIR "/tests/data/runner/fatigue.yaml",
                              NULL);
    char *text = NULL;
    const char *from = "efficiency_fatigue: {effort: 1.0}";
    char *p, *text2;
    workflow *a, *b;
    size_t len;

    ck_assert_int_gt(asprintf(&text, "%s%s", file, tu_previous_prompts), 0);
    free(file);
    p = strstr(text, from);
    ck_assert_ptr_nonnull(p);
    a = load(text);
    ck_assert_str_eq(workflow_hash(a), "0b1dad766c928b550f52a56d2a0224577c58e"
                                       "0a546b7986d1dc2029ce2395b04");
    ck_assert_double_eq(a->rounds.fatigue_explore, 0.15);
    ck_assert_double_eq(a->rounds.fatigue_min_r2, 0.8);
    ck_assert_double_eq(a->rounds.fatigue_min_questions, 30);
    ck_assert_ptr_null(strstr(workflow_canonical(a), "explore"));
    len = strlen(text) + 200;
    text2 = malloc(len);
    snprintf(text2, len,
             "%.*sefficiency_fatigue: {effort: 1.0, explore: "
             "0.15, fit_min_r2: 0.8, fit_min_questions: 30}%s",
             (int)(p - text), text, p + strlen(from));
    b = load(text2);
    ck_assert_str_eq(workflow_hash(b), workflow_hash(a));
    workflow_free(b);
    free(text2);
    workflow_free(a);
    free(text);
}
END_TEST

Suite *tu_suite(void)
{
    Suite *s = suite_create("fit");
    TCase *u = tcase_create("unit"), *e = tcase_create("run");

    tcase_add_test(u, own_sha256_is_sha256);
    tcase_add_test(u, slice_membership_is_the_documented_hash);
    tcase_add_test(u, fit_recovers_an_exact_peak);
    tcase_add_test(u, fit_recovers_a_noisy_peak);
    tcase_add_test(u, fit_edge_cases);
    tcase_add_test(u, new_keys_keep_the_hash);
    suite_add_tcase(s, u);
    tcase_add_checked_fixture(e, tu_tmp_setup, tu_tmp_teardown);
    tcase_set_timeout(e, 120);
    tcase_add_test(e, slice_runs_every_round);
    suite_add_tcase(s, e);
    return s;
}
