/*  event_codec — safe msgpack decoding and the event envelope (proto/wire.md).

    Decoding is two passes over one whole frame:
    1.  s_scan walks the raw bytes with an explicit stack (no recursion, so
        hostile nesting cannot overflow the C stack). It rejects any declared
        length or count that the remaining bytes cannot hold — every item
        still owed by any open container needs at least one byte — so
        msgpack-c, which allocates from declared counts, never allocates
        more than ~24 bytes per input byte. It also enforces the limits.
    2.  msgpack_unpack_next decodes a private copy of the bytes, which must
        succeed and consume the whole frame.

    Frame errors (bad_request, too_large) stop the scan at once. Limit
    errors inside an event (invalid) are remembered and the scan goes on, so
    a frame that is both is reported as a frame error, as proto/wire.md orders.
*/
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "event_codec.h"

//  msgpack-c's own nesting stack is 32 deep; we never let more reach it.
#define SCAN_DEPTH_CAP      32
//  Longest key printed in an error path, before "..."
#define PATH_KEY_MAX        40

const event_codec_limits_t event_codec_limits_body = {
    .max_bytes = FUNNEL_FRAME_MAX_BYTES,
    .str_max = FUNNEL_STR_MAX,
    .entries_max = FUNNEL_ENTRIES_MAX,
    .top_entries_max = FUNNEL_BATCH_MAX,
    .elem_max_bytes = FUNNEL_EVENT_MAX_BYTES,
    .depth_max = FUNNEL_DEPTH_MAX + 1
};

const event_codec_limits_t event_codec_limits_event = {
    .max_bytes = FUNNEL_EVENT_MAX_BYTES,
    .str_max = FUNNEL_STR_MAX,
    .entries_max = FUNNEL_ENTRIES_MAX,
    .top_entries_max = FUNNEL_ENTRIES_MAX,
    .elem_max_bytes = 0,
    .depth_max = FUNNEL_DEPTH_MAX
};

//  Where one top-level array element sits in the frame
typedef struct {
    size_t offset;
    size_t size;
} scan_elem_t;

struct _event_codec_t {
    msgpack_object root;
    msgpack_zone zone;          //  Sized by the scan: one chunk, no 8 kB default
    scan_elem_t *elems;         //  Top-level array elements, else NULL
    size_t elem_count;
    size_t size;
    uint8_t data [];            //  Our copy; msgpack-c objects point into it
};


//  --------------------------------------------------------------------------
//  Error helpers

//  Sets err->index (if err) and returns -1, so a check can end with
//  `return s_at_index (err, i)` right after funnel_error_set.
static int
s_at_index (funnel_error_t *err, int index)
{
    if (err)
        err->index = index;
    return -1;
}

//  A field path such as "data.audience.regions[2]", built for messages.
//  Keys are printed as printable ASCII only, so a message is always valid
//  UTF-8 and free of control characters whatever the input held.
typedef struct {
    char text [112];
    size_t len;
} path_t;

static void
s_path_append (path_t *path, const char *text, size_t size)
{
    size_t room = sizeof path->text - 1 - path->len;
    if (size > room)
        size = room;
    memcpy (path->text + path->len, text, size);
    path->len += size;
    path->text [path->len] = 0;
}

static void
s_path_key (path_t *path, const char *key, size_t size)
{
    if (path->len)
        s_path_append (path, ".", 1);
    if (!key) {
        s_path_append (path, "?", 1);
        return;
    }
    for (size_t i = 0; i < size && i < PATH_KEY_MAX; i++) {
        char c = key [i] >= 0x20 && key [i] < 0x7f ? key [i] : '?';
        s_path_append (path, &c, 1);
    }
    if (size > PATH_KEY_MAX)
        s_path_append (path, "...", 3);
}

static void
s_path_index (path_t *path, size_t index)
{
    char text [32];
    int len = snprintf (text, sizeof text, "[%zu]", index);
    s_path_append (path, text, (size_t) len);
}

static const char *
s_path_text (const path_t *path)
{
    return path->len ? path->text : "event";
}


//  --------------------------------------------------------------------------
//  UTF-8

//  True if text is well-formed UTF-8: no overlong forms, no surrogates,
//  nothing above U+10FFFF, no truncated sequence.
static bool
s_utf8_valid (const uint8_t *text, size_t size)
{
    size_t i = 0;
    while (i < size) {
        //  Fast path: eight ASCII bytes at a time
        if (size - i >= 8) {
            uint64_t word;
            memcpy (&word, text + i, 8);
            if ((word & 0x8080808080808080ULL) == 0) {
                i += 8;
                continue;
            }
        }
        uint8_t byte = text [i];
        if (byte < 0x80) {
            i++;
            continue;
        }
        size_t extra;
        uint32_t code, lowest;
        if ((byte & 0xe0) == 0xc0) {
            extra = 1; code = byte & 0x1f; lowest = 0x80;
        }
        else
        if ((byte & 0xf0) == 0xe0) {
            extra = 2; code = byte & 0x0f; lowest = 0x800;
        }
        else
        if ((byte & 0xf8) == 0xf0) {
            extra = 3; code = byte & 0x07; lowest = 0x10000;
        }
        else
            return false;
        if (size - i <= extra)
            return false;
        for (size_t k = 1; k <= extra; k++) {
            uint8_t next = text [i + k];
            if ((next & 0xc0) != 0x80)
                return false;
            code = (code << 6) | (next & 0x3f);
        }
        if (code < lowest || code > 0x10ffff
        || (code >= 0xd800 && code <= 0xdfff))
            return false;
        i += extra + 1;
    }
    return true;
}

//  Length of the longest prefix of text, at most size, that is whole
bool
event_codec_utf8_valid (const char *text, size_t size)
{
    return s_utf8_valid ((const uint8_t *) text, size);
}

//  UTF-8 characters (used to truncate messages safely).
static size_t
s_utf8_prefix (const char *text, size_t size)
{
    while (size > 0 && !s_utf8_valid ((const uint8_t *) text, size))
        size--;
    return size;
}


//  --------------------------------------------------------------------------
//  Pass 1: the iterative pre-scan

typedef enum { ITEM_SCALAR, ITEM_STR, ITEM_BLOB, ITEM_ARRAY, ITEM_MAP } item_kind_t;

//  One value's header: a scalar's payload size, a str/bin/ext length
//  (plus the ext type byte in extra), or an array/map count.
typedef struct {
    item_kind_t kind;
    uint64_t size;
    uint64_t extra;
} item_t;

//  One open array or map
typedef struct {
    uint64_t left;          //  Items still to read (a map entry is 2 items)
    uint64_t index;         //  Items read so far
    bool is_map;
    const uint8_t *key;     //  Current entry's key if it is a str, else NULL
    size_t key_size;
} scan_frame_t;

typedef struct {
    const uint8_t *start, *p, *end;
    const event_codec_limits_t *limits;
    int depth_max;
    bool batch;                     //  The top level is an array
    scan_frame_t stack [SCAN_DEPTH_CAP];
    int depth;                      //  Open containers
    uint64_t owed;                  //  Sum of left over the stack
    const uint8_t *elem_start;      //  Current batch element
    scan_elem_t *elems;
    size_t elem_count;
    size_t zone_bytes;              //  What msgpack-c's unpack takes from its zone
    funnel_error_t soft;            //  First limit error, reported at the end
    funnel_error_t *err;
} scan_t;

//  Index of the batch element being scanned, or -1
static int
s_scan_index (scan_t *self)
{
    return self->batch && self->depth >= 1? (int) self->stack [0].index: -1;
}

