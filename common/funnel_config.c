/*  funnel_config — the topology file (ZPL), FUNNEL_* environment and flags.

    Everything ends up in one zconfig tree: the file (or an empty tree), then
    the environment, then the flags, written over it with zconfig_put; the
    proto/README.md defaults are filled in last wherever nothing said otherwise.
    Lookups are then plain tree reads, and a daemon sees its upstreams'
    endpoints the same way it sees its own.

    This module never calls zsys_init: the runtime disables czmq's signal
    handlers (zsys_handler_set (NULL)) before loading, and zconfig's own
    error logging initialises czmq only after that.
*/
#include "funnel_config.h"
#include "funnel_log.h"

#include <assert.h>
#include <czmq.h>
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#ifndef FUNNEL_VERSION
#   define FUNNEL_VERSION "0.0.0-dev"
#endif

struct _funnel_config_t {
    zconfig_t *root;
    char *service;
    zhashx_t *known;            //  Every path the program looked up (strict keys)
    bool recording;             //  Until funnel_config_check_keys
    char *file;                 //  The topology file, or NULL
    char **set_paths;           //  --set and other flag paths, for messages
    int set_count;
};

//  The top-level sections of a Funnel topology; a file naming another is
//  a typo. alpha and beta are funnel-testsvc's stand-in services (tests).
static const char *s_sections [] = {
    "redis", "log", "campaign", "leads", "sales", "retention", "monitor", "sim",
    "gateway", "webhooks", "security", "alpha", "beta", NULL
};

//  The name messages start with: "funnel-<service>", or about->program.
static char s_program [64] = "funnel";
static char s_program_set [64];

void
funnel_config_set_program (const char *name)
{
    snprintf (s_program_set, sizeof s_program_set, "%s", name ? name : "");
}

static void
s_set_program (const char *service)
{
    if (*s_program_set)
        snprintf (s_program, sizeof s_program, "%s", s_program_set);
    else
        snprintf (s_program, sizeof s_program, "funnel-%s", service);
}

//  Keys that are known whether or not this program reads them.
static const char *s_global_keys [] = {
    "redis/url", "redis/user", "redis/password_file", "redis/acks", "redis/acks_timeout_ms",
    "log/level", "log/format", NULL
};

//  The defaults of proto/README.md, section 1.
static const struct {
    const char *path;
    const char *value;
} s_defaults [] = {
    { "redis/url",     "redis://127.0.0.1:6379/0" },
    { "campaign/api",  "tcp://127.0.0.1:7101" },
    { "campaign/pub",  "tcp://127.0.0.1:7102" },
    { "leads/api",     "tcp://127.0.0.1:7111" },
    { "leads/pub",     "tcp://127.0.0.1:7112" },
    { "sales/api",     "tcp://127.0.0.1:7121" },
    { "sales/pub",     "tcp://127.0.0.1:7122" },
    { "retention/api", "tcp://127.0.0.1:7131" },
    { "retention/pub", "tcp://127.0.0.1:7132" },
    { "monitor/http",  "127.0.0.1:7140" },
    { "monitor/pub",   "tcp://127.0.0.1:7142" },
    { "gateway/http",  "127.0.0.1:7150" },
};
#define DEFAULT_REDIS_URL "redis://127.0.0.1:6379/0"

//  Environment overrides; `own` keys go under the loading service's section.
static const struct {
    const char *name;
    const char *key;
    bool own;
} s_environment [] = {
    { "FUNNEL_REDIS_URL", "redis",     true },
    { "FUNNEL_API",       "api",       true },
    { "FUNNEL_PUB",       "pub",       true },
    { "FUNNEL_HTTP",      "http",      true },
    { "FUNNEL_LOG_LEVEL", "log/level", false },
    { "FUNNEL_LOG_FORMAT", "log/format", false },
};

enum {
    OPT_REDIS = 256, OPT_API, OPT_PUB, OPT_HTTP, OPT_SET, OPT_LOG_LEVEL, OPT_LOG_FORMAT,
    OPT_INSTANCE
};

static const struct option s_options [] = {
    { "config",    required_argument, NULL, 'c' },
    { "redis",     required_argument, NULL, OPT_REDIS },
    { "api",       required_argument, NULL, OPT_API },
    { "pub",       required_argument, NULL, OPT_PUB },
    { "http",      required_argument, NULL, OPT_HTTP },
    { "set",       required_argument, NULL, OPT_SET },
    { "instance",  required_argument, NULL, OPT_INSTANCE },
    { "log-level", required_argument, NULL, OPT_LOG_LEVEL },
    { "log-format", required_argument, NULL, OPT_LOG_FORMAT },
    { "help",      no_argument,       NULL, 'h' },
    { "version",   no_argument,       NULL, 'V' },
    { NULL, 0, NULL, 0 }
};

//  The flags, collected first so that they override the environment
//  whatever their position, and so -c is known before anything is applied.
typedef struct {
    char *path;                 //  Owned
    const char *value;          //  Points into argv
} setting_t;

typedef struct {
    const char *config_file;    //  -c, or NULL
    setting_t *settings;        //  In command-line order
    int count;
} flags_t;


//  --------------------------------------------------------------------------
//  Small helpers

//  "a" + "/" + "b", malloc'd (NULL if out of memory).
static char *
s_path_join (const char *section, const char *key)
{
    size_t size = strlen (section) + strlen (key) + 2;
    char *path = malloc (size);
    if (path)
        snprintf (path, size, "%s/%s", section, key);
    return path;
}

//  Unset and empty environment variables both mean "not given".
static const char *
s_getenv (const char *name)
{
    const char *value = getenv (name);
    return value && *value ? value : NULL;
}

//  Levenshtein distance, for "did you mean"; long strings compare as far.
static size_t
s_distance (const char *a, const char *b)
{
    size_t la = strlen (a), lb = strlen (b);
    if (la > 255 || lb > 255)
        return 1000;
    size_t row [256], prev [256];
    for (size_t j = 0; j <= lb; j++)
        prev [j] = j;
    for (size_t i = 1; i <= la; i++) {
        row [0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t best = prev [j - 1] + (a [i - 1] != b [j - 1]);
            if (prev [j] + 1 < best)
                best = prev [j] + 1;
            if (row [j - 1] + 1 < best)
                best = row [j - 1] + 1;
            row [j] = best;
        }
        memcpy (prev, row, (lb + 1) * sizeof row [0]);
    }
    return prev [lb];
}

static const char *
s_default_of (const char *path)
{
    for (size_t i = 0; i < sizeof s_defaults / sizeof s_defaults [0]; i++)
        if (strcmp (s_defaults [i].path, path) == 0)
            return s_defaults [i].value;
    return NULL;
}

//  ZPL names are alphanumerics and $-_@.&+; a path is such names joined by
//  '/'. Checked so --set cannot create nameless or unreadable nodes.
static bool
s_valid_path (const char *path)
{
    if (*path == '/')
        path++;
    size_t segment = 0;
    for (const char *p = path; ; p++) {
        if (*p == '/' || *p == 0) {
            if (segment == 0)
                return false;
            if (*p == 0)
                return true;
            segment = 0;
        }
        else
        if (isalnum ((unsigned char) *p) || strchr ("$-_@.&+", *p))
            segment++;
        else
            return false;
    }
}

static funnel_config_status_t
s_usage_error (const char *service, const char *format, ...)
    __attribute__ ((format (printf, 2, 3)));

