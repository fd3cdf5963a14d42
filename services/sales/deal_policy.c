/*  deal_policy — the pure rules of a deal (see deal_policy.h).  */
#include <ctype.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <czmq.h>
#include "deal_policy.h"

const char *const deal_policy_stages [DEAL_STAGES + 1] = {
    "discovery", "proposal", "negotiation", "commit", NULL };

//  What each status allows: a deal is open until closed won or lost; a won
//  deal may be delivered once; lost and delivered deals are final.
static bool
s_allowed (const char *status, const char *action)
{
    if (!status)
        return false;
    if (streq (status, "open"))
        return streq (action, "interaction") || streq (action, "offer")
            || streq (action, "approve") || streq (action, "stage")
            || streq (action, "close");
    if (streq (status, "won"))
        return streq (action, "deliver");
    return false;
}

int
deal_policy_check (const char *status, const char *action, char *why, size_t size)
{
    if (s_allowed (status, action))
        return 0;
    if (streq (action, "deliver") && status && streq (status, "delivered"))
        snprintf (why, size, "deal is already delivered");
    else {
        const char *needs = streq (action, "deliver")? "a won deal"
                          : (streq (action, "interaction") || streq (action, "offer")
                          || streq (action, "approve") || streq (action, "stage")
                          || streq (action, "close"))? "an open deal": "another state";
        snprintf (why, size, "deal is %s; %s needs %s", status ? status : "nil", action, needs);
    }
    return 1;
}

int
deal_policy_stage_change (const char *from, const char *to, char *why, size_t size)
{
    //  Stages may move back (a commit can slip), but not to where they are
    if (from && streq (from, to)) {
        snprintf (why, size, "deal is already in stage %s", to);
        return 1;
    }
    return 0;
}

int
deal_policy_stage_index (const char *stage)
{
    for (int i = 0; stage && i < DEAL_STAGES; i++)
        if (streq (deal_policy_stages [i], stage))
            return i;
    return -1;
}

bool
deal_policy_needs_approval (double discount_pct, double max_pct)
{
    return discount_pct > max_pct;
}

int
deal_policy_close_won (double discount_pct, bool approved, double max_pct,
                       char *why, size_t size)
{
    if (deal_policy_needs_approval (discount_pct, max_pct) && !approved) {
        snprintf (why, size, "approval_required: the latest offer is %.14g%% off, above the "
                  "%.14g%% maximum, and not approved (deal.approve)", discount_pct, max_pct);
        return 1;
    }
    return 0;
}

int64_t
deal_policy_forecast (const int64_t amounts [DEAL_STAGES],
                      const double probabilities [DEAL_STAGES])
{
    //  Doubles, summed in stage order: the figures are reproducible
    double total = 0;
    for (int i = 0; i < DEAL_STAGES; i++)
        total += (double) amounts [i] * probabilities [i] / 100;
    return (int64_t) floor (total);
}

double
deal_policy_win_rate (int64_t won, int64_t lost)
{
    return won + lost == 0 ? 0 : (double) won / (double) (won + lost);
}

int64_t
deal_policy_mean (int64_t sum, int64_t n)
{
    return n <= 0 ? 0 : (int64_t) floor ((double) sum / (double) n);
}

const char *
deal_policy_next_rep (const char *const *reps, size_t count, const char *current,
                      int64_t turn)
{
    size_t others = 0;
    for (size_t i = 0; i < count; i++)
        if (!current || !streq (reps [i], current))
            others++;
    if (others == 0)
        return current;
    size_t pick = (size_t) (turn < 0 ? 0 : turn) % others;
    for (size_t i = 0; i < count; i++)
        if (!current || !streq (reps [i], current)) {
            if (pick == 0)
                return reps [i];
            pick--;
        }
    return current;             //  Not reached
}

