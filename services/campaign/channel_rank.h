/*  channel_rank — which channel to spend on next, with the evidence.

    Pure functions. Each channel's conversion rate gets a Beta-Binomial
    posterior: prior Beta(alpha, beta), `successes` conversions
    (attribution credit, may be fractional) out of `trials` contacts
    reached. Channels are ranked by the posterior's lower bound (mean -
    z·sd, a normal approximation): a channel must show both a good rate and
    enough evidence to lead, so three lucky contacts do not outrank three
    hundred steady ones. Every figure is rounded to 6 decimals.

        channel_rank_row_t rows [] = {{ .channel = "email", .successes = 3, .trials = 10 }};
        channel_rank (rows, 1, 1, 1, 1.645);       //  rows[0].rank == 1
*/
#ifndef CHANNEL_RANK_H_INCLUDED
#define CHANNEL_RANK_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

typedef struct {
    double alpha, beta, mean, sd, lower, upper;
} channel_rank_posterior_t;

typedef struct {
    const char *channel;
    double successes, trials;
    double spend, revenue;              //  Carried along for the caller
    //  Set by channel_rank:
    channel_rank_posterior_t p;
    double rate;
    int rank;
} channel_rank_row_t;

//  x rounded half up to 6 decimals.
double
    channel_rank_round6 (double x);
channel_rank_posterior_t
    channel_rank_posterior (double successes, double trials, double alpha, double beta,
                            double z);
//  Sorts rows best first (lower bound, then mean, then channel name) and
//  sets each one's posterior, rate and rank (1 = spend here next).
void
    channel_rank (channel_rank_row_t *rows, size_t n, double alpha, double beta, double z);

void
    channel_rank_test (bool verbose);

#endif
