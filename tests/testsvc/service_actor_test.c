/*  service_actor_test — a service embedded in a test process: the test
    service's rules (testsvc.c) run by funnel_service_actor against a real
    redis-server (FUNNEL_TEST_REDIS_URL, from tests/with_redis.sh), driven
    over the actor's pipe and over real sockets.

    Checks: the commands' answers (a missing or bad config, START's exit
    codes, ENDPOINT, PORT); PING, PUBLISH (and its PUB), an unknown type,
    GET; $TERM stops cleanly (STOPPED 0) and a second instance, configured
    with CONFIG, finds the state the first committed. Every wait is bounded
    by a receive timeout. Assertions stay on in Release.
*/
#undef NDEBUG
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "event_codec.h"
#include "funnel_log.h"
#include "testsvc.h"

#define WAIT_MS     10000       //  Any reply or event; a failure, not a hang

static const funnel_service_def_t s_def = {
    .name = "alpha",
    .summary = "embedded test service",
    .accepts = testsvc_accepts,
    .consumes = testsvc_consumes,
    .rules = &testsvc_rules
};

//  Writes text to a new temp file; returns its path (caller frees, unlinks)
static char *
s_temp_file (const char *text)
{
    char *path = strdup ("/tmp/funnel-actor-test.XXXXXX");
    int fd = mkstemp (path);
    assert (fd >= 0);
    assert (write (fd, text, strlen (text)) == (ssize_t) strlen (text));
    close (fd);
    return path;
}

//  The service's config: the test's Redis, ephemeral ports on loopback
static char *
s_config_text (const char *extra)
{
    const char *url = getenv ("FUNNEL_TEST_REDIS_URL");
    assert (url && *url);
    return zsys_sprintf ("redis\n    url = \"%s\"\nalpha\n"
                         "    api = \"tcp://127.0.0.1:*\"\n"
                         "    pub = \"tcp://127.0.0.1:*\"\n%s", url, extra);
}

static zactor_t *
s_actor_configured (const char *path)
{
    zactor_t *svc = zactor_new (funnel_service_actor, (void *) &s_def);
    assert (svc);
    zstr_sendx (svc, "CONFIGURE", path, NULL);
    return svc;
}

//  An event {v, id, type, ts, src, data: {key, n}}
static void
s_pack_add (msgpack_sbuffer *sbuf, const char *id, const char *type, const char *key,
            int n)
{
    msgpack_packer pk;
    msgpack_packer_init (&pk, sbuf, msgpack_sbuffer_write);
    msgpack_pack_map (&pk, 6);
    event_codec_pack_cstr (&pk, "v");       msgpack_pack_int (&pk, 1);
    event_codec_pack_cstr (&pk, "id");      event_codec_pack_cstr (&pk, id);
    event_codec_pack_cstr (&pk, "type");    event_codec_pack_cstr (&pk, type);
    event_codec_pack_cstr (&pk, "ts");      msgpack_pack_int64 (&pk, zclock_time ());
    event_codec_pack_cstr (&pk, "src");     event_codec_pack_cstr (&pk, "actor-test");
    event_codec_pack_cstr (&pk, "data");
    msgpack_pack_map (&pk, 2);
    event_codec_pack_cstr (&pk, "key");     event_codec_pack_cstr (&pk, key);
    event_codec_pack_cstr (&pk, "n");       msgpack_pack_int (&pk, n);
}

//  One request [VERB][BODY] -> [STATUS][BODY]; returns the decoded body
//  (caller destroys) and the status in status (caller frees).
static event_codec_t *
s_call (zsock_t *req, const char *verb, msgpack_sbuffer *body, char **status)
{
    zmsg_t *msg = zmsg_new ();
    zmsg_addstr (msg, verb);
    zmsg_addmem (msg, body ? body->data : "\x80", body ? body->size : 1);
    assert (zmsg_send (&msg, req) == 0);
    zmsg_t *reply = zmsg_recv (req);
    assert (reply && zmsg_size (reply) == 2);       //  Else: no reply in time
    *status = zmsg_popstr (reply);
    zframe_t *frame = zmsg_pop (reply);
    funnel_error_t err;
    event_codec_t *decoded = event_codec_decode (zframe_data (frame), zframe_size (frame),
                                                 &event_codec_limits_body, &err);
    assert (decoded);
    zframe_destroy (&frame);
    zmsg_destroy (&reply);
    return decoded;
}

