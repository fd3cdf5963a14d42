/*  funnel_state — the rules' view of a service's state.

    A service's rules are C functions (funnel_engine.h) that read and write
    state only through this module. State is a set of records — one Redis
    hash per entity, named (kind, id) — plus output events, counters,
    bounded lists and timers. Everything a handler does goes into the
    batch's write-set, never straight to Redis:

      - Records are cached whole in the process (bounded, LRU): the owning
        instance is the only writer of its partitions (lease), so the cache
        is exact. (With several instances of a service the engine clears it
        before every batch and reads under WATCH: funnel_engine.h.) A miss
        is loaded through the engine's loader (a prefetch for a whole batch
        in one round trip, or one HGETALL).
      - Writes change the cached record and log the old value; a savepoint
        per event lets a refused event roll back only itself, and a failed
        commit rolls back the whole batch (the batch savepoint), so the
        cache always equals what Redis holds.
      - funnel_state_append_writes turns the write-set into Redis commands
        (HSET/HDEL of final values, RPUSH+LTRIM, ZADD/ZREM, HINCRBY) for the
        engine's MULTI/EXEC: commands that cannot fail on types, because
        every key name is built here, injectively, and has one known type.

    Keys: a record (kind, id) lives at "<part prefix><kind>:<escaped id>"
    where the partition is a hash of id (FNV-1a mod partitions; partition
    0 for global data) and every byte outside [A-Za-z0-9._@+-] of the id is
    written %XX, so ':' can never make two ids meet (ids may contain ':').

        funnel_rec_t *c = funnel_state_rec (st, "counter", key);
        if (!funnel_rec_exists (c)) ...
        funnel_rec_add (c, "total", n);
        msgpack_packer *pk = funnel_state_data (st);
        msgpack_pack_map (pk, 1); ...
        funnel_state_emit (st, "test.added", NULL);
        funnel_state_count (st, "added", n);
*/
#ifndef FUNNEL_STATE_H_INCLUDED
#define FUNNEL_STATE_H_INCLUDED

#include <czmq.h>
#include <hiredis/hiredis.h>
#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "event_codec.h"
#include "funnel_privacy.h"

typedef struct _funnel_state_t funnel_state_t;
typedef struct _funnel_rec_t funnel_rec_t;

//  Loads records that are not cached: for each key, fills the record from
//  Redis (funnel_state_fill). Returns 0, or -1 if Redis is unavailable
//  (the records stay unloaded; the caller fails the batch).
typedef int (funnel_state_loader_fn) (void *arg, funnel_state_t *st,
                                      funnel_rec_t **recs, size_t count);
//  Reads the last max values of the list at key into out (strings, in
//  order); 0, or -1 if Redis is unavailable.
typedef int (funnel_state_list_fn) (void *arg, const char *key, int max, zlist_t *out);

//  prefix: the service's base key prefix, e.g. "{funnel:alpha}:"; partition
//  p's prefix is "{funnel:alpha:p}:" (a hash tag per partition).
funnel_state_t *
    funnel_state_new (const char *svc, const char *prefix, int partitions,
                      size_t cache_max);
void
    funnel_state_destroy (funnel_state_t **self_p);
void
    funnel_state_set_loader (funnel_state_t *self, funnel_state_loader_fn *fn, void *arg);
void
    funnel_state_set_list_reader (funnel_state_t *self, funnel_state_list_fn *fn, void *arg);
//  The rules' own context (their settings, from funnel_rules_t.setup).
void
    funnel_state_set_arg (funnel_state_t *self, void *arg);
void *
    funnel_state_arg (funnel_state_t *self);

//  ----------------------------------------------------------------------
//  Keys and partitions

//  Partition of an entity id: FNV-1a 32 of its bytes, mod partitions.
int
    funnel_partition_of (const char *id, int partitions);
//  Writes id with every byte outside [A-Za-z0-9._@+-] as %XX (injective);
//  returns the length written, or -1 if it does not fit.
int
    funnel_key_escape (const char *id, char *out, size_t size);
//  Reverses funnel_key_escape; -1 if malformed or it does not fit.
int
    funnel_key_unescape (const char *text, char *out, size_t size);
//  The prefix of partition part, e.g. "{funnel:alpha:3}:".
const char *
    funnel_state_prefix (funnel_state_t *self, int part);
//  Where partition part's records, lists, timers and person index live:
//  its own prefix, or with shared set "<base prefix><part>:" under the
//  service's one tag (several instances on a Redis Cluster: one
//  transaction can then check and write every record a batch read).
const char *
    funnel_state_data_prefix (funnel_state_t *self, int part);
void
    funnel_state_set_shared (funnel_state_t *self, bool shared);
