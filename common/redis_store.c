/*  redis_store — see redis_store.h.

    A hiredis context is dead after any error and redisReconnect forgets
    AUTH and SELECT (hiredis 0.14), so s_open does the whole handshake and is
    the only way a context is made. Failures are rate-limited by backoff,
    not by logging: the first failure and the recovery are logged, the
    retries in between are silent.
*/
#include "redis_store.h"
#include "funnel_log.h"

#include <assert.h>
#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <time.h>

#define CONNECT_TIMEOUT_MS  1000
#define COMMAND_TIMEOUT_MS  2000
#define BACKOFF_FIRST_MS    100
#define BACKOFF_MAX_MS      5000

struct _redis_store_t {
    redis_url_t url;
    char shown [512];           //  The URL for logs, password masked
    redisContext *ctx;          //  NULL when not connected
    int64_t backoff_ms;         //  Current delay, 0 after a success
    int64_t retry_at_ms;        //  Monotonic time the next attempt may run
    bool down;                  //  Failure logged; log the recovery
    unsigned attempts;          //  Connection attempts made (self-test)
    uint64_t generation;        //  Successful connects so far
    int timeout_ms;             //  Command timeout
    bool readonly;              //  Saw READONLY: drop between pipelines
    char primary [300];         //  Sentinel: "host:port" last connected
    char reason [256];          //  Of the last failure logged
};


//  --------------------------------------------------------------------------
//  URL parsing

//  Reads decimal digits (at least one) up to max; returns how many
//  characters it read, or -1 if none or the value exceeds max.
static int
s_parse_uint (const char *text, long max, long *value)
{
    int length = 0;
    long parsed = 0;
    while (isdigit ((unsigned char) text [length])) {
        parsed = parsed * 10 + (text [length] - '0');
        if (parsed > max)
            return -1;
        length++;
    }
    if (length == 0)
        return -1;
    *value = parsed;
    return length;
}

