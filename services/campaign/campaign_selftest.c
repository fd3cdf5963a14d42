/*  Self-tests of the campaign stage's pure modules; argv[1] runs one. */
#include <stdio.h>
#include <string.h>
#include "attribution.h"
#include "audience.h"
#include "channel_rank.h"
#include "funnel_selftest.h"


static const funnel_selftest_t s_tests [] = {
    { "audience", audience_test },
    { "attribution", attribution_test },
    { "channel_rank", channel_rank_test },
    { NULL, NULL }
};

int
main (int argc, char *argv [])
{
    return funnel_selftest_run (argc, argv, s_tests);
}
