/*  funnel-sales — the sales stage: deals, interactions, offers, closing
    and delivery (proto/sales.md).

    On lead.sql from leads, open a deal for the lead's rep; on
    customer.upsell from retention, open an expansion deal. Reps work the
    deal with deal.* commands; the discount policy, speed-to-lead timer and
    stale sweep are in the rules (deal_policy.lua, sales.lua). Everything
    else — sockets, validation order, atomic apply, replay — is the runtime.
*/
#include "funnel_service.h"
#include "sales_rules.h"

extern const char funnel_sales_lua [];

static const char *const s_upstreams [] = { "leads", "retention", NULL };
static const char *const s_consumes [] = { "lead.sql", "customer.upsell", NULL };

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
        .lua = funnel_sales_lua,
        .pack_rules = sales_pack_rules,
        //  Speed-to-lead timers and the stale sweep: each tick reads only
        //  what is due, so a second is precise enough and cheap
        .tick_ms = 1000
    };
    return funnel_service_main (argc, argv, &def);
}
