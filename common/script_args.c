#include <czmq.h>
#include "script_args.h"
#include "event_codec.h"

struct _script_args_t {
    const char **argv;
    size_t *lens;
    int count;
    int size;
    zlist_t *owned;             //  Copies and number strings we own
    msgpack_sbuffer packed;     //  Data maps, one after another
    zlist_t *packed_refs;       //  (arg index, offset) pairs into packed
};

typedef struct {
    int index;
    size_t offset;
} packed_ref_t;

script_args_t *
script_args_new (void)
{
    script_args_t *self = (script_args_t *) zmalloc (sizeof (script_args_t));
    self->owned = zlist_new ();
    zlist_autofree (self->owned);
    self->packed_refs = zlist_new ();
    msgpack_sbuffer_init (&self->packed);
    return self;
}

void
script_args_destroy (script_args_t **self_p)
{
    if (*self_p) {
        script_args_t *self = *self_p;
        free (self->argv);
        free (self->lens);
        zlist_destroy (&self->owned);
        packed_ref_t *ref = (packed_ref_t *) zlist_first (self->packed_refs);
        for (; ref; ref = (packed_ref_t *) zlist_next (self->packed_refs))
            free (ref);
        zlist_destroy (&self->packed_refs);
        msgpack_sbuffer_destroy (&self->packed);
        free (self);
        *self_p = NULL;
    }
}

void
script_args_add (script_args_t *self, const char *data, size_t size)
{
    if (self->count == self->size) {
        self->size = self->size ? self->size * 2 : 64;
        self->argv = (const char **) realloc (self->argv, self->size * sizeof (char *));
        self->lens = (size_t *) realloc (self->lens, self->size * sizeof (size_t));
    }
    self->argv [self->count] = data;
    self->lens [self->count] = size;
    self->count++;
}

void
script_args_add_copy (script_args_t *self, const char *text)
{
    zlist_append (self->owned, (void *) text);     //  autofree: copies
    const char *copy = (const char *) zlist_last (self->owned);
    script_args_add (self, copy, strlen (copy));
}

static void
s_add_str (script_args_t *self, const msgpack_object *envelope, const char *key)
{
    const msgpack_object *obj = funnel_map_get (envelope, key);
    if (obj && obj->type == MSGPACK_OBJECT_STR)
        script_args_add (self, obj->via.str.ptr, obj->via.str.size);
    else
        script_args_add (self, "", 0);
}

static void
s_add_int (script_args_t *self, const msgpack_object *envelope, const char *key)
{
    const msgpack_object *obj = funnel_map_get (envelope, key);
    char number [24] = "0";
    if (obj && obj->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        snprintf (number, sizeof number, "%" PRIu64, obj->via.u64);
    else
    if (obj && obj->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        snprintf (number, sizeof number, "%" PRId64, obj->via.i64);
    script_args_add_copy (self, number);
}

void
script_args_add_event (script_args_t *self, const msgpack_object *envelope)
{
    s_add_str (self, envelope, "id");
    s_add_str (self, envelope, "type");
    s_add_int (self, envelope, "ts");
    s_add_str (self, envelope, "src");
    s_add_int (self, envelope, "seq");
    //  The data map is packed now and pointed at when argv is read, since
    //  the buffer may move while it grows
    packed_ref_t *ref = (packed_ref_t *) zmalloc (sizeof (packed_ref_t));
    ref->index = self->count;
    ref->offset = self->packed.size;
    zlist_append (self->packed_refs, ref);
    msgpack_packer pk;
    msgpack_packer_init (&pk, &self->packed, msgpack_sbuffer_write);
    const msgpack_object *data = funnel_map_get (envelope, "data");
    if (data)
        msgpack_pack_object (&pk, *data);
    else
        msgpack_pack_map (&pk, 0);
    script_args_add (self, NULL, self->packed.size - ref->offset);
}

int
script_args_count (script_args_t *self)
{
    return self->count;
}

const char **
script_args_argv (script_args_t *self)
{
    packed_ref_t *ref = (packed_ref_t *) zlist_first (self->packed_refs);
    for (; ref; ref = (packed_ref_t *) zlist_next (self->packed_refs))
        self->argv [ref->index] = self->packed.data + ref->offset;
    return self->argv;
}

const size_t *
script_args_lens (script_args_t *self)
{
    return self->lens;
}

static void
s_pack_str (msgpack_packer *pk, script_str_t part)
{
    msgpack_pack_str (pk, part.size);
    msgpack_pack_str_body (pk, part.data, part.size);
}

void
script_pack_envelope (msgpack_sbuffer *sbuf, const char *svc, uint64_t seq,
                      const script_event_t *event)
{
    msgpack_packer pk;
    msgpack_packer_init (&pk, sbuf, msgpack_sbuffer_write);
    bool with_cause = event->cause.size > 0;
    bool with_cause_ts = with_cause && event->cause_ts > 0;
    msgpack_pack_map (&pk, 8 + with_cause + with_cause_ts);
    funnel_pack_cstr (&pk, "v");
    msgpack_pack_uint8 (&pk, 1);
    funnel_pack_cstr (&pk, "id");
    s_pack_str (&pk, event->id);
    funnel_pack_cstr (&pk, "type");
    s_pack_str (&pk, event->type);
    funnel_pack_cstr (&pk, "ts");
    msgpack_pack_int64 (&pk, event->ts);
    funnel_pack_cstr (&pk, "src");
    funnel_pack_cstr (&pk, svc);
    funnel_pack_cstr (&pk, "svc");
    funnel_pack_cstr (&pk, svc);
    funnel_pack_cstr (&pk, "seq");
    msgpack_pack_uint64 (&pk, seq);
    if (with_cause) {
        funnel_pack_cstr (&pk, "cause");
        s_pack_str (&pk, event->cause);
    }
    if (with_cause_ts) {
        funnel_pack_cstr (&pk, "cause_ts");
        msgpack_pack_int64 (&pk, event->cause_ts);
    }
    funnel_pack_cstr (&pk, "data");
    msgpack_sbuffer_write (sbuf, event->data.data, event->data.size);
}

//  A decimal integer part: 0 if empty, -1 if not a number
static int
s_parse_int (script_str_t part, int64_t *value)
{
    char number [24];
    *value = 0;
    if (part.size == 0)
        return 0;
    if (part.size >= sizeof number)
        return -1;
    memcpy (number, part.data, part.size);
    number [part.size] = 0;
    char *end;
    *value = strtoll (number, &end, 10);
    return *end ? -1 : 0;
}

int
script_outbox_entry (const char *entry, size_t size, script_event_t *event)
{
    script_str_t ts, cause_ts;
    script_str_t *parts [5] = { &event->id, &event->type, &event->cause, &ts, &cause_ts };
    const char *at = entry, *end = entry + size;
    for (int i = 0; i < 5; i++) {
        const char *nul = memchr (at, 0, (size_t) (end - at));
        if (!nul)
            return -1;
        parts [i]->data = at;
        parts [i]->size = (size_t) (nul - at);
        at = nul + 1;
    }
    event->data.data = at;
    event->data.size = (size_t) (end - at);
    if (ts.size == 0 || s_parse_int (ts, &event->ts) || s_parse_int (cause_ts, &event->cause_ts))
        return -1;
    return event->data.size > 0 ? 0 : -1;
}
