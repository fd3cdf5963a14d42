#include "funnel_client.h"
#include "event_codec.h"
#include "funnel_curve.h"

struct _funnel_client_t {
    char *endpoint;
    char *server;                   //  Whose key CURVE pins, NULL = unknown
    zsock_t *dealer;
};

static zsock_t *
s_connect (const char *endpoint, const char *server)
{
    zsock_t *dealer = zsock_new (ZMQ_DEALER);
    if (!dealer)
        return NULL;
    zsock_set_linger (dealer, 0);
    zsock_set_reconnect_ivl_max (dealer, 2000);
    zsock_set_maxmsgsize (dealer, 80 * 1024 * 1024);
    if (funnel_curve_client (dealer, server) != 0
    ||  zsock_connect (dealer, "%s", endpoint) != 0)
        zsock_destroy (&dealer);
    return dealer;
}

funnel_client_t *
funnel_client_new (const char *endpoint)
{
    return funnel_client_new_for (endpoint, NULL);
}

funnel_client_t *
funnel_client_new_for (const char *endpoint, const char *server)
{
    funnel_client_t *self = (funnel_client_t *) zmalloc (sizeof (funnel_client_t));
    self->endpoint = strdup (endpoint);
    self->server = server ? strdup (server) : NULL;
    self->dealer = s_connect (endpoint, server);
    if (!self->dealer)
        funnel_client_destroy (&self);
    return self;
}

void
funnel_client_destroy (funnel_client_t **self_p)
{
    if (*self_p) {
        funnel_client_t *self = *self_p;
        zsock_destroy (&self->dealer);
        free (self->endpoint);
        free (self->server);
        free (self);
        *self_p = NULL;
    }
}

const char *
funnel_client_endpoint (funnel_client_t *self)
{
    return self->endpoint;
}

funnel_call_status_t
funnel_client_call (funnel_client_t *self, const char *verb,
                    const void *body, size_t size, int timeout_ms,
                    zframe_t **reply)
{
    *reply = NULL;
    if (!self->dealer)
        self->dealer = s_connect (self->endpoint, self->server);
    if (!self->dealer)
        return FUNNEL_CALL_BROKEN;
    void *handle = zsock_resolve (self->dealer);
    bool with_body = body != NULL;
    zmq_send (handle, "", 0, ZMQ_SNDMORE | ZMQ_DONTWAIT);
    zmq_send (handle, verb, strlen (verb), (with_body ? ZMQ_SNDMORE : 0) | ZMQ_DONTWAIT);
    if (with_body)
        zmq_send (handle, body, size, ZMQ_DONTWAIT);

    zmq_pollitem_t item = { handle, 0, ZMQ_POLLIN, 0 };
    if (zmq_poll (&item, 1, timeout_ms) <= 0) {
        //  Rebuild, so this request's late reply is never read as the next's
        zsock_destroy (&self->dealer);
        self->dealer = s_connect (self->endpoint, self->server);
        return FUNNEL_CALL_TIMEOUT;
    }
    zmsg_t *msg = zmsg_recv (self->dealer);
    if (!msg)
        return FUNNEL_CALL_TIMEOUT;
    zframe_t *empty = zmsg_pop (msg);
    zframe_t *status = zmsg_pop (msg);
    funnel_call_status_t rc = FUNNEL_CALL_BROKEN;
    if (empty && zframe_size (empty) == 0 && status) {
        if (zframe_streq (status, "OK"))
            rc = FUNNEL_CALL_OK;
        else
        if (zframe_streq (status, "ERR"))
            rc = FUNNEL_CALL_ERR;
        if (rc != FUNNEL_CALL_BROKEN)
            *reply = zmsg_pop (msg);
    }
    zframe_destroy (&empty);
    zframe_destroy (&status);
    zmsg_destroy (&msg);
    return rc;
}
