/*  attribution — see attribution.h.  */
#undef NDEBUG                   //  The self-test needs its asserts
#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "attribution.h"

const char *const attribution_models [ATTRIBUTION_MODELS] = {
    "first_touch", "last_touch", "linear", "position", "time_decay"
};

int
attribution_model (const char *name)
{
    for (int m = 0; m < ATTRIBUTION_MODELS; m++)
        if (name && strcmp (name, attribution_models [m]) == 0)
            return m;
    return -1;
}

static const char s_b36 [] = "0123456789abcdefghijklmnopqrstuvwxyz";

size_t
attribution_base36 (int64_t n, char *out)
{
    char tmp [16];
    size_t len = 0;
    if (n <= 0)
        tmp [len++] = '0';
    while (n > 0) {
        tmp [len++] = s_b36 [n % 36];
        n /= 36;
    }
    for (size_t i = 0; i < len; i++)
        out [i] = tmp [len - 1 - i];
    out [len] = 0;
    return len;
}

//  A base-36 (or base-10) number at *p; advances p. -1 if none.
static int64_t
s_number (const char **p, int base)
{
    const char *s = *p;
    int64_t n = 0;
    bool neg = *s == '-';
    if (neg)
        s++;
    const char *start = s;
    for (;; s++) {
        int d;
        if (*s >= '0' && *s <= '9')
            d = *s - '0';
        else
        if (base == 36 && *s >= 'a' && *s <= 'z')
            d = *s - 'a' + 10;
        else
            break;
        n = n * base + d;
    }
    *p = s;
    if (s == start)
        return INT64_MIN;
    return neg ? -n : n;
}

size_t
attribution_encode (const attribution_touch_t *list, size_t n, char *out, size_t size)
{
    size_t len = 0;
    out [0] = 0;
    for (size_t i = 0; i < n; i++) {
        //  Times ascend: the first in full, then each as the step from the last
        char ts [16], c [16], b [16];
        attribution_base36 (i ? list [i].ts - list [i - 1].ts : list [i].ts, ts);
        attribution_base36 (list [i].c, c);
        attribution_base36 (list [i].b, b);
        //  "[;]ts,c,b" put together by hand: snprintf here was campaign's
        //  largest printf cost (every touch rewrites the list)
        char piece [64];
        size_t w = 0;
        if (i)
            piece [w++] = ';';
        const char *parts [3] = { ts, c, b };
        for (int k = 0; k < 3; k++) {
            size_t n = strlen (parts [k]);
            memcpy (piece + w, parts [k], n);
            w += n;
            if (k < 2)
                piece [w++] = ',';
        }
        //  As snprintf: what fits, cut short and terminated
        size_t room = size - len;
        size_t copy = w < room ? w : room - 1;
        memcpy (out + len, piece, copy);
        out [len + copy] = 0;
        if (w >= room)
            break;              //  Callers size out for the bound; never here
        len += w;
    }
    return len;
}

size_t
attribution_decode (const char *text, attribution_touch_t *list, size_t max)
{
    size_t n = 0;
    const char *p = text;
    int64_t last = 0;
    while (p && *p && n < max) {
        int64_t ts = s_number (&p, 36);
        if (ts == INT64_MIN || *p++ != ',')
            break;
        int64_t c = s_number (&p, 36);
        if (c == INT64_MIN || *p++ != ',')
            break;
        int64_t b = s_number (&p, 36);
        if (b == INT64_MIN)
            break;
        last = n ? last + ts : ts;
        list [n++] = (attribution_touch_t) { last, (uint32_t) c, (uint32_t) b };
        if (*p == ';')
            p++;
    }
    return n;
}

bool
attribution_insert (attribution_touch_t *list, size_t *n, attribution_touch_t touch,
                    size_t max)
{
    size_t pos = *n;
    while (pos > 0 && list [pos - 1].ts > touch.ts)
        pos--;
    memmove (list + pos + 1, list + pos, (*n - pos) * sizeof *list);
    list [pos] = touch;
    (*n)++;
    bool kept = true;
    if (*n > max) {
        size_t drop = *n - max;
        if (pos < drop)
            kept = false;
        memmove (list, list + drop, (*n - drop) * sizeof *list);
        *n -= drop;
    }
    return kept;
}