static int
s_hex_digit (char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char) tolower ((unsigned char) c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

//  Copies text [0..length) into out, decoding %XX (so a password may hold
//  ':' or '@'); never names the text in the error, it may be a password.
static int
s_decode (const char *text, size_t length, char *out, size_t size,
          const char *part, funnel_error_t *err)
{
    size_t used = 0;
    for (size_t i = 0; i < length; i++) {
        char c = text [i];
        if (c == '%') {
            int high = i + 2 < length ? s_hex_digit (text [i + 1]) : -1;
            int low = i + 2 < length ? s_hex_digit (text [i + 2]) : -1;
            if (high < 0 || low < 0)
                return funnel_error_set (err, FUNNEL_ERR_INVALID,
                                         "redis url: bad %%-escape in %s", part);
            c = (char) (high * 16 + low);
            i += 2;
        }
        if (used + 1 >= size)
            return funnel_error_set (err, FUNNEL_ERR_INVALID, "redis url: %s too long", part);
        out [used++] = c;
    }
    out [used] = 0;
    return 0;
}

//  [user]:password or password, before the '@'.
static int
s_parse_userinfo (const char *text, size_t length, redis_url_t *out, funnel_error_t *err)
{
    const char *colon = memchr (text, ':', length);
    const char *password = colon ? colon + 1 : text;
    size_t password_length = length - (size_t) (password - text);
    if (colon && s_decode (text, (size_t) (colon - text), out->user, sizeof out->user,
                           "user", err))
        return -1;
    if (s_decode (password, password_length, out->password, sizeof out->password,
                  "password", err))
        return -1;
    if (!out->password [0])
        return funnel_error_set (err, FUNNEL_ERR_INVALID, "redis url: empty password");
    return 0;
}

//  host, or [IPv6], into host[size]; returns the text after it, NULL on error.
static const char *
s_parse_host (const char *text, char *host, size_t size, funnel_error_t *err)
{
    const char *start = text, *end;
    if (*text == '[') {
        start = text + 1;
        end = strchr (start, ']');
        if (!end) {
            funnel_error_set (err, FUNNEL_ERR_INVALID, "redis url: host: missing ']'");
            return NULL;
        }
    }
    else
        end = text + strcspn (text, ":/?#,");
    size_t length = (size_t) (end - start);
    if (length == 0) {
        funnel_error_set (err, FUNNEL_ERR_INVALID, "redis url: missing host");
        return NULL;
    }
    if (length >= size) {
        funnel_error_set (err, FUNNEL_ERR_INVALID, "redis url: host too long");
        return NULL;
    }
    for (const char *p = start; p < end; p++)
        if (!isgraph ((unsigned char) *p)) {
            funnel_error_set (err, FUNNEL_ERR_INVALID, "redis url: host '%.*s' has a bad character",
                              (int) length, start);
            return NULL;
        }
    memcpy (host, start, length);
    host [length] = 0;
    return *text == '[' ? end + 1 : end;
}

//  host[:port] {, host[:port]}: the nodes; returns the text after them.
static const char *
s_parse_nodes (const char *text, int default_port, redis_url_t *out, funnel_error_t *err)
{
    while (true) {
        if (out->node_count == REDIS_URL_NODES_MAX) {
            funnel_error_set (err, FUNNEL_ERR_INVALID, "redis url: more than %d hosts",
                              REDIS_URL_NODES_MAX);
            return NULL;
        }
        redis_node_t *node = &out->nodes [out->node_count];
        text = s_parse_host (text, node->host, sizeof node->host, err);
        if (!text)
            return NULL;
        node->port = default_port;
        if (*text == ':') {
            long value = 0;
            int length = s_parse_uint (text + 1, 65535, &value);
            if (length < 0 || value < 1) {
                funnel_error_set (err, FUNNEL_ERR_INVALID,
                                  "redis url: port '%.*s' is not 1..65535",
                                  (int) strcspn (text + 1, "/?#,"), text + 1);
                return NULL;
            }
            node->port = (int) value;
            text += 1 + length;
        }
        out->node_count++;
        if (*text != ',')
            return text;
        text++;
    }
}

//  After "redis://" or "redis+sentinel://":
//  [[user]:password@]host[:port][,host[:port]...][/MASTER][/db]
static int
s_parse_tcp_url (const char *text, bool sentinel, redis_url_t *out, funnel_error_t *err)
{
    //  The last '@': a password may contain one, a host or db never does
    const char *at = strrchr (text, '@');
    if (at && s_parse_userinfo (text, (size_t) (at - text), out, err))
        return -1;
    const char *rest = s_parse_nodes (at ? at + 1 : text, sentinel ? 26379 : 6379, out, err);
    if (!rest)
        return -1;
    if (sentinel) {
        //  The master's name, as in sentinel.conf's "sentinel monitor NAME"
        size_t length = *rest == '/' ? strspn (rest + 1,
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") : 0;
        if (length == 0)
            return funnel_error_set (err, FUNNEL_ERR_INVALID,
                                     "redis url: sentinel: missing /MASTERNAME after the hosts");
        if (length >= sizeof out->master)
            return funnel_error_set (err, FUNNEL_ERR_INVALID, "redis url: master name too long");
        memcpy (out->master, rest + 1, length);
        out->master [length] = 0;
        rest += 1 + length;
    }
    long value = 0;
    if (*rest == '/' && rest [1]) {
        int length = s_parse_uint (rest + 1, INT_MAX, &value);
        if (length < 0)
            return funnel_error_set (err, FUNNEL_ERR_INVALID,
                                     "redis url: db '%s' is not a number", rest + 1);
        out->db = (int) value;
        rest += 1 + length;
    }
    else
    if (*rest == '/')
        rest++;                 //  "host/" means db 0
    if (*rest)
        return funnel_error_set (err, FUNNEL_ERR_INVALID,
                                 "redis url: unexpected '%s' after the %s", rest,
                                 out->db ? "db" : sentinel ? "master name" : "host or port");
    out->mode = sentinel ? REDIS_MODE_SENTINEL
              : out->node_count > 1 ? REDIS_MODE_CLUSTER : REDIS_MODE_SINGLE;
    if (out->mode == REDIS_MODE_CLUSTER && out->db != 0)
        return funnel_error_set (err, FUNNEL_ERR_INVALID,
                                 "redis url: db %d: a Redis Cluster has only db 0", out->db);
    snprintf (out->host, sizeof out->host, "%s", out->nodes [0].host);
    out->port = out->nodes [0].port;
    return 0;
}

//  After "unix://": /path/to/socket[?db=N]
static int
s_parse_unix_url (const char *text, redis_url_t *out, funnel_error_t *err)
{
    out->unix_socket = true;
    out->port = 0;
    if (*text != '/')
        return funnel_error_set (err, FUNNEL_ERR_INVALID,
                                 "redis url: socket path must be absolute (unix:///path)");
    size_t length = strcspn (text, "?");
    //  sun_path bounds what the kernel accepts, below our host buffer
    if (length >= sizeof ((struct sockaddr_un *) 0)->sun_path)
        return funnel_error_set (err, FUNNEL_ERR_INVALID, "redis url: socket path too long");
    if (length < 2)
        return funnel_error_set (err, FUNNEL_ERR_INVALID, "redis url: missing socket path");
    memcpy (out->host, text, length);
    out->host [length] = 0;
    const char *query = text + length;
    if (!*query)
        return 0;
    long value = 0;
    int digits = strncmp (query, "?db=", 4) == 0 ? s_parse_uint (query + 4, INT_MAX, &value) : -1;
    if (digits < 0 || query [4 + digits])
        return funnel_error_set (err, FUNNEL_ERR_INVALID,
                                 "redis url: query '%s' is not ?db=N", query);
    out->db = (int) value;
    return 0;
}

int
redis_url_parse (const char *url, redis_url_t *out, funnel_error_t *err)
{
    assert (out);
    memset (out, 0, sizeof *out);
    out->port = 6379;
    int rc;
    if (!url || !*url)
        rc = funnel_error_set (err, FUNNEL_ERR_INVALID, "redis url: missing");
    else
    if (strncmp (url, "redis://", 8) == 0)
        rc = s_parse_tcp_url (url + 8, false, out, err);
    else
    if (strncmp (url, "redis+sentinel://", 17) == 0)
        rc = s_parse_tcp_url (url + 17, true, out, err);
    else
    if (strncmp (url, "unix://", 7) == 0)
        rc = s_parse_unix_url (url + 7, out, err);
    else
    if (strncmp (url, "rediss://", 9) == 0)
        rc = funnel_error_set (err, FUNNEL_ERR_INVALID,
                               "redis url: TLS (rediss://) is not supported by hiredis 0.14");
    else
        rc = funnel_error_set (err, FUNNEL_ERR_INVALID,
                               "redis url: scheme must be redis://, redis+sentinel:// or unix://");
    if (rc) {
        //  Leave no half-parsed password behind
        memset (out, 0, sizeof *out);
    }
    return rc;
}

void
redis_url_format (const redis_url_t *url, char *buffer, size_t size)
{
    if (url->unix_socket) {
        snprintf (buffer, size, "unix://%s?db=%d", url->host, url->db);
        return;
    }
    size_t used = (size_t) snprintf (buffer, size, "%s://%s%s",
        url->mode == REDIS_MODE_SENTINEL ? "redis+sentinel" : "redis",
        url->user, url->password [0] ? ":***@" : "");
    int count = url->node_count > 0 ? url->node_count : 1;
    for (int i = 0; i < count && used < size; i++) {
        const char *host = url->node_count > 0 ? url->nodes [i].host : url->host;
        int port = url->node_count > 0 ? url->nodes [i].port : url->port;
        bool v6 = strchr (host, ':') != NULL;
        used += (size_t) snprintf (buffer + used, size - used, "%s%s%s%s:%d",
                                   i ? "," : "", v6 ? "[" : "", host, v6 ? "]" : "", port);
    }
    if (used < size && url->mode == REDIS_MODE_SENTINEL)
        used += (size_t) snprintf (buffer + used, size - used, "/%s", url->master);
    if (used < size)
        snprintf (buffer + used, size - used, "/%d", url->db);
}

void
redis_url_single (const redis_url_t *url, const char *host, int port, redis_url_t *out)
{
    redis_url_t copy = *url;        //  host may point into url or out
    snprintf (copy.host, sizeof copy.host, "%s", host);
    copy.port = port;
    copy.unix_socket = false;
    copy.mode = REDIS_MODE_SINGLE;
    copy.node_count = 1;
    snprintf (copy.nodes [0].host, sizeof copy.nodes [0].host, "%s", host);
    copy.nodes [0].port = port;
    copy.master [0] = 0;
    *out = copy;
    memset (&copy, 0, sizeof copy);
}


//  --------------------------------------------------------------------------
//  Connection

static int64_t
s_now_ms (void)
{
    struct timespec now;
    clock_gettime (CLOCK_MONOTONIC, &now);
    return (int64_t) now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

static struct timeval
s_timeval (int ms)
{
    struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
    return tv;
}

//  Runs one handshake command; NULL with a reason on any failure.
static redisReply *
s_handshake (redisContext *ctx, int argc, const char **argv,
             char *reason, size_t size)
{
    redisReply *reply = redisCommandArgv (ctx, argc, argv, NULL);
    if (!reply || ctx->err)
        snprintf (reason, size, "%s: %s", argv [0], ctx->err ? ctx->errstr : "no reply");
    else
    if (reply->type == REDIS_REPLY_ERROR)
        snprintf (reason, size, "%s: %s", argv [0], reply->str);
    else
        return reply;
    if (reply)
        freeReplyObject (reply);
    return NULL;
}

static int
s_authenticate (redis_store_t *self, redisContext *ctx, char *reason, size_t size)
{
    if (!self->url.password [0])
        return 0;
    const char *argv [] = { "AUTH", self->url.user, self->url.password };
    redisReply *reply = self->url.user [0]
        ? s_handshake (ctx, 3, argv, reason, size)
        : s_handshake (ctx, 2, (const char *[]) { "AUTH", self->url.password }, reason, size);
    if (!reply)
        return -1;
    freeReplyObject (reply);
    return 0;
}

static int
s_select (redis_store_t *self, redisContext *ctx, char *reason, size_t size)
{
    if (self->url.db == 0)
        return 0;
    char db [16];
    snprintf (db, sizeof db, "%d", self->url.db);
    redisReply *reply = s_handshake (ctx, 2, (const char *[]) { "SELECT", db }, reason, size);
    if (!reply)
        return -1;
    freeReplyObject (reply);
    return 0;
}

//  Sentinel: the primary's address from the first sentinel (URL order)
//  that knows it. Sentinels are asked without AUTH (proto/wire.md).
static int
s_discover (redis_store_t *self, char *host, size_t host_size, int *port,
            char *reason, size_t size)
{
    snprintf (reason, size, "no sentinel answered");
    for (int i = 0; i < self->url.node_count; i++) {
        const redis_node_t *node = &self->url.nodes [i];
        redisContext *ctx = redisConnectWithTimeout (node->host, node->port,
                                                     s_timeval (CONNECT_TIMEOUT_MS));
        if (!ctx)
            continue;
        if (ctx->err) {
            snprintf (reason, size, "sentinel %s:%d: %s", node->host, node->port, ctx->errstr);
            redisFree (ctx);
            continue;
        }
        redisSetTimeout (ctx, s_timeval (COMMAND_TIMEOUT_MS));
        const char *argv [] = { "SENTINEL", "get-master-addr-by-name", self->url.master };
        char why [200];
        redisReply *reply = s_handshake (ctx, 3, argv, why, sizeof why);
        redisFree (ctx);
        if (!reply) {
            snprintf (reason, size, "sentinel %s:%d: %s", node->host, node->port, why);
            continue;
        }
        bool found = reply->type == REDIS_REPLY_ARRAY && reply->elements == 2
            && reply->element [0]->type == REDIS_REPLY_STRING
            && reply->element [1]->type == REDIS_REPLY_STRING;
        if (found) {
            snprintf (host, host_size, "%s", reply->element [0]->str);
            *port = atoi (reply->element [1]->str);
        }
        else
            snprintf (reason, size, "sentinel %s:%d does not know master '%s'",
                      node->host, node->port, self->url.master);
        freeReplyObject (reply);
        if (found && *port > 0)
            return 0;
    }
    return -1;
}

//  Sentinel: the server a sentinel named must say it is the primary (a
//  sentinel may still name the old one during a failover).
static int
s_check_role (redisContext *ctx, char *reason, size_t size)
{
    redisReply *reply = redisCommand (ctx, "ROLE");
    if (!reply || ctx->err) {
        snprintf (reason, size, "ROLE: %s", ctx->err ? ctx->errstr : "no reply");
        if (reply)
            freeReplyObject (reply);
        return -1;
    }
    int rc = -1;
    if (reply->type == REDIS_REPLY_ERROR && strncmp (reply->str, "NOPERM", 6) == 0)
        //  An ACL user without +role (deploy/redis-users.sh grants it):
        //  trust the sentinel; a demoted primary still shows by READONLY
        rc = 0;
    else
    if (reply->type == REDIS_REPLY_ERROR)
        snprintf (reason, size, "ROLE: %s", reply->str);
    else {
        const char *role = reply->type == REDIS_REPLY_ARRAY && reply->elements > 0
            && reply->element [0]->type == REDIS_REPLY_STRING ? reply->element [0]->str : "?";
        if (strcmp (role, "master") == 0)
            rc = 0;
        else
            snprintf (reason, size,
                      "the server the sentinels name is not a primary (ROLE %.32s)", role);
    }
    freeReplyObject (reply);
    return rc;
}

//  [Sentinel discovery] + connect + timeouts + AUTH [+ ROLE] + SELECT: the
//  only way a context is made, so a reconnect is never missing a step.
static redisContext *
s_open (redis_store_t *self, char *reason, size_t size)
{
    struct timeval timeout = s_timeval (CONNECT_TIMEOUT_MS);
    const char *host = self->url.host;
    int port = self->url.port;
    char primary [256];
    bool sentinel = self->url.mode == REDIS_MODE_SENTINEL;
    if (sentinel) {
        if (s_discover (self, primary, sizeof primary, &port, reason, size))
            return NULL;
        host = primary;
    }
    redisContext *ctx = self->url.unix_socket
        ? redisConnectUnixWithTimeout (host, timeout)
        : redisConnectWithTimeout (host, port, timeout);
    if (!ctx) {
        snprintf (reason, size, "out of memory");
        return NULL;
    }
    if (!ctx->err)
        redisSetTimeout (ctx, s_timeval (self->timeout_ms));
    if (ctx->err && sentinel)
        snprintf (reason, size, "primary %.100s:%d: %.100s", host, port, ctx->errstr);
    else
    if (ctx->err)
        snprintf (reason, size, "%s", ctx->errstr);
    else
    if (s_authenticate (self, ctx, reason, size) == 0
    &&  (!sentinel || s_check_role (ctx, reason, size) == 0)
    &&  s_select (self, ctx, reason, size) == 0) {
        if (sentinel)
            snprintf (self->primary, sizeof self->primary, "%s:%d", host, port);
        return ctx;
    }
    redisFree (ctx);
    return NULL;
}

//  A failed attempt or a lost connection: back off, log only the first
//  (and a change of reason: a failover goes "READONLY", "not a primary"...).
static void
s_failed (redis_store_t *self, const char *reason)
{
    if (!self->down || strcmp (reason, self->reason) != 0)
        log_warn ("redis unavailable at %s: %s; retrying", self->shown, reason);
    snprintf (self->reason, sizeof self->reason, "%s", reason);
    self->down = true;
    self->backoff_ms = self->backoff_ms
        ? (self->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : self->backoff_ms * 2)
        : BACKOFF_FIRST_MS;
    self->retry_at_ms = s_now_ms () + self->backoff_ms;
}

//  Frees the dead context (reason copied first: it lives in the context).
static void
s_drop (redis_store_t *self, const char *reason)
{
    char copy [256];
    snprintf (copy, sizeof copy, "%s", reason);
    redisFree (self->ctx);
    self->ctx = NULL;
    s_failed (self, copy);
}

redis_store_t *
redis_store_new (const redis_url_t *url)
{
    assert (url);
    redis_store_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->url = *url;
    self->timeout_ms = COMMAND_TIMEOUT_MS;
    redis_url_format (url, self->shown, sizeof self->shown);
    return self;
}

void
redis_store_destroy (redis_store_t **self_p)
{
    assert (self_p);
    redis_store_t *self = *self_p;
    if (self) {
        if (self->ctx)
            redisFree (self->ctx);
        //  The password lived here too
        memset (&self->url, 0, sizeof self->url);
        free (self);
        *self_p = NULL;
    }
}

int
redis_store_connect (redis_store_t *self)
{
    assert (self);
    if (self->ctx && !redis_store_connected (self))
        return -1;              //  Dropped for READONLY: wait the backoff
    if (self->ctx)
        return 0;
    if (s_now_ms () < self->retry_at_ms)
        return -1;
    self->attempts++;
    char reason [256];
    self->ctx = s_open (self, reason, sizeof reason);
    if (!self->ctx) {
        s_failed (self, reason);
        return -1;
    }
    if (self->url.mode == REDIS_MODE_SENTINEL)
        log_info ("redis connected at %s: primary %s", self->shown, self->primary);
    else
        log_info ("redis connected at %s", self->shown);
    self->readonly = false;
    self->generation++;
    self->down = false;
    self->backoff_ms = 0;
    self->retry_at_ms = 0;
    return 0;
}

bool
redis_store_connected (redis_store_t *self)
{
    assert (self);
    if (self->ctx && self->readonly)
        s_drop (self, "READONLY: the server is no longer the primary");
    return self->ctx != NULL;
}

void
redis_store_set_timeout (redis_store_t *self, int ms)
{
    assert (self && ms > 0);
    self->timeout_ms = ms;
    if (self->ctx)
        redisSetTimeout (self->ctx, s_timeval (ms));
}

//  Sentinel mode: a demoted primary answers writes with READONLY; note it,
//  the connection is dropped once the caller's pipeline is read.
static void
s_note_reply (redis_store_t *self, const redisReply *reply)
{
    if (self->url.mode == REDIS_MODE_SENTINEL && reply->type == REDIS_REPLY_ERROR
    &&  strncmp (reply->str, "READONLY", 8) == 0)
        self->readonly = true;
}

void
redis_store_disconnect (redis_store_t *self)
{
    assert (self);
    if (self->ctx)
        s_drop (self, self->ctx->err ? self->ctx->errstr : "disconnected");
}

uint64_t
redis_store_generation (redis_store_t *self)
{
    assert (self);
    return self->generation;
}

redisContext *
redis_store_context (redis_store_t *self)
{
    assert (self);
    return self->ctx;
}

//  One command on the live context; a lost connection drops it.
static redisReply *
s_command (redis_store_t *self, int argc, const char **argv, const size_t *argvlen)
{
    redisReply *reply = redisCommandArgv (self->ctx, argc, argv, argvlen);
    if (reply && !self->ctx->err) {
        s_note_reply (self, reply);
        return reply;
    }
    if (reply)
        freeReplyObject (reply);
    s_drop (self, self->ctx->err ? self->ctx->errstr : "no reply");
    return NULL;
}

redisReply *
redis_store_command (redis_store_t *self, int argc,
                     const char **argv, const size_t *argvlen)
{
    assert (self && argc > 0 && argv);
    if (redis_store_connect (self))
        return NULL;
    return s_command (self, argc, argv, argvlen);
}

redisReply *
redis_store_recv (redis_store_t *self)
{
    if (!self->ctx)
        return NULL;
    redisReply *reply = NULL;
    if (redisGetReply (self->ctx, (void **) &reply) == REDIS_OK && reply && !self->ctx->err) {
        s_note_reply (self, reply);
        return reply;
    }
    if (reply)
        freeReplyObject (reply);
    s_drop (self, self->ctx->err ? self->ctx->errstr : "no reply");
    return NULL;
}


//  --------------------------------------------------------------------------
//  Self test

#undef NDEBUG
#include <assert.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

static bool
streq (const char *a, const char *b)
{
    return strcmp (a, b) == 0;
}

//  Redirects fd 2 to a temp file, to check what was logged.
typedef struct {
    int saved;
    FILE *file;
} capture_t;

static void
s_capture_start (capture_t *capture)
{
    fflush (stderr);
    capture->file = tmpfile ();
    assert (capture->file);
    capture->saved = dup (2);
    assert (capture->saved >= 0);
    dup2 (fileno (capture->file), 2);
}

static char *
s_capture_end (capture_t *capture, bool verbose)
{
    fflush (stderr);
    dup2 (capture->saved, 2);
    close (capture->saved);
    long size = ftell (capture->file);
    assert (size >= 0);
    char *text = calloc (1, (size_t) size + 1);
    assert (text);
    rewind (capture->file);
    assert (fread (text, 1, (size_t) size, capture->file) == (size_t) size);
    fclose (capture->file);
    if (verbose)
        fprintf (stderr, "%s", text);
    return text;
}

static int
s_count (const char *text, const char *word)
{
    int count = 0;
    for (const char *p = strstr (text, word); p; p = strstr (p + 1, word))
        count++;
    return count;
}

static void
s_test_url_parser (void)
{
    struct {
        const char *url;
        bool unix_socket;
        const char *host;
        int port;
        const char *user;
        const char *password;
        int db;
    } good [] = {
        { "redis://127.0.0.1:6379/0", false, "127.0.0.1", 6379, "", "", 0 },
        { "redis://localhost", false, "localhost", 6379, "", "", 0 },
        { "redis://localhost/", false, "localhost", 6379, "", "", 0 },
        { "redis://h:1/15", false, "h", 1, "", "", 15 },
        { "redis://h:65535", false, "h", 65535, "", "", 0 },
        { "redis://h/7", false, "h", 6379, "", "", 7 },
        { "redis://u:p@h:7000/2", false, "h", 7000, "u", "p", 2 },
        { "redis://:secret@h", false, "h", 6379, "", "secret", 0 },
        { "redis://secret@h", false, "h", 6379, "", "secret", 0 },
        { "redis://u:p%40ss:w%3Ard@h", false, "h", 6379, "u", "p@ss:w:rd", 0 },
        { "redis://u:p@ss@h", false, "h", 6379, "u", "p@ss", 0 },
        { "redis://[::1]:6380/1", false, "::1", 6380, "", "", 1 },
        { "unix:///run/redis.sock", true, "/run/redis.sock", 0, "", "", 0 },
        { "unix:///tmp/r.sock?db=2", true, "/tmp/r.sock", 0, "", "", 2 },
    };
    for (size_t i = 0; i < sizeof good / sizeof good [0]; i++) {
        redis_url_t url;
        funnel_error_t err;
        funnel_error_clear (&err);
        int rc = redis_url_parse (good [i].url, &url, &err);
        if (rc)
            fprintf (stderr, "%s: %s\n", good [i].url, err.message);
        assert (rc == 0 && err.code == NULL);
        assert (url.unix_socket == good [i].unix_socket);
        assert (streq (url.host, good [i].host));
        assert (url.port == good [i].port);
        assert (streq (url.user, good [i].user));
        assert (streq (url.password, good [i].password));
        assert (url.db == good [i].db);
    }
    struct {
        const char *url;
        const char *message;        //  Names the part
    } bad [] = {
        { NULL, "missing" },
        { "", "missing" },
        { "127.0.0.1:6379", "scheme" },
        { "http://h", "scheme" },
        { "rediss://h", "TLS" },
        { "redis://", "missing host" },
        { "redis://:6379", "missing host" },
        { "redis://h:0", "port '0'" },
        { "redis://h:65536", "port '65536'" },
        { "redis://h:", "port ''" },
        { "redis://h:63x9", "unexpected 'x9'" },
        { "redis://h:-1", "port '-1'" },
        { "redis://h/x", "db 'x'" },
        { "redis://h/1/2", "unexpected '/2'" },
        { "redis://h/99999999999", "db '99999999999'" },
        { "redis://h?db=1", "unexpected '?db=1'" },
        { "redis://u:@h", "empty password" },
        { "redis://@h", "empty password" },
        { "redis://u:p%4@h", "escape in password" },
        { "redis://u%zz:p@h", "escape in user" },
        { "redis://[::1:6379", "missing ']'" },
        { "redis://h st", "bad character" },
        { "unix://run/redis.sock", "absolute" },
        { "unix:///", "missing socket path" },
        { "unix:///tmp/r.sock?db=x", "query '?db=x'" },
        { "unix:///tmp/r.sock?database=1", "query" },
        { "unix:///tmp/r.sock?db=1&x=2", "query" },
        { "redis://h1:1,h2:2/3", "only db 0" },
        { "redis://h1:1,", "missing host" },
        { "redis://h1:1,,h2", "missing host" },
        { "redis://h1:1,h2:0", "port '0'" },
        { "redis://h,h,h,h,h,h,h,h,h,h,h,h,h,h,h,h,h", "more than 16 hosts" },
        { "redis+sentinel://h1:1,h2:2", "missing /MASTERNAME" },
        { "redis+sentinel://h1:1/", "missing /MASTERNAME" },
        { "redis+sentinel://h1/m y", "unexpected ' y' after the master name" },
        { "redis+sentinel://h1/m/x", "db 'x'" },
        { "redis+sentinel://h1/m/1/2", "unexpected '/2'" },
        { "redis+sentinel://:@h1/m", "empty password" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad [0]; i++) {
        redis_url_t url;
        funnel_error_t err;
        funnel_error_clear (&err);
        int rc = redis_url_parse (bad [i].url, &url, &err);
        if (rc == 0 || !strstr (err.message, bad [i].message))
            fprintf (stderr, "%s: '%s'\n", bad [i].url, err.message);
        assert (rc == -1);
        assert (streq (err.code, FUNNEL_ERR_INVALID));
        assert (strstr (err.message, "redis url: "));
        assert (strstr (err.message, bad [i].message));
    }
    //  Seed lists: a cluster; redis+sentinel: sentinels and a master name
    redis_url_t many;
    funnel_error_t many_err;
    assert (redis_url_parse ("redis://u:p@h1:7000,[::1]:7001,h3", &many, &many_err) == 0);
    assert (many.mode == REDIS_MODE_CLUSTER && many.node_count == 3);
    assert (streq (many.nodes [0].host, "h1") && many.nodes [0].port == 7000);
    assert (streq (many.nodes [1].host, "::1") && many.nodes [1].port == 7001);
    assert (streq (many.nodes [2].host, "h3") && many.nodes [2].port == 6379);
    assert (streq (many.host, "h1") && many.port == 7000 && streq (many.password, "p"));
    char shown_many [512];
    redis_url_format (&many, shown_many, sizeof shown_many);
    assert (streq (shown_many, "redis://u:***@h1:7000,[::1]:7001,h3:6379/0"));
    assert (redis_url_parse ("redis://h1,h2/0", &many, NULL) == 0);
    assert (many.mode == REDIS_MODE_CLUSTER);
    assert (redis_url_parse ("redis://h1:5", &many, NULL) == 0);
    assert (many.mode == REDIS_MODE_SINGLE && many.node_count == 1);
    assert (redis_url_parse ("redis+sentinel://:pw@s1,s2:5000/my-master.1/4", &many, NULL) == 0);
    assert (many.mode == REDIS_MODE_SENTINEL && many.node_count == 2);
    assert (streq (many.nodes [0].host, "s1") && many.nodes [0].port == 26379);
    assert (many.nodes [1].port == 5000 && many.db == 4);
    assert (streq (many.master, "my-master.1") && streq (many.password, "pw"));
    redis_url_format (&many, shown_many, sizeof shown_many);
    assert (streq (shown_many, "redis+sentinel://:***@s1:26379,s2:5000/my-master.1/4"));
    assert (redis_url_parse ("redis+sentinel://s1/m", &many, NULL) == 0);
    assert (many.mode == REDIS_MODE_SENTINEL && many.node_count == 1 && many.db == 0);
    redis_url_t one;
    redis_url_single (&many, "10.0.0.5", 6390, &one);
    assert (one.mode == REDIS_MODE_SINGLE && streq (one.host, "10.0.0.5") && one.port == 6390);
    assert (one.node_count == 1 && one.nodes [0].port == 6390 && !one.master [0]);

    //  A long socket path is refused before the kernel would
    char long_url [300] = "unix:///";
    memset (long_url + 8, 'a', 200);
    long_url [208] = 0;
    redis_url_t url;
    assert (redis_url_parse (long_url, &url, NULL) == -1);

    //  The password never shows in what we log
    assert (redis_url_parse ("redis://bob:hunter2@h:1/3", &url, NULL) == 0);
    char shown [512];
    redis_url_format (&url, shown, sizeof shown);
    assert (streq (shown, "redis://bob:***@h:1/3"));
}

//  A loopback port with nothing listening (bound, read, then released).
static int
s_closed_port (void)
{
    int fd = socket (AF_INET, SOCK_STREAM, 0);
    assert (fd >= 0);
    struct sockaddr_in address = { .sin_family = AF_INET };
    address.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
    assert (bind (fd, (struct sockaddr *) &address, sizeof address) == 0);
    socklen_t length = sizeof address;
    assert (getsockname (fd, (struct sockaddr *) &address, &length) == 0);
    close (fd);
    return ntohs (address.sin_port);
}

static void
s_test_backoff (bool verbose)
{
    char text [64];
    snprintf (text, sizeof text, "redis://:sekrit@127.0.0.1:%d/0", s_closed_port ());
    redis_url_t url;
    assert (redis_url_parse (text, &url, NULL) == 0);
    redis_store_t *store = redis_store_new (&url);
    assert (store);
    capture_t capture;
    s_capture_start (&capture);
    int64_t start = s_now_ms ();
    assert (redis_store_connect (store) == -1);
    assert (s_now_ms () - start < CONNECT_TIMEOUT_MS);
    assert (store->attempts == 1 && store->backoff_ms == BACKOFF_FIRST_MS);
    //  Within the backoff: refused without an attempt
    assert (redis_store_connect (store) == -1);
    assert (redis_store_command (store, 1, (const char *[]) { "PING" }, NULL) == NULL);
    assert (store->attempts == 1);
    //  After it: one more attempt, and the delay doubles; still one log line
    usleep ((BACKOFF_FIRST_MS + 20) * 1000);
    assert (redis_store_connect (store) == -1);
    assert (store->attempts == 2 && store->backoff_ms == 2 * BACKOFF_FIRST_MS);
    char *log = s_capture_end (&capture, verbose);
    assert (s_count (log, "redis unavailable at redis://:***@127.0.0.1:") == 1);
    assert (!strstr (log, "sekrit"));
    free (log);
    //  The delay stops growing at the maximum
    for (int i = 0; i < 10; i++)
        s_failed (store, "test");
    assert (store->backoff_ms == BACKOFF_MAX_MS);
    redis_store_destroy (&store);
    assert (store == NULL);
}

static redisReply *
s_run (redis_store_t *store, int argc, const char **argv)
{
    return redis_store_command (store, argc, argv, NULL);
}

static void
s_expect_string (redisReply *reply, const char *expected)
{
    assert (reply);
    if (reply->type != REDIS_REPLY_STRING && reply->type != REDIS_REPLY_STATUS)
        fprintf (stderr, "reply type %d: %s\n", reply->type, reply->str ? reply->str : "");
    assert (reply->type == REDIS_REPLY_STRING || reply->type == REDIS_REPLY_STATUS);
    assert (streq (reply->str, expected));
    freeReplyObject (reply);
}

static redis_store_t *
s_test_store (const char *text)
{
    redis_url_t url;
    funnel_error_t err;
    assert (redis_url_parse (text, &url, &err) == 0);
    redis_store_t *store = redis_store_new (&url);
    assert (store);
    return store;
}

//  Commands, binary arguments, pipelining, an error reply, a lost
//  connection.
static void
s_test_commands (const char *text, bool verbose)
{
    capture_t capture;
    s_capture_start (&capture);
    redis_store_t *store = s_test_store (text);
    assert (!redis_store_connected (store));
    assert (redis_store_connect (store) == 0);
    assert (redis_store_connected (store) && redis_store_context (store));

    const char *set [] = { "SET", "funnel:test:k", "-v" };
    s_expect_string (redis_store_command (store, 3, set, NULL), "OK");
    const char *get [] = { "GET", "funnel:test:k" };
    s_expect_string (redis_store_command (store, 2, get, NULL), "-v");
    redisReply *reply;

    //  Pipelined: appended to the context, replies read back in order
    const char *append [] = { "APPEND", "funnel:test:k", "x" };
    redisAppendCommandArgv (redis_store_context (store), 3, append, NULL);
    redisAppendCommandArgv (redis_store_context (store), 2, get, NULL);
    reply = redis_store_recv (store);
    assert (reply && reply->type == REDIS_REPLY_INTEGER && reply->integer == 3);
    freeReplyObject (reply);
    s_expect_string (redis_store_recv (store), "-vx");

    //  Binary-safe arguments: a NUL inside
    const char *binary [] = { "SET", "funnel:test:k", "a\0b" };
    size_t lengths [] = { 3, 13, 3 };
    s_expect_string (redis_store_command (store, 3, binary, lengths), "OK");
    reply = redis_store_command (store, 2, get, NULL);
    assert (reply && reply->type == REDIS_REPLY_STRING && reply->len == 3);
    assert (memcmp (reply->str, "a\0b", 3) == 0);
    freeReplyObject (reply);

    //  A command error is a reply, not a lost connection
    const char *wrong [] = { "HGET", "funnel:test:k", "f" };
    reply = redis_store_command (store, 3, wrong, NULL);
    assert (reply && reply->type == REDIS_REPLY_ERROR);
    freeReplyObject (reply);
    assert (redis_store_connected (store));

    //  Lost connection: killed from another client
    redis_store_t *killer = s_test_store (text);
    reply = s_run (store, 2, (const char *[]) { "CLIENT", "ID" });
    assert (reply && reply->type == REDIS_REPLY_INTEGER);
    char id [32];
    snprintf (id, sizeof id, "%lld", reply->integer);
    freeReplyObject (reply);
    reply = s_run (killer, 4, (const char *[]) { "CLIENT", "KILL", "ID", id });
    assert (reply && reply->type == REDIS_REPLY_INTEGER && reply->integer == 1);
    freeReplyObject (reply);
    assert (redis_store_command (store, 2, get, NULL) == NULL);
    assert (!redis_store_connected (store));
    assert (redis_store_command (store, 2, get, NULL) == NULL);     //  Backoff
    assert (redis_store_recv (store) == NULL);                      //  Not connected
    usleep ((BACKOFF_FIRST_MS + 20) * 1000);
    reply = redis_store_command (store, 2, get, NULL);
    assert (reply && reply->type == REDIS_REPLY_STRING && reply->len == 3);
    freeReplyObject (reply);
    reply = s_run (store, 2, (const char *[]) { "DEL", "funnel:test:k" });
    assert (reply && reply->integer == 1);
    freeReplyObject (reply);
    redis_store_disconnect (store);
    assert (!redis_store_connected (store));
    redis_store_destroy (&killer);
    redis_store_destroy (&store);
    char *log = s_capture_end (&capture, verbose);
    assert (s_count (log, "redis unavailable") == 2);      //  Kill, then disconnect
    assert (s_count (log, "redis connected") == 3);
    free (log);
}

//  AUTH user pass (ACL user) and AUTH pass (requirepass).
static void
s_test_auth (const redis_url_t *base, bool verbose)
{
    capture_t capture;
    s_capture_start (&capture);
    char text [512];
    redis_store_t *admin = redis_store_new (base);
    assert (admin);
    s_expect_string (s_run (admin, 7, (const char *[]) {
        "ACL", "SETUSER", "funneltest", "on", ">pa:ss@1", "~*", "+@all" }), "OK");
    snprintf (text, sizeof text, "redis://funneltest:pa%%3Ass%%401@%s:%d/1",
              base->host, base->port);
    redis_store_t *store = s_test_store (text);
    redisReply *reply;
    s_expect_string (s_run (store, 2, (const char *[]) { "ACL", "WHOAMI" }), "funneltest");
    redis_store_destroy (&store);

    snprintf (text, sizeof text, "redis://funneltest:b4dpw@%s:%d", base->host, base->port);
    store = s_test_store (text);
    assert (redis_store_connect (store) == -1);
    redis_store_destroy (&store);

    s_expect_string (s_run (admin, 4, (const char *[]) {
        "CONFIG", "SET", "requirepass", "topsecret" }), "OK");
    snprintf (text, sizeof text, "redis://:topsecret@%s:%d", base->host, base->port);
    store = s_test_store (text);
    s_expect_string (s_run (store, 1, (const char *[]) { "PING" }), "PONG");
    redis_store_destroy (&store);
    //  admin authenticated before the password was set: still allowed
    s_expect_string (s_run (admin, 4, (const char *[]) {
        "CONFIG", "SET", "requirepass", "" }), "OK");
    reply = s_run (admin, 3, (const char *[]) { "ACL", "DELUSER", "funneltest" });
    assert (reply && reply->type == REDIS_REPLY_INTEGER && reply->integer == 1);
    freeReplyObject (reply);
    redis_store_destroy (&admin);
    char *log = s_capture_end (&capture, verbose);
    assert (s_count (log, "redis unavailable") == 1 && strstr (log, "AUTH"));
    assert (!strstr (log, "b4dpw") && !strstr (log, "topsecret") && !strstr (log, "pa:ss"));
    free (log);
}

//  unix://path?db=2 must SELECT: a key set there shows on TCP db 2 only.
static void
s_test_unix_socket (const char *sock, const redis_url_t *base, bool verbose)
{
    capture_t capture;
    s_capture_start (&capture);
    char text [512];
    snprintf (text, sizeof text, "unix://%s?db=2", sock);
    redis_store_t *via_socket = s_test_store (text);
    s_expect_string (s_run (via_socket, 3, (const char *[]) {
        "SET", "funnel:test:db", "two" }), "OK");
    snprintf (text, sizeof text, "redis://%s:%d/2", base->host, base->port);
    redis_store_t *db2 = s_test_store (text);
    s_expect_string (s_run (db2, 2, (const char *[]) { "GET", "funnel:test:db" }), "two");
    redis_store_t *db0 = redis_store_new (base);
    redisReply *reply = s_run (db0, 2, (const char *[]) { "GET", "funnel:test:db" });
    assert (reply && reply->type == REDIS_REPLY_NIL);
    freeReplyObject (reply);
    reply = s_run (via_socket, 2, (const char *[]) { "DEL", "funnel:test:db" });
    assert (reply && reply->integer == 1);
    freeReplyObject (reply);
    redis_store_destroy (&via_socket);
    redis_store_destroy (&db2);
    redis_store_destroy (&db0);
    free (s_capture_end (&capture, verbose));
}

void
redis_store_test (bool verbose)
{
    if (verbose)
        printf ("\n");
    //  hiredis writes with write(2): a daemon must ignore SIGPIPE, so do we
    signal (SIGPIPE, SIG_IGN);
    s_test_url_parser ();
    s_test_backoff (verbose);

    const char *text = getenv ("FUNNEL_TEST_REDIS_URL");
    if (!text || !*text) {
        if (verbose)
            printf ("FUNNEL_TEST_REDIS_URL not set: live Redis tests skipped\n");
        return;
    }
    redis_url_t base;
    assert (redis_url_parse (text, &base, NULL) == 0);
    s_test_commands (text, verbose);
    s_test_auth (&base, verbose);
    const char *sock = getenv ("FUNNEL_TEST_REDIS_SOCK");
    if (sock && *sock)
        s_test_unix_socket (sock, &base, verbose);
}
