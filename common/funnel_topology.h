/*  funnel_topology — who owns which partition of a service (proto/README.md
    section 7, "Scale-out").

    A service's keyspace is split into `partitions` (FNV-1a-32 of the
    entity id mod partitions, funnel_partition_of). Its section may list
    instances, each with `api`, `pub` and `owns` (ranges "0-7" or
    "0-3,8-11"); every partition must be owned by exactly one. Without
    `instances`, one unnamed instance at the section's api/pub owns every
    partition. Daemons (their own section and their upstreams'), funnelctl,
    the monitor and the simulator all read it here, and route an event by
    funnel_topology_event_part, the one rule the engine applies too.
*/
#ifndef FUNNEL_TOPOLOGY_H_INCLUDED
#define FUNNEL_TOPOLOGY_H_INCLUDED

#include <msgpack.h>
#include <stdbool.h>
#include "funnel_config.h"

#define FUNNEL_INSTANCES_MAX    64

typedef struct {
    const char *name;           //  "" when the section lists no instances
    const char *api;
    const char *pub;
    bool *owns;                 //  [partitions]
    int owned;                  //  How many it owns
} funnel_instance_t;

typedef struct _funnel_topology_t funnel_topology_t;

//  Reads svc's partitions and instances from config (records the keys as
//  read). NULL after logging a bad value (a bad range, a partition owned
//  twice or by nobody, an instance without api/pub): exit 2.
funnel_topology_t *
    funnel_topology_new (funnel_config_t *config, const char *svc);
void
    funnel_topology_destroy (funnel_topology_t **self_p);

int
    funnel_topology_partitions (funnel_topology_t *self);
//  True when the section lists instances (per-partition outboxes).
bool
    funnel_topology_partitioned (funnel_topology_t *self);
int
    funnel_topology_count (funnel_topology_t *self);
const funnel_instance_t *
    funnel_topology_at (funnel_topology_t *self, int index);
//  The instance named name (NULL: none; "" or NULL name: the only one when
//  there are no instances).
const funnel_instance_t *
    funnel_topology_find (funnel_topology_t *self, const char *name);
//  The instance that owns partition part.
const funnel_instance_t *
    funnel_topology_owner (funnel_topology_t *self, int part);
//  The same as an index (funnel_topology_at): for tables per instance.
int
    funnel_topology_owner_index (funnel_topology_t *self, int part);

//  Parses "0-7" / "0-3,8-11" / "5" into owns[partitions]; -1 if malformed
//  or out of range.
int
    funnel_topology_parse_owns (const char *text, int partitions, bool *owns);

//  The entity id an event of svc is routed by: the first of the service's
//  key fields (campaign: campaign, lead; leads: lead, contact; sales:
//  deal, lead, customer; retention: customer, lead) present as a string in
//  data; NULL if none (global data: partition 0).
const char *
    funnel_topology_event_key (const char *svc, const msgpack_object *data,
                               char *buf, size_t size);
//  The partition of such an event: funnel_partition_of (key), or 0.
int
    funnel_topology_event_part (const char *svc, const msgpack_object *data,
                                int partitions);

void
    funnel_topology_test (bool verbose);

#endif
