/*  customer_health — a customer's health score, risk band, silence due
    time (from the customer's own order rhythm) and the upsell rule. Pure
    functions of their arguments; every setting is documented in
    proto/retention.md.

    score = round (Σ weight_i · sub_i / Σ weight_i), each sub-score 0..100:
      recency   100 · max (0, 1 − days since last order or activity / recency_days),
                idle time counted in whole hours
      frequency 100 · min (orders, frequency_orders) / frequency_orders
      monetary  100 · min (revenue, monetary_ref) / monetary_ref
      nps       nps · 10, or 50 (neutral) when the customer never answered
      tickets   max (0, 100 − Σ penalty[severity] per open ticket)
    Dividing by the weights' sum makes weights relative.

        health_cfg_t cfg;
        health_cfg_defaults (&cfg);
        health_input_t c = { .now = now, .last = la, .has_last = true, .orders = 3 };
        int score = health_score (&c, &cfg);
        const char *risk = health_risk (score, overdue, &cfg);
*/
#ifndef CUSTOMER_HEALTH_H_INCLUDED
#define CUSTOMER_HEALTH_H_INCLUDED

#include <stdbool.h>
#include <stdint.h>

#define HEALTH_DAY_MS   86400000LL

//  Ticket severities, in this order everywhere (open counts, penalties).
enum { SEV_LOW, SEV_NORMAL, SEV_HIGH, SEV_URGENT, SEV_COUNT };
extern const char *const health_severities [SEV_COUNT + 1];
//  Sub-scores, in the fixed order the weighted sum adds them.
enum { PART_RECENCY, PART_FREQUENCY, PART_MONETARY, PART_NPS, PART_TICKETS, PART_COUNT };

typedef struct {
    double weights [PART_COUNT];
    double penalty [SEV_COUNT];
    double risk_high, risk_medium;
    double upsell_nps, upsell_health, upsell_period_days;
    double recency_days, frequency_orders, monetary_ref;
    double churn_days, silence_factor, silence_min_gap_days;
    int64_t sweep_limit;
} health_cfg_t;

typedef struct {
    int64_t now;
    int64_t last;               //  Last order or activity (ms)
    bool has_last;              //  false: counted as now
    int64_t orders, revenue;
    int nps;                    //  0..10
    bool has_nps;
    int64_t open [SEV_COUNT];   //  Open tickets per severity
} health_input_t;

//  The settings' defaults (retention_rules.c reads the real ones).
void
    health_cfg_defaults (health_cfg_t *cfg);
//  The five sub-scores, 0..100.
void
    health_parts (const health_input_t *c, const health_cfg_t *cfg, double parts [PART_COUNT]);
//  The weighted score, an integer 0..100 (50 if every weight is 0).
int
    health_score (const health_input_t *c, const health_cfg_t *cfg);
//  "high" below risk_high or when overdue, "medium" below risk_medium,
//  else "low".
const char *
    health_risk (int score, bool overdue, const health_cfg_t *cfg);
//  When silence makes a customer at risk: the usual gap is the mean one,
//  (last − first) / (orders − 1), floored at silence_min_gap_days; the next
//  order is due silence_factor × gap after the last. false with fewer than
//  two orders; else *due and *gap (rounded ms).
bool
    health_due_at (int64_t first, int64_t last, int64_t orders, const health_cfg_t *cfg,
                   int64_t *due, int64_t *gap);
//  Whole days from from to to (0 if to is earlier).
int64_t
    health_days (int64_t from, int64_t to);
//  A healthy promoter due an upsell: NPS and health high enough, and none
//  offered within the period (has_last false = never).
bool
    health_upsell_due (bool has_nps, int nps, int score, bool has_last, int64_t last_ms,
                       int64_t now, const health_cfg_t *cfg);

void
    customer_health_test (bool verbose);

#endif
