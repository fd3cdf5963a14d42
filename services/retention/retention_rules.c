/*  retention_rules — schemas and settings of funnel-retention.  */
#include <string.h>
#include "retention_rules.h"
#include "funnel_log.h"
#include "funnel_settings.h"

//  --------------------------------------------------------------------
//  Field tables (proto/retention.md, accepted types)

#define AMOUNT_MAX 1e13         //  Cents: 100 billion in any currency

static const char *const s_severities [] = { "low", "normal", "high", "urgent", NULL };
static const char *const s_statuses [] = { "open", "resolved", NULL };

static const funnel_field_t s_order [] = {
    FIELD_REQ ("customer", FIELD_ID),
    FIELD_RANGE ("amount", FIELD_INT, true, 0, AMOUNT_MAX),
    FIELD_OPT ("order", FIELD_ID),
    FIELD_END
};
static const funnel_field_t s_feedback [] = {
    FIELD_REQ ("customer", FIELD_ID),
    FIELD_RANGE ("nps", FIELD_INT, true, 0, 10),
    FIELD_END
};
static const funnel_field_t s_ticket [] = {
    FIELD_REQ ("customer", FIELD_ID),
    FIELD_REQ ("ticket", FIELD_ID),
    FIELD_ONE_OF ("severity", FIELD_ENUM, true, s_severities),
    FIELD_ONE_OF ("status", FIELD_ENUM, true, s_statuses),
    FIELD_END
};
static const funnel_field_t s_activity [] = {
    FIELD_REQ ("customer", FIELD_ID),
    FIELD_RANGE ("kind", FIELD_STR, true, 1, 64),
    FIELD_END
};

const funnel_event_schema_t retention_accepts [] = {
    { "customer.order", s_order },
    { "customer.feedback", s_feedback },
    { "customer.ticket", s_ticket },
    { "customer.activity", s_activity },
    { NULL }
};

//  --------------------------------------------------------------------
//  Settings: path under retention/ (group/name packs as map group: {name: ...}),
//  default and allowed range.

static const funnel_setting_t s_settings [] = {
    { "weights/recency", 30, 0, 1000, false, "health weight of recency" },
    { "weights/frequency", 20, 0, 1000, false, "health weight of order count" },
    { "weights/monetary", 15, 0, 1000, false, "health weight of revenue" },
    { "weights/nps", 20, 0, 1000, false, "health weight of NPS" },
    { "weights/tickets", 15, 0, 1000, false, "health weight of open tickets" },
    { "penalty/low", 5, 0, 100, false, "points off tickets score per open low ticket" },
    { "penalty/normal", 10, 0, 100, false, "... per open normal ticket" },
    { "penalty/high", 25, 0, 100, false, "... per open high ticket" },
    { "penalty/urgent", 40, 0, 100, false, "... per open urgent ticket" },
    { "risk/high", 40, 0, 101, false, "health below this: risk high" },
    { "risk/medium", 70, 0, 101, false, "health below this: risk medium" },
    { "upsell/nps", 9, 0, 10, true, "upsell needs NPS at least this" },
    { "upsell/health", 70, 0, 100, false, "upsell needs health at least this" },
    { "upsell/period_days", 90, 0, 3650, false, "at most one upsell per period" },
    { "recency_days", 90, 1e-9, 3650, false, "recency score is 0 after this long idle" },
    { "frequency_orders", 5, 1, 1e6, false, "orders for a full frequency score" },
    { "monetary_ref", 100000, 1, 1e13, false, "revenue (cents) for a full monetary score" },
    { "churn_days", 90, 1e-9, 3650, false, "churned after this long without activity" },
    { "silence_factor", 1.5, 1, 100, false, "overdue after this many usual gaps" },
    { "silence_min_gap_days", 1, 0, 3650, false, "usual gap floor" },
    { "sweep_limit", 1000, 1, 100000, true, "timer entries handled per tick" },
    { NULL }
};
#define SETTINGS_ROWS (sizeof s_settings / sizeof s_settings [0] - 1)

int
retention_pack_rules (funnel_config_t *config, msgpack_packer *pk)
{
    double values [SETTINGS_ROWS];
    msgpack_pack_map (pk, funnel_settings_count (s_settings));
    if (funnel_settings_pack_entries (config, "retention", s_settings, pk, values))
        return -1;
    //  Rules that span settings: the score needs some weight; bands in order
    double weights = 0;
    for (size_t i = 0; i < SETTINGS_ROWS; i++)
        if (strncmp (s_settings [i].path, "weights/", 8) == 0)
            weights += values [i];
    if (weights <= 0) {
        log_error ("config retention/weights: at least one weight must be above 0");
        return -1;
    }
    double high = funnel_settings_value (s_settings, values, "risk/high");
    double medium = funnel_settings_value (s_settings, values, "risk/medium");
    if (high > medium) {
        log_error ("config retention/risk/high (%g) must not exceed retention/risk/medium (%g)",
                   high, medium);
        return -1;
    }
    return 0;
}

const char *
retention_rules_help (void)
{
    return funnel_settings_help ("retention", s_settings, NULL);
}
