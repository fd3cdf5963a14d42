/*  cohort — months, shares and LTV of cohorts (see cohort.h).  */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "cohort.h"

//  Floored division (C's / truncates toward zero)
static int64_t
s_fdiv (int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

void
cohort_month (int64_t ms, char *out, size_t size)
{
    //  Civil from days (proleptic Gregorian)
    int64_t z = s_fdiv (ms, 86400000) + 719468;
    int64_t era = s_fdiv (z, 146097);
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int64_t m = mp < 10 ? mp + 3 : mp - 9;
    int64_t y = yoe + era * 400 + (m <= 2 ? 1 : 0);
    snprintf (out, size, "%04lld-%02lld", (long long) y, (long long) m);
}

double
cohort_share (int64_t part, int64_t whole)
{
    if (whole <= 0)
        return 0;
    return floor ((double) part / (double) whole * 10000 + 0.5) / 10000;
}

int64_t
cohort_ltv (int64_t revenue, int64_t customers)
{
    if (customers <= 0)
        return 0;
    return (int64_t) floor ((double) revenue / (double) customers + 0.5);
}

//  --------------------------------------------------------------------------
//  Self-test (asserts stay on in every build)
#undef NDEBUG
#include <assert.h>
//  The cohort rules' cases

static bool
s_month_is (int64_t ms, const char *want)
{
    char month [16];
    cohort_month (ms, month, sizeof month);
    return strcmp (month, want) == 0;
}

void
cohort_test (bool verbose)
{
    (void) verbose;
    assert (s_month_is (0, "1970-01"));
    assert (s_month_is (951782400000, "2000-02"));          //  2000-02-29
    assert (s_month_is (951868800000 - 1, "2000-02"));      //  Last ms of Feb 29
    assert (s_month_is (951868800000, "2000-03"));
    assert (s_month_is (1767225599999, "2025-12"));
    assert (s_month_is (1767225600000, "2026-01"));
    assert (s_month_is (1798761600000, "2027-01"));
    assert (s_month_is (-1, "1969-12"));
    //  Every month boundary of a leap year
    int64_t t = 1704067200000;                              //  2024-01-01
    int days [12] = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    for (int m = 1; m <= 12; m++) {
        char want [16];
        snprintf (want, sizeof want, "2024-%02d", m);
        assert (s_month_is (t, want));
        t += (int64_t) days [m - 1] * 86400000;
        assert (s_month_is (t - 1, want));
    }
    assert (s_month_is (t, "2025-01"));

    assert (cohort_share (1, 3) == 0.3333);
    assert (cohort_share (2, 3) == 0.6667);
    assert (cohort_share (0, 0) == 0);
    assert (cohort_share (5, 5) == 1);
    assert (cohort_ltv (1000, 3) == 333);
    assert (cohort_ltv (1000, 0) == 0);
}
