/*  funnel-retention — the retention stage (proto/retention.md).

    Retention turns customers into repeat customers: on sales' deal.won the
    lead becomes a customer with a first order; orders, feedback, tickets
    and activity keep a health score and risk band; timers flag customers
    whose next order is overdue and sweep those who went silent for good.
    It tells sales about healthy promoters (customer.upsell) and everyone
    about customers at risk or churned.

    The rules are retention.lua (state, reports, timers) on health.lua and
    cohort.lua (pure logic); the schemas and settings are retention_rules.c.
    proto/retention.md is the full spec.
*/
#include "funnel_service.h"
#include "retention_rules.h"

extern const char funnel_retention_lua [];

static const char *const s_upstreams [] = { "sales", NULL };
static const char *const s_consumes [] = { "deal.won", "deal.delivered", NULL };

//  Timers (silence, churn sweep) are checked this often; each check is
//  two bounded ZRANGEBYSCOREs, cheap at any customer count.
#define TICK_MS 500

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
        .lua = funnel_retention_lua,
        .pack_rules = retention_pack_rules,
        .tick_ms = TICK_MS
    };
    return funnel_service_main (argc, argv, &def);
}
