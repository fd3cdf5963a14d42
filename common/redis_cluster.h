/*  redis_cluster — the small slot-routing layer a Redis Cluster needs, on
    hiredis 0.14 (which has none).

    A key's slot is CRC16-XMODEM of its hash tag (the bytes between the
    first '{' and the next '}' when that is not empty, else the whole key)
    mod 16384. The slot map comes from CLUSTER SLOTS; each primary gets one
    redis_store (so connect + AUTH + backoff are the same as everywhere).

    A pipeline is the commands of one slot, sent to that slot's primary in
    one round trip. Redirects are followed, bounded (REDIS_CLUSTER_ATTEMPTS
    sends in all):
      MOVED          the map is refreshed (CLUSTER SLOTS) and the pipeline
                     resent to the new owner;
      ASK            resent once to the named node, after ASKING (the map
                     is not changed: the slot is being migrated);
      TRYAGAIN       (multi-key command during a migration) and
      CLUSTERDOWN    resent after a short pause (20 ms × attempt);
      a node that cannot be reached: the map is refreshed (a replica may
                     have been promoted) and the pipeline resent.
    A pipeline is resent whole, so it must be safe to send again: a
    MULTI/EXEC transaction is (a redirect inside it aborts it: EXECABORT,
    nothing ran), and so are idempotent commands. The replies after an EXEC
    that ran are never a reason to resend: they are returned as they are.
    A connection lost while replies were due is "outcome unknown": never
    resent (the caller retries with its own idempotency).
*/
#ifndef REDIS_CLUSTER_H_INCLUDED
#define REDIS_CLUSTER_H_INCLUDED

#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "funnel_error.h"
#include "redis_store.h"

#define REDIS_CLUSTER_SLOTS     16384
#define REDIS_CLUSTER_ATTEMPTS  5

//  CRC16-CCITT (XMODEM: poly 0x1021, init 0), as the cluster spec.
uint16_t
    redis_cluster_crc16 (const void *data, size_t size);

//  The slot of a key (0..16383), hash tags honoured.
int
    redis_cluster_slot (const char *key, size_t size);

//  ---------------------------------------------------------------------
//  A pipeline: commands encoded once (RESP), resendable.

typedef struct _redis_pipeline_t redis_pipeline_t;

redis_pipeline_t *
    redis_pipeline_new (void);
void
    redis_pipeline_destroy (redis_pipeline_t **self_p);
//  Empties it for reuse.
void
    redis_pipeline_reset (redis_pipeline_t *self);
//  Appends one command (binary-safe with argvlen, else strlen).
void
    redis_pipeline_append (redis_pipeline_t *self, int argc, const char **argv,
                           const size_t *argvlen);
size_t
    redis_pipeline_count (redis_pipeline_t *self);
//  The pipeline's RESP bytes (e.g. to store them and send them later).
const char *
    redis_pipeline_data (redis_pipeline_t *self, size_t *size);
//  Appends count commands already in RESP (redis_pipeline_data's bytes).
void
    redis_pipeline_append_raw (redis_pipeline_t *self, const char *data, size_t size,
                               size_t count);

//  ---------------------------------------------------------------------
//  The cluster

typedef struct _redis_cluster_t redis_cluster_t;

//  url: its nodes are the seeds, its user and password every node's AUTH.
//  Does not connect yet.
redis_cluster_t *
    redis_cluster_new (const redis_url_t *url);
void
    redis_cluster_destroy (redis_cluster_t **self_p);

//  Every node's command timeout (redis_store_set_timeout), now and later.
void
    redis_cluster_set_timeout (redis_cluster_t *self, int ms);

//  Reloads the slot map from the first node (known ones, then seeds) that
//  answers CLUSTER SLOTS. 0, or -1 with unavailable.
int
    redis_cluster_refresh (redis_cluster_t *self, funnel_error_t *err);

//  "host:port" of the slot's primary in the map, NULL if none (yet).
const char *
    redis_cluster_node_of (redis_cluster_t *self, int slot);

//  Runs the pipeline on the slot's primary: replies[count] filled (the
//  caller frees each; error replies included), 0. -1 with unavailable when
//  no node could take it or redirects did not settle (nothing ran), or
//  when the connection was lost before the replies (outcome unknown: the
//  message says so).
int
    redis_cluster_run (redis_cluster_t *self, int slot, redis_pipeline_t *pipeline,
                       redisReply **replies, funnel_error_t *err);

//  A WATCH lives on one connection, so a transaction must be sent where
//  its WATCH went. A connection is a node index and the generation of its
//  redis_store (each reconnect makes a new one).
//  The connection that serves slot now by the map (-1: no node known;
//  *generation 0: not connected).
int
    redis_cluster_conn_of (redis_cluster_t *self, int slot, uint64_t *generation);
//  The connection of the last successful redis_cluster_run (-1: none, or it
//  followed an ASK).
int
    redis_cluster_last_conn (redis_cluster_t *self, uint64_t *generation);
//  Runs the pipeline on that connection, following no redirect: replies as
//  they are (a redirect among them means a MULTI/EXEC did not run:
//  EXECABORT). -1 with unavailable if the connection is gone or was
//  renewed (its WATCH with it), or is lost before the replies (outcome
//  unknown: the message says so).
int
    redis_cluster_run_on (redis_cluster_t *self, int node, uint64_t generation,
                          redis_pipeline_t *pipeline, redisReply **replies,
                          funnel_error_t *err);
//  run_on in two halves, for transactions on several nodes at once: send
//  each (written out, no reply read), then read each one's replies; the
//  nodes work meanwhile. Same errors as run_on ("gone": nothing was sent).
int
    redis_cluster_send_on (redis_cluster_t *self, int node, uint64_t generation,
                           redis_pipeline_t *pipeline, funnel_error_t *err);
int
    redis_cluster_recv_on (redis_cluster_t *self, int node, redis_pipeline_t *pipeline,
                           redisReply **replies, funnel_error_t *err);

//  Redirects followed so far: MOVED, ASK (for STATS and tests).
void
    redis_cluster_redirects (redis_cluster_t *self, uint64_t *moved, uint64_t *asked);

void
    redis_cluster_test (bool verbose);

#endif
