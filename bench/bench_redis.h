/*  bench_redis — what a benchmark reads from Redis: CPU, command stats and
    memory, never the services' data.

    Engine-agnostic: keys are classified by their name alone. A key
    `{funnel:<svc>[:<anything>]}:<token>[:...]` belongs to <svc> (a
    partition number in the hash tag is allowed); its first name segment
    (the token) says the kind:
      outbox   ob, ob_first, seq, outbox...   output events kept for REPLAY
      dedup    ids, dedup...                  applied event ids
      runtime  stats, ckpt, lease, intents, ...  counters, checkpoints,
                                             leases, a cluster's intents
      state    the stages' entity and aggregate keys (lead, deal, c, ...)
      other    anything else (shown by token, so a new engine's names are
               visible even before this table knows them)
    A key outside a `{funnel:...}` tag is service "other".
*/
#ifndef BENCH_REDIS_H_INCLUDED
#define BENCH_REDIS_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct _bench_redis_t bench_redis_t;

//  Connects (redis:// or unix:// URL, as the services take it); NULL and a
//  message on failure. A Redis Cluster seed list: every node listed is
//  read and the figures below are summed over them (list the primaries
//  only: a replica's keys and commands would count twice).
bench_redis_t *
    bench_redis_new (const char *url);
void
    bench_redis_destroy (bench_redis_t **self_p);

//  A numeric field of INFO <section> ("cpu", "used_cpu_sys"); -1 if absent.
double
    bench_redis_info (bench_redis_t *self, const char *section, const char *field);

//  INFO commandstats: command name -> calls and µs so far.
typedef struct {
    char name [64];
    int64_t calls;
    int64_t usec;
} bench_cmdstat_t;

//  Fills up to max entries; returns the count (-1 on error).
int
    bench_redis_cmdstats (bench_redis_t *self, bench_cmdstat_t *stats, int max);
//  after − before per command, sorted by µs, largest first, into delta;
//  returns the count.
int
    bench_cmdstats_delta (const bench_cmdstat_t *before, int nbefore,
                          const bench_cmdstat_t *after, int nafter,
                          bench_cmdstat_t *delta, int max);

//  A command's execution time percentiles since the last reset, from
//  INFO latencystats (Redis 7, latency-tracking on by default): p50, p99
//  and p99.9 in µs (an EXEC's is its whole transaction: how long it held
//  the server). On a cluster, each the highest over the nodes. 0 when
//  read, -1 if no node reports that command.
typedef struct {
    double p50, p99, p999;
} bench_latency_pct_t;

int
    bench_redis_latency (bench_redis_t *self, const char *command, bench_latency_pct_t *pct);
//  CONFIG RESETSTAT on every node: latencystats and commandstats start
//  again from zero (the bench reads both as differences from here on).
void
    bench_redis_reset_stats (bench_redis_t *self);

//  One row of the memory census: keys of one service and token.
typedef struct {
    char svc [48];
    char token [48];
    const char *kind;           //  state, outbox, dedup, runtime, other
    int64_t keys;
    int64_t bytes;              //  Σ MEMORY USAGE (scaled when sampled)
} bench_memrow_t;

//  SCANs every key, MEMORY USAGE (SAMPLES 0) of every `every`-th one
//  (1 = all; the sums are scaled back up), pipelined. Fills up to max rows
//  sorted by service then bytes; returns the count (-1 on error).
int
    bench_redis_memory (bench_redis_t *self, int every, bench_memrow_t *rows, int max);

//  The classification above: fills svc and token, returns the kind.
const char *
    bench_key_classify (const char *key, size_t length,
                        char *svc, size_t svc_size, char *token, size_t token_size);

void
    bench_redis_test (bool verbose);

#endif
