/*  sales_rules — field tables and settings of the sales stage.  */
#include <stdio.h>
#include <string.h>
#include "sales_rules.h"
#include "event_codec.h"
#include "funnel_log.h"
#include "funnel_settings.h"

//  --------------------------------------------------------------------------
//  Field tables: shapes only; deal state (not_found, conflict) is sales_stage.c's

static const char *const s_stages [] = {
    "discovery", "proposal", "negotiation", "commit", NULL };
static const char *const s_kinds [] = {
    "call", "meeting", "email", "demo", "note", NULL };
static const char *const s_outcomes [] = { "positive", "neutral", "negative", NULL };
static const char *const s_objections [] = {
    "price", "timing", "authority", "competitor", "need", "trust", "other", NULL };
static const char *const s_close [] = { "won", "lost", NULL };

//  Amounts are cents; 1e13 cents is far beyond any deal and exact in a double.
#define AMOUNT_MAX 1e13

static const funnel_field_t s_open [] = {
    FIELD_REQ ("deal", FIELD_ID),
    FIELD_REQ ("lead", FIELD_ID),
    FIELD_RANGE ("amount", FIELD_INT, false, 0, AMOUNT_MAX),
    FIELD_OPT ("rep", FIELD_ID),            //  default: the lead's rep, else the pool
    FIELD_END
};
static const funnel_field_t s_interaction [] = {
    FIELD_REQ ("deal", FIELD_ID),
    FIELD_ONE_OF ("kind", FIELD_ENUM, true, s_kinds),
    FIELD_ONE_OF ("outcome", FIELD_ENUM, false, s_outcomes),
    //  A subset: at most one of each value (repeats are counted once)
    { .name = "objections", .kind = FIELD_ENUM_ARRAY, .required = false,
      .min = 0, .max = 7, .values = s_objections },
    FIELD_RANGE ("text", FIELD_STR, false, 1, 1024),
    FIELD_END
};
static const funnel_field_t s_offer [] = {
    FIELD_REQ ("deal", FIELD_ID),
    FIELD_RANGE ("amount", FIELD_INT, true, 0, AMOUNT_MAX),
    FIELD_RANGE ("discount_pct", FIELD_NUM, false, 0, 100),
    FIELD_END
};
static const funnel_field_t s_approve [] = {
    FIELD_REQ ("deal", FIELD_ID),
    FIELD_RANGE ("by", FIELD_STR, true, 1, 128),
    FIELD_END
};
static const funnel_field_t s_stage [] = {
    FIELD_REQ ("deal", FIELD_ID),
    FIELD_ONE_OF ("stage", FIELD_ENUM, true, s_stages),
    FIELD_END
};
static const funnel_field_t s_close_fields [] = {
    FIELD_REQ ("deal", FIELD_ID),
    FIELD_ONE_OF ("outcome", FIELD_ENUM, true, s_close),
    FIELD_RANGE ("reason", FIELD_STR, false, 1, 256),
    FIELD_END
};
static const funnel_field_t s_deliver [] = {
    FIELD_REQ ("deal", FIELD_ID),
    FIELD_END
};

const funnel_event_schema_t sales_accepts [] = {
    { "deal.open", s_open },
    { "deal.interaction", s_interaction },
    { "deal.offer", s_offer },
    { "deal.approve", s_approve },
    { "deal.stage", s_stage },
    { "deal.close", s_close_fields },
    { "deal.deliver", s_deliver },
    { NULL }
};

//  --------------------------------------------------------------------------
//  Settings

#define REPS_MAX    256

//  sales/<path>, packed as map entry <path> (probability/<stage> in a
//  map probability: {<stage>: ...}); sales_stage.c reads that map
static const funnel_setting_t s_settings [] = {
    { "max_discount_pct", 20, 0, 100, false,
      "above it: deal.approval_required; closing won needs deal.approve" },
    { "sla_s", 1800, 0, 365 * 86400.0, false,
      "speed to lead: seconds to a first interaction on a lead.sql deal (0 = off)" },
    { "stale_days", 14, 1e-6, 3650, false, "days without interaction before deal.stalled" },
    { "sweep_limit", 200, 1, 10000, true, "timers fired per tick, per kind" },
    { "probability/discovery", 10, 0, 100, true, "win probability (percent) for the forecast" },
    { "probability/proposal", 30, 0, 100, true, "..." },
    { "probability/negotiation", 60, 0, 100, true, "..." },
    { "probability/commit", 90, 0, 100, true, "..." },
    { NULL }
};

static const char s_reps_help [] =
    "  sales/reps/<name>/away = 0  the rep pool for re-assignment after an SLA breach\n"
    "                              (away = 1: skipped); none: a deal keeps its rep\n";

const char *
sales_settings_help (void)
{
    return funnel_settings_help ("sales", s_settings, s_reps_help);
}

//  A rep's name goes into events as an id: same charset and length.
static bool
s_valid_rep (const char *name)
{
    size_t len = strlen (name);
    if (len == 0 || len > 64)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!strchr ("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                     "0123456789._:@+-", name [i]))
            return false;
    return true;
}

static int
s_pack_reps (funnel_config_t *config, msgpack_packer *pk)
{
    const char *names [REPS_MAX];
    int count = funnel_config_children (config, "sales/reps", names, REPS_MAX);
    const char *available [REPS_MAX];
    int n_available = 0;
    for (int i = 0; i < count; i++) {
        char path [160];
        snprintf (path, sizeof path, "sales/reps/%s/away", names [i]);
        bool away = false;
        if (!s_valid_rep (names [i])) {
            log_error ("config sales/reps/%s: a rep name must be 1-64 bytes of "
                       "[A-Za-z0-9._:@+-]", names [i]);
            return -1;
        }
        if (funnel_config_bool (config, path, false, &away))
            return -1;
        if (!away)
            available [n_available++] = names [i];
    }
    event_codec_pack_cstr (pk, "reps");
    msgpack_pack_array (pk, n_available);
    for (int i = 0; i < n_available; i++)
        event_codec_pack_cstr (pk, available [i]);
    return 0;
}

int
sales_pack_rules (funnel_config_t *config, msgpack_packer *pk)
{
    msgpack_pack_map (pk, funnel_settings_count (s_settings) + 1);
    if (funnel_settings_pack_entries (config, "sales", s_settings, pk, NULL))
        return -1;
    return s_pack_reps (config, pk);
}
