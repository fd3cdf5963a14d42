/*  funnel_topology — see funnel_topology.h. */
#include <czmq.h>
#include "funnel_topology.h"
#include "funnel_log.h"
#include "funnel_state.h"
#include "event_codec.h"

#define PARTITIONS_DEFAULT  16
#define PARTITIONS_MAX      4096

struct _funnel_topology_t {
    int partitions;
    bool partitioned;
    int count;
    funnel_instance_t instances [FUNNEL_INSTANCES_MAX];
    int *owner;                     //  [partitions] -> instance index
};

int
funnel_topology_parse_owns (const char *text, int partitions, bool *owns)
{
    memset (owns, 0, (size_t) partitions * sizeof (bool));
    const char *p = text;
    if (!p || !*p)
        return -1;
    while (*p) {
        char *end;
        while (*p == ' ')
            p++;
        if (*p < '0' || *p > '9')
            return -1;
        long lo = strtol (p, &end, 10), hi = lo;
        p = end;
        if (*p == '-') {
            p++;
            if (*p < '0' || *p > '9')
                return -1;
            hi = strtol (p, &end, 10);
            p = end;
        }
        while (*p == ' ')
            p++;
        if (lo < 0 || hi < lo || hi >= partitions)
            return -1;
        for (long i = lo; i <= hi; i++)
            owns [i] = true;
        if (*p == ',') {
            p++;
            if (!*p)
                return -1;          //  "0-7,": a range is missing
        }
        else
        if (*p)
            return -1;
    }
    return 0;
}

funnel_topology_t *
funnel_topology_new (funnel_config_t *config, const char *svc)
{
    funnel_topology_t *self = (funnel_topology_t *) zmalloc (sizeof (funnel_topology_t));
    char path [512];
    int64_t partitions = PARTITIONS_DEFAULT;
    snprintf (path, sizeof path, "%s/partitions", svc);
    if (funnel_config_int (config, path, PARTITIONS_DEFAULT, &partitions) != 0
    ||  partitions < 1 || partitions > PARTITIONS_MAX) {
        log_error ("%s: must be 1..%d", path, PARTITIONS_MAX);
        free (self);
        return NULL;
    }
    self->partitions = (int) partitions;
    self->owner = (int *) malloc ((size_t) partitions * sizeof (int));
    for (int p = 0; p < self->partitions; p++)
        self->owner [p] = -1;
    const char *names [FUNNEL_INSTANCES_MAX + 1];
    snprintf (path, sizeof path, "%s/instances", svc);
    int count = funnel_config_children (config, path, names, FUNNEL_INSTANCES_MAX + 1);
    bool ok = true;
    if (count > FUNNEL_INSTANCES_MAX) {
        log_error ("%s: at most %d instances", path, FUNNEL_INSTANCES_MAX);
        free (self->owner);
        free (self);
        return NULL;
    }
    if (count == 0) {
        funnel_instance_t *only = &self->instances [0];
        only->name = "";
        only->api = funnel_config_endpoint (config, svc, "api");
        only->pub = funnel_config_endpoint (config, svc, "pub");
        only->owns = (bool *) malloc ((size_t) partitions * sizeof (bool));
        for (int p = 0; p < self->partitions; p++) {
            only->owns [p] = true;
            self->owner [p] = 0;
        }
        only->owned = self->partitions;
        self->count = 1;
        return self;
    }
    self->partitioned = true;
    for (int i = 0; i < count && ok; i++) {
        funnel_instance_t *inst = &self->instances [i];
        self->count = i + 1;
        inst->name = names [i];
        inst->owns = (bool *) zmalloc ((size_t) partitions * sizeof (bool));
        char base [256];
        snprintf (base, sizeof base, "%s/instances/%s", svc, names [i]);
        inst->api = funnel_config_endpoint (config, base, "api");
        inst->pub = funnel_config_endpoint (config, base, "pub");
        snprintf (path, sizeof path, "%s/owns", base);
        const char *owns = funnel_config_get (config, path, NULL);
        //  Its subscriber name upstream is <svc>@<name>, an id (wire.md)
        char subscriber [128];
        snprintf (subscriber, sizeof subscriber, "%s@%s", svc, inst->name);
        if (!event_codec_id_valid (subscriber, strlen (subscriber))) {
            log_error ("%s: an instance name is 1-%zu bytes of [A-Za-z0-9._:@+-]", base,
                       (size_t) 64 - strlen (svc) - 1);
            ok = false;
        }
        else
        if (!inst->api || !inst->pub || !*inst->api || !*inst->pub) {
            log_error ("%s/%s: required (an instance needs api and pub)", base,
                       !inst->api || !*inst->api ? "api" : "pub");
            ok = false;
        }
        else
        if (!owns) {
            log_error ("%s: required (partition ranges of 0..%d, e.g. \"0-7\" or "
                       "\"0-3,8-11\")", path, self->partitions - 1);
            ok = false;
        }
        else
        if (funnel_topology_parse_owns (owns, self->partitions, inst->owns) != 0) {
            log_error ("%s = '%s': expected partition ranges of 0..%d, e.g. \"0-7\" or "
                       "\"0-3,8-11\"", path, owns ? owns : "", self->partitions - 1);
            ok = false;
        }
        for (int p = 0; ok && p < self->partitions; p++)
            if (inst->owns [p]) {
                if (self->owner [p] >= 0) {
                    log_error ("%s/instances: partition %d is owned by both '%s' and '%s'", svc, p,
                               self->instances [self->owner [p]].name, inst->name);
                    ok = false;
                }
                self->owner [p] = i;
                inst->owned++;
            }
    }
    for (int p = 0; ok && p < self->partitions; p++)
        if (self->owner [p] < 0) {
            log_error ("%s/instances: partition %d is owned by no instance (0..%d must "
                       "all be owned)", svc, p, self->partitions - 1);
            ok = false;
        }
    if (!ok)
        funnel_topology_destroy (&self);
    return self;
}

