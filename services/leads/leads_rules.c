/*  leads_rules — funnel-leads' field tables and settings.

    The tables are PROTOCOL §5 "leads accepts" plus rep.update; shapes are
    checked here, before Redis, so the Lua rules only check state. The
    settings are read once at start and handed to the Lua rules as RULES.
*/
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "event_codec.h"
#include "funnel_log.h"
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
    { "rep.update", s_rep_update },
    { NULL, NULL }
};

//  -------------------------------------------------------------------------
//  Settings

#define REPS_MAX    64
#define ICP_MAX     32

//  Touch kinds of PROTOCOL §5 and their default engagement points
static const struct {
    const char *kind;
    double points;
} s_points [] = {
    { "impression", 0 }, { "open", 1 }, { "click", 3 }, { "visit", 2 },
    { "like", 1 }, { "comment", 2 }, { "share", 3 }, { "follow", 2 },
    { "reply", 5 }, { "form", 10 }
};

static void
s_key (msgpack_packer *pk, const char *key)
{
    funnel_pack_cstr (pk, key);
}

//  Reads a number setting into the map being packed; -1 on a bad value
static int
s_num (funnel_config_t *config, msgpack_packer *pk, const char *path,
       const char *key, double default_value, double min)
{
    double value;
    if (funnel_config_num (config, path, default_value, &value))
        return -1;
    if (value < min) {
        log_error ("config %s: %g is below %g", path, value, min);
        return -1;
    }
    s_key (pk, key);
    msgpack_pack_double (pk, value);
    return 0;
}

static int
s_pack_thresholds (funnel_config_t *config, msgpack_packer *pk)
{
    double mql, sql;
    if (funnel_config_num (config, "leads/rules/mql", 40, &mql)
    ||  funnel_config_num (config, "leads/rules/sql", 80, &sql))
        return -1;
    if (mql <= 0 || sql < mql) {
        log_error ("config leads/rules: need 0 < mql <= sql (mql %g, sql %g)", mql, sql);
        return -1;
    }
    int64_t half_life, pending_ttl;
    if (funnel_config_int (config, "leads/rules/half_life_s", 1209600, &half_life)
    ||  funnel_config_int (config, "leads/rules/pending_ttl_s", 7776000, &pending_ttl))
        return -1;
    if (half_life < 1 || pending_ttl < 1) {
        log_error ("config leads/rules: half_life_s and pending_ttl_s must be >= 1");
        return -1;
    }
    const char *fallback = funnel_config_get (config, "leads/rules/fallback_rep", "house");
    if (!funnel_id_valid (fallback, strlen (fallback))) {
        log_error ("config leads/rules/fallback_rep: '%s' is not an id", fallback);
        return -1;
    }
    s_key (pk, "mql");
    msgpack_pack_double (pk, mql);
    s_key (pk, "sql");
    msgpack_pack_double (pk, sql);
    s_key (pk, "half_life_ms");
    msgpack_pack_int64 (pk, half_life * 1000);
    s_key (pk, "pending_ttl_s");
    msgpack_pack_int64 (pk, pending_ttl);
    s_key (pk, "fallback_rep");
    funnel_pack_cstr (pk, fallback);
    if (s_num (config, pk, "leads/rules/sql_fit_min", "sql_fit_min", 30, -HUGE_VAL)
    ||  s_num (config, pk, "leads/rules/in_audience_fit", "in_audience_fit", 5, -HUGE_VAL))
        return -1;
    return 0;
}

static int
s_pack_points (funnel_config_t *config, msgpack_packer *pk)
{
    size_t count = sizeof s_points / sizeof s_points [0];
    s_key (pk, "points");
    msgpack_pack_map (pk, count);
    for (size_t i = 0; i < count; i++) {
        char path [64];
        snprintf (path, sizeof path, "leads/points/%s", s_points [i].kind);
        if (s_num (config, pk, path, s_points [i].kind, s_points [i].points, -HUGE_VAL))
            return -1;
    }
    return 0;
}

static int
s_pack_bant (funnel_config_t *config, msgpack_packer *pk)
{
    s_key (pk, "bant");
    msgpack_pack_map (pk, 6);
    if (s_num (config, pk, "leads/bant/budget", "budget", 15, -HUGE_VAL)
    ||  s_num (config, pk, "leads/bant/authority", "authority", 15, -HUGE_VAL)
    ||  s_num (config, pk, "leads/bant/need", "need", 15, -HUGE_VAL)
    ||  s_num (config, pk, "leads/bant/timeline", "timeline", 15, -HUGE_VAL)
    ||  s_num (config, pk, "leads/bant/budget_min", "budget_min", 1, 0)
    ||  s_num (config, pk, "leads/bant/timeline_days_max", "timeline_days_max", 90, 0))
        return -1;
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
        funnel_pack_cstr (pk, items [i]);
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
    funnel_pack_cstr (pk, name);
    s_key (pk, "attr");
    funnel_pack_cstr (pk, attr);
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
        funnel_pack_cstr (pk, "size");
        s_key (pk, "attr");
        funnel_pack_cstr (pk, "employees");
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
    funnel_pack_cstr (pk, name);
    s_key (pk, "region");
    funnel_pack_cstr (pk, region);
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
        if (!funnel_id_valid (names [i], strlen (names [i]))) {
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
    msgpack_pack_map (pk, 11);      //  7 thresholds + points, bant, icp, reps
    if (s_pack_thresholds (config, pk)
    ||  s_pack_points (config, pk)
    ||  s_pack_bant (config, pk)
    ||  s_pack_icp (config, pk)
    ||  s_pack_reps (config, pk))
        return -1;
    return 0;
}
