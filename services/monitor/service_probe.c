/*  service_probe — see service_probe.h for why. */
#include "service_probe.h"
#include "event_codec.h"
#include "funnel_client.h"
#include "funnel_curve.h"
#include "funnel_topology.h"
#include "funnel_log.h"
#include "upstream.h"
#include "json_msgpack.h"

//  A REPLAY page is 1000 events; a few pages per poll keep the loop live
#define CATCH_UP_PAGES 5

struct _service_probe_t {
    int svc;
    const char *name;
    funnel_view_t *view;
    funnel_client_t *client;
    //  With instances: one client each, for services.<svc>.instances
    funnel_client_t *instance_clients [FUNNEL_INSTANCES_MAX];
    char *instance_names [FUNNEL_INSTANCES_MAX];
    int64_t instance_retry [FUNNEL_INSTANCES_MAX];  //  A down one: asked again then
    int instance_count;
    upstream_t *upstream;           //  One outbox per service: gap-free stream
    zsock_t *sub;                   //  With instances: every instance's PUB, as it comes
    uint64_t seq;                   //  With instances: the last PING's seq (their sum)
    int64_t last_rx;
    bool started;               //  upstream_start called: the stream is live
    bool up;
    int64_t last_warn;
};

static int
s_on_events (void *arg, upstream_t *upstream, const char **events, const size_t *sizes,
             size_t count, uint64_t last_seq)
{
    (void) upstream;
    (void) last_seq;
    service_probe_t *self = (service_probe_t *) arg;
    int64_t now = zclock_time ();
    for (size_t i = 0; i < count; i++) {
        funnel_error_t err;
        event_codec_t *msg = event_codec_decode (events [i], sizes [i], &event_codec_limits_event, &err);
        funnel_event_t event;
        if (msg && event_codec_event_parse (event_codec_root (msg), &event, &err) == 0) {
            char kind [FUNNEL_ID_MAX + 1];
            bool has_kind = event_codec_obj_strcpy (event_codec_map_get (event.data, "kind"),
                                               kind, sizeof kind);
            //  Event time to apply: from the cause's own time to when this
            //  stage applied it; receipt delay for events without a cause
            const msgpack_object *cause_ts = event_codec_map_get (event_codec_root (msg), "cause_ts");
            int64_t latency = cause_ts && cause_ts->type == MSGPACK_OBJECT_POSITIVE_INTEGER
                            ? event.ts - (int64_t) cause_ts->via.u64 : now - event.ts;
            if (latency < 0)
                latency = 0;            //  A producer's clock ahead of ours
            funnel_view_record_event (self->view, self->svc, event.type,
                                      has_kind ? kind : NULL, latency);
        }
        event_codec_destroy (&msg);
    }
    //  Nothing to persist: the monitor keeps no checkpoint (see header)
    return 0;
}

service_probe_t *
service_probe_new_instances (int svc, const char *api, const char *const *pubs, int pub_count,
                             bool partitioned, const char *const *names,
                             const char *const *apis, funnel_view_t *view)
{
    service_probe_t *self = (service_probe_t *) zmalloc (sizeof (service_probe_t));
    self->svc = svc;
    self->name = funnel_view_services [svc];
    self->view = view;
    self->client = funnel_client_new_for (api, self->name);
    bool ok = self->client != NULL;
    if (!partitioned)
        ok = ok && (self->upstream = upstream_new (self->name, api, pubs [0],
                                                   funnel_view_event_types, s_on_events,
                                                   self)) != NULL;
    else {
        //  Per-partition seqs: the counts come from STATS anyway (service
        //  wide from any instance); the stream only gives rates and latency
        self->sub = zsock_new (ZMQ_SUB);
        zsock_set_rcvhwm (self->sub, 0);
        zsock_set_subscribe (self->sub, "");
        for (int i = 0; ok && i < pub_count; i++)
            ok = funnel_curve_client (self->sub, self->name) == 0
              && zsock_connect (self->sub, "%s", pubs [i]) == 0;
        self->last_rx = zclock_mono ();
    }
    for (int i = 0; ok && partitioned && names && i < pub_count; i++) {
        self->instance_names [i] = strdup (names [i]);
        self->instance_clients [i] = funnel_client_new_for (apis [i], self->name);
        ok = self->instance_clients [i] != NULL;
        self->instance_count = i + 1;
    }
    if (!ok)
        service_probe_destroy (&self);
    return self;
}

