/*  event_codec — safe msgpack decoding and the event envelope (proto/wire.md).

    msgpack-c allocates from declared counts before reading elements (a
    6-byte input can reserve gigabytes), so untrusted bytes are never handed to it directly. Every
    frame is first pre-scanned iteratively (event_codec_decode): each declared
    length or count must fit in the bytes that remain, strings must be UTF-8
    and ≤ limit, maps/arrays ≤ limit entries, nesting ≤ limit. Only then is
    it unpacked, and the whole frame must be consumed.

    Error codes (funnel_error_t.code):
      bad_request  not msgpack, truncated, trailing bytes, wrong top-level shape
      too_large    body/event over the byte limit, batch over 1000 events
      invalid      a limit broken inside an event (string, entries, depth,
                   UTF-8) or an envelope field wrong; message names the field
*/
#ifndef EVENT_CODEC_H_INCLUDED
#define EVENT_CODEC_H_INCLUDED

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "funnel_error.h"

#define FUNNEL_EVENT_MAX_BYTES  (64 * 1024)
#define FUNNEL_FRAME_MAX_BYTES  (4 * 1024 * 1024)
#define FUNNEL_STR_MAX          1024
#define FUNNEL_ENTRIES_MAX      256
#define FUNNEL_DEPTH_MAX        8
#define FUNNEL_BATCH_MAX        1000
#define FUNNEL_ID_MAX           64
//  Largest integer a double holds exactly (the rules' figures, JSON
//  clients): 2^53
#define FUNNEL_INT_MAX          9007199254740992LL

typedef struct {
    size_t max_bytes;       //  Whole input; over it: too_large
    size_t str_max;         //  Longest str/bin; over it: invalid
    size_t entries_max;     //  Largest map/array below the top level: invalid
    size_t top_entries_max; //  Largest top-level array (a batch): too_large
    size_t elem_max_bytes;  //  Largest encoded top-level array element (an
                            //  event in a batch), 0 = no check: too_large
    int depth_max;          //  Deepest nesting, the top level counting as 1
} event_codec_limits_t;

//  Limits for a request body that is one event or an array of events:
//  4 MiB, 1 KiB strings, 256 entries, 1000 events of ≤ 64 KiB, depth 9
//  (the batch array plus 8 inside each event). A single event body over
//  64 KiB is too_large too (checked by event_codec_publish_parse).
extern const event_codec_limits_t event_codec_limits_body;
//  Limits for one event (e.g. on PUB/SUB): 64 KiB, depth 8.
extern const event_codec_limits_t event_codec_limits_event;

typedef struct _event_codec_t event_codec_t;

//  Pre-scans and decodes one whole frame. Returns NULL and fills err on any
//  problem; never allocates more than a small multiple of size.
event_codec_t *
    event_codec_decode (const void *data, size_t size,
                       const event_codec_limits_t *limits, funnel_error_t *err);
const msgpack_object *
    event_codec_root (event_codec_t *self);
void
    event_codec_destroy (event_codec_t **self_p);

//  The envelope of one event; string fields are copied and NUL-terminated.
typedef struct {
    const msgpack_object *root;     //  The whole envelope map
    char id [FUNNEL_ID_MAX + 1];
    char type [FUNNEL_ID_MAX + 1];
    char src [FUNNEL_ID_MAX + 1];
    char cause [FUNNEL_ID_MAX + 1]; //  "" when absent
    char svc [FUNNEL_ID_MAX + 1];   //  "" when absent
    int64_t ts;
    uint64_t seq;                   //  0 when absent
    const msgpack_object *data;     //  A map
    size_t encoded_size;            //  Bytes of the envelope as received
} funnel_event_t;

//  Checks an envelope map: v == 1, id (1–64 of [A-Za-z0-9._:@+-]), type
//  (str 1–64), ts (int, 0..2^53), src (str 1–64), data (map); optional seq
//  (uint), svc, cause (id rules). Unknown keys are ignored. On failure err is
//  invalid (or bad_request if obj is not a map) naming the field, e.g.
//  "id: must be 1-64 bytes of [A-Za-z0-9._:@+-]".
int
    event_codec_event_parse (const msgpack_object *obj, funnel_event_t *event,
                        funnel_error_t *err);

//  True if text is 1–64 bytes of [A-Za-z0-9._:@+-] (ids and entity ids).
bool
    event_codec_id_valid (const char *text, size_t size);
//  True if text is well-formed UTF-8 (what a msgpack str must hold).
bool
    event_codec_utf8_valid (const char *text, size_t size);

//  Looks up a string key in a map object; NULL if absent or not a map.
const msgpack_object *
    event_codec_map_get (const msgpack_object *map, const char *key);

//  Copies a str object into buf as a NUL-terminated string; false if obj
//  is not a str or does not fit.
bool
    event_codec_obj_strcpy (const msgpack_object *obj, char *buf, size_t bufsize);

//  Packs an ERR body {"code", "message"[, "index"]} into sbuf.
void
    event_codec_pack_error (msgpack_sbuffer *sbuf, const funnel_error_t *err);
//  The same with one more string key (e.g. ERR moved's "api"), NULL: none.
void
    event_codec_pack_error_extra (msgpack_sbuffer *sbuf, const funnel_error_t *err,
                                  const char *key, const char *value);
//  Packs a str from a C string.
void
    event_codec_pack_cstr (msgpack_packer *pk, const char *text);

//  Added: access to the scanned frame. The msg owns a copy of the bytes
//  (msgpack-c objects point into it), so the caller's buffer may be freed
//  right after event_codec_decode.
//  The whole frame as received.
const void *
    event_codec_bytes (event_codec_t *self, size_t *size);
//  Element index of a top-level array (a batch) as received: its bytes and
//  size. NULL if the top level is not an array or index is out of range.
const void *
    event_codec_elem (event_codec_t *self, size_t index, size_t *size);
//  Parses a PUBLISH body (the frame's root): one event map or an array of
//  1..1000 event maps, each event's encoded_size the exact size received
//  (the scan's) and at most 64 KiB, its nesting at most 8. Fills *events
//  (malloc'd array, caller frees) and *count, *is_batch. On failure err->index
//  is the failing element (batch) or -1.
int
    event_codec_publish_parse (event_codec_t *self, funnel_event_t **events,
                               size_t *count, bool *is_batch, funnel_error_t *err);

void
    event_codec_test (bool verbose);

#endif
