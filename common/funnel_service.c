/*  funnel_service — see funnel_service.h for what it does.

    Single-threaded by design: one zloop owns the API, PUB and SUB sockets
    and the one Redis connection. Each request is handled to the end (one
    EVALSHA) before the next, so the order of applies is the order of
    requests, a stop signal always falls between two requests, and no lock
    is needed anywhere. Throughput comes from batching, not threads.
*/
#include "funnel_service.h"
#include "funnel_notify.h"
#include "event_codec.h"
#include "funnel_authz.h"
#include "funnel_curve.h"
#include "funnel_log.h"
#include "funnel_signals.h"
#include "redis_auth.h"
#include "redis_store.h"
#include "script_args.h"
#include "upstream.h"

#define UPSTREAMS_MAX       8
#define API_BURST           64          //  Requests handled per wakeup
#define REPLAY_DEFAULT      1000
#define PIPELINE_MAX        4           //  PUBLISH applies in flight to Redis
#define RETENTION_DEFAULT   1000000
#define DEDUP_TTL_DEFAULT   (8 * 24 * 3600)     //  ids kept ≥ 7 days

//  A PUBLISH whose apply was sent to Redis and whose reply is not read yet:
//  what is needed to answer it (envelope) and what its arguments point
//  into (args, decoded body).
typedef struct {
    zmsg_t *envelope;
    script_args_t *args;
    funnel_msg_t *msg;
} pending_t;

typedef struct {
    const funnel_service_def_t *def;
    funnel_config_t *config;
    redis_store_t *store;
    zsock_t *api;
    zsock_t *pub;
    upstream_t *upstreams [UPSTREAMS_MAX];
    int upstream_count;
    char seq_key [128];                 //  KEYS[1]: <prefix>seq
    msgpack_sbuffer runtime_args;       //  ARGV[4]: {retention, dedup_ttl, rules}
    uint64_t seq;                       //  Last seq published
    bool synced;                        //  seq and checkpoints read since connect
    bool script_failed;                 //  Last s_eval failed in the script
    bool outcome_unknown;               //  Last apply was sent, its reply lost
    char refused [160];                 //  Last apply refused by Redis (OOM...), or ""
    //  Consecutive PUBLISH applies are pipelined: Redis runs one while we
    //  check the next request and publish the previous one's outputs
    pending_t pending [PIPELINE_MAX];
    int pending_count;
    int64_t started;
    int64_t last_warn;
    //  The C engine (def->rules), NULL for the Lua one
    funnel_engine_t *engine;
    int64_t series_hour_s, series_day_s;    //  Series keeps (s), both engines
    int64_t lease_deadline;             //  Give up waiting for leases then
    bool lease_waiting;                 //  Logged "waiting" once
    bool fatal;                         //  Stop with exit code 1
    bool synced_once;                   //  The engine ran: a lease lost now is a step-down
    void *rules_arg;                    //  The C rules' settings (rules->setup)
    funnel_peer_t peer;                 //  Who sent the request being handled
} service_t;


static int64_t
s_now_ms (void)
{
    return zclock_time ();
}

//  ---------------------------------------------------------------------
//  Redis: every call goes through the one script

//  The fixed arguments of every call: KEYS[1], mode, now, service, runtime
//  settings; the caller appends the mode's own.
static script_args_t *
s_args_new (service_t *self, const char *mode)
{
    char now [32];
    snprintf (now, sizeof now, "%" PRId64, s_now_ms ());
    script_args_t *args = script_args_new ();
    script_args_add (args, self->seq_key, strlen (self->seq_key));
    script_args_add (args, mode, strlen (mode));
    script_args_add_copy (args, now);
    script_args_add (args, self->def->name, strlen (self->def->name));
    script_args_add (args, self->runtime_args.data, self->runtime_args.size);
    return args;
}

static void
s_reset_outcome (service_t *self)
{
    self->script_failed = false;
    self->outcome_unknown = false;
    self->refused [0] = 0;
}

//  Redis refusing to run anything now (memory, disk, role, start-up, a
//  busy script, a refused transaction): retry later, not a bug
static bool
s_store_refusal (const char *text)
{
    const char *tokens [] = { "OOM ", "MISCONF", "READONLY", "LOADING", "BUSY",
                              "MASTERDOWN", "NOREPLICAS", "EXECABORT", "TRYAGAIN", NULL };
    for (const char *const *t = tokens; *t; t++)
        if (strstr (text, *t))
            return true;
    return false;
}

//  A reply of the script's shape, else NULL (the failure logged, once).
static redisReply *
s_checked (service_t *self, redisReply *reply, script_args_t *args)
{
    if (reply && reply->type == REDIS_REPLY_ERROR && s_store_refusal (reply->str)) {
        //  Refused before anything was written (the overlay writes last)
        snprintf (self->refused, sizeof self->refused, "%s", reply->str);
        if (funnel_log_every (&self->last_warn, 1000))
            log_warn ("redis refused an apply: %s", reply->str);
        freeReplyObject (reply);
        return NULL;
    }
    if (reply && (reply->type != REDIS_REPLY_ARRAY || reply->elements < 2
              ||  reply->element [0]->type != REDIS_REPLY_STRING)) {
        const char *mode = script_args_argv (args) [1];
        log_error ("rules script failed in %s: %s", mode,
                   reply->type == REDIS_REPLY_ERROR ? reply->str : "unexpected reply");
        freeReplyObject (reply);
        reply = NULL;
        self->script_failed = true;
    }
    return reply;
}

