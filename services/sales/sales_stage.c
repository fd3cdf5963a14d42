/*  sales_stage — the sales stage's rules (see sales_stage.h).

    State (proto/sales.md "State"), every record a small hash:
      d:<deal>      the deal, in its lead's partition (a lead's deals stay
                    together); fields below
      dr:<deal>     route deal -> lead, only for a deal whose id does not
                    name its lead (ids L<lead>-<n> and X<customer>-<n> do)
      dl:<deal>     the deal's history once over HIST_INLINE entries (list,
                    last HISTORY_MAX); shorter histories live in the deal's
                    field h, so a short deal is one key
      ld:<lead>     per lead: deal counter, rep, campaign, the last
                    QUAL_MAX lead.sql ids; and per customer (same id) the
                    expansion counter, open expansion deal, last upsell ids
      g:* (partition 0, global): bystage, byrep, agg, obj (objections),
                    rsn (top REASONS_MAX lost reasons + "other"), tot, rr
    Timers: sla and stale per deal, in the lead's partition.
*/
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "funnel_service.h"
#include "funnel_log.h"
#include "deal_policy.h"
#include "sales_rules.h"
#include "sales_stage.h"
#include "msgpack_kv.h"

#define DAY_MS          86400000LL
#define HISTORY_MAX     1000        //  Entries kept per deal (what GET deal returns)
#define HIST_INLINE     8           //  History entries kept in the deal record itself
#define HIST_VALUE_MAX  64          //  ... each at most this long (a listpack value)
#define QUAL_MAX        4           //  lead.sql ids remembered per lead
#define REASONS_MAX     100         //  Distinct lost reasons kept; then "other"
#define ID_MAX          (FUNNEL_STR_MAX + 1)

typedef struct {
    double max_discount;
    int64_t sla_ms, stale_ms;
    double probability [DEAL_STAGES];
    char **reps;
    size_t rep_count;
} settings_t;

static const char *const s_status_names [] = { "open", "won", "lost", "delivered", NULL };
static const char s_status_codes [] = "owld";

//  ---------------------------------------------------------------------
//  Small helpers

static settings_t *
s_cfg (funnel_state_t *st)
{
    return (settings_t *) funnel_state_arg (st);
}

//  A string field of 1-64 bytes, copied.
static bool
s_short_id (const msgpack_object *map, const char *key, char *out)
{
    const msgpack_object *o = event_codec_map_get (map, key);
    if (!o || o->type != MSGPACK_OBJECT_STR || o->via.str.size < 1 || o->via.str.size > 64
    ||  memchr (o->via.str.ptr, 0, o->via.str.size))
        return false;
    memcpy (out, o->via.str.ptr, o->via.str.size);
    out [o->via.str.size] = 0;
    return true;
}

static int64_t
s_int (const msgpack_object *map, const char *key, int64_t dflt)
{
    double v;
    return msgpack_kv_get_number (map, key, &v) ? (int64_t) v : dflt;
}

static const char *
s_fmt_num (double v, char *buf, size_t size)
{
    snprintf (buf, size, "%.14g", v);           //  The stored number format
    return buf;
}

static double
s_rec_num (funnel_rec_t *rec, const char *field, double dflt)
{
    const char *v = funnel_rec_str (rec, field);
    return v ? strtod (v, NULL) : dflt;
}

static const char *
s_status (funnel_rec_t *deal)
{
    const char *code = funnel_rec_str (deal, "s");
    const char *at = code ? strchr (s_status_codes, code [0]) : NULL;
    return at && *at ? s_status_names [at - s_status_codes] : NULL;
}

static const char *
s_stage (funnel_rec_t *deal)
{
    int64_t g = funnel_rec_int (deal, "g", 0);
    return deal_policy_stages [g >= 0 && g < DEAL_STAGES ? g : 0];
}

//  Origin: s = from lead.sql (kind new), a = deal.open (new), u = upsell
//  (expansion).
static const char *
s_kind (funnel_rec_t *deal)
{
    const char *o = funnel_rec_str (deal, "o");
    return o && o [0] == 'u' ? "expansion" : "new";
}

static const char *
s_src (funnel_rec_t *deal)
{
    const char *o = funnel_rec_str (deal, "o");
    return !o ? "api" : o [0] == 's' ? "sql" : o [0] == 'u' ? "upsell" : "api";
}

//  ---------------------------------------------------------------------
//  Where a deal lives: its lead's partition

//  The lead an id names: L<lead>-<n> or X<customer>-<n>; false otherwise.
static bool
s_derived_lead (const char *deal, char *lead)
{
    if (deal [0] != 'L' && deal [0] != 'X')
        return false;
    const char *dash = strrchr (deal, '-');
    if (!dash || dash == deal + 1 || !dash [1])
        return false;
    for (const char *p = dash + 1; *p; p++)
        if (*p < '0' || *p > '9')
            return false;
    size_t len = dash - deal - 1;
    memcpy (lead, deal + 1, len);
    lead [len] = 0;
    return true;
}

static void
s_want_deal (funnel_state_t *st, const char *deal)
{
    char lead [ID_MAX];
    funnel_state_want (st, "dr", deal);
    if (s_derived_lead (deal, lead))
        funnel_state_want_in (st, lead, "d", deal);
}

//  The deal record (maybe empty: no such deal) and its lead; NULL if Redis
//  is unavailable.
static funnel_rec_t *
s_deal (funnel_state_t *st, const char *deal, char *lead)
{
    funnel_rec_t *route = funnel_state_rec (st, "dr", deal);
    if (!route)
        return NULL;
    const char *l = funnel_rec_str (route, "l");
    if (l)
        snprintf (lead, ID_MAX, "%s", l);
    else
    if (!s_derived_lead (deal, lead))
        snprintf (lead, ID_MAX, "%s", deal);    //  No such deal: an empty record
    return funnel_state_rec_in (st, lead, "d", deal);
}

#define UNAVAILABLE(err) funnel_error_set (err, FUNNEL_ERR_UNAVAILABLE, "redis: unavailable")

//  ---------------------------------------------------------------------
//  History: msgpack maps, with NUL and the separator escaped, so a short
//  history fits one text field of the deal

static void
s_escape (const char *data, size_t size, zchunk_t *out)
{
    for (size_t i = 0; i < size; i++) {
        unsigned char c = (unsigned char) data [i];
        if (c <= 2) {
            byte esc [2] = { 1, (byte) (c + 3) };
            zchunk_extend (out, esc, 2);
        }
        else
            zchunk_extend (out, &c, 1);
    }
}

static size_t
s_unescape (const char *text, size_t size, char *out)
{
    size_t n = 0;
    for (size_t i = 0; i < size; i++)
        if (text [i] == 1 && i + 1 < size)
            out [n++] = (char) (text [++i] - 3);
        else
            out [n++] = text [i];
    return n;
}

//  Appends a history entry (a msgpack map in sbuf, without "at": added).
static void
s_history (funnel_state_t *st, funnel_rec_t *deal, const char *lead, const char *id,
           msgpack_sbuffer *sbuf)
{
    zchunk_t *entry = zchunk_new (NULL, sbuf->size * 2 + 16);
    s_escape (sbuf->data, sbuf->size, entry);
    if (funnel_rec_has (deal, "hl"))
        funnel_state_push_in (st, lead, "dl", id, (const char *) zchunk_data (entry),
                              zchunk_size (entry), HISTORY_MAX);
    else {
        //  Inline: one field per entry, h0, h1...: each value stays within
        //  Redis's listpack bound (64 bytes), so the deal stays a listpack
        int count = 0;
        char field [16];
        do
            snprintf (field, sizeof field, "h%d", count++);
        while (funnel_rec_has (deal, field));
        count--;                    //  field is h<count>, the first free one
        if (count < HIST_INLINE && zchunk_size (entry) <= HIST_VALUE_MAX) {
            char *text = zchunk_strdup (entry);
            funnel_rec_set_str (deal, field, text);
            free (text);
        }
        else {
            //  Spill: every entry moves to the list, later ones go there
            for (int i = 0; i < count; i++) {
                snprintf (field, sizeof field, "h%d", i);
                const char *h = funnel_rec_str (deal, field);
                funnel_state_push_in (st, lead, "dl", id, h, strlen (h), HISTORY_MAX);
                funnel_rec_del (deal, field);
            }
            funnel_state_push_in (st, lead, "dl", id, (const char *) zchunk_data (entry),
                                  zchunk_size (entry), HISTORY_MAX);
            funnel_rec_set_str (deal, "hl", "1");
        }
    }
    zchunk_destroy (&entry);
}

//  A history entry under construction: entry_begin (n fields besides e and
//  at), pack n key/values, entry_end.
typedef struct {
    msgpack_sbuffer sbuf;
    msgpack_packer pk;
} entry_t;

static msgpack_packer *
s_entry_begin (entry_t *e, funnel_state_t *st, const char *what, int fields)
{
    msgpack_sbuffer_init (&e->sbuf);
    msgpack_packer_init (&e->pk, &e->sbuf, msgpack_sbuffer_write);
    msgpack_pack_map (&e->pk, fields + 2);
    msgpack_kv_put_str (&e->pk, "e", what);
    msgpack_kv_put_int (&e->pk, "at", funnel_state_now (st));
    return &e->pk;
}

//  History entries are stored compact: a msgpack array [code, at - t0,
//  value...] with the values of the entry's fields in schema order (nil
//  when absent, trailing nils dropped); stage names as their index; an open
//  entry's kind and src come from the deal. GET deal rebuilds the maps.
typedef struct {
    const char *what;
    const char *fields [5];
} schema_t;

static const schema_t s_schemas [] = {
    { "open", { "rep", "amount", "nps", "health", NULL } },
    { "interaction", { "kind", "outcome", "objections", "text", NULL } },
    { "offer", { "amount", "discount_pct", NULL } },
    { "approve", { "by", "discount_pct", NULL } },
    { "stage", { "from", "to", "ms", NULL } },
    { "close", { "outcome", "amount", "reason", NULL } },
    { "deliver", { NULL } },
    { "sla_breached", { "rep", "new_rep", NULL } },
    { "stalled", { "days", NULL } },
    { NULL }
};

static bool
s_is_stage_field (const char *name)
{
    return streq (name, "from") || streq (name, "to");
}