//  Path of the value being read, from its event's root
static void
s_scan_path (scan_t *self, path_t *path)
{
    path->len = 0;
    path->text [0] = 0;
    for (int level = self->batch? 1: 0; level < self->depth; level++) {
        scan_frame_t *frame = &self->stack [level];
        if (!frame->is_map)
            s_path_index (path, (size_t) frame->index);
        else
        if (frame->index % 2)       //  Reading a value: name its key
            s_path_key (path, (const char *) frame->key, frame->key_size);
        else
            break;                  //  Reading a key: the map's path it is
    }
}

//  Records an error at the current position. A hard error goes to err at
//  once; a soft one is kept (the first only) while the scan goes on.
static int
s_scan_fail (scan_t *self, bool hard, const char *code, const char *format, ...)
    __attribute__ ((format (printf, 4, 5)));

static int
s_scan_fail (scan_t *self, bool hard, const char *code, const char *format, ...)
{
    funnel_error_t *err = hard? self->err: &self->soft;
    if (!err || (!hard && err->code))
        return -1;
    char what [128];
    va_list args;
    va_start (args, format);
    vsnprintf (what, sizeof what, format, args);
    va_end (args);
    path_t path;
    s_scan_path (self, &path);
    funnel_error_set (err, code, "%s: %s", s_path_text (&path), what);
    return s_at_index (err, s_scan_index (self));
}

static int
s_truncated (scan_t *self)
{
    funnel_error_set (self->err, FUNNEL_ERR_BAD_REQUEST,
        "body: not msgpack at byte %zu (bad byte, truncated, or a length beyond the data)",
        (size_t) (self->p - self->start));
    return s_at_index (self->err, -1);
}

//  True if size more bytes, plus one for each item still owed after the
//  current one, fit in what remains.
static bool
s_fits (scan_t *self, uint64_t size)
{
    uint64_t remaining = (uint64_t) (self->end - self->p);
    uint64_t later = self->owed - (uint64_t) self->depth;
    return size <= remaining && later <= remaining - size;
}

//  Reads a big-endian length of width bytes
static int
s_read_length (scan_t *self, item_t *item, item_kind_t kind, int width, uint64_t extra)
{
    if (self->end - self->p < width)
        return -1;
    uint64_t value = 0;
    for (int i = 0; i < width; i++)
        value = (value << 8) | *self->p++;
    item->kind = kind;
    item->size = value;
    item->extra = extra;
    return 0;
}

static int
s_item (item_t *item, item_kind_t kind, uint64_t size)
{
    item->kind = kind;
    item->size = size;
    item->extra = 0;
    return 0;
}

//  Decodes the header byte (and length field) at p. -1 if truncated or
//  the never-used byte 0xc1.
static int
s_read_header (scan_t *self, item_t *item)
{
    uint8_t byte = *self->p++;
    if (byte <= 0x7f || byte >= 0xe0)
        return s_item (item, ITEM_SCALAR, 0);
    if (byte <= 0x8f)
        return s_item (item, ITEM_MAP, byte & 0x0f);
    if (byte <= 0x9f)
        return s_item (item, ITEM_ARRAY, byte & 0x0f);
    if (byte <= 0xbf)
        return s_item (item, ITEM_STR, byte & 0x1f);
    switch (byte) {
        case 0xc0: case 0xc2: case 0xc3:    //  nil, false, true
            return s_item (item, ITEM_SCALAR, 0);
        case 0xc4: return s_read_length (self, item, ITEM_BLOB, 1, 0);
        case 0xc5: return s_read_length (self, item, ITEM_BLOB, 2, 0);
        case 0xc6: return s_read_length (self, item, ITEM_BLOB, 4, 0);
        case 0xc7: return s_read_length (self, item, ITEM_BLOB, 1, 1);
        case 0xc8: return s_read_length (self, item, ITEM_BLOB, 2, 1);
        case 0xc9: return s_read_length (self, item, ITEM_BLOB, 4, 1);
        case 0xca: case 0xce: case 0xd2:    //  float32, uint32, int32
            return s_item (item, ITEM_SCALAR, 4);
        case 0xcb: case 0xcf: case 0xd3:    //  float64, uint64, int64
            return s_item (item, ITEM_SCALAR, 8);
        case 0xcc: case 0xd0:
            return s_item (item, ITEM_SCALAR, 1);
        case 0xcd: case 0xd1:
            return s_item (item, ITEM_SCALAR, 2);
        case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8:
            //  fixext 1, 2, 4, 8, 16: a type byte then the data
            return s_item (item, ITEM_SCALAR, 1 + (1u << (byte - 0xd4)));
        case 0xd9: return s_read_length (self, item, ITEM_STR, 1, 0);
        case 0xda: return s_read_length (self, item, ITEM_STR, 2, 0);
        case 0xdb: return s_read_length (self, item, ITEM_STR, 4, 0);
        case 0xdc: return s_read_length (self, item, ITEM_ARRAY, 2, 0);
        case 0xdd: return s_read_length (self, item, ITEM_ARRAY, 4, 0);
        case 0xde: return s_read_length (self, item, ITEM_MAP, 2, 0);
        case 0xdf: return s_read_length (self, item, ITEM_MAP, 4, 0);
        default:   return -1;               //  0xc1, never used
    }
}

//  The map the current item belongs to, if the item is that map's key
static scan_frame_t *
s_key_frame (scan_t *self)
{
    if (self->depth == 0)
        return NULL;
    scan_frame_t *frame = &self->stack [self->depth - 1];
    return frame->is_map && frame->index % 2 == 0? frame: NULL;
}

//  A str, bin or ext: checks its length and (str) its encoding, skips it
static int
s_scan_bytes (scan_t *self, const item_t *item)
{
    if (!s_fits (self, item->size + item->extra))
        return s_truncated (self);
    const uint8_t *text = self->p + item->extra;
    size_t size = (size_t) item->size;
    scan_frame_t *map = s_key_frame (self);
    if (map) {
        map->key = item->kind == ITEM_STR? text: NULL;
        map->key_size = size;
    }
    const char *what = map? "map key": item->kind == ITEM_STR? "string": "binary";
    if (size > self->limits->str_max)
        s_scan_fail (self, false, FUNNEL_ERR_INVALID, "%s longer than %zu bytes",
                     what, self->limits->str_max);
    else
    if (item->kind == ITEM_STR && !self->soft.code && !s_utf8_valid (text, size))
        s_scan_fail (self, false, FUNNEL_ERR_INVALID, "%s is not valid UTF-8", what);
    self->p += size + item->extra;
    return 0;
}

//  Starts a batch: the top-level array's count and its element table
static int
s_open_batch (scan_t *self, uint64_t count)
{
    self->batch = true;
    if (count > self->limits->top_entries_max) {
        funnel_error_set (self->err, FUNNEL_ERR_TOO_LARGE,
            "body: batch of more than %zu events", self->limits->top_entries_max);
        return s_at_index (self->err, -1);
    }
    if (count > 0) {
        self->elems = calloc ((size_t) count, sizeof (scan_elem_t));
        if (!self->elems) {
            funnel_error_set (self->err, FUNNEL_ERR_INTERNAL, "body: out of memory");
            return s_at_index (self->err, -1);
        }
    }
    self->elem_count = (size_t) count;
    return 0;
}

//  An array or map: checks it, then pushes it if it has items.
//  Returns 1 if pushed, 0 if it is already complete (empty), -1 on error.
static int
s_open (scan_t *self, const item_t *item)
{
    bool is_map = item->kind == ITEM_MAP;
    uint64_t items = is_map? 2 * item->size: item->size;
    if (!s_fits (self, items))
        return s_truncated (self);
    scan_frame_t *map = s_key_frame (self);
    if (map)
        map->key = NULL;
    int level = self->depth + 1;
    if (level > self->depth_max)
        return s_scan_fail (self, true, FUNNEL_ERR_INVALID,
                            "nested deeper than %d levels",
                            self->depth_max - (self->batch? 1: 0));
    if (level == 1 && !is_map) {
        if (s_open_batch (self, item->size))
            return -1;
    }
    else
    if (item->size > self->limits->entries_max)
        s_scan_fail (self, false, FUNNEL_ERR_INVALID, "more than %zu entries",
                     self->limits->entries_max);
    if (items == 0)
        return 0;
    //  The decoder's zone holds each container's items (strings point
    //  into the frame): counted here so one chunk fits them all
    self->zone_bytes += is_map? item->size * sizeof (msgpack_object_kv)
                              : item->size * sizeof (msgpack_object);
    scan_frame_t *frame = &self->stack [self->depth++];
    frame->left = items;
    frame->index = 0;
    frame->is_map = is_map;
    frame->key = NULL;
    frame->key_size = 0;
    self->owed += items;
    return 1;
}

