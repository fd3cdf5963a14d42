#include <czmq.h>
#include "script_args.h"
#include "event_codec.h"

//  Arguments are mostly pointers into the caller's decoded request. What
//  the args must own (number strings, copies, packed data maps) goes into
//  one growing buffer, and those arguments are resolved to pointers only
//  when argv is read, since the buffer moves as it grows: no allocation
//  per argument, which matters at 6000 arguments a batch.
typedef struct {
    int index;                  //  Argument
    size_t offset;              //  Where its bytes start in owned
} owned_ref_t;

struct _script_args_t {
    const char **argv;
    size_t *lens;
    int count;
    int size;
    msgpack_sbuffer owned;
    owned_ref_t *refs;
    int ref_count;
    int ref_size;
};

script_args_t *
script_args_new (void)
{
    script_args_t *self = (script_args_t *) zmalloc (sizeof (script_args_t));
    msgpack_sbuffer_init (&self->owned);
    return self;
}

void
script_args_destroy (script_args_t **self_p)
{
    if (*self_p) {
        script_args_t *self = *self_p;
        free (self->argv);
        free (self->lens);
        free (self->refs);
        msgpack_sbuffer_destroy (&self->owned);
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
        assert (self->argv && self->lens);
    }
    self->argv [self->count] = data;
    self->lens [self->count] = size;
    self->count++;
}

//  Starts an owned argument at the current end of the owned buffer
static void
s_owned_begin (script_args_t *self)
{
    if (self->ref_count == self->ref_size) {
        self->ref_size = self->ref_size ? self->ref_size * 2 : 64;
        self->refs = (owned_ref_t *) realloc (self->refs, self->ref_size * sizeof (owned_ref_t));
        assert (self->refs);
    }
    self->refs [self->ref_count].index = self->count;
    self->refs [self->ref_count].offset = self->owned.size;
    self->ref_count++;
}

//  Ends it: the argument is everything written since s_owned_begin
static void
s_owned_end (script_args_t *self)
{
    script_args_add (self, NULL, self->owned.size - self->refs [self->ref_count - 1].offset);
}

void
script_args_add_copy (script_args_t *self, const char *text)
{
    s_owned_begin (self);
    msgpack_sbuffer_write (&self->owned, text, strlen (text));
    s_owned_end (self);
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
    s_owned_begin (self);
    msgpack_packer pk;
    msgpack_packer_init (&pk, &self->owned, msgpack_sbuffer_write);
    const msgpack_object *data = funnel_map_get (envelope, "data");
    if (data)
        msgpack_pack_object (&pk, *data);
    else
        msgpack_pack_map (&pk, 0);
    s_owned_end (self);
}

int
script_args_count (script_args_t *self)
{
    return self->count;
}

const char **
script_args_argv (script_args_t *self)
{
    for (int i = 0; i < self->ref_count; i++)
        self->argv [self->refs [i].index] = self->owned.data + self->refs [i].offset;
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
    bool with_by = event->by.size > 0;
    msgpack_pack_map (&pk, 8 + with_cause + with_cause_ts + with_by);
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
    if (with_by) {
        funnel_pack_cstr (&pk, "by");
        s_pack_str (&pk, event->by);
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
    //  An optional `by` part: ASCII, where data (a msgpack map) would
    //  start with 0x80-0x8f, 0xde or 0xdf
    event->by.data = at;
    event->by.size = 0;
    if (at < end && (byte) *at < 0x80) {
        const char *nul = memchr (at, 0, (size_t) (end - at));
        if (!nul)
            return -1;
        event->by.size = (size_t) (nul - at);
        at = nul + 1;
    }
    event->data.data = at;
    event->data.size = (size_t) (end - at);
    if (ts.size == 0 || s_parse_int (ts, &event->ts) || s_parse_int (cause_ts, &event->cause_ts))
        return -1;
    return event->data.size > 0 ? 0 : -1;
}
