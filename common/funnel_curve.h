/*  funnel_curve — CURVE on every ZeroMQ socket of a Funnel program.

    Settings (the `security` section, proto/security.md):
      curve = 1       CURVE on every socket (default 0)
      certs = DIR     DIR/<name>.cert_secret: this program's keypair;
                      DIR/<server>.cert: the public key a client pins
      clients = DIR   public certificates of every client allowed in
      insecure = 1    allows binding a non-loopback address without CURVE
    and FUNNEL_CERT=FILE in the environment: this program's keypair, instead
    of DIR/<name>.cert_secret (e.g. an operator's own funnelctl certificate).

    ZAP, the hook libzmq asks whether a client may complete a handshake, is
    one handler per process (inproc://zeromq.zap.01), so this module's state
    is process-wide too: funnel_curve_setup once, before any socket is made.
    With curve = 1 it starts the handler before anything binds (CURVE fails
    open when no handler answers), and if the handler ever stops the process
    exits at once. The handler looks the client's public key up in
    `clients` (czmq zcertstore: deny by default), refuses a client whose
    certificate says read = 0 on a PUB socket (a PUB cannot refuse one
    subscriber later), and hands the certificate's name, publish and read to
    libzmq as connection metadata, which every message then carries
    (funnel_authz reads it per message).

    Without curve, the socket helpers only check that a server binds a
    loopback (or ipc/inproc) address unless insecure = 1.
*/
#ifndef FUNNEL_CURVE_H_INCLUDED
#define FUNNEL_CURVE_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>
#include "funnel_config.h"

//  ZAP domains: the handler applies the read rule on PUB sockets only.
#define FUNNEL_CURVE_DOMAIN_API "funnel.api"
#define FUNNEL_CURVE_DOMAIN_PUB "funnel.pub"

//  Reads the security section for the program called name (its certificate
//  is <certs>/<name>.cert_secret) and, with curve = 1 and clients set,
//  starts the ZAP handler. Returns 0, or 2 after logging a bad setting, or
//  1 if the handler cannot start.
int
    funnel_curve_setup (funnel_config_t *config, const char *name);

//  Stops the handler (at the very end, after every socket is closed).
void
    funnel_curve_teardown (void);

//  True when security/curve = 1 was set up.
bool
    funnel_curve_enabled (void);

//  Call before binding sock at endpoint. With CURVE: makes it a CURVE
//  server with this program's keypair in the given ZAP domain (FUNNEL_CURVE_
//  DOMAIN_*); refuses if no handler runs (no `clients`). Without: refuses a
//  non-loopback endpoint unless insecure = 1. 0, or -1 after logging why.
int
    funnel_curve_server (zsock_t *sock, const char *endpoint, const char *domain);

//  Call before connecting sock to server (a program name, e.g. "leads").
//  With CURVE: this program's keypair, and the server's public key from
//  <certs>/<server>.cert, so only that server completes the handshake.
//  server NULL under CURVE is an error. 0, or -1 after logging why.
int
    funnel_curve_client (zsock_t *sock, const char *server);

//  Writes DIR/NAME.cert and DIR/NAME.cert_secret (mode 0600), a new
//  keypair with metadata name = NAME, plus publish and read when not NULL.
//  0, or -1 with a message in err.
int
    funnel_curve_keygen (const char *name, const char *dir, const char *publish,
                         const char *read, char *err, size_t err_size);

//  True if name is a valid certificate name (1-64 of [A-Za-z0-9._:@+-]).
bool
    funnel_curve_name_ok (const char *name);

void
    funnel_curve_test (bool verbose);

#endif