static funnel_config_status_t
s_usage_error (const char *service, const char *format, ...)
{
    (void) service;
    fprintf (stderr, "%s: ", s_program);
    va_list args;
    va_start (args, format);
    vfprintf (stderr, format, args);
    va_end (args);
    fprintf (stderr, "\nTry '%s --help' for more information.\n", s_program);
    return FUNNEL_CONFIG_EXIT_USAGE;
}


//  --------------------------------------------------------------------------
//  Command line

static void
s_print_help (const funnel_config_about_t *about)
{
    const char *svc = about->service;
    char path [64];
    printf ("Usage: funnel-%s [OPTIONS]\n", svc);
    if (about->summary)
        printf ("%s\n", about->summary);
    printf ("\nOptions:\n");
    printf ("  -c, --config FILE      topology file (ZPL); built-in defaults if none\n");
    printf ("      --redis URL        this service's Redis, redis://[[user]:password@]host[:port][/db]\n"
            "                         or unix:///path[?db=N] (default %s);\n"
            "                         redis+sentinel://[[user]:password@]h1:p1,h2:p2/MASTER[/db]\n"
            "                         finds the primary through Sentinel; redis://h1:p1,h2:p2,...\n"
            "                         names a Redis Cluster (refused by this version's services)\n",
            DEFAULT_REDIS_URL);
    snprintf (path, sizeof path, "%s/api", svc);
    printf ("      --api ENDPOINT     this service's API endpoint (default %s)\n",
            s_default_of (path) ? s_default_of (path) : "none");
    snprintf (path, sizeof path, "%s/pub", svc);
    printf ("      --pub ENDPOINT     this service's PUB endpoint (default %s)\n",
            s_default_of (path) ? s_default_of (path) : "none");
    snprintf (path, sizeof path, "%s/http", svc);
    printf ("      --http ADDR        monitor, gateway: HTTP host:port (default %s)\n",
            s_default_of (path) ? s_default_of (path) : s_default_of ("monitor/http"));
    //  Only the four services have instances (the gateway and the monitor refuse the key)
    if (!streq (svc, "gateway") && !streq (svc, "monitor"))
        printf ("      --instance NAME    run instance NAME of %s/instances (its api, pub and\n"
                "                         the partitions it owns); sets %s/instance\n", svc, svc);
    printf ("      --set PATH=VALUE   set any key, e.g. --set leads/rules/mql=40 (repeatable)\n");
    printf ("      --log-level LEVEL  error|warn|info|debug (default info)\n");
    printf ("      --log-format FMT   text (default) or json: one JSON object per line\n");
    printf ("  -h, --help             print this help and exit\n");
    printf ("  -V, --version          print the version and exit\n");
    printf ("\nEnvironment (overrides the file; flags override the environment):\n");
    printf ("  FUNNEL_CONFIG          topology file, as -c\n");
    printf ("  FUNNEL_REDIS_URL       as --redis\n");
    printf ("  FUNNEL_API             as --api\n");
    printf ("  FUNNEL_PUB             as --pub\n");
    printf ("  FUNNEL_HTTP            as --http\n");
    printf ("  FUNNEL_LOG_LEVEL       as --log-level\n");
    printf ("  FUNNEL_LOG_FORMAT      as --log-format\n");
    printf ("\nA section or key this program does not know (a typo), in the file, --set or\n"
            "the environment, stops it with exit code 2, naming the nearest known key.\n");
    if (about->extra_help)
        printf ("\n%s\n", about->extra_help);
}

static int
s_flags_add (flags_t *flags, char *path, const char *value)
{
    if (!path)
        return -1;
    setting_t *settings = realloc (flags->settings,
                                   (size_t) (flags->count + 1) * sizeof *settings);
    if (!settings) {
        free (path);
        return -1;
    }
    flags->settings = settings;
    flags->settings [flags->count].path = path;
    flags->settings [flags->count].value = value;
    flags->count++;
    return 0;
}

static void
s_flags_free (flags_t *flags)
{
    for (int i = 0; i < flags->count; i++)
        free (flags->settings [i].path);
    free (flags->settings);
    flags->settings = NULL;
    flags->count = 0;
}

//  --set PATH=VALUE
static funnel_config_status_t
s_flags_add_set (flags_t *flags, const char *svc, const char *text)
{
    const char *equals = strchr (text, '=');
    if (!equals)
        return s_usage_error (svc, "--set '%s': expected PATH=VALUE", text);
    char *path = strndup (text, (size_t) (equals - text));
    if (path && !s_valid_path (path)) {
        free (path);
        return s_usage_error (svc, "--set '%s': bad path (names of letters, digits "
                              "and $-_@.&+ joined by '/')", text);
    }
    if (s_flags_add (flags, path, equals + 1))
        return s_usage_error (svc, "out of memory");
    return FUNNEL_CONFIG_OK;
}

//  Name of the option getopt just rejected, for the message.
static const char *
s_bad_option (char **argv, char *buffer, size_t size)
{
    //  getopt sets optopt to the character of a short option; for a long
    //  option it is 0 or the option's value, and argv holds the text
    if (optopt > 0 && optopt < 128 && isprint (optopt)) {
        snprintf (buffer, size, "-%c", optopt);
        return buffer;
    }
    return argv [optind - 1];
}

//  One flag; OK to go on, anything else stops parsing.
static funnel_config_status_t
s_flag (int opt, char **argv, const funnel_config_about_t *about, flags_t *flags)
{
    const char *svc = about->service;
    const char *own_key = NULL;
    char buffer [8];
    funnel_log_level_t level;
    funnel_log_format_t format;
    switch (opt) {
        case 'c':           flags->config_file = optarg; return FUNNEL_CONFIG_OK;
        case OPT_REDIS:     own_key = "redis"; break;
        case OPT_API:       own_key = "api"; break;
        case OPT_PUB:       own_key = "pub"; break;
        case OPT_HTTP:      own_key = "http"; break;
        case OPT_INSTANCE:  own_key = "instance"; break;
        case OPT_SET:       return s_flags_add_set (flags, svc, optarg);
        case OPT_LOG_LEVEL:
            if (funnel_log_level_parse (optarg, &level))
                return s_usage_error (svc, "--log-level '%s': expected error, warn, info or debug",
                                      optarg);
            if (s_flags_add (flags, strdup ("log/level"), optarg))
                return s_usage_error (svc, "out of memory");
            return FUNNEL_CONFIG_OK;
        case OPT_LOG_FORMAT:
            if (funnel_log_format_parse (optarg, &format))
                return s_usage_error (svc, "--log-format '%s': expected text or json", optarg);
            if (s_flags_add (flags, strdup ("log/format"), optarg))
                return s_usage_error (svc, "out of memory");
            return FUNNEL_CONFIG_OK;
        case 'h':
            s_print_help (about);
            return FUNNEL_CONFIG_EXIT_OK;
        case 'V':
            printf ("funnel-%s %s\n", svc, FUNNEL_VERSION);
            return FUNNEL_CONFIG_EXIT_OK;
        case ':':
            return s_usage_error (svc, "option '%s' needs an argument",
                                  s_bad_option (argv, buffer, sizeof buffer));
        default:
            return s_usage_error (svc, "unknown option '%s'",
                                  s_bad_option (argv, buffer, sizeof buffer));
    }
    if (s_flags_add (flags, s_path_join (svc, own_key), optarg))
        return s_usage_error (svc, "out of memory");
    return FUNNEL_CONFIG_OK;
}