static zsock_t *
s_client (zactor_t *svc)
{
    zstr_sendx (svc, "ENDPOINT", "api", NULL);
    char *api = zstr_recv (svc);
    assert (api && strncmp (api, "tcp://127.0.0.1:", 16) == 0);
    zsock_t *req = zsock_new (ZMQ_REQ);
    zsock_set_rcvtimeo (req, WAIT_MS);
    zsock_set_linger (req, 0);
    assert (zsock_connect (req, "%s", api) == 0);
    zstr_free (&api);
    return req;
}

//  GET counter key: its total
static int64_t
s_get_total (zsock_t *req, const char *key)
{
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init (&sbuf);
    msgpack_packer pk;
    msgpack_packer_init (&pk, &sbuf, msgpack_sbuffer_write);
    msgpack_pack_map (&pk, 2);
    event_codec_pack_cstr (&pk, "kind");    event_codec_pack_cstr (&pk, "counter");
    event_codec_pack_cstr (&pk, "id");      event_codec_pack_cstr (&pk, key);
    char *status;
    event_codec_t *body = s_call (req, "GET", &sbuf, &status);
    assert (streq (status, "OK"));
    const msgpack_object *total = event_codec_map_get (event_codec_root (body), "total");
    assert (total && total->type == MSGPACK_OBJECT_POSITIVE_INTEGER);
    int64_t value = (int64_t) total->via.u64;
    zstr_free (&status);
    event_codec_destroy (&body);
    msgpack_sbuffer_destroy (&sbuf);
    return value;
}

//  The commands' answers when the service cannot start
static void
s_test_refusals (void)
{
    //  START before any config; a file that cannot be read
    zactor_t *svc = zactor_new (funnel_service_actor, (void *) &s_def);
    zstr_send (svc, "START");
    assert (zsock_wait (svc) == 2);
    zstr_sendx (svc, "CONFIGURE", "/nonexistent/funnel.cfg", NULL);
    assert (zsock_wait (svc) == 2);
    zstr_sendx (svc, "PORT", "api", NULL);
    int port = 0;
    assert (zsock_recv (svc, "i", &port) == 0 && port == -1);
    zactor_destroy (&svc);

    //  A bad setting: the exit code of a bad config, before any bind
    char *text = s_config_text ("    partitions = 0\n");
    char *path = s_temp_file (text);
    svc = s_actor_configured (path);
    assert (zsock_wait (svc) == 0);
    zstr_send (svc, "START");
    assert (zsock_wait (svc) == 2);
    zstr_send (svc, "START");           //  Once only: the same answer
    assert (zsock_wait (svc) == 2);
    zactor_destroy (&svc);
    unlink (path);
    zstr_free (&path);
    zstr_free (&text);
}

//  A second instance, configured with CONFIG: the first one's state is there
static void
s_test_restart (const char *text)
{
    zactor_t *svc = zactor_new (funnel_service_actor, (void *) &s_def);
    funnel_config_t *config = funnel_config_from_text (text, s_def.name);
    assert (config);
    zsock_send (svc, "sp", "CONFIG", config);
    assert (zsock_wait (svc) == 0);
    zstr_send (svc, "START");
    assert (zsock_wait (svc) == 0);
    zsock_t *req = s_client (svc);
    assert (s_get_total (req, "k1") == 4);
    zsock_destroy (&req);
    zactor_destroy (&svc);
}

