/*  keygen: a CURVE certificate pair in czmq's format (proto/security.md). */
#include <czmq.h>
#include "ctl.h"
#include "funnel_curve.h"

int
ctl_cmd_keygen (ctl_t *self, int argc, char **argv)
{
    (void) self;
    const char *name = NULL, *dir = NULL, *publish = NULL, *read = NULL;
    for (int i = 0; i < argc; i++) {
        bool has_value = i + 1 < argc;
        if (streq (argv [i], "--dir") && has_value)
            dir = argv [++i];
        else
        if (streq (argv [i], "--publish") && has_value)
            publish = argv [++i];
        else
        if (streq (argv [i], "--read") && has_value)
            read = argv [++i];
        else
        if (!name && argv [i][0] != '-')
            name = argv [i];
        else {
            fprintf (stderr, "funnelctl: keygen: unexpected argument '%s'\n", argv [i]);
            return CTL_USAGE;
        }
    }
    if (!name || !dir) {
        fprintf (stderr, "funnelctl: usage: keygen NAME --dir DIR [--publish TYPES] "
                 "[--read 0|1]\n");
        return CTL_USAGE;
    }
    char err [256];
    if (funnel_curve_keygen (name, dir, publish, read, err, sizeof err) != 0) {
        fprintf (stderr, "funnelctl: keygen: %s\n", err);
        return CTL_USAGE;
    }
    printf ("%s/%s.cert\n%s/%s.cert_secret\n", dir, name, dir, name);
    return CTL_OK;
}
