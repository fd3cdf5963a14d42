/*  retention_stage — the retention stage's rules (see retention_stage.h).

    State (proto/retention.md "State"), all in the customer's partition
    except the cohorts:
      c:<customer>          the customer (short fields, integers); the last
                            ORDERS_INLINE order ids in field oi
      o:<customer>/<order>  one per further order id (field x = 1): the
                            order-id dedup is checked per id, never read
                            whole, whatever the customer's order count
      tk:<customer>/<ticket>  an open ticket's severity
      g:coh (partition 0)   '<month>:<c|r|x|v>' -> customers, repeat,
                            churned, revenue
    One timer per customer, "t", due at the earlier of its silence due
    time (field sd, while armed) and its churn time (last activity +
    churn_days, while not churned).
*/
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "funnel_service.h"
#include "funnel_log.h"
#include "cohort.h"
#include "customer_health.h"
#include "retention_rules.h"
#include "retention_stage.h"
#include "msgpack_kv.h"

#define ORDERS_INLINE   4           //  Order ids kept in the customer record
#define ID_MAX          (FUNNEL_STR_MAX + 1)
#define KEYID_MAX       (2 * ID_MAX + 8)

static const char *const s_sev_fields [SEV_COUNT] = { "tl", "tn", "th", "tu" };

#define UNAVAILABLE(err) funnel_error_set (err, FUNNEL_ERR_UNAVAILABLE, "redis: unavailable")

//  ---------------------------------------------------------------------
//  Helpers

static health_cfg_t *
s_cfg (funnel_state_t *st)
{
    return (health_cfg_t *) funnel_state_arg (st);
}

//  A string field (any length up to ID_MAX - 1, no NUL), copied.
static bool
s_str (const msgpack_object *map, const char *key, char *out)
{
    const msgpack_object *o = event_codec_map_get (map, key);
    return o && event_codec_obj_strcpy (o, out, ID_MAX);
}

static void
s_count_stage (funnel_state_t *st, const char *name, int64_t t, const char *campaign,
               int64_t n)
{
    funnel_state_count_stage (st, name, t, campaign, n);
}

//  Adds n to one of the customer's cohort figures (c, r, x or v); the
//  cohort is the onboarding month, derived rather than stored.
static int
s_cohort_add (funnel_state_t *st, funnel_rec_t *c, char what, int64_t n)
{
    char month [16], field [24];
    cohort_month (funnel_rec_int (c, "on", 0), month, sizeof month);
    snprintf (field, sizeof field, "%s:%c", month, what);
    return funnel_state_add_global (st, "g", "coh", field, n);
}

//  Times that mostly equal another are stored only when they differ: first
//  order (default: onboarded), last order (default: first order), last
//  activity (default: onboarded) — a new customer's record stays small
static int64_t
s_fo (funnel_rec_t *c)
{
    return funnel_rec_int (c, "fo", funnel_rec_int (c, "on", 0));
}

static int64_t
s_lo (funnel_rec_t *c)
{
    return funnel_rec_int (c, "lo", s_fo (c));
}

static int64_t
s_la (funnel_rec_t *c)
{
    return funnel_rec_int (c, "la", s_lo (c));
}

//  The deal that made the customer: field deal, absent when it is
//  L<customer>-1 (the first deal of a lead, as lead.sql names it)
static const char *
s_first_deal (funnel_rec_t *c, const char *id, char *buf, size_t size)
{
    const char *deal = funnel_rec_str (c, "deal");
    if (deal)
        return deal;
    snprintf (buf, size, "L%s-1", id);
    return buf;
}

static void
s_set_time (funnel_rec_t *c, const char *field, int64_t value, int64_t dflt)
{
    if (value == dflt)
        funnel_rec_del (c, field);
    else
        funnel_rec_set_int (c, field, value);
}

//  ---------------------------------------------------------------------
//  Order ids: the onboarding deal's implied, the next few in the record,
//  the rest a record each

static void
s_order_key (const char *customer, const char *order, char *out)
{
    //  '/' is outside the id charset: "<customer>/<order>" is injective
    snprintf (out, KEYID_MAX, "%s/%s", customer, order);
}

//  True for the order of the deal that made the customer: deal/<deal>
static bool
s_first_order (funnel_rec_t *c, const char *customer, const char *order)
{
    if (!funnel_rec_has (c, "n"))
        return false;               //  No customer yet
    char buf [KEYID_MAX];
    const char *deal = s_first_deal (c, customer, buf, sizeof buf);
    return strncmp (order, "deal/", 5) == 0 && streq (order + 5, deal);
}

//  True if order is the onboarding deal's or in fields o0..o3 (one id
//  each, so every value stays within the listpack bound); count: the
//  inline slots used
static bool
s_inline_has (funnel_rec_t *c, const char *customer, const char *order, int *count)
{
    *count = 0;
    if (s_first_order (c, customer, order))
        return true;
    for (int i = 0; i < ORDERS_INLINE; i++) {
        char name [16];
        snprintf (name, sizeof name, "o%d", i);
        const char *v = funnel_rec_str (c, name);
        if (!v)
            break;
        if (streq (v, order))
            return true;
        (*count)++;
    }
    return false;
}

