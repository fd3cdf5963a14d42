/*  upstream_set — a partitioned upstream (its section lists instances):
    one stream per partition, each with its own seq, checkpoint and REPLAY
    (upstream_new_part), fed by one SUB socket connected to every
    instance's PUB. A live message goes to the stream of its `part`.
*/
#ifndef UPSTREAM_SET_H_INCLUDED
#define UPSTREAM_SET_H_INCLUDED

#include "upstream.h"
#include "funnel_topology.h"

typedef struct _upstream_set_t upstream_set_t;

upstream_set_t *
    upstream_set_new (const char *name, funnel_topology_t *topology,
                      const char *const *consumes, upstream_apply_fn *apply, void *arg);
void
    upstream_set_destroy (upstream_set_t **self_p);
//  The SUB socket, for the owner's poll loop.
zsock_t *
    upstream_set_sub (upstream_set_t *self);
//  The partitions' streams (as many as the upstream's partitions).
int
    upstream_set_count (upstream_set_t *self);
upstream_t *
    upstream_set_part (upstream_set_t *self, int part);
//  Reads what waits on the SUB socket (bounded) and applies it per partition.
void
    upstream_set_drain (upstream_set_t *self);
//  The most messages one drain reads (1..UPSTREAM_BATCH_MAX); each
//  partition's stream is bounded by its own upstream_batch_max.
void
    upstream_set_batch_max (upstream_set_t *self, int max);

#endif
