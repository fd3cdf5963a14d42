/*  funnel_engine — see funnel_engine.h for what it does and why. */
#include <czmq.h>
#include <inttypes.h>
#include "funnel_engine.h"
#include "funnel_log.h"
#include "funnel_topology.h"

#define OB_BUCKET       1000
#define TIMERS_MAX      100         //  Due timers run per partition per cron
#define KEY_MAX         4096

//  One outbox: the service's (one per service) or a partition's (with
//  instances, proto/wire.md "The engine"), its seq, start, byte sizes and
//  registered subscribers.
typedef struct {
    int part;                       //  -1: the service's
    char prefix [KEY_MAX / 4];      //  "<prefix>": ob:<n> lives under it
    char seq_key [KEY_MAX], ob_first_key [KEY_MAX], subs_key [KEY_MAX], ob_size_key [KEY_MAX];
    char ckpt_key [KEY_MAX];        //  Checkpoints kept with it
    uint64_t seq;                   //  Last seq in the outbox
    uint64_t visible;               //  Last seq shown (PUB, REPLAY, PING,
                                    //  heartbeats): with redis/acks, the last
                                    //  acknowledged one (hidden per outbox)
    uint64_t ob_first;              //  Oldest seq held (1 if none dropped)
    zhashx_t *subs;                 //  subscriber -> uint64_t * next seq it needs
    zhashx_t *bucket_bytes;         //  "<bucket>" -> uint64_t * bytes held
    zhashx_t *ckpts;                //  upstream -> uint64_t * (owned)
    //  A commit's results, applied when it succeeds
    uint64_t new_seq, new_first, lost;
    zhashx_t *new_sizes;
    size_t *outs;                   //  The commit's outputs in this outbox
    size_t out_count, out_size;
    bool touched;                   //  Cluster: a transaction of the commit wrote it
    bool ckpt_written;              //  The commit writes its upstream checkpoint
} outbox_t;

//  Cluster: one slot's share of a commit (its own MULTI/EXEC on its node)
typedef struct {
    int slot;
    int lease;                      //  Partition whose lease fences it; -1 the base
                                    //  lease; -2 none (a slot of no tag of ours)
    redis_pipeline_t *cmds;
    redis_pipeline_t *extra;        //  What its transaction adds (not in the intent)
    redis_pipeline_t *rt;           //  Its round trip, when sent with others
} group_t;

struct _funnel_engine_t {
    funnel_engine_cfg_t cfg;
    char *svc, *prefix, *owner;
    const funnel_rules_t *rules;
    redis_store_t *store;           //  Not owned
    funnel_state_t *state;
    funnel_engine_publish_fn *publish;
    void *publish_arg;
    char stats_key [KEY_MAX], fence_key [KEY_MAX], partitions_key [KEY_MAX];
    char **lease_keys;              //  [lease_total]: the partitions', the base
    int lease_total;                //  lease, then (shared) each partition's copy
    char lease_value [256];
    bool *owns;                     //  [partitions]
    int *mine;                      //  The owned partitions, in order
    int mine_count;
    bool occ;                       //  Shared records: WATCH, no cache between batches
    outbox_t **obs;                 //  [1] or [partitions] (NULL: not owned)
    int ob_count;
    int *out_parts;                 //  The partition of each queued output
    size_t out_parts_len, out_parts_size;
    uint64_t generation;            //  redis_store generation synced, 0 = none
    int64_t renewed;                //  zclock_mono of the last renewal sent
    bool lost;
    int64_t last_warn;
    uint64_t commits, commit_us;    //  For STATS: commits and their time
    uint64_t conflicts;             //  Batches re-run after a WATCH conflict
    char *keys;                     //  Prefetch's dedup keys, reused (grows)
    size_t keys_size;
    int *lease_ids;                 //  Leases held: the owned partitions, and on
    int lease_count;                //  a cluster the base lease (index P), or
                                    //  (shared) a copy of each (P + 1 + p)
    //  Redis Cluster (see "Redis Cluster" below); NULL: the one store
    redis_cluster_t *cluster;
    int base_slot;
    int16_t *slot_part;             //  [16384] partition p's tag, -1 the base, -2 none,
                                    //  -3 another instance's partition
    bool shared;                    //  Several instances: records under the base tag,
                                    //  read under WATCH there (see "Redis Cluster")
    int watch_node;                 //  shared: the base node's connection the batch's
    uint64_t watch_gen;             //  WATCHes went to (gen 0: none yet)
    bool watch_broken;              //  ... and it changed since: re-run the batch
    int16_t *slot_group;            //  [16384] group index + 1 while a commit is built
    int *lease_slots;               //  [P + 1] the slot of each lease key
    group_t *groups;
    int group_count, group_max;
    redis_pipeline_t **q_pipes;     //  s_send's queue: one pipeline per slot
    int *q_slots;
    int q_pipe_count, q_pipe_max;
    int *q_order;                   //  The pipeline of each command, in order
    size_t q_n, q_order_max;
    redisReply **q_ready;           //  Replies run, not yet taken by s_recv
    size_t q_ready_n, q_ready_at, q_ready_max;
    redis_pipeline_t *txn, *extra;  //  s_txn's round trips, reused
    char intents_key [KEY_MAX];
    uint64_t intent_n;
    zlist_t *intents_done;          //  Intent fields applied, deleted by the next
                                    //  base transaction
    bool test_crash;                //  Self-test: stop after the base transaction
    bool *routed;                   //  [P] a consumed event of the batch was routed there
    uint64_t *armed;                //  [node] connection generation whose leases are
    int armed_max;                  //  watched (s_txn's fence)
};

#define ENGINE_RETRY    -3          //  A shared record changed: run the batch again
#define RETRIES_MAX     100

//  value in decimal into text (24 bytes); printf per output was a top
//  cost of the commit
static void
s_int_text (int64_t value, char *text)
{
    char digits [24], *at = digits + sizeof digits - 1;
    uint64_t magnitude = value < 0 ? 0 - (uint64_t) value : (uint64_t) value;
    *at = 0;
    do {
        *--at = (char) ('0' + magnitude % 10);
        magnitude /= 10;
    } while (magnitude);
    if (value < 0)
        *--at = '-';
    memcpy (text, at, (size_t) (digits + sizeof digits - at));
}

static int64_t
s_now_ms (void)
{
    return zclock_time ();
}

static void
s_free_item (void **item)
{
    free (*item);
    *item = NULL;
}

//  ---------------------------------------------------------------------
//  Redis helpers

//  Reads count pipelined replies into replies[]; -1 on connection loss
//  (the ones read are freed, the store is disconnected).
static int
s_read (funnel_engine_t *self, redisReply **replies, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        replies [i] = redis_store_recv (self->store);
        if (!replies [i]) {
            for (size_t j = 0; j < i; j++)
                freeReplyObject (replies [j]);
            self->generation = 0;
            return -1;
        }
    }
    return 0;
}

static void
s_free_replies (redisReply **replies, size_t count)
{
    for (size_t i = 0; i < count; i++)
        if (replies [i])
            freeReplyObject (replies [i]);
}

static int
s_unavailable (funnel_error_t *err)
{
    return funnel_error_set (err, FUNNEL_ERR_UNAVAILABLE,
        "redis: the store is unavailable; nothing was applied; retry later with the same ids");
}

static int
s_unknown (funnel_error_t *err)
{
    return funnel_error_set (err, FUNNEL_ERR_UNAVAILABLE,
        "redis: the connection was lost before the commit's reply; the outcome is unknown: "
        "retry with the same ids (safe: applied ids are skipped as duplicates)");
}

static bool
s_ready (funnel_engine_t *self)
{
    if (self->cluster)
        return !self->lost && self->generation != 0;
    return !self->lost && self->generation != 0
        && redis_store_connected (self->store)
        && redis_store_generation (self->store) == self->generation;
}

//  ---------------------------------------------------------------------
//  Redis Cluster (proto/wire.md, "Cluster")
//
//  Reads: s_send queues a command by the slot of its key (argv[1]) and
//  s_recv runs every queued slot's pipeline (one round trip each,
//  redirects followed by redis_cluster) and returns the replies in the
//  order sent, as one connection would; on one server both are the
//  connection's own pipeline.
//  Commits: a commit's commands go into one group per slot; each group is
//  one MULTI/EXEC on its node, fenced by the lease in its slot (WATCH +
//  GET, checked, then the transaction on the same connection). A commit
//  of several groups is made atomic by an intent: the base group's
//  transaction also stores every other group's commands in
//  "<prefix>intents"; each other group's transaction marks
//  "<part prefix>applied" with the intent's id. A sync first re-applies
//  every group an intent holds that its partition has not marked, so a
//  kill -9 between two transactions loses and doubles nothing.

#define TXN_OK          0
#define TXN_REFUSED     -1          //  Nothing ran
#define TXN_UNKNOWN     -4          //  The reply was lost: it may have run
#define TXN_LOST        -5          //  The lease is another instance's
#define TXN_STORED      -6          //  A batch's intent is stored, a slot of it not
                                    //  written yet: the next sync completes it
#define TXN_ATTEMPTS    60          //  Paused 50 ms apart: a migrating slot or a
                                    //  failover settles meanwhile

static void
s_send (funnel_engine_t *self, int argc, const char **argv, const size_t *lens)
{
    if (!self->cluster) {
        funnel_redis_append (redis_store_context (self->store), argc, argv, lens);
        return;
    }
    assert (argc >= 2);
    int slot = redis_cluster_slot (argv [1], lens ? lens [1] : strlen (argv [1]));
    int i = 0;
    while (i < self->q_pipe_count && self->q_slots [i] != slot)
        i++;
    if (i == self->q_pipe_count) {
        if (i == self->q_pipe_max) {
            self->q_pipe_max = self->q_pipe_max ? self->q_pipe_max * 2 : 16;
            self->q_pipes = (redis_pipeline_t **) realloc (self->q_pipes,
                                (size_t) self->q_pipe_max * sizeof (redis_pipeline_t *));
            self->q_slots = (int *) realloc (self->q_slots, (size_t) self->q_pipe_max * sizeof (int));
            assert (self->q_pipes && self->q_slots);
            for (int j = i; j < self->q_pipe_max; j++)
                self->q_pipes [j] = redis_pipeline_new ();
        }
        redis_pipeline_reset (self->q_pipes [i]);
        self->q_slots [i] = slot;
        self->q_pipe_count++;
    }
    redis_pipeline_append (self->q_pipes [i], argc, argv, lens);
    if (self->q_n == self->q_order_max) {
        self->q_order_max = self->q_order_max ? self->q_order_max * 2 : 256;
        self->q_order = (int *) realloc (self->q_order, self->q_order_max * sizeof (int));
        assert (self->q_order);
    }
    self->q_order [self->q_n++] = i;
}

//  Drops what s_send queued and s_recv did not hand out.
static void
s_queue_drop (funnel_engine_t *self)
{
    for (size_t i = self->q_ready_at; i < self->q_ready_n; i++)
        freeReplyObject (self->q_ready [i]);
    self->q_ready_at = self->q_ready_n = 0;
    self->q_n = 0;
    self->q_pipe_count = 0;
}

//  Runs every queued pipeline, replies into q_ready in the order sent.
static int
s_queue_run (funnel_engine_t *self)
{
    int pipes = self->q_pipe_count;
    redisReply ***per = (redisReply ***) zmalloc ((size_t) (pipes + 1) * sizeof (redisReply **));
    size_t *cursor = (size_t *) zmalloc ((size_t) (pipes + 1) * sizeof (size_t));
    int rc = 0;
    for (int i = 0; i < pipes && rc == 0; i++) {
        size_t n = redis_pipeline_count (self->q_pipes [i]);
        per [i] = (redisReply **) zmalloc ((n + 1) * sizeof (redisReply *));
        funnel_error_t err;
        if (redis_cluster_run (self->cluster, self->q_slots [i], self->q_pipes [i], per [i],
                               &err) != 0) {
            if (funnel_log_every (&self->last_warn, 1000))
                log_warn ("%s", err.message);
            rc = -1;
        }
    }
    if (rc == 0) {
        if (self->q_ready_max < self->q_n) {
            self->q_ready_max = self->q_n * 2;
            self->q_ready = (redisReply **) realloc (self->q_ready,
                                                     self->q_ready_max * sizeof (redisReply *));
            assert (self->q_ready);
        }
        for (size_t k = 0; k < self->q_n; k++) {
            int i = self->q_order [k];
            self->q_ready [k] = per [i][cursor [i]++];
        }
        self->q_ready_at = 0;
        self->q_ready_n = self->q_n;
    }
    for (int i = 0; i < pipes; i++) {
        if (rc != 0 && per [i])
            for (size_t j = 0; j < redis_pipeline_count (self->q_pipes [i]); j++)
                if (per [i][j])
                    freeReplyObject (per [i][j]);
        free (per [i]);
    }
    free (per);
    free (cursor);
    self->q_n = 0;
    self->q_pipe_count = 0;
    return rc;
}

//  The replies of what s_send sent, in order; -1 if a node could not
//  answer (the ones read are freed; the engine must sync again).
static int
s_recv (funnel_engine_t *self, redisReply **replies, size_t count)
{
    if (!self->cluster)
        return s_read (self, replies, count);
    for (size_t i = 0; i < count; i++) {
        if (self->q_ready_at == self->q_ready_n
        &&  (self->q_n == 0 || s_queue_run (self) != 0)) {
            for (size_t j = 0; j < i; j++)
                freeReplyObject (replies [j]);
            s_queue_drop (self);
            self->generation = 0;
            return -1;
        }
        replies [i] = self->q_ready [self->q_ready_at++];
    }
    //  Shared records: the batch's WATCHes hold on the base node's
    //  connection only if it stays the same until the base transaction
    if (self->shared) {
        uint64_t gen = 0;
        int node = redis_cluster_conn_of (self->cluster, self->base_slot, &gen);
        if (self->watch_gen == 0) {
            self->watch_node = node;
            self->watch_gen = gen;
        }
        else
        if (node != self->watch_node || gen != self->watch_gen)
            self->watch_broken = true;
    }
    return 0;
}

//  The commit group of slot (made on first use).
static int
s_group_of (funnel_engine_t *self, int slot)
{
    if (self->slot_group [slot])
        return self->slot_group [slot] - 1;
    if (self->group_count == self->group_max) {
        int old = self->group_max;
        self->group_max = old ? old * 2 : 32;
        self->groups = (group_t *) realloc (self->groups, (size_t) self->group_max * sizeof (group_t));
        assert (self->groups);
        for (int i = old; i < self->group_max; i++) {
            self->groups [i].cmds = redis_pipeline_new ();
            self->groups [i].extra = redis_pipeline_new ();
            self->groups [i].rt = redis_pipeline_new ();
        }
    }
    int g = self->group_count++;
    group_t *group = &self->groups [g];
    redis_pipeline_reset (group->cmds);
    group->slot = slot;
    group->lease = self->slot_part [slot];
    self->slot_group [slot] = (int16_t) (g + 1);
    return g;
}

static void
s_group_sink (void *arg, int argc, const char **argv, const size_t *lens)
{
    funnel_engine_t *self = (funnel_engine_t *) arg;
    int slot = redis_cluster_slot (argv [1], lens ? lens [1] : strlen (argv [1]));
    int g = s_group_of (self, slot);        //  First: it may move the array
    redis_pipeline_append (self->groups [g].cmds, argc, argv, lens);
}

static void
s_groups_reset (funnel_engine_t *self)
{
    for (int i = 0; i < self->group_count; i++)
        self->slot_group [self->groups [i].slot] = 0;
    self->group_count = 0;
}

static bool
s_redirected (const char *text)
{
    return strncmp (text, "MOVED ", 6) == 0 || strncmp (text, "ASK ", 4) == 0
        || strncmp (text, "TRYAGAIN", 8) == 0 || strncmp (text, "CLUSTERDOWN", 11) == 0;
}

static void s_step_down (funnel_engine_t *self, int part, const char *holder);
static const char *s_lease_owner (const char *value);
static const char *s_queue_error (redisReply **replies, size_t count);

//  Whether the leases of a node's slots are watched on its connection of
//  generation gen (armed by the last transaction there, and all ours).
static bool
s_armed (funnel_engine_t *self, int node, uint64_t gen)
{
    return node >= 0 && gen != 0 && node < self->armed_max && self->armed [node] == gen;
}

static void
s_set_armed (funnel_engine_t *self, int node, uint64_t gen)
{
    if (node >= self->armed_max) {
        int old = self->armed_max;
        self->armed_max = node + 8;
        self->armed = (uint64_t *) realloc (self->armed, (size_t) self->armed_max * sizeof (uint64_t));
        assert (self->armed);
        memset (self->armed + old, 0, (size_t) (self->armed_max - old) * sizeof (uint64_t));
    }
    self->armed [node] = gen;
}

#define TXN_RETRY       -7          //  s_trip_judge: nothing ran, try again

//  One transaction's round trip on a node: MULTI, cmds, extra (what an
//  intent does not hold), the lease renewed if renew, EXEC, WAIT if wait,
//  then the WATCH (one per key: a WATCH's keys must share a slot) and GET
//  of every lease whose slot the map puts on that node, which arm the
//  next transaction there (EXEC ends every WATCH of a connection).
typedef struct {
    redis_pipeline_t *rt;
    int node;
    uint64_t gen;
    size_t exec_at, arm_at;
    int *arms;                      //  [lease_count + 1] the leases re-armed
    int arm_count;
    bool wait;
} trip_t;

//  The leases we hold whose key is in slot, into out (lease ids); how many.
static int
s_slot_leases (funnel_engine_t *self, int slot, int *out)
{
    int count = 0;
    for (int i = 0; i < self->lease_count; i++)
        if (self->lease_slots [self->lease_ids [i]] == slot)
            out [count++] = self->lease_ids [i];
    return count;
}

static void
s_trip_build (funnel_engine_t *self, trip_t *trip, int slot, bool fenced,
              redis_pipeline_t *cmds, redis_pipeline_t *extra, bool renew, bool wait)
{
    redis_pipeline_t *rt = trip->rt;
    redis_pipeline_reset (rt);
    redis_pipeline_append (rt, 1, (const char *[]) { "MULTI" }, NULL);
    size_t size;
    const char *data = redis_pipeline_data (cmds, &size);
    redis_pipeline_append_raw (rt, data, size, redis_pipeline_count (cmds));
    if (extra) {
        data = redis_pipeline_data (extra, &size);
        redis_pipeline_append_raw (rt, data, size, redis_pipeline_count (extra));
    }
    if (renew && fenced) {
        char px [24];
        snprintf (px, sizeof px, "%d", self->cfg.lease_ms);
        int count = s_slot_leases (self, slot, trip->arms);
        for (int k = 0; k < count; k++)
            redis_pipeline_append (rt, 5, (const char *[]) { "SET",
                                   self->lease_keys [trip->arms [k]], self->lease_value,
                                   "PX", px }, NULL);
    }
    redis_pipeline_append (rt, 1, (const char *[]) { "EXEC" }, NULL);
    trip->exec_at = redis_pipeline_count (rt) - 1;
    trip->wait = wait;
    if (wait) {
        char n [16], ms [16];
        snprintf (n, sizeof n, "%d", self->cfg.acks);
        snprintf (ms, sizeof ms, "%d", self->cfg.acks_timeout_ms);
        redis_pipeline_append (rt, 3, (const char *[]) { "WAIT", n, ms }, NULL);
    }
    trip->arm_at = redis_pipeline_count (rt);
    trip->arm_count = 0;
    for (int i = 0; fenced && i < self->lease_count; i++) {
        int l = self->lease_ids [i];
        uint64_t g = 0;
        if (redis_cluster_conn_of (self->cluster, self->lease_slots [l], &g) != trip->node)
            continue;
        redis_pipeline_append (rt, 2, (const char *[]) { "WATCH", self->lease_keys [l] }, NULL);
        redis_pipeline_append (rt, 2, (const char *[]) { "GET", self->lease_keys [l] }, NULL);
        trip->arms [trip->arm_count++] = l;
    }
}

//  A trip's replies (freed here): TXN_OK (*acked set if it waited),
//  TXN_RETRY (nothing ran: why says what), TXN_REFUSED or TXN_UNKNOWN
//  (err set), TXN_LOST (a lease there is another's).
static int
s_trip_judge (funnel_engine_t *self, trip_t *trip, bool fenced, redisReply **replies,
              long long *acked, char *why, size_t why_size, funnel_error_t *err)
{
    size_t count = redis_pipeline_count (trip->rt);
    //  The next fence: armed if every lease there is ours
    if (fenced) {
        bool armed = true;
        for (int k = 0; k < trip->arm_count; k++) {
            redisReply *v = replies [trip->arm_at + 2 * (size_t) k + 1];
            if (v->type == REDIS_REPLY_STRING && !streq (v->str, self->lease_value))
                s_step_down (self, trip->arms [k], s_lease_owner (v->str));
            if (v->type != REDIS_REPLY_STRING || !streq (v->str, self->lease_value))
                armed = false;
        }
        s_set_armed (self, trip->node, armed ? trip->gen : 0);
    }
    redisReply *exec = replies [trip->exec_at];
    int rc;
    if (exec->type == REDIS_REPLY_ARRAY) {
        rc = TXN_OK;
        for (size_t i = 0; i < exec->elements && rc == TXN_OK; i++)
            if (exec->element [i]->type == REDIS_REPLY_ERROR) {
                //  Cannot happen by construction (keys of known types)
                log_error ("commit: command %zu failed inside EXEC: %s; state may be "
                           "partly applied", i, exec->element [i]->str);
                funnel_error_set (err, FUNNEL_ERR_INTERNAL, "store: a commit command failed: %s",
                                  exec->element [i]->str);
                rc = TXN_UNKNOWN;
            }
        if (trip->wait)
            *acked = replies [trip->exec_at + 1]->type == REDIS_REPLY_INTEGER
                   ? replies [trip->exec_at + 1]->integer : 0;
    }
    else
    if (exec->type == REDIS_REPLY_NIL) {
        //  A watched lease changed (or its key migrated): look again
        snprintf (why, why_size, "a watched lease changed");
        rc = TXN_RETRY;
    }
    else {
        //  EXECABORT: a command was refused while queueing: nothing ran
        const char *q = s_queue_error (replies, trip->exec_at);
        snprintf (why, why_size, "%.180s", q ? q : exec->type == REDIS_REPLY_ERROR
                                                   ? exec->str : "unexpected reply");
        rc = s_redirected (why) ? TXN_RETRY : TXN_REFUSED;
        if (rc == TXN_RETRY)
            redis_cluster_refresh (self->cluster, NULL);
        else
            funnel_error_set (err, FUNNEL_ERR_UNAVAILABLE,
                "redis: %.120s; nothing was applied; retry later with the same ids", why);
    }
    s_free_replies (replies, count);
    if (self->lost && rc != TXN_OK) {
        funnel_error_set (err, FUNNEL_ERR_UNAVAILABLE,
            "lease: another instance owns this service now; nothing was applied");
        rc = TXN_LOST;
    }
    return rc;
}