int
    funnel_state_partitions (funnel_state_t *self);

//  ----------------------------------------------------------------------
//  Records (hashes of text fields); values are NUL-free text

//  The record (kind, id) in id's partition; loaded now if not cached (one
//  round trip; prefetch avoids it). NULL only if the load failed (Redis
//  down): the handler should then return an error; the batch fails.
funnel_rec_t *
    funnel_state_rec (funnel_state_t *self, const char *kind, const char *id);
//  A global record (not keyed by an entity): its owner is partition 0.
funnel_rec_t *
    funnel_state_global (funnel_state_t *self, const char *kind, const char *id);
//  Adds n to field of a global record, for a total the rules only add to
//  (what they read they must read with funnel_state_global). With blind
//  adds set (several writers: funnel_engine with instances) the record is
//  not read, so it is not WATCHed and two writers' adds never conflict: the
//  commit sends HINCRBY. A read of it later in the same batch does not see
//  the add. -1 if the record could not be read (no blind adds).
int
    funnel_state_add_global (funnel_state_t *self, const char *kind, const char *id,
                             const char *field, int64_t n);
void
    funnel_state_set_blind_adds (funnel_state_t *self, bool blind);
//  The record (kind, id) kept in the partition of owner, another entity's
//  id: an entity that belongs to another (a deal to its lead) stays in its
//  owner's partition. A (kind, id) must always be given the same owner.
funnel_rec_t *
    funnel_state_rec_in (funnel_state_t *self, const char *owner, const char *kind,
                         const char *id);
void
    funnel_state_want_in (funnel_state_t *self, const char *owner, const char *kind,
                          const char *id);
//  Declares that the batch will read (kind, id): prefetch callbacks call
//  this; the engine loads every miss of the batch in one round trip.
void
    funnel_state_want (funnel_state_t *self, const char *kind, const char *id);
void
    funnel_state_want_global (funnel_state_t *self, const char *kind, const char *id);

bool
    funnel_rec_exists (funnel_rec_t *rec);
bool
    funnel_rec_has (funnel_rec_t *rec, const char *field);
//  How many fields the record has (funnel_rec_fields lists them).
size_t
    funnel_rec_count (funnel_rec_t *rec);
//  The value, NULL if absent.
const char *
    funnel_rec_str (funnel_rec_t *rec, const char *field);
//  The value as an integer; dflt if absent or not an integer.
int64_t
    funnel_rec_int (funnel_rec_t *rec, const char *field, int64_t dflt);
void
    funnel_rec_set_str (funnel_rec_t *rec, const char *field, const char *value);
void
    funnel_rec_set_int (funnel_rec_t *rec, const char *field, int64_t value);
//  Adds n to an integer field (absent = 0) and returns the new value.
int64_t
    funnel_rec_add (funnel_rec_t *rec, const char *field, int64_t n);
void
    funnel_rec_del (funnel_rec_t *rec, const char *field);
//  The record's field names, sorted (strcmp), as a zlist of strings the
//  caller destroys: to walk a small record (an index) whole.
zlist_t *
    funnel_rec_fields (funnel_rec_t *rec);
//  Packs the record whole as a map field -> value (sorted): exports.
void
    funnel_rec_pack (funnel_rec_t *rec, msgpack_packer *pk);
//  Packs "<kind>:<id>" then the record (funnel_rec_pack): one entry of an
//  export's records map, named as the record is in Redis.
void
    funnel_rec_pack_entry (funnel_rec_t *rec, msgpack_packer *pk, const char *kind,
                           const char *id);
//  The record's Redis key (for tests and logs).
const char *
    funnel_rec_key (funnel_rec_t *rec);

//  ----------------------------------------------------------------------
//  Outputs, counters, lists, timers

//  A packer for the next output's data: pack exactly one map, then call
//  funnel_state_emit. Reset by each call.
msgpack_packer *
    funnel_state_data (funnel_state_t *self);
//  Queues an output event of type with the data packed since
//  funnel_state_data (an empty map if nothing). Its id is deterministic:
//  <svc>:<cause id>:<n> for the n-th output of the cause, or
//  <svc>:<key>:<type> with a key (timers: key and type must be unique for
//  the service); <svc>:<sha1 hex> of that when over 64 bytes or holding a
//  character outside the id charset.
void
    funnel_state_emit (funnel_state_t *self, const char *type, const char *key);
//  Adds n to a service counter (STATS).
void
    funnel_state_count (funnel_state_t *self, const char *name, int64_t n);
