/*  ctl_call — finding services, calling them, printing what they say. */
#include <czmq.h>
#include "ctl.h"
#include "event_codec.h"
#include "funnel_client.h"
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
        if (streq (*s, service))
            return funnel_config_endpoint (self->config, service, kind);
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

int
ctl_call (ctl_t *self, const char *service, const char *verb, json_t *body,
          int attempts, json_t **reply)
{
    *reply = NULL;
    const char *endpoint = ctl_endpoint (self, service, "api");
    if (!endpoint)
        return CTL_USAGE;
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
