/*  gateway_http — see gateway_http.h for why. */
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <strings.h>
#include <sys/socket.h>
#include "event_codec.h"
#include "event_routes.h"
#include "funnel_http.h"
#include "funnel_log.h"
#include "gateway_http.h"
#include "privacy_export.h"
#include "gateway_request.h"
#include "json_msgpack.h"

#define JSON_TYPE "application/json"

struct _gateway_http_t {
    gateway_http_config_t config;
    char *cors_origins;
    struct MHD_Daemon *daemon;
    pthread_mutex_t lock;           //  Guards tokens (the pointer)
    token_store_t *tokens;
    int64_t started;
    atomic_uint_fast64_t requests, published, errors_4xx, errors_5xx, timeouts;
};

//  One request: its body as it arrives, and what it holds
typedef struct {
    char *body;
    size_t size, capacity;
    bool too_large;
    const char *origin;             //  Allowed Origin to echo, or NULL
    token_store_t *tokens;          //  Held while the request uses a token
} request_t;

//  Service replies are trusted services' output but still bytes from the
//  network: decoded through the guard, with room for large reports
static const event_codec_limits_t s_reply_limits = {
    .max_bytes = 64u * 1024 * 1024, .str_max = 1024 * 1024,
    .entries_max = 1000000, .top_entries_max = 1000000,
    .elem_max_bytes = 0, .depth_max = 32
};

//  --------------------------------------------------------------------------
//  Responses

