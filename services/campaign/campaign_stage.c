/*  campaign_stage — the marketing stage's rules on funnel_state.

    Records (funnel_state.h keys; "global" = partition 0, see below):
      c:<contact>     the contact (its partition): h, h1.. touch history
                      (attribution.h), e engaged once, s stage reached
                      (1 lead .. 3 sql), x, x1.. conversion records (the
                      last conversions_max, see record_t), r<campaign n> /
                      b<bucket n> reach marks (1 reached, 2 engaged)
      wb:<customer>   a win-back member (its partition): state, since, ts,
                      health, reason, days_inactive
      global cmp:<id> a campaign: settings, counters, credits "<model><stage>"
      global cmpn:0   campaign number -> id (histories hold numbers)
      global bkt:<n>  a channel×segment bucket: name, counters, credits
      global bktn:0   bucket name "channel/segment" -> number
      global num:0    the next campaign / bucket numbers
      global tot:0    the report's totals (the STATS counters it shows)
      global wbz:0    win-back member -> flagged time (the listing's order)

    Global data stays exact because one instance owns every partition
    (proto/wire.md "The engine"): its cache is the only writer of
    partition 0 too, every handler reads and writes global records through
    the same write-set as the entity's, and a batch commits all of it in
    one MULTI/EXEC. A touch in any contact's partition updates its
    campaign's counters in the same atomic step. With several instances
    the engine reads every record under WATCH and re-runs a batch whose
    records changed meanwhile (proto/README.md section 7): just as exact.
*/
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "campaign_stage.h"
#include "campaign_rules.h"
#include "attribution.h"
#include "audience.h"
#include "channel_rank.h"
#include "funnel_log.h"
#include "msgpack_kv.h"

#define ALL     "0"             //  The id of a global singleton record
#define NM      ATTRIBUTION_MODELS
#define AUD_ITEMS_MAX  256      //  Schema bound of an array

static const char s_model_code [NM] = { 'f', 'l', 'n', 'p', 'd' };
static const char *const s_stages [] = { "lead", "mql", "sql", "won" };
static const char s_stage_code [] = { 'L', 'M', 'S', 'W' };
static const char *const s_channels [] = {
    "email", "social", "search", "display", "video", "event", "referral", "content", "other"
};
#define NCHANNELS (sizeof s_channels / sizeof s_channels [0])

//  Settings and scratch (one batch at a time: the engine is single-threaded)
typedef struct {
    campaign_settings_t cfg;
    attribution_touch_t *history;       //  history_max + 1
    attribution_touch_t *prev;          //  The history before a touch
    attribution_credits_t *cr, *old, *diff;
    zhashx_t *auds;                     //  Parsed audiences by stored text
} ctx_t;

static ctx_t *
s_ctx (funnel_state_t *st)
{
    return (ctx_t *) funnel_state_arg (st);
}

//  --------------------------------------------------------------------
//  Small helpers

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

//  A string field of a map into buf; false if absent or not a string.
static bool
s_str (const msgpack_object *map, const char *key, char *buf, size_t size)
{
    return event_codec_obj_strcpy (event_codec_map_get (map, key), buf, size);
}

static bool
s_valid_id (const msgpack_object *obj, char *buf, size_t size)
{
    return event_codec_obj_strcpy (obj, buf, size) && event_codec_id_valid (buf, strlen (buf));
}

static void
s_pack_kv_str (msgpack_packer *pk, const char *key, const char *value)
{
    event_codec_pack_cstr (pk, key);
    event_codec_pack_cstr (pk, value);
}

