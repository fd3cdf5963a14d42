/*  funnel-leads — lead generation: capture, scoring, MQL/SQL, routing.

    Whittles the audience campaign reached down to the people most likely
    to buy and hands them to sales (proto/leads.md):
      - lead.capture / lead.qualify / lead.disqualify / rep.update (PUBLISH)
      - prospect.touched from campaign: engagement that decays by half-life
      - fit from BANT and ideal-customer-profile rules on the lead's attrs
      - lead.mql, lead.sql (with the rep chosen by territory and weighted
        round-robin over free capacity), a reversible lifecycle whose every
        transition is a lead.stage_changed, and a decay timer that sends
        leads whose engagement faded back to nurture.
    The rules are leads_stage.c (on the engine) over identity.c,
    lead_score.c and routing.c (pure logic); the settings in leads_rules.c;
    the wire format in proto/leads.md.
*/
#include "funnel_service.h"
#include "leads_rules.h"
#include "leads_stage.h"

static const char *const s_upstreams [] = { "campaign", NULL };
static const char *const s_consumes [] = { "prospect.touched", NULL };

int
main (int argc, char *argv [])
{
    funnel_service_def_t def = {
        .name = "leads",
        .summary = "Funnel lead generation: capture, scoring, MQL/SQL, routing to reps.",
        .extra_help = LEADS_SETTINGS_HELP,
        .accepts = leads_accepts,
        .upstreams = s_upstreams,
        .consumes = s_consumes,
        .rules = &leads_stage_rules     //  Its decay and pending timers: engine timers
    };
    return funnel_service_main (argc, argv, &def);
}
