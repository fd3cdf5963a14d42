/*  event_schema — declarative checks of an event's data fields.

    A service lists, per event type, the fields it reads; funnel_schema_check
    runs before any state is touched. Sizes, depth and UTF-8 were already
    enforced by the codec, so this only checks presence, types and ranges.

    Integers are exact: an integer beyond ±2^53 (what a double holds
    exactly) is never in range, and within that it converts to a double
    without loss, so comparing with the double bounds is exact.
*/
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "event_codec.h"
#include "event_schema.h"

//  Fields per table (per map level) that one check can track
#define SCHEMA_FIELDS_MAX   64
//  Longest path printed in a message
#define SCHEMA_PATH_MAX     128

const funnel_event_schema_t *
funnel_schema_find (const funnel_event_schema_t *table, const char *type)
{
    for (; table && table->type; table++)
        if (strcmp (table->type, type) == 0)
            return table;
    return NULL;
}

//  What a missing field of this kind should have been, for messages
static const char *
s_noun (funnel_field_kind_t kind)
{
    switch (kind) {
        case FIELD_INT:         return "integer";
        case FIELD_NUM:         return "number";
        case FIELD_BOOL:        return "boolean";
        case FIELD_STR_ARRAY:
        case FIELD_ENUM_ARRAY:  return "array";
        case FIELD_MAP:         return "map";
        case FIELD_ANY:         return "value";
        default:                return "string";
    }
}

//  The field's inclusive range, with the kind's default when both are 0.
//  A string's or array's max of 0 always means the default max.
static void
s_range (const funnel_field_t *field, double *min, double *max)
{
    bool preset = field->min == 0 && field->max == 0;
    *min = field->min;
    *max = field->max;
    switch (field->kind) {
        case FIELD_STR:
            if (preset)
                *min = 1;
            if (*max == 0)
                *max = FUNNEL_STR_MAX;
            break;
        case FIELD_STR_ARRAY:
        case FIELD_ENUM_ARRAY:
            if (*max == 0)
                *max = FUNNEL_ENTRIES_MAX;
            break;
        case FIELD_INT:
            if (preset)
                *max = (double) FUNNEL_INT_MAX;
            break;
        case FIELD_NUM:
            if (preset) {
                *min = -HUGE_VAL;
                *max = HUGE_VAL;
            }
            break;
        default:
            break;
    }
}

static bool
s_is_int (const msgpack_object *obj)
{
    return obj->type == MSGPACK_OBJECT_POSITIVE_INTEGER
        || obj->type == MSGPACK_OBJECT_NEGATIVE_INTEGER;
}

static bool
s_is_float (const msgpack_object *obj)
{
    return obj->type == MSGPACK_OBJECT_FLOAT32
        || obj->type == MSGPACK_OBJECT_FLOAT64;
}

//  An integer object's value if it is within ±2^53, else false
static bool
s_exact_int (const msgpack_object *obj, double *value)
{
    if (obj->type == MSGPACK_OBJECT_POSITIVE_INTEGER
    &&  obj->via.u64 <= (uint64_t) FUNNEL_INT_MAX) {
        *value = (double) obj->via.u64;
        return true;
    }
    if (obj->type == MSGPACK_OBJECT_NEGATIVE_INTEGER
    &&  obj->via.i64 >= -FUNNEL_INT_MAX) {
        *value = (double) obj->via.i64;
        return true;
    }
    return false;
}

//  "a, b, c" from a NULL-terminated list, cut with "..." if too long
static void
s_join (const char *const *values, char *buf, size_t size)
{
    size_t len = 0;
    buf [0] = 0;
    for (int i = 0; values && values [i]; i++) {
        int n = snprintf (buf + len, size - len, "%s%s", i? ", ": "", values [i]);
        if (n < 0 || (size_t) n >= size - len) {
            snprintf (buf + (size > 4? size - 4: 0), size > 4? 4: size, "...");
            return;
        }
        len += (size_t) n;
    }
}

