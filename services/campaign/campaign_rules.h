/*  campaign_rules — the marketing stage's event schemas and settings.

    The field tables are proto/campaign.md's accepted types, checked by the
    runtime before Redis is touched. The settings (topology-file section
    `campaign`, documented in proto/campaign.md) are packed for the Lua
    rules as RULES.
*/
#ifndef CAMPAIGN_RULES_H_INCLUDED
#define CAMPAIGN_RULES_H_INCLUDED

#include "funnel_service.h"

//  PUBLISH types with their field tables, NULL-terminated.
extern const funnel_event_schema_t campaign_accepts [];

//  Reads and checks the settings, packs them as one map (RULES in Lua);
//  -1 after logging a bad value.
int
    campaign_pack_rules (funnel_config_t *config, msgpack_packer *pk);

//  The settings with their defaults, for --help.
const char *
    campaign_rules_help (void);

#endif