static funnel_config_status_t
s_parse_flags (int argc, char **argv, const funnel_config_about_t *about, flags_t *flags)
{
    if (argc < 1 || !argv)
        return FUNNEL_CONFIG_OK;
    //  optind 0 makes glibc start afresh (tests load more than once); '+'
    //  stops at the first operand instead of permuting argv; ':' reports
    //  a missing argument apart from an unknown option
    optind = 0;
    opterr = 0;
    int opt;
    while ((opt = getopt_long (argc, argv, "+:c:hV", s_options, NULL)) != -1) {
        funnel_config_status_t status = s_flag (opt, argv, about, flags);
        if (status != FUNNEL_CONFIG_OK)
            return status;
    }
    if (optind < argc)
        return s_usage_error (about->service, "unexpected argument '%s'", argv [optind]);
    return FUNNEL_CONFIG_OK;
}


//  --------------------------------------------------------------------------
//  Building the tree

#define MAX_FILE_SIZE (16 * 1024 * 1024)

//  The whole file as a string; NULL with *reason on failure.
static char *
s_read_file (const char *file, const char **reason)
{
    FILE *handle = fopen (file, "r");
    if (!handle) {
        *reason = strerror (errno);
        return NULL;
    }
    struct stat st;
    char *text = NULL;
    if (fstat (fileno (handle), &st) || !S_ISREG (st.st_mode))
        *reason = "not a regular file";
    else
    if (st.st_size > MAX_FILE_SIZE)
        *reason = "larger than 16 MiB";
    else
    if (!(text = calloc (1, (size_t) st.st_size + 1)))
        *reason = "out of memory";
    else
    if (fread (text, 1, (size_t) st.st_size, handle) != (size_t) st.st_size) {
        *reason = ferror (handle) ? strerror (errno) : "file changed while reading";
        free (text);
        text = NULL;
    }
    fclose (handle);
    return text;
}

//  We read the file ourselves and parse the text: zconfig_load gives one
//  NULL for every failure, "loads" a directory, and in czmq 4.2.1 leaks
//  its zfile when the text does not parse.
static zconfig_t *
s_load_file (const char *file)
{
    const char *reason = NULL;
    char *text = s_read_file (file, &reason);
    zconfig_t *root = text ? zconfig_str_load (text) : NULL;
    free (text);
    if (!root && !reason)
        reason = "not valid ZPL (see the zconfig error for the line)";
    if (!root)
        fprintf (stderr, "%s: cannot read config %s: %s\n", s_program, file, reason);
    return root;
}

static funnel_config_t *
s_new (zconfig_t *root, const char *service)
{
    funnel_config_t *self = calloc (1, sizeof *self);
    if (self) {
        self->service = strdup (service);
        self->known = zhashx_new ();
        self->recording = true;
    }
    if (!self || !self->service || !self->known) {
        if (self) {
            free (self->service);
            zhashx_destroy (&self->known);
        }
        free (self);
        zconfig_destroy (&root);
        return NULL;
    }
    self->root = root;
    return self;
}

static int
s_put_own (funnel_config_t *self, const char *key, bool own, const char *value)
{
    char *path = own ? s_path_join (self->service, key) : strdup (key);
    if (!path)
        return -1;
    zconfig_put (self->root, path, value);
    free (path);
    return 0;
}

static int
s_apply_environment (funnel_config_t *self)
{
    for (size_t i = 0; i < sizeof s_environment / sizeof s_environment [0]; i++) {
        const char *value = s_getenv (s_environment [i].name);
        if (value && s_put_own (self, s_environment [i].key, s_environment [i].own, value))
            return -1;
    }
    return 0;
}

static int
s_apply_flags (funnel_config_t *self, const flags_t *flags)
{
    if (flags->count && !(self->set_paths = calloc ((size_t) flags->count, sizeof (char *))))
        return -1;
    for (int i = 0; i < flags->count; i++) {
        zconfig_put (self->root, flags->settings [i].path, flags->settings [i].value);
        const char *path = flags->settings [i].path;
        if (!(self->set_paths [self->set_count++] = strdup (*path == '/' ? path + 1 : path)))
            return -1;
    }
    return 0;
}

//  A FUNNEL_* variable two edits or fewer from one a daemon reads is taken
//  as a typo of it; others belong to other tools (FUNNEL_BUILD, ...).
static funnel_config_status_t
s_check_environment (const char *svc)
{
    extern char **environ;
    const char *names [sizeof s_environment / sizeof s_environment [0] + 1];
    size_t count = 0;
    for (size_t i = 0; i < sizeof s_environment / sizeof s_environment [0]; i++)
        names [count++] = s_environment [i].name;
    names [count++] = "FUNNEL_CONFIG";
    for (char **entry = environ; entry && *entry; entry++) {
        if (strncmp (*entry, "FUNNEL_", 7))
            continue;
        char name [128];
        size_t length = strcspn (*entry, "=");
        if (length >= sizeof name)
            continue;
        memcpy (name, *entry, length);
        name [length] = 0;
        const char *nearest = NULL;
        size_t best = 3;
        for (size_t i = 0; i < count; i++) {
            size_t distance = s_distance (name, names [i]);
            if (distance == 0) {
                nearest = NULL;
                break;
            }
            if (distance < best) {
                best = distance;
                nearest = names [i];
            }
        }
        if (nearest)
            return s_usage_error (svc, "unknown environment variable %s; did you mean %s?",
                                  name, nearest);
    }
    return FUNNEL_CONFIG_OK;
}

//  A key's value, not recorded as read (the module's own lookups).
static const char *
s_lookup (funnel_config_t *self, const char *path)
{
    zconfig_t *item = zconfig_locate (self->root, path);
    const char *value = item ? zconfig_value (item) : NULL;
    //  A section reads as "" (parsed) or NULL (made by zconfig_put): unset
    if (!value || (!*value && zconfig_child (item)))
        return NULL;
    return value;
}

static void
s_fill_defaults (funnel_config_t *self)
{
    for (size_t i = 0; i < sizeof s_defaults / sizeof s_defaults [0]; i++)
        if (!s_lookup (self, s_defaults [i].path))
            zconfig_put (self->root, s_defaults [i].path, s_defaults [i].value);
}


//  --------------------------------------------------------------------------
//  Validation: catch what would otherwise fail later with a vaguer message

static bool
s_is_endpoint (const char *value)
{
    const char *schemes [] = { "tcp://", "ipc://", "inproc://" };
    for (size_t i = 0; i < sizeof schemes / sizeof schemes [0]; i++) {
        size_t length = strlen (schemes [i]);
        if (strncmp (value, schemes [i], length) == 0 && value [length])
            return true;
    }
    return false;
}

//  host:port with a port of 1..65535 (the host may be empty or [v6]).
static bool
s_is_http_address (const char *value)
{
    const char *colon = strrchr (value, ':');
    if (!colon || !colon [1] || strlen (colon + 1) > 5)
        return false;
    for (const char *p = colon + 1; *p; p++)
        if (!isdigit ((unsigned char) *p))
            return false;
    long port = strtol (colon + 1, NULL, 10);
    return port >= 1 && port <= 65535;
}

static int
s_check_section (zconfig_t *section)
{
    const char *name = zconfig_name (section);
    const char *kinds [] = { "api", "pub" };
    for (size_t i = 0; i < sizeof kinds / sizeof kinds [0]; i++) {
        zconfig_t *item = zconfig_locate (section, kinds [i]);
        const char *value = item ? zconfig_value (item) : NULL;
        if (value && !s_is_endpoint (value)) {
            fprintf (stderr, "%s: %s/%s: '%s' is not a ZeroMQ endpoint "
                     "(tcp://, ipc:// or inproc://)\n", s_program, name, kinds [i], value);
            return -1;
        }
    }
    zconfig_t *item = zconfig_locate (section, "http");
    const char *value = item ? zconfig_value (item) : NULL;
    if (value && !s_is_http_address (value)) {
        fprintf (stderr, "%s: %s/http: '%s' is not host:port\n", s_program, name, value);
        return -1;
    }
    return 0;
}