//  One group's transaction on the node of slot, fenced by our leases in
//  that slot (lease: a partition, -1 the base, -2 none: not fenced), as
//  trip_t says. The fence is the WATCH of every lease of ours whose slot
//  is on that node, sent after the previous transaction there and its
//  GETs checked; when that connection is not armed (first use, a
//  reconnect, a slot moved) one round trip arms it first. Redirects, a
//  migrating slot and a failover are waited out (TXN_ATTEMPTS); a lease
//  found another's: TXN_LOST. occ (shared records, the base transaction):
//  the batch's reads were WATCHed on the base node's connection, so the
//  transaction must run on that same connection and at most once; a
//  conflict, a redirect or another connection is ENGINE_RETRY (nothing
//  ran: the batch runs again on fresh reads).
static int
s_txn (funnel_engine_t *self, int slot, int lease, redis_pipeline_t *cmds,
       redis_pipeline_t *extra, bool renew, bool wait, bool occ, long long *acked,
       funnel_error_t *err)
{
    redis_pipeline_t *rt = self->txn;
    char why [200] = "no attempt";
    int *arms = (int *) zmalloc ((size_t) (self->lease_count + 1) * sizeof (int));
    int *mine = (int *) zmalloc ((size_t) (self->lease_count + 1) * sizeof (int));
    int held = s_slot_leases (self, slot, mine);
    bool fenced = lease >= -1 && held > 0;
    trip_t trip = { .rt = rt, .arms = arms };
    int rc = TXN_RETRY;
    for (int attempt = 0; attempt < TXN_ATTEMPTS && rc == TXN_RETRY; attempt++) {
        if (attempt > 0) {
            //  A conflict re-runs at once; a redirect after a pause
            if (!occ || s_redirected (why))
                zclock_sleep (50);
            if (occ) {
                rc = ENGINE_RETRY;
                break;
            }
        }
        uint64_t gen = 0;
        int node = fenced ? redis_cluster_conn_of (self->cluster, slot, &gen) : -1;
        if (fenced && !s_armed (self, node, gen)) {
            redis_pipeline_reset (rt);
            for (int k = 0; k < held; k++) {
                redis_pipeline_append (rt, 2, (const char *[]) { "WATCH",
                                       self->lease_keys [mine [k]] }, NULL);
                redis_pipeline_append (rt, 2, (const char *[]) { "GET",
                                       self->lease_keys [mine [k]] }, NULL);
            }
            redisReply **r = (redisReply **) zmalloc ((size_t) (2 * held + 1) * sizeof (redisReply *));
            if (redis_cluster_run (self->cluster, slot, rt, r, err) != 0) {
                free (r);
                snprintf (why, sizeof why, "%.180s", err->message);
                continue;
            }
            bool ours = true, moving = false;
            for (int k = 0; k < held; k++) {
                redisReply *v = r [2 * k + 1];
                if (v->type == REDIS_REPLY_ERROR && s_redirected (v->str)) {
                    moving = true;
                    snprintf (why, sizeof why, "%s", v->str);
                }
                else
                if (v->type != REDIS_REPLY_STRING || !streq (v->str, self->lease_value)) {
                    if (ours)
                        s_step_down (self, mine [k],
                                     v->type == REDIS_REPLY_STRING ? s_lease_owner (v->str) : NULL);
                    ours = false;
                }
            }
            s_free_replies (r, (size_t) (2 * held));
            free (r);
            if (!ours) {
                funnel_error_set (err, FUNNEL_ERR_UNAVAILABLE,
                    "lease: another instance owns this service now; nothing was applied");
                rc = TXN_LOST;
                break;
            }
            if (moving)
                continue;
            node = redis_cluster_last_conn (self->cluster, &gen);
            if (node < 0)
                continue;               //  It followed an ASK: the slot is moving
        }
        if (occ && (self->watch_broken
                ||  (self->watch_gen && (node != self->watch_node || gen != self->watch_gen)))) {
            rc = ENGINE_RETRY;          //  The reads' WATCHes are on another connection
            break;
        }
        trip.node = node;
        trip.gen = gen;
        s_trip_build (self, &trip, slot, fenced, cmds, extra, renew, wait);
        size_t count = redis_pipeline_count (rt);
        redisReply **replies = (redisReply **) zmalloc ((count + 1) * sizeof (redisReply *));
        int sent = fenced ? redis_cluster_run_on (self->cluster, node, gen, rt, replies, err)
                          : redis_cluster_run (self->cluster, slot, rt, replies, err);
        if (sent != 0) {
            free (replies);
            if (node >= 0)
                s_set_armed (self, node, 0);
            if (strstr (err->message, "outcome is unknown")) {
                rc = TXN_UNKNOWN;
                break;
            }
            snprintf (why, sizeof why, "%.180s", err->message);
            continue;                   //  Nothing was sent
        }
        rc = s_trip_judge (self, &trip, fenced, replies, acked, why, sizeof why, err);
        free (replies);
    }
    free (arms);
    free (mine);
    if (rc == TXN_RETRY) {
        funnel_error_set (err, FUNNEL_ERR_UNAVAILABLE,
            "redis cluster: slot %d: %.120s; nothing was applied; retry later with the same ids",
            slot, why);
        rc = TXN_REFUSED;
    }
    return rc;
}

//  ---------------------------------------------------------------------
//  Life cycle

static int s_loader (void *arg, funnel_state_t *st, funnel_rec_t **recs, size_t count);
static int s_list_reader (void *arg, const char *key, int max, zlist_t *out);
static int s_redactor (void *arg, funnel_state_t *st, const char *person);

static outbox_t *
s_outbox_new (funnel_engine_t *self, int part)
{
    outbox_t *ob = (outbox_t *) zmalloc (sizeof (outbox_t));
    ob->part = part;
    snprintf (ob->prefix, sizeof ob->prefix, "%s",
              part < 0 ? self->prefix : funnel_state_prefix (self->state, part));
    snprintf (ob->seq_key, KEY_MAX, "%sseq", ob->prefix);
    snprintf (ob->ob_first_key, KEY_MAX, "%sob_first", ob->prefix);
    snprintf (ob->ckpt_key, KEY_MAX, "%sckpt", ob->prefix);
    snprintf (ob->subs_key, KEY_MAX, "%ssubs", ob->prefix);
    snprintf (ob->ob_size_key, KEY_MAX, "%sob_size", ob->prefix);
    ob->subs = zhashx_new ();
    zhashx_set_destructor (ob->subs, s_free_item);
    ob->bucket_bytes = zhashx_new ();
    zhashx_set_destructor (ob->bucket_bytes, s_free_item);
    ob->ckpts = zhashx_new ();
    zhashx_set_destructor (ob->ckpts, s_free_item);
    ob->ob_first = 1;
    return ob;
}

static void
s_outbox_destroy (outbox_t **ob_p)
{
    if (*ob_p) {
        outbox_t *ob = *ob_p;
        zhashx_destroy (&ob->subs);
        zhashx_destroy (&ob->bucket_bytes);
        zhashx_destroy (&ob->ckpts);
        zhashx_destroy (&ob->new_sizes);
        free (ob->outs);
        free (ob);
        *ob_p = NULL;
    }
}

funnel_engine_t *
funnel_engine_new (const funnel_engine_cfg_t *cfg, const funnel_rules_t *rules,
                   redis_store_t *store)
{
    funnel_engine_t *self = (funnel_engine_t *) zmalloc (sizeof (funnel_engine_t));
    self->cfg = *cfg;
    self->svc = strdup (cfg->svc);
    self->prefix = strdup (cfg->prefix);
    self->owner = strdup (cfg->owner ? cfg->owner : "");
    self->cfg.partitions = cfg->partitions > 0 ? cfg->partitions : 16;
    self->cfg.cache_max = cfg->cache_max ? cfg->cache_max : 100000;
    self->cfg.retention = cfg->retention > 0 ? cfg->retention : 1000000;
    self->cfg.dedup_ttl_s = cfg->dedup_ttl_s > 0 ? cfg->dedup_ttl_s : 8 * 24 * 3600;
    self->cfg.lease_ms = cfg->lease_ms > 0 ? cfg->lease_ms : 5000;
    self->cfg.outbox_max_bytes = cfg->outbox_max_bytes > 0 ? cfg->outbox_max_bytes
                                                            : 1024LL * 1024 * 1024;
    self->cfg.acks_timeout_ms = cfg->acks_timeout_ms > 0 ? cfg->acks_timeout_ms : 1000;
    self->cfg.owns = NULL;          //  Copied below
    self->rules = rules;
    self->store = store;
    self->state = funnel_state_new (cfg->svc, cfg->prefix, self->cfg.partitions,
                                    self->cfg.cache_max);
    funnel_state_set_loader (self->state, s_loader, self);
    funnel_state_set_list_reader (self->state, s_list_reader, self);
    funnel_state_set_redactor (self->state, s_redactor, self);
    funnel_state_set_personal (self->state, rules->personal);
    funnel_state_set_arg (self->state, cfg->rules_arg);
    funnel_state_set_series_keep (self->state, cfg->series_hour_s, cfg->series_day_s);
    snprintf (self->stats_key, KEY_MAX, "%sstats", cfg->prefix);
    snprintf (self->fence_key, KEY_MAX, "%sfence", cfg->prefix);
    snprintf (self->partitions_key, KEY_MAX, "%spartitions", cfg->prefix);
    int n = self->cfg.partitions;
    self->owns = (bool *) zmalloc ((size_t) n * sizeof (bool));
    self->mine = (int *) zmalloc ((size_t) n * sizeof (int));
    for (int p = 0; p < n; p++) {
        self->owns [p] = cfg->owns ? cfg->owns [p] : true;
        if (self->owns [p])
            self->mine [self->mine_count++] = p;
    }
    //  Several writers of shared records: instances that split the
    //  partitions (an instance owning them all has no other writer)
    self->occ = cfg->part_outbox && self->mine_count < n;
    funnel_state_set_blind_adds (self->state, self->occ);
    //  [n]: the base lease, held on a Redis Cluster only
    self->lease_keys = (char **) zmalloc ((size_t) (n + 1) * sizeof (char *));
    for (int p = 0; p < n; p++)
        self->lease_keys [p] = zsys_sprintf ("%slease", funnel_state_prefix (self->state, p));
    self->lease_keys [n] = zsys_sprintf ("%slease", cfg->prefix);
    self->lease_total = n + 1;
    self->routed = (bool *) zmalloc ((size_t) n * sizeof (bool));
    self->lease_ids = (int *) zmalloc ((size_t) (n + 1) * sizeof (int));
    for (int i = 0; i < self->mine_count; i++)
        self->lease_ids [self->lease_count++] = self->mine [i];
    self->ob_count = cfg->part_outbox ? n : 1;
    self->obs = (outbox_t **) zmalloc ((size_t) self->ob_count * sizeof (outbox_t *));
    if (cfg->part_outbox) {
        for (int p = 0; p < n; p++)
            if (self->owns [p])
                self->obs [p] = s_outbox_new (self, p);
    }
    else
        self->obs [0] = s_outbox_new (self, -1);
    return self;
}

void
funnel_engine_destroy (funnel_engine_t **self_p)
{
    if (*self_p) {
        funnel_engine_t *self = *self_p;
        funnel_state_destroy (&self->state);
        for (int l = 0; l < self->lease_total; l++)
            zstr_free (&self->lease_keys [l]);
        free (self->lease_keys);
        free (self->lease_ids);
        free (self->routed);
        free (self->armed);
        s_queue_drop (self);
        for (int i = 0; i < self->q_pipe_max; i++)
            redis_pipeline_destroy (&self->q_pipes [i]);
        free (self->q_pipes);
        free (self->q_slots);
        free (self->q_order);
        free (self->q_ready);
        for (int i = 0; i < self->group_max; i++) {
            redis_pipeline_destroy (&self->groups [i].cmds);
            redis_pipeline_destroy (&self->groups [i].extra);
            redis_pipeline_destroy (&self->groups [i].rt);
        }
        free (self->groups);
        free (self->slot_part);
        free (self->slot_group);
        free (self->lease_slots);
        redis_pipeline_destroy (&self->txn);
        redis_pipeline_destroy (&self->extra);
        zlist_destroy (&self->intents_done);
        for (int i = 0; i < self->ob_count; i++)
            s_outbox_destroy (&self->obs [i]);
        free (self->obs);
        free (self->owns);
        free (self->mine);
        free (self->out_parts);
        free (self->svc);
        free (self->prefix);
        free (self->owner);
        free (self->keys);
        free (self);
        *self_p = NULL;
    }
}

void
funnel_engine_use_cluster (funnel_engine_t *self, redis_cluster_t *cluster)
{
    assert (self && cluster && !self->cluster);
    assert (self->cfg.part_outbox);
    int n = self->cfg.partitions;
    self->cluster = cluster;
    self->store = NULL;
    //  One instance owns every record: cached, fenced by its leases. With
    //  several, records are shared: under the base tag, read under WATCH
    self->shared = self->mine_count < n;
    self->occ = self->shared;
    funnel_state_set_shared (self->state, self->shared);
    funnel_state_set_blind_adds (self->state, self->shared);
    if (self->shared) {
        //  The base transaction (the batch's point of no return) is fenced
        //  by a copy of each owned partition's lease in the base slot
        self->lease_keys = (char **) realloc (self->lease_keys,
                                              (size_t) (2 * n + 1) * sizeof (char *));
        self->lease_ids = (int *) realloc (self->lease_ids, (size_t) (2 * n + 1) * sizeof (int));
        assert (self->lease_keys && self->lease_ids);
        for (int p = 0; p < n; p++)
            self->lease_keys [n + 1 + p] = zsys_sprintf ("%slease:%d", self->prefix, p);
        self->lease_total = 2 * n + 1;
    }
    self->base_slot = redis_cluster_slot (self->prefix, strlen (self->prefix));
    self->slot_part = (int16_t *) malloc (REDIS_CLUSTER_SLOTS * sizeof (int16_t));
    self->slot_group = (int16_t *) zmalloc (REDIS_CLUSTER_SLOTS * sizeof (int16_t));
    self->lease_slots = (int *) zmalloc ((size_t) self->lease_total * sizeof (int));
    assert (self->slot_part);
    for (int i = 0; i < REDIS_CLUSTER_SLOTS; i++)
        self->slot_part [i] = -2;
    for (int l = 0; l < self->lease_total; l++)
        self->lease_slots [l] = redis_cluster_slot (self->lease_keys [l],
                                                    strlen (self->lease_keys [l]));
    //  Another instance's partitions: a commit never writes there
    for (int p = n - 1; p >= 0; p--)
        if (!self->owns [p])
            self->slot_part [self->lease_slots [p]] = -3;
    for (int p = n - 1; p >= 0; p--)
        if (self->owns [p])
            self->slot_part [self->lease_slots [p]] = (int16_t) p;
    //  A partition whose tag shares the base's slot is fenced by the base lease
    self->slot_part [self->base_slot] = -1;
    if (self->shared)
        for (int i = 0; i < self->mine_count; i++)
            self->lease_ids [self->lease_count++] = n + 1 + self->mine [i];
    else
        self->lease_ids [self->lease_count++] = n;
    self->txn = redis_pipeline_new ();
    self->extra = redis_pipeline_new ();
    self->intents_done = zlist_new ();
    zlist_autofree (self->intents_done);
    snprintf (self->intents_key, KEY_MAX, "%sintents", self->prefix);
}

int
funnel_engine_connect (funnel_engine_t *self)
{
    if (self->cluster)
        return redis_cluster_refresh (self->cluster, NULL);
    return redis_store_connect (self->store);
}

bool
funnel_engine_connected (funnel_engine_t *self)
{
    return self->cluster ? true : redis_store_connected (self->store);
}

bool
funnel_engine_redis_up (funnel_engine_t *self)
{
    redisReply *reply = NULL;
    if (self->cluster) {
        redis_pipeline_t *ping = redis_pipeline_new ();
        redis_pipeline_append (ping, 1, (const char *[]) { "PING" }, NULL);
        funnel_error_t err;
        if (redis_cluster_run (self->cluster, self->base_slot, ping, &reply, &err) != 0)
            reply = NULL;
        redis_pipeline_destroy (&ping);
    }
    else
    if (redis_store_connect (self->store) == 0)
        reply = redis_store_command (self->store, 1, (const char *[]) { "PING" }, NULL);
    bool up = reply && reply->type == REDIS_REPLY_STATUS;
    if (reply)
        freeReplyObject (reply);
    return up;
}

void
funnel_engine_set_publisher (funnel_engine_t *self, funnel_engine_publish_fn *fn, void *arg)
{
    self->publish = fn;
    self->publish_arg = arg;
}

funnel_state_t *
funnel_engine_state (funnel_engine_t *self)
{
    return self->state;
}

bool
funnel_engine_synced (funnel_engine_t *self)
{
    return s_ready (self);
}

bool
funnel_engine_lost (funnel_engine_t *self)
{
    return self->lost;
}

uint64_t
funnel_engine_seq (funnel_engine_t *self)
{
    //  What subscribers may see: the acknowledged seqs (redis/acks)
    uint64_t total = 0;
    for (int i = 0; i < self->ob_count; i++)
        if (self->obs [i])
            total += self->obs [i]->visible;
    return total;
}

uint64_t
funnel_engine_part_seq (funnel_engine_t *self, int part)
{
    if (part < 0 || part >= self->ob_count || !self->obs [part])
        return 0;
    return self->obs [part]->visible;
}

int
funnel_engine_event_part (funnel_engine_t *self, const funnel_event_t *ev)
{
    return funnel_topology_event_part (self->svc, ev->data, self->cfg.partitions);
}

//  The outbox an output of partition part goes to.
static outbox_t *
s_outbox_of (funnel_engine_t *self, int part)
{
    if (!self->cfg.part_outbox)
        return self->obs [0];
    return part >= 0 && part < self->ob_count ? self->obs [part] : NULL;
}

static void
s_put_u64 (zhashx_t *map, const char *key, uint64_t value)
{
    uint64_t *slot = (uint64_t *) malloc (sizeof (uint64_t));
    *slot = value;
    zhashx_update (map, key, slot);
}

static uint64_t
s_get_u64 (zhashx_t *map, const char *key)
{
    uint64_t *slot = (uint64_t *) zhashx_lookup (map, key);
    return slot ? *slot : 0;
}

//  Where to resume upstream: the oldest of the owned partitions'
//  checkpoints (each partition applies only the events routed to it).
uint64_t
funnel_engine_checkpoint (funnel_engine_t *self, const char *upstream)
{
    uint64_t lowest = UINT64_MAX;
    for (int i = 0; i < self->ob_count; i++)
        if (self->obs [i]) {
            uint64_t value = s_get_u64 (self->obs [i]->ckpts, upstream);
            if (value < lowest)
                lowest = value;
        }
    return lowest == UINT64_MAX ? 0 : lowest;
}

static uint64_t
s_outbox_bytes (funnel_engine_t *self)
{
    uint64_t total = 0;
    for (int i = 0; i < self->ob_count; i++)
        for (uint64_t *v = self->obs [i] ? (uint64_t *) zhashx_first (self->obs [i]->bucket_bytes)
                                         : NULL;
             v; v = (uint64_t *) zhashx_next (self->obs [i]->bucket_bytes))
            total += *v;
    return total;
}

static size_t
s_subscribers (funnel_engine_t *self)
{
    size_t total = 0;
    for (int i = 0; i < self->ob_count; i++)
        if (self->obs [i])
            total += zhashx_size (self->obs [i]->subs);
    return total;
}

static void
s_step_down (funnel_engine_t *self, int part, const char *holder)
{
    //  A lease id: P is the base lease, P + 1 + p partition p's copy
    if (part > self->cfg.partitions)
        part -= self->cfg.partitions + 1;
    if (!self->lost)
        log_error ("lease of partition %d lost (now held by '%s'); another instance "
                   "owns this service: stepping down", part, holder ? holder : "nobody");
    self->lost = true;
    self->generation = 0;
    funnel_state_clear (self->state);
}

//  ---------------------------------------------------------------------
//  Sync: leases, fence, seq, checkpoints

//  The owner part of a lease value "<token>|<owner>".
static const char *
s_lease_owner (const char *value)
{
    const char *bar = value ? strchr (value, '|') : NULL;
    return bar ? bar + 1 : "";
}

//  Appends WATCH + MGET of every owned lease key (2 replies).
static void
s_append_fence (funnel_engine_t *self, redisContext *ctx)
{
    int n = self->mine_count;
    const char **argv = (const char **) malloc ((n + 1) * sizeof (char *));
    argv [0] = "WATCH";
    for (int i = 0; i < n; i++)
        argv [i + 1] = self->lease_keys [self->mine [i]];
    funnel_redis_append (ctx, n + 1, argv, NULL);
    argv [0] = "MGET";
    funnel_redis_append (ctx, n + 1, argv, NULL);
    free (argv);
}

//  Checks an MGET of the owned lease keys: every one must be ours.
static int
s_check_fence (funnel_engine_t *self, const redisReply *mget)
{
    if (!mget || mget->type != REDIS_REPLY_ARRAY
    ||  mget->elements != (size_t) self->mine_count) {
        s_step_down (self, 0, "?");
        return -1;
    }
    for (int i = 0; i < self->mine_count; i++) {
        const redisReply *v = mget->element [i];
        if (v->type != REDIS_REPLY_STRING || strcmp (v->str, self->lease_value) != 0) {
            s_step_down (self, self->mine [i],
                         v->type == REDIS_REPLY_STRING ? s_lease_owner (v->str) : NULL);
            return -1;
        }
    }
    return 0;
}

//  Takes every owned partition's lease, or finds one held by another owner.
static int
s_take_leases (funnel_engine_t *self, funnel_error_t *err)
{
    const char *incr [] = { "INCR", self->fence_key };
    s_send (self, 2, incr, NULL);
    redisReply *token = NULL;
    if (s_recv (self, &token, 1) != 0)
        return s_unavailable (err);
    if (token->type != REDIS_REPLY_INTEGER) {
        funnel_error_set (err, FUNNEL_ERR_UNAVAILABLE, "redis: INCR %s: %s", self->fence_key,
                          token->type == REDIS_REPLY_ERROR ? token->str : "unexpected reply");
        freeReplyObject (token);
        return -1;
    }
    snprintf (self->lease_value, sizeof self->lease_value, "%lld|%s",
              token->integer, self->owner);
    freeReplyObject (token);
    char px [24];
    snprintf (px, sizeof px, "%d", self->cfg.lease_ms);
    int n = self->lease_count;
    redisReply **replies = (redisReply **) zmalloc ((n + 1) * sizeof (redisReply *));
    int rc = 0;
    //  Two passes: NX first; then a partition still held by our own owner
    //  (a predecessor on our endpoint, gone since we could bind it) is
    //  taken over; one held by another owner stops us
    for (int pass = 0; pass < 2 && rc == 0; pass++) {
        for (int i = 0; i < n; i++) {
            const char *key = self->lease_keys [self->lease_ids [i]];
            const char *set [] = { "SET", key, self->lease_value, "PX", px, "NX" };
            const char *get [] = { "GET", key };
            if (pass == 0)
                s_send (self, 6, set, NULL);
            else
                s_send (self, 2, get, NULL);
        }
        if (s_recv (self, replies, n) != 0) {
            free (replies);
            return s_unavailable (err);
        }
        for (int i = 0; i < n && rc == 0; i++) {
            redisReply *r = replies [i];
            if (r->type == REDIS_REPLY_ERROR)
                rc = funnel_error_set (err, FUNNEL_ERR_UNAVAILABLE, "redis: lease: %s", r->str);
            else
            if (pass == 1 && r->type == REDIS_REPLY_STRING
            &&  strcmp (r->str, self->lease_value) != 0) {
                if (strcmp (s_lease_owner (r->str), self->owner) != 0)
                    rc = FUNNEL_ENGINE_LEASE_HELD;
                if (rc)
                    funnel_error_set (err, FUNNEL_ERR_UNAVAILABLE,
                        "partition %d is owned by another instance ('%s')",
                        self->lease_ids [i] > self->cfg.partitions
                        ? self->lease_ids [i] - self->cfg.partitions - 1 : self->lease_ids [i],
                        s_lease_owner (r->str));
            }
        }
        s_free_replies (replies, n);
    }
    if (rc == 0) {
        //  Ours, or our own predecessor's: (re)write them all with our token
        for (int i = 0; i < n; i++) {
            const char *set [] = { "SET", self->lease_keys [self->lease_ids [i]], self->lease_value,
                                   "PX", px };
            s_send (self, 5, set, NULL);
        }
        if (s_recv (self, replies, n) != 0)
            rc = s_unavailable (err);
        else
            s_free_replies (replies, n);
    }
    free (replies);
    self->renewed = zclock_mono ();
    return rc;
}

static void
s_fill_u64 (zhashx_t *map, const redisReply *hgetall)
{
    zhashx_purge (map);
    for (size_t i = 0; hgetall->type == REDIS_REPLY_ARRAY && i + 1 < hgetall->elements; i += 2)
        s_put_u64 (map, hgetall->element [i]->str,
                   strtoull (hgetall->element [i + 1]->str, NULL, 10));
}

//  A cluster: where records live depends on one or several instances
//  (funnel_state_set_shared), so that too is fixed for the life of the
//  data. The partition count and the layout are recorded together, in one
//  transaction of the base slot (two instances starting at once on fresh
//  data must not take each other's half for old data); data recorded
//  before the layout key existed is one instance's.
static int
s_check_layout (funnel_engine_t *self, const char *parts, funnel_error_t *err)
{
    char key [KEY_MAX];
    snprintf (key, sizeof key, "%slayout", self->prefix);
    const char *mine = self->shared ? "shared" : "partitioned";
    redis_pipeline_t *rt = redis_pipeline_new ();
    redis_pipeline_append (rt, 1, (const char *[]) { "MULTI" }, NULL);
    redis_pipeline_append (rt, 4, (const char *[]) { "SET", self->partitions_key, parts, "NX" },
                           NULL);
    redis_pipeline_append (rt, 4, (const char *[]) { "SET", key, mine, "NX" }, NULL);
    redis_pipeline_append (rt, 2, (const char *[]) { "GET", self->partitions_key }, NULL);
    redis_pipeline_append (rt, 2, (const char *[]) { "GET", key }, NULL);
    redis_pipeline_append (rt, 1, (const char *[]) { "EXEC" }, NULL);
    redisReply *r [6] = { NULL };
    int rc = redis_cluster_run (self->cluster, self->base_slot, rt, r, err);
    redis_pipeline_destroy (&rt);
    if (rc != 0)
        return s_unavailable (err);
    redisReply *exec = r [5];
    if (exec->type != REDIS_REPLY_ARRAY || exec->elements != 4
    ||  exec->element [2]->type != REDIS_REPLY_STRING
    ||  exec->element [3]->type != REDIS_REPLY_STRING) {
        s_free_replies (r, 6);
        return s_unavailable (err);
    }
    const char *stored = exec->element [3]->str;
    //  Old data: the count was there, the layout was not (set just now)
    bool old = exec->element [0]->type == REDIS_REPLY_NIL
            && exec->element [1]->type == REDIS_REPLY_STATUS;
    if (old) {
        stored = "partitioned";
        if (self->shared) {
            s_send (self, 3, (const char *[]) { "SET", key, stored }, NULL);
            redisReply *fix = NULL;
            if (s_recv (self, &fix, 1) == 0)
                freeReplyObject (fix);
        }
    }
    if (strcmp (exec->element [2]->str, parts) != 0) {
        funnel_error_set (err, FUNNEL_ERR_INTERNAL,
                          "partitions = %s, but this service's data in Redis is in %.16s "
                          "partitions (%s): the count is fixed for the life of the data",
                          parts, exec->element [2]->str, self->partitions_key);
        rc = FUNNEL_ENGINE_LAYOUT;
    }
    else
    if (strcmp (stored, mine) != 0) {
        funnel_error_set (err, FUNNEL_ERR_INTERNAL,
                          "cluster layout: the data was written by %s (%.40s = '%.11s'), "
                          "this topology runs %s; one or several instances on a cluster is "
                          "fixed for the life of the data",
                          streq (stored, "shared") ? "several instances" : "one instance",
                          key, stored, self->shared ? "several instances" : "one instance");
        rc = FUNNEL_ENGINE_LAYOUT;
    }
    s_free_replies (r, 6);
    return rc;
}

