/*  funnel-bench — measures, side by side on one machine:

    service  events/s one service applies through batched PUBLISH (dedup +
             state + outbox, one engine commit per batch), driven over its API
             socket with a few batches in flight;
    raw      events/s of a pipelined hiredis loop doing the same Redis
             writes per event (SET id EX, HINCRBY, XADD) with no service;
    decode   events/s of the codec: guarded decode + envelope parse.

    Usage: funnel-bench service ENDPOINT EVENTS
           funnel-bench raw REDIS_URL EVENTS
           funnel-bench decode EVENTS
    bench/run_bench.sh starts a private Redis and a service and runs all three.
*/
#include <czmq.h>
#include <hiredis/hiredis.h>
#include "event_codec.h"
#include "redis_store.h"

#define BATCH   1000
#define WINDOW  4               //  Batches in flight

static int64_t
s_usecs (void)
{
    return zclock_usecs ();
}

//  Packs a test.add event like an outside system would send it.
static void
s_pack_event (msgpack_packer *pk, const char *run, int64_t n)
{
    char id [64], key [32];
    snprintf (id, sizeof id, "bench-%s-%" PRId64, run, n);
    snprintf (key, sizeof key, "k%" PRId64, n % 1000);
    msgpack_pack_map (pk, 6);
    event_codec_pack_cstr (pk, "v");
    msgpack_pack_uint8 (pk, 1);
    event_codec_pack_cstr (pk, "id");
    event_codec_pack_cstr (pk, id);
    event_codec_pack_cstr (pk, "type");
    event_codec_pack_cstr (pk, "test.add");
    event_codec_pack_cstr (pk, "ts");
    msgpack_pack_int64 (pk, zclock_time ());
    event_codec_pack_cstr (pk, "src");
    event_codec_pack_cstr (pk, "bench");
    event_codec_pack_cstr (pk, "data");
    msgpack_pack_map (pk, 2);
    event_codec_pack_cstr (pk, "key");
    event_codec_pack_cstr (pk, key);
    event_codec_pack_cstr (pk, "n");
    msgpack_pack_int32 (pk, 1);
}

//  client_cert (a secret certificate) and server_cert (the server's public
//  one), both NULL for plain ZeroMQ: the same run over CURVE
static int
s_bench_service (const char *endpoint, int64_t events, const char *client_cert,
                 const char *server_cert)
{
    char run [32];
    snprintf (run, sizeof run, "%" PRId64, zclock_time ());
    int batches = (int) (events / BATCH);
    //  Encode everything first: the clock measures the service only
    msgpack_sbuffer *bodies = (msgpack_sbuffer *) calloc (batches, sizeof (msgpack_sbuffer));
    for (int b = 0; b < batches; b++) {
        msgpack_sbuffer_init (&bodies [b]);
        msgpack_packer pk;
        msgpack_packer_init (&pk, &bodies [b], msgpack_sbuffer_write);
        msgpack_pack_array (&pk, BATCH);
        for (int i = 0; i < BATCH; i++)
            s_pack_event (&pk, run, (int64_t) b * BATCH + i);
    }
    zsock_t *dealer = zsock_new (ZMQ_DEALER);
    zsock_set_rcvtimeo (dealer, 30000);
    if (client_cert && server_cert) {
        zcert_t *client = zcert_load (client_cert);
        zcert_t *server = zcert_load (server_cert);
        if (!client || !server) {
            fprintf (stderr, "funnel-bench: cannot load %s or %s\n", client_cert, server_cert);
            return 1;
        }
        zcert_apply (client, dealer);
        zsock_set_curve_serverkey (dealer, zcert_public_txt (server));
        zcert_destroy (&client);
        zcert_destroy (&server);
    }
    zsock_connect (dealer, "%s", endpoint);
    int64_t start = s_usecs ();
    int sent = 0, received = 0, failed = 0;
    while (received < batches) {
        while (sent < batches && sent - received < WINDOW) {
            zmsg_t *msg = zmsg_new ();
            zmsg_addmem (msg, "", 0);
            zmsg_addstr (msg, "PUBLISH");
            zmsg_addmem (msg, bodies [sent].data, bodies [sent].size);
            zmsg_send (&msg, dealer);
            sent++;
        }
        zmsg_t *reply = zmsg_recv (dealer);
        if (!reply) {
            fprintf (stderr, "funnel-bench: no reply from %s\n", endpoint);
            return 1;
        }
        zmsg_first (reply);                     //  The empty delimiter
        zframe_t *status = zmsg_next (reply);
        if (!status || !zframe_streq (status, "OK"))
            failed++;
        zmsg_destroy (&reply);
        received++;
    }
    double secs = (s_usecs () - start) / 1e6;
    printf ("%s: %" PRId64 " events in %.2f s = %.0f events/s (%d batches of %d, %d failed)\n",
            client_cert ? "service-curve" : "service", (int64_t) batches * BATCH, secs, batches * BATCH / secs, batches, BATCH, failed);
    for (int b = 0; b < batches; b++)
        msgpack_sbuffer_destroy (&bodies [b]);
    free (bodies);
    zsock_destroy (&dealer);
    return failed ? 1 : 0;
}

