#include "bench_redis.h"
#include "redis_store.h"

struct _bench_redis_t {
    redis_store_t *stores [REDIS_URL_NODES_MAX];    //  One, or each cluster node's
    int count;
};

bench_redis_t *
bench_redis_new (const char *url)
{
    redis_url_t parsed;
    funnel_error_t err;
    if (redis_url_parse (url, &parsed, &err) != 0) {
        fprintf (stderr, "funnel-bench-funnel: redis url: %s\n", err.message);
        return NULL;
    }
    bench_redis_t *self = (bench_redis_t *) zmalloc (sizeof (bench_redis_t));
    int nodes = parsed.mode == REDIS_MODE_CLUSTER ? parsed.node_count : 1;
    for (int i = 0; i < nodes; i++) {
        redis_url_t one = parsed;
        if (parsed.mode == REDIS_MODE_CLUSTER)
            redis_url_single (&parsed, parsed.nodes [i].host, parsed.nodes [i].port, &one);
        redis_store_t *store = redis_store_new (&one);
        if (store)
            self->stores [self->count++] = store;
        if (!store || redis_store_connect (store) != 0) {
            fprintf (stderr, "funnel-bench-funnel: cannot connect to Redis at %s\n", url);
            bench_redis_destroy (&self);
            break;
        }
    }
    memset (&parsed, 0, sizeof parsed);
    return self;
}

void
bench_redis_destroy (bench_redis_t **self_p)
{
    assert (self_p);
    bench_redis_t *self = *self_p;
    if (self) {
        for (int i = 0; i < self->count; i++)
            redis_store_destroy (&self->stores [i]);
        free (self);
        *self_p = NULL;
    }
}

//  INFO <section> of one node as a string the caller frees; NULL on error.
static char *
s_info (redis_store_t *store, const char *section)
{
    const char *argv [] = { "INFO", section };
    size_t argvlen [] = { 4, strlen (section) };
    redisReply *reply = redis_store_command (store, 2, argv, argvlen);
    char *text = NULL;
    if (reply && reply->type == REDIS_REPLY_STRING)
        text = strdup (reply->str);
    if (reply)
        freeReplyObject (reply);
    return text;
}

//  The field in one node's INFO; -1 if absent.
static double
s_info_field (redis_store_t *store, const char *section, const char *field)
{
    char *text = s_info (store, section);
    double value = -1;
    size_t length = strlen (field);
    for (char *line = text; line && *line; ) {
        char *end = strchr (line, '\n');
        if (strncmp (line, field, length) == 0 && line [length] == ':') {
            value = strtod (line + length + 1, NULL);
            break;
        }
        line = end ? end + 1 : NULL;
    }
    free (text);
    return value;
}

double
bench_redis_info (bench_redis_t *self, const char *section, const char *field)
{
    double sum = -1;
    for (int i = 0; i < self->count; i++) {
        double value = s_info_field (self->stores [i], section, field);
        if (value >= 0)
            sum = (sum < 0 ? 0 : sum) + value;
    }
    return sum;
}

//  The value of "<name>=" in a latencystats line; -1 if absent.
static double
s_pct_field (const char *line, const char *end, const char *name)
{
    size_t length = strlen (name);
    for (const char *at = line; at && at < end; at = strchr (at, ',')) {
        if (*at == ',' || *at == ':')
            at++;
        if (strncmp (at, name, length) == 0 && at [length] == '=')
            return strtod (at + length + 1, NULL);
    }
    return -1;
}

//  Folds one node's INFO latencystats text into pct (each the higher);
//  0 if it reports command, -1 if not.
static int
s_latency_parse (const char *text, const char *command, bench_latency_pct_t *pct)
{
    //  latency_percentiles_usec_<command>:p50=...,p99=...,p99.9=...
    char prefix [96];
    snprintf (prefix, sizeof prefix, "latency_percentiles_usec_%s:", command);
    size_t length = strlen (prefix);
    for (const char *line = text; line && *line; ) {
        const char *end = strchr (line, '\n');
        if (strncmp (line, prefix, length) == 0) {
            const char *stop = end ? end : line + strlen (line);
            pct->p50 = MAX (pct->p50, s_pct_field (line + length - 1, stop, "p50"));
            pct->p99 = MAX (pct->p99, s_pct_field (line + length - 1, stop, "p99"));
            pct->p999 = MAX (pct->p999, s_pct_field (line + length - 1, stop, "p99.9"));
            return 0;
        }
        line = end ? end + 1 : NULL;
    }
    return -1;
}

