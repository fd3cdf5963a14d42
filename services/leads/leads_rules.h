/*  leads_rules — what funnel-leads accepts (field tables) and its settings
    (topology file section `leads`, packed for the Lua rules as RULES).
    Every key and default is listed in LEADS_SETTINGS_HELP and proto/leads.md.
*/
#ifndef LEADS_RULES_H_INCLUDED
#define LEADS_RULES_H_INCLUDED

#include <msgpack.h>
#include "event_schema.h"
#include "funnel_config.h"

//  PUBLISH types with their data fields, NULL-terminated
extern const funnel_event_schema_t leads_accepts [];

//  Reads the leads section and packs RULES; -1 after logging a bad value.
int
    leads_pack_rules (funnel_config_t *config, msgpack_packer *pk);

#define LEADS_SETTINGS_HELP \
"Settings (topology file section `leads`, or --set leads/...=VALUE):\n" \
"  rules/mql = 40             score (fit + engagement) that makes an MQL\n" \
"  rules/sql = 80             score that makes an SQL ...\n" \
"  rules/sql_fit_min = 30     ... when the fit alone is at least this\n" \
"  rules/half_life_s = 1209600  engagement half-life (14 days)\n" \
"  rules/pending_ttl_s = 7776000  keep touches of uncaptured contacts (90 days)\n" \
"  rules/in_audience_fit = 5  fit points once a touch was in the audience\n" \
"  rules/fallback_rep = house  rep named when every rep is away\n" \
"  points/<kind>              engagement per touch kind: impression 0, open 1,\n" \
"                             click 3, visit 2, like 1, comment 2, share 3,\n" \
"                             follow 2, reply 5, form 10\n" \
"  bant/budget = 15, bant/authority = 15, bant/need = 15, bant/timeline = 15\n" \
"  bant/budget_min = 1        attrs.budget >= this earns bant/budget\n" \
"  bant/timeline_days_max = 90  attrs.timeline_days <= this earns bant/timeline\n" \
"  icp/<rule>/attr, min, max, in (comma list), points   ideal customer profile;\n" \
"                             default: icp/size {attr employees, min 50, points 10}\n" \
"  reps/<rep>/region, capacity (10), away (false)   sales reps; default: one\n" \
"                             rep `house`, any region, capacity 100\n" \
"See proto/leads.md for the events, GET kinds, counters and key layout.\n"

#endif
