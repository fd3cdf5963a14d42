/*  leads_stage — the lead generation stage's rules on funnel_state.

    Records (funnel_state.h keys; partition of the entity id; "global" =
    partition 0):
      l:<lead>     the lead: e n co ti ph (e-mail, name, company, title,
                   phone), c (campaign), .<attr> (typed n<num>/b1/b0/s<str>/
                   j<json>), st (stage letter + since), ct (created), f
                   (fit), ev/et (engagement and its reference ms), o (clock
                   lag), sc (last published score), tk (touch counts per
                   kind), fl (flags, s_flag), r (rep), dq (reason), dz
                   (decay crossing), h (the last history_max transitions),
                   sx (entries and ms spent per stage: running totals for
                   GET lead). Few fields, short names, base-36 times: about
                   400 B for a lead with six attrs (proto/leads.md)
      p:<contact>  touches before capture: ev, et, tk, c, fl; timer `pend`
                   drops it pending_ttl_s after the last touch
      em:<e-mail>  l = the lead owning the normalised address
      al:<id>      l = the lead an alias id belongs to
      global rep:<name>  open, cur, away, cap (run-time rep state)
      global tot:0       the counters GET reps shows
    Timers: `decay` per MQL/SQL lead (the ms its score falls below MQL),
    `pend` per pending contact.

    E-mail uniqueness is exact across partitions: the index record em:<e>
    lives in the e-mail's own partition, one instance owns every partition
    and applies events one at a time (a capture reads and writes the index
    in the same write-set as the lead, committed in one MULTI/EXEC), so two
    captures of one address, from any clients at once, are serialised: the
    second sees the first's index entry and becomes an alias. Reps are
    global data in partition 0 with the same single writer. With several
    instances the engine reads every record under WATCH and re-runs a
    batch whose records another instance changed meanwhile (proto/README.md
    section 7), which serialises them just the same.
*/
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "leads_stage.h"
#include "leads_rules.h"
#include "identity.h"
#include "lead_score.h"
#include "routing.h"
#include "funnel_log.h"
#include "msgpack_kv.h"

#define ALL         "0"
#define REPS_MAX    64
#define ICP_MAX     32
#define KINDS       10
#define ID_SIZE     (FUNNEL_ID_MAX + 1)

static const char *const s_kinds [KINDS] = {
    "impression", "open", "click", "visit", "like", "comment", "share", "follow", "reply", "form"
};

typedef struct {
    char name [ID_SIZE];
    char region [65];
    int64_t capacity;
    bool away;
} rep_cfg_t;

typedef struct {
    lead_score_rules_t rules;
    lead_icp_rule_t icp [ICP_MAX];
    char icp_text [ICP_MAX][3][256];            //  name, attr, values (owned text)
    const char *icp_values [ICP_MAX][64];
    char icp_values_text [ICP_MAX][64][128];
    double points [KINDS];
    double hl;                                  //  Half-life, ms
    int64_t pending_ttl_s, history_max;
    char fallback [ID_SIZE];
    rep_cfg_t reps [REPS_MAX];
    size_t nreps;
} ctx_t;

static ctx_t *
s_ctx (funnel_state_t *st)
{
    return (ctx_t *) funnel_state_arg (st);
}

//  --------------------------------------------------------------------
//  Helpers

static int
s_unavailable (funnel_error_t *err)
{
    return funnel_error_set (err, FUNNEL_ERR_UNAVAILABLE, "redis: unavailable");
}

static bool
s_is_nil (const msgpack_object *obj)
{
    return !obj || obj->type == MSGPACK_OBJECT_NIL;
}

static bool
s_str (const msgpack_object *map, const char *key, char *buf, size_t size)
{
    return event_codec_obj_strcpy (event_codec_map_get (map, key), buf, size);
}

//  A number as text: integers as %d, else %.17g (round-trips exactly)
static void
s_num2s (double x, char *out, size_t size)
{
    if (x == floor (x) && fabs (x) < 9007199254740992.0)
        snprintf (out, size, "%" PRId64, (int64_t) x);
    else
        snprintf (out, size, "%.17g", x);
}

static void
s_set_num (funnel_rec_t *rec, const char *field, double x)
{
    char text [40];
    s_num2s (x, text, sizeof text);
    funnel_rec_set_str (rec, field, text);
}

static double
s_fnum (funnel_rec_t *rec, const char *field, double dflt)
{
    const char *text = funnel_rec_str (rec, field);
    if (!text)
        return dflt;
    char *end;
    double x = strtod (text, &end);
    return end == text ? dflt : x;
}

//  Yes/no marks are letters of one field "fl" (fewer fields, a smaller
//  hash): a in the audience, m/s ever MQL/SQL, o open in its rep's load,
//  p pinned (qualified by hand)
static bool
s_flag (funnel_rec_t *rec, char flag)
{
    const char *v = funnel_rec_str (rec, "fl");
    return v && strchr (v, flag);
}

static void
s_flag_set (funnel_rec_t *rec, char flag, bool on)
{
    const char *v = funnel_rec_str (rec, "fl");
    if (s_flag (rec, flag) == on)
        return;
    char out [16];
    size_t n = 0;
    for (; v && *v && n < sizeof out - 2; v++)
        if (*v != flag)
            out [n++] = *v;
    if (on)
        out [n++] = flag;
    out [n] = 0;
    if (n)
        funnel_rec_set_str (rec, "fl", out);
    else
        funnel_rec_del (rec, "fl");
}

//  A counter, mirrored in tot:0 for the reports that show it
static void
s_count (funnel_state_t *st, const char *name, int64_t n)
{
    funnel_state_count (st, name, n);
    funnel_state_add_global (st, "tot", ALL, name, n);
}

//  A stage reached at event time t, whole funnel and the lead's campaign,
//  and its counter (mirrored in tot:0); a time that is not a whole ms
//  counts no series
static void
s_count_stage (funnel_state_t *st, const char *name, double t, const char *campaign)
{
    int64_t ms = t == floor (t) && t >= 0 && t <= 9007199254740992.0 ? (int64_t) t : -1;
    funnel_state_count_stage (st, name, ms, campaign, 1);
    funnel_state_add_global (st, "tot", ALL, name, 1);
}

//  --------------------------------------------------------------------
//  Stages

typedef enum { ST_NEW = -2, ST_DISQ = -1, ST_NURTURE = 0, ST_MQL = 1, ST_SQL = 2 } stage_t;

static const char *
s_stage_name (stage_t s)
{
    switch (s) {
        case ST_NURTURE: return "nurture";
        case ST_MQL: return "mql";
        case ST_SQL: return "sql";
        case ST_DISQ: return "disqualified";
        default: return "new";
    }
}

static char
s_stage_code (stage_t s)
{
    switch (s) {
        case ST_NURTURE: return 'N';
        case ST_MQL: return 'M';
        case ST_SQL: return 'S';
        case ST_DISQ: return 'D';
        default: return '-';
    }
}

static stage_t
s_stage_of_code (char c)
{
    switch (c) {
        case 'N': return ST_NURTURE;
        case 'M': return ST_MQL;
        case 'S': return ST_SQL;
        case 'D': return ST_DISQ;
        default: return ST_NEW;
    }
}

static stage_t
s_stage (funnel_rec_t *lead)
{
    const char *st = funnel_rec_str (lead, "st");
    return st ? s_stage_of_code (st [0]) : ST_NEW;
}

//  Ranked stages (nurture, mql, sql) take automatic moves
static bool
s_ranked (stage_t s)
{
    return s >= ST_NURTURE;
}

//  --------------------------------------------------------------------
//  Attrs: typed fields ".<name>"

typedef struct {
    funnel_rec_t *lead;
    char text [FUNNEL_STR_MAX + 1];
} attr_ctx_t;

static lead_attr_t
s_attr (void *arg, const char *name)
{
    attr_ctx_t *a = (attr_ctx_t *) arg;
    char field [128];
    snprintf (field, sizeof field, ".%s", name);
    const char *e = funnel_rec_str (a->lead, field);
    lead_attr_t v = { LEAD_ATTR_ABSENT, 0, false, NULL };
    if (!e)
        return v;
    if (e [0] == 'n') {
        v.type = LEAD_ATTR_NUM;
        v.num = strtod (e + 1, NULL);
    }
    else
    if (e [0] == 'b') {
        v.type = LEAD_ATTR_BOOL;
        v.flag = e [1] == '1';
    }
    else
    if (e [0] == 's') {
        v.type = LEAD_ATTR_STR;
        snprintf (a->text, sizeof a->text, "%s", e + 1);
        v.str = a->text;
    }
    else
        v.type = LEAD_ATTR_LIST;
    return v;
}

static void
s_pack_attr (msgpack_packer *pk, const char *e)
{
    if (e [0] == 'n')
        msgpack_kv_pack_number (pk, strtod (e + 1, NULL));
    else
    if (e [0] == 'b') {
        if (e [1] == '1')
            msgpack_pack_true (pk);
        else
            msgpack_pack_false (pk);
    }
    else
    if (e [0] == 's')
        event_codec_pack_cstr (pk, e + 1);
    else {
        json_t *list = json_loads (e + 1, 0, NULL);
        size_t n = json_is_array (list) ? json_array_size (list) : 0;
        msgpack_pack_array (pk, n);
        for (size_t i = 0; i < n; i++) {
            json_t *item = json_array_get (list, i);
            if (json_is_string (item))
                msgpack_pack_str_with_body (pk, json_string_value (item),
                                            json_string_length (item));
            else
                msgpack_pack_nil (pk);
        }
        json_decref (list);
    }
}

static double
s_fit (funnel_state_t *st, funnel_rec_t *lead, double *parts)
{
    attr_ctx_t a = { lead, "" };
    return lead_score_fit (s_attr, &a, s_flag (lead, 'a'), &s_ctx (st)->rules, parts);
}

