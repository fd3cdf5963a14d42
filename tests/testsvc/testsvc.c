/*  testsvc — the rules of a minimal service, for tests and the benchmark:
    the daemon funnel-testsvc (testsvc_main.c) and the embedded-service
    test (service_actor_test.c).

    Accepts test.add {key, n} (adds n to counter key, emits test.added) and
    test.need {key} (not_found unless the counter exists; conflict if its
    total is odd). Consumes test.added from its upstream into a mirror.
    GET {"kind": "counter", "id": key}, and {"kind": "series"} of the stage
    "added" (campaign: the key's first two characters).

    It is also the smallest example of a service (services/README.md):
    schemas, settings, a prefetch, handlers, a consumer, GET kinds.
*/
#include <inttypes.h>
#include <stdlib.h>
#include "testsvc.h"

static const funnel_field_t s_add_fields [] = {
    FIELD_REQ ("key", FIELD_ID),
    FIELD_RANGE ("n", FIELD_INT, true, -1000000, 1000000),
    FIELD_END
};
static const funnel_field_t s_need_fields [] = {
    FIELD_REQ ("key", FIELD_ID),
    FIELD_END
};
const funnel_event_schema_t testsvc_accepts [] = {
    { "test.add", s_add_fields },
    { "test.need", s_need_fields },
    { NULL }
};
const char *const testsvc_consumes [] = { "test.added", NULL };

//  The rules' settings: <svc>/n_max, the largest |n| test.add
//  takes (default: the schema's bound, so by default it never refuses).
typedef struct {
    int64_t n_max;
} settings_t;

static int
s_setup (funnel_config_t *config, const char *section, void **arg)
{
    settings_t *settings = (settings_t *) calloc (1, sizeof (settings_t));
    char path [128];
    snprintf (path, sizeof path, "%s/n_max", section);
    if (funnel_config_int (config, path, 1000000, &settings->n_max) || settings->n_max < 0) {
        free (settings);
        return -1;
    }
    *arg = settings;
    return 0;
}

static void
s_teardown (void **arg)
{
    free (*arg);
    *arg = NULL;
}

