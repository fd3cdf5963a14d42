/*  funnel_settings — a service's numeric settings, described once in a table.

    Rows are read and packed in one pass: an integer row packs the int64
    it read, so a large integer reaches RULES exactly, not via a double.
*/
#include "funnel_settings.h"
#include "event_codec.h"
#include "funnel_log.h"

#undef NDEBUG                   //  The self-test needs its asserts
#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#define KEY_MAX     256         //  "<section>/<path>"
#define RANGE_MAX   64          //  "<min>..<max>"

//  Length of the group part of a path ("upsell/nps" -> 6), 0 if none.
static size_t
s_group_len (const char *path)
{
    const char *slash = strchr (path, '/');
    assert (!slash || !strchr (slash + 1, '/'));    //  One level only
    return slash ? (size_t) (slash - path) : 0;
}

static bool
s_same_group (const funnel_setting_t *a, const funnel_setting_t *b)
{
    size_t len = s_group_len (a->path);
    return len && len == s_group_len (b->path) && memcmp (a->path, b->path, len) == 0;
}

//  True if row i is the first of its group.
static bool
s_opens_group (const funnel_setting_t *table, size_t i)
{
    return s_group_len (table [i].path) && (i == 0 || !s_same_group (&table [i - 1], &table [i]));
}

static void
s_key (char *key, const char *section, const funnel_setting_t *row)
{
    int len = snprintf (key, KEY_MAX, "%s/%s", section, row->path);
    assert (len > 0 && len < KEY_MAX);
}

//  %.15g: exact for every default and bound a table holds (1e13, 1e-09)
static void
s_range (char *range, const funnel_setting_t *row)
{
    snprintf (range, RANGE_MAX, "%.15g..%.15g", row->min, row->max);
}

size_t
funnel_settings_count (const funnel_setting_t *table)
{
    size_t entries = 0;
    for (size_t i = 0; table [i].path; i++) {
        if (!s_group_len (table [i].path))
            entries++;
        else
        if (s_opens_group (table, i)) {
            //  A group split in two would pack the same key twice
            for (size_t earlier = 0; earlier < i; earlier++)
                assert (!s_same_group (&table [earlier], &table [i]));
            entries++;
        }
    }
    return entries;
}

int
funnel_settings_pack_entries (funnel_config_t *config, const char *section,
                              const funnel_setting_t *table, msgpack_packer *pk,
                              double *values)
{
    for (size_t i = 0; table [i].path; i++) {
        const funnel_setting_t *row = &table [i];
        char key [KEY_MAX];
        s_key (key, section, row);
        double value;
        int64_t integer = 0;
        if (row->integer) {
            if (funnel_config_int (config, key, (int64_t) row->default_value, &integer))
                return -1;
            value = (double) integer;
        }
        else
        if (funnel_config_num (config, key, row->default_value, &value))
            return -1;
        if (value < row->min || value > row->max) {
            char range [RANGE_MAX];
            s_range (range, row);
            log_error ("config %s: %.15g is out of range %s", key, value, range);
            return -1;
        }
        if (values)
            values [i] = value;

        size_t group = s_group_len (row->path);
        if (s_opens_group (table, i)) {
            size_t members = 1;
            while (table [i + members].path && s_same_group (row, &table [i + members]))
                members++;
            msgpack_pack_str (pk, group);
            msgpack_pack_str_body (pk, row->path, group);
            msgpack_pack_map (pk, members);
        }
        event_codec_pack_cstr (pk, row->path + (group ? group + 1 : 0));
        if (row->integer)
            msgpack_pack_int64 (pk, integer);
        else
            msgpack_pack_double (pk, value);
    }
    return 0;
}

double
funnel_settings_value (const funnel_setting_t *table, const double *values,
                       const char *path)
{
    for (size_t i = 0; table [i].path; i++)
        if (strcmp (table [i].path, path) == 0)
            return values [i];
    assert (!"funnel_settings_value: path not in the table");
    return 0;
}

