/*  redis_cluster — see redis_cluster.h. */
#include "redis_cluster.h"
#include "funnel_log.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

//  ---------------------------------------------------------------------
//  Slots

uint16_t
redis_cluster_crc16 (const void *data, size_t size)
{
    const uint8_t *bytes = (const uint8_t *) data;
    uint16_t crc = 0;
    for (size_t i = 0; i < size; i++) {
        crc ^= (uint16_t) (bytes [i] << 8);
        for (int bit = 0; bit < 8; bit++)
            crc = (uint16_t) (crc & 0x8000 ? (crc << 1) ^ 0x1021 : crc << 1);
    }
    return crc;
}

int
redis_cluster_slot (const char *key, size_t size)
{
    const char *open = memchr (key, '{', size);
    if (open) {
        size_t rest = size - (size_t) (open - key) - 1;
        const char *close = memchr (open + 1, '}', rest);
        //  "{}" is no tag: the whole key is hashed
        if (close && close > open + 1)
            return redis_cluster_crc16 (open + 1, (size_t) (close - open - 1))
                   & (REDIS_CLUSTER_SLOTS - 1);
    }
    return redis_cluster_crc16 (key, size) & (REDIS_CLUSTER_SLOTS - 1);
}

//  ---------------------------------------------------------------------
//  Pipeline

struct _redis_pipeline_t {
    char *data;                 //  RESP of every command
    size_t size, used;
    size_t count;
    size_t *exec_at;            //  Indexes of EXEC commands
    size_t exec_count, exec_max;
    size_t *ends;               //  Where each command ends (ASK: one ASKING each);
    size_t ends_max;            //  none known once raw bytes were appended
    bool raw;
};

redis_pipeline_t *
redis_pipeline_new (void)
{
    redis_pipeline_t *self = (redis_pipeline_t *) calloc (1, sizeof *self);
    assert (self);
    return self;
}

void
redis_pipeline_destroy (redis_pipeline_t **self_p)
{
    assert (self_p);
    redis_pipeline_t *self = *self_p;
    if (self) {
        free (self->data);
        free (self->exec_at);
        free (self->ends);
        free (self);
        *self_p = NULL;
    }
}

void
redis_pipeline_reset (redis_pipeline_t *self)
{
    self->used = 0;
    self->count = 0;
    self->exec_count = 0;
    self->raw = false;
}

static void
s_reserve (redis_pipeline_t *self, size_t more)
{
    if (self->used + more <= self->size)
        return;
    size_t size = self->size ? self->size : 1024;
    while (size < self->used + more)
        size *= 2;
    self->data = (char *) realloc (self->data, size);
    assert (self->data);
    self->size = size;
}

void
redis_pipeline_append (redis_pipeline_t *self, int argc, const char **argv,
                       const size_t *argvlen)
{
    assert (self && argc > 0 && argv);
    char head [32];
    s_reserve (self, (size_t) snprintf (head, sizeof head, "*%d\r\n", argc));
    self->used += (size_t) snprintf (self->data + self->used, self->size - self->used,
                                     "*%d\r\n", argc);
    for (int i = 0; i < argc; i++) {
        size_t length = argvlen ? argvlen [i] : strlen (argv [i]);
        s_reserve (self, length + 32);
        self->used += (size_t) snprintf (self->data + self->used, self->size - self->used,
                                         "$%zu\r\n", length);
        memcpy (self->data + self->used, argv [i], length);
        self->used += length;
        memcpy (self->data + self->used, "\r\n", 2);
        self->used += 2;
    }
    size_t length0 = argvlen ? argvlen [0] : strlen (argv [0]);
    if (length0 == 4 && strncasecmp (argv [0], "EXEC", 4) == 0) {
        if (self->exec_count == self->exec_max) {
            self->exec_max = self->exec_max ? self->exec_max * 2 : 4;
            self->exec_at = (size_t *) realloc (self->exec_at,
                                                self->exec_max * sizeof (size_t));
            assert (self->exec_at);
        }
        self->exec_at [self->exec_count++] = self->count;
    }
    if (!self->raw) {
        if (self->count >= self->ends_max) {
            self->ends_max = self->count * 2 + 16;
            self->ends = (size_t *) realloc (self->ends, self->ends_max * sizeof (size_t));
            assert (self->ends);
        }
        self->ends [self->count] = self->used;
    }
    self->count++;
}

size_t
redis_pipeline_count (redis_pipeline_t *self)
{
    return self->count;
}

const char *
redis_pipeline_data (redis_pipeline_t *self, size_t *size)
{
    *size = self->used;
    return self->data;
}

