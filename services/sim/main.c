/*  funnel-sim — realistic simulated traffic for a running funnel.

    Publishes what the outside world would: campaigns and their spend,
    touches, lead captures, sales work on the deals sales opens, and
    customer life on the customers retention onboards. It talks to the
    services only as an outside system does: PUBLISH batches on their API
    sockets, and a SUB on sales's and retention's PUB to learn the deals
    and customers they created. Also the load generator for benchmarks.

    Nothing doubles: a batch that times out or meets `unavailable` is sent
    again as the same bytes (same ids), so a retry of an applied batch only
    counts duplicates. A batch refused for one event (index in the ERR) is
    sent again without that event.
*/
#include <czmq.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "event_codec.h"
#include "funnel_client.h"
#include "funnel_config.h"
#include "funnel_curve.h"
#include "funnel_log.h"
#include "funnel_signals.h"
#include "sim_gateway.h"
#include "sim_model.h"
#include "funnel_topology.h"

#ifndef FUNNEL_VERSION
#   define FUNNEL_VERSION "0.0.0-dev"
#endif

#define TICK_MS         50
#define CALL_TIMEOUT_MS 5000
#define PROGRESS_MS     5000
#define BATCH_MAX       1000

static const char *s_service_names [SIM_SERVICES] = {
    "campaign", "leads", "sales", "retention"
};



//  --------------------------------------------------------------------
//  Events waiting to be published, per service

#define TYPES_MAX 24

typedef struct {
    char *bytes;                //  One packed event envelope
    size_t size;
    int type;                   //  Index into the type table
    char id [72];
} pending_t;

typedef struct {
    pending_t *items;
    size_t head, count, max;
} outbox_t;

typedef struct {
    double rate;
    int64_t duration_ms;        //  0: forever
    uint64_t seed;
    char run [16];
    size_t batch;
    //  Per service and instance (proto/README.md section 7: an event goes to
    //  the owner of its partition; one instance without `instances`)
    funnel_topology_t *topology [SIM_SERVICES];
    int instances [SIM_SERVICES];
    funnel_client_t *clients [SIM_SERVICES][FUNNEL_INSTANCES_MAX];
    sim_gateway_t *gateway;     //  --via-gateway: PUBLISH goes through it
    outbox_t outbox [SIM_SERVICES][FUNNEL_INSTANCES_MAX];
    zsock_t *sub;
    sim_model_t *model;
    msgpack_sbuffer sbuf;
    //  Progress
    const char *type_names [TYPES_MAX];
    int64_t type_counts [TYPES_MAX];
    int ntypes;
    int64_t sent, accepted, duplicates, rejected, retries, dropped;
    int64_t deals_seen, customers_seen;
    int64_t last_warn;
} sim_t;

static int
s_type_index (sim_t *self, const char *type)
{
    for (int i = 0; i < self->ntypes; i++)
        if (!strcmp (self->type_names [i], type))
            return i;
    if (self->ntypes == TYPES_MAX)
        return TYPES_MAX - 1;
    self->type_names [self->ntypes] = type;     //  The model's literals
    return self->ntypes++;
}

static void
s_outbox_push (outbox_t *box, pending_t item)
{
    if (box->head + box->count == box->max) {
        if (box->head > 0) {
            memmove (box->items, box->items + box->head, box->count * sizeof (pending_t));
            box->head = 0;
        }
        else {
            box->max = box->max ? box->max * 2 : 256;
            box->items = realloc (box->items, box->max * sizeof (pending_t));
            assert (box->items);
        }
    }
    box->items [box->head + box->count++] = item;
}

//  Removes the i-th pending event (from the head).
static void
s_outbox_remove (outbox_t *box, size_t i)
{
    pending_t *at = &box->items [box->head + i];
    free (at->bytes);
    memmove (at, at + 1, (box->count - i - 1) * sizeof (pending_t));
    box->count--;
}

static void
s_outbox_free (outbox_t *box)
{
    for (size_t i = 0; i < box->count; i++)
        free (box->items [box->head + i].bytes);
    free (box->items);
    memset (box, 0, sizeof *box);
}