int
bench_redis_latency (bench_redis_t *self, const char *command, bench_latency_pct_t *pct)
{
    int rc = -1;
    pct->p50 = pct->p99 = pct->p999 = 0;
    for (int i = 0; i < self->count; i++) {
        char *text = s_info (self->stores [i], "latencystats");
        if (text && s_latency_parse (text, command, pct) == 0)
            rc = 0;
        free (text);
    }
    return rc;
}

void
bench_redis_reset_stats (bench_redis_t *self)
{
    for (int i = 0; i < self->count; i++) {
        const char *argv [] = { "CONFIG", "RESETSTAT" };
        redisReply *reply = redis_store_command (self->stores [i], 2, argv, NULL);
        if (reply)
            freeReplyObject (reply);
    }
}

//  Adds one node's INFO commandstats to stats [count..]; the new count.
static int
s_cmdstats_add (redis_store_t *store, bench_cmdstat_t *stats, int count, int max)
{
    char *text = s_info (store, "commandstats");
    if (!text)
        return -1;
    //  cmdstat_<name>:calls=N,usec=N,usec_per_call=...
    for (char *line = text; line && *line && count < max; ) {
        char *end = strchr (line, '\n');
        if (strncmp (line, "cmdstat_", 8) == 0) {
            char *colon = strchr (line, ':');
            char *calls = strstr (line, "calls=");
            char *usec = strstr (line, "usec=");
            if (colon && calls && usec && (size_t) (colon - line - 8) < sizeof stats->name) {
                char name [sizeof stats->name];
                memcpy (name, line + 8, colon - line - 8);
                name [colon - line - 8] = 0;
                int i = 0;
                while (i < count && !streq (stats [i].name, name))
                    i++;
                if (i == count) {
                    memset (&stats [count], 0, sizeof stats [count]);
                    snprintf (stats [count++].name, sizeof stats->name, "%s", name);
                }
                stats [i].calls += strtoll (calls + 6, NULL, 10);
                stats [i].usec += strtoll (usec + 5, NULL, 10);
            }
        }
        line = end ? end + 1 : NULL;
    }
    free (text);
    return count;
}

int
bench_redis_cmdstats (bench_redis_t *self, bench_cmdstat_t *stats, int max)
{
    int count = 0;
    for (int i = 0; i < self->count && count >= 0; i++)
        count = s_cmdstats_add (self->stores [i], stats, count, max);
    return count;
}

static int
s_by_usec (const void *a, const void *b)
{
    int64_t ua = ((const bench_cmdstat_t *) a)->usec, ub = ((const bench_cmdstat_t *) b)->usec;
    return ua < ub ? 1 : ua > ub ? -1 : 0;
}

int
bench_cmdstats_delta (const bench_cmdstat_t *before, int nbefore,
                      const bench_cmdstat_t *after, int nafter,
                      bench_cmdstat_t *delta, int max)
{
    int count = 0;
    for (int i = 0; i < nafter && count < max; i++) {
        bench_cmdstat_t stat = after [i];
        for (int j = 0; j < nbefore; j++)
            if (streq (before [j].name, stat.name)) {
                stat.calls -= before [j].calls;
                stat.usec -= before [j].usec;
            }
        if (stat.calls > 0)
            delta [count++] = stat;
    }
    qsort (delta, count, sizeof delta [0], s_by_usec);
    return count;
}


//  --------------------------------------------------------------------------
//  Key classification

static const char *s_outbox [] = { "ob", "ob_first", "seq", "outbox", NULL };
static const char *s_dedup [] = { "ids", "dedup", "dd", "id", NULL };
static const char *s_runtime [] = {
    "stats", "ckpt", "lease", "fence", "subs", "sub", "counters", "meta", "ob_size",
    "timers",
    //  On a Redis Cluster: batches spanning slots, and each partition's
    //  last applied one (proto/wire.md, "Cluster")
    "intents", "applied", NULL
};
//  The stages' keys (proto/<service>.md, "Redis keys")
static const char *s_state [] = {
    //  campaign
    "cmp", "cmpn", "bkt", "bktn", "num", "c", "wbz", "wb", "tot",
    //  leads
    "l", "p", "em", "al", "rep",
    //  sales (g: its global hashes, g:bystage...)
    "d", "dl", "dr", "ld", "g",
    //  retention (c: customers, as campaign's contacts)
    "o", "tk",
    NULL
};

static bool
s_in (const char *token, const char **list)
{
    for (int i = 0; list [i]; i++)
        if (streq (token, list [i]))
            return true;
    return false;
}

static void
s_copy (char *dest, size_t size, const char *src, size_t length)
{
    if (length >= size)
        length = size - 1;
    //  Names go into a table and a JSON string: printable ASCII only
    for (size_t i = 0; i < length; i++) {
        unsigned char c = (unsigned char) src [i];
        dest [i] = (c < 0x20 || c > 0x7e || c == '"' || c == '\\') ? '?' : (char) c;
    }
    dest [length] = 0;
}

