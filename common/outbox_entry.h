/*  outbox_entry — one output event as the outbox keeps it in Redis, and
    the envelope it is published and replayed as.

    An entry is "id NUL type NUL cause NUL ts NUL cause_ts NUL [by NUL]
    data": the envelope's fixed fields (v, src, svc, seq) are not stored,
    seq is the entry's place in the outbox (proto/wire.md "Outbox"). `by`
    is optional: it is ASCII, where data (a msgpack map) starts with
    0x80-0x8f, 0xde or 0xdf, so a reader tells the two apart by one byte.
*/
#ifndef OUTBOX_ENTRY_H_INCLUDED
#define OUTBOX_ENTRY_H_INCLUDED

#include <msgpack.h>
#include <stdbool.h>
#include <stdint.h>

//  Bytes of one part of an entry (not NUL-terminated).
typedef struct {
    const char *data;
    size_t size;
} outbox_entry_str_t;

//  An output event: parts point into the entry it was parsed from, or
//  into the caller's strings when it is encoded.
typedef struct {
    outbox_entry_str_t id, type, cause, data;   //  data is msgpack already
    outbox_entry_str_t by;                      //  Publisher's certificate name, or empty
    int64_t ts;                                 //  When it was applied
    int64_t cause_ts;                           //  The cause's own ts, 0 if none
} outbox_entry_t;

//  Encodes an entry (cause_ts is left empty without a cause or when 0);
//  a malloc'd buffer of *size bytes, the caller frees it.
char *
    outbox_entry_encode (const outbox_entry_t *self, size_t *size);

//  Splits a stored entry; -1 if it is not of the entry's shape.
int
    outbox_entry_parse (const char *entry, size_t size, outbox_entry_t *self);

//  Packs the full envelope (proto/wire.md) as published and replayed. An
//  empty cause is left out, and so is cause_ts then; an empty by too.
//  With part >= 0 it carries `part` (the partition whose outbox holds it;
//  seq counts within it); -1 with one outbox per service.
void
    outbox_entry_pack_part (const outbox_entry_t *self, const char *svc, int part,
                            uint64_t seq, msgpack_sbuffer *sbuf);

void
    outbox_entry_test (bool verbose);

#endif
