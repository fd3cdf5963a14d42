#include <czmq.h>
#include "bench_journey.h"
#include "bench_route.h"
#include "event_codec.h"

typedef struct {
    bench_pipe_t *pipe;
    const char *name;           //  The topology's
    msgpack_sbuffer pending;    //  Event maps back to back, no array header
    int count;                  //  Events in pending
} lane_t;

struct _bench_route_t {
    funnel_topology_t *topology;
    char *svc;
    int batch;
    int lanes;
    lane_t lane [FUNNEL_INSTANCES_MAX];
    msgpack_sbuffer body;       //  One request's body, reused
};

bench_route_t *
bench_route_new (funnel_topology_t *topology, const char *svc, const char *label,
                 int batch, int window, int timeout_ms)
{
    assert (topology);
    bench_route_t *self = (bench_route_t *) zmalloc (sizeof (bench_route_t));
    self->topology = topology;
    self->svc = strdup (svc);
    self->batch = batch > 0 ? batch : 1;
    self->lanes = funnel_topology_count (topology);
    msgpack_sbuffer_init (&self->body);
    for (int i = 0; i < self->lanes; i++) {
        const funnel_instance_t *instance = funnel_topology_at (topology, i);
        lane_t *lane = &self->lane [i];
        msgpack_sbuffer_init (&lane->pending);
        lane->name = instance->name;
        char name [128];
        if (*instance->name)
            snprintf (name, sizeof name, "%s@%s", label, instance->name);
        else
            snprintf (name, sizeof name, "%s", label);
        lane->pipe = bench_pipe_new (name, instance->api, window, timeout_ms);
        if (!lane->pipe) {
            bench_route_destroy (&self);
            return NULL;        //  Said by bench_pipe_new
        }
    }
    return self;
}

void
bench_route_destroy (bench_route_t **self_p)
{
    assert (self_p);
    bench_route_t *self = *self_p;
    if (self) {
        for (int i = 0; i < self->lanes; i++) {
            bench_pipe_destroy (&self->lane [i].pipe);
            msgpack_sbuffer_destroy (&self->lane [i].pending);
        }
        msgpack_sbuffer_destroy (&self->body);
        free (self->svc);
        free (self);
        *self_p = NULL;
    }
}

int
bench_route_owner (funnel_topology_t *topology, const char *svc, const char *data, size_t size)
{
    if (funnel_topology_count (topology) < 2)
        return 0;
    msgpack_unpacked unpacked;
    msgpack_unpacked_init (&unpacked);
    size_t offset = 0;
    int part = 0;
    if (msgpack_unpack_next (&unpacked, data, size, &offset) == MSGPACK_UNPACK_SUCCESS
    &&  unpacked.data.type == MSGPACK_OBJECT_MAP)
        part = funnel_topology_event_part (svc, event_codec_map_get (&unpacked.data, "data"),
                                           funnel_topology_partitions (topology));
    msgpack_unpacked_destroy (&unpacked);
    return funnel_topology_owner_index (topology, part);
}

bool
bench_route_ready (bench_route_t *self, int events)
{
    for (int i = 0; i < self->lanes; i++)
        //  An empty batch takes any group (a deal's 2 events with --batch 1)
        if ((self->lane [i].count > 0 && self->lane [i].count + events > self->batch)
        ||  bench_pipe_failed (self->lane [i].pipe))
            return false;
    return true;
}

//  Sends lane i's pending batch as one PUBLISH.
static int
s_send (bench_route_t *self, lane_t *lane)
{
    msgpack_packer pk;
    msgpack_packer_init (&pk, &self->body, msgpack_sbuffer_write);
    self->body.size = 0;
    msgpack_pack_array (&pk, lane->count);
    msgpack_sbuffer_write (&self->body, lane->pending.data, lane->pending.size);
    int events = lane->count;
    lane->pending.size = 0;
    lane->count = 0;
    return bench_pipe_send (lane->pipe, &self->body, events);
}

int
bench_route_add (bench_route_t *self, msgpack_sbuffer *body, int events)
{
    lane_t *lane = &self->lane [bench_route_owner (self->topology, self->svc,
                                                   body->data, body->size)];
    msgpack_sbuffer_write (&lane->pending, body->data, body->size);
    lane->count += events;
    body->size = 0;
    if (lane->count >= self->batch && bench_pipe_ready (lane->pipe))
        return s_send (self, lane);
    return bench_pipe_failed (lane->pipe) ? -1 : 0;
}