void
redis_pipeline_append_raw (redis_pipeline_t *self, const char *data, size_t size,
                           size_t count)
{
    if (size == 0)
        return;
    s_reserve (self, size);
    memcpy (self->data + self->used, data, size);
    self->used += size;
    self->count += count;
    self->raw = true;
}

//  ---------------------------------------------------------------------
//  Cluster

typedef struct {
    char host [256];
    int port;
    char name [300];            //  "host:port"
    redis_store_t *store;
} node_t;

struct _redis_cluster_t {
    redis_url_t url;            //  Seeds, user, password
    node_t *nodes;
    size_t node_count, node_max;
    uint16_t slots [REDIS_CLUSTER_SLOTS];   //  Node index + 1, 0 = unknown
    uint64_t moved, asked;
    int timeout_ms;             //  0: the stores' default
    int last_node;              //  The last run's node (-1: none), and its
    uint64_t last_generation;   //  connection's generation (run_pinned)
};

static int
s_node (redis_cluster_t *self, const char *host, int port)
{
    for (size_t i = 0; i < self->node_count; i++)
        if (self->nodes [i].port == port && strcmp (self->nodes [i].host, host) == 0)
            return (int) i;
    if (self->node_count == 65535)
        return -1;
    if (self->node_count == self->node_max) {
        self->node_max = self->node_max ? self->node_max * 2 : 8;
        self->nodes = (node_t *) realloc (self->nodes, self->node_max * sizeof (node_t));
        assert (self->nodes);
    }
    node_t *node = &self->nodes [self->node_count];
    memset (node, 0, sizeof *node);
    snprintf (node->host, sizeof node->host, "%s", host);
    node->port = port;
    bool v6 = strchr (host, ':') != NULL;
    snprintf (node->name, sizeof node->name, "%s%s%s:%d", v6 ? "[" : "", host, v6 ? "]" : "",
              port);
    redis_url_t url;
    redis_url_single (&self->url, host, port, &url);
    url.db = 0;
    node->store = redis_store_new (&url);
    memset (&url, 0, sizeof url);
    assert (node->store);
    if (self->timeout_ms)
        redis_store_set_timeout (node->store, self->timeout_ms);
    return (int) self->node_count++;
}

redis_cluster_t *
redis_cluster_new (const redis_url_t *url)
{
    assert (url && !url->unix_socket);
    redis_cluster_t *self = (redis_cluster_t *) calloc (1, sizeof *self);
    assert (self);
    self->url = *url;
    self->last_node = -1;
    return self;
}

void
redis_cluster_destroy (redis_cluster_t **self_p)
{
    assert (self_p);
    redis_cluster_t *self = *self_p;
    if (self) {
        for (size_t i = 0; i < self->node_count; i++)
            redis_store_destroy (&self->nodes [i].store);
        free (self->nodes);
        memset (&self->url, 0, sizeof self->url);
        free (self);
        *self_p = NULL;
    }
}

//  Fills the map from one CLUSTER SLOTS reply; false if it is not one.
static bool
s_load_slots (redis_cluster_t *self, const redisReply *reply, const char *asked_host)
{
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements == 0)
        return false;
    for (size_t i = 0; i < reply->elements; i++) {
        const redisReply *range = reply->element [i];
        if (range->type != REDIS_REPLY_ARRAY || range->elements < 3
        ||  range->element [0]->type != REDIS_REPLY_INTEGER
        ||  range->element [1]->type != REDIS_REPLY_INTEGER
        ||  range->element [2]->type != REDIS_REPLY_ARRAY
        ||  range->element [2]->elements < 2
        ||  range->element [2]->element [0]->type != REDIS_REPLY_STRING
        ||  range->element [2]->element [1]->type != REDIS_REPLY_INTEGER)
            return false;
    }
    memset (self->slots, 0, sizeof self->slots);
    for (size_t i = 0; i < reply->elements; i++) {
        const redisReply *range = reply->element [i];
        long long first = range->element [0]->integer, last = range->element [1]->integer;
        const redisReply *primary = range->element [2];
        //  An empty or "?" host: the node does not know its address; it
        //  is the one we asked
        const char *host = primary->element [0]->str;
        if (!*host || strcmp (host, "?") == 0)
            host = asked_host;
        int node = s_node (self, host, (int) primary->element [1]->integer);
        for (long long slot = first; node >= 0 && slot <= last; slot++)
            if (slot >= 0 && slot < REDIS_CLUSTER_SLOTS)
                self->slots [slot] = (uint16_t) (node + 1);
    }
    return true;
}