void
deal_policy_deal_id (const char *prefix, const char *entity, int64_t n,
                     char *out, size_t size)
{
    //  The suffix after the last '-' is all digits: two entities' ids
    //  never meet
    int len = snprintf (out, size, "%s%s-%" PRId64, prefix, entity, n);
    if (len > 64) {
        zdigest_t *digest = zdigest_new ();
        zdigest_update (digest, (const byte *) entity, strlen (entity));
        char hex [41];
        const char *text = zdigest_string (digest);
        for (int i = 0; i < 40; i++)
            hex [i] = (char) tolower ((unsigned char) text [i]);
        hex [40] = 0;
        zdigest_destroy (&digest);
        snprintf (out, size, "%s%s-%" PRId64, prefix, hex, n);
    }
}

void
deal_policy_reason_key (const char *reason, char *out, size_t size)
{
    const char *start = reason ? reason : "";
    //  isspace in the C locale: space, \t, \n, \v, \f, \r
    while (*start && isspace ((unsigned char) *start))
        start++;
    size_t len = strlen (start);
    while (len > 0 && isspace ((unsigned char) start [len - 1]))
        len--;
    if (len == 0) {
        snprintf (out, size, "unspecified");
        return;
    }
    if (len > 64)
        len = 64;
    if (len >= size)
        len = size - 1;
    for (size_t i = 0; i < len; i++)
        out [i] = (char) tolower ((unsigned char) start [i]);
    out [len] = 0;
}

//  --------------------------------------------------------------------------
//  Self-test (asserts stay on in every build)
#undef NDEBUG
#include <assert.h>
//  The deal policy's cases