//  1 if the customer has the order id, 0 if not, -1 if Redis is unavailable.
static int
s_has_order (funnel_state_t *st, const char *customer, funnel_rec_t *c, const char *order)
{
    int count;
    if (s_inline_has (c, customer, order, &count))
        return 1;
    if (!funnel_rec_has (c, "ox"))
        return 0;
    char key [KEYID_MAX];
    s_order_key (customer, order, key);
    funnel_rec_t *o = funnel_state_rec_in (st, customer, "o", key);
    if (!o)
        return -1;
    return funnel_rec_exists (o) ? 1 : 0;
}

static int
s_add_order_id (funnel_state_t *st, const char *customer, funnel_rec_t *c, const char *order)
{
    int count;
    if (s_inline_has (c, customer, order, &count))
        return 0;                   //  The onboarding deal's: implied
    if (count < ORDERS_INLINE && strlen (order) <= 64) {
        char name [16];
        snprintf (name, sizeof name, "o%d", count);
        funnel_rec_set_str (c, name, order);
        return 0;
    }
    char key [KEYID_MAX];
    s_order_key (customer, order, key);
    funnel_rec_t *o = funnel_state_rec_in (st, customer, "o", key);
    if (!o)
        return -1;
    funnel_rec_set_str (o, "x", "1");
    funnel_rec_set_str (c, "ox", "1");
    return 0;
}

//  ---------------------------------------------------------------------
//  The customer's timer: the earlier of silence and churn

static void
s_arm (funnel_state_t *st, const char *id, funnel_rec_t *c)
{
    health_cfg_t *cfg = s_cfg (st);
    int64_t due = INT64_MAX;
    if (funnel_rec_has (c, "sd"))
        due = funnel_rec_int (c, "sd", 0);
    if (!funnel_rec_has (c, "ch") && funnel_rec_has (c, "n")) {
        int64_t churn = (int64_t) ceil ((double) s_la (c)
                                        + cfg->churn_days * HEALTH_DAY_MS);
        if (churn < due)
            due = churn;
    }
    if (due == INT64_MAX)
        funnel_state_timer_cancel (st, "t", id);
    else
        funnel_state_timer (st, "t", id, due);
}

//  ---------------------------------------------------------------------
//  Health and risk

static void
s_inputs (funnel_rec_t *c, int64_t now, health_input_t *in)
{
    memset (in, 0, sizeof *in);
    in->now = now;
    in->has_last = true;
    in->last = s_la (c);
    in->orders = funnel_rec_int (c, "n", 0);
    in->revenue = funnel_rec_int (c, "rev", 0);
    in->has_nps = funnel_rec_has (c, "nps");
    in->nps = (int) funnel_rec_int (c, "nps", 0);
    for (int s = 0; s < SEV_COUNT; s++)
        in->open [s] = funnel_rec_int (c, s_sev_fields [s], 0);
}

//  Recomputes health and risk after a change; publishes customer.health
//  on change, customer.at_risk on entering high risk, customer.upsell for
//  a healthy promoter. seed: the output ids' key for timer-driven calls.
//  at: the moment the upsell stands for.
static void
s_refresh (funnel_state_t *st, const char *id, funnel_rec_t *c, int64_t now,
           const char *reason, const char *seed, int64_t at)
{
    health_cfg_t *cfg = s_cfg (st);
    health_input_t in;
    s_inputs (c, now, &in);
    int score = health_score (&in, cfg);
    bool overdue = funnel_rec_has (c, "od");
    const char *risk = health_risk (score, overdue, cfg);
    const char *old_r = funnel_rec_str (c, "r");
    bool had_h = funnel_rec_has (c, "h");
    int64_t old_h = funnel_rec_int (c, "h", 0);
    bool was_high = old_r && streq (old_r, "high");
    if (!had_h || old_h != score || !old_r || !streq (old_r, risk)) {
        funnel_rec_set_int (c, "h", score);
        funnel_rec_set_str (c, "r", risk);
        msgpack_packer *pk = funnel_state_data (st);
        msgpack_pack_map (pk, 3);
        msgpack_kv_put_str (pk, "customer", id);
        msgpack_kv_put_int (pk, "health", score);
        msgpack_kv_put_str (pk, "risk", risk);
        funnel_state_emit (st, "customer.health", seed);
    }
    bool high = streq (risk, "high");
    if (high && !was_high) {
        funnel_state_count (st, "at_risk", 1);
        msgpack_packer *pk = funnel_state_data (st);
        msgpack_pack_map (pk, 3);
        msgpack_kv_put_str (pk, "customer", id);
        msgpack_kv_put_int (pk, "health", score);
        msgpack_kv_put_str (pk, "reason", overdue ? "overdue" : reason);
        funnel_state_emit (st, "customer.at_risk", seed);
    }
    else
    if (was_high && !high)
        funnel_state_count (st, "at_risk", -1);
    if (health_upsell_due (in.has_nps, in.nps, score, funnel_rec_has (c, "up"),
                           funnel_rec_int (c, "up", 0), now, cfg)) {
        funnel_rec_set_int (c, "up", now);
        msgpack_packer *pk = funnel_state_data (st);
        msgpack_pack_map (pk, 4);
        msgpack_kv_put_str (pk, "customer", id);
        msgpack_kv_put_int (pk, "nps", in.nps);
        msgpack_kv_put_int (pk, "health", score);
        msgpack_kv_put_int (pk, "at", at);
        funnel_state_emit (st, "customer.upsell", seed);
    }
}

