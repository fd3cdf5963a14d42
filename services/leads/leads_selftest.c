/*  Self-tests of the leads stage's pure modules; argv[1] runs one. */
#include <stdio.h>
#include <string.h>
#include "identity.h"
#include "lead_score.h"
#include "routing.h"
#include "funnel_selftest.h"


static const funnel_selftest_t s_tests [] = {
    { "identity", identity_test },
    { "lead_score", lead_score_test },
    { "routing", routing_test },
    { NULL, NULL }
};

int
main (int argc, char *argv [])
{
    return funnel_selftest_run (argc, argv, s_tests);
}
