/*  ctl_call — finding services, calling them, printing what they say. */
#include <czmq.h>
#include "ctl.h"
#include "event_codec.h"
#include "funnel_client.h"
#include "funnel_topology.h"
#include "json_msgpack.h"

const char *const ctl_services [] = { "campaign", "leads", "sales", "retention", NULL };

//  Replies are trusted more than requests, but still bytes from the
//  network: REPLAY pages can hold 1000 events of up to 64 KiB
static const event_codec_limits_t s_reply_limits = {
    .max_bytes = 256u * 1024 * 1024, .str_max = 1024 * 1024, .entries_max = 1000000,
    .top_entries_max = 1000000, .elem_max_bytes = 0, .depth_max = 32
};

const char *
ctl_endpoint (ctl_t *self, const char *service, const char *kind)
{
    if (strstr (service, "://"))
        return service;
    for (const char *const *s = ctl_services; *s; s++)
        if (streq (*s, service)) {
            //  With instances: the owner of partition 0 (PUBLISH is routed
            //  per event, ctl_call)
            funnel_topology_t *topology = funnel_topology_new (self->config, service);
            if (!topology)
                return NULL;
            const funnel_instance_t *owner = funnel_topology_owner (topology, 0);
            const char *endpoint = !funnel_topology_partitioned (topology)
                                 ? funnel_config_endpoint (self->config, service, kind)
                                 : streq (kind, "pub") ? owner->pub : owner->api;
            funnel_topology_destroy (&topology);
            return endpoint;
        }
    fprintf (stderr, "funnelctl: unknown service '%s' (campaign, leads, sales, retention "
             "or an endpoint like tcp://host:port)\n", service);
    return NULL;
}

json_t *
ctl_decode (const void *data, size_t size)
{
    funnel_error_t err;
    event_codec_t *msg = event_codec_decode (data, size, &s_reply_limits, &err);
    if (!msg)
        return NULL;
    json_t *json = json_from_msgpack (event_codec_root (msg));
    event_codec_destroy (&msg);
    return json;
}

static bool
s_is_unavailable (json_t *err)
{
    const char *code = json_string_value (json_object_get (err, "code"));
    return code && streq (code, "unavailable");
}

static bool
s_is_moved (json_t *err)
{
    const char *code = json_string_value (json_object_get (err, "code"));
    return code && streq (code, "moved") && json_is_string (json_object_get (err, "api"));
}

//  One request to one endpoint, retried on timeout and unavailable.
static int
s_call_endpoint (ctl_t *self, const char *service, const char *endpoint, const char *verb,
                 json_t *body, int attempts, json_t **reply)
{
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init (&sbuf);
    if (body && json_to_msgpack_sbuffer (body, &sbuf)) {
        fprintf (stderr, "funnelctl: request too deeply nested\n");
        return CTL_USAGE;
    }
    //  A service name pins that service's key under CURVE; an endpoint
    //  given directly names no server, so it works without CURVE only
    funnel_client_t *client = funnel_client_new_for (endpoint,
                                                     strstr (service, "://") ? NULL : service);
    if (!client) {
        fprintf (stderr, "funnelctl: %s: cannot connect to %s\n", service, endpoint);
        msgpack_sbuffer_destroy (&sbuf);
        return CTL_UNREACHABLE;
    }
    int rc = CTL_UNREACHABLE;
    for (int attempt = 0; attempt < attempts && !funnel_stop; attempt++) {
        if (attempt > 0)
            zclock_sleep (attempt < 5 ? 100 * attempt : 500);
        zframe_t *frame = NULL;
        //  The same bytes every time: same ids, so a retry is never a double
        funnel_call_status_t status = funnel_client_call (client, verb,
            body ? sbuf.data : NULL, body ? sbuf.size : 0, self->timeout_ms, &frame);
        if (status == FUNNEL_CALL_TIMEOUT)
            continue;
        bool had_body = frame != NULL;
        json_t *decoded = frame ? ctl_decode (zframe_data (frame), zframe_size (frame)) : NULL;
        zframe_destroy (&frame);
        if (status == FUNNEL_CALL_BROKEN || (had_body && !decoded)) {
            fprintf (stderr, "funnelctl: %s: malformed reply from %s\n", service, endpoint);
            json_decref (decoded);
            rc = CTL_UNREACHABLE;
            break;
        }
        json_decref (*reply);
        *reply = decoded;
        rc = status == FUNNEL_CALL_OK ? CTL_OK : CTL_ERR;
        if (rc == CTL_ERR && s_is_unavailable (decoded) && attempt + 1 < attempts)
            continue;
        break;
    }
    if (rc == CTL_UNREACHABLE && !*reply && !self->quiet)
        fprintf (stderr, "funnelctl: %s: unreachable (no reply from %s within %d ms%s)\n",
                 service, endpoint, self->timeout_ms,
                 attempts > 1 ? ", after retries" : "");
    funnel_client_destroy (&client);
    msgpack_sbuffer_destroy (&sbuf);
    return rc;
}