const char *
bench_key_classify (const char *key, size_t length,
                    char *svc, size_t svc_size, char *token, size_t token_size)
{
    const char *end = key + length;
    const char *rest = key;
    bool tagged = false;
    if (length > 8 && memcmp (key, "{funnel:", 8) == 0) {
        const char *close = memchr (key, '}', length);
        if (close) {
            const char *name = key + 8;
            const char *stop = memchr (name, ':', close - name);
            s_copy (svc, svc_size, name, (stop ? stop : close) - name);
            rest = close + 1;
            if (rest < end && *rest == ':')
                rest++;
            tagged = true;
        }
    }
    if (!tagged)
        s_copy (svc, svc_size, "other", 5);
    const char *colon = memchr (rest, ':', end - rest);
    size_t token_length = (colon ? colon : end) - rest;
    s_copy (token, token_size, rest, token_length);
    if (!tagged)
        return "other";
    if (s_in (token, s_outbox))
        return "outbox";
    if (s_in (token, s_dedup))
        return "dedup";
    if (s_in (token, s_runtime))
        return "runtime";
    if (s_in (token, s_state))
        return "state";
    return "other";
}


//  --------------------------------------------------------------------------
//  Memory census

static int
s_by_svc_bytes (const void *a, const void *b)
{
    const bench_memrow_t *ra = (const bench_memrow_t *) a, *rb = (const bench_memrow_t *) b;
    int order = strcmp (ra->svc, rb->svc);
    if (order)
        return order;
    return ra->bytes < rb->bytes ? 1 : ra->bytes > rb->bytes ? -1 : 0;
}

//  Adds one key's bytes to its row.
static void
s_account (bench_memrow_t *rows, int max, int *count, const char *key, size_t length,
           int64_t bytes, int every)
{
    char svc [48], token [48];
    const char *kind = bench_key_classify (key, length, svc, sizeof svc, token, sizeof token);
    int i = 0;
    while (i < *count && !(streq (rows [i].svc, svc) && streq (rows [i].token, token)))
        i++;
    if (i == *count) {
        if (*count == max)
            i = max - 1;        //  Past the table: pooled in the last row
        else {
            (*count)++;
            memset (&rows [i], 0, sizeof rows [i]);
            snprintf (rows [i].svc, sizeof rows [i].svc, "%s", svc);
            snprintf (rows [i].token, sizeof rows [i].token, "%s", token);
            rows [i].kind = kind;
        }
    }
    rows [i].keys += every;
    rows [i].bytes += bytes * every;
}

//  One node's keys into rows (count and seen carried across nodes).
static int
s_memory_node (redis_store_t *store, int every, bench_memrow_t *rows, int max,
               int *count_p, int64_t *seen_p)
{
    int count = *count_p;
    int64_t seen = *seen_p;
    char cursor [32] = "0";
    do {
        const char *argv [] = { "SCAN", cursor, "COUNT", "1000" };
        size_t argvlen [] = { 4, strlen (cursor), 5, 4 };
        redisReply *reply = redis_store_command (store, 4, argv, argvlen);
        if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != 2) {
            if (reply)
                freeReplyObject (reply);
            return -1;
        }
        snprintf (cursor, sizeof cursor, "%s", reply->element [0]->str);
        redisReply *keys = reply->element [1];
        redisContext *redis = redis_store_context (store);
        size_t *picked = (size_t *) calloc (keys->elements + 1, sizeof (size_t));
        size_t sent = 0;
        for (size_t i = 0; i < keys->elements; i++)
            if (seen++ % every == 0) {
                const char *margv [] = { "MEMORY", "USAGE", keys->element [i]->str, "SAMPLES", "0" };
                size_t margvlen [] = { 6, 5, keys->element [i]->len, 7, 1 };
                redisAppendCommandArgv (redis, 5, margv, margvlen);
                picked [sent++] = i;
            }
        int rc = 0;
        for (size_t i = 0; i < sent; i++) {
            redisReply *usage = NULL;
            if (redisGetReply (redis, (void **) &usage) != REDIS_OK) {
                rc = -1;
                break;
            }
            redisReply *key = keys->element [picked [i]];
            if (usage->type == REDIS_REPLY_INTEGER)     //  Nil: deleted meanwhile
                s_account (rows, max, &count, key->str, key->len, usage->integer, every);
            freeReplyObject (usage);
        }
        free (picked);
        freeReplyObject (reply);
        if (rc) {
            redis_store_disconnect (store);
            return -1;
        }
    } while (!streq (cursor, "0"));
    *count_p = count;
    *seen_p = seen;
    return 0;
}

