#include "bench_pipe.h"
#include "event_codec.h"

typedef struct {
    zframe_t *body;             //  Kept for a re-send
    int events;
    int64_t sent_at;            //  ms, for the timeout
} request_t;

struct _bench_pipe_t {
    char *name;
    zsock_t *dealer;
    int window;
    int timeout_ms;
    zlistx_t *inflight;         //  request_t *, oldest first
    int64_t acked, accepted, duplicates, resent;
    char error [512];
};

static void
s_request_destroy (void **item)
{
    request_t *request = (request_t *) *item;
    if (request) {
        zframe_destroy (&request->body);
        free (request);
        *item = NULL;
    }
}

bench_pipe_t *
bench_pipe_new (const char *name, const char *endpoint, int window, int timeout_ms)
{
    bench_pipe_t *self = (bench_pipe_t *) zmalloc (sizeof (bench_pipe_t));
    self->name = strdup (name);
    self->window = window > 0 ? window : 1;
    self->timeout_ms = timeout_ms;
    self->inflight = zlistx_new ();
    zlistx_set_destructor (self->inflight, s_request_destroy);
    self->dealer = zsock_new (ZMQ_DEALER);
    if (self->dealer) {
        zsock_set_linger (self->dealer, 0);
        zsock_set_sndhwm (self->dealer, 0);
        zsock_set_maxmsgsize (self->dealer, 8 * 1024 * 1024);
    }
    if (!self->dealer || zsock_connect (self->dealer, "%s", endpoint) != 0) {
        fprintf (stderr, "funnel-bench-funnel: %s: cannot connect to %s\n", name, endpoint);
        bench_pipe_destroy (&self);
    }
    return self;
}

void
bench_pipe_destroy (bench_pipe_t **self_p)
{
    assert (self_p);
    bench_pipe_t *self = *self_p;
    if (self) {
        zlistx_destroy (&self->inflight);
        zsock_destroy (&self->dealer);
        free (self->name);
        free (self);
        *self_p = NULL;
    }
}

zsock_t *
bench_pipe_sock (bench_pipe_t *self)
{
    return self->dealer;
}

bool
bench_pipe_ready (bench_pipe_t *self)
{
    return !self->error [0] && (int) zlistx_size (self->inflight) < self->window;
}

int
bench_pipe_inflight (bench_pipe_t *self)
{
    return (int) zlistx_size (self->inflight);
}

static int
s_fail (bench_pipe_t *self, const char *format, ...)
{
    if (!self->error [0]) {
        int used = snprintf (self->error, sizeof self->error, "%s: ", self->name);
        va_list args;
        va_start (args, format);
        vsnprintf (self->error + used, sizeof self->error - used, format, args);
        va_end (args);
    }
    return -1;
}

static int
s_transmit (bench_pipe_t *self, request_t *request)
{
    request->sent_at = zclock_mono ();
    if (zstr_sendm (self->dealer, "") != 0
    ||  zstr_sendm (self->dealer, "PUBLISH") != 0
    ||  zframe_send (&request->body, self->dealer, ZFRAME_REUSE) != 0)
        return s_fail (self, "cannot send (%s)", zmq_strerror (zmq_errno ()));
    return 0;
}

int
bench_pipe_send (bench_pipe_t *self, msgpack_sbuffer *body, int events)
{
    if (self->error [0])
        return -1;
    request_t *request = (request_t *) zmalloc (sizeof (request_t));
    request->body = zframe_new (body->data, body->size);
    request->events = events;
    body->size = 0;             //  Reused by the caller, no reallocation
    zlistx_add_end (self->inflight, request);
    return s_transmit (self, request);
}

