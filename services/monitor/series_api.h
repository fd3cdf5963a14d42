/*  series_api — the monitor's on-demand reads: GET /api/series (the funnel
    over time, proto/monitor.md) and GET /api/campaigns (campaign's report
    under a chosen attribution model).

    Each request runs on its HTTP connection thread with its own clients to
    the services' APIs (a ZeroMQ socket belongs to one thread), so a slow
    read never stalls the monitor's loop. /api/series asks every service
    GET {"kind": "series", ...} for the stages it owns and merges their
    answers bucket by bucket; a service that does not answer makes the
    whole reply 503 (a series with a hole would not be exact).
*/
#ifndef SERIES_API_H_INCLUDED
#define SERIES_API_H_INCLUDED

#include "funnel_view.h"

typedef struct _series_api_t series_api_t;

//  A query parameter of the request being served, NULL when absent.
typedef const char *(series_api_param_fn) (void *request, const char *name);

//  apis: each service's API endpoint, in funnel_view_services order (copied).
series_api_t *
    series_api_new (const char *const apis [FUNNEL_VIEW_SERVICES]);
void
    series_api_destroy (series_api_t **self_p);

//  Serves path ("/api/series" or "/api/campaigns"); returns the HTTP
//  status and sets *body to a fresh JSON text (caller frees).
int
    series_api_handle (series_api_t *self, const char *path,
                       series_api_param_fn *param, void *request, char **body);

//  The /api/series fields, in the order each bucket lists them: the
//  contract's ten stages and revenue, then expansion deals apart.
extern const char *const series_api_fields [];

void
    series_api_test (bool verbose);

#endif