//  Any customer event is activity: it moves the churn clock and wins back
//  a churned customer (who leaves the churned count and is rated afresh).
static int
s_touch (funnel_state_t *st, funnel_rec_t *c, int64_t ts)
{
    int64_t la = funnel_rec_has (c, "la") || funnel_rec_has (c, "n") ? s_la (c) : 0;
    if (ts > la)
        la = ts;
    if (funnel_rec_has (c, "ch")) {
        funnel_rec_del (c, "ch");
        funnel_state_count (st, "churned", -1);
        funnel_state_count (st, "won_back", 1);
        if (s_cohort_add (st, c, 'x', -1))
            return -1;
        funnel_rec_del (c, "r");
    }
    s_set_time (c, "la", la, s_lo (c));
    return 0;
}

//  Records one order at event time ts; at: the moment for the series.
static int
s_add_order (funnel_state_t *st, const char *id, funnel_rec_t *c, int64_t amount,
             const char *order, int64_t ts, int64_t at)
{
    health_cfg_t *cfg = s_cfg (st);
    if (order && s_add_order_id (st, id, c, order))
        return -1;
    int64_t n = funnel_rec_add (c, "n", 1);
    funnel_rec_add (c, "rev", amount);
    //  The first order's times are ts (n was 0); la defaults to lo: kept
    int64_t la = s_la (c);
    int64_t fo = n > 1 ? s_fo (c) : ts;
    int64_t lo = n > 1 ? s_lo (c) : ts;
    fo = ts < fo ? ts : fo;
    lo = ts > lo ? ts : lo;
    s_set_time (c, "fo", fo, funnel_rec_int (c, "on", 0));
    s_set_time (c, "lo", lo, fo);
    s_set_time (c, "la", la, lo);
    funnel_state_count (st, "revenue", amount);
    if (s_cohort_add (st, c, 'v', amount))
        return -1;
    if (n == 2) {
        //  n grows by one per order: once per customer
        s_count_stage (st, "repeat", at, funnel_rec_str (c, "cmp"), 1);
        if (s_cohort_add (st, c, 'r', 1))
            return -1;
        msgpack_packer *pk = funnel_state_data (st);
        msgpack_pack_map (pk, 2);
        msgpack_kv_put_str (pk, "customer", id);
        msgpack_kv_put_int (pk, "orders", n);
        funnel_state_emit (st, "customer.repeat", NULL);
    }
    //  A new order ends any silence and sets when the next one is overdue
    funnel_rec_del (c, "od");
    int64_t due, gap;
    if (health_due_at (fo, lo, n, cfg, &due, &gap))
        funnel_rec_set_int (c, "sd", due);
    return 0;
}

//  The customer record; NULL with err set (not_found naming field, or
//  unavailable).
static funnel_rec_t *
s_known (funnel_state_t *st, const char *field, const char *id, funnel_error_t *err)
{
    funnel_rec_t *c = funnel_state_rec (st, "c", id);
    if (!c)
        UNAVAILABLE (err);
    else
    if (!funnel_rec_has (c, "n")) {
        funnel_error_set (err, FUNNEL_ERR_NOT_FOUND, "%s: no customer %s", field, id);
        c = NULL;
    }
    return c;
}

//  ---------------------------------------------------------------------
//  Prefetch: the customer, and the order id's record when it may be needed

static void
s_want (funnel_state_t *st, const funnel_event_t *ev, const char *field, const char *order)
{
    char id [ID_MAX];
    if (!s_str (ev->data, field, id))
        return;
    funnel_state_want (st, "c", id);
    if (order) {
        char key [KEYID_MAX];
        s_order_key (id, order, key);
        funnel_state_want_in (st, id, "o", key);
    }
}

static void
s_want_won (funnel_state_t *st, const funnel_event_t *ev)
{
    char deal [ID_MAX], order [ID_MAX + 8];
    if (s_str (ev->data, "deal", deal)) {
        snprintf (order, sizeof order, "deal/%s", deal);
        s_want (st, ev, "lead", order);
    }
}