int
bench_route_flush (bench_route_t *self, bench_flush_t mode)
{
    for (int i = 0; i < self->lanes; i++) {
        lane_t *lane = &self->lane [i];
        if (lane->count == 0 || !bench_pipe_ready (lane->pipe))
            continue;
        if (lane->count >= self->batch || mode == BENCH_FLUSH_ALL
        ||  (mode == BENCH_FLUSH_IDLE && bench_pipe_inflight (lane->pipe) == 0))
            if (s_send (self, lane))
                return -1;
    }
    return bench_route_failed (self) ? -1 : 0;
}

int
bench_route_poll_items (bench_route_t *self, zmq_pollitem_t *items, int max)
{
    int count = 0;
    for (int i = 0; i < self->lanes && count < max; i++)
        items [count++] = (zmq_pollitem_t) {
            zsock_resolve (bench_pipe_sock (self->lane [i].pipe)), 0, ZMQ_POLLIN, 0 };
    return count;
}

int
bench_route_recv (bench_route_t *self)
{
    for (int i = 0; i < self->lanes; i++) {
        bench_pipe_t *pipe = self->lane [i].pipe;
        while (zsock_events (bench_pipe_sock (pipe)) & ZMQ_POLLIN)
            if (bench_pipe_recv (pipe))
                return -1;
        if (bench_pipe_check (pipe))
            return -1;
    }
    return 0;
}

int
bench_route_drain (bench_route_t *self, int timeout_ms)
{
    int64_t deadline = zclock_mono () + timeout_ms;
    while (bench_route_pending (self) || bench_route_inflight (self)) {
        if (bench_route_flush (self, BENCH_FLUSH_ALL))
            return -1;
        zmq_pollitem_t items [FUNNEL_INSTANCES_MAX];
        int count = bench_route_poll_items (self, items, FUNNEL_INSTANCES_MAX);
        if (zmq_poll (items, count, 50) < 0 && zmq_errno () != EINTR)
            return -1;
        if (bench_route_recv (self))
            return -1;
        if (zclock_mono () > deadline)
            return -1;
    }
    return 0;
}

int
bench_route_inflight (bench_route_t *self)
{
    int sum = 0;
    for (int i = 0; i < self->lanes; i++)
        sum += bench_pipe_inflight (self->lane [i].pipe);
    return sum;
}

int
bench_route_pending (bench_route_t *self)
{
    int sum = 0;
    for (int i = 0; i < self->lanes; i++)
        sum += self->lane [i].count;
    return sum;
}

int64_t
bench_route_acked (bench_route_t *self)
{
    int64_t sum = 0;
    for (int i = 0; i < self->lanes; i++)
        sum += bench_pipe_acked (self->lane [i].pipe);
    return sum;
}

int bench_route_count (bench_route_t *self) { return self->lanes; }

int64_t
bench_route_acked_at (bench_route_t *self, int index)
{
    return index >= 0 && index < self->lanes ? bench_pipe_acked (self->lane [index].pipe) : 0;
}

const char *
bench_route_name (bench_route_t *self, int index)
{
    return index >= 0 && index < self->lanes ? self->lane [index].name : "";
}

bool
bench_route_failed (bench_route_t *self)
{
    for (int i = 0; i < self->lanes; i++)
        if (bench_pipe_failed (self->lane [i].pipe))
            return true;
    return false;
}

const char *
bench_route_error (bench_route_t *self)
{
    for (int i = 0; i < self->lanes; i++)
        if (bench_pipe_failed (self->lane [i].pipe))
            return bench_pipe_error (self->lane [i].pipe);
    return "";
}


//  --------------------------------------------------------------------------
//  Self-test: two stand-in instances (ROUTERs on inproc) that answer every
//  PUBLISH with OK and check that each event is theirs.

#undef NDEBUG
#include <assert.h>

