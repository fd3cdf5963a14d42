/*  bench_pipe — batched PUBLISH to one service with several in flight.

    A DEALER with the empty delimiter (proto/wire.md) keeps up to `window`
    PUBLISH requests outstanding; the service answers in request order, so
    the replies are matched FIFO. A batch answered `unavailable` or
    `internal` is sent again with the same bytes (same ids: an applied batch
    comes back as duplicates, so the counts stay exact); any other ERR, or no
    reply within the timeout, is fatal for the benchmark (bench_pipe_failed).
    The caller owns the loop: it polls bench_pipe_sock and calls
    bench_pipe_recv when it is readable.
*/
#ifndef BENCH_PIPE_H_INCLUDED
#define BENCH_PIPE_H_INCLUDED

#include <czmq.h>
#include <msgpack.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct _bench_pipe_t bench_pipe_t;

bench_pipe_t *
    bench_pipe_new (const char *name, const char *endpoint, int window, int timeout_ms);
void
    bench_pipe_destroy (bench_pipe_t **self_p);

//  The socket to poll for replies.
zsock_t *
    bench_pipe_sock (bench_pipe_t *self);
//  True while fewer than `window` requests are in flight and nothing failed.
bool
    bench_pipe_ready (bench_pipe_t *self);
int
    bench_pipe_inflight (bench_pipe_t *self);
//  Sends a PUBLISH body of `events` events; takes the buffer's bytes (the
//  sbuffer is left empty and may be reused). 0, or -1 when failed.
int
    bench_pipe_send (bench_pipe_t *self, msgpack_sbuffer *body, int events);
//  Reads one reply (call when the socket is readable). 0, or -1 on a fatal
//  reply (bench_pipe_error says which).
int
    bench_pipe_recv (bench_pipe_t *self);
//  Fails the pipe when its oldest request has waited past the timeout.
//  0, or -1 when failed.
int
    bench_pipe_check (bench_pipe_t *self);

//  Events acknowledged by OK replies; of those, newly applied and
//  duplicates (from the replies' accepted/duplicates); batches re-sent.
int64_t bench_pipe_acked (bench_pipe_t *self);
int64_t bench_pipe_accepted (bench_pipe_t *self);
int64_t bench_pipe_duplicates (bench_pipe_t *self);
int64_t bench_pipe_resent (bench_pipe_t *self);
bool    bench_pipe_failed (bench_pipe_t *self);
//  "" until failed, then what went wrong ("leads: ERR invalid: ...").
const char *
    bench_pipe_error (bench_pipe_t *self);

//  Reads an integer (non-negative) from a msgpack map by key; -1 if absent.
int64_t
    bench_map_int (const msgpack_object *map, const char *key);

void
    bench_pipe_test (bool verbose);

#endif