static void
s_want_lead (funnel_state_t *st, const funnel_event_t *ev)
{
    s_want (st, ev, "lead", NULL);
}

static void
s_want_order (funnel_state_t *st, const funnel_event_t *ev)
{
    char order [ID_MAX];
    s_want (st, ev, "customer", s_str (ev->data, "order", order) ? order : NULL);
}

static void
s_want_customer (funnel_state_t *st, const funnel_event_t *ev)
{
    s_want (st, ev, "customer", NULL);
}

static void
s_want_ticket (funnel_state_t *st, const funnel_event_t *ev)
{
    char id [ID_MAX], ticket [ID_MAX], key [KEYID_MAX];
    s_want (st, ev, "customer", NULL);
    if (s_str (ev->data, "customer", id) && s_str (ev->data, "ticket", ticket)) {
        s_order_key (id, ticket, key);
        funnel_state_want_in (st, id, "tk", key);
    }
}

//  ---------------------------------------------------------------------
//  Consumed

//  On deal.won the lead becomes a customer (id = lead id) with a first
//  order; a won deal for an existing customer (expansion) is one more.
static int
s_on_won (funnel_state_t *st, const funnel_event_t *ev, funnel_error_t *err)
{
    char id [ID_MAX], deal [ID_MAX], order [ID_MAX + 8], campaign [ID_MAX];
    const msgpack_object *lead_o = event_codec_map_get (ev->data, "lead");
    const msgpack_object *deal_o = event_codec_map_get (ev->data, "deal");
    if (!lead_o || lead_o->type != MSGPACK_OBJECT_STR || !deal_o
    ||  deal_o->type != MSGPACK_OBJECT_STR || !s_str (ev->data, "lead", id)
    ||  !s_str (ev->data, "deal", deal))
        return funnel_error_set (err, FUNNEL_ERR_INVALID,
                                 "data.lead, data.deal: required strings");
    double amount_d = 0;
    msgpack_kv_get_number (ev->data, "amount", &amount_d);
    int64_t amount = (int64_t) amount_d;
    int64_t ts = ev->ts;
    funnel_rec_t *c = funnel_state_rec (st, "c", id);
    if (!c)
        return UNAVAILABLE (err);
    //  '/' is outside the id charset: no client order id looks like this
    snprintf (order, sizeof order, "deal/%s", deal);
    int has = s_has_order (st, id, c, order);
    if (has < 0)
        return UNAVAILABLE (err);
    if (has)
        return 0;
    int64_t at = funnel_state_event_time (st, ev, true);
    if (!funnel_rec_has (c, "n")) {
        bool has_campaign = s_str (ev->data, "campaign", campaign)
                         && event_codec_id_valid (campaign, strlen (campaign));
        funnel_rec_set_int (c, "on", ts);
        char first [KEYID_MAX];
        snprintf (first, sizeof first, "L%s-1", id);
        if (!streq (deal, first))
            funnel_rec_set_str (c, "deal", deal);
        funnel_rec_set_int (c, "n", 0);
        if (has_campaign)
            funnel_rec_set_str (c, "cmp", campaign);
        s_count_stage (st, "customers", at, has_campaign ? campaign : NULL, 1);
        if (s_cohort_add (st, c, 'c', 1))
            return UNAVAILABLE (err);
        msgpack_packer *pk = funnel_state_data (st);
        msgpack_pack_map (pk, 3);
        msgpack_kv_put_str (pk, "customer", id);
        msgpack_kv_put_str (pk, "deal", deal);
        msgpack_kv_put_int (pk, "amount", amount);
        funnel_state_emit (st, "customer.onboarded", NULL);
    }
    if (s_touch (st, c, ts) || s_add_order (st, id, c, amount, order, ts, at))
        return UNAVAILABLE (err);
    s_refresh (st, id, c, funnel_state_now (st), "health", NULL, at);
    s_arm (st, id, c);
    return 0;
}

//  On deal.delivered, the customer got what they bought: activity.
static int
s_on_delivered (funnel_state_t *st, const funnel_event_t *ev, funnel_error_t *err)
{
    char id [ID_MAX];
    const msgpack_object *lead_o = event_codec_map_get (ev->data, "lead");
    if (!lead_o || lead_o->type != MSGPACK_OBJECT_STR || !s_str (ev->data, "lead", id))
        return funnel_error_set (err, FUNNEL_ERR_INVALID, "data.lead: required string");
    funnel_rec_t *c = s_known (st, "data.lead", id, err);
    if (!c)
        return -1;
    funnel_rec_add (c, "dl", 1);
    if (s_touch (st, c, ev->ts))
        return UNAVAILABLE (err);
    s_refresh (st, id, c, funnel_state_now (st), "health", NULL,
               funnel_state_event_time (st, ev, true));
    s_arm (st, id, c);
    return 0;
}

//  ---------------------------------------------------------------------
//  Published

