/*  funnel_service — the runtime every Funnel daemon runs on.

    A daemon is a definition (its name, the event types it accepts and
    their field schemas, its upstreams and what it consumes from them, its
    rules in C) handed to funnel_service_main. The runtime does the rest:
      - API ROUTER: PING, PUBLISH, GET, REPLAY, STATS (proto/wire.md), for REQ
        and DEALER clients; every check in the contract's order before the
        rules run; state checks in the rules.
      - The engine (funnel_engine.h): the rules run in the process on
        cached records, one atomic commit (MULTI/EXEC) per request or
        batch, OK only after it; PUB of the outputs after the commit; `$hb`
        every second.
      - Upstreams: gap-free subscriptions (upstream.h) applied through the
        same engine, with the checkpoint in the same commit.
      - Redis loss: ERR unavailable, reconnect with backoff, catch up after.
      - The rules' timers (timeouts, sweeps) and lease renewals, every 50 ms.
      - SIGTERM/SIGINT: stop between two requests and exit 0.
*/
#ifndef FUNNEL_SERVICE_H_INCLUDED
#define FUNNEL_SERVICE_H_INCLUDED

#include <msgpack.h>
#include "event_schema.h"
#include "funnel_config.h"
#include "funnel_engine.h"

typedef struct {
    const char *name;                       //  "leads": section, key prefix, log name
    const char *summary;                    //  One line for --help
    const char *extra_help;                 //  Service options for --help, or NULL
    const funnel_event_schema_t *accepts;   //  PUBLISH types, NULL-terminated
    const char *const *upstreams;           //  Services to subscribe to, NULL-terminated
    const char *const *consumes;            //  Upstream types to apply, NULL-terminated
    const funnel_rules_t *rules;            //  The stage's rules (funnel_engine.h)
} funnel_service_def_t;

//  Runs the daemon until SIGTERM/SIGINT. Returns the process exit code:
//  0 after a clean stop, 2 for a bad config or flag, 1 if it cannot start.
int
    funnel_service_main (int argc, char **argv, const funnel_service_def_t *def);

#endif