static bool
s_enum_has (const char *const *values, const msgpack_object *obj)
{
    if (obj->type != MSGPACK_OBJECT_STR)
        return false;
    for (int i = 0; values && values [i]; i++)
        if (strlen (values [i]) == obj->via.str.size
        &&  memcmp (values [i], obj->via.str.ptr, obj->via.str.size) == 0)
            return true;
    return false;
}

static int
s_fail_enum (const char *path, const char *const *values, funnel_error_t *err)
{
    char list [160];
    s_join (values, list, sizeof list);
    return funnel_error_set (err, FUNNEL_ERR_INVALID, "%s: must be one of %s", path, list);
}

static int
s_check_enum (const funnel_field_t *field, const msgpack_object *obj,
              const char *path, funnel_error_t *err)
{
    if (s_enum_has (field->values, obj))
        return 0;
    char field_path [SCHEMA_PATH_MAX];
    snprintf (field_path, sizeof field_path, "%s.%s", path, field->name);
    return s_fail_enum (field_path, field->values, err);
}

static int
s_check_str (const funnel_field_t *field, const msgpack_object *obj,
             const char *path, funnel_error_t *err)
{
    double min, max;
    s_range (field, &min, &max);
    if (obj->type != MSGPACK_OBJECT_STR
    ||  obj->via.str.size < min || obj->via.str.size > max)
        return funnel_error_set (err, FUNNEL_ERR_INVALID,
                                 "%s.%s: must be a string of %.0f-%.0f bytes",
                                 path, field->name, min, max);
    return 0;
}

static int
s_check_int (const funnel_field_t *field, const msgpack_object *obj,
             const char *path, funnel_error_t *err)
{
    if (!s_is_int (obj))
        return funnel_error_set (err, FUNNEL_ERR_INVALID, "%s.%s: must be an integer",
                                 path, field->name);
    double min, max, value;
    s_range (field, &min, &max);
    if (!s_exact_int (obj, &value) || value < min || value > max)
        return funnel_error_set (err, FUNNEL_ERR_INVALID,
                                 "%s.%s: must be an integer from %.16g to %.16g",
                                 path, field->name, min, max);
    return 0;
}

