/*  leads_rules — funnel-leads' field tables and settings.

    The tables are proto/leads.md's accepted events plus rep.update; shapes
    are checked here, before any state is read, so the rules only check
    state. The settings are read once at start into one msgpack map (RULES),
    which leads_stage.c reads into its own struct.
*/
#include <ctype.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "event_codec.h"
#include "funnel_log.h"
#include "funnel_settings.h"
#include "leads_rules.h"

//  -------------------------------------------------------------------------
//  What leads accepts

//  BANT and profile attributes; other keys are kept for ICP rules unchecked
static const funnel_field_t s_attrs [] = {
    FIELD_RANGE ("budget", FIELD_INT, false, 0, 1e13),
    FIELD_OPT ("authority", FIELD_BOOL),
    FIELD_OPT ("need", FIELD_BOOL),
    FIELD_RANGE ("timeline_days", FIELD_INT, false, 0, 3650),
    FIELD_RANGE ("region", FIELD_STR, false, 1, 64),
    FIELD_RANGE ("industry", FIELD_STR, false, 1, 100),
    FIELD_RANGE ("employees", FIELD_INT, false, 0, 1e8),
    FIELD_RANGE ("age", FIELD_INT, false, 0, 150),
    FIELD_RANGE ("interests", FIELD_STR_ARRAY, false, 0, 32),
    FIELD_END
};

static const funnel_field_t s_capture [] = {
    FIELD_REQ ("lead", FIELD_ID),
    FIELD_RANGE ("email", FIELD_STR, false, 3, 254),
    FIELD_RANGE ("name", FIELD_STR, false, 1, 200),
    FIELD_RANGE ("company", FIELD_STR, false, 1, 200),
    FIELD_RANGE ("title", FIELD_STR, false, 1, 200),
    FIELD_RANGE ("phone", FIELD_STR, false, 3, 40),
    FIELD_OPT ("campaign", FIELD_ID),
    FIELD_NESTED ("attrs", false, s_attrs),
    FIELD_END
};

static const char *const s_stages [] = { "mql", "sql", NULL };

static const funnel_field_t s_qualify [] = {
    FIELD_REQ ("lead", FIELD_ID),
    FIELD_ONE_OF ("stage", FIELD_ENUM, true, s_stages),
    FIELD_RANGE ("by", FIELD_STR, false, 1, 200),
    FIELD_END
};

static const funnel_field_t s_disqualify [] = {
    FIELD_REQ ("lead", FIELD_ID),
    FIELD_RANGE ("reason", FIELD_STR, true, 1, 200),
    FIELD_END
};

//  Erasing a person (proto/privacy.md); the reason is neither kept nor logged
static const funnel_field_t s_forget [] = {
    FIELD_REQ ("lead", FIELD_ID),
    FIELD_RANGE ("reason", FIELD_STR, false, 1, 200),
    FIELD_END
};

//  Run-time change of a rep (away for holidays, more or less capacity)
static const funnel_field_t s_rep_update [] = {
    FIELD_REQ ("rep", FIELD_ID),
    FIELD_OPT ("away", FIELD_BOOL),
    FIELD_RANGE ("capacity", FIELD_INT, false, 0, 100000),
    FIELD_END
};

const funnel_event_schema_t leads_accepts [] = {
    { "lead.capture", s_capture },
    { "lead.qualify", s_qualify },
    { "lead.disqualify", s_disqualify },
    { "lead.forget", s_forget },
    { "rep.update", s_rep_update },
    { NULL, NULL }
};

//  -------------------------------------------------------------------------
//  Settings

#define REPS_MAX    64
#define ICP_MAX     32