void
attribution_weights (const attribution_touch_t *t, size_t n, int64_t at,
                     double half_life_ms, double (*w) [ATTRIBUTION_HISTORY_MAX])
{
    double decay_sum = 0;
    for (size_t i = 0; i < n; i++) {
        w [ATTR_FIRST][i] = i == 0 ? 1 : 0;
        w [ATTR_LAST][i] = i == n - 1 ? 1 : 0;
        w [ATTR_LINEAR][i] = 1.0 / (double) n;
        if (n == 1)
            w [ATTR_POSITION][i] = 1;
        else
        if (n == 2)
            w [ATTR_POSITION][i] = 0.5;
        else
        if (i == 0 || i == n - 1)
            w [ATTR_POSITION][i] = 0.4;
        else
            w [ATTR_POSITION][i] = 0.2 / (double) (n - 2);
        //  Half the credit for every half-life between touch and conversion
        w [ATTR_DECAY][i] = pow (2, -((double) (at - t [i].ts)) / half_life_ms);
        decay_sum += w [ATTR_DECAY][i];
    }
    for (size_t i = 0; i < n; i++)
        w [ATTR_DECAY][i] = w [ATTR_DECAY][i] / decay_sum;
}

typedef struct {
    size_t k;
    double r;
} s_rem_t;

static int
s_rem_cmp (const void *a, const void *b)
{
    const s_rem_t *x = a, *y = b;
    if (x->r != y->r)
        return x->r > y->r ? -1 : 1;
    return x->k < y->k ? -1 : x->k > y->k;
}

void
attribution_allocate (const double *fractions, size_t n, int64_t total, int64_t *parts)
{
    if (n == 0)
        return;
    s_rem_t *order = malloc (n * sizeof *order);
    assert (order);
    int64_t given = 0;
    for (size_t i = 0; i < n; i++) {
        double exact = fractions [i] * (double) total;
        double whole = floor (exact);
        parts [i] = (int64_t) whole;
        given += parts [i];
        order [i] = (s_rem_t) { i, exact - whole };
    }
    qsort (order, n, sizeof *order, s_rem_cmp);
    int64_t left = total - given;
    size_t i = 0;
    while (left > 0) {
        parts [order [i % n].k]++;
        left--;
        i++;
    }
    i = 0;
    while (left < 0) {          //  Only if the fractions summed above 1 by rounding
        size_t k = order [n - 1 - i % n].k;
        if (parts [k] > 0) {
            parts [k]--;
            left++;
        }
        i++;
    }
    free (order);
}

//  Order of the keys' "c:b" texts (the tie order of allocate)
static int
s_key_cmp (uint32_t c1, uint32_t b1, uint32_t c2, uint32_t b2)
{
    char x [24], y [24];
    snprintf (x, sizeof x, "%u:%u", c1, b1);
    snprintf (y, sizeof y, "%u:%u", c2, b2);
    return strcmp (x, y);
}

static int
s_akey_cmp (const void *a, const void *b)
{
    const attribution_key_t *x = a, *y = b;
    return s_key_cmp (x->c, x->b, y->c, y->b);
}

void
attribution_credit (const attribution_touch_t *history, size_t n, int64_t at,
                    double half_life_ms, int64_t amount, attribution_credits_t *out)
{
    out->n = 0;
    attribution_touch_t *touches = malloc ((n ? n : 1) * sizeof *touches);
    size_t *slot = malloc ((n ? n : 1) * sizeof *slot);
    double (*w) [ATTRIBUTION_HISTORY_MAX] = malloc (ATTRIBUTION_MODELS * sizeof *w);
    assert (touches && slot && w);
    size_t count = 0;
    for (size_t i = 0; i < n; i++)
        if (history [i].ts <= at)
            touches [count++] = history [i];
    if (count > 0) {
        attribution_weights (touches, count, at, half_life_ms, w);
        //  Distinct keys, sorted as their text
        for (size_t i = 0; i < count; i++) {
            size_t k = 0;
            while (k < out->n && !(out->key [k].c == touches [i].c && out->key [k].b == touches [i].b))
                k++;
            if (k == out->n) {
                memset (&out->key [k], 0, sizeof out->key [k]);
                out->key [k].c = touches [i].c;
                out->key [k].b = touches [i].b;
                out->key [k].rev = amount > 0;
                out->n++;
            }
        }
        qsort (out->key, out->n, sizeof out->key [0], s_akey_cmp);
        for (size_t i = 0; i < count; i++)
            for (size_t k = 0; k < out->n; k++)
                if (out->key [k].c == touches [i].c && out->key [k].b == touches [i].b) {
                    slot [i] = k;
                    break;
                }
        double *fractions = malloc (out->n * sizeof *fractions);
        int64_t *parts = malloc (out->n * sizeof *parts);
        assert (fractions && parts);
        for (int m = 0; m < ATTRIBUTION_MODELS; m++) {
            for (size_t k = 0; k < out->n; k++)
                fractions [k] = 0;
            for (size_t i = 0; i < count; i++)
                fractions [slot [i]] += w [m][i];
            attribution_allocate (fractions, out->n, ATTRIBUTION_UNITS, parts);
            for (size_t k = 0; k < out->n; k++)
                out->key [k].v [m] = parts [k];
            if (amount > 0) {
                attribution_allocate (fractions, out->n, amount, parts);
                for (size_t k = 0; k < out->n; k++)
                    out->key [k].v [ATTRIBUTION_MODELS + m] = parts [k];
            }
        }
        free (fractions);
        free (parts);
    }
    free (touches);
    free (slot);
    free (w);
}

