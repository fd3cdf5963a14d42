#include <czmq.h>
#include <math.h>
#include "bench_journey.h"
#include "bench_latency.h"
#include "bench_pipe.h"
#include "bench_route.h"
#include "funnel_signals.h"

struct _bench_latency_t {
    char *run;
    funnel_topology_t *sales_topology, *leads_topology, *campaign_topology;
    //  One client per instance: each probe goes to its partition's owner
    funnel_client_t *sales [FUNNEL_INSTANCES_MAX], *leads [FUNNEL_INSTANCES_MAX];
    bench_probe_t phases [BENCH_PHASES][BENCH_PROBES];
    int spinners;
    int64_t counter;            //  Probe event numbers, unique in the run
    int64_t load_events, load_us;
    char load_error [300];
    bench_redis_t *redis;       //  Not owned; NULL: EXECs not measured
    bench_latency_pct_t exec;
    bool exec_read;
};

static const char *s_names [BENCH_PROBES] = {
    "sales PING", "sales PUBLISH deal.interaction", "leads PUBLISH lead.capture"
};
static const char *s_keys [BENCH_PROBES] = { "sales_ping", "sales_publish", "leads_publish" };

bench_latency_t *
bench_latency_new (const char *run, funnel_topology_t *sales, funnel_topology_t *leads,
                   funnel_topology_t *campaign)
{
    bench_latency_t *self = (bench_latency_t *) zmalloc (sizeof (bench_latency_t));
    self->run = strdup (run);
    self->sales_topology = sales;
    self->leads_topology = leads;
    self->campaign_topology = campaign;
    for (int i = 0; i < funnel_topology_count (sales); i++)
        self->sales [i] = funnel_client_new (funnel_topology_at (sales, i)->api);
    for (int i = 0; i < funnel_topology_count (leads); i++)
        self->leads [i] = funnel_client_new (funnel_topology_at (leads, i)->api);
    for (int p = 0; p < BENCH_PROBES; p++) {
        for (int f = 0; f < BENCH_PHASES; f++) {
            self->phases [f][p].name = s_names [p];
            self->phases [f][p].key = s_keys [p];
        }
    }
    return self;
}

void
bench_latency_destroy (bench_latency_t **self_p)
{
    assert (self_p);
    bench_latency_t *self = *self_p;
    if (self) {
        for (int p = 0; p < BENCH_PROBES; p++) {
            for (int f = 0; f < BENCH_PHASES; f++)
                free (self->phases [f][p].us);
        }
        for (int i = 0; i < FUNNEL_INSTANCES_MAX; i++) {
            funnel_client_destroy (&self->sales [i]);
            funnel_client_destroy (&self->leads [i]);
        }
        free (self->run);
        free (self);
        *self_p = NULL;
    }
}


//  --------------------------------------------------------------------------
//  The background load: an actor that keeps `window` batches of touches in
//  flight to campaign (per instance: each touch to its partition's owner)
//  until STOP. It says WARM after the first reply, then answers STOP with
//  "<events acked> <µs> <error>".

typedef struct {
    funnel_topology_t *topology;    //  Read only, the caller's
    const char *run;
    int batch, window;
} loader_args_t;

static void
s_loader (zsock_t *pipe, void *args)
{
    loader_args_t *a = (loader_args_t *) args;
    bench_route_t *out = bench_route_new (a->topology, "campaign", "campaign (load)",
                                          a->batch, a->window, 60000);
    zsock_signal (pipe, 0);
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init (&sbuf);
    msgpack_packer pk;
    msgpack_packer_init (&pk, &sbuf, msgpack_sbuffer_write);
    int64_t next = 0, start = zclock_usecs ();
    bool warm = false, stop = false;
    while (!stop) {
        while (out && bench_route_ready (out, 1)) {
            bench_pack_load_touch (&pk, a->run, next++);
            bench_route_add (out, &sbuf, 1);
        }
        if (out)
            bench_route_flush (out, BENCH_FLUSH_FULL);
        zmq_pollitem_t items [FUNNEL_INSTANCES_MAX + 1] = {
            { zsock_resolve (pipe), 0, ZMQ_POLLIN, 0 } };
        int polled = 1 + (out ? bench_route_poll_items (out, items + 1, FUNNEL_INSTANCES_MAX) : 0);
        zmq_poll (items, polled, 100);
        if (items [0].revents & ZMQ_POLLIN) {
            char *command = zstr_recv (pipe);
            if (!command || streq (command, "$TERM"))
                stop = true;
            else
            if (streq (command, "STOP")) {
                zstr_sendf (pipe, "%" PRId64 " %" PRId64 " %s",
                            out ? bench_route_acked (out) : 0, zclock_usecs () - start,
                            out ? bench_route_error (out) : "cannot connect");
                bench_route_destroy (&out);
            }
            zstr_free (&command);
        }
        if (out)
            bench_route_recv (out);
        if (out && !warm && (bench_route_acked (out) > 0 || bench_route_failed (out))) {
            zstr_send (pipe, "WARM");
            warm = true;
        }
    }
    msgpack_sbuffer_destroy (&sbuf);
    bench_route_destroy (&out);
}


