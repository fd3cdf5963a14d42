/*  upstream — see upstream.h for why. */
#include "upstream.h"
#include "event_codec.h"
#include "funnel_curve.h"
#include "funnel_log.h"

#define DRAIN_MAX       UPSTREAM_BATCH_MAX
#define REPLAY_LIMIT    1000
#define REPLAY_TIMEOUT  2000        //  ms before a REPLAY is given up
#define BACKOFF_MIN     250         //  ms after a failed REPLAY, doubling
#define BACKOFF_MAX     5000
#define ACK_MS          2000        //  A registered subscriber's position, this often

struct _upstream_t {
    char *name;                     //  "<svc>", or "<svc>:<part>" for one partition
    char *api;
    int part;                       //  The upstream partition followed, -1: the whole service
    const char *const *consumes;
    upstream_apply_fn *apply;
    void *arg;
    zsock_t *sub;
    //  REPLAY runs asynchronously so a dead upstream never stalls the
    //  owner's loop. A late reply to a request given up on is still good
    //  data: pages are applied only from exactly `expected` on, so any
    //  reply, stale or not, is safe to apply.
    zsock_t *dealer;
    bool in_flight;
    int64_t sent_at;
    int64_t next_try;               //  zclock_mono; 0 = now
    int backoff;                    //  ms, 0 = none
    uint64_t expected;              //  Next seq to apply
    uint64_t persisted;             //  Checkpoint known to be in Redis
    uint64_t head;                  //  Highest seq announced
    bool need_replay;
    int64_t last_rx;                //  zclock_mono of the last message
    int64_t last_warn;
    char *subscriber;               //  Name registered with the upstream, or NULL
    bool acking;                    //  The REPLAY in flight is an ack (limit 0)
    int64_t last_ack;
    //  Live events offered and not yet applied (upstream_offer, _settle):
    //  kept decoded (their bytes are the decoded copy's), so the apply
    //  callback takes them from upstream_held instead of decoding again
    event_codec_t *held [DRAIN_MAX];
    bool settling;                  //  The apply callback runs on held
    const char *events [DRAIN_MAX];
    size_t sizes [DRAIN_MAX];
    size_t count;
    int batch_max;                  //  Live events per batch, 1..DRAIN_MAX
    uint64_t first;
};

//  Upstream replies are our own services' output, but still bytes from the
//  network: decoded through the same guard, with room for 1000 events.
static const event_codec_limits_t s_replay_limits = {
    .max_bytes = 80u * 1024 * 1024, .str_max = FUNNEL_STR_MAX,
    .entries_max = REPLAY_LIMIT, .top_entries_max = REPLAY_LIMIT,
    .elem_max_bytes = 0, .depth_max = FUNNEL_DEPTH_MAX + 2
};

static int s_connect_dealer (upstream_t *self);
static int s_dealer_connect (upstream_t *self);

//  A SUB for an upstream's PUB, not connected yet; NULL if CURVE cannot
//  be set up (logged).
zsock_t *
upstream_sub_socket (const char *name)
{
    zsock_t *sub = zsock_new (ZMQ_SUB);
    //  No receive high-water mark. libzmq 4.3.4 aborts the whole process
    //  (assertion _input_stopped, stream_engine_base.cpp:417; libzmq issue
    //  3937, fixed upstream after 4.3.4) when a connecting socket's engine
    //  stopped reading because its pipe was full, the connection then
    //  dropped (the publisher restarted, or a heartbeat timed out while we
    //  were busy applying) and the pipe drained after the reconnect. A pipe
    //  that is never full never stops the engine. The cost: a subscriber far
    //  behind holds its backlog in memory instead of in the publisher's
    //  queue (which would drop it and make us REPLAY it anyway).
    zsock_set_rcvhwm (sub, 0);
    zsock_set_maxmsgsize (sub, FUNNEL_EVENT_MAX_BYTES + 1024);
    zsock_set_reconnect_ivl_max (sub, 2000);
    zsock_set_heartbeat_ivl (sub, 1000);
    zsock_set_heartbeat_timeout (sub, 3000);
    //  Everything: seq is per publisher, so skipping a topic would look
    //  like a gap. Unconsumed types just advance the position.
    zsock_set_subscribe (sub, "");
    if (funnel_curve_client (sub, name) != 0)
        zsock_destroy (&sub);
    return sub;
}

