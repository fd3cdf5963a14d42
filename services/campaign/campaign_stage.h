/*  campaign_stage — the marketing stage's rules on the engine
    (proto/campaign.md): campaigns and their audiences, touches and exact
    reach, attribution research, channel recommendation, win-back.
*/
#ifndef CAMPAIGN_STAGE_H_INCLUDED
#define CAMPAIGN_STAGE_H_INCLUDED

#include "funnel_engine.h"

extern const funnel_rules_t campaign_stage_rules;

#endif