void
deal_policy_test (bool verbose)
{
    (void) verbose;
    char why [256];
    const char *actions [] = { "interaction", "offer", "approve", "stage", "close" };
    for (int i = 0; i < 5; i++) {
        char want [128];
        assert (deal_policy_check ("open", actions [i], why, sizeof why) == 0);
        assert (deal_policy_check ("won", actions [i], why, sizeof why) == 1);
        snprintf (want, sizeof want, "is won; %s needs an open deal", actions [i]);
        assert (strstr (why, want));
        assert (deal_policy_check ("lost", actions [i], why, sizeof why) == 1);
        assert (strstr (why, "needs an open deal"));
        assert (deal_policy_check ("delivered", actions [i], why, sizeof why) == 1);
    }
    assert (deal_policy_check ("won", "deliver", why, sizeof why) == 0);
    assert (deal_policy_check ("open", "deliver", why, sizeof why) == 1);
    assert (streq (why, "deal is open; deliver needs a won deal"));
    assert (deal_policy_check ("lost", "deliver", why, sizeof why) == 1);
    assert (streq (why, "deal is lost; deliver needs a won deal"));
    assert (deal_policy_check ("delivered", "deliver", why, sizeof why) == 1);
    assert (streq (why, "deal is already delivered"));
    assert (deal_policy_check (NULL, "offer", why, sizeof why) == 1);
    assert (deal_policy_check ("open", "frobnicate", why, sizeof why) == 1);

    //  Stages: any open stage to another, back included, never to itself
    assert (deal_policy_stage_change ("discovery", "commit", why, sizeof why) == 0);
    assert (deal_policy_stage_change ("commit", "proposal", why, sizeof why) == 0);
    assert (deal_policy_stage_change ("proposal", "proposal", why, sizeof why) == 1);
    assert (streq (why, "deal is already in stage proposal"));
    assert (streq (deal_policy_stages [0], DEAL_FIRST_STAGE) && !deal_policy_stages [4]);
    assert (deal_policy_stage_index ("commit") == 3 && deal_policy_stage_index ("x") == -1);

    //  Discount policy: strictly above the maximum needs approval
    assert (!deal_policy_needs_approval (20, 20));
    assert (deal_policy_needs_approval (20.5, 20));
    assert (!deal_policy_needs_approval (0, 20));       //  No offer, no discount
    assert (!deal_policy_needs_approval (0, 0));
    assert (deal_policy_needs_approval (0.1, 0));
    assert (deal_policy_close_won (10, false, 20, why, sizeof why) == 0);
    assert (deal_policy_close_won (30, true, 20, why, sizeof why) == 0);
    assert (deal_policy_close_won (30, false, 20, why, sizeof why) == 1);
    assert (strncmp (why, "approval_required", 17) == 0);
    assert (strstr (why, "30%") && strstr (why, "20%"));
    assert (deal_policy_close_won (12.5, false, 10, why, sizeof why) == 1);
    assert (strstr (why, "is 12.5% off, above the 10% maximum"));

    //  Forecast: amount × probability per stage, floored to cents
    double probs [DEAL_STAGES] = { 10, 30, 60, 90 };
    int64_t none [DEAL_STAGES] = { 0 };
    assert (deal_policy_forecast (none, probs) == 0);
    int64_t a1 [DEAL_STAGES] = { 1000, 0, 0, 1000 };
    assert (deal_policy_forecast (a1, probs) == 1000);
    int64_t a2 [DEAL_STAGES] = { 0, 333, 0, 0 };
    assert (deal_policy_forecast (a2, probs) == 99);            //  99.9 floored
    int64_t a3 [DEAL_STAGES] = { 0, 0, 1000000000000, 0 };
    assert (deal_policy_forecast (a3, probs) == 600000000000);  //  Large stays exact

    //  Win rate and means
    assert (deal_policy_win_rate (0, 0) == 0);
    assert (deal_policy_win_rate (3, 1) == 0.75);
    assert (deal_policy_mean (10, 0) == 0 && deal_policy_mean (10, 3) == 3);

    //  Rep rotation: round robin over the others, never the current rep
    const char *reps [] = { "ann", "bob", "cy" };
    assert (streq (deal_policy_next_rep (reps, 3, "ann", 0), "bob"));
    assert (streq (deal_policy_next_rep (reps, 3, "ann", 1), "cy"));
    assert (streq (deal_policy_next_rep (reps, 3, "ann", 2), "bob"));
    assert (streq (deal_policy_next_rep (reps, 3, "zed", 2), "cy"));
    assert (streq (deal_policy_next_rep (reps, 3, NULL, 0), "ann"));
    assert (streq (deal_policy_next_rep (reps, 1, "ann", 5), "ann"));  //  Nobody else
    assert (streq (deal_policy_next_rep (reps, 0, "ann", 0), "ann"));
    assert (deal_policy_next_rep (reps, 0, NULL, 0) == NULL);

    //  Deal ids: entity-n, unique across entities, digest when too long
    char id [80], other [80];
    deal_policy_deal_id ("L", "acme", 1, id, sizeof id);
    assert (streq (id, "Lacme-1"));
    deal_policy_deal_id ("X", "acme-1", 2, id, sizeof id);
    assert (streq (id, "Xacme-1-2"));
    deal_policy_deal_id ("L", "a-1", 2, id, sizeof id);
    deal_policy_deal_id ("L", "a", 12, other, sizeof other);
    assert (!streq (id, other));
    char long_entity [65];
    memset (long_entity, 'x', 64);
    long_entity [64] = 0;
    deal_policy_deal_id ("L", long_entity, 3, id, sizeof id);
    //  Hashed: the SHA-1 of 64 'x' in hex, then -3
    assert (strlen (id) <= 64 && id [0] == 'L' && strlen (id) == 43);
    assert (streq (id + 41, "-3"));

    //  Lost reasons as report keys
    char key [80];
    deal_policy_reason_key ("  Too Expensive ", key, sizeof key);
    assert (streq (key, "too expensive"));
    deal_policy_reason_key (NULL, key, sizeof key);
    assert (streq (key, "unspecified"));
    deal_policy_reason_key ("   ", key, sizeof key);
    assert (streq (key, "unspecified"));
    char long_reason [301];
    memset (long_reason, 'x', 300);
    long_reason [300] = 0;
    deal_policy_reason_key (long_reason, key, sizeof key);
    assert (strlen (key) == 64);
}