//  leads/rules/<name>, packed at the top of RULES (RULES.mql, ...).
//  0 < mql <= sql is checked once both are read.
static const funnel_setting_t s_rules [] = {
    { "mql", 40, 0, HUGE_VAL, false, "score (fit + engagement) that makes an MQL (above 0)" },
    { "sql", 80, 0, HUGE_VAL, false, "score that makes an SQL (at least mql) ..." },
    { "sql_fit_min", 30, -HUGE_VAL, HUGE_VAL, false, "... when the fit alone is at least this" },
    { "pending_ttl_s", 7776000, 1, HUGE_VAL, true, "keep touches of uncaptured contacts (90 days)" },
    { "in_audience_fit", 5, -HUGE_VAL, HUGE_VAL, false, "fit points once a touch was in the audience" },
    { "history_max", 50, 1, 10000, true, "stage changes kept per lead (GET lead's history)" },
    { NULL }
};
#define RULES_ROWS (sizeof s_rules / sizeof s_rules [0] - 1)

//  Engagement per touch kind (proto/campaign.md touch kinds) and BANT fit, packed as
//  RULES.points.<kind> and RULES.bant.<part>
static const funnel_setting_t s_fit [] = {
    { "points/impression", 0, -HUGE_VAL, HUGE_VAL, false, "per impression" },
    { "points/open", 1, -HUGE_VAL, HUGE_VAL, false, "per open" },
    { "points/click", 3, -HUGE_VAL, HUGE_VAL, false, "per click" },
    { "points/visit", 2, -HUGE_VAL, HUGE_VAL, false, "per visit" },
    { "points/like", 1, -HUGE_VAL, HUGE_VAL, false, "per like" },
    { "points/comment", 2, -HUGE_VAL, HUGE_VAL, false, "per comment" },
    { "points/share", 3, -HUGE_VAL, HUGE_VAL, false, "per share" },
    { "points/follow", 2, -HUGE_VAL, HUGE_VAL, false, "per follow" },
    { "points/reply", 5, -HUGE_VAL, HUGE_VAL, false, "per reply" },
    { "points/form", 10, -HUGE_VAL, HUGE_VAL, false, "per form" },
    { "bant/budget", 15, -HUGE_VAL, HUGE_VAL, false, "fit for a budget of at least budget_min" },
    { "bant/authority", 15, -HUGE_VAL, HUGE_VAL, false, "fit for attrs.authority" },
    { "bant/need", 15, -HUGE_VAL, HUGE_VAL, false, "fit for attrs.need" },
    { "bant/timeline", 15, -HUGE_VAL, HUGE_VAL, false, "fit for a timeline of at most timeline_days_max" },
    { "bant/budget_min", 1, 0, HUGE_VAL, false, "attrs.budget >= this earns bant/budget" },
    { "bant/timeline_days_max", 90, 0, HUGE_VAL, false, "attrs.timeline_days <= this earns bant/timeline" },
    { NULL }
};

//  What the tables do not say: a derived value, a string, the lists
#define RULES_MORE \
"  leads/rules/half_life_s = 1209600  1..inf  engagement half-life (14 days)\n" \
"  leads/rules/fallback_rep = house  an id  rep named when every rep is away\n"
#define LISTS_MORE \
"  points/<kind>: engagement a touch of that kind adds; bant/<part>: fit a lead's\n" \
"  attrs earn per BANT criterion met.\n" \
"  leads/icp/<rule>/attr, min, max, in (comma list), points   ideal customer profile;\n" \
"                             default: icp/size {attr employees, min 50, points 10}\n" \
"  leads/reps/<rep>/region, capacity (10), away (false)   sales reps; default: one\n" \
"                             rep `house`, any region, capacity 100\n" \
"See proto/leads.md for the events, GET kinds, counters and key layout.\n"

static void
s_key (msgpack_packer *pk, const char *key)
{
    event_codec_pack_cstr (pk, key);
}

