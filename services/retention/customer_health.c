/*  customer_health — health, risk, silence and upsell (see customer_health.h).  */
#include <math.h>
#include <string.h>
#include "customer_health.h"

const char *const health_severities [SEV_COUNT + 1] = {
    "low", "normal", "high", "urgent", NULL };

void
health_cfg_defaults (health_cfg_t *cfg)
{
    memset (cfg, 0, sizeof *cfg);
    double weights [PART_COUNT] = { 30, 20, 15, 20, 15 };
    double penalty [SEV_COUNT] = { 5, 10, 25, 40 };
    memcpy (cfg->weights, weights, sizeof weights);
    memcpy (cfg->penalty, penalty, sizeof penalty);
    cfg->risk_high = 40;
    cfg->risk_medium = 70;
    cfg->upsell_nps = 9;
    cfg->upsell_health = 70;
    cfg->upsell_period_days = 90;
    cfg->recency_days = 90;
    cfg->frequency_orders = 5;
    cfg->monetary_ref = 100000;
    cfg->churn_days = 90;
    cfg->silence_factor = 1.5;
    cfg->silence_min_gap_days = 1;
    cfg->sweep_limit = 1000;
}

static double
s_clamp01 (double x)
{
    return x < 0 ? 0 : x > 1 ? 1 : x;
}

void
health_parts (const health_input_t *c, const health_cfg_t *cfg, double parts [PART_COUNT])
{
    //  Idle time in whole hours: events milliseconds apart rate the same
    int64_t idle = c->now - (c->has_last ? c->last : c->now);
    double hours = floor ((double) (idle > 0 ? idle : 0) / 3600000);
    double days = hours / 24;
    double penalty = 0;
    for (int s = 0; s < SEV_COUNT; s++)
        penalty += (double) c->open [s] * cfg->penalty [s];
    parts [PART_RECENCY] = 100 * s_clamp01 (1 - days / cfg->recency_days);
    parts [PART_FREQUENCY] = 100 * s_clamp01 ((double) c->orders / cfg->frequency_orders);
    parts [PART_MONETARY] = 100 * s_clamp01 ((double) c->revenue / cfg->monetary_ref);
    parts [PART_NPS] = c->has_nps ? c->nps * 10 : 50;
    parts [PART_TICKETS] = 100 - penalty > 0 ? 100 - penalty : 0;
}

int
health_score (const health_input_t *c, const health_cfg_t *cfg)
{
    double parts [PART_COUNT];
    health_parts (c, cfg, parts);
    double sum = 0, wsum = 0;
    for (int i = 0; i < PART_COUNT; i++) {      //  Fixed order: the same float sum
        sum += cfg->weights [i] * parts [i];
        wsum += cfg->weights [i];
    }
    if (wsum <= 0)
        return 50;
    return (int) floor (sum / wsum + 0.5);
}

const char *
health_risk (int score, bool overdue, const health_cfg_t *cfg)
{
    if (overdue || score < cfg->risk_high)
        return "high";
    if (score < cfg->risk_medium)
        return "medium";
    return "low";
}

bool
health_due_at (int64_t first, int64_t last, int64_t orders, const health_cfg_t *cfg,
               int64_t *due, int64_t *gap)
{
    if (orders < 2)
        return false;
    double mean = (double) (last - first) / (double) (orders - 1);
    double floor_ms = cfg->silence_min_gap_days * HEALTH_DAY_MS;
    double g = mean > floor_ms ? mean : floor_ms;
    *due = (int64_t) floor ((double) last + cfg->silence_factor * g + 0.5);
    *gap = (int64_t) floor (g + 0.5);
    return true;
}

int64_t
health_days (int64_t from, int64_t to)
{
    return to > from ? (to - from) / HEALTH_DAY_MS : 0;
}

bool
health_upsell_due (bool has_nps, int nps, int score, bool has_last, int64_t last_ms,
                   int64_t now, const health_cfg_t *cfg)
{
    if (!has_nps || nps < cfg->upsell_nps || score < cfg->upsell_health)
        return false;
    return !has_last || (double) (now - last_ms) >= cfg->upsell_period_days * HEALTH_DAY_MS;
}

//  --------------------------------------------------------------------------
//  Self-test (asserts stay on in every build)
#undef NDEBUG
#include <assert.h>
//  The health formula's cases

#define DAY     HEALTH_DAY_MS
#define NOW     1800000000000LL

static health_input_t
s_customer (void)
{
    health_input_t c;
    memset (&c, 0, sizeof c);
    c.now = NOW;
    c.last = NOW;
    c.has_last = true;
    c.orders = 1;
    return c;
}

