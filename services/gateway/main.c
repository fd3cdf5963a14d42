/*  funnel-gateway — HTTP/JSON in, signed webhooks out (proto/gateway.md).

    Not a funnel_service: it owns no events. HTTP requests become PUBLISH
    and GET calls on the services (gateway_http, gateway_request), and each
    webhook subscription follows every service's output in its own thread
    (webhook). Redis holds only the webhooks' delivered positions.
    The main thread waits for signals: SIGTERM/SIGINT stop, SIGHUP re-reads
    the tokens file.
*/
#include <curl/curl.h>
#include <math.h>
#include "event_routes.h"
#include "funnel_config.h"
#include "funnel_topology.h"
#include "funnel_curve.h"
#include "funnel_log.h"
#include "funnel_notify.h"
#include "redis_auth.h"
#include "funnel_settings.h"
#include "funnel_signals.h"
#include "gateway_http.h"
#include "json_msgpack.h"
#include "webhook.h"

#define WEBHOOKS_MAX 64

extern const char funnel_gateway_openapi [];

static const funnel_setting_t s_settings [] = {
    { "threads", 16, 1, 256, true, "HTTP threads, each serving many connections (epoll)" },
    { "connection_limit", 1024, 1, 100000, true, "open HTTP connections at most" },
    { "connection_timeout_s", 60, 1, 86400, true, "idle HTTP connections closed after" },
    { "call_timeout_ms", 5000, 100, 600000, true, "wait for a service's reply (then 503)" },
    { "max_body", 4194304, 1024, 67108864, true, "request body bytes at most (then 413)" },
    { "webhook_timeout_ms", 10000, 100, 600000, true, "per webhook POST" },
    { "webhook_backoff_min_ms", 500, 10, 3600000, true, "first retry delay, doubling" },
    { "webhook_backoff_max_ms", 60000, 10, 86400000, true, "longest retry delay" },
    { NULL }
};

typedef struct {
    webhook_t *hooks [WEBHOOKS_MAX];
    int count;
} webhooks_t;

static json_t *
s_webhooks_stats (void *arg)
{
    webhooks_t *webhooks = (webhooks_t *) arg;
    json_t *list = json_array ();
    for (int i = 0; i < webhooks->count; i++)
        json_array_append_new (list, webhook_stats (webhooks->hooks [i]));
    return list;
}

//  The optional API socket (gateway/api): PING and STATS as every service
//  answers them (proto/wire.md), so the monitor and funnelctl can watch the
//  gateway like a service. STATS counters are the /v1/stats counters plus,
//  per subscription, webhook.<name>.{delivered,failures,
//  consecutive_failures,backlog}.
static json_t *
s_api_reply (gateway_http_t *http, const char *verb, int64_t started, bool *ok)
{
    *ok = true;
    json_t *stats = gateway_http_stats (http);
    json_t *reply = NULL;
    if (strcmp (verb, "PING") == 0) {
        bool redis = true;
        size_t i;
        json_t *hook;
        json_array_foreach (json_object_get (stats, "webhooks"), i, hook)
            redis = redis && json_is_true (json_object_get (hook, "redis"));
        reply = json_pack ("{s:s, s:s, s:i, s:s, s:I}", "svc", "gateway",
                           "version", FUNNEL_VERSION, "seq", 0, "redis", redis ? "ok" : "down",
                           "uptime_s", (json_int_t) ((zclock_mono () - started) / 1000));
    }
    else
    if (strcmp (verb, "STATS") == 0) {
        json_t *counters = json_deep_copy (json_object_get (stats, "counters"));
        size_t i;
        json_t *hook;
        json_array_foreach (json_object_get (stats, "webhooks"), i, hook) {
            const char *name = json_string_value (json_object_get (hook, "name"));
            const char *keys [] = { "delivered", "failures", "consecutive_failures" };
            char key [160];
            for (size_t k = 0; k < sizeof keys / sizeof keys [0]; k++) {
                snprintf (key, sizeof key, "webhook.%s.%s", name, keys [k]);
                json_object_set (counters, key, json_object_get (hook, keys [k]));
            }
            json_int_t backlog = 0;
            const char *svc;
            json_t *feed;
            json_object_foreach (json_object_get (hook, "services"), svc, feed)
                backlog += json_integer_value (json_object_get (feed, "backlog"));
            snprintf (key, sizeof key, "webhook.%s.backlog", name);
            json_object_set_new (counters, key, json_integer (backlog));
        }
        reply = json_pack ("{s:s, s:o}", "svc", "gateway", "counters", counters);
    }
    else {
        *ok = false;
        reply = json_pack ("{s:s, s:s}", "code", "bad_request",
                           "message", "verb: the gateway answers PING and STATS");
    }
    json_decref (stats);
    return reply;
}