//  The partition count is fixed for the life of the data: a record is
//  found by hash mod P, so another P would silently miss every record and
//  seq. The first start records P; every start checks it.
static int
s_check_partitions (funnel_engine_t *self, funnel_error_t *err)
{
    char mine [16];
    snprintf (mine, sizeof mine, "%d", self->cfg.partitions);
    if (self->cluster)
        return s_check_layout (self, mine, err);
    const char *set [] = { "SET", self->partitions_key, mine, "NX" };
    const char *get [] = { "GET", self->partitions_key };
    s_send (self, 4, set, NULL);
    s_send (self, 2, get, NULL);
    redisReply *r [2];
    if (s_recv (self, r, 2) != 0)
        return s_unavailable (err);
    int rc = 0;
    if (r [1]->type != REDIS_REPLY_STRING)
        rc = s_unavailable (err);
    else
    if (strcmp (r [1]->str, mine) != 0) {
        funnel_error_set (err, FUNNEL_ERR_INTERNAL,
                          "partitions = %s, but this service's data in Redis is in %.16s "
                          "partitions (%s): the count is fixed for the life of the data",
                          mine, r [1]->str, self->partitions_key);
        rc = FUNNEL_ENGINE_LAYOUT;
    }
    freeReplyObject (r [0]);
    freeReplyObject (r [1]);
    return rc;
}

//  Cluster: an intent id "<lease token>.<n>" as two numbers, for order.
static bool
s_intent_id (const char *text, uint64_t *token, uint64_t *n)
{
    char *end = NULL;
    *token = strtoull (text, &end, 10);
    if (*end != '.')
        return false;
    *n = strtoull (end + 1, &end, 10);
    return *end == 0 || *end == ':';
}

typedef struct {
    uint64_t token, n;
    int slot;
    const redisReply *field, *value;
} pending_t;

static int
s_pending_cmp (const void *a, const void *b)
{
    const pending_t *x = (const pending_t *) a, *y = (const pending_t *) b;
    if (x->token != y->token)
        return x->token < y->token ? -1 : 1;
    if (x->n != y->n)
        return x->n < y->n ? -1 : 1;
    return x->slot - y->slot;
}

//  Cluster, at sync: every group an intent holds ("<id>:<slot>" ->
//  "<count>\n<commands>") that its partition has not marked applied is
//  applied now, oldest intent first; then the field goes.
static int
s_recover_intents (funnel_engine_t *self, funnel_error_t *err)
{
    s_send (self, 2, (const char *[]) { "HGETALL", self->intents_key }, NULL);
    redisReply *all = NULL;
    if (s_recv (self, &all, 1) != 0)
        return s_unavailable (err);
    size_t count = all->type == REDIS_REPLY_ARRAY ? all->elements / 2 : 0;
    pending_t *pending = (pending_t *) zmalloc ((count + 1) * sizeof (pending_t));
    size_t n = 0;
    for (size_t i = 0; i < count; i++) {
        pending_t *p = &pending [n];
        p->field = all->element [2 * i];
        p->value = all->element [2 * i + 1];
        const char *colon = strrchr (p->field->str, ':');
        if (s_intent_id (p->field->str, &p->token, &p->n) && colon)
            p->slot = atoi (colon + 1);
        else
            p->slot = -1;
        n++;
    }
    qsort (pending, n, sizeof (pending_t), s_pending_cmp);
    int rc = 0;
    size_t applied = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        pending_t *p = &pending [i];
        int part = p->slot >= 0 && p->slot < REDIS_CLUSTER_SLOTS ? self->slot_part [p->slot] : -2;
        if (part == -3)
            continue;                   //  Another instance's partition: its own sync
        if (part >= 0) {
            char key [KEY_MAX];
            snprintf (key, sizeof key, "%sapplied", funnel_state_prefix (self->state, part));
            s_send (self, 2, (const char *[]) { "GET", key }, NULL);
            redisReply *mark = NULL;
            if (s_recv (self, &mark, 1) != 0) {
                rc = s_unavailable (err);
                break;
            }
            uint64_t token = 0, done = 0;
            bool marked = mark->type == REDIS_REPLY_STRING && s_intent_id (mark->str, &token, &done)
                       && (token > p->token || (token == p->token && done >= p->n));
            freeReplyObject (mark);
            const char *body = p->value->str, *newline = memchr (body, '\n', p->value->len);
            if (!marked && newline) {
                redis_pipeline_t *cmds = redis_pipeline_new ();
                redis_pipeline_append_raw (cmds, newline + 1,
                                           p->value->len - (size_t) (newline + 1 - body),
                                           strtoull (body, NULL, 10));
                char id [48];
                snprintf (id, sizeof id, "%" PRIu64 ".%" PRIu64, p->token, p->n);
                redis_pipeline_reset (self->extra);
                redis_pipeline_append (self->extra, 3, (const char *[]) { "SET", key, id }, NULL);
                long long acked = 0;
                int txn = s_txn (self, p->slot, part, cmds, self->extra, false, false, false,
                                 &acked, err);
                redis_pipeline_destroy (&cmds);
                if (txn != TXN_OK) {
                    rc = -1;
                    break;
                }
                applied++;
            }
        }
        s_send (self, 3, (const char *[]) { "HDEL", self->intents_key, p->field->str }, NULL);
        redisReply *r = NULL;
        if (s_recv (self, &r, 1) != 0)
            rc = s_unavailable (err);
        else
            freeReplyObject (r);
    }
    if (applied)
        log_info ("completed %zu partition transaction(s) of batches a stop had interrupted",
                  applied);
    free (pending);
    freeReplyObject (all);
    return rc;
}

int
funnel_engine_sync (funnel_engine_t *self, funnel_error_t *err)
{
    if (self->lost)
        return funnel_error_set (err, FUNNEL_ERR_UNAVAILABLE, "lease lost: stepped down");
    self->generation = 0;
    funnel_state_clear (self->state);
    if (funnel_engine_connect (self) != 0)
        return s_unavailable (err);
    uint64_t generation = self->cluster ? 1 : redis_store_generation (self->store);
    if (self->cluster) {
        s_queue_drop (self);
        zlist_purge (self->intents_done);
        //  Taking the leases writes them: every fence is armed anew
        for (int i = 0; i < self->armed_max; i++)
            self->armed [i] = 0;
    }
    int rc = s_check_partitions (self, err);
    if (rc != 0)
        return rc;
    rc = s_take_leases (self, err);
    if (rc != 0)
        return rc;
    //  A cluster: batches a stop interrupted between two transactions are
    //  completed before anything reads seq or checkpoints
    if (self->cluster && s_recover_intents (self, err) != 0)
        return -1;
    //  One server: the fence is armed in the same round trip (a cluster
    //  fences each transaction by itself)
    size_t count = 0;
    if (!self->cluster) {
        s_append_fence (self, redis_store_context (self->store));
        count = 2;
    }
    size_t first = count;
    //  Per outbox: seq, start, checkpoints, subscribers, bucket sizes
    for (int i = 0; i < self->ob_count; i++) {
        outbox_t *ob = self->obs [i];
        if (!ob)
            continue;
        s_send (self, 2, (const char *[]) { "GET", ob->seq_key }, NULL);
        s_send (self, 2, (const char *[]) { "GET", ob->ob_first_key }, NULL);
        s_send (self, 2, (const char *[]) { "HGETALL", ob->ckpt_key }, NULL);
        s_send (self, 2, (const char *[]) { "HGETALL", ob->subs_key }, NULL);
        s_send (self, 2, (const char *[]) { "HGETALL", ob->ob_size_key }, NULL);
        count += 5;
    }
    redisReply **r = (redisReply **) zmalloc ((count + 1) * sizeof (redisReply *));
    if (s_recv (self, r, count) != 0) {
        free (r);
        return s_unavailable (err);
    }
    if (!self->cluster && s_check_fence (self, r [1]) != 0) {
        s_free_replies (r, count);
        free (r);
        return funnel_error_set (err, FUNNEL_ERR_UNAVAILABLE, "lease lost while syncing");
    }
    size_t at = first;
    for (int i = 0; i < self->ob_count; i++) {
        outbox_t *ob = self->obs [i];
        if (!ob)
            continue;
        ob->seq = r [at]->type == REDIS_REPLY_STRING ? strtoull (r [at]->str, NULL, 10) : 0;
        //  redis/acks: what was hidden before a reconnect stays hidden until a
        //  WAIT covers it (a restarted process shows what Redis has)
        if (self->cfg.acks == 0 || ob->visible == 0 || ob->visible > ob->seq)
            ob->visible = ob->seq;
        ob->ob_first = r [at + 1]->type == REDIS_REPLY_STRING
                     ? strtoull (r [at + 1]->str, NULL, 10) : 1;
        s_fill_u64 (ob->ckpts, r [at + 2]);
        s_fill_u64 (ob->subs, r [at + 3]);
        s_fill_u64 (ob->bucket_bytes, r [at + 4]);
        at += 5;
    }
    s_free_replies (r, count);
    free (r);
    self->generation = generation;
    return 0;
}

//  ---------------------------------------------------------------------
//  Reads: the batch's misses in one round trip

static int
s_loader (void *arg, funnel_state_t *st, funnel_rec_t **recs, size_t count)
{
    funnel_engine_t *self = (funnel_engine_t *) arg;
    if (!s_ready (self))
        return -1;
    for (size_t i = 0; i < count; i++) {
        const char *argv [] = { "HGETALL", funnel_rec_key (recs [i]) };
        //  Shared records: the commit aborts if another instance changes it
        if (self->occ) {
            argv [0] = "WATCH";
            s_send (self, 2, argv, NULL);
            argv [0] = "HGETALL";
        }
        s_send (self, 2, argv, NULL);
    }
    for (size_t i = 0; i < count; i++) {
        redisReply *reply = NULL;
        if (self->occ) {
            if (s_recv (self, &reply, 1) != 0)
                return -1;
            freeReplyObject (reply);
        }
        if (s_recv (self, &reply, 1) != 0)
            return -1;
        funnel_state_fill (st, recs [i], reply);
        freeReplyObject (reply);
    }
    return 0;
}

static int
s_list_reader (void *arg, const char *key, int max, zlist_t *out)
{
    funnel_engine_t *self = (funnel_engine_t *) arg;
    if (!s_ready (self))
        return -1;
    char start [24];
    snprintf (start, sizeof start, "%d", -max);
    const char *argv [] = { "LRANGE", key, start, "-1" };
    redisReply *reply = NULL;
    //  Shared with other instances: WATCH it, in the same round trip
    if (self->occ) {
        const char *watch [] = { "WATCH", key };
        s_send (self, 2, watch, NULL);
    }
    s_send (self, 4, argv, NULL);
    if (self->occ) {
        if (s_recv (self, &reply, 1) != 0)
            return -1;
        freeReplyObject (reply);
    }
    if (s_recv (self, &reply, 1) != 0)
        return -1;
    int rc = reply->type == REDIS_REPLY_ARRAY ? 0 : -1;
    for (size_t i = 0; rc == 0 && i < reply->elements; i++)
        zlist_append (out, reply->element [i]->str);
    freeReplyObject (reply);
    return rc;
}

//  One entry of a person's outbox index: "<seq>" names the service's
//  outbox, "<part>:<seq>" a partition's (instances). Fills the entry's
//  bucket key and field; false if it cannot name a stored entry (trimmed
//  or never committed, by the bounds of an outbox we hold; malformed).
static bool
s_index_entry (funnel_engine_t *self, const char *text, char *bucket, size_t size,
               char field [24], bool *ours)
{
    int part;
    uint64_t seq;
    if (!funnel_state_index_entry (text, &part, &seq) || part >= self->cfg.partitions)
        return false;
    //  The outbox it names, if this engine holds it (its bounds are known)
    const outbox_t *ob = NULL;
    if (part < 0 && !self->cfg.part_outbox)
        ob = self->obs [0];
    else
    if (part >= 0 && self->cfg.part_outbox)
        ob = s_outbox_of (self, part);
    if (ob && (seq < ob->ob_first || seq > ob->seq))
        return false;
    *ours = ob != NULL;
    snprintf (bucket, size, "%sob:%" PRIu64,
              part < 0 ? self->prefix : funnel_state_prefix (self->state, part), seq / OB_BUCKET);
    snprintf (field, 24, "%" PRIu64, seq);
    return true;
}

//  Erasing a person: the outbox entries its index names that are still
//  held are rewritten in place (personal fields out, "redacted": true in;
//  same id, type, seq, cause, ts), and the index goes; both in the batch's
//  commit. One round trip for the index, one for the entries. With
//  instances an entry may sit in a partition another instance owns: its
//  bucket is WATCHed, so a trim or an append there meanwhile re-runs the
//  batch instead of the rewrite recreating a dropped bucket.
static int
s_redactor (void *arg, funnel_state_t *st, const char *person)
{
    funnel_engine_t *self = (funnel_engine_t *) arg;
    const funnel_personal_t *table = self->rules->personal;
    char key [KEY_MAX];
    if (!table || funnel_state_person_index_key (st, person, key, sizeof key) != 0)
        return 0;
    zlist_t *seqs = zlist_new ();
    zlist_autofree (seqs);
    if (s_list_reader (self, key, FUNNEL_PERSONAL_INDEX, seqs) != 0) {
        zlist_destroy (&seqs);
        return -1;
    }
    size_t asked = 0, sent = 0;
    char (*buckets) [KEY_MAX] = zmalloc ((zlist_size (seqs) + 1) * KEY_MAX);
    char (*fields) [24] = zmalloc ((zlist_size (seqs) + 1) * 24);
    bool *watched = (bool *) zmalloc ((zlist_size (seqs) + 1) * sizeof (bool));
    for (const char *s = zlist_first (seqs); s; s = zlist_next (seqs)) {
        bool ours = false;
        if (!s_index_entry (self, s, buckets [asked], KEY_MAX, fields [asked], &ours))
            continue;
        //  Several instances on a cluster: another's partition is written
        //  by it alone (proto/privacy.md)
        if (self->shared && !ours)
            continue;
        watched [asked] = self->occ && !ours;
        if (watched [asked]) {
            const char *watch [] = { "WATCH", buckets [asked] };
            s_send (self, 2, watch, NULL);
            sent++;
        }
        const char *hget [] = { "HGET", buckets [asked], fields [asked] };
        s_send (self, 3, hget, NULL);
        sent++;
        asked++;
    }
    zlist_destroy (&seqs);
    redisReply **replies = (redisReply **) zmalloc ((sent + 1) * sizeof (redisReply *));
    if (sent > 0 && s_recv (self, replies, sent) != 0) {
        free (replies);
        free (buckets);
        free (fields);
        free (watched);
        return -1;
    }
    size_t at = 0;
    for (size_t i = 0; i < asked; i++) {
        at += watched [i];              //  Its WATCH's OK
        redisReply *r = replies [at++];
        outbox_entry_t entry;
        if (r->type != REDIS_REPLY_STRING
        ||  outbox_entry_parse (r->str, r->len, &entry) != 0)
            continue;
        char type [128];
        snprintf (type, sizeof type, "%.*s", (int) entry.type.size, entry.type.data);
        char *data = NULL;
        size_t size = 0;
        if (funnel_privacy_redact (entry.data.data, entry.data.size,
                                   funnel_privacy_fields (table, type), &data, &size) != 1)
            continue;
        entry.data.data = data;
        entry.data.size = size;
        size_t encoded_size = 0;
        char *encoded = outbox_entry_encode (&entry, &encoded_size);
        free (data);
        if (!encoded)
            continue;
        const char *hset [] = { "HSET", buckets [i], fields [i], encoded };
        size_t lens [] = { 4, strlen (buckets [i]), strlen (fields [i]), encoded_size };
        funnel_state_raw (st, 4, hset, lens);
        free (encoded);
    }
    s_free_replies (replies, sent);
    free (replies);
    free (buckets);
    free (fields);
    free (watched);
    const char *del [] = { "DEL", key };
    funnel_state_raw (st, 2, del, NULL);
    return 0;
}

//  The partition an applied id is remembered in: the id's own; with
//  several instances on a cluster, the event's (owned: only its owner
//  writes there, in the partition's transaction).
static int
s_dedup_part (funnel_engine_t *self, const funnel_event_t *ev)
{
    return self->shared ? funnel_engine_event_part (self, ev)
                        : funnel_partition_of (ev->id, self->cfg.partitions);
}

//  "<partition prefix>id:<escaped id>"
static void
s_dedup_key (funnel_engine_t *self, const char *id, int part, char *key, size_t size)
{
    const char *prefix = funnel_state_prefix (self->state, part);
    size_t prefix_len = strlen (prefix);
    //  Ids are ≤ 64 bytes: a short key always fits
    if (prefix_len + 3 >= size
    ||  funnel_key_escape (id, key + prefix_len + 3, size - prefix_len - 3) < 0) {
        key [0] = 0;
        return;
    }
    memcpy (key, prefix, prefix_len);
    memcpy (key + prefix_len, "id:", 3);
}

//  Runs the prefetch callbacks, then in one round trip reads the dedup
//  keys (seen[i] = already applied; NULL: none) and every missed record.
static int
s_prefetch (funnel_engine_t *self, const funnel_event_t *events, size_t count,
            const funnel_rule_t *table, bool *seen)
{
    for (size_t i = 0; i < count; i++)
        for (const funnel_rule_t *r = table; r && r->type; r++)
            if (r->prefetch && streq (r->type, events [i].type))
                r->prefetch (self->state, &events [i]);
    funnel_rec_t **recs;
    size_t wanted = funnel_state_take_wants (self->state, &recs);
    size_t sent = 0;
    //  A cluster: one GET per key (an MGET's keys must share a slot); the
    //  ids are WATCHed on one server only (on a cluster each is in a
    //  partition we own: no other instance writes it)
    bool split = self->cluster != NULL;
    bool watch_ids = self->occ && !self->cluster;
    if (seen && count > 0) {
        //  The keys' buffer is kept from batch to batch: a fresh 512 kB
        //  one per batch cost page faults on every batch
        if (self->keys_size < count * 512) {
            free (self->keys);
            self->keys_size = count * 512;
            self->keys = (char *) malloc (self->keys_size);
            assert (self->keys);
        }
        const char **argv = (const char **) malloc ((count + 1) * sizeof (char *));
        argv [0] = "WATCH";
        for (size_t i = 0; i < count; i++) {
            s_dedup_key (self, events [i].id, s_dedup_part (self, &events [i]),
                         self->keys + i * 512, 512);
            argv [i + 1] = self->keys + i * 512;
        }
        if (watch_ids)
            s_send (self, (int) count + 1, argv, NULL);
        if (split)
            for (size_t i = 0; i < count; i++)
                s_send (self, 2, (const char *[]) { "GET", argv [i + 1] }, NULL);
        else {
            argv [0] = "MGET";
            s_send (self, (int) count + 1, argv, NULL);
        }
        free (argv);
        sent += split ? count : 1;
    }
    if (self->occ && wanted > 0) {
        const char **argv = (const char **) malloc ((wanted + 1) * sizeof (char *));
        argv [0] = "WATCH";
        for (size_t i = 0; i < wanted; i++)
            argv [i + 1] = funnel_rec_key (recs [i]);
        s_send (self, (int) wanted + 1, argv, NULL);
        free (argv);
    }
    size_t watches = (watch_ids && seen && count > 0) + (self->occ && wanted > 0);
    for (size_t i = 0; i < wanted; i++) {
        const char *argv [] = { "HGETALL", funnel_rec_key (recs [i]) };
        s_send (self, 2, argv, NULL);
    }
    sent += wanted;
    sent += watches;
    redisReply **replies = (redisReply **) zmalloc ((sent + 1) * sizeof (redisReply *));
    if (s_recv (self, replies, sent) != 0) {
        free (replies);
        return -1;
    }
    int rc = 0;
    size_t at = 0;
    if (seen && count > 0) {
        if (watch_ids)
            at++;                   //  The WATCH of the dedup keys
        if (split)
            for (size_t i = 0; i < count; i++, at++) {
                if (replies [at]->type == REDIS_REPLY_ERROR)
                    rc = -1;
                seen [i] = replies [at]->type == REDIS_REPLY_STRING;
            }
        else {
            redisReply *mget = replies [at++];
            if (mget->type != REDIS_REPLY_ARRAY || mget->elements != count)
                rc = -1;
            else
                for (size_t i = 0; i < count; i++)
                    seen [i] = mget->element [i]->type == REDIS_REPLY_STRING;
        }
    }
    if (self->occ && wanted > 0)
        at++;                       //  The WATCH of the records
    for (size_t i = 0; i < wanted; i++, at++)
        if (replies [at]->type == REDIS_REPLY_ARRAY)
            funnel_state_fill (self->state, recs [i], replies [at]);
        else
            rc = -1;
    s_free_replies (replies, sent);
    free (replies);
    return rc;
}

//  ---------------------------------------------------------------------
//  Commit

typedef struct {
    const char **ids;               //  Applied event ids to remember
    const int *id_parts;            //  ... in these partitions (s_dedup_part)
    size_t id_count;
    const char *upstream;           //  Checkpoint to write, or NULL
    uint64_t checkpoint;
    const char *by;                 //  Publisher's certificate name, or NULL
    bool replied;                   //  A client waits on it: WAIT for acks even
                                    //  when nothing is new (a retry's duplicates)
} commit_t;

//  One output as its outbox entry (outbox_entry.h); malloc'd.
static char *
s_entry (const funnel_output_t *out, int64_t ts, const char *by, size_t *size)
{
    outbox_entry_t entry = {
        .id = { out->id, strlen (out->id) },
        .type = { out->type, strlen (out->type) },
        .cause = { out->cause, strlen (out->cause) },
        .data = { out->data, out->size },
        .by = { by ? by : "", by ? strlen (by) : 0 },
        .ts = ts,
        .cause_ts = out->cause_ts
    };
    char *encoded = outbox_entry_encode (&entry, size);
    assert (encoded);
    return encoded;
}

//  The first queued command's error, for the log and the client.
static const char *
s_queue_error (redisReply **replies, size_t count)
{
    for (size_t i = 0; i < count; i++)
        if (replies [i]->type == REDIS_REPLY_ERROR)
            return replies [i]->str;
    return NULL;
}

//  Where the outbox may start after a commit that ends at seq: whole
//  buckets before the last `retention` seqs and before what the slowest
//  registered subscriber still needs are dropped; past the byte cap the
//  oldest buckets go anyway, and *lost counts the events dropped that a
//  subscriber still needed.
static int64_t
s_trim_point (funnel_engine_t *self, outbox_t *ob, uint64_t seq, zhashx_t *sizes,
              uint64_t *lost)
{
    int64_t keep = ((int64_t) seq - self->cfg.retention + 1) / OB_BUCKET * OB_BUCKET;
    for (uint64_t *need = (uint64_t *) zhashx_first (ob->subs); need;
         need = (uint64_t *) zhashx_next (ob->subs)) {
        int64_t sub_keep = (int64_t) (*need / OB_BUCKET * OB_BUCKET);
        if (sub_keep < keep)
            keep = sub_keep;
    }
    //  The byte cap: drop the oldest buckets (never the newest) until under
    uint64_t total = 0;
    for (uint64_t *v = (uint64_t *) zhashx_first (sizes); v; v = (uint64_t *) zhashx_next (sizes))
        total += *v;
    int64_t first = (int64_t) ob->ob_first;
    int64_t floor = keep > first ? keep : first;
    uint64_t last_bucket = seq / OB_BUCKET;
    for (uint64_t b = (uint64_t) first / OB_BUCKET; b < last_bucket; b++) {
        char name [24];
        snprintf (name, sizeof name, "%" PRIu64, b);
        uint64_t bytes = s_get_u64 (sizes, name);
        if ((int64_t) ((b + 1) * OB_BUCKET) <= floor) {
            total -= bytes;             //  Dropped by the rules above anyway
            continue;
        }
        if (total <= (uint64_t) self->cfg.outbox_max_bytes)
            break;
        total -= bytes;
        keep = (int64_t) ((b + 1) * OB_BUCKET);
    }
    *lost = 0;
    for (uint64_t *need = (uint64_t *) zhashx_first (ob->subs); need;
         need = (uint64_t *) zhashx_next (ob->subs))
        if ((int64_t) *need < keep)
            *lost += (uint64_t) keep - (*need > (uint64_t) first ? *need : (uint64_t) first);
    return keep;
}

