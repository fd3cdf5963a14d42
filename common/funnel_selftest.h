/*  funnel_selftest — the runner every self-test program shares: runs each
    module's x_test in order (argv[1] runs only the one of that name),
    printing " * name: OK" per test and the count; exit 1 if none ran.
*/
#ifndef FUNNEL_SELFTEST_H_INCLUDED
#define FUNNEL_SELFTEST_H_INCLUDED

#include <stdbool.h>

typedef struct {
    const char *name;
    void (*test) (bool verbose);
} funnel_selftest_t;                    //  A table ends with { NULL, NULL }

int
    funnel_selftest_run (int argc, char *argv [], const funnel_selftest_t *tests);

#endif