//  --------------------------------------------------------------------------
//  A spinner: busy on one core until $TERM, asking the pipe every million
//  rounds of nothing (a zero-timeout poll is a system call: it must stay
//  rare or the spinner is mostly kernel)

static void
s_spinner (zsock_t *pipe, void *args)
{
    (void) args;
    zsock_signal (pipe, 0);
    zpoller_t *poller = zpoller_new (pipe, NULL);
    volatile uint64_t rounds = 0;
    while (!zpoller_wait (poller, 0) && !zpoller_terminated (poller))
        for (int i = 0; i < 1000000; i++)
            rounds++;
    zpoller_destroy (&poller);
}


//  --------------------------------------------------------------------------
//  The probes

static int
s_cmp_int64 (const void *a, const void *b)
{
    int64_t x = *(const int64_t *) a, y = *(const int64_t *) b;
    return x < y ? -1 : x > y;
}

int64_t
bench_probe_percentile (const bench_probe_t *probe, double q)
{
    if (probe->count == 0)
        return -1;
    int64_t rank = (int64_t) ceil (q * probe->count);
    return probe->us [MAX (0, MIN (rank, probe->count) - 1)];
}

static void
s_probe (bench_latency_t *self, bench_probe_t probes [BENCH_PROBES], int rounds, int seconds)
{
    for (int p = 0; p < BENCH_PROBES; p++) {
        free (probes [p].us);
        probes [p].us = (int64_t *) calloc (rounds + 1, sizeof (int64_t));
        probes [p].count = probes [p].errors = 0;
    }
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init (&sbuf);
    msgpack_packer pk;
    msgpack_packer_init (&pk, &sbuf, msgpack_sbuffer_write);
    int64_t deadline = zclock_mono () + (int64_t) seconds * 1000;
    for (int round = 0; round < rounds && zclock_mono () < deadline && !funnel_stop; round++)
        for (int p = 0; p < BENCH_PROBES; p++) {
            sbuf.size = 0;
            int64_t k = self->counter++;
            if (p == 1)
                bench_pack_interaction (&pk, self->run, k);
            else
            if (p == 2)
                bench_pack_probe_capture (&pk, self->run, k);
            //  PING to the owner of partition 0, an event to its partition's
            funnel_client_t *client = p == 0
                ? self->sales [funnel_topology_owner_index (self->sales_topology, 0)]
                : p == 1 ? self->sales [bench_route_owner (self->sales_topology, "sales",
                                                           sbuf.data, sbuf.size)]
                : self->leads [bench_route_owner (self->leads_topology, "leads",
                                                  sbuf.data, sbuf.size)];
            zframe_t *reply = NULL;
            int64_t begin = zclock_usecs ();
            funnel_call_status_t status = funnel_client_call (
                client, p == 0 ? "PING" : "PUBLISH",
                p == 0 ? NULL : sbuf.data, p == 0 ? 0 : sbuf.size, 10000, &reply);
            int64_t took = zclock_usecs () - begin;
            if (status == FUNNEL_CALL_OK)
                probes [p].us [probes [p].count++] = took;
            else
                probes [p].errors++;
            zframe_destroy (&reply);
        }
    for (int p = 0; p < BENCH_PROBES; p++)
        qsort (probes [p].us, probes [p].count, sizeof (int64_t), s_cmp_int64);
    msgpack_sbuffer_destroy (&sbuf);
}

