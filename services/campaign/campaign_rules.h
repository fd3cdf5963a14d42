/*  campaign_rules — the marketing stage's event schemas and settings.

    The field tables are proto/campaign.md's accepted events, checked by the
    runtime before Redis is touched. The settings (topology-file section
    `campaign`, documented in proto/campaign.md) are read once at start
    for the stage's rules (campaign_stage.c).
*/
#ifndef CAMPAIGN_RULES_H_INCLUDED
#define CAMPAIGN_RULES_H_INCLUDED

#include "funnel_service.h"

//  PUBLISH types with their field tables, NULL-terminated.
extern const funnel_event_schema_t campaign_accepts [];

//  The settings the rules read.
typedef struct {
    int64_t history_max;        //  Touches kept per contact
    int64_t conversions_max;    //  Conversions a late touch re-attributes
    double half_life_ms;        //  Time-decay model
    double prior_alpha, prior_beta, z;
    int64_t report_max;         //  Rows per report list
    char stage [8];             //  recommend's default conversion
} campaign_settings_t;

//  Reads and checks the settings; -1 after logging a bad value.
int
    campaign_settings_read (funnel_config_t *config, campaign_settings_t *settings);

//  The settings with their defaults, for --help.
const char *
    campaign_rules_help (void);

#endif
