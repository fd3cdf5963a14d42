/*  ctl_args — funnelctl's global options anywhere, strict option values. */
#include <czmq.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include "ctl_args.h"

typedef struct {
    char short_name;
    const char *long_name;
    bool has_value;
} global_t;

static const global_t s_globals [] = {
    { 'c', "config", true }, { 't', "timeout", true }, { 'r', "retries", true },
    { 'p', "pretty", false }, { 'h', "help", false }, { 'V', "version", false },
    { 0, NULL, false }
};

//  A command's own options that share a global one's name: after that
//  command they are the command's
static const struct {
    const char *command;
    const char *option;
} s_shadows [] = {
    { "tail", "timeout" },
    { NULL, NULL }
};

static bool
s_shadowed (const char *command, const char *name, size_t length)
{
    for (int i = 0; command && s_shadows [i].command; i++)
        if (streq (s_shadows [i].command, command)
        &&  strlen (s_shadows [i].option) == length
        &&  strncmp (s_shadows [i].option, name, length) == 0)
            return true;
    return false;
}

static int
s_usage (const char *format, const char *what)
{
    fprintf (stderr, "funnelctl: ");
    fprintf (stderr, format, what);
    fprintf (stderr, "; see funnelctl --help\n");
    return CTL_USAGE;
}

//  The global option arg names, or NULL; *value set if given with it.
static const global_t *
s_global (const char *arg, const char *command, const char **value)
{
    *value = NULL;
    if (arg [1] == '-') {
        const char *name = arg + 2;
        size_t length = strcspn (name, "=");
        if (s_shadowed (command, name, length))
            return NULL;
        for (const global_t *g = s_globals; g->long_name; g++)
            if (strlen (g->long_name) == length && strncmp (g->long_name, name, length) == 0) {
                if (name [length] == '=')
                    *value = name + length + 1;
                return g;
            }
        return NULL;
    }
    for (const global_t *g = s_globals; g->long_name; g++)
        if (g->short_name == arg [1] && (arg [2] == 0 || g->has_value)) {
            if (arg [2])
                *value = arg + 2;
            return g;
        }
    return NULL;
}

static int
s_apply (ctl_t *ctl, const global_t *g, const char *value, const char **config_file)
{
    long long number;
    switch (g->short_name) {
        case 'c':
            *config_file = value;
            break;
        case 't':
            if (ctl_args_int ("--timeout", value, 1, 3600000, &number))
                return CTL_USAGE;
            ctl->timeout_ms = (int) number;
            break;
        case 'r':
            if (ctl_args_int ("--retries", value, 0, 1000, &number))
                return CTL_USAGE;
            ctl->retries = (int) number;
            break;
        case 'p':
            ctl->pretty = true;
            break;
        case 'h':
            return CTL_ARGS_HELP;
        case 'V':
            return CTL_ARGS_VERSION;
    }
    return CTL_ARGS_GO;
}

int
ctl_args_global (ctl_t *ctl, int *argc, char **argv, const char **config_file)
{
    int out = 1;
    const char *command = NULL;
    bool operands_only = false;
    int rc = CTL_ARGS_GO;
    for (int i = 1; i < *argc; i++) {
        char *arg = argv [i];
        if (operands_only || arg [0] != '-' || arg [1] == 0) {
            if (!command)
                command = arg;
            argv [out++] = arg;
            continue;
        }
        if (streq (arg, "--")) {
            operands_only = true;   //  Not passed on: it only ends ours
            continue;
        }
        const char *value;
        const global_t *g = s_global (arg, command, &value);
        if (!g) {
            if (!command)
                return s_usage ("unknown option '%s'", arg);
            argv [out++] = arg;     //  The command's own option
            continue;
        }
        if (!g->has_value && value)
            return s_usage ("option '%s' takes no value", arg);
        if (g->has_value && !value) {
            if (i + 1 >= *argc)
                return s_usage ("option '%s' needs a value", arg);
            value = argv [++i];
        }
        int applied = s_apply (ctl, g, value, config_file);
        if (applied == CTL_USAGE)
            return applied;
        if (applied != CTL_ARGS_GO && rc == CTL_ARGS_GO)
            rc = applied;           //  --help / --version, after the rest is read
    }
    argv [out] = NULL;
    *argc = out;
    return rc;
}