//  "<section>/<path> = <default>" and the range: the first two columns.
static void
s_describe (const char *section, const funnel_setting_t *row, char *left, char *range)
{
    char key [KEY_MAX];
    s_key (key, section, row);
    snprintf (left, KEY_MAX + 32, "%s = %.15g", key, row->default_value);
    s_range (range, row);
}

//  The texts built so far: one per table, reachable until exit
#define HELP_TABLES_MAX 16
static struct {
    const funnel_setting_t *table;
    char *text;
} s_help [HELP_TABLES_MAX];

const char *
funnel_settings_help (const char *section, const funnel_setting_t *table, const char *more)
{
    size_t slot = 0;
    while (slot < HELP_TABLES_MAX && s_help [slot].table && s_help [slot].table != table)
        slot++;
    assert (slot < HELP_TABLES_MAX);
    if (s_help [slot].table)
        return s_help [slot].text;

    size_t size = 0;
    FILE *out = open_memstream (&s_help [slot].text, &size);
    assert (out);
    fprintf (out, "Settings (topology file section `%s`, or --set %s/KEY=VALUE):\n",
             section, section);
    //  Two passes so the columns line up
    int left_width = 0, range_width = 0;
    char left [KEY_MAX + 32], range [RANGE_MAX];
    for (const funnel_setting_t *row = table; row->path; row++) {
        s_describe (section, row, left, range);
        if ((int) strlen (left) > left_width)
            left_width = (int) strlen (left);
        if ((int) strlen (range) > range_width)
            range_width = (int) strlen (range);
    }
    for (const funnel_setting_t *row = table; row->path; row++) {
        s_describe (section, row, left, range);
        fprintf (out, "  %-*s  %-*s  %s\n", left_width, left, range_width, range, row->help);
    }
    fputs (more ? more : "", out);
    fclose (out);
    assert (s_help [slot].text);
    s_help [slot].table = table;
    return s_help [slot].text;
}

//  --------------------------------------------------------------------
//  Self-test

static const funnel_setting_t s_test_table [] = {
    { "count", 5, 1, 10, true, "an integer at the top" },
    { "g/ratio", 1.5, 0, 2, false, "first of group g" },
    { "g/limit", 100, 1, 1e16, true, "second of group g" },
    { "scale", 0.25, -HUGE_VAL, HUGE_VAL, false, "unbounded" },
    { "h/only", 3, 0, 3, false, "a group of one" },
    { NULL }
};

//  Packs the test table plus one entry of its own, as a whole map, for
//  the ZPL text; 0 with the map unpacked, or -1.
static int
s_test_pack (const char *zpl, msgpack_sbuffer *sbuf, msgpack_unpacked *unpacked,
             double *values)
{
    funnel_config_t *config = funnel_config_from_text (zpl, "svc");
    assert (config);
    msgpack_sbuffer_clear (sbuf);
    msgpack_packer pk;
    msgpack_packer_init (&pk, sbuf, msgpack_sbuffer_write);
    msgpack_pack_map (&pk, funnel_settings_count (s_test_table) + 1);
    int rc = funnel_settings_pack_entries (config, "svc", s_test_table, &pk, values);
    funnel_config_destroy (&config);
    if (rc)
        return rc;
    event_codec_pack_cstr (&pk, "extra");    //  A caller's own entry, same map
    event_codec_pack_cstr (&pk, "yes");
    size_t offset = 0;
    assert (msgpack_unpack_next (unpacked, sbuf->data, sbuf->size, &offset)
            == MSGPACK_UNPACK_SUCCESS);
    assert (offset == sbuf->size);      //  The header count was right
    return 0;
}