static enum MHD_Result
s_respond (gateway_http_t *self, request_t *req, struct MHD_Connection *connection,
           unsigned int status, char *body, const char *type)
{
    if (status >= 500)
        atomic_fetch_add (&self->errors_5xx, 1);
    else
    if (status >= 400)
        atomic_fetch_add (&self->errors_4xx, 1);
    const char *text = body ? body : "";
    struct MHD_Response *response = MHD_create_response_from_buffer (
        strlen (text), (void *) text, body ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (!response) {
        free (body);
        return MHD_NO;
    }
    if (type)
        MHD_add_response_header (response, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header (response, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (status == MHD_HTTP_SERVICE_UNAVAILABLE)
        MHD_add_response_header (response, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    if (status == MHD_HTTP_UNAUTHORIZED)
        MHD_add_response_header (response, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    if (req && req->origin) {
        MHD_add_response_header (response, "Access-Control-Allow-Origin", req->origin);
        MHD_add_response_header (response, "Access-Control-Expose-Headers", "Retry-After");
        MHD_add_response_header (response, MHD_HTTP_HEADER_VARY, "Origin");
    }
    enum MHD_Result rc = MHD_queue_response (connection, status, response);
    MHD_destroy_response (response);
    return rc;
}

static enum MHD_Result
s_error (gateway_http_t *self, request_t *req, struct MHD_Connection *connection,
         const funnel_error_t *err)
{
    return s_respond (self, req, connection, (unsigned int) gateway_http_status (err->code),
                      gateway_error_json (err), JSON_TYPE);
}

static enum MHD_Result
s_fail (gateway_http_t *self, request_t *req, struct MHD_Connection *connection,
        const char *code, const char *format, ...) __attribute__ ((format (printf, 5, 6)));

static enum MHD_Result
s_fail (gateway_http_t *self, request_t *req, struct MHD_Connection *connection,
        const char *code, const char *format, ...)
{
    funnel_error_t err;
    funnel_error_clear (&err);
    err.code = code;
    va_list args;
    va_start (args, format);
    vsnprintf (err.message, sizeof err.message, format, args);
    va_end (args);
    return s_error (self, req, connection, &err);
}

//  The reply of a service call as the HTTP response.
static enum MHD_Result
s_service_reply (gateway_http_t *self, request_t *req, struct MHD_Connection *connection,
                 const char *service, funnel_call_status_t status, zframe_t *reply)
{
    if (status == FUNNEL_CALL_TIMEOUT) {
        atomic_fetch_add (&self->timeouts, 1);
        return s_fail (self, req, connection, FUNNEL_ERR_UNAVAILABLE,
                       "%s: no reply within %d ms; the outcome is unknown, a retry with the "
                       "same ids is safe", service, self->config.call_timeout_ms);
    }
    funnel_error_t err;
    event_codec_t *msg = status == FUNNEL_CALL_BROKEN || !reply ? NULL
                      : event_codec_decode (zframe_data (reply), zframe_size (reply),
                                           &s_reply_limits, &err);
    json_t *json = msg ? json_from_msgpack (event_codec_root (msg)) : NULL;
    event_codec_destroy (&msg);
    if (!json || (status == FUNNEL_CALL_ERR && !json_is_object (json))) {
        json_decref (json);
        return s_fail (self, req, connection, "bad_gateway", "%s: a reply the gateway "
                       "cannot read", service);
    }
    unsigned int code = MHD_HTTP_OK;
    if (status == FUNNEL_CALL_ERR)
        code = (unsigned int) gateway_http_status (json_string_value (json_object_get (json, "code")));
    char *text = json_dumps (json, JSON_COMPACT);
    json_decref (json);
    return s_respond (self, req, connection, code, text, JSON_TYPE);
}

//  --------------------------------------------------------------------------
//  Requests

//  The caller's token, or NULL after answering 401.
static const token_t *
s_auth (gateway_http_t *self, request_t *req, struct MHD_Connection *connection,
        enum MHD_Result *rc)
{
    const char *header = MHD_lookup_connection_value (connection, MHD_HEADER_KIND,
                                                      MHD_HTTP_HEADER_AUTHORIZATION);
    if (!header || strncasecmp (header, "Bearer ", 7) != 0) {
        *rc = s_fail (self, req, connection, GATEWAY_ERR_UNAUTHORIZED,
                      "Authorization: Bearer TOKEN required");
        return NULL;
    }
    const char *token = header + 7;
    while (*token == ' ')
        token++;
    pthread_mutex_lock (&self->lock);
    req->tokens = token_store_ref (self->tokens);
    pthread_mutex_unlock (&self->lock);
    const token_t *found = token_store_find (req->tokens, token, strlen (token));
    if (!found)
        *rc = s_fail (self, req, connection, GATEWAY_ERR_UNAUTHORIZED, "unknown token");
    return found;
}

static service_pool_t *
s_pool (gateway_http_t *self, const char *service)
{
    for (int s = 0; event_routes_services [s]; s++)
        if (strcmp (event_routes_services [s], service) == 0)
            return self->config.pools [s];
    return NULL;
}

//  The pool a PUBLISH body goes to: the service's, or with instances the
//  owner of its events' partitions; every event of one request must be
//  owned by one instance (one atomic PUBLISH), else invalid with index.
static service_pool_t *
s_owner_pool (gateway_http_t *self, const char *service, const msgpack_sbuffer *body,
         funnel_error_t *err)
{
    int s = 0;
    while (event_routes_services [s] && strcmp (event_routes_services [s], service) != 0)
        s++;
    funnel_topology_t *topology = self->config.topologies ? self->config.topologies [s] : NULL;
    if (!topology || !funnel_topology_partitioned (topology))
        return s_pool (self, service);
    msgpack_unpacked msg;
    msgpack_unpacked_init (&msg);
    int owner = -1;
    if (msgpack_unpack_next (&msg, body->data, body->size, NULL) == MSGPACK_UNPACK_SUCCESS) {
        bool batch = msg.data.type == MSGPACK_OBJECT_ARRAY;
        uint32_t count = batch ? msg.data.via.array.size : 1;
        for (uint32_t i = 0; i < count; i++) {
            const msgpack_object *ev = batch ? &msg.data.via.array.ptr [i] : &msg.data;
            int part = funnel_topology_event_part (service, event_codec_map_get (ev, "data"),
                                                   funnel_topology_partitions (topology));
            int index = funnel_topology_owner_index (topology, part);
            if (owner < 0)
                owner = index;
            else
            if (index != owner) {
                funnel_error_set (err, FUNNEL_ERR_INVALID,
                    "partition: the events of one request must belong to one instance of %s "
                    "(element %u: partition %d, instance '%s'; element 0: instance '%s')",
                    service, i, part, funnel_topology_at (topology, index)->name,
                    funnel_topology_at (topology, owner)->name);
                err->index = (int) i;
                owner = -1;
                break;
            }
        }
    }
    msgpack_unpacked_destroy (&msg);
    return owner >= 0 ? self->config.instance_pools [s][owner] : NULL;
}

static enum MHD_Result
s_ingest (gateway_http_t *self, request_t *req, struct MHD_Connection *connection)
{
    enum MHD_Result rc = MHD_NO;
    const token_t *token = s_auth (self, req, connection, &rc);
    if (!token)
        return rc;
    if (req->too_large)
        return s_fail (self, req, connection, FUNNEL_ERR_TOO_LARGE,
                       "body: over %zu bytes", self->config.max_body);
    const char *type = MHD_lookup_connection_value (connection, MHD_HEADER_KIND,
                                                    MHD_HTTP_HEADER_CONTENT_TYPE);
    bool ndjson = type && strncasecmp (type, "application/x-ndjson", 20) == 0;
    if (type && !ndjson && strncasecmp (type, JSON_TYPE, strlen (JSON_TYPE)) != 0)
        return s_fail (self, req, connection, "unsupported_media_type",
                       "Content-Type: application/json or application/x-ndjson");
    gateway_ingest_t ingest = {
        .body = req->body ? req->body : "", .size = req->size, .ndjson = ndjson,
        .idempotency_key = MHD_lookup_connection_value (connection, MHD_HEADER_KIND,
                                                        "Idempotency-Key"),
        .token = token, .now_ms = zclock_time ()
    };
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init (&sbuf);
    const char *service = NULL;
    funnel_error_t err;
    if (gateway_ingest_build (&ingest, &service, &sbuf, &err)) {
        msgpack_sbuffer_destroy (&sbuf);
        return s_error (self, req, connection, &err);
    }
    funnel_error_clear (&err);
    service_pool_t *pool = s_owner_pool (self, service, &sbuf, &err);
    if (!pool) {
        msgpack_sbuffer_destroy (&sbuf);
        return s_error (self, req, connection, &err);
    }
    zframe_t *reply = NULL;
    funnel_call_status_t status = service_pool_call (pool, "PUBLISH",
                                                     sbuf.data, sbuf.size,
                                                     self->config.call_timeout_ms, &reply);
    msgpack_sbuffer_destroy (&sbuf);
    if (status == FUNNEL_CALL_OK)
        atomic_fetch_add (&self->published, 1);
    rc = s_service_reply (self, req, connection, service, status, reply);
    zframe_destroy (&reply);
    return rc;
}

typedef struct {
    json_t *body;
    funnel_error_t err;
} query_t;

static enum MHD_Result
s_query_arg (void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    (void) kind;
    query_t *query = (query_t *) cls;
    if (strcmp (key, "kind") == 0) {
        funnel_error_set (&query->err, FUNNEL_ERR_INVALID, "kind: is the last part of the path");
        return MHD_NO;
    }
    if (json_object_get (query->body, key)) {
        funnel_error_set (&query->err, FUNNEL_ERR_INVALID, "%.64s: given twice", key);
        return MHD_NO;
    }
    json_object_set_new (query->body, key, gateway_query_value (key, value ? value : ""));
    return MHD_YES;
}

static enum MHD_Result
s_read (gateway_http_t *self, request_t *req, struct MHD_Connection *connection,
        const char *service, const char *kind)
{
    enum MHD_Result rc = MHD_NO;
    if (!s_auth (self, req, connection, &rc))
        return rc;
    query_t query = { json_pack ("{s:s}", "kind", kind), { NULL, "", -1 } };
    MHD_get_connection_values (connection, MHD_GET_ARGUMENT_KIND, s_query_arg, &query);
    msgpack_sbuffer sbuf;
    if (!query.err.code && json_to_msgpack_sbuffer (query.body, &sbuf))
        funnel_error_set (&query.err, FUNNEL_ERR_INVALID, "query: a value nested too deep");
    json_decref (query.body);
    if (query.err.code)
        return s_error (self, req, connection, &query.err);
    zframe_t *reply = NULL;
    funnel_call_status_t status = service_pool_call (s_pool (self, service), "GET", sbuf.data,
                                                     sbuf.size, self->config.call_timeout_ms,
                                                     &reply);
    msgpack_sbuffer_destroy (&sbuf);
    rc = s_service_reply (self, req, connection, service, status, reply);
    zframe_destroy (&reply);
    return rc;
}

//  GET /v1/people/{id}/export: each service's GET export merged
//  (privacy_export.h). leads' ERR is the answer (404 for an unknown
//  lead). A service that does not answer, or answers unavailable: 503
//  (an export must be whole); another ERR goes in the document.
static enum MHD_Result
s_export (gateway_http_t *self, request_t *req, struct MHD_Connection *connection,
          const char *lead)
{
    enum MHD_Result rc = MHD_NO;
    const token_t *token = s_auth (self, req, connection, &rc);
    if (!token)
        return rc;
    //  A person's whole record is for who may erase it, not for any token:
    //  a webform's token is public (it ships in a page)
    if (!token_may_publish (token, "lead.forget"))
        return s_fail (self, req, connection, GATEWAY_ERR_FORBIDDEN,
                       "token '%s' may not export a person (needs lead.forget)",
                       token_name (token));
    if (!event_codec_id_valid (lead, strlen (lead)))
        return s_fail (self, req, connection, FUNNEL_ERR_INVALID,
                       "lead: must be 1-64 bytes of [A-Za-z0-9._:@+-]");
    json_t *body = json_pack ("{s:s, s:s}", "kind", "export", "lead", lead);
    msgpack_sbuffer sbuf;
    int packed = json_to_msgpack_sbuffer (body, &sbuf);
    json_decref (body);
    if (packed)
        return s_fail (self, req, connection, FUNNEL_ERR_INVALID, "lead: cannot be packed");
    json_t *doc = privacy_export_new (lead);
    const char *order [] = { "leads", "campaign", "sales", "retention" };
    for (int i = 0; i < 4; i++) {
        zframe_t *reply = NULL;
        funnel_call_status_t status = service_pool_call (s_pool (self, order [i]), "GET",
                                                         sbuf.data, sbuf.size,
                                                         self->config.call_timeout_ms, &reply);
        funnel_error_t err;
        event_codec_t *msg = status == FUNNEL_CALL_BROKEN || status == FUNNEL_CALL_TIMEOUT
                         || !reply ? NULL
                          : event_codec_decode (zframe_data (reply), zframe_size (reply),
                                               &s_reply_limits, &err);
        json_t *json = msg ? json_from_msgpack (event_codec_root (msg)) : NULL;
        event_codec_destroy (&msg);
        zframe_destroy (&reply);
        if (!json || (status == FUNNEL_CALL_ERR && !json_is_object (json))) {
            json_decref (json);
            json_decref (doc);
            msgpack_sbuffer_destroy (&sbuf);
            if (status != FUNNEL_CALL_TIMEOUT)      //  As any GET (s_service_reply)
                return s_fail (self, req, connection, "bad_gateway",
                               "%s: a reply the gateway cannot read", order [i]);
            atomic_fetch_add (&self->timeouts, 1);
            return s_fail (self, req, connection, FUNNEL_ERR_UNAVAILABLE,
                           "%s: no reply within %d ms; the export would be incomplete",
                           order [i], self->config.call_timeout_ms);
        }
        const char *code = status == FUNNEL_CALL_ERR
                         ? json_string_value (json_object_get (json, "code")) : NULL;
        if (code && strcmp (code, "unavailable") == 0 && i > 0) {
            //  Redis down behind a service: retry later, as with no reply
            json_decref (json);
            json_decref (doc);
            msgpack_sbuffer_destroy (&sbuf);
            return s_fail (self, req, connection, FUNNEL_ERR_UNAVAILABLE,
                           "%s: unavailable; the export would be incomplete", order [i]);
        }
        if (status == FUNNEL_CALL_ERR && i == 0) {
            //  leads' answer (not_found for an unknown lead) is the answer
            char *text = json_dumps (json, JSON_COMPACT);
            unsigned int http = (unsigned int) gateway_http_status (code);
            json_decref (json);
            json_decref (doc);
            msgpack_sbuffer_destroy (&sbuf);
            return s_respond (self, req, connection, http, text, JSON_TYPE);
        }
        privacy_export_add (doc, order [i], status == FUNNEL_CALL_ERR ? PRIVACY_EXPORT_ERR
                                                                     : PRIVACY_EXPORT_OK, json);
        json_decref (json);
    }
    msgpack_sbuffer_destroy (&sbuf);
    char *text = json_dumps (doc, JSON_COMPACT);
    json_decref (doc);
    return s_respond (self, req, connection, MHD_HTTP_OK, text, JSON_TYPE);
}

json_t *
gateway_http_stats (gateway_http_t *self)
{
    pthread_mutex_lock (&self->lock);
    size_t tokens = token_store_size (self->tokens);
    pthread_mutex_unlock (&self->lock);
    json_t *webhooks = self->config.webhooks_stats
                     ? self->config.webhooks_stats (self->config.webhooks_arg) : json_array ();
    int failing = 0;
    size_t i;
    json_t *hook;
    json_array_foreach (webhooks, i, hook)
        if (json_integer_value (json_object_get (hook, "consecutive_failures")) > 0)
            failing++;
    json_t *stats = json_pack ("{s:s, s:s, s:I, s:{s:I, s:I, s:I, s:I, s:I, s:i, s:i}, s:i, s:o}",
        "svc", "gateway", "version", FUNNEL_VERSION,
        "uptime_s", (json_int_t) ((zclock_mono () - self->started) / 1000),
        "counters",
            "requests", (json_int_t) atomic_load (&self->requests),
            "published", (json_int_t) atomic_load (&self->published),
            "errors_4xx", (json_int_t) atomic_load (&self->errors_4xx),
            "errors_5xx", (json_int_t) atomic_load (&self->errors_5xx),
            "timeouts", (json_int_t) atomic_load (&self->timeouts),
            "webhooks", (int) json_array_size (webhooks),
            "webhooks_failing", failing,
        "tokens", (int) tokens,
        "webhooks", webhooks);
    return stats;
}

static enum MHD_Result
s_stats (gateway_http_t *self, request_t *req, struct MHD_Connection *connection)
{
    enum MHD_Result rc = MHD_NO;
    if (!s_auth (self, req, connection, &rc))
        return rc;
    json_t *stats = gateway_http_stats (self);
    char *text = json_dumps (stats, JSON_COMPACT);
    json_decref (stats);
    return s_respond (self, req, connection, MHD_HTTP_OK, text, JSON_TYPE);
}

static bool
s_origin_allowed (gateway_http_t *self, const char *origin)
{
    if (!self->cors_origins || !origin)
        return false;
    size_t length = strlen (origin);
    for (const char *p = self->cors_origins; *p; ) {
        while (*p == ' ' || *p == ',')
            p++;
        size_t item = strcspn (p, ", ");
        if ((item == 1 && *p == '*') || (item == length && strncmp (p, origin, length) == 0))
            return item > 0;
        p += item;
    }
    return false;
}

static enum MHD_Result
s_preflight (gateway_http_t *self, request_t *req, struct MHD_Connection *connection)
{
    if (!req->origin)
        return s_fail (self, req, connection, GATEWAY_ERR_FORBIDDEN,
                       "Origin: not allowed (gateway/cors_origins)");
    struct MHD_Response *response = MHD_create_response_from_buffer (0, (void *) "",
                                                                     MHD_RESPMEM_PERSISTENT);
    if (!response)
        return MHD_NO;
    MHD_add_response_header (response, "Access-Control-Allow-Origin", req->origin);
    MHD_add_response_header (response, "Access-Control-Allow-Methods", "GET, POST, OPTIONS");
    MHD_add_response_header (response, "Access-Control-Allow-Headers",
                             "Authorization, Content-Type, Idempotency-Key");
    MHD_add_response_header (response, "Access-Control-Max-Age", "600");
    MHD_add_response_header (response, MHD_HTTP_HEADER_VARY, "Origin");
    enum MHD_Result rc = MHD_queue_response (connection, MHD_HTTP_NO_CONTENT, response);
    MHD_destroy_response (response);
    return rc;
}

static enum MHD_Result
s_not_allowed (gateway_http_t *self, request_t *req, struct MHD_Connection *connection,
               const char *allow)
{
    funnel_error_t err = { "method_not_allowed", "", -1 };
    snprintf (err.message, sizeof err.message, "method: %s only", allow);
    char *body = gateway_error_json (&err);
    atomic_fetch_add (&self->errors_4xx, 1);
    struct MHD_Response *response = MHD_create_response_from_buffer (
        strlen (body), body, MHD_RESPMEM_MUST_FREE);
    if (!response)
        return MHD_NO;
    MHD_add_response_header (response, MHD_HTTP_HEADER_CONTENT_TYPE, JSON_TYPE);
    MHD_add_response_header (response, MHD_HTTP_HEADER_ALLOW, allow);
    if (req->origin)
        MHD_add_response_header (response, "Access-Control-Allow-Origin", req->origin);
    enum MHD_Result rc = MHD_queue_response (connection, MHD_HTTP_METHOD_NOT_ALLOWED, response);
    MHD_destroy_response (response);
    return rc;
}

static enum MHD_Result
s_route (gateway_http_t *self, request_t *req, struct MHD_Connection *connection,
         const char *url, const char *method)
{
    bool get = strcmp (method, "GET") == 0 || strcmp (method, "HEAD") == 0;
    bool post = strcmp (method, "POST") == 0;
    if (strcmp (method, "OPTIONS") == 0)
        return s_preflight (self, req, connection);
    if (strcmp (url, "/v1/events") == 0)
        return post ? s_ingest (self, req, connection)
                    : s_not_allowed (self, req, connection, "POST, OPTIONS");
    //  Every other /v1/ path is read-only
    if (strncmp (url, "/v1/", 4) == 0 && !get)
        return s_not_allowed (self, req, connection, "GET, HEAD, OPTIONS");
    if (strcmp (url, "/v1/openapi.json") == 0)
        return s_respond (self, req, connection, MHD_HTTP_OK, strdup (self->config.openapi),
                          JSON_TYPE);
    if (strcmp (url, "/v1/health") == 0)
        return s_respond (self, req, connection, MHD_HTTP_OK, strdup ("{\"status\":\"ok\"}"),
                          JSON_TYPE);
    if (strcmp (url, "/v1/stats") == 0)
        return s_stats (self, req, connection);
    if (strncmp (url, "/v1/people/", 11) == 0) {
        //  Any segment is this endpoint's: one that is not an id (empty,
        //  too long) is 400 invalid there, as gateway.md says
        const char *lead = url + 11;
        const char *slash = strchr (lead, '/');
        if (slash && strcmp (slash, "/export") == 0) {
            char id [FUNNEL_ID_MAX + 2];
            size_t size = (size_t) (slash - lead);
            if (size > FUNNEL_ID_MAX + 1)
                size = FUNNEL_ID_MAX + 1;       //  Still too long: refused
            memcpy (id, lead, size);
            id [size] = 0;
            return s_export (self, req, connection, id);
        }
    }
    if (strncmp (url, "/v1/", 4) == 0) {
        const char *service = url + 4;
        const char *slash = strchr (service, '/');
        const char *kind = slash ? slash + 1 : "";
        char name [32];
        size_t length = slash ? (size_t) (slash - service) : 0;
        if (slash && length < sizeof name && *kind && !strchr (kind, '/')
        &&  strlen (kind) <= FUNNEL_ID_MAX) {
            memcpy (name, service, length);
            name [length] = 0;
            if (event_routes_known_service (name))
                return s_read (self, req, connection, name, kind);
            return s_fail (self, req, connection, FUNNEL_ERR_NOT_FOUND,
                           "service: no service '%s' (campaign, leads, sales, retention)", name);
        }
    }
    return s_fail (self, req, connection, FUNNEL_ERR_NOT_FOUND, "path: no endpoint %.128s "
                   "(see /v1/openapi.json)", url);
}

static enum MHD_Result
s_on_request (void *cls, struct MHD_Connection *connection, const char *url,
              const char *method, const char *version, const char *upload_data,
              size_t *upload_data_size, void **request_state)
{
    (void) version;
    gateway_http_t *self = (gateway_http_t *) cls;
    request_t *req = (request_t *) *request_state;
    if (!req) {
        req = (request_t *) calloc (1, sizeof (request_t));
        if (!req)
            return MHD_NO;
        *request_state = req;
        atomic_fetch_add (&self->requests, 1);
        const char *origin = MHD_lookup_connection_value (connection, MHD_HEADER_KIND, "Origin");
        if (s_origin_allowed (self, origin))
            req->origin = origin;
        const char *length = MHD_lookup_connection_value (connection, MHD_HEADER_KIND,
                                                          MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (length && strtoull (length, NULL, 10) > self->config.max_body)
            req->too_large = true;
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        size_t size = *upload_data_size;
        *upload_data_size = 0;
        if (req->too_large || req->size + size > self->config.max_body) {
            req->too_large = true;      //  The rest is read and dropped
            return MHD_YES;
        }
        if (req->size + size > req->capacity) {
            size_t capacity = req->capacity ? req->capacity : 4096;
            while (capacity < req->size + size)
                capacity *= 2;
            char *body = realloc (req->body, capacity);
            if (!body)
                return MHD_NO;
            req->body = body;
            req->capacity = capacity;
        }
        memcpy (req->body + req->size, upload_data, size);
        req->size += size;
        return MHD_YES;
    }
    return s_route (self, req, connection, url, method);
}

static void
s_on_completed (void *cls, struct MHD_Connection *connection, void **request_state,
                enum MHD_RequestTerminationCode code)
{
    (void) cls; (void) connection; (void) code;
    request_t *req = (request_t *) *request_state;
    if (req) {
        token_store_unref (&req->tokens);
        free (req->body);
        free (req);
        *request_state = NULL;
    }
}

gateway_http_t *
gateway_http_new (const gateway_http_config_t *config, token_store_t *tokens)
{
    struct addrinfo *ai = funnel_http_resolve (config->address);
    if (!ai) {
        log_error ("http: cannot resolve '%s'", config->address);
        return NULL;
    }
    gateway_http_t *self = (gateway_http_t *) calloc (1, sizeof (gateway_http_t));
    self->config = *config;
    self->cors_origins = config->cors_origins ? strdup (config->cors_origins) : NULL;
    self->tokens = token_store_ref (tokens);
    self->started = zclock_mono ();
    pthread_mutex_init (&self->lock, NULL);
    unsigned int flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    sigset_t block, saved;
    sigemptyset (&block);
    sigaddset (&block, SIGINT);
    sigaddset (&block, SIGTERM);
    sigaddset (&block, SIGHUP);
    pthread_sigmask (SIG_BLOCK, &block, &saved);
    self->daemon = MHD_start_daemon (flags, 0, NULL, NULL, s_on_request, self,
        MHD_OPTION_SOCK_ADDR, ai->ai_addr,
        MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned int) 1,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned int) config->threads,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned int) config->connection_limit,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int) config->connection_timeout_s,
        MHD_OPTION_NOTIFY_COMPLETED, s_on_completed, self,
        MHD_OPTION_EXTERNAL_LOGGER, funnel_http_log, NULL,
        MHD_OPTION_END);
    pthread_sigmask (SIG_SETMASK, &saved, NULL);
    freeaddrinfo (ai);
    if (!self->daemon) {
        log_error ("http: cannot listen on %s", config->address);
        gateway_http_destroy (&self);
    }
    return self;
}

void
gateway_http_destroy (gateway_http_t **self_p)
{
    if (*self_p) {
        gateway_http_t *self = *self_p;
        if (self->daemon)
            MHD_stop_daemon (self->daemon);
        token_store_unref (&self->tokens);
        pthread_mutex_destroy (&self->lock);
        free (self->cors_origins);
        free (self);
        *self_p = NULL;
    }
}

void
gateway_http_set_tokens (gateway_http_t *self, token_store_t *tokens)
{
    token_store_t *old;
    pthread_mutex_lock (&self->lock);
    old = self->tokens;
    self->tokens = token_store_ref (tokens);
    pthread_mutex_unlock (&self->lock);
    token_store_unref (&old);
}