void
attribution_diff (const attribution_credits_t *old, const attribution_credits_t *new_,
                  attribution_credits_t *out)
{
    out->n = 0;
    for (int pass = 0; pass < 2; pass++) {
        const attribution_credits_t *src = pass ? new_ : old;
        int64_t sign = pass ? 1 : -1;
        for (size_t i = 0; i < src->n; i++) {
            const attribution_key_t *key = &src->key [i];
            size_t k = 0;
            while (k < out->n && !(out->key [k].c == key->c && out->key [k].b == key->b))
                k++;
            if (k == out->n) {
                memset (&out->key [k], 0, sizeof out->key [k]);
                out->key [k].c = key->c;
                out->key [k].b = key->b;
                out->n++;
            }
            out->key [k].rev = out->key [k].rev || key->rev;
            for (int s = 0; s < ATTRIBUTION_SLOTS; s++)
                out->key [k].v [s] += sign * key->v [s];
        }
    }
    size_t kept = 0;
    for (size_t k = 0; k < out->n; k++) {
        bool any = false;
        for (int s = 0; s < ATTRIBUTION_SLOTS; s++)
            any = any || out->key [k].v [s] != 0;
        if (any)
            out->key [kept++] = out->key [k];
    }
    out->n = kept;
}

size_t
attribution_credits_encode (const attribution_credits_t *cr, int64_t amount,
                            char *out, size_t size)
{
    size_t len = 0;
    out [0] = 0;
    for (size_t k = 0; k < cr->n; k++) {
        const attribution_key_t *key = &cr->key [k];
        char part [24 + ATTRIBUTION_SLOTS * 15];
        int w = snprintf (part, sizeof part, "%s%u,%u", k ? ";" : "", key->c, key->b);
        bool whole = cr->n == 1;
        for (int m = 0; m < ATTRIBUTION_MODELS; m++)
            whole = whole && key->v [m] == ATTRIBUTION_UNITS
                 && (!key->rev || key->v [ATTRIBUTION_MODELS + m] == amount);
        if (!whole) {
            int slots = key->rev ? ATTRIBUTION_SLOTS : ATTRIBUTION_MODELS;
            for (int s = 0; s < slots; s++) {
                part [w++] = ',';
                w += (int) attribution_base36 (key->v [s], part + w);
            }
        }
        if (len + (size_t) w + 1 > size)
            break;              //  Callers size out for the bound; never here
        memcpy (out + len, part, (size_t) w + 1);
        len += (size_t) w;
    }
    return len;
}

int
attribution_credits_decode (const char *text, size_t len, int64_t amount,
                            attribution_credits_t *out)
{
    out->n = 0;
    const char *p = text, *end = text + len;
    while (p < end && out->n < ATTRIBUTION_HISTORY_MAX) {
        attribution_key_t *key = &out->key [out->n];
        memset (key, 0, sizeof *key);
        int64_t c = s_number (&p, 10);
        if (c == INT64_MIN || p >= end || *p++ != ',')
            return -1;
        int64_t b = s_number (&p, 10);
        if (b == INT64_MIN)
            return -1;
        key->c = (uint32_t) c;
        key->b = (uint32_t) b;
        int slots = 0;
        while (p < end && *p == ',' && slots < ATTRIBUTION_SLOTS) {
            p++;
            int64_t v = s_number (&p, 36);
            if (v == INT64_MIN)
                return -1;
            key->v [slots++] = v;
        }
        key->rev = amount > 0;
        if (slots == 0) {       //  The whole conversion
            for (int m = 0; m < ATTRIBUTION_MODELS; m++) {
                key->v [m] = ATTRIBUTION_UNITS;
                key->v [ATTRIBUTION_MODELS + m] = key->rev ? amount : 0;
            }
        }
        else
        if (slots != (key->rev ? ATTRIBUTION_SLOTS : ATTRIBUTION_MODELS))
            return -1;
        out->n++;
        if (p < end && *p == ';')
            p++;
        else
        if (p < end)
            return -1;
    }
    return 0;
}