//  ERR moved: the partition's owner is named; ask it, once.
static int
s_call_following (ctl_t *self, const char *service, const char *endpoint, const char *verb,
                  json_t *body, int attempts, json_t **reply)
{
    int rc = s_call_endpoint (self, service, endpoint, verb, body, attempts, reply);
    if (rc == CTL_ERR && s_is_moved (*reply)) {
        char *owner = strdup (json_string_value (json_object_get (*reply, "api")));
        json_decref (*reply);
        *reply = NULL;
        rc = s_call_endpoint (self, service, owner, verb, body, attempts, reply);
        free (owner);
    }
    return rc;
}

//  The partition of a JSON event, by the engine's own rule.
static int
s_event_part (const char *service, json_t *event, int partitions)
{
    json_t *data = json_object_get (event, "data");
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init (&sbuf);
    int part = 0;
    if (json_is_object (data) && json_to_msgpack_sbuffer (data, &sbuf) == 0) {
        msgpack_unpacked msg;
        msgpack_unpacked_init (&msg);
        if (msgpack_unpack_next (&msg, sbuf.data, sbuf.size, NULL) == MSGPACK_UNPACK_SUCCESS)
            part = funnel_topology_event_part (service, &msg.data, partitions);
        msgpack_unpacked_destroy (&msg);
    }
    msgpack_sbuffer_destroy (&sbuf);
    return part;
}

//  PUBLISH to a service with instances: each event to the owner of its
//  partition; a batch is split per instance (each share all or nothing,
//  in order), the replies summed; an error names the element of body.
static int
s_publish_routed (ctl_t *self, const char *service, funnel_topology_t *topology,
                  json_t *body, int attempts, json_t **reply)
{
    int partitions = funnel_topology_partitions (topology);
    if (!json_is_array (body)) {
        const funnel_instance_t *owner =
            funnel_topology_owner (topology, s_event_part (service, body, partitions));
        return s_call_following (self, service, owner->api, "PUBLISH", body, attempts, reply);
    }
    int count = funnel_topology_count (topology);
    size_t events = json_array_size (body);
    //  Each event's owner, once: the shares are then picked from it
    const funnel_instance_t **owner_of =
        (const funnel_instance_t **) malloc ((events + 1) * sizeof (funnel_instance_t *));
    size_t *where = (size_t *) malloc ((events + 1) * sizeof (size_t));
    for (size_t k = 0; k < events; k++)
        owner_of [k] = funnel_topology_owner (topology,
                           s_event_part (service, json_array_get (body, k), partitions));
    json_int_t accepted = 0, duplicates = 0;
    int rc = CTL_OK;
    for (int i = 0; i < count && rc == CTL_OK; i++) {
        const funnel_instance_t *inst = funnel_topology_at (topology, i);
        json_t *share = json_array ();
        for (size_t k = 0; k < events; k++)
            if (owner_of [k] == inst) {
                where [json_array_size (share)] = k;
                json_array_append (share, json_array_get (body, k));
            }
        if (json_array_size (share) > 0) {
            json_decref (*reply);
            *reply = NULL;
            rc = s_call_following (self, service, inst->api, "PUBLISH", share, attempts, reply);
            if (rc == CTL_OK) {
                accepted += json_integer_value (json_object_get (*reply, "accepted"));
                duplicates += json_integer_value (json_object_get (*reply, "duplicates"));
            }
            else
            if (rc == CTL_ERR && json_is_integer (json_object_get (*reply, "index"))) {
                json_int_t index = json_integer_value (json_object_get (*reply, "index"));
                if (index >= 0 && (size_t) index < json_array_size (share))
                    json_object_set_new (*reply, "index", json_integer ((json_int_t) where [index]));
            }
        }
        json_decref (share);
    }
    free (where);
    free (owner_of);
    if (rc == CTL_OK) {
        json_decref (*reply);
        *reply = json_pack ("{s:I, s:I}", "accepted", accepted, "duplicates", duplicates);
    }
    return rc;
}