static int
s_validate (funnel_config_t *self)
{
    const char *level = s_lookup (self, "log/level");
    funnel_log_level_t parsed;
    if (level && funnel_log_level_parse (level, &parsed)) {
        fprintf (stderr, "%s: log/level: '%s' is not error, warn, info or debug\n",
                 s_program, level);
        return -1;
    }
    const char *format = s_lookup (self, "log/format");
    funnel_log_format_t log_format = FUNNEL_LOG_TEXT;
    if (format && funnel_log_format_parse (format, &log_format)) {
        fprintf (stderr, "%s: log/format: '%s' is not text or json\n", s_program, format);
        return -1;
    }
    //  Applied here, so every program that loads a config logs as it says
    funnel_log_set_format (log_format);
    //  Every section, not just ours: we connect to the upstreams' endpoints
    for (zconfig_t *section = zconfig_child (self->root); section;
         section = zconfig_next (section))
        if (s_check_section (section))
            return -1;
    return 0;
}


//  --------------------------------------------------------------------------
//  Public API

funnel_config_t *
funnel_config_load (int argc, char **argv, const funnel_config_about_t *about,
                    funnel_config_status_t *status)
{
    assert (about && about->service && status);
    s_set_program (about->service);
    flags_t flags = { NULL, NULL, 0 };
    *status = s_parse_flags (argc, argv, about, &flags);
    if (*status != FUNNEL_CONFIG_OK) {
        s_flags_free (&flags);
        return NULL;
    }
    *status = s_check_environment (about->service);
    if (*status != FUNNEL_CONFIG_OK) {
        s_flags_free (&flags);
        return NULL;
    }
    const char *file = flags.config_file ? flags.config_file : s_getenv ("FUNNEL_CONFIG");
    zconfig_t *root = file ? s_load_file (file) : zconfig_new ("root", NULL);
    funnel_config_t *self = root ? s_new (root, about->service) : NULL;
    if (self && file && !(self->file = strdup (file)))
        funnel_config_destroy (&self);
    if (self && s_apply_environment (self) == 0 && s_apply_flags (self, &flags) == 0) {
        s_fill_defaults (self);
        if (s_validate (self))
            funnel_config_destroy (&self);
    }
    else
    if (self) {
        fprintf (stderr, "%s: out of memory\n", s_program);
        funnel_config_destroy (&self);
    }
    s_flags_free (&flags);
    *status = self ? FUNNEL_CONFIG_OK : FUNNEL_CONFIG_EXIT_USAGE;
    return self;
}

funnel_config_t *
funnel_config_from_text (const char *zpl, const char *service)
{
    assert (zpl && service);
    s_set_program (service);
    zconfig_t *root = zconfig_str_load (zpl);
    if (!root) {
        log_error ("config: not valid ZPL (see the zconfig error for the line)");
        return NULL;
    }
    funnel_config_t *self = s_new (root, service);
    if (self) {
        s_fill_defaults (self);
        if (s_validate (self))
            funnel_config_destroy (&self);
    }
    return self;
}

void
funnel_config_destroy (funnel_config_t **self_p)
{
    assert (self_p);
    funnel_config_t *self = *self_p;
    if (self) {
        zconfig_destroy (&self->root);
        zhashx_destroy (&self->known);
        for (int i = 0; i < self->set_count; i++)
            free (self->set_paths [i]);
        free (self->set_paths);
        free (self->file);
        free (self->service);
        free (self);
        *self_p = NULL;
    }
}

const char *
funnel_config_service (funnel_config_t *self)
{
    assert (self);
    return self->service;
}

static void
s_record (funnel_config_t *self, const char *path)
{
    if (self->recording)
        zhashx_insert (self->known, *path == '/' ? path + 1 : path, (void *) 1);
}

const char *
funnel_config_get (funnel_config_t *self, const char *path, const char *default_value)
{
    assert (self && path);
    s_record (self, path);
    const char *value = s_lookup (self, path);
    return value ? value : default_value;
}

static bool
s_parse_int (const char *text, int64_t *value)
{
    const char *digits = (*text == '-' || *text == '+') ? text + 1 : text;
    if (!isdigit ((unsigned char) *digits))
        return false;           //  strtoll would skip spaces and accept ""
    char *end;
    errno = 0;
    long long parsed = strtoll (text, &end, 10);
    if (errno || *end)
        return false;
    *value = parsed;
    return true;
}

static bool
s_parse_num (const char *text, double *value)
{
    //  Plain decimal only: no spaces, hex, inf or nan that strtod accepts
    if (!*text || text [strspn (text, "0123456789+-.eE")])
        return false;
    char *end;
    errno = 0;
    double parsed = strtod (text, &end);
    if (errno || *end || !isfinite (parsed))
        return false;
    *value = parsed;
    return true;
}

static bool
s_parse_bool (const char *text, bool *value)
{
    const char *yes [] = { "true", "yes", "1" };
    const char *no [] = { "false", "no", "0" };
    for (size_t i = 0; i < 3; i++) {
        if (strcasecmp (text, yes [i]) == 0) {
            *value = true;
            return true;
        }
        if (strcasecmp (text, no [i]) == 0) {
            *value = false;
            return true;
        }
    }
    return false;
}

int
funnel_config_int (funnel_config_t *self, const char *path, int64_t default_value, int64_t *value)
{
    const char *text = funnel_config_get (self, path, NULL);
    if (!text) {
        *value = default_value;
        return 0;
    }
    if (s_parse_int (text, value))
        return 0;
    log_error ("config %s: '%s' is not an integer", path, text);
    return -1;
}

int
funnel_config_num (funnel_config_t *self, const char *path, double default_value, double *value)
{
    const char *text = funnel_config_get (self, path, NULL);
    if (!text) {
        *value = default_value;
        return 0;
    }
    if (s_parse_num (text, value))
        return 0;
    log_error ("config %s: '%s' is not a number", path, text);
    return -1;
}

int
funnel_config_bool (funnel_config_t *self, const char *path, bool default_value, bool *value)
{
    const char *text = funnel_config_get (self, path, NULL);
    if (!text) {
        *value = default_value;
        return 0;
    }
    if (s_parse_bool (text, value))
        return 0;
    log_error ("config %s: '%s' is not a boolean (true/false, yes/no, 1/0)", path, text);
    return -1;
}

const char *
funnel_config_endpoint (funnel_config_t *self, const char *service, const char *kind)
{
    assert (self && service && kind);
    char path [256];
    if ((size_t) snprintf (path, sizeof path, "%s/%s", service, kind) >= sizeof path)
        return NULL;
    return funnel_config_get (self, path, s_default_of (path));
}

const char *
funnel_config_redis_url (funnel_config_t *self, const char *service)
{
    assert (self && service);
    char path [256];
    const char *url = NULL;
    if ((size_t) snprintf (path, sizeof path, "%s/redis", service) < sizeof path)
        url = funnel_config_get (self, path, NULL);
    if (!url || !*url)
        url = funnel_config_get (self, "redis/url", NULL);
    return url && *url ? url : DEFAULT_REDIS_URL;
}

