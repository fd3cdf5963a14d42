/*  Self-tests of the retention stage's pure modules (no sockets, no Redis). */
#include <stdio.h>
#include <string.h>
#include "cohort.h"
#include "customer_health.h"

int
main (int argc, char *argv [])
{
    bool verbose = argc > 1 && strcmp (argv [1], "-v") == 0;
    customer_health_test (verbose);
    cohort_test (verbose);
    printf ("retention_selftest: all passed\n");
    return 0;
}
