/*  ctl_args — funnelctl's command line: the global options wherever they
    stand, and option values parsed strictly.

    Global options (-c, -t, -r, -p, -h, -V and their long forms) may come
    before or after the command: `funnelctl ping leads -c F` pings leads of
    F. A command's own option of the same name wins after the command (tail
    --timeout S is tail's). `--` ends the global options: all after it go
    to the command as they are. A number that is not wholly a number in range is a
    usage error naming the option (exit 2), never read as 0 or its prefix.

        ctl_t ctl = { .timeout_ms = 2000, .retries = 5 };
        const char *config_file = NULL;
        int rc = ctl_args_global (&ctl, &argc, argv, &config_file);
        //  CTL_ARGS_GO: argv [1] is now the command
        long long from;
        if (ctl_args_int ("replay --from", "abc", 0, LLONG_MAX, &from))
            return CTL_USAGE;   //  "funnelctl: replay --from: 'abc' is not ..."
*/
#ifndef CTL_ARGS_H_INCLUDED
#define CTL_ARGS_H_INCLUDED

#include "ctl.h"

#define CTL_ARGS_GO      -1     //  ctl_args_global: run the command
#define CTL_ARGS_HELP    -2     //  --help given
#define CTL_ARGS_VERSION -3     //  --version given

//  Takes the global options out of argv (argv [0] stays), compacting it so
//  that argv [1] is the command. Returns CTL_ARGS_GO, CTL_ARGS_HELP,
//  CTL_ARGS_VERSION, or CTL_USAGE after printing why.
int
    ctl_args_global (ctl_t *ctl, int *argc, char **argv, const char **config_file);

//  The whole of text as a decimal integer in min..max; else prints
//  "funnelctl: OPTION: 'TEXT' is not an integer in MIN..MAX" and returns -1.
int
    ctl_args_int (const char *option, const char *text, long long min, long long max,
                  long long *value);

//  The same for a decimal number (no inf, nan or hex).
int
    ctl_args_num (const char *option, const char *text, double min, double max,
                  double *value);

//  argv [*i] is option OPTION: its value is argv [*i + 1] (and *i moves on),
//  or NULL after "funnelctl: OPTION needs a value".
const char *
    ctl_args_value (const char *option, int argc, char **argv, int *i);

void
    ctl_args_test (bool verbose);

#endif