//  Returns how many names it filled (never more than max), so a caller's
//  loop cannot run past its array; a longer list is logged as truncated.
int
funnel_config_children (funnel_config_t *self, const char *path,
                        const char **names, int max)
{
    assert (self && names);
    bool top = !path || !*path || strcmp (path, "/") == 0;
    if (!top)
        s_record (self, path);
    zconfig_t *section = top ? self->root : zconfig_locate (self->root, path);
    int count = 0;
    for (zconfig_t *child = section ? zconfig_child (section) : NULL; child;
         child = zconfig_next (child)) {
        if (count >= max) {
            log_warn ("config %s: more than %d entries, ignoring the rest",
                      top ? "/" : path, max);
            break;
        }
        names [count++] = zconfig_name (child);
        if (!top) {
            char *child_path = s_path_join (path, zconfig_name (child));
            if (child_path)
                s_record (self, child_path);
            free (child_path);
        }
    }
    return count;
}

static bool
s_in (const char *const *list, const char *name)
{
    for (; *list; list++)
        if (streq (*list, name))
            return true;
    return false;
}

static bool
s_known_section (funnel_config_t *self, const char *name)
{
    if (s_in (s_sections, name) || streq (name, self->service))
        return true;
    size_t length = strlen (name);
    for (void *item = zhashx_first (self->known); item; item = zhashx_next (self->known)) {
        const char *path = (const char *) zhashx_cursor (self->known);
        if (strncmp (path, name, length) == 0 && (path [length] == '/' || !path [length]))
            return true;
    }
    return false;
}

static bool
s_known_key (funnel_config_t *self, const char *path)
{
    return zhashx_lookup (self->known, path) || s_in (s_global_keys, path)
        || s_default_of (path);     //  Filled in by us, read or not
}

//  The known key (or section, when path has no '/') nearest to path.
static const char *
s_nearest (funnel_config_t *self, const char *path)
{
    const char *nearest = NULL;
    size_t best = SIZE_MAX;
    bool section = !strchr (path, '/');
    for (const char *const *known = section ? s_sections : s_global_keys; *known; known++)
        if (s_distance (path, *known) < best) {
            best = s_distance (path, *known);
            nearest = *known;
        }
    if (section)
        return nearest;
    for (void *item = zhashx_first (self->known); item; item = zhashx_next (self->known)) {
        const char *known = (const char *) zhashx_cursor (self->known);
        size_t distance = s_distance (path, known);
        if (distance < best) {
            best = distance;
            nearest = known;
        }
    }
    return nearest;
}

//  Where a key came from, for the message.
static const char *
s_origin (funnel_config_t *self, const char *path, char *buffer, size_t size)
{
    size_t length = strlen (path);
    for (int i = self->set_count - 1; i >= 0; i--)
        if (strncmp (self->set_paths [i], path, length) == 0
        &&  (self->set_paths [i][length] == 0 || self->set_paths [i][length] == '/'))
            return "from the command line";
    for (size_t i = 0; i < sizeof s_environment / sizeof s_environment [0]; i++) {
        char *env_path = s_environment [i].own
                       ? s_path_join (self->service, s_environment [i].key)
                       : strdup (s_environment [i].key);
        bool match = env_path && streq (env_path, path) && s_getenv (s_environment [i].name);
        free (env_path);
        if (match) {
            snprintf (buffer, size, "from %s", s_environment [i].name);
            return buffer;
        }
    }
    snprintf (buffer, size, "in %s", self->file ? self->file : "the topology");
    return buffer;
}

static int
s_unknown (funnel_config_t *self, const char *what, const char *path)
{
    char origin [300];
    const char *nearest = s_nearest (self, path);
    fprintf (stderr, "%s: unknown %s '%s' (%s)%s%s%s\n", s_program, what, path,
             s_origin (self, path, origin, sizeof origin),
             nearest ? "; did you mean '" : "", nearest ? nearest : "", nearest ? "'?" : "");
    return -1;
}

//  Every leaf under node (path is its own) must be a known key.
static int
s_check_keys_under (funnel_config_t *self, zconfig_t *node, const char *path)
{
    zconfig_t *child = zconfig_child (node);
    if (!child)
        return s_known_key (self, path) ? 0 : s_unknown (self, "key", path);
    for (; child; child = zconfig_next (child)) {
        char *child_path = s_path_join (path, zconfig_name (child));
        int rc = child_path ? s_check_keys_under (self, child, child_path) : -1;
        free (child_path);
        if (rc)
            return rc;
    }
    return 0;
}

int
funnel_config_check_keys (funnel_config_t *self)
{
    assert (self);
    self->recording = false;
    //  Sections first: a misspelt section explains its keys
    zconfig_t *section;
    for (section = zconfig_child (self->root); section; section = zconfig_next (section))
        if (!s_known_section (self, zconfig_name (section)))
            return s_unknown (self, "section", zconfig_name (section));
    for (section = zconfig_child (self->root); section; section = zconfig_next (section)) {
        const char *name = zconfig_name (section);
        if ((streq (name, self->service) || streq (name, "redis") || streq (name, "log"))
        &&  s_check_keys_under (self, section, name))
            return -1;
    }
    return 0;
}


//  --------------------------------------------------------------------------
//  Self test

#undef NDEBUG
#include <assert.h>
#include <unistd.h>

//  Captures what a call writes to fd 1 or 2, to check messages and to keep
//  expected errors out of the test output.
typedef struct {
    int fd;
    int saved;
    FILE *file;
} capture_t;

static void
s_capture_start (capture_t *capture, int fd)
{
    fflush (stdout);
    fflush (stderr);
    capture->fd = fd;
    capture->file = tmpfile ();
    assert (capture->file);
    capture->saved = dup (fd);
    assert (capture->saved >= 0);
    dup2 (fileno (capture->file), fd);
}

//  Returns the captured text (caller frees); echoes it when verbose.
static char *
s_capture_end (capture_t *capture, bool verbose)
{
    fflush (stdout);
    fflush (stderr);
    dup2 (capture->saved, capture->fd);
    close (capture->saved);
    long size = ftell (capture->file);
    assert (size >= 0);
    char *text = calloc (1, (size_t) size + 1);
    assert (text);
    rewind (capture->file);
    size_t got = fread (text, 1, (size_t) size, capture->file);
    assert (got == (size_t) size);
    fclose (capture->file);
    if (verbose)
        fprintf (stderr, "%s", text);
    return text;
}

//  Loads with argv (NULL-terminated words), capturing both outputs.
static funnel_config_t *
s_test_load (const char **words, funnel_config_status_t *status,
             char **out, char **err, bool verbose)
{
    char *argv [32];
    int argc = 0;
    argv [argc++] = (char *) "funnel-leads";
    for (; words && *words; words++)
        argv [argc++] = (char *) *words;
    argv [argc] = NULL;
    funnel_config_about_t about = { "leads", "Scores and routes leads.", "Rules: see proto/leads.md" };
    capture_t capture_out, capture_err;
    s_capture_start (&capture_out, 1);
    s_capture_start (&capture_err, 2);
    funnel_config_t *config = funnel_config_load (argc, argv, &about, status);
    char *err_text = s_capture_end (&capture_err, verbose);
    char *out_text = s_capture_end (&capture_out, verbose);
    if (out)
        *out = out_text;
    else
        free (out_text);
    if (err)
        *err = err_text;
    else
        free (err_text);
    return config;
}

static void
s_test_usage_error (const char **words, const char *expected, bool verbose)
{
    funnel_config_status_t status;
    char *err;
    funnel_config_t *config = s_test_load (words, &status, NULL, &err, verbose);
    assert (!config);
    assert (status == FUNNEL_CONFIG_EXIT_USAGE);
    assert (strstr (err, expected));
    free (err);
}

