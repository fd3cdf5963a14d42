/*  funnel-campaign — the marketing stage (proto/campaign.md).

    Marketing raises awareness and forms the first relationships: campaigns
    with target audiences, touches (impressions, clicks, forms...) with
    exact reach and engagement per campaign and per channel × audience
    segment, and the research on what works: every lead, MQL, SQL and won
    deal from downstream is attributed to the campaigns in the contact's
    touch history under five models at once, re-attributed when a late
    touch arrives. From that it recommends channels per segment, and it
    keeps the win-back audience retention flags.

    The rules are campaign_stage.c (state, reports, on the engine) on
    audience.c, attribution.c and channel_rank.c (pure logic); the schemas
    and settings are campaign_rules.c. proto/campaign.md is the full spec.
*/
#include "funnel_service.h"
#include "campaign_rules.h"
#include "campaign_stage.h"

//  Conversions come from leads and sales; win-back from retention
static const char *const s_upstreams [] = { "leads", "sales", "retention", NULL };
static const char *const s_consumes [] = {
    "lead.captured", "lead.mql", "lead.sql", "deal.won",
    "customer.at_risk", "customer.churned", "lead.forgotten", NULL
};

int
main (int argc, char *argv [])
{
    funnel_service_def_t def = {
        .name = "campaign",
        .summary = "marketing: campaigns, audiences, touches, reach, attribution",
        .extra_help = campaign_rules_help (),
        .accepts = campaign_accepts,
        .upstreams = s_upstreams,
        .consumes = s_consumes,
        .rules = &campaign_stage_rules
    };
    return funnel_service_main (argc, argv, &def);
}
