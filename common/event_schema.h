/*  event_schema — declarative checks of an event's data fields.

    Each service declares, per accepted event type, a table of fields; the
    runtime checks shapes and types here, before any state is read, so a
    malformed event is `invalid` (naming the field) even if it also names an
    unknown entity (proto/wire.md, order of checks).
*/
#ifndef EVENT_SCHEMA_H_INCLUDED
#define EVENT_SCHEMA_H_INCLUDED

#include <msgpack.h>
#include <stdbool.h>
#include "funnel_error.h"

typedef enum {
    FIELD_STR,          //  str, length min..max bytes (max 0 = 1024)
    FIELD_ID,           //  str of the id charset, 1–64 bytes (entity ids)
    FIELD_INT,          //  integer min..max (inclusive)
    FIELD_NUM,          //  integer or float min..max
    FIELD_BOOL,
    FIELD_ENUM,         //  str, one of values
    FIELD_STR_ARRAY,    //  array (0..max entries, max 0 = 256) of str ≤ 1 KiB
    FIELD_ENUM_ARRAY,   //  array of distinct-or-not values from values
    FIELD_MAP,          //  map; checked against fields when non-NULL
    FIELD_ANY           //  anything (already limit-checked)
} funnel_field_kind_t;

typedef struct funnel_field_s {
    const char *name;               //  NULL ends a table
    funnel_field_kind_t kind;
    bool required;
    double min, max;                //  Range; both 0 = kind's default
    const char *const *values;      //  NULL-terminated, for enums
    const struct funnel_field_s *fields;   //  For FIELD_MAP
} funnel_field_t;

//  Table rows, with designated initializers (-Wextra wants every field of a
//  positional initializer):
//    FIELD_REQ ("campaign", FIELD_ID), FIELD_OPT ("budget", FIELD_INT),
//    FIELD_RANGE ("nps", FIELD_INT, true, 0, 10),
//    FIELD_ONE_OF ("channel", FIELD_ENUM, true, s_channels),
//    FIELD_NESTED ("audience", false, s_audience_fields), FIELD_END
#define FIELD_REQ(n, k)     { .name = (n), .kind = (k), .required = true }
#define FIELD_OPT(n, k)     { .name = (n), .kind = (k), .required = false }
#define FIELD_RANGE(n, k, req, lo, hi) \
    { .name = (n), .kind = (k), .required = (req), .min = (lo), .max = (hi) }
#define FIELD_ONE_OF(n, k, req, vals) \
    { .name = (n), .kind = (k), .required = (req), .values = (vals) }
#define FIELD_NESTED(n, req, flds) \
    { .name = (n), .kind = FIELD_MAP, .required = (req), .fields = (flds) }
#define FIELD_END           { .name = NULL }

typedef struct {
    const char *type;               //  NULL ends a table
    const funnel_field_t *fields;
} funnel_event_schema_t;

//  Finds the schema for type in a NULL-terminated table; NULL if none.
const funnel_event_schema_t *
    funnel_schema_find (const funnel_event_schema_t *table, const char *type);

//  Checks data (must be a map) against the schema's fields. Unknown keys are
//  ignored. On failure: invalid, message "data.<path>: <rule>", e.g.
//  "data.channel: must be one of email, social, ..." or
//  "data.amount: required integer is missing".
int
    funnel_schema_check (const funnel_event_schema_t *schema,
                         const msgpack_object *data, funnel_error_t *err);

void
    event_schema_test (bool verbose);

#endif