//  After a trim that dropped events some subscribers still needed: one
//  error line per gap, and those subscribers now need the new start.
static void
s_count_losses (funnel_engine_t *self, outbox_t *ob, uint64_t first, uint64_t lost)
{
    if (lost == 0)
        return;
    for (uint64_t *need = (uint64_t *) zhashx_first (ob->subs); need;
         need = (uint64_t *) zhashx_next (ob->subs))
        if (*need < first) {
            log_error ("outbox%s over its byte cap (%" PRId64 " bytes): subscriber %s loses "
                       "seqs %" PRIu64 "..%" PRIu64 " (STATS outbox_lost counts them)",
                       ob->prefix, self->cfg.outbox_max_bytes,
                       (const char *) zhashx_cursor (ob->subs), *need, first - 1);
            *need = first;
        }
}

//  Appends one outbox's share of a commit (its outputs ob->outs, contiguous
//  seqs, one HSET per bucket of 1000, the sizes, seq, trim); the results
//  wait in ob->new_* until the commit succeeds. Returns commands appended.
static size_t
s_append_outbox (funnel_engine_t *self, outbox_t *ob, funnel_redis_sink_fn *sink, void *arg,
                 char **entries, size_t *entry_sizes, char (*seqs) [24], int64_t now,
                 const char *by)
{
    funnel_state_t *st = self->state;
    size_t sent = 0;
    char number [24];
    uint64_t seq = ob->seq;
    zhashx_destroy (&ob->new_sizes);
    ob->new_sizes = zhashx_new ();
    zhashx_set_destructor (ob->new_sizes, s_free_item);
    for (uint64_t *v = (uint64_t *) zhashx_first (ob->bucket_bytes); v;
         v = (uint64_t *) zhashx_next (ob->bucket_bytes))
        s_put_u64 (ob->new_sizes, (const char *) zhashx_cursor (ob->bucket_bytes), *v);
    size_t outputs = ob->out_count;
    for (size_t i = 0; i < outputs; ) {
        uint64_t bucket = (seq + 1) / OB_BUCKET;
        char key [KEY_MAX];
        snprintf (key, sizeof key, "%sob:%" PRIu64, ob->prefix, bucket);
        size_t n = 0;
        while (i + n < outputs && (seq + 1 + n) / OB_BUCKET == bucket)
            n++;
        const char **argv = (const char **) malloc ((2 + 2 * n) * sizeof (char *));
        size_t *lens = (size_t *) malloc ((2 + 2 * n) * sizeof (size_t));
        argv [0] = "HSET";
        lens [0] = 4;
        argv [1] = key;
        lens [1] = strlen (key);
        uint64_t bytes = 0;
        for (size_t j = 0; j < n; j++) {
            size_t k = ob->outs [i + j];
            s_int_text ((int64_t) (seq + 1 + j), seqs [k]);
            entries [k] = s_entry (funnel_state_output (st, k), now, by, &entry_sizes [k]);
            argv [2 + 2 * j] = seqs [k];
            lens [2 + 2 * j] = strlen (seqs [k]);
            argv [3 + 2 * j] = entries [k];
            lens [3 + 2 * j] = entry_sizes [k];
            bytes += entry_sizes [k] + strlen (seqs [k]);
        }
        sink (arg, (int) (2 + 2 * n), argv, lens);
        sent++;
        //  Bytes per bucket, for the outbox's memory cap
        char bucket_name [24], bytes_text [24];
        snprintf (bucket_name, sizeof bucket_name, "%" PRIu64, bucket);
        snprintf (bytes_text, sizeof bytes_text, "%" PRIu64, bytes);
        const char *size_cmd [] = { "HINCRBY", ob->ob_size_key, bucket_name, bytes_text };
        sink (arg, 4, size_cmd, NULL);
        sent++;
        s_put_u64 (ob->new_sizes, bucket_name, s_get_u64 (ob->new_sizes, bucket_name) + bytes);
        free (argv);
        free (lens);
        i += n;
        seq += n;
    }
    ob->new_seq = seq;
    ob->new_first = ob->ob_first;
    ob->lost = 0;
    if (outputs == 0)
        return sent;
    snprintf (number, sizeof number, "%" PRIu64, seq);
    const char *set_seq [] = { "SET", ob->seq_key, number };
    sink (arg, 3, set_seq, NULL);
    sent++;
    int64_t keep = s_trim_point (self, ob, seq, ob->new_sizes, &ob->lost);
    if (keep > (int64_t) ob->ob_first) {
        for (uint64_t b = ob->ob_first / OB_BUCKET; b < (uint64_t) keep / OB_BUCKET; b++) {
            char key [KEY_MAX], name [24];
            snprintf (key, sizeof key, "%sob:%" PRIu64, ob->prefix, b);
            snprintf (name, sizeof name, "%" PRIu64, b);
            const char *del [] = { "UNLINK", key };
            sink (arg, 2, del, NULL);
            const char *hdel [] = { "HDEL", ob->ob_size_key, name };
            sink (arg, 3, hdel, NULL);
            sent += 2;
            zhashx_delete (ob->new_sizes, name);
        }
        if (ob->lost > 0) {
            snprintf (number, sizeof number, "%" PRIu64, ob->lost);
            const char *incr [] = { "HINCRBY", self->stats_key, "outbox_lost", number };
            sink (arg, 4, incr, NULL);
            sent++;
        }
        ob->new_first = (uint64_t) keep;
        snprintf (number, sizeof number, "%" PRIu64, ob->new_first);
        const char *set_first [] = { "SET", ob->ob_first_key, number };
        sink (arg, 3, set_first, NULL);
        sent++;
    }
    return sent;
}

//  The outbox output k of the batch goes to (its event's partition's).
static outbox_t *
s_output_outbox (funnel_engine_t *self, size_t k)
{
    int part = k < self->out_parts_len ? self->out_parts [k] : 0;
    outbox_t *ob = s_outbox_of (self, part);
    return ob ? ob : s_outbox_of (self, self->mine [0]);   //  Cannot happen: routed to ours
}

//  redis/acks: some outbox holds seqs no WAIT has covered yet
static bool
s_hidden (funnel_engine_t *self)
{
    for (int i = 0; i < self->ob_count; i++)
        if (self->obs [i] && self->obs [i]->visible < self->obs [i]->seq)
            return true;
    return false;
}

//  One server: the built transaction (sent commands, MULTI first) ends
//  with the renewals, EXEC, WAIT and the fence, and its replies are
//  read. TXN_* as s_txn; *acked: replicas WAIT counted.
static int
s_commit_single (funnel_engine_t *self, redisContext *ctx, size_t sent, bool renew, bool wait,
                 long long *acked, funnel_error_t *err)
{
    funnel_state_t *st = self->state;
    funnel_savepoint_t zero = { 0 };
    //  Lease renewal inside the transaction: our own write to a watched
    //  key cannot abort this EXEC (WATCH is checked before it runs)
    if (renew) {
        char px [24];
        snprintf (px, sizeof px, "%d", self->cfg.lease_ms);
        for (int i = 0; i < self->mine_count; i++) {
            const char *set [] = { "SET", self->lease_keys [self->mine [i]], self->lease_value,
                                   "PX", px };
            funnel_redis_append (ctx, 5, set, NULL);
            sent++;
        }
    }
    redisAppendCommand (ctx, "EXEC");
    size_t exec_at = sent++;
    size_t wait_at = 0;
    if (wait) {
        redisAppendCommand (ctx, "WAIT %d %d", self->cfg.acks, self->cfg.acks_timeout_ms);
        wait_at = sent++;
    }
    s_append_fence (self, ctx);
    sent += 2;

    redisReply **replies = (redisReply **) zmalloc (sent * sizeof (redisReply *));
    int rc = TXN_OK;
    if (s_read (self, replies, sent) != 0) {
        free (replies);
        log_warn ("commit: connection lost before the reply; outcome unknown");
        return TXN_UNKNOWN;
    }
    redisReply *exec = replies [exec_at];
    if (exec->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i < exec->elements && rc == TXN_OK; i++)
            if (exec->element [i]->type == REDIS_REPLY_ERROR) {
                //  Cannot happen by construction (keys of known types)
                log_error ("commit: command %zu failed inside EXEC: %s; state may be "
                           "partly applied", i, exec->element [i]->str);
                rc = funnel_error_set (err, FUNNEL_ERR_INTERNAL,
                                       "store: a commit command failed: %s",
                                       exec->element [i]->str);
                rc = TXN_UNKNOWN;
            }
    }
    else
    if (exec->type == REDIS_REPLY_NIL) {
        //  WATCH: a lease key changed since our last commit, or (with
        //  several instances) a shared record we read
        funnel_state_rollback (st, zero);
        if (self->occ && s_check_fence (self, replies [sent - 1]) == 0)
            rc = ENGINE_RETRY;
        else {
            s_check_fence (self, replies [sent - 1]);
            if (!self->lost)
                s_step_down (self, 0, "?");
            funnel_error_set (err, FUNNEL_ERR_UNAVAILABLE,
                "lease: another instance owns this service now; nothing was applied");
            rc = TXN_LOST;
        }
    }
    else {
        //  EXECABORT: a command was refused while queueing (OOM,
        //  MISCONF, READONLY, LOADING, BUSY...): nothing ran
        const char *why = s_queue_error (replies, exec_at);
        if (!why)
            why = exec->type == REDIS_REPLY_ERROR ? exec->str : "unexpected reply";
        funnel_error_set (err, FUNNEL_ERR_UNAVAILABLE,
            "redis: %.120s; nothing was applied; retry later with the same ids", why);
        if (funnel_log_every (&self->last_warn, 1000))
            log_warn ("commit refused by redis: %s", why);
        rc = TXN_REFUSED;
    }
    if (rc == TXN_OK && !self->lost && s_check_fence (self, replies [sent - 1]) != 0)
        log_error ("commit applied, then the lease was found lost");
    if (rc == TXN_OK && wait)
        *acked = replies [wait_at]->type == REDIS_REPLY_INTEGER ? replies [wait_at]->integer : 0;
    for (int i = 0; i < self->ob_count; i++)
        if (self->obs [i])
            self->obs [i]->touched = true;
    s_free_replies (replies, sent);
    free (replies);
    return rc;
}

//  A round: groups not done whose node is armed, at most one per node.
static int
s_round_pick (funnel_engine_t *self, const bool *done, int *picked)
{
    int np = 0;
    int nodes [64];
    for (int g = 0; g < self->group_count && np < 64; g++) {
        const group_t *grp = &self->groups [g];
        if (done [g] || grp->lease < -1)
            continue;
        uint64_t gen = 0;
        int node = redis_cluster_conn_of (self->cluster, grp->slot, &gen);
        if (!s_armed (self, node, gen))
            continue;
        bool taken = false;
        for (int i = 0; i < np && !taken; i++)
            taken = nodes [i] == node;
        if (!taken) {
            nodes [np] = node;
            picked [np++] = g;
        }
    }
    return np;
}

//  Sends each picked group's transaction to its node, then reads each:
//  rcs[i] as s_txn's (TXN_RETRY: nothing ran, for s_txn to do it alone).
static void
s_round_run (funnel_engine_t *self, const int *picked, int np, bool renew, bool wait,
             long long *counts, int *rcs, funnel_error_t *err)
{
    trip_t *trips = (trip_t *) zmalloc ((size_t) np * sizeof (trip_t));
    bool *sent = (bool *) zmalloc ((size_t) np * sizeof (bool));
    for (int i = 0; i < np; i++) {
        group_t *grp = &self->groups [picked [i]];
        trip_t *trip = &trips [i];
        trip->rt = grp->rt;
        trip->arms = (int *) zmalloc ((size_t) (self->lease_count + 1) * sizeof (int));
        trip->node = redis_cluster_conn_of (self->cluster, grp->slot, &trip->gen);
        s_trip_build (self, trip, grp->slot, grp->lease >= -1, grp->cmds, grp->extra,
                      renew, wait);
        rcs [i] = TXN_RETRY;
        counts [i] = 0;
        sent [i] = redis_cluster_send_on (self->cluster, trip->node, trip->gen, trip->rt,
                                          err) == 0;
        if (!sent [i]) {
            s_set_armed (self, trip->node, 0);
            if (strstr (err->message, "outcome is unknown"))
                rcs [i] = TXN_UNKNOWN;
        }
    }
    for (int i = 0; i < np; i++) {
        trip_t *trip = &trips [i];
        if (sent [i]) {
            size_t count = redis_pipeline_count (trip->rt);
            redisReply **replies = (redisReply **) zmalloc ((count + 1) * sizeof (redisReply *));
            if (redis_cluster_recv_on (self->cluster, trip->node, trip->rt, replies, err) != 0) {
                s_set_armed (self, trip->node, 0);
                rcs [i] = TXN_UNKNOWN;
            }
            else {
                char why [200];
                rcs [i] = s_trip_judge (self, trip, true, replies, &counts [i], why, sizeof why,
                                        err);
            }
            free (replies);
        }
        free (trip->arms);
    }
    free (trips);
    free (sent);
}

//  A cluster: the commit's groups (one per slot), each its own fenced
//  transaction; several of them through an intent (see "Redis Cluster").
static int
s_commit_cluster (funnel_engine_t *self, bool renew, bool wait, long long *acked,
                  funnel_error_t *err)
{
    int P = self->cfg.partitions;
    //  A renewal renews every lease, each in a transaction of its slot
    if (renew)
        for (int i = 0; i < self->lease_count; i++)
            s_group_of (self, self->lease_slots [self->lease_ids [i]]);
    //  Shared records: the base transaction checks every record the batch
    //  read (WATCH) and is its point of no return, whatever it writes
    if (self->shared)
        s_group_of (self, self->base_slot);
    int n = self->group_count;
    if (n == 0)
        return TXN_OK;
    for (int g = 0; g < n; g++)
        if (self->groups [g].lease == -3) {
            //  A partition of another instance: its lease fences it from us
            log_error ("commit: the batch writes slot %d, a partition another instance "
                       "owns; nothing was applied", self->groups [g].slot);
            funnel_error_set (err, FUNNEL_ERR_INTERNAL,
                "store: the batch writes a partition another instance owns (slot %d); "
                "nothing was applied", self->groups [g].slot);
            return TXN_REFUSED;
        }
    long long least = self->cfg.acks, count = 0;
    int rc = TXN_OK;
    if (n == 1) {
        group_t *g = &self->groups [0];
        rc = s_txn (self, g->slot, g->lease, g->cmds, NULL, renew, wait,
                    self->shared && g->slot == self->base_slot, &count, err);
        if (rc == TXN_OK && g->lease >= 0 && self->obs [g->lease])
            self->obs [g->lease]->touched = true;
        least = count;
    }
    else {
        //  The base group may be new here (a batch without base writes)
        int base = s_group_of (self, self->base_slot);
        n = self->group_count;
        char id [48];
        snprintf (id, sizeof id, "%" PRIu64 ".%" PRIu64,
                  (uint64_t) strtoull (self->lease_value, NULL, 10), ++self->intent_n);
        //  The base transaction stores every other group as "<id>:<slot>"
        //  and deletes the fields of intents applied since the last one
        redis_pipeline_t *extra = self->extra;
        redis_pipeline_reset (extra);
        char (*fields) [64] = zmalloc ((size_t) n * 64);
        for (int g = 0; g < n; g++) {
            fields [g][0] = 0;
            //  A group with nothing but its lease renewal needs no intent
            if (g == base || redis_pipeline_count (self->groups [g].cmds) == 0)
                continue;
            size_t size;
            const char *data = redis_pipeline_data (self->groups [g].cmds, &size);
            char head [24];
            int head_len = snprintf (head, sizeof head, "%zu\n",
                                     redis_pipeline_count (self->groups [g].cmds));
            char *value = (char *) malloc ((size_t) head_len + size + 1);
            assert (value);
            memcpy (value, head, (size_t) head_len);
            memcpy (value + head_len, data, size);
            snprintf (fields [g], 64, "%s:%d", id, self->groups [g].slot);
            const char *argv [] = { "HSET", self->intents_key, fields [g], value };
            size_t lens [] = { 4, strlen (self->intents_key), strlen (fields [g]),
                               (size_t) head_len + size };
            redis_pipeline_append (extra, 4, argv, lens);
            free (value);
        }
        size_t applied = zlist_size (self->intents_done);
        if (applied > 0) {
            const char **argv = (const char **) malloc ((applied + 2) * sizeof (char *));
            argv [0] = "HDEL";
            argv [1] = self->intents_key;
            size_t k = 2;
            for (const char *f = zlist_first (self->intents_done); f;
                 f = zlist_next (self->intents_done))
                argv [k++] = f;
            redis_pipeline_append (extra, (int) k, argv, NULL);
            free (argv);
        }
        group_t *b = &self->groups [base];
        rc = s_txn (self, b->slot, b->lease, b->cmds, extra, renew, wait, self->shared, &count,
                    err);
        if (rc == TXN_OK) {
            zlist_purge (self->intents_done);
            if (count < least)
                least = count;
            if (b->lease >= 0 && self->obs [b->lease])
                self->obs [b->lease]->touched = true;
        }
        //  The batch is durable from here: a group that fails now is
        //  completed by the next sync (the engine syncs again first)
        if (rc == TXN_OK && self->test_crash)
            rc = TXN_UNKNOWN;           //  As if killed right here
        //  The other groups. Those whose node is armed go in rounds, one
        //  per node: a round is sent to every node before any reply is read,
        //  so the nodes work at once. The others, and any that must retry,
        //  go one by one (s_txn arms their node, waits out redirects)
        bool *done = (bool *) zmalloc ((size_t) n * sizeof (bool));
        done [base] = true;
        for (int g = 0; g < n; g++) {
            group_t *grp = &self->groups [g];
            redis_pipeline_reset (grp->extra);
            if (g != base && grp->lease >= 0 && fields [g][0]) {
                char key [KEY_MAX];
                snprintf (key, sizeof key, "%sapplied",
                          funnel_state_prefix (self->state, grp->lease));
                redis_pipeline_append (grp->extra, 3, (const char *[]) { "SET", key, id }, NULL);
            }
        }
        int *picked = (int *) zmalloc ((size_t) n * sizeof (int));
        int *rcs = (int *) zmalloc ((size_t) n * sizeof (int));
        long long *counts = (long long *) zmalloc ((size_t) n * sizeof (long long));
        while (rc == TXN_OK) {
            int np = s_round_pick (self, done, picked);
            if (np >= 2)
                s_round_run (self, picked, np, renew, wait, counts, rcs, err);
            else {
                picked [0] = -1;
                for (int g = 0; g < n && picked [0] < 0; g++)
                    if (!done [g])
                        picked [0] = g;
                if (picked [0] < 0)
                    break;
                np = 1;
                rcs [0] = TXN_RETRY;
            }
            for (int i = 0; i < np && rc == TXN_OK; i++) {
                int g = picked [i];
                group_t *grp = &self->groups [g];
                if (rcs [i] == TXN_RETRY) {
                    counts [i] = 0;
                    rcs [i] = s_txn (self, grp->slot, grp->lease, grp->cmds, grp->extra, renew,
                                     wait, false, &counts [i], err);
                }
                done [g] = true;
                if (rcs [i] != TXN_OK) {
                    if (rcs [i] != TXN_LOST) {
                        log_warn ("commit: batch %s stored, its slot %d not applied yet (%s); "
                                  "completing it at the next sync", id, grp->slot, err->message);
                        funnel_error_set (err, FUNNEL_ERR_UNAVAILABLE,
                            "redis cluster: the batch is stored but slot %d is not written yet "
                            "(moving or failing over); it completes when the slot is back: "
                            "retry with the same ids", grp->slot);
                    }
                    rc = rcs [i] == TXN_LOST ? TXN_LOST : TXN_STORED;
                    break;
                }
                if (fields [g][0])
                    zlist_append (self->intents_done, fields [g]);
                if (counts [i] < least)
                    least = counts [i];
                if (grp->lease >= 0 && grp->lease < P && self->obs [grp->lease])
                    self->obs [grp->lease]->touched = true;
            }
        }
        free (done);
        free (picked);
        free (rcs);
        free (counts);
        free (fields);
    }
    *acked = least;
    return rc;
}

//  A cluster: one transaction per slot holding leases of ours, fenced as
//  any, that renews them all, or (release) deletes them all (one per
//  lease would find, in its fence, an earlier one already gone); 0 if
//  every one ran.
static int
s_lease_txns (funnel_engine_t *self, bool release, funnel_error_t *err)
{
    redis_pipeline_t *cmds = redis_pipeline_new ();
    int *here = (int *) zmalloc ((size_t) (self->lease_count + 1) * sizeof (int));
    int rc = 0;
    for (int i = 0; i < self->lease_count; i++) {
        int slot = self->lease_slots [self->lease_ids [i]];
        bool done = false;
        for (int j = 0; j < i && !done; j++)
            done = self->lease_slots [self->lease_ids [j]] == slot;
        if (done)
            continue;
        redis_pipeline_reset (cmds);
        int count = release ? s_slot_leases (self, slot, here) : 0;
        for (int k = 0; k < count; k++)
            redis_pipeline_append (cmds, 2, (const char *[]) { "DEL",
                                   self->lease_keys [here [k]] }, NULL);
        long long acked = 0;
        if (s_txn (self, slot, self->slot_part [slot], cmds, NULL, !release, false, false,
                   &acked, err) != TXN_OK)
            rc = -1;
    }
    free (here);
    redis_pipeline_destroy (&cmds);
    return rc;
}