upstream_t *
upstream_new_part (const char *name, int part, const char *api,
                   const char *const *consumes, upstream_apply_fn *apply, void *arg)
{
    upstream_t *self = (upstream_t *) zmalloc (sizeof (upstream_t));
    self->name = zsys_sprintf ("%s:%d", name, part);
    self->api = strdup (api);
    self->part = part;
    self->consumes = consumes;
    self->apply = apply;
    self->arg = arg;
    self->expected = 1;
    self->batch_max = DRAIN_MAX;
    self->need_replay = true;
    self->last_rx = zclock_mono ();
    if (s_connect_dealer (self) != 0)
        upstream_destroy (&self);
    return self;
}

upstream_t *
upstream_new (const char *name, const char *api, const char *pub,
              const char *const *consumes, upstream_apply_fn *apply, void *arg)
{
    upstream_t *self = (upstream_t *) zmalloc (sizeof (upstream_t));
    self->name = strdup (name);
    self->api = strdup (api);
    self->part = -1;
    self->consumes = consumes;
    self->apply = apply;
    self->arg = arg;
    self->expected = 1;
    self->batch_max = DRAIN_MAX;
    self->need_replay = true;       //  Nothing applied live before upstream_start
    self->last_rx = zclock_mono ();
    self->sub = upstream_sub_socket (name);
    if (!self->sub || zsock_connect (self->sub, "%s", pub) != 0) {
        log_error ("upstream %s: cannot connect to %s", name, pub);
        upstream_destroy (&self);
        return NULL;
    }
    if (s_connect_dealer (self) != 0)
        upstream_destroy (&self);
    return self;
}

//  The REPLAY socket, connected to self->api.
static int
s_connect_dealer (upstream_t *self)
{
    zsock_destroy (&self->dealer);
    self->in_flight = false;
    self->acking = false;
    self->dealer = zsock_new (ZMQ_DEALER);
    zsock_set_linger (self->dealer, 0);
    //  A DEALER with no peer to send to blocks in send; the owner's loop
    //  must not: a request that cannot go now is a failed REPLAY (backoff)
    zsock_set_sndtimeo (self->dealer, 0);
    zsock_set_maxmsgsize (self->dealer, 80 * 1024 * 1024);
    zsock_set_reconnect_ivl_max (self->dealer, 2000);
    zsock_set_heartbeat_ivl (self->dealer, 1000);
    zsock_set_heartbeat_timeout (self->dealer, 3000);
    if (s_dealer_connect (self) != 0) {
        log_error ("upstream %s: cannot connect to %s", self->name, self->api);
        return -1;
    }
    return 0;
}

//  The dealer onto self->api; the curve server key is the upstream
//  service's (the name up to ':').
static int
s_dealer_connect (upstream_t *self)
{
    char svc [64];
    snprintf (svc, sizeof svc, "%.*s", (int) strcspn (self->name, ":"), self->name);
    if (funnel_curve_client (self->dealer, svc) != 0
    ||  zsock_connect (self->dealer, "%s", self->api) != 0)
        return -1;
    return 0;
}

void
upstream_destroy (upstream_t **self_p)
{
    if (*self_p) {
        upstream_t *self = *self_p;
        zsock_destroy (&self->sub);
        zsock_destroy (&self->dealer);
        for (size_t i = 0; i < self->count; i++)
            event_codec_destroy (&self->held [i]);
        free (self->name);
        free (self->api);
        free (self->subscriber);
        free (self);
        *self_p = NULL;
    }
}

const char *upstream_name (upstream_t *self)      { return self->name; }