//  A batch element is complete: records where it is and checks its size
static int
s_close_elem (scan_t *self, size_t index)
{
    scan_elem_t *elem = &self->elems [index];
    elem->offset = (size_t) (self->elem_start - self->start);
    elem->size = (size_t) (self->p - self->elem_start);
    size_t max = self->limits->elem_max_bytes;
    if (max && elem->size > max) {
        funnel_error_set (self->err, FUNNEL_ERR_TOO_LARGE,
                          "event: larger than %zu bytes", max);
        return s_at_index (self->err, (int) index);
    }
    return 0;
}

//  The current value is complete: counts it in its container, closing
//  every container that this completes in turn.
static int
s_complete (scan_t *self)
{
    while (self->depth > 0) {
        scan_frame_t *frame = &self->stack [self->depth - 1];
        if (self->batch && self->depth == 1
        &&  s_close_elem (self, (size_t) frame->index))
            return -1;
        frame->index++;
        frame->left--;
        self->owed--;
        if (frame->left > 0)
            return 0;
        self->depth--;
    }
    return 0;
}

//  Reads one value's header; skips a scalar or bytes, or opens a container
static int
s_scan_value (scan_t *self)
{
    if (self->batch && self->depth == 1)
        self->elem_start = self->p;
    item_t item;
    uint8_t first = self->p < self->end? *self->p: 0;
    if (self->p >= self->end || s_read_header (self, &item))
        return s_truncated (self);
    //  ext values (0xc7-0xc9, 0xd4-0xd8) carry no meaning in an event and
    //  no consumer can decode them: invalid, wherever they are
    if ((first >= 0xc7 && first <= 0xc9) || (first >= 0xd4 && first <= 0xd8))
        s_scan_fail (self, false, FUNNEL_ERR_INVALID, "msgpack ext values are not accepted");
    int rc = 0;
    if (item.kind == ITEM_ARRAY || item.kind == ITEM_MAP)
        rc = s_open (self, &item);
    else
    if (item.kind == ITEM_SCALAR) {
        if (!s_fits (self, item.size))
            return s_truncated (self);
        scan_frame_t *map = s_key_frame (self);
        if (map)
            map->key = NULL;
        self->p += item.size;
    }
    else
        rc = s_scan_bytes (self, &item);
    if (rc < 0)
        return -1;
    return rc == 1? 0: s_complete (self);
}

static int
s_scan (scan_t *self)
{
    do {
        if (s_scan_value (self))
            return -1;
    } while (self->depth > 0);
    if (self->p != self->end) {
        funnel_error_set (self->err, FUNNEL_ERR_BAD_REQUEST,
                          "body: %zu trailing bytes after the msgpack value",
                          (size_t) (self->end - self->p));
        return s_at_index (self->err, -1);
    }
    if (self->soft.code) {
        if (self->err)
            *self->err = self->soft;
        return -1;
    }
    return 0;
}


//  --------------------------------------------------------------------------
//  Pass 2: decode into an owned msg

//  Unpacks the scanned bytes into a new msg, taking the element table
static event_codec_t *
s_msg_new (const void *data, size_t size, scan_t *scan, funnel_error_t *err)
{
    event_codec_t *self = malloc (sizeof (event_codec_t) + size);
    if (!self) {
        free (scan->elems);
        funnel_error_set (err, FUNNEL_ERR_INTERNAL, "body: out of memory");
        return NULL;
    }
    memcpy (self->data, data, size);
    self->size = size;
    self->elems = scan->elems;
    self->elem_count = scan->elem_count;
    //  A zone of msgpack_unpacked's default 8 kB chunk was a malloc above
    //  the small-bin range per decoded event (consolidating the heap's
    //  fast bins each time): the top cost of consuming one-event frames.
    //  The scan counted what the decoder takes; a short count only costs
    //  another chunk
    if (!msgpack_zone_init (&self->zone, scan->zone_bytes + 64)) {
        free (scan->elems);
        free (self);
        funnel_error_set (err, FUNNEL_ERR_INTERNAL, "body: out of memory");
        return NULL;
    }
    size_t offset = 0;
    msgpack_unpack_return rc = msgpack_unpack (
        (const char *) self->data, size, &offset, &self->zone, &self->root);
    if (rc != MSGPACK_UNPACK_SUCCESS || offset != size) {
        //  The scan accepted what msgpack-c refuses: report, never trust
        funnel_error_set (err, FUNNEL_ERR_BAD_REQUEST,
                          "body: not msgpack (decoder said %d)", (int) rc);
        event_codec_destroy (&self);
    }
    return self;
}

event_codec_t *
event_codec_decode (const void *data, size_t size,
                   const event_codec_limits_t *limits, funnel_error_t *err)
{
    funnel_error_clear (err);
    if (!limits)
        limits = &event_codec_limits_body;
    if (size > limits->max_bytes) {
        funnel_error_set (err, FUNNEL_ERR_TOO_LARGE,
                          "body: larger than %zu bytes", limits->max_bytes);
        return NULL;
    }
    if (size == 0 || !data) {
        funnel_error_set (err, FUNNEL_ERR_BAD_REQUEST, "body: empty, msgpack expected");
        return NULL;
    }
    scan_t scan;
    memset (&scan, 0, sizeof scan);
    scan.start = scan.p = data;
    scan.end = scan.start + size;
    scan.limits = limits;
    scan.depth_max = limits->depth_max < SCAN_DEPTH_CAP? limits->depth_max: SCAN_DEPTH_CAP;
    scan.err = err;
    funnel_error_clear (&scan.soft);
    if (s_scan (&scan)) {
        free (scan.elems);
        return NULL;
    }
    return s_msg_new (data, size, &scan, err);
}

const msgpack_object *
event_codec_root (event_codec_t *self)
{
    return self? &self->root: NULL;
}

void
event_codec_destroy (event_codec_t **self_p)
{
    if (self_p && *self_p) {
        event_codec_t *self = *self_p;
        msgpack_zone_destroy (&self->zone);
        free (self->elems);
        free (self);
        *self_p = NULL;
    }
}

const void *
event_codec_bytes (event_codec_t *self, size_t *size)
{
    if (size)
        *size = self? self->size: 0;
    return self? self->data: NULL;
}

const void *
event_codec_elem (event_codec_t *self, size_t index, size_t *size)
{
    if (size)
        *size = 0;
    if (!self || index >= self->elem_count)
        return NULL;
    if (size)
        *size = self->elems [index].size;
    return self->data + self->elems [index].offset;
}


//  --------------------------------------------------------------------------
//  Small object helpers