static void
s_on_api (zsock_t *api, gateway_http_t *http, int64_t started)
{
    zmsg_t *msg = zmsg_recv (api);
    if (!msg)
        return;
    zframe_t *identity = zmsg_pop (msg);
    zframe_t *delimiter = NULL;
    if (zmsg_first (msg) && zframe_size (zmsg_first (msg)) == 0)
        delimiter = zmsg_pop (msg);             //  REQ or DEALER with delimiter
    char *verb = zmsg_popstr (msg);
    bool ok;
    json_t *reply = s_api_reply (http, verb ? verb : "", started, &ok);
    msgpack_sbuffer sbuf;
    if (identity && json_to_msgpack_sbuffer (reply, &sbuf) == 0) {
        zmsg_t *out = zmsg_new ();
        zmsg_append (out, &identity);
        if (delimiter)
            zmsg_append (out, &delimiter);
        zmsg_addstr (out, ok ? "OK" : "ERR");
        zmsg_addmem (out, sbuf.data, sbuf.size);
        msgpack_sbuffer_destroy (&sbuf);
        zmsg_send (&out, api);
    }
    json_decref (reply);
    free (verb);
    zframe_destroy (&identity);
    zframe_destroy (&delimiter);
    zmsg_destroy (&msg);
}

//  Loads gateway/tokens; an empty store (and a warning) when unset.
static token_store_t *
s_load_tokens (funnel_config_t *config)
{
    const char *path = funnel_config_get (config, "gateway/tokens", NULL);
    char error [512];
    if (!path) {
        log_warn ("gateway/tokens is not set: no token is valid, every request but "
                  "/v1/health and /v1/openapi.json gets 401");
        return token_store_parse ("", error, sizeof error);
    }
    token_store_t *tokens = token_store_load (path, error, sizeof error);
    if (!tokens)
        log_error ("gateway/tokens: %s", error);
    return tokens;
}

static int
s_start_webhooks (funnel_config_t *config, const double *values,
                  funnel_topology_t **topologies, webhooks_t *webhooks)
{
    const char *names [WEBHOOKS_MAX];
    int count = funnel_config_children (config, "webhooks", names, WEBHOOKS_MAX);
    for (int i = 0; i < count; i++) {
        char path [256];
        webhook_config_t wc = {
            .name = names [i],
            .redis_url = funnel_config_redis_url (config, "gateway"),
            .redis_config = config,
            .prefix = funnel_config_get (config, "gateway/prefix", "{funnel:gateway}:"),
            .timeout_ms = (int) funnel_settings_value (s_settings, values, "webhook_timeout_ms"),
            .backoff_min_ms = (int) funnel_settings_value (s_settings, values, "webhook_backoff_min_ms"),
            .backoff_max_ms = (int) funnel_settings_value (s_settings, values, "webhook_backoff_max_ms"),
        };
        snprintf (path, sizeof path, "webhooks/%s/url", names [i]);
        wc.url = funnel_config_get (config, path, NULL);
        snprintf (path, sizeof path, "webhooks/%s/types", names [i]);
        wc.types = funnel_config_get (config, path, NULL);
        snprintf (path, sizeof path, "webhooks/%s/secret", names [i]);
        wc.secret = funnel_config_get (config, path, NULL);
        snprintf (path, sizeof path, "webhooks/%s/start", names [i]);
        const char *start = funnel_config_get (config, path, "latest");
        if (strcmp (start, "latest") != 0 && strcmp (start, "earliest") != 0) {
            log_error ("config %s: '%s' is not latest or earliest", path, start);
            return 2;
        }
        wc.from_start = strcmp (start, "earliest") == 0;
        for (int s = 0; event_routes_services [s] && s < WEBHOOK_SERVICES_MAX; s++) {
            wc.services [s] = event_routes_services [s];
            wc.apis [s] = funnel_config_endpoint (config, event_routes_services [s], "api");
            wc.pubs [s] = funnel_config_endpoint (config, event_routes_services [s], "pub");
            wc.topologies [s] = topologies [s];
            wc.service_count++;
        }
        char error [512];
        webhooks->hooks [webhooks->count] = webhook_new (&wc, error, sizeof error);
        if (!webhooks->hooks [webhooks->count]) {
            log_error ("config %s", error);
            return 2;
        }
        webhooks->count++;
        log_info ("webhook %s: %s for %s", names [i], wc.url, wc.types);
    }
    return 0;
}

