/*  monitor_http — see monitor_http.h for why. */
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include "monitor_http.h"
#include "funnel_http.h"
#include "funnel_log.h"
#include <czmq.h>

#define SSE_TICK_MS 1000        //  Longest wait between two writes to a stream
#define HTTP_THREADS 4          //  Epoll threads (see monitor_http_new_with)

typedef struct _stream_t stream_t;

struct _monitor_http_t {
    struct MHD_Daemon *daemon;
    const char *dashboard;
    char *auth;                 //  "Bearer <token>", NULL = no token needed
    pthread_mutex_t lock;
    char *json;
    char *metrics;
    uint64_t version;           //  Bumped when json changes
    bool stopping;
    monitor_http_handler_fn *handler;   //  /api/series, /api/campaigns
    void *handler_arg;
    stream_t *streams;          //  Every open SSE stream
};

//  One SSE client: the text being written and the version it holds. With
//  nothing to write, the reader suspends its connection (one polling
//  thread serves every client, so it must never wait); the next snapshot,
//  or the keepalive tick, resumes it (monitor_http_update).
struct _stream_t {
    monitor_http_t *http;
    struct MHD_Connection *connection;
    uint64_t version;
    char *pending;
    size_t size, offset;
    int64_t last_write;         //  Monotonic ms
    bool suspended;
    stream_t *next, *prev;
};

