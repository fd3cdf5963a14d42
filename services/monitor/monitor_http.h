/*  monitor_http — the monitor's HTTP face (libmicrohttpd).

    Serves what the monitor's loop last published: GET /api/funnel (JSON),
    /metrics (Prometheus text), /events (server-sent events: the current
    funnel on connect, then each new version, a comment every second in
    between so dead clients are noticed) and / (the dashboard).
    libmicrohttpd runs its own threads (one per connection, so an SSE
    stream may wait); the loop hands over finished strings under a mutex,
    so no request ever touches the monitor's live state.
*/
#ifndef MONITOR_HTTP_H_INCLUDED
#define MONITOR_HTTP_H_INCLUDED

typedef struct _monitor_http_t monitor_http_t;

//  Listens on address "host:port" ("[v6]:port", ":port" for any);
//  dashboard is served as is on GET /. NULL (logged) if it cannot listen.
monitor_http_t *
    monitor_http_new (const char *address, const char *dashboard);
//  Ends SSE streams and stops the server.
void
    monitor_http_destroy (monitor_http_t **self_p);

//  Publishes a new snapshot (copied); SSE clients get it if json changed.
void
    monitor_http_update (monitor_http_t *self, const char *json, const char *metrics);

#endif
