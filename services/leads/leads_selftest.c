/*  Self-tests of the leads stage's pure modules; argv[1] runs one. */
#include <stdio.h>
#include <string.h>
#include "identity.h"
#include "lead_score.h"
#include "routing.h"

typedef struct { const char *name; void (*test) (bool verbose); } selftest_t;

static const selftest_t s_tests [] = {
    { "identity", identity_test },
    { "lead_score", lead_score_test },
    { "routing", routing_test },
    { NULL, NULL }
};

int
main (int argc, char *argv [])
{
    const char *only = argc > 1 ? argv [1] : NULL;
    int run = 0;
    for (const selftest_t *t = s_tests; t->name; t++)
        if (!only || strcmp (only, t->name) == 0) {
            printf (" * %s: ", t->name);
            fflush (stdout);
            t->test (false);
            printf ("OK\n");
            run++;
        }
    printf ("%d self-tests passed\n", run);
    return run > 0 ? 0 : 1;
}
