/*  funnel_state — see funnel_state.h for what it does and why. */
#include <czmq.h>
#include <inttypes.h>
#include <math.h>
#include "funnel_state.h"
#include "event_codec.h"

#define KEY_MAX     4096        //  A 1024-byte id escaped fits

struct _funnel_rec_t {
    funnel_state_t *state;
    char *key;                  //  Full Redis key (the cache's key too)
    zhashx_t *fields;           //  field -> char * value (owned)
    bool loaded;                //  fields hold what Redis has (+ this batch)
    bool wanted;                //  In the batch's prefetch list
    void *lru;                  //  Handle in the LRU list
    //  Fields with a dirty entry in the write-set (the entries' names):
    //  a field written again in the batch adds no second entry
    char **dirty;
    size_t dirty_count, dirty_alloc;
    bool emitted;               //  Its writes are queued (append_writes only)
};

typedef struct {
    funnel_rec_t *rec;
    char *field;
    char *old;                  //  NULL: the field was absent
} undo_t;

typedef struct {
    funnel_rec_t *rec;
    char *field;
} dirty_t;

typedef struct {
    char *name;
    int64_t n;
} counter_t;

typedef struct {
    char *key;
    char *value;
    size_t size;
    int max;
} push_t;

//  One series increment: n to field of the bucket hash key, which expires
//  at expire_at (unix s)
typedef struct {
    char *key;
    char *field;
    int64_t n;
    int64_t expire_at;
} series_op_t;

typedef struct {
    char *key;
    char *member;
    int64_t due;
    bool cancel;
} timer_op_t;

//  A command queued as is (outbox redaction, list rewrites)
typedef struct {
    int argc;
    char **argv;
    size_t *lens;
} raw_op_t;

//  A growable array of fixed-size items.
typedef struct {
    void *items;
    size_t count, alloc, item_size;
} vec_t;

struct _funnel_state_t {
    char *svc;
    int partitions;
    char **prefixes;            //  Each partition's tag (the engine's keys)
    char **data;                //  Where each partition's records, lists,
                                //  timers and person indexes live: its own
                                //  prefix, or shared (funnel_state_set_shared)
    char *base;                 //  The service's base prefix (series keys)
    bool blind_adds;            //  funnel_state_add_global writes without reading
    int64_t series_keep [2];    //  Seconds hour / day buckets are kept
    size_t cache_max;
    zhashx_t *cache;            //  key -> funnel_rec_t (owned)
    zlistx_t *lru;              //  funnel_rec_t *, least recently used first
    funnel_state_loader_fn *loader;
    void *loader_arg;
    funnel_state_list_fn *list_reader;
    void *list_arg;
    void *rules_arg;
    vec_t undo, dirty, outputs, counters, pushes, timers, series, raws;
    vec_t wants;                //  funnel_rec_t *
    funnel_state_redactor_fn *redactor;
    void *redactor_arg;
    const funnel_personal_t *personal;
    msgpack_sbuffer scratch;    //  Data of the next output
    msgpack_packer scratch_pk;
    char cause [FUNNEL_ID_MAX + 1];
    int64_t cause_ts;
    int emits;                  //  Outputs of the current cause so far
    int64_t now;
    uint64_t hits, misses;
};

static void *
s_vec_push (vec_t *vec)
{
    if (vec->count == vec->alloc) {
        vec->alloc = vec->alloc ? vec->alloc * 2 : 64;
        vec->items = realloc (vec->items, vec->alloc * vec->item_size);
        assert (vec->items);
    }
    void *item = (char *) vec->items + vec->count++ * vec->item_size;
    memset (item, 0, vec->item_size);
    return item;
}

static void *
s_vec_at (vec_t *vec, size_t index)
{
    return (char *) vec->items + index * vec->item_size;
}

//  Appends text to buf (size bytes, *len used), cutting it short as
//  snprintf would; ids, keys and numbers are built with it (printf was a
//  top cost in the hot paths).
static void
s_cat (char *buf, size_t size, size_t *len, const char *text)
{
    size_t n = strlen (text);
    if (*len + n >= size)
        n = size - 1 - *len;
    memcpy (buf + *len, text, n);
    *len += n;
    buf [*len] = 0;
}

static void
s_cat_int (char *buf, size_t size, size_t *len, int64_t value)
{
    char text [24], *at = text + sizeof text - 1;
    uint64_t magnitude = value < 0 ? 0 - (uint64_t) value : (uint64_t) value;
    *at = 0;
    do {
        *--at = (char) ('0' + magnitude % 10);
        magnitude /= 10;
    } while (magnitude);
    if (value < 0)
        *--at = '-';
    s_cat (buf, size, len, at);
}

//  ---------------------------------------------------------------------
//  Keys and partitions

int
funnel_partition_of (const char *id, int partitions)
{
    uint32_t hash = 2166136261u;
    for (const unsigned char *p = (const unsigned char *) id; *p; p++) {
        hash ^= *p;
        hash *= 16777619u;
    }
    return partitions > 1 ? (int) (hash % (uint32_t) partitions) : 0;
}

//  ASCII only, as isalnum in the C locale the daemons run in (inline: it
//  runs for every byte of every key built)
static inline bool
s_plain (unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
        || c == '.' || c == '_' || c == '@' || c == '+' || c == '-';
}

int
funnel_key_escape (const char *id, char *out, size_t size)
{
    static const char hex [] = "0123456789ABCDEF";
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *) id; *p; p++) {
        if (s_plain (*p)) {
            if (n + 1 >= size)
                return -1;
            out [n++] = (char) *p;
        }
        else {
            if (n + 3 >= size)
                return -1;
            out [n++] = '%';
            out [n++] = hex [*p >> 4];
            out [n++] = hex [*p & 15];
        }
    }
    if (n >= size)
        return -1;
    out [n] = 0;
    return (int) n;
}