//  Asks one node; true if the map was loaded from it.
static bool
s_refresh_from (redis_cluster_t *self, int node, char *reason, size_t size)
{
    //  Copy: s_load_slots may grow (move) the node array
    char host [256];
    snprintf (host, sizeof host, "%s", self->nodes [node].host);
    redisReply *reply = redis_store_command (self->nodes [node].store, 2,
                                             (const char *[]) { "CLUSTER", "SLOTS" }, NULL);
    if (!reply) {
        snprintf (reason, size, "%s: unreachable", self->nodes [node].name);
        return false;
    }
    bool loaded = s_load_slots (self, reply, host);
    if (!loaded)
        snprintf (reason, size, "%.200s: CLUSTER SLOTS: %.100s", self->nodes [node].name,
                  reply->type == REDIS_REPLY_ERROR ? reply->str : "unexpected reply");
    freeReplyObject (reply);
    return loaded;
}

int
redis_cluster_refresh (redis_cluster_t *self, funnel_error_t *err)
{
    assert (self);
    char reason [400] = "no node known";
    //  Nodes known from the last map first, then the seeds
    size_t known = self->node_count;
    for (size_t i = 0; i < known; i++)
        if (s_refresh_from (self, (int) i, reason, sizeof reason))
            return 0;
    for (int i = 0; i < self->url.node_count; i++) {
        int node = s_node (self, self->url.nodes [i].host, self->url.nodes [i].port);
        if (node >= 0 && (size_t) node >= known
        &&  s_refresh_from (self, node, reason, sizeof reason))
            return 0;
    }
    return funnel_error_set (err, FUNNEL_ERR_UNAVAILABLE,
                             "redis cluster: no slot map (%.180s)", reason);
}

void
redis_cluster_set_timeout (redis_cluster_t *self, int ms)
{
    self->timeout_ms = ms;
    for (size_t i = 0; i < self->node_count; i++)
        redis_store_set_timeout (self->nodes [i].store, ms);
}

const char *
redis_cluster_node_of (redis_cluster_t *self, int slot)
{
    assert (self && slot >= 0 && slot < REDIS_CLUSTER_SLOTS);
    return self->slots [slot] ? self->nodes [self->slots [slot] - 1].name : NULL;
}

void
redis_cluster_redirects (redis_cluster_t *self, uint64_t *moved, uint64_t *asked)
{
    *moved = self->moved;
    *asked = self->asked;
}

typedef enum { SEND_OK, SEND_UNREACHABLE, SEND_LOST } send_rc_t;

//  The pipeline to one node (after ASKING if asking), every reply read.
static send_rc_t
s_send (redis_cluster_t *self, int node, bool asking, redis_pipeline_t *pipeline,
        redisReply **replies)
{
    redis_store_t *store = self->nodes [node].store;
    if (redis_store_connect (store) != 0)
        return SEND_UNREACHABLE;
    redisContext *ctx = redis_store_context (store);
    //  ASKING holds for the next command only: one before each, when the
    //  commands' bounds are known (a transaction keeps it from MULTI to EXEC)
    bool each = asking && !pipeline->raw && pipeline->exec_count == 0;
    if (each)
        for (size_t i = 0, at = 0; i < pipeline->count; at = pipeline->ends [i++]) {
            redisAppendCommand (ctx, "ASKING");
            redisAppendFormattedCommand (ctx, pipeline->data + at, pipeline->ends [i] - at);
        }
    else {
        if (asking)
            redisAppendCommand (ctx, "ASKING");
        redisAppendFormattedCommand (ctx, pipeline->data, pipeline->used);
    }
    for (size_t i = 0; i < pipeline->count; i++) {
        if (asking && (each || i == 0)) {
            redisReply *reply = redis_store_recv (store);
            if (!reply) {
                for (size_t j = 0; j < i; j++) {
                    freeReplyObject (replies [j]);
                    replies [j] = NULL;
                }
                return SEND_LOST;
            }
            freeReplyObject (reply);
        }
        replies [i] = redis_store_recv (store);
        if (!replies [i]) {
            for (size_t j = 0; j < i; j++) {
                freeReplyObject (replies [j]);
                replies [j] = NULL;
            }
            return SEND_LOST;
        }
    }
    return SEND_OK;
}

typedef enum { REDIRECT_NONE, REDIRECT_MOVED, REDIRECT_ASK, REDIRECT_WAIT } redirect_t;

