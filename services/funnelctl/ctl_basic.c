/*  ping, stats, get: one request, one reply printed as JSON; export: one
    GET per service, merged (privacy_export.h). */
#include <czmq.h>
#include "ctl.h"
#include "privacy_export.h"

//  PING or STATS each named service (all four by default). One service:
//  its reply; several: {service: reply, or null if unreachable}.
static int
s_each (ctl_t *self, const char *verb, int argc, char **argv)
{
    const char *const *names = argc > 0 ? (const char *const *) argv : ctl_services;
    int count = argc > 0 ? argc : 4;
    json_t *all = json_object ();
    int rc = CTL_OK;
    for (int i = 0; i < count; i++) {
        json_t *reply = NULL;
        int status = ctl_call_instances (self, names [i], verb, NULL, &reply);
        if (status == CTL_ERR)
            ctl_print_err (names [i], reply);
        if (status == CTL_USAGE) {
            json_decref (all);
            return CTL_USAGE;
        }
        //  Unreachable outranks ERR: it is the one to act on first
        if (status != CTL_OK && (rc == CTL_OK || status == CTL_UNREACHABLE))
            rc = status;
        json_object_set_new (all, names [i], status == CTL_OK && reply ? reply : json_null ());
        if (status != CTL_OK)
            json_decref (reply);
    }
    if (count == 1) {
        json_t *only = json_object_get (all, names [0]);
        if (!json_is_null (only))
            ctl_print_json (self, only);
    }
    else
        ctl_print_json (self, all);
    json_decref (all);
    return rc;
}

int
ctl_cmd_ping (ctl_t *self, int argc, char **argv)
{
    return s_each (self, "PING", argc, argv);
}

int
ctl_cmd_stats (ctl_t *self, int argc, char **argv)
{
    return s_each (self, "STATS", argc, argv);
}

//  get SERVICE KIND [ID] [key=value...]  or  get SERVICE '{json body}'
int
ctl_cmd_get (ctl_t *self, int argc, char **argv)
{
    if (argc < 2) {
        fprintf (stderr, "funnelctl: usage: get SERVICE KIND [ID] [key=value...] | get SERVICE '{...}'\n");
        return CTL_USAGE;
    }
    json_t *body = NULL;
    if (argv [1][0] == '{') {
        json_error_t error;
        body = json_loads (argv [1], 0, &error);
        if (!json_is_object (body)) {
            fprintf (stderr, "funnelctl: invalid JSON: %s (column %d)\n",
                     body ? "not an object" : error.text, error.column);
            json_decref (body);
            return CTL_USAGE;
        }
    }
    else {
        body = json_pack ("{s:s}", "kind", argv [1]);
        for (int i = 2; i < argc; i++) {
            char *equals = strchr (argv [i], '=');
            if (!equals && i == 2) {
                json_object_set_new (body, "id", json_string (argv [i]));
                continue;
            }
            if (!equals || equals == argv [i]) {
                fprintf (stderr, "funnelctl: get: '%s' is not key=value\n", argv [i]);
                json_decref (body);
                return CTL_USAGE;
            }
            //  A value that parses as JSON is taken as JSON (numbers, true,
            //  lists); anything else is a string
            json_t *value = json_loads (equals + 1, JSON_DECODE_ANY, NULL);
            if (!value)
                value = json_string (equals + 1);
            json_object_setn_new (body, argv [i], (size_t) (equals - argv [i]), value);
        }
    }
    json_t *reply = NULL;
    int rc = ctl_call (self, argv [0], "GET", body, 1, &reply);
    if (rc == CTL_OK)
        ctl_print_json (self, reply);
    else
    if (rc == CTL_ERR)
        ctl_print_err (argv [0], reply);
    json_decref (reply);
    json_decref (body);
    return rc;
}

//  export LEAD: everything every service holds on the person, one JSON
//  document (proto/privacy.md). leads not knowing the lead is ERR
//  not_found (exit 1); a service that does not answer is marked
//  unreachable in the document, which is still printed (exit 3).
int
ctl_cmd_export (ctl_t *self, int argc, char **argv)
{
    if (argc != 1) {
        fprintf (stderr, "funnelctl: usage: export LEAD\n");
        return CTL_USAGE;
    }
    json_t *body = json_pack ("{s:s, s:s}", "kind", "export", "lead", argv [0]);
    json_t *doc = privacy_export_new (argv [0]);
    int rc = CTL_OK;
    //  leads first: it says whether the person exists at all
    const char *order [] = { "leads", "campaign", "sales", "retention" };
    for (int i = 0; i < 4 && rc != CTL_ERR; i++) {
        json_t *reply = NULL;
        int status = ctl_call (self, order [i], "GET", body, 1, &reply);
        if (status == CTL_USAGE) {
            rc = CTL_USAGE;
            json_decref (reply);
            break;
        }
        if (status == CTL_ERR && i == 0) {
            ctl_print_err (order [i], reply);
            rc = CTL_ERR;
        }
        else
        if (status == CTL_ERR) {
            ctl_print_err (order [i], reply);
            privacy_export_add (doc, order [i], PRIVACY_EXPORT_ERR, reply);
        }
        else
        if (status == CTL_UNREACHABLE) {
            privacy_export_add (doc, order [i], PRIVACY_EXPORT_DOWN, NULL);
            rc = CTL_UNREACHABLE;
        }
        else
            privacy_export_add (doc, order [i], PRIVACY_EXPORT_OK, reply);
        json_decref (reply);
    }
    if (rc == CTL_OK || rc == CTL_UNREACHABLE)
        ctl_print_json (self, doc);
    if (rc == CTL_OK && !privacy_export_complete (doc))
        rc = CTL_ERR;
    json_decref (doc);
    json_decref (body);
    return rc;
}
