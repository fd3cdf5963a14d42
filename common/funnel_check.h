/*  funnel_check — the self-tests' assertion: unlike assert, it stays on in
    Release builds (NDEBUG), says which file, line and condition failed, and
    aborts, so ctest reports the failing self-test.
*/
#ifndef FUNNEL_CHECK_H_INCLUDED
#define FUNNEL_CHECK_H_INCLUDED

#include <stdio.h>
#include <stdlib.h>

#define check(cond) do { if (!(cond)) { \
    fprintf (stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
    abort (); } } while (0)

#endif
