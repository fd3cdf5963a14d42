/*  event_routes — see event_routes.h for why. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "event_routes.h"
#include "campaign_rules.h"
#include "leads_rules.h"
#include "retention_rules.h"
#include "sales_rules.h"

const char *const event_routes_services [] = {
    "campaign", "leads", "sales", "retention", NULL
};

static const funnel_event_schema_t *const s_accepts [] = {
    campaign_accepts, leads_accepts, sales_accepts, retention_accepts
};

const char *
event_routes_service (const char *type)
{
    for (int s = 0; event_routes_services [s]; s++)
        if (funnel_schema_find (s_accepts [s], type))
            return event_routes_services [s];
    return NULL;
}

bool
event_routes_known_service (const char *name)
{
    for (int s = 0; event_routes_services [s]; s++)
        if (strcmp (event_routes_services [s], name) == 0)
            return true;
    return false;
}

#include "funnel_check.h"

void
event_routes_test (bool verbose)
{
    (void) verbose;
    check (strcmp (event_routes_service ("touch"), "campaign") == 0);
    check (strcmp (event_routes_service ("campaign.upsert"), "campaign") == 0);
    check (strcmp (event_routes_service ("lead.capture"), "leads") == 0);
    check (strcmp (event_routes_service ("deal.close"), "sales") == 0);
    check (strcmp (event_routes_service ("customer.order"), "retention") == 0);
    //  Consumed or published types are no service's PUBLISH type
    check (event_routes_service ("lead.sql") == NULL);
    check (event_routes_service ("deal.won") == NULL);
    check (event_routes_service ("") == NULL);
    //  Every accepted type has exactly one owner
    for (int s = 0; event_routes_services [s]; s++)
        for (const funnel_event_schema_t *e = s_accepts [s]; e->type; e++)
            check (strcmp (event_routes_service (e->type), event_routes_services [s]) == 0);
    check (event_routes_known_service ("leads"));
    check (!event_routes_known_service ("monitor"));
}