static int
s_check_num (const funnel_field_t *field, const msgpack_object *obj,
             const char *path, funnel_error_t *err)
{
    double value;
    if (s_is_float (obj))
        value = obj->via.f64;       //  msgpack-c widens float32 into f64
    else
    if (obj->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        value = (double) obj->via.u64;
    else
    if (obj->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        value = (double) obj->via.i64;
    else
        return funnel_error_set (err, FUNNEL_ERR_INVALID, "%s.%s: must be a number",
                                 path, field->name);
    if (!isfinite (value))
        return funnel_error_set (err, FUNNEL_ERR_INVALID, "%s.%s: must be a finite number",
                                 path, field->name);
    double min, max;
    s_range (field, &min, &max);
    if (value < min || value > max)
        return funnel_error_set (err, FUNNEL_ERR_INVALID,
                                 "%s.%s: must be a number from %.16g to %.16g",
                                 path, field->name, min, max);
    return 0;
}

//  An array field: its count, then each element (a str, or an enum value)
static int
s_check_array (const funnel_field_t *field, const msgpack_object *obj,
               const char *path, funnel_error_t *err)
{
    bool is_enum = field->kind == FIELD_ENUM_ARRAY;
    double min, max;
    s_range (field, &min, &max);
    if (obj->type != MSGPACK_OBJECT_ARRAY
    ||  obj->via.array.size < min || obj->via.array.size > max)
        return funnel_error_set (err, FUNNEL_ERR_INVALID,
                                 "%s.%s: must be an array of %.0f-%.0f %s",
                                 path, field->name, min, max, is_enum? "values": "strings");
    for (uint32_t i = 0; i < obj->via.array.size; i++) {
        const msgpack_object *item = &obj->via.array.ptr [i];
        bool ok = is_enum? s_enum_has (field->values, item)
                : item->type == MSGPACK_OBJECT_STR && item->via.str.size <= FUNNEL_STR_MAX;
        if (ok)
            continue;
        char item_path [SCHEMA_PATH_MAX + 16];   //  Room for "[4294967295]"
        snprintf (item_path, sizeof item_path, "%s.%s[%u]", path, field->name, i);
        if (is_enum)
            return s_fail_enum (item_path, field->values, err);
        return funnel_error_set (err, FUNNEL_ERR_INVALID,
                                 "%s: must be a string of at most %d bytes",
                                 item_path, FUNNEL_STR_MAX);
    }
    return 0;
}

static int
    s_check_map (const funnel_field_t *fields, const msgpack_object *map,
                 const char *path, funnel_error_t *err);

//  Checks a nested map, whose path is only built now it is needed
static int
s_check_submap (const funnel_field_t *field, const msgpack_object *obj,
                const char *path, funnel_error_t *err)
{
    char map_path [SCHEMA_PATH_MAX];
    snprintf (map_path, sizeof map_path, "%s.%s", path, field->name);
    if (obj->type != MSGPACK_OBJECT_MAP)
        return funnel_error_set (err, FUNNEL_ERR_INVALID, "%s: must be a map", map_path);
    return field->fields? s_check_map (field->fields, obj, map_path, err): 0;
}

//  One present (non-nil) value against its field; path is the map's path
static int
s_check_value (const funnel_field_t *field, const msgpack_object *obj,
               const char *path, funnel_error_t *err)
{
    switch (field->kind) {
        case FIELD_STR:
            return s_check_str (field, obj, path, err);
        case FIELD_ID:
            if (obj->type != MSGPACK_OBJECT_STR
            ||  !event_codec_id_valid (obj->via.str.ptr, obj->via.str.size))
                return funnel_error_set (err, FUNNEL_ERR_INVALID,
                                         "%s.%s: must be 1-%d bytes of [A-Za-z0-9._:@+-]",
                                         path, field->name, FUNNEL_ID_MAX);
            return 0;
        case FIELD_INT:
            return s_check_int (field, obj, path, err);
        case FIELD_NUM:
            return s_check_num (field, obj, path, err);
        case FIELD_BOOL:
            if (obj->type != MSGPACK_OBJECT_BOOLEAN)
                return funnel_error_set (err, FUNNEL_ERR_INVALID,
                                         "%s.%s: must be true or false", path, field->name);
            return 0;
        case FIELD_ENUM:
            return s_check_enum (field, obj, path, err);
        case FIELD_STR_ARRAY:
        case FIELD_ENUM_ARRAY:
            return s_check_array (field, obj, path, err);
        case FIELD_MAP:
            return s_check_submap (field, obj, path, err);
        case FIELD_ANY:
            return 0;
    }
    return funnel_error_set (err, FUNNEL_ERR_INTERNAL, "%s.%s: unknown field kind",
                             path, field->name);
}

//  Finds each field's value in one pass over the map. A field given twice
//  is refused: decoders disagree on which copy wins.
static int
s_collect (const funnel_field_t *fields, size_t count, const msgpack_object *map,
           const msgpack_object **values, const char *path, funnel_error_t *err)
{
    bool seen [SCHEMA_FIELDS_MAX] = { false };
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *key = &map->via.map.ptr [i].key;
        if (key->type != MSGPACK_OBJECT_STR)
            continue;
        for (size_t f = 0; f < count; f++) {
            if (strlen (fields [f].name) != key->via.str.size
            ||  memcmp (fields [f].name, key->via.str.ptr, key->via.str.size))
                continue;
            if (seen [f])
                return funnel_error_set (err, FUNNEL_ERR_INVALID, "%s.%s: duplicate key",
                                         path, fields [f].name);
            seen [f] = true;
            values [f] = &map->via.map.ptr [i].val;
            break;
        }
    }
    return 0;
}

//  Checks a map against a table of fields, in the table's order. Recurses
//  for FIELD_MAP: the depth is bounded by the (static) schema tables, not
//  by the input.
static int
s_check_map (const funnel_field_t *fields, const msgpack_object *map,
             const char *path, funnel_error_t *err)
{
    if (map->type != MSGPACK_OBJECT_MAP)
        return funnel_error_set (err, FUNNEL_ERR_INVALID, "%s: must be a map", path);
    size_t count = 0;
    while (fields [count].name)
        count++;
    if (count > SCHEMA_FIELDS_MAX)
        return funnel_error_set (err, FUNNEL_ERR_INTERNAL,
                                 "%s: schema has more than %d fields", path, SCHEMA_FIELDS_MAX);
    const msgpack_object *values [SCHEMA_FIELDS_MAX] = { NULL };
    if (s_collect (fields, count, map, values, path, err))
        return -1;
    for (size_t f = 0; f < count; f++) {
        const funnel_field_t *field = &fields [f];
        //  nil means absent: fine if optional, missing if required
        const msgpack_object *value = values [f];
        if (value && value->type == MSGPACK_OBJECT_NIL)
            value = NULL;
        if (!value && field->required)
            return funnel_error_set (err, FUNNEL_ERR_INVALID, "%s.%s: required %s is missing",
                                     path, field->name, s_noun (field->kind));
        if (value && s_check_value (field, value, path, err))
            return -1;
    }
    return 0;
}

int
funnel_schema_check (const funnel_event_schema_t *schema,
                     const msgpack_object *data, funnel_error_t *err)
{
    funnel_error_clear (err);
    if (!data)
        return funnel_error_set (err, FUNNEL_ERR_INVALID, "data: required map is missing");
    if (!schema || !schema->fields)
        return data->type == MSGPACK_OBJECT_MAP
            ? 0: funnel_error_set (err, FUNNEL_ERR_INVALID, "data: must be a map");
    return s_check_map (schema->fields, data, "data", err);
}


//  --------------------------------------------------------------------------
//  Self-test: also the usage example. Assertions must stay on in Release.

#undef NDEBUG
#include <assert.h>
#include <stdarg.h>
#include <stdlib.h>

//  An example table, the way a service declares what it accepts
static const char *const s_channels [] = { "email", "social", "search", NULL };
static const char *const s_objections [] = { "price", "timing", "trust", NULL };

static const funnel_field_t s_audience_fields [] = {
    { .name = "age_min", .kind = FIELD_INT, .min = 0, .max = 150 },
    { .name = "age_max", .kind = FIELD_INT, .min = 0, .max = 150 },
    { .name = "regions", .kind = FIELD_STR_ARRAY },
    { .name = NULL }
};

static const funnel_field_t s_upsert_fields [] = {
    { .name = "campaign", .kind = FIELD_ID, .required = true },
    { .name = "name", .kind = FIELD_STR, .required = true },
    { .name = "channel", .kind = FIELD_ENUM, .required = true, .values = s_channels },
    { .name = "audience", .kind = FIELD_MAP, .fields = s_audience_fields },
    { .name = "budget", .kind = FIELD_INT },
    { .name = "delta", .kind = FIELD_INT, .min = -100, .max = 100 },
    { .name = "discount_pct", .kind = FIELD_NUM, .min = 0, .max = 100 },
    { .name = "weight", .kind = FIELD_NUM },
    { .name = "active", .kind = FIELD_BOOL },
    { .name = "objections", .kind = FIELD_ENUM_ARRAY, .values = s_objections },
    { .name = "tags", .kind = FIELD_STR_ARRAY, .max = 2 },
    { .name = "code", .kind = FIELD_STR, .min = 0, .max = 3 },
    { .name = "utm", .kind = FIELD_MAP },
    { .name = "extra", .kind = FIELD_ANY },
    { .name = NULL }
};

static const funnel_event_schema_t s_schemas [] = {
    { "campaign.upsert", s_upsert_fields },
    { NULL, NULL }
};

//  Packs a value from a tiny format: m<n> map, a<n> array (n one digit),
//  s str, i int (long long), d double, t true, f false, n nil.
static void
s_pack (msgpack_packer *pk, const char *format, ...)
{
    va_list args;
    va_start (args, format);
    for (const char *f = format; *f; f++) {
        switch (*f) {
            case 'm': msgpack_pack_map (pk, (size_t) (*++f - '0')); break;
            case 'a': msgpack_pack_array (pk, (size_t) (*++f - '0')); break;
            case 's': event_codec_pack_cstr (pk, va_arg (args, const char *)); break;
            case 'i': msgpack_pack_long_long (pk, va_arg (args, long long)); break;
            case 'd': msgpack_pack_double (pk, va_arg (args, double)); break;
            case 't': msgpack_pack_true (pk); break;
            case 'f': msgpack_pack_false (pk); break;
            case 'n': msgpack_pack_nil (pk); break;
            default:  break;            //  Spaces, for reading
        }
    }
    va_end (args);
}


//  Decodes sbuf and checks it: NULL expects success, else the message
static void
s_expect (msgpack_sbuffer *sbuf, const char *message)
{
    funnel_error_t err;
    event_codec_t *msg = event_codec_decode (sbuf->data, sbuf->size, &event_codec_limits_event, &err);
    assert (msg);
    const funnel_event_schema_t *schema = funnel_schema_find (s_schemas, "campaign.upsert");
    int rc = funnel_schema_check (schema, event_codec_root (msg), &err);
    if (!message)
        assert (rc == 0 && !err.code);
    else {
        if (rc != -1 || strcmp (err.message, message) != 0)
            fprintf (stderr, "\nexpected '%s', got '%s'\n", message, err.message);
        assert (rc == -1 && strcmp (err.code, FUNNEL_ERR_INVALID) == 0);
        assert (strcmp (err.message, message) == 0);
    }
    event_codec_destroy (&msg);
    msgpack_sbuffer_clear (sbuf);
}

//  Packs the base fields plus one more pair whose value is given by format
#define EXPECT(message, key, ...) do { \
        s_pack (&pk, "m4 ss ss ss", "campaign", "C-1", "name", "Spring", \
                "channel", "email"); \
        event_codec_pack_cstr (&pk, key); \
        s_pack (&pk, __VA_ARGS__); \
        s_expect (&sbuf, message); \
    } while (0)