//  The map in sbuf, compacted to its array form into out.
static void
s_compact (const msgpack_sbuffer *sbuf, int64_t t0, msgpack_sbuffer *out)
{
    msgpack_unpacked u;
    msgpack_unpacked_init (&u);
    msgpack_packer pk;
    msgpack_packer_init (&pk, out, msgpack_sbuffer_write);
    if (msgpack_unpack_next (&u, sbuf->data, sbuf->size, NULL) == MSGPACK_UNPACK_SUCCESS) {
        char what [32] = "";
        event_codec_obj_strcpy (event_codec_map_get (&u.data, "e"), what, sizeof what);
        int code = 0;
        while (s_schemas [code].what && !streq (s_schemas [code].what, what))
            code++;
        const schema_t *schema = &s_schemas [code];
        const msgpack_object *values [5] = { NULL };
        int used = 0;
        for (int f = 0; schema->what && schema->fields [f]; f++) {
            values [f] = event_codec_map_get (&u.data, schema->fields [f]);
            if (values [f] && values [f]->type != MSGPACK_OBJECT_NIL)
                used = f + 1;
        }
        const msgpack_object *at = event_codec_map_get (&u.data, "at");
        msgpack_pack_array (&pk, 2 + used);
        msgpack_pack_int (&pk, code);
        msgpack_pack_int64 (&pk, (at ? at->via.i64 : 0) - t0);
        for (int f = 0; f < used; f++) {
            char stage [32];
            if (!values [f])
                msgpack_pack_nil (&pk);
            else
            if (s_is_stage_field (schema->fields [f])
            &&  event_codec_obj_strcpy (values [f], stage, sizeof stage))
                msgpack_pack_int (&pk, deal_policy_stage_index (stage));
            else
                msgpack_pack_object (&pk, *values [f]);
        }
    }
    msgpack_unpacked_destroy (&u);
}

//  The array form in data back to the entry's map, packed into pk.
static int
s_expand (const char *data, size_t size, funnel_rec_t *deal, msgpack_packer *pk);

static void
s_entry_end (entry_t *e, funnel_state_t *st, funnel_rec_t *deal, const char *lead,
             const char *id)
{
    msgpack_sbuffer compact;
    msgpack_sbuffer_init (&compact);
    s_compact (&e->sbuf, funnel_rec_int (deal, "t0", funnel_state_now (st)), &compact);
    s_history (st, deal, lead, id, &compact);
    msgpack_sbuffer_destroy (&compact);
    msgpack_sbuffer_destroy (&e->sbuf);
}

//  ---------------------------------------------------------------------
//  Global tallies (partition 0): exact because each is changed in the same
//  commit as the deal it counts, by the only writer (the lease holder)

static funnel_rec_t *
s_global (funnel_state_t *st, const char *name)
{
    return funnel_state_global (st, "g", name);
}

//  Tallies only added to: funnel_state_add_global, so that instances
//  sharing them add without reading (no conflict between them)
static int
s_tally_stage (funnel_state_t *st, int stage, int64_t n, int64_t value)
{
    char f [8];
    snprintf (f, sizeof f, "n%d", stage);
    if (funnel_state_add_global (st, "g", "bystage", f, n))
        return -1;
    snprintf (f, sizeof f, "a%d", stage);
    return funnel_state_add_global (st, "g", "bystage", f, value);
}

static int
s_tally_rep (funnel_state_t *st, const char *rep, int64_t n, int64_t value)
{
    funnel_rec_t *g = s_global (st, "byrep");
    if (!g)
        return -1;
    char f [ID_MAX + 4];
    snprintf (f, sizeof f, "n:%s", rep);
    if (funnel_rec_add (g, f, n) == 0)
        funnel_rec_del (g, f);                  //  Reps with no open deal leave
    snprintf (f, sizeof f, "a:%s", rep);
    if (funnel_rec_add (g, f, value) == 0)
        funnel_rec_del (g, f);
    return 0;
}

static int
s_agg (funnel_state_t *st, const char *field, int64_t n)
{
    return funnel_state_add_global (st, "g", "agg", field, n);
}

static int
s_stage_time (funnel_state_t *st, int stage, int64_t since)
{
    char f [16];
    snprintf (f, sizeof f, "ms:%d", stage);
    if (s_agg (st, f, funnel_state_now (st) - since))
        return -1;
    snprintf (f, sizeof f, "n:%d", stage);
    return s_agg (st, f, 1);
}

//  A rep from the pool other than current (rotating); current when the
//  pool has no one else; NULL with no pool and no current.
static const char *
s_pool_rep (funnel_state_t *st, const char *current, bool *failed)
{
    settings_t *cfg = s_cfg (st);
    if (cfg->rep_count == 0)
        return current;
    funnel_rec_t *rr = s_global (st, "rr");
    if (!rr) {
        *failed = true;
        return current;
    }
    int64_t turn = funnel_rec_add (rr, "n", 1) - 1;
    return deal_policy_next_rep ((const char *const *) cfg->reps, cfg->rep_count, current,
                                 turn);
}

//  Series: stage counts over time (the engine's count_stage once merged)
static void
s_count_stage (funnel_state_t *st, const char *name, int64_t t, const char *campaign,
               int64_t n)
{
    funnel_state_count_stage (st, name, t, campaign, n);
}

//  One timer per open deal, "t", due at the earlier of its speed-to-lead
//  time (a lead.sql deal with no interaction yet, not yet breached) and its
//  stale time (stale_days after the last interaction, else the open; not
//  while already reported stalled)
static bool
s_sla_pending (settings_t *cfg, funnel_rec_t *deal)
{
    const char *o = funnel_rec_str (deal, "o");
    return cfg->sla_ms > 0 && o && o [0] == 's' && !funnel_rec_has (deal, "t1")
        && !funnel_rec_has (deal, "sb");
}

static int64_t
s_idle_since (funnel_rec_t *deal)
{
    return funnel_rec_int (deal, "tl", funnel_rec_int (deal, "t0", 0));
}

static void
s_arm_deal (funnel_state_t *st, const char *lead, const char *id, funnel_rec_t *deal)
{
    settings_t *cfg = s_cfg (st);
    const char *status = s_status (deal);
    int64_t due = INT64_MAX;
    if (status && streq (status, "open")) {
        if (s_sla_pending (cfg, deal))
            due = funnel_rec_int (deal, "t0", 0) + cfg->sla_ms;
        if (!funnel_rec_has (deal, "sl") && s_idle_since (deal) + cfg->stale_ms < due)
            due = s_idle_since (deal) + cfg->stale_ms;
    }
    if (due == INT64_MAX)
        funnel_state_timer_cancel_in (st, lead, "t", id);
    else
        funnel_state_timer_in (st, lead, "t", id, due);
}

//  ---------------------------------------------------------------------
//  Opening a deal

typedef struct {
    const char *id, *lead, *rep, *campaign;
    char origin;                //  s, a, u
    int64_t amount, at;
    bool has_nps, has_health;
    double nps, health;
} open_t;

static int
s_open_deal (funnel_state_t *st, const open_t *f, funnel_error_t *err)
{
    int64_t now = funnel_state_now (st);
    char derived [ID_MAX];
    if (!s_derived_lead (f->id, derived) || !streq (derived, f->lead)) {
        funnel_rec_t *route = funnel_state_rec (st, "dr", f->id);
        if (!route)
            return UNAVAILABLE (err);
        funnel_rec_set_str (route, "l", f->lead);
    }
    funnel_rec_t *deal = funnel_state_rec_in (st, f->lead, "d", f->id);
    if (!deal)
        return UNAVAILABLE (err);
    if (!s_derived_lead (f->id, derived) || !streq (derived, f->lead)) {
        //  The lead lists its deals of other ids, so erasing it finds them
        funnel_rec_t *lrec = funnel_state_rec (st, "ld", f->lead);
        if (!lrec)
            return UNAVAILABLE (err);
        char field [ID_MAX + 1];
        snprintf (field, sizeof field, "@%s", f->id);
        funnel_rec_set_str (lrec, field, "1");
    }
    char origin [2] = { f->origin, 0 };
    funnel_rec_set_str (deal, "r", f->rep);
    funnel_rec_set_str (deal, "o", origin);
    funnel_rec_set_str (deal, "s", "o");
    funnel_rec_set_int (deal, "a", f->amount);
    funnel_rec_set_int (deal, "t0", now);
    if (f->campaign)
        funnel_rec_set_str (deal, "c", f->campaign);
    if (s_tally_stage (st, 0, 1, f->amount) || s_tally_rep (st, f->rep, 1, f->amount))
        return UNAVAILABLE (err);
    s_arm_deal (st, f->lead, f->id, deal);
    entry_t e;
    msgpack_packer *pk = s_entry_begin (&e, st, "open", 4 + f->has_nps + f->has_health);
    msgpack_kv_put_str (pk, "rep", f->rep);
    msgpack_kv_put_str (pk, "kind", f->origin == 'u' ? "expansion" : "new");
    msgpack_kv_put_str (pk, "src", f->origin == 's' ? "sql" : f->origin == 'u' ? "upsell" : "api");
    msgpack_kv_put_int (pk, "amount", f->amount);
    if (f->has_nps)
        msgpack_kv_put_number (pk, "nps", f->nps);
    if (f->has_health)
        msgpack_kv_put_number (pk, "health", f->health);
    s_entry_end (&e, st, deal, f->lead, f->id);
    s_count_stage (st, "deals", f->at, f->campaign, 1);
    if (f->origin == 'u')
        s_count_stage (st, "expansion", f->at, f->campaign, 1);
    pk = funnel_state_data (st);
    msgpack_pack_map (pk, 5);
    msgpack_kv_put_str (pk, "deal", f->id);
    msgpack_kv_put_str (pk, "lead", f->lead);
    msgpack_kv_put_str (pk, "rep", f->rep);
    msgpack_kv_put_str (pk, "kind", f->origin == 'u' ? "expansion" : "new");
    msgpack_kv_put_int (pk, "amount", f->amount);
    funnel_state_emit (st, "deal.opened", NULL);
    return 0;
}

//  The lead a deal belongs to (found by s_deal)
static const char *
s_deal_lead (funnel_rec_t *deal, const char *lead)
{
    (void) deal;
    return lead;
}

//  The next free deal id of an entity, counted in field counter of rec.
static int
s_next_deal_id (funnel_state_t *st, const char *prefix, const char *entity,
                funnel_rec_t *rec, const char *counter, char *id)
{
    while (true) {
        int64_t n = funnel_rec_add (rec, counter, 1);
        deal_policy_deal_id (prefix, entity, n, id, ID_MAX);
        //  Only deal.open can take an id of this form first, and it marks
        //  the entity (field t): else the id is free without a read
        char named [ID_MAX];
        if (!funnel_rec_has (rec, "t")
        &&  s_derived_lead (id, named) && streq (named, entity))
            return 0;
        char lead [ID_MAX];
        funnel_rec_t *deal = s_deal (st, id, lead);
        if (!deal)
            return -1;
        if (!funnel_rec_exists (deal))
            return 0;
    }
}