int
ctl_call (ctl_t *self, const char *service, const char *verb, json_t *body,
          int attempts, json_t **reply)
{
    *reply = NULL;
    const char *endpoint = ctl_endpoint (self, service, "api");
    if (!endpoint)
        return CTL_USAGE;
    if (streq (verb, "PUBLISH") && body && !strstr (service, "://")) {
        funnel_topology_t *topology = funnel_topology_new (self->config, service);
        if (topology && funnel_topology_partitioned (topology)) {
            int rc = s_publish_routed (self, service, topology, body, attempts, reply);
            funnel_topology_destroy (&topology);
            return rc;
        }
        funnel_topology_destroy (&topology);
    }
    return s_call_following (self, service, endpoint, verb, body, attempts, reply);
}

int
ctl_call_instances (ctl_t *self, const char *service, const char *verb, json_t *body,
                    json_t **reply)
{
    *reply = NULL;
    funnel_topology_t *topology = strstr (service, "://") ? NULL
                                : funnel_topology_new (self->config, service);
    if (!topology || !funnel_topology_partitioned (topology)) {
        funnel_topology_destroy (&topology);
        return ctl_call (self, service, verb, body, 1, reply);
    }
    json_t *all = json_object ();
    int rc = CTL_OK;
    for (int i = 0; i < funnel_topology_count (topology); i++) {
        const funnel_instance_t *inst = funnel_topology_at (topology, i);
        json_t *one = NULL;
        int status = s_call_endpoint (self, service, inst->api, verb, body, 1, &one);
        if (status != CTL_OK && (rc == CTL_OK || status == CTL_UNREACHABLE))
            rc = status;
        json_object_set_new (all, inst->name, status == CTL_OK && one ? one : json_null ());
        if (status != CTL_OK)
            json_decref (one);
    }
    funnel_topology_destroy (&topology);
    *reply = json_pack ("{s:o}", "instances", all);
    return rc;
}

int
ctl_pubs (ctl_t *self, const char *service, const char **pubs, int max)
{
    funnel_topology_t *topology = strstr (service, "://") ? NULL
                                : funnel_topology_new (self->config, service);
    int count = 0;
    if (topology && funnel_topology_partitioned (topology))
        for (int i = 0; i < funnel_topology_count (topology) && count < max; i++)
            pubs [count++] = funnel_topology_at (topology, i)->pub;
    else
    if ((pubs [0] = ctl_endpoint (self, service, "pub")))
        count = 1;
    funnel_topology_destroy (&topology);
    return count;
}

void
ctl_print_err (const char *service, json_t *err)
{
    const char *code = json_string_value (json_object_get (err, "code"));
    const char *message = json_string_value (json_object_get (err, "message"));
    json_t *index = json_object_get (err, "index");
    fprintf (stderr, "funnelctl: %s: ERR %s: %s", service, code ? code : "?",
             message ? message : "(no message)");
    if (json_is_integer (index))
        fprintf (stderr, " (batch element %lld)", (long long) json_integer_value (index));
    fprintf (stderr, "\n");
}

void
ctl_print_json (ctl_t *self, json_t *json)
{
    size_t flags = JSON_ENCODE_ANY | (self->pretty ? JSON_INDENT (2) : JSON_COMPACT);
    char *text = json ? json_dumps (json, flags) : NULL;
    printf ("%s\n", text ? text : "null");
    free (text);
    fflush (stdout);
}