static redirect_t
s_redirect_of (const redisReply *reply, char *host, size_t size, int *port)
{
    if (reply->type != REDIS_REPLY_ERROR)
        return REDIRECT_NONE;
    redirect_t kind = strncmp (reply->str, "MOVED ", 6) == 0 ? REDIRECT_MOVED
                    : strncmp (reply->str, "ASK ", 4) == 0 ? REDIRECT_ASK
                    : strncmp (reply->str, "TRYAGAIN", 8) == 0
                      || strncmp (reply->str, "CLUSTERDOWN", 11) == 0 ? REDIRECT_WAIT
                    : REDIRECT_NONE;
    if (kind == REDIRECT_MOVED || kind == REDIRECT_ASK) {
        //  "MOVED <slot> <host>:<port>": the last ':' ends the host (IPv6)
        const char *address = strrchr (reply->str, ' ');
        const char *colon = address ? strrchr (address, ':') : NULL;
        if (!colon)
            return REDIRECT_WAIT;       //  Malformed: treat as "try later"
        size_t length = (size_t) (colon - address - 1);
        if (length >= size)
            length = size - 1;
        memcpy (host, address + 1, length);
        host [length] = 0;
        *port = atoi (colon + 1);
    }
    return kind;
}

//  The first reply that redirects, unless an EXEC before it ran.
static int
s_first_redirect (redis_pipeline_t *pipeline, redisReply **replies)
{
    char host [256];
    int port;
    size_t exec = 0;
    for (size_t i = 0; i < pipeline->count; i++) {
        while (exec < pipeline->exec_count && pipeline->exec_at [exec] < i) {
            if (replies [pipeline->exec_at [exec]]->type == REDIS_REPLY_ARRAY)
                return -1;
            exec++;
        }
        if (s_redirect_of (replies [i], host, sizeof host, &port) != REDIRECT_NONE)
            return (int) i;
    }
    return -1;
}

static void
s_pause_ms (int ms)
{
    struct timespec delay = { ms / 1000, (long) (ms % 1000) * 1000000L };
    nanosleep (&delay, NULL);
}

int
redis_cluster_run (redis_cluster_t *self, int slot, redis_pipeline_t *pipeline,
                   redisReply **replies, funnel_error_t *err)
{
    assert (self && pipeline && replies);
    assert (slot >= 0 && slot < REDIS_CLUSTER_SLOTS);
    if (pipeline->count == 0)
        return 0;
    char last [200] = "no attempt";
    int ask_node = -1;
    for (int attempt = 1; attempt <= REDIS_CLUSTER_ATTEMPTS; attempt++) {
        if (!self->slots [slot] && redis_cluster_refresh (self, err) != 0)
            return -1;
        if (!self->slots [slot])
            return funnel_error_set (err, FUNNEL_ERR_UNAVAILABLE,
                                     "redis cluster: slot %d is served by no node", slot);
        int node = ask_node >= 0 ? ask_node : self->slots [slot] - 1;
        bool asking = ask_node >= 0;
        ask_node = -1;
        send_rc_t sent = s_send (self, node, asking, pipeline, replies);
        if (sent == SEND_LOST)
            return funnel_error_set (err, FUNNEL_ERR_UNAVAILABLE,
                "redis cluster: connection to %s lost before the replies; the outcome is "
                "unknown: retry with the same ids", self->nodes [node].name);
        if (sent == SEND_UNREACHABLE) {
            snprintf (last, sizeof last, "%.150s unreachable", self->nodes [node].name);
            //  A failover may have promoted a replica: ask the others
            s_pause_ms (20 * attempt);
            redis_cluster_refresh (self, NULL);
            continue;
        }
        int at = s_first_redirect (pipeline, replies);
        if (at < 0) {
            //  An ASKING run is a one-off: nothing to pin to
            self->last_node = asking ? -1 : node;
            self->last_generation = redis_store_generation (self->nodes [node].store);
            return 0;
        }
        char host [256];
        int port = 0;
        redirect_t kind = s_redirect_of (replies [at], host, sizeof host, &port);
        snprintf (last, sizeof last, "%.150s", replies [at]->str);
        for (size_t i = 0; i < pipeline->count; i++) {
            freeReplyObject (replies [i]);
            replies [i] = NULL;
        }
        if (!*host)             //  "MOVED 1 :6380": the node we asked
            snprintf (host, sizeof host, "%s", self->nodes [node].host);
        if (kind == REDIRECT_MOVED) {
            self->moved++;
            //  The slot moved: likely others too; fall back on the address
            if (redis_cluster_refresh (self, NULL) != 0
            ||  self->slots [slot] - 1 == node) {
                int target = s_node (self, host, port);
                if (target >= 0)
                    self->slots [slot] = (uint16_t) (target + 1);
            }
        }
        else
        if (kind == REDIRECT_ASK) {
            self->asked++;
            ask_node = s_node (self, host, port);
        }
        else {
            s_pause_ms (20 * attempt);
            if (strncmp (last, "CLUSTERDOWN", 11) == 0)
                redis_cluster_refresh (self, NULL);
        }
    }
    return funnel_error_set (err, FUNNEL_ERR_UNAVAILABLE,
        "redis cluster: slot %d not served after %d attempts (last: %s); nothing was applied",
        slot, REDIS_CLUSTER_ATTEMPTS, last);
}