static int
s_hex (char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

int
funnel_key_unescape (const char *text, char *out, size_t size)
{
    size_t n = 0;
    for (const char *p = text; *p; p++) {
        if (n + 1 >= size)
            return -1;
        if (*p == '%') {
            int hi = s_hex (p [1]), lo = hi < 0 ? -1 : s_hex (p [2]);
            if (hi < 0 || lo < 0)
                return -1;
            out [n++] = (char) (hi * 16 + lo);
            p += 2;
        }
        else
            out [n++] = *p;
    }
    out [n] = 0;
    return (int) n;
}

const char *
funnel_state_prefix (funnel_state_t *self, int part)
{
    assert (part >= 0 && part < self->partitions);
    return self->prefixes [part];
}

const char *
funnel_state_data_prefix (funnel_state_t *self, int part)
{
    assert (part >= 0 && part < self->partitions);
    return self->data [part];
}

void
funnel_state_set_shared (funnel_state_t *self, bool shared)
{
    funnel_state_clear (self);
    for (int p = 0; p < self->partitions; p++) {
        if (self->data [p] != self->prefixes [p])
            free (self->data [p]);
        self->data [p] = shared ? zsys_sprintf ("%s%d:", self->base, p) : self->prefixes [p];
    }
}

int
funnel_state_partitions (funnel_state_t *self)
{
    return self->partitions;
}

//  ---------------------------------------------------------------------
//  Life cycle

static void
s_rec_destroy (funnel_rec_t **rec_p)
{
    if (*rec_p) {
        funnel_rec_t *rec = *rec_p;
        zhashx_destroy (&rec->fields);
        free (rec->dirty);
        free (rec->key);
        free (rec);
        *rec_p = NULL;
    }
}

static void
s_free_value (void **item)
{
    free (*item);
    *item = NULL;
}

funnel_state_t *
funnel_state_new (const char *svc, const char *prefix, int partitions, size_t cache_max)
{
    assert (partitions >= 1);
    funnel_state_t *self = (funnel_state_t *) zmalloc (sizeof (funnel_state_t));
    self->svc = strdup (svc);
    self->partitions = partitions;
    self->base = strdup (prefix);
    self->series_keep [0] = 90 * 86400;
    self->series_keep [1] = 1096 * 86400;
    self->cache_max = cache_max ? cache_max : 1;
    self->prefixes = (char **) zmalloc (partitions * sizeof (char *));
    //  "{funnel:alpha}:" -> "{funnel:alpha:3}:" (a hash tag per partition)
    const char *close = prefix [0] == '{' ? strchr (prefix, '}') : NULL;
    for (int p = 0; p < partitions; p++) {
        char buf [KEY_MAX];
        if (close)
            snprintf (buf, sizeof buf, "%.*s:%d%s", (int) (close - prefix), prefix, p, close);
        else
            snprintf (buf, sizeof buf, "%s%d:", prefix, p);
        self->prefixes [p] = strdup (buf);
    }
    self->data = (char **) zmalloc (partitions * sizeof (char *));
    memcpy (self->data, self->prefixes, partitions * sizeof (char *));
    self->cache = zhashx_new ();
    zhashx_set_destructor (self->cache, (zhashx_destructor_fn *) s_rec_destroy);
    self->lru = zlistx_new ();
    self->undo.item_size = sizeof (undo_t);
    self->dirty.item_size = sizeof (dirty_t);
    self->outputs.item_size = sizeof (funnel_output_t);
    self->counters.item_size = sizeof (counter_t);
    self->pushes.item_size = sizeof (push_t);
    self->timers.item_size = sizeof (timer_op_t);
    self->series.item_size = sizeof (series_op_t);
    self->raws.item_size = sizeof (raw_op_t);
    self->wants.item_size = sizeof (funnel_rec_t *);
    msgpack_sbuffer_init (&self->scratch);
    msgpack_packer_init (&self->scratch_pk, &self->scratch, msgpack_sbuffer_write);
    return self;
}

static void s_reset_writes (funnel_state_t *self);

void
funnel_state_destroy (funnel_state_t **self_p)
{
    if (*self_p) {
        funnel_state_t *self = *self_p;
        s_reset_writes (self);
        zlistx_destroy (&self->lru);
        zhashx_destroy (&self->cache);
        for (int p = 0; p < self->partitions; p++) {
            if (self->data [p] != self->prefixes [p])
                free (self->data [p]);
            free (self->prefixes [p]);
        }
        free (self->data);
        free (self->prefixes);
        free (self->undo.items);
        free (self->dirty.items);
        free (self->outputs.items);
        free (self->counters.items);
        free (self->pushes.items);
        free (self->timers.items);
        free (self->series.items);
        free (self->raws.items);
        free (self->wants.items);
        free (self->base);
        msgpack_sbuffer_destroy (&self->scratch);
        free (self->svc);
        free (self);
        *self_p = NULL;
    }
}

void
funnel_state_set_loader (funnel_state_t *self, funnel_state_loader_fn *fn, void *arg)
{
    self->loader = fn;
    self->loader_arg = arg;
}

void
funnel_state_set_list_reader (funnel_state_t *self, funnel_state_list_fn *fn, void *arg)
{
    self->list_reader = fn;
    self->list_arg = arg;
}

void
funnel_state_set_arg (funnel_state_t *self, void *arg)
{
    self->rules_arg = arg;
}

void *
funnel_state_arg (funnel_state_t *self)
{
    return self->rules_arg;
}

void
funnel_state_set_cause (funnel_state_t *self, const char *id, int64_t ts)
{
    size_t len = 0;
    s_cat (self->cause, sizeof self->cause, &len, id ? id : "");
    self->cause_ts = id ? ts : 0;
    self->emits = 0;
}

void
funnel_state_set_now (funnel_state_t *self, int64_t now_ms)
{
    self->now = now_ms;
}

int64_t
funnel_state_now (funnel_state_t *self)
{
    return self->now;
}

//  ---------------------------------------------------------------------
//  Records

//  "<prefix><kind>:<escaped id>", built without printf: this runs for
//  every record read or prefetched. -1 if it does not fit.
static int
s_rec_key (funnel_state_t *self, int part, const char *kind, const char *id, char *key,
           size_t size)
{
    size_t prefix_len = strlen (self->data [part]), kind_len = strlen (kind);
    if (prefix_len + kind_len + 1 >= size)
        return -1;
    memcpy (key, self->data [part], prefix_len);
    memcpy (key + prefix_len, kind, kind_len);
    key [prefix_len + kind_len] = ':';
    size_t head = prefix_len + kind_len + 1;
    return funnel_key_escape (id, key + head, size - head) < 0 ? -1 : 0;
}

static funnel_rec_t *
s_lookup (funnel_state_t *self, int part, const char *kind, const char *id)
{
    char key [KEY_MAX];
    if (s_rec_key (self, part, kind, id, key, sizeof key) != 0)
        return NULL;
    funnel_rec_t *rec = (funnel_rec_t *) zhashx_lookup (self->cache, key);
    if (rec) {
        zlistx_move_end (self->lru, rec->lru);
        if (rec->loaded)
            self->hits++;
        return rec;
    }
    rec = (funnel_rec_t *) zmalloc (sizeof (funnel_rec_t));
    rec->state = self;
    rec->key = strdup (key);
    rec->fields = zhashx_new ();
    zhashx_set_destructor (rec->fields, s_free_value);
    rec->lru = zlistx_add_end (self->lru, rec);
    zhashx_insert (self->cache, key, rec);
    return rec;
}

static funnel_rec_t *
s_get (funnel_state_t *self, int part, const char *kind, const char *id)
{
    funnel_rec_t *rec = s_lookup (self, part, kind, id);
    if (rec && !rec->loaded) {
        self->misses++;
        if (!self->loader || self->loader (self->loader_arg, self, &rec, 1) != 0
        ||  !rec->loaded)
            return NULL;
    }
    return rec;
}

funnel_rec_t *
funnel_state_rec (funnel_state_t *self, const char *kind, const char *id)
{
    return s_get (self, funnel_partition_of (id, self->partitions), kind, id);
}

funnel_rec_t *
funnel_state_global (funnel_state_t *self, const char *kind, const char *id)
{
    return s_get (self, 0, kind, id);
}

int
funnel_state_add_global (funnel_state_t *self, const char *kind, const char *id,
                         const char *field, int64_t n)
{
    char key [KEY_MAX];
    if (s_rec_key (self, 0, kind, id, key, sizeof key) != 0)
        return -1;
    funnel_rec_t *rec = (funnel_rec_t *) zhashx_lookup (self->cache, key);
    if (!self->blind_adds || (rec && rec->loaded)) {
        rec = funnel_state_global (self, kind, id);
        if (!rec)
            return -1;
        funnel_rec_add (rec, field, n);
        return 0;
    }
    //  Not read: one HINCRBY with the series' (no expiry), after the
    //  batch's record writes; rolled back with them
    series_op_t *op = (series_op_t *) s_vec_push (&self->series);
    op->key = strdup (key);
    op->field = strdup (field);
    op->n = n;
    op->expire_at = 0;
    return 0;
}

void
funnel_state_set_blind_adds (funnel_state_t *self, bool blind)
{
    self->blind_adds = blind;
}

funnel_rec_t *
funnel_state_rec_in (funnel_state_t *self, const char *owner, const char *kind,
                     const char *id)
{
    return s_get (self, funnel_partition_of (owner, self->partitions), kind, id);
}

static void
s_want (funnel_state_t *self, int part, const char *kind, const char *id)
{
    funnel_rec_t *rec = s_lookup (self, part, kind, id);
    if (rec && !rec->loaded && !rec->wanted) {
        rec->wanted = true;
        self->misses++;
        *(funnel_rec_t **) s_vec_push (&self->wants) = rec;
    }
}

void
funnel_state_want (funnel_state_t *self, const char *kind, const char *id)
{
    s_want (self, funnel_partition_of (id, self->partitions), kind, id);
}

void
funnel_state_want_in (funnel_state_t *self, const char *owner, const char *kind,
                      const char *id)
{
    s_want (self, funnel_partition_of (owner, self->partitions), kind, id);
}

void
funnel_state_want_global (funnel_state_t *self, const char *kind, const char *id)
{
    s_want (self, 0, kind, id);
}

size_t
funnel_state_take_wants (funnel_state_t *self, funnel_rec_t ***recs)
{
    *recs = (funnel_rec_t **) self->wants.items;
    size_t count = self->wants.count;
    for (size_t i = 0; i < count; i++)
        (*recs) [i]->wanted = false;
    self->wants.count = 0;
    return count;
}

void
funnel_state_fill (funnel_state_t *self, funnel_rec_t *rec, const redisReply *hgetall)
{
    (void) self;
    zhashx_purge (rec->fields);
    if (hgetall && hgetall->type == REDIS_REPLY_ARRAY)
        for (size_t i = 0; i + 1 < hgetall->elements; i += 2)
            zhashx_insert (rec->fields, hgetall->element [i]->str,
                           strdup (hgetall->element [i + 1]->str));
    rec->loaded = true;
}

bool
funnel_rec_exists (funnel_rec_t *rec)
{
    return zhashx_size (rec->fields) > 0;
}

size_t
funnel_rec_count (funnel_rec_t *rec)
{
    return zhashx_size (rec->fields);
}

bool
funnel_rec_has (funnel_rec_t *rec, const char *field)
{
    return zhashx_lookup (rec->fields, field) != NULL;
}

const char *
funnel_rec_str (funnel_rec_t *rec, const char *field)
{
    return (const char *) zhashx_lookup (rec->fields, field);
}

int64_t
funnel_rec_int (funnel_rec_t *rec, const char *field, int64_t dflt)
{
    const char *text = funnel_rec_str (rec, field);
    if (!text || !*text)
        return dflt;
    char *end;
    errno = 0;
    long long value = strtoll (text, &end, 10);
    return *end || errno ? dflt : (int64_t) value;
}

static int
s_strcmp (void *a, void *b)
{
    return strcmp ((const char *) a, (const char *) b);
}

zlist_t *
funnel_rec_fields (funnel_rec_t *rec)
{
    zlist_t *names = zlist_new ();
    zlist_autofree (names);
    for (void *value = zhashx_first (rec->fields); value; value = zhashx_next (rec->fields))
        zlist_append (names, (void *) zhashx_cursor (rec->fields));
    zlist_sort (names, s_strcmp);
    return names;
}

void
funnel_rec_pack_entry (funnel_rec_t *rec, msgpack_packer *pk, const char *kind,
                       const char *id)
{
    size_t kind_size = strlen (kind), id_size = strlen (id);
    msgpack_pack_str (pk, kind_size + 1 + id_size);
    msgpack_pack_str_body (pk, kind, kind_size);
    msgpack_pack_str_body (pk, ":", 1);
    msgpack_pack_str_body (pk, id, id_size);
    funnel_rec_pack (rec, pk);
}

void
funnel_rec_pack (funnel_rec_t *rec, msgpack_packer *pk)
{
    zlist_t *fields = funnel_rec_fields (rec);
    msgpack_pack_map (pk, zlist_size (fields));
    for (const char *f = zlist_first (fields); f; f = zlist_next (fields)) {
        const char *value = funnel_rec_str (rec, f);
        msgpack_pack_str_with_body (pk, f, strlen (f));
        size_t size = strlen (value);
        if (event_codec_utf8_valid (value, size))
            msgpack_pack_str_with_body (pk, value, size);
        else {
            //  Binary (a compact history entry): "hex:" and its bytes
            char *hex = (char *) malloc (4 + 2 * size + 1);
            assert (hex);
            memcpy (hex, "hex:", 4);
            for (size_t i = 0; i < size; i++)
                snprintf (hex + 4 + 2 * i, 3, "%02x", (unsigned char) value [i]);
            msgpack_pack_str_with_body (pk, hex, 4 + 2 * size);
            free (hex);
        }
    }
    zlist_destroy (&fields);
}

const char *
funnel_rec_key (funnel_rec_t *rec)
{
    return rec->key;
}

//  Sets (value) or deletes (NULL) a field, logging the old value.
static void
s_write (funnel_rec_t *rec, const char *field, const char *value)
{
    funnel_state_t *self = rec->state;
    //  The undo log takes the old value itself rather than a copy: the
    //  hash's destructor is off while the field is replaced, so the old
    //  value is not freed (allocations were the daemons' top cost). Undo
    //  entries share the dirty entry's copy of the field name; it owns it.
    char *old = (char *) zhashx_lookup (rec->fields, field);
    char *name = NULL;
    for (size_t i = rec->dirty_count; i > 0 && !name; i--)
        if (streq (rec->dirty [i - 1], field))
            name = rec->dirty [i - 1];
    if (!name) {
        //  First write of this field in the batch: one dirty entry
        name = strdup (field);
        dirty_t *dirty = (dirty_t *) s_vec_push (&self->dirty);
        dirty->rec = rec;
        dirty->field = name;
        if (rec->dirty_count == rec->dirty_alloc) {
            rec->dirty_alloc = rec->dirty_alloc ? rec->dirty_alloc * 2 : 8;
            rec->dirty = (char **) realloc (rec->dirty, rec->dirty_alloc * sizeof (char *));
            assert (rec->dirty);
        }
        rec->dirty [rec->dirty_count++] = name;
    }
    //  The undo entry uses the dirty entry's name: it is popped first
    undo_t *undo = (undo_t *) s_vec_push (&self->undo);
    undo->rec = rec;
    undo->field = name;
    undo->old = old;
    zhashx_set_destructor (rec->fields, NULL);
    if (value)
        zhashx_update (rec->fields, field, strdup (value));
    else
        zhashx_delete (rec->fields, field);
    zhashx_set_destructor (rec->fields, s_free_value);
}

void
funnel_rec_set_str (funnel_rec_t *rec, const char *field, const char *value)
{
    s_write (rec, field, value);
}

void
funnel_rec_set_int (funnel_rec_t *rec, const char *field, int64_t value)
{
    //  Decimal without printf (counters are written for most events)
    char text [24];
    size_t len = 0;
    s_cat_int (text, sizeof text, &len, value);
    s_write (rec, field, text);
}

int64_t
funnel_rec_add (funnel_rec_t *rec, const char *field, int64_t n)
{
    int64_t value = funnel_rec_int (rec, field, 0) + n;
    funnel_rec_set_int (rec, field, value);
    return value;
}

void
funnel_rec_del (funnel_rec_t *rec, const char *field)
{
    if (funnel_rec_has (rec, field))
        s_write (rec, field, NULL);
}

//  ---------------------------------------------------------------------
//  Outputs, counters, lists, timers

msgpack_packer *
funnel_state_data (funnel_state_t *self)
{
    self->scratch.size = 0;
    return &self->scratch_pk;
}

static bool
s_id_chars_ok (const char *id)
{
    for (const unsigned char *p = (const unsigned char *) id; *p; p++)
        if (!s_plain (*p) && *p != ':')
            return false;
    return true;
}

void
funnel_state_emit (funnel_state_t *self, const char *type, const char *key)
{
    funnel_output_t *out = (funnel_output_t *) s_vec_push (&self->outputs);
    self->emits++;
    char id [512];
    size_t len = 0;
    s_cat (id, sizeof id, &len, self->svc);
    if (key) {
        s_cat (id, sizeof id, &len, ":");
        s_cat (id, sizeof id, &len, key);
        s_cat (id, sizeof id, &len, ":");
        s_cat (id, sizeof id, &len, type);
    }
    else
    if (self->cause [0]) {
        s_cat (id, sizeof id, &len, ":");
        s_cat (id, sizeof id, &len, self->cause);
        s_cat (id, sizeof id, &len, ":");
        s_cat_int (id, sizeof id, &len, self->emits);
    }
    else {
        //  Without a cause (a timer), now keeps ids apart from other runs'
        s_cat (id, sizeof id, &len, ":tick:");
        s_cat_int (id, sizeof id, &len, self->now);
        s_cat (id, sizeof id, &len, ":");
        s_cat_int (id, sizeof id, &len, self->emits);
    }
    if (strlen (id) > FUNNEL_ID_MAX || (key && !s_id_chars_ok (id))) {
        zdigest_t *digest = zdigest_new ();
        zdigest_update (digest, (const byte *) id, strlen (id));
        char hex [41];
        snprintf (hex, sizeof hex, "%s", zdigest_string (digest));
        zdigest_destroy (&digest);
        for (char *c = hex; *c; c++)
            *c = (char) tolower (*c);
        snprintf (id, sizeof id, "%s:%s", self->svc, hex);
    }
    memcpy (out->id, id, strlen (id) + 1);     //  ≤ 64 bytes by now
    len = 0;
    s_cat (out->type, sizeof out->type, &len, type);
    len = 0;
    s_cat (out->cause, sizeof out->cause, &len, self->cause);
    out->cause_ts = self->cause_ts;
    if (self->scratch.size == 0) {
        out->data = strdup ("\x80");
        out->size = 1;
    }
    else {
        out->data = (char *) malloc (self->scratch.size);
        memcpy (out->data, self->scratch.data, self->scratch.size);
        out->size = self->scratch.size;
    }
    self->scratch.size = 0;
}

void
funnel_state_count (funnel_state_t *self, const char *name, int64_t n)
{
    counter_t *c = (counter_t *) s_vec_push (&self->counters);
    c->name = strdup (name);
    c->n = n;
}

//  ---------------------------------------------------------------------
//  Stage series (proto/monitor.md, "Series")

static const int64_t s_step_ms [2] = { 3600000, 86400000 };
static const char s_step_code [2] = { 'h', 'd' };

static bool
s_valid_ms (int64_t t)
{
    return t >= 0 && t <= 9007199254740992LL;
}

void
funnel_state_set_series_keep (funnel_state_t *self, int64_t hour_s, int64_t day_s)
{
    self->series_keep [0] = hour_s > 0 ? hour_s : 90 * 86400;
    self->series_keep [1] = day_s > 0 ? day_s : 1096 * 86400;
}

int
funnel_state_series_key (funnel_state_t *self, char step, int64_t bucket,
                         const char *campaign, char *key, size_t size)
{
    //  The campaign is a valid id: written as it is (the bucket is digits,
    //  so everything after its ':' is the campaign)
    //  (built by hand: printf here cost 2% of leads)
    if (size == 0)
        return -1;
    char number [24], code [2] = { step, 0 };
    size_t digits = 0, len = 0;
    s_cat_int (number, sizeof number, &digits, bucket);
    s_cat (key, size, &len, self->base);
    s_cat (key, size, &len, "ser:");
    s_cat (key, size, &len, code);
    s_cat (key, size, &len, ":");
    s_cat (key, size, &len, number);
    if (campaign) {
        s_cat (key, size, &len, ":");
        s_cat (key, size, &len, campaign);
    }
    size_t need = strlen (self->base) + 6 + digits + (campaign ? 1 + strlen (campaign) : 0);
    return need >= size ? -1 : 0;
}

//  Adds n to stage name in the buckets holding t_ms, whole funnel
//  (campaign NULL) or one campaign (already checked).
static void
s_series_add (funnel_state_t *self, const char *name, int64_t t_ms,
              const char *campaign, int64_t n)
{
    int64_t now_s = self->now / 1000;
    for (int i = 0; i < 2; i++) {
        int64_t bucket = t_ms / s_step_ms [i];
        int64_t step_s = s_step_ms [i] / 1000;
        //  Kept keep seconds after the bucket ends, never later than keep
        //  + one bucket from now; a bucket already past its keep: nothing
        int64_t at = (bucket + 1) * step_s + self->series_keep [i];
        if (at <= now_s)
            continue;
        int64_t cap = now_s + self->series_keep [i] + step_s;
        char key [KEY_MAX];
        if (funnel_state_series_key (self, s_step_code [i], bucket, campaign,
                                     key, sizeof key) != 0)
            continue;
        series_op_t *op = (series_op_t *) s_vec_push (&self->series);
        op->key = strdup (key);
        op->field = strdup (name);
        op->n = n;
        op->expire_at = at < cap ? at : cap;
    }
}

void
funnel_state_count_stage (funnel_state_t *self, const char *name, int64_t t_ms,
                          const char *campaign, int64_t n)
{
    funnel_state_count (self, name, n);
    if (n == 0 || !s_valid_ms (t_ms))
        return;
    s_series_add (self, name, t_ms, NULL, n);
    //  An invalid campaign id counts only the whole funnel
    if (campaign && event_codec_id_valid (campaign, strlen (campaign)))
        s_series_add (self, name, t_ms, campaign, n);
}

void
funnel_state_series_add (funnel_state_t *self, const char *name, int64_t t_ms,
                         const char *campaign, int64_t n)
{
    if (n == 0 || !s_valid_ms (t_ms))
        return;
    if (!campaign || event_codec_id_valid (campaign, strlen (campaign)))
        s_series_add (self, name, t_ms, campaign, n);
}

int64_t
funnel_state_event_time (funnel_state_t *self, const funnel_event_t *ev, bool consumed)
{
    (void) self;
    const msgpack_object *at = consumed ? event_codec_map_get (ev->data, "at") : NULL;
    if (at && at->type == MSGPACK_OBJECT_POSITIVE_INTEGER
    &&  at->via.u64 <= 9007199254740992ULL)
        return (int64_t) at->via.u64;
    if (at && (at->type == MSGPACK_OBJECT_FLOAT64 || at->type == MSGPACK_OBJECT_FLOAT32)
    &&  at->via.f64 >= 0
    &&  at->via.f64 <= 9007199254740992.0 && at->via.f64 == floor (at->via.f64))
        return (int64_t) at->via.f64;
    return ev->ts;
}

//  "<prefix of id's partition><kind>:<escaped id>"
static int
s_entity_key (funnel_state_t *self, const char *owner, const char *kind, const char *id,
              char *key, size_t size)
{
    char escaped [KEY_MAX];
    if (funnel_key_escape (id, escaped, sizeof escaped) < 0)
        return -1;
    if (snprintf (key, size, "%s%s:%s",
                  self->data [funnel_partition_of (owner, self->partitions)], kind, escaped)
        >= (int) size)
        return -1;
    return 0;
}

void
funnel_state_push (funnel_state_t *self, const char *kind, const char *id,
                   const char *value, size_t size, int max)
{
    funnel_state_push_in (self, id, kind, id, value, size, max);
}

void
funnel_state_push_in (funnel_state_t *self, const char *owner, const char *kind,
                      const char *id, const char *value, size_t size, int max)
{
    char key [KEY_MAX];
    if (s_entity_key (self, owner, kind, id, key, sizeof key) != 0)
        return;
    push_t *push = (push_t *) s_vec_push (&self->pushes);
    push->key = strdup (key);
    push->value = (char *) malloc (size + 1);
    memcpy (push->value, value, size);
    push->value [size] = 0;
    push->size = size;
    push->max = max > 0 ? max : 1;
}

zlist_t *
funnel_state_list (funnel_state_t *self, const char *kind, const char *id, int max)
{
    return funnel_state_list_in (self, id, kind, id, max);
}

zlist_t *
funnel_state_list_in (funnel_state_t *self, const char *owner, const char *kind,
                      const char *id, int max)
{
    char key [KEY_MAX];
    if (max < 1 || s_entity_key (self, owner, kind, id, key, sizeof key) != 0
    ||  !self->list_reader)
        return NULL;
    zlist_t *list = zlist_new ();
    zlist_autofree (list);
    if (self->list_reader (self->list_arg, key, max, list) != 0) {
        zlist_destroy (&list);
        return NULL;
    }
    for (size_t i = 0; i < self->pushes.count; i++) {
        push_t *push = (push_t *) s_vec_at (&self->pushes, i);
        if (streq (push->key, key))
            zlist_append (list, push->value);
    }
    while (zlist_size (list) > (size_t) max)
        zlist_remove (list, zlist_first (list));
    return list;
}

static void
s_timer_op (funnel_state_t *self, int part, const char *name, const char *id, int64_t due,
            bool cancel)
{
    char escaped [KEY_MAX], key [KEY_MAX];
    if (part < 0 || part >= self->partitions
    ||  funnel_key_escape (id, escaped, sizeof escaped) < 0)
        return;
    snprintf (key, sizeof key, "%stimers", self->data [part]);
    timer_op_t *op = (timer_op_t *) s_vec_push (&self->timers);
    op->key = strdup (key);
    op->member = zsys_sprintf ("%s:%s", name, escaped);
    op->due = due;
    op->cancel = cancel;
}

void
funnel_state_timer (funnel_state_t *self, const char *name, const char *id, int64_t due_ms)
{
    s_timer_op (self, funnel_partition_of (id, self->partitions), name, id, due_ms, false);
}

void
funnel_state_timer_cancel (funnel_state_t *self, const char *name, const char *id)
{
    s_timer_op (self, funnel_partition_of (id, self->partitions), name, id, 0, true);
}

void
funnel_state_timer_in (funnel_state_t *self, const char *owner, const char *name,
                       const char *id, int64_t due_ms)
{
    s_timer_op (self, funnel_partition_of (owner, self->partitions), name, id, due_ms, false);
}

void
funnel_state_timer_cancel_in (funnel_state_t *self, const char *owner, const char *name,
                              const char *id)
{
    s_timer_op (self, funnel_partition_of (owner, self->partitions), name, id, 0, true);
}

void
funnel_state_timer_cancel_at (funnel_state_t *self, int part, const char *name,
                              const char *id)
{
    s_timer_op (self, part, name, id, 0, true);
}

size_t
funnel_state_output_count (funnel_state_t *self)
{
    return self->outputs.count;
}

const funnel_output_t *
funnel_state_output (funnel_state_t *self, size_t index)
{
    assert (index < self->outputs.count);
    return (const funnel_output_t *) s_vec_at (&self->outputs, index);
}

//  ---------------------------------------------------------------------
//  Savepoints and commit

void
funnel_state_begin (funnel_state_t *self)
{
    s_reset_writes (self);
    self->wants.count = 0;
}

funnel_savepoint_t
funnel_state_savepoint (funnel_state_t *self)
{
    funnel_savepoint_t sp = {
        self->undo.count, self->dirty.count, self->outputs.count,
        self->counters.count, self->pushes.count, self->timers.count,
        self->series.count, self->raws.count
    };
    return sp;
}

void
funnel_state_rollback (funnel_state_t *self, funnel_savepoint_t sp)
{
    while (self->undo.count > sp.undo) {
        undo_t *undo = (undo_t *) s_vec_at (&self->undo, --self->undo.count);
        //  The value written is freed; the old one goes back to the hash
        if (undo->old)
            zhashx_update (undo->rec->fields, undo->field, undo->old);
        else
            zhashx_delete (undo->rec->fields, undo->field);
    }
    while (self->dirty.count > sp.dirty) {
        dirty_t *dirty = (dirty_t *) s_vec_at (&self->dirty, --self->dirty.count);
        funnel_rec_t *rec = dirty->rec;
        for (size_t i = rec->dirty_count; i > 0; i--)
            if (rec->dirty [i - 1] == dirty->field) {
                rec->dirty [i - 1] = rec->dirty [--rec->dirty_count];
                break;
            }
        free (dirty->field);
    }
    while (self->outputs.count > sp.outputs)
        free (((funnel_output_t *) s_vec_at (&self->outputs, --self->outputs.count))->data);
    while (self->counters.count > sp.counters)
        free (((counter_t *) s_vec_at (&self->counters, --self->counters.count))->name);
    while (self->pushes.count > sp.lists) {
        push_t *push = (push_t *) s_vec_at (&self->pushes, --self->pushes.count);
        free (push->key);
        free (push->value);
    }
    while (self->timers.count > sp.timers) {
        timer_op_t *op = (timer_op_t *) s_vec_at (&self->timers, --self->timers.count);
        free (op->key);
        free (op->member);
    }
    while (self->series.count > sp.series) {
        series_op_t *op = (series_op_t *) s_vec_at (&self->series, --self->series.count);
        free (op->key);
        free (op->field);
    }
    while (self->raws.count > sp.raws) {
        raw_op_t *op = (raw_op_t *) s_vec_at (&self->raws, --self->raws.count);
        for (int i = 0; i < op->argc; i++)
            free (op->argv [i]);
        free (op->argv);
        free (op->lens);
    }
}

//  Forgets the write-set without undoing it (the undo log's old values
//  are freed, the cache keeps the new ones).
static void
s_reset_writes (funnel_state_t *self)
{
    for (size_t i = 0; i < self->undo.count; i++)
        free (((undo_t *) s_vec_at (&self->undo, i))->old);
    self->undo.count = 0;
    funnel_savepoint_t zero = { self->undo.count, 0, 0, 0, 0, 0, 0, 0 };
    funnel_state_rollback (self, zero);
}

void
funnel_state_committed (funnel_state_t *self)
{
    s_reset_writes (self);
    while (zhashx_size (self->cache) > self->cache_max) {
        funnel_rec_t *rec = (funnel_rec_t *) zlistx_first (self->lru);
        if (!rec)
            break;
        zlistx_delete (self->lru, rec->lru);
        zhashx_delete (self->cache, rec->key);
    }
}

void
funnel_state_clear (funnel_state_t *self)
{
    s_reset_writes (self);
    self->wants.count = 0;
    zlistx_purge (self->lru);
    zhashx_purge (self->cache);
}

//  ---------------------------------------------------------------------
//  Privacy

void
funnel_state_set_redactor (funnel_state_t *self, funnel_state_redactor_fn *fn, void *arg)
{
    self->redactor = fn;
    self->redactor_arg = arg;
}

void
funnel_state_set_personal (funnel_state_t *self, const funnel_personal_t *table)
{
    self->personal = table;
}

void
funnel_state_personal (funnel_state_t *self, const char *person)
{
    if (self->outputs.count == 0 || !person || strlen (person) > FUNNEL_ID_MAX)
        return;
    funnel_output_t *out = (funnel_output_t *) s_vec_at (&self->outputs,
                                                         self->outputs.count - 1);
    memcpy (out->person, person, strlen (person) + 1);
}

int
funnel_state_forget_outputs (funnel_state_t *self, const char *person)
{
    //  Stored outputs first: if Redis fails, nothing has been rewritten
    if (self->redactor && self->redactor (self->redactor_arg, self, person) != 0)
        return -1;
    //  This batch's outputs: rewritten before they are ever stored
    for (size_t i = 0; i < self->outputs.count; i++) {
        funnel_output_t *out = (funnel_output_t *) s_vec_at (&self->outputs, i);
        if (!streq (out->person, person))
            continue;
        char *data = NULL;
        size_t size = 0;
        if (funnel_privacy_redact (out->data, out->size,
                                   funnel_privacy_fields (self->personal, out->type),
                                   &data, &size) == 1) {
            free (out->data);
            out->data = data;
            out->size = size;
        }
        out->person [0] = 0;
    }
    return 0;
}

int
funnel_state_key_in (funnel_state_t *self, const char *owner, const char *kind,
                     const char *id, char *key, size_t size)
{
    return s_entity_key (self, owner, kind, id, key, size);
}

zlist_t *
funnel_state_person_outputs (funnel_state_t *self, const char *person)
{
    return funnel_state_list_in (self, person, "pi", person, FUNNEL_PERSONAL_INDEX);
}

bool
funnel_state_index_entry (const char *text, int *part, uint64_t *seq)
{
    char *end = NULL;
    uint64_t first = strtoull (text, &end, 10);
    *part = -1;
    if (*end == ':') {
        if (first > INT32_MAX)
            return false;
        *part = (int) first;
        first = strtoull (end + 1, &end, 10);
    }
    *seq = first;
    return *end == 0 && end != text && first > 0;
}

void
funnel_state_pack_seqs (zlist_t *seqs, msgpack_packer *pk)
{
    size_t valid = 0;
    int part;
    uint64_t seq;
    for (const char *s = zlist_first (seqs); s; s = zlist_next (seqs))
        valid += funnel_state_index_entry (s, &part, &seq);
    msgpack_pack_array (pk, valid);
    for (const char *s = zlist_first (seqs); s; s = zlist_next (seqs)) {
        //  A partition's entry is packed [part, seq] (proto/privacy.md, Export)
        if (!funnel_state_index_entry (s, &part, &seq))
            continue;
        if (part >= 0) {
            msgpack_pack_array (pk, 2);
            msgpack_pack_uint64 (pk, (uint64_t) part);
        }
        msgpack_pack_uint64 (pk, seq);
    }
}

int
funnel_state_person_index_key (funnel_state_t *self, const char *person, char *key,
                               size_t size)
{
    return s_entity_key (self, person, "pi", person, key, size);
}

void
funnel_state_raw (funnel_state_t *self, int argc, const char **argv, const size_t *lens)
{
    raw_op_t *op = (raw_op_t *) s_vec_push (&self->raws);
    op->argc = argc;
    op->argv = (char **) malloc ((size_t) argc * sizeof (char *));
    op->lens = (size_t *) malloc ((size_t) argc * sizeof (size_t));
    assert (op->argv && op->lens);
    for (int i = 0; i < argc; i++) {
        size_t len = lens ? lens [i] : strlen (argv [i]);
        op->argv [i] = (char *) malloc (len + 1);
        assert (op->argv [i]);
        memcpy (op->argv [i], argv [i], len);
        op->argv [i][len] = 0;
        op->lens [i] = len;
    }
}

void
funnel_state_cache_stats (funnel_state_t *self, uint64_t *hits, uint64_t *misses,
                          size_t *entries)
{
    *hits = self->hits;
    *misses = self->misses;
    *entries = zhashx_size (self->cache);
}

//  "*<argc>\r\n" then "$<len>\r\n<arg>\r\n" per argument: the request
//  redisAppendCommandArgv would build
void
funnel_redis_append (redisContext *ctx, int argc, const char **argv, const size_t *lens)
{
    size_t total = 24;
    for (int i = 0; i < argc; i++)
        total += (lens ? lens [i] : strlen (argv [i])) + 26;
    char small [1024];
    char *buf = total <= sizeof small ? small : (char *) malloc (total);
    assert (buf);
    size_t len = 0;
    buf [len++] = '*';
    s_cat_int (buf, total, &len, argc);
    buf [len++] = '\r';
    buf [len++] = '\n';
    for (int i = 0; i < argc; i++) {
        size_t n = lens ? lens [i] : strlen (argv [i]);
        buf [len++] = '$';
        s_cat_int (buf, total, &len, (int64_t) n);
        buf [len++] = '\r';
        buf [len++] = '\n';
        memcpy (buf + len, argv [i], n);
        len += n;
        buf [len++] = '\r';
        buf [len++] = '\n';
    }
    redisAppendFormattedCommand (ctx, buf, len);
    if (buf != small)
        free (buf);
}

void
funnel_redis_sink_ctx (void *arg, int argc, const char **argv, const size_t *lens)
{
    funnel_redis_append ((redisContext *) arg, argc, argv, lens);
}

//  An argv under construction.
typedef struct {
    const char **argv;
    size_t *lens;
    int argc, alloc;
} cmd_t;

static void
s_cmd_add (cmd_t *cmd, const char *arg, size_t len)
{
    if (cmd->argc == cmd->alloc) {
        cmd->alloc = cmd->alloc ? cmd->alloc * 2 : 16;
        cmd->argv = (const char **) realloc (cmd->argv, cmd->alloc * sizeof (char *));
        cmd->lens = (size_t *) realloc (cmd->lens, cmd->alloc * sizeof (size_t));
    }
    cmd->argv [cmd->argc] = arg;
    cmd->lens [cmd->argc++] = len;
}

static void
s_cmd_str (cmd_t *cmd, const char *arg)
{
    s_cmd_add (cmd, arg, strlen (arg));
}

static int
s_cmd_send (cmd_t *cmd, funnel_redis_sink_fn *sink, void *arg, int min_args)
{
    int sent = 0;
    if (cmd->argc > min_args) {
        sink (arg, cmd->argc, cmd->argv, cmd->lens);
        sent = 1;
    }
    cmd->argc = 0;
    return sent;
}

//  Pushes by list key, then in the order they were made (qsort has no
//  context argument in C11: the state being sorted, set just before)
static funnel_state_t *s_sort_pushes;

static int
s_push_cmp (const void *a, const void *b)
{
    size_t x = *(const size_t *) a, y = *(const size_t *) b;
    int c = strcmp (((push_t *) s_vec_at (&s_sort_pushes->pushes, x))->key,
                    ((push_t *) s_vec_at (&s_sort_pushes->pushes, y))->key);
    return c ? c : x < y ? -1 : x > y ? 1 : 0;
}

static int
s_series_cmp (const void *a, const void *b)
{
    const series_op_t *x = (const series_op_t *) a, *y = (const series_op_t *) b;
    int c = strcmp (x->key, y->key);
    return c ? c : strcmp (x->field, y->field);
}

int
funnel_state_append_writes (funnel_state_t *self, funnel_redis_sink_fn *sink, void *arg,
                            const char *stats_key)
{
    int commands = 0;
    cmd_t set = { 0 }, del = { 0 };
    //  Records: the final value of each dirty field, one HSET and at most
    //  one HDEL per record. A record's dirty names are unique (s_write adds
    //  each field once) and listed on it, so it is grouped at its first
    //  dirty entry: sorting the write-set by record and field was ~5% of
    //  campaign's CPU (a batch dirties ~10 fields of ~170 contacts)
    for (size_t i = 0; i < self->dirty.count; i++) {
        funnel_rec_t *rec = ((dirty_t *) s_vec_at (&self->dirty, i))->rec;
        if (rec->emitted)
            continue;
        rec->emitted = true;
        s_cmd_str (&set, "HSET");
        s_cmd_str (&set, rec->key);
        s_cmd_str (&del, "HDEL");
        s_cmd_str (&del, rec->key);
        for (size_t f = 0; f < rec->dirty_count; f++) {
            const char *value = funnel_rec_str (rec, rec->dirty [f]);
            if (value) {
                s_cmd_str (&set, rec->dirty [f]);
                s_cmd_str (&set, value);
            }
            else
                s_cmd_str (&del, rec->dirty [f]);
        }
        commands += s_cmd_send (&set, sink, arg, 2);
        commands += s_cmd_send (&del, sink, arg, 2);
    }
    for (size_t i = 0; i < self->dirty.count; i++)
        ((dirty_t *) s_vec_at (&self->dirty, i))->rec->emitted = false;
    //  Bounded lists: per list, one RPUSH of its values in order, then
    //  one LTRIM to the smallest bound asked
    char number [24];
    size_t *order = (size_t *) malloc ((self->pushes.count + 1) * sizeof (size_t));
    for (size_t i = 0; i < self->pushes.count; i++)
        order [i] = i;
    s_sort_pushes = self;
    qsort (order, self->pushes.count, sizeof (size_t), s_push_cmp);
    cmd_t rpush = { 0 };
    for (size_t i = 0; i < self->pushes.count; ) {
        push_t *first = (push_t *) s_vec_at (&self->pushes, order [i]);
        int max = first->max;
        s_cmd_str (&rpush, "RPUSH");
        s_cmd_str (&rpush, first->key);
        size_t j = i;
        for (; j < self->pushes.count; j++) {
            push_t *push = (push_t *) s_vec_at (&self->pushes, order [j]);
            if (!streq (push->key, first->key))
                break;
            s_cmd_add (&rpush, push->value, push->size);
            if (push->max < max)
                max = push->max;
        }
        commands += s_cmd_send (&rpush, sink, arg, 2);
        snprintf (number, sizeof number, "%d", -max);
        const char *ltrim [] = { "LTRIM", first->key, number, "-1" };
        sink (arg, 4, ltrim, NULL);
        commands++;
        i = j;
    }
    free (rpush.argv);
    free (rpush.lens);
    free (order);
    //  Timers: only the last op per timer counts (a cancel then a re-arm
    //  ends armed), so a batch re-arming one timer per event sends one
    zhashx_t *last = zhashx_new ();
    for (size_t i = 0; i < self->timers.count; i++) {
        timer_op_t *op = (timer_op_t *) s_vec_at (&self->timers, i);
        char *name = zsys_sprintf ("%s %s", op->key, op->member);
        zhashx_update (last, name, (void *) (uintptr_t) (i + 1));
        zstr_free (&name);
    }
    for (size_t i = 0; i < self->timers.count; i++) {
        timer_op_t *op = (timer_op_t *) s_vec_at (&self->timers, i);
        char *name = zsys_sprintf ("%s %s", op->key, op->member);
        size_t final = (size_t) (uintptr_t) zhashx_lookup (last, name);
        zstr_free (&name);
        if (final != i + 1)
            continue;
        snprintf (number, sizeof number, "%" PRId64, op->due);
        if (op->cancel) {
            const char *zrem [] = { "ZREM", op->key, op->member };
            sink (arg, 3, zrem, NULL);
        }
        else {
            const char *zadd [] = { "ZADD", op->key, number, op->member };
            sink (arg, 4, zadd, NULL);
        }
        commands++;
    }
    zhashx_destroy (&last);
    //  Counters: one HINCRBY per name
    for (size_t i = 0; i < self->counters.count; i++) {
        counter_t *c = (counter_t *) s_vec_at (&self->counters, i);
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++)
            seen = streq (((counter_t *) s_vec_at (&self->counters, j))->name, c->name);
        if (seen)
            continue;
        int64_t total = 0;
        for (size_t j = i; j < self->counters.count; j++) {
            counter_t *o = (counter_t *) s_vec_at (&self->counters, j);
            if (streq (o->name, c->name))
                total += o->n;
        }
        snprintf (number, sizeof number, "%" PRId64, total);
        const char *incr [] = { "HINCRBY", stats_key, c->name, number };
        sink (arg, 4, incr, NULL);
        commands++;
    }
    //  Series: one HINCRBY per (key, stage), then one EXPIREAT per key
    //  (after its writes: EXPIREAT on a key no write created is a no-op)
    if (self->series.count > 1)
        qsort (self->series.items, self->series.count, sizeof (series_op_t), s_series_cmp);
    for (size_t i = 0; i < self->series.count; ) {
        series_op_t *first = (series_op_t *) s_vec_at (&self->series, i);
        int64_t expire_at = 0;
        size_t j = i;
        while (j < self->series.count) {
            series_op_t *op = (series_op_t *) s_vec_at (&self->series, j);
            if (!streq (op->key, first->key))
                break;
            int64_t total = 0;
            size_t k = j;
            for (; k < self->series.count; k++) {
                series_op_t *o = (series_op_t *) s_vec_at (&self->series, k);
                if (!streq (o->key, first->key) || !streq (o->field, op->field))
                    break;
                total += o->n;
                if (o->expire_at > expire_at)
                    expire_at = o->expire_at;
            }
            snprintf (number, sizeof number, "%" PRId64, total);
            const char *incr [] = { "HINCRBY", op->key, op->field, number };
            sink (arg, 4, incr, NULL);
            commands++;
            j = k;
        }
        if (expire_at > 0) {
            snprintf (number, sizeof number, "%" PRId64, expire_at);
            const char *expire [] = { "EXPIREAT", first->key, number };
            sink (arg, 3, expire, NULL);
            commands++;
        }
        i = j;
    }
    //  Raw commands last, in the order queued
    for (size_t i = 0; i < self->raws.count; i++) {
        raw_op_t *op = (raw_op_t *) s_vec_at (&self->raws, i);
        sink (arg, op->argc, (const char **) op->argv, op->lens);
        commands++;
    }
    free (set.argv);
    free (set.lens);
    free (del.argv);
    free (del.lens);
    return commands;
}

