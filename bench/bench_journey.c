#include <czmq.h>
#include "bench_journey.h"
#include "event_codec.h"

static const char *s_channels [] = {
    "email", "social", "search", "display", "video", "event", "referral", "content"
};

void
bench_journey_run_id (char *buf, size_t size)
{
    static const char digits [] = "0123456789abcdefghijklmnopqrstuvwxyz";
    char reversed [16];
    int length = 0;
    uint64_t value = (uint64_t) zclock_time ();
    do {
        reversed [length++] = digits [value % 36];
        value /= 36;
    } while (value && length < (int) sizeof reversed);
    size_t i = 0;
    for (; i + 1 < size && length > 0; i++)
        buf [i] = reversed [--length];
    buf [i] = 0;
}

void
bench_journey_lead (const char *run, int64_t j, char *buf, size_t size)
{
    snprintf (buf, size, "%s.j%" PRId64, run, j);
}

int64_t
bench_journey_index (const char *run, const char *lead)
{
    size_t length = strlen (run);
    if (strncmp (lead, run, length) != 0 || lead [length] != '.' || lead [length + 1] != 'j')
        return -1;
    const char *digits = lead + length + 2;
    if (!*digits)
        return -1;
    int64_t j = 0;
    for (const char *p = digits; *p; p++) {
        if (*p < '0' || *p > '9' || j > INT64_MAX / 10 - 10)
            return -1;
        j = j * 10 + (*p - '0');
    }
    return j;
}

//  The envelope; the caller packs the data map (with `entries` entries) next.
static void
s_envelope (msgpack_packer *pk, const char *id, const char *type, int entries)
{
    msgpack_pack_map (pk, 6);
    event_codec_pack_cstr (pk, "v");
    msgpack_pack_uint8 (pk, 1);
    event_codec_pack_cstr (pk, "id");
    event_codec_pack_cstr (pk, id);
    event_codec_pack_cstr (pk, "type");
    event_codec_pack_cstr (pk, type);
    event_codec_pack_cstr (pk, "ts");
    msgpack_pack_int64 (pk, zclock_time ());
    event_codec_pack_cstr (pk, "src");
    event_codec_pack_cstr (pk, "bench");
    event_codec_pack_cstr (pk, "data");
    msgpack_pack_map (pk, entries);
}

static void
s_pair (msgpack_packer *pk, const char *key, const char *value)
{
    event_codec_pack_cstr (pk, key);
    event_codec_pack_cstr (pk, value);
}

static void
s_pair_int (msgpack_packer *pk, const char *key, int64_t value)
{
    event_codec_pack_cstr (pk, key);
    msgpack_pack_int64 (pk, value);
}

static void
s_campaign_id (const char *run, int k, char *buf, size_t size)
{
    snprintf (buf, size, "%s.c%d", run, k);
}

void
bench_pack_campaign_upsert (msgpack_packer *pk, const char *run, int k)
{
    char campaign [48], id [64], name [32];
    s_campaign_id (run, k, campaign, sizeof campaign);
    snprintf (id, sizeof id, "%s:upsert", campaign);
    snprintf (name, sizeof name, "Bench %d", k);
    s_envelope (pk, id, "campaign.upsert", 5);
    s_pair (pk, "campaign", campaign);
    s_pair (pk, "name", name);
    s_pair (pk, "channel", s_channels [k % 8]);
    s_pair (pk, "status", "active");
    s_pair_int (pk, "budget", 10000000);
}

void
bench_pack_touch (msgpack_packer *pk, const char *run, int64_t j, int t)
{
    char lead [48], id [64], campaign [48];
    bench_journey_lead (run, j, lead, sizeof lead);
    snprintf (id, sizeof id, "%s:t%d", lead, t);
    s_campaign_id (run, (int) (j % BENCH_CAMPAIGNS), campaign, sizeof campaign);
    s_envelope (pk, id, "touch", 3);
    s_pair (pk, "campaign", campaign);
    s_pair (pk, "kind", t == 0 ? "form" : "click");
    s_pair (pk, "contact", lead);
}

void
bench_pack_capture (msgpack_packer *pk, const char *run, int64_t j)
{
    char lead [48], id [64], campaign [48], email [96], name [48];
    bench_journey_lead (run, j, lead, sizeof lead);
    snprintf (id, sizeof id, "%s:cap", lead);
    s_campaign_id (run, (int) (j % BENCH_CAMPAIGNS), campaign, sizeof campaign);
    snprintf (email, sizeof email, "j%" PRId64 ".%s@bench.example.com", j, run);
    snprintf (name, sizeof name, "Buyer %" PRId64, j);
    s_envelope (pk, id, "lead.capture", 5);
    s_pair (pk, "lead", lead);
    s_pair (pk, "email", email);
    s_pair (pk, "name", name);
    s_pair (pk, "campaign", campaign);
    event_codec_pack_cstr (pk, "attrs");
    msgpack_pack_map (pk, 5);
    s_pair_int (pk, "budget", 500000);
    event_codec_pack_cstr (pk, "authority");
    msgpack_pack_true (pk);
    event_codec_pack_cstr (pk, "need");
    msgpack_pack_true (pk);
    s_pair_int (pk, "timeline_days", 30);
    s_pair (pk, "region", "us");
}

