/*  publish: events from the command line or NDJSON on stdin, batched,
    retried with the same ids until acknowledged.

    Missing envelope fields are filled so an operator can type just
    {"type": ..., "data": ...}: v 1, ts now, src "funnelctl", and a
    generated id (printed, so the event can be found and re-sent).
*/
#include <czmq.h>
#include <unistd.h>
#include "ctl.h"
#include "ctl_args.h"
#include "event_codec.h"

#define BATCH_DEFAULT 100

typedef struct {
    ctl_t *ctl;
    const char *service;
    int attempts;
    size_t batch_max;
    json_t *batch;          //  Events waiting to be sent
    json_t *lines;          //  Input line of each waiting event (stdin)
    int64_t accepted, duplicates, events, batches;
    unsigned generated;
    char id_prefix [48];
} publisher_t;

//  "ctl-<host>-<pid>-<ms>": unique per run; each event adds "-<n>"
static void
s_id_prefix (publisher_t *self)
{
    char host [64] = "host";
    gethostname (host, sizeof host);
    host [sizeof host - 1] = 0;
    //  Only the id alphabet, and short enough for 64 bytes in all
    char clean [17];
    size_t n = 0;
    for (const char *p = host; *p && n < sizeof clean - 1; p++)
        if (event_codec_id_valid (p, 1))
            clean [n++] = *p;
    clean [n] = 0;
    snprintf (self->id_prefix, sizeof self->id_prefix, "ctl-%s-%d-%lld",
              n ? clean : "host", (int) getpid (), (long long) zclock_time ());
}

//  Fills the envelope's missing fields; -1 (message printed) if the
//  value is not an object.
static int
s_fill (publisher_t *self, json_t *event, const char *where)
{
    if (!json_is_object (event)) {
        fprintf (stderr, "funnelctl: %s: an event must be a JSON object\n", where);
        return -1;
    }
    if (!json_object_get (event, "v"))
        json_object_set_new (event, "v", json_integer (1));
    if (!json_object_get (event, "ts"))
        json_object_set_new (event, "ts", json_integer (zclock_time ()));
    if (!json_object_get (event, "src"))
        json_object_set_new (event, "src", json_string ("funnelctl"));
    if (!json_object_get (event, "id")) {
        char id [FUNNEL_ID_MAX + 1];
        snprintf (id, sizeof id, "%s-%u", self->id_prefix, ++self->generated);
        json_object_set_new (event, "id", json_string (id));
        fprintf (stderr, "funnelctl: %s: generated id %s\n", where, id);
    }
    return 0;
}

//  Sends the waiting batch (an array, all or nothing on the service).
static int
s_flush (publisher_t *self)
{
    size_t size = json_array_size (self->batch);
    if (size == 0)
        return CTL_OK;
    json_t *reply = NULL;
    int rc = ctl_call (self->ctl, self->service, "PUBLISH", self->batch, self->attempts, &reply);
    if (rc == CTL_OK) {
        self->accepted += json_integer_value (json_object_get (reply, "accepted"));
        self->duplicates += json_integer_value (json_object_get (reply, "duplicates"));
        self->events += (int64_t) size;
        self->batches++;
    }
    else
    if (rc == CTL_ERR) {
        ctl_print_err (self->service, reply);
        json_t *index = json_object_get (reply, "index");
        json_t *line = json_is_integer (index)
            ? json_array_get (self->lines, (size_t) json_integer_value (index)) : NULL;
        if (json_is_string (line))
            fprintf (stderr, "funnelctl: the failing event is the input's %s; nothing of "
                     "its batch was applied\n", json_string_value (line));
    }
    else
    if (rc == CTL_UNREACHABLE)
        fprintf (stderr, "funnelctl: a batch of %zu event(s) is unacknowledged; "
                 "re-sending the same input is safe (same ids)\n", size);
    json_decref (reply);
    json_array_clear (self->batch);
    json_array_clear (self->lines);
    return rc;
}

static int
s_add (publisher_t *self, json_t *event, const char *where)
{
    json_array_append (self->batch, event);
    json_array_append_new (self->lines, json_string (where));
    if (json_array_size (self->batch) >= self->batch_max)
        return s_flush (self);
    return CTL_OK;
}