//  Entries RULES.half_life_ms and RULES.fallback_rep
static int
s_pack_half_life_and_fallback (funnel_config_t *config, msgpack_packer *pk)
{
    int64_t half_life;
    if (funnel_config_int (config, "leads/rules/half_life_s", 1209600, &half_life))
        return -1;
    if (half_life < 1) {
        log_error ("config leads/rules/half_life_s: %" PRId64 " is below 1", half_life);
        return -1;
    }
    const char *fallback = funnel_config_get (config, "leads/rules/fallback_rep", "house");
    if (!event_codec_id_valid (fallback, strlen (fallback))) {
        log_error ("config leads/rules/fallback_rep: '%s' is not an id", fallback);
        return -1;
    }
    s_key (pk, "half_life_ms");
    msgpack_pack_int64 (pk, half_life * 1000);
    s_key (pk, "fallback_rep");
    event_codec_pack_cstr (pk, fallback);
    return 0;
}

//  "SaaS, fintech" -> ["saas", "fintech"]: ICP values match case-insensitively
static void
s_pack_values (msgpack_packer *pk, const char *list)
{
    char copy [1024];
    snprintf (copy, sizeof copy, "%s", list);
    const char *items [64];
    int count = 0;
    for (char *save = NULL, *item = strtok_r (copy, ",", &save); item && count < 64;
         item = strtok_r (NULL, ",", &save)) {
        while (isspace ((unsigned char) *item))
            item++;
        size_t len = strlen (item);
        while (len && isspace ((unsigned char) item [len - 1]))
            item [--len] = 0;
        for (char *c = item; *c; c++)
            *c = (char) tolower ((unsigned char) *c);
        if (*item)
            items [count++] = item;
    }
    msgpack_pack_array (pk, (size_t) count);
    for (int i = 0; i < count; i++)
        event_codec_pack_cstr (pk, items [i]);
}

//  One ICP rule: attr plus min/max or in; no test means "attr is set"
static int
s_pack_icp_rule (funnel_config_t *config, msgpack_packer *pk, const char *name)
{
    char path [256];
    snprintf (path, sizeof path, "leads/icp/%s/attr", name);
    const char *attr = funnel_config_get (config, path, NULL);
    if (!attr || !*attr) {
        log_error ("config %s: required (the attrs key the rule tests)", path);
        return -1;
    }
    snprintf (path, sizeof path, "leads/icp/%s/in", name);
    const char *in = funnel_config_get (config, path, NULL);
    const char *bounds [] = { "min", "max" };
    bool has [2] = { false, false };
    double bound [2] = { 0, 0 };
    for (int b = 0; b < 2; b++) {
        snprintf (path, sizeof path, "leads/icp/%s/%s", name, bounds [b]);
        has [b] = funnel_config_get (config, path, NULL) != NULL;
        if (has [b] && funnel_config_num (config, path, 0, &bound [b]))
            return -1;
    }
    double points;
    snprintf (path, sizeof path, "leads/icp/%s/points", name);
    if (funnel_config_num (config, path, 10, &points))
        return -1;
    msgpack_pack_map (pk, 3 + (in != NULL) + has [0] + has [1]);
    s_key (pk, "name");
    event_codec_pack_cstr (pk, name);
    s_key (pk, "attr");
    event_codec_pack_cstr (pk, attr);
    s_key (pk, "points");
    msgpack_pack_double (pk, points);
    if (in) {
        s_key (pk, "values");
        s_pack_values (pk, in);
    }
    for (int b = 0; b < 2; b++)
        if (has [b]) {
            s_key (pk, bounds [b]);
            msgpack_pack_double (pk, bound [b]);
        }
    return 0;
}

static int
s_pack_icp (funnel_config_t *config, msgpack_packer *pk)
{
    const char *names [ICP_MAX];
    int count = funnel_config_children (config, "leads/icp", names, ICP_MAX);
    s_key (pk, "icp");
    if (count == 0) {
        //  Default profile: companies of 50 people or more
        msgpack_pack_array (pk, 1);
        msgpack_pack_map (pk, 4);
        s_key (pk, "name");
        event_codec_pack_cstr (pk, "size");
        s_key (pk, "attr");
        event_codec_pack_cstr (pk, "employees");
        s_key (pk, "min");
        msgpack_pack_double (pk, 50);
        s_key (pk, "points");
        msgpack_pack_double (pk, 10);
        return 0;
    }
    msgpack_pack_array (pk, (size_t) count);
    for (int i = 0; i < count; i++)
        if (s_pack_icp_rule (config, pk, names [i]))
            return -1;
    return 0;
}