static int
s_on_order (funnel_state_t *st, const funnel_event_t *ev, funnel_error_t *err)
{
    char id [ID_MAX], order [ID_MAX];
    s_str (ev->data, "customer", id);
    funnel_rec_t *c = s_known (st, "customer", id, err);
    if (!c)
        return -1;
    bool has_order = s_str (ev->data, "order", order);
    if (has_order) {
        int has = s_has_order (st, id, c, order);
        if (has < 0)
            return UNAVAILABLE (err);
        if (has)
            return 0;
    }
    double amount = 0;
    msgpack_kv_get_number (ev->data, "amount", &amount);
    if (s_touch (st, c, ev->ts)
    ||  s_add_order (st, id, c, (int64_t) amount, has_order ? order : NULL, ev->ts, ev->ts))
        return UNAVAILABLE (err);
    s_refresh (st, id, c, funnel_state_now (st), "health", NULL, ev->ts);
    s_arm (st, id, c);
    return 0;
}

static int
s_on_feedback (funnel_state_t *st, const funnel_event_t *ev, funnel_error_t *err)
{
    char id [ID_MAX];
    s_str (ev->data, "customer", id);
    funnel_rec_t *c = s_known (st, "customer", id, err);
    if (!c)
        return -1;
    double nps = 0;
    msgpack_kv_get_number (ev->data, "nps", &nps);
    funnel_rec_set_int (c, "nps", (int64_t) nps);
    if (s_touch (st, c, ev->ts))
        return UNAVAILABLE (err);
    s_refresh (st, id, c, funnel_state_now (st), "feedback", NULL, ev->ts);
    s_arm (st, id, c);
    return 0;
}

static int
s_severity (const char *name)
{
    for (int s = 0; s < SEV_COUNT; s++)
        if (streq (health_severities [s], name))
            return s;
    return -1;
}

//  A ticket is open until resolved; its severity sets its health penalty.
//  Resolving a ticket that is not open changes nothing but the activity.
static int
s_on_ticket (funnel_state_t *st, const funnel_event_t *ev, funnel_error_t *err)
{
    char id [ID_MAX], ticket [ID_MAX], severity [16], status [16], key [KEYID_MAX];
    s_str (ev->data, "customer", id);
    s_str (ev->data, "ticket", ticket);
    event_codec_obj_strcpy (event_codec_map_get (ev->data, "severity"), severity, sizeof severity);
    event_codec_obj_strcpy (event_codec_map_get (ev->data, "status"), status, sizeof status);
    funnel_rec_t *c = s_known (st, "customer", id, err);
    if (!c)
        return -1;
    s_order_key (id, ticket, key);
    funnel_rec_t *tk = funnel_state_rec_in (st, id, "tk", key);
    if (!tk)
        return UNAVAILABLE (err);
    const char *was = funnel_rec_str (tk, "s");
    int was_sev = was ? s_severity (was) : -1;
    if (was_sev >= 0)
        funnel_rec_add (c, s_sev_fields [was_sev], -1);
    int sev = s_severity (severity);
    if (streq (status, "open") && sev >= 0) {
        funnel_rec_set_str (tk, "s", severity);
        funnel_rec_add (c, s_sev_fields [sev], 1);
    }
    else
    if (was)
        funnel_rec_del (tk, "s");
    if (s_touch (st, c, ev->ts))
        return UNAVAILABLE (err);
    s_refresh (st, id, c, funnel_state_now (st), "tickets", NULL, ev->ts);
    s_arm (st, id, c);
    return 0;
}

static int
s_on_activity (funnel_state_t *st, const funnel_event_t *ev, funnel_error_t *err)
{
    char id [ID_MAX];
    s_str (ev->data, "customer", id);
    funnel_rec_t *c = s_known (st, "customer", id, err);
    if (!c)
        return -1;
    funnel_rec_add (c, "na", 1);
    if (s_touch (st, c, ev->ts))
        return UNAVAILABLE (err);
    s_refresh (st, id, c, funnel_state_now (st), "health", NULL, ev->ts);
    s_arm (st, id, c);
    return 0;
}

//  ---------------------------------------------------------------------
//  The customer's timer

