/*  redis_store — one synchronous hiredis connection that survives Redis
    going away.

    hiredis 0.14 has no TLS and no async timeouts, a context is dead after
    any error, and redisReconnect forgets AUTH and SELECT: so one function
    does connect + AUTH + SELECT, used for the first connect and every
    reconnect, with exponential backoff (100 ms doubling to 5 s).

    URL forms (proto/README.md):
      redis://[[user]:password@]host[:port][/db]     default port 6379, db 0
      unix:///path/to/socket[?db=N]
*/
#ifndef REDIS_STORE_H_INCLUDED
#define REDIS_STORE_H_INCLUDED

#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "funnel_error.h"

typedef struct {
    bool unix_socket;
    char host [256];            //  Or the socket path
    int port;
    char user [128];            //  "" = none (AUTH password only)
    char password [256];        //  "" = no AUTH
    int db;
} redis_url_t;

//  Parses a URL; invalid (naming the part) on error.
int
    redis_url_parse (const char *url, redis_url_t *out, funnel_error_t *err);

typedef struct _redis_store_t redis_store_t;

//  Does not connect yet.
redis_store_t *
    redis_store_new (const redis_url_t *url);
void
    redis_store_destroy (redis_store_t **self_p);

//  Connects if not connected and the backoff allows; 0 when connected.
//  Logs the first failure and the recovery once each, not every retry.
int
    redis_store_connect (redis_store_t *self);
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

//  Any command; NULL on connection loss. Caller frees the reply.
redisReply *
    redis_store_command (redis_store_t *self, int argc,
                         const char **argv, const size_t *argvlen);

void
    redis_store_test (bool verbose);

#endif