static void
s_pack_rep (msgpack_packer *pk, const char *name, const char *region,
            int64_t capacity, bool away)
{
    msgpack_pack_map (pk, 4);
    s_key (pk, "name");
    event_codec_pack_cstr (pk, name);
    s_key (pk, "region");
    event_codec_pack_cstr (pk, region);
    s_key (pk, "capacity");
    msgpack_pack_int64 (pk, capacity);
    s_key (pk, "away");
    if (away)
        msgpack_pack_true (pk);
    else
        msgpack_pack_false (pk);
}

static int
s_pack_reps (funnel_config_t *config, msgpack_packer *pk)
{
    const char *names [REPS_MAX];
    int count = funnel_config_children (config, "leads/reps", names, REPS_MAX);
    s_key (pk, "reps");
    if (count == 0) {
        //  No sales team configured: one house rep takes every SQL
        msgpack_pack_array (pk, 1);
        s_pack_rep (pk, "house", "", 100, false);
        return 0;
    }
    msgpack_pack_array (pk, (size_t) count);
    for (int i = 0; i < count; i++) {
        if (!event_codec_id_valid (names [i], strlen (names [i]))) {
            log_error ("config leads/reps/%s: a rep name must be an id", names [i]);
            return -1;
        }
        char path [256];
        int64_t capacity;
        bool away;
        snprintf (path, sizeof path, "leads/reps/%s/capacity", names [i]);
        if (funnel_config_int (config, path, 10, &capacity))
            return -1;
        if (capacity < 0) {
            log_error ("config %s: must be >= 0", path);
            return -1;
        }
        snprintf (path, sizeof path, "leads/reps/%s/away", names [i]);
        if (funnel_config_bool (config, path, false, &away))
            return -1;
        snprintf (path, sizeof path, "leads/reps/%s/region", names [i]);
        char region [65];
        snprintf (region, sizeof region, "%s", funnel_config_get (config, path, ""));
        for (char *c = region; *c; c++)
            *c = (char) tolower ((unsigned char) *c);
        s_pack_rep (pk, names [i], region, capacity, away);
    }
    return 0;
}

int
leads_pack_rules (funnel_config_t *config, msgpack_packer *pk)
{
    //  The tables' entries + half_life_ms, fallback_rep, icp, reps
    msgpack_pack_map (pk, funnel_settings_count (s_rules) + funnel_settings_count (s_fit) + 4);
    double rules [RULES_ROWS];
    if (funnel_settings_pack_entries (config, "leads/rules", s_rules, pk, rules))
        return -1;
    double mql = funnel_settings_value (s_rules, rules, "mql");
    double sql = funnel_settings_value (s_rules, rules, "sql");
    if (mql <= 0 || sql < mql) {
        log_error ("config leads/rules: need 0 < mql <= sql (mql %g, sql %g)", mql, sql);
        return -1;
    }
    if (s_pack_half_life_and_fallback (config, pk)
    ||  funnel_settings_pack_entries (config, "leads", s_fit, pk, NULL)
    ||  s_pack_icp (config, pk)
    ||  s_pack_reps (config, pk))
        return -1;
    return 0;
}

const char *
leads_rules_help (void)
{
    //  The two tables' texts as one, built once (they are the module's)
    static char *help;
    if (!help && asprintf (&help, "%s%s", funnel_settings_help ("leads/rules", s_rules, RULES_MORE),
                           funnel_settings_help ("leads", s_fit, LISTS_MORE)) < 0)
        help = NULL;
    return help;
}