static void s_complete_pending (service_t *self);
static void s_complete_pending_to (service_t *self, int keep);

//  Runs the script with args (destroyed here); NULL if Redis is
//  unavailable or the script failed (script_failed says which).
static redisReply *
s_eval (service_t *self, script_args_t **args_p)
{
    s_complete_pending (self);          //  Never interleave with the pipeline
    script_args_t *args = *args_p;
    s_reset_outcome (self);
    redisReply *reply = NULL;
    if (redis_store_connect (self->store) == 0) {
        reply = redis_store_eval (self->store, 1, script_args_count (args),
                                  script_args_argv (args), script_args_lens (args));
        self->outcome_unknown = reply == NULL;
    }
    reply = s_checked (self, reply, args);
    script_args_destroy (args_p);
    return reply;
}

static bool
s_reply_ok (redisReply *reply)
{
    return strcmp (reply->element [0]->str, "ok") == 0;
}

//  Publishes the outputs at the tail of an apply reply (from index first:
//  first seq, ts, then one outbox entry per event; see commit()).
static void
s_publish_outputs (service_t *self, redisReply *reply, size_t first)
{
    if (reply->elements < first + 3)
        return;
    void *pub = zsock_resolve (self->pub);
    uint64_t seq = (uint64_t) reply->element [first]->integer;
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init (&sbuf);
    for (size_t i = first + 2; i < reply->elements; i++, seq++) {
        script_event_t event;
        if (script_outbox_entry (reply->element [i]->str, reply->element [i]->len,
                                 &event) != 0) {
            log_error ("output %" PRIu64 " is malformed; subscribers will replay it", seq);
            continue;
        }
        sbuf.size = 0;
        script_pack_envelope (&sbuf, self->def->name, seq, &event);
        zmq_send (pub, event.type.data, event.type.size, ZMQ_SNDMORE);
        zmq_send (pub, sbuf.data, sbuf.size, 0);
        self->seq = seq;
    }
    msgpack_sbuffer_destroy (&sbuf);
}

//  Reads seq and checkpoints once after each (re)connect, then catches up.
static void s_sync_engine (service_t *self);
static int s_engine_new (service_t *self, const char *api);

static void
s_sync (service_t *self)
{
    if (self->engine) {
        s_sync_engine (self);
        return;
    }
    script_args_t *args = s_args_new (self, "info");
    redisReply *reply = s_eval (self, &args);
    if (!reply)
        return;
    self->seq = (uint64_t) reply->element [1]->integer;
    for (int u = 0; u < self->upstream_count; u++) {
        uint64_t checkpoint = 0;
        for (size_t i = 2; i + 1 < reply->elements; i += 2)
            if (streq (reply->element [i]->str, upstream_name (self->upstreams [u])))
                checkpoint = strtoull (reply->element [i + 1]->str, NULL, 10);
        upstream_start (self->upstreams [u], checkpoint);
        log_info ("upstream %s: resuming after seq %" PRIu64,
                  upstream_name (self->upstreams [u]), checkpoint);
    }
    freeReplyObject (reply);
    self->synced = true;
    log_info ("state in Redis: last seq %" PRIu64, self->seq);
}

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
    funnel_pack_error (&sbuf, err);
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

static void
s_unavailable (service_t *self, zmsg_t *envelope)
{
    funnel_error_t err;
    funnel_error_clear (&err);
    if (self->script_failed)
        funnel_error_set (&err, FUNNEL_ERR_INTERNAL,
                          "rules: the service's script failed; nothing was applied");
    else
    if (self->refused [0])
        funnel_error_set (&err, FUNNEL_ERR_UNAVAILABLE,
                          "redis: %.120s; nothing was applied; retry later with the same ids",
                          self->refused);
    else
    if (self->outcome_unknown)
        funnel_error_set (&err, FUNNEL_ERR_UNAVAILABLE,
                          "redis: the connection was lost before the reply; the outcome is "
                          "unknown: retry with the same ids (safe: applied ids are skipped "
                          "as duplicates)");
    else
        funnel_error_set (&err, FUNNEL_ERR_UNAVAILABLE,
                          "redis: the store is unavailable; retry later with the same ids");
    s_send_error (self, envelope, &err);
}

//  Forwards a script reply: ok -> OK element[1], err -> ERR element[1].
static void
s_forward_script_reply (service_t *self, zmsg_t *envelope, redisReply *reply)
{
    redisReply *body = reply->element [1];
    s_send_reply (self, envelope, s_reply_ok (reply) ? "OK" : "ERR", body->str, body->len);
}

//  ---------------------------------------------------------------------
//  Verbs