//  A stage reached at event time t_ms (ms since the epoch): adds n to the
//  STATS counter `name` (as funnel_state_count) and to the UTC hour and
//  day buckets holding t_ms, for the whole funnel and, when campaign is a
//  valid id (non-NULL, non-empty), for that campaign too (proto/monitor.md,
//  "Series"); written through the batch's write-set (a refused event or
//  failed commit leaves no trace). Series keys live under the service's
//  base prefix ("{funnel:<svc>}:ser:h:<n>[:<campaign>]"), not a
//  partition's, so they do not move when the partition count changes.
void
    funnel_state_count_stage (funnel_state_t *self, const char *name,
                              int64_t t_ms, const char *campaign, int64_t n);
//  Adds n to one series only (campaign NULL: the whole funnel), without
//  the counter: a stage whose per-campaign count differs from the whole
//  funnel's (campaign's unique reach).
void
    funnel_state_series_add (funnel_state_t *self, const char *name, int64_t t_ms,
                             const char *campaign, int64_t n);
//  The moment an event stands for: for a consumed upstream event whose
//  data carries a valid `at` (ms), that; else ev->ts.
int64_t
    funnel_state_event_time (funnel_state_t *self, const funnel_event_t *ev, bool consumed);
//  How long series buckets are kept after they end (seconds); defaults
//  90 days (hour) and 1096 days (day). The engine sets them from
//  <svc>/series_hourly_days and <svc>/series_daily_days.
void
    funnel_state_set_series_keep (funnel_state_t *self, int64_t hour_s, int64_t day_s);
//  The series key of bucket (of step 'h' or 'd'), campaign NULL for the
//  whole funnel; -1 if it does not fit. GET series reads these.
int
    funnel_state_series_key (funnel_state_t *self, char step, int64_t bucket,
                             const char *campaign, char *key, size_t size);
//  Appends value to the list (kind, id) and keeps its last max entries.
void
    funnel_state_push (funnel_state_t *self, const char *kind, const char *id,
                       const char *value, size_t size, int max);
//  The last max values of the list (kind, id): what is committed plus this
//  batch's pushes, oldest first, as a zlist of strings the caller destroys;
//  NULL if Redis is unavailable. One round trip (lists are not cached):
//  meant for GET kinds and rare reads, not every event.
zlist_t *
    funnel_state_list (funnel_state_t *self, const char *kind, const char *id, int max);
//  The same in the partition of owner (see funnel_state_rec_in).
void
    funnel_state_push_in (funnel_state_t *self, const char *owner, const char *kind,
                          const char *id, const char *value, size_t size, int max);
zlist_t *
    funnel_state_list_in (funnel_state_t *self, const char *owner, const char *kind,
                          const char *id, int max);
void
    funnel_state_timer_in (funnel_state_t *self, const char *owner, const char *name,
                           const char *id, int64_t due_ms);
void
    funnel_state_timer_cancel_in (funnel_state_t *self, const char *owner,
                                  const char *name, const char *id);
//  For the engine: cancels a timer read from partition part.
void
    funnel_state_timer_cancel_at (funnel_state_t *self, int part, const char *name,
                                  const char *id);
//  Arms timer `name` for entity id at due_ms (replaces an armed one); the
//  engine's cron runs the timer rule of that name once it is due.
void
    funnel_state_timer (funnel_state_t *self, const char *name, const char *id,
                        int64_t due_ms);
void
    funnel_state_timer_cancel (funnel_state_t *self, const char *name, const char *id);

//  ----------------------------------------------------------------------
//  For the engine: events, savepoints, commit

//  The event being handled (NULL for timers): output ids and cause.
void
    funnel_state_set_cause (funnel_state_t *self, const char *id, int64_t ts);
//  The time the batch is applied (ms): output ts, ids of timer outputs.
void
    funnel_state_set_now (funnel_state_t *self, int64_t now_ms);
int64_t
    funnel_state_now (funnel_state_t *self);

typedef struct {
    size_t undo, dirty, outputs, counters, lists, timers, series, raws;
} funnel_savepoint_t;

//  Starts a batch (pins the records it touches against eviction).
void
    funnel_state_begin (funnel_state_t *self);
funnel_savepoint_t
    funnel_state_savepoint (funnel_state_t *self);
//  Undoes everything after sp: cache values, dirty marks, queued outputs.
void
    funnel_state_rollback (funnel_state_t *self, funnel_savepoint_t sp);
//  Forgets the write-set after a successful commit (the cache keeps the
//  values) and evicts least recently used records over the bound.
void
    funnel_state_committed (funnel_state_t *self);
//  Drops every cached record (outcome unknown, reconnect, lease change).
void
    funnel_state_clear (funnel_state_t *self);

