/*  campaign_rules — schemas and settings of funnel-campaign.  */
#include <stdio.h>
#include <string.h>
#include "campaign_rules.h"
#include "event_codec.h"
#include "funnel_log.h"
#include "funnel_settings.h"

//  --------------------------------------------------------------------
//  Field tables (proto/campaign.md, what campaign accepts)

#define AMOUNT_MAX  1e13        //  Cents: 100 billion in any currency
#define AGE_MAX     150

static const char *const s_channels [] = {
    "email", "social", "search", "display", "video", "event", "referral", "content", "other", NULL
};
static const char *const s_statuses [] = { "draft", "active", "paused", "ended", NULL };
static const char *const s_kinds [] = {
    "impression", "open", "click", "visit", "like", "comment", "share", "follow", "reply",
    "form", NULL
};

//  A campaign's target audience; age_min <= age_max is checked by the rules
static const funnel_field_t s_audience [] = {
    FIELD_RANGE ("age_min", FIELD_INT, false, 0, AGE_MAX),
    FIELD_RANGE ("age_max", FIELD_INT, false, 0, AGE_MAX),
    FIELD_OPT ("regions", FIELD_STR_ARRAY),
    FIELD_OPT ("interests", FIELD_STR_ARRAY),
    FIELD_END
};
static const funnel_field_t s_upsert [] = {
    FIELD_REQ ("campaign", FIELD_ID),
    FIELD_REQ ("name", FIELD_STR),
    FIELD_ONE_OF ("channel", FIELD_ENUM, true, s_channels),
    FIELD_OPT ("platform", FIELD_STR),
    FIELD_NESTED ("audience", false, s_audience),
    FIELD_RANGE ("budget", FIELD_INT, false, 0, AMOUNT_MAX),
    FIELD_ONE_OF ("status", FIELD_ENUM, false, s_statuses),
    FIELD_END
};
static const funnel_field_t s_spend [] = {
    FIELD_REQ ("campaign", FIELD_ID),
    FIELD_RANGE ("amount", FIELD_INT, true, 0, AMOUNT_MAX),
    FIELD_END
};
//  Who was touched, as far as the platform knows
static const funnel_field_t s_attrs [] = {
    FIELD_RANGE ("age", FIELD_INT, false, 0, AGE_MAX),
    FIELD_OPT ("region", FIELD_STR),
    FIELD_OPT ("interests", FIELD_STR_ARRAY),
    FIELD_END
};
//  UTM tags are checked for shape only; the campaign id is authoritative
static const funnel_field_t s_utm [] = {
    FIELD_OPT ("source", FIELD_STR),
    FIELD_OPT ("medium", FIELD_STR),
    FIELD_OPT ("campaign", FIELD_STR),
    FIELD_OPT ("term", FIELD_STR),
    FIELD_OPT ("content", FIELD_STR),
    FIELD_END
};
static const funnel_field_t s_touch [] = {
    FIELD_REQ ("campaign", FIELD_ID),
    FIELD_ONE_OF ("kind", FIELD_ENUM, true, s_kinds),
    FIELD_OPT ("contact", FIELD_ID),
    FIELD_NESTED ("attrs", false, s_attrs),
    FIELD_NESTED ("utm", false, s_utm),
    FIELD_END
};

const funnel_event_schema_t campaign_accepts [] = {
    { "campaign.upsert", s_upsert },
    { "campaign.spend", s_spend },
    { "touch", s_touch },
    { NULL }
};

//  --------------------------------------------------------------------
//  Settings: key under campaign/, default, allowed range (RULES.<key>)

static const funnel_setting_t s_settings [] = {
    { "history_max", 50, 1, 1000, true, "touches kept per contact for attribution" },
    { "conversions_max", 20, 1, 200, true, "conversions per contact a late touch re-attributes" },
    { "half_life_days", 7, 0.001, 3650, false, "time-decay model: credit halves per this" },
    { "prior_alpha", 1, 0.001, 1e6, false, "recommend: Beta prior alpha" },
    { "prior_beta", 1, 0.001, 1e6, false, "recommend: Beta prior beta" },
    { "recommend_z", 1.645, 0, 10, false, "recommend: rank by mean - z*sd" },
    { "report_max", 1000, 1, 100000, true, "rows per report list" },
    { NULL }
};

//  The conversion `recommend` ranks by when the request names none
#define STAGE_DEFAULT "sql"
static const char *const s_stages [] = { "lead", "mql", "sql", "won", NULL };

int
campaign_settings_read (funnel_config_t *config, campaign_settings_t *settings)
{
    const char *stage = funnel_config_get (config, "campaign/recommend_stage", STAGE_DEFAULT);
    bool known = false;
    for (const char *const *s = s_stages; *s; s++)
        known = known || strcmp (*s, stage) == 0;
    if (!known) {
        log_error ("config campaign/recommend_stage: '%s' is not lead, mql, sql or won", stage);
        return -1;
    }
    //  The table's reader checks ranges; the packed map itself is not needed
    double values [16];
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init (&sbuf);
    msgpack_packer pk;
    msgpack_packer_init (&pk, &sbuf, msgpack_sbuffer_write);
    msgpack_pack_map (&pk, funnel_settings_count (s_settings));
    int rc = funnel_settings_pack_entries (config, "campaign", s_settings, &pk, values);
    msgpack_sbuffer_destroy (&sbuf);
    if (rc)
        return -1;
    settings->history_max = (int64_t) funnel_settings_value (s_settings, values, "history_max");
    settings->conversions_max =
        (int64_t) funnel_settings_value (s_settings, values, "conversions_max");
    settings->half_life_ms =
        funnel_settings_value (s_settings, values, "half_life_days") * 86400000;
    settings->prior_alpha = funnel_settings_value (s_settings, values, "prior_alpha");
    settings->prior_beta = funnel_settings_value (s_settings, values, "prior_beta");
    settings->z = funnel_settings_value (s_settings, values, "recommend_z");
    settings->report_max = (int64_t) funnel_settings_value (s_settings, values, "report_max");
    snprintf (settings->stage, sizeof settings->stage, "%s", stage);
    return 0;
}

const char *
campaign_rules_help (void)
{
    return funnel_settings_help ("campaign", s_settings,
        "  campaign/recommend_stage = " STAGE_DEFAULT
        "  lead|mql|sql|won  recommend: conversion ranked by\n");
}