//  Commits the state's write-set plus c; publishes the outputs. On any
//  failure the batch is rolled back in the cache too. ENGINE_RETRY: a
//  shared record changed under us (only with several instances): nothing
//  applied, run the batch again.
static int
s_commit (funnel_engine_t *self, const commit_t *c, funnel_error_t *err)
{
    funnel_state_t *st = self->state;
    funnel_savepoint_t zero = { 0 };
    if (!s_ready (self)) {
        funnel_state_rollback (st, zero);
        return s_unavailable (err);
    }
    int64_t started = zclock_usecs ();
    //  Where the commands go: the connection (one server) or the groups
    redisContext *ctx = self->cluster ? NULL : redis_store_context (self->store);
    funnel_redis_sink_fn *sink = self->cluster ? s_group_sink : funnel_redis_sink_ctx;
    void *arg = self->cluster ? (void *) self : (void *) ctx;
    int64_t now = funnel_state_now (st);
    char number [24], ttl [24];
    size_t sent = 0;
    if (self->cluster)
        s_groups_reset (self);
    else {
        redisAppendCommand (ctx, "MULTI");
        sent++;
    }
    //  Dedup ids: one key each, expiring on its own (incremental expiry)
    snprintf (ttl, sizeof ttl, "%" PRId64, self->cfg.dedup_ttl_s);
    for (size_t i = 0; i < c->id_count; i++) {
        char key [KEY_MAX];
        s_dedup_key (self, c->ids [i], c->id_parts [i], key, sizeof key);
        //  The value says who published it ('1': anonymous; proto/wire.md)
        const char *argv [] = { "SET", key, c->by && *c->by ? c->by : "1", "EX", ttl };
        sink (arg, 5, argv, NULL);
        sent++;
    }
    size_t outputs = funnel_state_output_count (st);
    if (outputs > 0)
        funnel_state_count (st, "events_out", (int64_t) outputs);
    sent += funnel_state_append_writes (st, sink, arg, self->stats_key);
    //  Each output to its outbox (the service's, or its partition's)
    for (int i = 0; i < self->ob_count; i++)
        if (self->obs [i]) {
            self->obs [i]->out_count = 0;
            self->obs [i]->touched = false;
        }
    for (size_t k = 0; k < outputs; k++) {
        outbox_t *ob = s_output_outbox (self, k);
        if (ob->out_count == ob->out_size) {
            ob->out_size = ob->out_size ? ob->out_size * 2 : 64;
            ob->outs = (size_t *) realloc (ob->outs, ob->out_size * sizeof (size_t));
            assert (ob->outs);
        }
        ob->outs [ob->out_count++] = k;
    }
    char **entries = (char **) zmalloc ((outputs + 1) * sizeof (char *));
    size_t *entry_sizes = (size_t *) zmalloc ((outputs + 1) * sizeof (size_t));
    char (*seqs) [24] = zmalloc ((outputs + 1) * 24);
    for (int i = 0; i < self->ob_count; i++)
        if (self->obs [i])
            sent += s_append_outbox (self, self->obs [i], sink, arg, entries, entry_sizes, seqs,
                                     now, c->by);
    //  Privacy: each output that carried a person's data goes into that
    //  person's bounded index, so erasing never scans an outbox. The entry
    //  is its seq with one outbox per service, "<part>:<seq>" with
    //  per-partition outboxes (a seq alone names no entry then; the
    //  output's outbox need not be the person's partition)
    char bound [24];
    snprintf (bound, sizeof bound, "%d", -FUNNEL_PERSONAL_INDEX);
    for (size_t k = 0; k < outputs; k++) {
        const funnel_output_t *out = funnel_state_output (st, k);
        char key [KEY_MAX], entry [48];
        if (!out->person [0]
        ||  funnel_state_person_index_key (st, out->person, key, sizeof key) != 0)
            continue;
        const outbox_t *ob = s_output_outbox (self, k);
        if (ob->part >= 0)
            snprintf (entry, sizeof entry, "%d:%s", ob->part, seqs [k]);
        else
            snprintf (entry, sizeof entry, "%s", seqs [k]);
        const char *rpush [] = { "RPUSH", key, entry };
        sink (arg, 3, rpush, NULL);
        const char *ltrim [] = { "LTRIM", key, bound, "-1" };
        sink (arg, 4, ltrim, NULL);
        sent += 2;
    }
    bool renew = zclock_mono () - self->renewed >= self->cfg.lease_ms / 3;
    //  Checkpoints: with per-partition outboxes, every owned partition has
    //  seen the upstream's events up to c->checkpoint. On a cluster each
    //  partition written is a transaction of its own: a partition no event
    //  of the batch was routed to gets its checkpoint with the next batch
    //  that renews the leases (until then it keeps its own, lower one: a
    //  restart re-reads those events, none of them its own)
    for (int i = 0; c->upstream && i < self->ob_count; i++)
        if (self->obs [i]) {
            //  Never backwards: a partition moved here may be further on
            uint64_t value = s_get_u64 (self->obs [i]->ckpts, c->upstream);
            self->obs [i]->ckpt_written = !self->cluster || renew || self->routed [i];
            if (!self->obs [i]->ckpt_written)
                continue;
            snprintf (number, sizeof number, "%" PRIu64,
                      value > c->checkpoint ? value : c->checkpoint);
            const char *hset [] = { "HSET", self->obs [i]->ckpt_key, c->upstream, number };
            sink (arg, 4, hset, NULL);
            sent++;
        }
    //  redis/acks: WAIT in the same round trip, before the reply and the
    //  PUB (what a client or a subscriber saw survives a failover). An
    //  empty renewal acknowledges nothing to anyone: no WAIT, unless seqs
    //  are still hidden (it shows them once acknowledged)
    bool wait = self->cfg.acks > 0 && (c->replied || c->id_count > 0 || outputs > 0
                                       || s_hidden (self));
    long long acked = self->cfg.acks;
    int txn = self->cluster ? s_commit_cluster (self, renew, wait, &acked, err)
                            : s_commit_single (self, ctx, sent, renew, wait, &acked, err);
    int rc = 0;
    if (txn == ENGINE_RETRY) {
        funnel_state_clear (st);
        self->conflicts++;
        rc = ENGINE_RETRY;
        //  The renewal went with the batch's transaction: under conflicts
        //  that keep coming, the leases must not run out meanwhile
        if (renew && self->cluster && s_lease_txns (self, false, err) == 0)
            self->renewed = zclock_mono ();
    }
    else
    if (txn == TXN_UNKNOWN || txn == TXN_STORED) {
        //  The EXEC may have run: nothing in the cache can be trusted, and
        //  seq and checkpoints are read again (a cluster: after completing
        //  the batch's stored intent)
        funnel_state_clear (st);
        self->generation = 0;
        if (txn == TXN_UNKNOWN && (!err->code || !streq (err->code, FUNNEL_ERR_INTERNAL)))
            s_unknown (err);
        rc = -1;
    }
    else
    if (txn != TXN_OK) {
        funnel_state_rollback (st, zero);
        rc = -1;
    }
    //  Applied on the primary but not on enough replicas: a failover
    //  now could lose it. Kept (seq, checkpoints move on; the outbox
    //  holds it) but hidden: no OK, no PUB, not in REPLAY or PING until
    //  a later WAIT covers it (a subscriber that consumed it could not
    //  unsee it if the failover dropped it and reused its seq)
    bool unacked = false;
    if (rc == 0 && wait && acked < self->cfg.acks) {
        unacked = true;
        rc = funnel_error_set (err, FUNNEL_ERR_UNAVAILABLE,
            "redis: outcome unknown: only %lld of %d replicas acknowledged within "
            "%d ms; retrying with the same ids is safe", acked, self->cfg.acks,
            self->cfg.acks_timeout_ms);
        if (funnel_log_every (&self->last_warn, 1000))
            log_warn ("commit: only %lld of %d replicas acknowledged within %d ms",
                      acked, self->cfg.acks, self->cfg.acks_timeout_ms);
    }
    if (txn == TXN_OK) {
        if (renew)
            self->renewed = zclock_mono ();
        //  Publish, then forget the write-set (outputs live in it)
        for (int i = 0; i < self->ob_count; i++) {
            outbox_t *ob = self->obs [i];
            if (!ob)
                continue;
            uint64_t first = ob->seq + 1;
            ob->seq = ob->new_seq;
            //  WAIT covers every earlier write too, in every outbox (of the
            //  node it ran on: on a cluster, the outboxes it wrote)
            if (!unacked && ob->touched)
                ob->visible = ob->seq;
            ob->ob_first = ob->new_first;
            zhashx_destroy (&ob->bucket_bytes);
            ob->bucket_bytes = ob->new_sizes;
            ob->new_sizes = NULL;
            s_count_losses (self, ob, ob->ob_first, ob->lost);
            if (c->upstream && ob->ckpt_written
            &&  c->checkpoint > s_get_u64 (ob->ckpts, c->upstream))
                s_put_u64 (ob->ckpts, c->upstream, c->checkpoint);
            for (size_t j = 0; j < ob->out_count && self->publish && !unacked; j++) {
                size_t k = ob->outs [j];
                outbox_entry_t event;
                if (outbox_entry_parse (entries [k], entry_sizes [k], &event) == 0)
                    self->publish (self->publish_arg, ob->part, first + j, &event);
            }
        }
        funnel_state_committed (st);
    }
    for (int i = 0; i < self->ob_count; i++)
        if (self->obs [i])
            zhashx_destroy (&self->obs [i]->new_sizes);
    for (size_t i = 0; i < outputs; i++)
        free (entries [i]);
    free (entries);
    free (entry_sizes);
    free (seqs);
    self->out_parts_len = 0;
    self->commits++;
    self->commit_us += (uint64_t) (zclock_usecs () - started);
    return rc;
}

//  Notes the partition of the outputs queued since the last call.
static void
s_route_outputs (funnel_engine_t *self, int part)
{
    size_t outputs = funnel_state_output_count (self->state);
    if (outputs > self->out_parts_size) {
        self->out_parts_size = outputs * 2 + 64;
        self->out_parts = (int *) realloc (self->out_parts, self->out_parts_size * sizeof (int));
        assert (self->out_parts);
    }
    for (size_t k = self->out_parts_len; k < outputs; k++)
        self->out_parts [k] = part;
    self->out_parts_len = outputs;
}

//  ---------------------------------------------------------------------
//  Batches

static const funnel_rule_t *
s_rule (const funnel_rule_t *table, const char *type)
{
    for (const funnel_rule_t *r = table; r && r->type; r++)
        if (streq (r->type, type))
            return r;
    return NULL;
}

static int
s_not_ready (funnel_engine_t *self, funnel_error_t *err)
{
    if (self->lost)
        return funnel_error_set (err, FUNNEL_ERR_UNAVAILABLE,
            "lease: this instance stepped down (another owns the service); nothing was applied");
    return s_unavailable (err);
}

//  Starts a batch: with several instances nothing cached is trusted
//  (another instance may have written any shared record since).
static void
s_begin (funnel_engine_t *self)
{
    if (self->occ)
        funnel_state_clear (self->state);
    self->watch_gen = 0;
    self->watch_broken = false;
    funnel_state_begin (self->state);
    funnel_state_set_now (self->state, s_now_ms ());
    self->out_parts_len = 0;
    memset (self->routed, 0, (size_t) self->cfg.partitions * sizeof (bool));
}

static int
s_publish_once (funnel_engine_t *self, const funnel_event_t *events, size_t count,
                bool batch, const char *by, size_t *accepted_p, size_t *duplicates_p,
                funnel_error_t *err)
{
    funnel_state_t *st = self->state;
    s_begin (self);
    bool *seen = (bool *) zmalloc ((count + 1) * sizeof (bool));
    if (s_prefetch (self, events, count, self->rules->on, seen) != 0) {
        free (seen);
        return s_unavailable (err);
    }
    const char **ids = (const char **) zmalloc ((count + 1) * sizeof (char *));
    int *id_parts = (int *) zmalloc ((count + 1) * sizeof (int));
    //  Ids accepted so far in this batch, for repeats within it (a set: a
    //  scan of the list made a 1000-event batch cost 500k compares)
    zhashx_t *accepted_ids = NULL;
    if (count > 1) {
        accepted_ids = zhashx_new ();
        zhashx_set_key_duplicator (accepted_ids, NULL);     //  Ids outlive the set
        zhashx_set_key_destructor (accepted_ids, NULL);
    }
    size_t accepted = 0, duplicates = 0;
    int rc = 0;
    funnel_savepoint_t zero = { 0 };
    for (size_t i = 0; i < count && rc == 0; i++) {
        const funnel_event_t *ev = &events [i];
        bool dup = seen [i] || (accepted_ids && zhashx_lookup (accepted_ids, ev->id));
        if (dup) {
            duplicates++;
            continue;
        }
        const funnel_rule_t *rule = s_rule (self->rules->on, ev->type);
        if (!rule)
            rc = funnel_error_set (err, FUNNEL_ERR_UNKNOWN_TYPE,
                                   "type: '%s' is not accepted by %s", ev->type, self->svc);
        else {
            funnel_state_set_cause (st, ev->id, ev->ts);
            funnel_savepoint_t sp = funnel_state_savepoint (st);
            funnel_error_clear (err);
            if (rule->handle (st, ev, err) != 0) {
                funnel_state_rollback (st, sp);
                if (!err->code)
                    funnel_error_set (err, FUNNEL_ERR_INTERNAL, "rules: %s refused without a reason",
                                      ev->type);
                rc = -1;
            }
            else
                s_route_outputs (self, funnel_engine_event_part (self, ev));
        }
        if (rc != 0) {
            if (batch)
                err->index = (int) i;
            break;
        }
        id_parts [accepted] = s_dedup_part (self, ev);
        ids [accepted++] = ev->id;
        if (accepted_ids)
            zhashx_insert (accepted_ids, ev->id, (void *) ev->id);
    }
    zhashx_destroy (&accepted_ids);
    free (seen);
    if (rc != 0) {
        funnel_state_rollback (st, zero);
        free (ids);
        free (id_parts);
        return rc;
    }
    funnel_state_set_cause (st, NULL, 0);
    if (accepted)
        funnel_state_count (st, "accepted", (int64_t) accepted);
    if (duplicates)
        funnel_state_count (st, "duplicates", (int64_t) duplicates);
    commit_t c = { ids, id_parts, accepted, NULL, 0, by, true };
    rc = s_commit (self, &c, err);
    free (ids);
    free (id_parts);
    *accepted_p = accepted;
    *duplicates_p = duplicates;
    return rc;
}

static int
s_contended (funnel_engine_t *self, funnel_error_t *err)
{
    if (funnel_log_every (&self->last_warn, 1000))
        log_warn ("commit: shared records kept changing under %d attempts", RETRIES_MAX);
    return funnel_error_set (err, FUNNEL_ERR_UNAVAILABLE,
        "store: contention with other instances; nothing was applied; retry with the same ids");
}

int
funnel_engine_publish (funnel_engine_t *self, const funnel_event_t *events,
                       size_t count, bool batch, const char *by,
                       msgpack_sbuffer *reply, funnel_error_t *err)
{
    if (!s_ready (self))
        return s_not_ready (self, err);
    size_t accepted = 0, duplicates = 0;
    int rc = ENGINE_RETRY;
    for (int attempt = 0; attempt < RETRIES_MAX && rc == ENGINE_RETRY; attempt++)
        rc = s_publish_once (self, events, count, batch, by, &accepted, &duplicates, err);
    if (rc == ENGINE_RETRY)
        return s_contended (self, err);
    if (rc != 0)
        return rc;
    msgpack_packer pk;
    msgpack_packer_init (&pk, reply, msgpack_sbuffer_write);
    msgpack_pack_map (&pk, 2);
    if (batch) {
        event_codec_pack_cstr (&pk, "accepted");
        msgpack_pack_uint64 (&pk, accepted);
        event_codec_pack_cstr (&pk, "duplicates");
        msgpack_pack_uint64 (&pk, duplicates);
    }
    else {
        event_codec_pack_cstr (&pk, "id");
        event_codec_pack_cstr (&pk, events [0].id);
        event_codec_pack_cstr (&pk, "duplicate");
        if (duplicates)
            msgpack_pack_true (&pk);
        else
            msgpack_pack_false (&pk);
    }
    return 0;
}

static int
s_consume_once (funnel_engine_t *self, const char *upstream, const funnel_event_t *events,
                size_t count, uint64_t last_seq, funnel_error_t *err)
{
    funnel_state_t *st = self->state;
    s_begin (self);
    if (s_prefetch (self, events, count, self->rules->consume, NULL) != 0)
        return s_unavailable (err);
    uint64_t position = funnel_engine_checkpoint (self, upstream);
    int64_t applied = 0, rejected = 0;
    for (size_t i = 0; i < count; i++) {
        const funnel_event_t *ev = &events [i];
        if (ev->seq > position)
            position = ev->seq;
        //  The partition the event is routed to here: with per-partition
        //  outboxes, applied by its owner only, once (its checkpoint)
        int part = funnel_engine_event_part (self, ev);
        outbox_t *ob = s_outbox_of (self, part);
        if (part >= 0 && part < self->cfg.partitions)
            self->routed [part] = true;
        if (!ob || ev->seq <= s_get_u64 (ob->ckpts, upstream))
            continue;               //  Another instance's, or applied before
        const funnel_rule_t *rule = s_rule (self->rules->consume, ev->type);
        if (rule) {
            funnel_state_set_cause (st, ev->id, ev->ts);
            funnel_savepoint_t sp = funnel_state_savepoint (st);
            funnel_error_t refusal;
            funnel_error_clear (&refusal);
            if (rule->handle (st, ev, &refusal) != 0) {
                //  A consumed event cannot be refused back to its sender:
                //  counted, logged (rate-limited), passed over
                funnel_state_rollback (st, sp);
                rejected++;
                if (funnel_log_every (&self->last_warn, 1000))
                    log_warn ("from %s: not applied: %s %s: %s: %s (consume_rejected counts all)",
                              upstream, ev->type, ev->id,
                              refusal.code ? refusal.code : "internal", refusal.message);
            }
            else {
                applied++;
                s_route_outputs (self, part);
            }
        }
    }
    if (last_seq > position)
        position = last_seq;
    funnel_state_set_cause (st, NULL, 0);
    if (applied)
        funnel_state_count (st, "consumed", applied);
    if (rejected)
        funnel_state_count (st, "consume_rejected", rejected);
    commit_t c = { NULL, NULL, 0, upstream, position, NULL, false };
    return s_commit (self, &c, err);
}

int
funnel_engine_consume (funnel_engine_t *self, const char *upstream,
                       const funnel_event_t *events, size_t count,
                       uint64_t last_seq, funnel_error_t *err)
{
    if (!s_ready (self))
        return s_not_ready (self, err);
    int rc = ENGINE_RETRY;
    for (int attempt = 0; attempt < RETRIES_MAX && rc == ENGINE_RETRY; attempt++)
        rc = s_consume_once (self, upstream, events, count, last_seq, err);
    return rc == ENGINE_RETRY ? s_contended (self, err) : rc;
}

static const funnel_timer_rule_t *
s_timer_rule (funnel_engine_t *self, const char *name)
{
    for (const funnel_timer_rule_t *t = self->rules->timers; t && t->name; t++)
        if (streq (t->name, name))
            return t;
    return NULL;
}

//  Pops due timers of every partition (one round trip) and runs them as
//  one batch.
static void
s_run_timers (funnel_engine_t *self)
{
    funnel_state_t *st = self->state;
    int64_t now = s_now_ms ();
    char max [24], limit [24];
    snprintf (max, sizeof max, "%" PRId64, now);
    snprintf (limit, sizeof limit, "%d", TIMERS_MAX);
    //  The owned partitions' timers (with several instances, read under
    //  WATCH: another instance may arm one of ours meanwhile)
    int n = self->mine_count;
    int per = self->occ ? 2 : 1;
    for (int i = 0; i < n; i++) {
        char key [KEY_MAX];
        snprintf (key, sizeof key, "%stimers", funnel_state_data_prefix (st, self->mine [i]));
        const char *watch [] = { "WATCH", key };
        if (self->occ)
            s_send (self, 2, watch, NULL);
        const char *argv [] = { "ZRANGEBYSCORE", key, "-inf", max, "WITHSCORES",
                                "LIMIT", "0", limit };
        s_send (self, 8, argv, NULL);
    }
    redisReply **replies = (redisReply **) zmalloc ((size_t) (n * per + 1) * sizeof (redisReply *));
    if (s_recv (self, replies, (size_t) (n * per)) != 0) {
        free (replies);
        return;
    }
    s_begin (self);
    funnel_state_set_now (st, now);
    funnel_state_set_cause (st, NULL, 0);
    int fired = 0;
    for (int i = 0; i < n; i++) {
        int p = self->mine [i];
        redisReply *r = replies [i * per + per - 1];
        for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i + 1 < r->elements; i += 2) {
            const char *member = r->element [i]->str;
            const char *colon = strchr (member, ':');
            char name [128], id [KEY_MAX];
            if (!colon || colon - member >= (long) sizeof name
            ||  funnel_key_unescape (colon + 1, id, sizeof id) < 0)
                continue;
            memcpy (name, member, colon - member);
            name [colon - member] = 0;
            int64_t due = strtoll (r->element [i + 1]->str, NULL, 10);
            //  The firing removes the timer; a rule may arm it again
            funnel_state_timer_cancel_at (st, p, name, id);
            const funnel_timer_rule_t *rule = s_timer_rule (self, name);
            if (!rule)
                continue;
            funnel_savepoint_t sp = funnel_state_savepoint (st);
            funnel_error_t err;
            funnel_error_clear (&err);
            if (rule->fire (st, id, due, &err) != 0) {
                funnel_state_rollback (st, sp);
                log_warn ("timer %s %s: %s: %s (dropped)", name, id,
                          err.code ? err.code : "internal", err.message);
            }
            else {
                fired++;
                s_route_outputs (self, p);
            }
        }
    }
    s_free_replies (replies, (size_t) (n * per));
    free (replies);
    //  Nothing due and no renewal due: no commit
    if (funnel_state_savepoint (st).timers == 0
    &&  zclock_mono () - self->renewed < self->cfg.lease_ms / 3)
        return;
    if (fired)
        funnel_state_count (st, "timers_fired", fired);
    funnel_error_t err;
    commit_t c = { NULL, NULL, 0, NULL, 0, NULL, false };
    int rc = s_commit (self, &c, &err);
    //  A conflict (several instances): the timers run again next time
    if (rc != 0 && rc != ENGINE_RETRY && funnel_log_every (&self->last_warn, 1000))
        log_warn ("timers: %s", err.message);
}

void
funnel_engine_cron (funnel_engine_t *self)
{
    if (!s_ready (self))
        return;
    if (self->rules->timers && self->rules->timers->name)
        s_run_timers (self);
    else
    if (zclock_mono () - self->renewed >= self->cfg.lease_ms / 3) {
        //  An empty commit renews the leases and re-arms the fence
        s_begin (self);
        funnel_error_t err;
        commit_t c = { NULL, NULL, 0, NULL, 0, NULL, false };
        s_commit (self, &c, &err);
    }
}

//  ---------------------------------------------------------------------
//  GET, REPLAY, STATS

#define SERIES_MAX_BUCKETS  2200

//  A request's field as ms (an integer 0..2^53, or a float holding one):
//  false if absent or anything else.
static bool
s_req_ms (const msgpack_object *obj, int64_t *ms)
{
    if (obj && obj->type == MSGPACK_OBJECT_POSITIVE_INTEGER
    &&  obj->via.u64 <= 9007199254740992ULL) {
        *ms = (int64_t) obj->via.u64;
        return true;
    }
    if (obj && (obj->type == MSGPACK_OBJECT_FLOAT64 || obj->type == MSGPACK_OBJECT_FLOAT32)
    &&  obj->via.f64 >= 0
    &&  obj->via.f64 <= 9007199254740992.0 && obj->via.f64 == (double) (int64_t) obj->via.f64) {
        *ms = (int64_t) obj->via.f64;
        return true;
    }
    return false;
}

//  A field that is absent or nil (nil counts as absent).
static const msgpack_object *
s_req_field (const msgpack_object *req, const char *name)
{
    const msgpack_object *obj = event_codec_map_get (req, name);
    return obj && obj->type != MSGPACK_OBJECT_NIL ? obj : NULL;
}

//  GET series (proto/monitor.md, "Series"): one pipelined round trip of
//  HMGETs.
static int
s_query_series (funnel_engine_t *self, const msgpack_object *req, msgpack_sbuffer *reply,
                funnel_error_t *err)
{
    const msgpack_object *step_obj = s_req_field (req, "step");
    //  false is the default too (as nil), as the contract has always read
    if (step_obj && step_obj->type == MSGPACK_OBJECT_BOOLEAN && !step_obj->via.boolean)
        step_obj = NULL;
    char step [8] = "hour";
    if (step_obj && (!event_codec_obj_strcpy (step_obj, step, sizeof step)
                     || (!streq (step, "hour") && !streq (step, "day"))))
        return funnel_error_set (err, FUNNEL_ERR_INVALID, "step: must be hour or day");
    int64_t step_ms = streq (step, "hour") ? 3600000 : 86400000;
    int64_t from, to;
    if (!s_req_ms (s_req_field (req, "from"), &from))
        return funnel_error_set (err, FUNNEL_ERR_INVALID, "from: must be an integer ms 0..2^53");
    if (!s_req_ms (s_req_field (req, "to"), &to))
        return funnel_error_set (err, FUNNEL_ERR_INVALID, "to: must be an integer ms 0..2^53");
    if (to < from)
        return funnel_error_set (err, FUNNEL_ERR_INVALID, "to: must not be before from");
    const msgpack_object *campaign_obj = s_req_field (req, "campaign");
    char campaign [FUNNEL_ID_MAX + 1] = "";
    if (campaign_obj && (!event_codec_obj_strcpy (campaign_obj, campaign, sizeof campaign)
                         || !event_codec_id_valid (campaign, strlen (campaign))))
        return funnel_error_set (err, FUNNEL_ERR_INVALID,
                                 "campaign: must be 1-64 bytes of [A-Za-z0-9._:@+-]");
    int64_t b0 = from / step_ms, b1 = to / step_ms, n = b1 - b0 + 1;
    if (n > SERIES_MAX_BUCKETS)
        return funnel_error_set (err, FUNNEL_ERR_INVALID,
                                 "to: the range holds %" PRId64 " buckets; at most %d",
                                 n, SERIES_MAX_BUCKETS);
    size_t names = 0;
    for (const char *const *s = self->rules->series; s && *s; s++)
        names++;
    int64_t *counts = (int64_t *) zmalloc ((names * (size_t) n + 1) * sizeof (int64_t));
    if (names > 0) {
        if (!s_ready (self)) {
            free (counts);
            return s_not_ready (self, err);
        }
        const char **argv = (const char **) malloc ((names + 2) * sizeof (char *));
        char key [KEY_MAX];
        argv [0] = "HMGET";
        argv [1] = key;
        for (size_t i = 0; i < names; i++)
            argv [i + 2] = self->rules->series [i];
        for (int64_t b = b0; b <= b1; b++) {
            funnel_state_series_key (self->state, step [0], b, campaign [0] ? campaign : NULL,
                                     key, sizeof key);
            s_send (self, (int) names + 2, argv, NULL);
        }
        free (argv);
        redisReply **replies = (redisReply **) zmalloc ((size_t) n * sizeof (redisReply *));
        if (s_recv (self, replies, (size_t) n) != 0) {
            free (replies);
            free (counts);
            return s_unavailable (err);
        }
        for (int64_t b = 0; b < n; b++) {
            redisReply *r = replies [b];
            for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < names && i < r->elements; i++)
                if (r->element [i]->type == REDIS_REPLY_STRING)
                    counts [i * (size_t) n + (size_t) b] = strtoll (r->element [i]->str, NULL, 10);
        }
        s_free_replies (replies, (size_t) n);
        free (replies);
    }
    msgpack_packer pk;
    msgpack_packer_init (&pk, reply, msgpack_sbuffer_write);
    msgpack_pack_map (&pk, names > 0 ? 4 : 3);
    event_codec_pack_cstr (&pk, "step");
    event_codec_pack_cstr (&pk, step);
    event_codec_pack_cstr (&pk, "first");
    msgpack_pack_int64 (&pk, b0 * step_ms);
    event_codec_pack_cstr (&pk, "n");
    msgpack_pack_int64 (&pk, n);
    if (names > 0) {
        event_codec_pack_cstr (&pk, "series");
        msgpack_pack_map (&pk, names);
        for (size_t i = 0; i < names; i++) {
            event_codec_pack_cstr (&pk, self->rules->series [i]);
            msgpack_pack_array (&pk, (size_t) n);
            for (int64_t b = 0; b < n; b++)
                msgpack_pack_int64 (&pk, counts [i * (size_t) n + (size_t) b]);
        }
    }
    free (counts);
    return 0;
}