int64_t
bench_map_int (const msgpack_object *map, const char *key)
{
    const msgpack_object *value = event_codec_map_get (map, key);
    if (value && value->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        return (int64_t) value->via.u64;
    return -1;
}

int
bench_pipe_recv (bench_pipe_t *self)
{
    zmsg_t *msg = zmsg_recv (self->dealer);
    if (!msg)
        return s_fail (self, "interrupted");
    request_t *request = (request_t *) zlistx_first (self->inflight);
    zframe_t *empty = zmsg_pop (msg);
    char *status = zmsg_popstr (msg);
    zframe_t *body = zmsg_pop (msg);
    int rc = 0;
    funnel_error_t err;
    event_codec_t *decoded = body
        ? event_codec_decode (zframe_data (body), zframe_size (body), &event_codec_limits_event, &err)
        : NULL;
    const msgpack_object *root = decoded ? event_codec_root (decoded) : NULL;
    if (!request || !empty || zframe_size (empty) != 0 || !status || !root
    ||  root->type != MSGPACK_OBJECT_MAP)
        rc = s_fail (self, "reply of an unexpected shape");
    else
    if (streq (status, "OK")) {
        int64_t accepted = bench_map_int (root, "accepted");
        int64_t duplicates = bench_map_int (root, "duplicates");
        self->acked += request->events;
        self->accepted += accepted > 0 ? accepted : 0;
        self->duplicates += duplicates > 0 ? duplicates : 0;
        zlistx_delete (self->inflight, zlistx_cursor (self->inflight));
    }
    else {
        char code [64] = "?", message [400] = "";
        event_codec_obj_strcpy (event_codec_map_get (root, "code"), code, sizeof code);
        event_codec_obj_strcpy (event_codec_map_get (root, "message"), message, sizeof message);
        if (streq (code, "unavailable") || streq (code, "internal")) {
            //  Nothing (or all) of it was applied: the same ids again are safe
            zlistx_detach_cur (self->inflight);
            zlistx_add_end (self->inflight, request);
            self->resent++;
            rc = s_transmit (self, request);
        }
        else
            rc = s_fail (self, "ERR %s (index %" PRId64 "): %s",
                         code, bench_map_int (root, "index"), message);
    }
    event_codec_destroy (&decoded);
    zframe_destroy (&body);
    zstr_free (&status);
    zframe_destroy (&empty);
    zmsg_destroy (&msg);
    return rc;
}

int
bench_pipe_check (bench_pipe_t *self)
{
    if (self->error [0])
        return -1;
    request_t *oldest = (request_t *) zlistx_first (self->inflight);
    if (oldest && zclock_mono () - oldest->sent_at > self->timeout_ms)
        return s_fail (self, "no reply in %d ms", self->timeout_ms);
    return 0;
}

int64_t bench_pipe_acked (bench_pipe_t *self) { return self->acked; }
int64_t bench_pipe_accepted (bench_pipe_t *self) { return self->accepted; }
int64_t bench_pipe_duplicates (bench_pipe_t *self) { return self->duplicates; }
int64_t bench_pipe_resent (bench_pipe_t *self) { return self->resent; }
bool    bench_pipe_failed (bench_pipe_t *self) { return self->error [0] != 0; }
const char *bench_pipe_error (bench_pipe_t *self) { return self->error; }


#undef NDEBUG                   //  The self-test needs its asserts
#include <assert.h>

//  --------------------------------------------------------------------------
//  Self-test: a ROUTER that answers like a service (OK, then unavailable
//  once, then a fatal ERR) shows the FIFO matching and the re-send.

static void
s_answer (zsock_t *router, const char *status, const char *key, int value)
{
    zmsg_t *request = zmsg_recv (router);
    assert (request);
    zframe_t *identity = zmsg_pop (request);
    zmsg_destroy (&request);
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init (&sbuf);
    msgpack_packer pk;
    msgpack_packer_init (&pk, &sbuf, msgpack_sbuffer_write);
    msgpack_pack_map (&pk, 1);
    event_codec_pack_cstr (&pk, key);
    if (streq (key, "code"))
        event_codec_pack_cstr (&pk, value ? "invalid" : "unavailable");
    else
        msgpack_pack_int (&pk, value);
    zmsg_t *reply = zmsg_new ();
    zmsg_append (reply, &identity);
    zmsg_addstr (reply, "");
    zmsg_addstr (reply, status);
    zmsg_addmem (reply, sbuf.data, sbuf.size);
    zmsg_send (&reply, router);
    msgpack_sbuffer_destroy (&sbuf);
}

void
bench_pipe_test (bool verbose)
{
    if (verbose)
        printf (" * bench_pipe: ");
    zsock_t *router = zsock_new (ZMQ_ROUTER);
    int port = zsock_bind (router, "tcp://127.0.0.1:*");
    assert (port > 0);
    char endpoint [64];
    snprintf (endpoint, sizeof endpoint, "tcp://127.0.0.1:%d", port);
    bench_pipe_t *pipe = bench_pipe_new ("alpha", endpoint, 2, 5000);
    assert (pipe);
    msgpack_sbuffer body;
    msgpack_sbuffer_init (&body);
    msgpack_sbuffer_write (&body, "\x91\x80", 2);   //  [{}]: never decoded here
    assert (bench_pipe_send (pipe, &body, 1) == 0);
    assert (body.size == 0);
    msgpack_sbuffer_write (&body, "\x91\x80", 2);
    assert (bench_pipe_send (pipe, &body, 1) == 0);
    assert (!bench_pipe_ready (pipe));
    s_answer (router, "OK", "accepted", 1);
    assert (bench_pipe_recv (pipe) == 0);
    assert (bench_pipe_acked (pipe) == 1 && bench_pipe_accepted (pipe) == 1);
    s_answer (router, "ERR", "code", 0);             //  unavailable: re-sent
    assert (bench_pipe_recv (pipe) == 0);
    assert (bench_pipe_resent (pipe) == 1 && bench_pipe_inflight (pipe) == 1);
    s_answer (router, "ERR", "code", 1);             //  invalid: fatal
    assert (bench_pipe_recv (pipe) == -1);
    assert (bench_pipe_failed (pipe));
    assert (strstr (bench_pipe_error (pipe), "alpha: ERR invalid"));
    msgpack_sbuffer_destroy (&body);
    bench_pipe_destroy (&pipe);
    zsock_destroy (&router);
    if (verbose)
        printf ("OK\n");
}