static void
s_do_ping (service_t *self, zmsg_t *envelope)
{
    const char *argv [] = { "PING" };
    redisReply *reply = redis_store_connect (self->store) == 0
                      ? redis_store_command (self->store, 1, argv, NULL) : NULL;
    bool up = reply && reply->type == REDIS_REPLY_STATUS;
    if (reply)
        freeReplyObject (reply);
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init (&sbuf);
    msgpack_packer pk;
    msgpack_packer_init (&pk, &sbuf, msgpack_sbuffer_write);
    msgpack_pack_map (&pk, 5);
    funnel_pack_cstr (&pk, "svc");
    funnel_pack_cstr (&pk, self->def->name);
    funnel_pack_cstr (&pk, "version");
    funnel_pack_cstr (&pk, FUNNEL_VERSION);
    funnel_pack_cstr (&pk, "seq");
    msgpack_pack_uint64 (&pk, self->seq);
    funnel_pack_cstr (&pk, "redis");
    funnel_pack_cstr (&pk, up ? "ok" : "down");
    funnel_pack_cstr (&pk, "uptime_s");
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
        int rc = funnel_event_parse (obj, &event, err);
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

//  PUBLISH on the C engine: checked events, one batch, one commit.
static void
s_publish_engine (service_t *self, zmsg_t *envelope, funnel_msg_t *msg)
{
    funnel_error_t err;
    funnel_error_clear (&err);
    funnel_event_t *events = NULL;
    size_t count = 0;
    bool is_batch = false;
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init (&sbuf);
    if (funnel_publish_parse (funnel_msg_root (msg), &events, &count, &is_batch, &err) == 0
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
        s_complete_pending (self);
        s_send_error (self, envelope, &err);
        return;
    }
    //  A single event (a map) gets the event limits (64 KiB, depth 8); a
    //  batch the body limits (the array is one more level of nesting)
    byte first = zframe_size (body) ? zframe_data (body) [0] : 0;
    bool is_map = (first & 0xf0) == 0x80 || first == 0xde || first == 0xdf;
    funnel_msg_t *msg = funnel_msg_decode (zframe_data (body), zframe_size (body),
                                           is_map ? &funnel_limits_event : &funnel_limits_body,
                                           &err);
    bool is_batch = false;
    if (!msg || s_check_events (self, funnel_msg_root (msg), zframe_size (body),
                                &is_batch, &err) != 0
    ||  funnel_authz_publish (&self->peer, funnel_msg_root (msg), &err) != 0) {
        funnel_msg_destroy (&msg);
        s_complete_pending (self);      //  Replies stay in request order
        s_send_error (self, envelope, &err);
        return;
    }
    if (self->engine) {
        s_publish_engine (self, envelope, msg);
        funnel_msg_destroy (&msg);
        return;
    }
    const msgpack_object *root = funnel_msg_root (msg);
    script_args_t *args = s_args_new (self, "publish");
    script_args_add (args, is_batch ? "1" : "0", 1);
    //  A copy: a pending apply may be re-run (NOSCRIPT) after the next request
    script_args_add_copy (args, self->peer.by);                         //  "" = anonymous
    for (uint32_t i = 0; i < (is_batch ? root->via.array.size : 1); i++)
        script_args_add_event (args, is_batch ? &root->via.array.ptr [i] : root);
    if (self->pending_count == PIPELINE_MAX)
        s_complete_pending_to (self, PIPELINE_MAX - 1);
    bool connected = redis_store_connected (self->store);
    if (redis_store_eval_send (self->store, 1, script_args_count (args),
                               script_args_argv (args), script_args_lens (args)) != 0) {
        s_complete_pending (self);      //  Earlier requests are answered first
        script_args_destroy (&args);
        funnel_msg_destroy (&msg);
        s_reset_outcome (self);
        //  Part of it may have reached Redis before the connection broke
        self->outcome_unknown = connected;
        s_unavailable (self, envelope);
        return;
    }
    pending_t *pending = &self->pending [self->pending_count++];
    pending->envelope = envelope;
    pending->args = args;
    pending->msg = msg;
}

//  Answers a PUBLISH from its apply's reply (NULL: unavailable or failed).
static void
s_answer_publish (service_t *self, zmsg_t *envelope, redisReply *reply)
{
    if (!reply) {
        s_unavailable (self, envelope);
        return;
    }
    //  Reply first: the apply is durable; PUB is best effort with replay
    s_forward_script_reply (self, envelope, reply);
    if (s_reply_ok (reply))
        s_publish_outputs (self, reply, 2);
    freeReplyObject (reply);
}

//  Answers the oldest pending apply from its reply, and drops it.
static void
s_answer_oldest (service_t *self, redisReply *reply)
{
    pending_t *pending = &self->pending [0];
    s_answer_publish (self, pending->envelope, s_checked (self, reply, pending->args));
    script_args_destroy (&pending->args);
    funnel_msg_destroy (&pending->msg);
    self->pending_count--;
    memmove (self->pending, self->pending + 1, self->pending_count * sizeof (pending_t));
}

//  Reads every pending apply's reply, in order, and answers it. After a
//  NOSCRIPT (Redis restarted without our script) every later reply is read
//  first, then those applies are re-run one by one (which reloads it).
static void
s_complete_all (service_t *self, redisReply *first)
{
    redisReply *replies [PIPELINE_MAX];
    int count = self->pending_count;
    for (int i = 0; i < count; i++)
        replies [i] = i == 0 && first ? first : redis_store_recv (self->store);
    for (int i = 0; i < count; i++) {
        s_reset_outcome (self);
        self->outcome_unknown = replies [i] == NULL;
        if (redis_store_is_noscript (replies [i])) {
            pending_t *pending = &self->pending [0];
            freeReplyObject (replies [i]);
            replies [i] = redis_store_eval (self->store, 1, script_args_count (pending->args),
                                            script_args_argv (pending->args),
                                            script_args_lens (pending->args));
            self->outcome_unknown = replies [i] == NULL;
        }
        s_answer_oldest (self, replies [i]);
    }
}

//  Completes pending applies, oldest first, until at most `keep` remain:
//  keep = 0 before anything that must not interleave with the pipeline,
//  PIPELINE_MAX - 1 to make room while Redis goes on with the rest.
static void
s_complete_pending_to (service_t *self, int keep)
{
    while (self->pending_count > keep) {
        s_reset_outcome (self);
        redisReply *reply = redis_store_recv (self->store);
        self->outcome_unknown = reply == NULL;
        if (redis_store_is_noscript (reply)) {
            s_complete_all (self, reply);
            return;
        }
        s_answer_oldest (self, reply);
    }
}

static void
s_complete_pending (service_t *self)
{
    s_complete_pending_to (self, 0);
}

//  Decodes a small request body that must be a map.
static funnel_msg_t *
s_decode_map (zframe_t *body, const char *verb, funnel_error_t *err)
{
    if (!body) {
        funnel_error_set (err, FUNNEL_ERR_BAD_REQUEST, "body: %s needs a map", verb);
        return NULL;
    }
    funnel_msg_t *msg = funnel_msg_decode (zframe_data (body), zframe_size (body),
                                           &funnel_limits_event, err);
    if (msg && funnel_msg_root (msg)->type != MSGPACK_OBJECT_MAP) {
        funnel_error_set (err, FUNNEL_ERR_BAD_REQUEST, "body: %s needs a map", verb);
        funnel_msg_destroy (&msg);
    }
    return msg;
}

static void
s_do_get (service_t *self, zmsg_t *envelope, zframe_t *body)
{
    funnel_error_t err;
    funnel_error_clear (&err);
    funnel_msg_t *msg = s_decode_map (body, "GET", &err);
    if (msg) {
        const msgpack_object *kind = funnel_map_get (funnel_msg_root (msg), "kind");
        if (!kind || kind->type != MSGPACK_OBJECT_STR)
            funnel_error_set (&err, FUNNEL_ERR_INVALID, "kind: required string is missing");
    }
    funnel_msg_destroy (&msg);
    if (err.code) {
        s_send_error (self, envelope, &err);
        return;
    }
    if (self->engine) {
        msgpack_sbuffer sbuf;
        msgpack_sbuffer_init (&sbuf);
        msg = s_decode_map (body, "GET", &err);
        if (msg && funnel_engine_query (self->engine, funnel_msg_root (msg), &sbuf, &err) == 0)
            s_send_packed (self, envelope, &sbuf);
        else {
            msgpack_sbuffer_destroy (&sbuf);
            s_send_error (self, envelope, &err);
        }
        funnel_msg_destroy (&msg);
        return;
    }
    script_args_t *args = s_args_new (self, "query");
    script_args_add (args, (const char *) zframe_data (body), zframe_size (body));
    redisReply *reply = s_eval (self, &args);
    if (!reply) {
        s_unavailable (self, envelope);
        return;
    }
    s_forward_script_reply (self, envelope, reply);
    freeReplyObject (reply);
}

//  Reads an optional unsigned field of a request map.
static int
s_uint_arg (const msgpack_object *map, const char *key, bool required,
            uint64_t *value, funnel_error_t *err)
{
    const msgpack_object *obj = funnel_map_get (map, key);
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
    uint64_t from = 0, limit = REPLAY_DEFAULT;
    char subscriber [FUNNEL_ID_MAX + 1] = "";
    funnel_msg_t *msg = s_decode_map (body, "REPLAY", &err);
    if (msg && s_uint_arg (funnel_msg_root (msg), "from", true, &from, &err) == 0
    &&  s_uint_arg (funnel_msg_root (msg), "limit", false, &limit, &err) == 0) {
        //  Optional: the name a subscriber registers under (C engine)
        const msgpack_object *name = funnel_map_get (funnel_msg_root (msg), "subscriber");
        if (name && name->type != MSGPACK_OBJECT_NIL
        &&  (!funnel_obj_strcpy (name, subscriber, sizeof subscriber)
             || !funnel_id_valid (subscriber, strlen (subscriber))))
            funnel_error_set (&err, FUNNEL_ERR_INVALID,
                              "subscriber: must be 1-64 bytes of [A-Za-z0-9._:@+-]");
    }
    funnel_msg_destroy (&msg);
    if (err.code) {
        s_send_error (self, envelope, &err);
        return;
    }
    if (limit > REPLAY_DEFAULT)
        limit = REPLAY_DEFAULT;         //  Clamped, as the contract says
    if (self->engine) {
        msgpack_sbuffer sbuf;
        msgpack_sbuffer_init (&sbuf);
        if (funnel_engine_replay (self->engine, from, limit, subscriber, &sbuf, &err) == 0)
            s_send_packed (self, envelope, &sbuf);
        else {
            msgpack_sbuffer_destroy (&sbuf);
            s_send_error (self, envelope, &err);
        }
        return;
    }
    char from_s [24], limit_s [24];
    snprintf (from_s, sizeof from_s, "%" PRIu64, from);
    snprintf (limit_s, sizeof limit_s, "%" PRIu64, limit);
    script_args_t *args = s_args_new (self, "replay");
    script_args_add (args, from_s, strlen (from_s));
    script_args_add (args, limit_s, strlen (limit_s));
    redisReply *reply = NULL;
    if (limit > 0)
        reply = s_eval (self, &args);
    else
        script_args_destroy (&args);
    if (limit > 0 && !reply) {
        s_unavailable (self, envelope);
        return;
    }
    //  Entries come as seq + stored entry: split, then rebuilt as envelopes
    size_t count = reply ? (reply->elements - 3) / 2 : 0;
    typedef struct { uint64_t seq; script_event_t event; } entry_t;
    entry_t *entries = (entry_t *) calloc (count + 1, sizeof (entry_t));
    size_t valid = 0;
    for (size_t i = 0; i < count; i++) {
        redisReply **part = reply->element + 3 + i * 2;
        entry_t *e = &entries [valid];
        e->seq = (uint64_t) part [0]->integer;
        if (script_outbox_entry (part [1]->str, part [1]->len, &e->event) == 0)
            valid++;
        else
            log_error ("outbox entry %" PRIu64 " is malformed; left out of REPLAY", e->seq);
    }
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init (&sbuf);
    msgpack_packer pk;
    msgpack_packer_init (&pk, &sbuf, msgpack_sbuffer_write);
    msgpack_pack_map (&pk, 3);
    funnel_pack_cstr (&pk, "events");
    msgpack_pack_array (&pk, valid);
    for (size_t i = 0; i < valid; i++)
        script_pack_envelope (&sbuf, self->def->name, entries [i].seq, &entries [i].event);
    free (entries);
    funnel_pack_cstr (&pk, "next");
    //  The script gives 0 for "no events" / "nothing held" rather than
    //  echoing from, which it cannot hold exactly above 2^53
    uint64_t next = reply && reply->element [2]->integer > 0
                  ? (uint64_t) reply->element [2]->integer : from;
    uint64_t first = reply && reply->element [1]->integer > 0
                   ? (uint64_t) reply->element [1]->integer : next;
    msgpack_pack_uint64 (&pk, next);
    funnel_pack_cstr (&pk, "first");
    msgpack_pack_uint64 (&pk, first);
    if (reply)
        freeReplyObject (reply);
    s_send_packed (self, envelope, &sbuf);
}

static void
s_do_stats (service_t *self, zmsg_t *envelope)
{
    if (self->engine) {
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
        return;
    }
    script_args_t *args = s_args_new (self, "stats");
    redisReply *reply = s_eval (self, &args);
    if (!reply) {
        s_unavailable (self, envelope);
        return;
    }
    s_forward_script_reply (self, envelope, reply);
    freeReplyObject (reply);
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
    //  Only PUBLISH joins the pipeline; anything else answers after it
    if (err.code || !zframe_streq (verb, "PUBLISH"))
        s_complete_pending (self);
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

static int
s_on_api (zloop_t *loop, zsock_t *reader, void *arg)
{
    (void) loop;
    service_t *self = (service_t *) arg;
    for (int i = 0; i < API_BURST && (zsock_events (reader) & ZMQ_POLLIN); i++) {
        zmsg_t *msg = zmsg_recv (reader);
        if (!msg)
            break;
        s_handle_request (self, msg);
        zmsg_destroy (&msg);
        if (funnel_stop || self->fatal)
            break;
    }
    s_complete_pending (self);
    return funnel_stop || self->fatal ? -1 : 0;
}

//  Upstream events on the C engine: decoded again (network input), one
//  batch with the checkpoint.
static int
s_apply_upstream_engine (service_t *self, upstream_t *upstream, const char **events,
                         const size_t *sizes, size_t count, uint64_t last_seq)
{
    funnel_msg_t **decoded = (funnel_msg_t **) calloc (count + 1, sizeof (funnel_msg_t *));
    funnel_event_t *parsed = (funnel_event_t *) calloc (count + 1, sizeof (funnel_event_t));
    size_t valid = 0;
    for (size_t i = 0; i < count; i++) {
        funnel_error_t err;
        decoded [i] = funnel_msg_decode (events [i], sizes [i], &funnel_limits_event, &err);
        if (decoded [i]
        &&  funnel_event_parse (funnel_msg_root (decoded [i]), &parsed [valid], &err) == 0)
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
        funnel_msg_destroy (&decoded [i]);
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

//  Applies a batch of upstream events with their checkpoint.
static int
s_apply_upstream (void *arg, upstream_t *upstream, const char **events,
                  const size_t *sizes, size_t count, uint64_t last_seq)
{
    service_t *self = (service_t *) arg;
    if (!self->synced)
        return -1;
    if (self->engine)
        return s_apply_upstream_engine (self, upstream, events, sizes, count, last_seq);
    char last [24];
    snprintf (last, sizeof last, "%" PRIu64, last_seq);
    script_args_t *args = s_args_new (self, "consume");
    script_args_add (args, upstream_name (upstream), strlen (upstream_name (upstream)));
    script_args_add (args, last, strlen (last));
    //  Upstream events are decoded again here (they are network input) and
    //  kept decoded until the call returns: the args point into them
    funnel_msg_t **decoded = (funnel_msg_t **) calloc (count + 1, sizeof (funnel_msg_t *));
    for (size_t i = 0; i < count; i++) {
        funnel_error_t err;
        funnel_event_t event;
        decoded [i] = funnel_msg_decode (events [i], sizes [i], &funnel_limits_event, &err);
        if (decoded [i] && funnel_event_parse (funnel_msg_root (decoded [i]), &event, &err) == 0)
            script_args_add_event (args, funnel_msg_root (decoded [i]));
        else
            log_warn ("from %s: skipped a malformed event: %s", upstream_name (upstream),
                      err.message);
    }
    redisReply *reply = s_eval (self, &args);
    for (size_t i = 0; i < count; i++)
        funnel_msg_destroy (&decoded [i]);
    free (decoded);
    if (!reply)
        return -1;
    redisReply *summary = reply->element [1];
    funnel_error_t err;
    funnel_msg_t *msg = funnel_msg_decode (summary->str, summary->len,
                                           &funnel_limits_event, &err);
    const msgpack_object *errors = msg ? funnel_map_get (funnel_msg_root (msg), "errors") : NULL;
    //  One line per refused event, but at most one a second at warn level
    //  (a misbehaving upstream must not flood the log; STATS counts them all)
    if (errors && errors->type == MSGPACK_OBJECT_ARRAY)
        for (uint32_t i = 0; i < errors->via.array.size; i++) {
            char line [FUNNEL_STR_MAX + 1];
            if (!funnel_obj_strcpy (&errors->via.array.ptr [i], line, sizeof line))
                continue;
            if (funnel_log_every (&self->last_warn, 1000))
                log_warn ("from %s: not applied: %s (consume_rejected counts all)",
                          upstream_name (upstream), line);
            else
                log_debug ("from %s: not applied: %s", upstream_name (upstream), line);
        }
    funnel_msg_destroy (&msg);
    s_publish_outputs (self, reply, 2);
    freeReplyObject (reply);
    return 0;
}

static int
s_on_upstream (zloop_t *loop, zsock_t *reader, void *arg)
{
    (void) loop;
    (void) reader;
    upstream_drain ((upstream_t *) arg);
    return funnel_stop ? -1 : 0;
}

static int
s_on_replay (zloop_t *loop, zsock_t *reader, void *arg)
{
    (void) loop;
    (void) reader;
    upstream_on_replay ((upstream_t *) arg);
    return funnel_stop ? -1 : 0;
}

static void
s_publish_heartbeat (service_t *self)
{
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init (&sbuf);
    msgpack_packer pk;
    msgpack_packer_init (&pk, &sbuf, msgpack_sbuffer_write);
    msgpack_pack_map (&pk, 3);
    funnel_pack_cstr (&pk, "svc");
    funnel_pack_cstr (&pk, self->def->name);
    funnel_pack_cstr (&pk, "seq");
    msgpack_pack_uint64 (&pk, self->seq);
    funnel_pack_cstr (&pk, "ts");
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
    s_publish_heartbeat (self);
    if (self->synced)
        for (int u = 0; u < self->upstream_count; u++)
            upstream_flush (self->upstreams [u]);
    funnel_notify_tick ();          //  The loop is alive
    return funnel_stop ? -1 : 0;
}

//  Housekeeping every 50 ms: reconnect Redis, catch up upstreams, stop.
static int
s_on_housekeeping (zloop_t *loop, int timer_id, void *arg)
{
    (void) loop;
    (void) timer_id;
    service_t *self = (service_t *) arg;
    if (!redis_store_connected (self->store))
        self->synced = false;
    if (self->engine && !funnel_engine_synced (self->engine))
        self->synced = false;
    if (!self->synced && !self->fatal && redis_store_connect (self->store) == 0)
        s_sync (self);
    if (self->engine && self->synced) {
        funnel_engine_cron (self->engine);
        self->seq = funnel_engine_seq (self->engine);
    }
    if (self->engine && funnel_engine_lost (self->engine))
        self->fatal = true;
    if (self->fatal)
        return -1;
    if (self->synced)
        for (int u = 0; u < self->upstream_count && !funnel_stop; u++)
            upstream_catch_up (self->upstreams [u], 10);
    return funnel_stop ? -1 : 0;
}

static int
s_on_tick (zloop_t *loop, int timer_id, void *arg)
{
    (void) loop;
    (void) timer_id;
    service_t *self = (service_t *) arg;
    if (self->synced && !self->engine) {
        script_args_t *args = s_args_new (self, "tick");
        redisReply *reply = s_eval (self, &args);
        if (reply) {
            s_publish_outputs (self, reply, 2);
            freeReplyObject (reply);
        }
    }
    return funnel_stop ? -1 : 0;
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

static int
s_pack_runtime_args (service_t *self)
{
    int64_t retention = RETENTION_DEFAULT, dedup_ttl = DEDUP_TTL_DEFAULT;
    char path [128];
    snprintf (path, sizeof path, "%s/retention", self->def->name);
    if (funnel_config_int (self->config, path, RETENTION_DEFAULT, &retention) || retention < 1)
        return -1;
    snprintf (path, sizeof path, "%s/dedup_ttl_s", self->def->name);
    if (funnel_config_int (self->config, path, DEDUP_TTL_DEFAULT, &dedup_ttl) || dedup_ttl < 1)
        return -1;
    //  Stage series: hourly buckets kept 90 days, daily 3 years (runtime.lua)
    int64_t hourly_days = 90, daily_days = 1096;
    snprintf (path, sizeof path, "%s/series_hourly_days", self->def->name);
    if (funnel_config_int (self->config, path, 90, &hourly_days)
    ||  hourly_days < 1 || hourly_days > 36600)
        return -1;
    snprintf (path, sizeof path, "%s/series_daily_days", self->def->name);
    if (funnel_config_int (self->config, path, 1096, &daily_days)
    ||  daily_days < 1 || daily_days > 36600)
        return -1;
    self->series_hour_s = hourly_days * 86400;
    self->series_day_s = daily_days * 86400;
    msgpack_packer pk;
    msgpack_packer_init (&pk, &self->runtime_args, msgpack_sbuffer_write);
    msgpack_pack_map (&pk, 5);
    funnel_pack_cstr (&pk, "retention");
    msgpack_pack_int64 (&pk, retention);
    funnel_pack_cstr (&pk, "dedup_ttl");
    msgpack_pack_int64 (&pk, dedup_ttl);
    funnel_pack_cstr (&pk, "series_hour_s");
    msgpack_pack_int64 (&pk, hourly_days * 86400);
    funnel_pack_cstr (&pk, "series_day_s");
    msgpack_pack_int64 (&pk, daily_days * 86400);
    funnel_pack_cstr (&pk, "rules");
    if (self->def->pack_rules)
        return self->def->pack_rules (self->config, &pk);
    msgpack_pack_map (&pk, 0);
    return 0;
}

static void
s_destroy (service_t *self)
{
    for (int u = 0; u < self->upstream_count; u++)
        upstream_destroy (&self->upstreams [u]);
    zsock_destroy (&self->api);
    zsock_destroy (&self->pub);
    funnel_engine_destroy (&self->engine);
    if (self->def->rules && self->def->rules->teardown)
        self->def->rules->teardown (&self->rules_arg);
    redis_store_destroy (&self->store);
    msgpack_sbuffer_destroy (&self->runtime_args);
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
    if (s_pack_runtime_args (self) != 0) {
        log_error ("bad settings in the [%s] section; see --help", name);
        return 2;
    }
    //  The C rules' settings are checked here too, before any bind: a bad
    //  value exits 2 even when the endpoints are taken (as the Lua rules')
    if (self->def->rules && self->def->rules->setup
    &&  self->def->rules->setup (self->config, name, &self->rules_arg) != 0) {
        log_error ("bad settings in the [%s] section; see --help", name);
        return 2;
    }
    char default_prefix [96];
    snprintf (default_prefix, sizeof default_prefix, "{funnel:%s}:", name);
    char path [128];
    snprintf (path, sizeof path, "%s/prefix", name);
    snprintf (self->seq_key, sizeof self->seq_key, "%sseq",
              funnel_config_get (self->config, path, default_prefix));
    self->store = redis_store_new (&parsed, self->def->rules ? NULL : self->def->lua);
    const char *api = funnel_config_endpoint (self->config, name, "api");
    const char *pub = funnel_config_endpoint (self->config, name, "pub");
    int rc = funnel_curve_setup (self->config, name);     //  ZAP before any bind
    if (rc != 0)
        return rc;
    self->api = s_bind (ZMQ_ROUTER, api, "api");
    self->pub = s_bind (ZMQ_PUB, pub, "pub");
    if (!self->api || !self->pub)
        return 1;
    if (self->def->rules && s_engine_new (self, api) != 0)
        return 2;
    for (const char *const *up = self->def->upstreams; up && *up; up++) {
        if (self->upstream_count == UPSTREAMS_MAX)
            break;
        upstream_t *upstream = upstream_new (*up,
            funnel_config_endpoint (self->config, *up, "api"),
            funnel_config_endpoint (self->config, *up, "pub"),
            self->def->consumes, s_apply_upstream, self);
        if (!upstream)
            return 1;
        upstream_set_subscriber (upstream, name);
        self->upstreams [self->upstream_count++] = upstream;
    }
    //  Everything the service reads is read by now: what is left is a typo
    if (funnel_config_check_keys (self->config))
        return 2;
    log_info ("funnel-%s %s: api %s, pub %s, %d upstream(s)", name, FUNNEL_VERSION,
              api, pub, self->upstream_count);
    return 0;
}

static void
s_run (service_t *self)
{
    zloop_t *loop = zloop_new ();
    zloop_set_nonstop (loop, true);     //  Our own stop flag decides
    zloop_reader (loop, self->api, s_on_api, self);
    for (int u = 0; u < self->upstream_count; u++) {
        zloop_reader (loop, upstream_sub (self->upstreams [u]), s_on_upstream,
                      self->upstreams [u]);
        zloop_reader (loop, upstream_replay_sock (self->upstreams [u]), s_on_replay,
                      self->upstreams [u]);
    }
    zloop_timer (loop, 1000, 0, s_on_second, self);
    zloop_timer (loop, 50, 0, s_on_housekeeping, self);
    if (self->def->tick_ms > 0)
        zloop_timer (loop, self->def->tick_ms, 0, s_on_tick, self);
    s_on_housekeeping (loop, 0, self);
    funnel_notify_ready (self->def->name);      //  Sockets bound: serving
    //  zloop_start returns on EINTR even in nonstop mode (czmq 4.2.1)
    while (!funnel_stop && !self->fatal)
        if (zloop_start (loop) == -1)
            break;
    funnel_notify_stopping ();
    zloop_destroy (&loop);
}

//  PUB of one committed output of the C engine.
static void
s_pub_event (void *arg, uint64_t seq, const script_event_t *event)
{
    service_t *self = (service_t *) arg;
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init (&sbuf);
    script_pack_envelope (&sbuf, self->def->name, seq, event);
    void *pub = zsock_resolve (self->pub);
    zmq_send (pub, event->type.data, event->type.size, ZMQ_SNDMORE);
    zmq_send (pub, sbuf.data, sbuf.size, 0);
    msgpack_sbuffer_destroy (&sbuf);
    self->seq = seq;
}

//  The C engine's settings: partitions, cache_entries, lease_ms (plus
//  retention, dedup_ttl_s and prefix, shared with the Lua engine).
static int
s_engine_new (service_t *self, const char *api)
{
    const char *name = self->def->name;
    int64_t values [6] = { 16, 100000, 5000, RETENTION_DEFAULT, DEDUP_TTL_DEFAULT,
                           1024LL * 1024 * 1024 };
    const char *keys [6] = { "partitions", "cache_entries", "lease_ms", "retention",
                             "dedup_ttl_s", "outbox_max_bytes" };
    const int64_t mins [6] = { 1, 1, 300, 1, 1, 1024 };
    const int64_t maxs [6] = { 4096, 100000000, 600000, INT64_MAX / 2, INT64_MAX / 2000,
                               INT64_MAX / 2 };
    for (int i = 0; i < 6; i++) {
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
    char default_prefix [96], path [128], host [256] = "", owner [600];
    snprintf (default_prefix, sizeof default_prefix, "{funnel:%s}:", name);
    snprintf (path, sizeof path, "%s/prefix", name);
    gethostname (host, sizeof host - 1);
    snprintf (owner, sizeof owner, "%s|%s", host, api);
    funnel_engine_cfg_t cfg = {
        .svc = name,
        .prefix = funnel_config_get (self->config, path, default_prefix),
        .owner = owner,
        .partitions = (int) values [0],
        .cache_max = (size_t) values [1],
        .lease_ms = (int) values [2],
        .retention = values [3],
        .dedup_ttl_s = values [4],
        .outbox_max_bytes = values [5],
        //  Read with the Lua engine's runtime arguments (s_pack_runtime_args)
        .series_hour_s = self->series_hour_s,
        .series_day_s = self->series_day_s
    };
    cfg.rules_arg = self->rules_arg;
    self->engine = funnel_engine_new (&cfg, self->def->rules, self->store);
    funnel_engine_set_publisher (self->engine, s_pub_event, self);
    //  A predecessor that crashed on another endpoint holds its leases
    //  until they expire: wait that long before refusing to start
    self->lease_deadline = zclock_mono () + values [2] + 1000;
    log_info ("C engine: %d partitions, cache %" PRId64 " records, lease %" PRId64 " ms",
              cfg.partitions, values [1], values [2]);
    return 0;
}

//  Takes the leases and reads seq and checkpoints, then catches up.
static void
s_sync_engine (service_t *self)
{
    funnel_error_t err;
    funnel_error_clear (&err);
    int rc = funnel_engine_sync (self->engine, &err);
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

int
funnel_service_main (int argc, char **argv, const funnel_service_def_t *def)
{
    funnel_signals_init ();
    zsys_set_logstream (stderr);

    funnel_config_about_t about = { def->name, def->summary, def->extra_help };
    funnel_config_status_t status;
    service_t self = { .def = def, .started = zclock_mono () };
    msgpack_sbuffer_init (&self.runtime_args);
    self.config = funnel_config_load (argc, argv, &about, &status);
    if (status != FUNNEL_CONFIG_OK)
        return status == FUNNEL_CONFIG_EXIT_OK ? 0 : 2;
    funnel_log_level_t level = FUNNEL_LOG_INFO;
    funnel_log_level_parse (funnel_config_get (self.config, "log/level", "info"), &level);
    funnel_log_init (def->name, level);

    int rc = s_start (&self);
    if (rc == 0) {
        s_run (&self);
        if (self.fatal)
            rc = 1;
        else {
            if (self.engine)
                funnel_engine_release (self.engine);
            log_info ("stopped cleanly at seq %" PRIu64, self.seq);
        }
    }
    s_destroy (&self);
    return rc;
}
