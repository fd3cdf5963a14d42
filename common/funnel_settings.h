/*  funnel_settings — a service's numeric settings, described once in a table.

    One row per setting gives its path, default, range and help line; from
    the table this module reads and range-checks the topology file (with
    env and --set on top), packs the values into the service's RULES map
    and writes the --help lines, so a service never repeats that plumbing.

        static const funnel_setting_t s_settings [] = {
            { "history_max", 50, 1, 1000, true, "touches kept per contact" },
            { "upsell/nps", 9, 0, 10, true, "upsell needs NPS at least this" },
            { NULL }
        };
        //  RULES = { history_max = 50, upsell = { nps = 9 }, stage = ... }
        msgpack_pack_map (pk, funnel_settings_count (s_settings) + 1);
        if (funnel_settings_pack_entries (config, "campaign", s_settings, pk, NULL))
            return -1;
        event_codec_pack_cstr (pk, "stage");     //  The caller's own entries
        ...

    A path "group/name" packs as RULES.group.name: one level of nesting,
    and the rows of a group must be adjacent (asserted).
*/
#ifndef FUNNEL_SETTINGS_H_INCLUDED
#define FUNNEL_SETTINGS_H_INCLUDED

#include <msgpack.h>
#include <stdbool.h>
#include "funnel_config.h"

typedef struct {
    const char *path;           //  Under the section: "name" or "group/name"
    double default_value;
    double min, max;            //  Allowed, inclusive; -HUGE_VAL / HUGE_VAL: unbounded
    bool integer;               //  Read as an integer, packed as one
    const char *help;           //  One line for --help
} funnel_setting_t;             //  A table ends with { NULL }

//  Entries the table adds to the RULES map: one per ungrouped row, one per
//  group. The caller writes the map header with this plus its own entries.
size_t
    funnel_settings_count (const funnel_setting_t *table);

//  Reads every row as "<section>/<path>" (section is the service, or a
//  part of it such as "leads/rules"), checks its range and packs
//  funnel_settings_count (table) entries, in table order, into the map the
//  caller opened. If values is not NULL it gets each row's value (one slot
//  per row) for checks that span settings. On a malformed or out-of-range
//  value, logs an error naming the key, the value and the range, and
//  returns -1 with the map half-packed: the caller must give up on it.
int
    funnel_settings_pack_entries (funnel_config_t *config, const char *section,
                                  const funnel_setting_t *table, msgpack_packer *pk,
                                  double *values);

//  The value read for a row, by path (which must be in the table).
double
    funnel_settings_value (const funnel_setting_t *table, const double *values,
                           const char *path);

//  --help text: a "Settings (topology file section ...)" line, one line per
//  row, "  <section>/<path> = <default>  <min>..<max>  <help>" (the key as
//  --set takes it), then more (NULL: nothing), e.g. the caller's own
//  entries. Built on the first call for a table and kept, owned by this
//  module, for the life of the process; call it at start (not thread-safe).
const char *
    funnel_settings_help (const char *section, const funnel_setting_t *table,
                          const char *more);

void
    funnel_settings_test (bool verbose);

#endif
