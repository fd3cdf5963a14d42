/*  upstream_set — see upstream_set.h. */
#include "upstream_set.h"
#include "event_codec.h"
#include "funnel_curve.h"
#include "funnel_log.h"


struct _upstream_set_t {
    char *name;
    zsock_t *sub;
    upstream_t **parts;
    int count;
    int batch_max;                  //  Messages one drain reads
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
    self->batch_max = UPSTREAM_BATCH_MAX;
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

void
upstream_set_batch_max (upstream_set_t *self, int max)
{
    self->batch_max = max < 1 ? 1 : max > UPSTREAM_BATCH_MAX ? UPSTREAM_BATCH_MAX : max;
}

//  The live messages waiting (up to a batch), each decoded once: its
//  `part` names the stream it goes to; then each stream that got one
//  applies its batch.
void
upstream_set_drain (upstream_set_t *self)
{
    bool *touched = (bool *) zmalloc ((size_t) self->count * sizeof (bool));
    void *sub = zsock_resolve (self->sub);
    zmq_msg_t topic, body;
    zmq_msg_init (&topic);
    zmq_msg_init (&body);
    for (int i = 0; i < self->batch_max; i++) {
        int frames = upstream_live_recv (sub, &topic, &body);
        if (frames < 0)
            break;
        //  Decoded as the first stream's (any would do: only for its warnings)
        event_codec_t *decoded = frames ? upstream_live_decode (self->parts [0], &body) : NULL;
        const msgpack_object *part_obj = decoded
            ? event_codec_map_get (event_codec_root (decoded), "part") : NULL;
        int part = part_obj && part_obj->type == MSGPACK_OBJECT_POSITIVE_INTEGER
                   && part_obj->via.u64 < (uint64_t) self->count ? (int) part_obj->via.u64 : -1;
        if (part < 0) {
            //  A message without part: an instance of an older layout
            if (decoded && funnel_log_every (&self->last_warn, 5000))
                log_warn ("upstream %s: a message without a valid part; dropped", self->name);
            event_codec_destroy (&decoded);
            continue;
        }
        upstream_offer_decoded (self->parts [part], upstream_live_heartbeat (&topic), &decoded);
        touched [part] = true;
    }
    zmq_msg_close (&topic);
    zmq_msg_close (&body);
    for (int p = 0; p < self->count; p++)
        if (touched [p])
            upstream_settle (self->parts [p]);
    free (touched);
}