int
redis_cluster_conn_of (redis_cluster_t *self, int slot, uint64_t *generation)
{
    assert (self && slot >= 0 && slot < REDIS_CLUSTER_SLOTS);
    *generation = 0;
    if (!self->slots [slot])
        return -1;
    int node = self->slots [slot] - 1;
    if (redis_store_connected (self->nodes [node].store))
        *generation = redis_store_generation (self->nodes [node].store);
    return node;
}

int
redis_cluster_last_conn (redis_cluster_t *self, uint64_t *generation)
{
    *generation = self->last_generation;
    return self->last_node;
}

//  The connection (node, generation), checked live.
static bool
s_conn_live (redis_cluster_t *self, int node, uint64_t generation)
{
    return node >= 0 && (size_t) node < self->node_count
        && redis_store_connected (self->nodes [node].store)
        && redis_store_generation (self->nodes [node].store) == generation;
}

int
redis_cluster_send_on (redis_cluster_t *self, int node, uint64_t generation,
                       redis_pipeline_t *pipeline, funnel_error_t *err)
{
    assert (self && pipeline);
    if (!s_conn_live (self, node, generation))
        return funnel_error_set (err, FUNNEL_ERR_UNAVAILABLE,
                                 "redis cluster: that connection is gone");
    redis_store_t *store = self->nodes [node].store;
    redisContext *ctx = redis_store_context (store);
    redisAppendFormattedCommand (ctx, pipeline->data, pipeline->used);
    //  Out now, so this node works while the caller sends to the next
    int done = 0;
    while (!done)
        if (redisBufferWrite (ctx, &done) != REDIS_OK) {
            redis_store_disconnect (store);
            return funnel_error_set (err, FUNNEL_ERR_UNAVAILABLE,
                "redis cluster: connection to %s lost while sending; the outcome is "
                "unknown: retry with the same ids", self->nodes [node].name);
        }
    return 0;
}

int
redis_cluster_recv_on (redis_cluster_t *self, int node, redis_pipeline_t *pipeline,
                       redisReply **replies, funnel_error_t *err)
{
    assert (self && pipeline && replies);
    redis_store_t *store = self->nodes [node].store;
    for (size_t i = 0; i < pipeline->count; i++) {
        replies [i] = redis_store_recv (store);
        if (!replies [i]) {
            for (size_t j = 0; j < i; j++) {
                freeReplyObject (replies [j]);
                replies [j] = NULL;
            }
            return funnel_error_set (err, FUNNEL_ERR_UNAVAILABLE,
                "redis cluster: connection to %s lost before the replies; the outcome is "
                "unknown: retry with the same ids", self->nodes [node].name);
        }
    }
    return 0;
}

int
redis_cluster_run_on (redis_cluster_t *self, int node, uint64_t generation,
                      redis_pipeline_t *pipeline, redisReply **replies, funnel_error_t *err)
{
    if (pipeline->count == 0)
        return s_conn_live (self, node, generation) ? 0
             : funnel_error_set (err, FUNNEL_ERR_UNAVAILABLE,
                                 "redis cluster: that connection is gone");
    if (redis_cluster_send_on (self, node, generation, pipeline, err) != 0)
        return -1;
    return redis_cluster_recv_on (self, node, pipeline, replies, err);
}

//  ---------------------------------------------------------------------
//  Self test

#undef NDEBUG
#include <assert.h>