//  Whether id is among the remembered ids (fields <field>0..<field>3, one
//  id each: every value stays within the listpack bound); remembers it in
//  the next slot of the ring (index <field>i), keeping the last QUAL_MAX.
static bool
s_seen (funnel_rec_t *rec, const char *field, const char *id, bool remember)
{
    char name [16];
    for (int i = 0; i < QUAL_MAX; i++) {
        snprintf (name, sizeof name, "%s%d", field, i);
        const char *v = funnel_rec_str (rec, name);
        if (v && streq (v, id))
            return true;
    }
    if (remember) {
        snprintf (name, sizeof name, "%si", field);
        int64_t slot = funnel_rec_int (rec, name, 0);
        funnel_rec_set_int (rec, name, (slot + 1) % QUAL_MAX);
        snprintf (name, sizeof name, "%s%d", field, (int) (slot % QUAL_MAX));
        funnel_rec_set_str (rec, name, id);
    }
    return false;
}

//  ---------------------------------------------------------------------
//  Consumed from upstreams

static void
s_want_lead (funnel_state_t *st, const funnel_event_t *ev)
{
    char lead [ID_MAX];
    if (s_short_id (ev->data, "lead", lead) || s_short_id (ev->data, "customer", lead))
        funnel_state_want (st, "ld", lead);
}

//  leads qualified a lead: one deal per qualification event (a recycled
//  lead qualified again gets a new deal, L<lead>-<n>)
static int
s_on_lead_sql (funnel_state_t *st, const funnel_event_t *ev, funnel_error_t *err)
{
    char lead [ID_MAX], rep_in [ID_MAX], camp_in [ID_MAX], id [ID_MAX];
    if (!s_short_id (ev->data, "lead", lead))
        return funnel_error_set (err, FUNNEL_ERR_INVALID, "data.lead: required id is missing");
    funnel_rec_t *lrec = funnel_state_rec (st, "ld", lead);
    if (!lrec)
        return UNAVAILABLE (err);
    if (s_seen (lrec, "q", ev->id, false)) {
        funnel_state_count (st, "sql_duplicates", 1);
        return 0;
    }
    if (s_next_deal_id (st, "L", lead, lrec, "n", id))
        return UNAVAILABLE (err);
    s_seen (lrec, "q", ev->id, true);
    bool failed = false;
    const char *rep = s_short_id (ev->data, "rep", rep_in) ? rep_in : s_pool_rep (st, NULL, &failed);
    if (!rep)
        rep = "unassigned";
    char rep_copy [ID_MAX];
    snprintf (rep_copy, sizeof rep_copy, "%s", rep);
    funnel_rec_set_str (lrec, "r", rep_copy);
    const char *campaign = s_short_id (ev->data, "campaign", camp_in) ? camp_in
                         : funnel_rec_str (lrec, "c");
    char camp_copy [ID_MAX] = "";
    if (campaign) {
        snprintf (camp_copy, sizeof camp_copy, "%s", campaign);
        funnel_rec_set_str (lrec, "c", camp_copy);
    }
    if (failed)
        return UNAVAILABLE (err);
    open_t f = { .id = id, .lead = lead, .rep = rep_copy,
                 .campaign = campaign ? camp_copy : NULL, .origin = 's', .amount = 0,
                 .at = funnel_state_event_time (st, ev, true) };
    return s_open_deal (st, &f, err);
}

//  retention sees room to grow a customer: an expansion deal, unless one
//  is already open for that customer
static int
s_on_upsell (funnel_state_t *st, const funnel_event_t *ev, funnel_error_t *err)
{
    char customer [ID_MAX], id [ID_MAX], lead [ID_MAX];
    if (!s_short_id (ev->data, "customer", customer))
        return funnel_error_set (err, FUNNEL_ERR_INVALID,
                                 "data.customer: required id is missing");
    funnel_rec_t *crec = funnel_state_rec (st, "ld", customer);
    if (!crec)
        return UNAVAILABLE (err);
    if (s_seen (crec, "xq", ev->id, true))
        return 0;
    const char *open = funnel_rec_str (crec, "xo");
    if (open) {
        char open_id [ID_MAX];
        snprintf (open_id, sizeof open_id, "%s", open);
        funnel_rec_t *deal = s_deal (st, open_id, lead);
        if (!deal)
            return UNAVAILABLE (err);
        const char *status = s_status (deal);
        if (status && streq (status, "open")) {
            funnel_state_count (st, "upsell_skipped", 1);
            return 0;
        }
    }
    if (s_next_deal_id (st, "X", customer, crec, "xn", id))
        return UNAVAILABLE (err);
    funnel_rec_set_str (crec, "xo", id);
    bool failed = false;
    const char *rep = funnel_rec_str (crec, "r");
    char rep_copy [ID_MAX];
    if (!rep)
        rep = s_pool_rep (st, NULL, &failed);
    snprintf (rep_copy, sizeof rep_copy, "%s", rep ? rep : "unassigned");
    if (failed)
        return UNAVAILABLE (err);
    const char *campaign = funnel_rec_str (crec, "c");
    char camp_copy [ID_MAX] = "";
    if (campaign)
        snprintf (camp_copy, sizeof camp_copy, "%s", campaign);
    open_t f = { .id = id, .lead = customer, .rep = rep_copy,
                 .campaign = campaign ? camp_copy : NULL, .origin = 'u', .amount = 0,
                 .at = funnel_state_event_time (st, ev, true) };
    f.has_nps = msgpack_kv_get_number (ev->data, "nps", &f.nps);
    f.has_health = msgpack_kv_get_number (ev->data, "health", &f.health);
    return s_open_deal (st, &f, err);
}

//  ---------------------------------------------------------------------
//  Commands

static void
s_want_cmd (funnel_state_t *st, const funnel_event_t *ev)
{
    char deal [ID_MAX];
    if (s_short_id (ev->data, "deal", deal))
        s_want_deal (st, deal);
}

//  The deal if it exists and allows action; NULL with err set otherwise.
static funnel_rec_t *
s_need (funnel_state_t *st, const char *id, const char *action, char *lead,
        funnel_error_t *err)
{
    funnel_rec_t *deal = s_deal (st, id, lead);
    if (!deal) {
        UNAVAILABLE (err);
        return NULL;
    }
    if (!funnel_rec_exists (deal)) {
        funnel_error_set (err, FUNNEL_ERR_NOT_FOUND, "deal: no deal %s", id);
        return NULL;
    }
    char why [256];
    if (deal_policy_check (s_status (deal), action, why, sizeof why)) {
        funnel_error_set (err, FUNNEL_ERR_CONFLICT, "deal: %s: %s", id, why);
        return NULL;
    }
    return deal;
}

static void
s_want_open (funnel_state_t *st, const funnel_event_t *ev)
{
    char deal [ID_MAX], lead [ID_MAX], named [ID_MAX];
    if (!s_short_id (ev->data, "deal", deal) || !s_short_id (ev->data, "lead", lead))
        return;
    s_want_deal (st, deal);
    funnel_state_want (st, "ld", lead);
    funnel_state_want_in (st, lead, "d", deal);
    if (s_derived_lead (deal, named))
        funnel_state_want (st, "ld", named);
}

static int
s_on_open (funnel_state_t *st, const funnel_event_t *ev, funnel_error_t *err)
{
    char id [ID_MAX], lead [ID_MAX], rep_in [ID_MAX], where [ID_MAX];
    s_short_id (ev->data, "deal", id);
    s_short_id (ev->data, "lead", lead);
    funnel_rec_t *deal = s_deal (st, id, where);
    funnel_rec_t *lrec = deal ? funnel_state_rec (st, "ld", lead) : NULL;
    if (!lrec)
        return UNAVAILABLE (err);
    if (funnel_rec_exists (deal))
        return funnel_error_set (err, FUNNEL_ERR_CONFLICT, "deal: %s already exists", id);
    char named [ID_MAX];
    if (s_derived_lead (id, named)) {
        //  An id of the generated form: the entity it names must check
        //  before using it (s_next_deal_id)
        funnel_rec_t *taken = funnel_state_rec (st, "ld", named);
        if (!taken)
            return UNAVAILABLE (err);
        funnel_rec_set_str (taken, "t", "1");
    }
    bool failed = false;
    const char *rep = s_short_id (ev->data, "rep", rep_in) ? rep_in : funnel_rec_str (lrec, "r");
    if (!rep)
        rep = s_pool_rep (st, NULL, &failed);
    char rep_copy [ID_MAX];
    snprintf (rep_copy, sizeof rep_copy, "%s", rep ? rep : "unassigned");
    if (failed)
        return UNAVAILABLE (err);
    const char *campaign = funnel_rec_str (lrec, "c");
    char camp_copy [ID_MAX] = "";
    if (campaign)
        snprintf (camp_copy, sizeof camp_copy, "%s", campaign);
    open_t f = { .id = id, .lead = lead, .rep = rep_copy,
                 .campaign = campaign ? camp_copy : NULL, .origin = 'a',
                 .amount = s_int (ev->data, "amount", 0), .at = ev->ts };
    return s_open_deal (st, &f, err);
}

//  1 if the deal's lead was forgotten (lead.forget), 0 if not, -1 if
//  unavailable. Free text about a forgotten person is not stored: a second
//  lead.forgotten never comes to erase it (proto/privacy.md).
static int
s_lead_forgotten (funnel_state_t *st, funnel_rec_t *deal, const char *owner)
{
    char lead [ID_MAX];
    snprintf (lead, sizeof lead, "%s", s_deal_lead (deal, owner));
    funnel_rec_t *lrec = funnel_state_rec (st, "ld", lead);
    return !lrec ? -1 : funnel_rec_has (lrec, "fg");
}

