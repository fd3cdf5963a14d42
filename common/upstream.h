/*  upstream — one subscription to an upstream service, without loss.

    PUB/SUB drops messages (slow joiner, HWM, restarts), so every upstream
    event carries a contiguous seq. This class keeps `expected`, the next seq
    to apply: a live event equal to it is applied, an older one is dropped
    (already applied), a newer one or a heartbeat ahead of it means a gap,
    and the gap is filled from the upstream's REPLAY before going on live
    (the Clone pattern). Batches are handed to the owner's apply callback;
    if it fails (Redis down) `expected` goes back and replay refetches.
    Types the service does not consume only advance the position.
*/
#ifndef UPSTREAM_H_INCLUDED
#define UPSTREAM_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>
#include <stdint.h>
#include "event_codec.h"

typedef struct _upstream_t upstream_t;

//  Applies events (each one msgpack envelope) in seq order and records the
//  checkpoint last_seq atomically; 0 on success, -1 if nothing was applied.
typedef int (upstream_apply_fn) (void *arg, upstream_t *upstream,
                                 const char **events, const size_t *sizes,
                                 size_t count, uint64_t last_seq);

//  consumes: NULL-terminated event types to apply ("*" = every type); all
//  others are skipped.
upstream_t *
    upstream_new (const char *name, const char *api, const char *pub,
                  const char *const *consumes, upstream_apply_fn *apply, void *arg);
//  One partition of a partitioned upstream (an `instances` topology): no
//  SUB socket of its own (upstream_set reads the instances' PUB and offers
//  each message to its partition); REPLAY asks api for `partition`, and
//  follows an ERR moved to the new owner. Its name (and checkpoint) is
//  "<name>:<part>".
upstream_t *
    upstream_new_part (const char *name, int part, const char *api,
                       const char *const *consumes, upstream_apply_fn *apply, void *arg);
void
    upstream_destroy (upstream_t **self_p);
//  Inside the apply callback of a live batch (upstream_settle): the
//  decoded event whose bytes are events[index] (the callback's), owned by
//  the upstream; NULL otherwise (a REPLAY page: decode it yourself).
//  Live events were decoded once already, to read their seq and type.
event_codec_t *
    upstream_held (upstream_t *self, size_t index, const char *event);
//  Live messages, read by the owner of a SUB (upstream_drain here, or
//  upstream_set for a partitioned upstream) into two zmq messages reused
//  for a whole drain: upstream_live_recv reads one message's [topic][body]
//  (-1: none waiting; 0: no body; 1: both), upstream_live_decode decodes a
//  body once (NULL and a rate-limited warning if malformed), and
//  upstream_offer_decoded takes it: a heartbeat, or an event kept (the
//  decoded copy) for upstream_settle, which applies what was offered as
//  one batch.
int
    upstream_live_recv (void *sub, zmq_msg_t *topic, zmq_msg_t *body);
bool
    upstream_live_heartbeat (const zmq_msg_t *topic);
event_codec_t *
    upstream_live_decode (upstream_t *self, const zmq_msg_t *body);
void
    upstream_offer_decoded (upstream_t *self, bool heartbeat, event_codec_t **decoded_p);
void
    upstream_settle (upstream_t *self);

const char *
    upstream_name (upstream_t *self);
//  Registers with the upstream under this name (REPLAY "subscriber"): its
//  outbox then keeps what we have not applied, and we
//  report our position every 2 s while live.
void
    upstream_set_subscriber (upstream_t *self, const char *name);
//  The SUB socket, for the owner's poll loop (NULL for a partition).
//  A SUB for an upstream's PUB (every topic, no receive HWM, CURVE
//  client), not connected yet; NULL if CURVE cannot be set up.
zsock_t *
    upstream_sub_socket (const char *name);
zsock_t *
    upstream_sub (upstream_t *self);

//  Sets the position from the stored checkpoint and asks for a catch-up.
void
    upstream_start (upstream_t *self, uint64_t checkpoint);

//  Reads what is waiting on the SUB socket (up to a bounded number of
//  messages) and applies it in batches.
void
    upstream_drain (upstream_t *self);
#define UPSTREAM_BATCH_MAX  1000

//  The most live events one batch applies and one drain reads
//  (1..UPSTREAM_BATCH_MAX, the default): the owner's loop serves nothing else meanwhile, so a
//  smaller one bounds how long a request waits behind a batch.
void
    upstream_batch_max (upstream_t *self, int max);

//  Call periodically (e.g. every 50 ms): if a catch-up is due, sends the
//  next REPLAY (asynchronously: the reply is handled by upstream_on_replay),
//  gives up on one unanswered for 2 s, and backs off (250 ms doubling to
//  5 s) after a failure until the upstream is heard from again.
//  max_pages is ignored (pages follow each other as replies arrive).
//  Returns true while catching up.
bool
    upstream_catch_up (upstream_t *self, int max_pages);

//  The REPLAY socket: poll it and call upstream_on_replay when readable,
//  so pages follow each other without waiting for the next catch_up call.
zsock_t *
    upstream_replay_sock (upstream_t *self);
void
    upstream_on_replay (upstream_t *self);

//  Persists the position if skipped (unconsumed) events moved it past the
//  stored checkpoint, so a restart does not replay them again.
void
    upstream_flush (upstream_t *self);

//  Next seq to apply, and the highest seq the upstream has announced.
uint64_t
    upstream_expected (upstream_t *self);
uint64_t
    upstream_head (upstream_t *self);
//  Milliseconds since anything arrived from the upstream.
int64_t
    upstream_silence_ms (upstream_t *self);

#endif