static void
s_test_defaults (bool verbose)
{
    funnel_config_status_t status;
    funnel_config_t *config = s_test_load (NULL, &status, NULL, NULL, verbose);
    assert (config && status == FUNNEL_CONFIG_OK);
    assert (streq (funnel_config_service (config), "leads"));
    assert (streq (funnel_config_endpoint (config, "campaign", "api"), "tcp://127.0.0.1:7101"));
    assert (streq (funnel_config_endpoint (config, "campaign", "pub"), "tcp://127.0.0.1:7102"));
    assert (streq (funnel_config_endpoint (config, "leads", "api"), "tcp://127.0.0.1:7111"));
    assert (streq (funnel_config_endpoint (config, "leads", "pub"), "tcp://127.0.0.1:7112"));
    assert (streq (funnel_config_endpoint (config, "sales", "api"), "tcp://127.0.0.1:7121"));
    assert (streq (funnel_config_endpoint (config, "sales", "pub"), "tcp://127.0.0.1:7122"));
    assert (streq (funnel_config_endpoint (config, "retention", "api"), "tcp://127.0.0.1:7131"));
    assert (streq (funnel_config_endpoint (config, "retention", "pub"), "tcp://127.0.0.1:7132"));
    assert (streq (funnel_config_endpoint (config, "monitor", "http"), "127.0.0.1:7140"));
    assert (streq (funnel_config_endpoint (config, "monitor", "pub"), "tcp://127.0.0.1:7142"));
    assert (streq (funnel_config_endpoint (config, "gateway", "http"), "127.0.0.1:7150"));
    assert (funnel_config_endpoint (config, "monitor", "api") == NULL);
    assert (funnel_config_endpoint (config, "nosuch", "api") == NULL);
    assert (streq (funnel_config_redis_url (config, "leads"), DEFAULT_REDIS_URL));
    assert (streq (funnel_config_get (config, "log/level", "info"), "info"));
    assert (streq (funnel_config_get (config, "leads/rules/mql", "dflt"), "dflt"));
    funnel_config_destroy (&config);
    assert (config == NULL);
    funnel_config_destroy (&config);
}

static void
s_test_from_text (void)
{
    funnel_config_t *config = funnel_config_from_text (
        "redis\n"
        "    url = \"redis://10.0.0.1:6379/3\"\n"
        "sales\n"
        "    redis = \"redis://10.0.0.9/1\"\n"
        "leads\n"
        "    api = \"tcp://*:9111\"\n"
        "    rules\n"
        "        mql = 40\n"
        "        ratio = 0.5\n"
        "        on = yes\n"
        "        neg = -7\n"
        "        bad_int = 40x\n"
        "        bad_num = nan\n"
        "        bad_bool = maybe\n"
        "        big = 99999999999999999999\n"
        "        empty = \"\"\n"
        "    reps\n"
        "        zoe = 1\n"
        "        adam = 2\n"
        "        mia = 3\n", "leads");
    assert (config);
    assert (streq (funnel_config_endpoint (config, "leads", "api"), "tcp://*:9111"));
    assert (streq (funnel_config_endpoint (config, "leads", "pub"), "tcp://127.0.0.1:7112"));

    //  Redis URL fallback per service: own key, then redis/url
    assert (streq (funnel_config_redis_url (config, "sales"), "redis://10.0.0.9/1"));
    assert (streq (funnel_config_redis_url (config, "leads"), "redis://10.0.0.1:6379/3"));
    assert (streq (funnel_config_redis_url (config, "campaign"), "redis://10.0.0.1:6379/3"));

    int64_t integer = 5;
    assert (funnel_config_int (config, "leads/rules/mql", 0, &integer) == 0 && integer == 40);
    assert (funnel_config_int (config, "leads/rules/neg", 0, &integer) == 0 && integer == -7);
    assert (funnel_config_int (config, "leads/rules/none", 12, &integer) == 0 && integer == 12);
    double number = 0;
    assert (funnel_config_num (config, "leads/rules/ratio", 0, &number) == 0 && number == 0.5);
    assert (funnel_config_num (config, "leads/rules/mql", 0, &number) == 0 && number == 40);
    assert (funnel_config_num (config, "leads/rules/none", 1.5, &number) == 0 && number == 1.5);
    bool flag = false;
    assert (funnel_config_bool (config, "leads/rules/on", false, &flag) == 0 && flag);
    assert (funnel_config_bool (config, "leads/rules/none", true, &flag) == 0 && flag);
    assert (streq (funnel_config_get (config, "leads/rules/empty", "x"), ""));
    //  A section has no value: it reads as unset
    assert (streq (funnel_config_get (config, "leads/rules", "x"), "x"));

    //  Malformed values fail and leave the value untouched; the log names the key
    capture_t capture;
    s_capture_start (&capture, 2);
    integer = 5;
    number = 5;
    flag = true;
    assert (funnel_config_int (config, "leads/rules/bad_int", 0, &integer) == -1 && integer == 5);
    assert (funnel_config_int (config, "leads/rules/big", 0, &integer) == -1 && integer == 5);
    assert (funnel_config_int (config, "leads/rules/ratio", 0, &integer) == -1 && integer == 5);
    assert (funnel_config_int (config, "leads/rules/empty", 0, &integer) == -1 && integer == 5);
    assert (funnel_config_num (config, "leads/rules/bad_num", 0, &number) == -1 && number == 5);
    assert (funnel_config_num (config, "leads/rules/bad_int", 0, &number) == -1 && number == 5);
    assert (funnel_config_bool (config, "leads/rules/bad_bool", false, &flag) == -1 && flag);
    assert (funnel_config_bool (config, "leads/rules/mql", false, &flag) == -1 && flag);
    char *err = s_capture_end (&capture, false);
    assert (strstr (err, "leads/rules/bad_int"));
    assert (strstr (err, "leads/rules/bad_num"));
    assert (strstr (err, "leads/rules/bad_bool"));
    free (err);

    //  Children, in file order, capped at max
    const char *names [8];
    assert (funnel_config_children (config, "leads/reps", names, 8) == 3);
    assert (streq (names [0], "zoe") && streq (names [1], "adam") && streq (names [2], "mia"));
    s_capture_start (&capture, 2);
    assert (funnel_config_children (config, "leads/reps", names, 2) == 2);
    free (s_capture_end (&capture, false));
    assert (funnel_config_children (config, "leads/nosuch", names, 8) == 0);
    assert (funnel_config_children (config, "leads/reps/zoe", names, 8) == 0);
    int sections = funnel_config_children (config, "", names, 8);
    assert (sections >= 3 && streq (names [0], "redis") && streq (names [1], "sales"));
    funnel_config_destroy (&config);

    //  Bad text and bad endpoints are refused (czmq logs on stdout)
    capture_t capture_out;
    s_capture_start (&capture_out, 1);
    s_capture_start (&capture, 2);
    assert (!funnel_config_from_text ("a\n    b = 1\n  c = 2\n", "leads"));
    assert (!funnel_config_from_text ("campaign\n    pub = \"127.0.0.1:7102\"\n", "leads"));
    err = s_capture_end (&capture, false);
    free (s_capture_end (&capture_out, false));
    assert (strstr (err, "not valid ZPL"));
    assert (strstr (err, "campaign/pub"));
    free (err);
}