void
upstream_set_subscriber (upstream_t *self, const char *name)
{
    free (self->subscriber);
    self->subscriber = name ? strdup (name) : NULL;
}
zsock_t *upstream_sub (upstream_t *self)          { return self->sub; }
zsock_t *upstream_replay_sock (upstream_t *self)  { return self->dealer; }
uint64_t upstream_expected (upstream_t *self)     { return self->expected; }
uint64_t upstream_head (upstream_t *self)         { return self->head; }
int64_t upstream_silence_ms (upstream_t *self)    { return zclock_mono () - self->last_rx; }

void
upstream_start (upstream_t *self, uint64_t checkpoint)
{
    self->expected = checkpoint + 1;
    self->persisted = checkpoint;
    self->need_replay = true;
}

static bool
s_consumed (upstream_t *self, const char *type)
{
    for (const char *const *t = self->consumes; t && *t; t++)
        if (streq (*t, type) || streq (*t, "*"))
            return true;
    return false;
}

static uint64_t
s_uint_field (const msgpack_object *map, const char *key)
{
    const msgpack_object *v = event_codec_map_get (map, key);
    return v && v->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? v->via.u64 : 0;
}

//  Applies a batch; on failure rewinds so replay fetches it again.
static int
s_apply (upstream_t *self, const char **events, const size_t *sizes,
         size_t count, uint64_t first, uint64_t last)
{
    if (self->apply (self->arg, self, events, sizes, count, last) == 0) {
        self->persisted = last;
        return 0;
    }
    self->expected = first;
    self->need_replay = true;
    return -1;
}

void
upstream_flush (upstream_t *self)
{
    if (self->expected - 1 > self->persisted)
        s_apply (self, NULL, NULL, 0, self->persisted + 1, self->expected - 1);
}

//  A heartbeat ahead of our position means we lost the tail.
static void
s_on_heartbeat (upstream_t *self, const msgpack_object *root)
{
    uint64_t seq = s_uint_field (root, "seq");
    if (seq > self->head)
        self->head = seq;
    if (seq >= self->expected && !self->need_replay) {
        log_info ("upstream %s: heartbeat at seq %" PRIu64 ", have %" PRIu64
                  "; catching up", self->name, seq, self->expected - 1);
        self->need_replay = true;
    }
}

//  Any live message: the upstream is alive.
static void
s_alive (upstream_t *self)
{
    self->last_rx = zclock_mono ();
    self->next_try = 0;             //  It is alive: a pending retry can go now
    if (self->count == 0)
        self->first = self->expected;
}

void
upstream_offer_decoded (upstream_t *self, bool heartbeat, event_codec_t **decoded_p)
{
    event_codec_t *decoded = *decoded_p;
    *decoded_p = NULL;
    s_alive (self);
    if (heartbeat) {
        s_on_heartbeat (self, event_codec_root (decoded));
        event_codec_destroy (&decoded);
        return;
    }
    if (self->count >= (size_t) self->batch_max)
        upstream_settle (self);
    funnel_error_t err;
    funnel_event_t event;
    if (event_codec_event_parse (event_codec_root (decoded), &event, &err)) {
        if (funnel_log_every (&self->last_warn, 5000))
            log_warn ("upstream %s: dropped a malformed event: %s", self->name, err.message);
        event_codec_destroy (&decoded);
        return;
    }
    uint64_t seq = event.seq;
    if (seq > self->head)
        self->head = seq;
    if (seq == self->expected && !self->need_replay) {
        self->expected++;
        if (s_consumed (self, event.type)) {
            self->events [self->count] = (const char *) event_codec_bytes (
                decoded, &self->sizes [self->count]);
            self->held [self->count++] = decoded;
            decoded = NULL;
        }
    }
    else
    if (seq > self->expected && !self->need_replay) {
        log_info ("upstream %s: gap, got seq %" PRIu64 " expecting %" PRIu64
                  "; catching up", self->name, seq, self->expected);
        self->need_replay = true;
    }
    event_codec_destroy (&decoded);
}