void
service_probe_destroy (service_probe_t **self_p)
{
    if (*self_p) {
        service_probe_t *self = *self_p;
        upstream_destroy (&self->upstream);
        zsock_destroy (&self->sub);
        funnel_client_destroy (&self->client);
        for (int i = 0; i < self->instance_count; i++) {
            funnel_client_destroy (&self->instance_clients [i]);
            free (self->instance_names [i]);
        }
        free (self);
        *self_p = NULL;
    }
}

zsock_t *
service_probe_sub (service_probe_t *self)
{
    return self->sub ? self->sub : upstream_sub (self->upstream);
}

void
service_probe_drain (service_probe_t *self)
{
    if (self->sub) {
        for (int i = 0; i < 1000 && (zsock_events (self->sub) & ZMQ_POLLIN); i++) {
            zmsg_t *msg = zmsg_recv (self->sub);
            zframe_t *topic = msg ? zmsg_first (msg) : NULL;
            zframe_t *body = topic ? zmsg_next (msg) : NULL;
            self->last_rx = zclock_mono ();
            if (body && !zframe_streq (topic, "$hb")) {
                const char *event = (const char *) zframe_data (body);
                size_t size = zframe_size (body);
                s_on_events (self, NULL, &event, &size, 1, 0);
            }
            zmsg_destroy (&msg);
        }
        return;
    }
    if (self->started) {
        upstream_drain (self->upstream);
        return;
    }
    //  Not started yet (no PING answered): what arrives predates the seq
    //  we will start from, or is fetched by the first catch-up. Discard it
    //  so the reader does not fire forever.
    zsock_t *sub = upstream_sub (self->upstream);
    for (int i = 0; i < 1000 && (zsock_events (sub) & ZMQ_POLLIN); i++) {
        zmsg_t *msg = zmsg_recv (sub);
        zmsg_destroy (&msg);
    }
}

//  Calls verb with an optional msgpack body; the decoded reply root or NULL.
static event_codec_t *
s_call (service_probe_t *self, const char *verb, const void *body, size_t size,
        int timeout_ms, funnel_call_status_t *status)
{
    zframe_t *reply = NULL;
    *status = funnel_client_call (self->client, verb, body, size, timeout_ms, &reply);
    if (!reply)
        return NULL;
    static const event_codec_limits_t limits = {
        .max_bytes = 16u * 1024 * 1024, .str_max = 64 * 1024, .entries_max = 100000,
        .top_entries_max = 100000, .elem_max_bytes = 0, .depth_max = 16
    };
    funnel_error_t err;
    event_codec_t *msg = event_codec_decode (zframe_data (reply), zframe_size (reply), &limits, &err);
    zframe_destroy (&reply);
    if (!msg && funnel_log_every (&self->last_warn, 10000))
        log_warn ("%s: undecodable %s reply: %s", self->name, verb, err.message);
    return msg;
}

static uint64_t
s_uint (const msgpack_object *map, const char *key)
{
    const msgpack_object *v = event_codec_map_get (map, key);
    return v && v->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? v->via.u64 : 0;
}

