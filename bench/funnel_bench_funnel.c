/*  funnel-bench-funnel — the whole-funnel benchmark.

    Runs N buyer journeys (bench_journey.h: about 22 applied events each)
    through the four running services, over the wire protocol only, and
    waits until every count is exact. Then it reports journeys/s end to end,
    events/s applied per service, Redis CPU per applied event and its top
    commands, how long its EXECs held it (p50/p99/p99.9), Redis bytes per
    journey by kind (entity state apart from outbox and dedup), daemon RSS
    and CPU, and single-event PUBLISH latency to one service with and
    without another service ingesting 1000-event batches. Redis is read
    only for CPU, latency and memory accounting (INFO, SCAN, MEMORY USAGE;
    CONFIG RESETSTAT before each measured phase), never for the services'
    data, so any engine that speaks proto/ can be measured.

    bench/run_funnel_bench.sh starts a private Redis and the services and
    runs it. Exit code 0 when every count was exact, 1 otherwise, 2 usage.

    Modules: bench_journey (the events), bench_pipe (batched PUBLISH with
    several in flight), bench_redis (CPU, command and memory accounting),
    bench_latency (the single-request probes and the background load).
*/
#include <czmq.h>
#include <getopt.h>
#include "bench_journey.h"
#include "bench_latency.h"
#include "bench_pipe.h"
#include "bench_redis.h"
#include "bench_route.h"
#include "event_codec.h"
#include "funnel_client.h"
#include "funnel_config.h"
#include "funnel_log.h"
#include "funnel_signals.h"
#include "funnel_topology.h"

#define SERVICES    4
enum { CAMPAIGN, LEADS, SALES, RETENTION };
static const char *s_names [SERVICES] = { "campaign", "leads", "sales", "retention" };
#define MEMROWS     256
#define REDIS_NODES_MAX 16
#define PROCS_MAX       64      //  Daemon processes (instances and the monitor)
#define MONITOR         SERVICES
#define CMDSTATS    256

//  STATS counters read; per_journey ≥ 0 is the exact delta N journeys must
//  make (-1: reported, not checked).
typedef struct {
    const char *name;
    int per_journey;
} counter_t;

//  `conflicts` (with instances: batches re-run because another instance
//  changed a record they read) is reported, absent without instances.
static const counter_t s_counters [SERVICES][13] = {
    { { "accepted", 6 }, { "consumed", 4 }, { "touches", 6 }, { "reached", 1 },
      { "engaged", 1 }, { "conv_lead", 1 }, { "conv_mql", 1 }, { "conv_sql", 1 },
      { "conv_won", 1 }, { "consume_rejected", 0 }, { "duplicates", -1 }, { "conflicts", -1 },
      { NULL, 0 } },
    { { "accepted", 1 }, { "consumed", 6 }, { "leads", 1 }, { "mql", 1 }, { "sql", 1 },
      { "consume_rejected", 0 }, { "duplicates", -1 }, { "conflicts", -1 }, { NULL, 0 } },
    { { "accepted", 2 }, { "consumed", 1 }, { "deals", 1 }, { "won", 1 }, { "offers", 1 },
      { "consume_rejected", 0 }, { "duplicates", -1 }, { "conflicts", -1 }, { NULL, 0 } },
    { { "accepted", 1 }, { "consumed", 1 }, { "customers", 1 }, { "repeat", 1 },
      { "consume_rejected", 0 }, { "duplicates", -1 }, { "conflicts", -1 }, { NULL, 0 } },
};
#define COUNTERS    13

typedef struct {
    int64_t journeys;
    int batch;
    int window;
    int probes;
    int probe_seconds;
    int timeout_s;
    int mem_sample;
    int drop_every;             //  Test hook: ignore every k-th announcement
    bool touch_ingest;          //  Only touches to campaign: -n counts touches
    bool series;                //  --touch-ingest: print every sample to stderr
    //  The daemons' processes, for RSS and CPU: one per service, or one per
    //  instance (label "leads@a"), and the monitor (svc MONITOR)
    struct {
        int svc;
        char label [48];
        int pid;
    } procs [PROCS_MAX];
    int proc_count;
    //  redis-server processes (one, or a cluster's nodes), for their CPU
    //  over the journeys from /proc: engine-agnostic, no INFO needed
    char redis_names [REDIS_NODES_MAX][32];
    int redis_pids [REDIS_NODES_MAX];
    int redis_count;
} options_t;

typedef struct {
    int64_t value [SERVICES][COUNTERS];
} stats_t;

typedef struct {
    int64_t utime, rss_kb;      //  CPU ticks (user + system), VmRSS
} proc_t;

typedef struct {
    options_t opt;
    funnel_config_t *config;
    //  Who owns which partition of each service: PUBLISH goes to the owner
    //  of each event's partition (route), PING/STATS/GET to the owner of
    //  partition 0 (client: any instance answers them for the whole service)
    funnel_topology_t *topology [SERVICES];
    funnel_client_t *client [SERVICES];
    bench_redis_t *redis;
    char run [16];
    zsock_t *sub;               //  deal.opened (sales), customer.onboarded (retention)
    //  Journey phase
    bench_route_t *route [SERVICES];
    int64_t touch_next, capture_next;
    uint8_t *flags;             //  Per journey: DEAL_SEEN, CUSTOMER_SEEN
    char (*deal) [FUNNEL_ID_MAX + 1];
    int64_t *deal_queue, deal_head, deal_tail;
    int64_t *customer_queue, customer_head, customer_tail;
    int64_t deals_seen, customers_seen, recovered, last_progress, announcements;
    char error [600];
} bench_t;

#define DEAL_SEEN       1
#define CUSTOMER_SEEN   2


//  --------------------------------------------------------------------------
//  Small helpers

static int64_t
s_now_us (void)
{
    return zclock_usecs ();
}

static void
s_packer (msgpack_sbuffer *sbuf, msgpack_packer *pk)
{
    msgpack_sbuffer_init (sbuf);
    msgpack_packer_init (pk, sbuf, msgpack_sbuffer_write);
}

//  Where the service answers PING, STATS and GET: the owner of partition 0
//  (STATS counters are service-wide, and any instance answers GET).
static const char *
s_api (bench_t *self, int service)
{
    return funnel_topology_owner (self->topology [service], 0)->api;
}

//  One request; on OK the decoded reply body (caller destroys), else NULL
//  with *status telling why.
static event_codec_t *
s_call (funnel_client_t *client, const char *verb, const msgpack_sbuffer *body,
        int timeout_ms, funnel_call_status_t *status)
{
    zframe_t *reply = NULL;
    funnel_call_status_t rc = funnel_client_call (client, verb,
        body ? body->data : NULL, body ? body->size : 0, timeout_ms, &reply);
    if (status)
        *status = rc;
    event_codec_t *msg = NULL;
    if (rc == FUNNEL_CALL_OK && reply) {
        funnel_error_t err;
        msg = event_codec_decode (zframe_data (reply), zframe_size (reply),
                                 &event_codec_limits_body, &err);
    }
    else
    if (rc == FUNNEL_CALL_ERR && reply && status) {
        //  Print the ERR body once for the caller's context
        funnel_error_t err;
        event_codec_t *error = event_codec_decode (zframe_data (reply), zframe_size (reply),
                                                 &event_codec_limits_event, &err);
        char code [64] = "?", message [300] = "";
        if (error) {
            event_codec_obj_strcpy (event_codec_map_get (event_codec_root (error), "code"), code, sizeof code);
            event_codec_obj_strcpy (event_codec_map_get (event_codec_root (error), "message"),
                               message, sizeof message);
        }
        if (!streq (code, "not_found"))
            fprintf (stderr, "funnel-bench-funnel: %s %s: ERR %s: %s\n",
                     funnel_client_endpoint (client), verb, code, message);
        event_codec_destroy (&error);
    }
    zframe_destroy (&reply);
    return msg;
}

