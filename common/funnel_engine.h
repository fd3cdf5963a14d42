/*  funnel_engine — a service's rules run in C in the service
    process; Redis only stores (proto/wire.md "The engine").

    Per batch (a PUBLISH request, a run of upstream events, the due timers):
      1. one pipelined round trip reads what the cache misses: the events'
         dedup keys and every record the rules' prefetch callbacks declare;
      2. the handlers run on funnel_state (cached records, a savepoint per
         event: a refused event leaves no trace, later events see earlier
         ones' effects);
      3. one pipelined round trip commits: MULTI, dedup ids, record writes,
         outbox entries with contiguous seqs, counters, the upstream
         checkpoint, lease renewals, EXEC — then WATCH + MGET of the lease
         keys, so the next EXEC aborts if any lease changed meanwhile
         (fencing without an extra round trip).
    A commit holds only commands that cannot fail on types (every key is
    built by funnel_state / here, injectively, with one type), so EXEC is
    all or nothing; an error while queueing (OOM, MISCONF, READONLY,
    LOADING, BUSY) aborts it: `unavailable`, nothing applied. A reply lost
    with the connection: `unavailable`, outcome unknown, retry with the same
    ids (safe: they are deduplicated).

    Leases: one per owned partition ("<part prefix>lease" = "<token>|<owner>",
    SET NX PX lease_ms, the token from INCR "<prefix>fence"), renewed by
    funnel_engine_cron. A partition held by another owner: sync returns
    FUNNEL_ENGINE_LEASE_HELD; a lease lost while running (EXEC aborted by
    WATCH, or another owner seen): funnel_engine_lost, the service steps
    down. The owner is "<host>|<api endpoint>": a restart on the same
    endpoint (which it could bind, so the old process is gone) takes its
    own lease over at once.

    On a Redis Cluster (funnel_engine_use_cluster) the same steps run per
    slot: reads are grouped by slot; a commit is one fenced MULTI/EXEC per
    slot it writes, and a commit of several slots first stores the others'
    commands as an intent in the base slot's transaction, which the next
    sync completes if the process dies half way (proto/wire.md, "Cluster").
*/
#ifndef FUNNEL_ENGINE_H_INCLUDED
#define FUNNEL_ENGINE_H_INCLUDED

#include <msgpack.h>
#include <stdbool.h>
#include <stdint.h>
#include "event_codec.h"
#include "funnel_config.h"
#include "funnel_error.h"
#include "funnel_state.h"
#include "redis_store.h"
#include "redis_cluster.h"
#include "outbox_entry.h"

//  A rule for one event type: 0, or -1 with err set (not_found, conflict,
//  invalid...) to refuse the event (its effects are rolled back).
typedef int (funnel_handler_fn) (funnel_state_t *st, const funnel_event_t *ev,
                                 funnel_error_t *err);
//  Declares the records a handler will read (funnel_state_want), so a
//  batch's misses load in one round trip. Optional.
typedef void (funnel_prefetch_fn) (funnel_state_t *st, const funnel_event_t *ev);
//  A GET kind: packs one reply value into pk, or -1 with err set.
typedef int (funnel_query_fn) (funnel_state_t *st, const msgpack_object *req,
                               msgpack_packer *pk, funnel_error_t *err);
//  A due timer (armed with funnel_state_timer): its entity id and due time.
typedef int (funnel_timer_fn) (funnel_state_t *st, const char *id, int64_t due_ms,
                               funnel_error_t *err);

typedef struct {
    const char *type;
    funnel_handler_fn *handle;
    funnel_prefetch_fn *prefetch;
} funnel_rule_t;                        //  A table ends with { NULL }

typedef struct {
    const char *kind;
    funnel_query_fn *query;
} funnel_query_rule_t;

//  Packs what query answers for {"id": id} into pk, or nil if it refuses
//  (an export shows an entity as its GET kind does). Returns 0 or -1.
int
    funnel_query_pack_by_id (funnel_state_t *st, funnel_query_fn *query, const char *id,
                             msgpack_packer *pk);

typedef struct {
    const char *name;
    funnel_timer_fn *fire;
} funnel_timer_rule_t;

//  A service's rules: what it does per event type, GET kind and timer.
typedef struct {
    const funnel_rule_t *on;            //  PUBLISHed types
    const funnel_rule_t *consume;       //  Upstream types
    const funnel_query_rule_t *queries; //  GET kinds
    const funnel_timer_rule_t *timers;
    const char *const *counters;        //  Shown as 0 in STATS before use
    //  Stage names GET series returns (NULL-terminated), or NULL; the rules
    //  count them with funnel_state_count_stage
    const char *const *series;
    //  Output types that may carry a person's personal data and their
    //  fields (funnel_privacy.h), or NULL: what lead.forget redacts
    const funnel_personal_t *personal;
    //  Optional, at start: reads the rules' settings (section = the service
    //  name) into *arg, which handlers get with funnel_state_arg; returns
    //  -1 after logging a bad value (exit 2). teardown frees it.
    int (*setup) (funnel_config_t *config, const char *section, void **arg);
    void (*teardown) (void **arg);
} funnel_rules_t;

