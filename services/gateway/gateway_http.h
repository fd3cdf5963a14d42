/*  gateway_http — the gateway's HTTP server (libmicrohttpd).

    Endpoints (proto/gateway.md, openapi.json):
      POST /v1/events               ingest: one service's PUBLISH
      GET  /v1/{service}/{kind}     the service's GET
      GET  /v1/stats                the gateway's counters and webhooks
      GET  /v1/health               liveness (no token)
      GET  /v1/openapi.json         the OpenAPI 3.1 document (no token)
      OPTIONS any /v1/ path         CORS preflight
    A pool of threads each serving many connections from one epoll set
    (not a thread per connection); every request to a service is one
    blocking round trip on a client taken from that service's pool, so up
    to `threads` service calls are in flight at once.
*/
#ifndef GATEWAY_HTTP_H_INCLUDED
#define GATEWAY_HTTP_H_INCLUDED

#include <jansson.h>
#include <stddef.h>
#include "service_pool.h"
#include "token_store.h"
#include "funnel_topology.h"

typedef struct _gateway_http_t gateway_http_t;

typedef struct {
    const char *address;            //  host:port
    int threads;
    int connection_limit;
    int connection_timeout_s;
    int call_timeout_ms;
    size_t max_body;
    const char *cors_origins;       //  Comma-separated origins, "*", or NULL
    const char *openapi;            //  The document served, static
    service_pool_t **pools;         //  One per event_routes_services entry
    //  Per entry: its partitions and instances (proto/README.md section 7),
    //  and with instances one pool per instance (PUBLISH goes to the owner)
    funnel_topology_t **topologies;
    service_pool_t *(*instance_pools) [FUNNEL_INSTANCES_MAX];
    //  Adds the webhooks' part to GET /v1/stats (array), may be NULL
    json_t *(*webhooks_stats) (void *arg);
    void *webhooks_arg;
} gateway_http_config_t;

//  Takes a reference to tokens. NULL (logged) if it cannot listen.
gateway_http_t *
    gateway_http_new (const gateway_http_config_t *config, token_store_t *tokens);
void
    gateway_http_destroy (gateway_http_t **self_p);

//  The document GET /v1/stats serves (caller owns it).
json_t *
    gateway_http_stats (gateway_http_t *self);

//  Swaps in a new token store (SIGHUP); requests in flight keep the old.
void
    gateway_http_set_tokens (gateway_http_t *self, token_store_t *tokens);

#endif
