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

void
script_pack_envelope (msgpack_sbuffer *sbuf, const char *svc, uint64_t seq,
                      int64_t ts, const redisReply *id, const redisReply *type,
                      const redisReply *cause, const redisReply *data)
{
    msgpack_packer pk;
    msgpack_packer_init (&pk, sbuf, msgpack_sbuffer_write);
    bool with_cause = cause->len > 0;
    msgpack_pack_map (&pk, with_cause ? 9 : 8);
    funnel_pack_cstr (&pk, "v");
    msgpack_pack_uint8 (&pk, 1);
    funnel_pack_cstr (&pk, "id");
    msgpack_pack_str (&pk, id->len);
    msgpack_pack_str_body (&pk, id->str, id->len);
    funnel_pack_cstr (&pk, "type");
    msgpack_pack_str (&pk, type->len);
    msgpack_pack_str_body (&pk, type->str, type->len);
    funnel_pack_cstr (&pk, "ts");
    msgpack_pack_int64 (&pk, ts);
    funnel_pack_cstr (&pk, "src");
    funnel_pack_cstr (&pk, svc);
    funnel_pack_cstr (&pk, "svc");
    funnel_pack_cstr (&pk, svc);
    funnel_pack_cstr (&pk, "seq");
    msgpack_pack_uint64 (&pk, seq);
    if (with_cause) {
        funnel_pack_cstr (&pk, "cause");
        msgpack_pack_str (&pk, cause->len);
        msgpack_pack_str_body (&pk, cause->str, cause->len);
    }
    funnel_pack_cstr (&pk, "data");
    msgpack_sbuffer_write (sbuf, data->str, data->len);     //  Already msgpack
}