int
ctl_args_int (const char *option, const char *text, long long min, long long max,
              long long *value)
{
    const char *digits = text && (*text == '-' || *text == '+') ? text + 1 : text;
    char *end = NULL;
    long long parsed = 0;
    bool ok = digits && isdigit ((unsigned char) *digits);
    if (ok) {
        errno = 0;
        parsed = strtoll (text, &end, 10);
        ok = errno == 0 && *end == 0 && parsed >= min && parsed <= max;
    }
    if (!ok) {
        fprintf (stderr, "funnelctl: %s: '%s' is not an integer in %lld..%lld\n",
                 option, text ? text : "", min, max);
        return -1;
    }
    *value = parsed;
    return 0;
}

int
ctl_args_num (const char *option, const char *text, double min, double max, double *value)
{
    char *end = NULL;
    double parsed = 0;
    //  Plain decimal only: strtod would take inf, nan, hex and spaces
    bool ok = text && *text && !text [strspn (text, "0123456789+-.eE")];
    if (ok) {
        errno = 0;
        parsed = strtod (text, &end);
        ok = errno == 0 && *end == 0 && isfinite (parsed) && parsed >= min && parsed <= max;
    }
    if (!ok) {
        fprintf (stderr, "funnelctl: %s: '%s' is not a number in %g..%g\n",
                 option, text ? text : "", min, max);
        return -1;
    }
    *value = parsed;
    return 0;
}

const char *
ctl_args_value (const char *option, int argc, char **argv, int *i)
{
    if (*i + 1 >= argc) {
        fprintf (stderr, "funnelctl: %s needs a value\n", option);
        return NULL;
    }
    return argv [++*i];
}


//  --------------------------------------------------------------------------
//  Self test

#undef NDEBUG
#include <assert.h>
#include <unistd.h>

//  Runs ctl_args_global on words (stderr silenced); the rest in out.
static int
s_test_global (ctl_t *ctl, const char **words, const char **config, char *out, size_t size)
{
    char *argv [32];
    int argc = 0;
    argv [argc++] = "funnelctl";
    for (; *words; words++)
        argv [argc++] = (char *) *words;
    argv [argc] = NULL;
    fflush (stderr);
    int saved = dup (2);
    FILE *null = fopen ("/dev/null", "w");
    assert (saved >= 0 && null);
    dup2 (fileno (null), 2);
    int rc = ctl_args_global (ctl, &argc, argv, config);
    fflush (stderr);
    dup2 (saved, 2);
    close (saved);
    fclose (null);
    out [0] = 0;
    for (int i = 1; i < argc; i++) {
        strncat (out, argv [i], size - strlen (out) - 2);
        strncat (out, " ", size - strlen (out) - 1);
    }
    return rc;
}