//  --------------------------------------------------------------------
//  Packing events

static void
s_pack_str (msgpack_packer *pk, const char *text)
{
    size_t length = strlen (text);
    msgpack_pack_str (pk, length);
    msgpack_pack_str_body (pk, text, length);
}

static void
s_pack_kvs (msgpack_packer *pk, const sim_kv_t *kvs, size_t size)
{
    size_t present = 0;
    for (size_t i = 0; i < size; i++)
        if (kvs [i].key)
            present++;
    msgpack_pack_map (pk, present);
    for (size_t i = 0; i < size; i++) {
        const sim_kv_t *kv = &kvs [i];
        if (!kv->key)
            continue;
        s_pack_str (pk, kv->key);
        switch (kv->kind) {
            case SIM_STR:  s_pack_str (pk, kv->s); break;
            case SIM_INT:  msgpack_pack_int64 (pk, kv->i); break;
            case SIM_BOOL: if (kv->i) msgpack_pack_true (pk); else msgpack_pack_false (pk); break;
            case SIM_NUM:
                //  Whole numbers go as integers: smaller, and exact
                if (kv->d == floor (kv->d) && fabs (kv->d) < 1e15)
                    msgpack_pack_int64 (pk, (int64_t) kv->d);
                else
                    msgpack_pack_double (pk, kv->d);
                break;
            case SIM_STRS: {
                size_t n = 0;
                while (kv->strs [n])
                    n++;
                msgpack_pack_array (pk, n);
                for (size_t k = 0; k < n; k++)
                    s_pack_str (pk, kv->strs [k]);
                break;
            }
            case SIM_MAP:  s_pack_kvs (pk, kv->map, kv->map_size); break;
        }
    }
}

static void
s_emit (void *ctx, sim_service_t service, const char *type, const char *id,
        int64_t ts, const sim_kv_t *data, size_t size)
{
    sim_t *self = (sim_t *) ctx;
    msgpack_sbuffer_clear (&self->sbuf);
    msgpack_packer pk;
    msgpack_packer_init (&pk, &self->sbuf, msgpack_sbuffer_write);
    msgpack_pack_map (&pk, 6);
    s_pack_str (&pk, "v");
    msgpack_pack_uint8 (&pk, 1);
    s_pack_str (&pk, "id");
    s_pack_str (&pk, id);
    s_pack_str (&pk, "type");
    s_pack_str (&pk, type);
    s_pack_str (&pk, "ts");
    msgpack_pack_int64 (&pk, ts);
    s_pack_str (&pk, "src");
    s_pack_str (&pk, "funnel-sim");
    s_pack_str (&pk, "data");
    s_pack_kvs (&pk, data, size);

    pending_t item = { .size = self->sbuf.size, .type = s_type_index (self, type) };
    item.bytes = malloc (item.size);
    assert (item.bytes);
    memcpy (item.bytes, self->sbuf.data, item.size);
    snprintf (item.id, sizeof item.id, "%s", id);
    //  The owner of the event's partition, by the engine's own rule
    int instance = 0;
    if (funnel_topology_partitioned (self->topology [service])) {
        msgpack_unpacked msg;
        msgpack_unpacked_init (&msg);
        if (msgpack_unpack_next (&msg, item.bytes, item.size, NULL) == MSGPACK_UNPACK_SUCCESS) {
            funnel_topology_t *topology = self->topology [service];
            instance = funnel_topology_owner_index (topology,
                funnel_topology_event_part (s_service_names [service],
                                            event_codec_map_get (&msg.data, "data"),
                                            funnel_topology_partitions (topology)));
        }
        msgpack_unpacked_destroy (&msg);
    }
    s_outbox_push (&self->outbox [service][instance], item);
}


//  --------------------------------------------------------------------
//  Publishing

//  A warning at most once a second, so an outage does not flood the log.
static bool
s_warn_ok (sim_t *self)
{
    return funnel_log_every (&self->last_warn, 1000);
}

