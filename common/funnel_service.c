/*  funnel_service — see funnel_service.h for what it does.

    Single-threaded by design: one zloop, in the actor's thread, owns the
    API, PUB and SUB sockets and the one Redis connection. Each request is
    handled to the end (one engine commit, funnel_engine.h) before the next,
    so the order of applies is the order of requests, a $TERM always falls
    between two requests, and no lock is needed anywhere. Throughput comes
    from batching, not threads. Signals are the host's business: the actor
    stops on $TERM only (funnel_service_main turns SIGTERM/SIGINT into one).
*/
#include <pthread.h>
#include "funnel_service.h"
#include "funnel_notify.h"
#include "event_codec.h"
#include "funnel_authz.h"
#include "funnel_curve.h"
#include "funnel_log.h"
#include "funnel_signals.h"
#include "redis_auth.h"
#include "redis_store.h"
#include "outbox_entry.h"
#include "upstream.h"
#include "upstream_set.h"
#include "funnel_topology.h"

#define UPSTREAMS_MAX       (4 * 4096 + 8)    //  Streams: one per upstream partition
#define UPSTREAM_SETS_MAX   8
#define API_BURST           64          //  Requests handled per wakeup
#define CONSUME_BATCH       1000        //  Live upstream events per batch
#define CONSUME_BATCH_BUSY  100         //  ... while requests arrive
#define CONSUME_BATCH_OCC   100         //  ... with several instances: every
                                        //  record a batch reads is WATCHed,
                                        //  which costs Redis n^2 in the keys
#define REPLAY_DEFAULT      1000
#define RETENTION_DEFAULT   1000000
#define DEDUP_TTL_DEFAULT   (8 * 24 * 3600)     //  ids kept ≥ 7 days

typedef struct {
    const funnel_service_def_t *def;
    zsock_t *pipe;                      //  To the host (zactor)
    bool running;                       //  START succeeded: the loop runs
    bool terminated;                    //  $TERM received
    bool reported;                      //  STOPPED sent to the host
    int start_rc;                       //  The first START's answer, -1 before it
    funnel_config_t *config;
    redis_store_t *store;               //  One server (single or sentinel), or
    redis_cluster_t *cluster;           //  a Redis Cluster's nodes
    zsock_t *api;
    zsock_t *pub;
    upstream_t **upstreams;             //  Every stream (a partition's or a whole service's)
    int upstream_count;
    upstream_set_t *sets [UPSTREAM_SETS_MAX];   //  Partitioned upstreams' SUB
    int set_count;
    funnel_topology_t *topology;        //  Our own service's partitions and instances
    const funnel_instance_t *instance;  //  The one we run
    char subscriber [80];               //  The name we register upstream
    uint64_t seq;                       //  Last seq published
    bool synced;                        //  seq and checkpoints read since connect
    int64_t started;
    int64_t last_warn;
    funnel_engine_t *engine;            //  Runs the rules (def->rules)
    funnel_engine_cfg_t cfg;            //  Its settings, read before any bind
    char default_prefix [96];           //  "{funnel:<name>}:", cfg.prefix's default
    int64_t lease_deadline;             //  Give up waiting for leases then
    bool lease_waiting;                 //  Logged "waiting" once
    bool fatal;                         //  Stop with exit code 1
    bool synced_once;                   //  The engine ran: a lease lost now is a step-down
    int consume_batch;                  //  Live upstream events per batch (settings)
    int consume_batch_busy;             //  ... while requests arrive
    int64_t last_api;                   //  zclock_mono of the last request
    bool busy;                          //  A request came within the last second
    void *rules_arg;                    //  The C rules' settings (rules->setup)
    funnel_peer_t peer;                 //  Who sent the request being handled
    msgpack_sbuffer pub_buf;            //  An output's PUB body, reused: a fresh
                                        //  sbuffer is an 8 kB malloc per event
} service_t;


static int64_t
s_now_ms (void)
{
    return zclock_time ();
}

static void s_sync (service_t *self);
static void s_engine_new (service_t *self, const char *api);

//  ---------------------------------------------------------------------
//  API replies

static void
s_send_reply (service_t *self, zmsg_t *envelope, const char *status,
              const void *body, size_t size)
{
    zmsg_addstr (envelope, status);
    zmsg_addmem (envelope, body, size);
    zmsg_send (&envelope, self->api);
}

static void
s_send_error (service_t *self, zmsg_t *envelope, const funnel_error_t *err)
{
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init (&sbuf);
    event_codec_pack_error (&sbuf, err);
    s_send_reply (self, envelope, "ERR", sbuf.data, sbuf.size);
    msgpack_sbuffer_destroy (&sbuf);
    log_debug ("ERR %s: %s", err->code, err->message);
}

static void
s_send_packed (service_t *self, zmsg_t *envelope, msgpack_sbuffer *sbuf)
{
    s_send_reply (self, envelope, "OK", sbuf->data, sbuf->size);
    msgpack_sbuffer_destroy (sbuf);
}

//  ---------------------------------------------------------------------
//  Verbs

static void
s_do_ping (service_t *self, zmsg_t *envelope)
{
    bool up = funnel_engine_redis_up (self->engine);
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init (&sbuf);
    msgpack_packer pk;
    msgpack_packer_init (&pk, &sbuf, msgpack_sbuffer_write);
    bool named = funnel_topology_partitioned (self->topology);
    msgpack_pack_map (&pk, 5 + named);
    event_codec_pack_cstr (&pk, "svc");
    event_codec_pack_cstr (&pk, self->def->name);
    if (named) {
        event_codec_pack_cstr (&pk, "instance");
        event_codec_pack_cstr (&pk, self->instance->name);
    }
    event_codec_pack_cstr (&pk, "version");
    event_codec_pack_cstr (&pk, FUNNEL_VERSION);
    event_codec_pack_cstr (&pk, "seq");
    msgpack_pack_uint64 (&pk, self->seq);
    event_codec_pack_cstr (&pk, "redis");
    event_codec_pack_cstr (&pk, up ? "ok" : "down");
    event_codec_pack_cstr (&pk, "uptime_s");
    msgpack_pack_int64 (&pk, (zclock_mono () - self->started) / 1000);
    s_send_packed (self, envelope, &sbuf);
}