event_codec_t *
upstream_live_decode (upstream_t *self, const zmq_msg_t *body)
{
    funnel_error_t err;
    event_codec_t *decoded = event_codec_decode (zmq_msg_data ((zmq_msg_t *) body),
                                                 zmq_msg_size ((zmq_msg_t *) body),
                                                 &event_codec_limits_event, &err);
    if (!decoded && funnel_log_every (&self->last_warn, 5000))
        log_warn ("upstream %s: dropped a malformed event: %s", self->name, err.message);
    return decoded;
}

int
upstream_live_recv (void *sub, zmq_msg_t *topic, zmq_msg_t *body)
{
    if (zmq_msg_recv (topic, sub, ZMQ_DONTWAIT) < 0)
        return -1;
    bool two = zmq_msg_more (topic) && zmq_msg_recv (body, sub, 0) >= 0;
    //  Anything past a second frame is not ours to read
    while (zmq_msg_more (two ? body : topic)) {
        zmq_msg_t rest;
        zmq_msg_init (&rest);
        int rc = zmq_msg_recv (&rest, sub, 0);
        bool more = rc >= 0 && zmq_msg_more (&rest);
        zmq_msg_close (&rest);
        if (!more)
            break;
    }
    return two ? 1 : 0;
}

bool
upstream_live_heartbeat (const zmq_msg_t *topic)
{
    return zmq_msg_size ((zmq_msg_t *) topic) == 3
        && memcmp (zmq_msg_data ((zmq_msg_t *) topic), "$hb", 3) == 0;
}

//  Applies what upstream_offer_decoded kept, in one batch.
void
upstream_settle (upstream_t *self)
{
    if (self->count > 0) {
        self->settling = true;
        s_apply (self, self->events, self->sizes, self->count, self->first,
                 self->expected - 1);
        self->settling = false;
    }
    for (size_t i = 0; i < self->count; i++)
        event_codec_destroy (&self->held [i]);
    self->count = 0;
    self->first = self->expected;
}

event_codec_t *
upstream_held (upstream_t *self, size_t index, const char *event)
{
    if (self->settling && index < self->count && self->events [index] == event)
        return self->held [index];
    return NULL;
}

//  Reads the live messages waiting (up to a batch) and applies them. The
//  frames are read into two zmq messages reused for the whole drain: a
//  zmsg per event (message, list, two frames, each a malloc and a copy)
//  was a tenth of a consumer's CPU, its frees another
void
upstream_batch_max (upstream_t *self, int max)
{
    self->batch_max = max < 1 ? 1 : max > DRAIN_MAX ? DRAIN_MAX : max;
}

void
upstream_drain (upstream_t *self)
{
    void *sub = zsock_resolve (self->sub);
    zmq_msg_t topic, body;
    zmq_msg_init (&topic);
    zmq_msg_init (&body);
    for (int i = 0; i < self->batch_max; i++) {
        int frames = upstream_live_recv (sub, &topic, &body);
        if (frames < 0)
            break;
        event_codec_t *decoded = frames ? upstream_live_decode (self, &body) : NULL;
        if (decoded)
            upstream_offer_decoded (self, upstream_live_heartbeat (&topic), &decoded);
        else
            s_alive (self);
    }
    zmq_msg_close (&topic);
    zmq_msg_close (&body);
    upstream_settle (self);
}

static void
s_replay_failed (upstream_t *self, const char *why)
{
    self->in_flight = false;
    self->acking = false;
    self->backoff = self->backoff ? self->backoff * 2 : BACKOFF_MIN;
    if (self->backoff > BACKOFF_MAX)
        self->backoff = BACKOFF_MAX;
    self->next_try = zclock_mono () + self->backoff;
    if (funnel_log_every (&self->last_warn, 5000))
        log_warn ("upstream %s: REPLAY at %s failed (%s); retrying", self->name,
                  self->api, why);
}