static int64_t
s_now_ms (void)
{
    struct timespec now;
    clock_gettime (CLOCK_MONOTONIC, &now);
    return (int64_t) now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

static ssize_t
s_stream_read (void *cls, uint64_t pos, char *buf, size_t max)
{
    (void) pos;
    stream_t *stream = (stream_t *) cls;
    monitor_http_t *http = stream->http;
    if (stream->offset == stream->size) {
        free (stream->pending);
        stream->pending = NULL;
        stream->size = stream->offset = 0;
        pthread_mutex_lock (&http->lock);
        if (http->stopping) {
            pthread_mutex_unlock (&http->lock);
            return MHD_CONTENT_READER_END_OF_STREAM;
        }
        char *text = NULL;
        int size;
        int64_t now = s_now_ms ();
        if (http->version != stream->version && http->json) {
            //  json_dumps compact output has no newline, so one data line
            size = asprintf (&text, "%sdata: %s\n\n", stream->version ? "" : "retry: 2000\n",
                             http->json);
            stream->version = http->version;
        }
        else
        if (now - stream->last_write >= SSE_TICK_MS)
            size = asprintf (&text, ": keepalive\n\n");
        else {
            //  Nothing yet: off MHD's loop until update resumes it. The flag
            //  and the suspension change together under the lock.
            stream->suspended = true;
            MHD_suspend_connection (stream->connection);
            pthread_mutex_unlock (&http->lock);
            return 0;
        }
        stream->last_write = now;
        pthread_mutex_unlock (&http->lock);
        if (size < 0)
            return MHD_CONTENT_READER_END_WITH_ERROR;
        stream->pending = text;
        stream->size = (size_t) size;
    }
    size_t chunk = stream->size - stream->offset;
    if (chunk > max)
        chunk = max;
    memcpy (buf, stream->pending + stream->offset, chunk);
    stream->offset += chunk;
    return (ssize_t) chunk;
}

static void
s_stream_free (void *cls)
{
    stream_t *stream = (stream_t *) cls;
    monitor_http_t *http = stream->http;
    pthread_mutex_lock (&http->lock);
    if (stream->prev)
        stream->prev->next = stream->next;
    else
        http->streams = stream->next;
    if (stream->next)
        stream->next->prev = stream->prev;
    pthread_mutex_unlock (&http->lock);
    free (stream->pending);
    free (stream);
}

//  Resumes suspended streams that have something to write: a new version,
//  the keepalive due, or the end (stopping). MHD_resume_connection is
//  called outside our lock; a suspended stream cannot be freed meanwhile
//  (MHD does not touch a suspended connection).
static void
s_wake_streams (monitor_http_t *self)
{
    struct MHD_Connection *wake [256];
    int count;
    do {
        count = 0;
        int64_t now = s_now_ms ();
        pthread_mutex_lock (&self->lock);
        for (stream_t *s = self->streams; s && count < 256; s = s->next)
            if (s->suspended && (self->stopping || s->version != self->version
                             ||  now - s->last_write >= SSE_TICK_MS)) {
                s->suspended = false;
                wake [count++] = s->connection;
            }
        pthread_mutex_unlock (&self->lock);
        for (int i = 0; i < count; i++)
            MHD_resume_connection (wake [i]);
    } while (count == 256);
}

static enum MHD_Result
s_queue (struct MHD_Connection *connection, unsigned int code, const char *type,
         const char *body, enum MHD_ResponseMemoryMode mode)
{
    struct MHD_Response *response = MHD_create_response_from_buffer (
        strlen (body), (void *) body, mode);
    if (!response)
        return MHD_NO;
    MHD_add_response_header (response, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header (response, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (code == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header (response, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    enum MHD_Result rc = MHD_queue_response (connection, code, response);
    MHD_destroy_response (response);
    return rc;
}

//  Serves a copy of json or metrics as they stand.
static enum MHD_Result
s_queue_snapshot (monitor_http_t *self, struct MHD_Connection *connection,
                  bool metrics, const char *type)
{
    pthread_mutex_lock (&self->lock);
    const char *text = metrics ? self->metrics : self->json;
    char *copy = text ? strdup (text) : NULL;
    pthread_mutex_unlock (&self->lock);
    if (!copy)
        return s_queue (connection, MHD_HTTP_SERVICE_UNAVAILABLE, "application/json",
                        "{\"error\":\"starting\"}\n", MHD_RESPMEM_PERSISTENT);
    return s_queue (connection, MHD_HTTP_OK, type, copy, MHD_RESPMEM_MUST_FREE);
}

static enum MHD_Result
s_queue_events (monitor_http_t *self, struct MHD_Connection *connection)
{
    stream_t *stream = (stream_t *) calloc (1, sizeof (stream_t));
    if (!stream)
        return MHD_NO;
    stream->http = self;
    stream->connection = connection;
    stream->last_write = s_now_ms ();
    struct MHD_Response *response = MHD_create_response_from_callback (
        MHD_SIZE_UNKNOWN, 16 * 1024, s_stream_read, stream, s_stream_free);
    if (!response) {
        free (stream);
        return MHD_NO;
    }
    MHD_add_response_header (response, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header (response, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header (response, "X-Accel-Buffering", "no");
    pthread_mutex_lock (&self->lock);
    stream->next = self->streams;
    if (self->streams)
        self->streams->prev = stream;
    self->streams = stream;
    pthread_mutex_unlock (&self->lock);
    enum MHD_Result rc = MHD_queue_response (connection, MHD_HTTP_OK, response);
    MHD_destroy_response (response);
    return rc;
}

static const char *
s_param (void *request, const char *name)
{
    return MHD_lookup_connection_value ((struct MHD_Connection *) request,
                                        MHD_GET_ARGUMENT_KIND, name);
}

//  A read the handler answers on this thread (it may ask the services)
static enum MHD_Result
s_queue_handled (monitor_http_t *self, struct MHD_Connection *connection, const char *url)
{
    char *body = NULL;
    int code = self->handler (self->handler_arg, url, s_param, connection, &body);
    if (!body)
        return s_queue (connection, MHD_HTTP_INTERNAL_SERVER_ERROR, "application/json",
                        "{\"error\":\"internal\"}\n", MHD_RESPMEM_PERSISTENT);
    return s_queue (connection, (unsigned int) code, "application/json", body,
                    MHD_RESPMEM_MUST_FREE);
}

//  With a token, /api/*, /events and /metrics need "Authorization: Bearer
//  <token>"; the page, its assets and /healthz stay open (proto/security.md).
static bool
s_authorized (monitor_http_t *self, struct MHD_Connection *connection, const char *url)
{
    if (!self->auth)
        return true;
    if (strncmp (url, "/api/", 5) != 0 && strcmp (url, "/events") != 0
    &&  strcmp (url, "/metrics") != 0)
        return true;
    const char *given = MHD_lookup_connection_value (connection, MHD_HEADER_KIND,
                                                     MHD_HTTP_HEADER_AUTHORIZATION);
    if (!given)
        return false;
    //  Constant time in the token's length: no timing hint of a prefix
    size_t length = strlen (self->auth), given_length = strlen (given);
    unsigned char diff = given_length != length;
    for (size_t i = 0; i < length; i++)
        diff |= (unsigned char) (self->auth [i] ^ (i < given_length ? given [i] : 0));
    return diff == 0;
}

static enum MHD_Result
s_unauthorized (struct MHD_Connection *connection)
{
    const char *body = "{\"error\":\"unauthorized\"}\n";
    struct MHD_Response *response = MHD_create_response_from_buffer (
        strlen (body), (void *) body, MHD_RESPMEM_PERSISTENT);
    if (!response)
        return MHD_NO;
    MHD_add_response_header (response, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    MHD_add_response_header (response, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    enum MHD_Result rc = MHD_queue_response (connection, MHD_HTTP_UNAUTHORIZED, response);
    MHD_destroy_response (response);
    return rc;
}

static enum MHD_Result
s_on_request (void *cls, struct MHD_Connection *connection, const char *url,
              const char *method, const char *version, const char *upload_data,
              size_t *upload_data_size, void **request_state)
{
    (void) version;
    (void) upload_data;
    monitor_http_t *self = (monitor_http_t *) cls;
    //  Refused before any body is read: MHD then skips the upload
    if (strcmp (method, "GET") != 0 && strcmp (method, "HEAD") != 0)
        return s_queue (connection, MHD_HTTP_METHOD_NOT_ALLOWED, "application/json",
                        "{\"error\":\"method_not_allowed\"}\n", MHD_RESPMEM_PERSISTENT);
    //  First call is headers only; a GET body (if any) would follow: ignore it
    if (*request_state == NULL) {
        *request_state = (void *) 1;
        return MHD_YES;
    }
    *upload_data_size = 0;
    if (!s_authorized (self, connection, url))
        return s_unauthorized (connection);
    if (strcmp (url, "/") == 0 || strcmp (url, "/index.html") == 0)
        return s_queue (connection, MHD_HTTP_OK, "text/html; charset=utf-8",
                        self->dashboard, MHD_RESPMEM_PERSISTENT);
    if (strcmp (url, "/api/funnel") == 0)
        return s_queue_snapshot (self, connection, false, "application/json");
    if (strcmp (url, "/metrics") == 0)
        return s_queue_snapshot (self, connection, true,
                                 "text/plain; version=0.0.4; charset=utf-8");
    if (strcmp (url, "/events") == 0)
        return s_queue_events (self, connection);
    if (self->handler
    &&  (strcmp (url, "/api/series") == 0 || strcmp (url, "/api/campaigns") == 0))
        return s_queue_handled (self, connection, url);
    if (strcmp (url, "/healthz") == 0)
        return s_queue (connection, MHD_HTTP_OK, "text/plain", "ok\n", MHD_RESPMEM_PERSISTENT);
    return s_queue (connection, MHD_HTTP_NOT_FOUND, "application/json",
                    "{\"error\":\"not_found\"}\n", MHD_RESPMEM_PERSISTENT);
}

monitor_http_t *
monitor_http_new (const char *address, const char *dashboard)
{
    monitor_http_limits_t limits = MONITOR_HTTP_LIMITS_DEFAULT;
    return monitor_http_new_with (address, dashboard, &limits);
}

monitor_http_t *
monitor_http_new_with (const char *address, const char *dashboard,
                       const monitor_http_limits_t *limits)
{
    bool tls = limits->tls_cert && limits->tls_key;
    if (tls && MHD_is_feature_supported (MHD_FEATURE_TLS) != MHD_YES) {
        log_error ("http: this libmicrohttpd has no TLS; unset monitor/tls_cert");
        return NULL;
    }
    struct addrinfo *ai = funnel_http_resolve (address);
    if (!ai) {
        log_error ("http: cannot resolve '%s'", address);
        return NULL;
    }
    monitor_http_t *self = (monitor_http_t *) calloc (1, sizeof (monitor_http_t));
    self->dashboard = dashboard;
    pthread_mutex_init (&self->lock, NULL);
    if (limits->token)
        self->auth = zsys_sprintf ("Bearer %s", limits->token);
    //  A small pool of epoll threads for every connection: a slow or idle
    //  client costs a socket, not a thread, and the limits and timeout below
    //  bound those; more than one thread because /api/series and
    //  /api/campaigns ask the services on their connection's thread
    unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL_INTERNAL_THREAD
                       | MHD_USE_TURBO | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG
                       | (tls ? MHD_USE_TLS : 0);
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    //  Its threads inherit this mask: stop signals must reach the main
    //  thread, whose poll they interrupt
    sigset_t block, saved;
    sigemptyset (&block);
    sigaddset (&block, SIGINT);
    sigaddset (&block, SIGTERM);
    pthread_sigmask (SIG_BLOCK, &block, &saved);
    self->daemon = MHD_start_daemon (flags, 0, NULL, NULL, s_on_request, self,
        MHD_OPTION_SOCK_ADDR, ai->ai_addr,
        MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned int) 1,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned int) limits->max_connections,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned int) limits->max_per_ip,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int) limits->timeout_s,
        MHD_OPTION_EXTERNAL_LOGGER, funnel_http_log, NULL,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned int) HTTP_THREADS,
        //  Listed last: without TLS, MHD_OPTION_END ends the list here
        tls ? MHD_OPTION_HTTPS_MEM_CERT : MHD_OPTION_END, limits->tls_cert,
        MHD_OPTION_HTTPS_MEM_KEY, limits->tls_key,
        MHD_OPTION_END);
    pthread_sigmask (SIG_SETMASK, &saved, NULL);
    freeaddrinfo (ai);
    if (!self->daemon) {
        log_error ("http: cannot listen on %s", address);
        monitor_http_destroy (&self);
    }
    return self;
}

void
monitor_http_destroy (monitor_http_t **self_p)
{
    if (*self_p) {
        monitor_http_t *self = *self_p;
        pthread_mutex_lock (&self->lock);
        self->stopping = true;
        pthread_mutex_unlock (&self->lock);
        //  Streams resume, see stopping and end; then the thread stops
        if (self->daemon) {
            s_wake_streams (self);
            MHD_stop_daemon (self->daemon);
        }
        pthread_mutex_destroy (&self->lock);
        free (self->auth);
        free (self->json);
        free (self->metrics);
        free (self);
        *self_p = NULL;
    }
}

void
monitor_http_set_handler (monitor_http_t *self, monitor_http_handler_fn *handler, void *arg)
{
    self->handler = handler;
    self->handler_arg = arg;
}

void
monitor_http_update (monitor_http_t *self, const char *json, const char *metrics)
{
    char *json_copy = json ? strdup (json) : NULL;
    char *metrics_copy = metrics ? strdup (metrics) : NULL;
    pthread_mutex_lock (&self->lock);
    bool changed = !self->json || !json_copy || strcmp (self->json, json_copy) != 0;
    free (self->json);
    free (self->metrics);
    self->json = json_copy;
    self->metrics = metrics_copy;
    if (changed)
        self->version++;
    pthread_mutex_unlock (&self->lock);
    s_wake_streams (self);
}