//  ---------------------------------------------------------------------
//  Self-test (pure: no Redis; funnel_engine_test covers the commit)

#undef NDEBUG
#include <assert.h>

//  A sink that keeps each command as one line, words apart.
static void
s_test_sink (void *arg, int argc, const char **argv, const size_t *lens)
{
    char line [512] = "";
    for (int i = 0; i < argc; i++)
        snprintf (line + strlen (line), sizeof line - strlen (line), "%s%.*s", i ? " " : "",
                  (int) (lens ? lens [i] : strlen (argv [i])), argv [i]);
    zlist_append ((zlist_t *) arg, line);
}

static int
s_test_loader (void *arg, funnel_state_t *st, funnel_rec_t **recs, size_t count)
{
    int *loads = (int *) arg;
    for (size_t i = 0; i < count; i++) {
        (*loads)++;
        funnel_state_fill (st, recs [i], NULL);     //  Every record starts absent
    }
    return 0;
}

void
funnel_state_test (bool verbose)
{
    (void) verbose;
    //  Injective keys: ':' and '%' are escaped, so "X:log" is not "X" + ":log"
    char a [64], b [64];
    assert (funnel_key_escape ("X:log", a, sizeof a) == 7);
    assert (streq (a, "X%3Alog"));
    assert (funnel_key_escape ("X%3Alog", b, sizeof b) > 0);
    assert (!streq (a, b));
    assert (funnel_key_unescape (a, b, sizeof b) == 5 && streq (b, "X:log"));
    assert (funnel_key_escape ("abc", a, 3) == -1);
    assert (funnel_partition_of ("anything", 1) == 0);
    int hits [4] = { 0 };
    for (int i = 0; i < 400; i++) {
        char id [16];
        snprintf (id, sizeof id, "L%d", i);
        hits [funnel_partition_of (id, 4)]++;
    }
    for (int p = 0; p < 4; p++)
        assert (hits [p] > 50);         //  Spread over every partition

    int loads = 0;
    funnel_rec_t **wants_in;
    funnel_state_t *st = funnel_state_new ("t", "{funnel:t}:", 4, 2);
    assert (streq (funnel_state_prefix (st, 3), "{funnel:t:3}:"));
    funnel_state_set_loader (st, s_test_loader, &loads);
    funnel_state_set_now (st, 1000);

    //  Event 1 applies, event 2 is refused: only event 1 remains
    funnel_state_begin (st);
    funnel_state_set_cause (st, "e1", 5);
    funnel_savepoint_t sp = funnel_state_savepoint (st);
    funnel_rec_t *rec = funnel_state_rec (st, "counter", "X:log");
    assert (rec && !funnel_rec_exists (rec) && loads == 1);
    assert (strstr (funnel_rec_key (rec), "counter:X%3Alog"));
    assert (funnel_rec_add (rec, "total", 3) == 3);
    funnel_rec_set_str (rec, "name", "x");
    funnel_state_count (st, "added", 3);
    msgpack_packer *pk = funnel_state_data (st);
    msgpack_pack_map (pk, 0);
    funnel_state_emit (st, "test.added", NULL);
    assert (streq (funnel_state_output (st, 0)->id, "t:e1:1"));
    sp = funnel_state_savepoint (st);
    funnel_state_set_cause (st, "e2", 6);
    assert (funnel_rec_add (rec, "total", 10) == 13);
    funnel_rec_del (rec, "name");
    funnel_state_emit (st, "test.added", NULL);
    funnel_state_push (st, "log", "X", "a", 1, 5);
    funnel_state_timer (st, "expire", "X", 5000);
    funnel_state_rollback (st, sp);
    assert (funnel_rec_int (rec, "total", 0) == 3);
    assert (streq (funnel_rec_str (rec, "name"), "x"));
    assert (funnel_state_output_count (st) == 1);
    //  Field names, sorted, as of this batch
    zlist_t *names = funnel_rec_fields (rec);
    assert (zlist_size (names) == 2 && streq (zlist_first (names), "name")
         && streq (zlist_next (names), "total"));
    zlist_destroy (&names);
    //  Reading again is a hit: no second load
    assert (funnel_state_rec (st, "counter", "X:log") == rec && loads == 1);
    //  Long or odd keys give sha1 ids within the charset
    funnel_state_set_cause (st, NULL, 0);
    funnel_state_emit (st, "t.x", "a key with spaces");
    const char *id = funnel_state_output (st, 1)->id;
    assert (strlen (id) == 2 + 40 && strncmp (id, "t:", 2) == 0);
    funnel_state_committed (st);
    assert (funnel_state_output_count (st) == 0);
    assert (funnel_rec_int (funnel_state_rec (st, "counter", "X:log"), "total", 0) == 3);

    //  Records of one entity kept in another's partition (a deal in its
    //  lead's): the key carries the owner's partition prefix, not the id's
    funnel_state_begin (st);
    int owner_part = funnel_partition_of ("lead-7", 4);
    const char *owner_prefix = funnel_state_prefix (st, owner_part);
    char owner_key [64];
    snprintf (owner_key, sizeof owner_key, "%sd:Lx-1", owner_prefix);
    funnel_rec_t *in = funnel_state_rec_in (st, "lead-7", "d", "Lx-1");
    assert (in && streq (funnel_rec_key (in), owner_key));
    funnel_rec_set_str (in, "b", "2");
    funnel_rec_set_str (in, "a", "1");
    assert (funnel_rec_count (in) == 2);
    names = funnel_rec_fields (in);
    assert (zlist_size (names) == 2 && streq ((char *) zlist_first (names), "a"));
    zlist_destroy (&names);
    funnel_state_want_in (st, "lead-7", "d", "Lx-2");
    assert (funnel_state_take_wants (st, &wants_in) == 1);
    assert (strncmp (funnel_rec_key (wants_in [0]), owner_prefix, strlen (owner_prefix)) == 0);
    //  Timer ops: only the last per timer is sent (checked in the engine's
    //  test); cancel_at names the partition the engine read it from
    funnel_state_timer_in (st, "lead-7", "t", "Lx-1", 10);
    funnel_state_timer_cancel_at (st, owner_part, "t", "Lx-1");
    funnel_state_timer_cancel_at (st, 99, "t", "Lx-1");      //  No such partition: nothing
    assert (funnel_state_savepoint (st).timers == 2);
    funnel_state_rollback (st, (funnel_savepoint_t) { 0 });
    funnel_state_clear (st);

    //  The cache is bounded: older records are evicted after a commit
    funnel_state_begin (st);
    funnel_state_want (st, "c", "a");
    funnel_state_want (st, "c", "b");
    funnel_state_want (st, "c", "a");           //  Once in the list
    funnel_rec_t **wants;
    assert (funnel_state_take_wants (st, &wants) == 2);
    funnel_state_committed (st);
    uint64_t h, m;
    size_t entries;
    funnel_state_cache_stats (st, &h, &m, &entries);
    assert (entries == 2 && h >= 1 && m >= 3);
    funnel_state_clear (st);
    funnel_state_cache_stats (st, &h, &m, &entries);
    assert (entries == 0);

    //  Series: the keys (base prefix), what is written, and a rollback
    //  drops a refused event's increments
    char skey [128];
    assert (funnel_state_series_key (st, 'h', 7, NULL, skey, sizeof skey) == 0);
    assert (streq (skey, "{funnel:t}:ser:h:7"));
    assert (funnel_state_series_key (st, 'd', 7, "c:1", skey, sizeof skey) == 0);
    assert (streq (skey, "{funnel:t}:ser:d:7:c:1"));
    funnel_state_begin (st);
    funnel_state_set_now (st, 1700000000000);
    funnel_state_count_stage (st, "won", 1700000000000, "c1", 2);
    assert (funnel_state_savepoint (st).series == 4);   //  Hour + day, whole + campaign
    sp = funnel_state_savepoint (st);
    funnel_state_count_stage (st, "won", 1700000000000, "c 1", 1);
    assert (funnel_state_savepoint (st).series == 6);   //  A bad campaign: whole only
    funnel_state_count_stage (st, "won", 5, "c1", 1);   //  1970: past its keep
    funnel_state_count_stage (st, "won", 1700000000000, "c1", 0);
    funnel_state_count_stage (st, "won", -1, "c1", 1);
    assert (funnel_state_savepoint (st).series == 6);
    assert (funnel_state_savepoint (st).counters == 5);    //  STATS counts them all
    funnel_state_rollback (st, sp);
    assert (funnel_state_savepoint (st).series == 4 && funnel_state_savepoint (st).counters == 1);
    //  A shorter keep: a bucket 3 hours old is past an hour's keep, not a day's
    funnel_state_set_series_keep (st, 3600, 86400);
    funnel_state_count_stage (st, "won", 1700000000000 - 3 * 3600000, NULL, 1);
    assert (funnel_state_savepoint (st).series == 5);
    //  One series alone: no counter, no whole-funnel bucket
    funnel_savepoint_t before = funnel_state_savepoint (st);
    funnel_state_series_add (st, "reached", 1700000000000, "c1", 1);
    assert (funnel_state_savepoint (st).series == before.series + 2);   //  Hour + day
    assert (funnel_state_savepoint (st).counters == before.counters);
    funnel_state_series_add (st, "reached", 1700000000000, "c 1", 1);  //  Bad id: nothing
    funnel_state_series_add (st, "reached", -5, NULL, 1);
    assert (funnel_state_savepoint (st).series == before.series + 2);
    funnel_state_committed (st);
    assert (funnel_state_savepoint (st).series == 0);

    //  Event time: a consumed event's data.at (a valid ms), else ts
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init (&sbuf);
    msgpack_packer dpk;
    msgpack_packer_init (&dpk, &sbuf, msgpack_sbuffer_write);
    msgpack_pack_array (&dpk, 4);
    msgpack_pack_map (&dpk, 1);
    msgpack_pack_str (&dpk, 2);  msgpack_pack_str_body (&dpk, "at", 2);
    msgpack_pack_int64 (&dpk, 1234);
    msgpack_pack_map (&dpk, 1);
    msgpack_pack_str (&dpk, 2);  msgpack_pack_str_body (&dpk, "at", 2);
    msgpack_pack_int64 (&dpk, -5);
    msgpack_pack_map (&dpk, 1);
    msgpack_pack_str (&dpk, 2);  msgpack_pack_str_body (&dpk, "at", 2);
    msgpack_pack_double (&dpk, 4321.0);
    msgpack_pack_map (&dpk, 0);
    msgpack_unpacked unpacked;
    msgpack_unpacked_init (&unpacked);
    assert (msgpack_unpack_next (&unpacked, sbuf.data, sbuf.size, NULL) == MSGPACK_UNPACK_SUCCESS);
    const msgpack_object *datas = unpacked.data.via.array.ptr;
    funnel_event_t ev;
    memset (&ev, 0, sizeof ev);
    ev.ts = 99;
    ev.data = &datas [0];
    assert (funnel_state_event_time (st, &ev, true) == 1234);
    assert (funnel_state_event_time (st, &ev, false) == 99);    //  PUBLISHed: ts
    ev.data = &datas [1];
    assert (funnel_state_event_time (st, &ev, true) == 99);     //  Not a valid ms
    ev.data = &datas [2];
    assert (funnel_state_event_time (st, &ev, true) == 4321);
    ev.data = &datas [3];
    assert (funnel_state_event_time (st, &ev, true) == 99);     //  No at
    msgpack_unpacked_destroy (&unpacked);
    msgpack_sbuffer_destroy (&sbuf);

    //  Privacy: an output marked with its person is rewritten in the batch
    //  by forget_outputs (no redactor: nothing stored to rewrite); raw
    //  commands roll back with the savepoint
    static const funnel_personal_t personal [] = { { "t.said", { "secret", NULL } }, { NULL } };
    funnel_state_set_personal (st, personal);
    funnel_state_begin (st);
    funnel_state_set_cause (st, "e9", 5);
    msgpack_packer *spk = funnel_state_data (st);
    msgpack_pack_map (spk, 2);
    msgpack_pack_str_with_body (spk, "who", 3);
    msgpack_pack_str_with_body (spk, "W", 1);
    msgpack_pack_str_with_body (spk, "secret", 6);
    msgpack_pack_str_with_body (spk, "s3cr3t", 6);
    funnel_state_emit (st, "t.said", NULL);
    funnel_state_personal (st, "W");
    funnel_state_emit (st, "t.other", NULL);
    assert (streq (funnel_state_output (st, 0)->person, "W"));
    assert (!funnel_state_output (st, 1)->person [0]);
    char pkey [256];
    assert (funnel_state_person_index_key (st, "W", pkey, sizeof pkey) == 0);
    assert (strstr (pkey, "}:pi:W"));
    //  Index entries: "<seq>" or "<part>:<seq>"; anything else is refused
    int ipart;
    uint64_t iseq;
    assert (funnel_state_index_entry ("42", &ipart, &iseq) && ipart == -1 && iseq == 42);
    assert (funnel_state_index_entry ("3:7", &ipart, &iseq) && ipart == 3 && iseq == 7);
    assert (!funnel_state_index_entry ("", &ipart, &iseq));
    assert (!funnel_state_index_entry ("0", &ipart, &iseq));
    assert (!funnel_state_index_entry ("3:", &ipart, &iseq));
    assert (!funnel_state_index_entry ("3:7x", &ipart, &iseq));
    assert (!funnel_state_index_entry ("99999999999:1", &ipart, &iseq));
    funnel_savepoint_t raw_sp = funnel_state_savepoint (st);
    const char *del [] = { "DEL", pkey };
    funnel_state_raw (st, 2, del, NULL);
    assert (funnel_state_savepoint (st).raws == raw_sp.raws + 1);
    funnel_state_rollback (st, raw_sp);
    assert (funnel_state_savepoint (st).raws == raw_sp.raws);
    assert (funnel_state_forget_outputs (st, "W") == 0);
    const funnel_output_t *said = funnel_state_output (st, 0);
    assert (!said->person [0]);
    assert (!memmem (said->data, said->size, "s3cr3t", 6));
    assert (memmem (said->data, said->size, "redacted", 8));
    assert (memmem (said->data, said->size, "who", 3));
    funnel_state_committed (st);
    funnel_state_destroy (&st);
    assert (st == NULL);

    //  Blind adds (several writers): no read, one HINCRBY after the
    //  record writes, no EXPIREAT, undone by a rollback; without them the
    //  record is read and written whole
    st = funnel_state_new ("t", "{funnel:t}:", 4, 100);
    loads = 0;
    funnel_state_set_loader (st, s_test_loader, &loads);
    funnel_state_set_blind_adds (st, true);
    funnel_state_begin (st);
    funnel_savepoint_t blind_sp = funnel_state_savepoint (st);
    assert (funnel_state_add_global (st, "tot", "0", "sql", 2) == 0);
    assert (funnel_state_add_global (st, "tot", "0", "sql", 3) == 0);
    assert (loads == 0);
    zlist_t *cmds = zlist_new ();
    zlist_autofree (cmds);
    assert (funnel_state_append_writes (st, s_test_sink, cmds, "{funnel:t}:stats") == 1);
    assert (streq ((char *) zlist_first (cmds), "HINCRBY {funnel:t:0}:tot:0 sql 5"));
    funnel_state_rollback (st, blind_sp);
    zlist_purge (cmds);
    assert (funnel_state_append_writes (st, s_test_sink, cmds, "{funnel:t}:stats") == 0);
    funnel_state_set_blind_adds (st, false);
    assert (funnel_state_add_global (st, "tot", "0", "sql", 2) == 0 && loads == 1);
    zlist_destroy (&cmds);
    funnel_state_destroy (&st);
}
