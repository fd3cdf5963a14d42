/*  Self-tests of the gateway's pure modules (no sockets). */
#include <stdio.h>
#include <string.h>
#include "event_routes.h"
#include "gateway_request.h"
#include "token_store.h"
#include "webhook.h"

int
main (int argc, char *argv [])
{
    bool verbose = argc > 1 && strcmp (argv [1], "-v") == 0;
    event_routes_test (verbose);
    token_store_test (verbose);
    gateway_request_test (verbose);
    webhook_test (verbose);
    printf ("gateway self-tests passed\n");
    return 0;
}
