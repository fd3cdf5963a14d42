/*  bench_route — batched PUBLISH to one service, each event to the instance
    that owns its partition.

    A service with `instances` (proto/README.md section 7) answers ERR
    `moved` to an event of a partition it does not own, and a batch is
    always within one instance. So the router keeps one bench_pipe per
    instance and one pending batch per instance: an event added goes to the
    pending batch of its owner (funnel_topology_event_part, the rule the
    engine applies), a full pending batch is sent as soon as its pipe has
    room. Without instances (or with one) there is one pipe and nothing is
    decoded. The caller owns the loop: it polls every pipe's socket
    (bench_route_poll_items) and calls bench_route_recv.
*/
#ifndef BENCH_ROUTE_H_INCLUDED
#define BENCH_ROUTE_H_INCLUDED

#include <czmq.h>
#include <msgpack.h>
#include <stdbool.h>
#include <stdint.h>
#include "bench_pipe.h"
#include "funnel_topology.h"

typedef struct _bench_route_t bench_route_t;

//  When bench_route_flush sends a pending batch that is not full.
typedef enum {
    BENCH_FLUSH_FULL,           //  Never: only full batches go
    BENCH_FLUSH_IDLE,           //  When its instance has nothing in flight
    BENCH_FLUSH_ALL             //  Whenever its pipe has room (no more input)
} bench_flush_t;

//  The topology stays the caller's and must outlive the router. label
//  names the pipes in errors ("campaign", "campaign (load)"). NULL when a
//  pipe cannot connect (said on stderr).
bench_route_t *
    bench_route_new (funnel_topology_t *topology, const char *svc, const char *label,
                     int batch, int window, int timeout_ms);
void
    bench_route_destroy (bench_route_t **self_p);

//  True when `events` more events fit in every instance's pending batch
//  (the next one may go to any of them; an empty one takes any number)
//  and nothing failed.
bool
    bench_route_ready (bench_route_t *self, int events);
//  Adds `events` packed event maps (body holds them back to back), all to
//  the owner of the first one's partition (e.g. a deal's offer and close);
//  sends that batch when it is full and its pipe has room. Takes the bytes
//  (body is left empty for reuse). 0, or -1 when a pipe failed.
int
    bench_route_add (bench_route_t *self, msgpack_sbuffer *body, int events);
//  Sends the pending batches that mode allows and whose pipe has room.
int
    bench_route_flush (bench_route_t *self, bench_flush_t mode);
//  Fills items with every pipe's socket (POLLIN); returns how many (at
//  most max).
int
    bench_route_poll_items (bench_route_t *self, zmq_pollitem_t *items, int max);
//  Reads every reply waiting on any pipe, then fails a pipe whose oldest
//  request waited past the timeout. 0, or -1 when a pipe failed.
int
    bench_route_recv (bench_route_t *self);
//  Flushes everything and waits for every reply, at most timeout_ms.
//  0, or -1 (failed or timed out: bench_route_error).
int
    bench_route_drain (bench_route_t *self, int timeout_ms);

//  Requests in flight, and events pending (not yet sent), over instances.
int     bench_route_inflight (bench_route_t *self);
int     bench_route_pending (bench_route_t *self);
//  Events acknowledged by OK replies, over instances; the same of one.
int64_t bench_route_acked (bench_route_t *self);
int     bench_route_count (bench_route_t *self);
int64_t bench_route_acked_at (bench_route_t *self, int index);
//  The instance's name ("" without instances).
const char *
        bench_route_name (bench_route_t *self, int index);
bool    bench_route_failed (bench_route_t *self);
//  "" until a pipe failed, then its error.
const char *
        bench_route_error (bench_route_t *self);

//  The index (funnel_topology_at) of the instance owning the event packed
//  in data/size (its first map); 0 when the service has one instance or
//  the bytes do not decode.
int
    bench_route_owner (funnel_topology_t *topology, const char *svc,
                       const char *data, size_t size);

void
    bench_route_test (bool verbose);

#endif
