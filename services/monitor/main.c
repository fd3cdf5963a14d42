/*  funnel-monitor — the live funnel: JSON, Prometheus, SSE, dashboard and
    a telemetry PUB (proto/monitor.md).

    Not a funnel_service: it owns no state and no Redis. One zloop thread
    talks to the services (service_probe) and, every 500 ms, renders the
    view into strings the HTTP threads serve (monitor_http).
*/
#include <signal.h>
#include "funnel_config.h"
#include "funnel_curve.h"
#include "funnel_log.h"
#include "redis_auth.h"
#include "funnel_notify.h"
#include "funnel_signals.h"
#include "funnel_view.h"
#include "json_msgpack.h"
#include "monitor_http.h"
#include "series_api.h"
#include "service_probe.h"
#include "funnel_topology.h"

#define POLL_MS         500     //  STATS/PING of each service, snapshot rebuild
#define CALL_TIMEOUT_MS 300     //  Per PING/STATS; a down service costs this
#define REPORT_EVERY    4       //  Campaign report every 4 polls (2 s)

extern const char funnel_dashboard_html [];

typedef struct {
    funnel_view_t *view;
    service_probe_t *probes [FUNNEL_VIEW_SERVICES];
    monitor_http_t *http;
    zsock_t *pub;
    series_api_t *series;       //  /api/series, /api/campaigns (HTTP threads)
    const char *currency;       //  monitor/currency: the dashboard's money
    json_t *snapshot;           //  Latest /api/funnel document
    unsigned ticks;
    int next_down;              //  Round robin over down services
} monitor_t;


static int
s_on_sub (zloop_t *loop, zsock_t *sub, void *arg)
{
    (void) loop; (void) sub;
    service_probe_drain ((service_probe_t *) arg);
    return 0;
}

static void s_render (monitor_t *self);

static int
s_on_poll (zloop_t *loop, int timer_id, void *arg)
{
    (void) loop; (void) timer_id;
    monitor_t *self = (monitor_t *) arg;
    //  Up services every time; of the down ones, one per poll (the first
    //  poll tries all), so unanswered PINGs cannot stall the loop for long
    int tried_down = 0;
    for (int i = 0; i < FUNNEL_VIEW_SERVICES; i++) {
        int s = (self->next_down + i) % FUNNEL_VIEW_SERVICES;
        service_probe_t *probe = self->probes [s];
        if (!service_probe_up (probe) && self->ticks > 0 && tried_down++ > 0)
            continue;
        if (!service_probe_up (probe))
            self->next_down = (s + 1) % FUNNEL_VIEW_SERVICES;
        if (service_probe_poll (probe, CALL_TIMEOUT_MS))
            service_probe_catch_up (probe);
    }
    if (self->ticks % REPORT_EVERY == 0 && service_probe_up (self->probes [0])) {
        json_t *body = json_pack ("{s:s}", "kind", "report");
        json_t *report = service_probe_get (self->probes [0], body, CALL_TIMEOUT_MS);
        if (report)
            funnel_view_set_report (self->view, report);
        json_decref (body);
    }
    self->ticks++;
    s_render (self);
    return 0;
}

//  Rebuilds the documents the HTTP threads serve
static void
s_render (monitor_t *self)
{
    int64_t now = zclock_time ();
    funnel_view_tick (self->view, now);
    json_decref (self->snapshot);
    self->snapshot = funnel_view_json (self->view, now);
    json_object_set_new (self->snapshot, "currency", json_string (self->currency));
    char *json = json_dumps (self->snapshot, JSON_COMPACT);
    char *metrics = funnel_view_prometheus (self->view, now);
    monitor_http_update (self->http, json, metrics);
    free (json);
    free (metrics);
}

//  A stop signal may land while zmq_poll is not waiting: check the flag
static int
s_on_api (void *arg, const char *path, monitor_http_param_fn *param, void *request,
          char **body)
{
    return series_api_handle ((series_api_t *) arg, path, param, request, body);
}