int
funnel_engine_query (funnel_engine_t *self, const msgpack_object *req,
                     msgpack_sbuffer *reply, funnel_error_t *err)
{
    const msgpack_object *kind = event_codec_map_get (req, "kind");
    char name [FUNNEL_ID_MAX + 1] = "";
    event_codec_obj_strcpy (kind, name, sizeof name);
    funnel_error_clear (err);
    //  Every service answers series, before the rules' own kinds
    if (streq (name, "series"))
        return s_query_series (self, req, reply, err);
    const funnel_query_rule_t *rule = NULL;
    for (const funnel_query_rule_t *q = self->rules->queries; q && q->kind; q++)
        if (streq (q->kind, name))
            rule = q;
    if (!rule) {
        //  The known kinds sorted, series among them
        zlistx_t *kinds = zlistx_new ();
        zlistx_set_comparator (kinds, (zlistx_comparator_fn *) strcmp);
        zlistx_add_end (kinds, (void *) "series");
        for (const funnel_query_rule_t *q = self->rules->queries; q && q->kind; q++)
            zlistx_add_end (kinds, (void *) q->kind);
        zlistx_sort (kinds);
        char known [256] = "";
        for (const char *k = (const char *) zlistx_first (kinds); k;
             k = (const char *) zlistx_next (kinds)) {
            size_t used = strlen (known);
            snprintf (known + used, sizeof known - used, "%s%s", used ? ", " : "", k);
        }
        zlistx_destroy (&kinds);
        return funnel_error_set (err, FUNNEL_ERR_INVALID,
                                 "kind: unknown GET kind '%s' (known: %s)", name, known);
    }
    if (!s_ready (self))
        return s_not_ready (self, err);
    s_begin (self);
    msgpack_packer pk;
    msgpack_packer_init (&pk, reply, msgpack_sbuffer_write);
    funnel_error_clear (err);
    int rc = rule->query (self->state, req, &pk, err);
    if (rc != 0 && !err->code)
        s_unavailable (err);
    return rc;
}

int
funnel_query_pack_by_id (funnel_state_t *st, funnel_query_fn *query, const char *id,
                         msgpack_packer *pk)
{
    msgpack_sbuffer req, view;
    msgpack_sbuffer_init (&req);
    msgpack_sbuffer_init (&view);
    msgpack_packer rpk, vpk;
    msgpack_packer_init (&rpk, &req, msgpack_sbuffer_write);
    msgpack_packer_init (&vpk, &view, msgpack_sbuffer_write);
    msgpack_pack_map (&rpk, 1);
    event_codec_pack_cstr (&rpk, "id");
    event_codec_pack_cstr (&rpk, id);
    msgpack_unpacked u;
    msgpack_unpacked_init (&u);
    funnel_error_t err;
    funnel_error_clear (&err);
    int rc = -1;
    //  Packed apart first: a refusal must not leave half a value in pk
    if (msgpack_unpack_next (&u, req.data, req.size, NULL) == MSGPACK_UNPACK_SUCCESS
    &&  query (st, &u.data, &vpk, &err) == 0) {
        pk->callback (pk->data, view.data, view.size);
        rc = 0;
    }
    else
        msgpack_pack_nil (pk);
    msgpack_unpacked_destroy (&u);
    msgpack_sbuffer_destroy (&req);
    msgpack_sbuffer_destroy (&view);
    return rc;
}

int
funnel_engine_replay (funnel_engine_t *self, int part, uint64_t from, uint64_t limit,
                      const char *subscriber, msgpack_sbuffer *reply, funnel_error_t *err)
{
    if (!s_ready (self))
        return s_not_ready (self, err);
    outbox_t *ob = self->cfg.part_outbox ? s_outbox_of (self, part < 0 ? 0 : part)
                                         : self->obs [0];
    if (!ob)
        return funnel_error_set (err, FUNNEL_ERR_INVALID,
                                 "partition: %d is not owned by this instance", part);
    //  A registered subscriber has applied everything before `from`
    bool ack = false;
    if (subscriber && *subscriber) {
        uint64_t need = from > ob->seq + 1 ? ob->seq + 1 : from;
        if (need > s_get_u64 (ob->subs, subscriber) || !zhashx_lookup (ob->subs, subscriber)) {
            s_put_u64 (ob->subs, subscriber, need);
            char text [24];
            snprintf (text, sizeof text, "%" PRIu64, need);
            const char *hset [] = { "HSET", ob->subs_key, subscriber, text };
            s_send (self, 4, hset, NULL);
            ack = true;
        }
    }
    uint64_t first = ob->seq > 0 ? ob->ob_first : 0;
    uint64_t start = from > first ? from : first;
    if (start < 1)
        start = 1;
    uint64_t to = ob->visible;          //  redis/acks: hidden until a WAIT covers it
    if (limit == 0 || start > to)
        to = 0;
    else
    if (limit - 1 < to - start)
        to = start + limit - 1;
    size_t commands = 0;
    for (uint64_t seq = start; to && seq <= to; ) {
        uint64_t stop = (seq / OB_BUCKET + 1) * OB_BUCKET - 1;
        if (stop > to)
            stop = to;
        size_t n = (size_t) (stop - seq + 1);
        const char **argv = (const char **) malloc ((n + 2) * sizeof (char *));
        char (*fields) [24] = malloc (n * 24);
        char key [KEY_MAX];
        snprintf (key, sizeof key, "%sob:%" PRIu64, ob->prefix, seq / OB_BUCKET);
        argv [0] = "HMGET";
        argv [1] = key;
        for (size_t i = 0; i < n; i++) {
            snprintf (fields [i], 24, "%" PRIu64, seq + i);
            argv [i + 2] = fields [i];
        }
        s_send (self, (int) n + 2, argv, NULL);
        free (argv);
        free (fields);
        commands++;
        seq = stop + 1;
    }
    redisReply **replies = (redisReply **) zmalloc ((commands + 2) * sizeof (redisReply *));
    if (s_recv (self, replies, commands + ack) != 0) {
        free (replies);
        return s_unavailable (err);
    }
    if (ack) {
        freeReplyObject (replies [0]);
        memmove (replies, replies + 1, commands * sizeof (redisReply *));
    }
    size_t total = 0;
    for (size_t i = 0; i < commands; i++)
        if (replies [i]->type == REDIS_REPLY_ARRAY)
            for (size_t j = 0; j < replies [i]->elements; j++)
                total += replies [i]->element [j]->type == REDIS_REPLY_STRING;
    msgpack_packer pk;
    msgpack_packer_init (&pk, reply, msgpack_sbuffer_write);
    msgpack_pack_map (&pk, 3);
    event_codec_pack_cstr (&pk, "events");
    //  Count first (entries that fail to split are left out and logged)
    outbox_entry_t *events = (outbox_entry_t *) zmalloc ((total + 1) * sizeof (outbox_entry_t));
    uint64_t *seqs = (uint64_t *) zmalloc ((total + 1) * sizeof (uint64_t));
    size_t valid = 0;
    uint64_t next = from, seq = start;
    for (size_t i = 0; i < commands; i++)
        for (size_t j = 0; replies [i]->type == REDIS_REPLY_ARRAY && j < replies [i]->elements;
             j++, seq++) {
            redisReply *e = replies [i]->element [j];
            if (e->type != REDIS_REPLY_STRING)
                continue;
            if (outbox_entry_parse (e->str, e->len, &events [valid]) == 0) {
                seqs [valid++] = seq;
                next = seq + 1;
            }
            else
                log_error ("outbox entry %" PRIu64 " is malformed; left out of REPLAY", seq);
        }
    msgpack_pack_array (&pk, valid);
    for (size_t i = 0; i < valid; i++)
        outbox_entry_pack_part (&events [i], self->svc, ob->part, seqs [i], reply);
    event_codec_pack_cstr (&pk, "next");
    msgpack_pack_uint64 (&pk, next);
    event_codec_pack_cstr (&pk, "first");
    msgpack_pack_uint64 (&pk, first ? first : next);
    free (events);
    free (seqs);
    s_free_replies (replies, commands);
    free (replies);
    return 0;
}

int
funnel_engine_stats (funnel_engine_t *self, msgpack_sbuffer *reply, funnel_error_t *err)
{
    if (!s_ready (self))
        return s_not_ready (self, err);
    const char *argv [] = { "HGETALL", self->stats_key };
    s_send (self, 2, argv, NULL);
    redisReply *r = NULL;
    if (s_recv (self, &r, 1) != 0)
        return s_unavailable (err);
    //  name -> value, declared and base counters first (0), then Redis's
    zhashx_t *counters = zhashx_new ();
    zhashx_set_destructor (counters, s_free_item);
    const char *base [] = { "accepted", "duplicates", "events_out", "outbox_lost", NULL };
    for (const char *const *b = base; *b; b++)
        zhashx_update (counters, *b, calloc (1, sizeof (int64_t)));
    for (const char *const *d = self->rules->counters; d && *d; d++)
        zhashx_update (counters, *d, calloc (1, sizeof (int64_t)));
    for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i + 1 < r->elements; i += 2) {
        int64_t *v = (int64_t *) malloc (sizeof (int64_t));
        *v = strtoll (r->element [i + 1]->str, NULL, 10);
        zhashx_update (counters, r->element [i]->str, v);
    }
    freeReplyObject (r);
    //  In-process figures: the cache and the commits
    uint64_t hits, misses;
    size_t entries;
    funnel_state_cache_stats (self->state, &hits, &misses, &entries);
    int64_t figures [] = { (int64_t) self->commits,
                           (int64_t) (self->commits ? self->commit_us / self->commits : 0),
                           (int64_t) s_outbox_bytes (self), (int64_t) s_subscribers (self),
                           (int64_t) self->conflicts };
    const char *names [] = { "commits", "commit_avg_us", "outbox_bytes", "subscribers",
                             "conflicts" };
    for (int i = 0; i < (self->occ ? 5 : 4); i++) {
        int64_t *v = (int64_t *) malloc (sizeof (int64_t));
        *v = figures [i];
        zhashx_update (counters, names [i], v);
    }
    msgpack_packer pk;
    msgpack_packer_init (&pk, reply, msgpack_sbuffer_write);
    msgpack_pack_map (&pk, self->cfg.part_outbox ? 4 : 3);
    if (self->cfg.part_outbox) {
        //  Per-partition outboxes: each owned partition's last seq shown
        //  (redis/acks: acknowledged), as its heartbeat and REPLAY
        event_codec_pack_cstr (&pk, "parts");
        msgpack_pack_map (&pk, (size_t) self->mine_count);
        for (int i = 0; i < self->mine_count; i++) {
            char name [16];
            snprintf (name, sizeof name, "%d", self->mine [i]);
            event_codec_pack_cstr (&pk, name);
            msgpack_pack_uint64 (&pk, self->obs [self->mine [i]]->visible);
        }
    }
    //  The cache's figures move with every read (a GET, a refused event):
    //  apart from the counters, which only applied events change
    event_codec_pack_cstr (&pk, "cache");
    msgpack_pack_map (&pk, 4);
    event_codec_pack_cstr (&pk, "hits");
    msgpack_pack_uint64 (&pk, hits);
    event_codec_pack_cstr (&pk, "misses");
    msgpack_pack_uint64 (&pk, misses);
    event_codec_pack_cstr (&pk, "entries");
    msgpack_pack_uint64 (&pk, entries);
    event_codec_pack_cstr (&pk, "hit_pct");
    msgpack_pack_uint64 (&pk, hits + misses ? hits * 100 / (hits + misses) : 0);
    event_codec_pack_cstr (&pk, "svc");
    event_codec_pack_cstr (&pk, self->svc);
    event_codec_pack_cstr (&pk, "counters");
    msgpack_pack_map (&pk, zhashx_size (counters));
    for (int64_t *v = (int64_t *) zhashx_first (counters); v;
         v = (int64_t *) zhashx_next (counters)) {
        event_codec_pack_cstr (&pk, (const char *) zhashx_cursor (counters));
        msgpack_pack_int64 (&pk, *v);
    }
    zhashx_destroy (&counters);
    return 0;
}

void
funnel_engine_release (funnel_engine_t *self)
{
    if (!s_ready (self))
        return;
    if (self->cluster) {
        //  Each lease deleted in its own fenced transaction (never another
        //  owner's); the applied intents' fields first
        funnel_error_t err;
        size_t done = zlist_size (self->intents_done);
        for (const char *f = zlist_first (self->intents_done); done && f;
             f = zlist_next (self->intents_done))
            s_send (self, 3, (const char *[]) { "HDEL", self->intents_key, f }, NULL);
        redisReply **r = (redisReply **) zmalloc ((done + 1) * sizeof (redisReply *));
        if (done && s_recv (self, r, done) == 0)
            s_free_replies (r, done);
        free (r);
        zlist_purge (self->intents_done);
        s_lease_txns (self, true, &err);
        self->generation = 0;
        return;
    }
    redisContext *ctx = redis_store_context (self->store);
    if (self->occ) {
        //  A read since the last commit may have added watched records:
        //  watch the leases alone again (and see they are still ours)
        redisAppendCommand (ctx, "UNWATCH");
        s_append_fence (self, ctx);
        redisReply *r [3];
        if (s_read (self, r, 3) != 0)
            return;
        bool ours = s_check_fence (self, r [2]) == 0;
        s_free_replies (r, 3);
        if (!ours)
            return;
    }
    //  The fence is armed: if a lease changed, EXEC aborts and we delete
    //  nothing of another owner's
    redisAppendCommand (ctx, "MULTI");
    for (int i = 0; i < self->mine_count; i++) {
        const char *del [] = { "DEL", self->lease_keys [self->mine [i]] };
        funnel_redis_append (ctx, 2, del, NULL);
    }
    redisAppendCommand (ctx, "EXEC");
    size_t n = (size_t) self->mine_count + 2;
    redisReply **replies = (redisReply **) zmalloc (n * sizeof (redisReply *));
    if (s_read (self, replies, n) == 0)
        s_free_replies (replies, n);
    free (replies);
    self->generation = 0;
}

//  ---------------------------------------------------------------------
//  Self-test against a real redis-server (FUNNEL_TEST_REDIS_URL)

#undef NDEBUG
#include <assert.h>

//  test.add {key, n}: counter += n, emits test.added, n < 0 is refused;
//  n == 7 also arms timer "ring" for key, due now; keeps a log of the last 2
static int
s_test_add (funnel_state_t *st, const funnel_event_t *ev, funnel_error_t *err)
{
    char key [64];
    event_codec_obj_strcpy (event_codec_map_get (ev->data, "key"), key, sizeof key);
    int64_t n = event_codec_map_get (ev->data, "n")->via.i64;
    funnel_rec_t *rec = funnel_state_rec (st, "counter", key);
    assert (rec);
    funnel_rec_add (rec, "total", n);
    //  A record every instance writes (keys "tally..."): the cluster's shared test
    if (strncmp (key, "tally", 5) == 0)
        funnel_rec_add (funnel_state_global (st, "tally", "all"), "total", n);
    funnel_state_count (st, "added", n);
    funnel_state_push (st, "log", key, ev->id, strlen (ev->id), 2);
    funnel_state_emit (st, "test.added", NULL);
    if (n == 7)
        funnel_state_timer (st, "ring", key, funnel_state_now (st) - 1);
    if (n < 0)
        return funnel_error_set (err, FUNNEL_ERR_CONFLICT, "n: negative");
    return 0;
}

static void
s_test_want (funnel_state_t *st, const funnel_event_t *ev)
{
    char key [64];
    if (event_codec_obj_strcpy (event_codec_map_get (ev->data, "key"), key, sizeof key))
        funnel_state_want (st, "counter", key);
}

static int
s_test_ring (funnel_state_t *st, const char *id, int64_t due, funnel_error_t *err)
{
    (void) due;
    (void) err;
    funnel_rec_set_str (funnel_state_rec (st, "counter", id), "rang", "yes");
    funnel_state_emit (st, "test.rang", id);
    return 0;
}

static const funnel_rule_t s_test_on [] = { { "test.add", s_test_add, s_test_want }, { NULL } };
static const funnel_timer_rule_t s_test_timers [] = { { "ring", s_test_ring }, { NULL } };
static const funnel_rules_t s_test_rules = {
    .on = s_test_on, .consume = s_test_on, .timers = s_test_timers
};

static int s_test_published;

static void
s_test_publish (void *arg, int part, uint64_t seq, const outbox_entry_t *event)
{
    (void) arg;
    (void) part;
    (void) event;
    s_test_published = (int) seq;
}

//  A batch of events {key, n} with ids "<tag><i>" (NULL key ends).
typedef struct {
    msgpack_sbuffer sbuf;
    event_codec_t *msg;
    funnel_event_t *events;
    size_t count;
} test_batch_t;

static void
s_test_batch (test_batch_t *b, const char *tag, const char *key, const int *ns, size_t count,
              int64_t ts)
{
    msgpack_sbuffer_init (&b->sbuf);
    msgpack_packer pk;
    msgpack_packer_init (&pk, &b->sbuf, msgpack_sbuffer_write);
    msgpack_pack_array (&pk, count);
    for (size_t i = 0; i < count; i++) {
        char id [32];
        snprintf (id, sizeof id, "%s%zu", tag, i);
        msgpack_pack_map (&pk, 7);
        event_codec_pack_cstr (&pk, "v");  msgpack_pack_int (&pk, 1);
        event_codec_pack_cstr (&pk, "id");  event_codec_pack_cstr (&pk, id);
        event_codec_pack_cstr (&pk, "type");  event_codec_pack_cstr (&pk, "test.add");
        event_codec_pack_cstr (&pk, "ts");  msgpack_pack_int64 (&pk, ts);
        event_codec_pack_cstr (&pk, "src");  event_codec_pack_cstr (&pk, "t");
        event_codec_pack_cstr (&pk, "seq");  msgpack_pack_int (&pk, (int) i + 1);
        event_codec_pack_cstr (&pk, "data");
        msgpack_pack_map (&pk, 2);
        event_codec_pack_cstr (&pk, "key");  event_codec_pack_cstr (&pk, key);
        event_codec_pack_cstr (&pk, "n");  msgpack_pack_int (&pk, ns [i]);
    }
    funnel_error_t err;
    b->msg = event_codec_decode (b->sbuf.data, b->sbuf.size, &event_codec_limits_body, &err);
    assert (b->msg);
    bool is_batch;
    assert (event_codec_publish_parse (b->msg, &b->events, &b->count,
                                  &is_batch, &err) == 0);
}

static void
s_test_batch_free (test_batch_t *b)
{
    free (b->events);
    event_codec_destroy (&b->msg);
    msgpack_sbuffer_destroy (&b->sbuf);
}

static redisReply *
s_test_cmd (redis_store_t *store, const char *a, const char *b, const char *c, const char *d)
{
    const char *argv [] = { a, b, c, d };
    int argc = d ? 4 : c ? 3 : b ? 2 : 1;
    redisReply *reply = redis_store_command (store, argc, argv, NULL);
    assert (reply);
    return reply;
}

static void
s_test_expect (redis_store_t *store, const char *cmd, const char *key, const char *field,
               const char *expected)
{
    redisReply *r = s_test_cmd (store, cmd, key, field, NULL);
    if (expected)
        assert (r->type == REDIS_REPLY_STRING && streq (r->str, expected));
    else
        assert (r->type == REDIS_REPLY_NIL);
    freeReplyObject (r);
}

//  test.stage {key, n}: stage "added" at the event's time, campaign the
//  first two characters of key (as testsvc); n < 0 is refused
static int
s_test_stage (funnel_state_t *st, const funnel_event_t *ev, funnel_error_t *err)
{
    char key [64];
    event_codec_obj_strcpy (event_codec_map_get (ev->data, "key"), key, sizeof key);
    int64_t n = event_codec_map_get (ev->data, "n")->via.i64;
    key [2] = 0;
    funnel_state_count_stage (st, "added", funnel_state_event_time (st, ev, false), key, n);
    if (n < 0)
        return funnel_error_set (err, FUNNEL_ERR_CONFLICT, "n: negative");
    return 0;
}

static const funnel_rule_t s_test_stage_on [] = { { "test.add", s_test_stage, NULL }, { NULL } };
static const char *const s_test_series [] = { "added", NULL };
static const funnel_rules_t s_test_stage_rules = { .on = s_test_stage_on, .series = s_test_series };

static int64_t
s_test_int (redis_store_t *store, const char *cmd, const char *key, const char *field)
{
    redisReply *r = s_test_cmd (store, cmd, key, field, NULL);
    int64_t value = r->type == REDIS_REPLY_INTEGER ? r->integer
                  : r->type == REDIS_REPLY_STRING ? strtoll (r->str, NULL, 10) : -999;
    freeReplyObject (r);
    return value;
}

//  GET series {from, to, step, campaign} (step or campaign NULL: left out);
//  the reply's root, or NULL with err set. msg holds it (initialised) and
//  refers to s_test_reply; the caller destroys it before the next call.
static msgpack_sbuffer s_test_reply;

static const msgpack_object *
s_test_get_series (funnel_engine_t *engine, int64_t from, int64_t to, const char *step,
                   const char *campaign, msgpack_unpacked *msg, funnel_error_t *err)
{
    msgpack_sbuffer req;
    msgpack_sbuffer_init (&req);
    msgpack_packer pk;
    msgpack_packer_init (&pk, &req, msgpack_sbuffer_write);
    msgpack_pack_map (&pk, 3 + (step != NULL) + (campaign != NULL));
    event_codec_pack_cstr (&pk, "kind");  event_codec_pack_cstr (&pk, "series");
    event_codec_pack_cstr (&pk, "from");  msgpack_pack_int64 (&pk, from);
    event_codec_pack_cstr (&pk, "to");  msgpack_pack_int64 (&pk, to);
    if (step) {
        event_codec_pack_cstr (&pk, "step");  event_codec_pack_cstr (&pk, step);
    }
    if (campaign) {
        event_codec_pack_cstr (&pk, "campaign");  event_codec_pack_cstr (&pk, campaign);
    }
    event_codec_t *request = event_codec_decode (req.data, req.size, &event_codec_limits_body, err);
    assert (request);
    msgpack_sbuffer *reply = &s_test_reply;
    reply->size = 0;
    msgpack_unpacked_init (msg);
    bool ok = funnel_engine_query (engine, event_codec_root (request), reply, err) == 0;
    if (ok)
        assert (msgpack_unpack_next (msg, reply->data, reply->size, NULL)
                == MSGPACK_UNPACK_SUCCESS);
    event_codec_destroy (&request);
    msgpack_sbuffer_destroy (&req);
    return ok ? &msg->data : NULL;
}

//  The counts of the reply's series "added"
static void
s_test_expect_counts (const msgpack_object *root, int64_t first, const int64_t *counts,
                      size_t n)
{
    assert (root && event_codec_map_get (root, "first")->via.i64 == first);
    assert (event_codec_map_get (root, "n")->via.u64 == n);
    const msgpack_object *added = event_codec_map_get (event_codec_map_get (root, "series"), "added");
    assert (added && added->type == MSGPACK_OBJECT_ARRAY && added->via.array.size == n);
    for (size_t i = 0; i < n; i++)
        assert (added->via.array.ptr [i].via.i64 == counts [i]);
}

