/*  funnel_authz — what the client behind one request may do.

    With CURVE on, every message a server socket receives carries its
    connection's metadata, set at the handshake by the ZAP handler from the
    client's certificate in security/clients (funnel_curve): User-Id (the
    client's public key), name, publish and read. The rules
    (proto/security.md):
      - read = 0 forbids GET, REPLAY and STATS (and SUB: refused at the
        handshake on PUB sockets);
      - publish lists the event types the client may PUBLISH, comma-
        separated, `*` for all (a certificate without it may publish all);
      - name is recorded as `by` with what the client's events cause.
    A message without User-Id on a CURVE server never passes (defence in
    depth: it would mean the handshake skipped ZAP). Without CURVE there is
    no identity and everything is allowed (loopback or security/insecure).
    A refusal is ERR `forbidden` naming the rule.
*/
#ifndef FUNNEL_AUTHZ_H_INCLUDED
#define FUNNEL_AUTHZ_H_INCLUDED

#include <czmq.h>
#include <msgpack.h>
#include <stdbool.h>
#include "funnel_error.h"

#define FUNNEL_AUTHZ_BY_MAX 64

typedef struct {
    bool authenticated;                 //  Came through CURVE + ZAP
    char by [FUNNEL_AUTHZ_BY_MAX + 1];  //  Certificate name; "" without CURVE
    const char *publish;                //  Into the frame's metadata; NULL = all
    bool read;
} funnel_peer_t;

//  Reads the peer behind a received frame (the request's verb) and checks
//  that it may use that verb. 0, or -1 with err set to forbidden.
int
    funnel_authz_request (zframe_t *verb, funnel_peer_t *peer, funnel_error_t *err);

//  Checks every event type of a PUBLISH body (an event map or an array of
//  them, already checked) against the peer's publish list; in a batch the
//  first refused element is err->index. 0, or -1 with err set.
int
    funnel_authz_publish (const funnel_peer_t *peer, const msgpack_object *root,
                          funnel_error_t *err);

//  True if type is in the comma-separated list ("*" = every type).
bool
    funnel_authz_listed (const char *list, const char *type, size_t type_len);

void
    funnel_authz_test (bool verbose);

#endif