static lead_score_sum_t
s_sum (funnel_rec_t *rec)
{
    return (lead_score_sum_t) { s_fnum (rec, "ev", 0), s_fnum (rec, "et", 0) };
}

//  The lead's clock: the wall clock less how far its last event lagged
static double
s_lead_now (funnel_state_t *st, funnel_rec_t *lead)
{
    return (double) funnel_state_now (st) - s_fnum (lead, "o", 0);
}

static double
s_engagement (funnel_state_t *st, funnel_rec_t *lead)
{
    return lead_score_at (s_sum (lead), s_lead_now (st, lead), s_ctx (st)->hl);
}

static void
s_refit (funnel_state_t *st, funnel_rec_t *lead)
{
    s_set_num (lead, "f", s_fit (st, lead, NULL));
}

//  --------------------------------------------------------------------
//  Identity

//  The lead an id stands for (aliases followed) into out; NULL if Redis
//  is unavailable.
static const char *
s_resolve (funnel_state_t *st, const char *id, char *out)
{
    funnel_rec_t *alias = funnel_state_rec (st, "al", id);
    if (!alias)
        return NULL;
    const char *owner = funnel_rec_str (alias, "l");
    snprintf (out, ID_SIZE, "%s", owner ? owner : id);
    return out;
}

//  The lead record, NULL if unavailable; *exists whether it was captured
static funnel_rec_t *
s_load (funnel_state_t *st, const char *id, bool *exists)
{
    funnel_rec_t *lead = funnel_state_rec (st, "l", id);
    *exists = lead && funnel_rec_has (lead, "st");
    return lead;
}

static int64_t
s_b36_parse (const char *p)
{
    int64_t n = 0;
    for (; p && *p; p++) {
        if (*p >= '0' && *p <= '9')
            n = n * 36 + (*p - '0');
        else
        if (*p >= 'a' && *p <= 'z')
            n = n * 36 + (*p - 'a' + 10);
        else
            break;
    }
    return n;
}

static void
s_b36_format (int64_t n, char *out)
{
    char tmp [16];
    int len = 0;
    if (n < 0)
        n = 0;
    do {
        tmp [len++] = "0123456789abcdefghijklmnopqrstuvwxyz" [n % 36];
        n /= 36;
    } while (n > 0);
    for (int i = 0; i < len; i++)
        out [i] = tmp [len - 1 - i];
    out [len] = 0;
}

//  --------------------------------------------------------------------
//  History: the last history_max lines "<at36><from><to><reason>", joined
//  by RS (0x1e); the four fixed reasons are one letter, others start '='

static const char *const s_reasons [][2] = {
    { "c", "captured" }, { "s", "score" }, { "d", "decayed" }, { "r", "recaptured" }
};

static void
s_history_add (funnel_state_t *st, funnel_rec_t *lead, int64_t at, stage_t from, stage_t to,
               const char *reason)
{
    ctx_t *ctx = s_ctx (st);
    const char *h = funnel_rec_str (lead, "h");
    if (!h)
        h = "";
    //  Keep the newest history_max - 1 old lines
    size_t lines = *h ? 1 : 0;
    for (const char *p = h; *p; p++)
        lines += *p == '\x1e';
    while (lines >= (size_t) ctx->history_max && *h) {
        const char *rs = strchr (h, '\x1e');
        h = rs ? rs + 1 : h + strlen (h);
        lines--;
    }
    char at36 [16];
    s_b36_format (at, at36);
    const char *code = NULL;
    for (size_t i = 0; i < sizeof s_reasons / sizeof s_reasons [0]; i++)
        if (streq (reason, s_reasons [i][1]))
            code = s_reasons [i][0];
    size_t size = strlen (h) + strlen (reason) + 40;
    char *text = malloc (size);
    snprintf (text, size, "%s%s%s%c%c%s%s", h, *h ? "\x1e" : "", at36, s_stage_code (from),
              s_stage_code (to), code ? code : "=", code ? "" : reason);
    funnel_rec_set_str (lead, "h", text);
    free (text);
}

//  Since when the lead is in its stage: "st" is "<stage code><ms in base 36>"
static int64_t
s_since (funnel_rec_t *lead, int64_t dflt)
{
    const char *st = funnel_rec_str (lead, "st");
    return st && st [0] && st [1] ? s_b36_parse (st + 1) : dflt;
}

//  Entries and ms spent per stage (nurture, mql, sql, disqualified), the
//  running totals GET lead reports: one field "sx", "n0,n1,n2,n3,d0,..."
//  in base 36
static int
s_stage_slot (stage_t s)
{
    return s == ST_DISQ ? 3 : (int) s;
}

static void
s_totals (funnel_rec_t *lead, int64_t n [4], int64_t d [4])
{
    const char *p = funnel_rec_str (lead, "sx");
    for (int i = 0; i < 8; i++) {
        int64_t v = p && *p && *p != ',' ? s_b36_parse (p) : 0;
        if (i < 4)
            n [i] = v;
        else
            d [i - 4] = v;
        while (p && *p && *p != ',')
            p++;
        if (p && *p == ',')
            p++;
    }
}

static void
s_totals_set (funnel_rec_t *lead, const int64_t n [4], const int64_t d [4])
{
    //  Zeros as "", trailing ones left out: "1,1,1" for three entries
    char text [8 * 16], *out = text;
    int last = 7;
    while (last > 0 && (last < 4 ? n [last] : d [last - 4]) == 0)
        last--;
    for (int i = 0; i <= last; i++) {
        int64_t v = i < 4 ? n [i] : d [i - 4];
        if (i)
            *out++ = ',';
        if (v)
            s_b36_format (v, out);
        else
            *out = 0;
        out += strlen (out);
    }
    funnel_rec_set_str (lead, "sx", text);
}

//  Every transition: the stage, its history line and totals, the gauges,
//  the event. seed: for timer-made moves, which have no cause event.
static void
s_move (funnel_state_t *st, const char *id, funnel_rec_t *lead, stage_t to,
        const char *reason, const char *seed)
{
    int64_t now = funnel_state_now (st);
    stage_t from = s_stage (lead);
    int64_t n [4], d [4];
    s_totals (lead, n, d);
    if (from != ST_NEW) {
        //  Time spent in the stage it leaves (a running total)
        int64_t since = s_since (lead, now);
        d [s_stage_slot (from)] += now - since > 0 ? now - since : 0;
    }
    n [s_stage_slot (to)]++;
    s_totals_set (lead, n, d);
    char code [20] = { s_stage_code (to) };
    s_b36_format (now, code + 1);
    funnel_rec_set_str (lead, "st", code);
    s_history_add (st, lead, now, from, to, reason);
    char name [32];
    if (from != ST_NEW) {
        snprintf (name, sizeof name, "in.%s", s_stage_name (from));
        s_count (st, name, -1);
    }
    snprintf (name, sizeof name, "in.%s", s_stage_name (to));
    s_count (st, name, 1);
    msgpack_packer *pk = funnel_state_data (st);
    msgpack_pack_map (pk, 4);
    msgpack_kv_put_str (pk, "lead", id);
    msgpack_kv_put_str (pk, "from", s_stage_name (from));
    msgpack_kv_put_str (pk, "to", s_stage_name (to));
    msgpack_kv_put_str (pk, "reason", reason);
    if (seed) {
        char key [256];
        snprintf (key, sizeof key, "%s:%s", seed, s_stage_name (to));
        funnel_state_emit (st, "lead.stage_changed", key);
    }
    else
        funnel_state_emit (st, "lead.stage_changed", NULL);
    //  A free-text reason (a disqualify reason, "manual by <who>") is
    //  erased with the person; the fixed words are not personal
    bool fixed = streq (reason, "manual");
    for (size_t i = 0; i < sizeof s_reasons / sizeof s_reasons [0]; i++)
        fixed |= streq (reason, s_reasons [i][1]);
    if (!fixed)
        funnel_state_personal (st, id);
}

//  --------------------------------------------------------------------
//  Reps

typedef struct {
    routing_rep_t r;
    funnel_rec_t *rec;
} rep_state_t;

static int
s_rep_config (ctx_t *ctx, const char *name)
{
    for (size_t i = 0; i < ctx->nreps; i++)
        if (streq (ctx->reps [i].name, name))
            return (int) i;
    return -1;
}

//  The run-time state of configured rep i; false if unavailable
static bool
s_rep_state (funnel_state_t *st, size_t i, rep_state_t *out)
{
    ctx_t *ctx = s_ctx (st);
    rep_cfg_t *cfg = &ctx->reps [i];
    funnel_rec_t *h = funnel_state_global (st, "rep", cfg->name);
    if (!h)
        return false;
    out->rec = h;
    out->r.name = cfg->name;
    out->r.region = cfg->region;
    out->r.away = cfg->away;
    const char *away = funnel_rec_str (h, "away");
    if (away)
        out->r.away = streq (away, "1");
    out->r.capacity = funnel_rec_has (h, "cap") ? (int64_t) s_fnum (h, "cap", 0) : cfg->capacity;
    out->r.open = funnel_rec_int (h, "open", 0);
    out->r.cur = funnel_rec_int (h, "cur", 0);
    out->r.pooled = false;
    return true;
}

static void
s_rep_count (funnel_state_t *st, const char *rep, const char *what, int64_t n)
{
    char name [128];
    snprintf (name, sizeof name, "rep.%s.%s", rep, what);
    s_count (st, name, n);
}

