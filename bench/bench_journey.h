/*  bench_journey — the events of one buyer journey, as an outside system
    would send them (proto/campaign.md, leads.md, sales.md, retention.md).

    Journey j of run R is lead `R.j<j>` (the same id is campaign's contact,
    sales' lead and retention's customer):
      campaign   6 identified touches: one `form`, five `click`
      leads      lead.capture with BANT met (budget, authority, need,
                 timeline_days 30) and an e-mail: fit 60 + 25 engagement
                 = 85 ≥ 80, so SQL under the default rules
      sales      (opens deal L<lead>-1 from lead.sql itself) deal.offer,
                 deal.close won — sent when deal.opened is seen
      retention  (onboards the customer from deal.won itself) one
                 customer.order with an order id: the repeat order
    Event ids derive from the entity, so a re-sent batch is a duplicate.
    The run id keeps runs against one Redis apart.
*/
#ifndef BENCH_JOURNEY_H_INCLUDED
#define BENCH_JOURNEY_H_INCLUDED

#include <msgpack.h>
#include <stdbool.h>
#include <stdint.h>

#define BENCH_TOUCHES       6   //  Touches per journey
#define BENCH_CAMPAIGNS     8   //  Campaigns the journeys spread over
//  Events each service applies per journey (PUBLISHed + consumed):
//  campaign 6 touches + lead.captured, lead.mql, lead.sql, deal.won;
//  leads 1 capture + 6 prospect.touched; sales lead.sql + offer + close;
//  retention deal.won + order.
#define BENCH_APPLIED_CAMPAIGN  10
#define BENCH_APPLIED_LEADS     7
#define BENCH_APPLIED_SALES     3
#define BENCH_APPLIED_RETENTION 2

//  A run id: the start time in base 36 (8 bytes), new on every start.
void
    bench_journey_run_id (char *buf, size_t size);
//  "<run>.j<j>"
void
    bench_journey_lead (const char *run, int64_t j, char *buf, size_t size);
//  The journey of a lead id of this run, or -1 (not ours, or a probe).
int64_t
    bench_journey_index (const char *run, const char *lead);

//  Each packs one event map (envelope and data) for the given run.
void bench_pack_campaign_upsert (msgpack_packer *pk, const char *run, int k);
void bench_pack_touch (msgpack_packer *pk, const char *run, int64_t j, int t);
void bench_pack_capture (msgpack_packer *pk, const char *run, int64_t j);
void bench_pack_offer (msgpack_packer *pk, const char *deal);
void bench_pack_close_won (msgpack_packer *pk, const char *deal);
void bench_pack_order (msgpack_packer *pk, const char *customer);
//  Latency probes and background load: a probe deal and its interactions,
//  captures of fresh leads that stay in nurture, touches of contacts that
//  are never captured.
void bench_pack_deal_open (msgpack_packer *pk, const char *run);
void bench_pack_interaction (msgpack_packer *pk, const char *run, int64_t k);
void bench_pack_probe_capture (msgpack_packer *pk, const char *run, int64_t k);
void bench_pack_load_touch (msgpack_packer *pk, const char *run, int64_t n);
//  The probe deal's id.
void
    bench_journey_probe_deal (const char *run, char *buf, size_t size);

void
    bench_journey_test (bool verbose);

#endif
