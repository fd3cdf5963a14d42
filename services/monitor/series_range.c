/*  series_range — see series_range.h for why. */
#include <assert.h>
#include <stdlib.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include "series_range.h"

//  Self-test checks that stay on in Release builds (assert is off there)
#include "funnel_check.h"

int64_t
series_range_floor (int64_t t, int64_t step_ms)
{
    assert (t >= 0 && step_ms > 0);
    return t - t % step_ms;
}

bool
series_range_parse_ms (const char *text, int64_t *value)
{
    if (!text || !*text || strlen (text) > 16)
        return false;
    int64_t v = 0;
    for (const char *p = text; *p; p++) {
        if (*p < '0' || *p > '9')
            return false;
        v = v * 10 + (*p - '0');        //  16 digits cannot overflow int64
    }
    if (v > SERIES_MAX_MS)
        return false;
    *value = v;
    return true;
}

static bool
s_valid_id (const char *s)
{
    size_t n = strlen (s);
    if (n < 1 || n > 64)
        return false;
    return strspn (s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                      "0123456789._:@+-") == n;
}

static int
s_refuse (const char **param, const char *name, char *message, size_t size,
          const char *why)
{
    *param = name;
    snprintf (message, size, "%s: %s", name, why);
    return -1;
}

int
series_range_parse (series_range_t *range, const char *from, const char *to,
                    const char *step, const char *campaign,
                    const char **param, char *message, size_t size)
{
    memset (range, 0, sizeof *range);
    if (!from)
        return s_refuse (param, "from", message, size, "required (ms since the epoch)");
    if (!series_range_parse_ms (from, &range->from))
        return s_refuse (param, "from", message, size, "must be an integer ms 0..2^53");
    if (!to)
        return s_refuse (param, "to", message, size, "required (ms since the epoch)");
    if (!series_range_parse_ms (to, &range->to))
        return s_refuse (param, "to", message, size, "must be an integer ms 0..2^53");
    if (!step || strcmp (step, "hour") == 0) {
        range->step = "hour";
        range->step_ms = SERIES_HOUR_MS;
    }
    else
    if (strcmp (step, "day") == 0) {
        range->step = "day";
        range->step_ms = SERIES_DAY_MS;
    }
    else
        return s_refuse (param, "step", message, size, "must be hour or day");
    if (range->to < range->from)
        return s_refuse (param, "to", message, size, "must not be before from");
    range->first = series_range_floor (range->from, range->step_ms);
    range->count = (series_range_floor (range->to, range->step_ms) - range->first)
                 / range->step_ms + 1;
    if (range->count > SERIES_MAX_BUCKETS) {
        char why [96];
        snprintf (why, sizeof why, "the range holds %" PRId64 " %s buckets; at most %d",
                  range->count, range->step, SERIES_MAX_BUCKETS);
        return s_refuse (param, "to", message, size, why);
    }
    if (campaign) {
        if (!s_valid_id (campaign))
            return s_refuse (param, "campaign", message, size,
                             "must be 1-64 bytes of [A-Za-z0-9._:@+-]");
        strcpy (range->campaign, campaign);
    }
    return 0;
}

void
series_range_test (bool verbose)
{
    if (verbose)
        printf (" * series_range: ");
    //  UTC floors: 2026-12-02T02:30:00.001Z -> 02:00 and 00:00 of that day
    int64_t t = INT64_C (1796178600001);
    check (series_range_floor (t, SERIES_HOUR_MS) == INT64_C (1796176800000));
    check (series_range_floor (t, SERIES_DAY_MS) == INT64_C (1796169600000));
    check (series_range_floor (0, SERIES_HOUR_MS) == 0);
    check (series_range_floor (SERIES_HOUR_MS - 1, SERIES_HOUR_MS) == 0);
    check (series_range_floor (SERIES_HOUR_MS, SERIES_HOUR_MS) == SERIES_HOUR_MS);

    int64_t v;
    check (series_range_parse_ms ("0", &v) && v == 0);
    check (series_range_parse_ms ("9007199254740992", &v) && v == SERIES_MAX_MS);
    check (!series_range_parse_ms ("9007199254740993", &v));     //  > 2^53
    check (!series_range_parse_ms ("99999999999999999999", &v));  //  huge
    check (!series_range_parse_ms ("-1", &v));
    check (!series_range_parse_ms ("+1", &v));
    check (!series_range_parse_ms ("1.5", &v));
    check (!series_range_parse_ms (" 1", &v));
    check (!series_range_parse_ms ("", &v));
    check (!series_range_parse_ms (NULL, &v));

    series_range_t r;
    const char *param = NULL;
    char message [200];
    //  Inclusive: the bucket holding from to the one holding to
    check (series_range_parse (&r, "1796178600001", "1796180400000", NULL, NULL,
                                &param, message, sizeof message) == 0);
    check (strcmp (r.step, "hour") == 0);
    check (r.first == INT64_C (1796176800000) && r.count == 2);
    //  from == to: one bucket; the same hour: one bucket
    check (series_range_parse (&r, "7200000", "7200000", "hour", NULL,
                                &param, message, sizeof message) == 0 && r.count == 1);
    check (series_range_parse (&r, "7200000", "10799999", "hour", NULL,
                                &param, message, sizeof message) == 0 && r.count == 1);
    check (series_range_parse (&r, "7200000", "10800000", "hour", NULL,
                                &param, message, sizeof message) == 0 && r.count == 2);
    //  Days are UTC days: 23:59:59.999 and 00:00 next day are two buckets
    check (series_range_parse (&r, "86399999", "86400000", "day", "c-1",
                                &param, message, sizeof message) == 0);
    check (r.count == 2 && r.first == 0 && strcmp (r.campaign, "c-1") == 0);
    //  90 days hourly fits (2160 buckets), 2200 fits, 2201 does not
    check (series_range_parse (&r, "0", "7775999999", "hour", NULL,
                                &param, message, sizeof message) == 0 && r.count == 2160);
    check (series_range_parse (&r, "0", "7919999999", "hour", NULL,
                                &param, message, sizeof message) == 0 && r.count == 2200);
    check (series_range_parse (&r, "0", "7920000000", "hour", NULL,
                                &param, message, sizeof message) == -1);
    check (strcmp (param, "to") == 0 && strstr (message, "2201"));
    //  Bad values, each naming its parameter
    struct { const char *from, *to, *step, *campaign, *param; } bad [] = {
        { NULL, "1", NULL, NULL, "from" },
        { "-5", "1", NULL, NULL, "from" },
        { "1e3", "1", NULL, NULL, "from" },
        { "1", NULL, NULL, NULL, "to" },
        { "1", "99999999999999999999", NULL, NULL, "to" },
        { "1", "9007199254740993", NULL, NULL, "to" },
        { "5", "4", NULL, NULL, "to" },
        { "1", "2", "week", NULL, "step" },
        { "1", "2", "", NULL, "step" },
        { "1", "2", "day", "", "campaign" },
        { "1", "2", "day", "a b", "campaign" },
        { "0", "9007199254740992", "day", NULL, "to" }      //  huge range
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad [0]; i++) {
        param = NULL;
        check (series_range_parse (&r, bad [i].from, bad [i].to, bad [i].step,
                                    bad [i].campaign, &param, message, sizeof message) == -1);
        check (param && strcmp (param, bad [i].param) == 0);
        check (strncmp (message, param, strlen (param)) == 0);
    }
    if (verbose)
        printf ("OK\n");
}