//  Picks the rep of an SQL lead and counts it in the rep's load. A lead
//  coming back to SQL keeps its previous rep while that rep has room.
static int
s_route (funnel_state_t *st, const char *id, funnel_rec_t *lead, char *name_out)
{
    (void) id;
    ctx_t *ctx = s_ctx (st);
    rep_state_t reps [REPS_MAX];
    routing_rep_t pick [REPS_MAX];
    int prev = -1;
    const char *prev_name = funnel_rec_str (lead, "r");
    for (size_t i = 0; i < ctx->nreps; i++) {
        if (!s_rep_state (st, i, &reps [i]))
            return -1;
        pick [i] = reps [i].r;
        if (prev_name && streq (reps [i].r.name, prev_name))
            prev = (int) i;
    }
    if (prev >= 0 && routing_sticky (&reps [prev].r))
        snprintf (name_out, ID_SIZE, "%s", reps [prev].r.name);
    else {
        attr_ctx_t a = { lead, "" };
        lead_attr_t region = s_attr (&a, "region");
        if (region.type == LEAD_ATTR_STR)
            for (char *c = a.text; *c; c++)
                if (*c >= 'A' && *c <= 'Z')
                    *c = (char) (*c + 32);
        int best = routing_pick (pick, ctx->nreps,
                                 region.type == LEAD_ATTR_STR ? a.text : NULL);
        for (size_t i = 0; i < ctx->nreps; i++)
            if (pick [i].pooled)
                funnel_rec_set_int (reps [i].rec, "cur", pick [i].cur);
        snprintf (name_out, ID_SIZE, "%s", best >= 0 ? pick [best].name : ctx->fallback);
    }
    funnel_rec_t *rec = funnel_state_global (st, "rep", name_out);
    if (!rec)
        return -1;
    funnel_rec_add (rec, "open", 1);
    s_rep_count (st, name_out, "open", 1);
    s_rep_count (st, name_out, "sql", 1);
    funnel_rec_set_str (lead, "r", name_out);
    s_flag_set (lead, 'o', true);
    return 0;
}

//  A lead leaving SQL no longer weighs on its rep (the rep is remembered)
static int
s_release (funnel_state_t *st, funnel_rec_t *lead)
{
    if (!s_flag (lead, 'o'))
        return 0;
    const char *rep = funnel_rec_str (lead, "r");
    funnel_rec_t *rec = rep ? funnel_state_global (st, "rep", rep) : NULL;
    if (!rec)
        return -1;
    funnel_rec_add (rec, "open", -1);
    s_rep_count (st, rep, "open", -1);
    s_flag_set (lead, 'o', false);
    return 0;
}

//  --------------------------------------------------------------------
//  Lifecycle

//  Stages are cumulative: reaching SQL passes MQL first. t: the time of
//  the event that promotes (series bucket; carried as `at`).
static int
s_promote (funnel_state_t *st, const char *id, funnel_rec_t *lead, stage_t target,
           const char *reason, double t)
{
    double s = lead_score_round (s_fnum (lead, "f", 0) + s_engagement (st, lead), 0);
    stage_t stage = s_stage (lead);
    if (stage == ST_NURTURE || stage == ST_DISQ) {
        s_move (st, id, lead, ST_MQL, reason, NULL);
        if (!s_flag (lead, 'm')) {
            s_flag_set (lead, 'm', true);
            s_count_stage (st, "mql", t, funnel_rec_str (lead, "c"));
        }
        msgpack_packer *pk = funnel_state_data (st);
        msgpack_pack_map (pk, 3);
        msgpack_kv_put_str (pk, "lead", id);
        msgpack_kv_put_number (pk, "score", s);
        msgpack_kv_put_number (pk, "at", t);
        funnel_state_emit (st, "lead.mql", NULL);
    }
    if (target == ST_SQL && s_stage (lead) == ST_MQL) {
        s_move (st, id, lead, ST_SQL, reason, NULL);
        if (!s_flag (lead, 's')) {
            s_flag_set (lead, 's', true);
            s_count_stage (st, "sql", t, funnel_rec_str (lead, "c"));
        }
        char rep [ID_SIZE];
        if (s_route (st, id, lead, rep))
            return -1;
        const char *cmp = funnel_rec_str (lead, "c");
        msgpack_packer *pk = funnel_state_data (st);
        msgpack_pack_map (pk, 4 + (cmp != NULL));
        msgpack_kv_put_str (pk, "lead", id);
        msgpack_kv_put_number (pk, "score", s);
        msgpack_kv_put_str (pk, "rep", rep);
        if (cmp)
            msgpack_kv_put_str (pk, "campaign", cmp);
        msgpack_kv_put_number (pk, "at", t);
        funnel_state_emit (st, "lead.sql", NULL);
    }
    return 0;
}

static int
s_recycle (funnel_state_t *st, const char *id, funnel_rec_t *lead, const char *reason,
           const char *seed)
{
    if (s_release (st, lead))
        return -1;
    s_move (st, id, lead, ST_NURTURE, reason, seed);
    s_count (st, "recycled", 1);
    return 0;
}

//  The decay timer: the first ms at which an MQL/SQL lead's score will be
//  below MQL (fit is constant between events, engagement only decays).
//  Manually qualified leads keep their stage until disqualified.
static void
s_schedule (funnel_state_t *st, const char *id, funnel_rec_t *lead)
{
    ctx_t *ctx = s_ctx (st);
    stage_t stage = s_stage (lead);
    double t;
    bool due = s_ranked (stage) && stage > ST_NURTURE && !s_flag (lead, 'p')
            && lead_score_crossing (s_sum (lead), ctx->rules.mql - s_fnum (lead, "f", 0),
                                    ctx->hl, &t);
    if (due) {
        double wall = t + s_fnum (lead, "o", 0);
        int64_t ms = (int64_t) ceil (wall);
        //  The timer looks at it on the next whole second (timers are
        //  due per second): decays_at stays the exact crossing
        funnel_state_timer (st, "decay", id, (ms + 999) / 1000 * 1000);
        funnel_rec_set_int (lead, "dz", ms);
    }
    else
    if (funnel_rec_has (lead, "dz")) {
        funnel_state_timer_cancel (st, "decay", id);
        funnel_rec_del (lead, "dz");
    }
}

//  Score at the event's time; lead.scored when the published score
//  changes; stage moves. t_event: the time of the event being handled.
static int
s_evaluate (funnel_state_t *st, const char *id, funnel_rec_t *lead, double t_event)
{
    ctx_t *ctx = s_ctx (st);
    double now = (double) funnel_state_now (st);
    double off = now - t_event > 0 ? now - t_event : 0;
    char text [40];
    s_num2s (off, text, sizeof text);
    const char *old_off = funnel_rec_str (lead, "o");
    if (!streq (text, old_off ? old_off : "0"))
        funnel_rec_set_str (lead, "o", text);
    double fit = s_fnum (lead, "f", 0);
    double eng = s_engagement (st, lead);
    double total = fit + eng;
    double s = lead_score_round (total, 0);
    double old = s_fnum (lead, "sc", 0);
    if (s != old) {
        s_set_num (lead, "sc", s);
        msgpack_packer *pk = funnel_state_data (st);
        msgpack_pack_map (pk, 5);
        msgpack_kv_put_str (pk, "lead", id);
        msgpack_kv_put_number (pk, "score", s);
        msgpack_kv_put_number (pk, "delta", s - old);
        msgpack_kv_put_number (pk, "fit", lead_score_round (fit, 2));
        msgpack_kv_put_number (pk, "engagement", lead_score_round (eng, 2));
        funnel_state_emit (st, "lead.scored", NULL);
    }
    stage_t stage = s_stage (lead);
    if (s_ranked (stage)) {
        stage_t target = (stage_t) lead_score_stage_for (total, fit, &ctx->rules);
        if (target > stage) {
            if (s_promote (st, id, lead, target, "score", t_event))
                return -1;
        }
        else
        if (stage > ST_NURTURE && target == ST_NURTURE && !s_flag (lead, 'p')) {
            if (s_recycle (st, id, lead, "score", NULL))
                return -1;
        }
    }
    s_schedule (st, id, lead);
    return 0;
}

//  --------------------------------------------------------------------
//  Engagement

static int
s_kind_index (const char *kind)
{
    for (int k = 0; k < KINDS; k++)
        if (streq (kind, s_kinds [k]))
            return k;
    return -1;
}

//  Touch counts per kind: one field "tk", the counts of the ten kinds (in
//  points/* order) and of other kinds, base 36, comma-separated, 0 as ""
#define TK_SLOTS (KINDS + 1)

static int64_t
s_tk (funnel_rec_t *rec, int64_t out [TK_SLOTS])
{
    const char *p = funnel_rec_str (rec, "tk");
    int64_t total = 0;
    for (int i = 0; i < TK_SLOTS; i++) {
        out [i] = p && *p && *p != ',' ? s_b36_parse (p) : 0;
        total += out [i];
        while (p && *p && *p != ',')
            p++;
        if (p && *p == ',')
            p++;
    }
    return total;
}

static void
s_tk_set (funnel_rec_t *rec, const int64_t counts [TK_SLOTS])
{
    char text [TK_SLOTS * 16], *out = text;
    int last = TK_SLOTS - 1;
    while (last > 0 && counts [last] == 0)
        last--;
    for (int i = 0; i <= last; i++) {
        if (i)
            *out++ = ',';
        if (counts [i])
            s_b36_format (counts [i], out);
        else
            *out = 0;
        out += strlen (out);
    }
    funnel_rec_set_str (rec, "tk", text);
}

//  One touch into a lead or a pending contact (same fields in both)
static void
s_touch (funnel_state_t *st, funnel_rec_t *rec, const funnel_event_t *ev, int kind, double t)
{
    ctx_t *ctx = s_ctx (st);
    lead_score_sum_t e = lead_score_add (s_sum (rec), kind >= 0 ? ctx->points [kind] : 0, t,
                                         ctx->hl);
    s_set_num (rec, "ev", e.v);
    s_set_num (rec, "et", e.t0);
    int64_t counts [TK_SLOTS];
    s_tk (rec, counts);
    counts [kind >= 0 ? kind : KINDS]++;
    s_tk_set (rec, counts);
    char campaign [FUNNEL_STR_MAX + 1];
    if (!funnel_rec_has (rec, "c") && s_str (ev->data, "campaign", campaign, sizeof campaign))
        funnel_rec_set_str (rec, "c", campaign);
    const msgpack_object *aud = event_codec_map_get (ev->data, "in_audience");
    if (aud && aud->type == MSGPACK_OBJECT_BOOLEAN && aud->via.boolean && !s_flag (rec, 'a'))
        s_flag_set (rec, 'a', true);
}

