/*  sim_model — audiences, channels and journeys (see sim_model.h).

    Time is compressed: a journey that takes weeks in life takes seconds
    here, so a demo shows every stage within a minute. Rates are chosen to
    be plausible relative to each other (search converts better than
    display, B2B deals are bigger, slower and lost more often, retirees
    answer e-mail and churn little), not to match any one company.
*/
#include "sim_model.h"

#include <assert.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

//  --------------------------------------------------------------------
//  The market

typedef struct {
    const char *id;             //  Campaign id (stable across runs)
    const char *name;
    const char *channel;        //  A campaign channel (proto/campaign.md)
    const char *platform;
    int64_t budget;             //  Cents
    int cpm;                    //  Cents per 1000 impressions
    int cpc;                    //  Cents per engagement
    double weight;              //  Share of the audience's new prospects
    double p_engage;            //  Reached -> engaged
    double p_capture;           //  Engaged -> lead (a form)
    const char *kinds [5];      //  Engagements typical of the channel
} campaign_t;

typedef struct {
    const char *id;             //  In entity ids: [a-z]+
    const char *name;
    int age_min, age_max;
    const char *regions [5];
    const char *interests [5];
    double weight;              //  Share of new prospects
    bool b2b;
    double p_ready;             //  Captured leads with full BANT (sales-ready)
    int64_t price_min, price_max;   //  List price of a first deal, cents
    double p_win;               //  Base win rate of a worked deal
    int deal_steps;             //  Discovery interactions before an offer
    const char *objections [4]; //  Most common first
    double p_deep_discount;     //  Offers above the 20% policy maximum
    double nps_mean;
    double p_order;             //  Per customer step: a repeat order
    double p_churn;             //  Customers who drift away soon
    const char *activities [3];
    const char *domain;         //  E-mail domain
    campaign_t campaigns [4];   //  Ends at id NULL
} audience_t;

static const audience_t s_audiences [] = {
    { "genz", "Gen Z students", 18, 24, { "us", "uk", "de", NULL },
      { "music", "gaming", "fashion", "study", NULL }, 0.30, false,
      0.35, 1500, 6000, 0.45, 1, { "price", "need", "trust", NULL }, 0.10,
      7.5, 0.35, 0.35, { "app_open", "story_share", "login" }, "mail.example.com",
      { { "genz-ig-campus", "Instagram Reels: back to campus", "social", "instagram",
          2000000, 600, 80, 0.55, 0.45, 0.12, { "like", "comment", "share", "follow", "click" } },
        { "genz-tt-creators", "TikTok creator collabs", "video", "tiktok",
          1500000, 450, 60, 0.45, 0.50, 0.08, { "like", "share", "follow", "comment", "click" } },
        { NULL } } },
    { "yp", "Young professionals", 25, 34, { "us", "uk", "ca", NULL },
      { "career", "fitness", "travel", "finance", NULL }, 0.20, false,
      0.40, 5000, 30000, 0.38, 2, { "price", "timing", "competitor", NULL }, 0.12,
      7.8, 0.30, 0.25, { "login", "feature_use", "export" }, "inbox.example.org",
      { { "yp-search-brand", "Search: brand and category", "search", "google",
          3000000, 1200, 150, 0.50, 0.60, 0.18, { "click", "visit", "click", "visit", "click" } },
        { "yp-yt-howto", "YouTube how-to pre-rolls", "video", "youtube",
          2500000, 900, 120, 0.50, 0.35, 0.10, { "like", "click", "visit", "comment", "click" } },
        { NULL } } },
    { "par", "Parents of young children", 30, 45, { "us", "ca", "au", NULL },
      { "family", "education", "home", "health", NULL }, 0.15, false,
      0.40, 3000, 20000, 0.40, 2, { "price", "trust", "need", NULL }, 0.08,
      8.2, 0.45, 0.20, { "login", "order_tracking", "review" }, "family.example.net",
      { { "par-fb-school", "Facebook: school-year offers", "social", "facebook",
          1800000, 700, 90, 0.55, 0.40, 0.12, { "like", "comment", "share", "click", "click" } },
        { "par-email-weekly", "Weekly family newsletter", "email", "newsletter",
          400000, 100, 20, 0.45, 0.50, 0.10, { "open", "click", "open", "reply", "click" } },
        { NULL } } },
    { "ret", "Retirees", 65, 85, { "us", "uk", "fr", NULL },
      { "travel", "gardening", "health", "grandchildren", NULL }, 0.10, false,
      0.45, 8000, 50000, 0.42, 2, { "trust", "price", "timing", NULL }, 0.05,
      8.8, 0.40, 0.12, { "login", "phone_call", "catalog_request" }, "post.example.com",
      { { "ret-email-digest", "Monthly e-mail digest", "email", "newsletter",
          300000, 80, 25, 0.60, 0.55, 0.09, { "open", "click", "open", "reply", "click" } },
        { "ret-seminar", "Local seminars", "event", "seminar",
          1200000, 5000, 400, 0.40, 0.70, 0.30, { "visit", "reply", "click", "visit", "click" } },
        { NULL } } },
    { "b2b", "B2B buyers in IT and operations", 35, 60, { "us", "de", "uk", "nl", NULL },
      { "saas", "security", "procurement", "operations", NULL }, 0.15, true,
      0.45, 500000, 8000000, 0.27, 4, { "authority", "competitor", "timing", "price" }, 0.30,
      7.2, 0.25, 0.10, { "login", "api_call", "admin_change" }, "corp.example",
      { { "b2b-li-abm", "LinkedIn account-based ads", "social", "linkedin",
          6000000, 3500, 700, 0.40, 0.35, 0.15, { "click", "like", "follow", "visit", "click" } },
        { "b2b-search-intent", "Search: high-intent keywords", "search", "google",
          5000000, 2500, 900, 0.35, 0.60, 0.20, { "click", "visit", "click", "visit", "click" } },
        { "b2b-webinar", "Webinar series", "content", "webinar",
          1000000, 1500, 300, 0.25, 0.65, 0.35, { "visit", "click", "reply", "click", "visit" } },
        { NULL } } },
    { "smb", "Small business owners", 30, 60, { "us", "uk", "au", NULL },
      { "marketing", "accounting", "retail", "hiring", NULL }, 0.10, true,
      0.40, 50000, 500000, 0.33, 3, { "price", "need", "timing", NULL }, 0.15,
      7.6, 0.35, 0.18, { "login", "invoice_sent", "report_view" }, "shop.example",
      { { "smb-search-local", "Search: local business tools", "search", "google",
          2000000, 1800, 350, 0.55, 0.50, 0.16, { "click", "visit", "click", "visit", "click" } },
        { "smb-referral", "Partner referrals", "referral", "partners",
          500000, 0, 0, 0.45, 0.70, 0.30, { "visit", "reply", "click", "visit", "click" } },
        { NULL } } },
};
#define AUDIENCES ((int) (sizeof s_audiences / sizeof s_audiences [0]))
//  Deals and customers whose id is not ours are profiled as small businesses
#define FALLBACK_AUDIENCE 5