static void
s_test_required (msgpack_packer *pk, msgpack_sbuffer *sbuf)
{
    s_pack (pk, "m3 ss ss ss", "campaign", "C-1", "name", "Spring", "channel", "email");
    s_expect (sbuf, NULL);
    s_pack (pk, "m2 ss ss", "campaign", "C-1", "name", "Spring");
    s_expect (sbuf, "data.channel: required string is missing");
    s_pack (pk, "m3 ss ss sn", "campaign", "C-1", "name", "Spring", "channel");
    s_expect (sbuf, "data.channel: required string is missing");
    s_pack (pk, "m3 ss ss ss", "campaign", "C 1", "name", "Spring", "channel", "email");
    s_expect (sbuf, "data.campaign: must be 1-64 bytes of [A-Za-z0-9._:@+-]");
    s_pack (pk, "m3 ss ss ss", "campaign", "C-1", "name", "", "channel", "email");
    s_expect (sbuf, "data.name: must be a string of 1-1024 bytes");
    s_pack (pk, "m3 ss ss ss", "campaign", "C-1", "name", "x", "channel", "fax");
    s_expect (sbuf, "data.channel: must be one of email, social, search");
    s_pack (pk, "m4 ss ss ss ss", "campaign", "C-1", "name", "x", "channel", "email",
            "name", "y");
    s_expect (sbuf, "data.name: duplicate key");
    s_pack (pk, "a0");
    s_expect (sbuf, "data: must be a map");
}