static int
s_stats (bench_t *self, stats_t *stats)
{
    memset (stats, 0, sizeof *stats);
    for (int s = 0; s < SERVICES; s++) {
        event_codec_t *msg = s_call (self->client [s], "STATS", NULL, 10000, NULL);
        const msgpack_object *counters = msg
            ? event_codec_map_get (event_codec_root (msg), "counters") : NULL;
        if (!counters) {
            event_codec_destroy (&msg);
            snprintf (self->error, sizeof self->error, "%s: STATS failed", s_names [s]);
            return -1;
        }
        for (int c = 0; s_counters [s][c].name; c++) {
            const msgpack_object *value = event_codec_map_get (counters, s_counters [s][c].name);
            if (value && value->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
                stats->value [s][c] = (int64_t) value->via.u64;
            else
            if (value && value->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
                stats->value [s][c] = value->via.i64;
        }
        event_codec_destroy (&msg);
    }
    return 0;
}

static int64_t
s_counter (const stats_t *stats, int s, const char *name)
{
    for (int c = 0; s_counters [s][c].name; c++)
        if (streq (s_counters [s][c].name, name))
            return stats->value [s][c];
    return 0;
}

//  Number of checked counters whose delta is not yet exactly as expected.
static int
s_mismatches (const options_t *opt, const stats_t *before, const stats_t *after, bool print)
{
    int wrong = 0;
    for (int s = 0; s < SERVICES; s++)
        for (int c = 0; s_counters [s][c].name; c++) {
            if (s_counters [s][c].per_journey < 0)
                continue;
            int64_t want = s_counters [s][c].per_journey * opt->journeys;
            int64_t got = after->value [s][c] - before->value [s][c];
            if (got != want) {
                wrong++;
                if (print)
                    fprintf (stderr, "funnel-bench-funnel: %s %s: %" PRId64 " of %" PRId64 "\n",
                             s_names [s], s_counters [s][c].name, got, want);
            }
        }
    return wrong;
}

static int64_t
s_applied (const stats_t *before, const stats_t *after, int s)
{
    return s_counter (after, s, "accepted") - s_counter (before, s, "accepted")
         + s_counter (after, s, "consumed") - s_counter (before, s, "consumed");
}

static void
s_proc (int pid, proc_t *proc)
{
    memset (proc, 0, sizeof *proc);
    if (pid <= 0)
        return;
    char path [64], line [512];
    snprintf (path, sizeof path, "/proc/%d/status", pid);
    FILE *file = fopen (path, "r");
    while (file && fgets (line, sizeof line, file))
        if (strncmp (line, "VmRSS:", 6) == 0)
            proc->rss_kb = strtoll (line + 6, NULL, 10);
    if (file)
        fclose (file);
    snprintf (path, sizeof path, "/proc/%d/stat", pid);
    file = fopen (path, "r");
    char text [1024] = "";
    if (file) {
        size_t size = fread (text, 1, sizeof text - 1, file);
        text [size] = 0;
        fclose (file);
    }
    //  Fields after "(comm)": state is 3, utime 14, stime 15
    char *p = strrchr (text, ')');
    for (int field = 2; p && *p && field < 14; p++)
        if (*p == ' ')
            field++;
    if (p && *p) {
        char *end;
        int64_t utime = strtoll (p, &end, 10);
        proc->utime = utime + strtoll (end, NULL, 10);
    }
}


//  Every daemon process listed (opt->procs), in that order.
static void
s_procs (const options_t *opt, proc_t *procs)
{
    for (int i = 0; i < opt->proc_count; i++)
        s_proc (opt->procs [i].pid, &procs [i]);
}

//  CPU ticks of service s (the sum over its instances; MONITOR: the
//  monitor) between two readings; -1 when none of its processes is listed.
static int64_t
s_svc_ticks (const options_t *opt, const proc_t *before, const proc_t *after, int s)
{
    int64_t ticks = -1;
    for (int i = 0; i < opt->proc_count; i++)
        if (opt->procs [i].svc == s)
            ticks = MAX (ticks, 0) + after [i].utime - before [i].utime;
    return ticks;
}

//  --------------------------------------------------------------------------
//  Start: services answer, subscriptions live, campaigns and the probe deal

//  Every instance of every service answers PING with Redis ok.
static int
s_wait_ready (bench_t *self)
{
    for (int s = 0; s < SERVICES; s++)
        for (int i = 0; i < funnel_topology_count (self->topology [s]); i++) {
            const funnel_instance_t *instance = funnel_topology_at (self->topology [s], i);
            funnel_client_t *client = funnel_client_new (instance->api);
            int64_t deadline = zclock_mono () + 15000;
            bool ok = false;
            while (!ok && zclock_mono () < deadline && !funnel_stop) {
                event_codec_t *msg = s_call (client, "PING", NULL, 1000, NULL);
                char redis [16] = "";
                if (msg)
                    event_codec_obj_strcpy (event_codec_map_get (event_codec_root (msg), "redis"),
                                       redis, sizeof redis);
                ok = streq (redis, "ok");
                event_codec_destroy (&msg);
                if (!ok)
                    zclock_sleep (100);
            }
            funnel_client_destroy (&client);
            if (!ok) {
                snprintf (self->error, sizeof self->error, "%s%s%s does not answer PING with "
                          "Redis ok at %s", s_names [s], *instance->name ? "@" : "",
                          instance->name, instance->api);
                return -1;
            }
        }
    return 0;
}

//  A SUB that has seen a heartbeat of every publisher (each instance of
//  sales and retention) is subscribed there (PUB drops what comes before a
//  subscription arrives). With instances a heartbeat names its partition,
//  so its instance is the partition's owner.
static int
s_subscribe (bench_t *self)
{
    self->sub = zsock_new (ZMQ_SUB);
    zsock_set_rcvhwm (self->sub, 0);
    zsock_set_maxmsgsize (self->sub, 1024 * 1024);
    zsock_set_linger (self->sub, 0);
    zsock_set_subscribe (self->sub, "deal.opened");
    zsock_set_subscribe (self->sub, "customer.onboarded");
    zsock_set_subscribe (self->sub, "$hb");
    const int publishers [2] = { SALES, RETENTION };
    int waiting = 0;
    bool seen [2][FUNNEL_INSTANCES_MAX] = { { false } };
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < funnel_topology_count (self->topology [publishers [k]]); i++, waiting++)
            if (zsock_connect (self->sub, "%s",
                               funnel_topology_at (self->topology [publishers [k]], i)->pub)) {
                snprintf (self->error, sizeof self->error,
                          "cannot connect to a sales/retention PUB");
                return -1;
            }
    int64_t deadline = zclock_mono () + 10000;
    zsock_set_rcvtimeo (self->sub, 200);
    while (waiting > 0 && zclock_mono () < deadline && !funnel_stop) {
        zmsg_t *msg = zmsg_recv (self->sub);
        if (!msg)
            continue;
        zframe_t *topic = zmsg_first (msg);
        zframe_t *body = zmsg_next (msg);
        if (topic && body && zframe_streq (topic, "$hb")) {
            funnel_error_t err;
            event_codec_t *hb = event_codec_decode (zframe_data (body), zframe_size (body),
                                                  &event_codec_limits_event, &err);
            char svc [32] = "";
            int64_t part = -1;
            if (hb) {
                event_codec_obj_strcpy (event_codec_map_get (event_codec_root (hb), "svc"), svc, sizeof svc);
                part = bench_map_int (event_codec_root (hb), "part");
            }
            int k = streq (svc, "sales") ? 0 : streq (svc, "retention") ? 1 : -1;
            funnel_topology_t *topology = k >= 0 ? self->topology [publishers [k]] : NULL;
            if (topology && part < funnel_topology_partitions (topology)) {
                int i = funnel_topology_owner_index (topology, part > 0 ? (int) part : 0);
                if (!seen [k][i]) {
                    seen [k][i] = true;
                    waiting--;
                }
            }
            event_codec_destroy (&hb);
        }
        zmsg_destroy (&msg);
    }
    zsock_set_rcvtimeo (self->sub, -1);
    if (waiting > 0) {
        snprintf (self->error, sizeof self->error, "no heartbeat from %d of the sales and "
                  "retention PUBs in 10 s", waiting);
        return -1;
    }
    return 0;
}

//  The campaigns (each to the instance owning its partition) and the
//  latency probes' deal.
static int
s_setup (bench_t *self)
{
    msgpack_sbuffer sbuf;
    msgpack_packer pk;
    s_packer (&sbuf, &pk);
    bench_route_t *campaign = bench_route_new (self->topology [CAMPAIGN], "campaign",
                                               "campaign (setup)", BENCH_CAMPAIGNS, 1, 10000);
    bench_route_t *sales = bench_route_new (self->topology [SALES], "sales", "sales (setup)",
                                            1, 1, 10000);
    int rc = campaign && sales ? 0 : -1;
    for (int k = 0; rc == 0 && k < BENCH_CAMPAIGNS; k++) {
        bench_pack_campaign_upsert (&pk, self->run, k);
        rc = bench_route_add (campaign, &sbuf, 1);
    }
    if (rc == 0)
        rc = bench_route_drain (campaign, 10000);
    if (rc == 0) {
        bench_pack_deal_open (&pk, self->run);
        rc = bench_route_add (sales, &sbuf, 1);
    }
    if (rc == 0)
        rc = bench_route_drain (sales, 10000);
    if (rc) {
        const char *error = campaign && bench_route_failed (campaign)
            ? bench_route_error (campaign) : sales ? bench_route_error (sales) : "";
        snprintf (self->error, sizeof self->error,
                  "setup (campaign.upsert, deal.open) failed%s%s", *error ? ": " : "", error);
    }
    bench_route_destroy (&campaign);
    bench_route_destroy (&sales);
    msgpack_sbuffer_destroy (&sbuf);
    return rc;
}


//  --------------------------------------------------------------------------
//  The journeys

//  An announcement on the SUB: queue that journey's next step.
static void
s_on_announcement (bench_t *self)
{
    zmsg_t *msg = zmsg_recv (self->sub);
    zframe_t *topic = msg ? zmsg_first (msg) : NULL;
    zframe_t *body = msg ? zmsg_next (msg) : NULL;
    bool opened = topic && zframe_streq (topic, "deal.opened");
    bool onboarded = topic && zframe_streq (topic, "customer.onboarded");
    funnel_error_t err;
    event_codec_t *decoded = body && (opened || onboarded)
        ? event_codec_decode (zframe_data (body), zframe_size (body), &event_codec_limits_event, &err)
        : NULL;
    funnel_event_t event;
    //  The test hook stands for PUB's drops at its high-water mark
    bool dropped = decoded && self->opt.drop_every
                && ++self->announcements % self->opt.drop_every == 0;
    if (decoded && !dropped && event_codec_event_parse (event_codec_root (decoded), &event, &err) == 0) {
        char lead [FUNNEL_ID_MAX + 1] = "", deal [FUNNEL_ID_MAX + 1] = "", kind [16] = "";
        event_codec_obj_strcpy (event_codec_map_get (event.data, opened ? "lead" : "customer"),
                           lead, sizeof lead);
        int64_t j = bench_journey_index (self->run, lead);
        bool ours = j >= 0 && j < self->opt.journeys;
        if (ours && opened) {
            event_codec_obj_strcpy (event_codec_map_get (event.data, "deal"), deal, sizeof deal);
            event_codec_obj_strcpy (event_codec_map_get (event.data, "kind"), kind, sizeof kind);
            if (streq (kind, "new") && *deal && !(self->flags [j] & DEAL_SEEN)) {
                self->flags [j] |= DEAL_SEEN;
                strcpy (self->deal [j], deal);
                self->deal_queue [self->deal_tail++] = j;
                self->deals_seen++;
                self->last_progress = zclock_mono ();
            }
        }
        else
        if (ours && onboarded && !(self->flags [j] & CUSTOMER_SEEN)) {
            self->flags [j] |= CUSTOMER_SEEN;
            self->customer_queue [self->customer_tail++] = j;
            self->customers_seen++;
            self->last_progress = zclock_mono ();
        }
    }
    event_codec_destroy (&decoded);
    zmsg_destroy (&msg);
}

//  Sends what each service can take now, each event to the instance that
//  owns its partition. Touches and captures are all known up front; deals
//  and customers come from announcements and go out at once when their
//  instance is idle, else in full batches.
static int
s_feed (bench_t *self, msgpack_sbuffer *sbuf, msgpack_packer *pk)
{
    const int64_t touches = self->opt.journeys * BENCH_TOUCHES;
    bench_route_t *route = self->route [CAMPAIGN];
    while (self->touch_next < touches && bench_route_ready (route, 1)) {
        bench_pack_touch (pk, self->run, self->touch_next / BENCH_TOUCHES,
                          (int) (self->touch_next % BENCH_TOUCHES));
        self->touch_next++;
        if (bench_route_add (route, sbuf, 1))
            return -1;
    }
    if (bench_route_flush (route, self->touch_next == touches ? BENCH_FLUSH_ALL : BENCH_FLUSH_FULL))
        return -1;
    route = self->route [LEADS];
    while (self->capture_next < self->opt.journeys && bench_route_ready (route, 1)) {
        bench_pack_capture (pk, self->run, self->capture_next++);
        if (bench_route_add (route, sbuf, 1))
            return -1;
    }
    if (bench_route_flush (route, self->capture_next == self->opt.journeys
                                  ? BENCH_FLUSH_ALL : BENCH_FLUSH_FULL))
        return -1;
    //  Offer and close of a deal go in the same batch, in that order
    route = self->route [SALES];
    while (self->deal_head < self->deal_tail && bench_route_ready (route, 2)) {
        int64_t j = self->deal_queue [self->deal_head++];
        bench_pack_offer (pk, self->deal [j]);
        bench_pack_close_won (pk, self->deal [j]);
        if (bench_route_add (route, sbuf, 2))
            return -1;
    }
    if (bench_route_flush (route, BENCH_FLUSH_IDLE))
        return -1;
    route = self->route [RETENTION];
    while (self->customer_head < self->customer_tail && bench_route_ready (route, 1)) {
        char customer [FUNNEL_ID_MAX + 1];
        bench_journey_lead (self->run, self->customer_queue [self->customer_head++],
                            customer, sizeof customer);
        bench_pack_order (pk, customer);
        if (bench_route_add (route, sbuf, 1))
            return -1;
    }
    return bench_route_flush (route, BENCH_FLUSH_IDLE);
}

static bool
s_idle (bench_t *self)
{
    for (int s = 0; s < SERVICES; s++)
        if (bench_route_inflight (self->route [s]) || bench_route_pending (self->route [s]))
            return false;
    return self->touch_next == self->opt.journeys * BENCH_TOUCHES
        && self->capture_next == self->opt.journeys
        && self->deal_head == self->deal_tail
        && self->customer_head == self->customer_tail;
}

//  PUB drops at its high-water mark: an announcement that never came is
//  asked for by GET (the deal id rule of proto/sales.md, the customer by
//  its lead id). Bounded per round.
static void
s_recover (bench_t *self)
{
    msgpack_sbuffer sbuf;
    msgpack_packer pk;
    s_packer (&sbuf, &pk);
    int asked = 0;
    for (int64_t j = 0; j < self->opt.journeys && asked < 2000 && !funnel_stop; j++) {
        bool deal = !(self->flags [j] & DEAL_SEEN);
        bool customer = !deal && !(self->flags [j] & CUSTOMER_SEEN);
        if (!deal && !customer)
            continue;
        char lead [FUNNEL_ID_MAX + 1], id [FUNNEL_ID_MAX + 8];
        bench_journey_lead (self->run, j, lead, sizeof lead);
        snprintf (id, sizeof id, deal ? "L%s-1" : "%s", lead);
        sbuf.size = 0;
        msgpack_pack_map (&pk, 2);
        event_codec_pack_cstr (&pk, "kind");
        event_codec_pack_cstr (&pk, deal ? "deal" : "customer");
        event_codec_pack_cstr (&pk, "id");
        event_codec_pack_cstr (&pk, id);
        funnel_call_status_t status;
        event_codec_t *msg = s_call (self->client [deal ? SALES : RETENTION], "GET",
                                    &sbuf, 5000, &status);
        asked++;
        if (msg && deal) {
            self->flags [j] |= DEAL_SEEN;
            memcpy (self->deal [j], id, MIN (strlen (id), (size_t) FUNNEL_ID_MAX));
            self->deal_queue [self->deal_tail++] = j;
            self->deals_seen++;
            self->recovered++;
        }
        else
        if (msg) {
            self->flags [j] |= CUSTOMER_SEEN;
            self->customer_queue [self->customer_tail++] = j;
            self->customers_seen++;
            self->recovered++;
        }
        event_codec_destroy (&msg);
    }
    msgpack_sbuffer_destroy (&sbuf);
    self->last_progress = zclock_mono ();
}

//  Publishes every journey and waits until the counts are exact; returns
//  the elapsed µs, or -1.
static int64_t
s_journeys (bench_t *self, const stats_t *before, stats_t *after)
{
    const int64_t n = self->opt.journeys;
    self->flags = (uint8_t *) calloc (n, 1);
    self->deal = calloc (n, sizeof self->deal [0]);
    self->deal_queue = (int64_t *) calloc (n, sizeof (int64_t));
    self->customer_queue = (int64_t *) calloc (n, sizeof (int64_t));
    for (int s = 0; s < SERVICES; s++) {
        self->route [s] = bench_route_new (self->topology [s], s_names [s], s_names [s],
                                           self->opt.batch, self->opt.window, 60000);
        if (!self->route [s])
            return -1;
    }
    msgpack_sbuffer sbuf;
    msgpack_packer pk;
    s_packer (&sbuf, &pk);
    const int64_t start = s_now_us ();
    const int64_t deadline = zclock_mono () + (int64_t) self->opt.timeout_s * 1000;
    self->last_progress = zclock_mono ();
    int64_t next_report = zclock_mono () + 5000;
    int rc = 0;
    //  1. Until every step of every journey is sent and acknowledged
    while (rc == 0 && !(s_idle (self) && self->deals_seen == n && self->customers_seen == n)) {
        if (funnel_stop || zclock_mono () > deadline) {
            snprintf (self->error, sizeof self->error, "%s: %" PRId64 " deals and %"
                      PRId64 " customers announced of %" PRId64, funnel_stop
                      ? "stopped by a signal" : "timed out (--timeout)", self->deals_seen,
                      self->customers_seen, n);
            rc = -1;
            break;
        }
        rc = s_feed (self, &sbuf, &pk);
        zmq_pollitem_t items [SERVICES * FUNNEL_INSTANCES_MAX + 1];
        int count = 0;
        for (int s = 0; s < SERVICES; s++)
            count += bench_route_poll_items (self->route [s], items + count,
                                             SERVICES * FUNNEL_INSTANCES_MAX - count);
        items [count++] = (zmq_pollitem_t) { zsock_resolve (self->sub), 0, ZMQ_POLLIN, 0 };
        if (rc == 0 && zmq_poll (items, count, 50) < 0 && zmq_errno () != EINTR)
            rc = -1;
        //  Replies (of every instance), and each pipe's timeout
        for (int s = 0; rc == 0 && s < SERVICES; s++)
            rc = bench_route_recv (self->route [s]);
        //  Drain the announcements: they are small and the queue feeds sales
        for (int drained = 0; rc == 0 && drained < 10000
             && (zsock_events (self->sub) & ZMQ_POLLIN); drained++)
            s_on_announcement (self);
        if (rc == 0 && s_idle (self) && zclock_mono () - self->last_progress > 2000)
            s_recover (self);
        if (zclock_mono () > next_report) {
            fprintf (stderr, "funnel-bench-funnel: %.0f s: touches %" PRId64 "/%" PRId64
                     " captures %" PRId64 " deals %" PRId64 " customers %" PRId64 "\n",
                     (s_now_us () - start) / 1e6, bench_route_acked (self->route [CAMPAIGN]),
                     n * BENCH_TOUCHES, bench_route_acked (self->route [LEADS]),
                     self->deals_seen, self->customers_seen);
            next_report += 5000;
        }
    }
    for (int s = 0; s < SERVICES; s++)
        if (rc && bench_route_failed (self->route [s]))
            snprintf (self->error, sizeof self->error, "%s", bench_route_error (self->route [s]));
    msgpack_sbuffer_destroy (&sbuf);
    if (rc == 0 && self->opt.drop_every && self->recovered == 0) {
        snprintf (self->error, sizeof self->error, "--drop-announcements: the GET fallback "
                  "never ran");
        rc = -1;
    }
    //  2. Until the downstream counts (campaign's conversions...) are exact
    int64_t elapsed = -1;
    while (rc == 0) {
        if (s_stats (self, after)) {
            rc = -1;
            break;
        }
        if (s_mismatches (&self->opt, before, after, false) == 0) {
            elapsed = s_now_us () - start;
            break;
        }
        if (funnel_stop || zclock_mono () > deadline) {
            s_mismatches (&self->opt, before, after, true);
            snprintf (self->error, sizeof self->error, "counts not exact after %d s "
                      "(mismatches above)", self->opt.timeout_s);
            rc = -1;
            break;
        }
        zclock_sleep (20);
    }
    return elapsed;
}


//  --------------------------------------------------------------------------
//  Report: a table for people, then one JSON line for tools

typedef struct {
    int64_t elapsed_us;
    stats_t before, after;
    double cpu_before, cpu_after;
    double mem_before, mem_after, rss_redis;
    bench_cmdstat_t cmd_delta [CMDSTATS];
    int cmd_count;
    bench_memrow_t rows [MEMROWS];
    int row_count;
    proc_t proc_before [PROCS_MAX], proc_after [PROCS_MAX], proc_end [PROCS_MAX];
    proc_t redis_before [REDIS_NODES_MAX], redis_after [REDIS_NODES_MAX];
    bench_latency_t *latency;   //  NULL when not run
    //  How long each EXEC held Redis over the journeys (INFO latencystats)
    bench_latency_pct_t exec;
    bool exec_read;
} result_t;

static const char *s_kinds [] = { "state", "outbox", "dedup", "runtime", "other" };
#define KINDS 5

static int
s_kind_index (const char *kind)
{
    for (int k = 0; k < KINDS; k++)
        if (streq (kind, s_kinds [k]))
            return k;
    return KINDS - 1;
}

static void
s_print_probe (const bench_probe_t *probe)
{
    printf ("  %-32s %8.2f %8.2f %8.2f %6d %4d\n", probe->name,
            bench_probe_percentile (probe, 0.50) / 1000.0,
            bench_probe_percentile (probe, 0.99) / 1000.0,
            bench_probe_percentile (probe, 1.00) / 1000.0, probe->count, probe->errors);
}

static void
s_json_probe (const bench_probe_t *probe, bool last)
{
    printf ("\"%s\":{\"p50_us\":%" PRId64 ",\"p99_us\":%" PRId64 ",\"max_us\":%" PRId64
            ",\"n\":%d,\"errors\":%d}%s", probe->key, bench_probe_percentile (probe, 0.50),
            bench_probe_percentile (probe, 0.99), bench_probe_percentile (probe, 1.00),
            probe->count, probe->errors, last ? "" : ",");
}

static void
s_print_exec (const char *label, const bench_latency_pct_t *pct)
{
    printf ("  %-24s %12.0f %12.0f %12.0f\n", label, pct->p50, pct->p99, pct->p999);
}

static void
s_json_exec (const bench_latency_pct_t *pct)
{
    printf (",\"redis_exec_us\":{\"p50\":%.0f,\"p99\":%.0f,\"p99_9\":%.0f}",
            pct->p50, pct->p99, pct->p999);
}

static void
s_report (bench_t *self, result_t *r, bool ok)
{
    const int64_t n = self->opt.journeys;
    const double secs = r->elapsed_us / 1e6;
    int64_t applied [SERVICES], total = 0;
    for (int s = 0; s < SERVICES; s++)
        total += applied [s] = s_applied (&r->before, &r->after, s);
    double cpu_us = (r->cpu_after - r->cpu_before) * 1e6;
    long ticks = sysconf (_SC_CLK_TCK);
    //  Memory by service and kind
    int64_t by_kind [SERVICES + 1][KINDS] = { { 0 } }, kind_total [KINDS] = { 0 }, census = 0;
    for (int i = 0; i < r->row_count; i++) {
        int s = SERVICES;
        for (int t = 0; t < SERVICES; t++)
            if (streq (r->rows [i].svc, s_names [t]))
                s = t;
        int k = s_kind_index (r->rows [i].kind);
        by_kind [s][k] += r->rows [i].bytes;
        kind_total [k] += r->rows [i].bytes;
        census += r->rows [i].bytes;
    }

    printf ("\nfunnel-bench-funnel: %" PRId64 " journeys, batches of %d, %d in flight, "
            "%ld cores, run %s\n", n, self->opt.batch, self->opt.window,
            sysconf (_SC_NPROCESSORS_ONLN), self->run);
    printf ("  result: %s\n", ok ? "every count exact" : self->error);
    printf ("\nThroughput (first publish to every count exact: %.2f s)\n", secs);
    printf ("  journeys/s                       %10.0f\n", n / secs);
    printf ("  applied events/journey           %10.1f\n", (double) total / n);
    printf ("  %-12s %12s %12s %12s %10s\n", "service", "applied", "events/s", "per journey", "CPU %");
    for (int s = 0; s < SERVICES; s++) {
        int64_t used = s_svc_ticks (&self->opt, r->proc_before, r->proc_after, s);
        double cpu = used >= 0 ? 100.0 * used / ticks / secs : -1;
        printf ("  %-12s %12" PRId64 " %12.0f %12.1f %10.1f\n", s_names [s], applied [s],
                applied [s] / secs, (double) applied [s] / n, cpu);
    }
    printf ("  %-12s %12" PRId64 " %12.0f %12.1f\n", "total", total, total / secs, (double) total / n);
    if (self->recovered)
        printf ("  (%" PRId64 " announcements missed on PUB were fetched by GET)\n", self->recovered);
    int64_t conflicts [SERVICES], all_conflicts = 0;
    for (int s = 0; s < SERVICES; s++)
        all_conflicts += conflicts [s] = s_counter (&r->after, s, "conflicts")
                                       - s_counter (&r->before, s, "conflicts");
    if (all_conflicts)
        printf ("  (batches re-run on a conflict with another instance: campaign %" PRId64
                ", leads %" PRId64 ", sales %" PRId64 ", retention %" PRId64 ")\n",
                conflicts [CAMPAIGN], conflicts [LEADS], conflicts [SALES], conflicts [RETENTION]);
    //  Per process, when a service runs as several instances: each one's
    //  CPU and the events PUBLISHed to it (touches go by campaign id)
    bool several = false;
    for (int s = 0; s < SERVICES; s++)
        several = several || bench_route_count (self->route [s]) > 1;
    if (several) {
        printf ("\n  %-22s %10s %14s\n", "daemon CPU", "CPU %", "PUBLISHed to");
        for (int i = 0; i < self->opt.proc_count; i++) {
            int s = self->opt.procs [i].svc;
            const char *at = strchr (self->opt.procs [i].label, '@');
            int64_t sent = -1;
            for (int k = 0; s < SERVICES && k < bench_route_count (self->route [s]); k++)
                if (at ? streq (bench_route_name (self->route [s], k), at + 1)
                       : bench_route_count (self->route [s]) == 1)
                    sent = bench_route_acked_at (self->route [s], k);
            printf ("  %-22s %10.1f", self->opt.procs [i].label,
                    100.0 * (r->proc_after [i].utime - r->proc_before [i].utime) / ticks / secs);
            if (sent >= 0)
                printf (" %14" PRId64, sent);
            printf ("\n");
        }
    }

    printf ("\nRedis CPU\n");
    printf ("  used_cpu_sys+user                %10.2f s (%.0f%% of one core)\n",
            cpu_us / 1e6, 100.0 * cpu_us / r->elapsed_us);
    printf ("  per applied event                %10.2f us\n", total ? cpu_us / total : 0);
    printf ("  %-24s %12s %12s %10s %8s\n", "top commands", "calls", "usec", "us/call", "share");
    int64_t cmd_usec = 0;
    for (int i = 0; i < r->cmd_count; i++)
        cmd_usec += r->cmd_delta [i].usec;
    for (int i = 0; i < r->cmd_count && i < 8; i++)
        printf ("  %-24s %12" PRId64 " %12" PRId64 " %10.2f %7.1f%%\n", r->cmd_delta [i].name,
                r->cmd_delta [i].calls, r->cmd_delta [i].usec,
                (double) r->cmd_delta [i].usec / r->cmd_delta [i].calls,
                cmd_usec ? 100.0 * r->cmd_delta [i].usec / cmd_usec : 0);
    bench_latency_pct_t loaded_exec;
    bool loaded_read = r->latency && bench_latency_exec (r->latency, &loaded_exec) == 0;
    if (r->exec_read || loaded_read)
        printf ("  %-24s %12s %12s %12s\n", "EXEC held Redis (us)", "p50", "p99", "p99.9");
    if (r->exec_read)
        s_print_exec ("  over the journeys", &r->exec);
    if (loaded_read)
        s_print_exec ("  latency phase, loaded", &loaded_exec);

    if (self->opt.redis_count > 0) {
        double sum = 0;
        for (int i = 0; i < self->opt.redis_count; i++)
            sum += r->redis_after [i].utime - r->redis_before [i].utime;
        printf ("  %-24s %12s %12s\n", "process (/proc utime+stime)", "CPU %", "share");
        for (int i = 0; i < self->opt.redis_count; i++) {
            double ticks_used = r->redis_after [i].utime - r->redis_before [i].utime;
            printf ("  %-24s %12.1f %11.1f%%\n", self->opt.redis_names [i],
                    100.0 * ticks_used / ticks / secs, sum > 0 ? 100.0 * ticks_used / sum : 0);
        }
        if (self->opt.redis_count > 1)
            printf ("  %-24s %12.1f\n", "all nodes", 100.0 * sum / ticks / secs);
    }

    printf ("\nRedis memory per journey (used_memory delta %.0f B/journey; "
            "MEMORY USAGE census %.0f B/journey%s)\n",
            (r->mem_after - r->mem_before) / n, (double) census / n,
            self->opt.mem_sample > 1 ? ", sampled" : "");
    printf ("  %-12s", "service");
    for (int k = 0; k < KINDS; k++)
        printf (" %9s", s_kinds [k]);
    printf (" %9s\n", "total");
    for (int s = 0; s <= SERVICES; s++) {
        int64_t sum = 0;
        for (int k = 0; k < KINDS; k++)
            sum += by_kind [s][k];
        if (s == SERVICES && sum == 0)
            continue;
        printf ("  %-12s", s < SERVICES ? s_names [s] : "(no service)");
        for (int k = 0; k < KINDS; k++)
            printf (" %9.0f", (double) by_kind [s][k] / n);
        printf (" %9.0f\n", (double) sum / n);
    }
    printf ("  %-12s", "all");
    for (int k = 0; k < KINDS; k++)
        printf (" %9.0f", (double) kind_total [k] / n);
    printf (" %9.0f\n", (double) census / n);
    printf ("  by key (service token kind: keys, B/journey)\n");
    for (int i = 0; i < r->row_count; i++)
        if (r->rows [i].bytes * 200 >= census || streq (r->rows [i].kind, "other"))
            printf ("    %-10s %-12s %-8s %10" PRId64 " %9.1f\n", r->rows [i].svc,
                    r->rows [i].token, r->rows [i].kind, r->rows [i].keys,
                    (double) r->rows [i].bytes / n);
    printf ("    (keys under 0.5%% of the census not listed)\n");

    printf ("\nDaemon RSS (kB)          after journeys        at the end\n");
    for (int i = 0; i < self->opt.proc_count; i++)
        printf ("  %-22s %14" PRId64 " %17" PRId64 "\n", self->opt.procs [i].label,
                r->proc_after [i].rss_kb, r->proc_end [i].rss_kb);
    printf ("  %-22s %14.0f\n", "redis (used_memory_rss)", r->rss_redis / 1024);

    if (r->latency) {
        const char *error = bench_latency_load_error (r->latency);
        printf ("\nSingle-request latency (ms)        p50      p99      max      n  err\n");
        printf (" idle:\n");
        for (int p = 0; p < BENCH_PROBES; p++)
            s_print_probe (bench_latency_probe (r->latency, BENCH_PHASE_IDLE, p));
        printf (" while %d threads spin (no work for the funnel: the scheduler's floor):\n",
                bench_latency_spinners (r->latency));
        for (int p = 0; p < BENCH_PROBES; p++)
            s_print_probe (bench_latency_probe (r->latency, BENCH_PHASE_SPIN, p));
        printf (" while campaign ingests %d-event touch batches (%d in flight; %.0f events/s%s%s):\n",
                self->opt.batch, self->opt.window, bench_latency_load_rate (r->latency),
                *error ? "; " : "", error);
        for (int p = 0; p < BENCH_PROBES; p++)
            s_print_probe (bench_latency_probe (r->latency, BENCH_PHASE_LOADED, p));
    }

    //  The JSON line
    printf ("{\"bench\":\"funnel\",\"ok\":%s,\"journeys\":%" PRId64 ",\"batch\":%d,\"window\":%d,"
            "\"cores\":%ld,\"elapsed_s\":%.3f,\"journeys_per_s\":%.1f,\"events_per_journey\":%.2f,"
            "\"applied\":{", ok ? "true" : "false", n, self->opt.batch, self->opt.window,
            sysconf (_SC_NPROCESSORS_ONLN), secs, n / secs, (double) total / n);
    for (int s = 0; s < SERVICES; s++)
        printf ("\"%s\":%" PRId64 ",", s_names [s], applied [s]);
    printf ("\"total\":%" PRId64 "},\"recovered_by_get\":%" PRId64 ",\"events_per_s\":{",
            total, self->recovered);
    for (int s = 0; s < SERVICES; s++)
        printf ("\"%s\":%.1f,", s_names [s], applied [s] / secs);
    printf ("\"total\":%.1f},\"redis_cpu_s\":%.3f,\"redis_cpu_us_per_event\":%.3f,"
            "\"redis_top_commands\":[", total / secs, cpu_us / 1e6, total ? cpu_us / total : 0);
    for (int i = 0; i < r->cmd_count && i < 8; i++)
        printf ("%s{\"cmd\":\"%s\",\"calls\":%" PRId64 ",\"usec\":%" PRId64 "}", i ? "," : "",
                r->cmd_delta [i].name, r->cmd_delta [i].calls, r->cmd_delta [i].usec);
    printf ("]");
    if (r->exec_read)
        s_json_exec (&r->exec);
    printf (",\"redis_used_memory_per_journey\":%.1f,\"redis_bytes_per_journey\":{",
            (r->mem_after - r->mem_before) / n);
    for (int k = 0; k < KINDS; k++)
        printf ("\"%s\":%.1f,", s_kinds [k], (double) kind_total [k] / n);
    printf ("\"total\":%.1f,\"by_service\":{", (double) census / n);
    for (int s = 0; s <= SERVICES; s++) {
        printf ("%s\"%s\":{", s ? "," : "", s < SERVICES ? s_names [s] : "other");
        for (int k = 0; k < KINDS; k++)
            printf ("%s\"%s\":%.1f", k ? "," : "", s_kinds [k], (double) by_kind [s][k] / n);
        printf ("}");
    }
    printf ("},\"by_key\":[");
    for (int i = 0; i < r->row_count; i++)
        printf ("%s{\"svc\":\"%s\",\"token\":\"%s\",\"kind\":\"%s\",\"keys\":%" PRId64
                ",\"bytes\":%" PRId64 "}", i ? "," : "", r->rows [i].svc, r->rows [i].token,
                r->rows [i].kind, r->rows [i].keys, r->rows [i].bytes);
    //  rss_kb and daemon_instance_cpu_pct by process ("leads", or "leads@a"
    //  per instance); daemon_cpu_pct by service (the sum of its instances)
    printf ("]},\"rss_kb\":{");
    for (int i = 0; i < self->opt.proc_count; i++)
        printf ("%s\"%s\":{\"after_journeys\":%" PRId64 ",\"end\":%" PRId64 "}", i ? "," : "",
                self->opt.procs [i].label, r->proc_after [i].rss_kb, r->proc_end [i].rss_kb);
    printf ("},\"daemon_cpu_pct\":{");
    bool first = true;
    for (int s = 0; s <= SERVICES; s++) {
        int64_t used = s_svc_ticks (&self->opt, r->proc_before, r->proc_after, s);
        if (used >= 0) {
            printf ("%s\"%s\":%.1f", first ? "" : ",", s < SERVICES ? s_names [s] : "monitor",
                    100.0 * used / ticks / secs);
            first = false;
        }
    }
    printf ("},\"daemon_instance_cpu_pct\":{");
    for (int i = 0; i < self->opt.proc_count; i++)
        printf ("%s\"%s\":%.1f", i ? "," : "", self->opt.procs [i].label,
                100.0 * (r->proc_after [i].utime - r->proc_before [i].utime) / ticks / secs);
    printf ("},\"instances\":{");
    for (int s = 0; s < SERVICES; s++)
        printf ("%s\"%s\":%d", s ? "," : "", s_names [s], bench_route_count (self->route [s]));
    printf ("},\"published_by_instance\":{");
    first = true;
    for (int s = 0; s < SERVICES; s++)
        for (int k = 0; k < bench_route_count (self->route [s]); k++) {
            const char *name = bench_route_name (self->route [s], k);
            printf ("%s\"%s%s%s\":%" PRId64, first ? "" : ",", s_names [s], *name ? "@" : "",
                    name, bench_route_acked_at (self->route [s], k));
            first = false;
        }
    printf ("},\"conflicts\":{");
    for (int s = 0; s < SERVICES; s++)
        printf ("%s\"%s\":%" PRId64, s ? "," : "", s_names [s], conflicts [s]);
    //  Each redis-server's CPU, and its share of all of them
    double redis_ticks = 0;
    for (int i = 0; i < self->opt.redis_count; i++)
        redis_ticks += r->redis_after [i].utime - r->redis_before [i].utime;
    printf ("},\"redis_proc_cpu_pct\":{");
    for (int i = 0; i < self->opt.redis_count; i++)
        printf ("%s\"%s\":%.1f", i ? "," : "", self->opt.redis_names [i],
                100.0 * (r->redis_after [i].utime - r->redis_before [i].utime) / ticks / secs);
    printf ("},\"redis_proc_share_pct\":{");
    for (int i = 0; i < self->opt.redis_count; i++)
        printf ("%s\"%s\":%.1f", i ? "," : "", self->opt.redis_names [i], redis_ticks > 0
                ? 100.0 * (r->redis_after [i].utime - r->redis_before [i].utime) / redis_ticks : 0);
    printf ("}");
    if (r->latency) {
        printf (",\"latency\":{\"idle\":{");
        for (int p = 0; p < BENCH_PROBES; p++)
            s_json_probe (bench_latency_probe (r->latency, BENCH_PHASE_IDLE, p),
                          p == BENCH_PROBES - 1);
        printf ("},\"spin\":{");
        for (int p = 0; p < BENCH_PROBES; p++)
            s_json_probe (bench_latency_probe (r->latency, BENCH_PHASE_SPIN, p), false);
        printf ("\"threads\":%d},\"loaded\":{", bench_latency_spinners (r->latency));
        for (int p = 0; p < BENCH_PROBES; p++)
            s_json_probe (bench_latency_probe (r->latency, BENCH_PHASE_LOADED, p), false);
        printf ("\"load_events_per_s\":%.1f", bench_latency_load_rate (r->latency));
        if (loaded_read)
            s_json_exec (&loaded_exec);
        printf ("}}");
    }
    printf ("}\n");
    fflush (stdout);
}


//  --------------------------------------------------------------------------
//  Touch ingest (--touch-ingest): the two rates of issue 12 in isolation.
//  N touches (6 per contact, as in a journey, none captured) go to campaign
//  in batches with `window` in flight; each makes one prospect.touched that
//  leads consumes. STATS of both are sampled every 100 ms: campaign's
//  accepted and leads' consumed over time give each rate (first to last
//  event, and the best 1 s), and /proc and INFO give the CPU of each.

typedef struct {
    int64_t t_us;               //  Since the first send
    int64_t accepted, consumed;
} ingest_sample_t;

//  Best rate over any window of >= 1 s between samples (events/s).
static double
s_best_rate (const ingest_sample_t *samples, int count, bool consumed)
{
    double best = 0;
    for (int a = 0, b = 0; b < count; b++) {
        while (a + 1 < b && samples [b].t_us - samples [a + 1].t_us >= 1000000)
            a++;
        int64_t span = samples [b].t_us - samples [a].t_us;
        if (span >= 1000000) {
            int64_t events = consumed ? samples [b].consumed - samples [a].consumed
                                      : samples [b].accepted - samples [a].accepted;
            best = MAX (best, events * 1e6 / span);
        }
    }
    return best;
}

static int
s_touch_ingest (bench_t *self)
{
    const int64_t n = self->opt.journeys;
    stats_t before, now;
    if (s_stats (self, &before))
        return -1;
    bench_route_t *route = self->route [CAMPAIGN] = bench_route_new (
        self->topology [CAMPAIGN], "campaign", "campaign", self->opt.batch, self->opt.window, 60000);
    if (!route)
        return -1;
    int max_samples = (self->opt.timeout_s + 2) * 10 + 16;
    ingest_sample_t *samples = (ingest_sample_t *) calloc (max_samples, sizeof *samples);
    int count = 0;
    proc_t cpu_before [PROCS_MAX], cpu_after [PROCS_MAX];
    s_procs (&self->opt, cpu_before);
    double redis_before = bench_redis_info (self->redis, "cpu", "used_cpu_sys")
                        + bench_redis_info (self->redis, "cpu", "used_cpu_user");
    proc_t bench_before, bench_after;   //  This process: it shares the cores
    s_proc (getpid (), &bench_before);
    msgpack_sbuffer sbuf;
    msgpack_packer pk;
    s_packer (&sbuf, &pk);
    const int64_t start = s_now_us ();
    const int64_t deadline = zclock_mono () + (int64_t) self->opt.timeout_s * 1000;
    int64_t next_sample = zclock_mono () + 100;
    int64_t t_accepted = 0, t_consumed = 0, acc = 0, con = 0;
    int rc = 0;
    samples [count++] = (ingest_sample_t) { 0, 0, 0 };
    while (rc == 0 && !(t_accepted && t_consumed)) {
        if (funnel_stop || zclock_mono () > deadline) {
            snprintf (self->error, sizeof self->error, "%s: campaign accepted %" PRId64
                      ", leads consumed %" PRId64 " of %" PRId64,
                      funnel_stop ? "stopped by a signal" : "timed out (--timeout)", acc, con, n);
            rc = -1;
            break;
        }
        while (rc == 0 && self->touch_next < n && bench_route_ready (route, 1)) {
            bench_pack_touch (&pk, self->run, self->touch_next / BENCH_TOUCHES,
                              (int) (self->touch_next % BENCH_TOUCHES));
            self->touch_next++;
            rc = bench_route_add (route, &sbuf, 1);
        }
        if (rc == 0)
            rc = bench_route_flush (route, self->touch_next == n ? BENCH_FLUSH_ALL : BENCH_FLUSH_FULL);
        zmq_pollitem_t items [FUNNEL_INSTANCES_MAX];
        int polled = bench_route_poll_items (route, items, FUNNEL_INSTANCES_MAX);
        int64_t wait = MAX (0, next_sample - zclock_mono ());
        if (rc == 0 && zmq_poll (items, polled, wait) < 0 && zmq_errno () != EINTR)
            rc = -1;
        if (rc == 0)
            rc = bench_route_recv (route);
        if (rc && bench_route_failed (route))
            snprintf (self->error, sizeof self->error, "%s", bench_route_error (route));
        if (rc == 0 && zclock_mono () >= next_sample) {
            next_sample += 100;
            if (s_stats (self, &now)) {
                rc = -1;
                break;
            }
            int64_t t = s_now_us () - start;
            acc = s_counter (&now, CAMPAIGN, "accepted") - s_counter (&before, CAMPAIGN, "accepted");
            con = s_counter (&now, LEADS, "consumed") - s_counter (&before, LEADS, "consumed");
            if (count < max_samples)
                samples [count++] = (ingest_sample_t) { t, acc, con };
            if (self->opt.series)
                fprintf (stderr, "  %7.2f s  accepted %9" PRId64 "  consumed %9" PRId64 "\n",
                         t / 1e6, acc, con);
            if (!t_accepted && acc >= n)
                t_accepted = t;
            if (!t_consumed && con >= n)
                t_consumed = t;
        }
    }
    msgpack_sbuffer_destroy (&sbuf);
    s_procs (&self->opt, cpu_after);
    double redis_after = bench_redis_info (self->redis, "cpu", "used_cpu_sys")
                       + bench_redis_info (self->redis, "cpu", "used_cpu_user");
    s_proc (getpid (), &bench_after);
    if (rc == 0 && (acc != n || con != n)) {
        snprintf (self->error, sizeof self->error, "campaign accepted %" PRId64
                  ", leads consumed %" PRId64 " of %" PRId64 " touches", acc, con, n);
        rc = -1;
    }
    if (rc == 0) {
        double secs = MAX (t_accepted, t_consumed) / 1e6;
        double ticks = (double) sysconf (_SC_CLK_TCK);
        double redis_cpu = redis_after - redis_before;
        double accepted_rate = n * 1e6 / t_accepted, consumed_rate = n * 1e6 / t_consumed;
        double best_acc = s_best_rate (samples, count, false);
        double best_con = s_best_rate (samples, count, true);
        //  Each figure once, for the table and the JSON line
        //  (a service's CPU is the sum over its instances)
        double pct [SERVICES];
        int64_t used [SERVICES];
        for (int s = 0; s < SERVICES; s++) {
            used [s] = s_svc_ticks (&self->opt, cpu_before, cpu_after, s);
            pct [s] = 100.0 * used [s] / ticks / secs;
        }
        double us_campaign = 1e6 * MAX (used [CAMPAIGN], 0) / ticks / n;
        double us_leads = 1e6 * MAX (used [LEADS], 0) / ticks / n;
        double us_redis = redis_cpu * 1e6 / n, pct_redis = 100.0 * redis_cpu / secs;
        double us_bench = 1e6 * (bench_after.utime - bench_before.utime) / ticks / n;
        printf ("Touch ingest: %" PRId64 " touches, %d-event batches, %d in flight\n",
                n, self->opt.batch, self->opt.window);
        printf ("  campaign accepted  %10.0f events/s (all in %.2f s; best 1 s %.0f)\n",
                accepted_rate, t_accepted / 1e6, best_acc);
        printf ("  leads consumed     %10.0f events/s (all in %.2f s; best 1 s %.0f)\n",
                consumed_rate, t_consumed / 1e6, best_con);
        printf ("  CPU %% over %.2f s:", secs);
        for (int s = 0; s < SERVICES; s++)
            if (used [s] >= 0)
                printf (" %s %.0f", s_names [s], pct [s]);
        printf (" redis %.0f\n  CPU us per touch: campaign %.2f leads %.2f redis %.2f"
                " (this bench %.2f)\n", pct_redis, us_campaign, us_leads, us_redis, us_bench);
        printf ("{\"bench\":\"touch_ingest\",\"ok\":true,\"touches\":%" PRId64 ",\"batch\":%d,"
                "\"window\":%d,\"campaign_accepted_per_s\":%.1f,\"leads_consumed_per_s\":%.1f,"
                "\"best_1s\":{\"accepted\":%.1f,\"consumed\":%.1f},\"elapsed_s\":%.3f,\"cpu_pct\":{",
                n, self->opt.batch, self->opt.window, accepted_rate, consumed_rate,
                best_acc, best_con, secs);
        for (int s = 0; s < SERVICES; s++)
            if (used [s] >= 0)
                printf ("\"%s\":%.1f,", s_names [s], pct [s]);
        printf ("\"redis\":%.1f},\"cpu_us_per_touch\":{\"campaign\":%.3f,\"leads\":%.3f,"
                "\"redis\":%.3f,\"bench\":%.3f}}\n", pct_redis, us_campaign, us_leads, us_redis,
                us_bench);
        fflush (stdout);
    }
    free (samples);
    return rc;
}


//  --------------------------------------------------------------------------
//  Options

static void
s_help (void)
{
    printf (
"Usage: funnel-bench-funnel -c FILE [OPTIONS]\n"
"The whole-funnel benchmark: N buyer journeys through campaign, leads, sales\n"
"and retention (found in the topology FILE), then figures. Normally run by\n"
"bench/run_funnel_bench.sh, which starts a private Redis and the services.\n"
"\n"
"  -c, --config FILE      topology file (api/pub endpoints, redis/url); with\n"
"                         instances each event goes to its partition's owner\n"
"  -n, --journeys N       buyer journeys (default 2000)\n"
"  -b, --batch N          events per PUBLISH batch, 1..1000 (default 1000)\n"
"  -w, --window N         batches in flight per service (default 4)\n"
"      --probes N         latency samples per request kind and load (default 300;\n"
"                         0 skips the latency phase)\n"
"      --probe-seconds S  time budget per latency phase (default 20)\n"
"      --timeout S        bound on the journey phase (default 300)\n"
"      --mem-sample K     MEMORY USAGE of every K-th key only (default 1: all)\n"
"      --pid SVC=PID      a daemon's pid, for RSS and CPU (campaign, leads,\n"
"                         sales, retention, monitor); repeat per daemon;\n"
"                         SVC@INSTANCE=PID for each instance of a service\n"
"      --redis-pid NAME=PID  a redis-server's pid (one, or each cluster node's),\n"
"                         for its CPU over the journeys from /proc; repeatable\n"
"      --drop-announcements K  test hook: ignore every K-th deal.opened or\n"
"                         customer.onboarded, as if PUB had dropped it, so the\n"
"                         GET fallback runs (default 0: none)\n"
"      --touch-ingest     only campaign's touch ingest and leads' consume of\n"
"                         prospect.touched: -n counts touches (6 a contact);\n"
"                         reports both rates, CPU of each daemon and Redis\n"
"      --series           with --touch-ingest: both counters every 100 ms (stderr)\n"
"  -h, --help             this help\n"
"\n"
"Exit code 0 when every count was exact, 1 if not (or a service failed),\n"
"2 on a usage error. The last line of stdout is one JSON object.\n");
}

static int
s_options (int argc, char *argv [], options_t *opt, const char **config_file)
{
    *opt = (options_t) { .journeys = 2000, .batch = 1000, .window = 4, .probes = 300,
                         .probe_seconds = 20, .timeout_s = 300, .mem_sample = 1 };
    static const struct option options [] = {
        { "config", required_argument, NULL, 'c' },
        { "journeys", required_argument, NULL, 'n' },
        { "batch", required_argument, NULL, 'b' },
        { "window", required_argument, NULL, 'w' },
        { "probes", required_argument, NULL, 'p' },
        { "probe-seconds", required_argument, NULL, 'P' },
        { "timeout", required_argument, NULL, 't' },
        { "mem-sample", required_argument, NULL, 'm' },
        { "pid", required_argument, NULL, 'i' },
        { "redis-pid", required_argument, NULL, 'r' },
        { "drop-announcements", required_argument, NULL, 'd' },
        { "touch-ingest", no_argument, NULL, 'T' },
        { "series", no_argument, NULL, 'S' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };
    int option;
    while ((option = getopt_long (argc, argv, "c:n:b:w:h", options, NULL)) != -1) {
        switch (option) {
            case 'c': *config_file = optarg; break;
            case 'n': opt->journeys = atoll (optarg); break;
            case 'b': opt->batch = atoi (optarg); break;
            case 'w': opt->window = atoi (optarg); break;
            case 'p': opt->probes = atoi (optarg); break;
            case 'P': opt->probe_seconds = atoi (optarg); break;
            case 't': opt->timeout_s = atoi (optarg); break;
            case 'm': opt->mem_sample = atoi (optarg); break;
            case 'd': opt->drop_every = atoi (optarg); break;
            case 'T': opt->touch_ingest = true; break;
            case 'S': opt->series = true; break;
            case 'i': {
                //  SVC=PID or SVC@INSTANCE=PID
                char *equals = strchr (optarg, '=');
                size_t label = equals ? (size_t) (equals - optarg) : 0;
                size_t name = label;
                char *at = equals ? memchr (optarg, '@', label) : NULL;
                if (at)
                    name = at - optarg;
                int s = 0;
                while (equals && s < SERVICES
                &&     (strlen (s_names [s]) != name || strncmp (optarg, s_names [s], name)))
                    s++;
                if (equals && s == SERVICES && (name != 7 || strncmp (optarg, "monitor", 7)))
                    equals = NULL;
                if (!equals || atoi (equals + 1) <= 0 || label >= 48 || (at && at + 1 == equals)
                ||  opt->proc_count == PROCS_MAX) {
                    fprintf (stderr, "funnel-bench-funnel: --pid wants SVC=PID or "
                             "SVC@INSTANCE=PID (at most %d), got '%s'\n", PROCS_MAX, optarg);
                    return 2;
                }
                opt->procs [opt->proc_count].svc = s;
                snprintf (opt->procs [opt->proc_count].label, 48, "%.*s", (int) label, optarg);
                opt->procs [opt->proc_count++].pid = atoi (equals + 1);
                break;
            }
            case 'r': {
                char *equals = strchr (optarg, '=');
                if (!equals || equals == optarg || (size_t) (equals - optarg) >= 32
                ||  atoi (equals + 1) <= 0 || opt->redis_count == REDIS_NODES_MAX) {
                    fprintf (stderr, "funnel-bench-funnel: --redis-pid wants NAME=PID (at most "
                             "%d), got '%s'\n", REDIS_NODES_MAX, optarg);
                    return 2;
                }
                snprintf (opt->redis_names [opt->redis_count], 32, "%.*s",
                          (int) (equals - optarg), optarg);
                opt->redis_pids [opt->redis_count++] = atoi (equals + 1);
                break;
            }
            case 'h': s_help (); return 1;
            default:
                fprintf (stderr, "funnel-bench-funnel: see --help\n");
                return 2;
        }
    }
    if (optind < argc) {
        fprintf (stderr, "funnel-bench-funnel: unexpected argument '%s'\n", argv [optind]);
        return 2;
    }
    if (opt->journeys < 1 || opt->journeys > 100000000 || opt->batch < 1 || opt->batch > 1000
    ||  opt->window < 1 || opt->window > 64 || opt->probes < 0 || opt->probe_seconds < 1
    ||  opt->timeout_s < 1 || opt->mem_sample < 1 || opt->drop_every < 0) {
        fprintf (stderr, "funnel-bench-funnel: need 1 <= journeys, 1 <= batch <= 1000, "
                 "1 <= window <= 64, probes >= 0, probe-seconds, timeout, mem-sample >= 1\n");
        return 2;
    }
    return 0;
}


//  --------------------------------------------------------------------------

static void
s_destroy (bench_t *self)
{
    for (int s = 0; s < SERVICES; s++) {
        funnel_client_destroy (&self->client [s]);
        bench_route_destroy (&self->route [s]);
        funnel_topology_destroy (&self->topology [s]);
    }
    zsock_destroy (&self->sub);
    bench_redis_destroy (&self->redis);
    funnel_config_destroy (&self->config);
    free (self->flags);
    free (self->deal);
    free (self->deal_queue);
    free (self->customer_queue);
}

int
main (int argc, char *argv [])
{
    funnel_signals_init ();
    funnel_log_init ("bench", FUNNEL_LOG_ERROR);
    if (argc == 2 && streq (argv [1], "--selftest")) {
        bench_pipe_test (true);
        bench_journey_test (true);
        bench_redis_test (true);
        bench_latency_test (true);
        bench_route_test (true);
        return 0;
    }
    bench_t bench;
    memset (&bench, 0, sizeof bench);
    bench_t *self = &bench;
    const char *config_file = NULL;
    int rc = s_options (argc, argv, &self->opt, &config_file);
    if (rc)
        return rc == 1 ? 0 : rc;
    char *load_argv [] = { "funnel-bench-funnel", "-c", (char *) config_file, NULL };
    funnel_config_about_t about = { "bench", "funnel-bench-funnel", NULL };
    funnel_config_status_t status;
    self->config = funnel_config_load (config_file ? 3 : 1, load_argv, &about, &status);
    if (status != FUNNEL_CONFIG_OK)
        return 2;
    bench_journey_run_id (self->run, sizeof self->run);
    for (int s = 0; s < SERVICES; s++) {
        self->topology [s] = funnel_topology_new (self->config, s_names [s]);
        if (!self->topology [s]) {
            s_destroy (self);
            return 2;           //  Logged by funnel_topology_new
        }
    }
    for (int s = 0; s < SERVICES; s++)
        self->client [s] = funnel_client_new (s_api (self, s));

    result_t *r = (result_t *) zmalloc (sizeof (result_t));
    rc = s_wait_ready (self);
    if (rc == 0) {
        self->redis = bench_redis_new (funnel_config_redis_url (self->config, "campaign"));
        rc = self->redis ? 0 : -1;
        if (rc)
            snprintf (self->error, sizeof self->error, "cannot reach Redis for the accounting");
    }
    if (rc == 0)
        rc = s_subscribe (self);
    if (rc == 0)
        rc = s_setup (self);
    bench_cmdstat_t *cmd_before = (bench_cmdstat_t *) calloc (CMDSTATS, sizeof (bench_cmdstat_t));
    bench_cmdstat_t *cmd_after = (bench_cmdstat_t *) calloc (CMDSTATS, sizeof (bench_cmdstat_t));
    int ncmd_before = 0, ncmd_after = 0;
    if (rc == 0 && self->opt.touch_ingest) {
        fprintf (stderr, "funnel-bench-funnel: run %s: %" PRId64 " touches...\n",
                 self->run, self->opt.journeys);
        rc = s_touch_ingest (self);
        if (rc)
            fprintf (stderr, "funnel-bench-funnel: FAILED: %s\n", self->error);
        free (r);
        free (cmd_before);
        free (cmd_after);
        s_destroy (self);
        return rc == 0 ? 0 : 1;
    }
    if (rc == 0)
        rc = s_stats (self, &r->before);
    if (rc == 0) {
        fprintf (stderr, "funnel-bench-funnel: run %s: %" PRId64 " journeys...\n",
                 self->run, self->opt.journeys);
        r->cpu_before = bench_redis_info (self->redis, "cpu", "used_cpu_sys")
                      + bench_redis_info (self->redis, "cpu", "used_cpu_user");
        r->mem_before = bench_redis_info (self->redis, "memory", "used_memory");
        //  EXEC percentiles cover the journeys alone (commandstats are
        //  read as a difference either way)
        bench_redis_reset_stats (self->redis);
        ncmd_before = bench_redis_cmdstats (self->redis, cmd_before, CMDSTATS);
        s_procs (&self->opt, r->proc_before);
        for (int i = 0; i < self->opt.redis_count; i++)
            s_proc (self->opt.redis_pids [i], &r->redis_before [i]);
        r->elapsed_us = s_journeys (self, &r->before, &r->after);
        rc = r->elapsed_us > 0 ? 0 : -1;
    }
    if (rc == 0) {
        r->cpu_after = bench_redis_info (self->redis, "cpu", "used_cpu_sys")
                     + bench_redis_info (self->redis, "cpu", "used_cpu_user");
        ncmd_after = bench_redis_cmdstats (self->redis, cmd_after, CMDSTATS);
        r->exec_read = bench_redis_latency (self->redis, "exec", &r->exec) == 0;
        s_procs (&self->opt, r->proc_after);
        for (int i = 0; i < self->opt.redis_count; i++)
            s_proc (self->opt.redis_pids [i], &r->redis_after [i]);
        r->mem_after = bench_redis_info (self->redis, "memory", "used_memory");
        r->rss_redis = bench_redis_info (self->redis, "memory", "used_memory_rss");
        r->cmd_count = bench_cmdstats_delta (cmd_before, MAX (ncmd_before, 0),
                                             cmd_after, MAX (ncmd_after, 0), r->cmd_delta, CMDSTATS);
        fprintf (stderr, "funnel-bench-funnel: every count exact after %.2f s; "
                 "memory census...\n", r->elapsed_us / 1e6);
        r->row_count = bench_redis_memory (self->redis, self->opt.mem_sample, r->rows, MEMROWS);
        if (r->row_count < 0) {
            snprintf (self->error, sizeof self->error, "memory census failed");
            rc = -1;
        }
    }
    if (rc == 0 && self->opt.probes > 0) {
        fprintf (stderr, "funnel-bench-funnel: latency, idle, spinning, then loaded...\n");
        r->latency = bench_latency_new (self->run, self->topology [SALES],
                                        self->topology [LEADS], self->topology [CAMPAIGN]);
        bench_latency_set_redis (r->latency, self->redis);
        bench_latency_run (r->latency, self->opt.probes, self->opt.probe_seconds,
                           self->opt.batch, self->opt.window);
    }
    if (rc == 0) {
        s_procs (&self->opt, r->proc_end);
        s_report (self, r, true);
    }
    else {
        fprintf (stderr, "funnel-bench-funnel: FAILED: %s\n", self->error);
        for (char *p = self->error; *p; p++)
            if (*p == '"' || *p == '\\' || (unsigned char) *p < 0x20)
                *p = '\'';
        printf ("{\"bench\":\"funnel\",\"ok\":false,\"journeys\":%" PRId64 ",\"error\":\"%s\"}\n",
                self->opt.journeys, self->error);
    }
    bench_latency_destroy (&r->latency);
    free (r);
    free (cmd_before);
    free (cmd_after);
    s_destroy (self);
    return rc == 0 ? 0 : 1;
}
