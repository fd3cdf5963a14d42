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

    The runtime is a czmq actor, so a test or another program can embed a
    service (as Malamute's server is):
        zactor_t *svc = zactor_new (funnel_service_actor, (void *) &def);
        zstr_sendx (svc, "CONFIGURE", "/path/funnel.cfg", NULL);
        assert (zsock_wait (svc) == 0);
        zstr_send (svc, "START");
        assert (zsock_wait (svc) == 0);     //  Bound and serving
        ...
        zactor_destroy (&svc);              //  $TERM: a clean stop
    Commands on the actor's pipe:
      CONFIG pointer   (zsock_send "sp") a loaded funnel_config_t, which the
                       actor owns from then on; signals 0 (2 if NULL)
      CONFIGURE path   a ZPL file alone (no environment, no flags); signals
                       0, or 2 if it cannot be read or is not valid
      START            reads the settings, binds, starts; signals the exit
                       code funnel_service_main would give: 0 serving, 2 bad
                       settings, 1 cannot start. Once only.
      ENDPOINT kind    replies the bound "api" or "pub" endpoint, resolved
                       (tcp://host:* binds an ephemeral port), or ""
      PORT kind        replies (zsock_send "i") that endpoint's tcp port, or -1
      $TERM            stops between two requests, releases the leases,
                       cleans up and ends the actor
    The actor sends "STOPPED" code (zsock_send "si") once, before it ends;
    also when it stops on its own (code 1: Redis lost under a lease, a lease
    taken over), after which it only waits for $TERM. It never looks at
    signals: its host turns them into $TERM.
*/
#ifndef FUNNEL_SERVICE_H_INCLUDED
#define FUNNEL_SERVICE_H_INCLUDED

#include <czmq.h>
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

//  The service actor; args is the const funnel_service_def_t *, which must
//  outlive it.
void
    funnel_service_actor (zsock_t *pipe, void *args);

//  The daemon: parses the flags (funnel_config.h), runs the actor until
//  SIGTERM/SIGINT or until it stops on its own. Returns the process exit
//  code: 0 after a clean stop, 2 for a bad config or flag, 1 if it cannot
//  start or stopped on an error.
int
    funnel_service_main (int argc, char **argv, const funnel_service_def_t *def);

#endif
