/*  sim_model — who the simulated market is and how each person moves
    through the funnel: audiences, their channels and campaigns, the
    journeys of prospects, deals and customers, with plausible rates.

    The model knows nothing of sockets. It emits events (type, id, data)
    through a callback, and is told what the services decided that it
    cannot know itself (a deal was opened, a customer onboarded). Time is
    passed in, so a test can drive it with a fake clock.

    Determinism: every entity (prospect, deal, customer) draws from its own
    generator, seeded from the run seed and the entity's id, so a deal's
    story is the same for a seed whatever order the services' replies
    arrive in. Ids carry the audience ("<run>.<aud>.<n>"), so a deal or a
    customer learned from a service needs no lookup table to be profiled.
*/
#ifndef SIM_MODEL_H_INCLUDED
#define SIM_MODEL_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

//  Services the model publishes to (index into the caller's clients).
typedef enum {
    SIM_CAMPAIGN = 0, SIM_LEADS, SIM_SALES, SIM_RETENTION, SIM_SERVICES
} sim_service_t;

//  A data field: a small tagged value, enough for every event type.
typedef enum {
    SIM_STR, SIM_INT, SIM_BOOL, SIM_NUM, SIM_STRS, SIM_MAP
} sim_kind_t;

typedef struct _sim_kv_t sim_kv_t;
struct _sim_kv_t {
    const char *key;            //  NULL: entry absent (skipped)
    sim_kind_t kind;
    const char *s;              //  SIM_STR
    int64_t i;                  //  SIM_INT, SIM_BOOL (0/1)
    double d;                   //  SIM_NUM
    const char *const *strs;    //  SIM_STRS, NULL-terminated
    const sim_kv_t *map;        //  SIM_MAP: nested entries
    size_t map_size;
};

//  Called once per event; the pointers are valid during the call only.
typedef void (sim_emit_fn) (void *ctx, sim_service_t service, const char *type,
                            const char *id, int64_t ts,
                            const sim_kv_t *data, size_t size);

typedef struct _sim_model_t sim_model_t;

//  run: a short prefix that makes this run's ids unique (1-12 of [a-z0-9]).
sim_model_t *
    sim_model_new (uint64_t seed, const char *run, sim_emit_fn *emit, void *ctx);
void
    sim_model_destroy (sim_model_t **self_p);

//  Upserts every campaign (active, with audience and budget).
void
    sim_model_start (sim_model_t *self, int64_t now);

//  Runs what is due at now (first) and spends what is left of budget on
//  new prospects and anonymous impressions. Returns events emitted (spend
//  events included); it
//  may pass budget by a few when one action emits more than one event.
size_t
    sim_model_step (sim_model_t *self, int64_t now, size_t budget);

//  Sales opened a deal (kind "new" or "expansion"): work it to a close.
void
    sim_model_deal_opened (sim_model_t *self, const char *deal, const char *lead,
                           const char *kind, int64_t now);

//  Retention onboarded a customer: start its life as a customer.
void
    sim_model_customer_onboarded (sim_model_t *self, const char *customer, int64_t now);

//  Entities with a scheduled next action.
size_t
    sim_model_pending (sim_model_t *self);

//  The audience id in an entity id made by this model, e.g. "genz";
//  "other" when the id is not ours.
const char *
    sim_model_audience_of (const char *id);

//  Self test (deterministic for a seed, plausible rates); 0 when passed.
int
    sim_model_selftest (bool verbose);

#endif