//  Touches a contact earned before its capture now count for the lead
static int
s_fold_pending (funnel_state_t *st, const char *contact, funnel_rec_t *lead)
{
    ctx_t *ctx = s_ctx (st);
    funnel_rec_t *p = funnel_state_rec (st, "p", contact);
    if (!p)
        return -1;
    if (!funnel_rec_has (p, "ev"))
        return 0;
    lead_score_sum_t e = lead_score_merge (s_sum (lead), s_sum (p), ctx->hl);
    s_set_num (lead, "ev", e.v);
    s_set_num (lead, "et", e.t0);
    int64_t mine [TK_SLOTS], theirs [TK_SLOTS];
    s_tk (lead, mine);
    int64_t nt = s_tk (p, theirs);
    for (int i = 0; i < TK_SLOTS; i++)
        mine [i] += theirs [i];
    if (nt > 0)
        s_tk_set (lead, mine);
    const char *cmp = funnel_rec_str (p, "c");
    if (cmp && !funnel_rec_has (lead, "c"))
        funnel_rec_set_str (lead, "c", cmp);
    if (s_flag (p, 'a'))
        s_flag_set (lead, 'a', true);
    zlist_t *fields = funnel_rec_fields (p);
    for (const char *f = zlist_first (fields); f; f = zlist_next (fields))
        funnel_rec_del (p, f);
    zlist_destroy (&fields);
    funnel_state_timer_cancel (st, "pend", contact);
    s_count (st, "touches_folded", nt);
    return 0;
}

static void
s_want_contact (funnel_state_t *st, const funnel_event_t *ev)
{
    char contact [ID_SIZE];
    if (s_str (ev->data, "contact", contact, sizeof contact)) {
        funnel_state_want (st, "al", contact);
        funnel_state_want (st, "l", contact);
        funnel_state_want (st, "p", contact);
    }
}

static int
s_on_touched (funnel_state_t *st, const funnel_event_t *ev, funnel_error_t *err)
{
    ctx_t *ctx = s_ctx (st);
    char contact [FUNNEL_STR_MAX + 1], kind_text [32] = "";
    if (!s_str (ev->data, "contact", contact, sizeof contact) || !*contact)
        return funnel_error_set (err, FUNNEL_ERR_INVALID, "data.contact: required string is missing");
    s_str (ev->data, "kind", kind_text, sizeof kind_text);
    int kind = s_kind_index (kind_text);
    //  The touch's own time (campaign's `at`), not when campaign applied it
    double t;
    if (!msgpack_kv_number (event_codec_map_get (ev->data, "at"), &t))
        t = (double) ev->ts;
    //  Campaign's contact ids are ids; anything else could name no record
    if (!event_codec_id_valid (contact, strlen (contact)))
        return funnel_error_set (err, FUNNEL_ERR_INVALID,
                                 "data.contact: must be 1-64 bytes of [A-Za-z0-9._:@+-]");
    char id [ID_SIZE];
    bool exists = false;
    if (!s_resolve (st, contact, id))
        return s_unavailable (err);
    funnel_rec_t *lead = s_load (st, id, &exists);
    if (!lead)
        return s_unavailable (err);
    if (!exists) {
        funnel_rec_t *p = funnel_state_rec (st, "p", contact);
        if (!p)
            return s_unavailable (err);
        s_touch (st, p, ev, kind, t);
        funnel_state_timer (st, "pend", contact,
                            funnel_state_now (st) + ctx->pending_ttl_s * 1000);
        funnel_state_count (st, "touches_pending", 1);
        return 0;
    }
    bool aud = s_flag (lead, 'a');
    s_touch (st, lead, ev, kind, t);
    funnel_state_count (st, "touches", 1);
    if (s_flag (lead, 'a') != aud)
        s_refit (st, lead);
    return s_evaluate (st, id, lead, t) ? s_unavailable (err) : 0;
}

//  Pending touches expire pending_ttl_s after the last one
static int
s_fire_pend (funnel_state_t *st, const char *id, int64_t due_ms, funnel_error_t *err)
{
    (void) due_ms;
    funnel_rec_t *p = funnel_state_rec (st, "p", id);
    if (!p)
        return s_unavailable (err);
    zlist_t *fields = funnel_rec_fields (p);
    for (const char *f = zlist_first (fields); f; f = zlist_next (fields))
        funnel_rec_del (p, f);
    zlist_destroy (&fields);
    return 0;
}

//  --------------------------------------------------------------------
//  Capture

typedef struct {
    char email [IDENTITY_MAX], phone [IDENTITY_MAX], name [IDENTITY_MAX];
    char company [IDENTITY_MAX], title [IDENTITY_MAX];
    bool has [5];
} identity_fields_t;

static const char *const s_profile [5] = { "email", "phone", "name", "company", "title" };
static const char *const s_profile_field [5] = { "e", "ph", "n", "co", "ti" };

static int
s_identity_fields (const funnel_event_t *ev, identity_fields_t *f, funnel_error_t *err)
{
    memset (f->has, 0, sizeof f->has);
    char raw [FUNNEL_STR_MAX + 1];
    char *out [5] = { f->email, f->phone, f->name, f->company, f->title };
    for (int i = 0; i < 5; i++) {
        if (!s_str (ev->data, s_profile [i], raw, sizeof raw))
            continue;
        bool ok = i == 0 ? identity_email (raw, out [i], IDENTITY_MAX)
                : i == 1 ? identity_phone (raw, out [i], IDENTITY_MAX)
                : identity_text (raw, out [i], IDENTITY_MAX);
        if (!ok)
            return funnel_error_set (err, FUNNEL_ERR_INVALID, "data.%s: %s", s_profile [i],
                                     i == 0 ? "must be name@domain.tld"
                                   : i == 1 ? "must hold at least 5 digits"
                                   : "must not be blank");
        f->has [i] = true;
    }
    return 0;
}

//  An attribute's stored encoding; false for kinds not kept (nested maps,
//  arrays not starting with a string). Caller frees *out.
static bool
s_attr_encode (const msgpack_object *v, char **out)
{
    char num [48];
    switch (v->type) {
        case MSGPACK_OBJECT_POSITIVE_INTEGER:
        case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        case MSGPACK_OBJECT_FLOAT32:
        case MSGPACK_OBJECT_FLOAT64: {
            double x = 0;
            msgpack_kv_number (v, &x);
            num [0] = 'n';
            s_num2s (x, num + 1, sizeof num - 1);
            *out = strdup (num);
            return true;
        }
        case MSGPACK_OBJECT_BOOLEAN:
            *out = strdup (v->via.boolean ? "b1" : "b0");
            return true;
        case MSGPACK_OBJECT_STR:
            *out = malloc (v->via.str.size + 2);
            (*out) [0] = 's';
            memcpy (*out + 1, v->via.str.ptr, v->via.str.size);
            (*out) [v->via.str.size + 1] = 0;
            return strlen (*out) == v->via.str.size + 1;     //  No NUL inside
        case MSGPACK_OBJECT_ARRAY: {
            if (v->via.array.size == 0 || v->via.array.ptr [0].type != MSGPACK_OBJECT_STR)
                return false;
            json_t *list = json_array ();
            for (uint32_t i = 0; i < v->via.array.size; i++) {
                const msgpack_object *item = &v->via.array.ptr [i];
                json_array_append_new (list, item->type == MSGPACK_OBJECT_STR
                    ? json_stringn (item->via.str.ptr, item->via.str.size) : json_null ());
            }
            char *text = json_dumps (list, JSON_COMPACT);
            json_decref (list);
            if (!text)
                return false;
            *out = malloc (strlen (text) + 2);
            (*out) [0] = 'j';
            strcpy (*out + 1, text);
            free (text);
            return true;
        }
        default:
            return false;
    }
}

static int
s_cmp_str (const void *a, const void *b)
{
    return strcmp (*(const char *const *) a, *(const char *const *) b);
}

static void
s_want_lead_field (funnel_state_t *st, const funnel_event_t *ev)
{
    char id [ID_SIZE];
    if (s_str (ev->data, "lead", id, sizeof id)) {
        funnel_state_want (st, "al", id);
        funnel_state_want (st, "l", id);
    }
}

static void
s_want_capture (funnel_state_t *st, const funnel_event_t *ev)
{
    s_want_lead_field (st, ev);
    char id [ID_SIZE];
    if (s_str (ev->data, "lead", id, sizeof id))
        funnel_state_want (st, "p", id);
    char raw [FUNNEL_STR_MAX + 1], email [IDENTITY_MAX];
    if (s_str (ev->data, "email", raw, sizeof raw) && identity_email (raw, email, sizeof email))
        funnel_state_want (st, "em", email);
}

