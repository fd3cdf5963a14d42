/*  service_pool — request/reply clients to one service, shared by threads.

    A ZeroMQ socket must be used by one thread at a time, and the HTTP
    server runs a pool of threads: each call takes an idle funnel_client
    (or makes one), makes the call, and puts it back. The pool grows to the
    number of calls in flight at once and never shrinks.
*/
#ifndef SERVICE_POOL_H_INCLUDED
#define SERVICE_POOL_H_INCLUDED

#include "funnel_client.h"

typedef struct _service_pool_t service_pool_t;

service_pool_t *
    service_pool_new (const char *name, const char *endpoint);
void
    service_pool_destroy (service_pool_t **self_p);

const char *
    service_pool_name (service_pool_t *self);

//  funnel_client_call on a client of the pool (see funnel_client.h).
funnel_call_status_t
    service_pool_call (service_pool_t *self, const char *verb, const void *body,
                       size_t size, int timeout_ms, zframe_t **reply);

#endif