static int
s_fire (funnel_state_t *st, const char *id, int64_t due, funnel_error_t *err)
{
    (void) due;
    health_cfg_t *cfg = s_cfg (st);
    int64_t now = funnel_state_now (st);
    funnel_rec_t *c = funnel_state_rec (st, "c", id);
    if (!c)
        return UNAVAILABLE (err);
    if (!funnel_rec_has (c, "n"))
        return 0;
    //  Silence: the next order is overdue
    if (funnel_rec_has (c, "sd") && funnel_rec_int (c, "sd", 0) <= now) {
        int64_t sd = funnel_rec_int (c, "sd", 0);
        funnel_rec_del (c, "sd");
        if (!funnel_rec_has (c, "ch")) {
            funnel_rec_set_str (c, "od", "1");
            //  The tick time keeps ids apart when a backdated order sets
            //  the same due time again after it fired
            char seed [KEYID_MAX + 64];
            snprintf (seed, sizeof seed, "overdue|%s|%" PRId64 "|%" PRId64, id, sd, now);
            s_refresh (st, id, c, now, "overdue", seed, now);
        }
    }
    //  Churn: no activity for churn_days
    int64_t la = s_la (c);
    if (!funnel_rec_has (c, "ch")
    &&  (double) la <= (double) now - cfg->churn_days * HEALTH_DAY_MS) {
        funnel_rec_set_int (c, "ch", now);
        funnel_state_count (st, "churned", 1);
        if (s_cohort_add (st, c, 'x', 1))
            return UNAVAILABLE (err);
        //  A churned customer is lost, no longer "at risk"
        const char *r = funnel_rec_str (c, "r");
        if (r && streq (r, "high"))
            funnel_state_count (st, "at_risk", -1);
        funnel_rec_del (c, "sd");
        msgpack_packer *pk = funnel_state_data (st);
        msgpack_pack_map (pk, 2);
        msgpack_kv_put_str (pk, "customer", id);
        msgpack_kv_put_int (pk, "days_inactive", health_days (la, now));
        //  With the tick time: a customer won back by a backdated event
        //  keeps its last activity and may churn again
        char key [KEYID_MAX + 64];
        snprintf (key, sizeof key, "churn|%s|%" PRId64 "|%" PRId64, id, la, now);
        funnel_state_emit (st, "customer.churned", key);
    }
    s_arm (st, id, c);
    return 0;
}

//  ---------------------------------------------------------------------
//  Reports

static int
s_get_customer (funnel_state_t *st, const msgpack_object *req, msgpack_packer *pk,
                funnel_error_t *err)
{
    health_cfg_t *cfg = s_cfg (st);
    char id [ID_MAX];
    const msgpack_object *id_o = event_codec_map_get (req, "id");
    if (!id_o || id_o->type != MSGPACK_OBJECT_STR || !event_codec_obj_strcpy (id_o, id, sizeof id))
        return funnel_error_set (err, FUNNEL_ERR_INVALID, "id: required string is missing");
    funnel_rec_t *c = funnel_state_rec (st, "c", id);
    if (!c)
        return UNAVAILABLE (err);
    if (!funnel_rec_has (c, "n"))
        return funnel_error_set (err, FUNNEL_ERR_NOT_FOUND, "id: no customer %s", id);
    int64_t n = funnel_rec_int (c, "n", 0);
    int64_t due = 0, gap = 0;
    bool has_due = n >= 2 && health_due_at (s_fo (c), s_lo (c), n, cfg, &due, &gap);
    const char *opt [][2] = {
        { "nps", "nps" }, { "health", "h" }, { "churned_at", "ch" }, { "last_upsell", "up" } };
    int fields = 15 + 2 * has_due + funnel_rec_has (c, "r");
    for (size_t i = 0; i < sizeof opt / sizeof opt [0]; i++)
        fields += funnel_rec_has (c, opt [i][1]);
    msgpack_pack_map (pk, fields);
    msgpack_kv_put_str (pk, "customer", id);
    char first [KEYID_MAX];
    msgpack_kv_put_str (pk, "deal", s_first_deal (c, id, first, sizeof first));
    int64_t on = funnel_rec_int (c, "on", 0);
    char month [16];
    cohort_month (on, month, sizeof month);
    msgpack_kv_put_int (pk, "onboarded", on);
    msgpack_kv_put_str (pk, "cohort", month);
    msgpack_kv_put_int (pk, "orders", n);
    msgpack_kv_put_int (pk, "revenue", funnel_rec_int (c, "rev", 0));
    msgpack_kv_put_int (pk, "ltv", funnel_rec_int (c, "rev", 0));
    msgpack_kv_put_int (pk, "first_order", s_fo (c));
    msgpack_kv_put_int (pk, "last_order", s_lo (c));
    msgpack_kv_put_int (pk, "last_activity", s_la (c));
    for (size_t i = 0; i < sizeof opt / sizeof opt [0]; i++)
        if (funnel_rec_has (c, opt [i][1]))
            msgpack_kv_put_int (pk, opt [i][0], funnel_rec_int (c, opt [i][1], 0));
    if (has_due) {
        msgpack_kv_put_int (pk, "usual_gap_ms", gap);
        msgpack_kv_put_int (pk, "next_order_due", due);
    }
    msgpack_kv_put_bool (pk, "overdue", funnel_rec_has (c, "od"));
    event_codec_pack_cstr (pk, "open_tickets");
    msgpack_pack_map (pk, SEV_COUNT);
    for (int s = 0; s < SEV_COUNT; s++)
        msgpack_kv_put_int (pk, health_severities [s], funnel_rec_int (c, s_sev_fields [s], 0));
    msgpack_kv_put_int (pk, "delivered", funnel_rec_int (c, "dl", 0));
    msgpack_kv_put_int (pk, "activities", funnel_rec_int (c, "na", 0));
    if (funnel_rec_has (c, "r"))
        msgpack_kv_put_str (pk, "risk", funnel_rec_str (c, "r"));
    msgpack_kv_put_bool (pk, "churned", funnel_rec_has (c, "ch"));
    return 0;
}

