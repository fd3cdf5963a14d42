/*  service_pool — see service_pool.h for why. */
#include <pthread.h>
#include "funnel_log.h"
#include "service_pool.h"

struct _service_pool_t {
    char *name;
    char *endpoint;
    pthread_mutex_t lock;
    funnel_client_t **idle;         //  Stack of clients not in a call
    size_t idle_count, idle_max;
};

service_pool_t *
service_pool_new (const char *name, const char *endpoint)
{
    service_pool_t *self = (service_pool_t *) zmalloc (sizeof (service_pool_t));
    self->name = strdup (name);
    self->endpoint = strdup (endpoint);
    pthread_mutex_init (&self->lock, NULL);
    return self;
}

void
service_pool_destroy (service_pool_t **self_p)
{
    if (*self_p) {
        service_pool_t *self = *self_p;
        for (size_t i = 0; i < self->idle_count; i++)
            funnel_client_destroy (&self->idle [i]);
        free (self->idle);
        pthread_mutex_destroy (&self->lock);
        free (self->name);
        free (self->endpoint);
        free (self);
        *self_p = NULL;
    }
}

const char *
service_pool_name (service_pool_t *self)
{
    return self->name;
}

funnel_call_status_t
service_pool_call (service_pool_t *self, const char *verb, const void *body,
                   size_t size, int timeout_ms, zframe_t **reply)
{
    *reply = NULL;
    funnel_client_t *client = NULL;
    pthread_mutex_lock (&self->lock);
    if (self->idle_count > 0)
        client = self->idle [--self->idle_count];
    pthread_mutex_unlock (&self->lock);
    if (!client)
        client = funnel_client_new_for (self->endpoint, self->name);  //  Key pinned under CURVE
    if (!client) {
        log_error ("%s: cannot connect to %s", self->name, self->endpoint);
        return FUNNEL_CALL_BROKEN;
    }
    funnel_call_status_t rc = funnel_client_call (client, verb, body, size, timeout_ms, reply);
    pthread_mutex_lock (&self->lock);
    if (self->idle_count == self->idle_max) {
        size_t max = self->idle_max ? self->idle_max * 2 : 8;
        funnel_client_t **idle = realloc (self->idle, max * sizeof *idle);
        if (idle) {
            self->idle = idle;
            self->idle_max = max;
        }
    }
    if (self->idle_count < self->idle_max) {
        self->idle [self->idle_count++] = client;
        client = NULL;
    }
    pthread_mutex_unlock (&self->lock);
    funnel_client_destroy (&client);        //  Only if the stack could not grow
    return rc;
}
