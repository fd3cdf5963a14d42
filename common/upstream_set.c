/*  upstream_set — see upstream_set.h. */
#include "upstream_set.h"
#include "event_codec.h"
#include "funnel_curve.h"
#include "funnel_log.h"

#define DRAIN_MAX   1000

struct _upstream_set_t {
    char *name;
    zsock_t *sub;
    upstream_t **parts;
    int count;
    int64_t last_warn;
};

upstream_set_t *
upstream_set_new (const char *name, funnel_topology_t *topology,
                  const char *const *consumes, upstream_apply_fn *apply, void *arg)
{
    upstream_set_t *self = (upstream_set_t *) zmalloc (sizeof (upstream_set_t));
    self->name = strdup (name);
    self->count = funnel_topology_partitions (topology);
    self->parts = (upstream_t **) zmalloc ((size_t) self->count * sizeof (upstream_t *));
    self->sub = upstream_sub_socket (name);
    bool ok = self->sub != NULL;
    for (int i = 0; ok && i < funnel_topology_count (topology); i++) {
        const char *pub = funnel_topology_at (topology, i)->pub;
        if (zsock_connect (self->sub, "%s", pub) != 0) {
            log_error ("upstream %s: cannot connect to %s", name, pub);
            ok = false;
        }
    }
    for (int p = 0; ok && p < self->count; p++) {
        self->parts [p] = upstream_new_part (name, p, funnel_topology_owner (topology, p)->api,
                                             consumes, apply, arg);
        ok = self->parts [p] != NULL;
    }
    if (!ok)
        upstream_set_destroy (&self);
    return self;
}

void
upstream_set_destroy (upstream_set_t **self_p)
{
    if (*self_p) {
        upstream_set_t *self = *self_p;
        for (int p = 0; p < self->count; p++)
            upstream_destroy (&self->parts [p]);
        free (self->parts);
        zsock_destroy (&self->sub);
        free (self->name);
        free (self);
        *self_p = NULL;
    }
}

zsock_t *upstream_set_sub (upstream_set_t *self)      { return self->sub; }
int upstream_set_count (upstream_set_t *self)         { return self->count; }

upstream_t *
upstream_set_part (upstream_set_t *self, int part)
{
    return part >= 0 && part < self->count ? self->parts [part] : NULL;
}

//  The `part` of a message's body (an event or a heartbeat), -1 if none.
static int
s_part_of (zmsg_t *msg)
{
    zframe_t *topic = zmsg_first (msg);
    zframe_t *body = topic ? zmsg_next (msg) : NULL;
    if (!body)
        return -1;
    funnel_error_t err;
    event_codec_t *decoded = event_codec_decode (zframe_data (body), zframe_size (body),
                                               &event_codec_limits_event, &err);
    const msgpack_object *part = decoded ? event_codec_map_get (event_codec_root (decoded), "part")
                                         : NULL;
    int value = part && part->type == MSGPACK_OBJECT_POSITIVE_INTEGER
                && part->via.u64 < 4096 ? (int) part->via.u64 : -1;
    event_codec_destroy (&decoded);
    return value;
}

void
upstream_set_drain (upstream_set_t *self)
{
    bool *touched = (bool *) zmalloc ((size_t) self->count * sizeof (bool));
    for (int i = 0; i < DRAIN_MAX && (zsock_events (self->sub) & ZMQ_POLLIN); i++) {
        zmsg_t *msg = zmsg_recv (self->sub);
        if (!msg)
            break;
        int part = s_part_of (msg);
        if (part < 0 || part >= self->count) {
            //  A heartbeat without part: an instance of an older layout
            if (funnel_log_every (&self->last_warn, 5000))
                log_warn ("upstream %s: a message without a valid part; dropped", self->name);
            zmsg_destroy (&msg);
            continue;
        }
        upstream_offer (self->parts [part], &msg);
        touched [part] = true;
    }
    for (int p = 0; p < self->count; p++)
        if (touched [p])
            upstream_settle (self->parts [p]);
    free (touched);
}