//  Stage series: buckets, campaign keys, TTLs, a refused event writes
//  nothing, GET series
static void
s_test_stage_series (redis_store_t *store)
{
    funnel_engine_cfg_t cfg = {
        .svc = "es", .prefix = "{funnel:es}:", .owner = "host|tcp://a", .partitions = 4
    };
    funnel_engine_t *engine = funnel_engine_new (&cfg, &s_test_stage_rules, store);
    msgpack_sbuffer_init (&s_test_reply);
    funnel_error_t err;
    funnel_error_clear (&err);
    assert (funnel_engine_sync (engine, &err) == 0);
    int64_t now = zclock_time (), t = now - 2 * 3600000;
    int64_t hb = t / 3600000, db = t / 86400000;
    char h [64], hc [128], d [64], dc [128], key [128];
    snprintf (h, sizeof h, "{funnel:es}:ser:h:%" PRId64, hb);
    snprintf (hc, sizeof hc, "%s:c1", h);
    snprintf (d, sizeof d, "{funnel:es}:ser:d:%" PRId64, db);
    snprintf (dc, sizeof dc, "%s:c1", d);
    msgpack_sbuffer reply;
    msgpack_sbuffer_init (&reply);
    test_batch_t b;
    int ns [] = { 2, 3 };
    s_test_batch (&b, "s", "c1x", ns, 2, t);
    assert (funnel_engine_publish (engine, b.events, b.count, true, NULL, &reply, &err) == 0);
    s_test_batch_free (&b);
    assert (s_test_int (store, "HGET", h, "added") == 5);
    assert (s_test_int (store, "HGET", hc, "added") == 5);
    assert (s_test_int (store, "HGET", d, "added") == 5);
    assert (s_test_int (store, "HGET", dc, "added") == 5);
    assert (s_test_int (store, "HGET", "{funnel:es}:stats", "added") == 5);
    //  Kept 90 days after the hour ends, 1096 days after the day ends
    int64_t now_s = now / 1000;
    int64_t ttl = s_test_int (store, "TTL", hc, NULL), want = (hb + 1) * 3600 + 90 * 86400 - now_s;
    assert (ttl <= want && ttl >= want - 5);
    ttl = s_test_int (store, "TTL", d, NULL);
    want = (db + 1) * 86400 + 1096 * 86400 - now_s;
    assert (ttl <= want && ttl >= want - 5);

    //  A refused element: no series write at all (not even a new bucket's key)
    int bad [] = { 4, -1 };
    s_test_batch (&b, "r", "c1x", bad, 2, t - 3600000);
    assert (funnel_engine_publish (engine, b.events, b.count, true, NULL, &reply, &err) == -1);
    s_test_batch_free (&b);
    snprintf (key, sizeof key, "{funnel:es}:ser:h:%" PRId64, hb - 1);
    assert (s_test_int (store, "EXISTS", key, NULL) == 0);
    assert (s_test_int (store, "HGET", d, "added") == 5);

    //  An invalid campaign id ("c " of "c y"): the whole funnel only
    int one [] = { 1 };
    s_test_batch (&b, "i", "c y", one, 1, t);
    assert (funnel_engine_publish (engine, b.events, b.count, true, NULL, &reply, &err) == 0);
    s_test_batch_free (&b);
    assert (s_test_int (store, "HGET", h, "added") == 6);
    assert (s_test_int (store, "HGET", hc, "added") == 5);
    snprintf (key, sizeof key, "%s:c ", h);
    assert (s_test_int (store, "EXISTS", key, NULL) == 0);

    //  1970 is past every keep: counted in STATS, no bucket written
    s_test_batch (&b, "o", "c1x", one, 1, 5);
    assert (funnel_engine_publish (engine, b.events, b.count, true, NULL, &reply, &err) == 0);
    s_test_batch_free (&b);
    assert (s_test_int (store, "EXISTS", "{funnel:es}:ser:h:0", NULL) == 0);
    assert (s_test_int (store, "EXISTS", "{funnel:es}:ser:d:0", NULL) == 0);
    assert (s_test_int (store, "HGET", "{funnel:es}:stats", "added") == 7);
    //  A far-future time cannot pin a key: at most keep + one bucket from now
    int64_t future = now + 10LL * 365 * 86400000;
    s_test_batch (&b, "f", "c1x", one, 1, future);
    assert (funnel_engine_publish (engine, b.events, b.count, true, NULL, &reply, &err) == 0);
    s_test_batch_free (&b);
    snprintf (key, sizeof key, "{funnel:es}:ser:h:%" PRId64 ":c1", future / 3600000);
    ttl = s_test_int (store, "TTL", key, NULL);
    assert (ttl > 90 * 86400 - 5 && ttl <= 90 * 86400 + 3600);

    //  GET series: hour and day, whole and per campaign
    msgpack_unpacked msg;
    int64_t hours [] = { 0, 6 }, hours_c1 [] = { 0, 5 }, days [] = { 6 };
    s_test_expect_counts (s_test_get_series (engine, t - 3600000, t, NULL, NULL, &msg, &err),
                          (hb - 1) * 3600000, hours, 2);
    msgpack_unpacked_destroy (&msg);
    s_test_expect_counts (s_test_get_series (engine, t - 3600000, t, "hour", "c1", &msg, &err),
                          (hb - 1) * 3600000, hours_c1, 2);
    msgpack_unpacked_destroy (&msg);
    s_test_expect_counts (s_test_get_series (engine, t, t, "day", NULL, &msg, &err),
                          db * 86400000, days, 1);
    msgpack_unpacked_destroy (&msg);
    //  The contract's checks and messages
    struct { int64_t from, to; const char *step, *campaign, *message; } bad_reqs [] = {
        { 0, 1, "week", NULL, "step: must be hour or day" },
        { -1, 1, NULL, NULL, "from: must be an integer ms 0..2^53" },
        { 0, -1, NULL, NULL, "to: must be an integer ms 0..2^53" },
        { 5, 1, NULL, NULL, "to: must not be before from" },
        { 0, 1, NULL, "a b", "campaign: must be 1-64 bytes of [A-Za-z0-9._:@+-]" },
        { 0, 2200LL * 3600000, NULL, NULL, "to: the range holds 2201 buckets; at most 2200" },
    };
    for (size_t i = 0; i < sizeof bad_reqs / sizeof bad_reqs [0]; i++) {
        assert (!s_test_get_series (engine, bad_reqs [i].from, bad_reqs [i].to,
                                    bad_reqs [i].step, bad_reqs [i].campaign, &msg, &err));
        assert (streq (err.code, FUNNEL_ERR_INVALID) && streq (err.message, bad_reqs [i].message));
        msgpack_unpacked_destroy (&msg);
    }
    //  2200 buckets is the most
    assert (s_test_get_series (engine, 0, 2199LL * 3600000, NULL, NULL, &msg, &err));
    msgpack_unpacked_destroy (&msg);
    //  An unknown kind lists the known ones sorted, series among them
    s_test_reply.size = 0;
    msgpack_packer pk;
    msgpack_packer_init (&pk, &s_test_reply, msgpack_sbuffer_write);
    msgpack_pack_map (&pk, 1);
    event_codec_pack_cstr (&pk, "kind");  event_codec_pack_cstr (&pk, "nope");
    event_codec_t *request = event_codec_decode (s_test_reply.data, s_test_reply.size,
                                               &event_codec_limits_body, &err);
    assert (funnel_engine_query (engine, event_codec_root (request), &reply, &err) == -1);
    assert (streq (err.message, "kind: unknown GET kind 'nope' (known: series)"));
    event_codec_destroy (&request);
    msgpack_sbuffer_destroy (&s_test_reply);
    msgpack_sbuffer_destroy (&reply);
    funnel_engine_destroy (&engine);
}

//  Privacy: test.add {key, n} emits test.said {key, secret} carrying
//  person key's data; n == 0 forgets person key; n < 0 is refused
static int
s_test_say (funnel_state_t *st, const funnel_event_t *ev, funnel_error_t *err)
{
    char key [64];
    event_codec_obj_strcpy (event_codec_map_get (ev->data, "key"), key, sizeof key);
    int64_t n = event_codec_map_get (ev->data, "n")->via.i64;
    //  "<route>.<person>": routed by the whole key, the data is person's
    //  (an output whose outbox is not the person's partition)
    const char *person = strchr (key, '.') ? strchr (key, '.') + 1 : key;
    if (n < 0)
        return funnel_error_set (err, FUNNEL_ERR_CONFLICT, "n: negative");
    if (n == 0)
        return funnel_state_forget_outputs (st, person);
    msgpack_packer *pk = funnel_state_data (st);
    msgpack_pack_map (pk, 2);
    event_codec_pack_cstr (pk, "key");
    event_codec_pack_cstr (pk, key);
    event_codec_pack_cstr (pk, "secret");
    event_codec_pack_cstr (pk, "s3cr3t");
    funnel_state_emit (st, "test.said", NULL);
    funnel_state_personal (st, person);
    return 0;
}

static const funnel_rule_t s_test_say_on [] = { { "test.add", s_test_say, NULL }, { NULL } };
static const funnel_personal_t s_test_personal [] = { { "test.said", { "secret", NULL } }, { NULL } };
static const funnel_rules_t s_test_say_rules = { .on = s_test_say_on, .personal = s_test_personal };

//  Entry seq of the privacy test's outbox: holds the secret or not, its id
static void
s_test_entry (redis_store_t *store, const char *seq, bool secret, const char *id)
{
    redisReply *r = s_test_cmd (store, "HGET", "{funnel:ep}:ob:0", seq, NULL);
    assert (r->type == REDIS_REPLY_STRING);
    assert (streq (r->str, id));            //  The id is the entry's first part
    assert ((memmem (r->str, r->len, "s3cr3t", 6) != NULL) == secret);
    assert ((memmem (r->str, r->len, "redacted", 8) != NULL) == !secret);
    freeReplyObject (r);
}

static void
s_test_privacy (redis_store_t *store)
{
    funnel_engine_cfg_t cfg = {
        .svc = "ep", .prefix = "{funnel:ep}:", .owner = "host|tcp://p", .partitions = 4,
        .cache_max = 100, .retention = 1000000, .dedup_ttl_s = 3600, .lease_ms = 2000
    };
    funnel_engine_t *engine = funnel_engine_new (&cfg, &s_test_say_rules, store);
    funnel_error_t err;
    funnel_error_clear (&err);
    assert (funnel_engine_sync (engine, &err) == 0);
    msgpack_sbuffer reply;
    msgpack_sbuffer_init (&reply);
    char index [256];
    assert (funnel_state_person_index_key (engine->state, "W", index, sizeof index) == 0);
    //  Two outputs with W's data: both in W's index, written with them
    int said [] = { 1, 2 };
    test_batch_t b;
    s_test_batch (&b, "pa", "W", said, 2, 5);
    assert (funnel_engine_publish (engine, b.events, b.count, true, NULL, &reply, &err) == 0);
    s_test_batch_free (&b);
    redisReply *r = s_test_cmd (store, "LRANGE", index, "0", "-1");
    assert (r->elements == 2 && streq (r->element [0]->str, "1") && streq (r->element [1]->str, "2"));
    freeReplyObject (r);
    //  ... and what an export lists
    zlist_t *seqs = funnel_state_person_outputs (engine->state, "W");
    assert (seqs && zlist_size (seqs) == 2 && streq ((char *) zlist_first (seqs), "1"));
    zlist_destroy (&seqs);
    //  A forget in a refused batch rewrites nothing
    int refused [] = { 0, -1 };
    s_test_batch (&b, "pb", "W", refused, 2, 5);
    assert (funnel_engine_publish (engine, b.events, b.count, true, NULL, &reply, &err) == -1);
    s_test_batch_free (&b);
    s_test_entry (store, "1", true, "ep:pa0:1");
    //  An output then the forget, one batch: the stored ones are rewritten
    //  in place, the new one before it is stored; the index goes
    int forget [] = { 3, 0 };
    s_test_batch (&b, "pc", "W", forget, 2, 5);
    assert (funnel_engine_publish (engine, b.events, b.count, true, NULL, &reply, &err) == 0);
    s_test_batch_free (&b);
    assert (funnel_engine_seq (engine) == 3);
    s_test_entry (store, "1", false, "ep:pa0:1");
    s_test_entry (store, "2", false, "ep:pa1:1");
    s_test_entry (store, "3", false, "ep:pc0:1");
    r = s_test_cmd (store, "EXISTS", index, NULL, NULL);
    assert (r->integer == 0);
    freeReplyObject (r);
    //  Forgetting again: nothing to do
    int again [] = { 0 };
    s_test_batch (&b, "pd", "W", again, 1, 5);
    assert (funnel_engine_publish (engine, b.events, b.count, true, NULL, &reply, &err) == 0);
    s_test_batch_free (&b);
    s_test_entry (store, "2", false, "ep:pa1:1");
    msgpack_sbuffer_destroy (&reply);
    funnel_engine_destroy (&engine);
}

//  A key "k<i>.<person>" whose partition (of 4) is in [lo, hi]
static void
s_test_key_in (const char *person, int lo, int hi, int skip, char *key, size_t size)
{
    for (int i = 0; ; i++) {
        snprintf (key, size, "k%d.%s", i, person);
        int p = funnel_partition_of (key, 4);
        if (p >= lo && p <= hi && p != skip)
            return;
    }
}

//  REPLAY of one partition: its events hold no secret; want of them redacted
static void
s_test_replay_clean (funnel_engine_t *engine, int part, size_t events_want, size_t redacted)
{
    msgpack_sbuffer reply;
    msgpack_sbuffer_init (&reply);
    funnel_error_t err;
    assert (funnel_engine_replay (engine, part, 1, 1000, NULL, &reply, &err) == 0);
    assert (!memmem (reply.data, reply.size, "s3cr3t", 6));
    event_codec_t *msg = event_codec_decode (reply.data, reply.size, &event_codec_limits_body, &err);
    const msgpack_object *events = event_codec_map_get (event_codec_root (msg), "events");
    assert (events && events->via.array.size == events_want);
    size_t seen = 0;
    for (size_t i = 0; i < events->via.array.size; i++) {
        const msgpack_object *data = event_codec_map_get (&events->via.array.ptr [i], "data");
        assert (event_codec_map_get (&events->via.array.ptr [i], "part")->via.u64
                == (uint64_t) part);
        seen += event_codec_map_get (data, "redacted") != NULL;
    }
    assert (seen == redacted);
    event_codec_destroy (&msg);
    msgpack_sbuffer_destroy (&reply);
}

//  Instance a owns partitions 0-1 and b 2-3 of 4 (per-partition
//  outboxes), both synced: the two-instance self-tests' set-up
static void
s_test_two_instances (const char *prefix, const funnel_rules_t *rules, redis_store_t *store,
                      redis_store_t *store2, funnel_engine_t **a, funnel_engine_t **b)
{
    static bool owns_a [4] = { true, true, false, false }, owns_b [4] = { false, false, true, true };
    funnel_engine_cfg_t cfg = {
        .svc = "alpha", .prefix = prefix, .owner = "host|tcp://a", .partitions = 4,
        .lease_ms = 2000, .owns = owns_a, .part_outbox = true
    };
    *a = funnel_engine_new (&cfg, rules, store);
    cfg.owner = "host|tcp://b";
    cfg.owns = owns_b;
    *b = funnel_engine_new (&cfg, rules, store2);
    funnel_error_t err;
    funnel_error_clear (&err);
    assert (funnel_engine_sync (*a, &err) == 0);
    assert (funnel_engine_sync (*b, &err) == 0);
}

//  Privacy with two instances (per-partition outboxes): person W's outputs
//  sit in a partition of each instance; the index names (part, seq); the
//  erase, applied by one instance, redacts both, REPLAY of each is clean
static void
s_test_privacy_parts (redis_store_t *store, redis_store_t *store2)
{
    funnel_engine_t *a, *b;
    s_test_two_instances ("{funnel:pp}:", &s_test_say_rules, store, store2, &a, &b);
    funnel_error_t err;
    funnel_error_clear (&err);
    char ka [32], kb [32];
    s_test_key_in ("W", 0, 1, -1, ka, sizeof ka);
    s_test_key_in ("W", 2, 3, -1, kb, sizeof kb);
    int pa = funnel_partition_of (ka, 4), pb = funnel_partition_of (kb, 4);
    msgpack_sbuffer reply;
    msgpack_sbuffer_init (&reply);
    int two [] = { 1, 2 }, one [] = { 1 };
    test_batch_t batch;
    s_test_batch (&batch, "qa", ka, two, 2, 5);
    assert (funnel_engine_publish (a, batch.events, batch.count, true, NULL, &reply, &err) == 0);
    s_test_batch_free (&batch);
    s_test_batch (&batch, "qb", kb, one, 1, 5);
    assert (funnel_engine_publish (b, batch.events, batch.count, true, NULL, &reply, &err) == 0);
    s_test_batch_free (&batch);
    //  One index (W's partition), entries "<part>:<seq>"
    char index [256], want [3][16];
    assert (funnel_state_person_index_key (a->state, "W", index, sizeof index) == 0);
    snprintf (want [0], 16, "%d:1", pa);
    snprintf (want [1], 16, "%d:2", pa);
    snprintf (want [2], 16, "%d:1", pb);
    redisReply *r = s_test_cmd (store, "LRANGE", index, "0", "-1");
    assert (r->elements == 3);
    for (int i = 0; i < 3; i++)
        assert (streq (r->element [i]->str, want [i]));
    freeReplyObject (r);
    //  The export packs them [part, seq]
    zlist_t *seqs = funnel_state_person_outputs (b->state, "W");
    assert (seqs && zlist_size (seqs) == 3);
    msgpack_sbuffer packed;
    msgpack_sbuffer_init (&packed);
    msgpack_packer pk;
    msgpack_packer_init (&pk, &packed, msgpack_sbuffer_write);
    funnel_state_pack_seqs (seqs, &pk);
    zlist_destroy (&seqs);
    msgpack_unpacked u;
    msgpack_unpacked_init (&u);
    assert (msgpack_unpack_next (&u, packed.data, packed.size, NULL) == MSGPACK_UNPACK_SUCCESS);
    const msgpack_object *third = &u.data.via.array.ptr [2];
    assert (third->type == MSGPACK_OBJECT_ARRAY && third->via.array.size == 2);
    assert (third->via.array.ptr [0].via.u64 == (uint64_t) pb
            && third->via.array.ptr [1].via.u64 == 1);
    msgpack_unpacked_destroy (&u);
    msgpack_sbuffer_destroy (&packed);
    //  The forget, applied by a (one of its partitions): its own outbox's
    //  entries and b's are rewritten, the index goes
    char kf [32];
    s_test_key_in ("W", 0, 1, -1, kf, sizeof kf);
    int forget [] = { 0 };
    s_test_batch (&batch, "qf", kf, forget, 1, 5);
    assert (funnel_engine_publish (a, batch.events, batch.count, true, NULL, &reply, &err) == 0);
    s_test_batch_free (&batch);
    assert (s_test_int (store, "EXISTS", index, NULL) == 0);
    s_test_replay_clean (a, pa, 2, 2);
    s_test_replay_clean (b, pb, 1, 1);
    //  An index entry of a partition b owns, its bucket gone meanwhile
    //  (trimmed): nothing is written back there
    s_test_batch (&batch, "qc", kb, one, 1, 5);
    assert (funnel_engine_publish (b, batch.events, batch.count, true, NULL, &reply, &err) == 0);
    s_test_batch_free (&batch);
    char bucket [64];
    snprintf (bucket, sizeof bucket, "{funnel:pp:%d}:ob:0", pb);
    freeReplyObject (s_test_cmd (store, "RENAME", bucket, "{funnel:pp}:saved", NULL));
    s_test_batch (&batch, "qg", kf, forget, 1, 5);
    assert (funnel_engine_publish (a, batch.events, batch.count, true, NULL, &reply, &err) == 0);
    s_test_batch_free (&batch);
    assert (s_test_int (store, "EXISTS", bucket, NULL) == 0);
    assert (s_test_int (store, "EXISTS", index, NULL) == 0);
    freeReplyObject (s_test_cmd (store, "RENAME", "{funnel:pp}:saved", bucket, NULL));
    msgpack_sbuffer_destroy (&reply);
    funnel_engine_destroy (&a);
    funnel_engine_destroy (&b);
}

//  redis/acks with per-partition outboxes: WAIT for a replica this Redis
//  does not have fails, so the commit's partition hides its seqs (PING's
//  sum, its heartbeat seq, its REPLAY) while another partition keeps
//  showing its own; a commit whose WAIT is satisfied shows them
static void
s_test_acks_parts (redis_store_t *store)
{
    funnel_engine_cfg_t cfg = {
        .svc = "alpha", .prefix = "{funnel:pk}:", .owner = "host|tcp://k", .partitions = 4,
        .lease_ms = 2000, .part_outbox = true, .acks = 0, .acks_timeout_ms = 10
    };
    funnel_engine_t *engine = funnel_engine_new (&cfg, &s_test_rules, store);
    funnel_error_t err;
    funnel_error_clear (&err);
    assert (funnel_engine_sync (engine, &err) == 0);
    char k1 [32], k2 [32];
    s_test_key_in ("x", 0, 3, -1, k1, sizeof k1);
    int p1 = funnel_partition_of (k1, 4);
    s_test_key_in ("x", 0, 3, p1, k2, sizeof k2);
    int p2 = funnel_partition_of (k2, 4);
    msgpack_sbuffer reply;
    msgpack_sbuffer_init (&reply);
    int one [] = { 1 };
    test_batch_t batch;
    s_test_batch (&batch, "ka", k1, one, 1, 5);
    assert (funnel_engine_publish (engine, batch.events, batch.count, true, NULL, &reply, &err) == 0);
    s_test_batch_free (&batch);
    assert (funnel_engine_part_seq (engine, p1) == 1 && funnel_engine_seq (engine) == 1);
    //  One replica wanted, none there: applied, hidden in p2 only
    engine->cfg.acks = 1;
    s_test_batch (&batch, "kb", k2, one, 1, 5);
    assert (funnel_engine_publish (engine, batch.events, batch.count, true, NULL, &reply, &err) == -1);
    assert (streq (err.code, FUNNEL_ERR_UNAVAILABLE) && strstr (err.message, "outcome unknown"));
    s_test_batch_free (&batch);
    char key [64];
    snprintf (key, sizeof key, "{funnel:pk:%d}:seq", p2);
    s_test_expect (store, "GET", key, NULL, "1");
    assert (funnel_engine_part_seq (engine, p2) == 0);
    assert (funnel_engine_part_seq (engine, p1) == 1 && funnel_engine_seq (engine) == 1);
    assert (s_hidden (engine));
    reply.size = 0;
    assert (funnel_engine_replay (engine, p2, 1, 1000, NULL, &reply, &err) == 0);
    assert (!memmem (reply.data, reply.size, "kb0", 3));
    reply.size = 0;
    assert (funnel_engine_replay (engine, p1, 1, 1000, NULL, &reply, &err) == 0);
    assert (memmem (reply.data, reply.size, "ka0", 3));
    //  The retry once the WAIT is satisfied (here: no replica asked for):
    //  a duplicate, and p2's seq shows
    engine->cfg.acks = 0;
    s_test_batch (&batch, "kb", k2, one, 1, 5);
    assert (funnel_engine_publish (engine, batch.events, batch.count, true, NULL, &reply, &err) == 0);
    s_test_batch_free (&batch);
    assert (funnel_engine_part_seq (engine, p2) == 1 && funnel_engine_seq (engine) == 2);
    assert (!s_hidden (engine));
    reply.size = 0;
    assert (funnel_engine_replay (engine, p2, 1, 1000, NULL, &reply, &err) == 0);
    assert (memmem (reply.data, reply.size, "kb0", 3));
    msgpack_sbuffer_destroy (&reply);
    funnel_engine_destroy (&engine);
}

//  Two instances over 4 partitions: per-partition outboxes and seqs, part
//  in REPLAY, leases per owned partition only
static void
s_test_partitioned (redis_store_t *store, redis_store_t *store2)
{
    funnel_engine_t *a, *b;
    s_test_two_instances ("{funnel:pt}:", &s_test_rules, store, store2, &a, &b);
    funnel_error_t err;
    funnel_error_clear (&err);
    //  A key in each instance's partitions
    char ka [16] = "", kb [16] = "";
    for (int i = 0; !*ka || !*kb; i++) {
        char key [16];
        snprintf (key, sizeof key, "k%d", i);
        int p = funnel_partition_of (key, 4);
        if (p < 2 && !*ka)
            snprintf (ka, sizeof ka, "%s", key);
        if (p >= 2 && !*kb)
            snprintf (kb, sizeof kb, "%s", key);
    }
    int pa = funnel_partition_of (ka, 4), pb = funnel_partition_of (kb, 4);
    msgpack_sbuffer reply;
    msgpack_sbuffer_init (&reply);
    int ns [] = { 1, 2 };
    test_batch_t batch;
    s_test_batch (&batch, "pa", ka, ns, 2, 5);
    assert (funnel_engine_publish (a, batch.events, batch.count, true, NULL, &reply, &err) == 0);
    s_test_batch_free (&batch);
    s_test_batch (&batch, "pb", kb, ns, 1, 5);
    assert (funnel_engine_publish (b, batch.events, batch.count, true, NULL, &reply, &err) == 0);
    s_test_batch_free (&batch);
    //  Each output in its partition's outbox, seqs from 1 there
    char key [64];
    snprintf (key, sizeof key, "{funnel:pt:%d}:seq", pa);
    s_test_expect (store, "GET", key, NULL, "2");
    snprintf (key, sizeof key, "{funnel:pt:%d}:seq", pb);
    s_test_expect (store, "GET", key, NULL, "1");
    assert (funnel_engine_part_seq (a, pa) == 2 && funnel_engine_part_seq (a, pb) == 0);
    assert (funnel_engine_seq (a) == 2 && funnel_engine_seq (b) == 1);
    //  The service-wide counters add up from both
    s_test_expect (store, "HGET", "{funnel:pt}:stats", "accepted", "3");
    //  REPLAY of a partition: its events, with part
    reply.size = 0;
    assert (funnel_engine_replay (a, pa, 1, 1000, NULL, &reply, &err) == 0);
    event_codec_t *msg = event_codec_decode (reply.data, reply.size, &event_codec_limits_body, &err);
    const msgpack_object *events = event_codec_map_get (event_codec_root (msg), "events");
    assert (events && events->via.array.size == 2);
    assert (event_codec_map_get (&events->via.array.ptr [1], "part")->via.u64 == (uint64_t) pa);
    assert (event_codec_map_get (&events->via.array.ptr [1], "seq")->via.u64 == 2);
    event_codec_destroy (&msg);
    assert (funnel_engine_replay (a, pb, 1, 1000, NULL, &reply, &err) == -1);
    //  A third instance claiming a's partitions: held
    funnel_engine_cfg_t cfg = a->cfg;
    cfg.owner = "host|tcp://c";
    funnel_engine_t *c = funnel_engine_new (&cfg, &s_test_rules, store2);
    assert (funnel_engine_sync (c, &err) == FUNNEL_ENGINE_LEASE_HELD);
    assert (strstr (err.message, "host|tcp://a"));
    funnel_engine_destroy (&c);
    //  A clean stop gives a's leases back: b's stay
    funnel_engine_release (a);
    snprintf (key, sizeof key, "{funnel:pt:%d}:lease", pa);
    assert (s_test_int (store, "EXISTS", key, NULL) == 0);
    snprintf (key, sizeof key, "{funnel:pt:%d}:lease", pb);
    assert (s_test_int (store, "EXISTS", key, NULL) == 1);
    msgpack_sbuffer_destroy (&reply);
    funnel_engine_destroy (&a);
    funnel_engine_destroy (&b);
}