void
event_schema_test (bool verbose)
{
    if (verbose)
        printf ("\n * event_schema: ");
    assert (funnel_schema_find (s_schemas, "nope") == NULL);
    assert (funnel_schema_find (s_schemas, "campaign.upsert") == &s_schemas [0]);
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init (&sbuf);
    msgpack_packer pk;
    msgpack_packer_init (&pk, &sbuf, msgpack_sbuffer_write);
    s_test_required (&pk, &sbuf);

    //  Integers: exact, floats refused, default range 0..2^53
    EXPECT (NULL, "budget", "i", 0LL);
    EXPECT (NULL, "budget", "i", FUNNEL_INT_MAX);
    EXPECT ("data.budget: must be an integer from 0 to 9007199254740992", "budget", "i", -1LL);
    EXPECT ("data.budget: must be an integer from 0 to 9007199254740992",
            "budget", "i", FUNNEL_INT_MAX + 1);
    EXPECT ("data.budget: must be an integer", "budget", "d", 5.0);
    EXPECT ("data.budget: must be an integer", "budget", "s", "5");
    EXPECT (NULL, "budget", "n");
    EXPECT (NULL, "delta", "i", -100LL);
    EXPECT ("data.delta: must be an integer from -100 to 100", "delta", "i", 101LL);
    //  Numbers: ints and floats, finite, inclusive
    EXPECT (NULL, "discount_pct", "d", 100.0);
    EXPECT (NULL, "discount_pct", "i", 20LL);
    EXPECT (NULL, "discount_pct", "d", 12.5);
    EXPECT ("data.discount_pct: must be a number from 0 to 100", "discount_pct", "d", 100.5);
    EXPECT ("data.discount_pct: must be a finite number", "discount_pct", "d", NAN);
    EXPECT ("data.weight: must be a finite number", "weight", "d", INFINITY);
    EXPECT (NULL, "weight", "d", -1e300);
    EXPECT ("data.weight: must be a number", "weight", "t");
    //  Booleans, strings with an explicit range
    EXPECT (NULL, "active", "f");
    EXPECT ("data.active: must be true or false", "active", "i", 1LL);
    EXPECT (NULL, "code", "s", "");
    EXPECT ("data.code: must be a string of 0-3 bytes", "code", "s", "abcd");
    //  Arrays
    EXPECT (NULL, "objections", "a2 ss", "price", "price");
    EXPECT ("data.objections[1]: must be one of price, timing, trust",
            "objections", "a2 ss", "price", "cost");
    EXPECT (NULL, "tags", "a0");
    EXPECT ("data.tags: must be an array of 0-2 strings", "tags", "a3 sss", "a", "b", "c");
    EXPECT ("data.tags[0]: must be a string of at most 1024 bytes", "tags", "a1 i", 1LL);
    EXPECT ("data.tags: must be an array of 0-2 strings", "tags", "s", "a");
    //  Maps, nested paths; unknown keys are ignored
    EXPECT (NULL, "audience", "m3 si si sa1s", "age_min", 18LL, "age_max", 65LL,
            "regions", "EU");
    EXPECT ("data.audience.age_min: must be an integer from 0 to 150",
            "audience", "m1 si", "age_min", 151LL);
    EXPECT ("data.audience.regions[0]: must be a string of at most 1024 bytes",
            "audience", "m1 sa1n", "regions");
    EXPECT ("data.audience: must be a map", "audience", "a0");
    EXPECT (NULL, "utm", "m1 ss", "source", "x");
    EXPECT ("data.utm: must be a map", "utm", "s", "x");
    EXPECT (NULL, "extra", "a2 m0 d", 1.5);
    EXPECT (NULL, "unknown", "a2 m0 d", 1.5);
    msgpack_sbuffer_destroy (&sbuf);
    if (verbose)
        printf ("OK\n");
}
