/*  lead_score — see lead_score.h.  */
#include <ctype.h>
#include <math.h>
#include <string.h>
#include "lead_score.h"

const char *const lead_fit_part_names [LEAD_FIT_PARTS] = {
    "budget", "authority", "need", "timeline", "audience"
};

double
lead_score_at (lead_score_sum_t e, double t, double hl)
{
    if (e.v == 0 || t <= e.t0)
        return e.v;
    return e.v * pow (2, -(t - e.t0) / hl);
}

lead_score_sum_t
lead_score_add (lead_score_sum_t e, double pts, double t, double hl)
{
    if (t >= e.t0)
        return (lead_score_sum_t) { lead_score_at (e, t, hl) + pts, t };
    lead_score_sum_t late = { pts, t };
    return (lead_score_sum_t) { e.v + lead_score_at (late, e.t0, hl), e.t0 };
}

lead_score_sum_t
lead_score_merge (lead_score_sum_t a, lead_score_sum_t b, double hl)
{
    if (a.t0 >= b.t0)
        return (lead_score_sum_t) { a.v + lead_score_at (b, a.t0, hl), a.t0 };
    return (lead_score_sum_t) { b.v + lead_score_at (a, b.t0, hl), b.t0 };
}

bool
lead_score_crossing (lead_score_sum_t e, double need, double hl, double *t_out)
{
    if (need <= 0)
        return false;
    if (e.v < need) {
        *t_out = e.t0;
        return true;
    }
    //  The log is off by an ulp or so: settle on the exact first ms
    double t = floor (e.t0 + hl * log (e.v / need) / log (2));
    while (lead_score_at (e, t, hl) >= need)
        t = t + 1;
    while (t > e.t0 && lead_score_at (e, t - 1, hl) < need)
        t = t - 1;
    *t_out = t;
    return true;
}

double
lead_score_round (double x, int places)
{
    double m = pow (10, places);
    return floor (x * m + 0.5) / m;
}

static bool
s_icp_match (const lead_icp_rule_t *rule, lead_attr_t value)
{
    if (value.type == LEAD_ATTR_ABSENT || (value.type == LEAD_ATTR_BOOL && !value.flag))
        return false;
    if (rule->has_values) {
        if (value.type != LEAD_ATTR_STR)
            return false;
        for (size_t i = 0; i < rule->nvalues; i++) {
            const char *a = value.str, *b = rule->values [i];
            while (*a && *b && tolower ((unsigned char) *a) == *b) {
                a++;
                b++;
            }
            if (!*a && !*b)
                return true;
        }
        return false;
    }
    if (rule->has_min || rule->has_max) {
        if (value.type != LEAD_ATTR_NUM)
            return false;
        if (rule->has_min && value.num < rule->min)
            return false;
        if (rule->has_max && value.num > rule->max)
            return false;
    }
    return true;
}

double
lead_score_fit (lead_attr_fn *attr, void *arg, bool audience,
                const lead_score_rules_t *rules, double *parts)
{
    double p [LEAD_FIT_PARTS];
    lead_attr_t v = attr (arg, "budget");
    p [0] = v.type == LEAD_ATTR_NUM && v.num >= rules->budget_min ? rules->budget : 0;
    v = attr (arg, "authority");
    p [1] = v.type == LEAD_ATTR_BOOL && v.flag ? rules->authority : 0;
    v = attr (arg, "need");
    p [2] = v.type == LEAD_ATTR_BOOL && v.flag ? rules->need : 0;
    v = attr (arg, "timeline_days");
    p [3] = v.type == LEAD_ATTR_NUM && v.num <= rules->timeline_days_max ? rules->timeline : 0;
    p [4] = audience ? rules->in_audience_fit : 0;
    double total = p [0] + p [1] + p [2] + p [3] + p [4];
    if (parts)
        memcpy (parts, p, sizeof p);
    for (size_t i = 0; i < rules->nicp; i++) {
        const lead_icp_rule_t *rule = &rules->icp [i];
        double pts = s_icp_match (rule, attr (arg, rule->attr)) ? rule->points : 0;
        if (parts)
            parts [LEAD_FIT_PARTS + i] = pts;
        total = total + pts;
    }
    return total;
}