static void
s_test_pure (void)
{
    //  The spec's check value, and keys whose slots are well known
    assert (redis_cluster_crc16 ("123456789", 9) == 0x31C3);
    assert (redis_cluster_crc16 ("", 0) == 0);
    assert (redis_cluster_slot ("foo", 3) == 12182);
    assert (redis_cluster_slot ("bar", 3) == 5061);
    const char *a = "{user1000}.following", *b = "{user1000}.followers";
    assert (redis_cluster_slot (a, strlen (a)) == redis_cluster_slot (b, strlen (b)));
    assert (redis_cluster_slot (a, strlen (a)) == redis_cluster_slot ("user1000", 8));
    //  "{}" is no tag: the whole key; only the first '{' counts
    const char *empty = "foo{}{bar}";
    assert (redis_cluster_slot (empty, strlen (empty))
            == (redis_cluster_crc16 (empty, strlen (empty)) & 16383));
    const char *nested = "foo{{bar}}zap";
    assert (redis_cluster_slot (nested, strlen (nested)) == redis_cluster_slot ("{bar", 4));
    const char *twice = "foo{bar}{zap}";
    assert (redis_cluster_slot (twice, strlen (twice)) == redis_cluster_slot ("bar", 3));
    assert (redis_cluster_slot ("{unclosed", 9)
            == (redis_cluster_crc16 ("{unclosed", 9) & 16383));
    //  The engine's tags: one slot per partition
    const char *k1 = "{funnel:leads:3}:lead:x", *k2 = "{funnel:leads:3}:id:e1";
    assert (redis_cluster_slot (k1, strlen (k1)) == redis_cluster_slot (k2, strlen (k2)));

    //  A pipeline is RESP, binary-safe, and knows its EXECs
    redis_pipeline_t *pipeline = redis_pipeline_new ();
    redis_pipeline_append (pipeline, 1, (const char *[]) { "MULTI" }, NULL);
    redis_pipeline_append (pipeline, 3, (const char *[]) { "SET", "k", "a\0b" },
                           (const size_t []) { 3, 1, 3 });
    redis_pipeline_append (pipeline, 1, (const char *[]) { "exec" }, NULL);
    assert (redis_pipeline_count (pipeline) == 3);
    assert (pipeline->exec_count == 1 && pipeline->exec_at [0] == 2);
    const char expected [] = "*1\r\n$5\r\nMULTI\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\na\0b\r\n"
                             "*1\r\n$4\r\nexec\r\n";
    assert (pipeline->used == sizeof expected - 1);
    assert (memcmp (pipeline->data, expected, pipeline->used) == 0);
    redis_pipeline_reset (pipeline);
    assert (redis_pipeline_count (pipeline) == 0 && pipeline->used == 0);
    redis_pipeline_destroy (&pipeline);
    assert (pipeline == NULL);

    //  Redirect parsing
    char host [256];
    int port = 0;
    redisReply reply = { .type = REDIS_REPLY_ERROR, .str = "MOVED 3999 127.0.0.1:6381" };
    assert (s_redirect_of (&reply, host, sizeof host, &port) == REDIRECT_MOVED);
    assert (strcmp (host, "127.0.0.1") == 0 && port == 6381);
    reply.str = "ASK 3999 ::1:7000";
    assert (s_redirect_of (&reply, host, sizeof host, &port) == REDIRECT_ASK);
    assert (strcmp (host, "::1") == 0 && port == 7000);
    reply.str = "MOVED 1 :7001";
    assert (s_redirect_of (&reply, host, sizeof host, &port) == REDIRECT_MOVED);
    assert (!*host && port == 7001);
    reply.str = "TRYAGAIN Multiple keys request during rehashing of slot";
    assert (s_redirect_of (&reply, host, sizeof host, &port) == REDIRECT_WAIT);
    reply.str = "WRONGTYPE Operation against a key";
    assert (s_redirect_of (&reply, host, sizeof host, &port) == REDIRECT_NONE);
}

//  Live: FUNNEL_TEST_REDIS_CLUSTER names the seeds of a 3-primary cluster
//  without data (tests/e2e/test_redis_cluster.py makes one).

static redisReply *
s_run1 (redis_cluster_t *cluster, const char *key, int argc, const char **argv)
{
    redis_pipeline_t *pipeline = redis_pipeline_new ();
    redis_pipeline_append (pipeline, argc, argv, NULL);
    redisReply *reply = NULL;
    funnel_error_t err;
    int rc = redis_cluster_run (cluster, redis_cluster_slot (key, strlen (key)), pipeline,
                                &reply, &err);
    if (rc)
        fprintf (stderr, "redis_cluster_run: %s\n", err.message);
    assert (rc == 0 && reply);
    redis_pipeline_destroy (&pipeline);
    return reply;
}

static void
s_expect (redisReply *reply, const char *text)
{
    assert (reply);
    if (!reply->str || strcmp (reply->str, text) != 0)
        fprintf (stderr, "expected '%s', got type %d '%s'\n", text, reply->type,
                 reply->str ? reply->str : "");
    assert (reply->str && strcmp (reply->str, text) == 0);
    freeReplyObject (reply);
}

