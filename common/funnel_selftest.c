/*  funnel_selftest — see funnel_selftest.h. */
#include <stdio.h>
#include <string.h>
#include "funnel_selftest.h"

int
funnel_selftest_run (int argc, char *argv [], const funnel_selftest_t *tests)
{
    const char *only = argc > 1 ? argv [1] : NULL;
    int run = 0;
    for (const funnel_selftest_t *t = tests; t->name; t++)
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
