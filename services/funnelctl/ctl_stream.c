/*  replay and tail: a service's output events as JSON lines. */
#include <czmq.h>
#include <limits.h>
#include "ctl.h"
#include "ctl_args.h"
#include "funnel_curve.h"

#define REPLAY_PAGE 1000

//  replay SERVICE [--from SEQ] [--limit N] [--partition P]: held events from SEQ on, page
//  by page, until N events or the end of what the service holds.
int
ctl_cmd_replay (ctl_t *self, int argc, char **argv)
{
    const char *service = NULL;
    long long from = 1, limit = -1, partition = -1;
    for (int i = 0; i < argc; i++) {
        const char *value;
        if (streq (argv [i], "--partition")) {
            if (!(value = ctl_args_value ("replay --partition", argc, argv, &i))
            ||  ctl_args_int ("replay --partition", value, 0, 4095, &partition))
                return CTL_USAGE;
        }
        else
        if (streq (argv [i], "--from")) {
            if (!(value = ctl_args_value ("replay --from", argc, argv, &i))
            ||  ctl_args_int ("replay --from", value, 0, LLONG_MAX, &from))
                return CTL_USAGE;
        }
        else
        if (streq (argv [i], "--limit")) {
            if (!(value = ctl_args_value ("replay --limit", argc, argv, &i))
            ||  ctl_args_int ("replay --limit", value, 0, LLONG_MAX, &limit))
                return CTL_USAGE;
        }

        else
        if (!service && argv [i][0] != '-')
            service = argv [i];
        else {
            fprintf (stderr, "funnelctl: replay: unexpected argument '%s'\n", argv [i]);
            return CTL_USAGE;
        }
    }
    if (!service || from < 0) {
        fprintf (stderr, "funnelctl: usage: replay SERVICE [--from SEQ] [--limit N] [--partition P]\n");
        return CTL_USAGE;
    }
    long long printed = 0;
    while (!funnel_stop && (limit < 0 || printed < limit)) {
        long long page = limit < 0 || limit - printed > REPLAY_PAGE ? REPLAY_PAGE : limit - printed;
        json_t *body = json_pack ("{s:I, s:I}", "from", (json_int_t) from, "limit", (json_int_t) page);
        //  With instances: that partition's outbox; its owner answers (or
        //  names itself with ERR moved, which ctl_call follows)
        if (partition >= 0)
            json_object_set_new (body, "partition", json_integer (partition));
        json_t *reply = NULL;
        int rc = ctl_call (self, service, "REPLAY", body, 1 + self->retries, &reply);
        json_decref (body);
        if (rc != CTL_OK) {
            if (rc == CTL_ERR)
                ctl_print_err (service, reply);
            json_decref (reply);
            return rc;
        }
        json_t *events = json_object_get (reply, "events");
        json_t *next = json_object_get (reply, "next");
        size_t count = json_array_size (events);
        for (size_t i = 0; i < count; i++)
            ctl_print_json (self, json_array_get (events, i));
        printed += (long long) count;
        long long after = json_is_integer (next) ? json_integer_value (next) : from;
        json_decref (reply);
        if (count == 0 || after <= from)
            break;
        from = after;
    }
    return CTL_OK;
}

//  tail SERVICE|all [TYPE-PREFIX...] [-n COUNT] [--timeout S] [--heartbeats]
int
ctl_cmd_tail (ctl_t *self, int argc, char **argv)
{
    const char *service = NULL;
    const char *prefixes [64];
    int prefix_count = 0;
    long long limit = -1;
    double timeout_s = -1;
    bool heartbeats = false;
    for (int i = 0; i < argc; i++) {
        const char *value;
        if (streq (argv [i], "-n")) {
            if (!(value = ctl_args_value ("tail -n", argc, argv, &i))
            ||  ctl_args_int ("tail -n", value, 1, LLONG_MAX, &limit))
                return CTL_USAGE;
        }
        else
        if (streq (argv [i], "--timeout")) {
            if (!(value = ctl_args_value ("tail --timeout", argc, argv, &i))
            ||  ctl_args_num ("tail --timeout", value, 0, 1e9, &timeout_s))
                return CTL_USAGE;
        }

        else
        if (streq (argv [i], "--heartbeats"))
            heartbeats = true;
        else
        if (!service)
            service = argv [i];
        else
        if (prefix_count < 64 && argv [i][0] != '-')
            prefixes [prefix_count++] = argv [i];
        else {
            fprintf (stderr, "funnelctl: tail: unexpected argument '%s'\n", argv [i]);
            return CTL_USAGE;
        }
    }
    if (!service) {
        fprintf (stderr, "funnelctl: usage: tail SERVICE|all [TYPE-PREFIX...] [-n COUNT] "
                 "[--timeout S] [--heartbeats]\n");
        return CTL_USAGE;
    }
    const char *one [] = { service, NULL };
    const char *const *names = streq (service, "all") ? ctl_services : one;
    zsock_t *sub = zsock_new (ZMQ_SUB);
    zsock_set_rcvhwm (sub, 100000);
    int reachable = 0, total = 0;
    for (const char *const *name = names; *name; name++) {
        total++;
        const char *pubs [64];
        int pub_count = ctl_pubs (self, *name, pubs, 64);
        if (pub_count == 0) {
            zsock_destroy (&sub);
            return CTL_USAGE;
        }
        //  A PING first, so a service that is down is said so plainly
        json_t *reply = NULL;
        if (ctl_call (self, *name, "PING", NULL, 1, &reply) != CTL_UNREACHABLE)
            reachable++;
        json_decref (reply);
        //  CURVE options apply per connect: each pins its own server's key
        //  (every instance of a service: all of them)
        for (int k = 0; k < pub_count; k++) {
            if (funnel_curve_client (sub, strstr (*name, "://") ? NULL : *name) != 0) {
                zsock_destroy (&sub);
                return CTL_USAGE;
            }
            zsock_connect (sub, "%s", pubs [k]);
        }
    }
    if (reachable == 0) {
        zsock_destroy (&sub);
        return CTL_UNREACHABLE;
    }
    //  Topics are event types, so prefixes filter in ZeroMQ itself
    if (prefix_count == 0)
        zsock_set_subscribe (sub, "");
    for (int i = 0; i < prefix_count; i++)
        zsock_set_subscribe (sub, prefixes [i]);
    if (heartbeats && prefix_count > 0)
        zsock_set_subscribe (sub, "$hb");

    int64_t deadline = timeout_s >= 0 ? zclock_mono () + (int64_t) (timeout_s * 1000) : -1;
    long long printed = 0;
    zpoller_t *poller = zpoller_new (sub, NULL);
    while (!funnel_stop && (limit < 0 || printed < limit)) {
        if (deadline >= 0 && zclock_mono () >= deadline)
            break;
        if (!zpoller_wait (poller, 200))
            continue;
        zmsg_t *msg = zmsg_recv (sub);
        if (!msg)
            continue;
        zframe_t *topic = zmsg_first (msg);
        zframe_t *body = zmsg_next (msg);
        bool is_hb = topic && zframe_streq (topic, "$hb");
        if (body && (!is_hb || heartbeats)) {
            json_t *json = ctl_decode (zframe_data (body), zframe_size (body));
            if (json && is_hb)
                json_object_set_new (json, "topic", json_string ("$hb"));
            if (json) {
                ctl_print_json (self, json);
                if (!is_hb)
                    printed++;
            }
            json_decref (json);
        }
        zmsg_destroy (&msg);
    }
    zpoller_destroy (&poller);
    zsock_destroy (&sub);
    return CTL_OK;
}
