/*  funnel-testsvc — a minimal service on the runtime, for tests and the
    benchmark. Its name and upstream come from the environment so two of
    them can be chained: FUNNEL_TESTSVC_NAME (default "alpha") and
    FUNNEL_TESTSVC_UPSTREAM (default none).

    Accepts test.add {key, n} (adds n to counter key, emits test.added) and
    test.need {key} (not_found unless the counter exists; conflict if its
    total is odd). Consumes test.added from its upstream into a mirror.
    GET {"kind": "counter", "id": key}.
*/
#include <stdlib.h>
#include "funnel_service.h"

extern const char funnel_testsvc_lua [];

static const funnel_field_t s_add_fields [] = {
    FIELD_REQ ("key", FIELD_ID),
    FIELD_RANGE ("n", FIELD_INT, true, -1000000, 1000000),
    FIELD_END
};
static const funnel_field_t s_need_fields [] = {
    FIELD_REQ ("key", FIELD_ID),
    FIELD_END
};
static const funnel_event_schema_t s_accepts [] = {
    { "test.add", s_add_fields },
    { "test.need", s_need_fields },
    { NULL }
};
static const char *const s_consumes [] = { "test.added", NULL };

int
main (int argc, char *argv [])
{
    const char *name = getenv ("FUNNEL_TESTSVC_NAME");
    const char *upstream = getenv ("FUNNEL_TESTSVC_UPSTREAM");
    const char *upstreams [] = { upstream, NULL };
    funnel_service_def_t def = {
        .name = name && *name ? name : "alpha",
        .summary = "test service: counters over the Funnel runtime",
        .accepts = s_accepts,
        .upstreams = upstream && *upstream ? upstreams : NULL,
        .consumes = s_consumes,
        .lua = funnel_testsvc_lua,
        .tick_ms = 0
    };
    return funnel_service_main (argc, argv, &def);
}
