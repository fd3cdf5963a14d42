/*  outbox_entry — see outbox_entry.h. */
#include "outbox_entry.h"
#include "event_codec.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *
outbox_entry_encode (const outbox_entry_t *self, size_t *size)
{
    char ts [24], cause_ts [24] = "";
    snprintf (ts, sizeof ts, "%" PRId64, self->ts);
    if (self->cause.size > 0 && self->cause_ts > 0)
        snprintf (cause_ts, sizeof cause_ts, "%" PRId64, self->cause_ts);
    const outbox_entry_str_t parts [] = {
        self->id, self->type, self->cause,
        { ts, strlen (ts) }, { cause_ts, strlen (cause_ts) }, self->by };
    int nparts = self->by.size > 0 ? 6 : 5;
    size_t total = self->data.size;
    for (int i = 0; i < nparts; i++)
        total += parts [i].size + 1;
    char *entry = (char *) malloc (total);
    if (!entry)
        return NULL;
    char *at = entry;
    for (int i = 0; i < nparts; i++) {
        if (parts [i].size)
            memcpy (at, parts [i].data, parts [i].size);
        at [parts [i].size] = 0;
        at += parts [i].size + 1;
    }
    if (self->data.size)
        memcpy (at, self->data.data, self->data.size);
    *size = total;
    return entry;
}

//  A decimal integer part: 0 if empty, -1 if not a number
static int
s_parse_int (outbox_entry_str_t part, int64_t *value)
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
outbox_entry_parse (const char *entry, size_t size, outbox_entry_t *self)
{
    outbox_entry_str_t ts, cause_ts;
    outbox_entry_str_t *parts [5] = { &self->id, &self->type, &self->cause, &ts, &cause_ts };
    const char *at = entry, *end = entry + size;
    for (int i = 0; i < 5; i++) {
        const char *nul = memchr (at, 0, (size_t) (end - at));
        if (!nul)
            return -1;
        parts [i]->data = at;
        parts [i]->size = (size_t) (nul - at);
        at = nul + 1;
    }
    //  The optional `by`: ASCII, where data would start at 0x80 or above
    self->by.data = at;
    self->by.size = 0;
    if (at < end && (unsigned char) *at < 0x80) {
        const char *nul = memchr (at, 0, (size_t) (end - at));
        if (!nul)
            return -1;
        self->by.size = (size_t) (nul - at);
        at = nul + 1;
    }
    self->data.data = at;
    self->data.size = (size_t) (end - at);
    if (ts.size == 0 || s_parse_int (ts, &self->ts) || s_parse_int (cause_ts, &self->cause_ts))
        return -1;
    return self->data.size > 0 ? 0 : -1;
}

static void
s_pack_str (msgpack_packer *pk, outbox_entry_str_t part)
{
    msgpack_pack_str (pk, part.size);
    msgpack_pack_str_body (pk, part.data, part.size);
}

void
outbox_entry_pack_part (const outbox_entry_t *self, const char *svc, int part, uint64_t seq,
                        msgpack_sbuffer *sbuf)
{
    msgpack_packer pk;
    msgpack_packer_init (&pk, sbuf, msgpack_sbuffer_write);
    bool with_cause = self->cause.size > 0;
    bool with_cause_ts = with_cause && self->cause_ts > 0;
    bool with_by = self->by.size > 0;
    msgpack_pack_map (&pk, 8 + with_cause + with_cause_ts + with_by + (part >= 0));
    event_codec_pack_cstr (&pk, "v");
    msgpack_pack_uint8 (&pk, 1);
    event_codec_pack_cstr (&pk, "id");
    s_pack_str (&pk, self->id);
    event_codec_pack_cstr (&pk, "type");
    s_pack_str (&pk, self->type);
    event_codec_pack_cstr (&pk, "ts");
    msgpack_pack_int64 (&pk, self->ts);
    event_codec_pack_cstr (&pk, "src");
    event_codec_pack_cstr (&pk, svc);
    event_codec_pack_cstr (&pk, "svc");
    event_codec_pack_cstr (&pk, svc);
    event_codec_pack_cstr (&pk, "seq");
    msgpack_pack_uint64 (&pk, seq);
    if (part >= 0) {
        //  Per-partition outboxes: seq counts within this partition
        event_codec_pack_cstr (&pk, "part");
        msgpack_pack_uint32 (&pk, (uint32_t) part);
    }
    if (with_cause) {
        event_codec_pack_cstr (&pk, "cause");
        s_pack_str (&pk, self->cause);
    }
    if (with_cause_ts) {
        event_codec_pack_cstr (&pk, "cause_ts");
        msgpack_pack_int64 (&pk, self->cause_ts);
    }
    if (with_by) {
        event_codec_pack_cstr (&pk, "by");
        s_pack_str (&pk, self->by);
    }
    event_codec_pack_cstr (&pk, "data");
    msgpack_sbuffer_write (sbuf, self->data.data, self->data.size);
}