//  --------------------------------------------------------------------
//  Self-test (the rules' cases, plus edges)

#define U      ATTRIBUTION_UNITS
#define DAY    86400000LL
#define HL     (7.0 * DAY)

static bool
s_near (double a, double b)
{
    return fabs (a - b) <= 1e-9;
}

static attribution_touch_t
s_t (int64_t ts, uint32_t c, uint32_t b)
{
    return (attribution_touch_t) { ts, c, b };
}

static const attribution_key_t *
s_key (const attribution_credits_t *cr, uint32_t c, uint32_t b)
{
    for (size_t k = 0; k < cr->n; k++)
        if (cr->key [k].c == c && cr->key [k].b == b)
            return &cr->key [k];
    return NULL;
}

static int64_t
s_sum (const attribution_credits_t *cr, int slot)
{
    int64_t s = 0;
    for (size_t k = 0; k < cr->n; k++)
        s += cr->key [k].v [slot];
    return s;
}

void
attribution_test (bool verbose)
{
    (void) verbose;
    //  History encoding round-trips, compactly
    attribution_touch_t h [] = { s_t (1700000000000, 1, 2), s_t (1700000000123, 12, 3) };
    char text [256];
    size_t len = attribution_encode (h, 2, text, sizeof text);
    assert (len < 30 && strlen (text) == len);
    attribution_touch_t back [8];
    assert (attribution_decode (text, back, 8) == 2);
    assert (back [1].ts == 1700000000123 && back [1].c == 12 && back [1].b == 3);
    assert (attribution_decode (NULL, back, 8) == 0 && attribution_decode ("", back, 8) == 0);
    attribution_touch_t zero [] = { s_t (0, 1, 1) };
    attribution_encode (zero, 1, text, sizeof text);
    assert (attribution_decode (text, back, 8) == 1 && back [0].ts == 0);
    //  Edge: decoding stops at max and at garbage; times are steps from the last
    assert (attribution_decode ("1,1,1;2,2,2;3,3,3", back, 2) == 2 && back [1].ts == 3);
    assert (attribution_decode ("1,1,1;zz", back, 8) == 1);
    //  Six touches a few hours apart, campaign and bucket numbers over 9: short
    attribution_touch_t six [6];
    for (int i = 0; i < 6; i++)
        six [i] = s_t (1796182227520 + i * 3 * 3600000LL, 12 + i % 2, 35 + i % 2);
    len = attribution_encode (six, 6, text, sizeof text);
    assert (len < 70);          //  About 11 bytes a touch
    assert (attribution_decode (text, back, 8) == 6 && back [5].ts == six [5].ts
         && back [5].c == 13 && back [5].b == 36);

    //  Insert keeps time order (late touches slot in), arrival order on ties, newest max
    attribution_touch_t list [4];
    size_t n = 0;
    assert (attribution_insert (list, &n, s_t (30, 1, 1), 3));
    assert (attribution_insert (list, &n, s_t (10, 2, 1), 3));
    assert (attribution_insert (list, &n, s_t (20, 3, 1), 3));
    assert (attribution_insert (list, &n, s_t (20, 4, 1), 3));     //  Drops ts 10
    assert (n == 3 && list [0].c == 3 && list [1].c == 4 && list [2].c == 1);
    assert (!attribution_insert (list, &n, s_t (5, 9, 1), 3));     //  Older than a full history
    assert (n == 3 && list [0].c == 3);
    //  Edge: max 1 keeps only the newest
    n = 0;
    assert (attribution_insert (list, &n, s_t (5, 1, 1), 1));
    assert (attribution_insert (list, &n, s_t (6, 2, 1), 1));
    assert (n == 1 && list [0].c == 2);
    assert (attribution_insert (list, &n, s_t (6, 3, 1), 1));     //  A tie is newer
    assert (n == 1 && list [0].c == 3);

    //  Weights per model: each sums to 1
    static double w [ATTRIBUTION_MODELS][ATTRIBUTION_HISTORY_MAX];
    attribution_touch_t ts [] = { s_t (0, 1, 1), s_t (DAY, 2, 1), s_t (2 * DAY, 3, 1),
                                  s_t (3 * DAY, 4, 1) };
    attribution_weights (ts, 4, 3 * DAY, HL, w);
    for (int m = 0; m < 5; m++) {
        double s = 0;
        for (int i = 0; i < 4; i++)
            s += w [m][i];
        assert (s_near (s, 1));
    }
    assert (w [ATTR_FIRST][0] == 1 && w [ATTR_FIRST][3] == 0);
    assert (w [ATTR_LAST][3] == 1 && w [ATTR_LAST][0] == 0);
    assert (s_near (w [ATTR_LINEAR][1], 0.25));
    assert (s_near (w [ATTR_POSITION][0], 0.4) && s_near (w [ATTR_POSITION][3], 0.4)
         && s_near (w [ATTR_POSITION][1], 0.1));
    //  Time decay: a touch one half-life older earns half as much
    attribution_touch_t two [] = { s_t (0, 1, 1), s_t ((int64_t) HL, 2, 1) };
    attribution_weights (two, 2, (int64_t) HL, HL, w);
    assert (s_near (w [ATTR_DECAY][0], 1.0 / 3) && s_near (w [ATTR_DECAY][1], 2.0 / 3));
    assert (s_near (w [ATTR_POSITION][0], 0.5));        //  Two touches: 50/50
    attribution_touch_t one [] = { s_t (5, 1, 1) };
    attribution_weights (one, 1, 9, HL, w);
    assert (w [ATTR_POSITION][0] == 1);

    //  Largest remainder: parts sum exactly to the total, ties by key
    double thirds [] = { 1.0 / 3, 1.0 / 3, 1.0 / 3 };
    int64_t parts [3];
    attribution_allocate (thirds, 3, 100, parts);
    assert (parts [0] == 34 && parts [1] == 33 && parts [2] == 33);
    double halves [] = { 0.5, 0.5 };
    attribution_allocate (halves, 2, 1, parts);
    assert (parts [0] + parts [1] == 1 && parts [0] == 1);
    //  Edge: fractions summing above 1 take units back from the smallest remainders
    double over [] = { 0.6, 0.6 };
    attribution_allocate (over, 2, 10, parts);
    assert (parts [0] + parts [1] == 10);

    //  Credits of one conversion: touches after it do not count
    attribution_credits_t *cr = malloc (sizeof *cr), *cr2 = malloc (sizeof *cr2),
                          *d = malloc (sizeof *d);
    assert (cr && cr2 && d);
    attribution_touch_t history [] = { s_t (0, 1, 1), s_t (DAY, 2, 1), s_t (2 * DAY, 3, 2),
                                       s_t (9 * DAY, 4, 2) };
    attribution_credit (history, 4, 2 * DAY, HL, 0, cr);
    assert (cr->n == 3 && !s_key (cr, 4, 2));
    assert (s_key (cr, 1, 1)->v [ATTR_FIRST] == U && s_key (cr, 2, 1)->v [ATTR_FIRST] == 0
         && s_key (cr, 3, 2)->v [ATTR_FIRST] == 0);
    assert (s_key (cr, 3, 2)->v [ATTR_LAST] == U && s_key (cr, 1, 1)->v [ATTR_LAST] == 0);
    assert (s_key (cr, 1, 1)->v [ATTR_LINEAR] == 333334 && s_key (cr, 2, 1)->v [ATTR_LINEAR] == 333333
         && s_key (cr, 3, 2)->v [ATTR_LINEAR] == 333333);
    assert (s_key (cr, 1, 1)->v [ATTR_POSITION] == 400000
         && s_key (cr, 2, 1)->v [ATTR_POSITION] == 200000
         && s_key (cr, 3, 2)->v [ATTR_POSITION] == 400000);
    assert (!s_key (cr, 1, 1)->rev);                    //  No amount: no revenue slots
    for (int m = 0; m < 5; m++)
        assert (s_sum (cr, m) == U);
    assert (s_key (cr, 3, 2)->v [ATTR_DECAY] > s_key (cr, 2, 1)->v [ATTR_DECAY]
         && s_key (cr, 2, 1)->v [ATTR_DECAY] > s_key (cr, 1, 1)->v [ATTR_DECAY]);

    //  Revenue: cents split by the same weights, summing to the amount exactly
    attribution_credit (history, 4, 2 * DAY, HL, 1001, cr);
    for (int m = 0; m < 5; m++)
        assert (s_sum (cr, 5 + m) == 1001);
    //  400.4 + 200.2 + 400.4: the one cent left goes to the tied first key
    assert (s_key (cr, 1, 1)->v [5 + ATTR_FIRST] == 1001
         && s_key (cr, 1, 1)->v [5 + ATTR_POSITION] == 401);
    assert (s_key (cr, 2, 1)->v [5 + ATTR_POSITION] == 200
         && s_key (cr, 3, 2)->v [5 + ATTR_POSITION] == 400);
    //  ... and the compact text round-trips
    char ctext [512];
    size_t clen = attribution_credits_encode (cr, 1001, ctext, sizeof ctext);
    assert (attribution_credits_decode (ctext, clen, 1001, cr2) == 0 && cr2->n == 3);
    assert (memcmp (cr->key, cr2->key, 3 * sizeof cr->key [0]) == 0);

    //  Several touches of one campaign and bucket aggregate into one key
    attribution_touch_t agg [] = { s_t (1, 7, 3), s_t (2, 7, 3), s_t (3, 8, 3) };
    attribution_credit (agg, 3, 3, HL, 0, cr);
    assert (s_key (cr, 7, 3)->v [ATTR_LINEAR] == 666667 && s_key (cr, 8, 3)->v [ATTR_LINEAR] == 333333);
    assert (s_key (cr, 7, 3)->v [ATTR_POSITION] == 600000);
    //  Edge: keys order as text, so 10:1 ties before 9:1
    attribution_touch_t tied [] = { s_t (1, 9, 1), s_t (2, 10, 1) };
    attribution_credit (tied, 2, 2, HL, 1, cr);
    assert (cr->key [0].c == 10 && s_key (cr, 10, 1)->v [5 + ATTR_LINEAR] == 1);

    //  No touch before the conversion: nothing to credit
    attribution_credit (history, 4, -1, HL, 500, cr);
    assert (cr->n == 0);
    attribution_credit (NULL, 0, 100, HL, 0, cr);
    assert (cr->n == 0);
    clen = attribution_credits_encode (cr, 0, ctext, sizeof ctext);
    assert (clen == 0 && attribution_credits_decode (ctext, 0, 0, cr2) == 0 && cr2->n == 0);

    //  A late touch re-attributes: diff is exactly what changes
    attribution_touch_t b1 [] = { s_t (10, 1, 1) };
    attribution_touch_t a2 [] = { s_t (5, 2, 1), s_t (10, 1, 1) };
    attribution_credit (b1, 1, 100, HL, 0, cr);
    attribution_credit (a2, 2, 100, HL, 0, cr2);
    //  A sole key holding the whole conversion is written "c,b"
    clen = attribution_credits_encode (cr, 0, ctext, sizeof ctext);
    assert (strcmp (ctext, "1,1") == 0);
    attribution_diff (cr, cr2, d);
    assert (s_key (d, 2, 1)->v [ATTR_FIRST] == U && s_key (d, 1, 1)->v [ATTR_FIRST] == -U);
    assert (s_key (d, 1, 1)->v [ATTR_LAST] == 0 && s_key (d, 2, 1)->v [ATTR_LAST] == 0);
    assert (s_key (d, 1, 1)->v [ATTR_LINEAR] == -U / 2 && s_key (d, 2, 1)->v [ATTR_LINEAR] == U / 2);
    attribution_credits_t *none = malloc (sizeof *none);
    assert (none);
    attribution_diff (cr2, cr2, none);
    assert (none->n == 0);
    //  Applying the diff to the old credits gives the new ones, model by model
    for (int m = 0; m < 5; m++)
        assert (s_sum (cr, m) + s_sum (d, m) == s_sum (cr2, m));

    //  Models by name
    assert (attribution_model ("linear") == ATTR_LINEAR && attribution_model ("x") == -1
         && attribution_model (NULL) == -1);
    char b36 [16];
    assert (attribution_base36 (ATTRIBUTION_UNITS, b36) == 4 && strcmp (b36, "lfls") == 0);
    free (cr);
    free (cr2);
    free (d);
    free (none);
}
