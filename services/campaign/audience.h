/*  audience — who a campaign targets, and whether a touch's person is in it.

    Pure functions. An audience sets optional rules {age_min, age_max,
    regions, interests}; a touch's attrs are {age, region, interests}, each
    optional. A rule the audience does not set always holds; a rule it sets
    needs the attribute (an unknown age is not "18-24"). Strings compare
    case-insensitively (ASCII); interests need one in common.

        audience_t aud = { .has_age_min = true, .age_min = 18, ... };
        audience_attrs_t who = { .has_age = true, .age = 19, .region = "us" };
        if (audience_matches (&aud, &who)) ...
        char label [AUDIENCE_SEGMENT_MAX];
        audience_segment (&aud, label);        //  "18-24/us/gaming"
*/
#ifndef AUDIENCE_H_INCLUDED
#define AUDIENCE_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AUDIENCE_CLEAN_MAX   24          //  Bytes of one label part
#define AUDIENCE_SEGMENT_MAX 96          //  "<band>/<region>/<interest>" + NUL

typedef struct {
    bool has_age_min, has_age_max;
    int64_t age_min, age_max;
    const char *const *regions;          //  NULL entries are skipped
    size_t nregions;
    const char *const *interests;
    size_t ninterests;
} audience_t;

typedef struct {
    bool has_age;
    int64_t age;
    const char *region;                  //  NULL: unknown
    const char *const *interests;
    size_t ninterests;
} audience_attrs_t;

//  True when every rule aud sets holds for attrs; aud NULL: everyone;
//  attrs NULL: nothing known.
bool
    audience_matches (const audience_t *aud, const audience_attrs_t *attrs);
//  One label part: the first 24 bytes, lowercased, every byte outside
//  [a-z0-9.+-] as '_'. out holds AUDIENCE_CLEAN_MAX + 1.
void
    audience_clean (const char *s, char *out);
//  "18-24", "65+", "0-17" (max only) or "any".
void
    audience_age_band (const audience_t *aud, char *out, size_t size);
//  The segment a campaign addresses: age band / first region / first
//  interest, each "any" when open. out holds AUDIENCE_SEGMENT_MAX.
void
    audience_segment (const audience_t *aud, char *out);

void
    audience_test (bool verbose);

#endif
