/*  gateway-bench — load for the gateway's figures (bench/run_gateway_bench.sh).

    gateway-bench direct API EVENTS BATCH CONNS RUN
        PUBLISH lead.capture batches of BATCH straight to a service's API
        socket from CONNS threads (one DEALER each): the baseline.
    gateway-bench http HOST:PORT TOKEN EVENTS BATCH CONNS RUN
        the same events as JSON to POST /v1/events over CONNS kept-alive
        HTTP/1.1 connections, one thread each (BATCH 1: one event per
        request, a JSON object; else a JSON array).
    gateway-bench receive PORT COUNT
        a webhook receiver: answers 200 with keep-alive and prints the
        rate from its first to its COUNT-th POST (bounded: 120 s).
    Every request is checked (OK / 200); a failure stops the run, exit 1.
*/
#include <arpa/inet.h>
#include <msgpack.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "funnel_client.h"

typedef struct {
    const char *target, *token, *run;
    long first, count;              //  Event numbers of this thread
    int batch;
    bool failed;
} job_t;

static int64_t
s_now_us (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void
s_pack_event (msgpack_packer *pk, const char *run, long n)
{
    char id [64], lead [64];
    snprintf (id, sizeof id, "gb-%s-%ld", run, n);
    snprintf (lead, sizeof lead, "GB%s%ld", run, n);
    msgpack_pack_map (pk, 6);
    msgpack_pack_str_with_body (pk, "v", 1); msgpack_pack_int (pk, 1);
    msgpack_pack_str_with_body (pk, "id", 2); msgpack_pack_str_with_body (pk, id, strlen (id));
    msgpack_pack_str_with_body (pk, "type", 4);
    msgpack_pack_str_with_body (pk, "lead.capture", 12);
    msgpack_pack_str_with_body (pk, "ts", 2); msgpack_pack_int64 (pk, zclock_time ());
    msgpack_pack_str_with_body (pk, "src", 3); msgpack_pack_str_with_body (pk, "bench", 5);
    msgpack_pack_str_with_body (pk, "data", 4);
    msgpack_pack_map (pk, 1);
    msgpack_pack_str_with_body (pk, "lead", 4); msgpack_pack_str_with_body (pk, lead, strlen (lead));
}

static void *
s_direct (void *arg)
{
    job_t *job = (job_t *) arg;
    funnel_client_t *client = funnel_client_new (job->target);
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init (&sbuf);
    for (long n = job->first; n < job->first + job->count && !job->failed; n += job->batch) {
        long size = job->first + job->count - n < job->batch ? job->first + job->count - n : job->batch;
        sbuf.size = 0;
        msgpack_packer pk;
        msgpack_packer_init (&pk, &sbuf, msgpack_sbuffer_write);
        msgpack_pack_array (&pk, (size_t) size);
        for (long i = 0; i < size; i++)
            s_pack_event (&pk, job->run, n + i);
        zframe_t *reply = NULL;
        if (funnel_client_call (client, "PUBLISH", sbuf.data, sbuf.size, 10000, &reply)
            != FUNNEL_CALL_OK)
            job->failed = true;
        zframe_destroy (&reply);
    }
    msgpack_sbuffer_destroy (&sbuf);
    funnel_client_destroy (&client);
    return NULL;
}

static int
s_connect (const char *target)
{
    char host [64];
    const char *colon = strrchr (target, ':');
    if (!colon || (size_t) (colon - target) >= sizeof host)
        return -1;
    memcpy (host, target, (size_t) (colon - target));
    host [colon - target] = 0;
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons ((uint16_t) atoi (colon + 1)) };
    inet_pton (AF_INET, host, &addr.sin_addr);
    int fd = socket (AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt (fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect (fd, (struct sockaddr *) &addr, sizeof addr)) {
        close (fd);
        return -1;
    }
    return fd;
}

//  Reads one HTTP response; returns its status, or -1.
static int
s_read_response (int fd, char *buf, size_t size)
{
    size_t have = 0;
    char *end = NULL;
    while (!end) {
        ssize_t got = read (fd, buf + have, size - have - 1);
        if (got <= 0)
            return -1;
        have += (size_t) got;
        buf [have] = 0;
        end = strstr (buf, "\r\n\r\n");
    }
    int status = atoi (buf + 9);
    char *length = strcasestr (buf, "Content-Length:");
    size_t body = length ? strtoul (length + 15, NULL, 10) : 0;
    size_t want = (size_t) (end + 4 - buf) + body;
    while (have < want) {
        ssize_t got = read (fd, buf + have, size - have - 1);
        if (got <= 0)
            return -1;
        have += (size_t) got;
    }
    return status;
}

static void *
s_http (void *arg)
{
    job_t *job = (job_t *) arg;
    int fd = s_connect (job->target);
    if (fd < 0) {
        job->failed = true;
        return NULL;
    }
    size_t max = 256 + (size_t) job->batch * 160;
    char *body = malloc (max), *request = malloc (max + 512), response [8192];
    for (long n = job->first; n < job->first + job->count && !job->failed; n += job->batch) {
        long size = job->first + job->count - n < job->batch ? job->first + job->count - n : job->batch;
        size_t used = 0;
        if (job->batch > 1)
            body [used++] = '[';
        for (long i = 0; i < size; i++)
            used += (size_t) snprintf (body + used, max - used,
                "%s{\"id\":\"gb-%s-%ld\",\"type\":\"lead.capture\",\"data\":{\"lead\":\"GB%s%ld\"}}",
                i ? "," : "", job->run, n + i, job->run, n + i);
        if (job->batch > 1)
            body [used++] = ']';
        int head = snprintf (request, 512, "POST /v1/events HTTP/1.1\r\nHost: bench\r\n"
                             "Authorization: Bearer %s\r\nContent-Type: application/json\r\n"
                             "Content-Length: %zu\r\n\r\n", job->token, used);
        memcpy (request + head, body, used);
        size_t total = (size_t) head + used;
        for (size_t sent = 0; sent < total; ) {
            ssize_t w = write (fd, request + sent, total - sent);
            if (w <= 0) {
                job->failed = true;
                break;
            }
            sent += (size_t) w;
        }
        int status = job->failed ? -1 : s_read_response (fd, response, sizeof response);
        if (status != 200) {
            fprintf (stderr, "http: status %d: %.300s\n", status, response);
            job->failed = true;
        }
    }
    free (body);
    free (request);
    close (fd);
    return NULL;
}

static int
s_receive (int port, long count)
{
    int listener = socket (AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt (listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons ((uint16_t) port) };
    inet_pton (AF_INET, "127.0.0.1", &addr.sin_addr);
    if (bind (listener, (struct sockaddr *) &addr, sizeof addr) || listen (listener, 16)) {
        perror ("receive: bind");
        return 1;
    }
    struct timeval tv = { 120, 0 };
    setsockopt (listener, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    printf ("receive: listening on %d\n", port);
    fflush (stdout);
    long got = 0;
    int64_t start = 0;
    char buf [70000];
    static const char ok [] = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    while (got < count) {
        int fd = accept (listener, NULL, NULL);
        if (fd < 0)
            break;
        setsockopt (fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt (fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        //  Requests are read whole (headers + Content-Length) one at a time
        while (got < count && s_read_response (fd, buf, sizeof buf) >= 0) {
            if (got++ == 0)
                start = s_now_us ();
            if (write (fd, ok, sizeof ok - 1) < 0)
                break;
        }
        close (fd);
    }
    double seconds = (double) (s_now_us () - start) / 1e6;
    printf ("webhook: %ld POSTs received in %.2f s = %.0f events/s\n", got, seconds,
            got > 1 ? (double) (got - 1) / seconds : 0);
    close (listener);
    return got == count ? 0 : 1;
}

int
main (int argc, char *argv [])
{
    zsys_init ();
    if (argc == 4 && strcmp (argv [1], "receive") == 0)
        return s_receive (atoi (argv [2]), atol (argv [3]));
    bool direct = argc == 7 && strcmp (argv [1], "direct") == 0;
    bool http = argc == 8 && strcmp (argv [1], "http") == 0;
    if (!direct && !http) {
        fprintf (stderr, "usage: gateway-bench direct API EVENTS BATCH CONNS RUN\n"
                         "       gateway-bench http HOST:PORT TOKEN EVENTS BATCH CONNS RUN\n"
                         "       gateway-bench receive PORT COUNT\n");
        return 2;
    }
    int a = direct ? 3 : 4;
    long events = atol (argv [a]);
    int batch = atoi (argv [a + 1]), conns = atoi (argv [a + 2]);
    if (events < 1 || batch < 1 || batch > 1000 || conns < 1 || conns > 64)
        return 2;
    job_t jobs [64];
    pthread_t threads [64];
    int64_t start = s_now_us ();
    for (int c = 0; c < conns; c++) {
        jobs [c] = (job_t) { .target = argv [2], .token = http ? argv [3] : NULL,
                             .run = argv [a + 3], .first = events * c / conns,
                             .count = events * (c + 1) / conns - events * c / conns,
                             .batch = batch };
        pthread_create (&threads [c], NULL, direct ? s_direct : s_http, &jobs [c]);
    }
    bool failed = false;
    for (int c = 0; c < conns; c++) {
        pthread_join (threads [c], NULL);
        failed |= jobs [c].failed;
    }
    double seconds = (double) (s_now_us () - start) / 1e6;
    long requests = (events + batch - 1) / batch;
    printf ("%s: %ld events in %ld requests of %d, %d connections: %.2f s = %.0f events/s, "
            "%.0f requests/s%s\n", direct ? "direct" : "gateway", events, requests, batch, conns,
            seconds, (double) events / seconds, (double) requests / seconds,
            failed ? " (FAILED)" : "");
    return failed ? 1 : 0;
}