//  Each instance's STATS: up, the sum of its partitions' seqs, its
//  partitions ({"<p>": seq}), its conflicts.
static void
s_poll_instances (service_probe_t *self, int timeout_ms)
{
    json_t *all = json_object ();
    int64_t now = zclock_mono ();
    for (int i = 0; i < self->instance_count; i++) {
        //  A down instance costs the call's timeout: asked every 2 s only
        if (now < self->instance_retry [i]) {
            json_object_set_new (all, self->instance_names [i], json_pack ("{s:b}", "up", 0));
            continue;
        }
        zframe_t *reply = NULL;
        funnel_call_status_t status = funnel_client_call (self->instance_clients [i], "STATS",
                                                          NULL, 0, timeout_ms, &reply);
        funnel_error_t err;
        event_codec_t *msg = status == FUNNEL_CALL_OK && reply
            ? event_codec_decode (zframe_data (reply), zframe_size (reply), &event_codec_limits_event,
                                 &err) : NULL;
        zframe_destroy (&reply);
        const msgpack_object *parts = msg ? event_codec_map_get (event_codec_root (msg), "parts") : NULL;
        const msgpack_object *counters = msg ? event_codec_map_get (event_codec_root (msg), "counters")
                                             : NULL;
        json_t *one = json_pack ("{s:b}", "up", msg != NULL);
        self->instance_retry [i] = msg ? 0 : now + 2000;
        if (parts && parts->type == MSGPACK_OBJECT_MAP) {
            json_int_t seq = 0;
            for (uint32_t k = 0; k < parts->via.map.size; k++)
                if (parts->via.map.ptr [k].val.type == MSGPACK_OBJECT_POSITIVE_INTEGER)
                    seq += (json_int_t) parts->via.map.ptr [k].val.via.u64;
            json_object_set_new (one, "seq", json_integer (seq));
            json_object_set_new (one, "parts", json_from_msgpack (parts));
        }
        const msgpack_object *conflicts = counters ? event_codec_map_get (counters, "conflicts") : NULL;
        if (conflicts && conflicts->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
            json_object_set_new (one, "conflicts", json_integer ((json_int_t) conflicts->via.u64));
        json_object_set_new (all, self->instance_names [i], one);
        event_codec_destroy (&msg);
    }
    funnel_view_set_instances (self->view, self->svc, all);
    json_decref (all);
}

bool
service_probe_poll (service_probe_t *self, int timeout_ms)
{
    int64_t now = zclock_time ();
    funnel_call_status_t status;
    event_codec_t *ping = s_call (self, "PING", NULL, 0, timeout_ms, &status);
    if (status != FUNNEL_CALL_OK || !ping) {
        if (self->up)
            log_warn ("%s: no answer to PING; shown as down", self->name);
        self->up = false;
        funnel_view_set_down (self->view, self->svc, now);
        event_codec_destroy (&ping);
        return false;
    }
    const msgpack_object *root = event_codec_root (ping);
    char version [32] = "", redis [16] = "";
    event_codec_obj_strcpy (event_codec_map_get (root, "version"), version, sizeof version);
    event_codec_obj_strcpy (event_codec_map_get (root, "redis"), redis, sizeof redis);
    uint64_t seq = s_uint (root, "seq");
    self->seq = seq;
    funnel_view_set_ping (self->view, self->svc, version, seq, streq (redis, "ok"),
                          (int64_t) s_uint (root, "uptime_s"), now);
    event_codec_destroy (&ping);
    if (!self->up)
        log_info ("%s: up at seq %" PRIu64, self->name, seq);
    self->up = true;

    //  Go live from the current head: history is in the counters already.
    //  A seq far behind ours means the service's state was wiped: restart.
    if (self->sub)
        self->started = true;
    else
    if (!self->started || seq + 1 < upstream_expected (self->upstream)) {
        upstream_start (self->upstream, seq);
        self->started = true;
    }

    event_codec_t *stats = s_call (self, "STATS", NULL, 0, timeout_ms, &status);
    const msgpack_object *counters = stats && status == FUNNEL_CALL_OK
        ? event_codec_map_get (event_codec_root (stats), "counters") : NULL;
    if (counters && counters->type == MSGPACK_OBJECT_MAP) {
        json_t *json = json_from_msgpack (counters);
        funnel_view_set_counters (self->view, self->svc, json);
        json_decref (json);
    }
    event_codec_destroy (&stats);
    if (self->instance_count > 0)
        s_poll_instances (self, timeout_ms);
    return true;
}

bool
service_probe_up (service_probe_t *self)
{
    return self->up;
}

void
service_probe_catch_up (service_probe_t *self)
{
    if (self->sub) {
        funnel_view_set_stream (self->view, self->svc, self->started, self->seq, self->seq,
                                zclock_mono () - self->last_rx, zclock_time ());
        return;
    }
    //  REPLAY to a dead service would block the loop for its timeout
    if (self->started && self->up)
        upstream_catch_up (self->upstream, CATCH_UP_PAGES);
    funnel_view_set_stream (self->view, self->svc, self->started,
                            upstream_expected (self->upstream) - 1,
                            upstream_head (self->upstream),
                            upstream_silence_ms (self->upstream), zclock_time ());
}

json_t *
service_probe_get (service_probe_t *self, json_t *body, int timeout_ms)
{
    msgpack_sbuffer sbuf;
    if (json_to_msgpack_sbuffer (body, &sbuf))
        return NULL;
    funnel_call_status_t status;
    event_codec_t *msg = s_call (self, "GET", sbuf.data, sbuf.size, timeout_ms, &status);
    msgpack_sbuffer_destroy (&sbuf);
    json_t *json = msg && status == FUNNEL_CALL_OK ? json_from_msgpack (event_codec_root (msg)) : NULL;
    event_codec_destroy (&msg);
    return json;
}