//  Answers what is waiting on router (instance index `me`): OK, or a
//  failed assert when an event of another instance's partition came.
static int
s_serve (zsock_t *router, funnel_topology_t *topology, int me)
{
    int events = 0;
    while (zsock_events (router) & ZMQ_POLLIN) {
        zmsg_t *msg = zmsg_recv (router);
        zframe_t *identity = zmsg_pop (msg);
        zframe_t *empty = zmsg_pop (msg);
        char *verb = zmsg_popstr (msg);
        zframe_t *body = zmsg_pop (msg);
        assert (identity && empty && verb && streq (verb, "PUBLISH") && body);
        msgpack_unpacked unpacked;
        msgpack_unpacked_init (&unpacked);
        size_t offset = 0;
        assert (msgpack_unpack_next (&unpacked, (const char *) zframe_data (body),
                                     zframe_size (body), &offset) == MSGPACK_UNPACK_SUCCESS);
        assert (unpacked.data.type == MSGPACK_OBJECT_ARRAY);
        for (uint32_t i = 0; i < unpacked.data.via.array.size; i++) {
            const msgpack_object *ev = &unpacked.data.via.array.ptr [i];
            int part = funnel_topology_event_part ("campaign", event_codec_map_get (ev, "data"),
                                                   funnel_topology_partitions (topology));
            assert (funnel_topology_owner_index (topology, part) == me);
            events++;
        }
        uint32_t count = unpacked.data.via.array.size;
        msgpack_unpacked_destroy (&unpacked);
        zmsg_destroy (&msg);
        zmsg_t *reply = zmsg_new ();
        zmsg_append (reply, &identity);
        zmsg_append (reply, &empty);
        zmsg_addstr (reply, "OK");
        msgpack_sbuffer sbuf;
        msgpack_sbuffer_init (&sbuf);
        msgpack_packer pk;
        msgpack_packer_init (&pk, &sbuf, msgpack_sbuffer_write);
        msgpack_pack_map (&pk, 1);
        event_codec_pack_cstr (&pk, "accepted");
        msgpack_pack_uint32 (&pk, count);
        zmsg_addmem (reply, sbuf.data, sbuf.size);
        msgpack_sbuffer_destroy (&sbuf);
        zmsg_send (&reply, router);
        zstr_free (&verb);
        zframe_destroy (&body);
    }
    return events;
}

void
bench_route_test (bool verbose)
{
    if (verbose)
        printf (" * bench_route: ");
    funnel_config_t *config = funnel_config_from_text (
        "campaign\n"
        "    partitions = 16\n"
        "    instances\n"
        "        a\n"
        "            api = \"inproc://bench-route-a\"\n"
        "            pub = \"inproc://bench-route-a-pub\"\n"
        "            owns = \"0-7\"\n"
        "        b\n"
        "            api = \"inproc://bench-route-b\"\n"
        "            pub = \"inproc://bench-route-b-pub\"\n"
        "            owns = \"8-15\"\n", "campaign");
    assert (config);
    funnel_topology_t *topology = funnel_topology_new (config, "campaign");
    assert (topology && funnel_topology_count (topology) == 2);
    zsock_t *router [2] = { zsock_new_router ("inproc://bench-route-a"),
                            zsock_new_router ("inproc://bench-route-b") };
    assert (router [0] && router [1]);
    bench_route_t *route = bench_route_new (topology, "campaign", "campaign", 10, 2, 5000);
    assert (route && bench_route_count (route) == 2);
    assert (streq (bench_route_name (route, 1), "b"));

    //  Touches of 8 campaigns (routed by campaign): both instances get some
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init (&sbuf);
    msgpack_packer pk;
    msgpack_packer_init (&pk, &sbuf, msgpack_sbuffer_write);
    int sent = 0, served [2] = { 0, 0 };
    int64_t deadline = zclock_mono () + 5000;
    while ((sent < 95 || bench_route_pending (route) || bench_route_inflight (route))
    &&     zclock_mono () < deadline) {
        while (sent < 95 && bench_route_ready (route, 1)) {
            bench_pack_touch (&pk, "test", sent / BENCH_TOUCHES, sent % BENCH_TOUCHES);
            assert (bench_route_add (route, &sbuf, 1) == 0);
            assert (sbuf.size == 0);
            sent++;
        }
        assert (bench_route_flush (route, sent == 95 ? BENCH_FLUSH_ALL : BENCH_FLUSH_FULL) == 0);
        zclock_sleep (1);
        for (int i = 0; i < 2; i++)
            served [i] += s_serve (router [i], topology, i);
        zclock_sleep (1);
        assert (bench_route_recv (route) == 0);
    }
    assert (served [0] + served [1] == 95 && served [0] > 0 && served [1] > 0);
    assert (bench_route_acked (route) == 95);
    assert (bench_route_acked_at (route, 0) == served [0]);

    msgpack_sbuffer_destroy (&sbuf);
    bench_route_destroy (&route);
    zsock_destroy (&router [0]);
    zsock_destroy (&router [1]);
    funnel_topology_destroy (&topology);
    funnel_config_destroy (&config);
    if (verbose)
        printf ("OK (%d and %d events)\n", served [0], served [1]);
}