void
bench_latency_run (bench_latency_t *self, int probes, int seconds, int batch, int window)
{
    s_probe (self, self->phases [BENCH_PHASE_IDLE], probes, seconds);
    long cores = sysconf (_SC_NPROCESSORS_ONLN);
    self->spinners = (int) MAX (1, MIN (cores, 64));
    zactor_t *spinners [64];
    for (int i = 0; i < self->spinners; i++)
        spinners [i] = zactor_new (s_spinner, NULL);
    s_probe (self, self->phases [BENCH_PHASE_SPIN], probes, seconds);
    for (int i = 0; i < self->spinners; i++)
        zactor_destroy (&spinners [i]);
    loader_args_t args = { self->campaign_topology, self->run, batch, window };
    zactor_t *loader = zactor_new (s_loader, &args);
    zsock_set_rcvtimeo (zactor_sock (loader), 30000);
    char *warm = zstr_recv (loader);
    if (warm) {
        if (self->redis)
            bench_redis_reset_stats (self->redis);
        s_probe (self, self->phases [BENCH_PHASE_LOADED], probes, seconds);
        self->exec_read = self->redis && bench_redis_latency (self->redis, "exec",
                                                              &self->exec) == 0;
    }
    else
        snprintf (self->load_error, sizeof self->load_error, "the load never started");
    zstr_free (&warm);
    zstr_send (loader, "STOP");
    char *report = zstr_recv (loader);
    if (report) {
        char *end;
        self->load_events = strtoll (report, &end, 10);
        self->load_us = strtoll (end, &end, 10);
        if (*end == ' ' && end [1] && !self->load_error [0])
            snprintf (self->load_error, sizeof self->load_error, "%s", end + 1);
    }
    zstr_free (&report);
    zactor_destroy (&loader);
}

void
bench_latency_set_redis (bench_latency_t *self, bench_redis_t *redis)
{
    self->redis = redis;
}

int
bench_latency_exec (bench_latency_t *self, bench_latency_pct_t *pct)
{
    *pct = self->exec;
    return self->exec_read ? 0 : -1;
}

bench_probe_t *
bench_latency_probe (bench_latency_t *self, bench_phase_t phase, int probe)
{
    assert (probe >= 0 && probe < BENCH_PROBES);
    assert (phase >= 0 && phase < BENCH_PHASES);
    return &self->phases [phase][probe];
}

int
bench_latency_spinners (bench_latency_t *self)
{
    return self->spinners;
}

double
bench_latency_load_rate (bench_latency_t *self)
{
    return self->load_us > 0 ? self->load_events * 1e6 / self->load_us : 0;
}

const char *
bench_latency_load_error (bench_latency_t *self)
{
    return self->load_error;
}


#undef NDEBUG                   //  The self-test needs its asserts
#include <assert.h>

//  --------------------------------------------------------------------------
//  Self-test: nearest-rank percentiles (the phases need running services;
//  the smoke test runs them).

void
bench_latency_test (bool verbose)
{
    if (verbose)
        printf (" * bench_latency: ");
    int64_t samples [100];
    for (int i = 0; i < 100; i++)
        samples [i] = (i + 1) * 10;         //  10 .. 1000, sorted
    bench_probe_t probe = { "p", "p", samples, 100, 0 };
    assert (bench_probe_percentile (&probe, 0.50) == 500);
    assert (bench_probe_percentile (&probe, 0.99) == 990);
    assert (bench_probe_percentile (&probe, 1.00) == 1000);
    probe.count = 1;
    assert (bench_probe_percentile (&probe, 0.99) == 10);
    probe.count = 0;
    assert (bench_probe_percentile (&probe, 0.50) == -1);
    funnel_config_t *config = funnel_config_from_text (
        "sales\n    api = \"tcp://127.0.0.1:1\"\n    pub = \"tcp://127.0.0.1:2\"\n", "sales");
    funnel_topology_t *topology = funnel_topology_new (config, "sales");
    assert (topology);
    bench_latency_t *latency = bench_latency_new ("r", topology, topology, topology);
    assert (bench_latency_probe (latency, BENCH_PHASE_LOADED, 2)->key == s_keys [2]);
    assert (bench_latency_probe (latency, BENCH_PHASE_SPIN, 0)->count == 0);
    //  A spinner stops on $TERM
    zactor_t *spinner = zactor_new (s_spinner, NULL);
    zclock_sleep (20);
    zactor_destroy (&spinner);
    assert (spinner == NULL);
    assert (bench_latency_load_rate (latency) == 0);
    bench_latency_destroy (&latency);
    funnel_topology_destroy (&topology);
    funnel_config_destroy (&config);
    assert (latency == NULL);
    if (verbose)
        printf ("OK\n");
}