//  Every check before state, in the contract's order, per element.
static int
s_check_events (service_t *self, const msgpack_object *root, size_t size,
                bool *is_batch, funnel_error_t *err)
{
    *is_batch = root->type == MSGPACK_OBJECT_ARRAY;
    if (!*is_batch && root->type != MSGPACK_OBJECT_MAP)
        return funnel_error_set (err, FUNNEL_ERR_BAD_REQUEST,
                                 "body: must be an event map or an array of event maps");
    if (!*is_batch && size > FUNNEL_EVENT_MAX_BYTES)
        return funnel_error_set (err, FUNNEL_ERR_TOO_LARGE,
                                 "event: %zu bytes encoded, the limit is %d", size,
                                 FUNNEL_EVENT_MAX_BYTES);
    uint32_t count = *is_batch ? root->via.array.size : 1;
    if (*is_batch && count == 0)
        return funnel_error_set (err, FUNNEL_ERR_INVALID, "body: an empty batch");
    for (uint32_t i = 0; i < count; i++) {
        const msgpack_object *obj = *is_batch ? &root->via.array.ptr [i] : root;
        funnel_event_t event;
        const funnel_event_schema_t *schema = NULL;
        int rc = event_codec_event_parse (obj, &event, err);
        if (rc == 0 && !(schema = funnel_schema_find (self->def->accepts, event.type)))
            rc = funnel_error_set (err, FUNNEL_ERR_UNKNOWN_TYPE,
                                   "type: '%s' is not accepted by %s", event.type,
                                   self->def->name);
        if (rc == 0)
            rc = funnel_schema_check (schema, event.data, err);
        if (rc != 0) {
            if (*is_batch)
                err->index = (int) i;
            return -1;
        }
    }
    return 0;
}

//  ERR moved: the error shape plus the owner's `api` (and `index`).
static void
s_send_moved (service_t *self, zmsg_t *envelope, int part, int index)
{
    const funnel_instance_t *owner = funnel_topology_owner (self->topology, part);
    funnel_error_t err;
    funnel_error_clear (&err);
    funnel_error_set (&err, FUNNEL_ERR_MOVED,
                      "partition: %d is owned by instance '%s' at %s, not by '%s'; send it there",
                      part, owner->name, owner->api, self->instance->name);
    err.index = index;
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init (&sbuf);
    event_codec_pack_error_extra (&sbuf, &err, "api", owner->api);
    s_send_reply (self, envelope, "ERR", sbuf.data, sbuf.size);
    msgpack_sbuffer_destroy (&sbuf);
    log_debug ("ERR moved: %s", err.message);
}

//  With instances: every event of a PUBLISH must fall in a partition we
//  own, else ERR moved for the first that does not (nothing applied).
static bool
s_check_owned (service_t *self, zmsg_t *envelope, const msgpack_object *root)
{
    if (!funnel_topology_partitioned (self->topology))
        return true;
    bool batch = root->type == MSGPACK_OBJECT_ARRAY;
    uint32_t count = batch ? root->via.array.size : 1;
    int partitions = funnel_topology_partitions (self->topology);
    for (uint32_t i = 0; i < count; i++) {
        const msgpack_object *ev = batch ? &root->via.array.ptr [i] : root;
        int part = funnel_topology_event_part (self->def->name, event_codec_map_get (ev, "data"),
                                               partitions);
        if (!self->instance->owns [part]) {
            s_send_moved (self, envelope, part, batch ? (int) i : -1);
            return false;
        }
    }
    return true;
}

//  PUBLISH: checked events, one batch, one commit.
static void
s_publish_engine (service_t *self, zmsg_t *envelope, event_codec_t *msg)
{
    funnel_error_t err;
    funnel_error_clear (&err);
    funnel_event_t *events = NULL;
    size_t count = 0;
    bool is_batch = false;
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init (&sbuf);
    if (event_codec_publish_parse (msg, &events, &count, &is_batch, &err) == 0
    &&  funnel_engine_publish (self->engine, events, count, is_batch, self->peer.by,
                                &sbuf, &err) == 0) {
        s_send_packed (self, envelope, &sbuf);
        free (events);
        return;
    }
    free (events);
    msgpack_sbuffer_destroy (&sbuf);
    if (funnel_engine_lost (self->engine))
        self->fatal = true;
    s_send_error (self, envelope, &err);
}

static void
s_do_publish (service_t *self, zmsg_t *envelope, zframe_t *body)
{
    funnel_error_t err;
    funnel_error_clear (&err);
    if (!body) {
        funnel_error_set (&err, FUNNEL_ERR_BAD_REQUEST,
                          "body: PUBLISH needs an event map or an array of event maps");
        s_send_error (self, envelope, &err);
        return;
    }
    //  A single event (a map) gets the event limits (64 KiB, depth 8); a
    //  batch the body limits (the array is one more level of nesting)
    byte first = zframe_size (body) ? zframe_data (body) [0] : 0;
    bool is_map = (first & 0xf0) == 0x80 || first == 0xde || first == 0xdf;
    event_codec_t *msg = event_codec_decode (zframe_data (body), zframe_size (body),
                                           is_map ? &event_codec_limits_event : &event_codec_limits_body,
                                           &err);
    bool is_batch = false;
    if (!msg || s_check_events (self, event_codec_root (msg), zframe_size (body),
                                &is_batch, &err) != 0
    ||  funnel_authz_publish (&self->peer, event_codec_root (msg), &err) != 0) {
        event_codec_destroy (&msg);
        s_send_error (self, envelope, &err);
        return;
    }
    if (!s_check_owned (self, envelope, event_codec_root (msg))) {
        event_codec_destroy (&msg);
        return;
    }
    s_publish_engine (self, envelope, msg);
    event_codec_destroy (&msg);
}

//  Decodes a small request body that must be a map.
static event_codec_t *
s_decode_map (zframe_t *body, const char *verb, funnel_error_t *err)
{
    if (!body) {
        funnel_error_set (err, FUNNEL_ERR_BAD_REQUEST, "body: %s needs a map", verb);
        return NULL;
    }
    event_codec_t *msg = event_codec_decode (zframe_data (body), zframe_size (body),
                                           &event_codec_limits_event, err);
    if (msg && event_codec_root (msg)->type != MSGPACK_OBJECT_MAP) {
        funnel_error_set (err, FUNNEL_ERR_BAD_REQUEST, "body: %s needs a map", verb);
        event_codec_destroy (&msg);
    }
    return msg;
}