int
bench_redis_memory (bench_redis_t *self, int every, bench_memrow_t *rows, int max)
{
    if (every < 1)
        every = 1;
    int count = 0;
    int64_t seen = 0;
    for (int i = 0; i < self->count; i++)
        if (s_memory_node (self->stores [i], every, rows, max, &count, &seen) != 0)
            return -1;
    qsort (rows, count, sizeof rows [0], s_by_svc_bytes);
    return count;
}


#undef NDEBUG                   //  The self-test needs its asserts
#include <assert.h>

//  --------------------------------------------------------------------------
//  Self-test: classification (the census needs a Redis; the smoke test
//  runs it).

void
bench_redis_test (bool verbose)
{
    if (verbose)
        printf (" * bench_redis: ");
    struct {
        const char *key, *svc, *token, *kind;
    } cases [] = {
        { "{funnel:leads}:l:r.j1", "leads", "l", "state" },
        { "{funnel:leads:7}:p:r.j1", "leads", "p", "state" },
        { "{funnel:sales:2}:dl:Lr.j1-1", "sales", "dl", "state" },
        { "{funnel:sales:0}:g:bystage", "sales", "g", "state" },
        { "{funnel:retention:5}:o:c1/o9", "retention", "o", "state" },
        { "{funnel:campaign}:ob:12", "campaign", "ob", "outbox" },
        { "{funnel:campaign}:seq", "campaign", "seq", "outbox" },
        { "{funnel:retention}:ids:2613", "retention", "ids", "dedup" },
        { "{funnel:retention}:stats", "retention", "stats", "runtime" },
        { "{funnel:leads:3}:l:L1", "leads", "l", "state" },
        { "{funnel:leads:0}:em:a%40b.io", "leads", "em", "state" },
        { "{funnel:campaign:9}:id:campaign-1", "campaign", "id", "dedup" },
        { "{funnel:campaign:0}:timers", "campaign", "timers", "runtime" },
        { "{funnel:retention:3}:wal:9", "retention", "wal", "other" },
        { "{funnel:sales}:intents", "sales", "intents", "runtime" },
        { "{funnel:sales:4}:applied", "sales", "applied", "runtime" },
        { "plain:key", "other", "plain", "other" },
        { "{funnel:x", "other", "{funnel", "other" },
        { "we\"ird\\key", "other", "we?ird?key", "other" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases [0]; i++) {
        char svc [48], token [48];
        const char *kind = bench_key_classify (cases [i].key, strlen (cases [i].key),
                                               svc, sizeof svc, token, sizeof token);
        if (!streq (svc, cases [i].svc) || !streq (token, cases [i].token)
        ||  !streq (kind, cases [i].kind))
            fprintf (stderr, "bench_redis: %s -> %s %s %s\n", cases [i].key, svc, token, kind);
        assert (streq (svc, cases [i].svc));
        assert (streq (token, cases [i].token));
        assert (streq (kind, cases [i].kind));
    }
    //  INFO latencystats of two nodes: each percentile the higher
    const char *node1 = "# Latencystats\r\nlatency_percentiles_usec_set:p50=2.007,p99=19.071,"
                        "p99.9=64.255\r\nlatency_percentiles_usec_exec:p50=63.231,p99=5472.255,"
                        "p99.9=9502.719\r\n";
    const char *node2 = "latency_percentiles_usec_exec:p50=70.5,p99=900,p99.9=12000\r\n";
    bench_latency_pct_t pct = { 0, 0, 0 };
    assert (s_latency_parse (node1, "exec", &pct) == 0);
    assert (pct.p50 == 63.231 && pct.p99 == 5472.255 && pct.p999 == 9502.719);
    assert (s_latency_parse (node2, "exec", &pct) == 0);
    assert (pct.p50 == 70.5 && pct.p99 == 5472.255 && pct.p999 == 12000);
    assert (s_latency_parse (node2, "set", &pct) == -1);
    assert (s_latency_parse (node1, "exe", &pct) == -1);

    bench_cmdstat_t before [] = { { "exec", 10, 1000 }, { "ping", 5, 5 } };
    bench_cmdstat_t after [] = { { "exec", 30, 9000 }, { "ping", 5, 5 }, { "scan", 1, 50 } };
    bench_cmdstat_t delta [4];
    int count = bench_cmdstats_delta (before, 2, after, 3, delta, 4);
    assert (count == 2);
    assert (streq (delta [0].name, "exec") && delta [0].calls == 20 && delta [0].usec == 8000);
    assert (streq (delta [1].name, "scan"));
    if (verbose)
        printf ("OK\n");
}