void
ctl_args_test (bool verbose)
{
    (void) verbose;
    ctl_t ctl = { .timeout_ms = 2000, .retries = 5 };
    const char *config = NULL;
    char rest [256];

    //  Before or after the command, joined or apart
    const char *after [] = { "ping", "leads", "-c", "F", "--retries=2", "-t500", "-p", NULL };
    assert (s_test_global (&ctl, after, &config, rest, sizeof rest) == CTL_ARGS_GO);
    assert (streq (rest, "ping leads "));
    assert (streq (config, "F") && ctl.retries == 2 && ctl.timeout_ms == 500 && ctl.pretty);
    const char *before [] = { "--config", "G", "--timeout", "700", "stats", NULL };
    assert (s_test_global (&ctl, before, &config, rest, sizeof rest) == CTL_ARGS_GO);
    assert (streq (rest, "stats ") && streq (config, "G") && ctl.timeout_ms == 700);

    //  tail's own --timeout (seconds) stays tail's; -t is still global
    ctl.timeout_ms = 2000;
    const char *tail [] = { "tail", "all", "--timeout", "3", "-t", "900", "-n", "2", NULL };
    assert (s_test_global (&ctl, tail, &config, rest, sizeof rest) == CTL_ARGS_GO);
    assert (streq (rest, "tail all --timeout 3 -n 2 ") && ctl.timeout_ms == 900);

    //  After --, everything is the command's
    const char *dashes [] = { "tail", "all", "--", "-p", NULL };
    ctl.pretty = false;
    assert (s_test_global (&ctl, dashes, &config, rest, sizeof rest) == CTL_ARGS_GO);
    assert (streq (rest, "tail all -p ") && !ctl.pretty);

    //  Strict values and usage errors
    const char *bad_timeout [] = { "ping", "-t", "abc", NULL };
    assert (s_test_global (&ctl, bad_timeout, &config, rest, sizeof rest) == CTL_USAGE);
    const char *zero_timeout [] = { "ping", "--timeout=0", NULL };
    assert (s_test_global (&ctl, zero_timeout, &config, rest, sizeof rest) == CTL_USAGE);
    const char *bad_retries [] = { "-r", "5x", "ping", NULL };
    assert (s_test_global (&ctl, bad_retries, &config, rest, sizeof rest) == CTL_USAGE);
    const char *missing [] = { "ping", "-c", NULL };
    assert (s_test_global (&ctl, missing, &config, rest, sizeof rest) == CTL_USAGE);
    const char *unknown [] = { "--bogus", "ping", NULL };
    assert (s_test_global (&ctl, unknown, &config, rest, sizeof rest) == CTL_USAGE);
    const char *valued [] = { "ping", "--pretty=yes", NULL };
    assert (s_test_global (&ctl, valued, &config, rest, sizeof rest) == CTL_USAGE);
    const char *help [] = { "ping", "--help", NULL };
    assert (s_test_global (&ctl, help, &config, rest, sizeof rest) == CTL_ARGS_HELP);
    const char *version [] = { "-V", NULL };
    assert (s_test_global (&ctl, version, &config, rest, sizeof rest) == CTL_ARGS_VERSION);

    long long n;
    double x;
    fflush (stderr);
    int saved = dup (2);
    FILE *null = fopen ("/dev/null", "w");
    assert (saved >= 0 && null);
    dup2 (fileno (null), 2);
    assert (ctl_args_int ("--from", "42", 0, LLONG_MAX, &n) == 0 && n == 42);
    assert (ctl_args_int ("--from", "-1", 0, LLONG_MAX, &n) == -1);
    assert (ctl_args_int ("--from", "abc", 0, LLONG_MAX, &n) == -1);
    assert (ctl_args_int ("--from", "12abc", 0, LLONG_MAX, &n) == -1);
    assert (ctl_args_int ("--from", " 12", 0, LLONG_MAX, &n) == -1);
    assert (ctl_args_int ("--from", "", 0, LLONG_MAX, &n) == -1);
    assert (ctl_args_int ("--from", "99999999999999999999", 0, LLONG_MAX, &n) == -1);
    assert (ctl_args_num ("--timeout", "1.5", 0, 1e9, &x) == 0 && x == 1.5);
    assert (ctl_args_num ("--timeout", "inf", 0, 1e9, &x) == -1);
    assert (ctl_args_num ("--timeout", "0x10", 0, 1e9, &x) == -1);
    assert (ctl_args_num ("--timeout", "-2", 0, 1e9, &x) == -1);
    fflush (stderr);
    dup2 (saved, 2);
    close (saved);
    fclose (null);
}
