/*  webhook — see webhook.h for why. */
#include <curl/curl.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include "event_codec.h"
#include "funnel_client.h"
#include "funnel_log.h"
#include "funnel_signals.h"
#include "json_msgpack.h"
#include "redis_auth.h"
#include "redis_cluster.h"
#include "redis_store.h"
#include "upstream.h"
#include "upstream_set.h"
#include "webhook.h"

#define POLL_MS         50          //  Loop tick: REPLAY timers, stop checks
#define START_RETRY_MS  1000        //  Position unknown (Redis or service down)
#define PING_TIMEOUT_MS 1000
#define FLUSH_MS        1000        //  Positions moved by unmatched events

//  One followed stream: a service, or one partition of a service that
//  lists instances (proto/README.md section 7: each partition has its
//  own seq from 1, REPLAY from its owner)
typedef struct {
    webhook_t *hook;
    const char *service;            //  Points into the config copy
    int part;                       //  -1: the service has no instances
    char field [48];                //  Redis field and stats key: svc or svc:part
    upstream_t *upstream;           //  Owned only when part < 0 (else the set's)
    funnel_client_t *client;        //  PING/STATS for start = latest; not owned
    bool started;
    int64_t next_try;
    uint64_t position;              //  Last seq delivered (or passed over)
    uint64_t saved;                 //  Last position written to Redis
    uint64_t head;                  //  upstream_head, copied for stats readers
} feed_t;

struct _webhook_t {
    char *name, *url, *types, *secret, *key;
    bool from_start;
    int timeout_ms, backoff_min, backoff_max;
    char *services [WEBHOOK_SERVICES_MAX], *apis [WEBHOOK_SERVICES_MAX],
         *pubs [WEBHOOK_SERVICES_MAX];
    int service_count;
    //  Per service with instances: one SUB to every instance's PUB, and a
    //  client per instance (the owner of a partition answers its STATS)
    upstream_set_t *sets [WEBHOOK_SERVICES_MAX];
    funnel_client_t **clients [WEBHOOK_SERVICES_MAX];
    int client_counts [WEBHOOK_SERVICES_MAX];
    feed_t *feeds;
    int feed_count;
    //  Positions live on one server (single, or a sentinel's primary):
    //  store; or on a Redis Cluster: cluster, routed by the key's slot
    redis_store_t *store;
    redis_cluster_t *cluster;
    redis_pipeline_t *pipeline;     //  The one command sent to the cluster
    CURL *curl;
    pthread_t thread;
    bool running;
    atomic_bool stopping;
    int64_t last_warn;
    //  Stats, under lock: read by HTTP threads
    pthread_mutex_t lock;
    const char *state;
    uint64_t delivered, failures, consecutive;
    long last_status;
    char last_error [256];
    bool redis_ok;                  //  The last position read or write worked
};

static const char *const s_all [] = { "*", NULL };

static bool
s_stopping (webhook_t *self)
{
    return funnel_stop || atomic_load (&self->stopping);
}

bool
webhook_matches (const char *types, const char *type)
{
    size_t type_length = strlen (type);
    for (const char *p = types; *p; ) {
        size_t length = strcspn (p, ",");
        if (length == 1 && *p == '*')
            return true;
        if (length > 0 && p [length - 1] == '.' ? length <= type_length
                                                  && strncmp (p, type, length) == 0
                                                : length == type_length
                                                  && strncmp (p, type, length) == 0)
            return true;
        p += length;
        if (*p == ',')
            p++;
    }
    return false;
}

void
webhook_sign (const char *secret, const void *body, size_t size, char hex [65])
{
    unsigned char mac [EVP_MAX_MD_SIZE];
    unsigned int mac_size = 0;
    HMAC (EVP_sha256 (), secret, (int) strlen (secret), (const unsigned char *) body, size,
          mac, &mac_size);
    for (unsigned int i = 0; i < mac_size && i < 32; i++)
        snprintf (hex + 2 * i, 3, "%02x", mac [i]);
    hex [64] = 0;
}

