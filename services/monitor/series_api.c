/*  series_api — see series_api.h for why. */
#include <assert.h>
#include <stdlib.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include "series_api.h"
#include "series_range.h"
#include "event_codec.h"
#include "funnel_client.h"
#include "funnel_log.h"
#include "json_msgpack.h"

//  Self-test checks that stay on in Release builds (assert is off there)
#include "funnel_check.h"

#define CALL_TIMEOUT_MS 3000    //  A 90-day hourly read takes a few ms

const char *const series_api_fields [] = {
    "reached", "engaged", "leads", "mql", "sql", "deals", "won", "customers", "repeat",
    "lost", "revenue", "expansion", "won_expansion", "revenue_expansion", NULL
};
#define FIELDS 14

struct _series_api_t {
    char *apis [FUNNEL_VIEW_SERVICES];
};

series_api_t *
series_api_new (const char *const apis [FUNNEL_VIEW_SERVICES])
{
    series_api_t *self = (series_api_t *) zmalloc (sizeof (series_api_t));
    for (int s = 0; s < FUNNEL_VIEW_SERVICES; s++)
        self->apis [s] = strdup (apis [s]);
    return self;
}

void
series_api_destroy (series_api_t **self_p)
{
    if (*self_p) {
        series_api_t *self = *self_p;
        for (int s = 0; s < FUNNEL_VIEW_SERVICES; s++)
            free (self->apis [s]);
        free (self);
        *self_p = NULL;
    }
}

static int
s_field_index (const char *name, size_t size)
{
    for (int f = 0; f < FIELDS; f++)
        if (strlen (series_api_fields [f]) == size
        &&  memcmp (series_api_fields [f], name, size) == 0)
            return f;
    return -1;
}

static int
s_error (char **body, int status, const char *code, const char *param, const char *message)
{
    json_t *doc = json_pack ("{s:s, s:s}", "error", code, "message", message);
    if (param)
        json_object_set_new (doc, "param", json_string (param));
    *body = json_dumps (doc, JSON_COMPACT);
    json_decref (doc);
    return status;
}

//  One GET to one service; the decoded OK reply, or NULL (*status says why:
//  FUNNEL_CALL_ERR with *err_body holding the ERR map as JSON).
static event_codec_t *
s_get (const char *api, const char *server, const msgpack_sbuffer *request,
       funnel_call_status_t *status, json_t **err_body)
{
    *err_body = NULL;
    //  The service's key pinned under CURVE (proto/security.md)
    funnel_client_t *client = funnel_client_new_for (api, server);
    zframe_t *reply = NULL;
    *status = client ? funnel_client_call (client, "GET", request->data, request->size,
                                           CALL_TIMEOUT_MS, &reply)
                     : FUNNEL_CALL_BROKEN;
    funnel_client_destroy (&client);
    if (!reply)
        return NULL;
    static const event_codec_limits_t limits = {
        .max_bytes = 16u * 1024 * 1024, .str_max = 64 * 1024, .entries_max = 100000,
        .top_entries_max = 100000, .elem_max_bytes = 0, .depth_max = 16
    };
    funnel_error_t err;
    event_codec_t *msg = event_codec_decode (zframe_data (reply), zframe_size (reply),
                                           &limits, &err);
    zframe_destroy (&reply);
    if (!msg) {
        *status = FUNNEL_CALL_BROKEN;
        return NULL;
    }
    if (*status == FUNNEL_CALL_ERR) {
        *err_body = json_from_msgpack (event_codec_root (msg));
        event_codec_destroy (&msg);
    }
    return msg;
}