static int
s_on_interaction (funnel_state_t *st, const funnel_event_t *ev, funnel_error_t *err)
{
    char id [ID_MAX], lead [ID_MAX];
    s_short_id (ev->data, "deal", id);
    funnel_rec_t *deal = s_need (st, id, "interaction", lead, err);
    if (!deal)
        return -1;
    int64_t now = funnel_state_now (st);
    if (!funnel_rec_has (deal, "t1")) {
        //  The first contact answers the speed-to-lead timer
        funnel_rec_set_int (deal, "t1", now);
        if (streq (s_src (deal), "sql")
        &&  (s_agg (st, "stl_ms", now - funnel_rec_int (deal, "t0", 0))
          || s_agg (st, "stl_n", 1)))
            return UNAVAILABLE (err);
    }
    funnel_rec_set_int (deal, "tl", now);
    funnel_rec_del (deal, "sl");
    s_arm_deal (st, lead, id, deal);
    const msgpack_object *objections = event_codec_map_get (ev->data, "objections");
    if (objections && objections->type == MSGPACK_OBJECT_ARRAY) {
        funnel_rec_t *obj = s_global (st, "obj");
        if (!obj)
            return UNAVAILABLE (err);
        for (uint32_t i = 0; i < objections->via.array.size; i++) {
            char name [ID_MAX];
            if (!event_codec_obj_strcpy (&objections->via.array.ptr [i], name, sizeof name))
                continue;
            bool repeat = false;
            for (uint32_t j = 0; j < i; j++) {
                char other [ID_MAX];
                if (event_codec_obj_strcpy (&objections->via.array.ptr [j], other, sizeof other)
                &&  streq (other, name))
                    repeat = true;
            }
            if (!repeat)
                funnel_rec_add (obj, name, 1);
        }
    }
    const msgpack_object *outcome = event_codec_map_get (ev->data, "outcome");
    const msgpack_object *text = event_codec_map_get (ev->data, "text");
    int forgotten = s_lead_forgotten (st, deal, lead);
    if (forgotten < 0)
        return UNAVAILABLE (err);
    if (forgotten)
        text = NULL;
    entry_t e;
    msgpack_packer *pk = s_entry_begin (&e, st, "interaction",
                                        1 + !!outcome + !!objections + !!text);
    event_codec_pack_cstr (pk, "kind");
    msgpack_pack_object (pk, *event_codec_map_get (ev->data, "kind"));
    if (outcome) {
        event_codec_pack_cstr (pk, "outcome");
        msgpack_pack_object (pk, *outcome);
    }
    if (objections) {
        event_codec_pack_cstr (pk, "objections");
        msgpack_pack_object (pk, *objections);
    }
    if (text) {
        event_codec_pack_cstr (pk, "text");
        msgpack_pack_object (pk, *text);
    }
    s_entry_end (&e, st, deal, lead, id);
    funnel_state_count (st, "interactions", 1);
    return 0;
}

static int
s_on_offer (funnel_state_t *st, const funnel_event_t *ev, funnel_error_t *err)
{
    settings_t *cfg = s_cfg (st);
    char id [ID_MAX], lead [ID_MAX], num [32];
    s_short_id (ev->data, "deal", id);
    funnel_rec_t *deal = s_need (st, id, "offer", lead, err);
    if (!deal)
        return -1;
    double pct = 0;
    msgpack_kv_get_number (ev->data, "discount_pct", &pct);
    int64_t amount = s_int (ev->data, "amount", 0);
    int64_t delta = amount - funnel_rec_int (deal, "v", funnel_rec_int (deal, "a", 0));
    if (s_tally_stage (st, (int) funnel_rec_int (deal, "g", 0), 0, delta)
    ||  s_tally_rep (st, funnel_rec_str (deal, "r"), 0, delta))
        return UNAVAILABLE (err);
    funnel_rec_set_int (deal, "v", amount);
    snprintf (num, sizeof num, "%.17g", pct);     //  Exact back with strtod
    funnel_rec_set_str (deal, "p", num);
    funnel_rec_del (deal, "ap");
    entry_t e;
    msgpack_packer *pk = s_entry_begin (&e, st, "offer", 2);
    msgpack_kv_put_int (pk, "amount", amount);
    msgpack_kv_put_number (pk, "discount_pct", pct);
    s_entry_end (&e, st, deal, lead, id);
    funnel_state_count (st, "offers", 1);
    pk = funnel_state_data (st);
    msgpack_pack_map (pk, 3);
    msgpack_kv_put_str (pk, "deal", id);
    msgpack_kv_put_int (pk, "amount", amount);
    msgpack_kv_put_number (pk, "discount_pct", pct);
    funnel_state_emit (st, "deal.offer_made", NULL);
    if (deal_policy_needs_approval (pct, cfg->max_discount)) {
        funnel_state_count (st, "approvals_required", 1);
        pk = funnel_state_data (st);
        msgpack_pack_map (pk, 3);
        msgpack_kv_put_str (pk, "deal", id);
        msgpack_kv_put_number (pk, "discount_pct", pct);
        msgpack_kv_put_number (pk, "max_pct", cfg->max_discount);
        funnel_state_emit (st, "deal.approval_required", NULL);
    }
    return 0;
}

static int
s_on_approve (funnel_state_t *st, const funnel_event_t *ev, funnel_error_t *err)
{
    settings_t *cfg = s_cfg (st);
    char id [ID_MAX], lead [ID_MAX], a [32], b [32];
    s_short_id (ev->data, "deal", id);
    funnel_rec_t *deal = s_need (st, id, "approve", lead, err);
    if (!deal)
        return -1;
    double pct = s_rec_num (deal, "p", 0);
    if (!deal_policy_needs_approval (pct, cfg->max_discount))
        return funnel_error_set (err, FUNNEL_ERR_CONFLICT,
                                 "deal: %s: approve: the latest offer (%s%% off) needs no "
                                 "approval; the maximum is %s%%", id,
                                 s_fmt_num (pct, a, sizeof a),
                                 s_fmt_num (cfg->max_discount, b, sizeof b));
    if (funnel_rec_has (deal, "ap"))
        return funnel_error_set (err, FUNNEL_ERR_CONFLICT,
                                 "deal: %s: approve: the latest offer is already approved", id);
    funnel_rec_set_str (deal, "ap", "1");
    const msgpack_object *by = event_codec_map_get (ev->data, "by");
    entry_t e;
    msgpack_packer *pk = s_entry_begin (&e, st, "approve", 2);
    event_codec_pack_cstr (pk, "by");
    msgpack_pack_object (pk, *by);
    msgpack_kv_put_number (pk, "discount_pct", pct);
    s_entry_end (&e, st, deal, lead, id);
    funnel_state_count (st, "approved", 1);
    pk = funnel_state_data (st);
    msgpack_pack_map (pk, 3);
    msgpack_kv_put_str (pk, "deal", id);
    event_codec_pack_cstr (pk, "by");
    msgpack_pack_object (pk, *by);
    msgpack_kv_put_number (pk, "discount_pct", pct);
    funnel_state_emit (st, "deal.approved", NULL);
    return 0;
}

static int
s_on_stage (funnel_state_t *st, const funnel_event_t *ev, funnel_error_t *err)
{
    char id [ID_MAX], lead [ID_MAX], to [ID_MAX], why [256];
    s_short_id (ev->data, "deal", id);
    s_short_id (ev->data, "stage", to);
    funnel_rec_t *deal = s_need (st, id, "stage", lead, err);
    if (!deal)
        return -1;
    const char *from = s_stage (deal);
    if (deal_policy_stage_change (from, to, why, sizeof why))
        return funnel_error_set (err, FUNNEL_ERR_CONFLICT, "stage: deal %s: %s", id, why);
    int g_from = deal_policy_stage_index (from), g_to = deal_policy_stage_index (to);
    int64_t value = funnel_rec_int (deal, "v", funnel_rec_int (deal, "a", 0));
    int64_t now = funnel_state_now (st);
    int64_t since = funnel_rec_int (deal, "ts", funnel_rec_int (deal, "t0", 0));
    if (s_stage_time (st, g_from, since)
    ||  s_tally_stage (st, g_from, -1, -value) || s_tally_stage (st, g_to, 1, value))
        return UNAVAILABLE (err);
    funnel_rec_set_int (deal, "g", g_to);
    funnel_rec_set_int (deal, "ts", now);
    entry_t e;
    msgpack_packer *pk = s_entry_begin (&e, st, "stage", 3);
    msgpack_kv_put_str (pk, "from", from);
    msgpack_kv_put_str (pk, "to", to);
    msgpack_kv_put_int (pk, "ms", now - since);
    s_entry_end (&e, st, deal, lead, id);
    funnel_state_count (st, "stage_changes", 1);
    pk = funnel_state_data (st);
    msgpack_pack_map (pk, 3);
    msgpack_kv_put_str (pk, "deal", id);
    msgpack_kv_put_str (pk, "from", from);
    msgpack_kv_put_str (pk, "to", to);
    funnel_state_emit (st, "deal.stage_changed", NULL);
    return 0;
}

//  The top lost reasons stay bounded: REASONS_MAX distinct keys, then the
//  rest count under "other"
static int
s_reason (funnel_state_t *st, const char *reason)
{
    funnel_rec_t *rsn = s_global (st, "rsn");
    if (!rsn)
        return -1;
    char key [80];
    deal_policy_reason_key (reason, key, sizeof key);
    if (!funnel_rec_has (rsn, key) && funnel_rec_count (rsn) >= REASONS_MAX)
        snprintf (key, sizeof key, "other");
    funnel_rec_add (rsn, key, 1);
    return 0;
}