//  A Redis Cluster (FUNNEL_TEST_REDIS_CLUSTER: the seeds of an empty
//  3-primary cluster, tests/e2e/test_redis_cluster.py): batches spanning
//  slots, a stop between the base transaction and the others completed by
//  the next sync, the lease fence per slot.
static redisReply *
s_test_cluster_cmd (redis_cluster_t *cluster, int argc, const char **argv)
{
    redis_pipeline_t *pipeline = redis_pipeline_new ();
    redis_pipeline_append (pipeline, argc, argv, NULL);
    redisReply *reply = NULL;
    funnel_error_t err;
    assert (redis_cluster_run (cluster, redis_cluster_slot (argv [1], strlen (argv [1])),
                               pipeline, &reply, &err) == 0);
    redis_pipeline_destroy (&pipeline);
    return reply;
}

static void
s_test_cluster_expect (redis_cluster_t *cluster, const char *cmd, const char *key,
                       const char *field, long long want)
{
    redisReply *r = s_test_cluster_cmd (cluster, field ? 3 : 2,
                                        (const char *[]) { cmd, key, field });
    long long got = r->type == REDIS_REPLY_INTEGER ? r->integer
                  : r->type == REDIS_REPLY_STRING ? atoll (r->str) : 0;
    if (got != want)
        fprintf (stderr, "%s %s %s: %lld, expected %lld\n", cmd, key, field ? field : "",
                 got, want);
    assert (got == want);
    freeReplyObject (r);
}

static funnel_engine_t *
s_test_cluster_engine (redis_cluster_t *cluster, const char *owner)
{
    funnel_engine_cfg_t cfg = {
        .svc = "ct", .prefix = "{funnel:ct}:", .owner = owner, .partitions = 4,
        .lease_ms = 2000, .part_outbox = true
    };
    funnel_engine_t *engine = funnel_engine_new (&cfg, &s_test_rules, NULL);
    funnel_engine_use_cluster (engine, cluster);
    return engine;
}

static void
s_test_cluster (const char *seeds)
{
    redis_url_t url;
    assert (redis_url_parse (seeds, &url, NULL) == 0 && url.mode == REDIS_MODE_CLUSTER);
    redis_cluster_t *cluster = redis_cluster_new (&url);
    funnel_engine_t *engine = s_test_cluster_engine (cluster, "host|tcp://a");
    funnel_error_t err;
    funnel_error_clear (&err);
    assert (funnel_engine_sync (engine, &err) == 0);
    //  The keys of this test: the counter's partition differs from the
    //  outputs' (partition 0) and from the base slot
    const char *key = "K1";
    int part = funnel_partition_of (key, 4);
    assert (part != 0);
    char counter [128];
    snprintf (counter, sizeof counter, "{funnel:ct:%d}:counter:K1", part);
    int ns [] = { 2, 3 };
    test_batch_t b;
    s_test_batch (&b, "c", key, ns, 2, 5);
    msgpack_sbuffer reply;
    msgpack_sbuffer_init (&reply);
    assert (funnel_engine_publish (engine, b.events, b.count, true, NULL, &reply, &err) == 0);
    s_test_batch_free (&b);
    s_test_cluster_expect (cluster, "HGET", counter, "total", 5);
    s_test_cluster_expect (cluster, "HGET", "{funnel:ct}:stats", "accepted", 2);
    s_test_cluster_expect (cluster, "GET", "{funnel:ct:0}:seq", NULL, 2);
    assert (funnel_engine_seq (engine) == 2);

    //  Killed between the base transaction (stats, the intent) and the
    //  partitions' ones: the counter and seq are not there yet ...
    engine->test_crash = true;
    int ten [] = { 10 };
    s_test_batch (&b, "d", key, ten, 1, 5);
    assert (funnel_engine_publish (engine, b.events, b.count, true, NULL, &reply, &err) == -1);
    assert (streq (err.code, FUNNEL_ERR_UNAVAILABLE) && strstr (err.message, "unknown"));
    s_test_cluster_expect (cluster, "HGET", counter, "total", 5);
    s_test_cluster_expect (cluster, "GET", "{funnel:ct:0}:seq", NULL, 2);
    redisReply *pending = s_test_cluster_cmd (cluster, 2,
                                              (const char *[]) { "HLEN", "{funnel:ct}:intents" });
    assert (pending->type == REDIS_REPLY_INTEGER && pending->integer >= 1);
    freeReplyObject (pending);
    funnel_engine_destroy (&engine);            //  No release: the leases stay

    //  ... a second owner cannot start meanwhile ...
    funnel_engine_t *other = s_test_cluster_engine (cluster, "host|tcp://b");
    assert (funnel_engine_sync (other, &err) == FUNNEL_ENGINE_LEASE_HELD);
    funnel_engine_destroy (&other);

    //  ... and the restart completes the batch once, before anything else
    engine = s_test_cluster_engine (cluster, "host|tcp://a");
    assert (funnel_engine_sync (engine, &err) == 0);
    s_test_cluster_expect (cluster, "HGET", counter, "total", 15);
    s_test_cluster_expect (cluster, "GET", "{funnel:ct:0}:seq", NULL, 3);
    s_test_cluster_expect (cluster, "HGET", "{funnel:ct}:stats", "accepted", 3);
    s_test_cluster_expect (cluster, "HLEN", "{funnel:ct}:intents", NULL, 0);
    assert (funnel_engine_seq (engine) == 3);
    //  The client's retry: a duplicate
    assert (funnel_engine_publish (engine, b.events, b.count, true, NULL, &reply, &err) == 0);
    s_test_cluster_expect (cluster, "HGET", counter, "total", 15);
    s_test_cluster_expect (cluster, "HGET", "{funnel:ct}:stats", "duplicates", 1);
    s_test_batch_free (&b);
    //  A sync again (a reconnect): nothing applied twice
    assert (funnel_engine_sync (engine, &err) == 0);
    s_test_cluster_expect (cluster, "HGET", counter, "total", 15);

    //  Another owner takes the counter's partition lease: the next commit
    //  touching it is refused, the engine steps down
    char lease [64];
    snprintf (lease, sizeof lease, "{funnel:ct:%d}:lease", part);
    freeReplyObject (s_test_cluster_cmd (cluster, 3, (const char *[]) { "SET", lease,
                                                                        "99|host|tcp://b" }));
    int one [] = { 1 };
    s_test_batch (&b, "e", key, one, 1, 5);
    assert (funnel_engine_publish (engine, b.events, b.count, true, NULL, &reply, &err) == -1);
    assert (funnel_engine_lost (engine));
    s_test_batch_free (&b);
    s_test_cluster_expect (cluster, "HGET", counter, "total", 15);
    msgpack_sbuffer_destroy (&reply);
    funnel_engine_destroy (&engine);
    redis_cluster_destroy (&cluster);
}

//  Two instances on a cluster (shared records under the base tag): a
//  record both write stays exact through a WATCH conflict; a stop between
//  the base transaction and a partition's is completed by the same
//  instance's restart, never by the other; the other layout is refused.
static funnel_engine_t *
s_test_shared_engine (redis_cluster_t *cluster, const char *owner, bool *owns)
{
    funnel_engine_cfg_t cfg = {
        .svc = "alpha", .prefix = "{funnel:sh}:", .owner = owner, .partitions = 4,
        .lease_ms = 2000, .part_outbox = true, .owns = owns
    };
    funnel_engine_t *engine = funnel_engine_new (&cfg, &s_test_rules, NULL);
    funnel_engine_use_cluster (engine, cluster);
    return engine;
}

static void
s_test_cluster_shared (const char *seeds)
{
    redis_url_t url;
    assert (redis_url_parse (seeds, &url, NULL) == 0);
    //  One client each: a WATCH lives on its connection
    redis_cluster_t *ca = redis_cluster_new (&url), *cb = redis_cluster_new (&url);
    static bool owns_a [4] = { true, true, false, false }, owns_b [4] = { false, false, true, true };
    funnel_engine_t *a = s_test_shared_engine (ca, "host|tcp://a", owns_a);
    funnel_engine_t *b = s_test_shared_engine (cb, "host|tcp://b", owns_b);
    funnel_error_t err;
    funnel_error_clear (&err);
    assert (funnel_engine_sync (a, &err) == 0);
    assert (funnel_engine_sync (b, &err) == 0);
    redisReply *layout = s_test_cluster_cmd (ca, 2, (const char *[]) { "GET", "{funnel:sh}:layout" });
    assert (layout->type == REDIS_REPLY_STRING && streq (layout->str, "shared"));
    freeReplyObject (layout);
    char ka [16] = "", kb [16] = "";
    for (int i = 0; !*ka || !*kb; i++) {
        char key [16];
        snprintf (key, sizeof key, "tally%d", i);
        int p = funnel_partition_of (key, 4);
        if (p < 2 && !*ka)
            snprintf (ka, sizeof ka, "%s", key);
        if (p >= 2 && !*kb)
            snprintf (kb, sizeof kb, "%s", key);
    }
    int pa = funnel_partition_of (ka, 4);
    msgpack_sbuffer reply;
    msgpack_sbuffer_init (&reply);
    test_batch_t batch;
    int ns [] = { 1, 2 }, three [] = { 3 };
    s_test_batch (&batch, "a0-", ka, ns, 2, 5);
    assert (funnel_engine_publish (a, batch.events, batch.count, true, NULL, &reply, &err) == 0);
    s_test_batch_free (&batch);
    //  a reads the shared record (a GET: WATCHed on a's connection), b
    //  changes it, then a's next commit conflicts and runs again
    funnel_state_clear (a->state);
    assert (funnel_state_global (a->state, "tally", "all"));
    s_test_batch (&batch, "b0-", kb, three, 1, 5);
    assert (funnel_engine_publish (b, batch.events, batch.count, true, NULL, &reply, &err) == 0);
    s_test_batch_free (&batch);
    uint64_t conflicts = a->conflicts;
    s_test_batch (&batch, "a1-", ka, ns, 2, 5);
    assert (funnel_engine_publish (a, batch.events, batch.count, true, NULL, &reply, &err) == 0);
    s_test_batch_free (&batch);
    assert (a->conflicts == conflicts + 1);
    s_test_cluster_expect (ca, "HGET", "{funnel:sh}:0:tally:all", "total", 9);
    char key [64];
    snprintf (key, sizeof key, "{funnel:sh}:%d:counter:%s", pa, ka);
    s_test_cluster_expect (ca, "HGET", key, "total", 6);
    //  Outbox and applied ids stay in the partition's own slot
    snprintf (key, sizeof key, "{funnel:sh:%d}:seq", pa);
    s_test_cluster_expect (ca, "GET", key, NULL, 4);
    snprintf (key, sizeof key, "{funnel:sh:%d}:id:a1-0", pa);
    s_test_cluster_expect (ca, "EXISTS", key, NULL, 1);
    s_test_cluster_expect (ca, "HGET", "{funnel:sh}:stats", "accepted", 5);

    //  a stops after its base transaction: b goes on and leaves a's
    //  pending partition alone; a's restart completes it once
    a->test_crash = true;
    int ten [] = { 10 };
    s_test_batch (&batch, "a2-", ka, ten, 1, 5);
    assert (funnel_engine_publish (a, batch.events, batch.count, true, NULL, &reply, &err) == -1);
    s_test_batch_free (&batch);
    funnel_engine_destroy (&a);
    //  The records went with the base transaction; the output not yet
    s_test_cluster_expect (ca, "HGET", "{funnel:sh}:0:tally:all", "total", 19);
    snprintf (key, sizeof key, "{funnel:sh}:%d:counter:%s", pa, ka);
    s_test_cluster_expect (ca, "HGET", key, "total", 16);
    snprintf (key, sizeof key, "{funnel:sh:%d}:seq", pa);
    s_test_cluster_expect (ca, "GET", key, NULL, 4);
    assert (funnel_engine_sync (b, &err) == 0);
    s_test_batch (&batch, "b1-", kb, three, 1, 5);
    assert (funnel_engine_publish (b, batch.events, batch.count, true, NULL, &reply, &err) == 0);
    s_test_batch_free (&batch);
    s_test_cluster_expect (ca, "GET", key, NULL, 4);
    a = s_test_shared_engine (ca, "host|tcp://a", owns_a);
    assert (funnel_engine_sync (a, &err) == 0);
    s_test_cluster_expect (ca, "GET", key, NULL, 5);
    s_test_cluster_expect (ca, "HGET", "{funnel:sh}:0:tally:all", "total", 22);
    snprintf (key, sizeof key, "{funnel:sh:%d}:id:a2-0", pa);
    s_test_cluster_expect (ca, "EXISTS", key, NULL, 1);

    //  One instance on this data: another layout, refused
    funnel_engine_cfg_t one = {
        .svc = "alpha", .prefix = "{funnel:sh}:", .owner = "host|tcp://c", .partitions = 4,
        .lease_ms = 2000, .part_outbox = true
    };
    redis_cluster_t *cc = redis_cluster_new (&url);
    funnel_engine_t *c = funnel_engine_new (&one, &s_test_rules, NULL);
    funnel_engine_use_cluster (c, cc);
    assert (funnel_engine_sync (c, &err) == FUNNEL_ENGINE_LAYOUT);
    assert (strstr (err.message, "cluster layout"));
    funnel_engine_destroy (&c);
    redis_cluster_destroy (&cc);

    //  The base copy of a's lease taken by another: a steps down with
    //  nothing applied
    snprintf (key, sizeof key, "{funnel:sh}:lease:%d", pa);
    freeReplyObject (s_test_cluster_cmd (ca, 3, (const char *[]) { "SET", key, "99|host|tcp://z" }));
    s_test_batch (&batch, "a3-", ka, ns, 1, 5);
    assert (funnel_engine_publish (a, batch.events, batch.count, true, NULL, &reply, &err) == -1);
    assert (funnel_engine_lost (a));
    s_test_batch_free (&batch);
    s_test_cluster_expect (ca, "HGET", "{funnel:sh}:0:tally:all", "total", 22);
    //  b's clean stop gives its leases back, copies included
    funnel_engine_release (b);
    snprintf (key, sizeof key, "{funnel:sh}:lease:%d", funnel_partition_of (kb, 4));
    s_test_cluster_expect (cb, "EXISTS", key, NULL, 0);
    //  Data from before the layout was recorded is one instance's: several
    //  refused, and the key says so from then on
    freeReplyObject (s_test_cluster_cmd (cb, 2, (const char *[]) { "DEL", "{funnel:sh}:layout" }));
    funnel_engine_destroy (&b);
    b = s_test_shared_engine (cb, "host|tcp://b", owns_b);
    assert (funnel_engine_sync (b, &err) == FUNNEL_ENGINE_LAYOUT);
    assert (strstr (err.message, "one instance"));
    layout = s_test_cluster_cmd (cb, 2, (const char *[]) { "GET", "{funnel:sh}:layout" });
    assert (layout->type == REDIS_REPLY_STRING && streq (layout->str, "partitioned"));
    freeReplyObject (layout);
    msgpack_sbuffer_destroy (&reply);
    funnel_engine_destroy (&a);
    funnel_engine_destroy (&b);
    redis_cluster_destroy (&ca);
    redis_cluster_destroy (&cb);
}

void
funnel_engine_test (bool verbose)
{
    const char *seeds = getenv ("FUNNEL_TEST_REDIS_CLUSTER");
    if (seeds && *seeds) {
        s_test_cluster (seeds);
        s_test_cluster_shared (seeds);
    }
    const char *text = getenv ("FUNNEL_TEST_REDIS_URL");
    if (!text || !*text) {
        if (verbose)
            printf ("FUNNEL_TEST_REDIS_URL not set: engine tests skipped\n");
        return;
    }
    redis_url_t url;
    assert (redis_url_parse (text, &url, NULL) == 0);
    redis_store_t *store = redis_store_new (&url);
    redis_store_t *store2 = redis_store_new (&url);
    freeReplyObject (s_test_cmd (store, "FLUSHDB", NULL, NULL, NULL));
    funnel_engine_cfg_t cfg = {
        .svc = "et", .prefix = "{funnel:et}:", .owner = "host|tcp://a", .partitions = 4,
        .cache_max = 100, .retention = 1000000, .dedup_ttl_s = 3600, .lease_ms = 2000
    };
    funnel_engine_t *engine = funnel_engine_new (&cfg, &s_test_rules, store);
    funnel_engine_set_publisher (engine, s_test_publish, NULL);
    funnel_error_t err;
    funnel_error_clear (&err);
    assert (funnel_engine_sync (engine, &err) == 0);
    assert (funnel_engine_synced (engine) && funnel_engine_seq (engine) == 0);

    //  A second instance (another owner) cannot take the partitions
    cfg.owner = "host|tcp://b";
    funnel_engine_t *other = funnel_engine_new (&cfg, &s_test_rules, store2);
    assert (funnel_engine_sync (other, &err) == FUNNEL_ENGINE_LEASE_HELD);
    assert (strstr (err.message, "host|tcp://a"));

    //  A batch: ids deduplicated within it, one commit, contiguous seqs
    int ns [] = { 2, 3, 4 };
    test_batch_t b;
    s_test_batch (&b, "a", "X:log", ns, 3, 5);
    snprintf (b.events [2].id, sizeof b.events [2].id, "a0");     //  A duplicate
    msgpack_sbuffer reply;
    msgpack_sbuffer_init (&reply);
    assert (funnel_engine_publish (engine, b.events, b.count, true, NULL, &reply, &err) == 0);
    assert (funnel_engine_seq (engine) == 2 && s_test_published == 2);
    //  The key of id "X:log" is escaped: no collision with a "X" + ":log"
    char key [256];
    funnel_rec_t *rec = funnel_state_rec (engine->state, "counter", "X:log");
    snprintf (key, sizeof key, "%s", funnel_rec_key (rec));
    assert (strstr (key, "counter:X%3Alog"));
    s_test_expect (store, "HGET", key, "total", "5");
    s_test_expect (store, "HGET", "{funnel:et}:stats", "accepted", "2");
    s_test_expect (store, "HGET", "{funnel:et}:stats", "duplicates", "1");
    s_test_expect (store, "GET", "{funnel:et}:seq", NULL, "2");
    //  The same batch again: all duplicates, nothing new
    reply.size = 0;
    assert (funnel_engine_publish (engine, b.events, 2, true, NULL, &reply, &err) == 0);
    assert (funnel_engine_seq (engine) == 2);
    s_test_batch_free (&b);

    //  A refused element: nothing of the batch, in Redis or in the cache
    int bad [] = { 10, -1 };
    s_test_batch (&b, "b", "X:log", bad, 2, 5);
    assert (funnel_engine_publish (engine, b.events, b.count, true, NULL, &reply, &err) == -1);
    assert (streq (err.code, FUNNEL_ERR_CONFLICT) && err.index == 1);
    assert (funnel_rec_int (funnel_state_rec (engine->state, "counter", "X:log"), "total", 0) == 5);
    s_test_expect (store, "HGET", key, "total", "5");
    assert (funnel_engine_seq (engine) == 2);
    s_test_batch_free (&b);

    //  Consumed: a refused event is passed over, the checkpoint is written
    int up [] = { 1, -5, 7 };
    s_test_batch (&b, "u", "Y", up, 3, 5);
    assert (funnel_engine_consume (engine, "up", b.events, b.count, 9, &err) == 0);
    assert (funnel_engine_checkpoint (engine, "up") == 9);
    s_test_expect (store, "HGET", "{funnel:et}:ckpt", "up", "9");
    s_test_expect (store, "HGET", "{funnel:et}:stats", "consume_rejected", "1");
    assert (funnel_engine_seq (engine) == 4);
    //  Replayed again: below the checkpoint, skipped
    assert (funnel_engine_consume (engine, "up", b.events, b.count, 9, &err) == 0);
    assert (funnel_engine_seq (engine) == 4);
    s_test_batch_free (&b);

    //  The timer armed by n == 7 is due: the cron fires it, once
    funnel_engine_cron (engine);
    assert (funnel_engine_seq (engine) == 5);
    funnel_engine_cron (engine);
    assert (funnel_engine_seq (engine) == 5);
    rec = funnel_state_rec (engine->state, "counter", "Y");
    assert (streq (funnel_rec_str (rec, "rang"), "yes"));
    //  Bounded list: the last 2 only
    snprintf (key, sizeof key, "%slog:Y", funnel_state_prefix (engine->state,
                                                               funnel_partition_of ("Y", 4)));
    redisReply *r = s_test_cmd (store, "LLEN", key, NULL, NULL);
    assert (r->integer == 2);
    freeReplyObject (r);
    zlist_t *log = funnel_state_list (engine->state, "log", "Y", 5);
    assert (log && zlist_size (log) == 2);
    assert (streq ((const char *) zlist_first (log), "u0"));
    assert (streq ((const char *) zlist_next (log), "u2"));
    zlist_destroy (&log);

    //  REPLAY: the outbox entries as envelopes
    reply.size = 0;
    assert (funnel_engine_replay (engine, -1, 1, 1000, NULL, &reply, &err) == 0);
    event_codec_t *msg = event_codec_decode (reply.data, reply.size, &event_codec_limits_body, &err);
    assert (msg);
    const msgpack_object *events = event_codec_map_get (event_codec_root (msg), "events");
    assert (events && events->via.array.size == 5);
    event_codec_destroy (&msg);

    //  Redis out of memory: unavailable, nothing applied (EXECABORT)
    freeReplyObject (s_test_cmd (store2, "CONFIG", "SET", "maxmemory", "1"));
    int one [] = { 1 };
    s_test_batch (&b, "oom", "Z", one, 1, 5);
    assert (funnel_engine_publish (engine, b.events, b.count, true, NULL, &reply, &err) == -1);
    assert (streq (err.code, FUNNEL_ERR_UNAVAILABLE) && strstr (err.message, "OOM"));
    assert (strstr (err.message, "nothing was applied"));
    freeReplyObject (s_test_cmd (store2, "CONFIG", "SET", "maxmemory", "0"));
    assert (funnel_engine_seq (engine) == 5);
    s_test_expect (store, "GET", "{funnel:et}:seq", NULL, "5");
    //  ... and the retry applies
    assert (funnel_engine_publish (engine, b.events, b.count, true, NULL, &reply, &err) == 0);
    assert (funnel_engine_seq (engine) == 6);
    s_test_batch_free (&b);

    //  Another owner takes a lease (as after a pause past its expiry): the
    //  next commit aborts (WATCH), nothing applied, the engine steps down
    freeReplyObject (s_test_cmd (store2, "SET", "{funnel:et:2}:lease", "99|host|tcp://b", NULL));
    s_test_batch (&b, "late", "Z", one, 1, 5);
    assert (funnel_engine_publish (engine, b.events, b.count, true, NULL, &reply, &err) == -1);
    assert (streq (err.code, FUNNEL_ERR_UNAVAILABLE) && funnel_engine_lost (engine));
    s_test_expect (store, "GET", "{funnel:et}:seq", NULL, "6");
    s_test_batch_free (&b);

    msgpack_sbuffer_destroy (&reply);
    funnel_engine_destroy (&other);
    funnel_engine_destroy (&engine);
    assert (engine == NULL);
    s_test_stage_series (store2);
    s_test_privacy (store2);
    s_test_partitioned (store, store2);
    s_test_privacy_parts (store, store2);
    s_test_acks_parts (store);
    redis_store_destroy (&store);
    redis_store_destroy (&store2);
}
