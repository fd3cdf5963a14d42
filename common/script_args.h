/*  script_args — the argument list of one call into runtime.lua, and the
    envelopes rebuilt from what the script returns.

    Events cross into the script as six arguments each (id, type, ts, src,
    seq, data-as-msgpack) and come back as parts (id, type, cause, data):
    Lua's cmsgpack is slow on whole envelopes, C is not. So C unpacks and
    packs envelopes; Lua only ever (un)packs the data maps its rules use.
*/
#ifndef SCRIPT_ARGS_H_INCLUDED
#define SCRIPT_ARGS_H_INCLUDED

#include <hiredis/hiredis.h>
#include <msgpack.h>
#include <stdint.h>

typedef struct _script_args_t script_args_t;

script_args_t *
    script_args_new (void);
void
    script_args_destroy (script_args_t **self_p);

//  Appends one argument; the bytes must outlive the call (not copied).
void
    script_args_add (script_args_t *self, const char *data, size_t size);
//  Appends a C string argument, copied.
void
    script_args_add_copy (script_args_t *self, const char *text);
//  Appends the six arguments of one checked envelope map; data is packed
//  into the args' own buffer, strings point into the envelope object.
void
    script_args_add_event (script_args_t *self, const msgpack_object *envelope);

//  The arguments, valid until the next add or destroy.
int
    script_args_count (script_args_t *self);
const char **
    script_args_argv (script_args_t *self);
const size_t *
    script_args_lens (script_args_t *self);

//  Bytes of one part of an event coming back from the script.
typedef struct {
    const char *data;
    size_t size;
} script_str_t;

//  An output event as the outbox keeps it.
typedef struct {
    script_str_t id, type, cause, data;     //  data is msgpack already
    int64_t ts;                             //  When it was applied
    int64_t cause_ts;                       //  The cause's own ts, 0 if none
} script_event_t;

//  Packs a full envelope (proto/wire.md, PUB) as published and replayed. An empty
//  cause is left out, and so is cause_ts then.
void
    script_pack_envelope (msgpack_sbuffer *sbuf, const char *svc, uint64_t seq,
                          const script_event_t *event);

//  Splits an outbox entry as runtime_end.lua stores it, "id NUL type NUL
//  cause NUL ts NUL cause_ts NUL data"; -1 if it is not of that shape.
int
    script_outbox_entry (const char *entry, size_t size, script_event_t *event);

#endif