//  A command to one node directly (the test plays the operator).
static redisReply *
s_node_command (redis_cluster_t *cluster, int node, int argc, const char **argv)
{
    redisReply *reply = redis_store_command (cluster->nodes [node].store, argc, argv, NULL);
    assert (reply);
    if (reply->type == REDIS_REPLY_ERROR)
        fprintf (stderr, "%s %s: %s\n", cluster->nodes [node].name, argv [0], reply->str);
    assert (reply->type != REDIS_REPLY_ERROR);
    return reply;
}

static void
s_node_id (redis_cluster_t *cluster, int node, char *id, size_t size)
{
    redisReply *reply = s_node_command (cluster, node, 2, (const char *[]) { "CLUSTER", "MYID" });
    snprintf (id, size, "%s", reply->str);
    freeReplyObject (reply);
}

static void
s_setslot (redis_cluster_t *cluster, int node, int slot, const char *state, const char *id)
{
    char text [16];
    snprintf (text, sizeof text, "%d", slot);
    freeReplyObject (s_node_command (cluster, node, 5, (const char *[]) {
        "CLUSTER", "SETSLOT", text, state, id }));
}

static void
s_test_live (const char *seeds, bool verbose)
{
    redis_url_t url;
    funnel_error_t err;
    assert (redis_url_parse (seeds, &url, &err) == 0);
    redis_cluster_t *cluster = redis_cluster_new (&url);
    assert (redis_cluster_refresh (cluster, &err) == 0);
    //  Every slot served, by three primaries
    for (int slot = 0; slot < REDIS_CLUSTER_SLOTS; slot++)
        assert (redis_cluster_node_of (cluster, slot));
    assert (cluster->node_count >= 3);

    //  Routing: keys all over the slots land where the map says (no MOVED)
    char key [64], value [64];
    for (int i = 0; i < 200; i++) {
        snprintf (key, sizeof key, "funnel:test:route:%d", i);
        snprintf (value, sizeof value, "v%d", i);
        s_expect (s_run1 (cluster, key, 3, (const char *[]) { "SET", key, value }), "OK");
    }
    for (int i = 0; i < 200; i++) {
        snprintf (key, sizeof key, "funnel:test:route:%d", i);
        snprintf (value, sizeof value, "v%d", i);
        s_expect (s_run1 (cluster, key, 2, (const char *[]) { "GET", key }), value);
    }
    uint64_t moved, asked;
    redis_cluster_redirects (cluster, &moved, &asked);
    assert (moved == 0 && asked == 0);

    //  A transaction of one tag in one round trip
    redis_pipeline_t *pipeline = redis_pipeline_new ();
    const char *tx_key = "{funnel:test:tx}:a";
    redis_pipeline_append (pipeline, 1, (const char *[]) { "MULTI" }, NULL);
    redis_pipeline_append (pipeline, 2, (const char *[]) { "INCR", tx_key }, NULL);
    redis_pipeline_append (pipeline, 3, (const char *[]) { "SET", "{funnel:test:tx}:b", "x" },
                           NULL);
    redis_pipeline_append (pipeline, 1, (const char *[]) { "EXEC" }, NULL);
    int tx_slot = redis_cluster_slot (tx_key, strlen (tx_key));
    redisReply *replies [4];
    assert (redis_cluster_run (cluster, tx_slot, pipeline, replies, &err) == 0);
    assert (replies [3]->type == REDIS_REPLY_ARRAY && replies [3]->elements == 2);
    assert (replies [3]->element [0]->integer == 1);
    for (int i = 0; i < 4; i++)
        freeReplyObject (replies [i]);

    //  Migrate the slot of "{mv}" to another primary, as an operator would
    //  (CLUSTER SETSLOT + MIGRATE): ASK during, MOVED after
    const char *old_key = "{mv}old", *new_key = "{mv}new";
    int slot = redis_cluster_slot (old_key, strlen (old_key));
    s_expect (s_run1 (cluster, old_key, 3, (const char *[]) { "SET", old_key, "1" }), "OK");
    //  A second client whose map goes stale: it must follow MOVED
    redis_cluster_t *stale = redis_cluster_new (&url);
    assert (redis_cluster_refresh (stale, &err) == 0);
    int source = cluster->slots [slot] - 1, target = -1;
    for (int i = 0; i < REDIS_CLUSTER_SLOTS && target < 0; i++)
        if (cluster->slots [i] && cluster->slots [i] - 1 != source)
            target = cluster->slots [i] - 1;
    assert (target >= 0);
    char source_id [64], target_id [64];
    s_node_id (cluster, source, source_id, sizeof source_id);
    s_node_id (cluster, target, target_id, sizeof target_id);
    s_setslot (cluster, target, slot, "IMPORTING", source_id);
    s_setslot (cluster, source, slot, "MIGRATING", target_id);
    //  A key the source does not hold: ASK, then ASKING on the target
    s_expect (s_run1 (cluster, new_key, 3, (const char *[]) { "SET", new_key, "2" }), "OK");
    redis_cluster_redirects (cluster, &moved, &asked);
    assert (asked == 1 && moved == 0);
    s_expect (s_run1 (cluster, new_key, 2, (const char *[]) { "GET", new_key }), "2");
    s_expect (s_run1 (cluster, old_key, 2, (const char *[]) { "GET", old_key }), "1");
    redis_cluster_redirects (cluster, &moved, &asked);
    assert (asked == 2 && moved == 0);      //  old_key is still on the source
    //  Move the old key, then give the slot to the target everywhere
    char port [16];
    snprintf (port, sizeof port, "%d", cluster->nodes [target].port);
    freeReplyObject (s_node_command (cluster, source, 8, (const char *[]) {
        "MIGRATE", cluster->nodes [target].host, port, "", "0", "5000", "KEYS", old_key }));
    s_expect (s_run1 (cluster, old_key, 2, (const char *[]) { "GET", old_key }), "1");
    s_setslot (cluster, target, slot, "NODE", target_id);
    s_setslot (cluster, source, slot, "NODE", target_id);
    for (size_t n = 0; n < cluster->node_count; n++)
        if ((int) n != source && (int) n != target)
            s_setslot (cluster, (int) n, slot, "NODE", target_id);
    //  The stale client: its transaction is refused by the source
    //  (MOVED inside MULTI, EXECABORT), refreshed, resent, applied once
    redis_pipeline_reset (pipeline);
    redis_pipeline_append (pipeline, 1, (const char *[]) { "MULTI" }, NULL);
    redis_pipeline_append (pipeline, 2, (const char *[]) { "INCR", old_key }, NULL);
    redis_pipeline_append (pipeline, 2, (const char *[]) { "GET", new_key }, NULL);
    redis_pipeline_append (pipeline, 1, (const char *[]) { "EXEC" }, NULL);
    assert (stale->slots [slot] - 1 == source);
    assert (redis_cluster_run (stale, slot, pipeline, replies, &err) == 0);
    assert (replies [3]->type == REDIS_REPLY_ARRAY && replies [3]->elements == 2);
    assert (replies [3]->element [0]->integer == 2);
    assert (strcmp (replies [3]->element [1]->str, "2") == 0);
    for (int i = 0; i < 4; i++)
        freeReplyObject (replies [i]);
    redis_cluster_redirects (stale, &moved, &asked);
    assert (moved == 1 && asked == 0);
    assert (strcmp (redis_cluster_node_of (stale, slot), cluster->nodes [target].name) == 0);
    s_expect (s_run1 (stale, old_key, 2, (const char *[]) { "GET", old_key }), "2");
    redis_cluster_redirects (stale, &moved, &asked);
    assert (moved == 1);                    //  The map is right now

    //  A slot no node serves any more is a clear error, not a hang: a
    //  node that cannot be reached is refreshed around, bounded
    redis_cluster_t *nowhere = NULL;
    redis_url_t bad;
    assert (redis_url_parse ("redis://127.0.0.1:1,127.0.0.1:2", &bad, NULL) == 0);
    nowhere = redis_cluster_new (&bad);
    funnel_error_clear (&err);
    assert (redis_cluster_run (nowhere, 0, pipeline, replies, &err) == -1);
    assert (strcmp (err.code, FUNNEL_ERR_UNAVAILABLE) == 0 && strstr (err.message, "no slot map"));
    redis_cluster_destroy (&nowhere);

    redis_pipeline_destroy (&pipeline);
    redis_cluster_destroy (&stale);
    redis_cluster_destroy (&cluster);
    assert (cluster == NULL);
    if (verbose)
        printf ("redis_cluster: live tests passed against %s\n", seeds);
}

void
redis_cluster_test (bool verbose)
{
    s_test_pure ();
    const char *seeds = getenv ("FUNNEL_TEST_REDIS_CLUSTER");
    if (seeds && *seeds)
        s_test_live (seeds, verbose);
    else
    if (verbose)
        printf ("FUNNEL_TEST_REDIS_CLUSTER not set: live cluster tests skipped\n");
}
