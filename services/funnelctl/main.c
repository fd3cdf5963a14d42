/*  funnelctl — the Funnel command-line client (proto/funnelctl.md). */
#include <czmq.h>
#include "ctl.h"
#include "ctl_args.h"
#include "funnel_curve.h"
#include "funnel_log.h"

static void
s_help (void)
{
    printf (
"Usage: funnelctl [OPTIONS] COMMAND [ARGS] [OPTIONS]\n"
"The Funnel command-line client: talks to the services' API and PUB sockets,\n"
"found through the topology file. JSON in, JSON out (msgpack on the wire).\n"
"\n"
"Commands:\n"
"  ping [SERVICE...]             PING (all four services by default)\n"
"  stats [SERVICE...]            STATS counters (all four by default)\n"
"  get SERVICE KIND [ID] [key=value...]\n"
"  get SERVICE '{\"kind\": ...}'   GET an entity or a report\n"
"  export LEAD                  everything every service holds on a person (JSON)\n"
"  publish SERVICE [JSON|-] [--batch N]\n"
"                                PUBLISH one event or an array given as JSON, or\n"
"                                NDJSON from stdin (one event or array per line),\n"
"                                sent in batches of N (default 100, max 1000).\n"
"                                Missing v/ts/src/id are filled in (v 1, now,\n"
"                                \"funnelctl\", ctl-<host>-<pid>-<ms>-<n>; generated\n"
"                                ids are printed on stderr). On timeout or ERR\n"
"                                unavailable the same bytes (same ids) are re-sent.\n"
"  replay SERVICE [--from SEQ] [--limit N]\n"
"                                held output events from SEQ, as JSON lines\n"
"  tail SERVICE|all [TYPE-PREFIX...] [-n COUNT] [--timeout S] [--heartbeats]\n"
"                                live output events as JSON lines, by type prefix\n"
"  top [--once] [--interval MS]  the live funnel from STATS, redrawn each second\n"
"  keygen NAME --dir DIR [--publish TYPES] [--read 0|1]\n"
"                                write a CURVE certificate pair DIR/NAME.cert and\n"
"                                DIR/NAME.cert_secret (czmq format, metadata name)\n"
"\n"
"Services: campaign, leads, sales, retention, or an endpoint (tcp://host:port).\n"
"\n"
"Options (before or after the command; after '--' all is the command's):\n"
"  -c, --config FILE   topology file (env FUNNEL_CONFIG; else the proto/README.md\n"
"                      defaults, campaign api tcp://127.0.0.1:7101 and so on);\n"
"                      with security/curve = 1 funnelctl uses the keypair\n"
"                      <certs>/funnelctl.cert_secret, or FUNNEL_CERT=FILE\n"
"  -t, --timeout MS    wait per attempt (default 2000)\n"
"  -r, --retries N     extra attempts for publish and replay (default 5)\n"
"  -p, --pretty        indented JSON\n"
"  -h, --help          this help;  -V, --version\n"
"\n"
"Exit codes:\n"
"  0  success\n"
"  1  a service answered ERR (code and message printed on stderr)\n"
"  2  usage error, unknown service, bad topology file or invalid JSON\n"
"  3  a service is unreachable (no reply in time, after the retries)\n");
}


int
main (int argc, char *argv [])
{
    funnel_signals_init ();
    funnel_log_init ("funnelctl", FUNNEL_LOG_ERROR);
    funnel_log_set_format (FUNNEL_LOG_PLAIN);

    ctl_t ctl = { .timeout_ms = 2000, .retries = 5 };
    const char *config_file = NULL;
    //  Global options before or after the command (ctl_args.h)
    switch (ctl_args_global (&ctl, &argc, argv, &config_file)) {
        case CTL_ARGS_GO:       break;
        case CTL_ARGS_HELP:     s_help (); return CTL_OK;
        case CTL_ARGS_VERSION:  printf ("funnelctl %s\n", FUNNEL_VERSION); return CTL_OK;
        default:                return CTL_USAGE;
    }
    int first = 1;
    if (first >= argc) {
        fprintf (stderr, "funnelctl: no command; see funnelctl --help\n");
        return CTL_USAGE;
    }
    //  The shared loader reads the file (or FUNNEL_CONFIG) with the
    //  daemons' defaults and checks, so funnelctl sees what they see
    char *load_argv [] = { "funnelctl", "-c", (char *) config_file, NULL };
    funnel_config_about_t about = { "ctl", "funnelctl", NULL };
    funnel_config_status_t status;
    funnel_config_set_program ("funnelctl");
    ctl.config = funnel_config_load (config_file ? 3 : 1, load_argv, &about, &status);
    if (status != FUNNEL_CONFIG_OK)
        return CTL_USAGE;
    //  One prefix for every message, whatever the topology's log/format
    funnel_log_set_format (FUNNEL_LOG_PLAIN);

    static const struct {
        const char *name;
        int (*run) (ctl_t *, int, char **);
    } commands [] = {
        { "ping", ctl_cmd_ping }, { "stats", ctl_cmd_stats }, { "get", ctl_cmd_get },
        { "export", ctl_cmd_export }, { "publish", ctl_cmd_publish }, { "replay", ctl_cmd_replay },
        { "tail", ctl_cmd_tail }, { "top", ctl_cmd_top }, { "keygen", ctl_cmd_keygen },
        { NULL, NULL }
    };
    const char *command = argv [first];
    int rc = -1;
    //  keygen makes certificates, so it cannot need them
    if (!streq (command, "keygen") && funnel_curve_setup (ctl.config, "funnelctl") != 0)
        rc = CTL_USAGE;
    for (int i = 0; commands [i].name && rc == -1; i++)
        if (streq (commands [i].name, command))
            rc = commands [i].run (&ctl, argc - first - 1, argv + first + 1);
    if (rc == -1) {
        fprintf (stderr, "funnelctl: unknown command '%s'; see funnelctl --help\n", command);
        rc = CTL_USAGE;
    }
    funnel_curve_teardown ();
    funnel_config_destroy (&ctl.config);
    return rc;
}
