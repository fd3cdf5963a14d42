/*  audience — see audience.h.  */
#undef NDEBUG                   //  The self-test needs its asserts
#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include "audience.h"

#ifndef streq
#define streq(a, b) (strcmp ((a), (b)) == 0)
#endif

static int
s_lower (int c)
{
    return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

static bool
s_iequal (const char *a, const char *b)
{
    for (; *a && *b; a++, b++)
        if (s_lower ((unsigned char) *a) != s_lower ((unsigned char) *b))
            return false;
    return *a == *b;
}

//  Whether list has any string, and whether one equals s (case-insensitive)
static bool
s_in (const char *const *list, size_t n, const char *s, bool *any)
{
    bool hit = false;
    *any = false;
    for (size_t i = 0; i < n; i++)
        if (list [i]) {
            *any = true;
            if (s && s_iequal (list [i], s))
                hit = true;
        }
    return hit;
}

bool
audience_matches (const audience_t *aud, const audience_attrs_t *attrs)
{
    if (!aud)
        return true;
    const audience_attrs_t none = { 0 };
    if (!attrs)
        attrs = &none;
    if (aud->has_age_min || aud->has_age_max) {
        if (!attrs->has_age)
            return false;
        if (aud->has_age_min && attrs->age < aud->age_min)
            return false;
        if (aud->has_age_max && attrs->age > aud->age_max)
            return false;
    }
    bool any;
    bool hit = s_in (aud->regions, aud->nregions, attrs->region, &any);
    if (any && !hit)
        return false;
    s_in (aud->interests, aud->ninterests, NULL, &any);
    if (any) {
        bool found = false;
        for (size_t i = 0; i < attrs->ninterests && !found; i++) {
            bool unused;
            if (attrs->interests [i]
            &&  s_in (aud->interests, aud->ninterests, attrs->interests [i], &unused))
                found = true;
        }
        if (!found)
            return false;
    }
    return true;
}

void
audience_clean (const char *s, char *out)
{
    size_t i = 0;
    for (; s [i] && i < AUDIENCE_CLEAN_MAX; i++) {
        int c = s_lower ((unsigned char) s [i]);
        bool keep = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')
                 || c == '.' || c == '+' || c == '-';
        out [i] = keep ? (char) c : '_';
    }
    out [i] = 0;
}

void
audience_age_band (const audience_t *aud, char *out, size_t size)
{
    if (aud && aud->has_age_min && aud->has_age_max)
        snprintf (out, size, "%" PRId64 "-%" PRId64, aud->age_min, aud->age_max);
    else
    if (aud && aud->has_age_min)
        snprintf (out, size, "%" PRId64 "+", aud->age_min);
    else
    if (aud && aud->has_age_max)
        snprintf (out, size, "0-%" PRId64, aud->age_max);
    else
        snprintf (out, size, "any");
}

void
audience_segment (const audience_t *aud, char *out)
{
    char band [40], region [AUDIENCE_CLEAN_MAX + 1], interest [AUDIENCE_CLEAN_MAX + 1];
    audience_age_band (aud, band, sizeof band);
    //  The first entry only, and only when it is a string
    if (aud && aud->nregions > 0 && aud->regions [0])
        audience_clean (aud->regions [0], region);
    else
        strcpy (region, "any");
    if (aud && aud->ninterests > 0 && aud->interests [0])
        audience_clean (aud->interests [0], interest);
    else
        strcpy (interest, "any");
    snprintf (out, AUDIENCE_SEGMENT_MAX, "%s/%s/%s", band, region, interest);
}

//  --------------------------------------------------------------------
//  Self-test (the rules' cases, plus edges)

static bool
s_m (const audience_t *aud, bool has_age, int64_t age, const char *region,
     const char *const *interests, size_t n)
{
    audience_attrs_t attrs = { has_age, age, region, interests, n };
    return audience_matches (aud, &attrs);
}

void
audience_test (bool verbose)
{
    (void) verbose;
    const char *regions [] = { "US", "ca" };
    const char *interests [] = { "Gaming", "music" };
    audience_t genz = { true, true, 18, 24, regions, 2, interests, 2 };
    const char *music [] = { "MUSIC" };
    const char *xg [] = { "x", "gaming" };
    const char *lmusic [] = { "music" };
    const char *golf [] = { "golf" };

    //  No audience, or an empty one: everyone is in it, attrs or not
    assert (audience_matches (NULL, NULL));
    audience_t empty = { 0 };
    assert (audience_matches (&empty, NULL));
    audience_t empty_lists = { false, false, 0, 0, NULL, 0, NULL, 0 };
    assert (s_m (&empty_lists, true, 80, NULL, NULL, 0));

    //  Every rule set must hold; strings compare case-insensitively
    assert (s_m (&genz, true, 19, "us", music, 1));
    assert (s_m (&genz, true, 18, "CA", xg, 2));
    assert (s_m (&genz, true, 24, "US", lmusic, 1));
    assert (!s_m (&genz, true, 25, "US", lmusic, 1));
    assert (!s_m (&genz, true, 17, "US", lmusic, 1));
    assert (!s_m (&genz, true, 20, "uk", lmusic, 1));
    assert (!s_m (&genz, true, 20, "US", golf, 1));
    assert (!s_m (&genz, true, 20, "US", NULL, 0));

    //  A rule the audience sets needs the attribute: unknown is not a match
    assert (!audience_matches (&genz, NULL));
    assert (!s_m (&genz, false, 0, "US", lmusic, 1));
    assert (!s_m (&genz, true, 20, NULL, lmusic, 1));
    assert (!s_m (&genz, true, 20, "US", NULL, 0));

    //  One-sided age ranges; rules the audience leaves open are not checked
    audience_t old = { .has_age_min = true, .age_min = 65 };
    assert (s_m (&old, true, 70, NULL, NULL, 0));
    assert (!s_m (&old, true, 64, NULL, NULL, 0));
    audience_t young = { .has_age_max = true, .age_max = 17 };
    assert (s_m (&young, true, 0, NULL, NULL, 0));
    const char *de [] = { "de" };
    audience_t german = { .regions = de, .nregions = 1 };
    assert (s_m (&german, true, 3, "DE", NULL, 0));
    const char *cgolf [] = { "Golf" };
    audience_t golfers = { .interests = golf, .ninterests = 1 };
    assert (s_m (&golfers, false, 0, NULL, cgolf, 1));
    //  Edge: a region is compared whole, not as a prefix
    assert (!s_m (&german, false, 0, "deu", NULL, 0));
    assert (!s_m (&german, false, 0, "d", NULL, 0));
    //  Edge: non-string list entries (NULL here) are no rule at all
    const char *nothing [] = { NULL };
    audience_t holes = { .regions = nothing, .nregions = 1 };
    assert (s_m (&holes, false, 0, NULL, NULL, 0));

    //  Segment labels: age band / first region / first interest, "any" if open
    char label [AUDIENCE_SEGMENT_MAX];
    audience_segment (NULL, label);
    assert (streq (label, "any/any/any"));
    audience_segment (&empty, label);
    assert (streq (label, "any/any/any"));
    audience_segment (&genz, label);
    assert (streq (label, "18-24/us/gaming"));
    audience_segment (&old, label);
    assert (streq (label, "65+/any/any"));
    const char *board [] = { "Board Games" };
    audience_t kids = { .has_age_max = true, .age_max = 17, .interests = board, .ninterests = 1 };
    audience_segment (&kids, label);
    assert (streq (label, "0-17/any/board_games"));
    const char *ne [] = { "North/East|X" };
    audience_t north = { .regions = ne, .nregions = 1 };
    audience_segment (&north, label);
    assert (streq (label, "any/north_east_x/any"));
    //  Labels stay short whatever the input
    char long_region [501];
    memset (long_region, 'a', 500);
    long_region [500] = 0;
    const char *lr [] = { long_region };
    audience_t far = { .regions = lr, .nregions = 1 };
    audience_segment (&far, label);
    assert (streq (label, "any/aaaaaaaaaaaaaaaaaaaaaaaa/any"));
    //  Edge: multi-byte UTF-8 becomes one '_' per byte; "+" and "." stay
    const char *utf [] = { "Zürich+1.x" };
    audience_t zurich = { .regions = utf, .nregions = 1 };
    audience_segment (&zurich, label);
    assert (streq (label, "any/z__rich+1.x/any"));
}
