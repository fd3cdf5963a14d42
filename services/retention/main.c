/*  funnel-retention — the retention stage (proto/retention.md).

    Retention turns customers into repeat customers: on sales' deal.won the
    lead becomes a customer with a first order; orders, feedback, tickets
    and activity keep a health score and risk band; timers flag customers
    whose next order is overdue and sweep those who went silent for good.
    It tells sales about healthy promoters (customer.upsell) and everyone
    about customers at risk or churned.

    The rules are retention_stage.c (state, reports, the customer timer) on
    customer_health.c and cohort.c (pure logic), run by the engine; the
    schemas and settings are retention_rules.c. proto/retention.md is the
    full spec.
*/
#include "funnel_service.h"
#include "retention_rules.h"
#include "retention_stage.h"

//  leads only for lead.forgotten (erasing a person, proto/privacy.md)
static const char *const s_upstreams [] = { "sales", "leads", NULL };
static const char *const s_consumes [] = {
    "deal.won", "deal.delivered", "lead.forgotten", NULL
};

int
main (int argc, char *argv [])
{
    funnel_service_def_t def = {
        .name = "retention",
        .summary = "retention: customers, repeat orders, health, churn risk",
        .extra_help = retention_rules_help (),
        .accepts = retention_accepts,
        .upstreams = s_upstreams,
        .consumes = s_consumes,
        .rules = &retention_stage_rules
    };
    return funnel_service_main (argc, argv, &def);
}