//  --------------------------------------------------------------------------
//  Positions in Redis

//  One single-key command (argv [1] is the key), the one way the gateway
//  talks to Redis: on a cluster it goes to the primary of the key's slot
//  (MOVED/ASK followed by redis_cluster; HGET and HSET of the same value
//  are safe to resend), else to the one server. NULL when Redis cannot be
//  reached (logged by the store or here, at most every 5 s); the caller
//  frees the reply, error replies included.
static redisReply *
s_command (webhook_t *self, int argc, const char **argv)
{
    if (!self->cluster)
        return redis_store_connect (self->store) == 0
             ? redis_store_command (self->store, argc, argv, NULL) : NULL;
    redis_pipeline_reset (self->pipeline);
    redis_pipeline_append (self->pipeline, argc, argv, NULL);
    redisReply *reply = NULL;
    funnel_error_t err;
    if (redis_cluster_run (self->cluster, redis_cluster_slot (argv [1], strlen (argv [1])),
                           self->pipeline, &reply, &err) != 0) {
        if (funnel_log_every (&self->last_warn, 5000))
            log_warn ("webhook %s: %s", self->name, err.message);
        return NULL;
    }
    return reply;
}

//  Writes the feed's position if it moved; false if Redis is down (the
//  delivery stands: at worst a restart POSTs those events again).
static bool
s_save (webhook_t *self, feed_t *feed)
{
    if (feed->position == feed->saved)
        return true;
    char value [24];
    snprintf (value, sizeof value, "%" PRIu64, feed->position);
    const char *argv [] = { "HSET", self->key, feed->field, value };
    redisReply *reply = s_command (self, 4, argv);
    bool ok = reply && reply->type == REDIS_REPLY_INTEGER;
    pthread_mutex_lock (&self->lock);
    self->redis_ok = ok;
    pthread_mutex_unlock (&self->lock);
    if (ok)
        feed->saved = feed->position;
    else
    if (funnel_log_every (&self->last_warn, 5000))
        log_warn ("webhook %s: cannot save the position of %s in Redis; will retry",
                  self->name, feed->field);
    if (reply)
        freeReplyObject (reply);
    return ok;
}

//  Finds where a feed starts: its stored position, or for a new
//  subscription the service's current seq (latest) or 0 (earliest).
static void
s_start_feed (webhook_t *self, feed_t *feed)
{
    feed->next_try = zclock_mono () + START_RETRY_MS;
    const char *argv [] = { "HGET", self->key, feed->field };
    redisReply *reply = s_command (self, 3, argv);
    pthread_mutex_lock (&self->lock);
    self->redis_ok = reply != NULL;
    pthread_mutex_unlock (&self->lock);
    if (!reply)
        return;
    bool known = reply->type == REDIS_REPLY_STRING;
    uint64_t position = known ? strtoull (reply->str, NULL, 10) : 0;
    bool nil = reply->type == REDIS_REPLY_NIL;
    freeReplyObject (reply);
    if (!known && !nil)
        return;
    if (nil && !self->from_start) {
        //  A partition's seq is in its owner's STATS "parts" (PING sums them)
        zframe_t *body = NULL;
        if (funnel_client_call (feed->client, feed->part < 0 ? "PING" : "STATS", NULL, 0,
                                PING_TIMEOUT_MS, &body)
            != FUNNEL_CALL_OK || !body) {
            zframe_destroy (&body);
            return;                 //  Down: try again in a second
        }
        funnel_error_t err;
        event_codec_t *msg = event_codec_decode (zframe_data (body), zframe_size (body),
                                               &event_codec_limits_event, &err);
        const msgpack_object *seq = NULL;
        if (msg && feed->part < 0)
            seq = event_codec_map_get (event_codec_root (msg), "seq");
        else
        if (msg) {
            char key [16];
            snprintf (key, sizeof key, "%d", feed->part);
            const msgpack_object *parts = event_codec_map_get (event_codec_root (msg), "parts");
            seq = parts && parts->type == MSGPACK_OBJECT_MAP ? event_codec_map_get (parts, key)
                                                             : NULL;
        }
        bool got = seq && seq->type == MSGPACK_OBJECT_POSITIVE_INTEGER;
        position = got ? seq->via.u64 : 0;
        event_codec_destroy (&msg);
        zframe_destroy (&body);
        if (!got)
            return;
    }
    pthread_mutex_lock (&self->lock);
    feed->position = position;
    feed->saved = known ? position : UINT64_MAX;    //  A new one is written now
    pthread_mutex_unlock (&self->lock);
    if (!known && !s_save (self, feed))
        return;
    upstream_start (feed->upstream, position);
    feed->started = true;
    log_info ("webhook %s: %s from seq %" PRIu64 "%s", self->name, feed->field,
              position + 1, known ? "" : (self->from_start ? " (new, earliest)" : " (new, latest)"));
}