//  Reads "code", "message" and "index" from an ERR body.
static void
s_read_error (zframe_t *reply, char *code, size_t code_size, char *message,
              size_t message_size, int64_t *index, char *api, size_t api_size)
{
    snprintf (code, code_size, "?");
    snprintf (message, message_size, "(no message)");
    *index = -1;
    if (!reply)
        return;
    funnel_error_t err;
    event_codec_t *msg = event_codec_decode (zframe_data (reply), zframe_size (reply),
                                           &event_codec_limits_event, &err);
    if (!msg)
        return;
    const msgpack_object *root = event_codec_root (msg);
    event_codec_obj_strcpy (event_codec_map_get (root, "code"), code, code_size);
    event_codec_obj_strcpy (event_codec_map_get (root, "api"), api, api_size);
    event_codec_obj_strcpy (event_codec_map_get (root, "message"), message, message_size);
    const msgpack_object *at = event_codec_map_get (root, "index");
    if (at && at->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        *index = (int64_t) at->via.u64;
    event_codec_destroy (&msg);
}

static void
s_read_ok (sim_t *self, zframe_t *reply)
{
    funnel_error_t err;
    event_codec_t *msg = reply ? event_codec_decode (zframe_data (reply), zframe_size (reply),
                                                   &event_codec_limits_event, &err) : NULL;
    if (!msg)
        return;
    const msgpack_object *root = event_codec_root (msg);
    const msgpack_object *accepted = event_codec_map_get (root, "accepted");
    const msgpack_object *duplicates = event_codec_map_get (root, "duplicates");
    if (accepted && accepted->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        self->accepted += (int64_t) accepted->via.u64;
    if (duplicates && duplicates->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        self->duplicates += (int64_t) duplicates->via.u64;
    event_codec_destroy (&msg);
}

//  Sends everything pending for one service, in batches. Returns 0, or -1
//  when stopped while the service was not answering.
static int
s_flush (sim_t *self, int service, int instance)
{
    outbox_t *box = &self->outbox [service][instance];
    const char *name = s_service_names [service];
    int backoff = 100;
    bool followed = false;          //  An ERR moved followed for this batch
    while (box->count) {
        size_t n = box->count < self->batch ? box->count : self->batch;
        msgpack_sbuffer_clear (&self->sbuf);
        msgpack_packer pk;
        msgpack_packer_init (&pk, &self->sbuf, msgpack_sbuffer_write);
        msgpack_pack_array (&pk, n);
        for (size_t i = 0; i < n; i++) {
            pending_t *p = &box->items [box->head + i];
            msgpack_sbuffer_write (&self->sbuf, p->bytes, p->size);
        }
        zframe_t *reply = NULL;
        funnel_call_status_t rc = self->gateway
            ? sim_gateway_publish (self->gateway, self->sbuf.data, self->sbuf.size,
                                   CALL_TIMEOUT_MS, &reply)
            : funnel_client_call (self->clients [service][instance], "PUBLISH", self->sbuf.data,
                                  self->sbuf.size, CALL_TIMEOUT_MS, &reply);
        if (rc == FUNNEL_CALL_OK) {
            s_read_ok (self, reply);
            for (size_t i = 0; i < n; i++) {
                pending_t *p = &box->items [box->head + i];
                self->type_counts [p->type]++;
                free (p->bytes);
            }
            box->head += n;
            box->count -= n;
            if (box->count == 0)
                box->head = 0;
            self->sent += (int64_t) n;
            backoff = 100;
            followed = false;
        }
        else {
            char code [32], message [256];
            int64_t index = -1;
            char api [256] = "";
            if (rc == FUNNEL_CALL_ERR)
                s_read_error (reply, code, sizeof code, message, sizeof message, &index,
                              api, sizeof api);
            if (rc == FUNNEL_CALL_ERR && !strcmp (code, "moved") && *api && !followed) {
                //  The partition moved (the topology changed since we
                //  read it): this instance's events go to the owner named
                log_warn ("%s: %s; sending to %s from now on", name, message, api);
                funnel_client_t *client = funnel_client_new_for (api, name);
                if (client) {
                    funnel_client_destroy (&self->clients [service][instance]);
                    self->clients [service][instance] = client;
                }
                followed = true;
                self->retries++;
                zframe_destroy (&reply);
                continue;
            }
            bool retry_same = rc != FUNNEL_CALL_ERR || !strcmp (code, "unavailable")
                           || !strcmp (code, "internal");
            if (retry_same) {
                //  Same bytes, same ids: whatever was applied counts as duplicates
                self->retries++;
                if (s_warn_ok (self))
                    log_warn ("%s: %s; sending the same %zu events again",
                              name, rc == FUNNEL_CALL_TIMEOUT ? "no reply in time"
                              : rc == FUNNEL_CALL_BROKEN ? "unexpected reply"
                              : message, n);
                zframe_destroy (&reply);
                if (funnel_stop)
                    return -1;
                zclock_sleep (backoff);
                backoff = backoff < 2000 ? backoff * 2 : 2000;
                continue;
            }
            if (index >= 0 && (size_t) index < n) {
                //  One event refused (a rule said no, e.g. the deal closed
                //  meanwhile): leave it out and send the rest
                pending_t *p = &box->items [box->head + (size_t) index];
                if (s_warn_ok (self))
                    log_warn ("%s refused %s %s: %s: %s", name,
                              self->type_names [p->type], p->id, code, message);
                self->rejected++;
                s_outbox_remove (box, (size_t) index);
            }
            else {
                log_error ("%s refused a batch of %zu: %s: %s; dropping it", name, n,
                           code, message);
                for (size_t i = 0; i < n; i++)
                    s_outbox_remove (box, 0);
                self->dropped += (int64_t) n;
            }
        }
        zframe_destroy (&reply);
    }
    return 0;
}


//  --------------------------------------------------------------------
//  What the services tell us: deal.opened, customer.onboarded

static void
s_on_published (sim_t *self, zmsg_t *msg)
{
    zframe_t *topic = zmsg_first (msg);
    zframe_t *body = zmsg_next (msg);
    if (!topic || !body)
        return;
    funnel_error_t err;
    event_codec_t *decoded = event_codec_decode (zframe_data (body), zframe_size (body),
                                               &event_codec_limits_event, &err);
    if (!decoded)
        return;
    funnel_event_t event;
    if (event_codec_event_parse (event_codec_root (decoded), &event, &err) == 0) {
        char a [72] = "", b [72] = "", kind [32] = "new";
        int64_t now = zclock_time ();
        if (!strcmp (event.type, "deal.opened")
        &&  event_codec_obj_strcpy (event_codec_map_get (event.data, "deal"), a, sizeof a)
        &&  event_codec_obj_strcpy (event_codec_map_get (event.data, "lead"), b, sizeof b)) {
            event_codec_obj_strcpy (event_codec_map_get (event.data, "kind"), kind, sizeof kind);
            sim_model_deal_opened (self->model, a, b, kind, now);
            self->deals_seen++;
        }
        else
        if (!strcmp (event.type, "customer.onboarded")
        &&  event_codec_obj_strcpy (event_codec_map_get (event.data, "customer"), a, sizeof a)) {
            sim_model_customer_onboarded (self->model, a, now);
            self->customers_seen++;
        }
    }
    event_codec_destroy (&decoded);
}

//  Reads what the services published until deadline (ms clock).
static void
s_listen (sim_t *self, int64_t deadline)
{
    void *handle = zsock_resolve (self->sub);
    while (!funnel_stop) {
        int64_t wait = deadline - zclock_mono ();
        zmq_pollitem_t item = { handle, 0, ZMQ_POLLIN, 0 };
        if (zmq_poll (&item, 1, wait > 0 ? wait : 0) <= 0)
            return;
        //  Drain without waiting, then poll again
        zmsg_t *msg;
        int budget = 10000;
        while (budget-- && (msg = zmsg_recv_nowait (self->sub))) {
            s_on_published (self, msg);
            zmsg_destroy (&msg);
        }
        if (wait <= 0)
            return;
    }
}


//  --------------------------------------------------------------------
//  Progress

static void
s_progress (sim_t *self, int64_t elapsed_ms, int64_t window_sent, int64_t window_ms,
            const char *label)
{
    char types [1024] = "";
    size_t used = 0;
    for (int i = 0; i < self->ntypes && used < sizeof types; i++)
        if (self->type_counts [i])
            used += (size_t) snprintf (types + used, sizeof types - used, " %s=%lld",
                                       self->type_names [i], (long long) self->type_counts [i]);
    fprintf (stderr, "funnel-sim: %s%5.0fs sent %lld (%.1f/s, avg %.1f/s) dup %lld rejected %lld "
             "retries %lld | deals %lld customers %lld pending %zu |%s\n",
             label, elapsed_ms / 1000.0, (long long) self->sent,
             window_ms > 0 ? window_sent * 1000.0 / window_ms : 0.0,
             elapsed_ms > 0 ? self->sent * 1000.0 / elapsed_ms : 0.0,
             (long long) self->duplicates, (long long) self->rejected,
             (long long) self->retries, (long long) self->deals_seen,
             (long long) self->customers_seen, sim_model_pending (self->model), types);
}


//  --------------------------------------------------------------------
//  Command line

static void
s_help (void)
{
    printf (
"Usage: funnel-sim [OPTIONS]\n"
"Realistic simulated traffic for a running funnel: campaigns and spend, touches,\n"
"lead captures with BANT, sales work on every deal sales opens (interactions,\n"
"objections, offers, discounts, approvals, wins and losses, delivery), and\n"
"customer life (orders, feedback, tickets, activity, churn). Also the load\n"
"generator for benchmarks. Talks to the services only through their API\n"
"(PUBLISH) and PUB sockets, like any outside system.\n"
"\n"
"Options:\n"
"  -c, --config FILE     topology file (ZPL, proto/README.md); defaults if none\n"
"      --set PATH=VALUE  set any topology key, e.g. --set sales/pub=tcp://127.0.0.1:7122\n"
"  -r, --rate N          events per second to publish (default 50)\n"
"  -d, --duration S      stop after S seconds (default: until SIGINT/SIGTERM)\n"
"  -s, --seed N          seed of the model (default 1); the same seed tells the\n"
"                        same stories\n"
"      --run ID          prefix of this run's ids, 1-12 of [a-z0-9] (default: from\n"
"                        the clock, so a second run never collides with the first)\n"
"      --batch N         events per PUBLISH batch, 1-1000 (default 500)\n"
"      --via-gateway     publish through funnel-gateway (POST /v1/events on\n"
"                        gateway/http) instead of the services' API sockets; the\n"
"                        token is FUNNEL_GATEWAY_TOKEN, else the first one in the\n"
"                        file gateway/tokens names (it must allow every type)\n"
"      --log-level LEVEL error|warn|info|debug (default info)\n"
"      --selftest        test the model (deterministic, plausible rates) and exit\n"
"  -h, --help            print this help and exit\n"
"  -V, --version         print the version and exit\n"
"\n"
"Progress goes to stderr every 5 s: events sent, rate, duplicates (retries of\n"
"applied batches), rejected (events a service refused, left out), deals and\n"
"customers learned from the services, and counts per event type.\n"
"Exit: 0 when stopped or the duration is over, 1 when a service never\n"
"answered, 2 on a usage error.\n");
}

static int
s_usage (const char *format, const char *arg)
{
    fprintf (stderr, "funnel-sim: ");
    fprintf (stderr, format, arg);
    fprintf (stderr, "\nTry 'funnel-sim --help' for more information.\n");
    return 2;
}

static bool
s_parse_number (const char *text, double min, double max, double *value)
{
    char *end = NULL;
    double v = strtod (text, &end);
    if (!end || end == text || *end || !(v >= min && v <= max))
        return false;
    *value = v;
    return true;
}

//  Waits until every service answers PING; false if stopped first or
//  a service stays silent for give_up_ms.
static bool
s_wait_ready (sim_t *self, int64_t give_up_ms)
{
    int64_t start = zclock_mono ();
    for (int d = 0; d < SIM_SERVICES * FUNNEL_INSTANCES_MAX && !funnel_stop; d++) {
        int i = d / FUNNEL_INSTANCES_MAX, k = d % FUNNEL_INSTANCES_MAX;
        if (k >= self->instances [i])
            continue;
        while (!funnel_stop) {
            zframe_t *reply = NULL;
            funnel_call_status_t rc = funnel_client_call (self->clients [i][k], "PING", NULL, 0,
                                                          1000, &reply);
            zframe_destroy (&reply);
            if (rc == FUNNEL_CALL_OK)
                break;
            if (zclock_mono () - start > give_up_ms) {
                log_error ("%s at %s does not answer PING; is it running?",
                           s_service_names [i], funnel_client_endpoint (self->clients [i][k]));
                return false;
            }
            if (s_warn_ok (self))
                log_info ("waiting for %s at %s", s_service_names [i],
                          funnel_client_endpoint (self->clients [i][k]));
            zclock_sleep (200);
        }
    }
    return !funnel_stop;
}

int
main (int argc, char **argv)
{
    funnel_signals_init ();

    sim_t self_ = { .rate = 50, .seed = 1, .batch = 500 };
    sim_t *self = &self_;
    const char *config_file = NULL;
    const char *log_level = NULL;
    char **sets = calloc ((size_t) argc + 1, sizeof (char *));
    int nsets = 0;
    bool run_given = false;

    enum { OPT_SET = 256, OPT_RUN, OPT_BATCH, OPT_LOG, OPT_SELFTEST, OPT_VIA_GATEWAY };
    bool via_gateway = false;
    static const struct option options [] = {
        { "config", required_argument, NULL, 'c' },
        { "set", required_argument, NULL, OPT_SET },
        { "rate", required_argument, NULL, 'r' },
        { "duration", required_argument, NULL, 'd' },
        { "seed", required_argument, NULL, 's' },
        { "run", required_argument, NULL, OPT_RUN },
        { "batch", required_argument, NULL, OPT_BATCH },
        { "log-level", required_argument, NULL, OPT_LOG },
        { "selftest", no_argument, NULL, OPT_SELFTEST },
        { "via-gateway", no_argument, NULL, OPT_VIA_GATEWAY },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { NULL, 0, NULL, 0 }
    };
    opterr = 0;
    int opt;
    double value;
    while ((opt = getopt_long (argc, argv, "+:c:r:d:s:hV", options, NULL)) != -1) {
        switch (opt) {
            case 'c': config_file = optarg; break;
            case OPT_SET: sets [nsets++] = optarg; break;
            case 'r':
                if (!s_parse_number (optarg, 0.1, 1e7, &self->rate))
                    return s_usage ("--rate '%s': expected events per second, 0.1 to 10000000", optarg);
                break;
            case 'd':
                if (!s_parse_number (optarg, 0, 1e9, &value))
                    return s_usage ("--duration '%s': expected seconds >= 0", optarg);
                self->duration_ms = (int64_t) (value * 1000);
                break;
            case 's':
                if (!s_parse_number (optarg, 0, 1.8e19, &value) || value != floor (value))
                    return s_usage ("--seed '%s': expected a whole number >= 0", optarg);
                self->seed = (uint64_t) value;
                break;
            case OPT_RUN: {
                size_t length = strlen (optarg);
                bool ok = length >= 1 && length <= 12;
                for (const char *p = optarg; ok && *p; p++)
                    ok = (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9');
                if (!ok)
                    return s_usage ("--run '%s': expected 1-12 of [a-z0-9]", optarg);
                snprintf (self->run, sizeof self->run, "%s", optarg);
                run_given = true;
                break;
            }
            case OPT_BATCH:
                if (!s_parse_number (optarg, 1, BATCH_MAX, &value))
                    return s_usage ("--batch '%s': expected 1 to 1000", optarg);
                self->batch = (size_t) value;
                break;
            case OPT_LOG: log_level = optarg; break;
            case OPT_VIA_GATEWAY: via_gateway = true; break;
            case OPT_SELFTEST: {
                int failed = sim_model_selftest (true);
                free (sets);
                return failed ? 1 : 0;
            }
            case 'h': s_help (); free (sets); return 0;
            case 'V': printf ("funnel-sim %s\n", FUNNEL_VERSION); free (sets); return 0;
            case ':': return s_usage ("option '%s' needs an argument", argv [optind - 1]);
            default:  return s_usage ("unknown option '%s'", argv [optind - 1]);
        }
    }
    if (optind < argc)
        return s_usage ("unexpected argument '%s'", argv [optind]);

    //  The topology goes through the common loader (file, environment,
    //  --set, defaults, validation) as section "sim"
    char *cargv [2 * 128 + 8];
    int cargc = 0;
    cargv [cargc++] = argv [0];
    if (config_file) {
        cargv [cargc++] = "-c";
        cargv [cargc++] = (char *) config_file;
    }
    if (log_level) {
        cargv [cargc++] = "--log-level";
        cargv [cargc++] = (char *) log_level;
    }
    for (int i = 0; i < nsets && i < 128; i++) {
        cargv [cargc++] = "--set";
        cargv [cargc++] = sets [i];
    }
    cargv [cargc] = NULL;
    funnel_config_about_t about = { "sim", "simulated traffic", NULL };
    funnel_config_status_t status;
    funnel_config_t *config = funnel_config_load (cargc, cargv, &about, &status);
    free (sets);
    if (!config)
        return status == FUNNEL_CONFIG_EXIT_OK ? 0 : 2;
    funnel_log_level_t level = FUNNEL_LOG_INFO;
    funnel_log_level_parse (funnel_config_get (config, "log/level", "info"), &level);
    funnel_log_init ("sim", level);

    if (!run_given) {
        //  Seconds since 2024 in base 36: short, and new for every start
        uint64_t n = (uint64_t) (zclock_time () / 1000 - 1704067200LL);
        char digits [16];
        int k = 0;
        do {
            digits [k++] = "0123456789abcdefghijklmnopqrstuvwxyz" [n % 36];
            n /= 36;
        } while (n && k < 12);
        for (int i = 0; i < k; i++)
            self->run [i] = digits [k - 1 - i];
        self->run [k] = 0;
    }

    int rc = funnel_curve_setup (config, "sim");
    msgpack_sbuffer_init (&self->sbuf);
    for (int i = 0; i < SIM_SERVICES && rc == 0; i++) {
        self->topology [i] = funnel_topology_new (config, s_service_names [i]);
        if (!self->topology [i]) {
            rc = 2;
            break;
        }
        self->instances [i] = funnel_topology_count (self->topology [i]);
        for (int k = 0; k < self->instances [i] && rc == 0; k++) {
            const char *endpoint = funnel_topology_at (self->topology [i], k)->api;
            self->clients [i][k] = funnel_client_new_for (endpoint, s_service_names [i]);
            if (!self->clients [i][k]) {
                log_error ("cannot connect to %s at %s", s_service_names [i], endpoint);
                rc = 1;
            }
        }
    }
    if (rc == 0 && via_gateway) {
        const char *tokens = funnel_config_get (config, "gateway/tokens", NULL);
        const char *env = getenv ("FUNNEL_GATEWAY_TOKEN");
        char *token = env && *env ? strdup (env) : tokens ? sim_gateway_first_token (tokens) : NULL;
        const char *address = funnel_config_endpoint (config, "gateway", "http");
        if (!token) {
            log_error ("--via-gateway: no token (FUNNEL_GATEWAY_TOKEN, or gateway/tokens)");
            rc = 2;
        }
        else
        if (!(self->gateway = sim_gateway_new (address, token))) {
            log_error ("--via-gateway: cannot set up HTTP to %s", address);
            rc = 1;
        }
        else
            log_info ("publishing through the gateway at http://%s/v1/events", address);
        free (token);
    }
    //  One SUB on both publishers: sales opens deals, retention onboards
    self->sub = zsock_new (ZMQ_SUB);
    zsock_set_rcvhwm (self->sub, 1000000);
    zsock_set_maxmsgsize (self->sub, 1024 * 1024);
    zsock_set_linger (self->sub, 0);
    zsock_set_subscribe (self->sub, "deal.opened");
    zsock_set_subscribe (self->sub, "customer.onboarded");
    //  CURVE options apply per connect: each pins its own server's key
    //  (every instance's, with instances)
    for (int i = 2; i < SIM_SERVICES && rc == 0; i++)
        for (int k = 0; k < self->instances [i] && rc == 0; k++)
            if (funnel_curve_client (self->sub, s_service_names [i])
            ||  zsock_connect (self->sub, "%s", funnel_topology_at (self->topology [i], k)->pub)) {
                log_error ("cannot connect to the %s PUB endpoint", s_service_names [i]);
                rc = 1;
            }
    if (rc == 0 && !s_wait_ready (self, 60000))
        rc = funnel_stop ? 0 : 1;

    if (rc == 0 && !funnel_stop) {
        log_info ("publishing %.1f events/s, seed %llu, run '%s'%s", self->rate,
                  (unsigned long long) self->seed, self->run,
                  self->duration_ms ? "" : ", until stopped");
        self->model = sim_model_new (self->seed, self->run, s_emit, self);
        int64_t start = zclock_mono ();
        int64_t last = start, next_progress = start + PROGRESS_MS;
        int64_t window_start = start, window_sent = 0;
        double credit = 0;
        sim_model_start (self->model, zclock_time ());
        while (!funnel_stop) {
            int64_t now = zclock_mono ();
            if (self->duration_ms && now - start >= self->duration_ms)
                break;
            //  Credit at the asked rate; at most a second's worth, so a
            //  stall (a service down) is not followed by a burst
            credit += self->rate * (double) (now - last) / 1000.0;
            if (credit > self->rate)
                credit = self->rate;
            last = now;
            if (credit >= 1) {
                size_t spent = sim_model_step (self->model, zclock_time (), (size_t) credit);
                credit -= (double) spent;
            }
            int64_t before = self->sent;
            for (int d = 0; d < SIM_SERVICES * FUNNEL_INSTANCES_MAX && !funnel_stop; d++)
                if (d % FUNNEL_INSTANCES_MAX < self->instances [d / FUNNEL_INSTANCES_MAX]
                &&  s_flush (self, d / FUNNEL_INSTANCES_MAX, d % FUNNEL_INSTANCES_MAX))
                    break;
            window_sent += self->sent - before;
            now = zclock_mono ();
            if (now >= next_progress) {
                s_progress (self, now - start, window_sent, now - window_start, "");
                window_start = now;
                window_sent = 0;
                next_progress = now + PROGRESS_MS;
            }
            s_listen (self, now + TICK_MS);
        }
        int64_t end = zclock_mono ();
        s_progress (self, end - start, self->sent, end - start, "done: ");
    }

    sim_model_destroy (&self->model);
    sim_gateway_destroy (&self->gateway);
    for (int i = 0; i < SIM_SERVICES; i++) {
        for (int k = 0; k < FUNNEL_INSTANCES_MAX; k++) {
            funnel_client_destroy (&self->clients [i][k]);
            s_outbox_free (&self->outbox [i][k]);
        }
        funnel_topology_destroy (&self->topology [i]);
    }
    zsock_destroy (&self->sub);
    funnel_curve_teardown ();
    msgpack_sbuffer_destroy (&self->sbuf);
    funnel_config_destroy (&config);
    return rc;
}
