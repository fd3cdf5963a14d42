/*  bench_latency — single-request latency of the services, without and
    with another service ingesting batches.

    Three probes, interleaved one request at a time: a PING to sales, a
    single-event PUBLISH to sales (deal.interaction on a probe deal the
    caller opened with bench_pack_deal_open) and a single-event PUBLISH to
    leads (lead.capture of a fresh lead). Three phases: idle; while one
    thread per core spins (no work for the funnel: what the machine's
    scheduler alone does to a request's several thread hops when every
    core is busy, the floor under the next phase); then while a background
    thread keeps `window` batches of `batch` touches (fresh contacts, never
    captured) in flight to campaign. Each phase stops after `probes`
    rounds or its time budget, whichever comes first.
*/
#ifndef BENCH_LATENCY_H_INCLUDED
#define BENCH_LATENCY_H_INCLUDED

#include <stdbool.h>
#include <stdint.h>
#include "bench_redis.h"
#include "funnel_client.h"
#include "funnel_topology.h"

#define BENCH_PROBES    3       //  sales PING, sales PUBLISH, leads PUBLISH

typedef struct {
    const char *name;           //  "sales PING"
    const char *key;            //  "sales_ping" (for JSON)
    int64_t *us;                //  Sorted samples, µs
    int count;
    int errors;                 //  Requests with no OK reply
} bench_probe_t;

typedef struct _bench_latency_t bench_latency_t;

//  The topologies stay the caller's (and must outlive this): each probe
//  and each load touch goes to the instance owning its partition.
bench_latency_t *
    bench_latency_new (const char *run, funnel_topology_t *sales, funnel_topology_t *leads,
                       funnel_topology_t *campaign);
void
    bench_latency_destroy (bench_latency_t **self_p);

//  Where to read how long EXECs held Redis while loaded (optional; not
//  owned): its stats are reset when the load has started and read when
//  the loaded probes end.
void
    bench_latency_set_redis (bench_latency_t *self, bench_redis_t *redis);
//  EXEC percentiles of the loaded phase; 0, or -1 if not measured.
int
    bench_latency_exec (bench_latency_t *self, bench_latency_pct_t *pct);

typedef enum {
    BENCH_PHASE_IDLE, BENCH_PHASE_SPIN, BENCH_PHASE_LOADED, BENCH_PHASES
} bench_phase_t;

//  Runs the three phases in order.
void
    bench_latency_run (bench_latency_t *self, int probes, int seconds, int batch, int window);

//  Probe 0..BENCH_PROBES-1 of a phase.
bench_probe_t *
    bench_latency_probe (bench_latency_t *self, bench_phase_t phase, int probe);
//  Threads that spun in BENCH_PHASE_SPIN (one per core).
int
    bench_latency_spinners (bench_latency_t *self);
//  Events/s campaign acknowledged during the loaded phase.
double
    bench_latency_load_rate (bench_latency_t *self);
//  "" or why the load failed.
const char *
    bench_latency_load_error (bench_latency_t *self);

//  The q-quantile (0..1, nearest rank) of a probe's samples; -1 if none.
int64_t
    bench_probe_percentile (const bench_probe_t *probe, double q);

void
    bench_latency_test (bool verbose);

#endif