//  Records a load's result: fields as a flat HGETALL reply.
void
    funnel_state_fill (funnel_state_t *self, funnel_rec_t *rec, const redisReply *hgetall);
//  Misses declared with funnel_state_want since begin; resets the list.
size_t
    funnel_state_take_wants (funnel_state_t *self, funnel_rec_t ***recs);

//  One queued output.
typedef struct {
    char id [65];
    char type [65];
    char cause [65];            //  "" for timer outputs
    int64_t cause_ts;
    char *data;                 //  msgpack map
    size_t size;
    char person [FUNNEL_ID_MAX + 1];  //  Whose personal data it carries ("" none)
} funnel_output_t;
size_t
    funnel_state_output_count (funnel_state_t *self);
const funnel_output_t *
    funnel_state_output (funnel_state_t *self, size_t index);

//  Where a commit's commands go, one call per command (lens NULL: C
//  strings): a connection's pipeline (funnel_redis_sink_ctx, arg the
//  redisContext), or the engine's grouping by Redis Cluster slot.
typedef void (funnel_redis_sink_fn) (void *arg, int argc, const char **argv,
                                     const size_t *lens);

//  Sends the write-set's commands (records, lists, timers, counters
//  under stats_key, series HINCRBY + one EXPIREAT per key) to sink;
//  returns how many were sent.
int
    funnel_state_append_writes (funnel_state_t *self, funnel_redis_sink_fn *sink, void *arg,
                                const char *stats_key);

//  redisAppendCommandArgv's equivalent (lens NULL: C strings), the
//  request built in one pass: hiredis formats every argument with
//  sdscatfmt, a top cost of the commit.
void
    funnel_redis_append (redisContext *ctx, int argc, const char **argv, const size_t *lens);
//  funnel_redis_append as a sink: arg is the redisContext.
void
    funnel_redis_sink_ctx (void *arg, int argc, const char **argv, const size_t *lens);

//  ----------------------------------------------------------------------
//  Privacy (funnel_privacy.h, proto/privacy.md)

//  Finds the records and outbox entries still holding a person's personal
//  data: the engine reads the person's outbox index and queues the
//  rewrites (funnel_state_raw); 0, or -1 if Redis is unavailable.
typedef int (funnel_state_redactor_fn) (void *arg, funnel_state_t *st, const char *person);
void
    funnel_state_set_redactor (funnel_state_t *self, funnel_state_redactor_fn *fn, void *arg);
//  The rules' table of personal fields per output type (may be NULL).
void
    funnel_state_set_personal (funnel_state_t *self, const funnel_personal_t *table);
//  Marks the output just emitted as carrying person's personal data: the
//  commit adds its seq to the person's outbox index (bounded).
void
    funnel_state_personal (funnel_state_t *self, const char *person);
//  Erases person's personal data from the outputs: this batch's are
//  rewritten now, committed ones through the redactor (two round trips: the
//  person's index, then the entries it names),
//  in this batch's commit. 0, or -1 if Redis is unavailable.
int
    funnel_state_forget_outputs (funnel_state_t *self, const char *person);
//  The outbox entries person's index holds ("<seq>", or "<part>:<seq>"
//  with per-partition outboxes; outputs that carried their data,
//  oldest first; those before the outbox's first seq were trimmed), or
//  NULL if Redis is unavailable: what an export lists. Caller destroys.
zlist_t *
    funnel_state_person_outputs (funnel_state_t *self, const char *person);
//  Packs those entries as an array: a seq (one outbox per service) or,
//  with per-partition outboxes, [part, seq].
void
    funnel_state_pack_seqs (zlist_t *seqs, msgpack_packer *pk);
//  One entry of a person's outbox index: "<seq>" (the service's outbox,
//  *part = -1) or "<part>:<seq>" (a partition's). False if malformed.
bool
    funnel_state_index_entry (const char *text, int *part, uint64_t *seq);
//  The key of person's outbox index (a list of entries), "<part>pi:<id>".
int
    funnel_state_person_index_key (funnel_state_t *self, const char *person, char *key,
                                   size_t size);
//  The key of (kind, id) in owner's partition (for raw commands).
int
    funnel_state_key_in (funnel_state_t *self, const char *owner, const char *kind,
                         const char *id, char *key, size_t size);
//  Queues a command of the batch's write-set, sent after every other
//  write of the commit (lens NULL: C strings); rolled back like the rest.
void
    funnel_state_raw (funnel_state_t *self, int argc, const char **argv, const size_t *lens);

//  Cache figures for STATS.
void
    funnel_state_cache_stats (funnel_state_t *self, uint64_t *hits, uint64_t *misses,
                              size_t *entries);

void
    funnel_state_test (bool verbose);

#endif