typedef struct {
    char month [16];
    int64_t c, r, x, v;
} month_t;

//  Retention by onboarding month, from the figures kept on each change.
static int
s_get_cohorts (funnel_state_t *st, const msgpack_object *req, msgpack_packer *pk,
               funnel_error_t *err)
{
    (void) req;
    funnel_rec_t *coh = funnel_state_global (st, "g", "coh");
    if (!coh)
        return UNAVAILABLE (err);
    zlist_t *names = funnel_rec_fields (coh);         //  Sorted: months in order
    month_t *rows = (month_t *) zmalloc ((zlist_size (names) + 1) * sizeof (month_t));
    size_t count = 0;
    for (const char *f = (const char *) zlist_first (names); f;
         f = (const char *) zlist_next (names)) {
        const char *colon = strrchr (f, ':');
        if (!colon || colon == f || (size_t) (colon - f) >= sizeof rows [0].month
        ||  strlen (colon + 1) != 1)
            continue;
        size_t len = colon - f;
        if (count == 0 || strlen (rows [count - 1].month) != len
        ||  memcmp (rows [count - 1].month, f, len) != 0) {
            memcpy (rows [count].month, f, len);
            rows [count].month [len] = 0;
            count++;
        }
        month_t *m = &rows [count - 1];
        int64_t v = funnel_rec_int (coh, f, 0);
        switch (colon [1]) {
            case 'c': m->c = v; break;
            case 'r': m->r = v; break;
            case 'x': m->x = v; break;
            case 'v': m->v = v; break;
            default: break;
        }
    }
    zlist_destroy (&names);
    int64_t total_c = 0, total_v = 0;
    msgpack_pack_map (pk, 4);
    event_codec_pack_cstr (pk, "cohorts");
    msgpack_pack_array (pk, count);
    for (size_t i = 0; i < count; i++) {
        month_t *m = &rows [i];
        msgpack_pack_map (pk, 8);
        msgpack_kv_put_str (pk, "month", m->month);
        msgpack_kv_put_int (pk, "customers", m->c);
        msgpack_kv_put_int (pk, "repeat_customers", m->r);
        msgpack_kv_put_int (pk, "churned", m->x);
        msgpack_kv_put_number (pk, "repeat_share", cohort_share (m->r, m->c));
        msgpack_kv_put_number (pk, "churned_share", cohort_share (m->x, m->c));
        msgpack_kv_put_int (pk, "revenue", m->v);
        msgpack_kv_put_int (pk, "ltv", cohort_ltv (m->v, m->c));
        total_c += m->c;
        total_v += m->v;
    }
    msgpack_kv_put_int (pk, "customers", total_c);
    msgpack_kv_put_int (pk, "revenue", total_v);
    msgpack_kv_put_int (pk, "ltv", cohort_ltv (total_v, total_c));
    free (rows);
    return 0;
}

//  ---------------------------------------------------------------------
//  Settings: as retention_rules.c reads and checks them (one source)

static double
s_get (const msgpack_object *map, const char *group, const char *key, double dflt)
{
    const msgpack_object *m = group ? event_codec_map_get (map, group) : map;
    double v;
    return m && msgpack_kv_get_number (m, key, &v) ? v : dflt;
}

static int
s_setup (funnel_config_t *config, const char *section, void **arg)
{
    (void) section;
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init (&sbuf);
    msgpack_packer pk;
    msgpack_packer_init (&pk, &sbuf, msgpack_sbuffer_write);
    if (retention_pack_rules (config, &pk) != 0) {
        msgpack_sbuffer_destroy (&sbuf);
        return -1;
    }
    health_cfg_t *cfg = (health_cfg_t *) zmalloc (sizeof (health_cfg_t));
    health_cfg_defaults (cfg);
    msgpack_unpacked u;
    msgpack_unpacked_init (&u);
    if (msgpack_unpack_next (&u, sbuf.data, sbuf.size, NULL) == MSGPACK_UNPACK_SUCCESS) {
        const msgpack_object *r = &u.data;
        const char *parts [PART_COUNT] = { "recency", "frequency", "monetary", "nps", "tickets" };
        for (int i = 0; i < PART_COUNT; i++)
            cfg->weights [i] = s_get (r, "weights", parts [i], cfg->weights [i]);
        for (int i = 0; i < SEV_COUNT; i++)
            cfg->penalty [i] = s_get (r, "penalty", health_severities [i], cfg->penalty [i]);
        cfg->risk_high = s_get (r, "risk", "high", cfg->risk_high);
        cfg->risk_medium = s_get (r, "risk", "medium", cfg->risk_medium);
        cfg->upsell_nps = s_get (r, "upsell", "nps", cfg->upsell_nps);
        cfg->upsell_health = s_get (r, "upsell", "health", cfg->upsell_health);
        cfg->upsell_period_days = s_get (r, "upsell", "period_days", cfg->upsell_period_days);
        cfg->recency_days = s_get (r, NULL, "recency_days", cfg->recency_days);
        cfg->frequency_orders = s_get (r, NULL, "frequency_orders", cfg->frequency_orders);
        cfg->monetary_ref = s_get (r, NULL, "monetary_ref", cfg->monetary_ref);
        cfg->churn_days = s_get (r, NULL, "churn_days", cfg->churn_days);
        cfg->silence_factor = s_get (r, NULL, "silence_factor", cfg->silence_factor);
        cfg->silence_min_gap_days = s_get (r, NULL, "silence_min_gap_days",
                                           cfg->silence_min_gap_days);
        cfg->sweep_limit = (int64_t) s_get (r, NULL, "sweep_limit", 1000);
    }
    msgpack_unpacked_destroy (&u);
    msgpack_sbuffer_destroy (&sbuf);
    *arg = cfg;
    return 0;
}

