/*  funnel_view — see funnel_view.h for why. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "funnel_view.h"

#define streq(a, b) (strcmp ((a), (b)) == 0)
//  Self-test checks that stay on in Release builds (assert is off there)
#include "funnel_check.h"

const char *const funnel_view_services [FUNNEL_VIEW_SERVICES + 1] = {
    "campaign", "leads", "sales", "retention", NULL
};

const char *const funnel_view_event_types [] = {
    "campaign.updated", "prospect.touched",
    "lead.captured", "lead.scored", "lead.mql", "lead.sql", "lead.disqualified",
    "lead.stage_changed", "lead.updated", "lead.merged", "rep.updated",
    "deal.opened", "deal.stage_changed", "deal.offer_made", "deal.approval_required",
    "deal.approved",
    "deal.won", "deal.lost", "deal.delivered", "deal.sla_breached", "deal.stalled",
    "customer.onboarded", "customer.repeat", "customer.health", "customer.at_risk",
    "customer.upsell", "customer.churned",
    NULL
};

//  The stages in contract order (proto/monitor.md), then lost; each is one
//  STATS counter of one service (services/README.md).
typedef struct {
    const char *name;
    int service;
    const char *counter;
    const char *event_type;     //  The live event that marks it, for latency
} stage_def_t;

#define CHAIN_STAGES 9          //  reached .. repeat: conversions between them
#define STAGES 10               //  plus lost
static const stage_def_t s_stages [STAGES] = {
    { "reached",   0, "reached",   "prospect.touched" },
    { "engaged",   0, "engaged",   "prospect.touched" },   //  a non-impression
    { "leads",     1, "leads",     "lead.captured" },
    { "mql",       1, "mql",       "lead.mql" },
    { "sql",       1, "sql",       "lead.sql" },
    { "deals",     2, "deals",     "deal.opened" },
    { "won",       2, "won",       "deal.won" },
    { "customers", 3, "customers", "customer.onboarded" },
    { "repeat",    3, "repeat",    "customer.repeat" },
    { "lost",      2, "lost",      "deal.lost" }
};

//  Latency histogram bounds in seconds (Prometheus `le`), a 1 ms .. 60 s range
static const double s_bounds [] = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60
};
#define BUCKETS (sizeof s_bounds / sizeof s_bounds [0])
//  Recent samples kept per stage for exact p50/p99 of the live window
#define RECENT 1024

typedef struct {
    uint64_t buckets [BUCKETS + 1];     //  Last one: above every bound (+Inf)
    uint64_t count;
    double sum_s;
    double recent [RECENT];             //  ms, a ring
    size_t recent_count;
    size_t recent_next;
} latency_t;

//  A rate over the last few seconds from samples of a growing number.
#define RATE_SAMPLES 11                 //  ~5 s at a 500 ms tick
typedef struct {
    int64_t t [RATE_SAMPLES];
    uint64_t v [RATE_SAMPLES];
    size_t count, next;
} rate_t;

typedef struct {
    bool up, ever_up, redis_ok;
    char version [32];
    uint64_t seq;
    int64_t uptime_s;
    int64_t last_ping_ms;               //  Last answered PING, 0 = never
    int64_t down_since_ms;              //  0 while up
    json_t *counters;                   //  Last STATS counters, NULL = never
    json_t *instances;                  //  Per instance, NULL = none listed
    bool live;
    uint64_t position, head;
    int64_t silence_ms, last_message_ms;
    json_t *types;                      //  type -> live events seen
    rate_t out_rate, in_rate;
} service_t;

struct _funnel_view_t {
    service_t services [FUNNEL_VIEW_SERVICES];
    latency_t latency [STAGES];
    json_t *report;
};

funnel_view_t *
funnel_view_new (void)
{
    funnel_view_t *self = (funnel_view_t *) calloc (1, sizeof (funnel_view_t));
    if (!self)
        return NULL;
    for (int s = 0; s < FUNNEL_VIEW_SERVICES; s++)
        self->services [s].types = json_object ();
    return self;
}

void
funnel_view_destroy (funnel_view_t **self_p)
{
    if (*self_p) {
        funnel_view_t *self = *self_p;
        for (int s = 0; s < FUNNEL_VIEW_SERVICES; s++) {
            json_decref (self->services [s].counters);
            json_decref (self->services [s].instances);
            json_decref (self->services [s].types);
        }
        json_decref (self->report);
        free (self);
        *self_p = NULL;
    }
}

int
funnel_view_service_index (const char *name)
{
    for (int s = 0; s < FUNNEL_VIEW_SERVICES; s++)
        if (streq (funnel_view_services [s], name))
            return s;
    return -1;
}

void
funnel_view_set_ping (funnel_view_t *self, int svc, const char *version,
                      uint64_t seq, bool redis_ok, int64_t uptime_s, int64_t now_ms)
{
    service_t *service = &self->services [svc];
    service->up = service->ever_up = true;
    snprintf (service->version, sizeof service->version, "%s", version ? version : "");
    service->seq = seq;
    service->redis_ok = redis_ok;
    service->uptime_s = uptime_s;
    service->last_ping_ms = now_ms;
    service->down_since_ms = 0;
}

void
funnel_view_set_down (funnel_view_t *self, int svc, int64_t now_ms)
{
    service_t *service = &self->services [svc];
    if (service->up || service->down_since_ms == 0)
        service->down_since_ms = now_ms;
    service->up = false;
}

void
funnel_view_set_counters (funnel_view_t *self, int svc, json_t *counters)
{
    if (!json_is_object (counters))
        return;
    json_incref (counters);
    json_decref (self->services [svc].counters);
    self->services [svc].counters = counters;
}

void
funnel_view_set_instances (funnel_view_t *self, int svc, json_t *instances)
{
    if (!json_is_object (instances))
        return;
    json_incref (instances);
    json_decref (self->services [svc].instances);
    self->services [svc].instances = instances;
}

void
funnel_view_set_stream (funnel_view_t *self, int svc, bool live, uint64_t position,
                        uint64_t head, int64_t silence_ms, int64_t now_ms)
{
    service_t *service = &self->services [svc];
    service->live = live;
    service->position = position;
    service->head = head > position ? head : position;
    service->silence_ms = silence_ms;
    service->last_message_ms = now_ms - silence_ms;
}

static void
s_latency_add (latency_t *latency, int64_t ms)
{
    if (ms < 0)
        ms = 0;     //  Clocks of two hosts can disagree by a little
    double seconds = ms / 1000.0;
    size_t b = 0;
    while (b < BUCKETS && seconds > s_bounds [b])
        b++;
    latency->buckets [b]++;
    latency->count++;
    latency->sum_s += seconds;
    latency->recent [latency->recent_next] = (double) ms;
    latency->recent_next = (latency->recent_next + 1) % RECENT;
    if (latency->recent_count < RECENT)
        latency->recent_count++;
}

void
funnel_view_record_event (funnel_view_t *self, int svc, const char *type,
                          const char *kind, int64_t latency_ms)
{
    service_t *service = &self->services [svc];
    json_t *seen = json_object_get (service->types, type);
    json_object_set_new (service->types, type,
                         json_integer (seen ? json_integer_value (seen) + 1 : 1));
    for (int s = 0; s < STAGES; s++) {
        if (s_stages [s].service != svc || !streq (s_stages [s].event_type, type))
            continue;
        if (streq (s_stages [s].name, "engaged") && (!kind || streq (kind, "impression")))
            continue;
        s_latency_add (&self->latency [s], latency_ms);
    }
}

void
funnel_view_set_report (funnel_view_t *self, json_t *report)
{
    json_decref (self->report);
    self->report = report;
}

static int64_t
s_counter (service_t *service, const char *name)
{
    json_t *value = service->counters ? json_object_get (service->counters, name) : NULL;
    if (json_is_integer (value))
        return json_integer_value (value);
    if (json_is_real (value))
        return (int64_t) json_real_value (value);
    return 0;
}

static void
s_rate_sample (rate_t *rate, int64_t now_ms, uint64_t value)
{
    rate->t [rate->next] = now_ms;
    rate->v [rate->next] = value;
    rate->next = (rate->next + 1) % RATE_SAMPLES;
    if (rate->count < RATE_SAMPLES)
        rate->count++;
}

static double
s_rate_value (const rate_t *rate)
{
    if (rate->count < 2)
        return 0;
    size_t newest = (rate->next + RATE_SAMPLES - 1) % RATE_SAMPLES;
    size_t oldest = (rate->next + RATE_SAMPLES - rate->count) % RATE_SAMPLES;
    int64_t dt = rate->t [newest] - rate->t [oldest];
    //  A counter going back (a wiped Redis) is a reset, not a negative rate
    if (dt <= 0 || rate->v [newest] < rate->v [oldest])
        return 0;
    return (double) (rate->v [newest] - rate->v [oldest]) * 1000.0 / (double) dt;
}

void
funnel_view_tick (funnel_view_t *self, int64_t now_ms)
{
    for (int s = 0; s < FUNNEL_VIEW_SERVICES; s++) {
        service_t *service = &self->services [s];
        uint64_t out = service->position > service->seq ? service->position : service->seq;
        s_rate_sample (&service->out_rate, now_ms, out);
        int64_t in = s_counter (service, "accepted") + s_counter (service, "consumed");
        s_rate_sample (&service->in_rate, now_ms, in > 0 ? (uint64_t) in : 0);
    }
}

static int
s_stage_index (const char *name)
{
    for (int s = 0; s < STAGES; s++)
        if (streq (s_stages [s].name, name))
            return s;
    return -1;
}

static int64_t
s_stage_count (funnel_view_t *self, int stage)
{
    return s_counter (&self->services [s_stages [stage].service], s_stages [stage].counter);
}

int64_t
funnel_view_stage_count (funnel_view_t *self, const char *stage)
{
    int s = s_stage_index (stage);
    return s < 0 ? -1 : s_stage_count (self, s);
}

static int
s_compare_double (const void *a, const void *b)
{
    double x = *(const double *) a, y = *(const double *) b;
    return x < y ? -1 : x > y;
}

//  Nearest-rank quantile of the recent samples; false if there are none.
static bool
s_quantiles (const latency_t *latency, double *p50, double *p99)
{
    size_t n = latency->recent_count;
    if (n == 0)
        return false;
    double sorted [RECENT];
    memcpy (sorted, latency->recent, n * sizeof (double));
    qsort (sorted, n, sizeof (double), s_compare_double);
    size_t i50 = (size_t) ceil (0.50 * n), i99 = (size_t) ceil (0.99 * n);
    *p50 = sorted [i50 > 0 ? i50 - 1 : 0];
    *p99 = sorted [i99 > 0 ? i99 - 1 : 0];
    return true;
}

//  count / previous, or null when the previous stage is empty.
static json_t *
s_ratio (int64_t count, int64_t previous)
{
    return previous > 0 ? json_real ((double) count / (double) previous) : json_null ();
}

static json_t *
s_service_json (service_t *service, int64_t now_ms)
{
    json_t *json = json_object ();
    json_object_set_new (json, "up", json_boolean (service->up));
    json_object_set_new (json, "redis", json_string (!service->ever_up ? "unknown"
                                                     : service->redis_ok ? "ok" : "down"));
    json_object_set_new (json, "version", service->ever_up ? json_string (service->version)
                                                           : json_null ());
    json_object_set_new (json, "seq", json_integer ((json_int_t) service->seq));
    json_object_set_new (json, "uptime_s", json_integer (service->up ? service->uptime_s : 0));
    json_object_set_new (json, "last_ping", service->last_ping_ms
                         ? json_integer (service->last_ping_ms) : json_null ());
    json_object_set_new (json, "down_since", service->down_since_ms
                         ? json_integer (service->down_since_ms) : json_null ());
    //  Heartbeats come every second: the last message of any kind is at
    //  least that recent while the publisher lives
    json_object_set_new (json, "last_heartbeat", service->live
                         ? json_integer (service->last_message_ms) : json_null ());
    json_object_set_new (json, "heartbeat_age_ms", service->live
                         ? json_integer (now_ms - service->last_message_ms) : json_null ());
    json_object_set_new (json, "stream", json_string (service->live ? "live" : "waiting"));
    json_object_set_new (json, "position", json_integer ((json_int_t) service->position));
    json_object_set_new (json, "lag", json_integer ((json_int_t) (service->live
                         ? service->head - service->position : 0)));
    json_object_set_new (json, "events_per_s", json_real (s_rate_value (&service->out_rate)));
    json_object_set_new (json, "accepted_per_s", json_real (s_rate_value (&service->in_rate)));
    json_object_set_new (json, "counters", service->counters
                         ? json_deep_copy (service->counters) : json_object ());
    json_object_set_new (json, "events_seen", json_deep_copy (service->types));
    if (service->instances)
        json_object_set_new (json, "instances", json_deep_copy (service->instances));
    return json;
}

json_t *
funnel_view_json (funnel_view_t *self, int64_t now_ms)
{
    json_t *root = json_object ();
    json_object_set_new (root, "v", json_integer (1));
    json_object_set_new (root, "ts", json_integer (now_ms));

    json_t *stages = json_array ();
    json_t *conversions = json_array ();
    for (int s = 0; s < STAGES; s++) {
        json_t *stage = json_object ();
        int64_t count = s_stage_count (self, s);
        json_object_set_new (stage, "name", json_string (s_stages [s].name));
        json_object_set_new (stage, "count", json_integer (count));
        json_object_set_new (stage, "service", json_string (funnel_view_services [s_stages [s].service]));
        json_object_set_new (stage, "known", json_boolean (
            self->services [s_stages [s].service].counters != NULL));
        //  Conversion from the stage before; lost is measured against deals
        int previous = s == 0 ? -1 : s < CHAIN_STAGES ? s - 1 : s_stage_index ("deals");
        if (previous >= 0) {
            json_t *ratio = s_ratio (count, s_stage_count (self, previous));
            json_object_set (stage, "conversion", ratio);
            json_object_set_new (stage, "conversion_from", json_string (s_stages [previous].name));
            if (s < CHAIN_STAGES) {
                json_t *pair = json_object ();
                json_object_set_new (pair, "from", json_string (s_stages [previous].name));
                json_object_set_new (pair, "to", json_string (s_stages [s].name));
                json_object_set (pair, "ratio", ratio);
                json_array_append_new (conversions, pair);
            }
            json_decref (ratio);
        }
        else
            json_object_set_new (stage, "conversion", json_null ());
        double p50, p99;
        if (s_quantiles (&self->latency [s], &p50, &p99))
            json_object_set_new (stage, "latency_ms", json_pack ("{s:f, s:f, s:I}",
                "p50", p50, "p99", p99, "samples", (json_int_t) self->latency [s].count));
        else
            json_object_set_new (stage, "latency_ms", json_null ());
        json_array_append_new (stages, stage);
    }
    json_object_set_new (root, "stages", stages);
    json_object_set_new (root, "conversions", conversions);
    json_object_set_new (root, "lost", json_integer (s_stage_count (self, s_stage_index ("lost"))));

    json_t *services = json_object ();
    json_t *rates = json_object ();
    for (int s = 0; s < FUNNEL_VIEW_SERVICES; s++) {
        json_object_set_new (services, funnel_view_services [s],
                             s_service_json (&self->services [s], now_ms));
        json_object_set_new (rates, funnel_view_services [s],
                             json_real (s_rate_value (&self->services [s].out_rate)));
    }
    json_object_set_new (root, "services", services);
    json_object_set_new (root, "rates", rates);
    json_object_set_new (root, "campaigns", self->report ? json_deep_copy (self->report)
                                                         : json_null ());
    return root;
}

//  ---------------------------------------------------------------------
//  Prometheus text exposition format (version 0.0.4)

static void
s_family (FILE *out, const char *name, const char *type, const char *help)
{
    fprintf (out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

//  A label value with \, " and newline escaped as the format requires.
static void
s_label (FILE *out, const char *value)
{
    for (const char *p = value; *p; p++) {
        if (*p == '\\' || *p == '"')
            fputc ('\\', out);
        if (*p == '\n')
            fputs ("\\n", out);
        else
            fputc (*p, out);
    }
}

//  One gauge or counter line per service.
static void
s_per_service (FILE *out, const char *name, double (*value) (service_t *, int64_t),
               funnel_view_t *self, int64_t now_ms)
{
    for (int s = 0; s < FUNNEL_VIEW_SERVICES; s++) {
        double v = value (&self->services [s], now_ms);
        fprintf (out, "%s{service=\"%s\"} ", name, funnel_view_services [s]);
        if (isnan (v))
            fprintf (out, "NaN\n");
        else
            fprintf (out, "%.17g\n", v);
    }
}

static double s_up (service_t *s, int64_t now)        { (void) now; return s->up; }
static double s_redis_up (service_t *s, int64_t now)  { (void) now; return s->up && s->redis_ok; }
static double s_seq (service_t *s, int64_t now)       { (void) now; return (double) s->seq; }
static double s_uptime (service_t *s, int64_t now)    { (void) now; return s->up ? (double) s->uptime_s : 0; }
static double s_lag (service_t *s, int64_t now)       { (void) now; return s->live ? (double) (s->head - s->position) : 0; }
static double s_out_rate (service_t *s, int64_t now)  { (void) now; return s_rate_value (&s->out_rate); }
static double s_in_rate (service_t *s, int64_t now)   { (void) now; return s_rate_value (&s->in_rate); }
static double s_events_out (service_t *s, int64_t now){ (void) now; return (double) s_counter (s, "events_out"); }
static double s_accepted (service_t *s, int64_t now)  { (void) now; return (double) s_counter (s, "accepted"); }
static double s_duplicates (service_t *s, int64_t now){ (void) now; return (double) s_counter (s, "duplicates"); }
static double s_consumed (service_t *s, int64_t now)  { (void) now; return (double) s_counter (s, "consumed"); }
static double s_hb_age (service_t *s, int64_t now)
{
    return s->live ? (double) (now - s->last_message_ms) / 1000.0 : NAN;
}

char *
funnel_view_prometheus (funnel_view_t *self, int64_t now_ms)
{
    char *text = NULL;
    size_t size = 0;
    FILE *out = open_memstream (&text, &size);
    if (!out)
        return NULL;

    s_family (out, "funnel_stage_count", "gauge",
              "Exact number of entities that reached the funnel stage (the owning service's STATS counter).");
    for (int s = 0; s < STAGES; s++)
        fprintf (out, "funnel_stage_count{stage=\"%s\"} %lld\n", s_stages [s].name,
                 (long long) s_stage_count (self, s));
    s_family (out, "funnel_stage_conversion_ratio", "gauge",
              "Count of a stage divided by the count of the stage before it.");
    for (int s = 1; s < CHAIN_STAGES; s++) {
        int64_t previous = s_stage_count (self, s - 1);
        if (previous > 0)
            fprintf (out, "funnel_stage_conversion_ratio{from=\"%s\",to=\"%s\"} %.6g\n",
                     s_stages [s - 1].name, s_stages [s].name,
                     (double) s_stage_count (self, s) / (double) previous);
    }
    s_family (out, "funnel_events_total", "counter",
              "Events a service has published on its PUB socket (STATS events_out).");
    s_per_service (out, "funnel_events_total", s_events_out, self, now_ms);
    s_family (out, "funnel_events_accepted_total", "counter",
              "Events a service has accepted through PUBLISH (STATS accepted).");
    s_per_service (out, "funnel_events_accepted_total", s_accepted, self, now_ms);
    s_family (out, "funnel_events_duplicate_total", "counter",
              "Duplicate events a service has skipped (STATS duplicates).");
    s_per_service (out, "funnel_events_duplicate_total", s_duplicates, self, now_ms);
    s_family (out, "funnel_events_consumed_total", "counter",
              "Upstream events a service has applied (STATS consumed).");
    s_per_service (out, "funnel_events_consumed_total", s_consumed, self, now_ms);
    s_family (out, "funnel_events_per_second", "gauge",
              "Events a service published per second over the last few seconds.");
    s_per_service (out, "funnel_events_per_second", s_out_rate, self, now_ms);
    s_family (out, "funnel_accepted_events_per_second", "gauge",
              "Events a service accepted or consumed per second over the last few seconds.");
    s_per_service (out, "funnel_accepted_events_per_second", s_in_rate, self, now_ms);
    s_family (out, "funnel_service_up", "gauge", "1 if the service answers PING.");
    s_per_service (out, "funnel_service_up", s_up, self, now_ms);
    s_family (out, "funnel_service_redis_up", "gauge", "1 if the service reports its Redis as ok.");
    s_per_service (out, "funnel_service_redis_up", s_redis_up, self, now_ms);
    s_family (out, "funnel_service_seq", "gauge", "Last sequence number the service published.");
    s_per_service (out, "funnel_service_seq", s_seq, self, now_ms);
    s_family (out, "funnel_service_lag_events", "gauge",
              "Events the service announced that the monitor has not yet received.");
    s_per_service (out, "funnel_service_lag_events", s_lag, self, now_ms);
    s_family (out, "funnel_service_heartbeat_age_seconds", "gauge",
              "Seconds since anything (heartbeats included) arrived from the service's PUB.");
    s_per_service (out, "funnel_service_heartbeat_age_seconds", s_hb_age, self, now_ms);
    s_family (out, "funnel_service_uptime_seconds", "gauge", "Service uptime reported by PING.");
    s_per_service (out, "funnel_service_uptime_seconds", s_uptime, self, now_ms);

    s_family (out, "funnel_service_counter", "gauge",
              "Every STATS counter of every service, as reported.");
    for (int s = 0; s < FUNNEL_VIEW_SERVICES; s++) {
        service_t *service = &self->services [s];
        const char *name;
        json_t *value;
        if (service->counters)
            json_object_foreach (service->counters, name, value) {
                fprintf (out, "funnel_service_counter{service=\"%s\",counter=\"",
                         funnel_view_services [s]);
                s_label (out, name);
                fprintf (out, "\"} %lld\n", (long long) s_counter (service, name));
            }
    }
    s_family (out, "funnel_monitor_events_seen_total", "counter",
              "Live events the monitor has received since it started, by service and type.");
    for (int s = 0; s < FUNNEL_VIEW_SERVICES; s++) {
        const char *type;
        json_t *value;
        json_object_foreach (self->services [s].types, type, value) {
            fprintf (out, "funnel_monitor_events_seen_total{service=\"%s\",type=\"",
                     funnel_view_services [s]);
            s_label (out, type);
            fprintf (out, "\"} %lld\n", (long long) json_integer_value (value));
        }
    }

    s_family (out, "funnel_stage_latency_seconds", "histogram",
              "From an event's time (the service's apply) to the monitor's receipt, per stage.");
    for (int s = 0; s < STAGES; s++) {
        latency_t *latency = &self->latency [s];
        uint64_t cumulative = 0;
        for (size_t b = 0; b < BUCKETS; b++) {
            cumulative += latency->buckets [b];
            fprintf (out, "funnel_stage_latency_seconds_bucket{stage=\"%s\",le=\"%g\"} %llu\n",
                     s_stages [s].name, s_bounds [b], (unsigned long long) cumulative);
        }
        fprintf (out, "funnel_stage_latency_seconds_bucket{stage=\"%s\",le=\"+Inf\"} %llu\n",
                 s_stages [s].name, (unsigned long long) latency->count);
        fprintf (out, "funnel_stage_latency_seconds_sum{stage=\"%s\"} %.6f\n",
                 s_stages [s].name, latency->sum_s);
        fprintf (out, "funnel_stage_latency_seconds_count{stage=\"%s\"} %llu\n",
                 s_stages [s].name, (unsigned long long) latency->count);
    }
    fclose (out);
    return text;
}

//  ---------------------------------------------------------------------
//  Self-test

void
funnel_view_test (bool verbose)
{
    printf (" * funnel_view: ");
    funnel_view_t *view = funnel_view_new ();
    check (view);
    check (funnel_view_service_index ("sales") == 2);
    check (funnel_view_service_index ("monitor") == -1);

    //  Nothing known yet: zeros, services down, still a full document
    json_t *json = funnel_view_json (view, 1000);
    json_t *stages = json_object_get (json, "stages");
    check (json_array_size (stages) == STAGES);
    const char *order [] = { "reached", "engaged", "leads", "mql", "sql", "deals", "won",
                             "customers", "repeat", "lost" };
    for (size_t i = 0; i < STAGES; i++) {
        json_t *stage = json_array_get (stages, i);
        check (streq (json_string_value (json_object_get (stage, "name")), order [i]));
        check (json_integer_value (json_object_get (stage, "count")) == 0);
    }
    check (json_is_false (json_object_get (json_object_get (json_object_get (json, "services"),
                                                            "leads"), "up")));
    json_decref (json);

    //  Counters from STATS become stage counts; conversions between stages
    funnel_view_set_ping (view, 0, "0.1.0", 12, true, 5, 2000);
    json_t *counters = json_pack ("{s:i, s:i, s:i}", "reached", 10, "engaged", 4, "events_out", 12);
    funnel_view_set_counters (view, 0, counters);
    json_decref (counters);
    counters = json_pack ("{s:i, s:i, s:i}", "leads", 2, "mql", 1, "sql", 1);
    funnel_view_set_counters (view, 1, counters);
    json_decref (counters);
    check (funnel_view_stage_count (view, "reached") == 10);
    check (funnel_view_stage_count (view, "sql") == 1);
    check (funnel_view_stage_count (view, "nope") == -1);

    //  Rates from the stream position over the window
    funnel_view_set_stream (view, 0, true, 12, 14, 100, 2000);
    funnel_view_tick (view, 2000);
    funnel_view_set_stream (view, 0, true, 22, 22, 50, 3000);
    funnel_view_tick (view, 3000);

    //  Latency: 100 samples 1..100 ms on reached; engaged only for non-impressions
    for (int i = 1; i <= 100; i++)
        funnel_view_record_event (view, 0, "prospect.touched", i % 2 ? "impression" : "click", i);
    json = funnel_view_json (view, 3000);
    if (verbose) {
        char *text = json_dumps (json, JSON_INDENT (1));
        printf ("\n%s\n", text);
        free (text);
    }
    stages = json_object_get (json, "stages");
    json_t *reached = json_array_get (stages, 0);
    json_t *engaged = json_array_get (stages, 1);
    json_t *latency = json_object_get (reached, "latency_ms");
    check (json_real_value (json_object_get (latency, "p50")) == 50);
    check (json_real_value (json_object_get (latency, "p99")) == 99);
    check (json_integer_value (json_object_get (json_object_get (engaged, "latency_ms"),
                                                "samples")) == 50);
    check (fabs (json_real_value (json_object_get (engaged, "conversion")) - 0.4) < 1e-9);
    check (fabs (json_real_value (json_object_get (json_array_get (stages, 2), "conversion")) - 0.5) < 1e-9);
    check (json_is_null (json_object_get (json_array_get (stages, 6), "conversion")));
    json_t *campaign = json_object_get (json_object_get (json, "services"), "campaign");
    check (json_is_true (json_object_get (campaign, "up")));
    check (json_integer_value (json_object_get (campaign, "lag")) == 0);
    check (fabs (json_real_value (json_object_get (campaign, "events_per_s")) - 10.0) < 1e-9);
    check (json_integer_value (json_object_get (json_object_get (campaign, "events_seen"),
                                                "prospect.touched")) == 100);
    json_decref (json);

    //  Down keeps the last counts
    funnel_view_set_down (view, 0, 4000);
    check (funnel_view_stage_count (view, "reached") == 10);

    //  Prometheus text: HELP/TYPE, stage counts, a cumulative histogram
    char *text = funnel_view_prometheus (view, 4000);
    check (text);
    if (verbose)
        printf ("%s", text);
    check (strstr (text, "# TYPE funnel_stage_count gauge\n"));
    check (strstr (text, "funnel_stage_count{stage=\"reached\"} 10\n"));
    check (strstr (text, "funnel_service_up{service=\"campaign\"} 0\n"));
    check (strstr (text, "# TYPE funnel_stage_latency_seconds histogram\n"));
    check (strstr (text, "funnel_stage_latency_seconds_bucket{stage=\"reached\",le=\"0.01\"} 10\n"));
    check (strstr (text, "funnel_stage_latency_seconds_bucket{stage=\"reached\",le=\"+Inf\"} 100\n"));
    check (strstr (text, "funnel_stage_latency_seconds_count{stage=\"engaged\"} 50\n"));
    check (strstr (text, "funnel_events_total{service=\"campaign\"} 12\n"));
    free (text);

    funnel_view_set_report (view, json_pack ("{s:[]}", "campaigns"));
    funnel_view_destroy (&view);
    check (view == NULL);
    printf ("OK\n");
}