static void
s_do_get (service_t *self, zmsg_t *envelope, zframe_t *body)
{
    funnel_error_t err;
    funnel_error_clear (&err);
    event_codec_t *msg = s_decode_map (body, "GET", &err);
    if (msg) {
        const msgpack_object *kind = event_codec_map_get (event_codec_root (msg), "kind");
        if (!kind || kind->type != MSGPACK_OBJECT_STR)
            funnel_error_set (&err, FUNNEL_ERR_INVALID, "kind: required string is missing");
    }
    event_codec_destroy (&msg);
    if (err.code) {
        s_send_error (self, envelope, &err);
        return;
    }
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init (&sbuf);
    msg = s_decode_map (body, "GET", &err);
    if (msg && funnel_engine_query (self->engine, event_codec_root (msg), &sbuf, &err) == 0)
        s_send_packed (self, envelope, &sbuf);
    else {
        msgpack_sbuffer_destroy (&sbuf);
        s_send_error (self, envelope, &err);
    }
    event_codec_destroy (&msg);
}

//  Reads an optional unsigned field of a request map.
static int
s_uint_arg (const msgpack_object *map, const char *key, bool required,
            uint64_t *value, funnel_error_t *err)
{
    const msgpack_object *obj = event_codec_map_get (map, key);
    if (!obj || obj->type == MSGPACK_OBJECT_NIL) {
        if (required)
            return funnel_error_set (err, FUNNEL_ERR_INVALID,
                                     "%s: required unsigned integer is missing", key);
        return 0;
    }
    if (obj->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return funnel_error_set (err, FUNNEL_ERR_INVALID,
                                 "%s: must be an unsigned integer", key);
    *value = obj->via.u64;
    return 0;
}

static void
s_do_replay (service_t *self, zmsg_t *envelope, zframe_t *body)
{
    funnel_error_t err;
    funnel_error_clear (&err);
    uint64_t from = 0, limit = REPLAY_DEFAULT, part = 0;
    char subscriber [FUNNEL_ID_MAX + 1] = "";
    event_codec_t *msg = s_decode_map (body, "REPLAY", &err);
    if (msg && s_uint_arg (event_codec_root (msg), "from", true, &from, &err) == 0
    &&  s_uint_arg (event_codec_root (msg), "limit", false, &limit, &err) == 0
    &&  s_uint_arg (event_codec_root (msg), "partition", false, &part, &err) == 0) {
        //  Without instances `partition` is ignored (proto/wire.md, REPLAY)
        if (funnel_topology_partitioned (self->topology)
        &&  part >= (uint64_t) funnel_topology_partitions (self->topology))
            funnel_error_set (&err, FUNNEL_ERR_INVALID, "partition: must be 0..%d",
                              funnel_topology_partitions (self->topology) - 1);
        //  Optional: the name a subscriber registers under
        const msgpack_object *name = event_codec_map_get (event_codec_root (msg), "subscriber");
        if (name && name->type != MSGPACK_OBJECT_NIL
        &&  (!event_codec_obj_strcpy (name, subscriber, sizeof subscriber)
             || !event_codec_id_valid (subscriber, strlen (subscriber))))
            funnel_error_set (&err, FUNNEL_ERR_INVALID,
                              "subscriber: must be 1-64 bytes of [A-Za-z0-9._:@+-]");
    }
    event_codec_destroy (&msg);
    if (err.code) {
        s_send_error (self, envelope, &err);
        return;
    }
    if (limit > REPLAY_DEFAULT)
        limit = REPLAY_DEFAULT;         //  Clamped, as the contract says
    //  With instances each partition has its own outbox (absent: 0);
    //  without, `partition` is ignored: one outbox per service
    bool partitioned = funnel_topology_partitioned (self->topology);
    if (partitioned && !self->instance->owns [part]) {
        s_send_moved (self, envelope, (int) part, -1);
        return;
    }
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init (&sbuf);
    if (funnel_engine_replay (self->engine, partitioned ? (int) part : -1, from, limit,
                              subscriber, &sbuf, &err) == 0)
        s_send_packed (self, envelope, &sbuf);
    else {
        msgpack_sbuffer_destroy (&sbuf);
        s_send_error (self, envelope, &err);
    }
}

static void
s_do_stats (service_t *self, zmsg_t *envelope)
{
    funnel_error_t err;
    funnel_error_clear (&err);
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init (&sbuf);
    if (funnel_engine_stats (self->engine, &sbuf, &err) == 0)
        s_send_packed (self, envelope, &sbuf);
    else {
        msgpack_sbuffer_destroy (&sbuf);
        s_send_error (self, envelope, &err);
    }
}

//  Splits [routing...][""][VERB][BODY] into envelope and request frames.
//  A DEALER without the delimiter still gets a reply (without one).
static zmsg_t *
s_split_envelope (zmsg_t *msg)
{
    bool delimited = false;
    for (zframe_t *f = zmsg_first (msg); f; f = zmsg_next (msg))
        if (zframe_size (f) == 0) {
            delimited = true;
            break;
        }
    zmsg_t *envelope = zmsg_new ();
    while (zmsg_size (msg) > 0) {
        zframe_t *frame = zmsg_pop (msg);
        bool last = delimited ? zframe_size (frame) == 0 : true;
        zmsg_append (envelope, &frame);
        if (last)
            break;
    }
    return envelope;
}

static void
s_handle_request (service_t *self, zmsg_t *msg)
{
    zmsg_t *envelope = s_split_envelope (msg);
    zframe_t *verb = zmsg_pop (msg);
    zframe_t *body = zmsg_pop (msg);
    funnel_error_t err;
    funnel_error_clear (&err);
    if (!verb)
        funnel_error_set (&err, FUNNEL_ERR_BAD_REQUEST, "verb: missing; send [VERB][BODY]");
    else
    if (zmsg_size (msg) > 0)
        funnel_error_set (&err, FUNNEL_ERR_BAD_REQUEST,
                          "frames: %zu extra frames; send [VERB][BODY]", zmsg_size (msg));
    else
    if (body && zframe_size (body) > FUNNEL_FRAME_MAX_BYTES)
        funnel_error_set (&err, FUNNEL_ERR_TOO_LARGE, "body: %zu bytes, the limit is %d",
                          zframe_size (body), FUNNEL_FRAME_MAX_BYTES);
    else
        funnel_authz_request (verb, &self->peer, &err);
    if (err.code)
        s_send_error (self, envelope, &err);
    else
    if (zframe_streq (verb, "PUBLISH"))
        s_do_publish (self, envelope, body);
    else
    if (zframe_streq (verb, "GET"))
        s_do_get (self, envelope, body);
    else
    if (zframe_streq (verb, "REPLAY"))
        s_do_replay (self, envelope, body);
    else
    if (zframe_streq (verb, "STATS"))
        s_do_stats (self, envelope);
    else
    if (zframe_streq (verb, "PING"))
        s_do_ping (self, envelope);
    else {
        char *text = zframe_strdup (verb);
        funnel_error_set (&err, FUNNEL_ERR_BAD_REQUEST,
                          "verb: unknown verb '%.32s' (expected PING, PUBLISH, GET, REPLAY, STATS)",
                          text);
        free (text);
        s_send_error (self, envelope, &err);
    }
    zframe_destroy (&verb);
    zframe_destroy (&body);
}

//  ---------------------------------------------------------------------
//  Loop handlers

//  The size of the upstreams' live batches: a request arriving while one
//  is applied waits for it (one loop), so while requests arrive the
//  batches are kept smaller (consume_batch_busy), at some cost in
//  throughput (a commit per batch).
static void
s_consume_batch (service_t *self, int max)
{
    for (int s = 0; s < self->set_count; s++)
        upstream_set_batch_max (self->sets [s], max);
    //  Every stream, a partitioned upstream's included
    for (int u = 0; u < self->upstream_count; u++)
        upstream_batch_max (self->upstreams [u], max);
}

static int
s_on_api (zloop_t *loop, zsock_t *reader, void *arg)
{
    (void) loop;
    service_t *self = (service_t *) arg;
    self->last_api = zclock_mono ();
    if (!self->busy && self->consume_batch_busy < self->consume_batch) {
        self->busy = true;
        s_consume_batch (self, self->consume_batch_busy);
    }
    for (int i = 0; i < API_BURST && (zsock_events (reader) & ZMQ_POLLIN); i++) {
        zmsg_t *msg = zmsg_recv (reader);
        if (!msg)
            break;
        s_handle_request (self, msg);
        zmsg_destroy (&msg);
        //  A command (maybe $TERM) waits: the loop takes it before more requests
        if (self->fatal || (zsock_events (self->pipe) & ZMQ_POLLIN))
            break;
    }
    return self->fatal ? -1 : 0;
}

//  Applies a batch of upstream events with their checkpoint: decoded
//  again (they are network input), one engine batch.
static int
s_apply_upstream (void *arg, upstream_t *upstream, const char **events,
                  const size_t *sizes, size_t count, uint64_t last_seq)
{
    service_t *self = (service_t *) arg;
    if (!self->synced)
        return -1;
    event_codec_t **decoded = (event_codec_t **) calloc (count + 1, sizeof (event_codec_t *));
    funnel_event_t *parsed = (funnel_event_t *) calloc (count + 1, sizeof (funnel_event_t));
    size_t valid = 0;
    for (size_t i = 0; i < count; i++) {
        funnel_error_t err;
        //  A live event comes decoded and checked already (upstream_offer)
        event_codec_t *held = upstream_held (upstream, i, events [i]);
        if (held) {
            if (event_codec_event_parse (event_codec_root (held), &parsed [valid], &err) == 0)
                valid++;
            continue;
        }
        decoded [i] = event_codec_decode (events [i], sizes [i], &event_codec_limits_event, &err);
        if (decoded [i]
        &&  event_codec_event_parse (event_codec_root (decoded [i]), &parsed [valid], &err) == 0)
            valid++;
        else
        if (funnel_log_every (&self->last_warn, 1000))
            log_warn ("from %s: skipped a malformed event: %s", upstream_name (upstream),
                      err.message);
    }
    funnel_error_t err;
    funnel_error_clear (&err);
    int rc = funnel_engine_consume (self->engine, upstream_name (upstream), parsed, valid,
                                    last_seq, &err);
    for (size_t i = 0; i < count; i++)
        event_codec_destroy (&decoded [i]);
    free (decoded);
    free (parsed);
    if (rc != 0) {
        if (funnel_engine_lost (self->engine))
            self->fatal = true;
        if (funnel_log_every (&self->last_warn, 1000))
            log_warn ("from %s: %s", upstream_name (upstream), err.message);
    }
    return rc == 0 ? 0 : -1;
}

static int
s_on_upstream (zloop_t *loop, zsock_t *reader, void *arg)
{
    (void) loop;
    (void) reader;
    upstream_drain ((upstream_t *) arg);
    return 0;
}

static int
s_on_upstream_set (zloop_t *loop, zsock_t *reader, void *arg)
{
    (void) loop;
    (void) reader;
    upstream_set_drain ((upstream_set_t *) arg);
    return 0;
}

static int
s_on_replay (zloop_t *loop, zsock_t *reader, void *arg)
{
    (void) loop;
    (void) reader;
    upstream_on_replay ((upstream_t *) arg);
    return 0;
}

//  One `$hb`; part >= 0: that partition's (with instances, one per
//  owned partition, its own seq).
static void
s_publish_heartbeat (service_t *self, int part)
{
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init (&sbuf);
    msgpack_packer pk;
    msgpack_packer_init (&pk, &sbuf, msgpack_sbuffer_write);
    msgpack_pack_map (&pk, 3 + (part >= 0));
    event_codec_pack_cstr (&pk, "svc");
    event_codec_pack_cstr (&pk, self->def->name);
    event_codec_pack_cstr (&pk, "seq");
    msgpack_pack_uint64 (&pk, part >= 0 ? funnel_engine_part_seq (self->engine, part)
                                        : self->seq);
    if (part >= 0) {
        event_codec_pack_cstr (&pk, "part");
        msgpack_pack_uint32 (&pk, (uint32_t) part);
    }
    event_codec_pack_cstr (&pk, "ts");
    msgpack_pack_int64 (&pk, s_now_ms ());
    void *pub = zsock_resolve (self->pub);
    zmq_send (pub, "$hb", 3, ZMQ_SNDMORE);
    zmq_send (pub, sbuf.data, sbuf.size, 0);
    msgpack_sbuffer_destroy (&sbuf);
}

static int
s_on_second (zloop_t *loop, int timer_id, void *arg)
{
    (void) loop;
    (void) timer_id;
    service_t *self = (service_t *) arg;
    if (funnel_topology_partitioned (self->topology)) {
        for (int p = 0; p < funnel_topology_partitions (self->topology); p++)
            if (self->instance->owns [p])
                s_publish_heartbeat (self, p);
    }
    else
        s_publish_heartbeat (self, -1);
    if (self->synced)
        for (int u = 0; u < self->upstream_count; u++)
            upstream_flush (self->upstreams [u]);
    funnel_notify_tick ();          //  The loop is alive
    return 0;
}

//  Housekeeping every 50 ms: reconnect Redis, catch up upstreams, stop.
static int
s_on_housekeeping (zloop_t *loop, int timer_id, void *arg)
{
    (void) loop;
    (void) timer_id;
    service_t *self = (service_t *) arg;
    if (!funnel_engine_connected (self->engine))
        self->synced = false;
    if (!funnel_engine_synced (self->engine))
        self->synced = false;
    if (!self->synced && !self->fatal && funnel_engine_connect (self->engine) == 0)
        s_sync (self);
    if (self->synced) {
        funnel_engine_cron (self->engine);      //  Timers, lease renewals
        self->seq = funnel_engine_seq (self->engine);
    }
    if (funnel_engine_lost (self->engine))
        self->fatal = true;
    if (self->fatal)
        return -1;
    if (self->busy && zclock_mono () - self->last_api > 1000) {
        self->busy = false;
        s_consume_batch (self, self->consume_batch);
    }
    if (self->synced)
        for (int u = 0; u < self->upstream_count; u++)
            upstream_catch_up (self->upstreams [u], 10);
    return 0;
}

//  ---------------------------------------------------------------------
//  Start and stop

static zsock_t *
s_bind (int type, const char *endpoint, const char *what)
{
    //  Options before bind: a constructor's "@endpoint" would bind first
    zsock_t *sock = zsock_new (type);
    zsock_set_linger (sock, 1000);
    if (type == ZMQ_ROUTER) {
        zsock_set_maxmsgsize (sock, 2 * FUNNEL_FRAME_MAX_BYTES);
        zsock_set_router_mandatory (sock, 0);
        zsock_set_sndhwm (sock, 10000);
        zsock_set_rcvhwm (sock, 10000);
    }
    else
        zsock_set_sndhwm (sock, 100000);
    zsock_set_heartbeat_ivl (sock, 1000);
    zsock_set_heartbeat_timeout (sock, 3000);
    if (funnel_curve_server (sock, endpoint, type == ZMQ_ROUTER ? FUNNEL_CURVE_DOMAIN_API
                                                                : FUNNEL_CURVE_DOMAIN_PUB) != 0)
        zsock_destroy (&sock);
    else
    if (zsock_bind (sock, "%s", endpoint) < 0) {
        log_error ("cannot bind %s socket at %s: %s", what, endpoint, zmq_strerror (zmq_errno ()));
        zsock_destroy (&sock);
    }
    return sock;
}

//  The engine's settings (proto/README.md): read and checked before any
//  bind, so a bad value exits 2 even when the endpoints are taken.
static int
s_read_settings (service_t *self)
{
    const char *name = self->def->name;
    //  (partitions: the topology reads it, with the instances that own them)
    int64_t values [9] = { 100000, 5000, RETENTION_DEFAULT, DEDUP_TTL_DEFAULT,
                           1024LL * 1024 * 1024, 90, 1096, CONSUME_BATCH, CONSUME_BATCH_BUSY };
    const char *keys [9] = { "cache_entries", "lease_ms", "retention",
                             "dedup_ttl_s", "outbox_max_bytes",
                             //  Stage series: hourly buckets kept 90 days, daily 3 years
                             "series_hourly_days", "series_daily_days",
                             "consume_batch", "consume_batch_busy" };
    const int64_t mins [9] = { 1, 300, 1, 1, 1024, 1, 1, 1, 1 };
    const int64_t maxs [9] = { 100000000, 600000, INT64_MAX / 2, INT64_MAX / 2000,
                               INT64_MAX / 2, 36600, 36600, 1000, 1000 };
    for (int i = 0; i < 9; i++) {
        char path [128];
        snprintf (path, sizeof path, "%s/%s", name, keys [i]);
        if (funnel_config_int (self->config, path, values [i], &values [i]))
            return -1;
        if (values [i] < mins [i] || values [i] > maxs [i]) {
            log_error ("%s = %" PRId64 ": must be %" PRId64 "..%" PRId64, path, values [i],
                       mins [i], maxs [i]);
            return -1;
        }
    }
    char path [128];
    snprintf (self->default_prefix, sizeof self->default_prefix, "{funnel:%s}:", name);
    snprintf (path, sizeof path, "%s/prefix", name);
    self->cfg = (funnel_engine_cfg_t) {
        .svc = name,
        .prefix = funnel_config_get (self->config, path, self->default_prefix),
        .cache_max = (size_t) values [0],
        .lease_ms = (int) values [1],
        .retention = values [2],
        .dedup_ttl_s = values [3],
        .outbox_max_bytes = values [4],
        .series_hour_s = values [5] * 86400,
        .series_day_s = values [6] * 86400
    };
    //  redis/acks: replicas to WAIT for before a reply (proto/wire.md,
    //  "Redis deployments"); shared by every service of the deployment
    int64_t acks = 0, acks_timeout = 1000;
    if (funnel_config_int (self->config, "redis/acks", 0, &acks)
    ||  funnel_config_int (self->config, "redis/acks_timeout_ms", 1000, &acks_timeout))
        return -1;
    if (acks < 0 || acks > 64) {
        log_error ("redis/acks = %" PRId64 ": must be 0..64", acks);
        return -1;
    }
    if (acks_timeout < 10 || acks_timeout > 60000) {
        log_error ("redis/acks_timeout_ms = %" PRId64 ": must be 10..60000", acks_timeout);
        return -1;
    }
    self->cfg.acks = (int) acks;
    self->cfg.acks_timeout_ms = (int) acks_timeout;
    self->consume_batch = (int) values [7];
    self->consume_batch_busy = (int) values [8];
    return 0;
}

static void
s_destroy (service_t *self)
{
    //  A set's streams are its own; the others are ours
    for (int u = 0; u < self->upstream_count; u++) {
        bool in_set = false;
        for (int s = 0; s < self->set_count && !in_set; s++)
            for (int p = 0; p < upstream_set_count (self->sets [s]) && !in_set; p++)
                in_set = upstream_set_part (self->sets [s], p) == self->upstreams [u];
        if (!in_set)
            upstream_destroy (&self->upstreams [u]);
    }
    free (self->upstreams);
    for (int s = 0; s < self->set_count; s++)
        upstream_set_destroy (&self->sets [s]);
    funnel_topology_destroy (&self->topology);
    zsock_destroy (&self->api);
    zsock_destroy (&self->pub);
    msgpack_sbuffer_destroy (&self->pub_buf);
    funnel_engine_destroy (&self->engine);
    if (self->def->rules->teardown)
        self->def->rules->teardown (&self->rules_arg);
    redis_store_destroy (&self->store);
    redis_cluster_destroy (&self->cluster);
    funnel_config_destroy (&self->config);
    funnel_curve_teardown ();           //  After every socket is closed
}

//  Builds sockets, store and upstreams; returns an exit code, 0 = run.
static int
s_start (service_t *self)
{
    const char *name = self->def->name;
    const char *url = funnel_config_redis_url (self->config, name);
    redis_url_t parsed;
    funnel_error_t err;
    if (redis_url_parse (url, &parsed, &err) != 0) {
        log_error ("%s", err.message);
        return 2;
    }
    if (redis_auth_apply (self->config, name, &parsed) != 0)
        return 2;
    //  The rules' settings are checked here too, before any bind
    if (s_read_settings (self) != 0
    ||  (self->def->rules->setup
         && self->def->rules->setup (self->config, name, &self->rules_arg) != 0)) {
        log_error ("bad settings in the [%s] section; see --help", name);
        return 2;
    }
    //  Scale-out (proto/README.md section 7): which instance we are
    char path [128];
    self->topology = funnel_topology_new (self->config, name);
    if (!self->topology)
        return 2;
    snprintf (path, sizeof path, "%s/consume_batch", name);
    if (funnel_topology_count (self->topology) > 1 && !funnel_config_get (self->config, path, NULL))
        self->consume_batch = CONSUME_BATCH_OCC;
    if (self->consume_batch_busy > self->consume_batch)
        self->consume_batch_busy = self->consume_batch;
    self->cfg.partitions = funnel_topology_partitions (self->topology);
    snprintf (path, sizeof path, "%s/instance", name);
    const char *wanted = funnel_config_get (self->config, path, NULL);
    self->instance = funnel_topology_find (self->topology, wanted);
    if (!self->instance) {
        if (funnel_topology_partitioned (self->topology)) {
            //  Name the instances there are, so the fix is obvious
            char names [512] = "";
            for (int i = 0; i < funnel_topology_count (self->topology); i++) {
                size_t len = strlen (names);
                snprintf (names + len, sizeof names - len, "%s%s", i ? ", " : "",
                          funnel_topology_at (self->topology, i)->name);
            }
            if (wanted && *wanted)
                log_error ("%s = '%s': no such instance in %s/instances; run one with "
                           "--instance NAME (one of: %s)", path, wanted, name, names);
            else
                log_error ("%s: instances are listed; run one with --instance NAME "
                           "(one of: %s)", path, names);
        }
        else
            log_error ("--instance %s: the [%s] section lists no instances", wanted, name);
        return 2;
    }
    snprintf (self->subscriber, sizeof self->subscriber, "%s%s%s", name,
              *self->instance->name ? "@" : "", self->instance->name);
    self->cfg.owns = self->instance->owns;
    self->cfg.part_outbox = funnel_topology_partitioned (self->topology);
    if (parsed.mode == REDIS_MODE_CLUSTER) {
        //  A cluster spreads partitions: each needs its own outbox, seq and
        //  checkpoints (instances); a commit there is one transaction per
        //  slot (proto/wire.md, "Cluster")
        if (!self->cfg.part_outbox) {
            log_error ("redis url lists %d nodes (a Redis Cluster): the [%s] section must "
                       "list its instances (one instance owning every partition is enough) "
                       "so that each partition has its own outbox; see proto/wire.md, "
                       "\"Cluster\"", parsed.node_count, name);
            return 2;
        }
    }
    //  WAIT blocks up to acks_timeout_ms: the reply must not time out first
    int timeout_ms = self->cfg.acks > 0 && self->cfg.acks_timeout_ms + 1000 > 2000
                   ? self->cfg.acks_timeout_ms + 1000 : 0;
    if (parsed.mode == REDIS_MODE_CLUSTER) {
        self->cluster = redis_cluster_new (&parsed);
        if (timeout_ms)
            redis_cluster_set_timeout (self->cluster, timeout_ms);
    }
    else {
        self->store = redis_store_new (&parsed);
        if (timeout_ms)
            redis_store_set_timeout (self->store, timeout_ms);
    }
    const char *api = self->instance->api;
    const char *pub = self->instance->pub;
    int rc = funnel_curve_setup (self->config, name);     //  ZAP before any bind
    if (rc != 0)
        return rc;
    self->api = s_bind (ZMQ_ROUTER, api, "api");
    self->pub = s_bind (ZMQ_PUB, pub, "pub");
    if (!self->api || !self->pub)
        return 1;
    s_engine_new (self, api);
    self->upstreams = (upstream_t **) zmalloc (UPSTREAMS_MAX * sizeof (upstream_t *));
    for (const char *const *up = self->def->upstreams; up && *up; up++) {
        if (self->set_count == UPSTREAM_SETS_MAX)
            break;
        //  A partitioned upstream: one stream per partition (upstream_set)
        funnel_topology_t *theirs = funnel_topology_new (self->config, *up);
        if (!theirs)
            return 2;
        if (funnel_topology_partitioned (theirs)) {
            upstream_set_t *set = upstream_set_new (*up, theirs, self->def->consumes,
                                                    s_apply_upstream, self);
            funnel_topology_destroy (&theirs);
            if (!set)
                return 1;
            self->sets [self->set_count++] = set;
            for (int p = 0; p < upstream_set_count (set); p++) {
                upstream_t *part = upstream_set_part (set, p);
                upstream_set_subscriber (part, self->subscriber);
                self->upstreams [self->upstream_count++] = part;
            }
            continue;
        }
        funnel_topology_destroy (&theirs);
        upstream_t *upstream = upstream_new (*up,
            funnel_config_endpoint (self->config, *up, "api"),
            funnel_config_endpoint (self->config, *up, "pub"),
            self->def->consumes, s_apply_upstream, self);
        if (!upstream)
            return 1;
        upstream_set_subscriber (upstream, self->subscriber);
        self->upstreams [self->upstream_count++] = upstream;
    }
    s_consume_batch (self, self->consume_batch);
    //  Everything the service reads is read by now: what is left is a typo
    if (funnel_config_check_keys (self->config))
        return 2;
    if (funnel_topology_partitioned (self->topology))
        log_info ("funnel-%s %s: instance %s owning %d of %d partitions, api %s, pub %s, "
                  "%d upstream stream(s)", name, FUNNEL_VERSION, self->instance->name,
                  self->instance->owned, funnel_topology_partitions (self->topology), api, pub,
                  self->upstream_count);
    else
        log_info ("funnel-%s %s: api %s, pub %s, %d upstream(s)", name, FUNNEL_VERSION,
                  api, pub, self->upstream_count);
    return 0;
}

static int s_command (service_t *self);

//  A command from the host while serving; $TERM ends the loop.
static int
s_on_pipe (zloop_t *loop, zsock_t *reader, void *arg)
{
    (void) loop;
    (void) reader;
    service_t *self = (service_t *) arg;
    s_command (self);
    return self->terminated ? -1 : 0;
}

static void
s_run (service_t *self)
{
    zloop_t *loop = zloop_new ();
    zloop_set_nonstop (loop, true);     //  $TERM and fatal errors decide
    //  The pipe first: a waiting $TERM goes before the next request
    zloop_reader (loop, self->pipe, s_on_pipe, self);
    zloop_reader (loop, self->api, s_on_api, self);
    for (int u = 0; u < self->upstream_count; u++) {
        if (upstream_sub (self->upstreams [u]))
            zloop_reader (loop, upstream_sub (self->upstreams [u]), s_on_upstream,
                          self->upstreams [u]);
        zloop_reader (loop, upstream_replay_sock (self->upstreams [u]), s_on_replay,
                      self->upstreams [u]);
    }
    for (int s = 0; s < self->set_count; s++)
        zloop_reader (loop, upstream_set_sub (self->sets [s]), s_on_upstream_set, self->sets [s]);
    zloop_timer (loop, 1000, 0, s_on_second, self);
    zloop_timer (loop, 50, 0, s_on_housekeeping, self);
    s_on_housekeeping (loop, 0, self);
    funnel_notify_ready (self->def->name);      //  Sockets bound: serving
    //  zloop_start returns on EINTR even in nonstop mode (czmq 4.2.1)
    while (!self->terminated && !self->fatal)
        if (zloop_start (loop) == -1)
            break;
    funnel_notify_stopping ();
    zloop_destroy (&loop);
}

//  PUB of one committed output of the engine.
static void
s_pub_event (void *arg, int part, uint64_t seq, const outbox_entry_t *event)
{
    service_t *self = (service_t *) arg;
    msgpack_sbuffer *sbuf = &self->pub_buf;
    sbuf->size = 0;
    outbox_entry_pack_part (event, self->def->name, part, seq, sbuf);
    void *pub = zsock_resolve (self->pub);
    zmq_send (pub, event->type.data, event->type.size, ZMQ_SNDMORE);
    zmq_send (pub, sbuf->data, sbuf->size, 0);
    self->seq = part >= 0 ? funnel_engine_seq (self->engine) : seq;
}

//  The engine, owned by "<host>|<api endpoint>" (funnel_engine.h, Leases).
static void
s_engine_new (service_t *self, const char *api)
{
    char host [256] = "", owner [600];
    gethostname (host, sizeof host - 1);
    snprintf (owner, sizeof owner, "%s|%s", host, api);
    self->cfg.owner = owner;            //  Copied by funnel_engine_new
    self->cfg.rules_arg = self->rules_arg;
    self->engine = funnel_engine_new (&self->cfg, self->def->rules, self->store);
    if (self->cluster)
        funnel_engine_use_cluster (self->engine, self->cluster);
    self->cfg.owner = NULL;
    funnel_engine_set_publisher (self->engine, s_pub_event, self);
    //  A predecessor that crashed on another endpoint holds its leases
    //  until they expire: wait that long before refusing to start
    self->lease_deadline = zclock_mono () + self->cfg.lease_ms + 1000;
    log_info ("engine: %d partitions, cache %zu records, lease %d ms",
              self->cfg.partitions, self->cfg.cache_max, self->cfg.lease_ms);
}

//  Takes the leases and reads seq and checkpoints, then catches up.
static void
s_sync (service_t *self)
{
    funnel_error_t err;
    funnel_error_clear (&err);
    int rc = funnel_engine_sync (self->engine, &err);
    if (rc == FUNNEL_ENGINE_LAYOUT) {
        log_error ("%s: refusing to start", err.message);
        self->fatal = true;
        return;
    }
    if (rc == FUNNEL_ENGINE_LEASE_HELD) {
        if (!self->synced_once && zclock_mono () < self->lease_deadline) {
            if (!self->lease_waiting)
                log_warn ("%s; waiting up to its lease for it to expire", err.message);
            self->lease_waiting = true;
            return;
        }
        log_error ("%s: %s", err.message, self->synced_once
                   ? "stepping down" : "refusing to start (one writer per partition)");
        self->fatal = true;
        return;
    }
    if (rc != 0) {
        if (funnel_engine_lost (self->engine))
            self->fatal = true;
        return;
    }
    self->seq = funnel_engine_seq (self->engine);
    for (int u = 0; u < self->upstream_count; u++) {
        uint64_t checkpoint = funnel_engine_checkpoint (self->engine,
                                                        upstream_name (self->upstreams [u]));
        upstream_start (self->upstreams [u], checkpoint);
        log_info ("upstream %s: resuming after seq %" PRIu64,
                  upstream_name (self->upstreams [u]), checkpoint);
    }
    self->synced = true;
    self->synced_once = true;
    log_info ("state in Redis: last seq %" PRIu64 " (leases held)", self->seq);
}

//  ---------------------------------------------------------------------
//  The actor: commands from the host

//  The port of a socket's bound tcp endpoint, -1 if none
static int
s_port (zsock_t *sock)
{
    char *endpoint = sock ? zsock_last_endpoint (sock) : NULL;
    const char *colon = endpoint && strncmp (endpoint, "tcp://", 6) == 0
                      ? strrchr (endpoint, ':') : NULL;
    int port = colon ? atoi (colon + 1) : -1;
    zstr_free (&endpoint);
    return port > 0 ? port : -1;
}

//  CONFIGURE path: the ZPL file alone (no environment, no flags)
static funnel_config_t *
s_config_file (service_t *self, const char *path)
{
    zchunk_t *chunk = path ? zchunk_slurp (path, 0) : NULL;
    char *text = chunk ? zchunk_strdup (chunk) : NULL;
    zchunk_destroy (&chunk);
    funnel_config_t *config = NULL;
    if (text)
        config = funnel_config_from_text (text, self->def->name);
    else
        log_error ("cannot read the config file %s", path ? path : "(none)");
    zstr_free (&text);
    return config;
}

//  Takes a config (the actor owns it from now); signals 0, or 2 if none
static void
s_set_config (service_t *self, funnel_config_t *config)
{
    if (self->running) {
        log_error ("a running service takes no new config");
        funnel_config_destroy (&config);
        zsock_signal (self->pipe, 2);
        return;
    }
    funnel_config_destroy (&self->config);
    self->config = config;
    zsock_signal (self->pipe, config ? 0 : 2);
}

static void
s_start_command (service_t *self)
{
    if (!self->config) {
        log_error ("START before CONFIG or CONFIGURE");
        zsock_signal (self->pipe, 2);
        return;
    }
    //  Once only: a START that failed left things half built
    if (self->start_rc < 0)
        self->start_rc = s_start (self);
    self->running = self->start_rc == 0;
    zsock_signal (self->pipe, (byte) self->start_rc);
}

static void
s_report_stopped (service_t *self)
{
    if (!self->reported)
        zsock_send (self->pipe, "si", "STOPPED", self->fatal ? 1 : 0);
    self->reported = true;
}

//  Handles one command from the pipe (funnel_service.h lists them).
static int
s_command (service_t *self)
{
    zmsg_t *msg = zmsg_recv (self->pipe);
    if (!msg) {
        if (zmq_errno () != EINTR)
            self->terminated = true;    //  The context is ending
        return 0;
    }
    char *command = zmsg_popstr (msg);
    if (!command || streq (command, "$TERM"))
        self->terminated = true;
    else
    if (streq (command, "CONFIG")) {
        funnel_config_t *config = NULL;
        zframe_t *frame = zmsg_pop (msg);
        if (frame && zframe_size (frame) == sizeof config)
            memcpy (&config, zframe_data (frame), sizeof config);
        zframe_destroy (&frame);
        s_set_config (self, config);
    }
    else
    if (streq (command, "CONFIGURE")) {
        char *path = zmsg_popstr (msg);
        s_set_config (self, self->running ? NULL : s_config_file (self, path));
        zstr_free (&path);
    }
    else
    if (streq (command, "START"))
        s_start_command (self);
    else
    if (streq (command, "ENDPOINT")) {
        char *kind = zmsg_popstr (msg);
        zsock_t *sock = kind && streq (kind, "pub") ? self->pub : self->api;
        char *endpoint = sock ? zsock_last_endpoint (sock) : NULL;
        zstr_send (self->pipe, endpoint ? endpoint : "");
        zstr_free (&endpoint);
        zstr_free (&kind);
    }
    else
    if (streq (command, "PORT")) {
        char *kind = zmsg_popstr (msg);
        zsock_send (self->pipe, "i", s_port (kind && streq (kind, "pub") ? self->pub : self->api));
        zstr_free (&kind);
    }
    else
        log_warn ("service actor: unknown command '%.32s' ignored", command);
    zstr_free (&command);
    zmsg_destroy (&msg);
    return 0;
}

void
funnel_service_actor (zsock_t *pipe, void *args)
{
    const funnel_service_def_t *def = (const funnel_service_def_t *) args;
    assert (def && def->rules);         //  A service is its rules
    service_t self = { .def = def, .pipe = pipe, .started = zclock_mono (), .start_rc = -1 };
    zsock_signal (pipe, 0);             //  zactor_new waits for this
    while (!self.running && !self.terminated)
        s_command (&self);
    if (self.running) {
        s_run (&self);
        if (!self.fatal) {
            funnel_engine_release (self.engine);
            log_info ("stopped cleanly at seq %" PRIu64, self.seq);
        }
    }
    s_destroy (&self);
    //  Stopped on its own (a fatal error): say so, then answer until $TERM
    if (!self.terminated)
        s_report_stopped (&self);
    while (!self.terminated)
        s_command (&self);
    s_report_stopped (&self);
}

//  ---------------------------------------------------------------------
//  The daemon: flags and signals around the actor

//  Waits for SIGTERM/SIGINT or for the service to stop on its own; then
//  stops it and returns its exit code (STOPPED's).
static int
s_wait_stopped (zactor_t *service)
{
    zmq_pollitem_t item = { zsock_resolve (service), 0, ZMQ_POLLIN, 0 };
    //  A bounded wait: a signal between the check and the poll is seen
    //  at the next turn instead of never
    while (!funnel_stop && zmq_poll (&item, 1, 500) <= 0)
        ;
    if (funnel_stop)
        zstr_send (service, "$TERM");   //  A no-op if it stopped already
    char *event = NULL;
    int code = 1;
    //  The actor always says STOPPED before it ends; a second signal
    //  interrupts the receive, which is taken again
    while (!event || !streq (event, "STOPPED")) {
        zstr_free (&event);
        if (zsock_recv (service, "si", &event, &code) != 0 && zmq_errno () != EINTR)
            break;
    }
    zstr_free (&event);
    return code;
}

int
funnel_service_main (int argc, char **argv, const funnel_service_def_t *def)
{
    assert (def && def->rules);         //  A service is its rules
    funnel_signals_init ();
    zsys_set_logstream (stderr);

    funnel_config_about_t about = { def->name, def->summary, def->extra_help };
    funnel_config_status_t status;
    funnel_config_t *config = funnel_config_load (argc, argv, &about, &status);
    if (status != FUNNEL_CONFIG_OK)
        return status == FUNNEL_CONFIG_EXIT_OK ? 0 : 2;
    funnel_log_level_t level = FUNNEL_LOG_INFO;
    funnel_log_level_parse (funnel_config_get (config, "log/level", "info"), &level);
    funnel_log_init (def->name, level);

    //  Only this thread takes the stop signals: the actor's inherits the mask
    sigset_t block, saved;
    sigemptyset (&block);
    sigaddset (&block, SIGINT);
    sigaddset (&block, SIGTERM);
    pthread_sigmask (SIG_BLOCK, &block, &saved);
    zactor_t *service = zactor_new (funnel_service_actor, (void *) def);
    pthread_sigmask (SIG_SETMASK, &saved, NULL);

    zsock_send (service, "sp", "CONFIG", config);       //  The actor owns it now
    int rc = zsock_wait (service);
    if (rc == 0) {
        zstr_send (service, "START");
        rc = zsock_wait (service);
    }
    if (rc == 0)
        rc = s_wait_stopped (service);
    zactor_destroy (&service);
    return rc;
}
