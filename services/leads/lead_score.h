/*  lead_score — lead scoring, pure: engagement decay on the lead's own
    clock, fit (BANT and the ideal customer profile), stage thresholds.

    Engagement is a sum of touch points, each halving every half-life since
    its event time. Such a sum is one number v at a reference time t0
    (value at t = v * 2^-((t - t0) / hl)), so it is exact at any moment
    without a nightly job, and touches in any order fold into it.

        lead_score_sum_t e = { 0, 0 };
        e = lead_score_add (e, 10, t, hl);
        double now = lead_score_at (e, t + hl, hl);     //  5
*/
#ifndef LEAD_SCORE_H_INCLUDED
#define LEAD_SCORE_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    double v;                   //  Value at t0
    double t0;                  //  Reference time (ms)
} lead_score_sum_t;

//  The value of e at time t; never grows before t0 (future-dated input).
double
    lead_score_at (lead_score_sum_t e, double t, double hl);
//  Adds pts earned at t: the reference time moves forward only, so a late
//  (older) touch adds its already decayed share.
lead_score_sum_t
    lead_score_add (lead_score_sum_t e, double pts, double t, double hl);
//  Merges two sums (pending touches into a lead), at the later time.
lead_score_sum_t
    lead_score_merge (lead_score_sum_t a, lead_score_sum_t b, double hl);
//  First whole ms at which e falls strictly below need into *t; false if
//  it never will (need <= 0: the fit alone holds the stage).
bool
    lead_score_crossing (lead_score_sum_t e, double need, double hl, double *t);
//  Rounds half up to places decimals (scores are published as integers).
double
    lead_score_round (double x, int places);

//  An attribute's value as the rules see it
typedef enum {
    LEAD_ATTR_ABSENT, LEAD_ATTR_NUM, LEAD_ATTR_BOOL, LEAD_ATTR_STR, LEAD_ATTR_LIST
} lead_attr_type_t;

typedef struct {
    lead_attr_type_t type;
    double num;
    bool flag;
    const char *str;            //  LEAD_ATTR_STR
} lead_attr_t;

//  Looks an attribute up by name; {ABSENT} when the lead has none.
typedef lead_attr_t (lead_attr_fn) (void *arg, const char *name);

//  One ICP rule: numeric min/max (inclusive), a list of lower-case values
//  (matched case-insensitively), or just "present and not false".
typedef struct {
    const char *name, *attr;
    bool has_min, has_max;
    double min, max;
    const char *const *values;
    size_t nvalues;
    bool has_values;
    double points;
} lead_icp_rule_t;

typedef struct {
    double mql, sql, sql_fit_min, in_audience_fit;
    double budget, authority, need, timeline, budget_min, timeline_days_max;
    const lead_icp_rule_t *icp;
    size_t nicp;
} lead_score_rules_t;

#define LEAD_FIT_PARTS 5        //  budget, authority, need, timeline, audience
extern const char *const lead_fit_part_names [LEAD_FIT_PARTS];

//  Fit from the lead's attrs, plus a bonus once a touch was in the
//  campaign's audience. parts (LEAD_FIT_PARTS + nicp, may be NULL) gets
//  the breakdown: the fixed parts, then each ICP rule's points.
double
    lead_score_fit (lead_attr_fn *attr, void *arg, bool audience,
                    const lead_score_rules_t *rules, double *parts);

typedef enum { LEAD_NURTURE, LEAD_MQL, LEAD_SQL } lead_rank_t;
//  The stage a total score earns: SQL (score and fit both high enough),
//  MQL, or nurture.
lead_rank_t
    lead_score_stage_for (double total, double fit, const lead_score_rules_t *rules);

void
    lead_score_test (bool verbose);

#endif