static void
s_teardown (void **arg)
{
    free (*arg);
    *arg = NULL;
}

static const funnel_rule_t s_on [] = {
    { "customer.order", s_on_order, s_want_order },
    { "customer.feedback", s_on_feedback, s_want_customer },
    { "customer.ticket", s_on_ticket, s_want_ticket },
    { "customer.activity", s_on_activity, s_want_customer },
    { NULL }
};
static int s_on_forgotten (funnel_state_t *st, const funnel_event_t *ev, funnel_error_t *err);
static int s_get_export (funnel_state_t *st, const msgpack_object *req, msgpack_packer *pk,
                         funnel_error_t *err);
static const funnel_rule_t s_consume [] = {
    { "lead.forgotten", s_on_forgotten, s_want_lead },
    { "deal.won", s_on_won, s_want_won },
    { "deal.delivered", s_on_delivered, s_want_lead },
    { NULL }
};
static const funnel_query_rule_t s_queries [] = {
    { "customer", s_get_customer },
    { "cohorts", s_get_cohorts },
    { "export", s_get_export },
    { NULL }
};
static const funnel_timer_rule_t s_timers [] = {
    { "t", s_fire },
    { NULL }
};
static const char *const s_series [] = {
    "customers", "repeat", NULL };
static const char *const s_counters [] = {
    "customers", "repeat", "at_risk", "churned", "revenue", NULL };

//  ---------------------------------------------------------------------
//  Privacy (proto/privacy.md): a customer record holds ids, numbers and
//  times only (orders, revenue, NPS, tickets' severities, health), all of
//  which health, cohorts and counts need; lead.forgotten marks it (fg) and
//  nothing else is personal here

static int
s_on_forgotten (funnel_state_t *st, const funnel_event_t *ev, funnel_error_t *err)
{
    char id [ID_MAX];
    if (!s_str (ev->data, "lead", id) || !event_codec_id_valid (id, strlen (id)))
        return funnel_error_set (err, FUNNEL_ERR_INVALID, "data.lead: required id is missing");
    funnel_rec_t *c = funnel_state_rec (st, "c", id);
    if (!c)
        return UNAVAILABLE (err);
    if (!funnel_rec_exists (c) || funnel_rec_has (c, "fg"))
        return 0;                       //  Not a customer, or twice: a no-op
    funnel_rec_set_int (c, "fg", funnel_state_now (st));
    funnel_state_count (st, "forgotten", 1);
    return funnel_state_forget_outputs (st, id) ? UNAVAILABLE (err) : 0;
}

//  GET export: the customer record as stored and as GET customer shows it
static int
s_get_export (funnel_state_t *st, const msgpack_object *req, msgpack_packer *pk,
              funnel_error_t *err)
{
    char id [ID_MAX];
    if (funnel_privacy_export_lead (req, id, err))
        return -1;
    funnel_rec_t *c = funnel_state_rec (st, "c", id);
    if (!c)
        return UNAVAILABLE (err);
    bool known = funnel_rec_exists (c);
    msgpack_pack_map (pk, 3 + known);
    msgpack_kv_put_str (pk, "lead", id);
    msgpack_kv_put_bool (pk, "forgotten", funnel_rec_has (c, "fg"));
    event_codec_pack_cstr (pk, "records");
    msgpack_pack_map (pk, known);
    if (known) {
        funnel_rec_pack_entry (c, pk, "c", id);
        event_codec_pack_cstr (pk, "customer");
        funnel_query_pack_by_id (st, s_get_customer, id, pk);
    }
    return 0;
}

const funnel_rules_t retention_stage_rules = {
    .on = s_on, .consume = s_consume, .queries = s_queries, .timers = s_timers,
    .counters = s_counters, .series = s_series, .setup = s_setup, .teardown = s_teardown
};