void
funnel_settings_test (bool verbose)
{
    if (verbose)
        printf ("\n");
    assert (funnel_settings_count (s_test_table) == 4);
    static const funnel_setting_t empty [] = { { NULL } };
    assert (funnel_settings_count (empty) == 0);

    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init (&sbuf);
    msgpack_unpacked unpacked;
    msgpack_unpacked_init (&unpacked);
    double values [5];

    //  Defaults: types, nesting, table order inside a group
    assert (s_test_pack ("svc\n    api = \"tcp://*:1\"\n", &sbuf, &unpacked, values) == 0);
    const msgpack_object *map = &unpacked.data;
    assert (map->type == MSGPACK_OBJECT_MAP && map->via.map.size == 5);
    const msgpack_object *count = event_codec_map_get (map, "count");
    assert (count && count->type == MSGPACK_OBJECT_POSITIVE_INTEGER && count->via.u64 == 5);
    const msgpack_object *g = event_codec_map_get (map, "g");
    assert (g && g->type == MSGPACK_OBJECT_MAP && g->via.map.size == 2);
    assert (g->via.map.ptr [0].key.via.str.size == 5);              //  "ratio" first
    const msgpack_object *ratio = event_codec_map_get (g, "ratio");
    assert (ratio && ratio->type == MSGPACK_OBJECT_FLOAT64 && ratio->via.f64 == 1.5);
    const msgpack_object *limit = event_codec_map_get (g, "limit");
    assert (limit && limit->type == MSGPACK_OBJECT_POSITIVE_INTEGER && limit->via.u64 == 100);
    assert (!event_codec_map_get (map, "ratio") && !event_codec_map_get (map, "g/ratio"));
    const msgpack_object *h = event_codec_map_get (map, "h");
    assert (h && h->type == MSGPACK_OBJECT_MAP && h->via.map.size == 1);
    assert (event_codec_map_get (h, "only")->via.f64 == 3);
    assert (event_codec_map_get (map, "scale")->via.f64 == 0.25);
    assert (event_codec_map_get (map, "extra")->type == MSGPACK_OBJECT_STR);
    assert (values [0] == 5 && values [1] == 1.5 && values [2] == 100 && values [4] == 3);
    assert (funnel_settings_value (s_test_table, values, "g/limit") == 100);

    //  Overrides; an integer packs exactly, beyond a double's 53 bits
    assert (s_test_pack ("svc\n    count = 10\n    scale = -7e30\n"
                         "    g\n        ratio = 0\n        limit = 9007199254740993\n",
                         &sbuf, &unpacked, NULL) == 0);
    map = &unpacked.data;
    assert (event_codec_map_get (map, "count")->via.u64 == 10);
    assert (event_codec_map_get (map, "scale")->via.f64 == -7e30);
    g = event_codec_map_get (map, "g");
    assert (event_codec_map_get (g, "ratio")->via.f64 == 0);
    assert (event_codec_map_get (g, "limit")->via.u64 == 9007199254740993ULL);

    //  Bad values: out of range (both ends, inclusive bounds), not an
    //  integer, not a number
    const char *bad [] = {
        "svc\n    count = 0\n", "svc\n    count = 11\n", "svc\n    count = 2.5\n",
        "svc\n    g\n        ratio = 2.01\n", "svc\n    g\n        ratio = x\n",
        "svc\n    h\n        only = -0.5\n", "svc\n    g\n        limit = 0\n", NULL
    };
    for (const char **zpl = bad; *zpl; zpl++)
        assert (s_test_pack (*zpl, &sbuf, &unpacked, NULL) == -1);
    assert (s_test_pack ("svc\n    count = 1\n    h\n        only = 3\n", &sbuf, &unpacked, NULL) == 0);

    //  Help: every key as --set takes it, with default and range, aligned;
    //  built once per table
    const char *help = funnel_settings_help ("svc", s_test_table, "  more\n");
    if (verbose)
        printf ("%s", help);
    const char *lines [] = {
        "section `svc`, or --set svc/KEY=VALUE):\n  svc/count = 5      1..10  ",
        "\n  svc/g/limit = 100  1..1e+16   second of group g\n",
        "\n  svc/scale = 0.25   -inf..inf  unbounded\n",
        "\n  svc/h/only = 3     0..3       a group of one\n  more\n", NULL
    };
    for (const char **line = lines; *line; line++)
        assert (strstr (help, *line));
    assert (funnel_settings_help ("other", s_test_table, NULL) == help);

    msgpack_unpacked_destroy (&unpacked);
    msgpack_sbuffer_destroy (&sbuf);
}
