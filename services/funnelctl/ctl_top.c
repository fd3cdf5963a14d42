/*  top: the live funnel in the terminal, from every service's STATS.

    The same exact counters the monitor reads (services/README.md), so it
    works without the monitor. Plain ANSI (clear and home) between frames;
    --once prints one frame without escapes, for scripts and tests.
*/
#include <czmq.h>
#include <unistd.h>
#include "ctl.h"
#include "ctl_args.h"

#define BAR_WIDTH 40

static const struct { const char *name; int service; const char *counter; } s_stages [] = {
    { "reached", 0, "reached" }, { "engaged", 0, "engaged" }, { "leads", 1, "leads" },
    { "mql", 1, "mql" }, { "sql", 1, "sql" }, { "deals", 2, "deals" }, { "won", 2, "won" },
    { "customers", 3, "customers" }, { "repeat", 3, "repeat" }, { "lost", 2, "lost" }
};
#define STAGES (sizeof s_stages / sizeof s_stages [0])

typedef struct {
    bool up;
    json_t *counters;       //  Last STATS counters (kept while down)
    int64_t seq, last_seq;
    int64_t at, last_at;    //  When seq was read (mono ms)
} service_t;

static int64_t
s_counter (service_t *service, const char *name)
{
    json_t *value = service->counters ? json_object_get (service->counters, name) : NULL;
    return json_is_integer (value) ? json_integer_value (value) : 0;
}

static void
s_refresh (ctl_t *self, service_t *services)
{
    for (int s = 0; s < 4; s++) {
        service_t *service = &services [s];
        json_t *reply = NULL;
        service->up = ctl_call (self, ctl_services [s], "STATS", NULL, 1, &reply) == CTL_OK;
        if (service->up) {
            json_decref (service->counters);
            service->counters = json_incref (json_object_get (reply, "counters"));
        }
        json_decref (reply);
        if (service->up && ctl_call (self, ctl_services [s], "PING", NULL, 1, &reply) == CTL_OK) {
            service->last_seq = service->seq;
            service->last_at = service->at;
            service->seq = json_integer_value (json_object_get (reply, "seq"));
            service->at = zclock_mono ();
        }
        json_decref (reply);
    }
}

static void
s_draw (service_t *services, bool ansi)
{
    if (ansi)
        printf ("\033[H\033[2J");
    char when [32];
    time_t now = time (NULL);
    strftime (when, sizeof when, "%Y-%m-%d %H:%M:%S", localtime (&now));
    printf ("Funnel  %s%s\n\n", when, ansi ? "   (Ctrl-C to quit)" : "");
    printf ("%-10s %12s %8s  %s\n", "stage", "count", "conv", "");
    int64_t max = 1;
    for (size_t i = 0; i < STAGES; i++) {
        int64_t count = s_counter (&services [s_stages [i].service], s_stages [i].counter);
        if (count > max)
            max = count;
    }
    int64_t previous = -1, deals = 0;
    for (size_t i = 0; i < STAGES; i++) {
        int64_t count = s_counter (&services [s_stages [i].service], s_stages [i].counter);
        bool lost = streq (s_stages [i].name, "lost");
        int64_t base = lost ? deals : previous;
        char conv [16] = "";
        if (base > 0)
            snprintf (conv, sizeof conv, "%.1f%%", 100.0 * (double) count / (double) base);
        int width = (int) ((double) count / (double) max * BAR_WIDTH + 0.5);
        char bar [BAR_WIDTH + 1];
        memset (bar, lost ? 'x' : '#', (size_t) width);
        bar [width] = 0;
        printf ("%-10s %12lld %8s  %s\n", s_stages [i].name, (long long) count, conv, bar);
        if (streq (s_stages [i].name, "deals"))
            deals = count;
        previous = count;
    }
    printf ("\n%-10s %-5s %10s %10s %10s %10s\n", "service", "state", "seq", "events/s",
            "accepted", "dups");
    for (int s = 0; s < 4; s++) {
        service_t *service = &services [s];
        double rate = 0;
        if (service->last_at && service->at > service->last_at)
            rate = (double) (service->seq - service->last_seq) * 1000.0
                 / (double) (service->at - service->last_at);
        printf ("%-10s %-5s %10lld %10.1f %10lld %10lld\n", ctl_services [s],
                service->up ? "up" : "DOWN", (long long) service->seq, rate,
                (long long) s_counter (service, "accepted"),
                (long long) s_counter (service, "duplicates"));
    }
    fflush (stdout);
}

//  top [--once] [--interval MS]
int
ctl_cmd_top (ctl_t *self, int argc, char **argv)
{
    bool once = false;
    long long interval = 1000;
    for (int i = 0; i < argc; i++) {
        const char *value;
        if (streq (argv [i], "--once"))
            once = true;
        else
        if (streq (argv [i], "--interval")) {
            if (!(value = ctl_args_value ("top --interval", argc, argv, &i))
            ||  ctl_args_int ("top --interval", value, 1, 86400000, &interval))
                return CTL_USAGE;
        }
        else {
            fprintf (stderr, "funnelctl: usage: top [--once] [--interval MS]\n");
            return CTL_USAGE;
        }
    }
    if (interval < 100)
        interval = 100;
    service_t services [4];
    memset (services, 0, sizeof services);
    //  Unreachable services are shown as DOWN, not reported one by one
    self->quiet = true;
    int rc = CTL_OK;
    bool any_up = false;        //  In any frame: a stop mid-refresh is no outage
    do {
        int64_t started = zclock_mono ();
        s_refresh (self, services);
        if (funnel_stop && !once)
            break;
        for (int s = 0; s < 4; s++)
            any_up |= services [s].up;
        //  Escape codes only for a terminal: a pipe gets plain frames
        s_draw (services, !once && isatty (STDOUT_FILENO));
        if (once)
            break;
        while (!funnel_stop && zclock_mono () - started < interval)
            zclock_sleep (50);
    } while (!funnel_stop);
    for (int s = 0; s < 4; s++)
        json_decref (services [s].counters);
    self->quiet = false;
    if (!any_up) {
        fprintf (stderr, "funnelctl: top: no service answered\n");
        rc = CTL_UNREACHABLE;
    }
    return rc;
}