static int
s_on_close (funnel_state_t *st, const funnel_event_t *ev, funnel_error_t *err)
{
    settings_t *cfg = s_cfg (st);
    char id [ID_MAX], lead [ID_MAX], outcome [16], why [300];
    s_short_id (ev->data, "deal", id);
    s_short_id (ev->data, "outcome", outcome);
    funnel_rec_t *deal = s_need (st, id, "close", lead, err);
    if (!deal)
        return -1;
    bool won = streq (outcome, "won");
    if (won && deal_policy_close_won (s_rec_num (deal, "p", 0), funnel_rec_has (deal, "ap"),
                                      cfg->max_discount, why, sizeof why))
        return funnel_error_set (err, FUNNEL_ERR_CONFLICT, "outcome: deal %s: %s", id, why);
    int64_t now = funnel_state_now (st);
    int64_t value = funnel_rec_int (deal, "v", funnel_rec_int (deal, "a", 0));
    int g = (int) funnel_rec_int (deal, "g", 0);
    char rep [ID_MAX], camp [ID_MAX] = "";
    snprintf (rep, sizeof rep, "%s", funnel_rec_str (deal, "r"));
    const char *c = funnel_rec_str (deal, "c");
    if (c)
        snprintf (camp, sizeof camp, "%s", c);
    const char *campaign = c ? camp : NULL;
    bool expansion = streq (s_kind (deal), "expansion");
    if (s_stage_time (st, g, funnel_rec_int (deal, "ts", funnel_rec_int (deal, "t0", 0)))
    ||  s_tally_stage (st, g, -1, -value) || s_tally_rep (st, rep, -1, -value))
        return UNAVAILABLE (err);
    funnel_state_timer_cancel_in (st, lead, "t", id);
    funnel_rec_set_str (deal, "s", won ? "w" : "l");
    funnel_rec_set_int (deal, "tc", now);
    funnel_rec_t *tot = s_global (st, "tot");
    if (!tot)
        return UNAVAILABLE (err);
    const char *deal_lead = s_deal_lead (deal, lead);
    char lead_copy [ID_MAX];
    snprintf (lead_copy, sizeof lead_copy, "%s", deal_lead);
    const msgpack_object *reason_obj = event_codec_map_get (ev->data, "reason");
    int forgotten = s_lead_forgotten (st, deal, lead);
    if (forgotten < 0)
        return UNAVAILABLE (err);
    entry_t e;
    msgpack_packer *pk;
    if (won) {
        if (forgotten)
            reason_obj = NULL;
        funnel_rec_add (tot, "w", 1);
        funnel_rec_add (tot, "rv", value);
        s_count_stage (st, "won", ev->ts, campaign, 1);
        s_count_stage (st, "revenue", ev->ts, campaign, value);
        if (expansion) {
            s_count_stage (st, "won_expansion", ev->ts, campaign, 1);
            s_count_stage (st, "revenue_expansion", ev->ts, campaign, value);
        }
        if (s_agg (st, "cycle_ms", now - funnel_rec_int (deal, "t0", 0))
        ||  s_agg (st, "cycle_n", 1))
            return UNAVAILABLE (err);
        pk = s_entry_begin (&e, st, "close", 2 + !!reason_obj);
        msgpack_kv_put_str (pk, "outcome", "won");
        msgpack_kv_put_int (pk, "amount", value);
        if (reason_obj) {
            event_codec_pack_cstr (pk, "reason");
            msgpack_pack_object (pk, *reason_obj);
        }
        s_entry_end (&e, st, deal, lead, id);
        pk = funnel_state_data (st);
        msgpack_pack_map (pk, 6 + !!campaign);
        msgpack_kv_put_str (pk, "deal", id);
        msgpack_kv_put_str (pk, "lead", lead_copy);
        msgpack_kv_put_int (pk, "amount", value);
        if (campaign)
            msgpack_kv_put_str (pk, "campaign", campaign);
        msgpack_kv_put_str (pk, "kind", expansion ? "expansion" : "new");
        msgpack_kv_put_str (pk, "rep", rep);
        msgpack_kv_put_int (pk, "at", ev->ts);
        funnel_state_emit (st, "deal.won", NULL);
    }
    else {
        char reason [300] = "unspecified";
        if (reason_obj && forgotten)
            snprintf (reason, sizeof reason, "redacted");
        else
        if (reason_obj)
            event_codec_obj_strcpy (reason_obj, reason, sizeof reason);
        funnel_rec_set_str (deal, "y", reason);
        funnel_rec_add (tot, "l", 1);
        if (s_reason (st, reason))
            return UNAVAILABLE (err);
        s_count_stage (st, "lost", ev->ts, campaign, 1);
        pk = s_entry_begin (&e, st, "close", 3);
        msgpack_kv_put_str (pk, "outcome", "lost");
        msgpack_kv_put_int (pk, "amount", value);
        msgpack_kv_put_str (pk, "reason", reason);
        s_entry_end (&e, st, deal, lead, id);
        pk = funnel_state_data (st);
        msgpack_pack_map (pk, 3);
        msgpack_kv_put_str (pk, "deal", id);
        msgpack_kv_put_str (pk, "lead", lead_copy);
        msgpack_kv_put_str (pk, "reason", reason);
        funnel_state_emit (st, "deal.lost", NULL);
        funnel_state_personal (st, lead_copy);
    }
    return 0;
}

static int
s_on_deliver (funnel_state_t *st, const funnel_event_t *ev, funnel_error_t *err)
{
    char id [ID_MAX], lead [ID_MAX];
    s_short_id (ev->data, "deal", id);
    funnel_rec_t *deal = s_need (st, id, "deliver", lead, err);
    if (!deal)
        return -1;
    funnel_rec_set_str (deal, "s", "d");
    funnel_rec_set_int (deal, "td", funnel_state_now (st));
    entry_t e;
    s_entry_begin (&e, st, "deliver", 0);
    s_entry_end (&e, st, deal, lead, id);
    funnel_state_count (st, "delivered", 1);
    msgpack_packer *pk = funnel_state_data (st);
    msgpack_pack_map (pk, 3);
    msgpack_kv_put_str (pk, "deal", id);
    msgpack_kv_put_str (pk, "lead", s_deal_lead (deal, lead));
    msgpack_kv_put_int (pk, "amount", funnel_rec_int (deal, "v", funnel_rec_int (deal, "a", 0)));
    funnel_state_emit (st, "deal.delivered", NULL);
    return 0;
}

//  ---------------------------------------------------------------------
//  Timers

//  Speed to lead: a lead.sql deal with no first interaction by its due time
//  goes to another available rep
static int
s_fire_sla (funnel_state_t *st, const char *id, const char *lead, funnel_rec_t *deal,
            funnel_error_t *err)
{
    char key [ID_MAX + 8];
    char rep [ID_MAX], new_rep [ID_MAX];
    snprintf (rep, sizeof rep, "%s", funnel_rec_str (deal, "r"));
    bool failed = false;
    const char *next = s_pool_rep (st, rep, &failed);
    if (failed)
        return UNAVAILABLE (err);
    snprintf (new_rep, sizeof new_rep, "%s", next);
    if (!streq (new_rep, rep)) {
        int64_t value = funnel_rec_int (deal, "v", funnel_rec_int (deal, "a", 0));
        if (s_tally_rep (st, rep, -1, -value) || s_tally_rep (st, new_rep, 1, value))
            return UNAVAILABLE (err);
        funnel_rec_set_str (deal, "r", new_rep);
        funnel_state_count (st, "reassigned", 1);
    }
    funnel_rec_set_str (deal, "sb", "1");
    entry_t e;
    msgpack_packer *pk = s_entry_begin (&e, st, "sla_breached", 2);
    msgpack_kv_put_str (pk, "rep", rep);
    msgpack_kv_put_str (pk, "new_rep", new_rep);
    s_entry_end (&e, st, deal, lead, id);
    funnel_state_count (st, "sla_breached", 1);
    pk = funnel_state_data (st);
    msgpack_pack_map (pk, 4);
    msgpack_kv_put_str (pk, "deal", id);
    msgpack_kv_put_str (pk, "lead", s_deal_lead (deal, lead));
    msgpack_kv_put_str (pk, "rep", rep);
    msgpack_kv_put_str (pk, "new_rep", new_rep);
    snprintf (key, sizeof key, "sla|%s", id);
    funnel_state_emit (st, "deal.sla_breached", key);
    return 0;
}

//  Stale deals: open deals without an interaction for stale_days, reported
//  once per idle spell (an interaction re-arms the timer)
static int
s_fire_stale (funnel_state_t *st, const char *id, const char *lead, funnel_rec_t *deal)
{
    char key [ID_MAX + 40];
    int64_t since = s_idle_since (deal);
    int64_t days = (int64_t) floor ((double) (funnel_state_now (st) - since) / DAY_MS);
    funnel_rec_set_str (deal, "sl", "1");
    entry_t e;
    msgpack_packer *pk = s_entry_begin (&e, st, "stalled", 1);
    msgpack_kv_put_int (pk, "days", days);
    s_entry_end (&e, st, deal, lead, id);
    funnel_state_count (st, "stalled", 1);
    pk = funnel_state_data (st);
    msgpack_pack_map (pk, 4);
    msgpack_kv_put_str (pk, "deal", id);
    msgpack_kv_put_str (pk, "lead", s_deal_lead (deal, lead));
    msgpack_kv_put_str (pk, "rep", funnel_rec_str (deal, "r"));
    msgpack_kv_put_int (pk, "days", days);
    snprintf (key, sizeof key, "stalled|%s|%" PRId64, id, since);
    funnel_state_emit (st, "deal.stalled", key);
    return 0;
}

//  A deal's timer: speed to lead first, then staleness, whichever is due;
//  then armed again for what is left
static int
s_fire (funnel_state_t *st, const char *id, int64_t due, funnel_error_t *err)
{
    (void) due;
    settings_t *cfg = s_cfg (st);
    int64_t now = funnel_state_now (st);
    char lead [ID_MAX];
    funnel_rec_t *deal = s_deal (st, id, lead);
    if (!deal)
        return UNAVAILABLE (err);
    const char *status = s_status (deal);
    if (!status || !streq (status, "open"))
        return 0;
    if (s_sla_pending (cfg, deal) && funnel_rec_int (deal, "t0", 0) + cfg->sla_ms <= now
    &&  s_fire_sla (st, id, lead, deal, err))
        return -1;
    if (!funnel_rec_has (deal, "sl") && s_idle_since (deal) + cfg->stale_ms <= now
    &&  s_fire_stale (st, id, lead, deal))
        return -1;
    s_arm_deal (st, lead, id, deal);
    return 0;
}

//  ---------------------------------------------------------------------
//  Reports

//  The deal's history entries (msgpack maps), oldest first; NULL if Redis
//  is unavailable.
static zlist_t *
s_entries (funnel_state_t *st, funnel_rec_t *deal, const char *lead, const char *id)
{
    zlist_t *raw;
    if (funnel_rec_has (deal, "hl"))
        raw = funnel_state_list_in (st, lead, "dl", id, HISTORY_MAX);
    else {
        raw = zlist_new ();
        zlist_autofree (raw);
        for (int i = 0; i < HIST_INLINE; i++) {
            char field [16];
            snprintf (field, sizeof field, "h%d", i);
            const char *h = funnel_rec_str (deal, field);
            if (!h)
                break;
            zlist_append (raw, (void *) h);
        }
    }
    if (!raw)
        return NULL;
    zlist_t *out = zlist_new ();
    char *bytes = NULL;
    size_t bytes_max = 0;
    for (char *text = (char *) zlist_first (raw); text; text = (char *) zlist_next (raw)) {
        size_t len = strlen (text);
        if (len > bytes_max) {
            bytes_max = len;
            bytes = (char *) realloc (bytes, bytes_max);
        }
        size_t n = s_unescape (text, len, bytes);
        msgpack_sbuffer map;
        msgpack_sbuffer_init (&map);
        msgpack_packer pk;
        msgpack_packer_init (&pk, &map, msgpack_sbuffer_write);
        if (s_expand (bytes, n, deal, &pk) == 0)
            zlist_append (out, zchunk_new (map.data, map.size));
        msgpack_sbuffer_destroy (&map);
    }
    free (bytes);
    zlist_destroy (&raw);
    return out;
}