lead_rank_t
lead_score_stage_for (double total, double fit, const lead_score_rules_t *rules)
{
    if (total >= rules->sql && fit >= rules->sql_fit_min)
        return LEAD_SQL;
    if (total >= rules->mql)
        return LEAD_MQL;
    return LEAD_NURTURE;
}

//  --------------------------------------------------------------------
//  Self-test (the rules' cases, plus edges)

#undef NDEBUG                   //  The self-test needs its asserts
#include <assert.h>

static bool
s_near (double a, double b, double eps)
{
    return fabs (a - b) <= eps;
}

//  Attrs for the test: a tiny table
typedef struct {
    const char *name;
    lead_attr_t value;
} s_attr_row_t;

static lead_attr_t
s_attr (void *arg, const char *name)
{
    for (const s_attr_row_t *row = (const s_attr_row_t *) arg; row->name; row++)
        if (strcmp (row->name, name) == 0)
            return row->value;
    return (lead_attr_t) { LEAD_ATTR_ABSENT, 0, false, NULL };
}

#define NUM(n)  { LEAD_ATTR_NUM, (n), false, NULL }
#define FLAG(b) { LEAD_ATTR_BOOL, 0, (b), NULL }
#define STR(s)  { LEAD_ATTR_STR, 0, false, (s) }

