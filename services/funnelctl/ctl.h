/*  funnelctl — shared pieces of the command-line client.

    Each command is one function over a ctl_t (the topology and the global
    options); replies are msgpack on the wire and JSON on the terminal
    (json_msgpack). Exit codes are part of the interface (proto/funnelctl.md).
*/
#ifndef CTL_H_INCLUDED
#define CTL_H_INCLUDED

#include <jansson.h>
#include <stdbool.h>
#include <signal.h>
#include "funnel_config.h"
#include "funnel_signals.h"

#define CTL_OK          0   //  Done
#define CTL_ERR         1   //  A service answered ERR
#define CTL_USAGE       2   //  Bad usage, unknown service, invalid JSON
#define CTL_UNREACHABLE 3   //  No reply in time (after the retries)

typedef struct {
    funnel_config_t *config;
    int timeout_ms;         //  Per attempt
    int retries;            //  Extra attempts on timeout/unavailable (publish)
    bool pretty;            //  Indented JSON output
    bool quiet;             //  No "unreachable" messages (top shows DOWN)
} ctl_t;

//  The four services, in funnel order.
extern const char *const ctl_services [];

//  Set by SIGINT/SIGTERM: long-running commands (tail, top) stop cleanly.

//  A service's endpoint (kind "api" or "pub"): a known service name from
//  the topology, or an endpoint given directly (tcp://, ipc://, inproc://).
//  NULL after printing an error (unknown service).
const char *
    ctl_endpoint (ctl_t *self, const char *service, const char *kind);

//  Sends verb with body (JSON, NULL for none) to the service's API (with
//  instances: PUBLISH to the owners of the events' partitions, a batch
//  split per instance; other verbs to the owner of partition 0; an ERR
//  moved is followed once to the `api` it names), up to
//  attempts times on timeout (or ERR unavailable, which means retry later).
//  Returns CTL_OK with *reply the OK body, CTL_ERR with *reply the ERR
//  body, CTL_UNREACHABLE (message printed), or CTL_USAGE. *reply may be
//  NULL when the service sent no body.
int
    ctl_call (ctl_t *self, const char *service, const char *verb, json_t *body,
              int attempts, json_t **reply);

//  PING or STATS of a service: with instances (proto/README.md section
//  7), every instance's reply as {"instances": {name: reply or null}}.
int
    ctl_call_instances (ctl_t *self, const char *service, const char *verb, json_t *body,
                        json_t **reply);
//  The PUB endpoints of a service (every instance's); 0 after printing an
//  error.
int
    ctl_pubs (ctl_t *self, const char *service, const char **pubs, int max);

//  Prints "funnelctl: SERVICE: ERR code: message [at element n]" on stderr.
void
    ctl_print_err (const char *service, json_t *err);
//  Prints a JSON value on stdout on one line (or indented with --pretty).
void
    ctl_print_json (ctl_t *self, json_t *json);
//  Decodes a msgpack frame (guarded, see event_codec.h) into JSON; NULL if
//  it is not valid msgpack.
json_t *
    ctl_decode (const void *data, size_t size);

//  Commands: argv starts at the command's first argument.
int ctl_cmd_ping (ctl_t *self, int argc, char **argv);
int ctl_cmd_stats (ctl_t *self, int argc, char **argv);
int ctl_cmd_get (ctl_t *self, int argc, char **argv);
int ctl_cmd_export (ctl_t *self, int argc, char **argv);
int ctl_cmd_publish (ctl_t *self, int argc, char **argv);
int ctl_cmd_replay (ctl_t *self, int argc, char **argv);
int ctl_cmd_tail (ctl_t *self, int argc, char **argv);
int ctl_cmd_top (ctl_t *self, int argc, char **argv);
int ctl_cmd_keygen (ctl_t *self, int argc, char **argv);

#endif