static const char *s_first_names [] = {
    "maya", "liam", "sofia", "noah", "amara", "lucas", "ines", "omar", "hana", "felix",
    "zoe", "mateo", "priya", "jonas", "leila", "ethan", "yuki", "grace", "arjun", "nora"
};
static const char *s_last_names [] = {
    "garcia", "smith", "muller", "rossi", "nguyen", "okafor", "kowalski", "tanaka",
    "dubois", "silva", "khan", "larsen", "cohen", "murphy", "ivanova", "haddad"
};
static const char *s_companies [] = {
    "Northwind Traders", "Blue Harbor Logistics", "Cedar Analytics", "Helix Manufacturing",
    "Orbit Health", "Quarry Retail Group", "Lumen Energy", "Atlas Freight",
    "Pine & Co Accounting", "Vertex Software", "Riverbend Clinics", "Summit Foods"
};
static const char *s_titles [] = {
    "Head of IT", "Operations Manager", "Procurement Lead", "CTO", "Owner",
    "Finance Director", "Office Manager", "VP Operations"
};
static const char *s_industries [] = {
    "logistics", "healthcare", "retail", "manufacturing", "software", "finance"
};
#define COUNT_OF(a) ((int) (sizeof (a) / sizeof ((a) [0])))


//  --------------------------------------------------------------------
//  Generators: splitmix64 to seed, xorshift64* to draw