//  --------------------------------------------------------------------------
//  Self test

#undef NDEBUG
#include <assert.h>

#define S(text) ((outbox_entry_str_t) { text, sizeof text - 1 })

static bool
s_same (outbox_entry_str_t part, const char *text)
{
    return part.size == strlen (text) && memcmp (part.data, text, part.size) == 0;
}

void
outbox_entry_test (bool verbose)
{
    (void) verbose;
    //  Round trip with cause, cause_ts and by; data is a msgpack map {}
    outbox_entry_t in = { .id = S ("e-1"), .type = S ("lead.scored"), .cause = S ("t-9"),
                          .data = S ("\x81\xa1" "a\x01"), .by = S ("crm"),
                          .ts = 1700000000123, .cause_ts = 1700000000100 };
    size_t size;
    char *entry = outbox_entry_encode (&in, &size);
    assert (entry);
    const char stored [] = "e-1\0lead.scored\0t-9\0" "1700000000123\0" "1700000000100\0"
                           "crm\0\x81\xa1" "a\x01";
    assert (size == sizeof stored - 1 && memcmp (entry, stored, size) == 0);
    outbox_entry_t out;
    assert (outbox_entry_parse (entry, size, &out) == 0);
    assert (s_same (out.id, "e-1") && s_same (out.type, "lead.scored"));
    assert (s_same (out.cause, "t-9") && s_same (out.by, "crm"));
    assert (out.ts == in.ts && out.cause_ts == in.cause_ts);
    assert (out.data.size == 4 && memcmp (out.data.data, in.data.data, 4) == 0);

    //  The envelope: every field, map of 11
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init (&sbuf);
    outbox_entry_pack_part (&out, "leads", -1, 42, &sbuf);
    msgpack_unpacked unpacked;
    msgpack_unpacked_init (&unpacked);
    assert (msgpack_unpack_next (&unpacked, sbuf.data, sbuf.size, NULL)
            == MSGPACK_UNPACK_SUCCESS);
    const msgpack_object *root = &unpacked.data;
    assert (root->type == MSGPACK_OBJECT_MAP && root->via.map.size == 11);
    assert (event_codec_map_get (root, "seq")->via.u64 == 42);
    assert (event_codec_map_get (root, "cause_ts")->via.i64 == 1700000000100);
    const msgpack_object *svc = event_codec_map_get (root, "svc");
    assert (svc->via.str.size == 5 && memcmp (svc->via.str.ptr, "leads", 5) == 0);
    assert (event_codec_map_get (root, "data")->type == MSGPACK_OBJECT_MAP);
    msgpack_unpacked_destroy (&unpacked);
    free (entry);

    //  No cause, no by: cause_ts is dropped too, the envelope has 8 fields
    in.cause.size = 0;
    in.by.size = 0;
    entry = outbox_entry_encode (&in, &size);
    assert (outbox_entry_parse (entry, size, &out) == 0);
    assert (out.cause.size == 0 && out.by.size == 0 && out.cause_ts == 0);
    sbuf.size = 0;
    outbox_entry_pack_part (&out, "leads", -1, 43, &sbuf);
    msgpack_unpacked_init (&unpacked);
    assert (msgpack_unpack_next (&unpacked, sbuf.data, sbuf.size, NULL)
            == MSGPACK_UNPACK_SUCCESS);
    assert (unpacked.data.via.map.size == 8);
    msgpack_unpacked_destroy (&unpacked);
    msgpack_sbuffer_destroy (&sbuf);
    free (entry);

    //  Not of the shape: too few parts, no data, a bad ts
    assert (outbox_entry_parse ("a\0b\0c", 5, &out) == -1);
    assert (outbox_entry_parse ("a\0b\0\0" "1\0\0", 8, &out) == -1);
    assert (outbox_entry_parse ("a\0b\0\0x1\0\0\x80", 10, &out) == -1);
    assert (outbox_entry_parse ("a\0b\0\0" "1\0\0\x80", 9, &out) == 0);
}
