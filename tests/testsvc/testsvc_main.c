/*  funnel-testsvc — the test service as a daemon (testsvc.c has its rules).
    Its name and upstream come from the environment so two of them can be
    chained: FUNNEL_TESTSVC_NAME (default "alpha") and
    FUNNEL_TESTSVC_UPSTREAM (default none).
*/
#include <stdlib.h>
#include "testsvc.h"

int
main (int argc, char *argv [])
{
    const char *name = getenv ("FUNNEL_TESTSVC_NAME");
    const char *upstream = getenv ("FUNNEL_TESTSVC_UPSTREAM");
    const char *upstreams [] = { upstream, NULL };
    funnel_service_def_t def = {
        .name = name && *name ? name : "alpha",
        .summary = "test service: counters over the Funnel runtime",
        .accepts = testsvc_accepts,
        .upstreams = upstream && *upstream ? upstreams : NULL,
        .consumes = testsvc_consumes,
        .rules = &testsvc_rules
    };
    return funnel_service_main (argc, argv, &def);
}
