/*  funnel-sales — the sales stage: deals, interactions, offers, closing
    and delivery (proto/sales.md).

    On lead.sql from leads, open a deal for the lead's rep; on
    customer.upsell from retention, open an expansion deal. Reps work the
    deal with deal.* commands; the discount policy, speed-to-lead timer and
    stale sweep are the rules (sales_stage.c on deal_policy.c), on the C
    engine. Everything else — sockets, validation order, atomic apply,
    replay — is the runtime.
*/
#include "funnel_service.h"
#include "sales_rules.h"
#include "sales_stage.h"

static const char *const s_upstreams [] = { "leads", "retention", NULL };
static const char *const s_consumes [] = { "lead.sql", "customer.upsell", "lead.forgotten", NULL };

int
main (int argc, char *argv [])
{
    funnel_service_def_t def = {
        .name = "sales",
        .summary = "sales stage: deals, interactions, offers, closing and delivery",
        .extra_help = sales_settings_help (),
        .accepts = sales_accepts,
        .upstreams = s_upstreams,
        .consumes = s_consumes,
        .rules = &sales_stage_rules
    };
    return funnel_service_main (argc, argv, &def);
}