static void
s_test_serve (void)
{
    char *text = s_config_text ("");
    char *path = s_temp_file (text);
    zactor_t *svc = s_actor_configured (path);
    assert (zsock_wait (svc) == 0);
    zstr_send (svc, "START");
    assert (zsock_wait (svc) == 0);
    zstr_sendx (svc, "PORT", "api", NULL);
    int port = 0;
    assert (zsock_recv (svc, "i", &port) == 0 && port > 0);
    zsock_t *req = s_client (svc);

    //  The PUB: subscribed once the first heartbeat arrives
    zstr_sendx (svc, "ENDPOINT", "pub", NULL);
    char *pub = zstr_recv (svc);
    assert (pub && strncmp (pub, "tcp://127.0.0.1:", 16) == 0);
    zsock_t *sub = zsock_new (ZMQ_SUB);
    zsock_set_rcvtimeo (sub, WAIT_MS);
    zsock_set_subscribe (sub, "$hb");
    zsock_set_subscribe (sub, "test.added");
    assert (zsock_connect (sub, "%s", pub) == 0);
    zstr_free (&pub);
    zmsg_t *event = zmsg_recv (sub);
    assert (event);
    zmsg_destroy (&event);

    char *status;
    event_codec_t *body = s_call (req, "PING", NULL, &status);
    assert (streq (status, "OK"));
    const msgpack_object *svc_name = event_codec_map_get (event_codec_root (body), "svc");
    char name [16];
    assert (event_codec_obj_strcpy (svc_name, name, sizeof name) && streq (name, "alpha"));
    zstr_free (&status);
    event_codec_destroy (&body);

    //  PUBLISH: OK, then the output on the PUB, then GET sees it
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init (&sbuf);
    s_pack_add (&sbuf, "ev-1", "test.add", "k1", 4);
    body = s_call (req, "PUBLISH", &sbuf, &status);
    assert (streq (status, "OK"));
    zstr_free (&status);
    event_codec_destroy (&body);
    bool seen = false;
    for (int i = 0; i < 20 && !seen; i++) {         //  Heartbeats in between
        event = zmsg_recv (sub);
        assert (event && zmsg_size (event) == 2);
        char *type = zmsg_popstr (event);
        if (streq (type, "test.added")) {
            zframe_t *frame = zmsg_pop (event);
            funnel_error_t err;
            event_codec_t *decoded = event_codec_decode (zframe_data (frame),
                                        zframe_size (frame), &event_codec_limits_event, &err);
            funnel_event_t parsed;
            assert (decoded && event_codec_event_parse (event_codec_root (decoded),
                                                        &parsed, &err) == 0);
            assert (streq (parsed.type, "test.added") && streq (parsed.cause, "ev-1"));
            event_codec_destroy (&decoded);
            zframe_destroy (&frame);
            seen = true;
        }
        zstr_free (&type);
        zmsg_destroy (&event);
    }
    assert (seen);
    assert (s_get_total (req, "k1") == 4);

    //  The runtime's checks run before the rules: a type it does not accept
    msgpack_sbuffer_clear (&sbuf);
    s_pack_add (&sbuf, "ev-2", "test.nope", "k1", 1);
    body = s_call (req, "PUBLISH", &sbuf, &status);
    assert (streq (status, "ERR"));
    char code [32];
    assert (event_codec_obj_strcpy (event_codec_map_get (event_codec_root (body), "code"),
                                    code, sizeof code));
    assert (streq (code, FUNNEL_ERR_UNKNOWN_TYPE));
    zstr_free (&status);
    event_codec_destroy (&body);
    msgpack_sbuffer_destroy (&sbuf);

    //  $TERM by hand: STOPPED 0 (a clean stop), then the actor ends
    zstr_send (svc, "$TERM");
    char *stopped = NULL;
    int exit_code = -1;
    zsock_set_rcvtimeo (svc, WAIT_MS);
    assert (zsock_recv (svc, "si", &stopped, &exit_code) == 0);
    assert (streq (stopped, "STOPPED") && exit_code == 0);
    zstr_free (&stopped);
    zactor_destroy (&svc);              //  Returns once the actor has ended
    zsock_destroy (&sub);
    zsock_destroy (&req);

    s_test_restart (text);
    unlink (path);
    zstr_free (&path);
    zstr_free (&text);
}

int
main (void)
{
    funnel_log_init ("actor-test", FUNNEL_LOG_WARN);
    s_test_refusals ();
    s_test_serve ();
    printf ("service_actor_test: OK\n");
    return 0;
}
