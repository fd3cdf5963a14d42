/*  event_routes — which service accepts an event type, for routing ingest.

    Built from the services' own PUBLISH tables (campaign_accepts,
    leads_accepts, sales_accepts, retention_accepts in services/<svc>/
    <svc>_rules.c), linked into the gateway, so the gateway can never
    disagree with a service about who accepts what.
*/
#ifndef EVENT_ROUTES_H_INCLUDED
#define EVENT_ROUTES_H_INCLUDED

#include <stdbool.h>

//  The services the gateway talks to, NULL-terminated, in funnel order.
extern const char *const event_routes_services [];

//  The service that accepts type by PUBLISH; NULL if none does.
const char *
    event_routes_service (const char *type);

//  True if name is one of event_routes_services.
bool
    event_routes_known_service (const char *name);

void
    event_routes_test (bool verbose);

#endif