void
customer_health_test (bool verbose)
{
    (void) verbose;
    health_cfg_t cfg;
    health_cfg_defaults (&cfg);
    double p [PART_COUNT];

    //  Sub-scores
    health_input_t c = s_customer ();
    c.last = NOW - 45 * DAY;
    c.orders = 2;
    c.revenue = 50000;
    c.has_nps = true;
    c.nps = 8;
    c.open [SEV_LOW] = 1;
    c.open [SEV_URGENT] = 1;
    health_parts (&c, &cfg, p);
    assert (p [PART_RECENCY] == 50 && p [PART_FREQUENCY] == 40 && p [PART_MONETARY] == 50);
    assert (p [PART_NPS] == 80 && p [PART_TICKETS] == 55);
    //  The weighted score: (30*50 + 20*40 + 15*50 + 20*80 + 15*55) / 100 = 54.75 -> 55
    assert (health_score (&c, &cfg) == 55);

    //  Saturation and floors; no NPS answer is neutral
    c = s_customer ();
    c.last = NOW - 400 * DAY;
    c.orders = 50;
    c.revenue = 1000000000;
    c.open [SEV_URGENT] = 3;
    health_parts (&c, &cfg, p);
    assert (p [PART_RECENCY] == 0 && p [PART_FREQUENCY] == 100 && p [PART_MONETARY] == 100);
    assert (p [PART_TICKETS] == 0 && p [PART_NPS] == 50);
    //  An event time after now counts as idle 0 days
    c = s_customer ();
    c.last = NOW + DAY;
    health_parts (&c, &cfg, p);
    assert (p [PART_RECENCY] == 100);
    //  Idle time counts in whole hours
    c.last = NOW - 59 * 60000;
    health_parts (&c, &cfg, p);
    assert (p [PART_RECENCY] == 100);
    c.last = NOW - 90 * DAY + 3600000;
    health_parts (&c, &cfg, p);
    assert (p [PART_RECENCY] > 0);

    //  Best and worst customers span the range
    c = s_customer ();
    c.orders = 9;
    c.revenue = 10000000;
    c.has_nps = true;
    c.nps = 10;
    assert (health_score (&c, &cfg) == 100);
    c = s_customer ();
    c.last = NOW - 100 * DAY;
    c.orders = 0;
    c.has_nps = true;
    c.nps = 0;
    c.open [SEV_URGENT] = 5;
    assert (health_score (&c, &cfg) == 0);
    //  Fresh customer, one 500.00 order, no feedback: 66.5 -> 67
    c = s_customer ();
    c.revenue = 50000;
    assert (health_score (&c, &cfg) == 67);
    //  Weights are relative
    health_cfg_t scaled = cfg;
    double w [PART_COUNT] = { 3, 2, 1.5, 2, 1.5 };
    memcpy (scaled.weights, w, sizeof w);
    assert (health_score (&c, &scaled) == 67);
    //  Only one weight: the score is that sub-score
    health_cfg_t only_nps = cfg;
    double w1 [PART_COUNT] = { 0, 0, 0, 1, 0 };
    memcpy (only_nps.weights, w1, sizeof w1);
    c = s_customer ();
    c.has_nps = true;
    c.nps = 3;
    assert (health_score (&c, &only_nps) == 30);
    //  No weight at all: neutral
    health_cfg_t none = cfg;
    memset (none.weights, 0, sizeof none.weights);
    assert (health_score (&c, &none) == 50);
    //  Ticket penalties follow the configured severities
    c = s_customer ();
    c.open [SEV_NORMAL] = 2;
    c.open [SEV_HIGH] = 1;
    health_parts (&c, &cfg, p);
    assert (p [PART_TICKETS] == 55);

    //  Risk bands (strict "below")
    assert (strcmp (health_risk (39, false, &cfg), "high") == 0);
    assert (strcmp (health_risk (40, false, &cfg), "medium") == 0);
    assert (strcmp (health_risk (69, false, &cfg), "medium") == 0);
    assert (strcmp (health_risk (70, false, &cfg), "low") == 0);
    assert (strcmp (health_risk (100, true, &cfg), "high") == 0);

    //  Silence: mean gap, factor, floor
    int64_t due, gap;
    assert (!health_due_at (0, 0, 1, &cfg, &due, &gap));
    assert (health_due_at (NOW, NOW + 20 * DAY, 3, &cfg, &due, &gap));
    assert (gap == 10 * DAY && due == NOW + 35 * DAY);
    assert (health_due_at (NOW, NOW + 1000, 2, &cfg, &due, &gap));
    assert (gap == DAY && due == NOW + 1000 + 3 * DAY / 2);
    health_cfg_t nofloor = cfg;
    nofloor.silence_min_gap_days = 0;
    assert (health_due_at (NOW, NOW + 2000, 2, &nofloor, &due, &gap));
    assert (due == NOW + 5000);

    //  Days
    assert (health_days (NOW, NOW + 3 * DAY - 1) == 2);
    assert (health_days (NOW, NOW - 5) == 0);

    //  Upsell: promoter, healthy, once per period
    assert (health_upsell_due (true, 9, 70, false, 0, NOW, &cfg));
    assert (!health_upsell_due (true, 8, 90, false, 0, NOW, &cfg));     //  Passive
    assert (!health_upsell_due (false, 0, 90, false, 0, NOW, &cfg));    //  No NPS
    assert (!health_upsell_due (true, 10, 69, false, 0, NOW, &cfg));    //  Unhealthy
    assert (!health_upsell_due (true, 10, 90, true, NOW - 89 * DAY, NOW, &cfg));
    assert (health_upsell_due (true, 10, 90, true, NOW - 90 * DAY, NOW, &cfg));
}
