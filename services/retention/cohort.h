/*  cohort — onboarding-month cohorts: the month of a time and the shares
    and lifetime value GET cohorts reports. Pure functions.

        char month [16];
        cohort_month (onboarded_ms, month, sizeof month);    //  "2026-01"
*/
#ifndef COHORT_H_INCLUDED
#define COHORT_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

//  "YYYY-MM" (UTC, proleptic Gregorian) of a time in ms since the epoch.
void
    cohort_month (int64_t ms, char *out, size_t size);
//  part / whole rounded to 4 decimals; 0 for an empty whole.
double
    cohort_share (int64_t part, int64_t whole);
//  Average lifetime value (cents, rounded); 0 with no customers.
int64_t
    cohort_ltv (int64_t revenue, int64_t customers);

void
    cohort_test (bool verbose);

#endif