//  REPLAY from, limit; with a subscriber name the upstream also learns
//  that everything before from is applied here (and keeps the rest)
static void
s_send_request (upstream_t *self, uint64_t from, uint32_t limit)
{
    msgpack_sbuffer req;
    msgpack_sbuffer_init (&req);
    msgpack_packer pk;
    msgpack_packer_init (&pk, &req, msgpack_sbuffer_write);
    msgpack_pack_map (&pk, 2 + (self->subscriber != NULL) + (self->part >= 0));
    if (self->part >= 0) {
        event_codec_pack_cstr (&pk, "partition");
        msgpack_pack_uint32 (&pk, (uint32_t) self->part);
    }
    event_codec_pack_cstr (&pk, "from");
    msgpack_pack_uint64 (&pk, from);
    event_codec_pack_cstr (&pk, "limit");
    msgpack_pack_uint32 (&pk, limit);
    if (self->subscriber) {
        event_codec_pack_cstr (&pk, "subscriber");
        event_codec_pack_cstr (&pk, self->subscriber);
    }
    zmsg_t *msg = zmsg_new ();
    zmsg_addmem (msg, "", 0);
    zmsg_addstr (msg, "REPLAY");
    zmsg_addmem (msg, req.data, req.size);
    msgpack_sbuffer_destroy (&req);
    if (zmsg_send (&msg, self->dealer) != 0) {
        zmsg_destroy (&msg);
        s_replay_failed (self, "cannot send");
        return;
    }
    self->in_flight = true;
    self->sent_at = zclock_mono ();
}

static void
s_send_replay (upstream_t *self)
{
    self->acking = false;
    s_send_request (self, self->expected, REPLAY_LIMIT);
}

//  Applies one REPLAY page: 1 if more may follow, 0 when caught up, -1 if
//  the reply was malformed or the apply failed.
static int
s_apply_page (upstream_t *self, zframe_t *reply)
{
    funnel_error_t err;
    event_codec_t *msg = event_codec_decode (zframe_data (reply), zframe_size (reply),
                                           &s_replay_limits, &err);
    const msgpack_object *root = msg ? event_codec_root (msg) : NULL;
    const msgpack_object *list = root ? event_codec_map_get (root, "events") : NULL;
    if (!list || list->type != MSGPACK_OBJECT_ARRAY) {
        event_codec_destroy (&msg);
        return -1;
    }
    uint64_t oldest = s_uint_field (root, "first");
    if (oldest > self->expected) {
        log_error ("upstream %s: events %" PRIu64 "..%" PRIu64 " are past the upstream's "
                   "retention and are skipped", self->name, self->expected, oldest - 1);
        self->expected = oldest;
    }
    //  Re-pack the consumed events one after another, then point into them
    msgpack_sbuffer buf;
    msgpack_sbuffer_init (&buf);
    msgpack_packer bpk;
    msgpack_packer_init (&bpk, &buf, msgpack_sbuffer_write);
    size_t offsets [REPLAY_LIMIT], sizes [REPLAY_LIMIT];
    const char *events [REPLAY_LIMIT];
    size_t count = 0;
    uint64_t first = self->expected;
    for (uint32_t i = 0; i < list->via.array.size && i < REPLAY_LIMIT; i++) {
        const msgpack_object *ev = &list->via.array.ptr [i];
        uint64_t seq = s_uint_field (ev, "seq");
        if (seq < self->expected)
            continue;               //  Applied already (a stale page)
        if (seq > self->expected)
            break;                  //  Never skip: ask again from expected
        self->expected = seq + 1;
        if (seq > self->head)
            self->head = seq;
        char type [FUNNEL_ID_MAX + 1];
        if (!event_codec_obj_strcpy (event_codec_map_get (ev, "type"), type, sizeof type)
        ||  !s_consumed (self, type))
            continue;
        offsets [count] = buf.size;
        msgpack_pack_object (&bpk, *ev);
        sizes [count] = buf.size - offsets [count];
        count++;
    }
    for (size_t i = 0; i < count; i++)
        events [i] = buf.data + offsets [i];
    bool empty = list->via.array.size == 0;
    //  An empty page for another position (a late reply to an ack or to a
    //  request given up on) says nothing about ours: ask again
    if (empty && s_uint_field (root, "next") != self->expected) {
        msgpack_sbuffer_destroy (&buf);
        event_codec_destroy (&msg);
        return 1;
    }
    int applied = 0;
    if (self->expected > first)
        applied = s_apply (self, events, sizes, count, first, self->expected - 1);
    msgpack_sbuffer_destroy (&buf);
    event_codec_destroy (&msg);
    if (applied != 0)
        return -1;
    return empty ? 0 : 1;
}

