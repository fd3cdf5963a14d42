/*  Self-tests of the sales stage's pure modules (no sockets, no Redis). */
#include <stdio.h>
#include <string.h>
#include "deal_policy.h"

int
main (int argc, char *argv [])
{
    bool verbose = argc > 1 && strcmp (argv [1], "-v") == 0;
    deal_policy_test (verbose);
    printf ("sales_selftest: all passed\n");
    return 0;
}