void
funnel_topology_destroy (funnel_topology_t **self_p)
{
    if (*self_p) {
        funnel_topology_t *self = *self_p;
        for (int i = 0; i < self->count; i++)
            free (self->instances [i].owns);
        free (self->owner);
        free (self);
        *self_p = NULL;
    }
}

int funnel_topology_partitions (funnel_topology_t *self)   { return self->partitions; }
bool funnel_topology_partitioned (funnel_topology_t *self) { return self->partitioned; }
int funnel_topology_count (funnel_topology_t *self)        { return self->count; }

const funnel_instance_t *
funnel_topology_at (funnel_topology_t *self, int index)
{
    return index >= 0 && index < self->count ? &self->instances [index] : NULL;
}

const funnel_instance_t *
funnel_topology_find (funnel_topology_t *self, const char *name)
{
    if (!self->partitioned)
        return !name || !*name ? &self->instances [0] : NULL;
    for (int i = 0; name && i < self->count; i++)
        if (streq (self->instances [i].name, name))
            return &self->instances [i];
    return NULL;
}

const funnel_instance_t *
funnel_topology_owner (funnel_topology_t *self, int part)
{
    return &self->instances [funnel_topology_owner_index (self, part)];
}

int
funnel_topology_owner_index (funnel_topology_t *self, int part)
{
    if (part < 0 || part >= self->partitions)
        part = 0;
    return self->owner [part];
}

//  The fields an event of each service is routed by, in order.
static const struct {
    const char *svc;
    const char *fields [4];
} s_keys [] = {
    { "campaign",  { "campaign", "lead", NULL } },
    { "leads",     { "lead", "contact", NULL } },
    { "sales",     { "deal", "lead", "customer", NULL } },
    { "retention", { "customer", "lead", NULL } },
    //  funnel-testsvc's stand-ins
    { "alpha",     { "key", NULL } },
    { "beta",      { "key", NULL } },
};

const char *
funnel_topology_event_key (const char *svc, const msgpack_object *data, char *buf,
                           size_t size)
{
    for (size_t i = 0; i < sizeof s_keys / sizeof s_keys [0]; i++) {
        if (!streq (s_keys [i].svc, svc))
            continue;
        for (const char *const *f = s_keys [i].fields; *f; f++)
            if (event_codec_obj_strcpy (event_codec_map_get (data, *f), buf, size) && *buf)
                return buf;
    }
    return NULL;
}