static int
s_bench_raw (const char *url, int64_t events)
{
    redis_url_t parsed;
    funnel_error_t err;
    if (redis_url_parse (url, &parsed, &err) != 0) {
        fprintf (stderr, "funnel-bench: %s\n", err.message);
        return 2;
    }
    redisContext *redis = redisConnect (parsed.host, parsed.port);
    if (!redis || redis->err) {
        fprintf (stderr, "funnel-bench: cannot connect to %s\n", url);
        return 1;
    }
    char run [32];
    snprintf (run, sizeof run, "%" PRId64, zclock_time ());
    int64_t start = s_usecs ();
    for (int64_t base = 0; base < events; base += BATCH) {
        for (int64_t n = base; n < base + BATCH; n++) {
            char id [96], key [48], seq [32];
            snprintf (id, sizeof id, "raw:id:bench-%s-%" PRId64, run, n);
            snprintf (key, sizeof key, "raw:counter:k%" PRId64, n % 1000);
            snprintf (seq, sizeof seq, "0-%" PRId64, n + 1);
            msgpack_sbuffer sbuf;
            msgpack_sbuffer_init (&sbuf);
            msgpack_packer pk;
            msgpack_packer_init (&pk, &sbuf, msgpack_sbuffer_write);
            s_pack_event (&pk, run, n);
            redisAppendCommand (redis, "SET %s 1 EX 691200", id);
            redisAppendCommand (redis, "HINCRBY %s total 1", key);
            redisAppendCommand (redis, "XADD raw:outbox:%s MAXLEN ~ 1000000 %s e %b",
                                run, seq, sbuf.data, sbuf.size);
            msgpack_sbuffer_destroy (&sbuf);
        }
        for (int i = 0; i < BATCH * 3; i++) {
            redisReply *reply = NULL;
            if (redisGetReply (redis, (void **) &reply) != REDIS_OK) {
                fprintf (stderr, "funnel-bench: redis error %s\n", redis->errstr);
                return 1;
            }
            freeReplyObject (reply);
        }
    }
    double secs = (s_usecs () - start) / 1e6;
    printf ("raw:     %" PRId64 " events in %.2f s = %.0f events/s (3 pipelined writes each)\n",
            events, secs, events / secs);
    redisFree (redis);
    return 0;
}

static int
s_bench_decode (int64_t events)
{
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init (&sbuf);
    msgpack_packer pk;
    msgpack_packer_init (&pk, &sbuf, msgpack_sbuffer_write);
    s_pack_event (&pk, "decode", 42);
    int64_t start = s_usecs ();
    for (int64_t i = 0; i < events; i++) {
        funnel_error_t err;
        event_codec_t *msg = event_codec_decode (sbuf.data, sbuf.size, &event_codec_limits_event, &err);
        funnel_event_t event;
        if (!msg || event_codec_event_parse (event_codec_root (msg), &event, &err) != 0) {
            fprintf (stderr, "funnel-bench: decode failed\n");
            return 1;
        }
        event_codec_destroy (&msg);
    }
    double secs = (s_usecs () - start) / 1e6;
    printf ("decode:  %" PRId64 " events of %zu bytes in %.2f s = %.0f events/s\n",
            events, sbuf.size, secs, events / secs);
    msgpack_sbuffer_destroy (&sbuf);
    return 0;
}

int
main (int argc, char *argv [])
{
    zsys_handler_set (NULL);
    if (argc >= 4 && streq (argv [1], "service"))
        return s_bench_service (argv [2], atoll (argv [3]), argc >= 6 ? argv [4] : NULL,
                                argc >= 6 ? argv [5] : NULL);
    if (argc >= 4 && streq (argv [1], "raw"))
        return s_bench_raw (argv [2], atoll (argv [3]));
    if (argc >= 3 && streq (argv [1], "decode"))
        return s_bench_decode (atoll (argv [2]));
    fprintf (stderr, "usage: funnel-bench service ENDPOINT EVENTS | raw REDIS_URL EVENTS"
                     " | decode EVENTS\n");
    return 2;
}