static int
s_on_capture (funnel_state_t *st, const funnel_event_t *ev, funnel_error_t *err)
{
    identity_fields_t f;
    if (s_identity_fields (ev, &f, err))
        return -1;
    char given [ID_SIZE], id [ID_SIZE];
    s_str (ev->data, "lead", given, sizeof given);
    if (!s_resolve (st, given, id))
        return s_unavailable (err);
    bool exists;
    funnel_rec_t *lead = s_load (st, id, &exists);
    if (!lead)
        return s_unavailable (err);
    funnel_rec_t *index = NULL;
    if (f.has [0]) {
        index = funnel_state_rec (st, "em", f.email);
        if (!index)
            return s_unavailable (err);
        const char *owner = funnel_rec_str (index, "l");
        if (owner && !streq (owner, id)) {
            if (exists)
                return funnel_error_set (err, FUNNEL_ERR_CONFLICT,
                    "email: %s belongs to lead %s (one e-mail, one lead)", f.email, owner);
            //  A new id with a known e-mail is that lead: the id becomes an alias
            funnel_rec_t *alias = funnel_state_rec (st, "al", given);
            if (!alias)
                return s_unavailable (err);
            funnel_rec_set_str (alias, "l", owner);
            snprintf (id, sizeof id, "%s", owner);
            lead = s_load (st, id, &exists);
            if (!lead)
                return s_unavailable (err);
            //  The lead lists its aliases, so erasing it finds every entry
            char field [ID_SIZE + 1];
            snprintf (field, sizeof field, "~%s", given);
            funnel_rec_set_str (lead, field, "1");
            funnel_state_count (st, "aliased", 1);
            msgpack_packer *pk = funnel_state_data (st);
            msgpack_pack_map (pk, 2);
            msgpack_kv_put_str (pk, "lead", id);
            msgpack_kv_put_str (pk, "alias", given);
            funnel_state_emit (st, "lead.merged", NULL);
            funnel_state_personal (st, id);
        }
    }
    if (exists && s_flag (lead, 'x'))
        return funnel_error_set (err, FUNNEL_ERR_CONFLICT,
            "lead: %s was forgotten (lead.forget); capture the person under a new id", id);
    bool created = !exists;
    if (created)
    {
        char ct [16];
        s_b36_format (funnel_state_now (st), ct);
        funnel_rec_set_str (lead, "ct", ct);
    }
    else
        funnel_state_count (st, "merged", 1);
    const char *changed [64 + 5];
    char *owned [64];
    size_t nchanged = 0, nowned = 0;
    const char *values [5] = { f.email, f.phone, f.name, f.company, f.title };
    for (int i = 0; i < 5; i++) {
        const char *old = funnel_rec_str (lead, s_profile_field [i]);
        if (f.has [i] && (!old || !streq (old, values [i]))) {
            if (i == 0 && old) {
                //  The old address stays indexed: the lead lists it
                char field [IDENTITY_MAX + 1];
                snprintf (field, sizeof field, "@%s", old);
                funnel_rec_set_str (lead, field, "1");
            }
            funnel_rec_set_str (lead, s_profile_field [i], values [i]);
            if (!created)
                changed [nchanged++] = s_profile [i];
        }
    }
    if (f.has [0])
        funnel_rec_set_str (index, "l", id);
    char campaign [ID_SIZE];
    if (s_str (ev->data, "campaign", campaign, sizeof campaign) && !funnel_rec_has (lead, "c"))
        funnel_rec_set_str (lead, "c", campaign);
    const msgpack_object *attrs = event_codec_map_get (ev->data, "attrs");
    if (attrs && attrs->type == MSGPACK_OBJECT_MAP)
        for (uint32_t i = 0; i < attrs->via.map.size && nowned < 64; i++) {
            const msgpack_object_kv *kv = &attrs->via.map.ptr [i];
            if (kv->key.type != MSGPACK_OBJECT_STR || kv->key.via.str.size > 100)
                continue;
            char field [128];
            snprintf (field, sizeof field, ".%.*s", (int) kv->key.via.str.size,
                      kv->key.via.str.ptr);
            if (strlen (field) != kv->key.via.str.size + 1)
                continue;                               //  A NUL in the key
            char *e;
            if (!s_attr_encode (&kv->val, &e)) {
                continue;
            }
            const char *old = funnel_rec_str (lead, field);
            if (strlen (e) > 0 && (!old || !streq (old, e))) {
                funnel_rec_set_str (lead, field, e);
                if (!created) {
                    char *name = malloc (strlen (field) + 6);
                    sprintf (name, "attrs.%s", field + 1);
                    owned [nowned++] = name;
                    changed [nchanged++] = name;
                }
            }
            free (e);
        }
    if (s_fold_pending (st, given, lead)) {
        for (size_t i = 0; i < nowned; i++)
            free (owned [i]);
        return s_unavailable (err);
    }
    //  Counted once its campaign is known (the capture's, else a pending touch's)
    if (created)
        s_count_stage (st, "leads", (double) ev->ts, funnel_rec_str (lead, "c"));
    s_refit (st, lead);
    int rc = 0;
    if (created) {
        const char *cmp = funnel_rec_str (lead, "c");
        const char *email = funnel_rec_str (lead, "e");
        const char *company = funnel_rec_str (lead, "co");
        const char *region = funnel_rec_str (lead, ".region");
        msgpack_packer *pk = funnel_state_data (st);
        msgpack_pack_map (pk, 1 + (cmp != NULL) + (email != NULL) + (company != NULL)
                              + (region != NULL));
        msgpack_kv_put_str (pk, "lead", id);
        if (cmp)
            msgpack_kv_put_str (pk, "campaign", cmp);
        if (email)
            msgpack_kv_put_str (pk, "email", email);
        if (company)
            msgpack_kv_put_str (pk, "company", company);
        if (region) {
            event_codec_pack_cstr (pk, "region");
            s_pack_attr (pk, region);
        }
        funnel_state_emit (st, "lead.captured", NULL);
        funnel_state_personal (st, id);
        s_move (st, id, lead, ST_NURTURE, "captured", NULL);
    }
    else {
        if (nchanged > 0) {
            qsort (changed, nchanged, sizeof changed [0], s_cmp_str);
            msgpack_packer *pk = funnel_state_data (st);
            msgpack_pack_map (pk, 2);
            msgpack_kv_put_str (pk, "lead", id);
            event_codec_pack_cstr (pk, "fields");
            msgpack_pack_array (pk, nchanged);
            for (size_t i = 0; i < nchanged; i++)
                event_codec_pack_cstr (pk, changed [i]);
            funnel_state_emit (st, "lead.updated", NULL);
        }
        if (s_stage (lead) == ST_DISQ) {
            funnel_rec_del (lead, "dq");
            s_move (st, id, lead, ST_NURTURE, "recaptured", NULL);
        }
    }
    for (size_t i = 0; i < nowned; i++)
        free (owned [i]);
    if (rc == 0 && s_evaluate (st, id, lead, (double) ev->ts))
        rc = s_unavailable (err);
    return rc;
}

//  --------------------------------------------------------------------
//  Manual qualification, reps

static funnel_rec_t *
s_need_lead (funnel_state_t *st, const funnel_event_t *ev, char *id, funnel_error_t *err)
{
    char given [ID_SIZE];
    s_str (ev->data, "lead", given, sizeof given);
    if (!s_resolve (st, given, id)) {
        s_unavailable (err);
        return NULL;
    }
    bool exists;
    funnel_rec_t *lead = s_load (st, id, &exists);
    if (!lead)
        s_unavailable (err);
    else
    if (!exists) {
        funnel_error_set (err, FUNNEL_ERR_NOT_FOUND, "lead: no lead %s", given);
        return NULL;
    }
    return lead;
}

//  A forgotten lead takes no command that would store personal data on it
//  again (a reason, "manual by <who>"): the erase could not reach that
//  data, since forgetting twice is a no-op (proto/privacy.md)
static funnel_rec_t *
s_need_live_lead (funnel_state_t *st, const funnel_event_t *ev, char *id, funnel_error_t *err)
{
    funnel_rec_t *lead = s_need_lead (st, ev, id, err);
    if (lead && s_flag (lead, 'x')) {
        funnel_error_set (err, FUNNEL_ERR_CONFLICT,
                          "lead: %s was forgotten (lead.forget); it takes no more commands", id);
        return NULL;
    }
    return lead;
}

static int
s_on_qualify (funnel_state_t *st, const funnel_event_t *ev, funnel_error_t *err)
{
    char id [ID_SIZE], stage_text [16] = "", by [FUNNEL_STR_MAX + 1];
    funnel_rec_t *lead = s_need_live_lead (st, ev, id, err);
    if (!lead)
        return -1;
    s_str (ev->data, "stage", stage_text, sizeof stage_text);
    stage_t target = streq (stage_text, "sql") ? ST_SQL : ST_MQL;
    stage_t stage = s_stage (lead);
    if (s_ranked (stage) && stage >= target)
        return funnel_error_set (err, FUNNEL_ERR_CONFLICT, "stage: lead %s is already %s", id,
                                 s_stage_name (stage));
    s_flag_set (lead, 'p', true);
    funnel_rec_del (lead, "dq");
    char reason [FUNNEL_STR_MAX + 16] = "manual";
    if (s_str (ev->data, "by", by, sizeof by))
        snprintf (reason, sizeof reason, "manual by %s", by);
    if (s_promote (st, id, lead, target, reason, (double) ev->ts))
        return s_unavailable (err);
    s_schedule (st, id, lead);
    funnel_state_count (st, "qualified_manually", 1);
    return 0;
}

static int
s_on_disqualify (funnel_state_t *st, const funnel_event_t *ev, funnel_error_t *err)
{
    char id [ID_SIZE], reason [FUNNEL_STR_MAX + 1] = "";
    funnel_rec_t *lead = s_need_live_lead (st, ev, id, err);
    if (!lead)
        return -1;
    if (s_stage (lead) == ST_DISQ)
        return funnel_error_set (err, FUNNEL_ERR_CONFLICT,
                                 "stage: lead %s is already disqualified", id);
    s_str (ev->data, "reason", reason, sizeof reason);
    if (s_release (st, lead))
        return s_unavailable (err);
    funnel_rec_set_str (lead, "dq", reason);
    s_flag_set (lead, 'p', false);
    s_move (st, id, lead, ST_DISQ, reason, NULL);
    s_count (st, "disqualified", 1);
    msgpack_packer *pk = funnel_state_data (st);
    msgpack_pack_map (pk, 2);
    msgpack_kv_put_str (pk, "lead", id);
    msgpack_kv_put_str (pk, "reason", reason);
    funnel_state_emit (st, "lead.disqualified", NULL);
    funnel_state_personal (st, id);
    s_schedule (st, id, lead);
    return 0;
}