static void
s_pack_kv_num (msgpack_packer *pk, const char *key, double value)
{
    event_codec_pack_cstr (pk, key);
    msgpack_kv_pack_number (pk, value);
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

//  A STATS counter, mirrored in tot:0 when the report shows it
static void
s_count (funnel_state_t *st, const char *name, int64_t n)
{
    funnel_state_count (st, name, n);
    static const char *const shown [] = {
        "reached", "engaged", "conv_lead", "conv_mql", "conv_sql", "conv_won", "conv_revenue",
        "spend", "unattributed", "anonymous", "anonymous_impressions", NULL
    };
    for (const char *const *s = shown; *s; s++)
        if (streq (*s, name)) {
            funnel_state_add_global (st, "tot", ALL, name, n);
            break;
        }
}

//  A stage reached over time, whole funnel, and its counter (mirrored)
static void
s_count_stage (funnel_state_t *st, const char *name, int64_t t)
{
    funnel_state_count_stage (st, name, t, NULL, 1);
    funnel_state_add_global (st, "tot", ALL, name, 1);
}

//  One campaign's own stage series (its unique reach, not the funnel's)
static void
s_series_campaign (funnel_state_t *st, const char *name, int64_t t, const char *campaign)
{
    funnel_state_series_add (st, name, t, campaign, 1);
}

//  --------------------------------------------------------------------
//  Audiences: stored as JSON {age_min?, age_max?, regions?, interests?}

typedef struct {
    audience_t aud;
    const char *regions [AUD_ITEMS_MAX], *interests [AUD_ITEMS_MAX];
    json_t *json;
} aud_t;

//  Reads one list of strings (non-strings are NULL holes, skipped by readers)
static size_t
s_json_list (json_t *array, const char **out)
{
    size_t n = 0;
    if (!json_is_array (array))
        return 0;
    for (size_t i = 0; i < json_array_size (array) && n < AUD_ITEMS_MAX; i++) {
        json_t *item = json_array_get (array, i);
        out [n++] = json_is_string (item) ? json_string_value (item) : NULL;
    }
    return n;
}

//  Parses a stored audience; false (aud unset) if there is none.
static bool
s_aud_load (const char *text, aud_t *a)
{
    memset (a, 0, sizeof *a);
    if (!text)
        return false;
    a->json = json_loads (text, 0, NULL);
    if (!json_is_object (a->json)) {
        json_decref (a->json);
        a->json = NULL;
        return false;
    }
    json_t *v = json_object_get (a->json, "age_min");
    if (json_is_integer (v)) {
        a->aud.has_age_min = true;
        a->aud.age_min = json_integer_value (v);
    }
    v = json_object_get (a->json, "age_max");
    if (json_is_integer (v)) {
        a->aud.has_age_max = true;
        a->aud.age_max = json_integer_value (v);
    }
    a->aud.nregions = s_json_list (json_object_get (a->json, "regions"), a->regions);
    a->aud.regions = a->regions;
    a->aud.ninterests = s_json_list (json_object_get (a->json, "interests"), a->interests);
    a->aud.interests = a->interests;
    return true;
}

static void
s_aud_free (aud_t *a)
{
    json_decref (a->json);
    a->json = NULL;
}

//  Parsed audiences by their stored text: a touch reads its campaign's on
//  every event, so it is parsed once; bounded (dropped whole when full)
#define AUD_CACHE_MAX 1024

static void
s_aud_destroy (void **item)
{
    aud_t *a = (aud_t *) *item;
    s_aud_free (a);
    free (a);
    *item = NULL;
}

static const audience_t *
s_aud_cached (zhashx_t *cache, const char *text)
{
    if (!text)
        return NULL;
    aud_t *a = (aud_t *) zhashx_lookup (cache, text);
    if (!a) {
        a = (aud_t *) calloc (1, sizeof (aud_t));
        if (!a || !s_aud_load (text, a)) {
            free (a);
            return NULL;
        }
        if (zhashx_size (cache) >= AUD_CACHE_MAX)
            zhashx_purge (cache);
        zhashx_insert (cache, text, a);
    }
    return &a->aud;
}

//  A msgpack array of strings as JSON (non-strings as null)
static json_t *
s_json_strings (const msgpack_object *obj)
{
    json_t *array = json_array ();
    for (uint32_t i = 0; i < obj->via.array.size; i++) {
        const msgpack_object *item = &obj->via.array.ptr [i];
        if (item->type == MSGPACK_OBJECT_STR)
            json_array_append_new (array, json_stringn (item->via.str.ptr, item->via.str.size));
        else
            json_array_append_new (array, json_null ());
    }
    return array;
}

//  The audience map of an upsert (checked by the schema) as stored JSON;
//  only the known rules are kept. Caller frees.
static char *
s_aud_encode (const msgpack_object *map)
{
    json_t *json = json_object ();
    double x;
    if (msgpack_kv_number (event_codec_map_get (map, "age_min"), &x))
        json_object_set_new (json, "age_min", json_integer ((json_int_t) x));
    if (msgpack_kv_number (event_codec_map_get (map, "age_max"), &x))
        json_object_set_new (json, "age_max", json_integer ((json_int_t) x));
    const msgpack_object *list = event_codec_map_get (map, "regions");
    if (list && list->type == MSGPACK_OBJECT_ARRAY)
        json_object_set_new (json, "regions", s_json_strings (list));
    list = event_codec_map_get (map, "interests");
    if (list && list->type == MSGPACK_OBJECT_ARRAY)
        json_object_set_new (json, "interests", s_json_strings (list));
    char *text = json_dumps (json, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref (json);
    return text;
}

//  Packs a stored audience back as the map it was given
static void
s_pack_json (msgpack_packer *pk, json_t *v)
{
    if (json_is_object (v)) {
        msgpack_pack_map (pk, json_object_size (v));
        const char *key;
        json_t *item;
        json_object_foreach (v, key, item) {
            event_codec_pack_cstr (pk, key);
            s_pack_json (pk, item);
        }
    }
    else
    if (json_is_array (v)) {
        msgpack_pack_array (pk, json_array_size (v));
        for (size_t i = 0; i < json_array_size (v); i++)
            s_pack_json (pk, json_array_get (v, i));
    }
    else
    if (json_is_string (v))
        msgpack_pack_str_with_body (pk, json_string_value (v), json_string_length (v));
    else
    if (json_is_integer (v))
        msgpack_pack_int64 (pk, json_integer_value (v));
    else
        msgpack_pack_nil (pk);
}

//  A touch's attrs (checked by the schema) for audience_matches
typedef struct {
    audience_attrs_t attrs;
    char region [FUNNEL_STR_MAX + 1];
    char *interests [AUD_ITEMS_MAX];
} attrs_t;

static void
s_attrs_read (const msgpack_object *map, attrs_t *a)
{
    memset (a, 0, sizeof *a);
    if (!map || map->type != MSGPACK_OBJECT_MAP)
        return;
    double age;
    if (msgpack_kv_number (event_codec_map_get (map, "age"), &age)) {
        a->attrs.has_age = true;
        a->attrs.age = (int64_t) age;
    }
    if (s_str (map, "region", a->region, sizeof a->region))
        a->attrs.region = a->region;
    const msgpack_object *list = event_codec_map_get (map, "interests");
    if (list && list->type == MSGPACK_OBJECT_ARRAY) {
        size_t n = 0;
        for (uint32_t i = 0; i < list->via.array.size && n < AUD_ITEMS_MAX; i++) {
            const msgpack_object *item = &list->via.array.ptr [i];
            a->interests [n++] = item->type == MSGPACK_OBJECT_STR
                ? strndup (item->via.str.ptr, item->via.str.size) : NULL;
        }
        a->attrs.interests = (const char *const *) a->interests;
        a->attrs.ninterests = n;
    }
}

static void
s_attrs_free (attrs_t *a)
{
    for (size_t i = 0; i < a->attrs.ninterests; i++)
        free (a->interests [i]);
}

//  --------------------------------------------------------------------
//  Campaigns

//  The bucket number of "channel/segment", created on first use
static int64_t
s_bucket (funnel_state_t *st, const char *name)
{
    funnel_rec_t *names = funnel_state_global (st, "bktn", ALL);
    funnel_rec_t *num = funnel_state_global (st, "num", ALL);
    if (!names || !num)
        return -1;
    int64_t n = funnel_rec_int (names, name, -1);
    if (n >= 0)
        return n;
    n = funnel_rec_add (num, "bkt", 1);
    funnel_rec_set_int (names, name, n);
    char id [24];
    snprintf (id, sizeof id, "%" PRId64, n);
    funnel_rec_t *bkt = funnel_state_global (st, "bkt", id);
    if (!bkt)
        return -1;
    funnel_rec_set_str (bkt, "name", name);
    return n;
}

static void
s_want_campaign (funnel_state_t *st, const funnel_event_t *ev)
{
    char id [FUNNEL_ID_MAX + 1];
    if (s_str (ev->data, "campaign", id, sizeof id))
        funnel_state_want_global (st, "cmp", id);
}

static int
s_on_upsert (funnel_state_t *st, const funnel_event_t *ev, funnel_error_t *err)
{
    const msgpack_object *aud = event_codec_map_get (ev->data, "audience");
    if (aud && aud->type != MSGPACK_OBJECT_MAP)
        aud = NULL;
    double lo, hi;
    if (aud && msgpack_kv_number (event_codec_map_get (aud, "age_min"), &lo)
    &&  msgpack_kv_number (event_codec_map_get (aud, "age_max"), &hi) && lo > hi)
        return funnel_error_set (err, FUNNEL_ERR_INVALID,
            "data.audience.age_min: must not exceed data.audience.age_max");
    char id [FUNNEL_ID_MAX + 1], name [FUNNEL_STR_MAX + 1], channel [32];
    char platform [FUNNEL_STR_MAX + 1], status [16];
    s_str (ev->data, "campaign", id, sizeof id);
    s_str (ev->data, "name", name, sizeof name);
    s_str (ev->data, "channel", channel, sizeof channel);
    funnel_rec_t *cmp = funnel_state_global (st, "cmp", id);
    funnel_rec_t *num = funnel_state_global (st, "num", ALL);
    funnel_rec_t *cmpn = funnel_state_global (st, "cmpn", ALL);
    if (!cmp || !num || !cmpn)
        return s_unavailable (err);
    const char *old_status = funnel_rec_str (cmp, "status");
    if (!s_str (ev->data, "status", status, sizeof status))
        snprintf (status, sizeof status, "%s", old_status ? old_status : "active");
    if (old_status && streq (old_status, "ended") && !streq (status, "ended"))
        return funnel_error_set (err, FUNNEL_ERR_CONFLICT,
            "status: campaign %s has ended; an ended campaign cannot be reopened", id);
    bool created = !funnel_rec_has (cmp, "n");
    if (created) {
        int64_t n = funnel_rec_add (num, "cmp", 1);
        char nid [24];
        snprintf (nid, sizeof nid, "%" PRId64, n);
        funnel_rec_set_str (cmpn, nid, id);
        funnel_rec_set_int (cmp, "n", n);
        funnel_rec_set_int (cmp, "created", ev->ts);
        s_count (st, "campaigns", 1);
    }
    //  Absent optional fields keep their stored value; only the audience's
    //  known rules are kept (unknown keys are ignored, as everywhere)
    if (aud) {
        char *text = s_aud_encode (aud);
        funnel_rec_set_str (cmp, "aud", text);
        free (text);
    }
    aud_t a;
    bool has = s_aud_load (funnel_rec_str (cmp, "aud"), &a);
    char segment [AUDIENCE_SEGMENT_MAX], bucket [AUDIENCE_SEGMENT_MAX + 40];
    audience_segment (has ? &a.aud : NULL, segment);
    s_aud_free (&a);
    snprintf (bucket, sizeof bucket, "%s/%s", channel, segment);
    int64_t b = s_bucket (st, bucket);
    if (b < 0)
        return s_unavailable (err);
    funnel_rec_set_str (cmp, "name", name);
    funnel_rec_set_str (cmp, "channel", channel);
    if (s_str (ev->data, "platform", platform, sizeof platform))
        funnel_rec_set_str (cmp, "platform", platform);
    double budget;
    if (msgpack_kv_number (event_codec_map_get (ev->data, "budget"), &budget))
        funnel_rec_set_int (cmp, "budget", (int64_t) budget);
    funnel_rec_set_str (cmp, "status", status);
    funnel_rec_set_str (cmp, "seg", segment);
    funnel_rec_set_int (cmp, "b", b);
    funnel_rec_set_int (cmp, "updated", ev->ts);
    msgpack_packer *pk = funnel_state_data (st);
    msgpack_pack_map (pk, 6);
    s_pack_kv_str (pk, "campaign", id);
    s_pack_kv_str (pk, "name", name);
    s_pack_kv_str (pk, "channel", channel);
    s_pack_kv_str (pk, "status", status);
    s_pack_kv_str (pk, "segment", segment);
    event_codec_pack_cstr (pk, "created");
    if (created)
        msgpack_pack_true (pk);
    else
        msgpack_pack_false (pk);
    funnel_state_emit (st, "campaign.updated", NULL);
    return 0;
}

static int
s_on_spend (funnel_state_t *st, const funnel_event_t *ev, funnel_error_t *err)
{
    char id [FUNNEL_ID_MAX + 1];
    s_str (ev->data, "campaign", id, sizeof id);
    double amount = 0;
    msgpack_kv_number (event_codec_map_get (ev->data, "amount"), &amount);
    funnel_rec_t *cmp = funnel_state_global (st, "cmp", id);
    if (!cmp)
        return s_unavailable (err);
    const char *b = funnel_rec_str (cmp, "b");
    if (!b)
        return funnel_error_set (err, FUNNEL_ERR_NOT_FOUND, "campaign: no campaign %s", id);
    funnel_rec_t *bkt = funnel_state_global (st, "bkt", b);
    if (!bkt)
        return s_unavailable (err);
    funnel_rec_add (cmp, "spend", (int64_t) amount);
    funnel_rec_add (bkt, "spend", (int64_t) amount);
    s_count (st, "spend", (int64_t) amount);
    return 0;
}

//  --------------------------------------------------------------------
//  Attribution

//  Adds (sign 1) or removes (-1) a conversion's credits to the campaigns
//  and buckets its touches belong to.
static int
s_apply_credits (funnel_state_t *st, const attribution_credits_t *cr, int stage, int sign)
{
    funnel_rec_t *cmpn = funnel_state_global (st, "cmpn", ALL);
    if (!cmpn)
        return -1;
    for (size_t k = 0; k < cr->n; k++) {
        const attribution_key_t *key = &cr->key [k];
        char c [24], b [24];
        snprintf (c, sizeof c, "%u", key->c);
        snprintf (b, sizeof b, "%u", key->b);
        const char *id = funnel_rec_str (cmpn, c);
        funnel_rec_t *cmp = id ? funnel_state_global (st, "cmp", id) : NULL;
        funnel_rec_t *bkt = funnel_state_global (st, "bkt", b);
        if ((id && !cmp) || !bkt)
            return -1;
        for (int m = 0; m < NM; m++) {
            char field [3] = { s_model_code [m], s_stage_code [stage], 0 };
            int64_t units = key->v [m] * sign;
            if (units != 0) {
                if (cmp)
                    funnel_rec_add (cmp, field, units);
                funnel_rec_add (bkt, field, units);
            }
            int64_t cents = key->v [NM + m] * sign;
            if (cents != 0) {
                field [1] = 'R';
                if (cmp)
                    funnel_rec_add (cmp, field, cents);
                funnel_rec_add (bkt, field, cents);
            }
        }
    }
    return 0;
}

//  Long texts (a history, conversion records) are kept in chunks of at
//  most CHUNK_MAX bytes, fields <base>, <base>1, <base>2...: Redis keeps a
//  hash compact (listpack) only while every value fits its
//  hash-max-listpack-value (64 by default); one longer value turns the
//  whole contact into a hashtable several times its size.
#define CHUNK_MAX 64

//  The chunks of base joined by sep (malloc'd; "" if none)
static char *
s_chunked_get (funnel_rec_t *rec, const char *base, char sep)
{
    zchunk_t *text = zchunk_new (NULL, 256);
    char field [16];
    for (int i = 0; ; i++) {
        if (i)
            snprintf (field, sizeof field, "%s%d", base, i);
        const char *part = funnel_rec_str (rec, i ? field : base);
        if (!part)
            break;
        if (i)
            zchunk_extend (text, &sep, 1);
        zchunk_extend (text, part, strlen (part));
    }
    zchunk_extend (text, "", 1);
    char *out = strdup ((const char *) zchunk_data (text));
    zchunk_destroy (&text);
    return out;
}

//  Writes text as chunks of items (split at sep) of at most CHUNK_MAX
//  bytes (an item over it alone), and drops chunks left over
static void
s_chunked_set (funnel_rec_t *rec, const char *base, const char *text, char sep)
{
    char field [16], *part = malloc (strlen (text) + 1);
    int i = 0;
    const char *p = text;
    while (*p) {
        size_t len = 0;
        for (bool first = true; ; first = false) {
            const char *item_end = strchr (p + len + (first ? 0 : 1), sep);
            size_t next = item_end ? (size_t) (item_end - p) : strlen (p);
            if (!first && next > CHUNK_MAX)
                break;
            len = next;
            if (!item_end || len >= CHUNK_MAX)
                break;
        }
        if (len == 0 && *p == sep) {    //  An empty item: skip its separator
            p++;
            continue;
        }
        memcpy (part, p, len);
        part [len] = 0;
        if (i)
            snprintf (field, sizeof field, "%s%d", base, i);
        funnel_rec_set_str (rec, i ? field : base, part);
        i++;
        p += len;
        if (*p == sep)
            p++;
    }
    free (part);
    for (;; i++) {
        if (i)
            snprintf (field, sizeof field, "%s%d", base, i);
        if (!funnel_rec_has (rec, i ? field : base))
            break;
        funnel_rec_del (rec, i ? field : base);
    }
}

//  The contact's history into list; returns the count
static size_t
s_history (ctx_t *ctx, funnel_rec_t *contact, attribution_touch_t *list)
{
    char *text = s_chunked_get (contact, "h", ';');
    size_t n = attribution_decode (text, list, (size_t) ctx->cfg.history_max);
    free (text);
    return n;
}

static void
s_set_history (funnel_rec_t *contact, const attribution_touch_t *list, size_t n)
{
    size_t size = n * 40 + 1;
    char *text = malloc (size);
    attribution_encode (list, n, text, size);
    s_chunked_set (contact, "h", text, ';');
    free (text);
}

static int
s_stage_index (char code)
{
    for (int s = 0; s < 4; s++)
        if (s_stage_code [s] == code)
            return s;
    return -1;
}

//  One conversion record "<S><t36>,<a36>[:<credits>]", parsed in place.
//  Without ':' its credits are implicit: exactly what the contact's
//  current history gives for it (attribution_credit at t), which holds
//  until a touch at or before t falls off a full history; then they are
//  written out (explicit). Most contacts never get there, so a record is
//  about 12 bytes.
typedef struct {
    int stage;
    int64_t t, amount;
    bool explicit_;
    const char *credits;
    size_t credits_len;
} record_t;

static int64_t
s_b36 (const char **p)
{
    int64_t n = 0;
    for (;; (*p)++) {
        char c = **p;
        if (c >= '0' && c <= '9')
            n = n * 36 + (c - '0');
        else
        if (c >= 'a' && c <= 'z')
            n = n * 36 + (c - 'a' + 10);
        else
            return n;
    }
}

//  Parses the record starting at p (ending at '|' or NUL); returns its end
static const char *
s_record (const char *p, record_t *r)
{
    r->stage = s_stage_index (*p);
    if (*p)
        p++;
    r->t = s_b36 (&p);
    if (*p == ',')
        p++;
    r->amount = s_b36 (&p);
    r->explicit_ = *p == ':';
    if (r->explicit_)
        p++;
    r->credits = p;
    const char *end = strchr (p, '|');
    if (!end)
        end = p + strlen (p);
    r->credits_len = (size_t) (end - p);
    return end;
}

//  A record's credits: its own, or the history's for it
static int
s_record_credits (ctx_t *ctx, const record_t *r, const attribution_touch_t *history,
                  size_t n, attribution_credits_t *out)
{
    if (r->explicit_)
        return attribution_credits_decode (r->credits, r->credits_len, r->amount, out);
    attribution_credit (history, n, r->t, ctx->cfg.half_life_ms, r->amount, out);
    return 0;
}

//  Appends a record; cr NULL: implicit credits
static void
s_record_append (zchunk_t *out, int stage, int64_t t, int64_t amount,
                 const attribution_credits_t *cr)
{
    static char text [ATTRIBUTION_HISTORY_MAX * (24 + ATTRIBUTION_SLOTS * 15) + 64];
    char t36 [16], a36 [16];
    attribution_base36 (t, t36);
    attribution_base36 (amount, a36);
    int len = snprintf (text, sizeof text, "%s%c%s,%s%s", zchunk_size (out) ? "|" : "",
                        s_stage_code [stage], t36, a36, cr ? ":" : "");
    if (cr)
        len += (int) attribution_credits_encode (cr, amount, text + len,
                                                 sizeof text - (size_t) len);
    zchunk_extend (out, text, (size_t) len);
}

static void
s_set_records (funnel_rec_t *contact, zchunk_t *records)
{
    zchunk_extend (records, "", 1);     //  NUL-terminated
    s_chunked_set (contact, "x", (const char *) zchunk_data (records), '|');
}

static int
s_count_conversion (funnel_state_t *st, int stage, int64_t amount,
                    const attribution_credits_t *cr)
{
    char name [16];
    snprintf (name, sizeof name, "conv_%s", s_stages [stage]);
    s_count (st, name, 1);
    if (amount > 0)
        s_count (st, "conv_revenue", amount);
    if (cr->n == 0)
        s_count (st, "unattributed", 1);
    return 0;
}

//  One conversion of a contact: credit it from the touches so far and keep
//  the record (the last conversions_max) so a late touch can re-attribute it.
static int
s_convert (funnel_state_t *st, const funnel_event_t *ev, funnel_rec_t *contact,
           int stage, int64_t amount)
{
    ctx_t *ctx = s_ctx (st);
    size_t n = s_history (ctx, contact, ctx->history);
    attribution_credit (ctx->history, n, ev->ts, ctx->cfg.half_life_ms, amount, ctx->cr);
    if (s_apply_credits (st, ctx->cr, stage, 1))
        return -1;
    //  A forgotten contact keeps no conversion records (nor history: no
    //  credit); the conversion is counted all the same
    if (funnel_rec_has (contact, "f"))
        return s_count_conversion (st, stage, amount, ctx->cr);
    //  Keep the newest conversions_max - 1 old records, then this one
    char *x = s_chunked_get (contact, "x", '|');
    size_t count = *x ? 1 : 0;
    for (const char *p = x; *p; p++)
        count += *p == '|';
    const char *keep = x;
    while (count >= (size_t) ctx->cfg.conversions_max && *keep) {
        const char *bar = strchr (keep, '|');
        keep = bar ? bar + 1 : keep + strlen (keep);
        count--;
    }
    zchunk_t *records = zchunk_new (keep, strlen (keep));
    s_record_append (records, stage, ev->ts, amount, NULL);
    s_set_records (contact, records);
    zchunk_destroy (&records);
    free (x);
    return s_count_conversion (st, stage, amount, ctx->cr);
}

//  A touch at ts was inserted (old: the history before, ctx->history
//  after; dropped: how many of old's oldest fell off). Every kept
//  conversion at or after ts is re-attributed: subtract its old credits,
//  add the new ones (only the differences are written). A conversion
//  before ts keeps its credits; if a dropped touch counted for it, they
//  are written out, as the history no longer gives them. Bounded:
//  conversions_max records × history_max touches.
static int
s_reattribute (funnel_state_t *st, funnel_rec_t *contact, int64_t ts,
               const attribution_touch_t *old, size_t old_n, size_t dropped)
{
    ctx_t *ctx = s_ctx (st);
    char *x = s_chunked_get (contact, "x", '|');
    if (!*x) {
        free (x);
        return 0;
    }
    size_t n = old_n + 1 - dropped;
    zchunk_t *records = zchunk_new (NULL, strlen (x) + 64);
    bool changed = false;
    int rc = 0;
    for (const char *p = x; *p && rc == 0; ) {
        record_t r;
        const char *end = s_record (p, &r);
        bool again = r.stage >= 0 && r.t >= ts;
        bool lost = r.stage >= 0 && !again && !r.explicit_ && dropped > 0 && old [0].ts <= r.t;
        if ((again || lost) && s_record_credits (ctx, &r, old, old_n, ctx->old) == 0) {
            if (again) {
                attribution_credit (ctx->history, n, r.t, ctx->cfg.half_life_ms, r.amount,
                                    ctx->cr);
                attribution_diff (ctx->old, ctx->cr, ctx->diff);
                rc = s_apply_credits (st, ctx->diff, r.stage, 1);
                if (ctx->old->n == 0 && ctx->cr->n > 0)
                    s_count (st, "unattributed", -1);
                funnel_state_count (st, "reattributed", 1);
                s_record_append (records, r.stage, r.t, r.amount, NULL);
            }
            else
                s_record_append (records, r.stage, r.t, r.amount, ctx->old);
            changed = true;
        }
        else {
            if (zchunk_size (records))
                zchunk_extend (records, "|", 1);
            zchunk_extend (records, p, (size_t) (end - p));
        }
        p = *end ? end + 1 : end;
    }
    if (changed && rc == 0)
        s_set_records (contact, records);
    zchunk_destroy (&records);
    free (x);
    return rc;
}

//  --------------------------------------------------------------------
//  Touches

//  Marks a contact reached (1) or engaged (2) in a campaign or bucket;
//  the mark lives in the contact's record, so each count is exact.
static void
s_mark_reach (funnel_rec_t *contact, const char *field, funnel_rec_t *target, bool engaged,
              bool *reached_now, bool *engaged_now)
{
    int64_t was = funnel_rec_int (contact, field, 0);
    if (!was)
        funnel_rec_add (target, "reach", 1);
    if (engaged && was != 2) {
        funnel_rec_add (target, "engaged", 1);
        funnel_rec_set_int (contact, field, 2);
    }
    else
    if (!was)
        funnel_rec_set_int (contact, field, 1);
    *reached_now = !was;
    *engaged_now = engaged && was != 2;
}

static void
s_want_touch (funnel_state_t *st, const funnel_event_t *ev)
{
    s_want_campaign (st, ev);
    char contact [FUNNEL_ID_MAX + 1];
    if (s_str (ev->data, "contact", contact, sizeof contact))
        funnel_state_want (st, "c", contact);
}

static int
s_on_touch (funnel_state_t *st, const funnel_event_t *ev, funnel_error_t *err)
{
    ctx_t *ctx = s_ctx (st);
    char id [FUNNEL_ID_MAX + 1], kind [32], contact_id [FUNNEL_ID_MAX + 1];
    s_str (ev->data, "campaign", id, sizeof id);
    s_str (ev->data, "kind", kind, sizeof kind);
    funnel_rec_t *cmp = funnel_state_global (st, "cmp", id);
    if (!cmp)
        return s_unavailable (err);
    const char *n = funnel_rec_str (cmp, "n");
    if (!n)
        return funnel_error_set (err, FUNNEL_ERR_NOT_FOUND, "campaign: no campaign %s", id);
    const char *status = funnel_rec_str (cmp, "status");
    if (status && streq (status, "draft"))
        return funnel_error_set (err, FUNNEL_ERR_CONFLICT,
            "campaign: %s is a draft; touches need an active, paused or ended campaign", id);
    const audience_t *aud = s_aud_cached (ctx->auds, funnel_rec_str (cmp, "aud"));
    attrs_t attrs;
    const msgpack_object *attrs_obj = event_codec_map_get (ev->data, "attrs");
    s_attrs_read (attrs_obj, &attrs);
    bool in_audience = audience_matches (aud, attrs_obj && attrs_obj->type == MSGPACK_OBJECT_MAP
                                              ? &attrs.attrs : NULL);
    s_attrs_free (&attrs);
    bool impression = streq (kind, "impression");
    funnel_rec_add (cmp, "touches", 1);
    s_count (st, "touches", 1);
    if (in_audience) {
        funnel_rec_add (cmp, "in_audience", 1);
        s_count (st, "in_audience", 1);
    }
    if (!s_str (ev->data, "contact", contact_id, sizeof contact_id)) {
        //  Anonymous: counted apart, never in reach, never published
        funnel_rec_add (cmp, "anonymous", 1);
        s_count (st, "anonymous", 1);
        if (impression) {
            funnel_rec_add (cmp, "anonymous_impressions", 1);
            s_count (st, "anonymous_impressions", 1);
        }
        return 0;
    }
    const char *b = funnel_rec_str (cmp, "b");
    funnel_rec_t *contact = funnel_state_rec (st, "c", contact_id);
    funnel_rec_t *bkt = b ? funnel_state_global (st, "bkt", b) : NULL;
    if (!contact || !bkt)
        return s_unavailable (err);
    //  A forgotten contact (f) keeps no touch history: f 1 says it was
    //  reached already, f 2 that it was not (its first touch makes it 1)
    int64_t forgotten = funnel_rec_int (contact, "f", 0);
    if (!funnel_rec_has (contact, "h") && forgotten != 1)
        s_count_stage (st, "reached", ev->ts);
    if (forgotten == 2)
        funnel_rec_set_int (contact, "f", 1);
    if (!impression && !funnel_rec_has (contact, "e")) {
        funnel_rec_set_int (contact, "e", 1);
        s_count_stage (st, "engaged", ev->ts);
    }
    char field [32];
    bool reached, engaged;
    snprintf (field, sizeof field, "r%s", n);
    s_mark_reach (contact, field, cmp, !impression, &reached, &engaged);
    if (reached)
        s_series_campaign (st, "reached", ev->ts, id);
    if (engaged)
        s_series_campaign (st, "engaged", ev->ts, id);
    snprintf (field, sizeof field, "b%s", b);
    s_mark_reach (contact, field, bkt, !impression, &reached, &engaged);
    size_t old_n = s_history (ctx, contact, ctx->prev);
    memcpy (ctx->history, ctx->prev, old_n * sizeof *ctx->history);
    size_t count = old_n;
    attribution_touch_t touch = { ev->ts, (uint32_t) atoll (n), (uint32_t) atoll (b) };
    if (!forgotten
    &&  attribution_insert (ctx->history, &count, touch, (size_t) ctx->cfg.history_max)) {
        s_set_history (contact, ctx->history, count);
        if (s_reattribute (st, contact, ev->ts, ctx->prev, old_n, old_n + 1 - count))
            return s_unavailable (err);
    }
    msgpack_packer *pk = funnel_state_data (st);
    msgpack_pack_map (pk, 7);
    s_pack_kv_str (pk, "contact", contact_id);
    s_pack_kv_str (pk, "campaign", id);
    s_pack_kv_str (pk, "channel", funnel_rec_str (cmp, "channel"));
    s_pack_kv_str (pk, "kind", kind);
    event_codec_pack_cstr (pk, "in_audience");
    if (in_audience)
        msgpack_pack_true (pk);
    else
        msgpack_pack_false (pk);
    s_pack_kv_str (pk, "segment", funnel_rec_str (cmp, "seg"));
    event_codec_pack_cstr (pk, "at");
    msgpack_pack_int64 (pk, ev->ts);
    funnel_state_emit (st, "prospect.touched", NULL);
    return 0;
}

//  --------------------------------------------------------------------
//  Upstream events

static int
s_need_id (const funnel_event_t *ev, const char *field, char *out, funnel_error_t *err)
{
    if (!s_valid_id (event_codec_map_get (ev->data, field), out, FUNNEL_ID_MAX + 1))
        return funnel_error_set (err, FUNNEL_ERR_INVALID,
                                 "data.%s: must be 1-64 bytes of [A-Za-z0-9._:@+-]", field);
    return 0;
}

static void
s_want_lead (funnel_state_t *st, const funnel_event_t *ev)
{
    char id [FUNNEL_ID_MAX + 1];
    if (s_str (ev->data, "lead", id, sizeof id)) {
        funnel_state_want (st, "c", id);
        funnel_state_want (st, "wb", id);
    }
}

//  Stages are cumulative: reaching sql also counts lead and mql once each.
static int
s_reach_stage (funnel_state_t *st, const funnel_event_t *ev, int target, funnel_error_t *err)
{
    char lead [FUNNEL_ID_MAX + 1];
    if (s_need_id (ev, "lead", lead, err))
        return -1;
    funnel_rec_t *contact = funnel_state_rec (st, "c", lead);
    if (!contact)
        return s_unavailable (err);
    int64_t at = funnel_rec_int (contact, "s", 0);
    for (int64_t s = at + 1; s <= target; s++)
        if (s_convert (st, ev, contact, (int) s - 1, 0))
            return s_unavailable (err);
    if (target > at)
        funnel_rec_set_int (contact, "s", target);
    return 0;
}

static int
s_on_captured (funnel_state_t *st, const funnel_event_t *ev, funnel_error_t *err)
{
    return s_reach_stage (st, ev, 1, err);
}

static int
s_on_mql (funnel_state_t *st, const funnel_event_t *ev, funnel_error_t *err)
{
    return s_reach_stage (st, ev, 2, err);
}

static int
s_on_sql (funnel_state_t *st, const funnel_event_t *ev, funnel_error_t *err)
{
    return s_reach_stage (st, ev, 3, err);
}

static int
s_leave_winback (funnel_state_t *st, const char *customer)
{
    funnel_rec_t *wb = funnel_state_rec (st, "wb", customer);
    funnel_rec_t *index = funnel_state_global (st, "wbz", ALL);
    if (!wb || !index)
        return -1;
    if (!funnel_rec_has (wb, "state"))
        return 0;
    zlist_t *fields = funnel_rec_fields (wb);
    for (const char *f = zlist_first (fields); f; f = zlist_next (fields))
        funnel_rec_del (wb, f);
    zlist_destroy (&fields);
    funnel_rec_del (index, customer);
    funnel_state_count (st, "winback", -1);
    funnel_state_count (st, "won_back", 1);
    return 0;
}

static int
s_on_won (funnel_state_t *st, const funnel_event_t *ev, funnel_error_t *err)
{
    char lead [FUNNEL_ID_MAX + 1];
    if (s_need_id (ev, "lead", lead, err))
        return -1;
    const msgpack_object *obj = event_codec_map_get (ev->data, "amount");
    double amount = 0;
    if (!s_is_nil (obj) && (!msgpack_kv_number (obj, &amount) || amount < 0 || amount != floor (amount)))
        return funnel_error_set (err, FUNNEL_ERR_INVALID, "data.amount: must be an integer >= 0");
    funnel_rec_t *contact = funnel_state_rec (st, "c", lead);
    if (!contact || s_convert (st, ev, contact, 3, (int64_t) amount)
    ||  s_leave_winback (st, lead))
        return s_unavailable (err);
    return 0;
}

static void
s_want_customer (funnel_state_t *st, const funnel_event_t *ev)
{
    char id [FUNNEL_ID_MAX + 1];
    if (s_str (ev->data, "customer", id, sizeof id))
        funnel_state_want (st, "wb", id);
}

//  Win-back: customers retention flags join the audience; churned is
//  stronger than at_risk and stays; winning a deal again takes them out.
static int
s_join_winback (funnel_state_t *st, const funnel_event_t *ev, const char *state,
                funnel_rec_t **wb_p, funnel_error_t *err)
{
    *wb_p = NULL;
    char customer [FUNNEL_ID_MAX + 1];
    if (s_need_id (ev, "customer", customer, err))
        return -1;
    funnel_rec_t *wb = funnel_state_rec (st, "wb", customer);
    funnel_rec_t *index = funnel_state_global (st, "wbz", ALL);
    if (!wb || !index)
        return s_unavailable (err);
    const char *was = funnel_rec_str (wb, "state");
    if (was && streq (was, "churned") && streq (state, "at_risk"))
        return 0;
    if (!was) {
        funnel_state_count (st, "winback", 1);
        funnel_rec_set_int (wb, "since", ev->ts);
    }
    if (!was || !streq (was, state)) {
        char name [32];
        snprintf (name, sizeof name, "winback_%s", state);
        funnel_state_count (st, name, 1);
    }
    funnel_rec_set_int (index, customer, ev->ts);
    funnel_rec_set_str (wb, "state", state);
    funnel_rec_set_int (wb, "ts", ev->ts);
    *wb_p = wb;
    return 0;
}

//  A number as stored: %.14g (integers without a decimal point)
static void
s_set_num (funnel_rec_t *rec, const char *field, double x)
{
    char text [40];
    if (x == floor (x) && fabs (x) < 1e15)
        snprintf (text, sizeof text, "%" PRId64, (int64_t) x);
    else
        snprintf (text, sizeof text, "%.14g", x);
    funnel_rec_set_str (rec, field, text);
}

static int
s_on_at_risk (funnel_state_t *st, const funnel_event_t *ev, funnel_error_t *err)
{
    funnel_rec_t *wb;
    if (s_join_winback (st, ev, "at_risk", &wb, err))
        return -1;
    if (!wb)
        return 0;
    double health;
    if (msgpack_kv_number (event_codec_map_get (ev->data, "health"), &health))
        s_set_num (wb, "health", health);
    const msgpack_object *reason = event_codec_map_get (ev->data, "reason");
    if (reason && reason->type == MSGPACK_OBJECT_STR) {
        //  At most 200 bytes, and no NUL (a record value is text)
        size_t len = reason->via.str.size < 200 ? reason->via.str.size : 200;
        char text [201];
        memcpy (text, reason->via.str.ptr, len);
        text [len] = 0;
        funnel_rec_set_str (wb, "reason", text);
    }
    return 0;
}

static int
s_on_churned (funnel_state_t *st, const funnel_event_t *ev, funnel_error_t *err)
{
    funnel_rec_t *wb;
    if (s_join_winback (st, ev, "churned", &wb, err))
        return -1;
    double days;
    if (wb && msgpack_kv_number (event_codec_map_get (ev->data, "days_inactive"), &days))
        s_set_num (wb, "days_inactive", days);
    return 0;
}

//  --------------------------------------------------------------------
//  Queries

typedef struct {
    double stage [4];           //  Attributed conversions
    int64_t revenue;
} credited_t;

static credited_t
s_credited (funnel_rec_t *rec, int m)
{
    credited_t out;
    for (int s = 0; s < 4; s++) {
        char field [3] = { s_model_code [m], s_stage_code [s], 0 };
        out.stage [s] = (double) funnel_rec_int (rec, field, 0) / ATTRIBUTION_UNITS;
    }
    char field [3] = { s_model_code [m], 'R', 0 };
    out.revenue = funnel_rec_int (rec, field, 0);
    return out;
}

#define R6 channel_rank_round6

//  One report row's figures: reach, engagement, the model's conversions,
//  money, and the ratios where they are defined. extra: the caller's keys.
static void
s_pack_report_row (msgpack_packer *pk, funnel_rec_t *rec, int m, int extra)
{
    credited_t cr = s_credited (rec, m);
    double spend = (double) funnel_rec_int (rec, "spend", 0);
    int entries = 8 + extra + (cr.stage [0] > 0) + (cr.stage [3] > 0) + (spend > 0);
    msgpack_pack_map (pk, (size_t) entries);
    s_pack_kv_num (pk, "reach", (double) funnel_rec_int (rec, "reach", 0));
    s_pack_kv_num (pk, "engaged", (double) funnel_rec_int (rec, "engaged", 0));
    s_pack_kv_num (pk, "leads", R6 (cr.stage [0]));
    s_pack_kv_num (pk, "mql", R6 (cr.stage [1]));
    s_pack_kv_num (pk, "sql", R6 (cr.stage [2]));
    s_pack_kv_num (pk, "won", R6 (cr.stage [3]));
    s_pack_kv_num (pk, "revenue", (double) cr.revenue);
    s_pack_kv_num (pk, "spend", spend);
    if (cr.stage [0] > 0)
        s_pack_kv_num (pk, "cost_per_lead", R6 (spend / cr.stage [0]));
    if (cr.stage [3] > 0)
        s_pack_kv_num (pk, "cost_per_acquisition", R6 (spend / cr.stage [3]));
    if (spend > 0)
        s_pack_kv_num (pk, "roi", R6 (((double) cr.revenue - spend) / spend));
}

static int
s_bad_id (funnel_error_t *err, const char *field)
{
    return funnel_error_set (err, FUNNEL_ERR_INVALID,
                             "%s: must be 1-64 bytes of [A-Za-z0-9._:@+-]", field);
}

static void
s_pack_opt_str (msgpack_packer *pk, const char *key, const char *value)
{
    if (value)
        s_pack_kv_str (pk, key, value);
}

static int
s_get_campaign (funnel_state_t *st, const msgpack_object *req, msgpack_packer *pk,
                funnel_error_t *err)
{
    char id [FUNNEL_ID_MAX + 1];
    if (!s_valid_id (event_codec_map_get (req, "id"), id, sizeof id))
        return s_bad_id (err, "id");
    funnel_rec_t *h = funnel_state_global (st, "cmp", id);
    if (!h)
        return s_unavailable (err);
    if (!funnel_rec_has (h, "n"))
        return funnel_error_set (err, FUNNEL_ERR_NOT_FOUND, "id: no campaign %s", id);
    aud_t a;
    bool has = s_aud_load (funnel_rec_str (h, "aud"), &a);
    bool show_aud = has && json_object_size (a.json) > 0;
    const char *opt [] = { "name", "channel", "platform", "status", "seg", "budget",
                           "created", "updated" };
    int entries = 1 + 7 + 1 + (show_aud ? 1 : 0);
    for (size_t i = 0; i < sizeof opt / sizeof opt [0]; i++)
        entries += funnel_rec_has (h, opt [i]);
    msgpack_pack_map (pk, (size_t) entries);
    s_pack_kv_str (pk, "campaign", id);
    s_pack_opt_str (pk, "name", funnel_rec_str (h, "name"));
    s_pack_opt_str (pk, "channel", funnel_rec_str (h, "channel"));
    s_pack_opt_str (pk, "platform", funnel_rec_str (h, "platform"));
    s_pack_opt_str (pk, "status", funnel_rec_str (h, "status"));
    s_pack_opt_str (pk, "segment", funnel_rec_str (h, "seg"));
    const char *nums [] = { "budget", "created", "updated" };
    for (int i = 0; i < 3; i++)
        if (funnel_rec_has (h, nums [i]))
            s_pack_kv_num (pk, nums [i], s_fnum (h, nums [i], 0));
    const char *counters [] = { "spend", "reach", "engaged", "touches", "anonymous",
                                "anonymous_impressions", "in_audience" };
    for (int i = 0; i < 7; i++)
        s_pack_kv_num (pk, counters [i], (double) funnel_rec_int (h, counters [i], 0));
    if (show_aud) {
        event_codec_pack_cstr (pk, "audience");
        s_pack_json (pk, a.json);
    }
    s_aud_free (&a);
    event_codec_pack_cstr (pk, "attribution");
    msgpack_pack_map (pk, NM);
    for (int m = 0; m < NM; m++) {
        credited_t cr = s_credited (h, m);
        event_codec_pack_cstr (pk, attribution_models [m]);
        msgpack_pack_map (pk, 5);
        s_pack_kv_num (pk, "leads", R6 (cr.stage [0]));
        s_pack_kv_num (pk, "mql", R6 (cr.stage [1]));
        s_pack_kv_num (pk, "sql", R6 (cr.stage [2]));
        s_pack_kv_num (pk, "won", R6 (cr.stage [3]));
        s_pack_kv_num (pk, "revenue", (double) cr.revenue);
    }
    return 0;
}

//  The model a query names (default linear); -1 with err set if unknown
static int
s_model_arg (const msgpack_object *req, funnel_error_t *err)
{
    const msgpack_object *obj = event_codec_map_get (req, "model");
    char name [32] = "linear";
    int m = -1;
    if (s_is_nil (obj) || event_codec_obj_strcpy (obj, name, sizeof name))
        m = attribution_model (name);
    if (m < 0)
        funnel_error_set (err, FUNNEL_ERR_INVALID, "model: must be one of %s, %s, %s, %s, %s",
                          attribution_models [0], attribution_models [1],
                          attribution_models [2], attribution_models [3],
                          attribution_models [4]);
    return m;
}

static int
s_cmp_str (const void *a, const void *b)
{
    return strcmp (*(const char *const *) a, *(const char *const *) b);
}

static int
s_get_report (funnel_state_t *st, const msgpack_object *req, msgpack_packer *pk,
              funnel_error_t *err)
{
    ctx_t *ctx = s_ctx (st);
    int m = s_model_arg (req, err);
    if (m < 0)
        return -1;
    funnel_rec_t *cmpn = funnel_state_global (st, "cmpn", ALL);
    funnel_rec_t *bktn = funnel_state_global (st, "bktn", ALL);
    funnel_rec_t *tot = funnel_state_global (st, "tot", ALL);
    if (!cmpn || !bktn || !tot)
        return s_unavailable (err);
    const char *only_bucket = NULL;
    zlist_t *ids = zlist_new ();
    zlist_autofree (ids);
    const msgpack_object *one = event_codec_map_get (req, "campaign");
    if (!s_is_nil (one)) {
        char id [FUNNEL_ID_MAX + 1];
        if (!s_valid_id (one, id, sizeof id)) {
            zlist_destroy (&ids);
            return s_bad_id (err, "campaign");
        }
        funnel_rec_t *h = funnel_state_global (st, "cmp", id);
        if (!h || !funnel_rec_has (h, "n")) {
            zlist_destroy (&ids);
            return h ? funnel_error_set (err, FUNNEL_ERR_NOT_FOUND, "campaign: no campaign %s", id)
                     : s_unavailable (err);
        }
        zlist_append (ids, id);
        only_bucket = funnel_rec_str (h, "b");
    }
    else {
        //  Every campaign, by id
        zlist_t *numbers = funnel_rec_fields (cmpn);
        size_t n = zlist_size (numbers), i = 0;
        const char **sorted = calloc (n ? n : 1, sizeof *sorted);
        for (const char *f = zlist_first (numbers); f; f = zlist_next (numbers))
            sorted [i++] = funnel_rec_str (cmpn, f);
        qsort (sorted, n, sizeof *sorted, s_cmp_str);
        for (i = 0; i < n; i++)
            zlist_append (ids, (void *) sorted [i]);
        free (sorted);
        zlist_destroy (&numbers);
    }
    bool truncated = false;
    size_t rows = zlist_size (ids);
    if (rows > (size_t) ctx->cfg.report_max) {
        rows = (size_t) ctx->cfg.report_max;
        truncated = true;
    }
    //  Segments: the buckets by name (only the campaign's own for one campaign)
    zlist_t *names = funnel_rec_fields (bktn);
    zlist_t *segs = zlist_new ();
    for (const char *name = zlist_first (names); name; name = zlist_next (names)) {
        const char *b = funnel_rec_str (bktn, name);
        if (only_bucket && !streq (b, only_bucket))
            continue;
        if (zlist_size (segs) >= (size_t) ctx->cfg.report_max) {
            truncated = true;
            break;
        }
        zlist_append (segs, (void *) name);
    }
    msgpack_pack_map (pk, 5);
    s_pack_kv_str (pk, "model", attribution_models [m]);
    event_codec_pack_cstr (pk, "campaigns");
    msgpack_pack_array (pk, rows);
    int rc = 0;
    size_t i = 0;
    for (const char *id = zlist_first (ids); id && i < rows; id = zlist_next (ids), i++) {
        funnel_rec_t *h = funnel_state_global (st, "cmp", id);
        if (!h) {
            rc = -1;
            msgpack_pack_nil (pk);
            continue;
        }
        const char *keys [] = { "name", "channel", "seg", "status" };
        int extra = 1;
        for (int k = 0; k < 4; k++)
            extra += funnel_rec_has (h, keys [k]);
        s_pack_report_row (pk, h, m, extra);
        s_pack_kv_str (pk, "campaign", id);
        s_pack_opt_str (pk, "name", funnel_rec_str (h, "name"));
        s_pack_opt_str (pk, "channel", funnel_rec_str (h, "channel"));
        s_pack_opt_str (pk, "segment", funnel_rec_str (h, "seg"));
        s_pack_opt_str (pk, "status", funnel_rec_str (h, "status"));
    }
    event_codec_pack_cstr (pk, "segments");
    msgpack_pack_array (pk, zlist_size (segs));
    for (const char *name = zlist_first (segs); name; name = zlist_next (segs)) {
        funnel_rec_t *h = funnel_state_global (st, "bkt", funnel_rec_str (bktn, name));
        if (!h) {
            rc = -1;
            msgpack_pack_nil (pk);
            continue;
        }
        const char *slash = strchr (name, '/');
        s_pack_report_row (pk, h, m, slash ? 2 : 0);
        if (slash) {
            event_codec_pack_cstr (pk, "channel");
            msgpack_pack_str_with_body (pk, name, (size_t) (slash - name));
            s_pack_kv_str (pk, "segment", slash + 1);
        }
    }
    event_codec_pack_cstr (pk, "totals");
    const char *totals [][2] = {
        { "reached", "reached" }, { "engaged", "engaged" }, { "leads", "conv_lead" },
        { "mql", "conv_mql" }, { "sql", "conv_sql" }, { "won", "conv_won" },
        { "revenue", "conv_revenue" }, { "spend", "spend" },
        { "unattributed", "unattributed" }, { "anonymous", "anonymous" },
        { "anonymous_impressions", "anonymous_impressions" }
    };
    msgpack_pack_map (pk, 11);
    for (int t = 0; t < 11; t++)
        s_pack_kv_num (pk, totals [t][0], (double) funnel_rec_int (tot, totals [t][1], 0));
    event_codec_pack_cstr (pk, "truncated");
    if (truncated)
        msgpack_pack_true (pk);
    else
        msgpack_pack_false (pk);
    zlist_destroy (&segs);
    zlist_destroy (&names);
    zlist_destroy (&ids);
    return rc ? s_unavailable (err) : 0;
}

static bool
s_int_in (const msgpack_object *obj, double lo, double hi, double *out)
{
    return msgpack_kv_number (obj, out) && *out == floor (*out) && *out >= lo && *out <= hi;
}

static int
s_get_recommend (funnel_state_t *st, const msgpack_object *req, msgpack_packer *pk,
                 funnel_error_t *err)
{
    ctx_t *ctx = s_ctx (st);
    int m = s_model_arg (req, err);
    if (m < 0)
        return -1;
    char stage [16];
    const msgpack_object *obj = event_codec_map_get (req, "stage");
    int stage_i = -1;
    if (s_is_nil (obj))
        snprintf (stage, sizeof stage, "%s", ctx->cfg.stage);
    else
    if (!event_codec_obj_strcpy (obj, stage, sizeof stage))
        stage [0] = 0;
    for (int s = 0; s < 4; s++)
        if (streq (stage, s_stages [s]))
            stage_i = s;
    if (stage_i < 0)
        return funnel_error_set (err, FUNNEL_ERR_INVALID, "stage: must be one of lead, mql, sql, won");
    char segment [AUDIENCE_SEGMENT_MAX + 128] = "";
    bool any_segment = true;
    obj = event_codec_map_get (req, "segment");
    if (!s_is_nil (obj)) {
        if (obj->type != MSGPACK_OBJECT_STR || obj->via.str.size == 0 || obj->via.str.size > 100)
            return funnel_error_set (err, FUNNEL_ERR_INVALID,
                                     "segment: must be a segment label such as 18-24/us/any");
        memcpy (segment, obj->via.str.ptr, obj->via.str.size);
        segment [obj->via.str.size] = 0;
        any_segment = false;
    }
    obj = event_codec_map_get (req, "audience");
    if (!s_is_nil (obj)) {
        if (obj->type != MSGPACK_OBJECT_MAP && obj->type != MSGPACK_OBJECT_ARRAY)
            return funnel_error_set (err, FUNNEL_ERR_INVALID,
                "audience: must be a map {age_min?, age_max?, regions?, interests?}");
        audience_t aud = { 0 };
        const char *lists [2][AUD_ITEMS_MAX];
        char *copies [2][AUD_ITEMS_MAX];
        size_t counts [2] = { 0, 0 };
        const char *ages [] = { "age_min", "age_max" };
        for (int i = 0; i < 2; i++) {
            const msgpack_object *v = obj->type == MSGPACK_OBJECT_MAP
                                    ? event_codec_map_get (obj, ages [i]) : NULL;
            double x;
            if (s_is_nil (v))
                continue;
            if (!s_int_in (v, 0, 150, &x))
                return funnel_error_set (err, FUNNEL_ERR_INVALID,
                                         "audience.%s: must be an integer 0..150", ages [i]);
            if (i == 0) {
                aud.has_age_min = true;
                aud.age_min = (int64_t) x;
            }
            else {
                aud.has_age_max = true;
                aud.age_max = (int64_t) x;
            }
        }
        const char *fields [] = { "regions", "interests" };
        for (int i = 0; i < 2; i++) {
            const msgpack_object *v = obj->type == MSGPACK_OBJECT_MAP
                                    ? event_codec_map_get (obj, fields [i]) : NULL;
            if (s_is_nil (v))
                continue;
            if (v->type != MSGPACK_OBJECT_ARRAY && v->type != MSGPACK_OBJECT_MAP)
                return funnel_error_set (err, FUNNEL_ERR_INVALID,
                                         "audience.%s: must be an array of strings", fields [i]);
        }
        //  Only the first entry of each list names the segment
        for (int i = 0; i < 2; i++) {
            const msgpack_object *v = obj->type == MSGPACK_OBJECT_MAP
                                    ? event_codec_map_get (obj, fields [i]) : NULL;
            copies [i][0] = NULL;
            if (v && v->type == MSGPACK_OBJECT_ARRAY && v->via.array.size > 0) {
                const msgpack_object *first = &v->via.array.ptr [0];
                copies [i][0] = first->type == MSGPACK_OBJECT_STR
                    ? strndup (first->via.str.ptr, first->via.str.size) : NULL;
                lists [i][0] = copies [i][0];
                counts [i] = 1;
            }
        }
        aud.regions = lists [0];
        aud.nregions = counts [0];
        aud.interests = lists [1];
        aud.ninterests = counts [1];
        audience_segment (&aud, segment);
        free (copies [0][0]);
        free (copies [1][0]);
        any_segment = false;
    }
    funnel_rec_t *bktn = funnel_state_global (st, "bktn", ALL);
    if (!bktn)
        return s_unavailable (err);
    //  Sum the buckets of the segment (all when none is given) per channel
    channel_rank_row_t per [NCHANNELS];
    memset (per, 0, sizeof per);
    zlist_t *names = funnel_rec_fields (bktn);
    int rc = 0;
    for (const char *name = zlist_first (names); name; name = zlist_next (names)) {
        const char *slash = strchr (name, '/');
        if (!slash || (!any_segment && !streq (slash + 1, segment)))
            continue;
        size_t c = 0;
        while (c < NCHANNELS && !(strlen (s_channels [c]) == (size_t) (slash - name)
                                  && strncmp (s_channels [c], name, (size_t) (slash - name)) == 0))
            c++;
        if (c == NCHANNELS)
            continue;
        funnel_rec_t *h = funnel_state_global (st, "bkt", funnel_rec_str (bktn, name));
        if (!h) {
            rc = -1;
            break;
        }
        credited_t cr = s_credited (h, m);
        per [c].channel = s_channels [c];
        per [c].trials += (double) funnel_rec_int (h, "reach", 0);
        per [c].successes += cr.stage [stage_i];
        per [c].spend += (double) funnel_rec_int (h, "spend", 0);
        per [c].revenue += (double) cr.revenue;
    }
    zlist_destroy (&names);
    if (rc)
        return s_unavailable (err);
    channel_rank_row_t rows [NCHANNELS];
    const char *untried [NCHANNELS];
    size_t nrows = 0, nuntried = 0;
    for (size_t c = 0; c < NCHANNELS; c++)
        if (per [c].channel && per [c].trials > 0) {
            rows [nrows] = per [c];
            rows [nrows].successes = R6 (rows [nrows].successes);
            nrows++;
        }
        else
            untried [nuntried++] = s_channels [c];
    channel_rank (rows, nrows, ctx->cfg.prior_alpha, ctx->cfg.prior_beta, ctx->cfg.z);
    msgpack_pack_map (pk, 8 + (nrows > 0));
    s_pack_kv_str (pk, "segment", any_segment ? "all" : segment);
    s_pack_kv_str (pk, "stage", stage);
    s_pack_kv_str (pk, "model", attribution_models [m]);
    s_pack_kv_str (pk, "rule", "rank by Beta posterior lower bound mean - z*sd");
    event_codec_pack_cstr (pk, "prior");
    msgpack_pack_map (pk, 2);
    s_pack_kv_num (pk, "alpha", ctx->cfg.prior_alpha);
    s_pack_kv_num (pk, "beta", ctx->cfg.prior_beta);
    s_pack_kv_num (pk, "z", ctx->cfg.z);
    event_codec_pack_cstr (pk, "channels");
    msgpack_pack_array (pk, nrows);
    for (size_t i = 0; i < nrows; i++) {
        channel_rank_row_t *row = &rows [i];
        msgpack_pack_map (pk, 13 + (row->successes > 0));
        s_pack_kv_str (pk, "channel", row->channel);
        s_pack_kv_num (pk, "trials", row->trials);
        s_pack_kv_num (pk, "successes", row->successes);
        s_pack_kv_num (pk, "spend", row->spend);
        s_pack_kv_num (pk, "revenue", row->revenue);
        if (row->successes > 0)
            s_pack_kv_num (pk, "cost_per_conversion", R6 (row->spend / row->successes));
        s_pack_kv_num (pk, "alpha", row->p.alpha);
        s_pack_kv_num (pk, "beta", row->p.beta);
        s_pack_kv_num (pk, "mean", row->p.mean);
        s_pack_kv_num (pk, "sd", row->p.sd);
        s_pack_kv_num (pk, "lower", row->p.lower);
        s_pack_kv_num (pk, "upper", row->p.upper);
        s_pack_kv_num (pk, "rate", row->rate);
        s_pack_kv_num (pk, "rank", row->rank);
    }
    event_codec_pack_cstr (pk, "untried");
    msgpack_pack_array (pk, nuntried);
    for (size_t i = 0; i < nuntried; i++)
        event_codec_pack_cstr (pk, untried [i]);
    if (nrows > 0)
        s_pack_kv_str (pk, "best", rows [0].channel);
    return 0;
}

typedef struct {
    const char *customer;
    int64_t ts;
} member_t;

//  Newest first; equal times by customer, descending (ZREVRANGE's order)
static int
s_member_cmp (const void *a, const void *b)
{
    const member_t *x = a, *y = b;
    if (x->ts != y->ts)
        return x->ts > y->ts ? -1 : 1;
    return -strcmp (x->customer, y->customer);
}

static int
s_get_winback (funnel_state_t *st, const msgpack_object *req, msgpack_packer *pk,
               funnel_error_t *err)
{
    double limit = 100, offset = 0;
    const msgpack_object *obj = event_codec_map_get (req, "limit");
    if (!s_is_nil (obj) && !s_int_in (obj, 1, 1000, &limit))
        return funnel_error_set (err, FUNNEL_ERR_INVALID, "limit: must be an integer 1..1000");
    obj = event_codec_map_get (req, "offset");
    if (!s_is_nil (obj) && !s_int_in (obj, 0, 9007199254740992.0, &offset))
        return funnel_error_set (err, FUNNEL_ERR_INVALID, "offset: must be an integer >= 0");
    funnel_rec_t *index = funnel_state_global (st, "wbz", ALL);
    if (!index)
        return s_unavailable (err);
    zlist_t *names = funnel_rec_fields (index);
    size_t total = zlist_size (names), i = 0;
    member_t *members = calloc (total ? total : 1, sizeof *members);
    for (const char *c = zlist_first (names); c; c = zlist_next (names), i++)
        members [i] = (member_t) { c, funnel_rec_int (index, c, 0) };
    qsort (members, total, sizeof *members, s_member_cmp);
    size_t from = (size_t) offset < total ? (size_t) offset : total;
    size_t count = total - from < (size_t) limit ? total - from : (size_t) limit;
    int rc = 0;
    msgpack_pack_map (pk, 3 + (from + count < total));
    s_pack_kv_num (pk, "total", (double) total);
    s_pack_kv_num (pk, "offset", offset);
    event_codec_pack_cstr (pk, "items");
    msgpack_pack_array (pk, count);
    for (i = from; i < from + count; i++) {
        funnel_rec_t *h = funnel_state_rec (st, "wb", members [i].customer);
        if (!h) {
            rc = -1;
            msgpack_pack_nil (pk);
            continue;
        }
        const char *nums [] = { "health", "days_inactive", "since", "ts" };
        int entries = 1 + funnel_rec_has (h, "state") + funnel_rec_has (h, "reason");
        for (int k = 0; k < 4; k++)
            entries += funnel_rec_has (h, nums [k]);
        msgpack_pack_map (pk, (size_t) entries);
        s_pack_kv_str (pk, "customer", members [i].customer);
        s_pack_opt_str (pk, "state", funnel_rec_str (h, "state"));
        s_pack_opt_str (pk, "reason", funnel_rec_str (h, "reason"));
        for (int k = 0; k < 4; k++)
            if (funnel_rec_has (h, nums [k]))
                s_pack_kv_num (pk, nums [k], s_fnum (h, nums [k], 0));
    }
    if (from + count < total)
        s_pack_kv_num (pk, "next_offset", (double) (from + count));
    free (members);
    zlist_destroy (&names);
    return rc ? s_unavailable (err) : 0;
}

//  --------------------------------------------------------------------
//  Settings and tables

static int
s_setup (funnel_config_t *config, const char *section, void **arg)
{
    (void) section;
    ctx_t *ctx = (ctx_t *) calloc (1, sizeof (ctx_t));
    if (!ctx || campaign_settings_read (config, &ctx->cfg)) {
        free (ctx);
        return -1;
    }
    ctx->history = calloc ((size_t) ctx->cfg.history_max + 1, sizeof *ctx->history);
    ctx->prev = calloc ((size_t) ctx->cfg.history_max + 1, sizeof *ctx->prev);
    ctx->cr = malloc (sizeof *ctx->cr);
    ctx->old = malloc (sizeof *ctx->old);
    ctx->diff = malloc (sizeof *ctx->diff);
    ctx->auds = zhashx_new ();
    if (ctx->auds)
        zhashx_set_destructor (ctx->auds, s_aud_destroy);
    if (!ctx->auds || !ctx->history || !ctx->prev || !ctx->cr || !ctx->old || !ctx->diff) {
        log_error ("campaign: out of memory");
        return -1;
    }
    *arg = ctx;
    return 0;
}

static void
s_teardown (void **arg)
{
    ctx_t *ctx = (ctx_t *) *arg;
    if (ctx) {
        zhashx_destroy (&ctx->auds);
        free (ctx->history);
        free (ctx->prev);
        free (ctx->cr);
        free (ctx->old);
        free (ctx->diff);
        free (ctx);
    }
    *arg = NULL;
}

static const funnel_rule_t s_on [] = {
    { "campaign.upsert", s_on_upsert, s_want_campaign },
    { "campaign.spend", s_on_spend, s_want_campaign },
    { "touch", s_on_touch, s_want_touch },
    { NULL }
};
//  ---------------------------------------------------------------------
//  Privacy (proto/privacy.md): lead.forgotten drops the contact's touch
//  history and conversion records (times and campaigns of each touch);
//  reach marks, the stage reached and every credit already given stay

//  A field of the touch history (h, h1..) or conversion records (x, x1..)
static bool
s_detail_field (const char *f)
{
    if (f [0] != 'h' && f [0] != 'x')
        return false;
    for (const char *p = f + 1; *p; p++)
        if (*p < '0' || *p > '9')
            return false;
    return true;
}

static int
s_on_forgotten (funnel_state_t *st, const funnel_event_t *ev, funnel_error_t *err)
{
    char lead [FUNNEL_ID_MAX + 1];
    if (s_need_id (ev, "lead", lead, err))
        return -1;
    funnel_rec_t *contact = funnel_state_rec (st, "c", lead);
    funnel_rec_t *wb = funnel_state_rec (st, "wb", lead);
    if (!contact || !wb)
        return s_unavailable (err);
    if (funnel_rec_has (contact, "f"))
        return 0;                               //  Twice: a no-op
    //  f 1: reached already (a later touch does not count it again); f 2:
    //  not reached yet. Either way it keeps no history or records again.
    bool reached = funnel_rec_has (contact, "h");
    zlist_t *fields = funnel_rec_fields (contact);
    for (const char *f = zlist_first (fields); f; f = zlist_next (fields))
        if (s_detail_field (f))
            funnel_rec_del (contact, f);
    zlist_destroy (&fields);
    funnel_rec_set_int (contact, "f", reached ? 1 : 2);
    funnel_rec_del (wb, "reason");
    funnel_state_count (st, "forgotten", 1);
    return funnel_state_forget_outputs (st, lead) ? s_unavailable (err) : 0;
}

//  GET export: the contact and win-back records as stored
static int
s_get_export (funnel_state_t *st, const msgpack_object *req, msgpack_packer *pk,
              funnel_error_t *err)
{
    char lead [FUNNEL_ID_MAX + 1];
    if (funnel_privacy_export_lead (req, lead, err))
        return -1;
    funnel_rec_t *contact = funnel_state_rec (st, "c", lead);
    funnel_rec_t *wb = funnel_state_rec (st, "wb", lead);
    if (!contact || !wb)
        return s_unavailable (err);
    msgpack_pack_map (pk, 3);
    msgpack_kv_put_str (pk, "lead", lead);
    msgpack_kv_put_bool (pk, "forgotten", funnel_rec_has (contact, "f"));
    event_codec_pack_cstr (pk, "records");
    msgpack_pack_map (pk, funnel_rec_exists (contact) + funnel_rec_exists (wb));
    if (funnel_rec_exists (contact))
        funnel_rec_pack_entry (contact, pk, "c", lead);
    if (funnel_rec_exists (wb))
        funnel_rec_pack_entry (wb, pk, "wb", lead);
    return 0;
}

static const funnel_rule_t s_consume [] = {
    { "lead.forgotten", s_on_forgotten, s_want_lead },
    { "lead.captured", s_on_captured, s_want_lead },
    { "lead.mql", s_on_mql, s_want_lead },
    { "lead.sql", s_on_sql, s_want_lead },
    { "deal.won", s_on_won, s_want_lead },
    { "customer.at_risk", s_on_at_risk, s_want_customer },
    { "customer.churned", s_on_churned, s_want_customer },
    { NULL }
};
static const funnel_query_rule_t s_queries [] = {
    { "campaign", s_get_campaign },
    { "report", s_get_report },
    { "recommend", s_get_recommend },
    { "winback", s_get_winback },
    { "export", s_get_export },
    { NULL }
};
//  STATS shows these as 0 before their first event (the monitor reads
//  reached and engaged from a fresh start, too)
//  Over time (GET series): the whole funnel's unique contacts reached and
//  engaged, and per campaign its own unique contacts (as the report's reach)
static const char *const s_series [] = { "reached", "engaged", NULL };
static const char *const s_counters [] = {
    "reached", "engaged", "touches", "in_audience", "anonymous", "anonymous_impressions",
    "campaigns", "spend", "conv_lead", "conv_mql", "conv_sql", "conv_won", "conv_revenue",
    "unattributed", NULL
};

const funnel_rules_t campaign_stage_rules = {
    .on = s_on, .consume = s_consume, .queries = s_queries, .counters = s_counters,
    .series = s_series, .setup = s_setup, .teardown = s_teardown
};