//  An ISO 4217 code: three capital letters (Intl.NumberFormat checks the rest)
static bool
s_valid_currency (const char *code)
{
    return strlen (code) == 3 && strspn (code, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") == 3;
}

static int
s_on_check_stop (zloop_t *loop, int timer_id, void *arg)
{
    (void) loop; (void) timer_id; (void) arg;
    return funnel_stop ? -1 : 0;
}

//  The same document as /api/funnel, msgpack, for subscribers without HTTP
static int
s_on_second (zloop_t *loop, int timer_id, void *arg)
{
    (void) loop; (void) timer_id;
    monitor_t *self = (monitor_t *) arg;
    msgpack_sbuffer sbuf;
    if (self->snapshot && json_to_msgpack_sbuffer (self->snapshot, &sbuf) == 0) {
        zmsg_t *msg = zmsg_new ();
        zmsg_addstr (msg, "funnel.metrics");
        zmsg_addmem (msg, sbuf.data, sbuf.size);
        zmsg_send (&msg, self->pub);
        msgpack_sbuffer_destroy (&sbuf);
    }
    funnel_notify_tick ();          //  The loop is alive
    return 0;
}

//  A whole PEM file as a string (caller frees); NULL after logging.
static char *
s_read_pem (const char *key, const char *path)
{
    zchunk_t *chunk = NULL;
    FILE *file = fopen (path, "rb");
    if (file) {
        chunk = zchunk_read (file, 1024 * 1024);
        fclose (file);
    }
    if (!chunk || zchunk_size (chunk) == 0) {
        log_error ("%s: cannot read %s", key, path);
        zchunk_destroy (&chunk);
        return NULL;
    }
    char *text = zchunk_strdup (chunk);
    zchunk_destroy (&chunk);
    return text;
}

//  The HTTP side's limits, token and TLS (proto/security.md); -1 after
//  logging a bad setting. *secrets gets what the caller frees.
static int
s_http_limits (funnel_config_t *config, monitor_http_limits_t *limits, char *token,
               size_t token_size, char **cert, char **key)
{
    int64_t max = 1000, per_ip = 64, timeout = 10;
    if (funnel_config_int (config, "monitor/max_connections", 1000, &max)
    ||  funnel_config_int (config, "monitor/max_per_ip", 64, &per_ip)
    ||  funnel_config_int (config, "monitor/timeout_s", 10, &timeout))
        return -1;
    if (max < 1 || max > 100000 || per_ip < 1 || per_ip > 100000 || timeout < 1
    ||  timeout > 3600) {
        log_error ("monitor/max_connections, max_per_ip: 1..100000; timeout_s: 1..3600");
        return -1;
    }
    limits->max_connections = (unsigned) max;
    limits->max_per_ip = (unsigned) per_ip;
    limits->timeout_s = (unsigned) timeout;
    const char *token_file = funnel_config_get (config, "monitor/token_file", NULL);
    if (token_file && *token_file) {
        funnel_error_t err;
        if (redis_auth_read_secret (token_file, token, token_size, &err) != 0) {
            log_error ("monitor/token_file: %s", err.message);
            return -1;
        }
        limits->token = token;
    }
    const char *tls_cert = funnel_config_get (config, "monitor/tls_cert", NULL);
    const char *tls_key = funnel_config_get (config, "monitor/tls_key", NULL);
    if ((tls_cert && *tls_cert) != (tls_key && *tls_key)) {
        log_error ("monitor/tls_cert and monitor/tls_key go together");
        return -1;
    }
    if (tls_cert && *tls_cert) {
        *cert = s_read_pem ("monitor/tls_cert", tls_cert);
        *key = s_read_pem ("monitor/tls_key", tls_key);
        if (!*cert || !*key)
            return -1;
        limits->tls_cert = *cert;
        limits->tls_key = *key;
    }
    return 0;
}

int
main (int argc, char *argv [])
{
    funnel_signals_init ();

    funnel_config_about_t about = { "monitor",
        "live funnel monitor: /api/funnel, /metrics, /events (SSE), / (dashboard)",
        "Monitor keys: monitor/http (host:port, --http), monitor/pub (funnel.metrics\n"
        "every second), monitor/currency (ISO 4217, default USD). It reads every service's api and pub; no Redis of its own.\n"
        "HTTP limits: monitor/max_connections (1000), max_per_ip (64), timeout_s (10);\n"
        "monitor/token_file (a bearer token for /api/*, /events, /metrics),\n"
        "monitor/tls_cert and tls_key (PEM files: HTTPS). See proto/security.md.\n"
        "Exit codes: 0 clean stop, 1 cannot start (port in use), 2 bad config or flag.\n" };
    funnel_config_status_t status;
    funnel_config_t *config = funnel_config_load (argc, argv, &about, &status);
    if (status != FUNNEL_CONFIG_OK)
        return status == FUNNEL_CONFIG_EXIT_OK ? 0 : 2;
    funnel_log_level_t level = FUNNEL_LOG_INFO;
    funnel_log_level_parse (funnel_config_get (config, "log/level", "info"), &level);
    funnel_log_init ("monitor", level);

    monitor_t self = { .view = funnel_view_new () };
    int rc = 0;
    self.currency = funnel_config_get (config, "monitor/currency", "USD");
    if (!s_valid_currency (self.currency)) {
        log_error ("monitor/currency: '%s' is not an ISO 4217 code (three capital letters)",
                   self.currency);
        funnel_view_destroy (&self.view);
        funnel_config_destroy (&config);
        return 2;
    }
    //  With instances (proto/README.md section 7): the owner of partition 0
    //  answers PING, STATS and GET (counters and series are service wide);
    //  every instance's PUB feeds the live rates
    const char *apis [FUNNEL_VIEW_SERVICES];
    const char *pubs [FUNNEL_VIEW_SERVICES][FUNNEL_INSTANCES_MAX];
    const char *names [FUNNEL_VIEW_SERVICES][FUNNEL_INSTANCES_MAX];
    const char *instance_apis [FUNNEL_VIEW_SERVICES][FUNNEL_INSTANCES_MAX];
    int pub_counts [FUNNEL_VIEW_SERVICES];
    bool partitioned [FUNNEL_VIEW_SERVICES];
    for (int s = 0; s < FUNNEL_VIEW_SERVICES; s++) {
        funnel_topology_t *topology = funnel_topology_new (config, funnel_view_services [s]);
        if (!topology) {
            funnel_view_destroy (&self.view);
            funnel_config_destroy (&config);
            return 2;
        }
        partitioned [s] = funnel_topology_partitioned (topology);
        apis [s] = funnel_topology_owner (topology, 0)->api;
        pub_counts [s] = funnel_topology_count (topology);
        for (int i = 0; i < pub_counts [s]; i++) {
            pubs [s][i] = funnel_topology_at (topology, i)->pub;
            names [s][i] = funnel_topology_at (topology, i)->name;
            instance_apis [s][i] = funnel_topology_at (topology, i)->api;
        }
        funnel_topology_destroy (&topology);
    }
    self.series = series_api_new (apis);
    const char *http = funnel_config_endpoint (config, "monitor", "http");
    const char *pub = funnel_config_endpoint (config, "monitor", "pub");
    rc = funnel_curve_setup (config, "monitor");      //  ZAP before any bind
    self.pub = rc == 0 ? zsock_new (ZMQ_PUB) : NULL;
    if (rc == 0 && (!self.pub || funnel_curve_server (self.pub, pub, FUNNEL_CURVE_DOMAIN_PUB)
                ||  zsock_bind (self.pub, "%s", pub) < 0)) {
        log_error ("cannot bind pub %s", pub);
        rc = 1;
    }
    for (int s = 0; s < FUNNEL_VIEW_SERVICES && rc == 0; s++) {
        self.probes [s] = service_probe_new_instances (s, apis [s], pubs [s], pub_counts [s],
                                                       partitioned [s], names [s],
                                                       instance_apis [s], self.view);
        if (!self.probes [s])
            rc = 1;
    }
    monitor_http_limits_t limits = MONITOR_HTTP_LIMITS_DEFAULT;
    char token [256] = "";
    char *tls_cert = NULL, *tls_key = NULL;
    if (rc == 0 && s_http_limits (config, &limits, token, sizeof token, &tls_cert, &tls_key))
        rc = 2;
    if (rc == 0 && !limits.token && strncmp (http, "127.", 4) && strncmp (http, "[::1]", 5)
    &&  strncmp (http, "localhost:", 10))
        log_warn ("http on %s without monitor/token_file: anyone who can reach it reads "
                  "the funnel (proto/security.md)", http);
    if (rc == 0 && !(self.http = monitor_http_new_with (http, funnel_dashboard_html, &limits)))
        rc = 1;
    if (rc == 0)
        monitor_http_set_handler (self.http, s_on_api, self.series);
    memset (token, 0, sizeof token);
    if (tls_key)
        memset (tls_key, 0, strlen (tls_key));
    free (tls_cert);
    free (tls_key);
    //  Everything the monitor reads is read by now: what is left is a typo
    if (rc == 0 && funnel_config_check_keys (config))
        rc = 2;
    if (rc == 0) {
        log_info ("funnel-monitor %s: http %s, pub %s", FUNNEL_VERSION, http, pub);
        zloop_t *loop = zloop_new ();
        zloop_set_nonstop (loop, true);     //  Our own stop flag decides
        for (int s = 0; s < FUNNEL_VIEW_SERVICES; s++)
            zloop_reader (loop, service_probe_sub (self.probes [s]), s_on_sub, self.probes [s]);
        zloop_timer (loop, POLL_MS, 0, s_on_poll, &self);
        zloop_timer (loop, 1000, 0, s_on_second, &self);
        zloop_timer (loop, 100, 0, s_on_check_stop, NULL);
        s_render (&self);           //  Served at once, services unknown
        s_on_poll (loop, 0, &self);
        funnel_notify_ready ("monitor");    //  HTTP and PUB up: serving
        //  zloop_start returns on EINTR even in nonstop mode (czmq 4.2.1)
        while (!funnel_stop)
            if (zloop_start (loop) == -1)
                break;
        funnel_notify_stopping ();
        zloop_destroy (&loop);
        log_info ("stopped cleanly");
    }
    monitor_http_destroy (&self.http);     //  Joins the HTTP threads first
    series_api_destroy (&self.series);
    for (int s = 0; s < FUNNEL_VIEW_SERVICES; s++)
        service_probe_destroy (&self.probes [s]);
    zsock_destroy (&self.pub);
    funnel_curve_teardown ();
    json_decref (self.snapshot);
    funnel_view_destroy (&self.view);
    funnel_config_destroy (&config);
    return rc;
}