static int
s_on_rep_update (funnel_state_t *st, const funnel_event_t *ev, funnel_error_t *err)
{
    ctx_t *ctx = s_ctx (st);
    const msgpack_object *away = event_codec_map_get (ev->data, "away");
    const msgpack_object *cap = event_codec_map_get (ev->data, "capacity");
    if (s_is_nil (away) && s_is_nil (cap))
        return funnel_error_set (err, FUNNEL_ERR_INVALID,
                                 "data.away: rep.update needs away or capacity (or both)");
    char name [ID_SIZE];
    s_str (ev->data, "rep", name, sizeof name);
    int i = s_rep_config (ctx, name);
    if (i < 0)
        return funnel_error_set (err, FUNNEL_ERR_NOT_FOUND,
                                 "rep: no rep %s in the leads/reps settings", name);
    funnel_rec_t *rec = funnel_state_global (st, "rep", name);
    if (!rec)
        return s_unavailable (err);
    if (!s_is_nil (away))
        funnel_rec_set_int (rec, "away", away->type == MSGPACK_OBJECT_BOOLEAN && away->via.boolean);
    double capacity;
    if (msgpack_kv_number (cap, &capacity))
        s_set_num (rec, "cap", capacity);
    rep_state_t s;
    if (!s_rep_state (st, (size_t) i, &s))
        return s_unavailable (err);
    msgpack_packer *pk = funnel_state_data (st);
    msgpack_pack_map (pk, 4);
    msgpack_kv_put_str (pk, "rep", name);
    msgpack_kv_put_bool (pk, "away", s.r.away);
    msgpack_kv_put_number (pk, "capacity", (double) s.r.capacity);
    msgpack_kv_put_number (pk, "open", (double) s.r.open);
    funnel_state_emit (st, "rep.updated", NULL);
    return 0;
}

//  --------------------------------------------------------------------
//  Privacy (proto/privacy.md): erase a lead's personal data, keep what
//  the counts need (stage, scores, times, rep, campaign, numeric attrs)

//  An identity index entry a lead lists: its current e-mail as is, an
//  earlier one as "@<e-mail>", an alias as "~<alias>". The key of its
//  record, and its kind in *kind ("em" or "al").
static const char *
s_index_ref (const char *entry, const char **kind)
{
    *kind = entry [0] == '~' ? "al" : "em";
    return entry [0] == '~' || entry [0] == '@' ? entry + 1 : entry;
}

//  A lead field that holds personal data: profile, identity index entries
//  it lists (@old e-mail, ~alias), free text (string and list attrs, the
//  disqualify reason)
static bool
s_personal_field (funnel_rec_t *lead, const char *f)
{
    if (f [0] == '@' || f [0] == '~')
        return true;
    if (f [0] == '.') {
        const char *v = funnel_rec_str (lead, f);
        return v && (v [0] == 's' || v [0] == 'j');
    }
    for (int i = 0; i < 5; i++)
        if (streq (f, s_profile_field [i]))
            return true;
    return streq (f, "dq");
}

//  Removes an index entry (em:<e-mail>, al:<alias>) if it names the lead;
//  -1 if unavailable
static int
s_unindex (funnel_state_t *st, const char *kind, const char *key, const char *id)
{
    funnel_rec_t *rec = funnel_state_rec (st, kind, key);
    if (!rec)
        return -1;
    const char *owner = funnel_rec_str (rec, "l");
    if (owner && streq (owner, id))
        funnel_rec_del (rec, "l");
    return 0;
}

//  History lines keep their time and stages; a free-text reason (a
//  disqualify reason, "manual by <who>") becomes "redacted"
static void
s_history_redact (funnel_rec_t *lead)
{
    const char *h = funnel_rec_str (lead, "h");
    if (!h || !strchr (h, '='))
        return;
    zchunk_t *out = zchunk_new (NULL, strlen (h) + 1);
    for (const char *p = h; *p; ) {
        const char *end = strchr (p, '\x1e');
        if (!end)
            end = p + strlen (p);
        const char *q = p;
        while (q < end && ((*q >= '0' && *q <= '9') || (*q >= 'a' && *q <= 'z')))
            q++;
        const char *reason = q + 2 <= end ? q + 2 : end;
        if (reason < end && *reason == '=') {
            zchunk_extend (out, p, (size_t) (reason - p));
            zchunk_extend (out, "=redacted", 9);
        }
        else
            zchunk_extend (out, p, (size_t) (end - p));
        if (*end)
            zchunk_extend (out, "\x1e", 1);
        p = *end ? end + 1 : end;
    }
    zchunk_extend (out, "", 1);
    funnel_rec_set_str (lead, "h", (const char *) zchunk_data (out));
    zchunk_destroy (&out);
}

static int
s_on_forget (funnel_state_t *st, const funnel_event_t *ev, funnel_error_t *err)
{
    char id [ID_SIZE];
    funnel_rec_t *lead = s_need_lead (st, ev, id, err);
    if (!lead)
        return -1;
    if (s_flag (lead, 'x'))
        return 0;                   //  Forgetting twice is a no-op
    zlist_t *fields = funnel_rec_fields (lead);
    int rc = 0;
    for (const char *f = zlist_first (fields); f && rc == 0; f = zlist_next (fields)) {
        const char *entry = streq (f, "e") ? funnel_rec_str (lead, "e")
                          : f [0] == '@' || f [0] == '~' ? f : NULL;
        if (entry) {
            const char *kind, *key = s_index_ref (entry, &kind);
            rc = s_unindex (st, kind, key, id);
        }
        if (rc == 0 && s_personal_field (lead, f))
            funnel_rec_del (lead, f);
    }
    zlist_destroy (&fields);
    if (rc != 0)
        return s_unavailable (err);
    s_history_redact (lead);
    s_flag_set (lead, 'x', true);
    char at [16];
    s_b36_format (funnel_state_now (st), at);
    funnel_rec_set_str (lead, "fg", at);
    funnel_state_count (st, "forgotten", 1);
    msgpack_packer *pk = funnel_state_data (st);
    msgpack_pack_map (pk, 1);
    msgpack_kv_put_str (pk, "lead", id);
    funnel_state_emit (st, "lead.forgotten", NULL);
    return funnel_state_forget_outputs (st, id) ? s_unavailable (err) : 0;
}

//  --------------------------------------------------------------------
//  The decay timer: a lead whose decayed engagement has just taken it
//  below MQL goes back to nurture; others are rescheduled

static int
s_fire_decay (funnel_state_t *st, const char *id, int64_t due_ms, funnel_error_t *err)
{
    ctx_t *ctx = s_ctx (st);
    bool exists;
    funnel_rec_t *lead = s_load (st, id, &exists);
    if (!lead)
        return s_unavailable (err);
    if (!exists)
        return 0;
    //  The engine removed the timer; the event id names the crossing ms
    int64_t crossing = funnel_rec_int (lead, "dz", due_ms);
    funnel_rec_del (lead, "dz");
    stage_t stage = s_stage (lead);
    if (s_ranked (stage) && stage > ST_NURTURE && !s_flag (lead, 'p')
    &&  s_fnum (lead, "f", 0) + s_engagement (st, lead) < ctx->rules.mql) {
        char seed [128];
        snprintf (seed, sizeof seed, "decay:%s:%" PRId64, id, crossing);
        if (s_recycle (st, id, lead, "decayed", seed))
            return s_unavailable (err);
    }
    s_schedule (st, id, lead);
    return 0;
}

//  --------------------------------------------------------------------
//  Queries

