/*  Self-tests of the campaign stage's pure modules; argv[1] runs one. */
#include <stdio.h>
#include <string.h>
#include "attribution.h"
#include "audience.h"
#include "channel_rank.h"

typedef struct { const char *name; void (*test) (bool verbose); } selftest_t;

static const selftest_t s_tests [] = {
    { "audience", audience_test },
    { "attribution", attribution_test },
    { "channel_rank", channel_rank_test },
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
