/*  service_probe — the monitor's line to one service.

    Asks the service's API for PING and STATS (exact, persistent counts)
    and follows its PUB through an upstream (gap recovery, heartbeats),
    feeding what it learns into the funnel view. The live stream starts at
    the seq PING reports, so a (re)started monitor does not replay history:
    the counts come from STATS, the stream only gives rates and latency.
*/
#ifndef SERVICE_PROBE_H_INCLUDED
#define SERVICE_PROBE_H_INCLUDED

#include <czmq.h>
#include "funnel_view.h"

typedef struct _service_probe_t service_probe_t;

//  svc: index in funnel_view_services. pubs: the service's PUB (every
//  instance's when partitioned: their events are then taken as they come,
//  for rates and latency; the counts are STATS', service wide). names and
//  apis (as many as pubs, or NULL without instances): each instance's
//  STATS is also asked, for services.<svc>.instances.
service_probe_t *
    service_probe_new_instances (int svc, const char *api, const char *const *pubs,
                                 int pub_count, bool partitioned, const char *const *names,
                                 const char *const *apis, funnel_view_t *view);
void
    service_probe_destroy (service_probe_t **self_p);

//  The SUB socket, for the loop; call service_probe_drain when readable.
zsock_t *
    service_probe_sub (service_probe_t *self);
void
    service_probe_drain (service_probe_t *self);

//  PING, then STATS if it answered; waits at most ~2 x timeout_ms.
//  Returns true if the service is up.
bool
    service_probe_poll (service_probe_t *self, int timeout_ms);
//  True if the last PING was answered.
bool
    service_probe_up (service_probe_t *self);
//  Fills REPLAY gaps (bounded) and reports the stream position to the view.
void
    service_probe_catch_up (service_probe_t *self);

//  GET body (JSON) on the service's API; the reply as JSON, NULL on ERR
//  or no reply.
json_t *
    service_probe_get (service_probe_t *self, json_t *body, int timeout_ms);

#endif
