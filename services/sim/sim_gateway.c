/*  sim_gateway — see sim_gateway.h for why. */
#include <curl/curl.h>
#include "event_codec.h"
#include "json_msgpack.h"
#include "sim_gateway.h"

struct _sim_gateway_t {
    CURL *curl;
    char *url;
    struct curl_slist *headers;
    char *response;
    size_t response_size;
};

static size_t
s_collect (char *data, size_t size, size_t count, void *arg)
{
    sim_gateway_t *self = (sim_gateway_t *) arg;
    size_t bytes = size * count;
    char *grown = realloc (self->response, self->response_size + bytes + 1);
    if (!grown)
        return 0;
    memcpy (grown + self->response_size, data, bytes);
    self->response = grown;
    self->response_size += bytes;
    self->response [self->response_size] = 0;
    return bytes;
}

sim_gateway_t *
sim_gateway_new (const char *address, const char *token)
{
    sim_gateway_t *self = (sim_gateway_t *) zmalloc (sizeof (sim_gateway_t));
    self->curl = curl_easy_init ();
    char *authorization = NULL;
    if (!self->curl || asprintf (&self->url, "http://%s/v1/events", address) < 0
    ||  asprintf (&authorization, "Authorization: Bearer %s", token) < 0) {
        self->url = NULL;
        sim_gateway_destroy (&self);
        return NULL;
    }
    self->headers = curl_slist_append (NULL, "Content-Type: application/json");
    self->headers = curl_slist_append (self->headers, authorization);
    self->headers = curl_slist_append (self->headers, "Expect:");
    free (authorization);
    curl_easy_setopt (self->curl, CURLOPT_URL, self->url);
    curl_easy_setopt (self->curl, CURLOPT_HTTPHEADER, self->headers);
    curl_easy_setopt (self->curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt (self->curl, CURLOPT_WRITEFUNCTION, s_collect);
    curl_easy_setopt (self->curl, CURLOPT_WRITEDATA, self);
    curl_easy_setopt (self->curl, CURLOPT_USERAGENT, "funnel-sim/" FUNNEL_VERSION);
    return self;
}

void
sim_gateway_destroy (sim_gateway_t **self_p)
{
    if (*self_p) {
        sim_gateway_t *self = *self_p;
        if (self->curl)
            curl_easy_cleanup (self->curl);
        curl_slist_free_all (self->headers);
        free (self->url);
        free (self->response);
        free (self);
        *self_p = NULL;
    }
}

funnel_call_status_t
sim_gateway_publish (sim_gateway_t *self, const void *body, size_t size, int timeout_ms,
                     zframe_t **reply)
{
    *reply = NULL;
    funnel_error_t err;
    event_codec_t *msg = event_codec_decode (body, size, &event_codec_limits_body, &err);
    json_t *json = msg ? json_from_msgpack (event_codec_root (msg)) : NULL;
    event_codec_destroy (&msg);
    char *text = json ? json_dumps (json, JSON_COMPACT) : NULL;
    json_decref (json);
    if (!text)
        return FUNNEL_CALL_BROKEN;
    self->response_size = 0;
    curl_easy_setopt (self->curl, CURLOPT_POSTFIELDS, text);
    curl_easy_setopt (self->curl, CURLOPT_POSTFIELDSIZE, (long) strlen (text));
    curl_easy_setopt (self->curl, CURLOPT_TIMEOUT_MS, (long) timeout_ms);
    CURLcode code = curl_easy_perform (self->curl);
    free (text);
    long status = 0;
    curl_easy_getinfo (self->curl, CURLINFO_RESPONSE_CODE, &status);
    json_t *answer = code == CURLE_OK && self->response_size
                   ? json_loadb (self->response, self->response_size, 0, NULL) : NULL;
    funnel_call_status_t rc = FUNNEL_CALL_TIMEOUT;
    if (status == 200 && json_is_object (answer))
        rc = FUNNEL_CALL_OK;
    else
    if (status >= 400 && json_is_string (json_object_get (answer, "code")))
        rc = FUNNEL_CALL_ERR;
    msgpack_sbuffer sbuf;
    if (rc != FUNNEL_CALL_TIMEOUT && json_to_msgpack_sbuffer (answer, &sbuf) == 0) {
        *reply = zframe_new (sbuf.data, sbuf.size);
        msgpack_sbuffer_destroy (&sbuf);
    }
    json_decref (answer);
    return rc;
}

char *
sim_gateway_first_token (const char *path)
{
    FILE *file = fopen (path, "r");
    if (!file)
        return NULL;
    char line [1024], *token = NULL;
    while (!token && fgets (line, sizeof line, file)) {
        line [strcspn (line, "#")] = 0;
        char *save = NULL, *word = strtok_r (line, " \t\r\n", &save);
        if (word)
            token = strdup (word);
    }
    fclose (file);
    return token;
}