static int
s_expand (const char *data, size_t size, funnel_rec_t *deal, msgpack_packer *pk)
{
    msgpack_unpacked u;
    msgpack_unpacked_init (&u);
    int rc = -1;
    if (msgpack_unpack_next (&u, data, size, NULL) == MSGPACK_UNPACK_SUCCESS
    &&  u.data.type == MSGPACK_OBJECT_ARRAY && u.data.via.array.size >= 2) {
        const msgpack_object *a = u.data.via.array.ptr;
        uint32_t count = u.data.via.array.size;
        int64_t code = a [0].via.i64;
        int schemas = (int) (sizeof s_schemas / sizeof s_schemas [0]) - 1;
        if (a [0].type == MSGPACK_OBJECT_POSITIVE_INTEGER && code < schemas) {
            const schema_t *schema = &s_schemas [code];
            bool open = code == 0;
            int fields = 2 + 2 * open;
            for (uint32_t f = 2; f < count; f++)
                fields += a [f].type != MSGPACK_OBJECT_NIL;
            msgpack_pack_map (pk, fields);
            msgpack_kv_put_str (pk, "e", schema->what);
            msgpack_kv_put_int (pk, "at", funnel_rec_int (deal, "t0", 0) + (a [1].type
                      == MSGPACK_OBJECT_NEGATIVE_INTEGER ? a [1].via.i64 : (int64_t) a [1].via.u64));
            if (open) {
                msgpack_kv_put_str (pk, "kind", s_kind (deal));
                msgpack_kv_put_str (pk, "src", s_src (deal));
            }
            for (uint32_t f = 2; f < count && f - 2 < 5 && schema->fields [f - 2]; f++) {
                if (a [f].type == MSGPACK_OBJECT_NIL)
                    continue;
                const char *name = schema->fields [f - 2];
                if (s_is_stage_field (name) && a [f].type == MSGPACK_OBJECT_POSITIVE_INTEGER
                &&  a [f].via.u64 < DEAL_STAGES)
                    msgpack_kv_put_str (pk, name, deal_policy_stages [a [f].via.u64]);
                else {
                    event_codec_pack_cstr (pk, name);
                    msgpack_pack_object (pk, a [f]);
                }
            }
            rc = 0;
        }
    }
    msgpack_unpacked_destroy (&u);
    return rc;
}

static void
s_entries_destroy (zlist_t **list_p)
{
    if (!*list_p)
        return;
    zchunk_t *chunk;
    while ((chunk = (zchunk_t *) zlist_pop (*list_p)))
        zchunk_destroy (&chunk);
    zlist_destroy (list_p);
}

static const msgpack_object *
s_entry_get (const msgpack_object *map, const char *key)
{
    return event_codec_map_get (map, key);
}

static int
s_get_deal (funnel_state_t *st, const msgpack_object *req, msgpack_packer *pk,
            funnel_error_t *err)
{
    settings_t *cfg = s_cfg (st);
    char id [ID_MAX], lead [ID_MAX];
    if (!s_short_id (req, "id", id))
        return funnel_error_set (err, FUNNEL_ERR_INVALID,
                                 "id: required deal id (1-64 bytes) is missing");
    funnel_rec_t *deal = s_deal (st, id, lead);
    if (!deal)
        return UNAVAILABLE (err);
    if (!funnel_rec_exists (deal))
        return funnel_error_set (err, FUNNEL_ERR_NOT_FOUND, "id: no deal %s", id);
    zlist_t *entries = s_entries (st, deal, lead, id);
    if (!entries)
        return UNAVAILABLE (err);
    size_t count = zlist_size (entries);
    msgpack_unpacked *parsed = (msgpack_unpacked *) zmalloc ((count + 1) * sizeof *parsed);
    size_t n = 0, interactions = 0, offers = 0, stage_changes = 0;
    for (zchunk_t *c = (zchunk_t *) zlist_first (entries); c; c = (zchunk_t *) zlist_next (entries)) {
        msgpack_unpacked_init (&parsed [n]);
        if (msgpack_unpack_next (&parsed [n], (const char *) zchunk_data (c), zchunk_size (c),
                                 NULL) != MSGPACK_UNPACK_SUCCESS
        ||  parsed [n].data.type != MSGPACK_OBJECT_MAP) {
            msgpack_unpacked_destroy (&parsed [n]);
            continue;
        }
        char e [32] = "";
        event_codec_obj_strcpy (s_entry_get (&parsed [n].data, "e"), e, sizeof e);
        interactions += streq (e, "interaction");
        offers += streq (e, "offer");
        stage_changes += streq (e, "stage");
        n++;
    }
    //  Objections per interaction, a repeat within one counted once
    const char *names [8] = { NULL };
    int64_t counts [8] = { 0 };
    size_t n_names = 0;
    int64_t t0 = funnel_rec_int (deal, "t0", 0);
    const char *status = s_status (deal);
    bool open = status && streq (status, "open");
    double pct = s_rec_num (deal, "p", 0);
    bool has_pct = funnel_rec_has (deal, "p");
    bool approved = funnel_rec_has (deal, "ap");
    const char *campaign = funnel_rec_str (deal, "c");
    const char *why = funnel_rec_str (deal, "y");
    char objection_names [8][ID_MAX];
    for (size_t i = 0; i < n; i++) {
        char e [32] = "";
        event_codec_obj_strcpy (s_entry_get (&parsed [i].data, "e"), e, sizeof e);
        const msgpack_object *o = s_entry_get (&parsed [i].data, "objections");
        if (!streq (e, "interaction") || !o || o->type != MSGPACK_OBJECT_ARRAY)
            continue;
        for (uint32_t j = 0; j < o->via.array.size; j++) {
            char name [ID_MAX];
            if (!event_codec_obj_strcpy (&o->via.array.ptr [j], name, sizeof name))
                continue;
            bool repeat = false;
            for (uint32_t k = 0; k < j; k++) {
                char other [ID_MAX];
                if (event_codec_obj_strcpy (&o->via.array.ptr [k], other, sizeof other)
                &&  streq (other, name))
                    repeat = true;
            }
            if (repeat)
                continue;
            size_t at = 0;
            while (at < n_names && !streq (names [at], name))
                at++;
            if (at == n_names && n_names < 8) {
                snprintf (objection_names [n_names], ID_MAX, "%s", name);
                names [n_names] = objection_names [n_names];
                n_names++;
            }
            if (at < 8)
                counts [at]++;
        }
    }
    int fields = 20 + open + has_pct + !!campaign + !!why
               + funnel_rec_has (deal, "t1") + funnel_rec_has (deal, "tl")
               + funnel_rec_has (deal, "tc") + funnel_rec_has (deal, "td") + (n_names > 0);
    msgpack_pack_map (pk, fields);
    msgpack_kv_put_str (pk, "deal", id);
    msgpack_kv_put_str (pk, "lead", s_deal_lead (deal, lead));
    msgpack_kv_put_str (pk, "rep", funnel_rec_str (deal, "r"));
    msgpack_kv_put_str (pk, "kind", s_kind (deal));
    msgpack_kv_put_str (pk, "source", s_src (deal));
    msgpack_kv_put_str (pk, "status", status ? status : "open");
    if (open)
        msgpack_kv_put_str (pk, "stage", s_stage (deal));
    msgpack_kv_put_str (pk, "last_stage", s_stage (deal));
    msgpack_kv_put_int (pk, "amount", funnel_rec_int (deal, "v", funnel_rec_int (deal, "a", 0)));
    msgpack_kv_put_int (pk, "open_amount", funnel_rec_int (deal, "a", 0));
    if (has_pct)
        msgpack_kv_put_number (pk, "discount_pct", pct);
    event_codec_pack_cstr (pk, "approved");
    approved ? msgpack_pack_true (pk) : msgpack_pack_false (pk);
    event_codec_pack_cstr (pk, "approval_required");
    deal_policy_needs_approval (pct, cfg->max_discount) && !approved
        ? msgpack_pack_true (pk) : msgpack_pack_false (pk);
    if (campaign)
        msgpack_kv_put_str (pk, "campaign", campaign);
    if (why)
        msgpack_kv_put_str (pk, "lost_reason", why);
    msgpack_kv_put_int (pk, "opened_at", t0);
    int64_t ts = funnel_rec_int (deal, "ts", t0);
    msgpack_kv_put_int (pk, "stage_since", ts);
    //  Stages from the history: each stage's time until the next change
    int64_t last_since = t0;
    for (size_t i = 0; i < n; i++) {
        char e [32] = "";
        event_codec_obj_strcpy (s_entry_get (&parsed [i].data, "e"), e, sizeof e);
        if (streq (e, "stage"))
            last_since = s_int (&parsed [i].data, "at", 0);
    }
    int64_t end = funnel_rec_has (deal, "tc") ? funnel_rec_int (deal, "tc", 0)
                                              : funnel_state_now (st);
    msgpack_kv_put_int (pk, "time_in_stage_ms", end - last_since);
    const char *times [][2] = { { "first_interaction_at", "t1" },
                                { "last_interaction_at", "tl" },
                                { "closed_at", "tc" }, { "delivered_at", "td" } };
    for (int i = 0; i < 4; i++)
        if (funnel_rec_has (deal, times [i][1]))
            msgpack_kv_put_int (pk, times [i][0], funnel_rec_int (deal, times [i][1], 0));
    event_codec_pack_cstr (pk, "sla_breached");
    funnel_rec_has (deal, "sb") ? msgpack_pack_true (pk) : msgpack_pack_false (pk);
    event_codec_pack_cstr (pk, "stalled");
    funnel_rec_has (deal, "sl") ? msgpack_pack_true (pk) : msgpack_pack_false (pk);
    event_codec_pack_cstr (pk, "history");
    msgpack_pack_array (pk, n);
    for (size_t i = 0; i < n; i++)
        msgpack_pack_object (pk, parsed [i].data);
    const char *lists [] = { "interactions", "interaction", "offers", "offer" };
    size_t sizes [] = { interactions, offers };
    for (int l = 0; l < 2; l++) {
        event_codec_pack_cstr (pk, lists [2 * l]);
        msgpack_pack_array (pk, sizes [l]);
        for (size_t i = 0; i < n; i++) {
            char e [32] = "";
            event_codec_obj_strcpy (s_entry_get (&parsed [i].data, "e"), e, sizeof e);
            if (streq (e, lists [2 * l + 1]))
                msgpack_pack_object (pk, parsed [i].data);
        }
    }
    event_codec_pack_cstr (pk, "stages");
    msgpack_pack_array (pk, stage_changes + 1);
    const char *stage = DEAL_FIRST_STAGE;
    char stage_buf [ID_MAX];
    int64_t since = t0;
    for (size_t i = 0; i < n; i++) {
        char e [32] = "";
        event_codec_obj_strcpy (s_entry_get (&parsed [i].data, "e"), e, sizeof e);
        if (!streq (e, "stage"))
            continue;
        int64_t at = s_int (&parsed [i].data, "at", 0);
        msgpack_pack_map (pk, 3);
        msgpack_kv_put_str (pk, "stage", stage);
        msgpack_kv_put_int (pk, "since", since);
        msgpack_kv_put_int (pk, "ms", at - since);
        event_codec_obj_strcpy (s_entry_get (&parsed [i].data, "to"), stage_buf, sizeof stage_buf);
        stage = stage_buf;
        since = at;
    }
    msgpack_pack_map (pk, 3);
    msgpack_kv_put_str (pk, "stage", stage);
    msgpack_kv_put_int (pk, "since", since);
    msgpack_kv_put_int (pk, "ms", end - since);
    if (n_names > 0) {
        event_codec_pack_cstr (pk, "objections");
        msgpack_pack_map (pk, n_names);
        for (size_t i = 0; i < n_names; i++)
            msgpack_kv_put_int (pk, names [i], counts [i]);
    }
    for (size_t i = 0; i < n; i++)
        msgpack_unpacked_destroy (&parsed [i]);
    free (parsed);
    s_entries_destroy (&entries);
    return 0;
}

