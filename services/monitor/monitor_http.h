/*  monitor_http — the monitor's HTTP face (libmicrohttpd).

    Serves what the monitor's loop last published: GET /api/funnel (JSON),
    /metrics (Prometheus text), /events (server-sent events: the current
    funnel on connect, then each new version, a comment every second in
    between so dead clients are noticed) and / (the dashboard).
    libmicrohttpd runs one epoll thread for every connection (a slow client
    costs a socket, not a thread), with a connection limit, a per-address
    limit and a timeout for idle and slow connections; an SSE stream with
    nothing to send is suspended, not waited on. The loop hands over
    finished strings under a mutex, so no request ever touches the
    monitor's live state. Optional: a bearer token for /api/..., /events and
    /metrics (401 without), and TLS (proto/security.md).
*/
#ifndef MONITOR_HTTP_H_INCLUDED
#define MONITOR_HTTP_H_INCLUDED

typedef struct _monitor_http_t monitor_http_t;

//  Listens on address "host:port" ("[v6]:port", ":port" for any);
//  dashboard is served as is on GET /. NULL (logged) if it cannot listen.
monitor_http_t *
    monitor_http_new (const char *address, const char *dashboard);

typedef struct {
    unsigned max_connections;   //  monitor/max_connections
    unsigned max_per_ip;        //  monitor/max_per_ip
    unsigned timeout_s;         //  monitor/timeout_s: idle or slow connections
    const char *token;          //  From monitor/token_file, NULL = none
    const char *tls_cert;       //  PEM text (monitor/tls_cert), NULL = plain HTTP
    const char *tls_key;        //  PEM text (monitor/tls_key)
} monitor_http_limits_t;

#define MONITOR_HTTP_LIMITS_DEFAULT { 1000, 64, 10, NULL, NULL, NULL }

//  The same with limits, a token and TLS (strings are copied or used
//  only while starting, except token which is copied).
monitor_http_t *
    monitor_http_new_with (const char *address, const char *dashboard,
                           const monitor_http_limits_t *limits);
//  Ends SSE streams and stops the server.
void
    monitor_http_destroy (monitor_http_t **self_p);

//  Requests on /api/series and /api/campaigns go to handler (on the
//  connection's thread): it returns the status and a fresh JSON body.
typedef const char *(monitor_http_param_fn) (void *request, const char *name);
typedef int (monitor_http_handler_fn) (void *arg, const char *path,
                                       monitor_http_param_fn *param, void *request,
                                       char **body);
void
    monitor_http_set_handler (monitor_http_t *self, monitor_http_handler_fn *handler,
                              void *arg);

//  Publishes a new snapshot (copied); SSE clients get it if json changed.
void
    monitor_http_update (monitor_http_t *self, const char *json, const char *metrics);

#endif
