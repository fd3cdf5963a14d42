/*  funnel_client — a request/reply client for any service's API socket.

    A DEALER with the empty delimiter frame, so it can give up on a request
    after a timeout and still send the next one; on timeout the socket is
    rebuilt, so a late reply can never be taken for the next request's.
    Used by upstream catch-up (REPLAY), the monitor, funnelctl and benches.
*/
#ifndef FUNNEL_CLIENT_H_INCLUDED
#define FUNNEL_CLIENT_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>

typedef struct _funnel_client_t funnel_client_t;

typedef enum {
    FUNNEL_CALL_OK = 0,         //  ["OK"][BODY]
    FUNNEL_CALL_ERR = 1,        //  ["ERR"][BODY]
    FUNNEL_CALL_TIMEOUT = -1,   //  No reply in time (socket rebuilt)
    FUNNEL_CALL_BROKEN = -2     //  Reply of an unexpected shape
} funnel_call_status_t;

funnel_client_t *
    funnel_client_new (const char *endpoint);
//  The same for a known server (a program name, e.g. "leads"): with
//  security/curve = 1 the connection pins that server's public key
//  (funnel_curve_client); funnel_client_new cannot connect under CURVE.
funnel_client_t *
    funnel_client_new_for (const char *endpoint, const char *server);
void
    funnel_client_destroy (funnel_client_t **self_p);

//  Sends [verb][body] (body NULL/0 = no body frame) and waits up to
//  timeout_ms. On OK or ERR, *reply gets the body frame (caller destroys;
//  NULL if none).
funnel_call_status_t
    funnel_client_call (funnel_client_t *self, const char *verb,
                        const void *body, size_t size, int timeout_ms,
                        zframe_t **reply);

const char *
    funnel_client_endpoint (funnel_client_t *self);

#endif