//  Writes text to a fresh file in a fresh temp dir; returns its path.
static char *
s_test_write_file (char *dir, const char *text)
{
    assert (mkdtemp (dir));
    char *path = s_path_join (dir, "funnel.cfg");
    assert (path);
    FILE *file = fopen (path, "w");
    assert (file);
    assert (fputs (text, file) >= 0);
    assert (fclose (file) == 0);
    return path;
}

static void
s_test_file_and_precedence (bool verbose)
{
    char dir [] = "/tmp/funnel-config-test.XXXXXX";
    char *path = s_test_write_file (dir,
        "#   Test topology\n"
        "redis\n"
        "    url = \"redis://127.0.0.1:6390/0\"\n"
        "log\n"
        "    level = warn\n"
        "leads\n"
        "    api = \"tcp://127.0.0.1:9001\"\n"
        "    pub = \"tcp://127.0.0.1:9002\"\n"
        "    redis = \"redis://file/1\"\n"
        "    rules\n"
        "        mql = 40\n");
    funnel_config_status_t status;

    //  The file alone
    const char *file_only [] = { "-c", path, NULL };
    funnel_config_t *config = s_test_load (file_only, &status, NULL, NULL, verbose);
    assert (config && status == FUNNEL_CONFIG_OK);
    assert (streq (funnel_config_endpoint (config, "leads", "api"), "tcp://127.0.0.1:9001"));
    assert (streq (funnel_config_endpoint (config, "sales", "api"), "tcp://127.0.0.1:7121"));
    assert (streq (funnel_config_redis_url (config, "leads"), "redis://file/1"));
    assert (streq (funnel_config_redis_url (config, "sales"), "redis://127.0.0.1:6390/0"));
    assert (streq (funnel_config_get (config, "log/level", "info"), "warn"));
    funnel_config_destroy (&config);

    //  The environment beats the file (and names the file itself)
    setenv ("FUNNEL_CONFIG", path, 1);
    setenv ("FUNNEL_API", "tcp://127.0.0.1:9101", 1);
    setenv ("FUNNEL_PUB", "", 1);               //  Empty = not given
    setenv ("FUNNEL_REDIS_URL", "redis://env/2", 1);
    setenv ("FUNNEL_LOG_LEVEL", "debug", 1);
    config = s_test_load (NULL, &status, NULL, NULL, verbose);
    assert (config && status == FUNNEL_CONFIG_OK);
    assert (streq (funnel_config_endpoint (config, "leads", "api"), "tcp://127.0.0.1:9101"));
    assert (streq (funnel_config_endpoint (config, "leads", "pub"), "tcp://127.0.0.1:9002"));
    assert (streq (funnel_config_redis_url (config, "leads"), "redis://env/2"));
    assert (streq (funnel_config_get (config, "log/level", "info"), "debug"));
    assert (streq (funnel_config_get (config, "leads/rules/mql", "0"), "40"));
    funnel_config_destroy (&config);

    //  Flags beat the environment, whatever their order; --set any key
    const char *flags [] = {
        "--api", "tcp://127.0.0.1:9201", "--log-level=error", "--redis", "redis://flag/3",
        "--set", "leads/rules/mql=55", "--set", "leads/rules/new/deep=x=y",
        "--set", "sales/api=ipc:///tmp/sales.ipc", "--pub=inproc://leads-pub", NULL
    };
    config = s_test_load (flags, &status, NULL, NULL, verbose);
    assert (config && status == FUNNEL_CONFIG_OK);
    assert (streq (funnel_config_endpoint (config, "leads", "api"), "tcp://127.0.0.1:9201"));
    assert (streq (funnel_config_endpoint (config, "leads", "pub"), "inproc://leads-pub"));
    assert (streq (funnel_config_endpoint (config, "sales", "api"), "ipc:///tmp/sales.ipc"));
    assert (streq (funnel_config_redis_url (config, "leads"), "redis://flag/3"));
    assert (streq (funnel_config_get (config, "log/level", "info"), "error"));
    assert (streq (funnel_config_get (config, "leads/rules/mql", "0"), "55"));
    assert (streq (funnel_config_get (config, "leads/rules/new/deep", "0"), "x=y"));
    funnel_config_destroy (&config);

    //  -c beats FUNNEL_CONFIG; a later flag beats an earlier one
    const char *twice [] = { "--set", "leads/api=tcp://a:1", "--api", "tcp://b:2", "-c", "/nonexistent/x", NULL };
    s_test_usage_error (twice, "cannot read config /nonexistent/x: No such file", verbose);
    const char *order [] = { "--api", "tcp://b:2", "--set", "leads/api=tcp://a:1", NULL };
    config = s_test_load (order, &status, NULL, NULL, verbose);
    assert (config && streq (funnel_config_endpoint (config, "leads", "api"), "tcp://a:1"));
    funnel_config_destroy (&config);

    //  A bad environment value is a usage error too
    setenv ("FUNNEL_LOG_LEVEL", "loud", 1);
    s_test_usage_error (NULL, "log/level", verbose);
    setenv ("FUNNEL_API", "localhost:1", 1);
    setenv ("FUNNEL_LOG_LEVEL", "info", 1);
    s_test_usage_error (NULL, "leads/api", verbose);
    for (size_t i = 0; i < sizeof s_environment / sizeof s_environment [0]; i++)
        unsetenv (s_environment [i].name);
    unsetenv ("FUNNEL_CONFIG");

    //  Unreadable and unparsable files
    const char *a_dir [] = { "-c", dir, NULL };
    s_test_usage_error (a_dir, "not a regular file", verbose);
    FILE *file = fopen (path, "w");
    assert (file);
    fputs ("leads\n    api = \"tcp://x:1\n", file);
    fclose (file);
    const char *broken [] = { "--config", path, NULL };
    s_test_usage_error (broken, "not valid ZPL", verbose);
    //  An empty file is all defaults
    file = fopen (path, "w");
    assert (file);
    fclose (file);
    config = s_test_load (broken, &status, NULL, NULL, verbose);
    assert (config && streq (funnel_config_endpoint (config, "leads", "api"), "tcp://127.0.0.1:7111"));
    funnel_config_destroy (&config);

    assert (unlink (path) == 0);
    assert (rmdir (dir) == 0);
    free (path);
}