void
lead_score_test (bool verbose)
{
    (void) verbose;
    const double HL = 1000;
    //  Decay: one half-life halves, two quarter, never grows before t0
    assert (s_near (lead_score_at ((lead_score_sum_t) { 8, 0 }, 1000, HL), 4, 1e-9));
    assert (s_near (lead_score_at ((lead_score_sum_t) { 8, 0 }, 2000, HL), 2, 1e-9));
    assert (lead_score_at ((lead_score_sum_t) { 8, 5000 }, 1000, HL) == 8);
    assert (lead_score_at ((lead_score_sum_t) { 0, 0 }, 99999, HL) == 0);

    //  Touches in any order give the same value at the same time
    lead_score_sum_t e1 = { 0, 0 }, e2 = { 0, 0 };
    e1 = lead_score_add (e1, 10, 1000, HL);
    e1 = lead_score_add (e1, 3, 2000, HL);
    e2 = lead_score_add (e2, 3, 2000, HL);
    e2 = lead_score_add (e2, 10, 1000, HL);
    assert (e1.t0 == 2000 && e2.t0 == 2000);
    assert (s_near (e1.v, 8, 1e-9) && s_near (e2.v, 8, 1e-9));
    assert (s_near (lead_score_at (e1, 3000, HL), 4, 1e-9));

    //  Merging two sums equals adding all touches to one
    lead_score_sum_t a = lead_score_add ((lead_score_sum_t) { 0, 0 }, 10, 1000, HL);
    lead_score_sum_t b = lead_score_add ((lead_score_sum_t) { 0, 0 }, 3, 2000, HL);
    lead_score_sum_t m = lead_score_merge (a, b, HL);
    assert (m.t0 == 2000 && s_near (m.v, 8, 1e-9));
    m = lead_score_merge (b, a, HL);
    assert (m.t0 == 2000 && s_near (m.v, 8, 1e-9));

    //  Crossing: first ms strictly below need
    double t;
    assert (lead_score_crossing ((lead_score_sum_t) { 8, 0 }, 4, HL, &t) && t == 1001);
    assert (lead_score_at ((lead_score_sum_t) { 8, 0 }, t, HL) < 4);
    assert (lead_score_at ((lead_score_sum_t) { 8, 0 }, t - 2, HL) >= 4);
    assert (!lead_score_crossing ((lead_score_sum_t) { 8, 0 }, 0, HL, &t));
    assert (!lead_score_crossing ((lead_score_sum_t) { 8, 0 }, -5, HL, &t));
    assert (lead_score_crossing ((lead_score_sum_t) { 3, 700 }, 4, HL, &t) && t == 700);
    lead_score_sum_t big = { 25, 123456 };
    assert (lead_score_crossing (big, 7.5, 1209600000, &t));
    assert (lead_score_at (big, t, 1209600000) < 7.5);
    assert (lead_score_at (big, t - 1, 1209600000) >= 7.5 - 1e-9);

    assert (lead_score_round (84.6, 0) == 85 && lead_score_round (84.4, 0) == 84);
    assert (lead_score_round (1.234, 2) == 1.23);
    //  Edge: halves round up, negatives too (towards +inf)
    assert (lead_score_round (2.5, 0) == 3 && lead_score_round (-2.5, 0) == -2);

    //  Fit: the default rules of proto/leads.md
    const char *industries [] = { "saas", "fintech" };
    lead_icp_rule_t icp [] = {
        { "size", "employees", true, false, 50, 0, NULL, 0, false, 10 },
        { "industry", "industry", false, false, 0, 0, industries, 2, true, 10 },
        { "gov", "public", false, false, 0, 0, NULL, 0, false, 5 }
    };
    lead_score_rules_t rules = { 40, 80, 30, 5, 15, 15, 15, 15, 1, 90, icp, 3 };
    double parts [LEAD_FIT_PARTS + 3];
    s_attr_row_t none [] = { { NULL } };
    assert (lead_score_fit (s_attr, none, false, &rules, parts) == 0);
    assert (parts [0] == 0 && parts [LEAD_FIT_PARTS] == 0);
    s_attr_row_t bant [] = { { "budget", NUM (5000) }, { "authority", FLAG (true) },
                             { "need", FLAG (true) }, { "timeline_days", NUM (90) }, { NULL } };
    assert (lead_score_fit (s_attr, bant, false, &rules, parts) == 60);
    assert (parts [0] == 15 && parts [3] == 15);
    s_attr_row_t some [] = { { "budget", NUM (0) }, { "authority", FLAG (false) },
                             { "need", FLAG (true) }, { "timeline_days", NUM (91) }, { NULL } };
    assert (lead_score_fit (s_attr, some, false, &rules, NULL) == 15);
    s_attr_row_t icps [] = { { "employees", NUM (50) }, { "industry", STR ("SaaS") },
                             { "public", FLAG (true) }, { NULL } };
    assert (lead_score_fit (s_attr, icps, true, &rules, parts) == 30);
    assert (parts [LEAD_FIT_PARTS] == 10 && parts [LEAD_FIT_PARTS + 1] == 10 && parts [4] == 5);
    s_attr_row_t wrong [] = { { "employees", STR ("500") }, { "industry", NUM (7) },
                              { "public", FLAG (false) }, { NULL } };
    assert (lead_score_fit (s_attr, wrong, false, &rules, NULL) == 0);
    //  Edge: a value list needs the whole string ("saasy" is not "saas")
    s_attr_row_t near_miss [] = { { "industry", STR ("saasy") }, { NULL } };
    assert (lead_score_fit (s_attr, near_miss, false, &rules, NULL) == 0);

    //  Stages: the guarantee under the default points (form 10, click 3)
    lead_score_sum_t eng = { 0, 0 };
    eng = lead_score_add (eng, 10, 1000, 1209600000);
    for (int i = 1; i <= 5; i++)
        eng = lead_score_add (eng, 3, 1000 + i * 500, 1209600000);
    double total = 60 + lead_score_at (eng, 10000, 1209600000);
    assert (lead_score_stage_for (total, 60, &rules) == LEAD_SQL);
    assert (lead_score_stage_for (0, 0, &rules) == LEAD_NURTURE);
    assert (lead_score_stage_for (40, 0, &rules) == LEAD_MQL);
    assert (lead_score_stage_for (95, 20, &rules) == LEAD_MQL);     //  Engagement alone is not SQL
    assert (lead_score_stage_for (39.999, 39.999, &rules) == LEAD_NURTURE);
}