bool
event_codec_id_valid (const char *text, size_t size)
{
    if (!text || size == 0 || size > FUNNEL_ID_MAX)
        return false;
    for (size_t i = 0; i < size; i++) {
        char c = text [i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
               || (c >= '0' && c <= '9') || (c && strchr ("._:@+-", c));
        if (!ok)
            return false;
    }
    return true;
}

static bool
s_key_is (const msgpack_object *key, const char *name, size_t size)
{
    return key->type == MSGPACK_OBJECT_STR
        && key->via.str.size == size
        && memcmp (key->via.str.ptr, name, size) == 0;
}

const msgpack_object *
event_codec_map_get (const msgpack_object *map, const char *key)
{
    if (!map || !key || map->type != MSGPACK_OBJECT_MAP)
        return NULL;
    size_t size = strlen (key);
    for (uint32_t i = 0; i < map->via.map.size; i++)
        if (s_key_is (&map->via.map.ptr [i].key, key, size))
            return &map->via.map.ptr [i].val;
    return NULL;
}

//  Also false for a str holding a NUL byte: as a C string it would read as
//  something shorter than what was checked.
bool
event_codec_obj_strcpy (const msgpack_object *obj, char *buf, size_t bufsize)
{
    if (!obj || !buf || obj->type != MSGPACK_OBJECT_STR
    ||  obj->via.str.size >= bufsize
    ||  memchr (obj->via.str.ptr, 0, obj->via.str.size))
        return false;
    memcpy (buf, obj->via.str.ptr, obj->via.str.size);
    buf [obj->via.str.size] = 0;
    return true;
}

void
event_codec_pack_cstr (msgpack_packer *pk, const char *text)
{
    size_t size = strlen (text);
    msgpack_pack_str (pk, size);
    msgpack_pack_str_body (pk, text, size);
}

void
event_codec_pack_error (msgpack_sbuffer *sbuf, const funnel_error_t *err)
{
    event_codec_pack_error_extra (sbuf, err, NULL, NULL);
}

void
event_codec_pack_error_extra (msgpack_sbuffer *sbuf, const funnel_error_t *err,
                              const char *key, const char *value)
{
    msgpack_packer pk;
    msgpack_packer_init (&pk, sbuf, msgpack_sbuffer_write);
    bool indexed = err->index >= 0;
    bool extra = key && value;
    msgpack_pack_map (&pk, 2 + indexed + extra);
    event_codec_pack_cstr (&pk, "code");
    event_codec_pack_cstr (&pk, err->code? err->code: FUNNEL_ERR_INTERNAL);
    event_codec_pack_cstr (&pk, "message");
    //  vsnprintf may have cut a character in two: never send broken UTF-8
    size_t size = s_utf8_prefix (err->message, strnlen (err->message, sizeof err->message));
    msgpack_pack_str (&pk, size);
    msgpack_pack_str_body (&pk, err->message, size);
    if (indexed) {
        event_codec_pack_cstr (&pk, "index");
        msgpack_pack_int (&pk, err->index);
    }
    if (extra) {
        event_codec_pack_cstr (&pk, key);
        event_codec_pack_cstr (&pk, value);
    }
}


//  --------------------------------------------------------------------------
//  The envelope

typedef enum {
    ENV_V, ENV_ID, ENV_TYPE, ENV_TS, ENV_SRC, ENV_DATA, ENV_SEQ, ENV_SVC,
    ENV_CAUSE, ENV_KEYS
} envelope_key_t;

static const char *const s_envelope_keys [ENV_KEYS] = {
    "v", "id", "type", "ts", "src", "data", "seq", "svc", "cause"
};

//  One pass over the map: each known key's value, nil counting as absent.
//  A known key given twice is refused, since decoders disagree on which
//  copy wins (msgpack-c lookups take the first, Python dicts the last).
static int
s_envelope_fields (const msgpack_object *obj, const msgpack_object **fields,
                   funnel_error_t *err)
{
    bool seen [ENV_KEYS] = { false };
    for (int k = 0; k < ENV_KEYS; k++)
        fields [k] = NULL;
    for (uint32_t i = 0; i < obj->via.map.size; i++) {
        const msgpack_object_kv *kv = &obj->via.map.ptr [i];
        for (int k = 0; k < ENV_KEYS; k++) {
            if (!s_key_is (&kv->key, s_envelope_keys [k], strlen (s_envelope_keys [k])))
                continue;
            if (seen [k])
                return funnel_error_set (err, FUNNEL_ERR_INVALID,
                                         "%s: duplicate key", s_envelope_keys [k]);
            seen [k] = true;
            if (kv->val.type != MSGPACK_OBJECT_NIL)
                fields [k] = &kv->val;
            break;
        }
    }
    return 0;
}

//  An integer object in [0, max], else false
static bool
s_uint_in (const msgpack_object *obj, uint64_t min, uint64_t max, uint64_t *value)
{
    if (obj->type != MSGPACK_OBJECT_POSITIVE_INTEGER
    ||  obj->via.u64 < min || obj->via.u64 > max)
        return false;
    *value = obj->via.u64;
    return true;
}

static int
s_parse_id (const msgpack_object *obj, const char *name, char *buf,
            funnel_error_t *err)
{
    if (obj->type != MSGPACK_OBJECT_STR
    ||  !event_codec_id_valid (obj->via.str.ptr, obj->via.str.size))
        return funnel_error_set (err, FUNNEL_ERR_INVALID,
                                 "%s: must be 1-%d bytes of [A-Za-z0-9._:@+-]",
                                 name, FUNNEL_ID_MAX);
    event_codec_obj_strcpy (obj, buf, FUNNEL_ID_MAX + 1);
    return 0;
}

static int
s_parse_text (const msgpack_object *obj, const char *name, char *buf,
              funnel_error_t *err)
{
    if (obj->type != MSGPACK_OBJECT_STR || obj->via.str.size == 0
    ||  !event_codec_obj_strcpy (obj, buf, FUNNEL_ID_MAX + 1))
        return funnel_error_set (err, FUNNEL_ERR_INVALID,
                                 "%s: must be a string of 1-%d bytes (no NUL)",
                                 name, FUNNEL_ID_MAX);
    return 0;
}

//  Required fields first, in the table's order, then the optional ones
static int
s_envelope_required (const msgpack_object **fields, funnel_event_t *event,
                     funnel_error_t *err)
{
    static const char *const nouns [] = {
        "integer", "string", "string", "integer", "string", "map"
    };
    for (int k = ENV_V; k <= ENV_DATA; k++)
        if (!fields [k])
            return funnel_error_set (err, FUNNEL_ERR_INVALID, "%s: required %s is missing",
                                     s_envelope_keys [k], nouns [k]);
    uint64_t value;
    if (!s_uint_in (fields [ENV_V], 1, 1, &value))
        return funnel_error_set (err, FUNNEL_ERR_INVALID, "v: must be 1");
    if (s_parse_id (fields [ENV_ID], "id", event->id, err)
    ||  s_parse_text (fields [ENV_TYPE], "type", event->type, err))
        return -1;
    if (!s_uint_in (fields [ENV_TS], 0, (uint64_t) FUNNEL_INT_MAX, &value))
        return funnel_error_set (err, FUNNEL_ERR_INVALID,
                                 "ts: must be an integer from 0 to %lld (ms since the epoch)",
                                 FUNNEL_INT_MAX);
    event->ts = (int64_t) value;
    if (s_parse_text (fields [ENV_SRC], "src", event->src, err))
        return -1;
    if (fields [ENV_DATA]->type != MSGPACK_OBJECT_MAP)
        return funnel_error_set (err, FUNNEL_ERR_INVALID, "data: must be a map");
    event->data = fields [ENV_DATA];
    return 0;
}

static int
s_envelope_optional (const msgpack_object **fields, funnel_event_t *event,
                     funnel_error_t *err)
{
    if (fields [ENV_SEQ]
    &&  !s_uint_in (fields [ENV_SEQ], 1, (uint64_t) FUNNEL_INT_MAX, &event->seq))
        return funnel_error_set (err, FUNNEL_ERR_INVALID,
                                 "seq: must be an integer from 1 to %lld", FUNNEL_INT_MAX);
    if (fields [ENV_SVC] && s_parse_id (fields [ENV_SVC], "svc", event->svc, err))
        return -1;
    if (fields [ENV_CAUSE] && s_parse_id (fields [ENV_CAUSE], "cause", event->cause, err))
        return -1;
    return 0;
}

int
event_codec_event_parse (const msgpack_object *obj, funnel_event_t *event,
                    funnel_error_t *err)
{
    funnel_error_clear (err);
    memset (event, 0, sizeof *event);
    if (!obj || obj->type != MSGPACK_OBJECT_MAP)
        return funnel_error_set (err, FUNNEL_ERR_BAD_REQUEST, "event: must be a map");
    event->root = obj;
    const msgpack_object *fields [ENV_KEYS];
    if (s_envelope_fields (obj, fields, err)
    ||  s_envelope_required (fields, event, err)
    ||  s_envelope_optional (fields, event, err))
        return -1;
    return 0;
}


//  --------------------------------------------------------------------------
//  PUBLISH bodies

//  Number of children of a container (a map has a key and a value each)
static uint64_t
s_children (const msgpack_object *obj)
{
    if (obj->type == MSGPACK_OBJECT_ARRAY)
        return obj->via.array.size;
    if (obj->type == MSGPACK_OBJECT_MAP)
        return 2 * (uint64_t) obj->via.map.size;
    return 0;
}

static const msgpack_object *
s_child (const msgpack_object *obj, uint64_t index)
{
    if (obj->type == MSGPACK_OBJECT_ARRAY)
        return &obj->via.array.ptr [index];
    const msgpack_object_kv *kv = &obj->via.map.ptr [index / 2];
    return index % 2? &kv->val: &kv->key;
}

typedef struct {
    const msgpack_object *obj;
    uint64_t next;              //  Next child to visit
} walk_frame_t;

//  Path of the child last visited in each frame
static void
s_walk_path (const walk_frame_t *stack, int depth, path_t *path)
{
    path->len = 0;
    path->text [0] = 0;
    for (int level = 0; level < depth; level++) {
        const msgpack_object *obj = stack [level].obj;
        uint64_t child = stack [level].next - 1;
        if (obj->type == MSGPACK_OBJECT_ARRAY)
            s_path_index (path, (size_t) child);
        else
        if (child % 2) {
            const msgpack_object *key = &obj->via.map.ptr [child / 2].key;
            bool is_str = key->type == MSGPACK_OBJECT_STR;
            s_path_key (path, is_str? key->via.str.ptr: NULL,
                        is_str? key->via.str.size: 0);
        }
        else
            break;
    }
}

//  Walks one event iteratively: its nesting (the event is level 1) must be
//  within FUNNEL_DEPTH_MAX. The scan's limit may be one more (a batch), so
//  a single event decoded with the body limits is checked here.
static int
s_event_depth (const msgpack_object *event, funnel_error_t *err)
{
    walk_frame_t stack [FUNNEL_DEPTH_MAX];
    int depth = 0;
    const msgpack_object *obj = event;
    while (obj) {
        if (obj->type == MSGPACK_OBJECT_ARRAY || obj->type == MSGPACK_OBJECT_MAP) {
            if (depth == FUNNEL_DEPTH_MAX) {
                path_t path;
                s_walk_path (stack, depth, &path);
                return funnel_error_set (err, FUNNEL_ERR_INVALID,
                                         "%s: nested deeper than %d levels",
                                         s_path_text (&path), FUNNEL_DEPTH_MAX);
            }
            stack [depth].obj = obj;
            stack [depth++].next = 0;
        }
        //  Next object: the next unvisited child of the innermost frame
        obj = NULL;
        while (depth > 0 && !obj) {
            walk_frame_t *frame = &stack [depth - 1];
            if (frame->next < s_children (frame->obj))
                obj = s_child (frame->obj, frame->next++);
            else
                depth--;
        }
    }
    return 0;
}

//  Checks and parses one event of a body; size is its size as received.
static int
s_publish_one (const msgpack_object *obj, size_t size, funnel_event_t *event,
               funnel_error_t *err)
{
    if (s_event_depth (obj, err))
        return -1;
    if (size > FUNNEL_EVENT_MAX_BYTES)
        return funnel_error_set (err, FUNNEL_ERR_TOO_LARGE,
                                 "event: larger than %d bytes", FUNNEL_EVENT_MAX_BYTES);
    if (event_codec_event_parse (obj, event, err))
        return -1;
    event->encoded_size = size;
    return 0;
}

static int
s_publish_batch (const msgpack_object *body, event_codec_t *msg,
                 funnel_event_t *events, funnel_error_t *err)
{
    for (uint32_t i = 0; i < body->via.array.size; i++) {
        const msgpack_object *obj = &body->via.array.ptr [i];
        if (obj->type != MSGPACK_OBJECT_MAP) {
            funnel_error_set (err, FUNNEL_ERR_INVALID, "event: must be a map");
            return s_at_index (err, (int) i);
        }
        size_t received = 0;
        event_codec_elem (msg, i, &received);
        if (s_publish_one (obj, received, &events [i], err))
            return s_at_index (err, (int) i);
    }
    return 0;
}

int
event_codec_publish_parse (event_codec_t *self, funnel_event_t **events,
                           size_t *count, bool *is_batch, funnel_error_t *err)
{
    funnel_error_clear (err);
    const msgpack_object *body = event_codec_root (self);
    *events = NULL;
    *count = 0;
    *is_batch = body && body->type == MSGPACK_OBJECT_ARRAY;
    size_t n = 1;
    if (*is_batch) {
        n = body->via.array.size;
        if (n == 0)
            return funnel_error_set (err, FUNNEL_ERR_INVALID, "body: empty batch");
        if (n > FUNNEL_BATCH_MAX)
            return funnel_error_set (err, FUNNEL_ERR_TOO_LARGE,
                                     "body: batch of more than %d events", FUNNEL_BATCH_MAX);
    }
    else
    if (!body || body->type != MSGPACK_OBJECT_MAP)
        return funnel_error_set (err, FUNNEL_ERR_BAD_REQUEST,
                                 "body: must be an event map or an array of event maps");
    funnel_event_t *list = calloc (n, sizeof (funnel_event_t));
    if (!list)
        return funnel_error_set (err, FUNNEL_ERR_INTERNAL, "body: out of memory");
    int rc = *is_batch
           ? s_publish_batch (body, self, list, err)
           : s_publish_one (body, self->size, list, err);
    if (rc) {
        free (list);
        return -1;
    }
    *events = list;
    *count = n;
    return 0;
}

//  --------------------------------------------------------------------------
//  Self-test: also the usage example. Assertions must stay on in Release.

#undef NDEBUG
#include <assert.h>
#include <dirent.h>
#include <sys/stat.h>

//  Packs a valid event whose data holds the given string under "name"
static void
s_pack_event (msgpack_packer *pk, const char *id, const char *name)
{
    msgpack_pack_map (pk, 6);
    event_codec_pack_cstr (pk, "v");     msgpack_pack_uint64 (pk, 1);
    event_codec_pack_cstr (pk, "id");    event_codec_pack_cstr (pk, id);
    event_codec_pack_cstr (pk, "type");  event_codec_pack_cstr (pk, "lead.capture");
    event_codec_pack_cstr (pk, "ts");    msgpack_pack_uint64 (pk, 1700000000000ULL);
    event_codec_pack_cstr (pk, "src");   event_codec_pack_cstr (pk, "crm");
    event_codec_pack_cstr (pk, "data");
    msgpack_pack_map (pk, 2);
    event_codec_pack_cstr (pk, "lead");  event_codec_pack_cstr (pk, "L-1");
    event_codec_pack_cstr (pk, "name");  event_codec_pack_cstr (pk, name);
}

//  Decodes with body limits then parses as PUBLISH; returns the error code
//  (NULL if accepted) and the index in *index.
static const char *
s_publish_code (const void *data, size_t size, int *index, char *message)
{
    funnel_error_t err;
    event_codec_t *msg = event_codec_decode (data, size, &event_codec_limits_body, &err);
    if (msg) {
        funnel_event_t *events;
        size_t count;
        bool batch;
        if (event_codec_publish_parse (msg, &events, &count, &batch, &err) == 0) {
            assert (events && count > 0);
            free (events);
        }
        else
            assert (err.code && !events);
        event_codec_destroy (&msg);
    }
    else
        assert (err.code);
    if (index)
        *index = err.index;
    if (message)
        strcpy (message, err.message);
    return err.code;
}

typedef struct {
    const char *name;
    const char *bytes;      //  Hex
    const char *code;       //  Expected error code, NULL = accepted
} codec_case_t;

static const codec_case_t s_cases [] = {
    { "empty",              "",                     FUNNEL_ERR_BAD_REQUEST },
    { "never-used byte",    "c1",                   FUNNEL_ERR_BAD_REQUEST },
    { "array32 of 67M",     "dd04000000 01",        FUNNEL_ERR_BAD_REQUEST },
    { "array32 of 4G",      "ddffffffff",           FUNNEL_ERR_BAD_REQUEST },
    { "map32 of 4G",        "dfffffffff",           FUNNEL_ERR_BAD_REQUEST },
    { "str32 of 4G",        "dbffffffff",           FUNNEL_ERR_BAD_REQUEST },
    { "bin32 of 4G",        "c6ffffffff 00",        FUNNEL_ERR_BAD_REQUEST },
    { "ext32 of 4G",        "c9ffffffff 01",        FUNNEL_ERR_BAD_REQUEST },
    { "fixext in a map",    "81a161d40102",         FUNNEL_ERR_INVALID },
    { "ext8 in a map",      "81a161c70105aa",       FUNNEL_ERR_INVALID },
    { "array16 no data",    "dcffff",               FUNNEL_ERR_BAD_REQUEST },
    { "map needs 2/entry",  "8301020304",           FUNNEL_ERR_BAD_REQUEST },
    { "nested owed bytes",  "92dd0000000401020304", FUNNEL_ERR_BAD_REQUEST },
    { "truncated header",   "cd01",                 FUNNEL_ERR_BAD_REQUEST },
    { "truncated float",    "cb0000",               FUNNEL_ERR_BAD_REQUEST },
    { "truncated str",      "a56162",               FUNNEL_ERR_BAD_REQUEST },
    { "map missing value",  "81a161",               FUNNEL_ERR_BAD_REQUEST },
    { "trailing bytes",     "8001",                 FUNNEL_ERR_BAD_REQUEST },
    { "a lone int",         "01",                   FUNNEL_ERR_BAD_REQUEST },
    { "a lone str",         "a3616263",             FUNNEL_ERR_BAD_REQUEST },
    { "nil",                "c0",                   FUNNEL_ERR_BAD_REQUEST },
    { "empty batch",        "90",                   FUNNEL_ERR_INVALID },
    { "batch of ints",      "930102 03",            FUNNEL_ERR_INVALID },
    { "empty map event",    "80",                   FUNNEL_ERR_INVALID },
    { "bad UTF-8",          "81a161a2c328",         FUNNEL_ERR_INVALID },
    { "overlong UTF-8",     "81a161a2c080",         FUNNEL_ERR_INVALID },
    { "surrogate UTF-8",    "81a161a3eda080",       FUNNEL_ERR_INVALID },
    { "bad UTF-8 key",      "81a1ff01",             FUNNEL_ERR_INVALID },
    { "above U+10FFFF",     "81a161a4f4908080",     FUNNEL_ERR_INVALID },
    { NULL, NULL, NULL }
};

//  Hex (spaces ignored) to bytes; returns the size
static size_t
s_unhex (const char *hex, uint8_t *out)
{
    size_t size = 0;
    for (; *hex; hex++) {
        if (*hex == ' ')
            continue;
        unsigned value;
        sscanf (hex, "%2x", &value);
        out [size++] = (uint8_t) value;
        hex++;
    }
    return size;
}

static void
s_test_table (bool verbose)
{
    for (const codec_case_t *c = s_cases; c->name; c++) {
        uint8_t bytes [64];
        size_t size = s_unhex (c->bytes, bytes);
        char message [256];
        const char *code = s_publish_code (bytes, size, NULL, message);
        if (verbose)
            printf ("\n   %-20s -> %s: %s", c->name, code? code: "OK", code? message: "");
        assert (code == c->code || (code && c->code && strcmp (code, c->code) == 0));
    }
}

//  Fills buf with prefix, count times the header byte, then a tail
static size_t
s_nest (uint8_t *buf, const char *prefix, uint8_t header, const char *filler,
        int count, const char *tail)
{
    size_t size = s_unhex (prefix, buf);
    uint8_t fill [8];
    size_t fill_size = s_unhex (filler, fill);
    for (int i = 0; i < count; i++) {
        buf [size++] = header;
        memcpy (buf + size, fill, fill_size);
        size += fill_size;
    }
    return size + s_unhex (tail, buf + size);
}

static void
s_test_nesting (void)
{
    uint8_t buf [512];
    char message [256];
    //  100 nested arrays
    size_t size = s_nest (buf, "", 0x91, "", 100, "01");
    assert (strcmp (s_publish_code (buf, size, NULL, message), FUNNEL_ERR_INVALID) == 0);
    assert (strstr (message, "nested deeper"));
    //  9 maps deep: the body scan allows 9 (for a batch), the event walk 8
    size = s_nest (buf, "", 0x81, "a161", 9, "01");
    assert (strcmp (s_publish_code (buf, size, NULL, message), FUNNEL_ERR_INVALID) == 0);
    assert (strcmp (message, "a.a.a.a.a.a.a.a: nested deeper than 8 levels") == 0);
    //  ...and the event limits refuse it in the scan
    funnel_error_t err;
    assert (!event_codec_decode (buf, size, &event_codec_limits_event, &err));
    assert (strcmp (err.code, FUNNEL_ERR_INVALID) == 0);
    //  8 deep is fine for the walk (then the envelope is what is wrong)
    size = s_nest (buf, "", 0x81, "a161", 8, "01");
    s_publish_code (buf, size, NULL, message);
    assert (strstr (message, "v: required"));
    //  A batch whose element is 9 deep: refused in the scan, with its index
    int index;
    size = s_nest (buf, "928081a161", 0x81, "a161", 8, "01");
    assert (strcmp (s_publish_code (buf, size, &index, message), FUNNEL_ERR_INVALID) == 0);
    assert (index == 1);
    //  msgpack-c's own stack is 32: a scan allowing 32 still decodes
    event_codec_limits_t deep = event_codec_limits_event;
    deep.depth_max = 100;
    size = s_nest (buf, "", 0x91, "", 32, "01");
    event_codec_t *msg = event_codec_decode (buf, size, &deep, &err);
    assert (msg);
    event_codec_destroy (&msg);
    size = s_nest (buf, "", 0x91, "", 33, "01");
    assert (!event_codec_decode (buf, size, &deep, &err));
}

//  An event whose data.name is a string of size bytes
static void
s_event_with_name (msgpack_sbuffer *sbuf, size_t size)
{
    char *name = malloc (size + 1);
    memset (name, 'x', size);
    name [size] = 0;
    msgpack_packer pk;
    msgpack_packer_init (&pk, sbuf, msgpack_sbuffer_write);
    s_pack_event (&pk, "E-1", name);
    free (name);
}

static void
s_test_sizes (void)
{
    char message [256];
    int index;
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init (&sbuf);
    msgpack_packer pk;
    msgpack_packer_init (&pk, &sbuf, msgpack_sbuffer_write);

    //  A string of 1024 bytes is fine, 1025 is not, and the path says where
    s_event_with_name (&sbuf, 1024);
    assert (!s_publish_code (sbuf.data, sbuf.size, NULL, NULL));
    msgpack_sbuffer_clear (&sbuf);
    s_event_with_name (&sbuf, 1025);
    assert (strcmp (s_publish_code (sbuf.data, sbuf.size, &index, message),
                    FUNNEL_ERR_INVALID) == 0);
    assert (strcmp (message, "data.name: string longer than 1024 bytes") == 0);
    assert (index == -1);

    //  A map of 257 entries inside an event
    msgpack_sbuffer_clear (&sbuf);
    msgpack_pack_map (&pk, 1);
    event_codec_pack_cstr (&pk, "data");
    msgpack_pack_array (&pk, 257);
    for (int i = 0; i < 257; i++)
        msgpack_pack_int (&pk, i);
    assert (strcmp (s_publish_code (sbuf.data, sbuf.size, NULL, message),
                    FUNNEL_ERR_INVALID) == 0);
    assert (strcmp (message, "data: more than 256 entries") == 0);

    //  An event over 64 KiB: 70 strings of 1000 bytes
    msgpack_sbuffer_clear (&sbuf);
    char text [1000];
    memset (text, 'y', sizeof text);
    msgpack_pack_map (&pk, 1);
    event_codec_pack_cstr (&pk, "data");
    msgpack_pack_array (&pk, 70);
    for (int i = 0; i < 70; i++) {
        msgpack_pack_str (&pk, sizeof text);
        msgpack_pack_str_body (&pk, text, sizeof text);
    }
    //  (the body limits take it: the parse checks its size as received)
    assert (strcmp (s_publish_code (sbuf.data, sbuf.size, &index, message),
                    FUNNEL_ERR_TOO_LARGE) == 0);
    assert (index == -1 && strcmp (message, "event: larger than 65536 bytes") == 0);
    //  ...and inside a batch it is caught by the scan, with its index
    msgpack_sbuffer sbatch;
    msgpack_sbuffer_init (&sbatch);
    msgpack_sbuffer_write (&sbatch, "\x92\x80", 2);
    msgpack_sbuffer_write (&sbatch, sbuf.data, sbuf.size);
    assert (strcmp (s_publish_code (sbatch.data, sbatch.size, &index, NULL),
                    FUNNEL_ERR_TOO_LARGE) == 0);
    assert (index == 1);
    msgpack_sbuffer_destroy (&sbatch);

    //  A frame over 4 MiB is too large before anything is read
    uint8_t *huge = calloc (1, FUNNEL_FRAME_MAX_BYTES + 1);
    assert (strcmp (s_publish_code (huge, FUNNEL_FRAME_MAX_BYTES + 1, NULL, NULL),
                    FUNNEL_ERR_TOO_LARGE) == 0);
    //  An array16 of 65535 zeros: a batch over 1000
    memcpy (huge, "\xdc\xff\xff", 3);
    assert (strcmp (s_publish_code (huge, 3 + 65535, NULL, NULL),
                    FUNNEL_ERR_TOO_LARGE) == 0);
    free (huge);
    msgpack_sbuffer_destroy (&sbuf);
}

//  A batch of count good events
static void
s_pack_batch (msgpack_sbuffer *sbuf, int count)
{
    msgpack_packer pk;
    msgpack_packer_init (&pk, sbuf, msgpack_sbuffer_write);
    msgpack_pack_array (&pk, count);
    for (int i = 0; i < count; i++) {
        char id [32];
        snprintf (id, sizeof id, "E-%d", i);
        s_pack_event (&pk, id, "Ada");
    }
}

static void
s_test_batches (void)
{
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init (&sbuf);
    s_pack_batch (&sbuf, 1000);
    funnel_error_t err;
    event_codec_t *msg = event_codec_decode (sbuf.data, sbuf.size, &event_codec_limits_body, &err);
    assert (msg);
    funnel_event_t *events;
    size_t count;
    bool batch;
    assert (event_codec_publish_parse (msg, &events, &count, &batch, &err) == 0);
    assert (batch && count == 1000);
    assert (strcmp (events [999].id, "E-999") == 0);
    //  Each event knows its size as received, and where its bytes are
    size_t elem_size;
    const uint8_t *elem = event_codec_elem (msg, 999, &elem_size);
    assert (elem && elem_size == events [999].encoded_size && elem_size > 50);
    assert (elem + elem_size == (const uint8_t *) event_codec_bytes (msg, NULL) + sbuf.size);
    assert (!event_codec_elem (msg, 1000, NULL));
    free (events);
    event_codec_destroy (&msg);

    //  1001 is too large
    msgpack_sbuffer_clear (&sbuf);
    s_pack_batch (&sbuf, 1001);
    assert (strcmp (s_publish_code (sbuf.data, sbuf.size, NULL, NULL),
                    FUNNEL_ERR_TOO_LARGE) == 0);

    //  A bad element is reported with its index
    msgpack_sbuffer_clear (&sbuf);
    s_pack_batch (&sbuf, 3);
    char *at = memmem (sbuf.data, sbuf.size, "E-2", 3);
    at [1] = ' ';
    int index;
    char message [256];
    assert (strcmp (s_publish_code (sbuf.data, sbuf.size, &index, message),
                    FUNNEL_ERR_INVALID) == 0);
    assert (index == 2);
    assert (strncmp (message, "id: must be 1-64 bytes", 22) == 0);
    msgpack_sbuffer_destroy (&sbuf);
}

//  Packs an envelope from key/value pairs given as hex, checks the result
static void
s_check_envelope (const char *hex, const char *message_start)
{
    uint8_t bytes [256];
    size_t size = s_unhex (hex, bytes);
    funnel_error_t err;
    event_codec_t *msg = event_codec_decode (bytes, size, &event_codec_limits_event, &err);
    assert (msg);
    funnel_event_t event;
    int rc = event_codec_event_parse (event_codec_root (msg), &event, &err);
    if (!message_start)
        assert (rc == 0);
    else {
        assert (rc == -1 && strcmp (err.code, FUNNEL_ERR_INVALID) == 0);
        assert (strncmp (err.message, message_start, strlen (message_start)) == 0);
    }
    event_codec_destroy (&msg);
}

static void
s_test_envelope (void)
{
    //  The parts of a good envelope, then broken variants
    #define V     "a17601"
    #define ID    "a26964a3452d31"
    #define TYPE  "a474797065a474797065"
    #define TS    "a27473cd0102"
    #define SRC   "a3737263a3637266"
    #define DATA  "a46461746180"
    s_check_envelope ("86" V ID TYPE TS SRC DATA, NULL);
    s_check_envelope ("85" ID TYPE TS SRC DATA, "v: required integer is missing");
    s_check_envelope ("86" "a17602" ID TYPE TS SRC DATA, "v: must be 1");
    s_check_envelope ("86" "a176a131" ID TYPE TS SRC DATA, "v: must be 1");
    s_check_envelope ("86" V "a26964a0" TYPE TS SRC DATA, "id: must be 1-64 bytes");
    s_check_envelope ("86" V "a26964a2212a" TYPE TS SRC DATA, "id: must be 1-64 bytes");
    s_check_envelope ("86" V "a26964c0" TYPE TS SRC DATA, "id: required string is missing");
    s_check_envelope ("85" V ID TYPE SRC DATA, "ts: required integer is missing");
    s_check_envelope ("86" V ID TYPE "a27473cb3ff8000000000000" SRC DATA, "ts: must be an integer");
    s_check_envelope ("86" V ID TYPE "a27473ff" SRC DATA, "ts: must be an integer");
    s_check_envelope ("86" V ID TYPE "a27473cf0020000000000001" SRC DATA, "ts: must be an integer");
    s_check_envelope ("86" V ID TYPE TS "a3737263a0" DATA, "src: must be a string");
    s_check_envelope ("86" V ID "a474797065a3610062" TS SRC DATA, "type: must be a string");
    s_check_envelope ("86" V ID TYPE TS SRC "a464617461a0", "data: must be a map");
    s_check_envelope ("87" V ID ID TYPE TS SRC DATA, "id: duplicate key");
    s_check_envelope ("87" V ID TYPE TS SRC DATA "a373657100", "seq: must be an integer");
    s_check_envelope ("87" V ID TYPE TS SRC DATA "a373766301", "svc: must be 1-64 bytes");
    s_check_envelope ("87" V ID TYPE TS SRC DATA "a563617573657b", "cause: must be 1-64");
    //  Optional fields given as nil are absent; unknown keys are ignored
    s_check_envelope ("89" V ID TYPE TS SRC DATA "a373657105" "a3737663c0" "a178c3", NULL);

    uint8_t bytes [256];
    size_t size = s_unhex ("88" V ID TYPE TS SRC DATA "a373657105" "a3737663a46c656164", bytes);
    funnel_error_t err;
    event_codec_t *msg = event_codec_decode (bytes, size, &event_codec_limits_event, &err);
    funnel_event_t event;
    assert (event_codec_event_parse (event_codec_root (msg), &event, &err) == 0);
    assert (strcmp (event.id, "E-1") == 0 && strcmp (event.type, "type") == 0);
    assert (strcmp (event.src, "crf") == 0 && strcmp (event.svc, "lead") == 0);
    assert (event.ts == 0x102 && event.seq == 5 && event.cause [0] == 0);
    assert (event.data->type == MSGPACK_OBJECT_MAP && event.root == event_codec_root (msg));
    event_codec_destroy (&msg);
    //  Not a map at all
    msgpack_object nil = { .type = MSGPACK_OBJECT_NIL };
    assert (event_codec_event_parse (&nil, &event, &err) == -1);
    assert (strcmp (err.code, FUNNEL_ERR_BAD_REQUEST) == 0);
}

static void
s_test_round_trip (void)
{
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init (&sbuf);
    msgpack_packer pk;
    msgpack_packer_init (&pk, &sbuf, msgpack_sbuffer_write);
    s_pack_event (&pk, "ev:42@crm+x_y-z.1", "Zoë ✓");

    //  Decode from a buffer we free at once: the msg keeps its own copy
    char *copy = malloc (sbuf.size);
    memcpy (copy, sbuf.data, sbuf.size);
    funnel_error_t err;
    event_codec_t *msg = event_codec_decode (copy, sbuf.size, &event_codec_limits_event, &err);
    memset (copy, 0, sbuf.size);
    free (copy);
    assert (msg);
    funnel_event_t *events;
    size_t count;
    bool batch;
    assert (event_codec_publish_parse (msg, &events, &count, &batch, &err) == 0);
    assert (!batch && count == 1 && events [0].encoded_size == sbuf.size);
    assert (strcmp (events [0].id, "ev:42@crm+x_y-z.1") == 0);
    assert (strcmp (events [0].type, "lead.capture") == 0);
    assert (events [0].ts == 1700000000000LL);
    const msgpack_object *name = event_codec_map_get (events [0].data, "name");
    char text [32];
    assert (event_codec_obj_strcpy (name, text, sizeof text) && strcmp (text, "Zoë ✓") == 0);
    assert (!event_codec_obj_strcpy (name, text, 4));
    assert (!event_codec_map_get (events [0].data, "nope"));
    assert (!event_codec_map_get (name, "name"));

    //  Packing the objects again gives the same bytes
    msgpack_sbuffer again;
    msgpack_sbuffer_init (&again);
    msgpack_packer pk2;
    msgpack_packer_init (&pk2, &again, msgpack_sbuffer_write);
    msgpack_pack_object (&pk2, *event_codec_root (msg));
    assert (again.size == sbuf.size && memcmp (again.data, sbuf.data, sbuf.size) == 0);
    free (events);
    event_codec_destroy (&msg);
    event_codec_destroy (&msg);
    msgpack_sbuffer_destroy (&again);
    msgpack_sbuffer_destroy (&sbuf);
}

static void
s_test_helpers (void)
{
    assert (event_codec_id_valid ("a", 1));
    assert (event_codec_id_valid ("A-z_0.9:@+", 10));
    assert (!event_codec_id_valid ("", 0));
    assert (!event_codec_id_valid ("a b", 3));
    assert (!event_codec_id_valid ("a\0b", 3));
    assert (!event_codec_id_valid ("é", 2));
    char id [80];
    memset (id, 'a', sizeof id);
    assert (event_codec_id_valid (id, 64));
    assert (!event_codec_id_valid (id, 65));

    //  An ERR body, with and without an index
    funnel_error_t err;
    funnel_error_clear (&err);
    funnel_error_set (&err, FUNNEL_ERR_INVALID, "data.name: string longer than 1024 bytes");
    err.index = 7;
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init (&sbuf);
    event_codec_pack_error (&sbuf, &err);
    funnel_error_t err2;
    event_codec_t *msg = event_codec_decode (sbuf.data, sbuf.size, &event_codec_limits_event, &err2);
    assert (msg);
    const msgpack_object *root = event_codec_root (msg);
    char text [256];
    assert (root->via.map.size == 3);
    assert (event_codec_obj_strcpy (event_codec_map_get (root, "code"), text, sizeof text));
    assert (strcmp (text, "invalid") == 0);
    assert (event_codec_obj_strcpy (event_codec_map_get (root, "message"), text, sizeof text));
    assert (strcmp (text, err.message) == 0);
    assert (event_codec_map_get (root, "index")->via.u64 == 7);
    event_codec_destroy (&msg);
    //  A message cut inside a character is packed up to the last whole one
    msgpack_sbuffer_clear (&sbuf);
    err.index = -1;
    strcpy (err.message, "x: \xc3");
    event_codec_pack_error (&sbuf, &err);
    msg = event_codec_decode (sbuf.data, sbuf.size, &event_codec_limits_event, &err2);
    assert (msg && event_codec_root (msg)->via.map.size == 2);
    assert (event_codec_obj_strcpy (event_codec_map_get (event_codec_root (msg), "message"),
                               text, sizeof text));
    assert (strcmp (text, "x: ") == 0);
    event_codec_destroy (&msg);
    msgpack_sbuffer_destroy (&sbuf);
}

//  Replays every file of a fuzz corpus: nothing may crash, and each input
//  is either accepted or refused with a code.
static int
s_replay_corpus (const char *dirname)
{
    DIR *dir = opendir (dirname);
    assert (dir);
    int files = 0;
    struct dirent *entry;
    while ((entry = readdir (dir))) {
        char path [4096];
        snprintf (path, sizeof path, "%s/%s", dirname, entry->d_name);
        struct stat st;
        if (stat (path, &st) || !S_ISREG (st.st_mode) || st.st_size > 8 * 1024 * 1024)
            continue;
        FILE *file = fopen (path, "rb");
        assert (file);
        uint8_t *data = malloc ((size_t) st.st_size + 1);
        size_t size = fread (data, 1, (size_t) st.st_size, file);
        fclose (file);
        s_publish_code (data, size, NULL, NULL);
        funnel_error_t err;
        event_codec_t *msg = event_codec_decode (data, size, &event_codec_limits_event, &err);
        assert (msg || err.code);
        event_codec_destroy (&msg);
        free (data);
        files++;
    }
    closedir (dir);
    return files;
}

void
event_codec_test (bool verbose)
{
    if (verbose)
        printf ("\n * event_codec: ");
    s_test_helpers ();
    s_test_table (verbose);
    s_test_nesting ();
    s_test_sizes ();
    s_test_batches ();
    s_test_envelope ();
    s_test_round_trip ();
    const char *corpus = getenv ("FUNNEL_FUZZ_CORPUS");
    if (corpus && *corpus) {
        int files = s_replay_corpus (corpus);
        if (verbose)
            printf ("\n   replayed %d corpus files", files);
    }
    if (verbose)
        printf ("\n   OK\n");
}
