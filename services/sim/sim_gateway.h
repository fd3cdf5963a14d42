/*  sim_gateway — funnel-sim's PUBLISH through funnel-gateway (--via-gateway).

    The sim builds its batches as msgpack PUBLISH bodies; this sends one as
    JSON to POST /v1/events (libcurl, one kept-alive connection) and hands
    back the answer as funnel_client_call would, so the sim's retry and
    refusal handling stays the same: 200 is OK with the reply as msgpack, an
    error body {code, message, index} is ERR, and no answer (refused
    connection, timeout, a body that is not the gateway's) is TIMEOUT.
*/
#ifndef SIM_GATEWAY_H_INCLUDED
#define SIM_GATEWAY_H_INCLUDED

#include "funnel_client.h"

typedef struct _sim_gateway_t sim_gateway_t;

//  address is host:port (gateway/http); token a Bearer token.
sim_gateway_t *
    sim_gateway_new (const char *address, const char *token);
void
    sim_gateway_destroy (sim_gateway_t **self_p);

funnel_call_status_t
    sim_gateway_publish (sim_gateway_t *self, const void *body, size_t size,
                         int timeout_ms, zframe_t **reply);

//  The first token of a tokens file (TOKEN NAME TYPES lines), malloc'd;
//  NULL if none.
char *
    sim_gateway_first_token (const char *path);

#endif
