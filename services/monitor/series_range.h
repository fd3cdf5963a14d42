/*  series_range — the bucket arithmetic of GET /api/series.

    Buckets are UTC hours or days of event time in ms since the epoch:
    bucket(t) = floor(t / step_ms), so a bucket starts at a multiple of
    3,600,000 or 86,400,000 (UTC has no DST; the epoch is midnight UTC).
    A range is every bucket from the one holding `from` to the one holding
    `to`, inclusive. This module parses and checks the query parameters
    (the services do the same checks; the monitor refuses bad ones with 400
    before asking anyone). Pure: no sockets, no clock.
*/
#ifndef SERIES_RANGE_H_INCLUDED
#define SERIES_RANGE_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SERIES_HOUR_MS      INT64_C (3600000)
#define SERIES_DAY_MS       INT64_C (86400000)
#define SERIES_MAX_BUCKETS  2200        //  > 90 days hourly (2160), 3 years daily (1096)
#define SERIES_MAX_MS       INT64_C (9007199254740992)     //  2^53: event ts limit

typedef struct {
    int64_t from, to;           //  As given (ms)
    int64_t step_ms;            //  SERIES_HOUR_MS or SERIES_DAY_MS
    const char *step;           //  "hour" or "day"
    int64_t first;              //  Start (ms) of the bucket holding from
    int64_t count;              //  Buckets from..to inclusive
    char campaign [65];         //  "" for the whole funnel
} series_range_t;

//  The start (ms) of the bucket holding t; t >= 0.
int64_t
    series_range_floor (int64_t t, int64_t step_ms);

//  Parses a decimal ms value "0".."2^53" (digits only, no sign, no spaces).
bool
    series_range_parse_ms (const char *text, int64_t *value);

//  Checks and fills range from the query parameters (any may be NULL =
//  absent; step defaults to hour, campaign to none). Returns 0, or -1 with
//  *param naming the parameter at fault and message (≤ size) saying why.
int
    series_range_parse (series_range_t *range, const char *from, const char *to,
                        const char *step, const char *campaign,
                        const char **param, char *message, size_t size);

void
    series_range_test (bool verbose);

#endif
