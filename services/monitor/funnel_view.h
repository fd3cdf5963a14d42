/*  funnel_view — the monitor's picture of the funnel.

    Pure bookkeeping, no sockets: the probes feed it what the services say
    (PING, STATS counters, stream position, live events with their
    latency, the campaign report) and it renders the figures as the
    /api/funnel JSON (proto/monitor.md) and as Prometheus text. Stage counts
    come only from STATS counters, which are exact and persistent in each
    service's Redis, so the view needs no storage of its own: after any
    restart the next STATS poll gives the same numbers.
*/
#ifndef FUNNEL_VIEW_H_INCLUDED
#define FUNNEL_VIEW_H_INCLUDED

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct _funnel_view_t funnel_view_t;

//  The services the monitor watches, in funnel order.
#define FUNNEL_VIEW_SERVICES 4
extern const char *const funnel_view_services [FUNNEL_VIEW_SERVICES + 1];
//  Every output event type the services document (for upstream_new).
extern const char *const funnel_view_event_types [];

funnel_view_t *
    funnel_view_new (void);
void
    funnel_view_destroy (funnel_view_t **self_p);

//  Index of a service name in funnel_view_services, -1 if not watched.
int
    funnel_view_service_index (const char *name);

//  A PING answered: the service is up.
void
    funnel_view_set_ping (funnel_view_t *self, int svc, const char *version,
                          uint64_t seq, bool redis_ok, int64_t uptime_s, int64_t now_ms);
//  A PING went unanswered: the service is down (its last counts stay).
void
    funnel_view_set_down (funnel_view_t *self, int svc, int64_t now_ms);
//  A STATS reply: replaces the service's counters (takes a reference).
void
    funnel_view_set_counters (funnel_view_t *self, int svc, json_t *counters);
//  With several instances of the service: {name: {up, seq, parts}}
//  (takes a reference); shown as services.<svc>.instances.
void
    funnel_view_set_instances (funnel_view_t *self, int svc, json_t *instances);
//  The live stream: position applied, highest seq announced, ms since the
//  last message (heartbeats included); live false before it is started.
void
    funnel_view_set_stream (funnel_view_t *self, int svc, bool live, uint64_t position,
                            uint64_t head, int64_t silence_ms, int64_t now_ms);
//  One live event seen on a service's PUB; kind is data.kind or NULL;
//  latency_ms is receipt time minus the event's ts.
void
    funnel_view_record_event (funnel_view_t *self, int svc, const char *type,
                              const char *kind, int64_t latency_ms);
//  The campaign report (GET {"kind": "report"}); takes ownership, NULL clears.
void
    funnel_view_set_report (funnel_view_t *self, json_t *report);
//  Samples the rate windows; call every ~500 ms.
void
    funnel_view_tick (funnel_view_t *self, int64_t now_ms);

//  A stage's exact count (-1 for an unknown stage name).
int64_t
    funnel_view_stage_count (funnel_view_t *self, const char *stage);

//  The /api/funnel document (new reference).
json_t *
    funnel_view_json (funnel_view_t *self, int64_t now_ms);
//  The /metrics text (caller frees).
char *
    funnel_view_prometheus (funnel_view_t *self, int64_t now_ms);

void
    funnel_view_test (bool verbose);

#endif
