/*  webhook — one subscription: matching events POSTed, signed, in order.

    A subscription (topology file `webhooks/<name>`: url, types, secret)
    runs in its own thread with one upstream (common/upstream.h) per
    service, or per partition of a service that lists instances (an
    upstream_set: SUB to every instance, REPLAY from each partition's
    owner), so it sees every service's output events in seq order, gaps
    filled from REPLAY. Each event whose type matches is POSTed (libcurl,
    one kept-alive connection) as its JSON envelope, with
      X-Funnel-Signature: sha256=<hex HMAC-SHA256(secret, body)>
      X-Funnel-Event-Id: <id>
    A non-2xx answer, a timeout or a refused connection is retried with
    capped exponential backoff, for ever: the subscription stalls at that
    event (later events wait behind it), so nothing is dropped or
    reordered. The position delivered per service is kept in Redis, hash
    `<prefix>wh:<name>`, field = service (svc:part for each partition of
    a service that lists instances), after each delivered batch: a
    restart goes on from there (at least once: an event delivered just
    before a crash may be POSTed again; receivers dedupe by event id).

    A new subscription (no stored position) starts at each service's
    current seq (`start = latest`, the default) or at the oldest event the
    service still holds (`start = earliest`).
*/
#ifndef WEBHOOK_H_INCLUDED
#define WEBHOOK_H_INCLUDED

#include <jansson.h>
#include <stdbool.h>
#include "funnel_config.h"
#include "funnel_topology.h"
#include <stddef.h>

typedef struct _webhook_t webhook_t;

#define WEBHOOK_SERVICES_MAX 8

typedef struct {
    const char *name;               //  The subscription (ZPL child name)
    const char *url;                //  http:// or https://
    const char *types;              //  "lead.,deal.won" or "*"
    const char *secret;
    bool from_start;                //  start = earliest
    const char *redis_url;          //  Where positions are kept
    funnel_config_t *redis_config;  //  For gateway/redis_user and password_file, or NULL
    const char *prefix;             //  The gateway's key prefix
    int timeout_ms;                 //  Per POST
    int backoff_min_ms, backoff_max_ms;
    int service_count;
    const char *services [WEBHOOK_SERVICES_MAX];
    const char *apis [WEBHOOK_SERVICES_MAX];
    const char *pubs [WEBHOOK_SERVICES_MAX];
    //  Each service's instances (not owned; NULL: apis/pubs only). With
    //  instances, each partition is followed on its own (field svc:part).
    funnel_topology_t *topologies [WEBHOOK_SERVICES_MAX];
} webhook_config_t;

//  Checks the settings (message in error on failure) and starts the
//  thread; NULL if a setting is wrong or the thread cannot start.
webhook_t *
    webhook_new (const webhook_config_t *config, char *error, size_t error_size);
//  Stops the thread (within a second or so, even mid-retry) and frees.
void
    webhook_destroy (webhook_t **self_p);

//  {"name", "url", "state": "starting"|"ok"|"retrying", "delivered",
//   "failures", "consecutive_failures", "last_error", "last_status",
//   "redis": bool (the last position read/write worked),
//   "services": {svc or svc:part: {"position", "head", "backlog", "started"}}}
json_t *
    webhook_stats (webhook_t *self);

//  True if type is in the comma-separated list of types, prefixes ending
//  in '.', or "*".
bool
    webhook_matches (const char *types, const char *type);

//  hex = lowercase hex HMAC-SHA256 (secret, body), NUL-terminated.
void
    webhook_sign (const char *secret, const void *body, size_t size, char hex [65]);

void
    webhook_test (bool verbose);

#endif