//  ERR moved {api}: the partition has another owner now (a partition
//  move); REPLAY goes there from now on.
static bool
s_moved (upstream_t *self, zframe_t *body)
{
    funnel_error_t err;
    event_codec_t *msg = event_codec_decode (zframe_data (body), zframe_size (body),
                                           &event_codec_limits_event, &err);
    char code [32] = "", api [256] = "";
    if (msg) {
        event_codec_obj_strcpy (event_codec_map_get (event_codec_root (msg), "code"), code, sizeof code);
        event_codec_obj_strcpy (event_codec_map_get (event_codec_root (msg), "api"), api, sizeof api);
    }
    event_codec_destroy (&msg);
    if (!streq (code, "moved") || !*api || streq (api, self->api))
        return false;
    log_info ("upstream %s: moved from %s to %s", self->name, self->api, api);
    //  The same socket (the owner's poll loop holds it): off the old
    //  endpoint, onto the new one. A late reply from the old one is safe:
    //  pages apply only from exactly `expected` on
    zsock_disconnect (self->dealer, "%s", self->api);
    free (self->api);
    self->api = strdup (api);
    if (s_dealer_connect (self) != 0) {
        s_replay_failed (self, "cannot connect");
        return true;
    }
    self->in_flight = false;
    self->acking = false;
    self->backoff = 0;
    self->next_try = 0;
    self->need_replay = true;
    return true;
}

void
upstream_on_replay (upstream_t *self)
{
    while (zsock_events (self->dealer) & ZMQ_POLLIN) {
        zmsg_t *msg = zmsg_recv (self->dealer);
        if (!msg)
            return;
        zframe_t *empty = zmsg_pop (msg);
        zframe_t *status = zmsg_pop (msg);
        zframe_t *body = zmsg_pop (msg);
        if (self->acking) {
            self->acking = false;       //  An ack's reply: nothing to apply
            self->in_flight = false;
        }
        else
        if (status && body && zframe_streq (status, "ERR") && s_moved (self, body)) {
            zframe_destroy (&empty);
            zframe_destroy (&status);
            zframe_destroy (&body);
            zmsg_destroy (&msg);
            return;                     //  The dealer was replaced
        }
        else
        if (self->need_replay) {
            int rc = -1;
            if (status && body && zframe_streq (status, "OK"))
                rc = s_apply_page (self, body);
            if (rc < 0)
                s_replay_failed (self, status && zframe_streq (status, "OK")
                                       ? "bad page or apply failed" : "error reply");
            else {
                self->in_flight = false;
                self->backoff = 0;
                if (rc > 0)
                    s_send_replay (self);       //  Straight on to the next page
                else {
                    self->need_replay = false;
                    log_debug ("upstream %s: caught up at seq %" PRIu64, self->name,
                               self->expected - 1);
                }
            }
        }
        zframe_destroy (&empty);
        zframe_destroy (&status);
        zframe_destroy (&body);
        zmsg_destroy (&msg);
    }
}

bool
upstream_catch_up (upstream_t *self, int max_pages)
{
    (void) max_pages;
    upstream_on_replay (self);          //  For owners that do not poll the socket
    int64_t now = zclock_mono ();
    if (!self->need_replay) {
        //  Live: tell the upstream where we are now and then
        if (self->subscriber && !self->in_flight && now - self->last_ack >= ACK_MS) {
            self->last_ack = now;
            self->acking = true;
            s_send_request (self, self->persisted + 1, 1);
        }
        else
        if (self->acking && now - self->sent_at > REPLAY_TIMEOUT) {
            self->acking = false;
            self->in_flight = false;
        }
        return false;
    }
    if (self->in_flight) {
        if (now - self->sent_at > REPLAY_TIMEOUT)
            s_replay_failed (self, "no reply");
    }
    else
    if (now >= self->next_try)
        s_send_replay (self);
    return true;
}