static void
s_test_flags (bool verbose)
{
    funnel_config_status_t status;
    char *out;
    const char *help [] = { "--api", "tcp://x:1", "-h", NULL };
    assert (!s_test_load (help, &status, &out, NULL, verbose));
    assert (status == FUNNEL_CONFIG_EXIT_OK);
    assert (strstr (out, "Usage: funnel-leads"));
    assert (strstr (out, "Scores and routes leads."));
    assert (strstr (out, "--set PATH=VALUE"));
    assert (strstr (out, "FUNNEL_LOG_LEVEL"));
    assert (strstr (out, "tcp://127.0.0.1:7111"));
    assert (strstr (out, "Rules: see proto/leads.md"));
    free (out);

    const char *version [] = { "--version", NULL };
    assert (!s_test_load (version, &status, &out, NULL, verbose));
    assert (status == FUNNEL_CONFIG_EXIT_OK);
    assert (streq (out, "funnel-leads " FUNNEL_VERSION "\n"));
    free (out);

    const char *unknown [] = { "--bogus", NULL };
    s_test_usage_error (unknown, "unknown option '--bogus'", verbose);
    const char *unknown_short [] = { "-x", NULL };
    s_test_usage_error (unknown_short, "unknown option '-x'", verbose);
    const char *missing [] = { "--api", NULL };
    s_test_usage_error (missing, "option '--api' needs an argument", verbose);
    const char *missing_short [] = { "-c", NULL };
    s_test_usage_error (missing_short, "option '-c' needs an argument", verbose);
    const char *level [] = { "--log-level", "loud", NULL };
    s_test_usage_error (level, "--log-level 'loud'", verbose);
    const char *set [] = { "--set", "leads/rules/mql", NULL };
    s_test_usage_error (set, "expected PATH=VALUE", verbose);
    const char *set_path [] = { "--set", "leads//mql=1", NULL };
    s_test_usage_error (set_path, "bad path", verbose);
    const char *set_empty [] = { "--set", "=1", NULL };
    s_test_usage_error (set_empty, "bad path", verbose);
    const char *operand [] = { "extra", NULL };
    s_test_usage_error (operand, "unexpected argument 'extra'", verbose);
    const char *endpoint [] = { "--pub", "127.0.0.1:7112", NULL };
    s_test_usage_error (endpoint, "leads/pub", verbose);
    const char *bare [] = { "--set", "sales/api=tcp://", NULL };
    s_test_usage_error (bare, "sales/api", verbose);
    const char *http [] = { "--set", "monitor/http=localhost", NULL };
    s_test_usage_error (http, "monitor/http", verbose);
    const char *http_port [] = { "--http", "127.0.0.1:70000", NULL };
    s_test_usage_error (http_port, "leads/http", verbose);
    const char *usage_hint [] = { "--bogus", NULL };
    s_test_usage_error (usage_hint, "Try 'funnel-leads --help'", verbose);
}

//  What a leads service would read of the test file below.
static void
s_test_read_leads (funnel_config_t *config)
{
    int64_t value;
    const char *names [4];
    assert (funnel_config_int (config, "leads/rules/mql", 0, &value) == 0);
    assert (funnel_config_children (config, "leads/reps", names, 4) == 2);
    for (int i = 0; i < 2; i++) {
        char path [64];
        snprintf (path, sizeof path, "leads/reps/%s/capacity", names [i]);
        assert (funnel_config_int (config, path, 0, &value) == 0);
    }
    funnel_config_endpoint (config, "leads", "api");
}

static void
s_test_strict_keys (bool verbose)
{
    char dir [] = "/tmp/funnel-config-test.XXXXXX";
    char *path = s_test_write_file (dir,
        "redis\n"
        "    url = \"redis://127.0.0.1:6390/0\"\n"
        "leads\n"
        "    rules\n"
        "        mql = 40\n"
        "    reps\n"
        "        ana\n"
        "            capacity = 5\n"
        "        ben\n"
        "sales\n"
        "    anything = 1\n");
    funnel_config_status_t status;
    //  What leads reads: all known, other services' keys are theirs to check
    const char *file_only [] = { "-c", path, NULL };
    funnel_config_t *config = s_test_load (file_only, &status, NULL, NULL, verbose);
    assert (config);
    s_test_read_leads (config);
    assert (funnel_config_check_keys (config) == 0);
    funnel_config_destroy (&config);

    //  A typo'd key from --set: named, with the nearest
    const char *typo [] = { "-c", path, "--set", "leads/rules/mqll=40", NULL };
    config = s_test_load (typo, &status, NULL, NULL, verbose);
    assert (config);
    s_test_read_leads (config);
    capture_t capture;
    s_capture_start (&capture, 2);
    assert (funnel_config_check_keys (config) == -1);
    char *err = s_capture_end (&capture, verbose);
    assert (strstr (err, "unknown key 'leads/rules/mqll' (from the command line); "
                         "did you mean 'leads/rules/mql'?"));
    free (err);
    funnel_config_destroy (&config);

    //  A reader with the typo: the file's key is then the unknown one
    config = s_test_load (file_only, &status, NULL, NULL, verbose);
    assert (config);
    int64_t value;
    assert (funnel_config_int (config, "leads/rules/mql", 0, &value) == 0);
    assert (funnel_config_int (config, "leads/reps/ana/capacty", 0, &value) == 0);
    const char *names [4];
    assert (funnel_config_children (config, "leads/reps", names, 4) == 2);
    s_capture_start (&capture, 2);
    assert (funnel_config_check_keys (config) == -1);
    err = s_capture_end (&capture, verbose);
    assert (strstr (err, "unknown key 'leads/reps/ana/capacity' (in /tmp/funnel-config-test."));
    assert (strstr (err, "did you mean 'leads/reps/ana/capacty'?"));
    free (err);
    funnel_config_destroy (&config);

    //  An unknown section, and a key in redis
    const char *section [] = { "-c", path, "--set", "retension/api=tcp://x:1", NULL };
    config = s_test_load (section, &status, NULL, NULL, verbose);
    assert (config);
    s_capture_start (&capture, 2);
    assert (funnel_config_check_keys (config) == -1);
    err = s_capture_end (&capture, verbose);
    assert (strstr (err, "unknown section 'retension' (from the command line); "
                         "did you mean 'retention'?"));
    free (err);
    funnel_config_destroy (&config);
    const char *redis [] = { "-c", path, "--set", "redis/uri=redis://x", NULL };
    config = s_test_load (redis, &status, NULL, NULL, verbose);
    assert (config);
    s_test_read_leads (config);
    s_capture_start (&capture, 2);
    assert (funnel_config_check_keys (config) == -1);
    err = s_capture_end (&capture, verbose);
    assert (strstr (err, "unknown key 'redis/uri'") && strstr (err, "'redis/url'?"));
    free (err);
    funnel_config_destroy (&config);

    //  The environment: a key it sets that leads does not read, and a typo
    setenv ("FUNNEL_HTTP", "127.0.0.1:8080", 1);
    config = s_test_load (file_only, &status, NULL, NULL, verbose);
    assert (config);
    s_test_read_leads (config);
    s_capture_start (&capture, 2);
    assert (funnel_config_check_keys (config) == -1);
    err = s_capture_end (&capture, verbose);
    assert (strstr (err, "unknown key 'leads/http' (from FUNNEL_HTTP)"));
    free (err);
    funnel_config_destroy (&config);
    unsetenv ("FUNNEL_HTTP");
    setenv ("FUNNEL_LOG_LEVL", "debug", 1);
    s_test_usage_error (file_only, "unknown environment variable FUNNEL_LOG_LEVL; "
                        "did you mean FUNNEL_LOG_LEVEL?", verbose);
    unsetenv ("FUNNEL_LOG_LEVL");
    char *saved = getenv ("FUNNEL_PORT_BASE") ? strdup (getenv ("FUNNEL_PORT_BASE")) : NULL;
    setenv ("FUNNEL_PORT_BASE", "7300", 1);       //  The launcher's: left alone
    config = s_test_load (file_only, &status, NULL, NULL, verbose);
    assert (config);
    funnel_config_destroy (&config);
    if (saved)
        setenv ("FUNNEL_PORT_BASE", saved, 1);
    else
        unsetenv ("FUNNEL_PORT_BASE");
    free (saved);

    assert (unlink (path) == 0);
    assert (rmdir (dir) == 0);
    free (path);
}

void
funnel_config_test (bool verbose)
{
    if (verbose)
        printf ("\n");
    //  The caller's environment must not change what the tests see
    for (size_t i = 0; i < sizeof s_environment / sizeof s_environment [0]; i++)
        unsetenv (s_environment [i].name);
    unsetenv ("FUNNEL_CONFIG");

    s_test_defaults (verbose);
    s_test_from_text ();
    s_test_file_and_precedence (verbose);
    s_test_flags (verbose);
    s_test_strict_keys (verbose);
}
