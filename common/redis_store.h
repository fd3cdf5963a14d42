/*  redis_store — one synchronous hiredis connection that survives Redis
    going away.

    hiredis 0.14 has no TLS and no async timeouts, a context is dead after
    any error, and redisReconnect forgets AUTH and SELECT: so one function
    does connect + AUTH + SELECT, used for the first connect and every
    reconnect, with exponential backoff (100 ms doubling to 5 s).

    URL forms (proto/wire.md, "Redis deployments"):
      redis://[[user]:password@]host[:port][/db]     default port 6379, db 0
      unix:///path/to/socket[?db=N]
      redis://[[user]:password@]h1:p1,h2:p2,...      a Redis Cluster's seed
                                                     nodes (db 0 only)
      redis+sentinel://[[user]:password@]h1:p1,h2:p2/MASTER[/db]
                                                     the primary named MASTER,
                                                     found through Sentinel
                                                     (default port 26379)

    In sentinel mode every connect asks the sentinels for the primary and
    checks ROLE on it; a READONLY reply (a demoted primary) drops the
    connection between pipelines, so the next connect finds the new one.
*/
#ifndef REDIS_STORE_H_INCLUDED
#define REDIS_STORE_H_INCLUDED

#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "funnel_error.h"

#define REDIS_URL_NODES_MAX 16

typedef enum {
    REDIS_MODE_SINGLE,          //  One server (TCP or unix socket)
    REDIS_MODE_CLUSTER,         //  Seed nodes of a Redis Cluster
    REDIS_MODE_SENTINEL         //  Sentinels that know the primary
} redis_mode_t;

typedef struct {
    char host [256];
    int port;
} redis_node_t;

typedef struct {
    bool unix_socket;
    char host [256];            //  Or the socket path; the first node
    int port;
    char user [128];            //  "" = none (AUTH password only)
    char password [256];        //  "" = no AUTH
    int db;
    redis_mode_t mode;
    int node_count;             //  Cluster seeds or sentinels (>= 1 for TCP)
    redis_node_t nodes [REDIS_URL_NODES_MAX];
    char master [128];          //  Sentinel: the primary's name
} redis_url_t;

//  Parses a URL; invalid (naming the part) on error.
int
    redis_url_parse (const char *url, redis_url_t *out, funnel_error_t *err);

//  The URL as logs may show it: the password never appears.
void
    redis_url_format (const redis_url_t *url, char *buffer, size_t size);

//  A copy of url naming one server (host:port, same user/password/db), for
//  a connection to one cluster node or to the primary a sentinel named.
void
    redis_url_single (const redis_url_t *url, const char *host, int port, redis_url_t *out);

typedef struct _redis_store_t redis_store_t;

//  Does not connect yet.
redis_store_t *
    redis_store_new (const redis_url_t *url);
void
    redis_store_destroy (redis_store_t **self_p);

//  Connects if not connected and the backoff allows; 0 when connected.
//  Logs the first failure and the recovery once each, not every retry.
//  Sentinel mode: asks the sentinels (in URL order) for the primary.
int
    redis_store_connect (redis_store_t *self);
//  False if not connected; a connection that answered READONLY (the
//  primary was demoted by a failover) is dropped here, between pipelines.
bool
    redis_store_connected (redis_store_t *self);
//  Frees the dead context; the next connect waits for the backoff.
void
    redis_store_disconnect (redis_store_t *self);
//  Successful connects so far: a caller that keeps per-connection state
//  (WATCH) sees a reconnect as a change of this number.
uint64_t
    redis_store_generation (redis_store_t *self);
//  The live context, NULL if not connected (for pipelining by callers).
redisContext *
    redis_store_context (redis_store_t *self);

//  Pipelining: callers append commands to the context (redisAppend...)
//  and read each reply here, in order; NULL on connection loss (the store
//  is then disconnected). Never mix with redis_store_command while
//  replies are pending.
redisReply *
    redis_store_recv (redis_store_t *self);

//  The command timeout (default 2000 ms), raised by a caller whose
//  commands may block longer (WAIT); applies from the next connect too.
void
    redis_store_set_timeout (redis_store_t *self, int ms);

//  Any command; NULL on connection loss. Caller frees the reply.
redisReply *
    redis_store_command (redis_store_t *self, int argc,
                         const char **argv, const size_t *argvlen);

void
    redis_store_test (bool verbose);

#endif
