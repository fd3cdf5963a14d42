/*  funnel-monitor — the live funnel: JSON, Prometheus, SSE, dashboard and
    a telemetry PUB (proto/monitor.md).

    Not a funnel_service: it owns no state and no Redis. One zloop thread
    talks to the services (service_probe) and, every 500 ms, renders the
    view into strings the HTTP threads serve (monitor_http).
*/
#include <signal.h>
#include "funnel_config.h"
#include "funnel_log.h"
#include "funnel_notify.h"
#include "funnel_signals.h"
#include "funnel_view.h"
#include "json_msgpack.h"
#include "monitor_http.h"
#include "service_probe.h"

#define POLL_MS         500     //  STATS/PING of each service, snapshot rebuild
#define CALL_TIMEOUT_MS 300     //  Per PING/STATS; a down service costs this
#define REPORT_EVERY    4       //  Campaign report every 4 polls (2 s)

extern const char funnel_dashboard_html [];

typedef struct {
    funnel_view_t *view;
    service_probe_t *probes [FUNNEL_VIEW_SERVICES];
    monitor_http_t *http;
    zsock_t *pub;
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
    char *json = json_dumps (self->snapshot, JSON_COMPACT);
    char *metrics = funnel_view_prometheus (self->view, now);
    monitor_http_update (self->http, json, metrics);
    free (json);
    free (metrics);
}

//  A stop signal may land while zmq_poll is not waiting: check the flag
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

int
main (int argc, char *argv [])
{
    funnel_signals_init ();

    funnel_config_about_t about = { "monitor",
        "live funnel monitor: /api/funnel, /metrics, /events (SSE), / (dashboard)",
        "Monitor keys: monitor/http (host:port, --http), monitor/pub (funnel.metrics\n"
        "every second). It reads every service's api and pub; no Redis of its own.\n"
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
    const char *http = funnel_config_endpoint (config, "monitor", "http");
    const char *pub = funnel_config_endpoint (config, "monitor", "pub");
    self.pub = zsock_new (ZMQ_PUB);
    if (!self.pub || zsock_bind (self.pub, "%s", pub) < 0) {
        log_error ("cannot bind pub %s", pub);
        rc = 1;
    }
    for (int s = 0; s < FUNNEL_VIEW_SERVICES && rc == 0; s++) {
        const char *name = funnel_view_services [s];
        self.probes [s] = service_probe_new (s, funnel_config_endpoint (config, name, "api"),
                                             funnel_config_endpoint (config, name, "pub"), self.view);
        if (!self.probes [s])
            rc = 1;
    }
    if (rc == 0 && !(self.http = monitor_http_new (http, funnel_dashboard_html)))
        rc = 1;
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
    monitor_http_destroy (&self.http);
    for (int s = 0; s < FUNNEL_VIEW_SERVICES; s++)
        service_probe_destroy (&self.probes [s]);
    zsock_destroy (&self.pub);
    json_decref (self.snapshot);
    funnel_view_destroy (&self.view);
    funnel_config_destroy (&config);
    return rc;
}