typedef struct {
    const char *name;
    int64_t count;
} top_t;

static int
s_top_cmp (const void *a, const void *b)
{
    const top_t *x = (const top_t *) a, *y = (const top_t *) b;
    if (x->count != y->count)
        return x->count > y->count ? -1 : 1;
    return -strcmp (x->name, y->name);          //  As ZREVRANGE: ties by name, reversed
}

//  A record's fields as [{label: name, count}], highest counts first, at most n.
static void
s_pack_top (funnel_rec_t *rec, const char *label, size_t n, msgpack_packer *pk)
{
    zlist_t *names = funnel_rec_fields (rec);
    size_t count = zlist_size (names), used = 0;
    top_t *tops = (top_t *) zmalloc ((count + 1) * sizeof (top_t));
    for (const char *name = (const char *) zlist_first (names); name;
         name = (const char *) zlist_next (names)) {
        int64_t v = funnel_rec_int (rec, name, 0);
        if (v > 0)
            tops [used++] = (top_t) { name, v };
    }
    qsort (tops, used, sizeof (top_t), s_top_cmp);
    if (used > n)
        used = n;
    msgpack_pack_array (pk, used);
    for (size_t i = 0; i < used; i++) {
        msgpack_pack_map (pk, 2);
        msgpack_kv_put_str (pk, label, tops [i].name);
        msgpack_kv_put_int (pk, "count", tops [i].count);
    }
    free (tops);
    zlist_destroy (&names);
}

static int
s_get_pipeline (funnel_state_t *st, const msgpack_object *req, msgpack_packer *pk,
                funnel_error_t *err)
{
    (void) req;
    settings_t *cfg = s_cfg (st);
    funnel_rec_t *bystage = s_global (st, "bystage");
    funnel_rec_t *agg = bystage ? s_global (st, "agg") : NULL;
    funnel_rec_t *byrep = agg ? s_global (st, "byrep") : NULL;
    funnel_rec_t *obj = byrep ? s_global (st, "obj") : NULL;
    funnel_rec_t *rsn = obj ? s_global (st, "rsn") : NULL;
    funnel_rec_t *tot = rsn ? s_global (st, "tot") : NULL;
    if (!tot)
        return UNAVAILABLE (err);
    int64_t amounts [DEAL_STAGES], open = 0, open_amount = 0;
    msgpack_pack_map (pk, 13);
    event_codec_pack_cstr (pk, "stages");
    msgpack_pack_array (pk, DEAL_STAGES);
    for (int s = 0; s < DEAL_STAGES; s++) {
        char f [16];
        snprintf (f, sizeof f, "n%d", s);
        int64_t n = funnel_rec_int (bystage, f, 0);
        snprintf (f, sizeof f, "a%d", s);
        amounts [s] = funnel_rec_int (bystage, f, 0);
        open += n;
        open_amount += amounts [s];
        int64_t only [DEAL_STAGES] = { 0 };
        only [s] = amounts [s];
        snprintf (f, sizeof f, "ms:%d", s);
        int64_t ms = funnel_rec_int (agg, f, 0);
        snprintf (f, sizeof f, "n:%d", s);
        int64_t ms_n = funnel_rec_int (agg, f, 0);
        msgpack_pack_map (pk, 6);
        msgpack_kv_put_str (pk, "stage", deal_policy_stages [s]);
        msgpack_kv_put_int (pk, "count", n);
        msgpack_kv_put_int (pk, "amount", amounts [s]);
        msgpack_kv_put_number (pk, "probability", cfg->probability [s]);
        msgpack_kv_put_int (pk, "weighted", deal_policy_forecast (only, cfg->probability));
        msgpack_kv_put_int (pk, "avg_time_in_stage_ms", deal_policy_mean (ms, ms_n));
    }
    msgpack_kv_put_int (pk, "open", open);
    msgpack_kv_put_int (pk, "open_amount", open_amount);
    //  Reps with open deals, by name
    zlist_t *names = funnel_rec_fields (byrep);
    size_t reps = 0;
    for (const char *f = (const char *) zlist_first (names); f; f = (const char *) zlist_next (names))
        reps += strncmp (f, "n:", 2) == 0 && funnel_rec_int (byrep, f, 0) > 0;
    event_codec_pack_cstr (pk, "reps");
    msgpack_pack_array (pk, reps);
    for (const char *f = (const char *) zlist_first (names); f; f = (const char *) zlist_next (names)) {
        if (strncmp (f, "n:", 2) != 0 || funnel_rec_int (byrep, f, 0) <= 0)
            continue;
        char a [ID_MAX + 4];
        snprintf (a, sizeof a, "a:%s", f + 2);
        msgpack_pack_map (pk, 3);
        msgpack_kv_put_str (pk, "rep", f + 2);
        msgpack_kv_put_int (pk, "count", funnel_rec_int (byrep, f, 0));
        msgpack_kv_put_int (pk, "amount", funnel_rec_int (byrep, a, 0));
    }
    zlist_destroy (&names);
    int64_t won = funnel_rec_int (tot, "w", 0), lost = funnel_rec_int (tot, "l", 0);
    msgpack_kv_put_int (pk, "forecast", deal_policy_forecast (amounts, cfg->probability));
    msgpack_kv_put_int (pk, "won", won);
    msgpack_kv_put_int (pk, "lost", lost);
    msgpack_kv_put_int (pk, "revenue", funnel_rec_int (tot, "rv", 0));
    msgpack_kv_put_number (pk, "win_rate", deal_policy_win_rate (won, lost));
    msgpack_kv_put_int (pk, "avg_cycle_ms", deal_policy_mean (funnel_rec_int (agg, "cycle_ms", 0),
                                                    funnel_rec_int (agg, "cycle_n", 0)));
    msgpack_kv_put_int (pk, "avg_speed_to_lead_ms", deal_policy_mean (funnel_rec_int (agg, "stl_ms", 0),
                                                            funnel_rec_int (agg, "stl_n", 0)));
    event_codec_pack_cstr (pk, "top_objections");
    s_pack_top (obj, "objection", 10, pk);
    event_codec_pack_cstr (pk, "lost_reasons");
    s_pack_top (rsn, "reason", 10, pk);
    return 0;
}

//  ---------------------------------------------------------------------
//  Settings

static void
s_teardown (void **arg)
{
    settings_t *cfg = (settings_t *) *arg;
    if (!cfg)
        return;
    for (size_t i = 0; i < cfg->rep_count; i++)
        free (cfg->reps [i]);
    free (cfg->reps);
    free (cfg);
    *arg = NULL;
}

static double
s_rules_num (const msgpack_object *map, const char *key, double dflt)
{
    double v;
    return msgpack_kv_get_number (map, key, &v) ? v : dflt;
}

static int
s_setup (funnel_config_t *config, const char *section, void **arg)
{
    (void) section;
    //  The settings as sales_rules.c reads and checks them (one source)
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init (&sbuf);
    msgpack_packer pk;
    msgpack_packer_init (&pk, &sbuf, msgpack_sbuffer_write);
    if (sales_pack_rules (config, &pk) != 0) {
        msgpack_sbuffer_destroy (&sbuf);
        return -1;
    }
    settings_t *cfg = (settings_t *) zmalloc (sizeof (settings_t));
    msgpack_unpacked u;
    msgpack_unpacked_init (&u);
    int rc = -1;
    if (msgpack_unpack_next (&u, sbuf.data, sbuf.size, NULL) == MSGPACK_UNPACK_SUCCESS) {
        const msgpack_object *rules = &u.data;
        cfg->max_discount = s_rules_num (rules, "max_discount_pct", 20);
        cfg->sla_ms = (int64_t) floor (s_rules_num (rules, "sla_s", 1800) * 1000);
        cfg->stale_ms = (int64_t) floor (s_rules_num (rules, "stale_days", 14) * DAY_MS);
        const msgpack_object *prob = event_codec_map_get (rules, "probability");
        for (int s = 0; s < DEAL_STAGES; s++)
            cfg->probability [s] = prob ? s_rules_num (prob, deal_policy_stages [s], 0) : 0;
        const msgpack_object *reps = event_codec_map_get (rules, "reps");
        if (reps && reps->type == MSGPACK_OBJECT_ARRAY && reps->via.array.size) {
            cfg->reps = (char **) zmalloc (reps->via.array.size * sizeof (char *));
            for (uint32_t i = 0; i < reps->via.array.size; i++) {
                char name [ID_MAX];
                if (event_codec_obj_strcpy (&reps->via.array.ptr [i], name, sizeof name))
                    cfg->reps [cfg->rep_count++] = strdup (name);
            }
        }
        rc = 0;
    }
    msgpack_unpacked_destroy (&u);
    msgpack_sbuffer_destroy (&sbuf);
    *arg = cfg;
    if (rc != 0) {
        log_error ("sales: settings could not be read");
        s_teardown (arg);
    }
    return rc;
}

//  ---------------------------------------------------------------------

static const funnel_rule_t s_on [] = {
    { "deal.open", s_on_open, s_want_open },
    { "deal.interaction", s_on_interaction, s_want_cmd },
    { "deal.offer", s_on_offer, s_want_cmd },
    { "deal.approve", s_on_approve, s_want_cmd },
    { "deal.stage", s_on_stage, s_want_cmd },
    { "deal.close", s_on_close, s_want_cmd },
    { "deal.deliver", s_on_deliver, s_want_cmd },
    { NULL }
};
static int s_on_forgotten (funnel_state_t *st, const funnel_event_t *ev, funnel_error_t *err);
static const funnel_rule_t s_consume [] = {
    { "lead.sql", s_on_lead_sql, s_want_lead },
    { "customer.upsell", s_on_upsell, s_want_lead },
    { "lead.forgotten", s_on_forgotten, s_want_lead },
    { NULL }
};
//  ---------------------------------------------------------------------
//  Privacy (proto/privacy.md): lead.forgotten erases the free text of the
//  lead's deals (interaction texts, close and lost reasons); amounts,
//  stages, times and reps stay, and so do the tallies

