/*  attribution — which campaigns earn a conversion, under five models.

    Pure functions. A contact's touch history is an array of touches
    {ts, c, b} (event time in ms, campaign number, channel×segment bucket
    number), oldest first, kept as one compact string ("ts,c,b;..." in base
    36, each time after the first as the step from the one before). A
    conversion at time `at` is credited to the touches at or before it;
    every model's credit is split in integer units (ATTRIBUTION_UNITS per
    conversion, and the amount's cents for revenue) with the largest
    remainder method, so each conversion adds exactly 1 and exactly its
    amount to the totals whatever the rounding: reports stay exact and
    re-attribution (subtract old, add new) never drifts.

        attribution_touch_t h [ATTRIBUTION_HISTORY_MAX];
        size_t n = attribution_decode (text, h, max);
        bool kept = attribution_insert (h, &n, touch, max);
        attribution_credits_t cr;
        attribution_credit (h, n, at, half_life_ms, amount, &cr);
        //  cr.key[i]: {c, b, v[0..4] units per model, v[5..9] cents}
*/
#ifndef ATTRIBUTION_H_INCLUDED
#define ATTRIBUTION_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ATTRIBUTION_MODELS       5
#define ATTRIBUTION_UNITS        1000000
#define ATTRIBUTION_HISTORY_MAX  1000    //  The largest history_max setting
#define ATTRIBUTION_SLOTS        (2 * ATTRIBUTION_MODELS)

enum { ATTR_FIRST, ATTR_LAST, ATTR_LINEAR, ATTR_POSITION, ATTR_DECAY };

//  Model names in model order (first_touch, last_touch, linear, position,
//  time_decay); -1 from attribution_model if unknown.
extern const char *const attribution_models [ATTRIBUTION_MODELS];
int
    attribution_model (const char *name);

typedef struct {
    int64_t ts;
    uint32_t c, b;
} attribution_touch_t;

//  One campaign×bucket key's share of a conversion: v[m] units of model m,
//  v[MODELS + m] its cents of revenue (rev: the cents slots are present).
typedef struct {
    uint32_t c, b;
    bool rev;
    int64_t v [ATTRIBUTION_SLOTS];
} attribution_key_t;

//  The credits of one conversion, keys in the order of their "c:b" text.
typedef struct {
    size_t n;
    attribution_key_t key [ATTRIBUTION_HISTORY_MAX];
} attribution_credits_t;

//  "ts,c,b;..." (base 36; times after the first as steps) into out (size
//  >= 40 per touch + 1); returns the length.
size_t
    attribution_encode (const attribution_touch_t *list, size_t n, char *out, size_t size);
//  Parses at most max touches; NULL or "" is empty.
size_t
    attribution_decode (const char *text, attribution_touch_t *list, size_t max);
//  Inserts a touch in time order (after equal times: arrival order), keeps
//  the newest max; list holds max + 1. False when the touch itself was the
//  oldest and fell off (a late touch older than a full history).
bool
    attribution_insert (attribution_touch_t *list, size_t *n, attribution_touch_t touch,
                        size_t max);
//  Each model's weight per touch (each row sums to 1).
void
    attribution_weights (const attribution_touch_t *touches, size_t n, int64_t at,
                         double half_life_ms, double (*w) [ATTRIBUTION_HISTORY_MAX]);
//  Splits total over n parts by fractions (summing to ~1): floor of each,
//  then one more to the largest remainders (ties: lower order first), so
//  the parts sum to total exactly. order: the tie rank of each part.
void
    attribution_allocate (const double *fractions, size_t n, int64_t total, int64_t *parts);
//  The credits of a conversion at `at` worth amount cents (0: no revenue
//  slots); out->n == 0 when no touch precedes it.
void
    attribution_credit (const attribution_touch_t *history, size_t n, int64_t at,
                        double half_life_ms, int64_t amount, attribution_credits_t *out);
//  new minus old per key and slot, keys with no change left out: what a
//  re-attribution adds. out may not alias old or new.
void
    attribution_diff (const attribution_credits_t *old, const attribution_credits_t *new_,
                      attribution_credits_t *out);

//  Credits as compact text (a conversion record's part; no '|'), and back.
//  A sole key holding the whole conversion is written "c,b" alone.
size_t
    attribution_credits_encode (const attribution_credits_t *cr, int64_t amount,
                                char *out, size_t size);
int
    attribution_credits_decode (const char *text, size_t len, int64_t amount,
                                attribution_credits_t *out);

//  Base 36 of n >= 0 ("0" for 0) into out (14 bytes); returns the length.
size_t
    attribution_base36 (int64_t n, char *out);

void
    attribution_test (bool verbose);

#endif