//  The fields every rule reads: key (str) and n (int); -1 if malformed
//  (an upstream's data is checked here: it was not checked by a schema).
static int
s_key_n (const funnel_event_t *ev, char *key, size_t size, int64_t *n, funnel_error_t *err)
{
    if (!event_codec_obj_strcpy (event_codec_map_get (ev->data, "key"), key, size))
        return funnel_error_set (err, FUNNEL_ERR_INVALID, "data.key: must be a string");
    if (!n)
        return 0;
    const msgpack_object *obj = event_codec_map_get (ev->data, "n");
    if (obj && obj->type == MSGPACK_OBJECT_POSITIVE_INTEGER && obj->via.u64 <= INT64_MAX)
        *n = (int64_t) obj->via.u64;
    else
    if (obj && obj->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        *n = obj->via.i64;
    else
        return funnel_error_set (err, FUNNEL_ERR_INVALID, "data.n: must be an integer");
    return 0;
}

static void
s_want_counter (funnel_state_t *st, const funnel_event_t *ev)
{
    char key [FUNNEL_STR_MAX + 1];
    if (event_codec_obj_strcpy (event_codec_map_get (ev->data, "key"), key, sizeof key))
        funnel_state_want (st, "counter", key);
}

static void
s_want_mirror (funnel_state_t *st, const funnel_event_t *ev)
{
    char key [FUNNEL_STR_MAX + 1];
    if (event_codec_obj_strcpy (event_codec_map_get (ev->data, "key"), key, sizeof key))
        funnel_state_want (st, "mirror", key);
}

//  Emits {key, n} as type.
static void
s_emit_key_n (funnel_state_t *st, const char *type, const char *key, int64_t n)
{
    msgpack_packer *pk = funnel_state_data (st);
    msgpack_pack_map (pk, 2);
    event_codec_pack_cstr (pk, "key");
    event_codec_pack_cstr (pk, key);
    event_codec_pack_cstr (pk, "n");
    msgpack_pack_int64 (pk, n);
    funnel_state_emit (st, type, NULL);
}

static int
s_on_add (funnel_state_t *st, const funnel_event_t *ev, funnel_error_t *err)
{
    char key [FUNNEL_STR_MAX + 1];
    int64_t n;
    if (s_key_n (ev, key, sizeof key, &n, err))
        return -1;
    const settings_t *settings = (const settings_t *) funnel_state_arg (st);
    if (n > settings->n_max || n < -settings->n_max)
        return funnel_error_set (err, FUNNEL_ERR_CONFLICT, "n: over n_max (%" PRId64 ")",
                                 settings->n_max);
    funnel_rec_t *counter = funnel_state_rec (st, "counter", key);
    if (!counter)
        return funnel_error_set (err, FUNNEL_ERR_UNAVAILABLE, "redis: unavailable");
    funnel_rec_add (counter, "total", n);
    funnel_state_push (st, "log", key, ev->id, strlen (ev->id), 10);     //  Last 10 ids
    //  A stage over time too (campaign = the key's first two characters;
    //  the benchmark measures the series' cost)
    char campaign [3] = { key [0], key [0] ? key [1] : 0, 0 };
    funnel_state_count_stage (st, "added", ev->ts, campaign, n);
    s_emit_key_n (st, "test.added", key, n);
    return 0;
}

static int
s_on_need (funnel_state_t *st, const funnel_event_t *ev, funnel_error_t *err)
{
    char key [FUNNEL_STR_MAX + 1];
    if (s_key_n (ev, key, sizeof key, NULL, err))
        return -1;
    funnel_rec_t *counter = funnel_state_rec (st, "counter", key);
    if (!counter)
        return funnel_error_set (err, FUNNEL_ERR_UNAVAILABLE, "redis: unavailable");
    if (!funnel_rec_has (counter, "total"))
        return funnel_error_set (err, FUNNEL_ERR_NOT_FOUND, "key: no counter %s", key);
    if (funnel_rec_int (counter, "total", 0) % 2 != 0)
        return funnel_error_set (err, FUNNEL_ERR_CONFLICT, "key: counter %s is odd", key);
    funnel_state_count (st, "needed", 1);
    return 0;
}

static int
s_on_added (funnel_state_t *st, const funnel_event_t *ev, funnel_error_t *err)
{
    char key [FUNNEL_STR_MAX + 1];
    int64_t n;
    if (s_key_n (ev, key, sizeof key, &n, err))
        return -1;
    funnel_rec_t *mirror = funnel_state_rec (st, "mirror", key);
    if (!mirror)
        return funnel_error_set (err, FUNNEL_ERR_UNAVAILABLE, "redis: unavailable");
    funnel_rec_add (mirror, "total", n);
    funnel_state_count (st, "mirrored", n);
    s_emit_key_n (st, "test.mirrored", key, n);
    return 0;
}

static int
s_get_counter (funnel_state_t *st, const msgpack_object *req, msgpack_packer *pk,
               funnel_error_t *err)
{
    char id [FUNNEL_STR_MAX + 1];
    if (!event_codec_obj_strcpy (event_codec_map_get (req, "id"), id, sizeof id))
        return funnel_error_set (err, FUNNEL_ERR_INVALID, "id: required string is missing");
    funnel_rec_t *counter = funnel_state_rec (st, "counter", id);
    funnel_rec_t *mirror = counter ? funnel_state_rec (st, "mirror", id) : NULL;
    if (!mirror)
        return -1;                  //  Unavailable
    if (!funnel_rec_has (counter, "total") && !funnel_rec_has (mirror, "total"))
        return funnel_error_set (err, FUNNEL_ERR_NOT_FOUND, "id: no counter %s", id);
    msgpack_pack_map (pk, 3);
    event_codec_pack_cstr (pk, "key");
    event_codec_pack_cstr (pk, id);
    event_codec_pack_cstr (pk, "total");
    msgpack_pack_int64 (pk, funnel_rec_int (counter, "total", 0));
    event_codec_pack_cstr (pk, "mirror");
    msgpack_pack_int64 (pk, funnel_rec_int (mirror, "total", 0));
    return 0;
}

static const funnel_rule_t s_on [] = {
    { "test.add", s_on_add, s_want_counter },
    { "test.need", s_on_need, s_want_counter },
    { NULL }
};
static const funnel_rule_t s_consume [] = {
    { "test.added", s_on_added, s_want_mirror },
    { NULL }
};
static const funnel_query_rule_t s_queries [] = {
    { "counter", s_get_counter },
    { NULL }
};
static const char *const s_series [] = { "added", NULL };
const funnel_rules_t testsvc_rules = {
    .on = s_on, .consume = s_consume, .queries = s_queries, .series = s_series,
    .setup = s_setup, .teardown = s_teardown
};