//  NDJSON on stdin: one event (or an array of events) per line.
static int
s_from_stdin (publisher_t *self)
{
    char *text = NULL;
    size_t capacity = 0;
    ssize_t length;
    long line = 0;
    int rc = CTL_OK;
    while (rc == CTL_OK && (length = getline (&text, &capacity, stdin)) >= 0) {
        line++;
        size_t start = strspn (text, " \t\r\n");
        if (text [start] == 0)
            continue;
        json_error_t error;
        json_t *value = json_loadb (text, (size_t) length, 0, &error);
        char where [32];
        snprintf (where, sizeof where, "line %ld", line);
        if (!value) {
            fprintf (stderr, "funnelctl: %s: invalid JSON: %s (column %d)\n", where,
                     error.text, error.column);
            rc = CTL_USAGE;
            break;
        }
        json_t *list = json_is_array (value) ? value : NULL;
        for (size_t i = 0; rc == CTL_OK && i < (list ? json_array_size (list) : 1); i++) {
            json_t *event = list ? json_array_get (list, i) : value;
            rc = s_fill (self, event, where) ? CTL_USAGE : s_add (self, event, where);
        }
        json_decref (value);
    }
    free (text);
    if (rc == CTL_USAGE && self->events)
        fprintf (stderr, "funnelctl: %lld event(s) before the bad line were already "
                 "applied; nothing after it was sent\n", (long long) self->events);
    return rc == CTL_OK ? s_flush (self) : rc;
}

int
ctl_cmd_publish (ctl_t *self, int argc, char **argv)
{
    publisher_t pub = { .ctl = self, .attempts = 1 + self->retries,
                        .batch_max = BATCH_DEFAULT };
    const char *json_text = NULL;
    for (int i = 0; i < argc; i++) {
        if (streq (argv [i], "--batch")) {
            long long size;
            const char *value = ctl_args_value ("publish --batch", argc, argv, &i);
            if (!value || ctl_args_int ("publish --batch", value, 1, FUNNEL_BATCH_MAX, &size))
                return CTL_USAGE;
            pub.batch_max = (size_t) size;
        }

        else
        if (!pub.service)
            pub.service = argv [i];
        else
        if (!json_text)
            json_text = argv [i];
        else {
            fprintf (stderr, "funnelctl: publish: unexpected argument '%s'\n", argv [i]);
            return CTL_USAGE;
        }
    }
    if (!pub.service) {
        fprintf (stderr, "funnelctl: usage: publish SERVICE [JSON | -] [--batch N]\n");
        return CTL_USAGE;
    }
    if (!ctl_endpoint (self, pub.service, "api"))
        return CTL_USAGE;
    s_id_prefix (&pub);
    pub.batch = json_array ();
    pub.lines = json_array ();
    int rc;
    if (!json_text || streq (json_text, "-"))
        rc = s_from_stdin (&pub);
    else {
        json_error_t error;
        json_t *value = json_loads (json_text, 0, &error);
        if (!value) {
            fprintf (stderr, "funnelctl: invalid JSON: %s (column %d)\n", error.text, error.column);
            rc = CTL_USAGE;
        }
        else
        if (json_is_object (value)) {
            //  One event: the service's own reply, with the id it stored
            json_t *reply = NULL;
            rc = s_fill (&pub, value, "event") ? CTL_USAGE
               : ctl_call (self, pub.service, "PUBLISH", value, pub.attempts, &reply);
            if (rc == CTL_OK)
                ctl_print_json (self, reply);
            else
            if (rc == CTL_ERR)
                ctl_print_err (pub.service, reply);
            json_decref (reply);
            json_decref (value);
            goto done;
        }
        else {
            rc = CTL_OK;
            for (size_t i = 0; rc == CTL_OK && i < json_array_size (value); i++) {
                char where [32];
                snprintf (where, sizeof where, "element %zu", i);
                json_t *event = json_array_get (value, i);
                rc = s_fill (&pub, event, where) ? CTL_USAGE : s_add (&pub, event, where);
            }
            if (rc == CTL_OK)
                rc = s_flush (&pub);
        }
        json_decref (value);
    }
    if (rc == CTL_OK || pub.events > 0) {
        json_t *summary = json_pack ("{s:I, s:I, s:I, s:I}", "events", (json_int_t) pub.events,
                                     "accepted", (json_int_t) pub.accepted,
                                     "duplicates", (json_int_t) pub.duplicates,
                                     "batches", (json_int_t) pub.batches);
        ctl_print_json (self, summary);
        json_decref (summary);
    }
done:
    json_decref (pub.batch);
    json_decref (pub.lines);
    return rc;
}