//  The lead's deal ids: L<lead>-1..n, X<lead>-1..xn and those it lists
static zlist_t *
s_deals_of (funnel_rec_t *lrec, const char *lead)
{
    zlist_t *ids = zlist_new ();
    zlist_autofree (ids);
    const char *prefixes [] = { "L", "X" };
    const char *counters [] = { "n", "xn" };
    char id [ID_MAX];
    for (int k = 0; k < 2; k++)
        for (int64_t n = 1; n <= funnel_rec_int (lrec, counters [k], 0); n++) {
            deal_policy_deal_id (prefixes [k], lead, n, id, sizeof id);
            zlist_append (ids, id);
        }
    zlist_t *fields = funnel_rec_fields (lrec);
    for (const char *f = zlist_first (fields); f; f = zlist_next (fields))
        if (f [0] == '@')
            zlist_append (ids, (void *) (f + 1));
    zlist_destroy (&fields);
    return ids;
}

//  One stored history entry with its free text (interaction text, close
//  reason) made nil; NULL when it has none. Caller frees.
static char *
s_entry_redact (const char *text, size_t size, size_t *out_size)
{
    char *raw = (char *) malloc (size + 1);
    size_t raw_size = s_unescape (text, size, raw);
    msgpack_unpacked u;
    msgpack_unpacked_init (&u);
    char *out = NULL;
    if (msgpack_unpack_next (&u, raw, raw_size, NULL) == MSGPACK_UNPACK_SUCCESS
    &&  u.data.type == MSGPACK_OBJECT_ARRAY && u.data.via.array.size > 2) {
        const msgpack_object_array *a = &u.data.via.array;
        int code = (int) a->ptr [0].via.i64;
        int hit = -1;
        for (int c = 0; c <= code && s_schemas [c].what; c++)
            if (c == code)
                for (int f = 0; s_schemas [c].fields [f]; f++)
                    if (streq (s_schemas [c].fields [f], "text")
                    ||  streq (s_schemas [c].fields [f], "reason"))
                        hit = f + 2;
        if (hit > 0 && (uint32_t) hit < a->size && a->ptr [hit].type != MSGPACK_OBJECT_NIL) {
            msgpack_sbuffer sbuf;
            msgpack_sbuffer_init (&sbuf);
            msgpack_packer pk;
            msgpack_packer_init (&pk, &sbuf, msgpack_sbuffer_write);
            msgpack_pack_array (&pk, a->size);
            for (uint32_t i = 0; i < a->size; i++)
                if ((int) i == hit)
                    msgpack_pack_nil (&pk);
                else
                    msgpack_pack_object (&pk, a->ptr [i]);
            zchunk_t *escaped = zchunk_new (NULL, sbuf.size * 2 + 1);
            s_escape (sbuf.data, sbuf.size, escaped);
            *out_size = zchunk_size (escaped);
            out = (char *) malloc (*out_size + 1);
            memcpy (out, zchunk_data (escaped), *out_size);
            out [*out_size] = 0;
            zchunk_destroy (&escaped);
            msgpack_sbuffer_destroy (&sbuf);
        }
    }
    msgpack_unpacked_destroy (&u);
    free (raw);
    return out;
}

//  Erases one deal's free text: inline history fields, the spilled list
//  (rewritten whole, in the commit), the lost reason
static int
s_forget_deal (funnel_state_t *st, const char *lead, const char *id, funnel_rec_t *deal)
{
    char field [16];
    for (int i = 0; i < HIST_INLINE; i++) {
        snprintf (field, sizeof field, "h%d", i);
        const char *h = funnel_rec_str (deal, field);
        size_t size;
        char *text = h ? s_entry_redact (h, strlen (h), &size) : NULL;
        if (text)
            funnel_rec_set_str (deal, field, text);
        free (text);
    }
    const char *reason = funnel_rec_str (deal, "y");
    if (reason) {
        //  The top lost reasons are keyed by their text: the deal's count
        //  moves to "redacted", so the total stays and the text goes
        funnel_rec_t *rsn = s_global (st, "rsn");
        if (!rsn)
            return -1;
        char key [80];
        deal_policy_reason_key (reason, key, sizeof key);
        if (funnel_rec_int (rsn, key, 0) > 0) {
            if (funnel_rec_add (rsn, key, -1) == 0)
                funnel_rec_del (rsn, key);
            funnel_rec_add (rsn, "redacted", 1);
        }
        funnel_rec_del (deal, "y");
    }
    if (!funnel_rec_has (deal, "hl"))
        return 0;
    zlist_t *list = funnel_state_list_in (st, lead, "dl", id, HISTORY_MAX);
    char key [4096];
    if (!list)
        return -1;
    if (funnel_state_key_in (st, lead, "dl", id, key, sizeof key) == 0) {
        const char *del [] = { "DEL", key };
        funnel_state_raw (st, 2, del, NULL);
        for (const char *h = zlist_first (list); h; h = zlist_next (list)) {
            size_t size = strlen (h);
            char *text = s_entry_redact (h, strlen (h), &size);
            const char *rpush [] = { "RPUSH", key, text ? text : h };
            size_t lens [] = { 5, strlen (key), text ? size : strlen (h) };
            funnel_state_raw (st, 3, rpush, lens);
            free (text);
        }
    }
    zlist_destroy (&list);
    return 0;
}

//  The ids of the deals that exist and belong to the lead (a zlist of
//  strings the caller destroys), NULL if a read failed.
static zlist_t *
s_own_deals (funnel_state_t *st, funnel_rec_t *lrec, const char *lead)
{
    zlist_t *ids = s_deals_of (lrec, lead);
    zlist_t *mine = zlist_new ();
    zlist_autofree (mine);
    for (const char *id = zlist_first (ids); id && mine; id = zlist_next (ids)) {
        char owner [ID_MAX];
        funnel_rec_t *deal = s_deal (st, id, owner);
        if (!deal)
            zlist_destroy (&mine);
        else
        if (funnel_rec_exists (deal) && streq (owner, lead))
            zlist_append (mine, (void *) id);
    }
    zlist_destroy (&ids);
    return mine;
}

static int
s_on_forgotten (funnel_state_t *st, const funnel_event_t *ev, funnel_error_t *err)
{
    char lead [ID_MAX];
    if (!s_short_id (ev->data, "lead", lead))
        return funnel_error_set (err, FUNNEL_ERR_INVALID, "data.lead: required id is missing");
    funnel_rec_t *lrec = funnel_state_rec (st, "ld", lead);
    if (!lrec)
        return UNAVAILABLE (err);
    if (funnel_rec_has (lrec, "fg"))
        return 0;                               //  Twice: a no-op
    zlist_t *mine = s_own_deals (st, lrec, lead);
    int rc = mine ? 0 : -1;
    for (const char *id = mine ? zlist_first (mine) : NULL; id && rc == 0;
         id = zlist_next (mine)) {
        char owner [ID_MAX];
        rc = s_forget_deal (st, lead, id, s_deal (st, id, owner));
    }
    zlist_destroy (&mine);
    if (rc != 0)
        return UNAVAILABLE (err);
    funnel_rec_set_int (lrec, "fg", funnel_state_now (st));
    funnel_state_count (st, "forgotten", 1);
    return funnel_state_forget_outputs (st, lead) ? UNAVAILABLE (err) : 0;
}

//  GET export: the lead's record and each of its deals, as stored and as
//  GET deal shows them
static int
s_get_export (funnel_state_t *st, const msgpack_object *req, msgpack_packer *pk,
              funnel_error_t *err)
{
    char lead [ID_MAX];
    if (funnel_privacy_export_lead (req, lead, err))
        return -1;
    funnel_rec_t *lrec = funnel_state_rec (st, "ld", lead);
    if (!lrec)
        return UNAVAILABLE (err);
    zlist_t *mine = s_own_deals (st, lrec, lead);
    int rc = mine ? 0 : -1;
    //  The outbox entries that carry the person's data, by seq (REPLAY them)
    zlist_t *outbox = rc == 0 ? funnel_state_person_outputs (st, lead) : NULL;
    if (!outbox) {
        zlist_destroy (&mine);
        return UNAVAILABLE (err);
    }
    msgpack_pack_map (pk, 5);
    msgpack_kv_put_str (pk, "lead", lead);
    msgpack_kv_put_bool (pk, "forgotten", funnel_rec_has (lrec, "fg"));
    event_codec_pack_cstr (pk, "records");
    msgpack_pack_map (pk, funnel_rec_exists (lrec) + zlist_size (mine));
    if (funnel_rec_exists (lrec))
        funnel_rec_pack_entry (lrec, pk, "ld", lead);
    for (const char *id = zlist_first (mine); id; id = zlist_next (mine)) {
        char owner [ID_MAX];
        funnel_rec_pack_entry (s_deal (st, id, owner), pk, "d", id);
    }
    event_codec_pack_cstr (pk, "outbox");
    funnel_state_pack_seqs (outbox, pk);
    zlist_destroy (&outbox);
    event_codec_pack_cstr (pk, "deals");
    msgpack_pack_array (pk, zlist_size (mine));
    for (const char *id = zlist_first (mine); id; id = zlist_next (mine))
        funnel_query_pack_by_id (st, s_get_deal, id, pk);
    zlist_destroy (&mine);
    return 0;
}

static const funnel_query_rule_t s_queries [] = {
    { "deal", s_get_deal },
    { "pipeline", s_get_pipeline },
    { "export", s_get_export },
    { NULL }
};
static const funnel_timer_rule_t s_timers [] = {
    { "t", s_fire },
    { NULL }
};
static const char *const s_series [] = {
    "deals", "expansion", "won", "won_expansion", "lost", "revenue",
    "revenue_expansion", NULL };
static const char *const s_counters [] = {
    "deals", "won", "lost", "expansion", "revenue", "delivered",
    "won_expansion", "revenue_expansion", NULL };
//  What lead.forgotten redacts in the outbox: a lost deal's free-text reason
static const funnel_personal_t s_personal [] = {
    { "deal.lost", { "reason", NULL } },
    { NULL }
};

const funnel_rules_t sales_stage_rules = {
    .on = s_on, .consume = s_consume, .queries = s_queries, .timers = s_timers,
    .counters = s_counters, .series = s_series, .personal = s_personal,
    .setup = s_setup, .teardown = s_teardown
};