//  Adds one service's series reply into sums (count x FIELDS); -1 if its
//  buckets are not the ones asked for.
static int
s_merge (const msgpack_object *root, const series_range_t *range, int64_t *sums)
{
    const msgpack_object *first = event_codec_map_get (root, "first");
    const msgpack_object *n = event_codec_map_get (root, "n");
    if (!first || first->type != MSGPACK_OBJECT_POSITIVE_INTEGER
    ||  (int64_t) first->via.u64 != range->first
    ||  !n || n->type != MSGPACK_OBJECT_POSITIVE_INTEGER || (int64_t) n->via.u64 != range->count)
        return -1;
    const msgpack_object *series = event_codec_map_get (root, "series");
    if (!series)
        return 0;               //  A service with no stages over time
    if (series->type != MSGPACK_OBJECT_MAP)
        return -1;
    for (uint32_t i = 0; i < series->via.map.size; i++) {
        const msgpack_object_kv *kv = &series->via.map.ptr [i];
        if (kv->key.type != MSGPACK_OBJECT_STR)
            return -1;
        int f = s_field_index (kv->key.via.str.ptr, kv->key.via.str.size);
        if (f < 0)
            continue;           //  A stage this monitor does not show
        if (kv->val.type != MSGPACK_OBJECT_ARRAY || kv->val.via.array.size != range->count)
            return -1;
        for (int64_t b = 0; b < range->count; b++) {
            const msgpack_object *v = &kv->val.via.array.ptr [b];
            if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
                sums [b * FIELDS + f] += (int64_t) v->via.u64;
            else
            if (v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
                sums [b * FIELDS + f] += v->via.i64;
            else
            if (v->type == MSGPACK_OBJECT_FLOAT64 || v->type == MSGPACK_OBJECT_FLOAT32)
                sums [b * FIELDS + f] += (int64_t) v->via.f64;
            else
                return -1;
        }
    }
    return 0;
}

//  The contract's document, written directly (2,200 buckets x 14 fields:
//  far cheaper than building it as jansson objects).
static char *
s_series_json (const series_range_t *range, const int64_t *sums)
{
    char *text = NULL;
    size_t size = 0;
    FILE *out = open_memstream (&text, &size);
    if (!out)
        return NULL;
    fprintf (out, "{\"step\":\"%s\",\"from\":%" PRId64 ",\"to\":%" PRId64, range->step,
             range->from, range->to);
    if (range->campaign [0])
        fprintf (out, ",\"campaign\":\"%s\"", range->campaign);    //  id charset: no escapes
    fprintf (out, ",\"buckets\":[");
    for (int64_t b = 0; b < range->count; b++) {
        fprintf (out, "%s{\"t\":%" PRId64, b ? "," : "", range->first + b * range->step_ms);
        for (int f = 0; f < FIELDS; f++)
            fprintf (out, ",\"%s\":%" PRId64, series_api_fields [f], sums [b * FIELDS + f]);
        fputc ('}', out);
    }
    fprintf (out, "]}\n");
    fclose (out);
    return text;
}

//  One service's read, on its own thread
typedef struct {
    const char *api;
    const char *server;                 //  The service's name (its certificate)
    const msgpack_sbuffer *request;     //  Shared, read only
    pthread_t thread;
    bool started;
    funnel_call_status_t status;
    event_codec_t *msg;
    json_t *err;
} call_t;

static void *
s_call_run (void *arg)
{
    call_t *call = (call_t *) arg;
    call->msg = s_get (call->api, call->server, call->request, &call->status, &call->err);
    return NULL;
}

static int
s_series (series_api_t *self, series_api_param_fn *param, void *request, char **body)
{
    series_range_t range;
    const char *bad = NULL;
    char message [200];
    if (series_range_parse (&range, param (request, "from"), param (request, "to"),
                            param (request, "step"), param (request, "campaign"),
                            &bad, message, sizeof message))
        return s_error (body, 400, "invalid", bad, message);
    json_t *get = json_pack ("{s:s, s:I, s:I, s:s}", "kind", "series", "from",
                             (json_int_t) range.from, "to", (json_int_t) range.to,
                             "step", range.step);
    if (range.campaign [0])
        json_object_set_new (get, "campaign", json_string (range.campaign));
    msgpack_sbuffer packed_get;
    int packed = json_to_msgpack_sbuffer (get, &packed_get);
    json_decref (get);
    if (packed)
        return s_error (body, 500, "internal", NULL, "out of memory");
    int64_t *sums = (int64_t *) calloc ((size_t) range.count * FIELDS, sizeof (int64_t));
    if (!sums) {
        msgpack_sbuffer_destroy (&packed_get);
        return s_error (body, 500, "internal", NULL, "out of memory");
    }
    //  The four reads run side by side: the reply takes the slowest, not the sum
    call_t calls [FUNNEL_VIEW_SERVICES];
    for (int s = 0; s < FUNNEL_VIEW_SERVICES; s++) {
        calls [s] = (call_t) { .api = self->apis [s], .server = funnel_view_services [s],
                               .request = &packed_get };
        calls [s].started = pthread_create (&calls [s].thread, NULL, s_call_run, &calls [s]) == 0;
        if (!calls [s].started)
            s_call_run (&calls [s]);
    }
    int status = 200;
    for (int s = 0; s < FUNNEL_VIEW_SERVICES; s++) {
        if (calls [s].started)
            pthread_join (calls [s].thread, NULL);
        const char *name = funnel_view_services [s];
        if (status != 200)
            ;               //  Already failed: only collect
        else
        if (calls [s].msg && calls [s].status == FUNNEL_CALL_OK) {
            if (s_merge (event_codec_root (calls [s].msg), &range, sums)) {
                snprintf (message, sizeof message, "%s: series reply of an unexpected shape", name);
                status = s_error (body, 502, "bad_gateway", NULL, message);
            }
        }
        else {
            json_t *err = calls [s].err;
            const char *why = err ? json_string_value (json_object_get (err, "message")) : NULL;
            snprintf (message, sizeof message, "%s: %s", name,
                      why ? why : calls [s].status == FUNNEL_CALL_TIMEOUT ? "no reply" : "bad reply");
            //  The monitor's own PING already reports a down service; the
            //  client gets the reason in the body
            status = s_error (body, 503, "unavailable", NULL, message);
            log_debug ("/api/series: %s", message);
        }
        json_decref (calls [s].err);
        event_codec_destroy (&calls [s].msg);
    }
    msgpack_sbuffer_destroy (&packed_get);
    if (status == 200) {
        *body = s_series_json (&range, sums);
        if (!*body)
            status = s_error (body, 500, "internal", NULL, "out of memory");
    }
    free (sums);
    return status;
}

//  Campaign's report under ?model= (default linear): its ERR (an unknown
//  model) is a 400 with campaign's message.
static int
s_campaigns (series_api_t *self, series_api_param_fn *param, void *request, char **body)
{
    const char *model = param (request, "model");
    json_t *get = json_pack ("{s:s}", "kind", "report");
    if (model) {
        json_t *value = json_string (model);        //  NULL unless UTF-8
        if (!value) {
            json_decref (get);
            return s_error (body, 400, "invalid", "model", "model: must be UTF-8");
        }
        json_object_set_new (get, "model", value);
    }
    msgpack_sbuffer packed_get;
    int packed = json_to_msgpack_sbuffer (get, &packed_get);
    json_decref (get);
    if (packed)
        return s_error (body, 500, "internal", NULL, "out of memory");
    funnel_call_status_t call;
    json_t *err = NULL;
    event_codec_t *msg = s_get (self->apis [0], funnel_view_services [0], &packed_get, &call, &err);
    msgpack_sbuffer_destroy (&packed_get);
    int status;
    if (msg && call == FUNNEL_CALL_OK) {
        json_t *doc = json_from_msgpack (event_codec_root (msg));
        *body = json_dumps (doc, JSON_COMPACT);
        json_decref (doc);
        status = 200;
    }
    else
    if (err) {
        const char *why = json_string_value (json_object_get (err, "message"));
        status = s_error (body, 400, "invalid", "model", why ? why : "refused");
    }
    else
        status = s_error (body, 503, "unavailable", NULL, "campaign: no reply");
    json_decref (err);
    event_codec_destroy (&msg);
    return status;
}

int
series_api_handle (series_api_t *self, const char *path, series_api_param_fn *param,
                   void *request, char **body)
{
    if (strcmp (path, "/api/series") == 0)
        return s_series (self, param, request, body);
    if (strcmp (path, "/api/campaigns") == 0)
        return s_campaigns (self, param, request, body);
    return s_error (body, 404, "not_found", NULL, "no such path");
}

void
series_api_test (bool verbose)
{
    if (verbose)
        printf (" * series_api: ");
    //  A reply for 2 hour buckets from 7200000 merges into the right fields
    series_range_t range;
    const char *bad;
    char message [200];
    check (series_range_parse (&range, "7200000", "10800000", "hour", NULL,
                                &bad, message, sizeof message) == 0);
    json_t *reply = json_pack ("{s:I, s:i, s:{s:[i,i], s:[i,i], s:[i,i]}}",
                               "first", (json_int_t) 7200000, "n", 2, "series",
                               "won", 3, 0, "revenue", 0, 5000, "other", 9, 9);
    msgpack_sbuffer sbuf;
    check (json_to_msgpack_sbuffer (reply, &sbuf) == 0);
    funnel_error_t err;
    event_codec_t *msg = event_codec_decode (sbuf.data, sbuf.size, &event_codec_limits_body, &err);
    check (msg);
    int64_t sums [2 * FIELDS] = { 0 };
    check (s_merge (event_codec_root (msg), &range, sums) == 0);
    check (sums [s_field_index ("won", 3)] == 3);
    check (sums [FIELDS + s_field_index ("revenue", 7)] == 5000);
    char *text = s_series_json (&range, sums);
    json_t *doc = json_loads (text, 0, NULL);
    check (doc);
    json_t *buckets = json_object_get (doc, "buckets");
    check (json_array_size (buckets) == 2);
    check (json_integer_value (json_object_get (json_array_get (buckets, 1), "t")) == 10800000);
    check (json_integer_value (json_object_get (json_array_get (buckets, 0), "won")) == 3);
    check (json_object_size (json_array_get (buckets, 0)) == FIELDS + 1);
    json_decref (doc);
    free (text);
    event_codec_destroy (&msg);
    msgpack_sbuffer_destroy (&sbuf);
    json_decref (reply);
    //  Buckets other than those asked for are refused
    reply = json_pack ("{s:i, s:i}", "first", 0, "n", 2);
    check (json_to_msgpack_sbuffer (reply, &sbuf) == 0);
    msg = event_codec_decode (sbuf.data, sbuf.size, &event_codec_limits_body, &err);
    check (s_merge (event_codec_root (msg), &range, sums) == -1);
    event_codec_destroy (&msg);
    msgpack_sbuffer_destroy (&sbuf);
    json_decref (reply);
    if (verbose)
        printf ("OK\n");
}
