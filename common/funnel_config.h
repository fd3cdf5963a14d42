/*  funnel_config — the topology file (ZPL), FUNNEL_* environment and flags.

    One ZPL file describes the whole deployment (proto/README.md); each daemon
    reads its own section and its upstreams'. Precedence, lowest first:
    built-in defaults, the file, environment, command-line flags.

    Flags every daemon accepts:
      -c, --config FILE     topology file (env FUNNEL_CONFIG)
      --redis URL           this service's Redis (env FUNNEL_REDIS_URL)
      --api ENDPOINT        this service's API endpoint (env FUNNEL_API)
      --pub ENDPOINT        this service's PUB endpoint (env FUNNEL_PUB)
      --http ADDR           monitor, gateway: host:port (env FUNNEL_HTTP)
      --set PATH=VALUE      set any key, e.g. --set leads/rules/mql=40
      --log-level LEVEL     error|warn|info|debug (env FUNNEL_LOG_LEVEL)
      --log-format FORMAT   text or json, one object a line (env FUNNEL_LOG_FORMAT)
      -h, --help            usage and exit 0;  -V, --version
    Any bad file, flag or value: a message on stderr and exit code 2; so is
    an unknown section or key (funnel_config_check_keys) and a FUNNEL_*
    variable within two edits of one above (a typo: FUNNEL_LOG_LEVL).
*/
#ifndef FUNNEL_CONFIG_H_INCLUDED
#define FUNNEL_CONFIG_H_INCLUDED

#include <stdbool.h>
#include <stdint.h>

typedef struct _funnel_config_t funnel_config_t;

//  Extra flags a daemon documents in --help (lines appended to usage).
typedef struct {
    const char *service;        //  "leads"; also the section read for --api etc.
    const char *summary;        //  One line for --help
    const char *extra_help;     //  More lines for --help, or NULL
} funnel_config_about_t;

//  The name the loader's messages start with, for a program that is not a
//  daemon (funnelctl); by default "funnel-<service>". Call before loading.
void
    funnel_config_set_program (const char *name);

typedef enum {
    FUNNEL_CONFIG_OK = 0,       //  Run
    FUNNEL_CONFIG_EXIT_OK,      //  --help / --version printed: exit 0
    FUNNEL_CONFIG_EXIT_USAGE    //  Error printed on stderr: exit 2
} funnel_config_status_t;

//  Parses argv, loads the file and applies env and flags. *status says what
//  the caller must do; the result is NULL unless status is FUNNEL_CONFIG_OK.
funnel_config_t *
    funnel_config_load (int argc, char **argv, const funnel_config_about_t *about,
                        funnel_config_status_t *status);

//  Builds a config from ZPL text (tests); NULL and a message on error.
funnel_config_t *
    funnel_config_from_text (const char *zpl, const char *service);

void
    funnel_config_destroy (funnel_config_t **self_p);

//  The service this config was loaded for.
const char *
    funnel_config_service (funnel_config_t *self);

//  Any key by path ("leads/rules/mql"); default_value if unset.
const char *
    funnel_config_get (funnel_config_t *self, const char *path, const char *default_value);

//  Integer / number / boolean key; on a malformed value, logs an error
//  naming the key and returns -1 (value untouched), else 0.
int funnel_config_int (funnel_config_t *self, const char *path, int64_t default_value, int64_t *value);
int funnel_config_num (funnel_config_t *self, const char *path, double default_value, double *value);
int funnel_config_bool (funnel_config_t *self, const char *path, bool default_value, bool *value);

//  Endpoint of a service: kind is "api" or "pub" (or "http" for the
//  monitor); the proto/README.md defaults when the file does not say.
const char *
    funnel_config_endpoint (funnel_config_t *self, const char *service, const char *kind);

//  The Redis URL of a service: its own `redis` key, else redis/url, else
//  redis://127.0.0.1:6379/0.
const char *
    funnel_config_redis_url (funnel_config_t *self, const char *service);

//  Names of the children of a section (e.g. the reps under leads/reps), in
//  file order; returns count, fills up to max pointers valid for self's life.
int
    funnel_config_children (funnel_config_t *self, const char *path,
                            const char **names, int max);

//  Strict keys. Every lookup above records its key as known; once a program
//  has read all its settings at start, this checks the loaded tree: each
//  top-level section must be one Funnel has, and each key under the
//  program's own section, redis and log one it read (a key nobody reads
//  is a typo). An unknown one prints "funnel-leads: unknown key
//  'leads/rules/mqll' (from the command line); did you mean
//  'leads/rules/mql'?" and returns -1: exit 2. Lookups after this call are
//  not recorded (it makes the config read-only, so threads may share it).
int
    funnel_config_check_keys (funnel_config_t *self);

void
    funnel_config_test (bool verbose);

#endif