int
main (int argc, char *argv [])
{
    funnel_signals_init ();
    funnel_signals_reload_on_hup ();
    funnel_config_about_t about = { "gateway",
        "HTTP/JSON ingest and reads for the services, and signed webhooks out",
        funnel_settings_help ("gateway", s_settings,
            "  gateway/http = 127.0.0.1:7150  host:port to listen on (--http)\n"
            "  gateway/tokens = FILE  lines TOKEN NAME TYPES; re-read on SIGHUP\n"
            "  gateway/api = ENDPOINT  optional: answer PING and STATS there (--api)\n"
            "  gateway/cors_origins = \"https://a.example,https://b.example\" or \"*\"\n"
            "  gateway/redis, gateway/prefix = {funnel:gateway}:  webhook positions\n"
            "  webhooks/<name>/url, types, secret, start = latest|earliest\n"
            "Exit codes: 0 clean stop, 1 cannot start (port in use), 2 bad config or flag.\n"
            "Spec: proto/gateway.md; GET /v1/openapi.json.") };
    funnel_config_status_t status;
    funnel_config_t *config = funnel_config_load (argc, argv, &about, &status);
    if (status != FUNNEL_CONFIG_OK)
        return status == FUNNEL_CONFIG_EXIT_OK ? 0 : 2;
    funnel_log_level_t level = FUNNEL_LOG_INFO;
    funnel_log_level_parse (funnel_config_get (config, "log/level", "info"), &level);
    funnel_log_init ("gateway", level);

    double values [sizeof s_settings / sizeof s_settings [0]];
    msgpack_sbuffer scratch;
    msgpack_sbuffer_init (&scratch);
    msgpack_packer pk;
    msgpack_packer_init (&pk, &scratch, msgpack_sbuffer_write);
    int bad = funnel_settings_pack_entries (config, "gateway", s_settings, &pk, values);
    msgpack_sbuffer_destroy (&scratch);
    //  The gateway's Redis credentials are checked at start, webhooks or
    //  not, so a bad password file (or a typo in its keys) stops it now
    redis_url_t redis_url;
    funnel_error_t url_err;
    if (!bad && redis_url_parse (funnel_config_redis_url (config, "gateway"), &redis_url,
                                 &url_err) != 0) {
        log_error ("gateway redis url: %s", url_err.message);
        bad = 1;
    }
    if (!bad && redis_auth_apply (config, "gateway", &redis_url) != 0)
        bad = 1;                    //  Logged by redis_auth_apply
    //  Several instances of a service (proto/README.md section 7): PUBLISH
    //  goes to the owner of the events' partitions, and webhooks follow
    //  each partition's seqs
    funnel_topology_t *topologies [WEBHOOK_SERVICES_MAX] = { NULL };
    for (int s = 0; !bad && event_routes_services [s]; s++) {
        topologies [s] = funnel_topology_new (config, event_routes_services [s]);
        if (!topologies [s])
            bad = 1;
    }
    memset (&redis_url, 0, sizeof redis_url);       //  The password: not kept
    token_store_t *tokens = bad ? NULL : s_load_tokens (config);
    if (!tokens) {
        for (int s = 0; s < WEBHOOK_SERVICES_MAX; s++)
            funnel_topology_destroy (&topologies [s]);
        funnel_config_destroy (&config);
        return 2;
    }
    zsys_init ();                   //  Once, before threads make sockets
    //  CURVE (proto/security.md): the ZAP handler before any bind, and the
    //  gateway's keypair for its clients to the services
    int curve_rc = funnel_curve_setup (config, "gateway");
    if (curve_rc != 0) {
        token_store_unref (&tokens);
        for (int s = 0; s < WEBHOOK_SERVICES_MAX; s++)
            funnel_topology_destroy (&topologies [s]);
        funnel_config_destroy (&config);
        return curve_rc;
    }
    curl_global_init (CURL_GLOBAL_DEFAULT);

    service_pool_t *pools [WEBHOOK_SERVICES_MAX] = { NULL };
    service_pool_t *instance_pools [WEBHOOK_SERVICES_MAX][FUNNEL_INSTANCES_MAX] = { { NULL } };
    for (int s = 0; event_routes_services [s]; s++) {
        //  GET goes to the owner of partition 0: any instance answers it
        funnel_topology_t *topology = topologies [s];
        pools [s] = service_pool_new (event_routes_services [s],
                                      funnel_topology_owner (topology, 0)->api);
        for (int i = 0; funnel_topology_partitioned (topology)
                        && i < funnel_topology_count (topology); i++)
            instance_pools [s][i] = service_pool_new (event_routes_services [s],
                                                      funnel_topology_at (topology, i)->api);
    }
    webhooks_t webhooks = { { NULL }, 0 };
    int rc = s_start_webhooks (config, values, topologies, &webhooks);
    gateway_http_t *http = NULL;
    const char *address = funnel_config_endpoint (config, "gateway", "http");
    if (rc == 0) {
        gateway_http_config_t hc = {
            .address = address,
            .threads = (int) funnel_settings_value (s_settings, values, "threads"),
            .connection_limit = (int) funnel_settings_value (s_settings, values, "connection_limit"),
            .connection_timeout_s = (int) funnel_settings_value (s_settings, values, "connection_timeout_s"),
            .call_timeout_ms = (int) funnel_settings_value (s_settings, values, "call_timeout_ms"),
            .max_body = (size_t) funnel_settings_value (s_settings, values, "max_body"),
            .cors_origins = funnel_config_get (config, "gateway/cors_origins", NULL),
            .openapi = funnel_gateway_openapi,
            .pools = pools,
            .topologies = topologies,
            .instance_pools = instance_pools,
            .webhooks_stats = s_webhooks_stats,
            .webhooks_arg = &webhooks
        };
        http = gateway_http_new (&hc, tokens);
        if (!http)
            rc = 1;
    }
    zsock_t *api = NULL;
    const char *api_endpoint = funnel_config_get (config, "gateway/api", NULL);
    if (rc == 0 && api_endpoint) {
        api = zsock_new (ZMQ_ROUTER);
        if (api)
            zsock_set_maxmsgsize (api, 64 * 1024);
        if (!api || funnel_curve_server (api, api_endpoint, FUNNEL_CURVE_DOMAIN_API) != 0
        ||  zsock_bind (api, "%s", api_endpoint) < 0) {
            log_error ("cannot bind api %s", api_endpoint);
            rc = 1;
        }
    }
    //  Everything the gateway reads is read by now: what is left is a typo
    if (rc == 0 && funnel_config_check_keys (config))
        rc = 2;
    if (rc == 0) {
        log_info ("funnel-gateway %s: http %s%s%s, %zu tokens, %d webhooks", FUNNEL_VERSION,
                  address, api ? ", api " : "", api ? api_endpoint : "",
                  token_store_size (tokens), webhooks.count);
        funnel_notify_ready ("gateway: serving HTTP");
        int64_t started = zclock_mono ();
        while (!funnel_stop) {
            if (api) {
                zmq_pollitem_t item = { zsock_resolve (api), 0, ZMQ_POLLIN, 0 };
                if (zmq_poll (&item, 1, 100) > 0)
                    s_on_api (api, http, started);
            }
            else
                zclock_sleep (100);
            funnel_notify_tick ();
            if (funnel_reload) {
                funnel_reload = 0;
                token_store_t *fresh = s_load_tokens (config);
                if (fresh) {
                    gateway_http_set_tokens (http, fresh);
                    log_info ("tokens re-read: %zu tokens", token_store_size (fresh));
                    token_store_unref (&fresh);
                }
                else
                    log_warn ("tokens file not re-read (the old tokens stay)");
            }
        }
        log_info ("stopping");
        funnel_notify_stopping ();
    }
    zsock_destroy (&api);
    gateway_http_destroy (&http);           //  No request is in flight after this
    for (int i = 0; i < webhooks.count; i++)
        webhook_destroy (&webhooks.hooks [i]);
    for (int s = 0; s < WEBHOOK_SERVICES_MAX; s++)
        service_pool_destroy (&pools [s]);
    for (int s = 0; s < WEBHOOK_SERVICES_MAX; s++) {
        for (int i = 0; i < FUNNEL_INSTANCES_MAX; i++)
            service_pool_destroy (&instance_pools [s][i]);
        funnel_topology_destroy (&topologies [s]);
    }
    token_store_unref (&tokens);
    curl_global_cleanup ();
    funnel_curve_teardown ();               //  After every socket is closed
    funnel_config_destroy (&config);
    if (rc == 0)
        log_info ("stopped cleanly");
    return rc;
}
