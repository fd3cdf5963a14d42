/*  Runs every module's self-test; argv[1] = module name to run only one. */
#include <stdio.h>
#include <string.h>
#include "event_codec.h"
#include "event_schema.h"
#include "funnel_authz.h"
#include "funnel_config.h"
#include "funnel_http.h"
#include "msgpack_kv.h"
#include "funnel_curve.h"
#include "funnel_settings.h"
#include "redis_auth.h"
#include "redis_store.h"
#include "redis_cluster.h"
#include "funnel_state.h"
#include "funnel_log.h"
#include "funnel_engine.h"
#include "funnel_topology.h"
#include "outbox_entry.h"
#include "funnel_privacy.h"
#include "funnel_selftest.h"


static const funnel_selftest_t s_tests [] = {
    { "event_codec", event_codec_test },
    { "event_schema", event_schema_test },
    { "funnel_config", funnel_config_test },
    { "funnel_http", funnel_http_test },
    { "msgpack_kv", msgpack_kv_test },
    { "funnel_curve", funnel_curve_test },
    { "funnel_authz", funnel_authz_test },
    { "funnel_settings", funnel_settings_test },
    { "redis_store", redis_store_test },
    { "redis_cluster", redis_cluster_test },
    { "funnel_log", funnel_log_test },
    { "funnel_state", funnel_state_test },
    { "funnel_engine", funnel_engine_test },
    { "funnel_topology", funnel_topology_test },
    { "redis_auth", redis_auth_test },
    { "outbox_entry", outbox_entry_test },
    { "funnel_privacy", funnel_privacy_test },
    { NULL, NULL }
};

int
main (int argc, char *argv [])
{
    return funnel_selftest_run (argc, argv, s_tests);
}
