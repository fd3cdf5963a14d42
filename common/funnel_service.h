/*  funnel_service — the runtime every Funnel daemon runs on.

    A daemon is a definition (its name, the event types it accepts and
    their field schemas, its upstreams and what it consumes from them, its
    Lua rules) handed to funnel_service_main. The runtime does the rest:
      - API ROUTER: PING, PUBLISH, GET, REPLAY, STATS (proto/wire.md), for REQ
        and DEALER clients; every check in the contract's order, in C, before
        Redis is touched; state checks in the Lua rules.
      - Atomic apply: one EVALSHA per request or batch (runtime.lua), OK only
        after it; PUB of the outbox events after the apply; `$hb` every second.
      - Upstreams: gap-free subscriptions (upstream.h) applied through the
        same script, with the checkpoint in the same atomic step.
      - Redis loss: ERR unavailable, reconnect with backoff, catch up after.
      - A timer that runs the rules' ticks (timeouts, sweeps).
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
    //  The engine is chosen by which of these is set: `rules` (C handlers,
    //  funnel_engine.h: rules run in the process, Redis only stores) or
    //  `lua` (runtime.lua + rules + runtime_end.lua, run inside Redis).
    const char *lua;                        //  runtime.lua + rules + runtime_end.lua
    const funnel_rules_t *rules;            //  C rules (runtime 2)
    //  Packs the rules' settings as one msgpack map (Lua sees it as RULES);
    //  reads the config; returns -1 after logging a bad value (exit 2).
    int (*pack_rules) (funnel_config_t *config, msgpack_packer *pk);
    int tick_ms;                            //  Rules' ticks every tick_ms, 0 = none
} funnel_service_def_t;

//  Runs the daemon until SIGTERM/SIGINT. Returns the process exit code:
//  0 after a clean stop, 2 for a bad config or flag, 1 if it cannot start.
int
    funnel_service_main (int argc, char **argv, const funnel_service_def_t *def);

#endif
