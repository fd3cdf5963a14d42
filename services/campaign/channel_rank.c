/*  channel_rank — see channel_rank.h.  */
#undef NDEBUG                   //  The self-test needs its asserts
#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "channel_rank.h"

double
channel_rank_round6 (double x)
{
    return floor (x * 1e6 + 0.5) / 1e6;
}

channel_rank_posterior_t
channel_rank_posterior (double successes, double trials, double alpha, double beta, double z)
{
    double s = fmax (0, fmin (successes, trials));
    double a = alpha + s;
    double b = beta + (trials - s);
    double mean = a / (a + b);
    double sd = sqrt (a * b / (pow (a + b, 2) * (a + b + 1)));
    channel_rank_posterior_t p = {
        channel_rank_round6 (a), channel_rank_round6 (b),
        channel_rank_round6 (mean), channel_rank_round6 (sd),
        channel_rank_round6 (fmax (0, mean - z * sd)),
        channel_rank_round6 (fmin (1, mean + z * sd))
    };
    return p;
}

static int
s_cmp (const void *a, const void *b)
{
    const channel_rank_row_t *x = a, *y = b;
    if (x->p.lower != y->p.lower)
        return x->p.lower > y->p.lower ? -1 : 1;
    if (x->p.mean != y->p.mean)
        return x->p.mean > y->p.mean ? -1 : 1;
    return strcmp (x->channel, y->channel);
}

void
channel_rank (channel_rank_row_t *rows, size_t n, double alpha, double beta, double z)
{
    for (size_t i = 0; i < n; i++) {
        channel_rank_row_t *row = &rows [i];
        row->p = channel_rank_posterior (row->successes, row->trials, alpha, beta, z);
        row->rate = row->trials > 0
                  ? channel_rank_round6 (fmin (1, row->successes / row->trials)) : 0;
    }
    if (n > 1)
        qsort (rows, n, sizeof *rows, s_cmp);
    for (size_t i = 0; i < n; i++)
        rows [i].rank = (int) i + 1;
}

//  --------------------------------------------------------------------
//  Self-test (the rules' cases, plus edges)

static bool
s_near (double a, double b)
{
    return fabs (a - b) <= 1e-6;
}

void
channel_rank_test (bool verbose)
{
    (void) verbose;
    //  Beta(1,1) prior, no data: the prior itself
    channel_rank_posterior_t p = channel_rank_posterior (0, 0, 1, 1, 1.645);
    assert (p.alpha == 1 && p.beta == 1 && s_near (p.mean, 0.5));
    assert (s_near (p.sd, sqrt (1.0 / 12)));
    //  3 of 10: Beta(4, 8), mean 1/3, sd sqrt(32 / (144 * 13))
    p = channel_rank_posterior (3, 10, 1, 1, 1.645);
    assert (p.alpha == 4 && p.beta == 8 && s_near (p.mean, 1.0 / 3));
    assert (s_near (p.sd, sqrt (32.0 / (144 * 13))));
    assert (s_near (p.lower, 1.0 / 3 - 1.645 * sqrt (32.0 / (144 * 13))));
    assert (p.lower < p.mean && p.mean < p.upper);
    //  Fractional successes are fine; more than trials is clamped
    p = channel_rank_posterior (2.5, 10, 1, 1, 0);
    assert (s_near (p.alpha, 3.5) && s_near (p.beta, 8.5) && s_near (p.lower, p.mean));
    p = channel_rank_posterior (20, 10, 1, 1, 1);
    assert (p.alpha == 11 && p.beta == 1);
    //  Bounds stay in [0, 1]
    p = channel_rank_posterior (0, 1, 1, 1, 10);
    assert (p.lower == 0 && p.upper <= 1);
    //  Edge: negative successes count as none
    p = channel_rank_posterior (-3, 10, 1, 1, 1);
    assert (p.alpha == 1 && p.beta == 11);

    //  Evidence beats luck: 1/1 has the higher rate but 60/100 the higher lower bound
    channel_rank_row_t rows [] = {
        { .channel = "video", .successes = 1, .trials = 1 },
        { .channel = "email", .successes = 60, .trials = 100 },
        { .channel = "display", .successes = 1, .trials = 200 },
    };
    channel_rank (rows, 3, 1, 1, 1.645);
    assert (strcmp (rows [0].channel, "email") == 0 && rows [0].rank == 1);
    assert (strcmp (rows [1].channel, "video") == 0 && strcmp (rows [2].channel, "display") == 0);
    assert (s_near (rows [0].rate, 0.6) && s_near (rows [1].rate, 1));
    assert (rows [2].rank == 3);
    //  With z = 0 the posterior mean alone ranks: the lucky channel leads
    channel_rank_row_t rows2 [] = {
        { .channel = "email", .successes = 60, .trials = 100 },
        { .channel = "video", .successes = 1, .trials = 1 },
    };
    channel_rank (rows2, 2, 1, 1, 0);
    assert (strcmp (rows2 [0].channel, "video") == 0);
    //  Ties are broken by channel name, deterministically
    channel_rank_row_t rows3 [] = {
        { .channel = "social", .successes = 1, .trials = 4 },
        { .channel = "email", .successes = 1, .trials = 4 },
    };
    channel_rank (rows3, 2, 1, 1, 1.645);
    assert (strcmp (rows3 [0].channel, "email") == 0 && strcmp (rows3 [1].channel, "social") == 0);
    //  Edge: no rows, and a row without trials has rate 0
    channel_rank (NULL, 0, 1, 1, 1);
    channel_rank_row_t empty [] = { { .channel = "event" } };
    channel_rank (empty, 1, 1, 1, 1);
    assert (empty [0].rate == 0 && empty [0].rank == 1);
    assert (channel_rank_round6 (0.1234565) == 0.123457 || channel_rank_round6 (0.1234565) == 0.123456);
}