static uint64_t
s_splitmix (uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static uint64_t
s_fnv (const char *text)
{
    uint64_t hash = 0xcbf29ce484222325ULL;
    for (; *text; text++)
        hash = (hash ^ (unsigned char) *text) * 0x100000001b3ULL;
    return hash;
}

//  A generator for one entity: the same seed and id give the same story.
static uint64_t
s_rng_for (uint64_t seed, const char *id)
{
    uint64_t state = seed ^ s_fnv (id);
    uint64_t value = s_splitmix (&state);
    return value ? value : 1;   //  xorshift must not start at 0
}

static uint64_t
s_next (uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

//  Uniform in [0, 1)
static double
s_unit (uint64_t *state)
{
    return (double) (s_next (state) >> 11) / 9007199254740992.0;
}

static bool
s_chance (uint64_t *state, double p)
{
    return s_unit (state) < p;
}

//  Uniform integer in [lo, hi]
static int64_t
s_range (uint64_t *state, int64_t lo, int64_t hi)
{
    if (hi <= lo)
        return lo;
    return lo + (int64_t) (s_next (state) % (uint64_t) (hi - lo + 1));
}

//  Exponential delay with the given mean, in ms, at least 50 ms
static int64_t
s_delay (uint64_t *state, double mean_ms)
{
    double ms = -mean_ms * log (1.0 - s_unit (state));
    if (ms > mean_ms * 8)
        ms = mean_ms * 8;       //  No one waits forever in a demo
    return ms < 50 ? 50 : (int64_t) ms;
}

//  Log-uniform amount: prices spread like real price lists
static int64_t
s_price (uint64_t *state, int64_t lo, int64_t hi)
{
    double value = exp (log ((double) lo) + s_unit (state) * (log ((double) hi) - log ((double) lo)));
    return ((int64_t) value / 100) * 100;       //  Whole units
}

static int
s_pick_weighted (uint64_t *state, const double *weights, int count)
{
    double total = 0;
    for (int i = 0; i < count; i++)
        total += weights [i];
    double x = s_unit (state) * total;
    for (int i = 0; i < count; i++) {
        if (x < weights [i])
            return i;
        x -= weights [i];
    }
    return count - 1;
}


//  --------------------------------------------------------------------
//  Entities and the schedule

typedef enum { E_PROSPECT, E_DEAL, E_CUSTOMER } entity_kind_t;

typedef enum {
    //  Prospect
    P_IMPRESS, P_ENGAGE, P_FORM, P_CAPTURE, P_NURTURE,
    //  Deal
    D_FIRST, D_DISCOVER, D_PROPOSAL, D_OFFER, D_NEGOTIATE, D_APPROVE, D_COMMIT,
    D_CLOSE, D_DELIVER,
    //  Customer
    C_LIFE,
    S_DONE
} state_t;

typedef struct {
    entity_kind_t kind;
    state_t state;
    int step;                   //  Events emitted so far (id suffix)
    int left;                   //  Repetitions left in this state
    uint64_t rng;
    const audience_t *aud;
    const campaign_t *cmp;
    char id [65];               //  Prospect/customer id, or the deal id
    char lead [65];             //  Deal: its lead
    //  Prospect
    int age;
    const char *region;
    const char *interests [3];
    bool ready;
    //  Deal
    bool expansion, won;
    int64_t list_price;
    double discount;
    unsigned objections;        //  Bit i: aud->objections [i] raised
    //  Customer
    bool churner;
    int orders, tickets;
    bool ticket_open;
    const char *ticket_severity;
} entity_t;

typedef struct {
    int64_t due;
    uint64_t order;             //  Tie-break: insertion order, deterministic
    entity_t *entity;
} slot_t;

typedef struct {
    const campaign_t *cmp;
    int64_t impressions, engagements;   //  Since the last spend event
    int spends;
} spend_t;

#define SPEND_EVERY_MS  5000
#define PENDING_MAX     500000  //  Past this, no new prospects until it drains

struct _sim_model_t {
    uint64_t seed;
    uint64_t rng;               //  Spawning and anonymous traffic
    char run [16];
    sim_emit_fn *emit;
    void *ctx;
    int64_t now;
    slot_t *heap;
    size_t heap_size, heap_max;
    uint64_t order;
    uint64_t prospects, anonymous;
    spend_t spend [16];
    int campaigns;
    int64_t next_spend;
    size_t emitted;             //  Events emitted, all time
    const campaign_t *all [16];
    double campaign_weight [16];
    const audience_t *campaign_aud [16];
};

static void
s_heap_push (sim_model_t *self, int64_t due, entity_t *entity)
{
    if (self->heap_size == self->heap_max) {
        self->heap_max = self->heap_max ? self->heap_max * 2 : 1024;
        self->heap = realloc (self->heap, self->heap_max * sizeof (slot_t));
        assert (self->heap);
    }
    slot_t slot = { due, self->order++, entity };
    size_t i = self->heap_size++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        slot_t *p = &self->heap [parent];
        if (p->due < slot.due || (p->due == slot.due && p->order < slot.order))
            break;
        self->heap [i] = *p;
        i = parent;
    }
    self->heap [i] = slot;
}

static bool
s_less (const slot_t *a, const slot_t *b)
{
    return a->due < b->due || (a->due == b->due && a->order < b->order);
}

static entity_t *
s_heap_pop (sim_model_t *self)
{
    entity_t *top = self->heap [0].entity;
    slot_t last = self->heap [--self->heap_size];
    size_t i = 0, n = self->heap_size;
    while (true) {
        size_t child = 2 * i + 1;
        if (child >= n)
            break;
        if (child + 1 < n && s_less (&self->heap [child + 1], &self->heap [child]))
            child++;
        if (!s_less (&self->heap [child], &last))
            break;
        self->heap [i] = self->heap [child];
        i = child;
    }
    if (n)
        self->heap [i] = last;
    return top;
}


//  --------------------------------------------------------------------
//  Emitting

#define KV_S(k, v)      { .key = (k), .kind = SIM_STR, .s = (v) }
#define KV_I(k, v)      { .key = (k), .kind = SIM_INT, .i = (v) }
#define KV_B(k, v)      { .key = (k), .kind = SIM_BOOL, .i = (v) }
#define KV_N(k, v)      { .key = (k), .kind = SIM_NUM, .d = (v) }
#define KV_A(k, v)      { .key = (k), .kind = SIM_STRS, .strs = (v) }
#define KV_M(k, v)      { .key = (k), .kind = SIM_MAP, .map = (v), .map_size = COUNT_OF (v) }

//  Event id "<entity>:<n>"; an id too long for 64 bytes is replaced by
//  the run and a digest, still deterministic.
static void
s_event_id (sim_model_t *self, char *buf, size_t size, const char *entity, int n)
{
    int length = snprintf (buf, size, "%s:%d", entity, n);
    if (length < 0 || length > 64)
        snprintf (buf, size, "%s.h%016llx:%d", self->run,
                  (unsigned long long) s_fnv (entity), n);
}

static void
s_emit (sim_model_t *self, sim_service_t service, const char *type, const char *id,
        const sim_kv_t *data, size_t size)
{
    self->emit (self->ctx, service, type, id, self->now, data, size);
    self->emitted++;
}

static void
s_emit_for (sim_model_t *self, entity_t *e, sim_service_t service, const char *type,
            const sim_kv_t *data, size_t size)
{
    char id [80];
    s_event_id (self, id, sizeof id, e->id, ++e->step);
    s_emit (self, service, type, id, data, size);
}


//  --------------------------------------------------------------------
//  Prospects: impressions, engagement, a form, capture, nurture clicks

static void
s_touch (sim_model_t *self, entity_t *e, const char *kind)
{
    sim_kv_t attrs [] = {
        KV_I ("age", e->age), KV_S ("region", e->region), KV_A ("interests", e->interests)
    };
    sim_kv_t data [] = {
        KV_S ("campaign", e->cmp->id), KV_S ("kind", kind), KV_S ("contact", e->id),
        KV_M ("attrs", attrs)
    };
    s_emit_for (self, e, SIM_CAMPAIGN, "touch", data, COUNT_OF (data));
    for (int i = 0; i < self->campaigns; i++)
        if (self->spend [i].cmp == e->cmp) {
            if (strcmp (kind, "impression") == 0)
                self->spend [i].impressions++;
            else
                self->spend [i].engagements++;
        }
}

static void
s_capture (sim_model_t *self, entity_t *e)
{
    const audience_t *a = e->aud;
    uint64_t *r = &e->rng;
    const char *first = s_first_names [s_range (r, 0, COUNT_OF (s_first_names) - 1)];
    const char *last = s_last_names [s_range (r, 0, COUNT_OF (s_last_names) - 1)];
    char name [64], email [128], phone [32];
    snprintf (name, sizeof name, "%c%s %c%s", first [0] - 32, first + 1, last [0] - 32, last + 1);
    //  The id in the local part keeps e-mails unique (one e-mail, one lead)
    snprintf (email, sizeof email, "%s.%s.%s@%s", first, last, e->id, a->domain);
    for (char *p = email; *p; p++)
        if (*p == ':')
            *p = '-';
    snprintf (phone, sizeof phone, "+1 555 %03d %04d", (int) s_range (r, 100, 999),
              (int) s_range (r, 0, 9999));

    //  BANT: sales-ready leads have it all; the rest have some of it
    int64_t budget = e->ready ? s_price (r, a->price_min, a->price_max)
                   : s_chance (r, 0.4) ? s_price (r, a->price_min, a->price_max) / 2 : 0;
    bool authority = e->ready || s_chance (r, a->b2b ? 0.25 : 0.5);
    bool need = e->ready || s_chance (r, 0.5);
    int64_t timeline = e->ready ? s_range (r, 7, 90) : s_range (r, 60, 365);
    const char *company = a->b2b ? s_companies [s_range (r, 0, COUNT_OF (s_companies) - 1)] : NULL;
    const char *title = a->b2b ? s_titles [s_range (r, 0, COUNT_OF (s_titles) - 1)] : NULL;
    const char *industry = a->b2b ? s_industries [s_range (r, 0, COUNT_OF (s_industries) - 1)] : NULL;

    sim_kv_t attrs [] = {
        KV_I ("budget", budget), KV_B ("authority", authority), KV_B ("need", need),
        KV_I ("timeline_days", timeline), KV_S ("region", e->region), KV_I ("age", e->age),
        KV_A ("interests", e->interests),
        KV_S (industry ? "industry" : NULL, industry),
        KV_I (a->b2b ? "employees" : NULL, s_range (r, 5, 5000))
    };
    sim_kv_t data [] = {
        KV_S ("lead", e->id), KV_S ("email", email), KV_S ("name", name),
        KV_S (company ? "company" : NULL, company), KV_S (title ? "title" : NULL, title),
        KV_S (s_chance (r, 0.6) ? "phone" : NULL, phone),
        KV_S ("campaign", e->cmp->id), KV_M ("attrs", attrs)
    };
    s_emit_for (self, e, SIM_LEADS, "lead.capture", data, COUNT_OF (data));
}

static entity_t *
s_spawn (sim_model_t *self)
{
    //  Audience by share, then campaign by the audience's split
    double weights [AUDIENCES];
    for (int i = 0; i < AUDIENCES; i++)
        weights [i] = s_audiences [i].weight;
    const audience_t *a = &s_audiences [s_pick_weighted (&self->rng, weights, AUDIENCES)];
    int n = 0;
    double cw [4];
    for (; n < 4 && a->campaigns [n].id; n++)
        cw [n] = a->campaigns [n].weight;

    entity_t *e = calloc (1, sizeof *e);
    assert (e);
    e->kind = E_PROSPECT;
    e->aud = a;
    e->cmp = &a->campaigns [s_pick_weighted (&self->rng, cw, n)];
    snprintf (e->id, sizeof e->id, "%s.%s.%llu", self->run, a->id,
              (unsigned long long) ++self->prospects);
    e->rng = s_rng_for (self->seed, e->id);
    uint64_t *r = &e->rng;
    //  Targeting is imperfect: some people reached are outside the audience
    e->age = s_chance (r, 0.9) ? (int) s_range (r, a->age_min, a->age_max)
                               : (int) s_range (r, 18, 90);
    int regions = 0;
    while (a->regions [regions] && regions < 5)
        regions++;
    e->region = s_chance (r, 0.9) ? a->regions [s_range (r, 0, regions - 1)] : "other";
    int i1 = (int) s_range (r, 0, 3), i2 = (i1 + 1 + (int) s_range (r, 0, 2)) % 4;
    e->interests [0] = a->interests [i1];
    e->interests [1] = a->interests [i2];
    e->state = P_IMPRESS;
    e->left = (int) s_range (r, 1, 3);
    return e;
}

static void
s_anonymous (sim_model_t *self)
{
    int i = s_pick_weighted (&self->rng, self->campaign_weight, self->campaigns);
    const campaign_t *c = self->all [i];
    char id [64];
    snprintf (id, sizeof id, "%s.anon:%llu", self->run, (unsigned long long) ++self->anonymous);
    sim_kv_t data [] = { KV_S ("campaign", c->id), KV_S ("kind", "impression") };
    s_emit (self, SIM_CAMPAIGN, "touch", id, data, COUNT_OF (data));
    self->spend [i].impressions++;
}

//  One step of a prospect; returns the delay to its next step, or -1.
static int64_t
s_prospect (sim_model_t *self, entity_t *e)
{
    uint64_t *r = &e->rng;
    const campaign_t *c = e->cmp;
    switch (e->state) {
        case P_IMPRESS:
            s_touch (self, e, "impression");
            if (--e->left > 0)
                return s_delay (r, 800);
            if (!s_chance (r, c->p_engage))
                return -1;
            e->state = P_ENGAGE;
            e->left = (int) s_range (r, 1, 3);
            return s_delay (r, 1000);
        case P_ENGAGE:
            s_touch (self, e, c->kinds [s_range (r, 0, 4)]);
            if (--e->left > 0)
                return s_delay (r, 800);
            if (!s_chance (r, c->p_capture))
                return -1;
            e->state = P_FORM;
            return s_delay (r, 800);
        case P_FORM:
            s_touch (self, e, "form");
            e->state = P_CAPTURE;
            return 200;
        case P_CAPTURE:
            e->ready = s_chance (r, e->aud->p_ready);
            s_capture (self, e);
            //  Ready buyers keep clicking (the default rules want five
            //  clicks and a form for SQL); the rest drift off sooner
            e->state = P_NURTURE;
            e->left = e->ready ? (int) s_range (r, 5, 8) : (int) s_range (r, 0, 4);
            return e->left ? s_delay (r, 600) : -1;
        case P_NURTURE:
            s_touch (self, e, e->ready ? "click" : c->kinds [s_range (r, 0, 4)]);
            return --e->left > 0 ? s_delay (r, 600) : -1;
        default:
            return -1;
    }
}


//  --------------------------------------------------------------------
//  Deals: discovery, proposal, offer, negotiation, approval, close, delivery

static const char *
s_lost_reason (const char *objection)
{
    if (!objection)                         return "no response";
    if (!strcmp (objection, "price"))       return "price too high";
    if (!strcmp (objection, "competitor"))  return "chose a competitor";
    if (!strcmp (objection, "timing"))      return "not this quarter";
    if (!strcmp (objection, "authority"))   return "no decision maker";
    if (!strcmp (objection, "need"))        return "no clear need";
    if (!strcmp (objection, "trust"))       return "does not trust a new vendor";
    return "other";
}

//  The deal's first raised objection, else NULL.
static const char *
s_main_objection (entity_t *e)
{
    for (int i = 0; i < 4; i++)
        if (e->objections & (1u << i))
            return e->aud->objections [i];
    return NULL;
}

static void
s_interaction (sim_model_t *self, entity_t *e, const char *kind, double p_objection)
{
    uint64_t *r = &e->rng;
    const char *list [3] = { NULL, NULL, NULL };
    int n = 0;
    if (s_chance (r, p_objection)) {
        //  Earlier objections in the audience's list are the common ones
        double w [4] = { 0.45, 0.3, 0.15, 0.1 };
        int count = 0;
        while (count < 4 && e->aud->objections [count])
            count++;
        int i = s_pick_weighted (r, w, count);
        list [n++] = e->aud->objections [i];
        e->objections |= 1u << i;
        if (s_chance (r, 0.25)) {
            int j = s_pick_weighted (r, w, count);
            if (j != i) {
                list [n++] = e->aud->objections [j];
                e->objections |= 1u << j;
            }
        }
    }
    const char *outcome = n ? (s_chance (r, 0.6) ? "neutral" : "negative")
                            : (s_chance (r, 0.7) ? "positive" : "neutral");
    sim_kv_t data [] = {
        KV_S ("deal", e->id), KV_S ("kind", kind), KV_S ("outcome", outcome),
        KV_A (n ? "objections" : NULL, list)
    };
    s_emit_for (self, e, SIM_SALES, "deal.interaction", data, COUNT_OF (data));
}

static void
s_stage (sim_model_t *self, entity_t *e, const char *stage)
{
    sim_kv_t data [] = { KV_S ("deal", e->id), KV_S ("stage", stage) };
    s_emit_for (self, e, SIM_SALES, "deal.stage", data, COUNT_OF (data));
}

static void
s_offer (sim_model_t *self, entity_t *e)
{
    int64_t amount = (int64_t) ((double) e->list_price * (100.0 - e->discount) / 100.0);
    amount = amount / 100 * 100;
    sim_kv_t data [] = {
        KV_S ("deal", e->id), KV_I ("amount", amount), KV_N ("discount_pct", e->discount)
    };
    s_emit_for (self, e, SIM_SALES, "deal.offer", data, COUNT_OF (data));
}

static void
s_close (sim_model_t *self, entity_t *e, bool won, const char *reason)
{
    sim_kv_t data [] = {
        KV_S ("deal", e->id), KV_S ("outcome", won ? "won" : "lost"),
        KV_S (reason ? "reason" : NULL, reason)
    };
    s_emit_for (self, e, SIM_SALES, "deal.close", data, COUNT_OF (data));
}

static int64_t
s_deal (sim_model_t *self, entity_t *e)
{
    uint64_t *r = &e->rng;
    const audience_t *a = e->aud;
    double pace = a->b2b ? 1400 : 900;     //  B2B cycles run longer
    static const char *kinds_b2b [] = { "meeting", "demo", "call", "email" };
    static const char *kinds_b2c [] = { "call", "email", "email", "note" };
    const char **kinds = a->b2b ? kinds_b2b : kinds_b2c;
    switch (e->state) {
        case D_FIRST:
            s_interaction (self, e, a->b2b ? "call" : "email", 0.1);
            //  Some go silent right after the first contact
            if (!e->expansion && s_chance (r, 0.12)) {
                e->state = D_CLOSE;
                e->won = false;
                return s_delay (r, pace * 2);
            }
            e->state = e->expansion ? D_OFFER : D_DISCOVER;
            e->left = a->deal_steps;
            return s_delay (r, pace);
        case D_DISCOVER:
            s_interaction (self, e, kinds [s_range (r, 0, 3)], 0.35);
            if (--e->left > 0)
                return s_delay (r, pace);
            e->state = D_PROPOSAL;
            return s_delay (r, pace);
        case D_PROPOSAL:
            s_stage (self, e, "proposal");
            e->state = D_OFFER;
            return s_delay (r, pace);
        case D_OFFER: {
            double x = s_unit (r);
            e->discount = x < a->p_deep_discount ? (double) s_range (r, 22, 35)
                        : x < 0.5 ? 0.0 : (double) s_range (r, 5, 18);
            s_offer (self, e);
            e->state = e->expansion ? D_COMMIT : D_NEGOTIATE;
            return s_delay (r, pace);
        }
        case D_NEGOTIATE:
            s_stage (self, e, "negotiation");
            s_interaction (self, e, kinds [s_range (r, 0, 3)], e->discount > 0 ? 0.3 : 0.5);
            e->state = e->discount > 20 ? D_APPROVE : D_COMMIT;
            return s_delay (r, pace);
        case D_APPROVE:
            //  Above the policy maximum: a manager approves, or the rep
            //  comes back with an offer within policy
            if (s_chance (r, 0.7)) {
                sim_kv_t data [] = { KV_S ("deal", e->id), KV_S ("by", "sales-manager") };
                s_emit_for (self, e, SIM_SALES, "deal.approve", data, COUNT_OF (data));
            }
            else {
                e->discount = 15;
                s_offer (self, e);
            }
            e->state = D_COMMIT;
            return s_delay (r, pace);
        case D_COMMIT: {
            double p = e->expansion ? 0.6 : a->p_win;
            if (e->discount > 0)
                p += 0.08;              //  A concession helps
            if (__builtin_popcount (e->objections) >= 2)
                p -= 0.1;
            e->won = s_chance (r, p);
            if (e->won && !e->expansion)
                s_stage (self, e, "commit");
            e->state = D_CLOSE;
            return s_delay (r, pace);
        }
        case D_CLOSE:
            s_close (self, e, e->won, e->won ? (a->b2b ? "signed contract" : NULL)
                                             : s_lost_reason (s_main_objection (e)));
            if (!e->won)
                return -1;
            e->state = D_DELIVER;
            return s_delay (r, pace * 1.5);
        case D_DELIVER: {
            sim_kv_t data [] = { KV_S ("deal", e->id) };
            s_emit_for (self, e, SIM_SALES, "deal.deliver", data, COUNT_OF (data));
            return -1;
        }
        default:
            return -1;
    }
}


//  --------------------------------------------------------------------
//  Customers: use, feedback, tickets, repeat orders, and some drift away

static int64_t
s_customer (sim_model_t *self, entity_t *e)
{
    uint64_t *r = &e->rng;
    const audience_t *a = e->aud;
    char ref [80];
    if (e->ticket_open && s_chance (r, 0.6)) {
        //  Support resolves the open ticket
        snprintf (ref, sizeof ref, "%s.t%d", e->id, e->tickets);
        if (strlen (ref) > 64)
            snprintf (ref, sizeof ref, "t%016llx.%d", (unsigned long long) s_fnv (e->id), e->tickets);
        sim_kv_t data [] = {
            KV_S ("customer", e->id), KV_S ("ticket", ref),
            KV_S ("severity", e->ticket_severity), KV_S ("status", "resolved")
        };
        s_emit_for (self, e, SIM_RETENTION, "customer.ticket", data, COUNT_OF (data));
        e->ticket_open = false;
    }
    else {
        double x = s_unit (r);
        //  A churner's last signs: a bad ticket or a low score
        double p_order = e->churner ? 0.05 : a->p_order;
        double p_feedback = e->churner ? 0.35 : 0.15;
        double p_ticket = e->churner ? 0.3 : 0.1;
        if (x < p_order) {
            e->orders++;
            snprintf (ref, sizeof ref, "%s.o%d", e->id, e->orders);
            if (strlen (ref) > 64)
                snprintf (ref, sizeof ref, "o%016llx.%d", (unsigned long long) s_fnv (e->id), e->orders);
            int64_t amount = s_price (r, a->price_min / 3 + 100, a->price_max / 2 + 200);
            sim_kv_t data [] = {
                KV_S ("customer", e->id), KV_I ("amount", amount), KV_S ("order", ref)
            };
            s_emit_for (self, e, SIM_RETENTION, "customer.order", data, COUNT_OF (data));
        }
        else
        if (x < p_order + p_feedback) {
            int64_t nps;
            if (e->churner)
                nps = s_range (r, 0, 6);
            else {
                nps = (int64_t) lround (a->nps_mean + (s_unit (r) + s_unit (r) - 1) * 3);
                nps = nps < 0 ? 0 : nps > 10 ? 10 : nps;
            }
            sim_kv_t data [] = { KV_S ("customer", e->id), KV_I ("nps", nps) };
            s_emit_for (self, e, SIM_RETENTION, "customer.feedback", data, COUNT_OF (data));
        }
        else
        if (x < p_order + p_feedback + p_ticket && !e->ticket_open) {
            static const char *severities [] = { "low", "normal", "high", "urgent" };
            double w_calm [4] = { 0.35, 0.45, 0.15, 0.05 };
            double w_angry [4] = { 0.05, 0.25, 0.4, 0.3 };
            e->ticket_severity = severities [s_pick_weighted (r, e->churner ? w_angry : w_calm, 4)];
            e->tickets++;
            e->ticket_open = true;
            snprintf (ref, sizeof ref, "%s.t%d", e->id, e->tickets);
            if (strlen (ref) > 64)
                snprintf (ref, sizeof ref, "t%016llx.%d", (unsigned long long) s_fnv (e->id), e->tickets);
            sim_kv_t data [] = {
                KV_S ("customer", e->id), KV_S ("ticket", ref),
                KV_S ("severity", e->ticket_severity), KV_S ("status", "open")
            };
            s_emit_for (self, e, SIM_RETENTION, "customer.ticket", data, COUNT_OF (data));
        }
        else {
            sim_kv_t data [] = {
                KV_S ("customer", e->id), KV_S ("kind", a->activities [s_range (r, 0, 2)])
            };
            s_emit_for (self, e, SIM_RETENTION, "customer.activity", data, COUNT_OF (data));
        }
    }
    //  When its steps run out the customer goes quiet: retention's churn
    //  timer notices (demo topologies set a short retention/churn_days)
    return --e->left > 0 ? s_delay (r, e->churner ? 2500 : 3500) : -1;
}


//  --------------------------------------------------------------------
//  Public API

const char *
sim_model_audience_of (const char *id)
{
    //  "<run>.<aud>.<n>": the audience is the second dot-separated part
    const char *dot = id ? strchr (id, '.') : NULL;
    if (dot) {
        const char *end = strchr (dot + 1, '.');
        size_t length = end ? (size_t) (end - dot - 1) : 0;
        for (int i = 0; i < AUDIENCES; i++)
            if (length == strlen (s_audiences [i].id)
            &&  memcmp (dot + 1, s_audiences [i].id, length) == 0)
                return s_audiences [i].id;
    }
    return "other";
}

static const audience_t *
s_audience_of (const char *id)
{
    const char *name = sim_model_audience_of (id);
    for (int i = 0; i < AUDIENCES; i++)
        if (!strcmp (name, s_audiences [i].id))
            return &s_audiences [i];
    return &s_audiences [FALLBACK_AUDIENCE];
}

sim_model_t *
sim_model_new (uint64_t seed, const char *run, sim_emit_fn *emit, void *ctx)
{
    assert (run && emit);
    sim_model_t *self = calloc (1, sizeof *self);
    assert (self);
    self->seed = seed;
    uint64_t state = seed;
    self->rng = s_splitmix (&state) | 1;
    snprintf (self->run, sizeof self->run, "%s", run);
    self->emit = emit;
    self->ctx = ctx;
    for (int i = 0; i < AUDIENCES; i++)
        for (int j = 0; j < 4 && s_audiences [i].campaigns [j].id; j++) {
            assert (self->campaigns < 16);
            const campaign_t *c = &s_audiences [i].campaigns [j];
            self->all [self->campaigns] = c;
            self->campaign_aud [self->campaigns] = &s_audiences [i];
            self->campaign_weight [self->campaigns] = s_audiences [i].weight * c->weight;
            self->spend [self->campaigns].cmp = c;
            self->campaigns++;
        }
    return self;
}

void
sim_model_destroy (sim_model_t **self_p)
{
    if (*self_p) {
        sim_model_t *self = *self_p;
        for (size_t i = 0; i < self->heap_size; i++)
            free (self->heap [i].entity);
        free (self->heap);
        free (self);
        *self_p = NULL;
    }
}

void
sim_model_start (sim_model_t *self, int64_t now)
{
    self->now = now;
    self->next_spend = now + SPEND_EVERY_MS;
    for (int i = 0; i < self->campaigns; i++) {
        const campaign_t *c = self->all [i];
        const audience_t *a = self->campaign_aud [i];
        const char *regions [6] = { NULL };
        const char *interests [6] = { NULL };
        for (int k = 0; k < 5 && a->regions [k]; k++)
            regions [k] = a->regions [k];
        for (int k = 0; k < 5 && a->interests [k]; k++)
            interests [k] = a->interests [k];
        sim_kv_t audience [] = {
            KV_I ("age_min", a->age_min), KV_I ("age_max", a->age_max),
            KV_A ("regions", regions), KV_A ("interests", interests)
        };
        sim_kv_t data [] = {
            KV_S ("campaign", c->id), KV_S ("name", c->name), KV_S ("channel", c->channel),
            KV_S ("platform", c->platform), KV_M ("audience", audience),
            KV_I ("budget", c->budget), KV_S ("status", "active")
        };
        char id [80];
        snprintf (id, sizeof id, "%s.upsert:%s", self->run, c->id);
        s_emit (self, SIM_CAMPAIGN, "campaign.upsert", id, data, COUNT_OF (data));
    }
}

static void
s_spend (sim_model_t *self)
{
    for (int i = 0; i < self->campaigns; i++) {
        spend_t *s = &self->spend [i];
        int64_t amount = s->impressions * s->cmp->cpm / 1000 + s->engagements * s->cmp->cpc;
        s->impressions = s->engagements = 0;
        if (amount <= 0)
            continue;
        char id [80];
        snprintf (id, sizeof id, "%s.spend:%s:%d", self->run, s->cmp->id, ++s->spends);
        sim_kv_t data [] = { KV_S ("campaign", s->cmp->id), KV_I ("amount", amount) };
        s_emit (self, SIM_CAMPAIGN, "campaign.spend", id, data, COUNT_OF (data));
    }
}

//  Runs one entity's step and reschedules it or frees it.
static void
s_act (sim_model_t *self, entity_t *e)
{
    int64_t delay = e->kind == E_PROSPECT ? s_prospect (self, e)
                  : e->kind == E_DEAL ? s_deal (self, e)
                  : s_customer (self, e);
    if (delay < 0)
        free (e);
    else
        s_heap_push (self, self->now + delay, e);
}

size_t
sim_model_step (sim_model_t *self, int64_t now, size_t budget)
{
    self->now = now;
    size_t start = self->emitted;
    if (now >= self->next_spend) {
        s_spend (self);
        self->next_spend = now + SPEND_EVERY_MS;
    }
    //  What is due first: people already on their way come before new ones
    while (self->heap_size && self->heap [0].due <= now && self->emitted - start < budget)
        s_act (self, s_heap_pop (self));
    while (self->emitted - start < budget && self->heap_size < PENDING_MAX) {
        //  Most impressions are anonymous: the platforms report counts
        if (s_chance (&self->rng, 0.25))
            s_anonymous (self);
        else
            s_act (self, s_spawn (self));
    }
    return self->emitted - start;
}

void
sim_model_deal_opened (sim_model_t *self, const char *deal, const char *lead,
                       const char *kind, int64_t now)
{
    if (!deal || !lead || strlen (deal) > 64 || strlen (lead) > 64)
        return;
    entity_t *e = calloc (1, sizeof *e);
    assert (e);
    e->kind = E_DEAL;
    e->state = D_FIRST;
    e->expansion = kind && !strcmp (kind, "expansion");
    snprintf (e->id, sizeof e->id, "%s", deal);
    snprintf (e->lead, sizeof e->lead, "%s", lead);
    e->aud = s_audience_of (lead);
    e->rng = s_rng_for (self->seed, deal);
    e->list_price = s_price (&e->rng, e->aud->price_min, e->aud->price_max);
    if (e->expansion)
        e->list_price = e->list_price * s_range (&e->rng, 30, 60) / 100;
    //  Speed to lead: the first contact comes fast
    s_heap_push (self, now + s_delay (&e->rng, 500), e);
}

void
sim_model_customer_onboarded (sim_model_t *self, const char *customer, int64_t now)
{
    if (!customer || strlen (customer) > 60)
        return;
    entity_t *e = calloc (1, sizeof *e);
    assert (e);
    e->kind = E_CUSTOMER;
    e->state = C_LIFE;
    snprintf (e->id, sizeof e->id, "%s", customer);
    e->aud = s_audience_of (customer);
    char key [80];
    snprintf (key, sizeof key, "%s|customer", customer);
    e->rng = s_rng_for (self->seed, key);
    e->churner = s_chance (&e->rng, e->aud->p_churn);
    e->left = e->churner ? (int) s_range (&e->rng, 1, 3) : (int) s_range (&e->rng, 8, 30);
    //  Same id as its lead: its event ids start at :1000 so they never
    //  meet the prospect's (":1" to ":20" or so)
    e->step = 1000;
    s_heap_push (self, now + s_delay (&e->rng, 2000), e);
}

size_t
sim_model_pending (sim_model_t *self)
{
    return self->heap_size;
}


//  --------------------------------------------------------------------
//  Self test: a fake clock and fake services that open a deal for every
//  sales-ready capture and onboard every won deal's lead.

typedef struct {
    sim_model_t *model;
    uint64_t hash;
    int64_t count;
    int types [16];
    const char *names [16];
    int ntypes;
    int ready_leads, leads, reached_events, closes, wins, bad_ids;
    char pending_deals [4096][72];
    int npending;
    char pending_customers [1024][72];
    int ncustomers;
} selftest_t;

static void
s_hash_kvs (uint64_t *hash, const sim_kv_t *kvs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const sim_kv_t *kv = &kvs [i];
        if (!kv->key)
            continue;
        *hash = (*hash ^ s_fnv (kv->key)) * 0x100000001b3ULL;
        switch (kv->kind) {
            case SIM_STR: *hash = (*hash ^ s_fnv (kv->s)) * 0x100000001b3ULL; break;
            case SIM_INT: case SIM_BOOL: *hash = (*hash ^ (uint64_t) kv->i) * 0x100000001b3ULL; break;
            case SIM_NUM: *hash = (*hash ^ (uint64_t) (kv->d * 1000)) * 0x100000001b3ULL; break;
            case SIM_STRS:
                for (int k = 0; kv->strs [k]; k++)
                    *hash = (*hash ^ s_fnv (kv->strs [k])) * 0x100000001b3ULL;
                break;
            case SIM_MAP: s_hash_kvs (hash, kv->map, kv->map_size); break;
        }
    }
}