typedef struct {
    const char *svc;
    const char *prefix;                 //  "{funnel:<svc>}:"
    const char *owner;                  //  "<host>|<api endpoint>"
    int partitions;                     //  Default 16
    size_t cache_max;                   //  Records cached, default 100000
    int64_t retention;                  //  Outbox events kept
    int64_t dedup_ttl_s;                //  How long ids are remembered
    int lease_ms;                       //  Default 5000
    int64_t outbox_max_bytes;           //  Outbox memory cap, default 1 GiB
    int64_t series_hour_s;              //  Hourly series kept (s), default 90 days
    int64_t series_day_s;               //  Daily series kept (s), default 1096 days
    int acks;                           //  Replicas that must WAIT-acknowledge a
                                        //  commit before its reply (0 = none)
    int acks_timeout_ms;                //  WAIT's timeout, default 1000
    void *rules_arg;                    //  funnel_state_arg for the handlers
    //  Scale-out (proto/wire.md "The engine"): the partitions this
    //  instance owns ([partitions]; NULL = all) and whether each partition
    //  keeps its own outbox, seq and checkpoints (an `instances` topology).
    //  Then records are read under WATCH and not cached from batch to
    //  batch, so several instances write shared records exactly (a
    //  conflict re-runs the batch).
    const bool *owns;
    bool part_outbox;
} funnel_engine_cfg_t;

#define FUNNEL_ENGINE_LEASE_HELD    -2
#define FUNNEL_ENGINE_LAYOUT        -3     //  Redis holds another partition count

typedef struct _funnel_engine_t funnel_engine_t;

//  Called for each committed output, in seq order (to PUB it); part is
//  its partition's outbox, or -1 with one outbox per service.
typedef void (funnel_engine_publish_fn) (void *arg, int part, uint64_t seq,
                                         const outbox_entry_t *event);

funnel_engine_t *
    funnel_engine_new (const funnel_engine_cfg_t *cfg, const funnel_rules_t *rules,
                       redis_store_t *store);
void
    funnel_engine_destroy (funnel_engine_t **self_p);
//  Runs on a Redis Cluster instead of the store (not owned; the store
//  given to new is then NULL). Needs per-partition outboxes and one
//  instance owning every partition (proto/wire.md, "Cluster").
void
    funnel_engine_use_cluster (funnel_engine_t *self, redis_cluster_t *cluster);
//  Connects (one server) or loads the slot map (cluster): 0 when usable.
int
    funnel_engine_connect (funnel_engine_t *self);
//  False when the one server's connection is down (a cluster: per node,
//  each operation finds out).
bool
    funnel_engine_connected (funnel_engine_t *self);
//  PING answered (one server; a cluster: the node of the service's base
//  keys).
bool
    funnel_engine_redis_up (funnel_engine_t *self);
void
    funnel_engine_set_publisher (funnel_engine_t *self, funnel_engine_publish_fn *fn,
                                 void *arg);
funnel_state_t *
    funnel_engine_state (funnel_engine_t *self);

//  After each (re)connect: takes or checks the leases, drops the cache,
//  reads seq, outbox start and checkpoints, arms the fence. 0, -1
//  (unavailable, err set), FUNNEL_ENGINE_LEASE_HELD (err names the owner)
//  or FUNNEL_ENGINE_LAYOUT (Redis holds the data in another partition count).
int
    funnel_engine_sync (funnel_engine_t *self, funnel_error_t *err);
//  True while the connection synced is the live one.
bool
    funnel_engine_synced (funnel_engine_t *self);
//  True once a lease was lost: the instance must stop (logged once).
bool
    funnel_engine_lost (funnel_engine_t *self);
//  Last seq of the outbox shown to clients (with redis/acks the last
//  acknowledged one; with per-partition outboxes: their sum).
uint64_t
    funnel_engine_seq (funnel_engine_t *self);
//  Last seq shown of partition part's outbox (0 if not owned; with
//  redis/acks the last acknowledged one of that partition).
uint64_t
    funnel_engine_part_seq (funnel_engine_t *self, int part);
//  The partition an event is routed to (funnel_topology_event_part).
int
    funnel_engine_event_part (funnel_engine_t *self, const funnel_event_t *ev);
uint64_t
    funnel_engine_checkpoint (funnel_engine_t *self, const char *upstream);

//  PUBLISH of checked events; reply gets the OK body. by: the publisher's
//  certificate name (recorded with the ids and the outputs), NULL or "" if
//  anonymous. -1 with err (index set for a batch element) if refused or
//  unavailable; nothing applied.
int
    funnel_engine_publish (funnel_engine_t *self, const funnel_event_t *events,
                           size_t count, bool batch, const char *by,
                           msgpack_sbuffer *reply, funnel_error_t *err);
//  Upstream events (seq order) and the checkpoint last_seq, one commit;
//  refused events are counted, logged (rate-limited) and passed over.
int
    funnel_engine_consume (funnel_engine_t *self, const char *upstream,
                           const funnel_event_t *events, size_t count,
                           uint64_t last_seq, funnel_error_t *err);
//  Housekeeping: renews leases when due, runs due timers (one batch).
void
    funnel_engine_cron (funnel_engine_t *self);
//  GET: kind "series" (every service: the rules' series stages per hour
//  or day bucket, one round trip; proto/monitor.md), else the rules' own
//  kinds.
int
    funnel_engine_query (funnel_engine_t *self, const msgpack_object *req,
                         msgpack_sbuffer *reply, funnel_error_t *err);
//  REPLAY {from, limit[, subscriber]}: a subscriber name registers it (or
//  moves it on): it has applied every seq before from, and the outbox
//  keeps every later event for it, up to outbox_max_bytes. part: the
//  partition's outbox (an owned one; -1 with one outbox per service).
int
    funnel_engine_replay (funnel_engine_t *self, int part, uint64_t from, uint64_t limit,
                          const char *subscriber, msgpack_sbuffer *reply,
                          funnel_error_t *err);
int
    funnel_engine_stats (funnel_engine_t *self, msgpack_sbuffer *reply,
                         funnel_error_t *err);
//  Clean stop: gives the leases back so a successor starts at once.
void
    funnel_engine_release (funnel_engine_t *self);

void
    funnel_engine_test (bool verbose);

#endif