int
funnel_topology_event_part (const char *svc, const msgpack_object *data, int partitions)
{
    char key [FUNNEL_ID_MAX * 16 + 1];
    const char *id = data ? funnel_topology_event_key (svc, data, key, sizeof key) : NULL;
    return id ? funnel_partition_of (id, partitions) : 0;
}

#undef NDEBUG
#include <assert.h>

void
funnel_topology_test (bool verbose)
{
    (void) verbose;
    bool owns [16];
    assert (funnel_topology_parse_owns ("0-3,8-11", 16, owns) == 0);
    assert (owns [0] && owns [3] && !owns [4] && owns [8] && owns [11] && !owns [12]);
    assert (funnel_topology_parse_owns ("5", 16, owns) == 0 && owns [5] && !owns [4]);
    assert (funnel_topology_parse_owns ("0-16", 16, owns) == -1);
    assert (funnel_topology_parse_owns ("3-1", 16, owns) == -1);
    assert (funnel_topology_parse_owns ("a", 16, owns) == -1);
    assert (funnel_topology_parse_owns ("", 16, owns) == -1);
    assert (funnel_topology_parse_owns ("0-7,", 16, owns) == -1);
    assert (funnel_topology_parse_owns ("0-7,,8", 16, owns) == -1);
    assert (funnel_topology_parse_owns ("0 - 7", 16, owns) == -1);
    assert (funnel_topology_parse_owns (" 0-7 , 9", 16, owns) == 0 && owns [9] && !owns [8]);

    funnel_config_t *config = funnel_config_from_text (
        "leads\n"
        "    partitions = 8\n"
        "    instances\n"
        "        a\n"
        "            api = \"tcp://127.0.0.1:9001\"\n"
        "            pub = \"tcp://127.0.0.1:9002\"\n"
        "            owns = \"0-3\"\n"
        "        b\n"
        "            api = \"tcp://127.0.0.1:9003\"\n"
        "            pub = \"tcp://127.0.0.1:9004\"\n"
        "            owns = \"4-7\"\n", "leads");
    assert (config);
    funnel_topology_t *t = funnel_topology_new (config, "leads");
    assert (t && funnel_topology_partitioned (t) && funnel_topology_count (t) == 2);
    assert (funnel_topology_partitions (t) == 8);
    assert (streq (funnel_topology_owner (t, 5)->name, "b"));
    assert (streq (funnel_topology_find (t, "a")->api, "tcp://127.0.0.1:9001"));
    assert (funnel_topology_find (t, "c") == NULL);
    funnel_topology_destroy (&t);
    funnel_config_destroy (&config);

    //  A partition owned twice, or by nobody: refused
    config = funnel_config_from_text (
        "leads\n"
        "    partitions = 4\n"
        "    instances\n"
        "        a\n"
        "            api = \"tcp://127.0.0.1:9001\"\n"
        "            pub = \"tcp://127.0.0.1:9002\"\n"
        "            owns = \"0-2\"\n", "leads");
    assert (config && funnel_topology_new (config, "leads") == NULL);
    funnel_config_destroy (&config);

    //  An instance without pub, or with a name no subscriber id can carry: refused
    config = funnel_config_from_text (
        "leads\n"
        "    instances\n"
        "        a\n"
        "            api = \"tcp://127.0.0.1:9001\"\n"
        "            owns = \"0-15\"\n", "leads");
    assert (config && funnel_topology_new (config, "leads") == NULL);
    funnel_config_destroy (&config);
    config = funnel_config_from_text (
        "leads\n"
        "    instances\n"
        "        aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n"
        "            api = \"tcp://127.0.0.1:9001\"\n"
        "            pub = \"tcp://127.0.0.1:9002\"\n"
        "            owns = \"0-15\"\n", "leads");
    assert (config && funnel_topology_new (config, "leads") == NULL);
    funnel_config_destroy (&config);

    //  No instances: one owns all, at the section's endpoints
    config = funnel_config_from_text ("leads\n    api = \"tcp://127.0.0.1:9100\"\n", "leads");
    t = funnel_topology_new (config, "leads");
    assert (t && !funnel_topology_partitioned (t));
    assert (streq (funnel_topology_owner (t, 9)->api, "tcp://127.0.0.1:9100"));
    funnel_topology_destroy (&t);
    funnel_config_destroy (&config);
}
