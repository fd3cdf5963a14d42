/*  retention_rules — schemas and settings of funnel-retention.  */
#include <assert.h>
#include <stdio.h>
#include <string.h>
#include "retention_rules.h"
#include "event_codec.h"
#include "funnel_log.h"

#define streq(a, b) (strcmp ((a), (b)) == 0)

//  --------------------------------------------------------------------
//  Field tables (PROTOCOL §5 retention accepts)

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
//  Settings: path under retention/, where RULES keeps it (group.name, or
//  name at the top), default and allowed range. Grouped entries are
//  adjacent so each group packs as one nested map.

typedef struct {
    const char *path;           //  Under "retention/"
    const char *group;          //  RULES[group][name], or NULL: RULES[name]
    const char *name;
    double value;               //  Default
    double min, max;
    bool integer;
    const char *about;          //  For --help
} setting_t;

static const setting_t s_settings [] = {
    { "weights/recency", "weights", "recency", 30, 0, 1000, false, "health weight of recency" },
    { "weights/frequency", "weights", "frequency", 20, 0, 1000, false, "health weight of order count" },
    { "weights/monetary", "weights", "monetary", 15, 0, 1000, false, "health weight of revenue" },
    { "weights/nps", "weights", "nps", 20, 0, 1000, false, "health weight of NPS" },
    { "weights/tickets", "weights", "tickets", 15, 0, 1000, false, "health weight of open tickets" },
    { "penalty/low", "penalty", "low", 5, 0, 100, false, "points off tickets score per open low ticket" },
    { "penalty/normal", "penalty", "normal", 10, 0, 100, false, "... per open normal ticket" },
    { "penalty/high", "penalty", "high", 25, 0, 100, false, "... per open high ticket" },
    { "penalty/urgent", "penalty", "urgent", 40, 0, 100, false, "... per open urgent ticket" },
    { "risk/high", "risk", "high", 40, 0, 101, false, "health below this: risk high" },
    { "risk/medium", "risk", "medium", 70, 0, 101, false, "health below this: risk medium" },
    { "upsell/nps", "upsell", "nps", 9, 0, 10, true, "upsell needs NPS at least this" },
    { "upsell/health", "upsell", "health", 70, 0, 100, false, "upsell needs health at least this" },
    { "upsell/period_days", "upsell", "period_days", 90, 0, 3650, false, "at most one upsell per period" },
    { "recency_days", NULL, "recency_days", 90, 1e-9, 3650, false, "recency score is 0 after this long idle" },
    { "frequency_orders", NULL, "frequency_orders", 5, 1, 1e6, false, "orders for a full frequency score" },
    { "monetary_ref", NULL, "monetary_ref", 100000, 1, 1e13, false, "revenue (cents) for a full monetary score" },
    { "churn_days", NULL, "churn_days", 90, 1e-9, 3650, false, "churned after this long without activity" },
    { "silence_factor", NULL, "silence_factor", 1.5, 1, 100, false, "overdue after this many usual gaps" },
    { "silence_min_gap_days", NULL, "silence_min_gap_days", 1, 0, 3650, false, "usual gap floor" },
    { "sweep_limit", NULL, "sweep_limit", 1000, 1, 100000, true, "timer entries handled per tick" },
    { NULL }
};

static int
s_read (funnel_config_t *config, const setting_t *s, double *value)
{
    char path [96];
    snprintf (path, sizeof path, "retention/%s", s->path);
    if (s->integer) {
        int64_t v;
        if (funnel_config_int (config, path, (int64_t) s->value, &v))
            return -1;
        *value = (double) v;
    }
    else
    if (funnel_config_num (config, path, s->value, value))
        return -1;
    if (*value < s->min || *value > s->max) {
        log_error ("config %s: %g is out of range %g..%g", path, *value, s->min, s->max);
        return -1;
    }
    return 0;
}

#define SETTINGS_MAX 32

//  True if setting i opens a group (its first member).
static bool
s_opens_group (int i)
{
    const setting_t *s = &s_settings [i];
    return s->group && (i == 0 || !s [-1].group || !streq (s [-1].group, s->group));
}

//  The value read for a setting path.
static double
s_value (const double *values, const char *path)
{
    for (int i = 0; s_settings [i].path; i++)
        if (streq (s_settings [i].path, path))
            return values [i];
    return 0;
}

int
retention_pack_rules (funnel_config_t *config, msgpack_packer *pk)
{
    double values [SETTINGS_MAX];
    int count = 0, entries = 0;
    for (; s_settings [count].path; count++) {
        assert (count < SETTINGS_MAX);
        if (s_read (config, &s_settings [count], &values [count]))
            return -1;
        if (!s_settings [count].group || s_opens_group (count))
            entries++;
    }
    //  Rules that span settings: the score needs some weight; bands in order
    double weights = 0;
    for (int i = 0; i < count; i++)
        if (s_settings [i].group && streq (s_settings [i].group, "weights"))
            weights += values [i];
    if (weights <= 0) {
        log_error ("config retention/weights: at least one weight must be above 0");
        return -1;
    }
    double high = s_value (values, "risk/high"), medium = s_value (values, "risk/medium");
    if (high > medium) {
        log_error ("config retention/risk/high (%g) must not exceed retention/risk/medium (%g)",
                   high, medium);
        return -1;
    }
    msgpack_pack_map (pk, entries);
    for (int i = 0; i < count; i++) {
        const setting_t *s = &s_settings [i];
        if (s_opens_group (i)) {
            int members = 1;
            while (s [members].path && s [members].group && streq (s [members].group, s->group))
                members++;
            funnel_pack_cstr (pk, s->group);
            msgpack_pack_map (pk, members);
        }
        funnel_pack_cstr (pk, s->name);
        if (s->integer)
            msgpack_pack_int64 (pk, (int64_t) values [i]);
        else
            msgpack_pack_double (pk, values [i]);
    }
    return 0;
}

const char *
retention_rules_help (void)
{
    static char help [4096];
    if (*help)
        return help;
    size_t used = snprintf (help, sizeof help,
        "Settings (topology file section `retention`, or --set retention/KEY=VALUE):\n");
    for (const setting_t *s = s_settings; s->path && used < sizeof help; s++)
        used += snprintf (help + used, sizeof help - used, "  %-22s %-8g %s\n",
                          s->path, s->value, s->about);
    return help;
}