static int
s_get_lead (funnel_state_t *st, const msgpack_object *req, msgpack_packer *pk,
            funnel_error_t *err)
{
    ctx_t *ctx = s_ctx (st);
    char given [FUNNEL_STR_MAX + 1], id [ID_SIZE];
    if (!event_codec_obj_strcpy (event_codec_map_get (req, "id"), given, sizeof given))
        return funnel_error_set (err, FUNNEL_ERR_INVALID, "id: required string is missing");
    bool exists = false;
    funnel_rec_t *lead = NULL;
    if (strlen (given) < ID_SIZE && *given) {
        if (!s_resolve (st, given, id))
            return s_unavailable (err);
        lead = s_load (st, id, &exists);
        if (!lead)
            return s_unavailable (err);
    }
    if (!exists)
        return funnel_error_set (err, FUNNEL_ERR_NOT_FOUND, "id: no lead %s", given);
    double parts [LEAD_FIT_PARTS + ICP_MAX];
    double fit = s_fit (st, lead, parts);
    double eng = s_engagement (st, lead);
    int64_t now = funnel_state_now (st);
    zlist_t *fields = funnel_rec_fields (lead);
    size_t nattrs = 0, ntouches = 0;
    for (const char *f = zlist_first (fields); f; f = zlist_next (fields))
        nattrs += f [0] == '.';
    int64_t counts [TK_SLOTS];
    int64_t total_touches = s_tk (lead, counts);
    for (int i = 0; i < TK_SLOTS; i++)
        ntouches += counts [i] > 0;
    const char *profile [6][2] = {
        { "email", "e" }, { "name", "n" }, { "company", "co" }, { "title", "ti" },
        { "phone", "ph" }, { "campaign", "c" }
    };
    size_t nprofile = 0;
    for (int i = 0; i < 6; i++)
        nprofile += funnel_rec_has (lead, profile [i][1]);
    bool alias = !streq (given, id);
    const char *rep = funnel_rec_str (lead, "r");
    const char *dq = funnel_rec_str (lead, "dq");
    bool decays = funnel_rec_has (lead, "dz");
    bool forgotten = s_flag (lead, 'x');
    size_t entries = 12 + alias + (nprofile > 0) + (nattrs > 0) + (rep != NULL) + (dq != NULL)
                   + decays + forgotten;
    msgpack_pack_map (pk, entries);
    msgpack_kv_put_str (pk, "lead", id);
    if (alias)
        msgpack_kv_put_str (pk, "alias_of", given);
    stage_t stage = s_stage (lead);
    msgpack_kv_put_str (pk, "stage", s_stage_name (stage));
    msgpack_kv_put_number (pk, "since", (double) s_since (lead, 0));
    msgpack_kv_put_number (pk, "created", (double) s_b36_parse (funnel_rec_str (lead, "ct")));
    msgpack_kv_put_number (pk, "score", lead_score_round (fit + eng, 0));
    if (nprofile > 0) {
        event_codec_pack_cstr (pk, "profile");
        msgpack_pack_map (pk, nprofile);
        for (int i = 0; i < 6; i++)
            if (funnel_rec_has (lead, profile [i][1]))
                msgpack_kv_put_str (pk, profile [i][0], funnel_rec_str (lead, profile [i][1]));
    }
    if (nattrs > 0) {
        event_codec_pack_cstr (pk, "attrs");
        msgpack_pack_map (pk, nattrs);
        for (const char *f = zlist_first (fields); f; f = zlist_next (fields))
            if (f [0] == '.') {
                event_codec_pack_cstr (pk, f + 1);
                s_pack_attr (pk, funnel_rec_str (lead, f));
            }
    }
    event_codec_pack_cstr (pk, "fit");
    msgpack_pack_map (pk, 2);
    msgpack_kv_put_number (pk, "total", fit);
    event_codec_pack_cstr (pk, "parts");
    msgpack_pack_map (pk, LEAD_FIT_PARTS + ctx->rules.nicp);
    for (int i = 0; i < LEAD_FIT_PARTS; i++)
        msgpack_kv_put_number (pk, lead_fit_part_names [i], parts [i]);
    for (size_t i = 0; i < ctx->rules.nicp; i++) {
        char name [300];
        snprintf (name, sizeof name, "icp.%s", ctx->rules.icp [i].name);
        msgpack_kv_put_number (pk, name, parts [LEAD_FIT_PARTS + i]);
    }
    event_codec_pack_cstr (pk, "engagement");
    msgpack_pack_map (pk, 4 + (ntouches > 0));
    msgpack_kv_put_number (pk, "value", lead_score_round (eng, 3));
    if (ntouches > 0) {
        event_codec_pack_cstr (pk, "touches");
        msgpack_pack_map (pk, ntouches);
        for (int i = 0; i < TK_SLOTS; i++)
            if (counts [i] > 0)
                msgpack_kv_put_number (pk, i < KINDS ? s_kinds [i] : "other", (double) counts [i]);
    }
    msgpack_kv_put_number (pk, "total_touches", (double) total_touches);
    msgpack_kv_put_bool (pk, "in_audience", s_flag (lead, 'a'));
    msgpack_kv_put_number (pk, "half_life_s", ctx->hl / 1000);
    zlist_destroy (&fields);
    //  History: the last history_max lines
    event_codec_pack_cstr (pk, "history");
    const char *h = funnel_rec_str (lead, "h");
    size_t lines = h && *h ? 1 : 0;
    for (const char *p = h; p && *p; p++)
        lines += *p == '\x1e';
    msgpack_pack_array (pk, lines);
    for (const char *p = h; p && *p; ) {
        const char *end = strchr (p, '\x1e');
        if (!end)
            end = p + strlen (p);
        int64_t at = 0;
        const char *q = p;
        while (q < end && ((*q >= '0' && *q <= '9') || (*q >= 'a' && *q <= 'z'))) {
            at = at * 36 + (*q <= '9' ? *q - '0' : *q - 'a' + 10);
            q++;
        }
        stage_t from = q < end ? s_stage_of_code (q [0]) : ST_NEW;
        stage_t to = q + 1 < end ? s_stage_of_code (q [1]) : ST_NEW;
        const char *r = q + 2 <= end ? q + 2 : end;
        msgpack_pack_map (pk, 4);
        msgpack_kv_put_number (pk, "at", (double) at);
        msgpack_kv_put_str (pk, "from", s_stage_name (from));
        msgpack_kv_put_str (pk, "to", s_stage_name (to));
        event_codec_pack_cstr (pk, "reason");
        if (r < end && *r == '=')
            msgpack_pack_str_with_body (pk, r + 1, (size_t) (end - r - 1));
        else {
            const char *full = "";
            for (size_t i = 0; i < sizeof s_reasons / sizeof s_reasons [0]; i++)
                if (r < end && *r == s_reasons [i][0][0])
                    full = s_reasons [i][1];
            event_codec_pack_cstr (pk, full);
        }
        p = *end ? end + 1 : end;
    }
    //  Time in stage and entries: running totals plus the open interval
    stage_t all [4] = { ST_NURTURE, ST_MQL, ST_SQL, ST_DISQ };
    int64_t n [4], d [4];
    s_totals (lead, n, d);
    size_t entered = 0;
    for (int i = 0; i < 4; i++)
        entered += n [i] > 0;
    event_codec_pack_cstr (pk, "time_in_stage");
    msgpack_pack_map (pk, entered);
    for (int i = 0; i < 4; i++) {
        if (n [i] == 0)
            continue;
        int64_t spent = d [i];
        if (all [i] == stage) {
            int64_t open = now - s_since (lead, now);
            spent += open > 0 ? open : 0;
        }
        msgpack_kv_put_number (pk, s_stage_name (all [i]), (double) spent);
    }
    event_codec_pack_cstr (pk, "entries");
    msgpack_pack_map (pk, entered);
    for (int i = 0; i < 4; i++)
        if (n [i] > 0)
            msgpack_kv_put_number (pk, s_stage_name (all [i]), (double) n [i]);
    if (rep)
        msgpack_kv_put_str (pk, "rep", rep);
    msgpack_kv_put_bool (pk, "rep_open", s_flag (lead, 'o'));
    msgpack_kv_put_bool (pk, "manual", s_flag (lead, 'p'));
    if (dq)
        msgpack_kv_put_str (pk, "disqualified_reason", dq);
    if (decays)
        msgpack_kv_put_number (pk, "decays_at", s_fnum (lead, "dz", 0));
    if (forgotten)
        msgpack_kv_put_number (pk, "forgotten",
                               (double) s_b36_parse (funnel_rec_str (lead, "fg")));
    return 0;
}

//  GET export: every record leads holds on the person, as stored, plus
//  the lead as GET lead shows it (proto/privacy.md)
static int
s_get_export (funnel_state_t *st, const msgpack_object *req, msgpack_packer *pk,
              funnel_error_t *err)
{
    char given [ID_SIZE], id [ID_SIZE];
    if (funnel_privacy_export_lead (req, given, err))
        return -1;
    if (!s_resolve (st, given, id))
        return s_unavailable (err);
    bool exists;
    funnel_rec_t *lead = s_load (st, id, &exists);
    funnel_rec_t *pending = funnel_state_rec (st, "p", id);
    if (!lead || !pending)
        return s_unavailable (err);
    if (!exists)
        return funnel_error_set (err, FUNNEL_ERR_NOT_FOUND, "lead: no lead %s", given);
    //  Load the index entries first: a failure must not leave half a reply
    zlist_t *fields = funnel_rec_fields (lead);
    zlist_t *index = zlist_new ();
    zlist_autofree (index);
    const char *e = funnel_rec_str (lead, "e");
    if (e)
        zlist_append (index, (void *) e);
    for (const char *f = zlist_first (fields); f; f = zlist_next (fields))
        if (f [0] == '@' || f [0] == '~')
            zlist_append (index, (void *) f);
    zlist_destroy (&fields);
    int rc = 0;
    for (const char *k = zlist_first (index); k && rc == 0; k = zlist_next (index)) {
        const char *kind, *key = s_index_ref (k, &kind);
        if (!funnel_state_rec (st, kind, key))
            rc = -1;
    }
    //  The outbox entries that carry the person's data, by seq (REPLAY them)
    zlist_t *outbox = rc == 0 ? funnel_state_person_outputs (st, id) : NULL;
    if (!outbox) {
        zlist_destroy (&index);
        return s_unavailable (err);
    }
    msgpack_pack_map (pk, 5);
    msgpack_kv_put_str (pk, "lead", id);
    msgpack_kv_put_bool (pk, "forgotten", s_flag (lead, 'x'));
    event_codec_pack_cstr (pk, "records");
    msgpack_pack_map (pk, 1 + zlist_size (index) + funnel_rec_exists (pending));
    funnel_rec_pack_entry (lead, pk, "l", id);
    if (funnel_rec_exists (pending))
        funnel_rec_pack_entry (pending, pk, "p", id);
    for (const char *k = zlist_first (index); k; k = zlist_next (index)) {
        const char *kind, *key = s_index_ref (k, &kind);
        funnel_rec_pack_entry (funnel_state_rec (st, kind, key), pk, kind, key);
    }
    zlist_destroy (&index);
    event_codec_pack_cstr (pk, "outbox");
    funnel_state_pack_seqs (outbox, pk);
    zlist_destroy (&outbox);
    event_codec_pack_cstr (pk, "view");
    funnel_query_pack_by_id (st, s_get_lead, id, pk);
    return 0;
}

static int
s_pack_rep (funnel_state_t *st, size_t i, msgpack_packer *pk)
{
    rep_state_t s;
    funnel_rec_t *tot = funnel_state_global (st, "tot", ALL);
    if (!tot || !s_rep_state (st, i, &s))
        return -1;
    char name [128];
    snprintf (name, sizeof name, "rep.%s.sql", s.r.name);
    msgpack_pack_map (pk, 6);
    msgpack_kv_put_str (pk, "name", s.r.name);
    msgpack_kv_put_str (pk, "region", s.r.region);
    msgpack_kv_put_number (pk, "capacity", (double) s.r.capacity);
    msgpack_kv_put_bool (pk, "away", s.r.away);
    msgpack_kv_put_number (pk, "open", (double) s.r.open);
    msgpack_kv_put_number (pk, "sql", (double) funnel_rec_int (tot, name, 0));
    return 0;
}