static const sim_kv_t *
s_find (const sim_kv_t *kvs, size_t n, const char *key)
{
    for (size_t i = 0; i < n; i++)
        if (kvs [i].key && !strcmp (kvs [i].key, key))
            return &kvs [i];
    return NULL;
}

static bool
s_id_valid (const char *id)
{
    size_t length = strlen (id);
    if (length < 1 || length > 64)
        return false;
    for (const char *p = id; *p; p++)
        if (!(( *p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9')
           || strchr ("._:@+-", *p)))
            return false;
    return true;
}

static void
s_selftest_emit (void *ctx, sim_service_t service, const char *type, const char *id,
                 int64_t ts, const sim_kv_t *data, size_t size)
{
    selftest_t *t = (selftest_t *) ctx;
    t->count++;
    t->hash = (t->hash ^ s_fnv (type) ^ s_fnv (id) ^ (uint64_t) service ^ (uint64_t) ts)
            * 0x100000001b3ULL;
    s_hash_kvs (&t->hash, data, size);
    if (!s_id_valid (id))
        t->bad_ids++;
    int i = 0;
    for (; i < t->ntypes; i++)
        if (!strcmp (t->names [i], type))
            break;
    if (i == t->ntypes && t->ntypes < 16)
        t->names [t->ntypes++] = type;      //  Types are string literals
    if (i < 16)
        t->types [i]++;
    if (!strcmp (type, "touch") && s_find (data, size, "contact")
    &&  !strcmp (s_find (data, size, "kind")->s, "impression"))
        t->reached_events++;
    if (!strcmp (type, "lead.capture")) {
        t->leads++;
        const sim_kv_t *attrs = s_find (data, size, "attrs");
        const sim_kv_t *authority = s_find (attrs->map, attrs->map_size, "authority");
        const sim_kv_t *timeline = s_find (attrs->map, attrs->map_size, "timeline_days");
        const sim_kv_t *budget = s_find (attrs->map, attrs->map_size, "budget");
        if (authority->i && budget->i > 0 && timeline->i <= 90 && t->npending < 4096) {
            //  Our fake sales opens a deal as funnel-sales would
            t->ready_leads++;
            snprintf (t->pending_deals [t->npending++], 72, "d:%s",
                      s_find (data, size, "lead")->s);
        }
    }
    if (!strcmp (type, "deal.close")) {
        t->closes++;
        if (!strcmp (s_find (data, size, "outcome")->s, "won")) {
            t->wins++;
            if (t->ncustomers < 1024)
                snprintf (t->pending_customers [t->ncustomers++], 72, "%s",
                          s_find (data, size, "deal")->s + 2);
        }
    }
}

//  Runs the model for seconds of fake time at rate events/s; the fake
//  services answer at the end of each 100 ms tick.
static void
s_selftest_run (selftest_t *t, uint64_t seed, int seconds, size_t rate)
{
    memset (t, 0, sizeof *t);
    t->hash = 0xcbf29ce484222325ULL;
    t->model = sim_model_new (seed, "t1", s_selftest_emit, t);
    int64_t now = 1700000000000LL;
    sim_model_start (t->model, now);
    for (int tick = 0; tick < seconds * 10; tick++) {
        now += 100;
        sim_model_step (t->model, now, rate / 10);
        for (int i = 0; i < t->npending; i++) {
            char lead [72];
            snprintf (lead, sizeof lead, "%s", t->pending_deals [i] + 2);
            sim_model_deal_opened (t->model, t->pending_deals [i], lead, "new", now);
        }
        t->npending = 0;
        for (int i = 0; i < t->ncustomers; i++)
            sim_model_customer_onboarded (t->model, t->pending_customers [i], now);
        t->ncustomers = 0;
    }
    sim_model_destroy (&t->model);
}

static int
s_check (bool ok, const char *format, ...)
{
    va_list args;
    va_start (args, format);
    if (!ok) {
        fprintf (stderr, "sim_model selftest FAILED: ");
        vfprintf (stderr, format, args);
        fprintf (stderr, "\n");
    }
    va_end (args);
    return ok ? 0 : 1;
}

int
sim_model_selftest (bool verbose)
{
    static selftest_t a, b, c;     //  Big: keep them off the stack
    int failed = 0;
    s_selftest_run (&a, 42, 120, 200);
    s_selftest_run (&b, 42, 120, 200);
    s_selftest_run (&c, 43, 120, 200);
    failed += s_check (a.hash == b.hash && a.count == b.count,
                       "same seed, different events (%llx/%lld vs %llx/%lld)",
                       (unsigned long long) a.hash, (long long) a.count,
                       (unsigned long long) b.hash, (long long) b.count);
    failed += s_check (a.hash != c.hash, "different seeds, same events");
    failed += s_check (a.bad_ids == 0, "%d invalid event ids", a.bad_ids);
    //  About the rate asked for (spend events come on top)
    failed += s_check (a.count >= 120 * 200 * 0.95 && a.count <= 120 * 200 * 1.1,
                       "%lld events for 24000 asked", (long long) a.count);
    const char *expected [] = {
        "campaign.upsert", "campaign.spend", "touch", "lead.capture", "deal.interaction",
        "deal.stage", "deal.offer", "deal.approve", "deal.close", "deal.deliver",
        "customer.order", "customer.feedback", "customer.ticket", "customer.activity", NULL
    };
    for (int i = 0; expected [i]; i++) {
        int n = 0;
        for (int k = 0; k < a.ntypes; k++)
            if (!strcmp (a.names [k], expected [i]))
                n = a.types [k];
        failed += s_check (n > 0, "no %s events", expected [i]);
        if (verbose)
            printf ("  %-18s %d\n", expected [i], n);
    }
    //  Plausible rates: a few percent of the people reached become leads,
    //  about 40% of those are sales-ready, and deals are won 25-55%
    double capture = (double) a.leads / (a.reached_events ? a.reached_events : 1);
    double ready = (double) a.ready_leads / (a.leads ? a.leads : 1);
    double win = (double) a.wins / (a.closes ? a.closes : 1);
    if (verbose)
        printf ("  capture %.3f of identified impressions, ready %.2f, win rate %.2f (%d closes)\n",
                capture, ready, win, a.closes);
    failed += s_check (capture > 0.005 && capture < 0.15, "capture rate %.3f", capture);
    failed += s_check (ready > 0.25 && ready < 0.6, "ready share %.2f", ready);
    failed += s_check (win > 0.2 && win < 0.6, "win rate %.2f", win);
    failed += s_check (!strcmp (sim_model_audience_of ("r1.b2b.17"), "b2b")
                    && !strcmp (sim_model_audience_of ("Lr1.genz.5-1"), "genz")
                    && !strcmp (sim_model_audience_of ("r1.genz.5"), "genz")
                    && !strcmp (sim_model_audience_of ("nodots"), "other"),
                       "audience_of");
    if (verbose || failed)
        printf ("sim_model selftest: %s\n", failed ? "FAILED" : "passed");
    return failed;
}
