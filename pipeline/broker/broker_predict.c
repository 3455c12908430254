/* broker_predict.c -- a team's accuracy predicted from its seats' p_g and
 * p_v, by a seeded simulation of the protocol (docs/broker.md has the
 * derivation and what the model leaves out). */
#include "pipeline/broker/broker.h"

#include <math.h>

/* Scores closer than this are tied (they are sums of a few terms 1/sqrt(m)). */
#define SCORE_EPS 1e-9

/* What a uniform draw decides; each draw's numbers are a pure function of
 * (draw, round, purpose, i, j), so two teams that share seat positions see
 * the same numbers there (common random numbers: the comparison between
 * teams is less noisy than either prediction). */
enum draw_purpose {
    DRAW_PROPOSE,
    DRAW_JUDGE,
    DRAW_REVISE,
    DRAW_TIE,
};

static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15u;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9u;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebu;
    return x ^ (x >> 31);
}

static double uniform(int draw, int round, enum draw_purpose what, size_t i,
                      size_t j)
{
    uint64_t h = mix64(BROKER_PREDICT_SEED ^ (uint64_t)draw);

    h = mix64(h ^ ((uint64_t)round << 8 | (uint64_t)what));
    h = mix64(h ^ ((uint64_t)i << 32 | (uint64_t)j));
    return (double)(h >> 11) * 0x1p-53;
}

/* Answers are ids: 0 is the reference, seat i's own wrong answer is i + 1
 * (wrong answers of different seats differ, so they never pool votes). */
static bool is_right(int ans)
{
    return ans == 0;
}

/* One round's vote over every seat's answer: the winner's seat or -1, and
 * its conviction. Each evaluating seat sees the n - 1 others and judges
 * each right with probability p_v; its weight is +-1 of equal size, so
 * under signed quadratic voting each entry is +-1/sqrt(n - 1). */
static long vote(const broker_seat_skill *s, size_t n, const int *ans, int draw,
                 int round, double *conviction)
{
    double score[WORKFLOW_MAX_SEATS] = {0}, best = 0, sum = 0;
    size_t scored[WORKFLOW_MAX_SEATS] = {0}, ntied = 0;
    long tied[WORKFLOW_MAX_SEATS];
    long win = -1;

    *conviction = 0;
    if (n < 2)
        return -1;
    for (size_t i = 0; i < n; i++) {
        double q = 1 / sqrt((double)(n - 1));

        if (!s[i].evaluates)
            continue;
        for (size_t j = 0; j < n; j++) {
            bool says_right;

            if (j == i)
                continue;
            says_right = uniform(draw, round, DRAW_JUDGE, i, j) < s[i].p_v;
            if (!is_right(ans[j]))
                says_right = !says_right;
            score[j] += says_right ? q : -q;
            scored[j]++;
        }
    }
    for (size_t j = 0; j < n; j++) {
        if (!scored[j])
            continue;
        sum += fabs(score[j]);
        if (ntied && score[j] < best - SCORE_EPS)
            continue;
        if (!ntied || score[j] > best + SCORE_EPS)
            ntied = 0;
        if (!ntied)
            best = score[j];
        tied[ntied++] = (long)j;
    }
    if (!ntied)
        return -1;
    win = tied[(size_t)(uniform(draw, round, DRAW_TIE, 0, 0) * (double)ntied)];
    *conviction = sum > 0 ? score[win] / sum : 0;
    return win;
}

/* The majority of the answers (ties by a uniform draw), as the protocol's
 * final answer when no round had a winner. */
static int majority(const int *ans, size_t n, int draw)
{
    size_t count[WORKFLOW_MAX_SEATS + 1] = {0}, best = 0, ntied = 0;
    int tied[WORKFLOW_MAX_SEATS + 1];

    for (size_t i = 0; i < n; i++)
        count[ans[i]]++;
    for (int a = 0; a <= (int)n; a++) {
        if (!count[a] || count[a] < best)
            continue;
        if (count[a] > best)
            ntied = 0;
        best = count[a];
        tied[ntied++] = a;
    }
    return tied[(size_t)(uniform(draw, 0, DRAW_TIE, 1, 0) * (double)ntied)];
}

double broker_predict_accuracy(const broker_seat_skill *s, size_t n,
                               const broker_protocol *pr, int draws)
{
    int right = 0;

    if (n == 0 || n > WORKFLOW_MAX_SEATS || draws < 1)
        return 0;
    for (int d = 0; d < draws; d++) {
        int ans[WORKFLOW_MAX_SEATS], final = -1, prev = -1, stable = 0;

        for (size_t i = 0; i < n; i++)
            ans[i] = uniform(d, 0, DRAW_PROPOSE, i, 0) < s[i].p_g ? 0
                                                                  : (int)i + 1;
        for (int r = 0; r < pr->rounds_max; r++) {
            double conv;
            long w;

            if (prev >= 0)
                for (size_t i = 0; i < n; i++) {
                    bool accept = uniform(d, r, DRAW_REVISE, i, 0) < s[i].p_v;

                    if (!is_right(prev))
                        accept = !accept;
                    if (accept)
                        ans[i] = prev;
                }
            w = vote(s, n, ans, d, r, &conv);
            if (w < 0) {
                stable = 0;
                prev = -1;
            } else {
                stable = ans[w] == prev ? stable + 1 : 1;
                prev = final = ans[w];
            }
            if (r + 1 < pr->rounds_min)
                continue;
            if (w >= 0 && pr->consensus_margin > 0 &&
                conv >= pr->consensus_margin)
                break;
            if (w >= 0 && pr->stable_answer > 0 && stable >= pr->stable_answer)
                break;
        }
        if (final < 0)
            final = majority(ans, n, d);
        right += is_right(final);
    }
    return (double)right / draws;
}