static int
s_get_rep (funnel_state_t *st, const msgpack_object *req, msgpack_packer *pk,
           funnel_error_t *err)
{
    char id [FUNNEL_STR_MAX + 1];
    if (!event_codec_obj_strcpy (event_codec_map_get (req, "id"), id, sizeof id))
        return funnel_error_set (err, FUNNEL_ERR_INVALID, "id: required string is missing");
    int i = s_rep_config (s_ctx (st), id);
    if (i < 0)
        return funnel_error_set (err, FUNNEL_ERR_NOT_FOUND, "id: no rep %s", id);
    return s_pack_rep (st, (size_t) i, pk) ? s_unavailable (err) : 0;
}

static int
s_get_reps (funnel_state_t *st, const msgpack_object *req, msgpack_packer *pk,
            funnel_error_t *err)
{
    (void) req;
    ctx_t *ctx = s_ctx (st);
    funnel_rec_t *tot = funnel_state_global (st, "tot", ALL);
    if (!tot)
        return s_unavailable (err);
    //  Load every rep first: a failure must not leave a half-packed reply
    rep_state_t s;
    for (size_t i = 0; i < ctx->nreps; i++)
        if (!s_rep_state (st, i, &s))
            return s_unavailable (err);
    msgpack_pack_map (pk, 6);
    event_codec_pack_cstr (pk, "reps");
    msgpack_pack_array (pk, ctx->nreps);
    for (size_t i = 0; i < ctx->nreps; i++)
        s_pack_rep (st, i, pk);
    const char *names [] = { "leads", "mql", "sql", "disqualified" };
    for (int i = 0; i < 4; i++)
        msgpack_kv_put_number (pk, names [i], (double) funnel_rec_int (tot, names [i], 0));
    event_codec_pack_cstr (pk, "now");
    msgpack_pack_map (pk, 4);
    const char *stages [] = { "nurture", "mql", "sql", "disqualified" };
    for (int i = 0; i < 4; i++) {
        char name [32];
        snprintf (name, sizeof name, "in.%s", stages [i]);
        msgpack_kv_put_number (pk, stages [i], (double) funnel_rec_int (tot, name, 0));
    }
    return 0;
}

//  --------------------------------------------------------------------
//  Settings: leads_pack_rules checks them and packs RULES; read it back

static const msgpack_object *
s_get (const msgpack_object *map, const char *key)
{
    return event_codec_map_get (map, key);
}

static double
s_getnum (const msgpack_object *map, const char *key, double dflt)
{
    double x;
    return msgpack_kv_number (s_get (map, key), &x) ? x : dflt;
}

static void
s_copy (const msgpack_object *obj, char *out, size_t size)
{
    if (!event_codec_obj_strcpy (obj, out, size))
        out [0] = 0;
}

static int
s_setup (funnel_config_t *config, const char *section, void **arg)
{
    (void) section;
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init (&sbuf);
    msgpack_packer pk;
    msgpack_packer_init (&pk, &sbuf, msgpack_sbuffer_write);
    if (leads_pack_rules (config, &pk)) {
        msgpack_sbuffer_destroy (&sbuf);
        return -1;
    }
    msgpack_unpacked up;
    msgpack_unpacked_init (&up);
    ctx_t *ctx = (ctx_t *) calloc (1, sizeof (ctx_t));
    int rc = -1;
    if (!ctx || msgpack_unpack_next (&up, sbuf.data, sbuf.size, NULL) != MSGPACK_UNPACK_SUCCESS)
        goto done;
    const msgpack_object *rules = &up.data;
    lead_score_rules_t *r = &ctx->rules;
    r->mql = s_getnum (rules, "mql", 40);
    r->sql = s_getnum (rules, "sql", 80);
    r->sql_fit_min = s_getnum (rules, "sql_fit_min", 30);
    r->in_audience_fit = s_getnum (rules, "in_audience_fit", 5);
    ctx->pending_ttl_s = (int64_t) s_getnum (rules, "pending_ttl_s", 7776000);
    ctx->history_max = (int64_t) s_getnum (rules, "history_max", 50);
    ctx->hl = s_getnum (rules, "half_life_ms", 1209600000);
    s_copy (s_get (rules, "fallback_rep"), ctx->fallback, sizeof ctx->fallback);
    const msgpack_object *points = s_get (rules, "points");
    for (int k = 0; k < KINDS; k++)
        ctx->points [k] = s_getnum (points, s_kinds [k], 0);
    const msgpack_object *bant = s_get (rules, "bant");
    r->budget = s_getnum (bant, "budget", 15);
    r->authority = s_getnum (bant, "authority", 15);
    r->need = s_getnum (bant, "need", 15);
    r->timeline = s_getnum (bant, "timeline", 15);
    r->budget_min = s_getnum (bant, "budget_min", 1);
    r->timeline_days_max = s_getnum (bant, "timeline_days_max", 90);
    const msgpack_object *icp = s_get (rules, "icp");
    for (uint32_t i = 0; icp && icp->type == MSGPACK_OBJECT_ARRAY && i < icp->via.array.size
                         && i < ICP_MAX; i++) {
        const msgpack_object *rule = &icp->via.array.ptr [i];
        lead_icp_rule_t *out = &ctx->icp [i];
        s_copy (s_get (rule, "name"), ctx->icp_text [i][0], 256);
        s_copy (s_get (rule, "attr"), ctx->icp_text [i][1], 256);
        out->name = ctx->icp_text [i][0];
        out->attr = ctx->icp_text [i][1];
        out->points = s_getnum (rule, "points", 10);
        out->has_min = msgpack_kv_number (s_get (rule, "min"), &out->min);
        out->has_max = msgpack_kv_number (s_get (rule, "max"), &out->max);
        const msgpack_object *values = s_get (rule, "values");
        if (values && values->type == MSGPACK_OBJECT_ARRAY) {
            out->has_values = true;
            for (uint32_t v = 0; v < values->via.array.size && v < 64; v++) {
                s_copy (&values->via.array.ptr [v], ctx->icp_values_text [i][v], 128);
                ctx->icp_values [i][v] = ctx->icp_values_text [i][v];
                out->nvalues++;
            }
            out->values = ctx->icp_values [i];
        }
        r->nicp++;
    }
    r->icp = ctx->icp;
    const msgpack_object *reps = s_get (rules, "reps");
    for (uint32_t i = 0; reps && reps->type == MSGPACK_OBJECT_ARRAY && i < reps->via.array.size
                         && i < REPS_MAX; i++) {
        const msgpack_object *rep = &reps->via.array.ptr [i];
        rep_cfg_t *out = &ctx->reps [ctx->nreps++];
        s_copy (s_get (rep, "name"), out->name, sizeof out->name);
        s_copy (s_get (rep, "region"), out->region, sizeof out->region);
        out->capacity = (int64_t) s_getnum (rep, "capacity", 10);
        const msgpack_object *away = s_get (rep, "away");
        out->away = away && away->type == MSGPACK_OBJECT_BOOLEAN && away->via.boolean;
    }
    *arg = ctx;
    ctx = NULL;
    rc = 0;
done:
    free (ctx);
    msgpack_unpacked_destroy (&up);
    msgpack_sbuffer_destroy (&sbuf);
    if (rc)
        log_error ("leads: settings could not be read");
    return rc;
}

static void
s_teardown (void **arg)
{
    free (*arg);
    *arg = NULL;
}

static const funnel_rule_t s_on [] = {
    { "lead.capture", s_on_capture, s_want_capture },
    { "lead.qualify", s_on_qualify, s_want_lead_field },
    { "lead.disqualify", s_on_disqualify, s_want_lead_field },
    { "lead.forget", s_on_forget, s_want_lead_field },
    { "rep.update", s_on_rep_update, NULL },
    { NULL }
};
static const funnel_rule_t s_consume [] = {
    { "prospect.touched", s_on_touched, s_want_contact },
    { NULL }
};
static const funnel_query_rule_t s_queries [] = {
    { "lead", s_get_lead },
    { "rep", s_get_rep },
    { "reps", s_get_reps },
    { "export", s_get_export },
    { NULL }
};
static const funnel_timer_rule_t s_timers [] = {
    { "decay", s_fire_decay },
    { "pend", s_fire_pend },
    { NULL }
};
//  STATS shows these as 0 before their first event (the monitor reads
//  leads, mql and sql from a fresh start, too)
//  Over time (GET series), at the event time of the event that made the
//  lead reach the stage, per the lead's campaign (capture or first touch)
static const char *const s_series [] = { "leads", "mql", "sql", NULL };
static const char *const s_counters [] = {
    "leads", "mql", "sql", "disqualified", "recycled", "touches", "touches_pending",
    "in.nurture", "in.mql", "in.sql", "in.disqualified", "forgotten", NULL
};
//  What lead.forget redacts in the outbox (proto/privacy.md): the
//  captured profile, the alias ids, free-text reasons
static const funnel_personal_t s_personal [] = {
    { "lead.captured", { "email", "company", "region", NULL } },
    { "lead.merged", { "alias", NULL } },
    { "lead.disqualified", { "reason", NULL } },
    { "lead.stage_changed", { "reason", NULL } },
    { NULL }
};

const funnel_rules_t leads_stage_rules = {
    .on = s_on, .consume = s_consume, .queries = s_queries, .timers = s_timers,
    .counters = s_counters, .series = s_series, .personal = s_personal,
    .setup = s_setup, .teardown = s_teardown
};