void
bench_pack_offer (msgpack_packer *pk, const char *deal)
{
    char id [80];
    snprintf (id, sizeof id, "%s:offer", deal);
    s_envelope (pk, id, "deal.offer", 3);
    s_pair (pk, "deal", deal);
    s_pair_int (pk, "amount", 250000);
    s_pair_int (pk, "discount_pct", 10);
}

void
bench_pack_close_won (msgpack_packer *pk, const char *deal)
{
    char id [80];
    snprintf (id, sizeof id, "%s:close", deal);
    s_envelope (pk, id, "deal.close", 2);
    s_pair (pk, "deal", deal);
    s_pair (pk, "outcome", "won");
}

void
bench_pack_order (msgpack_packer *pk, const char *customer)
{
    char id [80];
    snprintf (id, sizeof id, "%s:order", customer);
    s_envelope (pk, id, "customer.order", 3);
    s_pair (pk, "customer", customer);
    s_pair_int (pk, "amount", 120000);
    s_pair (pk, "order", "o2");
}

void
bench_journey_probe_deal (const char *run, char *buf, size_t size)
{
    snprintf (buf, size, "%s.probe", run);
}

void
bench_pack_deal_open (msgpack_packer *pk, const char *run)
{
    char deal [48], id [64];
    bench_journey_probe_deal (run, deal, sizeof deal);
    snprintf (id, sizeof id, "%s:open", deal);
    s_envelope (pk, id, "deal.open", 2);
    s_pair (pk, "deal", deal);
    s_pair (pk, "lead", deal);
}

void
bench_pack_interaction (msgpack_packer *pk, const char *run, int64_t k)
{
    char deal [48], id [64];
    bench_journey_probe_deal (run, deal, sizeof deal);
    snprintf (id, sizeof id, "%s:i%" PRId64, deal, k);
    s_envelope (pk, id, "deal.interaction", 3);
    s_pair (pk, "deal", deal);
    s_pair (pk, "kind", "call");
    s_pair (pk, "outcome", "neutral");
}

void
bench_pack_probe_capture (msgpack_packer *pk, const char *run, int64_t k)
{
    char lead [48], id [64];
    snprintf (lead, sizeof lead, "%s.q%" PRId64, run, k);
    snprintf (id, sizeof id, "%s:cap", lead);
    s_envelope (pk, id, "lead.capture", 1);
    s_pair (pk, "lead", lead);
}

void
bench_pack_load_touch (msgpack_packer *pk, const char *run, int64_t n)
{
    char contact [48], id [64], campaign [48];
    snprintf (contact, sizeof contact, "%s.bg%" PRId64, run, n);
    snprintf (id, sizeof id, "%s:t", contact);
    s_campaign_id (run, (int) (n % BENCH_CAMPAIGNS), campaign, sizeof campaign);
    s_envelope (pk, id, "touch", 3);
    s_pair (pk, "campaign", campaign);
    s_pair (pk, "kind", "click");
    s_pair (pk, "contact", contact);
}


#undef NDEBUG                   //  The self-test needs its asserts
#include <assert.h>

//  --------------------------------------------------------------------------
//  Self-test: every event passes the service's own envelope checks, and
//  lead ids map back to their journey.

void
bench_journey_test (bool verbose)
{
    if (verbose)
        printf (" * bench_journey: ");
    char run [16], lead [48];
    bench_journey_run_id (run, sizeof run);
    assert (strlen (run) >= 6);
    bench_journey_lead (run, 1234, lead, sizeof lead);
    assert (bench_journey_index (run, lead) == 1234);
    assert (bench_journey_index (run, "other.j1") == -1);
    char probe [48];
    snprintf (probe, sizeof probe, "%s.q7", run);
    assert (bench_journey_index (run, probe) == -1);
    snprintf (probe, sizeof probe, "%s.j", run);
    assert (bench_journey_index (run, probe) == -1);

    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init (&sbuf);
    msgpack_packer pk;
    msgpack_packer_init (&pk, &sbuf, msgpack_sbuffer_write);
    msgpack_pack_array (&pk, 12);
    bench_pack_campaign_upsert (&pk, run, 3);
    bench_pack_touch (&pk, run, 99, 0);
    bench_pack_capture (&pk, run, 99);
    bench_pack_offer (&pk, "Lx.j99-1");
    bench_pack_close_won (&pk, "Lx.j99-1");
    bench_pack_order (&pk, lead);
    bench_pack_deal_open (&pk, run);
    bench_pack_interaction (&pk, run, 5);
    bench_pack_probe_capture (&pk, run, 5);
    bench_pack_load_touch (&pk, run, 5);
    bench_pack_touch (&pk, run, 99, 5);
    bench_pack_touch (&pk, run, INT64_C (99999999), 5);
    funnel_error_t err;
    event_codec_t *msg = event_codec_decode (sbuf.data, sbuf.size, &event_codec_limits_body, &err);
    assert (msg);
    funnel_event_t *events = NULL;
    size_t count = 0;
    bool is_batch = false;
    int rc = event_codec_publish_parse (msg, &events, &count, &is_batch, &err);
    if (rc)
        fprintf (stderr, "bench_journey: %s\n", err.message);
    assert (rc == 0 && count == 12 && is_batch);
    assert (streq (events [2].type, "lead.capture"));
    free (events);
    event_codec_destroy (&msg);
    msgpack_sbuffer_destroy (&sbuf);
    if (verbose)
        printf ("OK\n");
}