//  --------------------------------------------------------------------------
//  Delivery

static size_t
s_discard (char *data, size_t size, size_t count, void *arg)
{
    (void) data; (void) arg;
    return size * count;
}

//  Aborts a POST in progress when the gateway stops
static int
s_progress (void *arg, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
    (void) a; (void) b; (void) c; (void) d;
    return s_stopping ((webhook_t *) arg) ? 1 : 0;
}

//  One POST; 0 if the receiver answered 2xx.
static int
s_post (webhook_t *self, const char *body, const char *id, uint64_t seq, const char *svc,
        int part)
{
    char signature [128], hex [65], header_id [FUNNEL_ID_MAX + 32], header_seq [128],
         header_part [48];
    webhook_sign (self->secret, body, strlen (body), hex);
    snprintf (signature, sizeof signature, "X-Funnel-Signature: sha256=%s", hex);
    snprintf (header_id, sizeof header_id, "X-Funnel-Event-Id: %s", id);
    snprintf (header_seq, sizeof header_seq, "X-Funnel-Seq: %s:%" PRIu64, svc, seq);
    struct curl_slist *headers = NULL;
    headers = curl_slist_append (headers, "Content-Type: application/json");
    headers = curl_slist_append (headers, signature);
    headers = curl_slist_append (headers, header_id);
    headers = curl_slist_append (headers, header_seq);
    if (part >= 0) {                //  The seq counts within this partition
        snprintf (header_part, sizeof header_part, "X-Funnel-Part: %d", part);
        headers = curl_slist_append (headers, header_part);
    }
    headers = curl_slist_append (headers, "Expect:");    //  No 100-continue round trip
    curl_easy_setopt (self->curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt (self->curl, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt (self->curl, CURLOPT_POSTFIELDSIZE, (long) strlen (body));
    CURLcode code = curl_easy_perform (self->curl);
    long status = 0;
    curl_easy_getinfo (self->curl, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_setopt (self->curl, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all (headers);

    int rc = code == CURLE_OK && status >= 200 && status < 300 ? 0 : -1;
    pthread_mutex_lock (&self->lock);
    self->last_status = status;
    if (rc == 0) {
        self->delivered++;
        self->consecutive = 0;
        self->state = "ok";
    }
    else {
        self->failures++;
        self->consecutive++;
        self->state = "retrying";
        if (code != CURLE_OK)
            snprintf (self->last_error, sizeof self->last_error, "%s", curl_easy_strerror (code));
        else
            snprintf (self->last_error, sizeof self->last_error, "HTTP %ld", status);
    }
    pthread_mutex_unlock (&self->lock);
    return rc;
}

//  POSTs one event until the receiver takes it; -1 only when stopping.
static int
s_deliver (webhook_t *self, const msgpack_object *root, const funnel_event_t *event, int part)
{
    json_t *json = json_from_msgpack (root);
    char *body = json ? json_dumps (json, JSON_COMPACT) : NULL;
    json_decref (json);
    if (!body)
        return -1;
    int backoff = self->backoff_min;
    int rc = -1;
    while (!s_stopping (self)) {
        if (s_post (self, body, event->id, event->seq, event->svc, part) == 0) {
            rc = 0;
            break;
        }
        if (funnel_log_every (&self->last_warn, 5000))
            log_warn ("webhook %s: %s (event %s, %s seq %" PRIu64 "); retrying in %d ms",
                      self->name, self->last_error, event->id, event->svc, event->seq, backoff);
        for (int waited = 0; waited < backoff && !s_stopping (self); waited += 100)
            zclock_sleep (backoff - waited < 100 ? backoff - waited : 100);
        backoff = backoff * 2 > self->backoff_max ? self->backoff_max : backoff * 2;
    }
    free (body);
    return rc;
}

//  Upstream apply: events of one service (or partition) in seq order
static int
s_on_events (void *arg, upstream_t *upstream, const char **events, const size_t *sizes,
             size_t count, uint64_t last_seq)
{
    webhook_t *self = (webhook_t *) arg;
    feed_t *feed = NULL;            //  A set's partitions share one arg
    for (int f = 0; f < self->feed_count && !feed; f++)
        if (self->feeds [f].upstream == upstream)
            feed = &self->feeds [f];
    if (!feed)
        return -1;
    pthread_mutex_lock (&self->lock);           //  For stats while this blocks
    feed->head = upstream_head (upstream);
    pthread_mutex_unlock (&self->lock);
    for (size_t i = 0; i < count; i++) {
        funnel_error_t err;
        event_codec_t *msg = event_codec_decode (events [i], sizes [i], &event_codec_limits_event, &err);
        funnel_event_t event;
        if (!msg || event_codec_event_parse (event_codec_root (msg), &event, &err)) {
            log_error ("webhook %s: a malformed event from %s is passed over: %s",
                       self->name, feed->field, err.message);
            event_codec_destroy (&msg);
            continue;
        }
        int rc = 0;
        if (event.seq > feed->position && webhook_matches (self->types, event.type))
            rc = s_deliver (self, event_codec_root (msg), &event, feed->part);
        event_codec_destroy (&msg);
        if (rc) {
            s_save (self, feed);
            return -1;              //  Stopping: the rest is for the next run
        }
        if (event.seq > feed->position) {
            pthread_mutex_lock (&self->lock);
            feed->position = event.seq;
            pthread_mutex_unlock (&self->lock);
        }
    }
    if (last_seq > feed->position) {
        pthread_mutex_lock (&self->lock);
        feed->position = last_seq;
        pthread_mutex_unlock (&self->lock);
    }
    s_save (self, feed);
    return 0;
}

//  --------------------------------------------------------------------------
//  The thread

static void *
s_run (void *arg)
{
    webhook_t *self = (webhook_t *) arg;
    int64_t next_flush = zclock_mono () + FLUSH_MS;
    zmq_pollitem_t *items = (zmq_pollitem_t *) zmalloc (
        (size_t) (self->service_count + self->feed_count) * sizeof (zmq_pollitem_t));
    while (!s_stopping (self)) {
        int n = 0;
        for (int s = 0; s < self->service_count; s++)
            if (self->sets [s])
                items [n++] = (zmq_pollitem_t) {
                    zsock_resolve (upstream_set_sub (self->sets [s])), 0, ZMQ_POLLIN, 0 };
        for (int f = 0; f < self->feed_count; f++) {
            feed_t *feed = &self->feeds [f];
            if (feed->part < 0)
                items [n++] = (zmq_pollitem_t) {
                    zsock_resolve (upstream_sub (feed->upstream)), 0, ZMQ_POLLIN, 0 };
            items [n++] = (zmq_pollitem_t) {
                zsock_resolve (upstream_replay_sock (feed->upstream)), 0, ZMQ_POLLIN, 0 };
        }
        zmq_poll (items, n, POLL_MS);
        int64_t now = zclock_mono ();
        for (int f = 0; f < self->feed_count && !s_stopping (self); f++) {
            feed_t *feed = &self->feeds [f];
            if (!feed->started && now >= feed->next_try)
                s_start_feed (self, feed);
        }
        //  Live events before a feed's start are dropped (REPLAY has them)
        for (int s = 0; s < self->service_count && !s_stopping (self); s++)
            if (self->sets [s])
                upstream_set_drain (self->sets [s]);
        for (int f = 0; f < self->feed_count && !s_stopping (self); f++) {
            feed_t *feed = &self->feeds [f];
            if (feed->part < 0)
                upstream_drain (feed->upstream);
            if (feed->started)
                upstream_catch_up (feed->upstream, 0);
            pthread_mutex_lock (&self->lock);
            feed->head = upstream_head (feed->upstream);
            pthread_mutex_unlock (&self->lock);
        }
        if (now >= next_flush) {
            next_flush = now + FLUSH_MS;
            for (int f = 0; f < self->feed_count; f++)
                if (self->feeds [f].started) {
                    upstream_flush (self->feeds [f].upstream);
                    s_save (self, &self->feeds [f]);
                }
        }
    }
    free (items);
    return NULL;
}

static bool
s_valid_url (const char *url)
{
    return (strncmp (url, "http://", 7) == 0 && url [7])
        || (strncmp (url, "https://", 8) == 0 && url [8]);
}

webhook_t *
webhook_new (const webhook_config_t *config, char *error, size_t error_size)
{
    const char *name = config->name;
    if (!config->url || !s_valid_url (config->url)) {
        snprintf (error, error_size, "webhooks/%s/url: an http:// or https:// URL is required", name);
        return NULL;
    }
    if (!config->types || !*config->types) {
        snprintf (error, error_size, "webhooks/%s/types: required (types, prefixes ending in "
                  "'.', or *)", name);
        return NULL;
    }
    if (!config->secret || !*config->secret) {
        snprintf (error, error_size, "webhooks/%s/secret: required", name);
        return NULL;
    }
    webhook_t *self = (webhook_t *) zmalloc (sizeof (webhook_t));
    funnel_error_t err;
    redis_url_t redis;              //  Copied by the store or the cluster
    if (redis_url_parse (config->redis_url, &redis, &err)) {
        snprintf (error, error_size, "redis url of the gateway: %s", err.message);
        free (self);
        return NULL;
    }
    //  The gateway's own Redis user and password file (proto/security.md)
    if (config->redis_config
    &&  redis_auth_apply (config->redis_config, "gateway", &redis) != 0) {
        snprintf (error, error_size, "gateway: the Redis credentials cannot be read");
        free (self);
        return NULL;
    }
    self->name = strdup (name);
    self->url = strdup (config->url);
    self->types = strdup (config->types);
    self->secret = strdup (config->secret);
    if (asprintf (&self->key, "%swh:%s", config->prefix, name) < 0)
        self->key = NULL;
    self->from_start = config->from_start;
    self->timeout_ms = config->timeout_ms;
    self->backoff_min = config->backoff_min_ms;
    self->backoff_max = config->backoff_max_ms;
    self->state = "starting";
    pthread_mutex_init (&self->lock, NULL);
    atomic_init (&self->stopping, false);
    if (redis.mode == REDIS_MODE_CLUSTER) {
        self->cluster = redis_cluster_new (&redis);
        self->pipeline = redis_pipeline_new ();
    }
    else
        self->store = redis_store_new (&redis);
    memset (&redis, 0, sizeof redis);       //  The password: the store's copy only
    self->curl = curl_easy_init ();
    bool ok = self->key && (self->store || self->cluster) && self->curl;
    //  One feed per service, or per partition of a service with instances
    int feeds = 0;
    for (int s = 0; s < config->service_count && s < WEBHOOK_SERVICES_MAX; s++) {
        funnel_topology_t *topology = config->topologies [s];
        feeds += topology && funnel_topology_partitioned (topology)
               ? funnel_topology_partitions (topology) : 1;
    }
    self->feeds = (feed_t *) zmalloc ((size_t) (feeds ? feeds : 1) * sizeof (feed_t));
    for (int s = 0; ok && s < config->service_count && s < WEBHOOK_SERVICES_MAX; s++) {
        self->service_count++;
        self->services [s] = strdup (config->services [s]);
        self->apis [s] = strdup (config->apis [s]);
        self->pubs [s] = strdup (config->pubs [s]);
        funnel_topology_t *topology = config->topologies [s];
        if (!topology || !funnel_topology_partitioned (topology)) {
            feed_t *feed = &self->feeds [self->feed_count++];
            feed->hook = self;
            feed->part = -1;
            feed->service = self->services [s];
            snprintf (feed->field, sizeof feed->field, "%s", feed->service);
            feed->upstream = upstream_new (feed->service, self->apis [s], self->pubs [s],
                                           s_all, s_on_events, self);
            self->clients [s] = (funnel_client_t **) zmalloc (sizeof (funnel_client_t *));
            self->clients [s][0] = funnel_client_new_for (self->apis [s], feed->service);
            self->client_counts [s] = 1;
            feed->client = self->clients [s][0];
            ok = feed->upstream && feed->client;
            continue;
        }
        //  The services' own set: SUB to every instance, REPLAY per
        //  partition from its owner, ERR moved followed
        self->sets [s] = upstream_set_new (self->services [s], topology, s_all, s_on_events, self);
        int instances = funnel_topology_count (topology);
        self->clients [s] = (funnel_client_t **) zmalloc ((size_t) instances
                                                          * sizeof (funnel_client_t *));
        self->client_counts [s] = instances;
        for (int i = 0; ok && i < instances; i++) {
            self->clients [s][i] = funnel_client_new_for (funnel_topology_at (topology, i)->api,
                                                          self->services [s]);
            ok = self->clients [s][i] != NULL;
        }
        ok = ok && self->sets [s];
        for (int p = 0; ok && p < funnel_topology_partitions (topology); p++) {
            feed_t *feed = &self->feeds [self->feed_count++];
            feed->hook = self;
            feed->part = p;
            feed->service = self->services [s];
            snprintf (feed->field, sizeof feed->field, "%s:%d", feed->service, p);
            feed->upstream = upstream_set_part (self->sets [s], p);
            const funnel_instance_t *owner = funnel_topology_owner (topology, p);
            for (int i = 0; i < instances; i++)
                if (funnel_topology_at (topology, i) == owner)
                    feed->client = self->clients [s][i];
            ok = feed->upstream && feed->client;
        }
    }
    if (ok) {
        curl_easy_setopt (self->curl, CURLOPT_URL, self->url);
        curl_easy_setopt (self->curl, CURLOPT_POST, 1L);
        curl_easy_setopt (self->curl, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt (self->curl, CURLOPT_TIMEOUT_MS, (long) self->timeout_ms);
        curl_easy_setopt (self->curl, CURLOPT_CONNECTTIMEOUT_MS,
                          (long) (self->timeout_ms < 5000 ? self->timeout_ms : 5000));
        curl_easy_setopt (self->curl, CURLOPT_WRITEFUNCTION, s_discard);
        curl_easy_setopt (self->curl, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt (self->curl, CURLOPT_XFERINFOFUNCTION, s_progress);
        curl_easy_setopt (self->curl, CURLOPT_XFERINFODATA, self);
        curl_easy_setopt (self->curl, CURLOPT_USERAGENT, "funnel-gateway/" FUNNEL_VERSION);
        //  Stop signals belong to the main thread
        sigset_t block, saved;
        sigemptyset (&block);
        sigaddset (&block, SIGINT);
        sigaddset (&block, SIGTERM);
        sigaddset (&block, SIGHUP);
        pthread_sigmask (SIG_BLOCK, &block, &saved);
        ok = pthread_create (&self->thread, NULL, s_run, self) == 0;
        pthread_sigmask (SIG_SETMASK, &saved, NULL);
        self->running = ok;
    }
    if (!ok) {
        snprintf (error, error_size, "webhooks/%s: cannot start (sockets or memory)", name);
        webhook_destroy (&self);
    }
    return self;
}

void
webhook_destroy (webhook_t **self_p)
{
    if (*self_p) {
        webhook_t *self = *self_p;
        atomic_store (&self->stopping, true);
        if (self->running)
            pthread_join (self->thread, NULL);
        for (int f = 0; f < self->feed_count; f++)
            if (self->feeds [f].part < 0)
                upstream_destroy (&self->feeds [f].upstream);
        free (self->feeds);
        for (int s = 0; s < self->service_count; s++) {
            upstream_set_destroy (&self->sets [s]);
            for (int i = 0; i < self->client_counts [s]; i++)
                funnel_client_destroy (&self->clients [s][i]);
            free (self->clients [s]);
            free (self->services [s]);
            free (self->apis [s]);
            free (self->pubs [s]);
        }
        if (self->curl)
            curl_easy_cleanup (self->curl);
        redis_store_destroy (&self->store);
        redis_cluster_destroy (&self->cluster);
        redis_pipeline_destroy (&self->pipeline);
        pthread_mutex_destroy (&self->lock);
        free (self->name);
        free (self->url);
        free (self->types);
        free (self->secret);
        free (self->key);
        free (self);
        *self_p = NULL;
    }
}

json_t *
webhook_stats (webhook_t *self)
{
    pthread_mutex_lock (&self->lock);
    json_t *services = json_object ();
    for (int f = 0; f < self->feed_count; f++) {
        feed_t *feed = &self->feeds [f];
        uint64_t head = feed->head;
        uint64_t backlog = head > feed->position ? head - feed->position : 0;
        json_object_set_new (services, feed->field, json_pack ("{s:I, s:I, s:I, s:b}",
            "position", (json_int_t) feed->position, "head", (json_int_t) head,
            "backlog", (json_int_t) backlog, "started", feed->started));
    }
    json_t *stats = json_pack ("{s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:s, s:i, s:b, s:o}",
        "name", self->name, "url", self->url, "types", self->types, "state", self->state,
        "delivered", (json_int_t) self->delivered, "failures", (json_int_t) self->failures,
        "consecutive_failures", (json_int_t) self->consecutive,
        "last_error", self->last_error, "last_status", (int) self->last_status,
        "redis", self->redis_ok, "services", services);
    pthread_mutex_unlock (&self->lock);
    return stats;
}

//  --------------------------------------------------------------------------
//  Self test

#include "funnel_check.h"

void
webhook_test (bool verbose)
{
    (void) verbose;
    check (webhook_matches ("lead.,deal.won", "lead.sql"));
    check (webhook_matches ("lead.,deal.won", "deal.won"));
    check (!webhook_matches ("lead.,deal.won", "deal.wonder"));
    check (!webhook_matches ("lead.,deal.won", "deal.lost"));
    check (!webhook_matches ("lead.", "lead"));
    check (webhook_matches ("*", "anything"));
    check (!webhook_matches ("", "x"));
    check (webhook_matches ("a,,b", "b"));
    //  RFC 4231 test case 2
    char hex [65];
    webhook_sign ("Jefe", "what do ya want for nothing?", 28, hex);
    check (strcmp (hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843") == 0);
    //  Settings are checked before anything starts
    char error [256];
    webhook_config_t config = { .name = "crm", .url = "ftp://x", .types = "lead.",
                                .secret = "s", .redis_url = "redis://127.0.0.1:1/0",
                                .prefix = "p:" };
    check (!webhook_new (&config, error, sizeof error) && strstr (error, "webhooks/crm/url"));
    config.url = "http://127.0.0.1:1/hook";
    config.types = "";
    check (!webhook_new (&config, error, sizeof error) && strstr (error, "webhooks/crm/types"));
    config.types = "lead.";
    config.secret = NULL;
    check (!webhook_new (&config, error, sizeof error) && strstr (error, "webhooks/crm/secret"));
    config.secret = "s";
    config.redis_url = "mysql://x";
    check (!webhook_new (&config, error, sizeof error) && strstr (error, "redis url"));
}
